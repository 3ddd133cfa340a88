//! Declarative transforms of one route's requests and answers (docs/transforms.md),
//! compiled at load with every problem named by its path.
//!
//! The one order, for a request and its answer:
//! 1. The client's request is authenticated, authorized and rate-limited as it was sent
//!    (policies see the names clients see), then looked up in the cache (keyed on it).
//! 2. [`RouteTransforms::call`] (a `tools/call`): a hidden tool, or a renamed tool
//!    called by its upstream name, is refused as an unknown tool (`-32602`); arguments
//!    holding a redaction marker are refused; otherwise the call is rewritten when it
//!    must be ([`request`]: the upstream's name, `hide_args` dropped, `set_args`
//!    applied), and the modern era's routing headers are re-emitted from the new body.
//! 3. `request_headers`: `remove`, then `set`, on every request sent upstream.
//! 4. The answer (from the upstream or the cache): [`RouteTransforms::answer`] on each
//!    JSON-RPC response in it — a JSON body whole, an SSE answer event by event, so
//!    progress and log notifications pass at once — first the tool rules on a
//!    `tools/list` result (hide, rename, description, the schema's hidden and defaulted
//!    arguments), then `results` (`redact`, then `max_text_bytes`) on text content;
//!    then the caller's policies filter the lists.
//!
//! Deciding that nothing needs doing costs no JSON parse: a call is rewritten only when
//! its tool has a rule (or the body holds a marker); an answer is parsed only when it
//! carries a list, is longer than `max_text_bytes`, or a redaction pattern matches its
//! bytes.

pub mod request;
pub mod result;

use crate::config::transform::TransformConfig;
use globset::{Glob, GlobSet, GlobSetBuilder};
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::Arc;

/// One compiled tool rule.
#[derive(Debug)]
pub struct ToolRule {
    /// Its config path (`transforms[0].tools[2]`), named in errors.
    pub at: String,
    /// The upstream name, when `match` is exact.
    pub exact: Option<String>,
    pub rename: Option<String>,
    pub description: Option<String>,
    pub hide: bool,
    pub set_args: serde_json::Map<String, serde_json::Value>,
    pub overwrite: bool,
    pub hide_args: Vec<String>,
}

/// One redaction.
#[derive(Debug)]
pub struct Redact {
    pub bytes: regex::bytes::Regex,
    pub text: regex::Regex,
    pub with: String,
}

/// One route's transforms.
#[derive(Debug)]
pub struct RouteTransforms {
    pub at: String,
    rules: Vec<ToolRule>,
    globs: GlobSet,
    /// Client-visible name → the rule renaming to it.
    renamed: HashMap<String, usize>,
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
    pub max_text: Option<usize>,
    pub redact: Vec<Redact>,
}

/// Every route's transforms.
#[derive(Debug, Default)]
pub struct Transforms(HashMap<String, Arc<RouteTransforms>>);

/// Header fields a transform may not touch: the connection's, the body's framing, the
/// upstream's credentials (`upstream_auth`) and MCP's own.
fn reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "authorization"
            | "proxy-authorization"
            | "content-type"
            | "x-request-id"
            | "expect"
    ) || n.starts_with("mcp-")
        || n.starts_with("proxy-")
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

