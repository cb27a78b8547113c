//! `erpc kv`: the replicated key-value store of `erpc-kv` (tikv's raft-rs over eRPC).
//!
//! * `serve`: one replica per process, over kernel UDP (the default), AF_XDP or a ConnectX NIC.
//! * `put`, `get`, `del`: one operation against a running cluster.
//! * `bench`: a PUT/GET load against a running cluster, with the leader's commit latency and an
//!   eRPC round trip of the same sizes to the leader measured in the same run.
//! * `local`: three replicas and the benchmark client in this process, on one thread (their
//!   event loops polled in turn), over UDP on loopback, AF_XDP on a bridged segment of network
//!   namespaces, or the in-memory fabric.

use crate::bench::{progress_bar, XdpMode};
use crate::endpoints::{afxdp_on, clock, mac_text, mlx5, parse_mac, refusal, udp, IdleWait};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use erpc_dataplane::transport::{EndpointAddr, Transport};
use erpc_dataplane::DmaRegion;
use erpc_dataplane::{RpcConfig, SmError};
use erpc_driver::afxdp::{AfXdpTransport, XdpAttach};
use erpc_driver::mlx5::Mlx5Nic;
use erpc_driver::udp::UdpTransport;
use erpc_hugepages::PageSize;
use erpc_kv::client::{self, ClientRpc};
use erpc_kv::cluster::{self, Clk, Cluster};
use erpc_kv::replica::ReplicaRpc;
use erpc_kv::{ClientConfig, Durability, Op, Outcome, ReplicaConfig};
use hdrhistogram::Histogram;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    pub cmd: KvCmd,
}

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Run one replica (until killed).
    Serve(ServeArgs),
    /// Store a value.
    Put(OpArgs),
    /// Print a key's value.
    Get(OpArgs),
    /// Delete a key.
    Del(OpArgs),
    /// Measure PUT/GET latency and rate against a running cluster.
    Bench(BenchArgs),
    /// Three replicas and a benchmark client in this process, on one thread.
    Local(LocalArgs),
    /// The same load against an etcd cluster (the peer system), same keys in the output.
    EtcdBench(crate::kv_etcd::EtcdBenchArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityKind {
    /// The log in memory (as in the article).
    None,
    /// The log written with raft-engine and synced once per batch, recovered at start.
    Fsync,
}

/// Replica settings shared by `serve` and `local`.
#[derive(Args, Debug, Clone)]
pub struct RaftArgs {
    /// Where the log lives.
    #[arg(long, value_enum, default_value = "none")]
    durability: DurabilityKind,
    /// The log directory (`--durability fsync`; `local` makes a temporary one if not given).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One Raft tick, µs.
    #[arg(long, default_value_t = 1000)]
    tick_us: u64,
    /// Ticks without a leader before an election.
    #[arg(long, default_value_t = 100)]
    election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    #[arg(long, default_value_t = 10)]
    heartbeat_ticks: usize,
    /// Snapshot and compact the log every this many entries (0: never).
    #[arg(long, default_value_t = 100_000)]
    snapshot_every: u64,
}

/// Packet I/O of `serve`, `put`, `get`, `del` and `bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetKind {
    /// Kernel UDP sockets.
    Udp,
    /// An AF_XDP socket on queue 0 of --interface, with an XDP program (root; one endpoint per
    /// interface).
    Afxdp,
    /// A ConnectX NIC bound to vfio-pci (--pci), with every replica's MAC given (--peer-macs).
    Mlx5,
}

/// How this process reaches the replicas.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    #[arg(long, value_enum, default_value = "udp")]
    transport: NetKind,
    /// The interface for --transport afxdp (it must hold this end's IPv4 address).
    #[arg(long)]
    interface: Option<String>,
    /// The ConnectX PCI function for --transport mlx5 (bound with `erpc nic bind BDF`).
    #[arg(long)]
    pci: Option<String>,
    /// Every replica's MAC, in --peers order (--transport mlx5, which resolves no addresses).
    #[arg(long, value_delimiter = ',')]
    peer_macs: Vec<String>,
    /// AF_XDP: how the XDP program is attached, as for `erpc bench`. auto: native, but generic on
    /// a veth with one queue; native or generic to compare the two.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    xdp_mode: XdpMode,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// This replica's number: 1 for the first address of --peers, 2 for the second, ...
    #[arg(long)]
    id: u64,
    /// Every replica's address (this one's included), in the same order on every replica.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddrV4>,
    #[command(flatten)]
    raft: RaftArgs,
    #[command(flatten)]
    net: NetArgs,
    /// Once 16 iterations in a row received nothing, block until a packet comes (or a timer
    /// is due), at most this long at a time (0: busy-poll always, for a core of its own). On a
    /// machine with fewer free cores than busy endpoints this lets the others run instead of
    /// waiting for the scheduler's time slice; the kernel transports wake the replica when a
    /// packet arrives, the VFIO drivers cannot and sleep this long. At most an eighth of Raft's
    /// tick (`--tick-us`), whose clock is read every 8 polls. Also `--idle-sleep-us`.
    #[arg(long, alias = "idle-sleep-us", default_value_t = 0)]
    idle_wait_us: u64,
}

