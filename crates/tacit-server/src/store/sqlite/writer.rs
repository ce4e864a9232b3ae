//! Group commit: one thread owns SQLite's write connection and runs write operations in
//! batches, one transaction — and so one fsync — per batch.
//!
//! Each operation runs in a savepoint of its own inside the batch's transaction: an operation
//! that fails is rolled back alone and the others go on. (The hot pipelined operations, which
//! check everything they can be refused for before they write, skip the savepoint: see
//! [`Isolation`].) Nobody hears about the outcome of an
//! operation before the batch's COMMIT has returned, so "accepted" still means "on disk"
//! (`synchronous=FULL`). A batch is whatever is waiting when the previous one finished (up to
//! [`MAX_BATCH_OPS`]), so a lone operation is committed at once and a busy server commits many
//! operations per fsync.
//!
//! Callers either block until their operation's outcome ([`Writer::write`]) or submit it without
//! blocking and await the outcome later ([`Writer::submit`], the pipelined writes of a
//! connection); either way operations run in the order they entered the queue.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::{StoreError, Submitted};

/// Most operations committed together.
pub(super) const MAX_BATCH_OPS: usize = 512;
/// Operations waiting for the writer before callers block.
const QUEUE_OPS: usize = 4096;

/// How an operation's result reaches its caller once the batch's fate is known.
type Delivery = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// A savepoint that could not be undone: the whole batch must be rolled back.
struct Unsound;

/// One write operation.
trait Operation: Send {
    /// Runs inside the batch's transaction, in its own savepoint; `Err(Unsound)` when the
    /// operation failed and its savepoint could not be rolled back.
    fn run(self: Box<Self>, conn: &Connection) -> (Delivery, Result<(), Unsound>);
    /// The batch could not start: report `error` without running.
    fn fail(self: Box<Self>, error: StoreError);
}

/// Where an operation's result goes: a blocked caller thread, or an async task.
enum Reply<T> {
    Blocking(SyncSender<Result<T, StoreError>>),
    Async(oneshot::Sender<Result<T, StoreError>>),
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, StoreError>) {
        // A caller that went away no longer wants the answer; the write stands regardless.
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// How a failing operation is kept out of its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isolation {
    /// The operation runs in a savepoint of its own, rolled back if it fails.
    Savepoint,
    /// The operation only fails before its first write (it checks everything it can be refused
    /// for first), so it runs without the savepoint's cost: two statements, and a copy of every
    /// page it touches into the sub-journal. Should it fail after writing all the same (a
    /// database error, a panic), the whole batch is rolled back and every operation in it
    /// fails — nothing half-done is ever committed.
    FailsBeforeWriting,
}

/// An operation `f` whose committed result goes through `then` (on the writer's thread, right
/// after the COMMIT) to `reply`.
struct Op<F, G, U> {
    f: F,
    isolation: Isolation,
    then: G,
    reply: Reply<U>,
}

impl<F, G, T, U> Operation for Op<F, G, U>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    G: FnOnce(T) -> U + Send + 'static,
    T: Send + 'static,
    U: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Delivery, Result<(), Unsound>) {
        let Op {
            f,
            isolation,
            then,
            reply,
        } = *self;
        let ran = match isolation {
            Isolation::Savepoint => in_savepoint(conn, f),
            Isolation::FailsBeforeWriting => without_savepoint(conn, f),
        };
        let (outcome, sound) = match ran {
            Ok(outcome) => (outcome, Ok(())),
            Err(Unsound) => (
                Err(StoreError::Db("could not undo a failed operation".into())),
                Err(Unsound),
            ),
        };
        let deliver: Delivery = Box::new(move |committed| {
            let result = match (outcome, committed) {
                (Ok(value), Ok(())) => Ok(then(value)),
                (Ok(_), Err(e)) => Err(StoreError::Db(format!("commit failed: {e}"))),
                (Err(e), _) => Err(e),
            };
            reply.send(result);
        });
        (deliver, sound)
    }

    fn fail(self: Box<Self>, error: StoreError) {
        self.reply.send(Err(error));
    }
}

