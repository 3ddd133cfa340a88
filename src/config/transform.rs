//! The `transforms` section: declarative rewrites of one route's requests and answers
//! (docs/transforms.md). Compiled and checked with the rest in `transform::Transforms`.

use super::units::ByteSize;
use crate::config_struct;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

config_struct! {
    /// The transforms of one route.
    pub struct TransformConfig {
        /// A configured route's path, or a virtual server's (with `member`).
        path: String = String::new(),
        /// On a virtual server: the member whose tools, requests and results change (its
        /// prefix).
        member: Option<String> = None,
        /// Tool rules, in order: the first whose `match` fits a tool decides for it.
        tools: Vec<ToolTransformConfig> = Vec::new(),
        request_headers: RequestHeadersConfig = RequestHeadersConfig::default(),
        results: ResultsConfig = ResultsConfig::default(),
    }
}

/// One tool rule (`match` is a Rust keyword, so this one is decoded by serde).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolTransformConfig {
    /// The upstream's tool name, or a glob (`debug_*`).
    #[serde(rename = "match")]
    pub matches: String,
    /// The name clients see and call (an exact `match` only).
    #[serde(default)]
    pub rename: Option<String>,
    /// The description clients see.
    #[serde(default)]
    pub description: Option<String>,
    /// Gone from lists, refused on call like an unknown tool.
    #[serde(default)]
    pub hide: bool,
    /// Argument values the gateway sends.
    #[serde(default)]
    pub set_args: serde_json::Map<String, serde_json::Value>,
    /// `set_args` replace what the client sent (`false`: only where it sent nothing).
    #[serde(default)]
    pub overwrite: bool,
    /// Arguments clients neither see in the schema nor may send.
    #[serde(default)]
    pub hide_args: Vec<String>,
}

impl super::yaml::Leaf for ToolTransformConfig {}

config_struct! {
    /// Header fields of the requests sent upstream.
    pub struct RequestHeadersConfig {
        set: BTreeMap<String, String> = BTreeMap::new(),
        remove: Vec<String> = Vec::new(),
    }
}

config_struct! {
    /// Rewrites of the final result of an answer.
    pub struct ResultsConfig {
        /// Text content longer than this is cut (at a character boundary) and marked.
        max_text_bytes: Option<ByteSize> = None,
        redact: Vec<RedactConfig> = Vec::new(),
    }
}

config_struct! {
    pub struct RedactConfig {
        /// A regular expression (Rust `regex` syntax).
        pattern: String = String::new(),
        /// What replaces each match (not empty: the gateway recognises it and refuses
        /// calls that send it back).
        with: String = "[redacted]".to_string(),
    }
}

/// The checks of the `transforms` section that need the rest of the config: what each
/// entry applies to, once.
pub fn validate(c: &super::Config, errs: &mut super::yaml::Errors) {
    let at = super::yaml::Path::root().key("transforms");
    for (i, t) in c.transforms.iter().enumerate() {
        let tp = at.index(i);
        super::cache::member_target(c, &t.path, t.member.as_deref(), &tp, errs);
        if c.transforms[..i]
            .iter()
            .any(|o| o.path == t.path && o.member == t.member)
        {
            errs.push(&tp.key("path"), format!("{:?} is listed twice", t.path));
        }
    }
}
