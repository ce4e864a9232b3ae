//! The `Store` operations in PostgreSQL's SQL, each one transaction (see the module above for the
//! locking rules they follow).

use tacit_proto::v1::EnvelopeKind;

use super::{PgStore, Tx};
use crate::store::*;

const DEVICE_BY_ADDR: &str =
    "SELECT id, device_key FROM devices WHERE handle = $1 AND device_id = $2 AND removed = 0";

fn device_by_addr(
    tx: &mut Tx<'_>,
    handle: &str,
    device_id: u64,
) -> Result<Option<DeviceRecord>, StoreError> {
    Ok(tx
        .query_opt(DEVICE_BY_ADDR, &[&handle, &(device_id as i64)])?
        .map(|r| DeviceRecord {
            key: r.get(0),
            handle: handle.to_owned(),
            device_id,
            device_key: r.get(1),
        }))
}

fn is_member(tx: &mut Tx<'_>, group_id: &[u8], device: DeviceKey) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM group_members WHERE group_id = $1 AND device = $2",
            &[&group_id, &device],
        )?
        .is_some())
}

fn members(tx: &mut Tx<'_>, group_id: &[u8]) -> Result<Vec<DeviceKey>, StoreError> {
    Ok(tx
        .query(
            "SELECT device FROM group_members WHERE group_id = $1 ORDER BY device",
            &[&group_id],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

struct NewPayload<'a> {
    kind: EnvelopeKind,
    group_id: &'a [u8],
    sender: &'a DeviceRecord,
    payload: &'a [u8],
    ttl_ms: u64,
}

/// Stores one payload and queues it for `recipients`: their device rows are locked in id order,
/// each gets its next sequence number, and a full queue refuses the whole send.
fn enqueue(
    tx: &mut Tx<'_>,
    p: &NewPayload<'_>,
    recipients: &[DeviceKey],
    max_queue: usize,
) -> Result<(), StoreError> {
    if recipients.is_empty() {
        return Ok(());
    }
    let now = now_ms() as i64;
    let expires = now.saturating_add(p.ttl_ms.min(i64::MAX as u64) as i64);
    let payload_id: i64 = tx
        .query_one(
            "INSERT INTO payloads (kind, group_id, sender_handle, sender_device, payload, enqueued_ms, expires_ms, refs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &(p.kind as i32),
                &p.group_id,
                &p.sender.handle,
                &(p.sender.device_id as i64),
                &p.payload,
                &now,
                &expires,
                &(recipients.len() as i64),
            ],
        )?
        .get(0);
    // A device removed while this transaction waited for its row lock is skipped (the lock
    // wait re-checks `removed`), and the payload counts only the queues it really went to.
    let rows = tx.query(
        "UPDATE devices SET next_seq = next_seq + 1, queue_len = queue_len + 1
         WHERE id IN (SELECT id FROM devices WHERE id = ANY($1) AND removed = 0 ORDER BY id FOR UPDATE)
         RETURNING id, next_seq - 1, queue_len, handle",
        &[&recipients],
    )?;
    if rows.is_empty() {
        tx.execute("DELETE FROM payloads WHERE id = $1", &[&payload_id])?;
        return Ok(());
    }
    if rows.len() != recipients.len() {
        tx.execute(
            "UPDATE payloads SET refs = $2 WHERE id = $1",
            &[&payload_id, &(rows.len() as i64)],
        )?;
    }
    let mut devices = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    for row in rows {
        let len: i64 = row.get(2);
        if len < 0 || len as u64 > max_queue as u64 {
            let handle: String = row.get(3);
            return Err(StoreError::Limit(format!(
                "a device of {handle} has {max_queue} undelivered messages waiting; try again once it has caught up"
            )));
        }
        devices.push(row.get::<_, i64>(0));
        seqs.push(row.get::<_, i64>(1));
    }
    tx.execute(
        "INSERT INTO queue (device, seq, payload, expires_ms)
         SELECT d, s, $3, $4 FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS t (d, s)",
        &[&devices, &seqs, &payload_id, &expires],
    )?;
    Ok(())
}

/// Removes queue rows of `device` with seq <= `up_to` and releases their payloads. The device
/// row is locked first, so two acknowledgments of one queue cannot release a payload twice.
fn dequeue(tx: &mut Tx<'_>, device: DeviceKey, up_to: u64) -> Result<(), StoreError> {
    tx.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", &[&device])?;
    let payloads: Vec<i64> = tx
        .query(
            "DELETE FROM queue WHERE device = $1 AND seq <= $2 RETURNING payload",
            &[&device, &(up_to as i64)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if payloads.is_empty() {
        return Ok(());
    }
    tx.execute(
        "UPDATE payloads SET refs = refs - 1 WHERE id = ANY($1)",
        &[&payloads],
    )?;
    tx.execute(
        "UPDATE devices SET queue_len = queue_len - $2 WHERE id = $1",
        &[&device, &(payloads.len() as i64)],
    )?;
    tx.execute(
        "DELETE FROM payloads WHERE id = ANY($1) AND refs <= 0",
        &[&payloads],
    )?;
    Ok(())
}

fn insert_device(
    tx: &mut Tx<'_>,
    handle: &str,
    device_id: u64,
    device_key: &[u8],
    certificate: &[u8],
) -> Result<Option<DeviceRecord>, StoreError> {
    let row = tx.query_opt(
        "INSERT INTO devices (handle, device_id, device_key, certificate, created_ms) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (handle, device_id) DO NOTHING RETURNING id",
        &[&handle, &(device_id as i64), &device_key, &certificate, &(now_ms() as i64)],
    )?;
    Ok(row.map(|r| DeviceRecord {
        key: r.get(0),
        handle: handle.to_owned(),
        device_id,
        device_key: device_key.to_vec(),
    }))
}

impl Store for PgStore {
    fn create_account(
        &self,
        handle: &str,
        identity_key: &[u8],
        device_id: u64,
        device_key: &[u8],
        certificate: &[u8],
    ) -> Result<DeviceRecord, StoreError> {
        self.tx(|tx| {
            let inserted = tx.execute(
                "INSERT INTO users (handle, identity_key, created_ms) VALUES ($1, $2, $3) ON CONFLICT (handle) DO NOTHING",
                &[&handle, &identity_key, &(now_ms() as i64)],
            )?;
            if inserted == 0 {
                return Err(StoreError::HandleTaken(handle.to_owned()));
            }
            insert_device(tx, handle, device_id, device_key, certificate)?
                .ok_or_else(|| StoreError::DeviceExists(format!("{handle}/{device_id:016x}")))
        })
    }

    fn add_device(
        &self,
        handle: &str,
        device_id: u64,
        device_key: &[u8],
        certificate: &[u8],
    ) -> Result<DeviceRecord, StoreError> {
        self.tx(|tx| {
            if tx
                .query_opt("SELECT 1 FROM users WHERE handle = $1", &[&handle])?
                .is_none()
            {
                return Err(StoreError::UnknownUser(handle.to_owned()));
            }
            insert_device(tx, handle, device_id, device_key, certificate)?
                .ok_or_else(|| StoreError::DeviceExists(format!("{handle}/{device_id:016x}")))
        })
    }

    fn device(&self, handle: &str, device_id: u64) -> Result<Option<DeviceRecord>, StoreError> {
        let row = self.read(|s| s.query_opt(DEVICE_BY_ADDR, &[&handle, &(device_id as i64)]))?;
        Ok(row.map(|r| DeviceRecord {
            key: r.get(0),
            handle: handle.to_owned(),
            device_id,
            device_key: r.get(1),
        }))
    }

    fn remove_device(&self, handle: &str, device_id: u64) -> Result<DeviceKey, StoreError> {
        self.tx(|tx| {
            // The device row lock is the one `enqueue` takes: a send that read the group's
            // members before this removal waits here, then skips the removed device.
            let key: DeviceKey = tx
                .query_opt(
                    "SELECT id FROM devices WHERE handle = $1 AND device_id = $2 AND removed = 0 FOR UPDATE",
                    &[&handle, &(device_id as i64)],
                )?
                .ok_or_else(|| StoreError::UnknownDevice(handle.to_owned()))?
                .get(0);
            dequeue(tx, key, i64::MAX as u64)?;
            tx.execute("DELETE FROM key_packages WHERE device = $1", &[&key])?;
            tx.execute("DELETE FROM group_members WHERE device = $1", &[&key])?;
            tx.execute("UPDATE devices SET removed = 1 WHERE id = $1", &[&key])?;
            Ok(key)
        })
    }

    fn device_removed(&self, device: DeviceKey) -> Result<bool, StoreError> {
        let row =
            self.read(|s| s.query_opt("SELECT removed FROM devices WHERE id = $1", &[&device]))?;
        Ok(row.is_none_or(|r| r.get::<_, i16>(0) != 0))
    }

    fn user(&self, handle: &str) -> Result<Option<UserRecord>, StoreError> {
        self.tx(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT identity_key FROM users WHERE handle = $1",
                &[&handle],
            )?
            else {
                return Ok(None);
            };
            let certificates = tx
                .query(
                    "SELECT certificate FROM devices WHERE handle = $1 AND removed = 0 ORDER BY id",
                    &[&handle],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(Some(UserRecord {
                identity_key: row.get(0),
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
        self.tx(|tx| {
            tx.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", &[&device])?;
            let have: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM key_packages WHERE device = $1 AND last_resort = 0",
                    &[&device],
                )?
                .get(0);
            if (have as u64).saturating_add(one_time.len() as u64) > max_stock as u64 {
                return Err(StoreError::Limit(format!(
                    "this device would hold more than {max_stock} KeyPackages; upload fewer"
                )));
            }
            const INSERT: &str =
                "INSERT INTO key_packages (device, last_resort, key_package) VALUES ($1, $2, $3)";
            for kp in one_time {
                tx.execute(INSERT, &[&device, &0i16, kp])?;
            }
            if let Some(kp) = last_resort {
                tx.execute(
                    "DELETE FROM key_packages WHERE device = $1 AND last_resort = 1",
                    &[&device],
                )?;
                tx.execute(INSERT, &[&device, &1i16, &kp])?;
            }
            Ok(())
        })
    }

    fn key_package_stock(&self, device: DeviceKey) -> Result<(u64, bool), StoreError> {
        let row = self.read(|s| s.query_one(
            "SELECT COALESCE(SUM(1 - last_resort), 0)::BIGINT, COALESCE(SUM(last_resort), 0)::BIGINT FROM key_packages WHERE device = $1",
            &[&device],
        ))?;
        let (one_time, last): (i64, i64) = (row.get(0), row.get(1));
        Ok((one_time as u64, last > 0))
    }

    fn claim_key_packages(
        &self,
        handle: &str,
        exclude: &[u64],
    ) -> Result<(Vec<u8>, Vec<Claimed>), StoreError> {
        self.tx(|tx| {
            let identity_key: Vec<u8> = tx
                .query_opt(
                    "SELECT identity_key FROM users WHERE handle = $1",
                    &[&handle],
                )?
                .ok_or_else(|| StoreError::UnknownUser(handle.to_owned()))?
                .get(0);
            // Locking the user's device rows (in id order) makes concurrent claims for this user
            // take turns, so each sees the one-time KeyPackages the previous one left.
            let devices: Vec<(i64, i64)> = tx
                .query(
                    "SELECT id, device_id FROM devices WHERE handle = $1 AND removed = 0 ORDER BY id FOR UPDATE",
                    &[&handle],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut claimed = Vec::new();
            for (key, device_id) in devices {
                let device_id = device_id as u64;
                if exclude.contains(&device_id) {
                    continue;
                }
                let row = tx.query_opt(
                    "SELECT id, key_package, last_resort FROM key_packages WHERE device = $1 ORDER BY last_resort, id LIMIT 1",
                    &[&key],
                )?;
                let Some(row) = row else { continue };
                let (id, key_package, last_resort): (i64, Vec<u8>, i16) =
                    (row.get(0), row.get(1), row.get(2));
                if last_resort == 0 {
                    tx.execute("DELETE FROM key_packages WHERE id = $1", &[&id])?;
                }
                claimed.push(Claimed {
                    device_id,
                    key_package,
                    last_resort: last_resort != 0,
                });
            }
            Ok((identity_key, claimed))
        })
    }

    fn create_group(&self, group_id: &[u8], creator: DeviceKey) -> Result<(), StoreError> {
        self.tx(|tx| {
            let inserted = tx.execute(
                "INSERT INTO groups (group_id, epoch, created_ms) VALUES ($1, 0, $2) ON CONFLICT (group_id) DO NOTHING",
                &[&group_id, &(now_ms() as i64)],
            )?;
            if inserted == 0 {
                return Err(StoreError::GroupExists);
            }
            tx.execute(
                "INSERT INTO group_members (group_id, device) VALUES ($1, $2)",
                &[&group_id, &creator],
            )?;
            Ok(())
        })
    }

    fn commit(
        &self,
        r: &CommitRequest<'_>,
        max_queue: usize,
        ttl_ms: u64,
    ) -> Result<(u64, Vec<DeviceKey>), StoreError> {
        self.tx(|tx| {
            // The group row lock orders the group's commits: a second committer waits here and
            // then reads the epoch the first one left.
            let epoch: i64 = tx
                .query_opt(
                    "SELECT epoch FROM groups WHERE group_id = $1 FOR UPDATE",
                    &[&r.group_id],
                )?
                .ok_or(StoreError::UnknownGroup)?
                .get(0);
            if !is_member(tx, r.group_id, r.sender.key)? {
                return Err(StoreError::NotAMember);
            }
            if epoch as u64 != r.epoch {
                return Err(StoreError::EpochMovedOn(epoch as u64));
            }
            tx.execute(
                "UPDATE groups SET epoch = epoch + 1 WHERE group_id = $1",
                &[&r.group_id],
            )?;
            // As in SQLite: the commit goes to every current member, the sender and the removed
            // ones included.
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
                    tx.execute(
                        "DELETE FROM group_members WHERE group_id = $1 AND device = $2",
                        &[&r.group_id, &d.key],
                    )?;
                }
            }
            let mut added = Vec::with_capacity(r.added.len());
            for (handle, device_id) in r.added {
                let d = device_by_addr(tx, handle, *device_id)?.ok_or_else(|| {
                    StoreError::UnknownUser(format!("{handle}/{device_id:016x}"))
                })?;
                tx.execute(
                    "INSERT INTO group_members (group_id, device) VALUES ($1, $2) ON CONFLICT (group_id, device) DO NOTHING",
                    &[&r.group_id, &d.key],
                )?;
                added.push(d.key);
            }
            added.sort_unstable();
            added.dedup();
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
        self.tx(|tx| {
            // One read in the common case: the members, the sender among them.
            let members = members(tx, group_id)?;
            if !members.contains(&sender.key) {
                let exists = tx
                    .query_opt("SELECT 1 FROM groups WHERE group_id = $1", &[&group_id])?
                    .is_some();
                return Err(if exists {
                    StoreError::NotAMember
                } else {
                    StoreError::UnknownGroup
                });
            }
            let recipients: Vec<DeviceKey> =
                members.into_iter().filter(|d| *d != sender.key).collect();
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
            )?;
            Ok(recipients)
        })
    }

    fn fetch(
        &self,
        device: DeviceKey,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let rows = self.read(|s| s.query(
            "SELECT q.seq, p.kind, p.group_id, p.sender_handle, p.sender_device, p.payload, p.enqueued_ms
             FROM queue q JOIN payloads p ON p.id = q.payload
             WHERE q.device = $1 AND q.seq > $2 ORDER BY q.seq LIMIT $3",
            &[&device, &(after as i64), &(limit as i64)],
        ))?;
        Ok(rows
            .iter()
            .map(|r| Queued {
                seq: r.get::<_, i64>(0) as u64,
                kind: r.get(1),
                group_id: r.get(2),
                sender_handle: r.get(3),
                sender_device: r.get::<_, i64>(4) as u64,
                payload: r.get(5),
                enqueued_ms: r.get::<_, i64>(6) as u64,
            })
            .collect())
    }

    fn ack(&self, device: DeviceKey, up_to: u64) -> Result<(), StoreError> {
        self.tx(|tx| dequeue(tx, device, up_to))
    }

    fn group_state(
        &self,
        group_id: &[u8],
        requester: DeviceKey,
    ) -> Result<(u64, Vec<(String, u64)>), StoreError> {
        self.tx(|tx| {
            let epoch: i64 = tx
                .query_opt("SELECT epoch FROM groups WHERE group_id = $1", &[&group_id])?
                .ok_or(StoreError::UnknownGroup)?
                .get(0);
            if !is_member(tx, group_id, requester)? {
                return Err(StoreError::NotAMember);
            }
            let members = tx
                .query(
                    "SELECT d.handle, d.device_id FROM group_members m JOIN devices d ON d.id = m.device
                     WHERE m.group_id = $1 ORDER BY d.id",
                    &[&group_id],
                )?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect();
            Ok((epoch as u64, members))
        })
    }

    fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let expired: Vec<(i64, i64)> = self
            .read(|s| s.query(
                "SELECT device, MAX(seq) FROM queue WHERE expires_ms < $1 GROUP BY device ORDER BY device",
                &[&(now as i64)],
            ))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // One short transaction per device, so a large purge does not hold every queue's lock.
        for (device, seq) in &expired {
            self.tx(|tx| dequeue(tx, *device, *seq as u64))?;
        }
        Ok(expired.len())
    }

    fn close(&self) -> Result<(), StoreError> {
        let pool = self
            .pool
            .write()
            .map_err(|_| StoreError::Db("pool lock poisoned".into()))?
            .take();
        drop(pool);
        Ok(())
    }
}
