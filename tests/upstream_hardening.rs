//! What crosses the gateway between a client's connection and an upstream's, against the
//! real binary: hop-by-hop fields (request and response), HTTP/2 clients, protocol
//! upgrades, `Expect: 100-continue`, and cancellation while an upstream is silent. Every
//! rule is checked for a small body and one over 64 KiB (the size Pingora's own proxy
//! path could replay: the gateway sends every POST itself, whatever its size).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `tools/call` of the mock's `tool`, padded to at least `pad` bytes.
fn call(tool: &str, arguments: Value, pad: usize) -> String {
    let mut arguments = arguments;
    if pad > 0 {
        arguments["pad"] = json!("p".repeat(pad));
    }
    json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":tool,"arguments":arguments}})
        .to_string()
}

/// The two forwarding paths: `(name, padding)`.
const PATHS: [(&str, usize); 2] = [("small body", 0), ("large body", 100 * 1024)];

/// Hop-by-hop request fields a client may send over HTTP/1.1, and the extension field
/// its `Connection` names.
const HOP_REQUEST: [(&str, &str); 8] = [
    ("connection", "keep-alive, X-Hop"),
    ("x-hop", "secret"),
    ("keep-alive", "timeout=5"),
    ("proxy-authorization", "Basic eDp5"),
    ("proxy-connection", "keep-alive"),
    ("te", "trailers"),
    ("trailer", "x-trailer"),
    ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
];

fn assert_no_hop_fields(h: &Value, what: &str) {
    for name in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "http2-settings",
        "upgrade",
        "expect",
        "transfer-encoding",
    ] {
        assert!(
            h.get(name).is_none(),
            "{what}: {name} reached the upstream: {h}"
        );
    }
    assert_ne!(
        h.get("connection").and_then(Value::as_str),
        Some("keep-alive, X-Hop"),
        "{what}: the client's Connection reached the upstream: {h}"
    );
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The admin service's block, with a token (the API needs one).
fn admin() -> String {
    format!("admin:\n  port: {{admin_port}}\n  token: {ADMIN_TOKEN}\n")
}

/// The first server of the first group, as the admin API shows it.
async fn admin_server(gw: &Gateway) -> Value {
    let v = gw.admin_api("/api/v1/upstreams", ADMIN_TOKEN).await;
    let s = v["groups"][0]["servers"][0].clone();
    assert!(s.is_object(), "admin API: {v}");
    s
}

