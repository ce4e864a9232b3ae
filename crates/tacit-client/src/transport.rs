//! One WebSocket connection to a Tacit server: request/response matching by request id, pushed
//! frames on a channel, bounded frame sizes, optional TLS (rustls).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tacit_proto::v1::{client_frame, server_frame, ClientFrame, ErrorCode, ServerFrame};
use tacit_proto::{decode_server_frame, encode, limits::MAX_FRAME_BYTES};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use crate::error::{ClientError, Result};

/// How long to wait for the answer to a request.
pub const REQUEST_TIMEOUT_SECS: u64 = 30;
/// How many pushed frames may wait unprocessed before the reader pauses.
const PUSH_BUFFER_FRAMES: usize = 1024;
/// The WebSocket read buffer: a few envelopes per read (frames of any size are still read whole).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Requests waiting for their answers; None once the connection closed (so that a request made
/// after the reader stopped fails at once instead of waiting for its timeout).
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<ServerFrame>>>>>;

/// TLS settings for `wss://` URLs.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// Extra PEM root certificates to trust (e.g. a self-hosted server's own CA).
    pub extra_roots_pem: Vec<Vec<u8>>,
}

/// An open connection. Dropping it closes the socket.
pub struct Connection {
    outgoing: mpsc::Sender<Message>,
    pending: Pending,
    pushes: mpsc::Receiver<ServerFrame>,
    next_id: AtomicU64,
    /// The challenge nonce the server sent on connect.
    pub nonce: Vec<u8>,
}

fn tls_connector(options: &TlsOptions) -> Result<Connector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for pem in &options.extra_roots_pem {
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| ClientError::Profile(format!("bad CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Profile(format!("bad CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Profile(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// The URLs in a server list: one URL, or several nodes of one service separated by commas.
pub fn server_urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

impl Connection {
    /// Connects to the first node of `list` (see [`server_urls`]) that answers, trying them in
    /// turn from index `start` (the node that answered last time); returns the connection and
    /// the index of its node. Fails with the last node's error when none answers.
    pub async fn connect_any(
        list: &str,
        tls: &TlsOptions,
        start: usize,
    ) -> Result<(Connection, usize)> {
        let urls = server_urls(list);
        let mut last_error = ClientError::Connect {
            url: list.to_owned(),
            reason: "no server URL given".into(),
        };
        for i in 0..urls.len() {
            let index = (start + i) % urls.len();
            match Connection::connect(urls[index], tls).await {
                Ok(conn) => return Ok((conn, index)),
                Err(e) => {
                    tracing::debug!("{e}; trying the next server");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// Connects and waits for the server's challenge.
    pub async fn connect(url: &str, tls: &TlsOptions) -> Result<Connection> {
        let connect_err = |reason: String| ClientError::Connect {
            url: url.to_owned(),
            reason,
        };
        // tungstenite zero-fills its whole read buffer before every read; its 128 KiB default
        // made that the largest cost of receiving small frames.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connector = if url.starts_with("wss://") {
            Some(tls_connector(tls)?)
        } else {
            None
        };
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(REQUEST_TIMEOUT_SECS),
            tokio_tungstenite::connect_async_tls_with_config(url, Some(ws_config), true, connector),
        )
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
        let (mut sink, mut stream) = socket.split();

        let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (push_tx, push_rx) = mpsc::channel(PUSH_BUFFER_FRAMES);
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Binary(bytes) = message else {
                    continue;
                };
                let Ok(frame) = decode_server_frame(&bytes, MAX_FRAME_BYTES) else {
                    tracing::warn!("dropping an undecodable frame from the server");
                    continue;
                };
                let waiter = (frame.request_id != 0)
                    .then(|| {
                        reader_pending
                            .lock()
                            .ok()
                            .and_then(|mut p| p.as_mut()?.remove(&frame.request_id))
                    })
                    .flatten();
                match waiter {
                    Some(w) => {
                        let _ = w.send(frame);
                    }
                    None => {
                        if push_tx.send(frame).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping the pending senders wakes every waiting request with an error; later
            // requests see the connection closed.
            if let Ok(mut p) = reader_pending.lock() {
                *p = None;
            }
        });

        let mut conn = Connection {
            outgoing: out_tx,
            pending,
            pushes: push_rx,
            next_id: AtomicU64::new(1),
            nonce: Vec::new(),
        };
        let first = tokio::time::timeout(
            Duration::from_secs(REQUEST_TIMEOUT_SECS),
            conn.pushes.recv(),
        )
        .await
        .map_err(|_| connect_err("no challenge from the server".into()))?
        .ok_or_else(|| connect_err("closed before the challenge".into()))?;
        match first.body {
            Some(server_frame::Body::Challenge(c)) => conn.nonce = c.nonce,
            // Not admitted (too many connections from this address, or waiting to sign in):
            // the server says why in place of the challenge, then closes.
            Some(server_frame::Body::Error(e)) => {
                return Err(ClientError::Server {
                    code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                    message: e.message,
                    current_epoch: e.current_epoch,
                })
            }
            _ => return Err(ClientError::Protocol("expected a challenge first".into())),
        }
        Ok(conn)
    }

    /// Sends a request and waits for its answer. Error frames become [`ClientError::Server`].
    pub async fn request(&self, body: client_frame::Body) -> Result<server_frame::Body> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| ClientError::Disconnected("internal lock poisoned".into()))?
            .as_mut()
            .ok_or_else(|| ClientError::Disconnected("the connection closed".into()))?
            .insert(id, tx);
        let frame = ClientFrame {
            request_id: id,
            body: Some(body),
        };
        self.outgoing
            .send(Message::Binary(encode(&frame).into()))
            .await
            .map_err(|_| ClientError::Disconnected("writer closed".into()))?;
        let answer = tokio::time::timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS), rx)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT_SECS))?
            .map_err(|_| ClientError::Disconnected("closed while waiting for an answer".into()))?;
        match answer.body {
            Some(server_frame::Body::Error(e)) => Err(ClientError::Server {
                code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                message: e.message,
                current_epoch: e.current_epoch,
            }),
            Some(body) => Ok(body),
            None => Err(ClientError::Protocol("empty answer".into())),
        }
    }

    /// Sends a frame that expects no answer (request id 0).
    pub async fn send_only(&self, body: client_frame::Body) -> Result<()> {
        let frame = ClientFrame {
            request_id: 0,
            body: Some(body),
        };
        self.outgoing
            .send(Message::Binary(encode(&frame).into()))
            .await
            .map_err(|_| ClientError::Disconnected("writer closed".into()))
    }

    /// Sends raw bytes as one binary frame (for tests of the server's input handling).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<()> {
        self.outgoing
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|_| ClientError::Disconnected("writer closed".into()))
    }

    /// The next frame the server pushed (envelopes, markers), or None once the connection closed.
    pub async fn next_push(&mut self) -> Option<ServerFrame> {
        self.pushes.recv().await
    }

    /// A pushed frame if one is already waiting.
    pub fn try_next_push(&mut self) -> Option<ServerFrame> {
        self.pushes.try_recv().ok()
    }
}
