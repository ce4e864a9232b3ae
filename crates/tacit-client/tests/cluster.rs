//! Several server nodes as one service: a shared PostgreSQL database (`TACIT_TEST_POSTGRES_URL`,
//! a fresh database per test) and NATS between the nodes (`TACIT_TEST_NATS_URL`, or a private
//! `nats-server` where the test stops and restarts it). Real clients, real MLS.
//!
//! The nodes re-read queues without a notice only once an hour here, so a message that arrives
//! on a connection that was already idle was pushed by a notice, not found by polling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tacit_client::Client;
use tacit_core::Event;
use tacit_server::testing::{
    env_url, host_port, with_host_port, NatsProcess, TcpProxy, TestDatabase, NATS_URL_VAR,
};
use tacit_server::{Database, NatsConfig, RunningServer, ServerConfig};
use tokio::sync::mpsc;

/// How long a test waits for one expected message before failing.
const WAIT: Duration = Duration::from_secs(60);

struct Cluster {
    database: TestDatabase,
    nats_url: String,
    subject_prefix: String,
    root: tempfile::TempDir,
}

impl Cluster {
    /// A database of its own and a NATS URL, or `None` when the services are not configured.
    fn new(what: &str, nats_url: Option<String>) -> Option<Cluster> {
        let nats_url = match nats_url {
            Some(u) => u,
            None => match env_url(NATS_URL_VAR) {
                Some(u) => u,
                None => {
                    eprintln!("skipped ({what}): {NATS_URL_VAR} is not set");
                    return None;
                }
            },
        };
        let database = TestDatabase::create_or_skip(what)?;
        Some(Cluster {
            database,
            nats_url,
            // Tests share one NATS: each cluster keeps to its own subjects.
            subject_prefix: format!("tacit_test_{:08x}", rand::random::<u32>()),
            root: tempfile::tempdir().unwrap(),
        })
    }

    async fn node(&self, name: &str) -> RunningServer {
        let mut config =
            ServerConfig::new(self.root.path().join(name), "127.0.0.1:0".parse().unwrap());
        config.database = Database::postgres(self.database.url.clone());
        config.nats = Some(NatsConfig {
            url: self.nats_url.clone(),
            subject_prefix: self.subject_prefix.clone(),
        });
        config.node_id = name.into();
        config.limits.delivery_poll_secs = 3600;
        tacit_server::start(config).await.expect("node starts")
    }

    async fn account(&self, handle: &str, servers: &str) -> Client {
        let mut c = new_client(self.root.path(), handle);
        c.create_account(handle, servers).await.expect("account");
        c
    }
}

/// Keeps `client` connected in the background and hands every message text it shows to the
/// returned channel. The client has synced first, so its connection is idle when this starts.
async fn listen(mut client: Client) -> mpsc::UnboundedReceiver<(String, String)> {
    client.sync().await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = client
            .listen(
                |e| {
                    if let Event::Message { sender, text, .. } = e {
                        let _ = tx.send((sender, text));
                    }
                },
                tokio::time::sleep(Duration::from_secs(600)),
            )
            .await;
    });
    rx
}

async fn next_text(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message arrived in time")
        .expect("listener alive")
}

