//! `--nodes N`: the connections spread over N `tacit serve` processes on one PostgreSQL database
//! with NATS between them (Tacit's scale-out set-up), each driven by a client process of its
//! own ([`super::worker`]).
//!
//! One process can hold only as many sockets as its open-file limit allows (20,000 on the
//! machines this was written on, where the limit cannot be raised), so a count past that needs
//! several server processes, exactly as a deployment would run several nodes. The parent
//! starts the nodes (each on its own loopback port, its own NATS subject prefix for this run),
//! starts one worker per node, and steps them through the phases together: every worker
//! registers its share, then — once the nodes' memory has been read — connects, holds, is
//! checked and closes. Memory per connection is the growth of the nodes' summed resident sets
//! divided by the connections held.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use super::args::ConnectionsArgs;
use super::fdlimit::{self, FdLimit};
use super::memory::{rss_kib, slab_kib, Process};
use super::report::{print_table, MemoryFigures, PhaseFigures};
use super::worker::{PhaseCounts, Report};
use super::HOLD;
use crate::error::{BenchError, Result};

/// Longest wait for a node to accept connections after it was started.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// PostgreSQL connections per node (the nodes share one PostgreSQL, whose default
/// `max_connections` is 100: 10 nodes of 8 leave room for everything else).
const NODE_DATABASE_CONNECTIONS: u32 = 8;
/// Longest wait for a worker's answer to `check` or `close`.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the nodes keep their state and which cluster they form.
pub(crate) struct ClusterSettings {
    /// Server processes.
    pub(crate) nodes: usize,
    /// Their PostgreSQL database (a scratch one: the bench accounts stay in it).
    pub(crate) database: String,
    /// Their NATS server.
    pub(crate) nats: String,
}

struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
    count: usize,
}

/// Splits `count` into `parts` shares that differ by at most one.
pub(crate) fn shares(count: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| count / parts + usize::from(i < count % parts))
        .collect()
}

