//! Per-request state carried through the Pingora phases.

use super::connections::Conn;
use crate::error::GatewayError;
use crate::mcp::envelope::{Envelope, Era};
use crate::state::Timeouts;
use crate::telemetry::metrics::METRICS;
use crate::telemetry::tracing::RequestSpan;
use crate::upstream::{Group, InFlight, Server};
use bytes::{Bytes, BytesMut};
use prometheus::IntGauge;
use std::sync::Arc;
use std::time::Instant;

/// What the gateway learned about the MCP message of this request.
#[derive(Debug, Default)]
pub struct McpInfo {
    /// The single message's envelope (for a batch: the first message's).
    pub envelope: Option<Envelope>,
    /// A batch's other messages, in order.
    pub batch_rest: Vec<Envelope>,
    /// Number of messages when the body was a batch.
    pub batch_len: Option<usize>,
}

impl McpInfo {
    pub fn era(&self) -> Option<Era> {
        self.envelope.as_ref().map(Envelope::era)
    }
    pub fn method(&self) -> Option<&str> {
        self.envelope.as_ref().and_then(|e| e.method.as_deref())
    }
    pub fn name(&self) -> Option<&str> {
        self.envelope.as_ref().and_then(|e| e.name.as_deref())
    }
    /// Every message of the body: the single one, or each of a batch.
    pub fn messages(&self) -> impl Iterator<Item = &Envelope> {
        self.envelope.iter().chain(self.batch_rest.iter())
    }
}

pub struct RequestCtx {
    /// The state current when the request started: a reload never changes it under a
    /// request in flight.
    pub state: Arc<crate::state::State>,
    /// The process's live state: whether it is draining, read when an answer's head is
    /// written ([`super::respond::head`]).
    pub live: Arc<crate::live::Live>,
    pub started: Instant,
    /// The matched route's path.
    pub route: Option<Arc<str>>,
    /// When the current upstream attempt started.
    pub upstream_started: Option<Instant>,
    /// A `tools/list` answer being collected for the group's tool catalog.
    pub tools_list: Option<BytesMut>,
    /// Counts this request in `mcp_gateway_requests_active` (and its connection's
    /// active requests) while it lives.
    active: ActiveRequest,
    /// Counts an SSE answer in `mcp_gateway_sse_streams_active` while it is relayed.
    pub sse: Option<IntGauge>,
    /// This request's trace span, when tracing is on.
    pub span: Option<RequestSpan>,
    /// The authenticated client (none on routes without authentication).
    pub identity: Option<crate::security::auth::Identity>,
    /// The request's allowed browser `Origin`.
    pub cors_origin: Option<http::HeaderValue>,
    /// The CORS headers every answer to that origin carries.
    pub cors_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Which answers the caller's policies filter for lists (off without policies).
    pub list_scope: super::list_filter::Scope,
    /// Filters that list's answer.
    pub list_filter: Option<super::list_filter::ListFilter>,
    /// This request's slot under `max_concurrent_streams` (GET streams), freed on drop.
    pub stream_slot: Option<crate::security::streams::StreamSlot>,
    /// The rate-limit quota left, sent back as `RateLimit-*` headers.
    pub quota: Option<crate::security::rate_limit::Quota>,
    pub request_id: String,
    /// The upstream group of the matched route.
    pub group: Option<Arc<Group>>,
    pub mcp: McpInfo,
    /// The POST body as read from the client, forwarded as is.
    pub body: Option<Bytes>,
    /// The server a sealed session pins this request to.
    pub pinned: Option<Arc<Server>>,
    /// The upstream's own session id, unsealed from the client's `Mcp-Session-Id`.
    pub upstream_session: Option<std::sync::Arc<str>>,
    /// When that session was first sealed: re-sealing keeps it, so `sessions.ttl` counts
    /// from the session's start, not from its last use.
    pub session_issued_at: Option<u64>,
    /// The client's `Mcp-Session-Id` as it came, when it opened with the key that seals
    /// now: what the gateway sends back when the server answers with the same session
    /// (sealing it again would give an id carrying the same, at the cost of a seal).
    pub session_sealed: Option<http::HeaderValue>,
    /// The server chosen for this request, counted as in flight until the request ends;
    /// it holds the breaker's permit (a half-open probe's goes back if it ends unjudged).
    pub upstream: Option<InFlight>,
    /// An error the gateway answered (or will answer) with.
    pub error: Option<GatewayError>,
    /// Status sent to the client, when the gateway answered itself.
    pub local_status: Option<u16>,
    /// The `uid`s of the servers tried for this request, in order.
    pub tried: Tried,
    /// The status the current server answered with.
    pub upstream_status: Option<u16>,
    /// The outcome of the current attempt already went to the server's breaker.
    pub outcome_recorded: bool,
    pub timeouts: Timeouts,
    /// A WebSocket or legacy SSE client's request, handed to the client adapter for as
    /// long as it lives (`transport::clients`).
    pub downstream: Option<crate::transport::clients::Ticket>,
    /// The caller a request on the gateway's internal listener comes from (one message of
    /// such a client): its identity and address stand in for the connection's.
    pub via: Option<Arc<crate::transport::clients::Caller>>,
    /// The route's transforms (`transforms`).
    pub transforms: Option<Arc<crate::transform::RouteTransforms>>,
    /// Arguments a transform changed in the forwarded call, for its `Mcp-Param-*` fields.
    pub rewritten_args: Option<Vec<(String, Option<serde_json::Value>)>>,
    /// A cache miss this request leads: its answer is collected to be kept.
    pub cache_fill: Option<Box<super::cache::Fill>>,
    /// Looks for invalidating notifications in a stream relayed on a cached route.
    pub cache_watch: Option<crate::cache::notice::Watch>,
}

