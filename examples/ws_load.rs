//! A closed-loop WebSocket load generator, for the `websocket` target of `scripts/bench`
//! (wrk speaks only HTTP).
//!
//! Opens `--connections C` WebSockets to one MCP endpoint (`ws://IP:PORT/PATH`, each
//! offering the subprotocol `mcp`; a server that does not take it fails the handshake),
//! all of them before the clock starts. Each connection then sends the benchmark's
//! `tools/call` as one text frame and waits for the frame that answers it (the first
//! without a `method` whose `id` is the request's; notifications and anything else on the
//! way are skipped), then sends the next: one request in flight per connection, as wrk's
//! connections. Ids count up from 1 on every connection; the frame is the body given
//! (`--body FILE`, `--body-json JSON`; default: scripts/bench's) byte for byte, with only
//! the value of its `id` replaced.
//!
//! `--warmup D` (default `0s`) runs the same loop unmeasured first, on the same
//! connections; then `--duration D` (e.g. `5s`) is measured: an answer counts when its
//! request was sent in the window and answered before it ends (the requests still in
//! flight at the end are dropped, as wrk does). `--threads N` (default 1): Tokio worker
//! threads (one: a `current_thread` runtime). `--timeout D` (default `10s`): how long a
//! request, and an open, may take.
//!
//! Errors are counted, not fatal: a failed connect or handshake (one before the clock
//! starts counts too; retried after 100 ms), a failed send, a connection that closes or
//! fails (reopened), an answer that is a JSON-RPC `error`, a request unanswered within
//! the timeout (the connection goes on; its late answer is skipped by its id). The first
//! of each kind is printed with its message. At the end it prints, on stdout, the line
//! scripts/bench reads from wrk (its Lua `done` hook), with latencies in microseconds:
//!
//! ```text
//! RESULT requests duration_us p50_us p99_us connect read write status timeout
//! ```
//!
//! (connect: failed connects and handshakes; read: closed or failed connections; write:
//! failed sends; status: error answers; timeout: unanswered requests), and on stderr the
//! same in words: requests/s, p50 and p99 in ms, every kind of error, and the errors of
//! the warm-up apart. `--check` instead sends one request on one connection, prints the
//! answer frame, and exits `0` if it is a JSON-RPC `result` (`1` if not).
//!
//! ```sh
//! cargo run --release --example ws_load -- --url ws://127.0.0.1:8080/mcp \
//!     --connections 32 --duration 10s --warmup 2s
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The benchmark's request (scripts/bench's `BODY`).
const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;

type Ws = WebSocketStream<TcpStream>;

struct Args {
    addr: SocketAddr,
    url: String,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
    timeout: Duration,
    /// The body around its id's value.
    head: String,
    tail: String,
    check: bool,
}

/// What went wrong.
#[derive(Clone, Copy)]
enum Kind {
    Connect,
    Handshake,
    Send,
    Closed,
    ErrorAnswer,
    Timeout,
}

const KINDS: [(Kind, &str); 6] = [
    (Kind::Connect, "connect"),
    (Kind::Handshake, "handshake"),
    (Kind::Send, "send"),
    (Kind::Closed, "closed"),
    (Kind::ErrorAnswer, "error answer"),
    (Kind::Timeout, "timeout"),
];

/// The first error of each kind has been printed.
static REPORTED: [AtomicBool; 6] = [const { AtomicBool::new(false) }; 6];

