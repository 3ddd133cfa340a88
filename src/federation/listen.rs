//! `subscriptions/listen` (modern era) through a virtual server: the client's filter
//! split per member (the list flags to every member, each resource URI to the member that
//! owns it, unprefixed), every member's stream opened at once and its acknowledgment
//! awaited, one acknowledgment to the client with the union of what the members honored
//! (URIs prefixed again), then the members' notifications merged on the client's stream
//! (URIs rewritten, `list_changed` of one kind arriving together sent once), each stamped
//! with the client's subscription id. The stream ends, with the listen result, when every
//! member's has ended; as the spec says, there is no replay: clients listen again.

use super::coalesce::Coalesce;
use super::fan::response_of;
use super::member::{Body, Events};
use super::names;
use super::relay::{self, Stream};
use super::rewrite;
use super::serve::{Answer, Fed, METHOD_NOT_FOUND};
use crate::error::GatewayError;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use serde_json::{json, Map, Value};

/// Where a notification's subscription id goes.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
const ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";
const FLAGS: [&str; 3] = [
    "toolsListChanged",
    "promptsListChanged",
    "resourcesListChanged",
];

pub async fn listen<'a>(
    fed: &Fed<'a>,
    id: &Value,
    message: &Value,
) -> Result<Answer<'a>, GatewayError> {
    let vs = fed.vs();
    let wanted = message
        .get("params")
        .and_then(|p| p.get("notifications"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let uris: Vec<&str> = wanted
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let any_flag = FLAGS
        .iter()
        .any(|f| wanted.get(*f) == Some(&Value::Bool(true)));
    // Each member's part of the filter; members asked for nothing are not asked.
    let mut asks = Vec::new();
    for i in 0..vs.members.len() {
        let mine: Vec<Value> = uris
            .iter()
            .filter_map(|u| names::uri_owner(vs, u))
            .filter(|(owner, _)| *owner == i)
            .map(|(_, original)| Value::String(original))
            .collect();
        if !any_flag && mine.is_empty() {
            continue;
        }
        let mut filter = wanted.clone();
        if filter.contains_key("resourceSubscriptions") {
            filter.insert("resourceSubscriptions".into(), Value::Array(mine));
        }
        let mut body = message.clone();
        body["params"]["notifications"] = Value::Object(filter);
        let body = Bytes::from(serde_json::to_vec(&body).expect("JSON serializes"));
        asks.push((i, body));
    }
    let opened = futures::future::join_all(
        asks.into_iter()
            .map(|(i, body)| async move { (i, open(fed, i, body, id).await) }),
    )
    .await;
    let mut honored = Map::new();
    let mut honored_uris = Vec::new();
    let mut parts = Vec::new();
    for (i, r) in opened {
        match r {
            Ok(Some((ack, events))) => {
                fed.member_ok(i);
                for f in FLAGS {
                    if ack.get(f) == Some(&Value::Bool(true)) {
                        honored.insert(f.into(), Value::Bool(true));
                    }
                }
                let prefix = &vs.members[i].prefix;
                honored_uris.extend(
                    ack.get("resourceSubscriptions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|u| Value::String(names::uri(prefix, u))),
                );
                parts.push((i, events));
            }
            Ok(None) => {} // the member has no subscriptions/listen: not a failure
            Err(e) => fed.member_failed(i, "subscriptions/listen", &e)?,
        }
    }
    if parts.is_empty() {
        return Ok(fed.error(
            id,
            METHOD_NOT_FOUND,
            "no member of this virtual server serves subscriptions/listen for what was asked"
                .into(),
            None,
        ));
    }
    if wanted.contains_key("resourceSubscriptions") {
        honored.insert("resourceSubscriptions".into(), Value::Array(honored_uris));
    }
    let ack = json!({
        "jsonrpc": "2.0",
        "method": ACKNOWLEDGED,
        "params": {"notifications": honored, "_meta": {SUBSCRIPTION_ID: id}},
    });
    let prefixes = vs.members.iter().map(|m| m.prefix.clone()).collect();
    let merged = futures::stream::select_all(parts.into_iter().map(|(i, events)| {
        futures::stream::unfold(events, move |mut events| async move {
            match events.next().await {
                Ok(Some((_, message))) => Some(((i, message), events)),
                Ok(None) => None,
                Err(e) => {
                    log::debug!("member {}: its listen stream: {e}", events.member);
                    None
                }
            }
        })
        .boxed()
    }))
    .boxed();
    Ok(Answer::Events(Stream::Listen(Box::new(ListenStream {
        first: Some(ack),
        parts: merged,
        prefixes,
        id: id.clone(),
        changed: Coalesce::default(),
        ended: false,
    }))))
}

/// Open member `index`'s listen stream: its acknowledged filter and the rest of its
/// events; `None` when the member does not serve `subscriptions/listen`.
async fn open<'a>(
    fed: &Fed<'a>,
    index: usize,
    body: Bytes,
    id: &Value,
) -> Result<Option<(Value, Events<'a>)>, GatewayError> {
    let reply = fed.send_once(index, body, "subscriptions/listen").await?;
    let status = reply.status;
    let mut events = match reply.body {
        Body::Events(events) => events,
        other => {
            // A JSON answer: an error (or a listen that ended at once).
            return match response_of(other, id).await? {
                Some(r) if r["error"]["code"] == json!(METHOD_NOT_FOUND) => Ok(None),
                Some(r) => Err(GatewayError::InvalidRequest(format!(
                    "it refused subscriptions/listen: {}",
                    r.get("error").unwrap_or(&r["result"])
                ))),
                None if status == 404 => Ok(None),
                None => Err(GatewayError::InvalidRequest(format!(
                    "it answered subscriptions/listen with HTTP {status} and no JSON-RPC answer"
                ))),
            };
        }
    };
    match events.next().await? {
        Some((_, first)) if first["method"] == ACKNOWLEDGED => {
            let filter = first["params"]["notifications"].clone();
            Ok(Some((filter, events)))
        }
        Some((_, first)) => Err(GatewayError::InvalidRequest(format!(
            "its listen stream did not begin with an acknowledgment: {first}"
        ))),
        None => Err(GatewayError::InvalidRequest(
            "its listen stream ended before it was acknowledged".into(),
        )),
    }
}

/// The client's listen stream.
pub struct ListenStream<'a> {
    /// The merged acknowledgment, sent first.
    first: Option<Value>,
    parts: BoxStream<'a, (usize, Value)>,
    prefixes: Vec<String>,
    /// The client's listen request id: the subscription id of every notification.
    id: Value,
    changed: Coalesce,
    ended: bool,
}