#[derive(Args, Debug)]
pub struct OpArgs {
    /// Every replica's address.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddrV4>,
    /// The client's own address (default: over UDP to replicas on loopback, 127.0.0.1, any
    /// port; over AF_XDP the interface's address; port 0 over AF_XDP and mlx5 is 31851;
    /// required otherwise).
    #[arg(long)]
    bind: Option<SocketAddrV4>,
    #[command(flatten)]
    net: NetArgs,
    /// How long to wait for a replica to accept the client's session, seconds.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    key: String,
    /// The value (put only).
    value: Option<String>,
}

/// The load of `bench` and `local`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Logical clients, each with one operation outstanding.
    #[arg(long, default_value_t = 1)]
    pub(crate) clients: usize,
    /// Percentage of GETs (the rest are PUTs).
    #[arg(long, default_value_t = 0)]
    pub(crate) get_pct: u64,
    #[arg(long, default_value_t = 16)]
    pub(crate) key_size: usize,
    #[arg(long, default_value_t = 64)]
    pub(crate) value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    pub(crate) keys: u64,
    /// Measurement time, seconds (after 0.5 s of warm-up).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) duration: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Every replica's address.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddrV4>,
    /// The client's own address (default: over UDP to replicas on loopback, 127.0.0.1, any
    /// port; over AF_XDP the interface's address; port 0 over AF_XDP and mlx5 is 31851;
    /// required otherwise).
    #[arg(long)]
    bind: Option<SocketAddrV4>,
    #[command(flatten)]
    net: NetArgs,
    /// How long to wait for a replica to accept the client's session, seconds.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Once 16 polls in a row received nothing, block until a packet comes, at most this long
    /// at a time (0: busy-poll always), as `erpc kv serve --idle-wait-us`: for a client that
    /// shares the machine's cores with replicas. A wait also ends when an operation's retry or
    /// a reconnection is due.
    #[arg(long, default_value_t = 0)]
    idle_wait_us: u64,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LocalTransport {
    /// Kernel UDP sockets on 127.0.0.1.
    Udp,
    /// AF_XDP sockets (root), one per endpoint, each in a network namespace of its own on one
    /// bridged segment (created here and deleted at the end).
    Afxdp,
    /// The in-memory NIC and fabric.
    Sim,
}

#[derive(Args, Debug)]
pub struct LocalArgs {
    #[arg(long, value_enum, default_value = "udp")]
    transport: LocalTransport,
    /// --transport afxdp: how the XDP programs are attached, as for `erpc bench`. auto: generic
    /// on the segment's veths (one queue each); native to compare.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    xdp_mode: XdpMode,
    #[command(flatten)]
    raft: RaftArgs,
    #[command(flatten)]
    load: LoadArgs,
}

pub fn run(a: KvArgs) -> anyhow::Result<()> {
    match a.cmd {
        KvCmd::Serve(a) => serve(a),
        KvCmd::Put(a) => one_op(a, "put"),
        KvCmd::Get(a) => one_op(a, "get"),
        KvCmd::Del(a) => one_op(a, "del"),
        KvCmd::Bench(a) => bench(a),
        KvCmd::Local(a) => local(a),
        KvCmd::EtcdBench(a) => crate::kv_etcd::run(a),
    }
}

fn peers_text(p: &[SocketAddrV4]) -> String {
    p.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

/// The endpoints' clock, shared by the endpoints of this thread.
fn shared_clock() -> Clk {
    Rc::new(clock())
}

fn check_peers(p: &[SocketAddrV4]) -> anyhow::Result<()> {
    if p.is_empty() || p.len() > 7 {
        bail!("--peers takes 1 to 7 replica addresses, not {}", p.len());
    }
    for (i, a) in p.iter().enumerate() {
        if !EndpointAddr::from(*a).is_unicast() {
            bail!(
                "--peers: {a} is not an address a replica can be reached at (a unicast IPv4 address and a \
                 port other than 0)"
            );
        }
        if p[..i].contains(a) {
            bail!("--peers lists {a} twice");
        }
    }
    Ok(())
}

/// eRPC settings of the store over UDP: 1514-byte frames, sessions reset after 100 ms of
/// silence (a client moves to another replica that soon), keepalives every 50 ms.
pub fn udp_rpc_config() -> RpcConfig {
    RpcConfig {
        mtu: 1514,
        session_timeout_ns: 100_000_000,
        keepalive_ns: 50_000_000,
        server_idle_timeout_ns: 2_000_000_000,
        sm_retry_ns: 20_000_000,
        sm_max_attempts: 10,
        seed: RpcConfig::random_seed(),
        ..RpcConfig::default()
    }
}

fn replica_config(
    id: u64,
    peers: Vec<EndpointAddr>,
    r: &RaftArgs,
    dir: Option<PathBuf>,
) -> anyhow::Result<ReplicaConfig> {
    let mut c = ReplicaConfig::new(id, peers);
    if r.tick_us == 0 || r.tick_us > 1_000_000 {
        bail!("--tick-us must be 1..=1000000");
    }
    c.tick_ns = r.tick_us * 1000;
    // Writes and reads the store cannot complete are answered try-again after 1 s, whatever the
    // tick: well within the endpoints' request_timeout_ns (10 s).
    c.request_timeout_ticks = (1_000_000 / r.tick_us).max(1);
    c.election_ticks = r.election_ticks;
    c.heartbeat_ticks = r.heartbeat_ticks;
    c.snapshot_every = r.snapshot_every;
    c.log_keep = (r.snapshot_every / 10).max(1000);
    c.durability = match (r.durability, dir) {
        (DurabilityKind::None, None) => Durability::None,
        (DurabilityKind::None, Some(_)) => bail!("--dir applies to --durability fsync"),
        (DurabilityKind::Fsync, Some(d)) => Durability::Fsync { dir: d },
        (DurabilityKind::Fsync, None) => bail!("--durability fsync needs --dir <log directory>"),
    };
    Ok(c)
}

/// A transport `open` made, for the generic code to run on (one per process, moved into its
/// endpoint at once: the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Opened {
    Udp(UdpTransport),
    Afxdp(AfXdpTransport),
    Mlx5(Mlx5Nic, DmaRegion),
}

