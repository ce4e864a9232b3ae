//! Pipelined writes: a backend that applies its writes one after another (SQLite's writer thread)
//! can fix an operation's place in that order when it is submitted — a cheap, non-blocking step —
//! and report the outcome later, once the operation is committed. A connection submits its
//! requests in the order it read them and awaits their outcomes concurrently, so several of its
//! requests share one commit while their order stays the order they were sent in.

use tokio::sync::oneshot;

use super::{DeviceKey, DeviceRecord, StoreError};

/// Sends an operation that found the backend's queue full, blocking until there is room.
pub(crate) type BlockedSend = Box<dyn FnOnce() -> Result<(), StoreError> + Send>;

/// The writes a connection may pipeline. Each call places the operation in the backend's order
/// of writes at once (see [`Submitted::queued`] for a full queue); the same promises as the
/// blocking [`super::Store`] methods hold, and the outcome is known only after the COMMIT that
/// holds the operation returned.
pub trait PipelinedWrites: Send + Sync {
    /// [`super::Store::send_message`], pipelined.
    fn submit_send_message(
        &self,
        group_id: Vec<u8>,
        sender: DeviceRecord,
        message: Vec<u8>,
        max_queue: usize,
        ttl_ms: u64,
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
