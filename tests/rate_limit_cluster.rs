//! Rate limits shared by two gateway replicas through a real `redis-server`, and what
//! the replicas do when Redis goes away and comes back.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const PASSWORD: &str = "r3dis-pass-4-tests";
const ADMIN_TOKEN: &str = "cluster-admin-token-0123456789";
const SHARED: &str = "mcp_gateway_rate_limit_backend_up{backend=\"redis\"} 1";
const LOCAL: &str = "mcp_gateway_rate_limit_backend_up{backend=\"redis\"} 0";
const TO_LOCAL: &str = "deciding on this process's local counters";

fn replica(upstream: &Upstream, redis: &RedisServer) -> String {
    config_for(
        &[upstream.url()],
        &format!(
            "security:\n  rate_limiting:\n    redis: \"{}\"\n    redis_timeout: 1s\n    rules:\n      - {{name: cluster-wide, key_strategy: global, requests_per_minute: 10}}\nadmin:\n  port: {{admin_port}}\n  token: {ADMIN_TOKEN}\n",
            redis.url()
        ),
    )
}

async fn send(gw: &Gateway) -> reqwest::Response {
    post(&client(), &gw.url("/mcp"), LIST).send().await.unwrap()
}

/// Wait (generously) until `/metrics` of `gw` contains `needle`.
async fn wait_metric(gw: &Gateway, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if gw.metrics().await.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Wait (generously) until `gw` logged `said` and its `/metrics` show `metric`.
async fn wait_switch(gw: &Gateway, said: &str, metric: &str) {
    assert!(
        gw.wait_log(said, Duration::from_secs(30)).await,
        "{said:?} not logged:\n{}",
        gw.log()
    );
    assert!(wait_metric(gw, metric).await, "{}", gw.metrics().await);
}

async fn upstream_requests(up: &Upstream) -> u64 {
    up.state().await["requests"].as_u64().unwrap()
}

#[tokio::test]
async fn replicas_share_limits_through_redis_and_fall_back_to_local_ones() {
    let mut redis = RedisServer::start(Some(PASSWORD));
    let up = Upstream::start("u");
    let replicas = [
        Gateway::start(&replica(&up, &redis)).await,
        Gateway::start(&replica(&up, &redis)).await,
    ];
    for gw in &replicas {
        wait_switch(gw, "counters shared through Redis at 127.0.0.1:", SHARED).await;
    }

    // Ten requests in all, alternating: each replica sees the other's.
    for i in 0..10u32 {
        let r = send(&replicas[i as usize % 2]).await;
        assert_eq!(r.status(), 200, "request {}", i + 1);
        assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("10"));
        assert_eq!(header(&r, "ratelimit-remaining"), Some((9 - i).to_string()));
    }
    // The eleventh is refused, on either replica, before it reaches the upstream.
    let before = upstream_requests(&up).await;
    for gw in &replicas {
        let r = send(gw).await;
        assert_eq!(r.status(), 429);
        let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
        // A sliding window may need most of the next window too: up to two windows.
        assert!((1..=120).contains(&retry), "{retry}");
        assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("10"));
        assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("0"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        assert_eq!(v["error"]["code"], -32011, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("cluster-wide"), "{v}");
        assert!(message.contains("10 requests per minute"), "{v}");
    }
    assert_eq!(upstream_requests(&up).await, before);

    // The counters are Redis keys with the default prefix, and they expire by themselves.
    let mut conn = redis.connect();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("mcp-gateway:rl:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys, ["mcp-gateway:rl:cluster-wide:global:m"]);
    let ttl: i64 = redis::cmd("TTL").arg(&keys[0]).query(&mut conn).unwrap();
    assert!((1..=120).contains(&ttl), "{ttl}");
    drop(conn);

    // Redis goes away: both replicas keep serving, each on its own counters.
    redis.kill();
    for gw in &replicas {
        let r = send(gw).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
        wait_switch(gw, TO_LOCAL, LOCAL).await;
        let metrics = gw.metrics().await;
        assert!(
            metrics.contains("mcp_gateway_rate_limit_fallbacks_total{reason="),
            "{metrics}"
        );
    }
    // Said once, not per request.
    for _ in 0..3 {
        assert_eq!(send(&replicas[0]).await.status(), 200);
    }
    assert_eq!(replicas[0].log().matches(TO_LOCAL).count(), 1);
    // The local limit still holds: ten in all on this replica, then 429.
    let mut allowed = 4;
    loop {
        let r = send(&replicas[0]).await;
        if r.status() == 429 {
            expect_error_naming(r, 429, -32011, "cluster-wide").await;
            break;
        }
        assert_eq!(r.status(), 200);
        allowed += 1;
        assert!(allowed <= 10, "the local limit did not hold");
    }
    assert_eq!(allowed, 10);

    // Redis is back (empty): the replicas use it again and share fresh counters.
    let _redis = RedisServer::start_on(redis.port, Some(PASSWORD));
    for gw in &replicas {
        wait_switch(gw, "is back; counters are shared again", SHARED).await;
    }
    for i in 0..4u32 {
        let r = send(&replicas[i as usize % 2]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-remaining"), Some((9 - i).to_string()));
    }

    // The password is never logged, and the admin API shows the URL redacted.
    for gw in &replicas {
        assert!(!gw.log().contains(PASSWORD), "{}", gw.log());
        let admin = client().get(gw.admin_url("/api/v1/config"));
        let answer = admin.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let shown = answer.text().await.unwrap();
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(shown.contains(":<redacted>@127.0.0.1:"), "{shown}");
    }
}

#[tokio::test]
async fn a_slow_redis_is_waited_on_for_redis_timeout_only() {
    let redis = RedisServer::start(None);
    let up = Upstream::start("u");
    let yaml = replica(&up, &redis).replace("redis_timeout: 1s", "redis_timeout: 500ms");
    let gw = Gateway::start(&yaml).await;
    wait_switch(&gw, "counters shared through Redis", SHARED).await;
    assert_eq!(send(&gw).await.status(), 200);

    // Redis stops answering: requests are still served, on the local counters.
    redis.pause(true);
    for _ in 0..3 {
        let r = send(&gw).await;
        assert_eq!(r.status(), 200, "{}", gw.log());
        assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("10"));
    }
    wait_switch(&gw, "is unavailable (no answer within 500ms)", LOCAL).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"mcp_gateway_rate_limit_fallbacks_total{reason="timeout"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mcp_gateway_rate_limit_fallbacks_total{reason="unavailable"}"#),
        "{metrics}"
    );

    // It answers again: back to Redis.
    redis.pause(false);
    wait_switch(&gw, "is back; counters are shared again", SHARED).await;
    assert_eq!(send(&gw).await.status(), 200);
}

