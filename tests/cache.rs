//! Response caching against the real binary and the mock upstream: what is kept and
//! what never is, hits answered with the caller's id in its era, private answers never
//! crossing identities, public ones shared, coalesced misses, invalidation by an
//! upstream's notifications, by the admin API and by a reload, and Redis as a shared
//! second level that may fail without a client noticing.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const ALICE_KEY: &str = "alice-key-0123456789";
const BOB_KEY: &str = "bob-key-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";
const MODERN: &str = "2026-07-28";

/// The cache section for `/mcp` (plus `extra` lines under `cache:`).
fn cache_yaml(extra: &str) -> String {
    format!(
        "cache:\n{extra}  routes:\n    - path: /mcp\n      lists: {{ttl: 30s}}\n      resources: {{ttl: 5m}}\n      tools: [{{name: 'ech*', ttl: 5m}}, {{name: status, ttl: 5m}}]\nadmin:\n  port: {{admin_port}}\n  token: \"{ADMIN_TOKEN}\"\n"
    )
}

fn keys_yaml() -> String {
    format!(
        "security:\n  auth:\n    - name: keys\n      api_keys:\n        keys:\n          - {{id: alice, sha256: \"{}\"}}\n          - {{id: bob, sha256: \"{}\"}}\n  policies:\n    - {{name: bob-no-status, effect: deny, subjects: [bob], tools: [status]}}\n    - {{name: the-rest, effect: allow}}\n",
        sha256_hex(ALICE_KEY.as_bytes()),
        sha256_hex(BOB_KEY.as_bytes())
    )
}

