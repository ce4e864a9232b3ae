//! Property tests for every encoder/decoder pair of the wire schema: frames of every kind (client
//! and server) and every end-to-end payload encode and decode to themselves; arbitrary and
//! mutated bytes never panic the decoders or validation; the authentication transcript is
//! injective.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost::Message;
use tacit_proto::v1::{client_frame::Body as Req, server_frame::Body as Resp, *};
use tacit_proto::validate::validate_client_frame;
use tacit_proto::{auth_transcript, decode_client_frame, decode_server_frame, encode, DecodeError};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Any text, not only valid handles: the decoder must carry whatever the encoder wrote.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9_.-]{0,31}", ".{0,40}"]
}

fn address() -> impl Strategy<Value = DeviceAddress> {
    (text(), any::<u64>()).prop_map(|(handle, device_id)| DeviceAddress { handle, device_id })
}

fn addresses() -> impl Strategy<Value = Vec<DeviceAddress>> {
    proptest::collection::vec(address(), 0..5)
}

/// One arm per kind of client frame, in the order of [`client_kind`].
fn client_body() -> impl Strategy<Value = Req> {
    prop_oneof![
        (any::<i32>(), proptest::option::of(address()), bytes(80)).prop_map(
            |(version, device, signature)| Req::Authenticate(Authenticate {
                version,
                device,
                signature
            })
        ),
        (
            any::<i32>(),
            proptest::option::of(address()),
            bytes(40),
            bytes(200),
            bytes(80)
        )
            .prop_map(
                |(version, device, identity_key, device_certificate, signature)| {
                    Req::RegisterAccount(RegisterAccount {
                        version,
                        device,
                        identity_key,
                        device_certificate,
                        signature,
                    })
                }
            ),
        (
            any::<i32>(),
            proptest::option::of(address()),
            bytes(200),
            bytes(80)
        )
            .prop_map(|(version, device, device_certificate, signature)| {
                Req::RegisterDevice(RegisterDevice {
                    version,
                    device,
                    device_certificate,
                    signature,
                })
            }),
        (proptest::collection::vec(bytes(200), 0..5), bytes(200)).prop_map(
            |(one_time, last_resort)| Req::UploadKeyPackages(UploadKeyPackages {
                one_time,
                last_resort
            })
        ),
        (text(), proptest::collection::vec(any::<u64>(), 0..8)).prop_map(
            |(handle, exclude_device_ids)| Req::ClaimKeyPackages(ClaimKeyPackages {
                handle,
                exclude_device_ids
            })
        ),
        text().prop_map(|handle| Req::LookupUser(LookupUser { handle })),
        Just(Req::ListDevices(ListDevices {})),
        any::<u64>().prop_map(|device_id| Req::RemoveDevice(RemoveDevice { device_id })),
        bytes(64).prop_map(|group_id| Req::CreateGroup(CreateGroup { group_id })),
        (
            bytes(64),
            any::<u64>(),
            bytes(300),
            bytes(300),
            addresses(),
            addresses()
        )
            .prop_map(|(group_id, epoch, commit, welcome, added, removed)| {
                Req::SendCommit(SendCommit {
                    group_id,
                    epoch,
                    commit,
                    welcome,
                    added,
                    removed,
                })
            }),
        (bytes(64), bytes(500))
            .prop_map(|(group_id, message)| Req::SendMessage(SendMessage { group_id, message })),
        any::<u64>().prop_map(|up_to_seq| Req::Ack(Ack { up_to_seq })),
        bytes(64).prop_map(|group_id| Req::FetchGroupState(FetchGroupState { group_id })),
        text().prop_map(|slot| Req::LinkOpen(LinkOpen { slot })),
        (text(), any::<bool>(), bytes(300)).prop_map(|(slot, from_initiator, payload)| {
            Req::LinkSend(LinkSend {
                slot,
                from_initiator,
                payload,
            })
        }),
        (text(), any::<bool>()).prop_map(|(slot, for_initiator)| Req::LinkReceive(LinkReceive {
            slot,
            for_initiator
        })),
        Just(Req::Ping(Ping {})),
    ]
}

