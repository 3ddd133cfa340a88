//! WebSocket and legacy HTTP+SSE clients against the real binary and the mock upstream:
//! each message is a request of its own to the gateway (metrics, rate limits, the
//! upstream session, its GET stream and its DELETE), modern-era cancellation, the close
//! on an upgrade, the internal listener honouring only the tickets it issued, token
//! expiry, handshake refusals before the switch, pings and the close of a silent client.
//! (The SDK clients and the negative table: tests/e2e/test_client_transports.py.)

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gateway, path: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}{path}", gw.port);
    let (ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("the upgrade failed: {e}\n{}", gw.log()));
    assert_eq!(resp.status(), 101);
    ws
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// The next JSON-RPC message the gateway sends (pings and pongs skipped).
async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(t) = frame {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The answer to request `id` (other messages on the way are collected in `seen`).
async fn answer(ws: &mut Ws, id: i64, seen: &mut Vec<Value>) -> Value {
    loop {
        let m = next(ws).await;
        if m["id"] == id && m.get("method").is_none() {
            return m;
        }
        seen.push(m);
    }
}

fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"roots": {}},
        "clientInfo": {"name": "ws-test", "version": "1"}}})
}

#[tokio::test]
async fn a_websocket_holds_one_upstream_session_with_its_get_stream_and_deletes_it() {
    let up = Upstream::start("u");
    // `?notify=1`: the upstream's GET stream sends server-initiated messages at once.
    let gw = Gateway::start(&config_for(&[format!("{}?notify=1", up.url())], "")).await;
    let mut ws = connect(&gw, "/mcp").await;
    let mut seen = Vec::new();

    send(&mut ws, initialize(1)).await;
    let init = answer(&mut ws, 1, &mut seen).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;

    // The session's GET stream: its messages arrive as frames, the server's request too.
    let mut methods = Vec::new();
    while !methods.iter().any(|m| m == "roots/list") {
        let m = next(&mut ws).await;
        methods.push(m["method"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        methods.contains(&"notifications/message".to_string()),
        "{methods:?}"
    );
    // The answer to the server's request goes back in the session.
    let roots = json!({"jsonrpc": "2.0", "id": 0, "result": {"roots": [{"uri": "file:///srv"}]}});
    send(&mut ws, roots.clone()).await;

    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}),
    )
    .await;
    let call = answer(&mut ws, 2, &mut seen).await;
    let got = &call["result"];
    assert_eq!(got["server"], "u", "{call}");
    // The upstream's own session id, and the protocol version the initialize agreed on.
    assert_eq!(got["headers"]["mcp-session-id"], "u-session-1", "{call}");
    assert_eq!(
        got["headers"]["mcp-protocol-version"], "2025-11-25",
        "{call}"
    );
    assert!(
        got["headers"].get("x-mcp-gateway-caller").is_none(),
        "the ticket stays inside the gateway: {call}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            up.state().await["last_response"] == roots
        })
        .await,
        "{}",
        up.state().await
    );

    // Each message was a request of its own.
    let metrics = gw.metrics().await;
    for method in ["initialize", "notifications/initialized", "tools/call"] {
        assert!(
            metrics.contains(&format!(r#"method="{method}",route="/mcp""#)),
            "{method}:\n{metrics}"
        );
    }

    // The socket closes: the session is deleted upstream.
    ws.close(None).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            up.state().await["deletes"] == 1
        })
        .await,
        "{}",
        up.state().await
    );
}

#[tokio::test]
async fn rate_limits_count_each_message() {
    let (_up, gw) = one_upstream(
        "security:\n  rate_limiting:\n    rules:\n      - {name: per-ip, key_strategy: ip_address, requests_per_minute: 4}\n",
    )
    .await;
    // The upgrade is one request, each message another.
    let mut ws = connect(&gw, "/mcp").await;
    let mut seen = Vec::new();
    for id in 1..=3 {
        send(
            &mut ws,
            json!({"jsonrpc": "2.0", "id": id, "method": "ping"}),
        )
        .await;
        assert!(answer(&mut ws, id, &mut seen).await.get("result").is_some());
    }
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
    )
    .await;
    let limited = answer(&mut ws, 4, &mut seen).await;
    assert_eq!(limited["error"]["code"], -32011, "{limited}");
    assert!(
        limited["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per-ip"),
        "{limited}"
    );
}

#[tokio::test]
async fn a_modern_cancellation_aborts_the_request_it_names() {
    let (up, gw) = one_upstream("").await;
    let mut ws = connect(&gw, "/mcp").await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    // A streamed call that stays silent, watching for its client to go away.
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": "call-1", "method": "tools/call", "params": {
            "name": "stream", "arguments": {"idle": true, "watch": true}, "_meta": meta}}),
    )
    .await;
    let first = next(&mut ws).await;
    assert!(
        first.get("method").is_some(),
        "the stream's first event: {first}"
    );
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
            "requestId": "call-1", "_meta": meta}}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            up.state().await["cancelled"] == 1
        })
        .await,
        "the upstream's stream was not closed: {}\n{}",
        up.state().await,
        gw.log()
    );
    // The socket serves on.
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"_meta": meta}}),
    )
    .await;
    let listed = answer(&mut ws, 9, &mut Vec::new()).await;
    assert!(listed["result"]["tools"].is_array(), "{listed}");
}

