//! Authorization policies against the real binary: denied calls get 403 with a JSON-RPC
//! error naming what was denied (and never reach the upstream), lists are filtered by
//! identity in JSON and SSE answers, and the identity can be forwarded signed.

mod common;

use common::*;
use serde_json::{json, Value};

const ALICE_KEY: &str = "alice-key-0123456789";
const BOB_KEY: &str = "bob-key-0123456789";
const FORWARD_SECRET: &str = "a-shared-secret-for-the-servers-0123456789";

fn yaml(up: &Upstream) -> String {
    let alice = sha256_hex(ALICE_KEY.as_bytes());
    let bob = sha256_hex(BOB_KEY.as_bytes());
    let security = format!(
        r#"security:
  auth:
    - name: keys
      api_keys:
        keys:
          - {{id: alice, sha256: "{alice}", scopes: [files.read], claims: {{team: platform}}}}
          - {{id: bob, sha256: "{bob}"}}
  policies:
    - {{name: no-status, effect: deny, tools: [status]}}
    - {{name: platform-prompts, effect: allow, claims: {{team: platform}}, prompts: ["*"]}}
    - {{name: no-prompts, effect: deny, methods: [prompts/get]}}
    - {{name: private-needs-scope, effect: allow, scopes: [files.read], resources: ["mem://private/*"]}}
    - {{name: no-private, effect: deny, resources: ["mem://private/*"]}}
    - {{name: the-rest, effect: allow}}
"#
    );
    let mut y = config_for(&[up.url()], &security);
    y = y.replace(
        "      servers:\n",
        &format!(
            "      forward_identity: {{secret: \"{FORWARD_SECRET}\", ttl: 30s}}\n      servers:\n"
        ),
    );
    y
}

/// POST `body` as the holder of `key`: the status and JSON body (the last SSE `data`
/// when the answer is a stream).
async fn send(gw: &Gateway, key: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = post(&client(), &gw.url("/mcp"), body.to_string()).header("x-api-key", key);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = resp.text().await.unwrap();
    let v = if sse {
        let last = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("no data in {text}"));
        serde_json::from_str(last).unwrap()
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, v)
}

fn names(v: &Value, key: &str, field: &str) -> Vec<String> {
    v["result"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no result.{key} in {v}"))
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect()
}

fn list(method: &str, sse: bool) -> String {
    json!({"jsonrpc": "2.0", "id": 5, "method": method, "params": {"_meta": {"sse": sse}}})
        .to_string()
}

fn call(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).to_string()
}

