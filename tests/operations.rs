//! Operations against the real binary: hot reload (SIGHUP, the admin API, the `reload`
//! subcommand), graceful shutdown (readiness drains first, in-flight work finishes,
//! the process exits as soon as it is done), and the zero-downtime upgrade under load.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const TOKEN: &str = "an-admin-token-for-the-tests-0123456789";

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A gateway config over `urls` (pid file and upgrade socket in the gateway's directory).
fn yaml(urls: &[String], extra: &str) -> String {
    config_for(urls, extra).replace(
        "  threads: 2\n",
        "  threads: 2\n  pid_file: {dir}/gw.pid\n  upgrade_sock: {dir}/upgrade.sock\n  drain_delay: 1s\n  grace_period: 20s\n",
    )
}

fn admin() -> String {
    // `{admin_port}` is filled in by the harness, apart from the gateway's own port.
    format!(
        "admin:\n  enabled: true\n  host: 127.0.0.1\n  port: {{admin_port}}\n  token: {TOKEN}\n"
    )
}

/// The gateway exits, successfully, within `limit`.
fn exits_cleanly(mut gw: Gateway, limit: Duration) {
    let status = gw.wait_exit(limit);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        gw.log()
    );
}

async fn which_server(gw: &Gateway, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = post(&client(), &gw.url("/mcp"), LIST);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn reload_swaps_the_config_and_keeps_what_remains() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = Gateway::start(&yaml(&[a.url()], &admin())).await;
    let config = gw.config_path();
    let first = std::fs::read_to_string(&config).unwrap();

    // A session on server a, before the reload.
    let resp = post(
        &client(),
        &gw.url("/mcp"),
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    )
    .send()
    .await
    .unwrap();
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();

    // SIGHUP: server b joins, API keys are required, access log off.
    let key = "a-key-for-the-reload-test";
    let one = format!("        - {{id: s1, url: \"{}\"}}\n", a.url());
    let two = format!("{one}        - {{id: s2, url: \"{}\"}}\n", b.url());
    let second = first.replace(&one, &two).replace(
        "logging:\n",
        &format!(
            "security:\n  auth:\n    - api_keys: {{keys: [{{id: ops, sha256: \"{}\"}}]}}\nlogging:\n  access_log: false\n",
            sha256_hex(key.as_bytes())
        ),
    );
    std::fs::write(&config, &second).unwrap();
    signal(gw.pid(), "HUP");
    assert!(
        gw.wait_log("config reloaded from", Duration::from_secs(20))
            .await,
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("1 server(s) kept, 1 new"), "{}", gw.log());
    let (status, _) = which_server(&gw, &[]).await;
    assert_eq!(status, 401);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, v) = which_server(&gw, &[("x-api-key", key)]).await;
        assert_eq!(status, 200, "{v}");
        seen.insert(v["result"]["server"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    // The session made before the reload was anonymous: sessions are bound to the
    // identity that started them, so the key's holder cannot take it over (a session
    // that lives on across a reload: tests/sessions.rs).
    let (status, v) = which_server(&gw, &[("x-api-key", key), ("mcp-session-id", &session)]).await;
    assert_eq!(
        (status, v["error"]["code"].as_i64()),
        (404, Some(-32001)),
        "{v}"
    );

    // A broken file changes nothing; the admin API lists every problem.
    std::fs::write(
        &config,
        second
            .replace("threads: 2", "threads: two")
            .replace("api_keys", "api_kys"),
    )
    .unwrap();
    let resp = client()
        .post(gw.admin_url("/api/v1/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.unwrap();
    let problems = v["problems"].to_string();
    assert!(problems.contains("server.threads"), "{v}");
    assert!(problems.contains("api_kys"), "{v}");
    assert_eq!(which_server(&gw, &[("x-api-key", key)]).await.0, 200);

    // A new port needs the upgrade: refused, with that said.
    std::fs::write(
        &config,
        second.replace(&format!("port: {}", gw.port), "port: 1"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["reload", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server.port: a reload cannot change the listeners; use the upgrade"),
        "{stderr}"
    );
    // The `reload` subcommand applies a good file.
    std::fs::write(&config, &first).unwrap();
    let out = Command::new(BIN)
        .args(["reload", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("reloaded: "));
    assert_eq!(which_server(&gw, &[]).await.0, 200);
}

#[tokio::test]
async fn sigterm_drains_then_finishes_in_flight_streams() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&[up.url()], "")).await;
    let stream = {
        let url = gw.url("/mcp");
        tokio::spawn(async move {
            let resp = post(
                &client(),
                &url,
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"stream","arguments":{"delay":3}}}"#,
            )
            .send()
            .await
            .unwrap();
            resp.text().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    signal(gw.pid(), "TERM");
    // Readiness turns 503 while the listeners are still open.
    let mut drained = false;
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(r) = client().get(gw.url("/readiness")).send().await {
            if r.status() == 503 {
                // Keep-alive clients are told to leave before the listeners close.
                assert_eq!(r.headers()["connection"], "close");
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["draining"], true);
                drained = true;
                break;
            }
        }
    }
    assert!(drained, "readiness never said 503");
    // MCP traffic is still served during the drain, on connections that then close.
    let r = post(
        &client(),
        &gw.url("/mcp"),
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["connection"], "close");
    // The stream in flight ends normally.
    let body = stream.await.unwrap();
    assert!(
        body.contains(r#""id": 7"#) || body.contains(r#""id":7"#),
        "{body}"
    );
    // And the process exits once it is done, not at the end of the 20 s grace period.
    let mut gw = gw;
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("the gateway did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        gw.log().contains("no request in flight, exiting"),
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn a_kept_alive_connection_may_send_one_last_request_after_the_handoff() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("u");
    let gw =
        Gateway::start(&yaml(&[up.url()], "").replace("drain_delay: 1s", "drain_delay: 5s")).await;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{LIST}",
        LIST.len()
    );
    // Read one whole response (its head says how long the body is).
    async fn response(conn: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return text;
                }
            }
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                return text;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    // A connection to the old process, kept alive and idle across the handoff.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let first = response(&mut conn).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first
            .to_ascii_lowercase()
            .contains("connection: keep-alive"),
        "{first}"
    );

    let new_pid = upgrade(&gw);
    // Both processes accept for Pingora's 5 s handoff window; then the old one stops.
    assert!(
        gw.wait_log("the new process accepts alone now", Duration::from_secs(15))
            .await,
        "{}",
        gw.log()
    );
    // Well after it let go of its listeners (it used to close its idle connections at
    // that moment), but within its 5 s linger.
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.write_all(request.as_bytes()).await.unwrap();
    let last = response(&mut conn).await;
    assert!(
        last.starts_with("HTTP/1.1 200"),
        "the last request on the old connection failed: {last:?}\n{}",
        gw.log()
    );
    // ...and the client is told to go elsewhere, where the new process answers.
    assert!(
        last.to_ascii_lowercase().contains("connection: close"),
        "{last}"
    );
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let r = post(&client(), &gw.url("/mcp"), LIST).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // With no connection left, the old process exits without waiting out the linger.
    exits_cleanly(gw, Duration::from_secs(10));
    signal(new_pid, "INT");
}

// Several worker threads: the load goes on while this test blocks on the `upgrade`
// command and on the old process's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_under_load_loses_nothing() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&[up.url()], "")).await;
    let url = gw.url("/mcp");
    let before = up.state().await["requests"].as_u64().unwrap();

    // Long SSE streams opened before the upgrade...
    let streams: Vec<_> = (0..2)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let body = json!({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call",
                    "params": {"name": "stream", "arguments": {"delay": 4}}});
                let resp = post(&client(), &url, body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.text().await.unwrap()
            })
        })
        .collect();
    // ...and plain calls all along: half the clients open a new connection for every
    // call, half keep theirs alive from one call to the next.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..16)
        .map(|i| {
            let (url, ok, failed, stop) = (url.clone(), ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::builder()
                    .pool_max_idle_per_host(if i % 2 == 0 { 0 } else { 1 })
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match post(&c, &url, LIST).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            let status = r.status();
                            eprintln!("failed: {status} {}", r.text().await.unwrap_or_default());
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("failed: {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let new_pid = upgrade(&gw);

    // The old process finishes its streams, then exits.
    for s in streams {
        let body = s.await.unwrap();
        assert!(body.contains("\"result\""), "{body}");
    }
    let mut gw = gw;
    let status = gw
        .wait_exit(Duration::from_secs(30))
        .expect("the old gateway did not exit");
    assert!(status.success(), "{status:?}");
    // The new one serves alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let answered = ok.load(Ordering::Relaxed);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the upgrade\nold process:\n{}\nnew process:\n{}",
        gw.log(),
        std::fs::read_to_string(gw.dir.path("upgrade.log")).unwrap_or_default()
    );
    assert!(answered > 0);
    let r = client()
        .get(url.replace("/mcp", "/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Every answer the clients got came from the upstream, and nothing else reached it.
    let seen = up.state().await["requests"].as_u64().unwrap() - before;
    assert_eq!(
        seen,
        answered + 2,
        "upstream saw {seen}, clients got {answered} + 2 streams"
    );
    signal(new_pid, "INT");
}

/// A keep-alive connection whose long answer ends after the drain window (the listeners
/// are closed by then): the answer still arrives whole, a JSON answer says
/// `Connection: close`, and the gateway closes the connection right after each answer
/// instead of leaving the client a connection that fails on its next request.
#[tokio::test]
async fn a_long_answer_that_ends_after_the_drain_window_closes_its_connection() {
    use common::raw::Conn;
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&[up.url()], "")).await;
    let request = |body: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let slow = request(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow","arguments":{"delay":3}}}"#,
    );
    let stream = request(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"stream","arguments":{"delay":3}}}"#,
    );
    // Both connections served one request each first: they are kept-alive ones.
    let mut json_conn = Conn::open(gw.port).await;
    let mut sse_conn = Conn::open(gw.port).await;
    for conn in [&mut json_conn, &mut sse_conn] {
        let first = conn.send(request(LIST).as_bytes()).await.unwrap();
        assert_eq!(first.status, 200);
        assert_eq!(first.header("connection"), Some("keep-alive"));
    }
    assert!(json_conn.write(slow.as_bytes()).await);
    assert!(sse_conn.write(stream.as_bytes()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(gw.pid(), "TERM");
    // drain_delay is 1 s: the answers end about 2 s after the listeners closed.
    let json_answer = json_conn.answer().await.expect("the JSON answer was lost");
    assert_eq!(json_answer.status, 200);
    assert_eq!(json_answer.json()["id"], 1);
    assert_eq!(json_answer.header("connection"), Some("close"));
    assert!(
        json_conn.closed().await,
        "the JSON answer's connection stayed open"
    );
    let sse_answer = sse_conn.answer().await.expect("the SSE answer was lost");
    assert_eq!(sse_answer.status, 200);
    let events = String::from_utf8_lossy(&sse_answer.body).into_owned();
    assert!(events.contains("\"result\""), "{events}");
    assert!(
        sse_conn.closed().await,
        "the stream's connection stayed open"
    );
    exits_cleanly(gw, Duration::from_secs(10));
}

#[tokio::test]
async fn sigterm_closes_idle_kept_alive_connections_and_exits() {
    use common::raw::Conn;
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&[up.url()], "")).await;
    let post = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{LIST}",
        LIST.len()
    );
    // Idle between requests: one after a POST (the gateway's own loop), one after a
    // DELETE (Pingora's app serves that connection from there), one that never sent.
    let mut after_post = Conn::open(gw.port).await;
    let mut after_delete = Conn::open(gw.port).await;
    let mut silent = Conn::open(gw.port).await;
    assert_eq!(after_post.send(post.as_bytes()).await.unwrap().status, 200);
    let delete = b"DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_eq!(after_delete.send(delete).await.unwrap().status, 200);
    signal(gw.pid(), "TERM");
    // Closed once the listeners stop and the drain delay (1 s) is over, well before the
    // keep-alive timeout (75 s) or the grace period (20 s).
    for (name, conn) in [
        ("after a POST", &mut after_post),
        ("after a DELETE", &mut after_delete),
        ("silent", &mut silent),
    ] {
        assert!(
            conn.closed().await,
            "the idle connection {name} stayed open"
        );
    }
    exits_cleanly(gw, Duration::from_secs(10));
}

