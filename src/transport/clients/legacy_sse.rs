//! Legacy HTTP+SSE clients (the 2024-11-05 transport): `GET <route>/sse` opens a stream
//! whose first event, `endpoint`, names where the client POSTs its messages
//! (`<route>/message?sessionId=…`, relative: same origin); each POST is answered `202`
//! and what comes back travels on the stream as `message` events.
//!
//! A session belongs to the client that opened it: a POST naming an unknown session, or
//! one opened by another identity, is `404`. Closing the stream ends the session and what
//! it holds upstream (the upstream session is deleted; a per-session stdio process ends
//! with it). Each message is inspected by the gateway like a POST (the same body limit,
//! policies, rate limits, metrics and access log).

use super::session::Downstream;
use super::{Body, Caller};
use crate::error::code;
use crate::live::Live;
use crate::transport::stdio::http::{error, stream_response};
use bytes::Bytes;
use dashmap::DashMap;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A comment on a stream that is quiet this long (and a hang-up is noticed).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a shutdown waits for a session's messages in flight before ending its stream.
const DRAIN: Duration = Duration::from_secs(30);

/// Open sessions, by the id their `endpoint` names.
static SESSIONS: once_cell::sync::Lazy<DashMap<String, Arc<Downstream>>> =
    once_cell::sync::Lazy::new(DashMap::new);

/// One SSE `message` event (a message's lines each get their `data:`).
fn event(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 24);
    out.extend_from_slice(b"event: message\n");
    for line in message.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// `GET <route>/sse`: a new session and its stream.
pub fn open(caller: Arc<Caller>) -> Response<Body> {
    let id = format!("{:032x}", rand::random::<u128>());
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let Some(down) = Downstream::new(caller.clone(), super::Kind::LegacyStream, tx) else {
        return error(
            500,
            &Value::Null,
            code::INTERNAL_ERROR,
            "the gateway cannot serve this stream",
        );
    };
    SESSIONS.insert(id.clone(), down.clone());
    let endpoint = format!(
        "event: endpoint\ndata: {}/message?sessionId={id}\n\n",
        caller.route
    );

    /// The stream's state; dropped (the client went away, or the stream ended), the
    /// session ends.
    struct Stream {
        id: String,
        down: Arc<Downstream>,
        rx: mpsc::Receiver<Bytes>,
        first: Option<Bytes>,
        closing: tokio::sync::watch::Receiver<bool>,
        ending: bool,
    }
    impl Drop for Stream {
        fn drop(&mut self) {
            SESSIONS.remove(&self.id);
            let down = self.down.clone();
            tokio::spawn(async move { down.close().await });
        }
    }
    let state = Stream {
        id,
        down,
        rx,
        first: Some(Bytes::from(endpoint)),
        closing: super::closing_watch(),
        ending: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, Infallible>(Frame::data(first)), s));
        }
        if s.ending {
            // Shutting down: what was answered goes out, then the stream ends.
            let m = s.rx.try_recv().ok()?;
            return Some((Ok(Frame::data(event(&m))), s));
        }
        let data = tokio::select! {
            m = s.rx.recv() => event(&m?),
            _ = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            _ = crate::transport::stdio::until(&mut s.closing, |c| *c) => {
                s.ending = true;
                let _ = tokio::time::timeout(DRAIN, s.down.drained()).await;
                Bytes::from_static(b": the gateway is shutting down\n\n")
            }
        };
        Some((Ok(Frame::data(data)), s))
    });
    stream_response(StreamBody::new(stream).boxed())
}

/// The session a message POST names (`?sessionId=`, or the Python SDK's `session_id`).
fn session_of(req: &Request<Incoming>) -> Option<&str> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        matches!(k, "sessionId" | "session_id").then_some(v)
    })
}

fn not_found() -> Response<Body> {
    error(
        404,
        &Value::Null,
        code::SESSION_NOT_FOUND,
        "session not found: it ended (its stream closed) or belongs to another client; open a new one with GET <route>/sse",
    )
}

/// `POST <route>/message?sessionId=…` (`caller`: who sent it).
pub async fn message(
    live: &Arc<Live>,
    caller: Arc<Caller>,
    req: Request<Incoming>,
) -> Response<Body> {
    let down = session_of(&req)
        .and_then(|id| SESSIONS.get(id).map(|d| d.value().clone()))
        .filter(|d| d.caller.same_client(&caller) && d.caller.route == caller.route);
    let Some(down) = down else {
        return not_found();
    };
    // The client's current credential (checked on this POST) keeps its session's
    // messages going.
    down.caller.renewed_by(&caller);
    let limit = live.state().max_request_body;
    let body = match Limited::new(req.into_body(), limit as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                413,
                &Value::Null,
                code::INVALID_REQUEST,
                &crate::error::GatewayError::PayloadTooLarge { limit }.to_string(),
            )
        }
        Err(e) => {
            return error(
                400,
                &Value::Null,
                code::INVALID_REQUEST,
                &format!("reading the body failed: {e}"),
            )
        }
    };
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return error(
            400,
            &Value::Null,
            code::PARSE_ERROR,
            "the body is not a JSON-RPC message (JSON)",
        );
    }
    // A notification is sent on before the next message is taken; a request's answer
    // follows on the stream.
    down.receive(body).await;
    Response::builder()
        .status(http::StatusCode::ACCEPTED)
        .body(Empty::new().boxed())
        .expect("a valid response")
}
