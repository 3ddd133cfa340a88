//! Loading configs as the gateway does (every check, those needing runtime objects
//! included): what is accepted, what it resolves to, and every problem with its path.

use crate::config::*;
use std::collections::HashMap;

fn load_with(text: &str, env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // Every check, as `--validate` makes them (those needing runtime objects included).
    super::check::load_str(text, &|k| env.get(k).cloned())
}

fn load(text: &str) -> Result<Config, Vec<ConfigError>> {
    load_with(text, &[])
}

fn errors(text: &str) -> Vec<String> {
    load(text)
        .unwrap_err()
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

const MINIMAL: &str = "
upstream:
  groups:
    default:
      servers:
        - {id: a, url: http://127.0.0.1:3001/mcp}
";

#[test]
fn issue_example_parses() {
    let c = load(
        "
server:
  host: 0.0.0.0
  port: 8080
  threads: 2
upstream:
  groups:
    files:
      strategy: round_robin
      servers:
        - id: files-1
          url: http://127.0.0.1:3001/mcp
          weight: 100
        - id: files-2
          url: http://127.0.0.1:3002/mcp
routes:
  - path: /mcp/files
    group: files
limits:
  max_request_body: 4MiB
logging:
  level: info
  format: json
",
    )
    .unwrap();
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.upstream.groups["files"].servers.len(), 2);
    assert_eq!(c.upstream.groups["files"].servers[1].weight, 100);
    assert_eq!(c.routes[0].path, "/mcp/files");
    assert_eq!(c.limits.max_request_body.0, 4 << 20);
    assert_eq!(c.logging.format, LogFormat::Json);
}

#[test]
fn defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.server.host, "0.0.0.0");
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.limits.max_request_body.0, 4 << 20);
    assert_eq!(c.timeouts.stream_idle, units::Dur::secs(300));
    assert_eq!(c.upstream.groups["default"].strategy, Strategy::RoundRobin);
    assert!(c.upstream.groups["default"].tls.verify);
}

