//! The bad-input table against the real binary and the mock upstream: each row is raw
//! bytes a hostile or broken client sends on a fresh connection, with the exact status
//! and JSON-RPC code the gateway answers, whether the connection stays usable, and
//! whether the request may reach the upstream. After every row the upstream's request
//! count is checked (a refused row sends nothing) and a good request is served. The
//! table is also in docs/reliability.md.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::raw::Conn;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789";
const L: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const MODERN: &str = "2026-07-28";

/// `/mcp` open, `/secure` behind an HS256 JWT rule, sealed sessions, one allowed
/// origin, short body and head timeouts.
fn yaml(up: &Upstream) -> String {
    config_for(
        &[up.url()],
        &format!(
            r#"routes:
  - {{path: /mcp, group: default}}
  - {{path: /secure, group: default}}
sessions: {{keys: ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="], ttl: 1s}}
security:
  auth:
    - name: hs
      routes: [/secure]
      jwt: {{secret: "{SECRET}", algorithms: [HS256], audience: mcp-gateway}}
  cors:
    allowed_origins: ["https://app.example.com"]
admin:
  port: {{admin_port}}
  token: "{ADMIN_TOKEN}"
limits:
  request_head_timeout: 2s
  request_body_timeout: 1s
"#
        ),
    )
}

/// A POST of `body` to `path` with `fields` set (a `None` value removes the field).
fn request(path: &str, body: &[u8], fields: &[(&str, Option<&str>)]) -> Vec<u8> {
    request_line(&format!("POST {path} HTTP/1.1"), body, fields)
}

fn request_line(line: &str, body: &[u8], fields: &[(&str, Option<&str>)]) -> Vec<u8> {
    let len = body.len().to_string();
    let mut h: Vec<(String, String)> = vec![
        ("Host".into(), "localhost".into()),
        ("Content-Type".into(), "application/json".into()),
        (
            "Accept".into(),
            "application/json, text/event-stream".into(),
        ),
        ("Content-Length".into(), len),
    ];
    for (k, v) in fields {
        h.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        if let Some(v) = v {
            h.push((k.to_string(), v.to_string()));
        }
    }
    let mut out = format!("{line}\r\n").into_bytes();
    for (k, v) in h {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A `tools/call` whose arguments hold arrays nested `depth` deep.
fn nested(depth: usize) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"deep":{}{}}}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes()
}

fn post(body: &[u8]) -> Vec<u8> {
    request("/mcp", body, &[])
}

fn chunked(te: &str, chunks: &[u8]) -> Vec<u8> {
    request(
        "/mcp",
        chunks,
        &[("Content-Length", None), ("Transfer-Encoding", Some(te))],
    )
}

fn token(claims: Value, alg: &str, key: &[u8]) -> String {
    if alg == "none" {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let head = b64(&json!({"alg": "none", "typ": "JWT"}));
        return format!("{head}.{}.", b64(&claims));
    }
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

fn bearer(claims: Value, alg: &str, key: &[u8]) -> Vec<u8> {
    let auth = format!("Bearer {}", token(claims, alg, key));
    request("/secure", L.as_bytes(), &[("Authorization", Some(&auth))])
}

fn modern(method: &str, name: Option<&str>, fields: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut params = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}});
    if let Some(n) = name {
        params["name"] = json!(n);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut f = vec![("MCP-Protocol-Version", Some(MODERN))];
    f.extend_from_slice(fields);
    request("/mcp", body.as_bytes(), &f)
}

/// Where a row is sent.
#[derive(Clone, Copy, PartialEq)]
enum Port {
    Proxy,
    Admin,
}

struct Row {
    name: &'static str,
    port: Port,
    bytes: Vec<u8>,
    /// The answer's status; `0`: the connection closes with no answer.
    status: u16,
    /// The JSON-RPC error code (`None`: a success, or no JSON-RPC body).
    code: Option<i64>,
    /// A good request on the same connection is served afterwards.
    usable: bool,
    /// The request is the upstream's to answer (refused rows never reach it).
    forwarded: bool,
}

fn row(name: &'static str, bytes: Vec<u8>, status: u16, code: Option<i64>, usable: bool) -> Row {
    Row {
        name,
        port: Port::Proxy,
        bytes,
        status,
        code,
        usable,
        forwarded: false,
    }
}

/// A row the gateway passes on (it is valid, if odd).
fn passed(name: &'static str, bytes: Vec<u8>, usable: bool) -> Row {
    Row {
        forwarded: true,
        ..row(name, bytes, 200, None, usable)
    }
}

