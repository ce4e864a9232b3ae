//! Processing what the server delivers: Welcomes, commits and application messages. The effect
//! of an envelope and the record that it was processed are committed in one transaction, so a
//! crash can neither lose a message nor process one twice.
//!
//! Two kinds of copies reach a device after a crash, and both are dropped quietly (and
//! acknowledged):
//! - the same envelope again (same sequence number): the server crashed, or the connection
//!   dropped, after the device processed it but before its acknowledgment was committed;
//! - the same message bytes under a new sequence number: the server committed a message but
//!   crashed before answering, so the sender's outbox sent the identical bytes again. The
//!   digests of the last [`RING_DIGESTS`](crate::store::RING_DIGESTS) messages of each
//!   conversation are kept to recognise them (a copy could not be decrypted a second time
//!   anyway: MLS deletes used keys).

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use prost::Message as _;
use sha2::{Digest, Sha256};
use tacit_proto::v1::{self, EnvelopeKind};

use crate::conversation::{
    append_history, get_conversation, inflight_hash, join_config, member_devices, merge_own_commit,
    put_conversation, system_line,
};
use crate::credential::{certificate_of, check_leaf, CertCache, LeafCheck};
use crate::device::{pinned_in, Device};
use crate::error::{mls, CoreError, Result};
use crate::events::Event;
use crate::op::Op;
use crate::records::*;
use crate::store::{Namespace, StoreTx, DIGEST_BYTES};

/// Result of processing one envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed {
    /// Processed now; these things happened.
    Events(Vec<Event>),
    /// Already processed before (a redelivery after a crash or reconnect, or a copy the sender
    /// resent because the server's answer was lost); acknowledge it and show nothing.
    Duplicate,
}

/// Counts of the redelivered envelopes a device dropped (see [`Device::redeliveries_dropped`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Redeliveries {
    /// All of them: envelopes already processed (same sequence number) and resent copies.
    pub total: u64,
    /// Copies of a processed message under a new sequence number (a sender resent it because
    /// the server's answer was lost).
    pub resent_copies: u64,
}

/// The digest that identifies a message envelope's bytes; None for other kinds (commits and
/// Welcomes are never resent as new envelopes: the server refuses a second commit for an epoch).
fn message_digest(envelope: &v1::Envelope) -> Option<[u8; DIGEST_BYTES]> {
    (envelope.kind == EnvelopeKind::Message as i32)
        .then(|| Sha256::digest(&envelope.payload).into())
}

/// Whether a message with this digest was processed recently in the conversation.
fn seen_recently(tx: &StoreTx<'_>, group_id: &[u8], digest: &[u8; DIGEST_BYTES]) -> Result<bool> {
    Ok(tx.ring_contains(&recent_digests_key(group_id), digest)?)
}

/// Remembers a processed message's digest, forgetting the oldest beyond
/// [`RING_DIGESTS`](crate::store::RING_DIGESTS) (one small row written: see
/// [`StoreTx::ring_push`]).
///
/// A resend is always the sender's latest message in that conversation, so a copy arrives
/// after it with only the messages other members sent in the meantime in between. An older
/// copy still cannot show twice: MLS refuses to decrypt it again (its key was deleted when it
/// was first read), so it is refused with a line in the history instead of dropped quietly.
fn remember(tx: &StoreTx<'_>, group_id: &[u8], digest: &[u8; DIGEST_BYTES]) -> Result<()> {
    Ok(tx.ring_push(&recent_digests_key(group_id), digest)?)
}

/// Records a dropped redelivery: moves the queue position on and counts it.
fn drop_redelivery(tx: &StoreTx<'_>, seq: u64, resent_copy: bool) -> Result<Processed> {
    advance_last_seq(tx, seq)?;
    let dropped: u64 = tx
        .get_json(Namespace::Meta, META_REDELIVERIES)?
        .unwrap_or(0);
    tx.put_json(Namespace::Meta, META_REDELIVERIES, &(dropped + 1))?;
    if resent_copy {
        let copies: u64 = tx
            .get_json(Namespace::Meta, META_RESENT_COPIES)?
            .unwrap_or(0);
        tx.put_json(Namespace::Meta, META_RESENT_COPIES, &(copies + 1))?;
    }
    Ok(Processed::Duplicate)
}

