//! URIs in what members send, rewritten for the catalog ([`super::names::uri`]): in
//! results (`resource_link` and embedded resources in tool results and prompt messages,
//! `resources/read` contents, `_meta.ui.resourceUri`) and in notifications
//! (`notifications/resources/updated`). Only these places: a tool's own output (its
//! `structuredContent`, its text) is the tool's and passes untouched.

use super::names;
use serde_json::Value;

/// Prefix the URI at `v[key]`, if it is a string.
fn prefix_at(prefix: &str, v: &mut Value, key: &str) {
    if let Some(Value::String(uri)) = v.get_mut(key) {
        *uri = names::uri(prefix, uri);
    }
}

/// A tool's (or a result's) `_meta.ui.resourceUri` (MCP Apps), and its older spelling
/// `_meta["ui/resourceUri"]`.
pub fn tool_meta(prefix: &str, item: &mut Value) {
    if let Some(meta) = item.get_mut("_meta") {
        if let Some(ui) = meta.get_mut("ui") {
            prefix_at(prefix, ui, "resourceUri");
        }
        prefix_at(prefix, meta, "ui/resourceUri");
    }
}

/// A content block: a `resource_link`'s URI, an embedded resource's.
fn content_block(prefix: &str, block: &mut Value) {
    match block.get("type").and_then(Value::as_str) {
        Some("resource_link") => prefix_at(prefix, block, "uri"),
        Some("resource") => {
            if let Some(r) = block.get_mut("resource") {
                prefix_at(prefix, r, "uri");
            }
        }
        _ => {}
    }
}

/// The result of a routed `method` from the member with `prefix`.
pub fn result(prefix: &str, method: &str, result: &mut Value) {
    match method {
        "tools/call" => {
            if let Some(Value::Array(blocks)) = result.get_mut("content") {
                blocks.iter_mut().for_each(|b| content_block(prefix, b));
            }
            tool_meta(prefix, result);
        }
        "prompts/get" => {
            if let Some(Value::Array(messages)) = result.get_mut("messages") {
                for m in messages {
                    match m.get_mut("content") {
                        Some(Value::Array(blocks)) => {
                            blocks.iter_mut().for_each(|b| content_block(prefix, b))
                        }
                        Some(block) => content_block(prefix, block),
                        None => {}
                    }
                }
            }
        }
        "resources/read" => {
            if let Some(Value::Array(contents)) = result.get_mut("contents") {
                contents
                    .iter_mut()
                    .for_each(|c| prefix_at(prefix, c, "uri"));
            }
        }
        _ => {}
    }
}

/// The cache fields of a member's result (`ttlMs`, `cacheScope`): what the member says
/// holds for its own answer, not for what the gateway serves, so a modern client is told
/// `private` and `ttlMs: 0` (no shared cache may keep it), and a legacy one, whose
/// protocol has no such fields, gets none.
pub fn cache_fields(result: &mut Value, modern: bool) {
    let Some(fields) = result.as_object_mut() else {
        return;
    };
    if !fields.contains_key("ttlMs") && !fields.contains_key("cacheScope") {
        return;
    }
    if modern {
        fields.insert("cacheScope".into(), Value::String("private".into()));
        fields.insert("ttlMs".into(), Value::from(0));
    } else {
        fields.remove("cacheScope");
        fields.remove("ttlMs");
    }
}

/// A notification from the member with `prefix`.
pub fn notification(prefix: &str, message: &mut Value) {
    if message.get("method").and_then(Value::as_str) == Some("notifications/resources/updated") {
        if let Some(params) = message.get_mut("params") {
            prefix_at(prefix, params, "uri");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uris_in_results_and_notifications() {
        let mut r = json!({
            "content": [
                {"type": "text", "text": "file:///not-a-link"},
                {"type": "resource_link", "uri": "file:///a.txt", "name": "a"},
                {"type": "resource", "resource": {"uri": "mem:x", "text": "x"}}
            ],
            "structuredContent": {"uri": "file:///mine"},
            "_meta": {"ui": {"resourceUri": "ui://w"}}
        });
        result("files", "tools/call", &mut r);
        assert_eq!(r["content"][0]["text"], "file:///not-a-link");
        assert_eq!(r["content"][1]["uri"], "file://files+/a.txt");
        assert_eq!(r["content"][2]["resource"]["uri"], "mem:files+x");
        assert_eq!(r["structuredContent"]["uri"], "file:///mine");
        assert_eq!(r["_meta"]["ui"]["resourceUri"], "ui://files+w");
        let mut read = json!({"contents": [{"uri": "file:///b", "text": ""}]});
        result("files", "resources/read", &mut read);
        assert_eq!(read["contents"][0]["uri"], "file://files+/b");
        let mut n =
            json!({"method": "notifications/resources/updated", "params": {"uri": "file:///c"}});
        notification("files", &mut n);
        assert_eq!(n["params"]["uri"], "file://files+/c");
        let mut r = json!({"contents": [], "ttlMs": 60000, "cacheScope": "public"});
        cache_fields(&mut r, true);
        assert_eq!(
            (r["ttlMs"].clone(), r["cacheScope"].clone()),
            (json!(0), json!("private"))
        );
        cache_fields(&mut r, false);
        assert!(r.get("ttlMs").is_none() && r.get("cacheScope").is_none());
    }
}
