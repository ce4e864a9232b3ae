//! Running the `tacit` binary as a user would, for the CLI tests: one process per command, the
//! profile given by TACIT_PROFILE and protected by a passphrase from TACIT_PASSPHRASE.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `tacit ARGS` on `profile`, with no standard input.
pub fn tacit(profile: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tacit"))
        .args(args)
        .env("TACIT_PROFILE", profile)
        .env("TACIT_PASSPHRASE", "correct horse battery staple")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `tacit ARGS` and returns its standard output; fails the test if the command failed.
pub fn ok(profile: &Path, args: &[&str]) -> String {
    let out = tacit(profile, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "tacit {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The JSON objects of `--json` output, one per line.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A Tacit server on SQLite in `root/server`, listening on an ephemeral loopback port.
pub async fn start_server(root: &Path) -> tacit_server::RunningServer {
    tacit_server::start(tacit_server::ServerConfig::new(
        root.join("server"),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap()
}

/// Links a new device in profile `new` to the account in profile `owner`, as two processes
/// would (`tacit device link` on the owner, `tacit device join CODE` on the new one); returns what
/// `device join` printed.
pub fn link_device(owner: &Path, new: &Path, url: &str) -> String {
    use std::io::{BufRead, BufReader};
    let mut link = Command::new(env!("CARGO_BIN_EXE_tacit"))
        .args(["--json", "device", "link", "--timeout-secs", "60"])
        .env("TACIT_PROFILE", owner)
        .env("TACIT_PASSPHRASE", "correct horse battery staple")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(link.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let code = first["code"].as_str().unwrap().to_string();
    let joined = ok(new, &["device", "join", &code, "--server", url]);
    assert!(link.wait().unwrap().success(), "tacit device link failed");
    joined
}
