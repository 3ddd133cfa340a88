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
use crate::cache::entry::{self, Entry};
use crate::cache::key::{canonical_params, Key, Question, Scope};
use crate::cache::notice::Watch;
use crate::cache::store::{Flight, Lead, Level, Store};
use crate::error::GatewayError;
use crate::mcp::envelope::{Era, Kind};
use crate::telemetry::metrics::{self, METRICS};
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::Duration;

pub const X_CACHE: &str = "x-cache";

/// A led miss: what its answer must be to be kept, and the answer's bytes so far.
pub struct Fill {
    store: Arc<Store>,
    lead: Option<Lead>,
    /// The caller's private key (a public answer goes under `public`).
    private: Key,
    public: Option<Key>,
    ttl: Duration,
    modern: bool,
    route: Arc<str>,
    group: Arc<str>,
    method: &'static str,
    tool: Option<Box<str>>,
    id: String,
    /// The store's invalidation count when the request was asked.
    epoch: u64,
    /// `Some(sse)` once a `200` with a JSON or SSE body started; `None`: not kept.
    sse: Option<bool>,
    buf: BytesMut,
}

/// What the lookup did.
pub enum Looked {
    /// Not a cacheable request: forward it as any.
    Off,
    /// Answered from the cache.
    Answered,
}

/// The authorization context a private answer is kept for.
fn scope(ctx: &RequestCtx) -> Scope {
    Scope::Private(ctx.identity.as_ref().map(|who| {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            who.method,
            who.rule,
            who.subject,
            who.client_id.as_deref().unwrap_or("")
        )
    }))
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
    let era = env.era();
    let question = Question {
        route,
        era,
        protocol_version: match era {
            Era::Modern => env.protocol_version.as_deref(),
            Era::Legacy => None,
        },
        method,
        params: &params,
    };
    let private = question.key(&scope(ctx));
    let public = (era == Era::Modern).then(|| question.key(&Scope::Public));
    let keys: Vec<Key> = std::iter::once(private).chain(public).collect();
    let id = id.get().to_string();
    if let Some((entry, level)) = store.get(&keys, &group.name).await {
        let result = match level {
            Level::Memory => "hit",
            Level::Redis => "redis_hit",
        };
        answer(session, ctx, &entry, &id, result).await?;
        return Ok(Looked::Answered);
    }
    let lead = match store.flight(private) {
        Flight::Lead(lead) => Some(lead),
        Flight::Wait(mut rx) => {
            // Another request with this key is asking the upstream: its answer will do.
            let waited = tokio::time::timeout(ctx.timeouts.request, rx.changed()).await;
            let kept = match waited {
                Ok(Ok(())) => rx.borrow().clone(),
                _ => None,
            };
            if let Some(entry) = kept {
                answer(session, ctx, &entry, &id, "coalesced").await?;
                return Ok(Looked::Answered);
            }
            // It kept nothing (an error, a stream, or it went away): ask for ourselves.
            None
        }
    };
    let route = route.clone();
    let group_name: Arc<str> = group.name.as_str().into();
    let tool = match *method {
        "tools/call" => env.name.as_deref().map(Into::into),
        _ => None,
    };
    metrics::counter(&METRICS.cache_requests, &[&route, "miss"]).inc();
    ctx.cache_fill = Some(Box::new(Fill {
        store: store.clone(),
        lead,
        private,
        public,
        ttl,
        modern: era == Era::Modern,
        route,
        group: group_name,
        method,
        tool,
        id,
        epoch: store.epoch(),
        sse: None,
        buf: BytesMut::new(),
    }));
    Ok(Looked::Off)
}

/// Answer a request from `entry`.
async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    entry: &Entry,
    id: &str,
    result: &str,
) -> Result<(), GatewayError> {
    let route = ctx.route.clone().unwrap_or_default();
    metrics::counter(&METRICS.cache_requests, &[&route, result]).inc();
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
        session.write_response_header(Box::new(resp), false).await?;
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
        let json = super::request::is_json(content_type);
        if resp.status == 200 && !encoded && (sse || json) {
            self.sse = Some(sse);
        }
        if x_cache {
            let _ = resp.insert_header(X_CACHE, "miss");
        }
    }

    /// One chunk of the answer as the upstream sent it: what to pass on now. A JSON
    /// answer is held whole (it is small: at most `max_entry_size`, else it is passed on
    /// and not kept) so it is kept before the client has it; an SSE answer flows on.
    pub fn pass(&mut self, chunk: Bytes) -> Option<Bytes> {
        let Some(sse) = self.sse else {
            return Some(chunk);
        };
        if self.buf.len() + chunk.len() > self.store.max_entry {
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
        sse.then_some(chunk)
    }

    /// The answer came whole: keep its result if it is a complete success. Returns the
    /// held JSON answer, to be passed on now.
    pub async fn finish(self) -> Option<Bytes> {
        let sse = self.sse?;
        let body = self.buf.clone().freeze();
        let held = (!sse).then(|| body.clone());
        let kept = match sse {
            true => entry::sse_result(body, &self.id).await,
            false => entry::json_result(&body, &self.id),
        };
        if let Some(kept) = kept {
            self.keep(kept);
        }
        held
    }

    fn keep(self, kept: entry::Kept) {
        // The operator's ttl, shortened by a modern upstream's `ttlMs` (0: not kept).
        let ttl = match (self.modern, kept.ttl_ms) {
            (true, Some(ms)) => self.ttl.min(Duration::from_millis(ms)),
            _ => self.ttl,
        };
        if ttl.is_zero() {
            return;
        }
        let public = self.modern && kept.public;
        let entry = Arc::new(Entry {
            route: self.route.clone(),
            group: self.group.clone(),
            method: self.method,
            tool: self.tool.clone(),
            result: kept.result,
            public,
            expires_ms: crate::cache::now_ms() + ttl.as_millis() as u64,
        });
        let key = match (public, self.public) {
            (true, Some(k)) => k,
            _ => self.private,
        };
        // An invalidation while it was asked may have made it stale: not kept.
        if self.store.put_if(self.epoch, key, entry.clone()) {
            if let Some(lead) = self.lead {
                lead.done(entry);
            }
        }
    }
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
