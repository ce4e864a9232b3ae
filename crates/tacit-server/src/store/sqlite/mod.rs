//! The SQLite backend: one file, WAL mode, `synchronous=FULL` so that an acknowledged message
//! survives a power cut.
//!
//! Writes go through one thread that owns the write connection and commits them in groups (see
//! `writer.rs`): each operation is all-or-nothing (a savepoint), operations are applied one after
//! another (so read-then-write sequences — claims, epoch compare-and-set, sequence numbers —
//! cannot interleave), and each is answered only after its group's COMMIT, one fsync for many
//! operations. Messages and acknowledgments can also be submitted without blocking
//! ([`PipelinedWrites`]): they take their place in the writer's queue at once and are answered
//! after their group's COMMIT, so a connection pipelines them in order. Reads use separate connections (WAL readers do not wait for the writer), each a
//! read transaction, one consistent snapshot.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::*;

mod operations;
mod schema;
mod writer;

pub(crate) use schema::MIGRATIONS;
use writer::{Isolation, Writer};

/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;
/// How long a connection waits for a lock held by another (checkpoints, other processes).
const BUSY_TIMEOUT_SECS: u64 = 10;

/// The SQLite store.
pub struct SqliteStore {
    /// `None` once closed.
    writer: RwLock<Option<Writer>>,
    /// For a database file; an in-memory database is read through the writer.
    readers: Option<Readers>,
}

/// Read-only connections to the database file, opened on demand and kept while idle.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

fn lock_err() -> StoreError {
    StoreError::Db("database lock poisoned".into())
}

