//! `erpc capture`: the frames an endpoint sends and receives, written to a pcap file.
//!
//! [`Capture`] wraps any [`Transport`] and copies every frame that passes through it — as the
//! dataplane sees it: the 42-byte Ethernet/IPv4/UDP headroom, the eRPC header, the data — into a
//! classic pcap file (`LINKTYPE_ETHERNET`, nanosecond timestamps). The datapath is unchanged: the
//! wrapper copies after the inner transport accepted a TX burst and before a lent RX frame reaches
//! the dataplane. Wireshark decodes the UDP layer and hands the payload to the eRPC dissector in
//! `tools/wireshark/erpc.lua`.
//!
//! The headroom of transmitted frames is the one `RoutingInfo::write` builds per packet (IPv4
//! total length, UDP length and IPv4 checksum filled in); the UDP transport synthesises received
//! frames' headroom the same way. So the frames are written as they are, without fix-ups. (Over
//! kernel UDP sockets the MAC addresses are zero: the kernel, not eRPC, builds the real frames.)
//!
//! With `--transport afxdp` the frames are the real ones of an AF_XDP socket (the veth pair's
//! MAC addresses included), both ends running on a veth pair between two network namespaces
//! made for the run.
//!
//! The command runs a client and a server in this process (or a client against `erpc bench
//! --server`), capturing on the client: a connect handshake, `--count` RPCs whose requests and
//! responses span several packets (so credit returns and requests-for-response appear), and the
//! disconnect handshake.

use crate::bench::{clock, leak, memory, memory_in, region_bytes, server_endpoint};
use crate::TransportKind;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use erpc_dataplane::fabric::{Fabric, RxBuf, SimNic};
use erpc_dataplane::transport::{EndpointAddr, ResolveError, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::RoutingInfo;
use erpc_dataplane::*;
use erpc_driver::udp::{UdpConfig, UdpError, UdpTransport};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, PcapError, TsResolution};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Longest frame kept whole; longer ones are cut here and recorded with their full length
/// (262,144 is Wireshark's largest snapshot length for Ethernet).
pub const SNAPLEN: u32 = 262_144;

/// What a [`Capture`] has written so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames accepted by the inner transport's `tx_burst`.
    pub sent: u64,
    /// Frames lent by the inner transport's `rx_burst`.
    pub received: u64,
    /// Frames longer than [`SNAPLEN`], written cut short.
    pub truncated: u64,
}

impl CaptureStats {
    pub fn packets(&self) -> u64 {
        self.sent + self.received
    }
}

/// A [`Transport`] that writes every frame sent and received through `T` to a pcap stream.
///
/// Methods delegate to `T` (including `resolve`, `max_tx_in_flight` and `tx_reclaimed`, so the
/// dataplane behaves as over `T` itself). A write error stops the capture, not the endpoint: it
/// is kept and returned by [`Capture::finish`], which also ends the capture.
pub struct Capture<T, W: Write> {
    inner: T,
    /// `None` once finished.
    out: Option<PcapWriter<W>>,
    frame: Vec<u8>,
    stats: CaptureStats,
    error: Option<io::Error>,
}

/// pcap-file's error as the I/O error it is (its other kinds are about reading).
fn pcap_error(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        e => io::Error::other(e),
    }
}

impl<T: Transport, W: Write> Capture<T, W> {
    /// Wraps `inner` and writes the pcap file header to `out`.
    pub fn new(inner: T, out: W) -> io::Result<Self> {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            ..Default::default()
        };
        let out = PcapWriter::with_header(out, header).map_err(pcap_error)?;
        Ok(Capture { inner, out: Some(out), frame: vec![0; 2048], stats: CaptureStats::default(), error: None })
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// Ends the capture (later frames pass through unrecorded), flushes the stream and returns
    /// it; or the first write error. What was written stays in [`Capture::stats`].
    pub fn finish(&mut self) -> io::Result<W> {
        let out = self.out.take();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut w = out.ok_or_else(|| io::Error::other("the capture was already finished"))?.into_writer();
        w.flush()?;
        Ok(w)
    }

