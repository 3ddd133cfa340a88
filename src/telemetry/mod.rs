//! Logs: the process logger (JSON lines or text) and the per-request access log.

mod logs;

pub use logs::{access_log, init_logger};
