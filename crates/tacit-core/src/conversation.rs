//! Conversations as MLS groups: create, add and remove members, leave. Commits are staged
//! here, sent by the driver, and merged only once the server has accepted them.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credential::{certificate_of, check_leaf, CertCache, LeafCheck};
use crate::device::{pin_in, pinned_in, Device};
use crate::error::{mls, CoreError, Result};
use crate::op::Op;
use crate::records::*;
use crate::store::{Namespace, StoreTx};

/// A commit staged locally and ready to be sent as `SendCommit`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutgoingCommit {
    /// The group.
    pub group_id: Vec<u8>,
    /// The epoch the commit was made against.
    pub epoch: u64,
    /// The MLS commit.
    pub commit: Vec<u8>,
    /// The MLS Welcome for added devices (empty if none).
    pub welcome: Vec<u8>,
    /// Devices the commit adds: (handle, device id).
    pub added: Vec<(String, u64)>,
    /// Devices the commit removes.
    pub removed: Vec<(String, u64)>,
}

/// KeyPackages claimed from the server for one user.
#[derive(Clone, Debug)]
pub struct ClaimedUser {
    /// Whose.
    pub handle: String,
    /// The identity key the server's directory gives for them.
    pub identity_key: Vec<u8>,
    /// (device id, KeyPackage) for each of their devices.
    pub key_packages: Vec<(u64, Vec<u8>)>,
}

/// An encrypted message ready to be sent as `SendMessage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Its outbox id (pass to [`Device::outbox_sent`] once the server accepted it).
    pub outbox_id: u64,
    /// The group.
    pub group_id: Vec<u8>,
    /// The MLS message.
    pub message: Vec<u8>,
}

pub(crate) fn group_config(config: &crate::CoreConfig) -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(config.ciphersuite)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(config.max_past_epochs)
        .sender_ratchet_configuration(config.sender_ratchet())
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
}

pub(crate) fn join_config(config: &crate::CoreConfig) -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(config.max_past_epochs)
        .sender_ratchet_configuration(config.sender_ratchet())
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
}

pub(crate) fn get_conversation(tx: &StoreTx<'_>, group_id: &[u8]) -> Result<Conversation> {
    tx.get_json(Namespace::Conversation, group_id)?
        .ok_or_else(|| CoreError::UnknownConversation(hex::encode(group_id)))
}

pub(crate) fn put_conversation(tx: &StoreTx<'_>, c: &Conversation) -> Result<()> {
    Ok(tx.put_json(Namespace::Conversation, &c.group_id, c)?)
}

/// Adds a line to the history unless one with the same message id is there already.
pub(crate) fn append_history(
    tx: &StoreTx<'_>,
    group_id: &[u8],
    entry: &HistoryEntry,
) -> Result<()> {
    if !tx.marker_set(&seen_key(group_id, &entry.message_id))? {
        return Ok(());
    }
    push_line(tx, group_id, entry)
}

/// Adds a line whose message id this device has just drawn at random (its own message, a
/// system line), so cannot be in the history yet: no need to look.
pub(crate) fn append_new_history(
    tx: &StoreTx<'_>,
    group_id: &[u8],
    entry: &HistoryEntry,
) -> Result<()> {
    tx.marker_set(&seen_key(group_id, &entry.message_id))?;
    push_line(tx, group_id, entry)
}

/// Appends the line to the conversation's log (its seen-marker is set).
fn push_line(tx: &StoreTx<'_>, group_id: &[u8], entry: &HistoryEntry) -> Result<()> {
    let bytes = entry
        .to_stored()
        .map_err(|e| CoreError::Invalid(e.to_string()))?;
    tx.log_append(&history_list(group_id), &bytes)?;
    Ok(())
}

pub(crate) fn system_line(tx: &StoreTx<'_>, group_id: &[u8], by: &str, text: String) -> Result<()> {
    let mut id = b"sys:".to_vec();
    id.extend_from_slice(&rand::random::<[u8; 16]>());
    append_new_history(
        tx,
        group_id,
        &HistoryEntry {
            message_id: id,
            sender: by.to_owned(),
            sender_device: 0,
            sent_at_ms: now_ms(),
            text,
            outgoing: false,
            system: true,
        },
    )
}

