//! The `Store` operations in SQLite's SQL. Each one runs on the writer's connection in a
//! savepoint of its own (see `writer.rs`) or, for reads, in a read transaction; the arguments are
//! copied in, since the operation runs on another thread.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use tacit_proto::v1::EnvelopeKind;

use super::writer::Isolation;
use super::SqliteStore;
use crate::store::*;

/// A commit request with owned fields, to hand to the writer thread.
struct OwnedCommit {
    group_id: Vec<u8>,
    sender: DeviceRecord,
    epoch: u64,
    commit: Vec<u8>,
    welcome: Vec<u8>,
    added: Vec<(String, u64)>,
    removed: Vec<(String, u64)>,
}

impl OwnedCommit {
    fn from(r: &CommitRequest<'_>) -> Self {
        OwnedCommit {
            group_id: r.group_id.to_vec(),
            sender: r.sender.clone(),
            epoch: r.epoch,
            commit: r.commit.to_vec(),
            welcome: r.welcome.to_vec(),
            added: r.added.to_vec(),
            removed: r.removed.to_vec(),
        }
    }

    fn request(&self) -> CommitRequest<'_> {
        CommitRequest {
            group_id: &self.group_id,
            sender: &self.sender,
            epoch: self.epoch,
            commit: &self.commit,
            welcome: &self.welcome,
            added: &self.added,
            removed: &self.removed,
        }
    }
}

fn device_by_addr(
    tx: &Connection,
    handle: &str,
    device_id: u64,
) -> Result<Option<DeviceRecord>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT id, device_key FROM devices WHERE handle = ?1 AND device_id = ?2 AND removed = 0")?
        .query_row(params![handle, device_id as i64], |r| {
            Ok(DeviceRecord { key: r.get(0)?, handle: handle.to_owned(), device_id, device_key: r.get(1)? })
        })
        .optional()?)
}

fn user_exists(tx: &Connection, handle: &str) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM users WHERE handle = ?1")?
        .query_row(params![handle], |_| Ok(()))
        .optional()?
        .is_some())
}

fn is_member(tx: &Connection, group_id: &[u8], device: DeviceKey) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM group_members WHERE group_id = ?1 AND device = ?2")?
        .query_row(params![group_id, device], |_| Ok(()))
        .optional()?
        .is_some())
}

