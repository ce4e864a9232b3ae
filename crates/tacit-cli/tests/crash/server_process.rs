//! `tacit serve` as a child process on a fixed data directory and loopback port, killed with
//! SIGKILL and started again on both.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tacit serve` child process (SQLite in `data`), killed when dropped.
pub struct ServerProcess {
    child: Option<Child>,
    data: PathBuf,
    log: PathBuf,
    listen: String,
    /// The URL clients use.
    pub url: String,
}

impl ServerProcess {
    /// Starts a server on a free loopback port; its data and log live under `root`.
    pub fn start(root: &Path) -> ServerProcess {
        let listen = format!("127.0.0.1:{}", tacit_server::testing::free_port());
        let mut s = ServerProcess {
            child: None,
            data: root.join("server-data"),
            log: root.join("server.log"),
            url: format!("ws://{listen}/v1"),
            listen,
        };
        s.restart();
        s
    }

    /// Starts the server (again) on the same data directory and port, and waits until it
    /// listens. A start that fails (e.g. the port is not free yet) is retried, bounded.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_tacit"))
                .args(["serve", "--listen", &self.listen, "--node-id", "crash"])
                .arg("--data")
                .arg(&self.data)
                .env("TACIT_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            loop {
                if TcpStream::connect(&self.listen).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("tacit serve exited ({status}) while starting; retrying");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "tacit serve did not listen on {} within 60 s; see {}",
                    self.listen,
                    self.log.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                Instant::now() < deadline,
                "tacit serve did not start within 60 s; see {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL: no shutdown, no goodbye to its clients, nothing flushed by the server itself.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
