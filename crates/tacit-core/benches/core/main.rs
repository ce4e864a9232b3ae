//! Benchmarks of the client core (`tacit_core::Device`) against the same operations done
//! directly with OpenMLS, side by side in one run, so that Tacit's overhead is a printed ratio.
//!
//! Both sides use MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 and the group parameters of
//! `CoreConfig::default()` (ratchet tree in Welcomes, 5 past epochs, ciphertext only). The
//! OpenMLS side is `OpenMlsRustCrypto` (in-memory storage) with basic credentials and keeps its
//! `MlsGroup` in memory between operations; the Tacit side is a `Device` on its encrypted SQLite
//! store, which also keeps the groups it has loaded in memory, and writes every change to its
//! store in the operation's transaction. Every group is built in one
//! commit, then given `max_past_epochs` self-updates so that past-epoch state is at its
//! steady-state size; none of that set-up is measured. Each benchmark starts from its own copy of
//! that state.
//!
//! Tacit's stores live in a tmpfs directory (`/dev/shm`), where fsync costs nothing, so that the
//! comparison is about computation; the `*-durable` benchmarks repeat seal and open with the store
//! on disk (`TACIT_BENCH_DISK_DIR`, default the system temp directory), where every transaction is
//! fsynced (WAL, synchronous=FULL).
//!
//! ```sh
//! cargo bench -p tacit-core --bench core                        # groups of 2, 100 and 1,000
//! TACIT_BENCH_SIZES=2,100 cargo bench -p tacit-core --bench core # only the sizes named
//! ```
//!
//! After Criterion's own report the run prints a summary (mean time per operation, Tacit /
//! OpenMLS ratio), the encoded sizes of messages, commits and Welcomes, and what one message
//! writes to each side's storage (rows, bytes of values, and for Tacit the bytes handed to
//! write(2), at each group size).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot set up must stop

mod observe;
mod raw_side;
mod report;
mod tacit_side;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use tacit_core::Event;
use tacit_proto::v1::EnvelopeKind;

use raw_side::{RawCopy, RawGroup};
use report::{Recorder, Row, Side, SAMPLES};
use tacit_side::{expect_event, TacitCopy, TacitGroup};

/// Size of the application message sealed and opened, in bytes.
const MESSAGE_BYTES: usize = 200;
/// Group sizes of a default run (set-up of the 1,000-member groups takes a few seconds; the
/// whole run about four minutes on two cores).
const DEFAULT_SIZES: &[usize] = &[2, 100, 1_000];
/// Criterion's warm-up per benchmark.
const WARM_UP_MS: u64 = 500;
/// Criterion's measurement target per benchmark (set-up of each iteration comes on top).
const MEASUREMENT_MS: u64 = 2_000;

/// The summary's lines.
const ROWS: &[Row] = &[
    row("seal 200-byte message", "seal", "seal"),
    row("open 200-byte message", "open", "open"),
    row("add one member: create commit", "add-commit", "add-commit"),
    row(
        "add one member: process commit",
        "add-process",
        "add-process",
    ),
    row(
        "remove one member: create commit",
        "remove-commit",
        "remove-commit",
    ),
    row(
        "remove one member: process commit",
        "remove-process",
        "remove-process",
    ),
    row(
        "self-update: create commit",
        "update-commit",
        "update-commit",
    ),
    row(
        "self-update: process commit",
        "update-process",
        "update-process",
    ),
    row("seal, Tacit store on disk (fsync)", "seal-durable", "seal"),
    row("open, Tacit store on disk (fsync)", "open-durable", "open"),
    row("load the group from storage (cold)", "load", "load"),
];

const fn row(label: &'static str, tacit: &'static str, openmls: &'static str) -> Row {
    Row {
        label,
        tacit,
        openmls,
    }
}

/// Where the stores go.
struct Dirs {
    /// tmpfs if there is one: fsync is free, so timings are about computation.
    scratch: PathBuf,
    /// A disk: fsync is real.
    disk: PathBuf,
}

fn main() {
    let sizes = sizes();
    let shm = Path::new("/dev/shm");
    let dirs = Dirs {
        scratch: if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        },
        disk: std::env::var_os("TACIT_BENCH_DISK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
    };
    eprintln!(
        "group sizes {sizes:?}; Tacit stores in {} (durable benchmarks: {})",
        dirs.scratch.display(),
        dirs.disk.display()
    );
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(WARM_UP_MS))
        .measurement_time(Duration::from_millis(MEASUREMENT_MS))
        .configure_from_args();
    let rec = Recorder::default();
    for &size in &sizes {
        bench_size(&mut c, &rec, size, &dirs);
    }
    c.final_summary();
    rec.print(ROWS, &sizes);
}

