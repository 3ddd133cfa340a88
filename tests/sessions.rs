//! Sealed sessions against the real binary: bound to the identity that opened them (on
//! POST, GET and DELETE, also across gateways sharing a key), `sessions.ttl` counted from
//! the session's start, no upstream session id in the modern era, and what a reload
//! keeps (stream caps, health-check counts).

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const CANCEL: &str =
    r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#;
const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const ALICE_KEY: &str = "an-api-key-of-alice-0123456789";
const BOB_KEY: &str = "an-api-key-of-bob-0123456789";
const TOKEN: &str = "an-admin-token-for-the-tests";

/// How a client authenticates.
#[derive(Clone, Debug)]
enum Who {
    Anonymous,
    ApiKey(&'static str),
    Jwt(&'static str),
}

impl Who {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Who::Anonymous => req,
            Who::ApiKey(k) => req.header("x-api-key", *k),
            Who::Jwt(sub) => req.bearer_auth(jwt(sub)),
        }
    }
}

fn jwt(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `/mcp` needs a JWT or one of two API keys (`alice-bot`, `bob-bot`); `/open` is open.
/// Both serve the same group.
fn auth_yaml(up: &Upstream, extra: &str) -> String {
    config_for(
        &[up.url()],
        &format!(
            "routes:\n  - {{path: /mcp, group: default}}\n  - {{path: /open, group: default}}\nsecurity:\n  auth:\n    - name: clients\n      routes: [/mcp]\n      jwt: {{secret: \"{SECRET}\", algorithms: [HS256]}}\n      api_keys:\n        keys:\n          - {{id: alice-bot, sha256: \"{}\"}}\n          - {{id: bob-bot, sha256: \"{}\"}}\n{extra}",
            sha256_hex(ALICE_KEY.as_bytes()),
            sha256_hex(BOB_KEY.as_bytes()),
        ),
    )
}

/// `initialize` as `who` on `path`: the sealed session id.
async fn open(c: &reqwest::Client, gw: &Gateway, path: &str, who: &Who) -> String {
    let resp = who
        .apply(post(c, &gw.url(path), INIT))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{who:?}");
    header(&resp, "mcp-session-id").expect("a sealed session id")
}

fn with_session(req: reqwest::RequestBuilder, who: &Who, sid: &str) -> reqwest::RequestBuilder {
    who.apply(req.header("mcp-session-id", sid))
}

/// `req` is answered 404 with the JSON-RPC error of an unknown session.
async fn expect_no_session(req: reqwest::RequestBuilder) -> Value {
    expect_refusal(req, 404, -32001).await
}

async fn requests(up: &Upstream) -> (u64, u64) {
    let s = up.state().await;
    (
        s["requests"].as_u64().unwrap(),
        s["deletes"].as_u64().unwrap(),
    )
}

/// Every use of `sid` by `intruder` is refused with `404 -32001` and reaches nothing.
async fn refused_to(
    c: &reqwest::Client,
    gw: &Gateway,
    up: &Upstream,
    path: &str,
    intruder: &Who,
    sid: &str,
) {
    let url = gw.url(path);
    let before = requests(up).await;
    for body in [LIST, CANCEL] {
        let resp = with_session(post(c, &url, body), intruder, sid)
            .send()
            .await
            .unwrap();
        assert!(
            header(&resp, "mcp-session-id").is_none(),
            "no session id handed to {intruder:?}"
        );
        expect_error(resp, 404, -32001).await;
    }
    let get = c
        .get(format!("{url}?delay=0"))
        .header("accept", "text/event-stream");
    expect_no_session(with_session(get, intruder, sid)).await;
    expect_no_session(with_session(c.delete(&url), intruder, sid)).await;
    assert_eq!(
        requests(up).await,
        before,
        "{intruder:?} reached the upstream"
    );
}

/// The session's owner still uses it on `path`: POST, its GET stream, then DELETE.
async fn works_for(c: &reqwest::Client, gw: &Gateway, path: &str, owner: &Who, sid: &str) {
    let url = gw.url(path);
    let r = received(
        with_session(post(c, &url, LIST), owner, sid)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        r["headers"]["mcp-session-id"]
            .as_str()
            .is_some_and(|s| s.starts_with("u-session-")),
        "{r}"
    );
    let get = c
        .get(format!("{url}?delay=0"))
        .header("accept", "text/event-stream");
    let resp = with_session(get, owner, sid).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{owner:?}");
    assert!(resp.text().await.unwrap().contains("event: ready"));
    let resp = with_session(c.delete(&url), owner, sid)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{owner:?}");
}

#[tokio::test]
async fn a_session_opens_only_for_the_identity_that_started_it() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&auth_yaml(&up, "")).await;
    let c = client();
    let alice_key = Who::ApiKey(ALICE_KEY);
    let bob_key = Who::ApiKey(BOB_KEY);
    // (owner, intruder): two API keys; two JWT subjects; the same name by another method.
    let pairs = [
        (alice_key.clone(), bob_key.clone()),
        (bob_key.clone(), alice_key.clone()),
        (Who::Jwt("alice"), Who::Jwt("bob")),
        (alice_key.clone(), Who::Jwt("alice-bot")),
        (Who::Jwt("alice-bot"), alice_key.clone()),
    ];
    for (owner, intruder) in &pairs {
        let sid = open(&c, &gw, "/mcp", owner).await;
        refused_to(&c, &gw, &up, "/mcp", intruder, &sid).await;
        // Nor does it open for an anonymous client on an open route of the same group.
        refused_to(&c, &gw, &up, "/open", &Who::Anonymous, &sid).await;
        works_for(&c, &gw, "/mcp", owner, &sid).await;
    }
    // An anonymous session stays anonymous: no identity takes it over.
    let sid = open(&c, &gw, "/open", &Who::Anonymous).await;
    refused_to(&c, &gw, &up, "/mcp", &alice_key, &sid).await;
    refused_to(&c, &gw, &up, "/mcp", &Who::Jwt("alice"), &sid).await;
    works_for(&c, &gw, "/open", &Who::Anonymous, &sid).await;
}

