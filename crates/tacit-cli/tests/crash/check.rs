//! What a device shows, and the check that it shows every message exactly once and in order.

use std::collections::{BTreeMap, HashSet};

use tacit_core::{Event, HistoryEntry};

/// A sending device: handle and device id.
pub type DeviceKey = (String, u64);

/// One line of a conversation's history as the user is shown it.
#[derive(Clone, Debug)]
pub struct Line {
    /// Who sent it (for system lines: who caused it).
    pub sender: String,
    /// The sending device (0 for system lines).
    pub device: u64,
    /// The text.
    pub text: String,
    /// Sent by the device whose history this is.
    pub outgoing: bool,
    /// A system line (membership change, refusal) rather than a message.
    pub system: bool,
}

impl From<&HistoryEntry> for Line {
    fn from(e: &HistoryEntry) -> Line {
        Line {
            sender: e.sender.clone(),
            device: e.sender_device,
            text: e.text.clone(),
            outgoing: e.outgoing,
            system: e.system,
        }
    }
}

impl Line {
    /// A line of `tacit history --json`.
    pub fn from_json(v: &serde_json::Value) -> Line {
        Line {
            sender: v["sender"].as_str().unwrap().to_owned(),
            device: v["sender_device"].as_u64().unwrap(),
            text: v["text"].as_str().unwrap().to_owned(),
            outgoing: v["outgoing"].as_bool().unwrap(),
            system: v["system"].as_bool().unwrap(),
        }
    }
}

/// The texts a device itself sent in a conversation, in order (its outgoing history lines:
/// written in the same transaction that put the message into the outbox).
pub fn outgoing(history: &[Line]) -> Vec<String> {
    history
        .iter()
        .filter(|l| l.outgoing && !l.system)
        .map(|l| l.text.clone())
        .collect()
}

/// The incoming message texts from `from` among `lines`, in order.
fn incoming_from<'l>(lines: &'l [Line], from: &DeviceKey) -> Vec<&'l str> {
    lines
        .iter()
        .filter(|l| !l.system && !l.outgoing && l.sender == from.0 && l.device == from.1)
        .map(|l| l.text.as_str())
        .collect()
}

/// Checks `who`'s history of `conversation`: no refused message, and from every other device
/// exactly the texts it sent (`sent`), each once, in the order it sent them — among them every
/// one the server acknowledged (`acked`). Returns how many incoming messages it checked.
pub fn check_history(
    who: &str,
    conversation: &str,
    history: &[Line],
    sent: &BTreeMap<DeviceKey, Vec<String>>,
    acked: &HashSet<String>,
) -> usize {
    for l in history.iter().filter(|l| l.system) {
        assert!(
            !l.text.contains("refused"),
            "{who} shows a refusal in {conversation}: {:?}",
            l.text
        );
    }
    for l in history.iter().filter(|l| !l.system && !l.outgoing) {
        assert!(
            sent.contains_key(&(l.sender.clone(), l.device)),
            "{who} shows a message in {conversation} from a device that is not a member: {l:?}"
        );
    }
    let mut checked = 0;
    for (from, texts) in sent {
        let got = incoming_from(history, from);
        let mut seen = HashSet::new();
        for t in &got {
            assert!(
                seen.insert(*t),
                "{who} shows {t:?} from {} twice in {conversation}",
                from.0
            );
        }
        for t in texts.iter().filter(|t| acked.contains(*t)) {
            assert!(
                seen.contains(t.as_str()),
                "{who} never got {t:?}, which the server acknowledged to {}, in {conversation}",
                from.0
            );
        }
        assert_eq!(
            got,
            texts.iter().map(String::as_str).collect::<Vec<_>>(),
            "{who}'s messages from {}/{:016x} in {conversation}: not exactly what was sent, in order",
            from.0,
            from.1
        );
        checked += got.len();
    }
    checked
}

/// Checks that the message events a device was shown for a conversation (sync output) are its
/// history's incoming messages, in the same order: nothing shown twice, nothing left out.
pub fn check_events(
    who: &str,
    conversation: &str,
    short_id: &str,
    events: &[Event],
    history: &[Line],
) {
    let shown: Vec<(&str, u64, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                conversation,
                sender,
                sender_device,
                text,
                ..
            } if conversation == short_id => Some((sender.as_str(), *sender_device, text.as_str())),
            _ => None,
        })
        .collect();
    let kept: Vec<(&str, u64, &str)> = history
        .iter()
        .filter(|l| !l.system && !l.outgoing)
        .map(|l| (l.sender.as_str(), l.device, l.text.as_str()))
        .collect();
    assert_eq!(
        shown, kept,
        "{who}: the messages shown while syncing {conversation} differ from its history"
    );
}

/// Fails the test on any refusal event.
pub fn no_refusals(who: &str, events: &[Event]) {
    for e in events {
        assert!(
            !matches!(e, Event::Refused { .. }),
            "{who} was shown a refusal: {e:?}"
        );
    }
}
