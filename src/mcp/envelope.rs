//! JSON-RPC envelope inspection: one pass over the body that reads only what routing and
//! policy need (`jsonrpc`, `id`, `method`, `params.name` / `params.uri` / `params.ref`,
//! the `_meta` protocol version) and skips everything else (tool arguments are never
//! materialised). The original bytes are what gets forwarded.
//!
//! The body must be UTF-8 (else it is not JSON: a parse error). At the levels read here
//! (the message, `params`, `params.ref`, `params._meta`) a key the gateway reads may
//! appear once, and no other key may equal it but for case (as Go's `encoding/json`
//! folds it, `ſ` and `K` included): an upstream that matches keys case-insensitively or
//! keeps the first duplicate would otherwise act on a different value than the one
//! authorized. Such bodies are refused as invalid requests.

use super::text::Text;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::{borrow::Cow, fmt};

/// `_meta` key that carries the protocol version in the modern (stateless) era.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The first stateless protocol version.
pub const FIRST_MODERN_VERSION: &str = "2026-07-28";
/// The only version that allowed JSON-RPC batches.
pub const BATCH_VERSION: &str = "2025-03-26";

/// Which generation of the protocol a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// Up to 2025-11-25: `initialize`, sessions, GET streams.
    Legacy,
    /// 2026-07-28 on: stateless, routing headers on every POST.
    Modern,
}

impl Era {
    pub fn as_str(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

/// What the gateway knows about one JSON-RPC message.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub kind: Kind,
    /// The raw JSON of the id (`1`, `"abc"`), echoed in errors the gateway produces.
    pub id: Option<Box<RawValue>>,
    pub method: Option<Cow<'static, str>>,
    /// What the method names, read from the field that method defines: `params.name`
    /// (`tools/call`, `prompts/get`), `params.uri` (`resources/read`, `resources/subscribe`,
    /// `resources/unsubscribe`), `params.ref.name` / `params.ref.uri`
    /// (`completion/complete`); `None` for other methods.
    pub name: Option<String>,
    /// What [`Envelope::name`] names.
    pub names: Option<Names>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    pub protocol_version: Option<String>,
}

impl Envelope {
    /// The method is one of [`KNOWN_METHODS`] (those are interned, so this is one check).
    pub fn method_is_known(&self) -> bool {
        matches!(self.method, Some(Cow::Borrowed(_)))
    }

    pub fn era(&self) -> Era {
        if self.method.as_deref() == Some("initialize") {
            return Era::Legacy;
        }
        match &self.protocol_version {
            Some(v) if v.as_str() >= FIRST_MODERN_VERSION => Era::Modern,
            _ => Era::Legacy,
        }
    }
}

/// The kind of item a message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    Tool,
    Prompt,
    Resource,
}

/// The body of one POST: a single message or (2025-03-26 only) a batch.
#[derive(Debug)]
pub enum Body {
    Single(Envelope),
    Batch(Vec<Envelope>),
}

/// Why a body was refused; maps to a JSON-RPC error code.
#[derive(Debug)]
pub enum InspectError {
    /// Not JSON at all: `-32700`.
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 message: `-32600`. Carries the id when one was readable.
    Invalid(String, Option<Box<RawValue>>),
}

/// Methods the gateway knows, kept as static strings so recording them does not allocate
/// (and the only method names that become metric labels).
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/update",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
];

fn intern(m: &str) -> Cow<'static, str> {
    match KNOWN_METHODS.iter().find(|k| **k == m) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(m.to_string()),
    }
}

