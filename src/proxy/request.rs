//! The request phase: route → method → body → JSON-RPC inspection → session.
//!
//! Returns `Ok(true)` when the gateway answered itself (an error, a health probe, a
//! virtual server's answer, or a request it forwarded through [`relay`]: every POST, GET
//! stream and DELETE), `Ok(false)` to let Pingora proxy the request to the client adapter
//! (a WebSocket or legacy SSE client's).

use super::ctx::RequestCtx;
use super::framing;
use super::list_filter::Scope;
use super::record;
use super::{relay, respond, Gateway};
use crate::error::GatewayError;
use crate::mcp::envelope::{self, Body, Era, InspectError};
use crate::mcp::headers::{self, names};
use crate::security::auth::{Identity, Throttled};
use crate::security::cors::Cors;
use crate::security::policy::{Action, ListKind};
use crate::security::rate_limit::Subject;
use crate::security::streams::TooManyStreams;
use crate::state::State;
use crate::telemetry::metrics::{self, METRICS};
use crate::telemetry::tracing::RequestSpan;
use crate::transport::clients::Kind;
use http::Method;
use pingora::prelude::*;
use pingora::proxy::Session;

/// The `rule` of a lockout after failed authentication (`Retry-After` as rate limits).
const AUTH_THROTTLE_RULE: &str = "auth_throttle";
/// The `rule` of a refusal by `max_concurrent_streams` (in the error and its metric).
const STREAM_RULE: &str = "max_concurrent_streams";
/// What a client refused a stream is told to wait: streams end when their client
/// closes them, so there is no window to wait for.
const STREAM_RETRY_AFTER: u64 = 5;

pub async fn filter(gw: &Gateway, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    // One reference to this request's state for the whole filter (a reload may swap
    // the live one meanwhile).
    let state = ctx.state.clone();
    ctx.request_id = request_id(session);
    ctx.timeouts = state.timeouts;
    // One message of a WebSocket or legacy SSE client, sent in by the client adapter on
    // the internal listener: its caller was checked when the connection was admitted.
    if let Some(found) = super::clients::internal_caller(session) {
        match found {
            Ok(caller) => ctx.via = Some(caller),
            Err(e) => {
                respond::error(session, ctx, e).await?;
                return Ok(true);
            }
        }
    }
    let internal = ctx.via.is_some();
    let draining = gw.live.draining();
    if draining {
        // Shutting down: answer with `Connection: close`, so keep-alive clients move to
        // a fresh connection (another replica) before the listeners close.
        session.set_keepalive(None);
    }
    // DNS rebinding: a request for a host this listener does not answer for is refused
    // before anything else is read (health probes may also name an address, or none).
    let path = session.req_header().uri.path();
    let probe = super::health::is_probe(path);
    // The client's scheme: the listener's, or a trusted proxy's X-Forwarded-Proto.
    let scheme = crate::security::edge::scheme(session, &state.edge);
    let https = scheme == "https";
    let hosts = match internal {
        // Checked on the client's own connection.
        true => Ok(()),
        false => state
            .edge
            .hosts
            .check(session.req_header(), https, probe, "server.allowed_hosts"),
    };
    if let Err(e) = hosts {
        respond::error(session, ctx, e).await?;
        return Ok(true);
    }
    let path = session.req_header().uri.path();
    if let Some(answer) = super::health::answer(path, &state, draining) {
        let (status, body) = answer;
        respond::json(session, ctx, status, body).await?;
        return Ok(true);
    }
    // Oversized heads are refused before anything else (Pingora's own cap is 1 MiB).
    let head = session.req_header();
    let target = head.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let size = target as u64
        + head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
            .sum::<u64>();
    if size > state.max_request_headers {
        let limit = state.max_request_headers;
        respond::error(session, ctx, GatewayError::HeadersTooLarge { size, limit }).await?;
        return Ok(true);
    }
    // Browsers: refuse foreign origins before reading anything; answer preflights here.
    // The request's own origin is allowed once its Host was checked above.
    let req = session.req_header();
    let own = match crate::security::edge::authority(req) {
        Ok(Some(authority)) if state.edge.hosts.is_enabled() => Some((scheme, authority)),
        _ => None,
    };
    match state.cors.check_origin(&req.headers, own) {
        Ok(origin) => {
            if let Some(o) = &origin {
                ctx.cors_headers = state.cors.headers(o, false);
            }
            ctx.cors_origin = origin;
        }
        Err(origin) => {
            respond::error(session, ctx, GatewayError::ForbiddenOrigin(origin)).await?;
            return Ok(true);
        }
    }
    let req = session.req_header();
    if Cors::is_preflight(&req.method, &req.headers) {
        match &ctx.cors_origin {
            Some(origin) if state.cors.method_allowed(&req.headers) => {
                let headers = state.cors.headers(origin, true);
                respond::empty(session, ctx, 204, headers).await?;
            }
            _ => {
                let origin = String::from_utf8_lossy(
                    req.headers
                        .get(http::header::ORIGIN)
                        .map(|v| v.as_bytes())
                        .unwrap_or(b"(none)"),
                )
                .into_owned();
                respond::error(session, ctx, GatewayError::ForbiddenOrigin(origin)).await?;
            }
        }
        return Ok(true);
    }
    // OAuth clients discover the authorization server here (RFC 9728).
    let req = session.req_header();
    if req.method == Method::GET {
        if let Some(doc) = state.auth.resource_metadata(req.uri.path()) {
            let doc = doc.to_vec();
            respond::json(session, ctx, 200, doc).await?;
            return Ok(true);
        }
    }
    if crate::telemetry::tracing::enabled() {
        let req = session.req_header();
        ctx.span = RequestSpan::start(format!("{} {}", req.method, path), &req.headers);
    }
    let checked = check(gw, &state, session, ctx).await;
    if ctx.span.is_some() {
        record::span_request(session, ctx);
    }
    match checked {
        Ok(Next::Proxy) => Ok(false),
        Ok(Next::Answered) => Ok(true),
        Err(e) => {
            respond::error(session, ctx, e).await?;
            Ok(true)
        }
    }
}

