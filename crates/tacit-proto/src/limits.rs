//! Protocol-wide bounds. Servers may configure lower frame limits; none may be exceeded.

/// Largest frame either side accepts by default, in bytes.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Largest MLS message (commit, application message) in a frame, in bytes.
pub const MAX_MLS_MESSAGE_BYTES: usize = 512 * 1024;
/// Largest Welcome in a frame, in bytes.
pub const MAX_WELCOME_BYTES: usize = 768 * 1024;
/// Largest single KeyPackage, in bytes.
pub const MAX_KEY_PACKAGE_BYTES: usize = 4 * 1024;
/// Most one-time KeyPackages in one upload.
pub const MAX_KEY_PACKAGES_PER_UPLOAD: usize = 100;
/// Longest handle, in bytes. Handles are 1..=32 of `a-z`, `0-9`, `_`, `-`, `.`.
pub const MAX_HANDLE_BYTES: usize = 32;
/// Largest encoded device certificate, in bytes.
pub const MAX_CERTIFICATE_BYTES: usize = 512;
/// Longest MLS group id, in bytes.
pub const MAX_GROUP_ID_BYTES: usize = 64;
/// Most devices added or removed by one commit.
pub const MAX_ROUTING_CHANGES: usize = 10_000;
/// Longest device-link slot name, in bytes.
pub const MAX_LINK_SLOT_BYTES: usize = 32;
/// Largest device-link payload, in bytes.
pub const MAX_LINK_PAYLOAD_BYTES: usize = 8 * 1024;
/// Size of an Ed25519 public key or of an authentication nonce, in bytes.
pub const KEY_BYTES: usize = 32;
/// Size of an Ed25519 signature, in bytes.
pub const SIGNATURE_BYTES: usize = 64;
