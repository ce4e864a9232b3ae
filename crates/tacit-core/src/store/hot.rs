//! Rows that change on every message, kept in small tables of their own instead of at random
//! places of the large `kv` tree (store schema version 4).
//!
//! - **Counters and outbox** (`outbox` table, keyed by a plain integer): row 0 holds the device's
//!   [`Counters`] (next outbox id, last envelope sequence number processed), rows 1, 2, … the
//!   outbox items under their ids. The ids grow, so a new item lands on the table's last page,
//!   and while only a few items wait (the usual case) the counters and every item share one
//!   page: sealing a message writes one page for both, where schema 3 wrote the counter and
//!   the item to two random leaves of `kv` (and deleting the item later freed its cell there).
//!   Like the log's ids, these ids are in the clear (they tell how many messages this device
//!   sent, not to whom or what); every value is sealed to its row (`outbox` tag and id).
//! - **Seen-markers** (`seen` table: one 16-byte key per history line, no value): the first 16
//!   bytes of the HMAC that hides the marker's logical key, so a row says nothing but that some
//!   message was seen. Rows are about a quarter of a schema-3 marker's (a hidden key and a
//!   sealed constant in `kv`), so the table stays shallow and an insert rarely splits a page.
//!   Markers written before schema 4 stay in `kv` and are still looked up there (see
//!   [`StoreTx::marker_set`]).

use rusqlite::{params, OptionalExtension};

use super::db::{Namespace, StoreTx};
use super::StoreError;

/// Bytes of a seen-marker's stored key (a truncated HMAC-SHA256: 128 bits).
pub(crate) const MARKER_KEY_BYTES: usize = 16;
/// Associated-data tag of the `outbox` table's rows (then the row's id, big-endian).
const OUTBOX_AAD: &[u8] = b"tacit outbox row";
/// Encoded [`Counters`]: two big-endian u64.
const COUNTERS_BYTES: usize = 16;

/// The device's counters, rewritten with every message sealed or envelope processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    /// The id the next outbox item gets (ids are never reused).
    pub outbox_next: u64,
    /// The sequence number of the last envelope processed (0: none).
    pub last_seq: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            outbox_next: 1,
            last_seq: 0,
        }
    }
}

fn aad(id: i64) -> Vec<u8> {
    let mut aad = OUTBOX_AAD.to_vec();
    aad.extend_from_slice(&id.to_be_bytes());
    aad
}

fn row_id(id: u64) -> Result<i64, StoreError> {
    match i64::try_from(id) {
        Ok(i) if i > 0 => Ok(i),
        _ => Err(StoreError::Corrupt("an outbox id is out of range".into())),
    }
}

