//! Upstream groups: the replicas of each MCP server and how one is chosen.
//!
//! A [`Group`] owns its [`Server`]s (resolved target, a ready-made `HttpPeer` template,
//! an in-flight counter) and a selector:
//! * `round_robin` / `weighted_round_robin`: a precomputed *smooth* weighted schedule
//!   (nginx's algorithm, run once at build time) walked by an atomic counter. Pingora's own
//!   weighted round robin repeats each backend `weight` times in a row, which sends bursts
//!   to one replica; the schedule interleaves them (weights 3:1 → a a b a, not a a a … b);
//! * `ip_hash`: Pingora's Ketama consistent hashing on the client IP;
//! * `least_connections`, which Pingora lacks: the server with the fewest in-flight
//!   requests (open SSE streams included), ties broken in rotation.

pub mod breaker;
pub mod health;
pub mod target;

use crate::config::{Config, GroupConfig, Strategy};
use arc_swap::{ArcSwap, ArcSwapOption};
use breaker::Breaker;
use pingora::lb::discovery::Static;
use pingora::lb::selection::Consistent;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use target::{Address, Target};

/// How to build the `HttpPeer` of a server for a given address.
#[derive(Debug, Clone)]
struct PeerSettings {
    sni: String,
    verify: bool,
    ca: Option<Arc<[WrappedX509]>>,
    connect_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Duration,
}

/// One replica of an upstream MCP server.
#[derive(Debug)]
pub struct Server {
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
    pub breaker: Breaker,
}

impl Server {
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
            Address::Inet(a) => HttpPeer::new(*a, self.target.tls, s.sni.clone()),
            Address::Unix(p) => HttpPeer::new_uds(&p.to_string_lossy(), false, String::new())
                .map_err(|e| format!("server {}: {e}", self.id))?,
        };
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.write_timeout = Some(s.write_timeout);
        peer.options.idle_timeout = Some(s.idle_timeout);
        peer.options.verify_cert = s.verify;
        peer.options.verify_hostname = s.verify;
        peer.options.ca = s.ca.clone();
        self.peer.store(Some(Arc::new(peer)));
        self.address.store(Some(Arc::new(address)));
        Ok(true)
    }

    /// Could a new request go here now (up, and its breaker not open)? Takes nothing.
    fn candidate(&self, now: u64) -> bool {
        self.is_up() && self.breaker.allows(now)
    }

    /// A candidate whose breaker granted a request (a half-open probe permit, if so).
    fn claim(&self, now: u64) -> bool {
        self.candidate(now) && self.breaker.acquire(now)
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

/// Counts a request against its server while alive (dropped with the request context).
#[derive(Debug)]
pub struct InFlight(Arc<Server>);

impl InFlight {
    pub fn new(server: Arc<Server>) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(server)
    }
    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Selector {
    /// Server indexes in smooth weighted order, and the position in it.
    RoundRobin {
        schedule: Vec<u32>,
        next: AtomicUsize,
    },
    IpHash(LoadBalancer<Consistent>),
    LeastConnections(AtomicUsize),
}

/// A set of interchangeable replicas.
pub struct Group {
    pub name: String,
    pub servers: Vec<Arc<Server>>,
    pub preserve_host: bool,
    /// Other servers to try when a request could not be sent.
    pub retries: u32,
    /// `connection_pool.max_idle_per_host: 0`: upstream requests say `Connection: close`.
    pub close_connections: bool,
    /// Tool names the group's servers listed in `tools/list` answers (metric labels).
    pub tools: ToolCatalog,
    by_id: HashMap<String, usize>,
    selector: Selector,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .finish()
    }
}

/// Backends carry the index of their server in `ext`.
#[derive(Clone, Copy)]
struct ServerIndex(usize);

impl Group {
    /// Build a group. Names are not resolved here: see [`Group::resolve_all`].
    pub fn build(name: &str, g: &GroupConfig, config: &Config) -> Result<Group, String> {
        let ca = match &g.tls.ca_file {
            Some(path) => Some(load_ca(path)?),
            None => None,
        };
        let mut servers = Vec::with_capacity(g.servers.len());
        for s in &g.servers {
            let target = Target::from_url(&s.url)?;
            let settings = PeerSettings {
                sni: g.tls.sni.clone().unwrap_or_else(|| target.host.clone()),
                verify: g.tls.verify,
                ca: ca.clone(),
                connect_timeout: config.timeouts.connect.0,
                write_timeout: config.timeouts.stream_idle.0,
                idle_timeout: config.upstream.connection_pool.idle_timeout.0,
            };
            let cb = &g.circuit_breaker;
            servers.push(Arc::new(Server {
                id: s.id.clone(),
                url: s.url.clone(),
                target,
                weight: s.weight,
                in_flight: AtomicUsize::new(0),
                settings,
                peer: ArcSwapOption::empty(),
                address: ArcSwapOption::empty(),
                // With active checks a server starts out until its first check passes.
                healthy: AtomicBool::new(g.health_check.is_none()),
                breaker: Breaker::new(
                    format!("{name}/{}", s.id),
                    cb.failure_threshold,
                    cb.open_for.0,
                    cb.half_open_requests,
                ),
            }));
        }
        let by_id = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let selector = match g.strategy {
            Strategy::RoundRobin => Selector::RoundRobin {
                schedule: smooth_schedule(&vec![1; servers.len()]),
                next: AtomicUsize::new(0),
            },
            Strategy::WeightedRoundRobin => Selector::RoundRobin {
                schedule: smooth_schedule(&servers.iter().map(|s| s.weight).collect::<Vec<_>>()),
                next: AtomicUsize::new(0),
            },
            Strategy::IpHash => Selector::IpHash(balancer(&servers)?),
            Strategy::LeastConnections => Selector::LeastConnections(AtomicUsize::new(0)),
        };
        Ok(Group {
            name: name.to_string(),
            servers,
            preserve_host: g.preserve_host,
            retries: g.retries,
            close_connections: config.upstream.connection_pool.max_idle_per_host == 0,
            tools: ToolCatalog::default(),
            by_id,
            selector,
        })
    }

