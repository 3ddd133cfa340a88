//! One client request to a virtual server: what it is (the era, the message, the
//! session) and who answers it: the gateway itself (`initialize`, `server/discover`,
//! `ping`, the merged lists), the member that owns a name or URI (calls), every member
//! of the session (notifications, DELETE), or the member a client's answer is for.

use super::member::Client;
use super::token::{Sealer, SessionState};
use super::transform::Call;
use super::{handshake, names, relay};
use crate::cache::ask::Looked;
use crate::error::{code, GatewayError};
use crate::mcp::headers::MCP_SESSION_ID;
use crate::mcp::session::Owner;
use crate::state::virtual_servers::VirtualServer;
use bytes::Bytes;
use http::{HeaderMap, Method};
use serde_json::{json, Value};
use sha2::Digest;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The client's request, as the request path read and checked it.
pub struct Request<'a> {
    pub vs: &'a VirtualServer,
    pub client: Client<'a>,
    pub owner: Option<Owner<'a>>,
    pub method: Method,
    pub headers: HeaderMap,
    /// A POST's body (read, bounded, a JSON-RPC message).
    pub body: Option<Bytes>,
    /// The request is of the modern (stateless) era: its body says so, or (a GET or a
    /// DELETE) its `MCP-Protocol-Version`.
    pub modern: bool,
}

/// What the client gets.
pub struct Reply<'a> {
    pub answer: Answer<'a>,
    /// A (new) sealed `Mcp-Session-Id` to send.
    pub session: Option<String>,
    /// `hit` or `miss` when members' kept answers were looked up (`hit`: all of them
    /// were found), for `X-Cache`.
    pub x_cache: Option<&'static str>,
}

pub enum Answer<'a> {
    /// A JSON body (a JSON-RPC response or error).
    Json { status: u16, body: Bytes },
    /// `202 Accepted`: a notification or a client's answer was passed on.
    Accepted,
    /// No body (DELETE).
    Empty(u16),
    /// An SSE stream: a member's answer relayed, or the merged GET stream.
    Events(relay::Stream<'a>),
}

/// A JSON-RPC error the virtual server answers as an MCP server would (HTTP 200 in the
/// legacy era; the modern one maps a few codes to statuses).
pub fn rpc_error(id: &Value, code: i32, message: String, data: Option<Value>) -> Bytes {
    let mut error = json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "error": error}))
        .expect("JSON serializes")
        .into()
}

/// A JSON-RPC result.
pub fn rpc_result(id: &Value, result: Value) -> Bytes {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        .expect("JSON serializes")
        .into()
}

/// A fresh id for a request of the gateway's own to a member (`kind`: what it asks).
/// Random, so that no two requests in one member session share an id, whichever
/// replica sends them: servers match answers to requests by id.
pub fn own_id(kind: &str) -> Value {
    Value::String(format!("mcp-gateway-{kind}-{:016x}", rand::random::<u64>()))
}

/// Who presents a session, as the opened-session cache compares it (the fields a
/// sealed session is bound to).
fn owner_key(owner: Option<Owner<'_>>) -> String {
    match owner {
        None => String::new(),
        Some(o) => format!(
            "{}\0{}\0{}\0{}",
            o.method,
            o.rule,
            o.subject,
            o.client_id.unwrap_or_default()
        ),
    }
}

/// `-32602 Invalid params`.
pub const INVALID_PARAMS: i32 = -32602;
/// `-32601 Method not found`.
pub const METHOD_NOT_FOUND: i32 = -32601;

/// One request in progress: the request, its session (opened, and changed when a member
/// had to be initialized again), and the sealer of its tokens.
pub struct Fed<'a> {
    pub req: &'a Request<'a>,
    pub sealer: Sealer<'a>,
    pub session: Option<Arc<SessionState>>,
    /// The session changed: the answer carries the new sealed id.
    pub changed: bool,
    /// The client message's `params._meta` (the modern era's protocol version, client
    /// info and capabilities), sent along with the gateway's own requests to members.
    pub meta: Option<Value>,
    /// The arguments a member's transforms changed in the call (their `Mcp-Param-*`
    /// fields are re-emitted).
    pub rewritten_args: Option<Vec<(String, Option<Value>)>>,
    /// Members' kept answers looked up: 0 none, 1 all found, 2 some not.
    x_cache: AtomicU8,
}

