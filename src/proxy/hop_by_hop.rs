//! The fields that describe one connection, not the message (RFC 9110 §7.6.1): what the
//! gateway refuses, strips or rewrites between the client's connection and the
//! upstream's, the same way for every request the gateway forwards (`proxy::relay`).
//!
//! * Requests: `Upgrade` is refused on MCP routes ([`check_request`]) but a WebSocket
//!   client's (`proxy::clients`, which the gateway answers itself); `Connection` may
//!   not name fields the gateway owns; the standard hop-by-hop fields, those `Connection`
//!   names, and `Expect` (the gateway answers `100 Continue` itself) never go upstream
//!   ([`strip_request`]).
//! * Responses: the standard hop-by-hop fields and those the upstream's `Connection`
//!   names never reach the client ([`strip_response`]); framing (`Content-Length`,
//!   `Transfer-Encoding`) is left to Pingora, which writes the client's own.

use crate::error::GatewayError;
use crate::upstream::head::{Fields, Head};
use http::header::{self, HeaderMap, HeaderName};
use pingora::http::RequestHeader;

/// At most this many `Connection` tokens (Pingora's proxy path refuses a tenth).
const MAX_CONNECTION_TOKENS: usize = 9;

/// Fields a `Connection` header may not name: removing them would strip what the
/// gateway tells the upstream about the request.
const PROTECTED: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Standard hop-by-hop request fields (RFC 9110 §7.6.1, plus `Proxy-Connection`,
/// `HTTP2-Settings` and `Expect`). `Transfer-Encoding` goes too: the gateway frames the
/// body it read with `Content-Length`.
static REQUEST: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
    header::EXPECT,
];

/// Standard hop-by-hop response fields. `Transfer-Encoding` and `Content-Length` frame
/// the body Pingora relays; it writes the client's `Connection` itself.
static RESPONSE: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// The fields of `names` a message has, found in one pass over its own fields (most
/// messages have none: nothing is parsed or looked up then).
pub(crate) fn present<const N: usize>(
    headers: &HeaderMap,
    names: &'static [HeaderName; N],
) -> impl Iterator<Item = &'static HeaderName> {
    let mut found = [false; N];
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|n| n == name) {
            found[i] = true;
        }
    }
    names.iter().zip(found).filter(|(_, f)| *f).map(|(n, _)| n)
}

/// Response fields never removed for being named in `Connection` (framing).
const RESPONSE_FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// The tokens of every `Connection` field, trimmed, empty ones skipped.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// An HTTP `token` (RFC 9110 §5.6.2).
fn is_token(t: &[u8]) -> bool {
    t.iter().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
    })
}

/// Refuse, before anything is read, a request whose connection fields the gateway will
/// not honour: an `Upgrade` (no protocol switch is tunnelled through the gateway; a
/// WebSocket client's, `websocket`, is served by the gateway itself) and a
/// `Connection` header naming a field the gateway owns, malformed, or too long.
pub fn check_request(req: &RequestHeader, websocket: bool) -> Result<(), GatewayError> {
    let switch = req
        .headers
        .get(header::UPGRADE)
        .filter(|_| !websocket && !only_h2c(req));
    if let Some(upgrade) = switch {
        return Err(GatewayError::InvalidRequest(format!(
            "protocol upgrades are not supported on MCP endpoints (Upgrade: {:?}): \
             send MCP over Streamable HTTP (POST, and GET for the SSE stream) without an \
             Upgrade header",
            String::from_utf8_lossy(upgrade.as_bytes())
        )));
    }
    let mut count = 0;
    for token in connection_tokens(&req.headers) {
        count += 1;
        if count > MAX_CONNECTION_TOKENS {
            return Err(GatewayError::InvalidRequest(format!(
                "the Connection header lists more than {MAX_CONNECTION_TOKENS} options"
            )));
        }
        let shown = String::from_utf8_lossy(token);
        if !is_token(token) {
            return Err(GatewayError::InvalidRequest(format!(
                "the Connection header option {shown:?} is not an HTTP token"
            )));
        }
        if PROTECTED
            .iter()
            .any(|p| p.as_bytes().eq_ignore_ascii_case(token))
        {
            return Err(GatewayError::InvalidRequest(format!(
                "the Connection header may not name {shown:?}: the gateway sets that field \
                 for the upstream"
            )));
        }
    }
    Ok(())
}