    /// Room for a frame of `len` bytes in the scratch buffer.
    fn scratch(&mut self, len: usize) -> &mut [u8] {
        if self.frame.len() < len {
            self.frame.resize(len, 0);
        }
        &mut self.frame[..len]
    }

    /// Writes the first `len` bytes of the scratch buffer as one packet stamped now.
    fn write_scratch(&mut self, len: usize) -> bool {
        let Some(out) = self.out.as_mut().filter(|_| self.error.is_none()) else {
            return false;
        };
        let ts = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let kept = len.min(SNAPLEN as usize);
        let pkt = PcapPacket::new(ts, len as u32, &self.frame[..kept]);
        match out.write_packet(&pkt) {
            Ok(_) => {
                self.stats.truncated += (kept < len) as u64;
                true
            }
            Err(e) => {
                self.error = Some(pcap_error(e));
                false
            }
        }
    }
}

impl<T: Transport, W: Write> Transport for Capture<T, W> {
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn local_addr(&self) -> EndpointAddr {
        self.inner.local_addr()
    }

    fn resolve(&mut self, remote: &EndpointAddr) -> Result<RoutingInfo, ResolveError> {
        self.inner.resolve(remote)
    }

    fn max_tx_in_flight(&self) -> usize {
        self.inner.max_tx_in_flight()
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let n = self.inner.tx_burst(pkts);
        for p in &pkts[..n] {
            let len = p.len();
            let buf = self.scratch(len);
            // SAFETY: the dataplane keeps an accepted packet's segments readable at least until
            // `tx_burst` returns (see `Transport`); this is still inside that call, and `buf` has
            // `len()` bytes.
            unsafe { p.copy_to(buf) };
            self.stats.sent += self.write_scratch(len) as u64;
        }
        n
    }

    fn tx_flush(&mut self) {
        self.inner.tx_flush()
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let n = self.inner.rx_burst(out);
        for p in &out[..n] {
            let len = p.len as usize;
            let buf = self.scratch(len);
            // SAFETY: the transport lent `p.len` bytes at `p.data` until `rx_release`, which has
            // not happened yet. The memory is device-writable, so it is read through the raw
            // pointer (a byte copy, no reference to it); `buf` has `len` bytes and is our own.
            unsafe { core::ptr::copy_nonoverlapping(p.data.as_ptr().cast_const(), buf.as_mut_ptr(), len) };
            self.stats.received += self.write_scratch(len) as u64;
        }
        n
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        self.inner.rx_release(pkts)
    }

    fn tx_reclaimed(&self) -> u64 {
        self.inner.tx_reclaimed()
    }
}

/// The request type the capture's client sends (the `erpc bench` server's handler).
pub const REQ_TYPE: u8 = crate::bench::REQ_TYPE;

#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Packet I/O to capture on.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportKind,
    /// The pcap file to write (`-` for standard output; the summary then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pcap: PathBuf,
    /// Request size in bytes (the default spans three packets at a 1514-byte MTU).
    #[arg(long, default_value_t = 3000)]
    size: usize,
    /// Response size in bytes (the default spans two packets).
    #[arg(long, default_value_t = 2000)]
    resp_size: usize,
    /// RPCs to make, one after the other.
    #[arg(long, default_value_t = 3)]
    count: u64,
    /// UDP, both ends here: the server's port. Default 31850, the eRPC base port, which the
    /// dissector decodes without settings; 0 picks a free one.
    #[arg(long, conflicts_with = "connect")]
    port: Option<u16>,
    /// UDP: capture only a client, against an `erpc bench --server` at this address (its
    /// `--resp-size` must not exceed this one's).
    #[arg(long)]
    connect: Option<SocketAddrV4>,
    /// UDP: the client's own address (default 127.0.0.1:0; required with --connect to another
    /// machine). Without --connect the server binds the same IP.
    #[arg(long)]
    bind: Option<SocketAddrV4>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What a capture run did, for the summary.