#[tokio::test]
async fn an_upgrade_closes_websockets_with_1001_after_their_calls() {
    let (_up, gw) = one_upstream("").await;
    let mut ws = connect(&gw, "/mcp").await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert!(next(&mut ws).await.get("result").is_some());
    // A call still running when the upgrade starts is answered before the close.
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "slow", "arguments": {"delay": 6}}}),
    )
    .await;
    let new_gateway = upgrade(&gw);
    let mut answered = false;
    let code = loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("the close within 60s")
            .expect("a close frame before the end")
            .unwrap();
        match frame {
            Message::Text(t) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                answered |= m["id"] == 2 && m.get("result").is_some();
            }
            Message::Close(c) => break c.map(|c| u16::from(c.code)),
            _ => {}
        }
    };
    assert!(answered, "the call in flight was answered first");
    assert_eq!(code, Some(1001), "{}", gw.log());
    // The new process takes WebSocket clients.
    let mut again = connect(&gw, "/mcp").await;
    send(
        &mut again,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert!(next(&mut again).await.get("result").is_some());
    drop(again);
    let _ = std::process::Command::new("kill")
        .args(["-INT", &new_gateway.to_string()])
        .status();
}

#[tokio::test]
async fn the_internal_listener_honours_only_live_tickets() {
    let key = "s3cret-key";
    let (_up, gw) = one_upstream(&format!(
        "security:\n  auth:\n    - api_keys:\n        keys:\n          - {{id: alice, sha256: \"{}\"}}\n",
        sha256_hex(key.as_bytes())
    ))
    .await;
    // A client's own request naming a ticket is not let in by it.
    let forged = client()
        .post(gw.url("/mcp"))
        .header("content-type", "application/json")
        .header("x-mcp-gateway-caller", format!("{:032x}", 1u128))
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    expect_error(forged, 401, -32010).await;

    // The internal socket itself: without a live ticket, nothing is served.
    let pid = gw.pid();
    let socket = std::env::temp_dir().join(format!("mcp-gateway-{pid}/gateway.sock"));
    assert!(socket.exists(), "{}", socket.display());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "only the gateway's user reaches it");
    let internal = reqwest::Client::builder()
        .unix_socket(socket)
        .build()
        .unwrap();
    let ping = || {
        internal
            .post("http://localhost/mcp")
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
    };
    // A ticket that names no open connection: as a session that ended.
    let dead = ping().header("x-mcp-gateway-caller", format!("{:032x}", 7u128));
    expect_error(dead.send().await.unwrap(), 404, -32001).await;
    // No ticket: a client like any other, whose credential is checked.
    expect_error(ping().send().await.unwrap(), 401, -32010).await;

    // A WebSocket with the key: its messages go through as the key's.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://127.0.0.1:{}/mcp", gw.port),
    )
    .unwrap();
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    let pong = next(&mut ws).await;
    assert!(pong.get("result").is_some(), "{pong}");
}

#[tokio::test]
async fn a_socket_opened_with_a_token_serves_no_message_after_it_expires() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const SECRET: &str = "a-websocket-secret-of-at-least-32-bytes!";
    let (_up, gw) = one_upstream(&format!(
        "security:\n  auth:\n    - jwt: {{secret: \"{SECRET}\", algorithms: [HS256], leeway: 0s}}\n"
    ))
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = now + 2;
    let token = encode(
        &Header::default(),
        &json!({"sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://127.0.0.1:{}/mcp", gw.port),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert!(next(&mut ws).await.get("result").is_some());
    // Past the token's exp (whole seconds), the socket's messages are refused.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= exp
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
    )
    .await;
    let refused = next(&mut ws).await;
    assert_eq!(refused["id"], 2, "{refused}");
    assert_eq!(refused["error"]["code"], -32010, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_handshake_the_adapter_cannot_answer_is_refused_before_anything_is_switched() {
    let (up, gw) = one_upstream("").await;
    let base =
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n";
    for (extra, says) in [
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Sec-WebSocket-Version: 13",
        ),
        (
            "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "Sec-WebSocket-Version: 13",
        ),
        ("Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Key"),
    ] {
        let answer = raw_request(gw.port, &format!("{base}{extra}\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{extra}: {answer}");
        assert!(
            answer.contains("-32600") && answer.contains(says),
            "{extra}: {answer}"
        );
    }
    assert_eq!(
        up.state().await["requests"],
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn the_gateway_pings_and_closes_a_client_that_stays_silent() {
    let (_up, gw) = one_upstream("limits:\n  websocket_ping_interval: 1s\n").await;
    let mut ws = connect(&gw, "/mcp").await;
    // A client that reads answers the pings (tungstenite does it while reading).
    let ping = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => return,
                Some(Ok(_)) => {}
                other => panic!("the socket ended before a ping: {other:?}"),
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "no ping within 20s");
    // One that reads nothing for several intervals (no pong goes back) is closed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "a silent client was not closed\n{}",
        gw.log()
    );
}

#[test]
fn a_websocket_message_cap_of_zero_is_refused_with_its_path() {
    expect_invalid(
        "upstream:\n  groups:\n    default:\n      servers:\n        - {id: a, url: \"http://127.0.0.1:1/mcp\"}\nlimits:\n  max_websocket_message: 0\n",
        &["limits.max_websocket_message: must be greater than 0"],
    );
}