/// Moves the last processed sequence number on to `seq` (never back).
fn advance_last_seq(tx: &StoreTx<'_>, seq: u64) -> Result<()> {
    let mut counters = tx.counters()?;
    if seq > counters.last_seq {
        counters.last_seq = seq;
        tx.set_counters(&counters)?;
    }
    Ok(())
}

fn short(group_id: &[u8]) -> String {
    hex::encode(group_id).chars().take(8).collect()
}

impl Device {
    /// The sequence number of the last envelope processed; the server may redeliver any
    /// envelope above it.
    pub fn last_seq(&mut self) -> Result<u64> {
        self.store.transaction(|tx| Ok(tx.counters()?.last_seq))
    }

    /// The redelivered envelopes this device recognised and dropped, over its lifetime.
    pub fn redeliveries_dropped(&mut self) -> Result<Redeliveries> {
        self.store.transaction(|tx| {
            Ok(Redeliveries {
                total: tx
                    .get_json(Namespace::Meta, META_REDELIVERIES)?
                    .unwrap_or(0),
                resent_copies: tx
                    .get_json(Namespace::Meta, META_RESENT_COPIES)?
                    .unwrap_or(0),
            })
        })
    }

    /// Records an envelope as handled without processing it (the driver could not satisfy what
    /// it needs, e.g. a sender's identity key changed) and reports why.
    pub fn refuse_envelope(&mut self, envelope: &v1::Envelope, reason: &str) -> Result<Event> {
        let seq = envelope.seq;
        self.store.transaction(|tx| -> Result<()> {
            advance_last_seq(tx, seq)?;
            // A resent copy of a refused message is dropped, not refused again.
            if let Some(digest) = message_digest(envelope) {
                remember(tx, &envelope.group_id, &digest)?;
            }
            if let Ok(c) = get_conversation(tx, &envelope.group_id) {
                system_line(
                    tx,
                    &c.group_id,
                    "tacit",
                    format!("refused an incoming message: {reason}"),
                )?;
            }
            Ok(())
        })?;
        Ok(Event::Refused {
            conversation: short(&envelope.group_id),
            reason: reason.to_owned(),
        })
    }

    /// Processes one envelope from the server. Returns [`CoreError::UnknownIdentities`] (and
    /// changes nothing) when leaves of unknown users must first be looked up and pinned. Any
    /// other problem with the envelope is reported as an [`Event::Refused`], and the envelope
    /// counts as processed so that the queue moves on.
    pub fn process_envelope(&mut self, envelope: &v1::Envelope) -> Result<Processed> {
        let seq = envelope.seq;
        self.account()?;
        let outcome = self.op(|op| -> Result<Processed> {
            let tx = op.tx;
            if seq <= tx.counters()?.last_seq {
                return drop_redelivery(tx, seq, false);
            }
            let digest = message_digest(envelope);
            if let Some(d) = &digest {
                if seen_recently(tx, &envelope.group_id, d)? {
                    return drop_redelivery(tx, seq, true);
                }
            }
            let events = match EnvelopeKind::try_from(envelope.kind) {
                Ok(EnvelopeKind::Welcome) => process_welcome(op, envelope)?,
                Ok(EnvelopeKind::Commit) => process_commit(op, envelope)?,
                Ok(EnvelopeKind::Message) => process_message(op, envelope)?,
                _ => {
                    return Err(CoreError::Malformed {
                        what: "envelope",
                        reason: "unknown kind".into(),
                    })
                }
            };
            if let Some(d) = &digest {
                remember(tx, &envelope.group_id, d)?;
            }
            advance_last_seq(tx, seq)?;
            Ok(Processed::Events(events))
        });
        match outcome {
            Ok(p) => Ok(p),
            Err(e @ CoreError::UnknownIdentities(_)) => Err(e),
            Err(e @ CoreError::Store(_)) => Err(e),
            Err(e) => {
                // Nothing of the failed attempt was kept; record that the envelope was handled so
                // that one bad message cannot block the queue.
                let event = self.refuse_envelope(envelope, &e.to_string())?;
                Ok(Processed::Events(vec![event]))
            }
        }
    }
}

