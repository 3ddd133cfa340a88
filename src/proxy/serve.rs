//! HTTP/1 client connections: the gateway's own request loop.
//!
//! Pingora's HTTP app serves every request of a connection through one future holding
//! its whole proxy state machine (cache, upstream phases, retries), built and moved
//! into a box per request: copying it was a sixth of the instructions of a passthrough
//! call, and a GET stream held it (17 KB) for as long as it was open. The gateway needs
//! that machine only for the client adapter: it reads, checks and answers every POST,
//! GET stream and DELETE from `request_filter` ([`super::relay`], [`super::federated`],
//! its own errors). So this loop looks at each request before anything parses it:
//!
//! * a POST (but a legacy SSE client's message), decided on its request line, and a
//!   GET or DELETE, decided on its whole head ([`taken`]: not a WebSocket upgrade or a
//!   legacy SSE client's stream, which the client adapter takes over through Pingora's
//!   proxy path), is read by Pingora's own HTTP/1 session and served here by the same
//!   hooks Pingora would call (`early_request_filter`, `request_filter`, `logging`, and
//!   on an error `fail_to_proxy`), with nothing else per request;
//! * anything else (those, OPTIONS, a request line longer than [`LINE`] bytes or a GET
//!   head longer than [`HEAD`], a head cut short) goes to Pingora's HTTP app with the
//!   bytes read so far as the session's first bytes (its "pipelined prefix", parsed
//!   before it reads the socket), and the connection stays there: what that app hands
//!   back for the next request may hold bytes it read ahead, which only it can see.
//!
//! Either way the request is parsed, checked and answered as before; keep-alive, the
//! request limit per connection, pipelining and `Connection: close` on shutdown carry
//! over as Pingora's loop carries them ([`HttpPersistentSettings`]). The wait for the
//! next request is timed by the connection's own timer (`server.keepalive_timeout`,
//! [`super::connections`]); it is not a request in flight, so it does not hold up the
//! process's exit at shutdown (`lifecycle::ExitWhenIdle`).

use super::Gateway;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::{HttpProxy, ProxyHttp, Session};
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType};
use std::sync::Arc;

/// The longest request line looked at: one longer goes to Pingora's app, which refuses
/// or serves it as it would any (Pingora's own first read is this size too).
pub const LINE: usize = 4096;

/// Pingora's keep-alive setting for a connection's first request (seconds), as its
/// HTTP app sets it.
const KEEPALIVE: u64 = 60;

/// Serve the HTTP/1 connection `stream` until it closes.
pub async fn connection(
    proxy: &Arc<HttpProxy<Gateway>>,
    gw: &Gateway,
    mut stream: Stream,
    shutdown: &ShutdownWatch,
) {
    let options = proxy.server_options();
    // What the previous request leaves the next: keep-alive, reuses left, pipelining.
    let mut settings: Option<HttpPersistentSettings> = None;
    // The bytes read of the next request (read past the previous one's body, or here).
    let mut next = BytesMut::new();
    loop {
        if !request_line(&mut stream, &mut next).await {
            return;
        }
        let mut taken = taken(&next);
        while taken == Taken::NeedsHead {
            // A GET or DELETE is decided on its whole head (an `Upgrade` goes to the
            // adapter through Pingora's proxy path).
            taken = match read_more(&mut stream, &mut next).await {
                true => self::taken(&next),
                false => Taken::Pingora,
            };
        }
        if taken == Taken::Pingora {
            let mut session = ServerSession::new_http1(stream);
            prepare(&mut session, settings, options, shutdown);
            session.set_pipelined_prefix(handed_over(&mut next));
            return pingora(proxy, session, shutdown).await;
        }
        let mut session = Session::new_h1(stream);
        prepare(&mut session.downstream_session, settings, options, shutdown);
        let prefix = first_bytes(&mut next);
        session.downstream_session.set_pipelined_prefix(prefix);
        // Boxed: a request's state (Pingora's head parser keeps its 256 header slots,
        // 8 KiB, in its future) is held only while a request is served, not by every
        // connection waiting for one, or served by Pingora's app, all its life.
        match in_box(|| request(gw, session, shutdown)).await {
            Some((s, kept, ahead)) => {
                stream = s;
                settings = Some(kept);
                next = ahead.unwrap_or_default();
            }
            None => return,
        }
    }
}

/// The future `make` builds, built in its heap allocation: `Box::pin(future)` builds it
/// on the stack and copies all of it (10 KiB, most of it not yet used) into the box,
/// about 10,000 instructions per request (`Box::write`: Rust 1.87).
pub(super) fn in_box<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Read more of a head whose request line `buf` holds: false when the client closed (or
/// the read failed) first, or the head is longer than [`HEAD`] bytes.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> bool {
    if buf.len() >= HEAD {
        return false;
    }
    matches!(
        std::future::poll_fn(|cx| read_some(stream, buf, cx)).await,
        Ok(n) if n > 0
    )
}

