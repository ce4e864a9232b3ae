//! End-to-end behaviour over a real server: 1:1, offline delivery, groups, removal,
//! multi-device, concurrent commits, KeyPackage exhaustion, restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_core::Event;

#[tokio::test]
async fn one_to_one_both_directions() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;

    alice.send("bob", "hello bob").await.unwrap();
    let ev = bob.sync().await.unwrap();
    assert_eq!(texts_from(&ev, "alice"), vec!["hello bob"]);

    bob.send("alice", "hello alice").await.unwrap();
    let ev = alice.sync().await.unwrap();
    assert_eq!(texts_from(&ev, "bob"), vec!["hello alice"]);

    // Both sides use the same conversation, not a second one.
    assert_eq!(alice.device().conversations().unwrap().len(), 1);
    assert_eq!(bob.device().conversations().unwrap().len(), 1);
    let (_, history) = bob.history("alice").unwrap();
    let lines: Vec<_> = history
        .iter()
        .filter(|h| !h.system)
        .map(|h| h.text.as_str())
        .collect();
    assert_eq!(lines, vec!["hello bob", "hello alice"]);
}

#[tokio::test]
async fn offline_recipient_receives_everything_in_order_on_reconnect() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    bob.disconnect();
    drop(bob);

    let sent: Vec<String> = (0..30).map(|i| format!("message {i}")).collect();
    for m in &sent {
        alice.send("bob", m).await.unwrap();
    }
    let mut bob = reopen_client(root.path(), "bob");
    let ev = bob.sync().await.unwrap();
    assert_eq!(texts_from(&ev, "alice"), sent);
    // Acknowledged: a second sync brings nothing again.
    bob.disconnect();
    let again = bob.sync().await.unwrap();
    assert!(texts(&again).is_empty(), "redelivered: {again:?}");
}

#[tokio::test]
async fn group_of_five_with_adds_and_removes() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut clients = Vec::new();
    for n in names {
        clients.push(account(root.path(), &server, n).await);
    }
    let members: Vec<String> = names[1..5].iter().map(|s| s.to_string()).collect();
    clients[0].create_group("five", &members).await.unwrap();
    clients[0].send("five", "hi all").await.unwrap();
    for c in clients.iter_mut().take(5).skip(1) {
        let ev = c.sync().await.unwrap();
        assert_eq!(texts_from(&ev, "alice"), vec!["hi all"]);
    }
    // Add frank, remove dave.
    let gid = group_id(&mut clients[0], "five").await;
    clients[0]
        .add_members(&gid, &["frank".into()])
        .await
        .unwrap();
    clients[0]
        .remove_members(&gid, &["dave".into()])
        .await
        .unwrap();
    clients[0].send("five", "after changes").await.unwrap();
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        let ev = c.sync().await.unwrap();
        let got = texts_from(&ev, "alice");
        match names[i] {
            "dave" => {
                assert!(got.is_empty(), "dave still receives: {got:?}");
                assert!(ev
                    .iter()
                    .any(|e| matches!(e, Event::RemovedFromConversation { .. })));
            }
            _ => assert_eq!(
                got.last().map(String::as_str),
                Some("after changes"),
                "{}",
                names[i]
            ),
        }
    }
    let mut handles: Vec<String> = clients[0]
        .device()
        .members(&gid)
        .unwrap()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    handles.sort();
    assert_eq!(handles, vec!["alice", "bob", "carol", "erin", "frank"]);
    // A member other than the creator can send, and everyone present reads it.
    clients[5].send("five", "frank here").await.unwrap();
    let ev = clients[1].sync().await.unwrap();
    assert_eq!(texts_from(&ev, "frank"), vec!["frank here"]);
}

#[tokio::test]
async fn removed_member_cannot_decrypt_later_messages() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    let mut carol = account(root.path(), &server, "carol").await;
    alice
        .create_group("g", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    let (_, before) = alice.send("g", "before").await.unwrap();
    carol.sync().await.unwrap();
    let gid = group_id(&mut alice, "g").await;
    // Carol can read a message of her epoch.
    assert!(
        carol.device().probe_decrypt(&gid, &before.message).is_err(),
        "already consumed once"
    );
    alice.remove_members(&gid, &["carol".into()]).await.unwrap();
    let ev = carol.sync().await.unwrap();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::RemovedFromConversation { .. })));
    let (_, after) = alice.send("g", "after removal").await.unwrap();
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "alice"),
        vec!["before", "after removal"]
    );
    // Nothing is routed to carol, and even with the ciphertext in hand she cannot decrypt it.
    assert!(texts(&carol.sync().await.unwrap()).is_empty());
    assert!(carol.device().probe_decrypt(&gid, &after.message).is_err());
    assert!(carol.send("g", "still here?").await.is_err());
}