fn report(kind: Kind, message: &str) {
    let k = kind as usize;
    if !REPORTED[k].swap(true, Ordering::Relaxed) {
        eprintln!("first {} error: {message}", KINDS[k].1);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: ws_load --url ws://IP:PORT/PATH [--connections C (32)] [--duration D (10s)] \
         [--warmup D (0s)] [--threads N (1)] [--timeout D (10s)] \
         [--body FILE | --body-json JSON] [--check]"
    );
    std::process::exit(2);
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        usage();
    }
    let value = |name: &str| {
        args.iter().position(|a| a == name).map(|i| {
            args.get(i + 1)
                .map(String::as_str)
                .unwrap_or_else(|| usage())
        })
    };
    let number = |name: &str, default: usize| match value(name) {
        None => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => fail(&format!("{name} needs a positive number")),
        },
    };
    let duration = |name: &str, default: &str| {
        let v = value(name).unwrap_or(default);
        humantime::parse_duration(v)
            .unwrap_or_else(|e| fail(&format!("{name} {v}: {e} (e.g. 5s, 500ms)")))
    };
    let Some(url) = value("--url") else { usage() };
    let uri: http::Uri = url
        .parse()
        .unwrap_or_else(|e| fail(&format!("--url {url}: {e}")));
    if uri.scheme_str() != Some("ws") {
        fail("--url must be ws://IP:PORT/PATH");
    }
    let addr = uri
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
        .unwrap_or_else(|| fail("--url needs an IP:PORT authority (e.g. 127.0.0.1:8080)"));
    let body = match (value("--body"), value("--body-json")) {
        (Some(_), Some(_)) => fail("--body and --body-json are one or the other"),
        (Some(file), None) => {
            std::fs::read_to_string(file).unwrap_or_else(|e| fail(&format!("--body {file}: {e}")))
        }
        (None, Some(json)) => json.to_string(),
        (None, None) => BODY.to_string(),
    };
    let (head, tail) = split_at_id(body.trim()).unwrap_or_else(|m| fail(&m));
    let duration_of = duration("--duration", "10s");
    if duration_of.is_zero() {
        fail("--duration must be more than 0");
    }
    Args {
        addr,
        url: url.to_string(),
        connections: number("--connections", 32),
        threads: number("--threads", 1),
        duration: duration_of,
        warmup: duration("--warmup", "0s"),
        timeout: duration("--timeout", "10s"),
        head,
        tail,
        check: args.iter().any(|a| a == "--check"),
    }
}

/// The body before and after the value of its `id`: it must be a JSON-RPC request.
fn split_at_id(body: &str) -> Result<(String, String), String> {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        method: Option<IgnoredAny>,
    }
    let req: Request<'_> =
        serde_json::from_str(body).map_err(|e| format!("the body is not a JSON object: {e}"))?;
    let (Some(id), Some(_)) = (req.id, req.method) else {
        return Err("the body must be a JSON-RPC request (a method and an id)".into());
    };
    // The raw value borrows from the body: its place in it.
    let start = id.get().as_ptr() as usize - body.as_ptr() as usize;
    let end = start + id.get().len();
    Ok((body[..start].to_string(), body[end..].to_string()))
}

/// The frame of request `id`.
fn frame(args: &Args, id: u64) -> Message {
    let id = id.to_string();
    let mut text = String::with_capacity(args.head.len() + id.len() + args.tail.len());
    text.push_str(&args.head);
    text.push_str(&id);
    text.push_str(&args.tail);
    Message::text(text)
}

/// What a frame from the server is to request `id`.
enum Answer {
    Result,
    Error(String),
    /// Not its answer (a notification, a server request, an older answer).
    Other,
}

fn answer_to(text: &str, id: u64) -> Answer {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        method: Option<IgnoredAny>,
        result: Option<IgnoredAny>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    let Ok(f) = serde_json::from_str::<Frame<'_>>(text) else {
        return Answer::Other;
    };
    if f.method.is_some() || f.id.and_then(|i| i.get().parse::<u64>().ok()) != Some(id) {
        return Answer::Other;
    }
    match (f.result, f.error) {
        (Some(_), None) => Answer::Result,
        (_, Some(e)) => Answer::Error(e.get().to_string()),
        (None, None) => Answer::Error(format!("neither result nor error: {text}")),
    }
}