/// `TACIT_BENCH_SIZES` (comma-separated group sizes), or [`DEFAULT_SIZES`].
fn sizes() -> Vec<usize> {
    let Ok(list) = std::env::var("TACIT_BENCH_SIZES") else {
        return DEFAULT_SIZES.to_vec();
    };
    let sizes: Vec<usize> = list
        .split(',')
        .map(|s| s.trim().parse().expect("TACIT_BENCH_SIZES: numbers"))
        .collect();
    assert!(
        sizes.iter().all(|&s| s >= 2),
        "a group has 2 members or more"
    );
    sizes
}

fn bench_size(c: &mut Criterion, rec: &Recorder, size: usize, dirs: &Dirs) {
    let started = Instant::now();
    let tacit = TacitGroup::build(size, &dirs.scratch);
    let built_tacit = started.elapsed();
    let raw = RawGroup::build(size);
    eprintln!(
        "{size}-member groups set up (not measured): tacit {built_tacit:.1?}, openmls {:.1?}",
        started.elapsed() - built_tacit
    );
    let mut group = c.benchmark_group(format!("{size}-members"));
    messages(&mut group, rec, size, &tacit, &raw, dirs);
    for change in [Change::Add, Change::Remove, Change::Update] {
        commits(&mut group, rec, size, &tacit, &raw, dirs, change);
    }
    loads(&mut group, rec, size, &tacit, &raw, dirs);
    group.finish();
    observe_writes(rec, size, &tacit, &raw, dirs);
}

/// Times `f`, returning its output and the time it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn is_message(e: &Event) -> bool {
    matches!(e, Event::Message { .. })
}

/// Seal and open of a 200-byte message.
///
/// - `seal`: tacit = `encrypt_text` (MLS encryption, history entry, outbox item, one store
///   transaction); openmls = `create_message` and encoding. Tacit's outbox item is removed again
///   after each iteration, untimed, as the driver does once the server accepted it.
/// - `open`: alice seals (untimed), then bob's processing is timed: tacit = `process_envelope`
///   (decode, decrypt, history entry, sequence number, one transaction); openmls = decode and
///   `process_message`.
/// - `seal-durable`, `open-durable`: the same Tacit operations with the store on disk.
fn messages(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rec: &Recorder,
    size: usize,
    tacit: &TacitGroup,
    raw: &RawGroup,
    dirs: &Dirs,
) {
    let text = "x".repeat(MESSAGE_BYTES);
    let payload = text.as_bytes();
    for (op, dir) in [("seal", &dirs.scratch), ("seal-durable", &dirs.disk)] {
        let mut alice = tacit.alice(dir);
        rec.bench(g, op, Side::Tacit, size, || {
            let (m, d) = timed(|| alice.seal(&text));
            alice.sent(&m);
            d
        });
    }
    let mut alice = raw.alice();
    rec.bench(g, "seal", Side::OpenMls, size, || {
        timed(|| black_box(alice.seal(raw.signer(), payload))).1
    });

    for (op, dir) in [("open", &dirs.scratch), ("open-durable", &dirs.disk)] {
        let (mut alice, mut bob) = (tacit.alice(dir), tacit.bob(dir));
        rec.bench(g, op, Side::Tacit, size, || {
            let m = alice.seal(&text);
            alice.sent(&m);
            let (p, d) = timed(|| bob.deliver(EnvelopeKind::Message, &m.message));
            expect_event(&p, is_message, "open");
            d
        });
    }
    let (mut alice, mut bob) = (raw.alice(), raw.bob());
    rec.bench(g, "open", Side::OpenMls, size, || {
        let m = alice.seal(raw.signer(), payload);
        timed(|| black_box(bob.open(&m))).1
    });
}

/// Loading a group from storage, which each side does once, when the group is first used after
/// start-up: tacit = bob's first operation on a freshly opened copy of his store (`epoch`: one
/// transaction that reads, opens and decodes the group's items); openmls = `MlsGroup::load` from
/// its memory storage.
fn loads(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rec: &Recorder,
    size: usize,
    tacit: &TacitGroup,
    raw: &RawGroup,
    dirs: &Dirs,
) {
    rec.bench(g, "load", Side::Tacit, size, || {
        let mut bob = tacit.bob(&dirs.scratch);
        timed(|| bob.load_group()).1
    });
    rec.bench(g, "load", Side::OpenMls, size, || raw.bob_timed().1);
}

/// A membership or key change.
#[derive(Clone, Copy)]
enum Change {
    Add,
    Remove,
    Update,
}

