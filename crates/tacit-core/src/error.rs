//! The crate's one error type.

use crate::store::StoreError;

/// What went wrong in the client core, in the user's terms. Messages never contain plaintext or
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The local store failed or could not be unlocked.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This profile has no account yet.
    #[error("this profile has no account yet: run `tacit account create HANDLE --server URL` or `tacit device join CODE`")]
    NoAccount,
    /// This profile already holds an account.
    #[error("this profile already holds the account {0}; use another --profile directory")]
    AccountExists(String),
    /// A handle that is not valid.
    #[error("invalid handle {0:?}: use 1-32 characters of a-z, 0-9, '_', '-', '.'")]
    InvalidHandle(String),
    /// No conversation matches.
    #[error("no conversation named {0:?}; `tacit groups` lists them")]
    UnknownConversation(String),
    /// The conversation exists but this device is no longer a member.
    #[error("you are no longer a member of {0}")]
    NotAMember(String),
    /// The identity key the server now gives for a handle differs from the pinned one.
    #[error("the identity key of {handle} has CHANGED (pinned {pinned}, now offered {offered}); refusing to use it. Compare safety numbers with {handle} in person before trusting a new key")]
    IdentityChanged {
        /// Whose key changed.
        handle: String,
        /// Hex of the pinned key.
        pinned: String,
        /// Hex of the offered key.
        offered: String,
    },
    /// Processing needs the identity keys of these handles, which are not pinned yet. The
    /// driver looks them up, pins them with [`crate::Device::pin_identity`] and retries; nothing
    /// was changed.
    #[error("unknown identities: {0:?}")]
    UnknownIdentities(Vec<String>),
    /// A device certificate failed verification; names the device.
    #[error("refused device {device}: {reason}")]
    BadDevice {
        /// `handle/device-id` as far as it could be read.
        device: String,
        /// Why it was refused.
        reason: String,
    },
    /// An MLS operation failed.
    #[error("MLS error: {0}")]
    Mls(String),
    /// A message from the network could not be decoded.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A device-link step failed (wrong code, tampering, or protocol misuse).
    #[error("device link failed: {0}")]
    Link(String),
    /// An operation that is not possible in the current state.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for results in this crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Maps any displayable OpenMLS error into [`CoreError::Mls`].
pub(crate) fn mls<E: std::fmt::Debug>(e: E) -> CoreError {
    CoreError::Mls(format!("{e:?}"))
}
