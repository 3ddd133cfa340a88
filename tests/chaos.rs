//! Chaos upstreams (tests/peers/chaos_upstream.py) against the real binary: resets
//! before and after the head, truncated and non-HTTP answers, drips, hangs, an SSE
//! stream of 10 MiB without a newline, streams cut mid-event, `Content-Length` lies, a
//! flapping server. For each: what the client gets, that the request reached the
//! upstream once (never replayed once sent), that other clients are served meanwhile,
//! and that the gateway's open file descriptors and memory come back to their baseline.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn call(id: u64, chaos: &str, extra: Value) -> String {
    let mut args = json!({"chaos": chaos});
    if let (Some(a), Some(e)) = (args.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "chaos", "arguments": args}})
    .to_string()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What the client saw: the status, the JSON-RPC error code of a JSON answer (or of an
/// SSE stream's last event), and whether the body ended cleanly.
async fn outcome(resp: Result<reqwest::Response, reqwest::Error>) -> (u16, Option<i64>, String) {
    let Ok(resp) = resp else {
        return (0, None, "no answer".into());
    };
    let status = resp.status().as_u16();
    let sse = header(&resp, "content-type").is_some_and(|c| c.starts_with("text/event-stream"));
    match resp.bytes().await {
        Ok(body) => {
            let text = String::from_utf8_lossy(&body);
            let last = if sse {
                text.lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
                    .unwrap_or_default()
            } else {
                text.to_string()
            };
            let code = serde_json::from_str::<Value>(&last)
                .ok()
                .and_then(|v| v["error"]["code"].as_i64());
            let shape = if sse { "sse ended" } else { "complete" };
            (status, code, format!("{shape} ({} bytes)", body.len()))
        }
        Err(e) => (status, None, format!("body cut: {e}")),
    }
}

#[tokio::test]
async fn chaos_table() {
    let up = Upstream::start_peer("chaos_upstream.py", &[]);
    let good = Upstream::start("good");
    let yaml = format!(
        r#"server:
  host: 127.0.0.1
  port: {{port}}
  threads: 2
upstream:
  groups:
    default:
      servers: [{{id: chaos, url: "{}"}}]
      circuit_breaker: {{failure_threshold: 1000}}
    other:
      servers: [{{id: good, url: "{}"}}]
routes:
  - {{path: /mcp, group: default}}
  - {{path: /good, group: other}}
timeouts:
  request: 2s
logging: {{level: info, format: text}}
"#,
        up.url(),
        good.url()
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    // Warm up (pools, buffers), then the baseline.
    for i in 0..20 {
        let r = post(&c, &gw.url("/mcp"), call(i, "ok", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", gw.log());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fd0, rss0) = (fds(gw.pid()), rss_kib(gw.pid()));
    // Each mode, with what the client must get: the status, the JSON-RPC error code
    // (of the JSON answer, or of an SSE stream's last event), and how the body ended.
    type Want = (u16, Option<i64>, &'static str);
    let bad: Want = (502, Some(-32603), "complete");
    let modes: &[(&str, Value, Want)] = &[
        ("reset_before_head", json!({}), bad),
        ("reset_after_head", json!({}), bad),
        ("truncated", json!({}), bad),
        ("not_http", json!({}), bad),
        ("drip", json!({"interval": 0.02}), (200, None, "complete")),
        // Silent past timeouts.request: the stream ends with the request's error.
        (
            "hang_after_head",
            json!({}),
            (200, Some(-32603), "sse ended"),
        ),
        // Relayed as it comes (nothing buffers a passthrough stream).
        (
            "sse_no_newline",
            json!({"mib": 10}),
            (200, None, "sse ended"),
        ),
        // The upstream closed: so does the stream.
        ("close_mid_event", json!({}), (200, None, "sse ended")),
        // The upstream's framing is its word: its first 10 bytes, and its connection is
        // not reused (the next row reaches it on a new one).
        ("cl_short", json!({}), (200, None, "complete")),
        ("cl_long", json!({}), bad),
        // An upstream's own error answer is passed on as it is.
        ("flap", json!({}), (503, None, "complete")),
        ("flap", json!({}), (200, None, "complete")),
    ];
    let mut failures = Vec::new();
    for (i, (mode, extra, want)) in modes.iter().enumerate() {
        let before = up.state().await["requests"][mode].as_u64().unwrap_or(0);
        // Another client is served while the upstream misbehaves.
        let other = tokio::spawn({
            let url = gw.url("/good");
            async move {
                post(
                    &client(),
                    &url,
                    r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
                )
                .send()
                .await
                .map(|r| r.status().as_u16())
            }
        });
        let (status, code, shape) = outcome(
            post(
                &c,
                &gw.url("/mcp"),
                call(100 + i as u64, mode, extra.clone()),
            )
            .timeout(Duration::from_secs(20))
            .send()
            .await,
        )
        .await;
        let sent = up.state().await["requests"][mode].as_u64().unwrap_or(0) - before;
        let other = other.await.unwrap().ok();
        if (status, code) != (want.0, want.1)
            || !shape.starts_with(want.2)
            || sent != 1
            || other != Some(200)
        {
            failures.push(format!(
                "{mode}: got {status} {code:?} {shape}, sent upstream {sent} times, other client {other:?}; want {want:?}, sent once, other 200"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Back to the baseline: no descriptor or buffer kept for what failed.
    let settled = eventually(Duration::from_secs(10), || async {
        fds(gw.pid()) <= fd0 + 2
    })
    .await;
    let (fd1, rss1) = (fds(gw.pid()), rss_kib(gw.pid()));
    assert!(settled, "open descriptors {fd0} -> {fd1}");
    assert!(
        rss1 < rss0 + 16 * 1024,
        "memory {rss0} -> {rss1} KiB after relaying 10 MiB and the failures"
    );
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_server_and_nothing_more_is_sent() {
    let up = Upstream::start_peer("chaos_upstream.py", &[]);
    let yaml = config_for(&[up.url()], "").replace(
        "logging:\n",
        "      circuit_breaker: {failure_threshold: 2, open_for: 30s}\nlogging:\n",
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    for i in 0..2 {
        let r = post(&c, &gw.url("/mcp"), call(i, "reset_before_head", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
    }
    let before = up.state().await["requests"].clone();
    let r = post(&c, &gw.url("/mcp"), call(9, "ok", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the breaker is open");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert_eq!(
        up.state().await["requests"],
        before,
        "nothing was sent to it"
    );
}

#[tokio::test]
async fn a_members_endless_sse_line_ends_its_answer_with_an_error() {
    let up = Upstream::start_peer("chaos_upstream.py", &[]);
    let yaml = config_for(
        &[up.url()],
        "virtual_servers:\n  - path: /vs\n    members: [{group: default, prefix: c}]\n",
    );
    let gw = Gateway::start(&yaml).await;
    let rss0 = rss_kib(gw.pid());
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "c__chaos", "arguments": {"chaos": "sse_no_newline", "mib": 40},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let resp = post(&client(), &gw.url("/vs"), body.to_string())
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "c__chaos")
        .timeout(Duration::from_secs(60))
        .send()
        .await;
    let (status, code, shape) = outcome(resp).await;
    assert_eq!((status, code), (200, Some(-32603)), "{shape}\n{}", gw.log());
    // The 40 MiB line was never held whole: the member's stream was cut at 16 MiB.
    assert!(
        rss_kib(gw.pid()) < rss0 + 48 * 1024,
        "memory {rss0} -> {} KiB",
        rss_kib(gw.pid())
    );
}

/// A replica that flaps between healthy and dead (its listener closed and its open
/// connections reset, then back on the same port) while clients keep calling: the
/// active health checks eject it and bring it back on every flap, every request is
/// answered (a `200`, or a JSON-RPC `502` for one the dead replica had received), and no
/// request reaches the upstreams twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flapping_replica_is_ejected_and_readmitted_and_nothing_is_replayed() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let steady = Upstream::start_peer("chaos_upstream.py", &[]);
    let flapping = Upstream::start_peer("chaos_upstream.py", &[]);
    let yaml = format!(
        r#"server:
  host: 127.0.0.1
  port: {{port}}
  threads: 2
upstream:
  groups:
    default:
      strategy: round_robin
      servers: [{{id: steady, url: "{}"}}, {{id: flapping, url: "{}"}}]
      health_check: {{kind: mcp, interval: 200ms, timeout: 150ms, healthy_threshold: 2, unhealthy_threshold: 1}}
routes:
  - {{path: /mcp, group: default}}
logging: {{level: info, format: text, access_log: false}}
"#,
        steady.url(),
        flapping.url()
    );
    let gw = Gateway::start(&yaml).await;
    let next_id = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients, each calling in a loop on its kept-alive connections.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (url, next_id, stop) = (gw.url("/mcp"), next_id.clone(), stop.clone());
            tokio::spawn(async move {
                let c = client();
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let got = outcome(
                        post(&c, &url, call(id, "ok", json!({})))
                            .timeout(Duration::from_secs(10))
                            .send()
                            .await,
                    )
                    .await;
                    answers.push((id, got));
                }
                answers
            })
        })
        .collect();
    let flaps = 3;
    for n in 1..=flaps {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(std::process::Command::new("kill")
            .args(["-USR1", &flapping.pid().to_string()])
            .status()
            .unwrap()
            .success());
        assert!(
            gw.wait_log_count(
                "upstream default/flapping: unhealthy",
                n,
                Duration::from_secs(10)
            )
            .await,
            "flap {n}: never ejected\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(std::process::Command::new("kill")
            .args(["-USR1", &flapping.pid().to_string()])
            .status()
            .unwrap()
            .success());
        assert!(
            gw.wait_log_count(
                "upstream default/flapping: healthy",
                // The first check's pass is logged too.
                n + 1,
                Duration::from_secs(10)
            )
            .await,
            "flap {n}: never readmitted\n{}",
            gw.log()
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for l in load {
        answers.extend(l.await.unwrap());
    }

    // What each upstream received, by request id, across the flapping one's lives.
    let mut arrived: std::collections::HashMap<String, u64> = Default::default();
    let mut by_flapping = 0;
    for (up, flapping_one) in [(&steady, false), (&flapping, true)] {
        let state = up.state().await;
        for (id, n) in state["calls"].as_object().unwrap() {
            *arrived.entry(id.clone()).or_default() += n.as_u64().unwrap();
            if flapping_one {
                by_flapping += 1;
            }
        }
    }
    let replayed: Vec<_> = arrived.iter().filter(|(_, n)| **n > 1).collect();
    assert!(replayed.is_empty(), "requests replayed: {replayed:?}");
    let mut failed = 0;
    for (id, (status, code, shape)) in &answers {
        match (status, code) {
            (200, None) => assert_eq!(
                arrived.get(&id.to_string()),
                Some(&1),
                "request {id} was answered but arrived {:?} times",
                arrived.get(&id.to_string())
            ),
            // Sent to the replica as it died: not sent again, the client is told.
            (502, Some(-32603)) => failed += 1,
            other => panic!("request {id}: {other:?} {shape}\n{}", gw.log()),
        }
    }
    // At most the requests in flight on the flapping replica when it died.
    assert!(
        failed <= 4 * flaps,
        "{failed} of {} failed\n{}",
        answers.len(),
        gw.log()
    );
    eprintln!(
        "{} answered, {failed} failed (sent to the replica as it died), {by_flapping} to the flapping replica",
        answers.len()
    );
    // One pool per worker thread: no connection is lost between two threads.
    assert!(
        !gw.log().contains("failed to acquire reusable stream"),
        "{}",
        gw.log()
    );
    assert!(
        by_flapping > 0 && answers.len() > 100,
        "{by_flapping} to the flapping one, {} in all",
        answers.len()
    );
}
