//! A request's upstream exchange, done by the gateway itself: every POST, GET stream and
//! DELETE (the client adapter's requests are the only ones Pingora's proxy path carries).
//!
//! The gateway reads every POST body before it chooses a server (to inspect, authorize
//! and rate-limit it), so it sends the request itself through the upstream exchange
//! ([`crate::upstream::exchange`]: the head and body in one write, failover before
//! sending, 1xx skipped, 101 refused, the attempt judged) and relays the answer from
//! `request_filter`, streamed chunk by chunk (an SSE answer goes out event by event, a
//! `Content-Length` one stays length-delimited), but for small JSON answers (64 KiB),
//! held until complete and sent with their head in one write, so an upstream failing in
//! the middle of one costs the client a JSON-RPC error rather than a cut body. An SSE
//! answer whose upstream fails ends with the request's JSON-RPC error as its last event.
//! A GET stream (the server's standing SSE stream) and a DELETE (the end of a session)
//! go the same way with no body: the stream is read with `timeouts.stream_idle` between
//! events ([`forward::select`]) and relayed event by event for as long as both sides
//! keep it, without Pingora's per-request proxy state. Headers are shaped
//! (`forward`, `hop_by_hop`) and lists filtered (`list_filter`) here for every request.
//! The client is watched while the upstream is silent: a client that leaves closes the
//! upstream request (the modern cancellation; a GET stream's end). Bodies of any size
//! take this path: nothing depends on Pingora's 64 KiB retry buffer.
//!
//! Upstream failures here are answered by the caller (`request::filter`) as JSON-RPC
//! errors with a `Content-Length`, so the client's connection stays open: its request was
//! read to its end.

use super::ctx::RequestCtx;
use super::record;
use super::{forward, Gateway};
use crate::error::GatewayError;
use crate::upstream::exchange::{self, Outcome, Record, Sent};
use pingora::http::ResponseHeader;
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

    // Written from the client's head, with the body (`forward`).
    let request = forward::upstream_request(session, ctx).map_err(|e| shaping_failure(ctx, &e))?;
    // Watch the client while the upstream is silent, as Pingora's proxy path does.
    let client_left = async {
        let _ = session.read_body_or_idle(true).await;
    };
    let (mut resp, mut up) = match up.send(&mut Recording(ctx), request, client_left).await? {
        Sent::Answer(head, answer) => (head, answer),
        Sent::Cancelled => {
            log::debug!(
                "request {}: the client went away before the upstream answered",
                ctx.request_id
            );
            session.set_keepalive(None);
            ctx.error = Some(GatewayError::ClientClosed);
            return Ok(());
        }
    };

    // The answer's head as read: no case-preserving map (`forward` would drop it).
    forward::client_response(&mut resp, ctx).map_err(|e| shaping_failure(ctx, &e))?;
    ctx.local_status = Some(resp.status.as_u16());
    ctx.upstream_status = Some(resp.status.as_u16());
    forward::count_sse(&resp, ctx);
    forward::filter_list(&mut resp, ctx, true).map_err(|e| shaping_failure(ctx, &e))?;
    let x_cache = ctx.state.cache.x_cache;
    if let Some(fill) = ctx.cache_fill.as_mut() {
        fill.start(&mut resp, x_cache);
    }
    super::cache::watch(ctx, &resp);
    if resp.status == 200 && ctx.mcp.method() == Some("tools/list") {
        // The group learns its tool names from the answer.
        ctx.tools_list = Some(bytes::BytesMut::new());
    }
    let caller = super::list_filter::Caller {
        policies: &ctx.state.policies,
        identity: ctx.identity.as_ref(),
        route: ctx.route.as_deref().unwrap_or_default(),
        transforms: ctx.transforms.as_deref(),
    };
    let filter = &mut ctx.list_filter;
    let tools_list = &mut ctx.tools_list;
    let group = ctx.group.as_deref();
    let fill = &mut ctx.cache_fill;
    let watch = &mut ctx.cache_watch;
    let cache = ctx.state.cache.store();
    let live = &ctx.live;

    // A JSON answer the filter collects whole goes out once filtered, head and body
    // together with its length (one send, keep-alive); so does a small JSON answer
    // (at most `HOLD` bytes, most of them), so an upstream that fails before it is
    // complete costs the client a JSON-RPC error, not a cut body. Any other answer's
    // head goes now.
    let whole = filter.as_ref().is_some_and(|f| !f.is_sse()) || small_json(&resp);
    // `count_sse` (above) holds the stream gauge of an SSE answer.
    let sse = ctx.sse.is_some();
    // Whether the relay ended because the upstream failed (not the client).
    let mut upstream_failed = false;

    // From here on the client has a response; failures can only end the stream.
    let relay = async {
        let mut resp = Some(resp);
        // What a held answer will send, once whole.
        let mut out = Held::default();
        if !whole {
            if let Some(r) = resp.take() {
                super::respond::head(session, live, r, false).await?;
            }
        }
        loop {
            // The client leaving while the upstream is silent ends the relay too.
            let read = tokio::select! {
                biased;
                read = up.read() => match read {
                    Ok(read) => read,
                    Err(e) => {
                        upstream_failed = true;
                        return Err(e);
                    }
                },
                idle = session.read_body_or_idle(true) => {
                    return Err(idle.err().unwrap_or_else(|| {
                        Error::explain(ErrorType::ConnectionClosed, "the client sent data after its request")
                    }));
                }
            };
            match read {
                Some(chunk) => {
                    record::collect_tools(tools_list, group, Some(&chunk), false);
                    if let (Some(w), Some(store), Some(g)) = (watch.as_mut(), cache, group) {
                        if w.seen(&chunk) {
                            store.invalidate_group(
                                &g.name,
                                "a list_changed or resources/updated notification",
                            );
                        }
                    }
                    // A cache miss's JSON answer is held until it is kept (below).
                    let mut chunk = match fill.as_mut() {
                        Some(fill) => fill.pass(chunk).await,
                        None => Some(chunk),
                    };
                    if chunk.is_none() {
                        continue;
                    }
                    if let Some(f) = filter.as_mut() {
                        f.chunk(&caller, &mut chunk, false);
                    }
                    emit(session, whole, &mut out, chunk).await?;
                }
                None => break,
            }
        }
        record::collect_tools(tools_list, group, None, true);
        // Kept before the client has it whole, so its next request finds it.
        if let Some(held) = match fill.take() {
            Some(fill) => fill.finish().await,
            None => None,
        } {
            let mut chunk = Some(held);
            if let Some(f) = filter.as_mut() {
                f.chunk(&caller, &mut chunk, false);
            }
            emit(session, whole, &mut out, chunk).await?;
        }
        let mut last = None;
        if let Some(f) = filter.as_mut() {
            f.chunk(&caller, &mut last, true);
        }
        if let Some(mut r) = resp.take() {
            // The held head: the filtered body's length, then head and body.
            if let Some(l) = last.take() {
                out.push(l);
            }
            r.remove_header(&http::header::TRANSFER_ENCODING);
            r.insert_header(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(out.len()),
            )?;
            super::respond::head(session, live, r, false).await?;
            last = Some(out.into_bytes());
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
            log::debug!("relay for request {} ended early: {e}", ctx.request_id);
            up.close().await;
            if whole && super::respond::final_response_written(session).is_none() {
                // A held answer: nothing went out yet, so the client gets an error.
                return Err(shaping_failure(ctx, &e));
            }
            if sse && upstream_failed {
                // The stream is the client's: it ends with the request's JSON-RPC error
                // as its last event, then cleanly.
                let failure = shaping_failure(ctx, &e);
                let id = ctx.mcp.envelope.as_ref().and_then(|env| env.id.as_deref());
                let mut event = b"event: message\ndata: ".to_vec();
                event.extend_from_slice(&failure.to_body(id));
                event.extend_from_slice(b"\n\n");
                let ended = session
                    .write_response_body(Some(event.into()), true)
                    .await
                    .is_ok();
                ctx.error = Some(failure);
                if ended {
                    session.set_keepalive(None);
                    return Ok(());
                }
            }
            session.set_keepalive(None);
        }
    }
    Ok(())
}