/// Checks leaves; collects unknown handles (to look up) and fails on a bad certificate.
fn check_leaves<'c>(
    tx: &StoreTx<'_>,
    certs: &CertCache,
    leaves: impl Iterator<Item = (&'c Credential, &'c [u8])>,
) -> Result<()> {
    let mut unknown = Vec::new();
    // Pins read once per handle in this check (a Welcome names every member).
    let mut pins = std::collections::HashMap::new();
    let mut pinned = |h: &str| -> Result<_> {
        if let Some(p) = pins.get(h) {
            return Ok(*p);
        }
        let p = pinned_in(tx, h)?;
        pins.insert(h.to_owned(), p);
        Ok(p)
    };
    for (credential, key) in leaves {
        match check_leaf(certs, credential, key, &mut pinned)? {
            LeafCheck::Valid(_) => {}
            LeafCheck::UnknownIdentity(h) => {
                if !unknown.contains(&h) {
                    unknown.push(h)
                }
            }
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(CoreError::UnknownIdentities(unknown))
    }
}

fn process_welcome(op: &mut Op<'_>, envelope: &v1::Envelope) -> Result<Vec<Event>> {
    let (tx, provider, certs) = (op.tx, op.provider(), op.certs);
    let msg = MlsMessageIn::tls_deserialize_exact(envelope.payload.as_slice()).map_err(|e| {
        CoreError::Malformed {
            what: "Welcome",
            reason: e.to_string(),
        }
    })?;
    let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
        return Err(CoreError::Malformed {
            what: "Welcome",
            reason: "not a Welcome".into(),
        });
    };
    let staged = StagedWelcome::new_from_welcome(&provider, &join_config(op.config), welcome, None)
        .map_err(mls)?;
    let members: Vec<_> = staged.members().collect();
    check_leaves(
        tx,
        certs,
        members
            .iter()
            .map(|m| (&m.credential, m.signature_key.as_slice())),
    )?;
    let by = staged
        .welcome_sender()
        .ok()
        .and_then(|l| certificate_of(certs, l.credential()).ok())
        .map(|c| c.handle)
        .unwrap_or_else(|| "someone".into());
    let group = staged.into_group(&provider).map_err(mls)?;
    let group_id = group.group_id().as_slice().to_vec();
    let mut handles: Vec<String> = member_devices(certs, &group)
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    op.groups.insert(group);
    handles.sort();
    handles.dedup();
    let conversation = Conversation {
        group_id: group_id.clone(),
        name: format!("{by}'s conversation"),
        direct_peer: None,
        active: true,
        created_at_ms: now_ms(),
    };
    put_conversation(tx, &conversation)?;
    system_line(tx, &group_id, &by, format!("{by} added you"))?;
    Ok(vec![Event::Joined {
        conversation: conversation.short_id(),
        conversation_name: conversation.name,
        by,
        members: handles,
    }])
}

fn sender_name(certs: &CertCache, group: &MlsGroup, sender: &Sender) -> String {
    match sender {
        Sender::Member(i) => group
            .member_at(*i)
            .and_then(|m| certificate_of(certs, &m.credential).ok())
            .map(|c| c.handle)
            .unwrap_or_else(|| "unknown member".into()),
        _ => "someone outside the group".into(),
    }
}

