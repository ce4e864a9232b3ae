//! One scenario: start (or name) a server, set up the pairs, run the load with a progress line,
//! stop the server, turn the counts into figures.

use std::sync::Arc;
use std::time::Duration;

use tacit_server::{Database, Limits, NatsConfig, RunningServer, ServerConfig};
use tokio::task::JoinSet;

use super::args::{Mode, RelayArgs};
use super::baseline::{setup_baseline_pair, BaselineRelay};
use super::client::{setup_tacit_pair, Conn};
use super::e2e::{setup_baseline_e2e_pair, setup_tacit_e2e_pair, ReceiverEnd, SenderEnd};
use super::load::{run_receiver, run_sender, Clock, Pace, PairShared};
use super::progress::Progress;
use super::report::Figures;
use super::tally::{Live, Tally};
use super::wire::Wire;
use crate::error::{BenchError, Result};

/// Sustained SendMessage rate per device the in-process Tacit nodes allow (default: 50/s).
pub const BENCH_MESSAGES_PER_SEC_PER_DEVICE: u32 = 1_000_000;
/// Burst per device the in-process Tacit nodes allow (default: 200).
pub const BENCH_BURST_PER_DEVICE: u32 = 1_000_000;
/// Envelopes queued per device the in-process Tacit nodes allow (default: 100 000).
pub const BENCH_MAX_QUEUE_LEN_PER_DEVICE: usize = 1_000_000;

/// Which server a scenario drives.
pub(crate) enum Target {
    /// The baseline relay, in this process.
    Baseline,
    /// A Tacit node started in this process on this database.
    TacitInProcess(Database),
    /// A Tacit server already running at this URL.
    TacitAt(String),
    /// Two Tacit nodes started in this process on one PostgreSQL database, with NATS between
    /// them; every pair has its sender on one node and its receiver on the other.
    TacitTwoNodes {
        /// The shared PostgreSQL database.
        database: String,
        /// The NATS server.
        nats: String,
    },
}

/// The limits of the in-process Tacit nodes: defaults, with the per-device rate limits and
/// queue length raised, and the per-address connection rate off (every client connects from
/// 127.0.0.1), so that the bench measures throughput, not the limiter.
pub(crate) fn bench_limits() -> Limits {
    Limits {
        messages_per_sec_per_device: BENCH_MESSAGES_PER_SEC_PER_DEVICE,
        burst_per_device: BENCH_BURST_PER_DEVICE,
        max_queue_len_per_device: BENCH_MAX_QUEUE_LEN_PER_DEVICE,
        unauthenticated_per_sec_per_address: 0,
        max_unauthenticated_connections: usize::MAX,
        ..Limits::default()
    }
}

