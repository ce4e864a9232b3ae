//! Property tests for every encoder/decoder pair of the identity crate: public keys, secret
//! seeds, device certificates (issue/verify, one canonical byte form, any mutation refused),
//! authentication signatures, and safety numbers (the digits and the QR payload say the same).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tacit_identity::{
    sign_auth, verify_auth, DeviceCertificate, DeviceKeyPair, IdentityError, IdentityKeyPair,
    PublicKey, SafetyNumber,
};

fn seed() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn handle() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_.-]{0,31}"
}

/// Issues a certificate from fixed seeds, so that proptest can shrink failures.
fn certificate(
    identity: &[u8; 32],
    device: &[u8; 32],
    handle: &str,
    device_id: u64,
    at: u64,
) -> (IdentityKeyPair, DeviceKeyPair, DeviceCertificate) {
    let identity = IdentityKeyPair::from_secret_bytes(identity);
    let device = DeviceKeyPair::from_secret_bytes(device);
    let cert = DeviceCertificate::issue(&identity, handle, device_id, &device.public(), at);
    (identity, device, cert)
}

/// Splits a safety number's QR payload into its two fingerprints.
fn qr_fingerprints(payload: &str) -> Option<([u8; 32], [u8; 32])> {
    let rest = payload.strip_prefix("tacit-safety:v1:")?;
    let (a, b) = rest.split_once(':')?;
    let decode = |h: &str| -> Option<[u8; 32]> { hex::decode(h).ok()?.try_into().ok() };
    Some((decode(a)?, decode(b)?))
}

