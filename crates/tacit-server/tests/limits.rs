//! Limits on what an unauthenticated peer may cost the server: the per-address rate of
//! connections and requests, the cap on unauthenticated connections, the HTTP upgrade deadline
//! (slow-loris) and the pre-authentication frame size. Each test crosses a limit, reads the
//! documented answer, and shows that a well-behaved client is served meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use tacit_proto::encode;
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOISY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const QUIET: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[tokio::test]
async fn connections_over_the_address_rate_are_refused_while_other_addresses_are_served() {
    let (_d, server) = start_with(|l| {
        l.unauthenticated_per_sec_per_address = 1;
        l.unauthenticated_burst_per_address = 4;
    })
    .await;
    // A well-behaved client from another address signs in (connection + RegisterAccount: 2 of
    // its address's 4 tokens).
    let alice = Identity::new("alice");
    let mut quiet = raw_from(&server, QUIET).await;
    assert!(matches!(
        quiet.register(&alice).await,
        Resp::Authenticated(_)
    ));

    // The noisy address spends its burst on four connections; the fifth is refused.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(raw_from(&server, NOISY).await);
    }
    let e = refused(ws_from(&server, NOISY).await).await;
    assert_eq!(e.code, ErrorCode::RateLimited as i32, "{e:?}");
    assert!(
        (1..=1000).contains(&e.retry_after_ms),
        "{}",
        e.retry_after_ms
    );
    assert!(e.message.contains("too many connections"), "{}", e.message);

    // Meanwhile: the signed-in client is served (not charged), and a new connection from the
    // other address gets its challenge and signs in (its last 2 tokens).
    assert!(quiet.ping().await);
    let mut fresh = raw_from(&server, QUIET).await;
    assert!(matches!(fresh.auth(&alice).await, Resp::Authenticated(_)));
    // The noisy address's open connections were admitted and keep working.
    assert!(!held[0].nonce.is_empty());
}

