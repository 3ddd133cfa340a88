//! One request to an upstream server over a pooled connection, its answer streamed back:
//! the failover rule, timeouts, the attempt's outcome and the error that names the server.
//!
//! Every client of the upstreams sends through here (every POST, GET stream and DELETE a
//! client sends, the health checks, virtual servers' members); Pingora's proxy path
//! carries only the client adapter's requests. An exchange has two steps, and the rule that a request is
//! never sent twice is in their types:
//! 1. [`connect`] asks the caller's [`Select`] for a server and connects; a connect failure
//!    (nothing sent) is recorded and, if the caller allows it ([`Select::failover`]),
//!    another server is asked for.
//! 2. [`Connection::send`] writes the head and body in one write (one segment for the
//!    server to read, where Pingora's client writes and flushes the head on its own) and
//!    waits for the final answer's head (informational `1xx` skipped, a `101` refused).
//!    It takes only a [`Record`]: a request sent (even in part) is never replayed; its
//!    failure counts against its server. A caller's `cancel` future (a client that went
//!    away) closes the upstream request.
//!
//! The caller reads the body from the [`Response`] and relays it as it likes; the
//! connection goes back to the pool only when the answer was read to its end
//! ([`Response::finish`]). Errors name the group and server; Pingora's text (with internal
//! addresses) is the log-only detail ([`GatewayError::detail`]).
//!
//! Upstreams speak HTTP/1.1 (peers are built without ALPN): the connection is Pingora's
//! transport stream, the request written by [`super::head`] (a client's, forwarded) or
//! Pingora's `http_req_header_to_wire` ([`Request::new`]), the answer read by [`answer`]
//! (which holds no buffer while a stream's server is silent).

use super::answer;
use super::breaker::{now_ms, State};
use super::pool::Connector;
use super::InFlight;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::protocols::Stream;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use std::future::Future;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How one attempt at a server went, as the breaker and the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connecting failed: nothing was sent.
    ConnectFailed,
    /// Sent (at least in part), then failed before a final answer, or answered `101`.
    Failed,
    /// The final answer's status.
    Answered(u16),
}

impl Outcome {
    /// A success for the server's breaker: an answer below 500.
    pub fn success(self) -> bool {
        matches!(self, Outcome::Answered(s) if s < 500)
    }
}

/// The caller's record of its attempts: the names errors carry, and where each attempt's
/// outcome goes (the server's breaker, the metrics; a health check records nothing).
/// [`connect`] and [`Connection::send`] record each attempt once.
pub trait Record {
    /// The current attempt's group and server id.
    fn names(&self) -> (&str, &str);
    fn record(&mut self, outcome: Outcome);
}

/// How the caller chooses servers.
pub trait Select: Record {
    /// The next server to try (never one tried already), counted in flight by the
    /// caller, and its peer (with the read timeout the caller wants); an error (no server
    /// left, …) ends the exchange as the caller names it.
    fn next(&mut self) -> Result<Box<HttpPeer>, GatewayError>;
    /// Connecting to the current server failed (nothing was sent): `Ok(true)` to try
    /// another, `Ok(false)` to answer with the connect failure, `Err` for the caller's own
    /// answer (a session's server that is down).
    fn failover(&mut self) -> Result<bool, GatewayError>;
    /// The current attempt, whose server's connections may be limited
    /// (`connection_pool.max_connections_per_host`); `None`: not limited.
    fn attempt(&mut self) -> Option<&mut InFlight> {
        None
    }
}

/// One server, one attempt: no failover, and the outcome is not a request's (a health
/// check decides health, the breaker counts requests): the health checks and the cache's
/// own listens send through it.
pub struct One<'a> {
    pub group: &'a str,
    pub server: &'a str,
    pub peer: Option<Box<HttpPeer>>,
}

impl Select for One<'_> {
    fn next(&mut self) -> Result<Box<HttpPeer>, GatewayError> {
        self.peer
            .take()
            .ok_or_else(|| GatewayError::Internal("the one attempt was made".into()))
    }

    fn failover(&mut self) -> Result<bool, GatewayError> {
        Ok(false)
    }
}

impl Record for One<'_> {
    fn names(&self) -> (&str, &str) {
        (self.group, self.server)
    }

    fn record(&mut self, _: Outcome) {}
}

/// Timeouts that replace the peer's own (`None`: the peer's, from the group's settings
/// and what [`Select::next`] set).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    /// Between reads of the answer (its head, then each chunk of its body).
    pub read: Option<Duration>,
    pub write: Option<Duration>,
}

