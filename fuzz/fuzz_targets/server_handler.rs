//! The server's frame handler, as a live connection runs it on every binary WebSocket message
//! (decode with the pre- or post-authentication frame limit, the per-address rate, validation,
//! then the unauthenticated or authenticated dispatch), on a real in-memory SQLite store: a
//! fresh server and connection per input, fed the input's frames in order
//! (`tacit_fuzz::handler::HandlerInput`; optionally signed in first with a valid registration).
//!
//! Beyond "no panic":
//! - every frame the server sends decodes;
//! - before authentication, a frame over `max_unauthenticated_frame_bytes` is answered
//!   FRAME_TOO_LARGE and costs almost no allocation (it is not decoded);
//! - handling a frame allocates at most the decoder's bound for its length plus 1 MiB;
//! - nothing is pushed from a device queue to a connection that has not signed in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tacit_fuzz::handler::{registration, HandlerInput, NONCE};
use tacit_fuzz::memory::peak_bytes_during;
use tacit_proto::decode_server_frame;
use tacit_proto::limits::max_decode_alloc_bytes;
use tacit_proto::v1::{server_frame::Body as Resp, ErrorCode};
use tacit_server::fuzzing::FrameHandler;
use tacit_server::Limits;

/// What handling a frame may allocate beyond decoding it: the answer, the store's and the
/// runtime's bookkeeping.
const HANDLING_BYTES: usize = 1 << 20;
/// What refusing an oversized frame may allocate: the error frame and rate-limit bookkeeping.
const REFUSAL_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let input = HandlerInput::from_bytes(data);
    let limits = Limits::default();
    let Ok(mut handler) = FrameHandler::new(limits.clone(), NONCE) else {
        panic!("cannot start an in-memory server");
    };
    if input.register_first {
        let answers = handler.handle(&registration());
        assert!(
            handler.authenticated(),
            "the seed registration signs in: {answers:?}"
        );
    }
    for frame in &input.frames {
        if handler.closed() {
            break;
        }
        let authenticated = handler.authenticated();
        let limit = if authenticated {
            limits.max_frame_bytes
        } else {
            limits.max_unauthenticated_frame_bytes
        };
        let (answers, allocated) = peak_bytes_during(|| handler.handle(frame));
        let decoded: Vec<_> = answers
            .iter()
            .map(|a| match decode_server_frame(a, usize::MAX) {
                Ok(f) => f,
                Err(e) => panic!("the server sent a frame that does not decode: {e}"),
            })
            .collect();
        if frame.len() > limit {
            assert!(
                allocated <= REFUSAL_BYTES,
                "refusing a {}-byte frame allocated {allocated} bytes",
                frame.len()
            );
            assert!(
                decoded.iter().any(|f| matches!(
                    &f.body,
                    Some(Resp::Error(e)) if e.code == ErrorCode::FrameTooLarge as i32
                        || e.code == ErrorCode::RateLimited as i32
                )),
                "an oversized frame gets FRAME_TOO_LARGE: {decoded:?}"
            );
        } else {
            let bound = max_decode_alloc_bytes(frame.len()) + HANDLING_BYTES;
            assert!(
                allocated <= bound,
                "handling a {}-byte frame allocated {allocated} bytes, more than {bound}",
                frame.len()
            );
        }
        if !handler.authenticated() {
            assert!(
                !decoded.iter().any(|f| matches!(
                    f.body,
                    Some(Resp::Envelope(_)) | Some(Resp::QueueDrained(_))
                )),
                "pushed a queue to an unauthenticated connection: {decoded:?}"
            );
        }
    }
});
