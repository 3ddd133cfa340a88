//! Inspection hardening against the real binary: batches are authorized, rate-limited
//! and filtered item by item; lists are filtered on every SSE stream (GET included) and
//! whatever their framing, failing closed; policies read the field each method names;
//! ambiguous and non-UTF-8 bodies are refused.

mod common;

use common::*;
use serde_json::{json, Value};

/// Anonymous clients; `status`, `mem://private/*` and `internal_audit` are denied.
const POLICIES: &str = "security:\n  policies:\n    - {name: no-status, effect: deny, tools: [status]}\n    - {name: no-private, effect: deny, resources: ['mem://private/*']}\n    - {name: no-audit, effect: deny, prompts: [internal_audit]}\n    - {name: the-rest, effect: allow}\n";

async fn policy_gateway(up: &Upstream) -> Gateway {
    Gateway::start(&config_for(&[up.url()], POLICIES)).await
}

async fn send(gw: &Gateway, body: impl Into<reqwest::Body>) -> reqwest::Response {
    post(&client(), &gw.url("/mcp"), body).send().await.unwrap()
}

async fn requests(up: &Upstream) -> i64 {
    up.state().await["requests"].as_i64().unwrap()
}

/// The `data` of every SSE event in `text` (LF framing, as the gateway writes it).
fn sse_data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| {
                serde_json::from_str(&data.join("\n"))
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {event:?}"))
            })
        })
        .collect()
}

fn tool_names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no result.tools in {v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

// ---- item: batches -------------------------------------------------------------------

#[tokio::test]
async fn batch_lists_are_filtered_like_single_lists() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    // No MCP-Protocol-Version: 2025-03-26, where batches are allowed.
    for batch in [
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"},{"jsonrpc":"2.0","id":3,"method":"resources/list"}]"#,
    ] {
        let resp = send(&gw, batch).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(!text.contains("\"status\""), "{text}");
        assert!(!text.contains("mem://private/keys"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let lists: Vec<&Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["result"].get("tools").is_some())
            .collect();
        assert_eq!(lists.len(), 1, "{text}");
        assert_eq!(tool_names(lists[0]), ["echo", "stream"]);
    }
    // A batch padded past 64 KiB: the same.
    let padded = json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"pad": "x".repeat(100 * 1024)}}}])
    .to_string();
    let resp = send(&gw, padded).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(tool_names(&v[0]), ["echo", "stream"]);
}

#[tokio::test]
async fn every_batched_tool_call_counts_against_tool_limits() {
    let (up, gw) = one_upstream("security:\n  rate_limiting:\n    rules:\n      - {name: echo-cap, key_strategy: tool, requests_per_minute: 2}\n").await;
    let echo = |id: usize| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo"}});
    let batch = Value::Array((1..=50).map(echo).collect()).to_string();
    let v = expect_error(send(&gw, batch).await, 429, -32011).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("echo-cap"),
        "{v}"
    );
    assert_eq!(
        requests(&up).await,
        0,
        "the refused batch reached the upstream"
    );
    // A batch the limit allows goes through; the next call is over it.
    let up2 = Upstream::start("u2");
    let gw2 = Gateway::start(&config_for(
        &[up2.url()],
        "security:\n  rate_limiting:\n    rules:\n      - {name: echo-cap, key_strategy: tool, requests_per_minute: 2}\n",
    ))
    .await;
    let two = Value::Array(vec![echo(1), echo(2)]).to_string();
    assert_eq!(send(&gw2, two).await.status(), 200);
    expect_error(send(&gw2, echo(3).to_string()).await, 429, -32011).await;
    // Each batched call is metered as a tool call.
    let metrics = gw2.metrics().await;
    let calls: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("mcp_gateway_tool_calls_total{"))
        .filter(|l| l.contains("status=\"200\"") || l.contains("status=\"2xx\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(calls, 2, "{metrics}");
}

#[tokio::test]
async fn batches_are_authorized_item_by_item() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"mem://private/keys","name":"readme"}}]"#;
    let v = expect_error(send(&gw, batch).await, 403, -32013).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mem://private/keys"),
        "{v}"
    );
    assert_eq!(requests(&up).await, 0);
}

// ---- item: lists on GET streams and in every framing ------------------------------------

