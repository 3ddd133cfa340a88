//! The process's cache store: the memory level (size-weighted, least recently used
//! first, each entry expiring at its own time), the Redis level behind it when one is
//! configured, and the misses in flight, so concurrent misses for one key make one
//! upstream request ([`Store::flight`]).

use super::entry::Entry;
use super::key::Key;
use crate::config::cache::CacheConfig;
use crate::telemetry::metrics::{self, METRICS};
use moka::notification::RemovalCause;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Which level answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Memory,
    Redis,
}

/// Which entries to drop (every field set must match; none set: all).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub tool: Option<String>,
}

impl Purge {
    fn matches(&self, e: &Entry) -> bool {
        self.route.as_deref().is_none_or(|r| *e.route == *r)
            && self.group.as_deref().is_none_or(|g| *e.group == *g)
            && self.method.as_deref().is_none_or(|m| e.method == m)
            && self
                .tool
                .as_deref()
                .is_none_or(|t| e.tool.as_deref() == Some(t))
    }
}

/// A miss in flight: this request asks the upstream ([`Flight::Lead`]), or another
/// request with the same key already does ([`Flight::Wait`]).
pub enum Flight {
    Lead(Lead),
    Wait(watch::Receiver<Option<Arc<Entry>>>),
}

/// The request that asks the upstream for a key; dropped without [`Lead::done`] (the
/// answer was not kept, or the request ended early), its waiters ask themselves.
pub struct Lead {
    store: Arc<Store>,
    key: Key,
    tx: watch::Sender<Option<Arc<Entry>>>,
}

impl Lead {
    pub fn key(&self) -> Key {
        self.key
    }

    /// The answer was kept: the waiters get it.
    pub fn done(self, entry: Arc<Entry>) {
        let _ = self.tx.send(Some(entry));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.store.flights.lock() {
            if flights
                .get(&self.key)
                .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
            {
                flights.remove(&self.key);
            }
        }
    }
}

pub struct Store {
    memory: moka::sync::Cache<Key, Arc<Entry>>,
    pub max_entry: usize,
    pub redis: Option<super::redis::Level>,
    flights: Mutex<HashMap<Key, watch::Receiver<Option<Arc<Entry>>>>>,
    /// Bumped by every invalidation: an answer asked for before one is not kept.
    epoch: std::sync::atomic::AtomicU64,
}

/// Each entry expires at its own time.
struct Expiry;

impl moka::Expiry<Key, Arc<Entry>> for Expiry {
    fn expire_after_create(&self, _: &Key, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(e.remaining(super::now_ms()).unwrap_or(Duration::ZERO))
    }
}

