//! A per-server circuit breaker (passive outlier detection), lock-free.
//!
//! ```text
//!            failure_threshold consecutive failures
//!   closed ───────────────────────────────────────────▶ open
//!     ▲                                                  │ open_for elapsed
//!     │ half_open_requests successes                     ▼
//!     └──────────────────────────────────────────── half_open ◀─┐
//!                                  any failure: back to open ┘   │ no probe answered
//!                                                                │ for open_for: fresh
//!                                                                └─ probe permits
//! ```
//!
//! Failures are connect errors, timeouts and 5xx answers; any other answer is a success.
//! The breaker gates only the choice of a server for a new request: a half-open breaker
//! hands out `half_open_requests` probe permits, an open one none. A probe permit is
//! held by the request's [`super::InFlight`]: an attempt that ends without an outcome
//! (its client hung up before the answer) gives its permit back when it is dropped, and
//! a half-open breaker none of whose probes was answered for `open_for` since the last
//! permit was handed out starts a fresh round of permits, so half-open always ends.
//! Clocks are milliseconds from [`now_ms`] (passed in, so the state machine is testable).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The permit count in [`Breaker::probes`] (its low 32 bits).
const PERMITS: u64 = 0xFFFF_FFFF;

/// A breaker's state, as shown in logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// The `mcp_gateway_circuit_breaker_state` value: 0 closed, 1 open, 2 half open.
    pub fn gauge_value(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Leave to send one request, from [`Breaker::acquire`]. A half-open probe permit names
/// its round: given back (unanswered) it returns to that round only, never to a later one.
/// Not `Clone`: a permit is given back at most once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Permit {
    probe: Option<u32>,
}

impl Permit {
    /// Whether this is a half-open probe permit.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

pub use crate::clock::now_ms;

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
    /// Half-open: the probe round (high 32 bits) and that round's permits not yet handed
    /// out (low 32 bits), in one word so a permit given back late never lands in a
    /// later round.
    probes: AtomicU64,
    /// Half-open: when the latest probe permit was handed out or a probe answered.
    probe_at: AtomicU64,
    /// Half-open: probes that succeeded.
    successes: AtomicU32,
}

fn round(word: u64) -> u32 {
    (word >> 32) as u32
}

