//! Connection limits against the real binary: `server.max_connections` and
//! `limits.max_connections_per_ip` refuse new connections with a JSON-RPC `503` as
//! they are accepted (nothing reaches the upstream, other addresses are still served,
//! a freed slot is taken again); `server.keepalive_timeout` keeps an idle connection
//! for its next request (and, with no head timeout, a connection that never sent one)
//! while `limits.request_head_timeout` times a head once it has started; a client
//! reusing its connections across head timeouts sees no failure.

mod common;

use common::raw::Conn;
use common::*;
use std::net::IpAddr;
use std::time::Duration;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn post_list() -> Vec<u8> {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{LIST}",
        LIST.len()
    )
    .into_bytes()
}

/// One upstream and a gateway with `server` keys added to its `server:` section and
/// `extra` at the top level.
async fn gateway(server: &str, extra: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("u");
    let yaml = config_for(&[up.url()], extra)
        .replace("  threads: 2\n", &format!("  threads: 2\n{server}"));
    let gw = Gateway::start(&yaml).await;
    (up, gw)
}

async fn served(c: &mut Conn) -> bool {
    match c.send(&post_list()).await {
        Some(a) if a.status == 200 => true,
        Some(a) => {
            eprintln!(
                "answered {}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            );
            false
        }
        None => {
            eprintln!("no answer");
            false
        }
    }
}

#[tokio::test]
async fn connections_past_the_limits_are_refused_with_a_503_as_they_arrive() {
    let (up, gw) = gateway(
        "  max_connections: 3\n",
        "limits:\n  max_connections_per_ip: 2\n",
    )
    .await;
    let one: IpAddr = "127.0.0.1".parse().unwrap();
    let two: IpAddr = "127.0.0.2".parse().unwrap();
    let mut a1 = Conn::open_from(gw.port, one).await;
    assert!(served(&mut a1).await);
    let _a2 = Conn::open_from(gw.port, one).await;
    let before = up.state().await["requests"].clone();

    // A third connection from 127.0.0.1: refused before it sends anything.
    let mut a3 = Conn::open_from(gw.port, one).await;
    let refused = a3
        .answer()
        .await
        .expect("an answer to the refused connection");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("connection"), Some("close"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    let v = refused.json();
    assert_eq!(v["error"]["code"], -32603);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_connections_per_ip"),
        "{v}"
    );
    assert!(a3.closed().await);

    // Another address is still served, up to the total.
    let mut b1 = Conn::open_from(gw.port, two).await;
    assert!(served(&mut b1).await);
    let mut b2 = Conn::open_from(gw.port, two).await;
    let refused = b2.answer().await.expect("an answer");
    assert_eq!(refused.status, 503);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("server.max_connections"));
    assert_eq!(
        up.state().await["requests"],
        json_u64(&before) + 1,
        "only b1's request reached the upstream"
    );

    // A freed slot is taken again.
    drop(a1);
    let taken = eventually(Duration::from_secs(5), || async {
        let mut c = Conn::open_from(gw.port, one).await;
        served(&mut c).await
    })
    .await;
    assert!(taken, "{}", gw.log());
    let m = gw.metrics().await;
    for reason in ["max_connections", "max_connections_per_ip"] {
        let line = format!("mcp_gateway_connections_refused_total{{reason=\"{reason}\"}}");
        assert!(m.contains(&line), "{line} in\n{m}");
    }
}

fn json_u64(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap()
}

