//! The admin service: a separate Pingora service (one thread, loopback by default) with
//! health probes, Prometheus `/metrics` and the REST API under `/api/v1`.
//!
//! * `GET /health`, `/liveness`, `/readiness`, `/metrics`: no token;
//! * `/api/v1/*`: `Authorization: Bearer <admin.token>`, compared in constant time.
//!   With no token configured the API answers `403` (and config validation keeps the
//!   service on loopback).
//!
//! Every answer is JSON (`/metrics` is Prometheus text); errors are
//! `{"error": "<message>"}` with the matching status; unknown routes get `404`. A request
//! for a host not in `admin.allowed_hosts` gets `421` with the gateway's JSON-RPC error
//! object, like the proxy port, before anything else.

mod api;
mod cache;

/// The live dashboard: one self-contained page (no external assets) that polls
/// `/api/v1/summary` with the admin token the user gives it.
const DASHBOARD: &str = include_str!("dashboard.html");

use crate::config::AdminConfig;
use crate::state::State;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

pub struct Admin {
    /// The running config and state (both change with a reload).
    pub live: Arc<crate::live::Live>,
    started: Instant,
    /// Serializes changes to upstream membership.
    changes: tokio::sync::Mutex<()>,
}

impl Admin {
    pub fn new(live: Arc<crate::live::Live>) -> Admin {
        Admin {
            live,
            started: Instant::now(),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The current state.
    pub fn state(&self) -> Arc<State> {
        self.live.state()
    }

    /// The running config (defaults filled in), secrets redacted.
    pub fn config_redacted(&self) -> Value {
        let mut v = serde_json::to_value(&self.live.loaded().config).unwrap_or(Value::Null);
        redact(&mut v);
        v
    }

    /// Does the request carry the admin token? (Constant-time on the token bytes.)
    fn authorized(&self, session: &ServerSession) -> Result<(), (StatusCode, String)> {
        let loaded = self.live.loaded();
        let Some(token) = loaded.config.admin.token().map(str::as_bytes) else {
            return Err((
                StatusCode::FORBIDDEN,
                "the admin API is disabled: set admin.token to use it".into(),
            ));
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if given.len() == token.len() && bool::from(given.ct_eq(token)) {
            Ok(())
        } else {
            Err((
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token (Authorization: Bearer <admin.token>)".into(),
            ))
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    /// Every answer with its `Content-Length`: Pingora sends a body without one as
    /// delimited by the close, while saying `Connection: keep-alive`.
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut r = self.answer(session).await;
        let len = http::HeaderValue::from(r.body().len());
        r.headers_mut().insert(http::header::CONTENT_LENGTH, len);
        r
    }
}

impl Admin {
    async fn answer(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // DNS rebinding: a page under another name must not read /metrics or drive the
        // dashboard, so a foreign Host is refused before anything else.
        let probe = crate::proxy::health::is_probe(session.req_header().uri.path());
        if let Err(e) = self.state().edge.admin_hosts.check(
            session.req_header(),
            false,
            probe,
            "admin.allowed_hosts",
        ) {
            let (status, _) = e.status_and_code();
            return reply(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                "application/json",
                e.to_body(None),
            );
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/health" | "/liveness" | "/readiness") => {
                let (status, body) =
                    crate::proxy::health::answer(&path, &self.state(), self.live.draining())
                        .unwrap_or((404, Vec::new()));
                reply(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    "application/json",
                    body,
                )
            }
            ("GET", "/dashboard") => {
                let mut r = reply(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    DASHBOARD.as_bytes().to_vec(),
                );
                // Everything is inline and data comes from this origin: say so.
                r.headers_mut().insert(
                    http::header::CONTENT_SECURITY_POLICY,
                    http::HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                    ),
                );
                r
            }
            ("GET", "/metrics") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                {
                    self.state().groups.publish_gauges();
                    crate::telemetry::metrics::METRICS.render()
                },
            ),
            (_, p) if p.starts_with("/api/v1/") || p == "/api/v1" => {
                if let Err((status, message)) = self.authorized(session) {
                    let mut r = error(status, &message);
                    if status == StatusCode::UNAUTHORIZED {
                        r.headers_mut().insert(
                            http::header::WWW_AUTHENTICATE,
                            http::HeaderValue::from_static("Bearer realm=\"mcp-gateway admin\""),
                        );
                    }
                    return r;
                }
                match api::mutate(self, session, method.as_str(), p).await {
                    Ok(Some((status, v))) => {
                        return reply(status, "application/json", v.to_string().into_bytes())
                    }
                    Ok(None) => {}
                    Err((status, message)) => return error(status, &message),
                }
                match api::route(self, method.as_str(), p) {
                    Ok(v) => reply(
                        StatusCode::OK,
                        "application/json",
                        v.to_string().into_bytes(),
                    ),
                    Err((status, message)) => error(status, &message),
                }
            }
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("no admin endpoint {method} {path}"),
            ),
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        json!({ "error": message }).to_string().into_bytes(),
    )
}

/// Keys whose values are secrets, wherever they appear in the config.
/// (`hash` and `sha256`: password and API-key hashes, not secrets themselves, but no
/// business of an admin API reader either.)
const SECRET_KEYS: &[&str] = &[
    "keys", "token", "secret", "password", "api_key", "bearer", "hash", "sha256",
];

/// Replace every secret in the config tree with `"<redacted>"` (non-empty values only),
/// and the password of any URL with user info.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) {
                    redact_all(val);
                } else if k == "upstream_auth" {
                    // `{header, value}`: the header name is not secret, its value is.
                    if let Some(auth) = val.as_object_mut() {
                        for (ak, av) in auth.iter_mut() {
                            if ak != "header" {
                                redact_all(av);
                            }
                        }
                    }
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some(clean) = redact_url_password(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

fn redact_all(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(redact_all),
        Value::String(s) if !s.is_empty() => *s = "<redacted>".into(),
        Value::Null | Value::String(_) => {}
        other => *other = Value::String("<redacted>".into()),
    }
}

/// `scheme://user:pass@host…` → `scheme://user:<redacted>@host…`.
fn redact_url_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let at = rest.find('@')?;
    let slash = rest.find('/').unwrap_or(rest.len());
    if at > slash {
        return None;
    }
    let (user, _) = rest[..at].split_once(':')?;
    Some(format!("{scheme}://{user}:<redacted>{}", &rest[at..]))
}

