//! Sans-IO behaviour of the core, without a server: envelopes are handed from one device to
//! another directly, in whatever order the test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tacit_core::{CoreError, Processed};
use tacit_proto::v1::{Envelope, EnvelopeKind};

mod common;

use common::{pair, texts, Peer};

#[test]
fn twenty_messages_in_reverse_order_all_decrypt() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let gid = pair(&mut alice, &mut bob);
    let sent: Vec<_> = (0..20)
        .map(|i| alice.device.encrypt_text(&gid, &format!("m{i}")).unwrap())
        .collect();
    let mut got = Vec::new();
    for m in sent.iter().rev() {
        got.extend(texts(
            bob.deliver(EnvelopeKind::Message, &gid, &m.message, "alice")
                .unwrap(),
        ));
    }
    let expected: Vec<_> = (0..20).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
}

#[test]
fn message_from_previous_epoch_decrypts_after_the_commit() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let gid = pair(&mut alice, &mut bob);
    let late = alice
        .device
        .encrypt_text(&gid, "sent before the commit")
        .unwrap();
    let update = alice.device.prepare_self_update(&gid).unwrap();
    alice.device.commit_accepted(&gid).unwrap();
    let before = bob.device.epoch(&gid).unwrap();
    bob.deliver(EnvelopeKind::Commit, &gid, &update.commit, "alice")
        .unwrap();
    assert_eq!(bob.device.epoch(&gid).unwrap(), before + 1);
    let got = texts(
        bob.deliver(EnvelopeKind::Message, &gid, &late.message, "alice")
            .unwrap(),
    );
    assert_eq!(got, vec!["sent before the commit"]);
}

#[test]
fn redelivered_envelope_is_a_duplicate() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let gid = pair(&mut alice, &mut bob);
    let m = alice.device.encrypt_text(&gid, "once").unwrap();
    assert_eq!(
        texts(
            bob.deliver(EnvelopeKind::Message, &gid, &m.message, "alice")
                .unwrap()
        ),
        vec!["once"]
    );
    let envelope = Envelope {
        seq: bob.seq,
        kind: EnvelopeKind::Message as i32,
        group_id: gid.clone(),
        sender: None,
        payload: m.message.clone(),
        server_time_ms: 0,
    };
    assert_eq!(
        bob.device.process_envelope(&envelope).unwrap(),
        Processed::Duplicate
    );
    let (hist, _) = (bob.device.history(&gid).unwrap(), ());
    assert_eq!(hist.iter().filter(|h| h.text == "once").count(), 1);
}

#[test]
fn unknown_identity_asks_the_driver_and_changes_nothing() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let c = alice.device.create_conversation("pair", None).unwrap();
    let claimed = bob.claimed();
    let commit = alice.device.prepare_add(&c.group_id, &[claimed]).unwrap();
    alice.device.commit_accepted(&c.group_id).unwrap();
    // bob has not pinned alice yet.
    match bob.deliver(EnvelopeKind::Welcome, &c.group_id, &commit.welcome, "alice") {
        Err(CoreError::UnknownIdentities(h)) => assert_eq!(h, vec!["alice".to_string()]),
        other => panic!("expected UnknownIdentities, got {other:?}"),
    }
    assert_eq!(bob.device.last_seq().unwrap(), 0, "nothing recorded");
    bob.pin(&mut alice);
    bob.seq -= 1; // the driver retries the same envelope
    bob.deliver(EnvelopeKind::Welcome, &c.group_id, &commit.welcome, "alice")
        .unwrap();
    assert_eq!(bob.device.conversations().unwrap().len(), 1);
}

#[test]
fn a_changed_identity_key_is_refused() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    alice.pin(&mut bob);
    let impostor = Peer::new("bob");
    let key = impostor
        .device
        .registration()
        .unwrap()
        .identity_key
        .to_bytes();
    match alice.device.pin_identity("bob", &key) {
        Err(CoreError::IdentityChanged { handle, .. }) => assert_eq!(handle, "bob"),
        other => panic!("expected IdentityChanged, got {other:?}"),
    }
    // And KeyPackages certified by the impostor's key are refused when adding "bob".
    let c = alice.device.create_conversation("g", None).unwrap();
    let mut imp = impostor;
    let claimed = imp.claimed();
    assert!(matches!(
        alice.device.prepare_add(&c.group_id, &[claimed]),
        Err(CoreError::IdentityChanged { .. })
    ));
}

