//! Delivery: per-device queues in order, acknowledgments, offline devices, routing changes made
//! by commits, queue bounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode};

const G: &[u8] = b"group-1";

/// alice creates G and adds every one of `others`; returns alice's connection.
async fn group_with(url: &str, alice: &Identity, others: &[&Identity]) -> Raw {
    let mut a = registered(url, alice).await;
    for o in others {
        // Registering on a connection of its own, then leaving: the device exists, offline.
        let _ = registered(url, o).await;
    }
    assert!(matches!(a.create_group(G).await, Resp::Done(_)));
    let r = a.commit(G, 0, b"add", others, &[]).await;
    assert!(
        matches!(r, Resp::CommitAccepted(v1::CommitAccepted { epoch: 1 })),
        "{r:?}"
    );
    a
}

#[tokio::test]
async fn an_offline_device_gets_its_queue_in_order_on_reconnect() {
    let (_d, server) = start().await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = group_with(&url, &alice, &[&bob]).await;
    for i in 0..10u8 {
        assert!(matches!(a.message(G, &[i]).await, Resp::MessageAccepted(_)));
    }
    let mut b = signed_in(&url, &bob).await;
    let (got, last_seq) = b.drain().await;
    assert_eq!(got.len(), 11, "the Welcome, then ten messages");
    assert_eq!(got[0].kind, v1::EnvelopeKind::Welcome as i32);
    assert_eq!(got[0].payload, b"welcome");
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<u64>>(), "gap-free, in order");
    assert_eq!(last_seq, 11);
    for (i, e) in got[1..].iter().enumerate() {
        assert_eq!(e.kind, v1::EnvelopeKind::Message as i32);
        assert_eq!(e.payload, vec![i as u8]);
        assert_eq!(e.group_id, G);
        let sender = e.sender.clone().unwrap();
        assert_eq!(
            (sender.handle.as_str(), sender.device_id),
            ("alice", alice.device_id)
        );
    }
}

#[tokio::test]
async fn an_empty_queue_is_reported_drained_right_after_authentication() {
    let (_d, server) = start().await;
    let mut c = registered(&server.url(), &Identity::new("alice")).await;
    let (got, last) = c.drain().await;
    assert!(got.is_empty());
    assert_eq!(last, 0);
}

#[tokio::test]
async fn acknowledged_envelopes_are_not_delivered_again() {
    let (_d, server) = start().await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = group_with(&url, &alice, &[&bob]).await;
    let mut b = signed_in(&url, &bob).await;
    let (welcome, _) = b.drain().await;
    assert_eq!(welcome.len(), 1);
    for i in 0..4u8 {
        assert!(matches!(a.message(G, &[i]).await, Resp::MessageAccepted(_)));
    }
    let mut live = Vec::new();
    for _ in 0..4 {
        live.push(b.next_envelope().await);
    }
    assert_eq!(
        live.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "connected devices get pushes at once, in order"
    );
    // An Ack with request_id 0 wants no answer; the next answer is the Pong.
    b.send(
        0,
        Req::Ack(v1::Ack {
            up_to_seq: live[1].seq,
        }),
    )
    .await;
    assert!(b.ping().await);
    drop(b);
    let mut b = signed_in(&url, &bob).await;
    let (again, last) = b.drain().await;
    assert_eq!(
        again.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
        vec![2, 3],
        "only the unacknowledged ones come again"
    );
    assert_eq!(last, live[3].seq);
    // Acknowledging everything empties the queue for good.
    assert!(matches!(
        b.request(Req::Ack(v1::Ack { up_to_seq: last })).await,
        Resp::Done(_)
    ));
    drop(b);
    let mut b = signed_in(&url, &bob).await;
    assert!(b.drain().await.0.is_empty());
}

