//! Lists filtered by identity: the answer to a `tools/list`, `prompts/list`,
//! `resources/list` or `resources/templates/list` loses the items the caller's policies
//! would not let it use.
//!
//! A JSON answer is collected whole, filtered and sent. An SSE answer is filtered event
//! by event, so progress notifications before the result still flow at once. Answers
//! that need no change are sent as the bytes the server wrote. An answer that cannot be
//! read (not JSON, or larger than [`MAX_LIST`]) is never passed on unfiltered: the
//! client gets a JSON-RPC error in its place.

use crate::security::auth::Identity;
use crate::security::policy::{ListKind, Policies};
use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// The largest list answer (or SSE event) the gateway will filter.
pub const MAX_LIST: usize = 16 << 20;

enum Mode {
    Json,
    Sse,
    /// The answer was replaced by an error: nothing more of it is sent.
    Done,
}

pub struct ListFilter {
    kind: ListKind,
    /// The request's JSON-RPC id, for the error sent in place of an unreadable answer.
    id: String,
    mode: Mode,
    buf: BytesMut,
    /// Items dropped so far.
    pub dropped: usize,
}

/// Who is asking, and on which route.
pub struct Caller<'a> {
    pub policies: &'a Policies,
    pub identity: Option<&'a Identity>,
    pub route: &'a str,
}

impl Caller<'_> {
    /// Filter one JSON-RPC message; `None` when it is unchanged.
    fn filter(&self, kind: ListKind, message: &[u8]) -> Option<Result<Vec<u8>, ()>> {
        let mut v: Value = match serde_json::from_slice(message) {
            Ok(v) => v,
            Err(_) => return Some(Err(())),
        };
        match self
            .policies
            .filter_list(self.identity, self.route, kind, &mut v)
        {
            0 => None,
            _ => Some(serde_json::to_vec(&v).map_err(|_| ())),
        }
    }
}

impl ListFilter {
    /// A filter for the answer with this `Content-Type`; `None` for answers that carry
    /// no list (neither JSON nor SSE).
    pub fn new(kind: ListKind, id: Option<&str>, content_type: &[u8]) -> Option<ListFilter> {
        let mode = if content_type.starts_with(b"text/event-stream") {
            Mode::Sse
        } else if content_type.starts_with(b"application/json") {
            Mode::Json
        } else {
            return None;
        };
        Some(ListFilter {
            kind,
            id: id.unwrap_or("null").to_string(),
            mode,
            buf: BytesMut::new(),
            dropped: 0,
        })
    }

    fn error(&self, why: &str) -> Vec<u8> {
        let message = serde_json::to_string(&format!(
            "the gateway could not apply the caller's policies to this list: {why}"
        ))
        .unwrap_or_default();
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{},"message":{message}}}}}"#,
            self.id,
            crate::error::code::INTERNAL_ERROR
        )
        .into_bytes()
    }

    /// Pass one body chunk through the filter (`body` is replaced by what to send).
    pub fn chunk(&mut self, who: &Caller, body: &mut Option<Bytes>, end: bool) {
        if let Some(chunk) = body.take() {
            if matches!(self.mode, Mode::Done) {
                return;
            }
            if self.buf.len() + chunk.len() > MAX_LIST {
                log::warn!("a list answer over {MAX_LIST} bytes was not passed on");
                self.buf = BytesMut::new();
                let err = self.error("the answer is too large");
                *body = Some(match self.mode {
                    Mode::Sse => sse_event(&err),
                    _ => Bytes::from(err),
                });
                self.mode = Mode::Done;
                return;
            }
            self.buf.extend_from_slice(&chunk);
        }
        match self.mode {
            Mode::Done => {}
            Mode::Json if end => {
                let whole = self.buf.split().freeze();
                *body = Some(match who.filter(self.kind, &whole) {
                    None => whole,
                    Some(Ok(filtered)) => {
                        self.dropped += 1;
                        Bytes::from(filtered)
                    }
                    Some(Err(())) => Bytes::from(self.error("the answer is not JSON")),
                });
            }
            Mode::Json => {}
            Mode::Sse => {
                let mut out = BytesMut::new();
                while let Some(n) = event_end(&self.buf) {
                    let event = self.buf.split_to(n).freeze();
                    out.extend_from_slice(&self.event(who, event));
                }
                if end && !self.buf.is_empty() {
                    let rest = self.buf.split().freeze();
                    out.extend_from_slice(&self.event(who, rest));
                }
                if !out.is_empty() || end {
                    *body = Some(out.freeze());
                }
            }
        }
    }

    /// One SSE event: its `data` filtered when it is a list answer.
    fn event(&mut self, who: &Caller, event: Bytes) -> Bytes {
        let text = String::from_utf8_lossy(&event);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return event;
        }
        let joined = data.join("\n");
        match who.filter(self.kind, joined.as_bytes()) {
            None => event,
            // Not JSON: not a list answer either (the answer is a JSON-RPC message).
            Some(Err(())) => event,
            Some(Ok(filtered)) => {
                self.dropped += 1;
                let mut out = String::new();
                for line in text.lines().filter(|l| !l.is_empty()) {
                    if !line.starts_with("data:") {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out.push_str("data: ");
                out.push_str(&String::from_utf8_lossy(&filtered));
                out.push_str("\n\n");
                Bytes::from(out)
            }
        }
    }
}