fn message(id: Value, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// POST `body` (with `key` when given, and the modern era's headers when its `_meta`
/// says so); the status, `X-Cache`, and the JSON answer (the last event of an SSE one).
async fn send(gw: &Gateway, key: Option<&str>, body: &str) -> (u16, Option<String>, Value) {
    let v: Value = serde_json::from_str(body).unwrap();
    let mut req = post(&client(), &gw.url("/mcp"), body.to_string());
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    if v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN {
        req = req
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", v["method"].as_str().unwrap());
        let name = v["params"]["name"].as_str().or(v["params"]["uri"].as_str());
        if let Some(n) = name {
            req = req.header("mcp-name", n);
        }
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let x_cache = header(&resp, "x-cache");
    let sse = header(&resp, "content-type").is_some_and(|c| c.starts_with("text/event-stream"));
    if !sse {
        assert!(
            header(&resp, "content-length").is_some()
                || status != 200
                || x_cache.as_deref() != Some("hit"),
            "a hit is length-delimited"
        );
    }
    let text = resp.text().await.unwrap();
    let v = if sse {
        let last = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        serde_json::from_str(last).unwrap()
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, x_cache, v)
}

async fn upstream_requests(up: &Upstream) -> u64 {
    up.state().await["requests"].as_u64().unwrap()
}

fn modern_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": MODERN})
}

#[tokio::test]
async fn lists_and_listed_tools_are_kept_and_answered_with_the_callers_id() {
    let (up, gw) = one_upstream(&cache_yaml("")).await;
    let before = upstream_requests(&up).await;

    let (s, x, first) = send(&gw, None, &message(json!(1), "tools/list", json!({}))).await;
    assert_eq!((s, x.as_deref()), (200, Some("miss")));
    let (s, x, again) = send(
        &gw,
        None,
        &message(
            json!("two"),
            "tools/list",
            json!({"_meta": {"progressToken": 9}}),
        ),
    )
    .await;
    assert_eq!((s, x.as_deref()), (200, Some("hit")), "{again}");
    assert_eq!(again["id"], "two", "a hit carries the client's own id");
    assert_eq!(
        again["result"], first["result"],
        "the upstream's answer, as it was kept"
    );
    assert_eq!(
        upstream_requests(&up).await,
        before + 1,
        "the hit never reached the upstream"
    );

    // Each page (cursor) is its own question.
    let (_, x, _) = send(
        &gw,
        None,
        &message(json!(3), "tools/list", json!({"cursor": "p2"})),
    )
    .await;
    assert_eq!(x.as_deref(), Some("miss"));

    // An SSE answer's final result is kept; the hit is JSON.
    let sse = json!({"_meta": {"sse": true}});
    let (_, x, streamed) = send(&gw, None, &message(json!(4), "prompts/list", sse.clone())).await;
    assert_eq!(x.as_deref(), Some("miss"));
    let (_, x, hit) = send(&gw, None, &message(json!(5), "prompts/list", sse)).await;
    assert_eq!(x.as_deref(), Some("hit"));
    assert_eq!(
        (hit["id"].clone(), hit["result"].clone()),
        (json!(5), streamed["result"].clone())
    );

    // A listed tool's result is kept; an unlisted tool's never (no X-Cache either).
    let call = |id: i64, name: &str| {
        message(
            json!(id),
            "tools/call",
            json!({"name": name, "arguments": {"a": 1}}),
        )
    };
    let (_, x, _) = send(&gw, None, &call(6, "echo")).await;
    assert_eq!(x.as_deref(), Some("miss"));
    let (_, x, _) = send(&gw, None, &call(7, "echo")).await;
    assert_eq!(x.as_deref(), Some("hit"));
    let n = upstream_requests(&up).await;
    for id in 8..10 {
        let (s, x, _) = send(&gw, None, &call(id, "other")).await;
        assert_eq!((s, x), (200, None));
    }
    // Errors are never kept, though the tool is listed.
    for id in 10..12 {
        let body = message(
            json!(id),
            "tools/call",
            json!({"name": "status", "arguments": {"code": 500}}),
        );
        let (s, x, v) = send(&gw, None, &body).await;
        assert_eq!((s, x.as_deref()), (500, Some("miss")), "{v}");
    }
    assert_eq!(upstream_requests(&up).await, n + 4);
    // Notifications and other methods pass as always.
    let (s, x, _) = send(
        &gw,
        None,
        &message(json!(12), "prompts/get", json!({"name": "greet"})),
    )
    .await;
    assert_eq!((s, x), (200, None));

    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_cache_requests_total{result=\"hit\",route=\"/mcp\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("mcp_gateway_cache_stores_total{level=\"memory\",route=\"/mcp\"}"),
        "{m}"
    );
}

#[tokio::test]
async fn a_private_answer_is_never_served_to_another_identity() {
    let extra = format!("{}{}", keys_yaml(), cache_yaml(""));
    let (up, gw) = one_upstream(&extra).await;
    let list = |id: i64| message(json!(id), "tools/list", json!({}));
    let before = upstream_requests(&up).await;

    let (_, x, alice) = send(&gw, Some(ALICE_KEY), &list(1)).await;
    assert_eq!(x.as_deref(), Some("miss"));
    assert!(tool_names(&alice).contains(&"status".to_string()));
    // Bob asks the same question: his own authorization context, his own miss.
    let (_, x, bob) = send(&gw, Some(BOB_KEY), &list(2)).await;
    assert_eq!(x.as_deref(), Some("miss"), "{bob}");
    assert!(
        !tool_names(&bob).contains(&"status".to_string()),
        "bob's policies filter his list"
    );
    assert_ne!(
        alice["result"]["headers"]["x-request-id"],
        bob["result"]["headers"]["x-request-id"]
    );
    assert_eq!(upstream_requests(&up).await, before + 2);
    // Each gets his own entry back, filtered by his own policies.
    let (_, x, alice2) = send(&gw, Some(ALICE_KEY), &list(3)).await;
    assert_eq!(x.as_deref(), Some("hit"));
    assert_eq!(alice2["result"], alice["result"]);
    let (_, x, bob2) = send(&gw, Some(BOB_KEY), &list(4)).await;
    assert_eq!(x.as_deref(), Some("hit"));
    assert_eq!(
        bob2["result"]["headers"], bob["result"]["headers"],
        "bob's own entry"
    );
    assert!(!tool_names(&bob2).contains(&"status".to_string()));
    assert_eq!(upstream_requests(&up).await, before + 2);
    // Without a key: refused before any lookup.
    let (s, _, _) = send(&gw, None, &list(5)).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn modern_public_answers_are_shared_and_carry_the_time_left() {
    let extra = format!("{}{}", keys_yaml(), cache_yaml(""));
    let (up, gw) = one_upstream(&extra).await;
    let read = |id: i64, modern: bool| {
        let mut params = json!({"uri": "mem://public/readme"});
        if modern {
            params["_meta"] = modern_meta();
        }
        message(json!(id), "resources/read", params)
    };
    let before = upstream_requests(&up).await;
    // The mock says `ttlMs: 60000, cacheScope: public`.
    let (_, x, alice) = send(&gw, Some(ALICE_KEY), &read(1, true)).await;
    assert_eq!(x.as_deref(), Some("miss"));
    assert_eq!(alice["result"]["cacheScope"], "public");
    let (_, x, bob) = send(&gw, Some(BOB_KEY), &read(2, true)).await;
    assert_eq!(
        x.as_deref(),
        Some("hit"),
        "a public answer is shared: {bob}"
    );
    assert_eq!(bob["id"], 2);
    assert_eq!(bob["result"]["cacheScope"], "public");
    let left = bob["result"]["ttlMs"].as_u64().unwrap();
    assert!(
        left > 0 && left <= 60_000,
        "the time left, capped by the upstream's ttlMs: {left}"
    );
    assert_eq!(bob["result"]["contents"], alice["result"]["contents"]);
    assert_eq!(upstream_requests(&up).await, before + 1);

    // A legacy client asks in its own era: its own entry, and no modern fields.
    let (_, x, _) = send(&gw, Some(BOB_KEY), &read(3, false)).await;
    assert_eq!(x.as_deref(), Some("miss"));
    let (_, x, legacy) = send(&gw, Some(BOB_KEY), &read(4, false)).await;
    assert_eq!(x.as_deref(), Some("hit"));
    assert!(
        legacy["result"].get("ttlMs").is_none() && legacy["result"].get("cacheScope").is_none(),
        "{legacy}"
    );
    // Legacy answers are private: alice's legacy question is hers alone.
    let (_, x, _) = send(&gw, Some(ALICE_KEY), &read(5, false)).await;
    assert_eq!(x.as_deref(), Some("miss"));
}

#[tokio::test]
async fn the_operators_ttl_caps_what_is_kept() {
    let yaml = cache_yaml("").replace("lists: {ttl: 30s}", "lists: {ttl: 1s}");
    let (_up, gw) = one_upstream(&yaml).await;
    let list = |id: i64| message(json!(id), "tools/list", json!({}));
    let (_, x, v) = send(&gw, None, &list(1)).await;
    assert_eq!(x.as_deref(), Some("miss"), "{v}\n{}\n{yaml}", gw.log());
    assert_eq!(send(&gw, None, &list(2)).await.1.as_deref(), Some("hit"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        send(&gw, None, &list(3)).await.1.as_deref(),
        Some("miss"),
        "expired"
    );
}

#[tokio::test]
async fn the_memory_level_keeps_to_its_sizes_and_counts_what_it_drops() {
    let extra = "  memory: {max_size: 4KiB, max_entry_size: 1KiB}\n  x_cache_header: false\n";
    let (up, gw) = one_upstream(&cache_yaml(extra)).await;
    let echo = |id: i64, text: &str| {
        message(
            json!(id),
            "tools/call",
            json!({"name": "echo", "arguments": {"reply_text": text}}),
        )
    };
    // Larger than max_entry_size: answered whole, never kept.
    let big = "x".repeat(2048);
    let before = upstream_requests(&up).await;
    for id in [1, 2] {
        let (s, x, v) = send(&gw, None, &echo(id, &big)).await;
        assert_eq!((s, x), (200, None), "no X-Cache with x_cache_header: false");
        assert_eq!(v["result"]["content"][0]["text"], big.as_str());
    }
    assert_eq!(upstream_requests(&up).await, before + 2, "not kept");
    // Small answers are kept (no header says so: the upstream's count does).
    let (_, _, kept) = send(&gw, None, &echo(3, "small")).await;
    let before = upstream_requests(&up).await;
    let (_, _, hit) = send(&gw, None, &echo(4, "small")).await;
    assert_eq!(hit["result"], kept["result"]);
    assert_eq!(upstream_requests(&up).await, before, "a hit");
    // Many distinct answers: past max_size the least recently used go, counted as such.
    for id in 0..40 {
        send(&gw, None, &echo(10 + id, &format!("{id:0>100}"))).await;
    }
    let sizes = gw.admin_api("/api/v1/cache", ADMIN_TOKEN).await;
    let bytes = sizes["memory"]["bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes <= 4096, "{sizes}");
    assert_eq!(sizes["routes"][0]["bytes"], bytes, "{sizes}");
    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_cache_evictions_total{cause=\"size\",route=\"/mcp\"}"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "mcp_gateway_cache_memory_bytes{{route=\"/mcp\"}} {bytes}"
        )),
        "the gauge is the memory level's size: {m}"
    );
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let (up, gw) = one_upstream(&cache_yaml("")).await;
    let before = upstream_requests(&up).await;
    let slow = |id: i64| message(json!(id), "tools/list", json!({"_meta": {"delay": 0.5}}));
    let answers = futures_util::future::join_all((0..8).map(|i| {
        let body = slow(i);
        let gw = &gw;
        async move { send(gw, None, &body).await }
    }))
    .await;
    for (i, (s, _, v)) in answers.iter().enumerate() {
        assert_eq!((*s, v["id"].clone()), (200, json!(i)), "{v}");
    }
    assert_eq!(
        upstream_requests(&up).await,
        before + 1,
        "one upstream request for eight misses"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_cache_requests_total{result=\"coalesced\",route=\"/mcp\"} 7"),
        "{m}"
    );
}

#[tokio::test]
async fn an_sse_answer_is_kept_once_its_result_event_is_whole() {
    let (up, gw) = one_upstream(&cache_yaml("")).await;
    let before = upstream_requests(&up).await;
    // The stream stays open 3 s after its result event; the client acts on the event.
    let body = message(
        json!(1),
        "tools/list",
        json!({"_meta": {"sse": true, "linger": 3}}),
    );
    let mut resp = post(&client(), &gw.url("/mcp"), body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "x-cache").as_deref(), Some("miss"));
    let mut events = String::new();
    while !events.contains("\"result\"") {
        let chunk = resp.chunk().await.unwrap().expect("the result event");
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The same question while that stream is still open: a hit, not a wait for it.
    let again = message(
        json!(2),
        "tools/list",
        json!({"_meta": {"sse": true, "linger": 3}}),
    );
    let (s, x, v) = send(&gw, None, &again).await;
    assert_eq!((s, x.as_deref()), (200, Some("hit")), "{v}");
    assert_eq!(v["id"], 2);
    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_cache_requests_total{result=\"hit\",route=\"/mcp\"} 1")
            && !m.contains("result=\"coalesced\""),
        "{m}"
    );
    assert_eq!(upstream_requests(&up).await, before + 1);
    drop(resp);
}

#[tokio::test]
async fn an_upstreams_list_changed_drops_its_entries() {
    let (_up, gw) = one_upstream(&cache_yaml("")).await;
    let list = |id: i64| message(json!(id), "tools/list", json!({}));
    assert_eq!(send(&gw, None, &list(1)).await.1.as_deref(), Some("miss"));
    assert_eq!(send(&gw, None, &list(2)).await.1.as_deref(), Some("hit"));
    // The upstream's GET stream carries notifications/tools/list_changed (then a
    // resources/updated, which drops them too, and a request of the server's: read up to
    // that last one, so no drop comes after the next list).
    let mut stream = client()
        .get(gw.url("/mcp?notify=1&delay=0.5"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("roots/list") {
        let chunk = stream.chunk().await.unwrap();
        let chunk = chunk.unwrap_or_else(|| panic!("the stream ended early: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("list_changed"), "{seen}");
    assert_eq!(
        send(&gw, None, &list(3)).await.1.as_deref(),
        Some("miss"),
        "dropped"
    );
    assert_eq!(send(&gw, None, &list(4)).await.1.as_deref(), Some("hit"));
}

#[tokio::test]
async fn the_gateways_own_listen_hears_a_modern_upstreams_list_changed() {
    let (up, gw) = one_upstream(&cache_yaml("")).await;
    // The gateway listens to the server itself (no client stream is open).
    let listening = eventually(Duration::from_secs(10), || async {
        up.state().await["listeners"].as_u64() == Some(1)
    })
    .await;
    assert!(listening, "{}", gw.log());
    let list = |id: i64| message(json!(id), "tools/list", json!({"_meta": modern_meta()}));
    assert_eq!(send(&gw, None, &list(1)).await.1.as_deref(), Some("miss"));
    assert_eq!(send(&gw, None, &list(2)).await.1.as_deref(), Some("hit"));
    let change = message(json!(3), "tools/call", json!({"name": "change_lists"}));
    assert_eq!(send(&gw, None, &change).await.0, 200);
    let dropped = eventually(Duration::from_secs(5), || async {
        let body = message(json!(4), "tools/list", json!({"_meta": modern_meta()}));
        send(&gw, None, &body).await.1.as_deref() == Some("miss")
    })
    .await;
    assert!(
        dropped,
        "the list_changed on the gateway's listen dropped the entries"
    );
}

#[tokio::test]
async fn the_admin_api_shows_sizes_and_purges() {
    let (_up, gw) = one_upstream(&cache_yaml("")).await;
    let list = |id: i64| message(json!(id), "tools/list", json!({}));
    let call = |id: i64| message(json!(id), "tools/call", json!({"name": "echo"}));
    send(&gw, None, &list(1)).await;
    send(&gw, None, &call(2)).await;
    let sizes = gw.admin_api("/api/v1/cache", ADMIN_TOKEN).await;
    assert_eq!(sizes["memory"]["entries"], 2, "{sizes}");
    assert!(sizes["memory"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(sizes["routes"][0]["route"], "/mcp");
    assert_eq!(sizes["routes"][0]["entries"], 2, "{sizes}");
    assert_eq!(sizes["routes"][0]["bytes"], sizes["memory"]["bytes"]);

    let purge = |body: &str| {
        client()
            .post(gw.admin_url("/api/v1/cache/purge"))
            .bearer_auth(ADMIN_TOKEN)
            .body(body.to_string())
            .send()
    };
    let r = purge(r#"{"method": "tools/call", "tool": "echo"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["purged"], 1);
    assert_eq!(send(&gw, None, &call(3)).await.1.as_deref(), Some("miss"));
    assert_eq!(
        send(&gw, None, &list(4)).await.1.as_deref(),
        Some("hit"),
        "other entries stay"
    );
    let r = purge(r#"{"route": "/mcp"}"#).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["purged"], 2);
    assert_eq!(send(&gw, None, &list(5)).await.1.as_deref(), Some("miss"));
    assert_eq!(purge(r#"{"route": "/nope"}"#).await.unwrap().status(), 404);
    assert_eq!(purge(r#"{"routes": 1}"#).await.unwrap().status(), 400);
    let unauthorized = client()
        .post(gw.admin_url("/api/v1/cache/purge"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test]
async fn a_reload_that_changes_a_route_drops_its_entries() {
    let (_up, gw) = one_upstream(&cache_yaml("")).await;
    let list = |id: i64| message(json!(id), "tools/list", json!({}));
    send(&gw, None, &list(1)).await;
    assert_eq!(send(&gw, None, &list(2)).await.1.as_deref(), Some("hit"));
    let reload = || {
        client()
            .post(gw.admin_url("/api/v1/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    // The same rules: entries stay.
    assert_eq!(reload().await.unwrap().status(), 200);
    assert_eq!(send(&gw, None, &list(3)).await.1.as_deref(), Some("hit"));
    let path = gw.config_path();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("lists: {ttl: 30s}", "lists: {ttl: 20s}");
    std::fs::write(&path, text).unwrap();
    let r = reload().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        send(&gw, None, &list(4)).await.1.as_deref(),
        Some("miss"),
        "the route changed"
    );
}

#[tokio::test]
async fn bad_cache_settings_are_named_by_path() {
    let up = "http://127.0.0.1:9/mcp".to_string();
    let bad = config_for(
        &[up],
        "routes:\n  - {path: /mcp/a, group: default}\ncache:\n  memory: {max_size: 1MiB, max_entry_size: 2MiB}\n  redis: {url: 'http://x', timeout: 0}\n  routes:\n    - path: /mcp/b\n      lists: {ttl: 0}\n      tools: [{name: '[bad', ttl: 1s}]\n",
    );
    let bad = bad.replace("{port}", "8080");
    expect_invalid(
        &bad,
        &[
            "cache.memory.max_entry_size",
            "cache.redis.url",
            "cache.redis.timeout",
            "cache.routes[0].path: \"/mcp/b\" is not a configured route's or virtual server's path",
            "cache.routes[0].lists.ttl",
            "cache.routes[0].tools[0].name",
        ],
    );
}

#[tokio::test]
async fn replicas_share_entries_and_invalidations_through_redis() {
    let redis = RedisServer::start(None);
    let up = Upstream::start("u");
    let extra = cache_yaml(&format!(
        "  redis: {{url: \"{}\", timeout: 500ms}}\n",
        redis.url()
    ));
    let yaml = config_for(&[up.url()], &extra);
    let a = Gateway::start(&yaml).await;
    let b = Gateway::start(&yaml).await;
    let list = |id: i64| message(json!(id), "tools/list", json!({}));
    // Both replicas use Redis before the test goes on.
    for gw in [&a, &b] {
        let up = eventually(Duration::from_secs(10), || async {
            gw.metrics()
                .await
                .contains("mcp_gateway_cache_redis_up{backend=\"redis\"} 1")
        })
        .await;
        assert!(up, "{}", gw.log());
    }
    let before = upstream_requests(&up).await;
    let (_, x, first) = send(&a, None, &list(1)).await;
    assert_eq!(x.as_deref(), Some("miss"));
    // The entry reaches Redis in the background; b then finds it there.
    let shared = eventually(Duration::from_secs(5), || async {
        let mut c = redis.connect();
        let keys: Vec<String> = redis::cmd("KEYS").arg("mcpgw:e:*").query(&mut c).unwrap();
        !keys.is_empty()
    })
    .await;
    assert!(shared);
    let (_, x, from_b) = send(&b, None, &list(2)).await;
    assert_eq!(x.as_deref(), Some("hit"), "{from_b}");
    assert_eq!(from_b["result"], first["result"]);
    assert_eq!(upstream_requests(&up).await, before + 1);
    assert!(b.metrics().await.contains("result=\"redis_hit\""));
    // Purged on a: gone from b's memory and from Redis.
    let r = client()
        .post(a.admin_url("/api/v1/cache/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dropped = eventually(Duration::from_secs(5), || async {
        b.admin_api("/api/v1/cache", ADMIN_TOKEN).await["memory"]["entries"] == 0
    })
    .await;
    assert!(dropped, "b heard the invalidation");
    assert_eq!(send(&b, None, &list(3)).await.1.as_deref(), Some("miss"));
}

#[tokio::test]
async fn redis_down_or_stopped_costs_clients_nothing() {
    let mut redis = RedisServer::start(None);
    let (up, gw) = one_upstream(&cache_yaml(&format!(
        "  redis: {{url: \"{}\", timeout: 100ms}}\n",
        redis.url()
    )))
    .await;
    let ready = eventually(Duration::from_secs(10), || async {
        gw.metrics()
            .await
            .contains("mcp_gateway_cache_redis_up{backend=\"redis\"} 1")
    })
    .await;
    assert!(ready);
    let list = |id: i64, cursor: &str| message(json!(id), "tools/list", json!({"cursor": cursor}));
    // Stopped: it accepts and never answers; each operation gives up at the timeout.
    redis.pause(true);
    for (i, cursor) in ["a", "a", "b"].iter().enumerate() {
        let (s, _, v) = send(&gw, None, &list(i as i64, cursor)).await;
        assert_eq!((s, v["id"].clone()), (200, json!(i)), "{v}");
    }
    let m = gw.metrics().await;
    assert!(
        m.contains(
            "mcp_gateway_cache_redis_errors_total{op=\"get\",reason=\"timeout\",route=\"/mcp\"}"
        ),
        "Redis errors are counted per route: {m}"
    );
    assert!(
        m.contains("mcp_gateway_cache_redis_up{backend=\"redis\"} 0"),
        "{m}"
    );
    redis.pause(false);
    // Killed: memory alone serves.
    redis.kill();
    let n = upstream_requests(&up).await;
    assert_eq!(send(&gw, None, &list(10, "c")).await.0, 200);
    let (s, x, _) = send(&gw, None, &list(11, "c")).await;
    assert_eq!((s, x.as_deref()), (200, Some("hit")));
    assert_eq!(upstream_requests(&up).await, n + 1);
    assert!(gw.wait_log("cache: Redis at", Duration::from_secs(5)).await);
}
