//! stdio servers through the real binary: `tests/peers/stdio_peer.py` run by the gateway
//! per session or as a shared pool, reached through a route like any server.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const PEER: &str = "tests/peers/stdio_peer.py";
const ADMIN_TOKEN: &str = "stdio-admin-token-0123456789abcdef";

/// The interpreter, by its real path (a version manager's `python3` shim would add
/// variables of its own to the environment the test inspects).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A config with group `io` (one stdio server with `keys`) behind `/mcp`.
fn yaml(keys: &str, extra: &str) -> String {
    format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\n  threads: 2\n  drain_delay: 100ms\n  grace_period: 2s\n  graceful_shutdown_timeout: 1s\n  runtime_dir: {{dir}}\nupstream:\n  groups:\n    io:\n      servers:\n        - id: peer\n          command: [\"{}\", \"{}\"]\n{}\nroutes:\n  - {{path: /mcp, group: io}}\nlogging:\n  level: info\n  format: text\n{extra}",
        python(),
        repo().join(PEER).display(),
        keys.lines()
            .map(|l| format!("          {l}\n"))
            .collect::<String>()
            .trim_end()
    )
}

fn peer_env(dir: &TempDir, more: &str) -> String {
    format!("env: {{PEER_DIR: \"{}\"{more}}}", dir.0.display())
}

fn rpc(id: Value, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

fn init_body() -> String {
    rpc(
        json!(0),
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"roots": {}},
            "clientInfo": {"name": "t", "version": "1"}}),
    )
}

/// `initialize` (and `notifications/initialized`): the session id.
async fn initialize(gw: &Gateway) -> String {
    let resp = post(&client(), &gw.url("/mcp"), init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sid = header(&resp, "mcp-session-id").expect("a session");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["serverInfo"]["name"], "stdio-peer", "{v}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let resp = in_session(gw, &sid, note).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    sid
}

fn in_session(gw: &Gateway, sid: &str, body: String) -> reqwest::RequestBuilder {
    post(&client(), &gw.url("/mcp"), body).header("mcp-session-id", sid)
}

/// The JSON-RPC messages of an answer (one JSON body, or the events of an SSE one).
async fn messages(resp: reqwest::Response) -> Vec<Value> {
    let json = header(&resp, "content-type").is_some_and(|c| c.contains("json"));
    let text = resp.text().await.unwrap();
    if json {
        return vec![serde_json::from_str(&text).unwrap()];
    }
    text.split("\n\n")
        .filter_map(|block| {
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data).unwrap())
        })
        .collect()
}

async fn call(gw: &Gateway, sid: Option<&str>, id: Value, tool: &str, args: Value) -> Vec<Value> {
    let body = rpc(id, "tools/call", json!({"name": tool, "arguments": args}));
    let req = match sid {
        Some(s) => in_session(gw, s, body),
        None => post(&client(), &gw.url("/mcp"), body),
    };
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    messages(resp).await
}

/// The first event of an SSE answer still streaming (the rest stays to be read).
async fn first_event(resp: &mut reqwest::Response) -> Value {
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("more of the stream");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    serde_json::from_str(data).unwrap()
}

fn structured(messages: &[Value]) -> Value {
    let last = messages.last().expect("an answer");
    assert!(last.get("result").is_some(), "{messages:?}");
    last["result"]["structuredContent"].clone()
}

fn alive(pid: u64) -> bool {
    // A zombie is not running: it only waits to be reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

async fn gone(pid: u64, limit: Duration) -> bool {
    eventually(limit, || async move { !alive(pid) }).await
}

/// The pids the peer wrote into `dir`.
fn pids(dir: &Path) -> Vec<u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".pid").and_then(|p| p.parse().ok())
        })
        .collect()
}

fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn each_session_gets_its_own_process_with_a_minimal_environment() {
    let peers = TempDir::new("peers");
    let keys = format!(
        "{}\ncwd: \"{}\"",
        peer_env(&peers, ", EXTRA: yes"),
        peers.0.display()
    );
    let gw = Gateway::start_env(&yaml(&keys, ""), &[("GATEWAY_SECRET", "hunter2")]).await;
    let (a, b) = (initialize(&gw).await, initialize(&gw).await);
    let pa = structured(&call(&gw, Some(&a), json!(1), "echo", json!({"x": 1})).await)["pid"]
        .as_u64()
        .unwrap();
    let pb = structured(&call(&gw, Some(&b), json!(1), "echo", json!({})).await)["pid"]
        .as_u64()
        .unwrap();
    assert_ne!(pa, pb, "one process per session");
    // The same session, the same process; its ids as the client sent them.
    let again = structured(&call(&gw, Some(&a), json!("s-2"), "echo", json!({})).await);
    assert_eq!(
        (again["pid"].as_u64(), &again["seen_id"]),
        (Some(pa), &json!("s-2"))
    );

    // Only the inherited variables and the configured ones; the configured folder.
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(peers.path(&format!("{pa}.env"))).unwrap())
            .unwrap();
    let keys: Vec<&str> = env
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(env["EXTRA"], "yes");
    assert!(env.get("GATEWAY_SECRET").is_none(), "{keys:?}");
    let allowed = [
        "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "PEER_DIR", "EXTRA",
    ];
    // Python may add LC_CTYPE itself (PEP 538).
    assert!(
        keys.iter().all(|k| allowed.contains(k) || *k == "LC_CTYPE"),
        "{keys:?}"
    );
    let cwd = std::fs::read_to_string(peers.path(&format!("{pa}.cwd"))).unwrap();
    assert_eq!(Path::new(&cwd), peers.0.canonicalize().unwrap());
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "mcp_gateway_stdio_processes", "server=\"peer\""),
        2.0
    );

    // DELETE ends the session's process; the session is then unknown.
    let resp = client()
        .delete(gw.url("/mcp"))
        .header("mcp-session-id", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        gone(pa, Duration::from_secs(10)).await,
        "pid {pa} still runs"
    );
    assert!(alive(pb));
    let body = rpc(json!(3), "tools/call", json!({"name": "echo"}));
    expect_refusal(in_session(&gw, &a, body), 404, -32001).await;
    // A request without a session that is not initialize: told what to do.
    let body = rpc(json!(4), "tools/list", json!({}));
    let v = expect_refusal(post(&client(), &gw.url("/mcp"), body), 400, -32600).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per_session"),
        "{v}"
    );
}

#[tokio::test]
async fn progress_and_requests_to_the_client_travel_on_the_request_stream() {
    let gw = Gateway::start(&yaml("", "")).await;
    let sid = initialize(&gw).await;
    let body = rpc(
        json!(5),
        "tools/call",
        json!({"name": "progress", "_meta": {"progressToken": "tok"}}),
    );
    let got = messages(in_session(&gw, &sid, body).send().await.unwrap()).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[..2]
        .iter()
        .all(|m| m["method"] == "notifications/progress" && m["params"]["progressToken"] == "tok"));
    assert_eq!(structured(&got)["token_seen"], "tok");
    assert_eq!(got[2]["id"], 5);

    // The server asks the client (roots/list) in the middle of a call; the client's
    // answer, POSTed in the session, reaches it and the call completes.
    let body = rpc(json!(6), "tools/call", json!({"name": "ask"}));
    let mut resp = in_session(&gw, &sid, body).send().await.unwrap();
    assert_eq!(header(&resp, "content-type").unwrap(), "text/event-stream");
    let ask = first_event(&mut resp).await;
    assert_eq!(ask["method"], "roots/list", "{ask}");
    let answer =
        json!({"jsonrpc": "2.0", "id": ask["id"], "result": {"roots": [{"uri": "file:///r"}]}});
    let r = in_session(&gw, &sid, answer.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let rest = messages(resp).await;
    let done = structured(&rest);
    assert_eq!(done["client_answered"]["roots"][0]["uri"], "file:///r");
}