#[tokio::test]
async fn request_connection_fields_never_reach_the_upstream_over_http1() {
    let up = Upstream::start("u");
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\nupstream:\n  groups:\n    plain:\n      servers:\n        - {{id: a, url: \"{url}\"}}\n    kept:\n      preserve_host: true\n      servers:\n        - {{id: b, url: \"{url}\"}}\nroutes:\n  - {{path: /mcp, group: plain}}\n  - {{path: /mcp/kept, group: kept}}\nlimits:\n  max_request_body: 2MiB\n",
        url = up.url()
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    for (path, pad) in PATHS {
        let body = call("echo", json!({}), pad);
        let mut req = post(&c, &gw.url("/mcp"), body.clone()).header("x-kept", "yes");
        for (k, v) in HOP_REQUEST {
            req = req.header(k, v);
        }
        let r = received(req.send().await.unwrap()).await;
        let h = &r["headers"];
        assert_eq!(r["version"], "HTTP/1.1", "{path}: {r}");
        assert_no_hop_fields(h, path);
        assert_eq!(h["x-kept"], "yes", "{path}: {h}");
        assert_eq!(h["host"], up.addr.as_str(), "{path}: {h}");
        assert_eq!(h["content-length"], body.len().to_string(), "{path}");
        assert_eq!(r["body_len"], body.len(), "{path}");

        // preserve_host: the client's Host, on both paths.
        let r = received(
            post(&c, &gw.url("/mcp/kept"), body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            r["headers"]["host"],
            format!("127.0.0.1:{}", gw.port),
            "{path}: {r}"
        );
    }
}

#[tokio::test]
async fn connection_naming_fields_the_gateway_sets_is_refused_on_both_paths() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    for (path, pad) in PATHS {
        for named in ["Host", "X-Forwarded-For", "x-forwarded-proto"] {
            let resp = post(&c, &gw.url("/mcp"), call("echo", json!({}), pad))
                .header("connection", format!("keep-alive, {named}"))
                .send()
                .await
                .unwrap();
            let v = expect_error(resp, 400, -32600).await;
            let message = v["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("Connection header may not name"),
                "{path}, {named}: {v}"
            );
        }
    }
    assert_eq!(
        up.state().await["requests"],
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn hop_by_hop_response_fields_never_reach_the_client() {
    let (_up, gw) = one_upstream("").await;
    let c = client();
    for (path, pad) in PATHS {
        let resp = post(&c, &gw.url("/mcp"), call("hop", json!({}), pad))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(header(&resp, "x-kept").as_deref(), Some("yes"), "{path}");
        for name in [
            "x-secret",
            "keep-alive",
            "proxy-authenticate",
            "proxy-connection",
            "upgrade",
        ] {
            assert!(
                header(&resp, name).is_none(),
                "{path}: {name} reached the client: {:?}",
                resp.headers()
            );
        }
        let connection = header(&resp, "connection").unwrap_or_default();
        assert!(
            !connection.to_ascii_lowercase().contains("x-secret"),
            "{path}: {connection}"
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["id"], 7, "{path}: {v}");
    }
}

#[tokio::test]
async fn http2_clients_reach_the_upstream_as_http1_on_both_paths() {
    let pki = pki();
    let up = Upstream::start("u");
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\nupstream:\n  groups:\n    plain:\n      retries: 0\n      circuit_breaker: {{failure_threshold: 2}}\n      servers:\n        - {{id: a, url: \"{url}\"}}\n    kept:\n      preserve_host: true\n      servers:\n        - {{id: b, url: \"{url}\"}}\nroutes:\n  - {{path: /mcp, group: plain}}\n  - {{path: /mcp/kept, group: kept}}\n",
        url = up.url()
    );
    let (gateway, dir, port) = tls_gateway(&pki, &yaml).await;
    let c = tls_client(&pki);
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    for (path, pad) in PATHS {
        // More than the breaker's threshold: a failing path would shut the server out.
        for _ in 0..3 {
            let resp = post(&c, &url("/mcp"), call("echo", json!({}), pad))
                .header("te", "trailers")
                .header("proxy-authorization", "Basic eDp5")
                .header("x-kept", "yes")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            let r = received(resp).await;
            assert_eq!(r["version"], "HTTP/1.1", "{path}: {r}");
            let h = &r["headers"];
            assert_no_hop_fields(h, path);
            assert_eq!(h["x-kept"], "yes", "{path}: {h}");
            assert_eq!(h["host"], up.addr.as_str(), "{path}: {h}");
            assert_eq!(h["x-forwarded-proto"], "https", "{path}: {h}");
        }
        // preserve_host: Host comes from the client's :authority.
        let resp = post(&c, &url("/mcp/kept"), call("echo", json!({}), pad))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        let r = received(resp).await;
        assert_eq!(
            r["headers"]["host"],
            format!("127.0.0.1:{port}"),
            "{path}: {r}"
        );
        // Hop-by-hop response fields never reach an HTTP/2 client either.
        let resp = post(&c, &url("/mcp"), call("hop", json!({}), pad))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(header(&resp, "x-secret").is_none(), "{path}");
        assert_eq!(header(&resp, "x-kept").as_deref(), Some("yes"), "{path}");
    }
    drop(gateway);
    drop(dir);
}

/// Send `head` (then `body`, once the gateway said `100 Continue` when `expect`) on a
/// fresh connection; the final response's head and body. `continued`: a `100 Continue`
/// arrived within a bounded wait.
struct Exchange {
    continued: bool,
    head: String,
    body: Vec<u8>,
}

async fn exchange(port: u16, head: &str, body: &[u8], expect: bool) -> Exchange {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut continued = false;
    if expect {
        // Wait (bounded) for the interim answer before sending any of the body.
        let wait = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    return Some(end);
                }
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        if let Ok(Some(end)) = wait {
            if buf.starts_with(b"HTTP/1.1 100") {
                continued = true;
                buf.drain(..end + 4);
            }
        }
    }
    if !body.is_empty() {
        s.write_all(body).await.unwrap();
    }
    // The final answer: its head, then Content-Length bytes.
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                if buf.starts_with(b"HTTP/1.1 1") {
                    // A late interim answer (not the gateway's own, in time): skip it.
                    buf.drain(..end + 4);
                    continue;
                }
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return (head, buf[end + 4..end + 4 + len].to_vec());
                }
            }
            let mut chunk = [0u8; 16384];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), Vec::new()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| (String::from_utf8_lossy(&buf).into_owned(), Vec::new()));
    Exchange {
        continued,
        head: read.0,
        body: read.1,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `POST /mcp` of `body` with the `extra` head lines, by [`exchange`].
async fn post_mcp(port: u16, body: &str, extra: &str, expect: bool) -> Exchange {
    exchange(
        port,
        &post_head("/mcp", body.len(), extra),
        body.as_bytes(),
        expect,
    )
    .await
}

fn post_head(path: &str, len: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {len}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_gateway_and_never_forwarded() {
    let (_up, gw) = one_upstream("").await;
    for (path, pad) in PATHS {
        let body = call("echo", json!({}), pad);
        let x = post_mcp(gw.port, &body, "Expect: 100-continue\r\n", true).await;
        assert!(
            x.continued,
            "{path}: no 100 Continue before the body was sent; then got {:?}",
            x.head
        );
        assert!(x.head.starts_with("HTTP/1.1 200"), "{path}: {}", x.head);
        let v: Value = serde_json::from_slice(&x.body).unwrap();
        let h = &v["result"]["headers"];
        assert!(
            h.get("expect").is_none(),
            "{path}: Expect went upstream: {h}"
        );
        assert_eq!(v["result"]["body_len"], body.len(), "{path}");
    }
    // Refused before the body is read: the final answer comes instead of a 100.
    let x = exchange(
        gw.port,
        &post_head("/nowhere", 10, "Expect: 100-continue\r\n"),
        b"",
        true,
    )
    .await;
    assert!(!x.continued);
    assert!(x.head.starts_with("HTTP/1.1 404"), "{}", x.head);
}

#[tokio::test]
async fn informational_answers_do_not_decide_the_breaker() {
    let up = Upstream::start("u");
    let group = "      retries: 0\n      circuit_breaker: {failure_threshold: 3, open_for: 60s}\n";
    let yaml = config_for(&[up.url()], &admin()).replacen(
        "    default:\n",
        &format!("    default:\n{group}"),
        1,
    );
    let c = client();
    for (path, pad) in PATHS {
        // A client expecting 100-continue (the upstream must not answer it: the gateway
        // did), and an upstream sending 103 Early Hints before its 500s.
        let gw = Gateway::start(&yaml).await;
        for _ in 0..3 {
            let body = call("status", json!({"code": 500}), pad);
            let x = post_mcp(gw.port, &body, "Expect: 100-continue\r\n", true).await;
            assert!(x.head.starts_with("HTTP/1.1 500"), "{path}: {}", x.head);
        }
        let s = admin_server(&gw).await;
        assert_eq!(s["breaker"], "open", "{path}, Expect: {s}\n{}", gw.log());
        drop(gw);

        let gw = Gateway::start(&yaml).await;
        for _ in 0..3 {
            let resp = post(
                &c,
                &gw.url("/mcp"),
                call("status", json!({"code": 500, "early": [103]}), pad),
            )
            .send()
            .await
            .unwrap();
            assert_eq!(resp.status(), 500, "{path}");
        }
        let s = admin_server(&gw).await;
        assert_eq!(s["breaker"], "open", "{path}, 103: {s}\n{}", gw.log());
    }
}

#[tokio::test]
async fn upgrade_requests_are_refused_and_never_reach_the_upstream() {
    let (up, gw) = one_upstream("").await;
    // (A WebSocket client's GET is served by the gateway itself: tests/client_transports.rs.)
    let other = "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\nAccept: text/event-stream\r\n\r\n";
    let x = exchange(gw.port, other, b"", false).await;
    assert!(x.head.starts_with("HTTP/1.1 400"), "{}", x.head);
    let v: Value = serde_json::from_slice(&x.body).unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("upgrade"),
        "{v}"
    );
    for (path, pad) in PATHS {
        let body = call("echo", json!({}), pad);
        let x = post_mcp(
            gw.port,
            &body,
            "Connection: Upgrade\r\nUpgrade: websocket\r\n",
            false,
        )
        .await;
        assert!(x.head.starts_with("HTTP/1.1 400"), "{path}: {}", x.head);
    }
    assert_eq!(
        up.state().await["requests"],
        0,
        "nothing reached the upstream"
    );

    // A cleartext HTTP/2 offer (curl --http2 on http://) is ignored: served as HTTP/1.1,
    // and neither the offer nor its settings go upstream.
    for (path, pad) in PATHS {
        let body = call("echo", json!({}), pad);
        let x = post_mcp(gw.port, &body, "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n", false)
        .await;
        assert!(x.head.starts_with("HTTP/1.1 200"), "{path}: {}", x.head);
        let v: Value = serde_json::from_slice(&x.body).unwrap();
        assert_eq!(v["result"]["version"], "HTTP/1.1", "{path}: {v}");
        assert_no_hop_fields(&v["result"]["headers"], path);
    }
}

#[tokio::test]
async fn an_upstream_switching_protocols_gets_a_502_on_both_paths() {
    let (_up, gw) = one_upstream("").await;
    let c = client();
    for (path, pad) in PATHS {
        let resp = post(&c, &gw.url("/mcp"), call("switch", json!({}), pad))
            .send()
            .await
            .unwrap();
        let v = expect_error(resp, 502, -32603).await;
        assert!(
            v["error"]["message"].as_str().unwrap().contains("101"),
            "{path}: {v}"
        );
        // The gateway still serves.
        received(
            post(&c, &gw.url("/mcp"), call("echo", json!({}), pad))
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
}

#[tokio::test]
async fn a_client_leaving_while_the_upstream_is_silent_cancels_on_both_paths() {
    let (up, gw) = one_upstream(&format!("limits:\n  max_request_body: 2MiB\n{}", admin())).await;
    let c = client();
    let mut cancelled = 0;
    for (path, pad) in PATHS {
        // Silent after its first event: the client reads that, then hangs up.
        let args = json!({"delay": 60, "idle": true, "watch": true});
        let mut resp = post(&c, &gw.url("/mcp"), call("stream", args, pad))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let first = resp.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
        drop(resp);
        cancelled += 1;
        let seen = eventually(Duration::from_secs(10), || async {
            up.state().await["cancelled"].as_u64().unwrap() >= cancelled
        })
        .await;
        assert!(
            seen,
            "{path}: the upstream never saw the client go away (stream)"
        );

        // Silent before its answer even begins: the client gives up waiting.
        let args = json!({"delay": 1, "head_delay": 60, "idle": true, "watch": true});
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let gave_up = post(&impatient, &gw.url("/mcp"), call("stream", args, pad))
            .send()
            .await;
        assert!(gave_up.is_err(), "{path}: an answer came");
        cancelled += 1;
        let seen = eventually(Duration::from_secs(10), || async {
            up.state().await["cancelled"].as_u64().unwrap() >= cancelled
        })
        .await;
        assert!(
            seen,
            "{path}: the upstream never saw the client go away (head)"
        );
        // And the request no longer counts against the server.
        let idle = eventually(Duration::from_secs(10), || async {
            admin_server(&gw).await["in_flight"] == 0
        })
        .await;
        assert!(idle, "{path}: still in flight: {}", admin_server(&gw).await);
    }
}