/// Read until `buf` holds the request line (or [`LINE`] bytes, or the client stopped
/// sending); false when the connection closed with nothing of a next request read.
async fn request_line(stream: &mut Stream, buf: &mut BytesMut) -> bool {
    while !buf.contains(&b'\n') && buf.len() < LINE {
        match std::future::poll_fn(|cx| read_some(stream, buf, cx)).await {
            Ok(0) => return !buf.is_empty(),
            Ok(_) => {}
            Err(e) => {
                log::debug!("client connection closed while waiting for a request: {e}");
                return false;
            }
        }
    }
    true
}

/// One read into `buf`, whose room ([`LINE`]) is allocated for the read only: while the
/// client has sent nothing yet the buffer is given back, so a connection waiting for its
/// next request holds no buffer (the listener's own read buffer is off, `app.rs`). The
/// upstream's answer is read the same way.
fn read_some(
    stream: &mut Stream,
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<usize>> {
    crate::upstream::answer::read_some(stream, buf, LINE, cx)
}

/// The bytes read so far, taken out of `next`, for Pingora's app, in a buffer of their
/// own size: Pingora parses the head in the buffer it is given and keeps it as long as
/// the request lasts (a GET stream, a WebSocket: hours), and `next` has room for a
/// [`LINE`] whether or not the read filled it. Taken, not copied: the loop's buffer
/// would otherwise wait in the connection's future until the request ends.
fn handed_over(next: &mut BytesMut) -> BytesMut {
    BytesMut::from(&std::mem::take(next)[..])
}

/// The bytes read of a request this loop serves, taken out of `next`, for Pingora's
/// session: a POST's buffer as read, a GET stream's or DELETE's bytes
/// [`handed_over`] in a buffer of their own size.
fn first_bytes(next: &mut BytesMut) -> BytesMut {
    match next.starts_with(b"POST ") {
        true => std::mem::take(next),
        false => handed_over(next),
    }
}

/// Who serves the request starting `buf` ([`taken`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// This loop.
    Here,
    /// Pingora's HTTP app, for the rest of the connection.
    Pingora,
    /// A GET or DELETE whose head is not all read yet.
    NeedsHead,
}

/// Who serves the request starting `buf`: this loop serves POSTs (but to a legacy SSE
/// client's message endpoint), GET streams and DELETEs; Pingora's app what the client
/// adapter takes over through Pingora's proxy path (a WebSocket upgrade, a legacy SSE
/// client's endpoints) and anything else (OPTIONS, a head this loop does not read whole).
/// Decided on the raw head; both paths parse and check the request the same way, so
/// this only chooses who runs the hooks.
pub fn taken(buf: &[u8]) -> Taken {
    if let Some(rest) = buf.strip_prefix(b"POST ") {
        let target = &rest[..target_end(rest)];
        return match super::clients::is_legacy_message(target) {
            true => Taken::Pingora,
            false => Taken::Here,
        };
    }
    if !buf.starts_with(b"GET ") && !buf.starts_with(b"DELETE ") {
        return Taken::Pingora;
    }
    let mut fields = [httparse::EMPTY_HEADER; FIELDS];
    let mut head = httparse::Request::new(&mut fields);
    match head.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() < HEAD => return Taken::NeedsHead,
        // Too long, too many fields, or not a head Pingora would parse: its answer.
        _ => return Taken::Pingora,
    }
    let path = head.path.unwrap_or_default().as_bytes();
    let adapter = super::clients::is_legacy_stream(&path[..target_end(path)])
        || head
            .headers
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case("upgrade"));
    match adapter {
        true => Taken::Pingora,
        false => Taken::Here,
    }
}

/// The request target's path: up to its query, fragment or the end of the line.
fn target_end(rest: &[u8]) -> usize {
    rest.iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n' | b'?' | b'#'))
        .unwrap_or(rest.len())
}

/// The longest GET or DELETE head this loop reads to decide ([`taken`]); a longer one
/// goes to Pingora's app, which serves it the same way.
pub const HEAD: usize = 16 << 10;

/// The most fields a GET or DELETE head this loop decides on may have.
const FIELDS: usize = 64;

