//! The Tacit client core: identities, device certificates, MLS conversations, safety numbers
//! and the encrypted local store — and no network I/O.
//!
//! A [`Device`] turns intents ("create a conversation", "add bob", "send this") into bytes for
//! the server ([`OutgoingCommit`], [`OutgoingMessage`]) and envelopes from the server into
//! [`Event`]s. Every operation runs in one local-store transaction, so OpenMLS state, history and
//! the record of what was processed always move together. The async client (`tacit-client`)
//! drives it over a WebSocket.
#![forbid(unsafe_code)]

mod config;
mod conversation;
mod credential;
mod device;
mod error;
mod events;
mod groups;
mod incoming;
pub mod link;
mod messages;
mod op;
mod records;
mod signer;
pub mod store;
#[cfg(test)]
mod testing;
mod upgrade;

pub use config::CoreConfig;
pub use conversation::{ClaimedUser, OutgoingCommit, OutgoingMessage};
pub use device::{Device, Registration};
pub use error::{CoreError, Result};
pub use events::Event;
pub use incoming::{Processed, Redeliveries};
pub use records::{Conversation, HistoryEntry, OutboxItem};
pub use tacit_identity::{PublicKey, SafetyNumber};
