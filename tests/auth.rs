//! Client authentication against the real binary: a table of bad credentials (each
//! refused with 401, a JSON-RPC error and a challenge, and nothing reaching the
//! upstream), the happy path of each method, and credentials never forwarded.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";
const API_KEY: &str = "key-for-the-ci-bot-0123";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A private key (PKCS#8 PEM) and its public key, made by openssl.
fn keypair(dir: &TempDir, name: &str, genpkey: &[&str]) -> (String, String) {
    let private = dir.path(&format!("{name}.pem"));
    let public = dir.path(&format!("{name}.pub.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", private.to_str().unwrap()]);
    openssl(&args);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (
        std::fs::read_to_string(private).unwrap(),
        public.to_string_lossy().into_owned(),
    )
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn good_claims() -> Value {
    json!({"sub": "alice", "iss": "https://issuer.test", "aud": "mcp-gateway", "exp": now() + 600, "scope": "tools:call tools:list", "client_id": "app-1"})
}

fn yaml(up: &Upstream, rs_pub: &str, es_pub: &str, argon: &str, bcrypt_hash: &str) -> String {
    let key_hash = sha256_hex(API_KEY.as_bytes());
    let routes = "routes:\n  - {path: /mcp/hs, group: default}\n  - {path: /mcp/rs, group: default}\n  - {path: /mcp/es, group: default}\n  - {path: /mcp/open, group: default}\n";
    let security = format!(
        "security:\n  auth:\n    - name: hs\n      routes: [/mcp/hs]\n      jwt: {{secret: \"{SECRET}\", algorithms: [HS256], issuer: \"https://issuer.test\", audience: mcp-gateway}}\n      api_keys:\n        keys:\n          - {{id: ci-bot, sha256: \"{key_hash}\"}}\n      basic:\n        users:\n          - {{name: alice, hash: \"{argon}\"}}\n          - {{name: bob, hash: \"{bcrypt_hash}\"}}\n    - name: rs\n      routes: [/mcp/rs]\n      jwt: {{public_key_file: \"{rs_pub}\", algorithms: [RS256, PS256]}}\n    - name: es\n      routes: [/mcp/es]\n      jwt: {{public_key_file: \"{es_pub}\", algorithms: [ES256], required_claims: [sub]}}\n"
    );
    config_for(&[up.url()], &format!("{routes}{security}"))
}

struct Setup {
    up: Upstream,
    gw: Gateway,
    rs_private: String,
    es_private: String,
    rs_public_pem: String,
    _dir: TempDir,
}

async fn setup() -> Setup {
    let dir = TempDir::new("auth");
    let (rs_private, rs_pub) = keypair(
        &dir,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (es_private, es_pub) = keypair(
        &dir,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let rs_public_pem = std::fs::read_to_string(&rs_pub).unwrap();
    let argon = {
        use argon2::password_hash::PasswordHasher;
        argon2::Argon2::default()
            .hash_password(b"wonderland")
            .unwrap()
            .to_string()
    };
    let bcrypt_hash = bcrypt::hash("builder", 4).unwrap();
    let up = Upstream::start("u");
    let gw = Gateway::start(&yaml(&up, &rs_pub, &es_pub, &argon, &bcrypt_hash)).await;
    Setup {
        up,
        gw,
        rs_private,
        es_private,
        rs_public_pem,
        _dir: dir,
    }
}

/// Send a `tools/list` to `path` with extra headers; the status and JSON body.
async fn call(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, Value, Option<String>) {
    let mut req = post(&client(), &gw.url(path), LIST);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.json().await.unwrap(), challenge)
}

/// A route, the headers to send, and what to expect (a refusal reason or a subject).
type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);

fn bearer(t: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {t}"))
}

#[tokio::test]
async fn bad_credentials_are_refused_and_never_reach_the_upstream() {
    let s = setup().await;
    let now = now();
    let alg_none = {
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(good_claims().to_string());
        format!("{head}.{body}.")
    };
    let forged = {
        let t = hs(&good_claims());
        let (rest, _) = t.rsplit_once('.').unwrap();
        format!("{rest}.{}", URL_SAFE_NO_PAD.encode(b"not the signature"))
    };
    // An HS256 token signed with the RSA public key as its secret: key confusion.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &good_claims(),
        &EncodingKey::from_secret(s.rs_public_pem.as_bytes()),
    )
    .unwrap();
    let mut claims = good_claims();
    claims["exp"] = json!(now - 3600);
    let expired = hs(&claims);
    let mut claims = good_claims();
    claims["nbf"] = json!(now + 3600);
    let not_yet = hs(&claims);
    let mut claims = good_claims();
    claims["iss"] = json!("https://evil.test");
    let wrong_iss = hs(&claims);
    let mut claims = good_claims();
    claims["aud"] = json!("someone-else");
    let wrong_aud = hs(&claims);
    let mut claims = good_claims();
    claims.as_object_mut().unwrap().remove("exp");
    let no_exp = hs(&claims);
    let es_no_sub = encode(
        &Header::new(Algorithm::ES256),
        &json!({"exp": now + 600}),
        &EncodingKey::from_ec_pem(s.es_private.as_bytes()).unwrap(),
    )
    .unwrap();
    let basic = |u: &str, p: &str| {
        (
            "authorization",
            format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))),
        )
    };

    let before = s.up.state().await["requests"].as_u64().unwrap();
    let cases: Vec<Case> = vec![
        ("/mcp/hs", vec![], "missing"),
        (
            "/mcp/hs",
            vec![("authorization", "Digest x".into())],
            "unsupported_scheme",
        ),
        ("/mcp/hs", vec![bearer("garbage")], "malformed"),
        ("/mcp/hs", vec![bearer(&alg_none)], "malformed"),
        ("/mcp/hs", vec![bearer(&forged)], "bad_signature"),
        ("/mcp/hs", vec![bearer(&expired)], "expired"),
        ("/mcp/hs", vec![bearer(&not_yet)], "not_yet_valid"),
        ("/mcp/hs", vec![bearer(&wrong_iss)], "wrong_issuer"),
        ("/mcp/hs", vec![bearer(&wrong_aud)], "wrong_audience"),
        ("/mcp/hs", vec![bearer(&no_exp)], "missing_claim"),
        ("/mcp/rs", vec![bearer(&confused)], "wrong_algorithm"),
        (
            "/mcp/rs",
            vec![bearer(&hs(&good_claims()))],
            "wrong_algorithm",
        ),
        ("/mcp/es", vec![bearer(&es_no_sub)], "missing_claim"),
        (
            "/mcp/hs",
            vec![("x-api-key", "wrong-key".into())],
            "bad_api_key",
        ),
        ("/mcp/hs", vec![basic("alice", "nope")], "bad_password"),
        (
            "/mcp/hs",
            vec![basic("nobody", "wonderland")],
            "bad_password",
        ),
        (
            "/mcp/hs",
            vec![("authorization", "Basic !!!".into())],
            "bad_password",
        ),
    ];
    for (path, headers, reason) in &cases {
        let (status, v, challenge) = call(&s.gw, path, headers).await;
        assert_eq!(status, 401, "{path} {headers:?}: {v}");
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"], -32010, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        let challenge = challenge.unwrap_or_else(|| panic!("no challenge for {headers:?}"));
        assert!(challenge.contains("Bearer"), "{challenge}");
        let metric =
            format!("mcp_gateway_auth_rejections_total{{reason=\"{reason}\",route=\"{path}\"}}");
        let metrics = s.gw.metrics().await;
        assert!(
            metrics.contains(&metric),
            "{metric} for {headers:?} not in metrics"
        );
    }
    let (_, _, challenge) = call(&s.gw, "/mcp/hs", &[]).await;
    let challenge = challenge.unwrap();
    assert!(
        challenge.contains("Basic") && challenge.contains("ApiKey header=\"x-api-key\""),
        "{challenge}"
    );
    assert_eq!(
        s.up.state().await["requests"].as_u64().unwrap(),
        before,
        "nothing refused reached the upstream"
    );
    assert!(!s.gw.log().contains(&forged) && !s.gw.log().contains(API_KEY));
}