/// Handles and device names of a group's members, from their certificates.
pub(crate) fn member_devices(certs: &CertCache, group: &MlsGroup) -> Vec<(String, u64)> {
    group
        .members()
        .filter_map(|m| certificate_of(certs, &m.credential).ok())
        .map(|c| (c.handle, c.device_id))
        .collect()
}

fn device_name(handle: &str, device_id: u64) -> String {
    format!("{handle}/{device_id:016x}")
}

impl Device {
    /// Creates a new conversation with this device as its only member. `direct_peer` marks a
    /// 1:1 conversation. Register it with the server (`CreateGroup`) and then add members.
    pub fn create_conversation(
        &mut self,
        name: &str,
        direct_peer: Option<&str>,
    ) -> Result<Conversation> {
        let group_id = rand::random::<[u8; 16]>().to_vec();
        self.op(|op| {
            let (tx, provider, account) = (op.tx, op.provider(), op.account()?);
            let group = MlsGroup::new_with_group_id(
                &provider,
                &account.signer(),
                &group_config(op.config),
                GroupId::from_slice(&group_id),
                account.credential(),
            )
            .map_err(mls)?;
            op.groups.insert(group);
            let conversation = Conversation {
                group_id: group_id.clone(),
                name: name.to_owned(),
                direct_peer: direct_peer.map(str::to_owned),
                active: true,
                created_at_ms: now_ms(),
            };
            put_conversation(tx, &conversation)?;
            system_line(
                tx,
                &group_id,
                &account.handle,
                format!("{} created the conversation", account.handle),
            )?;
            Ok(conversation)
        })
    }

    /// Stages a commit adding every claimed device. Each KeyPackage must carry a certificate
    /// for the claimed handle and device, signed by the identity key pinned for that handle (it
    /// is pinned now if it was unknown; a changed key is refused).
    pub fn prepare_add(
        &mut self,
        group_id: &[u8],
        users: &[ClaimedUser],
    ) -> Result<OutgoingCommit> {
        self.op(|op| {
            let (tx, provider, account) = (op.tx, op.provider(), op.account()?);
            let group = op.groups.get(tx, group_id)?;
            let present = member_devices(op.certs, group);
            let mut key_packages = Vec::new();
            let mut added = Vec::new();
            for user in users {
                pin_in(tx, &user.handle, &user.identity_key)?;
                for (device_id, bytes) in &user.key_packages {
                    if present.contains(&(user.handle.clone(), *device_id)) {
                        continue;
                    }
                    let name = device_name(&user.handle, *device_id);
                    let kp = KeyPackageIn::tls_deserialize_exact(bytes.as_slice())
                        .map_err(|e| CoreError::BadDevice {
                            device: name.clone(),
                            reason: format!("malformed KeyPackage: {e}"),
                        })?
                        .validate(provider.crypto(), ProtocolVersion::Mls10)
                        .map_err(|e| CoreError::BadDevice {
                            device: name.clone(),
                            reason: format!("invalid KeyPackage: {e:?}"),
                        })?;
                    let leaf = kp.leaf_node();
                    let key = leaf.signature_key().as_slice();
                    match check_leaf(op.certs, leaf.credential(), key, |h| pinned_in(tx, h))? {
                        LeafCheck::Valid(cert)
                            if cert.handle == user.handle && cert.device_id == *device_id => {}
                        LeafCheck::Valid(cert) => {
                            return Err(CoreError::BadDevice {
                                device: name,
                                reason: format!(
                                    "its KeyPackage is certified for {}",
                                    cert.device_name()
                                ),
                            })
                        }
                        LeafCheck::UnknownIdentity(h) => {
                            return Err(CoreError::BadDevice {
                                device: name,
                                reason: format!(
                                    "its KeyPackage is certified for another user ({h})"
                                ),
                            })
                        }
                    }
                    key_packages.push(kp);
                    added.push((user.handle.clone(), *device_id));
                }
            }
            if key_packages.is_empty() {
                return Err(CoreError::Invalid(
                    "everyone named is already in the conversation".into(),
                ));
            }
            let epoch = group.epoch().as_u64();
            let bundle = group
                .commit_builder()
                .propose_adds(key_packages)
                .load_psks(provider.storage())
                .map_err(mls)?
                .build(
                    provider.rand(),
                    provider.crypto(),
                    &account.signer(),
                    |_| true,
                )
                .map_err(mls)?
                .stage_commit(&provider)
                .map_err(mls)?;
            let (commit, welcome, _) = bundle.into_messages();
            stage_outgoing(tx, group_id, epoch, (commit, welcome), added, vec![], true)
        })
    }

