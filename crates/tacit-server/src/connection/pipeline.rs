//! Pipelining within one connection: the connection goes on reading frames while its earlier
//! requests wait for their commit, so that one client's messages share group commits instead of
//! paying for one each.
//!
//! Order is kept in two ways. Messages and acknowledgments are *submitted* to the store's
//! pipelined writes ([`crate::store::PipelinedWrites`], SQLite's writer queue) in the order the
//! frames were read — a non-blocking step done before the next frame is read — so they are
//! applied in the order they were sent; only their outcomes are awaited concurrently. Every other
//! request (and every request on a backend without pipelined writes, i.e. PostgreSQL) is a
//! barrier: it waits until everything in flight has been answered, then runs as before, alone.
//! Answers go out in request order. A request is answered only with its own outcome, which for a
//! write is known only after the COMMIT holding it returned.

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesOrdered;

use super::*;
use crate::notifier::{Notifier, Push};
use crate::store::{AfterCommit, Enqueued, Posted};

/// Most requests of one connection in flight; with this many the connection stops reading
/// frames until one is answered (backpressure on the client).
pub(super) const MAX_IN_FLIGHT: usize = 64;

/// A request being answered: resolves to the frame to send, if any.
type Answer = Pin<Box<dyn Future<Output = Option<Message>> + Send>>;

/// A connection's requests in flight, answered in the order they were read.
#[derive(Default)]
pub(super) struct Pipeline {
    /// Behind a mutex only so that the connection's future may be sent between threads (the
    /// answers are `Send`, not `Sync`); it is reached through `&mut self`, without locking.
    in_flight: std::sync::Mutex<FuturesOrdered<Answer>>,
    /// How many requests are in flight.
    len: usize,
}

impl Pipeline {
    /// Whether the connection must stop reading frames for now.
    pub(super) fn is_full(&self) -> bool {
        self.len >= MAX_IN_FLIGHT
    }

    fn queue(&mut self) -> &mut FuturesOrdered<Answer> {
        self.in_flight
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&mut self, answer: Answer) {
        self.queue().push_back(answer);
        self.len += 1;
    }

    /// The answer of the oldest request in flight once it is ready; `None` when nothing is in
    /// flight.
    pub(super) async fn next(&mut self) -> Option<Option<Message>> {
        let answer = self.queue().next().await;
        if answer.is_some() {
            self.len -= 1;
        }
        answer
    }
}

/// The frame answering request `request_id` (`None`: nothing to send, a `Done` to a request
/// without an id), logging a refusal.
pub(super) fn answer_frame(
    connection: u64,
    kind: &'static str,
    request_id: u64,
    answer: Result<Option<Resp>, Failure>,
) -> Option<Message> {
    match answer {
        Ok(Some(resp)) if request_id != 0 || !matches!(resp, Resp::Done(_)) => {
            Some(frame_for(request_id, resp))
        }
        Ok(_) => None,
        Err(f) => {
            tracing::debug!(connection, kind, request_id, code = ?f.code, "request refused");
            Some(error_frame(request_id, f))
        }
    }
}

impl Session {
    /// Sends the answers of every request in flight, in order, and returns once none is left.
    pub(crate) async fn drain(&mut self) {
        while let Some(answer) = self.pipeline.next().await {
            if let Some(m) = answer {
                self.send(m).await;
            }
        }
    }

    /// Puts an authenticated device's request in flight if it can be pipelined (a message or an
    /// acknowledgment, on a store with pipelined writes): its write is queued now, its answer
    /// sent when [`Pipeline::next`] yields it. Otherwise hands the request back, untouched.
    pub(super) async fn submit(
        &mut self,
        body: Req,
        request_id: u64,
        kind: &'static str,
    ) -> Result<(), Req> {
        let Some(device) = self.device.clone() else {
            return Err(body);
        };
        // A connection whose delivery ended (its device removed) is refused by the
        // non-pipelined path, which says why and closes it.
        let delivery_ended = self.delivery_ended();
        if delivery_ended || !matches!(body, Req::SendMessage(_) | Req::Ack(_)) {
            return Err(body);
        }
        let state = self.state.clone();
        let Some(writes) = state.store.pipelined() else {
            return Err(body);
        };
        let connection = self.id;
        let answer: Answer = match body {
            Req::SendMessage(m) => {
                if let Err(f) = self.rate_limit(&device) {
                    let frame = answer_frame(connection, kind, request_id, Err(f));
                    Box::pin(std::future::ready(frame))
                } else {
                    let limits = &state.limits;
                    let posted = Arc::new(Posted {
                        group_id: m.group_id,
                        sender: device,
                        payload: m.message,
                    });
                    let outcome = writes
                        .submit_send_message(
                            posted.clone(),
                            limits.max_queue_len_per_device,
                            limits.message_ttl_secs.saturating_mul(1000),
                            push_after_commit(state.notifier.clone(), posted),
                        )
                        .queued()
                        .await;
                    let state = state.clone();
                    Box::pin(async move {
                        let answer = match outcome.result().await {
                            Ok(not_pushed) => {
                                for d in not_pushed {
                                    state.notifier.notify(d);
                                }
                                Ok(Some(Resp::MessageAccepted(v1::MessageAccepted {})))
                            }
                            Err(e) => Err(Failure::from(e)),
                        };
                        answer_frame(connection, kind, request_id, answer)
                    })
                }
            }
            Req::Ack(a) => {
                let outcome = writes.submit_ack(device.key, a.up_to_seq).queued().await;
                Box::pin(async move {
                    let answer = match outcome.result().await {
                        Ok(()) => Ok(Some(Resp::Done(v1::Done {}))),
                        Err(e) => Err(Failure::from(e)),
                    };
                    answer_frame(connection, kind, request_id, answer)
                })
            }
            other => return Err(other),
        };
        self.pipeline.push(answer);
        Ok(())
    }
}

/// Hands a committed message to its recipients' connections on this node (on the writer's
/// thread, in commit order); the recipients without one are returned, to be notified.
fn push_after_commit(notifier: Arc<dyn Notifier>, message: Arc<Posted>) -> AfterCommit {
    Box::new(move |queued: Enqueued| {
        let mut not_pushed = Vec::new();
        for (device, seq) in queued.recipients {
            let push = Push {
                seq,
                enqueued_ms: queued.enqueued_ms,
                message: message.clone(),
            };
            if !notifier.push(device, &push) {
                not_pushed.push(device);
            }
        }
        not_pushed
    })
}
