//! Upstream upkeep, run as a Pingora background service: active health checks and DNS
//! re-resolution for every group.
//!
//! Each group gets one task. On every tick (`health_check.interval`, else
//! `resolve_interval`) it re-resolves DNS names when due (names that did not resolve are
//! retried on every tick) and checks every server concurrently, each check bounded by
//! `timeout`:
//! * `tcp`: a TCP (or Unix socket) connect;
//! * `http`: `GET path`, healthy on 2xx/3xx (sent, like `mcp`, through the upstream
//!   [`exchange`] over a fresh connection; a check judges no breaker);
//! * `mcp`: a JSON-RPC `ping` (or `server/discover`) POSTed to the server's MCP URL,
//!   healthy on any JSON-RPC response (a result *or* an error object: a stateful server
//!   refusing a ping without a session is alive) with a status below 500.
//!
//! A server with checks starts down; its first passing check brings it up, after that it
//! takes `healthy_threshold` consecutive passes to come back and `unhealthy_threshold`
//! consecutive failures to go down. The counts live in the server, so a server that a
//! reload keeps keeps its counts (the checks restart at once, the streak does not).

use super::pool::Connector;
use super::target::Address;
use super::{exchange, Group, Server};
use crate::config::{HealthCheckConfig, HealthKind, ProbeMethod};
use crate::error::GatewayError;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest health-check response body read.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// What one group's upkeep task does.
pub struct GroupUpkeep {
    pub group: Arc<Group>,
    pub check: Option<HealthCheckConfig>,
    /// `0`: resolve only at start (and retry names that failed).
    pub resolve_interval: Duration,
}

impl GroupUpkeep {
    /// True when there is anything to do after start.
    fn needed(&self) -> bool {
        // Servers may be added at runtime: a group with a resolve interval keeps its task.
        self.check.is_some()
            || !self.resolve_interval.is_zero()
            || self.group.servers().iter().any(|s| s.address().is_none())
    }

    fn tick(&self) -> Duration {
        match (&self.check, self.resolve_interval.is_zero()) {
            (Some(c), _) => c.interval.0,
            (None, false) => self.resolve_interval,
            // Only retrying names that did not resolve at start.
            (None, true) => Duration::from_secs(5),
        }
    }
}

/// The background service: one task per group that needs one, restarted on the new
/// groups after every reload (servers carried over keep their health).
pub struct Upkeep {
    /// The upkeep of the running config's groups ([`plan`] over the current state).
    pub plan: Box<dyn Fn() -> Vec<GroupUpkeep> + Send + Sync>,
    /// Told on every reload.
    pub reloads: tokio::sync::watch::Receiver<u64>,
}

