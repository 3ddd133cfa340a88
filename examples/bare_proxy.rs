//! A bare Pingora reverse proxy, for `scripts/bench`: the floor under the gateway.
//!
//! One `ProxyHttp` whose only hook is `upstream_peer`, returning one fixed plain-HTTP
//! upstream; every other hook is Pingora's default (no filters, no body reads, no
//! header changes), on one worker thread (or `--threads N`). Whatever the gateway costs
//! beyond this proxy is the gateway's own work; whatever this proxy costs beyond nginx
//! is Pingora's.
//!
//! Flags: `--listen 127.0.0.1:PORT` and `--upstream 127.0.0.1:PORT` (both IP:port), and
//! `--threads N` (default `1`): the worker threads of the proxy service, as the
//! gateway's `server.threads`, and `--read-buffer BYTES`: the read buffer of each
//! accepted connection (Pingora's default, `DEFAULT_L4_READ_BUFFER_SIZE`, is 64 KiB; `0`
//! reads unbuffered), to measure what a connection costs in memory.
//!
//! ```sh
//! cargo run --release --example bare_proxy -- --listen 127.0.0.1:6188 --upstream 127.0.0.1:3001
//! ```

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;

/// Sends every request to one upstream address over plain HTTP/1.1.
struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn addr_flag(args: &[String], name: &str) -> SocketAddr {
    let value = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1));
    match value.map(|v| v.parse::<SocketAddr>()) {
        Some(Ok(addr)) => addr,
        _ => {
            eprintln!("error: {name} IP:PORT is required (e.g. {name} 127.0.0.1:6188)");
            std::process::exit(2);
        }
    }
}

/// `name N`, if given: N at least `min`.
fn number_flag(args: &[String], name: &str, min: usize) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    match args.get(i + 1).map(|v| v.parse::<usize>()) {
        Some(Ok(n)) if n >= min => Some(n),
        _ => {
            eprintln!("error: {name} needs a number of at least {min}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: bare_proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N] \
             [--read-buffer BYTES]"
        );
        return;
    }
    let listen = addr_flag(&args, "--listen");
    let upstream = addr_flag(&args, "--upstream");
    let threads = number_flag(&args, "--threads", 1).unwrap_or(1);
    let read_buffer = number_flag(&args, "--read-buffer", 0);

    let conf = ServerConf {
        threads,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Bare { upstream },
        "bare proxy",
    );
    match read_buffer {
        None => proxy.add_tcp(&listen.to_string()),
        Some(bytes) => proxy.add_listener(
            ListenerConfig::tcp(listen.to_string())
                .l4_buffer(L4BufferSettings::default().read(bytes)),
        ),
    }
    proxy.threads = Some(threads);
    server.add_service(proxy);

    println!("listening on {listen}");
    server.run_forever()
}
