//! Client authentication: bearer JWTs, API keys and Basic passwords, per route.
//!
//! `security.auth` is an ordered list of rules; the first whose `routes` include the
//! request's route applies (a route no rule covers is open). Within a rule the credential
//! the request carries picks the method: `Authorization: Bearer` → JWT, the API-key
//! header → API key, `Authorization: Basic` → password. No credential, or one the rule
//! does not accept, is `401` with a `WWW-Authenticate` challenge naming what it accepts.
//!
//! * JWT (`jsonwebtoken`): the accepted algorithms must all belong to the key's family
//!   (HMAC secret, or an RSA / EC / Ed25519 public key), so an HMAC token can never be
//!   checked against a public key; `alg: none` is never accepted; `exp` is required,
//!   `nbf` enforced, issuer and audience checked when configured.
//! * API keys: only their SHA-256 is configured; the presented key's hash is compared with
//!   every configured one in constant time.
//! * Basic: argon2 or bcrypt hashes, verified on a blocking thread (they are slow on
//!   purpose and must not stall the proxy's workers), a bounded number at once; a
//!   credential that verified is remembered briefly by a keyed hash.
//! * Failed attempts are counted per client IP (and per Basic user name) and past
//!   `security.auth_throttle.max_failures` refused before any check
//!   ([`throttle`]).
//! * A JWT naming critical header extensions (`crit`, RFC 7515 §4.1.11) is refused:
//!   the gateway implements none.
//! * Client certificates (`client_cert: true`): a request carrying none of the above on a
//!   connection whose certificate was verified against `server.tls.client_ca` is
//!   identified by that certificate (see [`super::tls::ClientCert`]).

pub mod throttle;

use crate::config::{ApiKeysConfig, AuthRule, BasicConfig, JwtConfig, OAuthConfig, SecurityConfig};
use crate::security::tls::ClientCert;
use crate::telemetry::metrics::{self, METRICS};
use arc_swap::{ArcSwap, ArcSwapOption};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use throttle::AuthThrottle;
pub use throttle::Throttled;

/// Who a request comes from, once authenticated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identity {
    /// `jwt`, `api_key`, `basic` or `client_cert`.
    pub method: &'static str,
    /// The JWT `sub`, the API key's id, the Basic user name, or the certificate's subject.
    pub subject: String,
    /// The JWT `client_id` / `azp`, or the API key's id.
    pub client_id: Option<String>,
    /// The JWT `scope` / `scp`, or the scopes configured for the key or user.
    pub scopes: Vec<String>,
    /// The JWT's claims, or the claims configured for the key or user.
    pub claims: Arc<serde_json::Map<String, Value>>,
    /// The rule that authenticated it (its `name`).
    pub rule: String,
}

/// Why a request was refused; `reason` is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    /// The `WWW-Authenticate` challenge.
    pub challenge: String,
    /// 403 (authenticated, but the token lacks required scopes) rather than 401.
    pub forbidden: bool,
    /// Refused before checking the credential (429 or 503) rather than 401.
    pub throttled: Option<Throttled>,
}

/// The well-known path of RFC 9728 Protected Resource Metadata.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// An OAuth-protected route (RFC 9728).
struct OAuth {
    /// Where clients find the metadata (an absolute URL).
    metadata_url: String,
    required_scopes: Vec<String>,
}

struct Jwt {
    keys: JwtKeys,
    validation: Validation,
}

enum JwtKeys {
    One(DecodingKey),
    Jwks(Jwks),
}

/// Where a JWKS comes from.
enum JwksSource {
    File(String),
    Url(String),
}

/// A JSON Web Key Set, kept current: re-read every `refresh`, and at once (at most every
/// [`FORCED_REFRESH`]) when a token names a `kid` it does not hold.
struct Jwks {
    source: JwksSource,
    /// Keys by `kid` (`""` for a key without one). Asymmetric keys only.
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    refresh: Duration,
    last_load: AtomicU64,
    last_forced: AtomicU64,
    loading: AtomicBool,
}

/// The shortest time between two reloads caused by unknown `kid`s.
const FORCED_REFRESH: Duration = Duration::from_secs(5);

/// Milliseconds since the process's first use of this clock.
fn now_ms() -> u64 {
    crate::upstream::breaker::now_ms()
}

