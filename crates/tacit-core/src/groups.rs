//! Loaded MLS groups kept in memory between operations.
//!
//! Loading a group means reading, decrypting and decoding its whole state (the ratchet tree
//! and the secrets of several epochs), which grows with the group. So a [`Device`] keeps the
//! groups it has used in a [`GroupCache`]; the store stays the durable copy, because OpenMLS
//! writes every change through the storage provider inside the operation's transaction.
//!
//! The cache never diverges from the store: an operation takes the groups it works on out of
//! the cache ([`Groups`]), and they go back only once its transaction has committed. When the
//! transaction rolls back (an error, a dry run, a panic) they are dropped, and the next
//! operation loads them again from the store. When another connection changed the store file
//! (another process on the same profile), the whole cache is dropped.
//!
//! [`Device`]: crate::Device

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use openmls::prelude::{GroupId, MlsGroup};

use crate::error::{mls, CoreError, Result};
use crate::store::StoreTx;

/// A group in the cache, with when it was last used.
struct Cached {
    group: MlsGroup,
    last_used: u64,
}

/// The groups a device has loaded, least recently used dropped first beyond its capacity.
pub(crate) struct GroupCache {
    groups: HashMap<Vec<u8>, Cached>,
    /// The store generation the cached groups belong to.
    generation: u64,
    clock: u64,
    capacity: usize,
}

impl GroupCache {
    /// An empty cache holding at most `capacity` groups (0: keep none).
    pub(crate) fn new(capacity: usize) -> GroupCache {
        GroupCache {
            groups: HashMap::new(),
            generation: 0,
            clock: 0,
            capacity,
        }
    }

    /// Starts an operation's use of the cache in a transaction that found the store at
    /// `generation`: everything cached is dropped if another connection changed the store.
    pub(crate) fn lend(&mut self, generation: u64) -> Groups<'_> {
        if generation != self.generation {
            self.groups.clear();
            self.generation = generation;
        }
        Groups {
            cache: self,
            taken: HashMap::new(),
        }
    }

    /// Takes back the groups of an operation whose transaction committed.
    pub(crate) fn give_back(&mut self, taken: Taken) {
        for (group_id, group) in taken {
            let Some(group) = group else {
                continue; // deleted
            };
            self.clock += 1;
            let last_used = self.clock;
            self.groups.insert(group_id, Cached { group, last_used });
        }
        while self.groups.len() > self.capacity {
            let oldest = self
                .groups
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.groups.remove(&id),
                None => break,
            };
        }
    }

    /// How many groups are cached (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }
}

/// Groups an operation took: group id -> the group (None: deleted by the operation).
pub(crate) type Taken = HashMap<Vec<u8>, Option<MlsGroup>>;

/// The groups one operation works on, taken out of the cache (or loaded from the store) on
/// first use.
pub(crate) struct Groups<'c> {
    cache: &'c mut GroupCache,
    taken: Taken,
}

