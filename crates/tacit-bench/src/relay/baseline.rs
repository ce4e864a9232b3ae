//! The baseline: a minimal relay written for the benchmark only, to put Tacit's figures next to
//! what plain forwarding over the same WebSocket library achieves on the same machine.
//!
//! No storage, no authentication, no protobuf. A client connects to `/recv/<pair>` (the relay
//! answers one text frame, `ready`, once it can forward to it) or to `/send/<pair>`. Every binary
//! frame from a sender, which starts with an 8-byte little-endian request id, is forwarded as it
//! is to the receiver of its pair, and the sender gets an immediate 8-byte ack frame carrying the
//! same id. Writes are batched per wake-up (feed, then one flush), as any sensible relay would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Conn, SETUP_TIMEOUT};
use crate::error::{BenchError, Result};

/// Frames waiting for a slow receiver before its sender is held back.
const FORWARD_QUEUE_FRAMES: usize = 4096;
/// Bytes of the request id that starts every sender frame and makes up every ack.
pub(crate) const ID_BYTES: usize = 8;
/// The text frame a receiver gets once it is registered.
const READY: &str = "ready";

type Slots = Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>;

/// A running baseline relay; dropping it (or [`BaselineRelay::stop`]) closes every connection.
pub(crate) struct BaselineRelay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl BaselineRelay {
    /// Listens on 127.0.0.1 on a free port.
    pub(crate) async fn start() -> Result<BaselineRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let slots = Slots::default();
        let task = tokio::spawn(async move {
            // Owned here, so aborting the accept loop aborts every connection too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            // As a Tacit server does: frames go out as they are written.
                            let _ = stream.set_nodelay(true);
                            connections.spawn(serve(stream, slots.clone()));
                        }
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(BaselineRelay { addr, task })
    }

    /// The base URL clients append `/recv/<pair>` or `/send/<pair>` to.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Stops accepting and drops every connection.
    pub(crate) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for BaselineRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection, until either side closes it or the relay stops.
async fn serve(stream: TcpStream, slots: Slots) {
    let mut path = String::new();
    // The same WebSocket buffers as a Tacit server's, so that the comparison is of the work
    // done per frame, not of buffer sizes.
    let config = WebSocketConfig::default()
        .read_buffer_size(tacit_server::WS_READ_BUFFER_BYTES)
        .write_buffer_size(tacit_server::WS_WRITE_BUFFER_BYTES);
    // The callback's signature (a large `ErrorResponse`) is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    let accepted =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await;
    let Ok(ws) = accepted else { return };
    let (role, pair) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    let Ok(pair) = pair.parse::<u64>() else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    match role {
        "recv" => {
            let (tx, mut rx) = mpsc::channel(FORWARD_QUEUE_FRAMES);
            if let Ok(mut map) = slots.lock() {
                map.insert(pair, tx);
            }
            if sink.send(Message::text(READY)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    frame = rx.recv() => {
                        let Some(frame) = frame else { break };
                        if sink.feed(frame).await.is_err() {
                            break;
                        }
                        while let Ok(more) = rx.try_recv() {
                            if sink.feed(more).await.is_err() {
                                break;
                            }
                        }
                        if sink.flush().await.is_err() {
                            break;
                        }
                    }
                    incoming = stream.next() => match incoming {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            if let Ok(mut map) = slots.lock() {
                map.remove(&pair);
            }
        }
        "send" => {
            let Some(receiver) = slots.lock().ok().and_then(|m| m.get(&pair).cloned()) else {
                return;
            };
            while let Some(Ok(first)) = stream.next().await {
                let mut next = Some(first);
                // Take every frame already here, then flush the acks once.
                while let Some(message) = next.take() {
                    if let Message::Binary(bytes) = message {
                        if bytes.len() >= ID_BYTES {
                            let ack = Message::Binary(bytes.slice(..ID_BYTES));
                            if receiver.send(Message::Binary(bytes)).await.is_err()
                                || sink.feed(ack).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    next = stream.next().now_or_never().flatten().and_then(|m| m.ok());
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Connects the receiver of pair `i` (waiting for `ready`), then its sender.
pub(crate) async fn setup_baseline_pair(i: usize, base_url: String) -> Result<(Conn, Conn)> {
    let mut receiver = Conn::connect(&format!("{base_url}/recv/{i}")).await?;
    match tokio::time::timeout(SETUP_TIMEOUT, receiver.ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == READY => {}
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(_) => {
            return Err(BenchError::Setup(
                "the baseline relay did not register the receiver".into(),
            ))
        }
        Err(_) => return Err(BenchError::Timeout("waiting for the baseline relay")),
    }
    let sender = Conn::connect(&format!("{base_url}/send/{i}")).await?;
    Ok((sender, receiver))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::relay::wire::{Incoming, Outcome, Wire};

    #[tokio::test]
    async fn the_baseline_forwards_to_the_pair_receiver_and_acks_the_sender() {
        let relay = BaselineRelay::start().await.unwrap();
        let (mut sender, mut receiver) = setup_baseline_pair(7, relay.url()).await.unwrap();
        let wire = Wire::Baseline;
        sender
            .ws
            .send(wire.send_frame(42, b"hello through the baseline"))
            .await
            .unwrap();
        let limit = Duration::from_secs(5);
        let ack = sender.poll(limit).await.unwrap().expect("an ack");
        match wire.decode(&ack, false).unwrap() {
            Incoming::Answer {
                id: 42,
                outcome: Outcome::Accepted,
            } => {}
            _ => panic!("expected the ack of request 42"),
        }
        let delivered = receiver.poll(limit).await.unwrap().expect("a delivery");
        match wire.decode(&delivered, true).unwrap() {
            Incoming::Delivery {
                message: Some(m), ..
            } => assert_eq!(m, b"hello through the baseline"),
            _ => panic!("expected the forwarded message"),
        }
        relay.stop().await;
    }
}
