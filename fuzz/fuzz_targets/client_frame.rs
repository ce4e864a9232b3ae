//! The client-frame decoder and its field validation, as the server runs them on every binary
//! WebSocket message: `decode_client_frame` then `validate_client_frame`.
//!
//! Beyond "no panic": the decoder's promises (`tacit_fuzz::frames::check_decoder`: refusal of
//! oversized frames without allocating, the allocation bound, canonical re-encoding), and that a
//! frame which passes validation still passes after a round trip through its encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tacit_fuzz::frames::check_decoder;
use tacit_proto::validate::validate_client_frame;
use tacit_proto::{decode_client_frame, encode};

fuzz_target!(|data: &[u8]| {
    let Some(frame) = check_decoder(data, decode_client_frame) else {
        return;
    };
    let verdict = validate_client_frame(&frame);
    if verdict.is_ok() {
        let bytes = encode(&frame);
        let again = decode_client_frame(&bytes, bytes.len());
        assert_eq!(again.map(|f| validate_client_frame(&f)), Ok(Ok(())));
    }
});
