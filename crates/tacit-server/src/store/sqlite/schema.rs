//! The SQLite schema, versioned with `PRAGMA user_version`. Plain tables and indexes only; the
//! PostgreSQL backend has the layout of version 3 with its own column types.
//!
//! A payload for several devices (a group message, a commit) is stored once and referenced by
//! each recipient's queue rows (`refs` counts them), so a message to a large group is not copied
//! per device; a payload for one device (every 1:1 message) is stored in its queue row (version
//! 4), so sending and acknowledging it each write one row besides the device's counters.

use crate::store::migrate::Migration;

/// The SQLite schema's steps; the version reached is kept in `PRAGMA user_version`.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "accounts, devices, KeyPackages, groups, payloads and per-device queues",
        sql: SCHEMA_V1,
    },
    Migration {
        version: 2,
        name: "index queue rows by payload",
        sql: SCHEMA_V2,
    },
    Migration {
        version: 3,
        name: "drop the index of payloads by reference count",
        sql: SCHEMA_V3,
    },
    Migration {
        version: 4,
        name: "queue rows clustered by device, with a one-recipient payload inline",
        sql: SCHEMA_V4,
    },
];

const SCHEMA_V1: &str = "
CREATE TABLE users (
    handle TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE devices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    handle TEXT NOT NULL REFERENCES users(handle),
    device_id BIGINT NOT NULL,
    device_key BLOB NOT NULL,
    certificate BLOB NOT NULL,
    next_seq BIGINT NOT NULL DEFAULT 1,
    queue_len BIGINT NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    UNIQUE (handle, device_id)
);
CREATE TABLE key_packages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device INTEGER NOT NULL REFERENCES devices(id),
    last_resort INTEGER NOT NULL,
    key_package BLOB NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (device, last_resort, id);
CREATE TABLE groups (
    group_id BLOB PRIMARY KEY,
    epoch BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE group_members (
    group_id BLOB NOT NULL REFERENCES groups(group_id),
    device INTEGER NOT NULL REFERENCES devices(id),
    PRIMARY KEY (group_id, device)
);
CREATE TABLE payloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    group_id BLOB NOT NULL,
    sender_handle TEXT NOT NULL,
    sender_device BIGINT NOT NULL,
    payload BLOB NOT NULL,
    enqueued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    refs BIGINT NOT NULL
);
CREATE INDEX payloads_unreferenced ON payloads (refs);
CREATE TABLE queue (
    device INTEGER NOT NULL REFERENCES devices(id),
    seq BIGINT NOT NULL,
    payload INTEGER NOT NULL REFERENCES payloads(id),
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX queue_by_expiry ON queue (expires_ms);
";

/// `queue.payload` references `payloads(id)` and foreign keys are enforced, so deleting a payload
/// (once its last queue row is acknowledged) checks that no queue row still points at it: without
/// this index that check scanned the whole queue for every payload deleted, and acknowledgments
/// grew costlier with the backlog.
const SCHEMA_V2: &str = "
CREATE INDEX queue_by_payload ON queue (payload);
";

/// Acknowledgments now delete each payload their queue rows let go of by id, so nothing looks
/// payloads up by reference count any more; the index cost two index writes per message (its
/// entry moved when the count went down).
const SCHEMA_V3: &str = "
DROP INDEX payloads_unreferenced;
";

/// The queue is clustered by (device, seq) (`WITHOUT ROWID`: one B-tree instead of a table and
/// its primary-key index), and a payload with a single recipient lives in its queue row
/// (`payload` NULL, the envelope's fields set) instead of a `payloads` row of its own; the index
/// by payload covers shared payloads only. The index by expiry is gone: queue rows expire in seq
/// order per device (one TTL, stamped when queued), so the purge looks at each waiting queue's
/// head instead — one index write less per message queued and per message acknowledged.
const SCHEMA_V4: &str = "
CREATE TABLE queue_v4 (
    device INTEGER NOT NULL REFERENCES devices(id),
    seq BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    payload INTEGER REFERENCES payloads(id),
    kind INTEGER,
    group_id BLOB,
    sender_handle TEXT,
    sender_device BIGINT,
    enqueued_ms BIGINT,
    body BLOB,
    PRIMARY KEY (device, seq),
    CHECK ((payload IS NULL) = (body IS NOT NULL))
) WITHOUT ROWID;
INSERT INTO queue_v4 (device, seq, expires_ms, payload)
    SELECT device, seq, expires_ms, payload FROM queue;
DROP TABLE queue;
ALTER TABLE queue_v4 RENAME TO queue;
CREATE INDEX queue_by_payload ON queue (payload) WHERE payload IS NOT NULL;
";