pub async fn serve<'a>(req: &'a Request<'a>) -> Result<Reply<'a>, GatewayError> {
    let vs = req.vs;
    let mut fed = Fed {
        req,
        sealer: Sealer {
            keys: &req.client.state.sessions,
            path: &vs.path,
            owner: req.owner,
        },
        session: None,
        changed: false,
        meta: None,
        rewritten_args: None,
        x_cache: AtomicU8::new(0),
    };
    // A POST's message, parsed once.
    let message = match req.method {
        Method::POST => Some(parse(req.body.as_deref().unwrap_or_default())?),
        _ => None,
    };
    let initialize = message
        .as_ref()
        .is_some_and(|m| m.get("method").and_then(Value::as_str) == Some("initialize"));
    if initialize && !req.modern {
        let answer = handshake::initialize(&mut fed, message.expect("a POST")).await?;
        let session = fed.session.as_ref().map(|s| fed.sealer.session(s));
        return Ok(Reply {
            answer,
            session,
            x_cache: None,
        });
    }
    if !req.modern {
        fed.session = Some(fed.open_session()?);
    }
    let answer = match req.method {
        // The modern era has no standing stream and no session to end.
        Method::GET | Method::DELETE if req.modern => Answer::Json {
            status: 405,
            body: rpc_error(
                &Value::Null,
                code::INVALID_REQUEST,
                format!(
                    "{} is not part of protocol version {} and later: requests are POSTs",
                    req.method,
                    crate::mcp::envelope::FIRST_MODERN_VERSION
                ),
                None,
            ),
        },
        Method::GET => relay::get_stream(&mut fed).await?,
        Method::DELETE => fed.delete().await,
        _ => {
            let message = message.expect("a POST (the request path takes no other method)");
            fed.meta = message.get("params").and_then(|p| p.get("_meta")).cloned();
            fed.message(message).await?
        }
    };
    let session = if fed.changed {
        fed.session.as_ref().map(|s| fed.sealer.session(s))
    } else {
        None
    };
    let x_cache = fed.x_cache();
    Ok(Reply {
        answer,
        session,
        x_cache,
    })
}

fn parse(body: &[u8]) -> Result<Value, GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| GatewayError::Parse(e.to_string()))?;
    if v.is_array() {
        return Err(GatewayError::InvalidRequest(
            "a virtual server takes one JSON-RPC message per request, not a batch".into(),
        ));
    }
    Ok(v)
}

