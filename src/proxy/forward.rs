//! Choosing the upstream server and shaping the headers that cross the gateway.
//! Used by the gateway's own exchange for every request it forwards (`relay`: POSTs, GET
//! streams, DELETEs), and for the client adapter's answers on Pingora's proxy path.

use super::ctx::RequestCtx;
use super::respond::{edit_response, REQUEST_ID_FIELD};
use crate::error::GatewayError;
use crate::mcp::envelope::Era;
use crate::mcp::headers::MCP_SESSION_ID;
use crate::telemetry::metrics::METRICS;
use crate::upstream::exchange::Request;
use crate::upstream::head::{Fields, Head};
use crate::upstream::InFlight;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

/// Pick the server (the session's, else by the group's strategy, skipping servers already
/// tried for this request) and count it in flight.
pub fn select(session: &Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>, GatewayError> {
    let group = ctx
        .group
        .as_ref()
        .ok_or_else(|| GatewayError::Internal("no route".into()))?;
    // GET is the standing SSE stream; a POST answer may stream too but is bounded by
    // `timeouts.request` (Pingora fixes the read timeout before the answer is seen).
    let read_timeout = if session.req_header().method == http::Method::GET {
        ctx.timeouts.stream_idle
    } else {
        ctx.timeouts.request
    };
    let (attempt, peer) = match &ctx.pinned {
        Some(s) => {
            // Sessions stay on their server whatever its breaker says; a server that is
            // down (failed health checks, unresolvable) cannot hold them.
            let peer = s
                .is_up()
                .then(|| s.peer(read_timeout))
                .flatten()
                .ok_or_else(|| GatewayError::SessionServerDown(s.id.clone()))?;
            (InFlight::new(s.clone()), peer)
        }
        None => {
            let ip = ctx.client_ip(session);
            let attempt = group
                .select(ip, ctx.tried.as_slice())
                .ok_or_else(|| GatewayError::NoUpstream(group.name.clone()))?;
            ctx.tried.push(attempt.uid);
            // (Dropping the attempt here gives its breaker permit back.)
            let peer = attempt
                .peer(read_timeout)
                .ok_or_else(|| GatewayError::NoUpstream(group.name.clone()))?;
            (attempt, peer)
        }
    };
    ctx.outcome_recorded = false;
    ctx.upstream_status = None;
    ctx.upstream_started = Some(std::time::Instant::now());
    ctx.upstream = Some(attempt);
    Ok(peer)
}

/// Connecting to the chosen server failed (nothing was sent): may another server take
/// the request? Not a session's (its server being down is the answer), and only within
/// the group's `retries` while it has servers not tried yet.
pub fn failover(ctx: &RequestCtx) -> Result<bool, GatewayError> {
    if let Some(server) = &ctx.pinned {
        return Err(GatewayError::SessionServerDown(server.id.clone()));
    }
    Ok(ctx.group.as_ref().is_some_and(|g| {
        ctx.tried.len() <= g.retries as usize && g.has_untried(ctx.tried.as_slice())
    }))
}

/// The request as the upstream gets it, head and body in one buffer: HTTP/1.1, its own
/// path and authority, no connection fields of the client's (see `hop_by_hop`),
/// forwarding headers, the unsealed session id, and an exact `Content-Length` for the
/// body we read. The client's fields are written from its head, not copied
/// ([`crate::upstream::head`]).
pub fn upstream_request(session: &Session, ctx: &RequestCtx) -> Result<Request> {
    let Some(server) = ctx.server() else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "a request shaped before its server was chosen",
        ));
    };
    let target = &server.target;
    let client = session.req_header();
    let mut headers = Head::new(&client.headers);

    // One HTTP/1.1 request to the upstream, whatever the client spoke; its connection
    // fields stay on its connection (`hop_by_hop`), `Expect` included.
    super::hop_by_hop::strip_request(&mut headers);
    // Under `preserve_host`, the client's authority: HTTP/2's `:authority` (or an
    // absolute-form target), else its `Host`.
    let preserve_host = ctx.group.as_ref().is_some_and(|g| g.preserve_host);
    let client_authority = match client.uri.authority() {
        Some(a) if preserve_host => Some(value(a.as_str(), "the request's authority")?),
        _ => None,
    };

    // The upstream URL's path replaces the route's; the client's query string is kept
    // unless the upstream URL has its own.
    let request_target = match client.uri.query() {
        Some(q) if !target.path.contains('?') => [target.path.as_str(), "?", q],
        _ => [target.path.as_str(), "", ""],
    };

    if ctx.group.as_ref().is_some_and(|g| g.close_connections) {
        // Pooling is off: the upstream closes the connection after its answer.
        headers.insert(http::header::CONNECTION, CLOSE);
    }
    // No token passthrough: the client's credentials are for the gateway, never for the
    // server; a group may send its own.
    headers.remove(&http::header::AUTHORIZATION);
    // Credential headers (API keys) of the auth rules: never forwarded either.
    for h in ctx.state.auth.credential_headers.iter() {
        headers.remove(h);
    }
    if ctx.via.is_some() {
        // The ticket of a WebSocket or legacy SSE client's message is the gateway's own.
        headers.remove(&crate::transport::clients::CALLER);
    }
    if let Some(group) = &ctx.group {
        if let Some((name, value)) = &group.upstream_auth {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(fwd) = &group.forward_identity {
            // Only the gateway speaks for the client under this header.
            headers.remove(&fwd.header);
            if let Some(token) = ctx
                .identity
                .as_ref()
                .and_then(|who| fwd.token(who, &ctx.request_id))
            {
                headers.insert(fwd.header.clone(), token);
            }
        }
    }
    if !preserve_host {
        headers.insert(http::header::HOST, target.authority.clone());
    } else if let Some(authority) = client_authority {
        headers.insert(http::header::HOST, authority);
    }

    forwarding_headers(session, &mut headers, ctx)?;
    headers.insert(REQUEST_ID_FIELD, value(&ctx.request_id, "the request id")?);

    match (&ctx.upstream_session, ctx.era()) {
        (Some(s), _) => {
            headers.insert(SESSION_FIELD, value(s, "the upstream session")?);
        }
        (None, Some(Era::Modern)) => {
            // Ignored by modern servers; never forward a sealed id the upstream did not mint.
            headers.remove(&SESSION_FIELD);
        }
        (None, _) => {}
    }

    if let Some(span) = &ctx.span {
        // Continue the trace through the gateway's own span.
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
        for (name, v) in span.upstream_headers() {
            let name = HeaderName::try_from(name)
                .map_err(|e| Error::because(ErrorType::InternalError, "a trace field", e))?;
            headers.insert(name, value(&v, "a trace field")?);
        }
    }

    if ctx.list_scope != super::list_filter::Scope::Off {
        // The answer may be filtered: it must come uncompressed.
        headers.remove(&http::header::ACCEPT_ENCODING);
    }

    super::transform::upstream_headers(&mut headers, ctx);

    let body = match &ctx.body {
        Some(body) => {
            headers.remove(&http::header::TRANSFER_ENCODING);
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            &body[..]
        }
        None => &[],
    };
    headers.request(&client.method, &request_target, body)
}

