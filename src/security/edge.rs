//! Where a request comes from and whom it is for, decided before anything else is read.
//!
//! * The client's address ([`client_ip`]): the connection's peer, unless the peer is one
//!   of `server.trusted_proxies`; then the right-most address of `X-Forwarded-For` that
//!   is not a trusted proxy. Rate limits, `ip_hash`, the access log and the
//!   `X-Forwarded-For` / `X-Real-IP` the upstream gets all use it.
//! * The `Host` a request names (`server.allowed_hosts`, `admin.allowed_hosts`): a name
//!   that is not in the list is answered `421` (DNS-rebinding protection: a web page
//!   whose name the attacker re-points at the gateway sends its own name as `Host`).
//!   Loopback listeners allow `localhost`, `127.0.0.1` and `[::1]` by default; other
//!   listeners check nothing unless a list is set.

use crate::config::{AdminConfig, ServerConfig};
use crate::error::GatewayError;
use http::HeaderMap;
use pingora::http::RequestHeader;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The hosts a loopback listener answers for when no list is set (any port).
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

const XFF: &str = "x-forwarded-for";

/// An address block (`10.0.0.0/8`, `fd00::/8`) or one address (`10.0.0.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| {
            format!(
                "{s:?} is not an IP address or CIDR block (e.g. 10.0.0.7, 10.0.0.0/8, fd00::/8)"
            )
        })?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        let masked = mask(net, prefix);
        if masked != net {
            return Err(format!(
                "{s:?} has address bits set past its /{prefix} prefix (did you mean {masked}/{prefix}, or {net}/{max} for the one address?)"
            ));
        }
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// IPv4 clients of a dual-stack listener (`::ffff:a.b.c.d`) are IPv4 clients.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One entry of an `allowed_hosts` list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    /// Lower case, without a trailing dot; IPv6 literals keep their brackets.
    /// For `*.example.com`: `.example.com`.
    name: String,
    /// `*.example.com`: any name ending in `.example.com`.
    subdomains: bool,
    /// Only this port (the scheme's default when the request names none).
    port: Option<u16>,
}

impl HostPattern {
    fn parse(entry: &str) -> Result<HostPattern, String> {
        let (subdomains, rest) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        let bad = || {
            format!(
                "{entry:?} is not a host name (e.g. mcp.example.com, mcp.example.com:8443, *.example.com, 127.0.0.1, [::1])"
            )
        };
        let (host, port) = split_authority(rest).ok_or_else(bad)?;
        let valid = if let Some(v6) = host.strip_prefix('[') {
            !subdomains
                && v6
                    .strip_suffix(']')
                    .is_some_and(|a| a.parse::<Ipv6Addr>().is_ok())
        } else {
            host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        };
        if !valid {
            return Err(bad());
        }
        let name = normalize(host);
        Ok(HostPattern {
            name: if subdomains { format!(".{name}") } else { name },
            subdomains,
            port,
        })
    }

    fn matches(&self, host: &str, port: Option<u16>, default_port: u16) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        let name_ok = if self.subdomains {
            host.len() > self.name.len()
                && host.is_char_boundary(host.len() - self.name.len())
                && host[host.len() - self.name.len()..].eq_ignore_ascii_case(&self.name)
        } else {
            host.eq_ignore_ascii_case(&self.name)
        };
        name_ok && self.port.is_none_or(|p| p == port.unwrap_or(default_port))
    }
}

fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// `host[:port]` → (host, port); IPv6 literals in brackets. `None`: not an authority.
pub fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if a.starts_with('[') {
        let end = a.find(']')?;
        let (host, rest) = a.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return None,
            None => (a, None),
        }
    };
    if host.is_empty() || host.contains(['@', '/', '\\', ' ']) {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// The `Host` names a listener answers for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Option<Vec<HostPattern>>);

impl AllowedHosts {
    /// `list` as configured (unset: the loopback names on a loopback `listener`, else
    /// any host; `[]`: any host). Errors are `(path, message)` under `key`.
    pub fn build(
        list: Option<&[String]>,
        listener: &str,
        key: &str,
    ) -> Result<AllowedHosts, Vec<(String, String)>> {
        let loopback = listener
            .parse::<IpAddr>()
            .is_ok_and(|ip| canonical(ip).is_loopback());
        let entries: Vec<String> = match list {
            Some(l) => l.to_vec(),
            None if loopback => LOOPBACK_HOSTS.map(String::from).to_vec(),
            None => return Ok(AllowedHosts(None)),
        };
        if entries.is_empty() {
            return Ok(AllowedHosts(None));
        }
        let mut errs = Vec::new();
        let mut patterns = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            match HostPattern::parse(e.trim()) {
                Ok(p) => patterns.push(p),
                Err(m) => errs.push((format!("{key}[{i}]"), m)),
            }
        }
        if errs.is_empty() {
            Ok(AllowedHosts(Some(patterns)))
        } else {
            Err(errs)
        }
    }

    /// Is the `Host` checked at all?
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Is `authority` (`host[:port]`) one of the allowed hosts?
    pub fn allows(&self, authority: &str, default_port: u16) -> bool {
        let Some(patterns) = &self.0 else {
            return true;
        };
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        patterns.iter().any(|p| p.matches(host, port, default_port))
    }

    /// Refuse a request for a foreign host (or none) with `421`. `probe`: a health probe,
    /// which may also name no host or an IP address (load balancers and the kubelet send
    /// the address they connect to; a DNS-rebinding page always sends a name).
    /// `setting` names the list in the error.
    /// `https`: the client's scheme (for the default port of a request without one).
    pub fn check(
        &self,
        req: &RequestHeader,
        https: bool,
        probe: bool,
        setting: &'static str,
    ) -> Result<(), GatewayError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let default_port = if https { 443 } else { 80 };
        let refused = |host: String| GatewayError::MisdirectedRequest { host, setting };
        match authority(req) {
            Ok(None) if probe => Ok(()),
            Ok(None) => Err(refused(String::new())),
            Ok(Some(a)) if self.allows(a, default_port) => Ok(()),
            Ok(Some(a)) if probe && is_ip_literal(a) => Ok(()),
            Ok(Some(a)) => Err(refused(a.to_string())),
            Err(raw) => Err(refused(raw)),
        }
    }
}

fn is_ip_literal(authority: &str) -> bool {
    split_authority(authority).is_some_and(|(host, _)| {
        host.parse::<Ipv4Addr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<Ipv6Addr>().is_ok())
    })
}

/// The authority a request names: HTTP/2's `:authority` (and an HTTP/1 absolute-form
/// target) are in the URI, else the `Host` field (Pingora refuses a request whose two
/// disagree, or with two `Host` fields). `Err`: a `Host` that is not text (as sent, lossily).
pub fn authority(req: &RequestHeader) -> Result<Option<&str>, String> {
    if let Some(a) = req.uri.authority() {
        return Ok(Some(a.as_str()));
    }
    match req.headers.get(http::header::HOST) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    }
}

/// What the edge knows about the network in front of the gateway.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    trusted: Vec<Cidr>,
    /// `server.allowed_hosts`.
    pub hosts: AllowedHosts,
    /// `admin.allowed_hosts`.
    pub admin_hosts: AllowedHosts,
}

impl Edge {
    pub fn build(
        server: &ServerConfig,
        admin: &AdminConfig,
    ) -> Result<Edge, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut trusted = Vec::with_capacity(server.trusted_proxies.len());
        for (i, entry) in server.trusted_proxies.iter().enumerate() {
            match Cidr::parse(entry) {
                Ok(c) => trusted.push(c),
                Err(m) => errs.push((format!("server.trusted_proxies[{i}]"), m)),
            }
        }
        let mut allowed = |list: Option<&[String]>, host: &str, at: &str| {
            AllowedHosts::build(list, host, at).unwrap_or_else(|e| {
                errs.extend(e);
                AllowedHosts::default()
            })
        };
        let hosts = allowed(
            server.allowed_hosts.as_deref(),
            &server.host,
            "server.allowed_hosts",
        );
        let admin_hosts = allowed(
            admin.allowed_hosts.as_deref(),
            &admin.host,
            "admin.allowed_hosts",
        );
        if errs.is_empty() {
            Ok(Edge {
                trusted,
                hosts,
                admin_hosts,
            })
        } else {
            Err(errs)
        }
    }

    /// Is `peer` one of `server.trusted_proxies`?
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }

    /// The client's address: `peer`, or for a trusted proxy the right-most address of
    /// `X-Forwarded-For` that is not a trusted proxy (all of them trusted: the left-most;
    /// an entry that is no address ends the walk at the last address before it).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        // Several fields are one list, in order; walk it from the right.
        for field in headers.get_all(XFF).iter().rev() {
            let Ok(text) = field.to_str() else {
                return client;
            };
            for entry in text.rsplit(',') {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = parse_forwarded_ip(entry) else {
                    return client;
                };
                client = ip;
                if !self.is_trusted(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    let (host, _) = split_authority(entry)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<IpAddr>().ok().map(canonical)
}

/// The connection's peer address (`None` on a Unix socket).
pub fn peer_ip(session: &pingora::protocols::http::ServerSession) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| canonical(a.ip()))
}

/// The client's address as the gateway decides it (see [`Edge::client_ip`]): what rate
/// limits, `ip_hash`, the access log and the forwarded headers use.
pub fn client_ip(session: &pingora::protocols::http::ServerSession, edge: &Edge) -> Option<IpAddr> {
    peer_ip(session).map(|peer| edge.client_ip(peer, &session.req_header().headers))
}

