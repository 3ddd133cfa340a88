//! One client connection (a WebSocket, a legacy SSE session) as an MCP client of the
//! gateway: each message the client sends becomes a request to the gateway's internal
//! listener ([`super::loopback`]), and whatever comes back — the answer, the
//! notifications and server requests of an SSE answer, the session's GET stream — goes
//! to the client, in the order it arrives.
//!
//! * Requests run side by side (a slow `tools/call` holds up nothing); notifications and
//!   answers to server requests are sent in order, each before the next message is read.
//! * Towards a legacy-era server the connection holds one upstream session: the
//!   `Mcp-Session-Id` of the `initialize` answer and its protocol version go with every
//!   later request, the GET stream is opened once the client has sent
//!   `notifications/initialized`, and the session is deleted when the connection ends.
//! * Towards a 2026-07-28 server each request is its own POST with the routing headers
//!   its body implies; `notifications/cancelled` aborts the request it names (closing
//!   that request's stream is how the modern era cancels).

use super::loopback::{self, Target};
use super::Caller;
use crate::error::code;
use crate::mcp::envelope::{self, Body, Envelope, Era, InspectError, Kind};
use crate::mcp::headers::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// The longest pause between attempts to reopen a GET stream that ended.
const MAX_REOPEN: Duration = Duration::from_secs(30);

/// The upstream session the connection holds (legacy era).
#[derive(Default)]
struct Upstream {
    session: Option<HeaderValue>,
    version: Option<HeaderValue>,
    /// The GET stream's task, once opened.
    stream: Option<tokio::task::JoinHandle<()>>,
}

/// A client connection's side of the exchange with the gateway.
pub struct Downstream {
    pub caller: Arc<Caller>,
    /// The caller's ticket for this session's requests to the gateway.
    _ticket: super::Ticket,
    target: Target,
    /// Messages for the client (JSON text), in order.
    out: mpsc::Sender<Bytes>,
    upstream: Mutex<Upstream>,
    /// Requests in flight, by the raw JSON of their id (for cancellation).
    inflight: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Messages being handled; [`Downstream::drained`] waits for none.
    active: AtomicUsize,
    idle: Notify,
    closed: AtomicBool,
}

