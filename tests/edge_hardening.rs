//! The edge against a hostile client, on the real binary: the client address the
//! upstream, rate limits, `ip_hash` and the access log see (`server.trusted_proxies`),
//! DNS rebinding (`server.allowed_hosts`, `admin.allowed_hosts`: a foreign `Host` is
//! answered 421) and same-origin browser requests (their `Origin` is not passed on).

mod common;

use common::*;
use std::collections::HashSet;
use std::time::Duration;

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// `config_for` with `lines` added to the `server:` block.
fn with_server(urls: &[String], lines: &str, extra: &str) -> String {
    config_for(urls, extra).replacen("server:\n", &format!("server:\n{lines}"), 1)
}

/// The JSON body of a raw answer.
fn raw_body(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn rate_limit(per_minute: u32) -> String {
    format!(
        "security:\n  rate_limiting:\n    rules:\n      - {{name: per-ip, key_strategy: ip_address, requests_per_minute: {per_minute}}}\n"
    )
}

#[tokio::test]
async fn a_client_cannot_choose_the_address_the_upstream_sees() {
    let (_up, gw) = one_upstream(&rate_limit(1)).await;
    let c = client();
    let r = post(&c, &gw.url("/mcp"), LIST)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https;host=evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let seen = received(r).await;
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    for dropped in ["forwarded", "x-forwarded-host", "x-forwarded-port"] {
        assert!(
            h.get(dropped).is_none(),
            "{dropped} reached the upstream: {h}"
        );
    }
    // Another spoofed address is the same client: the same rate-limit bucket.
    let r = post(&c, &gw.url("/mcp"), LIST)
        .header("x-forwarded-for", "7.7.7.7")
        .send()
        .await
        .unwrap();
    expect_error(r, 429, -32011).await;
    assert!(
        gw.wait_log("\"client_ip\":\"127.0.0.1\"", Duration::from_secs(10))
            .await,
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("6.6.6.6"), "{}", gw.log());
}

#[tokio::test]
async fn a_trusted_proxy_extends_the_chain_and_names_the_client() {
    let up = Upstream::start("u");
    let yaml = with_server(
        &[up.url()],
        "  trusted_proxies: [127.0.0.1/32]\n",
        &rate_limit(1),
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    let r = post(&c, &gw.url("/mcp"), LIST)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "mcp.example.com")
        .send()
        .await
        .unwrap();
    let seen = received(r).await;
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "{h}");
    assert_eq!(h["x-real-ip"], "6.6.6.6", "{h}");
    // What the proxy said about the client's connection passes.
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert_eq!(h["x-forwarded-host"], "mcp.example.com", "{h}");
    assert!(
        gw.wait_log("\"client_ip\":\"6.6.6.6\"", Duration::from_secs(10))
            .await,
        "{}",
        gw.log()
    );

    // The rate limit counts the forwarded client: the right-most untrusted address.
    let again = |xff: &'static str| post(&c, &gw.url("/mcp"), LIST).header("x-forwarded-for", xff);
    expect_refusal(again("9.9.9.9, 6.6.6.6"), 429, -32011).await;
    let r = again("7.7.7.7").send().await.unwrap();
    assert_eq!(r.status(), 200, "another client has its own bucket");
    expect_refusal(again("7.7.7.7"), 429, -32011).await;
    // Without the header the proxy itself is the client.
    let r = post(&c, &gw.url("/mcp"), LIST).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn ip_hash_hashes_the_client_a_trusted_proxy_names() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let urls = [a.url(), b.url()];
    let strategy = |yaml: String| {
        yaml.replacen(
            "    default:\n",
            "    default:\n      strategy: ip_hash\n",
            1,
        )
    };
    let servers_for = |gw: &Gateway, xffs: Vec<String>| {
        let url = gw.url("/mcp");
        async move {
            let c = client();
            let mut seen = HashSet::new();
            for xff in xffs {
                let r = post(&c, &url, LIST)
                    .header("x-forwarded-for", xff)
                    .send()
                    .await
                    .unwrap();
                seen.insert(received(r).await["server"].as_str().unwrap().to_string());
            }
            seen
        }
    };
    let clients: Vec<String> = (1..=16).map(|i| format!("203.0.113.{i}")).collect();

    let trusted = Gateway::start(&strategy(with_server(
        &urls,
        "  trusted_proxies: [127.0.0.1]\n",
        "",
    )))
    .await;
    assert_eq!(
        servers_for(&trusted, clients.clone()).await.len(),
        2,
        "16 forwarded clients spread over both servers"
    );
    assert_eq!(
        servers_for(&trusted, vec!["203.0.113.7".into(); 4])
            .await
            .len(),
        1,
        "one client stays on one server"
    );
    drop(trusted);

    let direct = Gateway::start(&strategy(config_for(&urls, ""))).await;
    assert_eq!(
        servers_for(&direct, clients).await.len(),
        1,
        "spoofed addresses are one client"
    );
}