    /// Resolve every server's address; a name that does not resolve leaves that server
    /// down (and is retried every `resolve_interval`). Returns the problems found.
    pub async fn resolve_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for server in &self.servers {
            match server.target.resolve().await {
                Ok(address) => {
                    if let Err(e) = server.set_address(address) {
                        problems.push(e);
                    }
                }
                Err(e) => problems.push(format!(
                    "upstream.groups.{}: server {}: {e}",
                    self.name, server.id
                )),
            }
        }
        problems
    }

    /// True when at least one server is up.
    pub fn any_up(&self) -> bool {
        self.servers.iter().any(|s| s.is_up())
    }

    /// Choose a server for a request that is not bound to a session, skipping servers that
    /// are down, whose breaker is open, or whose index is in `tried` (failover).
    /// `client` is the client's IP, used by `ip_hash`.
    pub fn select(&self, client: Option<IpAddr>, tried: &[usize]) -> Option<(usize, &Arc<Server>)> {
        let now = breaker::now_ms();
        let usable = |i: usize| !tried.contains(&i) && self.servers[i].candidate(now);
        let index = match &self.selector {
            Selector::RoundRobin { schedule, next } => {
                let len = schedule.len().max(1);
                let start = next.fetch_add(1, Ordering::Relaxed) % len;
                (0..schedule.len())
                    .map(|k| schedule[(start + k) % len] as usize)
                    .find(|&i| usable(i) && self.servers[i].claim(now))
            }
            Selector::IpHash(lb) => {
                let key = match client {
                    Some(IpAddr::V4(ip)) => ip.octets().to_vec(),
                    Some(IpAddr::V6(ip)) => ip.octets().to_vec(),
                    None => Vec::new(),
                };
                let accept = |b: &Backend, _: bool| {
                    b.ext
                        .get::<ServerIndex>()
                        .is_some_and(|&ServerIndex(i)| usable(i) && self.servers[i].claim(now))
                };
                backend_index(lb.select_with(&key, 256, accept))
            }
            Selector::LeastConnections(tiebreak) => {
                // Start the scan at a rotating offset so ties spread evenly. A server whose
                // breaker refuses the claim (a half-open race) is passed over; `passed`
                // allocates only then.
                let n = self.servers.len();
                let start = tiebreak.fetch_add(1, Ordering::Relaxed) % n.max(1);
                let mut passed: Vec<usize> = Vec::new();
                loop {
                    let best = (0..n)
                        .map(|k| (start + k) % n)
                        .filter(|&i| usable(i) && !passed.contains(&i))
                        .min_by_key(|&i| self.servers[i].in_flight());
                    match best {
                        Some(i) if self.servers[i].claim(now) => break Some(i),
                        Some(i) => passed.push(i),
                        None => break None,
                    }
                }
            }
        }?;
        self.servers.get(index).map(|s| (index, s))
    }

    /// Is there a server not in `tried` that could take a request now? (Claims nothing.)
    pub fn has_untried(&self, tried: &[usize]) -> bool {
        let now = breaker::now_ms();
        (0..self.servers.len()).any(|i| !tried.contains(&i) && self.servers[i].candidate(now))
    }

    pub fn server_by_id(&self, id: &str) -> Option<&Arc<Server>> {
        self.by_id.get(id).map(|&i| &self.servers[i])
    }
}

fn backend_index(b: Option<Backend>) -> Option<usize> {
    b.and_then(|b| b.ext.get::<ServerIndex>().map(|i| i.0))
}

