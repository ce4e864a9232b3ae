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

mod admit;
mod auth;
mod delivery;
mod pipeline;
mod requests;

pub(crate) use admit::{admit, refuse};
use delivery::Delivery;

use crate::state::{AppState, UnauthenticatedSlot};
use crate::store::{CommitRequest, DeviceRecord, StoreError};

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
    /// Frames to write to the socket.
    outbox: Outbox,
    id: u64,
    peer: std::net::IpAddr,
    /// Held until the connection authenticates (counts it among the unauthenticated ones).
    unauthenticated: Option<UnauthenticatedSlot>,
    nonce: Option<[u8; 32]>,
    device: Option<DeviceRecord>,
    /// The delivery of the device's queue, once authenticated.
    delivery: Option<delivery::Delivery>,
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

/// What woke the connection's loop.
enum Event {
    /// A WebSocket message from the client (`None`: the stream ended or failed).
    Frame(Option<Result<Message, axum::Error>>),
    /// The oldest request in flight was answered.
    Answer(Option<Message>),
    /// The device's mailbox has something, or the delivery has more to send.
    Delivery,
    /// The delivery poll interval passed: re-read the queue even without a notice.
    Poll,
    /// The connection did not authenticate in time.
    AuthDeadline,
    /// The server is shutting down.
    Shutdown,
}

/// Serves one admitted WebSocket until it closes or the server shuts down.
///
/// One task does everything for its connection — reads and answers requests, delivers the
/// device's queue, writes to the socket — so that an idle connection costs one task and a busy
/// one no hand-offs between tasks. Frames produced while handling an event are collected in the
/// session's outbox and written with one flush, together with those of any other event that is
/// ready at that moment.
pub async fn serve(
    socket: WebSocket,
    state: Arc<AppState>,
    peer: std::net::SocketAddr,
    slot: UnauthenticatedSlot,
) {
    let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut stream) = socket.split();

    let nonce: [u8; 32] = rand::random();
    let mut session = Session::new(state.clone(), id, peer.ip(), nonce, slot);
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
    let unauth_deadline = tokio::time::sleep_until(connected_at + unauth_limit);
    tokio::pin!(unauth_deadline);
    let poll_every = Duration::from_secs(state.limits.delivery_poll_secs.max(1));
    let poll = tokio::time::sleep(poll_every);
    tokio::pin!(poll);
    let mut shutdown = state.shutdown.clone();
    'serve: loop {
        if !write_out(&mut sink, &session).await {
            break;
        }
        // Wait for one event, then take every other one that is ready now before writing.
        let mut event = tokio::select! {
            m = stream.next(), if !session.pipeline.is_full() => Event::Frame(m),
            Some(answer) = session.pipeline.next() => Event::Answer(answer),
            () = Delivery::due(&session.delivery) => Event::Delivery,
            () = &mut poll, if session.delivery.is_some() => Event::Poll,
            () = &mut unauth_deadline, if session.device.is_none() => Event::AuthDeadline,
            _ = shutdown.changed() => Event::Shutdown,
        };
        let mut handled = 0;
        loop {
            match event {
                Event::Frame(Some(Ok(message))) => {
                    if session.frame(message).await {
                        let deadline = (tokio::time::Instant::now() + unauth_limit).min(relay_cap);
                        unauth_deadline.as_mut().reset(deadline);
                    }
                    if session.close {
                        break 'serve;
                    }
                }
                Event::Frame(_) | Event::Shutdown => break 'serve,
                Event::Answer(answer) => {
                    if let Some(m) = answer {
                        session.send(m).await;
                    }
                }
                Event::Delivery => {
                    session.deliver().await;
                    if session.close {
                        break 'serve;
                    }
                }
                Event::Poll => {
                    if let Some(d) = session.delivery.as_mut() {
                        d.poll();
                    }
                    poll.as_mut()
                        .reset(tokio::time::Instant::now() + poll_every);
                }
                Event::AuthDeadline => {
                    tracing::debug!(connection = id, "closing: not authenticated in time");
                    session
                        .send(error_frame(
                            0,
                            Failure::new(
                                ErrorCode::NotAuthenticated,
                                "authenticate within the time limit",
                            ),
                        ))
                        .await;
                    break 'serve;
                }
            }
            handled += 1;
            if handled == READY_EVENTS {
                break;
            }
            event = tokio::select! {
                biased;
                m = stream.next(), if !session.pipeline.is_full() => Event::Frame(m),
                Some(answer) = session.pipeline.next() => Event::Answer(answer),
                () = Delivery::due(&session.delivery) => Event::Delivery,
                () = std::future::ready(()) => break,
            };
        }
    }
    // Answer what is in flight: those writes happen regardless, and their clients should know.
    session.drain().await;
    if write_out(&mut sink, &session).await {
        let _ = sink.close().await;
    }
    drop(session);
    tracing::debug!(connection = id, "disconnected");
}

/// Most events handled before the frames they produced are written.
const READY_EVENTS: usize = 64;

/// Writes the session's outbox to the socket with one flush; false if the socket failed.
async fn write_out(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    session: &Session,
) -> bool {
    let frames = session.outbox.take();
    if frames.is_empty() {
        return true;
    }
    for m in frames {
        let close = matches!(m, Message::Close(_));
        if sink.feed(m).await.is_err() {
            return false;
        }
        if close {
            break;
        }
    }
    sink.flush().await.is_ok()
}

/// Frames waiting to be written to the connection's socket, in order.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Behind a mutex only so that a session may be shared with `&` across awaits; only its
    /// connection's task touches it.
    frames: std::sync::Mutex<Vec<Message>>,
}

impl Outbox {
    fn push(&self, m: Message) {
        self.frames
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(m);
    }

    /// Everything waiting, oldest first.
    pub(crate) fn take(&self) -> Vec<Message> {
        std::mem::take(
            &mut *self
                .frames
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl Session {
    /// A session for connection `id` from `peer`, not yet authenticated, whose challenge is
    /// `nonce`; what it sends collects in its outbox.
    pub(crate) fn new(
        state: Arc<AppState>,
        id: u64,
        peer: std::net::IpAddr,
        nonce: [u8; 32],
        slot: UnauthenticatedSlot,
    ) -> Self {
        Session {
            state,
            outbox: Outbox::default(),
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

    /// The frames sent since the last call, oldest first.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn take_outgoing(&self) -> Vec<Message> {
        self.outbox.take()
    }

    /// Handles one WebSocket message. Returns true if it was device-link relay traffic.
    async fn frame(&mut self, message: Message) -> bool {
        match message {
            Message::Binary(bytes) => return self.handle(&bytes).await,
            Message::Text(_) => {
                if let Err(f) = self.take_unauthenticated_token() {
                    self.send(error_frame(0, f)).await;
                    return false;
                }
                self.send(error_frame(
                    0,
                    Failure::new(
                        ErrorCode::MalformedFrame,
                        "text frames are not part of the protocol; send binary protobuf frames",
                    ),
                ))
                .await;
            }
            Message::Close(_) => self.close = true,
            Message::Ping(_) | Message::Pong(_) => {}
        }
        false
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

    async fn send(&self, m: Message) {
        self.outbox.push(m);
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
