//! Transforms against the real binary and the mock upstream: renamed and hidden tools
//! in lists and calls, injected and hidden arguments, request headers, results redacted
//! and cut (in JSON and at the end of an SSE answer, its progress untouched), the cap on
//! that final event, redaction markers refused, the modern era's headers re-emitted,
//! policies on the names clients see, cache hits transformed too, and bad settings.

mod common;

use common::*;
use serde_json::{json, Value};

const MODERN: &str = "2026-07-28";

fn yaml(extra: &str) -> String {
    format!(
        r#"limits:
  max_request_body: 32MiB
transforms:
  - path: /mcp
    tools:
      - {{match: echo, rename: say, description: "Say it back"}}
      - {{match: "stat*", hide: true}}
      - {{match: stream, set_args: {{limit: 20}}, hide_args: [api_token]}}
    request_headers: {{set: {{X-Tenant: acme}}, remove: [X-Debug]}}
    results:
      max_text_bytes: 64
      redact: [{{pattern: "(?i)api[_-]?key=\\S+", with: "[redacted]"}}]
{extra}"#
    )
}

fn call(id: i64, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string()
}

/// POST `body` with `headers`: the status, and every JSON-RPC message of the answer
/// (one for JSON, each event's data for SSE).
async fn send(gw: &Gateway, body: String, headers: &[(&str, &str)]) -> (u16, Vec<Value>) {
    let mut req = post(&client(), &gw.url("/mcp"), body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let sse = header(&resp, "content-type").is_some_and(|c| c.starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let messages = if sse {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))]
    };
    (status, messages)
}

async fn requests(up: &Upstream) -> u64 {
    up.state().await["requests"].as_u64().unwrap()
}

#[tokio::test]
async fn tools_are_listed_and_called_by_the_names_clients_see() {
    let cache = "cache:\n  routes:\n    - {path: /mcp, lists: {ttl: 30s}}\n";
    let (up, gw) = one_upstream(&yaml(cache)).await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    for round in 0..2 {
        // The second list is a cache hit: transformed all the same.
        let (s, m) = send(&gw, list.clone(), &[]).await;
        assert_eq!(s, 200);
        let tools = m[0]["result"]["tools"].as_array().unwrap().clone();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["say", "stream"], "round {round}: {m:?}");
        assert_eq!(tools[0]["description"], "Say it back");
    }

    let before = requests(&up).await;
    let (s, m) = send(
        &gw,
        call(2, "say", json!({"text": "hi"})),
        &[("x-debug", "1")],
    )
    .await;
    assert_eq!(s, 200, "{m:?}");
    let got = &m[0]["result"];
    assert_eq!(
        got["params"]["name"], "echo",
        "the upstream gets its own name"
    );
    assert_eq!(m[0]["id"], 2);
    assert_eq!(got["headers"]["x-tenant"], "acme");
    assert!(got["headers"].get("x-debug").is_none(), "removed");
    assert_eq!(requests(&up).await, before + 1);

    // Hidden, or called by the name the rename replaced: an unknown tool; nothing sent.
    for (id, name) in [(3, "status"), (4, "echo")] {
        let (s, m) = send(&gw, call(id, name, json!({})), &[]).await;
        assert_eq!(
            (s, m[0]["error"]["code"].clone()),
            (200, json!(-32602)),
            "{m:?}"
        );
        assert_eq!(m[0]["error"]["message"], format!("Unknown tool: {name}"));
        assert_eq!(m[0]["id"], id);
    }
    assert_eq!(
        requests(&up).await,
        before + 1,
        "refused calls never reached the upstream"
    );
    // A tool without a rule passes as it came.
    let (s, m) = send(&gw, call(5, "other", json!({"a": 1})), &[]).await;
    assert_eq!(
        (s, m[0]["result"]["params"]["arguments"].clone()),
        (200, json!({"a": 1}))
    );
}

