//! Device certificates: (handle, device id, device key) signed by the user's identity key.

use prost::Message;
use tacit_proto::limits::MAX_CERTIFICATE_BYTES;
use tacit_proto::v1;
use tacit_proto::validate::is_valid_handle;
use tacit_proto::CERT_CONTEXT;

use crate::{IdentityError, IdentityKeyPair, PublicKey};

/// The certificate format version this crate issues and accepts.
const CERT_VERSION: u32 = 1;

/// An encoded, signed device certificate as it travels (in MLS credentials and the directory).
/// Obtain its contents only through [`DeviceCertificate::verify`] or
/// [`DeviceCertificate::verify_for`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate(Vec<u8>);

/// The contents of a certificate whose signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCertificate {
    /// The user the device belongs to.
    pub handle: String,
    /// The device's id, unique within the user.
    pub device_id: u64,
    /// The device's Ed25519 key (its MLS signature key).
    pub device_key: PublicKey,
    /// The identity key that signed this certificate.
    pub identity_key: PublicKey,
    /// When it was issued, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CERT_CONTEXT.len() + body.len());
    out.extend_from_slice(CERT_CONTEXT);
    out.extend_from_slice(body);
    out
}

impl DeviceCertificate {
    /// Issues a certificate for a device of `handle`, signed by `identity`.
    pub fn issue(
        identity: &IdentityKeyPair,
        handle: &str,
        device_id: u64,
        device_key: &PublicKey,
        issued_at_ms: u64,
    ) -> Self {
        let body = v1::CertificateBody {
            version: CERT_VERSION,
            handle: handle.to_owned(),
            device_id,
            device_key: device_key.to_bytes().to_vec(),
            identity_key: identity.public().to_bytes().to_vec(),
            issued_at_ms,
        }
        .encode_to_vec();
        let signature = identity.sign(&signed_bytes(&body)).to_vec();
        Self(v1::DeviceCertificate { body, signature }.encode_to_vec())
    }

    /// Wraps received bytes; nothing is checked until [`verify`](Self::verify).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The encoded certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes the certificate, bounds its fields and checks its signature against the identity
    /// key it names. This proves only self-consistency: callers must also check that the identity
    /// key is the one they know for the handle ([`verify_for`](Self::verify_for) does both).
    ///
    /// Only the canonical encoding is accepted — the bytes [`issue`](Self::issue) produces, with
    /// no unknown, repeated or reordered fields — so a certificate has exactly one byte form and
    /// nothing can be prepended, appended or re-encoded without it being refused.
    pub fn verify(&self) -> Result<VerifiedCertificate, IdentityError> {
        let malformed = |why: &str| IdentityError::MalformedCertificate(why.to_owned());
        if self.0.len() > MAX_CERTIFICATE_BYTES {
            return Err(malformed("too large"));
        }
        let outer = v1::DeviceCertificate::decode(self.0.as_slice())
            .map_err(|_| malformed("not a certificate"))?;
        if outer.encode_to_vec() != self.0 {
            return Err(malformed("not in canonical encoding"));
        }
        let body = v1::CertificateBody::decode(outer.body.as_slice())
            .map_err(|_| malformed("body does not decode"))?;
        if body.encode_to_vec() != outer.body {
            return Err(malformed("body not in canonical encoding"));
        }
        if body.version != CERT_VERSION {
            return Err(malformed("unsupported version"));
        }
        if !is_valid_handle(&body.handle) {
            return Err(malformed("invalid handle"));
        }
        let identity_key = PublicKey::from_bytes(&body.identity_key)
            .map_err(|_| malformed("invalid identity key"))?;
        let device_key =
            PublicKey::from_bytes(&body.device_key).map_err(|_| malformed("invalid device key"))?;
        identity_key.verify(&signed_bytes(&outer.body), &outer.signature)?;
        Ok(VerifiedCertificate {
            handle: body.handle,
            device_id: body.device_id,
            device_key,
            identity_key,
            issued_at_ms: body.issued_at_ms,
        })
    }

    /// Verifies the certificate and checks that it was signed by `expected_identity`.
    pub fn verify_for(
        &self,
        expected_identity: &PublicKey,
    ) -> Result<VerifiedCertificate, IdentityError> {
        let cert = self.verify()?;
        if &cert.identity_key != expected_identity {
            return Err(IdentityError::WrongIdentity {
                handle: cert.handle,
            });
        }
        Ok(cert)
    }
}