#[tokio::test]
async fn lines_that_are_not_messages_are_skipped_and_long_ones_capped() {
    let gw = Gateway::start(&yaml("max_line: 2KiB", "")).await;
    let sid = initialize(&gw).await;
    let got = call(&gw, Some(&sid), json!(1), "noise", json!({})).await;
    assert_eq!(structured(&got)["noise"], "made");
    // The `\r\n` line arrived; the 4 KiB one did not.
    let logs: Vec<&Value> = got
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .collect();
    assert_eq!(logs.len(), 1, "{got:?}");
    assert_eq!(logs[0]["params"]["data"], "crlf");
    assert!(
        gw.wait_log("not a JSON-RPC message", Duration::from_secs(5))
            .await
    );
    assert!(
        gw.wait_log("longer than max_line", Duration::from_secs(5))
            .await
    );
    assert!(gw.wait_log("server=peer", Duration::from_secs(5)).await);
    assert!(gw.wait_log("stderr line 0", Duration::from_secs(5)).await);
    // Still in step: the next call is answered.
    let got = call(&gw, Some(&sid), json!(2), "echo", json!({"n": 2})).await;
    assert_eq!(structured(&got)["arguments"]["n"], 2);
}

#[tokio::test]
async fn a_shared_pool_serves_many_clients_with_ids_of_its_own() {
    let keys = "process: shared\ninstances: 2";
    let admin = format!("admin:\n  port: {{admin_port}}\n  token: {ADMIN_TOKEN}\n");
    let gw = Gateway::start(&yaml(keys, &admin)).await;
    // initialize is answered from the pool's own; no session is needed.
    let v = tokio::time::timeout(
        Duration::from_secs(15),
        json_ok(post(&client(), &gw.url("/mcp"), init_body())),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to initialize:\n{}", gw.log()));
    assert_eq!(v["result"]["serverInfo"]["name"], "stdio-peer");
    assert_eq!(v["id"], 0);
    // Many clients, the same ids: each gets its own answer, with its own id back; the
    // process saw ids of the gateway's (of the same JSON type).
    let calls = (0..8).map(|i| {
        let gw = &gw;
        async move {
            let id = if i % 2 == 0 { json!(7) } else { json!("seven") };
            let got = call(gw, None, id.clone(), "echo", json!({"i": i})).await;
            let last = got.last().unwrap().clone();
            (i, id, last)
        }
    });
    let pids = std::sync::Mutex::new(std::collections::HashSet::new());
    let mut seen = Vec::new();
    for (i, id, last) in futures_util::future::join_all(calls).await {
        assert_eq!(last["id"], id);
        let s = &last["result"]["structuredContent"];
        assert_eq!(s["arguments"]["i"], i, "{last}");
        assert_eq!(s["seen_id"].is_string(), id.is_string(), "{last}");
        pids.lock().unwrap().insert(s["pid"].as_u64().unwrap());
        seen.push(format!("{} {}", s["pid"], s["seen_id"]));
    }
    // The clients all used the ids 7 and "seven"; each process saw each id once.
    let distinct: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "{seen:?}");
    // Both instances serve, once both have started.
    let both = eventually(Duration::from_secs(10), || async {
        let got = call(&gw, None, json!(1), "echo", json!({})).await;
        let mut pids = pids.lock().unwrap();
        pids.insert(structured(&got)["pid"].as_u64().unwrap());
        pids.len() == 2
    })
    .await;
    assert!(both, "{pids:?}");
    // The admin API shows the pool.
    let v = gw.admin_api("/api/v1/upstreams", ADMIN_TOKEN).await;
    let stdio = &v["groups"][0]["servers"][0]["stdio"];
    assert_eq!(stdio["process"], "shared", "{v}");
    assert_eq!(stdio["ready"], 2, "{v}");
    assert_eq!(
        stdio["command"][1],
        repo().join(PEER).display().to_string(),
        "{v}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "mcp_gateway_stdio_processes", "server=\"peer\""),
        2.0
    );
    // No per-session stream on a shared server.
    let resp = client()
        .get(gw.url("/mcp"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    // A process that dies mid-call: that call gets an error at once, the pool restarts
    // it, and calls go on.
    let body = rpc(json!(9), "tools/call", json!({"name": "crash"}));
    let resp = post(&client(), &gw.url("/mcp"), body).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("exited"),
        "{v}"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let m = gw.metrics().await;
            metric(&m, "mcp_gateway_stdio_processes", "server=\"peer\"") == 2.0
                && metric(&m, "mcp_gateway_stdio_exits_total", "how=\"exited\"") == 1.0
        })
        .await,
        "{}",
        gw.metrics().await
    );
    for i in 0..4 {
        let got = call(&gw, None, json!(i), "echo", json!({})).await;
        assert!(structured(&got)["pid"].is_u64());
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_request() {
    let gw = Gateway::start(&yaml("", "")).await;
    let sid = initialize(&gw).await;
    let body = rpc(
        json!(42),
        "tools/call",
        json!({"name": "slow", "arguments": {"seconds": 20}}),
    );
    let slow = in_session(&gw, &sid, body).send();
    assert!(tokio::time::timeout(Duration::from_millis(500), slow)
        .await
        .is_err());
    let cancelled = eventually(Duration::from_secs(10), || async {
        let got = call(&gw, Some(&sid), json!(43), "state", json!({})).await;
        structured(&got)["cancelled"] == json!([42])
    })
    .await;
    assert!(cancelled);
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_and_reaped() {
    let peers = TempDir::new("peers");
    let keys = peer_env(&peers, ", PEER_STUBBORN: \"1\"");
    let gw = Gateway::start(&yaml(&keys, "")).await;
    let sid = initialize(&gw).await;
    let [pid] = pids(&peers.0)[..] else {
        panic!("one process")
    };
    let resp = client()
        .delete(gw.url("/mcp"))
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(gone(pid, Duration::from_secs(15)).await);
    assert!(gw.wait_log("sending SIGKILL", Duration::from_secs(5)).await);
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(
                &gw.metrics().await,
                "mcp_gateway_stdio_exits_total",
                "how=\"stopped\"",
            ) == 1.0
        })
        .await
    );
}

