//! The client stream as the proxy reads it (HTTP/1), wrapped for two things Pingora's
//! session cannot be asked for:
//!
//! * the first bytes read while the connection is idle (no request in progress) start
//!   its head's timer ([`Conn::bytes_read`]): one relaxed atomic load per read;
//! * the empty `400` Pingora writes for a request head its parser refused (no request
//!   of the gateway's is in progress then) is replaced by the gateway's JSON-RPC error
//!   with `Connection: close`, as every other error of the proxy port is.
//!
//! Everything else is the wrapped stream's own: reads, writes, TLS, digests (the socket
//! digest is the same `Arc`, which HTTP/2 streams find their connection by).

use crate::proxy::connections::Conn;
use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client stream whose reads tell its [`Conn`] when a request starts.
pub struct Watched {
    inner: Stream,
    conn: Arc<Conn>,
    /// Pingora's own `400` being replaced: how many of the gateway's bytes
    /// ([`BAD_HEAD`]) are written, and how many of Pingora's to report written once
    /// they all are.
    replacing: Option<(usize, usize)>,
}

impl Watched {
    pub fn new(inner: Stream, conn: Arc<Conn>) -> Watched {
        Watched {
            inner,
            conn,
            replacing: None,
        }
    }
}

/// What a client whose request head Pingora's parser refused gets instead of Pingora's
/// empty `400`: the gateway's JSON-RPC error, and the connection closes.
static BAD_HEAD: once_cell::sync::Lazy<Vec<u8>> = once_cell::sync::Lazy::new(|| {
    let e = crate::error::GatewayError::InvalidRequest(
        "the request head could not be read: a malformed request line or header field \
         (CR, LF or NUL in a value, an invalid Content-Length or Transfer-Encoding), or \
         more than 256 fields"
            .into(),
    );
    super::closing_answer(&e, "")
});

/// Whether `buf` is Pingora's own answer to a head it could not parse: a `400` written
/// while no request is in progress (every answer of the gateway's is written in one).
fn pingoras_bad_request(conn: &Conn, buf: &[u8]) -> bool {
    (buf.starts_with(b"HTTP/1.1 400 ") || buf.starts_with(b"HTTP/1.0 400 ")) && !conn.serving()
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("conn", &self.conn.id)
            .field("inner", &self.inner)
            .finish()
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.replacing.is_none() && pingoras_bad_request(&self.conn, buf) {
            crate::telemetry::metrics::METRICS.bad_request_heads.inc();
            self.replacing = Some((0, buf.len()));
        }
        let Some((written, claimed)) = self.replacing else {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        };
        let mut written = written;
        while written < BAD_HEAD.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &BAD_HEAD[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => {
                    written += n;
                    self.replacing = Some((written, claimed));
                }
                other => return other,
            }
        }
        // Whatever Pingora writes after it (an empty body) is dropped.
        self.replacing = Some((written, 0));
        Poll::Ready(Ok(claimed.max(buf.len())))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty());
        if self.replacing.is_some() || first.is_some_and(|b| pingoras_bad_request(&self.conn, b)) {
            return self.poll_write(cx, first.map_or(&[][..], |b| &b[..]));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
