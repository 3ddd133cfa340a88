//! The virtual servers of the config, resolved: their members (groups), prefixes, tool
//! filters, the state the admin API shows, and the sessions of a virtual server (their
//! sealed form is `federation::token`'s; this process keeps the ones it opened). The
//! serving is `federation`'s.

use crate::config::{Config, OnMemberFailure, PrefixMode, VirtualServerConfig};
use crate::upstream::{Group, Groups};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// One virtual server, resolved from its config.
#[derive(Debug)]
pub struct VirtualServer {
    pub path: Arc<str>,
    /// `serverInfo.name`.
    pub name: String,
    pub members: Vec<Member>,
    pub prefix_mode: PrefixMode,
    pub separator: String,
    pub fail_open: bool,
    pub max_page_size: usize,
    /// Changes when the virtual server's config changes: cursors of an older catalog
    /// are refused as stale.
    pub generation: u64,
    /// Member sessions this process began again for a client session (a member that
    /// restarted), by the digest of the client's session id and the member's prefix:
    /// clients that keep the session id they began with (the Python SDK does) reach
    /// the renewed member session without one more `initialize` per request.
    pub renewed: Renewed,
    /// Sessions this process opened, by sealed id: a session's later requests skip
    /// opening and reading it again.
    pub opened: Opened,
}

/// A virtual server's session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// The protocol version negotiated with the client.
    #[serde(rename = "v")]
    pub version: String,
    /// Seconds since the Unix epoch when the session began (`sessions.ttl`).
    #[serde(rename = "t")]
    pub issued_at: u64,
    /// The client's `initialize` params (`capabilities`, `clientInfo`).
    #[serde(rename = "c", default)]
    pub client: Value,
    /// Each member's session, by prefix; a member missing here is initialized when a
    /// request needs it.
    #[serde(rename = "m", default)]
    pub members: BTreeMap<String, MemberSession>,
}

/// One member's part of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSession {
    /// The server (id) that holds it.
    #[serde(rename = "s")]
    pub server: String,
    /// The member's `Mcp-Session-Id` (none from a stateless member).
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The version the member negotiated.
    #[serde(rename = "v")]
    pub version: String,
    /// Its capabilities (`federation::handshake::Caps` bits).
    #[serde(rename = "k")]
    pub caps: u16,
}

/// See [`VirtualServer::opened`]: the sealed id and who presented it (a session opens
/// only for its owner, so a hit must be that owner's) → the session. Bounded: emptied
/// when full. Rebuilt with the virtual server on a reload, so a session key taken out
/// of `sessions.keys` opens nothing from here either.
#[derive(Debug, Default)]
pub struct Opened {
    map: dashmap::DashMap<Box<str>, (Box<str>, Arc<SessionState>)>,
    len: AtomicUsize,
}

/// Most opened sessions kept per virtual server.
const MAX_OPENED: usize = 4096;

impl Opened {
    /// The session sealed as `token`, if this process opened it for `owner` (see
    /// `federation::serve`'s owner key).
    pub fn get(&self, token: &str, owner: &str) -> Option<Arc<SessionState>> {
        let entry = self.map.get(token)?;
        let (who, state) = entry.value();
        (**who == *owner).then(|| state.clone())
    }

