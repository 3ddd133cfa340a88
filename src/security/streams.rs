//! `security.rate_limiting.max_concurrent_streams`: a cap on the standing SSE streams
//! (GET requests on an MCP endpoint) one identity keeps open at once.
//!
//! The identity is the authenticated subject, else the client IP. A stream takes a slot
//! before it is forwarded and gives it back when its request ends, however it ends
//! (the [`StreamSlot`] lives in the request context). Counts are exact and per process:
//! one concurrent map of counters, an entry removed when its count falls to zero.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::Arc;

/// Open streams per identity, and the cap (`0`: none).
#[derive(Debug, Default)]
pub struct StreamCaps {
    cap: u32,
    open: Arc<DashMap<String, u32>>,
}

/// One open stream of an identity; gives its slot back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<DashMap<String, u32>>,
    who: String,
}

/// A stream over the cap: the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyStreams(pub u32);

impl StreamCaps {
    pub fn new(cap: u32) -> StreamCaps {
        StreamCaps {
            cap,
            open: Arc::default(),
        }
    }

    /// [`StreamCaps::new`] for a reload: the open streams counted by `previous` stay
    /// counted (they hold their slots in its map), under the new cap.
    pub fn reusing(cap: u32, previous: Option<&StreamCaps>) -> StreamCaps {
        StreamCaps {
            cap,
            open: previous.map(|p| p.open.clone()).unwrap_or_default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.cap > 0
    }

    /// Take a slot for `who`, or refuse when it already holds `cap` streams.
    pub fn open(&self, who: String) -> Result<StreamSlot, TooManyStreams> {
        match self.open.entry(who.clone()) {
            Entry::Occupied(e) if *e.get() >= self.cap => return Err(TooManyStreams(self.cap)),
            Entry::Occupied(mut e) => *e.get_mut() += 1,
            Entry::Vacant(_) if self.cap == 0 => return Err(TooManyStreams(0)),
            Entry::Vacant(e) => {
                e.insert(1);
            }
        }
        Ok(StreamSlot {
            open: self.open.clone(),
            who,
        })
    }

    /// Streams open for `who`.
    pub fn open_for(&self, who: &str) -> u32 {
        self.open.get(who).map_or(0, |n| *n)
    }

    /// Identities with an open stream.
    pub fn identities(&self) -> usize {
        self.open.len()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.open.entry(std::mem::take(&mut self.who)) {
            let n = e.get_mut();
            *n = n.saturating_sub(1);
            if *n == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_identity_and_frees_slots_on_drop() {
        let caps = StreamCaps::new(2);
        let a1 = caps.open("user:a".into()).unwrap();
        let a2 = caps.open("user:a".into()).unwrap();
        assert_eq!(caps.open("user:a".into()).unwrap_err(), TooManyStreams(2));
        // Another identity has its own slots.
        let b1 = caps.open("ip:10.0.0.2".into()).unwrap();
        assert_eq!(caps.open_for("user:a"), 2);
        drop(a1);
        assert_eq!(caps.open_for("user:a"), 1);
        let a3 = caps.open("user:a".into()).unwrap();
        drop((a2, a3, b1));
        // Entries go away at zero: the map does not grow with past clients.
        assert_eq!(caps.identities(), 0);
    }

    #[test]
    fn slots_are_exact_across_threads() {
        let caps = Arc::new(StreamCaps::new(1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let caps = caps.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let slot = caps.open("user:a".into()).unwrap();
                        drop(slot);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(caps.open_for("user:a"), 0);
        assert_eq!(caps.identities(), 0);
    }
}
