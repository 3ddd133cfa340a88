//! Client connections, tracked from accept to close, and closed on request.
//!
//! [`Tracked`] wraps Pingora's HTTP proxy app: every accepted connection gets a task of
//! its own (Pingora's task for it ends at once, see [`Tracked::process_new`]), which
//! registers a [`Conn`] in a lock-free skip list, runs the connection loop (all the
//! requests of that connection: HTTP/1 in [`super::serve`], HTTP/2 in Pingora's app) with
//! the `Conn` in a task-local so the request hooks can update it without any lookup, and
//! unregisters it when the connection ends. Closing a connection from the admin API
//! wakes the wrapper, which drops the connection's future: the client socket closes and
//! any upstream request in progress is dropped with it (in the modern era that is the
//! cancellation).
//!
//! The same wrapper admits connections (`server.max_connections`,
//! `limits.max_connections_per_ip`: [`super::admission`]) and bounds how long an HTTP/1
//! connection may wait: for its next request while idle (`server.keepalive_timeout`)
//! and for a complete request head once the head started, or from the accept for the
//! first (`limits.request_head_timeout`, against slowloris clients; with none, a
//! connection is idle from the accept until its first bytes). Each `Conn` holds
//! its deadline in an atomic, set at accept, at the end of each request (keep-alive)
//! and by the first bytes read on an idle connection (the stream is wrapped to see
//! them), and cleared while a request is served (the request's context marks both, see
//! `ctx::RequestCtx`). A timer per connection sleeps until that deadline (at most half
//! a head timeout at a time), re-reads it and closes the connection once it has passed
//! with no request in progress. Requests being served (SSE streams, slow bodies) are
//! never cut. The head is still in Pingora's parser when its deadline passes, so the
//! connection is closed without an answer (a `408` would need the socket the parser
//! holds, and under TLS its session). HTTP/2 connections use Pingora's idle timeout
//! (`server.keepalive_timeout`) instead (a stream starts only once its head is complete).
//!
//! HTTP/2: Pingora runs each stream in a task of its own (spawned, so the task-local is
//! not there), but every stream's session carries the connection's `Digest`, whose
//! `socket_digest` is the very `Arc` the accepted stream had. Each connection is also
//! registered under that `Arc`'s address ([`of_socket`]); the registration holds a clone
//! of the `Arc`, so the address cannot be reused by another connection while it is
//! registered. A request finds its connection by the task-local, else by that address.

