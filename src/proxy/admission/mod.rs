//! Which client connections the proxy takes, and how long it keeps them.
//!
//! * [`Admission`], `server.max_connections` (every client connection of the process)
//!   and `limits.max_connections_per_ip`, counted when a connection is accepted, before
//!   a byte of it is read. A connection past either limit is refused at once: an
//!   HTTP/1 `503` with a JSON-RPC error and `Connection: close`, written once without
//!   waiting for the client, then closed (an HTTP/2 one is closed: it expects frames).
//!   The gateway's own internal connections (Unix sockets) are not counted.
//! * [`watched`], the client stream as the proxy reads it, noticing the first bytes of
//!   each request on a kept-alive connection, so `limits.request_head_timeout` times a
//!   head that has started and `server.keepalive_timeout` the wait before it.

pub mod watched;

use crate::telemetry::metrics::METRICS;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The limits and the connections they count.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    /// `0`: no limit per address.
    max_per_ip: u32,
    total: AtomicUsize,
    /// Connections per address, only while `max_per_ip` is set (one lock per accept
    /// and per close of a connection, never per request).
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// Why a connection was refused (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    MaxConnections,
    PerIp,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

/// An admitted connection: counted until it is dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self
                .admission
                .per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Half the process's open-file limit (each client connection may need an upstream
/// connection too), at least 64: the default of `server.max_connections`.
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 2).unwrap_or(usize::MAX).max(64)
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: u32) -> Admission {
        Admission {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Count a connection from `ip` (`None`: the gateway's own, over a Unix socket: not
    /// counted), or refuse it.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Option<Admitted>, Refused> {
        let Some(ip) = ip else {
            return Ok(None);
        };
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refused(Refused::MaxConnections));
        }
        let counted = if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(self.refused(Refused::PerIp));
            }
            *n += 1;
            Some(ip)
        } else {
            None
        };
        Ok(Some(Admitted {
            admission: self.clone(),
            ip: counted,
        }))
    }

    fn refused(&self, why: Refused) -> Refused {
        METRICS
            .connections_refused
            .with_label_values(&[why.label()])
            .inc();
        why
    }

    /// What a refused HTTP/1 connection is sent.
    pub fn answer(why: Refused) -> Vec<u8> {
        let message = match why {
            Refused::MaxConnections => {
                "the gateway holds as many client connections as it may (server.max_connections); retry shortly"
            }
            Refused::PerIp => {
                "this address holds as many connections as it may (limits.max_connections_per_ip); reuse one, or close one first"
            }
        };
        closing_answer(
            &crate::error::GatewayError::Busy(message.into()),
            "retry-after: 1\r\n",
        )
    }
}

/// A whole HTTP/1.1 answer carrying `e` as a JSON-RPC error (no id), with `fields`
/// (each ending in CRLF), that closes the connection: for the bytes written before (or
/// instead of) Pingora's own.
pub fn closing_answer(e: &crate::error::GatewayError, fields: &str) -> Vec<u8> {
    let body = e.to_body(None);
    let status = e.status_and_code().0;
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{fields}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_addresses_are_counted_and_released() {
        let a = Arc::new(Admission::new(3, 2));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let x = a.admit(Some(one)).unwrap();
        let y = a.admit(Some(one)).unwrap();
        assert_eq!(a.admit(Some(one)).unwrap_err(), Refused::PerIp);
        let z = a.admit(Some(two)).unwrap();
        assert_eq!(a.admit(Some(two)).unwrap_err(), Refused::MaxConnections);
        // The gateway's own connections are never refused, nor counted.
        assert!(a.admit(None).unwrap().is_none());
        drop(x);
        let again = a.admit(Some(one)).unwrap();
        drop((y, z, again));
        assert_eq!(a.total.load(Ordering::Acquire), 0);
        assert!(a.per_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn the_refusal_is_a_json_rpc_503_that_closes() {
        let answer = String::from_utf8(Admission::answer(Refused::PerIp)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], -32603);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_connections_per_ip"));
    }
}