#[tokio::test]
async fn a_commit_reaches_removed_members_and_its_welcome_reaches_added_ones() {
    let (_d, server) = start().await;
    let url = server.url();
    let (alice, bob, carol) = (
        Identity::new("alice"),
        Identity::new("bob"),
        Identity::new("carol"),
    );
    let mut a = group_with(&url, &alice, &[&bob]).await;
    let _ = registered(&url, &carol).await;
    let r = a.commit(G, 1, b"swap", &[&carol], &[&bob]).await;
    assert!(
        matches!(r, Resp::CommitAccepted(v1::CommitAccepted { epoch: 2 })),
        "{r:?}"
    );

    let mut b = signed_in(&url, &bob).await;
    let (to_bob, _) = b.drain().await;
    let kinds: Vec<(i32, Vec<u8>)> = to_bob.iter().map(|e| (e.kind, e.payload.clone())).collect();
    assert_eq!(
        kinds,
        vec![
            (v1::EnvelopeKind::Welcome as i32, b"welcome".to_vec()),
            (v1::EnvelopeKind::Commit as i32, b"swap".to_vec()),
        ],
        "the removed member learns of its removal"
    );
    let mut c = signed_in(&url, &carol).await;
    let (to_carol, _) = c.drain().await;
    assert_eq!(to_carol.len(), 1);
    assert_eq!(to_carol[0].kind, v1::EnvelopeKind::Welcome as i32);

    // Routing follows the commit: bob is out, carol is in.
    assert_eq!(code(&b.message(G, b"x").await), ErrorCode::NotAMember);
    assert!(matches!(
        a.message(G, b"hi").await,
        Resp::MessageAccepted(_)
    ));
    assert_eq!(c.next_envelope().await.payload, b"hi");
    match c
        .request(Req::FetchGroupState(v1::FetchGroupState {
            group_id: G.to_vec(),
        }))
        .await
    {
        Resp::GroupState(s) => {
            assert_eq!(s.epoch, 2);
            let mut members: Vec<String> = s.members.into_iter().map(|m| m.handle).collect();
            members.sort();
            assert_eq!(members, vec!["alice", "carol"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        code(
            &b.request(Req::FetchGroupState(v1::FetchGroupState {
                group_id: G.to_vec()
            }))
            .await
        ),
        ErrorCode::NotAMember,
        "group state is for members only"
    );
}

#[tokio::test]
async fn adding_an_unknown_device_is_refused_and_changes_nothing() {
    let (_d, server) = start().await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = group_with(&url, &alice, &[&bob]).await;
    let ghost = Identity::new("ghost");
    match a.commit(G, 1, b"c", &[&ghost], &[]).await {
        Resp::Error(e) => {
            assert_eq!(e.code, ErrorCode::UnknownUser as i32);
            assert!(e.message.contains("ghost"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // The epoch did not move and bob got nothing from the refused commit.
    let r = a.commit(G, 1, b"c", &[], &[]).await;
    assert!(
        matches!(r, Resp::CommitAccepted(v1::CommitAccepted { epoch: 2 })),
        "{r:?}"
    );
    let mut b = signed_in(&url, &bob).await;
    let (got, _) = b.drain().await;
    assert_eq!(
        got.len(),
        2,
        "the Welcome and the one accepted commit: {got:?}"
    );
}

#[tokio::test]
async fn a_send_that_would_overflow_a_queue_is_refused_whole() {
    let (_d, server) = start_with(|l| l.max_queue_len_per_device = 3).await;
    let url = server.url();
    let (alice, bob, carol) = (
        Identity::new("alice"),
        Identity::new("bob"),
        Identity::new("carol"),
    );
    let mut a = group_with(&url, &alice, &[&bob]).await;
    // bob: Welcome + 2 messages = 3, full.
    for i in 0..2u8 {
        assert!(matches!(a.message(G, &[i]).await, Resp::MessageAccepted(_)));
    }
    match a.message(G, b"too much").await {
        Resp::Error(e) => {
            assert_eq!(e.code, ErrorCode::LimitExceeded as i32);
            assert!(e.message.contains("bob"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // Adding carol fails too (bob cannot take the commit) and carol gets no Welcome.
    let _ = registered(&url, &carol).await;
    assert_eq!(
        code(&a.commit(G, 1, b"c", &[&carol], &[]).await),
        ErrorCode::LimitExceeded
    );
    let mut c = signed_in(&url, &carol).await;
    assert!(c.drain().await.0.is_empty(), "nothing partially enqueued");
    // Once bob catches up, sends go through again.
    let mut b = signed_in(&url, &bob).await;
    let (got, last) = b.drain().await;
    assert_eq!(got.len(), 3);
    assert!(matches!(
        b.request(Req::Ack(v1::Ack { up_to_seq: last })).await,
        Resp::Done(_)
    ));
    assert!(matches!(
        a.message(G, b"now").await,
        Resp::MessageAccepted(_)
    ));
}

#[tokio::test]
async fn creating_an_existing_group_is_refused() {
    let (_d, server) = start().await;
    let mut a = registered(&server.url(), &Identity::new("alice")).await;
    assert!(matches!(a.create_group(G).await, Resp::Done(_)));
    let mut b = registered(&server.url(), &Identity::new("bob")).await;
    assert_eq!(code(&b.create_group(G).await), ErrorCode::GroupExists);
    assert_eq!(
        code(&b.message(b"nope", b"x").await),
        ErrorCode::UnknownGroup
    );
}

/// Sends `n` messages to G tagged `tag` (then their index) without waiting for answers, then
/// checks that every one was accepted.
async fn pipeline_messages(conn: &mut Raw, tag: u8, n: u32) {
    for i in 0..n {
        let body = Req::SendMessage(v1::SendMessage {
            group_id: G.to_vec(),
            message: [&[tag][..], &i.to_le_bytes()].concat(),
        });
        conn.send(10 + u64::from(i), body).await;
    }
    for _ in 0..n {
        let f = conn.recv_answer().await;
        assert!(matches!(f.body, Some(Resp::MessageAccepted(_))), "{f:?}");
    }
}

#[tokio::test]
async fn a_connected_device_gets_every_envelope_pushed_once_and_in_order_from_concurrent_senders() {
    let (_d, server) = start_with(|l| {
        l.messages_per_sec_per_device = 1_000_000;
        l.burst_per_device = 1_000_000;
    })
    .await;
    let url = server.url();
    let (alice, bob, carol) = (
        Identity::new("alice"),
        Identity::new("bob"),
        Identity::new("carol"),
    );
    let mut a = group_with(&url, &alice, &[&bob, &carol]).await;
    // bob is connected and has had his backlog (the Welcome) before anything else is sent, so
    // what follows reaches him pushed, not read on reconnect.
    let mut b = signed_in(&url, &bob).await;
    let (backlog, _) = b.drain().await;
    assert_eq!(backlog.len(), 1);
    let mut c = signed_in(&url, &carol).await;
    let _ = c.drain().await;

    // alice and carol each pipeline N messages without waiting for answers, at the same time;
    // alice's commits (not pushed in memory: bob's delivery must read them from the database)
    // land in between.
    const N: u32 = 300;
    let alice_sends = async {
        pipeline_messages(&mut a, b'a', N).await;
        for epoch in 1..4 {
            let r = a.commit(G, epoch, b"update", &[], &[]).await;
            assert!(matches!(r, Resp::CommitAccepted(_)), "{r:?}");
        }
    };
    let carol_sends = pipeline_messages(&mut c, b'c', N);
    tokio::join!(alice_sends, carol_sends);

    // bob: 2N messages and 3 commits, seqs 2.. without a gap or a repeat, each sender's
    // messages in the order sent.
    let mut got = Vec::new();
    while got.len() < 2 * N as usize + 3 {
        got.push(b.next_envelope().await);
    }
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (2..2 + got.len() as u64).collect::<Vec<_>>());
    for sender in [b'a', b'c'] {
        let order: Vec<u32> = got
            .iter()
            .filter(|e| e.kind == v1::EnvelopeKind::Message as i32 && e.payload[0] == sender)
            .map(|e| u32::from_le_bytes(e.payload[1..5].try_into().unwrap()))
            .collect();
        assert_eq!(order, (0..N).collect::<Vec<_>>(), "{}", sender as char);
    }
    let commits = got
        .iter()
        .filter(|e| e.kind == v1::EnvelopeKind::Commit as i32)
        .count();
    assert_eq!(commits, 3);
    // Nothing more (this can only pass too early, never fail on a slow machine).
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), b.next_envelope()).await;
    assert!(more.is_err(), "an envelope too many: {more:?}");
}
