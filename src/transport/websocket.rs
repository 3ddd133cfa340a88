//! WebSocket servers (`url: ws://host:port/path`, `wss://…`), presented to clients as
//! Streamable HTTP through the same bridge as stdio servers (`transport::stdio::bridge`,
//! one socket per client session).
//!
//! There is no WebSocket binding in the MCP spec; this is the one SDKs and IDE bridges
//! use: the client offers the subprotocol `mcp`, and each text frame carries one JSON-RPC
//! message. The frames are tokio-tungstenite's. The server's messages go where a stdio
//! process's lines go (answers by id, progress, the GET stream); binary frames are
//! skipped and logged. When the socket closes, what is in flight gets a JSON-RPC error at
//! once and the session ends (`404`: the client initializes again). The headers the
//! gateway sent with the session's `initialize` (the group's `upstream_auth`,
//! `forward_identity`, trace context) go with the opening handshake.

use crate::transport::stdio::process::{Exit, Link, Proc};
use crate::transport::stdio::Spec;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How long the server may take to complete the opening handshake.
const CONNECT: Duration = Duration::from_secs(10);
/// A ping on a socket quiet this long (intermediaries close idle ones).
const PING: Duration = Duration::from_secs(30);

/// Open a socket to the server for one session; `on_exit` runs when it closes.
pub fn connect(
    spec: &Arc<Spec>,
    request_headers: &HeaderMap,
    on_exit: impl FnOnce(&Exit) + Send + 'static,
) -> Arc<Proc> {
    let url = spec.remote.clone().unwrap_or_default();
    let headers = crate::transport::stdio::http::forwarded(request_headers);
    Proc::connection(spec, on_exit, move |link| run(link, url, headers))
}

/// The socket's life; what ended it.
async fn run(link: Link, url: String, headers: HeaderMap) -> String {
    let Link {
        proc,
        mut input,
        mut stop,
    } = link;
    let url = url.as_str();
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return format!("{url}: {e}"),
    };
    for (name, value) in &headers {
        // The handshake's own fields are tungstenite's.
        if !name.as_str().starts_with("sec-websocket-") {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mcp"));
    let opened = tokio::select! {
        r = tokio::time::timeout(CONNECT, tokio_tungstenite::connect_async(request)) => r,
        _ = crate::transport::stdio::until(&mut stop, |s| *s) => return "stopped".into(),
    };
    let (socket, _) = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return format!("the WebSocket handshake with {url} failed: {e}"),
        Err(_) => return format!("{url}: no WebSocket handshake in {}s", CONNECT.as_secs()),
    };
    log::info!(
        "{} {}: connected to {url}",
        proc.spec().kind(),
        proc.spec().id
    );
    let (mut sink, mut frames) = socket.split();
    loop {
        tokio::select! {
            line = input.recv() => {
                let Some(line) = line else { return "closed".into() };
                let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line)).into_owned();
                if let Err(e) = sink.send(Message::text(text)).await {
                    return format!("sending to {url} failed: {e}");
                }
            }
            frame = tokio::time::timeout(PING, frames.next()) => match frame {
                Err(_) => {
                    if let Err(e) = sink.send(Message::Ping(Default::default())).await {
                        return format!("pinging {url} failed: {e}");
                    }
                }
                Ok(Some(Ok(Message::Text(text)))) => proc.dispatch(text.as_bytes()),
                Ok(Some(Ok(Message::Binary(_)))) => log::warn!(
                    "{} {}: skipped a binary frame (MCP messages are text)",
                    proc.spec().kind(),
                    proc.spec().id
                ),
                Ok(Some(Ok(Message::Close(close)))) => {
                    return match close {
                        Some(c) => format!("{url} closed the socket ({} {})", u16::from(c.code), c.reason),
                        None => format!("{url} closed the socket"),
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return format!("the socket to {url} failed: {e}"),
                Ok(None) => return format!("the socket to {url} ended"),
            },
            _ = crate::transport::stdio::until(&mut stop, |s| *s) => {
                let _ = sink.send(Message::Close(None)).await;
                return "stopped".into();
            }
        }
    }
}
