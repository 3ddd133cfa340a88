//! Legacy HTTP+SSE servers (the 2024-11-05 transport; `url: sse+http://host:port/sse`),
//! presented to clients as Streamable HTTP through the same bridge as stdio servers
//! (`transport::stdio::bridge`, one connection per client session).
//!
//! A connection: `GET` the stream URL; its first `endpoint` event names, as an opaque URI
//! resolved against the stream URL (its query kept verbatim: SDKs differ, `sessionId`
//! vs `session_id`), where the messages are POSTed; the server's messages come back as
//! `message` events and go where a stdio process's lines go (answers by id, progress,
//! the GET stream). When the stream ends, what is in flight gets a JSON-RPC error at once
//! and the session ends (`404`: the client initializes again). The headers the gateway
//! sends the bridge (the group's `upstream_auth`, `forward_identity`, `X-Request-Id`, trace
//! context) go on: those of the session's `initialize` with the GET, those of each
//! request with its POST.

use crate::transport::stdio::process::{Exit, Link, Proc};
use crate::transport::stdio::Spec;
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long the server may take to answer the GET with its `endpoint`.
const CONNECT: Duration = Duration::from_secs(10);

static CLIENT: once_cell::sync::Lazy<reqwest::Client> = once_cell::sync::Lazy::new(|| {
    reqwest::Client::builder()
        .connect_timeout(CONNECT)
        .build()
        .expect("a reqwest client")
});

/// The SSE events of an answer as they arrive (sse-stream's parser over its chunks);
/// also what the client adapter reads the gateway's own SSE answers with.
pub fn events(
    resp: reqwest::Response,
) -> impl futures::Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send {
    let chunks = futures::stream::unfold(resp, |mut resp| async move {
        match resp.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), resp)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), resp)),
        }
    });
    sse_stream::SseStream::from_bytes_stream(chunks)
}

/// Open a connection to the server for one session; `on_exit` runs when it ends.
pub fn connect(
    spec: &Arc<Spec>,
    request_headers: &HeaderMap,
    on_exit: impl FnOnce(&Exit) + Send + 'static,
) -> Arc<Proc> {
    let url = spec
        .remote
        .as_deref()
        .and_then(|u| u.strip_prefix(crate::config::stdio::LEGACY_SSE))
        .unwrap_or_default()
        .to_string();
    let headers = crate::transport::stdio::http::forwarded(request_headers);
    Proc::connection(spec, on_exit, move |link| run(link, url, headers))
}

/// The connection's life; what ended it.
async fn run(link: Link, url: String, headers: HeaderMap) -> String {
    let Link {
        proc,
        input,
        mut stop,
    } = link;
    let url = url.as_str();
    let opened = CLIENT
        .get(url)
        .headers(headers.clone())
        .header(header::ACCEPT, "text/event-stream")
        .send();
    let resp = tokio::select! {
        r = tokio::time::timeout(CONNECT, opened) => match r {
            Ok(Ok(r)) if r.status().is_success() => r,
            Ok(Ok(r)) => return format!("GET {url} answered HTTP {}", r.status().as_u16()),
            Ok(Err(e)) => return format!("GET {url} failed: {e}"),
            Err(_) => return format!("GET {url}: no answer in {}s", CONNECT.as_secs()),
        },
        _ = crate::transport::stdio::until(&mut stop, |s| *s) => return "stopped".into(),
    };
    let mut events = Box::pin(events(resp));
    // The first event names where to POST.
    let endpoint = loop {
        let next = tokio::select! {
            e = tokio::time::timeout(CONNECT, events.next()) => e,
            _ = crate::transport::stdio::until(&mut stop, |s| *s) => return "stopped".into(),
        };
        match next {
            Ok(Some(Ok(sse))) if sse.event.as_deref() == Some("endpoint") => {
                break sse.data.unwrap_or_default();
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return format!("the stream from {url} failed: {e}"),
            Ok(None) => return format!("the stream from {url} ended before its endpoint event"),
            Err(_) => return format!("{url} sent no endpoint event in {}s", CONNECT.as_secs()),
        }
    };
    let post_url = match reqwest::Url::parse(url).and_then(|base| base.join(endpoint.trim())) {
        Ok(u) => u,
        Err(e) => return format!("{url}: its endpoint {endpoint:?} is not a URI: {e}"),
    };
    log::info!(
        "{} {}: connected to {url}, posting to {post_url}",
        proc.spec().kind(),
        proc.spec().id
    );
    // Messages out, in order, by a task of their own (the stream is read meanwhile).
    let writer = tokio::spawn(write(input, post_url, proc.clone()));
    let why = loop {
        let next = tokio::select! {
            e = events.next() => e,
            _ = crate::transport::stdio::until(&mut stop, |s| *s) => break "stopped".to_string(),
        };
        match next {
            Some(Ok(sse)) if matches!(sse.event.as_deref(), None | Some("message")) => {
                if let Some(data) = sse.data {
                    proc.dispatch(data.as_bytes());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break format!("the stream from {url} failed: {e}"),
            None => break format!("the server ended the stream from {url}"),
        }
    };
    writer.abort();
    why
}

/// POST each message to the endpoint; a request the server did not take gets its error.
async fn write(mut input: tokio::sync::mpsc::Receiver<Bytes>, to: reqwest::Url, proc: Arc<Proc>) {
    while let Some(line) = input.recv().await {
        let sent = CLIENT
            .post(to.clone())
            .headers(proc.carried())
            .header(header::CONTENT_TYPE, "application/json")
            .body(line.clone())
            .send()
            .await;
        let refused = match sent {
            Ok(r) if r.status().is_success() => continue,
            Ok(r) => format!(
                "the server answered HTTP {} to the POST",
                r.status().as_u16()
            ),
            Err(e) => format!("the POST to {to} failed: {e}"),
        };
        log::warn!("legacy SSE server: {refused}");
        let message: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
        if let (Some(id), Some(_)) = (message.get("id"), message.get("method")) {
            let error = json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": crate::error::code::INTERNAL_ERROR, "message": refused
            }});
            proc.dispatch(&serde_json::to_vec(&error).expect("JSON serializes"));
        }
    }
}
