//! Lists filtered by identity: every `tools/list`, `prompts/list`, `resources/list` or
//! `resources/templates/list` result the caller receives loses the items the caller's
//! policies would not let it use.
//!
//! Where: with policies on, every SSE answer (POST or GET, so a list completed on the GET
//! stream or replayed to a client resuming with `Last-Event-ID` is filtered too), and the
//! JSON answers of list requests (alone or in a batch) and of GETs. A list result is
//! recognised by its shape (`result.tools`, `.prompts`, `.resources`,
//! `.resourceTemplates`), not by the request it answers.
//!
//! A JSON answer is collected whole, filtered and sent. An SSE answer is filtered event
//! by event in one pass over its bytes (events are split and read as the SSE standard
//! says: LF, CRLF or lone CR line ends, an opening BOM, `data:` with or without its
//! space, over several lines), so progress notifications before the result still flow
//! at once. Answers that need no change are sent as the bytes the server wrote. What
//! cannot be read (not JSON, not UTF-8, compressed, or larger than [`MAX_LIST`]) is
//! never passed on: the client gets a JSON-RPC error in its place.
//!
//! This module owns the per-answer driver (JSON whole, SSE event by event) and the call
//! into the policies; `sse` owns the SSE framing, `probe` the skim for list results.

mod probe;
mod sse;

pub use sse::is_sse;

use crate::security::auth::Identity;
use crate::security::policy::Policies;
use bytes::{Bytes, BytesMut};
use probe::carries_list;
use serde_json::Value;
use sse::{sse_event, Fields, Splitter};

/// The largest list answer (or SSE event) the gateway will filter.
pub const MAX_LIST: usize = 16 << 20;

/// Which answers of a request are filtered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// No policies: nothing is filtered.
    #[default]
    Off,
    /// SSE answers (any of their events may be a list result).
    Streams,
    /// SSE and JSON answers (a list request, a batch with one, a GET).
    All,
}

impl Scope {
    /// The scope of a request's answers: `lists` says whether it asks for a list (or is
    /// a GET, whose answer is the server's to choose).
    pub fn of(policies: &Policies, lists: bool) -> Scope {
        match (policies.is_empty(), lists) {
            (true, _) => Scope::Off,
            (false, false) => Scope::Streams,
            (false, true) => Scope::All,
        }
    }
}

enum Mode {
    Json,
    Sse(Splitter),
    /// Nothing of the answer can be read: the error goes out in its place.
    Refuse(&'static str),
    /// The answer was replaced by an error: nothing more of it is sent.
    Done,
}

pub struct ListFilter {
    /// The request's JSON-RPC id, for the error sent in place of an unreadable answer.
    id: String,
    sse: bool,
    mode: Mode,
    buf: BytesMut,
    /// Answers (or events) changed so far.
    pub dropped: usize,
}

/// Who is asking, and on which route.
pub struct Caller<'a> {
    pub policies: &'a Policies,
    pub identity: Option<&'a Identity>,
    pub route: &'a str,
    /// The route's transforms, applied before the policies.
    pub transforms: Option<&'a crate::transform::RouteTransforms>,
}

/// What filtering one JSON-RPC message (or batch) gave.
enum Filtered {
    Unchanged,
    Changed(Vec<u8>),
    Unreadable,
}

impl Caller<'_> {
    /// Filter one JSON text, once a skim found a list in it.
    fn filter(&self, message: &[u8]) -> Filtered {
        let Ok(text) = std::str::from_utf8(message) else {
            return Filtered::Unreadable;
        };
        let lists = match carries_list(text) {
            Err(()) => return Filtered::Unreadable,
            Ok(lists) => lists,
        };
        let transform = self.transforms.filter(|t| t.may_change(message, lists));
        if !lists && transform.is_none() {
            return Filtered::Unchanged;
        }
        let mut v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return Filtered::Unreadable,
        };
        let transformed = transform.map_or(0, |t| t.answer(&mut v));
        // No policies: nothing to filter (an empty rule set would match no item).
        let filtered = match lists && !self.policies.is_empty() {
            true => self
                .policies
                .filter_lists(self.identity, self.route, &mut v),
            false => 0,
        };
        match transformed + filtered {
            0 => Filtered::Unchanged,
            _ => match serde_json::to_vec(&v) {
                Ok(out) => Filtered::Changed(out),
                Err(_) => Filtered::Unreadable,
            },
        }
    }
}

impl ListFilter {
    /// Whether it filters an SSE answer (event by event) rather than a JSON one (whole).
    pub fn is_sse(&self) -> bool {
        self.sse
    }

