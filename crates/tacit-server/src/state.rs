//! State shared by every connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::addrlimit::{AddressLimiter, AddressRefusal};
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
    /// Per-address rate limits on connecting and on requests before authentication.
    pub addresses: AddressLimiter,
    /// Connections open and not authenticated (see [`UnauthenticatedSlot`]).
    pub unauthenticated: AtomicUsize,
    /// Connection ids (for the link relay and logs).
    pub next_connection: AtomicU64,
    /// Becomes true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Held, never sent on: its receiver learns that every holder of this state (connections,
    /// the router) is gone when the channel closes.
    #[allow(dead_code)]
    pub alive: tokio::sync::mpsc::Sender<()>,
}

impl AppState {
    /// The state of a server on `store`, with no connection yet.
    pub fn new(
        store: Arc<dyn Store>,
        notifier: Arc<dyn Notifier>,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
        alive: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        AppState {
            store,
            notifier,
            addresses: AddressLimiter::new(
                limits.unauthenticated_per_sec_per_address,
                limits.unauthenticated_burst_per_address,
                limits.max_tracked_addresses,
            ),
            limits,
            links: LinkSlots::default(),
            buckets: Default::default(),
            unauthenticated: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
            shutdown,
            alive,
        }
    }

    /// Takes a per-address token for something done before authentication (a new connection,
    /// a request); Err says why not and in how many milliseconds to retry.
    pub fn take_address_token(&self, ip: IpAddr) -> Result<(), AddressRefusal> {
        self.addresses.take_at(ip, Instant::now())
    }

    /// Counts one more unauthenticated connection, unless `max_unauthenticated_connections`
    /// are already open.
    pub fn open_unauthenticated(self: &Arc<Self>) -> Option<UnauthenticatedSlot> {
        let max = self.limits.max_unauthenticated_connections;
        let before = self.unauthenticated.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(UnauthenticatedSlot(self.clone()))
    }
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

/// One unauthenticated connection counted in [`AppState::unauthenticated`]; dropping it (on
/// authentication or when the connection ends) uncounts it.
pub struct UnauthenticatedSlot(Arc<AppState>);

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        self.0.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}
