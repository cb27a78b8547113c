//! `erpc bench`: latency, rate and bandwidth, with a reference measured in the same run.
//!
//! Over the in-memory NIC (`--transport sim`) both endpoints run on this thread, alternating
//! event-loop iterations, so the figures are the cost of the protocol plus the in-memory NIC on
//! one core. The reference is the raw packet echo rate of the same NIC with the same frame sizes
//! and window, without any RPC layer.
//!
//! Over UDP (`--transport udp`) the server runs on its own thread (or process: `--server ADDR`
//! on one side, `--connect ADDR` on the other). The reference is a raw UDP ping-pong between two
//! busy-polling sockets with the same datagram sizes and window: the kernel path's limit.

use crate::TransportKind;
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use erpc_dataplane::clock::Clock;
use erpc_dataplane::fabric::{Fabric, RxBuf, SimNic};
use erpc_dataplane::transport::EndpointAddr;
use erpc_dataplane::transport::{RxPacket, Segment, Transport, TxPacket};
use erpc_dataplane::wire::{ErpcHdr, PktType, RoutingInfo, HEADROOM, PKT_HDR_LEN};
use erpc_dataplane::*;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

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
}

#[derive(Default)]
pub(crate) struct Client {
    session: Option<SessionId>,
    completed: u64,
    failed: u64,
    bytes: u64,
    measuring: bool,
    start_ns: Vec<u64>,
    hist: Option<Histogram<u64>>,
}

pub(crate) type Clk = &'static dyn Clock;
type Nic = SimNic<'static, 'static, Clk>;

fn server_handler<T: Transport>(rpc: &mut Rpc<'static, T, Clk, usize>, h: ReqHandle) {
    let n = *rpc.ctx();
    if n <= rpc.max_data_per_pkt() {
        let _ = rpc.request_and_prealloc_response(&h);
        let _ = rpc.enqueue_response_prealloc(h, n);
    } else if let Ok(b) = rpc.alloc_msg_buffer(n) {
        let _ = rpc.enqueue_response(h, b);
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
    if let Err(e) = rpc.enqueue_request(s, 1, c.req, c.resp, client_cont::<T>, c.tag) {
        let _ = rpc.free_msg_buffer(e.req);
        let _ = rpc.free_msg_buffer(e.resp);
    }
}

pub(crate) fn leak<T>(v: T) -> &'static mut T {
    Box::leak(Box::new(v))
}

fn region(bytes: usize) -> DmaRegion {
    DmaRegion::from_static(vec![0u8; bytes].leak(), 0x1_0000_0000)
}

/// Room for `conc` requests and responses of the largest size on each side, twice over, with
/// a 56-byte packet header per `data_per_pkt` bytes, plus 8 MiB for the endpoint itself.
pub(crate) fn region_bytes(req: usize, resp: usize, conc: usize, data_per_pkt: usize) -> usize {
    let m = req.max(resp);
    4 * conc * (m + (m / data_per_pkt + 1) * 56).next_power_of_two() + (8 << 20)
}

pub(crate) fn memory(bytes: usize) -> RpcMemory<'static> {
    memory_in(region(bytes))
}

/// Endpoint memory over `region` (heap for software transports, the UMEM for AF_XDP).
pub(crate) fn memory_in(region: DmaRegion) -> RpcMemory<'static> {
    RpcMemory { region, sessions: Session::storage(16).leak(), backlog: BacklogEntry::storage(64).leak() }
}

/// The request type the benchmark server handles.
pub(crate) const REQ_TYPE: u8 = 1;

/// A server endpoint on `t` answering [`REQ_TYPE`] requests with `resp`-byte responses.
pub(crate) fn server_endpoint<T: Transport>(
    t: T,
    resp: usize,
    mem: RpcMemory<'static>,
    cfg: RpcConfig,
) -> anyhow::Result<Rpc<'static, T, Clk, usize>> {
    let mut srv = Rpc::new(t, clock(), resp, mem, cfg).context("building the server endpoint")?;
    srv.register_handler(REQ_TYPE, server_handler::<T>, HandlerMode::Foreground)
        .context("registering the server's request handler")?;
    Ok(srv)
}

