//! The server's life: start, restart on the same data, shutdown, refusing insecure set-ups,
//! closing connections that do not authenticate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode};

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path()).await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = registered(&url, &alice).await;
    let mut b = registered(&url, &bob).await;
    assert!(matches!(
        b.request(Req::UploadKeyPackages(v1::UploadKeyPackages {
            one_time: vec![vec![1; 32], vec![2; 32]],
            last_resort: vec![9; 32],
        }))
        .await,
        Resp::Done(_)
    ));
    drop(b);
    assert!(matches!(a.create_group(b"g").await, Resp::Done(_)));
    assert!(matches!(
        a.commit(b"g", 0, b"c", &[&bob], &[]).await,
        Resp::CommitAccepted(_)
    ));
    assert!(matches!(
        a.message(b"g", b"kept").await,
        Resp::MessageAccepted(_)
    ));
    server.shutdown().await;
    // The old connection is closed by the shutdown.
    a.expect_closed().await;

    let server = start_in(dir.path()).await;
    let url = server.url();
    let mut b = Raw::connect(&url).await;
    match b.auth(&bob).await {
        Resp::Authenticated(x) => {
            assert_eq!(x.one_time_key_packages_left, 2);
            assert!(x.has_last_resort_key_package);
        }
        other => panic!("{other:?}"),
    }
    let (got, _) = b.drain().await;
    assert_eq!(
        got.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        vec![b"welcome".to_vec(), b"kept".to_vec()]
    );
    let mut a = signed_in(&url, &alice).await;
    // The group's epoch and membership survived too.
    assert_eq!(
        code(&a.commit(b"g", 0, b"stale", &[], &[]).await),
        ErrorCode::EpochMovedOn
    );
    assert!(matches!(
        a.message(b"g", b"again").await,
        Resp::MessageAccepted(_)
    ));
    assert_eq!(b.next_envelope().await.payload, b"again");
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    let (_d, server) = start_with(|l| l.max_unauthenticated_secs = 1).await;
    let mut c = Raw::connect(&server.url()).await;
    let started = std::time::Instant::now();
    c.expect_closed().await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(c.pushed.iter().any(
        |f| matches!(&f.body, Some(Resp::Error(e)) if e.code == ErrorCode::NotAuthenticated as i32)
    ));
    // An authenticated connection is not subject to that limit.
    let mut a = registered(&server.url(), &Identity::new("alice")).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(a.ping().await);
}

#[tokio::test]
async fn a_failed_authentication_closes_the_connection() {
    let (_d, server) = start().await;
    let alice = Identity::new("alice");
    let _ = registered(&server.url(), &alice).await;
    let mut c = Raw::connect(&server.url()).await;
    let impostor = Identity::device_of(
        "alice",
        tacit_identity::IdentityKeyPair::from_secret_bytes(&alice.identity.to_secret_bytes()),
        alice.device_id,
    );
    assert_eq!(code(&c.auth(&impostor).await), ErrorCode::AuthFailed);
    c.expect_closed().await;
    // An unknown device fails the same way.
    let mut c = Raw::connect(&server.url()).await;
    assert_eq!(
        code(&c.auth(&Identity::new("nobody")).await),
        ErrorCode::AuthFailed
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn the_challenge_is_used_once() {
    let (_d, server) = start().await;
    let alice = Identity::new("alice");
    let mut c = registered(&server.url(), &alice).await;
    // Signing in again on the same connection is refused.
    assert_ne!(code(&c.auth(&alice).await), ErrorCode::Unspecified);
    let mut c = Raw::connect(&server.url()).await;
    let _ = c.register(&Identity::new("alice")).await; // HANDLE_TAKEN uses up the challenge
    c.expect_closed().await;
}

#[tokio::test]
async fn plain_websockets_on_a_public_address_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tacit_server::ServerConfig::new(dir.path(), "0.0.0.0:0".parse().unwrap());
    let err = tacit_server::start(config).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("--tls-cert") && text.contains("--tls-key"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_listening() {
    let (_d, server) = start().await;
    let url = server.url();
    let addr = server.local_addr();
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/v1"),
        "{url}"
    );
    let mut a = registered(&url, &Identity::new("alice")).await;
    let mut idle = Raw::connect(&url).await;
    server.shutdown().await;
    a.expect_closed().await;
    idle.expect_closed().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