#[test]
fn every_error_is_reported_with_its_path() {
    let errs = errors(
        "
server:
  port: 99999
  threads: 0
  colour: blue
upstream:
  groups:
    files:
      strategy: fastest
      servers:
        - {id: f1, url: http://127.0.0.1:3001/mcp}
        - {id: f1, url: ftp://127.0.0.1/mcp, weight: 0}
routes:
  - {path: mcp/files, group: files}
  - {path: /mcp/web, group: web}
limits:
  max_request_body: 4 parsecs
timeouts:
  connect: soon
",
    );
    let expect = [
        "server.port:",
        "server.colour: unknown key",
        "upstream.groups.files.strategy: unknown variant `fastest`",
        "limits.max_request_body: unknown size unit",
        "timeouts.connect: invalid duration",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    // Structural errors are reported together; semantic ones follow once they are fixed.
    let errs = errors(
        "
server:
  threads: 0
upstream:
  groups:
    files:
      servers:
        - {id: f1, url: http://127.0.0.1:3001/mcp}
        - {id: f1, url: ftp://127.0.0.1/mcp, weight: 0}
        - {url: http://127.0.0.1:3001/mcp}
    empty: {}
routes:
  - {path: mcp/files, group: files}
  - {path: /mcp/web, group: web}
  - {path: /health, group: files}
",
    );
    let expect = [
        "server.threads: must be at least 1",
        "upstream.groups.files.servers[1].id: duplicate server id",
        "upstream.groups.files.servers[1].url: \"ftp://127.0.0.1/mcp\": unsupported scheme",
        "upstream.groups.files.servers[1].weight: must be between 1 and 10000",
        "upstream.groups.files.servers[2].id: is required",
        "upstream.groups.files.servers[2].url: another server",
        "upstream.groups.empty.servers: a group needs at least one server",
        "routes[0].path: \"mcp/files\" must start with '/'",
        "routes[1].group: no upstream group named \"web\"",
        "routes[2].path: /health is served by the gateway itself",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|x| x.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn no_routes_needs_a_default_group() {
    let errs =
        errors("upstream: {groups: {files: {servers: [{id: a, url: 'http://127.0.0.1:1/mcp'}]}}}");
    assert!(
        errs[0].starts_with("routes: no routes are configured"),
        "{errs:?}"
    );
}

#[test]
fn durations_accept_seconds_and_units() {
    let c = load(&format!(
        "{MINIMAL}\ntimeouts: {{connect: 2, stream_idle: 500ms}}"
    ))
    .unwrap();
    assert_eq!(c.timeouts.connect, units::Dur::secs(2));
    assert_eq!(c.timeouts.stream_idle.0.as_millis(), 500);
    let c = load(&format!("{MINIMAL}\ntimeouts: {{connect: \"30s\"}}")).unwrap();
    assert_eq!(c.timeouts.connect, units::Dur::secs(30));
}

#[test]
fn env_expansion_and_overrides() {
    let text = "
server: {host: 127.0.0.1, port: 9000}
upstream:
  groups:
    default:
      servers:
        - {id: a, url: 'http://${UP_HOST}:${UP_PORT:-3001}/mcp'}
";
    let c = load_with(
        text,
        &[
            ("UP_HOST", "127.0.0.1"),
            ("MCP_GATEWAY_PORT", "9100"),
            ("MCP_GATEWAY_HOST", "::1"),
            ("MCP_GATEWAY_ADMIN_PORT", "9191"),
            ("MCP_GATEWAY_LOG_LEVEL", "debug"),
        ],
    )
    .unwrap();
    assert_eq!(c.admin.port, 9191);
    assert_eq!(
        c.upstream.groups["default"].servers[0].url,
        "http://127.0.0.1:3001/mcp"
    );
    assert_eq!(c.server.port, 9100);
    assert_eq!(c.server.host, "::1");
    assert_eq!(c.logging.level, LogLevel::Debug);

    let errs = load(text).unwrap_err();
    assert_eq!(errs[0].path, "upstream.groups.default.servers[0].url");
    assert!(errs[0].message.contains("UP_HOST is not set"));

    let errs = load_with(MINIMAL, &[("MCP_GATEWAY_PORT", "http")]).unwrap_err();
    assert_eq!(errs[0].path, "server.port");
}

#[test]
fn invalid_yaml_names_the_line() {
    let errs = load("server:\n  port: [1,\n").unwrap_err();
    assert!(errs[0].path.starts_with("line "), "{errs:?}");
    assert!(errs[0].message.contains("invalid YAML"));
}

#[test]
fn session_keys_are_checked() {
    let errs = load(&format!("{MINIMAL}\nsessions: {{keys: [short]}}")).unwrap_err();
    assert_eq!(errs[0].path, "sessions.keys[0]");
}

#[test]
fn default_config_is_valid() {
    let c = load(DEFAULT_CONFIG).unwrap();
    assert_eq!(c.server.host, "127.0.0.1");
    assert!(c.upstream.groups.contains_key("default"));
}

#[test]
fn fleet_settings_parse() {
    let c = load(
        "
upstream:
  connection_pool: {max_idle_per_host: 16, idle_timeout: 90s}
  groups:
    default:
      retries: 1
      resolve_interval: 0
      health_check: {kind: mcp, method: server/discover, interval: 5s, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 2}
      circuit_breaker: {failure_threshold: 3, open_for: 10s, half_open_requests: 2}
      servers:
        - {id: a, url: http://files.internal:3001/mcp}
timeouts: {request: 30s}
sessions: {ttl: 1h}
",
    )
    .unwrap();
    let g = &c.upstream.groups["default"];
    let hc = g.health_check.as_ref().unwrap();
    assert_eq!(hc.method, ProbeMethod::ServerDiscover);
    assert_eq!(hc.timeout.0, std::time::Duration::from_millis(500));
    assert_eq!(g.circuit_breaker.half_open_requests, 2);
    assert!(g.resolve_interval.0.is_zero());
    assert_eq!(c.upstream.connection_pool.max_idle_per_host, 16);
    assert_eq!(c.timeouts.request.0.as_secs(), 30);
    assert_eq!(c.sessions.ttl.0.as_secs(), 3600);

    // Defaults: no checks, breaker on, two retries.
    let c = load(MINIMAL).unwrap();
    let g = &c.upstream.groups["default"];
    assert!(g.health_check.is_none());
    assert_eq!((g.retries, g.circuit_breaker.failure_threshold), (2, 5));
}

#[test]
fn fleet_settings_are_checked() {
    let errs = errors(
        "
upstream:
  groups:
    default:
      health_check: {kind: mcp, method: pong}
      servers:
        - {id: a, url: http://127.0.0.1:3001/mcp}
",
    );
    assert_eq!(
        errs,
        ["upstream.groups.default.health_check.method: unknown variant `pong`, expected `ping` or `server/discover`"]
    );
    let errs = errors(
        "
upstream:
  groups:
    default:
      health_check: {kind: mcp, path: /x, interval: 1s, timeout: 2s, healthy_threshold: 0, unhealthy_threshold: 0}
      circuit_breaker: {failure_threshold: 1, open_for: 0, half_open_requests: 0}
      servers:
        - {id: a, url: http://127.0.0.1:3001/mcp}
timeouts: {request: 0}
",
    );
    let has = |p: &str| errs.iter().any(|e| e.starts_with(p));
    for path in [
        "upstream.groups.default.health_check.path",
        "upstream.groups.default.health_check.timeout",
        "upstream.groups.default.health_check.healthy_threshold",
        "upstream.groups.default.health_check.unhealthy_threshold",
        "upstream.groups.default.circuit_breaker.open_for",
        "upstream.groups.default.circuit_breaker.half_open_requests",
        "timeouts.request",
    ] {
        assert!(has(path), "{path} missing in {errs:#?}");
    }
    assert_eq!(errs.len(), 7, "{errs:#?}");
}

#[test]
fn admin_off_loopback_needs_a_token() {
    let with = |admin: &str| format!("{MINIMAL}admin:\n{admin}");
    let errs = errors(&with("  host: 0.0.0.0\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("admin.host: 0.0.0.0 is not a loopback address"));
    let errs = errors(&with("  host: 0.0.0.0\n  token: short\n"));
    assert!(
        errs[0].starts_with("admin.token: must be at least 16"),
        "{errs:?}"
    );
    load(&with("  host: 0.0.0.0\n  token: 0123456789abcdef\n")).unwrap();
    load(&with("  host: \"::1\"\n")).unwrap();
    // An unset ${VAR:-} token is no token.
    let errs = errors(&with("  host: 0.0.0.0\n  token: \"\"\n"));
    assert!(errs[0].starts_with("admin.host"), "{errs:?}");
    let errs = errors(&with(
        "  port: 8080\n  host: 0.0.0.0\n  token: 0123456789abcdef\n",
    ));
    assert!(errs[0].starts_with("admin.port: must differ"), "{errs:?}");
    load(&with("  enabled: false\n  host: 0.0.0.0\n")).unwrap();
}

#[test]
fn tracing_settings_are_checked() {
    let with = |t: &str| format!("{MINIMAL}tracing:\n{t}");
    load(&with(
        "  otlp_endpoint: http://127.0.0.1:4318\n  sample_ratio: 0.25\n",
    ))
    .unwrap();
    let errs = errors(&with("  otlp_endpoint: https://c:4318\n"));
    assert!(
        errs[0].contains("https:// collectors are not supported"),
        "{errs:?}"
    );
    let errs = errors(&with(
        "  otlp_endpoint: c:4318\n  sample_ratio: 2\n  service_name: \"\"\n",
    ));
    assert_eq!(errs.len(), 3, "{errs:?}");
    // An unset ${VAR:-} endpoint means no tracing.
    load(&with("  otlp_endpoint: \"\"\n")).unwrap();
}

#[test]
fn upstream_auth_is_checked() {
    let with = |auth: &str| {
        format!(
            "upstream:\n  groups:\n    default:\n      upstream_auth: {auth}\n      servers:\n        - {{id: a, url: http://127.0.0.1:3001/mcp}}\n"
        )
    };
    let c = load(&with("{bearer: t0k}")).unwrap();
    let (name, value) = c.upstream.groups["default"]
        .upstream_auth
        .as_ref()
        .unwrap()
        .header()
        .unwrap();
    assert_eq!(name, "authorization");
    assert_eq!(value, "Bearer t0k");
    load(&with("{header: X-Api-Key, value: k}")).unwrap();
    for (bad, why) in [
        ("{bearer: t, header: X-K, value: v}", "set either bearer"),
        ("{header: X-K}", "set either bearer"),
        (
            "{header: \"bad name\", value: v}",
            "not a valid header name",
        ),
        ("{header: Host, value: v}", "managed by the gateway"),
        ("{bearer: \"a\\nb\"}", "not allowed in a header"),
    ] {
        let errs = errors(&with(bad));
        assert!(
            errs.len() == 1
                && errs[0].starts_with("upstream.groups.default.upstream_auth: ")
                && errs[0].contains(why),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn header_limit_has_a_floor() {
    let errs = errors(&format!("{MINIMAL}limits:\n  max_request_headers: 100\n"));
    assert!(
        errs[0].starts_with("limits.max_request_headers: must be at least 1KiB"),
        "{errs:?}"
    );
    let c = load(&format!(
        "{MINIMAL}limits:\n  max_request_headers: 8KiB\n  requests_per_connection: 100\n"
    ))
    .unwrap();
    assert_eq!(
        (
            c.limits.max_request_headers.0,
            c.limits.requests_per_connection
        ),
        (8192, 100)
    );
}

#[test]
fn rate_limits_may_share_counters_through_redis() {
    let c = load(&format!(
        "{MINIMAL}security:\n  rate_limiting:\n    redis: \"redis://:pw@cache:6380/1\"\n    redis_timeout: 250ms\n    max_concurrent_streams: 4\n"
    ))
    .unwrap();
    let rl = &c.security.rate_limiting;
    assert_eq!(rl.redis_url(), Some("redis://:pw@cache:6380/1"));
    assert_eq!(rl.redis_key_prefix, "mcp-gateway:rl:");
    assert_eq!(rl.redis_timeout.0, std::time::Duration::from_millis(250));
    assert_eq!(rl.max_concurrent_streams, 4);
    // Defaults: no Redis, a short timeout, no stream cap; an empty URL is none.
    let d = load_with(
        &format!("{MINIMAL}security:\n  rate_limiting:\n    redis: \"${{REDIS_URL:-}}\"\n"),
        &[],
    )
    .unwrap();
    let rl = &d.security.rate_limiting;
    assert_eq!(rl.redis_url(), None);
    assert_eq!(rl.redis_timeout.0, std::time::Duration::from_millis(100));
    assert_eq!(rl.max_concurrent_streams, 0);
}

#[test]
fn a_bad_redis_url_is_reported_with_its_path_and_no_password() {
    for (url, why) in [
        ("http://cache:6379", "redis:// or rediss://"),
        ("redis://:s3cret@cache:port/0", "not a valid Redis URL"),
    ] {
        let errs = errors(&format!(
            "{MINIMAL}security:\n  rate_limiting:\n    redis: \"{url}\"\n    redis_timeout: 0s\n"
        ));
        assert_eq!(errs.len(), 2, "{errs:?}");
        // The URL is parsed with the store's client (a runtime check): it comes second.
        let (url_err, timeout_err) = (&errs[1], &errs[0]);
        assert!(
            url_err.starts_with("security.rate_limiting.redis: ") && url_err.contains(why),
            "{url}: {errs:?}"
        );
        assert!(!url_err.contains("s3cret"), "{errs:?}");
        assert!(
            timeout_err.starts_with("security.rate_limiting.redis_timeout: must be greater than 0"),
            "{errs:?}"
        );
    }
}

#[test]
fn listener_tls_is_checked() {
    let errs = errors(&format!(
        "{MINIMAL}server:\n  tls:\n    cert: /nonexistent/cert.pem\n    client_auth: optional\nsecurity:\n  auth:\n    - client_cert: true\n"
    ));
    for want in [
        "server.tls.cert: cannot read PEM certificates from \"/nonexistent/cert.pem\"",
        "server.tls.key: is required",
        "server.tls.client_auth: needs client_ca",
        "security.auth[0].client_cert: needs server.tls.client_ca",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{want:?} not in {errs:?}"
        );
    }
    // A client-certificate rule without TLS at all.
    let errs = errors(&format!(
        "{MINIMAL}security:\n  auth:\n    - client_cert: true\n"
    ));
    assert_eq!(
        errs,
        ["security.auth[0].client_cert: needs server.tls.client_ca: client certificates are verified against it"]
    );
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.limits.request_head_timeout.0.as_secs(), 10);
    assert!(c.server.tls.is_none());
}

#[test]
fn reload_interval_has_a_floor() {
    let errs = errors(&format!(
        "{MINIMAL}reload:\n  watch: true\n  interval: 10ms\n"
    ));
    assert!(
        errs.len() == 1 && errs[0].starts_with("reload.interval: 10ms is too short"),
        "{errs:?}"
    );
    assert!(load(&format!("{MINIMAL}reload:\n  interval: 100ms\n")).is_ok());
}

#[test]
fn auth_throttle_and_tracked_keys_are_read_and_checked() {
    let c = load(&format!(
        "{MINIMAL}security:\n  auth_throttle: {{max_failures: 3, window: 1m, max_concurrent_verifications: 2, cache_ttl: 0s, max_tracked_keys: 50}}\n  rate_limiting:\n    max_tracked_keys: 1000\n"
    ))
    .unwrap();
    let t = &c.security.auth_throttle;
    assert_eq!((t.max_failures, t.max_concurrent_verifications), (3, 2));
    assert_eq!(t.window.0, std::time::Duration::from_secs(60));
    assert!(t.cache_ttl.0.is_zero());
    assert_eq!(t.max_tracked_keys, 50);
    assert_eq!(c.security.rate_limiting.max_tracked_keys, 1000);
    // Defaults: on, with a five-minute window and a one-minute cache.
    let d = load(MINIMAL).unwrap().security.auth_throttle;
    assert_eq!(
        (
            d.max_failures,
            d.window.0.as_secs(),
            d.cache_ttl.0.as_secs()
        ),
        (10, 300, 60)
    );
    let errs = errors(&format!(
        "{MINIMAL}security:\n  auth_throttle: {{window: 0s, max_tracked_keys: 0}}\n  rate_limiting:\n    max_tracked_keys: 0\n"
    ))
    .join("\n");
    for needle in [
        "security.auth_throttle.window: must be greater than 0",
        "security.auth_throttle.max_tracked_keys: must be at least 1",
        "security.rate_limiting.max_tracked_keys: must be at least 1",
    ] {
        assert!(errs.contains(needle), "{needle} not in {errs}");
    }
    let errs = errors(&format!(
        "{MINIMAL}security:\n  auth_throttle: {{max_failure: 3}}\n"
    ))
    .join("\n");
    assert!(
        errs.contains("security.auth_throttle.max_failure"),
        "{errs}"
    );
}