#[tokio::test]
async fn idle_connections_wait_for_keepalive_and_started_heads_for_the_head_timeout() {
    let (_up, gw) = gateway(
        "  keepalive_timeout: 3s\n",
        "limits:\n  request_head_timeout: 1s\n",
    )
    .await;
    // Idle past the head timeout, within the keep-alive: the next request is served on
    // the same connection.
    let mut c = Conn::open(gw.port).await;
    assert!(served(&mut c).await);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(served(&mut c).await, "kept alive past request_head_timeout");

    // A head that starts on it and does not finish is cut by the head timeout, long
    // before the keep-alive timeout would.
    assert!(c.write(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\n").await);
    assert!(c.closed().await, "a started head was not cut");
    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_request_head_timeouts_total 1"),
        "{m}"
    );

    // Idle past the keep-alive timeout: closed, and counted.
    let mut d = Conn::open(gw.port).await;
    assert!(served(&mut d).await);
    assert!(
        d.closed().await,
        "an idle connection outlived keepalive_timeout"
    );
    let m = gw.metrics().await;
    assert!(m.contains("mcp_gateway_keepalive_timeouts_total 1"), "{m}");
    assert!(
        m.contains("mcp_gateway_request_head_timeouts_total 1"),
        "{m}"
    );
}

#[tokio::test]
async fn without_a_head_timeout_a_silent_connection_goes_at_the_keepalive_timeout() {
    let (_up, gw) = gateway(
        "  keepalive_timeout: 1s\n",
        "limits:\n  request_head_timeout: 0s\n",
    )
    .await;
    // Nothing sent at all: idle from the accept.
    let mut silent = Conn::open(gw.port).await;
    assert!(
        silent.closed().await,
        "a connection that sent nothing outlived keepalive_timeout"
    );
    // A head that starts is not timed (no head timeout), and is served when it ends.
    let mut slow = Conn::open(gw.port).await;
    let request = post_list();
    assert!(slow.write(&request[..10]).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(slow.write(&request[10..]).await);
    let answer = slow.answer().await.expect("the slow head's answer");
    assert_eq!(answer.status, 200);
    let m = gw.metrics().await;
    assert!(m.contains("mcp_gateway_keepalive_timeouts_total 1"), "{m}");
}

#[tokio::test]
async fn a_client_reusing_connections_across_head_timeouts_sees_no_failure() {
    let (_up, gw) = gateway(
        "  keepalive_timeout: 5s\n",
        "limits:\n  request_head_timeout: 1s\n",
    )
    .await;
    // Its pool lets idle connections go before the gateway does.
    let c = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    for _ in 0..4 {
        let r = post(&c, &gw.url("/mcp"), LIST).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_request_head_timeouts_total 0")
            && m.contains("mcp_gateway_keepalive_timeouts_total 0"),
        "no connection was cut between the requests: {m}"
    );
    assert!(
        m.contains("mcp_gateway_connections_active 1"),
        "one connection served them all: {m}"
    );
}

fn slow_call(id: u32, delay: f64) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"delay": delay}}})
    .to_string()
}

#[tokio::test]
async fn a_full_server_makes_requests_wait_for_a_connection_then_503() {
    let up = Upstream::start("u");
    let yaml = config_for(&[up.url()], "timeouts:\n  connect: 1s\n").replace(
        "    default:\n",
        "    default:\n      connection_pool: {max_connections_per_host: 1}\n",
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    // One call holds the only connection for 3 s: the next waits 1 s, then gets 503.
    let holder = tokio::spawn(post(&c, &gw.url("/mcp"), slow_call(1, 3.0)).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = up.state().await["requests"].as_u64().unwrap();
    let r = post(&c, &gw.url("/mcp"), slow_call(2, 0.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["id"], 2);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_connections_per_host"),
        "{v}"
    );
    assert_eq!(
        up.state().await["requests"].as_u64().unwrap(),
        before,
        "the refused request never reached the server"
    );
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);

    // One that is freed in time: the waiting request is served.
    let holder = tokio::spawn(post(&c, &gw.url("/mcp"), slow_call(3, 0.4)).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = post(&c, &gw.url("/mcp"), slow_call(4, 0.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
    let m = gw.metrics().await;
    for outcome in ["timeout", "waited"] {
        let line = format!(
            "mcp_gateway_upstream_connection_waits_total{{group=\"default\",outcome=\"{outcome}\"}} 1"
        );
        assert!(m.contains(&line), "{line} in\n{m}");
    }
}

#[test]
fn bad_connection_limits_are_named_by_path() {
    let yaml = config_for(
        &["http://127.0.0.1:9/mcp".to_string()],
        "limits:\n  request_body_timeout: 0s\n",
    )
    .replace(
        "  threads: 2\n",
        "  threads: 2\n  max_connections: 0\n  keepalive_timeout: 0s\n",
    )
    .replace("{port}", "8080");
    expect_invalid(
        &yaml,
        &[
            "server.max_connections: must be at least 1",
            "server.keepalive_timeout: must be greater than 0",
            "limits.request_body_timeout: must be greater than 0",
        ],
    );
}
