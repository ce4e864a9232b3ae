//! What can make a benchmark run fail.

use tokio_tungstenite::tungstenite;

/// Why a benchmark could not produce figures. Errors of single requests during the measured
/// run are not failures: they are counted and reported with the figures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments ask for something impossible (e.g. zero devices).
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// The in-process Tacit server could not start.
    #[error("the Tacit server could not start: {0}")]
    Server(#[from] tacit_server::ServerError),
    /// A WebSocket connection failed (connect, read or write).
    #[error("WebSocket: {0}")]
    WebSocket(Box<tungstenite::Error>),
    /// A server frame could not be decoded.
    #[error("undecodable server frame: {0}")]
    Decode(#[from] tacit_proto::DecodeError),
    /// The server answered a set-up request with something else than success.
    #[error("set-up failed: {0}")]
    Setup(String),
    /// The server refused for now (storage unavailable, rate limited); the request may be
    /// retried.
    #[error("temporarily refused: {0}")]
    Temporary(String),
    /// The peer closed the connection while the benchmark still needed it.
    #[error("the server closed the connection")]
    Closed,
    /// A set-up step got no answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A local I/O failure (binding the baseline relay, a temporary directory).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client core (MLS, local store) failed in `--mode e2e`.
    #[error("client core: {0}")]
    Client(String),
    /// A client task panicked or was cancelled.
    #[error("a client task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<tungstenite::Error> for BenchError {
    fn from(e: tungstenite::Error) -> Self {
        BenchError::WebSocket(Box::new(e))
    }
}

/// Results of this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
