//! Application messages: encrypting (with the history line and the outbox item in the same
//! transaction), the outbox, history, and a dry-run decryption.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use prost::Message as _;
use tacit_proto::v1;

use crate::conversation::{append_new_history, get_conversation, OutgoingMessage};
use crate::device::Device;
use crate::error::{mls, CoreError, Result};
use crate::records::*;

impl Device {
    /// Encrypts a text message, records it in history and puts it in the outbox, all at once.
    pub fn encrypt_text(&mut self, group_id: &[u8], text: &str) -> Result<OutgoingMessage> {
        let body = v1::content::Body::Text(text.to_owned());
        self.encrypt_content(group_id, body, Some(text))
    }

    pub(crate) fn encrypt_meta(&mut self, group_id: &[u8]) -> Result<OutgoingMessage> {
        let conversation = self
            .store
            .transaction(|tx| get_conversation(tx, group_id))?;
        let body = v1::content::Body::Meta(v1::ConversationMeta {
            name: if conversation.direct_peer.is_some() {
                String::new()
            } else {
                conversation.name
            },
            direct: conversation.direct_peer.is_some(),
        });
        self.encrypt_content(group_id, body, None)
    }

    fn encrypt_content(
        &mut self,
        group_id: &[u8],
        body: v1::content::Body,
        history_text: Option<&str>,
    ) -> Result<OutgoingMessage> {
        self.op(|op| {
            let (tx, provider, account) = (op.tx, op.provider(), op.account()?);
            let conversation = get_conversation(tx, group_id)?;
            if !conversation.active {
                return Err(CoreError::NotAMember(conversation.name));
            }
            let group = op.groups.get(tx, group_id)?;
            let message_id = rand::random::<[u8; 16]>().to_vec();
            let sent_at_ms = now_ms();
            let content = v1::Content {
                message_id: message_id.clone(),
                sent_at_ms,
                body: Some(body),
            };
            let message = group
                .create_message(&provider, &account.signer(), &content.encode_to_vec())
                .map_err(mls)?
                .tls_serialize_detached()
                .map_err(mls)?;
            if let Some(text) = history_text {
                append_new_history(
                    tx,
                    group_id,
                    &HistoryEntry {
                        message_id,
                        sender: account.handle.clone(),
                        sender_device: account.device_id,
                        sent_at_ms,
                        text: text.to_owned(),
                        outgoing: true,
                        system: false,
                    },
                )?;
            }
            let mut counters = tx.counters()?;
            let id = counters.outbox_next;
            counters.outbox_next += 1;
            tx.set_counters(&counters)?;
            let item = OutboxItem {
                id,
                group_id: group_id.to_vec(),
                message: message.clone(),
            };
            let stored = item
                .to_stored()
                .map_err(|e| CoreError::Invalid(e.to_string()))?;
            tx.outbox_put(id, &stored)?;
            Ok(OutgoingMessage {
                outbox_id: id,
                group_id: group_id.to_vec(),
                message,
            })
        })
    }

    /// Messages encrypted but not yet accepted by the server, oldest first.
    pub fn outbox(&mut self) -> Result<Vec<OutboxItem>> {
        self.store.transaction(|tx| {
            let mut items = Vec::new();
            for (_, v) in tx.outbox_items()? {
                let item = OutboxItem::from_stored(&v).map_err(|reason| CoreError::Malformed {
                    what: "outbox item",
                    reason,
                })?;
                items.push(item);
            }
            items.sort_by_key(|i| i.id);
            Ok(items)
        })
    }

    /// The server accepted an outbox item: forget it.
    pub fn outbox_sent(&mut self, outbox_id: u64) -> Result<()> {
        self.store
            .transaction(|tx| Ok(tx.outbox_delete(outbox_id)?))
    }

    /// The conversation's history, oldest first.
    pub fn history(&mut self, group_id: &[u8]) -> Result<Vec<HistoryEntry>> {
        self.store.transaction(|tx| {
            let mut out = Vec::new();
            let mut after = 0;
            loop {
                let rows = tx.log_read(&history_list(group_id), after, 500)?;
                if rows.is_empty() {
                    break;
                }
                for (id, v) in rows {
                    after = id;
                    out.push(HistoryEntry::from_stored(&v).map_err(|reason| {
                        CoreError::Malformed {
                            what: "history entry",
                            reason,
                        }
                    })?);
                }
            }
            Ok(out)
        })
    }

    /// Tries to decrypt an MLS message for a group without keeping any effect (used to show that
    /// a removed member cannot read later messages). Returns the text if it could.
    pub fn probe_decrypt(&mut self, group_id: &[u8], message: &[u8]) -> Result<String> {
        // A dry run: whatever processing changes is rolled back, and the group is dropped from
        // the cache.
        self.dry_op(|op| -> Result<String> {
            let provider = op.provider();
            let group = op.groups.get(op.tx, group_id)?;
            let msg = MlsMessageIn::tls_deserialize_exact(message).map_err(mls)?;
            let protocol = msg.try_into_protocol_message().map_err(mls)?;
            let processed = group.process_message(&provider, protocol).map_err(mls)?;
            match processed.into_content() {
                ProcessedMessageContent::ApplicationMessage(a) => {
                    let content = v1::Content::decode(a.into_bytes().as_slice()).map_err(mls)?;
                    match content.body {
                        Some(v1::content::Body::Text(t)) => Ok(t),
                        _ => Ok(String::new()),
                    }
                }
                _ => Ok(String::new()),
            }
        })
    }
}
