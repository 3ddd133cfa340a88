//! The answer's body as its framing delimits it, read as the server sends it.

use super::MAX_HEAD;
use bytes::{Buf, Bytes, BytesMut};
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use std::task::{Context, Poll};
use std::time::Duration;

/// The longest chunk-size line (with its extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Room reserved for a read of the body.
const BODY_READ: usize = 16 << 10;

/// The answer's body, read off the connection, and the connection with it.
pub struct Body {
    pub(super) stream: Stream,
    /// Read and not handed out yet (empty, with no allocation, while the server is silent).
    pub(super) buf: BytesMut,
    pub(super) framing: Framing,
    /// The longest wait for each read.
    pub(super) timeout: Option<Duration>,
    /// Both sides keep the connection alive, by the request's and the answer's heads.
    pub(super) keepalive: bool,
}

/// Where the body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// Chunked: a chunk-size line comes next.
    ChunkSize,
    /// Chunked: the bytes of the current chunk still to come.
    ChunkData(u64),
    /// Chunked: the line end after a chunk's data.
    ChunkEnd,
    /// Chunked: the trailer section after the last chunk.
    Trailers,
    /// Until the server closes the connection.
    UntilClose,
    /// Read to its end.
    Done,
}

impl Body {
    /// The next piece of the body as it was read (chunked framing removed); `None` at
    /// its end.
    pub async fn read(&mut self) -> Result<Option<Bytes>> {
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                Framing::Length(left) | Framing::ChunkData(left) => {
                    if self.buf.is_empty() {
                        self.fill_some("the answer's body").await?;
                        continue;
                    }
                    let n = left.min(self.buf.len() as u64);
                    let data = self.buf.split_to(n as usize).freeze();
                    self.framing = match self.framing {
                        Framing::Length(_) => Framing::Length(left - n),
                        _ if left == n => Framing::ChunkEnd,
                        _ => Framing::ChunkData(left - n),
                    };
                    return Ok(Some(data));
                }
                Framing::UntilClose => {
                    if self.buf.is_empty() && self.fill(BODY_READ, "the answer's body").await? == 0
                    {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Framing::ChunkSize => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        self.buf.advance(len);
                        self.framing = match size {
                            0 => Framing::Trailers,
                            n => Framing::ChunkData(n),
                        };
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_CHUNK_LINE => {
                        self.fill_some("the answer's chunk size").await?;
                    }
                    _ => return Err(bad_chunk("a chunk's size line is not valid")),
                },
                Framing::ChunkEnd => match (self.buf.first(), self.buf.get(1)) {
                    (Some(b'\n'), _) => {
                        self.buf.advance(1);
                        self.framing = Framing::ChunkSize;
                    }
                    (Some(b'\r'), Some(b'\n')) => {
                        self.buf.advance(2);
                        self.framing = Framing::ChunkSize;
                    }
                    (None, _) | (Some(b'\r'), None) => {
                        self.fill_some("the end of an answer's chunk").await?;
                    }
                    _ => return Err(bad_chunk("a chunk's data is longer than its size")),
                },
                Framing::Trailers => match trailers_end(&self.buf) {
                    Ok(Some(len)) => {
                        self.buf.advance(len);
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    Ok(None) if self.buf.len() < MAX_HEAD => {
                        self.fill_some("the answer's trailers").await?;
                    }
                    _ => return Err(bad_chunk("the answer's trailers are not valid")),
                },
            }
        }
    }

    /// Whether the body was read to its end.
    pub fn is_done(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    /// The connection, if it may carry another request: the body read to its end,
    /// nothing read beyond it, and both sides keeping it alive.
    pub fn reusable(self) -> std::result::Result<Stream, Stream> {
        match self.is_done() && self.buf.is_empty() && self.keepalive {
            true => Ok(self.stream),
            false => Err(self.stream),
        }
    }

    /// The connection, whatever state the answer is in (to close it).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// [`fill`](Self::fill), where the server closing the connection is an error: the
    /// body is not complete.
    async fn fill_some(&mut self, what: &str) -> Result<()> {
        match self.fill(BODY_READ, what).await? {
            0 => Err(Error::explain(
                ErrorType::ConnectionClosed,
                format!("the server closed the connection before {what} was complete"),
            )),
            _ => Ok(()),
        }
    }

    /// Read what the server sends next into `buf` (with `room` reserved), within the
    /// timeout; 0: the server closed the connection.
    pub(super) async fn fill(&mut self, room: usize, what: &str) -> Result<usize> {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let read = std::future::poll_fn(|cx| read_some(stream, buf, room, cx));
        let read = match self.timeout {
            Some(t) => match tokio::time::timeout(t, read).await {
                Ok(read) => read,
                Err(_) => {
                    return Err(Error::explain(
                        ErrorType::ReadTimedout,
                        format!("no byte of {what} within {t:?}"),
                    ))
                }
            },
            None => read.await,
        };
        read.map_err(|e| Error::because(ErrorType::ReadError, format!("reading {what}"), e))
    }
}

/// Where the trailers starting `buf` end (`None`: not all read yet). Their 64 field
/// slots (2 KiB) live in this call only: parsed inside [`Body::read`] they were kept
/// across its wait for more bytes, in every read's future, which a relay holds for as
/// long as the answer lasts (an SSE stream: hours).
fn trailers_end(buf: &[u8]) -> std::result::Result<Option<usize>, httparse::Error> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    match httparse::parse_headers(buf, &mut fields)? {
        httparse::Status::Complete((len, _)) => Ok(Some(len)),
        httparse::Status::Partial => Ok(None),
    }
}

fn bad_chunk(what: &str) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, what.to_string())
}

/// One read into `buf` (with `room` reserved when it is full); while the read waits and
/// nothing is buffered, `buf` gives its allocation back (a silent stream holds none).
/// The client connection loop reads its requests the same way (`proxy/serve.rs`).
pub fn read_some(
    stream: &mut Stream,
    buf: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() == buf.len() {
        buf.reserve(room);
    }
    let read = tokio_util::io::poll_read_buf(std::pin::Pin::new(stream), cx, buf);
    if read.is_pending() && buf.is_empty() {
        *buf = BytesMut::new();
    }
    read
}
