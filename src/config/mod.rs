//! The configuration: one typed tree, parsed once at start.
//!
//! * [`yaml`] decodes YAML into the typed tree, collecting every error with its path;
//! * [`units`] holds durations and sizes;
//! * [`security`] is the `security` section's tree;
//! * [`load`] reads a file, expands `${ENV}`, applies `MCP_GATEWAY_*` overrides and makes
//!   the checks the tree can make alone (`state::check` adds those that need runtime objects).
//!
//! The raw tree below is the user-facing contract (`conf/gateway.yaml` documents every key,
//! `docs/configuration.md` is the reference). Running code uses the resolved pieces built
//! from it (`upstream::Groups`, `state::Routes`), never this tree on the request path.

pub mod cache;
pub mod federation;
pub mod load;
pub mod security;
pub mod stdio;
pub mod transform;
pub mod units;
pub mod yaml;

use crate::config_struct;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use units::{ByteSize, Dur};

pub use federation::{
    MemberConfig, OnMemberFailure, PrefixMode, ToolFilterConfig, VirtualServerConfig,
};
pub use load::{load_str, load_str_and, read_file};
pub use security::*;
pub use yaml::ConfigError;

/// The path served when no routes (and no virtual servers) are configured.
pub const DEFAULT_PATH: &str = "/mcp";
/// The group that path goes to.
pub const DEFAULT_GROUP: &str = "default";

/// The embedded default config used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

config_struct! {
    /// The whole config file.
    pub struct Config {
        server: ServerConfig = ServerConfig::default(),
        upstream: UpstreamConfig = UpstreamConfig::default(),
        routes: Vec<RouteConfig> = Vec::new(),
        /// Endpoints that federate groups (docs/federation.md).
        virtual_servers: Vec<VirtualServerConfig> = Vec::new(),
        limits: LimitsConfig = LimitsConfig::default(),
        timeouts: TimeoutsConfig = TimeoutsConfig::default(),
        sessions: SessionsConfig = SessionsConfig::default(),
        logging: LoggingConfig = LoggingConfig::default(),
        admin: AdminConfig = AdminConfig::default(),
        tracing: TracingConfig = TracingConfig::default(),
        security: SecurityConfig = SecurityConfig::default(),
        reload: ReloadConfig = ReloadConfig::default(),
        /// Answers kept and served again (docs/caching.md).
        cache: cache::CacheConfig = cache::CacheConfig::default(),
        /// Rewrites of routes' requests and answers (docs/transforms.md).
        transforms: Vec<transform::TransformConfig> = Vec::new(),
    }
}

config_struct! {
    /// OpenTelemetry tracing (docs/observability.md#tracing).
    pub struct TracingConfig {
        /// OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended to
        /// a bare host:port). Unset: no spans.
        otlp_endpoint: Option<String> = None,
        service_name: String = "mcp-gateway".to_string(),
        /// Share of new traces sampled (0.0 to 1.0); a sampled parent is always followed.
        sample_ratio: f64 = 1.0,
    }
}

config_struct! {
    /// The admin service: REST API, `/metrics`, health (docs/admin-api.md).
    pub struct AdminConfig {
        enabled: bool = true,
        /// Loopback unless a token is set.
        host: String = "127.0.0.1".to_string(),
        port: u16 = 9090,
        /// Bearer token for `/api/v1/*` (at least 16 characters). Without one the API
        /// answers 403 and the service may only listen on loopback.
        token: Option<String> = None,
        /// `Host` names the admin service answers for, like `server.allowed_hosts`
        /// (unset: the loopback names when `host` is a loopback address).
        allowed_hosts: Option<Vec<String>> = None,
    }
}

impl AdminConfig {
    /// The token, if one is set (an empty value from `${VAR:-}` is none).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }
}

config_struct! {
    /// Hot reload (docs/operations.md#reload): SIGHUP and `POST /api/v1/reload` always
    /// work; `watch` also reloads when the file changes.
    pub struct ReloadConfig {
        watch: bool = false,
        /// How often the file is checked when `watch` is on.
        interval: Dur = Dur::secs(2),
    }
}