struct Outcome {
    stats: CaptureStats,
    client: EndpointAddr,
    server: EndpointAddr,
    client_session: u16,
    /// The server's session number, when the server ran here.
    server_session: Option<u16>,
    retransmissions: u64,
}

type Clk = &'static dyn Clock;
type Sink = BufWriter<Box<dyn Write>>;

/// The client's context: the buffers and result of the RPC that completed last.
#[derive(Default)]
struct Ctx {
    done: Option<(MsgBuf, MsgBuf, Result<usize, RpcError>)>,
}

fn cont<T: Transport>(rpc: &mut Rpc<'static, Capture<T, Sink>, Clk, Ctx>, c: Completion) {
    rpc.ctx_mut().done = Some((c.req, c.resp, c.result));
}

/// Longest wait for a handshake or one RPC.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(a: CaptureArgs) -> anyhow::Result<()> {
    if a.count == 0 || a.count > 100_000 {
        bail!("--count must be 1..=100000, not {}", a.count);
    }
    let max = config::MAX_MSG_SIZE;
    if a.size > max || a.resp_size > max {
        bail!("message sizes are limited to {max} bytes");
    }
    if a.transport != TransportKind::Udp && (a.port.is_some() || a.connect.is_some() || a.bind.is_some()) {
        bail!("--port, --connect and --bind apply to --transport udp");
    }
    let out = Output { to_stdout: a.pcap.as_os_str() == "-", path: a.pcap.clone(), name: a.pcap.display().to_string() };
    let o = match a.transport {
        TransportKind::Udp => run_udp(&a, &out)?,
        TransportKind::Sim => run_sim(&a, &out)?,
        TransportKind::Afxdp => run_afxdp(&a, &out)?,
        TransportKind::Mlx5 => bail!(
            "erpc capture runs over udp, sim or afxdp: to see mlx5 traffic, capture on the peer or mirror the switch \
             port"
        ),
    };
    print_summary(&a, &o, &out.name, out.to_stdout);
    Ok(())
}

/// Where the pcap stream goes: opened once the transports are bound, so that a bind error leaves
/// no empty file behind.
struct Output {
    to_stdout: bool,
    path: PathBuf,
    /// The path as given, for messages (`-` for standard output).
    name: String,
}

impl Output {
    fn open(&self) -> anyhow::Result<Sink> {
        let w: Box<dyn Write> = if self.to_stdout {
            if io::stdout().is_terminal() {
                bail!("--pcap - writes a binary pcap stream: redirect standard output to a file or a pipe");
            }
            Box::new(io::stdout().lock())
        } else {
            let f = std::fs::File::create(&self.path).with_context(|| format!("cannot create {}", self.name))?;
            Box::new(f)
        };
        Ok(BufWriter::new(w))
    }
}

fn udp(bind: SocketAddrV4) -> anyhow::Result<UdpTransport> {
    Ok(UdpTransport::bind(UdpConfig { bind, ..Default::default() })?)
}

fn rpc_config(mtu: usize) -> RpcConfig {
    RpcConfig { seed: RpcConfig::random_seed(), mtu, ..RpcConfig::default() }
}

/// Opens the output and builds the client endpoint on the capturing transport `t`.
fn client_endpoint<T: Transport>(
    t: T,
    out: &Output,
    mem: RpcMemory<'static>,
    cfg: RpcConfig,
) -> anyhow::Result<Rpc<'static, Capture<T, Sink>, Clk, Ctx>> {
    let t = Capture::new(t, out.open()?).with_context(|| format!("writing {}", out.name))?;
    Rpc::new(t, clock(), Ctx::default(), mem, cfg).context("building the client endpoint")
}