/// An SSE `message` event carrying `data`.
fn sse_event(data: &[u8]) -> Bytes {
    let mut out = b"event: message\ndata: ".to_vec();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The length of the first complete event in `buf` (through its blank line), if any.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Policies {
        let cfg = crate::config::load_str(
            "upstream: {groups: {default: {servers: [{id: a, url: 'http://127.0.0.1:1'}]}}}\nsecurity:\n  policies:\n    - {effect: deny, tools: ['secret_*']}\n    - {effect: allow}\n",
            &|_| None,
        )
        .unwrap();
        Policies::build(&cfg.security.policies).unwrap()
    }

    fn run(f: &mut ListFilter, p: &Policies, chunks: &[&[u8]]) -> Vec<u8> {
        let who = Caller {
            policies: p,
            identity: None,
            route: "/mcp",
        };
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(c));
            f.chunk(&who, &mut body, i + 1 == chunks.len());
            out.extend_from_slice(&body.unwrap_or_default());
        }
        out
    }

    const LIST: &str =
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"secret_x"}]}}"#;

    #[test]
    fn json_answers_are_filtered_whole() {
        let p = policies();
        let mut f = ListFilter::new(ListKind::Tools, Some("1"), b"application/json").unwrap();
        let (a, b) = LIST.as_bytes().split_at(30);
        let out = run(&mut f, &p, &[a, b]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], serde_json::json!([{"name": "echo"}]));
        assert_eq!(f.dropped, 1);
        // Unchanged answers keep their bytes.
        let mut f = ListFilter::new(ListKind::Prompts, Some("1"), b"application/json").unwrap();
        assert_eq!(run(&mut f, &p, &[LIST.as_bytes()]), LIST.as_bytes());
        // Unreadable answers never pass.
        let mut f = ListFilter::new(ListKind::Tools, Some("7"), b"application/json").unwrap();
        let v: Value = serde_json::from_slice(&run(&mut f, &p, &[b"{nope"])).unwrap();
        assert_eq!(
            (v["id"].as_i64(), v["error"]["code"].as_i64()),
            (Some(7), Some(-32603))
        );
    }

    #[test]
    fn sse_answers_are_filtered_event_by_event() {
        let p = policies();
        let progress = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n";
        let result = format!("id: 9\nevent: message\ndata: {LIST}\n\n");
        let stream = format!("{progress}{result}");
        let mut f = ListFilter::new(ListKind::Tools, Some("1"), b"text/event-stream").unwrap();
        // Split inside the second event: the first is sent at once.
        let split = progress.len() + 20;
        let who = Caller {
            policies: &p,
            identity: None,
            route: "/mcp",
        };
        let mut first = Some(Bytes::copy_from_slice(&stream.as_bytes()[..split]));
        f.chunk(&who, &mut first, false);
        assert_eq!(first.unwrap(), progress.as_bytes());
        let mut rest = Some(Bytes::copy_from_slice(&stream.as_bytes()[split..]));
        f.chunk(&who, &mut rest, true);
        let rest = String::from_utf8(rest.unwrap().to_vec()).unwrap();
        assert!(rest.starts_with("id: 9\nevent: message\ndata: {"), "{rest}");
        assert!(rest.ends_with("\n\n"));
        let data: Value =
            serde_json::from_str(rest.lines().nth(2).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(
            data["result"]["tools"],
            serde_json::json!([{"name": "echo"}])
        );
        // CRLF framing is understood too.
        let crlf = format!("data: {LIST}\r\n\r\n");
        let mut f = ListFilter::new(ListKind::Tools, None, b"text/event-stream").unwrap();
        let out = String::from_utf8(run(&mut f, &p, &[crlf.as_bytes()])).unwrap();
        assert!(!out.contains("secret_x"), "{out}");
    }
}