/// Runs `f` between `SAVEPOINT` and `RELEASE`, rolling back to the savepoint if it fails (or
/// panics), so that a failed operation leaves nothing in the batch. `Err(Unsound)` if that
/// rollback itself failed.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, Unsound> {
    // Cached statements: these run around every operation.
    let run = |sql: &str| -> Result<(), StoreError> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    if let Err(e) = run("SAVEPOINT op") {
        return Ok(Err(e));
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Db("a storage operation panicked".into())));
    let outcome = outcome.and_then(|v| run("RELEASE op").map(|()| v));
    if outcome.is_err() {
        // Undo the operation, whichever step failed, so nothing of it reaches the COMMIT.
        if run("ROLLBACK TO op")
            .and_then(|()| run("RELEASE op"))
            .is_err()
        {
            return Err(Unsound);
        }
    }
    Ok(outcome)
}

/// Runs `f` directly in the batch's transaction. `Err(Unsound)` if it failed (or panicked)
/// after changing rows, which only rolling back the whole batch can undo.
fn without_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, Unsound> {
    let before = conn.total_changes();
    let outcome = catch_unwind(AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Db("a storage operation panicked".into())));
    if outcome.is_err() && conn.total_changes() != before {
        return Err(Unsound);
    }
    Ok(outcome)
}

enum Message {
    Op(Box<dyn Operation>),
    /// Finish what is queued, fold the WAL into the database file, close, and report.
    Close(SyncSender<Result<(), StoreError>>),
}

/// The caller's side of the writer thread.
pub(super) struct Writer {
    queue: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread that owns `conn`.
    pub fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (queue, rx) = mpsc::sync_channel(QUEUE_OPS);
        let thread = std::thread::Builder::new()
            .name("tacit-sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Db(format!("cannot start the database writer: {e}")))?;
        Ok(Writer {
            queue,
            thread: Some(thread),
        })
    }

