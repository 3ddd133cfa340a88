//! MCP's HTTP headers: names, and the modern era's rule that the routing headers
//! (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`) agree with the body.

use super::envelope::{Envelope, Kind};
use base64::Engine;
use http::HeaderMap;

pub const MCP_SESSION_ID: &str = "mcp-session-id";
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const MCP_METHOD: &str = "mcp-method";
pub const MCP_NAME: &str = "mcp-name";
pub const LAST_EVENT_ID: &str = "last-event-id";

/// The names as `HeaderName`s, for lookups on the request path: a lookup by `&str`
/// parses and checks the name again on every call (about 400 instructions).
pub mod names {
    use http::HeaderName;
    pub const SESSION_ID: HeaderName = HeaderName::from_static(super::MCP_SESSION_ID);
    pub const PROTOCOL_VERSION: HeaderName = HeaderName::from_static(super::MCP_PROTOCOL_VERSION);
    pub const METHOD: HeaderName = HeaderName::from_static(super::MCP_METHOD);
    pub const NAME: HeaderName = HeaderName::from_static(super::MCP_NAME);
}

/// Methods whose `Mcp-Name` header carries `params.name` or `params.uri`.
fn has_name_header(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// The routing headers a modern-era message must carry, from its body (what
/// [`check_modern`] accepts): `MCP-Protocol-Version`, and for a request or notification
/// `Mcp-Method` and, where the method names something, `Mcp-Name`.
pub fn routing(env: &Envelope) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::with_capacity(3);
    if let Some(v) = env.protocol_version.as_deref() {
        out.push((
            http::HeaderName::from_static(MCP_PROTOCOL_VERSION),
            encode_value(v),
        ));
    }
    if env.kind == Kind::Response {
        return out;
    }
    let method = env.method.as_deref().unwrap_or_default();
    out.push((
        http::HeaderName::from_static(MCP_METHOD),
        encode_value(method),
    ));
    if has_name_header(method) {
        let name = env.name.as_deref().unwrap_or_default();
        out.push((http::HeaderName::from_static(MCP_NAME), encode_value(name)));
    }
    out
}

/// Decode a header value that may use the `=?base64?…?=` form for non-ASCII content.
pub fn decode_value(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    if let Some(inner) = s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    Some(s.to_string())
}

