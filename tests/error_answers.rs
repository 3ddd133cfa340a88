//! The JSON-RPC errors the gateway answers itself, each on a keep-alive connection: the
//! status and code, a `Content-Length` body, and whether the connection stays usable.
//! It does wherever the request was read to its end, or its unread body was small
//! enough to read away; it closes after an answer to a request whose body the gateway
//! would not read (too large, chunked, held back for `100 Continue`) and after an
//! oversized request head. An upstream failure leaves it open whatever the method.

mod common;

use common::*;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const KEY: &str = "error-answers-key-0123456789";

fn yaml(up: &Upstream) -> String {
    let key = sha256_hex(KEY.as_bytes());
    // A port nothing listens on: the `dead` group's server refuses every connection.
    let dead = free_port();
    format!(
        r#"server:
  host: 127.0.0.1
  port: {{port}}
  threads: 2
logging: {{level: info, format: text}}
limits: {{max_request_body: 4KiB}}
routes:
  - {{path: /mcp, group: default}}
  - {{path: /mcp/keyed, group: default}}
  - {{path: /mcp/limited, group: default}}
  - {{path: /mcp/dead, group: dead}}
upstream:
  groups:
    default:
      servers:
        - {{id: s1, url: "{}"}}
    dead:
      retries: 0
      servers:
        - {{id: gone, url: "http://127.0.0.1:{dead}/mcp"}}
security:
  auth:
    - routes: [/mcp/keyed]
      api_keys:
        keys:
          - {{id: k, sha256: "{key}"}}
  policies:
    - {{name: no-status, effect: deny, tools: [status]}}
    - {{name: the-rest, effect: allow}}
  rate_limiting:
    rules:
      - {{name: one-a-minute, routes: [/mcp/limited], key_strategy: global, requests_per_minute: 1}}
"#,
        up.url()
    )
}

/// A raw HTTP/1.1 request.
fn request(method: &str, path: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    r.into_bytes()
}

fn post(path: &str, body: &str) -> Vec<u8> {
    request("POST", path, &["Content-Type: application/json"], body)
}

fn call(tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    )
}

#[tokio::test]
async fn errors_are_jsonrpc_answers_that_keep_a_read_connection() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&up)).await;
    let chunked = "POST /mcp/keyed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".as_bytes().to_vec();
    let held_back = "POST /mcp/keyed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".as_bytes().to_vec();
    let big = "x".repeat(5000);
    // (what, the request, status, JSON-RPC code, the connection stays open)
    let rows: Vec<(&str, Vec<u8>, u16, i64, bool)> = vec![
        ("not JSON", post("/mcp", "{"), 400, -32700, true),
        (
            "not JSON-RPC 2.0",
            post("/mcp", r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#),
            400,
            -32600,
            true,
        ),
        (
            "no such route (body read away)",
            post("/nope", LIST),
            404,
            -32600,
            true,
        ),
        (
            "method not allowed (body read away)",
            request("PUT", "/mcp", &["Content-Type: application/json"], LIST),
            405,
            -32600,
            true,
        ),
        (
            "not application/json (body read away)",
            request("POST", "/mcp", &["Content-Type: text/plain"], LIST),
            415,
            -32600,
            true,
        ),
        (
            "no credential (body read away)",
            post("/mcp/keyed", LIST),
            401,
            -32010,
            true,
        ),
        (
            "denied by a policy",
            post("/mcp", &call("status")),
            403,
            -32013,
            true,
        ),
        (
            "rate-limited (the second call)",
            post("/mcp/limited", LIST),
            429,
            -32011,
            true,
        ),
        (
            "the upstream refuses connections",
            post("/mcp/dead", LIST),
            502,
            -32603,
            true,
        ),
        // A GET stream and a DELETE go through the same exchange as a POST: an upstream
        // failure leaves the client's connection open.
        (
            "the upstream of a GET stream refuses connections",
            request("GET", "/mcp/dead", &["Accept: text/event-stream"], ""),
            502,
            -32603,
            true,
        ),
        (
            "the upstream of a DELETE refuses connections",
            request("DELETE", "/mcp/dead", &[], ""),
            502,
            -32603,
            true,
        ),
        (
            "a request head over limits.max_request_headers",
            request(
                "POST",
                "/mcp",
                &[
                    "Content-Type: application/json",
                    &format!("X-Pad: {}", "p".repeat(40_000)),
                ],
                LIST,
            ),
            431,
            -32600,
            false,
        ),
        (
            "a body over limits.max_request_body",
            post("/mcp", &big),
            413,
            -32600,
            false,
        ),
        ("no credential, chunked body", chunked, 401, -32010, false),
        (
            "no credential, body held back for 100 Continue",
            held_back,
            401,
            -32010,
            false,
        ),
    ];
    let good = post("/mcp", LIST);
    // The rate limit's one request of the minute.
    let mut first = Conn::open(gw.port).await;
    assert_eq!(
        first
            .send(&post("/mcp/limited", LIST))
            .await
            .unwrap()
            .status,
        200
    );

    for (what, raw, status, code, open) in rows {
        let mut conn = Conn::open(gw.port).await;
        let answer = conn
            .send(&raw)
            .await
            .unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let v = answer.json();
        assert_eq!(v["jsonrpc"], "2.0", "{what}: {v}");
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        if open {
            assert_eq!(answer.header("connection"), Some("keep-alive"), "{what}");
            let next = conn
                .send(&good)
                .await
                .unwrap_or_else(|| panic!("{what}: the connection closed after the error"));
            assert_eq!(
                next.status, 200,
                "{what}: the next request on the connection"
            );
            assert!(next.json()["result"]["tools"].is_array(), "{what}");
        } else {
            assert_eq!(answer.header("connection"), Some("close"), "{what}");
            assert!(conn.closed().await, "{what}: the connection stayed open");
        }
    }
}