impl Change {
    /// Names of the create and process benchmarks, and of the commit in the table of sizes.
    fn ops(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Change::Add => ("add-commit", "add-process", "add one member: commit"),
            Change::Remove => (
                "remove-commit",
                "remove-process",
                "remove one member: commit",
            ),
            Change::Update => ("update-commit", "update-process", "self-update: commit"),
        }
    }

    /// Whether bob's processing of the commit produced the event it should.
    fn processed(self, size: usize) -> fn(&Event) -> bool {
        match (self, size) {
            (Change::Add, _) => |e| matches!(e, Event::MembersAdded { .. }),
            (Change::Remove, 2) => |e| matches!(e, Event::RemovedFromConversation { .. }),
            (Change::Remove, _) => |e| matches!(e, Event::MembersRemoved { .. }),
            (Change::Update, _) => |e| matches!(e, Event::KeysUpdated { .. }),
        }
    }

    /// Stages the change at Tacit's alice: (commit, Welcome).
    fn tacit(self, alice: &mut TacitCopy, group: &TacitGroup) -> (Vec<u8>, Vec<u8>) {
        let gid = group.group_id.clone();
        let d = &mut alice.device;
        let commit = match self {
            Change::Add => d.prepare_add(&gid, std::slice::from_ref(&group.newcomer)),
            Change::Remove => d.prepare_remove(&gid, std::slice::from_ref(&group.removed)),
            Change::Update => d.prepare_self_update(&gid),
        }
        .expect("stage commit");
        (commit.commit, commit.welcome)
    }

    /// Stages the change at OpenMLS's alice: (commit, Welcome).
    fn openmls(self, alice: &mut RawCopy, group: &RawGroup) -> (Vec<u8>, Vec<u8>) {
        let signer = group.signer();
        match self {
            Change::Add => {
                let [commit, welcome] = alice.prepare_add(signer, &group.newcomer);
                (commit, welcome)
            }
            Change::Remove => (alice.prepare_remove(signer, group.removed), vec![]),
            Change::Update => (alice.prepare_update(signer), vec![]),
        }
    }
}

/// Creating a commit, and processing it at another member.
///
/// - `*-commit`: alice stages the commit, timed: tacit = `prepare_add` / `prepare_remove` /
///   `prepare_self_update` (for an add: KeyPackage decoding and validation, certificate check
///   against the pinned identity, pinning; the commit recorded as in flight); openmls = the same
///   OpenMLS calls and encoding (for an add, also KeyPackage decoding and validation). The
///   staged commit is then dropped, untimed (`commit_rejected` / `clear_pending_commit`), so
///   that every iteration starts from the same epoch.
/// - `*-process`: one commit made beforehand; every iteration takes a fresh copy of bob's state
///   and loads the group (untimed: a file copy, opening the store and a first operation that
///   loads the group into memory for tacit; a storage copy and `MlsGroup::load` for openmls —
///   the `load` benchmarks time that part), then times decoding, processing and merging: tacit =
///   `process_envelope` (leaf certificate checks, history lines, and every change written to
///   the store in one transaction). In a group of two, the member removed is bob himself.
fn commits(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rec: &Recorder,
    size: usize,
    tacit: &TacitGroup,
    raw: &RawGroup,
    dirs: &Dirs,
    change: Change,
) {
    let (create, process, what) = change.ops();
    let mut alice = tacit.alice(&dirs.scratch);
    rec.bench(g, create, Side::Tacit, size, || {
        let (out, d) = timed(|| change.tacit(&mut alice, tacit));
        black_box(out);
        alice.discard_commit();
        d
    });
    let mut raw_alice = raw.alice();
    rec.bench(g, create, Side::OpenMls, size, || {
        let (out, d) = timed(|| change.openmls(&mut raw_alice, raw));
        black_box(out);
        raw_alice.discard_commit();
        d
    });

    let (commit, welcome) = change.tacit(&mut tacit.alice(&dirs.scratch), tacit);
    let wanted = change.processed(size);
    rec.bench(g, process, Side::Tacit, size, || {
        let mut bob = tacit.bob(&dirs.scratch);
        bob.load_group();
        let (p, d) = timed(|| bob.deliver(EnvelopeKind::Commit, &commit));
        expect_event(&p, wanted, process);
        d
    });
    let (raw_commit, raw_welcome) = change.openmls(&mut raw.alice(), raw);
    rec.bench(g, process, Side::OpenMls, size, || {
        let mut bob = raw.bob();
        timed(|| bob.process_commit(&raw_commit)).1
    });

    rec.wire(size, what, commit.len(), raw_commit.len());
    if !welcome.is_empty() {
        let what = "add one member: Welcome";
        rec.wire(size, what, welcome.len(), raw_welcome.len());
    }
}

