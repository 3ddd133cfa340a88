//! The cache's second level: entries in Redis, shared by every replica, and the
//! channel (`<prefix>invalidate`) that carries invalidations between them.
//!
//! Entries are `<prefix>e:<hash>` strings holding the entry as JSON, set with their
//! expiry (`PX`), so Redis drops them itself. Invalidation never scans keys: each
//! upstream group has a generation (`<prefix>gen:<group>`, a counter) that is part of
//! its entries' Redis keys; dropping a group's entries is one `INCR`, after which the
//! old keys are never read again and expire. The new generation is published on the
//! channel, and every replica drops its matching memory entries and reads its Redis
//! entries under the new generation.
//!
//! Redis is never waited on for long and is never a dependency: every operation is
//! bounded by `cache.redis.timeout`, connecting happens only in the background upkeep
//! ([`Upkeep`]), and while Redis is unusable the cache runs on memory alone (a miss
//! goes upstream). `mcp_gateway_cache_redis_up` shows which; each switch is logged once.

use super::entry::Entry;
use super::key::Key;
use super::store::{Purge, Store};
use crate::config::cache::CacheRedisConfig;
use crate::telemetry::metrics::{self, METRICS};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the upkeep checks the connection (and retries a lost one).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for a new connection, in the background.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Level {
    client: Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    up: AtomicBool,
    /// Said once: Redis was never reached yet.
    started: AtomicBool,
    timeout: Duration,
    prefix: String,
    /// `host:port/db`, for logs (never the password).
    place: String,
    /// Each group's generation as last read or heard (none: read it before use).
    gens: DashMap<String, u64>,
    /// This process, so it ignores its own invalidations on the channel.
    origin: String,
}

/// An entry as Redis keeps it.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    route: &'a str,
    group: &'a str,
    method: &'a str,
    #[serde(default)]
    tool: Option<&'a str>,
    public: bool,
    expires_ms: u64,
    #[serde(borrow)]
    result: &'a RawValue,
}

/// An invalidation on the channel.
#[derive(Serialize, Deserialize)]
struct Invalidation {
    origin: String,
    purge: Purge,
    /// The group whose generation moved, and to what.
    #[serde(default)]
    generation: Option<(String, u64)>,
}

#[derive(Clone, Copy)]
enum Why {
    Error,
    Timeout,
}

impl Level {
    pub fn new(config: &CacheRedisConfig) -> Result<Level, String> {
        let place = crate::security::rate_limit::shared::describe_url(&config.url)?;
        let client = Client::open(config.url.as_str())
            .map_err(|e| format!("not a valid Redis URL ({e})"))?;
        METRICS.cache_redis_up.with_label_values(&["redis"]).set(0);
        Ok(Level {
            client,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            started: AtomicBool::new(false),
            timeout: config.timeout.0,
            prefix: config.key_prefix.clone(),
            place,
            gens: DashMap::new(),
            origin: format!("{:032x}", rand::random::<u128>()),
        })
    }

