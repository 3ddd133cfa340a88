//! Upstream connections for the exchange ([`super::exchange`]): new ones from Pingora's
//! connector (TCP, Unix sockets, TLS), idle ones kept per worker thread.
//!
//! Pingora's own pool watches every released connection with a task spawned for it, and
//! with one runtime per worker thread (`server.work_stealing: false`) it spawns that
//! task on a thread chosen at random: per request a spawn, a cross-thread wake-up when
//! the connection is picked up again, a lock, and under load connections lost to the
//! race between the two threads ("failed to acquire reusable stream", a new connection
//! opened instead). Here a thread's idle connections are its own, in a plain list no
//! other thread touches: taking one is a pop and a non-blocking read that says whether
//! the server closed it; one timer per thread looks at the list every second and closes
//! what the servers closed or what idled past its timeout.

use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::protocols::Stream;
use pingora::upstreams::peer::{HttpPeer, Peer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;
use tokio::io::AsyncReadExt;

/// How often each thread looks at its idle connections.
const SWEEP: Duration = Duration::from_secs(1);
/// An idle connection's longest stay when its peer sets no idle timeout.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// New and idle connections to the upstream servers (a clone shares them).
#[derive(Clone)]
pub struct Connector(Arc<Inner>);

/// A connection [`Connector::get`] gave.
pub struct Pooled {
    pub stream: Stream,
    /// The peer's reuse hash (its address and TLS settings), to give it back under.
    pub key: u64,
    /// Kept idle from an earlier exchange (not a new connection).
    pub reused: bool,
}

struct Inner {
    connect: TransportConnector,
    idle: ThreadLocal<RefCell<Idle>>,
    /// Idle connections each thread keeps (`0`: none, every exchange connects anew).
    max_idle: usize,
}

#[derive(Default)]
struct Idle {
    /// By the peer's reuse hash (address, TLS settings), oldest first.
    by_peer: HashMap<u64, Vec<Parked>>,
    count: usize,
}

struct Parked {
    stream: Stream,
    /// When it is closed if not taken.
    until: Instant,
}

impl Connector {
    /// `max_idle`: the idle connections each worker thread keeps, to all servers.
    pub fn new(max_idle: usize) -> Self {
        Connector(Arc::new(Inner {
            connect: TransportConnector::new(Some(ConnectorOptions::new(0))),
            idle: ThreadLocal::new(),
            max_idle,
        }))
    }

    /// An idle connection to `peer` this thread kept (the most recent first), or a new one.
    pub async fn get(&self, peer: &HttpPeer) -> pingora::Result<Pooled> {
        let key = peer.reuse_hash();
        if let Some(stream) = self.reused(key) {
            return Ok(Pooled {
                stream,
                key,
                reused: true,
            });
        }
        // Boxed: Pingora's connect future (8.3 KB, sized by its TLS handshake) would
        // otherwise be part of every request's future for as long as the request lasts
        // (an SSE stream: hours), though only a new connection ever awaits it.
        let stream = Box::pin(self.0.connect.new_stream(peer)).await?;
        Ok(Pooled {
            stream,
            key,
            reused: false,
        })
    }

    fn reused(&self, key: u64) -> Option<Stream> {
        let mut idle = self.0.idle.get()?.borrow_mut();
        let now = Instant::now();
        loop {
            let parked = idle.by_peer.get_mut(&key)?.pop()?;
            idle.count -= 1;
            let Parked { mut stream, until } = parked;
            if until > now && open(&mut stream) {
                return Some(stream);
            }
        }
    }

    /// Keep `stream` (an answer read to its end, both sides keeping it alive) for the
    /// next exchange with the peer of `key` ([`Pooled::key`]) on this thread, for at most
    /// `idle_timeout`.
    pub fn release(&self, mut stream: Stream, key: u64, idle_timeout: Option<Duration>) {
        if self.0.max_idle == 0 || !open(&mut stream) {
            return;
        }
        let mut idle = self
            .0
            .idle
            .get_or(|| {
                self.sweep_this_thread();
                RefCell::default()
            })
            .borrow_mut();
        if idle.count >= self.0.max_idle {
            // Full: the oldest connection to this peer makes room, else this one closes.
            match idle.by_peer.get_mut(&key) {
                Some(list) if !list.is_empty() => {
                    list.remove(0);
                    idle.count -= 1;
                }
                _ => return,
            }
        }
        let until = Instant::now() + idle_timeout.unwrap_or(MAX_IDLE);
        idle.by_peer
            .entry(key)
            .or_default()
            .push(Parked { stream, until });
        idle.count += 1;
    }

    /// Start this thread's timer: every [`SWEEP`], close its idle connections that
    /// their server closed or that idled past their time. It runs on the calling
    /// thread's runtime (with one runtime per thread, on this thread) and ends with the
    /// connector. With `server.work_stealing: true` the timer may move and sweep
    /// another thread's list instead; every connection is still checked when taken.
    fn sweep_this_thread(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let inner: Weak<Inner> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP).await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                if let Some(idle) = inner.idle.get() {
                    idle.borrow_mut().sweep(Instant::now());
                }
            }
        });
    }

    /// How many idle connections this thread keeps (for tests).
    pub fn idle_here(&self) -> usize {
        self.0.idle.get().map_or(0, |i| i.borrow().count)
    }
}