config_struct! {
    /// The client-facing listener.
    pub struct ServerConfig {
        host: String = "0.0.0.0".to_string(),
        port: u16 = 8080,
        /// Worker threads of the proxy service.
        threads: usize = 2,
        /// Let idle worker threads take tasks queued on busy ones (one multi-threaded
        /// runtime). Off: each thread runs its own single-threaded runtime, as nginx
        /// workers do, which is cheaper per request.
        work_stealing: bool = false,
        /// Pingora's PID file (used by `-d`).
        pid_file: String = "/tmp/mcp-gateway.pid".to_string(),
        /// Where the sockets of stdio servers' bridges go (in a folder per process);
        /// default: `$RUNTIME_DIRECTORY` (systemd's), else the temporary directory.
        runtime_dir: Option<String> = None,
        /// The socket over which `-u` takes over the listeners of a running process.
        upgrade_sock: String = "/tmp/mcp-gateway-upgrade.sock".to_string(),
        /// After SIGTERM, how long `/readiness` answers 503 (so load balancers stop
        /// sending) and responses carry `Connection: close` before the listeners close.
        /// After an upgrade handoff, how long kept-alive client connections may bring
        /// one last request once this process stops accepting.
        drain_delay: Dur = Dur::secs(5),
        /// After the listeners close (SIGTERM, or SIGQUIT for an upgrade), how long
        /// in-flight requests and streams may run on; the process exits as soon as none is left.
        grace_period: Dur = Dur::secs(30),
        /// Hard stop after the grace period.
        graceful_shutdown_timeout: Dur = Dur::secs(10),
        /// TLS termination on the listener (docs/security.md#tls); plain HTTP when absent.
        tls: Option<ListenerTlsConfig> = None,
        /// Proxies in front of the gateway whose `X-Forwarded-For` is believed: addresses
        /// (`10.0.0.7`) or CIDR blocks (`10.0.0.0/8`). A client that is not one of them
        /// is the client, whatever it sends (docs/security.md#client-addresses).
        trusted_proxies: Vec<String> = Vec::new(),
        /// `Host` names the proxy port answers for (`mcp.example.com`, `*.example.com`,
        /// `host:port`); others get `421`. Unset: `localhost`, `127.0.0.1` and `[::1]`
        /// when `host` is a loopback address, any host otherwise; `[]`: any host.
        allowed_hosts: Option<Vec<String>> = None,
        /// Client connections the process holds at once; past it, new ones get `503`
        /// and are closed as they are accepted, before any byte is read. Unset: half
        /// the process's open-file limit (each client may need an upstream connection).
        max_connections: Option<usize> = None,
        /// How long an idle client connection (no request in progress, none started) is
        /// kept open for its next request (HTTP/2: no stream open).
        keepalive_timeout: Dur = Dur::secs(75),
    }
}

/// Whether clients of a TLS listener with `client_ca` must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A certificate is verified when presented; clients without one are served too.
    Optional,
    /// The handshake fails without a certificate issued by `client_ca`.
    Required,
}
impl yaml::Leaf for ClientAuth {}

config_struct! {
    /// TLS on the client-facing listener (read at start, and by a process started with
    /// `-u`, so an upgrade serves renewed files).
    pub struct ListenerTlsConfig {
        /// PEM certificate chain: the server's certificate first, then intermediates.
        cert: String = String::new(),
        /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
        key: String = String::new(),
        /// PEM file of the CAs that issue client certificates; unset: none are asked for.
        client_ca: Option<String> = None,
        /// `optional` or `required` (the default with `client_ca`).
        client_auth: Option<ClientAuth> = None,
        /// `Strict-Transport-Security: max-age` on every answer (`0`: no header).
        hsts_max_age: Dur = Dur::secs(365 * 24 * 3600),
    }
}

config_struct! {
    pub struct UpstreamConfig {
        groups: BTreeMap<String, GroupConfig> = BTreeMap::new(),
        connection_pool: PoolConfig = PoolConfig::default(),
    }
}

config_struct! {
    /// Idle upstream connections kept for reuse (Pingora's connection pool).
    pub struct PoolConfig {
        /// Idle connections kept per upstream server.
        max_idle_per_host: usize = 128,
        /// An idle connection unused this long is closed.
        idle_timeout: Dur = Dur::secs(60),
    }
}