fn members(tx: &Connection, group_id: &[u8]) -> Result<Vec<DeviceKey>, StoreError> {
    let mut stmt =
        tx.prepare_cached("SELECT device FROM group_members WHERE group_id = ?1 ORDER BY device")?;
    let rows = stmt.query_map(params![group_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

struct NewPayload<'a> {
    kind: EnvelopeKind,
    group_id: &'a [u8],
    sender: &'a DeviceRecord,
    payload: &'a [u8],
    ttl_ms: u64,
}

/// Stores one payload and queues it for `recipients`, each with its next sequence number;
/// returns where it went.
fn enqueue(
    tx: &Connection,
    p: &NewPayload<'_>,
    recipients: &[DeviceKey],
    max_queue: usize,
) -> Result<Enqueued, StoreError> {
    let now = now_ms();
    let mut queued = Enqueued {
        recipients: Vec::with_capacity(recipients.len()),
        enqueued_ms: now,
    };
    if recipients.is_empty() {
        return Ok(queued);
    }
    // Every refusal comes before the first write (pipelined sends run without a savepoint): a
    // full queue is found by the first recipient's guarded update, before which nothing was
    // written, or for several recipients by looking at all of them first.
    if recipients.len() > 1 {
        let mut queue_len =
            tx.prepare_cached("SELECT queue_len, handle FROM devices WHERE id = ?1")?;
        for device in recipients {
            let (len, handle): (i64, String) =
                queue_len.query_row(params![device], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if len < 0 || len as u64 >= max_queue as u64 {
                return Err(queue_full(&handle, max_queue));
            }
        }
    }
    let mut bump = tx.prepare_cached(
        "UPDATE devices SET next_seq = next_seq + 1, queue_len = queue_len + 1 WHERE id = ?1 AND queue_len >= 0 AND queue_len < ?2 RETURNING next_seq - 1",
    )?;
    for device in recipients {
        let seq: Option<i64> = bump
            .query_row(params![device, max_queue as i64], |r| r.get(0))
            .optional()?;
        let Some(seq) = seq else {
            let handle: String = tx
                .prepare_cached("SELECT handle FROM devices WHERE id = ?1")?
                .query_row(params![device], |r| r.get(0))?;
            return Err(queue_full(&handle, max_queue));
        };
        queued.recipients.push((*device, seq as u64));
    }
    let expires = now.saturating_add(p.ttl_ms) as i64;
    if let [(device, seq)] = queued.recipients[..] {
        // One recipient: the payload goes in its queue row.
        tx.prepare_cached(
            "INSERT INTO queue (device, seq, expires_ms, kind, group_id, sender_handle, sender_device, enqueued_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![device, seq as i64, expires, p.kind as i32, p.group_id, p.sender.handle, p.sender.device_id as i64, now as i64, p.payload])?;
        return Ok(queued);
    }
    tx.prepare_cached(
        "INSERT INTO payloads (kind, group_id, sender_handle, sender_device, payload, enqueued_ms, expires_ms, refs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![p.kind as i32, p.group_id, p.sender.handle, p.sender.device_id as i64, p.payload, now as i64, expires, recipients.len() as i64])?;
    let payload_id = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached(
        "INSERT INTO queue (device, seq, expires_ms, payload) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (device, seq) in &queued.recipients {
        insert.execute(params![device, *seq as i64, expires, payload_id])?;
    }
    Ok(queued)
}

fn queue_full(handle: &str, max_queue: usize) -> StoreError {
    StoreError::Limit(format!(
        "a device of {handle} has {max_queue} undelivered messages waiting; try again once it has caught up"
    ))
}

/// Removes queue rows of `device` with seq <= `up_to` and releases the shared payloads they
/// referenced, deleting each one its last queue row let go of. (A payload in its queue row goes
/// with the row.)
fn dequeue(tx: &Connection, device: DeviceKey, up_to: u64) -> Result<(), StoreError> {
    let mut removed = 0i64;
    let mut shared = Vec::new();
    {
        let mut delete = tx.prepare_cached(
            "DELETE FROM queue WHERE device = ?1 AND seq <= ?2 RETURNING payload",
        )?;
        let mut rows = delete.query(params![device, up_to as i64])?;
        while let Some(row) = rows.next()? {
            removed += 1;
            if let Some(payload) = row.get::<_, Option<i64>>(0)? {
                shared.push(payload);
            }
        }
    }
    if removed == 0 {
        return Ok(());
    }
    tx.prepare_cached("UPDATE devices SET queue_len = queue_len - ?2 WHERE id = ?1")?
        .execute(params![device, removed])?;
    // A shared payload this queue row was the last to hold is deleted in one statement; one
    // other devices still hold loses a reference.
    let mut last_reference =
        tx.prepare_cached("DELETE FROM payloads WHERE id = ?1 AND refs <= 1")?;
    let mut release = tx.prepare_cached("UPDATE payloads SET refs = refs - 1 WHERE id = ?1")?;
    for payload in shared {
        if last_reference.execute(params![payload])? == 0 {
            release.execute(params![payload])?;
        }
    }
    Ok(())
}

fn insert_device(
    tx: &Connection,
    handle: &str,
    device_id: u64,
    device_key: &[u8],
    certificate: &[u8],
) -> Result<DeviceRecord, StoreError> {
    tx.prepare_cached("INSERT INTO devices (handle, device_id, device_key, certificate, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![handle, device_id as i64, device_key, certificate, now_ms() as i64])?;
    Ok(DeviceRecord {
        key: tx.last_insert_rowid(),
        handle: handle.to_owned(),
        device_id,
        device_key: device_key.to_vec(),
    })
}

/// Queues an application message for every other member of the group.
fn send_message(
    tx: &Connection,
    group_id: &[u8],
    sender: &DeviceRecord,
    message: &[u8],
    max_queue: usize,
    ttl_ms: u64,
) -> Result<Enqueued, StoreError> {
    // One read for the usual case (a member sending); the refusals tell apart a group that
    // does not exist from one the sender is not in.
    let mut recipients = members(tx, group_id)?;
    let Some(me) = recipients.iter().position(|d| *d == sender.key) else {
        let exists = tx
            .prepare_cached("SELECT 1 FROM groups WHERE group_id = ?1")?
            .query_row(params![group_id], |_| Ok(()))
            .optional()?;
        return Err(match exists {
            Some(()) => StoreError::NotAMember,
            None => StoreError::UnknownGroup,
        });
    };
    recipients.remove(me);
    enqueue(
        tx,
        &NewPayload {
            kind: EnvelopeKind::Message,
            group_id,
            sender,
            payload: message,
            ttl_ms,
        },
        &recipients,
        max_queue,
    )
}

impl PipelinedWrites for SqliteStore {
    fn submit_send_message(
        &self,
        message: Arc<Posted>,
        max_queue: usize,
        ttl_ms: u64,
        after_commit: AfterCommit,
    ) -> Submitted<Vec<DeviceKey>> {
        self.submit(
            move |tx| {
                let m = &*message;
                send_message(tx, &m.group_id, &m.sender, &m.payload, max_queue, ttl_ms)
            },
            // Unknown group, not a member, a full queue: all checked before the first write.
            Isolation::FailsBeforeWriting,
            after_commit,
        )
    }

    fn submit_ack(&self, device: DeviceKey, up_to: u64) -> Submitted<()> {
        // Nothing to refuse: only a database error can fail it.
        self.submit(
            move |tx| dequeue(tx, device, up_to),
            Isolation::FailsBeforeWriting,
            |()| (),
        )
    }
}

impl Store for SqliteStore {
    fn create_account(
        &self,
        handle: &str,
        identity_key: &[u8],
        device_id: u64,
        device_key: &[u8],
        certificate: &[u8],
    ) -> Result<DeviceRecord, StoreError> {
        let (handle, identity_key, device_key, certificate) = (
            handle.to_owned(),
            identity_key.to_vec(),
            device_key.to_vec(),
            certificate.to_vec(),
        );
        self.tx(move |tx| {
            let (handle, identity_key, device_key, certificate) = (
                handle.as_str(),
                identity_key.as_slice(),
                device_key.as_slice(),
                certificate.as_slice(),
            );
            if user_exists(tx, handle)? {
                return Err(StoreError::HandleTaken(handle.to_owned()));
            }
            tx.prepare_cached(
                "INSERT INTO users (handle, identity_key, created_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![handle, identity_key, now_ms() as i64])?;
            insert_device(tx, handle, device_id, device_key, certificate)
        })
    }

    fn add_device(
        &self,
        handle: &str,
        device_id: u64,
        device_key: &[u8],
        certificate: &[u8],
    ) -> Result<DeviceRecord, StoreError> {
        let (handle, device_key, certificate) =
            (handle.to_owned(), device_key.to_vec(), certificate.to_vec());
        self.tx(move |tx| {
            let (handle, device_key, certificate) = (
                handle.as_str(),
                device_key.as_slice(),
                certificate.as_slice(),
            );
            if !user_exists(tx, handle)? {
                return Err(StoreError::UnknownUser(handle.to_owned()));
            }
            let taken = tx
                .prepare_cached("SELECT 1 FROM devices WHERE handle = ?1 AND device_id = ?2")?
                .query_row(params![handle, device_id as i64], |_| Ok(()))
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::DeviceExists(format!(
                    "{handle}/{device_id:016x}"
                )));
            }
            insert_device(tx, handle, device_id, device_key, certificate)
        })
    }

    fn device(&self, handle: &str, device_id: u64) -> Result<Option<DeviceRecord>, StoreError> {
        let handle = handle.to_owned();
        self.read(move |tx| device_by_addr(tx, &handle, device_id))
    }

    fn remove_device(&self, handle: &str, device_id: u64) -> Result<DeviceKey, StoreError> {
        let handle = handle.to_owned();
        self.tx(move |tx| {
            let device = device_by_addr(tx, &handle, device_id)?
                .ok_or_else(|| StoreError::UnknownDevice(handle.clone()))?;
            dequeue(tx, device.key, i64::MAX as u64)?;
            tx.prepare_cached("DELETE FROM key_packages WHERE device = ?1")?
                .execute(params![device.key])?;
            tx.prepare_cached("DELETE FROM group_members WHERE device = ?1")?
                .execute(params![device.key])?;
            tx.prepare_cached("UPDATE devices SET removed = 1 WHERE id = ?1")?
                .execute(params![device.key])?;
            Ok(device.key)
        })
    }

    fn device_removed(&self, device: DeviceKey) -> Result<bool, StoreError> {
        self.read(move |tx| {
            let removed: Option<i64> = tx
                .prepare_cached("SELECT removed FROM devices WHERE id = ?1")?
                .query_row(params![device], |r| r.get(0))
                .optional()?;
            Ok(removed.is_none_or(|r| r != 0))
        })
    }

    fn user(&self, handle: &str) -> Result<Option<UserRecord>, StoreError> {
        let handle = handle.to_owned();
        self.read(move |tx| {
            let handle = handle.as_str();
            let identity_key: Option<Vec<u8>> = tx
                .prepare_cached("SELECT identity_key FROM users WHERE handle = ?1")?
                .query_row(params![handle], |r| r.get(0))
                .optional()?;
            let Some(identity_key) = identity_key else {
                return Ok(None);
            };
            let mut stmt = tx.prepare_cached(
                "SELECT certificate FROM devices WHERE handle = ?1 AND removed = 0 ORDER BY id",
            )?;
            let certificates = stmt
                .query_map(params![handle], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(Some(UserRecord {
                identity_key,
                certificates,
            }))
        })
    }

    fn upload_key_packages(
        &self,
        device: DeviceKey,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_stock: usize,
    ) -> Result<(), StoreError> {
        let (one_time, last_resort) = (one_time.to_vec(), last_resort.map(<[u8]>::to_vec));
        self.tx(move |tx| {
            let (one_time, last_resort) = (one_time.as_slice(), last_resort.as_deref());
            let have: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM key_packages WHERE device = ?1 AND last_resort = 0",
                )?
                .query_row(params![device], |r| r.get(0))?;
            if (have as u64).saturating_add(one_time.len() as u64) > max_stock as u64 {
                return Err(StoreError::Limit(format!(
                    "this device would hold more than {max_stock} KeyPackages; upload fewer"
                )));
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO key_packages (device, last_resort, key_package) VALUES (?1, ?2, ?3)",
            )?;
            for kp in one_time {
                insert.execute(params![device, 0, kp])?;
            }
            if let Some(kp) = last_resort {
                tx.prepare_cached(
                    "DELETE FROM key_packages WHERE device = ?1 AND last_resort = 1",
                )?
                .execute(params![device])?;
                insert.execute(params![device, 1, kp])?;
            }
            Ok(())
        })
    }

    fn key_package_stock(&self, device: DeviceKey) -> Result<(u64, bool), StoreError> {
        self.read(move |tx| {
            let (one_time, last): (i64, i64) = tx
                .prepare_cached("SELECT COALESCE(SUM(1 - last_resort), 0), COALESCE(SUM(last_resort), 0) FROM key_packages WHERE device = ?1")?
                .query_row(params![device], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((one_time as u64, last > 0))
        })
    }

    fn claim_key_packages(
        &self,
        handle: &str,
        exclude: &[u64],
    ) -> Result<(Vec<u8>, Vec<Claimed>), StoreError> {
        let (handle, exclude) = (handle.to_owned(), exclude.to_vec());
        self.tx(move |tx| {
            let (handle, exclude) = (handle.as_str(), exclude.as_slice());
            let identity_key: Vec<u8> = tx
                .prepare_cached("SELECT identity_key FROM users WHERE handle = ?1")?
                .query_row(params![handle], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::UnknownUser(handle.to_owned()))?;
            let devices: Vec<(i64, i64)> = tx
                .prepare_cached("SELECT id, device_id FROM devices WHERE handle = ?1 AND removed = 0 ORDER BY id")?
                .query_map(params![handle], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut claimed = Vec::new();
            for (key, device_id) in devices {
                let device_id = device_id as u64;
                if exclude.contains(&device_id) {
                    continue;
                }
                // The oldest one-time KeyPackage, taken and deleted in this transaction; else the
                // last-resort one, which stays.
                let row: Option<(i64, Vec<u8>, i64)> = tx
                    .prepare_cached("SELECT id, key_package, last_resort FROM key_packages WHERE device = ?1 ORDER BY last_resort, id LIMIT 1")?
                    .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((id, key_package, last_resort)) = row else { continue };
                if last_resort == 0 {
                    tx.prepare_cached("DELETE FROM key_packages WHERE id = ?1")?.execute(params![id])?;
                }
                claimed.push(Claimed { device_id, key_package, last_resort: last_resort != 0 });
            }
            Ok((identity_key, claimed))
        })
    }

    fn create_group(&self, group_id: &[u8], creator: DeviceKey) -> Result<(), StoreError> {
        let group_id = group_id.to_vec();
        self.tx(move |tx| {
            let group_id = group_id.as_slice();
            let exists = tx
                .prepare_cached("SELECT 1 FROM groups WHERE group_id = ?1")?
                .query_row(params![group_id], |_| Ok(()))
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::GroupExists);
            }
            tx.prepare_cached(
                "INSERT INTO groups (group_id, epoch, created_ms) VALUES (?1, 0, ?2)",
            )?
            .execute(params![group_id, now_ms() as i64])?;
            tx.prepare_cached("INSERT INTO group_members (group_id, device) VALUES (?1, ?2)")?
                .execute(params![group_id, creator])?;
            Ok(())
        })
    }

    fn commit(
        &self,
        r: &CommitRequest<'_>,
        max_queue: usize,
        ttl_ms: u64,
    ) -> Result<(u64, Vec<DeviceKey>), StoreError> {
        let owned = OwnedCommit::from(r);
        self.tx(move |tx| {
            let r = &owned.request();
            let epoch: i64 = tx
                .prepare_cached("SELECT epoch FROM groups WHERE group_id = ?1")?
                .query_row(params![r.group_id], |row| row.get(0))
                .optional()?
                .ok_or(StoreError::UnknownGroup)?;
            if !is_member(tx, r.group_id, r.sender.key)? {
                return Err(StoreError::NotAMember);
            }
            if epoch as u64 != r.epoch {
                return Err(StoreError::EpochMovedOn(epoch as u64));
            }
            let changed = tx
                .prepare_cached(
                    "UPDATE groups SET epoch = epoch + 1 WHERE group_id = ?1 AND epoch = ?2",
                )?
                .execute(params![r.group_id, epoch])?;
            if changed != 1 {
                return Err(StoreError::EpochMovedOn(epoch as u64 + 1));
            }
            // The commit goes to every current member, the sender included (so a sender that
            // crashed before seeing the acceptance still merges it) and the removed ones (so they
            // learn of it).
            let current = members(tx, r.group_id)?;
            enqueue(
                tx,
                &NewPayload {
                    kind: EnvelopeKind::Commit,
                    group_id: r.group_id,
                    sender: r.sender,
                    payload: r.commit,
                    ttl_ms,
                },
                &current,
                max_queue,
            )?;
            for (handle, device_id) in r.removed {
                if let Some(d) = device_by_addr(tx, handle, *device_id)? {
                    tx.prepare_cached(
                        "DELETE FROM group_members WHERE group_id = ?1 AND device = ?2",
                    )?
                    .execute(params![r.group_id, d.key])?;
                }
            }
            let mut added = Vec::with_capacity(r.added.len());
            for (handle, device_id) in r.added {
                let d = device_by_addr(tx, handle, *device_id)?
                    .ok_or_else(|| StoreError::UnknownUser(format!("{handle}/{device_id:016x}")))?;
                tx.prepare_cached(
                    "INSERT INTO group_members (group_id, device) VALUES (?1, ?2) ON CONFLICT (group_id, device) DO NOTHING",
                )?
                .execute(params![r.group_id, d.key])?;
                added.push(d.key);
            }
            enqueue(
                tx,
                &NewPayload {
                    kind: EnvelopeKind::Welcome,
                    group_id: r.group_id,
                    sender: r.sender,
                    payload: r.welcome,
                    ttl_ms,
                },
                &added,
                max_queue,
            )?;
            let mut notify = current;
            notify.extend(added);
            Ok((epoch as u64 + 1, notify))
        })
    }

    fn send_message(
        &self,
        group_id: &[u8],
        sender: &DeviceRecord,
        message: &[u8],
        max_queue: usize,
        ttl_ms: u64,
    ) -> Result<Vec<DeviceKey>, StoreError> {
        let (group_id, sender, message) = (group_id.to_vec(), sender.clone(), message.to_vec());
        self.tx(move |tx| {
            let queued = send_message(tx, &group_id, &sender, &message, max_queue, ttl_ms)?;
            Ok(queued.recipients.into_iter().map(|(d, _)| d).collect())
        })
    }

    fn fetch(
        &self,
        device: DeviceKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        self.read(move |tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT q.seq, COALESCE(q.kind, p.kind), COALESCE(q.group_id, p.group_id),
                        COALESCE(q.sender_handle, p.sender_handle),
                        COALESCE(q.sender_device, p.sender_device), COALESCE(q.body, p.payload),
                        COALESCE(q.enqueued_ms, p.enqueued_ms)
                 FROM queue q LEFT JOIN payloads p ON p.id = q.payload
                 WHERE q.device = ?1 AND q.seq > ?2 ORDER BY q.seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![device, after as i64, limit as i64], |r| {
                Ok(Queued {
                    seq: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    group_id: r.get(2)?,
                    sender_handle: r.get(3)?,
                    sender_device: r.get::<_, i64>(4)? as u64,
                    payload: r.get(5)?,
                    enqueued_ms: r.get::<_, i64>(6)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn ack(&self, device: DeviceKey, up_to: u64) -> Result<(), StoreError> {
        self.tx(move |tx| dequeue(tx, device, up_to))
    }

    fn pipelined(&self) -> Option<&dyn PipelinedWrites> {
        Some(self)
    }

    fn group_state(
        &self,
        group_id: &[u8],
        requester: DeviceKey,
    ) -> Result<(u64, Vec<(String, u64)>), StoreError> {
        let group_id = group_id.to_vec();
        self.read(move |tx| {
            let group_id = group_id.as_slice();
            let epoch: i64 = tx
                .prepare_cached("SELECT epoch FROM groups WHERE group_id = ?1")?
                .query_row(params![group_id], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::UnknownGroup)?;
            if !is_member(tx, group_id, requester)? {
                return Err(StoreError::NotAMember);
            }
            let mut stmt = tx.prepare_cached(
                "SELECT d.handle, d.device_id FROM group_members m JOIN devices d ON d.id = m.device WHERE m.group_id = ?1 ORDER BY d.id",
            )?;
            let rows = stmt.query_map(params![group_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok((epoch as u64, rows.collect::<Result<_, _>>()?))
        })
    }

    fn close(&self) -> Result<(), StoreError> {
        self.shut_down()
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.tx(move |tx| {
            // Queue rows expire in seq order (one TTL, stamped when queued), so only a queue
            // whose head has expired has anything to purge: one seek per waiting queue, and a
            // look through the rows of those queues only.
            let expired: Vec<(i64, i64)> = tx
                .prepare_cached(
                    "SELECT d.id, (SELECT MAX(q.seq) FROM queue q WHERE q.device = d.id AND q.expires_ms < ?1)
                     FROM devices d
                     WHERE d.queue_len > 0
                       AND (SELECT q.expires_ms FROM queue q WHERE q.device = d.id ORDER BY q.seq LIMIT 1) < ?1",
                )?
                .query_map(params![now as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let n = expired.len();
            for (device, seq) in expired {
                dequeue(tx, device, seq as u64)?;
            }
            Ok(n)
        })
    }
}
