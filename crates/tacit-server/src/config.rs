//! Server configuration. Every limit has a unit in its name and a default chosen on purpose.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::notifier::NatsConfig;
use crate::store::PgOptions;

/// TLS certificate chain and private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert_path: PathBuf,
    /// Private key (PEM).
    pub key_path: PathBuf,
}

/// Bounds on what clients may send and store. Each field says what happens beyond it and with
/// which error code; `README.md` ("Limits") lists them with their defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest frame accepted and answered with a decoded reply; larger frames up to twice this
    /// get a FRAME_TOO_LARGE error, beyond that the WebSocket layer closes the connection.
    pub max_frame_bytes: usize,
    /// Largest frame accepted before the connection is authenticated (enough for
    /// RegisterAccount, RegisterDevice and a device-link payload of
    /// `tacit_proto::limits::MAX_LINK_PAYLOAD_BYTES`); larger ones get FRAME_TOO_LARGE ("...
    /// authenticate first") and are not decoded, so an anonymous peer cannot make the decoder
    /// allocate more than `max_decode_alloc_bytes` of this. The connection stays open.
    pub max_unauthenticated_frame_bytes: usize,
    /// Sustained rate, per client address (an IPv4 address, an IPv6 /64), of new connections
    /// and of requests sent before authenticating; 0 turns the limit off. A new connection
    /// beyond it gets one RATE_LIMITED error frame (with `retry_after_ms`) in place of the
    /// challenge and is closed; a request beyond it is answered RATE_LIMITED (with
    /// `retry_after_ms`) and the connection stays open until its authentication deadline.
    pub unauthenticated_per_sec_per_address: u32,
    /// How many of those an address may use at once above the sustained rate.
    pub unauthenticated_burst_per_address: u32,
    /// Addresses whose rate is tracked at once. Addresses idle long enough for their bucket to
    /// refill are forgotten; while the table is full of busy addresses, connections from new
    /// addresses get RATE_LIMITED (with `retry_after_ms`) and are closed.
    pub max_tracked_addresses: usize,
    /// Connections open at once that are not (yet) authenticated, in all: WebSocket upgrades
    /// and connections that have not signed in or are relaying a device link. Beyond it a new
    /// connection gets one UNAVAILABLE error frame (with `retry_after_ms`) in place of the
    /// challenge and is closed; authenticated connections are not counted and keep being served.
    pub max_unauthenticated_connections: usize,
    /// How long a client has to send a complete HTTP request (the WebSocket upgrade, or any
    /// later request on a kept-alive connection) after the TCP connection (and TLS handshake)
    /// is accepted; a client still sending headers then is disconnected (slow-loris). TLS
    /// handshakes have their own 10 s limit.
    pub max_http_request_secs: u64,
    /// Envelopes waiting per device before sends to it are refused, whole (LIMIT_EXCEEDED).
    pub max_queue_len_per_device: usize,
    /// One-time KeyPackages kept per device; an upload beyond it is refused (LIMIT_EXCEEDED).
    pub max_key_packages_per_device: usize,
    /// Sustained rate, in requests per second, of the costly requests of one device
    /// (SendMessage, SendCommit, ClaimKeyPackages, UploadKeyPackages); beyond it RATE_LIMITED.
    pub messages_per_sec_per_device: u32,
    /// How many of those requests a device may send at once above the sustained rate.
    pub burst_per_device: u32,
    /// How long an unacknowledged envelope is kept.
    pub message_ttl_secs: u64,
    /// How long a connection may stay unauthenticated (and idle, for device-link relays); then it
    /// gets NOT_AUTHENTICATED and is closed.
    pub max_unauthenticated_secs: u64,
    /// How long a device-link slot lives.
    pub link_slot_ttl_secs: u64,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace_secs: u64,
    /// How often a connected device's queue is re-read even without a notice (a notice lost in
    /// transit between nodes delays a message by at most this).
    pub delivery_poll_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: tacit_proto::limits::MAX_FRAME_BYTES,
            max_unauthenticated_frame_bytes: 16 * 1024,
            unauthenticated_per_sec_per_address: 20,
            unauthenticated_burst_per_address: 100,
            max_tracked_addresses: 65_536,
            max_unauthenticated_connections: 10_000,
            max_http_request_secs: 10,
            max_queue_len_per_device: 100_000,
            max_key_packages_per_device: 1_000,
            messages_per_sec_per_device: 50,
            burst_per_device: 200,
            message_ttl_secs: 30 * 24 * 3600,
            max_unauthenticated_secs: 10,
            link_slot_ttl_secs: 600,
            shutdown_grace_secs: 5,
            delivery_poll_secs: 30,
        }
    }
}

/// Where the server keeps its state.
#[derive(Clone, Debug)]
pub enum Database {
    /// SQLite: `tacit-server.db` in the data directory (the embedded default, one node).
    Sqlite,
    /// SQLite that does not wait for the disk (`synchronous=OFF`). **For benchmarks only**, to
    /// measure what durability costs: an acknowledged message can be lost on power loss. Not
    /// offered by `tacit serve`.
    SqliteNotDurable,
    /// PostgreSQL at this URL, shared by every node of a cluster.
    Postgres {
        /// `postgres://user[:password]@host[:port]/database`; never logged.
        url: String,
        /// Pool settings.
        options: PgOptions,
    },
}

impl Database {
    /// PostgreSQL at `url` with default pool settings.
    pub fn postgres(url: impl Into<String>) -> Self {
        Database::Postgres {
            url: url.into(),
            options: PgOptions::default(),
        }
    }
}

/// Everything `start` needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Data directory; the SQLite database is `tacit-server.db` in it.
    pub data_dir: PathBuf,
    /// Which database holds the state.
    pub database: Database,
    /// NATS for notices between nodes; `None` for a single node.
    pub nats: Option<NatsConfig>,
    /// This node's name in logs and on NATS.
    pub node_id: String,
    /// Listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS; required unless `listen` is a loopback address.
    pub tls: Option<TlsConfig>,
    /// Limits.
    pub limits: Limits,
    /// Serve plain ws:// on a non-loopback address anyway (tests in private networks only).
    pub allow_insecure_non_loopback: bool,
}

impl ServerConfig {
    /// A configuration with default limits and no TLS.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            database: Database::Sqlite,
            nats: None,
            node_id: default_node_id(),
            listen,
            tls: None,
            limits: Limits::default(),
            allow_insecure_non_loopback: false,
        }
    }
}

/// A node id unique enough to tell nodes apart in logs: the host name and a random suffix.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}