/// `Connection: close`.
const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// `text` as a field value; `what` names it in the error for one that cannot be.
pub fn value(text: &str, what: &'static str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, what, e))
}

/// Fields that say where a request came from: only a trusted proxy may send them.
static FORWARDING: [HeaderName; 6] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-for"),
];
static ORIGIN: [HeaderName; 1] = [http::header::ORIGIN];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What the upstream learns of the client (docs/security.md#client-addresses): from a
/// client that is not a trusted proxy, `X-Forwarded-For` is its address alone and the
/// other forwarding fields are the gateway's own or absent; a trusted proxy's chain is
/// extended with its address, and its `Forwarded`, `X-Forwarded-Host`/`-Port`/`-Proto`
/// pass. `X-Real-IP` is the client address the gateway decided on. A browser's
/// `Origin` was checked here and is not passed on (SDK servers refuse foreign ones).
fn forwarding_headers(session: &Session, headers: &mut Head, ctx: &RequestCtx) -> Result<()> {
    use super::hop_by_hop::present;
    use crate::security::edge;
    for h in present(headers.client(), &ORIGIN) {
        headers.remove(h);
    }
    if let Some(caller) = &ctx.via {
        // A message of a WebSocket or legacy SSE client: its address is the caller's.
        for h in present(headers.client(), &FORWARDING) {
            headers.remove(h);
        }
        if let Some(ip) = caller.ip {
            let ip = value(&ip.to_string(), "the client address")?;
            headers.insert(X_FORWARDED_FOR, ip.clone());
            headers.insert(X_REAL_IP, ip);
        }
        return Ok(());
    }
    let Some(peer) = edge::peer_ip(session) else {
        for h in present(headers.client(), &FORWARDING) {
            headers.remove(h);
        }
        return Ok(());
    };
    let edge = &ctx.state.edge;
    let trusted = edge.is_trusted(peer);
    let client = edge.client_ip(peer, headers.client());
    // The address's text, made once per connection.
    let peer_text = match ctx.conn().and_then(|c| c.peer_ip.as_ref()) {
        Some((ip, text)) if *ip == peer => text.clone(),
        _ => http::HeaderValue::try_from(peer.to_string())
            .map_err(|e| Error::because(ErrorType::InternalError, "the client address", e))?,
    };
    let xff = if trusted {
        let mut chain = String::new();
        for v in headers.client().get_all(&X_FORWARDED_FOR) {
            let v = String::from_utf8_lossy(v.as_bytes());
            let v = v.trim().trim_matches(',').trim();
            if !v.is_empty() {
                chain.push_str(v);
                chain.push_str(", ");
            }
        }
        chain.push_str(peer_text.to_str().unwrap_or_default());
        http::HeaderValue::try_from(chain)
            .map_err(|e| Error::because(ErrorType::InternalError, "X-Forwarded-For", e))?
    } else {
        for h in present(headers.client(), &FORWARDING) {
            headers.remove(h);
        }
        peer_text.clone()
    };
    headers.insert(X_FORWARDED_FOR, xff);
    let real = if client == peer {
        peer_text
    } else {
        http::HeaderValue::try_from(client.to_string())
            .map_err(|e| Error::because(ErrorType::InternalError, "the client address", e))?
    };
    headers.insert(X_REAL_IP, real);
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if crate::security::tls::is_tls(session) {
            "https"
        } else {
            "http"
        };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    Ok(())
}

/// Count an SSE answer in `mcp_gateway_sse_streams_active` until the request ends.
pub fn count_sse(resp: &ResponseHeader, ctx: &mut RequestCtx) {
    let is_sse = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if let (true, None, Some(group)) = (is_sse, &ctx.sse, ctx.group.as_ref()) {
        let gauge = METRICS.sse_streams_active.with_label_values(&[&group.name]);
        gauge.inc();
        ctx.sse = Some(gauge);
    }
}

/// An answer whose lists the caller's policies filter (every SSE answer when policies
/// exist; JSON answers to list requests and GET streams): its length changes, so it is
/// sent chunked.
///
/// `hold_json`: the caller sends a JSON answer's head only once the filtered body is
/// complete, with its `Content-Length` (the POST exchange does: one send, keep-alive);
/// otherwise its length changes, so it is sent chunked.
pub fn filter_list(resp: &mut ResponseHeader, ctx: &mut RequestCtx, hold_json: bool) -> Result<()> {
    use super::list_filter::{ListFilter, Scope};
    if ctx.list_scope == Scope::Off
        || !resp.status.is_success()
        || resp.status == http::StatusCode::NO_CONTENT
    {
        return Ok(());
    }
    let header = |name| {
        resp.headers
            .get(name)
            .map(|v: &http::HeaderValue| v.as_bytes())
            .unwrap_or_default()
    };
    let sse = super::list_filter::is_sse(header(http::header::CONTENT_TYPE));
    if !sse && ctx.list_scope != Scope::All {
        return Ok(());
    }
    // A single request's id goes in an error sent in place of its answer (a batch's:
    // `null`, the answer being many).
    let id = match ctx.mcp.batch_len {
        None => ctx.mcp.envelope.as_ref().and_then(|e| e.id.as_deref()),
        Some(_) => None,
    };
    let encoding = header(http::header::CONTENT_ENCODING);
    let filter = if encoding.is_empty() || encoding.eq_ignore_ascii_case(b"identity") {
        ListFilter::new(id.map(|id| id.get()), sse)
    } else {
        // Asked uncompressed, sent compressed: it cannot be read, so it is not passed on.
        resp.remove_header(&http::header::CONTENT_ENCODING);
        ListFilter::refusing(
            id.map(|id| id.get()),
            sse,
            "the server compressed its answer",
        )
    };
    let whole = !filter.is_sse() && hold_json;
    ctx.list_filter = Some(filter);
    if !whole {
        resp.remove_header(&http::header::CONTENT_LENGTH);
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// The response as the client gets it: the upstream session sealed, the request id added.
pub fn client_response(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    edit_response(resp, |parts| client_fields(&mut parts.headers, ctx))
}

/// [`client_response`] on the answer's fields.
fn client_fields(headers: &mut HeaderMap, ctx: &RequestCtx) -> Result<()> {
    // Never a `101` here: upstream_response_filter and the exchange refuse it.
    super::hop_by_hop::strip_response(headers);
    headers.reserve(ADDED_FIELDS);
    if ctx.era() == Some(Era::Modern) {
        // Sessions belong to the legacy era: an upstream's own id never reaches the
        // client unsealed (nor does the gateway seal one it would never honour).
        headers.remove(&SESSION_FIELD);
    } else if let (Some(minted), Some(group), Some(server)) = (
        headers.get(&SESSION_FIELD),
        ctx.group.as_ref(),
        ctx.server(),
    ) {
        let minted = String::from_utf8_lossy(minted.as_bytes());
        let carried = ctx.upstream_session.as_deref() == Some(&*minted);
        let sealed = match &ctx.session_sealed {
            // The session the request carried (servers send it back on every answer),
            // from the server it pins: the client's own id carries exactly what sealing
            // it again would, group, identity and start (`sessions.ttl` does not slide)
            // included, so it goes back as it came.
            Some(theirs) if carried => theirs.clone(),
            _ => {
                // Sealed by an older key (sealed anew by the current one, with the
                // session's start), or an id the upstream mints anew (starting now).
                let issued_at = match ctx.session_issued_at {
                    Some(at) if carried => at,
                    _ => crate::mcp::session::now(),
                };
                let sealed = ctx.state.sessions.seal(
                    &group.name,
                    ctx.session_owner(),
                    &server.id,
                    &minted,
                    issued_at,
                );
                value(&sealed, "the sealed session")?
            }
        };
        headers.insert(SESSION_FIELD, sealed);
        if ctx.mcp.method() == Some("initialize") {
            METRICS.sessions.with_label_values(&[&group.name]).inc();
        }
    }
    headers.insert(REQUEST_ID_FIELD, value(&ctx.request_id, "the request id")?);
    super::respond::common_fields(headers, ctx);
    if let Some(q) = ctx.quota {
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(q.limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(q.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(q.reset));
    }
    let is_sse = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_sse {
        // Tell any buffering proxy in front of us to pass events on at once.
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    Ok(())
}

/// About how many fields the gateway adds to a request or an answer it forwards.
const ADDED_FIELDS: usize = 8;

/// The names of fields set on every request or answer, made once.
const SESSION_FIELD: HeaderName = HeaderName::from_static(MCP_SESSION_ID);
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
