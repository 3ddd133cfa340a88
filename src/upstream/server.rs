//! One upstream server (a replica): where it is, how to reach it, and its live state
//! (health, drain, breaker, in-flight requests). Also the group's tool catalog.

use super::breaker::{Breaker, Permit, State};
use super::target::{Address, Target};
use arc_swap::{ArcSwap, ArcSwapOption};
use pingora::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora::utils::tls::WrappedX509;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Process-unique server numbers: stable identities for failover bookkeeping while
/// a group's membership changes.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// How to build the `HttpPeer` of a server for a given address.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Server name for SNI; `None`: the URL's host.
    pub sni: Option<String>,
    pub verify: bool,
    pub ca: Option<Arc<[WrappedX509]>>,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    /// `connection_pool.max_connections_per_host` (`0`: no limit).
    pub max_connections: u32,
}

/// One replica of an upstream MCP server.
#[derive(Debug)]
pub struct Server {
    /// Process-unique number (see `NEXT_UID`).
    pub uid: u64,
    pub id: String,
    /// The URL as configured.
    pub url: String,
    pub target: Target,
    pub weight: u32,
    /// Requests (and open streams) currently proxied to this server.
    in_flight: AtomicUsize,
    settings: PeerSettings,
    /// The peer for the current address; `None` while the name does not resolve.
    peer: ArcSwapOption<HttpPeer>,
    /// The last address the peer was built for.
    address: ArcSwapOption<Address>,
    /// Passed its active health checks (always true without them).
    healthy: AtomicBool,
    /// Draining: no new requests or sessions; requests of its sessions still come.
    draining: AtomicBool,
    pub breaker: Breaker,
    /// Its consecutive health-check passes and failures: they live with the server, so
    /// a reload that keeps it keeps them (only the health-check task takes the lock).
    pub(crate) health_counts: std::sync::Mutex<super::health::Counters>,
    /// Its connections in use, when limited: one permit per request or stream in flight.
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl Server {
    /// A server of group `group` (not resolved yet: see [`Server::set_address`]).
    /// With active health checks it starts down until its first check passes.
    pub fn new(
        group: &str,
        id: &str,
        url: &str,
        weight: u32,
        settings: PeerSettings,
        checked: bool,
        breaker: &crate::config::BreakerConfig,
    ) -> Result<Server, String> {
        let target = Target::from_url(url)?;
        let settings_limit = settings.max_connections;
        Ok(Server {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            id: id.to_string(),
            url: url.to_string(),
            target,
            weight,
            in_flight: AtomicUsize::new(0),
            settings,
            peer: ArcSwapOption::empty(),
            address: ArcSwapOption::empty(),
            healthy: AtomicBool::new(!checked),
            draining: AtomicBool::new(false),
            breaker: Breaker::new(
                format!("{group}/{id}"),
                breaker.failure_threshold,
                breaker.open_for.0,
                breaker.half_open_requests,
            ),
            health_counts: Default::default(),
            slots: (settings_limit > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(settings_limit as usize))),
        })
    }

    /// `connection_pool.max_connections_per_host` (`0`: no limit).
    pub fn max_connections(&self) -> u32 {
        self.settings.max_connections
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }
    /// A peer for one request (Pingora takes it by value) with the given read timeout;
    /// `None` while the server's name does not resolve.
    pub fn peer(&self, read_timeout: Duration) -> Option<Box<HttpPeer>> {
        let current = self.peer.load();
        let mut peer = Box::new(HttpPeer::clone(current.as_ref()?));
        peer.options.read_timeout = Some(read_timeout);
        Some(peer)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Resolved and healthy: may hold sessions and take requests.
    pub fn is_up(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.peer.load().is_some()
    }

    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::Release);
    }

    pub fn address(&self) -> Option<Arc<Address>> {
        self.address.load_full()
    }

    /// Point the server at `address` (at start and when DNS changes). Returns whether it changed.
    pub fn set_address(&self, address: Address) -> Result<bool, String> {
        if self.address.load().as_deref() == Some(&address) {
            return Ok(false);
        }
        let s = &self.settings;
        let mut peer = match &address {
            Address::Inet(a) => HttpPeer::new(
                *a,
                self.target.tls,
                s.sni.clone().unwrap_or_else(|| self.target.host.clone()),
            ),
            Address::Unix(p) => HttpPeer::new_uds(&p.to_string_lossy(), false, String::new())
                .map_err(|e| format!("server {}: {e}", self.id))?,
        };
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.write_timeout = Some(s.write_timeout);
        peer.options.idle_timeout = Some(s.idle_timeout);
        peer.options.verify_cert = s.verify;
        peer.options.verify_hostname = s.verify;
        peer.options.ca = s.ca.clone();
        // Hop-by-hop fields are stripped and no HTTP/1 upgrade handshake is ever
        // forwarded: the gateway inspects every message, so it tunnels nothing.
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        self.peer.store(Some(Arc::new(peer)));
        self.address.store(Some(Arc::new(address)));
        Ok(true)
    }

    /// Could a new request go here now (up, not draining, its breaker not open)?
    /// Takes nothing.
    pub(super) fn candidate(&self, now: u64) -> bool {
        self.is_up() && !self.is_draining() && self.breaker.allows(now)
    }

    /// A candidate whose breaker granted a request (a half-open probe permit, if so).
    pub(super) fn claim(&self, now: u64) -> Option<Permit> {
        if self.candidate(now) {
            self.breaker.acquire(now)
        } else {
            None
        }
    }
}

