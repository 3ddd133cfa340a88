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
