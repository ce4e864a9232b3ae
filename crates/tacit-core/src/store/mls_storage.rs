//! OpenMLS's storage, written through the current local-store transaction.
//!
//! Each OpenMLS item is one store item ([`StoreTx::put_item`]: one sealed row, or sealed chunks
//! of which only the changed ones are rewritten): logical key = a label for the kind of item
//! followed by the JSON of its OpenMLS key; value = a format byte and the item in postcard's
//! compact binary encoding (JSON for the join configuration, whose decoding needs a
//! self-describing format). Values of store schema version 1 (untagged JSON) are still read.
//! Items OpenMLS keeps as lists (own leaf nodes, queued proposals, epoch key pairs) are one
//! item holding the whole list.

use openmls_rust_crypto::RustCrypto;
use openmls_traits::storage::{traits, Entity, Key, StorageProvider, CURRENT_VERSION};
use openmls_traits::OpenMlsProvider;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{check_round_trip, codec_error, decode, encode, format_of};
use super::db::{Namespace, StoreTx};
use super::StoreError;

/// A storage failure surfaced through OpenMLS.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MlsStorageError(#[from] pub StoreError);

/// OpenMLS storage bound to one local-store transaction.
pub struct MlsStorage<'a> {
    tx: &'a StoreTx<'a>,
}

const V: u16 = CURRENT_VERSION;

mod label {
    pub const JOIN_CONFIG: &[u8] = crate::store::codec::JOIN_CONFIG_LABEL;
    pub const OWN_LEAF_NODES: &[u8] = b"own_leaf_nodes";
    pub const PROPOSAL: &[u8] = b"proposal";
    pub const PROPOSAL_REFS: &[u8] = b"proposal_refs";
    pub const TREE: &[u8] = b"tree";
    pub const TRANSCRIPT_HASH: &[u8] = b"interim_transcript_hash";
    pub const CONTEXT: &[u8] = b"group_context";
    pub const CONFIRMATION_TAG: &[u8] = b"confirmation_tag";
    pub const GROUP_STATE: &[u8] = b"group_state";
    pub const MESSAGE_SECRETS: &[u8] = b"message_secrets";
    pub const RESUMPTION_PSKS: &[u8] = b"resumption_psk_store";
    pub const OWN_LEAF_INDEX: &[u8] = b"own_leaf_index";
    pub const EPOCH_SECRETS: &[u8] = b"group_epoch_secrets";
    pub const SIGNATURE_KEY_PAIR: &[u8] = b"signature_key_pair";
    pub const ENCRYPTION_KEY_PAIR: &[u8] = b"encryption_key_pair";
    pub const EPOCH_KEY_PAIRS: &[u8] = b"epoch_key_pairs";
    pub const KEY_PACKAGE: &[u8] = b"key_package";
    pub const PSK: &[u8] = b"psk";
}

type R<T> = Result<T, MlsStorageError>;

impl<'a> MlsStorage<'a> {
    pub(crate) fn new(tx: &'a StoreTx<'a>) -> Self {
        MlsStorage { tx }
    }

    fn key<K: Serialize + ?Sized>(label: &[u8], key: &K) -> R<Vec<u8>> {
        let mut out = label.to_vec();
        out.push(0);
        serde_json::to_writer(&mut out, key).map_err(codec_error)?;
        Ok(out)
    }

    fn write<K: Serialize + ?Sized, T: Serialize + DeserializeOwned>(
        &self,
        label: &[u8],
        key: &K,
        value: &T,
    ) -> R<()> {
        self.write_as::<K, T, T>(label, key, value)
    }

    fn write_list<K: Serialize + ?Sized, T: Serialize + DeserializeOwned>(
        &self,
        label: &[u8],
        key: &K,
        items: &[T],
    ) -> R<()> {
        self.write_as::<K, [T], Vec<T>>(label, key, items)
    }

