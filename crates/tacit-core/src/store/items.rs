//! Large values as sealed chunks, rewritten only where they changed.
//!
//! OpenMLS hands its storage whole items and rewrites some of them on every message (the
//! message secrets of the current and past epochs, whose size grows with the group). An item
//! stored with [`StoreTx::put_item`] is one row when it is short, and otherwise a header row
//! plus one row per [`CHUNK_BYTES`] of its encoding, in [`Namespace::Chunk`]. The store
//! remembers the chunks it last wrote or read for each item, so a rewrite compares and writes
//! only the chunks that differ and deletes those past the new end — in the caller's
//! transaction, sealed and with hidden keys like every other row.
//!
//! Each chunk is sealed to its own row (its hidden key is derived from the item's and its
//! position), so a chunk moved to another item or position fails authentication; and the header
//! (sealed to the item's row) holds the item's length and a SHA-256 digest over the SHA-256 of
//! every chunk, checked on every read, so an older version of a chunk (or of several) is
//! refused too: an item always reads back exactly as it was written. The header's size does
//! not depend on the item's: a rewrite of one chunk writes that chunk and a header of 41 bytes.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::db::{Namespace, StoreTx};
use super::StoreError;

/// Size of a chunk, in bytes: values longer than this are split. A sealed row of this size
/// (with its 32-byte key and the 40 bytes of nonce and tag) stays within the 1,002 bytes SQLite
/// keeps in a 4 KiB page of the `kv` table, so rewriting a chunk touches one page and never
/// frees and allocates overflow pages (which `secure_delete` also overwrites).
pub const CHUNK_BYTES: usize = 896;
/// The chunk size of items written by store schema version 2 (their header says [`CHUNKED`]).
const V2_CHUNK_BYTES: usize = 4096;
/// At most this many items have their chunks remembered; past it the memory starts afresh
/// (the next write of each forgotten item rewrites it whole).
pub const REMEMBERED_ITEMS: usize = 4096;

/// First byte of an item's row: the value follows.
const INLINE: u8 = 0;
/// First byte of an item's row: a header follows (length, digest of the chunks); chunks of
/// [`V2_CHUNK_BYTES`] (written by store schema version 2).
const CHUNKED: u8 = 1;
/// First byte of an item's row: a header follows; chunks of [`CHUNK_BYTES`].
const CHUNKED_SMALL: u8 = 2;
const DIGEST_BYTES: usize = 32;
/// Domain separation for the digest over the chunks' hashes.
const DIGEST_CONTEXT: &[u8] = b"tacit local store chunked value v1";

type Hash = [u8; DIGEST_BYTES];

/// What the store knows an item's rows hold.
#[derive(Default)]
pub(crate) struct Remembered {
    /// The chunks (empty: the item is one row, or absent; an empty chunk: contents unknown).
    chunks: Vec<Zeroizing<Vec<u8>>>,
    /// The SHA-256 of each chunk.
    hashes: Vec<Hash>,
    /// The item's length when chunked (0 otherwise).
    len: usize,
}

/// Items taken out of the memory by one transaction: hidden key -> what its rows now hold.
pub(crate) type Touched = HashMap<Vec<u8>, Remembered>;

/// The remembered items of a store (hidden key -> rows).
#[derive(Default)]
pub(crate) struct ChunkMemory {
    items: HashMap<Vec<u8>, Remembered>,
}

impl ChunkMemory {
    /// Forgets everything (another connection changed the file).
    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    /// Takes back what a committed transaction touched.
    pub(crate) fn absorb(&mut self, touched: Touched) {
        if self.items.len() + touched.len() > REMEMBERED_ITEMS {
            self.items.clear();
        }
        self.items.extend(touched);
    }
}

/// An item as read from the store.
pub enum Item {
    /// Written by this version of the store.
    Current(Zeroizing<Vec<u8>>),
    /// Written by store schema version 1 with [`StoreTx::put`] (kept readable).
    Legacy(Zeroizing<Vec<u8>>),
}

fn chunk_key(item_key: &[u8], index: usize) -> Vec<u8> {
    let mut key = item_key.to_vec();
    key.extend_from_slice(&(index as u64).to_be_bytes());
    key
}

