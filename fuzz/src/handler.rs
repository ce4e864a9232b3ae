//! The input of the `server_handler` target: a flag byte, then client frames, each prefixed by
//! its length (2 bytes, little-endian). Bit 0 of the flag byte: sign in first with the valid
//! registration of [`registration`] (so that the frames after it reach the authenticated
//! dispatch even when mutations break the registration in the corpus).

use tacit_proto::encode;
use tacit_proto::v1::{self, client_frame::Body as Req};

use crate::seeds;

/// Most frames one input feeds the handler (a live connection would send more, but each frame
/// is handled on its own and a longer input only slows the fuzzer down).
pub const MAX_FRAMES: usize = 64;

/// The challenge nonce the handler is created with: the seed frames' nonce, so the seed
/// RegisterAccount and Authenticate frames carry valid signatures.
pub const NONCE: [u8; 32] = seeds::NONCE;

/// A decoded `server_handler` input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HandlerInput {
    /// Sign in with [`registration`] before the frames.
    pub register_first: bool,
    /// The frames, in order.
    pub frames: Vec<Vec<u8>>,
}

impl HandlerInput {
    /// Splits fuzzer bytes; a truncated last frame is kept as it is.
    pub fn from_bytes(data: &[u8]) -> HandlerInput {
        let Some((&flags, mut rest)) = data.split_first() else {
            return HandlerInput::default();
        };
        let mut frames = Vec::new();
        while rest.len() >= 2 && frames.len() < MAX_FRAMES {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let body = &rest[2..];
            let take = len.min(body.len());
            frames.push(body[..take].to_vec());
            rest = &body[take..];
        }
        HandlerInput {
            register_first: flags & 1 == 1,
            frames,
        }
    }

    /// The bytes that split into this input (frames longer than 65,535 bytes are cut).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.register_first)];
        for f in &self.frames {
            let len = f.len().min(usize::from(u16::MAX));
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&f[..len]);
        }
        out
    }
}

/// The valid RegisterAccount frame for the handler's challenge ("alice", device 1).
pub fn registration() -> Vec<u8> {
    seeds::client_frames()
        .into_iter()
        .find(|f| matches!(f.body, Some(Req::RegisterAccount(_))))
        .map(|f| encode(&f))
        .unwrap_or_default()
}

/// Seed inputs for `server_handler`, as (name, bytes).
pub fn inputs() -> Vec<(String, Vec<u8>)> {
    let frames: Vec<(String, Vec<u8>)> = seeds::client_frames()
        .into_iter()
        .map(|f| {
            let name = f.body.as_ref().map_or("empty", |b| b.kind()).to_owned();
            (name, encode(&f))
        })
        .collect();
    let mut out = Vec::new();
    for (name, bytes) in &frames {
        let one = vec![bytes.clone()];
        out.push((
            format!("unauthenticated_{name}"),
            HandlerInput {
                register_first: false,
                frames: one.clone(),
            }
            .to_bytes(),
        ));
        out.push((
            format!("authenticated_{name}"),
            HandlerInput {
                register_first: true,
                frames: one,
            }
            .to_bytes(),
        ));
    }
    // A conversation with oneself: a group, a message, its acknowledgement.
    let group = b"fuzz-group".to_vec();
    let conversation = [
        Req::CreateGroup(v1::CreateGroup {
            group_id: group.clone(),
        }),
        Req::SendMessage(v1::SendMessage {
            group_id: group.clone(),
            message: vec![0x5a; 64],
        }),
        Req::UploadKeyPackages(v1::UploadKeyPackages {
            one_time: vec![vec![1; 100], vec![2; 100]],
            last_resort: vec![3; 100],
        }),
        Req::ClaimKeyPackages(v1::ClaimKeyPackages {
            handle: "alice".into(),
            exclude_device_ids: vec![],
        }),
        Req::FetchGroupState(v1::FetchGroupState { group_id: group }),
        Req::Ack(v1::Ack { up_to_seq: 1 }),
        Req::LinkOpen(v1::LinkOpen {
            slot: "abcd2345".into(),
        }),
    ];
    out.push((
        "conversation".into(),
        HandlerInput {
            register_first: false,
            frames: std::iter::once(registration())
                .chain(conversation.into_iter().zip(1..).map(|(body, request_id)| {
                    encode(&v1::ClientFrame {
                        request_id,
                        body: Some(body),
                    })
                }))
                .collect(),
        }
        .to_bytes(),
    ));
    // Over the pre-authentication frame limit (16 KiB), then the same after signing in.
    let big = encode(&v1::ClientFrame {
        request_id: 9,
        body: Some(Req::SendMessage(v1::SendMessage {
            group_id: b"g".to_vec(),
            message: vec![0; 20 * 1024],
        })),
    });
    out.push((
        "oversized_before_and_after_auth".into(),
        HandlerInput {
            register_first: false,
            frames: vec![big.clone(), registration(), big],
        }
        .to_bytes(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_trip() {
        for (name, bytes) in inputs() {
            assert_eq!(HandlerInput::from_bytes(&bytes).to_bytes(), bytes, "{name}");
        }
    }
}