/// Tool names learned from a group's `tools/list` answers: the only tool names that
/// become metric labels. Read lock-free; replaced whole when an answer adds names.
#[derive(Debug, Default)]
pub struct ToolCatalog(ArcSwap<std::collections::HashSet<String>>);

impl ToolCatalog {
    /// At most this many names per group (a server listing more is not a catalog).
    pub const MAX: usize = 1024;

    pub fn contains(&self, name: &str) -> bool {
        self.0.load().contains(name)
    }

    /// Add names (up to [`ToolCatalog::MAX`] in all); returns how many were new.
    pub fn learn<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> usize {
        let current = self.0.load();
        let mut next = None::<std::collections::HashSet<String>>;
        for name in names {
            let set = next.as_ref().unwrap_or(&current);
            if set.contains(name) || set.len() >= Self::MAX || name.len() > 128 {
                continue;
            }
            next.get_or_insert_with(|| (**current).clone())
                .insert(name.to_string());
        }
        match next {
            Some(set) => {
                let added = set.len() - current.len();
                self.0.store(Arc::new(set));
                added
            }
            None => 0,
        }
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.load().iter().cloned().collect();
        v.sort();
        v
    }
}

/// One attempt at a server: counts the request against the server while alive (dropped
/// with the request context, or replaced by the next attempt on failover), and holds the
/// breaker permit the attempt was sent under. Its outcome goes to the breaker through
/// [`InFlight::record`]; an attempt dropped without one (its client hung up before the
/// server answered) gives a half-open probe permit back, so the breaker can never wait
/// forever on a probe nobody will judge, whatever path the request took.
#[derive(Debug)]
pub struct InFlight {
    server: Arc<Server>,
    /// The breaker's permit, until the attempt's outcome is recorded.
    permit: Option<Permit>,
    /// One of the server's connections, when they are limited ([`InFlight::hold_slot`]).
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl InFlight {
    /// An attempt not gated by the breaker (a session's server); its outcome still counts.
    pub fn new(server: Arc<Server>) -> Self {
        Self::with_permit(server, Permit::default())
    }

    pub(super) fn with_permit(server: Arc<Server>, permit: Permit) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            server,
            permit: Some(permit),
            slot: None,
        }
    }

    /// Take one of the server's connections when `max_connections_per_host` limits them:
    /// at once when one is free, else waiting up to `wait` (`timeouts.connect`); `Err`
    /// (a `503`) when none is freed in time. Held until the attempt ends.
    pub async fn hold_slot(
        &mut self,
        group: &str,
        wait: Duration,
    ) -> Result<(), crate::error::GatewayError> {
        let Some(slots) = self.server.slots.clone() else {
            return Ok(());
        };
        if self.slot.is_some() {
            return Ok(());
        }
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            self.slot = Some(slot);
            return Ok(());
        }
        let waits = &crate::telemetry::metrics::METRICS.upstream_connection_waits;
        match tokio::time::timeout(wait, slots.acquire_owned()).await {
            Ok(Ok(slot)) => {
                waits.with_label_values(&[group, "waited"]).inc();
                self.slot = Some(slot);
                Ok(())
            }
            _ => {
                waits.with_label_values(&[group, "timeout"]).inc();
                Err(crate::error::GatewayError::Busy(format!(
                    "server {:?} of group {group:?} has all its {} connections in use \
                     (upstream.groups.{group}.connection_pool.max_connections_per_host) and \
                     none was freed within {wait:?} (timeouts.connect)",
                    self.server.id, self.server.settings.max_connections
                )))
            }
        }
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Record how the attempt went (once: later calls change nothing). Returns the
    /// breaker's new state when it changed.
    pub fn record(&mut self, success: bool, now: u64) -> Option<State> {
        self.permit.take()?;
        self.server.breaker.record(success, now)
    }
}

impl std::ops::Deref for InFlight {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.server.breaker.release(permit);
        }
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
