//! Config → a running Pingora server: the proxy service on `server.host:server.port`.

use crate::config::Config;
use crate::live::{ConfigSource, Live, Loaded};
use crate::proxy::Gateway;
use crate::state::State;
use crate::upstream::health::Upkeep;
use crate::upstream::Groups;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
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

/// The read buffer of each client connection (bytes): none. Reads go straight into the
/// buffer of the request being read (its head, then its body; rustls reads whole
/// records itself), as nginx reads; a buffer here would be copied out of on every read
/// and held, resident, by every idle connection (Pingora's default is 64 KiB).
const CLIENT_READ_BUFFER: usize = 0;

/// The idle upstream connections each worker thread keeps (the gateway's own exchange,
/// `upstream::pool`; Pingora's own LRU, sized the same, holds only the client adapter's):
/// `max_idle_per_host` × servers in all, spread over the threads.
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

/// Pingora's server settings from the config (`daemon`: from the command line).
fn server_conf(config: &Config, daemon: bool) -> ServerConf {
    ServerConf {
        daemon,
        threads: config.server.threads,
        pid_file: config.server.pid_file.clone(),
        upgrade_sock: config.server.upgrade_sock.clone(),
        grace_period_seconds: Some(config.server.grace_period.0.as_secs()),
        graceful_shutdown_timeout_seconds: Some(
            config.server.graceful_shutdown_timeout.0.as_secs(),
        ),
        upstream_keepalive_pool_size: pool_per_thread(config),
        // Off by default: a one-thread runtime per worker wakes no other thread per
        // request (docs/benchmarks.md, "One runtime per worker").
        work_stealing: config.server.work_stealing,
        ..Default::default()
    }
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
    let state = State::build(&config)?;
    let addr = listen_addr(&config)?;
    // Read now: a process started with `-u` serves the files as they are at its start.
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::security::tls::ListenerTls::load)
        .transpose()
        .map_err(crate::state::joined)?;
    crate::telemetry::tracing::configure(&config.tracing);
    resolve_upstreams(&state.groups)?;
    // stdio servers' sockets exist before the proxy listens.
    let stdio = crate::transport::stdio::Stdio::prepare(&config)?;

    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Default::default()
    };
    let conf = server_conf(&config, opts.daemon);
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
    let gateway = Gateway::new(live.clone(), pool_per_thread(&config));
    let mut proxy_app = pingora::proxy::http_proxy(&server.configuration, gateway.clone());
    let head_timeout = Some(config.limits.request_head_timeout.0).filter(|d| !d.is_zero());
    let mut options = pingora::apps::HttpServerOptions::default();
    if config.limits.requests_per_connection > 0 {
        // Pingora counts reuses after the first request.
        options.keepalive_request_limit = Some(config.limits.requests_per_connection - 1);
    }
    // HTTP/2 connections: a request arrives only once its head is complete; an idle one
    // (no stream in flight) is kept for the keep-alive timeout.
    let keepalive = config.server.keepalive_timeout.0;
    options.h2_idle_timeout = Some(keepalive);
    proxy_app.server_options = Some(options);
    let admission = crate::proxy::admission::Admission::new(
        config
            .server
            .max_connections
            .unwrap_or_else(crate::proxy::admission::default_max_connections),
        config.limits.max_connections_per_ip,
    );
    // Connections are counted, timed, tracked (and can be closed) through the admin API.
    let mut proxy = pingora::services::listening::Service::new(
        "mcp-gateway proxy".to_string(),
        crate::proxy::connections::Tracked::new(
            proxy_app,
            gateway,
            head_timeout,
            keepalive,
            admission,
        )
        .lingering(live.clone()),
    );
    // No read buffer per client connection ([`CLIENT_READ_BUFFER`]).
    let buffers = L4BufferSettings::default().read(CLIENT_READ_BUFFER);
    let mut endpoint = ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers);
    if let Some(tls) = &tls {
        endpoint = endpoint.tls(tls.settings()?);
    }
    proxy.add_listener(endpoint);
    // WebSocket and legacy SSE clients: the adapter that speaks their transport, and the
    // internal listener it sends their messages in on (both in the private runtime folder).
    let clients = crate::transport::clients::Clients::prepare(live.clone())?;
    let internal = crate::transport::clients::Sockets::of(&config)
        .gateway
        .clone();
    {
        use std::os::unix::fs::PermissionsExt;
        proxy.add_uds(
            &internal.to_string_lossy(),
            Some(std::fs::Permissions::from_mode(0o600)),
        );
    }
    proxy.threads = Some(config.server.threads);
    server.add_service(proxy);
    server.add_service(pingora::services::background::background_service(
        "websocket and legacy sse clients",
        clients,
    ));
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
    server.add_service(pingora::services::background::background_service(
        "cache listeners",
        crate::cache::listen::Listeners {
            plan: Box::new({
                let live = live.clone();
                move || {
                    let state = live.state();
                    state.cache.listened(|name| state.groups.get(name).cloned())
                }
            }),
            reloads: live.subscribe(),
        },
    ));
    if let Some(store) = state.cache.store().filter(|s| s.redis.is_some()) {
        server.add_service(pingora::services::background::background_service(
            "cache store",
            crate::cache::redis::Upkeep(store.clone()),
        ));
    }
    if let Some(shared) = state.rate_limits.shared() {
        server.add_service(pingora::services::background::background_service(
            "rate-limit store",
            crate::security::rate_limit::shared::Upkeep(shared),
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "stdio servers",
        crate::transport::stdio::Service {
            stdio: stdio.clone(),
            live: live.clone(),
        },
    ));
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
        crate::lifecycle::ExitWhenIdle {
            live: live.clone(),
            stdio: stdio.clone(),
        },
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
            stdio: stdio.clone(),
        }),
    });
    // Whatever way the server ended, no stdio server outlives it.
    stdio.kill_all_now();
    crate::transport::clients::Clients::remove_sockets();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_settings_follow_the_config() {
        let mut config = Config::default();
        let conf = server_conf(&config, false);
        assert!(!conf.work_stealing, "one runtime per worker by default");
        assert_eq!(conf.threads, config.server.threads);
        config.server.work_stealing = true;
        config.server.threads = 3;
        let conf = server_conf(&config, true);
        assert!(conf.work_stealing && conf.daemon);
        assert_eq!(conf.threads, 3);
    }
}