/// A runtime folder under `base` named `name`, holding one socket (`listening`: kept
/// open, as a running gateway's; else closed, as a killed one leaves it), two minutes old.
fn runtime_folder(
    base: &TempDir,
    name: &str,
    listening: bool,
) -> (std::path::PathBuf, Option<std::os::unix::net::UnixListener>) {
    let dir = base.path(name);
    std::fs::create_dir(&dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.join("gateway.sock")).unwrap();
    let then = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(then)
        .unwrap();
    (dir, listening.then_some(listener))
}

#[tokio::test]
async fn a_start_removes_the_runtime_folders_killed_gateways_left() {
    let runtime = TempDir::new("runtime");
    let (killed, _) = runtime_folder(&runtime, "mcp-gateway-4000001", false);
    let (running, _listener) = runtime_folder(&runtime, "mcp-gateway-4000002", true);
    let up = Upstream::start("u");
    let extra = format!("  runtime_dir: {}\n", runtime.0.display());
    let gw = Gateway::start(
        &yaml(&[up.url()], "").replace("  threads: 2\n", &format!("  threads: 2\n{extra}")),
    )
    .await;
    assert!(!killed.exists(), "a killed gateway's folder is removed");
    assert!(running.exists(), "a running gateway's folder is kept");
    assert!(
        gw.log().contains("removed 1 runtime folder(s)"),
        "{}",
        gw.log()
    );
    let own: Vec<_> = std::fs::read_dir(&runtime.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        own.iter()
            .any(|n| *n == format!("mcp-gateway-{}", gw.pid())),
        "{own:?}"
    );
}
