//! Every Prometheus metric of the gateway, declared in one place.
//!
//! Label values are bounded: routes, groups and servers come from the config; MCP
//! methods from the fixed list `mcp::envelope::KNOWN_METHODS` ([`mcp_method_label`]); tool names only from the group's
//! tool catalog (names its servers listed in `tools/list` answers), everything else
//! folds into `other`. Raw client input never becomes a label value.
//!
//! Counters and histograms are updated once per request (in the `logging` phase) and
//! per upstream attempt; gauges that mirror state (server health, breaker state,
//! in-flight requests) are read from the groups when `/metrics` is scraped.

use crate::prehashed::BuildPrehashed;
use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;

/// Request duration buckets, seconds: from sub-millisecond proxying to long tool calls.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

pub struct Metrics {
    registry: Registry,
    /// Client requests by route, group, MCP method and HTTP status.
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Errors the gateway answered itself, by route, kind and JSON-RPC code.
    pub errors: IntCounterVec,
    /// `tools/call` requests by group and tool (catalog names or `other`) and status.
    pub tool_calls: IntCounterVec,
    /// Open client connections to the proxy port.
    pub connections_active: IntGauge,
    /// Client requests in progress, SSE streams included.
    pub requests_active: IntGauge,
    /// Client connections closed for not sending a complete request head in time.
    pub request_head_timeouts: IntCounter,
    /// Request heads Pingora's parser refused (answered `400` with a JSON-RPC error).
    pub bad_request_heads: IntCounter,
    /// Idle client connections closed after `server.keepalive_timeout`.
    pub keepalive_timeouts: IntCounter,
    /// Client connections refused as they were accepted, by limit.
    pub connections_refused: IntCounterVec,
    /// Requests that found their server's connections all in use, by group and outcome.
    pub upstream_connection_waits: IntCounterVec,
    /// SSE answers being relayed, by group.
    pub sse_streams_active: IntGaugeVec,
    /// Requests refused by a rate limit, by route and rule.
    pub rate_limited: IntCounterVec,
    /// Requests decided on the local counters because Redis was not usable, by reason.
    pub rate_limit_fallbacks: IntCounterVec,
    /// 1 while the shared rate-limit store is in use, by backend (`redis`).
    pub rate_limit_backend_up: IntGaugeVec,
    /// Requests refused by authentication, by route and reason.
    pub auth_rejections: IntCounterVec,
    /// Basic passwords checked against their hash, by result (`ok`, `failed`).
    pub password_verifications: IntCounterVec,
    /// Authentication attempts refused before any credential was checked, by reason.
    pub auth_throttled: IntCounterVec,
    /// Requests refused by an authorization policy, by route and rule.
    pub policy_denials: IntCounterVec,
    /// Sessions sealed (upstream `initialize` answers with an `Mcp-Session-Id`), by group.
    pub sessions: IntCounterVec,
    /// Attempts sent to upstream servers, by group, server and outcome.
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub health_checks: IntCounterVec,
    pub upstream_up: IntGaugeVec,
    pub breaker_state: IntGaugeVec,
    pub upstream_in_flight: IntGaugeVec,
    /// Virtual servers: sessions begun (`initialize` answered), by virtual server.
    pub federation_sessions: IntCounterVec,
    /// Virtual servers: a member's failures, by virtual server, member and phase.
    pub federation_member_failures: IntCounterVec,
    /// Virtual servers: time to fan a request out to the members and merge the answers.
    pub federation_fan_out_duration: HistogramVec,
    /// Virtual servers: items each member contributes to the merged lists, by list.
    pub federation_member_items: IntGaugeVec,
    /// stdio servers: processes running, by group and server.
    pub stdio_processes: IntGaugeVec,
    /// stdio servers: processes that ended, by group, server and how (`stopped`: the
    /// gateway ended it; `exited`: on its own; `spawn_failed`: it never started).
    pub stdio_exits: IntCounterVec,
    /// stdio servers: seconds until the next start is allowed after repeated exits (0: none).
    pub stdio_backoff_seconds: IntGaugeVec,
    /// Cacheable requests, by route and result (`hit`, `miss`, `coalesced`, `redis_hit`).
    pub cache_requests: IntCounterVec,
    /// Entries dropped from the memory level, by route and cause (`size`, `expired`,
    /// `invalidated`).
    pub cache_evictions: IntCounterVec,
    /// Entries stored, by route and level (`memory`, `redis`).
    pub cache_stores: IntCounterVec,
    /// Bytes held by the memory level (entries' weighed size), by route.
    pub cache_memory_bytes: IntGaugeVec,
    /// Entries held by the memory level, by route.
    pub cache_memory_entries: IntGaugeVec,
    /// Redis operations of the cache that failed or timed out, by operation and reason.
    pub cache_redis_errors: IntCounterVec,
    /// 1 while the cache's Redis level answers, 0 while the cache runs on memory alone
    /// (exported only with `cache.redis`), by backend (`redis`).
    pub cache_redis_up: IntGaugeVec,
}

