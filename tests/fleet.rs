//! Upstream fleets: health checks, readiness, failover, circuit breakers, session
//! affinity when replicas go away, least connections with open streams, ip_hash movement.
//! Real processes on loopback: mock upstream replicas that tests kill and restart.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

/// A config with one group `default` of `servers` (id, url); `group` is YAML for the
/// group (indented 6 spaces), `top` YAML at top level.
fn fleet(strategy: &str, servers: &[(&str, String)], group: &str, top: &str) -> String {
    let mut list = String::new();
    for (id, url) in servers {
        list.push_str(&format!("        - {{id: {id}, url: \"{url}\"}}\n"));
    }
    format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\n  threads: 2\nupstream:\n  groups:\n    default:\n      strategy: {strategy}\n{group}      servers:\n{list}logging:\n  level: info\n  format: text\n{top}"
    )
}

fn dead_url() -> String {
    format!("http://127.0.0.1:{}/mcp", free_port())
}

/// Which server answered a `tools/list`, or the status and body of an error.
async fn who(c: &reqwest::Client, gw: &Gateway) -> Result<String, (u16, Value)> {
    let resp = post(c, &gw.url("/mcp"), LIST).send().await.unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    if status == 200 {
        Ok(v["result"]["server"].as_str().unwrap().to_string())
    } else {
        Err((status, v))
    }
}

async fn tally(c: &reqwest::Client, gw: &Gateway, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for i in 0..n {
        match who(c, gw).await {
            Ok(s) => *seen.entry(s).or_default() += 1,
            Err(e) => panic!("request {i} failed: {e:?}\n{}", gw.log()),
        }
    }
    seen
}

const CHECK: &str = "      retries: 0\n      health_check: {kind: mcp, interval: 500ms, timeout: 300ms, healthy_threshold: 2, unhealthy_threshold: 2}\n";

/// A round-robin gateway over replicas `a` and `b`, health-checked by [`CHECK`].
async fn checked_pair(a: &Upstream, b: &Upstream) -> Gateway {
    Gateway::start(&fleet(
        "round_robin",
        &[("a", a.url()), ("b", b.url())],
        CHECK,
        "",
    ))
    .await
}

#[tokio::test]
async fn health_checks_eject_a_killed_replica_and_bring_it_back() {
    let a = Upstream::start("a");
    let mut b = Upstream::start("b");
    let b_port = b.port();
    let gw = checked_pair(&a, &b).await;
    let c = client();
    let seen = tally(&c, &gw, 10).await;
    assert_eq!(seen.len(), 2, "both replicas serve: {seen:?}");

    b.kill();
    assert!(
        gw.wait_log("upstream default/b: unhealthy", Duration::from_secs(10))
            .await,
        "{}",
        gw.log()
    );
    // Ejected within interval × unhealthy_threshold (1 s) plus a margin; after that
    // nothing goes to b: with retries 0 a request sent there would fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = tally(&c, &gw, 20).await;
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");

    // Restarted at its address, it passes healthy_threshold checks and serves again.
    let _b = Upstream::start_on("b", b_port);
    assert!(
        gw.wait_log_count("upstream default/b: healthy", 2, Duration::from_secs(10))
            .await,
        "{}",
        gw.log()
    );
    let seen = tally(&c, &gw, 10).await;
    assert_eq!(seen.len(), 2, "b is back: {seen:?}");
}