config_struct! {
    /// A group's connections to each of its servers.
    pub struct GroupPoolConfig {
        /// Connections (requests and streams in flight) one server of the group may
        /// have at once; more requests wait for one up to `timeouts.connect`, then get
        /// `503` (`0`: no limit).
        max_connections_per_host: u32 = 0,
    }
}

/// How a group picks a server for a request that is not bound to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
        /// Connections to each of the group's servers.
        connection_pool: GroupPoolConfig = GroupPoolConfig::default(),
        servers: Vec<ServerEntry> = Vec::new(),
        /// Forward the client's `Host` instead of the upstream's own authority.
        preserve_host: bool = false,
        tls: TlsConfig = TlsConfig::default(),
        /// Other servers to try when a request could not be sent (never after it was sent).
        retries: u32 = 2,
        /// Active health checks; none when absent.
        health_check: Option<HealthCheckConfig> = None,
        /// Passive outlier detection (see docs/upstreams.md).
        circuit_breaker: BreakerConfig = BreakerConfig::default(),
        /// Re-resolve DNS names in server URLs this often (`0` = only at start).
        resolve_interval: Dur = Dur::secs(30),
        /// Credentials the gateway sends to this group's servers (the client's own
        /// `Authorization` is never forwarded).
        upstream_auth: Option<UpstreamAuthConfig> = None,
        /// Tell this group's servers who the client is, in a signed header.
        forward_identity: Option<ForwardIdentityConfig> = None,
    }
}

config_struct! {
    /// The authenticated client, forwarded as a short-lived HS256 JWT that the servers
    /// verify with the shared `secret` (docs/security.md#forwarding-identity).
    pub struct ForwardIdentityConfig {
        header: String = "X-MCP-Identity".to_string(),
        /// At least 32 bytes; shared with the servers.
        secret: String = String::new(),
        /// The token's `aud`; default: the group's name.
        audience: Option<String> = None,
        /// How long the token is valid.
        ttl: Dur = Dur::secs(60),
    }
}

config_struct! {
    /// `{bearer: TOKEN}` or `{header: NAME, value: VALUE}`.
    pub struct UpstreamAuthConfig {
        bearer: Option<String> = None,
        header: Option<String> = None,
        value: Option<String> = None,
    }
}

impl UpstreamAuthConfig {
    /// The header to send, or why the block is wrong.
    pub fn header(&self) -> Result<(http::HeaderName, http::HeaderValue), String> {
        let (name, value) =
            match (&self.bearer, &self.header, &self.value) {
                (Some(b), None, None) => (http::header::AUTHORIZATION, format!("Bearer {b}")),
                (None, Some(h), Some(v)) => (
                    http::HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("header: {h:?} is not a valid header name"))?,
                    v.clone(),
                ),
                _ => return Err(
                    "set either bearer, or header and value (e.g. {header: X-Api-Key, value: ...})"
                        .into(),
                ),
            };
        if [
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "mcp-session-id",
        ]
        .contains(&name.as_str())
        {
            return Err(format!("header: {name} is managed by the gateway"));
        }
        let mut value = http::HeaderValue::from_str(&value)
            .map_err(|_| "the value contains characters not allowed in a header".to_string())?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}

/// What an active health check sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    /// A TCP (or Unix socket) connect.
    Tcp,
    /// `GET path`; healthy on 2xx/3xx.
    Http,
    /// A JSON-RPC POST to the MCP endpoint; healthy on any JSON-RPC response.
    Mcp,
}
impl yaml::Leaf for HealthKind {}

/// The JSON-RPC method of an `mcp` health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum ProbeMethod {
    #[serde(rename = "ping")]
    Ping,
    #[serde(rename = "server/discover")]
    ServerDiscover,
}
impl yaml::Leaf for ProbeMethod {}

config_struct! {
    pub struct HealthCheckConfig {
        kind: HealthKind = HealthKind::Mcp,
        /// `http` kind: the path to GET (default: the server URL's path).
        path: Option<String> = None,
        /// `mcp` kind: `ping`, or `server/discover` for modern-only servers.
        method: ProbeMethod = ProbeMethod::Ping,
        interval: Dur = Dur::secs(10),
        timeout: Dur = Dur::secs(2),
        /// Consecutive successes that bring an unhealthy server back.
        healthy_threshold: u32 = 2,
        /// Consecutive failures that take a healthy server out.
        unhealthy_threshold: u32 = 3,
    }
}