impl Groups<'_> {
    /// The group `group_id`, from the cache or loaded from the store in `tx`.
    pub(crate) fn get(&mut self, tx: &StoreTx<'_>, group_id: &[u8]) -> Result<&mut MlsGroup> {
        let unknown = || CoreError::UnknownConversation(hex::encode(group_id));
        let slot = match self.taken.entry(group_id.to_vec()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let group = match self.cache.groups.remove(group_id) {
                    Some(cached) => cached.group,
                    None => MlsGroup::load(&tx.mls(), &GroupId::from_slice(group_id))
                        .map_err(mls)?
                        .ok_or_else(unknown)?,
                };
                e.insert(Some(group))
            }
        };
        slot.as_mut().ok_or_else(unknown)
    }

    /// A group the operation created or joined.
    pub(crate) fn insert(&mut self, group: MlsGroup) {
        self.cache.groups.remove(group.group_id().as_slice());
        self.taken
            .insert(group.group_id().as_slice().to_vec(), Some(group));
    }

    /// A group the operation deleted from the store.
    pub(crate) fn forget(&mut self, group_id: &[u8]) {
        self.cache.groups.remove(group_id);
        self.taken.insert(group_id.to_vec(), None);
    }

    /// The groups taken, to hand back with [`GroupCache::give_back`] once committed.
    pub(crate) fn into_taken(self) -> Taken {
        self.taken
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use tacit_proto::v1::EnvelopeKind;

    use crate::store::{LocalStore, StoreKey};
    use crate::{ClaimedUser, CoreConfig, Device, Event};

    fn account(store: LocalStore, config: CoreConfig, handle: &str) -> Device {
        let mut d = Device::open(store, config).unwrap();
        d.create_account(handle, "ws://127.0.0.1:1/v1").unwrap();
        d
    }

    fn in_memory(handle: &str) -> Device {
        let store = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        account(store, CoreConfig::default(), handle)
    }

    /// Hands envelopes to one device with increasing sequence numbers.
    struct Inbox(u64);

    impl Inbox {
        fn deliver(
            &mut self,
            to: &mut Device,
            kind: EnvelopeKind,
            gid: &[u8],
            payload: &[u8],
        ) -> Vec<Event> {
            self.0 += 1;
            crate::testing::deliver(to, self.0, kind, gid, payload)
        }
    }

    fn text(events: &[Event]) -> Option<&str> {
        crate::testing::texts(events).first().copied()
    }

    /// alice creates a conversation and adds bob; bob joins. Returns the group id.
    fn conversation(alice: &mut Device, bob: &mut Device, inbox: &mut Inbox) -> Vec<u8> {
        let reg = bob.registration().unwrap();
        let kp = bob.new_key_packages(1).unwrap().remove(0);
        let gid = alice.create_conversation("g", None).unwrap().group_id;
        let add = alice
            .prepare_add(
                &gid,
                &[ClaimedUser {
                    handle: reg.handle,
                    identity_key: reg.identity_key.to_bytes().to_vec(),
                    key_packages: vec![(reg.device_id, kp)],
                }],
            )
            .unwrap();
        alice.commit_accepted(&gid).unwrap();
        let alice_reg = alice.registration().unwrap();
        bob.pin_identity(&alice_reg.handle, &alice_reg.identity_key.to_bytes())
            .unwrap();
        inbox.deliver(bob, EnvelopeKind::Welcome, &gid, &add.welcome);
        gid
    }

    /// A dry run (probe_decrypt) advances the group's ratchet in memory and is rolled back: the
    /// group must not stay cached in that state, or the real processing would fail.
    #[test]
    fn a_dry_run_leaves_no_changed_group_in_memory() {
        let (mut alice, mut bob, mut inbox) = (in_memory("alice"), in_memory("bob"), Inbox(0));
        let gid = conversation(&mut alice, &mut bob, &mut inbox);
        let m = alice.encrypt_text(&gid, "once").unwrap();
        assert_eq!(bob.probe_decrypt(&gid, &m.message).unwrap(), "once");
        assert_eq!(bob.groups.len(), 0, "the probed group was dropped");
        let events = inbox.deliver(&mut bob, EnvelopeKind::Message, &gid, &m.message);
        assert_eq!(text(&events), Some("once"));
        assert_eq!(
            bob.groups.len(),
            1,
            "cached again after a committed operation"
        );
    }

    /// An operation that panics after changing a group in memory leaves nothing of it behind.
    #[test]
    fn a_panicking_operation_leaves_no_changed_group_in_memory() {
        let (mut alice, mut bob, mut inbox) = (in_memory("alice"), in_memory("bob"), Inbox(0));
        let gid = conversation(&mut alice, &mut bob, &mut inbox);
        assert_eq!(alice.groups.len(), 1);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = alice.op(|op| -> crate::Result<()> {
                let (provider, account) = (op.provider(), op.account()?);
                let group = op.groups.get(op.tx, &gid)?;
                group
                    .create_message(&provider, &account.signer(), b"lost")
                    .unwrap();
                panic!("simulated crash in the middle of an operation");
            });
        }));
        assert!(panicked.is_err());
        assert_eq!(alice.groups.len(), 0);
        let m = alice.encrypt_text(&gid, "after the panic").unwrap();
        let events = inbox.deliver(&mut bob, EnvelopeKind::Message, &gid, &m.message);
        assert_eq!(text(&events), Some("after the panic"));
    }

    /// Two devices on one store file (two processes on the same profile): each notices the
    /// other's commits and reloads, so neither encrypts with a ratchet state the other already
    /// used (which would reuse a key and nonce, and which the receiver refuses).
    #[test]
    fn two_devices_on_one_store_never_use_a_stale_group() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let path = dir.path().join("alice.db");
        let open = || LocalStore::open(&path, &key).unwrap();
        let mut alice = account(open(), CoreConfig::default(), "alice");
        let mut bob = in_memory("bob");
        let mut inbox = Inbox(0);
        let gid = conversation(&mut alice, &mut bob, &mut inbox);
        let mut alice_again = Device::open(open(), CoreConfig::default()).unwrap();
        for (i, sender) in [0, 1, 0, 1, 1, 0].into_iter().enumerate() {
            let device = if sender == 0 {
                &mut alice
            } else {
                &mut alice_again
            };
            let said = format!("message {i}");
            let m = device.encrypt_text(&gid, &said).unwrap();
            let events = inbox.deliver(&mut bob, EnvelopeKind::Message, &gid, &m.message);
            assert_eq!(text(&events), Some(said.as_str()), "{events:?}");
        }
        // And across an epoch change made by the other one.
        let update = alice_again.prepare_self_update(&gid).unwrap();
        alice_again.commit_accepted(&gid).unwrap();
        inbox.deliver(&mut bob, EnvelopeKind::Commit, &gid, &update.commit);
        let m = alice.encrypt_text(&gid, "new epoch").unwrap();
        let events = inbox.deliver(&mut bob, EnvelopeKind::Message, &gid, &m.message);
        assert_eq!(text(&events), Some("new epoch"), "{events:?}");
    }

    /// With room for one group, conversations take turns in memory and all keep working.
    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        let store = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let config = CoreConfig {
            cached_groups: 1,
            ..CoreConfig::default()
        };
        let mut alice = account(store, config, "alice");
        let mut bob = in_memory("bob");
        let mut inbox = Inbox(0);
        let first = conversation(&mut alice, &mut bob, &mut inbox);
        let second = conversation(&mut alice, &mut bob, &mut inbox);
        for (i, gid) in [&first, &second, &first, &second].into_iter().enumerate() {
            let said = format!("message {i}");
            let m = alice.encrypt_text(gid, &said).unwrap();
            assert_eq!(alice.groups.len(), 1);
            let events = inbox.deliver(&mut bob, EnvelopeKind::Message, gid, &m.message);
            assert_eq!(text(&events), Some(said.as_str()));
        }
        assert_eq!(bob.groups.len(), 2);
    }
}
