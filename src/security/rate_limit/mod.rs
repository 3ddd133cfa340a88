//! Request rate limits: every rule that covers a request counts it under the rule's key
//! (client IP, user, API key, tool, or one global key) and refuses it once the key is
//! over the rule's limits.
//!
//! Each rule counts over a sliding minute for `requests_per_minute` and a sliding second
//! for `burst_size`: the previous window weighted by how much of it still overlaps, plus
//! the current one, so a client cannot double its quota at a window boundary. Refused
//! requests count too; the rules after the one that refused a request do not count it.
//!
//! Where the counting happens:
//! * on this process's exact per-key counters ([`super::window::Windows`]: every key
//!   counted on its own, so clients never count against each other; at most
//!   `security.rate_limiting.max_tracked_keys` keys per rule), with no
//!   `security.rate_limiting.redis`;
//! * in Redis ([`shared`]), one script call for all the rules of a request, so every
//!   replica sees the same counters. While Redis is unreachable or slow the local
//!   estimators decide, so the gateway keeps serving (each process then allows the
//!   limit on its own).
//!
//! Both ways end in the same judgement ([`Rule::judge`]) of the same [`Counts`]: the
//! previous and current windows' counts, from which the estimate and the time a refused
//! client must wait (`Retry-After`, until one more request fits every window) follow.

pub mod shared;

use super::auth::Identity;
use super::window::{self, Sample, Windows};
use crate::config::{KeyStrategy, RateLimitRule, RateLimitingConfig};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Rule {
    name: String,
    routes: Vec<String>,
    strategy: KeyStrategy,
    per_minute: u32,
    burst: u32,
    minute: Windows,
    second: Windows,
}

/// All rules, built once from the config.
#[derive(Default)]
pub struct RateLimits {
    rules: Vec<Rule>,
    /// Counters shared through Redis, when configured.
    shared: Option<Arc<shared::Shared>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("rules", &self.rules.len())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// A refusal: which rule, and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub rule: String,
    pub limit: u32,
    /// Whole seconds until the client may try again.
    pub retry_after: u64,
    pub message: String,
}

/// What the client may still send under the tightest rule that counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    pub reset: u64,
}

/// What a request is counted by.
pub struct Subject<'a> {
    pub route: &'a str,
    pub ip: Option<IpAddr>,
    pub identity: Option<&'a Identity>,
    /// The tool of a `tools/call`.
    pub tool: Option<&'a str>,
}

impl Subject<'_> {
    /// Who the request comes from: the authenticated subject, else the client IP.
    pub fn identity_key(&self) -> String {
        key(KeyStrategy::UserId, self).map_or_else(String::new, |k| k.to_string())
    }
}

/// What one rule counted for a request (this request included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Counts {
    /// The minute windows.
    pub minute: Sample,
    /// The second windows (`None`: the rule has no `burst_size`).
    pub second: Option<Sample>,
}

impl RateLimits {
    /// The rules, and the Redis store when `redis` is set (a bad URL is an error; config
    /// validation reports it first).
    pub fn build(cfg: &RateLimitingConfig) -> Result<RateLimits, String> {
        Self::build_reusing(cfg, None)
    }

    /// [`RateLimits::build`], keeping the Redis store of `previous` (a reload; the
    /// store's connection and its upkeep belong to the process).
    pub fn build_reusing(
        cfg: &RateLimitingConfig,
        previous: Option<&RateLimits>,
    ) -> Result<RateLimits, String> {
        let max_keys = cfg.max_tracked_keys as usize;
        let rules: Vec<Rule> = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(i, r, max_keys))
            .collect();
        let kept = previous.and_then(|p| p.shared.clone());
        let shared = match cfg.redis_url() {
            Some(_) if !rules.is_empty() && kept.is_some() => kept,
            Some(url) if !rules.is_empty() => Some(Arc::new(shared::Shared::new(
                url,
                &cfg.redis_key_prefix,
                cfg.redis_timeout.0,
            )?)),
            _ => None,
        };
        Ok(RateLimits { rules, shared })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The Redis store, for its background upkeep.
    pub fn shared(&self) -> Option<Arc<shared::Shared>> {
        self.shared.clone()
    }

