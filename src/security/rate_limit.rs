//! Request rate limits with pingora-limits: every rule that covers a request counts it
//! under the rule's key (client IP, user, API key, tool, or one global key) and refuses
//! it once the key is over the rule's limits.
//!
//! Each rule keeps two `pingora_limits::rate::Rate` estimators: one with a one-minute
//! window for `requests_per_minute`, one with a one-second window for `burst_size`.
//! Counts are sliding-window estimates (the previous window weighted by how much of it
//! still overlaps, plus the current one), so a client cannot double its quota at a
//! window boundary. Counters are per process (and lock-free); refused requests count too.

use super::auth::Identity;
use crate::config::{KeyStrategy, RateLimitRule, RateLimitingConfig};
use pingora_limits::rate::{Rate, RateComponents};
use std::net::IpAddr;
use std::time::Duration;

struct Rule {
    name: String,
    routes: Vec<String>,
    strategy: KeyStrategy,
    per_minute: u32,
    burst: u32,
    minute: Rate,
    second: Rate,
}

/// All rules, built once from the config.
#[derive(Default)]
pub struct RateLimits {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("rules", &self.rules.len())
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

/// Sliding-window estimate of the events in the last `interval`, and the seconds until
/// the current window ends.
fn estimate(c: RateComponents) -> (f64, f64) {
    let frac = c.current_interval_fraction.clamp(0.0, 1.0);
    let count = c.prev_samples as f64 * (1.0 - frac) + c.curr_samples as f64;
    (count, c.interval.as_secs_f64() * (1.0 - frac))
}

impl RateLimits {
    pub fn build(cfg: &RateLimitingConfig) -> RateLimits {
        RateLimits {
            rules: cfg
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| rule(i, r))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Count the request under every rule that covers it. `Err` if any rule is over its
    /// limit; else the quota left under the tightest rule (for `RateLimit-*` headers).
    pub fn check(&self, s: &Subject) -> Result<Option<Quota>, Limited> {
        let mut tightest: Option<Quota> = None;
        for r in &self.rules {
            if !(r.routes.is_empty() || r.routes.iter().any(|p| p == s.route)) {
                continue;
            }
            let Some(key) = key(r.strategy, s) else {
                continue;
            };
            r.minute.observe(&key, 1);
            let (per_minute, reset) = r.minute.rate_with(&key, estimate);
            if r.burst > 0 {
                r.second.observe(&key, 1);
                let (per_second, _) = r.second.rate_with(&key, estimate);
                if per_second > f64::from(r.burst) {
                    return Err(Limited {
                        rule: r.name.clone(),
                        limit: r.burst,
                        retry_after: 1,
                        message: format!(
                            "rate limit {:?}: more than {} requests in a second; retry in 1 s",
                            r.name, r.burst
                        ),
                    });
                }
            }
            if per_minute > f64::from(r.per_minute) {
                // Until enough of the window has slid by to fall back under the limit.
                let retry_after = (reset.ceil() as u64).clamp(1, 60);
                return Err(Limited {
                    rule: r.name.clone(),
                    limit: r.per_minute,
                    retry_after,
                    message: format!(
                        "rate limit {:?}: more than {} requests per minute; retry in {retry_after} s",
                        r.name, r.per_minute
                    ),
                });
            }
            let remaining = (f64::from(r.per_minute) - per_minute).max(0.0) as u32;
            let quota = Quota {
                limit: r.per_minute,
                remaining,
                reset: reset.ceil() as u64,
            };
            if tightest.is_none_or(|t| quota.remaining < t.remaining) {
                tightest = Some(quota);
            }
        }
        Ok(tightest)
    }
}

fn rule(i: usize, r: &RateLimitRule) -> Rule {
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
        minute: Rate::new(Duration::from_secs(60)),
        second: Rate::new(Duration::from_secs(1)),
    }
}

/// The counter key of a request under a strategy (`None`: the rule does not count it).
fn key(strategy: KeyStrategy, s: &Subject) -> Option<String> {
    let ip = || {
        s.ip.map(|ip| format!("ip:{ip}"))
            .unwrap_or_else(|| "ip:-".into())
    };
    Some(match strategy {
        KeyStrategy::IpAddress => ip(),
        KeyStrategy::UserId => match s.identity {
            Some(id) => format!("user:{}", id.subject),
            None => ip(),
        },
        KeyStrategy::ApiKey => match s.identity.and_then(|id| id.client_id.as_deref()) {
            Some(client) => format!("client:{client}"),
            None => ip(),
        },
        KeyStrategy::Tool => format!("tool:{}", s.tool?),
        KeyStrategy::Global => "global".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(strategy: KeyStrategy, per_minute: u32, burst: u32) -> RateLimits {
        RateLimits::build(&RateLimitingConfig {
            rules: vec![RateLimitRule {
                name: "r".into(),
                routes: vec![],
                key_strategy: strategy,
                requests_per_minute: per_minute,
                burst_size: burst,
            }],
        })
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
            assert_eq!(l.check(&from("10.0.0.1")).unwrap().unwrap().remaining, left);
        }
        let refused = l.check(&from("10.0.0.1")).unwrap_err();
        assert_eq!((refused.limit, refused.rule.as_str()), (3, "r"));
        assert!((1..=60).contains(&refused.retry_after));
        // Another client has its own counter.
        assert!(l.check(&from("10.0.0.2")).is_ok());
    }

    #[test]
    fn burst_caps_a_second() {
        let l = limits(KeyStrategy::Global, 1000, 2);
        assert!(l.check(&from("10.0.0.1")).is_ok());
        assert!(l.check(&from("10.0.0.2")).is_ok());
        let refused = l.check(&from("10.0.0.3")).unwrap_err();
        assert_eq!((refused.limit, refused.retry_after), (2, 1));
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
        assert_eq!(l.check(&call(None)).unwrap(), None);
        assert_eq!(l.check(&call(None)).unwrap(), None);
        assert!(l.check(&call(Some("search"))).is_ok());
        assert!(l.check(&call(Some("search"))).is_err());
        assert!(l.check(&call(Some("fetch"))).is_ok());
    }
}
