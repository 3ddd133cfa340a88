//! Client connections, tracked from accept to close, and closed on request.
//!
//! [`Tracked`] wraps Pingora's HTTP proxy app: for every accepted connection it registers
//! a [`Conn`] in a lock-free skip list, runs the proxy's connection loop (all the
//! requests of that connection) with the `Conn` in a task-local so the request hooks can
//! update it without any lookup, and unregisters it when the connection ends. Closing a
//! connection from the admin API wakes the wrapper, which drops the proxy's future: the
//! client socket closes and any upstream request in progress is dropped with it (in the
//! modern era that is the cancellation).

use crate::telemetry::metrics::METRICS;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use crossbeam_skiplist::SkipMap;
use futures::future::{AbortHandle, Abortable, Aborted};
use once_cell::sync::Lazy;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
}

/// Every open client connection of the process, by id.
pub static CONNECTIONS: Lazy<SkipMap<u64, Arc<Conn>>> = Lazy::new(SkipMap::new);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

tokio::task_local! {
    static CURRENT: Arc<Conn>;
}

/// The connection the current request arrived on (inside a [`Tracked`] app).
pub fn current() -> Option<Arc<Conn>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Wraps a [`ServerApp`] (the HTTP proxy) to track its connections.
pub struct Tracked<A> {
    inner: Arc<A>,
}

impl<A> Tracked<A> {
    pub fn new(inner: A) -> Self {
        Tracked {
            inner: Arc::new(inner),
        }
    }
}

/// Removes the connection from the registry however the connection ends.
struct Registered(Arc<Conn>);

impl Drop for Registered {
    fn drop(&mut self) {
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
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        let (close, registration) = AbortHandle::new_pair();
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
            close,
        });
        CONNECTIONS.insert(conn.id, conn.clone());
        METRICS.connections_active.inc();
        let _registered = Registered(conn.clone());
        let inner = self.inner.clone();
        let served = CURRENT.scope(conn.clone(), async move {
            inner.process_new(stream, shutdown).await
        });
        match Abortable::new(served, registration).await {
            Ok(reuse) => reuse,
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
        self.inner.cleanup().await;
    }
}
