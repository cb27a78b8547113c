//! The `erpc` command as a user runs it: `erpc bench` over UDP on loopback, and its errors.
//!
//! What it covers: `erpc bench latency|rate|bandwidth` over UDP with both ends in one process (one
//! JSON object with the percentiles and the raw-UDP reference), `rate --threads 2` over the
//! in-memory NIC and UDP, over AF_XDP on a veth pair (and no
//! namespace left behind), one-line errors for user mistakes, and a `--connect` to a server whose
//! sessions are all taken says that the server refused and why.

mod common;

use common::{erpc, json};
use std::process::Command;

#[test]
fn bench_latency_over_udp_runs_both_ends_and_reports_percentiles() {
    let v = json(&["bench", "latency", "--duration", "0.3", "--json"]);
    assert_eq!(v["transport"], "udp", "UDP is the default transport");
    assert_eq!(v["mode"], "latency");
    assert_eq!(v["failed"], 0);
    // Few on a loaded 2-core machine, where a busy-polling thread can lose its core for a
    // scheduler tick (more than 10 in 0.3 s failed now and then at load 7); the point is that
    // both ends ran and measured.
    assert!(v["rpcs"].as_u64().unwrap() >= 1, "{v}");
    for k in ["p50_us", "p99_us", "p999_us", "rpcs_per_sec", "reference_p50_us"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
    assert!(v["p50_us"].as_f64() <= v["p99_us"].as_f64(), "{v}");
}

/// `erpc jitter`: the clock-gap scan and the fixed work of each size, timed. Under load the
/// tail may be anything; the medians must be the sizes asked for (the calibration works).
#[test]
fn jitter_times_fixed_work_of_each_size_and_counts_interruptions() {
    let v = json(&["jitter", "--duration", "0.3", "--work-us", "2,20", "--json"]);
    let lost = v["time_lost"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&lost), "{v}");
    // What the scan counts is longer than the threshold, and the time lost is their sum.
    if v["interruptions_per_sec"].as_f64().unwrap() > 0.0 {
        let (p50, max) = (v["interruption_p50_us"].as_f64().unwrap(), v["interruption_max_us"].as_f64().unwrap());
        assert!(p50 >= 1.5 && max >= p50 && lost > 0.0, "{v}");
    }
    let w = v["work"].as_array().unwrap();
    assert_eq!(w.len(), 2, "{v}");
    for (x, target) in w.iter().zip([2.0, 20.0]) {
        let (p50, p99) = (x["p50_us"].as_f64().unwrap(), x["p99_us"].as_f64().unwrap());
        assert!(x["runs"].as_u64().unwrap() > 100, "{x}");
        assert!(p50 > 0.5 * target && p50 < 2.0 * target, "calibrated to {target} µs: {x}");
        assert!(p99 >= p50 && x["p99_over_p50"].as_f64().unwrap() >= 1.0, "{x}");
    }
}

#[test]
fn bench_rate_and_bandwidth_over_udp() {
    let v = json(&["bench", "rate", "--transport", "udp", "--duration", "0.3", "--json"]);
    assert!(v["rpcs_per_sec"].as_f64().unwrap() > 100.0 && v["failed"] == 0, "{v}");
    let v = json(&["bench", "bandwidth", "--size", "262144", "--duration", "0.3", "--json"]);
    assert!(v["gbps"].as_f64().unwrap() > 0.0 && v["failed"] == 0, "{v}");
}

/// `--threads N`: N pairs on N threads after one pair alone, over the in-memory NIC and UDP.
/// The rates prove both runs measured; the scaling itself is for BENCHMARKS.md on a quiet
/// machine, not for a test.
#[test]
fn bench_rate_with_threads_reports_every_thread_and_the_one_thread_reference() {
    for t in ["sim", "udp"] {
        let v = json(&["bench", "rate", "--transport", t, "--threads", "2", "--duration", "0.3", "--json"]);
        assert_eq!(v["threads"], 2, "{v}");
        let per = v["per_thread_rpcs_per_sec"].as_array().expect("per-thread rates");
        assert_eq!(per.len(), 2, "{v}");
        assert!(per.iter().all(|r| r.as_f64().is_some_and(|x| x > 100.0)), "every thread ran: {v}");
        assert!(v["reference_rpcs_per_sec"].as_f64().is_some_and(|x| x > 100.0), "{v}");
        let sum: f64 = per.iter().map(|r| r.as_f64().unwrap()).sum();
        assert!((v["rpcs_per_sec"].as_f64().unwrap() - sum).abs() < 1.0, "the aggregate is the sum: {v}");
        assert!(v["scaling"].as_f64().is_some_and(|x| x > 0.0) && v["failed"] == 0, "{v}");
    }
}

