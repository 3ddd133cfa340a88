//! Structured logs on stderr. `logging.format: json` writes one JSON object per line;
//! `text` writes `timestamp level target message`. The access log
//! (written by the request path, `proxy::record::access_log`) goes to the `access` target
//! at info level.

use crate::config::{LogFormat, LoggingConfig};
use arc_swap::ArcSwap;
use once_cell::sync::OnceCell;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;

/// The process logger: an env_logger swapped whole when a reload changes `logging`.
struct Swappable(ArcSwap<env_logger::Logger>);

impl log::Log for Swappable {
    fn enabled(&self, m: &log::Metadata) -> bool {
        self.0.load().enabled(m)
    }
    fn log(&self, r: &log::Record) {
        self.0.load().log(r)
    }
    fn flush(&self) {
        self.0.load().flush()
    }
}

static LOGGER: OnceCell<Swappable> = OnceCell::new();

/// Install the process logger. `level_override` (from `--log-level`) wins over the config.
pub fn init_logger(cfg: &LoggingConfig, level_override: Option<log::LevelFilter>) {
    let logger = build(cfg, level_override);
    let max = logger.filter();
    // A second init (tests, embedded use) keeps the first logger.
    if LOGGER.set(Swappable(ArcSwap::from_pointee(logger))).is_ok() {
        if let Some(l) = LOGGER.get() {
            if log::set_logger(l).is_ok() {
                log::set_max_level(max);
            }
        }
    }
}

/// Apply a reloaded `logging` section (level and format).
pub fn reconfigure_logger(cfg: &LoggingConfig, level_override: Option<log::LevelFilter>) {
    if let Some(l) = LOGGER.get() {
        let logger = build(cfg, level_override);
        log::set_max_level(logger.filter());
        l.0.store(Arc::new(logger));
    }
}

fn build(cfg: &LoggingConfig, level_override: Option<log::LevelFilter>) -> env_logger::Logger {
    let level = level_override.unwrap_or_else(|| cfg.level.filter());
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    // Pingora is chatty at info about things an operator of this gateway does not act on.
    if level == log::LevelFilter::Info {
        b.filter_module("pingora_core", log::LevelFilter::Warn);
        b.filter_module("pingora_proxy", log::LevelFilter::Warn);
    }
    match cfg.format {
        LogFormat::Json => {
            b.format(|f, r| {
                if r.target() == "access" {
                    // The access line is already a JSON object: splice it in, so its
                    // fields sit at the top level of the log object.
                    let msg = r.args().to_string();
                    if let Some(fields) = msg.strip_prefix('{').filter(|m| m.len() > 1) {
                        let head = json!({"ts": f.timestamp_millis().to_string(), "level": "INFO", "target": "access"}).to_string();
                        return writeln!(f, "{},{fields}", &head[..head.len() - 1]);
                    }
                }
                let line = json!({
                    "ts": f.timestamp_millis().to_string(),
                    "level": r.level().as_str(),
                    "target": r.target(),
                    "msg": r.args().to_string(),
                });
                writeln!(f, "{line}")
            });
        }
        LogFormat::Text => {
            b.format(|f, r| {
                writeln!(
                    f,
                    "{} {:5} {} {}",
                    f.timestamp_millis(),
                    r.level(),
                    r.target(),
                    r.args()
                )
            });
        }
    }
    b.build()
}
