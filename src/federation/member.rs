//! One request from the gateway to a member, as an MCP client: the request shaped as
//! the member expects it (its own authority as `Host`, the group's `upstream_auth`, the
//! client's identity signed under `forward_identity`, never the client's credentials),
//! sent through the upstream exchange (the group's strategy, failover while nothing was
//! sent, breakers judged, attempts counted), its answer read as JSON or as SSE events.

use super::token::MemberSession;
use crate::error::GatewayError;
use crate::security::auth::Identity;
use crate::state::virtual_servers::Member;
use crate::state::State;
use crate::telemetry::metrics::{self, METRICS};
use crate::upstream::exchange::{self, Outcome, Sent};
use crate::upstream::pool::Connector;
use crate::upstream::server::Server;
use crate::upstream::{Group, InFlight};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use serde_json::Value;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

/// Largest JSON answer read from a member.
pub const MAX_ANSWER: usize = 32 << 20;

/// Longest line of a member's SSE answer (so its largest event), as the list filter's
/// cap on a route: past it the answer ends with an error.
pub const MAX_SSE_LINE: usize = 16 << 20;

/// What every member request of one client request shares.
pub struct Client<'a> {
    pub state: &'a State,
    pub connector: &'a Connector,
    pub identity: Option<&'a Identity>,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
}

/// One request to a member.
#[derive(Default)]
pub struct Call<'b> {
    /// POST (the default), GET or DELETE.
    pub method: Option<Method>,
    pub body: Bytes,
    /// The member's session: its server (by id) and session id.
    pub session: Option<(&'b str, &'b str)>,
    /// `MCP-Protocol-Version`.
    pub version: Option<&'b str>,
    /// Modern era: `Mcp-Method` and `Mcp-Name`.
    pub routing: Option<(&'b str, Option<&'b str>)>,
    /// Passed on as they are (`Mcp-Param-*`, `Last-Event-ID`).
    pub extra: Vec<(HeaderName, HeaderValue)>,
}

impl<'b> Call<'b> {
    /// A POST of `body` in the member session `ms` (its server, id and version).
    pub fn in_session(ms: &'b MemberSession, body: Bytes) -> Call<'b> {
        Call {
            body,
            session: ms.session.as_deref().map(|s| (ms.server.as_str(), s)),
            version: Some(&ms.version),
            ..Default::default()
        }
    }
}

/// A member's answer.
pub struct Reply<'c> {
    pub status: u16,
    /// The server that answered (sessions stay on it).
    pub server: Arc<Server>,
    /// `Mcp-Session-Id`, when the member minted one.
    pub session: Option<String>,
    pub body: Body<'c>,
}

pub enum Body<'c> {
    /// A JSON body, read whole.
    Json(Bytes),
    /// An SSE stream: its messages, read as they come.
    Events(Events<'c>),
    /// Anything else (202, 404, 405 …), read whole and bounded.
    Other(Bytes),
}

type SseItems<'c> =
    Pin<Box<dyn Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Send + 'c>>;

/// The JSON-RPC messages of a member's SSE answer, each with its event id.
pub struct Events<'c> {
    items: SseItems<'c>,
    /// Counts the server in flight while the stream is open.
    _attempt: InFlight,
    pub member: String,
}

impl Events<'_> {
    /// The next JSON-RPC message (events without one, such as the priming event of a
    /// resumable stream, are skipped), with its event id; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<(Option<String>, Value)>, GatewayError> {
        while let Some(item) = self.items.next().await {
            let sse = item.map_err(|e| {
                GatewayError::Internal(format!("member {}: its SSE stream: {e}", self.member))
            })?;
            let Some(data) = sse.data.as_deref().filter(|d| !d.trim().is_empty()) else {
                continue;
            };
            match serde_json::from_str::<Value>(data) {
                Ok(v) => return Ok(Some((sse.id, v))),
                Err(e) => log::debug!(
                    "member {}: an SSE event that is not JSON was skipped: {e}",
                    self.member
                ),
            }
        }
        Ok(None)
    }
}

