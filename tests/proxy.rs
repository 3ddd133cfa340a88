//! The proxy against real processes: the gateway binary in front of mock upstream
//! MCP servers (tests/peers/mock_upstream.py), all on free loopback ports.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

#[tokio::test]
async fn post_passthrough_rewrites_path_and_host_and_adds_forwarding_headers() {
    let up = Upstream::start("files-1");
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\nupstream:\n  groups:\n    files:\n      servers:\n        - {{id: f1, url: \"http://{}/upstream/mcp\"}}\nroutes:\n  - {{path: /mcp/files, group: files}}\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    let resp = post(&c, &gw.url("/mcp/files?trace=1"), LIST)
        .header("x-forwarded-for", "10.1.1.1")
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(rid.len(), 32, "a request id is generated");
    let r = received(resp).await;
    assert_eq!(r["server"], "files-1");
    assert_eq!(r["path"], "/upstream/mcp?trace=1");
    let h = &r["headers"];
    assert_eq!(
        h["host"],
        up.addr.as_str(),
        "the upstream's own authority is sent as Host"
    );
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "the client is not a trusted proxy: its own X-Forwarded-For is replaced"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-request-id"], rid.as_str());
    assert_eq!(r["body_len"], LIST.len());

    // A client's own request id is kept end to end.
    let resp = post(&c, &gw.url("/mcp/files"), LIST)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    assert_eq!(received(resp).await["headers"]["x-request-id"], "abc-123");

    // Other paths are not routes.
    expect_refusal(post(&c, &gw.url("/mcp"), LIST), 404, -32600).await;
}

#[tokio::test]
async fn preserve_host_forwards_the_clients_host() {
    let up = Upstream::start("u");
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\nupstream:\n  groups:\n    default:\n      preserve_host: true\n      servers:\n        - {{id: a, url: \"{}\"}}\n",
        up.url()
    );
    let gw = Gateway::start(&yaml).await;
    let r = received(post(&client(), &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    assert_eq!(r["headers"]["host"], format!("127.0.0.1:{}", gw.port));
}

#[tokio::test]
async fn mcp_headers_pass_untouched_and_hop_by_hop_headers_do_not() {
    let (_up, gw) = one_upstream("").await;
    let resp = post(&client(), &gw.url("/mcp"), LIST)
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-method", "tools/list")
        .header("mcp-name", "=?base64?aMOpbGxv?=")
        .header("mcp-param-region", "eu-west")
        .header("last-event-id", "42")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .send()
        .await
        .unwrap();
    let h = received(resp).await["headers"].clone();
    assert_eq!(h["mcp-protocol-version"], "2025-11-25");
    assert_eq!(h["mcp-method"], "tools/list");
    assert_eq!(h["mcp-name"], "=?base64?aMOpbGxv?=");
    assert_eq!(h["mcp-param-region"], "eu-west");
    assert_eq!(h["last-event-id"], "42");
    for hop in ["x-hop", "keep-alive", "proxy-authorization"] {
        assert!(h.get(hop).is_none(), "{hop} must not be forwarded: {h}");
    }
}

#[tokio::test]
async fn get_stream_and_delete_are_proxied() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    let resp = c
        .get(gw.url("/mcp?delay=0.1"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("event: ready") && text.contains("event: later"),
        "{text}"
    );
    assert!(text.contains(r#""last-event-id": "7""#), "{text}");

    let resp = c.delete(gw.url("/mcp")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.state().await["deletes"], 1);

    let resp = c.put(gw.url("/mcp")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST, DELETE");
    expect_error(resp, 405, -32600).await;
}

#[tokio::test]
async fn unix_socket_upstream() {
    let dir = TempDir::new("uds");
    let sock = dir.path("up.sock");
    let up = Upstream::start_with("uds", &["--unix", sock.to_str().unwrap()]);
    let gw = Gateway::start(&config_for(&[format!("unix://{}:/mcp", up.addr)], "")).await;
    let r = received(post(&client(), &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    assert_eq!(r["server"], "uds");
    assert_eq!(r["path"], "/mcp");
}

/// A test CA and a `localhost` / 127.0.0.1 certificate it signed, made with the openssl CLI.
/// Returns (ca.pem, cert.pem, key.pem).
fn test_pki(dir: &TempDir) -> (String, String, String) {
    let p = |n: &str| dir.path(n).to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("openssl must be installed")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "2",
            "-subj",
            "/CN=mcp-gateway test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("key.pem"),
            "-out",
            &p("leaf.csr"),
        ],
    ]
    .concat());
    std::fs::write(
        dir.path("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

#[tokio::test]
async fn https_upstream_verifies_certificates() {
    let dir = TempDir::new("tls");
    let (ca, cert, key) = test_pki(&dir);
    let up = Upstream::start_with("tls", &["--tls", &cert, &key]);
    let port = up.addr.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}/mcp");
    let c = client();

    // Trusted through tls.ca_file: works, with SNI/Host = localhost.
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\nupstream:\n  groups:\n    default:\n      tls: {{ca_file: \"{ca}\"}}\n      servers:\n        - {{id: a, url: \"{url}\"}}\n"
    );
    let gw = Gateway::start(&yaml).await;
    let r = received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    assert_eq!(r["headers"]["host"], format!("localhost:{port}"));
    drop(gw);

    // Verification is on by default: an unknown CA is refused with a JSON-RPC 502.
    let gw = Gateway::start(&config_for(std::slice::from_ref(&url), "")).await;
    expect_error_naming(
        post(&c, &gw.url("/mcp"), LIST).send().await.unwrap(),
        502,
        -32603,
        "\"default\"",
    )
    .await;
    drop(gw);

    // Unless the operator turns it off.
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\nupstream:\n  groups:\n    default:\n      tls: {{verify: false}}\n      servers:\n        - {{id: a, url: \"{url}\"}}\n"
    );
    let gw = Gateway::start(&yaml).await;
    received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
}

#[tokio::test]
async fn inspection_rejects_bad_messages_with_jsonrpc_errors() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    let url = gw.url("/mcp");

    expect_refusal(post(&c, &url, "{not json"), 400, -32700).await;
    expect_refusal(post(&c, &url, ""), 400, -32700).await;
    let v = expect_refusal(
        post(&c, &url, r#"{"jsonrpc":"1.0","id":5,"method":"x"}"#),
        400,
        -32600,
    )
    .await;
    assert_eq!(v["id"], 5, "the request id is echoed");
    expect_refusal(post(&c, &url, r#"{"jsonrpc":"2.0","id":1}"#), 400, -32600).await;
    expect_refusal(post(&c, &url, "[1,2]"), 400, -32600).await;

    let resp = c
        .post(&url)
        .header("content-type", "text/plain")
        .body(LIST)
        .send()
        .await
        .unwrap();
    expect_error(resp, 415, -32600).await;
    let resp = c.post(&url).body(LIST).send().await.unwrap();
    expect_error(resp, 415, -32600).await;

    // Batches: only in 2025-03-26 (which an absent version header means).
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
    let resp = post(&c, &url, batch)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, -32600).await;
    let resp = post(&c, &url, batch)
        .header("mcp-protocol-version", "2025-03-26")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    // Unknown methods are the upstream's business.
    let r = received(
        post(
            &c,
            &url,
            r#"{"jsonrpc":"2.0","id":9,"method":"vendor/custom"}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(r["server"], "u");

    // Nothing above reached the upstream except the allowed batch and the unknown method.
    assert_eq!(up.state().await["requests"], 2);
}

#[tokio::test]
async fn modern_routing_headers_must_match_the_body() {
    let (_up, gw) = one_upstream("").await;
    let c = client();
    let url = gw.url("/mcp");
    let body = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})
    .to_string();
    let send = |v: &'static str, m: &'static str, n: &'static str| {
        post(&c, &url, body.clone())
            .header("mcp-protocol-version", v)
            .header("mcp-method", m)
            .header("mcp-name", n)
            .send()
    };
    let r = received(send("2026-07-28", "tools/call", "search").await.unwrap()).await;
    assert_eq!(r["server"], "u");
    for (v, m, n) in [
        ("2026-07-28", "tools/call", "other"),
        ("2026-07-28", "tools/list", "search"),
        ("2025-11-25", "tools/call", "search"),
    ] {
        let e = expect_error(send(v, m, n).await.unwrap(), 400, -32020).await;
        assert_eq!(e["id"], 3);
    }
    // Legacy requests are not held to the modern header rules.
    let legacy = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"search"}}"#;
    let resp = post(&c, &url, legacy)
        .header("mcp-name", "different")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn big_call(size: usize) -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"content":"x".repeat(size)}}}).to_string()
}

#[tokio::test]
async fn large_bodies_arrive_intact_and_oversized_ones_get_413() {
    let (_up, gw) = one_upstream("limits:\n  max_request_body: 2MiB\n").await;
    let c = client();
    let url = gw.url("/mcp");

    for size in [64 * 1024 - 200, 64 * 1024 + 1, 1 << 20] {
        let body = big_call(size);
        let want = sha256_hex(body.as_bytes());
        let r = received(post(&c, &url, body.clone()).send().await.unwrap()).await;
        assert_eq!(r["body_len"], body.len(), "size {size}");
        assert_eq!(r["body_sha256"], want.as_str(), "size {size}");
        assert_eq!(r["headers"]["content-length"], body.len().to_string());
    }

    // Chunked (no Content-Length) large body.
    let body = big_call(300 * 1024);
    let want = sha256_hex(body.as_bytes());
    let stream = futures_util::stream::iter(
        body.clone()
            .into_bytes()
            .chunks(16 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = received(
        post(&c, &url, reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["body_sha256"], want.as_str());

    // Over the limit by its declared length: refused before any of the body is read.
    let head = raw_request(
        gw.port,
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 3145728\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("2097152"), "{head}");
    // Over the limit while reading (no Content-Length): the client sends one byte more
    // than the limit and no end of body; the gateway answers 413 without waiting for it.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        let (mut rx, mut tx) = s.into_split();
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), rx.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        });
        let chunk = vec![b' '; 64 * 1024];
        let _ = tx
            .write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        for _ in 0..32 {
            if tx.write_all(b"10000\r\n").await.is_err()
                || tx.write_all(&chunk).await.is_err()
                || tx.write_all(b"\r\n").await.is_err()
            {
                break;
            }
        }
        let _ = tx.write_all(b"1\r\n \r\n").await;
        let head = reader.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(head.contains("2097152"), "{head}");
    }
    // The gateway is still healthy.
    received(post(&c, &url, LIST).send().await.unwrap()).await;
}

#[tokio::test]
async fn sse_streams_pass_through_unbuffered_and_disconnects_cancel_upstream() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    let call = |delay: u64| {
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"stream","arguments":{"delay":delay}}})
            .to_string()
    };
    // The upstream holds the response for 60 s after its first event: receiving that event
    // proves it was not buffered.
    let mut resp = post(&c, &gw.url("/mcp"), call(60)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
    assert_eq!(up.state().await["completed_streams"], 0);

    // The client goes away: the upstream request is closed (the modern cancellation).
    drop(resp);
    let cancelled = eventually(Duration::from_secs(10), || async {
        up.state().await["cancelled"].as_u64().unwrap() >= 1
    })
    .await;
    assert!(
        cancelled,
        "the upstream never saw the client go away:\n{}",
        gw.log()
    );

    // Large-body requests stream too; the upstream stays silent after its first event,
    // so only the gateway noticing the client leave can close it.
    let silent = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"stream","arguments":{"delay":60,"idle":true,"watch":true}}});
    let mut body: Value = silent;
    body["params"]["arguments"]["pad"] = json!("y".repeat(100 * 1024));
    let mut resp = post(&c, &gw.url("/mcp"), body.to_string())
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"));
    drop(resp);
    let cancelled = eventually(Duration::from_secs(10), || async {
        up.state().await["cancelled"].as_u64().unwrap() >= 2
    })
    .await;
    assert!(cancelled, "the relay did not close the upstream request");
}

