//! `--mode e2e`: the clients run Tacit's client core, so every message is sealed and opened with
//! real MLS and every client step is a transaction on a real encrypted local store.
//!
//! Each pair is two [`tacit_core::Device`]s with their stores on disk (WAL, `synchronous=FULL`,
//! one fsync per transaction, as for a user). The sender's device creates a 1:1 conversation and
//! adds the receiver's device with a commit and a Welcome built from a KeyPackage the receiver
//! made; the receiver joins from that Welcome. Against Tacit the group, the commit and the Welcome
//! also go through the server (CreateGroup, SendCommit), so the server routes to the real member;
//! the baseline relay just carries the MLS messages. Then, per message:
//! - the sender's device encrypts a 200-character text (`Device::encrypt_text`: MLS seal, history
//!   line and outbox entry in one transaction) and, once the server or relay acknowledged it,
//!   forgets the outbox entry (`Device::outbox_sent`, a second transaction);
//! - the receiver's device opens it (`Device::process_envelope`: MLS open, history line and the
//!   processed sequence number in one transaction) and the load reads the send time and the
//!   per-sender counter back out of the decrypted text.
//!
//! The device calls are blocking (SQLite, CPU): each runs on tokio's blocking pool, one at a time
//! per device, as a real client would drive its one store.

use std::path::{Path, PathBuf};

use tacit_core::store::{LocalStore, StoreKey};
use tacit_core::{ClaimedUser, CoreConfig, Device, Event, OutgoingCommit, Processed};
use tacit_proto::v1::{self, EnvelopeKind};

use super::baseline::setup_baseline_pair;
use super::client::Conn;
use super::load::PAYLOAD_BYTES;
use crate::error::{BenchError, Result};

/// Bytes of the load's payload carried through MLS: send time (8) and counter (8).
const STAMP_BYTES: usize = 16;
/// Server URL recorded in the bench devices' profiles (never dialled through the profile).
const PROFILE_SERVER: &str = "ws://127.0.0.1/bench";

/// A device of the load with the one conversation it uses.
pub(crate) struct MlsDevice {
    /// `None` only while a blocking call has it.
    device: Option<Device>,
    group_id: Vec<u8>,
    /// The other device of the pair (the sender, seen from the receiver).
    peer: v1::DeviceAddress,
}

/// What registering a device with a Tacit server needs.
pub(crate) struct Registration {
    /// The account's handle.
    pub(crate) handle: String,
    /// The device id.
    pub(crate) device_id: u64,
    /// The user's identity public key.
    pub(crate) identity_key: Vec<u8>,
    /// The device certificate.
    pub(crate) certificate: Vec<u8>,
}

impl Registration {
    /// The device's address on the wire.
    pub(crate) fn addr(&self) -> v1::DeviceAddress {
        v1::DeviceAddress {
            handle: self.handle.clone(),
            device_id: self.device_id,
        }
    }
}

/// A pair's two devices, the sender's commit adding the receiver (with its Welcome), and their
/// registrations.
pub(crate) struct MlsPair {
    /// The sending device.
    pub(crate) sender: MlsDevice,
    /// The receiving device (not yet joined: see [`MlsPair::join`]).
    pub(crate) receiver: MlsDevice,
    /// The commit adding the receiver, and its Welcome.
    pub(crate) commit: OutgoingCommit,
    /// The sender's registration.
    pub(crate) sender_registration: Registration,
    /// The receiver's registration.
    pub(crate) receiver_registration: Registration,
}

fn core(e: tacit_core::CoreError) -> BenchError {
    BenchError::Client(e.to_string())
}

fn open_device(dir: &Path, handle: &str) -> Result<(Device, Registration)> {
    let store = LocalStore::open(&dir.join(format!("{handle}.db")), &StoreKey::generate())
        .map_err(|e| BenchError::Client(format!("cannot open the local store of {handle}: {e}")))?;
    let mut device = Device::open(store, CoreConfig::default()).map_err(core)?;
    let r = device
        .create_account(handle, PROFILE_SERVER)
        .map_err(core)?;
    let registration = Registration {
        handle: r.handle,
        device_id: r.device_id,
        identity_key: r.identity_key.to_bytes().to_vec(),
        certificate: r.certificate.as_bytes().to_vec(),
    };
    Ok((device, registration))
}