/// A connection to the chosen server; nothing sent on it yet.
pub struct Connection<'c> {
    connector: &'c Connector,
    stream: Stream,
    /// The peer's reuse hash, for the pool.
    key: u64,
    peer: Box<HttpPeer>,
}

/// Connect to a server [`Select`] chooses, failing over while nothing was sent.
pub async fn connect<'c>(
    connector: &'c Connector,
    servers: &mut impl Select,
    timeouts: Timeouts,
) -> Result<Connection<'c>, GatewayError> {
    loop {
        let mut peer = servers.next()?;
        let wait = timeouts
            .connect
            .or(peer.options.connection_timeout)
            .unwrap_or(Duration::from_secs(5));
        let group = servers.names().0.to_string();
        if let Some(attempt) = servers.attempt() {
            attempt.hold_slot(&group, wait).await?;
        }
        let options = &mut peer.options;
        options.connection_timeout = timeouts.connect.or(options.connection_timeout);
        options.read_timeout = timeouts.read.or(options.read_timeout);
        options.write_timeout = timeouts.write.or(options.write_timeout);
        match connector.get(&peer).await {
            Ok(pooled) => {
                return Ok(Connection {
                    connector,
                    stream: pooled.stream,
                    key: pooled.key,
                    peer,
                });
            }
            Err(e) => {
                servers.record(Outcome::ConnectFailed);
                if !servers.failover()? {
                    return Err(failure(servers.names(), "connect", &e));
                }
            }
        }
    }
}

/// What [`Connection::send`] ended with.
// Moved once per exchange: boxing the answer would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Sent<'c> {
    /// The final answer's head arrived (and was recorded); its body is to be read.
    Answer(ResponseHeader, Response<'c>),
    /// `cancel` finished first: the upstream request was closed (in the modern era that
    /// is the cancellation) and the attempt left unjudged (it says nothing of the server).
    Cancelled,
}

impl<'c> Connection<'c> {
    /// Send the request (`body` may be empty) and wait for the final answer's head, or
    /// for `cancel`, whichever comes first.
    pub async fn send(
        self,
        attempt: &mut impl Record,
        request: Request,
        cancel: impl Future<Output = ()>,
    ) -> Result<Sent<'c>, GatewayError> {
        let Connection {
            connector,
            mut stream,
            key,
            peer,
        } = self;
        let options = &peer.options;
        let Request { wire, asked } = request;
        let exchange = async {
            write_all(&mut stream, &wire, options.write_timeout)
                .await
                .map_err(|e| ("send", e))?;
            drop(wire);
            answer::read_head(stream, asked, options.read_timeout)
                .await
                .map_err(|e| ("read", e))
        };
        let answer = tokio::select! {
            biased;
            answer = exchange => answer,
            // Dropping the exchange drops its connection: that closes the request.
            () = cancel => return Ok(Sent::Cancelled),
        };
        match answer {
            Ok((head, body)) if head.status != http::StatusCode::SWITCHING_PROTOCOLS => {
                attempt.record(Outcome::Answered(head.status.as_u16()));
                Ok(Sent::Answer(
                    head,
                    Response {
                        connector,
                        body,
                        key,
                        peer,
                    },
                ))
            }
            Ok((_, body)) => {
                attempt.record(Outcome::Failed);
                let _ = body.into_stream().shutdown().await;
                let (group, server) = attempt.names();
                Err(GatewayError::UpstreamSwitchedProtocols {
                    group: group.to_string(),
                    server: server.to_string(),
                })
            }
            // Sent (at least in part): never replayed, but it counts against the server.
            Err((stage, e)) => {
                attempt.record(Outcome::Failed);
                Err(failure(attempt.names(), stage, &e))
            }
        }
    }
}

/// A request's head and body as one buffer (what one `write` hands the kernel), and
/// what it implies for its answer.
pub struct Request {
    wire: bytes::BytesMut,
    asked: answer::Asked,
}

impl Request {
    /// `head` (written by Pingora's `http_req_header_to_wire`) followed by `body`.
    pub fn new(head: &RequestHeader, body: &[u8]) -> pingora::Result<Self> {
        let mut wire = http_req_header_to_wire(head).ok_or_else(|| {
            Error::explain(
                ErrorType::InvalidHTTPHeader,
                "request-line contains forbidden delimiter bytes or unsupported HTTP version",
            )
        })?;
        wire.extend_from_slice(body);
        let close = asks_close(head.headers.get(http::header::CONNECTION));
        Ok(Self::wire(wire, head.method == http::Method::HEAD, close))
    }

