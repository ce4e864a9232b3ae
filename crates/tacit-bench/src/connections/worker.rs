//! One client process of a run spread over several server processes (`tacit bench
//! connections --nodes N` starts one per node as `tacit bench connections-worker`; it is not for
//! use by hand). It registers its share of the devices on its node, then opens one
//! authenticated idle connection per device and holds it, steered by one-word commands on
//! standard input (`connect`, `check`, `close`) and reporting each step as one JSON line on
//! standard output ([`Report`]), so that the parent can read every node's memory between the
//! steps.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use super::client::{still_open, Registered};
use super::source::{source_address, Phase};
use super::{close_all, fdlimit, phase, server_address};
use crate::error::{BenchError, Result};

/// The settings of one worker, chosen by the parent.
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The node this worker drives (a loopback ws:// URL).
    #[arg(long)]
    pub server: String,
    /// Index of this worker's first device in the whole run (it picks the source addresses, so
    /// that workers never bind the same ones).
    #[arg(long)]
    pub first: usize,
    /// Devices (and connections) of this worker.
    #[arg(long)]
    pub count: usize,
    /// Tag making this run's handles unique.
    #[arg(long)]
    pub run_tag: u32,
    /// Registrations in flight.
    #[arg(long)]
    pub register_concurrency: usize,
    /// Connection set-ups in flight.
    #[arg(long)]
    pub connect_concurrency: usize,
    /// Overall limit in seconds for this worker's phases.
    #[arg(long)]
    pub timeout: u64,
}

/// One phase of one worker, as counted there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PhaseCounts {
    /// Jobs that succeeded.
    pub(crate) ok: usize,
    /// Jobs that failed.
    pub(crate) failed: usize,
    /// The first failure, as text.
    pub(crate) first_error: Option<String>,
    /// Seconds from the phase's first job to its last.
    pub(crate) secs: f64,
    /// Whether the worker's deadline cut it short.
    pub(crate) timed_out: bool,
}

impl<T> From<&phase::Outcome<T>> for PhaseCounts {
    fn from(o: &phase::Outcome<T>) -> Self {
        PhaseCounts {
            ok: o.done.len(),
            failed: o.failures,
            first_error: o.first_error.clone(),
            secs: o.elapsed.as_secs_f64(),
            timed_out: o.timed_out,
        }
    }
}

/// What a worker reports, one JSON line per step.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Report {
    /// Registration is over; the worker waits for `connect`.
    Registered(PhaseCounts),
    /// Connecting is over; the worker holds the connections and waits for `check`.
    Connected(PhaseCounts),
    /// How many held connections were still open; the worker waits for `close`.
    Checked {
        /// Connections held.
        held: usize,
        /// Of those, still open.
        open: usize,
    },
    /// Every connection was closed; the worker exits.
    Closed {
        /// Seconds closing took.
        secs: f64,
    },
}

fn emit(report: &Report) -> Result<()> {
    let line = serde_json::to_string(report)
        .map_err(|e| BenchError::Setup(format!("cannot encode a worker report: {e}")))?;
    println!("{line}");
    Ok(())
}

/// Waits for the parent's next command, which must be `expected`.
async fn command<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    expected: &str,
) -> Result<()> {
    match lines.next_line().await? {
        Some(line) if line.trim() == expected => Ok(()),
        Some(line) => Err(BenchError::Setup(format!(
            "worker: expected the command {expected:?}, got {line:?}"
        ))),
        None => Err(BenchError::Setup(format!(
            "worker: standard input closed before {expected:?}"
        ))),
    }
}

/// Runs one worker: register, report, connect on command, report, check on command, report,
/// close on command, report.
pub async fn run_worker(args: WorkerArgs) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let fd = fdlimit::raise(fdlimit::fds_needed(args.count, false))?;
    if fdlimit::connections_fitting(fd.soft, false) < args.count {
        return Err(BenchError::InvalidArgs(format!(
            "worker: {} connections do not fit under the open-file limit {}",
            args.count, fd.soft
        )));
    }
    let addr = server_address(&args.server).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let url: Arc<str> = Arc::from(args.server.as_str());
    let (first, run_tag) = (args.first, args.run_tag);

    let job_url = url.clone();
    let registered = phase::run(
        "register",
        args.count,
        args.register_concurrency,
        deadline,
        false,
        move |i| {
            let url = job_url.clone();
            async move {
                let n = first + i;
                let source = source_address(Phase::Register, n)
                    .ok_or(BenchError::InvalidArgs("too many registrations".into()))?;
                Registered::register(&url, addr, source, format!("bc{n}-{run_tag:08x}")).await
            }
        },
    )
    .await;
    emit(&Report::Registered(PhaseCounts::from(&registered)))?;

    command(&mut lines, "connect").await?;
    let devices = Arc::new(registered.done);
    let job_devices = devices.clone();
    let connected = phase::run(
        "connect",
        devices.len(),
        args.connect_concurrency,
        deadline,
        false,
        move |i| {
            let url = url.clone();
            let devices = job_devices.clone();
            async move {
                let source = source_address(Phase::Connect, first + i)
                    .ok_or(BenchError::InvalidArgs("too many connections".into()))?;
                devices[i].connect(&url, addr, source).await
            }
        },
    )
    .await;
    emit(&Report::Connected(PhaseCounts::from(&connected)))?;

    command(&mut lines, "check").await?;
    let mut held = connected.done;
    let open = held.iter_mut().map(still_open).filter(|&o| o).count();
    emit(&Report::Checked {
        held: held.len(),
        open,
    })?;

    command(&mut lines, "close").await?;
    let closing = Instant::now();
    close_all(held).await;
    emit(&Report::Closed {
        secs: closing.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reports_are_one_json_line_each_and_read_back() {
        let reports = [
            Report::Registered(PhaseCounts {
                ok: 3,
                failed: 1,
                first_error: Some("refused\nby the server".into()),
                secs: 0.5,
                timed_out: false,
            }),
            Report::Checked { held: 3, open: 2 },
            Report::Closed { secs: 0.1 },
        ];
        for r in reports {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            let back: Report = serde_json::from_str(&line).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), line);
        }
    }
}
