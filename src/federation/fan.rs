//! What goes to every member of a session: `ping` and `logging/setLevel`, the client's
//! notifications, the client's answers to a member's request (to that member), DELETE;
//! and reading the one JSON-RPC answer out of a member's reply.

use super::member::{self, Body, Call};
use super::serve::{own_id, Answer, Fed};
use super::token::MemberSession;
use crate::error::GatewayError;
use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

impl<'a> Fed<'a> {
    /// The member sessions this session holds, with their members' index (`with_id`:
    /// only those with a session id, i.e. not from stateless members).
    pub(super) fn held(&self, with_id: bool) -> Vec<(usize, MemberSession)> {
        let vs = self.vs();
        let Some(state) = self.session.as_ref() else {
            return Vec::new();
        };
        (0..vs.members.len())
            .filter_map(|i| {
                let ms = state.members.get(&vs.members[i].prefix)?;
                (!with_id || ms.session.is_some()).then(|| (i, ms.clone()))
            })
            .collect()
    }

    /// Send `body` to each of `sessions` at once; the results in their order.
    pub(super) async fn send_each(
        &self,
        sessions: &[(usize, MemberSession)],
        body: &Bytes,
    ) -> Vec<Result<member::Reply<'a>, GatewayError>> {
        let vs = self.vs();
        let client = &self.req.client;
        let sends = sessions.iter().map(|(i, ms)| {
            member::send(client, &vs.members[*i], Call::in_session(ms, body.clone()))
        });
        futures::future::join_all(sends).await
    }

    /// Send a request to every member of the session that has `caps` (0: all), each
    /// with its own id; member failures as the virtual server's failure mode says.
    pub(super) async fn fan_out_simple(
        &mut self,
        method: &str,
        params: Option<Value>,
        caps: u16,
    ) -> Result<(), GatewayError> {
        let vs = self.vs();
        let mut message = json!({"jsonrpc": "2.0", "id": own_id(method), "method": method});
        if let Some(p) = params {
            message["params"] = p;
        }
        let body = Bytes::from(serde_json::to_vec(&message).expect("JSON serializes"));
        let mut sessions = Vec::new();
        for i in 0..vs.members.len() {
            match self.member_session(i).await {
                Ok(ms) if caps == 0 || ms.caps & caps != 0 => sessions.push((i, ms)),
                Ok(_) => {}
                Err(e) => self.member_failed(i, "initialize", &e)?,
            }
        }
        let results = self.send_each(&sessions, &body).await;
        for ((i, _), r) in sessions.iter().zip(results) {
            match r {
                Ok(reply) if reply.status < 300 => self.member_ok(*i),
                Ok(reply) => self.member_failed(
                    *i,
                    method,
                    &GatewayError::InvalidRequest(format!("answered HTTP {}", reply.status)),
                )?,
                Err(e) => self.member_failed(*i, method, &e)?,
            }
        }
        Ok(())
    }

    /// A notification from the client goes to every member of the session (modern: to
    /// none; nothing a stateless member could tie it to). `notifications/cancelled`
    /// names a request of one member, which the others ignore, as the spec lets them.
    /// One that names a member's own request to the client (its sealed id), and
    /// `notifications/progress` for a member's request (its sealed progress token), go
    /// to that member alone, with the member's value put back.
    pub(super) async fn notify_all(&mut self, mut message: Value) {
        if self.req.modern {
            return;
        }
        let vs = self.vs();
        let addressed = self.addressed(&mut message);
        let body = Bytes::from(serde_json::to_vec(&message).expect("JSON serializes"));
        let mut sessions = self.held(false);
        if let Some(member) = addressed {
            sessions.retain(|(i, _)| *i == member);
        }
        for ((i, _), r) in sessions.iter().zip(self.send_each(&sessions, &body).await) {
            if let Err(e) = r {
                log::debug!(
                    "virtual server {}: a notification to member {} failed: {e}",
                    vs.path,
                    vs.members[*i].prefix
                );
            }
        }
    }

    /// The member a client's notification is for, when it carries a value the gateway
    /// sealed (restored in `message`).
    fn addressed(&self, message: &mut Value) -> Option<usize> {
        let (pointer, progress) = match message.get("method").and_then(Value::as_str)? {
            "notifications/progress" => ("/params/progressToken", true),
            "notifications/cancelled" => ("/params/requestId", false),
            _ => return None,
        };
        let value = message.pointer_mut(pointer)?;
        let token = value.as_str()?;
        let opened = if progress {
            self.sealer.open_progress_token(token)
        } else {
            self.sealer.open_request_id(token)
        }?;
        let (index, _) = self.vs().member(&opened.member)?;
        *value = opened.id;
        Some(index)
    }

    /// The client answered a member's request: back to that member, with its own id.
    pub(super) async fn client_answer(
        &mut self,
        id: Value,
        mut message: Value,
    ) -> Result<Answer<'a>, GatewayError> {
        let vs = self.vs();
        let opened = id.as_str().and_then(|t| self.sealer.open_request_id(t));
        let Some(rid) = opened else {
            return Err(GatewayError::InvalidRequest(
                "this answer's id names no request the gateway sent to this client".into(),
            ));
        };
        let Some((index, _)) = vs.member(&rid.member) else {
            return Err(GatewayError::InvalidRequest(format!(
                "the request this answers came from member {:?}, which this virtual server no longer has",
                rid.member
            )));
        };
        message["id"] = rid.id;
        let body = Bytes::from(serde_json::to_vec(&message).expect("JSON serializes"));
        let reply = self.call(index, body, "", None).await?;
        if reply.status >= 300 {
            log::debug!(
                "virtual server {}: member {} answered HTTP {} to the client's answer",
                vs.path,
                rid.member,
                reply.status
            );
        }
        Ok(Answer::Accepted)
    }

    /// DELETE: every member session ends.
    pub(super) async fn delete(&mut self) -> Answer<'a> {
        let vs = self.vs();
        let sessions = self.held(true);
        let client = &self.req.client;
        let sends = sessions.iter().map(|(i, ms)| {
            let call = Call {
                method: Some(Method::DELETE),
                ..Call::in_session(ms, Bytes::new())
            };
            member::send(client, &vs.members[*i], call)
        });
        for ((i, _), r) in sessions.iter().zip(futures::future::join_all(sends).await) {
            match r {
                Ok(reply) if reply.status < 300 || reply.status == 404 || reply.status == 405 => {}
                Ok(reply) => log::info!(
                    "virtual server {}: member {} answered HTTP {} to DELETE",
                    vs.path,
                    vs.members[*i].prefix,
                    reply.status
                ),
                Err(e) => log::info!(
                    "virtual server {}: ending member {}'s session failed: {e}",
                    vs.path,
                    vs.members[*i].prefix
                ),
            }
        }
        Answer::Empty(200)
    }
}

/// A member's answer body as the one JSON-RPC response to `id` it carries (a JSON body,
/// or the response event of an SSE stream; other events are dropped).
pub async fn response_of(body: Body<'_>, id: &Value) -> Result<Option<Value>, GatewayError> {
    match body {
        Body::Json(bytes) | Body::Other(bytes) => {
            let v: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) => return Ok(None),
            };
            Ok(is_response_to(&v, id).then_some(v))
        }
        Body::Events(mut events) => {
            while let Some((_, v)) = events.next().await? {
                if is_response_to(&v, id) {
                    return Ok(Some(v));
                }
            }
            Ok(None)
        }
    }
}

fn is_response_to(v: &Value, id: &Value) -> bool {
    v.get("method").is_none()
        && v.get("id") == Some(id)
        && (v.get("result").is_some() || v.get("error").is_some())
}
