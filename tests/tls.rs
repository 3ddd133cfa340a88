//! TLS termination against the real binary: HTTPS to the upstream, HTTP/2 by ALPN, HSTS,
//! client certificates (required, optional + an auth rule), and renewed certificates
//! served after a zero-downtime upgrade. Certificates are made at test time by `openssl`.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// A test CA, server certificates A and B for 127.0.0.1, a client certificate it issued
/// and a self-signed one.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: TempDir::new("pki"),
        };
        pki.make(
            "ca",
            "/CN=Test CA",
            None,
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let server = [
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "extendedKeyUsage=serverAuth",
            "basicConstraints=critical,CA:FALSE",
        ];
        pki.make("server-a", "/CN=gateway-a", Some("ca"), &server);
        pki.make("server-b", "/CN=gateway-b", Some("ca"), &server);
        let client = [
            "subjectAltName=URI:spiffe://example.test/billing-svc",
            "extendedKeyUsage=clientAuth",
            "basicConstraints=critical,CA:FALSE",
        ];
        pki.make("client", "/O=Example/CN=billing-svc", Some("ca"), &client);
        pki.make("intruder", "/CN=intruder", None, &client);
        pki
    }

    fn make(&self, name: &str, subject: &str, ca: Option<&str>, ext: &[&str]) {
        make_cert(&self.dir, name, subject, ca, ext);
    }

    fn path(&self, name: &str) -> String {
        self.dir.path(name).to_string_lossy().into_owned()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path(name)).unwrap()
    }

    /// The DER of `NAME.pem` (what a client sees in the handshake).
    fn der(&self, name: &str) -> Vec<u8> {
        let out = Command::new("openssl")
            .args([
                "x509",
                "-outform",
                "DER",
                "-in",
                &self.path(&format!("{name}.pem")),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// A client trusting the test CA, presenting `identity` (`client` or `intruder`).
    fn client(&self, identity: Option<&str>) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.read("ca.pem")).unwrap())
            .tls_info(true)
            .timeout(Duration::from_secs(30));
        if let Some(name) = identity {
            let mut pem = self.read(&format!("{name}.pem"));
            pem.extend(self.read(&format!("{name}.key")));
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b
    }
}

/// The gateway binary with a TLS listener (killed on drop).
struct TlsGateway {
    child: Child,
    port: u16,
    dir: TempDir,
    config: PathBuf,
}

impl TlsGateway {
    /// Start with `config_for(upstream)`, `server.tls` set to `tls` and `extra` appended.
    async fn start(pki: &Pki, up: &Upstream, tls: &str, extra: &str) -> TlsGateway {
        let yaml = config_for(&[up.url()], extra).replacen(
            "server:\n",
            &format!("server:\n  grace_period: 1s\n  graceful_shutdown_timeout: 1s\n  tls:\n{tls}"),
            1,
        );
        let (config, dir, port) = Gateway::prepare(&yaml, &[]);
        let child = Gateway::spawn(&config, &dir, &[], &[]);
        let mut gw = TlsGateway {
            child,
            port,
            dir,
            config,
        };
        gw.wait_ready(pki).await;
        gw
    }

