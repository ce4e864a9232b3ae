//! The conformance suite: behaviour every `Store` backend must have, written once and run
//! against each backend — SQLite (in memory) always, PostgreSQL when `TACIT_TEST_POSTGRES_URL`
//! names a server (each test in a database of its own, dropped afterwards).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::testing::TestDatabase;

/// A store under test; for PostgreSQL it also owns the test's database, dropped with it.
struct TestStore {
    store: Arc<dyn Store>,
    _database: Option<TestDatabase>,
}

impl std::ops::Deref for TestStore {
    type Target = Arc<dyn Store>;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

fn sqlite() -> Option<TestStore> {
    Some(TestStore {
        store: Arc::new(SqliteStore::open_in_memory().unwrap()),
        _database: None,
    })
}

fn postgres() -> Option<TestStore> {
    let database = TestDatabase::create_or_skip("store conformance")?;
    let store = PgStore::open(&database.url, &PgOptions::default()).unwrap();
    Some(TestStore {
        store: Arc::new(store),
        _database: Some(database),
    })
}

/// Runs each named test against one backend.
macro_rules! conformance {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $name() {
                    if let Some(store) = super::$backend() {
                        super::$name(store);
                    }
                }
            )*
        }
    };
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        conformance!(sqlite: $($name),*);
        conformance!(postgres: $($name),*);
    };
}

both_backends!(
    handles_and_devices_are_unique,
    key_package_stock_is_capped,
    claims_skip_excluded_devices_and_report_unknown_users,
    concurrent_claims_hand_each_one_time_key_package_out_once,
    sequence_numbers_are_gap_free_per_device_under_concurrency,
    a_refused_commit_changes_nothing,
    a_commit_routes_to_removed_members_then_drops_them,
    one_time_key_packages_are_handed_out_once_then_last_resort,
    epoch_is_compare_and_set_and_queues_are_ordered,
    full_queue_refuses_the_whole_send,
    expired_envelopes_are_purged,
    concurrent_commits_at_one_epoch_have_one_winner,
    concurrent_registrations_of_one_handle_have_one_winner,
    groups_are_unique_and_visible_to_members_only,
    each_device_acknowledges_only_its_own_copy,
    a_closed_store_refuses_everything,
    a_removed_device_is_gone_everywhere,
);

/// alice (device 1) creates "g" and adds bob (device 2) and carol (device 3).
fn group_of_three(s: &dyn Store) -> (DeviceRecord, DeviceRecord, DeviceRecord) {
    let a = s
        .create_account("alice", &[1; 32], 1, &[11; 32], b"c")
        .unwrap();
    let b = s
        .create_account("bob", &[2; 32], 2, &[12; 32], b"c")
        .unwrap();
    let c = s
        .create_account("carol", &[3; 32], 3, &[13; 32], b"c")
        .unwrap();
    s.create_group(b"g", a.key).unwrap();
    let add = [("bob".to_string(), 2u64), ("carol".to_string(), 3u64)];
    s.commit(
        &CommitRequest {
            group_id: b"g",
            sender: &a,
            epoch: 0,
            commit: b"c0",
            welcome: b"w",
            added: &add,
            removed: &[],
        },
        1000,
        60_000,
    )
    .unwrap();
    (a, b, c)
}

fn handles_and_devices_are_unique(s: TestStore) {
    let a = s
        .create_account("alice", &[1; 32], 1, &[2; 32], b"c")
        .unwrap();
    assert!(matches!(
        s.create_account("alice", &[9; 32], 5, &[8; 32], b"c"),
        Err(StoreError::HandleTaken(_))
    ));
    assert!(matches!(
        s.add_device("alice", 1, &[7; 32], b"c"),
        Err(StoreError::DeviceExists(_))
    ));
    assert!(matches!(
        s.add_device("nobody", 1, &[7; 32], b"c"),
        Err(StoreError::UnknownUser(_))
    ));
    s.add_device("alice", 2, &[7; 32], b"c2").unwrap();
    let user = s.user("alice").unwrap().unwrap();
    assert_eq!(user.identity_key, vec![1; 32]);
    assert_eq!(user.certificates, vec![b"c".to_vec(), b"c2".to_vec()]);
    assert_eq!(s.device("alice", 1).unwrap().unwrap().key, a.key);
    assert!(s.device("alice", 3).unwrap().is_none());
}

