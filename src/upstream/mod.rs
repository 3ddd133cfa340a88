//! Upstream groups: the replicas of each MCP server ([`group`]), each replica's live state
//! ([`server`]), how one is chosen, the one request-and-answer exchange with a server
//! ([`exchange`]) over connections kept per thread ([`pool`]), and the background upkeep that checks
//! them ([`health`]). See docs/upstreams.md and docs/architecture.md.

pub mod answer;
pub mod breaker;
pub mod exchange;
pub mod group;
pub mod head;
pub mod health;
pub mod pool;
pub mod server;
pub mod target;

pub use group::{smooth_schedule, Group, Members};
pub use server::{InFlight, Server, ToolCatalog};

use crate::config::Config;
use pingora::utils::tls::WrappedX509;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) fn load_ca(path: &str) -> Result<Arc<[WrappedX509]>, String> {
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
    /// Set the per-server state gauges (up, breaker state, in flight) before the metrics
    /// are rendered.
    pub fn publish_gauges(&self) {
        let m = &crate::telemetry::metrics::METRICS;
        for group in self.0.values() {
            for s in &group.servers() {
                let labels = [group.name.as_str(), s.id.as_str()];
                m.upstream_up
                    .with_label_values(&labels)
                    .set(i64::from(s.is_up()));
                m.breaker_state
                    .with_label_values(&labels)
                    .set(s.breaker.state().gauge_value());
                m.upstream_in_flight
                    .with_label_values(&labels)
                    .set(s.in_flight() as i64);
            }
        }
    }

    pub fn build(config: &Config) -> Result<Groups, String> {
        Self::build_from(config, None).map(|(g, _)| g)
    }

    /// Build the groups of `config`, carrying over from `previous` (the running config
    /// and its groups) every server that is unchanged: same group, id, URL and weight,
    /// and the same group and timeout settings. Carried-over servers keep their health,
    /// breaker, in-flight count and sessions. Also returns how many were carried over.
    pub fn build_from(
        config: &Config,
        previous: Option<(&Config, &Groups)>,
    ) -> Result<(Groups, usize), String> {
        let mut out = HashMap::new();
        let mut kept = 0;
        for (name, g) in &config.upstream.groups {
            let reusable = previous.and_then(|(old, groups)| {
                let og = old.upstream.groups.get(name)?;
                let same = og.tls == g.tls
                    && og.circuit_breaker == g.circuit_breaker
                    && og.health_check.is_some() == g.health_check.is_some()
                    && old.timeouts.connect == config.timeouts.connect
                    && old.timeouts.stream_idle == config.timeouts.stream_idle
                    && old.upstream.connection_pool == config.upstream.connection_pool;
                same.then(|| groups.get(name)).flatten()
            });
            let group = Group::build_reusing(name, g, config, reusable.map(|g| g.as_ref()))
                .map_err(|e| format!("upstream.groups.{name}: {e}"))?;
            kept += group.kept;
            out.insert(name.clone(), Arc::new(group));
        }
        Ok((Groups(out), kept))
    }
    pub fn get(&self, name: &str) -> Option<&Arc<Group>> {
        self.0.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::target::Address;
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

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
        let a = &a;
        assert!(!a.is_up() && a.peer(Duration::from_secs(1)).is_none());
        // Only b can be chosen while a has no address.
        g.server_by_id("b")
            .unwrap()
            .set_address(Address::Inet("127.0.0.1:3002".parse().unwrap()))
            .unwrap();
        for _ in 0..4 {
            assert_eq!(g.select(None, &[]).unwrap().id, "b");
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
        // No upgrade handshake is ever forwarded to a server.
        assert!(
            peer.options.http_upstream_request_policy
                == pingora::upstreams::peer::HttpUpstreamRequestPolicy::deny_upgrades()
        );
        // Tried servers are skipped; with every server tried there is none.
        let servers = g.servers();
        let (ua, ub) = (servers[0].uid, servers[1].uid);
        let i = g.select(None, &[]).unwrap().uid;
        let j = g.select(None, &[i]).unwrap().uid;
        assert_ne!(i, j);
        assert!(g.select(None, &[ua, ub]).is_none());
        assert!(!g.has_untried(&[ua, ub]) && g.has_untried(&[ua]));
    }

    #[test]
    fn down_servers_are_skipped() {
        let g = group(TWO);
        let servers = g.servers();
        for s in &servers {
            s.set_address(Address::Inet("127.0.0.1:1".parse().unwrap()))
                .unwrap();
        }
        servers[0].set_healthy(false);
        assert!(g.any_up());
        for _ in 0..4 {
            assert_eq!(g.select(None, &[]).unwrap().id, "b");
        }
        servers[1].set_healthy(false);
        assert!(!g.any_up() && g.select(None, &[]).is_none());
    }

    #[test]
    fn an_attempt_dropped_unjudged_gives_its_probe_permit_back() {
        for strategy in ["round_robin", "ip_hash", "least_connections"] {
            let g = group(&format!(
                "
upstream:
  groups:
    default:
      strategy: {strategy}
      circuit_breaker: {{failure_threshold: 1, open_for: 1s, half_open_requests: 1}}
      servers:
        - {{id: a, url: http://127.0.0.1:3001/mcp}}
"
            ));
            let a = g.server_by_id("a").unwrap();
            a.set_address(Address::Inet("127.0.0.1:3001".parse().unwrap()))
                .unwrap();
            let mut first = g.select(None, &[]).unwrap();
            assert_eq!(
                first.record(false, breaker::now_ms()),
                Some(breaker::State::Open)
            );
            std::thread::sleep(Duration::from_millis(1050));
            // Half-open: one probe permit, held by the attempt.
            let probe = g.select(None, &[]).unwrap();
            assert_eq!(a.breaker.state(), breaker::State::HalfOpen);
            assert!(
                g.select(None, &[]).is_none(),
                "{strategy}: one probe at a time"
            );
            assert_eq!(a.in_flight(), 2);
            drop(probe);
            assert_eq!(a.in_flight(), 1);
            let mut next = g.select(None, &[]).expect("the permit came back");
            assert_eq!(
                next.record(true, breaker::now_ms()),
                Some(breaker::State::Closed)
            );
            assert_eq!(next.record(false, breaker::now_ms()), None, "recorded once");
            drop((first, next));
            assert_eq!(a.in_flight(), 0);
        }
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
