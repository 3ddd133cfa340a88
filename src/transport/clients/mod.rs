//! Clients that do not speak Streamable HTTP: WebSocket (`GET <route>` with `Upgrade:
//! websocket`) and the legacy HTTP+SSE transport (`GET <route>/sse`, then `POST
//! <route>/message?sessionId=…`), on any route or virtual server (docs/transports.md).
//!
//! The proxy checks such a request as any other (host, `Origin`, authentication, route
//! policies, rate limits, stream caps) and then hands it, with a [`Ticket`] naming the
//! [`Caller`], to this adapter on a Unix socket of its own ([`Clients`]). The adapter
//! turns each message the client sends into a Streamable HTTP request to the gateway
//! itself, on its internal listener ([`loopback`]), carrying the ticket instead of the
//! client's credentials: every message is inspected, authorized, rate-limited, metered
//! and logged exactly like a POST, and reaches passthrough routes, stdio servers and
//! virtual servers the same way. The answers go back on the client's connection.
//!
//! * [`session`]: one client connection as an MCP session towards the gateway (the
//!   upstream session, its GET stream, cancellation, the DELETE at the end);
//! * [`websocket`]: frames (`mcp` subprotocol, close codes, pings, close `1001` on
//!   shutdown);
//! * [`legacy_sse`]: the `endpoint` event, the message POSTs, the sessions they name.

pub mod legacy_sse;
pub mod loopback;
pub mod session;
pub mod websocket;

use crate::live::Live;
use crate::security::auth::Identity;
use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The header that names a request's [`Caller`] between the proxy, this adapter and the
/// gateway's internal listener (never honoured on a client's own request).
pub const CALLER: http::HeaderName = http::HeaderName::from_static("x-mcp-gateway-caller");

pub type Body = BoxBody<Bytes, Infallible>;

/// Who a client connection belongs to, as the proxy found when it admitted it.
#[derive(Debug)]
pub struct Caller {
    /// The authenticated client (`None` on a route without authentication).
    pub identity: Option<Identity>,
    /// The client's address as the gateway decided it (rate limits, logs, forwarding).
    pub ip: Option<IpAddr>,
    /// The route or virtual server path the connection was opened on.
    pub route: Arc<str>,
    /// The client's `Host`, sent again with each message (`preserve_host` groups).
    pub host: Option<HeaderValue>,
    /// When the credential the connection was opened with stops being valid (a JWT's
    /// `exp` and its leeway, Unix seconds; `u64::MAX`: never): later messages are
    /// refused. A legacy SSE client's message POSTs carry a credential of their own, which
    /// moves it on.
    pub expires: std::sync::atomic::AtomicU64,
}

impl Caller {
    /// Has the credential the connection was admitted with expired (`now`: Unix seconds)?
    pub fn expired(&self, now: u64) -> bool {
        now > self.expires.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A later credential of the same client (a legacy SSE message POST's) is valid until
    /// `other`'s expiry.
    pub fn renewed_by(&self, other: &Caller) {
        let until = other.expires.load(std::sync::atomic::Ordering::Relaxed);
        self.expires
            .fetch_max(until, std::sync::atomic::Ordering::Relaxed);
    }

    /// Do both belong to the same client (a legacy SSE session refuses anyone else)?
    pub fn same_client(&self, other: &Caller) -> bool {
        match (&self.identity, &other.identity) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.method == b.method
                    && a.rule == b.rule
                    && a.subject == b.subject
                    && a.client_id == b.client_id
            }
            _ => false,
        }
    }
}

/// The callers of the client connections the proxy has admitted, by ticket.
static CALLERS: once_cell::sync::Lazy<DashMap<u128, Arc<Caller>>> =
    once_cell::sync::Lazy::new(DashMap::new);

/// A caller's place in [`CALLERS`] for as long as the proxy's request for it lives (a
/// WebSocket's tunnel, an SSE stream, a message POST): dropped, the caller is gone.
#[derive(Debug)]
pub struct Ticket {
    id: u128,
    /// What the proxy admitted.
    pub kind: Kind,
}

/// What a request to the adapter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET <route>` with `Upgrade: websocket`.
    WebSocket,
    /// `GET <route>/sse`.
    LegacyStream,
    /// `POST <route>/message?sessionId=…`.
    LegacyMessage,
}

impl Ticket {
    pub fn issue(caller: Caller, kind: Kind) -> Ticket {
        Ticket::share(Arc::new(caller), kind)
    }

    /// Another ticket for the same caller (the adapter's own, for as long as the
    /// connection's session lives: its last message, the DELETE, goes after the proxy's
    /// request for the connection has ended).
    pub fn share(caller: Arc<Caller>, kind: Kind) -> Ticket {
        let id: u128 = rand::random();
        CALLERS.insert(id, caller);
        Ticket { id, kind }
    }

