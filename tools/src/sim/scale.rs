//! `erpc sim scale`: one endpoint with many sessions doing small RPCs, against one session.
//!
//! This one is about the endpoints' own cost, so it needs no network model: both endpoints
//! alternate on this core over the in-memory fabric and each event-loop iteration is timed.

use super::app::{endpoint, memory, region, start_round_robin, HugeStorage};
use super::NetArgs;
use crate::endpoints::{clock, sim_pair};
use anyhow::Context;
use clap::Args;
use erpc_dataplane::{EndpointMemory, Session};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Sessions from the client endpoint (to one server endpoint).
    #[arg(long, default_value_t = 20_000)]
    pub sessions: usize,
    /// Requests outstanding at the client, each next one on the next session in turn (so every
    /// session's state is cold in the cache when it is used again). The one-session baseline
    /// runs with the same number, at most 8 (the slots of one session).
    #[arg(long, default_value_t = 8)]
    pub outstanding: usize,
    /// Request and response size, bytes.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// RPCs measured in each configuration (after as many again to warm up).
    #[arg(long, default_value_t = 400_000)]
    pub rpcs: u64,
    /// Put both endpoints' session storage and msgbuf regions on transparent huge pages
    /// (`madvise`), in both configurations, as a deployment would put them on hugepages.
    #[arg(long)]
    pub huge_pages: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

