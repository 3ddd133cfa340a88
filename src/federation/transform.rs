//! A member's transforms inside a virtual server (`transforms[]` with `member:`), in the
//! order a route's run ([`crate::transform`]), at the member's level: the tool rules on
//! its tools before the catalog prefixes them; its calls refused or rewritten once the
//! prefix is taken off (and its tool filter applied to the upstream name);
//! `request_headers` on every request to it ([`super::member`]); `results` on its final
//! answers, hit or miss ([`super::relay`]).

use super::serve::Fed;
use crate::state::virtual_servers::Member;
use crate::state::State;
use crate::transform::request::Refusal;
use crate::transform::RouteTransforms;
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;

/// The member's transforms, when it has any.
pub fn of<'s>(state: &'s State, member: &Member) -> Option<&'s Arc<RouteTransforms>> {
    if state.transforms.is_empty() {
        return None;
    }
    state.transforms.get(&member.scope)
}

/// The tool rules on a page of the member's `tools/list` (hidden tools go, renamed ones
/// get their new names, schemas show defaults and lose hidden arguments).
pub fn tools(state: &State, member: &Member, items: &mut Vec<Value>) {
    if let Some(t) = of(state, member).filter(|t| t.has_tool_rules()) {
        t.tools(items);
    }
}

/// `results` (redaction, then truncation) on a member's final answer.
pub fn result(state: &State, member: &Member, message: &mut Value) {
    if let Some(t) = of(state, member).filter(|t| t.has_result_rules()) {
        t.answer(message);
    }
}

/// Whether `results` may change this answer (its bytes, not parsed).
pub fn may_change(state: &State, member: &Member, bytes: &[u8]) -> bool {
    of(state, member).is_some_and(|t| t.has_result_rules() && t.may_change(bytes, false))
}

/// What becomes of a call of the member's tool (named as its transforms show it).
pub enum Call {
    /// Sent with this body, under the tool's upstream name.
    Send(Bytes, String),
    /// A hidden tool, or a renamed one called by its upstream name: answered as unknown.
    Unknown,
    /// Refused (`-32602`), with the reason.
    Refused(String),
}

impl Fed<'_> {
    /// Apply member `index`'s tool rules to a call of its tool `name`; the arguments the
    /// rewrite changed are re-emitted as `Mcp-Param-*` fields in the modern era.
    pub(super) fn transform_call(&mut self, index: usize, name: &str, body: Bytes) -> Call {
        let member = &self.vs().members[index];
        let Some(t) = of(self.req.client.state, member).filter(|t| t.has_tool_rules()) else {
            return Call::Send(body, name.to_string());
        };
        match t.call(name, &body) {
            Ok(None) => Call::Send(body, name.to_string()),
            Ok(Some(rewritten)) => {
                self.rewritten_args = Some(rewritten.changed);
                Call::Send(rewritten.body, rewritten.name)
            }
            Err(Refusal::Unknown(_)) => Call::Unknown,
            Err(refusal) => Call::Refused(refusal.message()),
        }
    }
}
