//! Test harness: real processes on free loopback ports.
//!
//! * [`Upstream`]: `tests/peers/mock_upstream.py` (a scriptable MCP server);
//! * [`Gateway`]: the real `mcp-gateway` binary with a generated YAML config, ready
//!   once `/readiness` answers 200;
//! * [`tls`]: a test CA, a client trusting it and a gateway with a TLS listener;
//! * [`raw`]: raw HTTP/1.1 requests on a fresh connection;
//! * [`redis_server`]: a real `redis-server`.
//!
//! Every process is killed when its handle drops.
#![allow(dead_code)]

pub mod raw;
pub mod redis_server;
pub mod tls;

#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use redis_server::RedisServer;
#[allow(unused_imports)]
pub use tls::*;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-gateway");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The YAML config files shipped in `conf/`, `examples/` and `k8s/config/`.
pub fn config_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["conf", "examples", "k8s/config"] {
        let Ok(entries) = std::fs::read_dir(repo().join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                files.push(p);
            }
        }
    }
    files
}

/// A free port, never one this process was handed before: the kernel may hand out a
/// port again as soon as the listener that found it is closed, so a test asking for a
/// gateway port and a dead upstream's (or an admin port) could otherwise get the same one.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A free port other than `taken`, which may have come from outside [`free_port`] (a
/// port given in the environment).
pub fn free_port_besides(taken: u16) -> u16 {
    loop {
        let port = free_port();
        if port != taken {
            return port;
        }
    }
}

/// Poll `check` every 50 ms for up to `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A URL on the admin service of the gateway whose config [`Gateway::prepare`] wrote in
/// `dir` (its port read back from that config).
pub fn admin_url_in(dir: &TempDir, path: &str) -> String {
    let yaml = std::fs::read_to_string(dir.path("gateway.yaml")).unwrap();
    let port = yaml
        .split("\nadmin:\n")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.trim().strip_prefix("port: ")))
        .expect("the config has an admin block with a port");
    format!("http://127.0.0.1:{}{path}", port.trim())
}