#[tokio::test]
async fn a_session_follows_its_identity_across_gateways_sharing_a_key() {
    let up = Upstream::start("u");
    let keys = format!("sessions:\n  keys: [\"{KEY}\"]\n");
    let gw1 = Gateway::start(&auth_yaml(&up, &keys)).await;
    let gw2 = Gateway::start(&auth_yaml(&up, &keys)).await;
    let c = client();
    for (owner, intruder) in [
        (Who::ApiKey(ALICE_KEY), Who::ApiKey(BOB_KEY)),
        (Who::Jwt("alice"), Who::Jwt("bob")),
    ] {
        let sid = open(&c, &gw1, "/mcp", &owner).await;
        refused_to(&c, &gw2, &up, "/mcp", &intruder, &sid).await;
        works_for(&c, &gw2, "/mcp", &owner, &sid).await;
    }
}

#[tokio::test]
async fn the_session_ttl_counts_from_initialize_however_busy_the_session() {
    // The upstream sends its session id back on every answer, and the gateway sends the
    // client's own id back (sealing it again would not move its start either); a client
    // uses the id it got last.
    let up = Upstream::start_with("u", &["--echo-session"]);
    let gw = Gateway::start(&config_for(&[up.url()], "sessions:\n  ttl: 2s\n")).await;
    let c = client();
    let resp = post(&c, &gw.url("/mcp"), INIT).send().await.unwrap();
    let first = header(&resp, "mcp-session-id").unwrap();
    let mut sid = first.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        assert!(
            Instant::now() < deadline,
            "a session used every 200ms outlived its 2s ttl by 8s"
        );
        let resp = post(&c, &gw.url("/mcp"), LIST)
            .header("mcp-session-id", &sid)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            break resp;
        }
        let next = header(&resp, "mcp-session-id").expect("the session id, sent back");
        assert_eq!(next, first, "the client's own id back");
        received(resp).await;
        sid = next;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    expect_error(expired, 404, -32001).await;
    // The first id (same start) is refused too; a new session starts afresh.
    expect_no_session(post(&c, &gw.url("/mcp"), LIST).header("mcp-session-id", &first)).await;
    let resp = post(&c, &gw.url("/mcp"), INIT).send().await.unwrap();
    let fresh = header(&resp, "mcp-session-id").unwrap();
    received(
        post(&c, &gw.url("/mcp"), LIST)
            .header("mcp-session-id", &fresh)
            .send()
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn an_echoed_session_goes_back_as_it_came_unless_an_older_key_sealed_it() {
    const NEW_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let up = Upstream::start_with("u", &["--echo-session"]);
    let keys = |k: &[&str]| format!("sessions:\n  keys: {k:?}\n");
    let c = client();
    let list =
        |gw: &Gateway, sid: &str| post(&c, &gw.url("/mcp"), LIST).header("mcp-session-id", sid);
    let gw = Gateway::start(&config_for(&[up.url()], &keys(&[KEY]))).await;
    let resp = post(&c, &gw.url("/mcp"), INIT).send().await.unwrap();
    let sid = header(&resp, "mcp-session-id").unwrap();
    received(resp).await;
    // The server answers with the session the client's id carries: that id comes back.
    for _ in 0..2 {
        let resp = list(&gw, &sid).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "mcp-session-id").as_deref(), Some(&*sid));
        received(resp).await;
    }
    // A new key put first: an id the old key sealed is sealed anew by the new one (same
    // session), which opens once the old key is retired; the old id then does not.
    let rotated = Gateway::start(&config_for(&[up.url()], &keys(&[NEW_KEY, KEY]))).await;
    let resp = list(&rotated, &sid).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let fresh = header(&resp, "mcp-session-id").unwrap();
    assert_ne!(fresh, sid, "sealed anew by the first key");
    received(resp).await;
    let retired = Gateway::start(&config_for(&[up.url()], &keys(&[NEW_KEY]))).await;
    let resp = list(&retired, &fresh).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "mcp-session-id").as_deref(), Some(&*fresh));
    received(resp).await;
    expect_no_session(list(&retired, &sid)).await;
}

