//! The SQLite file, its schema, and transactions.

use std::cell::{Cell, RefCell};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use super::cipher::Cipher;
use super::hot::Counters;
use super::items::{ChunkMemory, Touched};
use super::mls_storage::{MlsStorage, TxProvider};
use super::ring::RingMemory;
use super::{StoreError, StoreKey};

/// The newest schema version this build knows. 1: every value JSON. 2: OpenMLS values in a
/// compact binary encoding, large ones split into chunks ([`Namespace::Chunk`]); values written
/// by version 1 are still read. 3: the log clustered by list (one page touched per append, where
/// the version-1 table also wrote an index entry and its AUTOINCREMENT counter), rings of
/// digests in buckets ([`Namespace::Ring`]), outbox items in postcard; version-2 rings and
/// outbox items are still read. 4: the rows every message rewrites in small tables of their own
/// (see [`super::hot`]): the outbox and the device's counters in `outbox`, seen-markers in
/// `seen`; markers of older versions are still looked up in `kv`.
const SCHEMA_VERSION: i64 = 4;
/// Meta key of the flag a store migrated from schema 3 or older carries: seen-markers may also
/// be rows of `kv`.
const LEGACY_MARKERS: &[u8] = b"seen-markers-in-kv";
/// A known value sealed at creation; opening it proves the key is right.
const KEY_CHECK: &[u8] = b"tacit local store key check v1";

/// What a stored key belongs to. Only this small tag is stored in the clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Namespace {
    /// The store's own bookkeeping and the account.
    Meta = 1,
    /// Pinned identity keys.
    Contact = 2,
    /// Conversations.
    Conversation = 3,
    /// Messages waiting for the server, as store schema 3 and older kept them (now the
    /// `outbox` table: see [`StoreTx::outbox_put`]); read only to move them.
    Outbox = 4,
    /// OpenMLS state.
    Mls = 5,
    /// Chunks of large values (see [`StoreTx::put_item`]).
    Chunk = 6,
    /// Buckets of rings of digests (see [`StoreTx::ring_push`]).
    Ring = 7,
}

/// An open local store.
pub struct LocalStore {
    conn: Connection,
    cipher: Cipher,
    /// SQLite's `data_version` at the end of the last transaction: it changes when another
    /// connection (another process on the same profile) commits.
    data_version: i64,
    /// Bumped each time a transaction finds that another connection changed the file, so that
    /// whatever is kept in memory about the store is dropped.
    generation: u64,
    /// The chunks of large values as last written or read (see [`StoreTx::put_item`]).
    memory: ChunkMemory,
    /// The rings of digests as last written or read (see [`StoreTx::ring_push`]).
    rings: RingMemory,
    /// Whether seen-markers written before schema 4 may be in `kv`.
    legacy_markers: bool,
}

/// A transaction on the store: every read and write of one client operation.
pub struct StoreTx<'a> {
    pub(super) conn: &'a Connection,
    pub(super) cipher: &'a Cipher,
    /// Items whose remembered chunks this transaction took out of the store's memory; they go
    /// back only if it commits.
    pub(super) touched: RefCell<Touched>,
    /// The store's memory of chunks, lent to this transaction.
    pub(super) memory: RefCell<ChunkMemory>,
    /// The store's memory of rings, lent to this transaction.
    pub(super) rings: RefCell<RingMemory>,
    /// Whether seen-markers written before schema 4 may be in `kv`.
    pub(super) legacy_markers: bool,
    /// The device's counters as this transaction last read or wrote them.
    pub(super) counters: Cell<Option<Counters>>,
    generation: u64,
}

