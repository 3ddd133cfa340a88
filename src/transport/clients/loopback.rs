//! The adapter's requests to the gateway itself, on its internal listener (a Unix socket
//! of the proxy service, `Sockets::gateway`): Streamable HTTP, one request per message,
//! carrying the caller's [`super::CALLER`] ticket in place of the client's credentials.
//! The proxy takes the caller's identity and address from the ticket and serves the
//! request as any client's.

use super::{Caller, Sockets, CALLER};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method};

/// The internal listener's client: pooled connections over the Unix socket.
static CLIENT: once_cell::sync::Lazy<Option<reqwest::Client>> = once_cell::sync::Lazy::new(|| {
    let socket = Sockets::get()?.gateway.clone();
    reqwest::Client::builder()
        .unix_socket(socket)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        // Enough kept for a busy process; a burst opens more and lets them go.
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| log::error!("the internal client: {e}"))
        .ok()
});

/// Where one connection's messages go: the gateway's URL for its route, with the
/// connection's ticket.
#[derive(Debug, Clone)]
pub struct Target {
    url: reqwest::Url,
    ticket: HeaderValue,
}

impl Target {
    pub fn new(caller: &Caller, ticket: &str) -> Option<Target> {
        // The client's own authority (a `preserve_host` group forwards it); the socket
        // is what is reached, whatever the name.
        let host = caller
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@']))
            .unwrap_or("localhost");
        let url = reqwest::Url::parse(&format!("http://{host}{}", caller.route))
            .or_else(|_| reqwest::Url::parse(&format!("http://localhost{}", caller.route)))
            .ok()?;
        Some(Target {
            url,
            ticket: HeaderValue::from_str(ticket).ok()?,
        })
    }

    /// Send one request: `headers` are MCP's (session, version, routing).
    pub async fn send(
        &self,
        method: Method,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, String> {
        let client = CLIENT
            .as_ref()
            .ok_or("the gateway's internal listener is not available")?;
        let mut req = client
            .request(method.clone(), self.url.clone())
            .headers(headers)
            .header(CALLER, self.ticket.clone());
        if method == Method::GET {
            req = req.header(header::ACCEPT, "text/event-stream");
        } else {
            req = req.header(header::ACCEPT, "application/json, text/event-stream");
        }
        if let Some(body) = body {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        req.send().await.map_err(|e| e.to_string())
    }
}

/// Is this answer an SSE stream?
pub fn is_sse(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// The JSON-RPC messages of an SSE answer (the `data` of its `message` events), as they
/// arrive; an `Err` ends it.
pub fn messages(resp: reqwest::Response) -> impl Stream<Item = Result<String, String>> {
    crate::transport::legacy_sse::events(resp).filter_map(|event| async move {
        match event {
            Ok(sse) if matches!(sse.event.as_deref(), None | Some("message")) => {
                sse.data.filter(|d| !d.trim().is_empty()).map(Ok)
            }
            Ok(_) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    })
}
