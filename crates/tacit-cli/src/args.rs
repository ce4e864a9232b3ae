//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Tacit: end-to-end encrypted messaging. Only the people in a conversation can read it.
#[derive(Parser, Debug)]
#[command(name = "tacit", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every client command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// Profile directory of this device (its encrypted store and keys).
    #[arg(long, global = true, env = "TACIT_PROFILE")]
    pub profile: Option<PathBuf>,
    /// Print machine-readable JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Extra PEM CA certificate to trust for wss:// servers (e.g. a self-signed server).
    #[arg(long, global = true, env = "TACIT_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay server.
    Serve(ServeArgs),
    /// Start a server and clients for alice (two devices), bob and carol, and show them talking.
    Demo(DemoArgs),
    /// Manage this profile's account.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Link another device to this account.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// List this account's devices.
    Devices,
    /// Send a message to a handle (1:1) or a group (name or id).
    Send {
        /// A handle, a group name, or a conversation id.
        target: String,
        /// The message.
        text: String,
    },
    /// Create and manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// List conversations.
    Groups,
    /// Fetch and print what arrived since the last sync.
    Sync,
    /// Stay connected and print messages as they arrive (Ctrl-C to stop).
    Listen,
    /// Show a conversation's history from the local store.
    History {
        /// A handle, a group name, or a conversation id.
        target: String,
    },
    /// Show the safety number to compare with someone in person.
    SafetyNumber {
        /// Their handle.
        handle: String,
    },
    /// Load generators: measure a Tacit server (throughput against a minimal baseline, idle
    /// connections and their memory).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Delivered messages/s and latencies through Tacit, next to a minimal baseline relay under
    /// the same load (`ratio_vs_baseline`).
    Relay(tacit_bench::RelayArgs),
    /// Authenticated idle connections one server holds: time to open them and server memory
    /// (RSS) per connection.
    Connections(tacit_bench::ConnectionsArgs),
    /// One client process of `tacit bench connections --nodes N` (started by it, not by hand).
    #[command(hide = true)]
    ConnectionsWorker(tacit_bench::connections::WorkerArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Data directory (the SQLite database lives here).
    #[arg(long, env = "TACIT_DATA", default_value = "./tacit-data")]
    pub data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "TACIT_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM). Required unless listening on loopback.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log format: `pretty` or `json`.
    #[arg(long, default_value = "pretty")]
    pub log_format: String,
    /// PostgreSQL URL (postgres://user@host:port/db) to keep the state in, shared by every node
    /// of a cluster; without it the state is in SQLite in --data.
    #[arg(long, env = "TACIT_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Extra CA certificate (PEM) for a PostgreSQL URL with sslmode=require.
    #[arg(long, env = "TACIT_DATABASE_CA_CERT")]
    pub database_ca_cert: Option<PathBuf>,
    /// Most PostgreSQL connections this node opens.
    #[arg(long, env = "TACIT_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// NATS URL (nats://host:port) for delivery notices between nodes.
    #[arg(long, env = "TACIT_NATS_URL")]
    pub nats: Option<String>,
    /// First token of this cluster's NATS subjects (clusters sharing a NATS use different ones).
    #[arg(long, env = "TACIT_NATS_SUBJECT_PREFIX", default_value = "tacit")]
    pub nats_subject_prefix: String,
    /// This node's name in logs and on NATS (default: host name and a random suffix).
    #[arg(long, env = "TACIT_NODE_ID")]
    pub node_id: Option<String>,
    /// New connections and pre-authentication requests per second per client address (IPv4
    /// address or IPv6 /64); beyond it RATE_LIMITED. 0 turns the limit off.
    #[arg(long, env = "TACIT_UNAUTHENTICATED_PER_SEC_PER_ADDRESS", default_value_t = tacit_server::Limits::default().unauthenticated_per_sec_per_address)]
    pub unauthenticated_per_sec_per_address: u32,
    /// How many of those an address may use at once above the sustained rate.
    #[arg(long, env = "TACIT_UNAUTHENTICATED_BURST_PER_ADDRESS", default_value_t = tacit_server::Limits::default().unauthenticated_burst_per_address)]
    pub unauthenticated_burst_per_address: u32,
    /// Connections open at once that have not authenticated; beyond it new connections get
    /// UNAVAILABLE and are closed.
    #[arg(long, env = "TACIT_MAX_UNAUTHENTICATED_CONNECTIONS", default_value_t = tacit_server::Limits::default().max_unauthenticated_connections)]
    pub max_unauthenticated_connections: usize,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo's data directory and print its path.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Create a user with this device as its first device.
    Create {
        /// The handle (1-32 of a-z, 0-9, '_', '-', '.').
        handle: String,
        /// Server URL, e.g. ws://127.0.0.1:7878/v1 or wss://chat.example.org/v1. Several nodes
        /// of one service may be given, comma-separated: the client uses the first that answers.
        #[arg(long, env = "TACIT_SERVER")]
        server: String,
        /// Protect the local store with a key file (0600) instead of a passphrase.
        #[arg(long)]
        key_file: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// On an existing device: show a one-time code and wait for the new device to join.
    Link {
        /// Seconds to wait for the other device.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// On the new device: join the account that showed CODE.
    Join {
        /// The code shown by `tacit device link`.
        code: String,
        /// Server URL (or several nodes of one service, comma-separated).
        #[arg(long, env = "TACIT_SERVER")]
        server: String,
        /// Protect the local store with a key file (0600) instead of a passphrase.
        #[arg(long)]
        key_file: bool,
        /// Seconds to wait for the other device.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Remove another device of this account (lost or stolen): it can no longer connect, and
    /// this device removes it from every conversation.
    Remove {
        /// The device, as `tacit devices` shows it: `handle/0123456789abcdef` or just the
        /// 16 hex digits.
        device: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group with these members.
    Create {
        /// Group name.
        name: String,
        /// Members' handles.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Add members to a group.
    Add {
        /// Group name or id.
        group: String,
        /// Handles to add.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Remove members from a group.
    Remove {
        /// Group name or id.
        group: String,
        /// Handles to remove.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Leave a group.
    Leave {
        /// Group name or id.
        group: String,
    },
    /// Give this device fresh keys in a group (post-compromise security).
    UpdateKeys {
        /// Group name or id.
        group: String,
    },
}
