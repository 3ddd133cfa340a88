//! A virtual server's request, answered by [`crate::federation`] once the request path
//! has authenticated, read, inspected, authorized and counted it: what federation needs
//! from the request, and its answer written (JSON with a `Content-Length`, `202`, or an
//! SSE stream relayed event by event until either side ends).

use super::ctx::RequestCtx;
use super::respond::{common_headers, REQUEST_ID};
use super::Gateway;
use crate::error::GatewayError;
use crate::federation::member::Client;
use crate::federation::{self, Answer, VirtualServer};
use crate::mcp::envelope::{Era, FIRST_MODERN_VERSION};
use crate::mcp::headers::MCP_SESSION_ID;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::net::IpAddr;

/// The client's headers a virtual server reads: the session, the protocol version, the
/// resumption point of a GET stream, and `Mcp-Param-*` (passed to the member that takes
/// a call).
fn mcp_headers(all: &http::HeaderMap) -> http::HeaderMap {
    use crate::mcp::headers::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION};
    let mut out = http::HeaderMap::new();
    for (name, value) in all {
        let n = name.as_str();
        if n == MCP_SESSION_ID
            || n == MCP_PROTOCOL_VERSION
            || n == LAST_EVENT_ID
            || n.starts_with("mcp-param-")
        {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

pub async fn answer(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    vs: &VirtualServer,
    ip: Option<IpAddr>,
) -> Result<(), GatewayError> {
    let state = ctx.state.clone();
    let identity = ctx.identity.clone();
    let request_id = ctx.request_id.clone();
    let owner = identity.as_ref().map(|who| crate::mcp::session::Owner {
        method: who.method,
        rule: &who.rule,
        subject: &who.subject,
        client_id: who.client_id.as_deref(),
    });
    let head = session.req_header();
    let request = federation::Request {
        vs,
        client: Client {
            state: &state,
            connector: &gw.connector,
            identity: identity.as_ref(),
            request_id: &request_id,
            client_ip: ip,
        },
        owner,
        method: head.method.clone(),
        headers: mcp_headers(&head.headers),
        body: ctx.body.clone(),
        modern: match ctx.era() {
            Some(era) => era == Era::Modern,
            None => head
                .headers
                .get(crate::mcp::headers::MCP_PROTOCOL_VERSION)
                .is_some_and(|v| v.as_bytes() >= FIRST_MODERN_VERSION.as_bytes()),
        },
    };
    let reply = federation::serve(&request).await?;
    let shaping =
        |e: Box<pingora::Error>| GatewayError::Internal(format!("writing the answer: {e}"));
    let (status, body, mut stream) = match reply.answer {
        Answer::Json { status, body } => (status, Some(body), None),
        Answer::Accepted => (202, None, None),
        Answer::Empty(status) => (status, None, None),
        Answer::Events(stream) => (200, None, Some(stream)),
    };
    let mut resp = ResponseHeader::build(status, Some(10)).map_err(shaping)?;
    match (&body, &stream) {
        (Some(b), _) => {
            resp.insert_header(http::header::CONTENT_TYPE, "application/json")
                .map_err(shaping)?;
            resp.insert_header(http::header::CONTENT_LENGTH, b.len().to_string())
                .map_err(shaping)?;
        }
        (None, Some(_)) => {
            resp.insert_header(http::header::CONTENT_TYPE, "text/event-stream")
                .map_err(shaping)?;
            resp.insert_header(http::header::CACHE_CONTROL, "no-cache")
                .map_err(shaping)?;
            resp.insert_header("x-accel-buffering", "no")
                .map_err(shaping)?;
        }
        (None, None) => {
            resp.insert_header(http::header::CONTENT_LENGTH, "0")
                .map_err(shaping)?;
        }
    }
    if let Some(sealed) = &reply.session {
        resp.insert_header(MCP_SESSION_ID, sealed.as_str())
            .map_err(shaping)?;
    }
    resp.insert_header(REQUEST_ID, request_id.as_str())
        .map_err(shaping)?;
    if let Some(x) = reply.x_cache.filter(|_| ctx.state.cache.x_cache) {
        resp.insert_header(super::cache::X_CACHE, x)
            .map_err(shaping)?;
    }
    if let Some(q) = ctx.quota {
        resp.insert_header("ratelimit-limit", http::HeaderValue::from(q.limit))
            .map_err(shaping)?;
        resp.insert_header("ratelimit-remaining", http::HeaderValue::from(q.remaining))
            .map_err(shaping)?;
        resp.insert_header("ratelimit-reset", http::HeaderValue::from(q.reset))
            .map_err(shaping)?;
    }
    common_headers(&mut resp, ctx).map_err(shaping)?;
    ctx.local_status = Some(status);
    let end = body.is_none() && stream.is_none();
    if super::respond::head(session, &ctx.live, resp, end)
        .await
        .is_err()
    {
        session.set_keepalive(None);
        ctx.error = Some(GatewayError::ClientClosed);
        return Ok(());
    }
    if let Some(body) = body {
        if session.write_response_body(Some(body), true).await.is_err() {
            ctx.error = Some(GatewayError::ClientClosed);
        }
        return Ok(());
    }
    let Some(stream) = stream.as_mut() else {
        return Ok(());
    };
    // Relay until the stream ends or the client leaves (which closes the members'
    // requests: the modern era's cancellation).
    loop {
        let next = tokio::select! {
            biased;
            next = stream.next() => next,
            _ = session.read_body_or_idle(true) => {
                session.set_keepalive(None);
                ctx.error = Some(GatewayError::ClientClosed);
                return Ok(());
            }
        };
        let last = next.is_none();
        if session.write_response_body(next, last).await.is_err() {
            session.set_keepalive(None);
            ctx.error = Some(GatewayError::ClientClosed);
            return Ok(());
        }
        if last {
            return Ok(());
        }
    }
}