    /// Stages a commit removing every device of the named users.
    pub fn prepare_remove(
        &mut self,
        group_id: &[u8],
        handles: &[String],
    ) -> Result<OutgoingCommit> {
        let what = format!("none of {handles:?} is");
        self.prepare_remove_where(group_id, &what, |handle, _| {
            handles.iter().any(|h| h == handle)
        })
    }

    /// Stages a commit removing one device (e.g. a lost device of this user) from a group.
    pub fn prepare_remove_device(
        &mut self,
        group_id: &[u8],
        handle: &str,
        device_id: u64,
    ) -> Result<OutgoingCommit> {
        let what = format!("{handle}/{device_id:016x} is not");
        self.prepare_remove_where(group_id, &what, |h, d| h == handle && d == device_id)
    }

    /// Stages a commit removing every member device for which `selected(handle, device_id)`.
    fn prepare_remove_where(
        &mut self,
        group_id: &[u8],
        what: &str,
        selected: impl Fn(&str, u64) -> bool,
    ) -> Result<OutgoingCommit> {
        self.op(|op| {
            let (tx, provider, account) = (op.tx, op.provider(), op.account()?);
            let group = op.groups.get(tx, group_id)?;
            let mut indexes = Vec::new();
            let mut removed = Vec::new();
            for m in group.members() {
                if let Ok(cert) = certificate_of(op.certs, &m.credential) {
                    if selected(&cert.handle, cert.device_id) {
                        indexes.push(m.index);
                        removed.push((cert.handle, cert.device_id));
                    }
                }
            }
            if indexes.is_empty() {
                return Err(CoreError::Invalid(format!("{what} in this conversation")));
            }
            if indexes.contains(&group.own_leaf_index()) {
                return Err(CoreError::Invalid(
                    "to remove yourself, use `tacit group leave`".into(),
                ));
            }
            let epoch = group.epoch().as_u64();
            let (commit, welcome, _) = group
                .remove_members(&provider, &account.signer(), &indexes)
                .map_err(mls)?;
            stage_outgoing(
                tx,
                group_id,
                epoch,
                (commit, welcome),
                vec![],
                removed,
                false,
            )
        })
    }

    /// Stages a commit of the proposals waiting in the group (e.g. a member's request to
    /// leave). Returns None if there is nothing to commit.
    pub fn prepare_commit_pending(&mut self, group_id: &[u8]) -> Result<Option<OutgoingCommit>> {
        self.op(|op| {
            let (tx, provider, account) = (op.tx, op.provider(), op.account()?);
            let group = op.groups.get(tx, group_id)?;
            if !group.has_pending_proposals() || !group.is_active() {
                return Ok(None);
            }
            let mut removed = Vec::new();
            for p in group.pending_proposals() {
                if let Proposal::Remove(r) = p.proposal() {
                    if let Some(m) = group.member_at(r.removed()) {
                        if let Ok(cert) = certificate_of(op.certs, &m.credential) {
                            removed.push((cert.handle, cert.device_id));
                        }
                    }
                }
            }
            let epoch = group.epoch().as_u64();
            let (commit, welcome, _) = group
                .commit_to_pending_proposals(&provider, &account.signer())
                .map_err(mls)?;
            stage_outgoing(
                tx,
                group_id,
                epoch,
                (commit, welcome),
                vec![],
                removed,
                false,
            )
            .map(Some)
        })
    }

