//! What `erpc bench` prints: text, or one JSON object with the same keys for every transport
//! (and `erpc grpc-bench`).

use super::{Mode, Report};
use crate::TransportKind;

pub(super) fn print(r: &Report, t: TransportKind, json: bool) {
    let transport = t.name();
    if json {
        println!("{}", report_json(r, &transport));
        return;
    }
    let rate = r.rpcs as f64 / r.secs;
    let pct = |q: f64| r.hist.as_ref().map(|h| h.value_at_quantile(q) as f64 / 1000.0);
    let mode = r.mode.name();
    println!(
        "erpc bench {mode} --transport {transport}: {} B requests, {} B responses, {} outstanding, {:.2} s",
        r.req, r.resp, r.conc, r.secs
    );
    print_figures(r);
    if r.mode == Mode::Bandwidth {
        if let Some(m) = r.memcpy_gbps {
            println!("  reference:        memcpy of {} B buffers: {m:.2} Gb/s (the in-memory NIC copies twice)", r.req);
            println!("  ratio:            {:.3} of memcpy", r.bytes as f64 * 8.0 / r.secs / 1e9 / m);
            return;
        }
    }
    if let Some(p) = r.reference_p50_us {
        let e = pct(0.5).unwrap_or(f64::NAN);
        println!("  reference:        {}: p50 {p:.2} us, {:.3} M round trips/s", r.reference, r.reference_pps / 1e6);
        println!("  ratio:            p50 {:.3} x the reference's; rate {:.3} of it", e / p, rate / r.reference_pps);
    } else if r.reference_pps.is_finite() {
        println!("  reference:        {}: {:.3} M round trips/s", r.reference, r.reference_pps / 1e6);
        println!("  ratio:            {:.3} of the reference's rate", rate / r.reference_pps);
    }
    if r.failed > 0 || r.retransmissions > 0 {
        println!("  failed: {}, retransmissions: {}", r.failed, r.retransmissions);
    }
}

/// The text lines every benchmark prints: RPCs, and bandwidth or latency percentiles.
pub(crate) fn print_figures(r: &Report) {
    let rate = r.rpcs as f64 / r.secs;
    let ns = if r.rpcs > 0 { r.secs * 1e9 / r.rpcs as f64 } else { f64::INFINITY };
    println!("  RPCs:             {} ({:.3} M/s, {:.1} ns per RPC)", r.rpcs, rate / 1e6, ns);
    if r.mode == Mode::Bandwidth {
        println!("  bandwidth:        {:.2} Gb/s (requests + responses)", r.bytes as f64 * 8.0 / r.secs / 1e9);
    }
    if let Some(h) = &r.hist {
        let pct = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  latency (us):     p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            pct(0.5),
            pct(0.99),
            pct(0.999),
            h.max() as f64 / 1000.0
        );
    }
}

/// The `--json` object: the same keys for every transport (`erpc grpc-bench` too), so a script
/// can put them side by side. Figures that do not apply are null.
pub(crate) fn report_json(r: &Report, transport: &str) -> serde_json::Value {
    let rate = r.rpcs as f64 / r.secs;
    let ns = if r.rpcs > 0 { r.secs * 1e9 / r.rpcs as f64 } else { f64::INFINITY };
    let gbps = r.bytes as f64 * 8.0 / r.secs / 1e9;
    let pct = |q: f64| r.hist.as_ref().map(|h| h.value_at_quantile(q) as f64 / 1000.0);
    let mode = r.mode.name();
    let mut o = serde_json::json!({
        "transport": transport, "mode": mode,
        "req_size": r.req, "resp_size": r.resp, "concurrency": r.conc,
        "duration_s": r.secs, "rpcs": r.rpcs, "rpcs_per_sec": rate, "ns_per_rpc": ns,
        "gbps": gbps, "reference": r.reference, "reference_pps": r.reference_pps,
        "ratio_to_reference": rate / r.reference_pps,
        "failed": r.failed, "retransmissions": r.retransmissions, "server_deferred_frees": r.deferred_frees, "cc": r.cc,
    });
    if let Some(m) = r.memcpy_gbps {
        o["memcpy_gbps"] = m.into();
        o["ratio_to_memcpy"] = (gbps / m).into();
    }
    if let Some(p) = r.reference_p50_us {
        o["reference_p50_us"] = p.into();
        o["p50_ratio_to_reference"] = (pct(0.5).unwrap_or(f64::NAN) / p).into();
    }
    if let Some(h) = &r.hist {
        o["p50_us"] = pct(0.5).into();
        o["p99_us"] = pct(0.99).into();
        o["p999_us"] = pct(0.999).into();
        o["max_us"] = (h.max() as f64 / 1000.0).into();
    }
    o
}