#[tokio::test]
async fn a_foreign_host_is_misdirected_on_the_proxy_port() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    let port = gw.port;
    for foreign in [
        format!("evil.example:{port}"),
        "localhost.evil.example".into(),
    ] {
        let r = post(&c, &gw.url("/mcp"), LIST)
            .header("host", foreign.as_str())
            .send()
            .await
            .unwrap();
        expect_error_naming(r, 421, -32600, "server.allowed_hosts").await;
    }
    // The default names of a loopback listener, on any port.
    for ok in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".into(),
    ] {
        let r = post(&c, &gw.url("/mcp"), LIST)
            .header("host", ok.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{ok}");
    }
    let r = post(&c, &format!("http://localhost:{port}/mcp"), LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.state().await["requests"],
        5,
        "no misdirected request got through"
    );

    // No Host at all: refused too, before the body is read.
    let answer = raw_request(
        port,
        "GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    let v = raw_body(&answer);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("no host"),
        "{v}"
    );

    // Health probes: an address (the kubelet sends the pod's) or no Host is fine, a
    // foreign name is not.
    for host in ["10.1.2.3:8080", "[fd00::1]:8080"] {
        let r = c
            .get(gw.url("/readiness"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let answer = raw_request(port, "GET /health HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    let r = c
        .get(gw.url("/health"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    expect_error(r, 421, -32600).await;
}

#[tokio::test]
async fn allowed_hosts_name_the_hosts_of_any_listener() {
    let up = Upstream::start("u");
    let yaml = with_server(
        &[up.url()],
        "  allowed_hosts: [mcp.example.com, \"*.corp.example\"]\n",
        "",
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    for (host, status) in [
        ("mcp.example.com", 200),
        ("MCP.example.com:8443", 200),
        ("a.b.corp.example", 200),
        ("corp.example", 421),
        ("localhost", 421),
        ("127.0.0.1", 421),
    ] {
        let r = post(&c, &gw.url("/mcp"), LIST)
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{host}");
    }

    // `[]`: any host, also on loopback.
    let any = Gateway::start(&with_server(&[up.url()], "  allowed_hosts: []\n", "")).await;
    let r = post(&c, &any.url("/mcp"), LIST)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_admin_port_refuses_foreign_hosts() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    let metrics = gw.admin_url("/metrics");
    let admin_port: u16 = metrics
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    for path in ["/metrics", "/dashboard", "/api/v1/summary"] {
        let r = c
            .get(gw.admin_url(path))
            .header("host", format!("evil.example:{admin_port}"))
            .send()
            .await
            .unwrap();
        expect_error_naming(r, 421, -32600, "admin.allowed_hosts").await;
    }
    for host in [
        format!("127.0.0.1:{admin_port}"),
        format!("localhost:{admin_port}"),
    ] {
        let r = c
            .get(&metrics)
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let r = c
        .get(gw.admin_url("/health"))
        .header("host", "10.0.0.7:9090")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer = raw_request(
        admin_port,
        "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");

    // A list of its own.
    let yaml = config_for(
        &[up.url()],
        "admin:\n  port: {admin_port}\n  allowed_hosts: [\"admin.example:*\", gw-admin.example]\n",
    );
    let (code, err) = validate(
        &yaml
            .replace("{port}", "8080")
            .replace("{admin_port}", "9090"),
    );
    assert_ne!(code, Some(0), "a port pattern is not a port");
    assert!(err.contains("admin.allowed_hosts[0]"), "{err}");
    let gw = Gateway::start(&yaml.replace("\"admin.example:*\", ", "")).await;
    let r = c
        .get(gw.admin_url("/metrics"))
        .header("host", "gw-admin.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 421, "the loopback names are the default only");
}

#[tokio::test]
async fn same_origin_requests_are_allowed_and_origin_is_not_forwarded() {
    let (up, gw) = one_upstream("").await;
    let c = client();
    let port = gw.port;
    for (url, origin) in [
        (gw.url("/mcp"), format!("http://127.0.0.1:{port}")),
        (
            format!("http://localhost:{port}/mcp"),
            format!("http://localhost:{port}"),
        ),
    ] {
        let r = post(&c, &url, LIST)
            .header("origin", origin.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some(origin.as_str())
        );
        let seen = received(r).await;
        assert!(
            seen["headers"].get("origin").is_none(),
            "the browser's Origin reached the upstream: {seen}"
        );
    }
    // Another port, scheme or name is another origin.
    for origin in [
        format!("http://127.0.0.1:{}", port + 1),
        format!("https://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let r = post(&c, &gw.url("/mcp"), LIST)
            .header("origin", origin.as_str())
            .send()
            .await
            .unwrap();
        expect_error(r, 403, -32012).await;
    }

    // Without a Host check the Host proves nothing (a rebinding page names its own):
    // only allowed_origins count.
    let yaml = with_server(
        &[up.url()],
        "  allowed_hosts: []\n",
        "security:\n  cors:\n    allowed_origins: [\"https://app.example\"]\n",
    );
    let open = Gateway::start(&yaml).await;
    let r = post(&c, &open.url("/mcp"), LIST)
        .header("origin", format!("http://127.0.0.1:{}", open.port))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, -32012).await;
    let r = post(&c, &open.url("/mcp"), LIST)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    let seen = received(r).await;
    assert!(seen["headers"].get("origin").is_none(), "{seen}");
}

#[tokio::test]
async fn http2_authority_is_the_host() {
    let dir = TempDir::new("edge-tls");
    make_cert(
        &dir,
        "server",
        "/CN=localhost",
        None,
        &["subjectAltName=DNS:localhost,DNS:evil.example,IP:127.0.0.1"],
    );
    let up = Upstream::start("u");
    let tls = format!(
        "  tls:\n    cert: {}\n    key: {}\n",
        dir.path("server.pem").display(),
        dir.path("server.key").display()
    );
    let yaml = with_server(&[up.url()], &tls, "");
    let (config, gw_dir, port) = Gateway::prepare(&yaml, &[]);
    let mut child = Gateway::spawn(&config, &gw_dir, &[], &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .resolve("evil.example", addr)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("gateway exited with {status}");
        }
        if let Ok(r) = c
            .get(format!("https://localhost:{port}/readiness"))
            .send()
            .await
        {
            if r.status() == 200 {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "gateway not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = post(&c, &format!("https://evil.example:{port}/mcp"), LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    expect_error_naming(r, 421, -32600, "evil.example").await;

    let origin = format!("https://localhost:{port}");
    let r = post(&c, &format!("{origin}/mcp"), LIST)
        .header("origin", origin.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let seen = received(r).await;
    assert!(seen["headers"].get("origin").is_none(), "{seen}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_trusted_proxies_and_allowed_hosts_are_config_errors() {
    let yaml = "server:\n  trusted_proxies: [\"10.0.0.0/8\", \"10.0.0.0/33\", nope, \"10.0.0.1/8\", \"fd00::/8\"]\n  allowed_hosts: [ok.example, \"bad host\", \"*.[::1]\"]\nadmin:\n  allowed_hosts: [\"a.example:99999\"]\nupstream:\n  groups:\n    default:\n      servers:\n        - {id: a, url: http://127.0.0.1:3001/mcp}\n";
    let (code, err) = validate(yaml);
    assert_ne!(code, Some(0), "{err}");
    for needle in [
        "server.trusted_proxies[1]: \"10.0.0.0/33\": the prefix length must be 0 to 32",
        "server.trusted_proxies[2]: \"nope\" is not an IP address",
        "server.trusted_proxies[3]: \"10.0.0.1/8\" has address bits set",
        "server.allowed_hosts[1]: \"bad host\" is not a host name",
        "server.allowed_hosts[2]",
        "admin.allowed_hosts[0]",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    for fine in [
        "trusted_proxies[0]",
        "trusted_proxies[4]",
        "allowed_hosts[0]:",
    ] {
        assert!(!err.contains(&format!("server.{fine}")), "{fine}: {err}");
    }
}

#[tokio::test]
async fn a_reload_changes_trusted_proxies_and_allowed_hosts() {
    let up = Upstream::start("u");
    let gw = Gateway::start(&with_server(
        &[up.url()],
        "  allowed_hosts: [a.example]\n",
        "",
    ))
    .await;
    let c = client();
    let call = |host: &'static str| {
        post(&c, &gw.url("/mcp"), LIST)
            .header("host", host)
            .header("x-forwarded-for", "6.6.6.6")
    };
    let seen = received(call("a.example").send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(call("b.example").send().await.unwrap().status(), 421);

    let config = gw.config_path();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  allowed_hosts: [a.example]\n",
        "  allowed_hosts: [b.example]\n  trusted_proxies: [127.0.0.1]\n",
    );
    std::fs::write(&config, text).unwrap();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(
        gw.wait_log("config reloaded from", Duration::from_secs(20))
            .await,
        "{}",
        gw.log()
    );
    assert_eq!(call("a.example").send().await.unwrap().status(), 421);
    let seen = received(call("b.example").send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
}

#[tokio::test]
async fn a_trusted_proxy_that_terminated_tls_tells_the_scheme() {
    let up = Upstream::start("u");
    let c = client();
    let send = |gw: &Gateway| {
        let origin = format!("https://localhost:{}", gw.port);
        post(&c, &format!("http://localhost:{}/mcp", gw.port), LIST)
            .header("origin", origin)
            .header("x-forwarded-proto", "https")
    };
    let proxied = Gateway::start(&with_server(
        &[up.url()],
        "  trusted_proxies: [127.0.0.1]\n",
        "",
    ))
    .await;
    let seen = received(send(&proxied).send().await.unwrap()).await;
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");
    // The same claim from a client that is no proxy: its scheme is the listener's.
    let direct = Gateway::start(&config_for(&[up.url()], "")).await;
    expect_refusal(send(&direct), 403, -32012).await;
}
