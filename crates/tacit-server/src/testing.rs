//! Helpers for tests that run against the real scale-out services (feature `testing`).
//!
//! - [`TestDatabase`]: a PostgreSQL database of its own for one test, created from
//!   `TACIT_TEST_POSTGRES_URL` and dropped afterwards, so tests run in parallel and leave
//!   nothing behind.
//! - [`NatsProcess`]: a private `nats-server` child process on a free loopback port, which a
//!   test may stop and start again (to see a node live through a NATS outage).
//! - [`TcpProxy`]: a loopback TCP relay in front of a service; pausing it cuts every relayed
//!   connection and refuses new ones, as a restart of the service would, for one node only.
//!
//! When the variable that names a service is unset, the helpers say so on standard error and the
//! test is skipped; when it is set and the service cannot be reached, the test fails.
#![allow(clippy::expect_used)]

use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The variable naming the PostgreSQL server for tests (`postgres://user@host:port/db`).
pub const POSTGRES_URL_VAR: &str = "TACIT_TEST_POSTGRES_URL";
/// The variable naming the NATS server for tests (`nats://host:port`).
pub const NATS_URL_VAR: &str = "TACIT_TEST_NATS_URL";
/// The variable naming the `nats-server` binary (default: `/usr/sbin/nats-server`, else PATH).
pub const NATS_SERVER_BIN_VAR: &str = "TACIT_TEST_NATS_SERVER";

/// The value of `var`, if set and not empty.
pub fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// The `host:port` of a `postgres://` URL (port 5432 when absent).
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// `url` with its `host:port` replaced by `host_port` (user, database and parameters kept).
pub fn with_host_port(url: &str, host_port: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!("{scheme}://{}{host_port}{tail}", user.unwrap_or_default())
}

/// `url` with its database name replaced by `database` (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs blocking PostgreSQL work on a plain thread: the synchronous driver must not run on an
/// async runtime's thread, and tests call these helpers from both kinds.
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .expect("PostgreSQL helper thread panicked")
}

/// A PostgreSQL database created for one test; dropped (with any connections still open to it)
/// when this value is dropped.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl TestDatabase {
    /// Creates a fresh database on the server named by `TACIT_TEST_POSTGRES_URL`. Returns `None`
    /// (after saying so) when the variable is unset; panics when it is set and the server cannot
    /// be reached, so a misconfigured CI fails instead of skipping.
    pub fn create_or_skip(what: &str) -> Option<TestDatabase> {
        let Some(admin_url) = env_url(POSTGRES_URL_VAR) else {
            eprintln!("skipped ({what}): {POSTGRES_URL_VAR} is not set");
            return None;
        };
        let name = format!("tacit_test_{:016x}", rand::random::<u64>());
        let (admin, db) = (admin_url.clone(), name.clone());
        off_runtime(move || -> Result<(), postgres::Error> {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
            client.batch_execute(&format!("CREATE DATABASE {db}"))
        })
        .unwrap_or_else(|e| {
            panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unusable there: {e}")
        });
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// Closes every connection to this database from the server side, as a PostgreSQL restart
    /// would.
    pub fn terminate_connections(&self) {
        let (admin, db) = (self.admin_url.clone(), self.name.clone());
        off_runtime(move || -> Result<(), postgres::Error> {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
            client.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db],
            )?;
            Ok(())
        })
        .expect("terminating connections");
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, db) = (self.admin_url.clone(), self.name.clone());
        let dropped = off_runtime(move || -> Result<(), postgres::Error> {
            let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
            client.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; tests bind it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `nats-server` child process of the test's own, on a fixed loopback port so that it can be
/// stopped and started again at the same URL.
pub struct NatsProcess {
    port: u16,
    child: Option<Child>,
}

impl NatsProcess {
    /// Starts a private NATS server when the NATS tests are enabled (`TACIT_TEST_NATS_URL` set);
    /// `None` (after saying so) otherwise. Panics when enabled and `nats-server` cannot be run.
    pub fn start_or_skip(what: &str) -> Option<NatsProcess> {
        if env_url(NATS_URL_VAR).is_none() {
            eprintln!("skipped ({what}): {NATS_URL_VAR} is not set");
            return None;
        }
        let mut nats = NatsProcess {
            port: free_port(),
            child: None,
        };
        nats.start();
        Some(nats)
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&mut self) {
        let bin = env_url(NATS_SERVER_BIN_VAR).unwrap_or_else(|| {
            if std::path::Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server".into()
            } else {
                "nats-server".into()
            }
        });
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} (set {NATS_SERVER_BIN_VAR}): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay on a loopback port in front of `target`.
pub struct TcpProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

struct ProxyShared {
    target: String,
    paused: AtomicBool,
    listening: AtomicBool,
    stop: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
}

impl TcpProxy {
    /// Starts relaying connections to `target` (`host:port`).
    pub fn start(target: &str) -> TcpProxy {
        let shared = Arc::new(ProxyShared {
            target: target.to_owned(),
            paused: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
        });
        let port = free_port();
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(port, &shared))
        };
        let proxy = TcpProxy {
            port,
            shared,
            accept: Some(accept),
        };
        proxy.wait_listening(true);
        proxy
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts every relayed connection and refuses new ones until [`TcpProxy::resume`].
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        self.wait_listening(false);
        if let Ok(mut live) = self.shared.live.lock() {
            for s in live.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Accepts connections again, on the same port.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        self.wait_listening(true);
    }

    fn wait_listening(&self, listening: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.listening.load(Ordering::SeqCst) != listening {
            assert!(Instant::now() < deadline, "proxy did not change state");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.pause();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(port: u16, shared: &ProxyShared) {
    let mut listener: Option<TcpListener> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.paused.load(Ordering::SeqCst) {
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Some(l) = &listener else {
            match TcpListener::bind(("127.0.0.1", port)).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(l) => {
                    listener = Some(l);
                    shared.listening.store(true, Ordering::SeqCst);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            continue;
        };
        match l.accept() {
            Ok((client, _)) => relay(client, shared),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    shared.listening.store(false, Ordering::SeqCst);
}

/// Copies both ways between `client` and a new connection to the target.
fn relay(client: TcpStream, shared: &ProxyShared) {
    let Ok(server) = TcpStream::connect(&shared.target) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let pipes = (|| -> std::io::Result<_> {
        Ok((
            client.try_clone()?,
            server.try_clone()?,
            client.try_clone()?,
            server.try_clone()?,
        ))
    })();
    let Ok((mut c_read, mut s_write, c_keep, s_keep)) = pipes else {
        return;
    };
    let (mut s_read, mut c_write) = (server, client);
    if let Ok(mut live) = shared.live.lock() {
        live.push(c_keep);
        live.push(s_keep);
    }
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut s_read, &mut c_write);
        let _ = c_write.shutdown(Shutdown::Both);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_and_put_together() {
        assert_eq!(
            host_port("postgres://u@127.0.0.1:5432/test"),
            "127.0.0.1:5432"
        );
        assert_eq!(host_port("postgres://u:p@db/test?x=1"), "db:5432");
        assert_eq!(
            with_host_port("postgres://u:p@db:5432/test?x=1", "127.0.0.1:9"),
            "postgres://u:p@127.0.0.1:9/test?x=1"
        );
        assert_eq!(
            with_host_port("postgres://db/test", "127.0.0.1:9"),
            "postgres://127.0.0.1:9/test"
        );
    }

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5432/test", "x"),
            "postgres://u@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
