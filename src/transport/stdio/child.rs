//! Starting a stdio server's process: its own process group, a minimal environment,
//! newline-delimited JSON on stdin, stdout read line by line under a cap (lines that are
//! not JSON are skipped and logged), stderr drained into the log (rate-limited), and
//! always reaped.

use super::lines::{Lines, Read};
use super::process::{Exit, Proc, STOP_STEP};
use super::Spec;
use crate::telemetry::metrics::METRICS;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// stderr lines logged per second (a burst of this many, then one per 1/N s).
const STDERR_PER_SECOND: f64 = 20.0;

/// A spawn that failed (the program is missing, no processes left…).
#[derive(Debug)]
pub struct SpawnError(pub String);

impl Proc {
    /// Start the server's program. `on_exit` runs once it is gone, with why.
    pub fn spawn(
        spec: &Arc<Spec>,
        on_exit: impl FnOnce(&Exit) + Send + 'static,
    ) -> Result<Arc<Proc>, SpawnError> {
        let mut cmd = tokio::process::Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..]).env_clear();
        for key in crate::config::stdio::INHERITED_ENV {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(&spec.env);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            METRICS
                .stdio_exits
                .with_label_values(&[&spec.group, &spec.id, "spawn_failed"])
                .inc();
            SpawnError(format!(
                "cannot start stdio server {} ({:?}): {e}",
                spec.id, spec.command[0]
            ))
        })?;
        let pid = child.id().unwrap_or(0);
        let (proc, mut io) = Proc::new(spec, pid);
        METRICS
            .stdio_processes
            .with_label_values(&[&spec.group, &spec.id])
            .inc();
        log::info!(
            "stdio server {} (group {}): started {:?} as pid {pid}",
            spec.id,
            spec.group,
            spec.command
        );

        // stdin: written in order; closed when the process is to stop.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut input = std::mem::replace(&mut io.input, mpsc::channel(1).1);
        let mut stop = io.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    line = input.recv() => match line {
                        Some(line) => if stdin.write_all(&line).await.is_err() { break },
                        None => break,
                    },
                    _ = super::until(&mut stop, |s| *s) => break,
                }
            }
            drop(stdin);
        });
        // stderr: into the log, at most STDERR_PER_SECOND lines a second.
        let stderr = child.stderr.take().expect("piped stderr");
        let label = format!("stdio server={} pid={pid}", spec.id);
        tokio::spawn(drain_stderr(stderr, label));
        // stdout: each line to where it belongs.
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = {
            let proc = proc.clone();
            let max = spec.max_line;
            tokio::spawn(async move {
                let mut lines = Lines::new(stdout, max);
                loop {
                    match lines.next().await {
                        Ok(Read::Line(line)) => proc.dispatch(&line),
                        Ok(Read::TooLong) => log::warn!(
                            "stdio server {}: a line longer than max_line ({max} bytes) was skipped",
                            proc.spec().id
                        ),
                        Ok(Read::End) => break,
                        Err(e) => {
                            log::debug!("stdio server {}: stdout: {e}", proc.spec().id);
                            break;
                        }
                    }
                }
            })
        };
        // Reaped here, always; whatever it left unanswered gets an error at once.
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = reader.await;
            let why = match status {
                Ok(s) => format!("{s}"),
                Err(e) => format!("wait failed: {e}"),
            };
            // What it started in its group goes with it.
            let group = Pid::from_raw(pid as i32);
            if pid != 0 && killpg(group, None).is_ok() {
                let _ = killpg(group, Signal::SIGTERM);
                tokio::time::sleep(STOP_STEP).await;
                let _ = killpg(group, Signal::SIGKILL);
            }
            io.finish(why, on_exit);
        });
        Ok(proc)
    }
}

async fn drain_stderr(stderr: tokio::process::ChildStderr, label: String) {
    let mut lines = Lines::new(stderr, 16 << 10);
    let mut allowance = STDERR_PER_SECOND;
    let mut at = std::time::Instant::now();
    let mut dropped = 0u64;
    loop {
        let line = match lines.next().await {
            Ok(Read::Line(line)) => line,
            Ok(Read::TooLong) => b"(a stderr line over 16 KiB, not logged)".to_vec(),
            Ok(Read::End) | Err(_) => break,
        };
        let now = std::time::Instant::now();
        allowance = (allowance + now.duration_since(at).as_secs_f64() * STDERR_PER_SECOND)
            .min(STDERR_PER_SECOND);
        at = now;
        if allowance < 1.0 {
            dropped += 1;
            continue;
        }
        allowance -= 1.0;
        if dropped > 0 {
            log::warn!(
                "{label}: {dropped} stderr line(s) not logged (more than {STDERR_PER_SECOND}/s)"
            );
            dropped = 0;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        log::info!("{label}: {}", String::from_utf8_lossy(line));
    }
}