#[tokio::test]
async fn arguments_are_injected_and_hidden_and_results_redacted_and_cut() {
    let (up, gw) = one_upstream(&yaml("")).await;
    let text = format!("api_key=s3cret {}", "x".repeat(100));
    let args = json!({"api_token": "t", "reply_text": text, "delay": 0.2});
    let (s, m) = send(&gw, call(1, "stream", args), &[]).await;
    assert_eq!(s, 200);
    // The SSE answer: the progress notification as the server sent it, then the result.
    assert_eq!(m[0]["method"], "notifications/progress");
    assert_eq!(m[0]["params"]["server"], "u");
    let result = &m.last().unwrap()["result"];
    let sent = &result["params"]["arguments"];
    assert!(
        sent.get("api_token").is_none(),
        "a hidden argument never reaches the upstream: {sent}"
    );
    assert_eq!(sent["limit"], 20, "injected");
    let out = result["content"][0]["text"].as_str().unwrap();
    assert!(out.starts_with("[redacted] xxx"), "{out}");
    assert!(out.contains("[truncated by mcp-gateway: "), "{out}");
    assert!(out.len() < 64 + 64, "{out}");
    // The client's own value wins over a default (overwrite: false).
    let (_, m) = send(&gw, call(2, "stream", json!({"limit": 5})), &[]).await;
    assert_eq!(
        m.last().unwrap()["result"]["params"]["arguments"]["limit"],
        5
    );

    // A redaction marker sent back is refused, naming the argument.
    let before = requests(&up).await;
    let (s, m) = send(
        &gw,
        call(3, "say", json!({"note": "my [redacted] key"})),
        &[],
    )
    .await;
    assert_eq!((s, m[0]["error"]["code"].clone()), (200, json!(-32602)));
    assert!(
        m[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"note\""),
        "{m:?}"
    );
    // A rule that cannot apply names itself.
    let body = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "stream", "arguments": "x"}});
    let (s, m) = send(&gw, body.to_string(), &[]).await;
    assert_eq!(s, 200);
    assert!(
        m[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("transforms[0].tools[2]"),
        "{m:?}"
    );
    assert_eq!(requests(&up).await, before);

    // A final event past the cap: an error in its place, never the raw text.
    let huge = "y".repeat(17 << 20);
    let (s, m) = send(
        &gw,
        call(5, "stream", json!({"reply_text": huge, "delay": 0.1})),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let last = m.last().unwrap();
    assert_eq!(
        last["error"]["code"],
        -32603,
        "{}",
        &last.to_string()[..200.min(last.to_string().len())]
    );
    assert_eq!(last["id"], 5);
}

#[tokio::test]
async fn a_modern_upstream_gets_headers_that_match_the_rewritten_body() {
    let (_up, gw) = one_upstream(&yaml("")).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "say", "arguments": {"text": "hi"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "say"),
    ];
    let (s, m) = send(&gw, body.to_string(), &headers).await;
    assert_eq!(s, 200, "{m:?}");
    let h = &m[0]["result"]["headers"];
    assert_eq!(h["mcp-name"], "echo", "re-emitted from the new body: {h}");
    assert_eq!(h["mcp-method"], "tools/call");
    // An argument the gateway dropped loses its header field too.
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "stream", "arguments": {"api_token": "t"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
    let headers = [
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", "stream"),
        ("mcp-param-api_token", "t"),
    ];
    let (s, m) = send(&gw, body.to_string(), &headers).await;
    assert_eq!(s, 200);
    let h = &m.last().unwrap()["result"]["headers"];
    assert!(h.get("mcp-param-api_token").is_none(), "{h}");
}

#[tokio::test]
async fn policies_see_the_names_clients_see() {
    let policies =
        "security:\n  policies:\n    - {effect: deny, tools: [say]}\n    - {effect: allow}\n";
    let (up, gw) = one_upstream(&yaml(policies)).await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let (_, m) = send(&gw, list, &[]).await;
    let names: Vec<&str> = m[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["stream"],
        "renamed, then filtered by the policy on the new name"
    );
    let before = requests(&up).await;
    let (s, _) = send(&gw, call(2, "say", json!({})), &[]).await;
    assert_eq!(s, 403);
    assert_eq!(requests(&up).await, before);
}

#[test]
fn bad_transforms_are_refused_with_their_paths() {
    let bad = config_for(
        &["http://127.0.0.1:9/mcp".to_string()],
        "transforms:\n  - path: /nope\n    tools:\n      - {match: 'a*', rename: b}\n    request_headers: {set: {Content-Length: '1'}}\n    results: {max_text_bytes: 0, redact: [{pattern: '('}]}\n",
    )
    .replace("{port}", "8080");
    expect_invalid(
        &bad,
        &[
            "transforms[0].path: \"/nope\" is not a configured route's or virtual server's path",
            "transforms[0].request_headers.set.Content-Length",
            "transforms[0].results.max_text_bytes",
            "transforms[0].results.redact[0].pattern",
            "transforms[0].tools[0].rename: renames one tool",
        ],
    );
    // Shape errors (here an unknown key) are reported first, with their path.
    let typo = config_for(
        &["http://127.0.0.1:9/mcp".to_string()],
        "transforms:\n  - path: /mcp\n    tools: [{match: c, bogus: 1}]\n",
    )
    .replace("{port}", "8080");
    expect_invalid(&typo, &["transforms[0].tools[0]", "bogus"]);
}

#[tokio::test]
async fn a_transformed_json_answer_keeps_a_content_length() {
    let (_up, gw) = one_upstream(&yaml("")).await;
    let c = client();
    for body in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
        call(2, "say", json!({"reply_text": "api_key=abc"})),
    ] {
        let resp = post(&c, &gw.url("/mcp"), body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let len: usize = header(&resp, "content-length")
            .expect("a length, not chunked")
            .parse()
            .unwrap();
        assert!(header(&resp, "transfer-encoding").is_none());
        let text = resp.text().await.unwrap();
        assert_eq!(text.len(), len);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["result"].get("tools").is_some() || v["result"]["content"][0]["text"] == "[redacted]",
            "{v}"
        );
    }
}