enum Next {
    Proxy,
    Answered,
}

async fn check(
    gw: &Gateway,
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Next, GatewayError> {
    let req = session.req_header();
    let full_path = req.uri.path();
    // A virtual server's path, or a route's (to one group); where neither matches, a
    // legacy SSE client's endpoint under one (that client's messages come in on the
    // route's own path).
    let find = |p: &str| match state.virtual_servers.get(p) {
        Some(vs) => Some((vs.path.clone(), None, Some(vs.clone()))),
        None => state
            .routes
            .get(p)
            .map(|r| (r.path.clone(), Some(r.group.clone()), None)),
    };
    let (found, mut kind) = match find(full_path) {
        Some(found) => (Some(found), None),
        None if ctx.via.is_none() => {
            match super::clients::legacy_endpoint(full_path, |p| find(p).is_some()) {
                Some((base, kind)) => (find(base), Some(kind)),
                None => (None, None),
            }
        }
        None => (None, None),
    };
    let (route_path, group, virtual_server) =
        found.ok_or_else(|| GatewayError::NoRoute(full_path.to_string()))?;
    ctx.route = Some(route_path.clone());
    ctx.group = group.clone();
    if !state.transforms.is_empty() {
        ctx.transforms = state.transforms.get(&route_path).cloned();
    }
    if kind.is_none() && ctx.via.is_none() && super::clients::is_websocket(req) {
        kind = Some(Kind::WebSocket);
    }
    // No protocol switch but a WebSocket client's, and no connection fields the gateway
    // will not honour.
    super::hop_by_hop::check_request(req, kind == Some(Kind::WebSocket))?;
    if let Some(kind) = kind {
        super::clients::check(req, kind)?;
    }

    // The address rate limits and the authentication throttle count the client by.
    let ip = ctx.client_ip(session);

    if let Some(caller) = &ctx.via {
        // A message of a connection admitted on this route, from the caller admitted.
        if *caller.route != *route_path {
            return Err(GatewayError::SessionNotFound);
        }
        ctx.identity = caller.identity.clone();
    } else if !state.auth.is_empty() {
        // Who is calling, before anything else is read.
        let cert = crate::security::tls::peer_cert(session);
        match state.auth.check(&route_path, &req.headers, cert, ip).await {
            Ok(identity) => ctx.identity = identity,
            Err(refusal) => {
                metrics::counter(&METRICS.auth_rejections, &[&route_path, refusal.reason]).inc();
                if let Some(throttled) = refusal.throttled {
                    metrics::counter(&METRICS.auth_throttled, &[throttled.reason()]).inc();
                    return Err(match throttled {
                        Throttled::Locked {
                            limit, retry_after, ..
                        } => GatewayError::RateLimited {
                            rule: AUTH_THROTTLE_RULE.into(),
                            limit,
                            retry_after,
                            message: refusal.message,
                        },
                        Throttled::Busy { .. } => GatewayError::Busy(refusal.message),
                    });
                }
                if refusal.forbidden {
                    return Err(GatewayError::Forbidden {
                        reason: refusal.reason,
                        message: refusal.message,
                        challenge: Some(refusal.challenge),
                    });
                }
                return Err(GatewayError::Unauthorized {
                    reason: refusal.reason,
                    message: refusal.message,
                    challenge: refusal.challenge,
                });
            }
        }
    }

    let method = req.method.clone();
    // A legacy SSE client's message POST is inspected when the adapter sends it in.
    let message_post = kind == Some(Kind::LegacyMessage);
    if method == Method::POST && !message_post {
        read_and_inspect(state, session, ctx).await?;
    } else if method == Method::GET
        && kind.is_none()
        && !framing::accepts_sse(&session.req_header().headers)
    {
        return Err(GatewayError::NotAcceptable(
            "a GET opens the server's SSE stream: Accept must include text/event-stream".into(),
        ));
    } else if method != Method::GET && method != Method::DELETE && !message_post {
        return Err(GatewayError::MethodNotAllowed(method.to_string()));
    }

    // Sessions belong to the legacy era; modern servers ignore the header, so do we. (A
    // virtual server opens its own sessions.)
    if let (Some(group), false, None) = (&group, ctx.era() == Some(Era::Modern), kind) {
        if let Some(field) = session.req_header().headers.get(&names::SESSION_ID) {
            let sealed = field.to_str().map_err(|_| GatewayError::SessionNotFound)?;
            // Opens only for the identity it was issued to (anonymous: no identity).
            let opened = state
                .sessions
                .open(&group.name, ctx.session_owner(), sealed)
                .ok_or(GatewayError::SessionNotFound)?;
            if let Some(ttl) = state.session_ttl {
                let now = crate::mcp::session::now();
                if now.saturating_sub(opened.issued_at) > ttl.as_secs() {
                    return Err(GatewayError::SessionNotFound);
                }
            }
            let server = group
                .server_by_id(&opened.server_id)
                .ok_or_else(|| GatewayError::SessionServerGone(opened.server_id.to_string()))?;
            ctx.pinned = Some(server.clone());
            ctx.upstream_session = Some(opened.upstream_session);
            ctx.session_issued_at = Some(opened.issued_at);
            if opened.by_first_key {
                ctx.session_sealed = Some(field.clone());
            }
        }
    }

    // Every message of a batch is authorized, rate-limited and filtered as if sent alone.
    if !state.policies.is_empty() && !message_post {
        if ctx.mcp.envelope.is_none() {
            // A GET stream or a DELETE: only rules without method or item conditions match.
            authorize(state, &route_path, ctx.identity.as_ref(), None)?;
        }
        for env in ctx.mcp.messages() {
            authorize(state, &route_path, ctx.identity.as_ref(), Some(env))?;
        }
        // JSON answers are filtered for list requests, for methods the gateway does not
        // know (a server may answer one with a list) and for GETs; SSE answers always.
        let lists = method == Method::GET
            || ctx.mcp.messages().any(|e| match e.method.as_deref() {
                Some(m) => ListKind::of(m).is_some() || !e.method_is_known(),
                None => false,
            });
        ctx.list_scope = Scope::of(&state.policies, lists);
    }

    if !state.rate_limits.is_empty() && !message_post {
        // One count per message (a GET or DELETE: one), each `tools/call` under its tool.
        fn tool(e: &envelope::Envelope) -> Option<&str> {
            match e.method.as_deref() {
                Some("tools/call") => e.name.as_deref(),
                _ => None,
            }
        }
        let tools = std::iter::once(ctx.mcp.envelope.as_ref().and_then(tool))
            .chain(ctx.mcp.batch_rest.iter().map(tool));
        let mut tightest: Option<crate::security::rate_limit::Quota> = None;
        for tool in tools {
            let subject = Subject {
                route: &route_path,
                ip,
                identity: ctx.identity.as_ref(),
                tool,
            };
            match state.rate_limits.check(&subject).await {
                Ok(quota) => {
                    if let Some(q) = quota {
                        if tightest.is_none_or(|t| q.remaining < t.remaining) {
                            tightest = Some(q);
                        }
                    }
                }
                Err(limited) => {
                    metrics::counter(&METRICS.rate_limited, &[&route_path, &limited.rule]).inc();
                    return Err(GatewayError::RateLimited {
                        rule: limited.rule,
                        limit: limited.limit,
                        retry_after: limited.retry_after,
                        message: limited.message,
                    });
                }
            }
        }
        ctx.quota = tightest;
    }
    if ctx.transforms.is_some() {
        // Every answer passes the transforms (JSON whole, SSE event by event).
        ctx.list_scope = Scope::All;
    }
    let subject = Subject {
        route: &route_path,
        ip,
        identity: ctx.identity.as_ref(),
        tool: None,
    };
    // A GET is the standing SSE stream (or a WebSocket, or a legacy SSE stream): it holds
    // a slot until its request ends. Such a client's own GET stream is in its slot.
    if method == Method::GET && state.streams.is_enabled() && ctx.via.is_none() {
        match state.streams.open(subject.identity_key()) {
            Ok(slot) => ctx.stream_slot = Some(slot),
            Err(TooManyStreams(cap)) => {
                metrics::counter(&METRICS.rate_limited, &[&route_path, STREAM_RULE]).inc();
                return Err(GatewayError::RateLimited {
                    rule: STREAM_RULE.into(),
                    limit: cap,
                    retry_after: STREAM_RETRY_AFTER,
                    message: format!(
                        "stream limit: at most {cap} open SSE streams (GET) per client \
                         (security.rate_limiting.max_concurrent_streams); close one before \
                         opening another"
                    ),
                });
            }
        }
    }

    if let Some(kind) = kind {
        // The client adapter speaks the client's transport from here.
        super::clients::admit(session, ctx, kind, ip);
        return Ok(Next::Proxy);
    }
    if let Some(vs) = virtual_server {
        // The gateway is the MCP server here.
        // Boxed, built in its box: its future (6.5 KB) would otherwise be part of every
        // request's, passthrough streams' included, for as long as they last.
        super::serve::in_box(|| super::federated::answer(gw, session, ctx, &vs, ip)).await?;
        return Ok(Next::Answered);
    }
    if ctx.body.is_some() {
        // A POST, read and checked: refused or rewritten by the route's transforms,
        // answered from the cache (keyed on the call as the client sent it), or sent by
        // the gateway itself.
        let rewritten = super::transform::plan(ctx)?;
        if let super::cache::Looked::Answered = super::cache::lookup(session, ctx).await? {
            return Ok(Next::Answered);
        }
        if let Some(r) = rewritten {
            super::transform::apply(ctx, r);
        }
    } else if !session.is_body_done() {
        // A GET or DELETE with a body (MCP sends none): read whole, bounded as a POST's,
        // and sent on with it.
        let limit = state.max_request_body;
        let declared = framing::declared_length(&session.req_header().headers);
        if declared.is_some_and(|n| n > limit) {
            return Err(GatewayError::PayloadTooLarge { limit });
        }
        let timeout = state.request_body_timeout;
        ctx.body = Some(framing::read_body(session, limit, declared, timeout).await?);
    }
    // The gateway sends the request itself (a GET stream and a DELETE as a POST).
    relay::forward(gw, session, ctx).await?;
    Ok(Next::Answered)
}

/// May the caller send this message (`None`: a GET or a DELETE)?
fn authorize(
    state: &State,
    route: &str,
    who: Option<&Identity>,
    message: Option<&envelope::Envelope>,
) -> Result<(), GatewayError> {
    let Err(denied) = state
        .policies
        .check(who, &Action::of_message(route, message))
    else {
        return Ok(());
    };
    let rule = denied.rule.as_deref().unwrap_or("(no rule)");
    metrics::counter(&METRICS.policy_denials, &[route, rule]).inc();
    // An OAuth client may get a token with the scopes that would let it through.
    let challenge = who
        .filter(|id| id.method == "jwt" && !denied.missing_scopes.is_empty())
        .and_then(|_| state.auth.insufficient_scope(route, &denied.missing_scopes));
    Err(GatewayError::Forbidden {
        reason: if challenge.is_some() {
            "insufficient_scope"
        } else {
            "policy"
        },
        message: denied.message,
        challenge,
    })
}

/// Read the whole POST body (bounded by `limits.max_request_body`) and inspect its envelope.
async fn read_and_inspect(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let headers = &session.req_header().headers;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    if !framing::is_json_utf8(content_type) {
        return Err(GatewayError::UnsupportedMediaType(
            String::from_utf8_lossy(content_type).into_owned(),
        ));
    }
    let limit = state.max_request_body;
    let declared = framing::declared_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }

    // A client waiting for `100 Continue` gets it now, from the gateway: the upstream
    // never sees `Expect` (the body is read here, before any upstream is chosen).
    if framing::expects_continue(session.req_header()) && !session.is_body_done() {
        session
            .write_continue_response()
            .await
            .map_err(|_| GatewayError::ClientClosed)?;
    }
    let body = framing::read_body(session, limit, declared, state.request_body_timeout).await?;

    let parsed = envelope::inspect(&body).map_err(|e| match e {
        InspectError::Parse(m) => GatewayError::Parse(m),
        InspectError::Invalid(m, id) => {
            // Echo the id in the error when it could be read.
            ctx.mcp.envelope = id.map(|id| envelope::Envelope {
                kind: envelope::Kind::Request,
                id: Some(id),
                method: None,
                name: None,
                names: None,
                protocol_version: None,
            });
            GatewayError::InvalidRequest(m)
        }
    })?;
    if crate::mcp::depth::deeper_than(&body, state.max_json_depth) {
        return Err(GatewayError::Parse(format!(
            "the JSON nests deeper than {} levels (limits.max_json_depth)",
            state.max_json_depth
        )));
    }
    let headers = &session.req_header().headers;
    match parsed {
        Body::Single(env) => {
            let era = env.era();
            ctx.mcp.envelope = Some(env);
            if era == Era::Modern {
                let env = ctx.mcp.envelope.as_ref().expect("set above");
                headers::check_modern(env, headers).map_err(GatewayError::HeaderMismatch)?;
            }
        }
        Body::Batch(items) => {
            if !headers::batch_allowed(headers) {
                return Err(GatewayError::InvalidRequest(format!(
                    "JSON-RPC batches are only allowed with protocol version {} (this request negotiated {})",
                    envelope::BATCH_VERSION,
                    String::from_utf8_lossy(
                        headers.get(headers::MCP_PROTOCOL_VERSION).map(|v| v.as_bytes()).unwrap_or_default()
                    )
                )));
            }
            if items.iter().any(|e| e.era() == Era::Modern) {
                return Err(GatewayError::InvalidRequest(
                    "JSON-RPC batches are not allowed in protocol version 2026-07-28 and later"
                        .into(),
                ));
            }
            ctx.mcp.batch_len = Some(items.len());
            let mut items = items.into_iter();
            ctx.mcp.envelope = items.next();
            ctx.mcp.batch_rest = items.collect();
        }
    }
    ctx.body = Some(body);
    Ok(())
}

/// The client's `X-Request-Id` when it is a sane token, else a fresh random one.
fn request_id(session: &Session) -> String {
    if let Some(v) = session.req_header().headers.get(&respond::REQUEST_ID_FIELD) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| (0x21..=0x7e).contains(c)) {
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    hex_id(rand::random())
}

/// `n` as 32 lower-case hex digits (`format!("{n:032x}")`, without the formatter's
/// machinery: about 1,000 instructions a request).
fn hex_id(n: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for i in (0..32).rev() {
        id.push(DIGITS[(n >> (i * 4)) as usize & 0xf] as char);
    }
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fresh_request_id_is_its_number_in_32_hex_digits() {
        for n in [
            0,
            1,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ] {
            assert_eq!(super::hex_id(n), format!("{n:032x}"));
        }
    }
}
