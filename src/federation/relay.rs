//! What members stream to the client, relayed event by event (never buffered):
//!
//! * a routed call's answer: the member's notifications (progress, logs) and requests
//!   (sampling, elicitation, roots: their ids sealed to name the member, so the client's
//!   answer finds it), then the result with its URIs rewritten;
//! * the GET stream of a session: the members' GET streams merged (members without one,
//!   answering 405, are left out), each message once, under composite event ids that
//!   hold every member's last event id, so `Last-Event-ID` resumes each member; a
//!   member's stream that ends (polling) is opened again. `list_changed` notifications
//!   of one kind arriving together are sent once (and once more when another arrived
//!   within the window: [`super::coalesce`]).

use super::coalesce::Coalesce;
use super::member::{self, Body, Call, Events};
use super::serve::Request;
use super::serve::{rpc_error, Answer, Fed};
use super::token::{MemberSession, RequestId, Sealer};
use super::{rewrite, transform};
use crate::cache::ask::Miss;
use crate::error::GatewayError;
use crate::mcp::headers::LAST_EVENT_ID;
use crate::state::virtual_servers::{Member, VirtualServer};
use crate::state::State;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A member's answer to a routed call, as the client gets it.
pub async fn answer<'a>(
    fed: &Fed<'a>,
    index: usize,
    method: &str,
    id: Value,
    reply: member::Reply<'a>,
    fill: Option<Miss>,
) -> Result<Answer<'a>, GatewayError> {
    let vs = fed.vs();
    let member = &vs.members[index];
    let status = reply.status;
    match reply.body {
        Body::Events(events) => Ok(Answer::Events(Stream::Call(Box::new(CallStream {
            events,
            prefix: member.prefix.clone(),
            method: method.to_string(),
            id,
            sealer: copy(&fed.sealer),
            modern: fed.req.modern,
            done: false,
            state: fed.req.client.state,
            member,
            fill,
        })))),
        Body::Json(bytes) | Body::Other(bytes) => {
            if status == 202 && bytes.is_empty() {
                return Ok(Answer::Accepted);
            }
            if let (Some(miss), 200) = (fill, status) {
                let raw = serde_json::to_string(&id).expect("JSON serializes");
                if let Some(kept) = crate::cache::entry::json_result(&bytes, &raw) {
                    miss.keep(kept);
                }
            }
            json(fed, index, method, status, bytes).map_err(|detail| GatewayError::UpstreamFailed {
                group: member.group.name.clone(),
                server: reply.server.id.clone(),
                detail,
            })
        }
    }
}

/// A member's JSON answer (or a kept one) as the client gets it: URIs prefixed, cache
/// fields for the gateway's answer, the member's `results` transforms; `Err` when it is
/// not a JSON-RPC answer.
pub fn json<'a>(
    fed: &Fed<'a>,
    index: usize,
    method: &str,
    status: u16,
    bytes: Bytes,
) -> Result<Answer<'a>, String> {
    let state = fed.req.client.state;
    let member = &fed.vs().members[index];
    if status < 300 && untouched(&bytes) && !transform::may_change(state, member, &bytes) {
        // Nothing in it to rewrite (no resource, no cache field, no transform), and the
        // id is the client's own: the member's bytes as they are.
        fed.member_ok(index);
        return Ok(Answer::Json {
            status,
            body: bytes,
        });
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(format!(
            "{method}: HTTP {status} without a JSON-RPC answer ({} bytes)",
            bytes.len()
        ));
    };
    if let Some(result) = v.get_mut("result") {
        rewrite::result(&member.prefix, method, result);
        rewrite::cache_fields(result, fed.req.modern);
        transform::result(state, member, &mut v);
    } else if v.get("error").is_none() {
        return Err(format!("{method}: HTTP {status}: not a JSON-RPC answer"));
    }
    fed.member_ok(index);
    Ok(Answer::Json {
        status,
        body: serde_json::to_vec(&v).expect("JSON serializes").into(),
    })
}

