//! Storage behind one trait, so that backends are interchangeable: SQLite (the embedded default,
//! one file) and PostgreSQL (shared by several server nodes). The SQL stays within the portable
//! subset that PostgreSQL-compatible distributed databases (CockroachDB, YugabyteDB) accept:
//! plain tables and indexes, `INSERT .. ON CONFLICT`, `UPDATE .. RETURNING`, `SELECT .. FOR
//! UPDATE`; no triggers, no server-side functions, no LISTEN/NOTIFY, no advisory locks.

mod migrate;
mod pipelined;
mod postgres;
mod sqlite;

pub use self::postgres::{PgOptions, PgStore};
pub use pipelined::{AfterCommit, Enqueued, Outcome, PipelinedWrites, Posted, Submitted};
pub use sqlite::SqliteStore;

/// A device's row id in the store.
pub type DeviceKey = i64;

/// What can go wrong in the store, in protocol terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The handle is registered already.
    #[error("the handle {0} is already taken")]
    HandleTaken(String),
    /// The user does not exist.
    #[error("no user {0}")]
    UnknownUser(String),
    /// A device with that id exists already.
    #[error("device {0} already exists")]
    DeviceExists(String),
    /// The user has no such device, or it was removed.
    #[error("{0} has no such device (removed already, or never registered)")]
    UnknownDevice(String),
    /// The group id is taken.
    #[error("a group with this id exists already")]
    GroupExists,
    /// No such group.
    #[error("no such group")]
    UnknownGroup,
    /// The device is not a member.
    #[error("this device is not a member of the group")]
    NotAMember,
    /// Commit against a past epoch.
    #[error("the group's epoch moved on to {0}; fetch what you missed and try again")]
    EpochMovedOn(u64),
    /// A limit was hit.
    #[error("{0}")]
    Limit(String),
    /// The database failed. The text is for the operator's log, never for clients.
    #[error("database error: {0}")]
    Db(String),
    /// The database cannot be reached right now (restarting, network trouble, pool exhausted).
    /// Nothing was written; the request may be retried.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a race with a concurrent one (serialization failure, deadlock) more
    /// often than the backend retries it; nothing was written and the request may be retried.
    #[error("the database was busy with conflicting updates")]
    Conflict,
    /// The schema in the database is newer than this build knows; the node must not run on it.
    #[error("the database has schema version {found}, newer than this server knows ({known}); upgrade the server before starting it on this database")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// The store was closed (the server is shutting down).
    #[error("the store is closed")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

/// A registered device.
#[derive(Clone, Debug)]
pub struct DeviceRecord {
    /// Row id.
    pub key: DeviceKey,
    /// User handle.
    pub handle: String,
    /// Device id.
    pub device_id: u64,
    /// Ed25519 public key.
    pub device_key: Vec<u8>,
}

/// A user in the directory.
#[derive(Clone, Debug)]
pub struct UserRecord {
    /// Identity public key.
    pub identity_key: Vec<u8>,
    /// Certificates of the user's devices.
    pub certificates: Vec<Vec<u8>>,
}

/// One claimed KeyPackage.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// For which device.
    pub device_id: u64,
    /// The KeyPackage.
    pub key_package: Vec<u8>,
    /// Whether it is the (reused) last-resort one.
    pub last_resort: bool,
}

/// One queued envelope.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Per-device sequence number.
    pub seq: u64,
    /// Envelope kind (protocol enum value).
    pub kind: i32,
    /// Group.
    pub group_id: Vec<u8>,
    /// Sender handle.
    pub sender_handle: String,
    /// Sender device.
    pub sender_device: u64,
    /// Opaque payload.
    pub payload: Vec<u8>,
    /// When it was queued.
    pub enqueued_ms: u64,
}

/// A commit to apply.
pub struct CommitRequest<'a> {
    /// Group.
    pub group_id: &'a [u8],
    /// Committing device.
    pub sender: &'a DeviceRecord,
    /// Epoch the commit was made against.
    pub epoch: u64,
    /// The commit.
    pub commit: &'a [u8],
    /// Welcome for added devices.
    pub welcome: &'a [u8],
    /// Added devices.
    pub added: &'a [(String, u64)],
    /// Removed devices.
    pub removed: &'a [(String, u64)],
}