/// Open one WebSocket (connect, then the handshake offering `mcp`).
async fn open(args: &Args) -> Result<Ws, (Kind, String)> {
    let stream = TcpStream::connect(args.addr)
        .await
        .map_err(|e| (Kind::Connect, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut req = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| (Kind::Handshake, e.to_string()))?;
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mcp"));
    let (ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| (Kind::Handshake, e.to_string()))?;
    Ok(ws)
}

/// One exchange: send request `id`, wait (until `deadline`) for its answer.
enum Outcome {
    Result,
    Error(Kind, String),
    /// The connection is no use any more.
    Lost(Kind, String),
    /// `deadline` came first.
    Late,
}

async fn exchange(ws: &mut Ws, args: &Args, id: u64, deadline: Instant) -> Outcome {
    if let Err(e) = ws.send(frame(args, id)).await {
        return Outcome::Lost(Kind::Send, e.to_string());
    }
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => return Outcome::Late,
            Ok(None) => {
                return Outcome::Lost(Kind::Closed, "the server ended the connection".into())
            }
            Ok(Some(Err(e))) => return Outcome::Lost(Kind::Closed, e.to_string()),
            Ok(Some(Ok(Message::Text(text)))) => match answer_to(text.as_str(), id) {
                Answer::Result => return Outcome::Result,
                Answer::Error(e) => return Outcome::Error(Kind::ErrorAnswer, e),
                Answer::Other => {}
            },
            Ok(Some(Ok(Message::Close(close)))) => {
                let why = close.map_or("no code".to_string(), |c| {
                    format!("{} {}", c.code, c.reason)
                });
                return Outcome::Lost(Kind::Closed, format!("closed by the server: {why}"));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// One connection's tally.
#[derive(Default)]
struct Tally {
    /// Latencies of the measured answers, in microseconds.
    latencies: Vec<u32>,
    errors: [u64; 6],
    warmup_errors: u64,
}

/// One connection's closed loop: the warm-up until `measured`, then measured until `end`.
/// `ws`: `None` when its first open failed.
async fn connection(args: Arc<Args>, mut ws: Option<Ws>, measured: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let count = |tally: &mut Tally, kind: Kind, message: &str, at: Instant| {
        report(kind, message);
        if at >= measured {
            tally.errors[kind as usize] += 1;
        } else {
            tally.warmup_errors += 1;
        }
    };
    let mut id = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let Some(socket) = ws.as_mut() else {
            match timeout_at((now + args.timeout).min(end), open(&args)).await {
                Ok(Ok(s)) => ws = Some(s),
                Ok(Err((kind, message))) => {
                    count(&mut tally, kind, &message, now);
                    tokio::time::sleep_until(
                        (Instant::now() + Duration::from_millis(100)).min(end),
                    )
                    .await;
                }
                Err(_) if Instant::now() >= end => break,
                Err(_) => count(
                    &mut tally,
                    Kind::Timeout,
                    "an open took longer than --timeout",
                    now,
                ),
            }
            continue;
        };
        id += 1;
        let sent = Instant::now();
        let deadline = (sent + args.timeout).min(end);
        let outcome = exchange(socket, &args, id, deadline).await;
        let done = Instant::now();
        match outcome {
            Outcome::Result => {
                if sent >= measured && done <= end {
                    let us = (done - sent).as_micros().min(u32::MAX as u128) as u32;
                    tally.latencies.push(us);
                }
            }
            Outcome::Error(kind, message) => count(&mut tally, kind, &message, sent),
            Outcome::Lost(kind, message) => {
                count(&mut tally, kind, &message, sent);
                ws = None;
            }
            Outcome::Late if done >= end => break,
            Outcome::Late => count(
                &mut tally,
                Kind::Timeout,
                &format!("no answer within {:?}", args.timeout),
                sent,
            ),
        }
    }
    if let Some(mut ws) = ws {
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    }
    tally
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn check(args: &Args) -> i32 {
    let mut ws = match tokio::time::timeout(args.timeout, open(args)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err((kind, message))) => {
            eprintln!("error: {}: {message}", KINDS[kind as usize].1);
            return 1;
        }
        Err(_) => {
            eprintln!("error: no WebSocket within {:?}", args.timeout);
            return 1;
        }
    };
    if let Err(e) = ws.send(frame(args, 1)).await {
        eprintln!("error: send: {e}");
        return 1;
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        match timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => match answer_to(text.as_str(), 1) {
                Answer::Other => continue,
                answer => {
                    println!("{}", text.as_str());
                    let _ = ws.close(None).await;
                    return if matches!(answer, Answer::Result) {
                        0
                    } else {
                        1
                    };
                }
            },
            Ok(Some(Ok(Message::Close(c)))) => {
                eprintln!("error: closed by the server: {c:?}");
                return 1;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                eprintln!("error: {e}");
                return 1;
            }
            Ok(None) => {
                eprintln!("error: the server ended the connection");
                return 1;
            }
            Err(_) => {
                eprintln!("error: no answer within {:?}", args.timeout);
                return 1;
            }
        }
    }
}

async fn run(args: Arc<Args>) -> i32 {
    if args.check {
        return check(&args).await;
    }
    // Every connection is open before the clock starts.
    let opens: Vec<_> = (0..args.connections)
        .map(|_| {
            let args = args.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(args.timeout, open(&args)).await {
                    Ok(res) => res,
                    Err(_) => Err((
                        Kind::Timeout,
                        format!("no WebSocket within {:?}", args.timeout),
                    )),
                }
            })
        })
        .collect();
    // A connection that failed to open is one of the run's errors (and opens again).
    let mut sockets = Vec::with_capacity(args.connections);
    let mut errors = [0u64; 6];
    for task in opens {
        match task.await.expect("an open task") {
            Ok(ws) => sockets.push(Some(ws)),
            Err((kind, message)) => {
                report(kind, &message);
                errors[kind as usize] += 1;
                sockets.push(None);
            }
        }
    }
    let start = Instant::now();
    let measured = start + args.warmup;
    let end = measured + args.duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(connection(args.clone(), ws, measured, end)))
        .collect();
    let mut latencies = Vec::new();
    let mut warmup_errors = 0;
    for task in tasks {
        let t = task.await.expect("a connection task");
        latencies.extend_from_slice(&t.latencies);
        for (all, e) in errors.iter_mut().zip(t.errors) {
            *all += e;
        }
        warmup_errors += t.warmup_errors;
    }
    latencies.sort_unstable();
    let n = latencies.len();
    let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
    let dur_us = args.duration.as_micros();
    let e = |k: Kind| errors[k as usize];
    println!(
        "RESULT {n} {dur_us} {p50} {p99} {} {} {} {} {}",
        e(Kind::Connect) + e(Kind::Handshake),
        e(Kind::Closed),
        e(Kind::Send),
        e(Kind::ErrorAnswer),
        e(Kind::Timeout)
    );
    let detail: Vec<String> = KINDS
        .iter()
        .map(|(kind, name)| format!("{name} {}", errors[*kind as usize]))
        .collect();
    let total: u64 = errors.iter().sum();
    eprintln!(
        "ws_load: {n} answers in {:.1} s over {} connections: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms; \
         errors {total} ({}){}",
        args.duration.as_secs_f64(),
        args.connections,
        n as f64 / args.duration.as_secs_f64(),
        f64::from(p50) / 1000.0,
        f64::from(p99) / 1000.0,
        detail.join(", "),
        if !args.warmup.is_zero() {
            format!("; in the warm-up: {warmup_errors} errors")
        } else {
            String::new()
        }
    );
    0
}

fn main() -> std::io::Result<()> {
    let args = Arc::new(parse_args());
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let code = runtime.block_on(run(args));
    drop(runtime);
    std::process::exit(code);
}