    /// Whether Redis is in use now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    fn gen_key(&self, group: &str) -> String {
        format!("{}gen:{group}", self.prefix)
    }

    fn entry_key(&self, key: &Key, generation: u64) -> String {
        let mut h = Sha256::new();
        h.update(key.0);
        h.update(generation.to_be_bytes());
        let k = Key(h.finalize().into());
        format!("{}e:{}", self.prefix, k.hex())
    }

    /// The working connection, if Redis is in use.
    fn conn(&self) -> Option<MultiplexedConnection> {
        match self.conn.load_full() {
            Some(c) if self.up.load(Ordering::Acquire) => Some((*c).clone()),
            _ => None,
        }
    }

    /// One command for `route` (a route's path, a member's `path#prefix`, or empty for
    /// what serves every route), bounded by the timeout; failures are counted and
    /// switch to memory.
    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &str,
        route: &str,
        cmd: redis::Cmd,
    ) -> Option<T> {
        let mut conn = self.conn()?;
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(
                    op,
                    route,
                    Why::Error,
                    &e.to_string(),
                    e.is_unrecoverable_error(),
                );
                None
            }
            Err(_) => {
                let why = format!("no answer within {:?}", self.timeout);
                self.failed(op, route, Why::Timeout, &why, false);
                None
            }
        }
    }

    fn failed(&self, op: &str, route: &str, why: Why, detail: &str, broken: bool) {
        let reason = match why {
            Why::Error => "error",
            Why::Timeout => "timeout",
        };
        metrics::counter(&METRICS.cache_redis_errors, &[route, op, reason]).inc();
        if broken {
            self.conn.store(None);
        }
        self.switch(false, detail);
    }

    fn switch(&self, up: bool, why: &str) {
        let was = self.up.swap(up, Ordering::AcqRel);
        let first = !self.started.swap(true, Ordering::AcqRel);
        if was == up && !first {
            return;
        }
        METRICS
            .cache_redis_up
            .with_label_values(&["redis"])
            .set(up as i64);
        match (up, first) {
            (true, true) => log::info!("cache: Redis at {} is the shared level", self.place),
            (true, false) => {
                log::info!(
                    "cache: Redis at {} is back; entries are shared again",
                    self.place
                )
            }
            (false, _) => log::warn!(
                "cache: Redis at {} is unavailable ({why}); caching in this process's memory \
                 only until it answers again",
                self.place
            ),
        }
        if up {
            // Generations may have moved while it was away: read them again.
            self.gens.clear();
        }
    }

    /// `group`'s generation: as heard, else read from Redis.
    async fn generation(&self, group: &str, route: &str) -> Option<u64> {
        if let Some(g) = self.gens.get(group) {
            return Some(*g);
        }
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.gen_key(group));
        let g: Option<u64> = self.run("get", route, cmd).await?;
        let g = g.unwrap_or(0);
        self.gens.insert(group.to_string(), g);
        Some(g)
    }

    /// The first live entry of `keys` in Redis, with its key.
    pub async fn get(&self, keys: &[Key], group: &str, route: &str) -> Option<(Key, Entry)> {
        self.conn()?;
        let generation = self.generation(group, route).await?;
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.entry_key(k, generation));
        }
        let found: Vec<Option<Vec<u8>>> = self.run("get", route, cmd).await?;
        let now = super::now_ms();
        for (k, v) in keys.iter().zip(found) {
            let Some(v) = v else { continue };
            let Ok(s) = serde_json::from_slice::<Stored>(&v) else {
                continue;
            };
            let Some(method) = crate::mcp::envelope::KNOWN_METHODS
                .iter()
                .find(|m| **m == s.method)
            else {
                continue;
            };
            let entry = Entry {
                route: s.route.into(),
                group: s.group.into(),
                method,
                tool: s.tool.map(Into::into),
                result: Bytes::copy_from_slice(s.result.get().as_bytes()),
                public: s.public,
                expires_ms: s.expires_ms,
            };
            if entry.group.as_ref() == group && entry.remaining(now).is_some() {
                return Some((*k, entry));
            }
        }
        None
    }

    /// Keep `entry` under `key` until it expires; true when Redis took it.
    pub async fn set(&self, key: &Key, entry: &Entry) -> bool {
        let Some(left) = entry.remaining(super::now_ms()) else {
            return false;
        };
        let Some(generation) = self.generation(&entry.group, &entry.route).await else {
            return false;
        };
        let Ok(result) = std::str::from_utf8(&entry.result) else {
            return false;
        };
        let Ok(result) = serde_json::from_str::<&RawValue>(result) else {
            return false;
        };
        let stored = Stored {
            route: &entry.route,
            group: &entry.group,
            method: entry.method,
            tool: entry.tool.as_deref(),
            public: entry.public,
            expires_ms: entry.expires_ms,
            result,
        };
        let Ok(value) = serde_json::to_vec(&stored) else {
            return false;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.entry_key(key, generation))
            .arg(value)
            .arg("PX")
            .arg(left.as_millis().max(1) as u64);
        self.run::<()>("set", &entry.route, cmd).await.is_some()
    }

    /// Drop `p`'s entries in Redis (each of `groups` moves to its next generation: all
    /// of that group's entries) and tell the other replicas.
    pub async fn invalidate(&self, p: &Purge, groups: &[String]) {
        let mut moved = Vec::new();
        for g in groups.iter().cloned() {
            let mut cmd = redis::cmd("INCR");
            cmd.arg(self.gen_key(&g));
            let route = p.route.as_deref().unwrap_or_default();
            if let Some(n) = self.run::<u64>("invalidate", route, cmd).await {
                self.gens.insert(g.clone(), n);
                moved.push((g, n));
            }
        }
        let mut messages: Vec<Invalidation> = moved
            .into_iter()
            .map(|gen| Invalidation {
                origin: self.origin.clone(),
                purge: p.clone(),
                generation: Some(gen),
            })
            .collect();
        if messages.is_empty() {
            messages.push(Invalidation {
                origin: self.origin.clone(),
                purge: p.clone(),
                generation: None,
            });
        }
        for m in messages {
            let Ok(text) = serde_json::to_string(&m) else {
                continue;
            };
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(self.channel()).arg(text);
            self.run::<i64>("publish", p.route.as_deref().unwrap_or_default(), cmd)
                .await;
        }
    }

    /// An invalidation heard on the channel: true when it came from another replica and
    /// was applied to `store`.
    fn heard(&self, store: &Store, payload: &[u8]) -> bool {
        let Ok(m) = serde_json::from_slice::<Invalidation>(payload) else {
            return false;
        };
        if m.origin == self.origin {
            return false;
        }
        if let Some((g, n)) = m.generation {
            let mut cur = self.gens.entry(g).or_insert(n);
            *cur = (*cur).max(n);
        }
        let n = store.purge_local(&m.purge);
        log::debug!("cache: invalidation from another replica dropped {n} entries");
        true
    }

    /// Connect (or check the connection) now; true when Redis is in use afterwards.
    async fn probe(&self) -> bool {
        match self.conn.load_full() {
            Some(conn) => {
                let mut conn = (*conn).clone();
                let ping = redis::cmd("PING");
                match tokio::time::timeout(
                    self.timeout.max(CONNECT_TIMEOUT),
                    ping.query_async::<String>(&mut conn),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        self.switch(true, "");
                        true
                    }
                    Ok(Err(e)) => {
                        self.conn.store(None);
                        self.switch(false, &e.to_string());
                        false
                    }
                    Err(_) => {
                        self.switch(false, "no answer to PING");
                        false
                    }
                }
            }
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(CONNECT_TIMEOUT));
                let connecting = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config);
                match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
                    Ok(Ok(conn)) => {
                        self.conn.store(Some(Arc::new(conn)));
                        self.switch(true, "");
                        true
                    }
                    Ok(Err(e)) => {
                        self.switch(false, &e.to_string());
                        false
                    }
                    Err(_) => {
                        self.switch(false, "no connection");
                        false
                    }
                }
            }
        }
    }
}

/// The background task that connects, watches and reconnects the cache's Redis level,
/// and listens on the invalidation channel.
pub struct Upkeep(pub Arc<Store>);

impl Upkeep {
    /// Listen on the channel until the subscription breaks or the process stops.
    async fn listen(&self, level: &Level, shutdown: &mut ShutdownWatch) {
        use futures::StreamExt;
        let subscribing = async {
            let mut pubsub = self
                .0
                .redis
                .as_ref()?
                .client
                .get_async_pubsub()
                .await
                .ok()?;
            pubsub.subscribe(level.channel()).await.ok()?;
            Some(pubsub)
        };
        let Ok(Some(mut pubsub)) = tokio::time::timeout(CONNECT_TIMEOUT, subscribing).await else {
            return;
        };
        // Invalidations missed before the subscription: generations are read again.
        level.gens.clear();
        let mut messages = pubsub.on_message();
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(m) => {
                        level.heard(&self.0, m.get_payload_bytes());
                    }
                    None => return,
                },
                _ = probe.tick() => {
                    if !level.probe().await {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(level) = self.0.redis.as_ref() else {
            return;
        };
        loop {
            if level.probe().await {
                self.listen(level, &mut shutdown).await;
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
