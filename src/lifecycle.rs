//! The process's life: signals, reloads, and a graceful shutdown that ends as soon as
//! the work in flight is done.
//!
//! * SIGHUP: reload the config file ([`Reloader`]; also `reload.watch`).
//! * SIGTERM: `/readiness` turns 503 at once, the listeners close `server.drain_delay`
//!   later, then requests and streams in flight run on for up to `server.grace_period`.
//! * SIGQUIT: the zero-downtime upgrade: the listening sockets go to the new process
//!   (started with `-u`); both accept for 5 s (Pingora's handoff window), then this one
//!   stops. Client connections it still holds may then send one last request for up
//!   to `server.drain_delay` (answered with `Connection: close`, so the client's next
//!   request opens a connection to the new process) before the idle ones are closed
//!   ([`crate::proxy::connections::linger_after_handoff`]); then the same graceful end.
//! * SIGINT: stop now.
//!
//! Pingora waits out the whole grace period even when nothing is in flight;
//! [`ExitWhenIdle`] ends the process once shutdown has begun and no request is left.

use crate::live::Live;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};

/// The shutdown signals, with the readiness drain before a graceful stop.
pub struct Signals {
    pub live: Arc<Live>,
    pub drain_delay: Duration,
    pub stdio: Arc<crate::transport::stdio::Stdio>,
}

impl Signals {
    /// SIGINT: exit now. Pingora's own fast shutdown can leave a proxy thread spinning
    /// on failed accepts while its runtime stops (the process then never exits); stdio
    /// servers' processes go first, whatever they are doing.
    fn fast_exit(&self) -> ! {
        log::info!("SIGINT: exiting now");
        self.stdio.kill_all_now();
        crate::transport::clients::Clients::remove_sockets();
        crate::telemetry::tracing::shutdown();
        std::process::exit(0)
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = quit.recv() => {
                log::info!(
                    "SIGQUIT: handing the listening sockets to the new process; once this \
                     one stops accepting, open connections may send one last request for {:?}",
                    self.drain_delay
                );
                self.live.start_handoff(self.drain_delay);
                ShutdownSignal::GracefulUpgrade
            }
            _ = int.recv() => self.fast_exit(),
            _ = term.recv() => {
                self.live.start_draining();
                log::info!(
                    "SIGTERM: readiness is now 503; the listeners close in {:?}",
                    self.drain_delay
                );
                tokio::select! {
                    _ = tokio::time::sleep(self.drain_delay) => ShutdownSignal::GracefulTerminate,
                    _ = int.recv() => self.fast_exit(),
                }
            }
        }
    }
}

/// Ends the process once shutdown has begun, connections have had their linger after a
/// handoff, and no request is in flight.
pub struct ExitWhenIdle {
    pub live: Arc<Live>,
    /// stdio servers' processes, stopped (and reaped) before the process exits.
    pub stdio: Arc<crate::transport::stdio::Stdio>,
}

#[async_trait]
impl BackgroundService for ExitWhenIdle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if shutdown.changed().await.is_err() {
            return;
        }
        if let Some(deadline) = self.live.handoff_deadline() {
            log::info!(
                "shutdown: the new process accepts alone now; open connections may send one \
                 last request for {:?}",
                deadline.saturating_duration_since(std::time::Instant::now())
            );
        }
        crate::proxy::connections::linger_after_handoff(&self.live).await;
        let active = &crate::telemetry::metrics::METRICS.requests_active;
        while active.get() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stdio.stop_all().await;
        crate::transport::clients::Clients::remove_sockets();
        log::info!("shutdown: no request in flight, exiting");
        crate::telemetry::tracing::shutdown();
        std::process::exit(0);
    }
}

/// Reloads the config on SIGHUP, and when the file changes if `watch` is on.
pub struct Reloader {
    pub live: Arc<Live>,
    pub watch: bool,
    pub interval: Duration,
}

fn modified(path: &str) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    async fn reload(&self, why: &str) {
        match self.live.reload().await {
            Ok(r) if !r.changed => log::info!("{why}: the config has not changed"),
            Ok(_) => {}
            Err(problems) => log::error!(
                "{why}: config not reloaded, the running config stays: {}",
                problems.join("; ")
            ),
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot handle SIGHUP (reload): {e}");
                return;
            }
        };
        let path = self.live.path().map(str::to_string).filter(|_| self.watch);
        let mut seen = path.as_deref().and_then(modified);
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload("SIGHUP").await,
                _ = tick.tick(), if path.is_some() => {
                    let now = path.as_deref().and_then(modified);
                    if now != seen {
                        seen = now;
                        self.reload("config file changed").await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
