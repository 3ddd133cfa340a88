//! The Streamable HTTP side of a stdio bridge, as the proxy (and health checks, and
//! virtual servers) reach it over its Unix socket: POST one JSON-RPC message (answered as
//! JSON, or as SSE when the process has more to say first), GET the session's stream,
//! DELETE the session. Served with hyper.

use super::bridge::{Bridge, Route};
use super::process::Pending;
use crate::error::code;
use crate::mcp::headers::MCP_SESSION_ID;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub type Body = BoxBody<Bytes, Infallible>;

/// The JSON-RPC code of a request the process left unanswered (it exited).
pub const EXITED: i32 = code::INTERNAL_ERROR;
/// A comment on streams that are quiet this long (proxies and clients keep them open).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The request headers that belong to the bridge's own exchange, not to the server.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "accept",
    "accept-encoding",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "mcp-session-id",
    "last-event-id",
];

/// The headers of a request to the bridge that go on to the server.
pub fn forwarded(request_headers: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in request_headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// One SSE `message` event.
pub fn sse_event(message: &Value) -> Bytes {
    let mut out = b"event: message\ndata: ".to_vec();
    serde_json::to_writer(&mut out, message).expect("JSON serializes");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

pub fn json_response(status: u16, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("a valid response")
}

/// A JSON-RPC error answer.
pub fn error(status: u16, id: &Value, code: i32, message: &str) -> Response<Body> {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    json_response(status, serde_json::to_vec(&body).expect("JSON serializes"))
}

fn empty(status: u16) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, "0")
        .body(Full::new(Bytes::new()).boxed())
        .expect("a valid response")
}

