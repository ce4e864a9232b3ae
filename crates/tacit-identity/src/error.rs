//! The crate's one error type.

/// What went wrong with a key, certificate or signature. Messages never include secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// Bytes that should be an Ed25519 public key are not one.
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A certificate could not be decoded or its fields are out of bounds.
    #[error("malformed device certificate: {0}")]
    MalformedCertificate(String),
    /// A certificate verifies, but under a different identity key than the one expected for its
    /// handle.
    #[error("device certificate for {handle} is signed by an identity key other than the one known for {handle}")]
    WrongIdentity {
        /// The handle the certificate names.
        handle: String,
    },
    /// A certificate names a different handle or device than expected.
    #[error("device certificate names {actual}, expected {expected}")]
    WrongSubject {
        /// What the certificate names.
        actual: String,
        /// What the caller expected.
        expected: String,
    },
}
