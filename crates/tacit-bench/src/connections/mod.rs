//! `tacit bench connections`: how many authenticated idle WebSocket connections one Tacit
//! server holds, how fast they open, and what each costs in memory.
//!
//! A run registers `--count` accounts (one device each, real Ed25519 identities and device
//! certificates; each registration on a connection of its own, dropped afterwards), then opens
//! one connection per device that authenticates with a signed challenge and stays idle. The
//! two phases are timed apart. Client sockets are bound to several 127.0.0.0/8 source
//! addresses ([`source`]) so that the count can pass one address's ephemeral port range, and
//! the open-file limit is raised first ([`fdlimit`]). Resident memory is read from /proc before
//! and while the connections are held: this process's (server and clients when the server
//! runs in process), the `--server-pid`'s, and the kernel's slab (socket structures, in no
//! process's RSS). Everything is bounded by `--timeout`, and every connection is closed at the
//! end.

mod args;
mod client;
mod cluster;
pub mod fdlimit;
pub mod memory;
mod phase;
mod report;
pub mod source;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tacit_server::{Database, ServerConfig};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;

pub use args::{
    ConnectionsArgs, DEFAULT_CONNECT_CONCURRENCY, DEFAULT_COUNT, DEFAULT_REGISTER_CONCURRENCY,
    DEFAULT_TIMEOUT_SECS,
};
pub use client::CLIENT_READ_BUFFER_BYTES;
pub use worker::{run_worker, WorkerArgs};

use crate::error::{BenchError, Result};
use client::{still_open, Registered, Ws};
use memory::{rss_kib, slab_kib, Process};
use report::{print_table, MemoryFigures, PhaseFigures};
use source::{addresses_used, source_address, Phase, MAX_CONNECTIONS};

