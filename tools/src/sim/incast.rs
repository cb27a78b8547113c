//! `erpc sim incast`: many clients send large requests to one server at once.

use super::app::{self, endpoint, start, App};
use super::net::Network;
use super::{connect_all, quantile, NetArgs};
use clap::Args;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct IncastArgs {
    /// Clients sending to the one server.
    #[arg(long, default_value_t = 100)]
    pub senders: usize,
    /// Request size, bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub size: usize,
    /// Requests each client sends, one after the other.
    #[arg(long, default_value_t = 1)]
    pub requests: u64,
    /// Response size, bytes.
    #[arg(long, default_value_t = 32)]
    pub resp_size: usize,
    /// Senders start at random times within this many µs (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub start_jitter_us: u64,
    /// Print, every this many µs, the server port's queue, the senders' summed Timely rate and
    /// the server link's utilisation to stderr (0: off).
    #[arg(long, default_value_t = 0)]
    pub trace_us: u64,
    #[command(flatten)]
    pub net: NetArgs,
}

impl Default for IncastArgs {
    fn default() -> Self {
        IncastArgs {
            senders: 100,
            size: 8 << 20,
            requests: 1,
            resp_size: 32,
            start_jitter_us: 0,
            trace_us: 0,
            net: NetArgs::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct IncastReport {
    pub senders: usize,
    pub cc: bool,
    pub goodput_gbps: f64,
    pub link_utilization: f64,
    pub drops: u64,
    pub queue_p50_bytes: u64,
    pub queue_p99_bytes: u64,
    pub queue_max_bytes: u64,
    pub sim_time_us: f64,
    /// Per-sender completion times, µs after the start: min, median, max.
    pub completion_us: [f64; 3],
    pub retransmissions: u64,
    pub failed: u64,
    pub link_gbps: f64,
    /// Congestion control at the senders: Timely updates run, packets paced by the wheel.
    pub rate_updates: u64,
    pub paced: u64,
    pub wall_s: f64,
    pub events: u64,
}

pub fn incast(a: &IncastArgs) -> anyhow::Result<IncastReport> {
    let wall = std::time::Instant::now();
    if a.senders == 0 || a.senders > 4096 {
        return Err(anyhow::anyhow!("--senders must be 1..=4096, not {}", a.senders));
    }
    if a.size == 0 || a.size > erpc_dataplane::config::MAX_MSG_SIZE {
        return Err(anyhow::anyhow!("--size must be 1..={} bytes", erpc_dataplane::config::MAX_MSG_SIZE));
    }
    if a.resp_size > a.size.max(4096) {
        return Err(anyhow::anyhow!("--resp-size must not exceed --size (or 4096 bytes)"));
    }
    if a.requests == 0 || a.requests > 1_000_000 {
        return Err(anyhow::anyhow!("--requests must be 1..=1000000"));
    }
    if a.start_jitter_us > 1_000_000 || a.trace_us > 1_000_000 {
        return Err(anyhow::anyhow!("--start-jitter-us and --trace-us must be at most 1000000 (one second)"));
    }
    // The server holds every sender's request at once (address space only: untouched pages
    // cost nothing until data arrives).
    let server_bytes = 2 * a.senders as u64 * app::msg_footprint(a.size, a.net.mtu.max(128)) as u64;
    if server_bytes > 64 << 30 {
        return Err(anyhow::anyhow!(
            "the server would need {} GiB of message buffers for {} senders of {} bytes: use fewer or smaller",
            server_bytes >> 30,
            a.senders,
            a.size
        ));
    }
    let hosts = a.senders + 1;
    let ncfg = a.net.net_config(hosts, 0.0)?;
    let cfg = a.net.rpc_config(a.size.max(a.resp_size))?;
    let mut net = Network::new(ncfg, |h, nic, clk| {
        let msgs = if h == 0 {
            vec![(a.size, a.senders), (a.resp_size, a.senders)]
        } else {
            vec![(a.size, 1), (a.resp_size, 1)]
        };
        let mem = app::memory(&cfg, &msgs, if h == 0 { a.senders + 1 } else { 2 });
        let mut rpc = endpoint(nic, clk, cfg, mem)?;
        let app = rpc.ctx_mut();
        app.req_size = a.size;
        app.resp_size = a.resp_size;
        app.remaining = a.requests;
        Ok(rpc)
    })?;
    connect_all(&mut net, 1..hosts, 1)?;
    // Everyone starts at once.
    let t0 = net.now();
    net.reset_link_counters();
    net.watch_host_port(0);
    // Senders start within `start_jitter_us` of each other, in an order fixed by the seed.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(a.net.seed);
    let mut starts: Vec<(u64, usize)> =
        (1..hosts).map(|h| (t0 + rng.next_u64() % (a.start_jitter_us * 1000 + 1), h)).collect();
    starts.sort_unstable();
    for (t, h) in starts {
        net.run(t, |_| false);
        start(&mut net.hosts[h].rpc, 1)?;
        net.wake(h, t);
    }
    if a.trace_us > 0 {
        trace_incast(&mut net, hosts, t0, a.trace_us * 1000, a.senders as u64 * a.requests);
    }
    let total = a.senders as u64 * a.requests;
    let limit = t0 + 600_000_000_000;
    let done = |n: &Network<App>| {
        (1..hosts).all(|h| n.hosts[h].rpc.ctx().completed + n.hosts[h].rpc.ctx().failed >= a.requests)
    };
    // Checking every sender after every poll would cost O(senders) per event: check when the
    // server has handled everything, and every 4096 polls in case some RPCs failed instead.
    let mut polls = 0u32;
    let finished = net.run(limit, |n| {
        polls = polls.wrapping_add(1);
        (n.hosts[0].rpc.ctx().handled >= total || polls % 4096 == 0) && done(n)
    });
    // Let the last responses arrive.
    let finished = finished || net.run(limit, done);
    if !finished {
        return Err(anyhow::anyhow!("the incast did not finish within 600 s of simulated time"));
    }
    let end = (1..hosts).map(|h| net.hosts[h].rpc.ctx().last_done_ns).max().unwrap_or(t0);
    let span = end.saturating_sub(t0).max(1);
    let bytes: u64 = (1..hosts).map(|h| net.hosts[h].rpc.ctx().req_bytes).sum();
    let busy = net.host_downlink_busy_ns(0);
    let mut done_at: Vec<u64> = (1..hosts).map(|h| net.hosts[h].rpc.ctx().last_done_ns.saturating_sub(t0)).collect();
    done_at.sort_unstable();
    let q = net.host_port_queue(0).expect("watched");
    let (p50, p99, max) = (q.quantile(end, 0.5), q.quantile(end, 0.99), q.max_bytes);
    Ok(IncastReport {
        senders: a.senders,
        cc: !a.net.no_cc,
        goodput_gbps: bytes as f64 * 8.0 / span as f64,
        link_utilization: busy.min(span) as f64 / span as f64,
        drops: net.counters.switch_drops,
        queue_p50_bytes: p50,
        queue_p99_bytes: p99,
        queue_max_bytes: max,
        sim_time_us: span as f64 / 1e3,
        completion_us: [0.0, 0.5, 1.0].map(|x| quantile(&done_at, x) as f64 / 1e3),
        retransmissions: (1..hosts).map(|h| net.hosts[h].rpc.stats().retransmissions).sum(),
        failed: (1..hosts).map(|h| net.hosts[h].rpc.ctx().failed).sum(),
        link_gbps: a.net.link_gbps,
        rate_updates: (1..hosts).map(|h| net.hosts[h].rpc.stats().cc.rate_updates).sum(),
        paced: (1..hosts).map(|h| net.hosts[h].rpc.stats().cc.paced).sum(),
        wall_s: wall.elapsed().as_secs_f64(),
        events: net.counters.events,
    })
}

/// Runs the incast in steps of `step` ns until the server has handled `total` requests, printing
/// one line per step.
fn trace_incast(net: &mut Network<App>, hosts: usize, t0: u64, step: u64, total: u64) {
    eprintln!("# time_us queue_bytes senders_rate_gbps link_busy");
    let mut t = net.now();
    let mut busy0 = net.host_downlink_busy_ns(0);
    while net.hosts[0].rpc.ctx().handled < total && net.next_event_ns().is_some() {
        t += step;
        net.run(t, |_| false);
        let rate: f64 = (1..hosts)
            .filter_map(|h| {
                let r = &net.hosts[h].rpc;
                r.ctx().sessions.first().and_then(|&s| r.session_rate(s))
            })
            .sum();
        let busy = net.host_downlink_busy_ns(0);
        let q = net.host_port_queue(0).map_or(0, |q| q.current_bytes());
        eprintln!("{} {} {:.3} {:.3}", (t - t0) / 1000, q, rate * 8e-9, (busy - busy0).min(step) as f64 / step as f64);
        busy0 = busy;
    }
}

impl IncastReport {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "experiment": "incast", "senders": self.senders, "cc": self.cc,
            "goodput_gbps": self.goodput_gbps, "link_utilization": self.link_utilization,
            "drops": self.drops, "queue_p50_bytes": self.queue_p50_bytes,
            "queue_p99_bytes": self.queue_p99_bytes, "queue_max_bytes": self.queue_max_bytes,
            "sim_time_us": self.sim_time_us,
            "completion_min_us": self.completion_us[0], "completion_p50_us": self.completion_us[1],
            "completion_max_us": self.completion_us[2],
            "retransmissions": self.retransmissions, "failed": self.failed,
            "rate_updates": self.rate_updates, "paced_pkts": self.paced,
            "wall_s": self.wall_s, "events": self.events,
        })
    }

