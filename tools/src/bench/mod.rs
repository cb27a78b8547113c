//! `erpc bench`: latency, rate and bandwidth, with a reference measured in the same run.
//!
//! Over the in-memory NIC (`--transport sim`) both endpoints run on this thread, alternating
//! event-loop iterations, so the figures are the cost of the protocol plus the in-memory NIC on
//! one core. The reference is the raw packet echo rate of the same NIC with the same frame sizes
//! and window, without any RPC layer.
//!
//! With `rate --threads N`, N independent pairs run at once, each on its own thread, and the
//! report gives their aggregate rate against one pair alone (`threads.rs`).
//!
//! Over UDP (`--transport udp`) the server runs on its own thread (or process: `--server ADDR`
//! on one side, `--connect ADDR` on the other). The reference is a raw UDP ping-pong between two
//! busy-polling sockets with the same datagram sizes and window: the kernel path's limit.

mod afxdp;
mod mlx5;
mod report;
mod sim;
mod threads;
mod udp;

pub(crate) use report::{print_figures, report_json};

use crate::endpoints::{clock, connect, rpc_config, Clk, ConnectState, REQ_TYPE};
use crate::TransportKind;
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use erpc_dataplane::clock::Clock;
use erpc_dataplane::transport::EndpointAddr;
use erpc_dataplane::*;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// `--xdp-mode`: [`erpc_driver::afxdp::XdpAttach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum XdpMode {
    Auto,
    Native,
    Generic,
}

