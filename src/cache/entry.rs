//! What the cache keeps of an answer, and the answer a hit gets.
//!
//! An entry is the upstream's `result` object, with its modern-era `ttlMs` and
//! `cacheScope` taken out (they are answered again per request: the time left, and the
//! scope), and what it answers (route, group, method, tool) for invalidation. Only a
//! complete success is kept: a JSON answer with a `result`, or an SSE answer whose only
//! request-side content is notifications and whose final event is that result. Never an
//! error, an `InputRequiredResult` (`resultType` other than `complete`, `requestState`,
//! `inputRequests`), or an answer that carried a request of the server's.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// One kept answer.
#[derive(Debug)]
pub struct Entry {
    pub route: Arc<str>,
    pub group: Arc<str>,
    pub method: &'static str,
    /// A `tools/call`'s tool.
    pub tool: Option<Box<str>>,
    /// The `result` object's text, without `ttlMs` and `cacheScope`.
    pub result: Bytes,
    /// Shared by every caller (`cacheScope: "public"`).
    pub public: bool,
    /// Unix time in milliseconds when it expires.
    pub expires_ms: u64,
}

/// What the store's weigher counts beyond the result's text.
const OVERHEAD: usize = 160;

impl Entry {
    /// The size the memory level counts.
    pub fn weight(&self) -> u32 {
        (self.result.len() + OVERHEAD + self.route.len() + self.group.len())
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Time left before it expires (`None`: expired).
    pub fn remaining(&self, now_ms: u64) -> Option<Duration> {
        self.expires_ms
            .checked_sub(now_ms)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    /// The JSON-RPC answer to a request with `id`: in the modern era, for the results
    /// that define them (lists and reads, not tool calls), with `ttlMs` (the time left)
    /// and `cacheScope`; a legacy client gets neither.
    pub fn answer(&self, id: &str, modern: bool, now_ms: u64) -> Vec<u8> {
        let modern = modern && self.method != "tools/call";
        let mut out = Vec::with_capacity(self.result.len() + id.len() + 64);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(br#","result":"#);
        if modern {
            let left = self.remaining(now_ms).map_or(0, |d| d.as_millis() as u64);
            let scope = if self.public { "public" } else { "private" };
            out.extend_from_slice(format!(r#"{{"ttlMs":{left},"cacheScope":"{scope}""#).as_bytes());
            // The kept result is an object: `{}` or `{…}`.
            let rest = &self.result[1..];
            if rest.first() != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        } else {
            out.extend_from_slice(&self.result);
        }
        out.push(b'}');
        out
    }
}

/// A result fit to keep.
#[derive(Debug, PartialEq)]
pub struct Kept {
    /// The result's text without `ttlMs` and `cacheScope`.
    pub result: Bytes,
    /// The upstream's `ttlMs`.
    pub ttl_ms: Option<u64>,
    pub public: bool,
}

/// The result of a complete success, fit to keep (`None`: not to be kept).
pub fn keep(result: &RawValue) -> Option<Kept> {
    keep_value(serde_json::from_str::<Value>(result.get()).ok()?)
}

/// [`keep`], of a result already parsed.
pub fn keep_value(result: Value) -> Option<Kept> {
    let Value::Object(mut m) = result else {
        return None;
    };
    match m.get("resultType") {
        None => {}
        Some(Value::String(t)) if t == "complete" => {}
        Some(_) => return None,
    }
    if m.contains_key("requestState") || m.contains_key("inputRequests") {
        return None;
    }
    let ttl_ms = match m.remove("ttlMs") {
        None => None,
        Some(v) => Some(v.as_u64()?),
    };
    let public = matches!(m.remove("cacheScope"), Some(Value::String(s)) if s == "public");
    let result = serde_json::to_vec(&Value::Object(m)).ok()?;
    Some(Kept {
        result: Bytes::from(result),
        ttl_ms,
        public,
    })
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<&'a str>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Same JSON-RPC id (as values: `1` and `1.0` differ in text, not in JSON).
fn same_id(a: &RawValue, b: &str) -> bool {
    a.get() == b
        || matches!(
            (serde_json::from_str::<Value>(a.get()), serde_json::from_str::<Value>(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// The result of a JSON answer to the request with `id`, when it is a success.
pub fn json_result(body: &[u8], id: &str) -> Option<Kept> {
    let m: Message = serde_json::from_slice(body).ok()?;
    if m.error.is_some() || m.method.is_some() || !same_id(m.id?, id) {
        return None;
    }
    keep(m.result?)
}

/// The result of an SSE answer to the request with `id`: its notifications are allowed
/// before the result; a request of the server's (sampling, elicitation, roots) means
/// the result depends on the client's answer, and it is not kept.
pub async fn sse_result(body: Bytes, id: &str) -> Option<Kept> {
    let mut answer = SseAnswer::default();
    answer.read(body, id).await;
    answer.result()
}

/// An SSE answer read as its events arrive, for [`sse_result`]'s verdict as soon as its
/// result event is whole (the client may send its next request on that event, before
/// the stream ends).
#[derive(Debug, Default)]
pub struct SseAnswer {
    found: Option<Kept>,
    /// Not to be kept, whatever follows.
    spoiled: bool,
}

impl SseAnswer {
    /// Read `events`: whole events (a segment of the answer ending where an event ends).
    pub async fn read(&mut self, events: Bytes, id: &str) {
        use futures::StreamExt;
        if self.spoiled {
            return;
        }
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(events)]);
        let mut events = sse_stream::SseStream::from_bytes_stream(chunks);
        while let Some(event) = events.next().await {
            if !self.event(event.ok().map(|e| e.data.unwrap_or_default()), id) {
                self.spoiled = true;
                self.found = None;
                return;
            }
        }
    }

    /// One event's data (`None`: an event that did not parse); false when the answer is
    /// not to be kept.
    fn event(&mut self, data: Option<String>, id: &str) -> bool {
        let Some(data) = data else {
            return false;
        };
        if data.trim().is_empty() {
            return true;
        }
        let Ok(m) = serde_json::from_str::<Message>(&data) else {
            return false;
        };
        match (m.method, m.id) {
            // A notification: it went to the client; the result does not depend on it.
            (Some(_), None) => true,
            // A request of the server's to the client.
            (Some(_), Some(_)) => false,
            (None, _) if self.found.is_some() => false,
            (None, _) => {
                self.found = json_result(data.as_bytes(), id);
                self.found.is_some()
            }
        }
    }

    /// The result read so far, if it is to be kept.
    pub fn result(self) -> Option<Kept> {
        self.found.filter(|_| !self.spoiled)
    }

    /// The result event came (and was fit to keep), or the answer is not to be kept:
    /// nothing later changes what is kept.
    pub fn settled(&self) -> bool {
        self.spoiled || self.found.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn complete_results_are_kept_without_their_cache_fields() {
        let k = keep(&raw(
            r#"{"tools":[{"name":"a"}],"ttlMs":5000,"cacheScope":"public"}"#,
        ))
        .unwrap();
        assert_eq!(&k.result[..], br#"{"tools":[{"name":"a"}]}"#);
        assert_eq!((k.ttl_ms, k.public), (Some(5000), true));
        let k = keep(&raw(r#"{"tools":[],"cacheScope":"private"}"#)).unwrap();
        assert!(!k.public);
        assert_eq!(keep(&raw(r#"{"tools":[]}"#)).unwrap().ttl_ms, None);
        assert!(keep(&raw(r#"{"resultType":"complete","content":[]}"#)).is_some());
    }

    #[test]
    fn input_required_and_odd_results_are_not_kept() {
        assert!(keep(&raw(
            r#"{"resultType":"input_required","inputRequests":{}}"#
        ))
        .is_none());
        assert!(keep(&raw(r#"{"requestState":"x"}"#)).is_none());
        assert!(keep(&raw(r#"{"inputRequests":{}}"#)).is_none());
        assert!(keep(&raw(r#"[1]"#)).is_none());
        assert!(keep(&raw(r#"{"ttlMs":-1}"#)).is_none());
    }

    #[test]
    fn only_a_success_for_this_id_is_kept() {
        assert!(json_result(br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}"#, "7").is_some());
        assert!(json_result(br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}"#, "8").is_none());
        assert!(json_result(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#, r#""a""#).is_some());
        assert!(json_result(
            br#"{"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"x"}}"#,
            "7"
        )
        .is_none());
        assert!(json_result(b"not json", "7").is_none());
    }

    #[tokio::test]
    async fn sse_answers_keep_their_final_result() {
        let body = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[]}}\n\n";
        let k = sse_result(Bytes::from(body), "3").await.unwrap();
        assert_eq!(&k.result[..], br#"{"tools":[]}"#);
        let asking = "data: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"roots/list\"}\n\n\
                      data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n";
        assert!(sse_result(Bytes::from(asking), "3").await.is_none());
        assert!(sse_result(
            Bytes::from("data: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n"),
            "3"
        )
        .await
        .is_none());
    }

    #[tokio::test]
    async fn an_sse_answer_read_event_by_event_settles_at_its_result() {
        let progress =
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n";
        let result = "data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"tools\":[]}}\n\n";
        let asking = "data: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"roots/list\"}\n\n";
        let mut a = SseAnswer::default();
        a.read(Bytes::from(progress), "3").await;
        assert!(!a.settled(), "a notification settles nothing");
        a.read(Bytes::from(result), "3").await;
        assert!(a.settled());
        assert_eq!(&a.result().unwrap().result[..], br#"{"tools":[]}"#);
        // A request of the server's before the result: never kept, settled at once.
        let mut a = SseAnswer::default();
        a.read(Bytes::from(asking), "3").await;
        assert!(a.settled());
        a.read(Bytes::from(result), "3").await;
        assert!(a.result().is_none());
    }

    #[test]
    fn hits_answer_with_the_callers_id_and_era() {
        let e = Entry {
            route: "/mcp".into(),
            group: "g".into(),
            method: "tools/list",
            tool: None,
            result: Bytes::from_static(br#"{"tools":[]}"#),
            public: true,
            expires_ms: 10_000,
        };
        assert_eq!(
            String::from_utf8(e.answer(r#""abc""#, false, 4_000)).unwrap(),
            r#"{"jsonrpc":"2.0","id":"abc","result":{"tools":[]}}"#
        );
        assert_eq!(
            String::from_utf8(e.answer("9", true, 4_000)).unwrap(),
            r#"{"jsonrpc":"2.0","id":9,"result":{"ttlMs":6000,"cacheScope":"public","tools":[]}}"#
        );
        let empty = Entry {
            result: Bytes::from_static(b"{}"),
            public: false,
            ..e
        };
        assert_eq!(
            String::from_utf8(empty.answer("1", true, 4_000)).unwrap(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"ttlMs":6000,"cacheScope":"private"}}"#
        );
        let v: Value = serde_json::from_slice(&empty.answer("1", true, 4_000)).unwrap();
        assert_eq!(v["result"]["ttlMs"], 6000);
    }
}
