//! The cache on the request path (the store and its rules are [`crate::cache`]).
//!
//! Before a POST is forwarded ([`lookup`]): a single request whose method (and tool)
//! the route caches is looked up under its key, the caller's private one and, in the
//! modern era, the public one. A hit is answered here, with the client's own id, in its
//! era, through the caller's list filter (policies), with a `Content-Length`. A miss
//! leads the upstream request for its key, or waits for the request already leading it
//! and answers from what that one kept (coalescing); if that one kept nothing, it asks
//! the upstream itself.
//!
//! While a led miss's answer is relayed ([`Fill`]), its bytes as the upstream sent them
//! are collected (up to `cache.memory.max_entry_size`); once the answer went out whole
//! its result is kept, if it is a complete success (`crate::cache::entry`).
//!
//! Streams relayed on a cached route are watched for the upstream's `list_changed` and
//! `resources/updated` notifications ([`watch`]), which drop the group's entries.

use super::ctx::RequestCtx;
use super::list_filter::{Caller, ListFilter, Scope as FilterScope};
use crate::cache::ask::{self, look, Asked, Miss};
use crate::cache::entry::{self, Entry};
use crate::cache::key::canonical_params;
use crate::cache::notice::Watch;
use crate::error::GatewayError;
use crate::mcp::envelope::{Era, Kind};
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

pub const X_CACHE: &str = "x-cache";

/// A led miss: what its answer must be to be kept, and the answer's bytes so far.
pub struct Fill {
    /// Taken when the result is kept.
    miss: Option<Miss>,
    id: String,
    /// `Some(sse)` once a `200` with a JSON or SSE body started; `None`: not kept (or
    /// kept already).
    sse: Option<bool>,
    /// The answer's bytes not read yet: a JSON answer's so far, an SSE answer's since
    /// its last whole event.
    buf: BytesMut,
    /// The answer's bytes so far.
    seen: usize,
    /// An SSE answer's events read so far.
    events: entry::SseAnswer,
}

/// What the lookup did.
pub enum Looked {
    /// Not a cacheable request: forward it as any.
    Off,
    /// Answered from the cache.
    Answered,
}

/// Look a POST up before it is forwarded: answer a hit, or prepare the miss's [`Fill`].
pub async fn lookup(session: &mut Session, ctx: &mut RequestCtx) -> Result<Looked, GatewayError> {
    // Routes without a cache pay this check and nothing else.
    if !ctx.state.cache.is_enabled() {
        return Ok(Looked::Off);
    }
    let state = ctx.state.clone();
    let cache = &state.cache;
    let (Some(route), Some(group), Some(store)) = (&ctx.route, &ctx.group, cache.store()) else {
        return Ok(Looked::Off);
    };
    if !cache.covers(route) || ctx.mcp.batch_len.is_some() {
        return Ok(Looked::Off);
    }
    let Some(env) = ctx
        .mcp
        .envelope
        .as_ref()
        .filter(|e| e.kind == Kind::Request)
    else {
        return Ok(Looked::Off);
    };
    let (Some(method), Some(id)) = (env.method.as_deref(), env.id.as_deref()) else {
        return Ok(Looked::Off);
    };
    let Some(ttl) = cache.ttl(route, method, env.name.as_deref()) else {
        return Ok(Looked::Off);
    };
    // Cacheable methods are all known ones: the label and the entry keep the static name.
    let Some(method) = crate::mcp::envelope::KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
    else {
        return Ok(Looked::Off);
    };
    let Ok(params) = canonical_params(ctx.body.as_deref().unwrap_or_default()) else {
        // A retry with `requestState`, or params the gateway would not key: asked anew.
        return Ok(Looked::Off);
    };
    let id = id.get().to_string();
    let asked = Asked {
        route,
        group: &group.name,
        era: env.era(),
        protocol_version: env.protocol_version.as_deref(),
        method,
        tool: match *method {
            "tools/call" => env.name.as_deref(),
            _ => None,
        },
        params: &params,
        identity: ctx.identity.as_ref(),
        ttl,
        wait: ctx.timeouts.request,
    };
    match look(store, asked).await {
        ask::Looked::Hit(entry, _) => {
            answer(session, ctx, &entry, &id).await?;
            Ok(Looked::Answered)
        }
        ask::Looked::Miss(miss) => {
            ctx.cache_fill = Some(Box::new(Fill {
                miss: Some(miss),
                id,
                sse: None,
                buf: BytesMut::new(),
                seen: 0,
                events: entry::SseAnswer::default(),
            }));
            Ok(Looked::Off)
        }
    }
}

/// Answer a request from `entry`.
async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    entry: &Entry,
    id: &str,
) -> Result<(), GatewayError> {
    let route = ctx.route.clone().unwrap_or_default();
    let modern = ctx.era() == Some(Era::Modern);
    let mut body = Some(Bytes::from(entry.answer(
        id,
        modern,
        crate::cache::now_ms(),
    )));
    // The caller sees only what its policies allow, hit or miss.
    if ctx.list_scope == FilterScope::All {
        let caller = Caller {
            policies: &ctx.state.policies,
            identity: ctx.identity.as_ref(),
            route: &route,
            transforms: ctx.transforms.as_deref(),
        };
        ListFilter::new(Some(id), false).chunk(&caller, &mut body, true);
    }
    let body = body.unwrap_or_default();
    let shaped = (|| {
        let mut resp = ResponseHeader::build(200, Some(8))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        super::forward::client_response(&mut resp, ctx)?;
        if ctx.state.cache.x_cache {
            resp.insert_header(X_CACHE, "hit")?;
        }
        Ok::<_, Box<pingora::Error>>(resp)
    })();
    let resp = shaped.map_err(|e| GatewayError::Internal(e.to_string()))?;
    ctx.local_status = Some(200);
    let written = async {
        super::respond::head(session, &ctx.live, resp, false).await?;
        session.write_response_body(Some(body), true).await
    };
    if written.await.is_err() {
        session.set_keepalive(None);
        ctx.error = Some(GatewayError::ClientClosed);
    }
    Ok(())
}

