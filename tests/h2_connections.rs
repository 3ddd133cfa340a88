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
    let v: Value = client()
        .get(format!("{admin}/api/v1/connections"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["connections"].as_array().unwrap().clone()
}

#[tokio::test]
async fn http2_requests_update_their_connections_stats() {
    let pki = TempDir::new("pki");
    make_cert(
        &pki,
        "ca",
        "/CN=Test CA",
        None,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    make_cert(
        &pki,
        "server",
        "/CN=gateway",
        Some("ca"),
        &[
            "subjectAltName=IP:127.0.0.1",
            "extendedKeyUsage=serverAuth",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    let up = Upstream::start("u");
    let yaml = config_for(
        &[up.url()],
        &format!("admin:\n  port: {{admin_port}}\n  token: {TOKEN}\n"),
    )
    .replacen(
        "server:\n",
        &format!(
            "server:\n  tls:\n    cert: {}\n    key: {}\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display()
        ),
        1,
    );
    let (config, dir, port) = Gateway::prepare(&yaml, &[]);
    let mut child = Gateway::spawn(&config, &dir, &[], &[]);
    let log = || std::fs::read_to_string(dir.path("gateway.log")).unwrap_or_default();
    let h2 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = h2.get(url("/readiness")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "gateway not ready over HTTPS:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let yaml = std::fs::read_to_string(&config).unwrap();
    let admin_port = yaml
        .split("\nadmin:\n")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.trim().strip_prefix("port: ")))
        .unwrap()
        .trim()
        .to_string();
    let admin = format!("http://127.0.0.1:{admin_port}");

    // Two MCP requests on the client's one HTTP/2 connection (after its readiness probes).
    for _ in 0..2 {
        let r = post(&h2, &url("/mcp"), LIST).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        received(r).await;
    }
    let conns = connections(&admin).await;
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
    let _ = child.kill();
    let _ = child.wait();
}
