//! Running the `erpc` binary from the CLI tests.

use std::process::Command;
use std::sync::Mutex;

/// The benchmarks busy-poll two threads each, and measure: one at a time (the machines have 2
/// cores).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `erpc ARGS`, one run at a time within a test binary.
pub fn erpc(args: &[&str]) -> std::process::Output {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    Command::new(env!("CARGO_BIN_EXE_erpc")).args(args).output().expect("run erpc")
}

/// Runs `erpc ARGS`, which must succeed and print exactly one JSON object, and parses it.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = erpc(args);
    assert!(out.status.success(), "erpc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "exactly one JSON object: {text}");
    serde_json::from_str(text.trim()).expect("valid JSON")
}