impl StoreTx<'_> {
    /// The device's counters ([`Counters::default`] if never written). Read once per
    /// transaction.
    pub fn counters(&self) -> Result<Counters, StoreError> {
        if let Some(c) = self.counters.get() {
            return Ok(c);
        }
        let c = self.read_counters()?;
        self.counters.set(Some(c));
        Ok(c)
    }

    fn read_counters(&self) -> Result<Counters, StoreError> {
        let Some(sealed) = self.outbox_row(0)? else {
            return Ok(Counters::default());
        };
        let bytes = self.cipher.open(&aad(0), &sealed)?;
        let corrupt = || StoreError::Corrupt("the device's counters are malformed".into());
        if bytes.len() != COUNTERS_BYTES {
            return Err(corrupt());
        }
        let (next, last) = bytes.split_at(8);
        Ok(Counters {
            outbox_next: u64::from_be_bytes(next.try_into().map_err(|_| corrupt())?),
            last_seq: u64::from_be_bytes(last.try_into().map_err(|_| corrupt())?),
        })
    }

    /// Replaces the device's counters.
    pub fn set_counters(&self, counters: &Counters) -> Result<(), StoreError> {
        let mut bytes = [0u8; COUNTERS_BYTES];
        bytes[..8].copy_from_slice(&counters.outbox_next.to_be_bytes());
        bytes[8..].copy_from_slice(&counters.last_seq.to_be_bytes());
        self.put_outbox_row(0, &bytes)?;
        self.counters.set(Some(*counters));
        Ok(())
    }

    /// Stores the outbox item with id `id` (at least 1), replacing any previous one.
    pub fn outbox_put(&self, id: u64, value: &[u8]) -> Result<(), StoreError> {
        self.put_outbox_row(row_id(id)?, value)
    }

    /// Deletes the outbox item with id `id` (no error if absent).
    pub fn outbox_delete(&self, id: u64) -> Result<(), StoreError> {
        let id = row_id(id)?;
        self.conn
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute(params![id])?;
        Ok(())
    }

    /// Every outbox item as (id, value), by id.
    pub fn outbox_items(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, v FROM outbox WHERE id > 0 ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sealed) = row?;
            let value = self.cipher.open(&aad(id), &sealed)?;
            let id = u64::try_from(id)
                .map_err(|_| StoreError::Corrupt("an outbox id is out of range".into()))?;
            out.push((id, value));
        }
        Ok(out)
    }

    fn outbox_row(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM outbox WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?)
    }

    fn put_outbox_row(&self, id: i64, value: &[u8]) -> Result<(), StoreError> {
        let sealed = self.cipher.seal(&aad(id), value)?;
        self.conn
            .prepare_cached(
                "INSERT INTO outbox (id, v) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
            )?
            .execute(params![id, sealed])?;
        Ok(())
    }

    /// Whether the seen-marker `key` was set (in this schema's table, or, in a store that
    /// was migrated from schema 3 or older, as a row of `kv`).
    pub fn marker_contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        let hidden = self.cipher.hide_key(Namespace::Meta as u8, key);
        let found = self
            .conn
            .prepare_cached("SELECT 1 FROM seen WHERE k = ?1")?
            .query_row(params![&hidden[..MARKER_KEY_BYTES]], |_| Ok(()))
            .optional()?
            .is_some();
        if found || !self.legacy_markers {
            return Ok(found);
        }
        Ok(self.get_sealed(Namespace::Meta, &hidden)?.is_some())
    }

    /// Sets the seen-marker `key`. Returns whether it is new: false if it was set already
    /// (then nothing is written). One statement, where a look-up and an insert took two.
    pub fn marker_set(&self, key: &[u8]) -> Result<bool, StoreError> {
        let hidden = self.cipher.hide_key(Namespace::Meta as u8, key);
        if self.legacy_markers && self.get_sealed(Namespace::Meta, &hidden)?.is_some() {
            return Ok(false);
        }
        let inserted = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO seen (k) VALUES (?1)")?
            .execute(params![&hidden[..MARKER_KEY_BYTES]])?;
        Ok(inserted == 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::{LocalStore, StoreKey};

    #[test]
    fn counters_outbox_and_markers_round_trip() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        s.transaction(|tx| -> Result<(), StoreError> {
            assert_eq!(tx.counters()?, Counters::default());
            tx.set_counters(&Counters {
                outbox_next: 9,
                last_seq: 77,
            })?;
            tx.outbox_put(8, b"eight")?;
            tx.outbox_put(3, b"three")?;
            assert!(!tx.marker_contains(b"m1")?);
            assert!(tx.marker_set(b"m1")?);
            assert!(!tx.marker_set(b"m1")?, "set twice");
            assert!(tx.marker_contains(b"m1")?);
            Ok(())
        })
        .unwrap();
        s.transaction(|tx| -> Result<(), StoreError> {
            assert_eq!(tx.counters()?.last_seq, 77);
            assert_eq!(tx.counters()?.outbox_next, 9);
            assert_eq!(
                tx.outbox_items()?,
                vec![(3, b"three".to_vec()), (8, b"eight".to_vec())]
            );
            tx.outbox_delete(3)?;
            assert_eq!(tx.outbox_items()?.len(), 1);
            assert!(tx.marker_contains(b"m1")?);
            assert!(!tx.marker_contains(b"m2")?);
            assert!(tx.outbox_put(0, b"not an item").is_err());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn outbox_rows_cannot_be_moved() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        s.transaction(|tx| tx.outbox_put(1, b"one")).unwrap();
        s.raw()
            .execute("UPDATE outbox SET id = 2 WHERE id = 1", [])
            .unwrap();
        let r = s.transaction(|tx| tx.outbox_items());
        assert!(
            matches!(r, Err(StoreError::Corrupt(_))),
            "moved row accepted"
        );
    }
}
