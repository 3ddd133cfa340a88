//! The live configuration: everything the request path reads, swapped whole by a reload.
//!
//! A reload (SIGHUP, `POST /api/v1/reload`, or a changed file with `reload.watch`) reads
//! and validates the file completely, builds a new [`State`] beside the running one,
//! resolves its servers, then swaps it in with one atomic store. Requests in flight keep
//! the state they started with (each holds its own `Arc`); new requests see the new one.
//! Servers that remain (same group, id, URL, weight and group settings) are carried over
//! as they are, with their health, breaker, in-flight count and sealed sessions. A
//! change that needs new listeners or a new process (host, port, TLS, threads, work
//! stealing, the admin listener, tracing, ...) is refused with a message saying to use
//! the upgrade.

use crate::config::{self, Config};
use crate::state::State;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the running config came from: shown (with its hash) by the admin API.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file path, or "(embedded default config)".
    pub name: String,
    pub text: String,
}

/// The running config and where it came from.
pub struct Loaded {
    pub config: Config,
    pub source: ConfigSource,
    /// Hex SHA-256 of the file's text.
    pub sha256: String,
}

impl Loaded {
    pub fn new(config: Config, source: ConfigSource) -> Loaded {
        let digest = Sha256::digest(source.text.as_bytes());
        Loaded {
            config,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
            source,
        }
    }
}

pub struct Live {
    state: ArcSwap<State>,
    loaded: ArcSwap<Loaded>,
    /// The config file (`None`: the embedded default config).
    path: Option<String>,
    /// `--log-level`, which wins over the file's `logging.level` across reloads.
    level_override: Option<log::LevelFilter>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Bumped by every reload: background upkeep restarts on the new groups.
    generation: tokio::sync::watch::Sender<u64>,
    /// SIGTERM was received: readiness answers 503 while the process drains.
    draining: AtomicBool,
    /// SIGQUIT handed the listeners to a new process: for this long once shutdown has
    /// begun, client connections still open may send one last request.
    handoff: std::sync::OnceLock<std::time::Duration>,
    /// When that linger ends (fixed by the first to ask, once shutdown has begun).
    handoff_deadline: std::sync::OnceLock<std::time::Instant>,
}

/// What a successful reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub source: String,
    pub sha256: String,
    /// False when the file had not changed (nothing was rebuilt).
    pub changed: bool,
    pub routes: usize,
    pub groups: usize,
    /// Servers carried over with their health and sessions.
    pub servers_kept: usize,
    /// Servers built anew.
    pub servers_new: usize,
}

impl Live {
    pub fn new(
        state: Arc<State>,
        loaded: Loaded,
        path: Option<String>,
        level_override: Option<log::LevelFilter>,
    ) -> Live {
        Live {
            state: ArcSwap::new(state),
            loaded: ArcSwap::from_pointee(loaded),
            path,
            level_override,
            reloading: tokio::sync::Mutex::new(()),
            generation: tokio::sync::watch::channel(0).0,
            draining: AtomicBool::new(false),
            handoff: std::sync::OnceLock::new(),
            handoff_deadline: std::sync::OnceLock::new(),
        }
    }

    /// The current state (an `Arc` the caller keeps for the whole request).
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Told on every reload.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The listeners go to a new process; once shutdown begins, open client connections
    /// linger `for_how_long`.
    pub fn start_handoff(&self, for_how_long: std::time::Duration) {
        let _ = self.handoff.set(for_how_long);
    }

    /// Until when open client connections linger after a handoff (`None`: no handoff).
    /// The linger starts at the first call, made when shutdown begins.
    pub fn handoff_deadline(&self) -> Option<std::time::Instant> {
        let linger = *self.handoff.get()?;
        Some(
            *self
                .handoff_deadline
                .get_or_init(|| std::time::Instant::now() + linger),
        )
    }

    /// Re-read the config file and swap in what it describes. On any problem nothing
    /// changes and every problem is returned (`path: message`).
    pub async fn reload(&self) -> Result<Reloaded, Vec<String>> {
        let _one = self.reloading.lock().await;
        let (config, text) = crate::state::check::load(self.path.as_deref())
            .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let name = self
            .path
            .clone()
            .unwrap_or_else(|| "(embedded default config)".into());
        let old = self.loaded();
        let loaded = Loaded::new(config, ConfigSource { name, text });
        let report = |loaded: &Loaded, state: &State, changed, kept, new| Reloaded {
            source: loaded.source.name.clone(),
            sha256: loaded.sha256.clone(),
            changed,
            routes: state.routes.len(),
            groups: state.groups.0.len(),
            servers_kept: kept,
            servers_new: new,
        };
        if loaded.config == old.config {
            // Same settings (the text may differ in comments): nothing to rebuild.
            return Ok(report(&loaded, &self.state(), false, 0, 0));
        }
        let blockers = needs_upgrade(&old.config, &loaded.config);
        if !blockers.is_empty() {
            return Err(blockers);
        }
        let previous = self.state();
        let (state, kept) = State::build_from(&loaded.config, Some((&old.config, &previous)))
            .map_err(|e| vec![e])?;
        let mut new = 0;
        for group in state.groups.0.values() {
            for problem in group.resolve_all().await {
                log::warn!("{problem}; the server stays down until it resolves");
            }
            new += group.servers().len();
        }
        new -= kept;
        crate::telemetry::reconfigure_logger(&loaded.config.logging, self.level_override);
        let done = report(&loaded, &state, true, kept, new);
        self.state.store(state);
        self.loaded.store(Arc::new(loaded));
        self.generation.send_modify(|g| *g += 1);
        log::info!(
            "config reloaded from {} (sha256 {}): {} route(s), {} group(s), {} server(s) kept, {} new",
            done.source,
            &done.sha256[..12],
            done.routes,
            done.groups,
            done.servers_kept,
            done.servers_new
        );
        Ok(done)
    }
}

