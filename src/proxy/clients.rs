//! The proxy's side of the other client transports (`transport::clients`): which requests
//! are theirs, the handshake checks made before anything is handed over, the hand-over
//! itself (a ticket naming the caller, the adapter's socket as the peer), and the
//! gateway's internal listener, where the adapter sends each message back in.
//!
//! * `GET <route>` with `Upgrade: websocket` (HTTP/1.1): a WebSocket client;
//! * `GET <route>/sse`: a legacy HTTP+SSE client's stream; `POST <route>/message`: its
//!   messages (inspected when the adapter sends them in, not here: once per message);
//! * a request on the internal listener names its caller with the ticket header; the
//!   caller's identity and address stand in for the connection's (nothing else there is
//!   trusted, and the socket lives in the process's private runtime folder).

use super::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::transport::clients::{self, Caller, Kind, Sockets, Ticket, CALLER};
use http::{header, Method};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;

/// The path suffix of a legacy client's stream.
const SSE: &str = "/sse";
/// The path suffix of a legacy client's messages.
const MESSAGE: &str = "/message";

/// A GET offering to switch to WebSocket.
pub fn is_websocket(req: &RequestHeader) -> bool {
    req.method == Method::GET
        && req
            .headers
            .get_all(header::UPGRADE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// The route path (or virtual server path) under a legacy client's endpoint, and which
/// endpoint it is; `known` says whether a path is served.
pub fn legacy_endpoint(path: &str, known: impl Fn(&str) -> bool) -> Option<(&str, Kind)> {
    for (suffix, kind) in [(SSE, Kind::LegacyStream), (MESSAGE, Kind::LegacyMessage)] {
        if let Some(base) = path.strip_suffix(suffix).filter(|b| known(b)) {
            return Some((base, kind));
        }
    }
    None
}

/// Whether a raw request path ends in a legacy SSE client's message endpoint: such a POST
/// is taken over by the adapter through Pingora's proxy path ([`super::serve`]).
pub fn is_legacy_message(path: &[u8]) -> bool {
    path.ends_with(MESSAGE.as_bytes())
}

/// Whether a raw request path ends in a legacy SSE client's stream endpoint: such a GET
/// is taken over by the adapter through Pingora's proxy path ([`super::serve`]).
pub fn is_legacy_stream(path: &[u8]) -> bool {
    path.ends_with(SSE.as_bytes())
}

/// The checks of a request for the adapter, made before anything is handed over: the
/// method each endpoint takes, and a WebSocket handshake the adapter can answer.
pub fn check(req: &RequestHeader, kind: Kind) -> Result<(), GatewayError> {
    match kind {
        Kind::LegacyStream if req.method != Method::GET => {
            return Err(GatewayError::MethodNotAllowed(format!(
                "{} (a legacy SSE stream is opened with GET)",
                req.method
            )))
        }
        Kind::LegacyMessage if req.method != Method::POST => {
            return Err(GatewayError::MethodNotAllowed(format!(
                "{} (legacy SSE messages are POSTed)",
                req.method
            )))
        }
        Kind::WebSocket => {}
        _ => return Ok(()),
    }
    if req.version != http::Version::HTTP_11 {
        return Err(GatewayError::InvalidRequest(
            "a WebSocket upgrade needs HTTP/1.1".into(),
        ));
    }
    let field = |name| req.headers.get(name).map(|v| v.as_bytes());
    if field(header::SEC_WEBSOCKET_VERSION) != Some(b"13") {
        return Err(GatewayError::InvalidRequest(
            "a WebSocket upgrade needs Sec-WebSocket-Version: 13".into(),
        ));
    }
    if field(header::SEC_WEBSOCKET_KEY).is_none_or(|k| k.is_empty()) {
        return Err(GatewayError::InvalidRequest(
            "a WebSocket upgrade needs Sec-WebSocket-Key".into(),
        ));
    }
    if clients::websocket::offers_mcp(&req.headers) == Some(false) {
        return Err(GatewayError::InvalidRequest(format!(
            "the WebSocket subprotocol must be {:?} (Sec-WebSocket-Protocol), or none",
            clients::websocket::SUBPROTOCOL
        )));
    }
    Ok(())
}

/// Hand the request to the adapter: the caller is registered for as long as it lives.
pub fn admit(session: &Session, ctx: &mut RequestCtx, kind: Kind, ip: Option<std::net::IpAddr>) {
    let route = ctx.route.clone().unwrap_or_else(|| Arc::from(""));
    let expires = ctx
        .identity
        .as_ref()
        .and_then(|who| ctx.state.auth.expiry(&route, who));
    let caller = Caller {
        identity: ctx.identity.clone(),
        ip,
        route,
        host: session.req_header().headers.get(header::HOST).cloned(),
        expires: expires.unwrap_or(u64::MAX).into(),
    };
    // The adapter's answers were filtered when they were the gateway's own.
    ctx.list_scope = super::list_filter::Scope::Off;
    ctx.downstream = Some(Ticket::issue(caller, kind));
}

/// The adapter, as the peer of a request handed to it.
pub fn peer() -> Result<Box<HttpPeer>> {
    let socket = Sockets::get()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no client adapter"))?;
    let mut peer = HttpPeer::new_uds(&socket.adapter.to_string_lossy(), false, String::new())?;
    // A WebSocket or an SSE stream stays open for as long as its client wants it.
    peer.options.read_timeout = None;
    peer.options.idle_timeout = None;
    Ok(Box::new(peer))
}

/// The request as the adapter gets it: the ticket, no credentials.
pub fn adapter_request(req: &mut RequestHeader, ticket: &Ticket) -> Result<()> {
    req.remove_header(&header::AUTHORIZATION);
    req.insert_header(CALLER, ticket.header())?;
    if ticket.kind == Kind::LegacyMessage {
        // No connection to the adapter is kept for another request: a WebSocket upgrade
        // given a pooled one the adapter is closing at that moment would be reset.
        req.insert_header(header::CONNECTION, "close")?;
    }
    Ok(())
}

/// The caller of a request on the gateway's internal listener (`None`: a client's own
/// request, on a listener of its own); a ticket that names no live connection is `404`,
/// as a session that ended.
pub fn internal_caller(session: &Session) -> Option<Result<Arc<Caller>, GatewayError>> {
    // The header first (one lookup; a client's own request has none): the listener is
    // looked at only for a request that names a ticket. On the internal listener, one
    // that does not is served as any client's (its credential is checked).
    let ticket = session.req_header().headers.get(CALLER)?;
    let sockets = Sockets::get()?;
    let local = session.server_addr()?.as_unix()?.as_pathname()?;
    if local != sockets.gateway {
        return None;
    }
    let Some(caller) = clients::caller(ticket.as_bytes()) else {
        return Some(Err(GatewayError::SessionNotFound));
    };
    if caller.expired(crate::mcp::session::now()) {
        // The token the connection was opened with has expired since.
        return Some(Err(GatewayError::Unauthorized {
            reason: "expired",
            message:
                "the token this connection was opened with has expired: reconnect with a fresh one"
                    .into(),
            challenge: "Bearer realm=\"mcp-gateway\", error=\"invalid_token\"".into(),
        }));
    }
    Some(Ok(caller))
}
