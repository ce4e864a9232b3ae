//! Device linking, sans-IO: an existing device (the *initiator*) and a new one (the *joiner*)
//! share a one-time code, run SPAKE2 on its secret part through the server's blind relay, and
//! then exchange sealed messages: the joiner's device key, and in return its certificate and the
//! user's identity key. The relay sees only the slot name and ciphertexts, and one wrong guess
//! of the code burns the slot, so a short code is safe.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use prost::Message as _;
use rand::Rng;
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tacit_identity::{DeviceCertificate, DeviceKeyPair, IdentityKeyPair, PublicKey};
use tacit_proto::v1::{link_message, LinkGrant, LinkMessage, LinkRequest};
use zeroize::Zeroizing;

use crate::device::{Account, Device, Registration};
use crate::error::{CoreError, Result};

const SLOT_LEN: usize = 8;
const SECRET_DIGITS: usize = 10;
const SLOT_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// A one-time link code: `slot-secret`. The slot names the relay mailbox; the secret never
/// leaves the two devices.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode {
    /// Relay mailbox name (public).
    pub slot: String,
    secret: Zeroizing<String>,
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkCode({}-[redacted])", self.slot)
    }
}

impl LinkCode {
    /// A fresh random code.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        let slot = (0..SLOT_LEN)
            .map(|_| SLOT_ALPHABET[rng.gen_range(0..SLOT_ALPHABET.len())] as char)
            .collect();
        let secret = (0..SECRET_DIGITS)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect();
        LinkCode {
            slot,
            secret: Zeroizing::new(secret),
        }
    }

    /// Parses `slot-secret` as shown by [`LinkCode::display`].
    pub fn parse(code: &str) -> Result<Self> {
        let bad =
            || CoreError::Link("that is not a link code; it looks like abcd2345-0123456789".into());
        let (slot, secret) = code.trim().split_once('-').ok_or_else(bad)?;
        if slot.len() != SLOT_LEN
            || !slot.bytes().all(|b| SLOT_ALPHABET.contains(&b))
            || secret.len() != SECRET_DIGITS
            || !secret.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        Ok(LinkCode {
            slot: slot.to_owned(),
            secret: Zeroizing::new(secret.to_owned()),
        })
    }

    /// The code to show the user (contains the secret: show it, never log it).
    pub fn display(&self) -> String {
        format!("{}-{}", self.slot, self.secret.as_str())
    }

    fn spake(&self, initiator: bool) -> (Spake2<Ed25519Group>, Vec<u8>) {
        let password = Password::new(self.secret.as_bytes());
        let (a, b) = (
            Identity::new(b"tacit-link-initiator"),
            Identity::new(b"tacit-link-joiner"),
        );
        if initiator {
            Spake2::<Ed25519Group>::start_a(&password, &a, &b)
        } else {
            Spake2::<Ed25519Group>::start_b(&password, &a, &b)
        }
    }
}

fn pake_message(bytes: Vec<u8>) -> Vec<u8> {
    LinkMessage {
        body: Some(link_message::Body::Pake(bytes)),
    }
    .encode_to_vec()
}

fn parse(bytes: &[u8]) -> Result<link_message::Body> {
    LinkMessage::decode(bytes)
        .ok()
        .and_then(|m| m.body)
        .ok_or_else(|| CoreError::Link("malformed link message".into()))
}

/// The symmetric key both sides derive from SPAKE2, bound to the slot.
struct LinkKey(Zeroizing<[u8; 32]>);

impl LinkKey {
    fn derive(spake_key: &[u8], slot: &str) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(slot.as_bytes()), spake_key)
            .expand(b"tacit-link-v1", key.as_mut())
            .map_err(|_| CoreError::Link("key derivation failed".into()))?;
        Ok(LinkKey(key))
    }

    fn seal(&self, label: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let nonce: [u8; 24] = rand::random();
        let mut out = nonce.to_vec();
        out.extend(
            cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: plaintext,
                        aad: label,
                    },
                )
                .map_err(|_| CoreError::Link("sealing failed".into()))?,
        );
        Ok(LinkMessage {
            body: Some(link_message::Body::Sealed(out)),
        }
        .encode_to_vec())
    }

    fn open(&self, label: &[u8], message: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let link_message::Body::Sealed(sealed) = parse(message)? else {
            return Err(CoreError::Link("expected a sealed message".into()));
        };
        if sealed.len() < 24 {
            return Err(CoreError::Link("sealed message too short".into()));
        }
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        cipher
            .decrypt(XNonce::from_slice(&sealed[..24]), Payload { msg: &sealed[24..], aad: label })
            .map(Zeroizing::new)
            .map_err(|_| CoreError::Link("the codes do not match (or the relay tampered with the exchange); start again with a new code".into()))
    }
}

fn finish(spake: Spake2<Ed25519Group>, message: &[u8], slot: &str) -> Result<LinkKey> {
    let link_message::Body::Pake(theirs) = parse(message)? else {
        return Err(CoreError::Link("expected a key-exchange message".into()));
    };
    let key = Zeroizing::new(
        spake
            .finish(&theirs)
            .map_err(|_| CoreError::Link("key exchange failed".into()))?,
    );
    LinkKey::derive(&key, slot)
}

const REQUEST: &[u8] = b"tacit-link-request";
const GRANT: &[u8] = b"tacit-link-grant";

/// The existing device's side.
pub struct Initiator {
    code: LinkCode,
    spake: Option<Spake2<Ed25519Group>>,
    key: Option<LinkKey>,
}

