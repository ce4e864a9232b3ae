//! Property tests for the client core's public encoders and decoders: link codes, the device-link
//! messages, messages (text in, MLS message out, the same text back out at the receiver, in
//! both devices' stored history), the outbox, conversation records, and envelopes from the
//! server (arbitrary payloads of every kind never panic and never block the queue).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;

use common::{pair, texts, Peer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tacit_core::link::{Initiator, Joiner, LinkCode};
use tacit_core::store::{LocalStore, StoreKey};
use tacit_core::{CoreConfig, Device, Event, Processed};
use tacit_identity::DeviceCertificate;
use tacit_proto::v1::EnvelopeKind;

const SLOT_ALPHABET: &str = "abcdefghijkmnpqrstuvwxyz23456789";

fn empty_device() -> Device {
    let store = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
    Device::open(store, CoreConfig::default()).unwrap()
}

/// The four messages of a link exchange, in relay order, and what each side ends with.
struct Exchange {
    initiator: Initiator,
    joiner: Option<Joiner>,
    to_joiner_pake: Vec<u8>,
    to_initiator_pake: Vec<u8>,
}

fn start_exchange() -> Exchange {
    let (initiator, to_joiner_pake) = Initiator::start();
    let code = LinkCode::parse(&initiator.code().display()).unwrap();
    let (joiner, to_initiator_pake) = Joiner::start(code);
    Exchange {
        initiator,
        joiner: Some(joiner),
        to_joiner_pake,
        to_initiator_pake,
    }
}

/// Relays a link exchange from start to end, passing the message of step `step` (0 and 1: the
/// key exchange, 2: the request, 3: the grant) through `tamper`.
fn relay(
    existing: &Peer,
    mut ex: Exchange,
    mut joiner: Joiner,
    step: usize,
    tamper: &dyn Fn(&[u8]) -> Vec<u8>,
    new_device: &mut Device,
) -> tacit_core::Result<()> {
    let pass = |at: usize, message: Vec<u8>| {
        if at == step {
            tamper(&message)
        } else {
            message
        }
    };
    let request = joiner.on_pake(&pass(0, ex.to_joiner_pake))?;
    ex.initiator.on_pake(&pass(1, ex.to_initiator_pake))?;
    let (grant, _) = ex
        .initiator
        .on_request(&existing.device, &pass(2, request))?;
    joiner.on_grant(new_device, &pass(3, grant), "ws://127.0.0.1:1/v1")?;
    Ok(())
}

#[test]
fn link_exchange_round_trips_the_account() {
    let existing = Peer::new("alice");
    let mut ex = start_exchange();
    let mut joiner = ex.joiner.take().unwrap();
    let request = joiner.on_pake(&ex.to_joiner_pake).unwrap();
    ex.initiator.on_pake(&ex.to_initiator_pake).unwrap();
    let (grant, name) = ex.initiator.on_request(&existing.device, &request).unwrap();
    let mut new_device = empty_device();
    let reg = joiner
        .on_grant(&mut new_device, &grant, "ws://127.0.0.1:1/v1")
        .unwrap();
    let original = existing.device.registration().unwrap();
    assert_eq!(reg.handle, "alice");
    assert_eq!(reg.identity_key, original.identity_key);
    assert_eq!(name, format!("alice/{:016x}", reg.device_id));
    let cert = DeviceCertificate::from_bytes(reg.certificate.as_bytes().to_vec());
    let verified = cert.verify_for(&original.identity_key).unwrap();
    assert_eq!(verified.device_id, reg.device_id);
    let stored = new_device.registration().unwrap();
    assert_eq!(
        (stored.handle, stored.device_id, stored.identity_key),
        ("alice".to_owned(), reg.device_id, original.identity_key)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn link_codes_round_trip(
        slot in proptest::collection::vec(proptest::sample::select(SLOT_ALPHABET.as_bytes().to_vec()), 8),
        secret in "[0-9]{10}",
        pad in "[ \t\n]{0,3}",
    ) {
        let text = format!("{}-{secret}", String::from_utf8(slot).unwrap());
        let code = LinkCode::parse(&format!("{pad}{text}{pad}")).unwrap();
        prop_assert_eq!(code.display(), text.clone());
        prop_assert_eq!(LinkCode::parse(&code.display()).unwrap(), code);
    }

    #[test]
    fn arbitrary_text_is_a_link_code_only_in_its_one_form(text in ".{0,40}") {
        if let Ok(code) = LinkCode::parse(&text) {
            prop_assert_eq!(code.display(), text.trim());
        }
    }
}

proptest! {
    // Each case runs SPAKE2 and creates a device: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The relay is not trusted: whatever it hands either side at any step — arbitrary bytes, or
    /// a genuine message with a byte changed — is refused without a panic, and never installs an
    /// account.
    #[test]
    fn tampered_or_arbitrary_link_messages_are_refused(
        step in 0usize..4,
        at in any::<usize>(),
        mask in 1u8..=255,
        junk in proptest::collection::vec(any::<u8>(), 0..200),
        use_junk in any::<bool>(),
    ) {
        let existing = Peer::new("alice");
        let mut ex = start_exchange();
        let joiner = ex.joiner.take().unwrap();
        let tamper = |genuine: &[u8]| -> Vec<u8> {
            if use_junk || genuine.is_empty() {
                return junk.clone();
            }
            let mut bytes = genuine.to_vec();
            let i = at % bytes.len();
            bytes[i] ^= mask;
            bytes
        };
        let mut new_device = empty_device();
        let outcome = relay(&existing, ex, joiner, step, &tamper, &mut new_device);
        prop_assert!(outcome.is_err(), "a tampered exchange (step {}) succeeded", step);
        prop_assert!(!new_device.has_account());
    }
}

/// Text goes in at one device and comes out at the other, and into both devices' encrypted
/// history, exactly; the outbox holds exactly the message that was sent. One pair of devices for
/// every case (setting up MLS is the slow part).
#[test]
fn messages_round_trip_through_mls_and_both_stores() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let gid = pair(&mut alice, &mut bob);
    let peers = RefCell::new((alice, bob));
    let mut runner = TestRunner::new(Config::with_cases(48));
    runner
        .run(&".{0,300}", |text| {
            let (alice, bob) = &mut *peers.borrow_mut();
            // Whatever is waiting (the conversation's announcement) counts as sent.
            for item in alice.device.outbox().unwrap() {
                alice.device.outbox_sent(item.id).unwrap();
            }
            let sent = alice.device.encrypt_text(&gid, &text).unwrap();
            let outbox = alice.device.outbox().unwrap();
            prop_assert_eq!(outbox.len(), 1);
            prop_assert_eq!(outbox[0].id, sent.outbox_id);
            prop_assert_eq!(&outbox[0].message, &sent.message);
            prop_assert_eq!(&outbox[0].group_id, &gid);
            alice.device.outbox_sent(sent.outbox_id).unwrap();

            let got = texts(
                bob.deliver(EnvelopeKind::Message, &gid, &sent.message, "alice")
                    .unwrap(),
            );
            prop_assert_eq!(got, vec![text.clone()]);
            let last = |d: &mut Device| d.history(&gid).unwrap().pop().unwrap();
            let (mine, theirs) = (last(&mut alice.device), last(&mut bob.device));
            prop_assert_eq!(&mine.text, &text);
            prop_assert_eq!(&theirs.text, &text);
            prop_assert_eq!(&mine.message_id, &theirs.message_id);
            prop_assert!(mine.outgoing && !theirs.outgoing);
            Ok(())
        })
        .unwrap();
}

/// Conversation records keep any name through the store.
#[test]
fn conversation_records_round_trip_through_the_store() {
    let peer = RefCell::new(Peer::new("alice"));
    let mut runner = TestRunner::new(Config::with_cases(24));
    runner
        .run(
            &(".{0,80}", proptest::option::of("[a-z]{1,32}")),
            |(name, peer_handle)| {
                let device = &mut peer.borrow_mut().device;
                let created = device
                    .create_conversation(&name, peer_handle.as_deref())
                    .unwrap();
                let stored = device
                    .conversations()
                    .unwrap()
                    .into_iter()
                    .find(|c| c.group_id == created.group_id)
                    .unwrap();
                prop_assert_eq!(stored, created);
                Ok(())
            },
        )
        .unwrap();
}

/// Envelopes of every kind with arbitrary payloads (a hostile or broken server) are refused
/// with an event, counted as processed so the queue moves on, and leave the device working.
#[test]
fn arbitrary_envelopes_are_refused_and_do_not_block_the_queue() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let gid = pair(&mut alice, &mut bob);
    let peers = RefCell::new((alice, bob));
    let kinds = prop_oneof![
        Just(EnvelopeKind::Message),
        Just(EnvelopeKind::Commit),
        Just(EnvelopeKind::Welcome),
        Just(EnvelopeKind::Unspecified),
    ];
    let mut runner = TestRunner::new(Config::with_cases(64));
    runner
        .run(
            &(kinds, proptest::collection::vec(any::<u8>(), 0..600), any::<bool>()),
            |(kind, payload, known_group)| {
                let (_, bob) = &mut *peers.borrow_mut();
                let group = if known_group { gid.clone() } else { b"elsewhere".to_vec() };
                let before = bob.device.last_seq().unwrap();
                let processed = bob.deliver(kind, &group, &payload, "alice").unwrap();
                prop_assert!(
                    matches!(&processed, Processed::Events(e) if matches!(e.as_slice(), [Event::Refused { .. }])),
                    "{:?}",
                    processed
                );
                prop_assert_eq!(bob.device.last_seq().unwrap(), before + 1);
                Ok(())
            },
        )
        .unwrap();
    // Still in step with alice after all that.
    let (alice, bob) = &mut *peers.borrow_mut();
    let m = alice.device.encrypt_text(&gid, "still here").unwrap();
    let got = texts(
        bob.deliver(EnvelopeKind::Message, &gid, &m.message, "alice")
            .unwrap(),
    );
    assert_eq!(got, vec!["still here"]);
}