#[tokio::test]
async fn each_method_lets_its_client_in_and_no_credential_is_forwarded() {
    let s = setup().await;
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "svc-rs", "exp": now() + 600}),
        &EncodingKey::from_rsa_pem(s.rs_private.as_bytes()).unwrap(),
    )
    .unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &json!({"sub": "svc-es", "exp": now() + 600}),
        &EncodingKey::from_ec_pem(s.es_private.as_bytes()).unwrap(),
    )
    .unwrap();
    let basic = |u: &str, p: &str| {
        (
            "authorization",
            format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))),
        )
    };
    let cases: Vec<Case> = vec![
        ("/mcp/hs", vec![bearer(&hs(&good_claims()))], "alice"),
        ("/mcp/hs", vec![("x-api-key", API_KEY.into())], "ci-bot"),
        ("/mcp/hs", vec![basic("alice", "wonderland")], "alice"),
        ("/mcp/hs", vec![basic("bob", "builder")], "bob"),
        ("/mcp/rs", vec![bearer(&rs)], "svc-rs"),
        ("/mcp/es", vec![bearer(&es)], "svc-es"),
        // A route no rule covers is open.
        ("/mcp/open", vec![], ""),
    ];
    for (path, headers, subject) in &cases {
        let (status, v, _) = call(&s.gw, path, headers).await;
        assert_eq!(status, 200, "{path} {headers:?}: {v}");
        let h = &v["result"]["headers"];
        assert!(
            h.get("authorization").is_none(),
            "credential forwarded: {h}"
        );
        assert!(h.get("x-api-key").is_none(), "API key forwarded: {h}");
        if !subject.is_empty() {
            let needle = format!("\"identity\":\"{subject}\"");
            assert!(
                s.gw.wait_log(&needle, Duration::from_secs(5)).await,
                "{needle} not in the access log"
            );
        }
    }
    // The rule that let each client in is named in the log.
    let log = s.gw.log();
    for rule in ["hs", "rs", "es"] {
        assert!(
            log.contains(&format!("\"auth_rule\":\"{rule}\"")),
            "rule {rule} not logged"
        );
    }
}

