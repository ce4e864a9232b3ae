//! Peers for the sans-IO tests: a device with an in-memory store and an account, and envelopes
//! handed from one device to another directly, in whatever order the test wants.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use tacit_core::store::{LocalStore, StoreKey};
use tacit_core::{ClaimedUser, CoreConfig, Device, Event, Processed};
use tacit_proto::v1::{DeviceAddress, Envelope, EnvelopeKind};

pub struct Peer {
    pub device: Device,
    pub seq: u64,
}

impl Peer {
    pub fn new(handle: &str) -> Peer {
        let store = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let mut device = Device::open(store, CoreConfig::default()).unwrap();
        device
            .create_account(handle, "ws://127.0.0.1:1/v1")
            .unwrap();
        Peer { device, seq: 0 }
    }

    pub fn claimed(&mut self) -> ClaimedUser {
        let reg = self.device.registration().unwrap();
        ClaimedUser {
            handle: reg.handle,
            identity_key: reg.identity_key.to_bytes().to_vec(),
            key_packages: vec![(
                reg.device_id,
                self.device.new_key_packages(1).unwrap().remove(0),
            )],
        }
    }

    pub fn deliver(
        &mut self,
        kind: EnvelopeKind,
        group_id: &[u8],
        payload: &[u8],
        from: &str,
    ) -> tacit_core::Result<Processed> {
        self.seq += 1;
        let envelope = Envelope {
            seq: self.seq,
            kind: kind as i32,
            group_id: group_id.to_vec(),
            sender: Some(DeviceAddress {
                handle: from.into(),
                device_id: 1,
            }),
            payload: payload.to_vec(),
            server_time_ms: 0,
        };
        self.device.process_envelope(&envelope)
    }

    pub fn pin(&mut self, other: &mut Peer) {
        let reg = other.device.registration().unwrap();
        self.device
            .pin_identity(&reg.handle, &reg.identity_key.to_bytes())
            .unwrap();
    }
}

pub fn texts(p: Processed) -> Vec<String> {
    match p {
        Processed::Events(ev) => ev
            .into_iter()
            .filter_map(|e| match e {
                Event::Message { text, .. } => Some(text),
                _ => None,
            })
            .collect(),
        Processed::Duplicate => vec![],
    }
}

/// alice creates a group with bob; returns its id.
pub fn pair(alice: &mut Peer, bob: &mut Peer) -> Vec<u8> {
    let c = alice.device.create_conversation("pair", None).unwrap();
    let claimed = bob.claimed();
    let commit = alice.device.prepare_add(&c.group_id, &[claimed]).unwrap();
    alice.device.commit_accepted(&c.group_id).unwrap();
    bob.pin(alice);
    bob.deliver(EnvelopeKind::Welcome, &c.group_id, &commit.welcome, "alice")
        .unwrap();
    c.group_id
}