impl<'a> Fed<'a> {
    pub fn vs(&self) -> &'a VirtualServer {
        self.req.vs
    }

    /// A member's kept answer was looked up: found (`hit`) or not.
    pub(super) fn saw_cache(&self, hit: bool) {
        let seen = if hit { 1 } else { 2 };
        self.x_cache.fetch_max(seen, Ordering::Relaxed);
    }

    fn x_cache(&self) -> Option<&'static str> {
        match self.x_cache.load(Ordering::Relaxed) {
            0 => None,
            1 => Some("hit"),
            _ => Some("miss"),
        }
    }

    fn open_session(&self) -> Result<Arc<SessionState>, GatewayError> {
        let Some(raw) = self.req.headers.get(MCP_SESSION_ID) else {
            return Err(GatewayError::InvalidRequest(
                "Mcp-Session-Id is required: start a session with initialize".into(),
            ));
        };
        let token = raw.to_str().map_err(|_| GatewayError::SessionNotFound)?;
        let vs = self.vs();
        let owner = owner_key(self.req.owner);
        let mut state = match vs.opened.get(token, &owner) {
            Some(state) => state,
            None => {
                let state = Arc::new(
                    self.sealer
                        .open_session(token)
                        .ok_or(GatewayError::SessionNotFound)?,
                );
                vs.opened.put(token, &owner, state.clone());
                state
            }
        };
        if let Some(ttl) = self.req.client.state.session_ttl {
            if crate::mcp::session::now().saturating_sub(state.issued_at) > ttl.as_secs() {
                return Err(GatewayError::SessionNotFound);
            }
        }
        // Member sessions this process renewed for this client session.
        let renewed = &vs.renewed;
        if !renewed.is_empty() {
            let digest = self.token();
            for (i, m) in vs.members.iter().enumerate() {
                let found = digest.and_then(|t| renewed.get(&t, i));
                if let Some(ms) = found.and_then(|b| serde_json::from_slice(&b).ok()) {
                    Arc::make_mut(&mut state)
                        .members
                        .insert(m.prefix.clone(), ms);
                }
            }
        }
        Ok(state)
    }

    /// The digest of the client's session id (see `VirtualServer::renewed`).
    pub(super) fn token(&self) -> Option<[u8; 32]> {
        let raw = self.req.headers.get(MCP_SESSION_ID)?;
        Some(sha2::Sha256::digest(raw.as_bytes()).into())
    }

    /// One client message (a POST).
    async fn message(&mut self, message: Value) -> Result<Answer<'a>, GatewayError> {
        let id = message.get("id").cloned();
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        match (method.as_deref(), id) {
            (None, Some(id)) => self.client_answer(id, message).await,
            (None, None) => Err(GatewayError::InvalidRequest(
                "a JSON-RPC message needs a method or an id".into(),
            )),
            (Some(_), None) => {
                self.notify_all(message).await;
                Ok(Answer::Accepted)
            }
            (Some(method), Some(id)) => self.request(method, id, message).await,
        }
    }

    async fn request(
        &mut self,
        method: &str,
        id: Value,
        message: Value,
    ) -> Result<Answer<'a>, GatewayError> {
        let modern = self.req.modern;
        match method {
            "server/discover" if modern => handshake::discover(self, &id, &message).await,
            "subscriptions/listen" if modern => super::listen::listen(self, &id, &message).await,
            "initialize" => Ok(self.error(
                &id,
                code::INVALID_REQUEST,
                "the session is already initialized".into(),
                None,
            )),
            "ping" => {
                if !modern {
                    self.fan_out_simple("ping", None, 0).await?;
                }
                Ok(Answer::Json {
                    status: 200,
                    body: rpc_result(&id, json!({})),
                })
            }
            "logging/setLevel" => {
                let params = message.get("params").cloned();
                self.fan_out_simple("logging/setLevel", params, handshake::Caps::LOGGING)
                    .await?;
                Ok(Answer::Json {
                    status: 200,
                    body: rpc_result(&id, json!({})),
                })
            }
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                super::catalog::list(self, method, &id, &message).await
            }
            "tools/call"
            | "prompts/get"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "completion/complete" => self.routed(method, id, message).await,
            _ => Ok(self.error(
                &id,
                METHOD_NOT_FOUND,
                format!("method {method:?} is not served by this virtual server"),
                None,
            )),
        }
    }

    /// A JSON-RPC error answer: HTTP 200 in the legacy era; in the modern one, an unknown
    /// method is a 404 (as a modern server answers it).
    pub fn error(&self, id: &Value, code: i32, message: String, data: Option<Value>) -> Answer<'a> {
        let status = if self.req.modern && code == METHOD_NOT_FOUND {
            404
        } else {
            200
        };
        Answer::Json {
            status,
            body: rpc_error(id, code, message, data),
        }
    }

    /// A call that one member answers: the member that owns the name or URI.
    async fn routed(
        &mut self,
        method: &str,
        id: Value,
        mut message: Value,
    ) -> Result<Answer<'a>, GatewayError> {
        let vs = self.vs();
        let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) else {
            return Ok(self.error(&id, INVALID_PARAMS, format!("{method} needs params"), None));
        };
        let target = match method {
            "tools/call" | "prompts/get" => params
                .get("name")
                .and_then(Value::as_str)
                .map(|n| (n.to_string(), false)),
            "completion/complete" => params.get("ref").and_then(|r| {
                r.get("name")
                    .or_else(|| r.get("uri"))
                    .and_then(Value::as_str)
                    .map(|n| (n.to_string(), r.get("uri").is_some()))
            }),
            _ => params
                .get("uri")
                .and_then(Value::as_str)
                .map(|u| (u.to_string(), true)),
        };
        let Some((target, is_uri)) = target else {
            return Ok(self.error(
                &id,
                INVALID_PARAMS,
                format!("{method} needs a name or uri"),
                None,
            ));
        };
        let unknown = |what: &str| {
            format!(
                "unknown {what} {target:?}: names carry their server's prefix ({}) and {:?}",
                vs.prefixes(),
                vs.separator
            )
        };
        let (index, original) = if is_uri {
            match names::uri_owner(vs, &target) {
                Some(found) => found,
                None => {
                    return Ok(self.error(
                        &id,
                        INVALID_PARAMS,
                        format!(
                            "unknown resource {target:?}: resource URIs carry their server's prefix ({}) and '+' after the scheme",
                            vs.prefixes()
                        ),
                        Some(json!({"prefixes": vs.members.iter().map(|m| &m.prefix).collect::<Vec<_>>()})),
                    ))
                }
            }
        } else {
            match names::owner(vs, &target) {
                names::Owner::Member(i, name) => (i, name.to_string()),
                names::Owner::Unknown => {
                    let what = if method == "tools/call" {
                        "tool"
                    } else {
                        "prompt"
                    };
                    return Ok(self.error(
                        &id,
                        INVALID_PARAMS,
                        unknown(what),
                        Some(json!({"prefixes": vs.members.iter().map(|m| &m.prefix).collect::<Vec<_>>()})),
                    ));
                }
                names::Owner::Unprefixed(name) => {
                    let found = if method == "tools/call" {
                        names::tool_owner(vs, name)
                    } else {
                        super::catalog::find_prompt(self, name).await?
                    };
                    match found {
                        Some(i) => (i, name.to_string()),
                        None => {
                            return Ok(self.error(
                                &id,
                                INVALID_PARAMS,
                                format!(
                                    "unknown {} {name:?}",
                                    if method == "tools/call" {
                                        "tool"
                                    } else {
                                        "prompt"
                                    }
                                ),
                                None,
                            ))
                        }
                    }
                }
            }
        };
        let member = &vs.members[index];
        // The member's own name or URI.
        let params = message
            .get_mut("params")
            .and_then(Value::as_object_mut)
            .expect("checked above");
        match method {
            "completion/complete" => {
                if let Some(r) = params.get_mut("ref").and_then(Value::as_object_mut) {
                    let key = if is_uri { "uri" } else { "name" };
                    r.insert(key.into(), Value::String(original.clone()));
                }
            }
            "tools/call" | "prompts/get" => {
                params.insert("name".into(), Value::String(original.clone()));
            }
            _ => {
                params.insert("uri".into(), Value::String(original.clone()));
            }
        }
        let body = Bytes::from(serde_json::to_vec(&message).expect("JSON serializes"));
        // The member's transforms: the call its server gets, under the tool's own name.
        let (sent, upstream) = match method {
            "tools/call" => match self.transform_call(index, &original, body.clone()) {
                Call::Send(sent, upstream) => (sent, upstream),
                Call::Unknown => return Ok(self.error(&id, INVALID_PARAMS, unknown("tool"), None)),
                Call::Refused(why) => return Ok(self.error(&id, INVALID_PARAMS, why, None)),
            },
            _ => (body.clone(), original.clone()),
        };
        if method == "tools/call" && !member.tools.allows(&upstream) {
            return Ok(self.error(&id, INVALID_PARAMS, unknown("tool"), None));
        }
        // A kept answer (looked up as the client asked, by the member's names).
        let fill = match self.cached(index, method, Some(&original), &body).await {
            Some(Looked::Hit(entry, _)) => {
                let raw = serde_json::to_string(&id).expect("JSON serializes");
                let bytes = entry.answer(&raw, self.req.modern, crate::cache::now_ms());
                return relay::json(self, index, method, 200, bytes.into())
                    .map_err(GatewayError::Internal);
            }
            Some(Looked::Miss(miss)) => Some(miss),
            None => None,
        };
        let name_header = matches!(method, "tools/call" | "prompts/get" | "resources/read")
            .then_some(upstream.as_str());
        let reply = self.call(index, sent, method, name_header).await?;
        relay::answer(self, index, method, id, reply, fill).await
    }
}
