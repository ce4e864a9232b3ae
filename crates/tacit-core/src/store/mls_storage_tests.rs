//! Tests of the OpenMLS storage: a store written by schema version 1 still opens.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::cell::Cell;
use std::path::Path;

use tacit_proto::v1::EnvelopeKind;

use crate::store::{LocalStore, StoreKey};
use crate::testing::{deliver, texts};
use crate::{ClaimedUser, CoreConfig, Device, Event};

thread_local! {
    static VERSION_1: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread writes OpenMLS values as store schema version 1 did (untagged JSON).
pub(super) fn writing_version_1() -> bool {
    VERSION_1.with(Cell::get)
}

fn device(path: &Path, key: &StoreKey) -> Device {
    Device::open(LocalStore::open(path, key).unwrap(), CoreConfig::default()).unwrap()
}

/// A profile written by schema version 1 (every OpenMLS value untagged JSON) opens, is
/// migrated to version 2, and its conversation goes on: old values are read, new ones are
/// written in the new encoding, and both kinds are read after another restart.
#[test]
fn a_version_1_store_still_opens_and_its_conversation_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::generate();
    let (alice_path, bob_path) = (dir.path().join("alice.db"), dir.path().join("bob.db"));

    VERSION_1.with(|v| v.set(true));
    let mut alice = device(&alice_path, &key);
    alice
        .create_account("alice", "ws://127.0.0.1:1/v1")
        .unwrap();
    let mut bob = device(&bob_path, &key);
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
    let m = alice.encrypt_text(&gid, "written by version 1").unwrap();
    let events = deliver(&mut bob, 2, EnvelopeKind::Message, &gid, &m.message);
    assert_eq!(texts(&events), ["written by version 1"]);
    drop((alice, bob));
    for path in [&alice_path, &bob_path] {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
    }
    VERSION_1.with(|v| v.set(false));

    let mut alice = device(&alice_path, &key);
    let mut bob = device(&bob_path, &key);
    for path in [&alice_path, &bob_path] {
        let conn = rusqlite::Connection::open(path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4, "migrated");
    }
    let m = alice.encrypt_text(&gid, "after the upgrade").unwrap();
    let events = deliver(&mut bob, 3, EnvelopeKind::Message, &gid, &m.message);
    assert_eq!(texts(&events), ["after the upgrade"]);
    let update = bob.prepare_self_update(&gid).unwrap();
    bob.commit_accepted(&gid).unwrap();
    drop(bob);

    let mut bob = device(&bob_path, &key);
    let events = deliver(&mut alice, 1, EnvelopeKind::Commit, &gid, &update.commit);
    assert!(
        matches!(events[..], [Event::KeysUpdated { .. }]),
        "{events:?}"
    );
    let m = alice.encrypt_text(&gid, "in a new epoch").unwrap();
    let events = deliver(&mut bob, 4, EnvelopeKind::Message, &gid, &m.message);
    assert_eq!(texts(&events), ["in a new epoch"]);
    let history: Vec<String> = bob
        .history(&gid)
        .unwrap()
        .into_iter()
        .filter(|h| !h.system)
        .map(|h| h.text)
        .collect();
    assert_eq!(
        history,
        [
            "written by version 1",
            "after the upgrade",
            "in a new epoch"
        ]
    );
}
