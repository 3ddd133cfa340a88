//! Caching and transforms on a virtual server's members, against the real binary and two
//! mock members: a member's list pages and listed tools' results kept under its name
//! (`cache.routes[]` with `member:`), per identity, named and filtered on every answer,
//! dropped by its notifications and by the admin API; a member's tools renamed, hidden
//! and given arguments, its requests given headers, its results redacted, inside the
//! catalog, while the other member is left alone; and the config checks.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ADMIN_TOKEN: &str = "federation-admin-token-0123";
const ALICE_KEY: &str = "alice-key-0123456789";
const BOB_KEY: &str = "bob-key-0123456789";
const MODERN: &str = "2026-07-28";

/// Groups `files` and `web` (one mock each) behind the virtual server `/mcp`, API keys
/// for alice and bob, the admin API; `extra` YAML at the top level.
fn config(files: &Upstream, web: &Upstream, extra: &str) -> String {
    format!(
        r#"server:
  host: 127.0.0.1
  port: {{port}}
upstream:
  groups:
    files:
      servers: [{{id: f1, url: "{}"}}]
    web:
      servers: [{{id: w1, url: "{}"}}]
virtual_servers:
  - path: /mcp
    members:
      - {{group: files}}
      - {{group: web, prefix: w, tools: {{include: ["echo", "st*"], exclude: ["status"]}}}}
sessions: {{keys: ["{KEY}"]}}
security:
  auth:
    - name: keys
      api_keys:
        keys:
          - {{id: alice, sha256: "{}"}}
          - {{id: bob, sha256: "{}"}}
admin:
  port: {{admin_port}}
  token: "{ADMIN_TOKEN}"
logging: {{level: info, format: text}}
{extra}"#,
        files.url(),
        web.url(),
        sha256_hex(ALICE_KEY.as_bytes()),
        sha256_hex(BOB_KEY.as_bytes()),
    )
}

const CACHE_FILES: &str = "cache:\n  routes:\n    - path: /mcp\n      member: files\n      lists: {ttl: 30s}\n      resources: {ttl: 30s}\n      tools: [{name: 'ech*', ttl: 5m}]\n";

