//! The server-frame decoder, as clients run it on every binary WebSocket message
//! (`decode_server_frame`), and the parsing a client then does on what the frame carries:
//! identity keys and device certificates from the directory.
//!
//! Beyond "no panic": the decoder's promises (`tacit_fuzz::frames::check_decoder`: refusal of
//! oversized frames without allocating, the allocation bound, canonical re-encoding), and that a
//! directory answer's certificates never verify under an identity key other than their own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tacit_fuzz::frames::check_decoder;
use tacit_identity::{DeviceCertificate, IdentityError, PublicKey};
use tacit_proto::decode_server_frame;
use tacit_proto::v1::server_frame::Body;

fuzz_target!(|data: &[u8]| {
    let Some(frame) = check_decoder(data, decode_server_frame) else {
        return;
    };
    let (identity_key, certificates) = match frame.body {
        Some(Body::UserInfo(u)) => (u.identity_key, u.device_certificates),
        Some(Body::DeviceList(d)) => (Vec::new(), d.device_certificates),
        Some(Body::KeyPackagesClaimed(k)) => (k.identity_key, Vec::new()),
        _ => return,
    };
    let Ok(identity) = PublicKey::from_bytes(&identity_key) else {
        return;
    };
    assert_eq!(identity.to_bytes().as_slice(), identity_key.as_slice());
    for bytes in certificates {
        let cert = DeviceCertificate::from_bytes(bytes);
        if let Ok(verified) = cert.verify() {
            let for_directory_key = cert.verify_for(&identity);
            if verified.identity_key == identity {
                assert_eq!(for_directory_key, Ok(verified));
            } else {
                assert!(matches!(
                    for_directory_key,
                    Err(IdentityError::WrongIdentity { .. })
                ));
            }
        }
    }
});
