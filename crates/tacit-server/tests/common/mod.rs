//! A raw protocol client for server tests: encodes frames by hand and signs with real keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tacit_identity::{sign_auth, DeviceCertificate, DeviceKeyPair, IdentityKeyPair};
use tacit_proto::v1::{
    self, client_frame::Body as Req, server_frame::Body as Resp, ProtocolVersion,
};
use tacit_proto::{decode_server_frame, encode};
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Raw {
    pub ws: Ws,
    pub nonce: Vec<u8>,
    next: u64,
    pub pushed: Vec<v1::ServerFrame>,
}

pub struct Identity {
    pub handle: String,
    pub identity: IdentityKeyPair,
    pub device: DeviceKeyPair,
    pub device_id: u64,
    pub cert: DeviceCertificate,
}

impl Identity {
    pub fn new(handle: &str) -> Identity {
        let identity = IdentityKeyPair::generate();
        Self::device_of(handle, identity, rand::random())
    }

    pub fn device_of(handle: &str, identity: IdentityKeyPair, device_id: u64) -> Identity {
        let device = DeviceKeyPair::generate();
        let cert = DeviceCertificate::issue(&identity, handle, device_id, &device.public(), 0);
        Identity {
            handle: handle.into(),
            identity,
            device,
            device_id,
            cert,
        }
    }

    pub fn addr(&self) -> v1::DeviceAddress {
        v1::DeviceAddress {
            handle: self.handle.clone(),
            device_id: self.device_id,
        }
    }
}

pub async fn start() -> (tempfile::TempDir, tacit_server::RunningServer) {
    start_with(|_| {}).await
}

pub async fn start_with(
    f: impl FnOnce(&mut tacit_server::Limits),
) -> (tempfile::TempDir, tacit_server::RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tacit_server::ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    f(&mut config.limits);
    let server = tacit_server::start(config).await.unwrap();
    (dir, server)
}