/// The scheme the client used: the listener's, or the `X-Forwarded-Proto` (`http` or
/// `https`) of a trusted proxy that terminated the client's connection.
pub fn scheme(session: &pingora::protocols::http::ServerSession, edge: &Edge) -> &'static str {
    let tls = session
        .digest()
        .is_some_and(|d| d.ssl_digest.as_ref().is_some());
    let listener = if tls { "https" } else { "http" };
    if !peer_ip(session).is_some_and(|p| edge.is_trusted(p)) {
        return listener;
    }
    match session
        .req_header()
        .headers
        .get("x-forwarded-proto")
        .map(|v| v.as_bytes())
    {
        Some(p) if p.eq_ignore_ascii_case(b"https") => "https",
        Some(p) if p.eq_ignore_ascii_case(b"http") => "http",
        _ => listener,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(trusted: &[&str]) -> Edge {
        Edge {
            trusted: trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            ..Edge::default()
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(XFF, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::2")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        for bad in [
            "10.0.0.0/33",
            "nope",
            "10.0.0.1/8",
            "fd00::/129",
            "10.0.0.0/x",
            "",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let e = edge(&[]);
        assert_eq!(
            e.client_ip(ip("9.9.9.9"), &xff(&["6.6.6.6"])),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let e = edge(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        assert_eq!(e.client_ip(peer, &HeaderMap::new()), peer);
        assert_eq!(
            e.client_ip(peer, &xff(&["6.6.6.6, 1.2.3.4, 10.0.0.5"])),
            ip("1.2.3.4")
        );
        // Two fields are one list.
        assert_eq!(
            e.client_ip(peer, &xff(&["6.6.6.6, 1.2.3.4", "10.0.0.5"])),
            ip("1.2.3.4")
        );
        // All trusted: the left-most.
        assert_eq!(
            e.client_ip(peer, &xff(&["10.0.0.9, 10.0.0.5"])),
            ip("10.0.0.9")
        );
        // Garbage stops the walk at the last address seen.
        assert_eq!(
            e.client_ip(peer, &xff(&["1.2.3.4, junk, 10.0.0.5"])),
            ip("10.0.0.5")
        );
        assert_eq!(
            e.client_ip(peer, &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(e.client_ip(peer, &xff(&["5.6.7.8:1234"])), ip("5.6.7.8"));
        // An untrusted peer's header is ignored.
        assert_eq!(
            e.client_ip(ip("8.8.8.8"), &xff(&["1.2.3.4"])),
            ip("8.8.8.8")
        );
    }

    fn hosts(list: Option<&[&str]>, listener: &str) -> AllowedHosts {
        let list: Option<Vec<String>> = list.map(|l| l.iter().map(|s| s.to_string()).collect());
        AllowedHosts::build(list.as_deref(), listener, "server.allowed_hosts").unwrap()
    }

    #[test]
    fn loopback_listeners_allow_loopback_names_by_default() {
        let h = hosts(None, "127.0.0.1");
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "127.0.0.1:1",
            "[::1]:9",
        ] {
            assert!(h.allows(ok, 80), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil",
            "127.0.0.2",
            "",
            "[::1",
        ] {
            assert!(!h.allows(no, 80), "{no}");
        }
        assert!(hosts(None, "::1").is_enabled());
        assert!(!hosts(None, "0.0.0.0").is_enabled());
        assert!(!hosts(Some(&[]), "127.0.0.1").is_enabled());
        assert!(hosts(Some(&["a.example"]), "0.0.0.0").is_enabled());
    }

    #[test]
    fn host_patterns() {
        let h = hosts(
            Some(&["mcp.example.com:8443", "*.corp.example", "[2001:db8::1]"]),
            "0.0.0.0",
        );
        assert!(h.allows("mcp.example.com:8443", 443));
        assert!(!h.allows("mcp.example.com", 443));
        assert!(hosts(Some(&["mcp.example.com:443"]), "0.0.0.0").allows("mcp.example.com", 443));
        assert!(h.allows("a.corp.example", 80));
        assert!(h.allows("a.b.CORP.example:1", 80));
        assert!(!h.allows("corp.example", 80));
        assert!(!h.allows("evilcorp.example", 80));
        assert!(h.allows("[2001:db8::1]:80", 80));
        let list: Vec<String> = [
            "ok.example",
            "bad host",
            "*.[::1]",
            "a:b:c",
            "x.example:99999",
            "[::1",
        ]
        .map(String::from)
        .to_vec();
        let errs = AllowedHosts::build(Some(&list), "0.0.0.0", "admin.allowed_hosts").unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "admin.allowed_hosts[1]",
                "admin.allowed_hosts[2]",
                "admin.allowed_hosts[3]",
                "admin.allowed_hosts[4]",
                "admin.allowed_hosts[5]"
            ]
        );
    }
}