/// The other end of the capture's session, when it runs in this process (on this thread).
trait Peer {
    /// One event-loop iteration.
    fn poll(&mut self);
    /// The server session number of the client's session (the server has one session).
    fn session(&self) -> Option<u16>;
}

/// A server elsewhere (`--connect`).
impl Peer for () {
    fn poll(&mut self) {}
    fn session(&self) -> Option<u16> {
        None
    }
}

impl<U: Transport> Peer for Rpc<'static, U, Clk, usize> {
    fn poll(&mut self) {
        self.run_event_loop_once();
    }
    fn session(&self) -> Option<u16> {
        (0..self.max_sessions() as u16).find(|&i| {
            self.session(SessionId(i))
                .is_some_and(|s| s.role() == session::Role::Server && s.state() != SessionState::Free)
        })
    }
}

fn run_udp(a: &CaptureArgs, out: &Output) -> anyhow::Result<Outcome> {
    const MTU: usize = 1514;
    let bytes = region_bytes(a.size, a.resp_size, 1, MTU - wire::PKT_HDR_LEN);
    let cfg = rpc_config(MTU);
    if let Some(server) = a.connect {
        let bind = match a.bind {
            Some(b) => b,
            None if server.ip().is_loopback() => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            None => bail!("--connect to another machine needs --bind <this machine's IP>:0"),
        };
        let mut cli = client_endpoint(udp(bind)?, out, memory(bytes), cfg)?;
        let remote = EndpointAddr { mac: [0; 6], ipv4: server.ip().octets(), udp_port: server.port() };
        return exchange(&mut cli, &mut (), remote, a, &out.name);
    }
    let ip = a.bind.map_or(Ipv4Addr::LOCALHOST, |b| *b.ip());
    let srv_addr = SocketAddrV4::new(ip, a.port.unwrap_or(31850));
    let srv_t = UdpTransport::bind(UdpConfig { bind: srv_addr, ..Default::default() }).map_err(|e| match &e {
        UdpError::Bind { error, .. } if error.kind() == io::ErrorKind::AddrInUse => anyhow!("{e} with --port"),
        _ => e.into(),
    })?;
    let mut srv = server_endpoint(srv_t, a.resp_size, memory(bytes), cfg)?;
    let mut cli = client_endpoint(udp(a.bind.unwrap_or(SocketAddrV4::new(ip, 0)))?, out, memory(bytes), cfg)?;
    let remote = srv.local_addr();
    exchange(&mut cli, &mut srv, remote, a, &out.name)
}

fn run_sim(a: &CaptureArgs, out: &Output) -> anyhow::Result<Outcome> {
    type Nic = SimNic<'static, 'static, Clk>;
    let clk = clock();
    let fab: &'static Fabric<'static, Clk> = leak(Fabric::new(clk, 1));
    let pa = fab.attach(RxBuf::storage(512).leak());
    let pb = fab.attach(RxBuf::storage(512).leak());
    let cfg = rpc_config(config::DEFAULT_MTU);
    let bytes = region_bytes(a.size, a.resp_size, 1, config::DEFAULT_MTU - wire::PKT_HDR_LEN);
    let mut srv: Rpc<'static, Nic, Clk, usize> = server_endpoint(fab.nic(pb, 0), a.resp_size, memory(bytes), cfg)?;
    let mut cli = client_endpoint(fab.nic(pa, 0), out, memory(bytes), cfg)?;
    let remote = srv.local_addr();
    exchange(&mut cli, &mut srv, remote, a, &out.name)
}