fn key_package_stock_is_capped(s: TestStore) {
    let d = s
        .create_account("bob", &[1; 32], 7, &[2; 32], b"c")
        .unwrap();
    let batch: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i]).collect();
    s.upload_key_packages(d.key, &batch, None, 10).unwrap();
    assert!(matches!(
        s.upload_key_packages(d.key, &batch, Some(b"l"), 10),
        Err(StoreError::Limit(_))
    ));
    assert_eq!(
        s.key_package_stock(d.key).unwrap(),
        (6, false),
        "nothing of the refused batch"
    );
    s.upload_key_packages(d.key, &[], Some(b"l1"), 10).unwrap();
    s.upload_key_packages(d.key, &[], Some(b"l2"), 10).unwrap();
    assert_eq!(s.key_package_stock(d.key).unwrap(), (6, true));
}

fn claims_skip_excluded_devices_and_report_unknown_users(s: TestStore) {
    let d1 = s
        .create_account("bob", &[1; 32], 1, &[2; 32], b"c")
        .unwrap();
    let d2 = s.add_device("bob", 2, &[3; 32], b"c").unwrap();
    s.upload_key_packages(d1.key, &[b"k1".to_vec()], None, 10)
        .unwrap();
    s.upload_key_packages(d2.key, &[b"k2".to_vec()], None, 10)
        .unwrap();
    let (ik, claimed) = s.claim_key_packages("bob", &[1]).unwrap();
    assert_eq!(ik, vec![1; 32]);
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].device_id, claimed[0].key_package.as_slice()),
        (2, &b"k2"[..])
    );
    // Device 2 has nothing left and no last-resort one: it is simply absent.
    let (_, claimed) = s.claim_key_packages("bob", &[]).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].device_id, 1);
    assert!(matches!(
        s.claim_key_packages("nobody", &[]),
        Err(StoreError::UnknownUser(_))
    ));
}

fn concurrent_claims_hand_each_one_time_key_package_out_once(s: TestStore) {
    let d = s
        .create_account("bob", &[1; 32], 7, &[2; 32], b"c")
        .unwrap();
    let batch: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 8]).collect();
    s.upload_key_packages(d.key, &batch, Some(b"last"), 100)
        .unwrap();
    // 10 claimers × 4 claims for 20 one-time KeyPackages.
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..4)
                    .map(|_| s.claim_key_packages("bob", &[]).unwrap().1.remove(0))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut one_time: Vec<Vec<u8>> = Vec::new();
    let mut last_resort = 0;
    for t in threads {
        for c in t.join().unwrap() {
            if c.last_resort {
                last_resort += 1;
            } else {
                one_time.push(c.key_package);
            }
        }
    }
    one_time.sort();
    assert_eq!(one_time, batch);
    assert_eq!(last_resort, 20);
}

