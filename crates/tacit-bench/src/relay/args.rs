//! The settings of `tacit bench relay`.

use clap::{Args, ValueEnum};

/// Devices when `--devices` is not given: 32 sender→receiver pairs.
pub const DEFAULT_DEVICES: usize = 64;
/// Measured seconds when `--duration` is not given.
pub const DEFAULT_DURATION_SECS: u64 = 10;
/// SendMessage requests in flight per sender when `--window` is not given.
pub const DEFAULT_WINDOW: usize = 16;

/// What the clients put in the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Pre-built opaque payloads, no MLS in the clients: measures the server alone.
    Server,
    /// Real MLS in the clients: each device runs Tacit's client core (OpenMLS, encrypted local
    /// store on disk), sealing and opening every message.
    E2e,
}

/// `tacit bench relay`: delivered messages per second and latencies through a Tacit server,
/// next to a minimal baseline relay driven by the same clients in the same run.
#[derive(Args, Clone, Debug)]
pub struct RelayArgs {
    /// Tacit server URL to drive (ws:// or wss://) instead of starting one in this process on
    /// 127.0.0.1. Its own rate limits then apply; the baseline still runs in this process.
    #[arg(long)]
    pub server: Option<String>,
    /// Client connections, as devices/2 sender→receiver pairs (each pair a 1:1 group).
    #[arg(long, default_value_t = DEFAULT_DEVICES)]
    pub devices: usize,
    /// Total offered rate in messages per second, paced evenly over the senders; 0 or absent
    /// means saturation (every sender keeps --window messages in flight).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Most SendMessage requests in flight per sender (the whole load at saturation; a cap on
    /// a paced sender that falls behind).
    #[arg(long, default_value_t = DEFAULT_WINDOW)]
    pub window: usize,
    /// Measured seconds, after a one-second warm-up that is not counted.
    #[arg(long, default_value_t = DEFAULT_DURATION_SECS)]
    pub duration: u64,
    /// `server` (opaque payloads, isolating the server) or `e2e` (real MLS in the clients).
    #[arg(long, value_enum, default_value_t = Mode::Server)]
    pub mode: Mode,
    /// `--mode e2e`: where the client devices' encrypted stores go (a fresh directory inside
    /// this one per scenario, deleted afterwards). Default: the system's temporary directory.
    #[arg(long)]
    pub client_store_dir: Option<std::path::PathBuf>,
    /// PostgreSQL URL: also run an in-process Tacit node on this database (durable SQLite vs
    /// durable PostgreSQL). Use a scratch database: bench accounts with random names are left
    /// in it.
    #[arg(long, env = "TACIT_BENCH_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// NATS URL: with `--database`, also run two in-process Tacit nodes on that database with
    /// NATS between them, every message crossing from one node to the other.
    #[arg(long, env = "TACIT_BENCH_NATS_URL")]
    pub nats: Option<String>,
    /// Print one JSON object with every figure as the last line of standard output. Set by the
    /// CLI from its global `--json` flag.
    #[arg(skip)]
    pub json: bool,
}

impl RelayArgs {
    /// Sender→receiver pairs.
    pub fn pairs(&self) -> usize {
        self.devices / 2
    }

    /// The offered rate, `None` at saturation.
    pub fn paced_rate(&self) -> Option<u64> {
        self.rate.filter(|r| *r > 0)
    }
}