#[tokio::test]
async fn messages_cross_nodes_by_push_one_to_one_and_in_groups() {
    let Some(cluster) = Cluster::new("cross-node delivery", None) else {
        return;
    };
    let n1 = cluster.node("node-1").await;
    let n2 = cluster.node("node-2").await;
    let mut alice = cluster.account("alice", &n1.url()).await;
    let bob = cluster.account("bob", &n2.url()).await;
    let mut carol = cluster.account("carol", &n2.url()).await;

    // 1:1: alice on node 1, bob listening on node 2.
    alice.send("bob", "hello across nodes").await.unwrap();
    let mut bob_rx = listen(bob).await;
    // The first message came in bob's backlog (his sync); from now on every one is pushed.
    alice.send("bob", "pushed 1").await.unwrap();
    alice.send("bob", "pushed 2").await.unwrap();
    assert_eq!(
        next_text(&mut bob_rx).await,
        ("alice".into(), "pushed 1".into())
    );
    assert_eq!(
        next_text(&mut bob_rx).await,
        ("alice".into(), "pushed 2".into())
    );

    // A group with members on both nodes; carol listens on node 2 too.
    carol.sync().await.unwrap();
    alice
        .create_group("both-nodes", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    let mut carol_rx = listen(carol).await;
    alice.send("both-nodes", "to the group").await.unwrap();
    assert_eq!(
        next_text(&mut bob_rx).await,
        ("alice".into(), "to the group".into())
    );
    assert_eq!(
        next_text(&mut carol_rx).await,
        ("alice".into(), "to the group".into())
    );

    // And back: a member on node 2 writes, alice (node 1) gets it.
    let mut dave = cluster.account("dave", &n2.url()).await;
    dave.send("alice", "from node 2").await.unwrap();
    let ev = alice.sync().await.unwrap();
    assert_eq!(texts_from(&ev, "dave"), vec!["from node 2"]);

    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn a_nats_outage_pauses_only_cross_node_pushes() {
    pushes_through_a_nats_outage("NATS outage", false).await;
}

#[tokio::test]
async fn nodes_start_without_nats_and_pick_it_up_when_it_comes() {
    pushes_through_a_nats_outage("NATS down at start", true).await;
}

/// alice and carol on node 1, bob on node 2, both listening. While NATS is down (from before the
/// nodes start, or from the middle of the run) same-node pushes go on and a cross-node message
/// waits in the database; when NATS is back that message is pushed, then new ones flow.
async fn pushes_through_a_nats_outage(what: &str, down_at_start: bool) {
    let Some(mut nats) = NatsProcess::start_or_skip(what) else {
        return;
    };
    let Some(cluster) = Cluster::new(what, Some(nats.url())) else {
        return;
    };
    if down_at_start {
        nats.stop();
    }
    // The nodes start and serve whether or not NATS is reachable.
    let n1 = cluster.node("node-1").await;
    let n2 = cluster.node("node-2").await;
    let mut alice = cluster.account("alice", &n1.url()).await;
    let bob = cluster.account("bob", &n2.url()).await;
    let carol = cluster.account("carol", &n1.url()).await;
    alice.send("bob", "hi bob").await.unwrap();
    alice.send("carol", "hi carol").await.unwrap();
    let mut bob_rx = listen(bob).await;
    let mut carol_rx = listen(carol).await;

    if !down_at_start {
        nats.stop();
    }
    // Same node: still pushed.
    alice.send("carol", "during the outage").await.unwrap();
    assert_eq!(
        next_text(&mut carol_rx).await,
        ("alice".into(), "during the outage".into())
    );
    // Other node: accepted and stored; it waits for NATS (or bob's next reconnect).
    alice.send("bob", "sent during the outage").await.unwrap();

    nats.start();
    // Back: the node wakes every local connection, then notices flow again.
    assert_eq!(
        next_text(&mut bob_rx).await,
        ("alice".into(), "sent during the outage".into())
    );
    alice.send("bob", "after the outage").await.unwrap();
    assert_eq!(
        next_text(&mut bob_rx).await,
        ("alice".into(), "after the outage".into())
    );
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test]
async fn a_node_that_dies_loses_nothing_its_clients_move_to_another() {
    let Some(cluster) = Cluster::new("node failure", None) else {
        return;
    };
    let n1 = cluster.node("node-1").await;
    let n2 = cluster.node("node-2").await;
    let both = format!("{},{}", n1.url(), n2.url());
    let mut alice = cluster.account("alice", &n2.url()).await;
    // bob knows both nodes and is on node 1 (the first that answers).
    let mut bob = cluster.account("bob", &both).await;
    alice.send("bob", "before").await.unwrap();
    assert_eq!(
        texts_from(&bob.sync().await.unwrap(), "alice"),
        vec!["before"]
    );

    n1.abort().await;
    let sent: Vec<String> = (0..5)
        .map(|i| format!("while node 1 is down {i}"))
        .collect();
    for m in &sent {
        alice.send("bob", m).await.unwrap();
    }
    // bob's next sync finds node 1 gone and takes node 2, where everything is waiting.
    bob.disconnect();
    let ev = bob.sync().await.unwrap();
    assert_eq!(texts_from(&ev, "alice"), sent);
    bob.send("alice", "still here").await.unwrap();
    assert_eq!(
        texts_from(&alice.sync().await.unwrap(), "bob"),
        vec!["still here"]
    );
    n2.shutdown().await;
}

#[tokio::test]
async fn a_database_restart_fails_requests_clearly_and_the_node_recovers_by_itself() {
    let Some(database) = TestDatabase::create_or_skip("PostgreSQL restart") else {
        return;
    };
    // The node reaches PostgreSQL through a relay that the test can cut, as a restart would.
    let proxy = TcpProxy::start(&host_port(&database.url));
    let root = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(root.path().join("node"), "127.0.0.1:0".parse().unwrap());
    config.database = Database::Postgres {
        url: with_host_port(&database.url, &proxy.addr()),
        options: tacit_server::store::PgOptions {
            connect_timeout_secs: 1,
            ..Default::default()
        },
    };
    let node = tacit_server::start(config).await.expect("node starts");
    let mut alice = new_client(root.path(), "alice");
    alice.create_account("alice", &node.url()).await.unwrap();
    let mut bob = new_client(root.path(), "bob");
    bob.create_account("bob", &node.url()).await.unwrap();
    alice.send("bob", "before the restart").await.unwrap();

    proxy.pause();
    let err = alice
        .send("bob", "during the restart")
        .await
        .expect_err("the database is down");
    let text = err.to_string();
    assert!(
        text.contains("storage is temporarily unavailable") && text.contains("kept in the outbox"),
        "{text}"
    );

    proxy.resume();
    // The same node, not restarted, serves again; the message kept in the outbox goes first.
    alice.send("bob", "after the restart").await.unwrap();
    let ev = bob.sync().await.unwrap();
    assert_eq!(
        texts_from(&ev, "alice"),
        vec![
            "before the restart",
            "during the restart",
            "after the restart"
        ]
    );
    node.shutdown().await;
}