#[tokio::test]
async fn a_modern_answer_never_hands_out_the_upstreams_session_id() {
    let (_up, gw) = one_upstream("").await;
    let c = client();
    let version = "2026-07-28";
    let body = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"mint_session","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":version}}});
    let resp = post(&c, &gw.url("/mcp"), body.to_string())
        .header("mcp-protocol-version", version)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "mint_session")
        .send()
        .await
        .unwrap();
    let sid = header(&resp, "mcp-session-id");
    assert!(
        sid.is_none(),
        "modern answer carried Mcp-Session-Id {sid:?}"
    );
    received(resp).await;
    // In the legacy era the same answer's id is sealed, as always.
    let body = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"mint_session","arguments":{}}});
    let resp = post(&c, &gw.url("/mcp"), body.to_string())
        .send()
        .await
        .unwrap();
    let sealed = header(&resp, "mcp-session-id").expect("a sealed id");
    assert!(!sealed.contains("raw"), "{sealed}");
    received(resp).await;
}

fn admin_yaml() -> String {
    format!(
        "admin:\n  enabled: true\n  host: 127.0.0.1\n  port: {{admin_port}}\n  token: {TOKEN}\n"
    )
}

/// Change the config file (the log level) and reload it through the admin API.
async fn reload(gw: &Gateway, from: &str, to: &str) {
    let config = gw.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&config, text.replace(from, to)).unwrap();
    let v = json_ok(
        client()
            .post(gw.admin_url("/api/v1/reload"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(v["changed"], true, "{v}");
}

#[tokio::test]
async fn a_reload_keeps_open_streams_counted_and_sessions_bound() {
    let up = Upstream::start("u");
    let extra = format!(
        "  rate_limiting:\n    max_concurrent_streams: 1\n{}",
        admin_yaml()
    );
    let gw = Gateway::start(&auth_yaml(&up, &extra)).await;
    let c = client();
    let alice = Who::ApiKey(ALICE_KEY);
    let sid = open(&c, &gw, "/mcp", &alice).await;
    let stream = |who: &Who| {
        who.apply(
            c.get(gw.url("/mcp?delay=60"))
                .header("accept", "text/event-stream"),
        )
        .send()
    };
    let held = stream(&alice).await.unwrap();
    assert_eq!(held.status(), 200);
    expect_error(stream(&alice).await.unwrap(), 429, -32011).await;

    reload(&gw, "  level: info\n", "  level: debug\n").await;
    // The stream opened before the reload still counts.
    expect_error(stream(&alice).await.unwrap(), 429, -32011).await;
    // Another identity has its own cap.
    let other = stream(&Who::ApiKey(BOB_KEY)).await.unwrap();
    assert_eq!(other.status(), 200);
    drop(other);
    // The session opened before the reload still works for its owner only.
    refused_to(&c, &gw, &up, "/mcp", &Who::ApiKey(BOB_KEY), &sid).await;
    let r = received(
        with_session(post(&c, &gw.url("/mcp"), LIST), &alice, &sid)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r["server"], "u");
    // Once that stream ends, its slot is free again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = stream(&alice).await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `mcp_gateway_upstream_health_checks_total` of server `s1` with `result`.
async fn health_checks(gw: &Gateway, result: &str) -> u64 {
    let text = gw.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("mcp_gateway_upstream_health_checks_total{"))
        .filter(|l| l.contains("server=\"s1\"") && l.contains(&format!("result=\"{result}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_reload_keeps_health_check_counts() {
    let mut up = Upstream::start("u");
    let yaml = config_for(&[up.url()], &admin_yaml()).replace(
        "    default:\n",
        "    default:\n      health_check: {kind: tcp, interval: 1s, timeout: 500ms, unhealthy_threshold: 3}\n",
    );
    let gw = Gateway::start(&yaml).await;
    up.kill();
    // One failure before the reload...
    let deadline = Instant::now() + Duration::from_secs(10);
    while health_checks(&gw, "fail").await < 1 {
        assert!(Instant::now() < deadline, "no failed check:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reload(&gw, "  level: info\n", "  level: debug\n").await;
    assert!(gw.log().contains("1 server(s) kept"), "{}", gw.log());
    // ...and two after it: down on the third consecutive failure, not before.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.log().contains("upstream default/s1: unhealthy") {
        assert!(
            Instant::now() < deadline,
            "never marked down:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failures = health_checks(&gw, "fail").await;
    assert_eq!(
        failures,
        3,
        "marked down after {failures} failure(s) (unhealthy_threshold 3):\n{}",
        gw.log()
    );
}
