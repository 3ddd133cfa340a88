//! Distributed tracing: `traceparent` continued through the gateway and spans exported
//! over OTLP/HTTP to a real receiver (a minimal OTLP/HTTP JSON endpoint run by the test).

mod common;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP receiver: stores every JSON export request it gets (path, body).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let store = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            store.lock().unwrap().push((path, v));
                            let mut r = Response::new(Full::new(bytes::Bytes::from_static(b"{}")));
                            r.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { port, got }
    }

    /// Every exported span, as OTLP JSON objects.
    fn spans(&self) -> Vec<Value> {
        let got = self.got.lock().unwrap();
        got.iter()
            .flat_map(|(_, v)| v["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Wait (up to 15 s) for a span matching `pred`.
    async fn wait_span(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(s) = self.spans().into_iter().find(|s| pred(s)) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no such span; got {:#?}", self.spans());
    }
}

/// A span attribute's value as a string (OTLP JSON `{key, value: {stringValue|intValue}}`).
fn attr(span: &Value, key: &str) -> Option<String> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| {
            let v = &a["value"];
            v["stringValue"]
                .as_str()
                .map(str::to_string)
                .or_else(|| v["intValue"].as_str().map(str::to_string))
                .or_else(|| v["intValue"].as_i64().map(|n| n.to_string()))
        })
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

fn gateway_yaml(up: &Upstream, tracing: &str) -> String {
    config_for(&[up.url()], tracing)
}

/// A gateway over `up` exporting its spans to `receiver`; `settings` go under `tracing:`.
async fn traced(up: &Upstream, receiver: &Receiver, settings: &str) -> Gateway {
    let tracing = format!(
        "tracing:\n  otlp_endpoint: http://127.0.0.1:{}\n{settings}",
        receiver.port
    );
    Gateway::start(&gateway_yaml(up, &tracing)).await
}

#[tokio::test]
async fn spans_continue_the_clients_trace_and_reach_the_collector() {
    let receiver = Receiver::start().await;
    let up = Upstream::start("a");
    let gw = traced(&up, &receiver, "  service_name: gw-under-test\n").await;
    let c = client();

    // A session, then a traced tool call inside it.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let resp = post(&c, &gw.url("/mcp"), init).send().await.unwrap();
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    received(resp).await;
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    let r = received(
        post(&c, &gw.url("/mcp"), call)
            .header("mcp-session-id", &sid)
            .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
            .header("tracestate", "vendor=x")
            .send()
            .await
            .unwrap(),
    )
    .await;

    // The upstream got the same trace, with the gateway's span as parent.
    let sent = r["headers"]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(parts[1], TRACE);
    assert_ne!(parts[2], PARENT, "the gateway's own span sits in between");
    assert_eq!(parts[3], "01");
    assert_eq!(r["headers"]["tracestate"], "vendor=x");

    let span = receiver
        .wait_span(|s| s["traceId"] == TRACE && s["name"] == "tools/call echo")
        .await;
    assert_eq!(span["parentSpanId"], PARENT);
    assert_eq!(span["spanId"], parts[2]);
    assert_eq!(
        attr(&span, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(attr(&span, "gen_ai.tool.name").as_deref(), Some("echo"));
    assert_eq!(attr(&span, "mcp.protocol.era").as_deref(), Some("legacy"));
    assert_eq!(attr(&span, "jsonrpc.request.id").as_deref(), Some("7"));
    assert_eq!(
        attr(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(&span, "mcp.gateway.server").as_deref(), Some("s1"));
    let session = attr(&span, "mcp.session.id").unwrap();
    assert_eq!(session.len(), 16);
    assert!(
        !sid.contains(&session) && session != sid,
        "a handle, not the id"
    );

    // The resource names the service; exports went to the OTLP traces path.
    let got = receiver.got.lock().unwrap().clone();
    assert!(got.iter().all(|(path, _)| path == "/v1/traces"), "{got:?}");
    let service = got
        .iter()
        .flat_map(|(_, v)| v["resourceSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|rs| {
            rs["resource"]["attributes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|a| a["key"] == "service.name")
        .unwrap();
    assert_eq!(service["value"]["stringValue"], "gw-under-test");

    // No traceparent: the gateway starts a trace, and errors are marked.
    let r = received(post(&c, &gw.url("/mcp"), call).send().await.unwrap()).await;
    let fresh = r["headers"]["traceparent"].as_str().unwrap().to_string();
    let fresh_trace = fresh.split('-').nth(1).unwrap().to_string();
    assert_ne!(fresh_trace, TRACE);
    let root = receiver
        .wait_span(|s| s["traceId"] == fresh_trace.as_str())
        .await;
    assert!(
        root["parentSpanId"].as_str().unwrap_or("").is_empty(),
        "{root}"
    );
    expect_refusal(
        post(&c, &gw.url("/mcp"), "{oops").header("traceparent", format!("00-{TRACE}-{PARENT}-01")),
        400,
        -32700,
    )
    .await;
    let failed = receiver
        .wait_span(|s| s["traceId"] == TRACE && attr(s, "error.type").is_some())
        .await;
    assert_eq!(attr(&failed, "error.type").as_deref(), Some("parse_error"));
    assert_eq!(
        attr(&failed, "http.response.status_code").as_deref(),
        Some("400")
    );
}

#[tokio::test]
async fn without_tracing_traceparent_passes_through_untouched() {
    let up = Upstream::start("a");
    let gw = Gateway::start(&gateway_yaml(&up, "")).await;
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let r = received(
        post(&client(), &gw.url("/mcp"), call)
            .header("traceparent", &tp)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["headers"]["traceparent"], tp.as_str());
}

#[tokio::test]
async fn sample_ratio_decides_new_traces_and_sampled_parents_are_followed() {
    let receiver = Receiver::start().await;
    let up = Upstream::start("a");
    let gw = traced(&up, &receiver, "  sample_ratio: 0.0\n").await;
    let c = client();
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    // A new trace at ratio 0: propagated, but not sampled.
    let r = received(post(&c, &gw.url("/mcp"), call).send().await.unwrap()).await;
    let flags = r["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(flags, "00");
    // A sampled parent is followed whatever the ratio: its span is exported.
    received(
        post(&c, &gw.url("/mcp"), call)
            .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    receiver.wait_span(|s| s["traceId"] == TRACE).await;
    assert!(
        receiver.spans().iter().all(|s| s["traceId"] == TRACE),
        "only the sampled trace is exported"
    );
}
