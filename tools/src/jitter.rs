//! `erpc jitter`: how often this machine stops a spinning thread, and what that does to the
//! tail of a fixed amount of work.
//!
//! eRPC's latencies are measured on threads that spin. Whatever takes the core away from them
//! (timer ticks, other tasks, a hypervisor) lands in the tail of every operation that overlaps
//! it, in proportion to the operation's length. This command measures the platform alone, with
//! no eRPC in it: first a thread that only reads the clock records every gap between two reads
//! longer than `--gap-us` (the interruptions); then, for each `--work-us` size, a loop of pure
//! computation calibrated to that length runs back to back and its durations are recorded. The
//! p99/p50 ratio of that fixed work is the best any operation of that length can show here.

use clap::Args;
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[derive(Args, Clone, Debug)]
pub struct JitterArgs {
    /// Seconds per measurement (the clock-gap scan and each work size).
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Lengths of the fixed work to time, µs (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1.0, 5.0, 30.0])]
    pub work_us: Vec<f64>,
    /// A gap between two clock reads longer than this counts as an interruption, µs.
    #[arg(long, default_value_t = 1.5)]
    pub gap_us: f64,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the clock-gap scan found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaps {
    pub per_sec: f64,
    /// The share of the time the thread did not run.
    pub lost: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub max_us: f64,
}

/// The durations of one work size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    pub target_us: f64,
    pub runs: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Spins reading the clock for `dur`; every step longer than `gap` is an interruption.
pub fn scan_gaps(dur: Duration, gap: Duration) -> Gaps {
    let mut h = hist();
    let (start, mut last, mut lost) = (Instant::now(), Instant::now(), 0u128);
    let gap = gap.as_nanos();
    while last.duration_since(start) < dur {
        let now = Instant::now();
        let d = now.duration_since(last).as_nanos();
        if d > gap {
            let _ = h.record(d as u64);
            lost += d;
        }
        last = now;
    }
    let secs = last.duration_since(start).as_secs_f64();
    let q = |x| if h.is_empty() { 0.0 } else { us(&h, x) };
    Gaps {
        per_sec: h.len() as f64 / secs,
        lost: lost as f64 / 1e9 / secs,
        p50_us: q(0.5),
        p90_us: q(0.9),
        max_us: q(1.0),
    }
}

/// `n` rounds of a multiply-add chain: work the compiler cannot skip or shorten.
#[inline(never)]
fn spin(n: u64, x: u64) -> u64 {
    let mut x = x;
    for i in 0..n {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// Times back-to-back runs of `target_us` of fixed work for `dur`.
pub fn time_work(target_us: f64, dur: Duration) -> Work {
    // Calibrate on runs long enough to dwarf the clock reads; the fastest of five, so that an
    // interruption during one does not shorten the work.
    let mut x = 1;
    let mut per_round_ns = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        x = spin(200_000, x);
        per_round_ns = per_round_ns.min(t.elapsed().as_nanos() as f64 / 2e5);
    }
    let n = ((target_us * 1000.0) / per_round_ns.max(1e-3)).max(1.0) as u64;
    let mut h = hist();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        x = spin(n, x);
        let _ = h.record(t.elapsed().as_nanos().max(1) as u64);
    }
    black_box(x);
    Work { target_us, runs: h.len(), p50_us: us(&h, 0.5), p99_us: us(&h, 0.99), p999_us: us(&h, 0.999) }
}

/// Whether `x` is a number in `lo..=hi` (NaN and infinities are not).
fn within(x: f64, lo: f64, hi: f64) -> bool {
    x.is_finite() && (lo..=hi).contains(&x)
}

/// The median time between two clock reads, when nothing interrupts them.
fn clock_read_ns() -> u128 {
    let mut steps: Vec<u128> = Vec::with_capacity(10_000);
    let mut last = Instant::now();
    for _ in 0..10_000 {
        let now = Instant::now();
        steps.push(now.duration_since(last).as_nanos());
        last = now;
    }
    steps.sort_unstable();
    steps[steps.len() / 2]
}

pub fn run(a: JitterArgs) -> anyhow::Result<()> {
    if !within(a.duration, 0.01, 3600.0) {
        anyhow::bail!("--duration must be 0.01 to 3600 s");
    }
    if a.work_us.iter().any(|&w| !within(w, 0.01, 1e6)) {
        anyhow::bail!("--work-us sizes must be 0.01 to 1,000,000 µs");
    }
    if !within(a.gap_us, 0.01, 1e6) {
        anyhow::bail!("--gap-us must be 0.01 to 1,000,000 µs");
    }
    let read = clock_read_ns();
    if read as f64 * 2.0 > a.gap_us * 1000.0 {
        anyhow::bail!(
            "a clock read takes {:.2} µs here, too close to --gap-us {}: every read would count as an \
             interruption; give --gap-us at least {:.1}",
            read as f64 / 1000.0,
            a.gap_us,
            read as f64 / 1000.0 * 4.0
        );
    }
    let dur = Duration::from_secs_f64(a.duration);
    let g = scan_gaps(dur, Duration::from_secs_f64(a.gap_us / 1e6));
    let works: Vec<Work> = a.work_us.iter().map(|&w| time_work(w, dur)).collect();
    if a.json {
        let w: Vec<_> = works
            .iter()
            .map(|w| {
                serde_json::json!({"work_us": w.target_us, "runs": w.runs, "p50_us": w.p50_us, "p99_us": w.p99_us,
                    "p999_us": w.p999_us, "p99_over_p50": w.p99_us / w.p50_us})
            })
            .collect();
        let j = serde_json::json!({"gap_us": a.gap_us, "interruptions_per_sec": g.per_sec, "time_lost": g.lost,
            "interruption_p50_us": g.p50_us, "interruption_p90_us": g.p90_us, "interruption_max_us": g.max_us, "work": w});
        println!("{j}");
        return Ok(());
    }
    println!(
        "interruptions (> {} µs between clock reads): {:.0}/s, {:.2}% of the time; length p50 {:.1} µs, p90 {:.1} µs, max {:.1} µs",
        a.gap_us,
        g.per_sec,
        g.lost * 100.0,
        g.p50_us,
        g.p90_us,
        g.max_us
    );
    for w in &works {
        println!(
            "fixed work of {:>8.1} µs: p50 {:.2} µs  p99 {:.2} µs  p99.9 {:.2} µs  p99/p50 {:.2}  ({} runs)",
            w.target_us,
            w.p50_us,
            w.p99_us,
            w.p999_us,
            w.p99_us / w.p50_us,
            w.runs
        );
    }
    Ok(())
}
