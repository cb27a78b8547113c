//! `erpc sim`: a simulated datacenter that runs the real dataplane, unmodified, at scales this
//! machine cannot host. See [`net`] for the model.
//!
//! * [`incast`]: many clients send large requests to one server at once.
//! * [`loss`]: large transfers between two hosts at a given loss rate, against a lossless run.
//! * [`scale`]: one endpoint with many sessions doing small RPCs, against one session. This one
//!   is about the endpoints' own cost, so it needs no network model: both endpoints alternate on
//!   this core over the in-memory fabric and each event-loop iteration is timed.

pub mod app;
pub mod net;
pub mod nic;

use app::{endpoint, start, start_round_robin, App};
use clap::{Args, Subcommand};
use erpc_dataplane::{RpcConfig, Session};
use net::{NetConfig, Network, Topology};
use nic::host_addr;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub experiment: Experiment,
}

#[derive(Subcommand, Debug)]
pub enum Experiment {
    /// N clients send large requests to one server at the same time.
    Incast(IncastArgs),
    /// Goodput of large transfers at a loss rate, relative to the same run without loss.
    Loss(LossArgs),
    /// Small-RPC rate of one endpoint with N sessions, relative to one session.
    Scale(ScaleArgs),
}

/// Network options shared by the experiments.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Line rate of every link, Gb/s.
    #[arg(long, default_value_t = 25.0)]
    pub link_gbps: f64,
    /// Shared buffer of each switch, MB (2^20 bytes).
    #[arg(long, default_value_t = 12.0)]
    pub buffer_mb: f64,
    /// Propagation delay of each link, ns.
    #[arg(long, default_value_t = 500)]
    pub link_delay_ns: u64,
    /// Dynamic-threshold factor of the switches' shared buffer.
    #[arg(long, default_value_t = 1.0)]
    pub dt_alpha: f64,
    /// Two layers: hosts on top-of-rack switches of this many hosts, linked to `--spines` spines.
    #[arg(long)]
    pub hosts_per_tor: Option<usize>,
    /// Spine switches of the two-layer topology.
    #[arg(long, default_value_t = 4)]
    pub spines: usize,
    /// Frame size.
    #[arg(long, default_value_t = 1024)]
    pub mtu: usize,
    /// Seed of the simulation (loss injection, session tokens).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Turn congestion control (Timely and pacing) off.
    #[arg(long)]
    pub no_cc: bool,
    /// Retransmission timeout, µs (the original's 5 ms by default).
    #[arg(long, default_value_t = 5000)]
    pub rto_us: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Default for NetArgs {
    fn default() -> Self {
        NetArgs {
            link_gbps: 25.0,
            buffer_mb: 12.0,
            link_delay_ns: 500,
            dt_alpha: 1.0,
            hosts_per_tor: None,
            spines: 4,
            mtu: 1024,
            seed: 1,
            no_cc: false,
            rto_us: 5000,
            json: false,
        }
    }
}

impl NetArgs {
    fn net_config(&self, hosts: usize, loss: f64) -> Result<NetConfig, String> {
        if !(self.buffer_mb > 0.0 && self.buffer_mb <= 1024.0) {
            return Err(format!("--buffer-mb must be in (0, 1024], not {}", self.buffer_mb));
        }
        if self.dt_alpha.is_nan() || self.dt_alpha <= 0.0 {
            return Err("--dt-alpha must be positive".into());
        }
        if self.link_delay_ns > 1_000_000_000 {
            return Err("--link-delay-ns must be at most 1000000000 (one second)".into());
        }
        if self.link_gbps.is_nan() || self.link_gbps < 0.001 || self.spines == 0 || self.spines > 256 {
            return Err("--link-gbps must be at least 0.001 and --spines 1..=256".into());
        }
        if !(128..=9000).contains(&self.mtu) {
            return Err(format!("--mtu must be 128..=9000, not {}", self.mtu));
        }
        Ok(NetConfig {
            hosts,
            topology: match self.hosts_per_tor {
                None => Topology::Single,
                Some(hosts_per_tor) => Topology::TwoLayer { hosts_per_tor, spines: self.spines },
            },
            link_gbps: self.link_gbps,
            uplink_gbps: self.link_gbps,
            link_delay_ns: self.link_delay_ns,
            buffer_bytes: (self.buffer_mb * (1 << 20) as f64) as u64,
            dt_alpha: self.dt_alpha,
            loss,
            mtu: self.mtu,
            seed: self.seed,
            ..NetConfig::default()
        })
    }

