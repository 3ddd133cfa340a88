//! What a request's upstream attempt tells the server's circuit breaker.
//!
//! One outcome per attempt: a connect failure (recorded by the exchange, before a
//! failover); else the answer's status when its header arrives (5xx: failure, anything
//! else: success); else, at the end, an upstream error before any answer (timeout, reset)
//! is a failure. A client that went away says nothing about the server: the attempt
//! ([`crate::upstream::InFlight`]) is dropped unjudged, which gives a half-open probe
//! permit back.

use super::ctx::RequestCtx;
use pingora::{Error, ErrorSource};

/// Record the current attempt's outcome once.
pub fn record(ctx: &mut RequestCtx, success: bool) {
    if ctx.outcome_recorded {
        return;
    }
    ctx.outcome_recorded = true;
    let Some(attempt) = ctx.upstream.as_mut() else {
        return;
    };
    let group = ctx.group.as_ref().map_or("", |g| g.name.as_str());
    crate::upstream::exchange::judge(attempt, group, success);
}

/// At the end of a request: an attempt not judged yet (no answer arrived) failed if the
/// upstream errored (timeout, reset); if the client left first it says nothing.
pub fn record_end(ctx: &mut RequestCtx, e: Option<&Error>) {
    if ctx.outcome_recorded || ctx.server().is_none() {
        return;
    }
    if e.is_some_and(|e| matches!(e.esource(), ErrorSource::Upstream)) {
        record(ctx, false);
    }
}