#[tokio::test]
async fn lists_on_a_get_stream_are_filtered() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    let c = client();
    // A client resuming its stream, and a server completing a POST on the GET stream.
    for (query, last_event_id) in [("", Some("list-1")), ("?list=lf", None)] {
        let mut req = c
            .get(gw.url(&format!("/mcp{query}")))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(!text.contains("\"status\""), "{text}");
        let events = sse_data(&text);
        assert_eq!(events.len(), 1, "{text}");
        assert_eq!(tool_names(&events[0]), ["echo", "stream"]);
        assert!(
            text.starts_with("id: 2\n"),
            "the event keeps its id: {text}"
        );
    }
}

#[tokio::test]
async fn streams_without_lists_pass_unchanged_and_compressed_lists_fail_closed() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    let c = client();
    // The GET stream's other events flow as the server wrote them.
    let resp = c
        .get(gw.url("/mcp?delay=0.1"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: ready\ndata: {"), "{text}");
    assert!(text.ends_with("event: later\ndata: {}\n\n"), "{text}");
    // A list the server compressed although asked not to cannot be read: an error instead.
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": {"gzip": true}}});
    let resp = post(&c, &gw.url("/mcp"), body.to_string())
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["id"].as_i64(), v["error"]["code"].as_i64()),
        (Some(5), Some(-32603)),
        "{v}"
    );
    // The gateway asked for an uncompressed answer.
    let r = received(
        post(
            &c,
            &gw.url("/mcp"),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
        )
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(r["headers"].get("accept-encoding").is_none(), "{r}");
}

#[tokio::test]
async fn lists_answering_unknown_methods_are_filtered() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    for sse in [false, true] {
        let body = json!({"jsonrpc": "2.0", "id": 8, "method": "vendor/tools", "params": {"_meta": {"sse": sse}}});
        let resp = send(&gw, body.to_string()).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(!text.contains("\"status\""), "sse={sse}: {text}");
        assert!(text.contains("\"echo\""), "sse={sse}: {text}");
    }
}

/// A GET stream or a POST list answer, framed as `frame`, with `Content-Type` `ct`.
async fn framed(gw: &Gateway, get: bool, frame: &str, ct: Option<&str>) -> String {
    let c = client();
    let resp = if get {
        let mut url = format!("/mcp?list={frame}");
        if let Some(ct) = ct {
            url.push_str(&format!("&ct={}", ct.replace('/', "%2F")));
        }
        c.get(gw.url(&url))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap()
    } else {
        let mut meta = json!({"sse": true, "frame": frame});
        if let Some(ct) = ct {
            meta["ct"] = json!(ct);
        }
        let body =
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": meta}});
        send(gw, body.to_string()).await
    };
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn sse_lists_are_filtered_whatever_the_framing() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    for get in [true, false] {
        for (frame, ct) in [
            ("lf", Some("Text/Event-Stream")),
            ("lf", Some("TEXT/EVENT-STREAM; charset=utf-8")),
            ("cr", None),
            ("crlf", None),
            ("bom", None),
            ("multiline", None),
            ("nospace", None),
        ] {
            let text = framed(&gw, get, frame, ct).await;
            let what = format!("get={get} frame={frame} ct={ct:?}");
            assert!(!text.contains("\"status\""), "{what}: {text:?}");
            let lists: Vec<Value> = sse_data(&text)
                .into_iter()
                .filter(|v| v.get("result").is_some())
                .collect();
            assert_eq!(lists.len(), 1, "{what}: {text:?}");
            assert_eq!(tool_names(&lists[0]), ["echo", "stream"], "{what}");
        }
    }
}

#[tokio::test]
async fn unreadable_sse_lists_fail_closed() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    for get in [true, false] {
        // JSON to a browser's parser, not to the gateway's: never passed on unfiltered.
        let text = framed(&gw, get, "surrogate", None).await;
        assert!(!text.contains("\"status\""), "get={get}: {text:?}");
        let errors: Vec<Value> = sse_data(&text)
            .into_iter()
            .filter(|v| v.get("error").is_some())
            .collect();
        assert_eq!(errors.len(), 1, "get={get}: {text:?}");
        assert_eq!(errors[0]["error"]["code"], -32603, "{}", errors[0]);
        let message = errors[0]["error"]["message"].as_str().unwrap();
        assert!(message.contains("policies"), "{message}");
    }
}

