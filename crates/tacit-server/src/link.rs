//! Device-link slots: small in-memory mailboxes between an existing device (the initiator, who
//! opened the slot) and one new device (the joiner). The server only relays opaque payloads.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Payloads waiting per direction.
const MAX_WAITING_PAYLOADS: usize = 8;
/// Open slots per user.
const MAX_SLOTS_PER_USER: usize = 4;
/// Open slots in all.
const MAX_SLOTS: usize = 10_000;

struct Slot {
    owner: String,
    joiner: Option<u64>,
    to_initiator: VecDeque<Vec<u8>>,
    to_joiner: VecDeque<Vec<u8>>,
    expires: Instant,
}

/// Why a link request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    /// No such slot, expired, or not yours.
    Unknown,
    /// Too many slots or waiting payloads.
    Full(&'static str),
}

/// All open slots.
#[derive(Default)]
pub struct LinkSlots {
    slots: Mutex<HashMap<String, Slot>>,
}

impl LinkSlots {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, Slot>) -> Result<T, LinkError>,
    ) -> Result<T, LinkError> {
        let mut slots = self.slots.lock().map_err(|_| LinkError::Unknown)?;
        let now = Instant::now();
        slots.retain(|_, s| s.expires > now);
        f(&mut slots)
    }

    /// Opens a slot owned by `owner`.
    pub fn open(&self, slot: &str, owner: &str, ttl: Duration) -> Result<(), LinkError> {
        self.with(|slots| {
            if slots.len() >= MAX_SLOTS {
                return Err(LinkError::Full(
                    "too many device links in progress; try again later",
                ));
            }
            if slots.values().filter(|s| s.owner == owner).count() >= MAX_SLOTS_PER_USER {
                return Err(LinkError::Full(
                    "too many device links in progress for this user",
                ));
            }
            if slots.contains_key(slot) {
                return Err(LinkError::Unknown);
            }
            slots.insert(
                slot.to_owned(),
                Slot {
                    owner: owner.to_owned(),
                    joiner: None,
                    to_initiator: VecDeque::new(),
                    to_joiner: VecDeque::new(),
                    expires: Instant::now() + ttl,
                },
            );
            Ok(())
        })
    }

    /// Puts a payload for the other side. `who` is the owner's handle for the initiator, or the
    /// joiner connection's id.
    pub fn send(
        &self,
        slot: &str,
        from_initiator: bool,
        owner: Option<&str>,
        connection: u64,
        payload: Vec<u8>,
    ) -> Result<(), LinkError> {
        self.with(|slots| {
            let s = slots.get_mut(slot).ok_or(LinkError::Unknown)?;
            let queue = if from_initiator {
                if owner != Some(s.owner.as_str()) {
                    return Err(LinkError::Unknown);
                }
                &mut s.to_joiner
            } else {
                match s.joiner {
                    None => s.joiner = Some(connection),
                    Some(c) if c == connection => {}
                    Some(_) => return Err(LinkError::Unknown),
                }
                &mut s.to_initiator
            };
            if queue.len() >= MAX_WAITING_PAYLOADS {
                return Err(LinkError::Full("too many link messages waiting"));
            }
            queue.push_back(payload);
            Ok(())
        })
    }

    /// Takes the oldest payload for one side (None if nothing is waiting).
    pub fn receive(
        &self,
        slot: &str,
        for_initiator: bool,
        owner: Option<&str>,
        connection: u64,
    ) -> Result<Option<Vec<u8>>, LinkError> {
        self.with(|slots| {
            let s = slots.get_mut(slot).ok_or(LinkError::Unknown)?;
            if for_initiator {
                if owner != Some(s.owner.as_str()) {
                    return Err(LinkError::Unknown);
                }
                Ok(s.to_initiator.pop_front())
            } else {
                if s.joiner != Some(connection) {
                    return Err(LinkError::Unknown);
                }
                Ok(s.to_joiner.pop_front())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn relays_between_owner_and_one_joiner() {
        let l = LinkSlots::default();
        l.open("abc", "alice", Duration::from_secs(60)).unwrap();
        l.send("abc", true, Some("alice"), 1, b"hi".to_vec())
            .unwrap();
        l.send("abc", false, None, 9, b"yo".to_vec()).unwrap();
        assert_eq!(
            l.receive("abc", false, None, 9).unwrap(),
            Some(b"hi".to_vec())
        );
        assert_eq!(
            l.receive("abc", true, Some("alice"), 1).unwrap(),
            Some(b"yo".to_vec())
        );
        // A second joiner and a stranger are refused.
        assert_eq!(
            l.send("abc", false, None, 10, b"x".to_vec()),
            Err(LinkError::Unknown)
        );
        assert_eq!(
            l.receive("abc", true, Some("mallory"), 3),
            Err(LinkError::Unknown)
        );
        assert_eq!(l.receive("nope", false, None, 9), Err(LinkError::Unknown));
    }
}
