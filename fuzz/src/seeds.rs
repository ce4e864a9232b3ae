//! Seed inputs: real encoded frames of every kind, end-to-end payloads, and real device
//! certificates issued with fixed keys. The fuzz targets start from these (the committed corpora
//! under `fuzz/corpus/<target>/` are written from them by `examples/write_seed_corpus.rs`), and
//! `device_certificate` uses [`known_identities`] and [`certificates`] as its ground truth.
//!
//! MLS payloads (KeyPackages, commits, Welcomes, application messages) are opaque bytes to the
//! wire decoder; the seeds carry stand-ins of realistic sizes.

use prost::Message;
use tacit_identity::{sign_auth, DeviceCertificate, DeviceKeyPair, IdentityKeyPair};
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp};
use tacit_proto::{auth_transcript, encode};

/// When every seed certificate was issued (ms since the Unix epoch).
const ISSUED_AT_MS: u64 = 1_700_000_000_000;
/// The challenge nonce the seed frames sign.
pub const NONCE: [u8; 32] = [0x4e; 32];

/// The identity keys the seed certificates are signed with, from fixed secrets. Only the fuzz
/// targets know these secrets, so no mutated input can carry a new valid signature by them.
pub fn known_identities() -> Vec<IdentityKeyPair> {
    [0x01u8, 0x02]
        .iter()
        .map(|b| IdentityKeyPair::from_secret_bytes(&[*b; 32]))
        .collect()
}

fn device_key(seed: u8) -> DeviceKeyPair {
    DeviceKeyPair::from_secret_bytes(&[seed; 32])
}

/// Every certificate the seeds contain, as (name, certificate). Issuing is deterministic
/// (Ed25519 signatures are), so these are the same bytes on every run.
pub fn certificates() -> Vec<(&'static str, DeviceCertificate)> {
    let ids = known_identities();
    vec![
        (
            "alice_device_1",
            DeviceCertificate::issue(
                &ids[0],
                "alice",
                1,
                &device_key(0x11).public(),
                ISSUED_AT_MS,
            ),
        ),
        (
            "alice_device_max",
            DeviceCertificate::issue(
                &ids[0],
                "alice",
                u64::MAX,
                &device_key(0x12).public(),
                u64::MAX,
            ),
        ),
        // Zero device id and time: proto3 leaves those fields out of the encoding.
        (
            "bob_defaults",
            DeviceCertificate::issue(&ids[1], "bob.2-x_y", 0, &device_key(0x21).public(), 0),
        ),
        (
            "longest_handle",
            DeviceCertificate::issue(
                &ids[1],
                &"z".repeat(tacit_proto::limits::MAX_HANDLE_BYTES),
                7,
                &device_key(0x22).public(),
                ISSUED_AT_MS,
            ),
        ),
    ]
}

fn address(handle: &str, device_id: u64) -> v1::DeviceAddress {
    v1::DeviceAddress {
        handle: handle.into(),
        device_id,
    }
}

fn opaque(len: usize, fill: u8) -> Vec<u8> {
    (0..len).map(|i| fill ^ (i as u8)).collect()
}

fn group_id() -> Vec<u8> {
    opaque(32, 0x67)
}

