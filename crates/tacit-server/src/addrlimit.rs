//! Per-address token buckets for what anyone may do before authenticating: opening a connection
//! and sending requests on it before it is signed in.
//!
//! Addresses are grouped the way one party usually holds them: an IPv4 address on its own, an
//! IPv6 address by its /64 prefix (one host or one customer network), an IPv4-mapped IPv6
//! address as the IPv4 address it maps. The map of buckets is bounded: an address whose bucket
//! has refilled is the same as one never seen, so it is dropped at the next sweep; when the map is
//! full of busy addresses, new addresses are refused until it is swept again (the server keeps
//! serving the addresses it knows and everyone already connected).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ratelimit::TokenBucket;

/// How often, at most, a full map is swept for idle entries (a sweep walks the whole map).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The unit a bucket is kept for: an IPv4 address or an IPv6 /64 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// An IPv4 address (or an IPv4-mapped IPv6 address).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix64(u64),
}

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4.octets()),
                None => AddressKey::V6Prefix64((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Why an address may not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRefusal {
    /// The address used up its bucket; a token is back in this many milliseconds.
    RateLimited(u64),
    /// The map is full of busy addresses; retry after this many milliseconds.
    TooManyAddresses(u64),
}

struct Map {
    buckets: HashMap<AddressKey, TokenBucket>,
    last_sweep: Option<Instant>,
}

/// Token buckets per address, at most `capacity` of them.
pub struct AddressLimiter {
    rate_per_sec: u32,
    burst: u32,
    capacity: usize,
    map: Mutex<Map>,
}

impl AddressLimiter {
    /// Buckets of `rate_per_sec` tokens a second, `burst` at most, for at most `capacity`
    /// addresses. A rate of 0 turns the limiter off.
    pub fn new(rate_per_sec: u32, burst: u32, capacity: usize) -> Self {
        AddressLimiter {
            rate_per_sec,
            burst,
            capacity: capacity.max(1),
            map: Mutex::new(Map {
                buckets: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Takes a token for `ip` at `now`.
    pub fn take_at(&self, ip: IpAddr, now: Instant) -> Result<(), AddressRefusal> {
        if self.rate_per_sec == 0 {
            return Ok(());
        }
        let key = AddressKey::from(ip);
        let Ok(mut map) = self.map.lock() else {
            return Ok(());
        };
        if let Some(bucket) = map.buckets.get_mut(&key) {
            return bucket.take_at(now).map_err(AddressRefusal::RateLimited);
        }
        if map.buckets.len() >= self.capacity {
            let due = map
                .last_sweep
                .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_INTERVAL);
            if due {
                map.last_sweep = Some(now);
                map.buckets.retain(|_, b| !b.is_full_at(now));
            }
            if map.buckets.len() >= self.capacity {
                let next = map.last_sweep.map_or(SWEEP_INTERVAL, |last| {
                    (last + SWEEP_INTERVAL).saturating_duration_since(now)
                });
                tracing::warn!(
                    addresses = map.buckets.len(),
                    "refusing a new address: the per-address rate-limit table is full"
                );
                return Err(AddressRefusal::TooManyAddresses(
                    next.as_millis().clamp(1, u128::from(u64::MAX)) as u64,
                ));
            }
        }
        let mut bucket = TokenBucket::new(self.rate_per_sec, self.burst);
        let taken = bucket.take_at(now);
        map.buckets.insert(key, bucket);
        taken.map_err(AddressRefusal::RateLimited)
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.map.lock().map_or(0, |m| m.buckets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn each_address_has_its_own_bucket() {
        let now = Instant::now();
        let l = AddressLimiter::new(1, 2, 100);
        assert!(l.take_at(v4(1), now).is_ok());
        assert!(l.take_at(v4(1), now).is_ok());
        assert!(matches!(
            l.take_at(v4(1), now),
            Err(AddressRefusal::RateLimited(ms)) if (1..=1000).contains(&ms)
        ));
        assert!(l.take_at(v4(2), now).is_ok());
        assert!(l.take_at(v4(1), now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn ipv6_is_grouped_by_slash_64_and_mapped_ipv4_by_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::from(a), AddressKey::from(b));
        assert_ne!(AddressKey::from(a), AddressKey::from(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(AddressKey::from(mapped), AddressKey::from(v4(7)));
    }

    #[test]
    fn the_map_stays_bounded_and_idle_entries_make_room() {
        let now = Instant::now();
        let l = AddressLimiter::new(10, 5, 3);
        for i in 0..3 {
            assert!(l.take_at(v4(i), now).is_ok());
        }
        // Full of busy addresses: a new one is refused, the known ones still served.
        assert!(matches!(
            l.take_at(v4(9), now),
            Err(AddressRefusal::TooManyAddresses(_))
        ));
        assert!(l.take_at(v4(0), now).is_ok());
        assert_eq!(l.tracked(), 3);
        // Once their buckets refilled, the entries are dropped to make room.
        let later = now + Duration::from_secs(2);
        assert!(l.take_at(v4(9), later).is_ok());
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn a_zero_rate_turns_it_off() {
        let now = Instant::now();
        let l = AddressLimiter::new(0, 0, 1);
        for _ in 0..100 {
            assert!(l.take_at(v4(1), now).is_ok());
        }
        assert_eq!(l.tracked(), 0);
    }
}