/// The digest a header holds: over the item's length and its chunks' hashes, in order.
fn digest(len: usize, hashes: &[Hash]) -> Hash {
    let mut d = Sha256::new();
    d.update(DIGEST_CONTEXT);
    d.update((len as u64).to_be_bytes());
    for h in hashes {
        d.update(h);
    }
    d.finalize().into()
}

/// A header row: CHUNKED_SMALL, total length (u64), digest.
fn encode_header(len: usize, hashes: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + DIGEST_BYTES);
    out.push(CHUNKED_SMALL);
    out.extend_from_slice(&(len as u64).to_be_bytes());
    out.extend_from_slice(&digest(len, hashes));
    out
}

/// The chunk size a header's first byte stands for, if it is a header's.
fn chunk_bytes(tag: u8) -> Option<usize> {
    match tag {
        CHUNKED => Some(V2_CHUNK_BYTES),
        CHUNKED_SMALL => Some(CHUNK_BYTES),
        _ => None,
    }
}

/// (length, digest) from a header row (after its first byte), whose chunks are `chunk` bytes.
fn decode_header(bytes: &[u8], chunk: usize) -> Result<(usize, &[u8]), StoreError> {
    let corrupt = || StoreError::Corrupt("a chunked value's header is malformed".into());
    let (len, digest) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
    let len = u64::from_be_bytes(len.try_into().map_err(|_| corrupt())?);
    let len = usize::try_from(len).map_err(|_| corrupt())?;
    if digest.len() != DIGEST_BYTES || len <= chunk {
        return Err(corrupt());
    }
    Ok((len, digest))
}

