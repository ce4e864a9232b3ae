//! Pipelining: a client may send many requests without waiting for answers. Its messages are
//! committed in the order it sent them, every request is answered once and in request order, a
//! refused request fails alone, and nothing acknowledged is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode};

const G: &[u8] = b"group-1";

/// alice creates G with bob in it; returns alice's connection.
async fn pair(url: &str, alice: &Identity, bob: &Identity) -> Raw {
    let mut a = registered(url, alice).await;
    let _ = registered(url, bob).await;
    assert!(matches!(a.create_group(G).await, Resp::Done(_)));
    let r = a.commit(G, 0, b"add", &[bob], &[]).await;
    assert!(matches!(r, Resp::CommitAccepted(_)), "{r:?}");
    a
}

fn send_message(group_id: &[u8], i: u32) -> Req {
    Req::SendMessage(v1::SendMessage {
        group_id: group_id.to_vec(),
        message: i.to_le_bytes().to_vec(),
    })
}

/// The answers to requests `first..first + n`, checked to come in request order.
async fn answers_in_order(c: &mut Raw, first: u64, n: u64) -> Vec<Resp> {
    let mut got = Vec::new();
    while (got.len() as u64) < n {
        let f = c.recv_answer().await;
        assert_eq!(f.request_id, first + got.len() as u64, "answers in order");
        got.push(f.body.unwrap());
    }
    got
}

/// bob's messages (after the Welcome) from a fresh connection, acknowledged as read.
async fn messages_of(url: &str, bob: &Identity) -> Vec<u32> {
    let mut b = signed_in(url, bob).await;
    let (got, last) = b.drain().await;
    assert!(matches!(
        b.request(Req::Ack(v1::Ack { up_to_seq: last })).await,
        Resp::Done(_)
    ));
    let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=got.len() as u64).collect::<Vec<_>>(), "gap-free");
    got.iter()
        .filter(|e| e.kind == v1::EnvelopeKind::Message as i32)
        .map(|e| u32::from_le_bytes(e.payload.as_slice().try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn pipelined_messages_keep_their_order_and_a_refused_one_fails_alone() {
    let (_d, server) = start_with(|l| {
        l.messages_per_sec_per_device = 1_000_000;
        l.burst_per_device = 1_000_000;
    })
    .await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = pair(&url, &alice, &bob).await;
    // 300 requests without reading an answer (more than a connection keeps in flight): messages,
    // one to a group that does not exist (refused, alone), and a ping (not pipelined: it waits
    // for everything before it).
    const N: u32 = 300;
    const FIRST: u64 = 1000;
    for i in 0..N {
        let body = match i {
            100 => send_message(b"no such group", i),
            200 => Req::Ping(v1::Ping {}),
            _ => send_message(G, i),
        };
        a.send(FIRST + u64::from(i), body).await;
    }
    let answers = answers_in_order(&mut a, FIRST, u64::from(N)).await;
    for (i, r) in answers.iter().enumerate() {
        match i {
            100 => assert_eq!(code(r), ErrorCode::UnknownGroup),
            200 => assert!(matches!(r, Resp::Pong(_)), "{r:?}"),
            _ => assert!(matches!(r, Resp::MessageAccepted(_)), "{i}: {r:?}"),
        }
    }
    // Exactly the accepted ones, once each, in the order they were sent.
    let expected: Vec<u32> = (0..N).filter(|i| *i != 100 && *i != 200).collect();
    assert_eq!(messages_of(&url, &bob).await, expected);
}

#[tokio::test]
async fn rate_limited_pipelined_messages_are_refused_in_place() {
    // A burst of 100 per device, then 1 per second: far fewer than N get through however
    // slowly the machine sends (the set-up's commit also takes a token).
    let (_d, server) = start_with(|l| {
        l.burst_per_device = 100;
        l.messages_per_sec_per_device = 1;
    })
    .await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = pair(&url, &alice, &bob).await;
    const N: u32 = 400;
    for i in 0..N {
        a.send(1 + u64::from(i), send_message(G, i)).await;
    }
    let answers = answers_in_order(&mut a, 1, u64::from(N)).await;
    let mut accepted = Vec::new();
    for (i, r) in answers.iter().enumerate() {
        match r {
            Resp::MessageAccepted(_) => accepted.push(i as u32),
            other => assert_eq!(code(other), ErrorCode::RateLimited),
        }
    }
    assert!(
        accepted.len() >= 95,
        "the burst got through: {}",
        accepted.len()
    );
    assert!(accepted.len() < N as usize, "the limiter refused some");
    assert_eq!(messages_of(&url, &bob).await, accepted);
}

#[tokio::test]
async fn acknowledged_pipelined_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = pair(&url, &alice, &bob).await;
    const N: u32 = 150;
    for i in 0..N {
        a.send(1 + u64::from(i), send_message(G, i)).await;
    }
    let answers = answers_in_order(&mut a, 1, u64::from(N)).await;
    assert!(answers
        .iter()
        .all(|r| matches!(r, Resp::MessageAccepted(_))));
    drop(a);
    server.shutdown().await;
    let server = start_in(dir.path()).await;
    assert_eq!(
        messages_of(&server.url(), &bob).await,
        (0..N).collect::<Vec<_>>()
    );
}
