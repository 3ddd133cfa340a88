//! Rate-limit counters shared by every gateway replica through Redis.
//!
//! One Lua script call per request counts it under all the rules that cover it, on
//! Redis's clock, so replicas with skewed clocks agree on the windows. Each rule keeps
//! one hash per window (`<prefix><rule>:<key>:m` for the minute, `…:s` for the second)
//! holding the current window's number and count and the previous window's count; the
//! script answers those counts and how far into the window it is — the same
//! [`Counts`] the local counters give — and the same judgement (estimate and
//! `Retry-After`) applies. Keys expire two windows after their last request.
//!
//! Redis is never waited on for long: each call is bounded by `redis_timeout`, and
//! connecting happens only in the background upkeep ([`Shared::upkeep`]), never on the
//! request path. While there is no working connection, requests are decided on the
//! process's local counters ([`Shared::count`] answers `None`), counted in
//! `mcp_gateway_rate_limit_fallbacks_total`; `mcp_gateway_rate_limit_backend_up` shows
//! whether Redis is in use, and the switches are logged once each way.

use super::{Counts, Key, Rule};
use crate::security::window::Sample;
use crate::telemetry::metrics::{self, METRICS};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntGauge;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Script};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Counts the requests of every rule that covers a request, in order, and stops after
/// the first rule the request is over (the rules after it do not count it), like the
/// local check. `KEYS`: per rule its minute hash, then its second hash if it has a burst
/// cap. `ARGV`: per rule `requests_per_minute`, `burst_size`. Answers, per rule counted,
/// for the minute then the second window: the previous window's count, the current
/// one's, and milliseconds into the current window (three `-1`s: no burst cap).
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function hit(key, window)
  local cur = math.floor(now / window)
  local v = redis.call('HMGET', key, 'w', 'c', 'p')
  local w, c, p = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
  if w ~= cur then
    if w == cur - 1 then p = c else p = 0 end
    c = 0
  end
  c = c + 1
  redis.call('HSET', key, 'w', cur, 'c', c, 'p', p)
  redis.call('PEXPIRE', key, window * 2)
  local into = now - cur * window
  return p, c, into, p * (1 - into / window) + c
end
local out = {}
local k = 1
for i = 1, #ARGV, 2 do
  local per_minute, burst = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local mp, mc, minto, m = hit(KEYS[k], 60000)
  k = k + 1
  local sp, sc, sinto, s = -1, -1, -1, -1
  if burst > 0 then
    sp, sc, sinto, s = hit(KEYS[k], 1000)
    k = k + 1
  end
  for _, v in ipairs({mp, mc, minto, sp, sc, sinto}) do
    out[#out + 1] = v
  end
  if (burst > 0 and s > burst) or m > per_minute then
    break
  end
end
return out
"#;

/// How often the upkeep checks the connection (and retries a lost one).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for a new connection (TCP, TLS, `AUTH`, `SELECT`), in the background.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The Redis store of the rate limits.
pub struct Shared {
    client: Client,
    /// The working connection; `None` while there is none.
    conn: ArcSwapOption<MultiplexedConnection>,
    state: AtomicU8,
    timeout: Duration,
    prefix: String,
    /// `host:port/db`, for logs (never the password).
    place: String,
    script: Script,
    up: IntGauge,
}

/// Why a request was decided on the local counters (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// No working connection (not yet made, or lost).
    Unavailable,
    /// The call failed.
    Error,
    /// No answer within `redis_timeout`.
    Timeout,
}

impl Fallback {
    fn label(self) -> &'static str {
        match self {
            Fallback::Unavailable => "unavailable",
            Fallback::Error => "error",
            Fallback::Timeout => "timeout",
        }
    }
}

/// What the state switch asks to be said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// Nothing changed.
    None,
    /// Redis is in use again (or for the first time).
    ToRedis { first: bool },
    /// Redis stopped working: local counters decide.
    ToLocal,
}

/// `host:port/db` of a Redis URL (no user info), or why it is not one. Only `redis://`
/// and `rediss://` (TLS) are accepted.
pub fn describe_url(url: &str) -> Result<String, String> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(
            "must be a redis:// or rediss:// URL: redis://[[user]:password@]host[:port][/db]"
                .into(),
        );
    }
    // The crate's message names the problem, never the URL (which may hold a password).
    let info = url.into_connection_info().map_err(|e| {
        format!("not a valid Redis URL ({e}): use redis://[[user]:password@]host[:port][/db]")
    })?;
    Ok(format!("{}/{}", info.addr(), info.redis_settings().db()))
}

