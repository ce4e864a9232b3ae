//! Notices between server nodes over NATS (core NATS, no JetStream: a notice is only a wake-up,
//! the queue is in the database, so at-most-once is enough).
//!
//! Subjects are `PREFIX.mail.DEVICE`, DEVICE being the device's row id in the shared database.
//! A node subscribes to the subject of each device connected to it — NATS then routes a notice
//! only to the nodes that hold that device — and drops the subscription once the device has had
//! no connection there for a while. Every notice is published; the node's own notices are not
//! echoed back to it (the local wake-up already happened).
//!
//! Faults: NATS unreachable at start or later does not stop the node. It logs the outage once,
//! keeps waking its own connections, reconnects in the background, and when NATS is back it
//! wakes every local connection once, so whatever was sent during the outage is pushed then
//! rather than at the next poll.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{LocalNotifier, Mailbox, Notifier, Push};
use crate::store::DeviceKey;

/// Where NATS is and how this cluster's subjects are named.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `nats://host:port` (several may be given, comma-separated).
    pub url: String,
    /// First token of every subject; nodes of one cluster share it, other clusters on the same
    /// NATS use another.
    pub subject_prefix: String,
}

impl NatsConfig {
    /// A configuration with the default subject prefix `tacit`.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            subject_prefix: "tacit".into(),
        }
    }
}

/// Notices waiting to be published; beyond this they are dropped (a delay, never a loss).
const PUBLISH_BUFFER: usize = 16_384;
/// How often a device's subscription checks whether the device is still connected here.
const INTEREST_CHECK_SECS: u64 = 30;
/// Longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY_MS: u64 = 1_000;

struct Shared {
    local: LocalNotifier,
    client: async_nats::Client,
    prefix: String,
    /// Devices with a live subscription task.
    followed: Mutex<HashSet<DeviceKey>>,
}

impl Shared {
    fn subject(&self, device: DeviceKey) -> String {
        format!("{}.mail.{device}", self.prefix)
    }
}

/// Local notices plus NATS between nodes.
pub struct NatsNotifier {
    shared: Arc<Shared>,
    publish: mpsc::Sender<DeviceKey>,
}

impl NatsNotifier {
    /// Starts connecting to NATS in the background and returns at once: a node starts (and
    /// serves its own connections) whether or not NATS is reachable. Must be called within a
    /// tokio runtime.
    pub async fn start(config: &NatsConfig, node_id: &str) -> Result<NatsNotifier, String> {
        if config.subject_prefix.is_empty()
            || config
                .subject_prefix
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        {
            return Err(format!(
                "the NATS subject prefix {:?} must be one non-empty token without '.', '*', '>' or spaces",
                config.subject_prefix
            ));
        }
        let (events_tx, events_rx) = mpsc::channel(64);
        let client = async_nats::ConnectOptions::new()
            .name(format!("tacit-server {node_id}"))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(MAX_RECONNECT_DELAY_MS))
            })
            .event_callback(move |event| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.try_send(event);
                }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| format!("the NATS address is not usable: {e}"))?;
        let shared = Arc::new(Shared {
            local: LocalNotifier::default(),
            client,
            prefix: config.subject_prefix.clone(),
            followed: Mutex::new(HashSet::new()),
        });
        let (publish, publish_rx) = mpsc::channel(PUBLISH_BUFFER);
        tokio::spawn(publish_loop(shared.clone(), publish_rx));
        tokio::spawn(watch_connection(shared.clone(), events_rx));
        Ok(NatsNotifier { shared, publish })
    }
}

impl Notifier for NatsNotifier {
    fn notify(&self, device: DeviceKey) {
        self.shared.local.notify(device);
        // A full buffer means NATS has been unreachable for a while; the wake-up of every local
        // connection on reconnect covers what is dropped here.
        let _ = self.publish.try_send(device);
    }

    fn push(&self, device: DeviceKey, push: &Push) -> bool {
        if !self.shared.local.push(device, push) {
            return false;
        }
        // The device may also be connected to another node.
        let _ = self.publish.try_send(device);
        true
    }

    fn subscribe(&self, device: DeviceKey) -> Mailbox {
        // Receiver first, then the interest: the interest check below sees it either way round.
        let receiver = self.shared.local.subscribe(device);
        let first = self
            .shared
            .followed
            .lock()
            .map(|mut set| set.insert(device))
            .unwrap_or(false);
        if first {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(follow(self.shared.clone(), device));
                }
                Err(_) => tracing::warn!("no runtime to follow a device over NATS"),
            }
        }
        receiver
    }
}

/// Publishes queued notices, one empty message per device notice.
async fn publish_loop(shared: Arc<Shared>, mut queue: mpsc::Receiver<DeviceKey>) {
    while let Some(device) = queue.recv().await {
        if let Err(e) = shared
            .client
            .publish(shared.subject(device), "".into())
            .await
        {
            tracing::debug!("NATS publish failed: {e}");
        }
    }
}

/// Relays NATS notices for `device` to its local connections while it has any.
async fn follow(shared: Arc<Shared>, device: DeviceKey) {
    let mut subscription = match shared.client.subscribe(shared.subject(device)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("NATS subscription failed: {e}");
            if let Ok(mut set) = shared.followed.lock() {
                set.remove(&device);
            }
            return;
        }
    };
    // A notice published before the subscription was in place would be missed: read once more.
    shared.local.notify(device);
    let mut check = tokio::time::interval(Duration::from_secs(INTEREST_CHECK_SECS));
    check.tick().await;
    loop {
        tokio::select! {
            notice = subscription.next() => match notice {
                Some(_) => shared.local.notify(device),
                None => break,
            },
            _ = check.tick() => {
                if stop_following_if_idle(&shared, device) {
                    let _ = subscription.unsubscribe().await;
                    return;
                }
            }
        }
    }
    if let Ok(mut set) = shared.followed.lock() {
        set.remove(&device);
    }
}

/// Forgets `device` if no local connection follows it; checked under the set's lock, so a
/// connection arriving meanwhile either is seen here or starts a new subscription.
fn stop_following_if_idle(shared: &Shared, device: DeviceKey) -> bool {
    let Ok(mut set) = shared.followed.lock() else {
        return false;
    };
    if shared.local.has_receivers(device) {
        return false;
    }
    set.remove(&device);
    true
}

/// Logs NATS outages once each and wakes every local connection when NATS is back.
async fn watch_connection(shared: Arc<Shared>, mut events: mpsc::Receiver<async_nats::Event>) {
    let mut down = false;
    let mut connected_once = false;
    while let Some(event) = events.recv().await {
        match event {
            async_nats::Event::Connected => {
                if std::mem::replace(&mut down, false) {
                    tracing::info!("NATS is reachable again; cross-node pushes resumed");
                } else if !connected_once {
                    tracing::info!("connected to NATS");
                }
                connected_once = true;
                // Notices sent while the connection was down are lost: re-read every queue.
                shared.local.notify_all();
            }
            async_nats::Event::Disconnected | async_nats::Event::ClientError(_) => {
                if !std::mem::replace(&mut down, true) {
                    tracing::warn!(
                        "NATS is unreachable ({event}); serving on, with pushes between nodes paused until it is back (messages wait in the database)"
                    );
                }
            }
            other => tracing::debug!("NATS: {other}"),
        }
    }
}
