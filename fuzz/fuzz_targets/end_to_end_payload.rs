//! The decoders of the end-to-end payloads, which clients parse after decrypting them (or, for
//! the link exchange, straight from the relay): `CertificateBody`, `DeviceCertificate`,
//! `Content`, `ConversationMeta`, `LinkMessage`, `LinkRequest`, `LinkGrant`. The first input
//! byte picks the type (`tacit_fuzz::seeds::Payload`), the rest is the message.
//!
//! Beyond "no panic": a decoded payload re-encodes to bytes that decode to the same value, that
//! encoding is stable, and it is never longer than the input (these types have no signed
//! fields, so the canonical encoding is the shortest).
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tacit_fuzz::seeds::Payload;
use tacit_proto::{encode, v1};

fn round_trip<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let encoded = encode(&message);
    let again = M::decode(encoded.as_slice())
        .unwrap_or_else(|e| panic!("re-encoded payload does not decode: {e}"));
    assert_eq!(
        again, message,
        "re-encoded payload decodes to another value"
    );
    assert_eq!(encode(&again), encoded, "encoding is not stable");
    assert!(
        encoded.len() <= bytes.len(),
        "re-encoding grew {} bytes to {}",
        bytes.len(),
        encoded.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, bytes)) = data.split_first() else {
        return;
    };
    match Payload::from_selector(*selector) {
        Payload::CertificateBody => round_trip::<v1::CertificateBody>(bytes),
        Payload::DeviceCertificate => round_trip::<v1::DeviceCertificate>(bytes),
        Payload::Content => round_trip::<v1::Content>(bytes),
        Payload::ConversationMeta => round_trip::<v1::ConversationMeta>(bytes),
        Payload::LinkMessage => round_trip::<v1::LinkMessage>(bytes),
        Payload::LinkRequest => round_trip::<v1::LinkRequest>(bytes),
        Payload::LinkGrant => round_trip::<v1::LinkGrant>(bytes),
    }
});
