//! The server's frame handler without a network, for the `server_handler` fuzz target (feature
//! `fuzzing`): the same code path as a live connection — decode with the pre- or
//! post-authentication frame limit, the per-address rate, validation, then the unauthenticated
//! or authenticated dispatch — on a real (in-memory SQLite) store.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::ws::Message;
use tokio::sync::{mpsc, watch};

use crate::config::Limits;
use crate::connection::Session;
use crate::notifier::{LocalNotifier, Notifier};
use crate::state::AppState;
use crate::store::{SqliteStore, Store};
use crate::ServerError;

/// Delivery steps taken after each frame (each sends what was pushed or reads one batch).
const DELIVERY_STEPS: usize = 4;

/// One connection's frame handler on a server of its own: feed it client frames, get back the
/// server frames (encoded) it sent meanwhile, answers and pushed envelopes alike.
pub struct FrameHandler {
    runtime: Option<tokio::runtime::Runtime>,
    session: Session,
    _shutdown: watch::Sender<bool>,
    _alive: mpsc::Receiver<()>,
}

impl FrameHandler {
    /// A fresh server (empty in-memory store, `limits`) with one unauthenticated connection from
    /// 127.0.0.1 whose challenge is `nonce`.
    pub fn new(limits: Limits, nonce: [u8; 32]) -> Result<Self, ServerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory()?);
        let notifier: Arc<dyn Notifier> = Arc::new(LocalNotifier::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let state = Arc::new(AppState::new(
            store,
            notifier,
            limits,
            shutdown_rx,
            alive_tx,
        ));
        let slot = state.open_unauthenticated().ok_or_else(|| {
            ServerError::Config("max_unauthenticated_connections is 0: no connection fits".into())
        })?;
        let peer = IpAddr::from([127, 0, 0, 1]);
        let session = Session::new(state, 1, peer, nonce, slot);
        Ok(FrameHandler {
            runtime: Some(runtime),
            session,
            _shutdown: shutdown_tx,
            _alive: alive_rx,
        })
    }

    /// Handles one binary WebSocket message as the live connection loop does, and returns the
    /// server frames sent while it ran.
    pub fn handle(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        let Some(runtime) = &self.runtime else {
            return sent;
        };
        let session = &mut self.session;
        runtime.block_on(async {
            session.handle(frame).await;
            // Pipelined requests (messages, acknowledgments) are answered once committed.
            session.drain().await;
            // The delivery (if the connection signed in) sends what is queued.
            for _ in 0..DELIVERY_STEPS {
                session.deliver().await;
            }
        });
        for m in self.session.take_outgoing() {
            push_binary(&mut sent, m);
        }
        sent
    }

    /// Whether the connection would now be closed (the live loop stops reading).
    pub fn closed(&self) -> bool {
        self.session.closing()
    }

    /// Whether a device signed in on this connection.
    pub fn authenticated(&self) -> bool {
        self.session.authenticated_device()
    }
}

impl Drop for FrameHandler {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn push_binary(sent: &mut Vec<Vec<u8>>, m: Message) {
    if let Message::Binary(b) = m {
        sent.push(b.to_vec());
    }
}