    /// Writes `value`, which decodes as a `D`.
    fn write_as<K, T, D>(&self, label: &[u8], key: &K, value: &T) -> R<()>
    where
        K: Serialize + ?Sized,
        T: Serialize + ?Sized,
        D: Serialize + DeserializeOwned,
    {
        let key = Self::key(label, key)?;
        #[cfg(test)]
        if tests::writing_version_1() {
            return Ok(self.tx.put_json(Namespace::Mls, &key, value)?);
        }
        let bytes = encode(format_of(label), value)?;
        check_round_trip::<D>(&bytes)?;
        Ok(self.tx.put_item(Namespace::Mls, &key, &bytes)?)
    }

    fn read<K: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        label: &[u8],
        key: &K,
    ) -> R<Option<T>> {
        match self.tx.get_item(Namespace::Mls, &Self::key(label, key)?)? {
            Some(item) => Ok(Some(decode(item)?)),
            None => Ok(None),
        }
    }

    fn remove<K: Serialize + ?Sized>(&self, label: &[u8], key: &K) -> R<()> {
        Ok(self
            .tx
            .delete_item(Namespace::Mls, &Self::key(label, key)?)?)
    }

    fn list<K: Serialize + ?Sized, T: DeserializeOwned>(&self, label: &[u8], key: &K) -> R<Vec<T>> {
        Ok(self.read(label, key)?.unwrap_or_default())
    }

    fn push<K: Serialize + ?Sized, T: Serialize + DeserializeOwned>(
        &self,
        label: &[u8],
        key: &K,
        item: T,
    ) -> R<()> {
        let mut items: Vec<T> = self.list(label, key)?;
        items.push(item);
        self.write_list(label, key, &items)
    }

    /// Removes from a list every element whose encoding equals `target`'s.
    fn list_without<K: Serialize + ?Sized, T: Serialize + DeserializeOwned>(
        &self,
        label: &[u8],
        key: &K,
        target: &T,
    ) -> R<(Vec<T>, bool)> {
        let wanted = postcard::to_allocvec(target).map_err(codec_error)?;
        let mut found = false;
        let mut kept = Vec::new();
        for item in self.list::<_, T>(label, key)? {
            if postcard::to_allocvec(&item).map_err(codec_error)? == wanted {
                found = true;
            } else {
                kept.push(item);
            }
        }
        Ok((kept, found))
    }
}

/// Decodes a value through serialization (for OpenMLS's typed references, whose types the
/// trait hands us only by reference).
fn owned<T: Serialize + ?Sized, U: DeserializeOwned>(value: &T) -> R<U> {
    postcard::from_bytes(&postcard::to_allocvec(value).map_err(codec_error)?).map_err(codec_error)
}

