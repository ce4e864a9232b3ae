//! What the run prints after Criterion's own output: a summary of every timing with Tacit's
//! overhead as a ratio, the encoded sizes of messages, commits and Welcomes, and what each side
//! writes to its storage per message.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;

/// Which implementation a timing belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// `tacit_core::Device`.
    Tacit,
    /// OpenMLS directly.
    OpenMls,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Tacit => "tacit",
            Side::OpenMls => "openmls",
        })
    }
}

/// A line of the summary: its label, and the operations whose timings it compares.
pub struct Row {
    /// What the line says.
    pub label: &'static str,
    /// The Tacit operation.
    pub tacit: &'static str,
    /// The OpenMLS operation it is compared with.
    pub openmls: &'static str,
}

/// What one side wrote to its storage for one message.
pub struct Writes {
    /// Rows (entries) inserted or replaced.
    pub rows: usize,
    /// Rows deleted.
    pub deleted: usize,
    /// Bytes of the values written (sealed values for Tacit, JSON for OpenMLS's memory storage).
    pub bytes: usize,
    /// The largest value written, in bytes, and what it is when that is known.
    pub largest: (usize, String),
    /// Bytes handed to write(2) while the operation ran (Tacit on disk only).
    pub syscall_bytes: Option<u64>,
}