/// One arm per kind of server frame, in the order of [`server_kind`].
fn server_body() -> impl Strategy<Value = Resp> {
    prop_oneof![
        (any::<i32>(), bytes(40))
            .prop_map(|(version, nonce)| Resp::Challenge(Challenge { version, nonce })),
        (any::<i32>(), ".{0,60}", any::<u64>(), any::<u64>()).prop_map(
            |(code, message, retry_after_ms, current_epoch)| Resp::Error(Error {
                code,
                message,
                retry_after_ms,
                current_epoch,
            })
        ),
        (proptest::option::of(address()), any::<u32>(), any::<bool>()).prop_map(
            |(device, left, last_resort)| Resp::Authenticated(Authenticated {
                device,
                one_time_key_packages_left: left,
                has_last_resort_key_package: last_resort,
            })
        ),
        Just(Resp::Done(Done {})),
        (
            text(),
            bytes(40),
            proptest::collection::vec((any::<u64>(), bytes(200), any::<bool>()), 0..4)
        )
            .prop_map(|(handle, identity_key, kps)| {
                Resp::KeyPackagesClaimed(KeyPackagesClaimed {
                    handle,
                    identity_key,
                    key_packages: kps
                        .into_iter()
                        .map(|(device_id, key_package, last_resort)| ClaimedKeyPackage {
                            device_id,
                            key_package,
                            last_resort,
                        })
                        .collect(),
                })
            }),
        (
            text(),
            bytes(40),
            proptest::collection::vec(bytes(200), 0..4)
        )
            .prop_map(
                |(handle, identity_key, device_certificates)| Resp::UserInfo(UserInfo {
                    handle,
                    identity_key,
                    device_certificates,
                })
            ),
        proptest::collection::vec(bytes(200), 0..4).prop_map(|device_certificates| {
            Resp::DeviceList(DeviceList {
                device_certificates,
            })
        }),
        any::<u64>().prop_map(|epoch| Resp::CommitAccepted(CommitAccepted { epoch })),
        Just(Resp::MessageAccepted(MessageAccepted {})),
        (
            any::<u64>(),
            any::<i32>(),
            bytes(64),
            proptest::option::of(address()),
            bytes(500),
            any::<u64>()
        )
            .prop_map(|(seq, kind, group_id, sender, payload, server_time_ms)| {
                Resp::Envelope(Envelope {
                    seq,
                    kind,
                    group_id,
                    sender,
                    payload,
                    server_time_ms,
                })
            }),
        any::<u64>().prop_map(|last_seq| Resp::QueueDrained(QueueDrained { last_seq })),
        (bytes(64), any::<u64>(), addresses()).prop_map(|(group_id, epoch, members)| {
            Resp::GroupState(GroupState {
                group_id,
                epoch,
                members,
            })
        }),
        bytes(300).prop_map(|payload| Resp::LinkPayload(LinkPayload { payload })),
        Just(Resp::Pong(Pong {})),
    ]
}

/// The position of a client frame's kind among [`client_body`]'s arms. Exhaustive: a new kind
/// of frame does not compile until it has a strategy here.
fn client_kind(body: &Req) -> usize {
    match body {
        Req::Authenticate(_) => 0,
        Req::RegisterAccount(_) => 1,
        Req::RegisterDevice(_) => 2,
        Req::UploadKeyPackages(_) => 3,
        Req::ClaimKeyPackages(_) => 4,
        Req::LookupUser(_) => 5,
        Req::ListDevices(_) => 6,
        Req::RemoveDevice(_) => 7,
        Req::CreateGroup(_) => 8,
        Req::SendCommit(_) => 9,
        Req::SendMessage(_) => 10,
        Req::Ack(_) => 11,
        Req::FetchGroupState(_) => 12,
        Req::LinkOpen(_) => 13,
        Req::LinkSend(_) => 14,
        Req::LinkReceive(_) => 15,
        Req::Ping(_) => 16,
    }
}

/// The position of a server frame's kind among [`server_body`]'s arms (exhaustive, as
/// [`client_kind`]).
fn server_kind(body: &Resp) -> usize {
    match body {
        Resp::Challenge(_) => 0,
        Resp::Error(_) => 1,
        Resp::Authenticated(_) => 2,
        Resp::Done(_) => 3,
        Resp::KeyPackagesClaimed(_) => 4,
        Resp::UserInfo(_) => 5,
        Resp::DeviceList(_) => 6,
        Resp::CommitAccepted(_) => 7,
        Resp::MessageAccepted(_) => 8,
        Resp::Envelope(_) => 9,
        Resp::QueueDrained(_) => 10,
        Resp::GroupState(_) => 11,
        Resp::LinkPayload(_) => 12,
        Resp::Pong(_) => 13,
    }
}

/// The kinds a strategy produces over many deterministic draws.
fn kinds_drawn<T: Debug>(strategy: impl Strategy<Value = T>, kind: fn(&T) -> usize) -> Vec<usize> {
    let mut runner = TestRunner::deterministic();
    let drawn: BTreeSet<usize> = (0..2000)
        .map(|_| kind(&strategy.new_tree(&mut runner).unwrap().current()))
        .collect();
    drawn.into_iter().collect()
}