    /// Runs `f` in the next batch and returns its result once that batch is committed.
    pub fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, result) = mpsc::sync_channel(1);
        let reply = Reply::Blocking(reply);
        let then = |value| value;
        let isolation = Isolation::Savepoint;
        self.queue
            .send(Message::Op(Box::new(Op {
                f,
                isolation,
                then,
                reply,
            })))
            .map_err(|_| StoreError::Closed)?;
        result.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` behind every operation queued before, without blocking: the returned
    /// [`Submitted`] resolves once its batch is committed, with `f`'s result passed through
    /// `then` on the writer's thread right after the COMMIT (in commit order; `then` must not
    /// block). When the queue is full, the operation is handed back inside the [`Submitted`] to
    /// be queued off the async runtime.
    pub fn submit<T: Send + 'static, U: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        isolation: Isolation,
        then: impl FnOnce(T) -> U + Send + 'static,
    ) -> Submitted<U> {
        let (reply, outcome) = oneshot::channel();
        let op = Message::Op(Box::new(Op {
            f,
            isolation,
            then,
            reply: Reply::Async(reply),
        }));
        match self.queue.try_send(op) {
            Ok(()) => Submitted::queued_now(outcome),
            Err(TrySendError::Full(op)) => {
                let queue = self.queue.clone();
                Submitted::blocked(
                    Box::new(move || queue.send(op).map_err(|_| StoreError::Closed)),
                    outcome,
                )
            }
            Err(TrySendError::Disconnected(_)) => Submitted::refused(StoreError::Closed),
        }
    }

    /// Finishes the queued operations, checkpoints and closes the connection.
    pub fn close(mut self) -> Result<(), StoreError> {
        let (ack, done) = mpsc::sync_channel(1);
        let sent = self.queue.send(Message::Close(ack)).is_ok();
        let result = if sent {
            done.recv().unwrap_or(Err(StoreError::Closed))
        } else {
            Ok(())
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        result
    }
}

fn run(conn: Connection, queue: Receiver<Message>) {
    let mut close = None;
    while close.is_none() {
        let mut ops = Vec::new();
        match queue.recv() {
            Ok(Message::Op(op)) => ops.push(op),
            Ok(Message::Close(ack)) => close = Some(ack),
            Err(_) => return, // every caller is gone
        }
        while close.is_none() && ops.len() < MAX_BATCH_OPS {
            match queue.try_recv() {
                Ok(Message::Op(op)) => ops.push(op),
                Ok(Message::Close(ack)) => close = Some(ack),
                Err(_) => break,
            }
        }
        if !ops.is_empty() {
            commit_batch(&conn, ops);
        }
    }
    if let Some(ack) = close {
        // Fold the WAL back into the main file so that the data directory is one file.
        let _ = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
        let _ = ack.send(conn.close().map_err(|(_, e)| StoreError::from(e)));
    }
}

fn commit_batch(conn: &Connection, ops: Vec<Box<dyn Operation>>) {
    // Cached statements, like the savepoints: these run once per batch.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    if let Err(e) = run("BEGIN IMMEDIATE") {
        let text = e.to_string();
        for op in ops {
            op.fail(StoreError::Unavailable(format!(
                "cannot begin a transaction: {text}"
            )));
        }
        return;
    }
    let mut sound = true;
    let deliveries: Vec<Delivery> = ops
        .into_iter()
        .map(|op| {
            let (deliver, ok) = op.run(conn);
            sound &= ok.is_ok();
            deliver
        })
        .collect();
    let committed = if sound {
        run("COMMIT").map(|_| ()).map_err(StoreError::from)
    } else {
        Err(StoreError::Db(
            "a failed operation could not be undone; the batch was rolled back".into(),
        ))
    };
    if committed.is_err() {
        let _ = run("ROLLBACK");
    }
    tracing::trace!(operations = deliveries.len(), "committed a batch");
    for deliver in deliveries {
        deliver(committed.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
            .unwrap();
        Writer::start(conn).unwrap()
    }

    fn count(w: &Writer) -> i64 {
        w.write(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .unwrap()
    }

    #[test]
    fn a_failed_operation_is_rolled_back_alone() {
        let w = std::sync::Arc::new(writer());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let w = w.clone();
                std::thread::spawn(move || {
                    w.write(move |c| {
                        c.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
                        if i % 2 == 1 {
                            // Half of them write, then fail: their row must not stay.
                            return Err(StoreError::Limit("odd".into()));
                        }
                        Ok(i)
                    })
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 8);
        assert_eq!(count(&w), 8);
    }

    #[test]
    fn a_panicking_operation_fails_alone_and_the_writer_goes_on() {
        let w = writer();
        let r: Result<(), _> = w.write(|c| {
            c.execute("INSERT INTO t (v) VALUES (1)", [])?;
            panic!("boom")
        });
        assert!(r.is_err());
        w.write(|c| Ok(c.execute("INSERT INTO t (v) VALUES (2)", [])?))
            .unwrap();
        assert_eq!(count(&w), 1);
    }

    #[test]
    fn submitted_operations_commit_in_submission_order_even_past_a_full_queue() {
        let w = writer();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // More than the queue holds, submitted without waiting for outcomes: some find the queue
        // full and wait for room, and still keep their place. Every tenth fails and is rolled
        // back alone.
        let n = (QUEUE_OPS * 2) as i64;
        // The after-commit step of each committed operation, in the order it ran.
        let after_commit = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let results = rt.block_on(async {
            let mut outcomes = Vec::new();
            for i in 0..n {
                let seen = after_commit.clone();
                let queued = w
                    .submit(
                        move |c| {
                            c.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
                            if i % 10 == 9 {
                                return Err(StoreError::Limit("tenth".into()));
                            }
                            Ok(i)
                        },
                        Isolation::Savepoint,
                        move |v| {
                            seen.lock().unwrap().push(v);
                            v
                        },
                    )
                    .queued()
                    .await;
                outcomes.push(queued);
            }
            let mut results = Vec::new();
            for o in outcomes {
                results.push(o.result().await);
            }
            results
        });
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, i as i64),
                Err(e) => assert!(i % 10 == 9, "{i}: {e}"),
            }
        }
        // The after-commit steps ran for the committed operations only, in commit order.
        let expected: Vec<i64> = (0..n).filter(|i| i % 10 != 9).collect();
        assert_eq!(*after_commit.lock().unwrap(), expected);
        // Rows went in in submission order (rowid order = v order), without the failed ones.
        let rows: Vec<i64> = w
            .write(|c| {
                let mut s = c.prepare("SELECT v FROM t ORDER BY rowid")?;
                let v = s
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok(v)
            })
            .unwrap();
        let expected: Vec<i64> = (0..n).filter(|i| i % 10 != 9).collect();
        assert_eq!(rows, expected);
    }

    #[test]
    fn an_operation_without_savepoint_failing_after_a_write_rolls_back_its_whole_batch() {
        let w = writer();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Inserts `v`; with `fail`, refuses: before writing for v = 2, after writing otherwise.
        let insert = |v: i64, fail: bool| {
            w.submit(
                move |c| {
                    if fail && v == 2 {
                        return Err(StoreError::Limit("refused first".into()));
                    }
                    c.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
                    if fail {
                        return Err(StoreError::Limit("refused after writing".into()));
                    }
                    Ok(v)
                },
                Isolation::FailsBeforeWriting,
                |v| v,
            )
        };
        // Runs the operations `ops` (value, fail) as one batch: the writer is held busy in a
        // batch of its own while they are queued.
        let one_batch = |ops: &[(i64, bool)]| {
            let (release, held) = std::sync::mpsc::channel::<()>();
            let (started, running) = std::sync::mpsc::channel::<()>();
            let busy = w.submit(
                move |_| {
                    let _ = started.send(());
                    let _ = held.recv();
                    Ok(())
                },
                Isolation::Savepoint,
                |()| (),
            );
            rt.block_on(async {
                let busy = busy.queued().await;
                running.recv().unwrap();
                let mut queued = Vec::new();
                for (v, fail) in ops {
                    queued.push(insert(*v, *fail).queued().await);
                }
                release.send(()).unwrap();
                busy.result().await.unwrap();
                let mut results = Vec::new();
                for o in queued {
                    results.push(o.result().await);
                }
                results
            })
        };
        // One refused before writing: the others are unaffected.
        let results = one_batch(&[(1, false), (2, true), (3, false)]);
        assert_eq!(results[0].as_ref().unwrap(), &1);
        assert!(matches!(results[1], Err(StoreError::Limit(_))));
        assert_eq!(results[2].as_ref().unwrap(), &3);
        assert_eq!(count(&w), 2);

        // One that fails after writing takes its batch down with it, and nothing of it stays.
        let results = one_batch(&[(4, false), (5, true)]);
        assert!(results.iter().all(|r| matches!(r, Err(StoreError::Db(_)))));
        assert_eq!(count(&w), 2);
        // The writer goes on.
        let next = rt.block_on(async {
            let queued = insert(6, false).queued().await;
            queued.result().await
        });
        assert_eq!(next.unwrap(), 6);
        assert_eq!(count(&w), 3);
    }

    #[test]
    fn after_close_every_call_is_refused() {
        let w = writer();
        let queue = w.queue.clone();
        w.close().unwrap();
        let (reply, _r) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        let op = Op {
            f: |_: &Connection| Ok(()),
            isolation: Isolation::Savepoint,
            then: |()| (),
            reply: Reply::Blocking(reply),
        };
        assert!(queue.send(Message::Op(Box::new(op))).is_err());
    }
}
