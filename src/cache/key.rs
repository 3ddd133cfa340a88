//! Cache keys: what makes two requests the same question.
//!
//! A key is the SHA-256 of the route, the request's era (and, in the modern era, its
//! protocol version), the method, the canonical `params` and the scope: `public`, or
//! the caller's authorization context for a private answer. Canonical `params` are the
//! client's with object keys sorted at every level and `_meta.progressToken` left out
//! (a progress token names one request, as the JSON-RPC id does, which is never part of
//! a key); a cursor is part of `params`, so each page has its own key.

use crate::mcp::envelope::Era;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A cache key (also the Redis key's suffix, in hex).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn hex(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// Who may share an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Anyone (a modern-era answer marked `cacheScope: "public"`).
    Public,
    /// One authorization context: the identity the gateway authenticated (`None`: an
    /// anonymous caller, on a route without authentication).
    Private(Option<String>),
}

/// The question a cacheable request asks.
pub struct Question<'a> {
    pub route: &'a str,
    pub era: Era,
    /// The modern era's protocol version (`_meta`), which may change a result's shape.
    pub protocol_version: Option<&'a str>,
    pub method: &'a str,
    /// The canonical `params` ([`canonical_params`]).
    pub params: &'a str,
}

impl Question<'_> {
    /// The key of this question's answer in `scope`.
    pub fn key(&self, scope: &Scope) -> Key {
        let mut h = Sha256::new();
        for part in [
            self.route,
            self.era.as_str(),
            self.protocol_version.unwrap_or(""),
            self.method,
            self.params,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        match scope {
            Scope::Public => h.update(b"\x01public"),
            Scope::Private(None) => h.update(b"\x02anonymous"),
            Scope::Private(Some(who)) => {
                h.update(b"\x03");
                h.update((who.len() as u64).to_be_bytes());
                h.update(who.as_bytes());
            }
        }
        Key(h.finalize().into())
    }
}

/// Why a request's answer is not cached, whatever the rules say.
#[derive(Debug, PartialEq, Eq)]
pub enum NotCacheable {
    /// A retry of an `InputRequiredResult` (`params.requestState`).
    RequestState,
    /// `params` is not an object (or the body is unreadable).
    BadParams,
}

/// The canonical text of a request body's `params` (`{}` when absent).
pub fn canonical_params(body: &[u8]) -> Result<String, NotCacheable> {
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        params: Option<Value>,
    }
    let message: Message = serde_json::from_slice(body).map_err(|_| NotCacheable::BadParams)?;
    let mut params = match message.params {
        None | Some(Value::Null) => return Ok("{}".into()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(NotCacheable::BadParams),
    };
    if params.contains_key("requestState") {
        return Err(NotCacheable::RequestState);
    }
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        meta.remove("progressToken");
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    let mut out = String::with_capacity(64);
    write_sorted(&Value::Object(params), &mut out);
    Ok(out)
}

/// JSON text with object keys sorted at every level (whatever order the map keeps).
fn write_sorted(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorted(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_canonical() {
        let a = canonical_params(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"b":1,"a":[{"z":1,"y":2}]}}}"#).unwrap();
        let b = canonical_params(br#"{"params":{"arguments":{"a":[{"y":2,"z":1}],"b":1},"name":"x"},"id":"other","method":"tools/call","jsonrpc":"2.0"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, r#"{"arguments":{"a":[{"y":2,"z":1}],"b":1},"name":"x"}"#);
    }

    #[test]
    fn progress_tokens_and_ids_are_not_part_of_a_key() {
        let a =
            canonical_params(br#"{"id":1,"params":{"cursor":"c2","_meta":{"progressToken":7}}}"#)
                .unwrap();
        let b = canonical_params(br#"{"id":2,"params":{"cursor":"c2"}}"#).unwrap();
        assert_eq!(a, b);
        let c = canonical_params(br#"{"id":2,"params":{"cursor":"c3"}}"#).unwrap();
        assert_ne!(a, c, "each page has its own key");
        assert_eq!(canonical_params(br#"{"id":1}"#).unwrap(), "{}");
        let m = canonical_params(
            br#"{"params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":1}}}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#
        );
    }

    #[test]
    fn retries_and_odd_params_are_not_cacheable() {
        assert_eq!(
            canonical_params(br#"{"params":{"name":"x","requestState":"abc"}}"#),
            Err(NotCacheable::RequestState)
        );
        assert_eq!(
            canonical_params(br#"{"params":[1]}"#),
            Err(NotCacheable::BadParams)
        );
        assert_eq!(canonical_params(b"nope"), Err(NotCacheable::BadParams));
    }

    #[test]
    fn scopes_and_questions_make_different_keys() {
        let q = |route, method, params| Question {
            route,
            era: Era::Legacy,
            protocol_version: None,
            method,
            params,
        };
        let base = q("/mcp", "tools/list", "{}");
        let alice = Scope::Private(Some("api_key:r:alice".into()));
        let bob = Scope::Private(Some("api_key:r:bob".into()));
        let keys = [
            base.key(&alice),
            base.key(&bob),
            base.key(&Scope::Private(None)),
            base.key(&Scope::Public),
            q("/mcp/other", "tools/list", "{}").key(&alice),
            q("/mcp", "prompts/list", "{}").key(&alice),
            Question {
                era: Era::Modern,
                ..q("/mcp", "tools/list", "{}")
            }
            .key(&alice),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(base.key(&alice), q("/mcp", "tools/list", "{}").key(&alice));
        assert_eq!(base.key(&alice).hex().len(), 64);
    }
}
