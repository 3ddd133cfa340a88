//! Forwarding request bodies larger than Pingora's 64 KiB retry buffer.
//!
//! Pingora replays a body read in `request_filter` from its retry buffer, which holds
//! 64 KiB; past that the upstream would get headers and no body. For those requests the
//! gateway sends the request itself over a pooled upstream connection and relays the
//! response (streamed, chunk by chunk, so SSE works here too), applying the same
//! header shaping as the proxy path (`forward`, `hop_by_hop`). This is the only place
//! that does so. Like Pingora's proxy path it watches the client while the upstream is
//! silent: a client that leaves closes the upstream request (the modern cancellation).

use super::ctx::RequestCtx;
use super::{forward, Gateway};
use crate::error::GatewayError;
use crate::telemetry::record;
use pingora::prelude::*;
use pingora::proxy::Session;

pub async fn forward(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    // Connect, failing over like the proxy path does while nothing was sent.
    let (peer, mut up) = loop {
        let peer = forward::select(session, ctx)?;
        match gw.connector.get_http_session(&*peer).await {
            Ok((up, _reused)) => break (peer, up),
            Err(e) => {
                record::upstream_attempt(ctx, "connect_error");
                super::outcome::record(ctx, false);
                if let Some(server) = &ctx.pinned {
                    return Err(GatewayError::SessionServerDown(server.id.clone()));
                }
                let retry = ctx.group.as_ref().is_some_and(|g| {
                    ctx.tried.len() <= g.retries as usize && g.has_untried(ctx.tried.as_slice())
                });
                if !retry {
                    let (group, server) = names(ctx);
                    return Err(upstream_error(group, server, e));
                }
            }
        }
    };
    up.set_read_timeout(peer.options.read_timeout);
    up.set_write_timeout(peer.options.write_timeout);

    let mut req = session.req_header().clone();
    forward::upstream_request(session, &mut req, ctx).map_err(|e| upstream_failure(ctx, e))?;
    let body = ctx.body.clone().unwrap_or_default();
    let exchange = async {
        up.write_request_header(Box::new(req)).await?;
        up.write_request_body(body, true).await?;
        up.finish_request_body().await?;
        // Skip informational (1xx) responses to the final one; a 101 is refused.
        loop {
            up.read_response_header().await?;
            match up.response_header().map(|h| h.status) {
                Some(http::StatusCode::SWITCHING_PROTOCOLS) => return Ok(Answer::Switched),
                Some(s) if s.is_informational() => continue,
                _ => return Ok(Answer::Final),
            }
        }
    };
    // Watch the client while the upstream is silent, as Pingora's proxy path does.
    let answer = tokio::select! {
        biased;
        answer = exchange => answer,
        _ = session.read_body_or_idle(true) => {
            client_left(ctx, session, &mut up, "before the upstream answered").await;
            return Ok(());
        }
    };
    match answer {
        Ok(Answer::Final) => {}
        Ok(Answer::Switched) => {
            record::upstream_attempt(ctx, "error");
            super::outcome::record(ctx, false);
            up.shutdown().await;
            return Err(super::hop_by_hop::switched_protocols(ctx));
        }
        // Sent (at least in part): never replayed, but it counts against the server.
        Err(e) => return Err(upstream_failure(ctx, e)),
    }

    let mut resp = up
        .response_header()
        .cloned()
        .ok_or_else(|| GatewayError::Internal("upstream response header missing".into()))?;
    forward::client_response(&mut resp, ctx).map_err(|e| upstream_failure(ctx, e))?;
    ctx.local_status = Some(resp.status.as_u16());
    ctx.upstream_status = Some(resp.status.as_u16());
    record::upstream_attempt(ctx, record::status_class(resp.status.as_u16()));
    super::outcome::record(ctx, resp.status.as_u16() < 500);
    forward::count_sse(&resp, ctx);
    // A list request padded past the retry buffer is filtered all the same.
    forward::filter_list(&mut resp, ctx).map_err(|e| upstream_failure(ctx, e))?;
    let caller = super::list_filter::Caller {
        policies: &ctx.state.policies,
        identity: ctx.identity.as_ref(),
        route: ctx.route.as_deref().unwrap_or_default(),
    };
    let filter = &mut ctx.list_filter;

    // From here on the client has a response; failures can only end the stream.
    let relay = async {
        session.write_response_header(Box::new(resp), false).await?;
        // `response_done` also prepares the body reader; call it before each read.
        while !up.response_done() {
            // The client leaving while the upstream is silent ends the relay too.
            let read = tokio::select! {
                biased;
                read = up.read_response_body() => read?,
                idle = session.read_body_or_idle(true) => {
                    return Err(idle.err().unwrap_or_else(|| {
                        Error::explain(ErrorType::ConnectionClosed, "the client sent data after its request")
                    }));
                }
            };
            match read {
                Some(chunk) => {
                    let mut chunk = Some(chunk);
                    if let Some(f) = filter.as_mut() {
                        f.chunk(&caller, &mut chunk, false);
                    }
                    session.write_response_body(chunk, false).await?;
                }
                None => break,
            }
        }
        let mut last = None;
        if let Some(f) = filter.as_mut() {
            f.chunk(&caller, &mut last, true);
        }
        session.write_response_body(last, true).await?;
        Ok::<_, Box<Error>>(())
    };
    match relay.await {
        Ok(()) => {
            if up.response_done() {
                gw.connector
                    .release_http_session(up, &*peer, peer.options.idle_timeout)
                    .await;
            }
        }
        Err(e) => {
            // The client went away or the upstream failed mid-stream: close the upstream
            // request (in the modern era that is the cancellation).
            log::debug!(
                "large-body relay for request {} ended early: {e}",
                ctx.request_id
            );
            up.shutdown().await;
            session.set_keepalive(None);
        }
    }
    Ok(())
}

/// What the upstream answered with.
enum Answer {
    Final,
    /// `101 Switching Protocols`: refused.
    Switched,
}

/// The client went away before the answer began: close the upstream request (in the
/// modern era that is the cancellation). It says nothing about the server.
async fn client_left(
    ctx: &mut RequestCtx,
    session: &mut Session,
    up: &mut pingora::protocols::http::client::HttpSession,
    when: &str,
) {
    log::debug!(
        "large-body request {}: the client went away {when}",
        ctx.request_id
    );
    up.shutdown().await;
    session.set_keepalive(None);
    ctx.error = Some(GatewayError::ClientClosed);
}

/// Record a failed attempt and name it for the client.
fn upstream_failure(ctx: &mut RequestCtx, e: Box<Error>) -> GatewayError {
    if !ctx.outcome_recorded {
        record::upstream_attempt(ctx, "error");
    }
    super::outcome::record(ctx, false);
    let (group, server) = names(ctx);
    upstream_error(group, server, e)
}

fn names(ctx: &RequestCtx) -> (String, String) {
    (
        ctx.group
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        ctx.server().map(|s| s.id.clone()).unwrap_or_default(),
    )
}

fn upstream_error(group: String, server: String, e: Box<Error>) -> GatewayError {
    let detail = e.to_string();
    if matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    ) {
        GatewayError::UpstreamTimeout {
            group,
            server,
            detail,
        }
    } else {
        GatewayError::UpstreamFailed {
            group,
            server,
            detail,
        }
    }
}
