//! The authentication signature input and check: `auth_transcript`, `verify_auth`, and the
//! parsing of public keys, as the server runs them on every `Authenticate`.
//!
//! Beyond "no panic":
//! - the transcript is injective: two (nonce, handle, device id) triples give the same bytes
//!   only if they are the same triple (so a signature for one never serves for another);
//! - under a device key whose secret only the target holds, a signature verifies exactly when it
//!   is the signature the device makes (deterministic Ed25519): no other bytes are accepted;
//! - bytes accepted as a public key re-serialise to themselves, and checking a signature under
//!   an arbitrary key never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tacit_fuzz::seeds::{auth_device, AuthInput};
use tacit_identity::{sign_auth, verify_auth, DeviceKeyPair, PublicKey};

fn device() -> &'static DeviceKeyPair {
    static DEVICE: OnceLock<DeviceKeyPair> = OnceLock::new();
    DEVICE.get_or_init(auth_device)
}

fuzz_target!(|data: &[u8]| {
    let input = AuthInput::from_bytes(data);
    let same_triple = (&input.nonce, &input.handle, input.device_id)
        == (
            &input.other_nonce,
            &input.other_handle,
            input.other_device_id,
        );
    assert_eq!(input.transcript() == input.other_transcript(), same_triple);

    let device = device();
    let genuine = sign_auth(device, &input.nonce, &input.handle, input.device_id);
    let accepted = verify_auth(
        &device.public(),
        &input.nonce,
        &input.handle,
        input.device_id,
        &input.signature,
    )
    .is_ok();
    assert_eq!(accepted, input.signature == genuine);
    assert!(verify_auth(
        &device.public(),
        &input.nonce,
        &input.handle,
        input.device_id,
        &genuine
    )
    .is_ok());
    if !same_triple {
        assert!(verify_auth(
            &device.public(),
            &input.other_nonce,
            &input.other_handle,
            input.other_device_id,
            &genuine
        )
        .is_err());
    }

    // Any 32 bytes offered as a key: the nonce field doubles as one.
    if let Ok(key) = PublicKey::from_bytes(&input.nonce) {
        assert_eq!(key.to_bytes().as_slice(), input.nonce.as_slice());
        let _ = verify_auth(&key, &input.other_nonce, &input.handle, 0, &input.signature);
    }
});
