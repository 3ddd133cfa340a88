//! HTTP/1 client connections against the real binary: the gateway's own loop serves the
//! POSTs, Pingora's HTTP app everything else (GET, DELETE, health probes), and one
//! connection carries both in any order, pipelined or not, with every answer in turn
//! and every request reaching the upstream once; a request line that arrives in pieces
//! or is longer than the loop looks at is served all the same.

mod common;

use common::raw::Conn;
use common::*;
use std::time::Duration;

fn post(id: u64, target: &str) -> Vec<u8> {
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
    format!(
        "POST {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const DELETE: &[u8] = b"DELETE /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n";
const LIVENESS: &[u8] = b"GET /liveness HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn gateway() -> (Upstream, Gateway) {
    let up = Upstream::start("u");
    let gw = Gateway::start(&config_for(&[up.url()], "")).await;
    (up, gw)
}

/// The upstream's answer to a POST: a 200 with the call's id, its method seen.
fn answered_post(a: &common::raw::Answer, id: u64) {
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v = a.json();
    assert_eq!(v["id"], id, "{v}");
    assert_eq!(v["result"]["method"], "POST", "{v}");
}

fn answered_delete(a: &common::raw::Answer) {
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["method"], "DELETE");
}

fn answered_probe(a: &common::raw::Answer) {
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("connection"), Some("keep-alive"));
}

#[tokio::test]
async fn one_connection_carries_posts_and_other_methods_in_turn() {
    let (up, gw) = gateway().await;
    let mut c = Conn::open(gw.port).await;
    answered_post(&c.send(&post(1, "/mcp")).await.unwrap(), 1);
    answered_post(&c.send(&post(2, "/mcp")).await.unwrap(), 2);
    // From here Pingora's app serves the connection, POSTs included.
    answered_delete(&c.send(DELETE).await.unwrap());
    answered_probe(&c.send(LIVENESS).await.unwrap());
    answered_post(&c.send(&post(3, "/mcp")).await.unwrap(), 3);
    answered_delete(&c.send(DELETE).await.unwrap());
    let state = up.state().await;
    assert_eq!(state["requests"], 5, "{state}");
    assert_eq!(state["deletes"], 2, "{state}");
}

#[tokio::test]
async fn pipelined_requests_across_both_loops_are_answered_in_order() {
    let (up, gw) = gateway().await;
    let mut c = Conn::open(gw.port).await;
    // The loop reads the first POST and the bytes after it; the DELETE's are handed
    // on to Pingora's app with the rest.
    let all = [
        post(7, "/mcp"),
        post(8, "/mcp"),
        DELETE.to_vec(),
        post(9, "/mcp"),
    ];
    assert!(c.write(&all.concat()).await);
    answered_post(&c.answer().await.unwrap(), 7);
    answered_post(&c.answer().await.unwrap(), 8);
    answered_delete(&c.answer().await.unwrap());
    answered_post(&c.answer().await.unwrap(), 9);
    // And the connection goes on.
    answered_probe(&c.send(LIVENESS).await.unwrap());
    assert_eq!(up.state().await["requests"], 4);
}

#[tokio::test]
async fn a_request_line_in_pieces_or_longer_than_the_loop_reads_is_served() {
    let (up, gw) = gateway().await;
    let mut c = Conn::open(gw.port).await;
    let request = post(1, "/mcp");
    for piece in [&request[..2], &request[2..9], &request[9..]] {
        assert!(c.write(piece).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answered_post(&c.answer().await.unwrap(), 1);
    // A target of 5,000 bytes: past the 4 KiB the loop looks at, within the gateway's
    // head limit.
    let long = format!("/mcp?pad={}", "x".repeat(5000));
    answered_post(&c.send(&post(2, &long)).await.unwrap(), 2);
    answered_post(&c.send(&post(3, "/mcp")).await.unwrap(), 3);
    assert_eq!(up.state().await["requests"], 3);
}