impl VerifiedCertificate {
    /// `handle/device-id`, the way Tacit names a device to people.
    pub fn device_name(&self) -> String {
        format!("{}/{:016x}", self.handle, self.device_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::DeviceKeyPair;
    use proptest::prelude::*;

    fn issue(
        identity: &IdentityKeyPair,
        handle: &str,
        device_id: u64,
    ) -> (DeviceCertificate, DeviceKeyPair) {
        let device = DeviceKeyPair::generate();
        (
            DeviceCertificate::issue(
                identity,
                handle,
                device_id,
                &device.public(),
                1_700_000_000_000,
            ),
            device,
        )
    }

    #[test]
    fn issued_certificate_verifies_for_its_identity() {
        let identity = IdentityKeyPair::generate();
        let (cert, device) = issue(&identity, "alice", 9);
        let v = cert.verify_for(&identity.public()).unwrap();
        assert_eq!(v.handle, "alice");
        assert_eq!(v.device_id, 9);
        assert_eq!(v.device_key, device.public());
        assert_eq!(v.device_name(), "alice/0000000000000009");
    }

    #[test]
    fn certificate_by_another_identity_is_refused() {
        let real = IdentityKeyPair::generate();
        let forger = IdentityKeyPair::generate();
        let (forged, _) = issue(&forger, "alice", 1);
        // Self-consistent, but not signed by alice's known key.
        assert!(forged.verify().is_ok());
        assert_eq!(
            forged.verify_for(&real.public()),
            Err(IdentityError::WrongIdentity {
                handle: "alice".into()
            })
        );
    }

    #[test]
    fn tampered_body_is_refused() {
        let identity = IdentityKeyPair::generate();
        let (cert, _) = issue(&identity, "alice", 1);
        let mut outer = v1::DeviceCertificate::decode(cert.as_bytes()).unwrap();
        let mut body = v1::CertificateBody::decode(outer.body.as_slice()).unwrap();
        body.handle = "mallory".into();
        outer.body = body.encode_to_vec();
        let tampered = DeviceCertificate::from_bytes(outer.encode_to_vec());
        assert_eq!(tampered.verify(), Err(IdentityError::BadSignature));
    }

    #[test]
    fn signature_moved_to_other_body_is_refused() {
        let identity = IdentityKeyPair::generate();
        let (a, _) = issue(&identity, "alice", 1);
        let (b, _) = issue(&identity, "alice", 2);
        let a = v1::DeviceCertificate::decode(a.as_bytes()).unwrap();
        let b = v1::DeviceCertificate::decode(b.as_bytes()).unwrap();
        let spliced = v1::DeviceCertificate {
            body: a.body,
            signature: b.signature,
        };
        assert!(DeviceCertificate::from_bytes(spliced.encode_to_vec())
            .verify()
            .is_err());
    }

    /// Found by the `device_certificate` fuzz target: protobuf keeps the last of repeated
    /// fields, so a junk `body` field put in front of a valid certificate used to verify.
    #[test]
    fn non_canonical_encodings_are_refused() {
        let identity = IdentityKeyPair::generate();
        let (cert, _) = issue(&identity, "alice", 1);
        let outer = v1::DeviceCertificate::decode(cert.as_bytes()).unwrap();
        let mut prefixed = v1::DeviceCertificate {
            body: b"junk".to_vec(),
            signature: vec![],
        }
        .encode_to_vec();
        prefixed.extend_from_slice(cert.as_bytes());
        let mut unknown_field = cert.as_bytes().to_vec();
        unknown_field.extend_from_slice(&[0x18, 0x01]); // field 3, varint 1
        let mut reordered = v1::DeviceCertificate {
            body: vec![],
            signature: outer.signature.clone(),
        }
        .encode_to_vec();
        reordered.extend_from_slice(
            &v1::DeviceCertificate {
                body: outer.body.clone(),
                signature: vec![],
            }
            .encode_to_vec(),
        );
        for bytes in [prefixed, unknown_field, reordered] {
            assert!(v1::DeviceCertificate::decode(bytes.as_slice()).is_ok());
            assert_eq!(
                DeviceCertificate::from_bytes(bytes).verify(),
                Err(IdentityError::MalformedCertificate(
                    "not in canonical encoding".into()
                ))
            );
        }
        assert!(cert.verify().is_ok());
    }

    #[test]
    fn non_canonical_signed_body_is_refused() {
        // Even a body the identity key signed is refused unless canonical: one certificate, one
        // byte form.
        let identity = IdentityKeyPair::generate();
        let (cert, _) = issue(&identity, "alice", 1);
        let outer = v1::DeviceCertificate::decode(cert.as_bytes()).unwrap();
        let mut body = outer.body.clone();
        body.extend_from_slice(&[0x38, 0x00]); // field 7, varint 0
        let signature = identity.sign(&signed_bytes(&body)).to_vec();
        let bytes = v1::DeviceCertificate { body, signature }.encode_to_vec();
        assert_eq!(
            DeviceCertificate::from_bytes(bytes).verify(),
            Err(IdentityError::MalformedCertificate(
                "body not in canonical encoding".into()
            ))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_verify_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            prop_assert!(DeviceCertificate::from_bytes(bytes).verify().is_err());
        }

        #[test]
        fn any_valid_subject_round_trips(handle in "[a-z][a-z0-9_.-]{0,31}", device_id in any::<u64>(), at in any::<u64>()) {
            let identity = IdentityKeyPair::generate();
            let device = DeviceKeyPair::generate();
            let cert = DeviceCertificate::issue(&identity, &handle, device_id, &device.public(), at);
            let v = cert.verify_for(&identity.public()).unwrap();
            prop_assert_eq!(v.handle, handle);
            prop_assert_eq!(v.device_id, device_id);
            prop_assert_eq!(v.issued_at_ms, at);
        }

        #[test]
        fn any_single_bit_flip_is_refused(pos in 0usize..200, bit in 0u8..8) {
            let identity = IdentityKeyPair::generate();
            let (cert, _) = issue(&identity, "alice", 5);
            let mut bytes = cert.as_bytes().to_vec();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            prop_assert!(DeviceCertificate::from_bytes(bytes).verify_for(&identity.public()).is_err());
        }
    }
}
