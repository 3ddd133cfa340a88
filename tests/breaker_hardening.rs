//! The circuit breaker never stays half-open for want of an outcome (a probe whose client
//! hung up gives its permit back; probes unanswered for `open_for` are replaced), and
//! upstream failures are answered without internal addresses (which go to the log).

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token-0123456789";
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const FAIL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"status","arguments":{"code":500}}}"#;
const SLOW: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow","arguments":{"delay":30}}}"#;

/// One group `default` with server `a` at `url`, `group` YAML (6 spaces) for the group,
/// `top` YAML at top level, and the admin API on.
fn config(url: &str, group: &str, top: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\n  threads: 2\nupstream:\n  groups:\n    default:\n      retries: 0\n{group}      servers:\n        - {{id: a, url: \"{url}\"}}\nlogging:\n  level: info\n  format: text\nadmin:\n  port: {{admin_port}}\n  token: {TOKEN}\n{top}"
    )
}

async fn breaker_state(gw: &Gateway) -> String {
    let v = gw.admin_api("/api/v1/upstreams", TOKEN).await;
    v["groups"][0]["servers"][0]["breaker"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

async fn requests(up: &Upstream) -> u64 {
    up.state().await["requests"].as_u64().unwrap()
}

/// Open the breaker (`failure_threshold` 500s), then wait `open_for` so the next request
/// is a probe.
async fn trip(c: &reqwest::Client, gw: &Gateway, failures: usize, open_for: Duration) {
    for _ in 0..failures {
        let r = post(c, &gw.url("/mcp"), FAIL).send().await.unwrap();
        assert_eq!(r.status(), 500);
    }
    assert!(
        gw.wait_log("circuit breaker open", Duration::from_secs(5))
            .await,
        "{}",
        gw.log()
    );
    assert_eq!(breaker_state(gw).await, "open");
    let r = post(c, &gw.url("/mcp"), LIST).send().await.unwrap();
    expect_error(r, 503, -32603).await;
    tokio::time::sleep(open_for + Duration::from_millis(200)).await;
}

/// Send the silent probe in the background; returns once the server got it.
async fn probe_reaches_the_server(gw: &Gateway, up: &Upstream) -> tokio::task::JoinHandle<()> {
    let before = requests(up).await;
    let url = gw.url("/mcp");
    let probe = tokio::spawn(async move {
        let _ = post(&client(), &url, SLOW).send().await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests(up).await == before {
        assert!(
            Instant::now() < deadline,
            "the probe never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(breaker_state(gw).await, "half_open");
    probe
}

/// Poll with good requests until one reaches the server (up to `limit`).
async fn served_within(c: &reqwest::Client, gw: &Gateway, limit: Duration) -> bool {
    eventually(limit, || async {
        let r = post(c, &gw.url("/mcp"), LIST).send().await.unwrap();
        r.status() == 200
    })
    .await
}

/// A gateway whose breaker (one probe permit, `open_for` whole seconds) two failures
/// opened, `open_for` ago: the next request is a probe.
async fn tripped(up: &Upstream, open_for: Duration) -> (Gateway, reqwest::Client) {
    let gw = Gateway::start(&config(
        &up.url(),
        &format!(
            "      circuit_breaker: {{failure_threshold: 2, open_for: {}s, half_open_requests: 1}}\n",
            open_for.as_secs()
        ),
        "timeouts:\n  request: 60s\n",
    ))
    .await;
    let c = client();
    trip(&c, &gw, 2, open_for).await;
    (gw, c)
}

#[tokio::test]
async fn a_probe_whose_client_hangs_up_gives_its_permit_back() {
    let up = Upstream::start("a");
    // open_for is long enough that the deadline cannot be what lets the next request in.
    let open_for = Duration::from_secs(4);
    let (gw, c) = tripped(&up, open_for).await;

    // The only probe permit goes to a call the server stays silent on; its client hangs up.
    let probe = probe_reaches_the_server(&gw, &up).await;
    probe.abort();
    let _ = probe.await;

    // The permit came back: the next request is the probe, it succeeds, the breaker closes.
    assert!(
        served_within(&c, &gw, Duration::from_secs(3)).await,
        "the breaker stayed half-open after its probe's client left:\n{}",
        gw.log()
    );
    assert_eq!(breaker_state(&gw).await, "closed");
    assert!(gw
        .log()
        .contains("upstream default/a: circuit breaker closed"));
    assert!(
        !gw.log().contains("no probe answered"),
        "the permit came back, not the deadline:\n{}",
        gw.log()
    );
    // Closed for good: every client is served again.
    for _ in 0..3 {
        received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    }
}

#[tokio::test]
async fn probes_unanswered_for_open_for_are_replaced() {
    let up = Upstream::start("a");
    let open_for = Duration::from_secs(1);
    let (gw, c) = tripped(&up, open_for).await;

    // The probe's client stays, the server stays silent (for 30 s, request timeout 60 s).
    let probe = probe_reaches_the_server(&gw, &up).await;
    // After open_for without an answer a fresh probe goes; it succeeds and closes the breaker.
    assert!(
        served_within(&c, &gw, Duration::from_secs(10)).await,
        "the breaker waited on its silent probe:\n{}",
        gw.log()
    );
    assert_eq!(breaker_state(&gw).await, "closed");
    assert!(
        gw.log()
            .contains("upstream default/a: circuit breaker half_open, no probe answered for 1s"),
        "{}",
        gw.log()
    );
    probe.abort();
}

/// The error's message names the group and server and no address; the log has the detail.
fn assert_no_address(v: &Value, port: u16, gw: &Gateway) {
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"default\"") && message.contains(" a "),
        "{v}"
    );
    assert!(!message.contains("127.0.0.1"), "{v}");
    assert!(!message.contains(&port.to_string()), "{v}");
    assert!(
        !message.contains("context:") && !message.contains("cause:"),
        "{v}"
    );
    let _ = gw;
}

#[tokio::test]
async fn upstream_errors_name_group_and_server_but_no_address() {
    // Connection refused, for a small and a large body.
    let port = free_port();
    let gw = Gateway::start(&config(
        &format!("http://127.0.0.1:{port}/mcp"),
        "      circuit_breaker: {failure_threshold: 0}\n",
        "",
    ))
    .await;
    let c = client();
    let r = post(&c, &gw.url("/mcp"), LIST).send().await.unwrap();
    let v = expect_error(r, 502, -32603).await;
    assert_no_address(&v, port, &gw);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"echo","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(100 * 1024)
    );
    let r = post(&c, &gw.url("/mcp"), big.clone()).send().await.unwrap();
    let v = expect_error(r, 502, -32603).await;
    assert_no_address(&v, port, &gw);
    // The operator still learns where it went wrong.
    assert!(
        gw.wait_log(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
            .await,
        "{}",
        gw.log()
    );

    // A timeout: 504, same rule, on both paths.
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(
        &up.url(),
        "      circuit_breaker: {failure_threshold: 0}\n",
        "timeouts:\n  request: 1s\n",
    ))
    .await;
    let r = post(&c, &gw.url("/mcp"), SLOW).send().await.unwrap();
    let v = expect_error(r, 504, -32603).await;
    assert_no_address(&v, up.port(), &gw);
    let big_slow = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"slow","arguments":{{"delay":30,"pad":"{}"}}}}}}"#,
        "x".repeat(100 * 1024)
    );
    let r = post(&c, &gw.url("/mcp"), big_slow).send().await.unwrap();
    let v = expect_error(r, 504, -32603).await;
    assert_no_address(&v, up.port(), &gw);
    assert!(
        gw.wait_log_count(
            &format!("127.0.0.1:{}", up.port()),
            2,
            Duration::from_secs(5)
        )
        .await,
        "{}",
        gw.log()
    );
}
