//! What the core keeps in the local store besides OpenMLS state: account, conversations,
//! history, pins, outbox, in-flight commits. All of it is encrypted at rest by the store.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Meta keys.
pub(crate) const META_ACCOUNT: &[u8] = b"account";
/// Where schema 3 and older kept the last sequence number processed (now [`Counters`]).
///
/// [`Counters`]: crate::store::Counters
pub(crate) const META_LAST_SEQ: &[u8] = b"last_seq";
/// Where schema 3 and older kept the next outbox id (now [`Counters`]).
///
/// [`Counters`]: crate::store::Counters
pub(crate) const META_OUTBOX_NEXT: &[u8] = b"outbox_next";
/// How many redelivered envelopes were recognised and dropped (a diagnostic figure).
pub(crate) const META_REDELIVERIES: &[u8] = b"redeliveries_dropped";
/// How many of those were resent copies under a new sequence number.
pub(crate) const META_RESENT_COPIES: &[u8] = b"resent_copies_dropped";

/// The device's own account, with its secrets. Wiped from memory when dropped.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct StoredAccount {
    pub handle: String,
    pub device_id: u64,
    pub device_secret: Vec<u8>,
    pub identity_secret: Vec<u8>,
    pub certificate: Vec<u8>,
    pub server_url: String,
}

/// A conversation this device takes part in (or took part in).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Conversation {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// Display name: the group's name, or the peer's handle for a 1:1 conversation.
    pub name: String,
    /// For a 1:1 conversation, the other person's handle.
    pub direct_peer: Option<String>,
    /// False once this device was removed or left.
    pub active: bool,
    /// When this device created or joined it, in ms since the Unix epoch.
    pub created_at_ms: u64,
}

impl Conversation {
    /// The id people type: the first 8 hex digits of the group id.
    pub fn short_id(&self) -> String {
        hex::encode(&self.group_id).chars().take(8).collect()
    }
}

/// One line of a conversation's history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Random id chosen by the sender, used to drop duplicates.
    pub message_id: Vec<u8>,
    /// Who sent it (for system lines: who caused it).
    pub sender: String,
    /// The sending device.
    pub sender_device: u64,
    /// The sender's clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// What it says (text messages), or a description (system lines).
    pub text: String,
    /// Whether this device sent it.
    pub outgoing: bool,
    /// A system line (membership change) rather than a message.
    pub system: bool,
}

/// First byte of a record stored in postcard (history lines from store schema version 4 on,
/// outbox items from version 3 on). Records written before are JSON objects, whose first byte is
/// `{`.
const POSTCARD: u8 = 1;

/// A record's stored form: the format byte, then the record in postcard's compact encoding.
fn to_postcard<T: Serialize>(record: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(record, vec![POSTCARD])
}

/// Reads a record in its stored form: postcard after the format byte, or JSON as older schema
/// versions wrote it.
fn from_postcard_or_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&POSTCARD, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

impl HistoryEntry {
    /// The stored form: a format byte and the line in postcard's compact encoding.
    pub(crate) fn to_stored(&self) -> Result<Vec<u8>, postcard::Error> {
        to_postcard(self)
    }

    /// Reads a line in its stored form (postcard, or JSON as written by schema version 3 and
    /// older).
    pub(crate) fn from_stored(bytes: &[u8]) -> Result<HistoryEntry, String> {
        from_postcard_or_json(bytes)
    }
}

/// A pinned identity key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Pin {
    pub handle: String,
    pub identity_key: Vec<u8>,
    pub pinned_at_ms: u64,
}

/// An encrypted message waiting to be accepted by the server. Survives restarts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxItem {
    /// Position in the outbox; items are sent in this order.
    pub id: u64,
    /// The group it is for.
    pub group_id: Vec<u8>,
    /// The MLS message (RFC 9420 encoding).
    pub message: Vec<u8>,
}

impl OutboxItem {
    /// The stored form: a format byte and the item in postcard's compact encoding (a JSON
    /// object would spell every byte of the message as a decimal number, and no longer fit in
    /// one database page).
    pub(crate) fn to_stored(&self) -> Result<Vec<u8>, postcard::Error> {
        to_postcard(self)
    }

    /// Reads an item in its stored form (postcard, or JSON as written by schema version 2).
    pub(crate) fn from_stored(bytes: &[u8]) -> Result<OutboxItem, String> {
        from_postcard_or_json(bytes)
    }
}

/// A commit sent (or about to be sent) to the server and not yet known to be accepted or refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InFlightCommit {
    pub commit_hash: Vec<u8>,
    pub outgoing: crate::OutgoingCommit,
    /// Content to announce once the commit is merged (conversation meta after adds).
    pub announce_meta: bool,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn history_list(group_id: &[u8]) -> Vec<u8> {
    let mut list = b"history:".to_vec();
    list.extend_from_slice(group_id);
    list
}

pub(crate) fn inflight_key(group_id: &[u8]) -> Vec<u8> {
    let mut key = b"inflight:".to_vec();
    key.extend_from_slice(group_id);
    key
}

pub(crate) fn seen_key(group_id: &[u8], message_id: &[u8]) -> Vec<u8> {
    let mut key = b"seen:".to_vec();
    key.extend_from_slice(group_id);
    key.push(b':');
    key.extend_from_slice(message_id);
    key
}

/// The digests of the last message envelopes processed in a conversation (see
/// `incoming::RECENT_DIGESTS`), to recognise a resent copy.
pub(crate) fn recent_digests_key(group_id: &[u8]) -> Vec<u8> {
    let mut key = b"recent:".to_vec();
    key.extend_from_slice(group_id);
    key
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn outbox_items_round_trip_and_json_ones_are_still_read() {
        let item = OutboxItem {
            id: 7,
            group_id: vec![1; 16],
            message: vec![0xab; 374],
        };
        let stored = item.to_stored().unwrap();
        assert!(stored.len() < 400, "{}", stored.len());
        assert_eq!(OutboxItem::from_stored(&stored).unwrap(), item);
        let json = serde_json::to_vec(&item).unwrap();
        assert_eq!(OutboxItem::from_stored(&json).unwrap(), item);
        assert!(OutboxItem::from_stored(&stored[..stored.len() - 1]).is_err());
    }

    #[test]
    fn history_lines_round_trip_and_json_ones_are_still_read() {
        let entry = HistoryEntry {
            message_id: vec![7; 16],
            sender: "alice".into(),
            sender_device: 3,
            sent_at_ms: 1_700_000_000_000,
            text: "hello".into(),
            outgoing: false,
            system: false,
        };
        let stored = entry.to_stored().unwrap();
        assert_eq!(HistoryEntry::from_stored(&stored).unwrap(), entry);
        let json = serde_json::to_vec(&entry).unwrap();
        assert!(
            stored.len() < json.len() / 2,
            "{} {}",
            stored.len(),
            json.len()
        );
        assert_eq!(HistoryEntry::from_stored(&json).unwrap(), entry);
        assert!(HistoryEntry::from_stored(&stored[..stored.len() - 1]).is_err());
    }
}
