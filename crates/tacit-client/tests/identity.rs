//! A server operator who swaps a user's identity key in the directory is refused: clients pin
//! the first key they saw and never use a different one silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_client::ClientError;
use tacit_core::CoreError;

#[tokio::test]
async fn a_changed_identity_key_in_the_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    let _carol = account(root.path(), &server, "carol").await;
    alice.send("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    let before = alice.safety_number("bob").await.unwrap();

    // The operator replaces bob's identity key with carol's in the directory.
    let db = rusqlite::Connection::open(server.dir.join("tacit-server.db")).unwrap();
    db.execute("UPDATE users SET identity_key = (SELECT identity_key FROM users WHERE handle = 'carol') WHERE handle = 'bob'", []).unwrap();
    drop(db);

    match alice.lookup_and_pin("bob").await {
        Err(ClientError::Core(CoreError::IdentityChanged { handle, .. })) => {
            assert_eq!(handle, "bob")
        }
        other => panic!("expected IdentityChanged, got {other:?}"),
    }
    // The pinned key and the safety number are unchanged; the conversation still works.
    assert_eq!(alice.safety_number("bob").await.unwrap(), before);
    alice.send("bob", "still you?").await.unwrap();
    let ev = bob.sync().await.unwrap();
    assert_eq!(texts_from(&ev, "alice"), vec!["still you?"]);
    // Starting a new group with bob is refused rather than using the substituted key.
    let err = alice.create_group("g", &["bob".into()]).await.unwrap_err();
    assert!(err.to_string().contains("CHANGED"), "{err}");
}