fn table() -> Vec<Row> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |aud: &str, exp: u64| json!({"sub": "a", "aud": aud, "exp": exp});
    let key = SECRET.as_bytes();
    let l = L.as_bytes();
    let inv = Some(-32600);
    vec![
        // JSON and JSON-RPC.
        row("malformed JSON", post(br#"{"jsonrpc":"#), 400, Some(-32700), true),
        row("wrong jsonrpc", post(br#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#), 400, inv, true),
        row("no jsonrpc", post(br#"{"id":1,"method":"tools/list"}"#), 400, inv, true),
        row("null id", post(br#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#), 400, inv, true),
        row("boolean id", post(br#"{"jsonrpc":"2.0","id":true,"method":"tools/list"}"#), 400, inv, true),
        row("object id", post(br#"{"jsonrpc":"2.0","id":{},"method":"tools/list"}"#), 400, inv, true),
        row("array id", post(br#"{"jsonrpc":"2.0","id":[1],"method":"tools/list"}"#), 400, inv, true),
        passed("fractional id", post(br#"{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}"#), true),
        passed("30-digit id", post(br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"tools/list"}"#), true),
        passed("100 kB string id", post(json!({"jsonrpc": "2.0", "id": "x".repeat(100_000), "method": "tools/list"}).to_string().as_bytes()), true),
        passed("100 kB method", post(json!({"jsonrpc": "2.0", "id": 1, "method": "m".repeat(100_000)}).to_string().as_bytes()), true),
        row("method not a string", post(br#"{"jsonrpc":"2.0","id":1,"method":5}"#), 400, inv, true),
        row("100k '['", post(&[b'['; 100_000]), 400, Some(-32700), true),
        passed("params nested 100 deep", post(&nested(100)), true),
        row("params nested 200 deep", post(&nested(200)), 400, Some(-32700), true),
        passed("1e999999 in arguments", post(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"n":1e999999}}}"#), true),
        row("invalid UTF-8", post(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/\xff\xfe\"}"), 400, Some(-32700), true),
        row("byte order mark", post(&[b"\xef\xbb\xbf", l].concat()), 400, Some(-32700), true),
        row("duplicate id", post(br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}"#), 400, inv, true),
        row("duplicate method", post(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#), 400, inv, true),
        row("empty batch", post(b"[]"), 400, inv, true),
        row("a number as the message", post(b"42"), 400, inv, true),
        row("a response without id", post(br#"{"jsonrpc":"2.0","result":{}}"#), 400, inv, true),
        row("params a string", post(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":"x"}"#), 400, inv, true),
        // Content types.
        row("text/plain", request("/mcp", l, &[("Content-Type", Some("text/plain"))]), 415, inv, true),
        row("no Content-Type", request("/mcp", l, &[("Content-Type", None)]), 415, inv, true),
        row("charset=latin1", request("/mcp", l, &[("Content-Type", Some("application/json; charset=latin1"))]), 415, inv, true),
        passed("charset=utf-8", request("/mcp", l, &[("Content-Type", Some("application/json; charset=utf-8"))]), true),
        // Framing and the head.
        row("Content-Length short", request("/mcp", l, &[("Content-Length", Some("10"))]), 400, Some(-32700), false),
        row("Content-Length long (a stalled body)", request("/mcp", l, &[("Content-Length", Some("100"))]), 408, inv, false),
        passed("Content-Length and Transfer-Encoding (chunked wins, then close)", request("/mcp", format!("2e\r\n{L}\r\n0\r\n\r\n").as_bytes(), &[("Content-Length", Some("46")), ("Transfer-Encoding", Some("chunked"))]), false),
        row("Content-Length -1", request("/mcp", l, &[("Content-Length", Some("-1"))]), 400, inv, false),
        row("Content-Length +46", request("/mcp", l, &[("Content-Length", Some("+46"))]), 400, inv, false),
        passed("Content-Length: 46, 46", request("/mcp", l, &[("Content-Length", Some("46, 46"))]), true),
        row("chunk size not hex", chunked("chunked", format!("zz\r\n{L}\r\n0\r\n\r\n").as_bytes()), 400, inv, true),
        row("chunk size too large (a stalled body)", chunked("chunked", format!("ff\r\n{L}\r\n0\r\n\r\n").as_bytes()), 408, inv, false),
        row("Transfer-Encoding: chunked, identity", chunked("chunked, identity", format!("2e\r\n{L}\r\n0\r\n\r\n").as_bytes()), 400, inv, false),
        row("Transfer-Encoding with a space before the colon", [&b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding : chunked\r\n\r\n"[..], format!("2e\r\n{L}\r\n0\r\n\r\n").as_bytes()].concat(), 400, inv, false),
        row("Transfer-Encoding in HTTP/1.0", request_line("POST /mcp HTTP/1.0", format!("2e\r\n{L}\r\n0\r\n\r\n").as_bytes(), &[("Content-Length", None), ("Transfer-Encoding", Some("chunked"))]), 400, inv, false),
        row("CR inside a field value", [&b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\r\n"[..], l].concat(), 400, inv, false),
        row("NUL inside a field value", [&b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\r\n"[..], l].concat(), 400, inv, false),
        passed("bare LF line ends", [&b"POST /mcp HTTP/1.1\nHost: localhost\nContent-Type: application/json\nAccept: application/json, text/event-stream\nContent-Length: 46\n\n"[..], l].concat(), true),
        row("40 kB head", request("/mcp", l, &[("X-Big", Some(&"a".repeat(40_000)))]), 431, inv, false),
        row("300 header fields", [b"POST /mcp HTTP/1.1\r\nHost: localhost\r\n".to_vec(), (0..300).flat_map(|i| format!("X-{i}: a\r\n").into_bytes()).collect(), b"Content-Type: application/json\r\nContent-Length: 46\r\n\r\n".to_vec(), l.to_vec()].concat(), 400, inv, false),
        row("declared 10 MiB body", request("/mcp", b"", &[("Content-Length", Some("10485760"))]), 413, inv, false),
        row("10 MiB body awaiting 100-continue", request("/mcp", b"", &[("Content-Length", Some("10485760")), ("Expect", Some("100-continue"))]), 413, inv, false),
        passed("HTTP/1.0 (closes after)", request_line("POST /mcp HTTP/1.0", l, &[]), false),
        passed("two pipelined requests", [post(l), post(l)].concat(), true),
        row("lowercase method", request_line("post /mcp HTTP/1.1", l, &[]), 405, inv, true),
        row("PUT", request_line("PUT /mcp HTTP/1.1", l, &[]), 405, inv, true),
        row("absolute-form target", request_line("POST http://evil.example/mcp HTTP/1.1", l, &[]), 400, inv, false),
        row("GET without Accept: text/event-stream", request_line("GET /mcp HTTP/1.1", b"", &[("Accept", Some("application/json")), ("Content-Type", None), ("Content-Length", None)]), 406, inv, true),
        // Credentials.
        row("no token", request("/secure", l, &[]), 401, Some(-32010), true),
        row("forged token", bearer(claims("mcp-gateway", now + 300), "HS256", &[b'x'; 32]), 401, Some(-32010), true),
        row("expired token", bearer(claims("mcp-gateway", now - 300), "HS256", key), 401, Some(-32010), true),
        row("alg: none", bearer(claims("mcp-gateway", now + 300), "none", key), 401, Some(-32010), true),
        row("wrong audience", bearer(claims("other", now + 300), "HS256", key), 401, Some(-32010), true),
        Row { forwarded: true, ..row("a good token", bearer(claims("mcp-gateway", now + 300), "HS256", key), 200, None, true) },
        row("tampered session", request("/mcp", l, &[("Mcp-Session-Id", Some("v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))]), 404, Some(-32001), true),
        row("foreign Origin", request("/mcp", l, &[("Origin", Some("https://evil.example"))]), 403, Some(-32012), true),
        // Paths and hosts.
        row("/mcp/../admin", request("/mcp/../admin", l, &[]), 404, inv, true),
        row("/%2e%2e/mcp", request("/%2e%2e/mcp", l, &[]), 404, inv, true),
        row("//mcp", request("//mcp", l, &[]), 404, inv, true),
        row("20 kB path", request(&format!("/mcp{}", "a".repeat(20_000)), l, &[]), 404, inv, true),
        passed("a query string", request("/mcp?x=1", l, &[]), true),
        Row { port: Port::Admin, ..row("a foreign Host at the admin port", request_line("GET /api/v1/status HTTP/1.1", b"", &[("Host", Some("evil.example")), ("Authorization", Some(&format!("Bearer {ADMIN_TOKEN}"))), ("Content-Type", None), ("Content-Length", None)]), 421, inv, false) },
        // The modern era's headers.
        row("Mcp-Method differs from the body", modern("tools/list", None, &[("Mcp-Method", Some("tools/call"))]), 400, Some(-32020), true),
        row("Mcp-Name as broken base64", modern("tools/call", Some("echo"), &[("Mcp-Method", Some("tools/call")), ("Mcp-Name", Some("=?base64?!!!?="))]), 400, Some(-32020), true),
    ]
}

/// Send a row's bytes on a fresh connection: the answer (`None`: closed with none) and
/// the connection, to try again.
async fn send(port: u16, bytes: &[u8]) -> (Option<common::raw::Answer>, Conn) {
    let mut c = Conn::open(port).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), c.send(bytes))
        .await
        .expect("an answer or a close within 10 s");
    (answer, c)
}

#[tokio::test]
async fn the_bad_input_table() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&up)).await;
    let admin_port: u16 = gw
        .admin_url("/")
        .rsplit_once(':')
        .unwrap()
        .1
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let rows = table();
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let mut failures = Vec::new();
    for r in &rows {
        let before = up.state().await["requests"].as_u64().unwrap();
        let port = match r.port {
            Port::Proxy => gw.port,
            Port::Admin => admin_port,
        };
        let (answer, mut c) = send(port, &r.bytes).await;
        let status = answer.as_ref().map_or(0, |a| a.status);
        let code = answer
            .as_ref()
            .filter(|a| a.header("content-type") == Some("application/json"))
            .and_then(|a| serde_json::from_slice::<Value>(&a.body).ok())
            .and_then(|v| v["error"]["code"].as_i64());
        let reached = up.state().await["requests"].as_u64().unwrap() > before;
        let good = request_line("POST /mcp HTTP/1.1", L.as_bytes(), &[]);
        let usable = match r.port {
            Port::Admin => false,
            Port::Proxy => tokio::time::timeout(Duration::from_secs(5), c.send(&good))
                .await
                .ok()
                .flatten()
                .is_some_and(|a| a.status == 200),
        };
        // Every error the gateway writes is a JSON-RPC error object.
        let json_error = answer
            .as_ref()
            .is_none_or(|a| a.status < 400 || code.is_some());
        if (status, code, usable) != (r.status, r.code, r.usable)
            || (reached && !r.forwarded)
            || !json_error
        {
            failures.push(format!(
                "{}: got status {status}, code {code:?}, usable {usable}, reached the upstream \
                 {reached}, a JSON-RPC error {json_error}; want status {}, code {:?}, usable {}, \
                 may reach it {}",
                r.name, r.status, r.code, r.usable, r.forwarded
            ));
        }
        // The gateway still serves a good request on a new connection.
        let (fresh, _) = send(gw.port, &good).await;
        assert_eq!(
            fresh.map(|a| a.status),
            Some(200),
            "after {}: {}",
            r.name,
            gw.log()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // `BAD_INPUT_TABLE=1 cargo test --test bad_input -- --nocapture` prints the table
    // docs/reliability.md shows.
    if std::env::var_os("BAD_INPUT_TABLE").is_some() {
        println!("| input | status | JSON-RPC code | connection after | reaches the upstream |");
        println!("|---|---|---|---|---|");
        for r in &rows {
            let status = match r.status {
                0 => "closed, no answer".to_string(),
                s => s.to_string(),
            };
            let code = r.code.map_or("—".to_string(), |c| format!("`{c}`"));
            let after = if r.usable { "usable" } else { "closed" };
            let reaches = if r.forwarded { "yes (valid)" } else { "no" };
            println!(
                "| {} | {status} | {code} | {after} | {reaches} |",
                r.name.replace('|', "\\|")
            );
        }
    }
}

#[tokio::test]
async fn a_session_replayed_after_its_ttl_is_not_found() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&up)).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}});
    let (answer, _) = send(gw.port, &post(init.to_string().as_bytes())).await;
    let answer = answer.unwrap();
    assert_eq!(answer.status, 200);
    let sealed = answer.header("mcp-session-id").unwrap().to_string();
    let list = request("/mcp", L.as_bytes(), &[("Mcp-Session-Id", Some(&sealed))]);
    assert_eq!(send(gw.port, &list).await.0.unwrap().status, 200);
    // sessions.ttl is 1 s, counted in whole seconds.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let before = up.state().await["requests"].clone();
    let (expired, _) = send(gw.port, &list).await;
    let expired = expired.unwrap();
    assert_eq!(expired.status, 404);
    assert_eq!(expired.json()["error"]["code"], -32001);
    assert_eq!(up.state().await["requests"], before, "never sent upstream");
}

/// `limits.max_json_depth` is the operator's: a lower limit refuses what the default
/// passes (and names the setting), `0` passes what the default refuses.
#[tokio::test]
async fn the_nesting_limit_is_the_configured_one() {
    let body = |depth| String::from_utf8(nested(depth)).unwrap();
    let (up, gw) = one_upstream("limits: {max_json_depth: 8}\n").await;
    let before = up.state().await["requests"].as_u64().unwrap();
    let r = common::post(&client(), &gw.url("/mcp"), body(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32700, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_json_depth"),
        "{v}"
    );
    assert_eq!(up.state().await["requests"].as_u64().unwrap(), before);
    let r = common::post(&client(), &gw.url("/mcp"), body(4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (_up, gw) = one_upstream("limits: {max_json_depth: 0}\n").await;
    let r = common::post(&client(), &gw.url("/mcp"), body(300))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
