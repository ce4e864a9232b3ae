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

/// Most bytes that decoding one frame may allocate per byte of the frame (see
/// [`max_decode_alloc_bytes`]).
///
/// Why this value: an element of a repeated field costs 2 bytes on the wire (tag and a zero
/// length) but a whole struct in memory — up to 40 bytes (`ClaimedKeyPackage`), 32 for a
/// `DeviceAddress` — and a growing `Vec` briefly holds its old and new buffers, 3 elements' room
/// per element at worst: 40 × 3 / 2 = 60 bytes per frame byte. A 1 MiB frame may therefore take
/// up to 64 MiB while it is decoded; `validate` then refuses most such frames (e.g. more than
/// 10,000 routing changes).
pub const DECODE_ALLOC_BYTES_PER_FRAME_BYTE: usize = 64;

/// Bytes that decoding one frame may allocate on top of the per-byte allowance: the first small
/// buffers and the text of a decoding error.
pub const DECODE_ALLOC_OVERHEAD_BYTES: usize = 4 * 1024;

/// The most bytes [`decode_client_frame`](crate::decode_client_frame) or
/// [`decode_server_frame`](crate::decode_server_frame) allocate at once while decoding a frame
/// of `frame_len` bytes, the decoded frame included. A frame refused as too large allocates
/// nothing. The fuzz targets `client_frame` and `server_frame` check this bound on every input.
pub const fn max_decode_alloc_bytes(frame_len: usize) -> usize {
    frame_len
        .saturating_mul(DECODE_ALLOC_BYTES_PER_FRAME_BYTE)
        .saturating_add(DECODE_ALLOC_OVERHEAD_BYTES)
}