impl Transforms {
    /// Compile `transforms` (their paths and members are checked with the config), by
    /// the rules' name: a route's path, or a member's `path#prefix`.
    pub fn build(list: &[TransformConfig]) -> Result<Transforms, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut out = HashMap::new();
        for (i, t) in list.iter().enumerate() {
            let at = format!("transforms[{i}]");
            if let Some(rt) = compile(t, &at, &mut errs) {
                let name = crate::config::cache::scope_name(&t.path, t.member.as_deref());
                out.insert(name, Arc::new(rt));
            }
        }
        if errs.is_empty() {
            Ok(Transforms(out))
        } else {
            Err(errs)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A route's transforms, or a member's (`path#prefix`).
    pub fn get(&self, route: &str) -> Option<&Arc<RouteTransforms>> {
        self.0.get(route)
    }
}

fn compile(
    t: &TransformConfig,
    at: &str,
    errs: &mut Vec<(String, String)>,
) -> Option<RouteTransforms> {
    let before = errs.len();
    let mut rules = Vec::new();
    let mut globs = GlobSetBuilder::new();
    let mut renamed = HashMap::new();
    for (j, r) in t.tools.iter().enumerate() {
        let rat = format!("{at}.tools[{j}]");
        let mut bad = |k: &str, m: String| errs.push((format!("{rat}.{k}"), m));
        if r.matches.is_empty() {
            bad("match", "is required".into());
        }
        match Glob::new(&r.matches) {
            Ok(g) => {
                globs.add(g);
            }
            Err(e) => bad("match", format!("{:?} is not a glob: {e}", r.matches)),
        }
        if let Some(new) = &r.rename {
            if r.hide {
                bad(
                    "rename",
                    "a hidden tool cannot be renamed (use one of hide, rename)".into(),
                );
            }
            if is_glob(&r.matches) {
                bad(
                    "rename",
                    format!(
                        "renames one tool: match must be its exact name, not the glob {:?}",
                        r.matches
                    ),
                );
            }
            if new.is_empty() {
                bad("rename", "must not be empty".into());
            }
            if renamed.insert(new.clone(), j).is_some() {
                bad(
                    "rename",
                    format!("{new:?} is the new name of an earlier rule too"),
                );
            }
            if t.tools
                .iter()
                .any(|o| o.matches == *new && o.rename.is_none())
            {
                bad("rename", format!("{new:?} is another rule's tool name"));
            }
        }
        for (k, name) in r.hide_args.iter().enumerate() {
            if name.is_empty() {
                bad(&format!("hide_args[{k}]"), "must not be empty".into());
            }
        }
        if r.set_args.keys().any(String::is_empty) {
            bad("set_args", "argument names must not be empty".into());
        }
        rules.push(ToolRule {
            at: rat.clone(),
            exact: (!is_glob(&r.matches)).then(|| r.matches.clone()),
            rename: r.rename.clone(),
            description: r.description.clone(),
            hide: r.hide,
            set_args: r.set_args.clone(),
            overwrite: r.overwrite,
            hide_args: r.hide_args.clone(),
        });
    }
    let hat = format!("{at}.request_headers");
    let mut set_headers = Vec::new();
    for (name, value) in &t.request_headers.set {
        let p = format!("{hat}.set.{name}");
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(n), _) if reserved(&n) => errs.push((
                p,
                format!("{name:?} is set by the gateway itself and cannot be set here"),
            )),
            (Ok(n), Ok(v)) => set_headers.push((n, v)),
            (Err(_), _) => errs.push((p, format!("{name:?} is not a valid header name"))),
            (_, Err(_)) => errs.push((p, "not a valid header value (control characters?)".into())),
        }
    }
    let mut remove_headers = Vec::new();
    for (k, name) in t.request_headers.remove.iter().enumerate() {
        let p = format!("{hat}.remove[{k}]");
        match HeaderName::try_from(name.as_str()) {
            Ok(n) if reserved(&n) => errs.push((
                p,
                format!("{name:?} is the gateway's own and cannot be removed here"),
            )),
            Ok(n) => remove_headers.push(n),
            Err(_) => errs.push((p, format!("{name:?} is not a valid header name"))),
        }
    }
    let rat = format!("{at}.results");
    let max_text = match t.results.max_text_bytes {
        Some(b) if b.0 == 0 => {
            errs.push((
                format!("{rat}.max_text_bytes"),
                "must be greater than 0 (leave it out to cut nothing)".into(),
            ));
            None
        }
        Some(b) => Some(b.0 as usize),
        None => None,
    };
    let mut redact = Vec::new();
    for (k, r) in t.results.redact.iter().enumerate() {
        let p = format!("{rat}.redact[{k}]");
        if r.with.is_empty() {
            errs.push((
                format!("{p}.with"),
                "must not be empty (the marker is how the gateway recognises redacted text)".into(),
            ));
        }
        if r.pattern.is_empty() {
            errs.push((format!("{p}.pattern"), "is required".into()));
            continue;
        }
        match (
            regex::bytes::Regex::new(&r.pattern),
            regex::Regex::new(&r.pattern),
        ) {
            (Ok(bytes), Ok(text)) => redact.push(Redact {
                bytes,
                text,
                with: r.with.clone(),
            }),
            (Err(e), _) | (_, Err(e)) => errs.push((
                format!("{p}.pattern"),
                format!("not a regular expression: {e}"),
            )),
        }
    }
    let globs = match globs.build() {
        Ok(g) => g,
        Err(e) => {
            errs.push((format!("{at}.tools"), e.to_string()));
            return None;
        }
    };
    (errs.len() == before).then(|| RouteTransforms {
        at: at.to_string(),
        rules,
        globs,
        renamed,
        set_headers,
        remove_headers,
        max_text,
        redact,
    })
}

impl RouteTransforms {
    /// The rule for the upstream's tool `name` (the first that matches).
    pub fn rule_for(&self, name: &str) -> Option<&ToolRule> {
        self.globs
            .matches(name)
            .into_iter()
            .min()
            .map(|i| &self.rules[i])
    }

    /// Whether any tool rule exists (lists need the tool pass).
    pub fn has_tool_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether results may change (`max_text_bytes` or `redact` set).
    pub fn has_result_rules(&self) -> bool {
        self.max_text.is_some() || !self.redact.is_empty()
    }

    /// The redaction markers (never sent back upstream).
    pub fn markers(&self) -> impl Iterator<Item = &str> {
        self.redact.iter().map(|r| r.with.as_str())
    }
}

#[cfg(test)]
mod tests;
