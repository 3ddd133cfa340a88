//! The one error type at the edge: every response the gateway produces itself is a
//! JSON-RPC error object, and this exhaustive `match` decides its HTTP status and code.

use serde_json::value::RawValue;

/// JSON-RPC / MCP error codes the gateway uses.
pub mod code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const INTERNAL_ERROR: i32 = -32603;
    pub const INVALID_PARAMS: i32 = -32602;
    /// MCP: routing headers disagree with the body.
    pub const HEADER_MISMATCH: i32 = -32020;
    /// What the SDKs answer for an unknown or ended session.
    pub const SESSION_NOT_FOUND: i32 = -32001;
    /// The gateway's own (server-defined range): the client is not authenticated.
    pub const UNAUTHORIZED: i32 = -32010;
    /// The gateway's own: a rate limit refused the request.
    pub const RATE_LIMITED: i32 = -32011;
    /// The gateway's own: a browser origin that is not allowed.
    pub const FORBIDDEN_ORIGIN: i32 = -32012;
    /// The gateway's own: authenticated, but not allowed (a policy, or missing scopes).
    pub const FORBIDDEN: i32 = -32013;
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    HeaderMismatch(String),
    #[error("Content-Type must be application/json for an MCP POST, got {0:?}")]
    UnsupportedMediaType(String),
    #[error("the request body exceeds the limit of {limit} bytes (limits.max_request_body)")]
    PayloadTooLarge { limit: u64 },
    #[error("the request head ({size} bytes) exceeds the limit of {limit} bytes (limits.max_request_headers)")]
    HeadersTooLarge { size: u64, limit: u64 },
    #[error("no MCP endpoint at {0:?}")]
    NoRoute(String),
    #[error("origin {0:?} is not allowed to call this gateway (security.cors.allowed_origins)")]
    ForbiddenOrigin(String),
    /// A `Host` (or `:authority`) the listener does not answer for, or none (`host` empty).
    #[error("{}", misdirected(host, setting))]
    MisdirectedRequest {
        host: String,
        /// The list that decides: `server.allowed_hosts` or `admin.allowed_hosts`.
        setting: &'static str,
    },
    #[error("{message}")]
    RateLimited {
        rule: String,
        limit: u32,
        retry_after: u64,
        message: String,
    },
    #[error("{message}")]
    Unauthorized {
        reason: &'static str,
        message: String,
        challenge: String,
    },
    #[error("{message}")]
    Forbidden {
        /// `policy` or `insufficient_scope` (a bounded metric label).
        reason: &'static str,
        message: String,
        /// `WWW-Authenticate` asking an OAuth client for more scopes.
        challenge: Option<String>,
    },
    #[error("HTTP method {0} is not allowed on an MCP endpoint (use POST, GET or DELETE)")]
    MethodNotAllowed(String),
    #[error("session not found: the Mcp-Session-Id is unknown, expired, was issued to another client or not by this gateway; start a new session with initialize")]
    SessionNotFound,
    #[error("the server that holds this session ({0}) is no longer part of the group; start a new session with initialize")]
    SessionServerGone(String),
    #[error(
        "the server that holds this session ({0}) is down; start a new session with initialize"
    )]
    SessionServerDown(String),
    #[error("no server of upstream group {0:?} is available")]
    NoUpstream(String),
    /// `detail` (Pingora's text, with internal addresses) goes to the log, never to the
    /// client: see [`GatewayError::detail`].
    #[error("upstream server {server} of group {group:?} failed before answering (the gateway's log has the details)")]
    UpstreamFailed {
        group: String,
        server: String,
        detail: String,
    },
    #[error("upstream server {server} of group {group:?} did not answer in time (timeouts.connect, timeouts.request; the gateway's log has the details)")]
    UpstreamTimeout {
        group: String,
        server: String,
        detail: String,
    },
    #[error("upstream server {server} of group {group:?} answered 101 Switching Protocols; the gateway does not tunnel protocol upgrades")]
    UpstreamSwitchedProtocols { group: String, server: String },
    /// A virtual server's member failed and the virtual server fails closed.
    #[error(
        "member {member:?} (upstream group {group:?}) of this virtual server failed: {reason}"
    )]
    MemberFailed {
        member: String,
        group: String,
        reason: String,
    },
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    #[error("the request body stalled: nothing arrived for {0:?} (limits.request_body_timeout)")]
    BodyTimeout(std::time::Duration),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("the client closed the connection before the response was complete")]
    ClientClosed,
    /// Too busy to check the request now (every password-verification slot in use).
    #[error("{0}")]
    Busy(String),
    /// The text goes to the log only (it may come from Pingora).
    #[error("internal error in the gateway (its log has the details)")]
    Internal(String),
    /// A request the gateway refuses as an MCP server would (an unknown tool, arguments
    /// a transform cannot apply to): HTTP 200 with `-32602`.
    #[error("{0}")]
    InvalidParams(String),
}

fn misdirected(host: &str, setting: &str) -> String {
    if host.is_empty() {
        format!(
            "the request names no host (Host header or :authority); this gateway answers only for the hosts in {setting}"
        )
    } else {
        format!(
            "host {host:?} is not served here: this gateway answers only for the hosts in {setting} (a request for another name may come from a DNS-rebinding web page; add the name there if it is yours)"
        )
    }
}

