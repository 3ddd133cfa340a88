//! The admin service: health without a token, the bearer-token REST API, the redacted
//! config, and Prometheus metrics that follow real traffic.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const TOKEN: &str = "test-admin-token-0123456789";
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn config(up: &Upstream, admin: &str, group_extra: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\n  threads: 2\nupstream:\n  groups:\n    default:\n{group_extra}      servers:\n        - {{id: s1, url: \"{}\"}}\nsessions:\n  keys: [\"mT3pTX/BvnBf4XUhVbBU5WhH2gUz8ZOHw52f4K0N0Ys=\"]\nlogging:\n  level: info\n  format: json\nadmin:\n  port: {{admin_port}}\n{admin}",
        up.url(),
    )
}

async fn get(url: &str, token: Option<&str>) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

async fn api(gw: &Gateway, path: &str) -> Value {
    let (status, body, _) = get(&gw.admin_url(path), Some(TOKEN)).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn health_needs_no_token_and_the_api_needs_the_right_one() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up, &format!("  token: {TOKEN}\n"), "")).await;
    for path in ["/health", "/liveness", "/readiness"] {
        let (status, body, _) = get(&gw.admin_url(path), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap();
    }
    // No token, a wrong one, one of the wrong length, another scheme: 401 with a challenge.
    for token in [None, Some("wrong-token-0123456789xx"), Some("short")] {
        let (status, body, headers) = get(&gw.admin_url("/api/v1/status"), token).await;
        assert_eq!(status, 401, "{body}");
        assert!(headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("admin token"), "{v}");
    }
    let basic = client()
        .get(gw.admin_url("/api/v1/status"))
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    let status = api(&gw, "/api/v1/status").await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let text = std::fs::read(gw.dir.path("gateway.yaml")).unwrap();
    assert_eq!(status["config"]["sha256"], sha256_hex(&text));
    assert!(status["config"]["source"]
        .as_str()
        .unwrap()
        .ends_with("gateway.yaml"));

    // Unknown routes and methods: JSON errors.
    let (status, body, _) = get(&gw.admin_url("/api/v1/nope"), Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let (status, _, _) = get(&gw.admin_url("/nope"), None).await;
    assert_eq!(status, 404);
    let resp = client()
        .post(gw.admin_url("/api/v1/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    // The admin service is not the proxy: MCP requests are not served there.
    let (status, _, _) = get(&gw.admin_url("/mcp"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn without_a_token_the_api_is_off_but_metrics_and_health_work() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up, "", "")).await;
    let (status, body, _) = get(&gw.admin_url("/api/v1/status"), Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin.token"), "{body}");
    assert_eq!(get(&gw.admin_url("/metrics"), None).await.0, 200);
    assert_eq!(get(&gw.admin_url("/readiness"), None).await.0, 200);
}

#[tokio::test]
async fn the_running_config_is_shown_with_secrets_redacted() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up, &format!("  token: {TOKEN}\n"), "")).await;
    let (status, body, _) = get(&gw.admin_url("/api/v1/config"), Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(!body.contains(TOKEN), "{body}");
    assert!(!body.contains("mT3pTX"), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["admin"]["token"], "<redacted>");
    assert_eq!(v["sessions"]["keys"][0], "<redacted>");
    // Defaults are filled in: it is the config the process runs with.
    assert_eq!(v["timeouts"]["connect"], "5s");
    assert_eq!(
        v["upstream"]["groups"]["default"]["servers"][0]["url"],
        up.url()
    );
}

#[tokio::test]
async fn upstreams_show_health_breakers_and_traffic() {
    let up = Upstream::start("a");
    let check = "      health_check: {kind: mcp, interval: 200ms, timeout: 150ms}\n";
    let gw = Gateway::start(&config(&up, &format!("  token: {TOKEN}\n"), check)).await;
    let c = client();
    for _ in 0..5 {
        received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    }
    let v = api(&gw, "/api/v1/upstreams").await;
    let g = &v["groups"][0];
    assert_eq!(g["name"], "default");
    assert_eq!(g["strategy"], "round_robin");
    assert_eq!(g["servers_up"], 1);
    // The catalog learned from the tools/list answers.
    assert_eq!(g["tools"], serde_json::json!(["echo", "status", "stream"]));
    let s = &g["servers"][0];
    assert_eq!(s["id"], "s1");
    assert_eq!(s["url"], up.url());
    assert_eq!(s["address"], up.addr);
    assert_eq!(s["up"], true);
    assert_eq!(s["breaker"], "closed");
    assert_eq!(s["requests"], 5);
    assert_eq!(s["errors"], 0);
    assert!(s["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{s}");

    let one = api(&gw, "/api/v1/upstreams/default/status").await;
    assert_eq!(one["name"], "default");
    assert_eq!(one["servers"][0]["id"], "s1");
    assert_eq!(one["servers"][0]["requests"], 5);
    let (status, body, _) = get(&gw.admin_url("/api/v1/upstreams/nope/status"), Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
}

/// POST a JSON-RPC body through the gateway; the mock's description of what it got.
async fn send(c: &reqwest::Client, gw: &Gateway, body: String) -> Value {
    received(post(c, &gw.url("/mcp"), body).send().await.unwrap()).await
}

/// The value of one sample line `name{labels} value` (labels in Prometheus' sorted order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_follow_traffic() {
    let up = Upstream::start("a");
    let check = "      health_check: {kind: mcp, interval: 200ms, timeout: 150ms}\n";
    let gw = Gateway::start(&config(&up, "", check)).await;
    let c = client();
    let call = |tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        )
    };
    // A tool call before the catalog knows the tool: "other".
    send(&c, &gw, call("echo")).await;
    received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    send(&c, &gw, call("echo")).await;
    // A name the servers never listed stays "other", whatever the client sends.
    send(&c, &gw, call("made-up-name")).await;
    expect_refusal(post(&c, &gw.url("/mcp"), "{oops"), 400, -32700).await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    received(post(&c, &gw.url("/mcp"), init).send().await.unwrap()).await;
    // An SSE answer held open while we scrape.
    let stream = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"stream","arguments":{"delay":3}}}"#;
    let mut open = post(&c, &gw.url("/mcp"), stream).send().await.unwrap();
    open.chunk().await.unwrap();

    let (status, text, headers) = get(&gw.admin_url("/metrics"), None).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect(
        r#"mcp_gateway_requests_total{group="default",method="tools/list",route="/mcp",status="200"}"#,
        1.0,
    );
    expect(
        r#"mcp_gateway_requests_total{group="default",method="tools/call",route="/mcp",status="200"}"#,
        3.0,
    );
    expect(
        r#"mcp_gateway_requests_total{group="default",method="none",route="/mcp",status="400"}"#,
        1.0,
    );
    expect(
        r#"mcp_gateway_errors_total{code="-32700",kind="parse_error",route="/mcp"}"#,
        1.0,
    );
    expect(
        r#"mcp_gateway_tool_calls_total{group="default",status="200",tool="echo"}"#,
        1.0,
    );
    expect(
        r#"mcp_gateway_tool_calls_total{group="default",status="200",tool="other"}"#,
        2.0,
    );
    expect(r#"mcp_gateway_sessions_total{group="default"}"#, 1.0);
    expect(
        r#"mcp_gateway_upstream_requests_total{group="default",outcome="2xx",server="s1"}"#,
        6.0,
    );
    expect(
        r#"mcp_gateway_upstream_up{group="default",server="s1"}"#,
        1.0,
    );
    expect(
        r#"mcp_gateway_circuit_breaker_state{group="default",server="s1"}"#,
        0.0,
    );
    expect(r#"mcp_gateway_sse_streams_active{group="default"}"#, 1.0);
    expect(
        r#"mcp_gateway_upstream_in_flight{group="default",server="s1"}"#,
        1.0,
    );
    // The scrape itself is not a proxy request; the open stream is.
    expect("mcp_gateway_requests_active", 1.0);
    assert!(sample(&text, "mcp_gateway_connections_active").is_some_and(|n| n >= 1.0));
    assert!(sample(
        &text,
        r#"mcp_gateway_upstream_health_checks_total{group="default",result="pass",server="s1"}"#
    )
    .is_some_and(|n| n >= 1.0));
    assert!(text.contains(r#"mcp_gateway_request_duration_seconds_bucket{group="default",method="tools/call",route="/mcp",le="+Inf"} 3"#), "{text}");
    assert!(
        !text.contains("made-up"),
        "client input never becomes a label"
    );

    // The stream ends: its gauges go back to zero.
    drop(open);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, text, _) = get(&gw.admin_url("/metrics"), None).await;
    assert_eq!(
        sample(&text, r#"mcp_gateway_sse_streams_active{group="default"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&text, "mcp_gateway_requests_active"), Some(0.0));
    // Its connection closed with it (the client dropped the response mid-stream).
    let open_conns = sample(&text, "mcp_gateway_connections_active").unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, text, _) = get(&gw.admin_url("/metrics"), None).await;
    assert!(sample(&text, "mcp_gateway_connections_active").unwrap() < open_conns.max(1.0));
}

#[tokio::test]
async fn access_log_lines_carry_the_request() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up, "", "")).await;
    let c = client();
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let resp = post(&c, &gw.url("/mcp"), call)
        .header("x-request-id", "req-42")
        .header("authorization", "Bearer client-secret-xyz")
        .send()
        .await
        .unwrap();
    received(resp).await;
    expect_refusal(post(&c, &gw.url("/mcp"), "{oops"), 400, -32700).await;
    assert!(
        gw.wait_log("\"request_id\":\"req-42\"", Duration::from_secs(5))
            .await
    );
    assert!(
        gw.wait_log("\"error\":\"parse_error\"", Duration::from_secs(5))
            .await
    );
    let log = gw.log();
    // logging.format: json: one object per line; access lines carry their fields at the top.
    let access: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["target"] == "access")
        .collect();
    let line = access.iter().find(|v| v["request_id"] == "req-42").unwrap();
    assert_eq!(line["level"], "INFO");
    assert!(line["ts"].is_string());
    assert_eq!(line["route"], "/mcp");
    assert_eq!(line["mcp_method"], "tools/call");
    assert_eq!(line["mcp_name"], "echo");
    assert_eq!(line["server"], "s1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], call.len());
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let bad = access.iter().find(|v| v["error"] == "parse_error").unwrap();
    assert_eq!(bad["jsonrpc_error"], -32700);
    assert_eq!(bad["status"], 400);
    // Secrets never reach the log.
    assert!(!log.contains("client-secret-xyz"));
}

