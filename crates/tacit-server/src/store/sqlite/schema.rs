//! The SQLite schema, versioned with `PRAGMA user_version`. Plain tables and indexes only; the
//! PostgreSQL backend has the same layout with its own column types.
//!
//! Payloads are stored once per send and referenced by each recipient's queue rows (`refs`
//! counts them), so a message to a large group is not copied per device.

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
