//! Exact sliding-window counters per key, bounded in memory: the local rate limits and
//! the authentication-failure throttle count with these.
//!
//! Every key has its own counts (no sketch shared between keys, so one client's traffic
//! never counts against another): the current fixed window's count and the previous
//! one's. A key's estimate over the last window length is the previous count weighted by
//! how much of the previous window still overlaps, plus the current count — the same
//! arithmetic the Redis-shared rate limits do in their script ([`Sample`] is what both
//! hand to the judgement).
//!
//! Keys are kept as a keyed 64-bit hash (a per-process random SipHash key), never as
//! the client's text. At most `max_keys` keys are tracked: keys idle for two windows are
//! swept (at most once per window) when the table is full, and a key that still finds
//! no room is counted in one of [`OVERFLOW_BUCKETS`] buckets it shares with other such
//! keys (it may then be over-counted, never under-counted), so memory stays bounded
//! whatever a client sends.

use crate::prehashed::BuildPrehashed;
use dashmap::DashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Buckets shared by the keys that find the table full.
pub const OVERFLOW_BUCKETS: u64 = 4096;

pub use crate::clock::now_ms;

/// One key's counts.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The window the counts belong to (`now / length`).
    window: u64,
    curr: u32,
    prev: u32,
}

impl Slot {
    /// Move the counts to `window` (a later window, or the same).
    fn roll(&mut self, window: u64) {
        if self.window != window {
            self.prev = if self.window + 1 == window {
                self.curr
            } else {
                0
            };
            self.curr = 0;
            self.window = window;
        }
    }
}

/// A key's counts at one instant, as the judgement needs them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Events in the previous window.
    pub prev: u64,
    /// Events in the current window so far.
    pub curr: u64,
    /// How far into the current window the sample was taken, `0.0..1.0`.
    pub into: f64,
    /// The window's length, seconds.
    pub length: f64,
}

impl Sample {
    /// The counts as a sample (tests build the judgement's inputs with it).
    #[cfg(test)]
    pub(crate) fn of(prev: u64, curr: u64, into: f64, length: f64) -> Sample {
        Sample {
            prev,
            curr,
            into,
            length,
        }
    }

    /// Events over the last window length (sliding).
    pub fn estimate(&self) -> f64 {
        let into = self.into.clamp(0.0, 1.0);
        self.prev as f64 * (1.0 - into) + self.curr as f64
    }

    /// Seconds until the current window ends.
    pub fn reset(&self) -> f64 {
        self.length * (1.0 - self.into.clamp(0.0, 1.0))
    }

    /// Seconds to wait, sending nothing, until one more event keeps the estimate within
    /// `limit` (`0.0`: it already would).
    pub fn wait_for(&self, limit: u32) -> f64 {
        let limit = f64::from(limit);
        let (prev, curr) = (self.prev as f64, self.curr as f64);
        let into = self.into.clamp(0.0, 1.0);
        // Still in this window, at fraction f ≥ into: prev·(1−f) + curr + 1 ≤ limit.
        if curr + 1.0 <= limit {
            if prev * (1.0 - into) + curr + 1.0 <= limit {
                return 0.0;
            }
            let f = 1.0 - (limit - curr - 1.0) / prev;
            if f < 1.0 {
                return (f - into).max(0.0) * self.length;
            }
        }
        // In the next window, at fraction g: curr·(1−g) + 1 ≤ limit (this window's count
        // becomes the previous one); at the latest when it has slid out entirely.
        let g = if curr > 0.0 {
            (1.0 - (limit - 1.0) / curr).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (1.0 - into + g) * self.length
    }
}

/// Whole seconds a client is told to wait (`Retry-After`): at least 1, rounded up, with
/// a margin for clocks reading whole milliseconds.
pub fn whole_seconds(wait: f64) -> u64 {
    ((wait + 0.005).ceil() as u64).max(1)
}

/// Sliding-window counters of one length, per key.
pub struct Windows {
    length_ms: u64,
    max_keys: usize,
    // Its keys are already hashes (of the counted key, with this process's random SipHash
    // key): used as they are.
    slots: DashMap<u64, Slot, BuildPrehashed>,
    hasher: RandomState,
    /// The last window in which idle keys were swept.
    swept: AtomicU64,
    /// Some key was ever counted in an overflow bucket (until then no bucket is read).
    overflowed: AtomicBool,
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("length_ms", &self.length_ms)
            .field("keys", &self.slots.len())
            .finish()
    }
}

impl Windows {
    /// Counters over windows of `length`, tracking at most `max_keys` keys exactly.
    pub fn new(length: Duration, max_keys: usize) -> Windows {
        Windows {
            length_ms: (length.as_millis() as u64).max(1),
            max_keys: max_keys.max(1),
            slots: DashMap::default(),
            hasher: RandomState::new(),
            swept: AtomicU64::new(u64::MAX),
            overflowed: AtomicBool::new(false),
        }
    }

    fn sample(&self, slot: &Slot, now: u64) -> Sample {
        Sample {
            prev: u64::from(slot.prev),
            curr: u64::from(slot.curr),
            into: (now % self.length_ms) as f64 / self.length_ms as f64,
            length: self.length_ms as f64 / 1000.0,
        }
    }