impl Jwks {
    /// Parse a JWKS document: asymmetric keys only (an `oct` key would let anyone who can
    /// read the set sign tokens).
    fn parse(text: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            ) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
            }
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable RSA, EC or Ed25519 key".into());
        }
        Ok(keys)
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, String> {
        let text = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| format!("reading {path:?}: {e}"))?,
            JwksSource::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())?;
                let resp = client
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| format!("fetching {url}: {e}"))?;
                resp.bytes()
                    .await
                    .map_err(|e| format!("fetching {url}: {e}"))?
                    .to_vec()
            }
        };
        Self::parse(&text)
    }

    /// Reload now (one reload at a time); false if it failed or another was running.
    async fn reload(&self) -> bool {
        if self.loading.swap(true, Ordering::AcqRel) {
            return false;
        }
        let result = self.fetch().await;
        self.last_load.store(now_ms(), Ordering::Release);
        self.loading.store(false, Ordering::Release);
        match result {
            Ok(keys) => {
                log::info!("JWKS loaded: {} key(s)", keys.len());
                self.keys.store(Arc::new(keys));
                true
            }
            Err(e) => {
                log::warn!("JWKS not reloaded (keeping the keys held): {e}");
                false
            }
        }
    }

    /// The key for `kid`, reloading first if the set is stale or does not hold it.
    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let now = now_ms();
        let stale = now.saturating_sub(self.last_load.load(Ordering::Acquire))
            >= self.refresh.as_millis() as u64
            || self.keys.load().is_empty();
        let held = self.keys.load().get(kid).cloned();
        if held.is_some() && !stale {
            return held;
        }
        let may_force = now.saturating_sub(self.last_forced.load(Ordering::Acquire))
            >= FORCED_REFRESH.as_millis() as u64;
        if stale || may_force {
            if held.is_none() {
                self.last_forced.store(now, Ordering::Release);
            }
            self.reload().await;
        }
        self.keys.load().get(kid).cloned().or(held)
    }
}

/// What a configured key or user stands for.
#[derive(Clone)]
struct Grant {
    id: String,
    scopes: Vec<String>,
    claims: Arc<serde_json::Map<String, Value>>,
}

struct ApiKeys {
    header: http::HeaderName,
    keys: Vec<([u8; 32], Grant)>,
}

struct Basic {
    /// Each user's password hash and grant.
    users: Vec<(String, Grant)>,
    /// Each user's last verified credential, by index into `users`.
    verified: Vec<ArcSwapOption<Verified>>,
}

/// A credential that verified: its keyed hash ([`AuthThrottle::tag`]) and until when
/// (ms, [`now_ms`]) it is trusted without hashing again.
struct Verified {
    tag: [u8; 32],
    until: u64,
}

/// Refusals that count as a failed attempt: a credential was presented and is wrong
/// (as opposed to missing, or genuine but expired, for another audience, …).
fn is_guess(reason: &str) -> bool {
    matches!(
        reason,
        "bad_password"
            | "bad_api_key"
            | "bad_signature"
            | "malformed"
            | "unknown_key"
            | "wrong_algorithm"
            | "unsupported_crit"
    )
}

struct Rule {
    name: String,
    routes: Vec<String>,
    jwt: Option<Jwt>,
    api_keys: Option<ApiKeys>,
    basic: Option<Basic>,
    oauth: Option<OAuth>,
    client_cert: bool,
}

