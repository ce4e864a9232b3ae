//! TLS: the server speaks wss:// with the configured certificate, and refuses to start with a
//! certificate it cannot load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use tacit_proto::v1::server_frame::Body as Resp;

fn self_signed(dir: &std::path::Path) -> (tacit_server::TlsConfig, Vec<u8>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (
        tacit_server::TlsConfig {
            cert_path,
            key_path,
        },
        cert.cert.der().to_vec(),
    )
}

#[tokio::test]
async fn the_server_speaks_wss_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, der) = self_signed(dir.path());
    // TLS makes a public address acceptable.
    let mut config = tacit_server::ServerConfig::new(dir.path(), "0.0.0.0:0".parse().unwrap());
    config.tls = Some(tls);
    let server = tacit_server::start(config).await.unwrap();
    let port = server.local_addr().port();
    assert!(server.url().starts_with("wss://"), "{}", server.url());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.into()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://localhost:{port}/v1"),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(client))),
    )
    .await
    .unwrap();
    let mut raw = Raw::from_ws(ws).await;
    let alice = Identity::new("alice");
    assert!(matches!(raw.register(&alice).await, Resp::Authenticated(_)));
    assert!(raw.ping().await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_certificate_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tacit_server::ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    config.tls = Some(tacit_server::TlsConfig {
        cert_path: dir.path().join("missing-cert.pem"),
        key_path: dir.path().join("missing-key.pem"),
    });
    let err = tacit_server::start(config).await.err().expect("refused");
    assert!(matches!(err, tacit_server::ServerError::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("missing-cert.pem"), "{err}");
}