#[test]
fn key_package_with_certificate_from_wrong_identity_is_refused_by_name() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let mut mallory = Peer::new("bob"); // claims to be bob, own identity key
    alice.pin(&mut bob);
    let c = alice.device.create_conversation("g", None).unwrap();
    let mut claimed = mallory.claimed();
    // The directory (or an attacker) pairs mallory's KeyPackage with bob's real identity key.
    claimed.identity_key = bob
        .device
        .registration()
        .unwrap()
        .identity_key
        .to_bytes()
        .to_vec();
    match alice.device.prepare_add(&c.group_id, &[claimed]) {
        Err(CoreError::BadDevice { device, .. }) => assert!(device.starts_with("bob/"), "{device}"),
        other => panic!("expected BadDevice, got {other:?}"),
    }
}

/// The server committed a message but crashed before answering, so the sender's outbox sent the
/// identical bytes again: the recipient gets them under a new sequence number. The copy is
/// dropped quietly (no refusal line, no second history entry) and counted.
#[test]
fn resent_copy_under_a_new_sequence_number_is_dropped_quietly() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let gid = pair(&mut alice, &mut bob);
    let first = alice.device.encrypt_text(&gid, "first").unwrap();
    let second = alice.device.encrypt_text(&gid, "second").unwrap();
    let before = bob.device.history(&gid).unwrap().len();
    let dropped_before = bob.device.redeliveries_dropped().unwrap();
    let mut deliver = |m: &tacit_core::OutgoingMessage| {
        bob.deliver(EnvelopeKind::Message, &gid, &m.message, "alice")
            .unwrap()
    };
    assert_eq!(texts(deliver(&first)), vec!["first"]);
    assert_eq!(deliver(&first), Processed::Duplicate);
    assert_eq!(texts(deliver(&second)), vec!["second"]);
    assert_eq!(deliver(&second), Processed::Duplicate);
    assert_eq!(deliver(&first), Processed::Duplicate);
    let history = bob.device.history(&gid).unwrap();
    let new: Vec<_> = history[before..].iter().map(|h| h.text.as_str()).collect();
    assert_eq!(
        new,
        vec!["first", "second"],
        "no refusal line, nothing twice"
    );
    let dropped = bob.device.redeliveries_dropped().unwrap();
    assert_eq!(
        (dropped.total, dropped.resent_copies),
        (dropped_before.total + 3, dropped_before.resent_copies + 3)
    );
    assert_eq!(
        bob.device.last_seq().unwrap(),
        bob.seq,
        "the queue moved on"
    );
    // The same envelope again (same sequence number) counts as a redelivery, not a copy.
    let again = tacit_proto::v1::Envelope {
        seq: bob.seq,
        kind: EnvelopeKind::Message as i32,
        group_id: gid.clone(),
        sender: None,
        payload: second.message.clone(),
        server_time_ms: 0,
    };
    assert_eq!(
        bob.device.process_envelope(&again).unwrap(),
        Processed::Duplicate
    );
    let after = bob.device.redeliveries_dropped().unwrap();
    assert_eq!(
        (after.total, after.resent_copies),
        (dropped.total + 1, dropped.resent_copies)
    );
    // The conversation still works both ways.
    let third = alice.device.encrypt_text(&gid, "third").unwrap();
    assert_eq!(
        texts(
            bob.deliver(EnvelopeKind::Message, &gid, &third.message, "alice")
                .unwrap()
        ),
        vec!["third"]
    );
}

/// Only the last 128 messages of a conversation are remembered; a copy of an
/// older one is refused by MLS (its key is gone) and still shown only once.
#[test]
fn a_copy_older_than_the_remembered_digests_is_refused_not_shown_twice() {
    let mut alice = Peer::new("alice");
    let mut bob = Peer::new("bob");
    let gid = pair(&mut alice, &mut bob);
    let old = alice.device.encrypt_text(&gid, "old").unwrap();
    bob.deliver(EnvelopeKind::Message, &gid, &old.message, "alice")
        .unwrap();
    for i in 0..130 {
        let m = alice.device.encrypt_text(&gid, &format!("m{i}")).unwrap();
        bob.deliver(EnvelopeKind::Message, &gid, &m.message, "alice")
            .unwrap();
    }
    match bob
        .deliver(EnvelopeKind::Message, &gid, &old.message, "alice")
        .unwrap()
    {
        Processed::Events(events) => assert!(
            matches!(&events[..], [tacit_core::Event::Refused { .. }]),
            "{events:?}"
        ),
        Processed::Duplicate => panic!("the window is bounded: expected a refusal"),
    }
    let history = bob.device.history(&gid).unwrap();
    assert_eq!(history.iter().filter(|h| h.text == "old").count(), 1);
}
