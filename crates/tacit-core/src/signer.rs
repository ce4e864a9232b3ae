//! The device key as an OpenMLS signer.

use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use tacit_identity::DeviceKeyPair;

/// Signs MLS structures with the device's Ed25519 key (pure Ed25519, as RFC 9420 requires).
pub(crate) struct DeviceSigner<'a>(pub(crate) &'a DeviceKeyPair);

impl Signer for DeviceSigner<'_> {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}
