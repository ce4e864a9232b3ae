//! The Tacit wire schema and its encoding; nothing else.
//!
//! The schema lives in `proto/tacit.proto` (Protocol Buffers, proto3) and is documented in
//! `docs/protocol.md`. This crate compiles it into Rust types ([`v1`]) and adds the checks every
//! receiver must make: [`decode_client_frame`] and [`decode_server_frame`] refuse a frame longer
//! than the caller's limit *before* decoding anything, and [`validate`] bounds every field once it
//! is decoded. Nothing here does I/O.
#![forbid(unsafe_code)]

mod codec;
mod kinds;
pub mod limits;
pub mod validate;

pub use codec::{
    auth_transcript, decode_client_frame, decode_server_frame, encode, DecodeError, AUTH_CONTEXT,
    CERT_CONTEXT,
};

/// Generated types for protocol version 1 (from `proto/tacit.proto`).
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tacit.v1.rs"));
}
