//! A `tools/call` as the upstream gets it: its tool's upstream name, hidden arguments
//! dropped, the gateway's argument values set. Calls the rules do not touch are left
//! alone (their bytes are forwarded as they came).

use super::{RouteTransforms, ToolRule};
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why a call is refused; each is a `-32602` answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A hidden tool, or a renamed one called by its upstream name: as if it did not exist.
    Unknown(String),
    /// An argument holds a redaction marker (text the gateway put in an answer).
    Marker { argument: String, marker: String },
    /// A rule that cannot be applied to this call.
    Failed { at: String, why: String },
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Unknown(name) => format!("Unknown tool: {name}"),
            Refusal::Marker { argument, marker } => format!(
                "argument {argument:?} holds {marker:?}, the gateway's marker for redacted text: \
                 send the original value"
            ),
            Refusal::Failed { at, why } => {
                format!("the transform {at} cannot apply to this call: {why}")
            }
        }
    }
}

/// A call rewritten for the upstream.
#[derive(Debug, PartialEq)]
pub struct Rewritten {
    pub body: Bytes,
    /// The tool's upstream name.
    pub name: String,
    /// Arguments the gateway changed, with their new value (`None`: dropped).
    pub changed: Vec<(String, Option<Value>)>,
}

/// The modern era's `Mcp-Param-<argument>` fields of the arguments a rewrite changed
/// (`changed`), as they must now be sent: `None` where the argument was dropped. Only a
/// field the client sent is to be re-emitted (the server's schema says which arguments
/// travel as headers; the client knew it).
pub fn param_headers(
    changed: &[(String, Option<Value>)],
) -> impl Iterator<Item = (http::HeaderName, Option<http::HeaderValue>)> + '_ {
    changed.iter().filter_map(|(arg, value)| {
        let header = format!("mcp-param-{}", arg.to_ascii_lowercase());
        let header = http::HeaderName::try_from(header).ok()?;
        let value = value.as_ref().map(|v| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            crate::mcp::headers::encode_value(&text)
        });
        Some((header, value))
    })
}

impl RouteTransforms {
    /// What to do with a call of the client-visible tool `name` whose body is `body`:
    /// `Ok(None)` to forward it as it is.
    pub fn call(&self, name: &str, body: &[u8]) -> Result<Option<Rewritten>, Refusal> {
        let (upstream, rule): (&str, Option<&ToolRule>) = match self.renamed.get(name) {
            Some(&i) => {
                let r = &self.rules[i];
                (r.exact.as_deref().unwrap_or(name), Some(r))
            }
            None => match self.rule_for(name) {
                Some(r) if r.hide || r.rename.is_some() => {
                    return Err(Refusal::Unknown(name.into()))
                }
                r => (name, r),
            },
        };
        let marker = self
            .markers()
            .find(|m| memchr::memmem::find(body, m.as_bytes()).is_some());
        let rewrites = upstream != name
            || rule.is_some_and(|r| !r.set_args.is_empty() || !r.hide_args.is_empty());
        if !rewrites && marker.is_none() {
            return Ok(None);
        }
        let failed = |why: &str| Refusal::Failed {
            at: rule.map_or_else(|| "(results.redact)".to_string(), |r| r.at.clone()),
            why: why.to_string(),
        };
        let mut top: BTreeMap<String, Box<RawValue>> =
            serde_json::from_slice(body).map_err(|_| failed("the body is not a JSON object"))?;
        let mut params: Map<String, Value> = match top.get("params") {
            Some(raw) => {
                serde_json::from_str(raw.get()).map_err(|_| failed("params is not an object"))?
            }
            None => Map::new(),
        };
        if let Some(m) = marker {
            if let Some(Value::Object(args)) = params.get("arguments") {
                if let Some(arg) = args.iter().find(|(_, v)| holds(v, m)).map(|(k, _)| k) {
                    return Err(Refusal::Marker {
                        argument: arg.clone(),
                        marker: m.to_string(),
                    });
                }
            }
            if !rewrites {
                return Ok(None);
            }
        }
        let mut changed = Vec::new();
        if let Some(r) = rule {
            if !r.set_args.is_empty() || !r.hide_args.is_empty() {
                let args = params
                    .entry("arguments")
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(args) = args else {
                    return Err(failed("arguments is not an object"));
                };
                for h in &r.hide_args {
                    if args.remove(h).is_some() && !r.set_args.contains_key(h) {
                        changed.push((h.clone(), None));
                    }
                }
                for (k, v) in &r.set_args {
                    if r.overwrite || !args.contains_key(k) {
                        args.insert(k.clone(), v.clone());
                        changed.push((k.clone(), Some(v.clone())));
                    }
                }
            }
        }
        params.insert("name".into(), Value::String(upstream.to_string()));
        let raw = serde_json::value::to_raw_value(&params).map_err(|_| failed("params"))?;
        top.insert("params".into(), raw);
        let body = serde_json::to_vec(&top).map_err(|_| failed("the body"))?;
        Ok(Some(Rewritten {
            body: Bytes::from(body),
            name: upstream.to_string(),
            changed,
        }))
    }
}

/// Whether `v` (or a string inside it) holds `marker`.
fn holds(v: &Value, marker: &str) -> bool {
    match v {
        Value::String(s) => s.contains(marker),
        Value::Array(a) => a.iter().any(|x| holds(x, marker)),
        Value::Object(m) => m.values().any(|x| holds(x, marker)),
        _ => false,
    }
}
