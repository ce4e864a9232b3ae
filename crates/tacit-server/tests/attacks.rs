//! Authentication attacks, each against a real server with raw clients: acknowledging or reading
//! another device's queue, a removed device coming back, draining a victim's KeyPackages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_identity::{sign_auth, IdentityKeyPair};
use tacit_proto::v1::{
    self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode, ProtocolVersion,
};

/// A second device of `of`'s user, certified by the same identity key and registered.
async fn second_device(url: &str, of: &Identity) -> (Raw, Identity) {
    let identity = IdentityKeyPair::from_secret_bytes(&of.identity.to_secret_bytes());
    let who = Identity::device_of(&of.handle, identity, rand::random());
    let mut c = Raw::connect(url).await;
    let sig = sign_auth(&who.device, &c.nonce, &who.handle, who.device_id);
    let r = c
        .request(Req::RegisterDevice(v1::RegisterDevice {
            version: ProtocolVersion::V1 as i32,
            device: Some(who.addr()),
            device_certificate: who.cert.as_bytes().to_vec(),
            signature: sig.to_vec(),
        }))
        .await;
    assert!(matches!(r, Resp::Authenticated(_)), "{r:?}");
    (c, who)
}

fn error(resp: &Resp) -> &v1::Error {
    match resp {
        Resp::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn acknowledging_another_devices_queue_deletes_nothing_of_it() {
    let (_d, server) = start().await;
    let url = server.url();
    let alice = Identity::new("alice");
    let bob = Identity::new("bob");
    let mut a = registered(&url, &alice).await;
    drop(registered(&url, &bob).await);
    // bob's second device (same user, so the strongest case) and eve, another user.
    let (mut bob2, _) = second_device(&url, &bob).await;
    let mut eve = registered(&url, &Identity::new("eve")).await;
    assert!(matches!(a.create_group(b"g").await, Resp::Done(_)));
    let r = a.commit(b"g", 0, b"c0", &[&bob], &[]).await;
    assert!(matches!(r, Resp::CommitAccepted(_)), "{r:?}");
    for i in 0..3u8 {
        assert!(matches!(
            a.message(b"g", &[i]).await,
            Resp::MessageAccepted(_)
        ));
    }
    // bob (offline) now has seq 1..=4 waiting: the Welcome and three messages. Sequence numbers
    // are small and easy to guess; both attackers acknowledge everything they could name.
    for attacker in [&mut bob2, &mut eve] {
        for up_to_seq in [1, 4, 1 << 40, i64::MAX as u64, u64::MAX] {
            assert!(matches!(
                attacker.request(Req::Ack(v1::Ack { up_to_seq })).await,
                Resp::Done(_)
            ));
        }
        // An address in a frame after authentication does not switch devices.
        let r = attacker
            .request(Req::Authenticate(v1::Authenticate {
                version: ProtocolVersion::V1 as i32,
                device: Some(bob.addr()),
                signature: vec![0; 64],
            }))
            .await;
        assert_eq!(code(&r), ErrorCode::MalformedFrame, "{r:?}");
        // Their own queues hold nothing of bob's.
        let (mine, _) = attacker.drain().await;
        assert!(mine.iter().all(|e| e.group_id != b"g"), "{mine:?}");
        // Nor does the group's routing open to them.
        let r = attacker
            .request(Req::FetchGroupState(v1::FetchGroupState {
                group_id: b"g".to_vec(),
            }))
            .await;
        assert_eq!(code(&r), ErrorCode::NotAMember);
    }
    // Without bob's device key there is no way in as bob.
    let mut c = Raw::connect(&url).await;
    let forged = sign_auth(&Identity::new("bob").device, &c.nonce, "bob", bob.device_id);
    let r = c
        .request(Req::Authenticate(v1::Authenticate {
            version: ProtocolVersion::V1 as i32,
            device: Some(bob.addr()),
            signature: forged.to_vec(),
        }))
        .await;
    assert_eq!(code(&r), ErrorCode::AuthFailed);
    // bob gets every envelope, in order.
    let mut b = signed_in(&url, &bob).await;
    let (got, last) = b.drain().await;
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(got[0].kind, v1::EnvelopeKind::Welcome as i32);
    assert_eq!(
        got[1..]
            .iter()
            .map(|e| e.payload.clone())
            .collect::<Vec<_>>(),
        vec![vec![0], vec![1], vec![2]]
    );
    assert_eq!(last, 4);
}

#[tokio::test]
async fn a_removed_device_is_locked_out_and_forgotten() {
    let (_d, server) = start().await;
    let url = server.url();
    let alice = Identity::new("alice");
    let bob = Identity::new("bob");
    let mut a = registered(&url, &alice).await;
    let (mut lost, lost_id) = second_device(&url, &alice).await;
    let mut b = registered(&url, &bob).await;
    for c in [&mut lost, &mut b] {
        let r = c
            .request(Req::UploadKeyPackages(v1::UploadKeyPackages {
                one_time: vec![vec![7; 40]],
                last_resort: vec![8; 40],
            }))
            .await;
        assert!(matches!(r, Resp::Done(_)));
    }
    assert!(matches!(a.create_group(b"g").await, Resp::Done(_)));
    let r = a.commit(b"g", 0, b"c0", &[&bob, &lost_id], &[]).await;
    assert!(matches!(r, Resp::CommitAccepted(_)), "{r:?}");
    let remove = |device_id| Req::RemoveDevice(v1::RemoveDevice { device_id });

    // Another user cannot remove it (the id is looked up among bob's own devices).
    let r = b.request(remove(lost_id.device_id)).await;
    assert_eq!(code(&r), ErrorCode::UnknownDevice, "{r:?}");
    assert!(lost.ping().await, "still connected after bob's attempt");
    // A device cannot remove itself (so a user's last device always stays).
    let r = a.request(remove(alice.device_id)).await;
    assert_eq!(code(&r), ErrorCode::NotAllowed);
    assert!(error(&r).message.contains("cannot remove itself"));

    // alice removes her lost device.
    assert!(matches!(
        a.request(remove(lost_id.device_id)).await,
        Resp::Done(_)
    ));
    // Its open connection is told and closed.
    lost.expect_closed().await;
    let told = lost.pushed.iter().any(|f| {
        matches!(&f.body, Some(Resp::Error(e))
            if e.code == ErrorCode::AuthFailed as i32 && e.message.contains("removed"))
    });
    assert!(told, "{:?}", lost.pushed);
    // Reconnecting fails with a clear message, and the connection closes.
    let mut again = Raw::connect(&url).await;
    let r = again.auth(&lost_id).await;
    assert_eq!(code(&r), ErrorCode::AuthFailed);
    assert!(error(&r).message.contains("unknown or removed device"));
    again.expect_closed().await;
    // Nor can it come back under the same id with its certificate.
    let mut c = Raw::connect(&url).await;
    let sig = sign_auth(&lost_id.device, &c.nonce, "alice", lost_id.device_id);
    let r = c
        .request(Req::RegisterDevice(v1::RegisterDevice {
            version: ProtocolVersion::V1 as i32,
            device: Some(lost_id.addr()),
            device_certificate: lost_id.cert.as_bytes().to_vec(),
            signature: sig.to_vec(),
        }))
        .await;
    assert_eq!(code(&r), ErrorCode::HandleTaken, "{r:?}");

    // The directory no longer shows it, and its KeyPackages are not handed out.
    let only_alice = vec![alice.cert.as_bytes().to_vec()];
    match b
        .request(Req::LookupUser(v1::LookupUser {
            handle: "alice".into(),
        }))
        .await
    {
        Resp::UserInfo(u) => assert_eq!(u.device_certificates, only_alice),
        other => panic!("{other:?}"),
    }
    match a.request(Req::ListDevices(v1::ListDevices {})).await {
        Resp::DeviceList(l) => assert_eq!(l.device_certificates, only_alice),
        other => panic!("{other:?}"),
    }
    let r = b
        .request(Req::ClaimKeyPackages(v1::ClaimKeyPackages {
            handle: "alice".into(),
            exclude_device_ids: vec![],
        }))
        .await;
    assert_eq!(code(&r), ErrorCode::NoKeyPackages, "{r:?}");
    // The group routes to the others only; what is sent now reaches alice, not the removed one.
    match a
        .request(Req::FetchGroupState(v1::FetchGroupState {
            group_id: b"g".to_vec(),
        }))
        .await
    {
        Resp::GroupState(g) => {
            let ids: Vec<u64> = g.members.iter().map(|m| m.device_id).collect();
            assert_eq!(ids, vec![alice.device_id, bob.device_id]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.message(b"g", b"after").await,
        Resp::MessageAccepted(_)
    ));
    let mut seen = Vec::new();
    while seen.last().map(Vec::as_slice) != Some(b"after".as_slice()) {
        assert!(seen.len() < 10, "{seen:?}");
        seen.push(a.next_envelope().await.payload);
    }
    // Removing it again is refused.
    let r = a.request(remove(lost_id.device_id)).await;
    assert_eq!(code(&r), ErrorCode::UnknownDevice);
    assert!(error(&r).message.contains("tacit devices"));
}

#[tokio::test]
async fn claiming_a_victims_key_packages_in_a_loop_is_rate_limited_and_last_resort_remains() {
    // The default burst (200 costly requests at once), but a refill of 1 per second instead of
    // the default 50, so that the outcome does not depend on how fast this machine answers.
    let (_d, server) = start_with(|l| l.messages_per_sec_per_device = 1).await;
    let limits = tacit_server::Limits {
        messages_per_sec_per_device: 1,
        ..Default::default()
    };
    let url = server.url();
    let victim = Identity::new("victim");
    let mut v = registered(&url, &victim).await;
    let stock: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 40]).collect();
    let r = v
        .request(Req::UploadKeyPackages(v1::UploadKeyPackages {
            one_time: stock.clone(),
            last_resort: vec![0xee; 40],
        }))
        .await;
    assert!(matches!(r, Resp::Done(_)));

    let mut attacker = registered(&url, &Identity::new("mallory")).await;
    let claim = || {
        Req::ClaimKeyPackages(v1::ClaimKeyPackages {
            handle: "victim".into(),
            exclude_device_ids: vec![],
        })
    };
    let started = std::time::Instant::now();
    let mut one_time = 0usize;
    let mut last_resort = 0usize;
    let mut refused = None;
    // Bounded: far more than a burst plus what refills while the loop runs.
    for _ in 0..10 * limits.burst_per_device {
        match attacker.request(claim()).await {
            Resp::KeyPackagesClaimed(k) => {
                for p in k.key_packages {
                    if p.last_resort {
                        last_resort += 1;
                    } else {
                        one_time += 1;
                    }
                }
            }
            Resp::Error(e) => {
                refused = Some(e);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let e = refused.expect("the claim loop was rate limited");
    assert_eq!(e.code, ErrorCode::RateLimited as i32, "{e:?}");
    assert!(e.retry_after_ms > 0);
    let granted = one_time + last_resort;
    let refill = (elapsed * f64::from(limits.messages_per_sec_per_device)).ceil() as usize;
    assert!(
        granted >= limits.burst_per_device as usize
            && granted <= limits.burst_per_device as usize + refill + 1,
        "{granted} claims in {elapsed:.2} s"
    );
    // The attack did take the one-time stock (the rate limit slows, it does not stop, a single
    // claimer), but the last-resort KeyPackage is never used up.
    assert_eq!(one_time, stock.len());
    assert_eq!(last_resort, granted - stock.len());
    // The attacker stays refused while it keeps hammering.
    assert_eq!(
        code(&attacker.request(claim()).await),
        ErrorCode::RateLimited
    );

    // Someone else can still reach the victim: the last-resort KeyPackage.
    let mut carol = registered(&url, &Identity::new("carol")).await;
    match carol.request(claim()).await {
        Resp::KeyPackagesClaimed(k) => {
            assert_eq!(k.key_packages.len(), 1);
            assert!(k.key_packages[0].last_resort);
            assert_eq!(k.key_packages[0].key_package, vec![0xee; 40]);
        }
        other => panic!("{other:?}"),
    }
    // The victim sees its empty stock when it next signs in (its client tops it up then).
    let mut again = Raw::connect(&url).await;
    match again.auth(&victim).await {
        Resp::Authenticated(a) => {
            assert_eq!(a.one_time_key_packages_left, 0);
            assert!(a.has_last_resort_key_package);
        }
        other => panic!("{other:?}"),
    }
}