#[test]
fn strategies_cover_every_kind_of_frame() {
    assert_eq!(
        kinds_drawn(client_body(), client_kind),
        (0..17).collect::<Vec<_>>()
    );
    assert_eq!(
        kinds_drawn(server_body(), server_kind),
        (0..14).collect::<Vec<_>>()
    );
}

/// An end-to-end payload (never seen by the server in the clear) of any type, encoded.
#[derive(Debug, Clone)]
enum Payload {
    CertificateBody(CertificateBody),
    DeviceCertificate(DeviceCertificate),
    Content(Content),
    ConversationMeta(ConversationMeta),
    LinkMessage(LinkMessage),
    LinkRequest(LinkRequest),
    LinkGrant(LinkGrant),
}

fn meta() -> impl Strategy<Value = ConversationMeta> {
    (".{0,40}", any::<bool>()).prop_map(|(name, direct)| ConversationMeta { name, direct })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (
            any::<u32>(),
            text(),
            any::<u64>(),
            bytes(40),
            bytes(40),
            any::<u64>()
        )
            .prop_map(
                |(version, handle, device_id, device_key, identity_key, issued_at_ms)| {
                    Payload::CertificateBody(CertificateBody {
                        version,
                        handle,
                        device_id,
                        device_key,
                        identity_key,
                        issued_at_ms,
                    })
                }
            ),
        (bytes(200), bytes(80)).prop_map(|(body, signature)| {
            Payload::DeviceCertificate(DeviceCertificate { body, signature })
        }),
        (
            bytes(20),
            any::<u64>(),
            proptest::option::of(prop_oneof![
                ".{0,200}".prop_map(content::Body::Text),
                meta().prop_map(content::Body::Meta),
            ])
        )
            .prop_map(|(message_id, sent_at_ms, body)| Payload::Content(Content {
                message_id,
                sent_at_ms,
                body,
            })),
        meta().prop_map(Payload::ConversationMeta),
        proptest::option::of(prop_oneof![
            bytes(40).prop_map(link_message::Body::Pake),
            bytes(300).prop_map(link_message::Body::Sealed),
        ])
        .prop_map(|body| Payload::LinkMessage(LinkMessage { body })),
        (bytes(40), any::<u64>()).prop_map(|(device_key, device_id)| {
            Payload::LinkRequest(LinkRequest {
                device_key,
                device_id,
            })
        }),
        (text(), bytes(40), bytes(200)).prop_map(
            |(handle, identity_secret, device_certificate)| Payload::LinkGrant(LinkGrant {
                handle,
                identity_secret,
                device_certificate,
            })
        ),
    ]
}

/// Encodes `message`, decodes it back and checks it is the same value and the encoding is
/// stable.
fn round_trips<M: Message + Default + PartialEq + Debug>(message: &M) -> Result<(), TestCaseError> {
    let bytes = encode(message);
    let decoded = M::decode(bytes.as_slice()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, message);
    prop_assert_eq!(encode(&decoded), bytes);
    Ok(())
}

/// Decodes `data` as a client and as a server frame; whatever decodes must round-trip, and
/// validation must give an answer.
fn decoders_hold_on(data: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(frame) = decode_client_frame(data, data.len()) {
        let _ = validate_client_frame(&frame);
        round_trips(&frame)?;
    }
    if let Ok(frame) = decode_server_frame(data, data.len()) {
        round_trips(&frame)?;
    }
    Ok(())
}

/// The parts of an authentication transcript: context, nonce, handle, device id.
type TranscriptParts = (Vec<u8>, Vec<u8>, Vec<u8>, u64);

/// Splits an authentication transcript back into its parts, following the layout
/// `auth_transcript` documents.
fn parse_transcript(mut t: &[u8]) -> Option<TranscriptParts> {
    let mut part = || {
        let (len, rest) = t.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let value = rest.get(..len)?.to_vec();
        t = &rest[len..];
        Some(value)
    };
    let (context, nonce, handle) = (part()?, part()?, part()?);
    let id: [u8; 8] = t.try_into().ok()?;
    Some((context, nonce, handle, u64::from_be_bytes(id)))
}

