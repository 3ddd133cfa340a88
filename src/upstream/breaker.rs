//! A per-server circuit breaker (passive outlier detection), lock-free.
//!
//! ```text
//!            failure_threshold consecutive failures
//!   closed ───────────────────────────────────────────▶ open
//!     ▲                                                  │ open_for elapsed
//!     │ half_open_requests successes                     ▼
//!     └──────────────────────────────────────────── half_open
//!                                  any failure: back to open ┘
//! ```
//!
//! Failures are connect errors, timeouts and 5xx answers; any other answer is a success.
//! The breaker gates only the choice of a server for a new request: a half-open breaker
//! hands out `half_open_requests` probe permits, an open one none. Clocks are
//! milliseconds from [`now_ms`] (passed in, so the state machine is testable).

use once_cell::sync::Lazy;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A breaker's state, as shown in logs and (later) metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Milliseconds since the process's first use of the clock.
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

#[derive(Debug)]
pub struct Breaker {
    /// `group/server`, for logs.
    name: String,
    /// `0` disables the breaker.
    threshold: u32,
    open_for_ms: u64,
    half_open_requests: u32,
    state: AtomicU8,
    failures: AtomicU32,
    opened_at: AtomicU64,
    /// Half-open: probe permits not yet handed out.
    permits: AtomicU32,
    /// Half-open: probes that succeeded.
    successes: AtomicU32,
}

impl Breaker {
    pub fn new(
        name: String,
        failure_threshold: u32,
        open_for: Duration,
        half_open_requests: u32,
    ) -> Self {
        Breaker {
            name,
            threshold: failure_threshold,
            open_for_ms: open_for.as_millis() as u64,
            half_open_requests: half_open_requests.max(1),
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            permits: AtomicU32::new(0),
            successes: AtomicU32::new(0),
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// Could a new request go to this server now? (Takes nothing; see [`Breaker::acquire`].)
    pub fn allows(&self, now: u64) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => now >= self.opened_at.load(Ordering::Acquire) + self.open_for_ms,
            _ => self.permits.load(Ordering::Acquire) > 0,
        }
    }

    /// Claim the right to send a new request: always when closed; when open and `open_for`
    /// has passed, half-open and take the first probe permit; when half-open, take a permit.
    pub fn acquire(&self, now: u64) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => {
                if now < self.opened_at.load(Ordering::Acquire) + self.open_for_ms {
                    return false;
                }
                // Set up the probes before publishing the state, so readers see them.
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.successes.store(0, Ordering::Release);
                    self.permits
                        .store(self.half_open_requests - 1, Ordering::Release);
                    log::info!(
                        "upstream {}: circuit breaker half_open, letting {} probe request(s) through",
                        self.name,
                        self.half_open_requests
                    );
                    true
                } else {
                    self.take_permit()
                }
            }
            _ => self.take_permit(),
        }
    }

    fn take_permit(&self) -> bool {
        self.permits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1))
            .is_ok()
    }

    /// Record how a request sent to the server went. Returns the new state when it changed.
    pub fn record(&self, success: bool, now: u64) -> Option<State> {
        if self.threshold == 0 {
            return None;
        }
        match (self.state.load(Ordering::Acquire), success) {
            (CLOSED, true) => {
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                None
            }
            (CLOSED, false) => {
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                (n >= self.threshold && self.trip(CLOSED, now)).then_some(State::Open)
            }
            (HALF_OPEN, true) => {
                let n = self.successes.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= self.half_open_requests
                    && self
                        .state
                        .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.failures.store(0, Ordering::Release);
                    return Some(State::Closed);
                }
                None
            }
            (HALF_OPEN, false) => self.trip(HALF_OPEN, now).then_some(State::Open),
            // Late answers of requests sent before the breaker opened change nothing.
            _ => None,
        }
    }

    fn trip(&self, from: u8, now: u64) -> bool {
        self.opened_at.store(now, Ordering::Release);
        self.permits.store(0, Ordering::Release);
        self.state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new("g/s".into(), 3, Duration::from_millis(1000), 2)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        assert_eq!(b.record(false, 0), None);
        assert_eq!(b.record(false, 0), None);
        assert_eq!(b.record(true, 0), None, "a success resets the count");
        assert_eq!(b.record(false, 0), None);
        assert_eq!(b.record(false, 0), None);
        assert_eq!(b.record(false, 10), Some(State::Open));
        assert_eq!(b.state(), State::Open);
        assert!(!b.allows(500) && !b.acquire(500));
    }

    #[test]
    fn half_opens_after_open_for_and_closes_after_probes() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false, 0);
        }
        assert!(b.allows(1000));
        assert!(b.acquire(1000), "first probe");
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.acquire(1001), "second probe");
        assert!(!b.acquire(1002), "no more than half_open_requests probes");
        assert!(!b.allows(1002));
        assert_eq!(b.record(true, 1003), None);
        assert_eq!(b.record(true, 1004), Some(State::Closed));
        assert!(b.acquire(1005));
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false, 0);
        }
        assert!(b.acquire(2000));
        assert_eq!(b.record(false, 2001), Some(State::Open));
        assert!(
            !b.acquire(2500),
            "open again for open_for from the failed probe"
        );
        assert!(b.acquire(3001));
    }

    #[test]
    fn disabled_never_opens() {
        let b = Breaker::new("g/s".into(), 0, Duration::from_secs(1), 1);
        for _ in 0..100 {
            assert_eq!(b.record(false, 0), None);
        }
        assert!(b.acquire(0));
    }
}