/// Starts one in-process Tacit node on `database` (data directory `dir`) with the bench limits.
async fn start_node(
    dir: &std::path::Path,
    database: Database,
    nats: Option<NatsConfig>,
) -> Result<RunningServer> {
    let mut config = ServerConfig::new(dir, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    config.database = database;
    config.nats = nats;
    config.limits = bench_limits();
    Ok(tacit_server::start(config).await?)
}

/// Runs `target` under the load `args` describe and returns its figures.
pub(crate) async fn run_scenario(name: &str, target: Target, args: &RelayArgs) -> Result<Figures> {
    let run_tag: u32 = rand::random();
    match target {
        Target::Baseline => {
            let relay = BaselineRelay::start().await?;
            let outcome = drive(name, &[relay.url()], None, args).await;
            relay.stop().await;
            Ok(Figures::new(
                name.into(),
                "baseline",
                outcome?,
                args.duration,
            ))
        }
        Target::TacitInProcess(database) => {
            let dir = tempfile::tempdir()?;
            let server = start_node(dir.path(), database, None).await?;
            let outcome = drive(name, &[server.url()], Some(run_tag), args).await;
            server.shutdown().await;
            Ok(Figures::new(name.into(), "tacit", outcome?, args.duration))
        }
        Target::TacitTwoNodes { database, nats } => {
            let dir = tempfile::tempdir()?;
            // Its own subjects, so that other clusters on the same NATS are not woken.
            let nats = NatsConfig {
                url: nats,
                subject_prefix: format!("tacit_bench_{run_tag:08x}"),
            };
            let mut nodes = Vec::new();
            for n in 1..=2 {
                let node = start_node(
                    &dir.path().join(format!("node-{n}")),
                    Database::postgres(database.clone()),
                    Some(nats.clone()),
                )
                .await?;
                nodes.push(node);
            }
            let urls: Vec<String> = nodes.iter().map(RunningServer::url).collect();
            let outcome = drive(name, &urls, Some(run_tag), args).await;
            for node in nodes {
                node.shutdown().await;
            }
            Ok(Figures::new(name.into(), "tacit", outcome?, args.duration))
        }
        Target::TacitAt(url) => {
            let outcome = drive(name, &[url], Some(run_tag), args).await?;
            Ok(Figures::new(name.into(), "tacit", outcome, args.duration))
        }
    }
}

/// One pair, ready to run: sender and receiver connections, the dialect, and how each end turns
/// payloads into messages and back.
type Pair = (Conn, Conn, Wire, SenderEnd, ReceiverEnd);

/// A fresh directory for the client devices' stores: under `--client-store-dir` if given, else
/// the system's temporary directory (a disk, so that the clients' fsyncs are real).
fn client_store_dir(args: &RelayArgs) -> Result<tempfile::TempDir> {
    let dir = match &args.client_store_dir {
        Some(parent) => tempfile::Builder::new()
            .prefix("tacit-bench-clients")
            .tempdir_in(parent)?,
        None => tempfile::Builder::new()
            .prefix("tacit-bench-clients")
            .tempdir()?,
    };
    Ok(dir)
}

/// Sets up the pairs on `url` (Tacit when `tacit_run_tag` is set, else the baseline relay), runs
/// them, merges their counts.
/// Runs the load against the server(s) at `urls`: pair `i` has its sender on node `i` and its
/// receiver on node `i + 1` (modulo the number of nodes), so with two nodes every message
/// crosses from one node to the other.
async fn drive(
    name: &str,
    urls: &[String],
    tacit_run_tag: Option<u32>,
    args: &RelayArgs,
) -> Result<Tally> {
    // E2E mode: the client devices' encrypted stores, on disk, for this scenario only.
    let stores = match args.mode {
        Mode::E2e => Some(client_store_dir(args)?),
        Mode::Server => None,
    };
    let store_path = stores.as_ref().map(|d| d.path().to_path_buf());
    let mut setups = JoinSet::new();
    for i in 0..args.pairs() {
        let url = urls[i % urls.len()].clone();
        let receiver_url = urls[(i + 1) % urls.len()].clone();
        let store_path = store_path.clone();
        setups.spawn(async move {
            match (tacit_run_tag, store_path) {
                (Some(tag), None) => {
                    let (s, r, group) = setup_tacit_pair(i, tag, url, receiver_url).await?;
                    Ok::<Pair, BenchError>((
                        s,
                        r,
                        Wire::Tacit { group },
                        SenderEnd::Opaque,
                        ReceiverEnd::Opaque,
                    ))
                }
                (Some(tag), Some(dir)) => {
                    let (s, r, group, sd, rd) =
                        setup_tacit_e2e_pair(i, tag, url, receiver_url, dir).await?;
                    Ok((
                        s,
                        r,
                        Wire::Tacit { group },
                        SenderEnd::Mls(Box::new(sd)),
                        ReceiverEnd::mls(rd),
                    ))
                }
                (None, None) => {
                    let (s, r) = setup_baseline_pair(i, url).await?;
                    Ok((s, r, Wire::Baseline, SenderEnd::Opaque, ReceiverEnd::Opaque))
                }
                (None, Some(dir)) => {
                    let tag = rand::random();
                    let (s, r, sd, rd) = setup_baseline_e2e_pair(i, tag, url, dir).await?;
                    Ok((
                        s,
                        r,
                        Wire::Baseline,
                        SenderEnd::Mls(Box::new(sd)),
                        ReceiverEnd::mls(rd),
                    ))
                }
            }
        });
    }
    let mut pairs = Vec::new();
    while let Some(pair) = setups.join_next().await {
        pairs.push(pair??);
    }
    let pace = Pace {
        window: args.window,
        interval: args
            .paced_rate()
            .map(|rate| Duration::from_secs_f64(args.pairs() as f64 / rate as f64)),
    };
    let live = Arc::new(Live::default());
    let clock = Clock::starting_now(args.duration);
    let progress = Progress::start(name.to_owned(), clock, live.clone());
    let mut devices = JoinSet::new();
    for (sender, receiver, wire, sealer, opener) in pairs {
        let shared = Arc::new(PairShared::default());
        devices.spawn(run_sender(
            sender,
            wire.clone(),
            sealer,
            pace,
            clock,
            shared.clone(),
            live.clone(),
        ));
        devices.spawn(run_receiver(
            receiver,
            wire,
            opener,
            clock,
            shared,
            live.clone(),
        ));
    }
    let mut tally = Tally::default();
    let mut failure = None;
    while let Some(done) = devices.join_next().await {
        match done {
            Ok(Ok(t)) => tally.merge(t),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(e.into())),
        }
    }
    progress.finish().await;
    match failure {
        Some(e) => Err(e),
        None => Ok(tally),
    }
}