/// The script's `KEYS` and `ARGV` for the rules covering a request.
fn keys_and_args(prefix: &str, covering: &[(&Rule, Key)]) -> (Vec<String>, Vec<u32>) {
    let mut keys = Vec::with_capacity(covering.len() * 2);
    let mut args = Vec::with_capacity(covering.len() * 2);
    for (rule, key) in covering {
        keys.push(format!("{prefix}{}:{key}:m", rule.name));
        if rule.burst > 0 {
            keys.push(format!("{prefix}{}:{key}:s", rule.name));
        }
        args.extend([rule.per_minute, rule.burst]);
    }
    (keys, args)
}

/// One window's counts from the script (`None`: not counted, or malformed).
fn window(prev: i64, curr: i64, into_ms: i64, length_ms: i64) -> Option<Sample> {
    (prev >= 0 && curr >= 0 && (0..length_ms).contains(&into_ms)).then(|| Sample {
        prev: prev as u64,
        curr: curr as u64,
        into: into_ms as f64 / length_ms as f64,
        length: length_ms as f64 / 1000.0,
    })
}

/// The script's answer as [`Counts`], one per rule counted (`None` if malformed).
fn parse(answer: &[i64]) -> Option<Vec<Counts>> {
    if answer.is_empty() || !answer.len().is_multiple_of(6) {
        return None;
    }
    answer
        .chunks_exact(6)
        .map(|c| {
            Some(Counts {
                minute: window(c[0], c[1], c[2], 60_000)?,
                second: match c[3] {
                    -1 => None,
                    _ => Some(window(c[3], c[4], c[5], 1000)?),
                },
            })
        })
        .collect()
}

impl Shared {
    /// A store for `url` (checked by config validation); connects only in [`Shared::upkeep`].
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Shared, String> {
        let place = describe_url(url).map_err(|e| format!("security.rate_limiting.redis: {e}"))?;
        let client = Client::open(url)
            .map_err(|e| format!("security.rate_limiting.redis: not a valid Redis URL ({e})"))?;
        let up = METRICS.rate_limit_backend_up.with_label_values(&["redis"]);
        up.set(0);
        Ok(Shared {
            client,
            conn: ArcSwapOption::empty(),
            state: AtomicU8::new(STARTING),
            timeout,
            prefix: prefix.to_string(),
            place,
            script: Script::new(SCRIPT),
            up,
        })
    }

