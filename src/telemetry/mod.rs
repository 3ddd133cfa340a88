//! Logs (the process logger and the per-request access log) and Prometheus metrics.

mod logs;
pub mod metrics;
pub mod record;
pub mod tracing;

pub use logs::{access_log, init_logger, reconfigure_logger};
