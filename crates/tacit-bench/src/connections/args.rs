//! The settings of `tacit bench connections`.

use clap::Args;

/// Connections when `--count` is not given.
pub const DEFAULT_COUNT: usize = 1_000;
/// Overall time limit in seconds when `--timeout` is not given.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Registrations in flight when `--register-concurrency` is not given.
pub const DEFAULT_REGISTER_CONCURRENCY: usize = 64;
/// Connection set-ups (TCP, WebSocket handshake, Authenticate) in flight when
/// `--connect-concurrency` is not given.
pub const DEFAULT_CONNECT_CONCURRENCY: usize = 256;

/// `tacit bench connections`: how many authenticated idle WebSocket connections one Tacit
/// server holds, how fast they open, and what each costs in server memory.
#[derive(Args, Clone, Debug)]
pub struct ConnectionsArgs {
    /// Authenticated idle connections to open (one registered device each).
    #[arg(long, default_value_t = DEFAULT_COUNT)]
    pub count: usize,
    /// Tacit server URL to drive (ws://127.x.y.z:PORT/v1) instead of starting one in this
    /// process on 127.0.0.1 with SQLite in a temporary directory. Only loopback servers: the
    /// clients bind their sockets to several 127.0.0.0/8 source addresses, thousands a second
    /// each: start that server with `--unauthenticated-per-sec-per-address 0` and a
    /// `--max-unauthenticated-connections` above the count.
    #[arg(long)]
    pub server: Option<String>,
    /// Process id of the `--server`, to read its resident memory from /proc/PID/status.
    /// Without it the server's memory is not measured (only this process's).
    #[arg(long, requires = "server")]
    pub server_pid: Option<u32>,
    /// Overall time limit in seconds: registration and connecting stop when it is reached,
    /// and the figures say how far they got.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Account registrations in flight at once.
    #[arg(long, default_value_t = DEFAULT_REGISTER_CONCURRENCY)]
    pub register_concurrency: usize,
    /// Connection set-ups in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONNECT_CONCURRENCY)]
    pub connect_concurrency: usize,
    /// Spread the connections over this many `tacit serve` processes (nodes of one cluster on
    /// `--database` with `--nats` between them), each driven by a client process of its own: for
    /// counts past what one process's open-file limit allows. 0 (default): one server.
    #[arg(long, default_value_t = 0, conflicts_with = "server", requires_all = ["database", "nats"])]
    pub nodes: usize,
    /// With `--nodes`: the nodes' PostgreSQL database (a scratch one: the bench accounts stay
    /// in it).
    #[arg(long, env = "TACIT_BENCH_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// With `--nodes`: the NATS server between the nodes.
    #[arg(long, env = "TACIT_BENCH_NATS_URL")]
    pub nats: Option<String>,
    /// Print one JSON object with every figure as the last line of standard output. Set by the
    /// CLI from its global `--json` flag.
    #[arg(skip)]
    pub json: bool,
}
