//! The two dialects the load speaks: Tacit's protobuf frames and the baseline relay's bare
//! frames, behind one small interface so that both servers get the very same client loops.

use tacit_proto::decode_server_frame;
use tacit_proto::v1::{self, client_frame::Body as Req, server_frame::Body as Resp, EnvelopeKind};
use tokio_tungstenite::tungstenite::Message;

use super::baseline::ID_BYTES;
use super::client::{frame, MAX_FRAME_BYTES};
use crate::error::Result;

/// Which server a connection talks to.
#[derive(Clone)]
pub(crate) enum Wire {
    /// Tacit: SendMessage requests into this group; pushed Envelopes are acknowledged by seq.
    Tacit {
        /// The pair's 1:1 group.
        group: Vec<u8>,
    },
    /// The baseline relay: `[id][payload]` frames, `[id]` acks, nothing to acknowledge.
    Baseline,
}

/// How a request ended.
pub(crate) enum Outcome {
    /// A SendMessage was accepted (stored durably, for Tacit).
    Accepted,
    /// Another request (an Ack) succeeded.
    Done,
    /// The request was refused or answered unexpectedly; the text says how.
    Failed(String),
}

/// One decoded frame from the server.
pub(crate) enum Incoming {
    /// The answer to request `id`.
    Answer {
        /// The request id.
        id: u64,
        /// How it ended.
        outcome: Outcome,
    },
    /// Something delivered to this device: `seq` to acknowledge (0 for the baseline) and the
    /// payload if it is a bench message (not a control envelope such as a Welcome).
    Delivery {
        /// Queue sequence number.
        seq: u64,
        /// The message bytes as the sender built them.
        message: Option<Vec<u8>>,
    },
    /// Nothing the load cares about (e.g. QueueDrained).
    Ignored,
}

fn describe_error(e: &v1::Error) -> String {
    let code =
        v1::ErrorCode::try_from(e.code).map_or_else(|_| e.code.to_string(), |c| format!("{c:?}"));
    format!("{code}: {}", e.message)
}

impl Wire {
    /// The frame that sends `payload` as request `id`.
    pub(crate) fn send_frame(&self, id: u64, payload: &[u8]) -> Message {
        match self {
            Wire::Tacit { group } => frame(
                id,
                Req::SendMessage(v1::SendMessage {
                    group_id: group.clone(),
                    message: payload.to_vec(),
                }),
            ),
            Wire::Baseline => {
                let mut bytes = Vec::with_capacity(ID_BYTES + payload.len());
                bytes.extend_from_slice(&id.to_le_bytes());
                bytes.extend_from_slice(payload);
                Message::Binary(bytes.into())
            }
        }
    }

    /// Whether deliveries must be acknowledged (Tacit keeps them queued until they are).
    pub(crate) fn acknowledges(&self) -> bool {
        matches!(self, Wire::Tacit { .. })
    }

    /// The request acknowledging every delivery up to `seq` (Tacit only).
    pub(crate) fn ack_frame(&self, id: u64, seq: u64) -> Option<Message> {
        match self {
            Wire::Tacit { .. } => Some(frame(id, Req::Ack(v1::Ack { up_to_seq: seq }))),
            Wire::Baseline => None,
        }
    }

    /// Decodes one binary frame; `receiving` says whether this is a receiver's connection (the
    /// baseline's frames do not say it themselves).
    pub(crate) fn decode(&self, bytes: &[u8], receiving: bool) -> Result<Incoming> {
        match self {
            Wire::Tacit { .. } => {
                let f = decode_server_frame(bytes, MAX_FRAME_BYTES)?;
                let id = f.request_id;
                let outcome = match f.body {
                    Some(Resp::Envelope(e)) => {
                        let message = (e.kind == EnvelopeKind::Message as i32).then_some(e.payload);
                        return Ok(Incoming::Delivery {
                            seq: e.seq,
                            message,
                        });
                    }
                    Some(Resp::QueueDrained(_)) | None => return Ok(Incoming::Ignored),
                    Some(Resp::MessageAccepted(_)) => Outcome::Accepted,
                    Some(Resp::Done(_)) => Outcome::Done,
                    Some(Resp::Error(e)) => Outcome::Failed(describe_error(&e)),
                    Some(other) => Outcome::Failed(format!("unexpected answer {other:?}")),
                };
                Ok(Incoming::Answer { id, outcome })
            }
            Wire::Baseline if receiving => Ok(Incoming::Delivery {
                seq: 0,
                message: bytes.get(ID_BYTES..).map(<[u8]>::to_vec),
            }),
            Wire::Baseline => {
                let Some(id) = bytes.first_chunk::<ID_BYTES>() else {
                    return Ok(Incoming::Ignored);
                };
                Ok(Incoming::Answer {
                    id: u64::from_le_bytes(*id),
                    outcome: Outcome::Accepted,
                })
            }
        }
    }
}
