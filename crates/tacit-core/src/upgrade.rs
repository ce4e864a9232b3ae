//! Moving the core's records from where store schema 3 and older kept them. The store migrates
//! its own tables when it is opened; what only the core can read (its records in `kv`) is moved
//! here, when a [`Device`](crate::Device) opens the store, in the same transaction as the account
//! is read.

use crate::error::{CoreError, Result};
use crate::records::*;
use crate::store::{Namespace, StoreTx};

/// Moves what store schema 3 and older kept in `kv` (the outbox items, the next outbox id and
/// the last sequence number processed) to where schema 4 keeps them ([`StoreTx::counters`],
/// [`StoreTx::outbox_put`]); nothing to do once done (the old rows are deleted).
pub(crate) fn counters_and_outbox(tx: &StoreTx<'_>) -> Result<()> {
    let next: Option<u64> = tx.get_json(Namespace::Meta, META_OUTBOX_NEXT)?;
    let last: Option<u64> = tx.get_json(Namespace::Meta, META_LAST_SEQ)?;
    if next.is_none() && last.is_none() {
        return Ok(());
    }
    let mut counters = tx.counters()?;
    counters.outbox_next = counters.outbox_next.max(next.unwrap_or(1));
    counters.last_seq = counters.last_seq.max(last.unwrap_or(0));
    for v in tx.values(Namespace::Outbox)? {
        let item = OutboxItem::from_stored(&v).map_err(|reason| CoreError::Malformed {
            what: "outbox item",
            reason,
        })?;
        let stored = item
            .to_stored()
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        tx.outbox_put(item.id, &stored)?;
        tx.delete(Namespace::Outbox, &item.id.to_be_bytes())?;
        counters.outbox_next = counters.outbox_next.max(item.id.saturating_add(1));
    }
    tx.set_counters(&counters)?;
    tx.delete(Namespace::Meta, META_OUTBOX_NEXT)?;
    tx.delete(Namespace::Meta, META_LAST_SEQ)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::Path;

    use tacit_proto::v1::EnvelopeKind;

    use super::*;
    use crate::store::{LocalStore, StoreError, StoreKey};
    use crate::testing::{alice_and_bob_in_a_conversation, deliver, device, store_version, texts};
    use crate::Event;

    /// Rewrites a profile as store schema 3 wrote it: counters and outbox items in `kv`,
    /// seen-markers in `kv`, history lines in JSON, no schema-4 tables.
    fn back_to_schema_3(path: &Path, key: &StoreKey, group_id: &[u8]) {
        let mut store = LocalStore::open(path, key).unwrap();
        store
            .transaction(|tx| -> std::result::Result<(), StoreError> {
                let counters = tx.counters()?;
                tx.put_json(Namespace::Meta, META_OUTBOX_NEXT, &counters.outbox_next)?;
                tx.put_json(Namespace::Meta, META_LAST_SEQ, &counters.last_seq)?;
                for (id, v) in tx.outbox_items()? {
                    let item = OutboxItem::from_stored(&v).unwrap();
                    let json = serde_json::to_vec(&item).unwrap();
                    tx.put(Namespace::Outbox, &id.to_be_bytes(), &json)?;
                }
                let list = history_list(group_id);
                let lines = tx.log_read(&list, 0, 1000)?;
                for (id, _) in &lines {
                    tx.log_delete(&list, *id)?;
                }
                for (_, v) in lines {
                    let entry = HistoryEntry::from_stored(&v).unwrap();
                    tx.put(
                        Namespace::Meta,
                        &seen_key(group_id, &entry.message_id),
                        &[1],
                    )?;
                    tx.log_append(&list, &serde_json::to_vec(&entry).unwrap())?;
                }
                Ok(())
            })
            .unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("DROP TABLE outbox; DROP TABLE seen; PRAGMA user_version = 3;")
            .unwrap();
    }

    /// A profile of store schema 3 opens and goes on: its outbox (ids never reused), the last
    /// sequence number, its history, and its seen-markers (still in `kv`) are all kept.
    #[test]
    fn a_schema_3_profile_keeps_its_outbox_sequence_and_markers() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate();
        let (alice_path, bob_path) = (dir.path().join("alice.db"), dir.path().join("bob.db"));
        let (mut alice, mut bob, gid) =
            alice_and_bob_in_a_conversation(&alice_path, &bob_path, &key);
        let first = alice.encrypt_text(&gid, "before").unwrap();
        alice.outbox_sent(first.outbox_id).unwrap();
        let unsent = alice.encrypt_text(&gid, "still in the outbox").unwrap();
        let events = deliver(&mut bob, 7, EnvelopeKind::Message, &gid, &first.message);
        assert_eq!(texts(&events), ["before"]);
        let old_history = bob.history(&gid).unwrap();
        // The conversation's meta message (never sent here) and the unsent text.
        let old_outbox = alice.outbox().unwrap();
        assert_eq!(old_outbox.len(), 2);
        drop((alice, bob));
        back_to_schema_3(&alice_path, &key, &gid);
        back_to_schema_3(&bob_path, &key, &gid);

        let mut alice = device(&alice_path, &key);
        let mut bob = device(&bob_path, &key);
        for path in [&alice_path, &bob_path] {
            assert_eq!(store_version(path), 4, "migrated");
            let conn = rusqlite::Connection::open(path).unwrap();
            let old_rows: i64 = conn
                .query_row("SELECT COUNT(*) FROM kv WHERE ns = 4", [], |r| r.get(0))
                .unwrap();
            assert_eq!(old_rows, 0, "outbox items moved out of kv");
        }
        let outbox = alice.outbox().unwrap();
        assert_eq!(outbox, old_outbox);
        let last = outbox.last().unwrap();
        assert_eq!(
            (last.id, &last.message),
            (unsent.outbox_id, &unsent.message)
        );
        let next = alice.encrypt_text(&gid, "after the upgrade").unwrap();
        assert!(next.outbox_id > unsent.outbox_id, "an outbox id was reused");
        assert_eq!(bob.last_seq().unwrap(), 7);
        assert_eq!(bob.history(&gid).unwrap(), old_history);
        // A redelivery of an envelope processed before the upgrade is dropped.
        let again = bob
            .process_envelope(&crate::testing::envelope(
                7,
                EnvelopeKind::Message,
                &gid,
                &first.message,
            ))
            .unwrap();
        assert_eq!(again, crate::Processed::Duplicate);
        // The markers written by schema 3 are still found.
        let entry = old_history.last().unwrap().clone();
        let marked = bob
            .store
            .transaction(|tx| tx.marker_contains(&seen_key(&gid, &entry.message_id)))
            .unwrap();
        assert!(marked, "a schema-3 seen-marker was lost");
        let events = deliver(&mut bob, 8, EnvelopeKind::Message, &gid, &unsent.message);
        assert_eq!(texts(&events), ["still in the outbox"]);
        let events = deliver(&mut bob, 9, EnvelopeKind::Message, &gid, &next.message);
        assert!(matches!(events[..], [Event::Message { .. }]), "{events:?}");
        assert_eq!(bob.history(&gid).unwrap().len(), old_history.len() + 2);
        drop(bob);
        // And once more after a restart: nothing left to move, everything still there.
        let mut bob = device(&bob_path, &key);
        assert_eq!(bob.last_seq().unwrap(), 9);
        assert_eq!(bob.history(&gid).unwrap().len(), old_history.len() + 2);
    }
}