/// A member's JSON answer that needs no rewriting: a JSON object that names no resource
/// (`resource_link`, embedded resources, `uri`s of contents, `_meta.ui.resourceUri`) and
/// carries no cache field. Looked for in the bytes: parsing and writing an answer back
/// is most of what a routed call would otherwise cost.
fn untouched(bytes: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 4] = [b"\"resource", b"resourceUri", b"\"uri\"", b"\"ttlMs\""];
    bytes.trim_ascii_start().starts_with(b"{")
        && !NEEDLES
            .iter()
            .any(|n| memchr::memmem::find(bytes, n).is_some())
        && memchr::memmem::find(bytes, b"\"cacheScope\"").is_none()
}

pub(super) fn copy<'a>(s: &Sealer<'a>) -> Sealer<'a> {
    Sealer {
        keys: s.keys,
        path: s.path,
        owner: s.owner,
    }
}

/// An SSE answer being relayed.
pub enum Stream<'a> {
    Call(Box<CallStream<'a>>),
    Get(Box<GetStream<'a>>),
    Listen(Box<super::listen::ListenStream<'a>>),
}

impl Stream<'_> {
    /// The next SSE event to write; `None` at the end.
    pub async fn next(&mut self) -> Option<Bytes> {
        match self {
            Stream::Call(s) => s.next().await,
            Stream::Get(s) => s.next().await,
            Stream::Listen(s) => s.next().await,
        }
    }
}

/// One SSE event carrying `message`.
pub(super) fn event(id: Option<&str>, message: &Value) -> Bytes {
    let data = serde_json::to_string(message).expect("JSON serializes");
    let mut out = String::with_capacity(data.len() + 40);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\ndata: ");
    out.push_str(&data);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// A member's request to the client: its id, and the progress token in its `_meta`,
/// sealed to name the member (the client's answer and its progress come back to it).
fn seal_request(sealer: &Sealer<'_>, prefix: &str, message: &mut Value) {
    if message.get("method").is_none() {
        return;
    }
    if let Some(id) = message.get_mut("id") {
        let sealed = sealer.request_id(&RequestId {
            member: prefix.to_string(),
            id: id.take(),
        });
        *id = Value::String(sealed);
    }
    let token = message
        .pointer_mut("/params/_meta/progressToken")
        .filter(|t| t.is_string() || t.is_number());
    if let Some(token) = token {
        let sealed = sealer.progress_token(&RequestId {
            member: prefix.to_string(),
            id: token.take(),
        });
        *token = Value::String(sealed);
    }
}

/// A routed call's SSE answer.
pub struct CallStream<'a> {
    events: Events<'a>,
    prefix: String,
    method: String,
    /// The client's id (the member got it as it was).
    id: Value,
    sealer: Sealer<'a>,
    /// The client speaks the modern era (cache fields stamped, not stripped).
    modern: bool,
    done: bool,
    state: &'a State,
    member: &'a Member,
    /// A miss whose result is kept, unless the member asked the client something first.
    fill: Option<Miss>,
}

impl CallStream<'_> {
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            let (_, mut message) = match self.events.next().await {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                Err(e) => {
                    log::info!("member {}: its answer stream failed: {e}", self.prefix);
                    self.done = true;
                    let error = rpc_error(
                        &self.id,
                        crate::error::code::INTERNAL_ERROR,
                        format!("member {:?} failed while answering", self.prefix),
                        None,
                    );
                    let v: Value = serde_json::from_slice(&error).expect("JSON");
                    return Some(event(None, &v));
                }
            };
            if message.get("method").is_none() {
                if message.get("id") != Some(&self.id) {
                    continue; // an answer to something else: not the client's
                }
                // The client's own answer (its id, checked above): a result is kept as
                // the member gave it, an error never.
                let fill = self.fill.take();
                if let (Some(miss), Some(result)) = (fill, message.get("result")) {
                    if let Some(kept) = crate::cache::entry::keep_value(result.clone()) {
                        miss.keep(kept);
                    }
                }
                if let Some(result) = message.get_mut("result") {
                    rewrite::result(&self.prefix, &self.method, result);
                    rewrite::cache_fields(result, self.modern);
                    transform::result(self.state, self.member, &mut message);
                }
                self.done = true;
                return Some(event(None, &message));
            }
            if message.get("id").is_some() {
                // A request of the member's (sampling, elicitation, roots): the result
                // depends on the client's answer, and is not kept.
                self.fill = None;
            }
            rewrite::notification(&self.prefix, &mut message);
            seal_request(&self.sealer, &self.prefix, &mut message);
            return Some(event(None, &message));
        }
    }
}