proptest! {
    #[test]
    fn client_frames_round_trip(request_id in any::<u64>(), body in client_body()) {
        let frame = ClientFrame { request_id, body: Some(body) };
        let bytes = encode(&frame);
        prop_assert_eq!(decode_client_frame(&bytes, bytes.len()).unwrap(), frame.clone());
        prop_assert_eq!(
            decode_client_frame(&bytes, bytes.len() - 1),
            Err(DecodeError::TooLarge { len: bytes.len(), limit: bytes.len() - 1 })
        );
        let _ = validate_client_frame(&frame);
    }

    #[test]
    fn server_frames_round_trip(request_id in any::<u64>(), body in server_body()) {
        let frame = ServerFrame { request_id, body: Some(body) };
        let bytes = encode(&frame);
        prop_assert_eq!(decode_server_frame(&bytes, bytes.len()).unwrap(), frame);
    }

    #[test]
    fn frames_without_a_body_are_refused(request_id in any::<u64>()) {
        let bytes = encode(&ClientFrame { request_id, body: None });
        prop_assert_eq!(decode_client_frame(&bytes, 64), Err(DecodeError::Empty));
        let bytes = encode(&ServerFrame { request_id, body: None });
        prop_assert_eq!(decode_server_frame(&bytes, 64), Err(DecodeError::Empty));
    }

    #[test]
    fn end_to_end_payloads_round_trip(p in payload()) {
        match p {
            Payload::CertificateBody(m) => round_trips(&m)?,
            Payload::DeviceCertificate(m) => round_trips(&m)?,
            Payload::Content(m) => round_trips(&m)?,
            Payload::ConversationMeta(m) => round_trips(&m)?,
            Payload::LinkMessage(m) => round_trips(&m)?,
            Payload::LinkRequest(m) => round_trips(&m)?,
            Payload::LinkGrant(m) => round_trips(&m)?,
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(2048)) {
        decoders_hold_on(&data)?;
        if let Ok(m) = CertificateBody::decode(data.as_slice()) { round_trips(&m)?; }
        if let Ok(m) = DeviceCertificate::decode(data.as_slice()) { round_trips(&m)?; }
        if let Ok(m) = Content::decode(data.as_slice()) { round_trips(&m)?; }
        if let Ok(m) = LinkMessage::decode(data.as_slice()) { round_trips(&m)?; }
        if let Ok(m) = LinkRequest::decode(data.as_slice()) { round_trips(&m)?; }
        if let Ok(m) = LinkGrant::decode(data.as_slice()) { round_trips(&m)?; }
    }

    /// Valid frames with bytes flipped, cut or inserted: closer to real frames than random bytes,
    /// so they reach deeper into the decoder.
    #[test]
    fn mutated_frames_never_panic(
        body in client_body(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
        insert in (any::<usize>(), bytes(8)),
    ) {
        let bytes = encode(&ClientFrame { request_id: 1, body: Some(body) });
        let mut flipped = bytes.clone();
        for (at, with) in flips {
            let at = at % flipped.len();
            flipped[at] ^= with;
        }
        let mut inserted = bytes.clone();
        let at = insert.0 % (inserted.len() + 1);
        inserted.splice(at..at, insert.1);
        for data in [flipped, bytes[..cut % bytes.len()].to_vec(), inserted] {
            decoders_hold_on(&data)?;
        }
    }

    #[test]
    fn oversized_frames_refused_before_decoding(extra in 1usize..100) {
        let data = vec![0u8; 100 + extra];
        prop_assert_eq!(
            decode_client_frame(&data, 100),
            Err(DecodeError::TooLarge { len: 100 + extra, limit: 100 })
        );
        prop_assert_eq!(
            decode_server_frame(&data, 100),
            Err(DecodeError::TooLarge { len: 100 + extra, limit: 100 })
        );
    }

    #[test]
    fn auth_transcript_parses_back(nonce in bytes(64), handle in ".{0,40}", device_id in any::<u64>()) {
        let transcript = auth_transcript(&nonce, &handle, device_id);
        prop_assert_eq!(
            parse_transcript(&transcript),
            Some((tacit_proto::AUTH_CONTEXT.to_vec(), nonce, handle.into_bytes(), device_id))
        );
    }

    #[test]
    fn auth_transcript_is_injective(
        a in (proptest::collection::vec(0u8..2, 0..3), "[ab]{0,3}", 0u64..3),
        b in (proptest::collection::vec(0u8..2, 0..3), "[ab]{0,3}", 0u64..3),
    ) {
        // Small alphabets, so that equal and shifted inputs come up often.
        let (ta, tb) = (auth_transcript(&a.0, &a.1, a.2), auth_transcript(&b.0, &b.1, b.2));
        prop_assert_eq!(ta == tb, a == b);
    }
}
