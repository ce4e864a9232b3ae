//! The random schedule and the environment knobs of the crash tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many kills a test makes: `TACIT_CRASH_KILLS`, else `default`.
pub fn kills(default: u32) -> u32 {
    std::env::var("TACIT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (SplitMix64): the schedule of one run is reproducible from
/// its seed. Not for anything secret.
pub struct Schedule {
    state: u64,
}

impl Schedule {
    /// Seeded from `TACIT_CRASH_SEED`, else from the clock; prints the seed.
    pub fn new(test: &str) -> Schedule {
        let seed = std::env::var("TACIT_CRASH_SEED")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{test}: TACIT_CRASH_SEED={seed}");
        Schedule::from_seed(seed)
    }

    /// Seeded with `seed`.
    pub fn from_seed(seed: u64) -> Schedule {
        Schedule { state: seed }
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A duration between `lo_ms` and `hi_ms`.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.next() % (hi_ms - lo_ms + 1))
    }
}
