//! A real `redis-server` for the cluster-wide stores: plain or TLS, with or without a
//! password, paused or killed on demand.

use super::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real `redis-server` on a free loopback port, without persistence; killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    password: Option<String>,
    /// Serving TLS only (`rediss://`).
    tls: bool,
}

impl RedisServer {
    /// Start on a free port, with `requirepass` when `password` is given.
    pub fn start(password: Option<&str>) -> RedisServer {
        Self::start_on(free_port(), password)
    }

    /// Start on `port` (e.g. to bring a killed server back at its address).
    pub fn start_on(port: u16, password: Option<&str>) -> RedisServer {
        Self::spawn(port, password, None)
    }

    /// Start on a free port speaking TLS only, with the certificate `cert` and key `key`
    /// (PEM files); clients are not asked for certificates.
    #[allow(dead_code)]
    pub fn start_tls(password: Option<&str>, cert: &Path, key: &Path) -> RedisServer {
        Self::spawn(free_port(), password, Some((cert, key)))
    }

    fn spawn(port: u16, password: Option<&str>, tls: Option<(&Path, &Path)>) -> RedisServer {
        let mut cmd = Command::new("redis-server");
        match tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): these tests need a real Redis. Install \
                     Debian's redis-server package without starting its service (scripts/test \
                     does it), or put redis-server on PATH"
                )
            });
        let mut server = RedisServer {
            child,
            port,
            password: password.map(str::to_string),
            tls: tls.is_some(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited with {status} (port {port} taken?)");
            }
            if server.ping() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer PING on port {port} within 20s");
    }

    /// `redis://[:password@]127.0.0.1:PORT/0` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port),
        }
    }

    /// A plain connection to the server, to look at what the gateway wrote.
    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    fn ping(&self) -> bool {
        if self.tls {
            // This process does not trust the test CA: a listening port will do.
            return std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        }
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        client
            .get_connection_with_timeout(Duration::from_millis(500))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// Stop (`SIGSTOP`) or continue (`SIGCONT`) the server: stopped, it accepts
    /// connections and commands but answers none.
    pub fn pause(&self, stopped: bool) {
        let signal = if stopped { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} redis-server failed");
    }

    /// Kill the server now (connections to it break, its port refuses new ones).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
