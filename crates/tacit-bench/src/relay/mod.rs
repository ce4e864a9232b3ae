//! `tacit bench relay`: delivered messages per second and latencies through Tacit, next to a
//! minimal baseline relay driven by the same clients, in the same run, on the same runtime.
//!
//! Each scenario connects `--devices` clients as sender→receiver pairs (for Tacit: registered
//! accounts, each pair a 1:1 group) and sends 200-byte opaque messages for a one-second warm-up
//! plus `--duration` measured seconds, paced (`--rate`) or at saturation (`--window` in flight
//! per sender). Only what happens in the measured interval counts; afterwards every
//! acknowledged message must arrive within a bounded drain time, else it is reported as lost.

mod args;
mod baseline;
mod client;
mod e2e;
mod load;
mod progress;
mod report;
mod scenario;
mod tally;
mod wire;

use tacit_server::Database;

pub use args::{Mode, RelayArgs, DEFAULT_DEVICES, DEFAULT_DURATION_SECS, DEFAULT_WINDOW};
pub use load::{PAYLOAD_BYTES, WARMUP};
pub use scenario::{
    BENCH_BURST_PER_DEVICE, BENCH_MAX_QUEUE_LEN_PER_DEVICE, BENCH_MESSAGES_PER_SEC_PER_DEVICE,
};

use crate::error::{BenchError, Result};
use report::{print_table, ratio, Figures};
use scenario::{bench_limits, run_scenario, Target};

