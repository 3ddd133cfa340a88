//! TLS for tests: a test CA with a server certificate for 127.0.0.1, a client trusting
//! it, and the gateway started with a TLS listener.

use super::{eventually, make_cert, Gateway, TempDir};
use std::time::Duration;

/// A test CA and a server certificate for 127.0.0.1 it issued.
pub fn pki() -> TempDir {
    let dir = TempDir::new("pki");
    make_cert(
        &dir,
        "ca",
        "/CN=Test CA",
        None,
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    make_cert(
        &dir,
        "server",
        "/CN=gateway",
        Some("ca"),
        &[
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "extendedKeyUsage=serverAuth",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    dir
}

/// A client trusting the test CA; it speaks HTTP/2 when ALPN offers it.
pub fn tls_client(pki: &TempDir) -> reqwest::Client {
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The gateway with a TLS listener (`h2` and `http/1.1` by ALPN), ready.
/// A gateway process that is killed (and reaped) when dropped, also when its test fails.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn tls_gateway(pki: &TempDir, yaml: &str) -> (Running, TempDir, u16) {
    let yaml = yaml.replacen(
        "server:\n",
        &format!(
            "server:\n  tls:\n    cert: {}\n    key: {}\n",
            pki.path("server.pem").display(),
            pki.path("server.key").display()
        ),
        1,
    );
    let (config, dir, port) = Gateway::prepare(&yaml, &[]);
    let child = Running(Gateway::spawn(&config, &dir, &[], &[]));
    let c = tls_client(pki);
    let ready = eventually(Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            c.get(format!("https://127.0.0.1:{port}/readiness"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    if !ready {
        drop(child);
        panic!(
            "TLS gateway not ready:\n{}",
            std::fs::read_to_string(dir.path("gateway.log")).unwrap_or_default()
        );
    }
    (child, dir, port)
}
