use super::request::Refusal;
use super::*;
use serde_json::{json, Value};

fn compiled(yaml: &str) -> Result<Transforms, Vec<(String, String)>> {
    let cfg: Vec<TransformConfig> = {
        let full = format!(
            "upstream: {{groups: {{default: {{servers: [{{id: a, url: 'http://127.0.0.1:1'}}]}}}}}}\nroutes: [{{path: /mcp, group: default}}]\ntransforms:\n{yaml}"
        );
        crate::config::load_str(&full, &|_| None)
            .map(|c| c.transforms)
            .unwrap_or_else(|e| panic!("{e:?}"))
    };
    Transforms::build(&cfg)
}

const EXAMPLE: &str = r#"  - path: /mcp
    tools:
      - {match: "read_file", rename: "files_read", description: "Read a file"}
      - {match: "debug_*", hide: true}
      - {match: "search", set_args: {limit: 20}, overwrite: false, hide_args: [api_token]}
      - {match: "pinned", set_args: {mode: fast}, overwrite: true}
    request_headers: {set: {X-Tenant: acme}, remove: [X-Debug]}
    results:
      max_text_bytes: 10
      redact: [{pattern: "(?i)api[_-]?key=\\S+", with: "[redacted]"}]
"#;

fn example() -> Arc<RouteTransforms> {
    compiled(EXAMPLE).unwrap().get("/mcp").unwrap().clone()
}

#[test]
fn bad_transforms_are_named_by_path() {
    let errs = compiled(
        r#"  - path: /mcp
    tools:
      - {match: "a*", rename: b}
      - {match: "c", rename: d, hide: true}
      - {match: "e", rename: d}
      - {match: "["}
    request_headers: {set: {Host: x, "bad name": y}, remove: [Mcp-Session-Id]}
    results:
      max_text_bytes: 0
      redact: [{pattern: "(", with: x}, {pattern: "a", with: ""}]
"#,
    )
    .unwrap_err();
    let all: Vec<String> = errs.iter().map(|(p, m)| format!("{p}: {m}")).collect();
    let all = all.join("\n");
    for want in [
        "transforms[0].tools[0].rename: renames one tool",
        "transforms[0].tools[1].rename: a hidden tool cannot be renamed",
        "transforms[0].tools[2].rename: \"d\" is the new name of an earlier rule",
        "transforms[0].tools[3].match",
        "transforms[0].request_headers.set.Host",
        "transforms[0].request_headers.set.bad name",
        "transforms[0].request_headers.remove[0]",
        "transforms[0].results.max_text_bytes",
        "transforms[0].results.redact[0].pattern",
        "transforms[0].results.redact[1].with",
    ] {
        assert!(all.contains(want), "{want} missing in:\n{all}");
    }
}

#[test]
fn lists_show_the_tools_as_clients_see_them() {
    let t = example();
    let mut v = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
        {"name": "read_file", "description": "old", "inputSchema": {"type": "object"}},
        {"name": "debug_dump"},
        {"name": "search", "inputSchema": {"type": "object", "properties": {
            "q": {"type": "string"}, "limit": {"type": "integer"}, "api_token": {"type": "string"}},
            "required": ["q", "api_token", "limit"]}},
        {"name": "pinned", "inputSchema": {"properties": {"mode": {}, "x": {}}, "required": ["mode"]}},
        {"name": "other"}
    ]}});
    assert!(t.answer(&mut v) > 0);
    let tools = v["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["files_read", "search", "pinned", "other"]);
    assert_eq!(tools[0]["description"], "Read a file");
    let search = &tools[1]["inputSchema"];
    assert!(search["properties"].get("api_token").is_none());
    assert_eq!(search["properties"]["limit"]["default"], 20);
    assert_eq!(search["required"], json!(["q"]));
    assert_eq!(tools[2]["inputSchema"]["properties"], json!({"x": {}}));
    assert_eq!(tools[2]["inputSchema"]["required"], json!([]));
}

#[test]
fn calls_reach_the_upstream_by_its_names() {
    let t = example();
    let call = |name: &str, args: Value| {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": args}});
        t.call(name, body.to_string().as_bytes())
    };
    let r = call("files_read", json!({"path": "/a"})).unwrap().unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (v["params"]["name"].clone(), v["id"].clone()),
        (json!("read_file"), json!(7))
    );
    assert_eq!(
        call("read_file", json!({})),
        Err(Refusal::Unknown("read_file".into()))
    );
    assert_eq!(
        call("debug_x", json!({})),
        Err(Refusal::Unknown("debug_x".into()))
    );
    let r = call("search", json!({"q": "x", "api_token": "t"}))
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["params"]["arguments"], json!({"q": "x", "limit": 20}));
    let r = call("search", json!({"q": "x", "limit": 5}))
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v["params"]["arguments"]["limit"], 5,
        "overwrite: false keeps the client's"
    );
    let r = call("pinned", json!({"mode": "slow"})).unwrap().unwrap();
    assert_eq!(r.changed, vec![("mode".to_string(), Some(json!("fast")))]);
    assert!(
        call("other", json!({"a": 1})).unwrap().is_none(),
        "untouched calls pass as they are"
    );
    let e = call("search", json!("nope")).unwrap_err();
    assert!(
        matches!(&e, Refusal::Failed { at, .. } if at == "transforms[0].tools[2]"),
        "{e:?}"
    );
    let e = call("other", json!({"note": "api_key=[redacted]"})).unwrap_err();
    assert!(
        matches!(&e, Refusal::Marker { argument, .. } if argument == "note"),
        "{e:?}"
    );
}

#[test]
fn results_are_redacted_then_cut_on_a_character_boundary() {
    let t = example();
    let mut v = json!({"jsonrpc": "2.0", "id": 1, "result": {
        "content": [{"type": "text", "text": "api_key=s3cret ok"}, {"type": "text", "text": "ééééééé"}],
        "structuredContent": {"k": "API-KEY=zzz"}}});
    let bytes = v.to_string();
    assert!(t.may_change(bytes.as_bytes(), false));
    assert!(t.answer(&mut v) >= 3);
    let c = &v["result"]["content"];
    assert_eq!(
        c[0]["text"],
        format!("[redacted]{}", super::result::cut_marker(3)),
        "redacted, then cut at 10 bytes"
    );
    let cut = c[1]["text"].as_str().unwrap();
    assert!(
        cut.starts_with("ééééé") && cut.contains("truncated by mcp-gateway: 4 more bytes"),
        "{cut}"
    );
    assert_eq!(v["result"]["structuredContent"]["k"], "[redacted]");
    // Notifications pass; short clean answers are not even parsed.
    let mut n = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"message": "api_key=1"}});
    assert_eq!(t.answer(&mut n), 0);
    assert!(
        !t.may_change(br#"{"id":1}"#, false),
        "short, no match: no parse"
    );
}
