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
