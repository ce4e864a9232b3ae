//! Durable delivery through the real tacit-server: acknowledged sends per second, acknowledgment
//! latency and send-to-receive latency, for one node on SQLite, one node on PostgreSQL, and two
//! nodes sharing one PostgreSQL database with NATS between them — one harness, one run, one
//! table.
//!
//! Each scenario starts its node(s) in this process and registers `--pairs` pairs of devices,
//! each pair a 1:1 group. Every sender keeps `--window` SendMessage requests in flight on its
//! connection (pipelined by request id) for a one-second warm-up plus `--secs` seconds; only what
//! happens after the warm-up is counted. A send is acknowledged (MessageAccepted) only once the
//! store transaction committed, so the acknowledgment latency is the durable-write latency plus
//! the queueing in front of it. Receivers take the Envelope pushes and acknowledge them by highest
//! seq, one Ack in flight at a time. The 200-byte payload (opaque to the server) carries the send
//! time and a per-sender counter, so receivers measure send-to-receive latency and check order;
//! after the senders stop, every acknowledged message must reach its receiver within a bounded
//! drain time, else it is reported as lost. With two nodes, each pair is split across the nodes
//! (the sender on one, the receiver on the other) so that every message crosses nodes.
//!
//! ```text
//! TACIT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! TACIT_TEST_NATS_URL=nats://127.0.0.1:4222 \
//! cargo bench -p tacit-server --features testing --bench delivery -- --secs 10 [--pairs 32] [--window 16]
//! ```
//!
//! Without `TACIT_TEST_POSTGRES_URL` only the SQLite scenario runs; the two-node scenario also
//! needs `TACIT_TEST_NATS_URL`. Everything (nodes, clients, and whatever runs PostgreSQL and NATS
//! on this machine) shares the same cores; the client side is one small tokio runtime.

mod client;
mod load;
mod report;

use std::error::Error;

use tacit_server::store::PgOptions;
use tacit_server::testing::{env_url, TestDatabase, NATS_URL_VAR, POSTGRES_URL_VAR};
use tacit_server::{Database, Limits, NatsConfig, ServerConfig};

use load::{drive, PAYLOAD_BYTES, WARMUP};
use report::{print_report, Figures};

type BoxError = Box<dyn Error + Send + Sync>;
pub(crate) type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Worker threads of the one runtime that runs the nodes and the clients.
const RUNTIME_WORKERS: usize = 2;

fn main() {
    if let Err(e) = run() {
        eprintln!("delivery bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKERS)
        .enable_all()
        .build()?;
    runtime.block_on(run_all(&args))
}

/// Command-line settings.
pub(crate) struct Args {
    pub(crate) secs: u64,
    pub(crate) pairs: usize,
    pub(crate) window: usize,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            secs: 10,
            pairs: 32,
            window: 16,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut number = |name: &str| -> Result<u64> {
                let value = it.next().ok_or(format!("{name} needs a number"))?;
                match value.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name} needs a positive number, not {value:?}").into()),
                }
            };
            match arg.as_str() {
                "--secs" => args.secs = number("--secs")?,
                "--pairs" => args.pairs = number("--pairs")? as usize,
                "--window" => args.window = number("--window")? as usize,
                "--bench" => {}
                other => eprintln!("ignoring argument {other:?}"),
            }
        }
        Ok(args)
    }
}

fn bench_config(data_dir: &std::path::Path) -> Result<ServerConfig> {
    let mut config = ServerConfig::new(data_dir, "127.0.0.1:0".parse()?);
    config.limits = Limits {
        messages_per_sec_per_device: 1_000_000,
        burst_per_device: 1_000_000,
        max_queue_len_per_device: 1_000_000,
        ..Limits::default()
    };
    Ok(config)
}

async fn run_all(args: &Args) -> Result<()> {
    println!(
        "delivery bench: {} pairs, window {} per sender, {PAYLOAD_BYTES}-byte payloads, {} s measured after {} s warm-up, {} cores, PostgreSQL pool {} per node",
        args.pairs,
        args.window,
        args.secs,
        WARMUP.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        PgOptions::default().max_connections,
    );
    let mut results = Vec::new();

    let dir = tempfile::tempdir()?;
    let config = bench_config(dir.path())?;
    results.push(run_scenario("1 node, SQLite", vec![config], args).await?);
    drop(dir);

    let postgres = env_url(POSTGRES_URL_VAR).is_some();
    let nats_url = env_url(NATS_URL_VAR);
    if postgres {
        let db = TestDatabase::create_or_skip("delivery bench, PostgreSQL")
            .ok_or("the PostgreSQL test database could not be created")?;
        let dir = tempfile::tempdir()?;
        let mut config = bench_config(dir.path())?;
        config.database = Database::postgres(db.url.clone());
        results.push(run_scenario("1 node, PostgreSQL", vec![config], args).await?);
        drop(db);
    } else {
        println!("{POSTGRES_URL_VAR} is not set: only the SQLite scenario runs");
    }

    match (postgres, nats_url) {
        (true, Some(nats_url)) => {
            let db = TestDatabase::create_or_skip("delivery bench, two nodes")
                .ok_or("the PostgreSQL test database could not be created")?;
            let prefix = format!("bench{:08x}", rand::random::<u32>());
            let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
            let mut configs = Vec::new();
            for (i, dir) in dirs.iter().enumerate() {
                let mut config = bench_config(dir.path())?;
                config.database = Database::postgres(db.url.clone());
                config.nats = Some(NatsConfig {
                    url: nats_url.clone(),
                    subject_prefix: prefix.clone(),
                });
                config.node_id = format!("bench-node-{}", i + 1);
                configs.push(config);
            }
            results.push(run_scenario("2 nodes, PostgreSQL+NATS", configs, args).await?);
            drop(db);
        }
        (true, None) => println!("{NATS_URL_VAR} is not set: the two-node scenario is skipped"),
        (false, _) => {}
    }

    print_report(&results, args);
    Ok(())
}

/// Starts the nodes, drives the traffic, stops the nodes.
async fn run_scenario(
    name: &'static str,
    configs: Vec<ServerConfig>,
    args: &Args,
) -> Result<Figures> {
    eprintln!("running: {name}");
    let mut servers = Vec::new();
    for config in configs {
        servers.push(tacit_server::start(config).await?);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let outcome = drive(&urls, args).await;
    for server in servers {
        server.shutdown().await;
    }
    Ok(Figures::new(name, urls.len(), &outcome?, args))
}
