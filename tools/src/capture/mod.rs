//! `erpc capture`: the frames an endpoint sends and receives, written to a pcap file by the
//! [`Capture`] transport wrapper (in [`pcap`], usable with any transport and endpoint).
//!
//! The command runs a client and a server in this process (or a client against `erpc bench
//! --server`), capturing on the client: a connect handshake, `--count` RPCs whose requests and
//! responses span several packets (so credit returns and requests-for-response appear), and the
//! disconnect handshake.
//!
//! With `--transport afxdp` the frames are the real ones of an AF_XDP socket (the veth pair's
//! MAC addresses included), both ends running on a veth pair between two network namespaces
//! made for the run.

pub mod pcap;

pub use crate::endpoints::REQ_TYPE;
pub use pcap::{Capture, CaptureStats, SNAPLEN};

use crate::endpoints::{
    afxdp, afxdp_memory, client_bind, clock, connect, memory, region_bytes, rpc_config, server, sim_pair, udp, Clk,
    ConnectState,
};
use crate::TransportKind;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use erpc_dataplane::transport::{EndpointAddr, Transport};
use erpc_dataplane::*;
use erpc_driver::udp::UdpError;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

type Sink = BufWriter<Box<dyn Write>>;

/// The client's context: the buffers and result of the RPC that completed last.
#[derive(Default)]
struct Ctx {
    done: Option<(MsgBuf, MsgBuf, Result<usize, RpcError>)>,
    connect_failure: Option<SmError>,
}

impl ConnectState for Ctx {
    fn connect_failure(&mut self) -> &mut Option<SmError> {
        &mut self.connect_failure
    }
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

/// Opens the output and builds the client endpoint on the capturing transport `t`.
fn client_endpoint<T: Transport>(
    t: T,
    out: &Output,
    mem: OwnedMemory,
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
    let cfg = rpc_config(MTU, true);
    if let Some(server) = a.connect {
        let mut cli = client_endpoint(udp(client_bind(server, a.bind)?)?, out, memory(bytes), cfg)?;
        return exchange(&mut cli, &mut (), EndpointAddr::from(server), a, &out.name);
    }
    let ip = a.bind.map_or(Ipv4Addr::LOCALHOST, |b| *b.ip());
    let srv_t =
        udp(SocketAddrV4::new(ip, a.port.unwrap_or(31850))).map_err(|e| match e.downcast_ref::<UdpError>() {
            Some(UdpError::Bind { error, .. }) if error.kind() == io::ErrorKind::AddrInUse => {
                anyhow!("{e} with --port")
            }
            _ => e,
        })?;
    let mut srv = server(srv_t, a.resp_size, memory(bytes), cfg)?;
    let mut cli = client_endpoint(udp(a.bind.unwrap_or(SocketAddrV4::new(ip, 0)))?, out, memory(bytes), cfg)?;
    let remote = srv.local_addr();
    exchange(&mut cli, &mut srv, remote, a, &out.name)
}

fn run_sim(a: &CaptureArgs, out: &Output) -> anyhow::Result<Outcome> {
    let (pa, pb) = sim_pair(clock(), 1, 512, 0);
    let cfg = rpc_config(config::DEFAULT_MTU, true);
    let bytes = region_bytes(a.size, a.resp_size, 1, config::DEFAULT_MTU - wire::PKT_HDR_LEN);
    let mut srv = server(pb, a.resp_size, memory(bytes), cfg)?;
    let mut cli = client_endpoint(pa, out, memory(bytes), cfg)?;
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
            let tb = afxdp(&eb.interface, None, 31850, bytes)?;
            netns::enter(&ea.netns)?;
            let ta = afxdp(&ea.interface, None, 31851, bytes)?;
            let (mb, ma) = (afxdp_memory(&tb), afxdp_memory(&ta));
            let mut srv = server(tb, a.resp_size, mb, rpc_config(MTU, true))?;
            let mut cli = client_endpoint(ta, out, ma, rpc_config(MTU, true))?;
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
    let what = format!("{} {}", a.transport.name(), SocketAddrV4::from(server));
    let s = connect(cli, &mut || peer.poll(), server, &what)?;
    let secs = STEP_TIMEOUT.as_secs();
    let server_session = peer.session();
    let mut req = cli.alloc_msg_buffer(a.size).context("allocating the request buffer")?;
    let mut resp = cli.alloc_msg_buffer(a.resp_size).context("allocating the response buffer")?;
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
    let addr = |e: &EndpointAddr| SocketAddrV4::from(*e).to_string();
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