/// The thirty digits a fingerprint shows: six 5-byte big-endian chunks, each mod 100,000.
fn digits_of(fingerprint: &[u8; 32]) -> Vec<String> {
    fingerprint[..30]
        .chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn public_keys_round_trip(secret in seed()) {
        let public = IdentityKeyPair::from_secret_bytes(&secret).public();
        prop_assert_eq!(PublicKey::from_bytes(&public.to_bytes()), Ok(public));
        prop_assert_eq!(PublicKey::from_bytes(&public.to_bytes()[..31]), Err(IdentityError::InvalidPublicKey));
    }

    #[test]
    fn arbitrary_key_bytes_parse_to_themselves_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        match PublicKey::from_bytes(&bytes) {
            Ok(key) => prop_assert_eq!(key.to_bytes().to_vec(), bytes),
            Err(e) => prop_assert_eq!(e, IdentityError::InvalidPublicKey),
        }
    }

    #[test]
    fn secret_seeds_round_trip(secret in seed(), message in proptest::collection::vec(any::<u8>(), 0..64)) {
        let key = DeviceKeyPair::from_secret_bytes(&secret);
        let again = DeviceKeyPair::from_secret_bytes(&key.to_secret_bytes());
        prop_assert_eq!(again.public(), key.public());
        prop_assert_eq!(again.sign(&message), key.sign(&message));
    }

    #[test]
    fn certificates_round_trip_in_one_byte_form(
        identity in seed(), device in seed(), handle in handle(), device_id in any::<u64>(), at in any::<u64>()
    ) {
        let (identity, device, cert) = certificate(&identity, &device, &handle, device_id, at);
        let verified = cert.verify_for(&identity.public()).unwrap();
        prop_assert_eq!(&verified.handle, &handle);
        prop_assert_eq!(verified.device_id, device_id);
        prop_assert_eq!(verified.device_key, device.public());
        prop_assert_eq!(verified.identity_key, identity.public());
        prop_assert_eq!(verified.issued_at_ms, at);
        // Issuing what was verified gives the same bytes: one certificate, one encoding.
        let again = DeviceCertificate::issue(&identity, &verified.handle, verified.device_id, &verified.device_key, verified.issued_at_ms);
        prop_assert_eq!(again.as_bytes(), cert.as_bytes());
        // Through the bytes it travels as.
        let received = DeviceCertificate::from_bytes(cert.as_bytes().to_vec());
        prop_assert_eq!(received.verify(), Ok(verified));
    }

    #[test]
    fn certificates_refuse_other_identities(identity in seed(), other in seed(), device in seed()) {
        prop_assume!(identity != other);
        let (_, _, cert) = certificate(&identity, &device, "alice", 1, 1);
        let other = IdentityKeyPair::from_secret_bytes(&other).public();
        prop_assert_eq!(cert.verify_for(&other), Err(IdentityError::WrongIdentity { handle: "alice".into() }));
    }

    #[test]
    fn mutated_certificates_never_verify(
        identity in seed(), device in seed(), handle in handle(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        cut in any::<usize>(),
        extra in proptest::collection::vec(any::<u8>(), 1..8),
        at in any::<usize>(),
    ) {
        let (identity, _, cert) = certificate(&identity, &device, &handle, 9, 1_700_000_000_000);
        let bytes = cert.as_bytes();
        let mut flipped = bytes.to_vec();
        for (pos, mask) in &flips {
            let pos = pos % flipped.len();
            flipped[pos] ^= mask;
        }
        let mut inserted = bytes.to_vec();
        let at = at % (bytes.len() + 1);
        inserted.splice(at..at, extra);
        for mutated in [flipped, bytes[..cut % bytes.len()].to_vec(), inserted] {
            if mutated == bytes {
                continue; // flips that cancel out
            }
            prop_assert!(DeviceCertificate::from_bytes(mutated.clone()).verify().is_err(),
                "a mutation verified: {}", hex::encode(&mutated));
            prop_assert!(DeviceCertificate::from_bytes(mutated).verify_for(&identity.public()).is_err());
        }
    }

    #[test]
    fn auth_signatures_round_trip_and_bind_every_field(
        device in seed(),
        nonce in proptest::collection::vec(any::<u8>(), 0..40),
        handle in ".{0,40}",
        device_id in any::<u64>(),
        other_id in any::<u64>(),
    ) {
        let device = DeviceKeyPair::from_secret_bytes(&device);
        let signature = sign_auth(&device, &nonce, &handle, device_id);
        prop_assert_eq!(verify_auth(&device.public(), &nonce, &handle, device_id, &signature), Ok(()));
        if other_id != device_id {
            prop_assert_eq!(verify_auth(&device.public(), &nonce, &handle, other_id, &signature), Err(IdentityError::BadSignature));
        }
        let longer = format!("{handle}x");
        prop_assert_eq!(verify_auth(&device.public(), &nonce, &longer, device_id, &signature), Err(IdentityError::BadSignature));
        let mut other_nonce = nonce.clone();
        other_nonce.push(0);
        prop_assert_eq!(verify_auth(&device.public(), &other_nonce, &handle, device_id, &signature), Err(IdentityError::BadSignature));
        prop_assert_eq!(verify_auth(&device.public(), &nonce, &handle, device_id, &signature[..63]), Err(IdentityError::BadSignature));
    }

    #[test]
    fn arbitrary_signatures_never_verify(
        device in seed(),
        signature in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let device = DeviceKeyPair::from_secret_bytes(&device);
        prop_assert_eq!(verify_auth(&device.public(), b"nonce", "alice", 1, &signature), Err(IdentityError::BadSignature));
    }
}

proptest! {
    // Safety numbers hash 5,200 times per key: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn safety_number_digits_and_qr_payload_agree(
        a in seed(), b in seed(), handle_a in handle(), handle_b in handle()
    ) {
        let ka = IdentityKeyPair::from_secret_bytes(&a).public();
        let kb = IdentityKeyPair::from_secret_bytes(&b).public();
        let number = SafetyNumber::compute(&handle_a, &ka, &handle_b, &kb);
        prop_assert_eq!(&number, &SafetyNumber::compute(&handle_b, &kb, &handle_a, &ka));
        let (first, second) = qr_fingerprints(&number.qr_payload).unwrap();
        prop_assert!(first <= second);
        let groups: Vec<String> = digits_of(&first).into_iter().chain(digits_of(&second)).collect();
        prop_assert_eq!(number.digits, groups.join(" "));
    }
}