/// A member's part of the merged GET stream.
struct Part<'a> {
    index: usize,
    prefix: String,
    session: MemberSession,
    events: Option<Events<'a>>,
    last: Option<String>,
    reopened: u32,
}

/// The merged GET stream of a session.
pub struct GetStream<'a> {
    parts: BoxStream<'a, (usize, Option<String>, Value)>,
    /// Every member's last event id, by prefix.
    last: BTreeMap<String, String>,
    prefixes: Vec<String>,
    sealer: Sealer<'a>,
    changed: Coalesce,
    state: &'a State,
    vs: &'a VirtualServer,
}

/// How often a member's GET stream that ended is opened again, in a row.
const REOPENS: u32 = 5;

impl GetStream<'_> {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(message) = self.changed.due() {
                return Some(self.event(&message));
            }
            let Some(part) = self.changed.until_due(self.parts.next()).await else {
                continue;
            };
            let Some((index, event_id, mut message)) = part else {
                return self.changed.any().map(|message| self.event(&message));
            };
            super::cache::notified(self.state, &self.vs.members[index], &message);
            let prefix = self.prefixes[index].clone();
            if let Some(id) = event_id {
                self.last.insert(prefix.clone(), id);
            }
            rewrite::notification(&prefix, &mut message);
            seal_request(&self.sealer, &prefix, &mut message);
            if !self.changed.admit(&message) {
                continue;
            }
            return Some(self.event(&message));
        }
    }

    /// `message` as an SSE event, under the composite id of every member's last event.
    fn event(&self, message: &Value) -> Bytes {
        let id = (!self.last.is_empty()).then(|| composite(&self.last));
        event(id.as_deref(), message)
    }
}

/// The composite event id: every member's last event id.
fn composite(last: &BTreeMap<String, String>) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(last).expect("JSON serializes"))
}

/// A client's `Last-Event-ID`, read back as each member's.
fn resume_points(raw: Option<&http::HeaderValue>) -> BTreeMap<String, String> {
    raw.and_then(|v| URL_SAFE_NO_PAD.decode(v.as_bytes()).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Open member `index`'s GET stream in its session `ms`, resuming after `last`.
async fn open<'a>(
    req: &'a Request<'a>,
    index: usize,
    ms: &MemberSession,
    last: Option<&str>,
) -> Result<member::Reply<'a>, GatewayError> {
    let member = &req.vs.members[index];
    let mut extra = Vec::new();
    if let Some(id) = last.and_then(|l| http::HeaderValue::from_str(l).ok()) {
        extra.push((http::HeaderName::from_static(LAST_EVENT_ID), id));
    }
    let call = Call {
        method: Some(http::Method::GET),
        extra,
        ..Call::in_session(ms, Bytes::new())
    };
    member::send(&req.client, member, call).await
}