/// Runs `$body` with `$t` the transport and `$region` (of `$bytes`) the endpoint's msgbuf
/// memory in it: the heap for UDP, the UMEM for AF_XDP, mapped hugepages for mlx5.
macro_rules! on_transport {
    ($opened:expr, $bytes:expr, |$t:ident, $region:ident| $body:expr) => {
        match $opened {
            Opened::Udp($t) => {
                let $region = cluster::heap_region($bytes);
                $body
            }
            Opened::Afxdp($t) => {
                // SAFETY: the region is in the transport's UMEM, and the endpoint built on it
                // owns the transport.
                let $region = unsafe { $t.dataplane_region() };
                $body
            }
            Opened::Mlx5($t, $region) => $body,
        }
    };
}

impl NetArgs {
    /// Checks the options against the transport, and gives every replica's eRPC address.
    fn peers(&self, peers: &[SocketAddrV4]) -> anyhow::Result<Vec<EndpointAddr>> {
        check_peers(peers)?;
        let n = |o: &str| {
            let t = if matches!(o, "--interface" | "--xdp-mode") { "afxdp" } else { "mlx5" };
            format!("{o} applies to --transport {t}")
        };
        if self.transport != NetKind::Afxdp && self.interface.is_some() {
            bail!(n("--interface"));
        }
        if self.transport != NetKind::Mlx5 && (self.pci.is_some() || !self.peer_macs.is_empty()) {
            bail!(n(if self.pci.is_some() { "--pci" } else { "--peer-macs" }));
        }
        if self.transport != NetKind::Afxdp && self.xdp_mode != XdpMode::Auto {
            bail!(n("--xdp-mode"));
        }
        let mut addrs: Vec<EndpointAddr> = peers.iter().map(|p| EndpointAddr::from(*p)).collect();
        match self.transport {
            NetKind::Udp => {}
            NetKind::Afxdp => {
                self.interface
                    .as_ref()
                    .context("--transport afxdp needs --interface (the one holding this address)")?;
            }
            NetKind::Mlx5 => {
                self.pci
                    .as_ref()
                    .context("--transport mlx5 needs --pci BDF (the ConnectX function, bound to vfio-pci)")?;
                if self.peer_macs.len() != peers.len() {
                    bail!(
                        "--transport mlx5 needs --peer-macs with one MAC per --peers address ({} given, {} needed)",
                        self.peer_macs.len(),
                        peers.len()
                    );
                }
                for (k, (a, m)) in addrs.iter_mut().zip(&self.peer_macs).enumerate() {
                    a.mac = parse_mac(m).with_context(|| format!("--peer-macs entry {}", k + 1))?;
                }
            }
        }
        Ok(addrs)
    }

    /// Opens the transport at `me`, with room for a `bytes` msgbuf region.
    fn open(&self, me: SocketAddrV4, bytes: usize) -> anyhow::Result<Opened> {
        Ok(match self.transport {
            NetKind::Udp => Opened::Udp(udp(me)?),
            NetKind::Afxdp => {
                let ip = (!me.ip().is_unspecified()).then_some(*me.ip());
                let interface = self.interface.as_deref().expect("checked");
                Opened::Afxdp(kv_afxdp(interface, ip, me.port(), bytes, self.xdp_mode.attach())?)
            }
            NetKind::Mlx5 => {
                let (nic, region) = mlx5(self.pci.as_deref().expect("checked"), me, bytes)?;
                Opened::Mlx5(nic, region)
            }
        })
    }

    fn name(&self) -> String {
        crate::value_name(&self.transport)
    }
}

/// An AF_XDP transport for a replica or client: a UMEM of ordinary pages holding a `bytes`
/// msgbuf region (a replica's is larger than the hugepages a machine usually reserves).
fn kv_afxdp(
    interface: &str,
    ip: Option<Ipv4Addr>,
    port: u16,
    bytes: usize,
    attach: XdpAttach,
) -> anyhow::Result<AfXdpTransport> {
    afxdp_on(interface, ip, port, bytes, PageSize::Ordinary, attach)
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let peers = a.net.peers(&a.peers)?;
    if a.id == 0 || a.id as usize > a.peers.len() {
        bail!("--id must be 1..={} (one per --peers address), not {}", a.peers.len(), a.id);
    }
    let me = a.peers[a.id as usize - 1];
    let cfg = replica_config(a.id, peers, &a.raft, a.raft.dir.clone())?;
    let durability = cfg.durability.name();
    let starting = || format!("starting replica {} on {} {me}", a.id, a.net.name());
    let t = a.net.open(me, cluster::REPLICA_REGION).with_context(starting)?;
    let want = cfg.peers[a.id as usize - 1];
    on_transport!(t, cluster::REPLICA_REGION, |t, region| {
        let mine = t.local_addr().mac;
        if want.mac != [0; 6] && mine != want.mac {
            bail!(
                "--peer-macs entry {} is {}, but this NIC's MAC is {}: list the MACs in --peers order",
                a.id,
                mac_text(want.mac),
                mac_text(mine)
            );
        }
        let rpc =
            cluster::replica_endpoint_in(t, region, shared_clock(), udp_rpc_config(), cfg).with_context(starting)?;
        serve_on(rpc, &a, me, durability)
    })
}

