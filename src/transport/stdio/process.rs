//! One bridged server's peer (a stdio process, `child`; a legacy SSE connection,
//! `transport::legacy_sse`): the messages it is sent, in order, and where what it writes
//! goes, its stop sequence and its end.
//!
//! What the process writes goes to the request it answers (by id), to the request whose
//! progress token it names, else to the request in flight that can take a stream, else to
//! the session's GET stream (kept in a bounded backlog until one is open).

use super::Spec;
use crate::telemetry::metrics::METRICS;
use bytes::Bytes;
use dashmap::DashMap;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Messages for the GET stream kept while none is open.
const BACKLOG: usize = 1000;
/// Lines waiting to be written to stdin.
const STDIN_QUEUE: usize = 1024;
/// Each step of the stop sequence: stdin closed, then SIGTERM, then SIGKILL.
pub const STOP_STEP: Duration = Duration::from_secs(2);

/// A message for a request in flight: the process's answer ends it.
pub type ToRequest = mpsc::UnboundedSender<Value>;

/// Why a process is gone, for the errors of what it left unanswered.
#[derive(Clone, Debug)]
pub struct Exit {
    pub why: String,
    /// The gateway ended it (DELETE, idle, reload, shutdown).
    pub stopped: bool,
    /// It had answered something before (it started cleanly).
    pub answered: bool,
}

/// The process groups of every stdio process alive, whatever bridge it belongs to: what
/// a last-moment kill (the process ending, `Stdio::kill_all_now`) must reach.
pub static ALIVE: once_cell::sync::Lazy<DashMap<u32, ()>> =
    once_cell::sync::Lazy::new(DashMap::new);

struct InFlight {
    to: ToRequest,
    /// The client takes an SSE stream: the process's other messages may go on it.
    streams: bool,
}

pub struct Proc {
    spec: Arc<Spec>,
    pub pid: u32,
    stdin: mpsc::Sender<Bytes>,
    /// Requests in flight, by the JSON text of the id the process got.
    pending: DashMap<String, InFlight>,
    /// Progress tokens of requests in flight (JSON text) → their id's JSON text.
    progress: DashMap<String, String>,
    /// The request in flight that takes this process's other messages.
    current: Mutex<Option<String>>,
    get_stream: Mutex<Option<mpsc::Sender<Bytes>>>,
    backlog: Mutex<VecDeque<Bytes>>,
    stopping: watch::Sender<bool>,
    exited: watch::Receiver<Option<Exit>>,
    /// Milliseconds of `crate::clock` at the last request, answer or stream.
    pub last_used: AtomicU64,
    /// A GET stream is open (the session is in use even with no request).
    pub streaming: AtomicBool,
    next_id: AtomicU64,
    /// It has answered a request.
    answered: AtomicBool,
    /// The headers of the client's latest request, for a transport that passes them on
    /// (a legacy SSE server's POSTs).
    carried: Mutex<http::HeaderMap>,
}

/// The far side of a [`Proc`], for the transport that carries it (a child process's
/// pipes, a legacy SSE connection): the messages to write, the stop flag, and the end.
pub struct Io {
    pub proc: Arc<Proc>,
    /// Messages to deliver, in order, each one JSON line ending in `\n`.
    pub input: mpsc::Receiver<Bytes>,
    /// Set when the gateway wants it gone.
    pub stop: watch::Receiver<bool>,
    exit: watch::Sender<Option<Exit>>,
}

impl Io {
    /// The transport is gone (`why`): whatever it left unanswered gets an error at once,
    /// then `on_exit` runs and [`Proc::exited`] fires.
    pub fn finish(self, why: String, on_exit: impl FnOnce(&Exit)) {
        let proc = &self.proc;
        ALIVE.remove(&proc.pid);
        let stopped = *proc.stopping.borrow();
        let answered = proc.answered.load(Ordering::Relaxed);
        let exit = Exit {
            why,
            stopped,
            answered,
        };
        let how = if stopped { "stopped" } else { "exited" };
        if proc.pid != 0 {
            let labels = [&proc.spec.group, &proc.spec.id];
            METRICS.stdio_processes.with_label_values(&labels).dec();
            METRICS
                .stdio_exits
                .with_label_values(&[labels[0], labels[1], how])
                .inc();
        }
        log::log!(
            if stopped {
                log::Level::Info
            } else {
                log::Level::Warn
            },
            "{} {} (group {}): {} {how} ({})",
            proc.spec.kind(),
            proc.spec.id,
            proc.spec.group,
            proc.name(),
            exit.why
        );
        // Recorded first (a supervisor woken by the end sees it in its backoff), then
        // gone (`alive()` is false for whoever reads the errors that follow).
        on_exit(&exit);
        let _ = self.exit.send(Some(exit.clone()));
        proc.fail_all(&exit);
    }
}

