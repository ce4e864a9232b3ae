//! "Device D has mail" notices. The queue itself is in the database; a notice only wakes the
//! connection holding D so that it reads the database now. A lost notice delays a message until
//! the next poll or reconnect, never loses it. [`LocalNotifier`] carries notices within one
//! process; [`NatsNotifier`] also carries them between server nodes over NATS.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::store::DeviceKey;

mod nats;

pub use nats::{NatsConfig, NatsNotifier};

/// Delivers wake-ups to the connections of devices.
pub trait Notifier: Send + Sync + 'static {
    /// Wakes every connection of `device`.
    fn notify(&self, device: DeviceKey);
    /// A receiver that changes whenever `device` is notified.
    fn subscribe(&self, device: DeviceKey) -> watch::Receiver<u64>;
}

/// Notices within one server process.
#[derive(Default)]
pub struct LocalNotifier {
    channels: Mutex<HashMap<DeviceKey, watch::Sender<u64>>>,
}

impl Notifier for LocalNotifier {
    fn notify(&self, device: DeviceKey) {
        if let Ok(mut map) = self.channels.lock() {
            if let Some(tx) = map.get(&device) {
                if tx.receiver_count() == 0 {
                    map.remove(&device);
                } else {
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        }
    }

    fn subscribe(&self, device: DeviceKey) -> watch::Receiver<u64> {
        match self.channels.lock() {
            Ok(mut map) => map
                .entry(device)
                .or_insert_with(|| watch::channel(0).0)
                .subscribe(),
            // A poisoned map only costs push latency: the delivery loop also polls.
            Err(_) => watch::channel(0).1,
        }
    }
}

impl LocalNotifier {
    /// Whether some connection in this process follows `device`.
    pub fn has_receivers(&self, device: DeviceKey) -> bool {
        self.channels
            .lock()
            .map(|map| map.get(&device).is_some_and(|tx| tx.receiver_count() > 0))
            .unwrap_or(false)
    }

    /// Wakes every connection in this process (after notices may have been lost).
    pub fn notify_all(&self) {
        if let Ok(mut map) = self.channels.lock() {
            map.retain(|_, tx| tx.receiver_count() > 0);
            for tx in map.values() {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_reach_followers_of_that_device_only() {
        let n = LocalNotifier::default();
        let mut one = n.subscribe(1);
        let two = n.subscribe(2);
        assert!(n.has_receivers(1) && !n.has_receivers(3));
        n.notify(1);
        assert!(one.has_changed().unwrap_or(false));
        assert!(!two.has_changed().unwrap_or(true));
        one.borrow_and_update();
        n.notify_all();
        assert!(one.has_changed().unwrap_or(false) && two.has_changed().unwrap_or(false));
        drop(one);
        assert!(!n.has_receivers(1));
    }
}