/// The smooth weighted round-robin order (as nginx computes it) for one full cycle:
/// each step every server gains its weight, the richest is picked and pays the total.
/// Weights are reduced by their greatest common divisor first, so equal weights give a
/// cycle as long as the number of servers.
pub fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights
        .iter()
        .fold(0u64, |acc, &w| gcd(acc, w as u64))
        .max(1);
    let w: Vec<i64> = weights.iter().map(|&x| (x as u64 / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .expect("a group has at least one server");
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// A Ketama ring over the servers. Each backend's ring identity is an address derived
/// from the server id (not its network address), so the ring is the same on every gateway
/// replica and does not move when DNS does.
fn balancer<S>(servers: &[Arc<Server>]) -> Result<LoadBalancer<S>, String>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut set = BTreeSet::new();
    for (i, s) in servers.iter().enumerate() {
        let identity = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(fnv1a_128(s.id.as_bytes()))), 1);
        let mut b = Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(identity),
            weight: s.weight as usize,
            ext: Default::default(),
        };
        b.ext.insert(ServerIndex(i));
        set.insert(b);
    }
    let backends = Backends::new(Static::new(set));
    let lb = LoadBalancer::from_backends(backends);
    // Static discovery resolves immediately; nothing awaits here.
    futures::executor::block_on(lb.update()).map_err(|e| format!("building the balancer: {e}"))?;
    Ok(lb)
}

/// FNV-1a, 128-bit: a stable (not secret) hash for ring identities.
fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    data.iter()
        .fold(OFFSET, |h, &b| (h ^ b as u128).wrapping_mul(PRIME))
}

fn load_ca(path: &str) -> Result<Arc<[WrappedX509]>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let certs: Vec<WrappedX509> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("tls.ca_file {path:?}: {e}"))?
        .map(|c| {
            c.map(|c| WrappedX509::new(c.to_vec(), pingora::utils::tls::parse_x509))
                .map_err(|e| format!("tls.ca_file {path:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(format!("tls.ca_file {path:?}: no certificate found"));
    }
    Ok(certs.into())
}

/// Every group of a config, by name.
#[derive(Debug, Default)]
pub struct Groups(pub HashMap<String, Arc<Group>>);

impl Groups {
    pub fn build(config: &Config) -> Result<Groups, String> {
        let mut out = HashMap::new();
        for (name, g) in &config.upstream.groups {
            let group = Group::build(name, g, config)
                .map_err(|e| format!("upstream.groups.{name}: {e}"))?;
            out.insert(name.clone(), Arc::new(group));
        }
        Ok(Groups(out))
    }
    pub fn get(&self, name: &str) -> Option<&Arc<Group>> {
        self.0.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::target::Address;
    use super::*;

    fn group(yaml: &str) -> Group {
        let config = crate::config::load_str(yaml, &|_| None).unwrap();
        Group::build("default", &config.upstream.groups["default"], &config).unwrap()
    }

    const TWO: &str = "
upstream:
  groups:
    default:
      servers:
        - {id: a, url: http://files.example:3001/mcp}
        - {id: b, url: http://127.0.0.1:3002/mcp}
";

    #[test]
    fn an_unresolved_server_is_down_and_a_new_address_swaps_its_peer() {
        let g = group(TWO);
        let a = g.server_by_id("a").unwrap();
        assert!(!a.is_up() && a.peer(Duration::from_secs(1)).is_none());
        // Only b can be chosen while a has no address.
        g.server_by_id("b")
            .unwrap()
            .set_address(Address::Inet("127.0.0.1:3002".parse().unwrap()))
            .unwrap();
        for _ in 0..4 {
            assert_eq!(g.select(None, &[]).unwrap().1.id, "b");
        }
        // Resolved: up, and later address changes reach new requests' peers.
        let first: SocketAddr = "10.0.0.1:3001".parse().unwrap();
        let second: SocketAddr = "10.0.0.2:3001".parse().unwrap();
        assert!(a.set_address(Address::Inet(first)).unwrap());
        assert!(a.is_up());
        assert!(!a.set_address(Address::Inet(first)).unwrap(), "unchanged");
        assert!(a.set_address(Address::Inet(second)).unwrap());
        let peer = a.peer(Duration::from_secs(7)).unwrap();
        assert_eq!(peer._address.to_string(), second.to_string());
        assert_eq!(peer.sni, "files.example");
        assert_eq!(peer.options.read_timeout, Some(Duration::from_secs(7)));
        // Tried servers are skipped; with every server tried there is none.
        let (i, _) = g.select(None, &[]).unwrap();
        let (j, _) = g.select(None, &[i]).unwrap();
        assert_ne!(i, j);
        assert!(g.select(None, &[0, 1]).is_none());
        assert!(!g.has_untried(&[0, 1]) && g.has_untried(&[0]));
    }

    #[test]
    fn down_servers_are_skipped() {
        let g = group(TWO);
        for s in &g.servers {
            s.set_address(Address::Inet("127.0.0.1:1".parse().unwrap()))
                .unwrap();
        }
        g.servers[0].set_healthy(false);
        assert!(g.any_up());
        for _ in 0..4 {
            assert_eq!(g.select(None, &[]).unwrap().1.id, "b");
        }
        g.servers[1].set_healthy(false);
        assert!(!g.any_up() && g.select(None, &[]).is_none());
    }

    #[test]
    fn smooth_schedule_interleaves() {
        assert_eq!(smooth_schedule(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(smooth_schedule(&[100, 100]), vec![0, 1]);
        assert_eq!(smooth_schedule(&[300, 100]), vec![0, 0, 1, 0]);
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|&&x| x == 0).count(), 5);
        assert_ne!(s[..3], [0, 0, 0], "not bursty");
    }
}