/// The session's GET stream: every member's, merged.
pub async fn get_stream<'a>(fed: &mut Fed<'a>) -> Result<Answer<'a>, GatewayError> {
    let vs = fed.vs();
    for i in 0..vs.members.len() {
        if let Err(e) = fed.member_session(i).await {
            fed.member_failed(i, "initialize", &e)?;
        }
    }
    let req: &'a Request<'a> = fed.req;
    let resume = resume_points(req.headers.get(LAST_EVENT_ID));
    let sessions = fed.held(false);
    let opens = sessions.into_iter().map(|(i, ms)| {
        let last = resume.get(&vs.members[i].prefix).cloned();
        async move {
            let r = open(req, i, &ms, last.as_deref()).await;
            (i, ms, last, r)
        }
    });
    let mut parts = Vec::new();
    let mut gone = Vec::new();
    let opened = futures::future::join_all(opens).await;
    let asked = opened.len();
    for (i, ms, last, r) in opened {
        match r {
            Ok(reply) if reply.status == 404 => gone.push(i),
            Ok(reply) => match reply.body {
                Body::Events(events) => parts.push(Part {
                    index: i,
                    prefix: vs.members[i].prefix.clone(),
                    session: ms,
                    events: Some(events),
                    last,
                    reopened: 0,
                }),
                _ if reply.status == 405 => {}
                _ => fed.member_failed(
                    i,
                    "GET",
                    &GatewayError::InvalidRequest(format!(
                        "its GET stream answered HTTP {}",
                        reply.status
                    )),
                )?,
            },
            Err(e) => fed.member_failed(i, "GET", &e)?,
        }
    }
    if asked > 0 && gone.len() == asked {
        // No member knows the session: it was ended.
        return Err(GatewayError::SessionNotFound);
    }
    for i in gone {
        fed.member_failed(
            i,
            "GET",
            &GatewayError::InvalidRequest("it no longer knows its session".into()),
        )?;
    }
    if parts.is_empty() {
        return Ok(Answer::Json {
            status: 405,
            body: rpc_error(
                &Value::Null,
                crate::error::code::INVALID_REQUEST,
                "no member of this virtual server offers a GET stream".into(),
                None,
            ),
        });
    }
    let prefixes = vs.members.iter().map(|m| m.prefix.clone()).collect();
    let last = parts
        .iter()
        .filter_map(|p| Some((p.prefix.clone(), p.last.clone()?)))
        .collect();
    let streams = parts.into_iter().map(|part| {
        futures::stream::unfold(part, move |mut part| async move {
            loop {
                if let Some(events) = part.events.as_mut() {
                    match events.next().await {
                        Ok(Some((id, message))) => {
                            if id.is_some() {
                                part.last = id.clone();
                            }
                            part.reopened = 0;
                            return Some(((part.index, id, message), part));
                        }
                        Ok(None) => {}
                        Err(e) => log::debug!("member {}: GET stream: {e}", part.prefix),
                    }
                    part.events = None;
                }
                // Ended (a server closing for polling, or failing): open it again.
                if part.reopened >= REOPENS {
                    log::info!(
                        "member {}: its GET stream ended {REOPENS} times in a row; left out of this stream",
                        part.prefix
                    );
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200 << part.reopened)).await;
                part.reopened += 1;
                match open(req, part.index, &part.session, part.last.as_deref()).await {
                    Ok(reply) => match reply.body {
                        Body::Events(events) => part.events = Some(events),
                        _ => {
                            log::info!(
                                "member {}: reopening its GET stream: HTTP {}",
                                part.prefix,
                                reply.status
                            );
                            return None;
                        }
                    },
                    Err(e) => log::debug!("member {}: reopening its GET stream: {e}", part.prefix),
                }
            }
        })
        .boxed()
    });
    Ok(Answer::Events(Stream::Get(Box::new(GetStream {
        parts: futures::stream::select_all(streams).boxed(),
        last,
        prefixes,
        sealer: copy(&fed.sealer),
        changed: Coalesce::default(),
        state: req.client.state,
        vs: req.vs,
    }))))
}

#[cfg(test)]
mod tests {
    use super::untouched;

    #[test]
    fn answers_with_nothing_to_rewrite_pass_as_they_are() {
        assert!(untouched(
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#
        ));
        for rewritten in [
            &br#"{"result":{"content":[{"type":"resource_link","uri":"file:///a"}]}}"#[..],
            br#"{"result":{"content":[{"type":"resource","resource":{"uri":"m:x"}}]}}"#,
            br#"{"result":{"_meta":{"ui":{"resourceUri":"ui://x"}}}}"#,
            br#"{"result":{"contents":[{"uri":"file:///b"}]}}"#,
            br#"{"result":{"ttlMs":5}}"#,
            br#"{"result":{"cacheScope":"public"}}"#,
            b"not json",
        ] {
            assert!(
                !untouched(rewritten),
                "{}",
                String::from_utf8_lossy(rewritten)
            );
        }
    }
}