/// How long the connections are held, all open, before memory is read.
pub const HOLD: Duration = Duration::from_secs(3);
/// Connections closed at once at the end.
const CLOSE_CONCURRENCY: usize = 512;
/// Longest wait for one connection's Close frame to be written at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the benchmark: raises the open-file limit (lowering `--count` to what fits under it,
/// and saying so), starts a server in process (or uses
/// `--server`), registers the devices, opens and holds the connections, reads memory, closes
/// them, and prints the table (and with `json`, one JSON object as the last line). Fails on
/// impossible arguments, a `--server` that is not a loopback `ws://` URL, or a server that
/// cannot start; connections that fail are counted, not fatal, and `--timeout` ends the phases
/// with whatever they reached.
pub async fn run(mut args: ConnectionsArgs) -> Result<()> {
    check(&args)?;
    if args.nodes > 0 {
        return run_nodes(&args).await;
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let in_process = args.server.is_none();
    let fd = fdlimit::raise(fdlimit::fds_needed(args.count, in_process))?;
    let requested = args.count;
    args.count = args
        .count
        .min(fdlimit::connections_fitting(fd.soft, in_process));
    println!(
        "tacit bench connections: {} connections, {} source addresses (127.0.0.2 and up, {} ports each), timeout {} s, {} cores",
        args.count,
        addresses_used(args.count),
        source::CONNECTIONS_PER_SOURCE_ADDRESS,
        args.timeout,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "open-file limit: raised from soft {} / hard {} to soft {} / hard {} (needs about {}){}",
        fd.soft_before,
        fd.hard_before,
        fd.soft,
        fd.hard,
        fd.needed,
        if fd.enough() {
            String::new()
        } else {
            format!(
                "; NOT ENOUGH: --count {requested} reduced to the {} connections that fit (--nodes N spreads them over several server processes)",
                args.count
            )
        }
    );
    if args.count == 0 {
        return Err(BenchError::InvalidArgs(format!(
            "the open-file limit ({}) leaves room for no connection",
            fd.soft
        )));
    }

    let dir = tempfile::tempdir()?;
    let (server, url, server_process) = match (&args.server, args.server_pid) {
        (Some(url), pid) => (None, url.clone(), pid.map(Process::Pid)),
        (None, _) => {
            let listen = SocketAddr::from(([127, 0, 0, 1], 0));
            let mut config = ServerConfig::new(dir.path(), listen);
            config.database = Database::Sqlite;
            // Thousands of connections a second from each source address: the per-address
            // limits would measure the limiter, not the connections.
            config.limits.unauthenticated_per_sec_per_address = 0;
            config.limits.max_unauthenticated_connections = usize::MAX;
            let server = tacit_server::start(config).await?;
            let url = server.url();
            (Some(server), url, Some(Process::Current))
        }
    };
    println!(
        "server: {url} ({})",
        match (in_process, args.server_pid) {
            (true, _) =>
                "in this process, SQLite in a temporary directory, default limits but for the per-address connection rate (off) and the unauthenticated-connection cap (none)".to_owned(),
            (false, Some(pid)) => format!("pid {pid}"),
            (false, None) => "no --server-pid: its memory is not measured".to_owned(),
        }
    );
    let addr = server_address(&url).await?;
    let outcome = measure(&args, &url, addr, deadline, server_process).await;
    if let Some(server) = server {
        server.shutdown().await;
    }
    let (phases, memory, held, open, close_secs) = outcome;
    print_table(&phases, &memory, &fd, held, open, close_secs);
    if args.json {
        let summary = serde_json::json!({
            "bench": "connections",
            "count": args.count,
            "count_requested": requested,
            "server": args.server.clone().unwrap_or_else(|| "in-process".into()),
            "server_pid": args.server_pid,
            "timeout_secs": args.timeout,
            "hold_secs": HOLD.as_secs(),
            "source_addresses": addresses_used(args.count),
            "client_read_buffer_bytes": CLIENT_READ_BUFFER_BYTES,
            "fd_limit": fd,
            "phases": phases,
            "memory": memory,
            "held": held,
            "still_open_after_hold": open,
            "close_secs": close_secs,
        });
        println!("{summary}");
    }
    Ok(())
}

/// `--nodes N`: the connections over N server processes, one client process each.
async fn run_nodes(args: &ConnectionsArgs) -> Result<()> {
    let (Some(database), Some(nats)) = (args.database.clone(), args.nats.clone()) else {
        return Err(BenchError::InvalidArgs(
            "--nodes needs --database postgres://... and --nats nats://...".into(),
        ));
    };
    if !(database.starts_with("postgres://") || database.starts_with("postgresql://")) {
        return Err(BenchError::InvalidArgs(
            "--database must be a postgres:// URL".into(),
        ));
    }
    let share = cluster::shares(args.count, args.nodes)
        .into_iter()
        .max()
        .unwrap_or(0);
    // The nodes and workers inherit this process's limit.
    let fd = fdlimit::raise(fdlimit::fds_needed(share, false))?;
    cluster::check_fit(args.count, args.nodes, fd.soft)?;
    println!(
        "tacit bench connections: {} connections over {} nodes, {} source addresses (127.0.0.2 and up, {} ports each), timeout {} s, {} cores",
        args.count,
        args.nodes,
        addresses_used(args.count),
        source::CONNECTIONS_PER_SOURCE_ADDRESS,
        args.timeout,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "open-file limit per process: soft {} / hard {} (raised from soft {}); each node and each client process holds at most {share}",
        fd.soft, fd.hard, fd.soft_before
    );
    let settings = cluster::ClusterSettings {
        nodes: args.nodes,
        database,
        nats,
    };
    cluster::run(args, &settings, &fd).await
}

type Measured = (Vec<PhaseFigures>, Vec<MemoryFigures>, usize, usize, f64);

/// Registers, connects, holds, reads memory and closes; never fails (failures are counted).
async fn measure(
    args: &ConnectionsArgs,
    url: &str,
    addr: SocketAddr,
    deadline: Instant,
    server_process: Option<Process>,
) -> Measured {
    let run_tag: u32 = rand::random();
    let shared_url: Arc<str> = Arc::from(url);
    let job_url = shared_url.clone();
    let registered = phase::run(
        "register",
        args.count,
        args.register_concurrency,
        deadline,
        true,
        move |i| {
            let url = job_url.clone();
            async move {
                let source = source_address(Phase::Register, i)
                    .ok_or(BenchError::InvalidArgs("too many registrations".into()))?;
                Registered::register(&url, addr, source, format!("bc{i}-{run_tag:08x}")).await
            }
        },
    )
    .await;
    let mut phases = vec![PhaseFigures::new(
        "register",
        args.count,
        registered.done.len(),
        registered.failures,
        registered.first_error,
        registered.elapsed,
        registered.timed_out,
    )];

    let in_process = server_process == Some(Process::Current);
    let read = || {
        (
            server_process.and_then(rss_kib),
            (!in_process).then(|| rss_kib(Process::Current)).flatten(),
            slab_kib(),
        )
    };
    let before = read();
    let devices = Arc::new(registered.done);
    let job_devices = devices.clone();
    let job_url = shared_url.clone();
    let connected = phase::run(
        "connect",
        devices.len(),
        args.connect_concurrency,
        deadline,
        true,
        move |i| {
            let url = job_url.clone();
            let devices = job_devices.clone();
            async move {
                let source = source_address(Phase::Connect, i)
                    .ok_or(BenchError::InvalidArgs("too many connections".into()))?;
                devices[i].connect(&url, addr, source).await
            }
        },
    )
    .await;
    phases.push(PhaseFigures::new(
        "connect",
        devices.len(),
        connected.done.len(),
        connected.failures,
        connected.first_error,
        connected.elapsed,
        connected.timed_out,
    ));
    let mut held = connected.done;
    let hold_until = (Instant::now() + HOLD).min(deadline.max(Instant::now()));
    tokio::time::sleep_until(hold_until).await;
    let after = read();
    let open = held.iter_mut().map(still_open).filter(|&o| o).count();

    let n = held.len();
    let mut memory = Vec::new();
    if let Some(p) = server_process {
        let what = match p {
            Process::Current => "this process (server + clients)".to_owned(),
            Process::Pid(pid) => format!("server (pid {pid})"),
        };
        memory.push(MemoryFigures::new(what, before.0, after.0, n));
    }
    if !in_process {
        memory.push(MemoryFigures::new(
            "clients (this process)".to_owned(),
            before.1,
            after.1,
            n,
        ));
    }
    memory.push(MemoryFigures::new(
        "kernel slab (both ends, machine-wide)".to_owned(),
        before.2,
        after.2,
        n,
    ));

    let closing = Instant::now();
    close_all(held).await;
    (phases, memory, n, open, closing.elapsed().as_secs_f64())
}

/// Sends a Close frame on every connection (each within [`CLOSE_TIMEOUT`]) and drops them.
async fn close_all(held: Vec<Ws>) {
    futures_util::stream::iter(held)
        .for_each_concurrent(CLOSE_CONCURRENCY, |mut ws| async move {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        })
        .await;
}

/// The loopback IPv4 socket address of a `ws://` URL.
async fn server_address(url: &str) -> Result<SocketAddr> {
    let bad = |why: &str| BenchError::InvalidArgs(format!("--server {url}: {why}"));
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("ws") {
        return Err(bad(
            "use a ws:// URL (the bench drives loopback servers without TLS)",
        ));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let found = tokio::net::lookup_host((host, port)).await?;
    let mut addrs = found.filter(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback()));
    addrs
        .next()
        .ok_or_else(|| bad("not an IPv4 loopback address (only 127.0.0.0/8 is driven)"))
}

/// Refuses what cannot be measured.
fn check(args: &ConnectionsArgs) -> Result<()> {
    if args.count == 0 || args.count > MAX_CONNECTIONS {
        return Err(BenchError::InvalidArgs(format!(
            "--count must be between 1 and {MAX_CONNECTIONS}"
        )));
    }
    if args.register_concurrency == 0 || args.connect_concurrency == 0 || args.timeout == 0 {
        return Err(BenchError::InvalidArgs(
            "--register-concurrency, --connect-concurrency and --timeout must be positive".into(),
        ));
    }
    Ok(())
}
