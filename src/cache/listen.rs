//! The gateway's own `subscriptions/listen` to each modern-era server of a cached
//! route's group, so an upstream's `notifications/{tools,prompts,resources}/list_changed`
//! drops its entries even when no client holds a stream (legacy servers' notifications
//! arrive on the GET streams clients hold, which [`super::notice`] watches as they pass).
//!
//! One stream per server, asking for the three list flags. A server that does not answer
//! with an SSE stream whose first event is `notifications/subscriptions/acknowledged`
//! does not speak the modern era's listen: it is asked again only after
//! [`NOT_MODERN_RETRY`] (or a reload). A stream that ends or fails is opened again
//! after a backoff (1 s, doubling to 30 s). Servers reached through the gateway's own
//! bridges (stdio, WebSocket, legacy SSE) are not listened to.

use super::notice::Watch;
use super::store::Store;
use crate::error::GatewayError;
use crate::upstream::pool::Connector;
use crate::upstream::{exchange, Group, Server};
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// The protocol version the listen speaks.
const VERSION: &str = "2026-07-28";
/// How long a server that does not speak the modern listen is left alone.
pub const NOT_MODERN_RETRY: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest silence on a listen stream before it is opened again (servers send
/// keep-alive comments on long streams).
const IDLE: Duration = Duration::from_secs(300);
const ACKNOWLEDGED: &[u8] = b"notifications/subscriptions/acknowledged";
const BODY: &str = r#"{"jsonrpc":"2.0","id":"mcp-gateway-cache-listen","method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"promptsListChanged":true,"resourcesListChanged":true},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

/// How one listen ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The server does not speak the modern listen.
    NotModern,
    /// The stream was open (acknowledged), then ended.
    Closed,
    /// Connecting or sending failed, or the stream broke before its acknowledgment.
    Failed(String),
}

/// The groups to listen to, and the store their notifications invalidate.
pub type Plan = Box<dyn Fn() -> Vec<(Arc<Store>, Arc<Group>)> + Send + Sync>;

/// The background service holding the listens (restarted on every reload).
pub struct Listeners {
    pub plan: Plan,
    pub reloads: tokio::sync::watch::Receiver<u64>,
}

#[async_trait]
impl BackgroundService for Listeners {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Connector::new(0);
        let mut reloads = self.reloads.clone();
        reloads.mark_unchanged();
        loop {
            let plan = (self.plan)();
            let tasks = plan.iter().flat_map(|(store, group)| {
                group
                    .servers()
                    .into_iter()
                    .filter(|s| s.url.starts_with("http://") || s.url.starts_with("https://"))
                    .map(|s| keep_listening(&connector, store, group, s))
                    .collect::<Vec<_>>()
            });
            let all = futures::future::join_all(tasks);
            tokio::select! {
                _ = all => {
                    // Nothing to listen to: wait for a reload.
                    tokio::select! {
                        _ = reloads.changed() => continue,
                        _ = shutdown.changed() => return,
                    }
                }
                changed = reloads.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Listen to one server for as long as the plan stands.
async fn keep_listening(
    connector: &Connector,
    store: &Arc<Store>,
    group: &Arc<Group>,
    server: Arc<Server>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut again = false;
    loop {
        let ended = listen(connector, store, group, &server, again).await;
        again |= ended == Ended::Closed;
        let wait = match &ended {
            Ended::NotModern => NOT_MODERN_RETRY,
            Ended::Closed => {
                backoff = FIRST_BACKOFF;
                FIRST_BACKOFF
            }
            Ended::Failed(why) => {
                log::debug!(
                    "cache: listening to {}/{} failed ({why}); again in {backoff:?}",
                    group.name,
                    server.id
                );
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One listen: open it, wait for the acknowledgment, then invalidate on every
/// notification until it ends.
async fn listen(
    connector: &Connector,
    store: &Arc<Store>,
    group: &Group,
    server: &Server,
    again: bool,
) -> Ended {
    let Some(peer) = server.peer(IDLE) else {
        return Ended::Failed("the host name does not resolve".into());
    };
    let mut one = exchange::One {
        group: &group.name,
        server: &server.id,
        peer: Some(peer),
    };
    let failed =
        |e: GatewayError| Ended::Failed(e.detail().map_or_else(|| e.to_string(), str::to_string));
    let up = match exchange::connect(connector, &mut one, exchange::Timeouts::default()).await {
        Ok(up) => up,
        Err(e) => return failed(e),
    };
    let head = match head(group, server) {
        Ok(h) => h,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let request = match exchange::Request::new(&head, BODY.as_bytes()) {
        Ok(r) => r,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let sent = up.send(&mut one, request, std::future::pending()).await;
    let (h, mut answer) = match sent {
        Ok(exchange::Sent::Answer(h, a)) => (h, a),
        Ok(exchange::Sent::Cancelled) => return Ended::Failed("cancelled".into()),
        Err(e) => return failed(e),
    };
    let sse = h
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if h.status != 200 || !sse {
        answer.close().await;
        return Ended::NotModern;
    }
    // The acknowledgment first; then every invalidating notification counts.
    let mut head_buf = BytesMut::new();
    let mut watch = Watch::default();
    let mut acknowledged = false;
    loop {
        let chunk = match answer.read().await {
            Ok(Some(c)) => c,
            Ok(None) | Err(_) if acknowledged => break,
            Ok(None) => return Ended::NotModern,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        if !acknowledged {
            head_buf.extend_from_slice(&chunk);
            if memchr::memmem::find(&head_buf, ACKNOWLEDGED).is_none() {
                if head_buf.len() > 64 << 10 {
                    answer.close().await;
                    return Ended::NotModern;
                }
                continue;
            }
            acknowledged = true;
            log::debug!(
                "cache: listening to {}/{} for list changes",
                group.name,
                server.id
            );
            if again {
                // A change while no stream was open is not known: start clean.
                store.invalidate_group(&group.name, "a listen stream opened again");
            }
        }
        if watch.seen(&chunk) {
            store.invalidate_group(&group.name, "a list_changed notification");
        }
    }
    Ended::Closed
}

fn head(group: &Group, server: &Server) -> pingora::Result<RequestHeader> {
    let mut req = RequestHeader::build("POST", server.target.path.as_bytes(), None)?;
    req.insert_header("host", server.target.authority.clone())?;
    req.insert_header("content-type", "application/json")?;
    req.insert_header("accept", "application/json, text/event-stream")?;
    req.insert_header("content-length", BODY.len().to_string())?;
    req.insert_header("mcp-protocol-version", VERSION)?;
    req.insert_header("mcp-method", "subscriptions/listen")?;
    req.insert_header(
        "user-agent",
        format!("mcp-gateway/{} cache", env!("CARGO_PKG_VERSION")),
    )?;
    if let Some((name, value)) = &group.upstream_auth {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(req)
}