#[tokio::test]
async fn http_and_tcp_checks_gate_readiness() {
    let a = Upstream::start("a");
    let c = client();

    // http: GET /nope answers 405 on the mock, so the only server is down: not ready,
    // and requests get a JSON-RPC 503 naming the group.
    let check = "      health_check: {kind: http, path: /nope, interval: 200ms, timeout: 150ms}\n";
    let gw = Gateway::start_unready(&fleet("round_robin", &[("a", a.url())], check, ""), &[]).await;
    assert!(
        gw.wait_log("default/a: unhealthy", Duration::from_secs(10))
            .await
    );
    let r = reqwest::get(gw.url("/readiness")).await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["groups_without_servers_up"], json!(["default"]));
    expect_error_naming(
        post(&c, &gw.url("/mcp"), LIST).send().await.unwrap(),
        503,
        -32603,
        "\"default\"",
    )
    .await;
    drop(gw);

    // http on a path that answers 200: ready.
    let check =
        "      health_check: {kind: http, path: /_state, interval: 200ms, timeout: 150ms}\n";
    let gw = Gateway::start(&fleet("round_robin", &[("a", a.url())], check, "")).await;
    assert_eq!(who(&c, &gw).await.unwrap(), "a");
    drop(gw);

    // tcp: nothing listens yet, so not ready; once a server listens there, ready.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let check = "      health_check: {kind: tcp, interval: 200ms, timeout: 150ms}\n";
    let mut gw =
        Gateway::start_unready(&fleet("round_robin", &[("late", url)], check, ""), &[]).await;
    assert_eq!(
        reqwest::get(gw.url("/readiness")).await.unwrap().status(),
        503
    );
    let _late = Upstream::start_on("late", port);
    gw.wait_ready().await;
    assert_eq!(who(&c, &gw).await.unwrap(), "late");
}

#[tokio::test]
async fn connect_failures_fail_over_with_no_client_errors() {
    let a = Upstream::start("a");
    let servers = [("d1", dead_url()), ("a", a.url()), ("d2", dead_url())];
    // Breaker off, so every request meets the dead servers and must fail over.
    let no_breaker = "      retries: 2\n      circuit_breaker: {failure_threshold: 0}\n";
    let gw = Gateway::start(&fleet("round_robin", &servers, no_breaker, "")).await;
    let c = client();
    let seen = tally(&c, &gw, 30).await;
    assert_eq!(seen.get("a"), Some(&30), "{seen:?}");
    // A large body fails over the same way.
    let big = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x".repeat(100 * 1024)}}}).to_string();
    for _ in 0..3 {
        let r = received(post(&c, &gw.url("/mcp"), big.clone()).send().await.unwrap()).await;
        assert_eq!(r["server"], "a");
        assert_eq!(r["body_len"], big.len());
    }
    drop(gw);

    // Without retries the same fleet fails: it was the failover that saved those requests.
    let gw = Gateway::start(&fleet(
        "round_robin",
        &servers,
        "      retries: 0\n      circuit_breaker: {failure_threshold: 0}\n",
        "",
    ))
    .await;
    let mut failures = 0;
    for _ in 0..6 {
        if let Err((status, v)) = who(&c, &gw).await {
            assert_eq!(status, 502, "{v}");
            assert_eq!(v["error"]["code"], -32603);
            failures += 1;
        }
    }
    assert_eq!(failures, 4, "round robin sent 4 of 6 to the dead servers");
}

#[tokio::test]
async fn circuit_breaker_opens_half_opens_and_closes() {
    let a = Upstream::start("a");
    let breaker = "      retries: 0\n      circuit_breaker: {failure_threshold: 3, open_for: 1s, half_open_requests: 2}\n";
    let gw = Gateway::start(&fleet("round_robin", &[("a", a.url())], breaker, "")).await;
    let c = client();
    let fail = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"status","arguments":{"code":500}}}"#;
    let send_fail = || async {
        post(&c, &gw.url("/mcp"), fail)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let opened = |gw: &Gateway| {
        gw.log()
            .matches("upstream default/a: circuit breaker open")
            .count()
    };

    // Closed: failures pass through until failure_threshold consecutive ones open it.
    for _ in 0..3 {
        assert_eq!(send_fail().await, 500);
    }
    assert_eq!(opened(&gw), 1, "{}", gw.log());

    // Open: refused at the gateway, nothing reaches the server.
    let before = a.state().await["requests"].as_u64().unwrap();
    let (status, v) = who(&c, &gw).await.unwrap_err();
    assert_eq!(status, 503, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"default\""));
    assert_eq!(a.state().await["requests"].as_u64().unwrap(), before);

    // After open_for it half-opens; a failed probe opens it again at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(send_fail().await, 500);
    assert!(gw
        .log()
        .contains("upstream default/a: circuit breaker half_open"));
    assert_eq!(opened(&gw), 2, "{}", gw.log());
    assert_eq!(who(&c, &gw).await.unwrap_err().0, 503);

    // Half-open again: half_open_requests good probes close it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(who(&c, &gw).await.unwrap(), "a");
    assert!(!gw.log().contains("circuit breaker closed"));
    assert_eq!(who(&c, &gw).await.unwrap(), "a");
    assert!(gw
        .log()
        .contains("upstream default/a: circuit breaker closed"));

    // Closed: the failure count starts over.
    assert_eq!(send_fail().await, 500);
    assert_eq!(send_fail().await, 500);
    assert_eq!(who(&c, &gw).await.unwrap(), "a");
    assert_eq!(opened(&gw), 2);
}

