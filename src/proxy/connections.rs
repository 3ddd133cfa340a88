//! Client connections, tracked from accept to close, and closed on request.
//!
//! [`Tracked`] wraps Pingora's HTTP proxy app: for every accepted connection it registers
//! a [`Conn`] in a lock-free skip list, runs the proxy's connection loop (all the
//! requests of that connection) with the `Conn` in a task-local so the request hooks can
//! update it without any lookup, and unregisters it when the connection ends. Closing a
//! connection from the admin API wakes the wrapper, which drops the proxy's future: the
//! client socket closes and any upstream request in progress is dropped with it (in the
//! modern era that is the cancellation).
//!
//! The same wrapper bounds how long an HTTP/1 connection may take to send a request head
//! (`limits.request_head_timeout`, against slowloris clients): each `Conn` holds the
//! deadline of its next head in an atomic, set at accept and at the end of each request,
//! cleared while a request is served (the request's context marks both, see
//! `ctx::RequestCtx`). A timer per connection sleeps until that deadline, re-reads it and
//! closes the connection once it has passed with no request in progress. Requests being
//! served (SSE streams, slow bodies) are never cut. The head is still in Pingora's
//! parser when the deadline passes, so the connection is closed without an answer (a
//! `408` would need the socket the parser holds, and under TLS its session). HTTP/2
//! connections use Pingora's idle timeout instead (a stream starts only once its head
//! is complete).
//!
//! HTTP/2: Pingora runs each stream in a task of its own (spawned, so the task-local is
//! not there), but every stream's session carries the connection's `Digest`, whose
//! `socket_digest` is the very `Arc` the accepted stream had. Each connection is also
//! registered under that `Arc`'s address ([`of_socket`]); the registration holds a clone
//! of the `Arc`, so the address cannot be reused by another connection while it is
//! registered. A request finds its connection by the task-local, else by that address.

use crate::clock::now_ms;
use crate::telemetry::metrics::METRICS;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use crossbeam_skiplist::SkipMap;
use futures::future::{AbortHandle, Abortable, Aborted};
use once_cell::sync::Lazy;
use pingora::apps::ServerApp;
use pingora::protocols::SocketDigest;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// [`Conn::head_deadline`] while a request is served: no deadline.
const SERVING: u64 = u64::MAX;

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    /// The client's address and port.
    pub client: String,
    pub started: SystemTime,
    started_at: Instant,
    pub requests: AtomicU64,
    pub active: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// The route and MCP method of the latest request.
    pub route: ArcSwapOption<String>,
    pub last_method: ArcSwapOption<String>,
    /// The session of the latest request, as a short hash handle (never the id).
    pub session: ArcSwapOption<String>,
    /// The authenticated subject of the latest request.
    pub identity: ArcSwapOption<String>,
    /// A cheap fingerprint of the last session id seen, to skip re-hashing it.
    session_fingerprint: AtomicU64,
    /// When the next request head must be complete ([`now_ms`] time), or [`SERVING`].
    head_deadline: AtomicU64,
    /// `limits.request_head_timeout` in milliseconds (`0`: none).
    head_timeout_ms: u64,
    /// Aborts the connection's future (a flag checked on each poll, no lock).
    close: AbortHandle,
}

impl Conn {
    /// Record `sid` as the latest session; true when it differs from the previous one.
    pub fn session_changed(&self, sid: &str) -> bool {
        // FNV-1a 64: not a secret, only a change detector.
        let fp = sid.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        self.session_fingerprint.swap(fp, Ordering::Relaxed) != fp
    }

    pub fn age_seconds(&self) -> f64 {
        self.started_at.elapsed().as_secs_f64()
    }

    /// Close the connection now.
    pub fn close(&self) {
        self.close.abort();
    }

    /// A request head is complete: no deadline while the request is served.
    pub fn request_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.head_deadline.store(SERVING, Ordering::Release);
    }

    /// A request ended: the next head is due within the timeout.
    pub fn request_ended(&self) {
        if self.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.head_deadline
                .store(now_ms() + self.head_timeout_ms, Ordering::Release);
        }
    }

    /// Resolves once the connection is past its head deadline with no request served.
    async fn head_overdue(&self) {
        if self.head_timeout_ms == 0 {
            return std::future::pending().await;
        }
        loop {
            let deadline = self.head_deadline.load(Ordering::Acquire);
            let now = now_ms();
            let wake = match deadline {
                // Look again a timeout later: the earliest the next deadline can pass.
                SERVING => now + self.head_timeout_ms,
                d if now >= d => return,
                d => d,
            };
            tokio::time::sleep(Duration::from_millis(wake - now)).await;
        }
    }
}

/// Every open client connection of the process, by id.
pub static CONNECTIONS: Lazy<SkipMap<u64, Arc<Conn>>> = Lazy::new(SkipMap::new);
/// The same connections by the address of their socket digest (see the module docs).
static BY_SOCKET: Lazy<SkipMap<usize, Arc<Conn>>> = Lazy::new(SkipMap::new);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    static CURRENT: Arc<Conn>;
}