impl XdpMode {
    pub(crate) fn attach(self) -> erpc_driver::afxdp::XdpAttach {
        use erpc_driver::afxdp::XdpAttach;
        match self {
            XdpMode::Auto => XdpAttach::Auto,
            XdpMode::Native => XdpAttach::Native,
            XdpMode::Generic => XdpAttach::Generic,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Round-trip time of one outstanding RPC (HdrHistogram percentiles).
    Latency,
    /// RPCs per second with `--concurrency` outstanding.
    Rate,
    /// Gb/s of large requests with small responses.
    Bandwidth,
}

impl Mode {
    /// The name on the command line.
    pub(crate) fn name(self) -> String {
        crate::value_name(&self)
    }
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub(crate) mode: Mode,
    /// Packet I/O to use.
    #[arg(long, value_enum, default_value = "udp")]
    pub(crate) transport: TransportKind,
    /// Request size in bytes (default: 32; 1 MiB for bandwidth).
    #[arg(long)]
    size: Option<usize>,
    /// Response size in bytes (default: 32).
    #[arg(long, default_value_t = 32)]
    pub(crate) resp_size: usize,
    /// Outstanding requests (default: 8 for rate, 1 for latency, 2 for bandwidth).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measurement time in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) duration: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Rate only: run this many independent client/server pairs, each alone on its own thread
    /// (in-memory NIC: a fabric each; UDP: two sockets each; AF_XDP: a queue of a veth pair
    /// each), after one such pair alone as the reference, and report the scaling.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// In-memory NIC only: frames that may wait unread after `tx_burst` (0 = the device reads
    /// them at once, as QEMU's igb model does on a doorbell write; the tests use 16, which also
    /// delays reads by one event-loop iteration).
    #[arg(long, default_value_t = 0)]
    sim_tx_lag: usize,
    /// Turn congestion control (Timely, pacing) off.
    #[arg(long)]
    pub(crate) no_cc: bool,
    /// UDP, AF_XDP: run only the server, on this address (e.g. 10.0.0.1:31850), until killed.
    #[arg(long, conflicts_with = "connect")]
    pub(crate) server: Option<std::net::SocketAddrV4>,
    /// UDP, AF_XDP: run only the client, against the server at this address.
    #[arg(long)]
    pub(crate) connect: Option<std::net::SocketAddrV4>,
    /// UDP, AF_XDP: the client's own address (UDP: default 127.0.0.1 on loopback, else
    /// required; AF_XDP: default the interface's address, port 31851).
    #[arg(long)]
    pub(crate) bind: Option<std::net::SocketAddrV4>,
    /// AF_XDP with --server or --connect: the interface to attach to (queue 0).
    #[arg(long)]
    pub(crate) interface: Option<String>,
    /// AF_XDP: how the XDP program is attached. auto: native, but generic on a veth with one
    /// queue (a lower median there); native or generic to compare the two.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    pub(crate) xdp_mode: XdpMode,
    /// mlx5: the ConnectX PCI function to use (bound to vfio-pci), e.g. 0000:3b:00.0.
    #[arg(long)]
    pub(crate) pci: Option<String>,
    /// mlx5 with --connect: the server's MAC address, as its --server run prints it.
    #[arg(long)]
    pub(crate) peer_mac: Option<String>,
}

impl BenchArgs {
    /// Whether to show a progress bar: runs longer than a second, not `--json`.
    pub(crate) fn progress(&self) -> bool {
        !self.json && self.duration > 1.0
    }

    /// The endpoint configuration over UDP, AF_XDP and mlx5 (1500-byte IP packets).
    pub(crate) fn rpc_config(&self) -> RpcConfig {
        rpc_config(1514, !self.no_cc)
    }
}

/// The benchmark client's context: its session, counters and latency histogram.
#[derive(Default)]
pub(crate) struct Client {
    session: Option<SessionId>,
    completed: u64,
    failed: u64,
    bytes: u64,
    measuring: bool,
    start_ns: Vec<u64>,
    hist: Option<Histogram<u64>>,
    connect_failure: Option<SmError>,
}

impl ConnectState for Client {
    fn connect_failure(&mut self) -> &mut Option<SmError> {
        &mut self.connect_failure
    }
}

pub(crate) fn client_cont<T: Transport>(rpc: &mut Rpc<'static, T, Clk, Client>, c: Completion) {
    // Only latency runs read the clock per RPC.
    let now = if rpc.ctx().hist.is_some() { rpc.clock().now_ns() } else { 0 };
    let ctx = rpc.ctx_mut();
    match c.result {
        Ok(n) if ctx.measuring => {
            ctx.completed += 1;
            ctx.bytes += (c.req.len() + n) as u64;
            let t = c.tag as usize;
            if let Some(h) = ctx.hist.as_mut() {
                let _ = h.record((now - ctx.start_ns[t]).max(1));
            }
        }
        Ok(_) => {}
        Err(_) => ctx.failed += 1,
    }
    ctx.start_ns[c.tag as usize] = now;
    let s = ctx.session.expect("session");
    if let Err(e) = rpc.enqueue_request(s, REQ_TYPE, c.req, c.resp, client_cont::<T>, c.tag) {
        let _ = rpc.free_msg_buffer(e.req);
        let _ = rpc.free_msg_buffer(e.resp);
    }
}

/// Builds a client endpoint on `t`, connects it to the server at `to` (`what` names it in
/// errors) and measures as `a` says. Returns the endpoint too, for its counters.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_client<T: Transport>(
    t: T,
    mem: OwnedMemory,
    cfg: RpcConfig,
    a: &BenchArgs,
    to: EndpointAddr,
    what: &str,
    req: usize,
    conc: usize,
) -> anyhow::Result<(Report, Rpc<'static, T, Clk, Client>)> {
    let mut cli = Rpc::new(t, clock(), Client::default(), mem, cfg).context("building the client endpoint")?;
    let s = connect(&mut cli, &mut || {}, to, what)?;
    let r = measure(&mut cli, || {}, s, a.mode, req, a.resp_size, conc, a.duration, a.progress())?;
    Ok((r, cli))
}

/// Results of one run.
pub(crate) struct Report {
    pub mode: Mode,
    pub req: usize,
    pub resp: usize,
    pub conc: usize,
    pub secs: f64,
    pub rpcs: u64,
    pub bytes: u64,
    pub failed: u64,
    pub retransmissions: u64,
    pub deferred_frees: u64,
    pub cc: bool,
    pub hist: Option<Histogram<u64>>,
    /// What the reference is (measured in the same run, same sizes and window).
    pub reference: &'static str,
    /// Round trips per second of the reference.
    pub reference_pps: f64,
    /// Median round trip of the reference, in microseconds (latency runs over UDP, AF_XDP).
    pub reference_p50_us: Option<f64>,
    /// Round trips the reference measured.
    pub reference_trips: u64,
    /// Bandwidth mode: memcpy throughput of request-sized buffers on this core.
    pub memcpy_gbps: Option<f64>,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    if !(a.duration > 0.0 && a.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds, not {}", a.duration);
    }
    let req = a.size.unwrap_or(if a.mode == Mode::Bandwidth { 1 << 20 } else { 32 });
    let conc = a.concurrency.unwrap_or(match a.mode {
        Mode::Latency => 1,
        Mode::Rate => 8,
        Mode::Bandwidth => 2,
    });
    if conc == 0 || conc > 64 {
        bail!("--concurrency must be 1..=64, not {conc}");
    }
    let max = erpc_dataplane::config::MAX_MSG_SIZE;
    if req > max || a.resp_size > max {
        bail!("message sizes are limited to {max} bytes");
    }
    if a.transport == TransportKind::Sim && (a.server.is_some() || a.connect.is_some() || a.bind.is_some()) {
        bail!("--server, --connect and --bind apply to --transport udp, afxdp and mlx5");
    }
    if a.xdp_mode != XdpMode::Auto && a.transport != TransportKind::Afxdp {
        bail!("--xdp-mode applies to --transport afxdp");
    }
    if a.xdp_mode == XdpMode::Generic && a.threads > 1 {
        bail!(
            "--xdp-mode generic does not work with --threads: generic XDP on a veth hands every frame to the \
             program as queue 0's, so the sockets on the other queues get nothing (use auto or native)"
        );
    }
    if a.interface.is_some() && (a.transport != TransportKind::Afxdp || (a.server.is_none() && a.connect.is_none())) {
        bail!("--interface applies to --transport afxdp with --server or --connect");
    }
    if (a.pci.is_some() || a.peer_mac.is_some()) && a.transport != TransportKind::Mlx5 {
        bail!("--pci and --peer-mac apply to --transport mlx5");
    }
    if a.threads != 1 {
        return threads::run(&a, req, conc);
    }
    let r = match a.transport {
        TransportKind::Sim => sim::run(&a, req, conc)?,
        TransportKind::Udp => udp::run(&a, req, conc)?,
        TransportKind::Afxdp => afxdp::run(&a, req, conc)?,
        TransportKind::Mlx5 => mlx5::run(&a, req, conc)?,
    };
    report::print(&r, a.transport, a.json);
    Ok(())
}

/// A progress bar over `secs` on stderr, or a hidden one (`--json`, runs of a second or less).
/// indicatif draws nothing when stderr is not a terminal.
pub(crate) fn progress_bar(show: bool, secs: f64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new((secs * 1000.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("measuring {bar:40} {elapsed}/{duration}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Keeps `conc` requests in flight on session `s`, warms up for 200 ms, then measures for
/// `secs`; `other` runs between client iterations (the server, when it shares the thread).
#[allow(clippy::too_many_arguments)]
pub(crate) fn measure<T: Transport>(
    cli: &mut Rpc<'static, T, Clk, Client>,
    mut other: impl FnMut(),
    s: SessionId,
    mode: Mode,
    req: usize,
    resp: usize,
    conc: usize,
    secs: f64,
    progress: bool,
) -> anyhow::Result<Report> {
    cli.ctx_mut().session = Some(s);
    cli.ctx_mut().start_ns = vec![0; conc];
    if mode == Mode::Latency {
        cli.ctx_mut().hist = Some(Histogram::new(3).expect("histogram"));
    }
    for t in 0..conc {
        let q = cli.alloc_msg_buffer(req).context("allocating a request buffer")?;
        let r = cli.alloc_msg_buffer(resp).context("allocating a response buffer")?;
        cli.ctx_mut().start_ns[t] = cli.clock().now_ns();
        cli.enqueue_request(s, REQ_TYPE, q, r, client_cont::<T>, t as u64)
            .map_err(|e| anyhow!(e.kind))
            .context("sending the first requests")?;
    }
    // Warm up, then measure.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        for _ in 0..64 {
            cli.run_event_loop_once();
            other();
        }
    }
    cli.ctx_mut().measuring = true;
    let bar = progress_bar(progress, secs);
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    loop {
        let el = start.elapsed();
        if el >= dur {
            break;
        }
        bar.set_position(el.as_millis() as u64);
        for _ in 0..256 {
            cli.run_event_loop_once();
            other();
        }
    }
    let el = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    cli.ctx_mut().measuring = false;
    let c = cli.ctx();
    Ok(Report {
        mode,
        req,
        resp,
        conc,
        secs: el,
        rpcs: c.completed,
        bytes: c.bytes,
        failed: c.failed,
        retransmissions: cli.stats().retransmissions,
        deferred_frees: 0,
        cc: cli.config().cc.enabled,
        hist: cli.ctx_mut().hist.take(),
        reference: "",
        reference_pps: f64::NAN,
        reference_p50_us: None,
        reference_trips: 0,
        memcpy_gbps: None,
    })
}
