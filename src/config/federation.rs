//! The `virtual_servers` section: MCP endpoints that federate upstream groups
//! (docs/federation.md), and the checks it can make alone.

use super::units::ByteSize;
use super::yaml::{Errors, Path};
use super::Config;
use crate::config_struct;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Longest member prefix: prefixed names must stay well under the spec's 128 characters.
pub const MAX_PREFIX_LEN: usize = 32;

/// Whether tool and prompt names carry their member's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixMode {
    /// `<prefix><separator><name>` for every member (the default).
    Always,
    /// Names as the members spell them; every member lists its tools
    /// (`tools.include`) so that they are known to be unique at load.
    Never,
}
impl super::yaml::Leaf for PrefixMode {}

/// What a member that fails does to a request that needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMemberFailure {
    /// Left out of lists and `initialize`; the others still serve.
    FailOpen,
    /// The request fails with a JSON-RPC error naming the member.
    FailClosed,
}
impl super::yaml::Leaf for OnMemberFailure {}

config_struct! {
    /// One virtual server: a path whose catalog is the union of its members'.
    pub struct VirtualServerConfig {
        path: String = String::new(),
        /// `serverInfo.name` in `initialize` and `server/discover`.
        name: String = "mcp-gateway".to_string(),
        members: Vec<MemberConfig> = Vec::new(),
        prefix_mode: PrefixMode = PrefixMode::Always,
        /// Between a member's prefix and an item's name; may not occur in any prefix.
        separator: String = "__".to_string(),
        on_member_failure: OnMemberFailure = OnMemberFailure::FailOpen,
        /// A merged list up to this size is answered in one page (many clients never
        /// follow `nextCursor`); a larger one in pages, one member page each (`0`: always
        /// one member page each).
        max_page_size: ByteSize = ByteSize(1 << 20),
    }
}

config_struct! {
    /// A member: an upstream group, the prefix of its items, which of its tools are served.
    pub struct MemberConfig {
        group: String = String::new(),
        /// Default: the group's name.
        prefix: Option<String> = None,
        tools: Option<ToolFilterConfig> = None,
    }
}

config_struct! {
    /// Tool names (exact, or globs with `*` and `?`) as the member spells them.
    pub struct ToolFilterConfig {
        /// Only these (unset: all).
        include: Option<Vec<String>> = None,
        /// Never these.
        exclude: Vec<String> = Vec::new(),
    }
}

impl MemberConfig {
    /// The prefix this member's items get.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.group)
    }
}

/// Whether `name` is a glob (else an exact name).
pub fn is_glob(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

/// The section's checks: paths, groups, prefixes, separators, filters.
pub fn validate(c: &Config, errs: &mut Errors) {
    let root = Path::root().key("virtual_servers");
    let mut paths: HashSet<&str> = c.routes.iter().map(|r| r.path.as_str()).collect();
    for (i, vs) in c.virtual_servers.iter().enumerate() {
        let at = root.index(i);
        if let Err(e) = super::load::endpoint_path(&vs.path, &mut paths) {
            errs.push(&at.key("path"), e);
        }
        if vs.name.trim().is_empty() {
            errs.push(&at.key("name"), "must not be empty");
        }
        if vs.separator.is_empty() {
            errs.push(&at.key("separator"), "must not be empty (e.g. \"__\")");
        } else if !vs
            .separator
            .chars()
            .all(|ch| ch.is_ascii_graphic() && ch != '+')
        {
            errs.push(
                &at.key("separator"),
                format!(
                    "{:?}: only visible ASCII characters other than '+' (tool names are ASCII)",
                    vs.separator
                ),
            );
        }
        if vs.max_page_size.0 != 0 && vs.max_page_size.0 < 1024 {
            errs.push(
                &at.key("max_page_size"),
                "must be at least 1KiB (or 0: every member page its own page)",
            );
        }
        if vs.members.is_empty() {
            errs.push(
                &at.key("members"),
                "a virtual server needs at least one member",
            );
        }
        let mut prefixes = HashSet::new();
        let mut tools = HashSet::new();
        for (j, m) in vs.members.iter().enumerate() {
            let mp = at.key("members").index(j);
            if m.group.is_empty() {
                errs.push(&mp.key("group"), "is required");
            } else if !c.upstream.groups.contains_key(&m.group) {
                errs.push(
                    &mp.key("group"),
                    format!("no upstream group named {:?}", m.group),
                );
            }
            let prefix = m.prefix();
            let prefix_at = if m.prefix.is_some() {
                mp.key("prefix")
            } else {
                mp.key("group")
            };
            if prefix.is_empty() {
                errs.push(&prefix_at, "a member's prefix must not be empty");
            } else if prefix.len() > MAX_PREFIX_LEN {
                errs.push(
                    &prefix_at,
                    format!(
                        "prefix {prefix:?} is longer than {MAX_PREFIX_LEN} characters (set a shorter prefix)"
                    ),
                );
            } else if !prefix
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_-.".contains(ch))
            {
                errs.push(
                    &prefix_at,
                    format!("prefix {prefix:?}: only ASCII letters, digits, '_', '-' and '.'"),
                );
            } else if !vs.separator.is_empty() && prefix.contains(&vs.separator) {
                errs.push(
                    &prefix_at,
                    format!(
                        "prefix {prefix:?} contains the separator {:?}, so names could not be split",
                        vs.separator
                    ),
                );
            } else if !prefixes.insert(prefix) {
                errs.push(&prefix_at, format!("duplicate member prefix {prefix:?}"));
            }
            if let Some(f) = &m.tools {
                let fp = mp.key("tools");
                let lists = f
                    .include
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(k, p)| (fp.key("include").index(k), p))
                    .chain(
                        f.exclude
                            .iter()
                            .enumerate()
                            .map(|(k, p)| (fp.key("exclude").index(k), p)),
                    );
                for (p_at, pattern) in lists {
                    if pattern.is_empty() {
                        errs.push(&p_at, "must not be empty");
                    } else if let Err(e) = globset::Glob::new(pattern) {
                        errs.push(&p_at, format!("{pattern:?} is not a valid pattern: {e}"));
                    }
                }
            }
            if vs.prefix_mode == PrefixMode::Never {
                match m.tools.as_ref().and_then(|t| t.include.as_ref()) {
                    None => errs.push(
                        &mp.key("tools").key("include"),
                        "prefix_mode: never needs every member to list its tools by name, so that they are known to be unique",
                    ),
                    Some(include) => {
                        for (k, name) in include.iter().enumerate() {
                            let ip = mp.key("tools").key("include").index(k);
                            if is_glob(name) {
                                errs.push(
                                    &ip,
                                    format!("{name:?}: with prefix_mode: never, tools are listed by exact name"),
                                );
                            } else if !tools.insert(name.as_str()) {
                                errs.push(
                                    &ip,
                                    format!("tool {name:?} is listed by two members; with prefix_mode: never names must be unique"),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
