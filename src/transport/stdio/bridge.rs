//! One bridged server: a Unix socket the proxy reaches like any HTTP upstream, and the
//! processes (stdio) or connections (legacy SSE: per session only) behind it.
//!
//! * `per_session`: `initialize` without a session starts a process and names the
//!   session; the session's requests, stream and DELETE go to it; it ends with DELETE,
//!   when idle for `idle_timeout` (no request, no open stream), when it exits (the session
//!   is then unknown: `404`, and the client initializes again), and on shutdown.
//! * `shared`: `instances` processes, each initialized by the gateway and restarted when
//!   it exits; requests are spread over them with ids of their own.
//!
//! Supervision: exits the gateway did not ask for (and failed starts) within a minute
//! delay the next start (exponential, with jitter, up to 30 s); five of them mark the
//! server unhealthy, so its health check (`ping`) gets `503` and the group's health
//! checks and breakers take it out of rotation until it starts cleanly again.

use super::process::{Exit, Proc};
use super::Spec;
use crate::error::code;
use crate::telemetry::metrics::METRICS;
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The version the gateway asks for when it initializes a shared process itself.
pub const INIT_VERSION: &str = "2025-11-25";
/// Exits counted for backoff and health.
const WINDOW: Duration = Duration::from_secs(60);
/// This many exits within the window: unhealthy.
const UNHEALTHY_EXITS: usize = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a shared process may take to answer the gateway's `initialize`.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a client's message goes.
pub enum Route {
    /// The bridge answers it itself with this result.
    Answer(Value),
    /// Taken, nothing to pass on (`202`).
    Accepted,
    /// To this process (`new_session`: the session this `initialize` opens).
    To {
        proc: Arc<Proc>,
        new_session: Option<String>,
    },
}

/// A status, JSON-RPC code and message.
pub type Refusal = (u16, i32, String);

struct Ready {
    proc: Arc<Proc>,
    /// Its answer to the gateway's `initialize`, given to clients that initialize; none
    /// for a 2026-07-28 server, which has no `initialize` (clients' go to it as they are).
    init: Option<Value>,
}

#[derive(Default)]
struct Health {
    exits: VecDeque<Instant>,
    last: Option<String>,
}

pub struct Bridge {
    pub spec: Arc<Spec>,
    sessions: DashMap<String, Arc<Proc>>,
    pool: Vec<ArcSwapOption<Ready>>,
    next: AtomicUsize,
    /// Processes alive (or starting), for `max_processes`.
    running: Arc<AtomicUsize>,
    health: Arc<Mutex<Health>>,
    stop: watch::Sender<bool>,
    /// A slot of the pool got a ready process.
    pool_changed: tokio::sync::Notify,
}

impl Bridge {
    pub fn new(spec: Arc<Spec>) -> Arc<Bridge> {
        let slots = if spec.shared() { spec.instances } else { 0 };
        Arc::new(Bridge {
            pool: (0..slots).map(|_| ArcSwapOption::empty()).collect(),
            spec,
            sessions: DashMap::new(),
            next: AtomicUsize::new(0),
            running: Arc::new(AtomicUsize::new(0)),
            health: Arc::default(),
            stop: watch::channel(false).0,
            pool_changed: tokio::sync::Notify::new(),
        })
    }

    /// Start what runs in the background: the shared pool, the idle sweep.
    pub fn start(self: &Arc<Self>) {
        for slot in 0..self.pool.len() {
            let bridge = self.clone();
            tokio::spawn(async move { bridge.supervise(slot).await });
        }
        if !self.spec.shared() {
            let bridge = self.clone();
            tokio::spawn(async move { bridge.sweep().await });
        }
    }

    /// How errors and logs name the server: `stdio server fs`, `legacy SSE server old`.
    fn name(&self) -> String {
        format!("{} {}", self.spec.kind(), self.spec.id)
    }