/// An offer of cleartext HTTP/2 only (`curl --http2` on `http://` sends one with every
/// request): ignored, as RFC 9110 §7.8 lets a server do, and the request is served over
/// HTTP/1.1 (its `Upgrade` and `HTTP2-Settings` never go upstream).
fn only_h2c(req: &RequestHeader) -> bool {
    let mut offers = req
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .peekable();
    offers.peek().is_some() && offers.all(|p| p.eq_ignore_ascii_case(b"h2c"))
}

/// The extension fields a `Connection` header names (standard ones are removed anyway).
fn nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    connection_tokens(headers)
        .take(MAX_CONNECTION_TOKENS)
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect()
}

/// Remove the request's connection fields: those its `Connection` names, then the
/// standard hop-by-hop ones (`Expect` included). Protected fields are never named here:
/// [`check_request`] refused such requests.
pub fn strip_request(headers: &mut Head) {
    for name in connection_fields(headers.client(), &PROTECTED, &REQUEST) {
        headers.remove(&name);
    }
}

/// Remove the response's connection fields: those the upstream's `Connection` names
/// (framing excepted), then the standard hop-by-hop ones.
pub fn strip_response(headers: &mut HeaderMap) {
    for name in connection_fields(headers, &RESPONSE_FRAMING, &RESPONSE) {
        headers.remove(&name);
    }
}

/// The fields `headers`' `Connection` names (but `kept`), then those of `standard` it has.
fn connection_fields<const N: usize>(
    headers: &HeaderMap,
    kept: &[&str],
    standard: &'static [HeaderName; N],
) -> Vec<HeaderName> {
    let mut names = Vec::new();
    if headers.contains_key(header::CONNECTION) {
        names.extend(
            nominated(headers)
                .into_iter()
                .filter(|name| !kept.contains(&name.as_str())),
        );
    }
    names.extend(present(headers, standard).cloned());
    names
}

/// The error for an upstream that answered `101 Switching Protocols`: nothing asked it
/// to (upgrades never go upstream), and a switched connection would carry traffic the
/// gateway cannot inspect.
pub fn switched_protocols(ctx: &super::ctx::RequestCtx) -> GatewayError {
    GatewayError::UpstreamSwitchedProtocols {
        group: ctx
            .group
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        server: ctx.server().map(|s| s.id.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn requests_lose_nominated_and_standard_fields() {
        let req = request(&[
            ("connection", "keep-alive, X-Hop"),
            ("connection", "x-other"),
            ("x-hop", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("expect", "100-continue"),
            ("proxy-authorization", "Basic eDp5"),
        ]);
        check_request(&req, false).unwrap();
        let mut headers = Head::new(&req.headers);
        strip_request(&mut headers);
        let left: Vec<_> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn refused_connection_fields() {
        for (name, value) in [
            ("upgrade", "websocket"),
            ("connection", "close, Host"),
            ("connection", "x-forwarded-for"),
            ("connection", "\"x-forwarded-for\""),
            ("connection", ":authority"),
            ("connection", "a,b,c,d,e,f,g,h,i,j"),
        ] {
            let req = request(&[(name, value)]);
            assert!(
                matches!(
                    check_request(&req, false),
                    Err(GatewayError::InvalidRequest(_))
                ),
                "{name}: {value}"
            );
        }
        check_request(&request(&[("connection", "a,b,c,d,e,f,g,h,i")]), false).unwrap();
        // A cleartext HTTP/2 offer is ignored (served as HTTP/1.1), not refused.
        let h2c = request(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA"),
        ]);
        check_request(&h2c, false).unwrap();
        let mut headers = Head::new(&h2c.headers);
        strip_request(&mut headers);
        assert_eq!(headers.iter().count(), 0);
        let both = request(&[("upgrade", "h2c, websocket")]);
        assert!(check_request(&both, false).is_err());
    }

    #[test]
    fn responses_keep_their_framing() {
        let mut resp = HeaderMap::new();
        for (k, v) in [
            ("connection", "x-secret, content-length"),
            ("x-secret", "1"),
            ("content-length", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "3"),
        ] {
            resp.append(
                HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        strip_response(&mut resp);
        let mut left: Vec<_> = resp.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-length", "x-kept"]);
    }
}