/// The admin service: listens on `admin.host:admin.port` with one thread.
pub fn service(admin: Admin, cfg: &AdminConfig) -> Result<Service<HttpServer<Admin>>, String> {
    let ip: std::net::IpAddr = cfg
        .host
        .parse()
        .map_err(|_| format!("admin.host: {:?} is not an IP address", cfg.host))?;
    let mut svc = Service::new("mcp-gateway admin".to_string(), HttpServer::new_app(admin));
    svc.add_tcp(&std::net::SocketAddr::new(ip, cfg.port).to_string());
    svc.threads = Some(1);
    Ok(svc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let mut v = json!({
            "sessions": {"keys": ["abc", ""], "ttl": "1day"},
            "admin": {"token": "0123456789abcdef", "port": 9090},
            "security": {"auth": [{"jwt": {"secret": "s3cr3t", "algorithms": ["HS256"]}, "basic": {"users": [{"name": "alice", "hash": "$argon2id$x"}]}}],
                         "rate_limiting": {"redis": "redis://:r3dis@cache:6379/0", "redis_key_prefix": "rl:"}},
            "auth": {"upstream_auth": {"header": "X-Api-Key", "value": "k-123", "bearer": null}},
            "upstream": {"groups": {"g": {"servers": [{"url": "https://u:p4ss@h:1/mcp"}, {"url": "http://h/mcp"}]}}},
        });
        redact(&mut v);
        assert_eq!(v["sessions"]["keys"], json!(["<redacted>", ""]));
        assert_eq!(v["sessions"]["ttl"], "1day");
        assert_eq!(v["admin"]["token"], "<redacted>");
        assert_eq!(v["admin"]["port"], 9090);
        let rule = &v["security"]["auth"][0];
        assert_eq!(rule["jwt"]["secret"], "<redacted>");
        assert_eq!(rule["jwt"]["algorithms"][0], "HS256");
        assert_eq!(rule["basic"]["users"][0]["name"], "alice");
        assert_eq!(rule["basic"]["users"][0]["hash"], "<redacted>");
        assert_eq!(
            v["security"]["rate_limiting"]["redis"],
            "redis://:<redacted>@cache:6379/0"
        );
        assert_eq!(v["security"]["rate_limiting"]["redis_key_prefix"], "rl:");
        assert_eq!(v["auth"]["upstream_auth"]["header"], "X-Api-Key");
        assert_eq!(v["auth"]["upstream_auth"]["value"], "<redacted>");
        assert!(v["auth"]["upstream_auth"]["bearer"].is_null());
        assert_eq!(
            v["upstream"]["groups"]["g"]["servers"][0]["url"],
            "https://u:<redacted>@h:1/mcp"
        );
        assert_eq!(
            v["upstream"]["groups"]["g"]["servers"][1]["url"],
            "http://h/mcp"
        );
    }
}
