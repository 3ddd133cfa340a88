//! Logs, Prometheus metrics and tracing, over plain values: the process logger, the metric
//! families (and the lock-free per-thread children the request path counts with), the
//! OTLP exporter and spans. What one request records is the request path's
//! (`proxy::record`).

mod logs;
pub mod metrics;
pub mod tracing;

pub use logs::{init_logger, reconfigure_logger};