    /// What serves one session.
    fn peer(&self) -> &'static str {
        if self.spec.remote.is_some() {
            "connection"
        } else {
            "process"
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Exits the gateway did not ask for in the last minute, and the last one's reason.
    fn recent_exits(&self) -> (usize, Option<String>) {
        let mut h = self.health.lock().expect("not poisoned");
        while h.exits.front().is_some_and(|t| t.elapsed() > WINDOW) {
            h.exits.pop_front();
        }
        (h.exits.len(), h.last.clone())
    }

    /// How long to wait before the next start (none after a clean history).
    fn backoff(&self) -> Option<(Duration, String)> {
        let (n, last) = self.recent_exits();
        if n == 0 {
            return None;
        }
        let since = self
            .health
            .lock()
            .expect("not poisoned")
            .exits
            .back()
            .map(Instant::elapsed)
            .unwrap_or_default();
        let base = FIRST_BACKOFF
            .saturating_mul(1 << (n - 1).min(16) as u32)
            .min(MAX_BACKOFF);
        let wait = base.checked_sub(since)?;
        Some((wait, last.unwrap_or_default()))
    }

    /// Why the server is unhealthy: too many exits lately.
    pub fn unhealthy(&self) -> Option<String> {
        let (n, last) = self.recent_exits();
        (n >= UNHEALTHY_EXITS).then(|| {
            format!(
                "{} ended {n} times in the last {}s (last: {}); the gateway keeps restarting it with a backoff",
                self.name(),
                WINDOW.as_secs(),
                last.unwrap_or_default()
            )
        })
    }

    fn record_exit(health: &Mutex<Health>, why: &str) {
        let mut h = health.lock().expect("not poisoned");
        h.exits.push_back(Instant::now());
        h.last = Some(why.to_string());
    }

    fn publish_backoff(&self, wait: Duration) {
        METRICS
            .stdio_backoff_seconds
            .with_label_values(&[&self.spec.group, &self.spec.id])
            .set(wait.as_secs_f64().ceil() as i64);
    }

    /// Start one process (or, for a legacy SSE server, one connection, with the headers
    /// of the request that opens the session), within `max_processes`.
    fn spawn(&self, headers: &http::HeaderMap) -> Result<Arc<Proc>, Refusal> {
        let max = self.spec.max_processes;
        if self.running.fetch_add(1, Ordering::AcqRel) >= max {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err((
                503,
                code::INTERNAL_ERROR,
                format!(
                    "{} already runs {max} processes (max_processes); try again when a session ends",
                    self.name()
                ),
            ));
        }
        let running = self.running.clone();
        let health = self.health.clone();
        // What counts towards the backoff and health: for a shared pool every exit the
        // gateway did not ask for; per session, a process that ended before it answered
        // anything (it cannot start), not one session's crash.
        let shared = self.spec.shared();
        let on_exit = move |exit: &Exit| {
            running.fetch_sub(1, Ordering::AcqRel);
            if !exit.stopped && (shared || !exit.answered) {
                Self::record_exit(&health, &format!("exited: {}", exit.why));
            }
        };
        match self.spec.remote.as_deref() {
            Some(u) if u.starts_with(crate::config::stdio::LEGACY_SSE) => {
                return Ok(crate::transport::legacy_sse::connect(
                    &self.spec, headers, on_exit,
                ))
            }
            Some(_) => {
                return Ok(crate::transport::websocket::connect(
                    &self.spec, headers, on_exit,
                ))
            }
            None => {}
        }
        Proc::spawn(&self.spec, on_exit).map_err(|e| {
            self.running.fetch_sub(1, Ordering::AcqRel);
            Self::record_exit(&self.health, &e.0);
            log::warn!("{}", e.0);
            (502, code::INTERNAL_ERROR, e.0)
        })
    }

    /// Where one client message goes.
    pub async fn route(
        &self,
        message: &Value,
        session: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Result<Route, Refusal> {
        let method = message.get("method").and_then(Value::as_str);
        if self.stopped() {
            return Err((
                503,
                code::INTERNAL_ERROR,
                format!("{} is stopping", self.name()),
            ));
        }
        if method == Some("ping") && session.is_none() {
            // The health check: the bridge is up; is the server starting cleanly?
            if let Some(why) = self.unhealthy() {
                return Err((503, code::INTERNAL_ERROR, why));
            }
            if !self.spec.shared() {
                return Ok(Route::Answer(json!({})));
            }
        }
        if self.spec.shared() {
            return self.route_shared(message, method).await;
        }
        if let Some(sid) = session {
            let proc = self.session(sid).ok_or_else(|| {
                (
                    404,
                    code::SESSION_NOT_FOUND,
                    format!(
                        "session not found: its {} has ended; start a new session with initialize",
                        self.peer()
                    ),
                )
            })?;
            return Ok(Route::To {
                proc,
                new_session: None,
            });
        }
        if method != Some("initialize") {
            return Err((
                400,
                code::INVALID_REQUEST,
                format!(
                    "{} runs one process (or connection) per session (process: per_session): begin with initialize; stateless clients need process: shared",
                    self.name()
                ),
            ));
        }
        if let Some((wait, last)) = self.backoff() {
            self.publish_backoff(wait);
            return Err((
                503,
                code::INTERNAL_ERROR,
                format!(
                    "{} is restarting in {}ms after it ended (last: {last})",
                    self.name(),
                    wait.as_millis()
                ),
            ));
        }
        self.publish_backoff(Duration::ZERO);
        let proc = self.spawn(headers)?;
        let sid = new_session_id();
        self.sessions.insert(sid.clone(), proc.clone());
        Ok(Route::To {
            proc,
            new_session: Some(sid),
        })
    }

    async fn route_shared(&self, message: &Value, method: Option<&str>) -> Result<Route, Refusal> {
        let is_request = method.is_some() && message.get("id").is_some();
        if !is_request {
            // Many clients share the process: their notifications (initialized,
            // cancelled by a client's own id) and answers name nothing it could tell apart.
            return Ok(Route::Accepted);
        }
        let ready = self.ready().await.map_err(|why| {
            (
                503,
                code::INTERNAL_ERROR,
                format!("{} has no process ready: {why}", self.name()),
            )
        })?;
        if let (Some("initialize"), Some(init)) = (method, &ready.init) {
            return Ok(Route::Answer(init.clone()));
        }
        Ok(Route::To {
            proc: ready.proc.clone(),
            new_session: None,
        })
    }

    /// A ready process of the pool; while one is starting (not in backoff), wait for it.
    async fn ready(&self) -> Result<Arc<Ready>, String> {
        let deadline = tokio::time::Instant::now() + INIT_TIMEOUT;
        loop {
            let changed = self.pool_changed.notified();
            if let Some(r) = self.pick() {
                return Ok(r);
            }
            if let Some((wait, last)) = self.backoff() {
                return Err(format!(
                    "restarting in {}ms (last: {last})",
                    wait.as_millis()
                ));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(format!("none started in {}s", INIT_TIMEOUT.as_secs()));
            }
        }
    }

    /// The next ready process of the pool, round robin.
    fn pick(&self) -> Option<Arc<Ready>> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .filter_map(|k| self.pool[(start + k) % n].load_full())
            .find(|r| r.proc.alive())
    }

    pub fn session(&self, sid: &str) -> Option<Arc<Proc>> {
        let proc = self.sessions.get(sid)?.clone();
        if proc.alive() {
            Some(proc)
        } else {
            self.sessions.remove(sid);
            None
        }
    }

    /// DELETE: `Some(status)`, or `None` for an unknown session.
    pub async fn end_session(&self, sid: Option<&str>) -> Option<u16> {
        if self.spec.shared() {
            return Some(405);
        }
        let (_, proc) = self.sessions.remove(sid?)?;
        tokio::spawn(async move { proc.stop().await });
        Some(200)
    }

    /// A session whose `initialize` failed: its process goes.
    pub async fn abandon(&self, sid: Option<&str>) {
        if let Some((_, proc)) = sid.and_then(|s| self.sessions.remove(s)) {
            tokio::spawn(async move { proc.stop().await });
        }
    }

    /// Sessions no request or stream used for `idle_timeout` end, and the dead are forgotten.
    async fn sweep(self: Arc<Self>) {
        let idle = self.spec.idle_timeout;
        let tick = (idle / 10).clamp(Duration::from_millis(200), Duration::from_secs(30));
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = super::until(&mut stop, |s| *s) => return,
            }
            let now = crate::clock::now_ms();
            let idle_ms = idle.as_millis() as u64;
            self.sessions.retain(|sid, proc| {
                if !proc.alive() {
                    return false;
                }
                let quiet = now.saturating_sub(proc.last_used.load(Ordering::Relaxed));
                let in_use = proc.in_flight() > 0 || proc.streaming.load(Ordering::Relaxed);
                if in_use || quiet < idle_ms {
                    return true;
                }
                log::info!(
                    "{}: session {}… idle for {:?}, its process ends",
                    self.name(),
                    &sid[..8.min(sid.len())],
                    idle
                );
                let proc = proc.clone();
                tokio::spawn(async move { proc.stop().await });
                false
            });
        }
    }

    /// One slot of the shared pool: started, initialized, restarted when it exits.
    async fn supervise(self: Arc<Self>, slot: usize) {
        let mut stop = self.stop.subscribe();
        loop {
            if self.stopped() {
                return;
            }
            if let Some((wait, _)) = self.backoff() {
                let wait = jitter(wait);
                self.publish_backoff(wait);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = super::until(&mut stop, |s| *s) => return,
                }
            }
            self.publish_backoff(Duration::ZERO);
            let proc = match self.spawn(&http::HeaderMap::new()) {
                Ok(p) => p,
                Err(_) => continue,
            };
            let init = tokio::select! {
                r = initialize(&proc) => r,
                _ = super::until(&mut stop, |s| *s) => Err("stopping".into()),
            };
            match init {
                Ok(init) => {
                    self.pool[slot].store(Some(Arc::new(Ready {
                        proc: proc.clone(),
                        init,
                    })));
                    self.pool_changed.notify_waiters();
                }
                Err(why) => {
                    log::warn!("{}: initialize failed: {why}", self.name());
                    if proc.alive() {
                        Self::record_exit(&self.health, &format!("initialize failed: {why}"));
                    }
                    proc.stop().await;
                    continue;
                }
            }
            let mut exited = proc.exited();
            tokio::select! {
                _ = super::until(&mut exited, Option::is_some) => {
                    self.pool[slot].store(None);
                }
                _ = super::until(&mut stop, |s| *s) => {
                    self.pool[slot].store(None);
                    proc.stop().await;
                    return;
                }
            }
        }
    }

    /// Stop everything: no new process, every process through the stop sequence.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let mut procs: Vec<Arc<Proc>> = self.sessions.iter().map(|e| e.value().clone()).collect();
        self.sessions.clear();
        for slot in &self.pool {
            if let Some(r) = slot.swap(None) {
                procs.push(r.proc.clone());
            }
        }
        futures::future::join_all(procs.iter().map(|p| p.stop())).await;
        // A supervisor between spawn and store: let it see the flag and stop its own.
        while self.running.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        METRICS
            .stdio_backoff_seconds
            .with_label_values(&[&self.spec.group, &self.spec.id])
            .set(0);
    }

    /// What the admin API shows.
    pub fn status(&self) -> Value {
        let (exits, last) = self.recent_exits();
        json!({
            "kind": self.spec.kind(),
            "command": self.spec.command,
            "process": if self.spec.shared() { "shared" } else { "per_session" },
            "processes": self.running.load(Ordering::Relaxed),
            "sessions": self.sessions.len(),
            "ready": self.pool.iter().filter(|s| s.load().as_ref().is_some_and(|r| r.proc.alive())).count(),
            "exits_last_minute": exits,
            "last_exit": last,
            "unhealthy": self.unhealthy(),
        })
    }
}