/// One request on the bridge socket.
pub async fn serve(
    bridge: Arc<Bridge>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let session = parts
        .headers
        .get(MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = match parts.method {
        Method::POST => match body.collect().await {
            Ok(body) => post(&bridge, &parts.headers, session, body.to_bytes()).await,
            Err(e) => error(
                400,
                &Value::Null,
                code::INVALID_REQUEST,
                &format!("reading the body failed: {e}"),
            ),
        },
        Method::GET => get(&bridge, &parts.headers, session),
        Method::DELETE => match bridge.end_session(session.as_deref()).await {
            Some(status) => empty(status),
            None => not_found(),
        },
        _ => error(
            405,
            &Value::Null,
            code::INVALID_REQUEST,
            "use POST, GET or DELETE",
        ),
    };
    Ok(answer)
}

fn not_found() -> Response<Body> {
    error(
        404,
        &Value::Null,
        code::SESSION_NOT_FOUND,
        "session not found: the process or connection that served it has ended; start a new session with initialize",
    )
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

async fn post(
    bridge: &Arc<Bridge>,
    headers: &HeaderMap,
    session: Option<String>,
    body: Bytes,
) -> Response<Body> {
    let mut message: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(Value::Array(_)) => {
            return error(
                400,
                &Value::Null,
                code::INVALID_REQUEST,
                "a bridged server (stdio, legacy SSE) takes one JSON-RPC message per request, not a batch",
            )
        }
        _ => {
            return error(
                400,
                &Value::Null,
                code::PARSE_ERROR,
                "the body is not a JSON-RPC message",
            )
        }
    };
    let id = message.get("id").cloned();
    let is_request = message.get("method").is_some() && id.is_some();
    let id = id.unwrap_or(Value::Null);
    let route = match bridge.route(&message, session.as_deref(), headers).await {
        Ok(route) => route,
        Err((status, code, why)) => return error(status, &id, code, &why),
    };
    let (proc, mut new_session) = match route {
        Route::Answer(result) => {
            let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
            return json_response(200, serde_json::to_vec(&body).expect("JSON serializes"));
        }
        Route::Accepted => return empty(202),
        Route::To { proc, new_session } => (proc, new_session),
    };
    if bridge.spec.remote.is_some() {
        proc.carry(forwarded(headers));
    }
    if !is_request {
        // A notification, or the client's answer to the process's request.
        return match proc.send(&message) {
            Ok(()) => empty(202),
            Err(why) => error(502, &id, EXITED, &why),
        };
    }
    // Shared processes serve many clients: the request gets an id (and progress token)
    // of the process's own, and the client's come back on the way out.
    let own_token = message.pointer("/params/_meta/progressToken").cloned();
    let rewritten = bridge.spec.shared();
    if rewritten {
        message["id"] = proc.fresh_id(&id);
        if let Some(t) = message.pointer_mut("/params/_meta/progressToken") {
            *t = proc.fresh_id(t);
        }
    }
    let streams = accepts_sse(headers);
    let (pending, mut rx) = match proc.request(&message, streams) {
        Ok(x) => x,
        Err(why) => return error(502, &id, EXITED, &why),
    };
    let restore = Restore {
        id,
        token: own_token,
        rewritten,
    };
    let first = match rx.recv().await {
        Some(m) => m,
        None => {
            let why = format!("{} {} went away", bridge.spec.kind(), bridge.spec.id);
            return error(502, &restore.id, EXITED, &why);
        }
    };
    let mut response = if is_answer(&first) {
        let mut pending = pending;
        pending.answered();
        let status = if first.get("error").is_some_and(|e| e["code"] == EXITED) && !proc.alive() {
            502
        } else {
            200
        };
        if new_session.is_some() && first.get("error").is_some() {
            // No session for an initialize that failed: its process goes.
            bridge.abandon(new_session.take().as_deref()).await;
        }
        json_response(
            status,
            serde_json::to_vec(&restore.apply(first)).expect("JSON serializes"),
        )
    } else {
        sse(pending, rx, first, restore)
    };
    if let Some(sid) = new_session {
        if let Ok(v) = sid.parse() {
            response.headers_mut().insert(MCP_SESSION_ID, v);
        }
    }
    response
}

fn is_answer(m: &Value) -> bool {
    m.get("method").is_none()
}

/// The client's id and progress token, put back on what goes out (when the request
/// went to the process under ids of the pool's own).
struct Restore {
    id: Value,
    token: Option<Value>,
    rewritten: bool,
}

impl Restore {
    fn apply(&self, mut m: Value) -> Value {
        if !self.rewritten {
            return m;
        }
        if is_answer(&m) {
            m["id"] = self.id.clone();
        } else if m["method"] == "notifications/progress" {
            if let (Some(t), Some(own)) = (m.pointer_mut("/params/progressToken"), &self.token) {
                *t = own.clone();
            }
        }
        m
    }
}

/// The rest of a request's messages as an SSE stream, its answer last.
fn sse(
    pending: Pending,
    rx: mpsc::UnboundedReceiver<Value>,
    first: Value,
    restore: Restore,
) -> Response<Body> {
    struct State {
        pending: Pending,
        rx: mpsc::UnboundedReceiver<Value>,
        first: Option<Value>,
        restore: Restore,
        done: bool,
    }
    let state = State {
        pending,
        rx,
        first: Some(first),
        restore,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let message = match s.first.take() {
            Some(m) => m,
            None => s.rx.recv().await?,
        };
        if is_answer(&message) {
            s.pending.answered();
            s.done = true;
        }
        let event = sse_event(&s.restore.apply(message));
        Some((Ok::<_, Infallible>(Frame::data(event)), s))
    });
    stream_response(StreamBody::new(stream).boxed())
}

pub(crate) fn stream_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .expect("a valid response")
}

/// The session's GET stream: the process's own messages, with keep-alive comments.
fn get(bridge: &Arc<Bridge>, headers: &HeaderMap, session: Option<String>) -> Response<Body> {
    if bridge.spec.shared() {
        return error(
            405,
            &Value::Null,
            code::INVALID_REQUEST,
            "this stdio server runs shared (process: shared): it has no per-session stream",
        );
    }
    if !accepts_sse(headers) {
        return error(
            406,
            &Value::Null,
            code::INVALID_REQUEST,
            "GET needs Accept: text/event-stream",
        );
    }
    let Some(proc) = session.as_deref().and_then(|s| bridge.session(s)) else {
        return not_found();
    };
    let rx = proc.open_stream();
    struct Stream {
        rx: mpsc::Receiver<Bytes>,
        proc: Arc<super::process::Proc>,
    }
    impl Drop for Stream {
        fn drop(&mut self) {
            self.rx.close();
            self.proc.stream_closed();
        }
    }
    let state = Stream { rx, proc };
    let stream = futures::stream::unfold(state, |mut s| async move {
        match tokio::time::timeout(KEEP_ALIVE, s.rx.recv()).await {
            Ok(Some(event)) => Some((Ok::<_, Infallible>(Frame::data(event)), s)),
            Ok(None) => None,
            Err(_) => Some((Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))), s)),
        }
    });
    stream_response(StreamBody::new(stream).boxed())
}