/// One client frame of every kind, valid as a client would send it.
pub fn client_frames() -> Vec<v1::ClientFrame> {
    let ids = known_identities();
    let certs = certificates();
    let alice = device_key(0x11);
    let signature = sign_auth(&alice, &NONCE, "alice", 1).to_vec();
    let version = v1::ProtocolVersion::V1 as i32;
    let bodies = vec![
        Req::Authenticate(v1::Authenticate {
            version,
            device: Some(address("alice", 1)),
            signature: signature.clone(),
        }),
        Req::RegisterAccount(v1::RegisterAccount {
            version,
            device: Some(address("alice", 1)),
            identity_key: ids[0].public().to_bytes().to_vec(),
            device_certificate: certs[0].1.as_bytes().to_vec(),
            signature: signature.clone(),
        }),
        Req::RegisterDevice(v1::RegisterDevice {
            version,
            device: Some(address("alice", u64::MAX)),
            device_certificate: certs[1].1.as_bytes().to_vec(),
            signature,
        }),
        Req::UploadKeyPackages(v1::UploadKeyPackages {
            one_time: (0..3).map(|i| opaque(300, i)).collect(),
            last_resort: opaque(300, 0xff),
        }),
        Req::ClaimKeyPackages(v1::ClaimKeyPackages {
            handle: "bob.2-x_y".into(),
            exclude_device_ids: vec![1, 2, u64::MAX],
        }),
        Req::LookupUser(v1::LookupUser {
            handle: "bob.2-x_y".into(),
        }),
        Req::ListDevices(v1::ListDevices {}),
        Req::CreateGroup(v1::CreateGroup {
            group_id: group_id(),
        }),
        Req::SendCommit(v1::SendCommit {
            group_id: group_id(),
            epoch: 3,
            commit: opaque(400, 0xc0),
            welcome: opaque(600, 0x3e),
            added: vec![address("bob.2-x_y", 0), address("carol", 9)],
            removed: vec![address("dave", 4)],
        }),
        Req::SendMessage(v1::SendMessage {
            group_id: group_id(),
            message: opaque(200, 0x5a),
        }),
        Req::Ack(v1::Ack { up_to_seq: 42 }),
        Req::FetchGroupState(v1::FetchGroupState {
            group_id: group_id(),
        }),
        Req::LinkOpen(v1::LinkOpen {
            slot: "abcd2345".into(),
        }),
        Req::LinkSend(v1::LinkSend {
            slot: "abcd2345".into(),
            from_initiator: true,
            payload: opaque(64, 0x1a),
        }),
        Req::LinkReceive(v1::LinkReceive {
            slot: "abcd2345".into(),
            for_initiator: false,
        }),
        Req::Ping(v1::Ping {}),
        // Last, so that adding it left the other seeds' request ids unchanged.
        Req::RemoveDevice(v1::RemoveDevice {
            device_id: u64::MAX,
        }),
    ];
    bodies
        .into_iter()
        .zip(1..)
        .map(|(body, request_id)| v1::ClientFrame {
            request_id,
            body: Some(body),
        })
        .collect()
}

/// One server frame of every kind, as a server would send it.
pub fn server_frames() -> Vec<v1::ServerFrame> {
    let ids = known_identities();
    let certs: Vec<Vec<u8>> = certificates()
        .iter()
        .map(|(_, c)| c.as_bytes().to_vec())
        .collect();
    let bodies = vec![
        Resp::Challenge(v1::Challenge {
            version: v1::ProtocolVersion::V1 as i32,
            nonce: NONCE.to_vec(),
        }),
        Resp::Error(v1::Error {
            code: v1::ErrorCode::EpochMovedOn as i32,
            message: "epoch moved on: fetch, merge and retry".into(),
            retry_after_ms: 250,
            current_epoch: 4,
        }),
        Resp::Authenticated(v1::Authenticated {
            device: Some(address("alice", 1)),
            one_time_key_packages_left: 17,
            has_last_resort_key_package: true,
        }),
        Resp::Done(v1::Done {}),
        Resp::KeyPackagesClaimed(v1::KeyPackagesClaimed {
            handle: "alice".into(),
            identity_key: ids[0].public().to_bytes().to_vec(),
            key_packages: vec![
                v1::ClaimedKeyPackage {
                    device_id: 1,
                    key_package: opaque(300, 1),
                    last_resort: false,
                },
                v1::ClaimedKeyPackage {
                    device_id: u64::MAX,
                    key_package: opaque(300, 2),
                    last_resort: true,
                },
            ],
        }),
        Resp::UserInfo(v1::UserInfo {
            handle: "alice".into(),
            identity_key: ids[0].public().to_bytes().to_vec(),
            device_certificates: certs[..2].to_vec(),
        }),
        Resp::DeviceList(v1::DeviceList {
            device_certificates: certs,
        }),
        Resp::CommitAccepted(v1::CommitAccepted { epoch: 4 }),
        Resp::MessageAccepted(v1::MessageAccepted {}),
        Resp::Envelope(v1::Envelope {
            seq: 7,
            kind: v1::EnvelopeKind::Message as i32,
            group_id: group_id(),
            sender: Some(address("bob.2-x_y", 0)),
            payload: opaque(200, 0x5a),
            server_time_ms: ISSUED_AT_MS,
        }),
        Resp::QueueDrained(v1::QueueDrained { last_seq: 7 }),
        Resp::GroupState(v1::GroupState {
            group_id: group_id(),
            epoch: 4,
            members: vec![address("alice", 1), address("bob.2-x_y", 0)],
        }),
        Resp::LinkPayload(v1::LinkPayload {
            payload: opaque(64, 0x1b),
        }),
        Resp::Pong(v1::Pong {}),
    ];
    bodies
        .into_iter()
        .zip(1..)
        .map(|(body, request_id)| v1::ServerFrame {
            request_id,
            body: Some(body),
        })
        .collect()
}