/// Runs replica `a.id`'s event loop until it fails.
fn serve_on<T: Transport>(
    mut rpc: ReplicaRpc<T, Clk>,
    a: &ServeArgs,
    me: SocketAddrV4,
    durability: &str,
) -> anyhow::Result<()> {
    let rec = rpc.ctx().recovered.clone();
    eprintln!(
        "erpc kv: replica {} of {} serving on {} {me} (durability {durability}{}); Ctrl-C to stop",
        a.id,
        a.peers.len(),
        a.net.name(),
        if rec.last_index > 0 { format!(", recovered the log to entry {}", rec.last_index) } else { String::new() }
    );
    // Raft's clock (ticks, reconnections) is read every 8 polls: waits of at most an eighth of
    // a tick keep it on time.
    let mut idle = IdleWait::new(a.idle_wait_us.min((a.raft.tick_us / 8).max(1)));
    loop {
        erpc_kv::replica::poll(&mut rpc).with_context(|| format!("replica {} stopped", a.id))?;
        idle.after_poll(&mut rpc);
    }
}

/// The client's UDP port over AF_XDP and mlx5 when --bind does not give one (no kernel picks
/// it).
const BYPASS_CLIENT_PORT: u16 = 31851;

/// The client's own address: `bind` (port 0 over a kernel-bypass transport meaning
/// [`BYPASS_CLIENT_PORT`]), else (UDP) any port on loopback when every replica is on loopback,
/// (AF_XDP) the interface's address.
fn client_addr(net: &NetArgs, peers: &[SocketAddrV4], bind: Option<SocketAddrV4>) -> anyhow::Result<SocketAddrV4> {
    Ok(match (bind, net.transport) {
        (Some(b), NetKind::Mlx5) if b.ip().is_unspecified() => {
            bail!("--transport mlx5 needs --bind <this NIC's IP>:0, not {b}")
        }
        (Some(b), NetKind::Afxdp | NetKind::Mlx5) if b.port() == 0 => SocketAddrV4::new(*b.ip(), BYPASS_CLIENT_PORT),
        (Some(b), _) => b,
        (None, NetKind::Afxdp) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BYPASS_CLIENT_PORT),
        (None, NetKind::Udp) if peers.iter().all(|p| p.ip().is_loopback()) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        (None, NetKind::Mlx5) => bail!("--transport mlx5 needs --bind <this NIC's IP>:0"),
        (None, _) => bail!("replicas on other machines need --bind <this machine's IP>:0"),
    })
}

/// Runs `$body` with `$cli` a client endpoint (`$clients` logical clients, values up to
/// `$max_value` bytes) on the transport `$net` opens, connected to at least one replica.
macro_rules! with_client {
    ($net:expr, $peers:expr, $bind:expr, $connect_s:expr, $clients:expr, $max_value:expr, |$cli:ident| $body:expr) => {{
        let addrs = $net.peers($peers)?;
        let me = client_addr($net, $peers, $bind)?;
        let mut cc = ClientConfig::new(addrs, $clients);
        cc.max_value = $max_value;
        let bytes = cluster::client_region_bytes(&cc);
        let t = $net.open(me, bytes).context("starting the client")?;
        on_transport!(t, bytes, |t, region| {
            let mut $cli = cluster::client_endpoint_in(t, region, shared_clock(), udp_rpc_config(), cc)
                .context("starting the client")?;
            connect_client(&mut $cli, $peers, $connect_s)?;
            $body
        })
    }};
}

/// Polls `cli` until it is connected to at least one replica (`within_s` seconds at most; less
/// if every replica refuses, which says why).
fn connect_client<T: Transport>(
    cli: &mut ClientRpc<T, Clk>,
    peers: &[SocketAddrV4],
    within_s: f64,
) -> anyhow::Result<()> {
    if !(within_s > 0.0 && within_s <= 3600.0) {
        bail!("--connect-timeout must be between 0 and 3600 seconds");
    }
    let t0 = Instant::now();
    while cli.ctx().connected() == 0 {
        client::poll(cli);
        let k = cli.ctx();
        let all_refused = (0..peers.len()).all(|i| k.connect_error(i).is_some_and(|e| e != SmError::RemoteUnreachable));
        if all_refused || t0.elapsed() > Duration::from_secs_f64(within_s) {
            if let Some((i, e)) = k.refusal() {
                return Err(refusal(e, cli.config())).context(format!(
                    "connecting to replica {} at {}",
                    i + 1,
                    peers[i]
                ));
            }
            return Err(anyhow!("are they running (`erpc kv serve`), and are the addresses right?"))
                .context(format!("no replica answered at {} within {within_s} s", peers_text(peers)));
        }
    }
    Ok(())
}

