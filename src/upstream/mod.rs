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

pub mod target;

use crate::config::{Config, GroupConfig, Strategy};
use pingora::lb::discovery::Static;
use pingora::lb::selection::Consistent;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use target::{Address, Target};

/// One replica of an upstream MCP server.
#[derive(Debug)]
pub struct Server {
    pub id: String,
    pub target: Target,
    pub weight: u32,
    /// Requests (and open streams) currently proxied to this server.
    in_flight: AtomicUsize,
    peer: HttpPeer,
}

impl Server {
    /// A fresh peer for one request (Pingora takes it by value).
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.peer.clone())
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
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
    pub fn build(name: &str, g: &GroupConfig, config: &Config) -> Result<Group, String> {
        let ca = match &g.tls.ca_file {
            Some(path) => Some(load_ca(path)?),
            None => None,
        };
        let mut servers = Vec::with_capacity(g.servers.len());
        for s in &g.servers {
            let target = Target::from_url(&s.url)?;
            let sni = g.tls.sni.clone().unwrap_or_else(|| target.host.clone());
            let mut peer = match &target.address {
                Address::Inet(a) => HttpPeer::new(*a, target.tls, sni),
                Address::Unix(p) => HttpPeer::new_uds(&p.to_string_lossy(), false, String::new())
                    .map_err(|e| format!("server {}: {e}", s.id))?,
            };
            peer.options.connection_timeout = Some(config.timeouts.connect.0);
            peer.options.read_timeout = Some(config.timeouts.stream_idle.0);
            peer.options.write_timeout = Some(config.timeouts.stream_idle.0);
            peer.options.verify_cert = g.tls.verify;
            peer.options.verify_hostname = g.tls.verify;
            peer.options.ca = ca.clone();
            servers.push(Arc::new(Server {
                id: s.id.clone(),
                target,
                weight: s.weight,
                in_flight: AtomicUsize::new(0),
                peer,
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
            by_id,
            selector,
        })
    }

    /// Choose a server for a request that is not bound to a session.
    /// `client` is the client's IP, used by `ip_hash`.
    pub fn select(&self, client: Option<IpAddr>) -> Option<&Arc<Server>> {
        let index = match &self.selector {
            Selector::RoundRobin { schedule, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % schedule.len().max(1);
                schedule.get(i).map(|&s| s as usize)
            }
            Selector::IpHash(lb) => {
                let key = match client {
                    Some(IpAddr::V4(ip)) => ip.octets().to_vec(),
                    Some(IpAddr::V6(ip)) => ip.octets().to_vec(),
                    None => Vec::new(),
                };
                backend_index(lb.select(&key, self.servers.len() * 4))
            }
            Selector::LeastConnections(tiebreak) => {
                // Start the scan at a rotating offset so ties spread evenly.
                let n = self.servers.len();
                let start = tiebreak.fetch_add(1, Ordering::Relaxed) % n.max(1);
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| self.servers[i].in_flight())
            }
        }?;
        self.servers.get(index)
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

fn balancer<S>(servers: &[Arc<Server>]) -> Result<LoadBalancer<S>, String>
where
    S: pingora::lb::selection::BackendSelection + 'static,
    S::Iter: pingora::lb::selection::BackendIter,
{
    let mut set = BTreeSet::new();
    for (i, s) in servers.iter().enumerate() {
        let addr = match &s.target.address {
            Address::Inet(a) => pingora::protocols::l4::socket::SocketAddr::Inet(*a),
            Address::Unix(p) => pingora::protocols::l4::socket::SocketAddr::Unix(
                std::os::unix::net::SocketAddr::from_pathname(p)
                    .map_err(|e| format!("server {}: {e}", s.id))?,
            ),
        };
        let mut b = Backend {
            addr,
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
    use super::smooth_schedule;

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
