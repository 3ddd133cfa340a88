//! Virtual servers against the real binary and two mock members (tests/peers): the
//! handshake, merged and prefixed lists, routing by prefix with the member's own names,
//! what a member receives (its session, its credentials, never the client's), sealed
//! sessions across two gateway processes, cursors, failure modes, policies on prefixed
//! names, the admin view, and the config checks. The official SDKs and reference
//! servers as clients and members are tests/e2e/test_federation.py's.

mod common;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ADMIN_TOKEN: &str = "federation-admin-token-0123";

/// Groups `files` and `web` (one mock each) behind the virtual server `/mcp`; `extra`
/// YAML goes at the top level, `vs_extra` into the virtual server.
fn config(files: &Upstream, web: &Upstream, vs_extra: &str, extra: &str) -> String {
    format!(
        r#"server:
  host: 127.0.0.1
  port: {{port}}
upstream:
  groups:
    files:
      servers: [{{id: f1, url: "{}"}}]
      upstream_auth: {{header: X-Member-Key, value: files-secret}}
    web:
      servers: [{{id: w1, url: "{}"}}]
virtual_servers:
  - path: /mcp
    members:
      - {{group: files}}
      - {{group: web, prefix: w, tools: {{include: ["echo", "st*"], exclude: ["status"]}}}}
{vs_extra}
sessions: {{keys: ["{KEY}"]}}
logging: {{level: info, format: text}}
{extra}"#,
        files.url(),
        web.url()
    )
}