/// The connection the current request arrived on (inside a [`Tracked`] app), for
/// requests served in the connection's own task (HTTP/1).
pub fn current() -> Option<Arc<Conn>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// The connection whose socket digest `socket` is (HTTP/2 streams: the session's
/// `digest().socket_digest`).
pub fn of_socket(socket: &Arc<SocketDigest>) -> Option<Arc<Conn>> {
    BY_SOCKET
        .get(&(Arc::as_ptr(socket) as usize))
        .map(|e| e.value().clone())
}

/// Wraps a [`ServerApp`] (the HTTP proxy) to track its connections.
pub struct Tracked<A> {
    inner: Arc<A>,
    /// `limits.request_head_timeout` in milliseconds (`0`: none).
    head_timeout_ms: u64,
    /// Whose upgrade handoff makes the cleanup wait (see
    /// [`linger_after_handoff`]).
    live: Option<Arc<crate::live::Live>>,
}

impl<A> Tracked<A> {
    /// `head_timeout`: the longest wait for a complete HTTP/1 request head.
    pub fn new(inner: A, head_timeout: Option<Duration>) -> Self {
        Tracked {
            inner: Arc::new(inner),
            head_timeout_ms: head_timeout.map_or(0, |d| d.as_millis().max(1) as u64),
            live: None,
        }
    }

    /// After an upgrade handoff of `live`'s process, keep the connections open for their
    /// linger before the app's cleanup closes the idle ones.
    pub fn lingering(mut self, live: Arc<crate::live::Live>) -> Self {
        self.live = Some(live);
        self
    }
}

/// How a connection's future ended other than by itself.
enum Cut {
    HeadTimeout,
}

/// Removes the connection from the registry however the connection ends. Holds the
/// socket digest it is registered under, so that address stays this connection's.
struct Registered(Arc<Conn>, Option<Arc<SocketDigest>>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(socket) = &self.1 {
            let key = Arc::as_ptr(socket) as usize;
            if let Some(e) = BY_SOCKET.get(&key) {
                if Arc::ptr_eq(e.value(), &self.0) {
                    e.remove();
                }
            }
        }
        CONNECTIONS.remove(&self.0.id);
        METRICS.connections_active.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Tracked<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let socket = stream.get_socket_digest();
        let client = socket
            .as_ref()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        let (close, registration) = AbortHandle::new_pair();
        // HTTP/2 has its own idle timeout (set on the HTTP app).
        let head_timeout_ms = match stream.selected_alpn_proto() {
            Some(ALPN::H2) => 0,
            _ => self.head_timeout_ms,
        };
        let conn = Arc::new(Conn {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            started: SystemTime::now(),
            started_at: Instant::now(),
            requests: AtomicU64::new(0),
            active: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            route: ArcSwapOption::empty(),
            last_method: ArcSwapOption::empty(),
            session: ArcSwapOption::empty(),
            identity: ArcSwapOption::empty(),
            session_fingerprint: AtomicU64::new(0),
            head_deadline: AtomicU64::new(now_ms() + head_timeout_ms),
            head_timeout_ms,
            close,
        });
        CONNECTIONS.insert(conn.id, conn.clone());
        if let Some(socket) = &socket {
            BY_SOCKET.insert(Arc::as_ptr(socket) as usize, conn.clone());
        }
        METRICS.connections_active.inc();
        let _registered = Registered(conn.clone(), socket);
        let inner = self.inner.clone();
        let served = CURRENT.scope(conn.clone(), async move {
            inner.process_new(stream, shutdown).await
        });
        let watched = async {
            tokio::select! {
                reuse = served => Ok(reuse),
                () = conn.head_overdue() => Err(Cut::HeadTimeout),
            }
        };
        match Abortable::new(watched, registration).await {
            Ok(Ok(reuse)) => reuse,
            Ok(Err(Cut::HeadTimeout)) => {
                METRICS.request_head_timeouts.inc();
                log::info!(
                    "connection {} from {} closed: no complete request head within {:?} \
                     (limits.request_head_timeout)",
                    conn.id,
                    conn.client,
                    Duration::from_millis(conn.head_timeout_ms)
                );
                None
            }
            Err(Aborted) => {
                log::info!(
                    "connection {} from {} closed by the admin API",
                    conn.id,
                    conn.client
                );
                None
            }
        }
    }

    async fn cleanup(&self) {
        if let Some(live) = &self.live {
            linger_after_handoff(live).await;
        }
        self.inner.cleanup().await;
    }
}

/// After an upgrade handoff, once shutdown has begun: resolves when no client
/// connection is left, or `server.drain_delay` after the first call. At once when there
/// was no handoff.
///
/// Closing a kept-alive connection races with the client's next request on it, which
/// then fails. Pingora closes idle connections when its HTTP app is cleaned up, right
/// after the listeners stop; during the linger, connections stay open instead, and
/// each request they bring is answered with `Connection: close` (Pingora does that
/// once shutdown has begun), so busy clients move to the new process without an error.
pub async fn linger_after_handoff(live: &crate::live::Live) {
    let Some(deadline) = live.handoff_deadline() else {
        return;
    };
    while std::time::Instant::now() < deadline && !CONNECTIONS.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