/// A header value for `s`: as it is when it is safe ASCII (visible characters and inner
/// spaces), else in the `=?base64?…?=` form [`decode_value`] reads.
pub fn encode_value(s: &str) -> http::HeaderValue {
    let safe = !s.is_empty()
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.starts_with("=?")
        && s.bytes().all(|b| (0x20..0x7f).contains(&b));
    if safe {
        if let Ok(v) = http::HeaderValue::from_str(s) {
            return v;
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    http::HeaderValue::from_str(&format!("=?base64?{encoded}?="))
        .expect("base64 is a valid header value")
}

/// Check a modern-era message's routing headers against its body.
/// The error text says which header and what the body says, for the `-32020` message.
pub fn check_modern(env: &Envelope, headers: &HeaderMap) -> Result<(), String> {
    let body_version = env.protocol_version.as_deref().unwrap_or_default();
    match headers.get(&names::PROTOCOL_VERSION) {
        None => {
            return Err(format!(
                "the MCP-Protocol-Version header is required and must be {body_version:?} (the body's _meta protocol version)"
            ))
        }
        Some(h) if h.as_bytes() != body_version.as_bytes() => {
            return Err(format!(
                "MCP-Protocol-Version header {:?} does not match the body's protocol version {body_version:?}",
                String::from_utf8_lossy(h.as_bytes())
            ))
        }
        Some(_) => {}
    }
    if env.kind == Kind::Response {
        return Ok(());
    }
    let method = env.method.as_deref().unwrap_or_default();
    match headers
        .get(&names::METHOD)
        .map(|h| decode_value(h.as_bytes()))
    {
        None => {
            return Err(format!(
                "the Mcp-Method header is required and must be {method:?}"
            ))
        }
        Some(Some(h)) if h == method => {}
        Some(None) => return Err(undecodable("Mcp-Method")),
        Some(Some(h)) => {
            return Err(format!(
                "Mcp-Method header {h:?} does not match the body's method {method:?}"
            ))
        }
    }
    if has_name_header(method) {
        let name = env.name.as_deref().unwrap_or_default();
        match headers
            .get(&names::NAME)
            .map(|h| decode_value(h.as_bytes()))
        {
            None => {
                return Err(format!(
                    "the Mcp-Name header is required for {method} and must be {name:?}"
                ))
            }
            Some(Some(h)) if h == name => {}
            Some(None) => return Err(undecodable("Mcp-Name")),
            Some(Some(h)) => {
                return Err(format!(
                    "Mcp-Name header {h:?} does not match the body's {} {name:?}",
                    if method == "resources/read" {
                        "params.uri"
                    } else {
                        "params.name"
                    }
                ))
            }
        }
    }
    Ok(())
}

/// A header whose value is neither plain text nor a `=?base64?…?=` form that decodes.
fn undecodable(header: &str) -> String {
    format!("the {header} header is not a valid value: neither plain text nor a =?base64?...?= form that decodes to UTF-8")
}

/// Whether a batch body is allowed: only when the negotiated version is 2025-03-26
/// (an absent `MCP-Protocol-Version` header means 2025-03-26).
pub fn batch_allowed(headers: &HeaderMap) -> bool {
    match headers.get(&names::PROTOCOL_VERSION) {
        None => true,
        Some(v) => v.as_bytes() == super::envelope::BATCH_VERSION.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_values_decode_back() {
        for s in [
            "files__echo",
            "file://files+/a b.txt",
            "héllo",
            " lead",
            "=?x",
        ] {
            let v = encode_value(s);
            assert_eq!(decode_value(v.as_bytes()).as_deref(), Some(s), "{s}");
        }
        assert_eq!(encode_value("plain").to_str().unwrap(), "plain");
    }
    use crate::mcp::envelope::{inspect, Body};
    use http::HeaderValue;

    #[test]
    fn the_routing_headers_of_a_body_pass_the_check() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"héllo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a b","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        ] {
            let e = env(body);
            let mut h = HeaderMap::new();
            for (k, v) in routing(&e) {
                h.insert(k, v);
            }
            assert_eq!(check_modern(&e, &h), Ok(()), "{body}");
        }
    }

    fn env(body: &str) -> Envelope {
        match inspect(body.as_bytes()).unwrap() {
            Body::Single(e) => e,
            Body::Batch(_) => unreachable!(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The three routing headers of a modern `tools/call`.
    fn modern(version: &str, method: &str, name: &str) -> HeaderMap {
        headers(&[
            ("mcp-protocol-version", version),
            ("mcp-method", method),
            ("mcp-name", name),
        ])
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"héllo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    #[test]
    fn matching_headers_pass_including_base64_names() {
        let h = modern("2026-07-28", "tools/call", "=?base64?aMOpbGxv?=");
        assert_eq!(check_modern(&env(CALL), &h), Ok(()));
    }

    #[test]
    fn mismatches_are_named() {
        let e = env(CALL);
        let wrong_version = modern("2025-11-25", "tools/call", "=?base64?aMOpbGxv?=");
        assert!(check_modern(&e, &wrong_version)
            .unwrap_err()
            .contains("MCP-Protocol-Version"));
        let wrong_method = modern("2026-07-28", "tools/list", "=?base64?aMOpbGxv?=");
        assert!(check_modern(&e, &wrong_method)
            .unwrap_err()
            .contains("Mcp-Method"));
        let wrong_name = modern("2026-07-28", "tools/call", "other");
        assert!(check_modern(&e, &wrong_name)
            .unwrap_err()
            .contains("Mcp-Name"));
        let missing = headers(&[("mcp-protocol-version", "2026-07-28")]);
        assert!(check_modern(&e, &missing).unwrap_err().contains("required"));
        // A base64 form that does not decode is named as such, not as an empty name.
        let broken = modern("2026-07-28", "tools/call", "=?base64?!!!?=");
        assert!(check_modern(&e, &broken)
            .unwrap_err()
            .contains("the Mcp-Name header is not a valid value"));
    }

    #[test]
    fn list_needs_no_name() {
        let e = env(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        assert_eq!(check_modern(&e, &h), Ok(()));
    }

    #[test]
    fn batches_only_for_2025_03_26() {
        assert!(batch_allowed(&headers(&[])));
        assert!(batch_allowed(&headers(&[(
            "mcp-protocol-version",
            "2025-03-26"
        )])));
        assert!(!batch_allowed(&headers(&[(
            "mcp-protocol-version",
            "2025-06-18"
        )])));
    }
}
