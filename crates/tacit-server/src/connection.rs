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

use crate::state::AppState;
use crate::store::{CommitRequest, DeviceRecord, StoreError};

/// Outgoing frames waiting for the socket, per connection.
const OUTGOING_FRAMES: usize = 512;
/// Envelopes read from the database per batch.
const DELIVERY_BATCH: usize = 256;
/// The delivery loop re-reads the queue at least this often, in case a notice was lost.
const DELIVERY_POLL_SECS: u64 = 30;

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
            StoreError::Db(detail) => {
                tracing::error!(%detail, "storage failure");
                return Failure::new(
                    ErrorCode::Unavailable,
                    "storage is temporarily unavailable; retry shortly",
                );
            }
        };
        Failure::new(code, e.to_string())
    }
}

struct Session {
    state: Arc<AppState>,
    out: mpsc::Sender<Message>,
    id: u64,
    nonce: Option<[u8; 32]>,
    device: Option<DeviceRecord>,
    delivery: Option<tokio::task::JoinHandle<()>>,
    close: bool,
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

/// Serves one WebSocket until it closes or the server shuts down.
pub async fn serve(socket: WebSocket, state: Arc<AppState>, peer: std::net::SocketAddr) {
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
    let mut session = Session {
        state: state.clone(),
        out,
        id,
        nonce: Some(nonce),
        device: None,
        delivery: None,
        close: false,
    };
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
            m = stream.next() => m,
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
    if let Some(d) = session.delivery.take() {
        d.abort();
    }
    drop(session);
    let _ = writer.await;
    tracing::debug!(connection = id, "disconnected");
}

impl Session {
    async fn send(&self, m: Message) {
        let _ = self.out.send(m).await;
    }

