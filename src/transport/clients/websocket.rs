//! WebSocket clients: the binding the SDKs and IDE integrations use (there is none in
//! the MCP specification). Subprotocol `mcp` (echoed when offered; none offered is
//! accepted), one JSON-RPC message per text frame, the connection is the session.
//!
//! The proxy has already checked the upgrade (authentication, `Origin`, route policies,
//! the handshake's fields) before it reaches here; this side answers the `101` and speaks
//! frames with `tokio-tungstenite`:
//!
//! * a text frame is one message for [`Downstream::receive`] (inspected by the gateway
//!   like a POST body); one that is not JSON gets a `-32700` error frame;
//! * a binary frame closes with `1003`, invalid UTF-8 with `1007`, a message over
//!   `limits.max_websocket_message` with `1009`, a protocol violation with `1002`;
//! * a ping every `limits.websocket_ping_interval`; a client that has sent nothing (not
//!   even a pong) for two intervals is gone;
//! * when the gateway shuts down or upgrades, what is in flight finishes and the socket
//!   closes with `1001`.

use super::session::Downstream;
use super::{Body, Caller};
use crate::live::Live;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// The subprotocol of MCP over WebSocket.
pub const SUBPROTOCOL: &str = "mcp";

/// The socket's read buffer (tungstenite's default is 128 KiB per socket).
const READ_BUFFER: usize = 8 * 1024;

/// How long a shutdown waits for a socket's messages in flight before it closes anyway.
const DRAIN: Duration = Duration::from_secs(30);

/// Does the client's `Sec-WebSocket-Protocol` offer `mcp`? `None`: it offers nothing.
pub fn offers_mcp(headers: &http::HeaderMap) -> Option<bool> {
    let mut offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    offered.peek()?;
    Some(offered.any(|p| p.eq_ignore_ascii_case(SUBPROTOCOL)))
}

/// Answer the upgrade and serve the socket once hyper hands it over.
pub fn accept(live: &Arc<Live>, caller: Arc<Caller>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return crate::transport::stdio::http::error(
            400,
            &serde_json::Value::Null,
            crate::error::code::INVALID_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key",
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mcp = offers_mcp(req.headers()) == Some(true);
    let limits = live.loaded().config.limits.clone();
    let max = limits
        .max_websocket_message
        .map_or(limits.max_request_body.0, |m| m.0) as usize;
    let ping = limits.websocket_ping_interval.0;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve(TokioIo::new(io), caller, max, ping).await,
            Err(e) => log::debug!("WebSocket upgrade: {e}"),
        }
    });
    let mut resp = Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if mcp {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    }
    resp.body(Empty::new().boxed()).expect("a valid response")
}

/// The close frame for what a client did wrong.
fn close_for(e: &WsError) -> Option<(CloseCode, &'static str)> {
    match e {
        WsError::Utf8(_) => Some((CloseCode::Invalid, "a text frame was not valid UTF-8")),
        WsError::Capacity(_) => Some((
            CloseCode::Size,
            "the message exceeds limits.max_websocket_message",
        )),
        WsError::Protocol(_) => Some((CloseCode::Protocol, "WebSocket protocol violation")),
        _ => None,
    }
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

async fn serve<S>(io: S, caller: Arc<Caller>, max: usize, ping: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Small buffers: an idle socket costs little (a message larger than the read buffer
    // is read on past it, up to `max`); each message is written out at once.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut frames) = ws.split();
    let (tx, mut messages) = mpsc::channel::<Bytes>(64);
    let (control, mut controls) = mpsc::channel::<Message>(4);
    let Some(down) = Downstream::new(caller, super::Kind::WebSocket, tx) else {
        let _ = sink
            .send(close(
                CloseCode::Error,
                "the gateway cannot serve this socket",
            ))
            .await;
        return;
    };
    // The writer: messages first (a close goes after every message already answered).
    let writer = tokio::spawn(async move {
        let mut answers = true;
        loop {
            let next = tokio::select! {
                biased;
                m = messages.recv(), if answers => match m.map(Utf8Bytes::try_from) {
                    Some(Ok(m)) => Message::Text(m),
                    Some(Err(_)) => {
                        log::warn!("WebSocket client: an answer that is not UTF-8 was dropped");
                        continue;
                    }
                    None => {
                        // The session is gone; its close frame may still be coming.
                        answers = false;
                        continue;
                    }
                },
                c = controls.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
            };
            let last = matches!(next, Message::Close(_));
            if sink.send(next).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut pings = tokio::time::interval(if ping.is_zero() {
        Duration::from_secs(3600)
    } else {
        ping
    });
    pings.tick().await;
    let mut quiet = 0u32;
    let mut closing = std::pin::pin!(super::closing());
    loop {
        tokio::select! {
            frame = frames.next() => {
                quiet = 0;
                match frame {
                    None | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => down.receive(Bytes::from(text)).await,
                    Some(Ok(Message::Binary(_))) => {
                        let reason = "binary frames are not MCP: send each JSON-RPC message as a text frame";
                        let _ = control.send(close(CloseCode::Unsupported, reason)).await;
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        log::debug!("WebSocket client: {e}");
                        if let Some((code, reason)) = close_for(&e) {
                            let _ = control.send(close(code, reason)).await;
                        }
                        break;
                    }
                }
            }
            _ = pings.tick(), if !ping.is_zero() => {
                quiet += 1;
                if quiet > 2 {
                    log::debug!("WebSocket client: no answer to two pings, closing");
                    break;
                }
                let _ = control.send(Message::Ping(Bytes::new())).await;
            }
            _ = &mut closing => {
                // Nothing new is read; what was sent is answered, then the close.
                let _ = tokio::time::timeout(DRAIN, down.drained()).await;
                let _ = control
                    .send(close(CloseCode::Away, "the gateway is shutting down"))
                    .await;
                break;
            }
        }
    }
    drop(control);
    down.close().await;
    drop(down);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}