async fn initialize(c: &reqwest::Client, gw: &Gateway) -> (String, String) {
    let resp = post(c, &gw.url("/mcp"), INIT).send().await.unwrap();
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let r = received(resp).await;
    (sid, r["server"].as_str().unwrap().to_string())
}

fn with_session(
    c: &reqwest::Client,
    gw: &Gateway,
    sid: &str,
    body: &'static str,
) -> reqwest::RequestBuilder {
    post(c, &gw.url("/mcp"), body)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
}

#[tokio::test]
async fn sessions_on_a_down_replica_or_past_their_ttl_get_404() {
    let mut a = Upstream::start("a");
    let mut b = Upstream::start("b");
    let gw = checked_pair(&a, &b).await;
    let c = client();
    let (sid, holder) = initialize(&c, &gw).await;
    let r = received(with_session(&c, &gw, &sid, LIST).send().await.unwrap()).await;
    assert_eq!(r["server"], holder.as_str());

    // The session's replica dies: once ejected, its sessions get 404 so clients re-initialize.
    let (holder_proc, other) = if holder == "a" {
        (&mut a, "b")
    } else {
        (&mut b, "a")
    };
    holder_proc.kill();
    assert!(
        gw.wait_log(
            &format!("upstream default/{holder}: unhealthy"),
            Duration::from_secs(10)
        )
        .await
    );
    let v = expect_refusal(with_session(&c, &gw, &sid, LIST), 404, -32001).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&holder),
        "{v}"
    );
    let (sid2, holder2) = initialize(&c, &gw).await;
    assert_eq!(holder2, other);
    received(with_session(&c, &gw, &sid2, LIST).send().await.unwrap()).await;
    drop(gw);

    // sessions.ttl: an id older than the ttl is refused.
    let live = if other == "a" { &a } else { &b };
    let gw = Gateway::start(&fleet(
        "round_robin",
        &[("x", live.url())],
        "",
        "sessions:\n  ttl: 1s\n",
    ))
    .await;
    let (sid, _) = initialize(&c, &gw).await;
    received(with_session(&c, &gw, &sid, LIST).send().await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expect_refusal(with_session(&c, &gw, &sid, LIST), 404, -32001).await;
}

#[tokio::test]
async fn an_unresolvable_name_is_a_health_error_not_a_crash() {
    let gw = Gateway::start_unready(
        &fleet(
            "round_robin",
            &[("x", "http://no-such-host.invalid:3001/mcp".into())],
            "      resolve_interval: 1s\n",
            "",
        ),
        &[],
    )
    .await;
    assert!(
        gw.wait_log("cannot resolve host", Duration::from_secs(10))
            .await
    );
    assert_eq!(
        reqwest::get(gw.url("/readiness")).await.unwrap().status(),
        503
    );
    expect_error_naming(
        post(&client(), &gw.url("/mcp"), LIST).send().await.unwrap(),
        503,
        -32603,
        "\"default\"",
    )
    .await;
    // Still retrying in the background, and still alive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        reqwest::get(gw.url("/liveness")).await.unwrap().status(),
        200
    );
    assert!(
        gw.log().matches("cannot resolve host").count() >= 2,
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn least_connections_counts_open_streams() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&fleet(
        "least_connections",
        &[("a", a.url()), ("b", b.url())],
        "",
        "",
    ))
    .await;
    let c = client();
    // Hold an SSE answer open on one server...
    let stream = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"stream","arguments":{"delay":3}}}"#;
    let mut resp = post(&c, &gw.url("/mcp"), stream).send().await.unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    let busy = if first.contains(r#""server": "a""#) || first.contains(r#""server":"a""#) {
        "a"
    } else {
        assert!(first.contains(r#""b""#), "{first}");
        "b"
    };
    // ...and every new request goes to the other one while it is open.
    let seen = tally(&c, &gw, 8).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen.contains_key(busy), "{seen:?}");
    drop(resp);
}