impl MlsPair {
    /// Creates both devices (stores under `dir`), the sender's conversation and the commit adding
    /// the receiver. Blocking.
    pub(crate) fn create(dir: &Path, sender: &str, receiver: &str) -> Result<MlsPair> {
        let (mut s, sender_registration) = open_device(dir, sender)?;
        let (mut r, receiver_registration) = open_device(dir, receiver)?;
        let key_package = r
            .new_key_packages(1)
            .map_err(core)?
            .pop()
            .ok_or_else(|| BenchError::Client("no KeyPackage was built".into()))?;
        let conversation = s
            .create_conversation(receiver, Some(receiver))
            .map_err(core)?;
        let group_id = conversation.group_id;
        let commit = s
            .prepare_add(
                &group_id,
                &[ClaimedUser {
                    handle: receiver.to_owned(),
                    identity_key: receiver_registration.identity_key.clone(),
                    key_packages: vec![(receiver_registration.device_id, key_package)],
                }],
            )
            .map_err(core)?;
        Ok(MlsPair {
            sender: MlsDevice {
                device: Some(s),
                group_id: group_id.clone(),
                peer: receiver_registration.addr(),
            },
            receiver: MlsDevice {
                device: Some(r),
                group_id,
                peer: sender_registration.addr(),
            },
            commit,
            sender_registration,
            receiver_registration,
        })
    }

    /// The group's id (the server's group id too).
    pub(crate) fn group_id(&self) -> &[u8] {
        &self.sender.group_id
    }

    /// The commit was accepted (by the server, or at once for the baseline): the sender merges
    /// it and the receiver joins from the Welcome, which counts as the receiver's queue entry 1
    /// (the Welcome the server queued for it is then recognised as already processed). Blocking.
    pub(crate) fn join(mut self) -> Result<(MlsDevice, MlsDevice)> {
        let group_id = self.sender.group_id.clone();
        let s = self.sender.device_mut()?;
        // The conversation's name announcement is not part of the load: mark it sent.
        if let Some(meta) = s.commit_accepted(&group_id).map_err(core)? {
            s.outbox_sent(meta.outbox_id).map_err(core)?;
        }
        let sender_identity = self.sender_registration.identity_key.clone();
        let sender_addr = self.sender_registration.addr();
        let welcome = std::mem::take(&mut self.commit.welcome);
        let r = self.receiver.device_mut()?;
        r.pin_identity(&sender_addr.handle, &sender_identity)
            .map_err(core)?;
        let joined = r
            .process_envelope(&v1::Envelope {
                seq: 1,
                kind: EnvelopeKind::Welcome as i32,
                group_id: group_id.clone(),
                sender: Some(sender_addr),
                payload: welcome,
                server_time_ms: 0,
            })
            .map_err(core)?;
        match joined {
            Processed::Events(events)
                if events.iter().any(|e| matches!(e, Event::Joined { .. })) =>
            {
                Ok((self.sender, self.receiver))
            }
            other => Err(BenchError::Client(format!(
                "the receiver could not join from the Welcome: {other:?}"
            ))),
        }
    }
}

/// A message sealed for sending, with what to tell the device once it was accepted.
pub(crate) struct Sealed {
    /// The bytes to send (the MLS message, or the payload itself in server mode).
    pub(crate) bytes: Vec<u8>,
    /// The device's outbox entry to forget once accepted (e2e only).
    pub(crate) outbox_id: Option<u64>,
}

/// How a sender turns the load's payloads into messages.
pub(crate) enum SenderEnd {
    /// Server mode: the payload is sent as it is.
    Opaque,
    /// E2E mode: sealed with MLS by the sender's device.
    Mls(Box<MlsDevice>),
}

/// How a receiver gets the load's payload back out of a delivery.
pub(crate) enum ReceiverEnd {
    /// Server mode: the delivery is the payload.
    Opaque,
    /// E2E mode: opened with MLS by the receiver's device. `next_seq` numbers deliveries for a
    /// relay that has no queue sequence of its own (the baseline).
    Mls {
        /// The receiver's device.
        device: Box<MlsDevice>,
        /// The next sequence number to give a delivery that carries none.
        next_seq: u64,
    },
}

/// What opening a delivery gave.
pub(crate) enum Opened {
    /// The load's payload (send time and counter first).
    Payload(Vec<u8>),
    /// A delivery that is no message of the load (e.g. a redelivered Welcome, or a duplicate the
    /// device recognised): nothing to count.
    Nothing,
    /// The device refused it; the text says why.
    Refused(String),
}