    /// Count a request in Redis under the rules that cover it: one [`Counts`] per rule
    /// counted, or `None` when the local counters must decide.
    pub(crate) async fn count(&self, covering: &[(&Rule, Key<'_>)]) -> Option<Vec<Counts>> {
        let conn = match self.conn.load_full() {
            Some(c) if self.state.load(Ordering::Acquire) == UP => c,
            _ => return self.fallback(Fallback::Unavailable),
        };
        let mut conn = (*conn).clone();
        let (keys, args) = keys_and_args(&self.prefix, covering);
        let mut inv = self.script.prepare_invoke();
        inv.key(keys).arg(args);
        let answer = tokio::time::timeout(self.timeout, inv.invoke_async::<Vec<i64>>(&mut conn));
        match answer.await {
            Ok(Ok(answer)) => match parse(&answer) {
                Some(counts) => Some(counts),
                None => {
                    self.lost(&format!("unexpected script answer {answer:?}"), false);
                    self.fallback(Fallback::Error)
                }
            },
            Ok(Err(e)) => {
                self.lost(&e.to_string(), e.is_unrecoverable_error());
                self.fallback(Fallback::Error)
            }
            Err(_) => {
                self.lost(&format!("no answer within {:?}", self.timeout), false);
                self.fallback(Fallback::Timeout)
            }
        }
    }

    fn fallback(&self, why: Fallback) -> Option<Vec<Counts>> {
        metrics::counter(&METRICS.rate_limit_fallbacks, &[why.label()]).inc();
        None
    }

    /// Redis failed: local counters decide until the upkeep sees it answer again. A
    /// broken connection is dropped so the upkeep makes a new one.
    fn lost(&self, why: &str, broken: bool) {
        if broken {
            self.conn.store(None);
        }
        self.switch(DOWN, why);
    }

    /// Move to `to`, saying so once per change.
    fn switch(&self, to: u8, why: &str) -> Switch {
        let from = self.state.swap(to, Ordering::AcqRel);
        let switch = transition(from, to);
        match switch {
            Switch::None => {}
            Switch::ToRedis { first } => {
                self.up.set(1);
                if first {
                    log::info!(
                        "rate limits: counters shared through Redis at {}",
                        self.place
                    );
                } else {
                    log::info!(
                        "rate limits: Redis at {} is back; counters are shared again",
                        self.place
                    );
                }
            }
            Switch::ToLocal => {
                self.up.set(0);
                log::warn!(
                    "rate limits: Redis at {} is unavailable ({why}); deciding on this \
                     process's local counters until it answers again",
                    self.place
                );
            }
        }
        switch
    }

    /// Connect (or check the connection) now; true when Redis is in use afterwards.
    pub async fn probe(&self) -> bool {
        match self.conn.load_full() {
            Some(conn) => {
                // Back in use only when it answers within the requests' own timeout.
                let mut conn = (*conn).clone();
                let ping = redis::cmd("PING");
                match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut conn))
                    .await
                {
                    Ok(Ok(_)) => {
                        self.switch(UP, "");
                        true
                    }
                    Ok(Err(e)) => {
                        // A PING that fails: start over with a new connection.
                        self.lost(&e.to_string(), true);
                        false
                    }
                    Err(_) => {
                        self.lost(&format!("no answer within {:?}", self.timeout), false);
                        false
                    }
                }
            }
            None => match self.connect().await {
                Ok(conn) => {
                    self.conn.store(Some(std::sync::Arc::new(conn)));
                    self.switch(UP, "");
                    true
                }
                Err(e) => {
                    self.switch(DOWN, &e);
                    false
                }
            },
        }
    }

    /// A new connection, with the script loaded (so calls need one round trip).
    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let connecting = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.script.load_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {:?}", CONNECT_TIMEOUT * 2)),
        }
    }
}

/// What a state change means (`STARTING` → `UP` is the first connection).
fn transition(from: u8, to: u8) -> Switch {
    match (from, to) {
        (a, b) if a == b => Switch::None,
        (STARTING, UP) => Switch::ToRedis { first: true },
        (_, UP) => Switch::ToRedis { first: false },
        _ => Switch::ToLocal,
    }
}