impl GatewayError {
    /// The HTTP status and JSON-RPC code of this error.
    pub fn status_and_code(&self) -> (u16, i32) {
        use GatewayError::*;
        match self {
            Parse(_) => (400, code::PARSE_ERROR),
            InvalidRequest(_) => (400, code::INVALID_REQUEST),
            HeaderMismatch(_) => (400, code::HEADER_MISMATCH),
            UnsupportedMediaType(_) => (415, code::INVALID_REQUEST),
            PayloadTooLarge { .. } => (413, code::INVALID_REQUEST),
            HeadersTooLarge { .. } => (431, code::INVALID_REQUEST),
            NoRoute(_) => (404, code::INVALID_REQUEST),
            Unauthorized { .. } => (401, code::UNAUTHORIZED),
            RateLimited { .. } => (429, code::RATE_LIMITED),
            ForbiddenOrigin(_) => (403, code::FORBIDDEN_ORIGIN),
            MisdirectedRequest { .. } => (421, code::INVALID_REQUEST),
            Forbidden { .. } => (403, code::FORBIDDEN),
            MethodNotAllowed(_) => (405, code::INVALID_REQUEST),
            SessionNotFound | SessionServerGone(_) | SessionServerDown(_) => {
                (404, code::SESSION_NOT_FOUND)
            }
            NoUpstream(_) => (503, code::INTERNAL_ERROR),
            UpstreamFailed { .. } => (502, code::INTERNAL_ERROR),
            UpstreamTimeout { .. } => (504, code::INTERNAL_ERROR),
            UpstreamSwitchedProtocols { .. } => (502, code::INTERNAL_ERROR),
            MemberFailed { .. } => (502, code::INTERNAL_ERROR),
            BodyRead(_) => (400, code::INVALID_REQUEST),
            BodyTimeout(_) => (408, code::INVALID_REQUEST),
            NotAcceptable(_) => (406, code::INVALID_REQUEST),
            // Never sent (nobody is listening); 499 as nginx logs it.
            ClientClosed => (499, code::INTERNAL_ERROR),
            Busy(_) => (503, code::INTERNAL_ERROR),
            Internal(_) => (500, code::INTERNAL_ERROR),
            InvalidParams(_) => (200, code::INVALID_PARAMS),
        }
    }

    /// A short, bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        use GatewayError::*;
        match self {
            Parse(_) => "parse_error",
            InvalidRequest(_) => "invalid_request",
            HeaderMismatch(_) => "header_mismatch",
            UnsupportedMediaType(_) => "unsupported_media_type",
            PayloadTooLarge { .. } => "payload_too_large",
            HeadersTooLarge { .. } => "headers_too_large",
            NoRoute(_) => "no_route",
            Unauthorized { .. } => "unauthorized",
            RateLimited { .. } => "rate_limited",
            ForbiddenOrigin(_) => "forbidden_origin",
            MisdirectedRequest { .. } => "misdirected_request",
            Forbidden { .. } => "forbidden",
            MethodNotAllowed(_) => "method_not_allowed",
            SessionNotFound => "session_not_found",
            SessionServerGone(_) => "session_server_gone",
            SessionServerDown(_) => "session_server_down",
            NoUpstream(_) => "no_upstream",
            UpstreamFailed { .. } => "upstream_failed",
            UpstreamTimeout { .. } => "upstream_timeout",
            UpstreamSwitchedProtocols { .. } => "upstream_switched_protocols",
            MemberFailed { .. } => "member_failed",
            BodyRead(_) => "body_read",
            BodyTimeout(_) => "body_timeout",
            NotAcceptable(_) => "not_acceptable",
            ClientClosed => "client_closed",
            Busy(_) => "busy",
            Internal(_) => "internal",
            InvalidParams(_) => "invalid_params",
        }
    }

    /// What the log gets beyond the client's message: Pingora's text, which names
    /// internal addresses. Never part of an answer.
    pub fn detail(&self) -> Option<&str> {
        use GatewayError::*;
        match self {
            UpstreamFailed { detail, .. } | UpstreamTimeout { detail, .. } | Internal(detail) => {
                Some(detail)
            }
            _ => None,
        }
    }

    /// The JSON-RPC error body, echoing the request id when it is known.
    pub fn to_body(&self, id: Option<&RawValue>) -> Vec<u8> {
        let (_, code) = self.status_and_code();
        let message =
            serde_json::to_string(&self.to_string()).unwrap_or_else(|_| "\"error\"".into());
        let id = id.map(|v| v.get()).unwrap_or("null");
        format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#)
            .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_jsonrpc_error() {
        let id = RawValue::from_string("7".into()).unwrap();
        let up = GatewayError::UpstreamFailed {
            group: "g".into(),
            server: "s1".into(),
            detail: "ConnectRefused context: Fail to connect to 10.1.2.3:8443".into(),
        };
        let body = String::from_utf8(up.to_body(None)).unwrap();
        assert!(body.contains(r#"server s1 of group \"g\""#), "{body}");
        assert!(
            !body.contains("10.1.2.3") && !body.contains("8443"),
            "{body}"
        );
        assert_eq!(
            up.detail(),
            Some("ConnectRefused context: Fail to connect to 10.1.2.3:8443")
        );
        let e = GatewayError::HeaderMismatch("Mcp-Method header \"a\" does not match".into());
        let v: serde_json::Value = serde_json::from_slice(&e.to_body(Some(&id))).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32020);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Method"));
        let v: serde_json::Value =
            serde_json::from_slice(&GatewayError::SessionNotFound.to_body(None)).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(e.status_and_code().0, 400);
    }
}
