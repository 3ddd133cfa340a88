//! stdio servers: each `command:` server entry gets a bridge ([`bridge::Bridge`]) on a
//! Unix socket in a folder of this process's own (`config::stdio::socket_dir`, mode 0700),
//! which is the server's URL for the rest of the gateway. [`Stdio`] keeps the bridges in
//! step with the config: started before the listeners open, changed by a reload, stopped
//! (every process through the stop sequence) at shutdown and before an upgraded process
//! takes over.
//!
//! * [`process`]: one peer (a process or a connection): routing what it writes, stop;
//! * [`child`]: starting a stdio process (stdin/stdout/stderr, reaping);
//! * [`lines`]: its output, line by line under a cap;
//! * [`bridge`]: its processes (per session or a shared pool), supervision, health;
//! * [`http`]: the Streamable HTTP side, served with hyper on the socket.

pub mod bridge;
pub mod child;
pub mod http;
pub mod lines;
pub mod process;

use crate::config::{Config, StdioProcess};
use crate::live::Live;
use bridge::Bridge;
use hyper_util::rt::TokioIo;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One bridged server as configured: a stdio program, or a legacy HTTP+SSE server.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub group: String,
    pub id: String,
    /// stdio: the program and its arguments (empty for a legacy SSE server).
    pub command: Vec<String>,
    /// A server with a connection per session: its URL as written (`sse+http://…/sse`,
    /// `ws://…`).
    pub remote: Option<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub process: StdioProcess,
    pub instances: usize,
    pub max_processes: usize,
    pub idle_timeout: Duration,
    pub max_line: usize,
    pub socket: PathBuf,
}

impl Spec {
    pub fn shared(&self) -> bool {
        self.process == StdioProcess::Shared
    }

    /// How logs and errors name it.
    pub fn kind(&self) -> &'static str {
        match self.remote.as_deref() {
            Some(u) if u.starts_with(crate::config::stdio::LEGACY_SSE) => "legacy SSE server",
            Some(_) => "WebSocket server",
            None => "stdio server",
        }
    }

    /// The bridged servers of a config (stdio URLs were assigned at load; a legacy SSE or
    /// WebSocket server's socket follows from its URL, one bridge per URL).
    pub fn all(config: &Config) -> Vec<Spec> {
        let mut out: Vec<Spec> = Vec::new();
        for (group, g) in &config.upstream.groups {
            for s in &g.servers {
                let remote = crate::config::stdio::is_remote(&s.url);
                if s.command.is_empty() && !remote {
                    continue;
                }
                let socket = match remote {
                    true => crate::config::stdio::remote_socket(&s.url),
                    false => s
                        .url
                        .strip_prefix("unix://")
                        .and_then(|r| r.rsplit_once(":/"))
                        .map(|(sock, _)| PathBuf::from(sock)),
                };
                let Some(socket) = socket else { continue };
                if out.iter().any(|o| o.socket == socket) {
                    continue;
                }
                out.push(Spec {
                    group: group.clone(),
                    id: s.id.clone(),
                    command: s.command.clone(),
                    remote: remote.then(|| s.url.clone()),
                    env: s.env.clone(),
                    cwd: s.cwd.clone(),
                    process: s.process,
                    instances: s.instances as usize,
                    max_processes: s.max_processes as usize,
                    idle_timeout: s.idle_timeout.0,
                    max_line: s.max_line.0 as usize,
                    socket,
                });
            }
        }
        out
    }
}

struct Running {
    bridge: Arc<Bridge>,
    accept: Option<tokio::task::JoinHandle<()>>,
}

/// The bridges of this process, by socket path.
#[derive(Default)]
pub struct Stdio {
    /// Bound before the runtime exists (so the first requests wait in the backlog).
    bound: Mutex<HashMap<PathBuf, std::os::unix::net::UnixListener>>,
    running: Mutex<HashMap<PathBuf, Running>>,
}

/// This process's bridges (set once at start), for the admin API.
static REGISTRY: once_cell::sync::OnceCell<Arc<Stdio>> = once_cell::sync::OnceCell::new();

/// The state of the stdio server behind a server URL, if it is one (the admin API).
pub fn status(url: &str) -> Option<serde_json::Value> {
    Some(REGISTRY.get()?.bridge(url)?.status())
}

impl Stdio {
    /// Bind the sockets of the config's stdio servers (at start, before the listeners).
    pub fn prepare(config: &Config) -> Result<Arc<Stdio>, String> {
        let stdio = Arc::new(Stdio::default());
        let _ = REGISTRY.set(stdio.clone());
        let mut bound = stdio.bound.lock().expect("not poisoned");
        for spec in Spec::all(config) {
            bound.insert(spec.socket.clone(), bind(&spec)?);
        }
        drop(bound);
        Ok(stdio)
    }

