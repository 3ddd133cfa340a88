//! A virtual server's members' answers kept (`cache.routes[]` with `member:`): each
//! member's list pages, and its `resources/read` and listed tools' `tools/call` results,
//! under the member's name (`<path>#<prefix>`), the request's era and the caller's
//! authorization context, exactly as a route's ([`crate::cache`]).
//!
//! What is kept is the member's own result, before the catalog names it (prefixes,
//! URIs), filters it (tool filters, policies) or transforms it: those run on every
//! answer, hit or miss. A member's `list_changed` and `resources/updated` notifications
//! on the session's GET stream drop its group's entries; modern-era members are heard
//! through the gateway's own `subscriptions/listen` ([`crate::cache::listen`]).

use super::serve::Fed;
use crate::cache::ask::{look, Asked, Looked};
use crate::cache::key::canonical_params;
use crate::mcp::envelope::{Era, KNOWN_METHODS};
use crate::mcp::headers::MCP_PROTOCOL_VERSION;
use crate::state::virtual_servers::Member;
use crate::state::State;
use serde_json::Value;

impl Fed<'_> {
    /// Look up member `index`'s answer to `body` (a request of `method`, naming `tool`
    /// for a `tools/call`); `None` when the member's rules keep no such answer.
    pub(super) async fn cached(
        &self,
        index: usize,
        method: &str,
        tool: Option<&str>,
        body: &[u8],
    ) -> Option<Looked> {
        let state = self.req.client.state;
        let cache = &state.cache;
        if !cache.is_enabled() {
            return None;
        }
        let member = &self.vs().members[index];
        let store = cache.store()?;
        let ttl = cache.ttl(&member.scope, method, tool)?;
        let method = KNOWN_METHODS.iter().find(|m| **m == method)?;
        let params = canonical_params(body).ok()?;
        let asked = Asked {
            route: &member.scope,
            group: &member.group.name,
            era: if self.req.modern {
                Era::Modern
            } else {
                Era::Legacy
            },
            protocol_version: self
                .req
                .headers
                .get(MCP_PROTOCOL_VERSION)
                .and_then(|v| v.to_str().ok()),
            method,
            tool: tool.filter(|_| *method == "tools/call"),
            params: &params,
            identity: self.req.client.identity,
            ttl,
            wait: state.timeouts.request,
        };
        let looked = look(store, asked).await;
        self.saw_cache(matches!(looked, Looked::Hit(..)));
        Some(looked)
    }
}

/// A member's notification on a stream the gateway relays: a `list_changed` or
/// `resources/updated` drops the entries of its group, when they are kept.
pub fn notified(state: &State, member: &Member, message: &Value) {
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return;
    };
    if !crate::cache::notice::invalidates(method) || message.get("id").is_some() {
        return;
    }
    let cache = &state.cache;
    if let (Some(store), true) = (cache.store(), cache.keeps_group(&member.group.name)) {
        store.invalidate_group(&member.group.name, method);
    }
}
