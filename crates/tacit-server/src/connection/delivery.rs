//! Streams a device's queue to its connection: the backlog in order, a `QueueDrained` marker,
//! then new envelopes as they are committed. It runs in the connection's own task, one step at a
//! time, whenever [`Delivery::due`] says so; what it sends goes to the session's outbox.
//!
//! The database stays the source of truth: a message pushed in memory (see
//! [`crate::notifier::Mailbox`]) is sent straight away only when its seq is the next one after
//! the last envelope sent; anything else — a notice, a gap in the seqs, a dropped push, the
//! periodic poll — is answered by reading the queue from the database.

use std::collections::VecDeque;

use super::*;
use crate::notifier::{Mailbox, Push};
use crate::store::{DeviceKey, Queued};

/// Where the delivery of one device's queue stands.
pub(crate) struct Delivery {
    device: DeviceKey,
    mailbox: Mailbox,
    /// The seq of the last envelope sent.
    last_sent: u64,
    /// Whether the backlog has been sent (and `QueueDrained` with it).
    drained: bool,
    /// Whether the next step must read the database.
    read: bool,
    /// Whether a notice arrived that no delivered envelope has answered yet. A notice that finds
    /// nothing to deliver may be the one a device removal sends: then the store is asked, and a
    /// removed device's connection is told and closed.
    noticed: bool,
    /// Pushed envelopes not yet sent, in seq order.
    pushes: VecDeque<Push>,
    /// Consecutive failed reads: the first is logged, then the retries back off.
    failures: u32,
    /// Whether the last step left more to do at once.
    busy: bool,
    /// No read before this instant (backing off after failed reads).
    retry_at: Option<tokio::time::Instant>,
    /// The device was found removed: nothing more is delivered.
    ended: bool,
}

/// What one step of the delivery found.
enum Step {
    /// More to do at once.
    Again,
    /// Nothing to do until the mailbox has something or the poll interval passes.
    Wait,
    /// The device was removed: the connection closes.
    Stop,
}

/// Where a delivery step reads and writes.
struct Output<'a> {
    state: &'a AppState,
    outbox: &'a Outbox,
    connection: u64,
}

impl Output<'_> {
    fn envelope(&self, envelope: v1::Envelope) {
        self.outbox.push(frame(0, Resp::Envelope(envelope)));
    }
}

impl Session {
    /// Starts delivering `device`'s queue on this connection (after authentication).
    pub(super) fn start_delivery(&mut self, device: DeviceKey) {
        let mailbox = self.state.notifier.subscribe(device);
        self.delivery = Some(Delivery {
            device,
            mailbox,
            last_sent: 0,
            drained: false,
            read: true,
            noticed: false,
            pushes: VecDeque::new(),
            failures: 0,
            busy: true,
            retry_at: None,
            ended: false,
        });
    }

    /// Whether this connection stopped delivering because its device was removed.
    pub(super) fn delivery_ended(&self) -> bool {
        self.delivery.as_ref().is_some_and(|d| d.ended)
    }

    /// Takes one step of the delivery: sends what was pushed, or reads a batch from the
    /// database. A removed device's connection is told and marked for closing.
    pub(crate) async fn deliver(&mut self) {
        let Some(delivery) = self.delivery.as_mut() else {
            return;
        };
        if delivery.ended {
            return;
        }
        let to = Output {
            state: &self.state,
            outbox: &self.outbox,
            connection: self.id,
        };
        match delivery.step(&to).await {
            Step::Again => delivery.busy = true,
            Step::Wait => delivery.busy = false,
            Step::Stop => {
                delivery.busy = false;
                delivery.ended = true;
                self.close = true;
            }
        }
    }
}

impl Delivery {
    /// Resolves when the delivery has something to do: at once if its last step left more
    /// (after a back-off when reads failed), else when its mailbox receives something; never
    /// without a delivery.
    pub(super) async fn due(delivery: &Option<Delivery>) {
        match delivery {
            Some(d) if d.ended => std::future::pending().await,
            Some(d) if d.busy => {
                if let Some(at) = d.retry_at {
                    tokio::time::sleep_until(at).await;
                }
            }
            Some(d) => d.mailbox.ready().await,
            None => std::future::pending().await,
        }
    }

    /// The poll interval passed: re-read the queue even without a notice, in case one was lost.
    pub(super) fn poll(&mut self) {
        if !self.ended {
            self.read = true;
            self.busy = true;
        }
    }

