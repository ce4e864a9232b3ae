//! The checks both frame targets make, for any decoder of the shape of
//! `tacit_proto::decode_client_frame`.

use std::fmt::Debug;

use prost::Message;
use tacit_proto::limits::{max_decode_alloc_bytes, MAX_FRAME_BYTES};
use tacit_proto::{encode, DecodeError};

use crate::memory::peak_bytes_during;

/// A frame decoder: bytes and a length limit in, a frame or a refusal out.
pub type Decoder<F> = fn(&[u8], usize) -> Result<F, DecodeError>;

/// Runs `decode` on `data` and asserts what the decoder promises:
/// - a frame over the limit is refused as `TooLarge`, naming both lengths, without allocating;
/// - decoding allocates at most `max_decode_alloc_bytes(data.len())`;
/// - a decoded frame re-encodes to bytes that decode to the same frame, and encoding that frame
///   again gives the same bytes (the encoding is canonical and stable);
/// - bytes refused as `Empty` are a frame without a body, not malformed ones.
///
/// Returns the decoded frame, if any, for target-specific checks.
pub fn check_decoder<F>(data: &[u8], decode: Decoder<F>) -> Option<F>
where
    F: Message + Default + PartialEq + Debug,
{
    if let Some(limit) = data.len().checked_sub(1) {
        let (refused, allocated) = peak_bytes_during(|| decode(data, limit));
        assert_eq!(
            refused,
            Err(DecodeError::TooLarge {
                len: data.len(),
                limit
            })
        );
        assert_eq!(
            allocated, 0,
            "a frame over the limit must cost no allocation"
        );
    }

    let (decoded, allocated) = peak_bytes_during(|| decode(data, MAX_FRAME_BYTES));
    let bound = max_decode_alloc_bytes(data.len());
    assert!(
        allocated <= bound,
        "decoding {} bytes allocated {allocated} bytes, more than the promised {bound}",
        data.len()
    );

    match decoded {
        Ok(frame) => {
            let bytes = encode(&frame);
            let again = decode(&bytes, bytes.len())
                .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}"));
            assert_eq!(again, frame, "re-encoded frame decodes to another frame");
            assert_eq!(encode(&again), bytes, "encoding is not stable");
            Some(frame)
        }
        Err(DecodeError::Empty) => {
            assert!(F::decode(data).is_ok(), "refused as empty, but malformed");
            None
        }
        Err(DecodeError::Malformed(_)) => {
            assert!(
                F::decode(data).is_err(),
                "refused as malformed, but it decodes"
            );
            None
        }
        Err(DecodeError::TooLarge { .. }) => panic!("{} bytes are within the limit", data.len()),
    }
}
