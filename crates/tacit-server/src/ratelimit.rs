//! Token buckets for request rates (per device, and per address in `addrlimit`).

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        TokenBucket {
            rate_per_sec: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes a token at `now`; if none is left, returns how many milliseconds until one is.
    pub fn take_at(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate_per_sec <= 0.0 {
            Err(u64::MAX)
        } else {
            Err((((1.0 - self.tokens) / self.rate_per_sec) * 1000.0).ceil() as u64)
        }
    }

    /// Whether the bucket would be full at `now`: it is then no different from a new one, and
    /// whoever keeps it may forget it.
    pub fn is_full_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate_per_sec >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        for _ in 0..3 {
            assert!(b.take_at(start).is_ok());
        }
        let wait = b.take_at(start).unwrap_err();
        assert!((1..=100).contains(&wait), "{wait}");
        assert!(b.take_at(start + Duration::from_millis(100)).is_ok());
        assert!(b.take_at(start + Duration::from_millis(100)).is_err());
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(b.take_at(later).is_ok());
        }
        assert!(b.take_at(later).is_err());
    }
}