impl Initiator {
    /// Starts with a fresh code; returns the first message to relay.
    pub fn start() -> (Self, Vec<u8>) {
        let code = LinkCode::generate();
        let (spake, msg) = code.spake(true);
        (
            Initiator {
                code,
                spake: Some(spake),
                key: None,
            },
            pake_message(msg),
        )
    }

    /// The code to show the user.
    pub fn code(&self) -> &LinkCode {
        &self.code
    }

    /// Handles the joiner's key-exchange message.
    pub fn on_pake(&mut self, message: &[u8]) -> Result<()> {
        let spake = self
            .spake
            .take()
            .ok_or_else(|| CoreError::Link("unexpected key exchange".into()))?;
        self.key = Some(finish(spake, message, &self.code.slot)?);
        Ok(())
    }

    /// Opens the joiner's request, certifies its device and returns the sealed grant, plus the
    /// new device's name for the user.
    pub fn on_request(&mut self, device: &Device, message: &[u8]) -> Result<(Vec<u8>, String)> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| CoreError::Link("no key yet".into()))?;
        let request = LinkRequest::decode(key.open(REQUEST, message)?.as_slice())
            .map_err(|_| CoreError::Link("malformed request".into()))?;
        let device_key = PublicKey::from_bytes(&request.device_key)
            .map_err(|_| CoreError::Link("invalid device key".into()))?;
        let certificate = device.certify_device(&device_key, request.device_id)?;
        let account = device.account()?;
        let grant = LinkGrant {
            handle: account.handle.clone(),
            identity_secret: account.identity.to_secret_bytes().to_vec(),
            device_certificate: certificate.as_bytes().to_vec(),
        };
        let plaintext = Zeroizing::new(grant.encode_to_vec());
        let name = format!("{}/{:016x}", account.handle, request.device_id);
        Ok((key.seal(GRANT, &plaintext)?, name))
    }
}

/// The new device's side.
pub struct Joiner {
    code: LinkCode,
    spake: Option<Spake2<Ed25519Group>>,
    key: Option<LinkKey>,
    device_key: DeviceKeyPair,
    device_id: u64,
}

impl Joiner {
    /// Starts from the code the user typed; returns the first message to relay.
    pub fn start(code: LinkCode) -> (Self, Vec<u8>) {
        let (spake, msg) = code.spake(false);
        let joiner = Joiner {
            code,
            spake: Some(spake),
            key: None,
            device_key: DeviceKeyPair::generate(),
            device_id: rand::random(),
        };
        (joiner, pake_message(msg))
    }

    /// The relay slot.
    pub fn slot(&self) -> &str {
        &self.code.slot
    }

    /// Handles the initiator's key-exchange message; returns the sealed request to relay.
    pub fn on_pake(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        let spake = self
            .spake
            .take()
            .ok_or_else(|| CoreError::Link("unexpected key exchange".into()))?;
        let key = finish(spake, message, &self.code.slot)?;
        let request = LinkRequest {
            device_key: self.device_key.public().to_bytes().to_vec(),
            device_id: self.device_id,
        };
        let sealed = key.seal(REQUEST, &request.encode_to_vec())?;
        self.key = Some(key);
        Ok(sealed)
    }

    /// Opens the grant, checks the certificate and installs the account in `device`.
    pub fn on_grant(
        self,
        device: &mut Device,
        message: &[u8],
        server_url: &str,
    ) -> Result<Registration> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| CoreError::Link("no key yet".into()))?;
        let grant = LinkGrant::decode(key.open(GRANT, message)?.as_slice())
            .map_err(|_| CoreError::Link("malformed grant".into()))?;
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
            grant
                .identity_secret
                .as_slice()
                .try_into()
                .map_err(|_| CoreError::Link("malformed identity key".into()))?,
        );
        let identity = IdentityKeyPair::from_secret_bytes(&secret);
        let certificate = DeviceCertificate::from_bytes(grant.device_certificate);
        let cert = certificate
            .verify_for(&identity.public())
            .map_err(|e| CoreError::Link(format!("certificate refused: {e}")))?;
        if cert.device_key != self.device_key.public()
            || cert.device_id != self.device_id
            || cert.handle != grant.handle
        {
            return Err(CoreError::Link(
                "the certificate is not for this device".into(),
            ));
        }
        device.install_account(Account {
            handle: grant.handle,
            device_id: self.device_id,
            device_key: self.device_key,
            identity,
            certificate,
            server_url: server_url.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_parse_and_redact() {
        let code = LinkCode::generate();
        let shown = code.display();
        assert_eq!(LinkCode::parse(&shown).unwrap(), code);
        assert!(!format!("{code:?}").contains(&shown[SLOT_LEN + 1..]));
        assert!(LinkCode::parse("nonsense").is_err());
        assert!(LinkCode::parse("abcdefgh-12345").is_err());
    }

    #[test]
    fn wrong_secret_fails_to_open() {
        let (mut init, first) = Initiator::start();
        let mut wrong = LinkCode::parse(&init.code().display()).unwrap();
        wrong.secret = Zeroizing::new("0000000000".into());
        if wrong == *init.code() {
            wrong.secret = Zeroizing::new("1111111111".into());
        }
        let (mut joiner, second) = Joiner::start(wrong);
        let sealed = joiner.on_pake(&first).unwrap();
        init.on_pake(&second).unwrap();
        // Keys differ, so the initiator cannot open the request.
        let key = init.key.as_ref().unwrap();
        assert!(key.open(REQUEST, &sealed).is_err());
    }
}
