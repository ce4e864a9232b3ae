//! The baseline: the same operations done directly with OpenMLS (`OpenMlsRustCrypto`: RustCrypto
//! and OpenMLS's in-memory storage, basic credentials), with the group parameters Tacit uses
//! (taken from `CoreConfig::default()`), and none of Tacit's layers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use tacit_core::CoreConfig;

/// The contents of an `OpenMlsRustCrypto` in-memory storage.
pub type Snapshot = HashMap<Vec<u8>, Vec<u8>>;

/// A group of `size` members, as alice's and bob's storage at rest. Alice commits and sends; bob
/// receives.
pub struct RawGroup {
    alice: Snapshot,
    bob: Snapshot,
    signer: SignatureKeyPair,
    group_id: GroupId,
    /// A KeyPackage (RFC 9420 encoding) of someone not in the group.
    pub newcomer: Vec<u8>,
    /// The leaf the remove benchmark removes: a third member, or bob in a group of two.
    pub removed: LeafNodeIndex,
    /// Size of the Welcome that set the group up (all adds in one commit).
    pub setup_welcome_bytes: usize,
}

/// A working copy of alice's or bob's state.
pub struct RawCopy {
    /// Its provider, holding the storage.
    pub provider: OpenMlsRustCrypto,
    group: MlsGroup,
}

fn create_config() -> MlsGroupCreateConfig {
    let c = CoreConfig::default();
    MlsGroupCreateConfig::builder()
        .ciphersuite(c.ciphersuite)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(c.max_past_epochs)
        .sender_ratchet_configuration(sender_ratchet(&c))
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    let c = CoreConfig::default();
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(c.max_past_epochs)
        .sender_ratchet_configuration(sender_ratchet(&c))
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn sender_ratchet(c: &CoreConfig) -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(c.out_of_order_tolerance, c.maximum_forward_distance)
}

fn identity(name: &str) -> (SignatureKeyPair, CredentialWithKey) {
    let signer = SignatureKeyPair::new(SignatureScheme::ED25519).expect("signature key");
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    (signer, credential)
}

/// A KeyPackage for `name`; its private keys stay in `provider`.
fn key_package(provider: &OpenMlsRustCrypto, name: &str) -> KeyPackage {
    let (signer, credential) = identity(name);
    KeyPackage::builder()
        .build(
            CoreConfig::default().ciphersuite,
            provider,
            &signer,
            credential,
        )
        .expect("KeyPackage")
        .key_package()
        .clone()
}

fn encode(message: &MlsMessageOut) -> Vec<u8> {
    message.tls_serialize_detached().expect("encode")
}

fn snapshot(provider: &OpenMlsRustCrypto) -> Snapshot {
    provider
        .storage()
        .values
        .read()
        .expect("storage lock")
        .clone()
}

impl RawGroup {
    /// Builds the group: alice adds bob and `size - 2` others in one commit, bob joins from the
    /// Welcome, then alice makes `max_past_epochs` self-updates (which bob processes) so that the
    /// past-epoch secrets are at their steady-state size.
    pub fn build(size: usize) -> RawGroup {
        let alice = OpenMlsRustCrypto::default();
        let bob = OpenMlsRustCrypto::default();
        let crowd = OpenMlsRustCrypto::default();
        let (signer, credential) = identity("alice");
        let group_id = GroupId::from_slice(&rand::random::<[u8; 16]>());
        let mut group =
            MlsGroup::new_with_group_id(&alice, &signer, &create_config(), group_id, credential)
                .expect("new group");
        let mut members = vec![key_package(&bob, "bob")];
        members.extend((0..size - 2).map(|i| key_package(&crowd, &format!("m{i}"))));
        let (_, welcome, _) = group
            .add_members(&alice, &signer, &members)
            .expect("add members");
        group.merge_pending_commit(&alice).expect("merge");
        let welcome = encode(&welcome);
        let setup_welcome_bytes = welcome.len();
        let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(&welcome)
            .expect("decode")
            .extract()
        else {
            panic!("not a Welcome");
        };
        let mut bob_group = StagedWelcome::new_from_welcome(&bob, &join_config(), welcome, None)
            .and_then(|s| s.into_group(&bob))
            .expect("bob joins");
        for _ in 0..CoreConfig::default().max_past_epochs {
            let bundle = group
                .self_update(&alice, &signer, LeafNodeParameters::default())
                .expect("self-update");
            group.merge_pending_commit(&alice).expect("merge");
            let commit = encode(bundle.commit());
            process_commit(&bob, &mut bob_group, &commit);
        }
        let newcomer = key_package(&crowd, "newcomer")
            .tls_serialize_detached()
            .expect("encode");
        RawGroup {
            alice: snapshot(&alice),
            bob: snapshot(&bob),
            signer,
            group_id: group.group_id().clone(),
            newcomer,
            removed: LeafNodeIndex::new(if size == 2 { 1 } else { 2 }),
            setup_welcome_bytes,
        }
    }

