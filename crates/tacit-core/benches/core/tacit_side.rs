//! Tacit's side: `Device`s whose encrypted stores are SQLite files, a conversation built by
//! handing envelopes from one device to another (no server, as in `tests/late_and_reordered.rs`),
//! and fresh copies of a device's store so that every benchmark — and every iteration of a
//! commit-processing benchmark — starts from the same state.

use std::path::{Path, PathBuf};

use tacit_core::store::{LocalStore, StoreKey};
use tacit_core::{ClaimedUser, CoreConfig, Device, Event, OutgoingMessage, Processed};
use tacit_proto::v1::{DeviceAddress, Envelope, EnvelopeKind};
use tempfile::TempDir;

/// A conversation of `size` devices, as alice's and bob's stores at rest (one file each). Alice
/// commits and sends; bob receives.
pub struct TacitGroup {
    dir: TempDir,
    key: StoreKey,
    alice_device_id: u64,
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// Someone not in the group, with a fresh KeyPackage; bob has pinned their identity key.
    pub newcomer: ClaimedUser,
    /// Whose devices the remove benchmark removes: a third member, or bob in a group of two.
    pub removed: String,
    /// The first envelope sequence number bob has not seen.
    bob_next_seq: u64,
    /// Size of the Welcome that set the group up (all adds in one commit).
    pub setup_welcome_bytes: usize,
}

/// A working copy of alice's or bob's store; its directory is deleted on drop.
pub struct TacitCopy {
    /// The device, opened on the copy.
    pub device: Device,
    /// The copy's database file.
    pub path: PathBuf,
    group_id: Vec<u8>,
    alice_device_id: u64,
    next_seq: u64,
    _dir: TempDir,
}

fn device_at(path: &Path, key: &StoreKey) -> Device {
    let store = LocalStore::open(path, key).expect("open store");
    Device::open(store, CoreConfig::default()).expect("open device")
}

fn in_memory(handle: &str) -> Device {
    let store = LocalStore::open_in_memory(&StoreKey::generate()).expect("open store");
    let mut device = Device::open(store, CoreConfig::default()).expect("open device");
    device
        .create_account(handle, "ws://127.0.0.1:1/v1")
        .expect("account");
    device
}

/// What the directory would hand out for `device`'s user: its identity key and one KeyPackage.
fn claim(device: &mut Device) -> ClaimedUser {
    let reg = device.registration().expect("registration");
    ClaimedUser {
        handle: reg.handle,
        identity_key: reg.identity_key.to_bytes().to_vec(),
        key_packages: vec![(
            reg.device_id,
            device.new_key_packages(1).expect("KeyPackage").remove(0),
        )],
    }
}

/// Panics unless `processed` holds an event that `wanted` accepts (a refusal is an error here).
pub fn expect_event(processed: &Processed, wanted: fn(&Event) -> bool, what: &str) {
    match processed {
        Processed::Events(events) if events.iter().any(wanted) => {}
        other => panic!("{what}: unexpected outcome {other:?}"),
    }
}

fn envelope(seq: u64, kind: EnvelopeKind, group_id: &[u8], from: u64, payload: &[u8]) -> Envelope {
    Envelope {
        seq,
        kind: kind as i32,
        group_id: group_id.to_vec(),
        sender: Some(DeviceAddress {
            handle: "alice".into(),
            device_id: from,
        }),
        payload: payload.to_vec(),
        server_time_ms: 0,
    }
}

