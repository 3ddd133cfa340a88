//! The answer reader against a real socket: every framing, split reads, bad answers.

use super::*;
use tokio::io::AsyncWriteExt;

/// What a server sends, one write each.
type Parts = &'static [&'static [u8]];

const GET: Asked = Asked {
    head: false,
    close: false,
};

/// A connection whose server sends `parts` one write at a time, then closes unless
/// `hold`.
async fn answer(parts: &[&[u8]], hold: bool) -> Stream {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        for p in parts {
            s.write_all(&p).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if hold {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    Box::new(pingora::protocols::l4::stream::Stream::from(tcp))
}

/// The head of what a server holding its connection open sends in `parts`, for a request
/// that asked `asked`, read with no timeout.
async fn held(parts: &[&[u8]], asked: Asked) -> (ResponseHeader, Body) {
    read_head(answer(parts, true).await, asked, None)
        .await
        .unwrap()
}

async fn whole(body: &mut Body) -> Result<Vec<u8>> {
    let mut all = vec![];
    while let Some(piece) = body.read().await? {
        assert!(!piece.is_empty(), "no empty piece is handed out");
        all.extend_from_slice(&piece);
    }
    Ok(all)
}

#[tokio::test]
async fn each_framing_reads_to_its_end_and_says_whether_the_connection_is_kept() {
    // (what the server sends, the body, whether the connection may be kept)
    let cases: [(Parts, &[u8], bool); 8] = [
        (
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"],
            b"hello",
            true,
        ),
        // Split anywhere: in the head, in the body.
        (
            &[b"HTTP/1.1 200 OK\r\nConte", b"nt-Length: 5\r\n\r\nhe", b"llo"],
            b"hello",
            true,
        ),
        // Chunked, split inside a size line, a chunk's data and its line end; with
        // an extension and a trailer.
        (
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhel",
                b"lo\r",
                b"\n1",
                b"0\r\n0123456789abcdef\r\n0\r\nx-t: 1\r\n\r\n",
            ],
            b"hello0123456789abcdef",
            true,
        ),
        // Transfer-Encoding frames it, whatever Content-Length says.
        (
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            b"ok",
            true,
        ),
        // No length: until the server closes, and never kept.
        (&[b"HTTP/1.1 200 OK\r\n\r\nuntil", b" closed"], b"until closed", false),
        // HTTP/1.0 keeps only when asked to.
        (
            &[b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            b"ok",
            false,
        ),
        (
            &[b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"],
            b"ok",
            true,
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
            b"ok",
            false,
        ),
    ];
    for (parts, expected, kept) in cases {
        // The server closes once it has sent it all (the until-close case's end).
        let (head, mut body) = read_head(answer(parts, false).await, GET, None)
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        assert!(
            !head.headers.contains_key(CONTENT_LENGTH)
                || !head.headers.contains_key(TRANSFER_ENCODING)
        );
        assert_eq!(whole(&mut body).await.unwrap(), expected, "{parts:?}");
        assert!(body.is_done());
        assert_eq!(body.reusable().is_ok(), kept, "{parts:?}");
    }
}

#[tokio::test]
async fn informational_answers_are_skipped_and_bodyless_answers_have_no_body() {
    let (head, mut body) = held(&[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"], GET).await;
    assert_eq!(head.status, 204);
    assert_eq!(whole(&mut body).await.unwrap(), b"");
    assert!(body.reusable().is_ok());

    // A HEAD's answer has no body; bytes after it mean the connection is not reused.
    let asked = Asked {
        head: true,
        close: false,
    };
    let (_, mut body) = held(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nextra"],
        asked,
    )
    .await;
    assert_eq!(whole(&mut body).await.unwrap(), b"");
    assert!(body.reusable().is_err(), "bytes beyond the answer");

    // A request that asked to close is never kept.
    let asked = Asked {
        head: false,
        close: true,
    };
    let (_, mut body) = held(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], asked).await;
    whole(&mut body).await.unwrap();
    assert!(body.reusable().is_err());
}

#[tokio::test]
async fn the_head_keeps_its_fields_in_its_own_copy_and_unfolds_folded_values() {
    let (head, mut body) = held(&[b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n  b\r\nX-Two: 1\r\nx-two: 2\r\nContent-Length: 2, 2\r\n\r\nok"], GET).await;
    assert_eq!(head.headers["x-folded"], "a    b");
    let two: Vec<_> = head.headers.get_all("x-two").iter().collect();
    assert_eq!(two, ["1", "2"]);
    assert_eq!(whole(&mut body).await.unwrap(), b"ok");
    assert!(body.buf.capacity() == 0 || body.buf.is_empty());
}

#[tokio::test]
async fn malformed_answers_are_errors_naming_what_is_wrong() {
    let cases: [(Parts, &str); 6] = [
        (&[b"garbage\r\n\r\n"], "not HTTP/1"),
        (
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"],
            "not one number",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"],
            "not one number",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"],
            "before the answer's body was complete",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            "size line",
        ),
        (
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n"],
            "longer than its size",
        ),
    ];
    for (parts, expected) in cases {
        let e = match read_head(answer(parts, false).await, GET, None).await {
            Err(e) => e,
            Ok((_, mut body)) => whole(&mut body).await.unwrap_err(),
        };
        assert!(e.to_string().contains(expected), "{parts:?}: {e}");
    }
    let e = read_head(answer(&[b"HTTP/1.1 200"], false).await, GET, None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.etype(), &ErrorType::ConnectionClosed, "{e}");
}

#[tokio::test]
async fn a_silent_server_holds_no_buffer_and_a_read_times_out() {
    let (_, mut body) = read_head(
        answer(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"3\r\nabc\r\n",
            ],
            true,
        )
        .await,
        GET,
        Some(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    assert_eq!(body.read().await.unwrap().as_deref(), Some(&b"abc"[..]));
    // The next read waits: the buffer has nothing and holds no allocation.
    let waiting = tokio::time::timeout(Duration::from_millis(50), body.read()).await;
    assert!(waiting.is_err());
    assert_eq!(body.buf.capacity(), 0, "a silent stream holds no buffer");
    let e = body.read().await.unwrap_err();
    assert_eq!(e.etype(), &ErrorType::ReadTimedout, "{e}");
}

#[tokio::test]
async fn a_read_waiting_for_the_server_is_small() {
    // A relay holds the read's future for as long as the answer lasts (an SSE stream:
    // hours), so nothing large may live in it across its wait: the trailers' field
    // slots (2 KiB) made every read's future 2.3 KB.
    let (_, mut body) = held(
        &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-t: 1\r\n\r\n"],
        GET,
    )
    .await;
    let read = body.read();
    let size = std::mem::size_of_val(&read);
    assert!(size < 1024, "a body read's future is {size} bytes");
    assert_eq!(read.await.unwrap(), None);
}
