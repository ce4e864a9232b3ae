//! Property tests: every frame encodes and decodes to itself, and arbitrary bytes never panic
//! the decoder.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tacit_proto::v1::{client_frame, server_frame, *};
use tacit_proto::{decode_client_frame, decode_server_frame, encode, DecodeError};

fn address() -> impl Strategy<Value = DeviceAddress> {
    ("[a-z][a-z0-9_.-]{0,31}", any::<u64>())
        .prop_map(|(handle, device_id)| DeviceAddress { handle, device_id })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn client_body() -> impl Strategy<Value = client_frame::Body> {
    prop_oneof![
        (address(), bytes(80)).prop_map(|(d, s)| client_frame::Body::Authenticate(Authenticate {
            version: ProtocolVersion::V1 as i32,
            device: Some(d),
            signature: s
        })),
        (
            bytes(64),
            any::<u64>(),
            bytes(300),
            bytes(300),
            proptest::collection::vec(address(), 0..4)
        )
            .prop_map(
                |(g, epoch, commit, welcome, added)| client_frame::Body::SendCommit(SendCommit {
                    group_id: g,
                    epoch,
                    commit,
                    welcome,
                    added,
                    removed: vec![]
                })
            ),
        (bytes(64), bytes(500)).prop_map(|(g, m)| client_frame::Body::SendMessage(SendMessage {
            group_id: g,
            message: m
        })),
        any::<u64>().prop_map(|up_to_seq| client_frame::Body::Ack(Ack { up_to_seq })),
        proptest::collection::vec(bytes(200), 0..5).prop_map(|one_time| {
            client_frame::Body::UploadKeyPackages(UploadKeyPackages {
                one_time,
                last_resort: vec![7],
            })
        }),
    ]
}

fn server_body() -> impl Strategy<Value = server_frame::Body> {
    prop_oneof![
        (
            any::<u64>(),
            1i32..4,
            bytes(64),
            address(),
            bytes(500),
            any::<u64>()
        )
            .prop_map(|(seq, kind, group_id, sender, payload, t)| {
                server_frame::Body::Envelope(Envelope {
                    seq,
                    kind,
                    group_id,
                    sender: Some(sender),
                    payload,
                    server_time_ms: t,
                })
            }),
        (1i32..19, ".{0,40}", any::<u64>()).prop_map(|(code, message, epoch)| {
            server_frame::Body::Error(Error {
                code,
                message,
                retry_after_ms: 0,
                current_epoch: epoch,
            })
        }),
        bytes(32).prop_map(|nonce| server_frame::Body::Challenge(Challenge {
            version: ProtocolVersion::V1 as i32,
            nonce
        })),
    ]
}

proptest! {
    #[test]
    fn client_frames_round_trip(request_id in any::<u64>(), body in client_body()) {
        let frame = ClientFrame { request_id, body: Some(body) };
        let bytes = encode(&frame);
        prop_assert_eq!(decode_client_frame(&bytes, bytes.len()).unwrap(), frame);
    }

    #[test]
    fn server_frames_round_trip(request_id in any::<u64>(), body in server_body()) {
        let frame = ServerFrame { request_id, body: Some(body) };
        let bytes = encode(&frame);
        prop_assert_eq!(decode_server_frame(&bytes, bytes.len()).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(2048)) {
        let _ = decode_client_frame(&data, 4096);
        let _ = decode_server_frame(&data, 4096);
    }

    #[test]
    fn oversized_frames_refused_before_decoding(extra in 1usize..100) {
        let data = vec![0u8; 100 + extra];
        prop_assert_eq!(
            decode_client_frame(&data, 100),
            Err(DecodeError::TooLarge { len: 100 + extra, limit: 100 })
        );
    }
}
