//! Builds and runs every example (cargo builds them for `cargo test`), over UDP on loopback,
//! and checks what each prints.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `target/<profile>/examples/<name>`: this test runs from `target/<profile>/deps/`.
fn example(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop();
    p.pop();
    p.push("examples");
    p.push(name);
    assert!(p.exists(), "{} not built: run `cargo test -p erpc-examples`", p.display());
    p
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name)).args(args).output().expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn hello_world_client_and_server() {
    let mut server = Command::new(example("hello_server"))
        .args(["127.0.0.1:0", "--count", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hello_server");
    let mut first = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut first).expect("read");
    let addr = first.trim().strip_prefix("serving on ").unwrap_or_else(|| panic!("server said {first:?}")).to_string();
    let out = run("hello_client", &[&addr]);
    assert_eq!(out.trim(), "response: hello");
    // The server exits by itself after its one request.
    for _ in 0..100 {
        if let Some(st) = server.try_wait().expect("wait") {
            assert!(st.success(), "hello_server exited with {st}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    panic!("hello_server did not exit after its request");
}

#[test]
fn hello_client_without_a_server_says_so() {
    // A free port nobody serves on.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new(example("hello_client")).arg(format!("127.0.0.1:{port}")).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no eRPC endpoint answered") || err.contains("no answer"), "{err}");
}

#[test]
fn nested_rpcs() {
    let out = run("nested", &[]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["front: NESTED", "front: RPCS", "front: IN", "front: RUST"]);
}

#[test]
fn background_handlers() {
    let out = run("background", &[]);
    assert!(out.starts_with("32 digests computed by the workers, all correct"), "{out}");
}
