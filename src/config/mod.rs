//! The configuration: one typed tree, parsed once at start.
//!
//! * [`yaml`] decodes YAML into the typed tree, collecting every error with its path;
//! * [`units`] holds durations and sizes;
//! * [`load`] reads a file, expands `${ENV}`, applies `MCP_GATEWAY_*` overrides and validates.
//!
//! The raw tree below is the user-facing contract (`conf/gateway.yaml` documents every key,
//! `docs/configuration.md` is the reference). Running code uses the resolved pieces built
//! from it (`upstream::Groups`, `proxy::Routes`), never this tree on the request path.

pub mod load;
pub mod units;
pub mod yaml;

use crate::config_struct;
use serde::Deserialize;
use std::collections::BTreeMap;
use units::{ByteSize, Dur};

pub use load::{load_file, load_str, resolve_default};
pub use yaml::ConfigError;

/// The embedded default config used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

config_struct! {
    /// The whole config file.
    pub struct Config {
        server: ServerConfig = ServerConfig::default(),
        upstream: UpstreamConfig = UpstreamConfig::default(),
        routes: Vec<RouteConfig> = Vec::new(),
        limits: LimitsConfig = LimitsConfig::default(),
        timeouts: TimeoutsConfig = TimeoutsConfig::default(),
        sessions: SessionsConfig = SessionsConfig::default(),
        logging: LoggingConfig = LoggingConfig::default(),
    }
}

config_struct! {
    /// The client-facing listener.
    pub struct ServerConfig {
        host: String = "0.0.0.0".to_string(),
        port: u16 = 8080,
        /// Worker threads of the proxy service.
        threads: usize = 2,
        /// Pingora's PID file (used by `-d`).
        pid_file: String = "/tmp/mcp-gateway.pid".to_string(),
        /// The socket over which `-u` takes over the listeners of a running process.
        upgrade_sock: String = "/tmp/mcp-gateway-upgrade.sock".to_string(),
        /// After SIGTERM, how long in-flight requests and streams may run on.
        grace_period: Dur = Dur::secs(30),
        /// Hard stop after the grace period.
        graceful_shutdown_timeout: Dur = Dur::secs(10),
    }
}

config_struct! {
    pub struct UpstreamConfig {
        groups: BTreeMap<String, GroupConfig> = BTreeMap::new(),
    }
}

/// How a group picks a server for a request that is not bound to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    IpHash,
}
impl yaml::Leaf for Strategy {}

config_struct! {
    /// A set of interchangeable replicas of one MCP server.
    pub struct GroupConfig {
        strategy: Strategy = Strategy::RoundRobin,
        servers: Vec<ServerEntry> = Vec::new(),
        /// Forward the client's `Host` instead of the upstream's own authority.
        preserve_host: bool = false,
        tls: TlsConfig = TlsConfig::default(),
    }
}

config_struct! {
    /// One replica.
    pub struct ServerEntry {
        id: String = String::new(),
        url: String = String::new(),
        weight: u32 = 100,
    }
}

config_struct! {
    /// TLS towards `https://` servers of a group.
    pub struct TlsConfig {
        /// Verify the server certificate (chain and host name).
        verify: bool = true,
        /// PEM file of extra CA certificates to trust.
        ca_file: Option<String> = None,
        /// Server name to send and verify instead of the URL's host.
        sni: Option<String> = None,
    }
}

config_struct! {
    /// An exact request path served by a group.
    pub struct RouteConfig {
        path: String = String::new(),
        group: String = String::new(),
    }
}

config_struct! {
    pub struct LimitsConfig {
        /// Largest request body accepted; larger ones get `413`.
        max_request_body: ByteSize = ByteSize(4 << 20),
    }
}

config_struct! {
    pub struct TimeoutsConfig {
        /// Connecting to an upstream server.
        connect: Dur = Dur::secs(5),
        /// Longest silence on an open response (SSE streams included) before it is closed.
        stream_idle: Dur = Dur::secs(300),
    }
}

config_struct! {
    /// Sealed `Mcp-Session-Id`s (see docs/configuration.md#sessions).
    pub struct SessionsConfig {
        /// Base64 32-byte keys; the first seals, every one opens (rotation).
        keys: Vec<String> = Vec::new(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}
impl yaml::Leaf for LogFormat {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}
impl yaml::Leaf for LogLevel {}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

config_struct! {
    pub struct LoggingConfig {
        level: LogLevel = LogLevel::Info,
        format: LogFormat = LogFormat::Json,
        /// One line per request (method, path, status, MCP method, duration, ...).
        access_log: bool = true,
    }
}

#[cfg(test)]
mod tests;
