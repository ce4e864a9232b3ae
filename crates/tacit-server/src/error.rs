//! The crate's one error type.

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Refusing to serve plain WebSockets on a non-loopback address.
    #[error("refusing to serve without TLS on {0}: plain ws:// is allowed on loopback addresses only; pass --tls-cert and --tls-key")]
    InsecureListen(std::net::SocketAddr),
    /// The data directory or database could not be opened. (Not a `source`: the message says
    /// it all, and error reporters that print chains would repeat it.)
    #[error("storage: {0}")]
    Storage(crate::store::StoreError),
    /// TLS certificate or key problem.
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting is unusable (the message names it).
    #[error("configuration: {0}")]
    Config(String),
    /// Could not bind or serve.
    #[error("network: {0}")]
    Io(std::io::Error),
}

impl From<crate::store::StoreError> for ServerError {
    fn from(e: crate::store::StoreError) -> Self {
        ServerError::Storage(e)
    }
}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e)
    }
}
