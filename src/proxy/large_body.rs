//! Forwarding request bodies larger than Pingora's 64 KiB retry buffer.
//!
//! Pingora replays a body read in `request_filter` from its retry buffer, which holds
//! 64 KiB; past that the upstream would get headers and no body. For those requests the
//! gateway sends the request itself over a pooled upstream connection and relays the
//! response (streamed, chunk by chunk, so SSE works here too), applying the same
//! header shaping as the proxy path (`forward`). This is the only place that does so.

use super::ctx::RequestCtx;
use super::{forward, Gateway};
use crate::error::GatewayError;
use pingora::prelude::*;
use pingora::proxy::Session;

pub async fn forward(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let peer = forward::select(session, ctx)?;
    let body = ctx.body.clone().unwrap_or_default();
    let (group, server) = match (ctx.group.as_ref(), ctx.server()) {
        (Some(g), Some(s)) => (g.name.clone(), s.id.clone()),
        _ => return Err(GatewayError::Internal("no upstream selected".into())),
    };
    let upstream_err = |e: Box<Error>| {
        let detail = e.to_string();
        if matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
        ) {
            GatewayError::UpstreamTimeout {
                group: group.clone(),
                server: server.clone(),
                detail,
            }
        } else {
            GatewayError::UpstreamFailed {
                group: group.clone(),
                server: server.clone(),
                detail,
            }
        }
    };

    let (mut up, _reused) = gw
        .connector
        .get_http_session(&*peer)
        .await
        .map_err(upstream_err)?;
    up.set_read_timeout(peer.options.read_timeout);
    up.set_write_timeout(peer.options.write_timeout);

    let mut req = session.req_header().clone();
    forward::upstream_request(session, &mut req, ctx).map_err(upstream_err)?;
    up.write_request_header(Box::new(req))
        .await
        .map_err(upstream_err)?;
    up.write_request_body(body, true)
        .await
        .map_err(upstream_err)?;
    up.finish_request_body().await.map_err(upstream_err)?;
    up.read_response_header().await.map_err(upstream_err)?;
    // Skip informational (1xx) responses to the final one.
    while up
        .response_header()
        .is_some_and(|h| h.status.is_informational())
    {
        up.read_response_header().await.map_err(upstream_err)?;
    }

    let mut resp = up
        .response_header()
        .cloned()
        .ok_or_else(|| GatewayError::Internal("upstream response header missing".into()))?;
    forward::client_response(gw, &mut resp, ctx).map_err(upstream_err)?;
    ctx.local_status = Some(resp.status.as_u16());

    // From here on the client has a response; failures can only end the stream.
    let relay = async {
        session.write_response_header(Box::new(resp), false).await?;
        // `response_done` also prepares the body reader; call it before each read.
        while !up.response_done() {
            match up.read_response_body().await? {
                Some(chunk) => session.write_response_body(Some(chunk), false).await?,
                None => break,
            }
        }
        session.write_response_body(None, true).await?;
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
