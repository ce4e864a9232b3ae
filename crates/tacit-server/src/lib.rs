//! The Tacit relay server: directory, per-device delivery queues, group ordering and device
//! authentication — and nothing that could read a conversation.
//!
//! It stores identity and device public keys, device certificates, KeyPackages, each group's id,
//! epoch and member devices, and opaque MLS ciphertexts queued per device. A message is
//! acknowledged to its sender only after it is committed for every recipient device; connected
//! devices get it pushed at once, others drain their queue in order when they reconnect. Commits
//! are ordered per group: only one commit per epoch is accepted. See `docs/protocol.md`.
#![forbid(unsafe_code)]

pub mod addrlimit;
mod config;
mod connection;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod link;
pub mod notifier;
pub mod ratelimit;
mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use tokio::sync::watch;

pub use config::{default_node_id, Database, Limits, ServerConfig, TlsConfig};
pub use error::ServerError;
pub use notifier::NatsConfig;

use notifier::Notifier;
use state::AppState;
use store::{PgStore, SqliteStore, Store};

/// How often expired envelopes are purged.
const PURGE_INTERVAL_SECS: u64 = 300;

/// A server that is listening.
pub struct RunningServer {
    addr: SocketAddr,
    tls: bool,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    purge: tokio::task::JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    grace: Duration,
    store: Arc<dyn Store>,
    alive: tokio::sync::mpsc::Receiver<()>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("{}://{}/v1", if self.tls { "wss" } else { "ws" }, self.addr)
    }

    /// Stops accepting connections, closes the open ones, lets in-flight requests finish (within
    /// `Limits::shutdown_grace_secs`) and closes the database. A request still running after the
    /// grace period fails with UNAVAILABLE; nothing it did is half-written, as each store
    /// operation is one transaction.
    pub async fn shutdown(mut self) {
        tracing::info!(addr = %self.addr, "shutting down");
        let _ = self.shutdown.send(true);
        self.handle.graceful_shutdown(Some(self.grace));
        self.purge.abort();
        let _ = self.purge.await;
        let _ = tokio::time::timeout(self.grace, &mut self.task).await;
        // Every connection answers its in-flight request, then closes on the shutdown signal;
        // the channel closes once the last one (and the router) has let go of the shared state.
        if tokio::time::timeout(self.grace, self.alive.recv())
            .await
            .is_err()
        {
            tracing::warn!("connections still busy after the grace period; closing anyway");
            self.task.abort();
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => tracing::info!("server stopped; database closed"),
            Ok(Err(e)) => tracing::error!("closing the database failed: {e}"),
            Err(e) => tracing::error!("closing the database failed: {e}"),
        }
    }
}

impl RunningServer {
    /// Stops at once, as a crash would, for tests and failure drills: the listener and every
    /// connection are dropped without a closing handshake and in-flight requests are abandoned.
    /// Nothing is half-written (each store operation is one transaction); what was acknowledged
    /// is in the database for the next node or start.
    pub async fn abort(self) {
        tracing::warn!(addr = %self.addr, "aborting");
        let _ = self.shutdown.send(true);
        self.handle.shutdown();
        self.purge.abort();
        self.task.abort();
        let _ = self.task.await;
        close_store(self.store).await;
    }
}

/// The server's WebSocket read buffer. tungstenite zero-fills it before every read, and it is
/// resident for every connection, even idle ones: 2 KiB holds a typical frame in one read and
/// keeps an idle connection small (8 KiB cost ~5 KiB more per connection; see BENCHMARKS.md,
/// `tacit bench connections`). Frames of any size are still read whole.
pub const WS_READ_BUFFER_BYTES: usize = 2 * 1024;
/// Outgoing WebSocket frames are buffered up to this many bytes before a write to the socket is
/// forced (the connection also writes whenever it has nothing more to send at once).
pub const WS_WRITE_BUFFER_BYTES: usize = 8 * 1024;