/// All rules, built once from the config.
#[derive(Default)]
pub struct Auth {
    rules: Vec<Rule>,
    /// Protected Resource Metadata documents by request path.
    metadata: HashMap<String, bytes::Bytes>,
    /// Every API-key header of every rule: never forwarded upstream.
    pub credential_headers: std::sync::Arc<[http::HeaderName]>,
    /// Failed-attempt lockouts, password-verification slots.
    throttle: AuthThrottle,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Auth {
    /// Build the rules; every problem comes back as `(path under security.auth, message)`.
    pub fn build(cfg: &SecurityConfig) -> Result<Auth, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in cfg.auth.iter().enumerate() {
            let at = |k: &str| format!("security.auth[{i}].{k}");
            match build_rule(i, r) {
                Ok(rule) => rules.push(rule),
                Err(problems) => errs.extend(problems.into_iter().map(|(k, m)| (at(&k), m))),
            }
        }
        let mut metadata = HashMap::new();
        for (i, r) in cfg.auth.iter().enumerate() {
            if let (Some(o), [route]) = (&r.oauth, r.routes.as_slice()) {
                let doc = resource_metadata(o);
                // The root serves the first protected route, for clients that only look there.
                metadata
                    .entry(RESOURCE_METADATA_PATH.to_string())
                    .or_insert_with(|| doc.clone());
                let path = format!("{RESOURCE_METADATA_PATH}{route}");
                if metadata.insert(path, doc).is_some() {
                    errs.push((
                        format!("security.auth[{i}].routes[0]"),
                        format!("another OAuth rule already describes {route}"),
                    ));
                }
            }
        }
        if errs.is_empty() {
            let mut headers: Vec<http::HeaderName> = rules
                .iter()
                .filter_map(|r| r.api_keys.as_ref().map(|k| k.header.clone()))
                .collect();
            headers.dedup();
            Ok(Auth {
                rules,
                metadata,
                credential_headers: headers.into(),
                throttle: AuthThrottle::build(&cfg.auth_throttle),
            })
        } else {
            Err(errs)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The Protected Resource Metadata document served at `path`, if any.
    pub fn resource_metadata(&self, path: &str) -> Option<&bytes::Bytes> {
        self.metadata.get(path)
    }

    /// The `WWW-Authenticate` answer asking an OAuth client of `route` for more scopes
    /// (`None` when the route is not OAuth-protected).
    pub fn insufficient_scope(&self, route: &str, scopes: &[String]) -> Option<String> {
        let rule = self.rule_for(route)?;
        rule.oauth
            .as_ref()
            .map(|o| insufficient_scope_challenge(o, scopes))
    }

    fn rule_for(&self, route: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.routes.is_empty() || r.routes.iter().any(|p| p == route))
    }

    /// Authenticate a request to `route` from `ip` (`cert`: its connection's verified
    /// client certificate): `Ok(None)` when no rule covers the route.
    pub async fn check(
        &self,
        route: &str,
        headers: &http::HeaderMap,
        cert: Option<&ClientCert>,
        ip: Option<IpAddr>,
    ) -> Result<Option<Identity>, Refusal> {
        let Some(rule) = self.rule_for(route) else {
            return Ok(None);
        };
        let attempt = Attempt {
            throttle: &self.throttle,
            ip,
        };
        rule.check(headers, cert, &attempt).await.map(Some)
    }
}

fn build_rule(i: usize, r: &AuthRule) -> Result<Rule, Vec<(String, String)>> {
    let mut errs = Vec::new();
    if r.jwt.is_none() && r.api_keys.is_none() && r.basic.is_none() && !r.client_cert {
        errs.push((
            "jwt".into(),
            "a rule needs at least one of jwt, api_keys, basic, client_cert".into(),
        ));
    }
    for (j, p) in r.routes.iter().enumerate() {
        if !p.starts_with('/') {
            errs.push((format!("routes[{j}]"), format!("{p:?} must start with '/'")));
        }
    }
    let oauth = r
        .oauth
        .as_ref()
        .and_then(|o| build_oauth(r, o).map_err(|e| errs.extend(e)).ok());
    // An OAuth route's tokens must be meant for it (RFC 8707): its resource is their audience.
    let jwt = r.jwt.as_ref().and_then(|c| {
        let mut c = c.clone();
        if let Some(o) = &r.oauth {
            c.audience = Some(o.resource.clone());
        }
        build_jwt(&c).map_err(|e| errs.extend(e)).ok()
    });
    let api_keys = r
        .api_keys
        .as_ref()
        .and_then(|c| build_api_keys(c).map_err(|e| errs.extend(e)).ok());
    let basic = r
        .basic
        .as_ref()
        .and_then(|c| build_basic(c).map_err(|e| errs.extend(e)).ok());
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Rule {
        name: if r.name.is_empty() {
            format!("auth[{i}]")
        } else {
            r.name.clone()
        },
        routes: r.routes.clone(),
        jwt,
        api_keys,
        basic,
        oauth,
        client_cert: r.client_cert,
    })
}

type Problems = Vec<(String, String)>;

/// Where an attempt comes from, and the throttle that counts its failures.
struct Attempt<'a> {
    throttle: &'a AuthThrottle,
    ip: Option<IpAddr>,
}

/// An absolute `http(s)` URL without a fragment.
fn is_http_url(u: &str) -> bool {
    !u.contains('#')
        && u.parse::<http::Uri>()
            .ok()
            .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
}