    /// The rules that cover a request, each with the request's key under it.
    fn covering<'r, 's>(&'r self, s: &Subject<'s>) -> Vec<(&'r Rule, Key<'s>)> {
        self.rules
            .iter()
            .filter(|r| r.routes.is_empty() || r.routes.iter().any(|p| p == s.route))
            .filter_map(|r| Some((r, key(r.strategy, s)?)))
            .collect()
    }

    /// Count the request under every rule that covers it. `Err` if any rule is over its
    /// limit; else the quota left under the tightest rule (for `RateLimit-*` headers).
    pub async fn check(&self, s: &Subject<'_>) -> Result<Option<Quota>, Limited> {
        let covering = self.covering(s);
        if covering.is_empty() {
            return Ok(None);
        }
        if let Some(shared) = &self.shared {
            if let Some(counts) = shared.count(&covering).await {
                return decide(covering.iter().map(|(r, _)| *r).zip(counts));
            }
        }
        self.check_locally(&covering)
    }

    /// [`RateLimits::check`] on this process's counters only.
    fn check_locally(&self, covering: &[(&Rule, Key)]) -> Result<Option<Quota>, Limited> {
        // Lazy: the rules after a refusing one do not count the request.
        let now = window::now_ms();
        decide(
            covering
                .iter()
                .map(|(r, key)| (*r, r.count_locally(*key, now))),
        )
    }
}

/// The tightest quota of the rules that counted a request, or the first refusal.
fn decide<'a>(counted: impl Iterator<Item = (&'a Rule, Counts)>) -> Result<Option<Quota>, Limited> {
    let mut tightest: Option<Quota> = None;
    for (rule, counts) in counted {
        let quota = rule.judge(counts)?;
        if tightest.is_none_or(|t| quota.remaining < t.remaining) {
            tightest = Some(quota);
        }
    }
    Ok(tightest)
}

impl Rule {
    /// Count one request under `key` on this process's counters at `now` (ms).
    fn count_locally(&self, key: Key, now: u64) -> Counts {
        Counts {
            minute: self.minute.hit(&key, now),
            second: (self.burst > 0).then(|| self.second.hit(&key, now)),
        }
    }

    /// Seconds until one more request fits every window of the rule.
    fn retry_after(&self, c: &Counts) -> u64 {
        let minute = c.minute.wait_for(self.per_minute);
        let second = c.second.map_or(0.0, |s| s.wait_for(self.burst));
        window::whole_seconds(minute.max(second))
    }

    /// The refusal for more than `limit` requests `per` ("in a second", "per minute"):
    /// retry once enough of the window has slid by for one more request to fit.
    fn limited(&self, c: &Counts, limit: u32, per: &str) -> Limited {
        let retry_after = self.retry_after(c);
        Limited {
            rule: self.name.clone(),
            limit,
            retry_after,
            message: format!(
                "rate limit {:?}: more than {limit} requests {per}; retry in {retry_after} s",
                self.name
            ),
        }
    }

    /// Over the limit (the burst first), or the quota left.
    fn judge(&self, c: Counts) -> Result<Quota, Limited> {
        let per_minute = c.minute.estimate();
        if c.second
            .is_some_and(|s| s.estimate() > f64::from(self.burst))
        {
            return Err(self.limited(&c, self.burst, "in a second"));
        }
        if per_minute > f64::from(self.per_minute) {
            return Err(self.limited(&c, self.per_minute, "per minute"));
        }
        Ok(Quota {
            limit: self.per_minute,
            remaining: (f64::from(self.per_minute) - per_minute).max(0.0) as u32,
            reset: c.minute.reset().ceil() as u64,
        })
    }
}

fn rule(i: usize, r: &RateLimitRule, max_keys: usize) -> Rule {
    Rule {
        name: if r.name.is_empty() {
            format!("rate_limiting.rules[{i}]")
        } else {
            r.name.clone()
        },
        routes: r.routes.clone(),
        strategy: r.key_strategy,
        per_minute: r.requests_per_minute,
        burst: r.burst_size,
        minute: Windows::new(Duration::from_secs(60), max_keys),
        second: Windows::new(Duration::from_secs(1), max_keys),
    }
}