    /// A request already written (`wire`): a `HEAD` request's (`head`), or one that asks
    /// the server to close the connection (`close`: it is never pooled afterwards).
    pub fn wire(wire: bytes::BytesMut, head: bool, close: bool) -> Self {
        Request {
            wire,
            asked: answer::Asked { head, close },
        }
    }

    /// The bytes sent.
    pub fn bytes(&self) -> &[u8] {
        &self.wire
    }

    /// What the request implies for its answer.
    pub fn asked(&self) -> answer::Asked {
        self.asked
    }
}

/// Whether a request's `Connection` field asks the server to close after its answer.
pub fn asks_close(connection: Option<&http::HeaderValue>) -> bool {
    connection.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Write `buf` and flush, within `limit` (the peer's write timeout) if there is one.
async fn write_all(
    stream: &mut Stream,
    buf: &[u8],
    limit: Option<Duration>,
) -> pingora::Result<()> {
    let write = async {
        stream.write_all(buf).await?;
        stream.flush().await
    };
    let written = match limit {
        Some(t) => tokio::time::timeout(t, write)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
        None => write.await,
    };
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => {
            Error::because(ErrorType::WriteTimedout, "writing the request (timeout)", e)
        }
        _ => Error::because(ErrorType::WriteError, "writing the request", e),
    })
}

/// The final answer's body to read, and the connection it came on.
pub struct Response<'c> {
    connector: &'c Connector,
    body: answer::Body,
    /// The peer's reuse hash, for the pool.
    key: u64,
    peer: Box<HttpPeer>,
}

impl Response<'_> {
    /// The next piece of the body; `None` at its end.
    pub async fn read(&mut self) -> pingora::Result<Option<Bytes>> {
        self.body.read().await
    }

    /// Done with the answer: its connection goes back to the pool if it was read to its
    /// end and both sides keep it alive.
    pub async fn finish(self) {
        match self.body.reusable() {
            Ok(stream) => {
                let idle = self.peer.options.idle_timeout;
                self.connector.release(stream, self.key, idle);
            }
            Err(mut stream) => {
                let _ = stream.shutdown().await;
            }
        }
    }

    /// Close the upstream request (a client that went away, a relay that failed: in the
    /// modern era that is the cancellation).
    pub async fn close(self) {
        let _ = self.body.into_stream().shutdown().await;
    }
}

/// The gateway's name for an exchange with a server that failed with `e`: a timeout
/// (connect, read, write) or any other failure. `detail` is for the log only.
pub fn failure_named(group: &str, server: &str, e: &Error, detail: String) -> GatewayError {
    let (group, server) = (group.to_string(), server.to_string());
    if matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    ) {
        GatewayError::UpstreamTimeout {
            group,
            server,
            detail,
        }
    } else {
        GatewayError::UpstreamFailed {
            group,
            server,
            detail,
        }
    }
}

/// [`failure_named`] for a failure at `stage` (connect, send, read) of an exchange.
fn failure((group, server): (&str, &str), stage: &str, e: &Error) -> GatewayError {
    failure_named(group, server, e, format!("{stage}: {e}"))
}