async fn admin_call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method, gw.admin_url(path))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn served_by(c: &reqwest::Client, gw: &Gateway, sid: Option<&str>) -> Result<String, u16> {
    let mut req = post(c, &gw.url("/mcp"), LIST);
    if let Some(sid) = sid {
        req = req.header("mcp-session-id", sid);
    }
    let resp = req.send().await.unwrap();
    if resp.status() != 200 {
        return Err(resp.status().as_u16());
    }
    let v: Value = resp.json().await.unwrap();
    Ok(v["result"]["server"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn servers_are_added_drained_and_removed_at_runtime() {
    use reqwest::Method;
    use serde_json::json;
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&config(&a, &format!("  token: {TOKEN}\n"), "")).await;
    let c = client();
    let path = "/api/v1/upstreams/default/servers";

    // Add b: new requests spread over both.
    let (status, v) = admin_call(
        &gw,
        Method::POST,
        path,
        Some(json!({"id": "s2", "url": b.url()})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["id"], "s2");
    assert_eq!(v["up"], true);
    assert_eq!(v["weight"], 100);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(served_by(&c, &gw, None).await.unwrap());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Refused changes say why.
    for (body, want) in [
        (json!({"id": "s2", "url": "http://127.0.0.1:1/mcp"}), 409),
        (json!({"id": "s3", "url": b.url()}), 409),
        (json!({"id": "s3", "url": "ftp://x/mcp"}), 400),
        (
            json!({"id": "s3", "url": "http://no-such-host.invalid/mcp"}),
            422,
        ),
        (json!({"id": "s3", "url": b.url(), "weight": 0}), 400),
        (json!({"id": "s3", "url": b.url(), "colour": "red"}), 400),
    ] {
        let (status, v) = admin_call(&gw, Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, want, "{body} -> {v}");
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (status, _) = admin_call(
        &gw,
        Method::POST,
        "/api/v1/upstreams/nope/servers",
        Some(json!({"id": "x", "url": b.url()})),
    )
    .await;
    assert_eq!(status, 404);

    // A session on b, then b drains: no new requests, but its session goes on.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let sid = loop {
        let resp = post(&c, &gw.url("/mcp"), init).send().await.unwrap();
        let sid = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        if received(resp).await["server"] == "b" {
            break sid;
        }
    };
    let (status, v) = admin_call(&gw, Method::POST, &format!("{path}/s2/drain"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["draining"], true);
    for _ in 0..6 {
        assert_eq!(served_by(&c, &gw, None).await.unwrap(), "a");
    }
    assert_eq!(served_by(&c, &gw, Some(&sid)).await.unwrap(), "b");
    let ups = api(&gw, "/api/v1/upstreams").await;
    assert_eq!(ups["groups"][0]["servers"][1]["draining"], true);

    // Removed: its sessions get 404; the last server cannot be removed.
    let (status, v) = admin_call(&gw, Method::DELETE, &format!("{path}/s2"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["removed"], "s2");
    assert_eq!(served_by(&c, &gw, Some(&sid)).await, Err(404));
    assert_eq!(served_by(&c, &gw, None).await.unwrap(), "a");
    let (status, v) = admin_call(&gw, Method::DELETE, &format!("{path}/s1"), None).await;
    assert_eq!(status, 409, "{v}");
    let (status, _) = admin_call(&gw, Method::DELETE, &format!("{path}/s9"), None).await;
    assert_eq!(status, 404);
    // Without the token nothing changes.
    let resp = client()
        .delete(gw.admin_url(&format!("{path}/s1")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(gw.log().contains("admin: added server default/s2"));
}

#[tokio::test]
async fn connections_are_listed_and_closed() {
    use reqwest::Method;
    let up = Upstream::start("a");
    let gw = Gateway::start(&config(&up, &format!("  token: {TOKEN}\n"), "")).await;
    // One connection with a finished request...
    let done = client();
    received(post(&done, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    // ...and another holding a long SSE answer open.
    let streaming = client();
    let stream = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"stream","arguments":{"delay":20}}}"#;
    let mut open = post(&streaming, &gw.url("/mcp"), stream)
        .send()
        .await
        .unwrap();
    open.chunk().await.unwrap();

    let v = api(&gw, "/api/v1/connections").await;
    let conns = v["connections"].as_array().unwrap();
    let finished = conns
        .iter()
        .find(|c| c["requests"] == 1 && c["active_requests"] == 0)
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(finished["route"], "/mcp");
    assert_eq!(finished["last_method"], "tools/list");
    assert!(finished["bytes_in"].as_u64().unwrap() > 0);
    assert!(finished["bytes_out"].as_u64().unwrap() > 0);
    assert!(finished["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(finished["identity"].is_null());
    let busy = conns
        .iter()
        .find(|c| c["active_requests"] == 1)
        .unwrap_or_else(|| panic!("{v}"));

    // Closing it ends the stream at the client and cancels the upstream request.
    let id = busy["id"].as_u64().unwrap();
    let (status, v) = admin_call(
        &gw,
        Method::DELETE,
        &format!("/api/v1/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["closed"], id);
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = open.chunk().await {
            body.extend_from_slice(&chunk);
        }
        body
    })
    .await
    .expect("the stream ended");
    assert!(!String::from_utf8_lossy(&rest).contains("\"result\""));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while up.state().await["cancelled"] != 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.state().await["cancelled"], 1);
    let v = api(&gw, "/api/v1/connections").await;
    assert!(
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != id),
        "{v}"
    );
    assert!(gw.log().contains(&format!("connection {id} from")));

    let (status, _) = admin_call(&gw, Method::DELETE, "/api/v1/connections/999999", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin_call(&gw, Method::DELETE, "/api/v1/connections/x", None).await;
    assert_eq!(status, 404);
}
