//! What `erpc bench` prints: text, or one JSON object with the same keys for every transport
//! (and `erpc grpc-bench`). A reference that was starved or broken in this run is reported as
//! such, with no ratio to it.

use super::{Mode, Report};
use crate::TransportKind;
use std::fmt::Write;

/// Fewest round trips a reference must make to count as a measurement.
const MIN_REFERENCE_TRIPS: u64 = 100;

/// How far eRPC may be ahead of its reference, in rate or median round trip, before the reference
/// counts as starved: each reference does less per round trip than eRPC on the same path (raw
/// frames on the same NIC, raw datagrams on the same sockets) or runs eRPC itself on the slower
/// path (kernel UDP for AF_XDP), so a reference this far behind did not get the CPU it needed
/// (a busy machine, a thread descheduled for scheduler ticks) and its figures measure that.
const MAX_LEAD: f64 = 10.0;

/// Why the run's round-trip reference is no measurement, if it is not. `None` without a
/// reference (`--connect`, gRPC).
pub(crate) fn reference_problem(r: &Report) -> Option<String> {
    if r.reference.is_empty() {
        return None;
    }
    if r.reference_trips < MIN_REFERENCE_TRIPS || r.reference_pps.is_nan() || r.reference_pps <= 0.0 {
        return Some(format!("it made only {} round trips (at least {MIN_REFERENCE_TRIPS} count)", r.reference_trips));
    }
    let rate = r.rpcs as f64 / r.secs;
    if rate > MAX_LEAD * r.reference_pps {
        return Some(format!("eRPC made {:.0} times its round trips per second", rate / r.reference_pps));
    }
    if let (Some(p), Some(e)) = (r.reference_p50_us, p50_us(r)) {
        if p > MAX_LEAD * e {
            return Some(format!("its median round trip took {:.0} times eRPC's", p / e));
        }
    }
    None
}

fn p50_us(r: &Report) -> Option<f64> {
    r.hist.as_ref().map(|h| h.value_at_quantile(0.5) as f64 / 1000.0)
}

pub(super) fn print(r: &Report, t: TransportKind, json: bool) {
    if json {
        println!("{}", report_json(r, &t.name()));
    } else {
        print!("{}", text(r, t));
    }
}

/// The text report.
fn text(r: &Report, t: TransportKind) -> String {
    let mut s = format!(
        "erpc bench {} --transport {}: {} B requests, {} B responses, {} outstanding, {:.2} s\n",
        r.mode.name(),
        t.name(),
        r.req,
        r.resp,
        r.conc,
        r.secs
    );
    s += &figures(r);
    let rate = r.rpcs as f64 / r.secs;
    if let (Mode::Bandwidth, Some(m)) = (r.mode, r.memcpy_gbps) {
        let _ = writeln!(
            s,
            "  reference:        memcpy of {} B buffers: {m:.2} Gb/s (the in-memory NIC copies twice)",
            r.req
        );
        let _ = writeln!(s, "  ratio:            {:.3} of memcpy", r.bytes as f64 * 8.0 / r.secs / 1e9 / m);
        return s;
    }
    let measured = match r.reference_p50_us {
        Some(p) => format!("p50 {p:.2} us, {:.3} M round trips/s", r.reference_pps / 1e6),
        None => format!("{:.3} M round trips/s", r.reference_pps / 1e6),
    };
    if let Some(why) = reference_problem(r) {
        let _ = writeln!(s, "  reference:        {}: {measured}", r.reference);
        let _ = writeln!(
            s,
            "  ratio:            none: the reference was starved or broken ({why}); rerun on an idle machine"
        );
    } else if let (Some(p), Some(e)) = (r.reference_p50_us, p50_us(r)) {
        let _ = writeln!(s, "  reference:        {}: {measured}", r.reference);
        let _ = writeln!(
            s,
            "  ratio:            p50 {:.3} x the reference's; rate {:.3} of it",
            e / p,
            rate / r.reference_pps
        );
    } else if r.reference_pps.is_finite() {
        let _ = writeln!(s, "  reference:        {}: {measured}", r.reference);
        let _ = writeln!(s, "  ratio:            {:.3} of the reference's rate", rate / r.reference_pps);
    }
    if r.failed > 0 || r.retransmissions > 0 {
        let _ = writeln!(s, "  failed: {}, retransmissions: {}", r.failed, r.retransmissions);
    }
    s
}