impl StoreTx<'_> {
    /// Stores an item under `key` in `ns`, replacing any previous value: one row if it is at
    /// most [`CHUNK_BYTES`] long, else a header and chunks of which only those that changed
    /// since the item was last written or read are rewritten.
    pub fn put_item(&self, ns: Namespace, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        let mut old = self.take_remembered(ns, &k)?;
        let mut new = Remembered::default();
        if value.len() <= CHUNK_BYTES {
            let mut row = Zeroizing::new(Vec::with_capacity(1 + value.len()));
            row.push(INLINE);
            row.extend_from_slice(value);
            self.put_hidden(ns, &k, &row)?;
        } else {
            let mut changed = old.len != value.len();
            for (i, chunk) in value.chunks(CHUNK_BYTES).enumerate() {
                match old.chunks.get_mut(i) {
                    Some(c) if c.as_slice() == chunk => {
                        new.chunks.push(std::mem::take(c));
                        new.hashes.push(old.hashes[i]);
                    }
                    _ => {
                        changed = true;
                        self.put_chunk(&k, i, chunk)?;
                        new.chunks.push(Zeroizing::new(chunk.to_vec()));
                        new.hashes.push(Sha256::digest(chunk).into());
                    }
                }
            }
            new.len = value.len();
            if changed {
                self.put_hidden(ns, &k, &encode_header(value.len(), &new.hashes))?;
            }
        }
        for i in new.chunks.len()..old.chunks.len() {
            self.delete_chunk(&k, i)?;
        }
        self.touched.borrow_mut().insert(k, new);
        Ok(())
    }

    /// The item under `key` in `ns`, if any (see [`StoreTx::put_item`]); values written with
    /// [`StoreTx::put`] by schema version 1 come back as [`Item::Legacy`].
    pub fn get_item(&self, ns: Namespace, key: &[u8]) -> Result<Option<Item>, StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        let Some(row) = self.get_hidden(ns, &k)? else {
            return Ok(None);
        };
        match row.split_first() {
            Some((&INLINE, value)) => {
                self.remember(k, Remembered::default());
                Ok(Some(Item::Current(Zeroizing::new(value.to_vec()))))
            }
            Some((&tag, header)) if chunk_bytes(tag).is_some() => {
                let chunk_size = chunk_bytes(tag).unwrap_or(CHUNK_BYTES);
                let (len, stored_digest) = decode_header(header, chunk_size)?;
                let count = len.div_ceil(chunk_size);
                let mut value = Zeroizing::new(Vec::with_capacity(len));
                let mut chunks = Vec::with_capacity(count);
                let mut hashes = Vec::with_capacity(count);
                for i in 0..count {
                    let chunk = self.get_chunk(&k, i)?;
                    value.extend_from_slice(&chunk);
                    hashes.push(Sha256::digest(&chunk).into());
                    chunks.push(chunk);
                }
                let intact =
                    value.len() == len && bool::from(digest(len, &hashes).ct_eq(stored_digest));
                if !intact {
                    return Err(StoreError::Corrupt(
                        "a chunked value does not match its header".into(),
                    ));
                }
                let remembered = Remembered {
                    chunks,
                    hashes,
                    len,
                };
                self.remember(k, remembered);
                Ok(Some(Item::Current(value)))
            }
            _ => Ok(Some(Item::Legacy(row))),
        }
    }

    /// Deletes the item under `key` in `ns` with all its chunks (no error if absent).
    pub fn delete_item(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        let old = self.take_remembered(ns, &k)?;
        for i in 0..old.chunks.len() {
            self.delete_chunk(&k, i)?;
        }
        self.delete_hidden(ns, &k)?;
        self.touched.borrow_mut().insert(k, Remembered::default());
        Ok(())
    }

    /// What the item's rows hold now, taken out of the memory (or, when it is not remembered,
    /// read from the header: the number of chunks, whose contents then count as unknown).
    fn take_remembered(&self, ns: Namespace, k: &[u8]) -> Result<Remembered, StoreError> {
        if let Some(r) = self.touched.borrow_mut().remove(k) {
            return Ok(r);
        }
        if let Some(r) = self.memory.borrow_mut().items.remove(k) {
            return Ok(r);
        }
        let Some(row) = self.get_hidden(ns, k)? else {
            return Ok(Remembered::default());
        };
        match row.split_first() {
            Some((&tag, header)) if chunk_bytes(tag).is_some() => {
                let chunk_size = chunk_bytes(tag).unwrap_or(CHUNK_BYTES);
                let (len, _) = decode_header(header, chunk_size)?;
                let count = len.div_ceil(chunk_size);
                Ok(Remembered {
                    // Contents unknown: nothing compares equal, so every chunk is rewritten.
                    chunks: vec![Zeroizing::new(Vec::new()); count],
                    hashes: vec![[0; DIGEST_BYTES]; count],
                    len,
                })
            }
            _ => Ok(Remembered::default()),
        }
    }

    fn remember(&self, k: Vec<u8>, r: Remembered) {
        self.memory.borrow_mut().items.remove(&k);
        self.touched.borrow_mut().insert(k, r);
    }

    fn put_chunk(&self, item: &[u8], i: usize, chunk: &[u8]) -> Result<(), StoreError> {
        let k = self
            .cipher
            .hide_key(Namespace::Chunk as u8, &chunk_key(item, i));
        self.put_hidden(Namespace::Chunk, &k, chunk)
    }

    fn get_chunk(&self, item: &[u8], i: usize) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let k = self
            .cipher
            .hide_key(Namespace::Chunk as u8, &chunk_key(item, i));
        self.get_hidden(Namespace::Chunk, &k)?
            .ok_or_else(|| StoreError::Corrupt("a chunk of a stored value is missing".into()))
    }

    fn delete_chunk(&self, item: &[u8], i: usize) -> Result<(), StoreError> {
        let k = self
            .cipher
            .hide_key(Namespace::Chunk as u8, &chunk_key(item, i));
        self.delete_hidden(Namespace::Chunk, &k)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;

    use super::*;
    use crate::store::{LocalStore, StoreKey};

    /// Every row of the file: (namespace, hidden key) -> sealed value.
    fn rows(s: &LocalStore) -> HashMap<(u8, Vec<u8>), Vec<u8>> {
        let mut stmt = s.raw().prepare("SELECT ns, k, v FROM kv").unwrap();
        let rows = stmt
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// Rows written or deleted between two snapshots.
    fn changed(
        before: &HashMap<(u8, Vec<u8>), Vec<u8>>,
        after: &HashMap<(u8, Vec<u8>), Vec<u8>>,
    ) -> (usize, usize) {
        let written = after.iter().filter(|(k, v)| before.get(*k) != Some(*v));
        let deleted = before.keys().filter(|k| !after.contains_key(*k));
        (written.count(), deleted.count())
    }

    fn put(s: &mut LocalStore, key: &[u8], value: &[u8]) {
        s.transaction(|tx| tx.put_item(Namespace::Mls, key, value))
            .unwrap();
    }

    fn get(s: &mut LocalStore, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        s.transaction(|tx| {
            Ok(match tx.get_item(Namespace::Mls, key)? {
                Some(Item::Current(v)) => Some(v.to_vec()),
                Some(Item::Legacy(_)) => panic!("written as an item"),
                None => None,
            })
        })
    }

    /// A value of `chunks` chunks and a bit, each chunk filled with its own byte.
    fn value(chunks: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..chunks)
            .flat_map(|i| vec![i as u8; CHUNK_BYTES])
            .collect();
        v.extend_from_slice(b"tail");
        v
    }

    #[test]
    fn a_large_value_is_rewritten_only_where_it_changed() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let mut v = value(10);
        put(&mut s, b"item", &v);
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v.clone()));
        assert_eq!(rows(&s).len(), 1 + 1 + 11, "key check, header, 11 chunks");

        // One byte in the middle: that chunk and the header.
        v[5 * CHUNK_BYTES + 7] ^= 0xff;
        let before = rows(&s);
        put(&mut s, b"item", &v);
        assert_eq!(changed(&before, &rows(&s)), (2, 0));
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v.clone()));

        // The same value again: nothing at all.
        let before = rows(&s);
        put(&mut s, b"item", &v);
        assert_eq!(changed(&before, &rows(&s)), (0, 0));

        // Shorter: the vanished chunks are deleted; then small enough for one row.
        v.truncate(3 * CHUNK_BYTES + 1);
        let before = rows(&s);
        put(&mut s, b"item", &v);
        assert_eq!(
            changed(&before, &rows(&s)),
            (2, 7),
            "header and the last chunk"
        );
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v.clone()));
        put(&mut s, b"item", b"small");
        assert_eq!(rows(&s).len(), 2, "key check and the item's one row");
        assert_eq!(get(&mut s, b"item").unwrap(), Some(b"small".to_vec()));

        s.transaction(|tx| tx.delete_item(Namespace::Mls, b"item"))
            .unwrap();
        assert_eq!(get(&mut s, b"item").unwrap(), None);
        assert_eq!(rows(&s).len(), 1);
    }

    #[test]
    fn a_value_read_after_opening_is_then_rewritten_only_where_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let path = dir.path().join("store.db");
        let mut v = value(6);
        put(&mut LocalStore::open(&path, &key).unwrap(), b"item", &v);

        // Reopened: nothing is remembered, so a blind write rewrites every chunk...
        let mut s = LocalStore::open(&path, &key).unwrap();
        let before = rows(&s);
        v[0] ^= 1;
        put(&mut s, b"item", &v);
        assert_eq!(changed(&before, &rows(&s)), (8, 0));
        // ...while a read teaches the store what is there.
        let mut s = LocalStore::open(&path, &key).unwrap();
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v.clone()));
        v[0] ^= 1;
        let before = rows(&s);
        put(&mut s, b"item", &v);
        assert_eq!(changed(&before, &rows(&s)), (2, 0));
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v));
    }

    #[test]
    fn what_a_rolled_back_transaction_wrote_is_not_remembered() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let first = value(4);
        put(&mut s, b"item", &first);
        // A transaction rewrites every chunk, then fails: nothing of it is kept.
        let other: Vec<u8> = first.iter().map(|b| b ^ 0x55).collect();
        let failed: Result<(), StoreError> = s.transaction(|tx| {
            tx.put_item(Namespace::Mls, b"item", &other)?;
            Err(StoreError::Corrupt("simulated failure".into()))
        });
        assert!(failed.is_err());
        assert_eq!(get(&mut s, b"item").unwrap(), Some(first.clone()));
        // Had the store remembered the rolled-back chunks, this write (equal to them except
        // for the first chunk) would skip chunks that are not on disk.
        let mut next = other.clone();
        next[0] ^= 1;
        put(&mut s, b"item", &next);
        assert_eq!(get(&mut s, b"item").unwrap(), Some(next));

        // The same after a dry run.
        let dry: Result<(), StoreError> =
            s.dry_run(|tx| tx.put_item(Namespace::Mls, b"item", &first));
        assert!(dry.is_ok());
        put(&mut s, b"item", &other);
        assert_eq!(get(&mut s, b"item").unwrap(), Some(other));
    }

    #[test]
    fn a_write_by_another_connection_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let path = dir.path().join("store.db");
        let mut a = LocalStore::open(&path, &key).unwrap();
        let mut b = LocalStore::open(&path, &key).unwrap();
        let v1 = value(4);
        put(&mut a, b"item", &v1);
        assert_eq!(get(&mut b, b"item").unwrap(), Some(v1.clone()));
        let generation = b.generation();

        // a rewrites chunk 2; b, which remembers v1, then changes only chunk 0.
        let mut v2 = v1.clone();
        v2[2 * CHUNK_BYTES] ^= 1;
        put(&mut a, b"item", &v2);
        let mut v3 = v1.clone();
        v3[0] ^= 1;
        put(&mut b, b"item", &v3);
        assert!(b.generation() > generation, "b noticed a's commit");
        assert_eq!(get(&mut a, b"item").unwrap(), Some(v3.clone()));
        assert_eq!(get(&mut b, b"item").unwrap(), Some(v3));
    }

    #[test]
    fn an_item_in_version_2_chunks_is_read_and_rewritten_in_small_ones() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let mut v: Vec<u8> = (0..3 * V2_CHUNK_BYTES + 5).map(|i| i as u8).collect();
        // Written as store schema version 2 did: a CHUNKED header and 4 KiB chunks.
        s.transaction(|tx| -> Result<(), StoreError> {
            let k = tx.cipher.hide_key(Namespace::Mls as u8, b"item");
            let mut hashes = Vec::new();
            for (i, chunk) in v.chunks(V2_CHUNK_BYTES).enumerate() {
                tx.put_chunk(&k, i, chunk)?;
                hashes.push(Sha256::digest(chunk).into());
            }
            let mut header = encode_header(v.len(), &hashes);
            header[0] = CHUNKED;
            tx.put_hidden(Namespace::Mls, &k, &header)
        })
        .unwrap();
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v.clone()));
        v[7] ^= 1;
        put(&mut s, b"item", &v);
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v.clone()));
        let chunk_rows = rows(&s).keys().filter(|(ns, _)| *ns == 6).count();
        assert_eq!(chunk_rows, v.len().div_ceil(CHUNK_BYTES));
        // And only where it changed from then on.
        v[7] ^= 1;
        let before = rows(&s);
        put(&mut s, b"item", &v);
        assert_eq!(changed(&before, &rows(&s)), (2, 0));
    }

    #[test]
    fn chunks_are_bound_to_their_item_position_and_version() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let mut v = value(3);
        put(&mut s, b"item", &v);
        let old = rows(&s);
        v[CHUNK_BYTES] ^= 1;
        put(&mut s, b"item", &v);
        let new = rows(&s);
        let chunk_rows: Vec<_> = new.keys().filter(|(ns, _)| *ns == 6).cloned().collect();
        assert_eq!(chunk_rows.len(), 4);
        let set = |s: &LocalStore, k: &(u8, Vec<u8>), v: &[u8]| {
            s.raw()
                .execute(
                    "UPDATE kv SET v = ?1 WHERE ns = ?2 AND k = ?3",
                    rusqlite::params![v, k.0, k.1],
                )
                .unwrap();
        };
        // An older version of the chunk that changed.
        let stale = chunk_rows
            .iter()
            .find(|k| old.get(*k) != new.get(*k))
            .unwrap();
        set(&s, stale, &old[stale]);
        assert!(
            matches!(get(&mut s, b"item"), Err(StoreError::Corrupt(_))),
            "an old chunk was accepted"
        );
        set(&s, stale, &new[stale]);
        assert_eq!(get(&mut s, b"item").unwrap(), Some(v.clone()));
        // Two chunks swapped.
        let (a, b) = (&chunk_rows[0], &chunk_rows[1]);
        set(&s, a, &new[b]);
        set(&s, b, &new[a]);
        assert!(matches!(get(&mut s, b"item"), Err(StoreError::Corrupt(_))));
    }
}