/// An mlx5 client command line, cut short to make each mistake.
const MLX5_CLIENT: [&str; 13] = [
    "bench",
    "latency",
    "--transport",
    "mlx5",
    "--pci",
    "0000:99:00.0",
    "--json",
    "--connect",
    "10.0.0.1:1",
    "--bind",
    "10.0.0.2:1",
    "--peer-mac",
    "02:00",
];

#[test]
fn user_mistakes_get_one_line_and_a_failure_exit() {
    for (args, want) in [
        (&["bench", "latency", "--transport", "sim", "--server", "127.0.0.1:9"][..], "apply to --transport udp"),
        (&["bench", "latency", "--interface", "lo"][..], "--interface applies to --transport afxdp"),
        (&["bench", "latency", "--transport", "afxdp", "--server", "10.0.0.1:31850"][..], "needs --interface"),
        (
            &["bench", "latency", "--transport", "afxdp", "--server", "10.0.0.1:31850", "--interface", "nope0"][..],
            "no interface `nope0`",
        ),
        (&["bench", "latency", "--connect", "127.0.0.1:9", "--duration", "0.1"][..], "no eRPC server answered"),
        (&["bench", "latency", "--connect", "127.0.0.1:0"][..], "connecting to udp 127.0.0.1:0: give the server's"),
        (&["echo", "--connect", "127.0.0.1:0"][..], "not 0"),
        (&["bench", "latency", "--server", "0.0.0.0:31850"][..], "not 0.0.0.0"),
        (&["bench", "latency", "--connect", "10.0.0.9:31850"][..], "needs --bind"),
        (&["bench", "latency", "--transport", "mlx5"][..], "needs --pci"),
        (&["bench", "latency", "--pci", "0000:99:00.0"][..], "apply to --transport mlx5"),
        (&["bench", "latency", "--threads", "2"][..], "--threads applies to `erpc bench rate`"),
        (&["bench", "rate", "--threads", "0"][..], "--threads must be 1..=64"),
        (&["bench", "rate", "--threads", "2", "--transport", "mlx5"][..], "sim, udp or afxdp"),
        (&["bench", "rate", "--xdp-mode", "generic"][..], "--xdp-mode applies to --transport afxdp"),
        (&["jitter", "--work-us", "0"][..], "--work-us sizes must be 0.01 to"),
        (&["jitter", "--gap-us", "inf"][..], "--gap-us must be"),
        (
            &["bench", "rate", "--transport", "afxdp", "--threads", "2", "--xdp-mode", "generic"][..],
            "does not work with --threads",
        ),
        (&MLX5_CLIENT[..7], "one end per machine"),
        (&MLX5_CLIENT[..11], "needs --peer-mac"),
        (&MLX5_CLIENT[..], "aa:bb:cc:dd:ee:ff"),
    ] {
        let out = erpc(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `erpc bench --connect` to a server whose sessions are all taken says that the server refused
/// and why (it used to wait 5 s and say that no server answered).
#[test]
fn bench_connect_to_a_full_server_says_it_refused_and_why() {
    use erpc_dataplane::clock::StdClock;
    use erpc_dataplane::{DmaRegion, HandlerMode, OwnedMemory, Rpc, RpcConfig};
    use erpc_driver::udp::{UdpConfig, UdpTransport};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    let (stop, (tx, rx)) = (Arc::new(AtomicBool::new(false)), mpsc::channel());
    let st = stop.clone();
    // A server endpoint with one session, taken by a client endpoint of this test: both on a
    // thread, until the command has run.
    let h = std::thread::spawn(move || {
        let udp = || UdpTransport::bind(UdpConfig { bind: "127.0.0.1:0".parse().unwrap(), ..Default::default() });
        // Leaked: msgbufs may outlive their endpoint (see `DmaRegion`).
        let mem = || OwnedMemory::new(DmaRegion::from_static(vec![0u8; 8 << 20].leak(), 0x1_0000_0000), 1, 8);
        let cfg = RpcConfig { mtu: 1514, ..RpcConfig::default() };
        let mut srv = Rpc::new(udp().unwrap(), StdClock::default(), (), mem(), cfg).unwrap();
        srv.register_handler(1, |_, _| {}, HandlerMode::Foreground).unwrap();
        let mut cli = Rpc::new(udp().unwrap(), StdClock::default(), (), mem(), cfg).unwrap();
        let s = cli.create_session(srv.local_addr()).unwrap();
        while !cli.is_connected(s) {
            cli.run_event_loop_once();
            srv.run_event_loop_once();
        }
        tx.send(srv.local_addr().udp_port).unwrap();
        while !st.load(Ordering::Relaxed) {
            cli.run_event_loop_once();
            srv.run_event_loop_once();
            std::thread::sleep(Duration::from_micros(500)); // leave the cores to the command
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).expect("the test's client takes the server's one session");
    let out = erpc(&["bench", "latency", "--connect", &format!("127.0.0.1:{port}"), "--duration", "0.1"]);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let want = format!("erpc: connecting to udp 127.0.0.1:{port}: the server refused: all its sessions are in use: ");
    assert!(err.starts_with(&want), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Our namespaces (`erpc-…`) that exist now.
fn erpc_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("erpc-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn bench_over_afxdp_runs_both_ends_on_a_veth_pair_and_leaves_nothing_behind() {
    let c = erpc_hugepages::HugepageCounts::reserve_free(erpc_hugepages::PageSize::Huge2M, 32).expect("hugepages");
    assert!(c.free >= 32, "{c:?}");
    let before = erpc_namespaces();
    let v = json(&["bench", "latency", "--transport", "afxdp", "--duration", "0.3", "--json"]);
    assert_eq!(v["transport"], "afxdp");
    assert_eq!(v["failed"], 0);
    assert!(v["rpcs"].as_u64().unwrap() > 10, "{v}");
    assert!(v["reference"].as_str().unwrap().contains("UDP transport on the same veth pair"), "{v}");
    for k in ["p50_us", "p99_us", "p999_us", "reference_p50_us", "reference_pps"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
    let v = json(&["bench", "rate", "--transport", "afxdp", "--duration", "0.3", "--json"]);
    assert!(v["rpcs_per_sec"].as_f64().unwrap() > 100.0 && v["failed"] == 0, "{v}");
    // Two pairs on two queues of a veth pair with two queues, one thread each.
    let v = json(&["bench", "rate", "--transport", "afxdp", "--threads", "2", "--duration", "0.3", "--json"]);
    let per = v["per_thread_rpcs_per_sec"].as_array().expect("per-thread rates");
    assert!(per.len() == 2 && per.iter().all(|r| r.as_f64().is_some_and(|x| x > 100.0)), "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(erpc_namespaces(), before, "the namespaces (and their veth pair) are deleted");
}

/// `erpc echo` against `erpc bench --server`: requests of one byte to 3 MB, each response
/// compared with its request; a wrong argument is one line.
#[test]
fn echo_checks_every_byte_against_a_bench_server() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut srv = Command::new(env!("CARGO_BIN_EXE_erpc"))
        .args(["bench", "rate", "--server", "127.0.0.1:0", "--size", "3145728"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(srv.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().find(|w| w.starts_with("127.0.0.1:")).unwrap_or_else(|| panic!("{line}"));
    let v = json(&["echo", "--connect", addr, "--sizes", "1,1500,3145728", "--count", "3", "--json"]);
    let out = erpc(&["echo", "--connect", addr, "--sizes", "0"]);
    let refused = erpc(&["echo", "--connect", addr, "--count", "1", "--shutdown"]);
    srv.kill().unwrap();
    srv.wait().unwrap();
    assert_eq!(
        (v["rpcs"].as_u64(), v["failed"].as_u64(), v["mismatched"].as_u64()),
        (Some(9), Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(v["bytes"].as_u64(), Some(2 * 3 * (1 + 1500 + 3145728)), "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim(), "erpc: --sizes must be 1..=8388608 bytes each");
    // `erpc bench --server` never stops on request: it answers the shutdown with a refusal.
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("refused to shut down: the appliance stops on request only when booted with shutdown=allow"),
        "{err}"
    );
}