    /// Stages a self-update commit: fresh leaf keys for this device (post-compromise security).
    pub fn prepare_self_update(&mut self, group_id: &[u8]) -> Result<OutgoingCommit> {
        self.op(|op| {
            let (tx, provider, account) = (op.tx, op.provider(), op.account()?);
            let group = op.groups.get(tx, group_id)?;
            let epoch = group.epoch().as_u64();
            let bundle = group
                .self_update(&provider, &account.signer(), LeafNodeParameters::default())
                .map_err(mls)?;
            let (commit, _, _) = bundle.into_messages();
            stage_outgoing(tx, group_id, epoch, (commit, None), vec![], vec![], false)
        })
    }

    /// The server accepted our commit: merge it. Returns the conversation meta message to send
    /// when the commit added devices (so that they learn the conversation's name).
    pub fn commit_accepted(&mut self, group_id: &[u8]) -> Result<Option<OutgoingMessage>> {
        let announce = self.op(|op| {
            let me = &op.account()?.handle;
            merge_own_commit(op, me, group_id)
        })?;
        if announce {
            return self.encrypt_meta(group_id).map(Some);
        }
        Ok(None)
    }

    /// The server refused our commit (the epoch moved on): drop it. The driver catches up on
    /// the missed commits and then retries the intent.
    pub fn commit_rejected(&mut self, group_id: &[u8]) -> Result<()> {
        self.op(|op| {
            let (tx, provider) = (op.tx, op.provider());
            let group = op.groups.get(tx, group_id)?;
            group
                .clear_pending_commit(provider.storage())
                .map_err(mls)?;
            tx.delete(Namespace::Meta, &inflight_key(group_id))?;
            Ok(())
        })
    }

    /// Commits staged but not yet known to be accepted (after a crash, resend them).
    pub fn inflight_commits(&mut self) -> Result<Vec<OutgoingCommit>> {
        let conversations = self.conversations()?;
        self.store.transaction(|tx| {
            let mut out = Vec::new();
            for c in conversations {
                let f: Option<InFlightCommit> =
                    tx.get_json(Namespace::Meta, &inflight_key(&c.group_id))?;
                if let Some(f) = f {
                    out.push(f.outgoing);
                }
            }
            Ok(out)
        })
    }

    /// The group's current epoch.
    pub fn epoch(&mut self, group_id: &[u8]) -> Result<u64> {
        self.op(|op| Ok(op.groups.get(op.tx, group_id)?.epoch().as_u64()))
    }

    /// Creates the MLS proposal asking the other members to remove this device, and marks the
    /// conversation as left. Send the returned message with `SendMessage`.
    pub fn leave(&mut self, group_id: &[u8]) -> Result<Vec<u8>> {
        self.op(|op| {
            let (tx, provider, account) = (op.tx, op.provider(), op.account()?);
            let group = op.groups.get(tx, group_id)?;
            let message = group
                .leave_group(&provider, &account.signer())
                .map_err(mls)?
                .tls_serialize_detached()
                .map_err(mls)?;
            let mut c = get_conversation(tx, group_id)?;
            c.active = false;
            put_conversation(tx, &c)?;
            system_line(
                tx,
                group_id,
                &account.handle,
                "you left the conversation".into(),
            )?;
            Ok(message)
        })
    }

    /// Drops a conversation that could not be set up (e.g. nobody could be added): its MLS state
    /// is deleted and it is marked inactive, so that it is never picked for sending.
    pub fn abandon_conversation(&mut self, group_id: &[u8]) -> Result<()> {
        self.op(|op| {
            let (tx, provider) = (op.tx, op.provider());
            if let Ok(group) = op.groups.get(tx, group_id) {
                group.delete(provider.storage()).map_err(mls)?;
            }
            op.groups.forget(group_id);
            let mut c = get_conversation(tx, group_id)?;
            c.active = false;
            put_conversation(tx, &c)?;
            tx.delete(Namespace::Meta, &inflight_key(group_id))?;
            Ok(())
        })
    }

    /// All conversations, oldest first.
    pub fn conversations(&mut self) -> Result<Vec<Conversation>> {
        self.store.transaction(|tx| {
            let mut list = Vec::new();
            for v in tx.values(Namespace::Conversation)? {
                let c: Conversation =
                    serde_json::from_slice(&v).map_err(|e| CoreError::Malformed {
                        what: "conversation",
                        reason: e.to_string(),
                    })?;
                list.push(c);
            }
            list.sort_by_key(|c| c.created_at_ms);
            Ok(list)
        })
    }