impl StorageProvider<CURRENT_VERSION> for MlsStorage<'_> {
    type Error = MlsStorageError;

    fn write_mls_join_config<G: traits::GroupId<V>, C: traits::MlsGroupJoinConfig<V>>(
        &self,
        g: &G,
        c: &C,
    ) -> R<()> {
        self.write(label::JOIN_CONFIG, g, c)
    }
    fn append_own_leaf_node<G: traits::GroupId<V>, L: traits::LeafNode<V>>(
        &self,
        g: &G,
        l: &L,
    ) -> R<()> {
        self.push::<_, L>(label::OWN_LEAF_NODES, g, owned(l)?)
    }
    fn queue_proposal<
        G: traits::GroupId<V>,
        P: traits::ProposalRef<V>,
        Q: traits::QueuedProposal<V>,
    >(
        &self,
        g: &G,
        r: &P,
        p: &Q,
    ) -> R<()> {
        self.write(label::PROPOSAL, &(g, r), p)?;
        let (_, present) = self.list_without::<_, P>(label::PROPOSAL_REFS, g, r)?;
        if !present {
            self.push::<_, P>(label::PROPOSAL_REFS, g, owned(r)?)?;
        }
        Ok(())
    }
    fn write_tree<G: traits::GroupId<V>, T: traits::TreeSync<V>>(&self, g: &G, t: &T) -> R<()> {
        self.write(label::TREE, g, t)
    }
    fn write_interim_transcript_hash<G: traits::GroupId<V>, H: traits::InterimTranscriptHash<V>>(
        &self,
        g: &G,
        h: &H,
    ) -> R<()> {
        self.write(label::TRANSCRIPT_HASH, g, h)
    }
    fn write_context<G: traits::GroupId<V>, C: traits::GroupContext<V>>(
        &self,
        g: &G,
        c: &C,
    ) -> R<()> {
        self.write(label::CONTEXT, g, c)
    }
    fn write_confirmation_tag<G: traits::GroupId<V>, T: traits::ConfirmationTag<V>>(
        &self,
        g: &G,
        t: &T,
    ) -> R<()> {
        self.write(label::CONFIRMATION_TAG, g, t)
    }
    fn write_group_state<S: traits::GroupState<V>, G: traits::GroupId<V>>(
        &self,
        g: &G,
        s: &S,
    ) -> R<()> {
        self.write(label::GROUP_STATE, g, s)
    }
    fn write_message_secrets<G: traits::GroupId<V>, M: traits::MessageSecrets<V>>(
        &self,
        g: &G,
        m: &M,
    ) -> R<()> {
        self.write(label::MESSAGE_SECRETS, g, m)
    }
    fn write_resumption_psk_store<G: traits::GroupId<V>, P: traits::ResumptionPskStore<V>>(
        &self,
        g: &G,
        p: &P,
    ) -> R<()> {
        self.write(label::RESUMPTION_PSKS, g, p)
    }
    fn write_own_leaf_index<G: traits::GroupId<V>, I: traits::LeafNodeIndex<V>>(
        &self,
        g: &G,
        i: &I,
    ) -> R<()> {
        self.write(label::OWN_LEAF_INDEX, g, i)
    }
    fn write_group_epoch_secrets<G: traits::GroupId<V>, S: traits::GroupEpochSecrets<V>>(
        &self,
        g: &G,
        s: &S,
    ) -> R<()> {
        self.write(label::EPOCH_SECRETS, g, s)
    }
    fn write_signature_key_pair<
        K: traits::SignaturePublicKey<V>,
        P: traits::SignatureKeyPair<V>,
    >(
        &self,
        k: &K,
        p: &P,
    ) -> R<()> {
        self.write(label::SIGNATURE_KEY_PAIR, k, p)
    }
    fn write_encryption_key_pair<K: traits::EncryptionKey<V>, P: traits::HpkeKeyPair<V>>(
        &self,
        k: &K,
        p: &P,
    ) -> R<()> {
        self.write(label::ENCRYPTION_KEY_PAIR, k, p)
    }
    fn write_encryption_epoch_key_pairs<
        G: traits::GroupId<V>,
        E: traits::EpochKey<V>,
        P: traits::HpkeKeyPair<V>,
    >(
        &self,
        g: &G,
        e: &E,
        leaf: u32,
        pairs: &[P],
    ) -> R<()> {
        self.write_list(label::EPOCH_KEY_PAIRS, &(g, e, leaf), pairs)
    }
    fn write_key_package<H: traits::HashReference<V>, K: traits::KeyPackage<V>>(
        &self,
        h: &H,
        k: &K,
    ) -> R<()> {
        self.write(label::KEY_PACKAGE, h, k)
    }
    fn write_psk<I: traits::PskId<V>, B: traits::PskBundle<V>>(&self, i: &I, b: &B) -> R<()> {
        self.write(label::PSK, i, b)
    }

    fn mls_group_join_config<G: traits::GroupId<V>, C: traits::MlsGroupJoinConfig<V>>(
        &self,
        g: &G,
    ) -> R<Option<C>> {
        self.read(label::JOIN_CONFIG, g)
    }
    fn own_leaf_nodes<G: traits::GroupId<V>, L: traits::LeafNode<V>>(&self, g: &G) -> R<Vec<L>> {
        self.list(label::OWN_LEAF_NODES, g)
    }
    fn queued_proposal_refs<G: traits::GroupId<V>, P: traits::ProposalRef<V>>(
        &self,
        g: &G,
    ) -> R<Vec<P>> {
        self.list(label::PROPOSAL_REFS, g)
    }
    fn queued_proposals<
        G: traits::GroupId<V>,
        P: traits::ProposalRef<V>,
        Q: traits::QueuedProposal<V>,
    >(
        &self,
        g: &G,
    ) -> R<Vec<(P, Q)>> {
        let refs: Vec<P> = self.list(label::PROPOSAL_REFS, g)?;
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            if let Some(q) = self.read(label::PROPOSAL, &(g, &r))? {
                out.push((r, q));
            }
        }
        Ok(out)
    }
    fn tree<G: traits::GroupId<V>, T: traits::TreeSync<V>>(&self, g: &G) -> R<Option<T>> {
        self.read(label::TREE, g)
    }
    fn group_context<G: traits::GroupId<V>, C: traits::GroupContext<V>>(
        &self,
        g: &G,
    ) -> R<Option<C>> {
        self.read(label::CONTEXT, g)
    }
    fn interim_transcript_hash<G: traits::GroupId<V>, H: traits::InterimTranscriptHash<V>>(
        &self,
        g: &G,
    ) -> R<Option<H>> {
        self.read(label::TRANSCRIPT_HASH, g)
    }
    fn confirmation_tag<G: traits::GroupId<V>, T: traits::ConfirmationTag<V>>(
        &self,
        g: &G,
    ) -> R<Option<T>> {
        self.read(label::CONFIRMATION_TAG, g)
    }
    fn group_state<S: traits::GroupState<V>, G: traits::GroupId<V>>(&self, g: &G) -> R<Option<S>> {
        self.read(label::GROUP_STATE, g)
    }
    fn message_secrets<G: traits::GroupId<V>, M: traits::MessageSecrets<V>>(
        &self,
        g: &G,
    ) -> R<Option<M>> {
        self.read(label::MESSAGE_SECRETS, g)
    }
    fn resumption_psk_store<G: traits::GroupId<V>, P: traits::ResumptionPskStore<V>>(
        &self,
        g: &G,
    ) -> R<Option<P>> {
        self.read(label::RESUMPTION_PSKS, g)
    }
    fn own_leaf_index<G: traits::GroupId<V>, I: traits::LeafNodeIndex<V>>(
        &self,
        g: &G,
    ) -> R<Option<I>> {
        self.read(label::OWN_LEAF_INDEX, g)
    }
    fn group_epoch_secrets<G: traits::GroupId<V>, S: traits::GroupEpochSecrets<V>>(
        &self,
        g: &G,
    ) -> R<Option<S>> {
        self.read(label::EPOCH_SECRETS, g)
    }
    fn signature_key_pair<K: traits::SignaturePublicKey<V>, P: traits::SignatureKeyPair<V>>(
        &self,
        k: &K,
    ) -> R<Option<P>> {
        self.read(label::SIGNATURE_KEY_PAIR, k)
    }
    fn encryption_key_pair<P: traits::HpkeKeyPair<V>, K: traits::EncryptionKey<V>>(
        &self,
        k: &K,
    ) -> R<Option<P>> {
        self.read(label::ENCRYPTION_KEY_PAIR, k)
    }
    fn encryption_epoch_key_pairs<
        G: traits::GroupId<V>,
        E: traits::EpochKey<V>,
        P: traits::HpkeKeyPair<V>,
    >(
        &self,
        g: &G,
        e: &E,
        leaf: u32,
    ) -> R<Vec<P>> {
        Ok(self
            .read(label::EPOCH_KEY_PAIRS, &(g, e, leaf))?
            .unwrap_or_default())
    }
    fn key_package<H: traits::HashReference<V>, K: traits::KeyPackage<V>>(
        &self,
        h: &H,
    ) -> R<Option<K>> {
        self.read(label::KEY_PACKAGE, h)
    }
    fn psk<B: traits::PskBundle<V>, I: traits::PskId<V>>(&self, i: &I) -> R<Option<B>> {
        self.read(label::PSK, i)
    }

    fn remove_proposal<G: traits::GroupId<V>, P: traits::ProposalRef<V>>(
        &self,
        g: &G,
        r: &P,
    ) -> R<()> {
        let (refs, _) = self.list_without::<_, P>(label::PROPOSAL_REFS, g, r)?;
        self.write_list(label::PROPOSAL_REFS, g, &refs)?;
        self.remove(label::PROPOSAL, &(g, r))
    }
    fn delete_own_leaf_nodes<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::OWN_LEAF_NODES, g)
    }
    fn delete_group_config<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::JOIN_CONFIG, g)
    }
    fn delete_tree<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::TREE, g)
    }
    fn delete_confirmation_tag<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::CONFIRMATION_TAG, g)
    }
    fn delete_group_state<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::GROUP_STATE, g)
    }
    fn delete_context<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::CONTEXT, g)
    }
    fn delete_interim_transcript_hash<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::TRANSCRIPT_HASH, g)
    }
    fn delete_message_secrets<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::MESSAGE_SECRETS, g)
    }
    fn delete_all_resumption_psk_secrets<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::RESUMPTION_PSKS, g)
    }
    fn delete_own_leaf_index<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::OWN_LEAF_INDEX, g)
    }
    fn delete_group_epoch_secrets<G: traits::GroupId<V>>(&self, g: &G) -> R<()> {
        self.remove(label::EPOCH_SECRETS, g)
    }
    fn clear_proposal_queue<G: traits::GroupId<V>, P: traits::ProposalRef<V>>(
        &self,
        g: &G,
    ) -> R<()> {
        let refs: Vec<P> = self.list(label::PROPOSAL_REFS, g)?;
        for r in refs {
            self.remove(label::PROPOSAL, &(g, &r))?;
        }
        self.remove(label::PROPOSAL_REFS, g)
    }
    fn delete_signature_key_pair<K: traits::SignaturePublicKey<V>>(&self, k: &K) -> R<()> {
        self.remove(label::SIGNATURE_KEY_PAIR, k)
    }
    fn delete_encryption_key_pair<K: traits::EncryptionKey<V>>(&self, k: &K) -> R<()> {
        self.remove(label::ENCRYPTION_KEY_PAIR, k)
    }
    fn delete_encryption_epoch_key_pairs<G: traits::GroupId<V>, E: traits::EpochKey<V>>(
        &self,
        g: &G,
        e: &E,
        leaf: u32,
    ) -> R<()> {
        self.remove(label::EPOCH_KEY_PAIRS, &(g, e, leaf))
    }
    fn delete_key_package<H: traits::HashReference<V>>(&self, h: &H) -> R<()> {
        self.remove(label::KEY_PACKAGE, h)
    }
    fn delete_psk<I: traits::PskId<V>>(&self, i: &I) -> R<()> {
        self.remove(label::PSK, i)
    }
}

// `Key`/`Entity` are the serde bounds behind the traits above.
#[allow(dead_code)]
fn _bounds<K: Key<V>, E: Entity<V>>() {}

/// An OpenMLS provider for one transaction: storage in the local store, RustCrypto for
/// cryptography and randomness.
pub struct TxProvider<'a> {
    storage: MlsStorage<'a>,
    crypto: &'a RustCrypto,
}

impl<'a> TxProvider<'a> {
    pub(crate) fn new(storage: MlsStorage<'a>, crypto: &'a RustCrypto) -> Self {
        TxProvider { storage, crypto }
    }
}

impl<'a> OpenMlsProvider for TxProvider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MlsStorage<'a>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }
    fn crypto(&self) -> &Self::CryptoProvider {
        self.crypto
    }
    fn rand(&self) -> &Self::RandProvider {
        self.crypto
    }
}

#[cfg(test)]
#[path = "mls_storage_tests.rs"]
mod tests;
