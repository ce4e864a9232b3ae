//! Transport behaviour: TLS with rustls, pushes to a connected device, and the server's
//! treatment of connections that never authenticate or are not admitted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tacit_client::profile::{KeyMode, Profile, Unlock};
use tacit_client::{Client, Connection, TlsOptions};
use tacit_core::{CoreConfig, Device, Event};
use tacit_proto::v1::{server_frame::Body as Resp, ErrorCode};

#[tokio::test]
async fn a_connected_device_gets_messages_pushed_without_asking() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(root.path()).await;
    let mut alice = account(root.path(), &server, "alice").await;
    let mut bob = account(root.path(), &server, "bob").await;
    alice.send("bob", "first").await.unwrap();
    bob.sync().await.unwrap();

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut stop = Some(tx);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut stop_tx = Some(stop_tx);
        bob.listen(
            |e| {
                if let Event::Message { text, .. } = e {
                    got.push(text);
                    if got.len() == 3 {
                        if let Some(s) = stop_tx.take() {
                            let _ = s.send(());
                        }
                    }
                }
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
            },
            async {
                let _ = tokio::time::timeout(Duration::from_secs(20), stop_rx).await;
            },
        )
        .await
        .unwrap();
        got
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // bob is connected and idle
    for t in ["pushed 1", "pushed 2", "pushed 3"] {
        alice.send("bob", t).await.unwrap();
    }
    let _ = rx.await;
    let got = listener.await.unwrap();
    assert_eq!(got, vec!["pushed 1", "pushed 2", "pushed 3"]);
}

#[tokio::test]
async fn connections_that_never_authenticate_are_closed() {
    let root = tempfile::tempdir().unwrap();
    let mut config =
        tacit_server::ServerConfig::new(root.path().join("server"), "127.0.0.1:0".parse().unwrap());
    config.limits.max_unauthenticated_secs = 1;
    let server = tacit_server::start(config).await.unwrap();
    let mut idle = Connection::connect(&server.url(), &TlsOptions::default())
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), idle.next_push())
        .await
        .unwrap();
    match frame.and_then(|f| f.body) {
        Some(Resp::Error(e)) => assert_eq!(e.code, ErrorCode::NotAuthenticated as i32),
        other => panic!("{other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), idle.next_push())
            .await
            .unwrap()
            .is_none(),
        "closed"
    );
    // The server goes on serving.
    let mut alice = new_client(root.path(), "alice");
    alice.create_account("alice", &server.url()).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_server_does_not_admit_reads_why() {
    let root = tempfile::tempdir().unwrap();
    let mut config =
        tacit_server::ServerConfig::new(root.path().join("server"), "127.0.0.1:0".parse().unwrap());
    config.limits.max_unauthenticated_connections = 1;
    let server = tacit_server::start(config).await.unwrap();
    // One connection waiting to sign in fills the cap; the next is told so, not just closed.
    let _waiting = Connection::connect(&server.url(), &TlsOptions::default())
        .await
        .unwrap();
    match Connection::connect(&server.url(), &TlsOptions::default()).await {
        Err(tacit_client::ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(message.contains("waiting to authenticate"), "{message}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("admitted beyond the cap"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn tls_with_a_pinned_certificate_authority() {
    let root = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = root.path().join("cert.pem");
    let key_path = root.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config =
        tacit_server::ServerConfig::new(root.path().join("server"), "127.0.0.1:0".parse().unwrap());
    config.tls = Some(tacit_server::TlsConfig {
        cert_path,
        key_path,
    });
    let server = tacit_server::start(config).await.unwrap();
    let url = server.url();
    assert!(url.starts_with("wss://"), "{url}");

    // Without trusting the certificate the client refuses to talk.
    let (_, store) = Profile::create(
        &root.path().join("untrusting"),
        KeyMode::KeyFile,
        &Unlock::None,
    )
    .unwrap();
    let mut untrusting = Client::new(
        Device::open(store, CoreConfig::default()).unwrap(),
        TlsOptions::default(),
    );
    let err = untrusting
        .create_account("mallory", &url)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");

    let tls = TlsOptions {
        extra_roots_pem: vec![cert.cert.pem().into_bytes()],
    };
    let open = |name: &str| {
        let (_, store) =
            Profile::create(&root.path().join(name), KeyMode::KeyFile, &Unlock::None).unwrap();
        Client::new(
            Device::open(store, CoreConfig::default()).unwrap(),
            tls.clone(),
        )
    };
    let mut alice = open("alice");
    let mut bob = open("bob");
    alice.create_account("alice", &url).await.unwrap();
    bob.create_account("bob", &url).await.unwrap();
    alice.send("bob", "over TLS").await.unwrap();
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "alice"),
        vec!["over TLS"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plain_websockets_are_refused_off_loopback() {
    let root = tempfile::tempdir().unwrap();
    let config = tacit_server::ServerConfig::new(root.path(), "0.0.0.0:0".parse().unwrap());
    let err = tacit_server::start(config).await.err().expect("refused");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
}