    /// Count one event of `key` at `now` (ms, [`now_ms`]); its counts afterwards.
    pub fn hit(&self, key: &impl Hash, now: u64) -> Sample {
        self.add(key, now, 1)
    }

    /// `key`'s counts at `now`, counting nothing.
    pub fn peek(&self, key: &impl Hash, now: u64) -> Sample {
        self.add(key, now, 0)
    }

    fn add(&self, key: &impl Hash, now: u64, n: u32) -> Sample {
        let window = now / self.length_ms;
        let mut h = self.hasher.hash_one(key);
        if let Some(mut slot) = self.slots.get_mut(&h) {
            // A key counted before: one lookup.
            slot.roll(window);
            slot.curr = slot.curr.saturating_add(n);
            return self.sample(&slot, now);
        }
        let bucket = self.hasher.hash_one(("overflow", h % OVERFLOW_BUCKETS));
        if n == 0 {
            // Not counted on its own: maybe in its bucket, when the table was full.
            let mut slot = match self.overflowed.load(Ordering::Acquire) {
                true => self.slots.get(&bucket).map(|s| *s).unwrap_or_default(),
                false => Slot::default(),
            };
            slot.roll(window);
            return self.sample(&slot, now);
        }
        if !self.room(window) {
            // Shared with the other keys that found no room (never under-counted).
            self.overflowed.store(true, Ordering::Release);
            h = bucket;
        }
        let mut slot = self.slots.entry(h).or_insert(Slot {
            window,
            curr: 0,
            prev: 0,
        });
        slot.roll(window);
        slot.curr = slot.curr.saturating_add(n);
        self.sample(&slot, now)
    }

    /// Whether a new key fits, sweeping idle keys first (once per window) when full.
    fn room(&self, window: u64) -> bool {
        if self.slots.len() < self.max_keys {
            return true;
        }
        let swept = self.swept.load(Ordering::Acquire);
        if swept != window
            && self
                .swept
                .compare_exchange(swept, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // Keys whose counts all lie two windows back count nothing any more.
            self.slots.retain(|_, s| s.window + 1 >= window);
        }
        self.slots.len() < self.max_keys
    }

    /// Keys tracked now (overflow buckets included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_counted_apart_and_slide() {
        let w = Windows::new(Duration::from_secs(1), 100);
        for _ in 0..3 {
            w.hit(&"a", 100);
        }
        assert_eq!(w.hit(&"b", 100).estimate(), 1.0);
        assert_eq!(w.peek(&"a", 100).estimate(), 3.0);
        // Half-way into the next window, half the previous one still counts.
        let s = w.peek(&"a", 1500);
        assert_eq!((s.prev, s.curr), (3, 0));
        assert!((s.estimate() - 1.5).abs() < 1e-9);
        // Two windows on, nothing.
        assert_eq!(w.peek(&"a", 2100).estimate(), 0.0);
        assert_eq!(w.peek(&"never", 2100).estimate(), 0.0);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn ten_thousand_keys_under_their_limit_are_never_over_it() {
        let w = Windows::new(Duration::from_secs(60), 100_000);
        for i in 0..10_000u32 {
            w.hit(&i, 5);
            assert!(w.hit(&i, 6).estimate() <= 2.0);
        }
    }

    #[test]
    fn a_full_table_sweeps_idle_keys_and_then_shares_buckets() {
        let w = Windows::new(Duration::from_secs(1), 10);
        for i in 0..10u32 {
            w.hit(&i, 0);
        }
        // Full: a new key shares an overflow bucket; nothing is lost, and looking it
        // up finds what was counted.
        assert!(w.hit(&"new", 10).estimate() >= 1.0);
        assert!(w.peek(&"new", 20).estimate() >= 1.0);
        assert!(w.len() <= 11);
        // Two windows later the idle keys are swept and new keys fit exactly again.
        assert_eq!(w.hit(&"later", 2500).estimate(), 1.0);
        assert!(w.len() <= 3, "{}", w.len());
    }

    #[test]
    fn waiting_the_answered_time_lets_the_next_event_through() {
        // For every shape, waiting `wait_for` (and nothing sooner) keeps the next event
        // within the limit: checked by replaying the estimate at that instant.
        let limit = 5;
        for prev in [0u64, 1, 4, 5, 9, 30] {
            for curr in [0u64, 1, 4, 5, 6, 12] {
                for into in [0.0, 0.1, 0.5, 0.9, 0.999] {
                    let s = Sample::of(prev, curr, into, 60.0);
                    let wait = s.wait_for(limit);
                    let at = into + wait / 60.0 + 1e-9;
                    let est = if at < 1.0 {
                        prev as f64 * (1.0 - at) + curr as f64
                    } else if at < 2.0 {
                        curr as f64 * (2.0 - at)
                    } else {
                        0.0
                    };
                    assert!(
                        est + 1.0 <= f64::from(limit) + 1e-6,
                        "prev {prev} curr {curr} into {into}: wait {wait} leaves {est}"
                    );
                    assert!(wait <= 120.0);
                }
            }
        }
        // Over by the current window alone: the wait runs into the next window.
        let s = Sample::of(0, 20, 0.5, 1.0);
        assert!((s.wait_for(2) - (0.5 + 0.95)).abs() < 1e-9);
        assert_eq!(whole_seconds(1.45), 2);
        assert_eq!(whole_seconds(0.0), 1);
    }
}