impl LocalStore {
    /// Opens (or creates) the store at `path`. Refuses a wrong key ([`StoreError::WrongKey`]) and
    /// a schema newer than this build knows.
    pub fn open(path: &Path, key: &StoreKey) -> Result<LocalStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::init(conn, key)
    }

    /// An in-memory store (tests, tools).
    pub fn open_in_memory(key: &StoreKey) -> Result<LocalStore, StoreError> {
        Self::init(Connection::open_in_memory()?, key)
    }

    fn init(conn: Connection, key: &StoreKey) -> Result<LocalStore, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS kv (ns INTEGER NOT NULL, k BLOB NOT NULL, v BLOB NOT NULL, PRIMARY KEY (ns, k)) WITHOUT ROWID;
                 CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY AUTOINCREMENT, list BLOB NOT NULL, v BLOB NOT NULL);
                 CREATE INDEX IF NOT EXISTS log_by_list ON log (list, id);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        if version < 2 {
            // No table changes: chunks are rows of `kv` in their own namespace, and version-1
            // values stay readable. The bump makes older builds refuse the file instead of
            // misreading values in the new encoding.
            conn.execute_batch("BEGIN; PRAGMA user_version = 2; COMMIT;")?;
        }
        if version < 3 {
            // The log becomes a table clustered by (list, id): an entry's row sits next to the
            // list's previous entries, so an append touches one page. Ids stay as they were (a
            // value is sealed to its list and id); new ones count per list.
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE log_v3 (list BLOB NOT NULL, id INTEGER NOT NULL, v BLOB NOT NULL, PRIMARY KEY (list, id)) WITHOUT ROWID;
                 INSERT INTO log_v3 (list, id, v) SELECT list, id, v FROM log;
                 DROP TABLE log;
                 ALTER TABLE log_v3 RENAME TO log;
                 PRAGMA user_version = 3;
                 COMMIT;",
            )?;
        }
        let mut store = LocalStore {
            conn,
            cipher: Cipher::new(key)?,
            data_version: 0,
            generation: 0,
            memory: ChunkMemory::default(),
            rings: RingMemory::default(),
            legacy_markers: false,
        };
        store.check_key()?;
        if version < 4 {
            // After the key check, so that a wrong key changes nothing. A store that existed
            // before keeps its seen-markers in `kv`: the flag says to look there too.
            store.transaction(|tx| -> Result<(), StoreError> {
                tx.conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, v BLOB NOT NULL);
                     CREATE TABLE IF NOT EXISTS seen (k BLOB PRIMARY KEY) WITHOUT ROWID;
                     PRAGMA user_version = 4;",
                )?;
                if version >= 1 {
                    tx.put(Namespace::Meta, LEGACY_MARKERS, &[1])?;
                }
                Ok(())
            })?;
        }
        store.legacy_markers = store
            .transaction(|tx| tx.get(Namespace::Meta, LEGACY_MARKERS))?
            .is_some();
        Ok(store)
    }

    fn check_key(&mut self) -> Result<(), StoreError> {
        let check = self.transaction(|tx| tx.get(Namespace::Meta, b"key-check"));
        match check {
            Ok(Some(v)) if v == KEY_CHECK => Ok(()),
            Ok(Some(_)) | Err(StoreError::Corrupt(_)) => Err(StoreError::WrongKey),
            Ok(None) => {
                // A new store, unless it already has rows sealed under another key.
                let rows: i64 = self
                    .conn
                    .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))?;
                if rows > 0 {
                    return Err(StoreError::WrongKey);
                }
                self.transaction(|tx| tx.put(Namespace::Meta, b"key-check", KEY_CHECK))
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: committed if it returns Ok, rolled back
    /// (nothing kept) if it returns Err.
    pub fn transaction<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&StoreTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(f, true)
    }

    /// Runs `f` in a transaction that is always rolled back: nothing it does is kept.
    pub fn dry_run<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&StoreTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(f, false)
    }

    /// The SQLite connection, for tests that inspect or tamper with the file's rows.
    #[cfg(test)]
    pub(super) fn raw(&self) -> &Connection {
        &self.conn
    }

    /// A number that changes whenever another connection is found to have changed the file
    /// since this one last looked (checked at the start of every transaction): whatever the
    /// caller keeps in memory about the store's contents must be dropped when it changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn run<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&StoreTx<'_>) -> Result<T, E>,
        keep: bool,
    ) -> Result<T, E> {
        let LocalStore {
            conn,
            cipher,
            data_version,
            generation,
            memory,
            rings,
            legacy_markers,
        } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        // The write lock is held from here on: nobody else can change the file until we finish.
        let version: i64 = tx
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(StoreError::from)?;
        if version != *data_version {
            *data_version = version;
            *generation += 1;
            memory.clear();
            rings.clear();
        }
        // The memory is lent to the transaction (and lost if it panics: nothing stale is kept).
        let store_tx = StoreTx {
            conn: &tx,
            cipher,
            touched: RefCell::new(Touched::default()),
            memory: RefCell::new(std::mem::take(memory)),
            rings: RefCell::new(std::mem::take(rings)),
            legacy_markers: *legacy_markers,
            counters: Cell::new(None),
            generation: *generation,
        };
        let result = f(&store_tx);
        let StoreTx {
            touched,
            memory: lent,
            rings: lent_rings,
            ..
        } = store_tx;
        let mut lent = lent.into_inner();
        let mut lent_rings = lent_rings.into_inner();
        if keep && result.is_ok() {
            // On a failed commit the lent memories are dropped (the `?`): nothing stale is kept.
            tx.commit().map_err(StoreError::from)?;
            // Only what was committed is remembered; the items a rolled-back transaction
            // touched are forgotten, and the next write of each rewrites it whole.
            lent.absorb(touched.into_inner());
            lent_rings.finish(true);
        } else {
            tx.rollback().map_err(StoreError::from)?;
            lent_rings.finish(false);
        }
        *memory = lent;
        *rings = lent_rings;
        result
    }
}

