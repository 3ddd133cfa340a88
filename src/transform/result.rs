//! What an answer's JSON-RPC responses become: the tool rules on `tools/list` results,
//! then `results` (redaction, then truncation) on the text they carry.
//!
//! Text is a `tools/call` result's `content[].text` (and `structuredContent` strings,
//! redacted only: cutting would break their schema), a `resources/read` result's
//! `contents[].text`, and a `prompts/get` result's `messages[].content.text`.
//! Notifications and requests are never changed.

use super::RouteTransforms;
use serde_json::Value;

/// Appended where text was cut.
pub fn cut_marker(n: usize) -> String {
    format!("\n[truncated by mcp-gateway: {n} more bytes]")
}

impl RouteTransforms {
    /// Whether the message's bytes may need a change (no parse): it carries a list and
    /// tool rules exist, it is longer than `max_text_bytes`, or a redaction matches.
    pub fn may_change(&self, message: &[u8], lists: bool) -> bool {
        (lists && self.has_tool_rules())
            || self.max_text.is_some_and(|m| message.len() > m)
            || self.redact.iter().any(|r| r.bytes.is_match(message))
    }

    /// Apply to one message or a batch; how many things changed.
    pub fn answer(&self, message: &mut Value) -> usize {
        match message {
            Value::Array(items) => items.iter_mut().map(|m| self.answer(m)).sum(),
            Value::Object(m) => match m.get_mut("result") {
                Some(Value::Object(result)) => {
                    let mut n = 0;
                    if let Some(Value::Array(tools)) = result.get_mut("tools") {
                        n += self.tools(tools);
                    }
                    if self.has_result_rules() {
                        n += self.texts(result);
                    }
                    n
                }
                _ => 0,
            },
            _ => 0,
        }
    }

    /// The tool rules on a list: hidden tools go, renamed ones get their new name, and
    /// schemas lose hidden arguments and show defaults.
    pub fn tools(&self, tools: &mut Vec<Value>) -> usize {
        let before = tools.len();
        let mut n = 0;
        tools.retain(|t| {
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            !self.rule_for(name).is_some_and(|r| r.hide)
        });
        n += before - tools.len();
        for t in tools.iter_mut() {
            let Some(name) = t.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let Some(rule) = self.rule_for(&name) else {
                continue;
            };
            let Value::Object(tool) = t else { continue };
            n += 1;
            if let Some(new) = &rule.rename {
                tool.insert("name".into(), Value::String(new.clone()));
            }
            if let Some(d) = &rule.description {
                tool.insert("description".into(), Value::String(d.clone()));
            }
            let Some(Value::Object(schema)) = tool.get_mut("inputSchema") else {
                continue;
            };
            let gone: Vec<&String> = rule
                .hide_args
                .iter()
                .chain(rule.set_args.keys().filter(|_| rule.overwrite))
                .collect();
            if let Some(Value::Object(props)) = schema.get_mut("properties") {
                for g in &gone {
                    props.remove(g.as_str());
                }
                if !rule.overwrite {
                    for (k, v) in &rule.set_args {
                        if let Some(Value::Object(p)) = props.get_mut(k) {
                            p.insert("default".into(), v.clone());
                        }
                    }
                }
            }
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                // A hidden argument, or one the gateway fills in, is not the client's to send.
                required.retain(|r| {
                    r.as_str().is_none_or(|r| {
                        !gone.iter().any(|g| g.as_str() == r) && !rule.set_args.contains_key(r)
                    })
                });
            }
        }
        n
    }

    /// `redact`, then `max_text_bytes`, on a result's text.
    fn texts(&self, result: &mut serde_json::Map<String, Value>) -> usize {
        let mut n = 0;
        let mut each = |v: &mut Value, cut: bool| {
            if let Some(Value::String(s)) = v.get_mut("text") {
                n += self.text(s, cut);
            }
        };
        if let Some(Value::Array(items)) = result.get_mut("content") {
            items.iter_mut().for_each(|i| each(i, true));
        }
        if let Some(Value::Array(items)) = result.get_mut("contents") {
            items.iter_mut().for_each(|i| each(i, true));
        }
        if let Some(Value::Array(messages)) = result.get_mut("messages") {
            for m in messages.iter_mut() {
                match m.get_mut("content") {
                    Some(Value::Array(parts)) => parts.iter_mut().for_each(|p| each(p, true)),
                    Some(c @ Value::Object(_)) => each(c, true),
                    _ => {}
                }
            }
        }
        if let Some(s) = result.get_mut("structuredContent") {
            n += self.strings(s);
        }
        n
    }

    /// Redact every string inside `v` (no cutting).
    fn strings(&self, v: &mut Value) -> usize {
        match v {
            Value::String(s) => self.text(s, false),
            Value::Array(a) => a.iter_mut().map(|x| self.strings(x)).sum(),
            Value::Object(m) => m.values_mut().map(|x| self.strings(x)).sum(),
            _ => 0,
        }
    }

    /// One text: redacted, then (when `cut`) cut at `max_text_bytes` on a character
    /// boundary with the marker; 1 when it changed.
    fn text(&self, s: &mut String, cut: bool) -> usize {
        let mut changed = false;
        for r in &self.redact {
            if r.text.is_match(s) {
                *s = r.text.replace_all(s, regex::NoExpand(&r.with)).into_owned();
                changed = true;
            }
        }
        if let (true, Some(max)) = (cut, self.max_text) {
            if s.len() > max {
                let mut at = max;
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                let rest = s.len() - at;
                s.truncate(at);
                s.push_str(&cut_marker(rest));
                changed = true;
            }
        }
        changed as usize
    }
}
