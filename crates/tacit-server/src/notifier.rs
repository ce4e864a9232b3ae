//! "Device D has mail" notices. The queue itself is in the database; a notice only wakes the
//! connection holding D so that it reads the database now. A lost notice delays a message until
//! the next poll or reconnect, never loses it. In-process now; a NATS implementation carries the
//! same notices between server nodes.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::store::DeviceKey;

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
