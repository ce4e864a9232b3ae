//! Shared test harness: a real server on an ephemeral loopback port and real clients, each with
//! its own profile directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tacit_client::profile::{KeyMode, Profile, Unlock};
use tacit_client::{Client, TlsOptions};
use tacit_core::{CoreConfig, Device, Event};

pub struct TestServer {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub url: String,
    pub running: Option<tacit_server::RunningServer>,
}

impl TestServer {
    pub async fn start(root: &Path) -> TestServer {
        Self::start_at(root.join("server"), "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_at(dir: PathBuf, addr: SocketAddr) -> TestServer {
        let config = tacit_server::ServerConfig::new(&dir, addr);
        let running = tacit_server::start(config).await.expect("server starts");
        TestServer {
            dir,
            addr: running.local_addr(),
            url: running.url(),
            running: Some(running),
        }
    }

    /// Stops the server and starts it again on the same data directory and port.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        let mut last = None;
        for _ in 0..50 {
            match tacit_server::start(tacit_server::ServerConfig::new(&self.dir, self.addr)).await {
                Ok(r) => {
                    self.running = Some(r);
                    return;
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        panic!("server did not restart: {last:?}");
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub fn new_client(root: &Path, name: &str) -> Client {
    let (_, store) = Profile::create(&root.join(name), KeyMode::KeyFile, &Unlock::None).unwrap();
    Client::new(
        Device::open(store, CoreConfig::default()).unwrap(),
        TlsOptions::default(),
    )
}

/// Re-opens a profile from disk (as after a client restart).
pub fn reopen_client(root: &Path, name: &str) -> Client {
    let (_, store) = Profile::open(&root.join(name), &Unlock::None).unwrap();
    Client::new(
        Device::open(store, CoreConfig::default()).unwrap(),
        TlsOptions::default(),
    )
}

pub async fn account(root: &Path, server: &TestServer, handle: &str) -> Client {
    let mut c = new_client(root, handle);
    c.create_account(handle, &server.url)
        .await
        .expect("account created");
    c
}

pub fn texts(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { sender, text, .. } => Some((sender.clone(), text.clone())),
            _ => None,
        })
        .collect()
}

pub fn texts_from(events: &[Event], from: &str) -> Vec<String> {
    texts(events)
        .into_iter()
        .filter(|(s, _)| s == from)
        .map(|(_, t)| t)
        .collect()
}

pub async fn group_id(client: &mut Client, name: &str) -> Vec<u8> {
    client
        .device()
        .find_conversation(name)
        .unwrap()
        .expect("conversation exists")
        .group_id
}
