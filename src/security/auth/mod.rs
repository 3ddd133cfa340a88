//! Client authentication: bearer JWTs, API keys, Basic passwords and TLS client
//! certificates, per route; [`Auth`] holds every rule and answers for a request.
//!
//! `security.auth` is an ordered list of rules; the first whose `routes` include the
//! request's route applies (a route no rule covers is open). Within a rule the credential
//! the request carries picks the method (`rules`). No credential, or one the rule does
//! not accept, is `401` with a `WWW-Authenticate` challenge naming what it accepts.
//!
//! * `identity`: [`Identity`] and [`Refusal`], shared by every method.
//! * `rules`: a rule, the choice of method, challenges and refusals.
//! * `jwt`: bearer JWTs — key families, `alg: none` never, `exp` required, `nbf`,
//!   issuer and audience, critical header extensions (`crit`) refused; keys from a
//!   secret, a PEM public key, or a JWKS kept current by `jwks`.
//! * `api_key`: only their SHA-256 is configured, compared in constant time.
//! * `basic`: argon2 or bcrypt hashes, verified on a blocking thread, a bounded number
//!   at once; a credential that verified is remembered briefly by a keyed hash.
//! * `oauth`: RFC 9728 resource metadata and the scopes an OAuth route requires.
//! * `client_cert`: a request carrying none of the above on a connection whose
//!   certificate was verified against `server.tls.client_ca` is identified by that
//!   certificate (read by [`super::tls`], which knows nothing of identities).
//! * [`throttle`]: failed attempts counted per client IP (and per Basic user name) and,
//!   past `security.auth_throttle.max_failures`, refused before any check.

mod api_key;
mod basic;
mod client_cert;
mod identity;
mod jwks;
mod jwt;
mod oauth;
mod rules;
pub mod throttle;

pub use identity::{Identity, Refusal};
pub use oauth::RESOURCE_METADATA_PATH;
pub use throttle::Throttled;

use crate::clock::now_ms;
use crate::config::SecurityConfig;
use crate::security::tls::ClientCert;
use rules::Rule;
use std::collections::HashMap;
use std::net::IpAddr;
use throttle::{Attempt, AuthThrottle};

/// Problems found building auth: `(path, message)`.
type Problems = Vec<(String, String)>;

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
    pub fn build(cfg: &SecurityConfig) -> Result<Auth, Problems> {
        let mut errs = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in cfg.auth.iter().enumerate() {
            let at = |k: &str| format!("security.auth[{i}].{k}");
            match rules::build(i, r) {
                Ok(rule) => rules.push(rule),
                Err(problems) => errs.extend(problems.into_iter().map(|(k, m)| (at(&k), m))),
            }
        }
        let metadata = oauth::documents(cfg, &mut errs);
        if !errs.is_empty() {
            return Err(errs);
        }
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
        rule.oauth.as_ref().map(|o| o.insufficient_scope(scopes))
    }

    /// When a bearer token the gateway accepted on `route` stops being valid (its `exp`
    /// and the rule's leeway, Unix seconds): a connection opened with it (a WebSocket, a
    /// legacy SSE stream) is served no further message past it. `None`: no expiry (an
    /// API key, a password, a certificate).
    pub fn expiry(&self, route: &str, who: &Identity) -> Option<u64> {
        if who.method != "jwt" {
            return None;
        }
        let exp = who.claims.get("exp").and_then(serde_json::Value::as_u64)?;
        let leeway = self.rule_for(route).and_then(Rule::jwt_leeway).unwrap_or(0);
        Some(exp.saturating_add(leeway))
    }

    fn rule_for(&self, route: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.covers(route))
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
