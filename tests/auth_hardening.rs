//! Authentication and rate limits under attack, against the real binary: failed
//! attempts locked out per client address and per user name before any hash runs,
//! password verifications bounded and cached, JWT critical extensions refused, exact
//! per-key rate limits at scale, and a `Retry-After` that is long enough.
//!
//! Clients pick their source address among 127.0.0.0/8 (Linux routes all of it to
//! loopback), so one gateway sees many distinct client IPs.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use futures_util::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";
const API_KEY: &str = "key-for-the-ci-bot-0123";

/// A client whose connections come from `from` (an address of 127.0.0.0/8).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

async fn with(c: &reqwest::Client, gw: &Gateway, header: (&str, String)) -> reqwest::Response {
    post(c, &gw.url("/mcp"), LIST)
        .header(header.0, header.1)
        .send()
        .await
        .unwrap()
}

async fn as_user(c: &reqwest::Client, gw: &Gateway, user: &str, pw: &str) -> reqwest::Response {
    with(c, gw, ("authorization", basic(user, pw))).await
}

/// The value of a counter line of `/metrics` (0 when absent).
async fn counter(gw: &Gateway, line_start: &str) -> u64 {
    gw.metrics()
        .await
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const VERIFIED_OK: &str = r#"mcp_gateway_password_verifications_total{result="ok"}"#;
const VERIFIED_FAILED: &str = r#"mcp_gateway_password_verifications_total{result="failed"}"#;

/// Basic users alice and bob (bcrypt, cheap), an API key, and `throttle` under
/// `security.auth_throttle` (empty: the defaults).
async fn gateway(up: &Upstream, throttle: &str) -> Gateway {
    let alice = bcrypt::hash("wonderland", 4).unwrap();
    let bob = bcrypt::hash("builder", 4).unwrap();
    let key_hash = sha256_hex(API_KEY.as_bytes());
    let throttle = if throttle.is_empty() {
        String::new()
    } else {
        format!("  auth_throttle: {throttle}\n")
    };
    Gateway::start(&config_for(
        &[up.url()],
        &format!(
            "security:\n  auth:\n    - name: users\n      basic:\n        users:\n          - {{name: alice, hash: \"{alice}\"}}\n          - {{name: bob, hash: \"{bob}\"}}\n      api_keys:\n        keys:\n          - {{id: bot, sha256: \"{key_hash}\"}}\n{throttle}"
        ),
    ))
    .await
}

#[tokio::test]
async fn after_the_default_ten_failures_an_address_is_locked_out_even_with_the_right_password() {
    let up = Upstream::start("u");
    let gw = gateway(&up, "").await;
    let c = client_from("127.0.0.7");
    for i in 0..10 {
        let r = as_user(&c, &gw, "alice", &format!("guess-{i}")).await;
        expect_error(r, 401, -32010).await;
    }
    let failed = counter(&gw, VERIFIED_FAILED).await;
    let r = as_user(&c, &gw, "alice", "wonderland").await;
    let retry: u64 = header(&r, "retry-after")
        .expect("a Retry-After")
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    expect_error_naming(r, 429, -32011, "failed authentication attempts").await;
    // Refused before any hash ran.
    assert_eq!(counter(&gw, VERIFIED_FAILED).await, failed);
    assert_eq!(counter(&gw, VERIFIED_OK).await, 0);
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"mcp_gateway_auth_throttled_total{reason="client_ip"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn failures_are_counted_per_address_and_per_user_name() {
    let up = Upstream::start("u");
    let gw = gateway(&up, "{max_failures: 3, window: 1m}").await;
    let guesser = client_from("127.0.0.2");
    for i in 0..3 {
        let r = as_user(&guesser, &gw, "alice", &format!("guess-{i}")).await;
        expect_error(r, 401, -32010).await;
    }
    let (ok, failed) = (
        counter(&gw, VERIFIED_OK).await,
        counter(&gw, VERIFIED_FAILED).await,
    );
    assert_eq!(failed, 3);
    // The guessing address is locked out, for every user and credential.
    for (user, pw) in [("alice", "wonderland"), ("bob", "builder"), ("alice", "x")] {
        let r = as_user(&guesser, &gw, user, pw).await;
        expect_error_naming(r, 429, -32011, "client address").await;
    }
    let r = with(&guesser, &gw, ("x-api-key", API_KEY.into())).await;
    expect_error(r, 429, -32011).await;
    // The user name is locked out from everywhere; other users and keys are not.
    let other = client_from("127.0.0.3");
    let r = as_user(&other, &gw, "alice", "wonderland").await;
    expect_error_naming(r, 429, -32011, "user name").await;
    assert_eq!(as_user(&other, &gw, "bob", "builder").await.status(), 200);
    let r = with(&other, &gw, ("x-api-key", API_KEY.into())).await;
    assert_eq!(r.status(), 200);
    // Only bob's password was hashed meanwhile.
    assert_eq!(counter(&gw, VERIFIED_OK).await, ok + 1);
    assert_eq!(counter(&gw, VERIFIED_FAILED).await, failed);

    // Wrong API keys lock their address out too, the right key included.
    let keys = client_from("127.0.0.4");
    for i in 0..3 {
        let r = with(&keys, &gw, ("x-api-key", format!("wrong-{i}"))).await;
        expect_error(r, 401, -32010).await;
    }
    let r = with(&keys, &gw, ("x-api-key", API_KEY.into())).await;
    expect_error_naming(r, 429, -32011, "client address").await;
    let r = with(
        &client_from("127.0.0.5"),
        &gw,
        ("x-api-key", API_KEY.into()),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn good_credentials_before_the_threshold_work_and_are_hashed_once() {
    let up = Upstream::start("u");
    let gw = gateway(&up, "{max_failures: 3, window: 1m, cache_ttl: 1m}").await;
    let c = client_from("127.0.0.6");
    for i in 0..2 {
        let r = as_user(&c, &gw, "bob", &format!("guess-{i}")).await;
        expect_error(r, 401, -32010).await;
    }
    assert_eq!(as_user(&c, &gw, "bob", "builder").await.status(), 200);
    assert_eq!(counter(&gw, VERIFIED_OK).await, 1);
    // The verified credential is remembered: no hash for the next requests.
    for _ in 0..3 {
        assert_eq!(as_user(&c, &gw, "bob", "builder").await.status(), 200);
    }
    assert_eq!(counter(&gw, VERIFIED_OK).await, 1);
    // A wrong password of a cached user is still hashed, and still wrong.
    let r = as_user(&c, &gw, "bob", "builder-").await;
    expect_error(r, 401, -32010).await;
    assert_eq!(counter(&gw, VERIFIED_FAILED).await, 3);
}

#[tokio::test]
async fn password_verifications_beyond_the_slots_get_503() {
    let up = Upstream::start("u");
    // A deliberately slow hash (argon2 at 16 MiB, 2 passes), one slot, no cache.
    let slow = {
        use argon2::password_hash::PasswordHasher;
        let params = argon2::Params::new(16 * 1024, 2, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        a.hash_password(b"slow-secret").unwrap().to_string()
    };
    let gw = Gateway::start(&config_for(
        &[up.url()],
        &format!(
            "security:\n  auth:\n    - basic:\n        users:\n          - {{name: carol, hash: \"{slow}\"}}\n  auth_throttle: {{max_concurrent_verifications: 1, cache_ttl: 0s}}\n"
        ),
    ))
    .await;
    let answers = futures_util::future::join_all((0..6).map(|i| {
        let url = gw.url("/mcp");
        async move {
            let c = client_from(&format!("127.0.1.{}", i + 1));
            let r = post(&c, &url, LIST)
                .header("authorization", basic("carol", "slow-secret"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = header(&r, "retry-after");
            let body: Value = r.json().await.unwrap();
            (status, retry, body)
        }
    }))
    .await;
    assert!(answers.iter().any(|(s, _, _)| *s == 200), "{answers:?}");
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "{answers:?}");
    for (_, retry, body) in busy {
        assert_eq!(retry.as_deref(), Some("1"), "{body}");
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["error"]["code"], -32603, "{body}");
        let m = body["error"]["message"].as_str().unwrap();
        assert!(m.contains("max_concurrent_verifications"), "{m}");
    }
    assert!(
        answers.iter().all(|(s, _, _)| *s == 200 || *s == 503),
        "{answers:?}"
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_jwt_with_a_critical_extension_is_refused() {
    let (up, gw) = one_upstream(&format!(
        "security:\n  auth:\n    - jwt: {{secret: \"{SECRET}\", algorithms: [HS256]}}\n"
    ))
    .await;
    let claims = json!({"sub": "svc", "exp": now() + 300});
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let plain = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["exp-ext".into()]);
    let critical = encode(&crit, &claims, &key).unwrap();
    // The header really carries it.
    let head = critical.split('.').next().unwrap();
    let head: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(head["crit"], json!(["exp-ext"]), "{head}");

    let c = client();
    let r = with(&c, &gw, ("authorization", format!("Bearer {plain}"))).await;
    assert_eq!(r.status(), 200);
    let r = with(&c, &gw, ("authorization", format!("Bearer {critical}"))).await;
    assert!(header(&r, "www-authenticate").is_some_and(|h| h.contains("invalid_token")));
    let v = expect_error_naming(r, 401, -32010, "crit").await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("exp-ext"),
        "{v}"
    );
    assert_eq!(up.state().await["requests"].as_u64().unwrap(), 1);
}

/// POST `tools/list` to the gateway from `from` on a connection of its own; the status.
async fn post_from(from: IpAddr, port: u16) -> u16 {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{LIST}",
        LIST.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    s.read_to_end(&mut head).await.unwrap();
    let text = String::from_utf8_lossy(&head);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test]
async fn ten_thousand_clients_under_their_limit_are_never_refused() {
    // Nothing listens upstream: every request the limits let through fails fast (502 or
    // 503); only the limits answer 429.
    let dead = format!("http://127.0.0.1:{}/mcp", free_port());
    let gw = Gateway::start(&config_for(
        &[dead],
        "security:\n  rate_limiting:\n    rules:\n      - {name: per-ip, key_strategy: ip_address, requests_per_minute: 2}\n",
    ))
    .await;
    let port = gw.port;
    let addrs: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::from([127, 1, (i / 250) as u8, (i % 250 + 1) as u8]))
        .collect();
    let statuses: Vec<u16> = futures_util::stream::iter(addrs)
        .map(|a| post_from(a, port))
        .buffer_unordered(32)
        .collect()
        .await;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        refused, 0,
        "{refused} of 10000 well-behaved clients refused"
    );
    // The rule is live: a client over it is refused.
    let one = IpAddr::from([127, 2, 0, 1]);
    let mut last = 0;
    for _ in 0..3 {
        last = post_from(one, port).await;
    }
    assert_eq!(last, 429);
}

/// After a run of requests past a 2-per-second burst, waiting exactly the `Retry-After`
/// of the last refusal is enough; `redis`: with the counters shared through it.
async fn retry_after_is_long_enough(redis: Option<&RedisServer>) {
    let up = Upstream::start("u");
    let shared = redis.map_or(String::new(), |r| format!("    redis: \"{}\"\n", r.url()));
    let gw = Gateway::start(&config_for(
        &[up.url()],
        &format!("security:\n  rate_limiting:\n{shared}    rules:\n      - {{name: burst, key_strategy: ip_address, requests_per_minute: 1000, burst_size: 2}}\n"),
    ))
    .await;
    if redis.is_some() {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gw
            .metrics()
            .await
            .contains(r#"mcp_gateway_rate_limit_backend_up{backend="redis"} 1"#)
        {
            assert!(std::time::Instant::now() < deadline, "Redis never in use");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let c = client();
    // A quick run of requests: the ones past the burst are refused (and counted).
    let mut last = None;
    for _ in 0..20 {
        let r = post(&c, &gw.url("/mcp"), LIST).send().await.unwrap();
        if r.status() == 429 {
            last = Some(header(&r, "retry-after").unwrap().parse::<u64>().unwrap());
            assert_eq!(header(&r, "ratelimit-reset"), header(&r, "retry-after"));
        }
    }
    let retry = last.expect("the burst refused some");
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let r = post(&c, &gw.url("/mcp"), LIST).send().await.unwrap();
    assert_eq!(r.status(), 200, "refused again after waiting {retry} s");
    if redis.is_some() {
        let m = gw.metrics().await;
        assert!(
            !m.contains("mcp_gateway_rate_limit_fallbacks_total{"),
            "{m}"
        );
    }
}

#[tokio::test]
async fn waiting_retry_after_is_enough_for_the_next_request() {
    retry_after_is_long_enough(None).await;
}

#[tokio::test]
async fn waiting_retry_after_is_enough_with_counters_in_redis() {
    let redis = RedisServer::start(None);
    retry_after_is_long_enough(Some(&redis)).await;
}
