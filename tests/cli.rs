//! The command line: flags, config validation, env overrides, shipped configs.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MCP_GATEWAY_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn help_documents_every_flag() {
    let out = gateway(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "-c",
        "--validate",
        "-t",
        "--log-level",
        "--daemon",
        "-d",
        "--upgrade",
        "-u",
        "--print-default-config",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn every_shipped_config_validates() {
    let files = config_files();
    assert!(
        files.iter().any(|f| f.ends_with("conf/gateway.yaml")),
        "{files:?}"
    );
    for f in files {
        // The secrets the shipped configs take from the environment.
        let out = Command::new(BIN)
            .args(["--validate", "--config", f.to_str().unwrap()])
            .env(
                "MCP_GATEWAY_JWT_SECRET",
                "a-validation-only-secret-0123456789abcdef",
            )
            .env("MCP_GATEWAY_ADMIN_TOKEN", "a-validation-only-admin-token")
            .env_remove("MCP_GATEWAY_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_default_config_is_printed_and_valid() {
    let out = gateway(&["--print-default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("http://127.0.0.1:3001/mcp"), "{text}");
    let dir = TempDir::new("default");
    std::fs::write(dir.path("d.yaml"), &text).unwrap();
    assert!(gateway(&["-t", "-c", dir.path("d.yaml").to_str().unwrap()])
        .status
        .success());
    assert!(
        gateway(&["-t"]).status.success(),
        "no --config validates the embedded default"
    );
}

/// Write `yaml` to `f` and check it with `flags` (`--validate --config`, `-t -c`): it
/// exits 64; what it reported.
fn refused(f: &std::path::Path, flags: [&str; 2], yaml: &str) -> String {
    std::fs::write(f, yaml).unwrap();
    let out = gateway(&[flags[0], flags[1], f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_bad_config_lists_every_problem_and_exits_64() {
    let dir = TempDir::new("bad");
    let f = dir.path("bad.yaml");
    let err = refused(
        &f,
        ["--validate", "--config"],
        "server:\n  port: 0\n  threds: 4\nupstream:\n  groups:\n    files:\n      servers:\n        - {id: f1, url: 'http://127.0.0.1:1/mcp'}\n        - {id: f2, url: 'gopher://x/mcp'}\nroutes:\n  - {path: /mcp/files, group: nope}\n",
    );
    assert!(err.contains("server.threds: unknown key"), "{err}");
    // A config with only semantic errors shows all of them at once.
    let err = refused(
        &f,
        ["-t", "-c"],
        "server:\n  port: 0\nupstream:\n  groups:\n    files:\n      servers:\n        - {id: f1, url: 'http://127.0.0.1:1/mcp'}\n        - {id: f2, url: 'gopher://x/mcp'}\nroutes:\n  - {path: /mcp/files, group: nope}\n",
    );
    for want in [
        "3 problem(s)",
        "server.port: must be between 1 and 65535",
        "upstream.groups.files.servers[1].url:",
        "routes[0].group: no upstream group named \"nope\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // The same file without --validate does not start either.
    let out = gateway(&["-c", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));

    let out = gateway(&["-t", "-c", dir.path("missing.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[tokio::test]
async fn env_overrides_win_over_the_file() {
    let up = Upstream::start("u");
    let port = free_port();
    // The file says port 1 (privileged, would fail); the environment moves it.
    let yaml = config_for(&[up.url()], "").replace("port: {port}", "port: 1");
    let gw = Gateway::start_env(
        &yaml,
        &[
            ("MCP_GATEWAY_PORT", &port.to_string()),
            ("MCP_GATEWAY_LOG_LEVEL", "debug"),
        ],
    )
    .await;
    let r = reqwest::get(format!("http://127.0.0.1:{}/health", gw.port))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        gw.log().contains(" DEBUG "),
        "MCP_GATEWAY_LOG_LEVEL=debug:\n{}",
        gw.log()
    );
}

async fn health_ok(port: u16) -> bool {
    matches!(reqwest::get(format!("http://127.0.0.1:{port}/health")).await, Ok(r) if r.status() == 200)
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    eventually(Duration::from_secs(10), || std::future::ready(f())).await
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn daemon_mode_detaches_and_writes_its_pid() {
    let up = Upstream::start("u");
    let (config, dir, port) = Gateway::prepare(&config_for(&[up.url()], ""), &[]);
    let mut parent = Gateway::spawn(&config, &dir, &[], &["-d"]);
    let status = parent.wait().unwrap();
    assert!(
        status.success(),
        "the foreground process returns once daemonized"
    );
    let pid_file = dir.path("gw.pid");
    assert!(wait_for(|| pid_file.exists()).await, "no pid file");
    let ready = eventually(Duration::from_secs(10), || health_ok(port)).await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(pid, "-KILL");
    assert!(ready, "the daemon did not serve");
}

#[tokio::test]
async fn upgrade_hands_the_listener_to_a_new_process() {
    let up = Upstream::start("u");
    let yaml = config_for(&[up.url()], "").replacen(
        "server:\n",
        "server:\n  grace_period: 1s\n  graceful_shutdown_timeout: 1s\n",
        1,
    );
    let (config, dir, port) = Gateway::prepare(&yaml, &[]);
    let mut old = Gateway::spawn(&config, &dir, &[], &[]);
    let ok = eventually(Duration::from_secs(10), || health_ok(port)).await;
    assert!(ok, "old process not serving");
    // The new process waits on the upgrade socket; SIGQUIT makes the old one hand over.
    let mut new = Gateway::spawn(&config, &dir, &[], &["-u"]);
    let sock = dir.path("upgrade.sock");
    assert!(
        wait_for(|| sock.exists()).await,
        "the new process never listened on the upgrade socket"
    );
    kill(old.id(), "-QUIT");
    let old_pid = old.id();
    let exited = wait_for(|| matches!(old.try_wait(), Ok(Some(_))) || !alive(old_pid)).await;
    let serving = health_ok(port).await;
    let new_alive = new.try_wait().unwrap().is_none();
    let _ = new.kill();
    let _ = new.wait();
    let log = std::fs::read_to_string(dir.path("gateway.log")).unwrap_or_default();
    assert!(exited, "the old process did not exit:\n{log}");
    assert!(
        new_alive && serving,
        "the new process does not serve the port:\n{log}"
    );
}
