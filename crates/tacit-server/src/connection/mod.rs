//! One client connection: challenge, authentication, requests, and the delivery of its queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tacit_identity::{verify_auth, DeviceCertificate, PublicKey};
use tacit_proto::v1::{
    self, client_frame::Body as Req, server_frame::Body as Resp, ErrorCode, ProtocolVersion,
};
use tacit_proto::validate::validate_client_frame;
use tacit_proto::{decode_client_frame, encode, DecodeError};
use tokio::sync::mpsc;

mod admit;
mod auth;
mod delivery;
mod pipeline;
mod requests;

pub(crate) use admit::{admit, refuse};

use crate::state::{AppState, UnauthenticatedSlot};
use crate::store::{CommitRequest, DeviceRecord, StoreError};

/// Outgoing frames waiting for the socket, per connection.
const OUTGOING_FRAMES: usize = 512;
/// Envelopes read from the database per batch.
const DELIVERY_BATCH: usize = 256;

struct Failure {
    code: ErrorCode,
    message: String,
    retry_after_ms: u64,
    current_epoch: u64,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            retry_after_ms: 0,
            current_epoch: 0,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::HandleTaken(_) | StoreError::DeviceExists(_) => ErrorCode::HandleTaken,
            StoreError::UnknownUser(_) => ErrorCode::UnknownUser,
            StoreError::UnknownDevice(_) => ErrorCode::UnknownDevice,
            StoreError::GroupExists => ErrorCode::GroupExists,
            StoreError::UnknownGroup => ErrorCode::UnknownGroup,
            StoreError::NotAMember => ErrorCode::NotAMember,
            StoreError::EpochMovedOn(epoch) => {
                let mut f = Failure::new(ErrorCode::EpochMovedOn, e.to_string());
                f.current_epoch = *epoch;
                return f;
            }
            StoreError::Limit(_) => ErrorCode::LimitExceeded,
            StoreError::Closed => {
                return Failure::new(
                    ErrorCode::Unavailable,
                    "the server is shutting down; reconnect in a moment",
                );
            }
            StoreError::Unavailable(_) | StoreError::Conflict => {
                tracing::warn!("storage temporarily unavailable: {e}");
                return Failure::new(
                    ErrorCode::Unavailable,
                    "storage is temporarily unavailable; retry shortly",
                );
            }
            StoreError::SchemaTooNew { .. } | StoreError::Db(_) => {
                tracing::error!(detail = %e, "storage failure");
                return Failure::new(
                    ErrorCode::Unavailable,
                    "storage is temporarily unavailable; retry shortly",
                );
            }
        };
        Failure::new(code, e.to_string())
    }
}

pub(crate) struct Session {
    state: Arc<AppState>,
    out: mpsc::Sender<Message>,
    id: u64,
    peer: std::net::IpAddr,
    /// Held until the connection authenticates (counts it among the unauthenticated ones).
    unauthenticated: Option<UnauthenticatedSlot>,
    nonce: Option<[u8; 32]>,
    device: Option<DeviceRecord>,
    delivery: Option<tokio::task::JoinHandle<()>>,
    close: bool,
    /// Requests in flight (see `pipeline.rs`).
    pipeline: pipeline::Pipeline,
}

fn frame(request_id: u64, body: Resp) -> Message {
    Message::Binary(
        encode(&v1::ServerFrame {
            request_id,
            body: Some(body),
        })
        .into(),
    )
}

fn error_frame(request_id: u64, f: Failure) -> Message {
    frame(
        request_id,
        Resp::Error(v1::Error {
            code: f.code as i32,
            message: f.message,
            retry_after_ms: f.retry_after_ms,
            current_epoch: f.current_epoch,
        }),
    )
}