#[test]
fn bad_auth_config_lists_every_problem() {
    expect_invalid(
        "upstream:\n  groups:\n    default:\n      servers:\n        - {id: a, url: http://127.0.0.1:3001/mcp}\nsecurity:\n  auth:\n    - routes: [/nope]\n      jwt: {secret: short, algorithms: [RS256]}\n      api_keys: {keys: [{id: x, sha256: abc}]}\n      basic: {users: [{name: a, hash: plaintext}]}\n    - jwt: {public_key_file: /no/such.pem, algorithms: [HS999]}\n    - jwt: {jwks_url: \"ftp://idp/keys\", algorithms: [HS256], jwks_refresh: 1s}\n    - jwt: {jwks_file: /no/jwks.json, secret: x, algorithms: [RS256]}\n",
        &[
            "security.auth[0].routes[0]: \"/nope\" is not a configured route",
            "security.auth[0].jwt.secret: must be at least 32 bytes",
            "security.auth[0].jwt.algorithms[0]: RS256 does not match the HMAC secret key",
            "security.auth[0].api_keys.keys[0].sha256: must be 64 hex digits",
            "security.auth[0].basic.users[0].hash: must be an argon2",
            "security.auth[1].jwt.public_key_file: cannot read \"/no/such.pem\"",
            "security.auth[1].jwt.algorithms[0]: \"HS999\" is not a JWT algorithm",
            "security.auth[2].jwt.jwks_url: \"ftp://idp/keys\" is not an http(s) URL",
            "security.auth[2].jwt.algorithms[0]: HS256: a JWKS supplies public keys",
            "security.auth[2].jwt.jwks_refresh: must be at least 5s",
            "security.auth[3].jwt: set exactly one of secret, public_key_file, jwks_file, jwks_url",
        ],
    );
}