/// Inspect a POST body.
pub fn inspect(body: &[u8]) -> Result<Body, InspectError> {
    // JSON text is UTF-8 (RFC 8259 §8.1). Checked once here, so the parser below reads a
    // `str` and does not check again string by string (it never checks skipped ones).
    let body = std::str::from_utf8(body).map_err(|e| {
        InspectError::Parse(format!(
            "the body is not valid JSON: it is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let first = body.bytes().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(InspectError::Parse("the request body is empty".into())),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(body)
                .map_err(|e| InspectError::Parse(format!("the body is not valid JSON: {e}")))?;
            if items.is_empty() {
                return Err(InspectError::Invalid(
                    "an empty batch is not a valid request".into(),
                    None,
                ));
            }
            items
                .into_iter()
                .map(|raw| single(raw.get()))
                .collect::<Result<Vec<_>, _>>()
                .map(Body::Batch)
        }
        Some(_) => single(body).map(Body::Single),
    }
}

fn single(body: &str) -> Result<Envelope, InspectError> {
    let raw: RawMessage = match serde_json::from_str(body) {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(InspectError::Parse(format!(
                "the body is not valid JSON: {e}"
            )))
        }
        Err(e) => {
            // The shape failed first, but the text may not be JSON at all (`""0`).
            if let Err(syntax) = serde_json::from_str::<serde::de::IgnoredAny>(body) {
                return Err(InspectError::Parse(format!(
                    "the body is not valid JSON: {syntax}"
                )));
            }
            return Err(InspectError::Invalid(
                format!("not a JSON-RPC 2.0 message: {e}"),
                None,
            ));
        }
    };
    let id = raw.id.filter(|v| v.get() != "null");
    let invalid = |m: &str| Err(InspectError::Invalid(m.to_string(), id.clone()));
    let params = raw.params.unwrap_or_default();
    if let Some(why) = raw.ambiguous.or(params.ambiguous) {
        return Err(InspectError::Invalid(
            format!(
                "the message is ambiguous: {why}; servers differ on which value they read, so \
                 the gateway does not forward it (send each member once, with its exact name)"
            ),
            id.clone(),
        ));
    }
    if raw.method_not_string {
        return invalid("\"method\" must be a string");
    }
    if !raw.jsonrpc_2_0 {
        return invalid("\"jsonrpc\" must be \"2.0\"");
    }
    if let Some(idv) = &id {
        let c = idv.get().as_bytes()[0];
        if !(c == b'"' || c == b'-' || c.is_ascii_digit()) {
            return invalid("\"id\" must be a string or a number");
        }
    }
    let kind = match (&raw.method, &id, raw.has_result_or_error) {
        (Some(_), Some(_), _) => Kind::Request,
        (Some(_), None, _) if raw.id_was_null => return invalid("\"id\" must not be null"),
        (Some(_), None, _) => Kind::Notification,
        (None, None, true) if !raw.id_was_null => {
            return invalid("a response needs the \"id\" of the request it answers")
        }
        (None, _, true) => Kind::Response,
        (None, _, false) => return invalid("a message needs a \"method\" (request or notification) or a \"result\"/\"error\" (response)"),
    };
    let (names, name) = match raw.method.as_deref() {
        Some("tools/call") => (Names::Tool, params.name),
        Some("prompts/get") => (Names::Prompt, params.name),
        Some("resources/read" | "resources/subscribe" | "resources/unsubscribe") => {
            (Names::Resource, params.uri)
        }
        Some("completion/complete") => match params.reference {
            Some(Ref::Prompt(n)) => (Names::Prompt, n),
            Some(Ref::Resource(u)) => (Names::Resource, u),
            None => (Names::Prompt, None),
        },
        _ => (Names::Tool, None),
    };
    Ok(Envelope {
        kind,
        id,
        method: raw.method,
        names: name.is_some().then_some(names),
        name,
        protocol_version: params.protocol_version,
    })
}

/// The keys read at one level of a JSON object, and which of them were seen (at most 8).
pub(crate) struct Keys {
    watched: &'static [&'static str],
    seen: u8,
}

impl Keys {
    pub(crate) const fn new(watched: &'static [&'static str]) -> Keys {
        Keys { watched, seen: 0 }
    }

    /// Note `key`: `Err` with the reason when it repeats a watched key or equals one but
    /// for case. Keys that are neither cost one length comparison per watched key.
    pub(crate) fn note(&mut self, key: &str) -> Result<(), String> {
        for (i, w) in self.watched.iter().enumerate() {
            if key == *w {
                if self.seen & (1 << i) != 0 {
                    return Err(format!("the member {w:?} appears more than once"));
                }
                self.seen |= 1 << i;
                return Ok(());
            }
            if folds_to(key, w) {
                return Err(format!(
                    "the member {key:?} differs from {w:?} only by case"
                ));
            }
        }
        Ok(())
    }
}

/// `key` equals `target` (ASCII) under Go's case folding: ASCII letters of
/// either case, and `ſ` (U+017F) for `s`, `K` (U+212A) for `k`.
fn folds_to(key: &str, target: &str) -> bool {
    // Each folded char is 1 to 3 bytes.
    if key.len() < target.len() || key.len() > target.len() * 3 {
        return false;
    }
    let mut t = target.bytes();
    for c in key.chars() {
        let folded = match c {
            '\u{17f}' => b's',
            '\u{212a}' => b'k',
            c if c.is_ascii() => (c as u8).to_ascii_lowercase(),
            _ => return false,
        };
        if t.next().map(|b| b.to_ascii_lowercase()) != Some(folded) {
            return false;
        }
    }
    t.next().is_none()
}

/// The top-level object; unknown members are skipped without being built.
struct RawMessage {
    /// `"jsonrpc": "2.0"` was present.
    jsonrpc_2_0: bool,
    id: Option<Box<RawValue>>,
    id_was_null: bool,
    method: Option<Cow<'static, str>>,
    params: Option<Params>,
    has_result_or_error: bool,
    /// `method` was there but not a string.
    method_not_string: bool,
    /// Why the message is ambiguous (a key repeated, or repeated but for case).
    ambiguous: Option<String>,
}

/// The message keys the gateway reads.
const MESSAGE_KEYS: &[&str] = &["jsonrpc", "id", "method", "params"];
/// The `params` keys the gateway reads.
const PARAMS_KEYS: &[&str] = &["name", "uri", "ref", "_meta"];
/// The `params.ref` keys the gateway reads.
const REF_KEYS: &[&str] = &["type", "name", "uri"];