    fn rpc_config(&self, max_msg: usize) -> Result<RpcConfig, String> {
        if self.rto_us == 0 || self.rto_us > 10_000_000 {
            return Err(format!("--rto-us must be 1..=10000000, not {}", self.rto_us));
        }
        let mut cfg = RpcConfig { mtu: self.mtu, seed: self.seed, rto_ns: self.rto_us * 1000, ..RpcConfig::default() };
        cfg.max_msg_size = max_msg.clamp(4096, erpc_dataplane::config::MAX_MSG_SIZE);
        cfg.cc.enabled = !self.no_cc;
        cfg.cc.link_rate = self.link_gbps * 1e9 / 8.0;
        // A session that hears nothing for this long is reset: far beyond any queueing delay here.
        cfg.session_timeout_ns = cfg.session_timeout_ns.max(100 * cfg.rto_ns);
        cfg.server_idle_timeout_ns = 2 * cfg.keepalive_ns + cfg.session_timeout_ns + cfg.rto_ns;
        cfg.request_timeout_ns = cfg.request_timeout_ns.max(2 * cfg.rto_ns);
        // A simulated host has one address, and `scale` opens all its sessions from one host.
        cfg.max_sessions_per_client = u16::MAX;
        Ok(cfg)
    }
}

pub fn run(a: SimArgs) -> anyhow::Result<()> {
    match a.experiment {
        Experiment::Incast(a) => {
            emit(a.net.json, &incast(&a).map_err(anyhow::Error::msg)?, IncastReport::json, |r| r.print(&a))
        }
        Experiment::Loss(a) => {
            emit(a.net.json, &loss(&a).map_err(anyhow::Error::msg)?, LossReport::json, |r| r.print(&a))
        }
        Experiment::Scale(a) => {
            emit(a.net.json, &scale(&a).map_err(anyhow::Error::msg)?, ScaleReport::json, |r| r.print(&a))
        }
    }
    Ok(())
}

/// Prints a report as one JSON object or as text.
fn emit<R>(json: bool, r: &R, as_json: impl Fn(&R) -> serde_json::Value, print: impl Fn(&R)) {
    if json {
        println!("{}", as_json(r));
    } else {
        print(r);
    }
}

/// Connects every client's sessions (`per_client` each) to host 0 and runs until all are up.
fn connect_all(net: &mut Network<App>, clients: std::ops::Range<usize>, per_client: usize) -> Result<(), String> {
    let server = host_addr(0);
    for h in clients.clone() {
        for _ in 0..per_client {
            let s = net.hosts[h].rpc.create_session(server).map_err(|e| format!("creating a session: {e}"))?;
            net.hosts[h].rpc.ctx_mut().sessions.push(s);
        }
        let now = net.now();
        net.wake(h, now);
    }
    let want = clients.len() * per_client;
    let deadline = net.now() + 10_000_000_000;
    let mut up = 0;
    let ok = net.run(deadline, |n| {
        up = clients.clone().map(|h| n.hosts[h].rpc.ctx().connected).sum::<usize>();
        let failed: usize = clients.clone().map(|h| n.hosts[h].rpc.ctx().connect_failed).sum();
        up + failed == want
    });
    if !ok || up != want {
        return Err(format!("only {up} of {want} sessions connected"));
    }
    Ok(())
}

fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

// ----- incast -----

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

