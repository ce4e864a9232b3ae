//! Admission of a new connection: the per-address rate and the cap on unauthenticated
//! connections. A refused connection is upgraded all the same, so that the client reads why:
//! it gets one error frame in place of the challenge, then the connection is closed.

use super::*;
use crate::addrlimit::AddressRefusal;
use crate::state::UnauthenticatedSlot;

/// How long a client refused for too many unauthenticated connections is told to wait.
const UNAVAILABLE_RETRY_MS: u64 = 1_000;

/// Whether a connection from `peer` may start: Ok with its place among the unauthenticated
/// connections, or the error frame's content.
pub(crate) fn admit(
    state: &Arc<AppState>,
    peer: std::net::IpAddr,
) -> Result<UnauthenticatedSlot, Refused> {
    state
        .take_address_token(peer)
        .map_err(|r| Refused(address_failure(r, "connections")))?;
    state.open_unauthenticated().ok_or_else(|| {
        tracing::warn!(
            limit = state.limits.max_unauthenticated_connections,
            "refusing a connection: too many unauthenticated connections"
        );
        let mut f = Failure::new(
            ErrorCode::Unavailable,
            format!(
                "the server has too many connections waiting to authenticate (limit {}); retry in a moment",
                state.limits.max_unauthenticated_connections
            ),
        );
        f.retry_after_ms = UNAVAILABLE_RETRY_MS;
        Refused(f)
    })
}

/// Why a connection was not admitted (the error frame it gets).
pub(crate) struct Refused(Failure);

/// The error for an address over its rate (`what`: "connections" or "requests").
pub(super) fn address_failure(r: AddressRefusal, what: &str) -> Failure {
    let (message, retry_after_ms) = match r {
        AddressRefusal::RateLimited(ms) => (
            format!("too many {what} from your address before authenticating; retry in {ms} ms"),
            ms,
        ),
        AddressRefusal::TooManyAddresses(ms) => (
            format!("the server is busy with too many client addresses; retry in {ms} ms"),
            ms,
        ),
    };
    let mut f = Failure::new(ErrorCode::RateLimited, message);
    f.retry_after_ms = retry_after_ms;
    f
}

/// Sends the refusal in place of the challenge and closes the connection.
pub(crate) async fn refuse(mut socket: WebSocket, refused: Refused, peer: std::net::SocketAddr) {
    tracing::debug!(%peer, code = ?refused.0.code, "connection refused");
    let _ = socket.send(error_frame(0, refused.0)).await;
    let _ = socket.close().await;
}