/// The servers tried for one request: the first four inline (no allocation).
#[derive(Debug, Default)]
pub struct Tried {
    inline: [u64; 4],
    len: usize,
    spilled: Vec<u64>,
}

impl Tried {
    pub fn push(&mut self, uid: u64) {
        if self.spilled.is_empty() && self.len < self.inline.len() {
            self.inline[self.len] = uid;
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline);
            }
            self.spilled.push(uid);
        }
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[u64] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl RequestCtx {
    pub fn new(live: &Arc<crate::live::Live>) -> Self {
        RequestCtx {
            state: live.state(),
            live: live.clone(),
            started: Instant::now(),
            route: None,
            upstream_started: None,
            tools_list: None,
            active: ActiveRequest::new(),
            sse: None,
            span: None,
            identity: None,
            quota: None,
            list_scope: Default::default(),
            list_filter: None,
            stream_slot: None,
            cors_origin: None,
            cors_headers: Vec::new(),
            request_id: String::new(),
            group: None,
            mcp: McpInfo::default(),
            body: None,
            pinned: None,
            upstream_session: None,
            session_issued_at: None,
            session_sealed: None,
            upstream: None,
            error: None,
            local_status: None,
            tried: Tried::default(),
            upstream_status: None,
            outcome_recorded: false,
            timeouts: Timeouts::default(),
            downstream: None,
            via: None,
            transforms: None,
            rewritten_args: None,
            cache_fill: None,
            cache_watch: None,
        }
    }

    /// The client's address as the gateway decided it: the connection's (or a trusted
    /// proxy's word for it), or for a message of a WebSocket or legacy SSE client, the
    /// address that client connected from.
    pub fn client_ip(&self, session: &pingora::proxy::Session) -> Option<std::net::IpAddr> {
        match &self.via {
            Some(caller) => caller.ip,
            None => crate::security::edge::client_ip(session, &self.state.edge),
        }
    }

    /// The client connection this request arrived on.
    pub fn conn(&self) -> Option<&Arc<Conn>> {
        self.active.0.as_ref()
    }

    /// A request not served in its connection's task (an HTTP/2 stream) finds its
    /// connection by the session's socket digest, which all its streams share.
    pub fn find_conn(&mut self, session: &pingora::proxy::Session) {
        if self.active.0.is_some() {
            return;
        }
        let conn = session
            .digest()
            .and_then(|d| d.socket_digest.as_ref())
            .and_then(super::connections::of_socket);
        if let Some(c) = conn {
            c.request_started();
            self.active.0 = Some(c);
        }
    }

    /// Whom a sealed session of this request belongs to (`None`: an anonymous caller).
    pub fn session_owner(&self) -> Option<crate::mcp::session::Owner<'_>> {
        self.identity
            .as_ref()
            .map(|who| crate::mcp::session::Owner {
                method: who.method,
                rule: &who.rule,
                subject: &who.subject,
                client_id: who.client_id.as_deref(),
            })
    }

    pub fn server(&self) -> Option<&Arc<Server>> {
        self.upstream.as_ref().map(InFlight::server)
    }

    pub fn era(&self) -> Option<Era> {
        self.mcp.era()
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        if let Some(g) = self.sse.take() {
            g.dec();
        }
    }
}

/// Counts a request as active (process-wide and on its connection) for its lifetime.
/// Created once the request head is complete, it also clears the connection's head
/// deadline, which its drop sets again for the next request.
struct ActiveRequest(Option<Arc<Conn>>);

impl ActiveRequest {
    fn new() -> Self {
        METRICS.requests_active.inc();
        let conn = super::connections::current();
        if let Some(c) = &conn {
            c.request_started();
        }
        ActiveRequest(conn)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        METRICS.requests_active.dec();
        if let Some(c) = &self.0 {
            c.request_ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn tried_spills_past_four() {
        let mut t = Tried::default();
        assert!(t.is_empty());
        for uid in 1..=6 {
            t.push(uid);
            assert_eq!(t.as_slice(), (1..=uid).collect::<Vec<_>>());
        }
        assert_eq!(t.len(), 6);
    }
}
