//! A request's body as the gateway accepts it (Pingora's parser has already refused
//! malformed framing, and a request with both `Content-Length` and `Transfer-Encoding`
//! is read by the latter and its connection closed after the answer, RFC 9112 §6.3):
//! a JSON body in UTF-8 (the only charset MCP messages come in), a GET stream asked
//! for as one (`Accept: text/event-stream`), and the body read within its limits: its
//! size (`limits.max_request_body`) and the wait between two of its reads
//! (`limits.request_body_timeout`, against clients that stall or trickle a body).

use crate::error::GatewayError;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use std::time::Duration;

/// Whether a GET asks for an SSE stream: `Accept` names `text/event-stream` (as MCP
/// clients must), `text/*` or `*/*`.
pub fn accepts_sse(headers: &http::HeaderMap) -> bool {
    headers.get_all(http::header::ACCEPT).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            t.eq_ignore_ascii_case(b"text/event-stream")
                || t.eq_ignore_ascii_case(b"text/*")
                || t == b"*/*"
        })
    })
}

/// `application/json`, with optional parameters (`; charset=utf-8`).
pub fn is_json(content_type: &[u8]) -> bool {
    content_type
        .split(|b| *b == b';')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"application/json"))
}

/// [`is_json`], and no `charset` but UTF-8's (JSON exchanged between systems is UTF-8,
/// RFC 8259 §8.1; a body labelled otherwise would be read as something it is not).
pub fn is_json_utf8(content_type: &[u8]) -> bool {
    is_json(content_type)
        && content_type.split(|b| *b == b';').skip(1).all(|param| {
            let mut kv = param.splitn(2, |b| *b == b'=');
            let key = kv.next().unwrap_or_default().trim_ascii();
            let value = kv.next().unwrap_or_default().trim_ascii();
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            !key.eq_ignore_ascii_case(b"charset")
                || value.eq_ignore_ascii_case(b"utf-8")
                || value.eq_ignore_ascii_case(b"utf8")
        })
}

/// The body length a request declares (`Content-Length`), if it is a number.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// An HTTP/1.1 request with `Expect: 100-continue` (RFC 9110 §10.1.1).
pub fn expects_continue(req: &pingora::http::RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The whole body, at most `limit` bytes, each read within `idle` of the last.
pub async fn read_body(
    session: &mut Session,
    limit: u64,
    declared: Option<u64>,
    idle: Duration,
) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit) as usize);
    loop {
        let read = match tokio::time::timeout(idle, session.read_request_body()).await {
            Ok(read) => read,
            Err(_) => return Err(GatewayError::BodyTimeout(idle)),
        };
        match read {
            Ok(Some(chunk)) => {
                if (buf.len() + chunk.len()) as u64 > limit {
                    return Err(GatewayError::PayloadTooLarge { limit });
                }
                if buf.is_empty() && declared == Some(chunk.len() as u64) {
                    // The whole body in one read: keep it without copying.
                    return Ok(chunk);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(GatewayError::BodyRead(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b""));
        assert!(!is_json(b"application/jsonx"));
    }

    #[test]
    fn only_utf8_is_accepted() {
        for ok in [
            &b"application/json"[..],
            b"application/json; charset=utf-8",
            b"application/json;charset=\"UTF-8\"",
            b"application/json; charset=utf8; x=y",
        ] {
            assert!(is_json_utf8(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"application/json; charset=latin1"[..],
            b"application/json; charset=utf-16",
            b"text/json; charset=utf-8",
        ] {
            assert!(!is_json_utf8(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn sse_accept_headers() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::ACCEPT, v.parse().unwrap());
            m
        };
        assert!(accepts_sse(&h("text/event-stream")));
        assert!(accepts_sse(&h("application/json, text/event-stream;q=0.9")));
        assert!(accepts_sse(&h("*/*")));
        assert!(!accepts_sse(&h("application/json")));
        assert!(!accepts_sse(&http::HeaderMap::new()));
    }
}
