//! State shared by every connection.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::config::Limits;
use crate::link::LinkSlots;
use crate::notifier::Notifier;
use crate::ratelimit::TokenBucket;
use crate::store::{DeviceKey, Store, StoreError};

/// Everything a connection needs.
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Wake-ups for connected devices.
    pub notifier: Arc<dyn Notifier>,
    /// Limits.
    pub limits: Limits,
    /// Device-link relay slots.
    pub links: LinkSlots,
    /// Per-device rate limits (kept across reconnects).
    pub buckets: Mutex<HashMap<DeviceKey, TokenBucket>>,
    /// Connection ids (for the link relay and logs).
    pub next_connection: AtomicU64,
    /// Becomes true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Held, never sent on: its receiver learns that every holder of this state (connections,
    /// delivery tasks, the router) is gone when the channel closes.
    #[allow(dead_code)]
    pub alive: tokio::sync::mpsc::Sender<()>,
}

impl AppState {
    /// Runs a store operation off the async runtime.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::Db(format!("storage task failed: {e}")))?
    }

    /// Takes a rate-limit token for `device`; Err carries milliseconds to wait.
    pub fn take_token(&self, device: DeviceKey) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        buckets
            .entry(device)
            .or_insert_with(|| {
                TokenBucket::new(
                    self.limits.messages_per_sec_per_device,
                    self.limits.burst_per_device,
                )
            })
            .take_at(Instant::now())
    }
}