/// What a connection-carried peer (legacy SSE, WebSocket) is driven with: the peer,
/// the messages to deliver in order, the stop flag.
pub struct Link {
    pub proc: Arc<Proc>,
    pub input: mpsc::Receiver<Bytes>,
    pub stop: watch::Receiver<bool>,
}

impl Proc {
    /// A peer carried by a connection, not a process: `drive` runs the connection and
    /// says what ended it; then what it left unanswered gets its error and `on_exit` runs.
    pub fn connection<Fut>(
        spec: &Arc<Spec>,
        on_exit: impl FnOnce(&Exit) + Send + 'static,
        drive: impl FnOnce(Link) -> Fut,
    ) -> Arc<Proc>
    where
        Fut: std::future::Future<Output = String> + Send + 'static,
    {
        let (proc, mut io) = Proc::new(spec, 0);
        let link = Link {
            proc: proc.clone(),
            input: std::mem::replace(&mut io.input, mpsc::channel(1).1),
            stop: io.stop.clone(),
        };
        let ended = drive(link);
        tokio::spawn(async move {
            let why = ended.await;
            io.finish(why, on_exit);
        });
        proc
    }

    /// A peer with nothing behind it yet: the transport drives the returned [`Io`].
    /// `pid`: the child's process (and process group) id, 0 for a connection.
    pub fn new(spec: &Arc<Spec>, pid: u32) -> (Arc<Proc>, Io) {
        let (stdin_tx, input) = mpsc::channel::<Bytes>(STDIN_QUEUE);
        let (stopping, stop) = watch::channel(false);
        let (exit, exited) = watch::channel(None);
        let proc = Arc::new(Proc {
            spec: spec.clone(),
            pid,
            stdin: stdin_tx,
            pending: DashMap::new(),
            progress: DashMap::new(),
            current: Mutex::new(None),
            get_stream: Mutex::new(None),
            backlog: Mutex::new(VecDeque::new()),
            stopping,
            exited,
            last_used: AtomicU64::new(crate::clock::now_ms()),
            streaming: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            answered: AtomicBool::new(false),
            carried: Mutex::new(http::HeaderMap::new()),
        });
        if pid != 0 {
            ALIVE.insert(pid, ());
        }
        let io = Io {
            proc: proc.clone(),
            input,
            stop,
            exit,
        };
        (proc, io)
    }