    pub fn put(&self, token: &str, owner: &str, state: Arc<SessionState>) {
        if self.len.load(Ordering::Relaxed) >= MAX_OPENED {
            self.map.clear();
            self.len.store(0, Ordering::Relaxed);
        }
        if self
            .map
            .insert(token.into(), (owner.into(), state))
            .is_none()
        {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// See [`VirtualServer::renewed`]: by the client session id's digest and the member's
/// index; bounded, and emptied when full. Empty (the common case) costs a request one
/// atomic load.
#[derive(Debug, Default)]
pub struct Renewed {
    map: dashmap::DashMap<([u8; 32], usize), Vec<u8>>,
    len: AtomicUsize,
}

/// Most renewed member sessions kept per virtual server.
const MAX_RENEWED: usize = 100_000;

impl Renewed {
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    pub fn get(&self, token: &[u8; 32], member: usize) -> Option<Vec<u8>> {
        self.map.get(&(*token, member)).map(|v| v.value().clone())
    }

    pub fn put(&self, token: [u8; 32], member: usize, session: Vec<u8>) {
        if self.len.load(Ordering::Relaxed) >= MAX_RENEWED {
            log::warn!("more than {MAX_RENEWED} renewed member sessions: forgetting them all");
            self.map.clear();
            self.len.store(0, Ordering::Relaxed);
        }
        if self.map.insert((token, member), session).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn remove(&self, token: &[u8; 32], member: usize) {
        if self.map.remove(&(*token, member)).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A member: a group, the prefix of its items, the tools it serves here.
#[derive(Debug)]
pub struct Member {
    pub group: Arc<Group>,
    pub prefix: String,
    /// The name its cache rules and transforms go by: `<path>#<prefix>`.
    pub scope: Arc<str>,
    pub tools: ToolFilter,
    /// What the admin API shows: failing or not, and its catalog sizes.
    pub status: MemberStatus,
}

/// A member's last known state (admin API, metrics).
#[derive(Debug, Default)]
pub struct MemberStatus {
    degraded: AtomicBool,
    /// A long tool name was warned about (once per member).
    warned_long: AtomicBool,
    pub tools: AtomicUsize,
    pub prompts: AtomicUsize,
    pub resources: AtomicUsize,
}

impl MemberStatus {
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// `true` the first time only: warn once about long prefixed tool names.
    pub fn warn_long_names(&self) -> bool {
        !self.warned_long.swap(true, Ordering::Relaxed)
    }

    /// Record whether the member failed; `true` when that changed its state (logged once
    /// per change by the caller).
    pub fn set_degraded(&self, failed: bool) -> bool {
        self.degraded.swap(failed, Ordering::Relaxed) != failed
    }
}

impl VirtualServer {
    pub fn build(c: &VirtualServerConfig, groups: &Groups) -> Result<VirtualServer, String> {
        let members = c
            .members
            .iter()
            .map(|m| {
                let group = groups
                    .get(&m.group)
                    .ok_or_else(|| format!("virtual server {}: no group {:?}", c.path, m.group))?
                    .clone();
                Ok(Member {
                    group,
                    prefix: m.prefix().to_string(),
                    scope: crate::config::cache::scope_name(&c.path, Some(m.prefix())).into(),
                    tools: ToolFilter::build(m.tools.as_ref())?,
                    status: MemberStatus::default(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(VirtualServer {
            path: c.path.as_str().into(),
            name: c.name.clone(),
            members,
            prefix_mode: c.prefix_mode,
            separator: c.separator.clone(),
            fail_open: c.on_member_failure == OnMemberFailure::FailOpen,
            max_page_size: usize::try_from(c.max_page_size.0).unwrap_or(usize::MAX),
            generation: generation(c),
            renewed: Renewed::default(),
            opened: Opened::default(),
        })
    }

    /// The member whose prefix this is.
    pub fn member(&self, prefix: &str) -> Option<(usize, &Member)> {
        self.members
            .iter()
            .enumerate()
            .find(|(_, m)| m.prefix == prefix)
    }

    /// The known prefixes, for error messages.
    pub fn prefixes(&self) -> String {
        self.members
            .iter()
            .map(|m| m.prefix.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A digest of the virtual server's config (FNV-1a over its YAML-independent form).
fn generation(c: &VirtualServerConfig) -> u64 {
    let text = format!("{c:?}");
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Every virtual server, by path.
#[derive(Debug, Default)]
pub struct VirtualServers(HashMap<String, Arc<VirtualServer>>);

impl VirtualServers {
    pub fn build(config: &Config, groups: &Groups) -> Result<VirtualServers, String> {
        let mut map = HashMap::new();
        for c in &config.virtual_servers {
            map.insert(c.path.clone(), Arc::new(VirtualServer::build(c, groups)?));
        }
        Ok(VirtualServers(map))
    }

    pub fn get(&self, path: &str) -> Option<&Arc<VirtualServer>> {
        self.0.get(path)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In path order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VirtualServer>> {
        let mut all: Vec<_> = self.0.values().collect();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all.into_iter()
    }
}

/// Which of a member's tools a virtual server serves (`tools.include` / `exclude`, exact
/// names or globs), checked at list and at call time.
#[derive(Debug, Default)]
pub struct ToolFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// The exact names of `include` (how `prefix_mode: never` finds a tool's member).
    listed: Vec<String>,
}

impl ToolFilter {
    pub fn build(c: Option<&crate::config::ToolFilterConfig>) -> Result<ToolFilter, String> {
        let Some(c) = c else {
            return Ok(ToolFilter::default());
        };
        let set = |patterns: &[String]| -> Result<GlobSet, String> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                b.add(Glob::new(p).map_err(|e| format!("{p:?}: {e}"))?);
            }
            b.build().map_err(|e| e.to_string())
        };
        Ok(ToolFilter {
            listed: c.include.iter().flatten().cloned().collect(),
            include: c.include.as_deref().map(set).transpose()?,
            exclude: (!c.exclude.is_empty())
                .then(|| set(&c.exclude))
                .transpose()?,
        })
    }

    /// Does `include` name this tool exactly (and `exclude` not)?
    pub fn lists(&self, name: &str) -> bool {
        self.listed.iter().any(|n| n == name) && self.allows(name)
    }

    /// Is this tool (as the member names it) served?
    pub fn allows(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(name))
            && !self.exclude.as_ref().is_some_and(|s| s.is_match(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_filters_include_then_exclude() {
        let c = crate::config::ToolFilterConfig {
            include: Some(vec!["fetch*".into(), "echo".into()]),
            exclude: vec!["fetch_raw".into()],
        };
        let f = ToolFilter::build(Some(&c)).unwrap();
        assert!(f.allows("fetch") && f.allows("fetch_page") && f.allows("echo"));
        assert!(!f.allows("fetch_raw") && !f.allows("echo2") && !f.allows("add"));
        assert!(ToolFilter::build(None).unwrap().allows("anything"));
    }
}
