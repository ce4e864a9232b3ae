//! "Device D has mail" notices, and committed messages pushed to D's connections. The queue
//! itself is in the database; a notice only wakes the connection holding D so that it reads the
//! database now, and a push saves it that read (see [`Mailbox`]). A lost notice or push delays a
//! message until the next poll or reconnect, never loses it. [`LocalNotifier`] carries notices
//! and pushes within one process; [`NatsNotifier`] also carries notices between server nodes
//! over NATS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::store::DeviceKey;

mod mailbox;
mod nats;

pub use mailbox::{Mailbox, Push, Taken};
pub use nats::{NatsConfig, NatsNotifier};

use mailbox::Slot;

/// Delivers wake-ups and pushed messages to the connections of devices.
pub trait Notifier: Send + Sync + 'static {
    /// Wakes every connection of `device`, wherever it is.
    fn notify(&self, device: DeviceKey);
    /// A mailbox that receives `device`'s notices and pushes until it is dropped.
    fn subscribe(&self, device: DeviceKey) -> Mailbox;
    /// Hands a committed message to the connections of `device` in this process, in the order
    /// of the calls (which must be seq order for one device). Returns false if there is none
    /// here: then the caller calls [`Notifier::notify`]. Connections elsewhere are woken by the
    /// notifier itself. Never blocks.
    fn push(&self, device: DeviceKey, push: &Push) -> bool;
}

/// Notices and pushes within one server process.
#[derive(Default)]
pub struct LocalNotifier {
    /// The mailboxes of each device's connections (usually one).
    mailboxes: Mutex<HashMap<DeviceKey, Vec<Weak<Slot>>>>,
}

impl LocalNotifier {
    /// Runs `f` on every live mailbox of `device`, forgetting dropped ones; false if none.
    fn each(&self, device: DeviceKey, f: impl Fn(&Slot)) -> bool {
        let Ok(mut map) = self.mailboxes.lock() else {
            return false;
        };
        let Some(slots) = map.get_mut(&device) else {
            return false;
        };
        let mut any = false;
        slots.retain(|slot| match slot.upgrade() {
            Some(slot) => {
                f(&slot);
                any = true;
                true
            }
            None => false,
        });
        if !any {
            map.remove(&device);
        }
        any
    }
}

impl Notifier for LocalNotifier {
    fn notify(&self, device: DeviceKey) {
        self.each(device, Slot::notice);
    }

    fn subscribe(&self, device: DeviceKey) -> Mailbox {
        let slot = Arc::new(Slot::default());
        match self.mailboxes.lock() {
            Ok(mut map) => {
                let slots = map.entry(device).or_default();
                slots.retain(|s| s.strong_count() > 0);
                slots.push(Arc::downgrade(&slot));
                Mailbox::new(slot)
            }
            // A poisoned map only costs push latency: the delivery loop also polls.
            Err(_) => Mailbox::detached(),
        }
    }

    fn push(&self, device: DeviceKey, push: &Push) -> bool {
        self.each(device, |slot| slot.push(push.clone()))
    }
}

impl LocalNotifier {
    /// Whether some connection in this process follows `device`.
    pub fn has_receivers(&self, device: DeviceKey) -> bool {
        self.mailboxes
            .lock()
            .map(|map| {
                map.get(&device)
                    .is_some_and(|slots| slots.iter().any(|s| s.strong_count() > 0))
            })
            .unwrap_or(false)
    }

    /// Wakes every connection in this process (after notices may have been lost).
    pub fn notify_all(&self) {
        if let Ok(mut map) = self.mailboxes.lock() {
            map.retain(|_, slots| {
                slots.retain(|slot| match slot.upgrade() {
                    Some(slot) => {
                        slot.notice();
                        true
                    }
                    None => false,
                });
                !slots.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_reach_followers_of_that_device_only() {
        let n = LocalNotifier::default();
        let one = n.subscribe(1);
        let two = n.subscribe(2);
        assert!(n.has_receivers(1) && !n.has_receivers(3));
        n.notify(1);
        assert!(one.take().notice);
        assert!(!two.take().notice);
        n.notify_all();
        assert!(one.take().notice && two.take().notice);
        drop(one);
        assert!(!n.has_receivers(1));
    }

    #[test]
    fn pushes_reach_every_connection_of_the_device_and_report_when_there_is_none() {
        let n = LocalNotifier::default();
        let first = n.subscribe(1);
        let second = n.subscribe(1);
        let other = n.subscribe(2);
        let push = mailbox::tests::push(7, 6);
        assert!(n.push(1, &push));
        for m in [&first, &second] {
            let taken = m.take();
            assert_eq!(taken.pushes.len(), 1);
            assert_eq!(taken.pushes[0].seq, 7);
        }
        assert!(other.take().pushes.is_empty());
        drop((first, second));
        assert!(
            !n.push(1, &push),
            "no connection left: the caller must notify"
        );
    }
}