/// Both ends on AF_XDP sockets, on a veth pair between two network namespaces created for the
/// run (root needed) and deleted after it. One thread opens the server's socket in one namespace,
/// the client's in the other, then drives both (a socket stays in the namespace it was made in).
fn run_afxdp(a: &CaptureArgs, out: &Output) -> anyhow::Result<Outcome> {
    use crate::netns::{self, VethPair};
    const MTU: usize = 1514;
    let bytes = region_bytes(a.size, a.resp_size, 1, MTU - wire::PKT_HDR_LEN);
    let pair = VethPair::create()?;
    let (ea, eb) = (&pair.a, &pair.b);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            netns::enter(&eb.netns)?;
            let tb = crate::bench_afxdp::open(&eb.interface, None, 31850, bytes)?;
            netns::enter(&ea.netns)?;
            let ta = crate::bench_afxdp::open(&ea.interface, None, 31851, bytes)?;
            // SAFETY: each region lives in its transport, which its endpoint owns from here on.
            let (mb, ma) = unsafe { (memory_in(tb.dataplane_region()), memory_in(ta.dataplane_region())) };
            let mut srv = server_endpoint(tb, a.resp_size, mb, rpc_config(MTU))?;
            let mut cli = client_endpoint(ta, out, ma, rpc_config(MTU))?;
            let remote = srv.local_addr();
            exchange(&mut cli, &mut srv, remote, a, &out.name)
        })
        .join()
        .map_err(|_| anyhow!("the capture thread panicked"))?
    })
}

/// Runs `cli`'s event loop, and the peer's, until `done` or the step timeout.
fn spin<T: Transport>(
    cli: &mut Rpc<'static, Capture<T, Sink>, Clk, Ctx>,
    peer: &mut impl Peer,
    mut done: impl FnMut(&mut Rpc<'static, Capture<T, Sink>, Clk, Ctx>) -> bool,
) -> bool {
    let t0 = Instant::now();
    while !done(cli) {
        if t0.elapsed() > STEP_TIMEOUT {
            return false;
        }
        cli.run_event_loop_once();
        peer.poll();
    }
    true
}

/// Connects, makes `a.count` RPCs one at a time, disconnects, and finishes the capture (also
/// after a failure: what was captured until then helps to see why).
fn exchange<T: Transport>(
    cli: &mut Rpc<'static, Capture<T, Sink>, Clk, Ctx>,
    peer: &mut impl Peer,
    server: EndpointAddr,
    a: &CaptureArgs,
    name: &str,
) -> anyhow::Result<Outcome> {
    let r = rpcs(cli, peer, server, a);
    let written = cli.transport_mut().finish().with_context(|| format!("writing {name}"));
    let stats = cli.transport().stats();
    match (r, written) {
        (Ok(o), Ok(_)) => Ok(Outcome { stats, ..o }),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(_)) if stats.packets() > 0 => {
            Err(e.context(format!("the capture to {name} stopped after {} packets (they are in it)", stats.packets())))
        }
        (Err(e), _) => Err(e),
    }
}

