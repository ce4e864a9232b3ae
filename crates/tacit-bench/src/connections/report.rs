//! The figures of a run: the table on standard output and the JSON summary.

use std::time::Duration;

use serde::Serialize;

use super::fdlimit::FdLimit;
use super::memory::per_connection;

/// One phase's figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PhaseFigures {
    /// `register` or `connect`.
    pub(crate) phase: &'static str,
    /// Jobs asked for.
    pub(crate) attempted: usize,
    /// Jobs that succeeded.
    pub(crate) ok: usize,
    /// Jobs that failed.
    pub(crate) failed: usize,
    /// The first failure, as text.
    pub(crate) first_error: Option<String>,
    /// Wall-clock seconds of the phase.
    pub(crate) secs: f64,
    /// Successes per second.
    pub(crate) per_sec: f64,
    /// Whether the overall `--timeout` cut it short.
    pub(crate) timed_out: bool,
}

impl PhaseFigures {
    /// Figures from counts and the phase's duration.
    pub(crate) fn new(
        phase: &'static str,
        attempted: usize,
        ok: usize,
        failed: usize,
        first_error: Option<String>,
        elapsed: Duration,
        timed_out: bool,
    ) -> PhaseFigures {
        let secs = elapsed.as_secs_f64();
        PhaseFigures {
            phase,
            attempted,
            ok,
            failed,
            first_error,
            secs,
            per_sec: ok as f64 / secs.max(1e-6),
            timed_out,
        }
    }
}

/// Resident memory of one process (or the kernel's slab) before the connections were opened
/// and while they were held.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct MemoryFigures {
    /// What was measured.
    pub(crate) what: String,
    /// KiB before connecting (after registration).
    pub(crate) before_kib: Option<u64>,
    /// KiB with every connection open.
    pub(crate) after_kib: Option<u64>,
    /// (after − before) ÷ connections held.
    pub(crate) per_connection_kib: Option<f64>,
}

impl MemoryFigures {
    /// Figures for `what` over `connections` held connections.
    pub(crate) fn new(
        what: String,
        before_kib: Option<u64>,
        after_kib: Option<u64>,
        connections: usize,
    ) -> MemoryFigures {
        MemoryFigures {
            what,
            before_kib,
            after_kib,
            per_connection_kib: per_connection(before_kib, after_kib, connections),
        }
    }
}

fn show_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

fn show_f64(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Prints the phases and the memory table, then the descriptor limits and closing figures.
pub(crate) fn print_table(
    phases: &[PhaseFigures],
    memory: &[MemoryFigures],
    fd: &FdLimit,
    held: usize,
    still_open: usize,
    close_secs: f64,
) {
    println!();
    println!(
        "{:<10} {:>10} {:>10} {:>8} {:>10} {:>10}  timed out",
        "phase", "attempted", "ok", "failed", "seconds", "ok/s"
    );
    for p in phases {
        println!(
            "{:<10} {:>10} {:>10} {:>8} {:>10.2} {:>10.0}  {}",
            p.phase,
            p.attempted,
            p.ok,
            p.failed,
            p.secs,
            p.per_sec,
            if p.timed_out { "yes" } else { "no" }
        );
    }
    for p in phases {
        if let Some(e) = &p.first_error {
            println!("first {} error: {e}", p.phase);
        }
    }
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>16}",
        "memory (KiB)", "before", "held", "per connection"
    );
    for m in memory {
        println!(
            "{:<44} {:>12} {:>12} {:>16}",
            m.what,
            show_u64(m.before_kib),
            show_u64(m.after_kib),
            show_f64(m.per_connection_kib, 2)
        );
    }
    println!();
    println!(
        "held {held} connections; {still_open} still open when checked after the hold; closed in {close_secs:.2} s"
    );
    println!(
        "open-file limit: soft {} / hard {} at start, soft {} / hard {} now; the run needs about {}",
        fd.soft_before, fd.hard_before, fd.soft, fd.hard, fd.needed
    );
}