/// Send `call` to `member`: to its session's server when there is one (no failover: the
/// session lives there), else to one the group's strategy chooses.
pub async fn send<'c>(
    client: &Client<'c>,
    member: &Member,
    call: Call<'_>,
) -> Result<Reply<'c>, GatewayError> {
    let group = &member.group;
    let method = call.method.clone().unwrap_or(Method::POST);
    let read_timeout = if method == Method::GET {
        client.state.timeouts.stream_idle
    } else {
        client.state.timeouts.request
    };
    let pinned = match call.session {
        Some((server_id, _)) => Some(
            group
                .server_by_id(server_id)
                .filter(|s| s.is_up())
                .ok_or_else(|| GatewayError::SessionServerDown(server_id.to_string()))?,
        ),
        None => None,
    };
    let mut pick = Pick {
        group,
        pinned,
        tried: Vec::new(),
        attempt: None,
        client_ip: client.client_ip,
        read_timeout,
    };
    let up = exchange::connect(client.connector, &mut pick, exchange::Timeouts::default()).await?;
    let server = pick
        .attempt
        .as_ref()
        .map(|a| a.server().clone())
        .ok_or_else(|| GatewayError::Internal("an exchange without an attempt".into()))?;
    let head = request_head(client, member, &server, &method, &call)?;
    let (head, answer) = match up
        .send(
            &mut pick,
            exchange::Request::new(&head, &call.body)
                .map_err(|e| GatewayError::Internal(format!("the member's request: {e}")))?,
            std::future::pending(),
        )
        .await?
    {
        Sent::Answer(head, answer) => (head, answer),
        Sent::Cancelled => return Err(GatewayError::ClientClosed),
    };
    let status = head.status.as_u16();
    let session = head
        .headers
        .get(crate::mcp::headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes().to_ascii_lowercase())
        .unwrap_or_default();
    let attempt = pick.attempt.take().expect("checked above");
    if content_type.starts_with(b"text/event-stream") && status == 200 {
        let member_name = member.prefix.clone();
        // Bytes since the last line end: an SSE line (so an event) longer than
        // `MAX_SSE_LINE` ends the stream with an error instead of growing the parser's buffer.
        let chunks = futures::stream::unfold((Some(answer), 0usize), |(answer, run)| async move {
            let mut answer = answer?;
            match answer.read().await {
                Ok(Some(chunk)) => {
                    let run = match memchr::memrchr(b'\n', &chunk) {
                        Some(at) => chunk.len() - at - 1,
                        None => run + chunk.len(),
                    };
                    if run > MAX_SSE_LINE {
                        answer.close().await;
                        let e = std::io::Error::other(format!(
                            "an SSE line longer than {MAX_SSE_LINE} bytes"
                        ));
                        return Some((Err(e), (None, 0)));
                    }
                    Some((Ok(chunk), (Some(answer), run)))
                }
                Ok(None) => None,
                Err(e) => Some((
                    Err(std::io::Error::other(e.to_string())),
                    (Some(answer), run),
                )),
            }
        });
        return Ok(Reply {
            status,
            server,
            session,
            body: Body::Events(Events {
                items: Box::pin(sse_stream::SseStream::from_bytes_stream(chunks)),
                _attempt: attempt,
                member: member_name,
            }),
        });
    }
    let mut answer = answer;
    // The first chunk is kept as it is: most answers come in one.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        match answer.read().await {
            Ok(Some(chunk)) if first.is_none() && buf.is_empty() => first = Some(chunk),
            Ok(Some(chunk)) => {
                if let Some(f) = first.take() {
                    buf.extend_from_slice(&f);
                }
                if buf.len() + chunk.len() > MAX_ANSWER {
                    answer.close().await;
                    return Err(GatewayError::UpstreamFailed {
                        group: group.name.clone(),
                        server: server.id.clone(),
                        detail: format!("its answer is larger than {MAX_ANSWER} bytes"),
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                answer.close().await;
                return Err(exchange::failure_named(
                    &group.name,
                    &server.id,
                    &e,
                    format!("read: {e}"),
                ));
            }
        }
    }
    answer.finish().await;
    drop(attempt);
    let body = first.unwrap_or_else(|| buf.freeze());
    let body = if content_type.starts_with(b"application/json") {
        Body::Json(body)
    } else {
        Body::Other(body)
    };
    Ok(Reply {
        status,
        server,
        session,
        body,
    })
}