fn one_op(a: OpArgs, what: &str) -> anyhow::Result<()> {
    if !(a.timeout > 0.0 && a.timeout <= 3600.0) {
        bail!("--timeout must be between 0 and 3600 seconds");
    }
    let key = a.key.into_bytes();
    if key.is_empty() || key.len() > erpc_kv::proto::MAX_KEY {
        bail!("a key has 1 to {} bytes", erpc_kv::proto::MAX_KEY);
    }
    let op = match (what, a.value) {
        ("put", Some(v)) if v.len() <= erpc_kv::proto::MAX_VALUE => Op::Put { key, value: v.into_bytes() },
        ("put", Some(_)) => bail!("a value has at most {} bytes", erpc_kv::proto::MAX_VALUE),
        ("put", None) => bail!("put needs a KEY and a VALUE"),
        (_, Some(_)) => bail!("{what} takes a KEY only"),
        ("get", None) => Op::Get { key },
        _ => Op::Del { key },
    };
    let d = with_client!(&a.net, &a.peers, a.bind, a.connect_timeout, 1, erpc_kv::proto::MAX_VALUE, |cli| run_op(
        &mut cli,
        op,
        (a.timeout * 1e9) as u64
    ));
    match d.outcome {
        Outcome::Ok => println!("OK"),
        Outcome::Value(v) => println!("{}", String::from_utf8_lossy(&v)),
        Outcome::NotFound => bail!("not found"),
        Outcome::Failed(e) => return Err(anyhow!(e)).context(format!("{what} on replicas {}", peers_text(&a.peers))),
    }
    Ok(())
}

/// Runs `op` to its end (`timeout_ns` at most).
fn run_op<T: Transport>(cli: &mut ClientRpc<T, Clk>, op: Op, timeout_ns: u64) -> erpc_kv::Done {
    cli.ctx_mut().cfg.op_timeout_ns = timeout_ns;
    client::submit(cli, 0, op);
    while cli.ctx().busy(0) {
        client::poll(cli);
    }
    let d = cli.ctx_mut().done.pop_front().expect("finished");
    // A peer that refused while another answered: the operation went through, but the peers
    // list is wrong (a failed operation's error says so itself).
    if !matches!(d.outcome, Outcome::Failed(_)) {
        let k = cli.ctx();
        for why in (0..k.cfg.peers.len()).filter_map(|i| k.not_a_replica(i)) {
            eprintln!("erpc: warning: {why}");
        }
    }
    d
}

/// What a benchmark measured.
pub(crate) struct KvReport {
    transport: String,
    setup: &'static str,
    clients: usize,
    get_pct: u64,
    key_size: usize,
    value_size: usize,
    secs: f64,
    ops: u64,
    failed: u64,
    all: Histogram<u64>,
    puts: Histogram<u64>,
    gets: Histogram<u64>,
    rtt: Histogram<u64>,
    /// The leader (index) and its commit latency: commits, p50, p99 (ns); not for peers.
    leader: Option<(usize, u64, u64, u64)>,
    durable: bool,
    redirects: u64,
    retries: u64,
    elections: u64,
    /// With `kv local` over AF_XDP, how the endpoints' XDP programs were attached ("native",
    /// "generic", or both joined by "+" if they differed); `None` otherwise.
    xdp_attach: Option<String>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn pct(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| us(h.value_at_quantile(q)))
}

impl KvReport {
    /// A report without leader statistics or a round-trip reference (a peer system's, or the
    /// base of ours).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn peer(
        transport: &str,
        setup: &'static str,
        l: &LoadArgs,
        durable: bool,
        secs: f64,
        ops: u64,
        failed: u64,
        [all, puts, gets]: [Histogram<u64>; 3],
    ) -> KvReport {
        KvReport {
            transport: transport.into(),
            setup,
            clients: l.clients,
            get_pct: l.get_pct,
            key_size: l.key_size,
            value_size: l.value_size,
            secs,
            ops,
            failed,
            all,
            puts,
            gets,
            rtt: hist(),
            leader: None,
            durable,
            redirects: 0,
            retries: 0,
            elections: 0,
            xdp_attach: None,
        }
    }

    fn json(&self) -> serde_json::Value {
        let p50 = pct(&self.all, 0.5);
        let rtt50 = pct(&self.rtt, 0.5);
        let lp50 = self.leader.map(|l| us(l.2));
        json!({
            "transport": self.transport, "mode": "kv", "setup": self.setup,
            "durability": if self.durable { "fsync" } else { "none" },
            "clients": self.clients, "get_pct": self.get_pct, "key_size": self.key_size, "value_size": self.value_size,
            "duration_s": self.secs, "ops": self.ops, "ops_per_sec": self.ops as f64 / self.secs, "failed": self.failed,
            "p50_us": p50, "p99_us": pct(&self.all, 0.99), "p999_us": pct(&self.all, 0.999),
            "put_p50_us": pct(&self.puts, 0.5), "put_p99_us": pct(&self.puts, 0.99),
            "get_p50_us": pct(&self.gets, 0.5), "get_p99_us": pct(&self.gets, 0.99),
            "leader": self.leader.map(|l| l.0 + 1), "leader_commits": self.leader.map(|l| l.1),
            "leader_commit_p50_us": lp50, "leader_commit_p99_us": self.leader.map(|l| us(l.3)),
            "rtt_p50_us": rtt50, "rtt_p99_us": pct(&self.rtt, 0.99),
            "ratio_p50": p50.zip(rtt50).map(|(a, b)| a / b),
            "ratio_leader_p50": lp50.zip(rtt50).map(|(a, b)| a / b),
            "redirects": self.redirects, "retries": self.retries, "elections": self.elections,
            "xdp_attach": self.xdp_attach,
        })
    }

    fn print(&self) {
        let d = if self.durable { "fsync" } else { "none" };
        let xdp = self.xdp_attach.as_ref().map_or(String::new(), |m| format!(" ({m} XDP)"));
        println!(
            "erpc kv {} over {}{xdp}: {} client(s), {}% GETs, {} B keys, {} B values, durability {d}, {:.2} s",
            self.setup, self.transport, self.clients, self.get_pct, self.key_size, self.value_size, self.secs
        );
        println!("  operations:       {} ({:.0}/s), {} failed", self.ops, self.ops as f64 / self.secs, self.failed);
        let line = |name: &str, h: &Histogram<u64>| {
            if let (Some(a), Some(b), Some(c)) = (pct(h, 0.5), pct(h, 0.99), pct(h, 0.999)) {
                println!("  {name:<17} p50 {a:.2}  p99 {b:.2}  p99.9 {c:.2}");
            }
        };
        line("PUT at client (us):", &self.puts);
        line("GET at client (us):", &self.gets);
        if let Some((i, n, p50, p99)) = self.leader {
            println!("  commit at leader: p50 {:.2}  p99 {:.2} us (replica {}, {n} writes)", us(p50), us(p99), i + 1);
        }
        line("eRPC RTT (us):", &self.rtt);
        let j = self.json();
        if let (Some(r), Some(l)) = (j["ratio_p50"].as_f64(), j["ratio_leader_p50"].as_f64()) {
            println!("  ratio:            client p50 {r:.2} x the RTT p50; leader commit p50 {l:.2} x");
        }
        println!("  redirects {}, retries {}, elections won {}", self.redirects, self.retries, self.elections);
    }
}

