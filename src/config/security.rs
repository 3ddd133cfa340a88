//! The `security` section: authentication rules and their methods (JWT, API keys,
//! Basic, OAuth metadata), the failed-attempt throttle, policies, rate limits and CORS.

use super::units::Dur;
use super::yaml;
use crate::config_struct;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