/// The settings of Pingora's HTTP app for a request: the previous request's, or for the
/// first one its defaults; no keep-alive once shutdown has begun.
fn prepare(
    session: &mut ServerSession,
    settings: Option<HttpPersistentSettings>,
    options: Option<&HttpServerOptions>,
    shutdown: &ShutdownWatch,
) {
    match settings {
        Some(kept) => kept.apply_to_session(session),
        None => {
            session.set_keepalive(Some(KEEPALIVE));
            session.set_keepalive_reuses_remaining(options.and_then(|o| o.keepalive_request_limit));
        }
    }
    if *shutdown.borrow() {
        session.set_keepalive(None);
    }
}

/// The rest of the connection in Pingora's HTTP app, as its own loop runs it.
async fn pingora(
    proxy: &Arc<HttpProxy<Gateway>>,
    session: ServerSession,
    shutdown: &ShutdownWatch,
) {
    let mut served = proxy.process_new_http(session, shutdown).await;
    while let Some((stream, settings)) = served.map(|r| r.consume()) {
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        served = proxy.process_new_http(session, shutdown).await;
    }
}

/// The connection back, with what its next request keeps, once the request answered
/// leaves it reusable; and the bytes read past it.
type Reusable = (Stream, HttpPersistentSettings, Option<BytesMut>);

/// One request: its head read, then the hooks Pingora's proxy calls for a request the
/// gateway answers from `request_filter`.
async fn request(gw: &Gateway, mut session: Session, shutdown: &ShutdownWatch) -> Option<Reusable> {
    let downstream = &mut session.downstream_session;
    match downstream.read_request().await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(mut e) => {
            e.as_down();
            if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                // The client stream's wrapper writes the gateway's JSON-RPC error
                // instead of Pingora's empty 400 (`admission::watched`).
                log::debug!("request head refused: {e}");
                // Boxed, as the other error paths (`failed`): 1.3 KB.
                if let Err(e) = Box::pin(downstream.respond_error(400)).await {
                    log::debug!("could not send the 400: {e}");
                }
            } else {
                log::warn!("could not read a request head: {e}");
            }
            downstream.shutdown().await;
            return None;
        }
    }
    if *shutdown.borrow() {
        // Reading the head set keep-alive from the request's own fields.
        session.set_keepalive(None);
    }
    let mut ctx = gw.new_ctx();
    if let Err(e) = gw.early_request_filter(&mut session, &mut ctx).await {
        return Box::pin(failed(gw, session, ctx, e, "Fail to early filter request:")).await;
    }
    match gw.request_filter(&mut session, &mut ctx).await {
        Ok(true) => {
            gw.logging(&mut session, None, &mut ctx).await;
            // Boxed (4.5 KB: Pingora's `finish`, which drains what is left of the
            // request): inline, every request's future would be that much larger for as
            // long as the request lasts (a GET stream: hours), for a step only its end
            // takes.
            in_box(|| reusable(session)).await
        }
        Ok(false) => {
            // Every request here is answered by the filter (only the client adapter's
            // go on to Pingora's proxy, and `taken` leaves those to Pingora's app).
            let e = Error::explain(
                ErrorType::InternalError,
                "a request the gateway's own loop took was left for Pingora's proxy path",
            );
            Box::pin(failed(gw, session, ctx, e, "Fail to filter request:")).await
        }
        Err(e) => Box::pin(failed(gw, session, ctx, e, "Fail to filter request:")).await,
    }
}

/// An error of a hook: answered by `fail_to_proxy`, logged, counted (as Pingora's proxy
/// handles it). Its callers box it (8 KB, with the session and context it takes): an
/// error's path pays the allocation, and every request's future (which a GET stream holds
/// for hours) stays the size of the success path's.
async fn failed(
    gw: &Gateway,
    mut session: Session,
    mut ctx: super::ctx::RequestCtx,
    e: Box<Error>,
    context: &str,
) -> Option<Reusable> {
    let answer = gw.fail_to_proxy(&mut session, &e, &mut ctx).await;
    if !gw.suppress_error_log(&session, &ctx, &e) {
        log::error!(
            "{context} {e}, status: {}, {}",
            answer.error_code,
            gw.request_summary(&session, &ctx)
        );
    }
    gw.logging(&mut session, Some(&e), &mut ctx).await;
    session.downstream_session.on_proxy_failure(e);
    match answer.can_reuse_downstream {
        true => reusable(session).await,
        false => None,
    }
}

