//! Sealing values and hiding keys, with subkeys derived from the store key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{StoreError, StoreKey};

const NONCE_BYTES: usize = 24;

/// Subkeys of one store key.
pub(crate) struct Cipher {
    aead: XChaCha20Poly1305,
    mac_key: Zeroizing<[u8; 64]>,
}

impl Cipher {
    pub(crate) fn new(key: &StoreKey) -> Result<Cipher, StoreError> {
        let hk = Hkdf::<Sha256>::new(Some(b"tacit-local-store-v1"), key.as_bytes());
        let mut enc = Zeroizing::new([0u8; 32]);
        let mut mac_key = Zeroizing::new([0u8; 64]);
        hk.expand(b"value encryption", enc.as_mut())
            .and_then(|_| hk.expand(b"key mac", mac_key.as_mut()))
            .map_err(|_| StoreError::KeyDerivation("hkdf".into()))?;
        Ok(Cipher {
            aead: XChaCha20Poly1305::new(enc.as_ref().into()),
            mac_key,
        })
    }

    /// The stored form of a logical key: HMAC-SHA256(mac_key, namespace || key).
    pub(crate) fn hide_key(&self, namespace: u8, key: &[u8]) -> Vec<u8> {
        // A 64-byte key is exactly one SHA-256 block: no fallible length handling.
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(self.mac_key.as_ref().into());
        mac.update(&[namespace]);
        mac.update(key);
        mac.finalize().into_bytes().to_vec()
    }

    /// nonce || ciphertext, bound to the stored key.
    pub(crate) fn seal(&self, stored_key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let mut out = nonce.to_vec();
        out.extend(
            self.aead
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: value,
                        aad: stored_key,
                    },
                )
                .map_err(|_| StoreError::Corrupt("encryption failed".into()))?,
        );
        Ok(out)
    }

    pub(crate) fn open(&self, stored_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_BYTES {
            return Err(StoreError::Corrupt("value too short".into()));
        }
        self.aead
            .decrypt(
                XNonce::from_slice(&sealed[..NONCE_BYTES]),
                Payload {
                    msg: &sealed[NONCE_BYTES..],
                    aad: stored_key,
                },
            )
            .map_err(|_| StoreError::Corrupt("a value failed authentication".into()))
    }
}
