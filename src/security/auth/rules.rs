//! The rules that pick among the methods: one [`Rule`] per `security.auth` entry, built
//! from its config; within it the credential a request carries picks the method
//! (`Authorization: Bearer` → JWT, the API-key header → API key, `Authorization: Basic`
//! → password, else the TLS client certificate). No credential, or one the rule does not
//! accept, is refused with a `WWW-Authenticate` challenge naming what it accepts; a wrong
//! one counts against the client in the throttle.

use super::api_key::{self, ApiKeys};
use super::basic::{self, Basic};
use super::identity::Failure;
use super::jwt::{self, Jwt};
use super::oauth::{self, OAuth};
use super::throttle::{Attempt, Throttled};
use super::{client_cert, Identity, Problems, Refusal};
use crate::config::AuthRule;
use crate::security::tls::ClientCert;

pub(super) struct Rule {
    name: String,
    routes: Vec<String>,
    jwt: Option<Jwt>,
    pub(super) api_keys: Option<ApiKeys>,
    basic: Option<Basic>,
    pub(super) oauth: Option<OAuth>,
    client_cert: bool,
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

/// Rule `i`; problems come back as `(path under the rule, message)`.
pub(super) fn build(i: usize, r: &AuthRule) -> Result<Rule, Problems> {
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
        .and_then(|o| oauth::build(r, o).map_err(|e| errs.extend(e)).ok());
    // An OAuth route's tokens must be meant for it (RFC 8707): its resource is their audience.
    let jwt = r.jwt.as_ref().and_then(|c| {
        let mut c = c.clone();
        if let Some(o) = &r.oauth {
            c.audience = Some(o.resource.clone());
        }
        jwt::build(&c).map_err(|e| errs.extend(e)).ok()
    });
    let api_keys = r
        .api_keys
        .as_ref()
        .and_then(|c| api_key::build(c).map_err(|e| errs.extend(e)).ok());
    let basic = r
        .basic
        .as_ref()
        .and_then(|c| basic::build(c).map_err(|e| errs.extend(e)).ok());
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

impl Rule {
    /// The leeway of this rule's JWT `exp` check (seconds), if it takes JWTs.
    pub(super) fn jwt_leeway(&self) -> Option<u64> {
        self.jwt.as_ref().map(Jwt::leeway)
    }

    /// Does this rule apply to `route` (a rule without routes covers every route)?
    pub(super) fn covers(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|p| p == route)
    }

    fn challenge(&self, invalid_token: bool) -> String {
        let mut schemes = Vec::new();
        if self.jwt.is_some() {
            let mut bearer = "Bearer realm=\"mcp-gateway\"".to_string();
            if invalid_token {
                bearer.push_str(", error=\"invalid_token\"");
            }
            if let Some(o) = &self.oauth {
                // MCP authorization: where the client finds the authorization server.
                o.challenge_params(&mut bearer);
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
        check: impl std::future::Future<Output = Result<Identity, Failure>>,
    ) -> Result<Identity, Refusal> {
        at.throttle
            .check(at.ip, None)
            .map_err(|t| self.throttled(t))?;
        let result = check.await.map_err(|f| self.answer(f));
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

    /// A method's failure, with this rule's challenge.
    fn answer(&self, failure: Failure) -> Refusal {
        match failure {
            Failure::Refused {
                reason,
                message,
                token: false,
            } => self.refuse(reason, message),
            Failure::Refused {
                reason,
                message,
                token: true,
            } => self.refuse_token(reason, message),
            Failure::Throttled(t) => self.throttled(t),
            Failure::Refusal(r) => r,
        }
    }

    /// Authenticate a request under this rule: by the credential it carries, else by its
    /// connection's verified client certificate (`cert`).
    pub(super) async fn check(
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
            return self
                .throttled_check(at, jwt.check(&self.name, self.oauth.as_ref(), token))
                .await;
        }
        if let Some(keys) = &self.api_keys {
            if let Some(key) = headers.get(&keys.header) {
                let key = key.as_bytes();
                return self
                    .throttled_check(at, async { keys.check(&self.name, key) })
                    .await;
            }
        }
        if let (Some(b64), Some(basic)) = (scheme("Basic "), &self.basic) {
            return basic
                .check(&self.name, b64, at)
                .await
                .map_err(|f| self.answer(f));
        }
        if let (true, Some(cert)) = (self.client_cert, cert) {
            return Ok(client_cert::identity(cert, &self.name));
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
}
