//! Which database pages one message writes, in steady state: alice and bob (file stores on
//! tmpfs) set up a conversation of two as the benchmark does (5 self-updates), exchange
//! `WARM_UP` messages (or the first argument), then for 40 more messages the frames each
//! operation appended to the write-ahead log are read back and named by the table (and page
//! kind) that owns their page, from SQLite's `dbstat`. A page is one 4 KiB WAL frame: this is
//! the count behind the COMMIT's cost, independent of the machine's load.
//!
//! ```sh
//! cargo run --release -p tacit-core --example store_pages [WARM_UP]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // a diagnostic that cannot set up must stop

use std::collections::BTreeMap;
use std::path::Path;

use tacit_core::store::{LocalStore, StoreKey};
use tacit_core::{ClaimedUser, CoreConfig, Device};
use tacit_proto::v1::{DeviceAddress, Envelope, EnvelopeKind};

/// Messages exchanged before counting, by default.
const WARM_UP: usize = 300;
/// Messages counted.
const MEASURED: usize = 40;
/// Bytes of a WAL frame's header, and of a page.
const FRAME_HEADER: usize = 24;
const PAGE: usize = 4096;

fn device(path: &Path, key: &StoreKey) -> Device {
    Device::open(LocalStore::open(path, key).unwrap(), CoreConfig::default()).unwrap()
}

/// Page numbers of the WAL's current frames (those whose salts match the WAL header's).
fn frames(wal: &Path) -> Vec<u32> {
    let bytes = std::fs::read(wal).unwrap();
    let salt = &bytes[16..24];
    let mut out = vec![];
    let mut off = 32;
    while off + FRAME_HEADER + PAGE <= bytes.len() && &bytes[off + 8..off + 16] == salt {
        out.push(u32::from_be_bytes(bytes[off..off + 4].try_into().unwrap()));
        off += FRAME_HEADER + PAGE;
    }
    out
}

/// The frames appended between two reads (none if the WAL was restarted in between).
fn appended(before: &[u32], after: &[u32]) -> Vec<u32> {
    after
        .get(before.len()..)
        .map(<[u32]>::to_vec)
        .unwrap_or_default()
}

/// Page number -> "table:page kind".
fn owners(db: &Path) -> BTreeMap<u32, String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, pageno, pagetype FROM dbstat")
        .unwrap();
    stmt.query_map([], |r| {
        let name: String = r.get(0)?;
        let kind: String = r.get(2)?;
        Ok((r.get::<_, u32>(1)?, format!("{name}:{kind}")))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn main() {
    let warm_up: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("WARM_UP: a number"))
        .unwrap_or(WARM_UP);
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let key = StoreKey::generate();
    let (alice_db, bob_db) = (dir.path().join("alice.db"), dir.path().join("bob.db"));
    let mut alice = device(&alice_db, &key);
    alice
        .create_account("alice", "ws://127.0.0.1:1/v1")
        .unwrap();
    let mut bob = device(&bob_db, &key);
    let reg = bob.create_account("bob", "ws://127.0.0.1:1/v1").unwrap();
    let kp = bob.new_key_packages(1).unwrap().remove(0);
    let gid = alice.create_conversation("c", None).unwrap().group_id;
    let bob_claim = ClaimedUser {
        handle: "bob".into(),
        identity_key: reg.identity_key.to_bytes().to_vec(),
        key_packages: vec![(reg.device_id, kp)],
    };
    let add = alice.prepare_add(&gid, &[bob_claim]).unwrap();
    alice.commit_accepted(&gid).unwrap();
    let alice_reg = alice.registration().unwrap();
    bob.pin_identity("alice", &alice_reg.identity_key.to_bytes())
        .unwrap();
    let mut seq = 0;
    let mut envelope = |kind: EnvelopeKind, payload: &[u8]| {
        seq += 1;
        Envelope {
            seq,
            kind: kind as i32,
            group_id: gid.clone(),
            sender: Some(DeviceAddress {
                handle: "alice".into(),
                device_id: alice_reg.device_id,
            }),
            payload: payload.to_vec(),
            server_time_ms: 0,
        }
    };
    bob.process_envelope(&envelope(EnvelopeKind::Welcome, &add.welcome))
        .unwrap();
    for _ in 0..CoreConfig::default().max_past_epochs {
        let update = alice.prepare_self_update(&gid).unwrap();
        alice.commit_accepted(&gid).unwrap();
        bob.process_envelope(&envelope(EnvelopeKind::Commit, &update.commit))
            .unwrap();
    }
    let text = "x".repeat(200);
    for _ in 0..warm_up {
        let m = alice.encrypt_text(&gid, &text).unwrap();
        alice.outbox_sent(m.outbox_id).unwrap();
        bob.process_envelope(&envelope(EnvelopeKind::Message, &m.message))
            .unwrap();
    }

    let (alice_wal, bob_wal) = (
        alice_db.with_extension("db-wal"),
        bob_db.with_extension("db-wal"),
    );
    // table:kind -> pages written by [seal, outbox_sent, open]; and operations counted.
    let mut pages = BTreeMap::<String, [usize; 3]>::new();
    let mut counted = [0usize; 3];
    for _ in 0..MEASURED {
        let a0 = frames(&alice_wal);
        let m = alice.encrypt_text(&gid, &text).unwrap();
        let a1 = frames(&alice_wal);
        alice.outbox_sent(m.outbox_id).unwrap();
        let a2 = frames(&alice_wal);
        let b0 = frames(&bob_wal);
        bob.process_envelope(&envelope(EnvelopeKind::Message, &m.message))
            .unwrap();
        let b1 = frames(&bob_wal);
        let (alice_pages, bob_pages) = (owners(&alice_db), owners(&bob_db));
        let ops = [
            (a1.len() >= a0.len(), appended(&a0, &a1), &alice_pages),
            (a2.len() >= a1.len(), appended(&a1, &a2), &alice_pages),
            (b1.len() >= b0.len(), appended(&b0, &b1), &bob_pages),
        ];
        for (i, (valid, written, names)) in ops.into_iter().enumerate() {
            if !valid {
                continue; // a checkpoint restarted the WAL in between
            }
            counted[i] += 1;
            for page in written {
                let name = names.get(&page).cloned().unwrap_or(format!("page {page}"));
                pages.entry(name).or_default()[i] += 1;
            }
        }
    }
    println!(
        "pages written per operation after {warm_up} messages \
         (seal / outbox_sent / open; {counted:?} operations counted)"
    );
    let mut totals = [0usize; 3];
    for (name, n) in &pages {
        let per = |i: usize| n[i] as f64 / counted[i].max(1) as f64;
        println!("{name:<24} {:>6.2} {:>6.2} {:>6.2}", per(0), per(1), per(2));
        for i in 0..3 {
            totals[i] += n[i];
        }
    }
    let per = |i: usize| totals[i] as f64 / counted[i].max(1) as f64;
    println!(
        "{:<24} {:>6.2} {:>6.2} {:>6.2}",
        "all",
        per(0),
        per(1),
        per(2)
    );
}