    /// A filter for a JSON answer, or an SSE one (`sse`).
    pub fn new(id: Option<&str>, sse: bool) -> ListFilter {
        ListFilter {
            id: id.unwrap_or("null").to_string(),
            sse,
            mode: if sse {
                Mode::Sse(Splitter::default())
            } else {
                Mode::Json
            },
            buf: BytesMut::new(),
            dropped: 0,
        }
    }

    /// A filter that sends an error in place of the whole answer (`why` it cannot be read).
    pub fn refusing(id: Option<&str>, sse: bool, why: &'static str) -> ListFilter {
        ListFilter {
            mode: Mode::Refuse(why),
            ..ListFilter::new(id, sse)
        }
    }

    fn error(&self, why: &str) -> Vec<u8> {
        let message = serde_json::to_string(&format!(
            "the gateway could not apply the caller's policies or the route's transforms to \
             this answer, so it was not passed on: {why}"
        ))
        .unwrap_or_default();
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{},"message":{message}}}}}"#,
            self.id,
            crate::error::code::INTERNAL_ERROR
        )
        .into_bytes()
    }

    /// The error in place of the rest of the answer; nothing more is sent after it.
    fn give_up(&mut self, why: &str) -> Bytes {
        log::warn!("a list answer was not passed on: {why}");
        self.buf = BytesMut::new();
        self.mode = Mode::Done;
        let err = self.error(why);
        if self.sse {
            sse_event(&[], &err)
        } else {
            Bytes::from(err)
        }
    }

    /// Pass one body chunk through the filter (`body` is replaced by what to send).
    pub fn chunk(&mut self, who: &Caller, body: &mut Option<Bytes>, end: bool) {
        let chunk = body.take();
        match self.mode {
            Mode::Done => return,
            Mode::Refuse(why) => {
                *body = Some(self.give_up(why));
                return;
            }
            Mode::Json | Mode::Sse(_) => {}
        }
        if let Some(chunk) = chunk {
            if self.buf.len() + chunk.len() > MAX_LIST && matches!(self.mode, Mode::Json) {
                *body = Some(self.give_up("the answer is too large"));
                return;
            }
            self.buf.extend_from_slice(&chunk);
        }
        if matches!(self.mode, Mode::Json) {
            if end {
                let whole = self.buf.split().freeze();
                *body = Some(match who.filter(&whole) {
                    Filtered::Unchanged => whole,
                    Filtered::Changed(out) => {
                        self.dropped += 1;
                        Bytes::from(out)
                    }
                    Filtered::Unreadable => {
                        self.give_up("the answer is not JSON (or is ambiguous)")
                    }
                });
            }
            return;
        }
        let mut out = BytesMut::new();
        while let Mode::Sse(split) = &mut self.mode {
            let n = match split.next_event(&self.buf) {
                Some(n) => n,
                None if end && !self.buf.is_empty() => self.buf.len(),
                None => break,
            };
            let first = std::mem::replace(&mut split.first, false);
            let event = self.buf.split_to(n).freeze();
            let bytes = self.event(who, event, first);
            out.extend_from_slice(&bytes);
        }
        if self.buf.len() > MAX_LIST && !matches!(self.mode, Mode::Done) {
            out.extend_from_slice(&self.give_up("an event is too large"));
        }
        if !out.is_empty() || end {
            *body = Some(out.freeze());
        }
    }

    /// One SSE event: its `data` filtered when it is a list answer, replaced by an error
    /// when it cannot be read.
    fn event(&mut self, who: &Caller, event: Bytes, first: bool) -> Bytes {
        let fields = Fields::parse(&event, first);
        let Some(data) = fields.data.as_deref().filter(|d| !d.trim().is_empty()) else {
            return event;
        };
        match who.filter(data.as_bytes()) {
            Filtered::Unchanged => event,
            Filtered::Changed(filtered) => {
                self.dropped += 1;
                sse_event(&fields.others, &filtered)
            }
            Filtered::Unreadable => {
                // Replace this event's data, keeping its id (the client's resume cursor).
                let err = self.error("an event's data is not JSON (or is ambiguous)");
                log::warn!("a list answer's event was not passed on: its data is not JSON");
                sse_event(&fields.others, &err)
            }
        }
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
            transforms: None,
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
        let mut f = ListFilter::new(Some("1"), false);
        let (a, b) = LIST.as_bytes().split_at(30);
        let out = run(&mut f, &p, &[a, b]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], serde_json::json!([{"name": "echo"}]));
        assert_eq!(f.dropped, 1);
        // Unchanged answers keep their bytes.
        const OTHER: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"echo"}]}}"#;
        let mut f = ListFilter::new(Some("1"), false);
        assert_eq!(run(&mut f, &p, &[OTHER.as_bytes()]), OTHER.as_bytes());
        // Unreadable answers never pass.
        let mut f = ListFilter::new(Some("7"), false);
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
        let mut f = ListFilter::new(Some("1"), true);
        // Split inside the second event: the first is sent at once.
        let split = progress.len() + 20;
        let who = Caller {
            policies: &p,
            identity: None,
            route: "/mcp",
            transforms: None,
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
        let mut f = ListFilter::new(None, true);
        let out = String::from_utf8(run(&mut f, &p, &[crlf.as_bytes()])).unwrap();
        assert!(!out.contains("secret_x"), "{out}");
    }

    fn filtered_tools(out: &[u8]) -> Vec<Value> {
        let text = String::from_utf8_lossy(out);
        text.split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .collect()
    }

    #[test]
    fn sse_framing_is_read_as_clients_read_it() {
        let p = policies();
        let streams = [
            format!("id: 1\revent: message\rdata: {LIST}\r\r"),
            format!("\u{feff}data: {LIST}\n\n"),
            format!("data:{LIST}\n\n"),
            {
                let at = LIST.find(",\"id\"").unwrap() + 1;
                format!("data: {}\ndata: {}\n\n", &LIST[..at], &LIST[at..])
            },
            format!(": hi\r\n\r\nid: 3\r\ndata: {LIST}\r\n\r\n"),
        ];
        for stream in &streams {
            // Whole, and byte by byte.
            for bytewise in [false, true] {
                let mut f = ListFilter::new(None, true);
                let chunks: Vec<&[u8]> = if bytewise {
                    stream.as_bytes().chunks(1).collect()
                } else {
                    vec![stream.as_bytes()]
                };
                let out = run(&mut f, &p, &chunks);
                let text = String::from_utf8_lossy(&out).to_string();
                assert!(!text.contains("secret_x"), "{stream:?} -> {text:?}");
                let data = filtered_tools(&out);
                let lists: Vec<_> = data.iter().filter(|v| v.get("result").is_some()).collect();
                assert_eq!(lists.len(), 1, "{stream:?} -> {text:?}");
                assert_eq!(
                    lists[0]["result"]["tools"],
                    serde_json::json!([{"name": "echo"}])
                );
            }
        }
    }

    #[test]
    fn unreadable_events_fail_closed() {
        let p = policies();
        let bad = LIST.replace(r#""echo"}"#, r#""echo","x":"\ud800"}"#);
        for stream in [
            format!("id: 4\ndata: {bad}\n\n"),
            "data: {nope\n\n".to_string(),
        ] {
            let mut f = ListFilter::new(Some("9"), true);
            let out = run(&mut f, &p, &[stream.as_bytes()]);
            let text = String::from_utf8_lossy(&out).to_string();
            assert!(!text.contains("secret_x"), "{text}");
            let v = &filtered_tools(&out)[0];
            assert_eq!(v["error"]["code"], -32603, "{v}");
            assert_eq!(v["id"], 9, "{v}");
        }
        // A list member or result twice (or again under another case) is not passed on.
        for dup in [
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"secret_x"}],"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"secret_x"}],"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"secret_x"}]},"result":{}}"#,
        ] {
            let mut f = ListFilter::new(Some("1"), false);
            let v: Value = serde_json::from_slice(&run(&mut f, &p, &[dup.as_bytes()])).unwrap();
            assert_eq!(v["error"]["code"], -32603, "{dup}: {v}");
        }
        // Events without data (a priming event, a comment) pass as they are.
        let prime = "id: 0\ndata:\n\n: keep-alive\n\n";
        let mut f = ListFilter::new(None, true);
        assert_eq!(run(&mut f, &p, &[prime.as_bytes()]), prime.as_bytes());
        // A compressed answer is refused whole.
        let mut f = ListFilter::refusing(Some("2"), false, "compressed");
        let out = run(&mut f, &p, &[b"\x1f\x8b...", b"more"]);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], -32603);
    }

    #[test]
    fn lists_are_found_by_shape_in_batches() {
        let p = policies();
        let batch = format!(r#"[{{"jsonrpc":"2.0","id":0,"result":{{}}}},{LIST}]"#);
        let mut f = ListFilter::new(None, false);
        let v: Value = serde_json::from_slice(&run(&mut f, &p, &[batch.as_bytes()])).unwrap();
        assert_eq!(
            v[1]["result"]["tools"],
            serde_json::json!([{"name": "echo"}])
        );
        // An SSE event carrying a batch, and a non-list message beside it.
        let stream = format!("data: {batch}\n\ndata: {{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{{\"content\":[]}}}}\n\n");
        let mut f = ListFilter::new(None, true);
        let out = run(&mut f, &p, &[stream.as_bytes()]);
        assert!(!String::from_utf8_lossy(&out).contains("secret_x"));
        assert!(out.ends_with(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[]}}\n\n"));
    }
}
