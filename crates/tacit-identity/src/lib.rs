//! Who is who in Tacit: user identity keys, device certificates, the device's authentication
//! signature, and safety numbers.
//!
//! A user has one long-term Ed25519 *identity key*. Each device has its own Ed25519 key (also its
//! MLS signature key) and a [`DeviceCertificate`] — (handle, device id, device key) signed by the
//! identity key — so that contacts accept a new device without re-verifying, and a server cannot
//! invent one. Both the server (which checks certificates at registration) and the client core
//! (which checks the certificate of every MLS leaf) use this crate; it does no I/O.
#![forbid(unsafe_code)]

mod certificate;
mod error;
mod keys;
mod safety_number;

pub use certificate::{DeviceCertificate, VerifiedCertificate};
pub use error::IdentityError;
pub use keys::{sign_auth, verify_auth, DeviceKeyPair, IdentityKeyPair, PublicKey};
pub use safety_number::SafetyNumber;