/// Counts one message as being handled while it lives.
struct Active(Arc<Downstream>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A JSON-RPC error message (`id`: the raw JSON of the request's, or `null`).
pub fn error_message(id: Option<&str>, code: i32, message: &str) -> String {
    let id: Value = id
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or(Value::Null);
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

impl Downstream {
    /// `kind`: the transport's.
    pub fn new(
        caller: Arc<Caller>,
        kind: super::Kind,
        out: mpsc::Sender<Bytes>,
    ) -> Option<Arc<Downstream>> {
        let ticket = super::Ticket::share(caller.clone(), kind);
        let target = Target::new(&caller, &ticket.header())?;
        Some(Arc::new(Downstream {
            caller,
            _ticket: ticket,
            target,
            out,
            upstream: Mutex::new(Upstream::default()),
            inflight: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
        }))
    }

    fn active(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        Active(self.clone())
    }

    async fn to_client(&self, message: impl Into<Bytes>) {
        // A client that is gone has nothing more to read.
        let _ = self.out.send(message.into()).await;
    }

    /// One message from the client (its text, already within the size cap).
    pub async fn receive(self: &Arc<Self>, text: Bytes) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let env = match envelope::inspect(&text) {
            Ok(Body::Single(env)) => Some(env),
            // The gateway judges a batch as it would a POSTed one.
            Ok(Body::Batch(_)) => None,
            Err(InspectError::Parse(m)) => {
                return self
                    .to_client(error_message(None, code::PARSE_ERROR, &m))
                    .await;
            }
            Err(InspectError::Invalid(m, id)) => {
                let id = id.as_deref().map(|r| r.get());
                return self
                    .to_client(error_message(id, code::INVALID_REQUEST, &m))
                    .await;
            }
        };
        let request = env.as_ref().is_none_or(|e| e.kind == Kind::Request);
        if env.as_ref().is_some_and(is_modern_cancel) {
            self.cancel(&text);
            return;
        }
        let active = self.active();
        if !request {
            // In order: e.g. `notifications/initialized` before the requests after it.
            self.exchange(env, text).await;
            drop(active);
            return;
        }
        let me = self.clone();
        let key = env
            .as_ref()
            .and_then(|e| e.id.as_ref())
            .map(|id| id.get().to_string());
        let mut inflight = self.inflight.lock().expect("not poisoned");
        let task = tokio::spawn({
            let key = key.clone();
            async move {
                me.exchange(env, text).await;
                if let Some(k) = key {
                    me.inflight.lock().expect("not poisoned").remove(&k);
                }
                drop(active);
            }
        });
        if let Some(k) = key {
            inflight.insert(k, task.abort_handle());
        }
    }

    /// A modern-era `notifications/cancelled`: the request it names is aborted (its
    /// connection to the gateway closes, and with it the upstream's stream).
    fn cancel(&self, text: &[u8]) {
        let target = serde_json::from_slice::<Value>(text)
            .ok()
            .and_then(|m| m.pointer("/params/requestId").map(Value::to_string));
        if let Some(id) = target {
            if let Some(task) = self.inflight.lock().expect("not poisoned").remove(&id) {
                task.abort();
            }
        }
    }

    /// The MCP headers of a message: the session's (legacy), or the routing headers its
    /// body implies (modern).
    fn headers(&self, env: Option<&Envelope>) -> HeaderMap {
        let mut h = HeaderMap::new();
        match env {
            Some(e) if e.era() == Era::Modern => {
                for (k, v) in crate::mcp::headers::routing(e) {
                    h.insert(k, v);
                }
            }
            _ => {
                let up = self.upstream.lock().expect("not poisoned");
                if let Some(s) = &up.session {
                    h.insert(HeaderName::from_static(MCP_SESSION_ID), s.clone());
                }
                if let Some(v) = &up.version {
                    h.insert(HeaderName::from_static(MCP_PROTOCOL_VERSION), v.clone());
                }
            }
        }
        h
    }

    /// Send one message to the gateway; what comes back goes to the client.
    async fn exchange(self: &Arc<Self>, env: Option<Envelope>, body: Bytes) {
        let id = env
            .as_ref()
            .and_then(|e| e.id.as_ref())
            .map(|i| i.get().to_string());
        let request = env.as_ref().is_none_or(|e| e.kind == Kind::Request);
        let method = env.as_ref().and_then(|e| e.method.as_deref());
        let initialize = method == Some("initialize");
        let initialized = method == Some("notifications/initialized");
        let headers = self.headers(env.as_ref());
        let resp = match self.target.send(Method::POST, headers, Some(body)).await {
            Ok(r) => r,
            Err(e) => {
                if request {
                    let m = format!("the gateway could not take the message: {e}");
                    self.to_client(error_message(id.as_deref(), code::INTERNAL_ERROR, &m))
                        .await;
                }
                return;
            }
        };
        let status = resp.status();
        if initialize && status.is_success() {
            let session = resp.headers().get(MCP_SESSION_ID).cloned();
            self.upstream.lock().expect("not poisoned").session = session;
        }
        if status == http::StatusCode::ACCEPTED || status == http::StatusCode::NO_CONTENT {
            if initialized {
                self.open_stream();
            }
            return;
        }
        if loopback::is_sse(&resp) && status.is_success() {
            let mut messages = std::pin::pin!(loopback::messages(resp));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(m) => {
                        if initialize {
                            self.note_version(m.as_bytes(), id.as_deref());
                        }
                        self.to_client(m).await;
                    }
                    Err(e) => {
                        log::debug!("a client connection's answer stream failed: {e}");
                        break;
                    }
                }
            }
            return;
        }
        let json = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let mut bytes = resp.bytes().await.unwrap_or_default();
        // A JSON answer is relayed as it came; an error status's body is a message if it
        // is a JSON-RPC object (the gateway's own errors are: one refused before the body
        // was read carries no id, so it gets the request's).
        let mut is_jsonrpc = json && std::str::from_utf8(&bytes).is_ok();
        if is_jsonrpc && !status.is_success() {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(mut v) if v.get("jsonrpc").is_some() => {
                    if let (Some(Value::Null), Some(id)) = (v.get("id"), id.as_deref()) {
                        v["id"] = serde_json::from_str(id).unwrap_or(Value::Null);
                        bytes = Bytes::from(v.to_string());
                    }
                }
                Ok(v) => is_jsonrpc = v.is_array(),
                Err(_) => is_jsonrpc = false,
            }
        }
        if is_jsonrpc {
            if initialize {
                self.note_version(&bytes, id.as_deref());
            }
            self.to_client(bytes).await;
        } else if request {
            let m = format!(
                "the gateway answered HTTP {} without a JSON-RPC message",
                status.as_u16()
            );
            self.to_client(error_message(id.as_deref(), code::INTERNAL_ERROR, &m))
                .await;
        } else {
            log::debug!(
                "a client connection's message was answered HTTP {}",
                status.as_u16()
            );
        }
    }

    /// The protocol version of an `initialize` answer goes with every later request.
    fn note_version(&self, message: &[u8], id: Option<&str>) {
        let Ok(m) = serde_json::from_slice::<Value>(message) else {
            return;
        };
        if m.get("id").map(Value::to_string).as_deref() != id {
            return;
        }
        if let Some(v) = m
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            self.upstream.lock().expect("not poisoned").version = Some(v);
        }
    }

    /// The session's GET stream: server-initiated messages, reopened while the
    /// connection lives (a server without one answers 405: none then).
    fn open_stream(self: &Arc<Self>) {
        let mut up = self.upstream.lock().expect("not poisoned");
        if up.session.is_none() || up.stream.is_some() {
            return;
        }
        let me = self.clone();
        up.stream = Some(tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            while !me.closed.load(Ordering::Acquire) {
                let headers = me.headers(None);
                match me.target.send(Method::GET, headers, None).await {
                    Ok(r) if r.status().is_success() && loopback::is_sse(&r) => {
                        pause = Duration::from_secs(1);
                        let mut messages = std::pin::pin!(loopback::messages(r));
                        while let Some(Ok(m)) = messages.next().await {
                            me.to_client(m).await;
                        }
                    }
                    Ok(r) => {
                        log::debug!(
                            "a client connection's GET stream: HTTP {}; no stream",
                            r.status().as_u16()
                        );
                        return;
                    }
                    Err(e) => log::debug!("a client connection's GET stream: {e}"),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_REOPEN);
            }
        }));
    }

    /// Wait until no message is being handled (a shutdown lets them finish).
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// The connection ended: what is in flight stops, the upstream session is deleted.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for (_, task) in self.inflight.lock().expect("not poisoned").drain() {
            task.abort();
        }
        let session = {
            let mut up = self.upstream.lock().expect("not poisoned");
            if let Some(s) = up.stream.take() {
                s.abort();
            }
            up.session.is_some()
        };
        if session {
            let headers = self.headers(None);
            if let Err(e) = self.target.send(Method::DELETE, headers, None).await {
                log::debug!("ending a client connection's session: {e}");
            }
        }
    }
}

/// A modern-era `notifications/cancelled`.
fn is_modern_cancel(e: &Envelope) -> bool {
    e.kind == Kind::Notification
        && e.method.as_deref() == Some("notifications/cancelled")
        && e.era() == Era::Modern
}