    /// How the log names it: `pid N`, or the connection.
    fn name(&self) -> String {
        if self.pid != 0 {
            format!("pid {}", self.pid)
        } else {
            "its connection".into()
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Keep the headers of the request now being passed on.
    pub fn carry(&self, headers: http::HeaderMap) {
        *self.carried.lock().expect("not poisoned") = headers;
    }

    pub fn carried(&self) -> http::HeaderMap {
        self.carried.lock().expect("not poisoned").clone()
    }

    pub fn alive(&self) -> bool {
        self.exited.borrow().is_none()
    }

    pub fn exited(&self) -> watch::Receiver<Option<Exit>> {
        self.exited.clone()
    }

    pub fn exit(&self) -> Option<Exit> {
        self.exited.borrow().clone()
    }

    pub fn touch(&self) {
        self.last_used
            .store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// A fresh id of the JSON type of `like` (shared processes serve many clients).
    pub fn fresh_id(&self, like: &Value) -> Value {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        if like.is_string() {
            Value::String(format!("gw-{n}"))
        } else {
            Value::from(n)
        }
    }

    /// Write one message (a line) to the process.
    pub fn send(&self, message: &Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(message).expect("JSON serializes");
        line.push(b'\n');
        self.stdin.try_send(Bytes::from(line)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => format!(
                "{} {} is not reading its input ({STDIN_QUEUE} messages waiting)",
                self.spec.kind(),
                self.spec.id
            ),
            mpsc::error::TrySendError::Closed(_) => self.gone(),
        })
    }

    fn gone(&self) -> String {
        match self.exit() {
            Some(e) => format!("{} {} exited ({})", self.spec.kind(), self.spec.id, e.why),
            None => format!("{} {} is stopping", self.spec.kind(), self.spec.id),
        }
    }

    /// Send a request whose id (and progress token) are the process's own; the process's
    /// messages for it arrive on the receiver, its answer last.
    pub fn request(
        self: &Arc<Self>,
        message: &Value,
        streams: bool,
    ) -> Result<(Pending, mpsc::UnboundedReceiver<Value>), String> {
        if !self.alive() {
            return Err(self.gone());
        }
        let key = message["id"].to_string();
        let (to, rx) = mpsc::unbounded_channel();
        self.pending.insert(key.clone(), InFlight { to, streams });
        let token = message
            .pointer("/params/_meta/progressToken")
            .map(Value::to_string);
        if let Some(t) = &token {
            self.progress.insert(t.clone(), key.clone());
        }
        if streams {
            *self.current.lock().expect("not poisoned") = Some(key.clone());
        }
        let pending = Pending {
            proc: self.clone(),
            key,
            id: message["id"].clone(),
            token,
            answered: false,
        };
        self.touch();
        self.send(message)?;
        Ok((pending, rx))
    }

    /// One line the process wrote.
    pub fn dispatch(&self, line: &[u8]) {
        // A stdio process's lines are capped as they are read; a connection's messages
        // (SSE events, WebSocket frames) are held to the same `max_line` here.
        if line.len() > self.spec.max_line {
            log::warn!(
                "{} {}: a message longer than max_line ({} bytes) was skipped",
                self.spec.kind(),
                self.spec.id,
                self.spec.max_line
            );
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let message: Value = match serde_json::from_slice(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                let shown: String = String::from_utf8_lossy(line).chars().take(200).collect();
                log::warn!(
                    "{} {}: skipped a line that is not a JSON-RPC message: {shown:?}",
                    self.spec.kind(),
                    self.spec.id
                );
                return;
            }
        };
        self.touch();
        let is_answer = message.get("method").is_none();
        if is_answer {
            self.answered.store(true, Ordering::Relaxed);
            let key = message.get("id").map(Value::to_string).unwrap_or_default();
            match self.pending.get(&key) {
                Some(p) => {
                    let _ = p.to.send(message);
                }
                None => log::debug!(
                    "{} {}: an answer to no request in flight (id {key})",
                    self.spec.kind(),
                    self.spec.id
                ),
            }
            return;
        }
        if message["method"] == "notifications/progress" {
            let token = message
                .pointer("/params/progressToken")
                .map(Value::to_string)
                .unwrap_or_default();
            if let Some(key) = self.progress.get(&token) {
                if let Some(p) = self.pending.get(key.value()) {
                    let _ = p.to.send(message);
                    return;
                }
            }
        }
        let current = self.current.lock().expect("not poisoned").clone();
        if let Some(p) = current.and_then(|k| self.pending.get(&k)) {
            if p.streams && p.to.send(message.clone()).is_ok() {
                return;
            }
        }
        self.to_get_stream(message);
    }

    /// A server-initiated message: on the GET stream, or kept for the next one.
    fn to_get_stream(&self, message: Value) {
        if self.spec.shared() {
            // Many clients share this process: a request to "the client" has none to go to.
            if message.get("id").is_some() {
                let refusal = json!({"jsonrpc": "2.0", "id": message["id"], "error": {
                    "code": -32601,
                    "message": "this server runs shared by many clients (process: shared); no client can answer its requests"
                }});
                let _ = self.send(&refusal);
            }
            return;
        }
        let event = super::http::sse_event(&message);
        let mut stream = self.get_stream.lock().expect("not poisoned");
        if let Some(tx) = stream.as_ref() {
            match tx.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => {
                    *stream = None;
                    self.streaming.store(false, Ordering::Relaxed);
                    self.keep(e);
                }
            }
        } else {
            self.keep(event);
        }
    }

    fn keep(&self, event: Bytes) {
        let mut backlog = self.backlog.lock().expect("not poisoned");
        if backlog.len() == BACKLOG {
            backlog.pop_front();
            log::warn!(
                "{} {}: {BACKLOG} messages wait for a GET stream; the oldest is dropped",
                self.spec.kind(),
                self.spec.id
            );
        }
        backlog.push_back(event);
    }

    /// Open the session's GET stream (a newer one replaces an older one); what waited
    /// for it comes first.
    pub fn open_stream(&self) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        for event in self.backlog.lock().expect("not poisoned").drain(..) {
            let _ = tx.try_send(event);
        }
        *self.get_stream.lock().expect("not poisoned") = Some(tx);
        self.streaming.store(true, Ordering::Relaxed);
        self.touch();
        rx
    }

