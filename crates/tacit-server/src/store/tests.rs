//! Behaviour every `Store` backend must have, run here against SQLite (in memory). A new
//! backend runs the same tests by changing `store()`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;

fn store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in_memory().unwrap())
}

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

#[test]
fn handles_and_devices_are_unique() {
    let s = store();
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

#[test]
fn key_package_stock_is_capped() {
    let s = store();
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

#[test]
fn claims_skip_excluded_devices_and_report_unknown_users() {
    let s = store();
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

#[test]
fn concurrent_claims_hand_each_one_time_key_package_out_once() {
    let s = store();
    let d = s
        .create_account("bob", &[1; 32], 7, &[2; 32], b"c")
        .unwrap();
    let batch: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 8]).collect();
    s.upload_key_packages(d.key, &batch, Some(b"last"), 100)
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..5)
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

#[test]
fn sequence_numbers_are_gap_free_per_device_under_concurrency() {
    let s = store();
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

#[test]
fn a_refused_commit_changes_nothing() {
    let s = store();
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

#[test]
fn a_commit_routes_to_removed_members_then_drops_them() {
    let s = store();
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

#[test]
fn one_time_key_packages_are_handed_out_once_then_last_resort() {
    let s = store();
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

#[test]
fn epoch_is_compare_and_set_and_queues_are_ordered() {
    let s = store();
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

#[test]
fn full_queue_refuses_the_whole_send() {
    let s = store();
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

#[test]
fn expired_envelopes_are_purged() {
    let s = store();
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
    assert!(s.purge_expired(now_ms() + 10).unwrap() > 0);
    assert!(s.fetch(b.key, 0, 10).unwrap().is_empty());
}