pub fn incast(a: &IncastArgs) -> Result<IncastReport, String> {
    let wall = std::time::Instant::now();
    if a.senders == 0 || a.senders > 4096 {
        return Err(format!("--senders must be 1..=4096, not {}", a.senders));
    }
    if a.size == 0 || a.size > erpc_dataplane::config::MAX_MSG_SIZE {
        return Err(format!("--size must be 1..={} bytes", erpc_dataplane::config::MAX_MSG_SIZE));
    }
    if a.resp_size > a.size.max(4096) {
        return Err("--resp-size must not exceed --size (or 4096 bytes)".into());
    }
    if a.requests == 0 || a.requests > 1_000_000 {
        return Err("--requests must be 1..=1000000".into());
    }
    if a.start_jitter_us > 1_000_000 || a.trace_us > 1_000_000 {
        return Err("--start-jitter-us and --trace-us must be at most 1000000 (one second)".into());
    }
    // The server holds every sender's request at once (address space only: untouched pages
    // cost nothing until data arrives).
    let server_bytes = 2 * a.senders as u64 * app::msg_footprint(a.size, a.net.mtu.max(128)) as u64;
    if server_bytes > 64 << 30 {
        return Err(format!(
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
        let mut rpc = endpoint(nic, clk, cfg, &msgs, if h == 0 { a.senders + 1 } else { 2 }, false)?;
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
        return Err("the incast did not finish within 600 s of simulated time".into());
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

    fn print(&self, a: &IncastArgs) {
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

// ----- loss -----

#[derive(Args, Debug, Clone)]
pub struct LossArgs {
    /// Probability that a frame is lost on its way to a host (both directions).
    #[arg(long)]
    pub rate: f64,
    /// Transfer (request) size, bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub size: usize,
    /// Transfers in total.
    #[arg(long, default_value_t = 128)]
    pub transfers: u64,
    /// Sessions from the client to the server, each with one transfer outstanding.
    #[arg(long, default_value_t = 8)]
    pub sessions: usize,
    #[command(flatten)]
    pub net: NetArgs,
}

impl Default for LossArgs {
    fn default() -> Self {
        LossArgs { rate: 1e-4, size: 8 << 20, transfers: 128, sessions: 8, net: NetArgs::default() }
    }
}

#[derive(Debug, Clone)]
pub struct LossRun {
    pub goodput_gbps: f64,
    pub sim_time_us: f64,
    pub losses: u64,
    pub retransmissions: u64,
    pub retransmitted_pkts: u64,
    pub failed: u64,
}

#[derive(Debug, Clone)]
pub struct LossReport {
    pub rate: f64,
    pub lossless: LossRun,
    pub lossy: LossRun,
    pub goodput_ratio: f64,
    pub wall_s: f64,
}

fn loss_run(a: &LossArgs, rate: f64) -> Result<LossRun, String> {
    let ncfg = a.net.net_config(2, rate)?;
    let cfg = a.net.rpc_config(a.size)?;
    let conc = a.sessions;
    let mut net = Network::new(ncfg, |h, nic, clk| {
        let mut rpc = endpoint(nic, clk, cfg, &[(a.size, conc), (32, conc)], conc + 1, false)?;
        let app = rpc.ctx_mut();
        app.req_size = a.size;
        app.resp_size = 32;
        app.remaining = if h == 1 { a.transfers } else { 0 };
        Ok(rpc)
    })?;
    connect_all(&mut net, 1..2, conc)?;
    let t0 = net.now();
    start(&mut net.hosts[1].rpc, 1)?;
    net.wake(1, t0);
    let want = a.transfers;
    let ok = net.run(t0 + 3_600_000_000_000, |n| {
        let c = n.hosts[1].rpc.ctx();
        c.completed + c.failed >= want
    });
    if !ok {
        return Err("the transfers did not finish within an hour of simulated time".into());
    }
    let c = net.hosts[1].rpc.ctx();
    let span = c.last_done_ns.saturating_sub(t0).max(1);
    let st = net.hosts[1].rpc.stats();
    Ok(LossRun {
        goodput_gbps: c.req_bytes as f64 * 8.0 / span as f64,
        sim_time_us: span as f64 / 1e3,
        losses: net.counters.injected_losses,
        retransmissions: st.retransmissions,
        retransmitted_pkts: st.retransmitted_pkts,
        failed: c.failed,
    })
}

pub fn loss(a: &LossArgs) -> Result<LossReport, String> {
    let wall = std::time::Instant::now();
    if !(0.0..1.0).contains(&a.rate) {
        return Err(format!("--rate must be in [0, 1), not {}", a.rate));
    }
    if a.size == 0 || a.size > erpc_dataplane::config::MAX_MSG_SIZE {
        return Err(format!("--size must be 1..={} bytes", erpc_dataplane::config::MAX_MSG_SIZE));
    }
    if a.sessions == 0 || a.sessions > 1024 || a.transfers == 0 {
        return Err("--sessions must be 1..=1024 and --transfers at least 1".into());
    }
    let lossless = loss_run(a, 0.0)?;
    let lossy = loss_run(a, a.rate)?;
    Ok(LossReport {
        rate: a.rate,
        goodput_ratio: lossy.goodput_gbps / lossless.goodput_gbps,
        lossless,
        lossy,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}

impl LossReport {
    pub fn json(&self) -> serde_json::Value {
        let run = |r: &LossRun| {
            json!({
                "goodput_gbps": r.goodput_gbps, "sim_time_us": r.sim_time_us, "losses": r.losses,
                "retransmissions": r.retransmissions, "retransmitted_pkts": r.retransmitted_pkts, "failed": r.failed,
            })
        };
        json!({
            "experiment": "loss", "rate": self.rate, "goodput_ratio": self.goodput_ratio,
            "goodput_gbps": self.lossy.goodput_gbps, "lossless_goodput_gbps": self.lossless.goodput_gbps,
            "lossless": run(&self.lossless), "lossy": run(&self.lossy), "wall_s": self.wall_s,
        })
    }

    fn print(&self, a: &LossArgs) {
        println!(
            "erpc sim loss: {} transfers of {} B over {} sessions, {} Gb/s, RTO {} us, loss rate {:e}",
            a.transfers, a.size, a.sessions, a.net.link_gbps, a.net.rto_us, a.rate
        );
        for (name, r) in [("lossless", &self.lossless), ("lossy", &self.lossy)] {
            println!(
                "  {name:9} goodput {:.2} Gb/s over {:.0} us; {} frames lost, {} rollbacks ({} packets resent), {} failed",
                r.goodput_gbps, r.sim_time_us, r.losses, r.retransmissions, r.retransmitted_pkts, r.failed
            );
        }
        println!("  goodput ratio:    {:.3}", self.goodput_ratio);
    }
}

// ----- scale -----

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

fn scale_run(a: &ScaleArgs, sessions: usize) -> Result<ScaleRun, String> {
    use erpc_dataplane::fabric::{Fabric, RxBuf};
    type Clk = &'static dyn erpc_dataplane::clock::Clock;
    let conc = a.outstanding.min(sessions * erpc_dataplane::config::SLOTS_PER_SESSION);
    // No network model here: the two endpoints alternate on this core over the in-memory
    // fabric (zero delay, frames copied at `tx_burst`), as in `erpc bench rate`, so nothing but
    // the endpoints and their NICs runs between their event-loop iterations.
    let clk: Clk = crate::bench::clock();
    let fab: &'static Fabric<'static, Clk> = crate::bench::leak(Fabric::new(clk, a.net.seed));
    let ring = (2 * conc).max(512);
    let (pc, ps) = (fab.attach(RxBuf::storage(ring).leak()), fab.attach(RxBuf::storage(ring).leak()));
    let cfg = a.net.rpc_config(a.size)?;
    let msgs = [(a.size, conc), (a.size, conc)];
    let mut srv = endpoint(fab.nic(ps, 0), clk, cfg, &msgs, sessions + 1, a.huge_pages)?;
    srv.ctx_mut().resp_size = a.size;
    let mut cli = endpoint(fab.nic(pc, 0), clk, cfg, &msgs, sessions + 1, a.huge_pages)?;
    let app = cli.ctx_mut();
    (app.req_size, app.resp_size, app.remaining) = (a.size, a.size, u64::MAX);
    // Connect in groups that the server's receive ring holds: every connect retry resends all
    // unanswered requests at once, so a larger burst loses the same ones again.
    let wall = Instant::now();
    for first in (0..sessions).step_by(256) {
        for _ in first..(first + 256).min(sessions) {
            let s = cli.create_session(srv.local_addr()).map_err(|e| format!("creating a session: {e}"))?;
            cli.ctx_mut().sessions.push(s);
        }
        while cli.ctx().connected + cli.ctx().connect_failed < cli.ctx().sessions.len() {
            cli.run_event_loop_once();
            srv.run_event_loop_once();
            if wall.elapsed() > Duration::from_secs(120) {
                return Err(format!("only {} of {sessions} sessions connected", cli.ctx().connected));
            }
        }
    }
    if cli.ctx().connected < sessions {
        return Err(format!("only {} of {sessions} sessions connected", cli.ctx().connected));
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

pub fn scale(a: &ScaleArgs) -> Result<ScaleReport, String> {
    let wall = std::time::Instant::now();
    if a.sessions == 0 || a.sessions > 60_000 {
        return Err(format!("--sessions must be 1..=60000, not {}", a.sessions));
    }
    if a.outstanding == 0 || a.outstanding > 4096 {
        return Err("--outstanding must be 1..=4096".into());
    }
    if a.size > 64 << 10 || a.rpcs == 0 {
        return Err("--size must be at most 64 KiB and --rpcs at least 1".into());
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

    fn print(&self, a: &ScaleArgs) {
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