/// Tell an attempt's breaker how it went (once: later calls change nothing), logging a
/// change of the breaker's state.
pub fn judge(attempt: &mut InFlight, group: &str, success: bool) {
    match attempt.record(success, now_ms()) {
        Some(State::Open) => log::warn!(
            "upstream {group}/{}: circuit breaker open after consecutive failures",
            attempt.id
        ),
        Some(state) => log::info!(
            "upstream {group}/{}: circuit breaker {}",
            attempt.id,
            state.as_str()
        ),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Servers tried in order; every outcome kept.
    struct Servers {
        peers: Vec<HttpPeer>,
        outcomes: Vec<Outcome>,
        tried: usize,
    }

    impl Servers {
        /// Tried from the last to the first.
        fn new(peers: Vec<HttpPeer>) -> Self {
            Servers {
                peers,
                outcomes: vec![],
                tried: 0,
            }
        }

        /// Connect and send a request with a `{}` body.
        async fn send<'c>(
            &mut self,
            connector: &'c Connector,
            cancel: impl Future<Output = ()>,
        ) -> Result<Sent<'c>, GatewayError> {
            let conn = connect(connector, self, Timeouts::default()).await?;
            conn.send(self, request(), cancel).await
        }
    }

    impl Record for Servers {
        fn names(&self) -> (&str, &str) {
            ("g", ["a", "b"][self.tried.saturating_sub(1).min(1)])
        }
        fn record(&mut self, outcome: Outcome) {
            self.outcomes.push(outcome);
        }
    }

    impl Select for Servers {
        fn next(&mut self) -> Result<Box<HttpPeer>, GatewayError> {
            self.tried += 1;
            self.peers
                .pop()
                .map(Box::new)
                .ok_or_else(|| GatewayError::NoUpstream("g".into()))
        }
        fn failover(&mut self) -> Result<bool, GatewayError> {
            Ok(!self.peers.is_empty())
        }
    }

    fn peer(addr: std::net::SocketAddr) -> HttpPeer {
        let mut p = HttpPeer::new(addr, false, String::new());
        p.options.read_timeout = Some(Duration::from_secs(5));
        p
    }

    /// A port nothing listens on.
    fn refusing() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// A server answering each connection's first read with `answer` (none: silent);
    /// what it read, and `closed` when a silent one's client closed the connection.
    async fn server(
        answer: &'static [u8],
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    ) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0; 65536];
                let n = s.read(&mut buf).await.unwrap_or(0);
                tx.send(buf[..n].to_vec()).ok();
                if !answer.is_empty() {
                    s.write_all(answer).await.ok();
                } else {
                    // Silent: hold the connection until the client closes it.
                    while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                    tx.send(b"closed".to_vec()).ok();
                }
            }
        });
        (addr, rx)
    }

    fn request() -> Request {
        let mut h = RequestHeader::build("POST", b"/mcp", None).unwrap();
        h.insert_header("host", "x").unwrap();
        h.insert_header("content-length", "2").unwrap();
        Request::new(&h, b"{}").unwrap()
    }

    #[tokio::test]
    async fn a_refused_connect_fails_over_and_informational_answers_are_skipped() {
        let (addr, mut seen) =
            server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        let mut servers = Servers::new(vec![peer(addr), peer(refusing())]);
        let connector = Connector::new(8);
        let sent = servers
            .send(&connector, std::future::pending())
            .await
            .unwrap();
        let Sent::Answer(head, mut answer) = sent else {
            panic!("cancelled")
        };
        assert_eq!(head.status, 200);
        assert_eq!(answer.read().await.unwrap().as_deref(), Some(&b"ok"[..]));
        assert_eq!(answer.read().await.unwrap(), None);
        answer.finish().await;
        assert_eq!(
            servers.outcomes,
            [Outcome::ConnectFailed, Outcome::Answered(200)]
        );
        // Head and body in one write: the server's first read holds the whole request.
        let first_read = seen.recv().await.unwrap();
        assert!(first_read.starts_with(b"POST /mcp HTTP/1.1\r\n"));
        assert!(
            first_read.ends_with(b"\r\n\r\n{}"),
            "one read, the whole request: {:?}",
            String::from_utf8_lossy(&first_read)
        );
    }

    #[tokio::test]
    async fn a_sent_request_is_never_replayed_and_101_is_refused() {
        for (answer, err) in [
            (&b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..], "101"),
            (&b"garbage\r\n\r\n"[..], "failed before answering"),
        ] {
            let (addr, mut seen) = server(answer).await;
            let mut servers = Servers::new(vec![peer(addr), peer(addr)]);
            let connector = Connector::new(8);
            let e = servers
                .send(&connector, std::future::pending())
                .await
                .err()
                .unwrap();
            assert!(e.to_string().contains(err), "{e}");
            assert!(e.to_string().contains("server a of group \"g\""), "{e}");
            assert_eq!(servers.outcomes, [Outcome::Failed]);
            assert_eq!(servers.tried, 1, "never sent to another server");
            seen.recv().await.unwrap();
            assert!(seen.try_recv().is_err());
        }
    }

    #[tokio::test]
    async fn the_last_connect_failure_names_the_server_and_cancel_closes_the_request() {
        let mut servers = Servers::new(vec![peer(refusing())]);
        let connector = Connector::new(8);
        let e = connect(&connector, &mut servers, Timeouts::default())
            .await
            .err()
            .unwrap();
        assert!(matches!(&e, GatewayError::UpstreamFailed { server, .. } if server == "a"));
        assert!(e.detail().unwrap().starts_with("connect: "), "{e:?}");
        assert_eq!(servers.outcomes, [Outcome::ConnectFailed]);

        let (addr, mut seen) = server(b"").await;
        let mut servers = Servers::new(vec![peer(addr)]);
        let cancel = tokio::time::sleep(Duration::from_millis(200));
        let sent = servers.send(&connector, cancel).await.unwrap();
        assert!(matches!(sent, Sent::Cancelled));
        assert!(
            servers.outcomes.is_empty(),
            "a cancelled attempt is not judged"
        );
        seen.recv().await.unwrap();
        assert_eq!(seen.recv().await.unwrap(), b"closed");
    }
}
