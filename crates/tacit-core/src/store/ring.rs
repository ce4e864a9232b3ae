//! Rings of recent digests: the last [`RING_DIGESTS`] 32-byte digests pushed under a key,
//! written one small bucket at a time.
//!
//! A ring is [`RING_BUCKETS`] rows of [`BUCKET_DIGESTS`] slots each in [`Namespace::Ring`],
//! sealed like every other row; the digest pushed as the n-th (from 0) goes to slot `n % RING_DIGESTS`, so it replaces
//! exactly the one pushed `RING_DIGESTS` before it. A push rewrites only its bucket (about
//! 560 bytes sealed, which fits in a database page), never the whole ring. Each bucket row also
//! holds the ring's count of pushes as of its last write, so the count is the largest of them.
//!
//! The store remembers the rings it has read or written (in the same way as chunks: lent to a
//! transaction, kept only if it commits, dropped when another connection changes the file), so
//! a lookup needs no read once a ring is in memory.
//!
//! Store schema version 2 kept a ring as one row under the ring's key in [`Namespace::Meta`]
//! (the digests, oldest first); such a row is read when the ring is first loaded and replaced
//! by buckets at the next push.

use std::collections::{HashMap, HashSet};

use super::db::{Namespace, StoreTx};
use super::StoreError;

/// Digest length, in bytes.
pub const DIGEST_BYTES: usize = 32;
/// How many digests a ring remembers.
pub const RING_DIGESTS: usize = 128;
/// Slots per bucket row.
const BUCKET_DIGESTS: usize = 16;
/// Bucket rows per ring.
const RING_BUCKETS: usize = RING_DIGESTS / BUCKET_DIGESTS;
/// At most this many rings are remembered; past it the memory starts afresh.
const REMEMBERED_RINGS: usize = 1024;

type Digest = [u8; DIGEST_BYTES];

/// One ring, as its rows hold it.
#[derive(Clone)]
pub(crate) struct Ring {
    slots: Vec<Digest>,
    /// How many digests were ever pushed.
    pushed: u64,
    /// Read from a schema-version-2 row: every bucket must be written and that row deleted.
    legacy: bool,
}

impl Ring {
    fn contains(&self, digest: &Digest) -> bool {
        let filled = usize::try_from(self.pushed)
            .unwrap_or(RING_DIGESTS)
            .min(RING_DIGESTS);
        // Slots fill from 0 and wrap around: before the first wrap only 0..pushed are used.
        self.slots[..filled].iter().any(|d| d == digest)
    }

    fn bucket_value(&self, bucket: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + BUCKET_DIGESTS * DIGEST_BYTES);
        out.extend_from_slice(&self.pushed.to_be_bytes());
        for d in &self.slots[bucket * BUCKET_DIGESTS..(bucket + 1) * BUCKET_DIGESTS] {
            out.extend_from_slice(d);
        }
        out
    }
}

/// The rings a store remembers (ring key -> ring).
#[derive(Default)]
pub(crate) struct RingMemory {
    rings: HashMap<Vec<u8>, Ring>,
    /// Rings changed or loaded by the current transaction (dropped if it rolls back).
    touched: HashSet<Vec<u8>>,
}

impl RingMemory {
    /// Forgets everything (another connection changed the file).
    pub(crate) fn clear(&mut self) {
        self.rings.clear();
        self.touched.clear();
    }

    /// Ends a transaction: what it touched is kept if it committed, forgotten otherwise.
    pub(crate) fn finish(&mut self, committed: bool) {
        let touched = std::mem::take(&mut self.touched);
        if !committed {
            for k in touched {
                self.rings.remove(&k);
            }
        } else if self.rings.len() > REMEMBERED_RINGS {
            self.rings.clear();
        }
    }
}

fn bucket_key(key: &[u8], bucket: usize) -> Vec<u8> {
    // Every bucket key is a ring key and one byte: no two rings' buckets share a key.
    let mut k = key.to_vec();
    k.push(bucket as u8);
    k
}

fn corrupt() -> StoreError {
    StoreError::Corrupt("a ring of digests is malformed".into())
}

