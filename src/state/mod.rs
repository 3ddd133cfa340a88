//! The runtime state: everything the request path reads, built whole from a [`Config`]
//! (and, on a reload, from the previous state: servers that remain, session keys, the
//! rate-limit store and stream slots carry over).
//!
//! * [`routes`]: exact paths → upstream groups;
//! * [`virtual_servers`]: exact paths → the groups they federate;
//! * [`check`]: the checks of a config that need the objects built here (keys,
//!   certificates, compiled policies, server URLs), and [`check::load`], which reads a
//!   config and runs every check — what `--validate`, the start and a reload use.

pub mod check;
#[cfg(test)]
mod load_tests;
pub mod routes;
pub mod virtual_servers;

use crate::config::Config;
use crate::mcp::session::SessionKeys;
use crate::security::{auth::Auth, cors::Cors, edge::Edge, policy::Policies};
use crate::security::{rate_limit::RateLimits, streams::StreamCaps};
use crate::upstream::Groups;
pub use routes::{Route, Routes};
use std::sync::Arc;
use std::time::Duration;
pub use virtual_servers::VirtualServers;

/// Everything the request path reads, built once from the config.
pub struct State {
    pub routes: Routes,
    /// Paths that federate groups (`virtual_servers`).
    pub virtual_servers: VirtualServers,
    pub groups: Groups,
    pub sessions: SessionKeys,
    pub auth: Auth,
    pub policies: Policies,
    pub rate_limits: RateLimits,
    /// Open SSE streams per identity (`security.rate_limiting.max_concurrent_streams`).
    pub streams: StreamCaps,
    pub cors: Cors,
    /// Trusted proxies and allowed hosts (`server.trusted_proxies`, `*.allowed_hosts`).
    pub edge: Edge,
    pub max_request_body: u64,
    /// `limits.max_json_depth` (`0`: none).
    pub max_json_depth: usize,
    /// `limits.request_body_timeout`: the longest wait between two reads of a body.
    pub request_body_timeout: Duration,
    pub max_request_headers: u64,
    pub timeouts: Timeouts,
    /// Sealed session ids older than this are refused (`None`: never).
    pub session_ttl: Option<Duration>,
    pub access_log: bool,
    /// `Strict-Transport-Security` for every answer (TLS listeners only).
    pub hsts: Option<http::HeaderValue>,
    /// Answers kept and served again (`cache`).
    pub cache: crate::cache::Cache,
    /// Rewrites of routes' requests and answers (`transforms`).
    pub transforms: crate::transform::Transforms,
}

/// Upstream read timeouts, copied from the state at the start of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub request: Duration,
    pub stream_idle: Duration,
}

/// `path: message` problems as one line.
pub fn joined(problems: Vec<(String, String)>) -> String {
    problems
        .into_iter()
        .map(|(p, m)| format!("{p}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl State {
    /// Build everything the request path reads.
    pub fn build(config: &Config) -> Result<Arc<State>, String> {
        State::build_from(config, None).map(|(s, _)| s)
    }

    /// [`State::build`] for a reload: `previous` (the running config and state) lends
    /// the servers that remain and the rate-limit store. Also returns how many servers
    /// were carried over.
    pub fn build_from(
        config: &Config,
        previous: Option<(&Config, &State)>,
    ) -> Result<(Arc<State>, usize), String> {
        let (groups, kept) = Groups::build_from(config, previous.map(|(c, s)| (c, &s.groups)))?;
        let routes = Routes::build(config, &groups)?;
        let virtual_servers = VirtualServers::build(config, &groups)?;
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
        let cache = crate::cache::Cache::build(config, previous.map(|(c, s)| (c, &s.cache)))
            .map_err(joined)?;
        let transforms = transforms(config).map_err(joined)?;
        let state = Arc::new(State {
            cache,
            transforms,
            auth: Auth::build(&config.security).map_err(joined)?,
            cors: Cors::build(&config.security.cors).map_err(joined)?,
            policies: Policies::build(&config.security.policies).map_err(joined)?,
            edge: Edge::build(&config.server, &config.admin).map_err(joined)?,
            rate_limits: RateLimits::build_reusing(
                &config.security.rate_limiting,
                previous.map(|(_, s)| &s.rate_limits),
            )?,
            // Streams open before a reload keep their slots.
            streams: StreamCaps::reusing(
                config.security.rate_limiting.max_concurrent_streams,
                previous.map(|(_, s)| &s.streams),
            ),
            routes,
            virtual_servers,
            groups,
            sessions,
            max_request_body: config.limits.max_request_body.0,
            max_json_depth: config.limits.max_json_depth as usize,
            request_body_timeout: config.limits.request_body_timeout.0,
            max_request_headers: config.limits.max_request_headers.0,
            timeouts: Timeouts {
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
}

/// The config's transforms, compiled.
pub fn transforms(config: &Config) -> Result<crate::transform::Transforms, Vec<(String, String)>> {
    crate::transform::Transforms::build(&config.transforms)
}