pub static METRICS: Lazy<Metrics> = Lazy::new(Metrics::new);

/// A metric without labels, registered.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    m: prometheus::Result<M>,
) -> M {
    let m = m.expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn new_counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn new_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn new_histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    let m = HistogramVec::new(opts, labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let connections_active = registered(
            &r,
            IntGauge::new(
                "mcp_gateway_connections_active",
                "Open client connections to the proxy port",
            ),
        );
        let requests_active = registered(
            &r,
            IntGauge::new(
                "mcp_gateway_requests_active",
                "Client requests in progress, SSE streams included",
            ),
        );
        let request_head_timeouts = registered(
            &r,
            IntCounter::new(
                "mcp_gateway_request_head_timeouts_total",
                "Client connections closed for not sending a complete request head within limits.request_head_timeout",
            ),
        );
        let keepalive_timeouts = registered(
            &r,
            IntCounter::new(
                "mcp_gateway_keepalive_timeouts_total",
                "Idle client connections closed after server.keepalive_timeout with no request",
            ),
        );
        let bad_request_heads = registered(
            &r,
            IntCounter::new(
                "mcp_gateway_bad_request_heads_total",
                "Request heads that could not be parsed (malformed line or field, bad framing, too many fields), answered 400",
            ),
        );
        Metrics {
            bad_request_heads,
            connections_refused: new_counter(
                &r,
                "mcp_gateway_connections_refused_total",
                "Client connections refused as they were accepted (503), by limit: max_connections or max_connections_per_ip",
                &["reason"],
            ),
            keepalive_timeouts,
            upstream_connection_waits: new_counter(
                &r,
                "mcp_gateway_upstream_connection_waits_total",
                "Requests that found all of their server's connections in use (connection_pool.max_connections_per_host), by group and outcome: waited (one was freed within timeouts.connect) or timeout (503)",
                &["group", "outcome"],
            ),
            requests: new_counter(
                &r,
                "mcp_gateway_requests_total",
                "Client requests by route, group, MCP method and HTTP status",
                &["route", "group", "method", "status"],
            ),
            request_duration: new_histogram(
                &r,
                "mcp_gateway_request_duration_seconds",
                "Time from a client request's arrival to the end of its response (streams included)",
                &["route", "group", "method"],
            ),
            errors: new_counter(
                &r,
                "mcp_gateway_errors_total",
                "Errors the gateway answered itself, by route, kind and JSON-RPC error code",
                &["route", "kind", "code"],
            ),
            tool_calls: new_counter(
                &r,
                "mcp_gateway_tool_calls_total",
                "tools/call requests by group, tool (names from the servers' tools/list; others are \"other\") and HTTP status",
                &["group", "tool", "status"],
            ),
            connections_active,
            requests_active,
            request_head_timeouts,
            sse_streams_active: new_gauge(
                &r,
                "mcp_gateway_sse_streams_active",
                "SSE answers being relayed to clients",
                &["group"],
            ),
            rate_limited: new_counter(
                &r,
                "mcp_gateway_rate_limited_total",
                "Requests refused by a rate limit (429), by route and rule",
                &["route", "rule"],
            ),
            rate_limit_fallbacks: new_counter(
                &r,
                "mcp_gateway_rate_limit_fallbacks_total",
                "Requests whose rate limits were decided on this process's local counters because the shared store (Redis) was unavailable, failed or timed out",
                &["reason"],
            ),
            rate_limit_backend_up: new_gauge(
                &r,
                "mcp_gateway_rate_limit_backend_up",
                "1 while rate-limit counters are shared through the backend (redis), 0 while this process decides on local counters",
                &["backend"],
            ),
            auth_rejections: new_counter(
                &r,
                "mcp_gateway_auth_rejections_total",
                "Requests refused by authentication, by route and reason (missing, expired, bad_signature, bad_api_key, bad_password, ...)",
                &["route", "reason"],
            ),
            password_verifications: new_counter(
                &r,
                "mcp_gateway_password_verifications_total",
                "Basic passwords verified against their argon2/bcrypt hash, by result (ok, failed); a request answered from the verified-credential cache runs none",
                &["result"],
            ),
            auth_throttled: new_counter(
                &r,
                "mcp_gateway_auth_throttled_total",
                "Authentication attempts refused before checking the credential: client_ip or user locked out after too many failures (429), busy when every password verification slot was in use (503)",
                &["reason"],
            ),
            policy_denials: new_counter(
                &r,
                "mcp_gateway_policy_denials_total",
                "Requests refused by an authorization policy (403), by route and rule (\"(no rule)\" when none matched)",
                &["route", "rule"],
            ),
            sessions: new_counter(
                &r,
                "mcp_gateway_sessions_total",
                "MCP sessions started (sealed Mcp-Session-Id issued)",
                &["group"],
            ),
            upstream_requests: new_counter(
                &r,
                "mcp_gateway_upstream_requests_total",
                "Attempts sent to upstream servers by outcome: HTTP status class, connect_error or error",
                &["group", "server", "outcome"],
            ),
            upstream_duration: new_histogram(
                &r,
                "mcp_gateway_upstream_request_duration_seconds",
                "Time from choosing a server to the end of its answer",
                &["group", "server"],
            ),
            health_checks: new_counter(
                &r,
                "mcp_gateway_upstream_health_checks_total",
                "Active health checks by result (pass or fail)",
                &["group", "server", "result"],
            ),
            upstream_up: new_gauge(
                &r,
                "mcp_gateway_upstream_up",
                "1 while a server is resolved and passes its health checks",
                &["group", "server"],
            ),
            breaker_state: new_gauge(
                &r,
                "mcp_gateway_circuit_breaker_state",
                "Circuit breaker state per server: 0 closed, 1 open, 2 half_open",
                &["group", "server"],
            ),
            upstream_in_flight: new_gauge(
                &r,
                "mcp_gateway_upstream_in_flight",
                "Requests and open streams in progress per server",
                &["group", "server"],
            ),
            federation_sessions: new_counter(
                &r,
                "mcp_gateway_federation_sessions_total",
                "Virtual servers: sessions begun (initialize answered with a sealed Mcp-Session-Id), by virtual server",
                &["virtual_server"],
            ),
            federation_member_failures: new_counter(
                &r,
                "mcp_gateway_federation_member_failures_total",
                "Virtual servers: requests to a member that failed, by virtual server, member (its prefix) and phase (initialize, discover, the list or method)",
                &["virtual_server", "member", "phase"],
            ),
            stdio_processes: new_gauge(
                &r,
                "mcp_gateway_stdio_processes",
                "stdio servers: processes the gateway runs, by group and server",
                &["group", "server"],
            ),
            stdio_exits: new_counter(
                &r,
                "mcp_gateway_stdio_exits_total",
                "stdio servers: processes that ended, by group, server and how (stopped: ended by the gateway; exited: on their own; spawn_failed: never started)",
                &["group", "server", "how"],
            ),
            cache_requests: new_counter(
                &r,
                "mcp_gateway_cache_requests_total",
                "Cacheable requests, by route and result (hit: from memory, redis_hit: from Redis, coalesced: answered by a concurrent miss's upstream request, miss: sent upstream)",
                &["route", "result"],
            ),
            cache_evictions: new_counter(
                &r,
                "mcp_gateway_cache_evictions_total",
                "Entries dropped from the memory level, by route and cause (size, expired, invalidated)",
                &["route", "cause"],
            ),
            cache_stores: new_counter(
                &r,
                "mcp_gateway_cache_stores_total",
                "Answers stored in the cache, by route and level (memory, redis)",
                &["route", "level"],
            ),
            cache_memory_bytes: new_gauge(
                &r,
                "mcp_gateway_cache_memory_bytes",
                "Bytes of answers held by the cache's memory level, by route",
                &["route"],
            ),
            cache_memory_entries: new_gauge(
                &r,
                "mcp_gateway_cache_memory_entries",
                "Answers held by the cache's memory level, by route",
                &["route"],
            ),
            cache_redis_errors: new_counter(
                &r,
                "mcp_gateway_cache_redis_errors_total",
                "Cache operations on Redis that failed or timed out (the request went on without Redis), by route (empty: for every route), operation and reason",
                &["route", "op", "reason"],
            ),
            cache_redis_up: new_gauge(
                &r,
                "mcp_gateway_cache_redis_up",
                "1 while the cache's Redis level (cache.redis) answers, 0 while the cache runs on this process's memory alone",
                &["backend"],
            ),
            stdio_backoff_seconds: new_gauge(
                &r,
                "mcp_gateway_stdio_backoff_seconds",
                "stdio servers: seconds until the gateway starts the server again after repeated exits (0: no backoff)",
                &["group", "server"],
            ),
            federation_fan_out_duration: new_histogram(
                &r,
                "mcp_gateway_federation_fan_out_duration_seconds",
                "Virtual servers: time to ask every member and merge their answers (initialize, server/discover, the lists), by virtual server and method",
                &["virtual_server", "method"],
            ),
            federation_member_items: new_gauge(
                &r,
                "mcp_gateway_federation_member_items",
                "Virtual servers: items a member contributed to its last complete merged list, by virtual server, member and list (tools, prompts, resources)",
                &["virtual_server", "member", "list"],
            ),
            registry: r,
        }
    }

    /// The text exposition (whoever owns the state gauges sets them first).
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("encoding metrics: {e}");
        }
        out
    }
}