/// Starts a server on an existing data directory (for restarts).
pub async fn start_in(dir: &std::path::Path) -> tacit_server::RunningServer {
    let config = tacit_server::ServerConfig::new(dir, "127.0.0.1:0".parse().unwrap());
    tacit_server::start(config).await.unwrap()
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self::from_ws(ws).await
    }

    /// Wraps an open WebSocket and reads the server's challenge.
    pub async fn from_ws(ws: Ws) -> Raw {
        let mut raw = Raw {
            ws,
            nonce: vec![],
            next: 1,
            pushed: vec![],
        };
        match raw.recv().await.body {
            Some(Resp::Challenge(c)) => raw.nonce = c.nonce,
            other => panic!("expected challenge, got {other:?}"),
        }
        raw
    }

    pub async fn recv(&mut self) -> v1::ServerFrame {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("server answered")
                .expect("open")
                .expect("ok");
            if let Message::Binary(b) = m {
                return decode_server_frame(&b, 4 << 20).unwrap();
            }
        }
    }

    /// The next frame that is not a push (envelope or queue marker).
    pub async fn recv_answer(&mut self) -> v1::ServerFrame {
        loop {
            let f = self.recv().await;
            match f.body {
                Some(Resp::Envelope(_)) | Some(Resp::QueueDrained(_)) => self.pushed.push(f),
                _ => return f,
            }
        }
    }

    /// The next binary frame, or None once the server closed the connection.
    pub async fn recv_or_closed(&mut self) -> Option<v1::ServerFrame> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("server answered or closed");
            match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Binary(b))) => {
                    return Some(decode_server_frame(&b, 4 << 20).unwrap())
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits until the server closes the connection, keeping frames seen meanwhile.
    pub async fn expect_closed(&mut self) {
        while let Some(f) = self.recv_or_closed().await {
            self.pushed.push(f);
        }
    }

    /// Sends a frame without waiting for anything.
    pub async fn send(&mut self, request_id: u64, body: Req) {
        self.send_bytes(encode(&v1::ClientFrame {
            request_id,
            body: Some(body),
        }))
        .await;
    }

    /// Envelopes pushed up to the next `QueueDrained`, and that marker's `last_seq`.
    pub async fn drain(&mut self) -> (Vec<v1::Envelope>, u64) {
        let mut got = Vec::new();
        let mut pending: Vec<v1::ServerFrame> = std::mem::take(&mut self.pushed);
        pending.reverse();
        loop {
            let f = match pending.pop() {
                Some(f) => f,
                None => self.recv().await,
            };
            match f.body {
                Some(Resp::Envelope(e)) => got.push(e),
                Some(Resp::QueueDrained(d)) => {
                    pending.reverse();
                    self.pushed = pending;
                    return (got, d.last_seq);
                }
                _ => {}
            }
        }
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// Sends a request and returns its answer; pushed frames seen meanwhile are kept.
    pub async fn request(&mut self, body: Req) -> Resp {
        let id = self.next;
        self.next += 1;
        self.send_bytes(encode(&v1::ClientFrame {
            request_id: id,
            body: Some(body),
        }))
        .await;
        loop {
            let f = self.recv().await;
            if f.request_id == id {
                return f.body.unwrap();
            }
            self.pushed.push(f);
        }
    }

    pub async fn register(&mut self, who: &Identity) -> Resp {
        let sig = sign_auth(&who.device, &self.nonce, &who.handle, who.device_id);
        self.request(Req::RegisterAccount(v1::RegisterAccount {
            version: ProtocolVersion::V1 as i32,
            device: Some(who.addr()),
            identity_key: who.identity.public().to_bytes().to_vec(),
            device_certificate: who.cert.as_bytes().to_vec(),
            signature: sig.to_vec(),
        }))
        .await
    }

    pub async fn auth(&mut self, who: &Identity) -> Resp {
        let sig = sign_auth(&who.device, &self.nonce, &who.handle, who.device_id);
        self.request(Req::Authenticate(v1::Authenticate {
            version: ProtocolVersion::V1 as i32,
            device: Some(who.addr()),
            signature: sig.to_vec(),
        }))
        .await
    }

    /// Waits for the next pushed envelope.
    pub async fn next_envelope(&mut self) -> v1::Envelope {
        if let Some(pos) = self
            .pushed
            .iter()
            .position(|f| matches!(f.body, Some(Resp::Envelope(_))))
        {
            if let Some(Resp::Envelope(e)) = self.pushed.remove(pos).body {
                return e;
            }
        }
        loop {
            if let Some(Resp::Envelope(e)) = self.recv().await.body {
                return e;
            }
        }
    }
}

pub fn code(resp: &Resp) -> v1::ErrorCode {
    match resp {
        Resp::Error(e) => v1::ErrorCode::try_from(e.code).unwrap(),
        _ => v1::ErrorCode::Unspecified,
    }
}

/// Registers `who` on a fresh connection and returns it.
pub async fn registered(url: &str, who: &Identity) -> Raw {
    let mut c = Raw::connect(url).await;
    assert!(matches!(c.register(who).await, Resp::Authenticated(_)));
    c
}

impl Raw {
    pub async fn create_group(&mut self, group_id: &[u8]) -> Resp {
        self.request(Req::CreateGroup(v1::CreateGroup {
            group_id: group_id.to_vec(),
        }))
        .await
    }

    pub async fn commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
        commit: &[u8],
        added: &[&Identity],
        removed: &[&Identity],
    ) -> Resp {
        self.request(Req::SendCommit(v1::SendCommit {
            group_id: group_id.to_vec(),
            epoch,
            commit: commit.to_vec(),
            welcome: if added.is_empty() {
                vec![]
            } else {
                b"welcome".to_vec()
            },
            added: added.iter().map(|i| i.addr()).collect(),
            removed: removed.iter().map(|i| i.addr()).collect(),
        }))
        .await
    }

    pub async fn message(&mut self, group_id: &[u8], message: &[u8]) -> Resp {
        self.request(Req::SendMessage(v1::SendMessage {
            group_id: group_id.to_vec(),
            message: message.to_vec(),
        }))
        .await
    }

    pub async fn ping(&mut self) -> bool {
        matches!(self.request(Req::Ping(v1::Ping {})).await, Resp::Pong(_))
    }
}

/// Authenticates `who` on a fresh connection.
pub async fn signed_in(url: &str, who: &Identity) -> Raw {
    let mut c = Raw::connect(url).await;
    let r = c.auth(who).await;
    assert!(matches!(r, Resp::Authenticated(_)), "{r:?}");
    c
}

/// Opens a WebSocket to `server` from the loopback source address `source` (127.0.0.x), to
/// show per-address behaviour on one machine.
pub async fn ws_from(server: &tacit_server::RunningServer, source: std::net::Ipv4Addr) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let stream = socket.connect(server.local_addr()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        server.url(),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

/// A client from the source address `source` that read its challenge.
pub async fn raw_from(server: &tacit_server::RunningServer, source: std::net::Ipv4Addr) -> Raw {
    Raw::from_ws(ws_from(server, source).await).await
}

/// The first frame on `ws` if it is an error, and then that the server closed the connection.
pub async fn refused(ws: Ws) -> v1::Error {
    let mut raw = Raw {
        ws,
        nonce: vec![],
        next: 1,
        pushed: vec![],
    };
    let first = raw.recv_or_closed().await.expect("an error frame first");
    let Some(Resp::Error(e)) = first.body else {
        panic!("expected an error in place of the challenge, got {first:?}");
    };
    assert!(
        raw.recv_or_closed().await.is_none(),
        "closed after the error"
    );
    e
}