/// Serves one admitted WebSocket until it closes or the server shuts down.
pub async fn serve(
    socket: WebSocket,
    state: Arc<AppState>,
    peer: std::net::SocketAddr,
    slot: UnauthenticatedSlot,
) {
    let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(OUTGOING_FRAMES);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let nonce: [u8; 32] = rand::random();
    let mut session = Session::new(state.clone(), out, id, peer.ip(), nonce, slot);
    tracing::debug!(connection = id, %peer, "connected");
    session
        .send(frame(
            0,
            Resp::Challenge(v1::Challenge {
                version: ProtocolVersion::V1 as i32,
                nonce: nonce.to_vec(),
            }),
        ))
        .await;

    // An unauthenticated connection gets `max_unauthenticated_secs`; device-link relay traffic
    // (a joiner has no account yet) extends that, but never beyond the life of a link slot.
    let unauth_limit = Duration::from_secs(state.limits.max_unauthenticated_secs);
    let connected_at = tokio::time::Instant::now();
    let relay_cap =
        connected_at + Duration::from_secs(state.limits.link_slot_ttl_secs).max(unauth_limit);
    let mut unauth_deadline = connected_at + unauth_limit;
    let mut shutdown = state.shutdown.clone();
    loop {
        let authenticated = session.device.is_some();
        let message = tokio::select! {
            // With too many requests in flight, stop reading until one is answered.
            m = stream.next(), if !session.pipeline.is_full() => m,
            Some(answer) = session.pipeline.next() => {
                if let Some(m) = answer {
                    session.send(m).await;
                }
                continue;
            }
            _ = tokio::time::sleep_until(unauth_deadline), if !authenticated => {
                tracing::debug!(connection = id, "closing: not authenticated in time");
                session.send(error_frame(0, Failure::new(ErrorCode::NotAuthenticated, "authenticate within the time limit"))).await;
                break;
            }
            _ = shutdown.changed() => break,
        };
        let Some(Ok(message)) = message else { break };
        match message {
            Message::Binary(bytes) => {
                let relay = session.handle(&bytes).await;
                if relay {
                    unauth_deadline = (tokio::time::Instant::now() + unauth_limit).min(relay_cap);
                }
            }
            Message::Text(_) => {
                if let Err(f) = session.take_unauthenticated_token() {
                    session.send(error_frame(0, f)).await;
                    continue;
                }
                session
                    .send(error_frame(
                        0,
                        Failure::new(
                            ErrorCode::MalformedFrame,
                            "text frames are not part of the protocol; send binary protobuf frames",
                        ),
                    ))
                    .await;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        if session.close {
            break;
        }
    }
    // Answer what is in flight: those writes happen regardless, and their clients should know.
    session.drain().await;
    if let Some(d) = session.delivery.take() {
        d.abort();
    }
    drop(session);
    let _ = writer.await;
    tracing::debug!(connection = id, "disconnected");
}

impl Session {
    /// A session for connection `id` from `peer`, not yet authenticated, whose challenge is
    /// `nonce`; answers go to `out`.
    pub(crate) fn new(
        state: Arc<AppState>,
        out: mpsc::Sender<Message>,
        id: u64,
        peer: std::net::IpAddr,
        nonce: [u8; 32],
        slot: UnauthenticatedSlot,
    ) -> Self {
        Session {
            state,
            out,
            id,
            peer,
            unauthenticated: Some(slot),
            nonce: Some(nonce),
            device: None,
            delivery: None,
            close: false,
            pipeline: pipeline::Pipeline::default(),
        }
    }

    /// Whether the connection asked to be closed (after a failed authentication).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn closing(&self) -> bool {
        self.close
    }

    /// Whether a device signed in on this connection.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn authenticated_device(&self) -> bool {
        self.device.is_some()
    }

    /// Stops pushing the device's queue (the connection is going away).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn stop_delivery(&mut self) {
        if let Some(d) = self.delivery.take() {
            d.abort();
        }
    }

    async fn send(&self, m: Message) {
        let _ = self.out.send(m).await;
    }

    /// Before authentication, every frame costs a token of the peer's address.
    fn take_unauthenticated_token(&self) -> Result<(), Failure> {
        if self.device.is_some() {
            return Ok(());
        }
        self.state
            .take_address_token(self.peer)
            .map_err(|r| admit::address_failure(r, "requests"))
    }

    /// Handles one binary frame. Returns true if it was device-link relay traffic (which keeps
    /// an unauthenticated joiner's connection open).
    pub(crate) async fn handle(&mut self, bytes: &[u8]) -> bool {
        let limits = &self.state.limits;
        let authenticated = self.device.is_some();
        let limit = if authenticated {
            limits.max_frame_bytes
        } else {
            limits
                .max_unauthenticated_frame_bytes
                .min(limits.max_frame_bytes)
        };
        // Before authentication the frame is small (so decoding it is cheap) and every frame,
        // well-formed or not, costs a token of the peer's address.
        let decoded = decode_client_frame(bytes, limit);
        if let Err(f) = self.take_unauthenticated_token() {
            tracing::debug!(
                connection = self.id,
                "unauthenticated request over the address rate"
            );
            let request_id = decoded.as_ref().map_or(0, |f| f.request_id);
            self.send(error_frame(request_id, f)).await;
            return false;
        }
        let frame = match decoded {
            Ok(f) => f,
            Err(e) => {
                let code = match e {
                    DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
                    _ => ErrorCode::MalformedFrame,
                };
                tracing::debug!(
                    connection = self.id,
                    len = bytes.len(),
                    "refused frame: {e}"
                );
                let mut message = e.to_string();
                if code == ErrorCode::FrameTooLarge && !authenticated {
                    message.push_str(
                        " before authentication; authenticate first (Authenticate, \
                         RegisterAccount or RegisterDevice), larger frames are accepted after",
                    );
                }
                self.send(error_frame(0, Failure::new(code, message))).await;
                return false;
            }
        };
        let request_id = frame.request_id;
        if let Err(e) = validate_client_frame(&frame) {
            // Answers go out in request order.
            self.drain().await;
            self.send(error_frame(
                request_id,
                Failure::new(ErrorCode::MalformedFrame, e.to_string()),
            ))
            .await;
            return false;
        }
        let Some(body) = frame.body else { return false };
        let relay = matches!(body, Req::LinkSend(_) | Req::LinkReceive(_));
        let kind = body.kind();
        match &self.device {
            Some(d) => tracing::debug!(
                connection = self.id,
                handle = %d.handle,
                device = format_args!("{:016x}", d.device_id),
                kind,
                request_id,
                bytes = bytes.len(),
                "request"
            ),
            None => tracing::debug!(
                connection = self.id,
                kind,
                request_id,
                bytes = bytes.len(),
                "request (unauthenticated)"
            ),
        }
        let answer = if self.device.is_some() {
            // Messages and acknowledgments are pipelined; any other request waits until
            // everything before it has been answered, then runs alone.
            match self.submit(body, request_id, kind).await {
                Ok(()) => return relay,
                Err(body) => {
                    self.drain().await;
                    self.authenticated(body).await
                }
            }
        } else {
            self.unauthenticated(body).await
        };
        if let Some(m) = pipeline::answer_frame(self.id, kind, request_id, answer) {
            self.send(m).await;
        }
        relay
    }
}

fn frame_for(request_id: u64, resp: Resp) -> Message {
    frame(request_id, resp)
}

fn link_failure(e: crate::link::LinkError) -> Failure {
    match e {
        crate::link::LinkError::Unknown => Failure::new(
            ErrorCode::LinkSlotUnknown,
            "no such device-link code (expired, used, or mistyped); start again with a new code",
        ),
        crate::link::LinkError::Full(why) => Failure::new(ErrorCode::LimitExceeded, why),
    }
}
