//! Many client connections held open at once, for the connection-scale mode of
//! `scripts/bench`.
//!
//! Opens `--connections N` HTTP/1.1 connections to one MCP endpoint, at most
//! `--concurrency C` of them being opened at any moment, each with hyper's client
//! connection API (`hyper::client::conn::http1`), and keeps every one of them:
//!
//! - `--mode post`: each connection sends the benchmark's `tools/call` POST once. The
//!   answer must be `200` and its body, read whole, a JSON-RPC `result`. The connection
//!   then stays open, idle (keep-alive).
//! - `--mode sse`: each connection sends `GET` with `Accept: text/event-stream`, the
//!   standing SSE stream of MCP's HTTP transport. The answer must be `200
//!   text/event-stream` and its first event (up to the blank line that ends it) must
//!   arrive. The stream then stays open.
//! - `--mode ws`: each connection opens a WebSocket on the endpoint (`GET` with `Upgrade:
//!   websocket`, offering the subprotocol `mcp`), sends the same `tools/call` as one text
//!   frame, and the first text frame that answers it must be a JSON-RPC `result` with its
//!   id. The socket then stays open, idle, still read by a task of its own, so the
//!   gateway's pings are answered (tungstenite queues the pong while reading and sends it
//!   on the next read) and a close from the server is seen.
//!
//! Each open gets `--timeout SECS` (default 10) from connect to the checked answer. When
//! all are done it prints one line:
//!
//! ```text
//! opened N: ok K, errors E (connect a, handshake b, send c, status d, body e, timeout f)
//! ```
//!
//! then `holding K connections` and waits: for stdin to close, SIGINT or SIGTERM. Then it
//! prints `released: K held, X still open, Y closed by the server meanwhile` (a connection
//! counts as closed when its hyper connection task, or its WebSocket's reading task, has
//! ended) and exits, closing them all. The first error of each kind is printed with its
//! message. `--url` is `http://IP:PORT/PATH`; `--mode ws` takes `ws://` too (the same
//! endpoint either way).
//!
//! ```sh
//! cargo run --release --example conn_scale -- --url http://127.0.0.1:8080/mcp \
//!     --mode sse --connections 1000 --concurrency 100
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The benchmark's request (scripts/bench): the same body and headers.
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
const PROTOCOL: &str = "2025-11-25";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Post,
    Sse,
    Ws,
}

struct Args {
    addr: SocketAddr,
    uri: Uri,
    mode: Mode,
    connections: usize,
    concurrency: usize,
    timeout: Duration,
}

/// What went wrong with one connection.
#[derive(Clone, Copy)]
enum Kind {
    Connect,
    Handshake,
    Send,
    Status,
    Body,
    Timeout,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::Connect, "connect"),
    (Kind::Handshake, "handshake"),
    (Kind::Send, "send"),
    (Kind::Status, "status"),
    (Kind::Body, "body"),
    (Kind::Timeout, "timeout"),
];

/// One open connection: its hyper connection task (a WebSocket: the task reading it),
/// and what keeps the exchange alive (the idle sender of a keep-alive connection, the
/// unfinished body of a stream).
struct Held {
    conn: JoinHandle<()>,
    _sender: Option<http1::SendRequest<Full<Bytes>>>,
    _stream: Option<Incoming>,
}

fn usage() -> ! {
    eprintln!(
        "usage: conn_scale --url http://IP:PORT/PATH --mode post|sse|ws --connections N \
         [--concurrency C (200)] [--timeout SECS (10)]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        usage();
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let number = |name: &str, default: Option<usize>| match value(name) {
        None => default.unwrap_or_else(|| usage()),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("error: {name} needs a positive number");
                std::process::exit(2);
            }
        },
    };
    let uri: Uri = match value("--url").map(str::parse) {
        Some(Ok(uri)) => uri,
        _ => usage(),
    };
    let mode = match value("--mode") {
        Some("post") => Mode::Post,
        Some("sse") => Mode::Sse,
        Some("ws") => Mode::Ws,
        _ => usage(),
    };
    let addr = match (uri.scheme_str(), uri.authority()) {
        (Some("ws"), Some(a)) if mode == Mode::Ws => match a.as_str().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                eprintln!("error: --url needs an IP:PORT authority (e.g. 127.0.0.1:8080)");
                std::process::exit(2);
            }
        },
        (Some("http"), Some(a)) => match a.as_str().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                eprintln!("error: --url needs an IP:PORT authority (e.g. 127.0.0.1:8080)");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("error: --url must be http://IP:PORT/PATH");
            std::process::exit(2);
        }
    };
    Args {
        addr,
        uri,
        mode,
        connections: number("--connections", None),
        concurrency: number("--concurrency", Some(200)),
        timeout: Duration::from_secs(number("--timeout", Some(10)) as u64),
    }
}

fn request(args: &Args) -> Request<Full<Bytes>> {
    let builder = Request::builder()
        .uri(args.uri.path())
        .header("host", args.addr.to_string())
        .header("mcp-protocol-version", PROTOCOL);
    let built = match args.mode {
        Mode::Post => builder
            .method("POST")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(Full::new(Bytes::from_static(BODY.as_bytes()))),
        Mode::Sse => builder
            .method("GET")
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new())),
        Mode::Ws => unreachable!("a WebSocket is opened by open_ws"),
    };
    built.expect("a valid request")
}

