//! Group commit: one thread owns SQLite's write connection and runs write operations in
//! batches, one transaction — and so one fsync — per batch.
//!
//! Each operation runs in a savepoint of its own inside the batch's transaction: an operation
//! that fails is rolled back alone and the others go on. Nobody hears about the outcome of an
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

struct Op<F, T> {
    f: F,
    reply: Reply<T>,
}

impl<F, T> Operation for Op<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (Delivery, Result<(), Unsound>) {
        let Op { f, reply } = *self;
        let (outcome, sound) = match in_savepoint(conn, f) {
            Ok(outcome) => (outcome, Ok(())),
            Err(Unsound) => (
                Err(StoreError::Db("could not undo a failed operation".into())),
                Err(Unsound),
            ),
        };
        let deliver: Delivery = Box::new(move |committed| {
            let result = match (outcome, committed) {
                (Ok(value), Ok(())) => Ok(value),
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
        self.queue
            .send(Message::Op(Box::new(Op { f, reply })))
            .map_err(|_| StoreError::Closed)?;
        result.recv().map_err(|_| StoreError::Closed)?
    }

    /// Queues `f` behind every operation queued before, without blocking: the returned
    /// [`Submitted`] resolves once its batch is committed. When the queue is full, the operation
    /// is handed back inside the [`Submitted`] to be queued off the async runtime.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Submitted<T> {
        let (reply, outcome) = oneshot::channel();
        let op = Message::Op(Box::new(Op {
            f,
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
        let results = rt.block_on(async {
            let mut outcomes = Vec::new();
            for i in 0..n {
                let queued = w
                    .submit(move |c| {
                        c.execute("INSERT INTO t (v) VALUES (?1)", [i])?;
                        if i % 10 == 9 {
                            return Err(StoreError::Limit("tenth".into()));
                        }
                        Ok(i)
                    })
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
    fn after_close_every_call_is_refused() {
        let w = writer();
        let queue = w.queue.clone();
        w.close().unwrap();
        let (reply, _r) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        let op = Op {
            f: |_: &Connection| Ok(()),
            reply: Reply::Blocking(reply),
        };
        assert!(queue.send(Message::Op(Box::new(op))).is_err());
    }
}