// ---- item: the field each method names ---------------------------------------------------

#[tokio::test]
async fn resources_are_authorized_on_their_uri() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    // A decoy `name` does not hide the URI that is read.
    for method in ["resources/read", "resources/subscribe"] {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method,
            "params": {"uri": "mem://private/keys", "name": "readme"}});
        let v = expect_error(send(&gw, body.to_string()).await, 403, -32013).await;
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("resource \"mem://private/keys\""),
            "{v}"
        );
    }
    assert_eq!(requests(&up).await, 0);
    // A modern request carrying both is judged (and header-checked) on its URI.
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read",
        "params": {"uri": "mem://public/readme", "name": "readme",
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    json_ok(
        post(&client(), &gw.url("/mcp"), body.to_string())
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "resources/read")
            .header("mcp-name", "mem://public/readme"),
    )
    .await;
    // A tool call is judged on its name, never on a `uri` beside it.
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"uri": "echo", "name": "status"}});
    expect_error(send(&gw, body.to_string()).await, 403, -32013).await;
}

#[tokio::test]
async fn completions_are_authorized_on_their_ref() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    let complete = |r: Value| {
        json!({"jsonrpc": "2.0", "id": 4, "method": "completion/complete",
            "params": {"ref": r, "argument": {"name": "x", "value": "y"}}})
        .to_string()
    };
    for (r, needle) in [
        (
            json!({"type": "ref/prompt", "name": "internal_audit"}),
            "prompt \"internal_audit\"",
        ),
        (
            json!({"type": "ref/resource", "uri": "mem://private/{name}"}),
            "resource \"mem://private/{name}\"",
        ),
    ] {
        let v = expect_error(send(&gw, complete(r)).await, 403, -32013).await;
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    assert_eq!(requests(&up).await, 0);
    for r in [
        json!({"type": "ref/prompt", "name": "greet"}),
        json!({"type": "ref/resource", "uri": "mem://public/{name}"}),
    ] {
        assert_eq!(send(&gw, complete(r)).await.status(), 200);
    }
}

// ---- item: ambiguous JSON ----------------------------------------------------------------

#[tokio::test]
async fn ambiguous_bodies_are_refused() {
    let up = Upstream::start("u");
    let gw = policy_gateway(&up).await;
    let bodies = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"status","name":"echo"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"status"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","NAME":"status"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"status"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"status"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"Params":{"name":"status"}}"#,
        // U+017F folds to "s" in Go's case-insensitive matching.
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\"},\"param\u{17f}\":{\"name\":\"status\"}}",
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"mem://public/readme","URI":"mem://private/keys"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"mem://private/keys","uri":"mem://public/readme"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet","Name":"internal_audit"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet"},"Ref":{"type":"ref/prompt","name":"internal_audit"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","JSONRPC":"1.0","id":1,"method":"ping"}"#,
        // Escapes are decoded before keys are compared.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\u0061me":"status"}}"#,
    ];
    for body in bodies {
        let v = expect_error(send(&gw, body).await, 400, -32600).await;
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("ambiguous"), "{body}: {message}");
    }
    // Inside a batch too.
    let batch = format!(
        "[{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}},{}]",
        bodies[0]
    );
    expect_error(send(&gw, batch).await, 400, -32600).await;
    assert_eq!(requests(&up).await, 0);
    // Keys the gateway does not read may repeat (tool arguments are the tool's business).
    let fine = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"name":"a","Name":"b"},"Arguments":{}}}"#;
    assert_eq!(send(&gw, fine).await.status(), 200);
}

// ---- item: bodies that are not UTF-8 -------------------------------------------------------

#[tokio::test]
async fn non_utf8_bodies_are_parse_errors() {
    let (up, gw) = one_upstream("").await;
    let bodies: [&[u8]; 3] = [
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"x\":\"\xc3\x28\"}}}",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"\xed\xa0\x80\":1}",
    ];
    for body in bodies {
        let v = expect_error(send(&gw, body.to_vec()).await, 400, -32700).await;
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("UTF-8"), "{message}");
    }
    assert_eq!(requests(&up).await, 0);
}