    /// Start the bridges the config has and this process does not run, stop the others.
    pub async fn sync(&self, config: &Config) {
        let specs = Spec::all(config);
        let gone: Vec<Running> = {
            let mut running = self.running.lock().expect("not poisoned");
            let keep: Vec<&PathBuf> = specs.iter().map(|s| &s.socket).collect();
            let old: Vec<PathBuf> = running
                .keys()
                .filter(|k| !keep.contains(k))
                .cloned()
                .collect();
            old.iter().filter_map(|k| running.remove(k)).collect()
        };
        for r in gone {
            log::info!(
                "stdio server {} (group {}): removed by a reload",
                r.bridge.spec.id,
                r.bridge.spec.group
            );
            stop(r).await;
        }
        for spec in specs {
            if self
                .running
                .lock()
                .expect("not poisoned")
                .contains_key(&spec.socket)
            {
                continue;
            }
            let listener = self
                .bound
                .lock()
                .expect("not poisoned")
                .remove(&spec.socket);
            let listener = match listener.map(Ok).unwrap_or_else(|| bind(&spec)) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("{e}");
                    continue;
                }
            };
            let socket = spec.socket.clone();
            match start(spec, listener) {
                Ok(r) => {
                    self.running.lock().expect("not poisoned").insert(socket, r);
                }
                Err(e) => log::error!("{e}"),
            }
        }
    }

    /// Stop every bridge and its processes (shutdown, upgrade).
    pub async fn stop_all(&self) {
        let all: Vec<Running> = self
            .running
            .lock()
            .expect("not poisoned")
            .drain()
            .map(|(_, r)| r)
            .collect();
        futures::future::join_all(all.into_iter().map(stop)).await;
    }

    /// After the runtimes are gone (a fast shutdown): every process group still there
    /// gets SIGTERM, then SIGKILL 2 s later, so no child outlives the gateway.
    pub fn kill_all_now(&self) {
        // Every process group alive, bridges stopping or not (a grace period that ends
        // before a stop sequence does leaves them here).
        use nix::sys::signal::{killpg, Signal};
        let groups: Vec<nix::unistd::Pid> = process::ALIVE
            .iter()
            .map(|e| nix::unistd::Pid::from_raw(*e.key() as i32))
            .filter(|g| killpg(*g, None).is_ok())
            .collect();
        if groups.is_empty() {
            return;
        }
        for g in &groups {
            let _ = killpg(*g, Signal::SIGTERM);
        }
        let deadline = std::time::Instant::now() + process::STOP_STEP;
        while std::time::Instant::now() < deadline
            && groups.iter().any(|g| killpg(*g, None).is_ok())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for g in &groups {
            let _ = killpg(*g, Signal::SIGKILL);
        }
    }

    /// The bridge behind a server URL (the admin API shows its state).
    pub fn bridge(&self, url: &str) -> Option<Arc<Bridge>> {
        let running = self.running.lock().expect("not poisoned");
        running
            .values()
            .find(|r| {
                let spec = &r.bridge.spec;
                spec.remote.as_deref() == Some(url)
                    || spec.socket.to_str().is_some_and(|s| url.contains(s))
            })
            .map(|r| r.bridge.clone())
    }
}

fn bind(spec: &Spec) -> Result<std::os::unix::net::UnixListener, String> {
    let dir = spec.socket.parent().expect("a socket in a folder");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "stdio server {}: cannot create {}: {e}",
                spec.id,
                dir.display()
            )
        })?;
    let _ = std::fs::remove_file(&spec.socket);
    let listener = std::os::unix::net::UnixListener::bind(&spec.socket).map_err(|e| {
        format!(
            "stdio server {}: cannot listen on {}: {e}",
            spec.id,
            spec.socket.display()
        )
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("stdio server {}: {e}", spec.id))?;
    Ok(listener)
}

fn start(spec: Spec, listener: std::os::unix::net::UnixListener) -> Result<Running, String> {
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| format!("stdio server {}: {e}", spec.id))?;
    let bridge = Bridge::new(Arc::new(spec));
    bridge.start();
    let served = bridge.clone();
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    log::warn!("stdio server {}: accept: {e}", served.spec.id);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let bridge = served.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| http::serve(bridge.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    log::debug!("stdio bridge connection: {e}");
                }
            });
        }
    });
    Ok(Running {
        bridge,
        accept: Some(accept),
    })
}

async fn stop(mut r: Running) {
    if let Some(a) = r.accept.take() {
        a.abort();
    }
    r.bridge.stop().await;
    let socket = &r.bridge.spec.socket;
    let _ = std::fs::remove_file(socket);
    if let Some(dir) = socket.parent() {
        // Empty once the last bridge is gone.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Wait until `rx`'s value passes `f` (or its sender is gone).
pub(crate) async fn until<T>(rx: &mut tokio::sync::watch::Receiver<T>, f: impl Fn(&T) -> bool) {
    loop {
        let done = f(&rx.borrow_and_update());
        if done || rx.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the bridges in step with the config: at start and after every reload.
pub struct Service {
    pub stdio: Arc<Stdio>,
    pub live: Arc<Live>,
}

#[async_trait::async_trait]
impl BackgroundService for Service {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloads = self.live.subscribe();
        loop {
            let config = self.live.loaded().config.clone();
            self.stdio.sync(&config).await;
            tokio::select! {
                r = reloads.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}