fn build_oauth(r: &AuthRule, o: &OAuthConfig) -> Result<OAuth, Problems> {
    let mut errs: Problems = Vec::new();
    if r.jwt.is_none() {
        errs.push((
            "oauth".into(),
            "needs jwt: access tokens are JWTs checked with the authorization server's keys (usually jwt.jwks_url)"
                .into(),
        ));
    }
    if r.routes.len() != 1 {
        errs.push((
            "routes".into(),
            "an OAuth rule describes one protected resource: list exactly one route (one rule per route)"
                .into(),
        ));
    }
    if !is_http_url(&o.resource) {
        errs.push((
            "oauth.resource".into(),
            format!(
                "{:?} must be the route's absolute URL, e.g. https://mcp.example.com/mcp",
                o.resource
            ),
        ));
    }
    if let Some(aud) = r.jwt.as_ref().and_then(|j| j.audience.as_ref()) {
        if aud != &o.resource {
            errs.push((
                "jwt.audience".into(),
                "leave it unset: on an OAuth route the audience is oauth.resource".into(),
            ));
        }
    }
    if o.authorization_servers.is_empty() {
        errs.push((
            "oauth.authorization_servers".into(),
            "list at least one authorization server (its issuer URL)".into(),
        ));
    }
    for (j, a) in o.authorization_servers.iter().enumerate() {
        if !is_http_url(a) {
            errs.push((
                format!("oauth.authorization_servers[{j}]"),
                format!("{a:?} is not an http(s) URL"),
            ));
        }
    }
    if let Some(d) = o.resource_documentation.as_deref() {
        if !is_http_url(d) {
            errs.push((
                "oauth.resource_documentation".into(),
                format!("{d:?} is not an http(s) URL"),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    // RFC 9728 §3.1: the metadata sits at the well-known path inserted before the
    // resource's path; the gateway serves it under the route's path.
    let uri: http::Uri = o.resource.parse().expect("checked above");
    let origin = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("https"),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    Ok(OAuth {
        metadata_url: format!("{origin}{RESOURCE_METADATA_PATH}{}", r.routes[0]),
        required_scopes: o.required_scopes.clone(),
    })
}

/// The RFC 9728 document of a protected route.
fn resource_metadata(o: &OAuthConfig) -> bytes::Bytes {
    let mut doc = serde_json::json!({
        "resource": o.resource,
        "authorization_servers": o.authorization_servers,
        "bearer_methods_supported": ["header"],
    });
    if !o.scopes_supported.is_empty() {
        doc["scopes_supported"] = serde_json::json!(o.scopes_supported);
    }
    if let Some(n) = &o.resource_name {
        doc["resource_name"] = serde_json::json!(n);
    }
    if let Some(d) = &o.resource_documentation {
        doc["resource_documentation"] = serde_json::json!(d);
    }
    bytes::Bytes::from(doc.to_string())
}

/// `Bearer error="insufficient_scope"` naming the scopes to ask for (RFC 6750 §3.1).
fn insufficient_scope_challenge(o: &OAuth, scopes: &[String]) -> String {
    let mut all: Vec<&str> = o.required_scopes.iter().map(String::as_str).collect();
    for s in scopes {
        if !all.contains(&s.as_str()) {
            all.push(s);
        }
    }
    format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
        all.join(" "),
        o.metadata_url
    )
}

fn build_jwt(c: &JwtConfig) -> Result<Jwt, Problems> {
    let mut errs: Problems = Vec::new();
    let secret = c.secret.as_deref().filter(|s| !s.is_empty());
    let sources = [
        secret.is_some(),
        c.public_key_file.is_some(),
        c.jwks_file.is_some(),
        c.jwks_url.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources == 1 && (c.jwks_file.is_some() || c.jwks_url.is_some()) {
        return build_jwks(c);
    }
    if sources > 1 {
        errs.push((
            "jwt".into(),
            "set exactly one of secret, public_key_file, jwks_file, jwks_url".into(),
        ));
        return Err(errs);
    }
    let key = match (secret, &c.public_key_file) {
        (Some(s), None) => {
            if s.len() < 32 {
                errs.push((
                    "jwt.secret".into(),
                    "must be at least 32 bytes (e.g. `openssl rand -base64 48`)".into(),
                ));
            }
            Some((DecodingKey::from_secret(s.as_bytes()), KeyKind::Hmac))
        }
        (None, Some(path)) => match std::fs::read(path) {
            Err(e) => {
                errs.push((
                    "jwt.public_key_file".into(),
                    format!("cannot read {path:?}: {e}"),
                ));
                None
            }
            Ok(pem) => public_key(&pem)
                .map_err(|m| errs.push(("jwt.public_key_file".into(), format!("{path:?}: {m}"))))
                .ok(),
        },
        _ => {
            errs.push((
                "jwt".into(),
                "set one of secret (HS*), public_key_file, jwks_file or jwks_url (RS*, PS*, ES*, EdDSA)"
                    .into(),
            ));
            None
        }
    };
    let algorithms = parse_algorithms(c, &mut errs, |alg, a| {
        key.as_ref()
            .filter(|(_, kind)| !kind.accepts(alg))
            .map(|(_, kind)| format!("{a} does not match the {} key", kind.name()))
    });
    let Some((key, _)) = key.filter(|_| errs.is_empty()) else {
        return Err(errs);
    };
    Ok(Jwt {
        keys: JwtKeys::One(key),
        validation: validation(c, algorithms),
    })
}

/// A JWT rule whose keys come from a JWKS: asymmetric algorithms only.
fn build_jwks(c: &JwtConfig) -> Result<Jwt, Problems> {
    let mut errs: Problems = Vec::new();
    let algorithms = parse_algorithms(c, &mut errs, |alg, a| {
        (alg.family() == jsonwebtoken::AlgorithmFamily::Hmac).then(|| {
            format!("{a}: a JWKS supplies public keys; HMAC algorithms cannot be used with it")
        })
    });
    let (source, keys) = match (&c.jwks_file, &c.jwks_url) {
        (Some(path), None) => match std::fs::read(path)
            .map_err(|e| format!("cannot read {path:?}: {e}"))
            .and_then(|t| Jwks::parse(&t).map_err(|e| format!("{path:?}: {e}")))
        {
            Ok(keys) => (JwksSource::File(path.clone()), keys),
            Err(e) => {
                errs.push(("jwt.jwks_file".into(), e));
                (JwksSource::File(path.clone()), HashMap::new())
            }
        },
        (None, Some(url)) => {
            let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                errs.push((
                    "jwt.jwks_url".into(),
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
            // Fetched on first use, then kept current.
            (JwksSource::Url(url.clone()), HashMap::new())
        }
        _ => unreachable!("exactly one JWKS source"),
    };
    if c.jwks_refresh.0 < FORCED_REFRESH {
        errs.push(("jwt.jwks_refresh".into(), "must be at least 5s".into()));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let loaded = if keys.is_empty() { 0 } else { now_ms() };
    Ok(Jwt {
        keys: JwtKeys::Jwks(Jwks {
            source,
            keys: ArcSwap::from_pointee(keys),
            refresh: c.jwks_refresh.0,
            last_load: AtomicU64::new(loaded),
            last_forced: AtomicU64::new(0),
            loading: AtomicBool::new(false),
        }),
        validation: validation(c, algorithms),
    })
}

/// The configured algorithms; `refuse` says why one cannot be used with this key source.
fn parse_algorithms(
    c: &JwtConfig,
    errs: &mut Problems,
    refuse: impl Fn(Algorithm, &str) -> Option<String>,
) -> Vec<Algorithm> {
    if c.algorithms.is_empty() {
        errs.push((
            "jwt.algorithms".into(),
            "list the accepted algorithms, e.g. [RS256]".into(),
        ));
    }
    let mut algorithms = Vec::new();
    for (j, a) in c.algorithms.iter().enumerate() {
        match a.parse::<Algorithm>() {
            Ok(alg) => match refuse(alg, a) {
                Some(why) => errs.push((format!("jwt.algorithms[{j}]"), why)),
                None => algorithms.push(alg),
            },
            Err(_) => errs.push((
                format!("jwt.algorithms[{j}]"),
                format!("{a:?} is not a JWT algorithm (HS256, RS256, PS256, ES256, EdDSA, ...)"),
            )),
        }
    }
    algorithms
}

fn validation(c: &JwtConfig, algorithms: Vec<Algorithm>) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    validation.leeway = c.leeway.0.as_secs();
    validation.validate_nbf = true;
    let mut required = vec!["exp".to_string()];
    required.extend(c.required_claims.iter().cloned());
    validation.set_required_spec_claims(&required);
    match &c.issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match &c.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation
}

#[derive(Clone, Copy)]
enum KeyKind {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    fn accepts(self, alg: Algorithm) -> bool {
        use jsonwebtoken::AlgorithmFamily as F;
        matches!(
            (self, alg.family()),
            (KeyKind::Hmac, F::Hmac)
                | (KeyKind::Rsa, F::Rsa)
                | (KeyKind::Ec, F::Ec)
                | (KeyKind::Ed, F::Ed)
        )
    }
    fn name(self) -> &'static str {
        match self {
            KeyKind::Hmac => "HMAC secret",
            KeyKind::Rsa => "RSA",
            KeyKind::Ec => "EC",
            KeyKind::Ed => "Ed25519",
        }
    }
}

/// A token's scopes: OAuth's space-separated `scope`, or `scp` (a list or a string).
fn token_scopes(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A PEM public key of any supported kind.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, KeyKind), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, KeyKind::Rsa));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, KeyKind::Ec));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, KeyKind::Ed));
    }
    Err("not a PEM RSA, EC or Ed25519 public key".into())
}

