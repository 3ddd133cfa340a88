//! Forwarding request bodies larger than Pingora's 64 KiB retry buffer.
//!
//! Pingora replays a body read in `request_filter` from its retry buffer, which holds
//! 64 KiB; past that the upstream would get headers and no body. For those requests the
//! gateway sends the request itself through the upstream exchange
//! ([`crate::upstream::exchange`]: failover before sending, 1xx skipped, 101 refused, the
//! attempt judged) and relays the response (streamed, chunk by chunk, so SSE works here
//! too), applying the same header shaping and list filtering as the proxy path
//! (`forward`, `hop_by_hop`). Like Pingora's proxy path it watches the client while the
//! upstream is silent: a client that leaves closes the upstream request (the modern
//! cancellation).

use super::ctx::RequestCtx;
use super::record;
use super::{forward, Gateway};
use crate::error::GatewayError;
use crate::upstream::exchange::{self, Outcome, Record, Sent};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

pub async fn forward(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    // Connect, failing over like the proxy path does while nothing was sent.
    let timeouts = exchange::Timeouts::default(); // the peer's: `forward::select` sets them
    let up = exchange::connect(&gw.connector, &mut Choosing { session, ctx }, timeouts).await?;

    let mut req = session.req_header().clone();
    forward::upstream_request(session, &mut req, ctx).map_err(|e| shaping_failure(ctx, &e))?;
    let body = ctx.body.clone().unwrap_or_default();
    // Watch the client while the upstream is silent, as Pingora's proxy path does.
    let client_left = async {
        let _ = session.read_body_or_idle(true).await;
    };
    let mut up = match up
        .send(&mut Recording(ctx), Box::new(req), body, client_left)
        .await?
    {
        Sent::Answer(answer) => answer,
        Sent::Cancelled => {
            log::debug!(
                "large-body request {}: the client went away before the upstream answered",
                ctx.request_id
            );
            session.set_keepalive(None);
            ctx.error = Some(GatewayError::ClientClosed);
            return Ok(());
        }
    };

    let mut resp = up.header().clone();
    forward::client_response(&mut resp, ctx).map_err(|e| shaping_failure(ctx, &e))?;
    ctx.local_status = Some(resp.status.as_u16());
    ctx.upstream_status = Some(resp.status.as_u16());
    forward::count_sse(&resp, ctx);
    // A list request padded past the retry buffer is filtered all the same.
    forward::filter_list(&mut resp, ctx).map_err(|e| shaping_failure(ctx, &e))?;
    let caller = super::list_filter::Caller {
        policies: &ctx.state.policies,
        identity: ctx.identity.as_ref(),
        route: ctx.route.as_deref().unwrap_or_default(),
    };
    let filter = &mut ctx.list_filter;

    // From here on the client has a response; failures can only end the stream.
    let relay = async {
        session.write_response_header(Box::new(resp), false).await?;
        loop {
            // The client leaving while the upstream is silent ends the relay too.
            let read = tokio::select! {
                biased;
                read = up.read() => read?,
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
        // Back to the pool if the answer was read to its end.
        Ok(()) => up.finish().await,
        Err(e) => {
            // The client went away or the upstream failed mid-stream: close the upstream
            // request (in the modern era that is the cancellation).
            log::debug!(
                "large-body relay for request {} ended early: {e}",
                ctx.request_id
            );
            up.close().await;
            session.set_keepalive(None);
        }
    }
    Ok(())
}

/// The request's servers, chosen as on the proxy path (`forward::select`).
struct Choosing<'a> {
    session: &'a Session,
    ctx: &'a mut RequestCtx,
}

impl exchange::Select for Choosing<'_> {
    fn next(&mut self) -> Result<Box<HttpPeer>, GatewayError> {
        forward::select(self.session, self.ctx)
    }

    fn failover(&mut self) -> Result<bool, GatewayError> {
        forward::failover(self.ctx)
    }
}

impl exchange::Record for Choosing<'_> {
    fn names(&self) -> (&str, &str) {
        names(self.ctx)
    }

    fn record(&mut self, outcome: Outcome) {
        Recording(self.ctx).record(outcome)
    }
}

/// The request's attempts, counted as on the proxy path.
struct Recording<'a>(&'a mut RequestCtx);

impl exchange::Record for Recording<'_> {
    fn names(&self) -> (&str, &str) {
        names(self.0)
    }

    fn record(&mut self, outcome: Outcome) {
        let ctx = &mut *self.0;
        if ctx.outcome_recorded {
            return;
        }
        record::upstream_attempt(
            ctx,
            match outcome {
                Outcome::ConnectFailed => "connect_error",
                Outcome::Failed => "error",
                Outcome::Answered(status) => record::status_class(status),
            },
        );
        super::outcome::record(ctx, outcome.success());
    }
}

fn names(ctx: &RequestCtx) -> (&str, &str) {
    (
        ctx.group.as_ref().map_or("", |g| g.name.as_str()),
        ctx.server().map_or("", |s| s.id.as_str()),
    )
}

/// Shaping the request or the answer failed: the attempt failed (unless its answer was
/// judged already) and the error names its server.
fn shaping_failure(ctx: &mut RequestCtx, e: &Error) -> GatewayError {
    Recording(ctx).record(Outcome::Failed);
    let (group, server) = names(ctx);
    exchange::failure_named(group, server, e, e.to_string())
}
