//! `tacit device remove`, as a user runs it: one process per command against a real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{link_device, ok, start_server, tacit};

fn fails_with(profile: &std::path::Path, args: &[&str], expected: &str) {
    let out = tacit(profile, args);
    assert!(!out.status.success(), "tacit {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expected), "tacit {args:?}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_device_is_removed_from_the_command_line() {
    let root = tempfile::tempdir().unwrap();
    let server = start_server(root.path()).await;
    let url = server.url();
    let (alice, bob, phone) = (
        root.path().join("alice"),
        root.path().join("bob"),
        root.path().join("alice-phone"),
    );
    ok(&alice, &["account", "create", "alice", "--server", &url]);
    ok(&bob, &["account", "create", "bob", "--server", &url]);
    link_device(&alice, &phone, &url);
    // A conversation with both of alice's devices in it.
    ok(&alice, &["send", "bob", "hello"]);
    ok(&phone, &["sync"]);

    let devices = ok(&alice, &["devices"]);
    let this = devices
        .lines()
        .find(|l| l.contains("(this device)"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let lost = devices
        .lines()
        .find(|l| !l.contains("(this device)"))
        .unwrap()
        .trim()
        .to_string();

    // Mistakes get one clear line each.
    fails_with(
        &alice,
        &["device", "remove", &this],
        "remove it from another",
    );
    fails_with(
        &alice,
        &["device", "remove", "bob/0123456789abcdef"],
        "is a device of bob",
    );
    fails_with(&alice, &["device", "remove", "phone"], "is not a device");

    let out = ok(&alice, &["device", "remove", &lost]);
    assert!(
        out.contains(&format!("Removed {lost}: it can no longer connect")),
        "{out}"
    );
    assert!(
        out.contains("Removed it from 1 conversation(s): bob."),
        "{out}"
    );
    assert_eq!(ok(&alice, &["devices"]).lines().count(), 1);
    fails_with(&phone, &["sync"], "unknown or removed device");
    // Removing it again says it is gone.
    let id = lost.split('/').nth(1).unwrap();
    fails_with(&alice, &["device", "remove", id], "has no device");

    // The conversation goes on without it.
    ok(&bob, &["sync"]);
    ok(&bob, &["send", "alice", "still there?"]);
    assert!(ok(&alice, &["sync"]).contains("still there?"));

    server.shutdown().await;
}
