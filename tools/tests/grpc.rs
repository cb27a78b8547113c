//! `erpc grpc-bench` as a user runs it: tonic over TCP on loopback, the same `--json` keys as
//! `erpc bench`, and one-line errors.
//!
//! What it covers: `erpc grpc-bench latency|rate` (ordered percentiles, byte accounting, every key
//! of `erpc bench --json` present, one-line errors); unit tests in `tools/src/grpc_bench.rs`: a
//! response of the wrong size, no server, bad arguments.

mod common;

use common::{erpc, json};

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

#[test]
fn grpc_latency_reports_ordered_percentiles() {
    let v = json(&["grpc-bench", "latency", "--duration", "0.2", "--json"]);
    assert_eq!(v["transport"], "grpc-tonic-tcp");
    assert_eq!(v["mode"], "latency");
    assert_eq!(
        (v["req_size"].as_u64(), v["resp_size"].as_u64(), v["concurrency"].as_u64()),
        (Some(32), Some(32), Some(1))
    );
    assert_eq!(v["failed"], 0);
    // Few on a loaded 2-core machine; the point is that both ends ran and measured.
    assert!(v["rpcs"].as_u64().unwrap() > 10, "{v}");
    let (p50, p99, p999, max) = (f(&v, "p50_us"), f(&v, "p99_us"), f(&v, "p999_us"), f(&v, "max_us"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999 && p999 <= max, "{v}");
    // One RPC in flight: the time per RPC is at least the mean round trip, which is at least
    // half the median (so the percentiles are microseconds of these RPCs).
    let us_per_rpc = f(&v, "duration_s") * 1e6 / f(&v, "rpcs");
    assert!(us_per_rpc * 1.01 >= 0.5 * p50 && f(&v, "rpcs_per_sec") > 0.0, "{v}");
    for k in ["server_cpu", "client_cpu"] {
        assert!(f(&v, k) > 0.0 && f(&v, k) < 1.5, "{k}: {v}");
    }
}

#[test]
fn grpc_rate_with_other_sizes_and_window() {
    let v = json(&[
        "grpc-bench",
        "rate",
        "--concurrency",
        "16",
        "--size",
        "100",
        "--resp-size",
        "1000",
        "--duration",
        "0.2",
        "--json",
    ]);
    assert_eq!(v["mode"], "rate");
    assert_eq!(
        (v["req_size"].as_u64(), v["resp_size"].as_u64(), v["concurrency"].as_u64()),
        (Some(100), Some(1000), Some(16))
    );
    let rate = f(&v, "rpcs_per_sec");
    assert!(rate > 100.0, "{v}");
    // Payload bytes both ways, as `erpc bench` counts them.
    assert!((f(&v, "gbps") * 1e9 / 8.0 / rate / 1100.0 - 1.0).abs() < 1e-6, "{v}");
    // The server's thread did the work of these RPCs in at most the time it had.
    let per_cpu = f(&v, "rpcs_per_server_cpu_sec");
    assert!((per_cpu * f(&v, "server_cpu") / rate - 1.0).abs() < 1e-6 && per_cpu >= rate * 0.99, "{v}");
    // Rate runs do not time every RPC (as in `erpc bench`).
    assert!(v.get("p50_us").is_none(), "{v}");
}

#[test]
fn grpc_json_has_every_key_of_erpc_bench() {
    for mode in ["latency", "rate"] {
        let e = json(&["bench", mode, "--duration", "0.1", "--json"]);
        let g = json(&["grpc-bench", mode, "--duration", "0.1", "--json"]);
        let missing: Vec<_> = e.as_object().unwrap().keys().filter(|k| g.get(k.as_str()).is_none()).collect();
        // Only the reference's own figures, which the gRPC run has no reference for.
        assert!(missing.iter().all(|k| k.contains("reference")), "{mode}: missing {missing:?}\n{e}\n{g}");
        assert_eq!(g["mode"], e["mode"]);
        assert_eq!(g["concurrency"], e["concurrency"], "the same default window");
    }
}

#[test]
fn grpc_user_mistakes_get_one_line_and_a_failure_exit() {
    for (args, want) in [
        (&["grpc-bench", "rate", "--concurrency", "0"][..], "--concurrency must be 1..=64"),
        (&["grpc-bench", "rate", "--concurrency", "65"][..], "--concurrency must be 1..=64"),
        (&["grpc-bench", "latency", "--duration", "0"][..], "--duration must be"),
        (&["grpc-bench", "latency", "--size", "8388609"][..], "message sizes are limited to"),
        (&["grpc-bench", "rate", "--resp-size", "100000000"][..], "message sizes are limited to"),
    ] {
        let out = erpc(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked") && out.stdout.is_empty(), "{err}");
    }
}