impl SqliteStore {
    /// Opens (creating if needed) `DIR/tacit-server.db`, applies migrations and refuses a schema
    /// newer than this build knows.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, true)
    }

    /// Like [`SqliteStore::open`], but without waiting for the disk (`synchronous=OFF`) when
    /// `durable` is false: **for benchmarks only**, to show what durability costs — an
    /// acknowledged message can be lost if the machine loses power.
    pub fn open_with(dir: &Path, durable: bool) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("tacit-server.db");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Savepoint journals in memory: on disk (past 64 KiB) every page an operation touched
        // was also written to a temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.busy_timeout(std::time::Duration::from_secs(BUSY_TIMEOUT_SECS))?;
        migrate(&conn)?;
        Ok(SqliteStore {
            writer: RwLock::new(Some(Writer::start(conn)?)),
            readers: Some(Readers {
                path,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// An in-memory store (for tests): same schema, nothing on disk.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&conn)?;
        Ok(SqliteStore {
            writer: RwLock::new(Some(Writer::start(conn)?)),
            readers: None,
        })
    }

    /// A write: runs on the writer thread in the next group and returns once that group is
    /// committed.
    fn tx<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let guard = self.writer.read().map_err(|_| lock_err())?;
        guard.as_ref().ok_or(StoreError::Closed)?.write(f)
    }

    /// A pipelined write: queued on the writer thread now, without blocking (see
    /// [`Writer::submit`]); resolves once its group is committed.
    fn submit<T: Send + 'static, U: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        isolation: Isolation,
        then: impl FnOnce(T) -> U + Send + 'static,
    ) -> Submitted<U> {
        match self.writer.read() {
            Ok(guard) => match guard.as_ref() {
                Some(w) => w.submit(f, isolation, then),
                None => Submitted::refused(StoreError::Closed),
            },
            Err(_) => Submitted::refused(lock_err()),
        }
    }

    /// A read: one read transaction on a reader connection (one consistent snapshot).
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(readers) = &self.readers else {
            return self.tx(f);
        };
        // Closed stores refuse reads too.
        if self.writer.read().map_err(|_| lock_err())?.is_none() {
            return Err(StoreError::Closed);
        }
        let idle = readers.idle.lock().map_err(|_| lock_err())?.pop();
        let mut conn = match idle {
            Some(c) => c,
            None => open_reader(&readers.path)?,
        };
        let out = {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let out = f(&tx)?;
            tx.commit()?;
            out
        };
        if let Ok(mut idle) = readers.idle.lock() {
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
        Ok(out)
    }

    /// Finishes queued writes, closes the readers, checkpoints and closes. Idempotent.
    fn shut_down(&self) -> Result<(), StoreError> {
        let writer = self.writer.write().map_err(|_| lock_err())?.take();
        if let Some(readers) = &self.readers {
            if let Ok(mut idle) = readers.idle.lock() {
                idle.clear();
            }
        }
        match writer {
            Some(w) => w.close(),
            None => Ok(()),
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(BUSY_TIMEOUT_SECS))?;
    Ok(conn)
}

/// Applies the missing migrations, each in one transaction with its version bump.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for m in crate::store::migrate::pending(version, MIGRATIONS)? {
        tracing::info!(
            version = m.version,
            step = m.name,
            "migrating the SQLite schema"
        );
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = {}; COMMIT;",
            m.sql, m.version
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_database_newer_than_this_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        SqliteStore::open(dir.path()).unwrap().close().unwrap();
        let conn = Connection::open(dir.path().join("tacit-server.db")).unwrap();
        let newest = MIGRATIONS.len() as i64;
        conn.pragma_update(None, "user_version", newest + 1)
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    /// How many rows `table` holds.
    fn rows(s: &SqliteStore, table: &'static str) -> i64 {
        s.tx(move |c| {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            Ok(c.query_row(&sql, [], |r| r.get(0))?)
        })
        .unwrap()
    }

    /// A version-3 file (queue rows pointing at payload rows) with messages waiting: 1:1 ones
    /// (one reference each) and a group one (two references).
    fn version_3_file_with_a_backlog(path: &Path) {
        let conn = Connection::open(path).unwrap();
        for m in &MIGRATIONS[..3] {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO users VALUES ('alice', x'01', 0), ('bob', x'02', 0), ('carol', x'03', 0);
             INSERT INTO devices (id, handle, device_id, device_key, certificate, next_seq, queue_len, created_ms)
                 VALUES (1, 'alice', 1, x'11', x'c1', 1, 0, 0), (2, 'bob', 2, x'22', x'c2', 3, 2, 0),
                        (3, 'carol', 3, x'33', x'c3', 2, 1, 0);
             INSERT INTO groups VALUES (x'67', 0, 0);
             INSERT INTO group_members VALUES (x'67', 1), (x'67', 2), (x'67', 3);
             INSERT INTO payloads (id, kind, group_id, sender_handle, sender_device, payload, enqueued_ms, expires_ms, refs)
                 VALUES (10, 1, x'67', 'alice', 1, x'aa', 5, 9000000000000, 1),
                        (11, 1, x'67', 'alice', 1, x'bb', 6, 9000000000000, 2);
             INSERT INTO queue (device, seq, payload, expires_ms)
                 VALUES (2, 1, 10, 9000000000000), (2, 2, 11, 9000000000000), (3, 1, 11, 9000000000000);",
        )
        .unwrap();
    }

    #[test]
    fn a_version_3_backlog_is_delivered_and_released_after_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tacit-server.db");
        version_3_file_with_a_backlog(&path);
        let s = SqliteStore::open(dir.path()).unwrap();
        let bob = s.fetch(2, 0, 10).unwrap();
        let got: Vec<_> = bob
            .iter()
            .map(|q| (q.seq, q.payload.clone(), q.enqueued_ms))
            .collect();
        assert_eq!(got, [(1, vec![0xaa], 5), (2, vec![0xbb], 6)]);
        assert_eq!(bob[0].sender_handle, "alice");
        // New messages go on from the stored sequence numbers, inline for one recipient.
        let alice = s.device("alice", 1).unwrap().unwrap();
        let sent = s.send_message(b"g", &alice, b"new", 10, 60_000).unwrap();
        assert_eq!(sent, [2, 3]);
        assert_eq!(
            rows(&s, "payloads"),
            3,
            "a message to two devices is stored once"
        );
        s.ack(2, 2).unwrap();
        assert_eq!(
            rows(&s, "payloads"),
            2,
            "payload 10 went with bob's last reference; 11 is carol's"
        );
        s.ack(3, 1).unwrap();
        assert_eq!(
            rows(&s, "payloads"),
            1,
            "only the new shared message is left"
        );
        assert_eq!(s.fetch(2, 0, 10).unwrap().len(), 1);
        assert_eq!(s.fetch(3, 0, 10).unwrap()[0].payload, b"new");
        let version: i64 = s
            .tx(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_message_to_one_device_is_kept_in_its_queue_row() {
        let s = SqliteStore::open_in_memory().unwrap();
        let a = s
            .create_account("alice", &[1; 32], 1, &[1; 32], b"c")
            .unwrap();
        let b = s
            .create_account("bob", &[2; 32], 2, &[2; 32], b"c")
            .unwrap();
        s.create_group(b"g", a.key).unwrap();
        s.tx(move |c| {
            c.execute("INSERT INTO group_members VALUES (x'67', ?1)", [b.key])?;
            Ok(())
        })
        .unwrap();
        s.send_message(b"g", &a, b"hi", 10, 60_000).unwrap();
        assert_eq!((rows(&s, "payloads"), rows(&s, "queue")), (0, 1));
        assert_eq!(s.fetch(b.key, 0, 10).unwrap()[0].payload, b"hi");
        s.ack(b.key, 1).unwrap();
        assert_eq!((rows(&s, "payloads"), rows(&s, "queue")), (0, 0));
    }

    #[test]
    fn the_file_is_in_wal_mode_with_full_sync_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let (mode, sync) = s
            .tx(|conn| {
                let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
                Ok((mode, sync))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "FULL");
        s.create_account("bob", &[1; 32], 7, &[2; 32], b"cert")
            .unwrap();
        s.close().unwrap();
        assert!(matches!(s.device("bob", 7), Err(StoreError::Closed)));
        let s = SqliteStore::open(dir.path()).unwrap();
        assert!(s.device("bob", 7).unwrap().is_some());
    }

    #[test]
    fn concurrent_writes_share_commits_and_each_is_answered_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..32u8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let handle = format!("user{i}");
                    let d = s
                        .create_account(&handle, &[i; 32], 1, &[i; 32], b"c")
                        .unwrap();
                    // Answered means committed: a fresh connection sees it.
                    let conn = Connection::open(s.readers.as_ref().unwrap().path.clone()).unwrap();
                    let seen: i64 = conn
                        .query_row("SELECT COUNT(*) FROM devices WHERE id = ?1", [d.key], |r| {
                            r.get(0)
                        })
                        .unwrap();
                    assert_eq!(seen, 1);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        s.close().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        for i in 0..32 {
            assert!(s.user(&format!("user{i}")).unwrap().is_some());
        }
    }
}