fn rpc(id: i64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// `initialize` through the virtual server: the sealed session id and the result.
async fn initialize(gw: &Gateway) -> (String, Value) {
    let c = client();
    let resp = post(
        &c,
        &gw.url("/mcp"),
        rpc(
            1,
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        ),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    (session, resp.json().await.unwrap())
}

async fn call(gw: &Gateway, session: &str, body: String) -> reqwest::Response {
    post(&client(), &gw.url("/mcp"), body)
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap()
}

async fn call_json(gw: &Gateway, session: &str, body: String) -> Value {
    let resp = call(gw, session, body).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v["result"][list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {v}"))
        .iter()
        .map(|t| t[field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn one_endpoint_many_groups_legacy_era() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let gw = Gateway::start(&config(&files, &web, "", "")).await;
    let (session, init) = initialize(&gw).await;
    let result = &init["result"];
    assert_eq!(result["serverInfo"]["name"], "mcp-gateway");
    assert_eq!(result["protocolVersion"], "2025-11-25");
    assert!(result["capabilities"]["tools"].is_object(), "{init}");
    assert_eq!(result["capabilities"]["resources"]["subscribe"], true);
    let instructions = result["instructions"].as_str().unwrap();
    assert!(
        instructions.contains("## files\nmock server files")
            && instructions.contains("## w\nmock server web"),
        "{instructions}"
    );
    // Both members were initialized, once each.
    assert_eq!(files.state().await["sessions"], 1);
    assert_eq!(web.state().await["sessions"], 1);

    let tools = call_json(&gw, &session, rpc(2, "tools/list", json!({}))).await;
    assert_eq!(
        names(&tools, "tools", "name"),
        [
            "files__echo",
            "files__stream",
            "files__status",
            "w__echo",
            "w__stream"
        ],
        "config order, prefixed, web's filter applied"
    );
    let resources = call_json(&gw, &session, rpc(3, "resources/list", json!({}))).await;
    assert_eq!(
        names(&resources, "resources", "uri")[..2],
        ["mem://files+public/readme", "mem://files+private/keys"]
    );
    let templates = call_json(&gw, &session, rpc(4, "resources/templates/list", json!({}))).await;
    assert_eq!(
        names(&templates, "resourceTemplates", "uriTemplate")[0],
        "mem://files+public/{name}"
    );
    let prompts = call_json(&gw, &session, rpc(5, "prompts/list", json!({}))).await;
    assert_eq!(names(&prompts, "prompts", "name")[2], "w__greet");

    // A call goes to its member with the member's own name, in the member's session,
    // with the member's credentials and never the client's.
    let resp = post(
        &client(),
        &gw.url("/mcp"),
        rpc(6, "tools/call", json!({"name": "w__echo", "arguments": {}})),
    )
    .header("mcp-session-id", &session)
    .header("authorization", "Bearer client-token")
    .send()
    .await
    .unwrap();
    let v: Value = resp.json().await.unwrap();
    let got = &v["result"];
    assert_eq!(v["id"], 6);
    assert_eq!(got["server"], "web");
    assert_eq!(got["params"]["name"], "echo");
    assert_eq!(got["headers"]["mcp-session-id"], "web-session-1");
    assert_eq!(got["headers"]["mcp-protocol-version"], "2025-11-25");
    assert!(got["headers"].get("authorization").is_none(), "{got}");
    assert!(
        got["headers"].get("x-member-key").is_none(),
        "web has no upstream_auth"
    );
    let host = got["headers"]["host"].as_str().unwrap();
    assert_eq!(host, web.addr);
    let v = call_json(
        &gw,
        &session,
        rpc(7, "tools/call", json!({"name": "files__echo"})),
    )
    .await;
    assert_eq!(v["result"]["headers"]["x-member-key"], "files-secret");
    assert_eq!(v["result"]["headers"]["mcp-session-id"], "files-session-1");

    // A prefixed URI reaches its member as the member wrote it.
    let v = call_json(
        &gw,
        &session,
        rpc(
            8,
            "resources/read",
            json!({"uri": "mem://files+public/readme"}),
        ),
    )
    .await;
    assert_eq!(v["result"]["server"], "files");
    assert_eq!(v["result"]["params"]["uri"], "mem://public/readme");
    // The contents name the catalog URI; a legacy client gets no cache fields.
    assert_eq!(
        v["result"]["contents"][0]["uri"],
        "mem://files+public/readme"
    );
    assert!(v["result"].get("ttlMs").is_none() && v["result"].get("cacheScope").is_none());

    // Unknown prefixes, filtered tools and unprefixed URIs are invalid params.
    for (name, why) in [
        ("nope__echo", "unknown prefix"),
        ("w__status", "excluded by the member's filter"),
        ("echo", "no prefix"),
    ] {
        let v = call_json(&gw, &session, rpc(9, "tools/call", json!({"name": name}))).await;
        assert_eq!(v["error"]["code"], -32602, "{why}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("files, w"),
            "{v}"
        );
    }
    let v = call_json(
        &gw,
        &session,
        rpc(10, "resources/read", json!({"uri": "mem://public/readme"})),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");

    // Notifications go to every member; DELETE ends every member session.
    let resp = post(
        &client(),
        &gw.url("/mcp"),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .header("mcp-session-id", &session)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = client()
        .delete(gw.url("/mcp"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(files.state().await["deletes"], 1);
    assert_eq!(web.state().await["deletes"], 1);
}

#[tokio::test]
async fn sessions_are_sealed_and_served_by_any_replica() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let yaml = config(&files, &web, "", "");
    let a = Gateway::start(&yaml).await;
    let b = Gateway::start(&yaml).await;
    let (session, _) = initialize(&a).await;
    // The other process opens the same session: same member sessions.
    let v = call_json(
        &b,
        &session,
        rpc(2, "tools/call", json!({"name": "files__echo"})),
    )
    .await;
    assert_eq!(v["result"]["headers"]["mcp-session-id"], "files-session-1");
    assert_eq!(files.state().await["sessions"], 1, "no new member session");

    // A missing, tampered or foreign session id.
    let resp = post(&client(), &a.url("/mcp"), rpc(3, "tools/list", json!({})))
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, -32600).await;
    let mut tampered = session.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    expect_error(
        call(&a, &tampered, rpc(4, "tools/list", json!({}))).await,
        404,
        -32001,
    )
    .await;
    // An id sealed by a passthrough route does not open here either.
    expect_error(
        call(&a, "files-session-1", rpc(5, "tools/list", json!({}))).await,
        404,
        -32001,
    )
    .await;
}

#[tokio::test]
async fn a_member_that_forgets_its_session_is_initialized_again() {
    let mut files = Upstream::start("files");
    let web = Upstream::start("web");
    let gw = Gateway::start(&config(&files, &web, "", "")).await;
    let (session, _) = initialize(&gw).await;
    // The member restarts at its address and knows no session of before: it answers 404,
    // and the gateway initializes it again instead of failing the session.
    let port = files.port();
    files.kill();
    let files = Upstream::start_with("files", &["--port", &port.to_string(), "--strict-sessions"]);
    let resp = call(
        &gw,
        &session,
        rpc(2, "tools/call", json!({"name": "files__echo"})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let renewed = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(renewed, session, "the answer carries the renewed session");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["headers"]["mcp-session-id"], "files-session-1");
    assert_eq!(files.state().await["sessions"], 1);
    // The renewed id works without another initialize.
    let v = call_json(
        &gw,
        &renewed,
        rpc(3, "tools/call", json!({"name": "files__echo"})),
    )
    .await;
    assert_eq!(v["result"]["headers"]["mcp-session-id"], "files-session-1");
    assert_eq!(files.state().await["sessions"], 1);
}

#[tokio::test]
async fn failing_members_open_or_closed() {
    let files = Upstream::start("files");
    let mut web = Upstream::start("web");
    let admin = format!("admin:\n  port: {{admin_port}}\n  token: {ADMIN_TOKEN}");
    let open = Gateway::start(&config(&files, &web, "", &admin)).await;
    let closed = Gateway::start(&config(
        &files,
        &web,
        "    on_member_failure: fail_closed",
        "",
    ))
    .await;
    let (open_session, _) = initialize(&open).await;
    let (closed_session, _) = initialize(&closed).await;
    web.kill();
    // Fail open: the list shrinks to the members that answer; calls to them work.
    let tools = call_json(&open, &open_session, rpc(2, "tools/list", json!({}))).await;
    assert_eq!(
        names(&tools, "tools", "name"),
        ["files__echo", "files__stream", "files__status"]
    );
    let v = call_json(
        &open,
        &open_session,
        rpc(3, "tools/call", json!({"name": "files__echo"})),
    )
    .await;
    assert_eq!(v["result"]["server"], "files");
    let admin: Value = client()
        .get(open.admin_url("/api/v1/virtual_servers"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let members = &admin["virtual_servers"][0]["members"];
    assert_eq!(members[0]["state"], "ok", "{admin}");
    assert_eq!(members[0]["tools"], 3, "{admin}");
    assert_eq!(members[1]["state"], "degraded", "{admin}");
    // Fail closed: the request fails, naming the member.
    let resp = call(&closed, &closed_session, rpc(4, "tools/list", json!({}))).await;
    expect_error_naming(resp, 502, -32603, "member \"w\"").await;
    // A call to the dead member fails in both modes, naming its group.
    let resp = call(
        &open,
        &open_session,
        rpc(5, "tools/call", json!({"name": "w__echo"})),
    )
    .await;
    expect_error_naming(resp, 502, -32603, "\"web\"").await;
}

#[tokio::test]
async fn policies_apply_to_prefixed_names_and_denied_calls_never_reach_members() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let policies = r#"security:
  policies:
    - {name: no-web-stream, effect: deny, tools: ["w__stream"]}
    - {name: the-rest, effect: allow}"#;
    let gw = Gateway::start(&config(&files, &web, "", policies)).await;
    let (session, _) = initialize(&gw).await;
    let tools = call_json(&gw, &session, rpc(2, "tools/list", json!({}))).await;
    assert!(
        !names(&tools, "tools", "name").contains(&"w__stream".to_string()),
        "{tools}"
    );
    let before = web.state().await["requests"].as_i64().unwrap();
    let resp = call(
        &gw,
        &session,
        rpc(3, "tools/call", json!({"name": "w__stream"})),
    )
    .await;
    expect_error(resp, 403, -32013).await;
    assert_eq!(web.state().await["requests"].as_i64().unwrap(), before);
}

#[tokio::test]
async fn large_catalogs_are_paged_under_sealed_cursors() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    // No merged page (a budget of 0): one member page at a time.
    let gw = Gateway::start(&config(&files, &web, "    max_page_size: 0", "")).await;
    let (session, _) = initialize(&gw).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let v = call_json(&gw, &session, rpc(2, "resources/list", params)).await;
        seen.extend(names(&v, "resources", "uri"));
        pages += 1;
        match v["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "{v}");
    }
    assert_eq!(pages, 2, "one page per member");
    assert_eq!(
        seen,
        [
            "mem://files+public/readme",
            "mem://files+private/keys",
            "mem://w+public/readme",
            "mem://w+private/keys"
        ]
    );
    let v = call_json(
        &gw,
        &session,
        rpc(3, "resources/list", json!({"cursor": "forged"})),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // A cursor of another list is refused too.
    let first = call_json(&gw, &session, rpc(4, "resources/list", json!({}))).await;
    let c = first["result"]["nextCursor"].as_str().unwrap();
    let v = call_json(&gw, &session, rpc(5, "prompts/list", json!({"cursor": c}))).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
}

#[tokio::test]
async fn modern_era_is_stateless_and_routing_headers_name_the_members_own_tool() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let gw = Gateway::start(&config(&files, &web, "", "")).await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
    let resp = post(
        &client(),
        &gw.url("/mcp"),
        rpc(1, "tools/call", json!({"name": "w__echo", "_meta": meta})),
    )
    .header("mcp-protocol-version", "2026-07-28")
    .header("mcp-method", "tools/call")
    .header("mcp-name", "w__echo")
    .header("mcp-param-region", "eu")
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("mcp-session-id").is_none());
    let v: Value = resp.json().await.unwrap();
    let headers = &v["result"]["headers"];
    assert_eq!(headers["mcp-name"], "echo", "{v}");
    assert_eq!(headers["mcp-method"], "tools/call");
    assert_eq!(headers["mcp-param-region"], "eu");
    assert!(headers.get("mcp-session-id").is_none());
    assert_eq!(
        web.state().await["sessions"],
        0,
        "no initialize in the modern era"
    );
    let resp = post(
        &client(),
        &gw.url("/mcp"),
        rpc(2, "tools/list", json!({"_meta": meta})),
    )
    .header("mcp-protocol-version", "2026-07-28")
    .header("mcp-method", "tools/list")
    .send()
    .await
    .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["cacheScope"], "private");
    assert_eq!(v["result"]["ttlMs"], 0);
    assert_eq!(names(&v, "tools", "name").len(), 5);
    // A member's cache fields do not hold for what the gateway serves: private, 0.
    let resp = post(
        &client(),
        &gw.url("/mcp"),
        rpc(
            3,
            "resources/read",
            json!({"uri": "mem://files+public/readme", "_meta": meta}),
        ),
    )
    .header("mcp-protocol-version", "2026-07-28")
    .header("mcp-method", "resources/read")
    .header("mcp-name", "mem://files+public/readme")
    .send()
    .await
    .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["params"]["uri"], "mem://public/readme", "{v}");
    assert_eq!(v["result"]["cacheScope"], "private");
    assert_eq!(v["result"]["ttlMs"], 0);
    assert_eq!(
        v["result"]["contents"][0]["uri"],
        "mem://files+public/readme"
    );
    // No GET stream and no DELETE in the modern era.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let resp = client()
            .request(method, gw.url("/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .send()
            .await
            .unwrap();
        expect_error(resp, 405, -32600).await;
    }
}

#[test]
fn bad_virtual_servers_are_listed_with_their_paths() {
    let yaml = r#"
upstream:
  groups:
    files: {servers: [{id: f1, url: "http://127.0.0.1:1/mcp"}]}
routes:
  - {path: /mcp/files, group: files}
virtual_servers:
  - path: /mcp/files
    members: [{group: nope}, {group: files, prefix: "a__b"}, {group: files, prefix: "a__b"}]
  - path: mcp
    separator: "+"
    prefix_mode: never
    members: [{group: files, tools: {include: ["x*"]}}]
  - path: /empty
    members: []
"#;
    let (code, err) = validate(yaml);
    assert_eq!(code, Some(64), "{err}");
    for needle in [
        "virtual_servers[0].path: \"/mcp/files\" is already a route",
        "virtual_servers[0].members[0].group: no upstream group named \"nope\"",
        "virtual_servers[0].members[1].prefix: prefix \"a__b\" contains the separator",
        "virtual_servers[1].path: \"mcp\" must start with '/'",
        "virtual_servers[1].separator:",
        "virtual_servers[1].members[0].tools.include[0]: \"x*\": with prefix_mode: never",
        "virtual_servers[2].members: a virtual server needs at least one member",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

/// Read SSE events (`id`, parsed `data`) from `resp` until `done` says so (10 s at most).
async fn read_events(
    resp: &mut reqwest::Response,
    done: impl Fn(&[(Option<String>, Value)]) -> bool,
) -> Vec<(Option<String>, Value)> {
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done(&events) {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no more events in time; got {events:?}"))
            .unwrap();
        let Some(chunk) = chunk else { break };
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut data) = (None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                events.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_get_stream_merges_members_and_resumes_each() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let yaml = config(&files, &web, "", "").replace("/mcp\"", "/mcp?notify=1\"");
    let gw = Gateway::start(&yaml).await;
    let (session, _) = initialize(&gw).await;
    let open = |last: Option<String>| {
        let mut req = client()
            .get(gw.url("/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session);
        if let Some(l) = last {
            req = req.header("last-event-id", l);
        }
        req.send()
    };
    let mut resp = open(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let count = |e: &[(Option<String>, Value)], method: &str| {
        e.iter().filter(|(_, m)| m["method"] == method).count()
    };
    let requests = |e: &[(Option<String>, Value)]| {
        count(e, "roots/list") == 2 && count(e, "notifications/tools/list_changed") == 2
    };
    let events = read_events(&mut resp, requests).await;
    drop(resp);
    let of = |method: &str| -> Vec<&Value> {
        events
            .iter()
            .map(|(_, m)| m)
            .filter(|m| m["method"] == method)
            .collect()
    };
    // Each member's stream, in the member's own session.
    let sessions: Vec<&Value> = of("notifications/message")
        .iter()
        .map(|m| &m["params"]["data"]["headers"]["mcp-session-id"])
        .collect();
    assert_eq!(sessions.len(), 2, "{events:?}");
    assert!(
        sessions.contains(&&json!("files-session-1"))
            && sessions.contains(&&json!("web-session-1"))
    );
    // Both members' list_changed arrive together: the first is sent at once, the other
    // held for the end of the coalescing window (after every other event), not lost.
    let changed: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, (_, m))| m["method"] == "notifications/tools/list_changed")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(changed.len(), 2, "{events:?}");
    assert_eq!(changed[1], events.len() - 1, "held to the end: {events:?}");
    let mut updated: Vec<&str> = of("notifications/resources/updated")
        .iter()
        .map(|m| m["params"]["uri"].as_str().unwrap())
        .collect();
    updated.sort();
    assert_eq!(
        updated,
        ["mem://files+public/readme", "mem://w+public/readme"]
    );
    // The members' requests carry sealed string ids, one per member.
    let ids: Vec<&str> = of("roots/list")
        .iter()
        .map(|m| m["id"].as_str().expect("a sealed string id"))
        .collect();
    assert_ne!(ids[0], ids[1]);
    // The composite event id holds every member's last event id.
    let last = events.last().unwrap().0.clone().expect("an event id");
    use base64::Engine;
    let decoded: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&last)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(decoded, json!({"files": "files-4", "w": "web-4"}));

    // The client's answer reaches the member that asked, with the member's own id (a
    // number again); a forged id is refused.
    for id in &ids {
        let answer =
            json!({"jsonrpc": "2.0", "id": id, "result": {"roots": [{"uri": "file:///r"}]}});
        let resp = call(&gw, &session, answer.to_string()).await;
        assert_eq!(resp.status(), 202);
    }
    for member in [&files, &web] {
        let got = &member.state().await["last_response"];
        assert_eq!(got["id"], json!(0), "{got}");
        assert_eq!(got["result"]["roots"][0]["uri"], "file:///r");
    }
    let forged = json!({"jsonrpc": "2.0", "id": "forged", "result": {}});
    expect_error(call(&gw, &session, forged.to_string()).await, 400, -32600).await;

    // The progress token in a member's request is sealed too: the client's progress for
    // it reaches that member alone, with the member's own token; a cancellation naming a
    // member's request reaches that member alone, with its own id.
    let requests = of("roots/list");
    let token = |m: &Value| m["params"]["_meta"]["progressToken"].clone();
    assert!(token(requests[0]).is_string() && token(requests[0]) != token(requests[1]));
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
        "params": {"progressToken": token(requests[0]), "progress": 1}});
    assert_eq!(
        call(&gw, &session, progress.to_string()).await.status(),
        202
    );
    // Exactly one member got it (the one that asked), with its own token.
    let last_note = |v: &Value| v["last_notification"].clone();
    let (f, w) = (
        last_note(&files.state().await),
        last_note(&web.state().await),
    );
    let got: Vec<&Value> = [&f, &w]
        .into_iter()
        .filter(|n| n["method"] == "notifications/progress")
        .collect();
    assert_eq!(got.len(), 1, "{f} {w}");
    assert_eq!(got[0]["params"]["progressToken"], json!(5), "{f} {w}");
    let (asked, other) = if f["method"] == "notifications/progress" {
        (&files, &web)
    } else {
        (&web, &files)
    };
    // The other member's request, cancelled: that member alone, with its own id.
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": requests[1]["id"]}});
    assert_eq!(call(&gw, &session, cancel.to_string()).await.status(), 202);
    let got = last_note(&other.state().await);
    assert_eq!(got["method"], "notifications/cancelled", "{got}");
    assert_eq!(got["params"]["requestId"], json!(0), "{got}");
    let got = last_note(&asked.state().await);
    assert_eq!(got["method"], "notifications/progress", "{got}");

    // Resuming with the composite id resumes each member after its own last event.
    let mut resp = open(Some(last)).await.unwrap();
    let messages = |e: &[(Option<String>, Value)]| {
        e.iter()
            .filter(|(_, m)| m["method"] == "notifications/message")
            .count()
            == 2
    };
    let events = read_events(&mut resp, messages).await;
    let mut resumed: Vec<&str> = events
        .iter()
        .filter(|(_, m)| m["method"] == "notifications/message")
        .map(|(_, m)| {
            m["params"]["data"]["headers"]["last-event-id"]
                .as_str()
                .unwrap()
        })
        .collect();
    resumed.sort();
    assert_eq!(resumed, ["files-4", "web-4"]);
}

#[tokio::test]
async fn a_session_opens_only_for_the_identity_that_began_it() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let auth = format!(
        r#"security:
  auth:
    - name: keys
      api_keys:
        keys:
          - {{id: alice, sha256: "{}"}}
          - {{id: bob, sha256: "{}"}}"#,
        sha256_hex(b"alice-key-0123456789"),
        sha256_hex(b"bob-key-0123456789")
    );
    let gw = Gateway::start(&config(&files, &web, "", &auth)).await;
    let resp = post(
        &client(),
        &gw.url("/mcp"),
        rpc(
            1,
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
        ),
    )
    .header("x-api-key", "alice-key-0123456789")
    .send()
    .await
    .unwrap();
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let as_who = |key: &'static str, id: i64| {
        post(&client(), &gw.url("/mcp"), rpc(id, "tools/list", json!({})))
            .header("x-api-key", key)
            .header("mcp-session-id", session.clone())
            .send()
    };
    // Alice's requests (the second one served from the sessions this process opened)...
    for id in [2, 3] {
        assert_eq!(
            as_who("alice-key-0123456789", id).await.unwrap().status(),
            200
        );
    }
    // ... and Bob with Alice's session id: not found, cached or not.
    expect_error(as_who("bob-key-0123456789", 4).await.unwrap(), 404, -32001).await;
    assert_eq!(
        as_who("alice-key-0123456789", 5).await.unwrap().status(),
        200
    );
}
