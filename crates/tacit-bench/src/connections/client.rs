//! The raw protocol client of this bench: a socket bound to a chosen loopback source address,
//! a lean WebSocket on it, and the two ways a connection authenticates (RegisterAccount for a
//! new device, Authenticate for a registered one).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tacit_identity::{sign_auth, DeviceCertificate, DeviceKeyPair, IdentityKeyPair};
use tacit_proto::v1::{
    self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode, ProtocolVersion,
};
use tacit_proto::{decode_server_frame, encode};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::{BenchError, Result};

/// A held client WebSocket (plain TCP: the bench drives loopback servers only).
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Read buffer of each client WebSocket (tungstenite's default is 128 KiB, which at 100,000
/// connections would be 12 GiB of client memory): the frames an idle client sees are small.
pub const CLIENT_READ_BUFFER_BYTES: usize = 1_024;
/// Largest server frame this client decodes.
const MAX_FRAME_BYTES: usize = 1 << 20;
/// Longest one attempt at a registration or a connection may take from `connect` to
/// `Authenticated`; past it the attempt counts as failed (e.g. a server out of descriptors that no longer accepts).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per registration or connection when the server answers that it is temporarily
/// unable (UNAVAILABLE, RATE_LIMITED), as a client would retry.
const SETUP_ATTEMPTS: u32 = 4;
/// Pause before the first retry; doubled before each further one.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The request id of the one request each connection sends.
const AUTH_REQUEST_ID: u64 = 1;

/// A registered device: what it takes to authenticate again.
pub(crate) struct Registered {
    handle: String,
    device_id: u64,
    key: DeviceKeyPair,
}

/// Opens a WebSocket to `url` (at `server`) from a socket bound to `source`.
async fn open(url: &str, server: SocketAddr, source: Ipv4Addr) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default()
        .read_buffer_size(CLIENT_READ_BUFFER_BYTES)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    Ok(ws)
}

/// The next Tacit frame on `ws`, skipping non-binary ones.
async fn next_frame(ws: &mut Ws) -> Result<v1::ServerFrame> {
    loop {
        match ws.next().await.ok_or(BenchError::Closed)?? {
            Message::Binary(bytes) => return Ok(decode_server_frame(&bytes, MAX_FRAME_BYTES)?),
            Message::Close(_) => return Err(BenchError::Closed),
            _ => {}
        }
    }
}

/// Opens a connection, signs its challenge for `handle`/`device_id` with `key`, sends the
/// request `build` makes from that signature and waits for `Authenticated`, each attempt within
/// [`SETUP_TIMEOUT`]; a temporary refusal is retried (up to [`SETUP_ATTEMPTS`] attempts).
async fn authenticated(
    url: &str,
    server: SocketAddr,
    source: Ipv4Addr,
    who: (&str, u64, &DeviceKeyPair),
    build: impl FnOnce([u8; 64]) -> Req + Clone,
) -> Result<Ws> {
    let mut attempt = 0;
    loop {
        let outcome = tokio::time::timeout(
            SETUP_TIMEOUT,
            authenticate(url, server, source, who, build.clone()),
        )
        .await
        .map_err(|_| BenchError::Timeout("connecting and authenticating"))?;
        match outcome {
            Err(BenchError::Temporary(_)) if attempt + 1 < SETUP_ATTEMPTS => {
                // What a client does with UNAVAILABLE or RATE_LIMITED: wait, then try again.
                tokio::time::sleep(RETRY_PAUSE * (1 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn authenticate(
    url: &str,
    server: SocketAddr,
    source: Ipv4Addr,
    who: (&str, u64, &DeviceKeyPair),
    build: impl FnOnce([u8; 64]) -> Req,
) -> Result<Ws> {
    let (handle, device_id, key) = who;
    let mut ws = open(url, server, source).await?;
    let nonce = match next_frame(&mut ws).await?.body {
        Some(Resp::Challenge(c)) => c.nonce,
        other => {
            return Err(BenchError::Setup(format!(
                "expected a challenge, got {other:?}"
            )))
        }
    };
    let request = v1::ClientFrame {
        request_id: AUTH_REQUEST_ID,
        body: Some(build(sign_auth(key, &nonce, handle, device_id))),
    };
    ws.send(Message::Binary(encode(&request).into())).await?;
    loop {
        let answer = next_frame(&mut ws).await?;
        if answer.request_id != AUTH_REQUEST_ID {
            continue;
        }
        return match answer.body {
            Some(Resp::Authenticated(_)) => Ok(ws),
            Some(Resp::Error(e))
                if e.code == ErrorCode::Unavailable as i32
                    || e.code == ErrorCode::RateLimited as i32 =>
            {
                Err(BenchError::Temporary(format!("{handle}: {}", e.message)))
            }
            other => Err(BenchError::Setup(format!(
                "{handle} was not authenticated: {other:?}"
            ))),
        };
    }
}

impl Registered {
    /// Creates keys and a device certificate for `handle` and registers it as a new account
    /// over a connection from `source`, which is then dropped.
    pub(crate) async fn register(
        url: &str,
        server: SocketAddr,
        source: Ipv4Addr,
        handle: String,
    ) -> Result<Registered> {
        let identity = IdentityKeyPair::generate();
        let key = DeviceKeyPair::generate();
        let device_id = rand::random();
        let cert = DeviceCertificate::issue(&identity, &handle, device_id, &key.public(), 0);
        let address = v1::DeviceAddress {
            handle: handle.clone(),
            device_id,
        };
        let ws = authenticated(
            url,
            server,
            source,
            (&handle, device_id, &key),
            |signature| {
                Req::RegisterAccount(v1::RegisterAccount {
                    version: ProtocolVersion::V1 as i32,
                    device: Some(address),
                    identity_key: identity.public().to_bytes().to_vec(),
                    device_certificate: cert.as_bytes().to_vec(),
                    signature: signature.to_vec(),
                })
            },
        )
        .await?;
        drop(ws);
        Ok(Registered {
            handle,
            device_id,
            key,
        })
    }

    /// Opens a connection from `source` and authenticates as this device; the connection is
    /// then idle (the server's QueueDrained is left unread).
    pub(crate) async fn connect(
        &self,
        url: &str,
        server: SocketAddr,
        source: Ipv4Addr,
    ) -> Result<Ws> {
        let address = v1::DeviceAddress {
            handle: self.handle.clone(),
            device_id: self.device_id,
        };
        let who = (self.handle.as_str(), self.device_id, &self.key);
        authenticated(url, server, source, who, |signature| {
            Req::Authenticate(v1::Authenticate {
                version: ProtocolVersion::V1 as i32,
                device: Some(address),
                signature: signature.to_vec(),
            })
        })
        .await
    }
}

/// Whether a held connection is still open: reads whatever already arrived without waiting,
/// and reports false on a Close frame, an error or the end of the stream.
pub(crate) fn still_open(ws: &mut Ws) -> bool {
    loop {
        match ws.next().now_or_never() {
            None => return true,
            Some(Some(Ok(Message::Close(_)))) | Some(Some(Err(_))) | Some(None) => return false,
            Some(Some(Ok(_))) => {}
        }
    }
}
