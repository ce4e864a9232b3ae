//! Tests of the OpenMLS storage: a store written by schema version 1 still opens.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::cell::Cell;

use tacit_proto::v1::EnvelopeKind;

use crate::store::StoreKey;
use crate::testing::{alice_and_bob_in_a_conversation, deliver, device, store_version, texts};
use crate::Event;

thread_local! {
    static VERSION_1: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread writes OpenMLS values as store schema version 1 did (untagged JSON).
pub(super) fn writing_version_1() -> bool {
    VERSION_1.with(Cell::get)
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
    let (mut alice, mut bob, gid) = alice_and_bob_in_a_conversation(&alice_path, &bob_path, &key);
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
        assert_eq!(store_version(path), 4, "migrated");
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