/// Cached children by key: the label values (to tell colliding keys apart) and the child.
/// The key is a hash already ([`key`]): the map uses it as it is, not hashed again.
type ChildCache = HashMap<u64, Vec<(Box<[Box<str>]>, Child)>, BuildPrehashed>;

thread_local! {
    static CHILDREN: std::cell::RefCell<ChildCache> = std::cell::RefCell::new(HashMap::default());
}

#[derive(Clone)]
enum Child {
    Counter(IntCounter),
    Histogram(Histogram),
}

/// FNV-1a over the family's address and the label values: the cache key.
fn key(family: usize, labels: &[&str]) -> u64 {
    let mut h = 0xcbf29ce484222325u64 ^ family as u64;
    for l in labels {
        for b in l.bytes().chain(std::iter::once(0xff)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// The labelled child of a family, from a per-thread cache: the prometheus crate keeps
/// children behind a lock, so the request path asks it only on a thread's first use of
/// a label set (label sets are bounded, see the module docs).
fn child(family: usize, labels: &[&str], make: impl FnOnce() -> Child) -> Child {
    CHILDREN.with(|cache| {
        let mut cache = cache.borrow_mut();
        let bucket = cache.entry(key(family, labels)).or_default();
        if let Some((_, c)) = bucket.iter().find(|(ls, _)| {
            ls.len() == labels.len() && ls.iter().zip(labels).all(|(a, b)| &**a == *b)
        }) {
            return c.clone();
        }
        let c = make();
        bucket.push((labels.iter().map(|l| Box::from(*l)).collect(), c.clone()));
        c
    })
}

/// `vec.with_label_values(labels)`, without the lock after a thread's first use.
pub fn counter(vec: &IntCounterVec, labels: &[&str]) -> IntCounter {
    match child(vec as *const _ as usize, labels, || {
        Child::Counter(vec.with_label_values(labels))
    }) {
        Child::Counter(c) => c,
        Child::Histogram(_) => unreachable!("a family is either counters or histograms"),
    }
}

/// `vec.with_label_values(labels)`, without the lock after a thread's first use.
pub fn histogram(vec: &HistogramVec, labels: &[&str]) -> Histogram {
    match child(vec as *const _ as usize, labels, || {
        Child::Histogram(vec.with_label_values(labels))
    }) {
        Child::Histogram(h) => h,
        Child::Counter(_) => unreachable!("a family is either counters or histograms"),
    }
}

/// HTTP statuses as label values, made once (no allocation per request).
static STATUS_LABELS: Lazy<Vec<String>> = Lazy::new(|| (0..600).map(|s| s.to_string()).collect());

/// The `status` label of an HTTP status (`0`: nothing was sent).
pub fn status_label(status: u16) -> &'static str {
    STATUS_LABELS
        .get(status as usize)
        .map(String::as_str)
        .unwrap_or("other")
}

/// The `method` label: a known MCP method, `other`, or for requests without one the
/// HTTP method (`GET` for the SSE stream, `DELETE` to end a session; `response` for a
/// POSTed JSON-RPC response, `none` for a body refused before its envelope was read:
/// too large, not JSON, not JSON-RPC).
pub fn mcp_method_label(
    mcp_method: Option<&str>,
    http_method: &str,
    inspected: bool,
) -> &'static str {
    match mcp_method {
        Some(m) => crate::mcp::envelope::KNOWN_METHODS
            .iter()
            .find(|k| **k == m)
            .copied()
            .unwrap_or("other"),
        None => match http_method {
            "GET" => "GET",
            "DELETE" => "DELETE",
            _ if inspected => "response",
            _ => "none",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            mcp_method_label(Some("tools/call"), "POST", true),
            "tools/call"
        );
        assert_eq!(
            mcp_method_label(Some("x/evil\"label"), "POST", true),
            "other"
        );
        assert_eq!(mcp_method_label(None, "GET", false), "GET");
        assert_eq!(mcp_method_label(None, "POST", true), "response");
        assert_eq!(mcp_method_label(None, "POST", false), "none");
    }

    #[test]
    fn renders_text_format() {
        METRICS
            .requests
            .with_label_values(&["/mcp", "default", "tools/list", "200"])
            .inc();
        let text = String::from_utf8(METRICS.render()).unwrap();
        assert!(text.contains("# TYPE mcp_gateway_requests_total counter"));
        assert!(text.contains(
            r#"mcp_gateway_requests_total{group="default",method="tools/list",route="/mcp",status="200"}"#
        ));
    }
}
