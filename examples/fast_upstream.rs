//! The fastest MCP server we can put behind a proxy, for `scripts/bench`.
//!
//! A single-threaded HTTP/1.1 server (hyper on a `current_thread` Tokio runtime) that
//! reads each `POST /mcp` body and answers with the same small JSON-RPC result of a
//! `tools/call`, as `application/json`, over keep-alive connections. It parses nothing:
//! the point is to make the upstream as cheap as possible so that a benchmark measures
//! the proxy in front of it. Other requests get `404`, except `GET /mcp` (below). An
//! `initialize` also gets an `Mcp-Session-Id` (`fast-session`), so the gateway's
//! sealed-session path can be measured too, and a request carrying one gets it back on
//! its answer, as the MCP SDKs' servers send their session id on every answer.
//!
//! The requests a virtual server of the gateway sends its members on its own
//! (`initialize`, the lists, `ping`) carry string ids `"mcp-gateway-…"` and are matched to
//! their answers by id: those get their id back, in an answer shaped for the method
//! (`initialize`: a version and the tools capability; `tools/list`: three tools; others:
//! an empty result). Calls the virtual server routes keep the client's id (`1`) and get
//! the fixed answer.
//!
//! Every other call gets the fixed answer under the request's id when that is a number
//! (`scripts/bench`'s WebSocket load, `ws_load`, numbers its requests and waits for each
//! one's answer): `1`, wrk's, is the fixed answer itself, sent without an allocation.
//!
//! A `GET /mcp` is the standing SSE stream of MCP's HTTP transport: it is answered
//! `200 text/event-stream` with one comment event (`: ok`), and the stream then stays
//! open, silent, until the client goes away (for the connection-scale mode of
//! `scripts/bench`). The POST path does not change: the two bodies are the two sides of
//! one `Either`, chosen per response without an allocation.
//!
//! Flags: `--port N` (default `0`: any free port). It binds `127.0.0.1` and prints
//! `listening on 127.0.0.1:PORT` once it accepts connections.
//!
//! `--list-delay-us N`: answer each `tools/list` (the client's or a virtual server's)
//! N microseconds late, as a real server that builds its list would; calls stay instant.
//!
//! `--stdio`: the same server on stdin/stdout (one JSON-RPC message per line), for the
//! gateway's stdio servers: `initialize` and the lists answered as above, every other
//! request with the fixed result under its own id, notifications ignored.
//!
//! ```sh
//! cargo run --release --example fast_upstream -- --port 3001
//! ```

use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The answer to every call.
const RESULT: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;

/// The first (and only) event of a standing stream: an SSE comment.
const SSE_FIRST: &[u8] = b": ok\n\n";

/// A standing SSE stream: [`SSE_FIRST`], then nothing, for as long as the connection
/// lasts. It never wakes its task again; hyper ends it when it reads the client's EOF.
struct Stream {
    sent: bool,
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(SSE_FIRST)))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

type Answer = Either<Full<Bytes>, Stream>;

fn plain(body: Full<Bytes>) -> Response<Answer> {
    Response::new(Either::Left(body))
}

async fn answer(req: Request<Incoming>) -> Result<Response<Answer>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/mcp" {
        let mut res = Response::new(Either::Right(Stream { sent: false }));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        res.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        return Ok(res);
    }
    if req.method() != Method::POST || req.uri().path() != "/mcp" {
        let mut res = plain(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::NOT_FOUND;
        return Ok(res);
    }
    let session = req.headers().get("mcp-session-id").cloned();
    // Read the whole request body, as a real server does. Answering before it arrived
    // would make hyper close the connection afterwards (it does not wait to drain a body
    // that is still on its way), and a proxy that sends headers and body in separate
    // writes would then find some pooled connections closed under it.
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut res = plain(Full::new(Bytes::new()));
            *res.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(res);
        }
    };
    let delay = *LIST_DELAY;
    if !delay.is_zero() && contains(&body, b"\"tools/list\"") {
        tokio::time::sleep(delay).await;
    }
    let answer = match own_request(&body) {
        Some(own) => Bytes::from(own),
        None if contains(&body, b"\"tools/list\"") => Bytes::from(list_answer(&body)),
        None => match numeric_id(&body) {
            Some(id) if id != b"1" => Bytes::from(result_with_id(id)),
            _ => Bytes::from_static(RESULT),
        },
    };
    let mut res = plain(Full::new(answer));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if body.windows(12).any(|w| w == b"\"initialize\"") {
        res.headers_mut()
            .insert("mcp-session-id", HeaderValue::from_static("fast-session"));
    } else if let Some(session) = session {
        res.headers_mut().insert("mcp-session-id", session);
    }
    Ok(res)
}

