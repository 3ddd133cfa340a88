//! Browser-facing safety: Origin validation, CORS preflights and headers, security headers.

mod common;

use common::*;
use serde_json::Value;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const APP: &str = "https://app.example.com";

fn h(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn foreign_origins_are_refused_and_allowed_ones_get_cors_headers() {
    let (up, gw) = one_upstream(&format!(
        "security:\n  cors:\n    allowed_origins: [\"{APP}\"]\n    max_age: 2m\n"
    ))
    .await;
    let c = client();

    // No Origin (any non-browser client): served, with the security headers.
    let r = post(&c, &gw.url("/mcp"), LIST).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(h(&r, "x-frame-options").as_deref(), Some("DENY"));
    assert!(h(&r, "access-control-allow-origin").is_none());

    // A foreign origin: 403 before anything reaches the upstream.
    let before = up.state().await["requests"].as_u64().unwrap();
    let r = post(&c, &gw.url("/mcp"), LIST)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(h(&r, "access-control-allow-origin").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32012, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("evil.example"));

    // The allowed origin: served, and the browser may read the MCP headers.
    let r = post(&c, &gw.url("/mcp"), LIST)
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));
    assert_eq!(h(&r, "vary").as_deref(), Some("Origin"));
    assert!(h(&r, "access-control-expose-headers")
        .unwrap()
        .contains("Mcp-Session-Id"));
    // Errors the gateway writes itself carry them too, so the page can read them.
    let r = post(&c, &gw.url("/mcp"), "{oops")
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));

    // Preflights are answered by the gateway.
    let preflight = |origin: &str, method: &str| {
        c.request(reqwest::Method::OPTIONS, gw.url("/mcp"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "content-type, mcp-session-id",
            )
            .send()
    };
    let r = preflight(APP, "POST").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(APP));
    assert_eq!(
        h(&r, "access-control-allow-methods").as_deref(),
        Some("GET, POST, DELETE")
    );
    assert!(h(&r, "access-control-allow-headers")
        .unwrap()
        .contains("Mcp-Session-Id"));
    assert_eq!(h(&r, "access-control-max-age").as_deref(), Some("120"));
    assert_eq!(preflight(APP, "PUT").await.unwrap().status(), 403);
    assert_eq!(
        preflight("https://evil.example", "POST")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        up.state().await["requests"].as_u64().unwrap(),
        before + 1,
        "only the allowed, well-formed POST reached the upstream"
    );
}

#[tokio::test]
async fn by_default_no_browser_origin_is_allowed() {
    let (_up, gw) = one_upstream("").await;
    let r = post(&client(), &gw.url("/mcp"), LIST)
        .header("origin", "http://127.0.0.1:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn bad_cors_settings_are_reported() {
    expect_invalid(
        "upstream:\n  groups:\n    default:\n      servers:\n        - {id: a, url: http://127.0.0.1:3001/mcp}\nsecurity:\n  cors:\n    allowed_origins: [\"app.example.com\", \"https://x.example/path\"]\n    allowed_methods: [PUT]\n    exposed_headers: [\"bad header\"]\n",
        &[
            "security.cors.allowed_origins[0]: \"app.example.com\" is not an origin",
            "security.cors.allowed_origins[1]",
            "security.cors.allowed_methods[0]",
            "security.cors.exposed_headers[0]",
        ],
    );
}