    /// Alice's signing key.
    pub fn signer(&self) -> &SignatureKeyPair {
        &self.signer
    }

    /// A fresh copy of alice's state.
    pub fn alice(&self) -> RawCopy {
        self.restore(&self.alice)
    }

    /// A fresh copy of bob's state.
    pub fn bob(&self) -> RawCopy {
        self.restore(&self.bob)
    }

    fn restore(&self, snapshot: &Snapshot) -> RawCopy {
        self.restore_timed(snapshot).0
    }

    /// A fresh copy of bob's state, and how long `MlsGroup::load` took to read it from storage.
    pub fn bob_timed(&self) -> (RawCopy, Duration) {
        self.restore_timed(&self.bob)
    }

    fn restore_timed(&self, snapshot: &Snapshot) -> (RawCopy, Duration) {
        let provider = OpenMlsRustCrypto::default();
        *provider.storage().values.write().expect("storage lock") = snapshot.clone();
        let started = Instant::now();
        let group = MlsGroup::load(provider.storage(), &self.group_id)
            .expect("load")
            .expect("the group is stored");
        (RawCopy { provider, group }, started.elapsed())
    }
}

fn process_commit(provider: &OpenMlsRustCrypto, group: &mut MlsGroup, commit: &[u8]) {
    let message = MlsMessageIn::tls_deserialize_exact(commit)
        .expect("decode")
        .try_into_protocol_message()
        .expect("a protocol message");
    let processed = group.process_message(provider, message).expect("process");
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        panic!("not a commit");
    };
    group
        .merge_staged_commit(provider, *staged)
        .expect("merge commit");
}

impl RawCopy {
    /// Encrypts an application message and encodes it.
    pub fn seal(&mut self, signer: &SignatureKeyPair, payload: &[u8]) -> Vec<u8> {
        let message = self
            .group
            .create_message(&self.provider, signer, payload)
            .expect("encrypt");
        encode(&message)
    }

    /// Decodes and decrypts an application message.
    pub fn open(&mut self, message: &[u8]) -> Vec<u8> {
        let message = MlsMessageIn::tls_deserialize_exact(message)
            .expect("decode")
            .try_into_protocol_message()
            .expect("a protocol message");
        let processed = self
            .group
            .process_message(&self.provider, message)
            .expect("decrypt");
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => m.into_bytes(),
            _ => panic!("not an application message"),
        }
    }

    /// Decodes and validates a KeyPackage, then stages a commit adding it: (commit, Welcome).
    pub fn prepare_add(&mut self, signer: &SignatureKeyPair, key_package: &[u8]) -> [Vec<u8>; 2] {
        let key_package = KeyPackageIn::tls_deserialize_exact(key_package)
            .expect("decode")
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .expect("valid KeyPackage");
        let bundle = self
            .group
            .commit_builder()
            .propose_adds(vec![key_package])
            .load_psks(self.provider.storage())
            .expect("psks")
            .build(self.provider.rand(), self.provider.crypto(), signer, |_| {
                true
            })
            .expect("commit")
            .stage_commit(&self.provider)
            .expect("stage");
        let welcome = bundle.welcome().map(|w| w.tls_serialize_detached());
        let welcome = welcome.transpose().expect("encode").unwrap_or_default();
        [encode(bundle.commit()), welcome]
    }

    /// Stages a commit removing one member.
    pub fn prepare_remove(&mut self, signer: &SignatureKeyPair, leaf: LeafNodeIndex) -> Vec<u8> {
        let (commit, _, _) = self
            .group
            .remove_members(&self.provider, signer, &[leaf])
            .expect("remove");
        encode(&commit)
    }

    /// Stages a self-update commit.
    pub fn prepare_update(&mut self, signer: &SignatureKeyPair) -> Vec<u8> {
        let bundle = self
            .group
            .self_update(&self.provider, signer, LeafNodeParameters::default())
            .expect("self-update");
        encode(bundle.commit())
    }

    /// Drops the staged commit, so that the next one starts from the same epoch.
    pub fn discard_commit(&mut self) {
        self.group
            .clear_pending_commit(self.provider.storage())
            .expect("clear");
    }

    /// Decodes, processes and merges a commit from alice.
    pub fn process_commit(&mut self, commit: &[u8]) {
        process_commit(&self.provider, &mut self.group, commit);
    }

    /// The storage's contents now.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.provider)
    }
}
