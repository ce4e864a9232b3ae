//! The device-certificate parser and verifier (`DeviceCertificate::verify` / `verify_for`), which
//! the server runs at registration and clients run on every MLS leaf and directory answer.
//!
//! Beyond "no panic", for any bytes that verify:
//! - they are the one canonical encoding of what they say (re-serialising the decoded wrapper and
//!   body gives the same bytes), and the verified fields are the body's;
//! - they verify for their own identity key and are refused for any other;
//! - they are one of the certificates the seeds issued with the fuzz targets' known identity
//!   keys, byte for byte, and say exactly what that certificate says. Only the targets hold
//!   those secrets, so a mutation of a valid certificate that verifies as anything else — another
//!   handle, device, device key or identity — would be a forgery.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tacit_fuzz::seeds;
use tacit_identity::{DeviceCertificate, IdentityError, PublicKey, VerifiedCertificate};
use tacit_proto::{encode, v1};

struct Known {
    identities: Vec<PublicKey>,
    certificates: Vec<(DeviceCertificate, VerifiedCertificate)>,
}

fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(|| Known {
        identities: seeds::known_identities()
            .iter()
            .map(|i| i.public())
            .collect(),
        certificates: seeds::certificates()
            .into_iter()
            .map(|(name, c)| {
                let v = c
                    .verify()
                    .unwrap_or_else(|e| panic!("seed {name} does not verify: {e}"));
                (c, v)
            })
            .collect(),
    })
}

fuzz_target!(|data: &[u8]| {
    let cert = DeviceCertificate::from_bytes(data.to_vec());
    let Ok(verified) = cert.verify() else {
        return;
    };

    let outer = v1::DeviceCertificate::decode(data).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        encode(&outer),
        data,
        "a verified certificate re-serialises differently"
    );
    let body = v1::CertificateBody::decode(outer.body.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        encode(&body),
        outer.body,
        "a verified body re-serialises differently"
    );
    assert_eq!(
        (body.handle.as_str(), body.device_id, body.issued_at_ms),
        (
            verified.handle.as_str(),
            verified.device_id,
            verified.issued_at_ms
        )
    );
    assert_eq!(body.device_key, verified.device_key.to_bytes());
    assert_eq!(body.identity_key, verified.identity_key.to_bytes());

    let known = known();
    for identity in &known.identities {
        let result = cert.verify_for(identity);
        if *identity == verified.identity_key {
            assert_eq!(result.as_ref(), Ok(&verified));
        } else {
            assert!(matches!(result, Err(IdentityError::WrongIdentity { .. })));
        }
    }
    let issued = known
        .certificates
        .iter()
        .find(|(c, _)| c.as_bytes() == data)
        .unwrap_or_else(|| panic!("verifies as {verified:?}, but no seed issued it"));
    assert_eq!(issued.1, verified);
});