#[tokio::test]
async fn denied_calls_are_refused_and_never_reach_the_upstream() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&up)).await;
    let before = up.state().await["requests"].as_i64().unwrap();

    let denials = [
        (
            ALICE_KEY,
            call("tools/call", json!({"name": "status"})),
            "policy \"no-status\" denies tools/call of tool \"status\" to subject \"alice\"",
        ),
        (
            BOB_KEY,
            call("prompts/get", json!({"name": "greet"})),
            "policy \"no-prompts\" denies prompts/get of prompt \"greet\" to subject \"bob\"",
        ),
        (
            BOB_KEY,
            call("resources/read", json!({"uri": "mem://private/keys"})),
            "policy \"no-private\" denies resources/read of resource \"mem://private/keys\" to subject \"bob\" without the scope(s) files.read",
        ),
    ];
    for (key, body, message) in &denials {
        let (status, v) = send(&gw, key, body, &[]).await;
        assert_eq!(status, 403, "{v}");
        assert_eq!(v["error"]["code"], -32013, "{v}");
        assert_eq!(v["error"]["message"], *message);
        assert_eq!(v["id"], 9);
    }
    // A 2025-03-26 batch is refused whole when any of its messages is denied.
    let batch = format!(
        "[{},{}]",
        call("tools/call", json!({"name": "echo"})),
        call("tools/call", json!({"name": "status"}))
    );
    let (status, v) = send(
        &gw,
        ALICE_KEY,
        &batch,
        &[("mcp-protocol-version", "2025-03-26")],
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_i64()),
        (403, Some(-32013)),
        "{v}"
    );
    assert_eq!(up.state().await["requests"].as_i64().unwrap(), before);

    // What the policies allow goes through.
    let allowed = [
        (ALICE_KEY, call("tools/call", json!({"name": "echo"}))),
        (ALICE_KEY, call("prompts/get", json!({"name": "greet"}))),
        (
            ALICE_KEY,
            call("resources/read", json!({"uri": "mem://private/keys"})),
        ),
        (
            BOB_KEY,
            call("resources/read", json!({"uri": "mem://public/readme"})),
        ),
    ];
    for (key, body) in &allowed {
        let (status, v) = send(&gw, key, body, &[]).await;
        assert_eq!(status, 200, "{body}: {v}");
    }
    assert_eq!(
        up.state().await["requests"].as_i64().unwrap(),
        before + allowed.len() as i64
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"mcp_gateway_policy_denials_total{route="/mcp",rule="no-status"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn lists_show_only_what_the_caller_may_use() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&up)).await;
    for sse in [false, true] {
        let (_, v) = send(&gw, ALICE_KEY, &list("tools/list", sse), &[]).await;
        assert_eq!(names(&v, "tools", "name"), ["echo", "stream"], "sse={sse}");

        let (_, v) = send(&gw, ALICE_KEY, &list("prompts/list", sse), &[]).await;
        assert_eq!(names(&v, "prompts", "name"), ["greet", "internal_audit"]);
        let (_, v) = send(&gw, BOB_KEY, &list("prompts/list", sse), &[]).await;
        assert!(names(&v, "prompts", "name").is_empty(), "{v}");

        let (_, v) = send(&gw, ALICE_KEY, &list("resources/list", sse), &[]).await;
        assert_eq!(
            names(&v, "resources", "uri"),
            ["mem://public/readme", "mem://private/keys"]
        );
        let (_, v) = send(&gw, BOB_KEY, &list("resources/list", sse), &[]).await;
        assert_eq!(names(&v, "resources", "uri"), ["mem://public/readme"]);

        let (_, v) = send(&gw, BOB_KEY, &list("resources/templates/list", sse), &[]).await;
        assert_eq!(
            names(&v, "resourceTemplates", "uriTemplate"),
            ["mem://public/{name}"]
        );
    }
    // The SSE answer keeps its other events (the progress notification comes first).
    let resp = post(&client(), &gw.url("/mcp"), list("tools/list", true))
        .header("x-api-key", BOB_KEY)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-length").is_none());
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: message\ndata: "), "{text}");
    assert!(text.contains("notifications/progress"), "{text}");
    assert!(!text.contains("\"status\""), "{text}");
    // A list padded past 64 KiB: filtered all the same.
    let padded = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list",
        "params": {"_meta": {"pad": "x".repeat(100 * 1024)}}})
    .to_string();
    let (status, v) = send(&gw, BOB_KEY, &padded, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(names(&v, "tools", "name"), ["echo", "stream"]);
}

#[tokio::test]
async fn the_identity_is_forwarded_signed_and_cannot_be_forged() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&up)).await;
    let (status, v) = send(
        &gw,
        ALICE_KEY,
        &call("tools/call", json!({"name": "echo"})),
        &[("x-mcp-identity", "forged-by-the-client")],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let headers = &v["result"]["headers"];
    assert!(headers.get("x-api-key").is_none(), "{headers}");
    let token = headers["x-mcp-identity"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["default"]);
    validation.set_issuer(&["mcp-gateway"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(FORWARD_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "alice");
    assert_eq!(claims["scope"], "files.read");
    assert_eq!(claims["auth_method"], "api_key");
    assert_eq!(claims["jti"], headers["x-request-id"]);
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 30);
}

#[test]
fn bad_policies_and_forwarding_config_list_every_problem() {
    let up_url = "http://127.0.0.1:9";
    let y = config_for(
        &[up_url.to_string()],
        "security:\n  policies:\n    - {name: a, tools: [x]}\n    - {effect: deny, subjects: ['[oops'], routes: [/elsewhere]}\n",
    )
    .replace(
        "      servers:\n",
        "      forward_identity: {secret: short, header: 'bad header'}\n      servers:\n",
    )
    .replace("{port}", "8080");
    expect_invalid(
        &y,
        &[
            "security.policies[0].effect: is required: allow or deny",
            "security.policies[1].subjects[0]: \"[oops\" is not a glob",
            "security.policies[1].routes[0]: \"/elsewhere\" is not a configured route",
            "upstream.groups.default.forward_identity.secret: must be at least 32 bytes",
            "upstream.groups.default.forward_identity.header: \"bad header\" is not a header name",
        ],
    );
}
