//! `erpc sim`: a simulated datacenter that runs the real dataplane, unmodified, at scales this
//! machine cannot host. See [`net`] for the model.
//!
//! * [`incast()`]: many clients send large requests to one server at once.
//! * [`loss()`]: large transfers between two hosts at a given loss rate, against a lossless run.
//! * [`scale()`]: one endpoint with many sessions doing small RPCs, against one session, over the
//!   in-memory fabric (no network model: it is about the endpoints' own cost).

pub mod app;
mod incast;
mod loss;
pub mod net;
pub mod nic;
mod scale;

pub use incast::{incast, IncastArgs, IncastReport};
pub use loss::{loss, LossArgs, LossReport, LossRun};
pub use scale::{scale, ScaleArgs, ScaleReport, ScaleRun};

use anyhow::Context;
use app::App;
use clap::{Args, Subcommand};
use erpc_dataplane::RpcConfig;
use net::{NetConfig, Network, Topology};
use nic::host_addr;

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
    fn net_config(&self, hosts: usize, loss: f64) -> anyhow::Result<NetConfig> {
        if !(self.buffer_mb > 0.0 && self.buffer_mb <= 1024.0) {
            return Err(anyhow::anyhow!("--buffer-mb must be in (0, 1024], not {}", self.buffer_mb));
        }
        if self.dt_alpha.is_nan() || self.dt_alpha <= 0.0 {
            return Err(anyhow::anyhow!("--dt-alpha must be positive"));
        }
        if self.link_delay_ns > 1_000_000_000 {
            return Err(anyhow::anyhow!("--link-delay-ns must be at most 1000000000 (one second)"));
        }
        if self.link_gbps.is_nan() || self.link_gbps < 0.001 || self.spines == 0 || self.spines > 256 {
            return Err(anyhow::anyhow!("--link-gbps must be at least 0.001 and --spines 1..=256"));
        }
        if !(128..=9000).contains(&self.mtu) {
            return Err(anyhow::anyhow!("--mtu must be 128..=9000, not {}", self.mtu));
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

    fn rpc_config(&self, max_msg: usize) -> anyhow::Result<RpcConfig> {
        if self.rto_us == 0 || self.rto_us > 10_000_000 {
            return Err(anyhow::anyhow!("--rto-us must be 1..=10000000, not {}", self.rto_us));
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
        Experiment::Incast(a) => emit(a.net.json, &incast(&a)?, IncastReport::json, |r| r.print(&a)),
        Experiment::Loss(a) => emit(a.net.json, &loss(&a)?, LossReport::json, |r| r.print(&a)),
        Experiment::Scale(a) => emit(a.net.json, &scale(&a)?, ScaleReport::json, |r| r.print(&a)),
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
fn connect_all(net: &mut Network<App>, clients: std::ops::Range<usize>, per_client: usize) -> anyhow::Result<()> {
    let server = host_addr(0);
    for h in clients.clone() {
        for _ in 0..per_client {
            let s = net.hosts[h].rpc.create_session(server).with_context(|| "creating a session")?;
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
        return Err(anyhow::anyhow!("only {up} of {want} sessions connected"));
    }
    Ok(())
}

fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}
