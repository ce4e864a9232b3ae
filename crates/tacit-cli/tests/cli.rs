//! The `tacit` binary as a user runs it: separate processes per command, profiles protected by
//! a passphrase from TACIT_PASSPHRASE, `--json` output, and one-line errors with exit code 1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};

use common::{json_lines, link_device, ok, start_server, tacit};

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_through_the_command_line() {
    let root = tempfile::tempdir().unwrap();
    let server = start_server(root.path()).await;
    let url = server.url();
    let (alice, bob, phone) = (
        root.path().join("alice"),
        root.path().join("bob"),
        root.path().join("alice-phone"),
    );

    let created = ok(&alice, &["account", "create", "alice", "--server", &url]);
    assert!(created.contains("Created alice"), "{created}");
    ok(
        &bob,
        &["--json", "account", "create", "bob", "--server", &url],
    );
    ok(&alice, &["send", "bob", "hello from the command line"]);

    let synced = json_lines(&ok(&bob, &["sync", "--json"]));
    assert!(
        synced.iter().any(|e| e["event"] == "message"
            && e["sender"] == "alice"
            && e["text"] == "hello from the command line"),
        "{synced:?}"
    );
    ok(&bob, &["send", "alice", "hi alice"]);
    let history = json_lines(&ok(&alice, &["history", "bob", "--json"]));
    let texts: Vec<_> = history
        .iter()
        .filter(|h| h["system"] == false)
        .map(|h| h["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        vec!["hello from the command line"],
        "not synced yet: only what alice sent"
    );
    ok(&alice, &["sync"]);
    let history = json_lines(&ok(&alice, &["history", "bob", "--json"]));
    assert_eq!(history.iter().filter(|h| h["system"] == false).count(), 2);

    // Groups.
    ok(&alice, &["group", "create", "team", "bob"]);
    ok(&alice, &["send", "team", "standup in 5"]);
    let synced = json_lines(&ok(&bob, &["sync", "--json"]));
    assert!(
        synced.iter().any(|e| e["text"] == "standup in 5"),
        "{synced:?}"
    );
    let groups = json_lines(&ok(&bob, &["groups", "--json"]));
    assert!(
        groups
            .iter()
            .any(|g| g["name"] == "team" && g["members"] == serde_json::json!(["alice", "bob"])),
        "{groups:?}"
    );

    // Safety numbers agree.
    let a = json_lines(&ok(&alice, &["safety-number", "bob", "--json"]));
    let b = json_lines(&ok(&bob, &["safety-number", "alice", "--json"]));
    assert_eq!(a[0]["digits"], b[0]["digits"]);

    // Linking a second device across two processes.
    let joined = link_device(&alice, &phone, &url);
    assert!(joined.contains("This device is now alice/"), "{joined}");
    let devices = ok(&phone, &["devices"]);
    assert_eq!(devices.lines().count(), 2, "{devices}");
    assert!(devices.contains("(this device)"));

    server.shutdown().await;
}

#[test]
fn errors_are_one_clear_line_with_a_failing_exit_code() {
    let root = tempfile::tempdir().unwrap();
    let out = tacit(&root.path().join("nobody"), &["send", "bob", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("account create"), "says what to do: {err}");

    // No passphrase and no terminal: refuses instead of prompting.
    let out = Command::new(env!("CARGO_BIN_EXE_tacit"))
        .args([
            "account",
            "create",
            "carol",
            "--server",
            "ws://127.0.0.1:9/v1",
        ])
        .env("TACIT_PROFILE", root.path().join("carol"))
        .env_remove("TACIT_PASSPHRASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TACIT_PASSPHRASE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_passphrase_is_refused_clearly() {
    let root = tempfile::tempdir().unwrap();
    let server = start_server(root.path()).await;
    let alice = root.path().join("alice");
    ok(
        &alice,
        &["account", "create", "alice", "--server", &server.url()],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tacit"))
        .args(["groups"])
        .env("TACIT_PROFILE", &alice)
        .env("TACIT_PASSPHRASE", "wrong")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    server.shutdown().await;
}