    pub(super) fn print(&self, a: &IncastArgs) {
        println!(
            "erpc sim incast: {} senders x {} x {} B -> 1 server, {} Gb/s links, {} MB switch buffer, congestion control {}",
            a.senders,
            a.requests,
            a.size,
            a.net.link_gbps,
            a.net.buffer_mb,
            if self.cc { "on" } else { "off" }
        );
        println!(
            "  goodput:          {:.2} Gb/s ({:.1}% of the line rate); server link busy {:.1}% of the time",
            self.goodput_gbps,
            100.0 * self.goodput_gbps / self.link_gbps,
            100.0 * self.link_utilization
        );
        println!(
            "  switch drops:     {}  (retransmissions: {}, failed RPCs: {})",
            self.drops, self.retransmissions, self.failed
        );
        println!("  senders' Timely:  {} rate updates, {} packets paced", self.rate_updates, self.paced);
        println!(
            "  server port queue: p50 {} B, p99 {} B, max {} B (time-weighted)",
            self.queue_p50_bytes, self.queue_p99_bytes, self.queue_max_bytes
        );
        println!(
            "  completion (us):  first {:.0}, median {:.0}, last {:.0}",
            self.completion_us[0], self.completion_us[1], self.completion_us[2]
        );
        println!("  simulated {:.0} us in {:.1} s ({} events)", self.sim_time_us, self.wall_s, self.events);
    }
}