fn build_api_keys(c: &ApiKeysConfig) -> Result<ApiKeys, Problems> {
    let mut errs: Problems = Vec::new();
    let header = http::HeaderName::from_bytes(c.header.as_bytes())
        .map_err(|_| {
            errs.push((
                "api_keys.header".into(),
                format!("{:?} is not a header name", c.header),
            ))
        })
        .ok();
    if header
        .as_ref()
        .is_some_and(|h| h == http::header::AUTHORIZATION)
    {
        errs.push((
            "api_keys.header".into(),
            "Authorization carries JWTs and Basic credentials; use another header".into(),
        ));
    }
    if c.keys.is_empty() {
        errs.push((
            "api_keys.keys".into(),
            "at least one key is required".into(),
        ));
    }
    let mut keys = Vec::new();
    for (j, k) in c.keys.iter().enumerate() {
        if k.id.is_empty() {
            errs.push((format!("api_keys.keys[{j}].id"), "is required".into()));
        }
        let mut hash = [0u8; 32];
        let hex = k.sha256.trim().to_ascii_lowercase();
        let ok = hex.len() == 64
            && (0..32).all(|b| {
                u8::from_str_radix(&hex[2 * b..2 * b + 2], 16)
                    .map(|v| hash[b] = v)
                    .is_ok()
            });
        if !ok {
            errs.push((
                format!("api_keys.keys[{j}].sha256"),
                "must be 64 hex digits: the SHA-256 of the key (`printf %s KEY | sha256sum`)"
                    .into(),
            ));
        }
        keys.push((
            hash,
            Grant {
                id: k.id.clone(),
                scopes: k.scopes.clone(),
                claims: Arc::new(k.claims.clone()),
            },
        ));
    }
    match header {
        Some(header) if errs.is_empty() => Ok(ApiKeys { header, keys }),
        _ => Err(errs),
    }
}