impl TacitGroup {
    /// Builds the group in `root`: alice adds bob and `size - 2` others in one commit, bob joins
    /// from the Welcome and reads the conversation's name, then alice makes `max_past_epochs`
    /// self-updates (which bob processes) so that past-epoch secrets are at their steady-state
    /// size. The other members exist only as KeyPackages; their devices are dropped.
    pub fn build(size: usize, root: &Path) -> TacitGroup {
        let dir = tempfile::Builder::new()
            .prefix("tacit-bench-")
            .tempdir_in(root)
            .expect("scratch directory");
        let key = StoreKey::generate();
        let mut alice = device_at(&dir.path().join("alice.db"), &key);
        alice
            .create_account("alice", "ws://127.0.0.1:1/v1")
            .expect("account");
        let mut bob = device_at(&dir.path().join("bob.db"), &key);
        bob.create_account("bob", "ws://127.0.0.1:1/v1")
            .expect("account");
        let alice_reg = alice.registration().expect("registration");
        let alice_device_id = alice_reg.device_id;
        bob.pin_identity("alice", &alice_reg.identity_key.to_bytes())
            .expect("pin");
        let mut users = vec![claim(&mut bob)];
        users.extend((0..size - 2).map(|i| claim(&mut in_memory(&format!("m{i}")))));
        let newcomer = claim(&mut in_memory("newcomer"));
        for user in users.iter().skip(1).chain([&newcomer]) {
            bob.pin_identity(&user.handle, &user.identity_key)
                .expect("pin");
        }

        let group_id = alice
            .create_conversation("bench", None)
            .expect("conversation")
            .group_id;
        let add = alice.prepare_add(&group_id, &users).expect("add");
        let meta = alice
            .commit_accepted(&group_id)
            .expect("merge")
            .expect("a conversation meta message");
        let mut seq = 0;
        let mut deliver = |bob: &mut Device, kind, payload: &[u8]| {
            seq += 1;
            let e = envelope(seq, kind, &group_id, alice_device_id, payload);
            bob.process_envelope(&e).expect("process")
        };
        let joined = deliver(&mut bob, EnvelopeKind::Welcome, &add.welcome);
        expect_event(&joined, |e| matches!(e, Event::Joined { .. }), "join");
        let named = deliver(&mut bob, EnvelopeKind::Message, &meta.message);
        expect_event(&named, |e| matches!(e, Event::Named { .. }), "meta");
        for _ in 0..CoreConfig::default().max_past_epochs {
            let update = alice.prepare_self_update(&group_id).expect("self-update");
            alice.commit_accepted(&group_id).expect("merge");
            let updated = deliver(&mut bob, EnvelopeKind::Commit, &update.commit);
            expect_event(
                &updated,
                |e| matches!(e, Event::KeysUpdated { .. }),
                "update",
            );
        }
        let removed = if size == 2 { "bob" } else { "m0" }.to_owned();
        // Closing a store checkpoints its write-ahead log: each file is then the whole state.
        drop((alice, bob));
        TacitGroup {
            dir,
            key,
            alice_device_id,
            group_id,
            newcomer,
            removed,
            bob_next_seq: seq + 1,
            setup_welcome_bytes: add.welcome.len(),
        }
    }

    /// A fresh copy of alice's store, in a new directory under `root`.
    pub fn alice(&self, root: &Path) -> TacitCopy {
        self.copy("alice.db", root, 1)
    }

    /// A fresh copy of bob's store, in a new directory under `root`.
    pub fn bob(&self, root: &Path) -> TacitCopy {
        self.copy("bob.db", root, self.bob_next_seq)
    }

    fn copy(&self, file: &str, root: &Path, next_seq: u64) -> TacitCopy {
        let dir = tempfile::Builder::new()
            .prefix("tacit-bench-copy-")
            .tempdir_in(root)
            .expect("copy directory");
        let path = dir.path().join("store.db");
        std::fs::copy(self.dir.path().join(file), &path).expect("copy store");
        TacitCopy {
            device: device_at(&path, &self.key),
            path,
            group_id: self.group_id.clone(),
            alice_device_id: self.alice_device_id,
            next_seq,
            _dir: dir,
        }
    }
}

impl TacitCopy {
    /// Encrypts a text message (history, outbox and MLS state in one store transaction).
    pub fn seal(&mut self, text: &str) -> OutgoingMessage {
        self.device
            .encrypt_text(&self.group_id, text)
            .expect("encrypt")
    }

    /// Forgets an outbox item, as the driver does once the server has accepted it.
    pub fn sent(&mut self, message: &OutgoingMessage) {
        self.device.outbox_sent(message.outbox_id).expect("outbox");
    }

    /// Processes an envelope from alice with the next sequence number.
    pub fn deliver(&mut self, kind: EnvelopeKind, payload: &[u8]) -> Processed {
        let e = envelope(
            self.next_seq,
            kind,
            &self.group_id,
            self.alice_device_id,
            payload,
        );
        self.next_seq += 1;
        self.device.process_envelope(&e).expect("process")
    }

    /// Loads the group into the device's memory (the first operation on a freshly opened store
    /// does this as part of its work).
    pub fn load_group(&mut self) {
        self.device.epoch(&self.group_id).expect("load group");
    }

    /// Drops the staged commit (as when the server refuses it), so that the next one starts
    /// from the same epoch.
    pub fn discard_commit(&mut self) {
        self.device
            .commit_rejected(&self.group_id)
            .expect("discard commit");
    }
}