/// The counter key of a request under a strategy (`None`: the rule does not count it).
/// What a rule counts a request by: hashed as it is for this process's counters (no
/// string is built per request), written out (`ip:…`, `user:…`, `client:…`, `tool:…`,
/// `global`) only for Redis and the stream slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key<'a> {
    Ip(Option<std::net::IpAddr>),
    User(&'a str),
    Client(&'a str),
    Tool(&'a str),
    Global,
}

impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Ip(Some(ip)) => write!(f, "ip:{ip}"),
            Key::Ip(None) => f.write_str("ip:-"),
            Key::User(subject) => write!(f, "user:{subject}"),
            Key::Client(client) => write!(f, "client:{client}"),
            Key::Tool(tool) => write!(f, "tool:{tool}"),
            Key::Global => f.write_str("global"),
        }
    }
}

fn key<'a>(strategy: KeyStrategy, s: &Subject<'a>) -> Option<Key<'a>> {
    let ip = Key::Ip(s.ip);
    Some(match strategy {
        KeyStrategy::IpAddress => ip,
        KeyStrategy::UserId => match s.identity {
            Some(id) => Key::User(&id.subject),
            None => ip,
        },
        KeyStrategy::ApiKey => match s.identity.and_then(|id| id.client_id.as_deref()) {
            Some(client) => Key::Client(client),
            None => ip,
        },
        KeyStrategy::Tool => Key::Tool(s.tool?),
        KeyStrategy::Global => Key::Global,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_as_the_shared_store_knows_them() {
        // Redis keys (and stream slots) of replicas running other versions must agree.
        let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        let written = [
            Key::Ip(Some(ip)),
            Key::Ip(None),
            Key::User("alice"),
            Key::Client("agent-7"),
            Key::Tool("echo"),
            Key::Global,
        ]
        .map(|k| k.to_string());
        assert_eq!(
            written,
            [
                "ip:10.0.0.7",
                "ip:-",
                "user:alice",
                "client:agent-7",
                "tool:echo",
                "global"
            ]
        );
    }

    fn limits(strategy: KeyStrategy, per_minute: u32, burst: u32) -> RateLimits {
        RateLimits::build(&RateLimitingConfig {
            rules: vec![RateLimitRule {
                name: "r".into(),
                routes: vec![],
                key_strategy: strategy,
                requests_per_minute: per_minute,
                burst_size: burst,
            }],
            ..Default::default()
        })
        .unwrap()
    }

    impl RateLimits {
        /// [`RateLimits::check`] with no Redis configured.
        fn check_now(&self, s: &Subject) -> Result<Option<Quota>, Limited> {
            self.check_locally(&self.covering(s))
        }
    }

    fn from(ip: &str) -> Subject<'static> {
        Subject {
            route: "/mcp",
            ip: Some(ip.parse().unwrap()),
            identity: None,
            tool: None,
        }
    }

    #[test]
    fn per_minute_limit_per_key() {
        let l = limits(KeyStrategy::IpAddress, 3, 0);
        for left in [2, 1, 0] {
            assert_eq!(
                l.check_now(&from("10.0.0.1")).unwrap().unwrap().remaining,
                left
            );
        }
        let refused = l.check_now(&from("10.0.0.1")).unwrap_err();
        assert_eq!((refused.limit, refused.rule.as_str()), (3, "r"));
        // Until one more fits: the count of this window slides out in the next one.
        assert!((1..=120).contains(&refused.retry_after), "{refused:?}");
        // Another client has its own counter.
        assert!(l.check_now(&from("10.0.0.2")).is_ok());
    }

    #[test]
    fn burst_caps_a_second() {
        let l = limits(KeyStrategy::Global, 1000, 2);
        assert!(l.check_now(&from("10.0.0.1")).is_ok());
        assert!(l.check_now(&from("10.0.0.2")).is_ok());
        let refused = l.check_now(&from("10.0.0.3")).unwrap_err();
        assert_eq!(refused.limit, 2);
        // Three in this second: one more fits ⅓ into the next one at the earliest.
        assert!((1..=2).contains(&refused.retry_after), "{refused:?}");
    }

    #[test]
    fn tool_rules_count_only_tool_calls() {
        let l = limits(KeyStrategy::Tool, 1, 0);
        let call = |tool: Option<&'static str>| Subject {
            route: "/mcp",
            ip: None,
            identity: None,
            tool,
        };
        assert_eq!(l.check_now(&call(None)).unwrap(), None);
        assert_eq!(l.check_now(&call(None)).unwrap(), None);
        assert!(l.check_now(&call(Some("search"))).is_ok());
        assert!(l.check_now(&call(Some("search"))).is_err());
        assert!(l.check_now(&call(Some("fetch"))).is_ok());
    }
}