impl<'de> Deserialize<'de> for RawMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMessage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMessage, A::Error> {
                let mut out = RawMessage {
                    jsonrpc_2_0: false,
                    id: None,
                    id_was_null: false,
                    method: None,
                    params: None,
                    has_result_or_error: false,
                    method_not_string: false,
                    ambiguous: None,
                };
                let mut keys = Keys::new(MESSAGE_KEYS);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if let Err(why) = keys.note(&key) {
                        out.ambiguous.get_or_insert(why);
                    }
                    match key.as_ref() {
                        "jsonrpc" => out.jsonrpc_2_0 = map.next_value::<Text<'de>>()?.0 == "2.0",
                        "id" => {
                            let v: Box<RawValue> = map.next_value()?;
                            out.id_was_null = v.get() == "null";
                            out.id = Some(v);
                        }
                        "method" => match map.next_value::<StrOrOther<'de>>()?.0 {
                            Some(m) => out.method = Some(intern(&m)),
                            None => out.method_not_string = true,
                        },
                        "params" => out.params = Some(map.next_value::<Params>()?),
                        "result" | "error" => {
                            map.next_value::<IgnoredAny>()?;
                            out.has_result_or_error = true;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `params`: an object (we read `name`, `uri`, `ref`, `_meta`) or an array (nothing to read).
#[derive(Default)]
struct Params {
    name: Option<String>,
    uri: Option<String>,
    reference: Option<Ref>,
    protocol_version: Option<String>,
    ambiguous: Option<String>,
}

/// `params.ref` of `completion/complete`: `{type: "ref/prompt", name}` or
/// `{type: "ref/resource", uri}`.
enum Ref {
    Prompt(Option<String>),
    Resource(Option<String>),
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"params\" as an object or an array")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut out = Params::default();
                let mut keys = Keys::new(PARAMS_KEYS);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if let Err(why) = keys.note(&key) {
                        out.ambiguous.get_or_insert(format!("in \"params\", {why}"));
                    }
                    match key.as_ref() {
                        "name" => out.name = owned(map.next_value::<StrOrOther>()?),
                        "uri" => out.uri = owned(map.next_value::<StrOrOther>()?),
                        "ref" => {
                            let r = map.next_value::<RefValue>()?;
                            if let Some(why) = r.ambiguous {
                                out.ambiguous
                                    .get_or_insert(format!("in \"params.ref\", {why}"));
                            }
                            out.reference = r.reference;
                        }
                        "_meta" => {
                            let m = map.next_value::<Meta>()?;
                            if let Some(why) = m.ambiguous {
                                out.ambiguous
                                    .get_or_insert(format!("in \"params._meta\", {why}"));
                            }
                            out.protocol_version = m.version;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Params::default())
            }
        }
        d.deserialize_any(V)
    }
}

fn owned(s: StrOrOther) -> Option<String> {
    s.0.map(Cow::into_owned)
}

/// A string value (borrowed when it has no escapes), or `None` for any other JSON type
/// (not our business to reject).
struct StrOrOther<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for StrOrOther<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrOther<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrOther(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrOther(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(StrOrOther(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrOther(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrOther(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `params.ref`: its `type` decides whether `name` or `uri` is what it names.
struct RefValue {
    reference: Option<Ref>,
    ambiguous: Option<String>,
}

impl<'de> Deserialize<'de> for RefValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RefValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"ref\" as an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RefValue, A::Error> {
                let (mut kind, mut name, mut uri, mut ambiguous) = (None, None, None, None);
                let mut keys = Keys::new(REF_KEYS);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if let Err(why) = keys.note(&key) {
                        ambiguous.get_or_insert(why);
                    }
                    match key.as_ref() {
                        "type" => kind = map.next_value::<StrOrOther>()?.0,
                        "name" => name = owned(map.next_value::<StrOrOther>()?),
                        "uri" => uri = owned(map.next_value::<StrOrOther>()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let reference = match kind.as_deref() {
                    Some("ref/prompt") => Some(Ref::Prompt(name)),
                    Some("ref/resource") => Some(Ref::Resource(uri)),
                    _ => None,
                };
                Ok(RefValue {
                    reference,
                    ambiguous,
                })
            }
            fn visit_unit<E>(self) -> Result<RefValue, E> {
                Ok(RefValue {
                    reference: None,
                    ambiguous: None,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `_meta`: only the protocol version is read.
struct Meta {
    version: Option<String>,
    ambiguous: Option<String>,
}

/// The `_meta` key the gateway reads.
const META_KEYS: &[&str] = &[META_PROTOCOL_VERSION];

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Meta;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"_meta\" as an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                let (mut version, mut ambiguous) = (None, None);
                let mut keys = Keys::new(META_KEYS);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if let Err(why) = keys.note(&key) {
                        ambiguous.get_or_insert(why);
                    }
                    if key == META_PROTOCOL_VERSION {
                        version = owned(map.next_value::<StrOrOther>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Meta { version, ambiguous })
            }
            fn visit_unit<E>(self) -> Result<Meta, E> {
                Ok(Meta {
                    version: None,
                    ambiguous: None,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