/// A fresh temporary directory (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n: u64 = rand_u64();
        let p = std::env::temp_dir().join(format!("mcp-gw-{tag}-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// The mock upstream MCP server.
pub struct Upstream {
    child: Child,
    /// `127.0.0.1:PORT`, or the socket path for `--unix`.
    pub addr: String,
    pub id: String,
}

impl Upstream {
    pub fn start(id: &str) -> Upstream {
        Self::start_with(id, &[])
    }

    pub fn start_with(id: &str, extra: &[&str]) -> Upstream {
        let mut args = vec!["--id", id];
        args.extend_from_slice(extra);
        Self::start_peer("mock_upstream.py", &args)
    }

    /// Another peer of tests/peers that speaks like the mock (`--port 0`, prints
    /// `listening on HOST:PORT`, `GET /_state`): e.g. `chaos_upstream.py`.
    pub fn start_peer(script: &str, args: &[&str]) -> Upstream {
        let script = repo().join("tests/peers").join(script);
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed to run the mock upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("mock upstream said {line:?}"))
            .to_string();
        let id = args
            .iter()
            .position(|a| *a == "--id")
            .and_then(|i| args.get(i + 1))
            .map_or_else(|| script.to_string_lossy().into_owned(), |s| s.to_string());
        Upstream { child, addr, id }
    }

    /// Start on a given port (e.g. to bring a killed replica back at its address).
    pub fn start_on(id: &str, port: u16) -> Upstream {
        Self::start_with(id, &["--port", &port.to_string()])
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill the process now (its port stops accepting connections).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The upstream's counters (`requests`, `cancelled`, `completed_streams`, ...).
    pub async fn state(&self) -> serde_json::Value {
        reqwest::get(format!("http://{}/_state", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real gateway binary.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl Gateway {
    /// Start with `yaml`, where `{port}` is replaced by a free port.
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_env(yaml, &[]).await
    }

    pub async fn start_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let mut gw = Self::start_unready(yaml, env).await;
        gw.wait_ready().await;
        gw
    }

    /// Start and wait until it answers `/liveness` (readiness may still be false).
    /// A port taken between choosing it and binding it (by a test running in parallel)
    /// means another try with new ports.
    pub async fn start_unready(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        for attempt in 1..=3 {
            let (config, dir, port) = Self::prepare(yaml, env);
            let child = Self::spawn(&config, &dir, env, &[]);
            let mut gw = Gateway { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(30);
            let url = gw.url("/liveness");
            while Instant::now() < deadline {
                if let Ok(Some(status)) = gw.child.try_wait() {
                    let log = gw.log();
                    if attempt < 3 && log.to_lowercase().contains("address already in use") {
                        break;
                    }
                    panic!("gateway exited with {status}:\n{log}");
                }
                if reqwest::get(&url).await.is_ok() {
                    return gw;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if gw.child.try_wait().ok().flatten().is_none() {
                panic!("gateway not live within 30s:\n{}", gw.log());
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Wait (up to `limit`) until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        self.wait_log_count(needle, 1, limit).await
    }

    /// Wait (up to `limit`) until the log contains `needle` at least `n` times.
    pub async fn wait_log_count(&self, needle: &str, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Write the config (with `{port}` / `{dir}` filled in) to a fresh directory.
    pub fn prepare(yaml: &str, env: &[(&str, &str)]) -> (PathBuf, TempDir, u16) {
        let port = env
            .iter()
            .find(|(k, _)| *k == "MCP_GATEWAY_PORT")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(free_port);
        let dir = TempDir::new("gw");
        let config = dir.path("gateway.yaml");
        let yaml = yaml
            .replace("{port}", &port.to_string())
            .replace("{admin_port}", &free_port_besides(port).to_string())
            .replace("{dir}", &dir.0.to_string_lossy());
        // Each gateway's admin service on a free port of its own.
        let yaml = if yaml.contains("\nadmin:") {
            yaml
        } else {
            format!("{yaml}\nadmin:\n  port: {}\n", free_port_besides(port))
        };
        let yaml = if yaml.contains("pid_file") {
            yaml
        } else {
            // Keep each test's Pingora files apart.
            yaml.replacen(
                "server:\n",
                &format!(
                    "server:\n  pid_file: {}\n  upgrade_sock: {}\n",
                    dir.path("gw.pid").display(),
                    dir.path("upgrade.sock").display()
                ),
                1,
            )
        };
        std::fs::write(&config, yaml).unwrap();
        (config, dir, port)
    }

    /// Start the binary on `config` with extra arguments; output goes to `gateway.log`.
    pub fn spawn(config: &Path, dir: &TempDir, env: &[(&str, &str)], args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path("gateway.log"))
            .unwrap();
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://127.0.0.1:{}/readiness", self.port);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway not ready within 30s:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The config file the gateway runs on (placeholders filled in).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path("gateway.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (up to `limit`) for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The admin service's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET` an admin API path with the bearer `token`, as JSON.
    pub async fn admin_api(&self, path: &str, token: &str) -> serde_json::Value {
        json_of(client().get(self.admin_url(path)).bearer_auth(token)).await
    }

    /// A URL on the admin service (its port read back from the config written).
    pub fn admin_url(&self, path: &str) -> String {
        admin_url_in(&self.dir, path)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path("gateway.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One upstream (`u`) and a gateway in front of it, `extra` added to its config.
pub async fn one_upstream(extra: &str) -> (Upstream, Gateway) {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config_for(&[up.url()], extra)).await;
    (up, gw)
}

/// A gateway config with one group `default` of the given upstream URLs, route-less
/// (so `/mcp` serves it), plus `extra` YAML appended at top level.
pub fn config_for(urls: &[String], extra: &str) -> String {
    let mut servers = String::new();
    for (i, u) in urls.iter().enumerate() {
        servers.push_str(&format!("        - {{id: s{}, url: \"{u}\"}}\n", i + 1));
    }
    format!(
        "server:\n  host: 127.0.0.1\n  port: {{port}}\n  threads: 2\nupstream:\n  groups:\n    default:\n      servers:\n{servers}logging:\n  level: info\n  format: text\n{extra}"
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POST a JSON-RPC body to `url` with MCP's usual headers.
pub fn post(
    c: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    c.post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
}

/// Send `req`; its answer must be a 200 (the body shown if not), read as JSON.
pub async fn json_ok(req: reqwest::RequestBuilder) -> serde_json::Value {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

/// Send `req` and read its answer as JSON, whatever its status.
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// The mock upstream's description of what it received (the JSON-RPC `result`).
pub async fn received(resp: reqwest::Response) -> serde_json::Value {
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v["result"].clone()
}

/// Send `req`; the answer must be the gateway's JSON-RPC error with this status and code.
pub async fn expect_refusal(
    req: reqwest::RequestBuilder,
    status: u16,
    code: i64,
) -> serde_json::Value {
    expect_error(req.send().await.unwrap(), status, code).await
}

/// Assert a JSON-RPC error response from the gateway with this status and code.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: i64) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

/// [`expect_error`], and the message names `needle` (e.g. the group, `"default"`).
pub async fn expect_error_naming(
    resp: reqwest::Response,
    status: u16,
    code: i64,
    needle: &str,
) -> serde_json::Value {
    let v = expect_error(resp, status, code).await;
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {v}");
    v
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// Run `--validate` on `yaml`: the exit code and what it printed on stderr.
pub fn validate(yaml: &str) -> (Option<i32>, String) {
    let dir = TempDir::new("validate");
    let config = dir.path("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["--validate", "-c", config.to_str().unwrap()])
        .env_remove("MCP_GATEWAY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--validate` refuses `yaml` (exit 64) and names every one of `problems`.
pub fn expect_invalid(yaml: &str, problems: &[&str]) {
    let (code, err) = validate(yaml);
    assert_eq!(code, Some(64), "{err}");
    for needle in problems {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

/// SHA-256 of `data` in hex (computed by Python, so the test trusts no code of ours).
/// The tool names of a `tools/list` answer.
pub fn tool_names(v: &serde_json::Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A response header as text (`None` when absent).
#[allow(dead_code)]
pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// `NAME.pem` and `NAME.key` in `dir` (P-256, by `openssl`): signed by `ca` (`CA.pem`
/// and `CA.key` in `dir`), or self-signed; `ext`: `-addext` values.
#[allow(dead_code)]
pub fn make_cert(dir: &TempDir, name: &str, subject: &str, ca: Option<&str>, ext: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(&dir.0)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ])
        .args(["-subj", subject]);
    if let Some(ca) = ca {
        cmd.args(["-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key")]);
    }
    for e in ext {
        cmd.args(["-addext", e]);
    }
    let out = cmd
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The upgrade: the same binary takes over with `-u` (`mcp-gateway upgrade`), and the
/// old process gets SIGQUIT. Returns the new process's PID.
pub fn upgrade(gw: &Gateway) -> u32 {
    let old_pid = gw.pid();
    // The new gateway (a daemon) keeps the command's output open: send it to a file.
    let log = std::fs::File::create(gw.dir.path("upgrade.log")).unwrap();
    let status = Command::new(BIN)
        .args(["upgrade", "-c", gw.config_path().to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let upgrade_log = std::fs::read_to_string(gw.dir.path("upgrade.log")).unwrap();
    assert!(status.success(), "{upgrade_log}\n{}", gw.log());
    assert!(upgrade_log.contains("upgraded: PID"), "{upgrade_log}");
    let new_pid: u32 = std::fs::read_to_string(gw.dir.path("gw.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, old_pid);
    new_pid
}
