//! The client's encrypted local store: one SQLite file in the profile directory.
//!
//! Every value is sealed with XChaCha20-Poly1305 under a key derived from the [`StoreKey`], with
//! the row's stored key as associated data (so values cannot be swapped between rows); every
//! logical key (group ids, public keys, handles) is replaced by an HMAC-SHA256, so neither
//! content nor who-talks-to-whom is readable from the file. Only small namespace tags and row ids
//! are in the clear. Every client operation runs in one transaction ([`LocalStore::transaction`]),
//! including all of OpenMLS's storage writes ([`MlsStorage`]), so it is all-or-nothing.

mod cipher;
mod codec;
mod db;
mod error;
mod hot;
mod items;
mod key;
mod mls_storage;
mod ring;

pub use db::{LocalStore, Namespace, StoreTx};
pub use error::StoreError;
pub use hot::Counters;
pub use items::{Item, CHUNK_BYTES};
pub use key::StoreKey;
pub use mls_storage::{MlsStorage, MlsStorageError, TxProvider};
pub use ring::{DIGEST_BYTES, RING_DIGESTS};
