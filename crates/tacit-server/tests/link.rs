//! The device-link relay: a blind mailbox between an owner's device and one new device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode};

fn send(slot: &str, from_initiator: bool, payload: &[u8]) -> Req {
    Req::LinkSend(v1::LinkSend {
        slot: slot.into(),
        from_initiator,
        payload: payload.to_vec(),
    })
}

fn receive(slot: &str, for_initiator: bool) -> Req {
    Req::LinkReceive(v1::LinkReceive {
        slot: slot.into(),
        for_initiator,
    })
}

fn payload(r: Resp) -> Vec<u8> {
    match r {
        Resp::LinkPayload(p) => p.payload,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_relay_carries_payloads_between_the_owner_and_one_joiner() {
    let (_d, server) = start().await;
    let url = server.url();
    let mut owner = registered(&url, &Identity::new("alice")).await;
    let slot = "slot0123456789";
    assert!(matches!(
        owner
            .request(Req::LinkOpen(v1::LinkOpen { slot: slot.into() }))
            .await,
        Resp::Done(_)
    ));
    // The joiner has no account: it talks before authenticating.
    let mut joiner = Raw::connect(&url).await;
    assert!(matches!(
        joiner.request(send(slot, false, b"pake-b")).await,
        Resp::Done(_)
    ));
    assert!(matches!(
        joiner.request(send(slot, false, b"request")).await,
        Resp::Done(_)
    ));
    assert_eq!(payload(owner.request(receive(slot, true)).await), b"pake-b");
    assert_eq!(
        payload(owner.request(receive(slot, true)).await),
        b"request"
    );
    assert!(
        payload(owner.request(receive(slot, true)).await).is_empty(),
        "nothing waiting"
    );
    assert!(matches!(
        owner.request(send(slot, true, b"grant")).await,
        Resp::Done(_)
    ));
    assert_eq!(
        payload(joiner.request(receive(slot, false)).await),
        b"grant"
    );

    // A second would-be joiner is turned away, and so is a stranger posing as the owner.
    let mut other = Raw::connect(&url).await;
    assert_eq!(
        code(&other.request(send(slot, false, b"me too")).await),
        ErrorCode::LinkSlotUnknown
    );
    assert_eq!(
        code(&other.request(receive(slot, false)).await),
        ErrorCode::LinkSlotUnknown
    );
    let mut mallory = registered(&url, &Identity::new("mallory")).await;
    assert_eq!(
        code(&mallory.request(receive(slot, true)).await),
        ErrorCode::LinkSlotUnknown
    );
    assert_eq!(
        code(&joiner.request(send(slot, true, b"as owner")).await),
        ErrorCode::NotAuthenticated
    );
}

#[tokio::test]
async fn only_signed_in_devices_open_slots_and_mailboxes_are_bounded() {
    let (_d, server) = start().await;
    let url = server.url();
    let mut anon = Raw::connect(&url).await;
    assert_eq!(
        code(
            &anon
                .request(Req::LinkOpen(v1::LinkOpen {
                    slot: "slotabcdefghij".into()
                }))
                .await
        ),
        ErrorCode::NotAuthenticated
    );
    let mut owner = registered(&url, &Identity::new("alice")).await;
    assert!(matches!(
        owner
            .request(Req::LinkOpen(v1::LinkOpen {
                slot: "slotabcdefghij".into()
            }))
            .await,
        Resp::Done(_)
    ));
    let mut refused = None;
    for i in 0..20u8 {
        if let Resp::Error(e) = owner.request(send("slotabcdefghij", true, &[i])).await {
            refused = Some((i, e));
            break;
        }
    }
    let (at, e) = refused.expect("the mailbox is bounded");
    assert_eq!(e.code, ErrorCode::LimitExceeded as i32);
    assert!(at <= 16);
    assert_eq!(
        code(&anon.request(receive("nosuchslot000", false)).await),
        ErrorCode::LinkSlotUnknown
    );
}