/// The end-to-end payload types (never seen by the server in the clear), each tagged with the
/// selector byte that `end_to_end_payload` reads first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `CertificateBody`.
    CertificateBody = 0,
    /// `DeviceCertificate` (the outer wrapper).
    DeviceCertificate = 1,
    /// `Content`, the plaintext of an MLS application message.
    Content = 2,
    /// `ConversationMeta`.
    ConversationMeta = 3,
    /// `LinkMessage`, relayed during device linking.
    LinkMessage = 4,
    /// `LinkRequest`, sealed inside a `LinkMessage`.
    LinkRequest = 5,
    /// `LinkGrant`, sealed inside a `LinkMessage`.
    LinkGrant = 6,
}

impl Payload {
    /// Every payload type, in selector order.
    pub const ALL: [Payload; 7] = [
        Payload::CertificateBody,
        Payload::DeviceCertificate,
        Payload::Content,
        Payload::ConversationMeta,
        Payload::LinkMessage,
        Payload::LinkRequest,
        Payload::LinkGrant,
    ];

    /// The payload type a selector byte stands for (any byte selects one).
    pub fn from_selector(byte: u8) -> Payload {
        Self::ALL[usize::from(byte) % Self::ALL.len()]
    }

    /// The selector byte.
    pub fn selector(self) -> u8 {
        self as u8
    }
}

/// Real encodings of every end-to-end payload type, as (name, type, encoded message).
pub fn end_to_end_payloads() -> Vec<(&'static str, Payload, Vec<u8>)> {
    let cert = certificates().remove(0).1;
    let outer = v1::DeviceCertificate::decode(cert.as_bytes()).unwrap_or_default();
    let content = |body| v1::Content {
        message_id: opaque(16, 0x9d),
        sent_at_ms: ISSUED_AT_MS,
        body: Some(body),
    };
    let meta = v1::ConversationMeta {
        name: "weekend plans ✓".into(),
        direct: false,
    };
    vec![
        (
            "certificate_body",
            Payload::CertificateBody,
            outer.body.clone(),
        ),
        (
            "device_certificate",
            Payload::DeviceCertificate,
            cert.as_bytes().to_vec(),
        ),
        (
            "content_text",
            Payload::Content,
            encode(&content(v1::content::Body::Text(
                "see you at 8 — ok?".into(),
            ))),
        ),
        (
            "content_meta",
            Payload::Content,
            encode(&content(v1::content::Body::Meta(meta.clone()))),
        ),
        (
            "conversation_meta",
            Payload::ConversationMeta,
            encode(&meta),
        ),
        (
            "link_pake",
            Payload::LinkMessage,
            encode(&v1::LinkMessage {
                body: Some(v1::link_message::Body::Pake(opaque(33, 0x77))),
            }),
        ),
        (
            "link_sealed",
            Payload::LinkMessage,
            encode(&v1::LinkMessage {
                body: Some(v1::link_message::Body::Sealed(opaque(24 + 80, 0x78))),
            }),
        ),
        (
            "link_request",
            Payload::LinkRequest,
            encode(&v1::LinkRequest {
                device_key: device_key(0x13).public().to_bytes().to_vec(),
                device_id: 3,
            }),
        ),
        (
            "link_grant",
            Payload::LinkGrant,
            encode(&v1::LinkGrant {
                handle: "alice".into(),
                identity_secret: opaque(32, 0x5e),
                device_certificate: cert.as_bytes().to_vec(),
            }),
        ),
        (
            "certificate_by_other_identity",
            Payload::DeviceCertificate,
            certificates()[2].1.as_bytes().to_vec(),
        ),
    ]
}

