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
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use units::{ByteSize, Dur};

pub use load::{load_file, load_file_with_text, load_str, resolve_default};
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
        admin: AdminConfig = AdminConfig::default(),
        tracing: TracingConfig = TracingConfig::default(),
        security: SecurityConfig = SecurityConfig::default(),
        reload: ReloadConfig = ReloadConfig::default(),
    }
}

config_struct! {
    /// Authentication, authorization, rate limits and browser rules (docs/security.md).
    pub struct SecurityConfig {
        /// Ordered rules; the first whose `routes` include the request's route applies.
        auth: Vec<AuthRule> = Vec::new(),
        /// Ordered allow/deny rules; the first that matches decides, and a request no
        /// rule matches is denied. Empty: no authorization (everything allowed).
        policies: Vec<PolicyRuleConfig> = Vec::new(),
        rate_limiting: RateLimitingConfig = RateLimitingConfig::default(),
        cors: CorsConfig = CorsConfig::default(),
        /// Failed authentication: lockouts, bounded password hashing, verified-credential cache.
        auth_throttle: AuthThrottleConfig = AuthThrottleConfig::default(),
    }
}

config_struct! {
    /// Credential guessing and hash-cost exhaustion (docs/security.md#authentication-failures).
    pub struct AuthThrottleConfig {
        /// Failed attempts (a wrong password, API key or bearer token) a client IP may
        /// make, and a Basic user name may receive, within `window`; further attempts are
        /// refused with 429 before any credential is checked. `0`: no lockout.
        max_failures: u32 = 10,
        /// The sliding window failures are counted over.
        window: Dur = Dur::secs(300),
        /// Password hashes verified at the same time; a Basic request finding them all
        /// busy gets 503. `0`: the number of CPUs.
        max_concurrent_verifications: u32 = 0,
        /// How long a verified Basic credential is remembered (as a keyed hash, never the
        /// password), so its next requests skip the hash. `0`: no cache.
        cache_ttl: Dur = Dur::secs(60),
        /// Client IPs and user names tracked exactly; beyond, new ones share buckets.
        max_tracked_keys: u32 = 100_000,
    }
}

config_struct! {
    /// Browser clients: which origins may call, and the CORS answers they get.
    pub struct CorsConfig {
        /// Origins allowed to send requests (`https://app.example.com`); a request with
        /// any other `Origin` is refused with 403. Empty: no browser origin is allowed.
        allowed_origins: Vec<String> = Vec::new(),
        allowed_methods: Vec<String> = ["GET", "POST", "DELETE"].map(String::from).to_vec(),
        allowed_headers: Vec<String> = [
            "Content-Type", "Accept", "Authorization", "X-API-Key", "Mcp-Session-Id",
            "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name", "Last-Event-ID", "X-Request-Id",
            "traceparent", "tracestate",
        ].map(String::from).to_vec(),
        exposed_headers: Vec<String> = [
            "Mcp-Session-Id", "MCP-Protocol-Version", "X-Request-Id", "WWW-Authenticate",
            "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
        ].map(String::from).to_vec(),
        /// How long browsers may cache a preflight answer.
        max_age: Dur = Dur::secs(600),
    }
}

config_struct! {
    /// Request rate limits (docs/security.md#rate-limits). Every rule applies at once.
    pub struct RateLimitingConfig {
        rules: Vec<RateLimitRule> = Vec::new(),
        /// Share the rules' counters between gateway replicas through Redis:
        /// `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS. Unset:
        /// every process counts on its own.
        redis: Option<String> = None,
        /// Prefix of every Redis key the rate limits write.
        redis_key_prefix: String = "mcp-gateway:rl:".to_string(),
        /// Longest wait for Redis on a request; past it (or on any error) this process's
        /// own counters decide until Redis answers again.
        redis_timeout: Dur = Dur::millis(100),
        /// Open SSE streams (GET) per identity: the authenticated subject, else the
        /// client IP. Counted per process; `0`: no cap.
        max_concurrent_streams: u32 = 0,
        /// Keys (client IPs, users, API keys, tools) each rule counts exactly on this
        /// process; beyond, new keys share buckets (and may be over-counted) until idle
        /// keys age out.
        max_tracked_keys: u32 = 100_000,
    }
}