pub(crate) fn check_load(l: &LoadArgs) -> anyhow::Result<()> {
    if l.clients == 0 || l.clients > 1024 {
        bail!("--clients must be 1..=1024, not {}", l.clients);
    }
    if l.get_pct > 100 {
        bail!("--get-pct must be 0..=100");
    }
    if l.key_size < 8 || l.key_size > erpc_kv::proto::MAX_KEY {
        bail!("--key-size must be 8..={}", erpc_kv::proto::MAX_KEY);
    }
    if l.value_size > 1 << 20 || l.keys == 0 {
        bail!("--value-size must be at most 1048576 and --keys at least 1");
    }
    if !(l.duration > 0.0 && l.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds, not {}", l.duration);
    }
    Ok(())
}

/// Runs the load on `cli` (with `others` polled between its iterations: replicas sharing the
/// thread), then the leader's statistics and the round-trip reference.
fn measure<T: Transport>(
    cli: &mut ClientRpc<T, Clk>,
    mut others: impl FnMut(),
    mut idle: IdleWait,
    l: &LoadArgs,
    transport: &str,
    setup: &'static str,
) -> anyhow::Result<KvReport> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(RpcConfig::random_seed());
    let key_of = |k: u64| {
        let mut v = vec![b'k'; l.key_size];
        v[..8].copy_from_slice(&k.to_le_bytes());
        v
    };
    let value = vec![b'v'; l.value_size];
    // First a PUT, to find the leader (and wait for one).
    client::submit(cli, 0, Op::Put { key: key_of(0), value: value.clone() });
    let t0 = Instant::now();
    while cli.ctx().busy(0) {
        client::poll(cli);
        others();
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("no leader answered a PUT within 15 s");
        }
    }
    if let Some(d) = cli.ctx_mut().done.pop_front() {
        if let Outcome::Failed(e) = d.outcome {
            return Err(anyhow!(e)).context("the first PUT");
        }
    }
    let mut leader = cli.ctx().leader_guess(0);
    let stats0 = cli.ctx().stats;
    let (mut all, mut puts, mut gets, mut rtt) = (hist(), hist(), hist(), hist());
    let mut measuring = false;
    let (mut ops, mut retries) = (0u64, 0u64);
    let warm = Duration::from_millis(500);
    let dur = Duration::from_secs_f64(l.duration);
    let bar = progress_bar(!l.json && l.duration > 1.0, l.duration);
    let start = Instant::now();
    let mut m0 = start;
    loop {
        let el = start.elapsed();
        if !measuring && el >= warm {
            measuring = true;
            m0 = Instant::now();
            client::query_stats(cli, leader, true);
        }
        if measuring {
            let m = m0.elapsed();
            if m >= dur {
                break;
            }
            bar.set_position(m.as_millis() as u64);
        }
        for _ in 0..64 {
            while let Some(d) = cli.ctx_mut().done.pop_front() {
                if measuring && !matches!(d.outcome, Outcome::Failed(_)) {
                    let t = (d.return_ns - d.invoke_ns).max(1);
                    let _ = all.record(t);
                    let _ = if matches!(d.op, Op::Get { .. }) { gets.record(t) } else { puts.record(t) };
                    ops += 1;
                    retries += d.attempts.saturating_sub(1) as u64;
                }
            }
            for c in 0..l.clients {
                if !cli.ctx().busy(c) {
                    let key = key_of(rng.next_u64() % l.keys);
                    let op = if rng.next_u64() % 100 < l.get_pct {
                        Op::Get { key }
                    } else {
                        Op::Put { key, value: value.clone() }
                    };
                    client::submit(cli, c, op);
                }
            }
            client::poll(cli);
            others();
            // The client's retries and reconnections are timers no packet announces.
            idle.after_poll_until(cli, erpc_kv::client::next_deadline_ns);
        }
    }
    let secs = m0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Let what is outstanding finish, then the leader's view.
    let t0 = Instant::now();
    while (0..l.clients).any(|c| cli.ctx().busy(c)) && t0.elapsed() < Duration::from_secs(15) {
        client::poll(cli);
        others();
    }
    let failed = cli.ctx().stats.failed - stats0.failed;
    leader = cli.ctx().leader_guess(0);
    let mut stats = None;
    if client::query_stats(cli, leader, false) {
        let t0 = Instant::now();
        while cli.ctx().last_stats.is_none() && t0.elapsed() < Duration::from_secs(2) {
            client::poll(cli);
            others();
        }
        stats = cli.ctx().last_stats;
    }
    // The reference: one eRPC round trip of the same sizes to the leader, same endpoints.
    let req = 24 + l.key_size + if l.get_pct == 100 { 0 } else { l.value_size };
    let resp = 32 + if l.get_pct == 100 { l.value_size } else { 0 };
    let t0 = Instant::now();
    let rdur = dur.min(Duration::from_secs(2));
    let mut n = 0;
    while t0.elapsed() < rdur {
        cli.ctx_mut().echoes.clear();
        if !client::echo(cli, leader, req, resp) {
            break;
        }
        // Polled as the operations were: the clock checked once per 64 iterations.
        let t1 = Instant::now();
        'wait: while t1.elapsed() < Duration::from_secs(1) {
            for _ in 0..64 {
                if !cli.ctx().echoes.is_empty() {
                    break 'wait;
                }
                client::poll(cli);
                others();
            }
        }
        if let Some(&t) = cli.ctx().echoes.first() {
            if n >= 10 {
                let _ = rtt.record(t);
            }
            n += 1;
        }
    }
    let k = cli.ctx();
    let s = stats.unwrap_or_default();
    Ok(KvReport {
        rtt,
        leader: stats.map(|s| (leader, s.commits.get(), s.commit_p50_ns.get(), s.commit_p99_ns.get())),
        redirects: k.stats.redirects - stats0.redirects,
        retries,
        elections: s.elections_won.get(),
        ..KvReport::peer(transport, setup, l, s.flags.get() & 1 != 0, secs, ops, failed, [all, puts, gets])
    })
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

