//! The server's protocol behaviour, driven by a raw client: authentication, bounds, ordering,
//! KeyPackage claims, rate limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_identity::{sign_auth, DeviceCertificate, DeviceKeyPair, IdentityKeyPair};
use tacit_proto::encode;
use tacit_proto::v1::{
    self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode, ProtocolVersion,
};

#[tokio::test]
async fn register_then_authenticate_on_a_new_connection() {
    let (_d, server) = start().await;
    let alice = Identity::new("alice");
    let _ = registered(&server.url(), &alice).await;
    let mut c = Raw::connect(&server.url()).await;
    match c.auth(&alice).await {
        Resp::Authenticated(a) => assert_eq!(a.device.unwrap().handle, "alice"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn replayed_or_foreign_signatures_are_refused() {
    let (_d, server) = start().await;
    let alice = Identity::new("alice");
    let first = registered(&server.url(), &alice).await;
    // A signature over an old challenge does not open a new connection.
    let old = sign_auth(&alice.device, &first.nonce, "alice", alice.device_id);
    let mut c = Raw::connect(&server.url()).await;
    let resp = c
        .request(Req::Authenticate(v1::Authenticate {
            version: ProtocolVersion::V1 as i32,
            device: Some(alice.addr()),
            signature: old.to_vec(),
        }))
        .await;
    assert_eq!(code(&resp), ErrorCode::AuthFailed);
    // A signature by another device key over the right challenge fails too.
    let mut c = Raw::connect(&server.url()).await;
    let other = DeviceKeyPair::generate();
    let sig = sign_auth(&other, &c.nonce, "alice", alice.device_id);
    let resp = c
        .request(Req::Authenticate(v1::Authenticate {
            version: ProtocolVersion::V1 as i32,
            device: Some(alice.addr()),
            signature: sig.to_vec(),
        }))
        .await;
    assert_eq!(code(&resp), ErrorCode::AuthFailed);
}

#[tokio::test]
async fn a_taken_handle_is_refused() {
    let (_d, server) = start().await;
    let _ = registered(&server.url(), &Identity::new("alice")).await;
    let mut c = Raw::connect(&server.url()).await;
    assert_eq!(
        code(&c.register(&Identity::new("alice")).await),
        ErrorCode::HandleTaken
    );
}

#[tokio::test]
async fn a_device_certified_by_another_identity_is_refused() {
    let (_d, server) = start().await;
    let alice = Identity::new("alice");
    let _ = registered(&server.url(), &alice).await;
    let forged = Identity::device_of("alice", IdentityKeyPair::generate(), 99);
    let mut c = Raw::connect(&server.url()).await;
    let sig = sign_auth(&forged.device, &c.nonce, "alice", 99);
    let resp = c
        .request(Req::RegisterDevice(v1::RegisterDevice {
            version: ProtocolVersion::V1 as i32,
            device: Some(forged.addr()),
            device_certificate: forged.cert.as_bytes().to_vec(),
            signature: sig.to_vec(),
        }))
        .await;
    assert_eq!(code(&resp), ErrorCode::InvalidCertificate);
    // A genuine second device, certified by alice's identity key, is accepted.
    let device = DeviceKeyPair::generate();
    let cert = DeviceCertificate::issue(&alice.identity, "alice", 7, &device.public(), 0);
    let mut c = Raw::connect(&server.url()).await;
    let sig = sign_auth(&device, &c.nonce, "alice", 7);
    let resp = c
        .request(Req::RegisterDevice(v1::RegisterDevice {
            version: ProtocolVersion::V1 as i32,
            device: Some(v1::DeviceAddress {
                handle: "alice".into(),
                device_id: 7,
            }),
            device_certificate: cert.as_bytes().to_vec(),
            signature: sig.to_vec(),
        }))
        .await;
    assert!(matches!(resp, Resp::Authenticated(_)), "{resp:?}");
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_errors_and_everyone_keeps_being_served() {
    let (_d, server) = start().await;
    let alice = Identity::new("alice");
    let mut a = registered(&server.url(), &alice).await;
    let mut bystander = registered(&server.url(), &Identity::new("bob")).await;

    a.send_bytes(vec![0xff, 0xff, 0xff, 0x01, 0x02]).await;
    match a.recv_answer().await.body {
        Some(Resp::Error(e)) => {
            assert_eq!(e.code, ErrorCode::MalformedFrame as i32);
            assert!(e.message.contains("malformed"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    let limit = tacit_proto::limits::MAX_FRAME_BYTES;
    a.send_bytes(vec![0u8; limit + 1]).await;
    match a.recv_answer().await.body {
        Some(Resp::Error(e)) => {
            assert_eq!(e.code, ErrorCode::FrameTooLarge as i32);
            assert!(e.message.contains(&limit.to_string()), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // A frame that decodes but breaks a field bound names the field.
    let resp = a
        .request(Req::SendMessage(v1::SendMessage {
            group_id: vec![1; 16],
            message: vec![0; tacit_proto::limits::MAX_MLS_MESSAGE_BYTES + 1],
        }))
        .await;
    match resp {
        Resp::Error(e) => assert!(e.message.contains("send_message.message"), "{}", e.message),
        other => panic!("{other:?}"),
    }
    // The same connection still works, and so does everyone else's.
    assert!(matches!(
        a.request(Req::Ping(v1::Ping {})).await,
        Resp::Pong(_)
    ));
    assert!(matches!(
        bystander.request(Req::Ping(v1::Ping {})).await,
        Resp::Pong(_)
    ));
    let mut fresh = Raw::connect(&server.url()).await;
    assert!(matches!(
        fresh.request(Req::Ping(v1::Ping {})).await,
        Resp::Pong(_)
    ));
}

#[tokio::test]
async fn requests_before_authentication_are_refused() {
    let (_d, server) = start().await;
    let mut c = Raw::connect(&server.url()).await;
    let resp = c
        .request(Req::LookupUser(v1::LookupUser {
            handle: "alice".into(),
        }))
        .await;
    assert_eq!(code(&resp), ErrorCode::NotAuthenticated);
}

#[tokio::test]
async fn one_time_key_packages_are_claimed_at_most_once_under_concurrency() {
    let (_d, server) = start().await;
    let bob = Identity::new("bob");
    let mut b = registered(&server.url(), &bob).await;
    let uploaded: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 40]).collect();
    let resp = b
        .request(Req::UploadKeyPackages(v1::UploadKeyPackages {
            one_time: uploaded.clone(),
            last_resort: vec![0xee; 40],
        }))
        .await;
    assert!(matches!(resp, Resp::Done(_)));

    let url = server.url();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = registered(&url, &Identity::new(&format!("claimer{i}"))).await;
            let mut got = Vec::new();
            for _ in 0..5 {
                match c
                    .request(Req::ClaimKeyPackages(v1::ClaimKeyPackages {
                        handle: "bob".into(),
                        exclude_device_ids: vec![],
                    }))
                    .await
                {
                    Resp::KeyPackagesClaimed(k) => got.extend(k.key_packages),
                    other => panic!("{other:?}"),
                }
            }
            got
        }));
    }
    let mut one_time = Vec::new();
    let mut last_resort = 0;
    for t in tasks {
        for k in t.await.unwrap() {
            if k.last_resort {
                assert_eq!(k.key_package, vec![0xee; 40]);
                last_resort += 1;
            } else {
                one_time.push(k.key_package);
            }
        }
    }
    one_time.sort();
    let mut expected = uploaded;
    expected.sort();
    assert_eq!(
        one_time, expected,
        "each one-time KeyPackage handed out exactly once"
    );
    assert_eq!(last_resort, 40 - 20);
}

async fn group_of_two(url: &str) -> (Raw, Identity, Raw, Identity) {
    let alice = Identity::new("alice");
    let bob = Identity::new("bob");
    let mut a = registered(url, &alice).await;
    let b = registered(url, &bob).await;
    assert!(matches!(
        a.request(Req::CreateGroup(v1::CreateGroup {
            group_id: b"g".to_vec()
        }))
        .await,
        Resp::Done(_)
    ));
    let resp = a
        .request(Req::SendCommit(v1::SendCommit {
            group_id: b"g".to_vec(),
            epoch: 0,
            commit: b"c0".to_vec(),
            welcome: b"w".to_vec(),
            added: vec![bob.addr()],
            removed: vec![],
        }))
        .await;
    assert!(
        matches!(resp, Resp::CommitAccepted(v1::CommitAccepted { epoch: 1 })),
        "{resp:?}"
    );
    (a, alice, b, bob)
}

#[tokio::test]
async fn only_one_commit_per_epoch_is_accepted() {
    let (_d, server) = start().await;
    let (mut a, _, mut b, _) = group_of_two(&server.url()).await;
    let first = a
        .request(Req::SendCommit(v1::SendCommit {
            group_id: b"g".to_vec(),
            epoch: 1,
            commit: b"ca".to_vec(),
            ..Default::default()
        }))
        .await;
    let second = b
        .request(Req::SendCommit(v1::SendCommit {
            group_id: b"g".to_vec(),
            epoch: 1,
            commit: b"cb".to_vec(),
            ..Default::default()
        }))
        .await;
    assert!(matches!(
        first,
        Resp::CommitAccepted(v1::CommitAccepted { epoch: 2 })
    ));
    match second {
        Resp::Error(e) => {
            assert_eq!(e.code, ErrorCode::EpochMovedOn as i32);
            assert_eq!(e.current_epoch, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn messages_are_pushed_in_order_and_acknowledged_ones_are_gone() {
    let (_d, server) = start().await;
    let (mut a, _, mut b, bob) = group_of_two(&server.url()).await;
    assert_eq!(
        b.next_envelope().await.kind,
        v1::EnvelopeKind::Welcome as i32
    );
    for i in 0..5u8 {
        let r = a
            .request(Req::SendMessage(v1::SendMessage {
                group_id: b"g".to_vec(),
                message: vec![i],
            }))
            .await;
        assert!(matches!(r, Resp::MessageAccepted(_)));
    }
    let mut last = 0;
    for i in 0..5u8 {
        let e = b.next_envelope().await;
        assert_eq!(e.payload, vec![i]);
        assert!(e.seq > last);
        assert_eq!(e.sender.unwrap().handle, "alice");
        last = e.seq;
    }
    assert!(matches!(
        b.request(Req::Ack(v1::Ack {
            up_to_seq: last - 2
        }))
        .await,
        Resp::Done(_)
    ));
    // A new connection gets only what was not acknowledged, in order.
    let mut b2 = Raw::connect(&server.url()).await;
    assert!(matches!(b2.auth(&bob).await, Resp::Authenticated(_)));
    let got: Vec<u8> = [b2.next_envelope().await, b2.next_envelope().await]
        .iter()
        .map(|e| e.payload[0])
        .collect();
    assert_eq!(got, vec![3, 4]);
}

#[tokio::test]
async fn a_non_member_cannot_send_to_a_group() {
    let (_d, server) = start().await;
    let _g = group_of_two(&server.url()).await;
    let mut eve = registered(&server.url(), &Identity::new("eve")).await;
    let r = eve
        .request(Req::SendMessage(v1::SendMessage {
            group_id: b"g".to_vec(),
            message: vec![1],
        }))
        .await;
    assert_eq!(code(&r), ErrorCode::NotAMember);
}

#[tokio::test]
async fn crossing_the_rate_limit_is_refused_with_a_retry_time() {
    let (_d, server) = start_with(|l| {
        l.messages_per_sec_per_device = 1;
        l.burst_per_device = 3;
    })
    .await;
    let (mut a, _, _b, _) = group_of_two(&server.url()).await;
    // The commit in set-up used one token.
    let mut refused = None;
    for i in 0..5u8 {
        let r = a
            .request(Req::SendMessage(v1::SendMessage {
                group_id: b"g".to_vec(),
                message: vec![i],
            }))
            .await;
        if let Resp::Error(e) = r {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("rate limit reached");
    assert_eq!(e.code, ErrorCode::RateLimited as i32);
    assert!(e.retry_after_ms > 0);
    assert!(matches!(
        a.request(Req::Ping(v1::Ping {})).await,
        Resp::Pong(_)
    ));
}

#[tokio::test]
async fn text_frames_are_refused_without_closing() {
    use futures_util::SinkExt;
    let (_d, server) = start().await;
    let mut c = Raw::connect(&server.url()).await;
    c.ws.send(tokio_tungstenite::tungstenite::Message::Text(
        "hello".into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        c.recv_answer().await.body.map(|b| code(&b)),
        Some(ErrorCode::MalformedFrame)
    );
    let _ = encode(&v1::Ping {});
    assert!(matches!(
        c.request(Req::Ping(v1::Ping {})).await,
        Resp::Pong(_)
    ));
}
