//! The process's monotonic clock in milliseconds: one epoch shared by breakers, auth
//! caches, rate-limit windows and connection deadlines, so their times compare.

use once_cell::sync::Lazy;
use std::time::Instant;

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Milliseconds since the process's first use of the clock.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}