#[tokio::test]
async fn ip_hash_moves_only_the_clients_of_a_removed_server() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let mut cc = Upstream::start("c");
    let gw = Gateway::start(&fleet(
        "ip_hash",
        &[("a", a.url()), ("b", b.url()), ("c", cc.url())],
        CHECK,
        "",
    ))
    .await;
    let clients: Vec<(Ipv4Addr, reqwest::Client)> = (2..42)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 0, i);
            let c = reqwest::Client::builder()
                .local_address(IpAddr::V4(ip))
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            (ip, c)
        })
        .collect();
    let mut before = HashMap::new();
    for (ip, c) in &clients {
        let s = who(c, &gw).await.unwrap();
        // Stable for a client while the healthy set is unchanged.
        assert_eq!(who(c, &gw).await.unwrap(), s);
        before.insert(*ip, s);
    }
    let used: std::collections::HashSet<_> = before.values().cloned().collect();
    assert_eq!(
        used.len(),
        3,
        "40 clients spread over all servers: {before:?}"
    );

    cc.kill();
    assert!(
        gw.wait_log("upstream default/c: unhealthy", Duration::from_secs(10))
            .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (ip, c) in &clients {
        let now = who(c, &gw).await.unwrap();
        if before[ip] == "c" {
            assert_ne!(now, "c");
        } else {
            assert_eq!(
                now, before[ip],
                "client {ip} moved although its server stayed"
            );
        }
    }
}

/// The upstream connection (the gateway's local port) each of `n` requests arrived on.
async fn upstream_ports(gw: &Gateway, n: usize, pause: Duration) -> Vec<u64> {
    let c = client();
    let mut ports = Vec::new();
    for _ in 0..n {
        let r = received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
        ports.push(r["client_port"].as_u64().unwrap());
        tokio::time::sleep(pause).await;
    }
    ports
}

#[tokio::test]
async fn connection_pool_settings_reach_pingoras_pool() {
    let a = Upstream::start("a");
    let single = |pool: &str| {
        fleet("round_robin", &[("a", a.url())], "", "").replace(
            "upstream:\n",
            &format!("upstream:\n  connection_pool: {{{pool}}}\n"),
        )
    };
    // Default: one upstream connection, reused.
    let gw = Gateway::start(&single("")).await;
    let ports = upstream_ports(&gw, 5, Duration::ZERO).await;
    assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    drop(gw);

    // max_idle_per_host: 0 keeps nothing: a new connection per request.
    let gw = Gateway::start(&single("max_idle_per_host: 0")).await;
    let ports = upstream_ports(&gw, 4, Duration::ZERO).await;
    let distinct: std::collections::HashSet<_> = ports.iter().collect();
    assert_eq!(distinct.len(), 4, "{ports:?}");
    drop(gw);

    // idle_timeout: a connection idle longer than it is not reused.
    let gw = Gateway::start(&single("idle_timeout: 300ms")).await;
    let ports = upstream_ports(&gw, 3, Duration::from_millis(800)).await;
    let distinct: std::collections::HashSet<_> = ports.iter().collect();
    assert_eq!(distinct.len(), 3, "{ports:?}");
}

#[tokio::test]
async fn mcp_checks_can_send_server_discover_with_the_groups_credentials() {
    let a = Upstream::start("a");
    let _gw = Gateway::start(&fleet(
        "round_robin",
        &[("a", a.url())],
        "      upstream_auth: {bearer: \"probe-token\"}\n      health_check: {kind: mcp, method: server/discover, interval: 200ms, timeout: 150ms}\n",
        "",
    ))
    .await;
    let probe = a.state().await["health_probe"].clone();
    assert_eq!(probe["method"], "server/discover", "{probe}");
    let h = &probe["headers"];
    assert_eq!(h["mcp-protocol-version"], "2026-07-28");
    assert_eq!(h["mcp-method"], "server/discover");
    assert_eq!(h["authorization"], "Bearer probe-token");
    assert_eq!(h["host"], a.addr.as_str());
}
