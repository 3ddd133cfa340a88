//! OAuth resource-server support (MCP authorization): a protected route's RFC 9728
//! Protected Resource Metadata document, the `resource_metadata` and scopes its challenges
//! name (RFC 6750), and the scopes its tokens must carry. Its tokens are JWTs for its
//! resource (RFC 8707), checked by [`super::jwt`].

use super::{Problems, Refusal};
use crate::config::{AuthRule, OAuthConfig, SecurityConfig};
use std::collections::HashMap;

/// The well-known path of RFC 9728 Protected Resource Metadata.
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// An OAuth-protected route (RFC 9728).
pub(super) struct OAuth {
    /// Where clients find the metadata (an absolute URL).
    metadata_url: String,
    required_scopes: Vec<String>,
}

/// An absolute `http(s)` URL without a fragment.
fn is_http_url(u: &str) -> bool {
    !u.contains('#')
        && u.parse::<http::Uri>()
            .ok()
            .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
}

/// The OAuth side of rule `r`; problems are named under the rule.
pub(super) fn build(r: &AuthRule, o: &OAuthConfig) -> Result<OAuth, Problems> {
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

/// The Protected Resource Metadata documents of every OAuth rule, by request path; two
/// rules describing one route are a problem (named under `security.auth`).
pub(super) fn documents(
    cfg: &SecurityConfig,
    errs: &mut Problems,
) -> HashMap<String, bytes::Bytes> {
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
    metadata
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

impl OAuth {
    /// The Bearer challenge's parameters: where the client finds the authorization
    /// server, and the scopes to ask for.
    pub(super) fn challenge_params(&self, bearer: &mut String) {
        bearer.push_str(&format!(", resource_metadata=\"{}\"", self.metadata_url));
        if !self.required_scopes.is_empty() {
            bearer.push_str(&format!(", scope=\"{}\"", self.required_scopes.join(" ")));
        }
    }

    /// `Bearer error="insufficient_scope"` naming the scopes to ask for (RFC 6750 §3.1).
    pub(super) fn insufficient_scope(&self, scopes: &[String]) -> String {
        let mut all: Vec<&str> = self.required_scopes.iter().map(String::as_str).collect();
        for s in scopes {
            if !all.contains(&s.as_str()) {
                all.push(s);
            }
        }
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
            all.join(" "),
            self.metadata_url
        )
    }

    /// A `403` unless a token's `scopes` hold every scope this resource requires.
    pub(super) fn require_scopes(&self, scopes: &[String]) -> Result<(), Refusal> {
        let missing: Vec<&str> = self
            .required_scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Refusal {
            reason: "insufficient_scope",
            message: format!(
                "the token lacks the scope(s) {} this resource requires",
                missing.join(" ")
            ),
            challenge: self.insufficient_scope(&[]),
            forbidden: true,
            throttled: None,
        })
    }
}
