//! Browser-facing safety: `Origin` validation (MCP requires it against DNS rebinding),
//! CORS preflights answered by the gateway, CORS and security headers on answers.
//!
//! A request without `Origin` (any non-browser client) passes. A request whose `Origin`
//! is not in `security.cors.allowed_origins`, nor the request's own origin (its scheme and
//! a `Host` checked against `server.allowed_hosts`), is refused with `403` before anything
//! else is read. A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed
//! origin is answered `204` with the CORS headers, never forwarded.

use crate::config::CorsConfig;
use http::{HeaderName, HeaderValue};

pub struct Cors {
    origins: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
    methods: Vec<String>,
}

impl std::fmt::Debug for Cors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cors")
            .field("origins", &self.origins)
            .finish()
    }
}

/// Is `origin` (`scheme://host[:port]`) the origin of a request to `scheme://authority`?
/// Host names compare without case; an omitted port is the scheme's default.
pub fn same_origin(origin: &str, scheme: &str, authority: &str) -> bool {
    let Some((origin_scheme, origin_authority)) = origin.split_once("://") else {
        return false;
    };
    if !origin_scheme.eq_ignore_ascii_case(scheme) {
        return false;
    }
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    use crate::security::edge::split_authority;
    match (
        split_authority(origin_authority),
        split_authority(authority),
    ) {
        (Some((oh, op)), Some((h, p))) => {
            oh.eq_ignore_ascii_case(h) && op.unwrap_or(default_port) == p.unwrap_or(default_port)
        }
        _ => false,
    }
}

/// Headers set on every answer from the proxy port.
pub const SECURITY_HEADERS: [(HeaderName, HeaderValue); 3] = [
    (
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    ),
    (
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
];

fn joined(items: &[String]) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&items.join(", "))
        .map_err(|_| format!("{items:?} is not a valid header value"))
}

impl Cors {
    pub fn build(c: &CorsConfig) -> Result<Cors, Vec<(String, String)>> {
        let mut errs = Vec::new();
        for (i, o) in c.allowed_origins.iter().enumerate() {
            let ok = o
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
                .is_some_and(|u| u.path() == "/" && !o.ends_with('/'));
            if !ok {
                errs.push((
                    format!("security.cors.allowed_origins[{i}]"),
                    format!("{o:?} is not an origin (scheme://host[:port], e.g. https://app.example.com)"),
                ));
            }
        }
        for (key, list) in [
            ("allowed_headers", &c.allowed_headers),
            ("exposed_headers", &c.exposed_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if HeaderName::from_bytes(h.as_bytes()).is_err() {
                    errs.push((
                        format!("security.cors.{key}[{i}]"),
                        format!("{h:?} is not a header name"),
                    ));
                }
            }
        }
        for (i, m) in c.allowed_methods.iter().enumerate() {
            if !["GET", "POST", "DELETE"].contains(&m.as_str()) {
                errs.push((
                    format!("security.cors.allowed_methods[{i}]"),
                    format!("{m:?}: MCP endpoints take GET, POST and DELETE"),
                ));
            }
        }
        let built = (|| {
            Ok::<_, String>(Cors {
                origins: c.allowed_origins.clone(),
                allow_methods: joined(&c.allowed_methods)?,
                allow_headers: joined(&c.allowed_headers)?,
                expose_headers: joined(&c.exposed_headers)?,
                max_age: HeaderValue::from(c.max_age.0.as_secs()),
                methods: c.allowed_methods.clone(),
            })
        })();
        match built {
            Ok(cors) if errs.is_empty() => Ok(cors),
            Ok(_) => Err(errs),
            Err(e) => {
                errs.push(("security.cors".into(), e));
                Err(errs)
            }
        }
    }

    /// `Ok(None)`: no `Origin`; `Ok(Some(origin))`: an allowed one; `Err(origin)`: refused.
    /// `own`: the request's own scheme and authority, when its `Host` was checked against
    /// `allowed_hosts`; an `Origin` equal to it is same-origin, and allowed.
    pub fn check_origin(
        &self,
        headers: &http::HeaderMap,
        own: Option<(&str, &str)>,
    ) -> Result<Option<HeaderValue>, String> {
        let Some(origin) = headers.get(http::header::ORIGIN) else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(origin.as_bytes());
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(&text))
            || own.is_some_and(|(scheme, authority)| same_origin(&text, scheme, authority))
        {
            Ok(Some(origin.clone()))
        } else {
            Err(text.into_owned())
        }
    }

    /// Is this request a CORS preflight?
    pub fn is_preflight(method: &http::Method, headers: &http::HeaderMap) -> bool {
        method == http::Method::OPTIONS
            && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    pub fn method_allowed(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| self.methods.iter().any(|a| a == m))
    }

    /// The CORS headers of an answer to an allowed `origin` (`preflight`: the long list).
    pub fn headers(&self, origin: &HeaderValue, preflight: bool) -> Vec<(HeaderName, HeaderValue)> {
        use http::header::*;
        let mut h = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (VARY, HeaderValue::from_static("Origin")),
        ];
        if preflight {
            h.push((ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone()));
            h.push((ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone()));
            h.push((ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        } else {
            h.push((ACCESS_CONTROL_EXPOSE_HEADERS, self.expose_headers.clone()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::same_origin;

    #[test]
    fn same_origins() {
        assert!(same_origin(
            "http://localhost:8080",
            "http",
            "localhost:8080"
        ));
        assert!(same_origin(
            "HTTP://LocalHost:8080",
            "http",
            "localhost:8080"
        ));
        assert!(same_origin(
            "https://mcp.example",
            "https",
            "mcp.example:443"
        ));
        assert!(same_origin("http://[::1]:80", "http", "[::1]"));
        assert!(!same_origin(
            "http://localhost:8081",
            "http",
            "localhost:8080"
        ));
        assert!(!same_origin(
            "https://localhost:8080",
            "http",
            "localhost:8080"
        ));
        assert!(!same_origin(
            "http://evil.example:8080",
            "http",
            "localhost:8080"
        ));
        assert!(!same_origin("null", "http", "localhost:8080"));
        assert!(!same_origin(
            "http://localhost:8080/x",
            "http",
            "localhost:8080"
        ));
    }
}