impl ListenStream<'_> {
    pub async fn next(&mut self) -> Option<Bytes> {
        if let Some(ack) = self.first.take() {
            return Some(relay::event(None, &ack));
        }
        if self.ended {
            return None;
        }
        loop {
            if let Some(message) = self.changed.due() {
                return Some(self.event(message));
            }
            let Some(part) = self.changed.until_due(self.parts.next()).await else {
                continue;
            };
            let Some((index, mut message)) = part else {
                if let Some(message) = self.changed.any() {
                    return Some(self.event(message));
                }
                // Every member's stream ended: so does the client's, with its result.
                self.ended = true;
                let end = json!({
                    "jsonrpc": "2.0",
                    "id": self.id,
                    "result": {"_meta": {SUBSCRIPTION_ID: self.id}},
                });
                return Some(relay::event(None, &end));
            };
            if message.get("method").is_none() {
                // A member's own end of stream.
                continue;
            }
            rewrite::notification(&self.prefixes[index], &mut message);
            if !self.changed.admit(&message) {
                // A list change of a kind just sent: held for the window's end.
                continue;
            }
            return Some(self.event(message));
        }
    }

    /// A member's notification as the client's: under the client's subscription id.
    fn event(&self, mut message: Value) -> Bytes {
        let params = message
            .as_object_mut()
            .expect("a message with a method is an object")
            .entry("params")
            .or_insert_with(|| json!({}));
        if let Some(p) = params.as_object_mut() {
            let meta = p.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert(SUBSCRIPTION_ID.into(), self.id.clone());
            }
        }
        relay::event(None, &message)
    }
}
