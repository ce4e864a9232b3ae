//! Ed25519 key pairs for identities and devices, and the authentication signature.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::IdentityError;

/// An Ed25519 public key (identity or device), validated on construction.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes, refusing anything that is not a valid Ed25519 point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdentityError::InvalidPublicKey)?;
        VerifyingKey::from_bytes(&array)
            .map(PublicKey)
            .map_err(|_| IdentityError::InvalidPublicKey)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Verifies an Ed25519 signature (strict: no malleable signatures) over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        let signature =
            Signature::from_slice(signature).map_err(|_| IdentityError::BadSignature)?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| IdentityError::BadSignature)
    }

    /// Lower-case hex, for display and logs (public keys are not secret).
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

macro_rules! key_pair {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        ///
        /// The secret half is zeroized on drop (by `ed25519-dalek`) and never printed.
        pub struct $name(SigningKey);

        impl $name {
            /// Generates a fresh key pair from the operating system's random source.
            pub fn generate() -> Self {
                Self(SigningKey::generate(&mut OsRng))
            }

            /// Rebuilds a key pair from its 32-byte secret seed.
            pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
                Self(SigningKey::from_bytes(secret))
            }

            /// The 32-byte secret seed, in a buffer that is wiped when dropped. Store it only
            /// in encrypted storage.
            pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
                Zeroizing::new(self.0.to_bytes())
            }

            /// The public half.
            pub fn public(&self) -> PublicKey {
                PublicKey(self.0.verifying_key())
            }

            /// Signs `message` (Ed25519, deterministic).
            pub fn sign(&self, message: &[u8]) -> [u8; 64] {
                self.0.sign(message).to_bytes()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "{}(public: {}, secret: [redacted])",
                    stringify!($name),
                    self.public().to_hex()
                )
            }
        }
    };
}

key_pair!(
    IdentityKeyPair,
    "A user's long-term identity key: it signs device certificates and nothing else."
);
key_pair!(
    DeviceKeyPair,
    "A device's key: its MLS signature key and the key it authenticates to the server with."
);

/// Signs the server's authentication challenge for `(handle, device_id)`.
pub fn sign_auth(device: &DeviceKeyPair, nonce: &[u8], handle: &str, device_id: u64) -> [u8; 64] {
    device.sign(&tacit_proto::auth_transcript(nonce, handle, device_id))
}

/// Checks an authentication signature made by [`sign_auth`].
pub fn verify_auth(
    device_key: &PublicKey,
    nonce: &[u8],
    handle: &str,
    device_id: u64,
    signature: &[u8],
) -> Result<(), IdentityError> {
    device_key.verify(
        &tacit_proto::auth_transcript(nonce, handle, device_id),
        signature,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn auth_signature_binds_every_field() {
        let device = DeviceKeyPair::generate();
        let nonce = [7u8; 32];
        let sig = sign_auth(&device, &nonce, "alice", 42);
        let key = device.public();
        assert!(verify_auth(&key, &nonce, "alice", 42, &sig).is_ok());
        assert!(verify_auth(&key, &[8u8; 32], "alice", 42, &sig).is_err());
        assert!(verify_auth(&key, &nonce, "alicf", 42, &sig).is_err());
        assert!(verify_auth(&key, &nonce, "alice", 43, &sig).is_err());
        let other = DeviceKeyPair::generate().public();
        assert!(verify_auth(&other, &nonce, "alice", 42, &sig).is_err());
    }

    #[test]
    fn secret_round_trips_and_debug_redacts() {
        let k = IdentityKeyPair::generate();
        let again = IdentityKeyPair::from_secret_bytes(&k.to_secret_bytes());
        assert_eq!(k.public(), again.public());
        let shown = format!("{k:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains(&hex::encode(*k.to_secret_bytes())));
    }

    #[test]
    fn invalid_public_keys_refused() {
        assert_eq!(
            PublicKey::from_bytes(&[1, 2, 3]),
            Err(IdentityError::InvalidPublicKey)
        );
    }
}