pub(crate) fn emit(r: &KvReport, json: bool) {
    if json {
        println!("{}", r.json());
    } else {
        r.print();
    }
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    check_load(&a.load)?;
    let name = a.net.name();
    let r =
        with_client!(&a.net, &a.peers, a.bind, a.connect_timeout, a.load.clients, a.load.value_size, |cli| measure(
            &mut cli,
            || {},
            IdleWait::new(a.idle_wait_us),
            &a.load,
            &name,
            "separate processes"
        ))?;
    emit(&r, a.load.json);
    Ok(())
}

fn local(a: LocalArgs) -> anyhow::Result<()> {
    check_load(&a.load)?;
    if a.transport != LocalTransport::Afxdp && a.xdp_mode != XdpMode::Auto {
        bail!("--xdp-mode applies to --transport afxdp");
    }
    let tmp;
    let dir = match (a.raft.durability, &a.raft.dir) {
        (DurabilityKind::Fsync, None) => {
            tmp =
                tempfile::Builder::new().prefix("erpc-kv-").tempdir().context("creating a temporary log directory")?;
            Some(tmp.path().to_path_buf())
        }
        (_, d) => d.clone(),
    };
    let cfg = |id: u64, peers: Vec<EndpointAddr>| -> anyhow::Result<ReplicaConfig> {
        let d = dir.as_ref().map(|d| d.join(format!("replica-{id}")));
        replica_config(id, peers, &a.raft, d)
    };
    let setup = "one thread, round-robin";
    let r = match a.transport {
        LocalTransport::Udp => {
            let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
            let mut nics: Vec<Option<UdpTransport>> =
                (0..3).map(|_| udp(lo).map(Some)).collect::<anyhow::Result<_>>()?;
            let peers: Vec<EndpointAddr> = nics.iter().map(|n| n.as_ref().expect("bound").local_addr()).collect();
            let cfgs = (0..3).map(|i| cfg(i as u64 + 1, peers.clone())).collect::<Result<Vec<_>, _>>()?;
            let new_nic = Box::new(move |i: usize| {
                nics[i].take().ok_or_else(|| erpc_kv::Error::Config("a UDP replica of `local` cannot restart".into()))
            });
            let mut c =
                Cluster::new(shared_clock(), udp_rpc_config(), cfgs, new_nic).context("starting the replicas")?;
            let mut cc = ClientConfig::new(peers, a.load.clients);
            cc.max_value = a.load.value_size;
            c.add_client(udp(lo)?, cc).context("starting the client")?;
            run_local(c, &a.load, "udp", setup)?
        }
        LocalTransport::Afxdp => {
            let lan = crate::netns::Lan::create(4)?;
            let (cfgs, load, attach) = (&cfg, &a.load, a.xdp_mode.attach());
            std::thread::scope(|sc| {
                sc.spawn(move || local_afxdp(&lan, cfgs, load, setup, attach))
                    .join()
                    .map_err(|_| anyhow!("the event-loop thread panicked"))?
            })?
        }
        LocalTransport::Sim => {
            // Zero-delay links, as `erpc bench --transport sim`: the endpoints' own cost.
            let o =
                erpc_kv::SimOptions { client_endpoints: vec![a.load.clients], link_delay_ns: 0, ..Default::default() };
            let mut err = None;
            let c = Cluster::on_fabric(
                &o,
                shared_clock(),
                None,
                RpcConfig { seed: RpcConfig::random_seed(), ..RpcConfig::default() },
                |rc| match cfg(rc.id, rc.peers.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        err = Some(e);
                        rc
                    }
                },
                |mut cc| {
                    cc.max_value = a.load.value_size;
                    cc
                },
            )
            .context("starting the cluster")?;
            if let Some(e) = err {
                return Err(e);
            }
            run_local(c, &a.load, "sim", setup)?
        }
    };
    emit(&r, a.load.json);
    Ok(())
}