/// The request as the member gets it.
fn request_head(
    client: &Client<'_>,
    member: &Member,
    server: &Server,
    method: &Method,
    call: &Call<'_>,
) -> Result<RequestHeader, GatewayError> {
    let group = &member.group;
    // The fields in a plain map (Pingora's `insert_header` would parse every name again).
    let mut headers = http::HeaderMap::with_capacity(16);
    let mut set = |name: HeaderName, value: HeaderValue| -> Result<(), GatewayError> {
        headers.insert(name, value);
        Ok(())
    };
    let text = |s: &str| {
        HeaderValue::from_str(s).map_err(|_| {
            GatewayError::Internal(format!("a header value that cannot be sent: {s:?}"))
        })
    };
    set(http::header::HOST, server.target.authority.clone())?;
    set(
        http::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    )?;
    set(
        HeaderName::from_static("x-request-id"),
        text(client.request_id)?,
    )?;
    if *method == Method::POST {
        set(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )?;
        set(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        )?;
        set(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(call.body.len()),
        )?;
    } else if *method == Method::GET {
        set(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        )?;
    }
    if let Some((_, session)) = call.session {
        set(
            HeaderName::from_static(crate::mcp::headers::MCP_SESSION_ID),
            text(session)?,
        )?;
    }
    if let Some(version) = call.version {
        set(
            HeaderName::from_static(crate::mcp::headers::MCP_PROTOCOL_VERSION),
            text(version)?,
        )?;
    }
    if let Some((mcp_method, name)) = call.routing {
        set(HeaderName::from_static("mcp-method"), text(mcp_method)?)?;
        if let Some(name) = name {
            set(
                HeaderName::from_static("mcp-name"),
                crate::mcp::headers::encode_value(name),
            )?;
        }
    }
    for (name, value) in &call.extra {
        set(name.clone(), value.clone())?;
    }

    if let Some(ip) = client.client_ip {
        set(
            HeaderName::from_static("x-forwarded-for"),
            text(&ip.to_string())?,
        )?;
    }
    if group.close_connections {
        set(http::header::CONNECTION, HeaderValue::from_static("close"))?;
    }
    // The member's `request_headers`, then the credentials, which no transform replaces.
    if let Some(t) = super::transform::of(client.state, member) {
        crate::upstream::head::request_headers(&mut headers, t);
    }
    if let Some((name, value)) = &group.upstream_auth {
        headers.insert(name.clone(), value.clone());
    }
    if let (Some(fwd), Some(who)) = (&group.forward_identity, client.identity) {
        if let Some(token) = fwd.token(who, client.request_id) {
            headers.insert(fwd.header.clone(), token);
        }
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method.clone();
    parts.uri = http::Uri::try_from(server.target.path.as_str()).map_err(|e| {
        GatewayError::Internal(format!(
            "building a member request: the path {:?}: {e}",
            server.target.path
        ))
    })?;
    parts.headers = headers;
    Ok(RequestHeader::from(parts))
}

const USER_AGENT: &str = concat!("mcp-gateway/", env!("CARGO_PKG_VERSION"));

/// The servers of one member request: the session's, or the group's strategy with
/// failover within `retries` while nothing was sent.
struct Pick<'g> {
    group: &'g Group,
    pinned: Option<Arc<Server>>,
    tried: Vec<u64>,
    attempt: Option<InFlight>,
    client_ip: Option<IpAddr>,
    read_timeout: std::time::Duration,
}

impl exchange::Select for Pick<'_> {
    fn next(&mut self) -> Result<Box<HttpPeer>, GatewayError> {
        let group = self.group;
        let attempt = match &self.pinned {
            Some(server) => InFlight::new(server.clone()),
            None => {
                let a = group
                    .select(self.client_ip, &self.tried)
                    .ok_or_else(|| GatewayError::NoUpstream(group.name.clone()))?;
                self.tried.push(a.uid);
                a
            }
        };
        let peer = attempt
            .peer(self.read_timeout)
            .ok_or_else(|| GatewayError::NoUpstream(group.name.clone()))?;
        self.attempt = Some(attempt);
        Ok(peer)
    }

    fn failover(&mut self) -> Result<bool, GatewayError> {
        if let Some(server) = &self.pinned {
            return Err(GatewayError::SessionServerDown(server.id.clone()));
        }
        Ok(self.tried.len() <= self.group.retries as usize && self.group.has_untried(&self.tried))
    }

    fn attempt(&mut self) -> Option<&mut InFlight> {
        self.attempt.as_mut()
    }
}

impl exchange::Record for Pick<'_> {
    fn names(&self) -> (&str, &str) {
        (
            &self.group.name,
            self.attempt.as_ref().map_or("", |a| a.id.as_str()),
        )
    }

    fn record(&mut self, outcome: Outcome) {
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        let class = match outcome {
            Outcome::ConnectFailed => "connect_error",
            Outcome::Failed => "error",
            Outcome::Answered(status) => match status {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
        };
        metrics::counter(
            &METRICS.upstream_requests,
            &[self.group.name.as_str(), attempt.id.as_str(), class],
        )
        .inc();
        exchange::judge(attempt, &self.group.name, outcome.success());
    }
}

/// Send a notification (or a client's answer) whose reply says nothing the caller needs:
/// the answer is dropped, a failure logged.
pub async fn send_and_forget(client: &Client<'_>, member: &Member, call: Call<'_>) {
    match send(client, member, call).await {
        Ok(reply) if reply.status >= 300 => log::debug!(
            "member {}: a notification was answered with HTTP {}",
            member.prefix,
            reply.status
        ),
        Ok(_) => {}
        Err(e) => log::debug!("member {}: a notification failed: {e}", member.prefix),
    }
}