/// The upkeep of `config`'s groups, as built in `groups`.
pub fn plan(config: &crate::config::Config, groups: &super::Groups) -> Vec<GroupUpkeep> {
    config
        .upstream
        .groups
        .iter()
        .filter_map(|(name, g)| {
            Some(GroupUpkeep {
                group: groups.get(name)?.clone(),
                check: g.health_check.clone(),
                resolve_interval: g.resolve_interval.0,
            })
        })
        .collect()
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Arc::new(Connector::new(0));
        let mut reloads = self.reloads.clone();
        reloads.mark_unchanged();
        loop {
            let groups = (self.plan)();
            tokio::select! {
                _ = run(&groups, &connector, shutdown.clone()) => return,
                changed = reloads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Check and resolve `groups` until shutdown.
async fn run(groups: &[GroupUpkeep], connector: &Arc<Connector>, shutdown: ShutdownWatch) {
    {
        let tasks = groups.iter().filter(|g| g.needed()).map(|g| {
            let mut shutdown = shutdown.clone();
            let connector = connector.clone();
            async move {
                let mut last_resolve = Instant::now();
                loop {
                    let resolve_due = !g.resolve_interval.is_zero()
                        && last_resolve.elapsed() >= g.resolve_interval;
                    if resolve_due {
                        last_resolve = Instant::now();
                    }
                    resolve(&g.group, resolve_due).await;
                    if let Some(check) = &g.check {
                        let servers = g.group.servers();
                        let results = futures::future::join_all(
                            servers
                                .iter()
                                .map(|s| probe(&g.group, s, check, &connector)),
                        )
                        .await;
                        // The counts live in each server: a reload keeping it keeps them.
                        for (server, result) in servers.iter().zip(results) {
                            server
                                .health_counts
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .apply(&g.group.name, server, check, result);
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(g.tick()) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        });
        futures::future::join_all(tasks).await;
    }
    // No group needs upkeep: wait for a reload or the shutdown.
    std::future::pending::<()>().await;
}

/// Re-resolve the group's names: all of them when `due`, else only those never resolved.
async fn resolve(group: &Group, due: bool) {
    for server in group.servers() {
        let unresolved = server.address().is_none();
        if !(unresolved || (due && server.target.is_dns_name())) {
            continue;
        }
        match server.target.resolve().await {
            Ok(address) => match server.set_address(address.clone()) {
                Ok(true) => log::info!(
                    "upstream {}/{}: {} now resolves to {address:?}",
                    group.name,
                    server.id,
                    server.target.host
                ),
                Ok(false) => {}
                Err(e) => log::warn!("upstream {}/{}: {e}", group.name, server.id),
            },
            // Keep the last good address; a server that never resolved stays down.
            Err(e) => log::warn!(
                "upstream {}/{}: {e}{}",
                group.name,
                server.id,
                if unresolved {
                    " (server stays down)"
                } else {
                    " (keeping the last address)"
                }
            ),
        }
    }
}

/// A server's consecutive health-check results (see [`Server`]'s `health_counts`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    checked: bool,
    passes: u32,
    failures: u32,
}

impl Counters {
    fn apply(
        &mut self,
        group: &str,
        server: &Server,
        check: &HealthCheckConfig,
        result: Result<(), String>,
    ) {
        let first = !self.checked;
        self.checked = true;
        crate::telemetry::metrics::METRICS
            .health_checks
            .with_label_values(&[
                group,
                &server.id,
                if result.is_ok() { "pass" } else { "fail" },
            ])
            .inc();
        let up = server.is_up();
        match result {
            Ok(()) => {
                self.failures = 0;
                self.passes += 1;
                if !up && (first || self.passes >= check.healthy_threshold) {
                    server.set_healthy(true);
                    log::info!("upstream {group}/{}: healthy", server.id);
                }
            }
            Err(why) => {
                self.passes = 0;
                self.failures += 1;
                log::debug!("upstream {group}/{}: health check failed: {why}", server.id);
                if first || (up && self.failures >= check.unhealthy_threshold) {
                    server.set_healthy(false);
                    log::warn!("upstream {group}/{}: unhealthy: {why}", server.id);
                }
            }
        }
    }
}

/// One health check of one server, bounded by the check's timeout.
pub async fn probe(
    group: &Group,
    server: &Server,
    check: &HealthCheckConfig,
    connector: &Connector,
) -> Result<(), String> {
    let timeout = check.timeout.0;
    match tokio::time::timeout(timeout, probe_inner(group, server, check, connector)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn probe_inner(
    group: &Group,
    server: &Server,
    check: &HealthCheckConfig,
    connector: &Connector,
) -> Result<(), String> {
    let address = server.address().ok_or("the host name does not resolve")?;
    match check.kind {
        HealthKind::Tcp => match address.as_ref() {
            Address::Inet(a) => tokio::net::TcpStream::connect(a).await.map(drop),
            Address::Unix(p) => tokio::net::UnixStream::connect(p).await.map(drop),
        }
        .map_err(|e| format!("connect: {e}")),
        HealthKind::Http => {
            let path = check
                .path
                .clone()
                .unwrap_or_else(|| server.target.path.clone());
            let (status, _) = exchange(group, server, check, connector, "GET", &path, None).await?;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            }
        }
        HealthKind::Mcp => {
            let (status, body) = exchange(
                group,
                server,
                check,
                connector,
                "POST",
                &server.target.path,
                Some(check.method),
            )
            .await?;
            if status >= 500 {
                return Err(format!("answered {status}"));
            }
            if is_jsonrpc_response(&body) {
                Ok(())
            } else {
                Err(format!(
                    "answered {status} without a JSON-RPC response: {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ))
            }
        }
    }
}

/// The modern protocol version a `server/discover` probe speaks.
const MODERN_VERSION: &str = "2026-07-28";

/// Send one request through the exchange (over a fresh connection: the health checks'
/// connector pools nothing); the status and (bounded) body.
async fn exchange(
    group: &Group,
    server: &Server,
    check: &HealthCheckConfig,
    connector: &Connector,
    method: &str,
    path: &str,
    probe: Option<ProbeMethod>,
) -> Result<(u16, Bytes), String> {
    let peer = server
        .peer(check.timeout.0)
        .ok_or("the host name does not resolve")?;
    let timeouts = exchange::Timeouts {
        connect: Some(check.timeout.0),
        ..Default::default()
    };
    let mut one = exchange::One {
        group: &group.name,
        server: &server.id,
        peer: Some(peer),
    };
    // The detail names the stage (connect, send, read) and Pingora's error.
    let why = |e: GatewayError| e.detail().map_or_else(|| e.to_string(), str::to_string);
    let up = exchange::connect(connector, &mut one, timeouts)
        .await
        .map_err(why)?;
    let err = |what: &str, e: Box<pingora::Error>| format!("{what}: {e}");
    let mut req =
        RequestHeader::build(method, path.as_bytes(), None).map_err(|e| err("request", e))?;
    let insert = |req: &mut RequestHeader, k: &'static str, v: String| {
        req.insert_header(k, v).map_err(|e| err("request", e))
    };
    req.insert_header("host", server.target.authority.clone())
        .map_err(|e| err("request", e))?;
    insert(
        &mut req,
        "user-agent",
        format!("mcp-gateway/{} health-check", env!("CARGO_PKG_VERSION")),
    )?;
    if let Some((name, value)) = &group.upstream_auth {
        req.insert_header(name.clone(), value.clone())
            .map_err(|e| err("request", e))?;
    }
    let body = probe.map(|m| match m {
        ProbeMethod::Ping => {
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":"mcp-gateway-health","method":"ping"}"#)
        }
        ProbeMethod::ServerDiscover => Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":"mcp-gateway-health","method":"server/discover","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN_VERSION}"}}}}}}"#
        )),
    });
    if let Some(body) = &body {
        insert(&mut req, "content-type", "application/json".into())?;
        insert(
            &mut req,
            "accept",
            "application/json, text/event-stream".into(),
        )?;
        insert(&mut req, "content-length", body.len().to_string())?;
        if probe == Some(ProbeMethod::ServerDiscover) {
            insert(&mut req, "mcp-protocol-version", MODERN_VERSION.into())?;
            insert(&mut req, "mcp-method", "server/discover".into())?;
        }
    }
    let sent = up
        .send(
            &mut one,
            exchange::Request::new(&req, &body.unwrap_or_default()).map_err(|e| e.to_string())?,
            std::future::pending(),
        )
        .await
        .map_err(why)?;
    let exchange::Sent::Answer(head, mut answer) = sent else {
        return Err("cancelled".into());
    };
    let status = head.status.as_u16();
    let mut buf = BytesMut::new();
    if probe.is_some() {
        // Stop at the first complete JSON-RPC message: an SSE answer may stay open.
        while buf.len() < MAX_PROBE_BODY {
            match answer.read().await.map_err(|e| err("read", e))? {
                Some(chunk) => buf.extend_from_slice(&chunk),
                None => break,
            }
            if is_jsonrpc_response(&buf) {
                break;
            }
        }
    }
    answer.close().await;
    Ok((status, buf.freeze()))
}

/// A JSON-RPC response object (`result` or `error`), as JSON or in an SSE `data:` line.
fn is_jsonrpc_response(body: &[u8]) -> bool {
    fn ok(v: &serde_json::Value) -> bool {
        v.get("jsonrpc").and_then(|j| j.as_str()) == Some("2.0")
            && (v.get("result").is_some() || v.get("error").is_some())
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        return ok(&v);
    }
    String::from_utf8_lossy(body).lines().any(|line| {
        line.strip_prefix("data:")
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
            .is_some_and(|v| ok(&v))
    })
}

#[cfg(test)]
mod tests {
    use super::is_jsonrpc_response;

    #[test]
    fn jsonrpc_responses() {
        assert!(is_jsonrpc_response(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#
        ));
        assert!(is_jsonrpc_response(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}"#
        ));
        assert!(is_jsonrpc_response(
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
        ));
        assert!(!is_jsonrpc_response(b"<html>502 Bad Gateway</html>"));
        assert!(!is_jsonrpc_response(br#"{"status":"ok"}"#));
        assert!(!is_jsonrpc_response(
            br#"{"jsonrpc":"2.0","method":"ping"}"#
        ));
    }
}