#[tokio::test]
async fn streamed_answers_stay_open_until_the_request_timeout() {
    // A POST's answer (SSE here) may be silent up to timeouts.request.
    let (_up, gw) = one_upstream("timeouts:\n  request: 3s\n").await;
    let c = client();
    let call = |delay: f64| {
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"stream","arguments":{"delay":delay,"idle":true}}})
            .to_string()
    };
    // Silent for 1 s (< timeouts.request): the final result arrives.
    let text = post(&c, &gw.url("/mcp"), call(1.0))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#""result""#), "{text}");
    // Silent for longer than that: the gateway gives up on the stream.
    let resp = post(&c, &gw.url("/mcp"), call(8.0)).send().await.unwrap();
    let text = resp.text().await.unwrap_or_default();
    assert!(!text.contains(r#""result""#), "{text}");
}

#[tokio::test]
async fn sessions_are_sealed_and_pinned_to_the_replica_that_minted_them() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&config_for(&[a.url(), b.url()], "")).await;
    let c = client();
    let url = gw.url("/mcp");
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;

    let mut sessions = Vec::new();
    for _ in 0..4 {
        let resp = post(&c, &url, init).send().await.unwrap();
        let sealed = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let r = received(resp).await;
        let server = r["server"].as_str().unwrap().to_string();
        assert!(
            !sealed.contains("session"),
            "the upstream's id is not exposed: {sealed}"
        );
        assert!(sealed.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        sessions.push((sealed, server));
    }
    assert!(
        sessions.iter().any(|s| s.1 == "a") && sessions.iter().any(|s| s.1 == "b"),
        "round robin"
    );

    for (sealed, server) in &sessions {
        for _ in 0..3 {
            let resp = post(&c, &url, LIST)
                .header("mcp-session-id", sealed)
                .send()
                .await
                .unwrap();
            let r = received(resp).await;
            assert_eq!(&r["server"], server.as_str());
            let forwarded = r["headers"]["mcp-session-id"].as_str().unwrap();
            assert!(
                forwarded.starts_with(&format!("{server}-session-")),
                "{forwarded}"
            );
        }
        let resp = c
            .get(format!("{url}?delay=0"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", sealed)
            .send()
            .await
            .unwrap();
        assert!(resp
            .text()
            .await
            .unwrap()
            .contains(&format!(r#""server": "{server}""#)));
        let resp = c
            .delete(&url)
            .header("mcp-session-id", sealed)
            .send()
            .await
            .unwrap();
        assert_eq!(received_plain(resp).await["server"], server.as_str());
    }

    // Forged and tampered ids: 404 with a JSON-RPC error, nothing forwarded.
    let before = a.state().await["requests"].as_u64().unwrap()
        + b.state().await["requests"].as_u64().unwrap();
    let mut tampered = sessions[0].0.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    for bad in [
        String::from_utf8(tampered).unwrap(),
        "a-session-1".to_string(),
        "x".repeat(300),
    ] {
        let resp = post(&c, &url, LIST)
            .header("mcp-session-id", bad)
            .send()
            .await
            .unwrap();
        expect_error(resp, 404, -32001).await;
    }
    let after = a.state().await["requests"].as_u64().unwrap()
        + b.state().await["requests"].as_u64().unwrap();
    assert_eq!(before, after);
}

async fn received_plain(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn sessions_span_gateway_processes_sharing_a_key() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let keys = "sessions:\n  keys: [\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"]\n";
    let gw1 = Gateway::start(&config_for(&[a.url(), b.url()], keys)).await;
    let gw2 = Gateway::start(&config_for(&[a.url(), b.url()], keys)).await;
    let c = client();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#;
    let resp = post(&c, &gw1.url("/mcp"), init).send().await.unwrap();
    let sealed = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let server = received(resp).await["server"].as_str().unwrap().to_string();
    for gw in [&gw2, &gw1, &gw2] {
        let r = received(
            post(&c, &gw.url("/mcp"), LIST)
                .header("mcp-session-id", &sealed)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r["server"], server.as_str());
    }
    // A gateway with another key refuses it.
    let other = Gateway::start(&config_for(&[a.url(), b.url()], "")).await;
    let resp = post(&c, &other.url("/mcp"), LIST)
        .header("mcp-session-id", &sealed)
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, -32001).await;
}

#[tokio::test]
async fn unavailable_upstream_gets_a_jsonrpc_502_naming_the_group() {
    let port = free_port();
    let gw = Gateway::start(&config_for(&[format!("http://127.0.0.1:{port}/mcp")], "")).await;
    let v = expect_refusal(post(&client(), &gw.url("/mcp"), LIST), 502, -32603).await;
    assert_eq!(v["id"], 1);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("group \"default\""),
        "{v}"
    );
}

#[tokio::test]
async fn health_endpoints() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    for path in ["/health", "/liveness"] {
        let resp = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
    }
    let v = json_of(c.get(gw.url("/readiness"))).await;
    assert_eq!(v["ready"], true);
    assert_eq!(
        up.state().await["requests"],
        0,
        "health probes never reach upstreams"
    );
}

#[tokio::test]
async fn strategies_spread_requests() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let c = client();
    for strategy in [
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "ip_hash",
    ] {
        let yaml = format!(
            "server:\n  host: 127.0.0.1\n  port: {{port}}\nupstream:\n  groups:\n    default:\n      strategy: {strategy}\n      servers:\n        - {{id: a, url: \"{}\", weight: 300}}\n        - {{id: b, url: \"{}\", weight: 100}}\n",
            a.url(),
            b.url()
        );
        let gw = Gateway::start(&yaml).await;
        let mut seen = std::collections::HashMap::<String, u32>::new();
        for _ in 0..40 {
            let r = received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
            *seen
                .entry(r["server"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let (na, nb) = (
            seen.get("a").copied().unwrap_or(0),
            seen.get("b").copied().unwrap_or(0),
        );
        match strategy {
            "round_robin" | "least_connections" => assert_eq!((na, nb), (20, 20), "{strategy}"),
            "weighted_round_robin" => assert_eq!((na, nb), (30, 10), "{strategy}"),
            "ip_hash" => assert!(
                na == 40 || nb == 40,
                "one client IP sticks to one server: {seen:?}"
            ),
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn the_clients_credentials_never_reach_the_upstream() {
    let up = Upstream::start("u");
    let c = client();
    let big = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x".repeat(100 * 1024)}}}).to_string();
    let send = |gw: &Gateway, body: String| {
        post(&c, &gw.url("/mcp"), body)
            .header("authorization", "Bearer client-token-123")
            .send()
    };
    // No upstream_auth: nothing is sent, for a small and a large body.
    let gw = Gateway::start(&config_for(&[up.url()], "")).await;
    for body in [LIST.to_string(), big.clone()] {
        let r = received(send(&gw, body).await.unwrap()).await;
        assert!(
            r["headers"].get("authorization").is_none(),
            "{}",
            r["headers"]
        );
    }
    drop(gw);

    // A group's own bearer token replaces it.
    let yaml = config_for(&[up.url()], "").replace(
        "      servers:\n",
        "      upstream_auth: {bearer: \"up-token-456\"}\n      servers:\n",
    );
    let gw = Gateway::start(&yaml).await;
    for body in [LIST.to_string(), big.clone()] {
        let r = received(send(&gw, body).await.unwrap()).await;
        assert_eq!(r["headers"]["authorization"], "Bearer up-token-456");
    }
    drop(gw);

    // Or any header the server wants.
    let yaml = config_for(&[up.url()], "").replace(
        "      servers:\n",
        "      upstream_auth: {header: X-Api-Key, value: \"k-789\"}\n      servers:\n",
    );
    let gw = Gateway::start(&yaml).await;
    let r = received(send(&gw, LIST.to_string()).await.unwrap()).await;
    assert_eq!(r["headers"]["x-api-key"], "k-789");
    assert!(r["headers"].get("authorization").is_none());
    assert!(!gw.log().contains("k-789") && !gw.log().contains("client-token-123"));
}

#[tokio::test]
async fn oversized_heads_get_431_and_connections_have_a_request_budget() {
    let (_up, gw) =
        one_upstream("limits:\n  max_request_headers: 4KiB\n  requests_per_connection: 3\n").await;
    let c = client();
    let v = expect_refusal(
        post(&c, &gw.url("/mcp"), LIST).header("x-padding", "p".repeat(5000)),
        431,
        -32600,
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_request_headers"));
    received(
        post(&c, &gw.url("/mcp"), LIST)
            .header("x-padding", "p".repeat(3000))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // The third request on a connection is its last: the gateway says so and closes.
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let mut conn = tokio::io::BufReader::new(stream);
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{LIST}",
        LIST.len()
    );
    let mut connection_headers = Vec::new();
    for _ in 0..3 {
        conn.get_mut().write_all(head.as_bytes()).await.unwrap();
        let (mut length, mut connection) = (0usize, String::new());
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if let Some(v) = lower.strip_prefix("connection:") {
                connection = v.trim().to_string();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        connection_headers.push(connection);
    }
    assert_eq!(connection_headers, ["keep-alive", "keep-alive", "close"]);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the connection closes after its budget"
    );
}

#[tokio::test]
async fn slow_clients_do_not_hold_up_others() {
    use tokio::io::AsyncWriteExt;
    let (_up, gw) = one_upstream("").await;
    // 200 clients that trickle a request head and never finish it.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        s.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // Everyone else is served meanwhile.
    let c = client();
    for _ in 0..10 {
        received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    }
    for s in &mut slow {
        let _ = s.write_all(b"a").await;
    }
    received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
}

#[tokio::test]
async fn get_streams_stay_open_until_stream_idle() {
    // The standing GET stream is bounded by timeouts.stream_idle, not timeouts.request.
    let (_up, gw) = one_upstream("timeouts:\n  stream_idle: 2s\n  request: 1s\n").await;
    let c = client();
    let stream = |delay: &str| {
        c.get(gw.url(&format!("/mcp?delay={delay}")))
            .header("accept", "text/event-stream")
            .send()
    };
    // Silent for 1.5 s: longer than timeouts.request, shorter than stream_idle.
    let text = stream("1.5")
        .await
        .unwrap()
        .text()
        .await
        .unwrap_or_default();
    assert!(text.contains("event: later"), "{text}");
    // Silent for longer than stream_idle: closed before the second event.
    let mut resp = stream("5").await.unwrap();
    let mut text = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("event: ready") && !text.contains("event: later"),
        "{text}"
    );
}
