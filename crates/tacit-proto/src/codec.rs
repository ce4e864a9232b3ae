//! Frame encoding and bounded decoding.

use prost::Message;

use crate::v1::{ClientFrame, ServerFrame};

/// Domain separator for the authentication transcript.
pub const AUTH_CONTEXT: &[u8] = b"tacit-auth-v1";
/// Domain separator for device-certificate signatures.
pub const CERT_CONTEXT: &[u8] = b"tacit-device-cert-v1";

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame is longer than the receiver accepts; nothing was decoded.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length of the refused frame.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The bytes are not a valid frame of this schema.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame decoded but carries no body.
    #[error("frame has no body")]
    Empty,
}

/// Encodes any schema message to its protobuf bytes.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes a client frame, refusing it before any decoding (and any allocation) if it exceeds
/// `limit` bytes, or if it carries no body. Memory: see [`crate::limits::max_decode_alloc_bytes`].
/// Field bounds are checked separately by [`crate::validate::validate_client_frame`].
pub fn decode_client_frame(bytes: &[u8], limit: usize) -> Result<ClientFrame, DecodeError> {
    check_len(bytes, limit)?;
    let frame = ClientFrame::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if frame.body.is_none() {
        return Err(DecodeError::Empty);
    }
    Ok(frame)
}

/// Decodes a server frame, refusing it before any decoding (and any allocation) if it exceeds
/// `limit` bytes, or if it carries no body. Memory: see [`crate::limits::max_decode_alloc_bytes`].
pub fn decode_server_frame(bytes: &[u8], limit: usize) -> Result<ServerFrame, DecodeError> {
    check_len(bytes, limit)?;
    let frame = ServerFrame::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if frame.body.is_none() {
        return Err(DecodeError::Empty);
    }
    Ok(frame)
}

fn check_len(bytes: &[u8], limit: usize) -> Result<(), DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    Ok(())
}

/// The bytes a device signs to authenticate: context, nonce, handle and device id, each
/// length-prefixed so that no two different inputs give the same transcript.
pub fn auth_transcript(nonce: &[u8], handle: &str, device_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUTH_CONTEXT.len() + nonce.len() + handle.len() + 24);
    for part in [AUTH_CONTEXT, nonce, handle.as_bytes()] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&device_id.to_be_bytes());
    out
}