#[tokio::test]
async fn servers_that_cannot_start_are_errors_per_request_and_then_unhealthy() {
    // A program that does not exist: a 502 JSON-RPC error naming it, no crash.
    let missing = yaml("", "").replace(
        &format!("[\"{}\"", python()),
        "[\"/nonexistent/mcp-server\"",
    );
    let gw = Gateway::start(&missing).await;
    let resp = post(&client(), &gw.url("/mcp"), init_body())
        .send()
        .await
        .unwrap();
    let v = expect_error(resp, 502, -32603).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot start"),
        "{v}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "mcp_gateway_stdio_exits_total", "how=\"spawn_failed\""),
        1.0
    );
    drop(gw);

    // One that exits at start: each initialize gets an error at once, and the group's
    // breaker takes the server out of rotation.
    let keys = "env: {PEER_CRASH_ON_START: \"3\"}";
    let gw = Gateway::start(&yaml(keys, "")).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let resp = post(&client(), &gw.url("/mcp"), init_body())
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["code"].is_i64(), "{v}");
    }
    assert_eq!(statuses[0], 502, "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 503, "{statuses:?}");
    let m = gw.metrics().await;
    assert!(
        metric(&m, "mcp_gateway_stdio_exits_total", "how=\"exited\"") >= 1.0,
        "{m}"
    );
    drop(gw);

    // Without a breaker: after five exits in a minute the bridge reports the server
    // unhealthy, its health check fails and the group has no server left.
    let hc = "      circuit_breaker: {failure_threshold: 0}\n      health_check: {kind: mcp, interval: 300ms, timeout: 250ms, unhealthy_threshold: 1, healthy_threshold: 1}";
    let crashing = yaml(keys, "").replace("\nroutes:", &format!("\n{hc}\nroutes:"));
    let gw = Gateway::start(&crashing).await;
    let unhealthy = eventually(Duration::from_secs(20), || async {
        let resp = post(&client(), &gw.url("/mcp"), init_body())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"]["code"].is_i64(), "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        status == 503
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("no server")
    })
    .await;
    let m = gw.metrics().await;
    assert!(unhealthy, "{m}\n{}", gw.log());
    assert!(
        metric(&m, "mcp_gateway_stdio_exits_total", "how=\"exited\"") >= 5.0,
        "{m}"
    );
}

