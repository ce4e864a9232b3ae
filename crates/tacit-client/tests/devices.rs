//! Removing a lost device, through the client library against a real server: the server locks it
//! out and the remaining device commits its removal from every conversation, so that it cannot
//! read what is said afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_client::{Client, ClientError};
use tacit_proto::v1::ErrorCode;

async fn link(laptop: &mut Client, phone: &mut Client, url: &str) {
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let link = laptop.link_device(
        move |c| {
            let _ = tx.send(c.to_owned());
        },
        std::time::Duration::from_secs(30),
    );
    let join = async {
        phone
            .join_device(&rx.await.unwrap(), url, std::time::Duration::from_secs(30))
            .await
    };
    let (a, b) = tokio::join!(link, join);
    assert_eq!(a.unwrap(), b.unwrap());
}

#[tokio::test]
async fn a_removed_device_is_locked_out_and_cannot_read_what_follows() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut laptop = account(root.path(), &server, "alice").await;
    let mut phone = new_client(root.path(), "alice-phone");
    let mut bob = account(root.path(), &server, "bob").await;
    let _carol = account(root.path(), &server, "carol").await;
    link(&mut laptop, &mut phone, &server.url).await;
    let phone_id = phone.device().device_id().unwrap();

    // Two conversations with both of alice's devices in them: a 1:1 with bob and a group.
    bob.send("alice", "to both of you").await.unwrap();
    bob.create_group("club", &["alice".into(), "carol".into()])
        .await
        .unwrap();
    assert_eq!(
        texts_from(&phone.sync().await.unwrap(), "bob"),
        vec!["to both of you"]
    );
    laptop.sync().await.unwrap();
    let direct = group_id(&mut bob, "alice").await;
    let club = group_id(&mut bob, "club").await;
    for g in [&direct, &club] {
        assert!(bob
            .device()
            .members(g)
            .unwrap()
            .contains(&("alice".into(), phone_id)));
    }

    // A device cannot remove itself.
    let me = laptop.device().device_id().unwrap();
    assert!(matches!(
        laptop.remove_device(me).await,
        Err(ClientError::Usage(_))
    ));
    // Another user cannot remove alice's phone.
    let refused = bob.remove_device(phone_id).await.unwrap_err();
    assert_eq!(
        refused.server_code(),
        Some(ErrorCode::UnknownDevice),
        "{refused}"
    );

    let removed = laptop.remove_device(phone_id).await.unwrap();
    assert_eq!(removed.name, format!("alice/{phone_id:016x}"));
    assert!(removed.failed.is_empty(), "{:?}", removed.failed);
    let mut from = removed.removed_from.clone();
    from.sort();
    assert_eq!(from, vec!["bob".to_string(), "club".to_string()]);
    assert_eq!(laptop.devices().await.unwrap().len(), 1);

    // The phone cannot sign in any more, and says why.
    let err = phone.sync().await.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::AuthFailed), "{err}");
    assert!(
        err.to_string().contains("unknown or removed device"),
        "{err}"
    );

    // bob's and carol's clients process the removals; what is said now does not reach the phone
    // and could not be decrypted by it anyway.
    bob.sync().await.unwrap();
    for g in [&direct, &club] {
        let members = bob.device().members(g).unwrap();
        assert!(
            !members.contains(&("alice".into(), phone_id)),
            "{members:?}"
        );
        assert!(members.contains(&("alice".into(), me)), "{members:?}");
    }
    let (_, after) = bob.send("alice", "after the phone was lost").await.unwrap();
    assert_eq!(
        texts_from(&laptop.sync().await.unwrap(), "bob"),
        vec!["after the phone was lost"]
    );
    assert!(phone
        .device()
        .probe_decrypt(&direct, &after.message)
        .is_err());
}
