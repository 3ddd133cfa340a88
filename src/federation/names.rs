//! How a member's items are named in the merged catalog, and back.
//!
//! Tools and prompts: `<prefix><separator><name>` (`prefix_mode: always`), or the member's
//! own name (`never`, where each member lists its tools). Resource URIs and templates:
//! the prefix and a `+` right after the scheme (`file:///a` → `file://files+/a`,
//! `ui://x` → `ui://files+x`, `mem:x` → `mem:files+x`, a URI without a scheme:
//! `files+x`), so hosts that render `ui://` resources still recognise them. Prefixes
//! never contain the separator or `+`, so the first one splits a name.

use crate::config::PrefixMode;
use crate::state::virtual_servers::VirtualServer;

/// Where a name's member is found.
#[derive(Debug, PartialEq, Eq)]
pub enum Owner<'n> {
    /// The member (its index) and the name as the member spells it.
    Member(usize, &'n str),
    /// No known prefix: the known ones are in the error.
    Unknown,
    /// `prefix_mode: never`: a tool nobody lists, or a prompt (found by listing).
    Unprefixed(&'n str),
}

/// The catalog name of a member's tool or prompt.
pub fn name(vs: &VirtualServer, member: usize, name: &str) -> String {
    match vs.prefix_mode {
        PrefixMode::Always => {
            let prefix = &vs.members[member].prefix;
            let mut out = String::with_capacity(prefix.len() + vs.separator.len() + name.len());
            out.push_str(prefix);
            out.push_str(&vs.separator);
            out.push_str(name);
            out
        }
        PrefixMode::Never => name.to_string(),
    }
}

/// The member of a catalog tool or prompt name.
pub fn owner<'n>(vs: &VirtualServer, name: &'n str) -> Owner<'n> {
    match vs.prefix_mode {
        PrefixMode::Always => match name.split_once(vs.separator.as_str()) {
            Some((prefix, rest)) => match vs.member(prefix) {
                Some((i, _)) => Owner::Member(i, rest),
                None => Owner::Unknown,
            },
            None => Owner::Unknown,
        },
        PrefixMode::Never => Owner::Unprefixed(name),
    }
}

/// The member whose `tools.include` lists `tool` (`prefix_mode: never`).
pub fn tool_owner(vs: &VirtualServer, tool: &str) -> Option<usize> {
    vs.members.iter().position(|m| m.tools.lists(tool))
}

/// Where the part after the scheme starts (after `scheme://` or `scheme:`), if the URI
/// has a scheme (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`).
fn after_scheme(uri: &str) -> usize {
    let b = uri.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return 0;
    }
    let Some(colon) = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || b"+-.".contains(c)))
    else {
        return 0;
    };
    if b[colon] != b':' {
        return 0;
    }
    if b[colon + 1..].starts_with(b"//") {
        colon + 3
    } else {
        colon + 1
    }
}

/// A member's resource URI (or URI template) as the catalog shows it.
pub fn uri(prefix: &str, uri: &str) -> String {
    let at = after_scheme(uri);
    let mut out = String::with_capacity(uri.len() + prefix.len() + 1);
    out.push_str(&uri[..at]);
    out.push_str(prefix);
    out.push('+');
    out.push_str(&uri[at..]);
    out
}

/// The member and original URI of a catalog URI; `None` when it carries no known prefix.
pub fn uri_owner(vs: &VirtualServer, catalog_uri: &str) -> Option<(usize, String)> {
    let at = after_scheme(catalog_uri);
    let rest = &catalog_uri[at..];
    let (prefix, tail) = rest.split_once('+')?;
    let (i, _) = vs.member(prefix)?;
    let mut original = String::with_capacity(catalog_uri.len());
    original.push_str(&catalog_uri[..at]);
    original.push_str(tail);
    Some((i, original))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_get_the_prefix_after_the_scheme() {
        let cases = [
            ("file:///a.txt", "file://files+/a.txt"),
            ("ui://widget/x", "ui://files+widget/x"),
            ("mem:abc", "mem:files+abc"),
            ("git+ssh://h/r", "git+ssh://files+h/r"),
            ("plain-name", "files+plain-name"),
            ("1bad:scheme", "files+1bad:scheme"),
            ("file:///{path}", "file://files+/{path}"),
        ];
        for (original, catalog) in cases {
            assert_eq!(uri("files", original), catalog, "{original}");
        }
    }
}
