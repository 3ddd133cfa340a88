//! The fastest MCP server we can put behind a proxy, for `scripts/bench`.
//!
//! A single-threaded HTTP/1.1 server (hyper on a `current_thread` Tokio runtime) that
//! reads each `POST /mcp` body and answers with the same small JSON-RPC result of a
//! `tools/call`, as `application/json`, over keep-alive connections. It parses nothing:
//! the point is to make the upstream as cheap as possible so that a benchmark measures
//! the proxy in front of it. Any other method or path gets `404`. An `initialize` also
//! gets an `Mcp-Session-Id` (`fast-session`), so the gateway's sealed-session path can
//! be measured too.
//!
//! Flags: `--port N` (default `0`: any free port). It binds `127.0.0.1` and prints
//! `listening on 127.0.0.1:PORT` once it accepts connections.
//!
//! ```sh
//! cargo run --release --example fast_upstream -- --port 3001
//! ```

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The answer to every call.
const RESULT: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || req.uri().path() != "/mcp" {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::NOT_FOUND;
        return Ok(res);
    }
    // Read the whole request body, as a real server does. Answering before it arrived
    // would make hyper close the connection afterwards (it does not wait to drain a body
    // that is still on its way), and a proxy that sends headers and body in separate
    // writes would then find some pooled connections closed under it.
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(res);
        }
    };
    let mut res = Response::new(Full::new(Bytes::from_static(RESULT)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if body.windows(12).any(|w| w == b"\"initialize\"") {
        res.headers_mut()
            .insert("mcp-session-id", HeaderValue::from_static("fast-session"));
    }
    Ok(res)
}

fn port_flag() -> u16 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: fast_upstream [--port N (0 = any free port)]");
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

fn main() -> std::io::Result<()> {
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
