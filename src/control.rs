//! `mcp-gateway reload` and `mcp-gateway upgrade`: one command for an operator.

use crate::config::Config;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// The running gateway's PID, from `server.pid_file`.
fn running_pid(config: &Config) -> Result<Pid, String> {
    let path = &config.server.pid_file;
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!("cannot read server.pid_file {path:?} ({e}): is the gateway running?")
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("server.pid_file {path:?} does not hold a PID"))?;
    let pid = Pid::from_raw(pid);
    kill(pid, None).map_err(|e| format!("no gateway runs as PID {pid} (from {path:?}): {e}"))?;
    Ok(pid)
}

/// Reload through the admin API when it can be used, else with SIGHUP.
pub fn reload(config: &Config) -> Result<String, String> {
    if let (true, Some(token)) = (config.admin.enabled, config.admin.token()) {
        let url = format!(
            "http://{}:{}/api/v1/reload",
            config.admin.host, config.admin.port
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        return rt.block_on(async {
            let resp = reqwest::Client::new()
                .post(&url)
                .bearer_auth(token)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| format!("POST {url}: {e}"))?;
            let body: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("POST {url}: the answer is not JSON: {e}"))?;
            if status.is_success() {
                Ok(format!("reloaded: {body}"))
            } else {
                let problems = body["problems"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(|x| x.as_str())
                            .map(|x| format!("\n  {x}"))
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                Err(format!(
                    "{}{problems}",
                    body["error"].as_str().unwrap_or("reload failed")
                ))
            }
        });
    }
    let pid = running_pid(config)?;
    kill(pid, Signal::SIGHUP).map_err(|e| format!("SIGHUP to PID {pid}: {e}"))?;
    Ok(format!(
        "sent SIGHUP to PID {pid}; the gateway logs whether the config was reloaded"
    ))
}

/// Start this binary with `-d -u` and hand it the listening sockets of the running one.
pub fn upgrade(config: &Config, path: Option<&str>) -> Result<String, String> {
    let old = running_pid(config)?;
    let sock = Path::new(&config.server.upgrade_sock);
    // The new process creates the socket when it is ready to receive: a stale one from
    // an earlier upgrade would make us signal too early.
    let _ = std::fs::remove_file(sock);
    let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["-d", "-u"]);
    if let Some(path) = path {
        cmd.args(["-c", path]);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the new process exited ({status}) before taking over; the running gateway (PID {old}) is untouched"
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "the new process did not open {} within 30 s; the running gateway (PID {old}) is untouched",
                sock.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(old, Signal::SIGQUIT).map_err(|e| format!("SIGQUIT to PID {old}: {e}"))?;
    // The new process daemonizes once it holds the sockets: its first process exits.
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the new process failed ({status}); see its log"));
    }
    // Pingora's first process exits right after the fork; the daemon writes the PID
    // file a moment later (the old one was moved to `.old`). Wait for it, so whoever
    // reads the file after this command (systemd, scripts) finds the new PID.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        let pid = std::fs::read_to_string(&config.server.pid_file)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        if (!pid.is_empty() && pid != old.to_string()) || Instant::now() >= deadline {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if new.is_empty() {
        return Err(format!(
            "the new process started but wrote no PID to server.pid_file {:?} within 10s; see its log",
            config.server.pid_file
        ));
    }
    Ok(format!(
        "upgraded: PID {old} hands over and exits once its requests are done; the new gateway runs as PID {new}"
    ))
}
