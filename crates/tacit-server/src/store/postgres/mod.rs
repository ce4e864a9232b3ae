//! The PostgreSQL backend, for operators who run several server nodes on one database.
//!
//! Each method is one transaction at PostgreSQL's default isolation (READ COMMITTED) with
//! explicit row locks where a read decides a write: the group row (`FOR UPDATE`) orders commits,
//! device rows order each device's queue (sequence numbers, length, acknowledgments) and its
//! KeyPackage claims. Rows are locked in ascending id order where several are, so transactions
//! do not deadlock in the common case; a deadlock or serialization failure that happens anyway
//! (CockroachDB runs everything SERIALIZABLE) is retried a few times with jitter.
//!
//! TLS: when the URL asks for it (`sslmode=require`), the connection uses rustls and verifies the
//! server's certificate against the public web roots plus an optional CA of the operator's;
//! otherwise (no `sslmode`, `prefer` or `disable`) it is plain TCP — for a database on loopback or
//! a private network only.
//!
//! A lost connection (the database restarted, a network blip) fails the request with
//! [`StoreError::Unavailable`]; the pool checks each connection before handing it out and opens
//! fresh ones, so the node recovers by itself once the database is back.

use std::sync::RwLock;
use std::time::Duration;

use std::sync::Arc;

use ::postgres::config::SslMode;
use ::postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::*;

mod operations;
mod schema;
mod session;

use session::{Manager, Session, Tx};

pub(crate) use schema::MIGRATIONS;

type Pool = r2d2::Pool<Manager>;
type Conn = r2d2::PooledConnection<Manager>;

/// Connection pool settings.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most connections this node opens.
    pub max_connections: u32,
    /// How long a request waits for a free (or new) connection before failing as unavailable.
    pub connect_timeout_secs: u64,
    /// Extra CA certificates (PEM) to trust for `sslmode=require` connections, e.g. a private
    /// database CA.
    pub ca_certs_pem: Option<Vec<u8>>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            connect_timeout_secs: 5,
            ca_certs_pem: None,
        }
    }
}

/// How often a transaction that lost a serialization race or a deadlock is tried in all.
const MAX_TX_ATTEMPTS: u32 = 8;

/// The PostgreSQL store.
pub struct PgStore {
    /// `None` once closed.
    pool: RwLock<Option<Pool>>,
    /// How many pooled connections a request may find dead (after a database restart) before
    /// it fails as unavailable.
    dead_connection_retries: usize,
}

/// Maps a driver error: lost connections are "unavailable", lost races are "conflict" (retried),
/// the rest is a database error for the operator's log.
fn pg_err(e: ::postgres::Error) -> StoreError {
    if let Some(code) = e.code() {
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return StoreError::Conflict;
        }
        // Class 08 (connection exception) and 57P01-57P03 (shutting down, restarting).
        if code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            return StoreError::Unavailable(with_causes(&e));
        }
    }
    if e.is_closed() || e.as_db_error().is_none() {
        return StoreError::Unavailable(with_causes(&e));
    }
    StoreError::Db(with_causes(&e))
}

impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        pg_err(e)
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), applies migrations
    /// and refuses a schema newer than this build knows. Blocking: call it off the async
    /// runtime. The URL (which may hold a password) never appears in an error.
    pub fn open(url: &str, options: &PgOptions) -> Result<PgStore, StoreError> {
        let mut config: ::postgres::Config = url.parse().map_err(|_| {
            StoreError::Db(
                "the database URL is not a valid PostgreSQL URL (postgres://user@host:port/database)"
                    .into(),
            )
        })?;
        config
            .application_name("tacit-server")
            .connect_timeout(Duration::from_secs(options.connect_timeout_secs));
        // TLS only when asked for, and then verified; "prefer" would otherwise fail on any
        // server with an unverifiable certificate rather than fall back.
        if config.get_ssl_mode() != SslMode::Require {
            config.ssl_mode(SslMode::Disable);
        }
        let tls = tls_connector(options)?;
        let manager = Manager {
            config: config.clone(),
            tls: tls.clone(),
        };
        // Connections are not pinged before use (that would cost a round trip per request): a
        // dead one fails its first statement, is dropped by the pool, and the request is tried
        // again on another (see `tx` and `read`).
        let pool = r2d2::Pool::builder()
            .max_size(options.max_connections)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(options.connect_timeout_secs))
            .test_on_check_out(false)
            .error_handler(Box::new(PoolErrorLog))
            .build(manager)
            .map_err(|e| {
                // The pool keeps only the first line of its last error; one direct attempt
                // says why (refused, unknown database, authentication, TLS).
                let why = match config.connect(tls) {
                    Err(direct) => with_causes(&direct),
                    Ok(_) => with_causes(&e),
                };
                StoreError::Unavailable(format!("cannot connect to PostgreSQL: {why}"))
            })?;
        let store = PgStore {
            pool: RwLock::new(Some(pool)),
            dead_connection_retries: options.max_connections as usize + 1,
        };
        store.migrate()?;
        Ok(store)
    }

    fn pool(&self) -> Result<Pool, StoreError> {
        self.pool
            .read()
            .map_err(|_| StoreError::Db("pool lock poisoned".into()))?
            .clone()
            .ok_or(StoreError::Closed)
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.pool()?
            .get()
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
    }

    /// Creates the version table and applies the missing steps, each in one transaction that
    /// first claims its version row: of several nodes starting at once, one applies a step and
    /// the others wait for it, then see it done.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        // Concurrent `CREATE TABLE IF NOT EXISTS` may collide in the catalog; once more is enough.
        if conn.batch_execute(schema::VERSION_TABLE).is_err() {
            conn.batch_execute(schema::VERSION_TABLE)?;
        }
        loop {
            let current: i64 = conn
                .query_one("SELECT COALESCE(MAX(version), 0) FROM tacit_schema", &[])?
                .get(0);
            let Some(step) = migrate::pending(current, MIGRATIONS)?.first() else {
                return Ok(());
            };
            let mut tx = conn.transaction()?;
            // A node starting at the same time waits here for the first one's commit, then
            // claims nothing and sees the step applied.
            let claimed = tx.execute(
                "INSERT INTO tacit_schema (version, name, applied_ms) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
                &[&step.version, &step.name, &(now_ms() as i64)],
            )?;
            if claimed == 1 {
                tracing::info!(
                    version = step.version,
                    step = step.name,
                    "migrating the PostgreSQL schema"
                );
                tx.batch_execute(step.sql)?;
                tx.commit()?;
            }
        }
    }

    /// Runs `f` in one transaction, retrying it whole when it lost a race (serialization failure
    /// or deadlock), or when the pooled connection turned out dead before the transaction began.
    /// Anything else rolls back and is returned.
    fn tx<T>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conflicts = 0;
        let mut dead = 0;
        loop {
            let mut conn = self.conn()?;
            let mut tx = match conn.transaction() {
                Ok(tx) => tx,
                Err(StoreError::Unavailable(_)) if dead < self.dead_connection_retries => {
                    dead += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let result = f(&mut tx).and_then(|out| tx.commit().map(|()| out));
            match result {
                Err(StoreError::Conflict) if conflicts + 1 < MAX_TX_ATTEMPTS => {
                    conflicts += 1;
                    let ms = rand::random::<u64>() % (5 << conflicts.min(6));
                    std::thread::sleep(Duration::from_millis(ms));
                }
                other => return other,
            }
        }
    }

    /// Runs a read outside a transaction (one statement is one consistent snapshot), retrying it
    /// on another connection when the pooled one turned out dead.
    fn read<T>(
        &self,
        mut f: impl FnMut(&mut Session) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut dead = 0;
        loop {
            let mut conn = self.conn()?;
            match f(&mut conn) {
                Err(StoreError::Unavailable(_)) if dead < self.dead_connection_retries => dead += 1,
                other => return other,
            }
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The synchronous driver blocks on its own runtime when a connection closes, which is
        // not allowed on an async worker thread: let the pool go on a plain thread.
        if let Ok(mut guard) = self.pool.write() {
            if let Some(pool) = guard.take() {
                let _ = std::thread::Builder::new()
                    .name("tacit-pg-close".into())
                    .spawn(move || drop(pool));
            }
        }
    }
}

/// An error and its causes in one line ("error connecting to server: Connection refused"); the
/// driver's errors keep the useful part in their sources. Connection errors never contain the
/// URL or password.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// rustls with the public web roots plus the operator's CA certificates, if any.
fn tls_connector(options: &PgOptions) -> Result<MakeRustlsConnect, StoreError> {
    let bad = |e: String| StoreError::Db(format!("the database CA certificate is unusable: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = &options.ca_certs_pem {
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Logs connection failures of the pool once per failure, without the URL.
#[derive(Debug)]
struct PoolErrorLog;

impl r2d2::HandleError<::postgres::Error> for PoolErrorLog {
    fn handle_error(&self, error: ::postgres::Error) {
        tracing::warn!("PostgreSQL connection failed: {}", with_causes(&error));
    }
}

#[cfg(test)]
mod tests;
