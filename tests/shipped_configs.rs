//! Every shipped config starts, not only validates: conf/, docker/, k8s/config/ and the
//! Helm chart's default `config` values, each run by the real binary on free ports
//! (`MCP_GATEWAY_HOST`, `MCP_GATEWAY_PORT`, `MCP_GATEWAY_ADMIN_PORT`) with the
//! environment its deployment gives it, until it serves `/liveness`. Upstreams are
//! unreachable here: that is fine, the gateway must start anyway.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SESSION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The shipped config files (the ones `every_shipped_config_validates` checks, and
/// docker/'s).
fn shipped() -> Vec<PathBuf> {
    let mut files = vec![repo().join("docker/gateway.yaml")];
    files.extend(config_files());
    files.sort();
    files
}

/// The Helm chart's `config` values as its ConfigMap template renders them (`toYaml`).
fn helm_config(dir: &TempDir) -> PathBuf {
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo().join("k8s/helm/mcp-gateway/values.yaml")).unwrap(),
    )
    .unwrap();
    let path = dir.path("helm-gateway.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&values["config"]).unwrap()).unwrap();
    path
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `config` with `env` on free ports; panics unless it serves `/liveness`.
async fn starts(config: &Path, env: &[(&str, &str)]) {
    let dir = TempDir::new("shipped");
    let log_path = dir.path("gateway.log");
    for attempt in 1..=3 {
        let port = free_port();
        let admin_port = free_port_besides(port);
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("MCP_GATEWAY_HOST", "127.0.0.1")
            .env("MCP_GATEWAY_PORT", port.to_string())
            .env("MCP_GATEWAY_ADMIN_PORT", admin_port.to_string())
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut gw = Running(child);
        let url = format!("http://127.0.0.1:{port}/liveness");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = gw.0.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if attempt < 3 && log.to_lowercase().contains("address already in use") {
                    break;
                }
                panic!(
                    "{} with {env:?} exited with {status}:\n{log}",
                    config.display()
                );
            }
            if let Ok(r) = reqwest::get(&url).await {
                assert_eq!(r.status(), 200, "{}", config.display());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not live within 30s:\n{}",
                config.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn every_shipped_config_starts() {
    let dir = TempDir::new("helm");
    let mut files = shipped();
    assert!(
        files.iter().any(|f| f.ends_with("k8s/config/gateway.yaml")),
        "{files:?}"
    );
    files.push(helm_config(&dir));
    // The secrets their deployments pass; the session key is optional everywhere
    // (`${MCP_GATEWAY_SESSION_KEY:-}`): unset, set empty (what a Secret without one, or
    // docker compose without it, gives) and set.
    let secrets = [
        (
            "MCP_GATEWAY_JWT_SECRET",
            "a-validation-only-secret-0123456789abcdef",
        ),
        ("MCP_GATEWAY_ADMIN_TOKEN", "a-validation-only-admin-token"),
    ];
    for f in &files {
        for key in [None, Some(""), Some(SESSION_KEY)] {
            let mut env = secrets.to_vec();
            if let Some(k) = key {
                env.push(("MCP_GATEWAY_SESSION_KEY", k));
            }
            starts(f, &env).await;
        }
    }
}

#[test]
fn a_bad_session_key_fails_validation_as_it_fails_start() {
    // Both name the entry; an empty one is skipped by both.
    let yaml = "upstream:\n  groups:\n    default:\n      servers:\n        - {id: a, url: http://127.0.0.1:3001/mcp}\nsessions:\n  keys: [\"\", \"c2hvcnQ=\"]\n";
    let (code, err) = validate(yaml);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("sessions.keys[1]: a key must be 32 bytes"),
        "{err}"
    );
}