    /// The value of the [`CALLER`] header.
    pub fn header(&self) -> String {
        format!("{:032x}", self.id)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        CALLERS.remove(&self.id);
    }
}

/// The caller a [`CALLER`] header names, while its connection lives.
pub fn caller(header: &[u8]) -> Option<Arc<Caller>> {
    let text = std::str::from_utf8(header).ok()?;
    let id = u128::from_str_radix(text, 16).ok()?;
    CALLERS.get(&id).map(|c| c.value().clone())
}

/// The adapter's socket and the gateway's internal listener, in the process's runtime
/// folder (created mode 0700: only this user reaches them).
#[derive(Debug, Clone)]
pub struct Sockets {
    /// Where the proxy hands client connections to this adapter.
    pub adapter: PathBuf,
    /// Where the adapter sends the gateway each message ([`loopback`]).
    pub gateway: PathBuf,
}

static SOCKETS: once_cell::sync::OnceCell<Sockets> = once_cell::sync::OnceCell::new();

impl Sockets {
    /// This process's sockets (the runtime folder is chosen by the first config loaded).
    pub fn of(config: &crate::config::Config) -> &'static Sockets {
        SOCKETS.get_or_init(|| {
            let dir = crate::config::stdio::socket_dir(config);
            Sockets {
                adapter: dir.join("clients.sock"),
                gateway: dir.join("gateway.sock"),
            }
        })
    }

    /// Once [`Sockets::of`] was called (at start).
    pub fn get() -> Option<&'static Sockets> {
        SOCKETS.get()
    }
}

/// Set once shutdown begins: connections finish what is in flight, then close.
static CLOSING: once_cell::sync::Lazy<tokio::sync::watch::Sender<bool>> =
    once_cell::sync::Lazy::new(|| tokio::sync::watch::channel(false).0);

/// Resolves once the gateway is shutting down (or upgrading).
pub async fn closing() {
    let mut rx = closing_watch();
    crate::transport::stdio::until(&mut rx, |c| *c).await;
}

/// `true` once the gateway is shutting down.
pub fn closing_watch() -> tokio::sync::watch::Receiver<bool> {
    CLOSING.subscribe()
}

/// The adapter: bound before the proxy listens, served by a background service.
pub struct Clients {
    listener: std::sync::Mutex<Option<std::os::unix::net::UnixListener>>,
    pub live: Arc<Live>,
}

