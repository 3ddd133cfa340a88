//! An upstream's answer read off its connection: the head parsed by `httparse` (as
//! Pingora's HTTP/1 client parses it, with the same leniencies), the body framed by
//! RFC 9112 §6.3 (no body for `HEAD`, `204` and `304`; `Transfer-Encoding: chunked`,
//! its chunk lines and trailers parsed by `httparse`; `Content-Length`; else until the
//! server closes), and whether the connection may be used again.
//!
//! It replaces Pingora's client session on the read side for what an answer keeps while
//! it lasts (an SSE stream: hours): the head is copied out of the read buffer into one
//! allocation of its own size, the body is handed out as it was read (no copy), and no
//! buffer is held while the server is silent, where Pingora's session keeps its 4 KiB
//! head buffer and a 64 KiB body buffer for as long as the answer lasts.

mod body;
#[cfg(test)]
mod tests;

use body::Framing;
pub use body::{read_some, Body};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use std::mem::MaybeUninit;
use std::time::Duration;

/// The most bytes an answer's head (or its trailers) may take: Pingora's limit.
const MAX_HEAD: usize = 1 << 20;
/// The most fields an answer's head may have: Pingora's limit.
const MAX_FIELDS: usize = 256;
/// Room reserved for a read of the head (Pingora's first head buffer).
const HEAD_READ: usize = 4096;

/// What the request implies for its answer.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// A `HEAD` request: the answer has no body whatever its head says.
    pub head: bool,
    /// The request asked the server to close the connection after the answer.
    pub close: bool,
}

/// Read the final answer's head (informational `1xx` answers skipped; a `101` is
/// returned as it is, for the caller to refuse), within `timeout` for each read.
pub async fn read_head(
    stream: Stream,
    asked: Asked,
    timeout: Option<Duration>,
) -> Result<(ResponseHeader, Body)> {
    let mut body = Body {
        stream,
        buf: BytesMut::new(),
        framing: Framing::Done,
        timeout,
        keepalive: false,
    };
    loop {
        if let Some((head, len)) = parse_head(&body.buf)? {
            body.buf.advance(len);
            let status = head.status;
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            let (head, framing, keepalive) = framed(head, asked)?;
            body.framing = framing;
            body.keepalive = keepalive;
            return Ok((head, body));
        }
        if body.buf.len() > MAX_HEAD {
            return Err(Error::explain(
                ErrorType::InvalidHTTPHeader,
                format!("the answer's head is larger than {MAX_HEAD} bytes"),
            ));
        }
        if body.fill(HEAD_READ, "the answer's head").await? == 0 {
            let read = body.buf.len();
            return Err(Error::explain(
                ErrorType::ConnectionClosed,
                format!("the server closed the connection before its answer's head ({read} bytes of it read)"),
            ));
        }
    }
}

/// Room in an answer's map for the fields the gateway adds to an answer it forwards (its
/// request id, security fields, then Pingora's `Date` and `Connection`): set at once,
/// they would grow the map (a rehash of every field) on every answer.
const ROOM: usize = 8;

/// A complete head at the start of `buf` and its length; `None`: not complete yet.
fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHeader, usize)>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Response::new(&mut []);
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Error::because(
                ErrorType::InvalidHTTPHeader,
                "the answer's head is not HTTP/1",
                e,
            ))
        }
    };
    let invalid = |what: &str| Error::explain(ErrorType::InvalidHTTPHeader, what.to_string());
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| invalid("the answer's status is not a number from 100 to 999"))?;
    // The fields' values are kept in one copy of the head, its own size: the read buffer
    // (with the body read along with the head) is not held by them.
    let copy = Bytes::copy_from_slice(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + ROOM);
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| invalid("a field name of the answer's head is not a token"))?;
        let at = field.value.as_ptr() as usize - base;
        let value = field_value(copy.slice(at..at + field.value.len()))
            .ok_or_else(|| invalid("a field value of the answer's head has a control byte"))?;
        headers.append(name, value);
    }
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = status;
    head.version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    head.headers = headers;
    Ok(Some((ResponseHeader::from(head), len)))
}

/// A field's value; an obsolete line folding (accepted in answers, as Pingora does) is
/// replaced by spaces (RFC 9112 §5.2), so no line break reaches a head the gateway writes.
fn field_value(value: Bytes) -> Option<HeaderValue> {
    if !value.iter().any(|b| matches!(b, b'\r' | b'\n')) {
        return HeaderValue::from_maybe_shared(value).ok();
    }
    let unfolded: Vec<u8> = value
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect();
    HeaderValue::from_bytes(unfolded.trim_ascii()).ok()
}

/// The body's framing (RFC 9112 §6.3) and whether the connection may be kept after it;
/// a `Content-Length` beside a `Transfer-Encoding` is dropped (the latter frames it).
fn framed(mut head: ResponseHeader, asked: Asked) -> Result<(ResponseHeader, Framing, bool)> {
    let status = head.status.as_u16();
    let headers = &head.headers;
    let chunked = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .map(|te| {
            let te = te.as_bytes();
            let last = te.rsplit(|b| *b == b',').next().unwrap_or(te);
            last.trim_ascii().eq_ignore_ascii_case(b"chunked")
        });
    let mut keepalive = !asked.close && status != 101;
    let (mut close, mut keep) = (false, false);
    for value in headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    keepalive &= !close
        && match head.version {
            // HTTP/1.0: only when asked for, and never after a transfer coding (§6.1).
            Version::HTTP_10 => keep && chunked.is_none(),
            _ => true,
        };
    let framing = if asked.head || status == 204 || status == 304 || status == 101 {
        Framing::Length(0)
    } else if let Some(chunked) = chunked {
        head.remove_header(&CONTENT_LENGTH);
        match chunked {
            true => Framing::ChunkSize,
            // A transfer coding other than chunked last: the body ends with the connection.
            false => Framing::UntilClose,
        }
    } else if headers.contains_key(CONTENT_LENGTH) {
        Framing::Length(content_length(headers)?)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        keepalive = false;
    }
    Ok((head, framing, keepalive))
}

/// The `Content-Length` of a head with one: every value (lines, comma-separated lists)
/// must be the same number (RFC 9110 §8.6); anything else is an error.
fn content_length(headers: &HeaderMap) -> Result<u64> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for n in value.as_bytes().split(|b| *b == b',') {
            let n = n.trim_ascii();
            let n = (!n.is_empty() && n.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
                .flatten();
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(l)) if n == l => {}
                _ => {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "the answer's Content-Length is not one number",
                    ))
                }
            }
        }
    }
    length.ok_or_else(|| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            "the answer's Content-Length is empty",
        )
    })
}