impl Idle {
    fn sweep(&mut self, now: Instant) {
        let mut count = 0;
        self.by_peer.retain(|_, list| {
            list.retain_mut(|p| p.until > now && open(&mut p.stream));
            count += list.len();
            !list.is_empty()
        });
        self.count = count;
    }
}

/// Whether an idle connection is still open: a read that would block says so; an end of
/// stream, an error, or bytes the server sent unasked (the connection is then out of
/// step) say it is not.
fn open(stream: &mut Stream) -> bool {
    use futures::FutureExt;
    let mut byte = [0u8; 1];
    // `unconstrained`: the cooperative budget must not make a ready read look pending.
    tokio::task::unconstrained(stream.read(&mut byte))
        .now_or_never()
        .is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn server() -> (tokio::net::TcpListener, HttpPeer) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, HttpPeer::new(addr, false, String::new()))
    }

    #[tokio::test]
    async fn a_released_connection_is_reused_and_a_closed_one_is_not() {
        let (listener, peer) = server().await;
        let pool = Connector::new(4);
        let first = pool.get(&peer).await.unwrap();
        assert!(!first.reused);
        let (mut accepted, _) = listener.accept().await.unwrap();
        pool.release(first.stream, first.key, None);
        assert_eq!(pool.idle_here(), 1);
        let again = pool.get(&peer).await.unwrap();
        assert!(again.reused);
        assert_eq!(pool.idle_here(), 0);
        pool.release(again.stream, again.key, None);
        // The server closes it while idle: the next exchange connects anew.
        accepted.shutdown().await.unwrap();
        drop(accepted);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pool.get(&peer).await.unwrap().reused);
        assert_eq!(pool.idle_here(), 0);
    }

    #[tokio::test]
    async fn idle_connections_expire_and_the_pool_is_bounded() {
        let (listener, peer) = server().await;
        let pool = Connector::new(2);
        let (mut streams, mut accepted) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            streams.push(pool.get(&peer).await.unwrap());
            accepted.push(listener.accept().await.unwrap());
        }
        for s in streams {
            pool.release(s.stream, s.key, Some(Duration::from_millis(30)));
        }
        assert_eq!(pool.idle_here(), 2, "bounded by max_idle");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            !pool.get(&peer).await.unwrap().reused,
            "expired ones are not reused"
        );
        // A pool of none keeps nothing.
        let none = Connector::new(0);
        let s = none.get(&peer).await.unwrap();
        none.release(s.stream, s.key, None);
        assert_eq!(none.idle_here(), 0);
    }
}