impl Fill {
    /// The answer's head: only a `200` with a JSON or SSE body may be kept; a miss's
    /// answer says `X-Cache: miss`.
    pub fn start(&mut self, resp: &mut ResponseHeader, x_cache: bool) {
        let header = |name| {
            resp.headers
                .get(name)
                .map(|v: &http::HeaderValue| v.as_bytes())
        };
        let encoded = header(http::header::CONTENT_ENCODING)
            .is_some_and(|e| !e.eq_ignore_ascii_case(b"identity"));
        let content_type = header(http::header::CONTENT_TYPE).unwrap_or_default();
        let sse = super::list_filter::is_sse(content_type);
        let json = super::framing::is_json(content_type);
        if resp.status == 200 && !encoded && (sse || json) {
            self.sse = Some(sse);
        }
        if x_cache {
            let _ = resp.insert_header(X_CACHE, "miss");
        }
    }

    /// One chunk of the answer as the upstream sent it: what to pass on now. A JSON
    /// answer is held whole (it is small: at most `max_entry_size`, else it is passed on
    /// and not kept) so it is kept before the client has it; an SSE answer flows on, and
    /// is kept as soon as its result event is whole, before the client has that event
    /// (the client may send its next request on it, before the stream ends).
    pub async fn pass(&mut self, chunk: Bytes) -> Option<Bytes> {
        let (Some(sse), Some(miss)) = (self.sse, self.miss.as_ref()) else {
            return Some(chunk);
        };
        self.seen += chunk.len();
        if self.seen > miss.max_entry() {
            // Too large to keep: passed on (with what was held), not kept.
            self.sse = None;
            if sse {
                self.buf = BytesMut::new();
                return Some(chunk);
            }
            self.buf.extend_from_slice(&chunk);
            return Some(std::mem::take(&mut self.buf).freeze());
        }
        self.buf.extend_from_slice(&chunk);
        if !sse {
            return None;
        }
        if ends_an_event(&self.buf) {
            self.events.read(self.buf.split().freeze(), &self.id).await;
            if self.events.settled() {
                // Later events change nothing: the result went out, or is not kept.
                self.sse = None;
                let kept = std::mem::take(&mut self.events).result();
                self.keep(kept);
            }
        }
        Some(chunk)
    }

    /// The answer came whole: keep its result if it is a complete success. Returns the
    /// held JSON answer, to be passed on now.
    pub async fn finish(mut self) -> Option<Bytes> {
        let sse = self.sse?;
        let rest = self.buf.split().freeze();
        if sse {
            self.events.read(rest, &self.id).await;
            let kept = std::mem::take(&mut self.events).result();
            self.keep(kept);
            return None;
        }
        self.keep(entry::json_result(&rest, &self.id));
        Some(rest)
    }

    fn keep(&mut self, kept: Option<entry::Kept>) {
        if let (Some(kept), Some(miss)) = (kept, self.miss.take()) {
            miss.keep(kept);
        }
    }
}

/// Whether `buf` ends where an SSE event ends: a line end (CRLF, LF or CR) right after
/// another. Only when to hand the bytes to the SSE parser: events read at a chunk's end
/// that is an event's end; the rest are read at a later one, or when the answer ends.
fn ends_an_event(buf: &[u8]) -> bool {
    fn line_end(b: &[u8]) -> Option<&[u8]> {
        b.strip_suffix(b"\r\n")
            .or_else(|| b.strip_suffix(b"\n"))
            .or_else(|| b.strip_suffix(b"\r"))
    }
    line_end(buf).and_then(line_end).is_some()
}

/// Start watching a relayed answer for invalidating notifications, on a cached route.
pub fn watch(ctx: &mut RequestCtx, resp: &ResponseHeader) {
    if !ctx.state.cache.is_enabled() {
        return;
    }
    let covered = ctx
        .route
        .as_deref()
        .is_some_and(|r| ctx.state.cache.covers(r));
    let sse = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| super::list_filter::is_sse(v.as_bytes()));
    if covered && sse {
        ctx.cache_watch = Some(Watch::default());
    }
}

/// One chunk of a watched answer: an invalidating notification drops the group's entries.
pub fn watch_chunk(ctx: &mut RequestCtx, chunk: &[u8]) {
    let Some(w) = ctx.cache_watch.as_mut() else {
        return;
    };
    if w.seen(chunk) {
        if let (Some(store), Some(group)) = (ctx.state.cache.store(), &ctx.group) {
            store.invalidate_group(
                &group.name,
                "a list_changed or resources/updated notification",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ends_an_event;

    #[test]
    fn event_ends_are_a_line_end_after_a_line_end() {
        for end in [
            "a\n\n",
            "a\r\n\r\n",
            "a\r\r",
            "a\n\r\n",
            "a\r\n\n",
            "a\r\n\r",
        ] {
            assert!(ends_an_event(end.as_bytes()), "{end:?}");
        }
        for not in ["", "\n", "a", "a\n", "a\r\n", "a\r", "a\n\nb"] {
            assert!(!ends_an_event(not.as_bytes()), "{not:?}");
        }
    }
}