/// Builds a client endpoint on `t`, connects it to the server at `to` (`what` names it in
/// errors) and measures as `a` says. Returns the endpoint too, for its counters.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_client<T: Transport>(
    t: T,
    mem: RpcMemory<'static>,
    cfg: RpcConfig,
    a: &BenchArgs,
    to: EndpointAddr,
    what: &str,
    req: usize,
    conc: usize,
) -> anyhow::Result<(Report, Rpc<'static, T, Clk, Client>)> {
    let clk = clock();
    let mut cli = Rpc::new(t, clk, Client::default(), mem, cfg).context("building the client endpoint")?;
    let s = connect(&mut cli, to, what)?;
    let r = measure(&mut cli, || {}, s, a.mode, req, a.resp_size, conc, a.duration, clk, a.progress())?;
    Ok((r, cli))
}

/// Creates a session to `server` and runs the event loop until it connects (5 s at most).
pub(crate) fn connect<T: Transport>(
    cli: &mut Rpc<'static, T, Clk, Client>,
    server: EndpointAddr,
    what: &str,
) -> anyhow::Result<SessionId> {
    let s = cli.create_session(server).with_context(|| format!("connecting to {what}"))?;
    let t0 = Instant::now();
    while !cli.is_connected(s) {
        cli.run_event_loop_once();
        if t0.elapsed() > Duration::from_secs(5) {
            bail!("no eRPC server answered at {what} within 5 s: is it running, and are the address and port right?");
        }
    }
    Ok(s)
}

/// Runs a server endpoint until `stop` is set (or forever without one).
pub(crate) fn serve_until<T: Transport>(srv: &mut Rpc<'static, T, Clk, usize>, stop: Option<&AtomicBool>) {
    loop {
        for _ in 0..256 {
            srv.run_event_loop_once();
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return;
        }
    }
}

pub(crate) fn clock() -> Clk {
    #[cfg(target_arch = "x86_64")]
    {
        leak(erpc_dataplane::clock::TscClock::calibrate())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        leak(erpc_dataplane::clock::StdClock::default())
    }
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
    if a.interface.is_some() && (a.transport != TransportKind::Afxdp || (a.server.is_none() && a.connect.is_none())) {
        bail!("--interface applies to --transport afxdp with --server or --connect");
    }
    if (a.pci.is_some() || a.peer_mac.is_some()) && a.transport != TransportKind::Mlx5 {
        bail!("--pci and --peer-mac apply to --transport mlx5");
    }
    let r = match a.transport {
        TransportKind::Sim => run_sim(&a, req, conc)?,
        TransportKind::Udp => crate::bench_udp::run(&a, req, conc)?,
        TransportKind::Afxdp => crate::bench_afxdp::run(&a, req, conc)?,
        TransportKind::Mlx5 => crate::bench_mlx5::run(&a, req, conc)?,
    };
    print_report(&r, a.transport, a.json);
    Ok(())
}

fn run_sim(a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<Report> {
    let (mode, resp, secs, lag, cc) = (a.mode, a.resp_size, a.duration, a.sim_tx_lag, !a.no_cc);
    let clk = clock();
    let fab: &'static Fabric<'static, Clk> = leak(Fabric::new(clk, 1));
    let pa = fab.attach(RxBuf::storage(512).leak());
    let pb = fab.attach(RxBuf::storage(512).leak());
    let need = region_bytes(req, resp, conc, 968);
    let mut cfg = RpcConfig { seed: RpcConfig::random_seed(), ..RpcConfig::default() };
    cfg.cc.enabled = cc;
    let mut srv = server_endpoint(fab.nic(pb, lag), resp, memory(need), cfg)?;
    let mut cli: Rpc<'static, Nic, Clk, Client> = Rpc::new(fab.nic(pa, lag), clk, Client::default(), memory(need), cfg)
        .context("building the client endpoint")?;
    let s = cli.create_session(srv.local_addr()).context("connecting to the in-memory server")?;
    let t0 = Instant::now();
    while !cli.is_connected(s) {
        cli.run_event_loop_once();
        srv.run_event_loop_once();
        if t0.elapsed() > Duration::from_secs(2) {
            bail!("connecting to the in-memory server: no answer within 2 s");
        }
    }
    let mut r = measure(&mut cli, || srv.run_event_loop_once(), s, mode, req, resp, conc, secs, clk, a.progress())?;
    r.reference = "raw packet echo over the same NIC, same frame sizes and window";
    r.reference_pps = raw_echo_pps(clk, req, resp, conc, secs.min(2.0), lag);
    r.memcpy_gbps = (mode == Mode::Bandwidth).then(|| memcpy_gbps(req, secs.min(2.0)));
    r.deferred_frees = srv.stats().deferred_frees;
    r.cc = cc;
    Ok(r)
}

/// A progress bar over `secs` on stderr, or a hidden one (`--json`, runs of a second or less).
/// indicatif draws nothing when stderr is not a terminal.
fn progress_bar(show: bool, secs: f64) -> indicatif::ProgressBar {
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
    clk: Clk,
    progress: bool,
) -> anyhow::Result<Report> {
    cli.ctx_mut().session = Some(s);
    cli.ctx_mut().start_ns = vec![0; conc];
    if mode == Mode::Latency {
        cli.ctx_mut().hist = Some(Histogram::new(3).expect("histogram"));
    }
    for t in 0..conc {
        let q = cli.alloc_msg_buffer(req).map_err(crate::alloc_error).context("allocating a request buffer")?;
        let r = cli.alloc_msg_buffer(resp).map_err(crate::alloc_error).context("allocating a response buffer")?;
        cli.ctx_mut().start_ns[t] = clk.now_ns();
        cli.enqueue_request(s, 1, q, r, client_cont::<T>, t as u64)
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
        memcpy_gbps: None,
    })
}

