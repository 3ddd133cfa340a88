//! The admin API's per-connection stats follow HTTP/2 requests too (each HTTP/2 stream
//! runs in a task of its own, apart from its connection's).

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-admin-token-0123456789";
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const STREAM: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"stream","arguments":{"delay":20}}}"#;

async fn connections(admin: &str) -> Vec<Value> {
    let v = json_of(
        client()
            .get(format!("{admin}/api/v1/connections"))
            .bearer_auth(TOKEN),
    )
    .await;
    v["connections"].as_array().unwrap().clone()
}

#[tokio::test]
async fn http2_requests_update_their_connections_stats() {
    let pki = pki();
    let up = Upstream::start("u");
    let yaml = config_for(
        &[up.url()],
        &format!("admin:\n  port: {{admin_port}}\n  token: {TOKEN}\n"),
    );
    let (gateway, dir, port) = tls_gateway(&pki, &yaml).await;
    let log = || std::fs::read_to_string(dir.path("gateway.log")).unwrap_or_default();
    let h2 = tls_client(&pki);
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let admin = admin_url_in(&dir, "");

    // Two MCP requests on the client's one HTTP/2 connection.
    for _ in 0..2 {
        let r = post(&h2, &url("/mcp"), LIST).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        received(r).await;
    }
    // A request is counted when it ends, just after its answer went out.
    let counted = |c: &Value| c["requests"].as_u64() >= Some(2) && c["active_requests"] == 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut conns = connections(&admin).await;
    while !conns.iter().any(counted) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        conns = connections(&admin).await;
    }
    let ours = conns
        .iter()
        .find(|c| c["last_method"] == "tools/list")
        .unwrap_or_else(|| panic!("no connection shows the HTTP/2 requests: {conns:?}"));
    assert!(ours["requests"].as_u64().unwrap() >= 2, "{ours}");
    assert_eq!(ours["route"], "/mcp", "{ours}");
    assert!(
        ours["bytes_in"].as_u64().unwrap() >= 2 * LIST.len() as u64,
        "{ours}"
    );
    assert!(ours["bytes_out"].as_u64().unwrap() > 0, "{ours}");
    assert_eq!(ours["active_requests"], 0, "{ours}");
    let id = ours["id"].clone();

    // A stream held open on the same connection counts as its active request.
    let mut open = post(&h2, &url("/mcp"), STREAM).send().await.unwrap();
    assert_eq!(open.version(), reqwest::Version::HTTP_2);
    open.chunk().await.unwrap();
    let conns = connections(&admin).await;
    let same = conns.iter().find(|c| c["id"] == id).unwrap();
    assert_eq!(same["active_requests"], 1, "{same}");

    // Closing the connection from the admin API ends its streams and their upstream requests.
    let r = client()
        .delete(format!("{admin}/api/v1/connections/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = open.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its connection");
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.state().await["cancelled"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.state().await["cancelled"], 1, "{}", log());
    assert!(connections(&admin).await.iter().all(|c| c["id"] != id));
    drop(gateway);
}