/// The background task that connects, watches and reconnects the Redis store.
pub struct Upkeep(pub std::sync::Arc<Shared>);

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.0.probe().await;
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyStrategy, RateLimitRule, RateLimitingConfig};
    use crate::security::rate_limit::RateLimits;

    fn limits(url: &str, rules: &[(&str, u32, u32)]) -> RateLimits {
        RateLimits::build(&RateLimitingConfig {
            rules: rules
                .iter()
                .map(|(name, per_minute, burst)| RateLimitRule {
                    name: name.to_string(),
                    routes: vec![],
                    key_strategy: KeyStrategy::Global,
                    requests_per_minute: *per_minute,
                    burst_size: *burst,
                })
                .collect(),
            redis: Some(url.into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn urls_are_described_without_secrets() {
        assert_eq!(
            describe_url("redis://:s3cret@cache.internal:6380/2").unwrap(),
            "cache.internal:6380/2"
        );
        assert_eq!(
            describe_url("redis://127.0.0.1").unwrap(),
            "127.0.0.1:6379/0"
        );
        assert_eq!(
            describe_url("rediss://user:pw@cache:6390").unwrap(),
            "cache:6390/0"
        );
        for bad in [
            "http://cache:6379",
            "cache:6379",
            "redis://",
            "redis://h:port/0",
        ] {
            let e = describe_url(bad).unwrap_err();
            assert!(e.contains("redis://"), "{bad}: {e}");
        }
        let e = describe_url("redis://:s3cret@h:notaport").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn one_call_carries_every_rule_with_its_keys_and_limits() {
        let l = limits(
            "redis://127.0.0.1:1/0",
            &[("per-minute", 10, 0), ("with-burst", 100, 5)],
        );
        let subject = super::super::Subject {
            route: "/mcp",
            ip: None,
            identity: None,
            tool: None,
        };
        let covering = l.covering(&subject);
        let (keys, args) = keys_and_args("p:", &covering);
        assert_eq!(
            keys,
            [
                "p:per-minute:global:m",
                "p:with-burst:global:m",
                "p:with-burst:global:s"
            ]
        );
        assert_eq!(args, [10, 0, 100, 5]);
    }

    fn sample(prev: u64, curr: u64, into: f64, length: f64) -> Sample {
        Sample::of(prev, curr, into, length)
    }

    #[test]
    fn script_answers_become_counts() {
        let counts = parse(&[2, 1, 19_000, -1, -1, -1, 7, 3, 47_500, 1, 3, 250]).unwrap();
        assert_eq!(
            counts,
            [
                Counts {
                    minute: sample(2, 1, 19.0 / 60.0, 60.0),
                    second: None
                },
                Counts {
                    minute: sample(7, 3, 47.5 / 60.0, 60.0),
                    second: Some(sample(1, 3, 0.25, 1.0))
                }
            ]
        );
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[1, 2, 3]), None);
        assert_eq!(parse(&[1, 2, 60_000, -1, -1, -1]), None);
    }

    #[test]
    fn redis_counts_are_judged_like_local_ones() {
        let l = limits("redis://127.0.0.1:1/0", &[("a", 10, 0), ("b", 3, 0)]);
        let rules: Vec<&Rule> = l.rules.iter().collect();
        // 30 s into the minute: a has 4 + 6·½ = 7, b has 3.
        let answer = parse(&[6, 4, 30_000, -1, -1, -1, 0, 3, 30_000, -1, -1, -1]).unwrap();
        let quota = super::super::decide(rules.iter().copied().zip(answer)).unwrap();
        assert_eq!(
            quota,
            Some(super::super::Quota {
                limit: 3,
                remaining: 0,
                reset: 30
            })
        );
        // The script stops at the first rule over its limit; that one refuses, and its
        // Retry-After is the local one for the same counts: 11 in this window, 12.3 s
        // left, so one more fits when 11·(1−g) + 1 ≤ 10 in the next window, g = 2/11:
        // 12.3 + 10.9 s.
        let answer = parse(&[0, 11, 47_700, -1, -1, -1]).unwrap();
        let counts = answer[0];
        let refused = super::super::decide(rules.iter().copied().zip(answer)).unwrap_err();
        assert_eq!((refused.rule.as_str(), refused.limit), ("a", 10));
        assert_eq!(refused.retry_after, rules[0].retry_after(&counts));
        assert_eq!(refused.retry_after, 24);
    }

    #[test]
    fn switches_are_said_once_each_way() {
        assert_eq!(transition(STARTING, UP), Switch::ToRedis { first: true });
        assert_eq!(transition(UP, UP), Switch::None);
        assert_eq!(transition(UP, DOWN), Switch::ToLocal);
        assert_eq!(transition(DOWN, DOWN), Switch::None);
        assert_eq!(transition(DOWN, UP), Switch::ToRedis { first: false });
        assert_eq!(transition(STARTING, DOWN), Switch::ToLocal);
    }

    #[tokio::test]
    async fn without_redis_the_local_counters_decide() {
        // Nothing listens on port 1: the first probe fails and local limits apply.
        let l = limits("redis://127.0.0.1:1/0", &[("tight", 2, 0)]);
        let shared = l.shared().unwrap();
        let before = METRICS
            .rate_limit_fallbacks
            .with_label_values(&["unavailable"])
            .get();
        assert!(!shared.probe().await);
        assert_eq!(shared.state.load(Ordering::Acquire), DOWN);
        assert_eq!(shared.up.get(), 0);
        let s = super::super::Subject {
            route: "/mcp",
            ip: None,
            identity: None,
            tool: None,
        };
        assert!(l.check(&s).await.is_ok());
        assert!(l.check(&s).await.is_ok());
        assert_eq!(l.check(&s).await.unwrap_err().rule, "tight");
        let after = METRICS
            .rate_limit_fallbacks
            .with_label_values(&["unavailable"])
            .get();
        assert!(after >= before + 3, "{before} → {after}");
        // Failing again says nothing new.
        assert_eq!(shared.switch(DOWN, "still down"), Switch::None);
    }
}