    async fn step(&mut self, to: &Output<'_>) -> Step {
        let taken = self.mailbox.take();
        if taken.notice {
            self.noticed = true;
            self.read = true;
        }
        self.pushes.extend(taken.pushes);
        if !self.read {
            // Send the pushes that follow on from what was sent; a gap means the database holds
            // something that was not pushed (a commit, a dropped push): read it.
            while let Some(push) = self.pushes.pop_front() {
                if push.seq <= self.last_sent {
                    continue;
                }
                if push.seq != self.last_sent + 1 {
                    self.pushes.push_front(push);
                    self.read = true;
                    break;
                }
                self.last_sent = push.seq;
                to.envelope(pushed_envelope(push));
            }
            if !self.read {
                return Step::Wait;
            }
        }
        self.read_queue(to).await
    }

    /// Reads and sends the next batch of the queue from the database.
    async fn read_queue(&mut self, to: &Output<'_>) -> Step {
        let (device, after) = (self.device, self.last_sent);
        self.retry_at = None;
        let batch = match to
            .state
            .db(move |s| s.fetch(device, after, DELIVERY_BATCH))
            .await
        {
            Ok(b) => {
                if self.failures > 0 {
                    tracing::debug!(
                        connection = to.connection,
                        failures = self.failures,
                        "delivery reads work again"
                    );
                }
                self.failures = 0;
                b
            }
            Err(e) => {
                if self.failures == 0 {
                    tracing::warn!(
                        connection = to.connection,
                        "delivery read failed, retrying: {e}"
                    );
                }
                // Back off (1 s doubling up to the poll interval) so that an unavailable
                // database is not hammered and the log says it once per connection; the
                // connection goes on serving requests meanwhile.
                self.failures = self.failures.saturating_add(1);
                let poll = Duration::from_secs(to.state.limits.delivery_poll_secs.max(1));
                let backoff = Duration::from_secs(1 << self.failures.min(6)).min(poll);
                self.retry_at = Some(tokio::time::Instant::now() + backoff / 2);
                return Step::Again;
            }
        };
        let full = batch.len() >= DELIVERY_BATCH;
        if batch.is_empty() {
            if std::mem::take(&mut self.noticed) && self.removed(to).await {
                return Step::Stop;
            }
        } else {
            self.noticed = false;
            tracing::debug!(
                connection = to.connection,
                first_seq = batch.first().map(|q| q.seq),
                envelopes = batch.len(),
                bytes = batch.iter().map(|q| q.payload.len()).sum::<usize>(),
                "delivering"
            );
            for q in batch {
                self.last_sent = q.seq;
                to.envelope(stored_envelope(q));
            }
        }
        if !full && !self.drained {
            // A batch short of the limit held the rest of the backlog.
            self.drained = true;
            let last_seq = self.last_sent;
            to.outbox
                .push(frame(0, Resp::QueueDrained(v1::QueueDrained { last_seq })));
        }
        // Pushes taken before this read were committed before it, so it covered them (or they
        // are gone: acknowledged, expired) unless the batch was full; then the next read goes
        // on from here.
        let last_sent = self.last_sent;
        if full {
            self.pushes.retain(|p| p.seq > last_sent);
        } else {
            self.pushes.clear();
        }
        self.read = full;
        if full {
            Step::Again
        } else {
            Step::Wait
        }
    }

    /// Whether the device was removed; if so, tells the connection (which then closes).
    async fn removed(&self, to: &Output<'_>) -> bool {
        let device = self.device;
        let removed = to.state.db(move |s| s.device_removed(device)).await;
        if !matches!(removed, Ok(true)) {
            return false;
        }
        tracing::info!(
            connection = to.connection,
            "closing: this device was removed"
        );
        let gone = Failure::new(
            ErrorCode::AuthFailed,
            "this device was removed by another device of its user; it can no longer connect",
        );
        to.outbox.push(error_frame(0, gone));
        to.outbox.push(Message::Close(None));
        true
    }
}

fn stored_envelope(q: Queued) -> v1::Envelope {
    v1::Envelope {
        seq: q.seq,
        kind: q.kind,
        group_id: q.group_id,
        sender: Some(v1::DeviceAddress {
            handle: q.sender_handle,
            device_id: q.sender_device,
        }),
        payload: q.payload,
        server_time_ms: q.enqueued_ms,
    }
}

fn pushed_envelope(p: Push) -> v1::Envelope {
    let m = &*p.message;
    v1::Envelope {
        seq: p.seq,
        kind: v1::EnvelopeKind::Message as i32,
        group_id: m.group_id.clone(),
        sender: Some(v1::DeviceAddress {
            handle: m.sender.handle.clone(),
            device_id: m.sender.device_id,
        }),
        payload: m.payload.clone(),
        server_time_ms: p.enqueued_ms,
    }
}
