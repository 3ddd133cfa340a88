//! A group: interchangeable replicas of one MCP server, and how one is chosen.
//!
//! The members (servers, id index, selector) sit behind an `ArcSwap`: the request path
//! reads them lock-free, and the admin API replaces them whole when it adds or removes a
//! server. Requests keep the `Arc<Server>` they chose, so a removed server finishes what
//! it was doing. Selectors:
//! * `round_robin` / `weighted_round_robin`: a precomputed *smooth* weighted schedule
//!   (nginx's algorithm, run when the members change) walked by an atomic counter.
//!   Pingora's own weighted round robin repeats each backend `weight` times in a row;
//!   the schedule interleaves them (weights 3:1 → a a b a, not a a a … b);
//! * `ip_hash`: Pingora's Ketama consistent hashing on the client IP, over ring
//!   identities derived from server ids (the same ring on every gateway replica);
//! * `least_connections`, which Pingora lacks: the server with the fewest in-flight
//!   requests (open SSE streams included), ties broken in rotation.

use super::breaker;
use super::server::{InFlight, PeerSettings, Server, ToolCatalog};
use crate::config::{BreakerConfig, Config, GroupConfig, Strategy};
use arc_swap::ArcSwap;
use pingora::lb::discovery::Static;
use pingora::lb::selection::Consistent;
use pingora::lb::{Backend, Backends, LoadBalancer};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

enum Selector {
    /// Server indexes in smooth weighted order.
    RoundRobin(Vec<u32>),
    IpHash(LoadBalancer<Consistent>),
    LeastConnections,
}

/// One version of a group's membership.
pub struct Members {
    pub servers: Vec<Arc<Server>>,
    by_id: HashMap<String, usize>,
    selector: Selector,
}

impl Members {
    fn build(servers: Vec<Arc<Server>>, strategy: Strategy) -> Result<Members, String> {
        let by_id = servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let selector = match strategy {
            Strategy::RoundRobin => Selector::RoundRobin(smooth_schedule(&vec![1; servers.len()])),
            Strategy::WeightedRoundRobin => Selector::RoundRobin(smooth_schedule(
                &servers.iter().map(|s| s.weight).collect::<Vec<_>>(),
            )),
            Strategy::IpHash => Selector::IpHash(balancer(&servers)?),
            Strategy::LeastConnections => Selector::LeastConnections,
        };
        Ok(Members {
            servers,
            by_id,
            selector,
        })
    }
}

/// What adding a server to a group at runtime needs from its config.
struct Template {
    strategy: Strategy,
    settings: PeerSettings,
    checked: bool,
    breaker: BreakerConfig,
}

/// A set of interchangeable replicas.
pub struct Group {
    pub name: String,
    pub preserve_host: bool,
    /// Other servers to try when a request could not be sent.
    pub retries: u32,
    /// `connection_pool.max_idle_per_host: 0`: upstream requests say `Connection: close`.
    pub close_connections: bool,
    /// Tool names the group's servers listed in `tools/list` answers (metric labels).
    pub tools: ToolCatalog,
    /// The credential header sent to this group's servers (`upstream_auth`).
    pub upstream_auth: Option<(http::HeaderName, http::HeaderValue)>,
    /// Servers carried over from the group this one replaced (a reload).
    pub kept: usize,
    /// Signs the client's identity for this group's servers (`forward_identity`).
    pub forward_identity: Option<crate::security::forward_identity::ForwardIdentity>,
    members: ArcSwap<Members>,
    template: Template,
    /// Round-robin position and least-connections tie-break rotation.
    next: AtomicUsize,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("servers", &self.members.load().servers)
            .finish()
    }
}

/// Backends carry the index of their server in `ext`.
#[derive(Clone, Copy)]
struct ServerIndex(usize);

impl Group {
    /// Build a group. Names are not resolved here: see [`Group::resolve_all`].
    pub fn build(name: &str, g: &GroupConfig, config: &Config) -> Result<Group, String> {
        Self::build_reusing(name, g, config, None)
    }

    /// [`Group::build`], taking the servers of `previous` that are unchanged (same id,
    /// URL and weight) as they are.
    pub fn build_reusing(
        name: &str,
        g: &GroupConfig,
        config: &Config,
        previous: Option<&Group>,
    ) -> Result<Group, String> {
        let ca = match &g.tls.ca_file {
            Some(path) => Some(super::load_ca(path)?),
            None => None,
        };
        let template = Template {
            strategy: g.strategy,
            settings: PeerSettings {
                sni: g.tls.sni.clone(),
                verify: g.tls.verify,
                ca,
                connect_timeout: config.timeouts.connect.0,
                write_timeout: config.timeouts.stream_idle.0,
                idle_timeout: config.upstream.connection_pool.idle_timeout.0,
                max_connections: g.connection_pool.max_connections_per_host,
            },
            checked: g.health_check.is_some(),
            breaker: g.circuit_breaker.clone(),
        };
        let mut servers = Vec::with_capacity(g.servers.len());
        let mut kept = 0;
        for s in &g.servers {
            let same = previous.and_then(|p| {
                p.server_by_id(&s.id).filter(|o| {
                    o.url == s.url
                        && o.weight == s.weight
                        && o.max_connections() == g.connection_pool.max_connections_per_host
                })
            });
            if let Some(server) = same {
                servers.push(server.clone());
                kept += 1;
                continue;
            }
            servers.push(Arc::new(Server::new(
                name,
                &s.id,
                &s.url,
                s.weight,
                template.settings.clone(),
                template.checked,
                &template.breaker,
            )?));
        }
        Ok(Group {
            name: name.to_string(),
            preserve_host: g.preserve_host,
            retries: g.retries,
            close_connections: config.upstream.connection_pool.max_idle_per_host == 0,
            tools: ToolCatalog::default(),
            upstream_auth: g.upstream_auth.as_ref().map(|a| a.header()).transpose()?,
            kept,
            forward_identity: g
                .forward_identity
                .as_ref()
                .map(|f| crate::security::forward_identity::ForwardIdentity::new(name, f))
                .transpose()?,
            members: ArcSwap::from_pointee(Members::build(servers, g.strategy)?),
            template,
            next: AtomicUsize::new(0),
        })
    }

