//! Where one upstream server lives: parsed from its configured URL.
//!
//! `http://host:port/path`, `https://host:port/path` (TLS with SNI) and
//! `unix:///path/to.sock:/mcp` (a Unix socket, then the HTTP path), and
//! `sse+http://host:port/sse` and `ws://host:port/mcp` (a legacy HTTP+SSE or a WebSocket
//! server, reached through the gateway's own bridge socket to it: `transport`). Parsing
//! does no DNS;
//! [`Target::resolve`] turns a host name into an address (at start and then every
//! `resolve_interval`), so `HttpPeer` never sees an unresolvable name (it would panic).

use http::Uri;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A resolved place to connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Where a server lives as written in its URL: a host name (or IP) and port, or a socket path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    pub tls: bool,
    /// `host[:port]` as written in the URL: sent as `Host` unless the group preserves the
    /// client's (made into a field value once, not on every request).
    pub authority: http::HeaderValue,
    /// The host name (no port), used for SNI and certificate verification.
    pub host: String,
    /// The upstream's request path (and query), which replaces the route's path.
    pub path: String,
}

impl Target {
    pub fn from_url(url: &str) -> Result<Target, String> {
        if crate::config::stdio::is_remote(url) {
            // A legacy HTTP+SSE or WebSocket server: reached through the gateway's own
            // bridge to it (`transport`), which opens a connection per session.
            let inner = match url.strip_prefix(crate::config::stdio::LEGACY_SSE) {
                Some(inner) => inner.to_string(),
                None => url.replacen("ws", "http", 1),
            };
            let t = Target::from_url(&inner)?;
            if matches!(t.endpoint, Endpoint::Unix(_)) {
                return Err(format!("{url:?}: use sse+http:// or sse+https://"));
            }
            let sock = crate::config::stdio::remote_socket(url)
                .ok_or_else(|| format!("{url:?}: no bridge folder (load a config first)"))?;
            return Ok(Target {
                endpoint: Endpoint::Unix(sock),
                tls: false,
                authority: http::HeaderValue::from_static("localhost"),
                host: "localhost".into(),
                path: "/mcp".into(),
            });
        }
        if let Some(rest) = url.strip_prefix("unix://") {
            let (sock, path) = match rest.rfind(":/") {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, "/"),
            };
            if !sock.starts_with('/') {
                return Err(format!(
                    "{url:?}: a unix URL needs an absolute socket path, e.g. unix:///run/mcp.sock:/mcp"
                ));
            }
            return Ok(Target {
                endpoint: Endpoint::Unix(PathBuf::from(sock)),
                tls: false,
                authority: http::HeaderValue::from_static("localhost"),
                host: "localhost".into(),
                path: path.to_string(),
            });
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!(
                    "{url:?}: unsupported scheme {other:?} (use http://, https://, unix://, sse+http:// or ws://)"
                ))
            }
            None => {
                return Err(format!(
                    "{url:?}: missing scheme (use http://, https://, unix://, sse+http:// or ws://)"
                ))
            }
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("{url:?}: missing host"))?;
        let host = auth
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(Target {
            endpoint: Endpoint::Tcp {
                host: host.clone(),
                port,
            },
            tls,
            authority: http::HeaderValue::from_str(auth.as_str())
                .map_err(|_| format!("{url:?}: the host cannot be sent as a Host field"))?,
            host,
            path,
        })
    }

    /// The address to connect to now: IP literals and socket paths as they are, host
    /// names through the system resolver (the first address it returns).
    pub async fn resolve(&self) -> Result<Address, String> {
        match &self.endpoint {
            Endpoint::Unix(p) => Ok(Address::Unix(p.clone())),
            Endpoint::Tcp { host, port } => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    return Ok(Address::Inet(SocketAddr::new(ip, *port)));
                }
                tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?
                    .next()
                    .map(Address::Inet)
                    .ok_or_else(|| format!("host {host:?} resolved to no address"))
            }
        }
    }

    /// True when the endpoint is a DNS name (so worth re-resolving).
    pub fn is_dns_name(&self) -> bool {
        matches!(&self.endpoint, Endpoint::Tcp { host, .. } if host.parse::<IpAddr>().is_err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url() {
        let t = Target::from_url("http://127.0.0.1:3001/mcp").unwrap();
        assert_eq!(
            t.endpoint,
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 3001
            }
        );
        assert!(!t.is_dns_name());
        assert!(!t.tls);
        assert_eq!(t.authority, "127.0.0.1:3001");
        assert_eq!(t.path, "/mcp");
    }

    #[test]
    fn https_default_port_and_name() {
        let t = Target::from_url("https://localhost/mcp?x=1").unwrap();
        assert!(t.tls);
        assert_eq!(t.host, "localhost");
        assert!(matches!(t.endpoint, Endpoint::Tcp { port: 443, .. }));
        assert!(t.is_dns_name());
        assert_eq!(t.path, "/mcp?x=1");
    }

    #[test]
    fn bridged_urls_reach_a_socket_of_the_gateway() {
        // The bridge folder is chosen by the first config a process loads.
        let dir = crate::config::stdio::socket_dir(&crate::config::Config::default());
        for url in [
            "sse+http://127.0.0.1:1/sse",
            "sse+https://h.example/sse",
            "ws://h:1/m",
            "wss://h/m",
        ] {
            let t = Target::from_url(url).unwrap();
            let Endpoint::Unix(sock) = &t.endpoint else {
                panic!("{url}: {t:?}")
            };
            assert!(sock.starts_with(&dir), "{url}: {sock:?}");
            assert_eq!((t.path.as_str(), t.tls), ("/mcp", false));
        }
        // One bridge per URL.
        let a = Target::from_url("ws://h:1/a").unwrap().endpoint;
        assert_ne!(a, Target::from_url("ws://h:1/b").unwrap().endpoint);
        assert_eq!(a, Target::from_url("ws://h:1/a").unwrap().endpoint);
        assert!(Target::from_url("sse+unix:///x.sock:/mcp").is_err());
        assert!(Target::from_url("sse+ftp://h/sse").is_err());
    }

    #[test]
    fn unix_url() {
        let t = Target::from_url("unix:///run/files.sock:/mcp").unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix("/run/files.sock".into()));
        assert_eq!(t.path, "/mcp");
        assert!(Target::from_url("unix://relative.sock:/mcp").is_err());
    }

    #[test]
    fn bad_urls() {
        assert!(Target::from_url("ftp://x/mcp")
            .unwrap_err()
            .contains("unsupported scheme"));
        assert!(Target::from_url("localhost:3000").is_err());
    }

    #[tokio::test]
    async fn resolution() {
        let t = Target::from_url("http://localhost:3001/mcp").unwrap();
        assert!(matches!(t.resolve().await, Ok(Address::Inet(a)) if a.ip().is_loopback()));
        let t = Target::from_url("http://[::1]:3001/mcp").unwrap();
        assert_eq!(
            t.resolve().await.unwrap(),
            Address::Inet("[::1]:3001".parse().unwrap())
        );
        let t = Target::from_url("http://no-such-host.invalid/mcp").unwrap();
        assert!(t.resolve().await.unwrap_err().contains("cannot resolve"));
    }
}