#[tokio::test]
async fn multi_device_both_receive_and_see_each_others_messages() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut laptop = account(root.path(), &server, "alice").await;
    let mut phone = new_client(root.path(), "alice-phone");
    let mut bob = account(root.path(), &server, "bob").await;
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let link = laptop.link_device(
        move |c| {
            let _ = tx.send(c.to_owned());
        },
        std::time::Duration::from_secs(30),
    );
    let url = server.url.clone();
    let join = async {
        phone
            .join_device(&rx.await.unwrap(), &url, std::time::Duration::from_secs(30))
            .await
    };
    let (a, b) = tokio::join!(link, join);
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(laptop.devices().await.unwrap().len(), 2);

    bob.send("alice", "to both of you").await.unwrap();
    assert_eq!(
        texts_from(&laptop.sync().await.unwrap(), "bob"),
        vec!["to both of you"]
    );
    assert_eq!(
        texts_from(&phone.sync().await.unwrap(), "bob"),
        vec!["to both of you"]
    );

    laptop.send("bob", "from the laptop").await.unwrap();
    phone.send("bob", "from the phone").await.unwrap();
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "alice"),
        vec!["from the laptop", "from the phone"]
    );
    assert_eq!(
        texts_from(&phone.sync().await.unwrap(), "alice"),
        vec!["from the laptop"]
    );
    assert_eq!(
        texts_from(&laptop.sync().await.unwrap(), "alice"),
        vec!["from the phone"]
    );
    // Same conversation on both devices.
    assert_eq!(laptop.device().conversations().unwrap().len(), 1);
    assert_eq!(phone.device().conversations().unwrap().len(), 1);
}

#[tokio::test]
async fn two_members_committing_at_once_converge() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    let mut carol = account(root.path(), &server, "carol").await;
    let _dave = account(root.path(), &server, "dave").await;
    let _erin = account(root.path(), &server, "erin").await;
    alice
        .create_group("race", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    let gid = group_id(&mut alice, "race").await;
    let epoch = alice.device().epoch(&gid).unwrap();
    assert_eq!(bob.device().epoch(&gid).unwrap(), epoch);

    // Both commit against the same epoch at the same time: exactly one wins first; the other
    // is told the epoch moved on, catches up and retries by itself.
    let (dave, erin) = (vec!["dave".to_string()], vec!["erin".to_string()]);
    let (a, b) = tokio::join!(alice.add_members(&gid, &dave), bob.add_members(&gid, &erin));
    a.unwrap();
    b.unwrap();
    for c in [&mut alice, &mut bob, &mut carol] {
        c.sync().await.unwrap();
    }
    let e = alice.device().epoch(&gid).unwrap();
    assert_eq!(e, epoch + 2, "both adds applied, one after the other");
    assert_eq!(bob.device().epoch(&gid).unwrap(), e);
    assert_eq!(carol.device().epoch(&gid).unwrap(), e);
    let mut ma: Vec<_> = alice.device().members(&gid).unwrap();
    let mut mb: Vec<_> = bob.device().members(&gid).unwrap();
    let mut mc: Vec<_> = carol.device().members(&gid).unwrap();
    ma.sort();
    mb.sort();
    mc.sort();
    assert_eq!(ma, mb);
    assert_eq!(ma, mc);
    assert_eq!(ma.len(), 5);
    // And the group still works for everyone.
    carol.send("race", "all in sync").await.unwrap();
    assert_eq!(
        texts_from(&alice.sync().await.unwrap(), "carol"),
        vec!["all in sync"]
    );
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "carol"),
        vec!["all in sync"]
    );
}

#[tokio::test]
async fn exhausted_one_time_key_packages_fall_back_to_last_resort() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut bob = account(root.path(), &server, "bob").await;
    bob.disconnect(); // bob stays offline: no top-up
    let stock = tacit_core::CoreConfig::default().key_package_stock as usize;
    // More people start conversations with bob than he has one-time KeyPackages.
    let mut senders = Vec::new();
    for i in 0..stock + 3 {
        let name = format!("user{i}");
        let mut c = account(root.path(), &server, &name).await;
        c.send("bob", &format!("hi from {name}")).await.unwrap();
        senders.push(c);
    }
    let ev = bob.sync().await.unwrap();
    let got = texts(&ev);
    assert_eq!(
        got.len(),
        stock + 3,
        "every conversation readable, including last-resort ones: {ev:?}"
    );
    // Bob's client topped the stock up again on connect.
    assert_eq!(bob.device().conversations().unwrap().len(), stock + 3);
}