/// The gateway's own `initialize` of a shared process, then `notifications/initialized`.
/// A process that answers it with an error is a 2026-07-28 server (there is no
/// `initialize` in that era; its clients begin with `server/discover`): ready as it is.
async fn initialize(proc: &Arc<Proc>) -> Result<Option<Value>, String> {
    let message = json!({"jsonrpc": "2.0", "id": "mcp-gateway-init", "method": "initialize",
        "params": {"protocolVersion": INIT_VERSION, "capabilities": {},
            "clientInfo": {"name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION")}}});
    let (mut pending, mut rx) = proc.request(&message, false)?;
    let answer = tokio::time::timeout(INIT_TIMEOUT, async {
        while let Some(m) = rx.recv().await {
            if m.get("method").is_none() {
                return Some(m);
            }
        }
        None
    })
    .await
    .map_err(|_| format!("no answer in {}s", INIT_TIMEOUT.as_secs()))?
    .ok_or("the process went away")?;
    pending.answered();
    if let Some(e) = answer.get("error") {
        log::info!(
            "{} {}: it answered initialize with an error ({e}): served as a 2026-07-28 server, without one",
            proc.spec().kind(),
            proc.spec().id
        );
        return Ok(None);
    }
    proc.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    Ok(Some(answer.get("result").cloned().unwrap_or(Value::Null)))
}

/// ±25 %.
fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

fn new_session_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