    /// The GET stream ended (the client went away).
    pub fn stream_closed(&self) {
        let mut stream = self.get_stream.lock().expect("not poisoned");
        if stream.as_ref().is_some_and(|tx| tx.is_closed()) {
            *stream = None;
            self.streaming.store(false, Ordering::Relaxed);
        }
        self.touch();
    }

    fn fail_all(&self, exit: &Exit) {
        let why = if exit.stopped {
            format!(
                "{} {} was stopped before it answered",
                self.spec.kind(),
                self.spec.id
            )
        } else {
            format!(
                "{} {} exited ({}) before it answered",
                self.spec.kind(),
                self.spec.id,
                exit.why
            )
        };
        for p in self.pending.iter() {
            let id: Value = serde_json::from_str(p.key()).unwrap_or(Value::Null);
            let _ = p.to.send(json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": super::http::EXITED, "message": why
            }}));
        }
        *self.get_stream.lock().expect("not poisoned") = None;
    }

    /// The stop sequence: stdin closed, 2 s, SIGTERM to the group, 2 s, SIGKILL.
    pub async fn stop(&self) {
        let _ = self.stopping.send(true);
        let mut exited = self.exited.clone();
        let group = Pid::from_raw(self.pid as i32);
        for signal in [Some(Signal::SIGTERM), Some(Signal::SIGKILL), None] {
            let done =
                tokio::time::timeout(STOP_STEP, super::until(&mut exited, Option::is_some)).await;
            if done.is_ok() {
                return;
            }
            if let (Some(sig), true) = (signal, self.pid != 0) {
                log::info!(
                    "stdio server {}: pid {} still running, sending {sig}",
                    self.spec.id,
                    self.pid
                );
                let _ = killpg(group, sig);
            }
        }
        let _ = super::until(&mut exited, Option::is_some).await;
    }
}

/// A request in flight; dropped before its answer (the client went away), the process is
/// told with `notifications/cancelled`.
pub struct Pending {
    proc: Arc<Proc>,
    key: String,
    pub id: Value,
    token: Option<String>,
    answered: bool,
}

impl Pending {
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.proc.pending.remove(&self.key);
        if let Some(t) = &self.token {
            self.proc.progress.remove(t);
        }
        {
            let mut current = self.proc.current.lock().expect("not poisoned");
            if current.as_deref() == Some(self.key.as_str()) {
                *current = None;
            }
        }
        if !self.answered && self.proc.alive() {
            let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": self.id, "reason": "the client went away"}});
            let _ = self.proc.send(&cancel);
        }
        self.proc.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_line: usize) -> Arc<Spec> {
        Arc::new(Spec {
            group: "g".into(),
            id: "s".into(),
            command: Vec::new(),
            remote: Some("ws://127.0.0.1:1/m".into()),
            env: Default::default(),
            cwd: None,
            process: crate::config::StdioProcess::PerSession,
            instances: 1,
            max_processes: 1,
            idle_timeout: Duration::from_secs(60),
            max_line,
            socket: "/nonexistent.sock".into(),
        })
    }

    #[tokio::test]
    async fn a_connections_messages_are_held_to_max_line_and_answers_find_their_request() {
        let (proc, _io) = Proc::new(&spec(64), 0);
        let request = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call"});
        let (_pending, mut rx) = proc.request(&request, false).unwrap();
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":7,"result":{{"x":"{}"}}}}"#,
            "y".repeat(100)
        );
        proc.dispatch(long.as_bytes());
        assert!(rx.try_recv().is_err(), "a message over max_line is skipped");
        proc.dispatch(br#"{"jsonrpc":"2.0","id":7,"result":{}}"#);
        assert_eq!(rx.try_recv().unwrap()["id"], 7);
    }
}