impl Clients {
    /// Bind the adapter's socket (at start, before the runtimes exist).
    pub fn prepare(live: Arc<Live>) -> Result<Clients, String> {
        let sockets = Sockets::of(&live.loaded().config);
        let dir = sockets.adapter.parent().expect("a socket in a folder");
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("server.runtime_dir: cannot create {}: {e}", dir.display()))?;
        sweep_stale(dir);
        let _ = std::fs::remove_file(&sockets.adapter);
        let listener = std::os::unix::net::UnixListener::bind(&sockets.adapter).map_err(|e| {
            format!(
                "server.runtime_dir: cannot listen on {}: {e}",
                sockets.adapter.display()
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{}: {e}", sockets.adapter.display()))?;
        Ok(Clients {
            listener: std::sync::Mutex::new(Some(listener)),
            live,
        })
    }

    /// Remove the sockets, and the runtime folder once it is empty (the process is
    /// ending: after the stdio servers' bridges are gone).
    pub fn remove_sockets() {
        if let Some(s) = Sockets::get() {
            let _ = std::fs::remove_file(&s.adapter);
            let _ = std::fs::remove_file(&s.gateway);
            if let Some(dir) = s.adapter.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// How long a runtime folder must have stayed unchanged before [`sweep_stale`] looks at
/// it: a gateway starting beside this one (tests start many in one folder) has created
/// its folder but may not listen on its sockets yet.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Remove the runtime folders that gateways killed earlier left beside `own` (a gateway
/// that exits removes its own): a folder `mcp-gateway-<pid>` of this user, other than
/// this process's, unchanged for [`STALE_AFTER`], that holds only sockets and at least
/// one, none of which anything listens on. Told by connecting, not by the pid, which
/// may be another process's now or belong to another pid namespace sharing the folder.
fn sweep_stale(own: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let (Some(base), Some(own_name)) = (own.parent(), own.file_name()) else {
        return;
    };
    let Ok(uid) = std::fs::metadata(own).map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_runtime = name
            .to_str()
            .and_then(|n| n.strip_prefix("mcp-gateway-"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if !is_runtime || name == own_name {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if !meta.is_dir() || meta.uid() != uid || !settled {
            continue;
        }
        let Some(sockets) = dead_sockets(&path) else {
            continue;
        };
        for socket in &sockets {
            let _ = std::fs::remove_file(socket);
        }
        if std::fs::remove_dir(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        log::info!(
            "removed {removed} runtime folder(s) of gateways that did not exit cleanly from {}",
            base.display()
        );
    }
}

/// The sockets in `dir` when it holds nothing else, at least one, and every one of them
/// refuses a connection; `None` otherwise (a live one, a file, or one that cannot be told).
fn dead_sockets(dir: &std::path::Path) -> Option<Vec<std::path::PathBuf>> {
    use std::os::unix::fs::FileTypeExt;
    let mut dead = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        if !entry.file_type().ok()?.is_socket() {
            return None;
        }
        let path = entry.path();
        if !refuses(&path) {
            return None;
        }
        dead.push(path);
    }
    (!dead.is_empty()).then_some(dead)
}

/// Whether nothing listens on the Unix socket `path` (a non-blocking connect: a live
/// listener with a full backlog answers `EAGAIN`, which counts as live).
fn refuses(path: &std::path::Path) -> bool {
    use socket2::{Domain, SockAddr, Socket, Type};
    let Ok(addr) = SockAddr::unix(path) else {
        return false;
    };
    let Ok(socket) = Socket::new(Domain::UNIX, Type::STREAM, None) else {
        return false;
    };
    if socket.set_nonblocking(true).is_err() {
        return false;
    }
    matches!(socket.connect(&addr), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// One request the proxy handed over.
async fn serve(live: Arc<Live>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let found = req.headers().get(CALLER).and_then(|v| caller(v.as_bytes()));
    let Some(caller) = found else {
        return Ok(crate::transport::stdio::http::error(
            403,
            &serde_json::Value::Null,
            crate::error::code::FORBIDDEN,
            "not a connection the gateway admitted",
        ));
    };
    let answer = if req.headers().contains_key(http::header::UPGRADE) {
        websocket::accept(&live, caller, req)
    } else if req.method() == http::Method::GET {
        legacy_sse::open(caller)
    } else {
        legacy_sse::message(&live, caller, req).await
    };
    Ok(answer)
}

#[async_trait::async_trait]
impl BackgroundService for Clients {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.listener.lock().expect("not poisoned").take() else {
            return;
        };
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("WebSocket and legacy SSE clients: {e}");
                return;
            }
        };
        loop {
            let stream = tokio::select! {
                s = listener.accept() => match s {
                    Ok((s, _)) => s,
                    Err(e) => {
                        log::warn!("WebSocket and legacy SSE clients: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let live = self.live.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| serve(live.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    log::debug!("client adapter connection: {e}");
                }
            });
        }
        // Shutdown (or an upgrade's handoff) has begun: every connection finishes what it
        // has in flight and closes (WebSocket: 1001), so the process can end.
        let _ = CLOSING.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A folder under `base` holding a socket nothing listens on (bound, then closed),
    /// dated `age` ago.
    fn folder(base: &Path, name: &str, age: std::time::Duration) -> PathBuf {
        let dir = base.join(name);
        std::fs::create_dir(&dir).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.join("gateway.sock")).unwrap());
        age_folder(&dir, age);
        dir
    }

    fn age_folder(dir: &Path, age: std::time::Duration) {
        let then = std::time::SystemTime::now() - age;
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }

    #[test]
    fn only_settled_folders_of_dead_sockets_are_swept() {
        let base = std::env::temp_dir().join(format!("sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let old = STALE_AFTER * 2;
        let own = folder(&base, "mcp-gateway-1", old);
        let stale = folder(&base, "mcp-gateway-2", old);
        // Something listens on it: a gateway still running (or draining after an upgrade).
        let live = base.join("mcp-gateway-3");
        std::fs::create_dir(&live).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(live.join("clients.sock")).unwrap();
        age_folder(&live, old);
        // Changed lately: a gateway starting beside this one, not listening yet.
        let fresh = folder(&base, "mcp-gateway-4", std::time::Duration::ZERO);
        // Something else in it: not the gateway's to remove.
        let mixed = folder(&base, "mcp-gateway-5", old);
        std::fs::write(mixed.join("notes"), "x").unwrap();
        age_folder(&mixed, old);
        // Not a runtime folder's name.
        let foreign = folder(&base, "mcp-gateway-x", old);
        let empty = base.join("mcp-gateway-6");
        std::fs::create_dir(&empty).unwrap();
        age_folder(&empty, old);

        sweep_stale(&own);

        assert!(!stale.exists(), "a folder of dead sockets is removed");
        for kept in [&own, &live, &fresh, &mixed, &foreign, &empty] {
            assert!(kept.exists(), "{} is kept", kept.display());
        }
        assert!(
            own.join("gateway.sock").exists(),
            "this process's own folder is untouched"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
