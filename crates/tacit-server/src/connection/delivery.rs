//! Streams a device's queue to its connection: the backlog in order, a `QueueDrained` marker,
//! then new envelopes as the notifier announces them. The database stays the source of truth.

use super::*;

impl Session {
    pub(super) fn start_delivery(&mut self, device: crate::store::DeviceKey) {
        let state = self.state.clone();
        let out = self.out.clone();
        let connection = self.id;
        let mut wake = state.notifier.subscribe(device);
        // Re-read the queue this often even without a notice, in case one was lost.
        let poll = Duration::from_secs(state.limits.delivery_poll_secs.max(1));
        self.delivery = Some(tokio::spawn(async move {
            let mut last_sent = 0u64;
            let mut drained = false;
            // Consecutive failed reads: the first is logged, then the retries back off (1 s
            // doubling up to the poll interval) so an unavailable database is not hammered and
            // the log says it once per connection, not once per second.
            let mut failures = 0u32;
            // Whether a notice arrived that no delivered envelope has answered yet. A notice
            // that finds nothing to deliver may be the one a device removal sends: then the
            // store is asked, and a removed device's connection is told and closed.
            let mut noticed = false;
            loop {
                if wake.has_changed().unwrap_or(false) {
                    noticed = true;
                }
                wake.borrow_and_update();
                let batch = match state
                    .db(move |s| s.fetch(device, last_sent, DELIVERY_BATCH))
                    .await
                {
                    Ok(b) => {
                        if failures > 0 {
                            tracing::debug!(connection, failures, "delivery reads work again");
                        }
                        failures = 0;
                        b
                    }
                    Err(e) => {
                        if failures == 0 {
                            tracing::warn!(connection, "delivery read failed, retrying: {e}");
                        }
                        failures = failures.saturating_add(1);
                        let backoff = Duration::from_secs(1 << failures.min(6)).min(poll);
                        tokio::time::sleep(backoff / 2).await;
                        continue;
                    }
                };
                if batch.is_empty() && std::mem::take(&mut noticed) {
                    let removed = state.db(move |s| s.device_removed(device)).await;
                    if matches!(removed, Ok(true)) {
                        tracing::info!(connection, "closing: this device was removed");
                        let gone = Failure::new(
                            ErrorCode::AuthFailed,
                            "this device was removed by another device of its user; it can no longer connect",
                        );
                        let _ = out.send(error_frame(0, gone)).await;
                        let _ = out.send(Message::Close(None)).await;
                        return;
                    }
                }
                if batch.is_empty() {
                    if !drained {
                        drained = true;
                        if out
                            .send(frame(
                                0,
                                Resp::QueueDrained(v1::QueueDrained {
                                    last_seq: last_sent,
                                }),
                            ))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    tokio::select! {
                        r = wake.changed() => {
                            if r.is_err() { return }
                            noticed = true;
                        }
                        _ = tokio::time::sleep(poll) => {}
                    }
                    continue;
                }
                noticed = false;
                tracing::debug!(
                    connection,
                    first_seq = batch.first().map(|q| q.seq),
                    envelopes = batch.len(),
                    bytes = batch.iter().map(|q| q.payload.len()).sum::<usize>(),
                    "delivering"
                );
                for q in batch {
                    last_sent = q.seq;
                    let envelope = v1::Envelope {
                        seq: q.seq,
                        kind: q.kind,
                        group_id: q.group_id,
                        sender: Some(v1::DeviceAddress {
                            handle: q.sender_handle,
                            device_id: q.sender_device,
                        }),
                        payload: q.payload,
                        server_time_ms: q.enqueued_ms,
                    };
                    if out.send(frame(0, Resp::Envelope(envelope))).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
}