fn sequence_numbers_are_gap_free_per_device_under_concurrency(s: TestStore) {
    let (a, b, c) = group_of_three(s.as_ref());
    let threads: Vec<_> = [a, c]
        .into_iter()
        .map(|sender| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..25u8 {
                    s.send_message(b"g", &sender, &[i], 1000, 60_000).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let got = s.fetch(b.key, 0, 1000).unwrap();
    let seqs: Vec<u64> = got.iter().map(|q| q.seq).collect();
    assert_eq!(
        seqs,
        (1..=51).collect::<Vec<u64>>(),
        "Welcome + 50 messages"
    );
    // Each sender's messages keep their order.
    for sender in ["alice", "carol"] {
        let mine: Vec<u8> = got
            .iter()
            .filter(|q| {
                q.sender_handle == sender && q.kind == tacit_proto::v1::EnvelopeKind::Message as i32
            })
            .map(|q| q.payload[0])
            .collect();
        assert_eq!(mine, (0..25u8).collect::<Vec<_>>());
    }
    // Fetching in batches continues where the last one ended.
    let first = s.fetch(b.key, 0, 10).unwrap();
    let next = s.fetch(b.key, first[9].seq, 10).unwrap();
    assert_eq!(next[0].seq, 11);
}

fn a_refused_commit_changes_nothing(s: TestStore) {
    let (a, b, _c) = group_of_three(s.as_ref());
    let before = s.fetch(b.key, 0, 100).unwrap().len();
    let ghost = [("ghost".to_string(), 9u64)];
    let r = s.commit(
        &CommitRequest {
            group_id: b"g",
            sender: &a,
            epoch: 1,
            commit: b"c1",
            welcome: b"w",
            added: &ghost,
            removed: &[],
        },
        1000,
        60_000,
    );
    assert!(matches!(r, Err(StoreError::UnknownUser(ref who)) if who.contains("ghost")));
    assert_eq!(s.group_state(b"g", a.key).unwrap().0, 1);
    assert_eq!(s.fetch(b.key, 0, 100).unwrap().len(), before);
}

fn a_commit_routes_to_removed_members_then_drops_them(s: TestStore) {
    let (a, b, c) = group_of_three(s.as_ref());
    let removed = [("bob".to_string(), 2u64)];
    let (epoch, notify) = s
        .commit(
            &CommitRequest {
                group_id: b"g",
                sender: &a,
                epoch: 1,
                commit: b"rm",
                welcome: b"",
                added: &[],
                removed: &removed,
            },
            1000,
            60_000,
        )
        .unwrap();
    assert_eq!(epoch, 2);
    assert!(notify.contains(&b.key) && notify.contains(&c.key));
    let last = s.fetch(b.key, 0, 100).unwrap().pop().unwrap();
    assert_eq!(last.payload, b"rm");
    let (_, members) = s.group_state(b"g", a.key).unwrap();
    assert_eq!(
        members,
        vec![("alice".to_string(), 1), ("carol".to_string(), 3)]
    );
    assert!(matches!(
        s.group_state(b"g", b.key),
        Err(StoreError::NotAMember)
    ));
    assert!(matches!(
        s.send_message(b"g", &b, b"x", 1000, 60_000),
        Err(StoreError::NotAMember)
    ));
}

fn one_time_key_packages_are_handed_out_once_then_last_resort(s: TestStore) {
    let dev = s
        .create_account("bob", &[1; 32], 7, &[2; 32], b"cert")
        .unwrap();
    s.upload_key_packages(dev.key, &[b"a".to_vec(), b"b".to_vec()], Some(b"last"), 10)
        .unwrap();
    let take = || s.claim_key_packages("bob", &[]).unwrap().1.remove(0);
    assert_eq!(take().key_package, b"a");
    assert_eq!(take().key_package, b"b");
    let l = take();
    assert!(l.last_resort);
    assert_eq!(take().key_package, b"last");
    assert_eq!(s.key_package_stock(dev.key).unwrap(), (0, true));
}

fn epoch_is_compare_and_set_and_queues_are_ordered(s: TestStore) {
    let a = s
        .create_account("alice", &[1; 32], 1, &[2; 32], b"c")
        .unwrap();
    let b = s
        .create_account("bob", &[3; 32], 2, &[4; 32], b"c")
        .unwrap();
    s.create_group(b"g", a.key).unwrap();
    let add = [("bob".to_string(), 2u64)];
    let req = CommitRequest {
        group_id: b"g",
        sender: &a,
        epoch: 0,
        commit: b"c1",
        welcome: b"w",
        added: &add,
        removed: &[],
    };
    assert_eq!(s.commit(&req, 100, 1000).unwrap().0, 1);
    let stale = CommitRequest {
        group_id: b"g",
        sender: &b,
        epoch: 0,
        commit: b"c2",
        welcome: b"",
        added: &[],
        removed: &[],
    };
    assert!(matches!(
        s.commit(&stale, 100, 1000),
        Err(StoreError::EpochMovedOn(1))
    ));
    for i in 0..5u8 {
        s.send_message(b"g", &a, &[i], 100, 1000).unwrap();
    }
    let got = s.fetch(b.key, 0, 100).unwrap();
    let seqs: Vec<u64> = got.iter().map(|q| q.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(got[0].payload, b"w");
    s.ack(b.key, 3).unwrap();
    assert_eq!(s.fetch(b.key, 0, 100).unwrap().len(), 3);
    let outsider = s
        .create_account("eve", &[5; 32], 3, &[6; 32], b"c")
        .unwrap();
    assert!(matches!(
        s.send_message(b"g", &outsider, b"x", 100, 1000),
        Err(StoreError::NotAMember)
    ));
}

fn full_queue_refuses_the_whole_send(s: TestStore) {
    let a = s
        .create_account("alice", &[1; 32], 1, &[2; 32], b"c")
        .unwrap();
    let b = s
        .create_account("bob", &[3; 32], 2, &[4; 32], b"c")
        .unwrap();
    s.create_group(b"g", a.key).unwrap();
    let add = [("bob".to_string(), 2u64)];
    s.commit(
        &CommitRequest {
            group_id: b"g",
            sender: &a,
            epoch: 0,
            commit: b"c",
            welcome: b"w",
            added: &add,
            removed: &[],
        },
        3,
        1000,
    )
    .unwrap();
    s.send_message(b"g", &a, b"1", 3, 1000).unwrap();
    s.send_message(b"g", &a, b"2", 3, 1000).unwrap();
    assert!(matches!(
        s.send_message(b"g", &a, b"3", 3, 1000),
        Err(StoreError::Limit(_))
    ));
    assert_eq!(s.fetch(b.key, 0, 10).unwrap().len(), 3);
}

fn expired_envelopes_are_purged(s: TestStore) {
    let a = s
        .create_account("alice", &[1; 32], 1, &[2; 32], b"c")
        .unwrap();
    let b = s
        .create_account("bob", &[3; 32], 2, &[4; 32], b"c")
        .unwrap();
    s.create_group(b"g", a.key).unwrap();
    let add = [("bob".to_string(), 2u64)];
    s.commit(
        &CommitRequest {
            group_id: b"g",
            sender: &a,
            epoch: 0,
            commit: b"c",
            welcome: b"w",
            added: &add,
            removed: &[],
        },
        10,
        0,
    )
    .unwrap();
    // A message queued after the expired ones, with a long TTL, outlives the purge whole.
    let before = now_ms();
    s.send_message(b"g", &a, b"still fresh", 10, 3_600_000)
        .unwrap();
    assert_eq!(s.purge_expired(now_ms() + 10).unwrap(), 2, "alice and bob");
    assert!(s.fetch(a.key, 0, 10).unwrap().is_empty());
    let left = s.fetch(b.key, 0, 10).unwrap();
    assert_eq!(left.len(), 1);
    let m = &left[0];
    assert_eq!(
        (m.seq, m.kind, m.group_id.as_slice(), m.payload.as_slice()),
        (
            2,
            tacit_proto::v1::EnvelopeKind::Message as i32,
            &b"g"[..],
            &b"still fresh"[..]
        )
    );
    assert_eq!((m.sender_handle.as_str(), m.sender_device), ("alice", 1));
    assert!(m.enqueued_ms >= before && m.enqueued_ms <= now_ms());
    assert_eq!(s.purge_expired(now_ms() + 10).unwrap(), 0);
    s.ack(b.key, 2).unwrap();
    assert!(s.fetch(b.key, 0, 10).unwrap().is_empty());
}

fn concurrent_commits_at_one_epoch_have_one_winner(s: TestStore) {
    let (a, b, c) = group_of_three(s.as_ref());
    let threads: Vec<_> = [a, b, c]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
        .map(|(i, sender)| {
            let s = s.clone();
            std::thread::spawn(move || {
                let commit = [i as u8];
                s.commit(
                    &CommitRequest {
                        group_id: b"g",
                        sender: &sender,
                        epoch: 1,
                        commit: &commit,
                        welcome: b"",
                        added: &[],
                        removed: &[],
                    },
                    1000,
                    60_000,
                )
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for r in &results {
        match r {
            Ok((epoch, _)) => assert_eq!(*epoch, 2),
            Err(e) => assert!(matches!(e, StoreError::EpochMovedOn(2)), "{e}"),
        }
    }
    let alice = s.device("alice", 1).unwrap().unwrap();
    let (epoch, members) = s.group_state(b"g", alice.key).unwrap();
    assert_eq!((epoch, members.len()), (2, 3));
}

fn concurrent_registrations_of_one_handle_have_one_winner(s: TestStore) {
    let threads: Vec<_> = (0..8u8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                s.create_account("dave", &[i; 32], u64::from(i), &[i; 32], b"c")
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, StoreError::HandleTaken(_))));
    assert_eq!(s.user("dave").unwrap().unwrap().certificates.len(), 1);
}

fn groups_are_unique_and_visible_to_members_only(s: TestStore) {
    let (a, _b, _c) = group_of_three(s.as_ref());
    assert!(matches!(
        s.create_group(b"g", a.key),
        Err(StoreError::GroupExists)
    ));
    assert!(matches!(
        s.group_state(b"nope", a.key),
        Err(StoreError::UnknownGroup)
    ));
    assert!(matches!(
        s.send_message(b"nope", &a, b"x", 10, 1000),
        Err(StoreError::UnknownGroup)
    ));
    let eve = s
        .create_account("eve", &[9; 32], 9, &[9; 32], b"c")
        .unwrap();
    assert!(matches!(
        s.group_state(b"g", eve.key),
        Err(StoreError::NotAMember)
    ));
}

fn each_device_acknowledges_only_its_own_copy(s: TestStore) {
    let (a, b, c) = group_of_three(s.as_ref());
    s.send_message(b"g", &a, b"shared", 1000, 60_000).unwrap();
    let last_b = s.fetch(b.key, 0, 100).unwrap().pop().unwrap();
    assert_eq!(last_b.payload, b"shared");
    s.ack(b.key, last_b.seq).unwrap();
    assert!(s.fetch(b.key, 0, 100).unwrap().is_empty());
    // carol's copy of the same payload is untouched by bob's acknowledgment.
    let for_c = s.fetch(c.key, 0, 100).unwrap();
    assert_eq!(for_c.last().unwrap().payload, b"shared");
    s.ack(c.key, for_c.last().unwrap().seq).unwrap();
    assert!(s.fetch(c.key, 0, 100).unwrap().is_empty());
    // Acknowledging again, or past the end, is harmless; new envelopes continue the sequence.
    s.ack(c.key, u64::MAX >> 1).unwrap();
    s.send_message(b"g", &a, b"next", 1000, 60_000).unwrap();
    let next = s.fetch(c.key, 0, 100).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].seq, for_c.last().unwrap().seq + 1);
}

fn a_closed_store_refuses_everything(s: TestStore) {
    let a = s
        .create_account("alice", &[1; 32], 1, &[2; 32], b"c")
        .unwrap();
    s.close().unwrap();
    s.close().unwrap(); // idempotent
    assert!(matches!(s.device("alice", 1), Err(StoreError::Closed)));
    assert!(matches!(s.fetch(a.key, 0, 10), Err(StoreError::Closed)));
    assert!(matches!(
        s.create_account("bob", &[3; 32], 2, &[4; 32], b"c"),
        Err(StoreError::Closed)
    ));
}

fn a_removed_device_is_gone_everywhere(s: TestStore) {
    let (a, b, c) = group_of_three(s.as_ref());
    // alice's second device, in the group, with KeyPackages and something queued.
    let a2 = s.add_device("alice", 4, &[14; 32], b"c4").unwrap();
    s.upload_key_packages(a2.key, &[b"k1".to_vec(), b"k2".to_vec()], Some(b"lr"), 10)
        .unwrap();
    let add = [("alice".to_string(), 4u64)];
    s.commit(
        &CommitRequest {
            group_id: b"g",
            sender: &a,
            epoch: 1,
            commit: b"c1",
            welcome: b"w",
            added: &add,
            removed: &[],
        },
        1000,
        60_000,
    )
    .unwrap();
    s.send_message(b"g", &b, b"before", 1000, 60_000).unwrap();
    assert!(!s.fetch(a2.key, 0, 100).unwrap().is_empty());
    assert!(!s.device_removed(a2.key).unwrap());

    // Another user cannot name it: the device id is looked up among bob's own devices.
    assert!(matches!(
        s.remove_device("bob", 4),
        Err(StoreError::UnknownDevice(_))
    ));
    assert_eq!(s.remove_device("alice", 4).unwrap(), a2.key);

    assert!(s.device_removed(a2.key).unwrap());
    assert!(
        s.device("alice", 4).unwrap().is_none(),
        "cannot authenticate"
    );
    assert_eq!(
        s.user("alice").unwrap().unwrap().certificates,
        vec![b"c".to_vec()]
    );
    assert_eq!(s.key_package_stock(a2.key).unwrap(), (0, false));
    let (_, claimed) = s.claim_key_packages("alice", &[]).unwrap();
    assert!(claimed.iter().all(|k| k.device_id != 4), "{claimed:?}");
    assert!(
        s.fetch(a2.key, 0, 100).unwrap().is_empty(),
        "its queue is gone"
    );
    let (_, members) = s.group_state(b"g", a.key).unwrap();
    assert!(!members.contains(&("alice".to_string(), 4)), "{members:?}");
    // Nothing sent afterwards is queued for it; the others still get everything.
    let notify = s.send_message(b"g", &b, b"after", 1000, 60_000).unwrap();
    assert!(!notify.contains(&a2.key));
    assert!(s.fetch(a2.key, 0, 100).unwrap().is_empty());
    let for_c: Vec<Vec<u8>> = s
        .fetch(c.key, 0, 100)
        .unwrap()
        .into_iter()
        .map(|q| q.payload)
        .collect();
    assert!(
        for_c.ends_with(&[b"before".to_vec(), b"after".to_vec()]),
        "{for_c:?}"
    );
    // Its own sends are refused; it cannot be removed twice, re-registered under the same id,
    // or added to a group again.
    assert!(matches!(
        s.send_message(b"g", &a2, b"x", 1000, 60_000),
        Err(StoreError::NotAMember)
    ));
    assert!(matches!(
        s.remove_device("alice", 4),
        Err(StoreError::UnknownDevice(_))
    ));
    assert!(matches!(
        s.add_device("alice", 4, &[15; 32], b"c5"),
        Err(StoreError::DeviceExists(_))
    ));
    let (epoch, _) = s.group_state(b"g", a.key).unwrap();
    let r = s.commit(
        &CommitRequest {
            group_id: b"g",
            sender: &a,
            epoch,
            commit: b"c2",
            welcome: b"w",
            added: &add,
            removed: &[],
        },
        1000,
        60_000,
    );
    assert!(matches!(r, Err(StoreError::UnknownUser(_))), "{r:?}");
}
