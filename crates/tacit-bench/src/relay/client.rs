//! The raw Tacit protocol client: device keys, request frames, a registered connection, and the
//! set-up of one sender→receiver pair in a 1:1 group of its own.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tacit_identity::{sign_auth, DeviceCertificate, DeviceKeyPair, IdentityKeyPair};
use tacit_proto::v1::{
    self, client_frame::Body as Req, server_frame::Body as Resp, ProtocolVersion,
};
use tacit_proto::{decode_server_frame, encode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::e2e::Registration;
use crate::error::{BenchError, Result};

/// Read buffer of each bench client's WebSocket.
const CLIENT_READ_BUFFER_BYTES: usize = 16 * 1024;

/// A client WebSocket, to Tacit or to the baseline relay.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest wait for one answer (or one connection) while setting up.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest server frame this client decodes.
pub(crate) const MAX_FRAME_BYTES: usize = 4 << 20;

/// One device's keys (server mode: the bench's own, no client core).
struct Device {
    device: DeviceKeyPair,
    registration: Registration,
}

impl Device {
    fn new(handle: String) -> Device {
        let identity = IdentityKeyPair::generate();
        let device = DeviceKeyPair::generate();
        let device_id = rand::random();
        let cert = DeviceCertificate::issue(&identity, &handle, device_id, &device.public(), 0);
        Device {
            registration: Registration {
                handle,
                device_id,
                identity_key: identity.public().to_bytes().to_vec(),
                certificate: cert.as_bytes().to_vec(),
            },
            device,
        }
    }

    /// Connects to `url` and registers this device.
    async fn registered(&self, url: &str) -> Result<Conn> {
        let (mut conn, nonce) = Conn::challenged(url).await?;
        let r = &self.registration;
        let signature = sign_auth(&self.device, &nonce, &r.handle, r.device_id);
        conn.register(r, signature).await?;
        Ok(conn)
    }
}

/// A Tacit request frame.
pub(crate) fn frame(request_id: u64, body: Req) -> Message {
    Message::Binary(
        encode(&v1::ClientFrame {
            request_id,
            body: Some(body),
        })
        .into(),
    )
}

/// One client connection with its request-id counter.
pub(crate) struct Conn {
    /// The WebSocket.
    pub(crate) ws: Ws,
    next_id: u64,
}

impl Conn {
    /// Opens a WebSocket to `url` within [`SETUP_TIMEOUT`], with Nagle's algorithm off (the
    /// clients pipeline small frames and flush on purpose).
    pub(crate) async fn connect(url: &str) -> Result<Conn> {
        // tungstenite zero-fills its whole read buffer before every read: its default
        // (128 KiB) made that memset the bench clients' largest cost, taken from the server
        // under test on this shared machine.
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER_BYTES);
        let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let (ws, _) = tokio::time::timeout(SETUP_TIMEOUT, connecting)
            .await
            .map_err(|_| BenchError::Timeout("connecting"))??;
        Ok(Conn { ws, next_id: 1 })
    }

    /// A fresh request id.
    pub(crate) fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next binary frame if one comes within `limit`; `None` after a timeout or another
    /// kind of frame.
    pub(crate) async fn poll(&mut self, limit: Duration) -> Result<Option<Vec<u8>>> {
        match tokio::time::timeout(limit, self.ws.next()).await {
            Err(_) => Ok(None),
            Ok(None) => Err(BenchError::Closed),
            Ok(Some(message)) => match message? {
                Message::Binary(b) => Ok(Some(b.to_vec())),
                Message::Close(_) => Err(BenchError::Closed),
                _ => Ok(None),
            },
        }
    }

    /// The next Tacit server frame, failing after `limit`.
    async fn recv_within(&mut self, limit: Duration) -> Result<v1::ServerFrame> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BenchError::Timeout("waiting for the server's answer"));
            }
            if let Some(bytes) = self.poll(left).await? {
                return Ok(decode_server_frame(&bytes, MAX_FRAME_BYTES)?);
            }
        }
    }

    /// Sends a Tacit request and waits for its answer; frames pushed meanwhile are dropped
    /// (what is not acknowledged stays queued on the server, which is harmless here).
    async fn request(&mut self, body: Req) -> Result<Resp> {
        let id = self.take_id();
        self.ws.send(frame(id, body)).await?;
        loop {
            let f = self.recv_within(SETUP_TIMEOUT).await?;
            if f.request_id == id {
                return f
                    .body
                    .ok_or_else(|| BenchError::Setup("an answer without a body".into()));
            }
        }
    }

    /// Connects to `url` and returns the connection with the server's authentication
    /// challenge, to be signed for [`Conn::register`].
    pub(crate) async fn challenged(url: &str) -> Result<(Conn, Vec<u8>)> {
        let mut conn = Conn::connect(url).await?;
        match conn.recv_within(SETUP_TIMEOUT).await?.body {
            Some(Resp::Challenge(c)) => Ok((conn, c.nonce)),
            other => Err(BenchError::Setup(format!(
                "expected a challenge, got {other:?}"
            ))),
        }
    }

    /// Registers `who` as a new account with `signature`, its device key's signature of the
    /// challenge (see [`Conn::challenged`]).
    pub(crate) async fn register(&mut self, who: &Registration, signature: [u8; 64]) -> Result<()> {
        let answer = self
            .request(Req::RegisterAccount(v1::RegisterAccount {
                version: ProtocolVersion::V1 as i32,
                device: Some(who.addr()),
                identity_key: who.identity_key.clone(),
                device_certificate: who.certificate.clone(),
                signature: signature.to_vec(),
            }))
            .await?;
        match answer {
            Resp::Authenticated(_) => Ok(()),
            other => Err(BenchError::Setup(format!(
                "registering {} failed: {other:?}",
                who.handle
            ))),
        }
    }

    /// Registers `group` on the server with this device as its creator, then sends the commit
    /// adding `added` (with its Welcome) against epoch 0.
    pub(crate) async fn create_group(
        &mut self,
        group: &[u8],
        commit: Vec<u8>,
        welcome: Vec<u8>,
        added: v1::DeviceAddress,
    ) -> Result<()> {
        match self
            .request(Req::CreateGroup(v1::CreateGroup {
                group_id: group.to_vec(),
            }))
            .await?
        {
            Resp::Done(_) => {}
            other => {
                return Err(BenchError::Setup(format!(
                    "creating a group failed: {other:?}"
                )))
            }
        }
        match self
            .request(Req::SendCommit(v1::SendCommit {
                group_id: group.to_vec(),
                epoch: 0,
                commit,
                welcome,
                added: vec![added],
                removed: vec![],
            }))
            .await?
        {
            Resp::CommitAccepted(_) => Ok(()),
            other => Err(BenchError::Setup(format!(
                "adding the receiver failed: {other:?}"
            ))),
        }
    }
}

/// Registers a sender and a receiver on `url` (names made unique by `run_tag`, so that runs
/// against a lasting database do not collide) and puts them into a group of their own with an
/// opaque commit (server mode: the server never parses MLS); returns both connections and the
/// group id.
pub(crate) async fn setup_tacit_pair(
    i: usize,
    run_tag: u32,
    sender_url: String,
    receiver_url: String,
) -> Result<(Conn, Conn, Vec<u8>)> {
    let sender = Device::new(format!("bs{i}-{run_tag:08x}"));
    let receiver = Device::new(format!("br{i}-{run_tag:08x}"));
    let mut s = sender.registered(&sender_url).await?;
    let r = receiver.registered(&receiver_url).await?;
    let group = format!("bench-{run_tag:08x}-{i}").into_bytes();
    s.create_group(
        &group,
        b"bench-commit".to_vec(),
        b"bench-welcome".to_vec(),
        receiver.registration.addr(),
    )
    .await?;
    Ok((s, r, group))
}
