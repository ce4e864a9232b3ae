//! Device certificates inside MLS credentials, and the check every leaf must pass.

use std::cell::RefCell;
use std::collections::HashMap;

use openmls::prelude::{BasicCredential, Credential, CredentialType, CredentialWithKey};
use tacit_identity::{DeviceCertificate, PublicKey, VerifiedCertificate};

use crate::error::{CoreError, Result};

/// At most this many verified certificates are remembered; past it the memory starts afresh.
pub const VERIFIED_CERTIFICATES_KEPT: usize = 16_384;

/// Certificates whose signature has already been checked, by their exact encoding. Verifying
/// a certificate depends on nothing but its bytes (the identity key that must have signed it is
/// inside), so a remembered result is as good as a new check; whether that identity key is the
/// one pinned for the handle is still checked every time ([`check_leaf`]), so a changed pin is
/// always respected. Failures are not remembered.
#[derive(Default)]
pub(crate) struct CertCache {
    verified: RefCell<HashMap<Vec<u8>, VerifiedCertificate>>,
}

impl CertCache {
    fn verify(&self, encoded: &[u8]) -> Result<VerifiedCertificate> {
        if let Some(cert) = self.verified.borrow().get(encoded) {
            return Ok(cert.clone());
        }
        let cert = DeviceCertificate::from_bytes(encoded.to_vec())
            .verify()
            .map_err(|e| CoreError::BadDevice {
                device: "unknown device".into(),
                reason: e.to_string(),
            })?;
        let mut verified = self.verified.borrow_mut();
        if verified.len() >= VERIFIED_CERTIFICATES_KEPT {
            verified.clear();
        }
        verified.insert(encoded.to_vec(), cert.clone());
        Ok(cert)
    }
}

/// The credential a device puts in its leaves: a BasicCredential whose identity is the encoded
/// device certificate, bound to the device key.
pub(crate) fn credential_with_key(
    cert: &DeviceCertificate,
    device_key: &PublicKey,
) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(cert.as_bytes().to_vec()).into(),
        signature_key: device_key.to_bytes().to_vec().into(),
    }
}

/// The certificate in a leaf, verified for self-consistency only (used to name the device).
pub(crate) fn certificate_of(
    certs: &CertCache,
    credential: &Credential,
) -> Result<VerifiedCertificate> {
    if credential.credential_type() != CredentialType::Basic {
        return Err(CoreError::BadDevice {
            device: "unknown device".into(),
            reason: "its credential is not a Tacit device certificate".into(),
        });
    }
    certs.verify(credential.serialized_content())
}

/// Outcome of checking a leaf against the pinned identity keys.
pub(crate) enum LeafCheck {
    /// The certificate verifies under the pinned identity key and matches the leaf key.
    Valid(Box<VerifiedCertificate>),
    /// The handle's identity key is not pinned yet; the driver must look it up first.
    UnknownIdentity(String),
}

/// Checks a leaf (credential + leaf signature key): its certificate must verify under the
/// identity key pinned for its handle, and certify exactly the key the leaf signs with.
pub(crate) fn check_leaf(
    certs: &CertCache,
    credential: &Credential,
    leaf_signature_key: &[u8],
    pinned: impl FnMut(&str) -> Result<Option<PublicKey>>,
) -> Result<LeafCheck> {
    let mut pinned = pinned;
    let cert = certificate_of(certs, credential)?;
    let name = cert.device_name();
    let Some(identity) = pinned(&cert.handle)? else {
        return Ok(LeafCheck::UnknownIdentity(cert.handle));
    };
    if cert.identity_key != identity {
        return Err(CoreError::BadDevice {
            device: name,
            reason: format!(
                "its certificate is signed by an identity key that is not {}'s",
                cert.handle
            ),
        });
    }
    if cert.device_key.to_bytes().as_slice() != leaf_signature_key {
        return Err(CoreError::BadDevice {
            device: name,
            reason: "its leaf signs with a key its certificate does not certify".into(),
        });
    }
    Ok(LeafCheck::Valid(Box::new(cert)))
}