impl StoreTx<'_> {
    /// Whether `digest` is among the last [`RING_DIGESTS`] pushed to the ring under `key` (an
    /// absent ring holds nothing).
    pub fn ring_contains(&self, key: &[u8], digest: &Digest) -> Result<bool, StoreError> {
        self.with_ring(key, |ring| Ok(ring.contains(digest)))
    }

    /// Pushes `digest` to the ring under `key`, forgetting the one pushed [`RING_DIGESTS`]
    /// before it. Writes one bucket row.
    pub fn ring_push(&self, key: &[u8], digest: &Digest) -> Result<(), StoreError> {
        self.with_ring(key, |ring| {
            let slot = (ring.pushed % RING_DIGESTS as u64) as usize;
            ring.slots[slot] = *digest;
            ring.pushed += 1;
            if ring.legacy {
                for bucket in 0..RING_BUCKETS {
                    self.put_bucket(key, bucket, ring)?;
                }
                self.delete(Namespace::Meta, key)?;
                ring.legacy = false;
            } else {
                let bucket = slot / BUCKET_DIGESTS;
                self.put_bucket(key, bucket, ring)?;
            }
            Ok(())
        })
    }

    fn put_bucket(&self, key: &[u8], bucket: usize, ring: &Ring) -> Result<(), StoreError> {
        self.put(
            Namespace::Ring,
            &bucket_key(key, bucket),
            &ring.bucket_value(bucket),
        )
    }

    fn with_ring<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut Ring) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let id = key.to_vec();
        let loaded = self.rings.borrow().rings.contains_key(&id);
        if !loaded {
            let ring = self.load_ring(key)?;
            self.rings.borrow_mut().rings.insert(id.clone(), ring);
        }
        let mut memory = self.rings.borrow_mut();
        memory.touched.insert(id.clone());
        let ring = memory.rings.get_mut(&id).ok_or_else(corrupt)?;
        f(ring)
    }

    fn load_ring(&self, key: &[u8]) -> Result<Ring, StoreError> {
        let mut ring = Ring {
            slots: vec![[0; DIGEST_BYTES]; RING_DIGESTS],
            pushed: 0,
            legacy: false,
        };
        let mut found = false;
        for bucket in 0..RING_BUCKETS {
            let Some(row) = self.get(Namespace::Ring, &bucket_key(key, bucket))? else {
                continue;
            };
            found = true;
            let (pushed, digests) = row.split_at_checked(8).ok_or_else(corrupt)?;
            if digests.len() != BUCKET_DIGESTS * DIGEST_BYTES {
                return Err(corrupt());
            }
            let pushed = u64::from_be_bytes(pushed.try_into().map_err(|_| corrupt())?);
            ring.pushed = ring.pushed.max(pushed);
            for (i, d) in digests.chunks_exact(DIGEST_BYTES).enumerate() {
                ring.slots[bucket * BUCKET_DIGESTS + i].copy_from_slice(d);
            }
        }
        if !found {
            // A ring written by schema version 2: the digests in one row, oldest first.
            if let Some(row) = self.get(Namespace::Meta, key)? {
                let digests = row.chunks_exact(DIGEST_BYTES).take(RING_DIGESTS);
                for (i, d) in digests.enumerate() {
                    ring.slots[i].copy_from_slice(d);
                    ring.pushed += 1;
                }
                ring.legacy = true;
            }
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::{LocalStore, StoreKey};

    fn digest(i: u32) -> Digest {
        let mut d = [0xa5; DIGEST_BYTES];
        d[..4].copy_from_slice(&i.to_be_bytes());
        d
    }

    fn contains(s: &mut LocalStore, i: u32) -> bool {
        s.transaction(|tx| tx.ring_contains(b"ring", &digest(i)))
            .unwrap()
    }

    fn push(s: &mut LocalStore, i: u32) {
        s.transaction(|tx| tx.ring_push(b"ring", &digest(i)))
            .unwrap()
    }

    #[test]
    fn a_ring_holds_exactly_the_last_pushed_digests_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let path = dir.path().join("store.db");
        let mut s = LocalStore::open(&path, &key).unwrap();
        assert!(!contains(&mut s, 0));
        let total = RING_DIGESTS as u32 + 37;
        for i in 0..total {
            push(&mut s, i);
            assert!(contains(&mut s, i));
        }
        for s in [&mut s, &mut LocalStore::open(&path, &key).unwrap()] {
            for i in 0..total {
                let expected = i >= total - RING_DIGESTS as u32;
                assert_eq!(contains(s, i), expected, "digest {i}");
            }
        }
    }

    #[test]
    fn a_rolled_back_push_is_not_remembered() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        push(&mut s, 1);
        let failed: Result<(), StoreError> = s.transaction(|tx| {
            tx.ring_push(b"ring", &digest(2))?;
            Err(StoreError::Corrupt("simulated failure".into()))
        });
        assert!(failed.is_err());
        assert!(contains(&mut s, 1));
        assert!(!contains(&mut s, 2));
        push(&mut s, 3);
        assert!(contains(&mut s, 1) && contains(&mut s, 3) && !contains(&mut s, 2));
    }

    #[test]
    fn a_push_writes_one_small_row() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        for i in 0..RING_DIGESTS as u32 {
            push(&mut s, i);
        }
        let rows = |s: &LocalStore| -> Vec<Vec<u8>> {
            s.raw()
                .prepare("SELECT v FROM kv ORDER BY k")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let before = rows(&s);
        push(&mut s, 1000);
        let after = rows(&s);
        assert_eq!(before.len(), after.len());
        let changed: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).collect();
        assert_eq!(changed.len(), 1);
        assert!(changed[0].1.len() < 600, "{}", changed[0].1.len());
    }

    #[test]
    fn a_version_2_ring_is_read_and_replaced() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let old: Vec<u8> = (0..RING_DIGESTS as u32).flat_map(digest).collect();
        s.transaction(|tx| tx.put(Namespace::Meta, b"ring", &old))
            .unwrap();
        assert!(contains(&mut s, 0) && contains(&mut s, 127) && !contains(&mut s, 128));
        push(&mut s, 128);
        assert!(!contains(&mut s, 0) && contains(&mut s, 1) && contains(&mut s, 128));
        let legacy = s
            .transaction(|tx| tx.get(Namespace::Meta, b"ring"))
            .unwrap();
        assert_eq!(legacy, None, "the old row is gone");
    }
}