/// `--list-delay-us`.
static LIST_DELAY: std::sync::LazyLock<std::time::Duration> = std::sync::LazyLock::new(|| {
    let args: Vec<String> = std::env::args().collect();
    let us = args
        .iter()
        .position(|a| a == "--list-delay-us")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::time::Duration::from_micros(us)
});

/// A client's `tools/list` (id 1, as every measured request): the three tools.
fn list_answer(_body: &[u8]) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":1,"result":{TOOLS}}}"#).into_bytes()
}

/// The tools of `tools/list`.
const TOOLS: &str = r#"{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"search","inputSchema":{"type":"object"}},{"name":"fetch","inputSchema":{"type":"object"}}]}"#;

/// The request's id when it is a number (its digits), found as the first `"id":`.
fn numeric_id(body: &[u8]) -> Option<&[u8]> {
    const MARK: &[u8] = b"\"id\":";
    let start = memchr::memmem::find(body, MARK)? + MARK.len();
    let rest = &body[start..];
    let skip = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &rest[skip..];
    let len = rest.iter().position(|b| !b.is_ascii_digit())?;
    (len > 0).then(|| &rest[..len])
}

/// [`RESULT`] under another id.
fn result_with_id(id: &[u8]) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"jsonrpc":"2.0","id":"#;
    let tail = &RESULT[HEAD.len() + 1..];
    let mut out = Vec::with_capacity(RESULT.len() + id.len());
    out.extend_from_slice(HEAD);
    out.extend_from_slice(id);
    out.extend_from_slice(tail);
    out
}

fn contains(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|w| w == needle)
}

/// The answer to a request of the gateway's own (see the module's doc), with its id.
fn own_request(body: &[u8]) -> Option<Vec<u8>> {
    const MARK: &[u8] = b"\"id\":\"mcp-gateway-";
    let start = body.windows(MARK.len()).position(|w| w == MARK)? + 5;
    let len = body[start + 1..].iter().position(|&b| b == b'"')? + 2;
    let id = std::str::from_utf8(&body[start..start + len]).ok()?;
    let result = if contains(body, b"\"initialize\"") {
        r#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"fast","version":"1"}}"#
    } else if contains(body, b"\"tools/list\"") {
        TOOLS
    } else {
        "{}"
    };
    Some(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#).into_bytes())
}

fn port_flag() -> u16 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: fast_upstream [--port N (0 = any free port)] [--list-delay-us N] [--stdio]"
        );
        std::process::exit(0);
    }
    match args.iter().position(|a| a == "--port") {
        None => 0,
        Some(i) => match args.get(i + 1).map(|p| p.parse::<u16>()) {
            Some(Ok(port)) => port,
            _ => {
                eprintln!("error: --port needs a number from 0 to 65535");
                std::process::exit(2);
            }
        },
    }
}

/// `--stdio`: answer each line read on stdin with one line on stdout.
fn stdio() -> std::io::Result<()> {
    use std::io::BufRead;
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.split(b'\n') {
        let line = line?;
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&line) else {
            continue;
        };
        let (Some(id), Some(method)) = (msg.get("id"), msg.get("method").and_then(|m| m.as_str()))
        else {
            continue;
        };
        let answer = match own_request(&line) {
            Some(a) if method == "initialize" || method.ends_with("/list") => a,
            _ => {
                let mut v: serde_json::Value = serde_json::from_slice(RESULT).expect("valid JSON");
                v["id"] = id.clone();
                serde_json::to_vec(&v).expect("JSON serializes")
            }
        };
        out.write_all(&answer)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    if std::env::args().any(|a| a == "--stdio") {
        return stdio();
    }
    let port = port_flag();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
        drop(out);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                // Out of file descriptors and the like: keep serving the open connections.
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
