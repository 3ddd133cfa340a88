//! Config → a running Pingora server: the proxy service on `server.host:server.port`.

use crate::config::Config;
use crate::mcp::session::SessionKeys;
use crate::proxy::routes::Routes;
use crate::proxy::{Gateway, State};
use crate::upstream::Groups;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Process-level switches from the command line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions {
    /// `-d`: run in the background.
    pub daemon: bool,
    /// `-u`: take over the listening sockets of a running instance (zero-downtime upgrade).
    pub upgrade: bool,
}

/// Build everything the request path reads.
pub fn build_state(config: &Config) -> Result<Arc<State>, String> {
    let groups = Groups::build(config)?;
    let routes = Routes::build(config, &groups)?;
    let (sessions, generated) = SessionKeys::from_config(&config.sessions.keys)?;
    if generated {
        log::warn!(
            "sessions.keys is not set: generated a session key for this process only; \
             MCP sessions will not survive a restart or span gateway replicas"
        );
    }
    Ok(Arc::new(State {
        routes,
        groups,
        sessions,
        max_request_body: config.limits.max_request_body.0,
        access_log: config.logging.access_log,
        ready: AtomicBool::new(false),
    }))
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
pub fn run(config: Config, opts: RunOptions) -> Result<(), String> {
    let state = build_state(&config)?;
    let addr = listen_addr(&config)?;

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
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(state.clone()),
        "mcp-gateway proxy",
    );
    proxy.add_tcp(&addr.to_string());
    proxy.threads = Some(config.server.threads);
    server.add_service(proxy);

    state.ready.store(true, Ordering::Release);
    log::info!(
        "mcp-gateway {} listening on {addr} ({} route(s), {} upstream group(s))",
        env!("CARGO_PKG_VERSION"),
        config.routes.len().max(1),
        config.upstream.groups.len()
    );
    server.run_forever()
}