    pub fn strategy(&self) -> Strategy {
        self.template.strategy
    }

    /// The current servers (a snapshot; membership may change after).
    pub fn servers(&self) -> Vec<Arc<Server>> {
        self.members.load().servers.clone()
    }

    /// Resolve every server's address; a name that does not resolve leaves that server
    /// down (and is retried every `resolve_interval`). Returns the problems found.
    pub async fn resolve_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for server in self.servers() {
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
        self.members.load().servers.iter().any(|s| s.is_up())
    }

    /// Choose a server for a request that is not bound to a session, skipping servers that
    /// are down, draining, whose breaker is open, or whose `uid` is in `tried` (failover).
    /// `client` is the client's IP, used by `ip_hash`. The attempt holds the breaker's
    /// permit (see [`InFlight`]).
    pub fn select(&self, client: Option<IpAddr>, tried: &[u64]) -> Option<InFlight> {
        let now = breaker::now_ms();
        let members = self.members.load();
        let servers = &members.servers;
        let usable = |i: usize| !tried.contains(&servers[i].uid) && servers[i].candidate(now);
        let claim = |i: usize| {
            if usable(i) {
                servers[i].claim(now).map(|p| (i, p))
            } else {
                None
            }
        };
        let (index, permit) = match &members.selector {
            Selector::RoundRobin(schedule) => {
                let len = schedule.len().max(1);
                let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
                (0..schedule.len())
                    .map(|k| schedule[(start + k) % len] as usize)
                    .find_map(claim)
            }
            Selector::IpHash(lb) => {
                let key = match client {
                    Some(IpAddr::V4(ip)) => ip.octets().to_vec(),
                    Some(IpAddr::V6(ip)) => ip.octets().to_vec(),
                    None => Vec::new(),
                };
                let claimed = std::cell::Cell::new(None);
                let accept = |b: &Backend, _: bool| {
                    b.ext.get::<ServerIndex>().is_some_and(|&ServerIndex(i)| {
                        claim(i).map(|(_, p)| claimed.set(Some(p))).is_some()
                    })
                };
                let index = backend_index(lb.select_with(&key, 256, accept));
                index.zip(claimed.take())
            }
            Selector::LeastConnections => {
                // Start the scan at a rotating offset so ties spread evenly. A server whose
                // breaker refuses the claim (a half-open race) is passed over; `passed`
                // allocates only then.
                let n = servers.len();
                let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
                let mut passed: Vec<usize> = Vec::new();
                loop {
                    let best = (0..n)
                        .map(|k| (start + k) % n)
                        .filter(|&i| usable(i) && !passed.contains(&i))
                        .min_by_key(|&i| servers[i].in_flight());
                    match best {
                        Some(i) => match servers[i].claim(now) {
                            Some(p) => break Some((i, p)),
                            None => passed.push(i),
                        },
                        None => break None,
                    }
                }
            }
        }?;
        Some(InFlight::with_permit(servers.get(index)?.clone(), permit))
    }

    /// Is there a server not in `tried` that could take a request now? (Claims nothing.)
    pub fn has_untried(&self, tried: &[u64]) -> bool {
        let now = breaker::now_ms();
        self.members
            .load()
            .servers
            .iter()
            .any(|s| !tried.contains(&s.uid) && s.candidate(now))
    }

    pub fn server_by_id(&self, id: &str) -> Option<Arc<Server>> {
        let members = self.members.load();
        members.by_id.get(id).map(|&i| members.servers[i].clone())
    }

    /// A new server for this group, built like the configured ones (not yet a member).
    pub fn new_server(&self, id: &str, url: &str, weight: u32) -> Result<Server, String> {
        Server::new(
            &self.name,
            id,
            url,
            weight,
            self.template.settings.clone(),
            self.template.checked,
            &self.template.breaker,
        )
    }

    /// Add a server. Fails if its id or host and port is taken in the group.
    pub fn add(&self, server: Arc<Server>) -> Result<(), String> {
        let current = self.members.load();
        if current.by_id.contains_key(&server.id) {
            return Err(format!(
                "group {:?} already has a server {:?}",
                self.name, server.id
            ));
        }
        if let Some(other) = current
            .servers
            .iter()
            .find(|s| s.target.endpoint == server.target.endpoint)
        {
            return Err(format!(
                "server {:?} of group {:?} already has that address",
                other.id, self.name
            ));
        }
        let mut servers = current.servers.clone();
        servers.push(server);
        self.members
            .store(Arc::new(Members::build(servers, self.template.strategy)?));
        Ok(())
    }

    /// Remove a server; its in-flight requests finish, its sessions get `404`. The last
    /// server of a group cannot be removed.
    pub fn remove(&self, id: &str) -> Result<Arc<Server>, String> {
        let current = self.members.load();
        let &index = current
            .by_id
            .get(id)
            .ok_or_else(|| format!("group {:?} has no server {id:?}", self.name))?;
        if current.servers.len() == 1 {
            return Err(format!(
                "{id:?} is the last server of group {:?}; a group needs at least one",
                self.name
            ));
        }
        let mut servers = current.servers.clone();
        let removed = servers.remove(index);
        self.members
            .store(Arc::new(Members::build(servers, self.template.strategy)?));
        Ok(removed)
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
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
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
