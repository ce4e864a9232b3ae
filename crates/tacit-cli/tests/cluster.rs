//! Two `tacit serve` processes as one service (shared PostgreSQL, NATS between them), used
//! through the `tacit` binary: a node killed with SIGKILL loses nothing, its clients move to the
//! other node; a node refuses a database schema newer than it knows.
//!
//! Needs `TACIT_TEST_POSTGRES_URL` and `TACIT_TEST_NATS_URL` (set by `.ci/run`); skipped, with a
//! line saying so, when they are unset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{json_lines, ok};
use tacit_server::testing::{env_url, free_port, TestDatabase, NATS_URL_VAR};

fn texts_from(json: &str, sender: &str) -> Vec<String> {
    json_lines(json)
        .into_iter()
        .filter(|e| e["event"] == "message" && e["sender"] == sender)
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

/// A `tacit serve` child process, killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    url: String,
}

impl Node {
    fn start(root: &Path, name: &str, database: &str, nats: &str, prefix: &str) -> Node {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_tacit"))
            .args(["serve", "--listen", &listen, "--node-id", name])
            .arg("--data")
            .arg(root.join(name))
            .args(["--database", database, "--nats", nats])
            .args(["--nats-subject-prefix", prefix])
            .env("TACIT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "{name} did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        Node {
            child,
            url: format!("ws://{listen}/v1"),
        }
    }

    /// SIGKILL: no shutdown, no goodbye to its clients.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn services(what: &str) -> Option<(TestDatabase, String)> {
    let Some(nats) = env_url(NATS_URL_VAR) else {
        eprintln!("skipped ({what}): {NATS_URL_VAR} is not set");
        return None;
    };
    Some((TestDatabase::create_or_skip(what)?, nats))
}

#[test]
fn a_killed_node_loses_nothing_and_its_clients_move_on() {
    let Some((db, nats)) = services("node killed") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let prefix = format!("tacit_cli_test_{:08x}", std::process::id());
    let mut n1 = Node::start(root.path(), "node-1", &db.url, &nats, &prefix);
    let n2 = Node::start(root.path(), "node-2", &db.url, &nats, &prefix);
    let (alice, bob) = (root.path().join("alice"), root.path().join("bob"));
    ok(&alice, &["account", "create", "alice", "--server", &n2.url]);
    // bob knows both nodes; node 1 comes first.
    let both = format!("{},{}", n1.url, n2.url);
    ok(&bob, &["account", "create", "bob", "--server", &both]);

    ok(&alice, &["send", "bob", "before the crash"]);
    assert_eq!(
        texts_from(&ok(&bob, &["sync", "--json"]), "alice"),
        vec!["before the crash"]
    );

    n1.kill();
    let sent: Vec<String> = (1..=3).map(|i| format!("after the crash {i}")).collect();
    for m in &sent {
        ok(&alice, &["send", "bob", m]);
    }
    assert_eq!(texts_from(&ok(&bob, &["sync", "--json"]), "alice"), sent);
    ok(&bob, &["send", "alice", "on node 2 now"]);
    assert_eq!(
        texts_from(&ok(&alice, &["sync", "--json"]), "bob"),
        vec!["on node 2 now"]
    );
    // Nothing is delivered twice.
    assert!(texts_from(&ok(&bob, &["sync", "--json"]), "alice").is_empty());
}

#[test]
fn a_node_refuses_a_schema_newer_than_it_knows() {
    let Some((db, nats)) = services("schema too new") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    drop(Node::start(
        root.path(),
        "node-1",
        &db.url,
        &nats,
        "tacit_cli_schema",
    ));
    let url = db.url.clone();
    std::thread::spawn(move || {
        let mut c = postgres_client(&url);
        c.execute(
            "INSERT INTO tacit_schema (version, name, applied_ms) VALUES (1000, 'from the future', 0)",
            &[],
        )
        .unwrap();
    })
    .join()
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tacit"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .arg("--data")
        .arg(root.path().join("node-2"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema version 1000") && stderr.contains("upgrade the server"),
        "{stderr}"
    );
    assert!(!stderr.contains(&db.url), "the database URL is not echoed");
}

fn postgres_client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}
