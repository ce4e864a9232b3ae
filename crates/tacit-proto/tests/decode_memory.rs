//! The decoders' memory promise (`limits::max_decode_alloc_bytes`), measured with a counting
//! allocator on the frames that cost the most memory per byte: long runs of empty elements of
//! every repeated field, sized just past a power of two (where a growing `Vec` holds its old and
//! new buffers at once), and the largest single fields.
//!
//! One test in this file on purpose: the allocator counts the whole process, so nothing else may
//! run beside it.
#![allow(clippy::unwrap_used)]

use peak_alloc::PeakAlloc;
use prost::encoding::{encode_key, encode_varint, WireType};
use tacit_proto::limits::{max_decode_alloc_bytes, MAX_FRAME_BYTES};
use tacit_proto::{decode_client_frame, decode_server_frame};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

fn peak_bytes_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let out = f();
    (out, ALLOCATOR.peak_usage().saturating_sub(before))
}

fn field(number: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_key(number, WireType::LengthDelimited, &mut out);
    encode_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

/// A frame whose body (field `body`) repeats field `element` `count` times, empty.
fn empty_elements(body: u32, element: u32, count: usize) -> Vec<u8> {
    field(body, &field(element, &[]).repeat(count))
}

#[test]
fn decoding_stays_within_the_promised_allocation() {
    // (what, client frame?, frame)
    let mut cases: Vec<(String, bool, Vec<u8>)> = Vec::new();
    for count in [1, 5, 1025, 16_385, 131_073, 262_145] {
        for (what, client, body, element) in [
            ("send_commit.added", true, 31, 5),
            ("send_commit.removed", true, 31, 6),
            ("upload_key_packages.one_time", true, 20, 1),
            ("key_packages_claimed.key_packages", false, 20, 3),
            ("user_info.device_certificates", false, 21, 3),
            ("device_list.device_certificates", false, 22, 1),
            ("group_state.members", false, 34, 3),
        ] {
            cases.push((
                format!("{count} empty {what}"),
                client,
                empty_elements(body, element, count),
            ));
        }
        // Packed device ids: one byte each.
        cases.push((
            format!("{count} packed claim_key_packages.exclude_device_ids"),
            true,
            field(21, &field(2, &vec![0; count])),
        ));
    }
    cases.push((
        "largest MLS message".into(),
        true,
        field(32, &field(2, &vec![7; 512 * 1024])),
    ));
    cases.push((
        "largest handle text".into(),
        true,
        field(22, &field(1, &vec![b'a'; 512 * 1024])),
    ));

    for (what, client, frame) in &cases {
        assert!(
            frame.len() <= MAX_FRAME_BYTES,
            "{what}: test frame too long"
        );
        let (decoded, allocated) = if *client {
            peak_bytes_during(|| decode_client_frame(frame, MAX_FRAME_BYTES).map(drop))
        } else {
            peak_bytes_during(|| decode_server_frame(frame, MAX_FRAME_BYTES).map(drop))
        };
        assert_eq!(decoded, Ok(()), "{what}");
        if frame.len() > 1000 {
            // The meter sees the decoder: what was decoded is at least half the frame's size.
            assert!(
                allocated >= frame.len() / 2,
                "{what}: only {allocated} bytes counted"
            );
        }
        let bound = max_decode_alloc_bytes(frame.len());
        assert!(
            allocated <= bound,
            "{what}: {} bytes took {allocated} bytes to decode, over the promised {bound}",
            frame.len()
        );

        let (refused, allocated) = peak_bytes_during(|| {
            decode_client_frame(frame, frame.len() - 1).is_err()
                && decode_server_frame(frame, frame.len() - 1).is_err()
        });
        assert!(refused, "{what}");
        assert_eq!(
            allocated, 0,
            "{what}: refusing an oversized frame allocated"
        );
    }
}