/// Encoded sizes of a message and of the set-up Welcome, and what one message writes: Tacit's
/// stores on disk (rows diffed through a second connection, bytes through /proc/self/io),
/// OpenMLS's memory storage diffed entry by entry. The second message of each copy is the one
/// observed, so that nothing first-time is counted.
fn observe_writes(rec: &Recorder, size: usize, tacit: &TacitGroup, raw: &RawGroup, dirs: &Dirs) {
    let text = "x".repeat(MESSAGE_BYTES);
    let (mut alice, mut bob) = (tacit.alice(&dirs.disk), tacit.bob(&dirs.disk));
    let (mut raw_alice, mut raw_bob) = (raw.alice(), raw.bob());
    let mut message = Vec::new();
    let mut raw_message = Vec::new();
    for _ in 0..2 {
        let m = alice.seal(&text);
        alice.sent(&m);
        expect_event(
            &bob.deliver(EnvelopeKind::Message, &m.message),
            is_message,
            "open",
        );
        raw_bob.open(&raw_alice.seal(raw.signer(), text.as_bytes()));
    }

    let before = observe::tacit_rows(&alice.path);
    let w0 = observe::bytes_written();
    let m = alice.seal(&text);
    let w1 = observe::bytes_written();
    let after = observe::tacit_rows(&alice.path);
    let syscall = w0.zip(w1).map(|(a, b)| b - a);
    let writes = observe::diff(&before, &after, observe::tacit_row_name, syscall);
    rec.writes(size, "seal", Side::Tacit, writes, observe::at_rest(&after));
    message.clone_from(&m.message);

    let before = observe::tacit_rows(&bob.path);
    let w0 = observe::bytes_written();
    let p = bob.deliver(EnvelopeKind::Message, &m.message);
    let w1 = observe::bytes_written();
    let after = observe::tacit_rows(&bob.path);
    expect_event(&p, is_message, "open");
    let syscall = w0.zip(w1).map(|(a, b)| b - a);
    let writes = observe::diff(&before, &after, observe::tacit_row_name, syscall);
    rec.writes(size, "open", Side::Tacit, writes, observe::at_rest(&after));

    for (what, copy) in [("seal", &mut raw_alice), ("open", &mut raw_bob)] {
        let before = copy.snapshot();
        if what == "seal" {
            raw_message = copy.seal(raw.signer(), text.as_bytes());
        } else {
            copy.open(&raw_message);
        }
        let after = copy.snapshot();
        let writes = observe::diff(&before, &after, observe::openmls_entry_name, None);
        rec.writes(size, what, Side::OpenMls, writes, observe::at_rest(&after));
    }
    rec.wire(
        size,
        "application message (200-byte text)",
        message.len(),
        raw_message.len(),
    );
    steady_writes(rec, size, &mut alice, &mut bob, &text);
    rec.wire(
        size,
        "set-up Welcome (size - 1 adds in one commit)",
        tacit.setup_welcome_bytes,
        raw.setup_welcome_bytes,
    );
}

/// Messages sent before the steady-state measurement (the stores' trees grow to their working
/// size), and messages measured.
const STEADY_WARM_UP: usize = 300;
const STEADY_MEASURED: usize = 200;

/// Mean bytes handed to write(2) per seal and per open once the stores have seen
/// [`STEADY_WARM_UP`] messages (WAL frames, and checkpoints into the database file when they
/// fall in), over [`STEADY_MEASURED`] messages: unlike one message on a fresh copy, this
/// includes the page splits and checkpoints that a long conversation brings.
fn steady_writes(
    rec: &Recorder,
    size: usize,
    alice: &mut TacitCopy,
    bob: &mut TacitCopy,
    text: &str,
) {
    let mut totals = [0u64; 2];
    for i in 0..STEADY_WARM_UP + STEADY_MEASURED {
        let w0 = observe::bytes_written();
        let m = alice.seal(text);
        let w1 = observe::bytes_written();
        alice.sent(&m);
        let w2 = observe::bytes_written();
        let p = bob.deliver(EnvelopeKind::Message, &m.message);
        let w3 = observe::bytes_written();
        expect_event(&p, is_message, "open");
        if i >= STEADY_WARM_UP {
            let (Some(w0), Some(w1), Some(w2), Some(w3)) = (w0, w1, w2, w3) else {
                return;
            };
            totals[0] += w1 - w0;
            totals[1] += w3 - w2;
        }
    }
    let n = STEADY_MEASURED as u64;
    rec.steady(size, totals[0] / n, totals[1] / n);
}