/// The storage operations of the server. Every method is one transaction: it either happens
/// whole and durably, or not at all.
///
/// The methods are blocking; the server calls them from `tokio::task::spawn_blocking`, never
/// on the async runtime's worker threads (except [`Store::pipelined`]'s, which do not block). A
/// backend must be safe to call from many threads at once and must keep these promises under
/// concurrency:
/// - a one-time KeyPackage is handed out at most once;
/// - a group's epoch moves by compare-and-set: of two commits against one epoch, one wins;
/// - each device's queue gets gap-free, increasing sequence numbers;
/// - a send that would overflow any recipient's queue enqueues nothing.
pub trait Store: Send + Sync + 'static {
    /// Creates a user and its first device.
    fn create_account(
        &self,
        handle: &str,
        identity_key: &[u8],
        device_id: u64,
        device_key: &[u8],
        certificate: &[u8],
    ) -> Result<DeviceRecord, StoreError>;
    /// Adds a device to an existing user.
    fn add_device(
        &self,
        handle: &str,
        device_id: u64,
        device_key: &[u8],
        certificate: &[u8],
    ) -> Result<DeviceRecord, StoreError>;
    /// A device, if registered.
    fn device(&self, handle: &str, device_id: u64) -> Result<Option<DeviceRecord>, StoreError>;
    /// Removes a device of `handle` for good: marks it removed (so it can no longer
    /// authenticate and is left out of the directory), deletes its KeyPackages and its queue, and
    /// drops it from every group's routing, in one transaction. Returns its row id, or
    /// [`StoreError::UnknownDevice`] if `handle` has no such device that is not removed already.
    fn remove_device(&self, handle: &str, device_id: u64) -> Result<DeviceKey, StoreError>;
    /// Whether the device with this row id was removed (or does not exist).
    fn device_removed(&self, device: DeviceKey) -> Result<bool, StoreError>;
    /// A user, if registered.
    fn user(&self, handle: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Adds one-time KeyPackages and optionally replaces the last-resort one.
    fn upload_key_packages(
        &self,
        device: DeviceKey,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_stock: usize,
    ) -> Result<(), StoreError>;
    /// (one-time KeyPackages left, has a last-resort one).
    fn key_package_stock(&self, device: DeviceKey) -> Result<(u64, bool), StoreError>;
    /// One KeyPackage per device of `handle` (minus `exclude`): a one-time one, deleted as it is
    /// handed out, else the last-resort one.
    fn claim_key_packages(
        &self,
        handle: &str,
        exclude: &[u64],
    ) -> Result<(Vec<u8>, Vec<Claimed>), StoreError>;
    /// Registers a group at epoch 0 with one member.
    fn create_group(&self, group_id: &[u8], creator: DeviceKey) -> Result<(), StoreError>;
    /// Applies a commit (epoch compare-and-set, fan-out, routing changes) and returns the new
    /// epoch and the devices to notify.
    fn commit(
        &self,
        request: &CommitRequest<'_>,
        max_queue: usize,
        ttl_ms: u64,
    ) -> Result<(u64, Vec<DeviceKey>), StoreError>;
    /// Queues an application message for every other member; returns the devices to notify.
    fn send_message(
        &self,
        group_id: &[u8],
        sender: &DeviceRecord,
        message: &[u8],
        max_queue: usize,
        ttl_ms: u64,
    ) -> Result<Vec<DeviceKey>, StoreError>;
    /// Up to `limit` envelopes of `device` with seq > `after`, in order.
    fn fetch(&self, device: DeviceKey, after: u64, limit: usize)
        -> Result<Vec<Queued>, StoreError>;
    /// Deletes `device`'s envelopes with seq <= `up_to`.
    fn ack(&self, device: DeviceKey, up_to: u64) -> Result<(), StoreError>;
    /// The backend's pipelined writes, if it orders writes as they are submitted (SQLite's
    /// writer thread). `None` (the default, PostgreSQL): the server runs each connection's writes
    /// one after another through the blocking methods.
    fn pipelined(&self) -> Option<&dyn PipelinedWrites> {
        None
    }
    /// A group's epoch and members (members only).
    fn group_state(
        &self,
        group_id: &[u8],
        requester: DeviceKey,
    ) -> Result<(u64, Vec<(String, u64)>), StoreError>;
    /// Deletes expired envelopes; returns for how many devices some were deleted.
    fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// Flushes and closes the store. Every later call fails with [`StoreError::Closed`].
    /// Idempotent.
    fn close(&self) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