impl Default for ScaleArgs {
    fn default() -> Self {
        ScaleArgs {
            sessions: 20_000,
            outstanding: 8,
            size: 32,
            rpcs: 400_000,
            huge_pages: false,
            net: NetArgs::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScaleRun {
    pub sessions: usize,
    pub outstanding: usize,
    /// RPCs per second of the busier endpoint's event-loop time: the rate one core per endpoint
    /// sustains.
    pub rpcs_per_sec: f64,
    /// Client and server event-loop time per RPC, ns.
    pub client_ns_per_rpc: f64,
    pub server_ns_per_rpc: f64,
    /// Client event-loop iterations per RPC.
    pub client_polls_per_rpc: f64,
    /// Timely rate updates per RPC at the client (0 while every RTT sample is below T_low at
    /// link rate, the bypass; about 1 once the RTT, which grows with the requests outstanding,
    /// crosses T_low).
    pub cc_rate_updates_per_rpc: f64,
    pub client_bytes_per_session: f64,
    pub server_bytes_per_session: f64,
    pub failed: u64,
}

#[derive(Debug, Clone)]
pub struct ScaleReport {
    pub one: ScaleRun,
    pub many: ScaleRun,
    pub rate_ratio: f64,
    pub bytes_per_session: f64,
    /// Whether the endpoints' memory was on transparent huge pages (`--huge-pages`).
    pub huge_pages: bool,
    pub wall_s: f64,
}

fn scale_run(a: &ScaleArgs, sessions: usize) -> anyhow::Result<ScaleRun> {
    let conc = a.outstanding.min(sessions * erpc_dataplane::config::SLOTS_PER_SESSION);
    // No network model here: the two endpoints alternate on this core over the in-memory
    // fabric (zero delay, frames copied at `tx_burst`), as in `erpc bench rate`, so nothing but
    // the endpoints and their NICs runs between their event-loop iterations.
    let clk = clock();
    let (pc, ps) = sim_pair(clk, a.net.seed, (2 * conc).max(512), 0);
    let cfg = a.net.rpc_config(a.size)?;
    let (msgs, n) = ([(a.size, conc), (a.size, conc)], sessions + 1);
    // With --huge-pages, both endpoints' storage on transparent huge pages; it outlives them.
    let mut huge = a.huge_pages.then(|| [HugeStorage::new(n), HugeStorage::new(n)]);
    let (ms, mc): (EndpointMemory, EndpointMemory) = match &mut huge {
        Some([s, c]) => (s.memory(region(&cfg, &msgs, n, true)).into(), c.memory(region(&cfg, &msgs, n, true)).into()),
        None => (memory(&cfg, &msgs, n).into(), memory(&cfg, &msgs, n).into()),
    };
    let mut srv = endpoint(ps, clk, cfg, ms)?;
    srv.ctx_mut().resp_size = a.size;
    let mut cli = endpoint(pc, clk, cfg, mc)?;
    let app = cli.ctx_mut();
    (app.req_size, app.resp_size, app.remaining) = (a.size, a.size, u64::MAX);
    // Connect in groups that the server's receive ring holds: every connect retry resends all
    // unanswered requests at once, so a larger burst loses the same ones again.
    let wall = Instant::now();
    for first in (0..sessions).step_by(256) {
        for _ in first..(first + 256).min(sessions) {
            let s = cli.create_session(srv.local_addr()).with_context(|| "creating a session")?;
            cli.ctx_mut().sessions.push(s);
        }
        while cli.ctx().connected + cli.ctx().connect_failed < cli.ctx().sessions.len() {
            cli.run_event_loop_once();
            srv.run_event_loop_once();
            if wall.elapsed() > Duration::from_secs(120) {
                return Err(anyhow::anyhow!("only {} of {sessions} sessions connected", cli.ctx().connected));
            }
        }
    }
    if cli.ctx().connected < sessions {
        return Err(anyhow::anyhow!("only {} of {sessions} sessions connected", cli.ctx().connected));
    }
    start_round_robin(&mut cli, conc)?;
    while cli.ctx().completed < a.rpcs {
        cli.run_event_loop_once();
        srv.run_event_loop_once();
    }
    // Measure: each event-loop iteration timed on its own, less the cost of timing.
    let overhead = timer_overhead_ns();
    let (c1, mut ns, mut polls) = (cli.ctx().completed, [0u64; 2], 0u64);
    let cc1 = cli.stats().cc.rate_updates;
    while cli.ctx().completed < c1 + a.rpcs {
        let t = Instant::now();
        cli.run_event_loop_once();
        ns[0] += (t.elapsed().as_nanos() as u64).saturating_sub(overhead);
        let t = Instant::now();
        srv.run_event_loop_once();
        ns[1] += (t.elapsed().as_nanos() as u64).saturating_sub(overhead);
        polls += 1;
    }
    let n = (cli.ctx().completed - c1) as f64;
    let cc_updates = (cli.stats().cc.rate_updates - cc1) as f64;
    let (client_ns, server_ns) = (ns[0] as f64 / n, ns[1] as f64 / n);
    // Memory per session: the session record plus the msgbufs in use (request and response
    // buffers at the client, the stored or cached response buffers at the server), and the
    // endpoint's fixed share (control-packet ring) spread over the sessions.
    let per = |hs: erpc_dataplane::msgbuf::HeapStats| {
        ((sessions + 1) * core::mem::size_of::<Session>() + hs.capacity - hs.free) as f64 / sessions as f64
    };
    Ok(ScaleRun {
        sessions,
        outstanding: conc,
        rpcs_per_sec: 1e9 / client_ns.max(server_ns).max(1e-3),
        client_ns_per_rpc: client_ns,
        server_ns_per_rpc: server_ns,
        client_polls_per_rpc: polls as f64 / n,
        cc_rate_updates_per_rpc: cc_updates / n,
        client_bytes_per_session: per(cli.heap_stats()),
        server_bytes_per_session: per(srv.heap_stats()),
        failed: cli.ctx().failed,
    })
}

/// The median cost of timing an empty region on this machine.
fn timer_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..1001)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[500]
}

pub fn scale(a: &ScaleArgs) -> anyhow::Result<ScaleReport> {
    let wall = std::time::Instant::now();
    if a.sessions == 0 || a.sessions > 60_000 {
        return Err(anyhow::anyhow!("--sessions must be 1..=60000, not {}", a.sessions));
    }
    if a.outstanding == 0 || a.outstanding > 4096 {
        return Err(anyhow::anyhow!("--outstanding must be 1..=4096"));
    }
    if a.size > 64 << 10 || a.rpcs == 0 {
        return Err(anyhow::anyhow!("--size must be at most 64 KiB and --rpcs at least 1"));
    }
    let one = scale_run(a, 1)?;
    let many = scale_run(a, a.sessions)?;
    Ok(ScaleReport {
        rate_ratio: many.rpcs_per_sec / one.rpcs_per_sec,
        bytes_per_session: many.client_bytes_per_session,
        huge_pages: a.huge_pages,
        one,
        many,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

impl ScaleReport {
    pub fn json(&self) -> serde_json::Value {
        let run = |r: &ScaleRun| {
            json!({
                "sessions": r.sessions, "outstanding": r.outstanding, "rpcs_per_sec": r.rpcs_per_sec,
                "client_ns_per_rpc": r.client_ns_per_rpc, "server_ns_per_rpc": r.server_ns_per_rpc,
                "client_polls_per_rpc": r.client_polls_per_rpc,
                "cc_rate_updates_per_rpc": r.cc_rate_updates_per_rpc,
                "client_bytes_per_session": r.client_bytes_per_session,
                "server_bytes_per_session": r.server_bytes_per_session, "failed": r.failed,
            })
        };
        json!({
            "experiment": "scale", "sessions": self.many.sessions, "rate_ratio": self.rate_ratio,
            "rpcs_per_sec": self.many.rpcs_per_sec, "bytes_per_session": self.bytes_per_session,
            "huge_pages": self.huge_pages,
            "one_session": run(&self.one), "many_sessions": run(&self.many), "wall_s": self.wall_s,
        })
    }

    pub(super) fn print(&self, a: &ScaleArgs) {
        println!(
            "erpc sim scale: {} B RPCs; rate = 1 / event-loop time per RPC of the busier endpoint, measured on this machine",
            a.size
        );
        for r in [&self.one, &self.many] {
            println!(
                "  {:6} sessions, {:6} outstanding: {:.3} M RPC/s (client {:.0} ns, server {:.0} ns per RPC); \
                 {:.0} B per session at the client, {:.0} B at the server; {:.2} Timely updates per RPC",
                r.sessions,
                r.outstanding,
                r.rpcs_per_sec / 1e6,
                r.client_ns_per_rpc,
                r.server_ns_per_rpc,
                r.client_bytes_per_session,
                r.server_bytes_per_session,
                r.cc_rate_updates_per_rpc
            );
        }
        println!("  rate ratio:       {:.3}", self.rate_ratio);
    }
}