impl RateLimitingConfig {
    /// The Redis URL, if one is set (an empty value from `${VAR:-}` is none).
    pub fn redis_url(&self) -> Option<&str> {
        self.redis.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// What a rate-limit rule counts requests by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStrategy {
    /// The client's IP address.
    IpAddress,
    /// The authenticated subject (the IP address for anonymous clients).
    UserId,
    /// The authenticated client id, e.g. the API key's id (else the IP address).
    ApiKey,
    /// The tool of a `tools/call`, across all clients (other requests are not counted).
    Tool,
    /// One counter for everything the rule covers.
    Global,
}
impl yaml::Leaf for KeyStrategy {}

config_struct! {
    pub struct RateLimitRule {
        name: String = String::new(),
        /// Route paths the rule covers; empty: every route.
        routes: Vec<String> = Vec::new(),
        key_strategy: KeyStrategy = KeyStrategy::IpAddress,
        /// Sustained rate, over a sliding minute.
        requests_per_minute: u32 = 0,
        /// Most requests in any one second (`0`: no per-second cap).
        burst_size: u32 = 0,
    }
}

config_struct! {
    /// How clients of some routes authenticate: any mix of JWT, API keys and Basic.
    pub struct AuthRule {
        /// Named in the access log (`auth_rule`).
        name: String = String::new(),
        /// Route paths this rule covers; empty: every route.
        routes: Vec<String> = Vec::new(),
        jwt: Option<JwtConfig> = None,
        api_keys: Option<ApiKeysConfig> = None,
        basic: Option<BasicConfig> = None,
        /// Accept a client certificate verified against `server.tls.client_ca`.
        client_cert: bool = false,
        /// Make the rule's route an OAuth 2.1 protected resource (needs `jwt`).
        oauth: Option<OAuthConfig> = None,
    }
}

config_struct! {
    /// OAuth 2.1 resource server (RFC 9728): the route's Protected Resource Metadata, and
    /// what its access tokens must say.
    pub struct OAuthConfig {
        /// The route's canonical URL, e.g. `https://mcp.example.com/mcp`. Tokens must
        /// carry it as their audience (RFC 8707).
        resource: String = String::new(),
        /// Issuer URLs of the authorization servers clients get tokens from.
        authorization_servers: Vec<String> = Vec::new(),
        /// Scopes the resource understands (published in the metadata).
        scopes_supported: Vec<String> = Vec::new(),
        /// Scopes every token must hold; without them: 403 `insufficient_scope`.
        required_scopes: Vec<String> = Vec::new(),
        /// A human-readable name for the resource (published in the metadata).
        resource_name: Option<String> = None,
        /// A page about the resource for developers (published in the metadata).
        resource_documentation: Option<String> = None,
    }
}

/// What a policy rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}
impl yaml::Leaf for Effect {}

config_struct! {
    /// One authorization rule: it matches a request when every condition it sets holds
    /// (an unset condition matches anything). Names are globs (`*`, `?`, `[abc]`).
    pub struct PolicyRuleConfig {
        /// Named in denials and the access log.
        name: String = String::new(),
        /// `allow` or `deny` (required).
        effect: Option<Effect> = None,
        /// Route paths; empty: every route.
        routes: Vec<String> = Vec::new(),
        /// Authenticated subjects (globs); set: anonymous clients never match.
        subjects: Vec<String> = Vec::new(),
        /// Client ids (globs); set: clients without one never match.
        clients: Vec<String> = Vec::new(),
        /// Scopes the client must hold, all of them.
        scopes: Vec<String> = Vec::new(),
        /// Claims the client must carry: a string is a glob matched against a string
        /// claim or any string in a list claim; a list means any of its values.
        claims: BTreeMap<String, serde_json::Value> = BTreeMap::new(),
        /// JSON-RPC methods (globs), e.g. `tools/call`, `resources/*`.
        methods: Vec<String> = Vec::new(),
        /// Tool names (globs): matches `tools/call` of those tools.
        tools: Vec<String> = Vec::new(),
        /// Prompt names (globs): matches `prompts/get` of those prompts.
        prompts: Vec<String> = Vec::new(),
        /// Resource URIs (globs): matches `resources/read`, `resources/subscribe` and
        /// `resources/unsubscribe` of those resources.
        resources: Vec<String> = Vec::new(),
    }
}

config_struct! {
    /// Bearer JWTs: HMAC with `secret`, or RSA / EC / Ed25519 with `public_key_file` or
    /// a JWKS (`jwks_file` or `jwks_url`).
    pub struct JwtConfig {
        secret: Option<String> = None,
        public_key_file: Option<String> = None,
        jwks_file: Option<String> = None,
        jwks_url: Option<String> = None,
        /// Re-read the JWKS this often (and at most every 5 s on a token with an unknown `kid`).
        jwks_refresh: Dur = Dur::secs(600),
        /// Accepted `alg` values, all of the key's family (e.g. [RS256, PS256]).
        algorithms: Vec<String> = Vec::new(),
        issuer: Option<String> = None,
        audience: Option<String> = None,
        /// Clock skew allowed for `exp` and `nbf`.
        leeway: Dur = Dur::secs(30),
        /// Claims that must be present (`exp` is always required).
        required_claims: Vec<String> = Vec::new(),
    }
}

config_struct! {
    pub struct ApiKeysConfig {
        header: String = "X-API-Key".to_string(),
        keys: Vec<ApiKeyEntry> = Vec::new(),
    }
}

config_struct! {
    /// One key, stored as the hex SHA-256 of the key (`printf %s KEY | sha256sum`).
    pub struct ApiKeyEntry {
        /// The client id the key stands for.
        id: String = String::new(),
        sha256: String = String::new(),
        /// Scopes the key grants (matched by `security.policies`).
        scopes: Vec<String> = Vec::new(),
        /// Claims the key stands for (matched by `security.policies`).
        claims: serde_json::Map<String, serde_json::Value> = serde_json::Map::new(),
    }
}

config_struct! {
    pub struct BasicConfig {
        users: Vec<BasicUser> = Vec::new(),
    }
}

config_struct! {
    /// A user with an argon2 (`$argon2id$...`) or bcrypt (`$2b$...`) password hash.
    pub struct BasicUser {
        name: String = String::new(),
        hash: String = String::new(),
        /// Scopes the user holds (matched by `security.policies`).
        scopes: Vec<String> = Vec::new(),
        /// Claims the user stands for (matched by `security.policies`).
        claims: serde_json::Map<String, serde_json::Value> = serde_json::Map::new(),
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
        /// Pingora's PID file (used by `-d`).
        pid_file: String = "/tmp/mcp-gateway.pid".to_string(),
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
        /// Largest request head (request line and header fields); larger ones get `431`.
        max_request_headers: ByteSize = ByteSize(32 << 10),
        /// Requests served on one client connection before it is closed (`0`: no limit).
        requests_per_connection: u32 = 0,
        /// Longest time from a connection's accept (or the end of its previous request)
        /// to a complete request head; slower connections are closed (`0`: no limit).
        request_head_timeout: Dur = Dur::secs(10),
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

#[cfg(test)]
mod tests;