#[test]
fn a_bad_redis_url_is_a_config_error() {
    let yaml = config_for(
        &["http://127.0.0.1:1/mcp".to_string()],
        "security:\n  rate_limiting:\n    redis: \"http://:secret-pw@cache:6379\"\n    rules:\n      - {name: r, requests_per_minute: 10}\n",
    )
    .replace("{port}", "8080");
    let (code, stderr) = validate(&yaml);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("security.rate_limiting.redis: must be a redis:// or rediss:// URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-pw"), "{stderr}");
}

#[tokio::test]
async fn replicas_share_limits_through_a_tls_redis_they_verify() {
    let pki = TempDir::new("redis-pki");
    make_cert(
        &pki,
        "ca",
        "/CN=Redis Test CA",
        None,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
        ],
    );
    make_cert(
        &pki,
        "redis",
        "/CN=redis",
        Some("ca"),
        &[
            "subjectAltName=IP:127.0.0.1",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    let redis = RedisServer::start_tls(
        Some(PASSWORD),
        &pki.path("redis.pem"),
        &pki.path("redis.key"),
    );
    assert!(redis.url().starts_with("rediss://"));
    let up = Upstream::start("u");
    // The replicas trust the test CA (rustls reads the roots named by SSL_CERT_FILE).
    let ca = pki.path("ca.pem");
    let trust = [("SSL_CERT_FILE", ca.to_str().unwrap())];
    let replicas = [
        Gateway::start_env(&replica(&up, &redis), &trust).await,
        Gateway::start_env(&replica(&up, &redis), &trust).await,
    ];
    for gw in &replicas {
        wait_switch(gw, "counters shared through Redis at 127.0.0.1:", SHARED).await;
    }
    for i in 0..10u32 {
        let r = send(&replicas[i as usize % 2]).await;
        assert_eq!(r.status(), 200, "request {}", i + 1);
        assert_eq!(header(&r, "ratelimit-remaining"), Some((9 - i).to_string()));
    }
    for gw in &replicas {
        expect_error_naming(send(gw).await, 429, -32011, "cluster-wide").await;
    }

    // A replica that does not trust the certificate does not use that Redis: it
    // serves on its own counters and says so.
    make_cert(
        &pki,
        "other-ca",
        "/CN=Another CA",
        None,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign",
        ],
    );
    let other = pki.path("other-ca.pem");
    let untrusting = Gateway::start_env(
        &replica(&up, &redis),
        &[("SSL_CERT_FILE", other.to_str().unwrap())],
    )
    .await;
    assert_eq!(send(&untrusting).await.status(), 200);
    wait_switch(&untrusting, TO_LOCAL, LOCAL).await;
    assert!(
        untrusting.log().contains("UnknownIssuer"),
        "{}",
        untrusting.log()
    );
    for gw in replicas.iter().chain([&untrusting]) {
        assert!(!gw.log().contains(PASSWORD), "{}", gw.log());
    }
}