    async fn wait_ready(&mut self, pki: &Pki) {
        let probe = pki.client(Some("client")).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = probe.get(self.url("/readiness")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway not ready over HTTPS within 30s:\n{}", self.log());
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("gateway.log")).unwrap_or_default()
    }
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_block(pki: &Pki, cert: &str, more: &str) -> String {
    format!(
        "    cert: {}\n    key: {}\n{more}",
        pki.path(&format!("{cert}.pem")),
        pki.path(&format!("{cert}.key"))
    )
}

/// `client_ca` (the test CA) and `client_auth: mode` lines of a `server.tls` block.
fn client_ca(pki: &Pki, mode: &str) -> String {
    format!(
        "    client_ca: {}\n    client_auth: {mode}\n",
        pki.path("ca.pem")
    )
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

#[tokio::test]
async fn https_reaches_the_upstream_over_h2_and_http1_with_hsts() {
    let pki = Pki::new();
    let up = Upstream::start("u");
    let gw = TlsGateway::start(&pki, &up, &tls_block(&pki, "server-a", ""), "").await;

    // ALPN offers h2 and http/1.1: a client that speaks both gets HTTP/2.
    let h2 = pki.client(None).build().unwrap();
    let r = post(&h2, &gw.url("/mcp"), LIST).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let seen = received(r).await;
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");

    let h1 = pki.client(None).http1_only().build().unwrap();
    let r = post(&h1, &gw.url("/mcp"), LIST).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    received(r).await;

    // The gateway's own answers carry it too.
    let r = post(&h2, &gw.url("/nowhere"), LIST).send().await.unwrap();
    assert!(r.headers().contains_key("strict-transport-security"));
    expect_error(r, 404, -32600).await;

    // Without TLS: no HSTS, and the upstream is told the client spoke plain HTTP.
    let plain = Gateway::start(&config_for(&[up.url()], "")).await;
    let r = post(&client(), &plain.url("/mcp"), LIST)
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("strict-transport-security"));
    assert_eq!(received(r).await["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn required_client_certificates_refuse_the_handshake_without_a_trusted_one() {
    let pki = Pki::new();
    let up = Upstream::start("u");
    let more = client_ca(&pki, "required");
    let gw = TlsGateway::start(&pki, &up, &tls_block(&pki, "server-a", &more), "").await;

    for who in [None, Some("intruder")] {
        let c = pki.client(who).build().unwrap();
        let sent = post(&c, &gw.url("/mcp"), LIST).send().await;
        assert!(sent.is_err(), "{who:?} got through: {sent:?}");
    }
    let before = up.state().await["requests"].as_u64().unwrap();
    let c = pki.client(Some("client")).build().unwrap();
    received(post(&c, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    assert_eq!(up.state().await["requests"].as_u64().unwrap(), before + 1);
}

#[tokio::test]
async fn optional_client_certificates_authenticate_a_rule_that_accepts_them() {
    let pki = Pki::new();
    let up = Upstream::start("u");
    let more = client_ca(&pki, "optional");
    let auth = "security:\n  auth:\n    - name: services\n      client_cert: true\n";
    let gw = TlsGateway::start(&pki, &up, &tls_block(&pki, "server-a", &more), auth).await;

    // No certificate: the handshake succeeds, the rule refuses.
    let anonymous = pki.client(None).build().unwrap();
    let r = post(&anonymous, &gw.url("/mcp"), LIST)
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 401, -32010).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client certificate"),
        "{v}"
    );
    // A certificate the CA did not issue is refused in the handshake even when optional.
    let intruder = pki.client(Some("intruder")).build().unwrap();
    assert!(post(&intruder, &gw.url("/mcp"), LIST).send().await.is_err());

    let service = pki.client(Some("client")).build().unwrap();
    received(post(&service, &gw.url("/mcp"), LIST).send().await.unwrap()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = r#""identity":"billing-svc""#;
    while !gw.log().contains(wanted) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains(wanted))
        .unwrap_or_else(|| panic!("no access log line with {wanted}:\n{log}"));
    assert!(line.contains(r#""auth":"client_cert""#), "{line}");
    assert!(line.contains(r#""auth_rule":"services""#), "{line}");
}

#[tokio::test]
async fn an_upgrade_serves_the_renewed_certificate() {
    let pki = Pki::new();
    let up = Upstream::start("u");
    let install = |name: &str| {
        std::fs::copy(
            pki.dir.path(&format!("{name}.pem")),
            pki.dir.path("live.pem"),
        )
        .unwrap();
        std::fs::copy(
            pki.dir.path(&format!("{name}.key")),
            pki.dir.path("live.key"),
        )
        .unwrap();
    };
    install("server-a");
    let mut old = TlsGateway::start(&pki, &up, &tls_block(&pki, "live", ""), "").await;
    let c = pki.client(None).build().unwrap();
    let get = |url: String| c.get(url).send();
    let r = get(old.url("/health")).await.unwrap();
    assert_eq!(peer_cert(&r), pki.der("server-a"));

    // Renew the files, start the new process with -u, then SIGQUIT the old one.
    install("server-b");
    let mut new = Gateway::spawn(&old.config, &old.dir, &[], &["-u"]);
    let sock = old.dir.path("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sock.exists(), "no upgrade socket:\n{}", old.log());
    Command::new("kill")
        .args(["-QUIT", &old.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while old.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_exited = old.child.try_wait().unwrap().is_some();
    // New connections are the new process's, with the new certificate.
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = get(old.url("/health")).await {
            seen = Some(peer_cert(&r));
            if seen.as_deref() == Some(&pki.der("server-b")[..]) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_alive = new.try_wait().unwrap().is_none();
    let _ = new.kill();
    let _ = new.wait();
    let log = old.log();
    assert!(old_exited, "the old process did not exit:\n{log}");
    assert!(new_alive, "the new process died:\n{log}");
    assert_eq!(
        seen.as_deref(),
        Some(&pki.der("server-b")[..]),
        "not served with the renewed certificate:\n{log}"
    );
}

#[test]
fn bad_tls_settings_are_each_reported_with_their_path_and_exit_64() {
    let pki = Pki::new();
    let base = "upstream:\n  groups:\n    default:\n      servers:\n        - {id: a, url: http://127.0.0.1:3001/mcp}\n";
    let cases = [
        (
            format!(
                "    cert: {}/missing.pem\n    key: {}\n",
                pki.dir.0.display(),
                pki.path("server-a.key")
            ),
            "server.tls.cert: cannot read PEM certificates from",
        ),
        (
            format!(
                "    cert: {}\n    key: {}/missing.key\n",
                pki.path("server-a.pem"),
                pki.dir.0.display()
            ),
            "server.tls.key: no PEM private key in",
        ),
        (
            // A certificate file is no key.
            format!(
                "    cert: {}\n    key: {}\n",
                pki.path("server-a.pem"),
                pki.path("server-a.pem")
            ),
            "server.tls.key: no PEM private key in",
        ),
        (
            format!(
                "    cert: {}\n    key: {}\n",
                pki.path("server-a.pem"),
                pki.path("server-b.key")
            ),
            "server.tls.key: is not the private key of the first certificate in",
        ),
        (
            format!(
                "{}    client_auth: required\n",
                tls_block(&pki, "server-a", "")
            ),
            "server.tls.client_auth: needs client_ca",
        ),
        (
            format!(
                "{}    client_ca: {}/missing-ca.pem\n",
                tls_block(&pki, "server-a", ""),
                pki.dir.0.display()
            ),
            "server.tls.client_ca: cannot read PEM certificates from",
        ),
    ];
    for (tls, want) in cases {
        let (code, err) = validate(&format!("server:\n  tls:\n{tls}{base}"));
        assert_eq!(code, Some(64), "{err}");
        assert!(err.contains(want), "{want:?} not in:\n{err}");
        assert!(
            !err.contains("PRIVATE KEY-----"),
            "a key in the output:\n{err}"
        );
    }
    let (code, err) = validate(&format!(
        "{base}security:\n  auth:\n    - client_cert: true\n"
    ));
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("security.auth[0].client_cert: needs server.tls.client_ca"),
        "{err}"
    );
    // And a good one validates.
    let more = format!("    client_ca: {}\n", pki.path("ca.pem"));
    let (code, err) = validate(&format!(
        "server:\n  tls:\n{}{base}",
        tls_block(&pki, "server-a", &more)
    ));
    assert_eq!(code, Some(0), "{err}");
}