impl<'a> StoreTx<'a> {
    /// The store's [`LocalStore::generation`] as this transaction found it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The value stored under `key` in `ns`, if any.
    pub fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        self.get_sealed(ns, &k)?
            .map(|s| self.cipher.open(&k, &s))
            .transpose()
    }

    /// Stores `value` under `key` in `ns`, replacing any previous value.
    pub fn put(&self, ns: Namespace, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        self.put_hidden(ns, &k, value)
    }

    /// Deletes `key` from `ns` (no error if absent).
    pub fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        self.delete_hidden(ns, &k)
    }

    /// The opened value of the row with hidden key `k`.
    pub(super) fn get_hidden(
        &self,
        ns: Namespace,
        k: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        self.get_sealed(ns, k)?
            .map(|s| self.cipher.open(k, &s).map(Zeroizing::new))
            .transpose()
    }

    /// Seals `value` to the row with hidden key `k` and stores it there.
    pub(super) fn put_hidden(
        &self,
        ns: Namespace,
        k: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = self.cipher.seal(k, value)?;
        self.put_sealed(ns, k, &sealed)
    }

    /// The sealed value of the row with hidden key `k`.
    pub(super) fn get_sealed(
        &self,
        ns: Namespace,
        k: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT v FROM kv WHERE ns = ?1 AND k = ?2")?
            .query_row(params![ns as u8, k], |r| r.get(0))
            .optional()?)
    }

    /// Stores an already sealed value in the row with hidden key `k`.
    pub(super) fn put_sealed(
        &self,
        ns: Namespace,
        k: &[u8],
        sealed: &[u8],
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO kv (ns, k, v) VALUES (?1, ?2, ?3) ON CONFLICT (ns, k) DO UPDATE SET v = excluded.v")?
            .execute(params![ns as u8, k, sealed])?;
        Ok(())
    }

    /// Deletes the row with hidden key `k` (no error if absent).
    pub(super) fn delete_hidden(&self, ns: Namespace, k: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM kv WHERE ns = ?1 AND k = ?2")?
            .execute(params![ns as u8, k])?;
        Ok(())
    }

    /// Every value in `ns` (in no particular order).
    pub fn values(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT k, v FROM kv WHERE ns = ?1")?;
        let rows = stmt.query_map(params![ns as u8], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (k, v) = row?;
            out.push(self.cipher.open(&k, &v)?);
        }
        Ok(out)
    }

    /// A JSON value.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        ns: Namespace,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.get(ns, key)?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Serialization(e.to_string()))
            })
            .transpose()
    }

    /// Stores a JSON value.
    pub fn put_json<T: Serialize + ?Sized>(
        &self,
        ns: Namespace,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec(value).map_err(|e| StoreError::Serialization(e.to_string()))?,
        );
        self.put(ns, key, &bytes)
    }

    /// Appends to an ordered log; returns the entry's id (greater than every id in the list).
    pub fn log_append(&self, list: &[u8], value: &[u8]) -> Result<i64, StoreError> {
        let l = self.cipher.hide_key(0, list);
        let id: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM log WHERE list = ?1")?
            .query_row(params![l], |r| r.get(0))?;
        let mut aad = l.clone();
        aad.extend_from_slice(&id.to_be_bytes());
        let sealed = self.cipher.seal(&aad, value)?;
        self.conn
            .prepare_cached("INSERT INTO log (id, list, v) VALUES (?1, ?2, ?3)")?
            .execute(params![id, l, sealed])?;
        Ok(id)
    }

    /// Up to `limit` entries of a log with id > `after_id`, oldest first.
    pub fn log_read(
        &self,
        list: &[u8],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let l = self.cipher.hide_key(0, list);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, v FROM log WHERE list = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![l, after_id, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, v) = row?;
            let mut aad = l.clone();
            aad.extend_from_slice(&id.to_be_bytes());
            out.push((id, self.cipher.open(&aad, &v)?));
        }
        Ok(out)
    }

    /// Deletes one log entry.
    pub fn log_delete(&self, list: &[u8], id: i64) -> Result<(), StoreError> {
        let l = self.cipher.hide_key(0, list);
        self.conn
            .prepare_cached("DELETE FROM log WHERE list = ?1 AND id = ?2")?
            .execute(params![l, id])?;
        Ok(())
    }

    /// The OpenMLS storage provider bound to this transaction.
    pub fn mls(&self) -> MlsStorage<'_> {
        MlsStorage::new(self)
    }

    /// An OpenMLS provider (storage bound to this transaction, RustCrypto for the rest).
    pub fn provider<'b>(&'b self, crypto: &'b openmls_rust_crypto::RustCrypto) -> TxProvider<'b> {
        TxProvider::new(self.mls(), crypto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_store(dir: &Path, key: &StoreKey) -> LocalStore {
        LocalStore::open(&dir.join("store.db"), key).unwrap()
    }

    #[test]
    fn values_and_logs_round_trip() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        s.transaction(|tx| -> Result<(), StoreError> {
            tx.put(Namespace::Contact, b"bob", b"key-of-bob")?;
            tx.put(Namespace::Contact, b"carol", b"key-of-carol")?;
            tx.put_json(Namespace::Meta, b"n", &42u64)?;
            tx.log_append(b"history:g", b"first")?;
            tx.log_append(b"history:h", b"other list")?;
            tx.log_append(b"history:g", b"second")?;
            Ok(())
        })
        .unwrap();
        s.transaction(|tx| -> Result<(), StoreError> {
            assert_eq!(
                tx.get(Namespace::Contact, b"bob")?.as_deref(),
                Some(&b"key-of-bob"[..])
            );
            assert_eq!(
                tx.get(Namespace::Conversation, b"bob")?,
                None,
                "namespaces are separate"
            );
            assert_eq!(tx.get_json::<u64>(Namespace::Meta, b"n")?, Some(42));
            let mut all = tx.values(Namespace::Contact)?;
            all.sort();
            assert_eq!(all, vec![b"key-of-bob".to_vec(), b"key-of-carol".to_vec()]);
            let log: Vec<Vec<u8>> = tx
                .log_read(b"history:g", 0, 10)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            assert_eq!(log, vec![b"first".to_vec(), b"second".to_vec()]);
            tx.delete(Namespace::Contact, b"bob")?;
            assert_eq!(tx.get(Namespace::Contact, b"bob")?, None);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_failed_operation_leaves_nothing_behind() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let r: Result<(), StoreError> = s.transaction(|tx| {
            tx.put(Namespace::Meta, b"half", b"done")?;
            tx.log_append(b"l", b"entry")?;
            Err(StoreError::Corrupt("simulated failure".into()))
        });
        assert!(r.is_err());
        s.transaction(|tx| -> Result<(), StoreError> {
            assert_eq!(tx.get(Namespace::Meta, b"half")?, None);
            assert!(tx.log_read(b"l", 0, 10)?.is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn the_wrong_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(file_store(dir.path(), &StoreKey::generate()));
        match LocalStore::open(&dir.path().join("store.db"), &StoreKey::generate()) {
            Err(StoreError::WrongKey) => {}
            Err(e) => panic!("expected WrongKey, got {e}"),
            Ok(_) => panic!("expected WrongKey, got a store"),
        }
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let a = StoreKey::derive_from_passphrase(b"pass phrase", &[1; 16]).unwrap();
        let b = StoreKey::derive_from_passphrase(b"pass phrase", &[1; 16]).unwrap();
        let c = StoreKey::derive_from_passphrase(b"pass phrase", &[2; 16]).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), c.as_bytes());
        assert_eq!(format!("{a:?}"), "StoreKey([redacted])");
    }

    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let key = StoreKey::generate();
        key.write_key_file(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            StoreKey::read_key_file(&path).unwrap().as_bytes(),
            key.as_bytes()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = StoreKey::read_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn nothing_readable_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let mut s = file_store(dir.path(), &key);
        s.transaction(|tx| -> Result<(), StoreError> {
            tx.put(Namespace::Contact, b"MARKER-KEY-4242", b"MARKER-VALUE-4242")?;
            tx.log_append(b"MARKER-LIST-4242", b"MARKER-LOG-4242")?;
            Ok(())
        })
        .unwrap();
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        drop(s);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(!bytes.is_empty());
        for marker in ["MARKER-KEY", "MARKER-VALUE", "MARKER-LIST", "MARKER-LOG"] {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{marker} is readable on disk"
            );
        }
        // And it reopens with the right key.
        let mut s = file_store(dir.path(), &key);
        let v = s
            .transaction(|tx| tx.get(Namespace::Contact, b"MARKER-KEY-4242"))
            .unwrap();
        assert_eq!(v.as_deref(), Some(&b"MARKER-VALUE-4242"[..]));
    }

    #[test]
    fn a_version_2_log_is_migrated_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let s = file_store(dir.path(), &key);
        // The version-2 table (ids global, AUTOINCREMENT, an index by list) with three entries
        // sealed as version 2 sealed them (to the hidden list and the id).
        let conn = Connection::open(dir.path().join("store.db")).unwrap();
        conn.execute_batch(
            "BEGIN;
             DROP TABLE log;
             CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, list BLOB NOT NULL, v BLOB NOT NULL);
             CREATE INDEX log_by_list ON log (list, id);
             PRAGMA user_version = 2;
             COMMIT;",
        )
        .unwrap();
        for (id, list, value) in [(1i64, b"a", b"a1"), (2, b"b", b"b1"), (3, b"a", b"a2")] {
            let l = s.cipher.hide_key(0, list);
            let mut aad = l.clone();
            aad.extend_from_slice(&id.to_be_bytes());
            let sealed = s.cipher.seal(&aad, value).unwrap();
            conn.execute(
                "INSERT INTO log (id, list, v) VALUES (?1, ?2, ?3)",
                params![id, l, sealed],
            )
            .unwrap();
        }
        drop((conn, s));
        let mut s = file_store(dir.path(), &key);
        let version: i64 = s
            .raw()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        s.transaction(|tx| -> Result<(), StoreError> {
            let a2 = tx.log_append(b"a", b"a3")?;
            let read = |list: &[u8]| -> Result<Vec<Vec<u8>>, StoreError> {
                Ok(tx
                    .log_read(list, 0, 10)?
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect())
            };
            assert_eq!(
                read(b"a")?,
                [b"a1".to_vec(), b"a2".to_vec(), b"a3".to_vec()]
            );
            assert_eq!(read(b"b")?, [b"b1".to_vec()]);
            assert_eq!(tx.log_read(b"a", a2 - 1, 10)?.len(), 1, "ids still grow");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn values_cannot_be_moved_between_rows() {
        let mut s = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        s.transaction(|tx| -> Result<(), StoreError> {
            tx.put(Namespace::Contact, b"a", b"value-a")?;
            tx.put(Namespace::Contact, b"b", b"value-b")?;
            Ok(())
        })
        .unwrap();
        // Someone with the file swaps the two sealed values.
        let rows: Vec<(Vec<u8>, Vec<u8>)> = s
            .conn
            .prepare("SELECT k, v FROM kv WHERE ns = 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        for (i, (k, _)) in rows.iter().enumerate() {
            let other = &rows[1 - i].1;
            s.conn
                .execute(
                    "UPDATE kv SET v = ?1 WHERE ns = 2 AND k = ?2",
                    rusqlite::params![other, k],
                )
                .unwrap();
        }
        let r = s.transaction(|tx| tx.get(Namespace::Contact, b"a"));
        assert!(
            matches!(r, Err(StoreError::Corrupt(_))),
            "swapped value accepted"
        );
    }
}