fn rpcs<T: Transport>(
    cli: &mut Rpc<'static, Capture<T, Sink>, Clk, Ctx>,
    peer: &mut impl Peer,
    server: EndpointAddr,
    a: &CaptureArgs,
) -> anyhow::Result<Outcome> {
    let s = cli.create_session(server).with_context(|| format!("connecting to {server}"))?;
    let secs = STEP_TIMEOUT.as_secs();
    if !spin(cli, peer, |c| c.is_connected(s)) {
        bail!(
            "no eRPC server answered at {server} within {secs} s: is it running, and are the address and port right?"
        );
    }
    let server_session = peer.session();
    let mut req = cli.alloc_msg_buffer(a.size).map_err(crate::alloc_error).context("allocating the request buffer")?;
    let mut resp =
        cli.alloc_msg_buffer(a.resp_size).map_err(crate::alloc_error).context("allocating the response buffer")?;
    for i in 0..a.count {
        // A recognisable payload: the RPC's number, then a byte counter.
        for (k, b) in req.data_mut().iter_mut().enumerate() {
            *b = (k as u8).wrapping_add(i as u8);
        }
        cli.enqueue_request(s, REQ_TYPE, req, resp, cont::<T>, i).map_err(|e| match e.kind {
            EnqueueErrorKind::TooLarge => anyhow!(
                "a {} B request and a {} B response need more than {} packets together at this MTU: use smaller \
                 sizes",
                a.size,
                a.resp_size,
                wire::MAX_PKT_NUM
            ),
            k => anyhow!(k).context(format!("sending RPC {i}")),
        })?;
        if !spin(cli, peer, |c| c.ctx().done.is_some()) {
            bail!("RPC {i} of {} got no response within {secs} s", a.count);
        }
        let (q, r, result) = cli.ctx_mut().done.take().expect("checked by spin");
        match result {
            Ok(_) => {}
            Err(RpcError::ResponseTooLarge { size, .. }) => {
                bail!("the server answered {size} B, more than --resp-size {}: raise --resp-size", a.resp_size)
            }
            Err(e) => return Err(e).with_context(|| format!("RPC {i} failed")),
        }
        (req, resp) = (q, r);
    }
    let client_session = s.0;
    cli.destroy_session(s).context("disconnecting")?;
    if !spin(cli, peer, |c| c.session_state(s) == SessionState::Free) {
        bail!("the server did not answer the disconnect within {secs} s");
    }
    Ok(Outcome {
        stats: CaptureStats::default(),
        client: cli.local_addr(),
        server,
        client_session,
        server_session,
        retransmissions: cli.stats().retransmissions,
    })
}