fn process_commit(op: &mut Op<'_>, envelope: &v1::Envelope) -> Result<Vec<Event>> {
    let (tx, provider, certs, me) = (op.tx, op.provider(), op.certs, op.account()?);
    let group_id = envelope.group_id.as_slice();
    // Our own commit, echoed by the server: merge it if we have not already.
    let from_me = envelope
        .sender
        .as_ref()
        .is_some_and(|s| s.handle == me.handle && s.device_id == me.device_id);
    if from_me {
        if inflight_hash(tx, group_id)? == Some(Sha256::digest(&envelope.payload).to_vec()) {
            merge_own_commit(op, &me.handle, group_id)?;
        }
        return Ok(vec![]);
    }
    let mut conversation = get_conversation(tx, group_id)?;
    let group = op.groups.get(tx, group_id)?;
    let msg = MlsMessageIn::tls_deserialize_exact(envelope.payload.as_slice()).map_err(|e| {
        CoreError::Malformed {
            what: "commit",
            reason: e.to_string(),
        }
    })?;
    let protocol = msg.try_into_protocol_message().map_err(mls)?;
    if protocol.epoch() < group.epoch() {
        return Ok(vec![]); // an old commit we already moved past
    }
    // A commit from someone else wins over our own pending one.
    if group.pending_commit().is_some() {
        group
            .clear_pending_commit(provider.storage())
            .map_err(mls)?;
        tx.delete(Namespace::Meta, &crate::records::inflight_key(group_id))?;
    }
    let processed = group.process_message(&provider, protocol).map_err(mls)?;
    let by = sender_name(certs, group, processed.sender());
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err(CoreError::Malformed {
            what: "commit",
            reason: "not a commit".into(),
        });
    };
    // Every leaf the commit adds or changes must carry a valid certificate.
    let mut leaves: Vec<(Credential, Vec<u8>)> = Vec::new();
    for add in staged.add_proposals() {
        let leaf = add.add_proposal().key_package().leaf_node();
        leaves.push((
            leaf.credential().clone(),
            leaf.signature_key().as_slice().to_vec(),
        ));
    }
    for update in staged.update_proposals() {
        let leaf = update.update_proposal().leaf_node();
        leaves.push((
            leaf.credential().clone(),
            leaf.signature_key().as_slice().to_vec(),
        ));
    }
    if let Some(leaf) = staged.update_path_leaf_node() {
        leaves.push((
            leaf.credential().clone(),
            leaf.signature_key().as_slice().to_vec(),
        ));
    }
    check_leaves(tx, certs, leaves.iter().map(|(c, k)| (c, k.as_slice())))?;

    let added: Vec<String> = staged
        .add_proposals()
        .filter_map(|a| {
            certificate_of(
                certs,
                a.add_proposal().key_package().leaf_node().credential(),
            )
            .ok()
        })
        .map(|c| c.device_name())
        .collect();
    let removed: Vec<String> = staged
        .remove_proposals()
        .filter_map(|r| group.member_at(r.remove_proposal().removed()))
        .filter_map(|m| certificate_of(certs, &m.credential).ok())
        .map(|c| c.device_name())
        .collect();
    let self_removed = staged.self_removed();
    let path_update =
        staged.update_path_leaf_node().is_some() && added.is_empty() && removed.is_empty();
    group.merge_staged_commit(&provider, *staged).map_err(mls)?;

    let mut events = Vec::new();
    let c = conversation.short_id();
    if !added.is_empty() {
        system_line(
            tx,
            group_id,
            &by,
            format!("{by} added {}", added.join(", ")),
        )?;
        events.push(Event::MembersAdded {
            conversation: c.clone(),
            conversation_name: conversation.name.clone(),
            by: by.clone(),
            devices: added,
        });
    }
    if self_removed {
        conversation.active = false;
        put_conversation(tx, &conversation)?;
        system_line(tx, group_id, &by, format!("{by} removed you"))?;
        events.push(Event::RemovedFromConversation {
            conversation: c,
            conversation_name: conversation.name.clone(),
            by,
        });
    } else if !removed.is_empty() {
        system_line(
            tx,
            group_id,
            &by,
            format!("{by} removed {}", removed.join(", ")),
        )?;
        events.push(Event::MembersRemoved {
            conversation: c,
            conversation_name: conversation.name.clone(),
            by,
            devices: removed,
        });
    } else if path_update {
        events.push(Event::KeysUpdated {
            conversation: c,
            device: by,
        });
    }
    Ok(events)
}