/// Settings a reload cannot change: each is `path: what to do instead`.
pub fn needs_upgrade(old: &Config, new: &Config) -> Vec<String> {
    let upgrade = "use the upgrade (mcp-gateway upgrade) or a restart";
    let mut out = Vec::new();
    let mut check = |path: &str, same: bool, why: &str| {
        if !same {
            out.push(format!("{path}: {why}; {upgrade}"));
        }
    };
    let listeners = "a reload cannot change the listeners";
    check("server.host", old.server.host == new.server.host, listeners);
    check("server.port", old.server.port == new.server.port, listeners);
    // Who is trusted and which hosts are served are request-path settings: reloadable.
    let process = |s: &config::ServerConfig| config::ServerConfig {
        trusted_proxies: Vec::new(),
        allowed_hosts: None,
        ..s.clone()
    };
    check(
        "server",
        process(&old.server) == process(&new.server),
        "a reload cannot change the process settings (threads, work stealing, pid file, upgrade socket, runtime dir, grace period, max_connections, keepalive_timeout)",
    );
    check(
        "admin",
        old.admin.enabled == new.admin.enabled
            && old.admin.host == new.admin.host
            && old.admin.port == new.admin.port,
        listeners,
    );
    let (o, n) = (&old.limits, &new.limits);
    for (path, same) in [
        (
            "limits.requests_per_connection",
            o.requests_per_connection == n.requests_per_connection,
        ),
        (
            "limits.request_head_timeout",
            o.request_head_timeout == n.request_head_timeout,
        ),
        (
            "limits.max_connections_per_ip",
            o.max_connections_per_ip == n.max_connections_per_ip,
        ),
    ] {
        check(path, same, "it is a setting of the listener");
    }
    check(
        "upstream.connection_pool",
        old.upstream.connection_pool == new.upstream.connection_pool,
        "the connection pool is sized when the process starts",
    );
    check(
        "tracing",
        old.tracing == new.tracing,
        "the trace exporter is set up when the process starts",
    );
    let (o, n) = (&old.security.rate_limiting, &new.security.rate_limiting);
    let shared = |r: &config::RateLimitingConfig| {
        r.redis_url()
            .filter(|_| !r.rules.is_empty())
            .map(|u| (u.to_string(), r.redis_key_prefix.clone(), r.redis_timeout))
    };
    check(
        "security.rate_limiting.redis",
        shared(n).is_none() || shared(o) == shared(n),
        "the connection to Redis is set up when the process starts",
    );
    check(
        "cache.memory",
        old.cache.memory == new.cache.memory,
        "the cache's memory level is sized when the process starts",
    );
    check(
        "cache.redis",
        old.cache.redis == new.cache.redis,
        "the cache's connection to Redis is set up when the process starts",
    );
    // Listing the same problem twice helps nobody.
    out.dedup();
    if out.iter().any(|p| p.starts_with("server.")) {
        out.retain(|p| !p.starts_with("server: "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::needs_upgrade;

    fn config(extra: &str) -> crate::config::Config {
        crate::config::load_str(
            &format!("upstream: {{groups: {{default: {{servers: [{{id: a, url: 'http://127.0.0.1:1'}}]}}}}}}\n{extra}"),
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn listener_changes_need_the_upgrade() {
        let old = config("server: {port: 8080}\n");
        assert!(needs_upgrade(
            &old,
            &config("server: {port: 8080}\nlogging: {level: debug}\n")
        )
        .is_empty());
        let refused = needs_upgrade(&old, &config("server: {port: 8081}\n"));
        assert_eq!(
            refused,
            ["server.port: a reload cannot change the listeners; use the upgrade (mcp-gateway upgrade) or a restart"]
        );
        let refused = needs_upgrade(
            &old,
            &config("server: {port: 8080, threads: 4}\ntracing: {service_name: x}\n"),
        );
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].starts_with("server: a reload cannot change the process settings"));
        assert!(refused[1].starts_with("tracing: "));
    }

    #[test]
    fn trusted_proxies_and_allowed_hosts_reload() {
        let old = config(
            "server: {port: 8080}
",
        );
        let new = config(
            "server: {port: 8080, trusted_proxies: [10.0.0.0/8], allowed_hosts: [a.example]}
admin: {allowed_hosts: [b.example]}
",
        );
        assert!(needs_upgrade(&old, &new).is_empty());
    }
}