/// Timings and sizes collected during the run.
#[derive(Default)]
pub struct Recorder {
    /// (operation, size, side) -> (total time, iterations) of each call Criterion made.
    timings: RefCell<BTreeMap<Bench, Vec<(Duration, u64)>>>,
    /// The same calls' iterations, one time each (for the median).
    each: RefCell<BTreeMap<Bench, Vec<Vec<Duration>>>>,
    /// (size, what, Tacit bytes, OpenMLS bytes).
    wire: RefCell<Vec<(usize, &'static str, usize, usize)>>,
    writes: RefCell<Vec<WriteRecord>>,
    /// (size, mean write(2) bytes per seal, per open) in steady state, Tacit on disk.
    steady: RefCell<Vec<(usize, u64, u64)>>,
}

/// A benchmark: (operation, group size, side).
type Bench = (&'static str, usize, Side);

/// What one message wrote to one side's storage at one group size.
struct WriteRecord {
    size: usize,
    what: &'static str,
    side: Side,
    writes: Writes,
    /// Bytes of all stored values afterwards.
    at_rest: usize,
}

/// Criterion measures this many samples; the summary averages the last this many calls.
pub const SAMPLES: usize = 10;

impl Recorder {
    /// Registers a benchmark `size`-members/`op`/`side`. `one` runs one iteration and returns
    /// the time of the part that is measured (set-up and clean-up stay outside).
    pub fn bench(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        op: &'static str,
        side: Side,
        size: usize,
        mut one: impl FnMut() -> Duration,
    ) {
        group.bench_function(format!("{op}/{side}"), |b| {
            b.iter_custom(|iters| {
                let each: Vec<Duration> = (0..iters).map(|_| one()).collect();
                let total: Duration = each.iter().sum();
                self.each
                    .borrow_mut()
                    .entry((op, size, side))
                    .or_default()
                    .push(each);
                self.timings
                    .borrow_mut()
                    .entry((op, size, side))
                    .or_default()
                    .push((total, iters));
                total
            })
        });
    }

    /// Notes the encoded size of something on both sides.
    pub fn wire(&self, size: usize, what: &'static str, tacit: usize, openmls: usize) {
        self.wire.borrow_mut().push((size, what, tacit, openmls));
    }

    /// Notes what one message wrote to one side's storage, and that storage's size at rest.
    pub fn writes(&self, size: usize, what: &'static str, side: Side, w: Writes, state: usize) {
        self.writes.borrow_mut().push(WriteRecord {
            size,
            what,
            side,
            writes: w,
            at_rest: state,
        });
    }

    /// Notes Tacit's mean write(2) bytes per seal and per open in steady state.
    pub fn steady(&self, size: usize, seal: u64, open: u64) {
        self.steady.borrow_mut().push((size, seal, open));
    }

    /// Median time of one iteration over the last [`SAMPLES`] calls, if the benchmark ran:
    /// less moved than the mean by the moments the process waited for a core.
    fn median(&self, op: &'static str, size: usize, side: Side) -> Option<Duration> {
        let each = self.each.borrow();
        let calls = each.get(&(op, size, side))?;
        let mut all: Vec<Duration> = calls[calls.len().saturating_sub(SAMPLES)..]
            .iter()
            .flatten()
            .copied()
            .collect();
        all.sort();
        all.get(all.len() / 2).copied()
    }

    /// Mean time per iteration over the last [`SAMPLES`] calls, if the benchmark ran.
    fn mean(&self, op: &'static str, size: usize, side: Side) -> Option<Duration> {
        let timings = self.timings.borrow();
        let calls = timings.get(&(op, size, side))?;
        let last = &calls[calls.len().saturating_sub(SAMPLES)..];
        let (total, iters) = last
            .iter()
            .fold((Duration::ZERO, 0), |(t, n), (dt, dn)| (t + *dt, n + dn));
        (iters > 0).then(|| total / iters as u32)
    }

    /// One table of times, Tacit next to OpenMLS with their ratio, each time given by `stat`.
    fn print_times(
        &self,
        title: &str,
        rows: &[Row],
        sizes: &[usize],
        stat: impl Fn(&Self, &'static str, usize, Side) -> Option<Duration>,
    ) {
        println!("\n== {title} ==");
        println!(
            "{:<44} {:>6} {:>12} {:>12} {:>7}",
            "operation", "size", "tacit", "openmls", "ratio"
        );
        for row in rows {
            for &size in sizes {
                let t = stat(self, row.tacit, size, Side::Tacit);
                let o = stat(self, row.openmls, size, Side::OpenMls);
                if t.is_none() && o.is_none() {
                    continue;
                }
                let ratio = match (t, o) {
                    (Some(t), Some(o)) => format!("{:.2}x", t.as_secs_f64() / o.as_secs_f64()),
                    _ => "-".into(),
                };
                println!(
                    "{:<44} {:>6} {:>12} {:>12} {:>7}",
                    row.label,
                    size,
                    show(t),
                    show(o),
                    ratio
                );
            }
        }
    }

    /// Prints every table.
    pub fn print(&self, rows: &[Row], sizes: &[usize]) {
        self.print_times(
            &format!("Summary: mean time per operation (last {SAMPLES} Criterion samples)"),
            rows,
            sizes,
            Self::mean,
        );
        self.print_times(
            "Median time of one iteration (same samples; less moved by waits for a core)",
            rows,
            sizes,
            Self::median,
        );

        println!("\n== Encoded sizes in bytes (not timings) ==");
        println!(
            "{:<44} {:>6} {:>12} {:>12}",
            "what", "size", "tacit", "openmls"
        );
        let wire = self.wire.borrow();
        let mut whats: Vec<&str> = Vec::new();
        for &(_, what, ..) in wire.iter() {
            if !whats.contains(&what) {
                whats.push(what);
            }
        }
        for what in whats {
            for &(size, _, tacit, openmls) in wire.iter().filter(|w| w.1 == what) {
                println!("{what:<44} {size:>6} {tacit:>12} {openmls:>12}");
            }
        }

        println!("\n== Storage writes per message (one message, after the benchmarks) ==");
        println!(
            "{:<22} {:>6} {:<8} {:>5} {:>4} {:>10} {:>10} {:>10}  largest value",
            "what", "size", "side", "rows", "del", "bytes", "write(2)", "at rest"
        );
        for r in self.writes.borrow().iter() {
            let w = &r.writes;
            let syscall = w.syscall_bytes.map_or("-".into(), |b| b.to_string());
            println!(
                "{:<22} {:>6} {:<8} {:>5} {:>4} {:>10} {syscall:>10} {:>10}  {} ({})",
                r.what,
                r.size,
                r.side.to_string(),
                w.rows,
                w.deleted,
                w.bytes,
                r.at_rest,
                w.largest.0,
                w.largest.1
            );
        }

        println!(
            "\n== Tacit write(2) bytes per message in steady state (mean over messages {}..{}; \
             4,120 bytes per WAL frame, i.e. per page) ==",
            crate::STEADY_WARM_UP + 1,
            crate::STEADY_WARM_UP + crate::STEADY_MEASURED
        );
        println!("{:>6} {:>10} {:>10}", "size", "seal", "open");
        for &(size, seal, open) in self.steady.borrow().iter() {
            println!("{size:>6} {seal:>10} {open:>10}");
        }
    }
}

fn show(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_millis(1) => format!("{:.1} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
    }
}
