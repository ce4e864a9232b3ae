//! The async Tacit client: one WebSocket connection per device, driving the sans-IO
//! [`tacit_core::Device`]. It authenticates with the device key, keeps an outbox that survives
//! restarts, retries commits that lost an epoch race after catching up, tops up KeyPackages,
//! and acknowledges each delivery only after its effect is committed locally.
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod profile;
pub mod transport;

pub use client::{Client, DeviceInfo, RemovedDevice, MAX_COMMIT_ATTEMPTS};
pub use error::{ClientError, Result};
pub use transport::{Connection, TlsOptions};
