//! Crash tests: `tacit serve` (SQLite, the embedded default) and `tacit sync` are killed with
//! SIGKILL at random moments while real clients talk; afterwards every message the server
//! acknowledged is shown to every recipient device exactly once and in order, and every
//! conversation still works both ways.
//!
//! Knobs (see `scripts/crash-test.sh` for longer runs): `TACIT_CRASH_KILLS` (how many kills),
//! `TACIT_CRASH_SEED` (the random schedule; printed at the start of each test). Each test ends
//! with a `crash figures:` line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod check;
mod client_kill;
mod knobs;
mod server_kill;
mod server_process;