fn print_summary(a: &CaptureArgs, o: &Outcome, name: &str, to_stderr: bool) {
    let transport = a.transport.name();
    let addr = |e: &EndpointAddr| {
        let [x, y, z, w] = e.ipv4;
        format!("{x}.{y}.{z}.{w}:{}", e.udp_port)
    };
    let line = if a.json {
        serde_json::json!({
            "file": name, "transport": transport,
            "packets": o.stats.packets(), "sent": o.stats.sent, "received": o.stats.received,
            "truncated": o.stats.truncated,
            "rpcs": a.count, "req_type": REQ_TYPE, "req_size": a.size, "resp_size": a.resp_size,
            "client": addr(&o.client), "server": addr(&o.server),
            "client_port": o.client.udp_port, "server_port": o.server.udp_port,
            "client_session": o.client_session, "server_session": o.server_session,
            "retransmissions": o.retransmissions,
        })
        .to_string()
    } else {
        let srv = o.server_session.map_or(String::new(), |s| format!(", server session {s}"));
        let rt = if o.retransmissions > 0 { format!(", {} retransmissions", o.retransmissions) } else { String::new() };
        format!(
            "erpc capture: {} packets ({} sent, {} received) written to {name}: {} RPC{} of {} B requests and {} B \
             responses over {transport} {} -> {}, client session {}{srv}{rt}",
            o.stats.packets(),
            o.stats.sent,
            o.stats.received,
            a.count,
            if a.count == 1 { "" } else { "s" },
            a.size,
            a.resp_size,
            addr(&o.client),
            addr(&o.server),
            o.client_session,
        )
    };
    if to_stderr {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erpc_dataplane::transport::Segment;
    use erpc_dataplane::wire::{ErpcHdr, PktType, HEADROOM, PKT_HDR_LEN};
    use pcap_file::pcap::PcapReader;
    use zerocopy::IntoBytes;

    type TestNic = SimNic<'static, 'static, &'static SimClock>;

    fn fabric() -> (TestNic, TestNic) {
        let clk: &'static SimClock = leak(SimClock::new());
        let fab: &'static Fabric<'static, &'static SimClock> = leak(Fabric::new(clk, 7));
        let pa = fab.attach(RxBuf::storage(8).leak());
        let pb = fab.attach(RxBuf::storage(8).leak());
        (fab.nic(pa, 0), fab.nic(pb, 0))
    }

    /// A frame from `src` to `dst` with `data` bytes of 0..: headroom, header, data.
    fn frame(src: &EndpointAddr, dst: &EndpointAddr, pkt_type: PktType, data: usize) -> Vec<u8> {
        let mut f = vec![0u8; PKT_HDR_LEN + data];
        let mut hr = [0u8; HEADROOM];
        RoutingInfo::new(src, dst).write(&mut hr, 14 + data);
        f[..HEADROOM].copy_from_slice(&hr);
        f[HEADROOM..PKT_HDR_LEN].copy_from_slice(ErpcHdr::new(1, data as u32, 3, pkt_type, 0, 8).as_bytes());
        for (k, b) in f[PKT_HDR_LEN..].iter_mut().enumerate() {
            *b = k as u8;
        }
        f
    }

    fn seg(b: &[u8]) -> Segment {
        Segment { vaddr: b.as_ptr(), iova: 0, len: b.len() as u32 }
    }

    #[test]
    fn writes_every_frame_sent_and_received_byte_for_byte() {
        let (a, mut b) = fabric();
        let (aa, ba) = (a.local_addr(), b.local_addr());
        let mut a = Capture::new(a, Vec::new()).unwrap();
        // A two-segment packet (header, then data elsewhere), as the dataplane sends packets 1..n.
        let req = frame(&aa, &ba, PktType::Req, 100);
        let (hdr, data) = req.split_at(PKT_HDR_LEN);
        let pkt = TxPacket { segs: [seg(hdr), seg(data)] };
        assert_eq!(a.tx_burst(&[pkt]), 1);
        let mut rx = [RxPacket::EMPTY; 4];
        let n = b.rx_burst(&mut rx);
        assert_eq!(n, 1);
        b.rx_release(&rx[..n]);
        let resp = frame(&ba, &aa, PktType::Resp, 20);
        assert_eq!(b.tx_burst(&[TxPacket { segs: [seg(&resp), Segment::EMPTY] }]), 1);
        let n = a.rx_burst(&mut rx);
        assert_eq!(n, 1);
        a.rx_release(&rx[..n]);
        assert_eq!(a.stats(), CaptureStats { sent: 1, received: 1, truncated: 0 });

        let bytes = a.finish().unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        assert_eq!(r.header().ts_resolution, TsResolution::NanoSecond);
        let p1 = r.next_packet().unwrap().unwrap().into_owned();
        assert_eq!(&p1.data[..], &req[..]);
        assert_eq!(p1.orig_len as usize, req.len());
        let p2 = r.next_packet().unwrap().unwrap().into_owned();
        assert_eq!(&p2.data[..], &resp[..]);
        assert!(p2.timestamp >= p1.timestamp && p1.timestamp > Duration::from_secs(1_600_000_000));
        assert!(r.next_packet().is_none());
        // Finished: frames still pass, unrecorded.
        assert_eq!(a.tx_burst(&[pkt]), 1);
        assert_eq!(a.stats().sent, 1);
        assert!(a.finish().is_err());
    }

    /// A stream with room for `.0` more bytes, then "no space left on device".
    #[derive(Debug)]
    struct Limited(usize);

    impl Write for Limited {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 < b.len() {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.0 -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_stops_the_capture_not_the_endpoint() {
        let (a, b) = fabric();
        let e = Capture::new(fabric().0, Limited(0)).err().expect("no room for the file header").to_string();
        assert!(e.contains("No space left on device"), "{e}");
        // The 24-byte file header fits; the first packet does not.
        let (aa, ba) = (a.local_addr(), b.local_addr());
        let mut a = Capture::new(a, Limited(24)).unwrap();
        let f = frame(&aa, &ba, PktType::Req, 10);
        let pkt = TxPacket { segs: [seg(&f), Segment::EMPTY] };
        assert_eq!(a.tx_burst(&[pkt, pkt]), 2, "the inner transport still sends");
        assert_eq!(a.stats().sent, 0);
        let e = a.finish().expect_err("the write error").to_string();
        assert!(e.contains("No space left on device"), "{e}");
    }
}
