//! `erpc sim loss`: large transfers between two hosts at a given loss rate, against a lossless
//! run.

use super::app::{endpoint, memory, start};
use super::net::Network;
use super::{connect_all, NetArgs};
use clap::Args;
use serde_json::json;

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

fn loss_run(a: &LossArgs, rate: f64) -> anyhow::Result<LossRun> {
    let ncfg = a.net.net_config(2, rate)?;
    let cfg = a.net.rpc_config(a.size)?;
    let conc = a.sessions;
    let mut net = Network::new(ncfg, |h, nic, clk| {
        let mut rpc = endpoint(nic, clk, cfg, memory(&cfg, &[(a.size, conc), (32, conc)], conc + 1))?;
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
        return Err(anyhow::anyhow!("the transfers did not finish within an hour of simulated time"));
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

pub fn loss(a: &LossArgs) -> anyhow::Result<LossReport> {
    let wall = std::time::Instant::now();
    if !(0.0..1.0).contains(&a.rate) {
        return Err(anyhow::anyhow!("--rate must be in [0, 1), not {}", a.rate));
    }
    if a.size == 0 || a.size > erpc_dataplane::config::MAX_MSG_SIZE {
        return Err(anyhow::anyhow!("--size must be 1..={} bytes", erpc_dataplane::config::MAX_MSG_SIZE));
    }
    if a.sessions == 0 || a.sessions > 1024 || a.transfers == 0 {
        return Err(anyhow::anyhow!("--sessions must be 1..=1024 and --transfers at least 1"));
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

    pub(super) fn print(&self, a: &LossArgs) {
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