/// Sets up pair `i` on Tacit (sender on `sender_url`, receiver on `receiver_url`): two client
/// devices with stores in `dir`, registered, in a 1:1 MLS group created through the server.
pub(crate) async fn setup_tacit_e2e_pair(
    i: usize,
    run_tag: u32,
    sender_url: String,
    receiver_url: String,
    dir: PathBuf,
) -> Result<(Conn, Conn, Vec<u8>, MlsDevice, MlsDevice)> {
    let pair = create_pair(i, run_tag, dir).await?;
    let (mut s, nonce) = Conn::challenged(&sender_url).await?;
    let signature = pair.sender.sign(&nonce)?;
    s.register(&pair.sender_registration, signature).await?;
    let (mut r, nonce) = Conn::challenged(&receiver_url).await?;
    let signature = pair.receiver.sign(&nonce)?;
    r.register(&pair.receiver_registration, signature).await?;
    let group = pair.group_id().to_vec();
    s.create_group(
        &group,
        pair.commit.commit.clone(),
        pair.commit.welcome.clone(),
        pair.receiver_registration.addr(),
    )
    .await?;
    let (sender, receiver) = tokio::task::spawn_blocking(move || pair.join()).await??;
    Ok((s, r, group, sender, receiver))
}

/// Sets up pair `i` on the baseline relay at `url`: the same two client devices and MLS group,
/// made without a server (the relay only forwards).
pub(crate) async fn setup_baseline_e2e_pair(
    i: usize,
    run_tag: u32,
    url: String,
    dir: PathBuf,
) -> Result<(Conn, Conn, MlsDevice, MlsDevice)> {
    let pair = create_pair(i, run_tag, dir).await?;
    let (s, r) = setup_baseline_pair(i, url).await?;
    let (sender, receiver) = tokio::task::spawn_blocking(move || pair.join()).await??;
    Ok((s, r, sender, receiver))
}

async fn create_pair(i: usize, run_tag: u32, dir: PathBuf) -> Result<MlsPair> {
    let sender = format!("es{i}-{run_tag:08x}");
    let receiver = format!("er{i}-{run_tag:08x}");
    tokio::task::spawn_blocking(move || MlsPair::create(&dir, &sender, &receiver)).await?
}

impl MlsDevice {
    /// Signs a server's authentication challenge with the device key.
    fn sign(&self, nonce: &[u8]) -> Result<[u8; 64]> {
        self.device
            .as_ref()
            .ok_or_else(|| BenchError::Client("the device is busy elsewhere".into()))?
            .sign_auth(nonce)
            .map_err(core)
    }

    fn device_mut(&mut self) -> Result<&mut Device> {
        self.device
            .as_mut()
            .ok_or_else(|| BenchError::Client("the device is busy elsewhere".into()))
    }

    /// Runs `f` on the device on tokio's blocking pool.
    async fn call<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Device) -> tacit_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut device = self
            .device
            .take()
            .ok_or_else(|| BenchError::Client("the device is busy elsewhere".into()))?;
        let (device, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut device);
            (device, result)
        })
        .await?;
        self.device = Some(device);
        result.map_err(core)
    }
}

/// The text a payload travels as: its send time and counter in hex, then filler up to
/// [`PAYLOAD_BYTES`] characters.
fn text_of(payload: &[u8]) -> String {
    let stamp = payload.get(..STAMP_BYTES).unwrap_or(payload);
    let mut text: String = stamp.iter().map(|b| format!("{b:02x}")).collect();
    while text.len() < PAYLOAD_BYTES {
        text.push('.');
    }
    text
}