/// Open one WebSocket, check the answer to its `tools/call`, and keep reading it.
async fn open_ws(args: &Args) -> Result<Held, (Kind, String)> {
    let stream = TcpStream::connect(args.addr)
        .await
        .map_err(|e| (Kind::Connect, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{}{}", args.addr, args.uri.path());
    let mut req = url
        .into_client_request()
        .map_err(|e| (Kind::Handshake, e.to_string()))?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        hyper::header::HeaderValue::from_static("mcp"),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(res) => {
                (Kind::Status, format!("answered {}", res.status()))
            }
            e => (Kind::Handshake, e.to_string()),
        })?;
    futures::SinkExt::send(&mut ws, Message::text(BODY))
        .await
        .map_err(|e| (Kind::Send, e.to_string()))?;
    loop {
        let text = match futures::StreamExt::next(&mut ws).await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(c))) => {
                return Err((Kind::Body, format!("closed before the answer: {c:?}")))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((Kind::Body, e.to_string())),
            None => return Err((Kind::Body, "the socket ended before the answer".into())),
        };
        let Ok(m) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            return Err((Kind::Body, format!("not JSON: {}", text.as_str())));
        };
        // A notification or a request of the server's: not the answer.
        if m.get("method").is_some() {
            continue;
        }
        if m.get("id") != Some(&serde_json::json!(1)) || m.get("result").is_none() {
            return Err((Kind::Body, format!("no result: {}", text.as_str())));
        }
        break;
    }
    // Read until the socket ends: pings are answered, a close is seen.
    let conn = tokio::spawn(async move {
        while let Some(Ok(m)) = futures::StreamExt::next(&mut ws).await {
            if m.is_close() {
                break;
            }
        }
    });
    Ok(Held {
        conn,
        _sender: None,
        _stream: None,
    })
}

/// Open one connection and check its answer.
async fn open(args: &Args) -> Result<Held, (Kind, String)> {
    if args.mode == Mode::Ws {
        return open_ws(args).await;
    }
    let stream = TcpStream::connect(args.addr)
        .await
        .map_err(|e| (Kind::Connect, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| (Kind::Handshake, e.to_string()))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender
        .send_request(request(args))
        .await
        .map_err(|e| (Kind::Send, e.to_string()))?;
    if res.status() != StatusCode::OK {
        return Err((Kind::Status, format!("answered {}", res.status())));
    }
    match args.mode {
        Mode::Post => {
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| (Kind::Body, e.to_string()))?
                .to_bytes();
            if !body.windows(8).any(|w| w == b"\"result\"") {
                return Err((
                    Kind::Body,
                    format!("no result: {}", String::from_utf8_lossy(&body)),
                ));
            }
            Ok(Held {
                conn,
                _sender: Some(sender),
                _stream: None,
            })
        }
        Mode::Sse => {
            let is_sse = res
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            if !is_sse {
                return Err((
                    Kind::Status,
                    format!("content-type {:?}", res.headers().get("content-type")),
                ));
            }
            let mut body = res.into_body();
            let mut seen = Vec::new();
            // The first event ends at the first blank line.
            while !seen.windows(2).any(|w| w == b"\n\n") {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            seen.extend_from_slice(data);
                        }
                    }
                    Some(Err(e)) => return Err((Kind::Body, e.to_string())),
                    None => return Err((Kind::Body, "the stream ended before an event".into())),
                }
            }
            Ok(Held {
                conn,
                _sender: Some(sender),
                _stream: Some(body),
            })
        }
        Mode::Ws => unreachable!("a WebSocket is opened by open_ws"),
    }
}

/// Until stdin closes, SIGINT or SIGTERM.
async fn released() {
    let stdin = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stdin => {}
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() -> std::io::Result<()> {
    let args = Arc::new(parse_args());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(args.concurrency));
        let reported: Arc<[AtomicBool; 6]> = Arc::new(Default::default());
        let mut tasks = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            let permit = gate.clone().acquire_owned().await.expect("open semaphore");
            let args = args.clone();
            tasks.push(tokio::spawn(async move {
                let res = match tokio::time::timeout(args.timeout, open(&args)).await {
                    Ok(res) => res,
                    Err(_) => Err((Kind::Timeout, format!("no answer in {:?}", args.timeout))),
                };
                drop(permit);
                res
            }));
        }
        let mut held = Vec::with_capacity(args.connections);
        let mut errors = [0usize; 6];
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok(Ok(h)) => held.push(h),
                Ok(Err((kind, message))) => {
                    let k = kind as usize;
                    errors[k] += 1;
                    if !reported[k].swap(true, Ordering::Relaxed) {
                        eprintln!("first {} error: {message}", KINDS[k].1);
                    }
                }
                Err(e) => panic!("an open task failed: {e}"),
            }
            if (i + 1) % 1000 == 0 {
                eprintln!("  {} of {} done", i + 1, args.connections);
            }
        }
        let total: usize = errors.iter().sum();
        let detail: Vec<String> = KINDS
            .iter()
            .map(|(kind, name)| format!("{name} {}", errors[*kind as usize]))
            .collect();
        println!(
            "opened {}: ok {}, errors {} ({}) in {:.1} s",
            args.connections,
            held.len(),
            total,
            detail.join(", "),
            started.elapsed().as_secs_f64()
        );
        println!("holding {} connections", held.len());
        released().await;
        let closed = held.iter().filter(|h| h.conn.is_finished()).count();
        println!(
            "released: {} held, {} still open, {} closed by the server meanwhile",
            held.len(),
            held.len() - closed,
            closed
        );
        // The reading tasks hold the WebSockets: end them (a hyper connection ends with
        // its sender).
        if args.mode == Mode::Ws {
            for h in &held {
                h.conn.abort();
            }
        }
        drop(held);
        Ok(())
    })
}