/// memcpy throughput (Gb/s) of `size`-byte buffers: the in-memory NIC copies every byte twice
/// (device "DMA" into a receive buffer, then into the msgbuf), so half of this is the ceiling.
fn memcpy_gbps(size: usize, secs: f64) -> f64 {
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    let mut bytes = 0u64;
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    while start.elapsed() < dur {
        for _ in 0..16 {
            dst.copy_from_slice(std::hint::black_box(&src));
            bytes += size as u64;
        }
        std::hint::black_box(&mut dst);
    }
    bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// Round trips per second of raw frames over the same in-memory NIC: `conc` frames of the
/// request's first-packet size go out, each is echoed back as a response-sized frame.
fn raw_echo_pps(clk: Clk, req: usize, resp: usize, conc: usize, secs: f64, lag: usize) -> f64 {
    let fab: &'static Fabric<'static, Clk> = leak(Fabric::new(clk, 2));
    let pa = fab.attach(RxBuf::storage(512).leak());
    let pb = fab.attach(RxBuf::storage(512).leak());
    let mut a = fab.nic(pa, lag);
    let mut b = fab.nic(pb, lag);
    let (aa, ba) = (a.local_addr(), b.local_addr());
    let frame = |src, dst, data: usize| {
        let data = data.min(968);
        let mut f = vec![0u8; PKT_HDR_LEN + data];
        let mut hr = [0u8; HEADROOM];
        RoutingInfo::new(src, dst).write(&mut hr, 14 + data);
        f[..HEADROOM].copy_from_slice(&hr);
        f[HEADROOM..PKT_HDR_LEN].copy_from_slice(ErpcHdr::new(1, data as u32, 0, PktType::Req, 0, 8).as_bytes());
        f.leak()
    };
    let fa: &'static [u8] = frame(&aa, &ba, req);
    let fb: &'static [u8] = frame(&ba, &aa, resp);
    let pkt = |f: &'static [u8]| TxPacket {
        segs: [Segment { vaddr: f.as_ptr(), iova: 0, len: f.len() as u32 }, Segment::EMPTY],
    };
    let (ta, tb) = (vec![pkt(fa); conc], vec![pkt(fb); 32]);
    let mut rx = [RxPacket::EMPTY; 32];
    let mut in_flight = 0usize;
    let mut echoes = 0u64;
    let mut step = |a: &mut Nic, b: &mut Nic, echoes: &mut u64| {
        if in_flight < conc {
            in_flight += a.tx_burst(&ta[..conc - in_flight]);
        }
        let n = b.rx_burst(&mut rx);
        b.rx_release(&rx[..n]);
        b.tx_burst(&tb[..n]);
        let m = a.rx_burst(&mut rx);
        a.rx_release(&rx[..m]);
        in_flight -= m;
        *echoes += m as u64;
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        step(&mut a, &mut b, &mut echoes);
    }
    echoes = 0;
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    while start.elapsed() < dur {
        for _ in 0..256 {
            step(&mut a, &mut b, &mut echoes);
        }
    }
    echoes as f64 / start.elapsed().as_secs_f64()
}

fn print_report(r: &Report, t: TransportKind, json: bool) {
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