/// `local` over AF_XDP on this thread: each replica, and then the client, on the segment's
/// interface in a namespace of its own (the thread enters each to open its socket; the peers'
/// MACs are given, so nothing is resolved afterwards).
fn local_afxdp(
    lan: &crate::netns::Lan,
    cfg: &dyn Fn(u64, Vec<EndpointAddr>) -> anyhow::Result<ReplicaConfig>,
    l: &LoadArgs,
    setup: &'static str,
    attach: XdpAttach,
) -> anyhow::Result<KvReport> {
    let open = |i: usize, bytes: usize| -> anyhow::Result<AfXdpTransport> {
        let e = &lan.ends[i];
        crate::netns::enter(&e.netns)?;
        kv_afxdp(&e.interface, None, 31850, bytes, attach).with_context(|| format!("opening AF_XDP in {}", e.netns))
    };
    let nics = (0..3).map(|i| open(i, cluster::REPLICA_REGION)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut modes: Vec<XdpAttach> = nics.iter().map(|n| n.attach_mode()).collect();
    let peers: Vec<EndpointAddr> = nics.iter().map(|n| n.local_addr()).collect();
    let clock = shared_clock();
    let mut replicas = Vec::new();
    for (i, t) in nics.into_iter().enumerate() {
        // SAFETY: the region is in the transport's UMEM, and the endpoint built on it owns it.
        let region = unsafe { t.dataplane_region() };
        let rc = cfg(i as u64 + 1, peers.clone())?;
        let rpc = cluster::replica_endpoint_in(t, region, clock.clone(), udp_rpc_config(), rc)
            .context("starting the replicas")?;
        replicas.push(Some(rpc));
    }
    let mut cc = ClientConfig::new(peers, l.clients);
    cc.max_value = l.value_size;
    let t = open(3, cluster::client_region_bytes(&cc))?;
    modes.push(t.attach_mode());
    // SAFETY: as above.
    let region = unsafe { t.dataplane_region() };
    let cli = cluster::client_endpoint_in(t, region, clock, udp_rpc_config(), cc).context("starting the client")?;
    let mut r = run_local_on(replicas, cli, l, "afxdp", setup)?;
    let mut names: Vec<&str> = modes
        .iter()
        .map(|m| match m {
            XdpAttach::Native => "native",
            XdpAttach::Generic => "generic",
            XdpAttach::Auto => "auto",
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    r.xdp_attach = Some(names.join("+"));
    Ok(r)
}

fn run_local<T: Transport>(
    mut c: Cluster<T>,
    l: &LoadArgs,
    transport: &str,
    setup: &'static str,
) -> anyhow::Result<KvReport> {
    let cli = c.clients.pop().expect("one client");
    run_local_on(std::mem::take(&mut c.replicas), cli, l, transport, setup)
}

/// Runs the load on `cli` with `replicas` polled between its iterations, on this thread.
fn run_local_on<T: Transport>(
    mut replicas: Vec<Option<ReplicaRpc<T, Clk>>>,
    mut cli: ClientRpc<T, Clk>,
    l: &LoadArgs,
    transport: &str,
    setup: &'static str,
) -> anyhow::Result<KvReport> {
    let mut failure = None;
    let r = measure(
        &mut cli,
        || {
            for (i, r) in replicas.iter_mut().enumerate() {
                if let Some(rpc) = r {
                    if let Err(e) = erpc_kv::replica::poll(rpc) {
                        failure.get_or_insert(anyhow::Error::new(e).context(format!("replica {} stopped", i + 1)));
                        *r = None;
                    }
                }
            }
        },
        // The replicas run on this thread: never block it.
        IdleWait::new(0),
        l,
        transport,
        setup,
    );
    if let Some(f) = failure {
        return Err(f);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_answer_try_again_within_the_request_timeout_at_any_tick() {
        let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        for tick_us in [1, 1000, 3000, 20_000, 1_000_000] {
            let r = RaftArgs {
                durability: DurabilityKind::None,
                dir: None,
                tick_us,
                election_ticks: 100,
                heartbeat_ticks: 10,
                snapshot_every: 100_000,
            };
            let c = replica_config(1, vec![EndpointAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9))], &r, None)
                .unwrap();
            let hold = c.request_timeout_ticks * c.tick_ns;
            // One second, to a tick.
            assert!(hold <= 1_000_000_000 && hold > 1_000_000_000 - c.tick_ns, "{tick_us} us: {hold} ns");
            // The endpoint accepts it: the store answers before the clients' eRPC gives up.
            cluster::replica_endpoint(udp(lo).unwrap(), shared_clock(), udp_rpc_config(), c).unwrap();
        }
    }
}