config_struct! {
    pub struct BreakerConfig {
        /// Consecutive failures (connect errors, 5xx, timeouts) that open the breaker; `0` disables it.
        failure_threshold: u32 = 5,
        /// How long an open breaker refuses new requests before it half-opens.
        open_for: Dur = Dur::secs(30),
        /// Probe requests a half-open breaker lets through; all must succeed to close it.
        half_open_requests: u32 = 1,
    }
}

config_struct! {
    /// One replica: an MCP server at `url`, or a `command` the gateway runs (stdio,
    /// docs/transports.md; its `url` is then the gateway's own bridge socket).
    pub struct ServerEntry {
        id: String = String::new(),
        url: String = String::new(),
        weight: u32 = 100,
        /// A stdio server: the program and its arguments, run directly (no shell).
        command: Vec<String> = Vec::new(),
        /// Added to the minimal environment a stdio server gets.
        env: BTreeMap<String, String> = BTreeMap::new(),
        /// The stdio server's working directory (default: the gateway's).
        cwd: Option<String> = None,
        /// One process per client session, or a shared pool.
        process: StdioProcess = StdioProcess::PerSession,
        /// `shared`: how many processes the pool runs.
        instances: u32 = 1,
        /// The most processes of this server at once (at the cap: 503, never a fork).
        max_processes: u32 = 64,
        /// `per_session`: a process no request or stream used for this long ends.
        idle_timeout: Dur = Dur::secs(600),
        /// The longest line a stdio server may write.
        max_line: ByteSize = ByteSize(16 << 20),
    }
}

/// How a stdio server's processes map to client sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StdioProcess {
    PerSession,
    Shared,
}
impl yaml::Leaf for StdioProcess {}

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
        /// Largest request head (request line and header fields); larger ones get `431`.
        max_request_headers: ByteSize = ByteSize(32 << 10),
        /// Requests served on one client connection before it is closed (`0`: no limit).
        requests_per_connection: u32 = 0,
        /// Longest time from a connection's accept, or from the first byte of a later
        /// request, to its complete request head; slower connections are closed (`0`:
        /// no limit). The wait between requests is `server.keepalive_timeout`'s.
        request_head_timeout: Dur = Dur::secs(10),
        /// Client connections one IP address may hold at once; past it, new ones get
        /// `503` as they are accepted (`0`: no limit). The address is the socket's peer:
        /// behind a load balancer, the balancer's.
        max_connections_per_ip: u32 = 0,
        /// Longest wait between two reads of a request body; a body that stalls this
        /// long gets `408` and the connection closes.
        request_body_timeout: Dur = Dur::secs(30),
        /// Deepest nesting of arrays and objects a request body may have (`0`: no
        /// limit); a deeper one gets `400` (`-32700`) and reaches no upstream.
        max_json_depth: u32 = 128,
        /// Largest message a WebSocket client may send (one JSON-RPC message); a larger
        /// one closes the socket with `1009` (unset: `max_request_body`).
        max_websocket_message: Option<ByteSize> = None,
        /// How often the gateway pings a WebSocket client (`0`: never).
        websocket_ping_interval: Dur = Dur::secs(30),
    }
}

config_struct! {
    pub struct TimeoutsConfig {
        /// Connecting to an upstream server.
        connect: Dur = Dur::secs(5),
        /// Longest silence from an upstream answering a POST (see docs/upstreams.md#timeouts).
        request: Dur = Dur::secs(120),
        /// Longest silence on an open response (SSE streams included) before it is closed.
        stream_idle: Dur = Dur::secs(300),
    }
}

config_struct! {
    /// Sealed `Mcp-Session-Id`s (see docs/configuration.md#sessions).
    pub struct SessionsConfig {
        /// Base64 32-byte keys; the first seals, every one opens (rotation).
        keys: Vec<String> = Vec::new(),
        /// A sealed session id older than this is refused with `404` (`0` = never).
        ttl: Dur = Dur::secs(24 * 3600),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}
impl yaml::Leaf for LogFormat {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
