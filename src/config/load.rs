//! Reading a config: YAML text → `${ENV}` expansion → `MCP_GATEWAY_*` overrides →
//! typed tree → the checks this tree can make alone (shape, values, references between
//! its parts). Every problem is collected with its path. The checks that need runtime
//! objects (keys, certificates, compiled policies) are `state::check`'s; `state::load`
//! runs both.

use super::units::Dur;
use super::yaml::{ConfigError, Errors, FromYaml, Path};
use super::{Config, HealthKind};
use crate::mcp::session::SessionKeys;
use serde_yaml_ng::Value;
use std::collections::HashSet;

/// Paths the gateway answers itself on the proxy port; routes may not take them.
pub const RESERVED_PATHS: [&str; 3] = ["/health", "/readiness", "/liveness"];

/// Largest server weight (keeps the smooth round-robin schedule small).
pub const MAX_WEIGHT: u32 = 10_000;

/// A config file's text.
pub fn read_file(path: &str) -> Result<String, Vec<ConfigError>> {
    std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            path: path.to_string(),
            message: format!("cannot read config file: {e}"),
        }]
    })
}

/// Parse config text and make this module's checks; `env` looks up environment variables.
pub fn load_str(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigError>> {
    load_str_and(text, env, &|_| Vec::new())
}

/// [`load_str`], then `more` (the checks of a layer above) on a tree whose shape is
/// right, so one run lists every problem.
pub fn load_str_and(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    more: &dyn Fn(&Config) -> Vec<ConfigError>,
) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Errors::default();
    let mut root: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "(file)".into());
            return Err(vec![ConfigError {
                path: at,
                message: format!("invalid YAML: {e}"),
            }]);
        }
    };
    expand_env(&mut root, &Path::root(), env, &mut errs);
    apply_overrides(&mut root, env, &mut errs);
    let mut config = Config::from_yaml(&root, &Path::root(), &mut errs).unwrap_or_default();
    if errs.is_empty() {
        validate(&config, &mut errs);
        super::stdio::assign_urls(&mut config, &mut errs);
        errs.0.extend(more(&config));
    }
    if errs.is_empty() {
        Ok(config)
    } else {
        Err(errs.0)
    }
}

/// Replace `${NAME}` (and `${NAME:-default}`) in every string value.
fn expand_env(v: &mut Value, path: &Path, env: &dyn Fn(&str) -> Option<String>, errs: &mut Errors) {
    match v {
        Value::String(s) if s.contains("${") => match expand_str(s, env) {
            Ok(x) => *s = x,
            Err(m) => errs.push(path, m),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &path.index(i), env, errs);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let p = path.key(k.as_str().unwrap_or("?"));
                expand_env(item, &p, env, errs);
            }
        }
        _ => {}
    }
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in {s:?}"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid environment variable name {name:?} in {s:?}"
            ));
        }
        match (env(name), default) {
            (Some(val), _) => out.push_str(&val),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `MCP_GATEWAY_HOST`, `MCP_GATEWAY_PORT`, `MCP_GATEWAY_ADMIN_PORT` and
/// `MCP_GATEWAY_LOG_LEVEL` win over the file.
fn apply_overrides(root: &mut Value, env: &dyn Fn(&str) -> Option<String>, errs: &mut Errors) {
    let overrides = [
        ("MCP_GATEWAY_HOST", "server", "host"),
        ("MCP_GATEWAY_PORT", "server", "port"),
        ("MCP_GATEWAY_ADMIN_PORT", "admin", "port"),
        ("MCP_GATEWAY_LOG_LEVEL", "logging", "level"),
    ];
    for (var, section, key) in overrides {
        let Some(raw) = env(var) else { continue };
        // Parse as a YAML scalar so "8080" becomes a number like it would in the file.
        let value: Value = serde_yaml_ng::from_str(&raw).unwrap_or(Value::String(raw.clone()));
        if root.is_null() {
            *root = Value::Mapping(Default::default());
        }
        let Some(top) = root.as_mapping_mut() else {
            return;
        };
        let entry = top
            .entry(Value::String(section.into()))
            .or_insert_with(|| Value::Mapping(Default::default()));
        match entry.as_mapping_mut() {
            Some(m) => {
                m.insert(Value::String(key.into()), value);
            }
            None => errs.push(
                &Path::root().key(section),
                format!("expected a mapping (needed by {var})"),
            ),
        }
    }
}

/// An MCP endpoint's path (a route's or a virtual server's): absolute, not one the
/// gateway answers itself, and not taken by another (`taken` records it).
pub(super) fn endpoint_path<'c>(path: &'c str, taken: &mut HashSet<&'c str>) -> Result<(), String> {
    if !path.starts_with('/') {
        Err(format!("{path:?} must start with '/'"))
    } else if RESERVED_PATHS.contains(&path) {
        Err(format!("{path} is served by the gateway itself"))
    } else if !taken.insert(path) {
        Err(format!(
            "{path:?} is already a route or a virtual server's path"
        ))
    } else {
        Ok(())
    }
}