fn build_basic(c: &BasicConfig) -> Result<Basic, Problems> {
    let mut errs: Problems = Vec::new();
    if c.users.is_empty() {
        errs.push(("basic.users".into(), "at least one user is required".into()));
    }
    for (j, u) in c.users.iter().enumerate() {
        if u.name.is_empty() || u.name.contains(':') {
            errs.push((
                format!("basic.users[{j}].name"),
                "is required and may not contain ':'".into(),
            ));
        }
        let h = &u.hash;
        let known = if h.starts_with("$argon2") {
            argon2::PasswordHash::new(h).is_ok()
        } else if h.starts_with("$2") {
            h.parse::<bcrypt::HashParts>().is_ok()
        } else {
            false
        };
        if !known {
            errs.push((
                format!("basic.users[{j}].hash"),
                "must be an argon2 ($argon2id$...) or bcrypt ($2b$...) hash, never a password"
                    .into(),
            ));
        }
    }
    if errs.is_empty() {
        Ok(Basic {
            verified: c.users.iter().map(|_| ArcSwapOption::empty()).collect(),
            users: c
                .users
                .iter()
                .map(|u| {
                    (
                        u.hash.clone(),
                        Grant {
                            id: u.name.clone(),
                            scopes: u.scopes.clone(),
                            claims: Arc::new(u.claims.clone()),
                        },
                    )
                })
                .collect(),
        })
    } else {
        Err(errs)
    }
}

impl Rule {
    fn challenge(&self, invalid_token: bool) -> String {
        let mut schemes = Vec::new();
        if self.jwt.is_some() {
            let mut bearer = "Bearer realm=\"mcp-gateway\"".to_string();
            if invalid_token {
                bearer.push_str(", error=\"invalid_token\"");
            }
            if let Some(o) = &self.oauth {
                // MCP authorization: where the client finds the authorization server.
                bearer.push_str(&format!(", resource_metadata=\"{}\"", o.metadata_url));
                if !o.required_scopes.is_empty() {
                    bearer.push_str(&format!(", scope=\"{}\"", o.required_scopes.join(" ")));
                }
            }
            schemes.push(bearer);
        }
        if self.basic.is_some() {
            schemes.push("Basic realm=\"mcp-gateway\"".to_string());
        }
        if let Some(k) = &self.api_keys {
            schemes.push(format!("ApiKey header=\"{}\"", k.header));
        }
        if self.client_cert && schemes.is_empty() {
            // No HTTP scheme: the credential is the TLS client certificate.
            schemes.push("ClientCertificate realm=\"mcp-gateway\"".to_string());
        }
        schemes.join(", ")
    }