async fn ws_handler(
    ws: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> impl IntoResponse {
    // Frames up to twice the limit reach the handler, which answers FRAME_TOO_LARGE and keeps
    // the connection; larger ones are cut off by the WebSocket layer.
    // Admission (per-address rate, cap on unauthenticated connections) is decided before the
    // upgrade; a refused client still gets the upgrade and one error frame saying why.
    let admitted = connection::admit(&state, peer.ip());
    let ws_limit = state.limits.max_frame_bytes.saturating_mul(2);
    ws.max_message_size(ws_limit)
        .max_frame_size(ws_limit)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .max_write_buffer_size(ws_limit.saturating_mul(2))
        .on_upgrade(move |socket| async move {
            match admitted {
                Ok(slot) => connection::serve(socket, state, peer, slot).await,
                Err(refused) => connection::refuse(socket, refused, peer).await,
            }
        })
}

/// Opens the configured store off the async runtime (both drivers block).
async fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, ServerError> {
    let dir = config.data_dir.clone();
    let database = config.database.clone();
    let opened =
        tokio::task::spawn_blocking(move || -> Result<Arc<dyn Store>, store::StoreError> {
            Ok(match database {
                config::Database::Sqlite => Arc::new(SqliteStore::open(&dir)?),
                config::Database::SqliteNotDurable => {
                    Arc::new(SqliteStore::open_with(&dir, false)?)
                }
                config::Database::Postgres { url, options } => {
                    Arc::new(PgStore::open(&url, &options)?)
                }
            })
        })
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
    Ok(opened?)
}

/// Closes a store off the async runtime.
async fn close_store(store: Arc<dyn Store>) {
    let _ = tokio::task::spawn_blocking(move || store.close()).await;
}

/// A listener answering to `handle` whose connections must complete their first HTTP request
/// (the WebSocket upgrade), and the headers of any later one, within `limit` (slow-loris).
fn bounded<Acc>(
    server: axum_server::Server<SocketAddr, Acc>,
    handle: &axum_server::Handle<SocketAddr>,
    limit: Duration,
) -> axum_server::Server<SocketAddr, Acc> {
    let mut server = server.handle(handle.clone()).first_request_timeout(limit);
    server
        .http_builder()
        .http1()
        .header_read_timeout(Some(limit));
    server
}

/// Starts the server and returns once it is listening.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    if config.tls.is_none()
        && !config.listen.ip().is_loopback()
        && !config.allow_insecure_non_loopback
    {
        return Err(ServerError::InsecureListen(config.listen));
    }
    let store = open_store(&config).await?;
    let notifier: Arc<dyn Notifier> = match &config.nats {
        None => Arc::new(notifier::LocalNotifier::default()),
        Some(nats) => match notifier::NatsNotifier::start(nats, &config.node_id).await {
            Ok(n) => Arc::new(n),
            Err(e) => {
                close_store(store).await;
                return Err(ServerError::Config(e));
            }
        },
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = tokio::sync::mpsc::channel(1);
    let state = Arc::new(AppState::new(
        store.clone(),
        notifier,
        config.limits.clone(),
        shutdown_rx,
        alive_tx,
    ));
    let app = Router::new()
        .route("/v1", get(ws_handler))
        .with_state(state)
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::<SocketAddr>::new();
    // TCP_NODELAY on every connection: envelopes are pushed unasked, and with Nagle's algorithm
    // a small frame waited for the client's delayed acknowledgment of the previous one (up to
    // 40 ms on Linux) before it left.
    // Slow-loris: the first HTTP request (the upgrade) must be complete within this after the
    // connection is accepted, and so must the headers of any later request on it.
    let http_limit = Duration::from_secs(config.limits.max_http_request_secs.max(1));
    let task = match &config.tls {
        None => {
            tracing::warn!(listen = %config.listen, "serving plain ws:// without TLS: traffic to this address is not encrypted in transit; use --tls-cert/--tls-key for anything but local testing");
            let server = axum_server::bind(config.listen).acceptor(NoDelayAcceptor::new());
            let server = bounded(server, &handle, http_limit);
            tokio::spawn(server.serve(app))
        }
        Some(tls) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rustls_config =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_path, &tls.key_path)
                    .await
                    .map_err(|e| {
                        ServerError::Tls(format!(
                            "cannot load {} / {}: {e}",
                            tls.cert_path.display(),
                            tls.key_path.display()
                        ))
                    })?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls_config)
                .acceptor(NoDelayAcceptor::new());
            let server = axum_server::bind(config.listen).acceptor(acceptor);
            let server = bounded(server, &handle, http_limit);
            tokio::spawn(server.serve(app))
        }
    };
    let Some(addr) = handle.listening().await else {
        close_store(store).await;
        let err = match task.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => std::io::Error::other("server stopped before listening"),
            Err(e) => std::io::Error::other(e),
        };
        return Err(ServerError::Io(err));
    };
    let purge_store = store.clone();
    let purge = tokio::spawn(async move {
        let store = purge_store;
        let mut tick = tokio::time::interval(Duration::from_secs(PURGE_INTERVAL_SECS));
        loop {
            tick.tick().await;
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.purge_expired(store::now_ms())).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(devices = n, "purged expired envelopes"),
                Ok(Err(e)) => tracing::warn!("purge failed: {e}"),
                _ => {}
            }
        }
    });
    tracing::info!(
        %addr,
        node = %config.node_id,
        tls = config.tls.is_some(),
        database = match &config.database {
            config::Database::Sqlite => "sqlite",
            config::Database::SqliteNotDurable => "sqlite (not durable: benchmarks only)",
            config::Database::Postgres { .. } => "postgres",
        },
        nats = config.nats.is_some(),
        "listening"
    );
    Ok(RunningServer {
        addr,
        tls: config.tls.is_some(),
        handle,
        task,
        purge,
        shutdown: shutdown_tx,
        grace: Duration::from_secs(config.limits.shutdown_grace_secs),
        store,
        alive: alive_rx,
    })
}

/// Starts the server and runs it until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run_until_signal(config: ServerConfig) -> Result<(), ServerError> {
    let server = start(config).await?;
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; tracing::info!("SIGINT: shutting down") }
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        tracing::info!("Ctrl-C: shutting down");
    }
    server.shutdown().await;
    Ok(())
}
