//! Answers the gateway writes itself: JSON-RPC errors and small JSON documents.

use super::ctx::RequestCtx;
use crate::error::GatewayError;
use bytes::Bytes;
use http::HeaderMap;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a name made once.
pub const REQUEST_ID_FIELD: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// The final response header already sent to the client, if any: a `100 Continue` the
/// gateway wrote before reading the body is not one (Pingora reports it until the
/// final header replaces it).
pub fn final_response_written(session: &Session) -> Option<&ResponseHeader> {
    session.response_written().filter(|r| {
        !r.status.is_informational() || r.status == http::StatusCode::SWITCHING_PROTOCOLS
    })
}

/// Headers every answer of the proxy port carries: security headers, and CORS headers
/// when the request came from an allowed browser origin.
pub fn common_headers(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    edit_response(resp, |parts| common_fields(&mut parts.headers, ctx));
    Ok(())
}

/// [`common_headers`] on a head's fields.
pub fn common_fields(headers: &mut HeaderMap, ctx: &RequestCtx) {
    security_fields(headers, ctx);
    for (name, value) in &ctx.cors_headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// The security headers (and HSTS on a TLS listener).
fn security_fields(headers: &mut HeaderMap, ctx: &RequestCtx) {
    for (name, value) in crate::security::cors::SECURITY_HEADERS {
        headers.insert(name, value);
    }
    if let Some(hsts) = &ctx.state.hsts {
        headers.insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
}

/// `edit` on the parts of `resp`, which keeps no record of its fields' original case
/// afterwards (and its reason phrase becomes the status's own). Pingora's own way to
/// change a head's fields (`insert_header`) parses the field's name again on every
/// call, names a standard field's case by looking it up, and keeps a second,
/// case-preserving map for a head it parsed; the parts are a plain `http` head, changed
/// with the names and values the gateway made once. Field names are case-insensitive
/// (RFC 9110 §5.1); without the map, Pingora writes the standard ones in their usual
/// case (`Content-Type`) and others in lower case, as HTTP/2 does.
pub fn edit_response<R>(
    resp: &mut ResponseHeader,
    edit: impl FnOnce(&mut http::response::Parts) -> R,
) -> R {
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, empty));
    let out = edit(&mut parts);
    *resp = ResponseHeader::from(parts);
    out
}

/// Write an answer's head. Once the process drains, it says `Connection: close` and the
/// connection closes after this answer, however long ago the request came in.
pub async fn head(
    session: &mut Session,
    live: &crate::live::Live,
    resp: ResponseHeader,
    end: bool,
) -> Result<()> {
    if live.draining() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), end).await
}

/// An answer without a body (a CORS preflight), with `headers`.
pub async fn empty(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
) -> Result<()> {
    let mut resp = ResponseHeader::build_no_case(status, Some(8))?;
    for (name, value) in headers {
        resp.insert_header(name, value)?;
    }
    edit_response(&mut resp, |parts| security_fields(&mut parts.headers, ctx));
    resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
    if !ctx.request_id.is_empty() {
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    }
    ctx.local_status = Some(status);
    head(session, &ctx.live, resp, true).await?;
    Ok(())
}

/// Write a JSON response with the request id.
pub async fn json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Vec<u8>,
) -> Result<()> {
    let mut resp = ResponseHeader::build_no_case(status, Some(12))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if !ctx.request_id.is_empty() {
        resp.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
    }
    if status == 405 {
        resp.insert_header(http::header::ALLOW, "GET, POST, DELETE")?;
    }
    common_headers(&mut resp, ctx)?;
    match &ctx.error {
        Some(GatewayError::Unauthorized { challenge, .. }) => {
            resp.insert_header(http::header::WWW_AUTHENTICATE, challenge.as_str())?;
        }
        Some(GatewayError::Forbidden {
            challenge: Some(challenge),
            ..
        }) => {
            resp.insert_header(http::header::WWW_AUTHENTICATE, challenge.as_str())?;
        }
        Some(GatewayError::RateLimited {
            limit, retry_after, ..
        }) => {
            resp.insert_header(http::header::RETRY_AFTER, retry_after.to_string())?;
            resp.insert_header("ratelimit-limit", limit.to_string())?;
            resp.insert_header("ratelimit-remaining", "0")?;
            resp.insert_header("ratelimit-reset", retry_after.to_string())?;
        }
        Some(GatewayError::Busy(_)) => {
            resp.insert_header(http::header::RETRY_AFTER, "1")?;
        }
        _ => {}
    }
    ctx.local_status = Some(status);
    head(session, &ctx.live, resp, false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

/// The largest unread body of a refused request the gateway reads away to keep the
/// client's connection: a small MCP message; anything larger closes the connection.
const DRAIN_LIMIT: u64 = 16 * 1024;
/// How long reading it away may take before the connection is closed instead.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Answer with a JSON-RPC error; the id of the request is echoed when it was read.
/// The client's connection stays open when its request was read to its end, or when the
/// unread body is small ([`drained`]); otherwise, and after an oversized head (`431`), it
/// closes after the answer.
pub async fn error(session: &mut Session, ctx: &mut RequestCtx, err: GatewayError) -> Result<()> {
    let keep = match err {
        GatewayError::HeadersTooLarge { .. } => false,
        _ => session.is_body_done() || drained(session, ctx.state.max_request_body).await,
    };
    if !keep {
        session.set_keepalive(None);
    }
    let (status, _) = err.status_and_code();
    if let Some(detail) = err.detail() {
        // The client's message names the group and server only; where it went wrong
        // (addresses, Pingora's text) is for the operator.
        match ctx.server().and_then(|s| s.address()) {
            Some(address) => log::warn!(
                "request {}: {} (upstream address {address}): {detail}",
                ctx.request_id,
                err.kind()
            ),
            None => log::warn!("request {}: {}: {detail}", ctx.request_id, err.kind()),
        }
    }
    let id = ctx.mcp.envelope.as_ref().and_then(|e| e.id.as_deref());
    let body = err.to_body(id);
    ctx.error = Some(err);
    json(session, ctx, status, body).await
}

/// Read away the body of a request refused before it was read, so its connection can
/// serve the next request: only a body whose `Content-Length` is declared and small (at
/// most [`DRAIN_LIMIT`] and `limits.max_request_body`), not one a client holds back for
/// `100 Continue`, and only if it arrives within [`DRAIN_TIME`]. What the gateway does not
/// read (chunked or large bodies, slow clients) closes the connection instead.
async fn drained(session: &mut Session, max_body: u64) -> bool {
    let head = session.req_header();
    if super::framing::expects_continue(head) {
        return false;
    }
    let small = super::framing::declared_length(&head.headers)
        .is_some_and(|n| n <= DRAIN_LIMIT.min(max_body));
    if !small || head.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return false;
    }
    matches!(
        tokio::time::timeout(DRAIN_TIME, session.drain_request_body()).await,
        Ok(Ok(()))
    ) && session.is_body_done()
}
