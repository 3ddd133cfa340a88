//! A tiny MCP server to put behind the gateway (`scripts/run` starts it for you).
//!
//! It speaks Streamable HTTP on `http://127.0.0.1:3001/mcp`, statelessly and with plain
//! JSON responses where it can, so a single request needs no `initialize` handshake and
//! no session. Through the gateway's default config (port 8080), list its tools with:
//!
//! ```sh
//! curl -s http://127.0.0.1:8080/mcp -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
//! ```
//!
//! Tools:
//! - `echo {text}` returns `text`;
//! - `add {a, b}` returns `a + b`;
//! - `countdown {seconds}` sends a progress notification each second (when the request
//!   carries a `progressToken`), then returns `"done"`; the response is then an SSE stream.
//!
//! Flags: `--host` (default `127.0.0.1`), `--port` (default `3001`, or `DEMO_PORT`; `0`
//! picks a free port). It prints `listening on HOST:PORT` once it accepts connections.
//!
//! ```sh
//! cargo run -p mcp-demo-server -- --port 3001
//! ```
//!
//! Its own crate, with only what it needs (rmcp, hyper, Tokio), so that building it does
//! not build the gateway's test and benchmark dependencies.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::signal::unix::{signal, SignalKind};

use rmcp::{
    handler::server::wrapper::Parameters,
    model::{ProgressNotificationParam, RequestMetaObject, ServerCapabilities, ServerConfig},
    schemars, tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    },
    ErrorData, Peer, RoleServer, ServerHandler,
};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: f64,
    b: f64,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct CountdownArgs {
    /// How many seconds to count down (at most 60).
    seconds: u32,
}

#[derive(Clone)]
struct Demo;

#[tool_router]
impl Demo {
    #[tool(description = "Return the given text unchanged")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Add two numbers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Count down, one progress notification per second, then say done")]
    async fn countdown(
        &self,
        Parameters(CountdownArgs { seconds }): Parameters<CountdownArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<String, ErrorData> {
        let seconds = seconds.min(60);
        let token = meta.get_progress_token();
        for done in 1..=seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(token) = &token {
                let left = seconds - done;
                let param = ProgressNotificationParam::new(token.clone(), f64::from(done))
                    .with_total(f64::from(seconds))
                    .with_message(format!("{left} to go"));
                let _ = peer.notify_progress(param).await;
            }
        }
        Ok("done".to_string())
    }
}

#[tool_handler]
impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions("A demo server: echo, add, countdown")
    }
}

/// `--name VALUE` or `--name=VALUE` from the command line.
fn flag(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let prefixed = format!("--{name}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == &long {
            args.get(i + 1).cloned()
        } else {
            arg.strip_prefix(&prefixed).map(str::to_string)
        }
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: demo_server [--host 127.0.0.1] [--port 3001 (or DEMO_PORT; 0 = any)]");
        return Ok(());
    }
    let host = flag(&args, "host").unwrap_or_else(|| "127.0.0.1".to_string());
    let port: u16 = flag(&args, "port")
        .or_else(|| std::env::var("DEMO_PORT").ok())
        .map(|p| p.parse().expect("--port must be a number from 0 to 65535"))
        .unwrap_or(3001);

    // Stateless: every POST stands alone, so one curl is enough. Loopback `Host` values
    // are accepted by default (DNS-rebinding protection); add the bind host if it is another.
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true);
    if !config.allowed_hosts.contains(&host) {
        config.allowed_hosts.push(host.clone());
    }
    let service = Arc::new(StreamableHttpService::new(
        || Ok(Demo),
        LocalSessionManager::default().into(),
        config,
    ));

    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    // SIGINT (Ctrl-C) is caught from before `listening` is printed: none is lost.
    let mut interrupt = signal(SignalKind::interrupt())?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;

    // HTTP/1.1 connections until Ctrl-C; then stop accepting and let open ones finish.
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = interrupt.recv() => break,
        };
        let service = service.clone();
        let handler = service_fn(move |request| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(route(&service, request).await) }
        });
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), handler);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// `/mcp` (and below it) goes to the MCP service; any other path is a 404.
async fn route(
    service: &StreamableHttpService<Demo, LocalSessionManager>,
    request: Request<hyper::body::Incoming>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let path = request.uri().path();
    if path == "/mcp" || path.starts_with("/mcp/") {
        return service.handle(request).await;
    }
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}
