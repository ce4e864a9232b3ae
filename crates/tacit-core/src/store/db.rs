//! The SQLite file, its schema, and transactions.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cipher::Cipher;
use super::mls_storage::{MlsStorage, TxProvider};
use super::{StoreError, StoreKey};

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = 1;
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
    /// Messages waiting for the server.
    Outbox = 4,
    /// OpenMLS state.
    Mls = 5,
}

/// An open local store.
pub struct LocalStore {
    conn: Connection,
    cipher: Cipher,
}

/// A transaction on the store: every read and write of one client operation.
pub struct StoreTx<'a> {
    conn: &'a Connection,
    cipher: &'a Cipher,
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
        let mut store = LocalStore {
            conn,
            cipher: Cipher::new(key)?,
        };
        store.check_key()?;
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let result = f(&StoreTx {
            conn: &tx,
            cipher: &self.cipher,
        });
        match result {
            Ok(v) => {
                tx.commit().map_err(StoreError::from)?;
                Ok(v)
            }
            Err(e) => {
                tx.rollback().map_err(StoreError::from)?;
                Err(e)
            }
        }
    }

    /// Runs `f` in a transaction that is always rolled back: nothing it does is kept.
    pub fn dry_run<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&StoreTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let result = f(&StoreTx {
            conn: &tx,
            cipher: &self.cipher,
        });
        tx.rollback().map_err(StoreError::from)?;
        result
    }
}

impl<'a> StoreTx<'a> {
    /// The value stored under `key` in `ns`, if any.
    pub fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        let sealed: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT v FROM kv WHERE ns = ?1 AND k = ?2")?
            .query_row(params![ns as u8, k], |r| r.get(0))
            .optional()?;
        sealed.map(|s| self.cipher.open(&k, &s)).transpose()
    }

    /// Stores `value` under `key` in `ns`, replacing any previous value.
    pub fn put(&self, ns: Namespace, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
        let sealed = self.cipher.seal(&k, value)?;
        self.conn
            .prepare_cached("INSERT INTO kv (ns, k, v) VALUES (?1, ?2, ?3) ON CONFLICT (ns, k) DO UPDATE SET v = excluded.v")?
            .execute(params![ns as u8, k, sealed])?;
        Ok(())
    }

    /// Deletes `key` from `ns` (no error if absent).
    pub fn delete(&self, ns: Namespace, key: &[u8]) -> Result<(), StoreError> {
        let k = self.cipher.hide_key(ns as u8, key);
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

    /// Appends to an ordered log; returns the entry's id.
    pub fn log_append(&self, list: &[u8], value: &[u8]) -> Result<i64, StoreError> {
        let l = self.cipher.hide_key(0, list);
        let id: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM log")?
            .query_row([], |r| r.get(0))?;
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
