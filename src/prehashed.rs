//! Maps whose keys are hashes already: they use a key as its own hash instead of hashing
//! it again (the rate-limit windows' table, the metrics' per-thread cache).

use std::hash::{BuildHasherDefault, Hasher};

/// The hasher of a map keyed by `u64` hashes: a key is its own hash.
#[derive(Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in rather than lose it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The `BuildHasher` of such a map.
pub type BuildPrehashed = BuildHasherDefault<Prehashed>;