    fn refuse(&self, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
            challenge: self.challenge(false),
            forbidden: false,
            throttled: None,
        }
    }

    /// A refusal before the credential was checked.
    fn throttled(&self, t: Throttled) -> Refusal {
        Refusal {
            reason: if matches!(t, Throttled::Busy { .. }) {
                "busy"
            } else {
                "locked_out"
            },
            message: t.message(),
            challenge: self.challenge(false),
            forbidden: false,
            throttled: Some(t),
        }
    }

    /// Check a credential (not a Basic one) unless `at`'s client IP is locked out,
    /// counting a wrong one against it.
    async fn throttled_check(
        &self,
        at: &Attempt<'_>,
        check: impl std::future::Future<Output = Result<Identity, Refusal>>,
    ) -> Result<Identity, Refusal> {
        at.throttle
            .check(at.ip, None)
            .map_err(|t| self.throttled(t))?;
        let result = check.await;
        if let Err(r) = &result {
            if is_guess(r.reason) {
                at.throttle.failed(at.ip, None);
            }
        }
        result
    }

    /// A refusal of a bearer token that was presented but is not valid.
    fn refuse_token(&self, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            challenge: self.challenge(true),
            ..self.refuse(reason, message)
        }
    }

    async fn check(
        &self,
        headers: &http::HeaderMap,
        cert: Option<&ClientCert>,
        at: &Attempt<'_>,
    ) -> Result<Identity, Refusal> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let scheme = |s: &str| {
            authorization.and_then(|a| {
                let (head, rest) = a.split_at(a.len().min(s.len()));
                head.eq_ignore_ascii_case(s.as_bytes()).then_some(rest)
            })
        };
        if let (Some(token), Some(jwt)) = (scheme("Bearer "), &self.jwt) {
            return self.throttled_check(at, self.check_jwt(jwt, token)).await;
        }
        if let Some(keys) = &self.api_keys {
            if let Some(key) = headers.get(&keys.header) {
                let key = key.as_bytes();
                return self
                    .throttled_check(at, async { self.check_api_key(keys, key) })
                    .await;
            }
        }
        if let (Some(b64), Some(basic)) = (scheme("Basic "), &self.basic) {
            return self.check_basic(basic, b64, at).await;
        }
        if let (true, Some(cert)) = (self.client_cert, cert) {
            return Ok(cert.identity(&self.name));
        }
        let accepted = [
            self.jwt.as_ref().map(|_| "a bearer JWT".to_string()),
            self.api_keys
                .as_ref()
                .map(|k| format!("an API key in {}", k.header)),
            self.basic.as_ref().map(|_| "Basic credentials".to_string()),
            self.client_cert
                .then(|| "a TLS client certificate".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" or ");
        let reason = if authorization.is_some() {
            "unsupported_scheme"
        } else {
            "missing"
        };
        Err(self.refuse(reason, format!("authentication required: send {accepted}")))
    }

    async fn check_jwt(&self, jwt: &Jwt, token: &[u8]) -> Result<Identity, Refusal> {
        use jsonwebtoken::errors::ErrorKind as K;
        let token = std::str::from_utf8(token).unwrap_or_default().trim();
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            self.refuse_token(
                "malformed",
                "invalid bearer token: the token is not a valid JWT",
            )
        })?;
        // RFC 7515 §4.1.11: extensions the token marks critical must be understood, and
        // this gateway implements none (an empty list is not allowed either).
        if let Some(crit) = &header.crit {
            return Err(self.refuse_token(
                "unsupported_crit",
                format!(
                    "invalid bearer token: its header marks the extension(s) {:?} critical \
                     (crit), which this gateway does not support",
                    crit
                ),
            ));
        }
        let jwks_key;
        let key = match &jwt.keys {
            JwtKeys::One(key) => key,
            JwtKeys::Jwks(jwks) => {
                let kid = header.kid.clone().unwrap_or_default();
                jwks_key = jwks.key(&kid).await.ok_or_else(|| {
                    self.refuse_token(
                        "unknown_key",
                        format!("invalid bearer token: no key {kid:?} in the JWKS"),
                    )
                })?;
                if jwks_key.family() != header.alg.family() {
                    return Err(self.refuse_token(
                        "wrong_algorithm",
                        "invalid bearer token: the token's algorithm does not match its key",
                    ));
                }
                &jwks_key
            }
        };
        let data = jsonwebtoken::decode::<Value>(token, key, &jwt.validation).map_err(|e| {
            let (reason, what) = match e.kind() {
                K::ExpiredSignature => ("expired", "the token has expired".to_string()),
                K::ImmatureSignature => (
                    "not_yet_valid",
                    "the token is not valid yet (nbf)".to_string(),
                ),
                K::InvalidIssuer => (
                    "wrong_issuer",
                    "the token's issuer is not accepted".to_string(),
                ),
                K::InvalidAudience => (
                    "wrong_audience",
                    "the token is not for this audience".to_string(),
                ),
                K::InvalidAlgorithm => (
                    "wrong_algorithm",
                    "the token's algorithm is not accepted".to_string(),
                ),
                K::MissingRequiredClaim(c) => {
                    ("missing_claim", format!("the token lacks the {c} claim"))
                }
                K::InvalidSignature => (
                    "bad_signature",
                    "the token's signature does not verify".to_string(),
                ),
                _ => ("malformed", "the token is not a valid JWT".to_string()),
            };
            self.refuse_token(reason, format!("invalid bearer token: {what}"))
        })?;
        let Value::Object(claims) = data.claims else {
            return Err(self.refuse_token(
                "malformed",
                "invalid bearer token: its claims are not a JSON object",
            ));
        };
        let str_claim = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
        let subject = str_claim("sub").unwrap_or_default();
        let client_id = str_claim("client_id").or_else(|| str_claim("azp"));
        let scopes = token_scopes(&claims);
        if let Some(o) = &self.oauth {
            let missing: Vec<&str> = o
                .required_scopes
                .iter()
                .filter(|s| !scopes.contains(s))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(Refusal {
                    reason: "insufficient_scope",
                    message: format!(
                        "the token lacks the scope(s) {} this resource requires",
                        missing.join(" ")
                    ),
                    challenge: insufficient_scope_challenge(o, &[]),
                    forbidden: true,
                    throttled: None,
                });
            }
        }
        Ok(Identity {
            method: "jwt",
            subject,
            client_id,
            scopes,
            claims: Arc::new(claims),
            rule: self.name.clone(),
        })
    }

    fn check_api_key(&self, keys: &ApiKeys, presented: &[u8]) -> Result<Identity, Refusal> {
        let hash: [u8; 32] = Sha256::digest(presented).into();
        // Compare with every key, whatever matches, so timing says nothing about which.
        let mut found = None;
        for (i, (h, _)) in keys.keys.iter().enumerate() {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(i);
            }
        }
        let (_, grant) = found.and_then(|i| keys.keys.get(i)).ok_or_else(|| {
            self.refuse("bad_api_key", format!("unknown API key in {}", keys.header))
        })?;
        Ok(Identity {
            method: "api_key",
            subject: grant.id.clone(),
            client_id: Some(grant.id.clone()),
            scopes: grant.scopes.clone(),
            claims: grant.claims.clone(),
            rule: self.name.clone(),
        })
    }

    async fn check_basic(
        &self,
        basic: &Basic,
        b64: &[u8],
        at: &Attempt<'_>,
    ) -> Result<Identity, Refusal> {
        let bad = || self.refuse("bad_password", "wrong user name or password");
        let throttle = at.throttle;
        let (decoded, user, password) = match decode_basic(b64) {
            Some(parts) => parts,
            None => {
                // Malformed credentials: a failure of the address (there is no user).
                throttle.check(at.ip, None).map_err(|t| self.throttled(t))?;
                throttle.failed(at.ip, None);
                return Err(bad());
            }
        };
        let who = Some((self.name.as_str(), user.as_str()));
        throttle.check(at.ip, who).map_err(|t| self.throttled(t))?;
        let known = basic.users.iter().position(|(_, g)| g.id == user);
        // A credential that verified a moment ago: no hash again.
        let tag = throttle.tag(&self.name, &decoded);
        if let Some(i) = known {
            let now = now_ms();
            let cached = basic.verified[i].load();
            if cached
                .as_ref()
                .is_some_and(|v| now < v.until && bool::from(v.tag.ct_eq(&tag)))
            {
                let grant = &basic.users[i].1;
                return Ok(self.basic_identity(grant));
            }
        }
        // An unknown user is checked against another user's hash and refused anyway, so
        // the answer takes as long as for a known one (no user enumeration by timing).
        let (hash, _) = basic.users[known.unwrap_or(0)].clone();
        let permit = throttle.permit().map_err(|t| self.throttled(t))?;
        // Slow on purpose: off the proxy's worker threads, holding the slot until done.
        let ok = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            if hash.starts_with("$argon2") {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(&hash)
                    .map(|h| {
                        argon2::Argon2::default()
                            .verify_password(password.as_bytes(), &h)
                            .is_ok()
                    })
                    .unwrap_or(false)
            } else {
                bcrypt::verify(&password, &hash).unwrap_or(false)
            }
        })
        .await
        .unwrap_or(false);
        let ok = ok && known.is_some();
        let result = if ok { "ok" } else { "failed" };
        metrics::counter(&METRICS.password_verifications, &[result]).inc();
        let Some(i) = known.filter(|_| ok) else {
            throttle.failed(at.ip, who);
            return Err(bad());
        };
        log::debug!("auth: password of {user:?} verified (rule {})", self.name);
        if throttle.cache_ttl_ms() > 0 {
            basic.verified[i].store(Some(Arc::new(Verified {
                tag,
                until: now_ms().saturating_add(throttle.cache_ttl_ms()),
            })));
        }
        Ok(self.basic_identity(&basic.users[i].1))
    }

    fn basic_identity(&self, grant: &Grant) -> Identity {
        Identity {
            method: "basic",
            subject: grant.id.clone(),
            client_id: None,
            scopes: grant.scopes.clone(),
            claims: grant.claims.clone(),
            rule: self.name.clone(),
        }
    }
}

/// `Authorization: Basic` credentials: the decoded `user:password`, the user, the password.
fn decode_basic(b64: &[u8]) -> Option<(Vec<u8>, String, String)> {
    let decoded = STANDARD.decode(b64.trim_ascii()).ok()?;
    let text = std::str::from_utf8(&decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    let (user, password) = (user.to_string(), password.to_string());
    Some((decoded, user, password))
}