/// The answer finished; the connection back when it can be reused.
async fn reusable(session: Session) -> Option<Reusable> {
    let settings = HttpPersistentSettings::for_session(&session.downstream_session);
    let stream = session.downstream_session.finish().await.ok().flatten()?;
    let (stream, ahead) = stream.into_parts();
    Some((stream, settings, ahead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_get_streams_and_deletes_are_served_here_but_the_adapters_and_other_methods() {
        let is = |head: &[u8], want: Taken| {
            assert_eq!(taken(head), want, "{}", String::from_utf8_lossy(head));
        };
        for head in [
            &b"POST /mcp HTTP/1.1\r\n"[..],
            b"POST /mcp?x=1 HTTP/1.1\r\n",
            b"POST /mcp/files HTTP/1.1\r\nHost: a\r\n",
            b"POST /message/x HTTP/1.1\r\n",
            b"POST /mcp",
            b"GET /mcp HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
            b"GET /mcp/sse/x?a=/sse HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /liveness HTTP/1.1\r\n\r\n",
            b"DELETE /mcp HTTP/1.1\r\nHost: a\r\nMcp-Session-Id: s\r\n\r\n",
            b"DELETE /mcp HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        ] {
            is(head, Taken::Here);
        }
        for head in [
            &b"GET /mcp HTTP/1.1\r\n"[..],
            b"GET /mcp HTTP/1.1\r\nHost: a\r\n",
            b"DELETE /mcp HTTP/1.1\r\nHost: a\r\n\r",
        ] {
            is(head, Taken::NeedsHead);
        }
        let long = [&b"GET /mcp HTTP/1.1\r\nX: "[..], &[b'a'; HEAD]].concat();
        let many = [
            &b"GET /mcp HTTP/1.1\r\n"[..],
            &b"X: 1\r\n".repeat(FIELDS + 1),
            b"\r\n",
        ]
        .concat();
        for head in [
            &b"GET /mcp HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..],
            b"GET /mcp HTTP/1.1\r\nupgrade: h2c\r\n\r\n",
            b"GET /mcp/sse HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /mcp/sse?x=1 HTTP/1.1\r\n\r\n",
            b"DELETE /mcp/sse HTTP/1.1\r\n\r\n",
            b"GET /mcp HTTP/1.1\r\nBad Field: x\r\n\r\n",
            &long,
            &many,
            b"OPTIONS /mcp HTTP/1.1\r\n",
            b"post /mcp HTTP/1.1\r\n",
            b"get /mcp HTTP/1.1\r\n\r\n",
            b"POST /mcp/message HTTP/1.1\r\n",
            b"POST /mcp/message?session_id=1 HTTP/1.1\r\n",
            b"POST /mcp/message#x HTTP/1.1\r\n",
            b"POST http://a/mcp/message HTTP/1.1\r\n",
            b"\r\nPOST /mcp HTTP/1.1\r\n",
            b"",
        ] {
            is(head, Taken::Pingora);
        }
    }

    #[test]
    fn a_request_handed_to_pingora_keeps_only_its_own_bytes() {
        let head = &b"GET /mcp HTTP/1.1\r\nHost: a\r\n\r\n"[..];
        let mut next = BytesMut::with_capacity(LINE);
        next.extend_from_slice(head);
        let prefix = handed_over(&mut next);
        assert_eq!(&prefix[..], head);
        assert_eq!(prefix.capacity(), head.len());
        // The loop keeps no buffer while Pingora's app serves the connection.
        assert_eq!(next.capacity(), 0);
    }

    #[test]
    fn a_stream_keeps_only_its_own_bytes_and_a_post_the_buffer_as_read() {
        for (head, own) in [
            (&b"GET /mcp HTTP/1.1\r\nHost: a\r\n\r\n"[..], true),
            (b"DELETE /mcp HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (b"POST /mcp HTTP/1.1\r\nHost: a\r\n", false),
        ] {
            let mut next = BytesMut::with_capacity(LINE);
            next.extend_from_slice(head);
            let prefix = first_bytes(&mut next);
            assert_eq!(&prefix[..], head);
            // The loop keeps no buffer while the request is served (a stream: hours).
            assert_eq!(next.capacity(), 0, "{}", String::from_utf8_lossy(head));
            let capacity = if own { head.len() } else { LINE };
            assert_eq!(
                prefix.capacity(),
                capacity,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn a_connection_waiting_for_its_next_request_holds_no_buffer() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted));
        let mut buf = BytesMut::new();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Nothing sent yet: the read waits, and the buffer it read into is given back.
        assert!(read_some(&mut stream, &mut buf, &mut cx).is_pending());
        assert_eq!(buf.capacity(), 0);
        client.write_all(b"POST /mcp HTTP/1.1\r\n").await.unwrap();
        assert!(request_line(&mut stream, &mut buf).await);
        assert_eq!(&buf[..], b"POST /mcp HTTP/1.1\r\n");
        // Once the client closes with nothing more sent, there is no next request.
        drop(client);
        let mut next = BytesMut::new();
        assert!(!request_line(&mut stream, &mut next).await);
    }
}
