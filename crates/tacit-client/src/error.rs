//! The crate's one error type.

use tacit_proto::v1::ErrorCode;

/// What went wrong talking to the server or in the core, in terms a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The core refused or failed.
    #[error(transparent)]
    Core(#[from] tacit_core::CoreError),
    /// Could not reach the server.
    #[error("cannot reach the server at {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection dropped.
    #[error("the connection to the server was lost: {0}")]
    Disconnected(String),
    /// The server answered with an error.
    #[error("server refused: {message} ({code:?})")]
    Server {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// With EPOCH_MOVED_ON, the group's current epoch.
        current_epoch: u64,
    },
    /// The server sent something that does not fit the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server did not answer in time.
    #[error("the server did not answer within {0} seconds")]
    Timeout(u64),
    /// Local file problem (profile directory, key file).
    #[error("{0}")]
    Profile(String),
    /// Something the user asked for that cannot be done.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The server's error code, if this is a server refusal.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the server said "not now" rather than "no" (rate limited, storage unavailable, an
    /// internal failure): the request may be tried again later. For a storage failure the
    /// request may even have been applied, so what it carried must be kept, not dropped.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.server_code(),
            Some(ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal)
        )
    }
}

/// Shorthand.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