#[tokio::test]
async fn server_restart_between_send_and_receive_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    alice.create_group("g", &["bob".into()]).await.unwrap();
    for i in 0..10 {
        alice.send("g", &format!("m{i}")).await.unwrap();
    }
    server.restart().await;
    alice.disconnect();
    bob.disconnect();
    let ev = bob.sync().await.unwrap();
    assert_eq!(
        texts_from(&ev, "alice"),
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    bob.send("g", "after restart").await.unwrap();
    assert_eq!(
        texts_from(&alice.sync().await.unwrap(), "bob"),
        vec!["after restart"]
    );
}

#[tokio::test]
async fn outbox_survives_a_client_restart_while_the_server_is_down() {
    let root = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    alice.send("bob", "first").await.unwrap();
    bob.sync().await.unwrap();
    server.stop().await;
    // The server is down: encryption and the outbox still work, sending fails.
    alice.disconnect();
    assert!(alice.send("bob", "queued while down").await.is_err());
    drop(alice);
    server.restart().await;
    let mut alice = reopen_client(root.path(), "alice");
    alice.sync().await.unwrap(); // connecting flushes the outbox
    assert_eq!(alice.device().outbox().unwrap().len(), 0);
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "alice"),
        vec!["queued while down"]
    );
}

#[tokio::test]
async fn a_member_who_leaves_is_removed_by_the_others() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    let mut carol = account(root.path(), &server, "carol").await;
    alice
        .create_group("club", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    let gid = group_id(&mut carol, "club").await;

    carol.leave(&gid).await.unwrap();
    // The next member to sync commits carol's removal by itself.
    let ev = alice.sync().await.unwrap();
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::LeaveRequested { handle, .. } if handle == "carol")),
        "{ev:?}"
    );
    let mut members: Vec<String> = alice
        .device()
        .members(&gid)
        .unwrap()
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    members.sort();
    assert_eq!(members, vec!["alice", "bob"]);
    bob.sync().await.unwrap();
    assert_eq!(
        bob.device().epoch(&gid).unwrap(),
        alice.device().epoch(&gid).unwrap()
    );
    alice.send("club", "after carol left").await.unwrap();
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "alice"),
        vec!["after carol left"]
    );
    assert!(texts(&carol.sync().await.unwrap()).is_empty());
    assert!(carol.send("club", "am I here?").await.is_err());
}

#[tokio::test]
async fn a_commit_accepted_while_its_answer_was_lost_is_merged_from_its_echo() {
    use tacit_client::{Connection, TlsOptions};
    use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp};

    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    alice.send("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    let group = group_id(&mut alice, "bob").await;

    // alice stages a key update; it reaches the server and is accepted, but the answer never
    // reaches her client (the connection drops, the process dies).
    let outgoing = alice.device().prepare_self_update(&group).unwrap();
    let reg = alice.device().registration().unwrap();
    let conn = Connection::connect(&server.url, &TlsOptions::default())
        .await
        .unwrap();
    let signature = alice.device().sign_auth(&conn.nonce).unwrap();
    let authenticated = conn
        .request(Req::Authenticate(v1::Authenticate {
            version: v1::ProtocolVersion::V1 as i32,
            device: Some(v1::DeviceAddress {
                handle: reg.handle.clone(),
                device_id: reg.device_id,
            }),
            signature: signature.to_vec(),
        }))
        .await
        .unwrap();
    assert!(matches!(authenticated, Resp::Authenticated(_)));
    let accepted = conn
        .request(Req::SendCommit(v1::SendCommit {
            group_id: outgoing.group_id.clone(),
            epoch: outgoing.epoch,
            commit: outgoing.commit.clone(),
            welcome: vec![],
            added: vec![],
            removed: vec![],
        }))
        .await
        .unwrap();
    assert!(matches!(accepted, Resp::CommitAccepted(_)));
    drop(conn);
    alice.disconnect();
    drop(alice);

    // On restart the client resends its in-flight commit; the server says the epoch moved on
    // (it was this very commit), and the echo in the queue merges it.
    let mut alice = reopen_client(root.path(), "alice");
    alice.sync().await.unwrap();
    bob.send("alice", "in the new epoch").await.unwrap();
    let ev = alice.sync().await.unwrap();
    assert_eq!(texts_from(&ev, "bob"), vec!["in the new epoch"]);
    alice.send("bob", "me too").await.unwrap();
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "alice"),
        vec!["me too"]
    );
}