fn word(round: u32, permits: u32) -> u64 {
    (u64::from(round) << 32) | u64::from(permits)
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
            probes: AtomicU64::new(0),
            probe_at: AtomicU64::new(0),
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

    /// Half-open with no probe answered for `open_for` since the last permit went out:
    /// the probes out are presumed lost, and a fresh round may start.
    fn probes_overdue(&self, now: u64) -> bool {
        now >= self
            .probe_at
            .load(Ordering::Acquire)
            .saturating_add(self.open_for_ms)
    }

    /// Could a new request go to this server now? (Takes nothing; see [`Breaker::acquire`].)
    pub fn allows(&self, now: u64) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => now >= self.opened_at.load(Ordering::Acquire) + self.open_for_ms,
            _ => self.probes.load(Ordering::Acquire) & PERMITS > 0 || self.probes_overdue(now),
        }
    }

    /// Claim the right to send a new request: always when closed; when open and `open_for`
    /// has passed, half-open and take the first probe permit; when half-open, take a
    /// permit (starting a fresh round when the last one's probes are overdue).
    pub fn acquire(&self, now: u64) -> Option<Permit> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(Permit::default()),
            OPEN => {
                if now < self.opened_at.load(Ordering::Acquire) + self.open_for_ms {
                    return None;
                }
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // Until the new round is stored, others see the tripped round's zero
                    // permits and are refused: never more probes than allowed.
                    self.successes.store(0, Ordering::Release);
                    self.probe_at.store(now, Ordering::Release);
                    let next = round(self.probes.load(Ordering::Acquire)).wrapping_add(1);
                    self.probes
                        .store(word(next, self.half_open_requests - 1), Ordering::Release);
                    log::info!(
                        "upstream {}: circuit breaker half_open, letting {} probe request(s) through",
                        self.name,
                        self.half_open_requests
                    );
                    Some(Permit { probe: Some(next) })
                } else {
                    self.take_permit(now)
                }
            }
            _ => self.take_permit(now),
        }
    }

    fn take_permit(&self, now: u64) -> Option<Permit> {
        let mut current = self.probes.load(Ordering::Acquire);
        loop {
            let (r, left) = (round(current), (current & PERMITS) as u32);
            let (next, fresh) = if left > 0 {
                (word(r, left - 1), false)
            } else if self.state.load(Ordering::Acquire) == HALF_OPEN && self.probes_overdue(now) {
                (word(r.wrapping_add(1), self.half_open_requests - 1), true)
            } else {
                return None;
            };
            match self.probes.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.probe_at.store(now, Ordering::Release);
                    if fresh {
                        log::info!(
                            "upstream {}: circuit breaker half_open, no probe answered for {:?}; \
                             letting {} new probe request(s) through",
                            self.name,
                            Duration::from_millis(self.open_for_ms),
                            self.half_open_requests
                        );
                    }
                    return Some(Permit {
                        probe: Some(round(next)),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Give back a permit whose request ended without an outcome (its client went away
    /// before the server answered): the next request may probe instead. A permit of an
    /// earlier round, or of a breaker no longer half-open, changes nothing.
    pub fn release(&self, permit: Permit) {
        let Some(r) = permit.probe else {
            return;
        };
        if self.state.load(Ordering::Acquire) != HALF_OPEN {
            return;
        }
        let max = self.half_open_requests;
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let left = (w & PERMITS) as u32;
                (round(w) == r && left < max).then(|| word(r, left + 1))
            });
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
                self.probe_at.store(now, Ordering::Release);
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
        // Keep the round, drop its permits; never overdue until the next half-open stores
        // its start (so nobody starts a round while that one is being set up).
        self.probes.fetch_and(!PERMITS, Ordering::AcqRel);
        self.probe_at.store(u64::MAX, Ordering::Release);
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
        assert!(!b.allows(500) && b.acquire(500).is_none());
    }

    #[test]
    fn half_opens_after_open_for_and_closes_after_probes() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false, 0);
        }
        assert!(b.allows(1000));
        assert!(b.acquire(1000).is_some(), "first probe");
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.acquire(1001).is_some(), "second probe");
        assert!(
            b.acquire(1002).is_none(),
            "no more than half_open_requests probes"
        );
        assert!(!b.allows(1002));
        assert_eq!(b.record(true, 1003), None);
        assert_eq!(b.record(true, 1004), Some(State::Closed));
        assert!(b.acquire(1005).is_some());
    }

    #[test]
    fn a_failed_probe_reopens() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false, 0);
        }
        assert!(b.acquire(2000).is_some());
        assert_eq!(b.record(false, 2001), Some(State::Open));
        assert!(
            b.acquire(2500).is_none(),
            "open again for open_for from the failed probe"
        );
        assert!(b.acquire(3001).is_some());
    }

    #[test]
    fn disabled_never_opens() {
        let b = Breaker::new("g/s".into(), 0, Duration::from_secs(1), 1);
        for _ in 0..100 {
            assert_eq!(b.record(false, 0), None);
        }
        assert!(b.acquire(0).is_some());
    }

    fn tripped(at: u64) -> Breaker {
        let b = breaker();
        for _ in 0..3 {
            b.record(false, at);
        }
        b
    }

    #[test]
    fn an_unanswered_probe_gives_its_permit_back() {
        let b = tripped(0);
        let p1 = b.acquire(1000).unwrap();
        let p2 = b.acquire(1000).unwrap();
        assert!(p1.is_probe() && p2.is_probe());
        assert!(b.acquire(1001).is_none() && !b.allows(1001));
        // p1's client went away: its permit goes back.
        b.release(p1);
        assert!(b.allows(1002));
        let p3 = b.acquire(1002).unwrap();
        assert!(b.acquire(1002).is_none());
        b.release(p3);
        assert!(b.acquire(1003).is_some());
        assert!(
            b.acquire(1003).is_none(),
            "never more than half_open_requests"
        );
        assert_eq!(b.record(true, 1004), None);
        assert_eq!(b.record(true, 1005), Some(State::Closed));
        // Released while closed: nothing.
        b.release(p2);
        assert_eq!(b.state(), State::Closed);
        assert!(!b.acquire(1006).unwrap().is_probe());
    }

    #[test]
    fn a_permit_of_an_earlier_round_is_not_given_back_to_a_later_one() {
        let b = tripped(0);
        let old = b.acquire(1000).unwrap();
        let older = b.acquire(1000).unwrap();
        // Another probe fails: open again, then a new half-open round.
        assert_eq!(b.record(false, 1001), Some(State::Open));
        b.release(older);
        assert!(
            b.acquire(1500).is_none(),
            "open: a late release opens nothing"
        );
        assert!(b.acquire(2001).is_some());
        assert!(b.acquire(2001).is_some());
        b.release(old);
        assert!(
            b.acquire(2002).is_none(),
            "the old round's permit stays out"
        );
    }

    #[test]
    fn half_open_probes_unanswered_for_open_for_are_replaced() {
        let b = tripped(0);
        assert!(b.acquire(1000).is_some());
        assert!(b.acquire(1100).is_some());
        // Both probes hang (never answered, never dropped).
        assert!(!b.allows(2099) && b.acquire(2099).is_none());
        assert_eq!(b.state(), State::HalfOpen);
        // open_for after the last permit: a fresh round of half_open_requests permits.
        assert!(b.allows(2100));
        let fresh = b.acquire(2100).unwrap();
        assert!(b.acquire(2100).is_some());
        assert!(b.acquire(2100).is_none());
        // A late answer of the old round still counts, and so do the new ones.
        assert_eq!(b.record(true, 2200), None);
        b.release(fresh);
        assert_eq!(b.record(true, 2300), Some(State::Closed));
    }

    #[test]
    fn an_answered_probe_restarts_the_deadline() {
        let b = tripped(0);
        assert!(b.acquire(1000).is_some());
        assert!(b.acquire(1000).is_some());
        assert_eq!(b.record(true, 1900), None);
        assert!(b.acquire(2500).is_none(), "a probe answered at 1900");
        assert!(b.acquire(2900).is_some());
    }
}