    /// Finds a conversation by short id, group name, or (for 1:1) peer handle. An active 1:1
    /// conversation with that handle wins over a group of the same name.
    pub fn find_conversation(&mut self, target: &str) -> Result<Option<Conversation>> {
        let list = self.conversations()?;
        let pick = |pred: &dyn Fn(&Conversation) -> bool| {
            list.iter()
                .filter(|c| pred(c))
                .max_by_key(|c| (c.active, c.created_at_ms))
                .cloned()
        };
        Ok(pick(&|c| c.direct_peer.as_deref() == Some(target))
            .or_else(|| pick(&|c| c.direct_peer.is_none() && c.name == target))
            .or_else(|| pick(&|c| c.short_id() == target || hex::encode(&c.group_id) == target)))
    }

    /// The conversation's member devices as (handle, device id), from their certificates.
    pub fn members(&mut self, group_id: &[u8]) -> Result<Vec<(String, u64)>> {
        self.op(|op| Ok(member_devices(op.certs, op.groups.get(op.tx, group_id)?)))
    }
}

/// Encodes a staged commit (and its Welcome, if any) for the server and records it as in flight.
fn stage_outgoing(
    tx: &StoreTx<'_>,
    group_id: &[u8],
    epoch: u64,
    messages: (MlsMessageOut, Option<MlsMessageOut>),
    added: Vec<(String, u64)>,
    removed: Vec<(String, u64)>,
    announce_meta: bool,
) -> Result<OutgoingCommit> {
    let (commit, welcome) = messages;
    let outgoing = OutgoingCommit {
        group_id: group_id.to_vec(),
        epoch,
        commit: commit.tls_serialize_detached().map_err(mls)?,
        welcome: welcome
            .map(|w| w.tls_serialize_detached())
            .transpose()
            .map_err(mls)?
            .unwrap_or_default(),
        added,
        removed,
    };
    record_inflight(tx, &outgoing, announce_meta)?;
    Ok(outgoing)
}

fn record_inflight(tx: &StoreTx<'_>, outgoing: &OutgoingCommit, announce_meta: bool) -> Result<()> {
    let record = InFlightCommit {
        commit_hash: Sha256::digest(&outgoing.commit).to_vec(),
        outgoing: outgoing.clone(),
        announce_meta,
    };
    Ok(tx.put_json(Namespace::Meta, &inflight_key(&outgoing.group_id), &record)?)
}

/// Merges this device's pending commit and writes history lines. Returns whether the
/// conversation meta should be announced.
pub(crate) fn merge_own_commit(op: &mut Op<'_>, me: &str, group_id: &[u8]) -> Result<bool> {
    let tx = op.tx;
    let inflight: Option<InFlightCommit> = tx.get_json(Namespace::Meta, &inflight_key(group_id))?;
    let Some(inflight) = inflight else {
        return Ok(false);
    };
    let provider = op.provider();
    let group = op.groups.get(tx, group_id)?;
    group.merge_pending_commit(&provider).map_err(mls)?;
    tx.delete(Namespace::Meta, &inflight_key(group_id))?;
    let o = &inflight.outgoing;
    if !o.added.is_empty() {
        let names: Vec<_> = o.added.iter().map(|(h, d)| device_name(h, *d)).collect();
        system_line(tx, group_id, me, format!("{me} added {}", names.join(", ")))?;
    }
    if !o.removed.is_empty() {
        let names: Vec<_> = o.removed.iter().map(|(h, d)| device_name(h, *d)).collect();
        system_line(
            tx,
            group_id,
            me,
            format!("{me} removed {}", names.join(", ")),
        )?;
    }
    Ok(inflight.announce_meta)
}

pub(crate) fn inflight_hash(tx: &StoreTx<'_>, group_id: &[u8]) -> Result<Option<Vec<u8>>> {
    let inflight: Option<InFlightCommit> = tx.get_json(Namespace::Meta, &inflight_key(group_id))?;
    Ok(inflight.map(|f| f.commit_hash))
}
