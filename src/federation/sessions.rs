//! A virtual server's request and its members' sessions: sending in the request's era
//! (stateless, or in the member's session, initialized on demand and again when the
//! member forgot it), whether an ended session is still known anywhere, and the record
//! of members failing and answering again.

use super::handshake;
use super::member::{self, Call};
use super::serve::{own_id, Fed};
use super::token::MemberSession;
use crate::error::GatewayError;
use crate::mcp::headers::MCP_PROTOCOL_VERSION;
use crate::telemetry::metrics::{self, METRICS};
use bytes::Bytes;
use serde_json::json;

impl<'a> Fed<'a> {
    /// Send a message to member `index` in this request's era: with the member's session
    /// (initializing the member first when the session has none for it, and once more
    /// when the member no longer knows it), or stateless.
    pub async fn call(
        &mut self,
        index: usize,
        body: Bytes,
        method: &str,
        name: Option<&str>,
    ) -> Result<member::Reply<'a>, GatewayError> {
        let vs = self.vs();
        let member = &vs.members[index];
        let client = &self.req.client;
        if self.req.modern {
            return member::send(client, member, self.stateless(body, method, name)).await;
        }
        for attempt in 0..2 {
            let ms = self.member_session(index).await?;
            let call = Call::in_session(&ms, body.clone());
            match member::send(client, member, call).await {
                Ok(reply) if reply.status == 404 && ms.session.is_some() && attempt == 0 => {
                    if !self.session_alive(index).await {
                        // No member knows the session any more: it was ended (DELETE).
                        return Err(GatewayError::SessionNotFound);
                    }
                    log::info!(
                        "virtual server {}: member {} no longer knows its session: initializing it again",
                        vs.path,
                        member.prefix
                    );
                    self.forget(index);
                }
                Err(GatewayError::SessionServerDown(_)) if attempt == 0 => {
                    // The member's server is gone or down: a new session elsewhere.
                    self.forget(index);
                }
                other => return other,
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Send a message to member `index` once: in the session (which must hold the
    /// member: see [`Fed::member_session`]), or stateless in the modern era. A member
    /// that no longer knows its session answers 404, which the caller handles.
    pub async fn send_once(
        &self,
        index: usize,
        body: Bytes,
        method: &str,
    ) -> Result<member::Reply<'a>, GatewayError> {
        let member = &self.vs().members[index];
        let client = &self.req.client;
        if self.req.modern {
            return member::send(client, member, self.stateless(body, method, None)).await;
        }
        let ms = self
            .session
            .as_ref()
            .and_then(|s| s.members.get(&member.prefix))
            .ok_or(GatewayError::SessionNotFound)?;
        member::send(client, member, Call::in_session(ms, body)).await
    }

    /// A modern-era (stateless) request: the client's version, the routing headers of
    /// `method` and `name`, and for a routed call the client's `Mcp-Param-*`.
    fn stateless<'b>(&'b self, body: Bytes, method: &'b str, name: Option<&'b str>) -> Call<'b> {
        Call {
            body,
            version: self
                .req
                .headers
                .get(MCP_PROTOCOL_VERSION)
                .and_then(|v| v.to_str().ok()),
            routing: (!method.is_empty()).then_some((method, name)),
            extra: if name.is_some() {
                self.param_headers()
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    /// Member `index`'s session, initialized now if the session has none for it.
    pub async fn member_session(&mut self, index: usize) -> Result<MemberSession, GatewayError> {
        let prefix = &self.vs().members[index].prefix;
        if let Some(ms) = self.session.as_ref().and_then(|s| s.members.get(prefix)) {
            return Ok(ms.clone());
        }
        let state = self.session.clone().ok_or(GatewayError::SessionNotFound)?;
        let ms = handshake::initialize_member(self, index, &state.version, &state.client).await?;
        let state = std::sync::Arc::make_mut(self.session.as_mut().expect("checked above"));
        state.members.insert(prefix.clone(), ms.clone());
        self.changed = true;
        if let Some(token) = self.token() {
            let json = serde_json::to_vec(&ms).expect("JSON serializes");
            self.vs().renewed.put(token, index, json);
        }
        Ok(ms)
    }

    /// Does any member of the session other than `except` still know its session? A
    /// member answering `404` for its session restarted when another still knows its
    /// own; when none does, the session was ended (DELETE) and stays ended.
    pub async fn session_alive(&self, except: usize) -> bool {
        let mut others = self.held(true);
        others.retain(|(i, _)| *i != except);
        let ping = json!({"jsonrpc": "2.0", "id": own_id("ping"), "method": "ping"});
        let ping = Bytes::from(serde_json::to_vec(&ping).expect("JSON serializes"));
        self.send_each(&others, &ping)
            .await
            .into_iter()
            .any(|r| r.is_ok_and(|reply| reply.status < 400))
    }

    pub(super) fn forget(&mut self, index: usize) {
        let prefix = &self.vs().members[index].prefix;
        if let Some(token) = self.token() {
            self.vs().renewed.remove(&token, index);
        }
        if let Some(s) = self.session.as_mut() {
            if s.members.contains_key(prefix) {
                std::sync::Arc::make_mut(s).members.remove(prefix);
                self.changed = true;
            }
        }
    }

    /// The client's `Mcp-Param-*` headers (modern era), passed on untouched, but for the
    /// arguments the member's transforms changed: re-emitted from the new body.
    pub(super) fn param_headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut out: Vec<(http::HeaderName, http::HeaderValue)> = self
            .req
            .headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("mcp-param-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(changed) = &self.rewritten_args {
            for (header, value) in crate::transform::request::param_headers(changed) {
                let Some(at) = out.iter().position(|(k, _)| *k == header) else {
                    continue;
                };
                match value {
                    Some(v) => out[at].1 = v,
                    None => {
                        out.remove(at);
                    }
                }
            }
        }
        out
    }

    /// Count and log a member's failure (once per change of its state); `Err` when the
    /// virtual server fails closed.
    pub fn member_failed(
        &self,
        index: usize,
        phase: &str,
        e: &GatewayError,
    ) -> Result<(), GatewayError> {
        let vs = self.vs();
        let member = &vs.members[index];
        metrics::counter(
            &METRICS.federation_member_failures,
            &[&vs.path, &member.prefix, phase],
        )
        .inc();
        if member.status.set_degraded(true) {
            log::warn!(
                "virtual server {}: member {} (group {}) failed ({phase}): {e}{}",
                vs.path,
                member.prefix,
                member.group.name,
                e.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            );
        }
        if vs.fail_open {
            Ok(())
        } else {
            Err(GatewayError::MemberFailed {
                member: member.prefix.clone(),
                group: member.group.name.clone(),
                reason: e.to_string(),
            })
        }
    }

    /// A member answered: it is no longer degraded.
    pub fn member_ok(&self, index: usize) {
        let vs = self.vs();
        let member = &vs.members[index];
        if member.status.set_degraded(false) {
            log::info!(
                "virtual server {}: member {} answers again",
                vs.path,
                member.prefix
            );
        }
    }
}