/// Answers held whole before the client gets them (see [`small_json`]).
const HOLD: u64 = 64 << 10;

/// A JSON answer with a `Content-Length` of at most [`HOLD`].
fn small_json(resp: &ResponseHeader) -> bool {
    let h = &resp.headers;
    h.get(http::header::CONTENT_TYPE)
        .is_some_and(|v| super::framing::is_json(v.as_bytes()))
        && super::framing::declared_length(h).is_some_and(|n| n <= HOLD)
        && !h.contains_key(http::header::CONTENT_ENCODING)
}

/// Pass on what the filter let through: to the client now, or (`whole`: the head is
/// held until the body is complete) into `out`.
async fn emit(
    session: &mut Session,
    whole: bool,
    out: &mut Held,
    chunk: Option<bytes::Bytes>,
) -> pingora::Result<()> {
    match (whole, chunk) {
        (true, Some(c)) => out.push(c),
        (false, Some(c)) => session.write_response_body(Some(c), false).await?,
        (_, None) => {}
    }
    Ok(())
}

/// A held answer's body: its one piece as read (most answers: no copy), or its pieces
/// joined.
#[derive(Default)]
struct Held {
    one: Option<bytes::Bytes>,
    joined: bytes::BytesMut,
}

impl Held {
    fn push(&mut self, piece: bytes::Bytes) {
        if self.one.is_none() && self.joined.is_empty() {
            self.one = Some(piece);
            return;
        }
        if let Some(first) = self.one.take() {
            self.joined.reserve(first.len() + piece.len());
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(&piece);
    }

    fn len(&self) -> usize {
        self.one.as_ref().map_or(0, |b| b.len()) + self.joined.len()
    }

    fn into_bytes(self) -> bytes::Bytes {
        match self.one {
            Some(one) => one,
            None => self.joined.freeze(),
        }
    }
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

    fn attempt(&mut self) -> Option<&mut crate::upstream::InFlight> {
        self.ctx.upstream.as_mut()
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

#[cfg(test)]
mod tests {
    use super::Held;
    use bytes::Bytes;

    #[test]
    fn a_held_body_is_its_one_piece_or_its_pieces_joined() {
        let one = Bytes::from_static(b"{\"a\":1}");
        let mut held = Held::default();
        held.push(one.clone());
        assert_eq!(held.len(), 7);
        let out = held.into_bytes();
        assert_eq!(out, one);
        assert_eq!(out.as_ptr(), one.as_ptr(), "one piece is not copied");
        let mut held = Held::default();
        for p in ["{\"a\"", "", ":1", "}"] {
            held.push(Bytes::from_static(p.as_bytes()));
        }
        assert_eq!(held.len(), 7);
        assert_eq!(held.into_bytes(), one);
    }
}
