//! Identity for upstreams that want it: the authenticated client, as a short-lived HS256
//! JWT in a header of the group's choosing, signed with a secret the servers share.
//! The client never controls the header: whatever it sent under that name is dropped.

use super::auth::Identity;
use crate::config::ForwardIdentityConfig;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct ForwardIdentity {
    pub header: http::HeaderName,
    key: EncodingKey,
    audience: String,
    ttl: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    /// How the client authenticated: `jwt`, `api_key`, `basic` or `client_cert`.
    auth_method: &'a str,
    iat: u64,
    exp: u64,
    /// The gateway's request id: ties the token to one request in the logs.
    jti: &'a str,
}

/// The `iss` of the tokens the gateway signs.
pub const ISSUER: &str = "mcp-gateway";

impl ForwardIdentity {
    /// Built from a validated config (see `config::load`).
    pub fn new(group: &str, c: &ForwardIdentityConfig) -> Result<ForwardIdentity, String> {
        Ok(ForwardIdentity {
            header: http::HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
                format!(
                    "forward_identity.header: {:?} is not a header name",
                    c.header
                )
            })?,
            key: EncodingKey::from_secret(c.secret.as_bytes()),
            audience: c.audience.clone().unwrap_or_else(|| group.to_string()),
            ttl: c.ttl.0,
        })
    }

    /// The signed token for `who` on request `request_id`.
    pub fn token(&self, who: &Identity, request_id: &str) -> Option<http::HeaderValue> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: ISSUER,
            aud: &self.audience,
            sub: &who.subject,
            client_id: who.client_id.as_deref(),
            scope: who.scopes.join(" "),
            auth_method: who.method,
            iat: now,
            exp: now + self.ttl.as_secs().max(1),
            jti: request_id,
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &self.key)
            .map_err(|e| log::warn!("signing the forwarded identity failed: {e}"))
            .ok()?;
        http::HeaderValue::from_str(&token).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use std::sync::Arc;

    #[test]
    fn token_verifies_with_the_shared_secret() {
        let secret = "0123456789abcdef0123456789abcdef";
        let f = ForwardIdentity::new(
            "files",
            &ForwardIdentityConfig {
                secret: secret.into(),
                ..Default::default()
            },
        )
        .unwrap();
        let who = Identity {
            method: "api_key",
            subject: "ci".into(),
            client_id: Some("ci".into()),
            scopes: vec!["a".into(), "b".into()],
            claims: Arc::default(),
            rule: "r".into(),
        };
        let token = f.token(&who, "req-1").unwrap();
        let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_audience(&["files"]);
        v.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            token.to_str().unwrap(),
            &DecodingKey::from_secret(secret.as_bytes()),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "ci");
        assert_eq!(data.claims["scope"], "a b");
        assert_eq!(data.claims["auth_method"], "api_key");
        assert_eq!(data.claims["jti"], "req-1");
        assert_eq!(f.header, "x-mcp-identity");
    }
}