fn rpc(id: i64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// `initialize` as `key`: the sealed session id.
async fn initialize(gw: &Gateway, key: &str) -> String {
    let body = rpc(
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    let resp = post(&client(), &gw.url("/mcp"), body)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", gw.log());
    resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// POST `body` in `session` as `key`: `X-Cache` and the JSON answer.
async fn send(gw: &Gateway, key: &str, session: &str, body: String) -> (Option<String>, Value) {
    let resp = post(&client(), &gw.url("/mcp"), body)
        .header("x-api-key", key)
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let x_cache = header(&resp, "x-cache");
    (x_cache, resp.json().await.unwrap())
}

/// A modern-era (stateless) POST as `key`.
async fn send_modern(
    gw: &Gateway,
    key: &str,
    body: Value,
    extra: &[(&str, &str)],
) -> (Option<String>, Value) {
    let mut req = post(&client(), &gw.url("/mcp"), body.to_string())
        .header("x-api-key", key)
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", body["method"].as_str().unwrap());
    if let Some(n) = body["params"]["name"].as_str() {
        req = req.header("mcp-name", n);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let x_cache = header(&resp, "x-cache");
    (x_cache, resp.json().await.unwrap())
}

fn modern(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

async fn requests(up: &Upstream) -> u64 {
    up.state().await["requests"].as_u64().unwrap()
}

#[tokio::test]
async fn a_members_lists_and_listed_tools_are_kept_per_identity() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let gw = Gateway::start(&config(&files, &web, CACHE_FILES)).await;
    let alice = initialize(&gw, ALICE_KEY).await;
    let list = |id| rpc(id, "tools/list", json!({}));

    let (x, first) = send(&gw, ALICE_KEY, &alice, list(2)).await;
    assert_eq!(x.as_deref(), Some("miss"));
    let (f, w) = (requests(&files).await, requests(&web).await);
    let (x, again) = send(&gw, ALICE_KEY, &alice, list(3)).await;
    assert_eq!(x.as_deref(), Some("hit"), "{again}");
    assert_eq!(again["id"], 3);
    assert_eq!(
        tool_names(&again),
        tool_names(&first),
        "named and filtered the same"
    );
    assert!(tool_names(&again).contains(&"files__echo".to_string()));
    assert_eq!(requests(&files).await, f, "the kept member was not asked");
    assert_eq!(requests(&web).await, w + 1, "the other member was");

    // Bob's answers are his own: his first list is a miss, in a session of his own.
    let bob = initialize(&gw, BOB_KEY).await;
    let (x, _) = send(&gw, BOB_KEY, &bob, list(4)).await;
    assert_eq!(x.as_deref(), Some("miss"), "alice's entry is not bob's");

    // A listed tool's result, asked by its prefixed name and kept by its own.
    let echo = |id| {
        rpc(
            id,
            "tools/call",
            json!({"name": "files__echo", "arguments": {"reply_text": "kept"}}),
        )
    };
    let (x, called) = send(&gw, ALICE_KEY, &alice, echo(5)).await;
    assert_eq!(x.as_deref(), Some("miss"));
    let f = requests(&files).await;
    let (x, hit) = send(&gw, ALICE_KEY, &alice, echo(6)).await;
    assert_eq!(x.as_deref(), Some("hit"));
    assert_eq!(hit["id"], 6, "the client's own id");
    assert_eq!(hit["result"], called["result"]);
    assert_eq!(requests(&files).await, f);
    // The other member's tools are never kept: no X-Cache at all.
    let w_echo = rpc(7, "tools/call", json!({"name": "w__echo", "arguments": {}}));
    assert_eq!(send(&gw, ALICE_KEY, &alice, w_echo).await.0, None);

    // The admin API drops the member's entries by its name.
    let purged = client()
        .post(gw.admin_url("/api/v1/cache/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"route": "/mcp#files"}))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    let purged: Value = purged.json().await.unwrap();
    assert!(purged["purged"].as_u64().unwrap() >= 3, "{purged}");
    assert_eq!(
        send(&gw, ALICE_KEY, &alice, list(8)).await.0.as_deref(),
        Some("miss")
    );
    let sizes = gw.admin_api("/api/v1/cache", ADMIN_TOKEN).await;
    assert_eq!(sizes["routes"][0]["route"], "/mcp#files", "{sizes}");
}

#[tokio::test]
async fn a_members_list_changed_on_the_get_stream_drops_its_entries() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    // Only the cached member (files) announces a change: web's notice would reach the
    // client too and could come first, before files' group is dropped.
    let yaml = config(&files, &web, CACHE_FILES).replace(
        &format!("\"{}\"", files.url()),
        &format!("\"{}?notify=1\"", files.url()),
    );
    assert!(yaml.contains("notify=1"), "{yaml}");
    let gw = Gateway::start(&yaml).await;
    let session = initialize(&gw, ALICE_KEY).await;
    let list = |id| rpc(id, "tools/list", json!({}));
    assert_eq!(
        send(&gw, ALICE_KEY, &session, list(2)).await.0.as_deref(),
        Some("miss")
    );
    assert_eq!(
        send(&gw, ALICE_KEY, &session, list(3)).await.0.as_deref(),
        Some("hit")
    );
    let mut stream = client()
        .get(gw.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("x-api-key", ALICE_KEY)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    while !seen.contains("list_changed") {
        let chunk = stream.chunk().await.unwrap();
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended early: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(
        send(&gw, ALICE_KEY, &session, list(4)).await.0.as_deref(),
        Some("miss"),
        "dropped"
    );
}

#[tokio::test]
async fn the_gateway_listens_to_a_kept_modern_member_itself() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let gw = Gateway::start(&config(&files, &web, CACHE_FILES)).await;
    let listening = eventually(Duration::from_secs(10), || async {
        files.state().await["listeners"].as_u64() == Some(1)
    })
    .await;
    assert!(listening, "{}", gw.log());
    assert_eq!(
        web.state().await["listeners"].as_u64(),
        Some(0),
        "only kept members are listened to"
    );
    let list = |id| modern(id, "tools/list", json!({}));
    assert_eq!(
        send_modern(&gw, ALICE_KEY, list(1), &[]).await.0.as_deref(),
        Some("miss")
    );
    let (x, hit) = send_modern(&gw, ALICE_KEY, list(2), &[]).await;
    assert_eq!(x.as_deref(), Some("hit"));
    assert_eq!(
        (&hit["result"]["cacheScope"], &hit["result"]["ttlMs"]),
        (&json!("private"), &json!(0)),
        "the merged list is the caller's own, whatever was kept"
    );
    let change = modern(3, "tools/call", json!({"name": "files__change_lists"}));
    send_modern(&gw, ALICE_KEY, change, &[]).await;
    let dropped = eventually(Duration::from_secs(5), || async {
        send_modern(&gw, ALICE_KEY, list(4), &[]).await.0.as_deref() == Some("miss")
    })
    .await;
    assert!(dropped, "the member's list_changed dropped its entries");
}

const TRANSFORM_FILES: &str = r#"transforms:
  - path: /mcp
    member: files
    tools:
      - {match: echo, rename: say, description: "Say it back"}
      - {match: "stat*", hide: true}
      - {match: stream, set_args: {limit: 20}, hide_args: [api_token]}
      - {match: tally, set_args: {limit: 20}, overwrite: true}
    request_headers: {set: {X-Tenant: acme}}
    results:
      redact: [{pattern: "secret-\\w+", with: "[redacted]"}]
"#;

#[tokio::test]
async fn a_members_transforms_shape_its_part_of_the_catalog_only() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let extra = format!("{TRANSFORM_FILES}{CACHE_FILES}");
    let gw = Gateway::start(&config(&files, &web, &extra)).await;
    let session = initialize(&gw, ALICE_KEY).await;
    for id in [2, 3] {
        // The second list is a hit: transformed all the same.
        let (_, list) = send(&gw, ALICE_KEY, &session, rpc(id, "tools/list", json!({}))).await;
        assert_eq!(
            tool_names(&list),
            ["files__say", "files__stream", "w__echo", "w__stream"],
            "{list}"
        );
        assert_eq!(list["result"]["tools"][0]["description"], "Say it back");
    }

    // Called by its new name, the member gets its own, with the member's headers; the
    // result is redacted.
    let say = rpc(
        4,
        "tools/call",
        json!({"name": "files__say", "arguments": {"reply_text": "a secret-xyz b"}}),
    );
    let (_, said) = send(&gw, ALICE_KEY, &session, say).await;
    assert_eq!(
        said["result"]["content"][0]["text"], "a [redacted] b",
        "{said}"
    );
    let echoed = rpc(
        5,
        "tools/call",
        json!({"name": "files__say", "arguments": {}}),
    );
    let (_, echoed) = send(&gw, ALICE_KEY, &session, echoed).await;
    assert_eq!(echoed["result"]["params"]["name"], "echo", "{echoed}");
    assert_eq!(echoed["result"]["headers"]["x-tenant"], "acme");

    // Hidden, or called by the replaced name: unknown, and never sent.
    let f = requests(&files).await;
    for (id, name) in [(6, "files__status"), (7, "files__echo")] {
        let (_, refused) = send(
            &gw,
            ALICE_KEY,
            &session,
            rpc(id, "tools/call", json!({"name": name, "arguments": {}})),
        )
        .await;
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
        assert!(refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool"));
    }
    assert_eq!(requests(&files).await, f);

    // The other member is untouched: its results are not redacted.
    let (_, web_echo) = send(
        &gw,
        ALICE_KEY,
        &session,
        rpc(
            8,
            "tools/call",
            json!({"name": "w__echo", "arguments": {"reply_text": "secret-1"}}),
        ),
    )
    .await;
    assert_eq!(web_echo["result"]["content"][0]["text"], "secret-1");

    // Modern era: the injected argument's Mcp-Param field is re-emitted from the body.
    let tally = modern(
        9,
        "tools/call",
        json!({"name": "files__tally", "arguments": {"limit": 5}}),
    );
    let (_, got) = send_modern(&gw, ALICE_KEY, tally, &[("mcp-param-limit", "5")]).await;
    let got = &got["result"];
    assert_eq!(got["params"]["arguments"]["limit"], 20, "{got}");
    assert_eq!(got["headers"]["mcp-param-limit"], "20", "{got}");
    assert_eq!(got["headers"]["mcp-name"], "tally");
}

#[test]
fn member_rules_must_name_a_member_of_a_virtual_server() {
    let files = Upstream::start("files");
    let web = Upstream::start("web");
    let bad = config(
        &files,
        &web,
        "routes: [{path: /plain, group: web}]\ncache:\n  routes:\n    - {path: /mcp, lists: {ttl: 1s}}\n    - {path: /mcp, member: nope, lists: {ttl: 1s}}\n    - {path: /plain, member: w, lists: {ttl: 1s}}\ntransforms:\n  - {path: /mcp}\n  - {path: /mcp, member: w}\n  - {path: /mcp, member: w}\n",
    )
    .replace("{port}", "8080")
    .replace("{admin_port}", "8081");
    expect_invalid(
        &bad,
        &[
            "cache.routes[0].member: is required: \"/mcp\" is a virtual server; name the member (one of: files, w)",
            "cache.routes[1].member: \"nope\" is not a member of \"/mcp\"",
            "cache.routes[2].member: \"/plain\" is a route: members belong to virtual servers",
            "transforms[0].member: is required",
            "transforms[2].path: \"/mcp\" is listed twice",
        ],
    );
}