/// A path the config serves: a route or a virtual server (`/mcp` when neither is
/// configured).
fn known_route(c: &Config, route: &str) -> bool {
    if c.routes.is_empty() && c.virtual_servers.is_empty() {
        route == super::DEFAULT_PATH
    } else {
        c.routes.iter().any(|r| r.path == route)
            || c.virtual_servers.iter().any(|v| v.path == route)
    }
}

/// Checks that need more than one field or the outside world.
fn validate(c: &Config, errs: &mut Errors) {
    super::cache::validate(c, errs);
    super::transform::validate(c, errs);
    let root = Path::root();
    let server = root.key("server");
    if c.server.host.parse::<std::net::IpAddr>().is_err() {
        errs.push(
            &server.key("host"),
            format!(
                "{:?} is not an IP address (use e.g. 0.0.0.0, 127.0.0.1 or ::)",
                c.server.host
            ),
        );
    }
    if c.server.port == 0 {
        errs.push(&server.key("port"), "must be between 1 and 65535");
    }
    if c.server.max_connections == Some(0) {
        errs.push(
            &server.key("max_connections"),
            "must be at least 1 (leave it out for half the open-file limit)",
        );
    }
    if c.server.keepalive_timeout.0.is_zero() {
        errs.push(
            &server.key("keepalive_timeout"),
            "must be greater than 0 (an idle connection must end some time)",
        );
    }
    if c.limits.request_body_timeout.0.is_zero() {
        errs.push(
            &root.key("limits").key("request_body_timeout"),
            "must be greater than 0 (a stalled body must end some time)",
        );
    }
    if c.server.threads == 0 {
        errs.push(&server.key("threads"), "must be at least 1");
    }

    let groups = root.key("upstream").key("groups");
    if c.upstream.groups.is_empty() {
        errs.push(&groups, "at least one upstream group is required");
    }
    for (name, g) in &c.upstream.groups {
        let gp = groups.key(name);
        if g.servers.is_empty() {
            errs.push(&gp.key("servers"), "a group needs at least one server");
        }
        if let Some(ca) = &g.tls.ca_file {
            if let Err(e) = std::fs::metadata(ca) {
                errs.push(
                    &gp.key("tls").key("ca_file"),
                    format!("cannot read {ca:?}: {e}"),
                );
            }
        }
        // The bridged TLS connections (wss://, sse+https://) verify against the bundled
        // web PKI roots with the URL's name: settings that would say otherwise are
        // refused, not ignored.
        let bridged_tls = g
            .servers
            .iter()
            .find(|s| s.url.starts_with("wss://") || s.url.starts_with("sse+https://"));
        if let (Some(s), true) = (bridged_tls, g.tls != crate::config::TlsConfig::default()) {
            errs.push(
                &gp.key("tls"),
                format!(
                    "does not apply to server {:?} ({}): wss:// and sse+https:// servers are verified against the bundled web PKI roots; put them in a group without tls settings",
                    s.id,
                    s.url.split("://").next().unwrap_or_default()
                ),
            );
        }
        let mut ids = HashSet::new();
        for (i, s) in g.servers.iter().enumerate() {
            let sp = gp.key("servers").index(i);
            if s.id.is_empty() {
                errs.push(&sp.key("id"), "is required");
            } else if s.id.len() > 255 {
                errs.push(&sp.key("id"), "must be at most 255 bytes");
            } else if !ids.insert(s.id.as_str()) {
                errs.push(
                    &sp.key("id"),
                    format!("duplicate server id {:?} in group {name:?}", s.id),
                );
            }
            if s.url.is_empty() && s.command.is_empty() {
                errs.push(
                    &sp.key("url"),
                    "is required (or a command for a stdio server)",
                );
            }
            super::stdio::check(s, &sp, errs);
            if !(1..=MAX_WEIGHT).contains(&s.weight) {
                errs.push(
                    &sp.key("weight"),
                    format!("must be between 1 and {MAX_WEIGHT}"),
                );
            }
        }
        if let Some(hc) = &g.health_check {
            let hp = gp.key("health_check");
            for (key, d) in [("interval", hc.interval), ("timeout", hc.timeout)] {
                if d.0.is_zero() {
                    errs.push(&hp.key(key), "must be greater than 0");
                }
            }
            if hc.timeout.0 > hc.interval.0 {
                errs.push(
                    &hp.key("timeout"),
                    format!(
                        "{:?} is longer than the interval ({:?}); checks would overlap",
                        hc.timeout.0, hc.interval.0
                    ),
                );
            }
            for (key, n) in [
                ("healthy_threshold", hc.healthy_threshold),
                ("unhealthy_threshold", hc.unhealthy_threshold),
            ] {
                if n == 0 {
                    errs.push(&hp.key(key), "must be at least 1");
                }
            }
            match (&hc.path, hc.kind) {
                (Some(p), HealthKind::Http) if !p.starts_with('/') => {
                    errs.push(&hp.key("path"), format!("{p:?} must start with '/'"))
                }
                (Some(_), HealthKind::Tcp | HealthKind::Mcp) => errs.push(
                    &hp.key("path"),
                    "only the http kind has a path (mcp checks POST to the server URL)",
                ),
                _ => {}
            }
        }
        if let Some(auth) = &g.upstream_auth {
            if let Err(e) = auth.header() {
                errs.push(&gp.key("upstream_auth"), e);
            }
        }
        if let Some(fwd) = &g.forward_identity {
            let fp = gp.key("forward_identity");
            if fwd.secret.len() < 32 {
                errs.push(
                    &fp.key("secret"),
                    "must be at least 32 bytes, shared with the servers (e.g. `openssl rand -base64 48`)",
                );
            }
            if http::HeaderName::from_bytes(fwd.header.as_bytes()).is_err() {
                errs.push(
                    &fp.key("header"),
                    format!("{:?} is not a header name", fwd.header),
                );
            }
            if fwd.ttl.0.is_zero() {
                errs.push(&fp.key("ttl"), "must be greater than 0");
            }
        }
        let cb = &g.circuit_breaker;
        if cb.failure_threshold > 0 {
            let bp = gp.key("circuit_breaker");
            if cb.open_for.0.is_zero() {
                errs.push(&bp.key("open_for"), "must be greater than 0");
            }
            if cb.half_open_requests == 0 {
                errs.push(&bp.key("half_open_requests"), "must be at least 1");
            }
        }
    }

    let routes = root.key("routes");
    let mut paths = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let rp = routes.index(i);
        if let Err(e) = endpoint_path(&r.path, &mut paths) {
            errs.push(&rp.key("path"), e);
        }
        if r.group.is_empty() {
            errs.push(&rp.key("group"), "is required");
        } else if !c.upstream.groups.contains_key(&r.group) {
            errs.push(
                &rp.key("group"),
                format!("no upstream group named {:?}", r.group),
            );
        }
    }
    super::federation::validate(c, errs);
    if c.routes.is_empty()
        && c.virtual_servers.is_empty()
        && !c.upstream.groups.is_empty()
        && !c.upstream.groups.contains_key("default")
    {
        errs.push(
            &routes,
            "no routes are configured, so /mcp goes to the group named \"default\", which does not exist (add routes or a \"default\" group)",
        );
    }

    if c.reload.interval < Dur::millis(100) {
        errs.push(
            &root.key("reload").key("interval"),
            format!(
                "{:?} is too short: the config file is checked at most every 100ms",
                c.reload.interval.0
            ),
        );
    }
    if c.limits.max_request_headers.0 < 1024 {
        errs.push(
            &root.key("limits").key("max_request_headers"),
            "must be at least 1KiB",
        );
    }
    let positive = [
        (
            "limits",
            "max_request_body",
            c.limits.max_request_body.0 == 0,
        ),
        (
            "limits",
            "max_websocket_message",
            c.limits.max_websocket_message.is_some_and(|m| m.0 == 0),
        ),
        ("timeouts", "connect", c.timeouts.connect.0.is_zero()),
        ("timeouts", "request", c.timeouts.request.0.is_zero()),
        (
            "timeouts",
            "stream_idle",
            c.timeouts.stream_idle.0.is_zero(),
        ),
    ];
    for (section, key, _) in positive.into_iter().filter(|(_, _, zero)| *zero) {
        errs.push(&root.key(section).key(key), "must be greater than 0");
    }
    let client_ca = c.server.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    for (i, rule) in c.security.auth.iter().enumerate() {
        if rule.client_cert && !client_ca {
            errs.push(
                &root.key("security").key("auth").index(i).key("client_cert"),
                "needs server.tls.client_ca: client certificates are verified against it",
            );
        }
    }
    let security = root.key("security");
    let rule_routes = c
        .security
        .auth
        .iter()
        .map(|r| &r.routes)
        .enumerate()
        .map(|(i, r)| (security.key("auth").index(i), r))
        .chain(
            c.security
                .policies
                .iter()
                .enumerate()
                .map(|(i, r)| (security.key("policies").index(i), &r.routes)),
        );
    for (at, routes) in rule_routes {
        for (j, route) in routes.iter().enumerate() {
            if route.starts_with('/') && !known_route(c, route) {
                errs.push(
                    &at.key("routes").index(j),
                    format!("{route:?} is not a configured route"),
                );
            }
        }
    }
    let rl = root.key("security").key("rate_limiting").key("rules");
    for (i, r) in c.security.rate_limiting.rules.iter().enumerate() {
        if r.requests_per_minute == 0 {
            errs.push(
                &rl.index(i).key("requests_per_minute"),
                "must be at least 1",
            );
        }
        for (j, route) in r.routes.iter().enumerate() {
            if !known_route(c, route) {
                errs.push(
                    &rl.index(i).key("routes").index(j),
                    format!("{route:?} is not a configured route"),
                );
            }
        }
    }
    let rlp = root.key("security").key("rate_limiting");
    let rate_limiting = &c.security.rate_limiting;
    if rate_limiting.max_tracked_keys == 0 {
        errs.push(&rlp.key("max_tracked_keys"), "must be at least 1");
    }
    let throttle = &c.security.auth_throttle;
    let atp = root.key("security").key("auth_throttle");
    if throttle.max_failures > 0 && throttle.window.0.is_zero() {
        errs.push(
            &atp.key("window"),
            "must be greater than 0 (or set max_failures: 0 to turn the lockout off)",
        );
    }
    if throttle.max_tracked_keys == 0 {
        errs.push(&atp.key("max_tracked_keys"), "must be at least 1");
    }
    if rate_limiting.redis_url().is_some() && rate_limiting.redis_timeout.0.is_zero() {
        errs.push(&rlp.key("redis_timeout"), "must be greater than 0");
    }
    let tracing = root.key("tracing");
    if let Some(endpoint) = c.tracing.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        match endpoint.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.host().is_some() => {}
            Ok(u) if u.scheme_str() == Some("https") => errs.push(
                &tracing.key("otlp_endpoint"),
                "https:// collectors are not supported yet: send to a local collector over http://",
            ),
            _ => errs.push(
                &tracing.key("otlp_endpoint"),
                format!("{endpoint:?} is not an http:// URL (e.g. http://127.0.0.1:4318)"),
            ),
        }
    }
    if !(0.0..=1.0).contains(&c.tracing.sample_ratio) {
        errs.push(&tracing.key("sample_ratio"), "must be between 0.0 and 1.0");
    }
    if c.tracing.service_name.is_empty() {
        errs.push(&tracing.key("service_name"), "must not be empty");
    }
    let admin = root.key("admin");
    if c.admin.enabled {
        match c.admin.host.parse::<std::net::IpAddr>() {
            Err(_) => errs.push(
                &admin.key("host"),
                format!("{:?} is not an IP address", c.admin.host),
            ),
            Ok(ip) if !ip.is_loopback() && c.admin.token().is_none() => errs.push(
                &admin.key("host"),
                format!(
                    "{ip} is not a loopback address: the admin API may listen there only with admin.token set"
                ),
            ),
            Ok(_) => {}
        }
        if c.admin.port == 0 {
            errs.push(&admin.key("port"), "must be between 1 and 65535");
        } else if c.admin.port == c.server.port && c.admin.host == c.server.host {
            errs.push(&admin.key("port"), "must differ from server.port");
        }
        if c.admin.token().is_some_and(|t| t.len() < 16) {
            errs.push(
                &admin.key("token"),
                "must be at least 16 characters (e.g. `openssl rand -hex 32`)",
            );
        }
    }
    // The same reading of the keys as at start (empty entries skipped).
    let keys = root.key("sessions").key("keys");
    if let Err(problems) = SessionKeys::decode_keys(&c.sessions.keys) {
        for (i, e) in problems {
            errs.push(&keys.index(i), e);
        }
    }
}