/// Runs the benchmark: the baseline, then Tacit (in process on SQLite, durable and then with
/// `synchronous=OFF` to show what durability costs, or at `--server`), then
/// Tacit on PostgreSQL if `--database` names one, and two nodes on it with NATS between them if
/// `--nats` names a NATS server too. Prints a progress line on standard error, the
/// table on standard output and, with `json` set, one JSON object as the last line. Fails on
/// impossible arguments, and when a server cannot be started
/// or a connection cannot be set up; refused requests during the run are counted, not fatal.
pub async fn run(args: RelayArgs) -> Result<()> {
    check(&args)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = match args.paced_rate() {
        Some(rate) => format!("paced at {rate} msg/s in all (window cap {})", args.window),
        None => format!("saturation, window {} per sender", args.window),
    };
    println!(
        "tacit bench relay: mode {}, {} devices ({} pairs), {load}, {PAYLOAD_BYTES}-byte payloads, {} s measured after {} s warm-up, {cores} cores shared by servers and clients",
        format!("{:?}", args.mode).to_lowercase(),
        args.pairs() * 2,
        args.pairs(),
        args.duration,
        WARMUP.as_secs(),
    );
    if args.mode == Mode::E2e {
        println!(
            "clients: one Tacit client core per device (OpenMLS, encrypted local store on disk in {}, fsync per transaction): seal + history + outbox, then outbox cleared on acceptance; open + history + processed seq; the baseline's clients do the same MLS work",
            args.client_store_dir
                .as_ref()
                .map_or_else(std::env::temp_dir, Clone::clone)
                .display()
        );
    }
    let limits = bench_limits();
    match &args.server {
        Some(url) => println!("Tacit server: {url} (its own limits apply)"),
        None => println!(
            "Tacit server: in process on 127.0.0.1; rate limits raised for the bench: messages_per_sec_per_device {} (default {}), burst_per_device {} (default {}), max_queue_len_per_device {} (default {})",
            limits.messages_per_sec_per_device,
            tacit_server::Limits::default().messages_per_sec_per_device,
            limits.burst_per_device,
            tacit_server::Limits::default().burst_per_device,
            limits.max_queue_len_per_device,
            tacit_server::Limits::default().max_queue_len_per_device,
        ),
    }

    let mut results: Vec<Figures> = Vec::new();
    results.push(run_scenario("baseline relay (no storage)", Target::Baseline, &args).await?);
    let (tacit_name, tacit_target) = match &args.server {
        Some(url) => (format!("Tacit at {url}"), Target::TacitAt(url.clone())),
        None => (
            "Tacit, SQLite (durable)".to_owned(),
            Target::TacitInProcess(Database::Sqlite),
        ),
    };
    results.push(run_scenario(&tacit_name, tacit_target, &args).await?);
    if args.server.is_none() {
        // The same node without waiting for the disk: what durability costs.
        let target = Target::TacitInProcess(Database::SqliteNotDurable);
        let name = "Tacit, SQLite (synchronous=OFF, not durable)";
        results.push(run_scenario(name, target, &args).await?);
    }
    if let Some(url) = &args.database {
        let target = Target::TacitInProcess(Database::postgres(url.clone()));
        results.push(run_scenario("Tacit, PostgreSQL (durable)", target, &args).await?);
        if let Some(nats) = &args.nats {
            let target = Target::TacitTwoNodes {
                database: url.clone(),
                nats: nats.clone(),
            };
            let name = "Tacit, 2 nodes, PostgreSQL + NATS";
            results.push(run_scenario(name, target, &args).await?);
        }
    }

    print_table(&results);
    let delivered = |kind: &str, db: &str| {
        results
            .iter()
            .find(|f| f.kind == kind && f.scenario.contains(db))
            .map(|f| f.delivered_per_sec)
    };
    let baseline = delivered("baseline", "");
    let tacit = results.get(1).map(|f| f.delivered_per_sec);
    let vs_baseline = ratio(tacit, baseline);
    let pg_over_sqlite = ratio(
        delivered("tacit", "PostgreSQL (durable)"),
        delivered("tacit", "SQLite (durable)"),
    );
    let two_nodes_per_node_over_one_node = ratio(
        delivered("tacit", "2 nodes").map(|d| d / 2.0),
        delivered("tacit", "PostgreSQL (durable)"),
    );
    let durable_over_non_durable = ratio(
        delivered("tacit", "SQLite (durable)"),
        delivered("tacit", "not durable"),
    );
    let show = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"));
    println!(
        "ratio_vs_baseline (delivered/s, {} / baseline): {}",
        results.get(1).map_or("Tacit", |f| f.scenario.as_str()),
        show(vs_baseline)
    );
    if args.server.is_none() {
        println!(
            "durable / not durable SQLite (delivered/s): {}",
            show(durable_over_non_durable)
        );
    }
    if args.database.is_some() {
        println!(
            "PostgreSQL / SQLite (delivered/s): {}",
            show(pg_over_sqlite)
        );
    }
    if args.database.is_some() && args.nats.is_some() {
        println!(
            "two nodes, per node / one node, PostgreSQL (delivered/s): {}",
            show(two_nodes_per_node_over_one_node)
        );
    }
    if args.json {
        let summary = serde_json::json!({
            "bench": "relay",
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "devices": args.pairs() * 2,
            "pairs": args.pairs(),
            "rate": args.paced_rate(),
            "window": args.window,
            "duration_secs": args.duration,
            "warmup_secs": WARMUP.as_secs(),
            "payload_bytes": PAYLOAD_BYTES,
            "cores": cores,
            "server": args.server.clone().unwrap_or_else(|| "in-process".into()),
            "limits": {
                "messages_per_sec_per_device": limits.messages_per_sec_per_device,
                "burst_per_device": limits.burst_per_device,
                "max_queue_len_per_device": limits.max_queue_len_per_device,
                "applied": args.server.is_none(),
            },
            "scenarios": results,
            "postgres_over_sqlite": pg_over_sqlite,
            "two_nodes_per_node_over_one_node": two_nodes_per_node_over_one_node,
            "durable_over_non_durable": durable_over_non_durable,
            "ratio_vs_baseline": vs_baseline,
        });
        println!("{summary}");
    }
    Ok(())
}

/// Refuses what cannot be measured honestly.
fn check(args: &RelayArgs) -> Result<()> {
    if args.devices < 2 {
        return Err(BenchError::InvalidArgs(
            "--devices needs at least 2 (one pair)".into(),
        ));
    }
    if args.duration == 0 || args.window == 0 {
        return Err(BenchError::InvalidArgs(
            "--duration and --window must be positive".into(),
        ));
    }
    if args.nats.is_some() && args.database.is_none() {
        return Err(BenchError::InvalidArgs(
            "--nats runs two nodes on one PostgreSQL database: give --database too".into(),
        ));
    }
    if let Some(url) = &args.database {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(BenchError::InvalidArgs(
                "--database must be a postgres:// URL".into(),
            ));
        }
    }
    Ok(())
}