#[tokio::test]
async fn requests_before_authentication_over_the_address_rate_are_refused_with_a_retry_time() {
    let (_d, server) = start_with(|l| {
        l.unauthenticated_per_sec_per_address = 1;
        l.unauthenticated_burst_per_address = 3;
    })
    .await;
    let mut quiet = registered(&server.url(), &Identity::new("alice")).await;
    // One token for the connection, two pings, then the third ping is refused (by request id).
    let mut c = raw_from(&server, NOISY).await;
    assert!(c.ping().await);
    assert!(c.ping().await);
    match c.request(Req::Ping(v1::Ping {})).await {
        Resp::Error(e) => {
            assert_eq!(e.code, ErrorCode::RateLimited as i32);
            assert!(e.retry_after_ms > 0);
            assert!(e.message.contains("too many requests"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // Signed-in clients are not charged: many pings from an authenticated connection pass.
    for _ in 0..10 {
        assert!(quiet.ping().await);
    }
    // The refused connection stays open; once a token is back, it is answered again.
    let mut answered = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if c.ping().await {
            answered = true;
            break;
        }
    }
    assert!(answered, "a token came back within 6 s at 1 per second");
}

#[tokio::test]
async fn the_cap_on_unauthenticated_connections_refuses_new_ones_while_signed_in_clients_are_served(
) {
    let (_d, server) = start_with(|l| l.max_unauthenticated_connections = 2).await;
    let alice = Identity::new("alice");
    let mut a = registered(&server.url(), &alice).await;
    // Two connections that do not sign in fill the cap.
    let mut waiting = raw_from(&server, NOISY).await;
    let _other = raw_from(&server, NOISY).await;
    let e = refused(ws_from(&server, QUIET).await).await;
    assert_eq!(e.code, ErrorCode::Unavailable as i32, "{e:?}");
    assert!(e.retry_after_ms > 0);
    assert!(
        e.message
            .contains("too many connections waiting to authenticate"),
        "{}",
        e.message
    );
    // Signed-in clients are not counted and keep being served.
    assert!(a.ping().await);
    // A waiting connection that signs in frees its place: a new connection is admitted.
    let bob = Identity::new("bob");
    assert!(matches!(
        waiting.register(&bob).await,
        Resp::Authenticated(_)
    ));
    let mut c = raw_from(&server, QUIET).await;
    assert!(matches!(c.auth(&alice).await, Resp::Authenticated(_)));
}

#[tokio::test]
async fn a_slow_http_upgrade_is_cut_off_while_a_normal_client_is_served() {
    let (_d, server) = start_with(|l| l.max_http_request_secs = 1).await;
    let addr = server.local_addr();
    // A slow-loris client: a request line and headers, one byte every 100 ms (never finished
    // within the 6 s this would take).
    let dribble = tokio::spawn(async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = b"GET /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Padding: aaaaaa\r\n";
        let start = Instant::now();
        for byte in request {
            if tcp.write_all(&[*byte]).await.is_err() {
                return Some(start.elapsed());
            }
            let mut buf = [0u8; 64];
            if let Ok(read) =
                tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await
            {
                // 0: closed; Err: reset; data: something other than silence.
                assert!(!matches!(read, Ok(n) if n > 0), "unexpected answer");
                return Some(start.elapsed());
            }
        }
        None
    });
    // A silent client (TCP only) is cut off as well.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Meanwhile a normal client connects, registers and is answered.
    let mut c = registered(&server.url(), &Identity::new("alice")).await;
    assert!(c.ping().await);

    let cut = dribble
        .await
        .unwrap()
        .expect("the server closed the slow connection");
    assert!(cut >= Duration::from_millis(900), "cut after {cut:?}");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the server closed the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The normal client, connected all along, is still served.
    assert!(c.ping().await);
}

#[tokio::test]
async fn frames_before_authentication_are_limited_to_a_small_size() {
    let (_d, server) = start().await;
    let limit = tacit_server::Limits::default().max_unauthenticated_frame_bytes;
    assert!(limit >= tacit_proto::limits::MAX_LINK_PAYLOAD_BYTES + 1024);
    let mut bystander = registered(&server.url(), &Identity::new("bob")).await;
    let big = encode(&v1::ClientFrame {
        request_id: 7,
        body: Some(Req::SendMessage(v1::SendMessage {
            group_id: b"g".to_vec(),
            message: vec![0; 2 * limit],
        })),
    });
    let mut c = Raw::connect(&server.url()).await;
    c.send_bytes(big.clone()).await;
    match c.recv_answer().await.body {
        Some(Resp::Error(e)) => {
            assert_eq!(e.code, ErrorCode::FrameTooLarge as i32);
            assert!(e.message.contains(&limit.to_string()), "{}", e.message);
            assert!(e.message.contains("authenticate first"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // The connection stays open, others are served, and after signing in the same frame is
    // decoded and answered on its merits (no such group).
    assert!(bystander.ping().await);
    assert!(c.ping().await);
    assert!(matches!(
        c.register(&Identity::new("alice")).await,
        Resp::Authenticated(_)
    ));
    c.send_bytes(big).await;
    let answer = c.recv_answer().await;
    assert_eq!(answer.request_id, 7);
    let code = answer.body.map(|b| code(&b));
    assert!(
        matches!(code, Some(ErrorCode::UnknownGroup | ErrorCode::NotAMember)),
        "{code:?}"
    );
}

fn upload(count: usize) -> Req {
    Req::UploadKeyPackages(v1::UploadKeyPackages {
        one_time: (0..count).map(|i| format!("kp-{i}").into_bytes()).collect(),
        last_resort: Vec::new(),
    })
}

#[tokio::test]
async fn key_package_uploads_over_the_batch_size_or_the_stock_are_refused_while_others_are_served()
{
    let (_d, server) = start_with(|l| l.max_key_packages_per_device = 150).await;
    let url = server.url();
    let (alice, bob) = (Identity::new("alice"), Identity::new("bob"));
    let mut a = registered(&url, &alice).await;
    let mut b = registered(&url, &bob).await;

    // One upload may carry at most MAX_KEY_PACKAGES_PER_UPLOAD (100) one-time KeyPackages.
    let too_many = tacit_proto::limits::MAX_KEY_PACKAGES_PER_UPLOAD + 1;
    match a.request(upload(too_many)).await {
        Resp::Error(e) => {
            assert_eq!(e.code, ErrorCode::MalformedFrame as i32);
            assert!(e.message.contains("per upload"), "{}", e.message);
        }
        other => panic!("an oversized batch was accepted: {other:?}"),
    }
    assert!(b.ping().await, "another client is served meanwhile");

    // The stock per device is capped (150 here): 100 fit, another 100 would not and are refused
    // whole, 50 still fit.
    assert!(matches!(a.request(upload(100)).await, Resp::Done(_)));
    match a.request(upload(100)).await {
        Resp::Error(e) => assert_eq!(e.code, ErrorCode::LimitExceeded as i32, "{}", e.message),
        other => panic!("the stock cap was crossed: {other:?}"),
    }
    assert!(b.ping().await, "another client is served meanwhile");
    assert!(matches!(a.request(upload(50)).await, Resp::Done(_)));
    // The connection that crossed the limits keeps working.
    assert!(a.ping().await);
}