/// The payload's send time and counter back from a text made by [`text_of`].
fn stamp_of(text: &str) -> Option<Vec<u8>> {
    let hex = text.get(..STAMP_BYTES * 2)?;
    (0..STAMP_BYTES)
        .map(|i| {
            hex.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

impl SenderEnd {
    /// Seals one payload.
    pub(crate) async fn seal(&mut self, payload: &[u8]) -> Result<Sealed> {
        match self {
            SenderEnd::Opaque => Ok(Sealed {
                bytes: payload.to_vec(),
                outbox_id: None,
            }),
            SenderEnd::Mls(d) => {
                let group_id = d.group_id.clone();
                let text = text_of(payload);
                let out = d
                    .call(move |device| device.encrypt_text(&group_id, &text))
                    .await?;
                Ok(Sealed {
                    bytes: out.message,
                    outbox_id: Some(out.outbox_id),
                })
            }
        }
    }

    /// The server (or relay) accepted the message sealed with `outbox_id`.
    pub(crate) async fn accepted(&mut self, outbox_id: Option<u64>) -> Result<()> {
        match (self, outbox_id) {
            (SenderEnd::Mls(d), Some(id)) => d.call(move |device| device.outbox_sent(id)).await,
            _ => Ok(()),
        }
    }
}

impl ReceiverEnd {
    /// Opens one delivered message; `seq` is the server's queue sequence number (0 when the
    /// relay has none).
    pub(crate) async fn open(&mut self, seq: u64, message: Vec<u8>) -> Result<Opened> {
        match self {
            ReceiverEnd::Opaque => Ok(Opened::Payload(message)),
            ReceiverEnd::Mls { device, next_seq } => {
                let seq = if seq == 0 { *next_seq } else { seq };
                *next_seq = seq + 1;
                let envelope = v1::Envelope {
                    seq,
                    kind: EnvelopeKind::Message as i32,
                    group_id: device.group_id.clone(),
                    sender: Some(device.peer.clone()),
                    payload: message,
                    server_time_ms: 0,
                };
                let processed = device.call(move |d| d.process_envelope(&envelope)).await?;
                let Processed::Events(events) = processed else {
                    return Ok(Opened::Nothing);
                };
                for event in events {
                    match event {
                        Event::Message { text, .. } => {
                            return Ok(stamp_of(&text).map_or_else(
                                || Opened::Refused("a message that is not the load's".into()),
                                Opened::Payload,
                            ))
                        }
                        Event::Refused { reason, .. } => return Ok(Opened::Refused(reason)),
                        _ => {}
                    }
                }
                Ok(Opened::Nothing)
            }
        }
    }
}

impl ReceiverEnd {
    /// Whether deliveries are used as they are (no decryption time to account for).
    pub(crate) fn is_opaque(&self) -> bool {
        matches!(self, ReceiverEnd::Opaque)
    }

    /// The receiving end of `device` (which processed queue entry 1, the Welcome).
    pub(crate) fn mls(device: MlsDevice) -> ReceiverEnd {
        ReceiverEnd::Mls {
            device: Box::new(device),
            next_seq: 2,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_payload_stamp_survives_the_text() {
        let mut payload = vec![0u8; PAYLOAD_BYTES];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = (i * 37) as u8;
        }
        let text = text_of(&payload);
        assert_eq!(text.len(), PAYLOAD_BYTES);
        assert_eq!(stamp_of(&text).unwrap(), payload[..STAMP_BYTES].to_vec());
        assert!(stamp_of("not hex at all, but long enough to be read as a stamp").is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pair_seals_and_opens_with_real_mls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let pair = tokio::task::spawn_blocking(move || MlsPair::create(&path, "es1", "er1"))
            .await
            .unwrap()
            .unwrap();
        assert!(!pair.commit.welcome.is_empty());
        let (s, r) = tokio::task::spawn_blocking(move || pair.join())
            .await
            .unwrap()
            .unwrap();
        let mut sender = SenderEnd::Mls(Box::new(s));
        let mut receiver = ReceiverEnd::mls(r);
        for counter in 1..=3u64 {
            let mut payload = vec![7u8; PAYLOAD_BYTES];
            payload[8..16].copy_from_slice(&counter.to_le_bytes());
            let sealed = sender.seal(&payload).await.unwrap();
            // The ciphertext does not carry the text in the clear.
            assert!(!sealed
                .bytes
                .windows(16)
                .any(|w| w == text_of(&payload).as_bytes()[..16].as_ref()));
            sender.accepted(sealed.outbox_id).await.unwrap();
            match receiver.open(0, sealed.bytes).await.unwrap() {
                Opened::Payload(p) => assert_eq!(p, payload[..STAMP_BYTES].to_vec()),
                Opened::Nothing => panic!("nothing opened"),
                Opened::Refused(why) => panic!("refused: {why}"),
            }
        }
        if let SenderEnd::Mls(d) = &mut sender {
            let left = d.call(|device| device.outbox()).await.unwrap();
            assert!(left.is_empty(), "accepted messages leave the outbox");
        }
    }
}
