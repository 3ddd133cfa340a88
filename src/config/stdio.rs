//! Servers the gateway runs itself (`command:` instead of `url:`, docs/transports.md):
//! their checks, and the URL each one gets: the Unix socket of the gateway's bridge to it
//! (`transport::stdio`), so routing, balancing, health checks and breakers treat it as
//! any other server.

use super::yaml::{Errors, Path};
use super::{Config, ServerEntry, StdioProcess};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

/// The environment a stdio server inherits from the gateway (everything else is left out).
pub const INHERITED_ENV: [&str; 6] = ["HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"];

/// Unix socket paths longer than this do not fit `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// The checks of one server entry's stdio keys (`at`: the entry's path).
pub fn check(s: &ServerEntry, at: &Path, errs: &mut Errors) {
    let stdio = !s.command.is_empty();
    if stdio && !s.url.is_empty() {
        errs.push(
            &at.key("command"),
            "a server has a url or a command, not both",
        );
    }
    if s.command.first().is_some_and(|p| p.is_empty()) {
        errs.push(&at.key("command").index(0), "the program is empty");
    }
    let defaults = ServerEntry::default();
    let sse = is_remote(&s.url);
    if !stdio {
        // The stdio keys mean nothing for a URL: a typo'd `command` would pass silently.
        // A legacy SSE or WebSocket server has a connection per session: its cap, idle
        // time and line.
        for (key, set, for_sse) in [
            ("env", !s.env.is_empty(), false),
            ("cwd", s.cwd.is_some(), false),
            ("process", s.process != defaults.process, false),
            ("instances", s.instances != defaults.instances, false),
            (
                "max_processes",
                s.max_processes != defaults.max_processes,
                true,
            ),
            (
                "idle_timeout",
                s.idle_timeout != defaults.idle_timeout,
                true,
            ),
            ("max_line", s.max_line != defaults.max_line, true),
        ] {
            if set && !(sse && for_sse) {
                errs.push(
                    &at.key(key),
                    if for_sse {
                        "only applies to a server with a command, an sse+http:// or a ws:// url"
                    } else {
                        "only applies to a server with a command"
                    },
                );
            }
        }
        if !sse {
            return;
        }
    }
    for key in s.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            errs.push(&at.key("env").key(key), "is not a valid variable name");
        }
    }
    if let Some(cwd) = &s.cwd {
        if !std::path::Path::new(cwd).is_dir() {
            errs.push(&at.key("cwd"), format!("{cwd:?} is not a directory"));
        }
    }
    if s.max_processes == 0 {
        errs.push(&at.key("max_processes"), "must be at least 1");
    }
    match s.process {
        StdioProcess::Shared if s.instances == 0 => {
            errs.push(&at.key("instances"), "must be at least 1")
        }
        StdioProcess::Shared if s.instances > s.max_processes => errs.push(
            &at.key("instances"),
            format!(
                "{} is more than max_processes ({})",
                s.instances, s.max_processes
            ),
        ),
        StdioProcess::PerSession if s.instances != 1 => errs.push(
            &at.key("instances"),
            "only applies to process: shared (per_session runs one per session)",
        ),
        _ => {}
    }
    if s.idle_timeout.0.is_zero() {
        errs.push(&at.key("idle_timeout"), "must be greater than 0");
    }
    if s.max_line.0 < 1024 {
        errs.push(&at.key("max_line"), "must be at least 1KiB");
    }
}

/// The pid this process started with: a daemon forks after the config is loaded, and its
/// reloads must name the same sockets.
static FIRST_PID: once_cell::sync::Lazy<u32> = once_cell::sync::Lazy::new(std::process::id);

/// The folder of this process's bridge sockets: chosen by the first config this process
/// loads (`server.runtime_dir` needs an upgrade to change, as every listener setting).
static SOCKET_DIR: once_cell::sync::OnceCell<PathBuf> = once_cell::sync::OnceCell::new();

/// The folder of this process's bridge sockets.
pub fn socket_dir(c: &Config) -> PathBuf {
    SOCKET_DIR
        .get_or_init(|| {
            let base = c
                .server
                .runtime_dir
                .clone()
                .or_else(|| std::env::var("RUNTIME_DIRECTORY").ok())
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            base.join(format!("mcp-gateway-{}", *FIRST_PID))
        })
        .clone()
}

/// The scheme prefix of a legacy HTTP+SSE server's URL (`sse+http://host/sse`).
pub const LEGACY_SSE: &str = "sse+";

/// A server reached over a connection of its own per session, through a bridge: a
/// legacy HTTP+SSE server (`sse+http://`, `sse+https://`) or a WebSocket one (`ws://`,
/// `wss://`).
pub fn is_remote(url: &str) -> bool {
    url.starts_with(LEGACY_SSE) || url.starts_with("ws://") || url.starts_with("wss://")
}

/// The bridge socket of such a server: one per URL. `None` before a config was loaded
/// in this process.
pub fn remote_socket(url: &str) -> Option<PathBuf> {
    let dir = SOCKET_DIR.get()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ("remote", url).hash(&mut h);
    Some(dir.join(format!("{:016x}.sock", h.finish())))
}

/// Give every stdio server the URL of its bridge socket, named after everything that
/// defines it: a reload that changes a command gets a new server (and a new process).
pub fn assign_urls(c: &mut Config, errs: &mut Errors) {
    let dir = socket_dir(c);
    if let Some(sock) = remote_socket("sse+http://host:65535/sse") {
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            errs.push(
                &Path::root().key("server").key("runtime_dir"),
                format!(
                    "{} is too long for a Unix socket path; use a shorter folder",
                    sock.display()
                ),
            );
        }
    }
    for (name, g) in c.upstream.groups.iter_mut() {
        for (i, s) in g.servers.iter_mut().enumerate() {
            if s.command.is_empty() {
                continue;
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (name, &s.id, &s.command, &s.env, &s.cwd, s.process).hash(&mut h);
            (s.instances, s.max_processes, s.idle_timeout.0, s.max_line.0).hash(&mut h);
            let sock = dir.join(format!("{:016x}.sock", h.finish()));
            if sock.as_os_str().len() > MAX_SOCKET_PATH {
                errs.push(
                    &Path::root().key("server").key("runtime_dir"),
                    format!(
                        "{} is too long for a Unix socket path (upstream.groups.{name}.servers[{i}] needs one there); use a shorter folder",
                        sock.display()
                    ),
                );
                continue;
            }
            s.url = format!("unix://{}:/mcp", sock.display());
        }
    }
}
