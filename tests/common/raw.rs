//! Raw HTTP/1.1 for tests: bytes written on a fresh connection, the answer read back as
//! text, for what an HTTP client library would not send.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send raw bytes and read what comes back until the server closes or 5 s pass.
pub async fn raw_request(port: u16, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// One answer read off a [`Conn`]: its status, fields (names lowercase) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 client connection that sends raw requests in turn and reads each
/// answer (heads and chunk sizes parsed by `httparse`).
pub struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(port: u16) -> Conn {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// A connection from the local address `from` (another loopback address:
    /// `127.0.0.2` is one on Linux).
    pub async fn open_from(port: u16, from: std::net::IpAddr) -> Conn {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
        let stream = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Send raw bytes without reading.
    pub async fn write(&mut self, raw: &[u8]) -> bool {
        self.stream.write_all(raw).await.is_ok()
    }

    /// Send `raw` and read one answer; `None` if the connection closed first.
    pub async fn send(&mut self, raw: &[u8]) -> Option<Answer> {
        if self.stream.write_all(raw).await.is_err() {
            return None;
        }
        self.answer().await
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Read one answer (`Content-Length` or chunked).
    pub async fn answer(&mut self) -> Option<Answer> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            if let Ok(httparse::Status::Complete(len)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                self.buf.drain(..len);
                let chunked = headers
                    .iter()
                    .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
                let body = if chunked {
                    self.chunked_body().await?
                } else {
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map(|(_, v)| v.parse().unwrap())
                        .unwrap_or_else(|| {
                            panic!("neither Content-Length nor chunked: {headers:?}")
                        });
                    while self.buf.len() < length {
                        if !self.fill().await {
                            return None;
                        }
                    }
                    self.buf.drain(..length).collect()
                };
                return Some(Answer {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// A chunked body's data (chunk sizes parsed by `httparse`; no trailers expected).
    async fn chunked_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let (start, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((start, size))) => break (start, size as usize),
                    Ok(httparse::Status::Partial) => {
                        if !self.fill().await {
                            return None;
                        }
                    }
                    Err(_) => panic!("bad chunk size in {:?}", String::from_utf8_lossy(&self.buf)),
                }
            };
            // The chunk's data and its CRLF (after the last, empty chunk: the final CRLF).
            while self.buf.len() < start + size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[start..start + size]);
            self.buf.drain(..start + size + 2);
            if size == 0 {
                return Some(body);
            }
        }
    }

    /// Whether the server closed the connection (within 5 s) with nothing more to say.
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}
