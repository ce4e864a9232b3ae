//! A connection's mailbox: what the notifier has for one connected device since the connection
//! last looked. Two things arrive: *notices* ("read your queue in the database") and *pushes*
//! (a committed message with its seq, handed over in memory so that the connection can send it
//! without reading the database). Pushes are bounded in number and bytes; past either bound the
//! mailbox drops them and keeps a notice instead, so a slow connection costs a database read,
//! never memory or a message.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::Posted;

/// Most pushed envelopes a mailbox holds.
const MAX_PUSHES: usize = 256;
/// Most payload bytes of pushed envelopes a mailbox holds.
const MAX_PUSHED_BYTES: usize = 4 << 20;

/// A committed message handed to a connection: its seq in the device's queue, when it was
/// queued, and the message (shared by every recipient).
#[derive(Clone, Debug)]
pub struct Push {
    /// The message's seq in this device's queue.
    pub seq: u64,
    /// When it was queued (milliseconds since the Unix epoch), as stored.
    pub enqueued_ms: u64,
    /// The message.
    pub message: Arc<Posted>,
}

/// What a mailbox held: pushes in the order they arrived (seq order for one device), and
/// whether the queue must be read from the database.
#[derive(Debug, Default)]
pub struct Taken {
    /// Pushed envelopes, oldest first.
    pub pushes: VecDeque<Push>,
    /// A notice arrived, or pushes were dropped: read the database.
    pub notice: bool,
}

#[derive(Default)]
struct Contents {
    pushes: VecDeque<Push>,
    pushed_bytes: usize,
    notice: bool,
}

/// The notifier's side of a mailbox.
#[derive(Default)]
pub(super) struct Slot {
    contents: Mutex<Contents>,
    ready: Notify,
}

impl Slot {
    /// Asks the connection to read its queue from the database.
    pub(super) fn notice(&self) {
        if let Ok(mut c) = self.contents.lock() {
            c.notice = true;
        }
        self.ready.notify_one();
    }

    /// Hands `push` over, or turns it into a notice when the mailbox is full.
    pub(super) fn push(&self, push: Push) {
        if let Ok(mut c) = self.contents.lock() {
            let bytes = push.message.payload.len();
            if c.pushes.len() < MAX_PUSHES && c.pushed_bytes + bytes <= MAX_PUSHED_BYTES {
                c.pushed_bytes += bytes;
                c.pushes.push_back(push);
            } else {
                c.notice = true;
            }
        }
        self.ready.notify_one();
    }
}

/// The connection's side: one per connection of a device. Dropping it unsubscribes.
pub struct Mailbox {
    slot: Arc<Slot>,
}

impl Mailbox {
    pub(super) fn new(slot: Arc<Slot>) -> Self {
        Mailbox { slot }
    }

    /// A mailbox nobody writes to (the notifier could not register it); the connection still
    /// polls its queue.
    pub(super) fn detached() -> Self {
        Mailbox {
            slot: Arc::default(),
        }
    }

    /// Empties the mailbox.
    pub fn take(&self) -> Taken {
        match self.slot.contents.lock() {
            Ok(mut c) => {
                c.pushed_bytes = 0;
                Taken {
                    pushes: std::mem::take(&mut c.pushes),
                    notice: std::mem::take(&mut c.notice),
                }
            }
            // Poisoned: forget the pushes and read the database.
            Err(_) => Taken {
                pushes: VecDeque::new(),
                notice: true,
            },
        }
    }

    /// Returns once something arrived since the last call returned (at once if it already
    /// has). Only one task may wait on a mailbox.
    pub async fn ready(&self) {
        self.slot.ready.notified().await;
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::DeviceRecord;

    /// A pushed message with seq `seq` and a payload of `bytes` bytes.
    pub(in crate::notifier) fn push(seq: u64, bytes: usize) -> Push {
        Push {
            seq,
            enqueued_ms: 0,
            message: Arc::new(Posted {
                group_id: vec![1],
                sender: DeviceRecord {
                    key: 1,
                    handle: "alice".into(),
                    device_id: 1,
                    device_key: vec![],
                },
                payload: vec![0; bytes],
            }),
        }
    }

    #[test]
    fn pushes_come_out_in_order_and_a_full_mailbox_turns_them_into_a_notice() {
        let slot = Arc::new(Slot::default());
        let mailbox = Mailbox::new(slot.clone());
        for seq in 1..=3 {
            slot.push(push(seq, 10));
        }
        let taken = mailbox.take();
        assert_eq!(
            taken.pushes.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(!taken.notice);

        for seq in 0..MAX_PUSHES as u64 + 1 {
            slot.push(push(seq, 1));
        }
        let taken = mailbox.take();
        assert_eq!(taken.pushes.len(), MAX_PUSHES);
        assert!(taken.notice, "the dropped push must become a notice");

        slot.push(push(1, MAX_PUSHED_BYTES));
        slot.push(push(2, 1));
        let taken = mailbox.take();
        assert_eq!(taken.pushes.len(), 1);
        assert!(
            taken.notice,
            "past the byte bound the push becomes a notice"
        );
        assert!(!mailbox.take().notice);
    }

    #[tokio::test]
    async fn a_notice_before_waiting_is_not_lost() {
        let slot = Arc::new(Slot::default());
        let mailbox = Mailbox::new(slot.clone());
        slot.notice();
        tokio::time::timeout(std::time::Duration::from_secs(10), mailbox.ready())
            .await
            .unwrap();
        assert!(mailbox.take().notice);
    }
}
