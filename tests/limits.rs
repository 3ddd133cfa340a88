//! Rate limits against the real binary: per client IP, per tool, per authenticated user.

mod common;

use common::*;
use serde_json::Value;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const ECHO: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;

async fn send(gw: &Gateway, body: &'static str, key: Option<&str>) -> reqwest::Response {
    let mut req = post(&client(), &gw.url("/mcp"), body);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn over_the_limit_gets_429_with_retry_after_and_nothing_reaches_the_upstream() {
    let (up, gw) = one_upstream("security:\n  rate_limiting:\n    rules:\n      - {name: per-ip, key_strategy: ip_address, requests_per_minute: 5}\n      - {name: per-tool, key_strategy: tool, requests_per_minute: 100}\n").await;
    for left in (0..5).rev() {
        let r = send(&gw, LIST, None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("5"));
        assert_eq!(header(&r, "ratelimit-remaining"), Some(left.to_string()));
        assert!(header(&r, "ratelimit-reset").is_some());
    }
    let before = up.state().await["requests"].as_u64().unwrap();
    let r = send(&gw, LIST, None).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    // Until one more fits the sliding minute: up to two windows.
    assert!((1..=120).contains(&retry), "{retry}");
    assert_eq!(header(&r, "ratelimit-remaining").as_deref(), Some("0"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32011, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("per-ip"),
        "{v}"
    );
    assert_eq!(up.state().await["requests"].as_u64().unwrap(), before);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"mcp_gateway_rate_limited_total{route="/mcp",rule="per-ip"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn tool_limits_count_calls_of_that_tool_only() {
    let (_up, gw) = one_upstream("security:\n  rate_limiting:\n    rules:\n      - {name: echo-cap, key_strategy: tool, requests_per_minute: 2}\n").await;
    assert_eq!(send(&gw, ECHO, None).await.status(), 200);
    assert_eq!(send(&gw, ECHO, None).await.status(), 200);
    assert_eq!(send(&gw, ECHO, None).await.status(), 429);
    for _ in 0..5 {
        assert_eq!(send(&gw, LIST, None).await.status(), 200);
    }
}

const KEY_A: &str = "key-of-client-a-0123456789";
const KEY_B: &str = "key-of-client-b-0123456789";

/// A gateway whose clients `client-a` and `client-b` authenticate with [`KEY_A`] and
/// [`KEY_B`], with `rate_limiting` (the block's lines) under `security`.
async fn two_clients(up: &Upstream, rate_limiting: &str) -> Gateway {
    let extra = format!(
        "security:\n  auth:\n    - api_keys:\n        keys:\n          - {{id: client-a, sha256: \"{}\"}}\n          - {{id: client-b, sha256: \"{}\"}}\n  rate_limiting:\n{rate_limiting}",
        sha256_hex(KEY_A.as_bytes()),
        sha256_hex(KEY_B.as_bytes())
    );
    Gateway::start(&config_for(&[up.url()], &extra)).await
}

#[tokio::test]
async fn user_limits_follow_the_authenticated_identity() {
    let up = Upstream::start("u");
    let (a, b) = (KEY_A, KEY_B);
    let gw = two_clients(
        &up,
        "    rules:\n      - {name: per-user, key_strategy: user_id, requests_per_minute: 2}\n",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(send(&gw, LIST, Some(a)).await.status(), 200);
    }
    assert_eq!(send(&gw, LIST, Some(a)).await.status(), 429);
    // Same IP, another user: its own budget.
    assert_eq!(send(&gw, LIST, Some(b)).await.status(), 200);
    // Authentication comes first: an unknown key is 401, not counted.
    assert_eq!(send(&gw, LIST, Some("nope")).await.status(), 401);
}

/// Open the standing SSE stream (a GET held open 60 s by the mock upstream) as `key`.
async fn open_stream(gw: &Gateway, key: &str) -> reqwest::Response {
    client()
        .get(gw.url("/mcp?delay=60"))
        .header("accept", "text/event-stream")
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn open_streams_are_capped_per_identity() {
    let up = Upstream::start("u");
    let (a, b) = (KEY_A, KEY_B);
    let gw = two_clients(&up, "    max_concurrent_streams: 2\n").await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = open_stream(&gw, a).await;
        assert_eq!(s.status(), 200);
        let first = s.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("event: ready"));
        streams.push(s);
    }
    // The third is refused before it reaches the upstream.
    let before = up.state().await["requests"].as_u64().unwrap();
    let r = open_stream(&gw, a).await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("5"));
    assert_eq!(header(&r, "ratelimit-limit").as_deref(), Some("2"));
    let v = expect_error_naming(r, 429, -32011, "max_concurrent_streams").await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 open SSE streams"),
        "{v}"
    );
    assert_eq!(up.state().await["requests"].as_u64().unwrap(), before);
    // Another identity has its own slots; requests that are not streams are not capped.
    let other = open_stream(&gw, b).await;
    assert_eq!(other.status(), 200);
    assert_eq!(send(&gw, LIST, Some(a)).await.status(), 200);

    // A stream that ends gives its slot back.
    drop(streams.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Until the gateway notices the closed stream, a retry is refused (and counted).
    let mut refused = 2;
    let reopened = loop {
        let r = open_stream(&gw, a).await;
        if r.status() == 200 {
            break r;
        }
        assert_eq!(r.status(), 429);
        refused += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream's slot never came back:\n{}",
            gw.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(open_stream(&gw, a).await.status(), 429);
    drop((reopened, other, streams));
    let metrics = gw.metrics().await;
    let counted = format!(
        r#"mcp_gateway_rate_limited_total{{route="/mcp",rule="max_concurrent_streams"}} {refused}"#
    );
    assert!(metrics.contains(&counted), "want {counted}:\n{metrics}");
}

#[tokio::test]
async fn a_request_head_trickled_past_request_head_timeout_is_cut_but_served_requests_are_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{sleep, timeout, Duration, Instant};
    let (_up, gw) = one_upstream("limits:\n  request_head_timeout: 1s\n").await;
    let port = gw.port;

    // A standing SSE stream whose second event comes well after the head timeout.
    let c = client();
    let stream = tokio::spawn(
        c.get(gw.url("/mcp?delay=3"))
            .header("accept", "text/event-stream")
            .send(),
    );
    // A body uploaded slowly, byte by byte, over longer than the head timeout.
    let upload = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n",
            LIST.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        for chunk in LIST.as_bytes().chunks(12) {
            sleep(Duration::from_millis(600)).await;
            s.write_all(chunk).await.unwrap();
        }
        let mut answer = vec![0u8; 64];
        let n = s.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    });

    // A head trickled one byte every 200 ms: never silent long enough for Pingora's own
    // 60 s read timeout, but not complete within request_head_timeout.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(20) {
        if slow.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!(
                "the gateway answered a partial head: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    assert!(closed, "a trickled request head was not cut");

    // Meanwhile everything else is served.
    for _ in 0..3 {
        assert_eq!(send(&gw, LIST, None).await.status(), 200);
    }
    let answer = upload.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let text = stream.await.unwrap().unwrap().text().await.unwrap();
    assert!(text.contains("event: later"), "{text}");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("mcp_gateway_request_head_timeouts_total 1"),
        "{metrics}"
    );
}
