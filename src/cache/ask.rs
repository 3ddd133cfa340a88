//! One cacheable request, as the request path (a route) or a virtual server (one of its
//! members) asks it: looked up under its keys (the caller's private one and, in the
//! modern era, the public one), from memory then Redis; on a miss, the lead of its key
//! (concurrent misses for it wait for the one upstream request and answer from what it
//! kept) and what keeping its answer takes ([`Miss::keep`]).

use super::entry::{Entry, Kept};
use super::key::{Key, Question, Scope};
use super::store::{Flight, Lead, Level, Store};
use crate::mcp::envelope::Era;
use crate::security::auth::Identity;
use crate::telemetry::metrics::{self, METRICS};
use std::sync::Arc;
use std::time::Duration;

/// A cacheable request.
pub struct Asked<'a> {
    /// The rules' name: a route's path, or a virtual server member's `path#prefix`.
    pub route: &'a Arc<str>,
    /// The upstream group that answers it (its notifications invalidate).
    pub group: &'a str,
    pub era: Era,
    /// The modern era's protocol version.
    pub protocol_version: Option<&'a str>,
    pub method: &'static str,
    /// A `tools/call`'s tool.
    pub tool: Option<&'a str>,
    /// The canonical `params` (`key::canonical_params`).
    pub params: &'a str,
    /// Who asks: a private answer is kept for this authorization context only.
    pub identity: Option<&'a Identity>,
    /// The operator's ttl for it.
    pub ttl: Duration,
    /// Longest wait for a coalesced miss's answer.
    pub wait: Duration,
}

/// What the lookup found.
pub enum Looked {
    /// An entry, and how (`hit`, `redis_hit`, `coalesced`: the metric's label).
    Hit(Arc<Entry>, &'static str),
    /// None: ask the upstream, then [`Miss::keep`] what it answered.
    Miss(Miss),
}

/// A miss to fill.
pub struct Miss {
    store: Arc<Store>,
    /// This request leads its key's flight (`None`: it waited for one that kept nothing).
    lead: Option<Lead>,
    private: Key,
    public: Option<Key>,
    ttl: Duration,
    modern: bool,
    route: Arc<str>,
    group: Arc<str>,
    method: &'static str,
    tool: Option<Box<str>>,
    /// The store's invalidation count when the request was asked.
    epoch: u64,
}

/// The authorization context a private answer is kept for.
pub fn scope(identity: Option<&Identity>) -> Scope {
    Scope::Private(identity.map(|who| {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}",
            who.method,
            who.rule,
            who.subject,
            who.client_id.as_deref().unwrap_or("")
        )
    }))
}

/// Look `asked` up in `store`.
pub async fn look(store: &Arc<Store>, asked: Asked<'_>) -> Looked {
    let question = Question {
        route: asked.route,
        era: asked.era,
        protocol_version: match asked.era {
            Era::Modern => asked.protocol_version,
            Era::Legacy => None,
        },
        method: asked.method,
        params: asked.params,
    };
    let private = question.key(&scope(asked.identity));
    let public = (asked.era == Era::Modern).then(|| question.key(&Scope::Public));
    let keys: Vec<Key> = std::iter::once(private).chain(public).collect();
    let hit = |entry, how| {
        metrics::counter(&METRICS.cache_requests, &[asked.route, how]).inc();
        Looked::Hit(entry, how)
    };
    if let Some((entry, level)) = store.get(&keys, asked.group, asked.route).await {
        let how = match level {
            Level::Memory => "hit",
            Level::Redis => "redis_hit",
        };
        return hit(entry, how);
    }
    let lead = match store.flight(private) {
        Flight::Lead(lead) => Some(lead),
        Flight::Wait(mut rx) => {
            // Another request with this key is asking the upstream: its answer will do.
            let waited = tokio::time::timeout(asked.wait, rx.changed()).await;
            let kept = match waited {
                Ok(Ok(())) => rx.borrow().clone(),
                _ => None,
            };
            if let Some(entry) = kept {
                return hit(entry, "coalesced");
            }
            // It kept nothing (an error, a stream, or it went away): ask for ourselves.
            None
        }
    };
    metrics::counter(&METRICS.cache_requests, &[asked.route, "miss"]).inc();
    Looked::Miss(Miss {
        store: store.clone(),
        lead,
        private,
        public,
        ttl: asked.ttl,
        modern: asked.era == Era::Modern,
        route: asked.route.clone(),
        group: asked.group.into(),
        method: asked.method,
        tool: asked.tool.map(Into::into),
        epoch: store.epoch(),
    })
}

impl Miss {
    /// The largest answer the store keeps.
    pub fn max_entry(&self) -> usize {
        self.store.max_entry
    }

    /// Keep a complete success's result: for the operator's ttl, shortened by a modern
    /// upstream's `ttlMs` (0: not kept); shared only when a modern upstream said
    /// `public`. Requests waiting for this one get it.
    pub fn keep(self, kept: Kept) {
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
            expires_ms: super::now_ms() + ttl.as_millis() as u64,
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