/// A JWKS document holding the public halves of `keys` (kid, private PEM).
fn jwks(keys: &[(&str, &str)]) -> String {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    let keys = keys
        .iter()
        .map(|(kid, pem)| {
            let mut jwk = Jwk::from_encoding_key(
                &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
                Algorithm::RS256,
            )
            .unwrap();
            jwk.common.key_id = Some(kid.to_string());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn rs256(kid: &str, pem: &str, sub: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(
        &header,
        &json!({"sub": sub, "exp": now() + 600}),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn jwks_from_a_file_and_from_a_url_that_rotates() {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::{Arc, Mutex};

    let dir = TempDir::new("jwks");
    let (k1, _) = keypair(
        &dir,
        "k1",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (k2, _) = keypair(
        &dir,
        "k2",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let file = dir.path("jwks.json");
    std::fs::write(&file, jwks(&[("k1", &k1)])).unwrap();

    // A JWKS endpoint whose document the test can change.
    let served = Arc::new(Mutex::new(jwks(&[("k1", &k1)])));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_port = listener.local_addr().unwrap().port();
    {
        let (served, fetches) = (served.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (served, fetches) = (served.clone(), fetches.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let body = served.lock().unwrap().clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from(body),
                            )))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }

    let up = Upstream::start("u");
    let extra = format!(
        "routes:\n  - {{path: /mcp/file, group: default}}\n  - {{path: /mcp/url, group: default}}\nsecurity:\n  auth:\n    - routes: [/mcp/file]\n      jwt: {{jwks_file: \"{}\", algorithms: [RS256]}}\n    - routes: [/mcp/url]\n      jwt: {{jwks_url: \"http://127.0.0.1:{jwks_port}/jwks.json\", algorithms: [RS256]}}\n",
        file.display()
    );
    let gw = Gateway::start(&config_for(&[up.url()], &extra)).await;

    // From the file: its key works, a key it does not hold is refused.
    assert_eq!(
        call(&gw, "/mcp/file", &[bearer(&rs256("k1", &k1, "a"))])
            .await
            .0,
        200
    );
    let (status, v, _) = call(&gw, "/mcp/file", &[bearer(&rs256("k2", &k2, "a"))]).await;
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no key \"k2\""),
        "{v}"
    );

    // From the URL: fetched on first use.
    assert_eq!(
        call(&gw, "/mcp/url", &[bearer(&rs256("k1", &k1, "b"))])
            .await
            .0,
        200
    );
    let first = fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(first, 1);
    // The identity provider rotates to k2: a token naming the new kid makes the gateway
    // reload (at most every 5 s), and then it is accepted.
    *served.lock().unwrap() = jwks(&[("k2", &k2)]);
    tokio::time::sleep(Duration::from_millis(5200)).await;
    assert_eq!(
        call(&gw, "/mcp/url", &[bearer(&rs256("k2", &k2, "c"))])
            .await
            .0,
        200
    );
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Unknown kids do not make it fetch on every request.
    for _ in 0..3 {
        assert_eq!(
            call(&gw, "/mcp/url", &[bearer(&rs256("k9", &k1, "d"))])
                .await
                .0,
            401
        );
    }
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// An OAuth-protected route (RFC 9728): metadata, challenges that point to it, the
/// token's audience, required scopes, and policies that ask for more scopes.
#[tokio::test]
async fn oauth_resource_server() {
    let dir = TempDir::new("oauth");
    let (private, public) = keypair(
        &dir,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let up = Upstream::start("u");
    let security = format!(
        r#"security:
  auth:
    - name: oauth
      routes: [/mcp]
      jwt: {{public_key_file: "{public}", algorithms: [RS256], issuer: "https://as.test"}}
      oauth:
        resource: "http://127.0.0.1:{{port}}/mcp"
        authorization_servers: ["https://as.test"]
        scopes_supported: [mcp, tools.write]
        required_scopes: [mcp]
        resource_name: Test tools
  policies:
    - {{effect: allow, scopes: [tools.write], tools: [status]}}
    - {{effect: deny, tools: [status]}}
    - {{effect: allow}}
"#
    );
    let gw = Gateway::start(&config_for(&[up.url()], &security)).await;
    let resource = gw.url("/mcp");
    let metadata_url = gw.url("/.well-known/oauth-protected-resource/mcp");

    // The metadata, at the route's well-known path and at the root.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resp = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(
            doc,
            json!({
                "resource": resource,
                "authorization_servers": ["https://as.test"],
                "scopes_supported": ["mcp", "tools.write"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Test tools",
            })
        );
    }

    let token = |aud: &str, scope: &str| {
        encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "carol", "iss": "https://as.test", "aud": aud, "exp": now() + 600, "scope": scope}),
            &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let before = up.state().await["requests"].as_i64().unwrap();

    // No token: 401 pointing to the metadata, with the scope to ask for.
    let (status, v, challenge) = call(&gw, "/mcp", &[]).await;
    assert_eq!((status, v["error"]["code"].as_i64()), (401, Some(-32010)));
    assert_eq!(
        challenge.unwrap(),
        format!(
            "Bearer realm=\"mcp-gateway\", resource_metadata=\"{metadata_url}\", scope=\"mcp\""
        )
    );
    // A token for another resource: 401 invalid_token.
    let (status, v, challenge) = call(
        &gw,
        "/mcp",
        &[bearer(&token("https://other.test/mcp", "mcp"))],
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not for this audience"));
    let challenge = challenge.unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains(&metadata_url), "{challenge}");
    // The right audience without the required scope: 403 insufficient_scope.
    let (status, v, challenge) = call(&gw, "/mcp", &[bearer(&token(&resource, "other"))]).await;
    assert_eq!(
        (status, v["error"]["code"].as_i64()),
        (403, Some(-32013)),
        "{v}"
    );
    assert_eq!(
        challenge.unwrap(),
        format!("Bearer error=\"insufficient_scope\", scope=\"mcp\", resource_metadata=\"{metadata_url}\"")
    );
    assert_eq!(up.state().await["requests"].as_i64().unwrap(), before);

    // A good token gets in.
    let good = token(&resource, "mcp");
    let (status, v, _) = call(&gw, "/mcp", &[bearer(&good)]).await;
    assert_eq!(status, 200, "{v}");
    // A tool that needs more: 403 naming the scopes to ask for (step-up).
    let resp = post(
        &client(),
        &resource,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"status"}}"#,
    )
    .header("authorization", format!("Bearer {good}"))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        format!("Bearer error=\"insufficient_scope\", scope=\"mcp tools.write\", resource_metadata=\"{metadata_url}\"")
    );
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .ends_with("denies tools/call of tool \"status\" to subject \"carol\" without the scope(s) tools.write"));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            r#"mcp_gateway_auth_rejections_total{reason="insufficient_scope",route="/mcp"} 1"#
        ),
        "{metrics}"
    );
}

#[test]
fn bad_oauth_config_lists_every_problem() {
    expect_invalid(
        "upstream:\n  groups:\n    default:\n      servers:\n        - {id: a, url: http://127.0.0.1:3001/mcp}\nsecurity:\n  auth:\n    - api_keys: {keys: [{id: x, sha256: 0000000000000000000000000000000000000000000000000000000000000000}]}\n      oauth: {resource: /mcp, authorization_servers: [not-a-url]}\n    - routes: [/mcp]\n      jwt: {secret: a-test-secret-that-is-long-enough-0123456789, algorithms: [HS256], audience: other}\n      oauth: {resource: https://gw.test/mcp}\n",
        &[
            "security.auth[0].oauth: needs jwt",
            "security.auth[0].routes: an OAuth rule describes one protected resource",
            "security.auth[0].oauth.resource: \"/mcp\" must be the route's absolute URL",
            "security.auth[0].oauth.authorization_servers[0]: \"not-a-url\" is not an http(s) URL",
            "security.auth[1].jwt.audience: leave it unset",
            "security.auth[1].oauth.authorization_servers: list at least one authorization server",
        ],
    );
}