impl Store {
    pub fn new(config: &CacheConfig) -> Result<Store, Vec<(String, String)>> {
        let memory = moka::sync::Cache::builder()
            .max_capacity(config.memory.max_size.0)
            .weigher(|_: &Key, e: &Arc<Entry>| e.weight())
            .expire_after(Expiry)
            .eviction_listener(|_, e: Arc<Entry>, cause| {
                gauges(&e, -1);
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "expired",
                    RemovalCause::Explicit => "invalidated",
                    RemovalCause::Replaced => return,
                };
                metrics::counter(&METRICS.cache_evictions, &[&e.route, cause]).inc();
            })
            .build();
        let redis = match &config.redis {
            Some(r) => {
                Some(super::redis::Level::new(r).map_err(|e| vec![("cache.redis.url".into(), e)])?)
            }
            None => None,
        };
        Ok(Store {
            memory,
            max_entry: config.memory.max_entry_size.0 as usize,
            redis,
            flights: Mutex::new(HashMap::new()),
            epoch: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The first live entry of `keys`: from memory, else from Redis (then kept in memory).
    pub async fn get(&self, keys: &[Key], group: &str, route: &str) -> Option<(Arc<Entry>, Level)> {
        let now = super::now_ms();
        for k in keys {
            if let Some(e) = self.memory.get(k).filter(|e| e.remaining(now).is_some()) {
                return Some((e, Level::Memory));
            }
        }
        let redis = self.redis.as_ref()?;
        let (key, entry) = redis.get(keys, group, route).await?;
        let entry = Arc::new(entry);
        self.keep(key, entry.clone());
        Some((entry, Level::Redis))
    }

    /// The invalidation count: an answer asked for at one epoch is kept only if no
    /// invalidation happened before it came back ([`Store::put_if`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// [`Store::put`], unless an invalidation came since `epoch` (the answer may be stale).
    pub fn put_if(self: &Arc<Self>, epoch: u64, key: Key, entry: Arc<Entry>) -> bool {
        if self.epoch() != epoch {
            return false;
        }
        self.put(key, entry);
        true
    }

    /// Keep `entry` under `key`, in memory and (in the background) in Redis.
    pub fn put(self: &Arc<Self>, key: Key, entry: Arc<Entry>) {
        metrics::counter(&METRICS.cache_stores, &[&entry.route, "memory"]).inc();
        self.keep(key, entry.clone());
        if self.redis.is_some() {
            let store = self.clone();
            tokio::spawn(async move {
                if let Some(redis) = &store.redis {
                    if redis.set(&key, &entry).await {
                        metrics::counter(&METRICS.cache_stores, &[&entry.route, "redis"]).inc();
                    }
                }
            });
        }
    }

    /// Lead the miss for `key`, or wait for the request leading it.
    pub fn flight(self: &Arc<Self>, key: Key) -> Flight {
        let Ok(mut flights) = self.flights.lock() else {
            // A poisoned map: no coalescing, every miss asks.
            let (tx, _) = watch::channel(None);
            return Flight::Lead(Lead {
                store: self.clone(),
                key,
                tx,
            });
        };
        if let Some(rx) = flights.get(&key) {
            return Flight::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key, rx);
        Flight::Lead(Lead {
            store: self.clone(),
            key,
            tx,
        })
    }

    /// Drop the entries `p` matches here; returns how many. Redis's (and the other
    /// replicas') are dropped by [`Store::purge`].
    pub fn purge_local(&self, p: &Purge) -> u64 {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut n = 0;
        for (k, e) in self.memory.iter() {
            if p.matches(&e) {
                self.memory.invalidate(&*k);
                n += 1;
            }
        }
        n
    }

    /// Drop the entries `p` matches, in every level and every replica; `groups` are the
    /// upstream groups whose entries Redis drops (it keeps them per group).
    pub fn purge(self: &Arc<Self>, p: &Purge, groups: Vec<String>) -> u64 {
        let n = self.purge_local(p);
        if self.redis.is_some() {
            let store = self.clone();
            let p = p.clone();
            tokio::spawn(async move {
                if let Some(redis) = &store.redis {
                    redis.invalidate(&p, &groups).await;
                }
            });
        }
        n
    }

    /// An upstream said its lists or resources changed: its entries go, every page.
    pub fn invalidate_group(self: &Arc<Self>, group: &str, why: &str) {
        let p = Purge {
            group: Some(group.to_string()),
            ..Default::default()
        };
        let n = self.purge(&p, vec![group.to_string()]);
        log::debug!("cache: {why} from group {group:?}: dropped {n} entries");
    }

    /// Into the memory level (the route's gauges count it until it leaves).
    fn keep(&self, key: Key, entry: Arc<Entry>) {
        gauges(&entry, 1);
        self.memory.insert(key, entry);
    }

    /// Entries and bytes held in memory (exact after pending work is done).
    pub fn sizes(&self) -> (u64, u64) {
        self.memory.run_pending_tasks();
        (self.memory.entry_count(), self.memory.weighted_size())
    }
}

/// The route's memory gauges, for an entry coming (`1`) or going (`-1`).
fn gauges(e: &Entry, sign: i64) {
    let route: &str = &e.route;
    METRICS
        .cache_memory_entries
        .with_label_values(&[route])
        .add(sign);
    METRICS
        .cache_memory_bytes
        .with_label_values(&[route])
        .add(sign * i64::from(e.weight()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn store() -> Arc<Store> {
        Arc::new(Store::new(&CacheConfig::default()).unwrap())
    }

    fn entry(route: &str, method: &'static str, tool: Option<&str>, ttl_ms: u64) -> Arc<Entry> {
        Arc::new(Entry {
            route: route.into(),
            group: "g".into(),
            method,
            tool: tool.map(Into::into),
            result: Bytes::from_static(b"{}"),
            public: false,
            expires_ms: super::super::now_ms() + ttl_ms,
        })
    }

    #[tokio::test]
    async fn entries_are_found_until_they_expire_or_are_purged() {
        let s = store();
        let (a, b, c) = (Key([1; 32]), Key([2; 32]), Key([3; 32]));
        s.put(a, entry("/r", "tools/list", None, 60_000));
        s.put(b, entry("/r", "tools/call", Some("t"), 60_000));
        s.put(c, entry("/r", "tools/list", None, 1));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            s.get(&[a], "g", "/r").await.map(|(_, l)| l),
            Some(Level::Memory)
        );
        assert!(s.get(&[c], "g", "/r").await.is_none(), "expired");
        assert!(
            s.get(&[c, b], "g", "/r").await.is_some(),
            "the first live key answers"
        );
        let p = Purge {
            tool: Some("t".into()),
            ..Default::default()
        };
        assert_eq!(s.purge_local(&p), 1);
        assert!(s.get(&[b], "g", "/r").await.is_none());
        assert!(s.get(&[a], "g", "/r").await.is_some());
        s.invalidate_group("g", "test");
        assert!(s.get(&[a], "g", "/r").await.is_none());
    }

    #[tokio::test]
    async fn one_miss_leads_the_others_wait() {
        let s = store();
        let k = Key([9; 32]);
        let Flight::Lead(lead) = s.flight(k) else {
            panic!("first leads")
        };
        let Flight::Wait(mut rx) = s.flight(k) else {
            panic!("second waits")
        };
        lead.done(entry("/r", "tools/list", None, 60_000));
        rx.changed().await.unwrap();
        assert!(rx.borrow().is_some());
        // The flight is over: the next miss leads again.
        assert!(matches!(s.flight(k), Flight::Lead(_)));
        // A lead dropped without an answer releases its waiters with nothing.
        let k2 = Key([8; 32]);
        let lead = s.flight(k2);
        let Flight::Wait(mut rx) = s.flight(k2) else {
            panic!("waits")
        };
        drop(lead);
        assert!(rx.changed().await.is_err());
        assert!(matches!(s.flight(k2), Flight::Lead(_)));
    }
}