fn process_message(op: &mut Op<'_>, envelope: &v1::Envelope) -> Result<Vec<Event>> {
    let (tx, provider, certs) = (op.tx, op.provider(), op.certs);
    let me = &op.account()?.handle;
    let group_id = envelope.group_id.as_slice();
    let mut conversation = get_conversation(tx, group_id)?;
    let group = op.groups.get(tx, group_id)?;
    let msg = MlsMessageIn::tls_deserialize_exact(envelope.payload.as_slice()).map_err(|e| {
        CoreError::Malformed {
            what: "message",
            reason: e.to_string(),
        }
    })?;
    let protocol = msg.try_into_protocol_message().map_err(mls)?;
    let processed = group.process_message(&provider, protocol).map_err(mls)?;
    let sender_cert = certificate_of(certs, processed.credential())?;
    match processed.into_content() {
        ProcessedMessageContent::ApplicationMessage(app) => {
            let content = v1::Content::decode(app.into_bytes().as_slice()).map_err(|e| {
                CoreError::Malformed {
                    what: "message content",
                    reason: e.to_string(),
                }
            })?;
            match content.body {
                Some(v1::content::Body::Text(text)) => {
                    let entry = HistoryEntry {
                        message_id: content.message_id,
                        sender: sender_cert.handle.clone(),
                        sender_device: sender_cert.device_id,
                        sent_at_ms: content.sent_at_ms,
                        text: text.clone(),
                        outgoing: false,
                        system: false,
                    };
                    append_history(tx, group_id, &entry)?;
                    Ok(vec![Event::Message {
                        conversation: conversation.short_id(),
                        conversation_name: conversation.name,
                        sender: sender_cert.handle,
                        sender_device: sender_cert.device_id,
                        text,
                        sent_at_ms: content.sent_at_ms,
                    }])
                }
                Some(v1::content::Body::Meta(meta)) => {
                    let peer = member_devices(certs, group)
                        .into_iter()
                        .map(|(h, _)| h)
                        .find(|h| h != me);
                    if meta.direct {
                        if let Some(peer) = peer {
                            conversation.name = peer.clone();
                            conversation.direct_peer = Some(peer);
                        }
                    } else if !meta.name.is_empty() && meta.name.len() <= 200 {
                        conversation.name = meta.name.clone();
                    }
                    put_conversation(tx, &conversation)?;
                    Ok(vec![Event::Named {
                        conversation: conversation.short_id(),
                        conversation_name: conversation.name,
                    }])
                }
                None => Ok(vec![]),
            }
        }
        ProcessedMessageContent::ProposalMessage(proposal) => {
            let self_remove = matches!(
                (proposal.proposal(), proposal.sender()),
                (Proposal::Remove(r), Sender::Member(s)) if r.removed() == *s
            );
            if !self_remove {
                return Err(CoreError::Invalid(
                    "only self-removal proposals are accepted".into(),
                ));
            }
            group
                .store_pending_proposal(provider.storage(), *proposal)
                .map_err(mls)?;
            system_line(
                tx,
                group_id,
                &sender_cert.handle,
                format!("{} asked to leave", sender_cert.handle),
            )?;
            Ok(vec![Event::LeaveRequested {
                conversation: conversation.short_id(),
                group_id: group_id.to_vec(),
                handle: sender_cert.handle,
            }])
        }
        _ => Err(CoreError::Invalid("unexpected message type".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::{LocalStore, StoreKey};
    use crate::{ClaimedUser, CoreConfig};
    use openmls::prelude::tls_codec::Serialize as _;

    fn device(handle: &str) -> Device {
        let store = LocalStore::open_in_memory(&StoreKey::generate()).unwrap();
        let mut d = Device::open(store, CoreConfig::default()).unwrap();
        d.create_account(handle, "ws://127.0.0.1:1/v1").unwrap();
        d
    }

    fn identity(d: &Device) -> Vec<u8> {
        d.registration().unwrap().identity_key.to_bytes().to_vec()
    }

    fn envelope(seq: u64, kind: EnvelopeKind, group_id: &[u8], payload: Vec<u8>) -> v1::Envelope {
        v1::Envelope {
            seq,
            kind: kind as i32,
            group_id: group_id.to_vec(),
            sender: Some(v1::DeviceAddress {
                handle: "alice".into(),
                device_id: 1,
            }),
            payload,
            server_time_ms: 0,
        }
    }

    /// A malicious member (alice, bypassing her own client's checks) commits a leaf whose
    /// certificate claims to be bob but is signed by another identity key. Carol refuses the
    /// commit, names the device, and stays at her epoch.
    #[test]
    fn commit_adding_a_forged_device_certificate_is_refused_by_name() {
        let mut alice = device("alice");
        let mut carol = device("carol");
        let bob = device("bob");
        let mut mallory = device("bob"); // same handle, different identity key
        carol.pin_identity("alice", &identity(&alice)).unwrap();
        carol.pin_identity("bob", &identity(&bob)).unwrap();

        let c = alice.create_conversation("g", None).unwrap();
        let gid = c.group_id.clone();
        let carol_kp = carol.new_key_packages(1).unwrap().remove(0);
        let reg = carol.registration().unwrap();
        let add = alice
            .prepare_add(
                &gid,
                &[ClaimedUser {
                    handle: "carol".into(),
                    identity_key: identity(&carol),
                    key_packages: vec![(reg.device_id, carol_kp)],
                }],
            )
            .unwrap();
        alice.commit_accepted(&gid).unwrap();
        let joined = carol
            .process_envelope(&envelope(1, EnvelopeKind::Welcome, &gid, add.welcome))
            .unwrap();
        assert!(matches!(joined, Processed::Events(ref e) if matches!(e[0], Event::Joined { .. })));
        let epoch_before = carol.epoch(&gid).unwrap();

        // Alice's malicious commit, made with raw OpenMLS.
        let forged_kp = mallory.new_key_packages(1).unwrap().remove(0);
        let commit = alice
            .op(|op| -> Result<Vec<u8>> {
                let (provider, account) = (op.provider(), op.account()?);
                let group = op.groups.get(op.tx, &gid)?;
                let kp = KeyPackageIn::tls_deserialize_exact(forged_kp.as_slice())
                    .map_err(mls)?
                    .validate(provider.crypto(), ProtocolVersion::Mls10)
                    .map_err(mls)?;
                let bundle = group
                    .commit_builder()
                    .propose_adds(vec![kp])
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
                group.merge_pending_commit(&provider).map_err(mls)?;
                bundle
                    .into_messages()
                    .0
                    .tls_serialize_detached()
                    .map_err(mls)
            })
            .unwrap();

        let result = carol
            .process_envelope(&envelope(2, EnvelopeKind::Commit, &gid, commit))
            .unwrap();
        let Processed::Events(events) = result else {
            panic!("expected events")
        };
        let mallory_id = mallory.device_id().unwrap();
        match &events[..] {
            [Event::Refused { reason, .. }] => {
                assert!(
                    reason.contains(&format!("bob/{mallory_id:016x}")),
                    "{reason}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            carol.epoch(&gid).unwrap(),
            epoch_before,
            "the forged commit was not applied"
        );
        let members = carol.members(&gid).unwrap();
        assert!(!members.iter().any(|(h, _)| h == "bob"));
        let _ = &mut mallory;
    }
}
