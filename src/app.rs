//! Config → a running Pingora server: the proxy service on `server.host:server.port`.

use crate::config::Config;
use crate::live::{Live, Loaded};
use crate::mcp::session::SessionKeys;
use crate::proxy::routes::Routes;
use crate::proxy::{Gateway, State};
use crate::upstream::health::Upkeep;
use crate::upstream::Groups;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Process-level switches from the command line.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// `-d`: run in the background.
    pub daemon: bool,
    /// `-u`: take over the listening sockets of a running instance (zero-downtime upgrade).
    pub upgrade: bool,
    /// The config file a reload re-reads (`None`: the embedded default config).
    pub config_path: Option<String>,
    /// `--log-level`, which wins over `logging.level`, also after a reload.
    pub level_override: Option<log::LevelFilter>,
}

/// Where the running config came from: shown (with its hash) by the admin API.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file path, or "(embedded default config)".
    pub name: String,
    pub text: String,
}

/// `path: message` problems as one line.
fn joined(problems: Vec<(String, String)>) -> String {
    problems
        .into_iter()
        .map(|(p, m)| format!("{p}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Build everything the request path reads.
pub fn build_state(config: &Config) -> Result<Arc<State>, String> {
    build_state_from(config, None).map(|(s, _)| s)
}

/// [`build_state`] for a reload: `previous` (the running config and state) lends the
/// servers that remain and the rate-limit store. Also returns how many servers were
/// carried over.
pub fn build_state_from(
    config: &Config,
    previous: Option<(&Config, &State)>,
) -> Result<(Arc<State>, usize), String> {
    let (groups, kept) = Groups::build_from(config, previous.map(|(c, s)| (c, &s.groups)))?;
    let routes = Routes::build(config, &groups)?;
    // Unchanged keys are kept as they are (a generated key too: sessions live on).
    let same_keys = previous.filter(|(c, _)| c.sessions.keys == config.sessions.keys);
    let (sessions, generated) = match same_keys {
        Some((_, s)) => (s.sessions.clone(), false),
        None => SessionKeys::from_config(&config.sessions.keys)?,
    };
    if generated {
        log::warn!(
            "sessions.keys is not set: generated a session key for this process only; \
             MCP sessions will not survive a restart or span gateway replicas"
        );
    }
    let auth = crate::security::auth::Auth::build(&config.security).map_err(joined)?;
    let cors = crate::security::cors::Cors::build(&config.security.cors).map_err(joined)?;
    let policies =
        crate::security::policy::Policies::build(&config.security.policies).map_err(joined)?;
    let edge = crate::security::edge::Edge::build(&config.server, &config.admin).map_err(joined)?;
    let state = Arc::new(State {
        cors,
        edge,
        auth,
        policies,
        rate_limits: crate::security::rate_limit::RateLimits::build_reusing(
            &config.security.rate_limiting,
            previous.map(|(_, s)| &s.rate_limits),
        )?,
        // Streams open before a reload keep their slots.
        streams: crate::security::streams::StreamCaps::reusing(
            config.security.rate_limiting.max_concurrent_streams,
            previous.map(|(_, s)| &s.streams),
        ),
        routes,
        groups,
        sessions,
        max_request_body: config.limits.max_request_body.0,
        max_request_headers: config.limits.max_request_headers.0,
        timeouts: crate::proxy::ctx::Timeouts {
            request: config.timeouts.request.0,
            stream_idle: config.timeouts.stream_idle.0,
        },
        session_ttl: Some(config.sessions.ttl.0).filter(|d| !d.is_zero()),
        access_log: config.logging.access_log,
        hsts: config
            .server
            .tls
            .as_ref()
            .and_then(crate::security::tls::hsts),
    });
    Ok((state, kept))
}

/// Resolve every server's address before serving. A name that does not resolve is not
/// fatal: the server stays down (readiness shows it) and is retried in the background.
fn resolve_upstreams(groups: &Groups) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the resolver: {e}"))?;
    for group in groups.0.values() {
        for problem in rt.block_on(group.resolve_all()) {
            log::warn!("{problem}; the server stays down until it resolves");
        }
    }
    Ok(())
}

/// Pingora keeps one LRU of idle upstream connections per process, sized per worker
/// thread: `max_idle_per_host` × servers in all, spread over the threads.
fn pool_per_thread(config: &Config) -> usize {
    let servers: usize = config
        .upstream
        .groups
        .values()
        .map(|g| g.servers.len())
        .sum();
    (config.upstream.connection_pool.max_idle_per_host * servers)
        .div_ceil(config.server.threads.max(1))
}

/// The listening address of the proxy service.
pub fn listen_addr(config: &Config) -> Result<SocketAddr, String> {
    let ip: IpAddr = config
        .server
        .host
        .parse()
        .map_err(|_| format!("server.host: {:?} is not an IP address", config.server.host))?;
    Ok(SocketAddr::new(ip, config.server.port))
}

/// Start the server; returns only if Pingora does (it exits the process on shutdown).
pub fn run(config: Config, opts: RunOptions, source: ConfigSource) -> Result<(), String> {
    let state = build_state(&config)?;
    let addr = listen_addr(&config)?;
    // Read now: a process started with `-u` serves the files as they are at its start.
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::security::tls::ListenerTls::load)
        .transpose()
        .map_err(joined)?;
    crate::telemetry::tracing::configure(&config.tracing);
    resolve_upstreams(&state.groups)?;

    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Default::default()
    };
    let conf = ServerConf {
        daemon: opts.daemon,
        threads: config.server.threads,
        pid_file: config.server.pid_file.clone(),
        upgrade_sock: config.server.upgrade_sock.clone(),
        grace_period_seconds: Some(config.server.grace_period.0.as_secs()),
        graceful_shutdown_timeout_seconds: Some(
            config.server.graceful_shutdown_timeout.0.as_secs(),
        ),
        upstream_keepalive_pool_size: pool_per_thread(&config),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    if !opts.daemon {
        // Pingora writes it when it daemonizes; `mcp-gateway reload` and `upgrade` read it.
        if let Err(e) = std::fs::write(&config.server.pid_file, std::process::id().to_string()) {
            log::warn!(
                "cannot write server.pid_file {:?}: {e}",
                config.server.pid_file
            );
        }
    }

    let live = Arc::new(Live::new(
        state.clone(),
        Loaded::new(config.clone(), source),
        opts.config_path.clone(),
        opts.level_override,
    ));
    let mut proxy_app = pingora::proxy::http_proxy(
        &server.configuration,
        Gateway::new(
            live.clone(),
            pool_per_thread(&config) * config.server.threads.max(1),
        ),
    );
    let head_timeout = Some(config.limits.request_head_timeout.0).filter(|d| !d.is_zero());
    let mut options = pingora::apps::HttpServerOptions::default();
    if config.limits.requests_per_connection > 0 {
        // Pingora counts reuses after the first request.
        options.keepalive_request_limit = Some(config.limits.requests_per_connection - 1);
    }
    // HTTP/2 connections: a request arrives only once its head is complete, so the head
    // timeout is Pingora's idle timeout (no request in flight for that long: closed).
    options.h2_idle_timeout = head_timeout;
    proxy_app.server_options = Some(options);
    // Connections are tracked (and can be closed) through the admin API.
    let mut proxy = pingora::services::listening::Service::new(
        "mcp-gateway proxy".to_string(),
        crate::proxy::connections::Tracked::new(proxy_app, head_timeout).lingering(live.clone()),
    );
    match &tls {
        Some(tls) => proxy.add_tls_with_settings(&addr.to_string(), None, tls.settings()?),
        None => proxy.add_tcp(&addr.to_string()),
    }
    proxy.threads = Some(config.server.threads);
    server.add_service(proxy);
    if config.admin.enabled {
        let admin = crate::admin::service(crate::admin::Admin::new(live.clone()), &config.admin)?;
        server.add_service(admin);
    }
    server.add_service(pingora::services::background::background_service(
        "upstream upkeep",
        Upkeep {
            plan: Box::new({
                let live = live.clone();
                move || {
                    let state = live.state();
                    crate::upstream::health::plan(&live.loaded().config, &state.groups)
                }
            }),
            reloads: live.subscribe(),
        },
    ));
    if let Some(shared) = state.rate_limits.shared() {
        server.add_service(pingora::services::background::background_service(
            "rate-limit store",
            crate::security::rate_limit::shared::Upkeep(shared),
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "config reload",
        crate::lifecycle::Reloader {
            live: live.clone(),
            watch: config.reload.watch,
            interval: config.reload.interval.0,
        },
    ));
    server.add_service(pingora::services::background::background_service(
        "shutdown",
        crate::lifecycle::ExitWhenIdle { live: live.clone() },
    ));

    log::info!(
        "mcp-gateway {} listening on {addr}{} ({} route(s), {} upstream group(s))",
        env!("CARGO_PKG_VERSION"),
        if tls.is_some() { " with TLS" } else { "" },
        config.routes.len().max(1),
        config.upstream.groups.len()
    );
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(crate::lifecycle::Signals {
            live,
            drain_delay: config.server.drain_delay.0,
        }),
    });
    Ok(())
}
