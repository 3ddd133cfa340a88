//! JSON-RPC envelope inspection: one pass over the body that reads only what routing and
//! policy need (`jsonrpc`, `id`, `method`, `params.name` / `params.uri`, the `_meta`
//! protocol version) and skips everything else (tool arguments are never materialised).
//! The original bytes are what gets forwarded.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

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
    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/*).
    pub name: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    pub protocol_version: Option<String>,
}

impl Envelope {
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
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(InspectError::Parse("the request body is empty".into())),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body)
                .map_err(|e| InspectError::Parse(format!("the body is not valid JSON: {e}")))?;
            if items.is_empty() {
                return Err(InspectError::Invalid(
                    "an empty batch is not a valid request".into(),
                    None,
                ));
            }
            items
                .into_iter()
                .map(|raw| single(raw.get().as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map(Body::Batch)
        }
        Some(_) => single(body).map(Body::Single),
    }
}

fn single(body: &[u8]) -> Result<Envelope, InspectError> {
    let raw: RawMessage = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(InspectError::Parse(format!(
                "the body is not valid JSON: {e}"
            )))
        }
        Err(e) => {
            return Err(InspectError::Invalid(
                format!("not a JSON-RPC 2.0 message: {e}"),
                None,
            ))
        }
    };
    let id = raw.id.filter(|v| v.get() != "null");
    let invalid = |m: &str| Err(InspectError::Invalid(m.to_string(), id.clone()));
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
        (None, _, true) => Kind::Response,
        (None, _, false) => return invalid("a message needs a \"method\" (request or notification) or a \"result\"/\"error\" (response)"),
    };
    let params = raw.params.unwrap_or_default();
    Ok(Envelope {
        kind,
        id,
        method: raw.method,
        name: params.name,
        protocol_version: params.protocol_version,
    })
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
}

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
                };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "jsonrpc" => out.jsonrpc_2_0 = map.next_value::<Cow<'de, str>>()? == "2.0",
                        "id" => {
                            let v: Box<RawValue> = map.next_value()?;
                            out.id_was_null = v.get() == "null";
                            out.id = Some(v);
                        }
                        "method" => {
                            let m = map
                                .next_value::<Cow<'de, str>>()
                                .map_err(|_| de::Error::custom("\"method\" must be a string"))?;
                            out.method = Some(intern(&m));
                        }
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

/// `params`: an object (we read `name`, `uri`, `_meta`) or an array (nothing to read).
#[derive(Default)]
struct Params {
    name: Option<String>,
    protocol_version: Option<String>,
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
                let mut uri = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "name" => {
                            out.name = map.next_value::<Option<StrOrOther>>()?.and_then(|s| s.0)
                        }
                        "uri" => uri = map.next_value::<Option<StrOrOther>>()?.and_then(|s| s.0),
                        "_meta" => out.protocol_version = map.next_value::<Meta>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if out.name.is_none() {
                    out.name = uri;
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

/// A string value, or `None` for any other JSON type (not our business to reject).
struct StrOrOther(Option<String>);

impl<'de> Deserialize<'de> for StrOrOther {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrOther;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrOther, E> {
                Ok(StrOrOther(Some(v.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StrOrOther, E> {
                Ok(StrOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StrOrOther, E> {
                Ok(StrOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StrOrOther, E> {
                Ok(StrOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StrOrOther, E> {
                Ok(StrOrOther(None))
            }
            fn visit_unit<E>(self) -> Result<StrOrOther, E> {
                Ok(StrOrOther(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrOrOther, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrOther(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<StrOrOther, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrOther(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `_meta`: only the protocol version is read.
struct Meta(Option<String>);

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Meta;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"_meta\" as an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                let mut version = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == META_PROTOCOL_VERSION {
                        version = map.next_value::<Option<StrOrOther>>()?.and_then(|s| s.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Meta(version))
            }
            fn visit_unit<E>(self) -> Result<Meta, E> {
                Ok(Meta(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