/// Checks that `count` connections over `nodes` fit under one process's open-file limit
/// (`soft`), each node and each worker holding one share; the error names the `--nodes` that
/// would fit.
pub(crate) fn check_fit(count: usize, nodes: usize, soft: u64) -> Result<()> {
    let largest = shares(count, nodes).into_iter().max().unwrap_or(0);
    let fitting = fdlimit::connections_fitting(soft, false);
    if largest > fitting {
        let needed = count.div_ceil(fitting.max(1));
        return Err(BenchError::InvalidArgs(format!(
            "{count} connections over {nodes} nodes is {largest} per process, more than the {fitting} that fit under the open-file limit ({soft}); use --nodes {needed} or more"
        )));
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

async fn start_node(
    exe: &Path,
    dir: &Path,
    n: usize,
    run_tag: u32,
    settings: &ClusterSettings,
) -> Result<Node> {
    let port = free_port()?;
    let data = dir.join(format!("node-{n}"));
    std::fs::create_dir_all(&data)?;
    let log = dir.join(format!("node-{n}.log"));
    let out = std::fs::File::create(&log)?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(&data)
        .arg("--database")
        .arg(&settings.database)
        .arg("--nats")
        .arg(&settings.nats)
        .arg("--node-id")
        .arg(format!("bench-{run_tag:08x}-{n}"))
        .arg("--nats-subject-prefix")
        .arg(format!("tacit_bench_{run_tag:08x}"))
        .arg("--database-max-connections")
        .arg(NODE_DATABASE_CONNECTIONS.to_string())
        // Thousands of connections a second from each source address: measure the
        // connections, not the per-address limiter.
        .arg("--unauthenticated-per-sec-per-address")
        .arg("0")
        .arg("--max-unauthenticated-connections")
        .arg(usize::MAX.to_string())
        .env("TACIT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?;
    let mut node = Node { child, port, log };
    let ready_by = Instant::now() + NODE_START_TIMEOUT;
    loop {
        if let Some(status) = node.child.try_wait()? {
            return Err(BenchError::Setup(format!(
                "node {n} exited at start ({status}): {}",
                tail(&node.log)
            )));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", node.port))
            .await
            .is_ok()
        {
            return Ok(node);
        }
        if Instant::now() >= ready_by {
            return Err(BenchError::Setup(format!(
                "node {n} did not listen within {} s: {}",
                NODE_START_TIMEOUT.as_secs(),
                tail(&node.log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_worker(
    exe: &Path,
    dir: &Path,
    w: usize,
    url: &str,
    first: usize,
    count: usize,
    run_tag: u32,
    args: &ConnectionsArgs,
) -> Result<Worker> {
    let log = std::fs::File::create(dir.join(format!("worker-{w}.log")))?;
    let mut child = Command::new(exe)
        .args(["bench", "connections-worker", "--server", url])
        .arg("--first")
        .arg(first.to_string())
        .arg("--count")
        .arg(count.to_string())
        .arg("--run-tag")
        .arg(run_tag.to_string())
        .arg("--register-concurrency")
        .arg(
            args.register_concurrency
                .div_ceil(args.nodes.max(1))
                .to_string(),
        )
        .arg("--connect-concurrency")
        .arg(
            args.connect_concurrency
                .div_ceil(args.nodes.max(1))
                .to_string(),
        )
        .arg("--timeout")
        .arg(args.timeout.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(BenchError::Setup("a worker's pipes are missing".into()));
    };
    Ok(Worker {
        child,
        stdin,
        reports: BufReader::new(stdout).lines(),
        count,
    })
}

impl Worker {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn tell(&mut self, command: &str) -> Result<()> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn report(&mut self, until: Instant) -> Result<Report> {
        let line = tokio::time::timeout_at(until, self.reports.next_line())
            .await
            .map_err(|_| BenchError::Timeout("waiting for a worker's report"))??;
        let line = line.ok_or_else(|| {
            BenchError::Setup("a worker exited early (see its log in the run's directory)".into())
        })?;
        serde_json::from_str(&line)
            .map_err(|e| BenchError::Setup(format!("a worker's report is unreadable: {e}")))
    }
}

/// Adds up the workers' counts of one phase; the phase's time is the parent's wall clock.
fn merge(phase: &'static str, attempted: usize, counts: &[PhaseCounts], secs: f64) -> PhaseFigures {
    PhaseFigures::new(
        phase,
        attempted,
        counts.iter().map(|c| c.ok).sum(),
        counts.iter().map(|c| c.failed).sum(),
        counts.iter().find_map(|c| c.first_error.clone()),
        Duration::from_secs_f64(secs),
        counts.iter().any(|c| c.timed_out),
    )
}

fn sum_rss(pids: &[Option<u32>]) -> Option<u64> {
    pids.iter()
        .map(|p| p.and_then(|pid| rss_kib(Process::Pid(pid))))
        .sum()
}

/// Runs the whole multi-node measurement and prints its table (and JSON with `args.json`).
pub(crate) async fn run(
    args: &ConnectionsArgs,
    settings: &ClusterSettings,
    fd: &FdLimit,
) -> Result<()> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new()
        .prefix("tacit-bench-nodes")
        .tempdir()?;
    let run_tag: u32 = rand::random();
    let until = Instant::now() + Duration::from_secs(args.timeout) + STEP_TIMEOUT;
    println!(
        "{} nodes (`tacit serve` processes) on one PostgreSQL database with NATS between them, one client process each; logs in {}",
        settings.nodes,
        dir.path().display()
    );

    let mut nodes = Vec::new();
    for n in 0..settings.nodes {
        nodes.push(start_node(&exe, dir.path(), n + 1, run_tag, settings).await?);
    }
    let node_pids: Vec<Option<u32>> = nodes.iter().map(|n| n.child.id()).collect();
    let mut workers = Vec::new();
    let mut first = 0;
    for (w, count) in shares(args.count, settings.nodes).into_iter().enumerate() {
        let url = format!("ws://127.0.0.1:{}/v1", nodes[w].port);
        workers
            .push(start_worker(&exe, dir.path(), w + 1, &url, first, count, run_tag, args).await?);
        first += count;
    }
    let worker_pids: Vec<Option<u32>> = workers.iter().map(Worker::pid).collect();

    let started = Instant::now();
    let mut registered = Vec::new();
    for w in &mut workers {
        match w.report(until).await? {
            Report::Registered(c) => registered.push(c),
            other => return Err(unexpected("registered", &other)),
        }
    }
    let register_secs = started.elapsed().as_secs_f64();
    eprintln!("register: done by every worker in {register_secs:.1} s");

    let before = (sum_rss(&node_pids), sum_rss(&worker_pids), slab_kib());
    let started = Instant::now();
    for w in &mut workers {
        w.tell("connect").await?;
    }
    let mut connected = Vec::new();
    for w in &mut workers {
        match w.report(until).await? {
            Report::Connected(c) => connected.push(c),
            other => return Err(unexpected("connected", &other)),
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "connect: done by every worker in {connect_secs:.1} s; holding {} s",
        HOLD.as_secs()
    );
    tokio::time::sleep(HOLD).await;
    let after = (sum_rss(&node_pids), sum_rss(&worker_pids), slab_kib());

    let step = Instant::now() + STEP_TIMEOUT;
    let (mut held, mut open) = (0, 0);
    for w in &mut workers {
        w.tell("check").await?;
        match w.report(step).await? {
            Report::Checked { held: h, open: o } => {
                held += h;
                open += o;
            }
            other => return Err(unexpected("checked", &other)),
        }
    }
    let closing = Instant::now();
    for w in &mut workers {
        w.tell("close").await?;
    }
    for w in &mut workers {
        if let Report::Closed { .. } = w.report(step).await? {
        } else {
            return Err(BenchError::Setup("a worker did not close".into()));
        }
        let _ = w.child.wait().await;
    }
    let close_secs = closing.elapsed().as_secs_f64();
    for mut node in nodes {
        let _ = node.child.start_kill();
        let _ = node.child.wait().await;
    }

    let attempted: usize = workers.iter().map(|w| w.count).sum();
    let phases = vec![
        merge("register", attempted, &registered, register_secs),
        merge(
            "connect",
            registered.iter().map(|c| c.ok).sum(),
            &connected,
            connect_secs,
        ),
    ];
    let memory = vec![
        MemoryFigures::new(
            format!("servers ({} nodes, summed)", settings.nodes),
            before.0,
            after.0,
            held,
        ),
        MemoryFigures::new(
            format!("clients ({} worker processes, summed)", settings.nodes),
            before.1,
            after.1,
            held,
        ),
        MemoryFigures::new(
            "kernel slab (both ends, machine-wide)".to_owned(),
            before.2,
            after.2,
            held,
        ),
    ];
    print_table(&phases, &memory, fd, held, open, close_secs);
    if args.json {
        let summary = serde_json::json!({
            "bench": "connections",
            "count": args.count,
            "count_requested": args.count,
            "server": "nodes",
            "nodes": settings.nodes,
            "timeout_secs": args.timeout,
            "hold_secs": HOLD.as_secs(),
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

fn unexpected(wanted: &str, got: &Report) -> BenchError {
    BenchError::Setup(format!(
        "a worker reported {got:?} where {wanted:?} was due"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (count, parts) in [(100_000, 6), (7, 3), (3, 5), (0, 2)] {
            let s = shares(count, parts);
            assert_eq!(s.len(), parts);
            assert_eq!(s.iter().sum::<usize>(), count);
            let (min, max) = (s.iter().min(), s.iter().max());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1));
        }
    }

    #[test]
    fn a_share_past_the_limit_names_the_nodes_needed() {
        assert!(check_fit(100_000, 6, 20_000).is_ok());
        let err = check_fit(100_000, 5, 20_000).err().map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("--nodes 6")),
            "names 6 nodes"
        );
    }
}
