//! Pipelined writes: a backend that applies its writes one after another (SQLite's writer thread)
//! can fix an operation's place in that order when it is submitted — a cheap, non-blocking step —
//! and report the outcome later, once the operation is committed. A connection submits its
//! requests in the order it read them and awaits their outcomes concurrently, so several of its
//! requests share one commit while their order stays the order they were sent in.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{DeviceKey, DeviceRecord, StoreError};

/// An application message to queue, shared (not copied) between the store's write and the
/// pushes to its recipients' connections.
#[derive(Debug)]
pub struct Posted {
    /// The group it is sent in.
    pub group_id: Vec<u8>,
    /// The sending device.
    pub sender: DeviceRecord,
    /// The opaque MLS message.
    pub payload: Vec<u8>,
}

/// Where a committed message was queued: each recipient with its sequence number, and the
/// enqueue time stored with it.
#[derive(Debug, Default)]
pub struct Enqueued {
    /// Every recipient device and the seq the message got in its queue.
    pub recipients: Vec<(DeviceKey, u64)>,
    /// When it was queued (milliseconds since the Unix epoch), as stored.
    pub enqueued_ms: u64,
}

/// Runs right after the COMMIT holding a sent message returned, on the writer's thread and in
/// commit order (so every device's pushes come in seq order); returns the devices it could not
/// push the message to, which the caller then wakes. It must not block.
pub type AfterCommit = Box<dyn FnOnce(Enqueued) -> Vec<DeviceKey> + Send>;

/// Sends an operation that found the backend's queue full, blocking until there is room.
pub(crate) type BlockedSend = Box<dyn FnOnce() -> Result<(), StoreError> + Send>;

/// The writes a connection may pipeline. Each call places the operation in the backend's order
/// of writes at once (see [`Submitted::queued`] for a full queue); the same promises as the
/// blocking [`super::Store`] methods hold, and the outcome is known only after the COMMIT that
/// holds the operation returned.
pub trait PipelinedWrites: Send + Sync {
    /// [`super::Store::send_message`], pipelined: once the message is committed, `after_commit`
    /// runs with where it was queued, and its result (the devices still to wake) is the
    /// outcome.
    fn submit_send_message(
        &self,
        message: Arc<Posted>,
        max_queue: usize,
        ttl_ms: u64,
        after_commit: AfterCommit,
    ) -> Submitted<Vec<DeviceKey>>;
    /// [`super::Store::ack`], pipelined.
    fn submit_ack(&self, device: DeviceKey, up_to: u64) -> Submitted<()>;
}

/// A submitted write: in the backend's order already, or waiting for room in its queue.
#[must_use = "a submitted write may still have to be queued: call `queued`"]
pub struct Submitted<T> {
    blocked: Option<BlockedSend>,
    outcome: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T: Send + 'static> Submitted<T> {
    /// A write placed in the backend's order; `outcome` resolves after its COMMIT.
    pub(crate) fn queued_now(outcome: oneshot::Receiver<Result<T, StoreError>>) -> Self {
        Submitted {
            blocked: None,
            outcome,
        }
    }

    /// A write the backend's queue had no room for: `send` queues it, blocking.
    pub(crate) fn blocked(
        send: BlockedSend,
        outcome: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Self {
        Submitted {
            blocked: Some(send),
            outcome,
        }
    }

    /// A write refused before it was queued.
    pub(crate) fn refused(error: StoreError) -> Self {
        let (tx, outcome) = oneshot::channel();
        let _ = tx.send(Err(error));
        Submitted {
            blocked: None,
            outcome,
        }
    }

    /// Returns once the write has its place in the backend's order: at once, unless the queue
    /// was full (then it waits for room off the async runtime — backpressure). Call this before
    /// submitting the connection's next write so that writes keep their order.
    pub async fn queued(self) -> Outcome<T> {
        if let Some(send) = self.blocked {
            let sent = tokio::task::spawn_blocking(send)
                .await
                .map_err(|e| StoreError::Db(format!("storage task failed: {e}")))
                .and_then(|r| r);
            if let Err(e) = sent {
                return Outcome(Err(e));
            }
        }
        Outcome(Ok(self.outcome))
    }
}

/// The outcome of a queued write, to await concurrently with other work.
pub struct Outcome<T>(Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>);

impl<T> Outcome<T> {
    /// The write's result, once the COMMIT holding it returned (or the batch failed).
    pub async fn result(self) -> Result<T, StoreError> {
        match self.0 {
            Ok(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
            Err(e) => Err(e),
        }
    }
}