    /// Handles one binary frame. Returns true if it was device-link relay traffic (which keeps
    /// an unauthenticated joiner's connection open).
    async fn handle(&mut self, bytes: &[u8]) -> bool {
        let limits = &self.state.limits;
        let frame = match decode_client_frame(bytes, limits.max_frame_bytes) {
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
                self.send(error_frame(0, Failure::new(code, e.to_string())))
                    .await;
                return false;
            }
        };
        let request_id = frame.request_id;
        if let Err(e) = validate_client_frame(&frame) {
            self.send(error_frame(
                request_id,
                Failure::new(ErrorCode::MalformedFrame, e.to_string()),
            ))
            .await;
            return false;
        }
        let Some(body) = frame.body else { return false };
        let relay = matches!(body, Req::LinkSend(_) | Req::LinkReceive(_));
        let kind = request_kind(&body);
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
            self.authenticated(body).await
        } else {
            self.unauthenticated(body).await
        };
        match answer {
            Ok(Some(resp)) if request_id != 0 || !matches!(resp, Resp::Done(_)) => {
                self.send(frame_for(request_id, resp)).await
            }
            Ok(_) => {}
            Err(f) => {
                tracing::debug!(connection = self.id, kind, request_id, code = ?f.code, "request refused");
                self.send(error_frame(request_id, f)).await
            }
        }
        relay
    }

    fn take_nonce(&mut self) -> Result<[u8; 32], Failure> {
        self.nonce.take().ok_or_else(|| {
            self.close = true;
            Failure::new(
                ErrorCode::AuthFailed,
                "this connection already used its challenge; reconnect for a fresh one",
            )
        })
    }

    async fn unauthenticated(&mut self, body: Req) -> Result<Option<Resp>, Failure> {
        match body {
            Req::Authenticate(a) => {
                let nonce = self.take_nonce()?;
                let result = self.authenticate(a, &nonce).await;
                self.finish_auth(result).await
            }
            Req::RegisterAccount(r) => {
                let nonce = self.take_nonce()?;
                let result = self.register_account(r, &nonce).await;
                self.finish_auth(result).await
            }
            Req::RegisterDevice(r) => {
                let nonce = self.take_nonce()?;
                let result = self.register_device(r, &nonce).await;
                self.finish_auth(result).await
            }
            Req::LinkSend(l) if !l.from_initiator => {
                self.state
                    .links
                    .send(&l.slot, false, None, self.id, l.payload)
                    .map_err(link_failure)?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::LinkReceive(l) if !l.for_initiator => {
                let payload = self
                    .state
                    .links
                    .receive(&l.slot, false, None, self.id)
                    .map_err(link_failure)?;
                Ok(Some(Resp::LinkPayload(v1::LinkPayload {
                    payload: payload.unwrap_or_default(),
                })))
            }
            Req::Ping(_) => Ok(Some(Resp::Pong(v1::Pong {}))),
            _ => Err(Failure::new(
                ErrorCode::NotAuthenticated,
                "authenticate first (Authenticate, RegisterAccount or RegisterDevice)",
            )),
        }
    }

    async fn finish_auth(
        &mut self,
        result: Result<DeviceRecord, Failure>,
    ) -> Result<Option<Resp>, Failure> {
        let device = match result {
            Ok(d) => d,
            Err(f) => {
                self.close = true;
                return Err(f);
            }
        };
        let key = device.key;
        let (left, has_last_resort) = self.state.db(move |s| s.key_package_stock(key)).await?;
        tracing::info!(connection = self.id, handle = %device.handle, device = format!("{:016x}", device.device_id), "authenticated");
        let address = v1::DeviceAddress {
            handle: device.handle.clone(),
            device_id: device.device_id,
        };
        self.start_delivery(key);
        self.device = Some(device);
        Ok(Some(Resp::Authenticated(v1::Authenticated {
            device: Some(address),
            one_time_key_packages_left: left.min(u64::from(u32::MAX)) as u32,
            has_last_resort_key_package: has_last_resort,
        })))
    }

    async fn authenticate(
        &self,
        a: v1::Authenticate,
        nonce: &[u8; 32],
    ) -> Result<DeviceRecord, Failure> {
        check_version(a.version)?;
        let addr = a.device.unwrap_or_default();
        let (handle, device_id) = (addr.handle.clone(), addr.device_id);
        let device = self
            .state
            .db(move |s| s.device(&handle, device_id))
            .await?
            .ok_or_else(|| Failure::new(ErrorCode::AuthFailed, "unknown or removed device"))?;
        let key = PublicKey::from_bytes(&device.device_key)
            .map_err(|_| Failure::new(ErrorCode::AuthFailed, "device key unusable"))?;
        verify_auth(&key, nonce, &addr.handle, addr.device_id, &a.signature).map_err(|_| {
            Failure::new(
                ErrorCode::AuthFailed,
                "the signature does not verify for this device and challenge",
            )
        })?;
        Ok(device)
    }

    async fn register_account(
        &self,
        r: v1::RegisterAccount,
        nonce: &[u8; 32],
    ) -> Result<DeviceRecord, Failure> {
        check_version(r.version)?;
        let addr = r.device.unwrap_or_default();
        let identity = PublicKey::from_bytes(&r.identity_key).map_err(|_| {
            Failure::new(
                ErrorCode::InvalidCertificate,
                "identity_key is not an Ed25519 key",
            )
        })?;
        let device_key =
            certified_device_key(&r.device_certificate, &identity, &addr, &r.signature, nonce)?;
        Ok(self
            .state
            .db(move |s| {
                s.create_account(
                    &addr.handle,
                    &r.identity_key,
                    addr.device_id,
                    &device_key,
                    &r.device_certificate,
                )
            })
            .await?)
    }

    async fn register_device(
        &self,
        r: v1::RegisterDevice,
        nonce: &[u8; 32],
    ) -> Result<DeviceRecord, Failure> {
        check_version(r.version)?;
        let addr = r.device.unwrap_or_default();
        let handle = addr.handle.clone();
        let user = self
            .state
            .db(move |s| s.user(&handle))
            .await?
            .ok_or_else(|| {
                Failure::new(ErrorCode::UnknownUser, format!("no user {}", addr.handle))
            })?;
        let identity = PublicKey::from_bytes(&user.identity_key)
            .map_err(|_| Failure::new(ErrorCode::Internal, "stored identity key unusable"))?;
        let device_key =
            certified_device_key(&r.device_certificate, &identity, &addr, &r.signature, nonce)?;
        Ok(self
            .state
            .db(move |s| {
                s.add_device(
                    &addr.handle,
                    addr.device_id,
                    &device_key,
                    &r.device_certificate,
                )
            })
            .await?)
    }

    fn rate_limit(&self, device: &DeviceRecord) -> Result<(), Failure> {
        self.state.take_token(device.key).map_err(|wait| {
            let mut f = Failure::new(
                ErrorCode::RateLimited,
                format!("too many requests from this device; retry in {wait} ms"),
            );
            f.retry_after_ms = wait;
            f
        })
    }

    async fn authenticated(&mut self, body: Req) -> Result<Option<Resp>, Failure> {
        let Some(device) = self.device.clone() else {
            return Err(Failure::new(
                ErrorCode::NotAuthenticated,
                "authenticate first",
            ));
        };
        let limits = self.state.limits.clone();
        let ttl_ms = limits.message_ttl_secs.saturating_mul(1000);
        match body {
            Req::Authenticate(_) | Req::RegisterAccount(_) | Req::RegisterDevice(_) => {
                Err(Failure::new(
                    ErrorCode::MalformedFrame,
                    "this connection is already authenticated",
                ))
            }
            Req::UploadKeyPackages(u) => {
                self.rate_limit(&device)?;
                let key = device.key;
                let max = limits.max_key_packages_per_device;
                self.state
                    .db(move |s| {
                        s.upload_key_packages(
                            key,
                            &u.one_time,
                            (!u.last_resort.is_empty()).then_some(u.last_resort.as_slice()),
                            max,
                        )
                    })
                    .await?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::ClaimKeyPackages(c) => {
                self.rate_limit(&device)?;
                let handle = c.handle.clone();
                let (identity_key, claimed) = self
                    .state
                    .db(move |s| s.claim_key_packages(&handle, &c.exclude_device_ids))
                    .await?;
                if claimed.is_empty() {
                    return Err(Failure::new(
                        ErrorCode::NoKeyPackages,
                        format!("{} has no device with a KeyPackage right now", c.handle),
                    ));
                }
                Ok(Some(Resp::KeyPackagesClaimed(v1::KeyPackagesClaimed {
                    handle: c.handle,
                    identity_key,
                    key_packages: claimed
                        .into_iter()
                        .map(|k| v1::ClaimedKeyPackage {
                            device_id: k.device_id,
                            key_package: k.key_package,
                            last_resort: k.last_resort,
                        })
                        .collect(),
                })))
            }
            Req::LookupUser(l) => {
                let handle = l.handle.clone();
                let user = self
                    .state
                    .db(move |s| s.user(&handle))
                    .await?
                    .ok_or_else(|| {
                        Failure::new(ErrorCode::UnknownUser, format!("no user {}", l.handle))
                    })?;
                Ok(Some(Resp::UserInfo(v1::UserInfo {
                    handle: l.handle,
                    identity_key: user.identity_key,
                    device_certificates: user.certificates,
                })))
            }
            Req::ListDevices(_) => {
                let handle = device.handle.clone();
                let user = self
                    .state
                    .db(move |s| s.user(&handle))
                    .await?
                    .ok_or_else(|| Failure::new(ErrorCode::UnknownUser, "no such user"))?;
                Ok(Some(Resp::DeviceList(v1::DeviceList {
                    device_certificates: user.certificates,
                })))
            }
            Req::CreateGroup(c) => {
                let key = device.key;
                self.state
                    .db(move |s| s.create_group(&c.group_id, key))
                    .await?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::SendCommit(c) => {
                self.rate_limit(&device)?;
                let sender = device.clone();
                let max = limits.max_queue_len_per_device;
                let (epoch, notify) = self
                    .state
                    .db(move |s| {
                        let added: Vec<(String, u64)> = c
                            .added
                            .iter()
                            .map(|a| (a.handle.clone(), a.device_id))
                            .collect();
                        let removed: Vec<(String, u64)> = c
                            .removed
                            .iter()
                            .map(|a| (a.handle.clone(), a.device_id))
                            .collect();
                        s.commit(
                            &CommitRequest {
                                group_id: &c.group_id,
                                sender: &sender,
                                epoch: c.epoch,
                                commit: &c.commit,
                                welcome: &c.welcome,
                                added: &added,
                                removed: &removed,
                            },
                            max,
                            ttl_ms,
                        )
                    })
                    .await?;
                for d in notify {
                    self.state.notifier.notify(d);
                }
                Ok(Some(Resp::CommitAccepted(v1::CommitAccepted { epoch })))
            }
            Req::SendMessage(m) => {
                self.rate_limit(&device)?;
                let sender = device.clone();
                let max = limits.max_queue_len_per_device;
                let notify = self
                    .state
                    .db(move |s| s.send_message(&m.group_id, &sender, &m.message, max, ttl_ms))
                    .await?;
                for d in notify {
                    self.state.notifier.notify(d);
                }
                Ok(Some(Resp::MessageAccepted(v1::MessageAccepted {})))
            }
            Req::Ack(a) => {
                let key = device.key;
                self.state.db(move |s| s.ack(key, a.up_to_seq)).await?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::FetchGroupState(f) => {
                let key = device.key;
                let group_id = f.group_id.clone();
                let (epoch, members) = self
                    .state
                    .db(move |s| s.group_state(&group_id, key))
                    .await?;
                Ok(Some(Resp::GroupState(v1::GroupState {
                    group_id: f.group_id,
                    epoch,
                    members: members
                        .into_iter()
                        .map(|(handle, device_id)| v1::DeviceAddress { handle, device_id })
                        .collect(),
                })))
            }
            Req::LinkOpen(l) => {
                let ttl = Duration::from_secs(limits.link_slot_ttl_secs);
                self.state
                    .links
                    .open(&l.slot, &device.handle, ttl)
                    .map_err(link_failure)?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::LinkSend(l) => {
                self.state
                    .links
                    .send(
                        &l.slot,
                        l.from_initiator,
                        Some(&device.handle),
                        self.id,
                        l.payload,
                    )
                    .map_err(link_failure)?;
                Ok(Some(Resp::Done(v1::Done {})))
            }
            Req::LinkReceive(l) => {
                let payload = self
                    .state
                    .links
                    .receive(&l.slot, l.for_initiator, Some(&device.handle), self.id)
                    .map_err(link_failure)?;
                Ok(Some(Resp::LinkPayload(v1::LinkPayload {
                    payload: payload.unwrap_or_default(),
                })))
            }
            Req::Ping(_) => Ok(Some(Resp::Pong(v1::Pong {}))),
        }
    }

    fn start_delivery(&mut self, device: crate::store::DeviceKey) {
        let state = self.state.clone();
        let out = self.out.clone();
        let mut wake = state.notifier.subscribe(device);
        self.delivery = Some(tokio::spawn(async move {
            let mut last_sent = 0u64;
            let mut drained = false;
            loop {
                wake.borrow_and_update();
                let batch = match state
                    .db(move |s| s.fetch(device, last_sent, DELIVERY_BATCH))
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!("delivery read failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if batch.is_empty() {
                    if !drained {
                        drained = true;
                        if out
                            .send(frame(
                                0,
                                Resp::QueueDrained(v1::QueueDrained {
                                    last_seq: last_sent,
                                }),
                            ))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    tokio::select! {
                        r = wake.changed() => if r.is_err() { return },
                        _ = tokio::time::sleep(Duration::from_secs(DELIVERY_POLL_SECS)) => {}
                    }
                    continue;
                }
                for q in batch {
                    last_sent = q.seq;
                    let envelope = v1::Envelope {
                        seq: q.seq,
                        kind: q.kind,
                        group_id: q.group_id,
                        sender: Some(v1::DeviceAddress {
                            handle: q.sender_handle,
                            device_id: q.sender_device,
                        }),
                        payload: q.payload,
                        server_time_ms: q.enqueued_ms,
                    };
                    if out.send(frame(0, Resp::Envelope(envelope))).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
}

fn frame_for(request_id: u64, resp: Resp) -> Message {
    frame(request_id, resp)
}

fn check_version(version: i32) -> Result<(), Failure> {
    if version != ProtocolVersion::V1 as i32 {
        return Err(Failure::new(
            ErrorCode::UnsupportedVersion,
            "this server speaks protocol version 1",
        ));
    }
    Ok(())
}

/// Checks a registering device: its certificate verifies under `identity`, names exactly
/// `addr`, and the challenge signature verifies with the certified key. Returns that key.
fn certified_device_key(
    certificate: &[u8],
    identity: &PublicKey,
    addr: &v1::DeviceAddress,
    signature: &[u8],
    nonce: &[u8; 32],
) -> Result<Vec<u8>, Failure> {
    let cert = DeviceCertificate::from_bytes(certificate.to_vec())
        .verify_for(identity)
        .map_err(|e| Failure::new(ErrorCode::InvalidCertificate, e.to_string()))?;
    check_subject(&cert, addr)?;
    verify_auth(
        &cert.device_key,
        nonce,
        &addr.handle,
        addr.device_id,
        signature,
    )
    .map_err(|_| {
        Failure::new(
            ErrorCode::AuthFailed,
            "the signature does not verify with the certified device key",
        )
    })?;
    Ok(cert.device_key.to_bytes().to_vec())
}

fn check_subject(
    cert: &tacit_identity::VerifiedCertificate,
    addr: &v1::DeviceAddress,
) -> Result<(), Failure> {
    if cert.handle != addr.handle || cert.device_id != addr.device_id {
        return Err(Failure::new(
            ErrorCode::InvalidCertificate,
            "the certificate names another device than the one registering",
        ));
    }
    Ok(())
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

fn request_kind(body: &Req) -> &'static str {
    match body {
        Req::Authenticate(_) => "authenticate",
        Req::RegisterAccount(_) => "register_account",
        Req::RegisterDevice(_) => "register_device",
        Req::UploadKeyPackages(_) => "upload_key_packages",
        Req::ClaimKeyPackages(_) => "claim_key_packages",
        Req::LookupUser(_) => "lookup_user",
        Req::ListDevices(_) => "list_devices",
        Req::CreateGroup(_) => "create_group",
        Req::SendCommit(_) => "send_commit",
        Req::SendMessage(_) => "send_message",
        Req::Ack(_) => "ack",
        Req::FetchGroupState(_) => "fetch_group_state",
        Req::LinkOpen(_) => "link_open",
        Req::LinkSend(_) => "link_send",
        Req::LinkReceive(_) => "link_receive",
        Req::Ping(_) => "ping",
    }
}