#[tokio::test]
async fn max_processes_is_a_cap_and_idle_sessions_end() {
    let peers = TempDir::new("peers");
    let keys = format!(
        "{}\nmax_processes: 1\nidle_timeout: 1s",
        peer_env(&peers, "")
    );
    let gw = Gateway::start(&yaml(&keys, "")).await;
    let first = initialize(&gw).await;
    let resp = post(&client(), &gw.url("/mcp"), init_body())
        .send()
        .await
        .unwrap();
    let v = expect_error(resp, 503, -32603).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_processes"),
        "{v}"
    );
    let [pid] = pids(&peers.0)[..] else {
        panic!("one process")
    };
    // Idle for a second: the process ends, the session with it; a new one can start.
    assert!(gone(pid, Duration::from_secs(15)).await);
    let body = rpc(json!(1), "tools/call", json!({"name": "echo"}));
    expect_refusal(in_session(&gw, &first, body), 404, -32001).await;
    let second = initialize(&gw).await;
    let got = call(&gw, Some(&second), json!(1), "echo", json!({})).await;
    assert!(structured(&got)["pid"].is_u64());
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let peers = TempDir::new("peers");
        let pool = format!(
            "    pool:\n      servers:\n        - id: pool\n          command: [\"{}\", \"{}\"]\n          process: shared\n          {}\n",
            python(),
            repo().join(PEER).display(),
            peer_env(&peers, "")
        );
        let config = yaml(&peer_env(&peers, ""), "").replace(
            "\nroutes:\n",
            &format!("\n{pool}routes:\n  - {{path: /pool, group: pool}}\n"),
        );
        let mut gw = Gateway::start(&config).await;
        initialize(&gw).await;
        initialize(&gw).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                pids(&peers.0).len() >= 3
            })
            .await,
            "{:?}",
            pids(&peers.0)
        );
        let running = pids(&peers.0);
        kill(Pid::from_raw(gw.pid() as i32), signal).unwrap();
        assert!(
            gw.wait_exit(Duration::from_secs(20)).is_some(),
            "{signal} did not end it"
        );
        for pid in running {
            assert!(
                gone(pid, Duration::from_secs(5)).await,
                "{signal}: pid {pid} outlived the gateway"
            );
        }
        // The sockets' folder is gone too (after a graceful stop).
        if signal == Signal::SIGTERM {
            let left: Vec<_> = std::fs::read_dir(&gw.dir.0)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("mcp-gateway-"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

#[tokio::test]
async fn a_reload_starts_new_servers_and_stops_removed_ones() {
    let peers = TempDir::new("peers");
    let config = yaml(&peer_env(&peers, ""), "");
    let gw = Gateway::start(&config).await;
    let sid = initialize(&gw).await;
    let [old] = pids(&peers.0)[..] else {
        panic!("one process")
    };
    // The command changes (an argument more): a new server, the old one's processes end.
    let written = std::fs::read_to_string(gw.config_path()).unwrap();
    let program = format!("\"{}\"]", repo().join(PEER).display());
    assert!(written.contains(&program));
    let more = format!("\"{}\", \"--v2\"]", repo().join(PEER).display());
    std::fs::write(gw.config_path(), written.replace(&program, &more)).unwrap();
    use nix::sys::signal::{kill, Signal};
    kill(nix::unistd::Pid::from_raw(gw.pid() as i32), Signal::SIGHUP).unwrap();
    assert!(gone(old, Duration::from_secs(15)).await);
    let body = rpc(json!(1), "tools/call", json!({"name": "echo"}));
    let resp = in_session(&gw, &sid, body).send().await.unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let fresh = initialize(&gw).await;
    let got = call(&gw, Some(&fresh), json!(1), "echo", json!({})).await;
    assert_ne!(structured(&got)["pid"].as_u64(), Some(old));
}

#[test]
fn bad_stdio_servers_are_listed_with_their_paths() {
    let yaml = "upstream:\n  groups:\n    io:\n      servers:\n        - {id: a, url: \"http://127.0.0.1:1/mcp\", command: [\"x\"]}\n        - {id: b, command: [\"x\"], instances: 3}\n        - {id: c, url: \"http://127.0.0.1:1/mcp\", env: {A: b}}\n        - {id: d, command: [\"x\"], process: shared, instances: 5, max_processes: 2}\n        - {id: e, command: [\"x\"], cwd: /nonexistent/dir}\n        - {id: f, command: [\"\"], idle_timeout: 0s}\n        - {id: g}\n        - {id: h, url: \"sse+unix:///x.sock:/mcp\"}\n        - {id: i, url: \"sse+http://127.0.0.1:1/sse\", env: {A: b}, max_processes: 3}\n        - {id: k, url: \"ws://127.0.0.1:1/mcp\", cwd: /tmp, idle_timeout: 1m}\nroutes:\n  - {path: /mcp, group: io}\n";
    expect_invalid(
        yaml,
        &[
            "upstream.groups.io.servers[0].command: a server has a url or a command, not both",
            "upstream.groups.io.servers[1].instances: only applies to process: shared",
            "upstream.groups.io.servers[2].env: only applies to a server with a command",
            "upstream.groups.io.servers[3].instances: 5 is more than max_processes (2)",
            "upstream.groups.io.servers[4].cwd: \"/nonexistent/dir\" is not a directory",
            "upstream.groups.io.servers[5].command[0]: the program is empty",
            "upstream.groups.io.servers[5].idle_timeout: must be greater than 0",
            "upstream.groups.io.servers[6].url: is required (or a command for a stdio server)",
            "upstream.groups.io.servers[7].url: \"sse+unix:///x.sock:/mcp\": use sse+http:// or sse+https://",
            "upstream.groups.io.servers[8].env: only applies to a server with a command",
            "upstream.groups.io.servers[9].cwd: only applies to a server with a command",
        ],
    );
    // A group's tls settings would not reach a bridged TLS connection: refused.
    let yaml = "upstream:\n  groups:\n    ws:\n      tls: {verify: false}\n      servers:\n        - {id: w, url: \"wss://127.0.0.1:1/mcp\"}\nroutes:\n  - {path: /mcp, group: ws}\n";
    expect_invalid(
        yaml,
        &["upstream.groups.ws.tls: does not apply to server \"w\" (wss)"],
    );
}

#[tokio::test]
async fn a_stdio_server_is_a_virtual_server_member_like_any_other() {
    let web = Upstream::start("web");
    let members = format!(
        "    web:\n      servers: [{{id: w1, url: \"{}\"}}]\nvirtual_servers:\n  - path: /vs\n    members:\n      - {{group: io}}\n      - {{group: web, prefix: w}}\n",
        web.url()
    );
    let config = yaml("", "").replace("\nroutes:", &format!("\n{members}routes:"));
    let gw = Gateway::start(&config).await;
    let url = gw.url("/vs");
    let resp = post(&client(), &url, init_body()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let sid = header(&resp, "mcp-session-id").unwrap();
    let in_vs = |body: String| post(&client(), &url, body).header("mcp-session-id", &sid);
    let v = json_ok(in_vs(rpc(json!(1), "tools/list", json!({})))).await;
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"io__echo") && names.iter().any(|n| n.starts_with("w__")),
        "{names:?}"
    );
    let body = rpc(
        json!(2),
        "tools/call",
        json!({"name": "io__echo", "arguments": {"via": "vs"}}),
    );
    let got = messages(in_vs(body).send().await.unwrap()).await;
    assert_eq!(structured(&got)["arguments"]["via"], "vs");

    // The stdio server's request to the client comes through the virtual server with a
    // sealed id; the client's answer goes back to that process.
    let body = rpc(json!(3), "tools/call", json!({"name": "io__ask"}));
    let mut resp = in_vs(body).send().await.unwrap();
    let ask = first_event(&mut resp).await;
    assert_eq!(ask["method"], "roots/list");
    assert_ne!(ask["id"], "srv-1", "sealed to name the member");
    let answer = json!({"jsonrpc": "2.0", "id": ask["id"], "result": {"roots": []}});
    assert_eq!(
        in_vs(answer.to_string()).send().await.unwrap().status(),
        202
    );
    let rest = messages(resp).await;
    assert_eq!(structured(&rest)["client_answered"], json!({"roots": []}));
}

#[tokio::test]
async fn an_upgrade_hands_over_without_leaving_a_process_behind() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let peers = TempDir::new("peers");
    let mut gw = Gateway::start(&yaml(&peer_env(&peers, ""), "")).await;
    let sid = initialize(&gw).await;
    let [old] = pids(&peers.0)[..] else {
        panic!("one process")
    };
    // The new process takes the listener; the old one stops its stdio processes as it
    // exits, so the old session is gone and a new one gets a process of the new gateway.
    let new_gateway = upgrade(&gw);
    assert!(
        gw.wait_exit(Duration::from_secs(30)).is_some(),
        "the old process stayed"
    );
    assert!(
        gone(old, Duration::from_secs(10)).await,
        "pid {old} outlived its gateway"
    );
    let body = rpc(json!(1), "tools/call", json!({"name": "echo"}));
    let resp = in_session(&gw, &sid, body).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let fresh = initialize(&gw).await;
    let got = call(&gw, Some(&fresh), json!(2), "echo", json!({})).await;
    let new = structured(&got)["pid"].as_u64().unwrap();
    assert_ne!(new, old);
    kill(Pid::from_raw(new_gateway as i32), Signal::SIGINT).unwrap();
    assert!(
        gone(new, Duration::from_secs(10)).await,
        "pid {new} outlived the new gateway"
    );
    assert!(gone(new_gateway as u64, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_shared_pool_serves_a_server_of_the_stateless_era() {
    // A 2026-07-28 server has no initialize: the pool is ready anyway, and requests
    // (server/discover, calls) reach it.
    let keys = "process: shared\nenv: {PEER_MODERN: \"1\"}";
    let gw = Gateway::start(&yaml(keys, "")).await;
    let discover = rpc(json!("d"), "server/discover", json!({}));
    let v = json_ok(post(&client(), &gw.url("/mcp"), discover)).await;
    assert_eq!(v["result"]["supportedVersions"][0], "2026-07-28", "{v}");
    assert_eq!(v["id"], "d");
    let got = call(&gw, None, json!(3), "echo", json!({"era": "modern"})).await;
    assert_eq!(structured(&got)["arguments"]["era"], "modern");
    // A legacy client's initialize goes to the server, which refuses it.
    let v = json_of(post(&client(), &gw.url("/mcp"), init_body())).await;
    assert_eq!(v["error"]["code"], -32601, "{v}");
    assert!(
        gw.wait_log("served as a 2026-07-28 server", Duration::from_secs(5))
            .await
    );
}

#[tokio::test]
async fn a_websocket_or_legacy_sse_client_owns_its_process_until_it_goes() {
    use futures_util::{SinkExt, StreamExt};
    let peers = TempDir::new("peers");
    let gw = Gateway::start(&yaml(&peer_env(&peers, ""), "")).await;

    // Legacy SSE: the stream's session starts a process; closing the stream ends it.
    let mut stream = client().get(gw.url("/mcp/sse")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = stream.chunk().await.unwrap().expect("the endpoint event");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let endpoint = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an endpoint")
        .to_string();
    assert!(
        endpoint.starts_with("/mcp/message?sessionId="),
        "{endpoint}"
    );
    let resp = post(&client(), &gw.url(&endpoint), init_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let init = first_event(&mut stream).await;
    assert_eq!(init["result"]["serverInfo"]["name"], "stdio-peer", "{init}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            pids(&peers.0).len() == 1
        })
        .await,
        "one process for the session"
    );
    let sse_pid = pids(&peers.0)[0];
    assert!(alive(sse_pid));
    drop(stream);
    assert!(
        gone(sse_pid, Duration::from_secs(30)).await,
        "the session's process outlived its stream\n{}",
        gw.log()
    );

    // WebSocket: likewise with the socket.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/mcp", gw.port))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(init_body()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert_eq!(
        answer["result"]["serverInfo"]["name"], "stdio-peer",
        "{answer}"
    );
    let ws_pid = *pids(&peers.0)
        .iter()
        .find(|p| **p != sse_pid && alive(**p))
        .expect("a process for the socket's session");
    ws.close(None).await.unwrap();
    assert!(
        gone(ws_pid, Duration::from_secs(30)).await,
        "the socket's process outlived it"
    );
}