use super::admission::watched::Watched;
use super::admission::{Admission, Refused};
use super::Gateway;
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
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The client's address ([`crate::security::edge::peer_ip`]'s) and its text, made
    /// once for the forwarded headers of every request on the connection.
    pub peer_ip: Option<(std::net::IpAddr, http::HeaderValue)>,
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
    /// When the connection is closed unless a request is served by then ([`now_ms`]
    /// time): its head's deadline, or while idle its keep-alive's; [`SERVING`]: none.
    head_deadline: AtomicU64,
    /// No request in progress, and none started: waiting for the next one.
    idle: AtomicBool,
    /// `limits.request_head_timeout` in milliseconds (`0`: none).
    head_timeout_ms: u64,
    /// `server.keepalive_timeout` in milliseconds (`0`: the timer is off, HTTP/2).
    keepalive_ms: u64,
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

    /// A request is being served on the connection.
    pub fn serving(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// A request head is complete: no deadline while the request is served.
    pub fn request_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.idle.store(false, Ordering::Release);
        self.head_deadline.store(SERVING, Ordering::Release);
    }

    /// A request ended: the connection is idle, kept for its keep-alive timeout.
    pub fn request_ended(&self) {
        if self.active.fetch_sub(1, Ordering::Relaxed) == 1 && self.keepalive_ms > 0 {
            self.head_deadline
                .store(now_ms() + self.keepalive_ms, Ordering::Release);
            self.idle.store(true, Ordering::Release);
        }
    }

    /// Bytes came in (the client stream's reads, `admission::watched`): on an idle
    /// connection they start a request, whose head is now due within its timeout.
    pub fn bytes_read(&self) {
        if !self.idle.load(Ordering::Relaxed) {
            return;
        }
        let deadline = match self.head_timeout_ms {
            0 => SERVING,
            t => now_ms() + t,
        };
        // The deadline first: the timer never sees an idle deadline with `idle` false.
        self.head_deadline.store(deadline, Ordering::Release);
        self.idle.store(false, Ordering::Release);
    }

    /// Resolves once the connection is past its deadline with no request served: its
    /// head's ([`Cut::HeadTimeout`]) or, idle, its keep-alive's ([`Cut::KeepaliveTimeout`]).
    ///
    /// No request wakes the timer (that would cost every request a poll): it looks
    /// again at least every half head timeout, so a head that starts on an idle
    /// connection, moving the deadline earlier, is closed at most half a timeout late.
    async fn overdue(&self) -> Cut {
        if self.keepalive_ms == 0 {
            return std::future::pending().await;
        }
        let tick = match self.head_timeout_ms {
            0 => self.keepalive_ms,
            t => (t / 2).max(1),
        };
        loop {
            let deadline = self.head_deadline.load(Ordering::Acquire);
            let now = now_ms();
            if deadline != SERVING && now >= deadline {
                let idle = self.idle.load(Ordering::Acquire);
                if self.head_deadline.load(Ordering::Acquire) == deadline {
                    return if idle {
                        Cut::KeepaliveTimeout
                    } else {
                        Cut::HeadTimeout
                    };
                }
                continue;
            }
            let wake = match deadline {
                SERVING => now + tick,
                d => d.min(now + tick),
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

/// Wraps the HTTP proxy app to track its connections, and serves their HTTP/1 requests
/// ([`super::serve`]).
pub struct Tracked {
    inner: Arc<HttpProxy<Gateway>>,
    /// The proxy's hooks (sharing its state and upstream connections), for the POSTs
    /// served by [`super::serve`].
    gateway: Arc<Gateway>,
    /// `limits.request_head_timeout` in milliseconds (`0`: none).
    head_timeout_ms: u64,
    /// `server.keepalive_timeout` in milliseconds.
    keepalive_ms: u64,
    admission: Arc<Admission>,
    /// Whose upgrade handoff makes the cleanup wait (see
    /// [`linger_after_handoff`]).
    live: Option<Arc<crate::live::Live>>,
}

impl Tracked {
    /// `inner`: the proxy app of `gateway` (a clone of it); `head_timeout`: the longest
    /// wait for a complete HTTP/1 request head once it started; `keepalive`: for the next
    /// request on an idle connection; `admission`: the connection limits.
    pub fn new(
        inner: HttpProxy<Gateway>,
        gateway: Gateway,
        head_timeout: Option<Duration>,
        keepalive: Duration,
        admission: Admission,
    ) -> Self {
        Tracked {
            inner: Arc::new(inner),
            gateway: Arc::new(gateway),
            head_timeout_ms: head_timeout.map_or(0, |d| d.as_millis().max(1) as u64),
            keepalive_ms: keepalive.as_millis().max(1) as u64,
            admission: Arc::new(admission),
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
    KeepaliveTimeout,
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
impl ServerApp for Tracked {
    /// Serves the connection in a task of its own and returns at once, so Pingora's task
    /// for the accepted connection ends here. That task is as large as its largest state,
    /// the TLS handshake's (8.7 KB, plain connections too), and would otherwise be held,
    /// with this future boxed beside it, by every connection for its whole life.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let app = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { app.serve(stream, &shutdown).await });
        None
    }

    async fn cleanup(&self) {
        if let Some(live) = &self.live {
            linger_after_handoff(live).await;
        }
        self.inner.cleanup().await;
    }
}

impl Tracked {
    /// The connection, admitted and registered, served until it closes or is cut.
    async fn serve(self: Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        let socket = stream.get_socket_digest();
        let peer = socket.as_ref().and_then(|d| d.peer_addr());
        let h2 = stream.selected_alpn_proto() == Some(ALPN::H2);
        let ip = peer.and_then(|a| a.as_inet()).map(|a| a.ip());
        let _admitted = match self.admission.admit(ip) {
            Ok(admitted) => admitted,
            Err(why) => {
                refuse(stream, why, h2).await;
                return;
            }
        };
        let client = peer.map(|a| a.to_string()).unwrap_or_default();
        let (close, registration) = AbortHandle::new_pair();
        // HTTP/2 has its own idle timeout (set on the HTTP app), and heads come whole.
        let (head_timeout_ms, keepalive_ms) = match h2 {
            true => (0, 0),
            false => (self.head_timeout_ms, self.keepalive_ms),
        };
        let peer_ip = ip.map(crate::security::edge::canonical).and_then(|ip| {
            http::HeaderValue::try_from(ip.to_string())
                .ok()
                .map(|text| (ip, text))
        });
        let conn = Arc::new(Conn {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            peer_ip,
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
            // The first request's head is due within the head timeout from the accept;
            // with none, a connection that sends nothing is idle, kept for the
            // keep-alive timeout.
            head_deadline: AtomicU64::new(match (head_timeout_ms, keepalive_ms) {
                (0, 0) => SERVING,
                (0, k) => now_ms() + k,
                (t, _) => now_ms() + t,
            }),
            idle: AtomicBool::new(head_timeout_ms == 0 && keepalive_ms > 0),
            head_timeout_ms,
            keepalive_ms,
            close,
        });
        CONNECTIONS.insert(conn.id, conn.clone());
        if let Some(socket) = &socket {
            BY_SOCKET.insert(Arc::as_ptr(socket) as usize, conn.clone());
        }
        METRICS.connections_active.inc();
        let _registered = Registered(conn.clone(), socket);
        let reads = conn.clone();
        let watched = async {
            // Made here, not captured: a future an async block captures and then awaits
            // is stored twice in the block's state (once captured, once being awaited).
            let served = CURRENT.scope(conn.clone(), async move {
                match h2 {
                    true => {
                        let mut reuse = self.inner.process_new(stream, shutdown).await;
                        while let Some(stream) = reuse {
                            reuse = self.inner.process_new(stream, shutdown).await;
                        }
                    }
                    false => {
                        // Reads tell the connection when a request starts.
                        let stream: Stream = Box::new(Watched::new(stream, reads));
                        let (proxy, gateway) = (&self.inner, &self.gateway);
                        super::serve::connection(proxy, gateway, stream, shutdown).await;
                    }
                }
            });
            tokio::select! {
                () = served => Ok(()),
                cut = conn.overdue() => Err(cut),
            }
        };
        match Abortable::new(watched, registration).await {
            Ok(Ok(())) => {}
            Ok(Err(Cut::HeadTimeout)) => {
                METRICS.request_head_timeouts.inc();
                log::info!(
                    "connection {} from {} closed: no complete request head within {:?} \
                     (limits.request_head_timeout)",
                    conn.id,
                    conn.client,
                    Duration::from_millis(conn.head_timeout_ms)
                );
            }
            Ok(Err(Cut::KeepaliveTimeout)) => {
                METRICS.keepalive_timeouts.inc();
                log::debug!(
                    "connection {} from {} closed: idle for {:?} (server.keepalive_timeout)",
                    conn.id,
                    conn.client,
                    Duration::from_millis(conn.keepalive_ms)
                );
            }
            Err(Aborted) => {
                log::info!(
                    "connection {} from {} closed by the admin API",
                    conn.id,
                    conn.client
                );
            }
        }
    }
}

/// Refuse a connection past a limit: HTTP/1 gets its `503` (one write, bounded), HTTP/2
/// is closed.
async fn refuse(mut stream: Stream, why: Refused, h2: bool) {
    use tokio::io::AsyncWriteExt;
    if !h2 {
        let answer = Admission::answer(why);
        let write = async {
            stream.write_all(&answer).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }
    let _ = stream.shutdown().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Pingora's task for an accepted connection (as large as a TLS handshake) must not
    /// live as long as the connection: `process_new` hands the connection to a task of
    /// its own and returns before the client has sent anything, and the connection is
    /// still registered and served after that.
    #[tokio::test]
    async fn a_connection_is_served_by_a_task_of_its_own() {
        let yaml = "upstream:\n  groups:\n    default:\n      servers:\n        - id: a\n          url: http://127.0.0.1:9/mcp\n";
        let config = crate::config::load_str(yaml, &|_| None).unwrap();
        let state = crate::state::State::build(&config).unwrap();
        let source = crate::live::ConfigSource {
            name: "test".into(),
            text: yaml.into(),
        };
        let loaded = crate::live::Loaded::new(config, source);
        let live = Arc::new(crate::live::Live::new(state, loaded, None, None));
        let gateway = Gateway::new(live, 1);
        let conf = Arc::new(pingora::server::configuration::ServerConf::default());
        let proxy = pingora::proxy::http_proxy(&conf, gateway.clone());
        let keepalive = Duration::from_secs(60);
        let admission = Admission::new(100, 0);
        let tracked = Arc::new(Tracked::new(proxy, gateway, None, keepalive, admission));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted));
        let (_shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        // A bound on a wait that would otherwise never end (not a timing): before the
        // change, `process_new` returned only when the connection closed.
        let returned = tokio::time::timeout(
            Duration::from_secs(30),
            tracked.process_new(stream, &shutdown),
        )
        .await;
        assert!(matches!(returned, Ok(None)), "process_new did not return");
        client
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(br#"{"status":"ok"}"#) {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // Still open, so still registered (no other test here registers connections).
        assert!(!CONNECTIONS.is_empty());
    }
}
