//! Helpers shared by unit tests: devices on store files, two of them in a conversation,
//! envelopes as the server would deliver them, and the texts of message events.

use std::path::Path;

use tacit_proto::v1::{DeviceAddress, Envelope, EnvelopeKind};

use crate::store::{LocalStore, StoreKey};
use crate::{ClaimedUser, CoreConfig, Device, Event, Processed};

/// A device on the store file at `path` (created if missing), with the default configuration.
pub(crate) fn device(path: &Path, key: &StoreKey) -> Device {
    Device::open(LocalStore::open(path, key).unwrap(), CoreConfig::default()).unwrap()
}

/// The schema version (`PRAGMA user_version`) of the store file at `path`.
pub(crate) fn store_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// Alice and bob, on the store files at the two paths, in a conversation alice created and
/// added bob to (his Welcome processed as envelope 1, her identity pinned by him); returns both
/// devices and the group id.
pub(crate) fn alice_and_bob_in_a_conversation(
    alice_path: &Path,
    bob_path: &Path,
    key: &StoreKey,
) -> (Device, Device, Vec<u8>) {
    let mut alice = device(alice_path, key);
    alice
        .create_account("alice", "ws://127.0.0.1:1/v1")
        .unwrap();
    let mut bob = device(bob_path, key);
    let reg = bob.create_account("bob", "ws://127.0.0.1:1/v1").unwrap();
    let kp = bob.new_key_packages(1).unwrap().remove(0);
    let gid = alice.create_conversation("old", None).unwrap().group_id;
    let add = alice
        .prepare_add(
            &gid,
            &[ClaimedUser {
                handle: "bob".into(),
                identity_key: reg.identity_key.to_bytes().to_vec(),
                key_packages: vec![(reg.device_id, kp)],
            }],
        )
        .unwrap();
    alice.commit_accepted(&gid).unwrap();
    let alice_key = alice.registration().unwrap().identity_key.to_bytes();
    bob.pin_identity("alice", &alice_key).unwrap();
    deliver(&mut bob, 1, EnvelopeKind::Welcome, &gid, &add.welcome);
    (alice, bob, gid)
}

/// An envelope of `kind` for `group_id`, with sequence number `seq`, from some other device.
pub(crate) fn envelope(seq: u64, kind: EnvelopeKind, group_id: &[u8], payload: &[u8]) -> Envelope {
    Envelope {
        seq,
        kind: kind as i32,
        group_id: group_id.to_vec(),
        sender: Some(DeviceAddress {
            handle: "peer".into(),
            device_id: 1,
        }),
        payload: payload.to_vec(),
        server_time_ms: 0,
    }
}

/// Processes an envelope and returns its events (none for a duplicate); panics on an error.
pub(crate) fn deliver(
    to: &mut Device,
    seq: u64,
    kind: EnvelopeKind,
    group_id: &[u8],
    payload: &[u8],
) -> Vec<Event> {
    match to
        .process_envelope(&envelope(seq, kind, group_id, payload))
        .unwrap_or_else(|e| panic!("processing failed: {e}"))
    {
        Processed::Events(events) => events,
        Processed::Duplicate => vec![],
    }
}

/// The texts of the message events among `events`.
pub(crate) fn texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}