/// Authentication inputs for `auth_signature`: (name, encoded input). The input layout is the
/// one that target reads: see [`AuthInput`].
pub fn auth_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let alice = device_key(0x11);
    let genuine = AuthInput {
        nonce: NONCE.to_vec(),
        handle: "alice".into(),
        device_id: 1,
        signature: sign_auth(&alice, &NONCE, "alice", 1).to_vec(),
        other_nonce: NONCE.to_vec(),
        other_handle: "alicf".into(),
        other_device_id: 1,
    };
    let shifted = AuthInput {
        // The same bytes split differently: a transcript without length prefixes would collide.
        nonce: NONCE[..31].to_vec(),
        handle: "alice".into(),
        device_id: 1,
        signature: vec![0; 64],
        other_nonce: NONCE.to_vec(),
        other_handle: "lice".into(),
        other_device_id: 1,
    };
    vec![
        ("genuine", genuine.to_bytes()),
        ("shifted", shifted.to_bytes()),
    ]
}

/// The device key whose signatures `auth_signature` checks (its secret is fixed, like the seed
/// identities').
pub fn auth_device() -> DeviceKeyPair {
    device_key(0x11)
}

/// What `auth_signature` reads from its input: two (nonce, handle, device id) triples and a
/// signature. Encoded as length-prefixed fields so that the fuzzer's mutations stay meaningful.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInput {
    /// The challenge nonce.
    pub nonce: Vec<u8>,
    /// The handle signing in (any string, valid or not).
    pub handle: String,
    /// The device id signing in.
    pub device_id: u64,
    /// The signature offered.
    pub signature: Vec<u8>,
    /// A second nonce, to compare transcripts with.
    pub other_nonce: Vec<u8>,
    /// A second handle.
    pub other_handle: String,
    /// A second device id.
    pub other_device_id: u64,
}

impl AuthInput {
    /// Encodes as the fuzz target reads it: each byte field as a one-byte length and its bytes,
    /// each id as 8 bytes big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut field = |bytes: &[u8]| {
            out.push(bytes.len().min(255) as u8);
            out.extend_from_slice(&bytes[..bytes.len().min(255)]);
        };
        field(&self.nonce);
        field(self.handle.as_bytes());
        field(&self.signature);
        field(&self.other_nonce);
        field(self.other_handle.as_bytes());
        out.extend_from_slice(&self.device_id.to_be_bytes());
        out.extend_from_slice(&self.other_device_id.to_be_bytes());
        out
    }

    /// Reads what [`to_bytes`](Self::to_bytes) writes; missing bytes read as empty or zero,
    /// handles are taken lossily as UTF-8. Never fails, so every input exercises the code.
    pub fn from_bytes(mut data: &[u8]) -> AuthInput {
        let mut field = || {
            let (len, rest) = data.split_first().map_or((0, data), |(l, r)| (*l, r));
            let len = usize::from(len).min(rest.len());
            let (value, rest) = rest.split_at(len);
            data = rest;
            value.to_vec()
        };
        let nonce = field();
        let handle = String::from_utf8_lossy(&field()).into_owned();
        let signature = field();
        let other_nonce = field();
        let other_handle = String::from_utf8_lossy(&field()).into_owned();
        let mut id = || {
            let mut bytes = [0u8; 8];
            let n = data.len().min(8);
            bytes[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            u64::from_be_bytes(bytes)
        };
        let device_id = id();
        let other_device_id = id();
        AuthInput {
            nonce,
            handle,
            device_id,
            signature,
            other_nonce,
            other_handle,
            other_device_id,
        }
    }

    /// The authentication transcript of the first triple.
    pub fn transcript(&self) -> Vec<u8> {
        auth_transcript(&self.nonce, &self.handle, self.device_id)
    }

    /// The authentication transcript of the second triple.
    pub fn other_transcript(&self) -> Vec<u8> {
        auth_transcript(&self.other_nonce, &self.other_handle, self.other_device_id)
    }
}
