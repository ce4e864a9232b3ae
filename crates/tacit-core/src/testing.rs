//! Helpers shared by unit tests: envelopes as the server would deliver them, and the texts of
//! message events.

use tacit_proto::v1::{DeviceAddress, Envelope, EnvelopeKind};

use crate::{Device, Event, Processed};

/// An envelope of `kind` for `group_id`, with sequence number `seq`, from some other device.
pub(crate) fn envelope(seq: u64, kind: EnvelopeKind, group_id: &[u8], payload: &[u8]) -> Envelope {
    Envelope {
        seq,
        kind: kind as i32,
        group_id: group_id.to_vec(),
        sender: Some(DeviceAddress {
            handle: "peer".into(),
            device_id: 1,
        }),
        payload: payload.to_vec(),
        server_time_ms: 0,
    }
}

/// Processes an envelope and returns its events (none for a duplicate); panics on an error.
pub(crate) fn deliver(
    to: &mut Device,
    seq: u64,
    kind: EnvelopeKind,
    group_id: &[u8],
    payload: &[u8],
) -> Vec<Event> {
    match to
        .process_envelope(&envelope(seq, kind, group_id, payload))
        .unwrap_or_else(|e| panic!("processing failed: {e}"))
    {
        Processed::Events(events) => events,
        Processed::Duplicate => vec![],
    }
}

/// The texts of the message events among `events`.
pub(crate) fn texts(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}