/// The text lines every benchmark prints: RPCs, and bandwidth or latency percentiles.
pub(crate) fn print_figures(r: &Report) {
    print!("{}", figures(r));
}

fn figures(r: &Report) -> String {
    let rate = r.rpcs as f64 / r.secs;
    let ns = if r.rpcs > 0 { r.secs * 1e9 / r.rpcs as f64 } else { f64::INFINITY };
    let mut s = format!("  RPCs:             {} ({:.3} M/s, {:.1} ns per RPC)\n", r.rpcs, rate / 1e6, ns);
    if r.mode == Mode::Bandwidth {
        let _ =
            writeln!(s, "  bandwidth:        {:.2} Gb/s (requests + responses)", r.bytes as f64 * 8.0 / r.secs / 1e9);
    }
    if let Some(h) = &r.hist {
        let pct = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let _ = writeln!(
            s,
            "  latency (us):     p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            pct(0.5),
            pct(0.99),
            pct(0.999),
            h.max() as f64 / 1000.0
        );
    }
    s
}

/// The `--json` object: the same keys for every transport (`erpc grpc-bench` too), so a script
/// can put them side by side. Figures that do not apply are null; so are the ratios to a
/// reference that was starved or broken, and `reference_problem` says why.
pub(crate) fn report_json(r: &Report, transport: &str) -> serde_json::Value {
    let rate = r.rpcs as f64 / r.secs;
    let ns = if r.rpcs > 0 { r.secs * 1e9 / r.rpcs as f64 } else { f64::INFINITY };
    let gbps = r.bytes as f64 * 8.0 / r.secs / 1e9;
    let pct = |q: f64| r.hist.as_ref().map(|h| h.value_at_quantile(q) as f64 / 1000.0);
    let problem = reference_problem(r);
    let usable = problem.is_none();
    let mut o = serde_json::json!({
        "transport": transport, "mode": r.mode.name(),
        "req_size": r.req, "resp_size": r.resp, "concurrency": r.conc,
        "duration_s": r.secs, "rpcs": r.rpcs, "rpcs_per_sec": rate, "ns_per_rpc": ns,
        "gbps": gbps, "reference": r.reference, "reference_pps": r.reference_pps,
        "reference_round_trips": r.reference_trips, "reference_problem": problem,
        "ratio_to_reference": usable.then(|| rate / r.reference_pps),
        "failed": r.failed, "retransmissions": r.retransmissions, "server_deferred_frees": r.deferred_frees, "cc": r.cc,
    });
    if let Some(m) = r.memcpy_gbps {
        o["memcpy_gbps"] = m.into();
        o["ratio_to_memcpy"] = (gbps / m).into();
    }
    if let Some(p) = r.reference_p50_us {
        o["reference_p50_us"] = p.into();
        o["p50_ratio_to_reference"] = usable.then(|| pct(0.5).unwrap_or(f64::NAN) / p).into();
    }
    if let Some(h) = &r.hist {
        o["p50_us"] = pct(0.5).into();
        o["p99_us"] = pct(0.99).into();
        o["p999_us"] = pct(0.999).into();
        o["max_us"] = (h.max() as f64 / 1000.0).into();
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;

    /// A 2-second latency run over UDP: eRPC at `p50_us` and `rate` RPCs/s; the reference at
    /// `ref_p50_us` and `ref_pps` round trips/s, `ref_trips` of them.
    fn run(p50_us: f64, rate: f64, ref_p50_us: f64, ref_pps: f64, ref_trips: u64) -> Report {
        let mut hist = Histogram::<u64>::new(3).unwrap();
        hist.record((p50_us * 1000.0) as u64).unwrap();
        Report {
            mode: Mode::Latency,
            req: 32,
            resp: 32,
            conc: 1,
            secs: 2.0,
            rpcs: (2.0 * rate) as u64,
            bytes: (2.0 * rate) as u64 * 64,
            failed: 0,
            retransmissions: 0,
            deferred_frees: 0,
            cc: true,
            hist: Some(hist),
            reference: "raw UDP ping-pong, same datagram sizes and window",
            reference_pps: ref_pps,
            reference_p50_us: Some(ref_p50_us),
            reference_trips: ref_trips,
            memcpy_gbps: None,
        }
    }

    #[test]
    fn a_reference_that_got_the_cpu_gives_ratios() {
        // eRPC a little slower than raw UDP, as on an idle machine; and a reference 9 times
        // behind, which is slow but still a measurement.
        for r in [run(22.0, 45_000.0, 14.0, 70_000.0, 140_000), run(22.0, 45_000.0, 190.0, 5_000.0, 10_000)] {
            assert_eq!(reference_problem(&r), None);
            let t = text(&r, TransportKind::Udp);
            assert!(t.contains("  ratio:            p50 "), "{t}");
            let j = report_json(&r, "udp");
            assert!(
                j["ratio_to_reference"].as_f64().is_some() && j["p50_ratio_to_reference"].as_f64().is_some(),
                "{j}"
            );
            assert!(j["reference_problem"].is_null(), "{j}");
        }
    }

    #[test]
    fn a_starved_reference_is_reported_as_such_not_as_a_ratio() {
        // What a busy machine once printed: a reference p50 of 12,001 us, "ratio p50 0.000 x the
        // reference's; rate 269 of it".
        let starved = run(4.9, 22_300.0, 12_001.0, 83.0, 166);
        let why = reference_problem(&starved).expect("starved");
        assert!(why.contains("eRPC made 269 times its round trips per second"), "{why}");
        let t = text(&starved, TransportKind::Udp);
        assert!(t.contains("p50 12001.00 us"), "the figures stay: {t}");
        assert!(
            t.contains("  ratio:            none: the reference was starved or broken (eRPC made 269 times"),
            "{t}"
        );
        assert!(!t.contains("x the reference's") && !t.contains("of the reference's rate"), "{t}");
        let j = report_json(&starved, "udp");
        assert!(j["ratio_to_reference"].is_null() && j["p50_ratio_to_reference"].is_null(), "{j}");
        assert_eq!(j["reference_problem"].as_str(), Some(why.as_str()));
        assert_eq!(j["reference_p50_us"].as_f64(), Some(12_001.0));

        // Too few round trips to be a measurement, however they compare.
        let few = run(22.0, 45_000.0, 14.0, 70_000.0, 40);
        let why = reference_problem(&few).expect("too few");
        assert!(why.contains("only 40 round trips"), "{why}");
        assert!(reference_problem(&run(22.0, 45_000.0, 14.0, 0.0, 0)).is_some());

        // A median far behind eRPC's while the rates look alike.
        let slow = run(20.0, 45_000.0, 300.0, 40_000.0, 80_000);
        let why = reference_problem(&slow).expect("median");
        assert!(why.contains("its median round trip took 15 times eRPC's"), "{why}");
    }

    #[test]
    fn no_reference_is_no_problem() {
        // `--connect` and gRPC runs measure no reference.
        let mut r = run(22.0, 45_000.0, 0.0, f64::NAN, 0);
        (r.reference, r.reference_p50_us) = ("", None);
        assert_eq!(reference_problem(&r), None);
        let t = text(&r, TransportKind::Udp);
        assert!(!t.contains("reference") && !t.contains("ratio"), "{t}");
        let j = report_json(&r, "udp");
        assert!(j["reference_problem"].is_null() && j["ratio_to_reference"].is_null(), "{j}");
    }
}
