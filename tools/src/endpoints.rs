//! The endpoints `erpc bench` and `erpc capture` run, built one way for every transport: the
//! clock, endpoint memory, the transports (kernel UDP, AF_XDP, the in-memory NIC), the benchmark
//! server, and a client's connect, which says why a server refused.

use anyhow::{anyhow, bail, Context};
use erpc_dataplane::fabric::{Fabric, RxBuf, SimNic};
use erpc_dataplane::transport::EndpointAddr;
use erpc_dataplane::*;
use erpc_driver::afxdp::{AfXdpConfig, AfXdpTransport, XdpAttach};
use erpc_driver::mlx5::{Mlx5Config, Mlx5Nic};
use erpc_driver::udp::{UdpConfig, UdpTransport};
use erpc_driver::vfio::open_container;
use erpc_hugepages::{DmaSpace, PageSize};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The clock of the commands' endpoints: the time-stamp counter on x86_64.
#[cfg(target_arch = "x86_64")]
pub(crate) type Clk = erpc_dataplane::clock::TscClock;
/// The clock of the commands' endpoints: `std::time::Instant` off x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type Clk = erpc_dataplane::clock::StdClock;

pub(crate) fn clock() -> Clk {
    #[cfg(target_arch = "x86_64")]
    {
        erpc_dataplane::clock::TscClock::calibrate()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        erpc_dataplane::clock::StdClock::default()
    }
}

/// Sessions of each endpoint (client and server sessions together).
const SESSIONS: usize = 16;
/// Requests each endpoint can queue behind busy slots.
const BACKLOG: usize = 64;

/// Room for `conc` requests and responses of the largest size on each side, twice over, with
/// a 56-byte packet header per `data_per_pkt` bytes, plus 8 MiB for the endpoint itself.
pub(crate) fn region_bytes(req: usize, resp: usize, conc: usize, data_per_pkt: usize) -> usize {
    let m = req.max(resp);
    4 * conc * (m + (m / data_per_pkt + 1) * 56).next_power_of_two() + (8 << 20)
}

/// Endpoint memory on the heap, for the software transports.
pub(crate) fn memory(bytes: usize) -> OwnedMemory {
    // Leaked: msgbufs carry no lifetime and may outlive their endpoint (see `DmaRegion`).
    memory_in(DmaRegion::from_static(vec![0u8; bytes].leak(), 0x1_0000_0000))
}

/// Endpoint memory over `region` (the UMEM for AF_XDP, hugepages for mlx5).
pub(crate) fn memory_in(region: DmaRegion) -> OwnedMemory {
    OwnedMemory::new(region, SESSIONS, BACKLOG)
}

/// The endpoint configuration: a fresh seed, this MTU, congestion control on or off.
pub(crate) fn rpc_config(mtu: usize, cc: bool) -> RpcConfig {
    let mut cfg = RpcConfig { seed: RpcConfig::random_seed(), mtu, ..RpcConfig::default() };
    cfg.cc.enabled = cc;
    cfg
}

// ----- transports -----

/// A NIC of the in-memory fabric.
pub(crate) type SimPort = SimNic<'static, 'static, Clk>;

/// Two NICs on a new in-memory fabric (`seed` for its fault injection), each with a receive ring
/// of `ring` frames; `tx_lag` as in [`Fabric::nic`].
pub(crate) fn sim_pair(clk: Clk, seed: u64, ring: usize, tx_lag: usize) -> (SimPort, SimPort) {
    // Leaked: both NICs borrow the fabric, and the fabric each port's receive ring, as they live.
    let fab: &'static Fabric<'static, Clk> = Box::leak(Box::new(Fabric::new(clk, seed)));
    let pa = fab.attach(RxBuf::storage(ring).leak());
    let pb = fab.attach(RxBuf::storage(ring).leak());
    (fab.nic(pa, tx_lag), fab.nic(pb, tx_lag))
}

/// A kernel UDP transport on `bind`; the driver's error says what to do.
pub(crate) fn udp(bind: SocketAddrV4) -> anyhow::Result<UdpTransport> {
    Ok(UdpTransport::bind(UdpConfig { bind, ..Default::default() })?)
}

/// The client's own UDP address for `--connect server [--bind bind]`: any port on loopback
/// when the server is on loopback; another machine needs `--bind`.
pub(crate) fn client_bind(server: SocketAddrV4, bind: Option<SocketAddrV4>) -> anyhow::Result<SocketAddrV4> {
    match bind {
        Some(b) => Ok(b),
        None if server.ip().is_loopback() => Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
        None => bail!("--connect to another machine needs --bind <this machine's IP>:0"),
    }
}

/// An AF_XDP transport on queue 0 of `interface` (this thread's network namespace) with a
/// `region`-byte msgbuf region in a UMEM of 2 MiB hugepages; `ip` defaults to the interface's
/// address.
pub(crate) fn afxdp(interface: &str, ip: Option<Ipv4Addr>, port: u16, region: usize) -> anyhow::Result<AfXdpTransport> {
    afxdp_on(interface, ip, port, region, PageSize::Huge2M, XdpAttach::Auto)
}

/// [`afxdp`] with the UMEM in `page`-sized pages and the program attached as `attach` says.
pub(crate) fn afxdp_on(
    interface: &str,
    ip: Option<Ipv4Addr>,
    port: u16,
    region: usize,
    page: PageSize,
    attach: XdpAttach,
) -> anyhow::Result<AfXdpTransport> {
    Ok(AfXdpTransport::open(AfXdpConfig {
        attach,
        interface: interface.to_string(),
        ipv4: ip,
        udp_port: port,
        rx_frames: 2048,
        tx_ring: 1024,
        region_bytes: region,
        page,
        ..Default::default()
    })?)
}

/// Endpoint memory in an AF_XDP transport's UMEM.
pub(crate) fn afxdp_memory(t: &AfXdpTransport) -> OwnedMemory {
    // SAFETY: the region lives in the transport, which the endpoint built on this memory owns.
    memory_in(unsafe { t.dataplane_region() })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || anyhow::anyhow!("MAC `{s}`: write it as aa:bb:cc:dd:ee:ff");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A ConnectX NIC at PCI function `bdf` (bound to vfio-pci) answering at `me`, and `bytes` of
/// 2 MiB hugepages mapped for it, for the endpoint's msgbufs; each missing piece (VFIO, IOMMU,
/// hugepages, the binding) is an error that says what to do.
pub(crate) fn mlx5(bdf: &str, me: SocketAddrV4, bytes: usize) -> anyhow::Result<(Mlx5Nic, DmaRegion)> {
    let container = open_container()?;
    let space = DmaSpace::vfio(container.clone());
    let cfg = Mlx5Config { ipv4: me.ip().octets(), udp_port: me.port(), ..Default::default() };
    let nic = Mlx5Nic::open(&container, &space, bdf, cfg).with_context(|| format!("opening {bdf}"))?;
    let mem = space.alloc(bytes, PageSize::Huge2M).context("allocating the endpoint's DMA memory")?;
    // Leaked: msgbufs carry no lifetime and may outlive their endpoint (see `DmaRegion`).
    let mem = Box::leak(Box::new(mem));
    // SAFETY: leaked, so it outlives the endpoint; the device only reads it.
    Ok((nic, unsafe { mem.dataplane_region() }))
}

// ----- the benchmark server -----

/// The request type the benchmark server handles (and `erpc capture` sends).
pub const REQ_TYPE: u8 = 1;

/// A benchmark server: its context is the response size.
pub(crate) type Server<T> = Rpc<'static, T, Clk, usize>;

fn server_handler<T: Transport>(rpc: &mut Server<T>, h: ReqHandle) {
    let n = *rpc.ctx();
    if n <= rpc.max_data_per_pkt() {
        let _ = rpc.respond_prealloc_with(h, |_, _| n);
    } else if let Ok(b) = rpc.alloc_msg_buffer(n) {
        let _ = rpc.enqueue_response(h, b);
    }
}

/// A server endpoint on `t` answering [`REQ_TYPE`] requests with `resp`-byte responses, and
/// echoing [`ECHO_REQ_TYPE`](crate::echo::ECHO_REQ_TYPE) requests (`erpc echo`).
pub(crate) fn server<T: Transport>(t: T, resp: usize, mem: OwnedMemory, cfg: RpcConfig) -> anyhow::Result<Server<T>> {
    let mut srv = Rpc::new(t, clock(), resp, mem, cfg).context("building the server endpoint")?;
    srv.register_handler(REQ_TYPE, server_handler::<T>, HandlerMode::Foreground)
        .context("registering the server's request handler")?;
    srv.register_handler(crate::echo::ECHO_REQ_TYPE, crate::echo::echo_handler::<T, usize>, HandlerMode::Foreground)
        .context("registering the server's echo handler")?;
    srv.register_handler(
        crate::echo::SHUTDOWN_REQ_TYPE,
        crate::echo::refuse_shutdown::<T, usize>,
        HandlerMode::Foreground,
    )
    .context("registering the server's shutdown handler")?;
    Ok(srv)
}

/// Runs a server endpoint until `stop` is set (or forever without one).
pub(crate) fn serve_until<T: Transport>(srv: &mut Server<T>, stop: Option<&AtomicBool>) {
    loop {
        for _ in 0..256 {
            srv.run_event_loop_once();
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return;
        }
    }
}

// ----- a client's connect -----

/// The context of a client endpoint that [`connect`] drives: it keeps why a connect failed.
pub(crate) trait ConnectState {
    fn connect_failure(&mut self) -> &mut Option<SmError>;
}

fn on_session_event<T: Transport, Ctx: ConnectState>(rpc: &mut Rpc<'static, T, Clk, Ctx>, ev: SessionEvent) {
    if let SessionEvent::ConnectFailed(_, e) = ev {
        *rpc.ctx_mut().connect_failure() = Some(e);
    }
}

/// Longest wait for a server's answer to a connect request, however the endpoint is configured.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates a session from `cli` to the server at `server` (`what` names it in errors: "udp
/// 10.0.0.1:31850") and runs the event loop, and `peer` after each iteration (a server on this
/// thread), until the session connects, the server refuses or does not answer.
pub(crate) fn connect<T: Transport, Ctx: ConnectState>(
    cli: &mut Rpc<'static, T, Clk, Ctx>,
    peer: &mut dyn FnMut(),
    server: EndpointAddr,
    what: &str,
) -> anyhow::Result<SessionId> {
    let failed = || format!("connecting to {what}");
    cli.set_session_handler(on_session_event::<T, Ctx>);
    *cli.ctx_mut().connect_failure() = None;
    let t0 = Instant::now();
    // A transport that resolves the server's MAC without waiting (AF_XDP, the neighbour
    // layer) reports it unroutable until the kernel's or its own ARP has an answer: try again.
    let s = loop {
        match cli.create_session(server) {
            Ok(s) => break s,
            Err(SessionError::Unroutable) if t0.elapsed() < CONNECT_TIMEOUT => {
                cli.run_event_loop_once();
                peer();
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(SessionError::InvalidAddress) => {
                return Err(anyhow!("give the server's unicast address and port (as it printed them), not 0"))
                    .with_context(failed);
            }
            Err(e) => return Err(e).with_context(failed),
        }
    };
    // The handshake gets its own time, however long resolving took.
    let t0 = Instant::now();
    while !cli.is_connected(s) {
        if let Some(e) = cli.ctx_mut().connect_failure().take() {
            return Err(refusal(e, cli.config())).with_context(failed);
        }
        if t0.elapsed() > CONNECT_TIMEOUT {
            return Err(anyhow!("is it running, and are the address and port right?"))
                .context(format!("no eRPC server answered within {} s", CONNECT_TIMEOUT.as_secs()))
                .with_context(failed);
        }
        cli.run_event_loop_once();
        peer();
    }
    Ok(s)
}

/// Why a connect failed, and what to do about it.
pub(crate) fn refusal(e: SmError, cfg: &RpcConfig) -> anyhow::Error {
    let todo = match e {
        SmError::RemoteUnreachable => {
            let secs = cfg.sm_max_attempts as f64 * cfg.sm_retry_ns as f64 / 1e9;
            return anyhow!("is it running, and are the address and port right?")
                .context(format!("no eRPC server answered {} connect requests over {secs:.1} s", cfg.sm_max_attempts));
        }
        SmError::OutOfSessions => "retry once some of its clients have disconnected, or give it more sessions",
        SmError::OutOfMemory => "retry once its RPCs have completed, or give it more msgbuf memory",
        SmError::RoutingFailed => "bind this end to an address the server can reach (--bind)",
        SmError::Refused => "is that the server you meant? it serves no requests, or its application filters clients",
        SmError::TooManySessionsFromClient => {
            "close sessions from this address, or raise the server's max_sessions_per_client"
        }
    };
    anyhow!(todo).context(e)
}

/// Yields the core of an endpoint that keeps finding nothing to do: after [`IdleWait::POLLS`]
/// event-loop iterations in a row that received nothing, each further idle iteration blocks in
/// the transport until a packet comes, a timer is due, or `max` passes ([`Rpc::wait_for_work`]);
/// over a transport that cannot block (the VFIO drivers), it sleeps `max` instead. For machines
/// with fewer free cores than busy endpoints (`--idle-wait-us`).
pub(crate) struct IdleWait {
    max_ns: u64,
    idle: u32,
    last_rx: u64,
}

impl IdleWait {
    /// Idle iterations before the first wait: about a round trip's worth over the kernel
    /// transports, so an answer due within microseconds still finds the endpoint spinning. On
    /// loopback with three replica processes and a client on two cores, 10 and 20 gave the
    /// store's lowest latency and highest rate, 50 and 100 less, 200 (the old nap's) half.
    pub(crate) const POLLS: u32 = 16;

    /// Waits of at most `max_us` microseconds; 0 never waits.
    pub(crate) fn new(max_us: u64) -> IdleWait {
        IdleWait { max_ns: max_us.saturating_mul(1000), idle: 0, last_rx: 0 }
    }

    /// Call after each event-loop iteration of `rpc`.
    pub(crate) fn after_poll<T: erpc_dataplane::transport::Transport, C: erpc_dataplane::clock::Clock, X>(
        &mut self,
        rpc: &mut Rpc<'_, T, C, X>,
    ) {
        self.after_poll_until(rpc, |_| None);
    }

    /// As [`after_poll`](Self::after_poll), for an application with timers of its own that no
    /// packet announces: `deadline` gives the earliest (ns on `rpc`'s clock), read only when a
    /// wait is due, and the wait ends by then.
    pub(crate) fn after_poll_until<'m, T: erpc_dataplane::transport::Transport, C: erpc_dataplane::clock::Clock, X>(
        &mut self,
        rpc: &mut Rpc<'m, T, C, X>,
        deadline: impl FnOnce(&Rpc<'m, T, C, X>) -> Option<u64>,
    ) {
        if self.max_ns == 0 {
            return;
        }
        let rx = rpc.stats().rx_pkts;
        if rx != self.last_rx {
            (self.idle, self.last_rx) = (0, rx);
            return;
        }
        self.idle = self.idle.saturating_add(1);
        if self.idle <= Self::POLLS {
            return;
        }
        let max = match deadline(rpc) {
            Some(t) => self.max_ns.min(t.saturating_sub(rpc.clock().now_ns())),
            None => self.max_ns,
        };
        if max > 0 && rpc.wait_for_work(max) == Waited::CannotBlock {
            std::thread::sleep(Duration::from_nanos(max));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle endpoint over UDP (it can block) that may wait up to 2 s at a time: the wait
    /// ends by the application's deadline, at once if that has passed, and without one lasts
    /// until the endpoint's own next timer.
    #[test]
    fn an_idle_wait_ends_by_the_applications_own_deadline() {
        let t = udp(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("a UDP socket on loopback");
        let mut srv = server(t, 32, memory(region_bytes(32, 32, 1, 1400)), rpc_config(1500, true)).unwrap();
        // Polls until the first wait, and that wait: how long it all took.
        let mut wait_once = |deadline_ms: Option<u64>| {
            let mut idle = IdleWait::new(2_000_000);
            let d = deadline_ms.map(|ms| srv.clock().now_ns() + ms * 1_000_000);
            let t0 = Instant::now();
            for _ in 0..=IdleWait::POLLS {
                srv.run_event_loop_once();
                idle.after_poll_until(&mut srv, |_| d);
            }
            t0.elapsed()
        };
        let without = wait_once(None);
        assert!(without >= Duration::from_millis(200), "{without:?}");
        let with = wait_once(Some(20));
        assert!(with >= Duration::from_millis(15) && with < Duration::from_millis(150), "{with:?}");
        let past = wait_once(Some(0));
        assert!(past < Duration::from_millis(15), "{past:?}");
    }

    #[test]
    fn macs_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(parse_mac("02:00:0a:0b:0c:ff").unwrap(), [2, 0, 0xa, 0xb, 0xc, 0xff]);
        assert!(parse_mac("02:00:0a").unwrap_err().to_string().contains("aa:bb:cc:dd:ee:ff"));
        assert!(parse_mac("zz:00:0a:0b:0c:ff").is_err());
    }

    #[test]
    fn every_connect_failure_says_what_failed_why_and_what_to_do() {
        let cfg = RpcConfig::default();
        for (e, want) in [
            (SmError::RemoteUnreachable, "no eRPC server answered 10 connect requests over 1.0 s: is it running"),
            (SmError::OutOfSessions, "the server refused: all its sessions are in use: retry once"),
            (SmError::OutOfMemory, "the server refused: it has no msgbuf memory for another session: retry"),
            (SmError::RoutingFailed, "the server refused: it cannot route back to this endpoint: bind this end"),
            (SmError::Refused, "the server refused: it accepts no sessions from this address: is that the server"),
            (
                SmError::TooManySessionsFromClient,
                "the server refused: this client address already holds its maximum of sessions \
                 (max_sessions_per_client): close sessions",
            ),
        ] {
            let m = format!("{:#}", refusal(e, &cfg).context("connecting to udp 10.0.0.1:31850"));
            assert!(m.starts_with(&format!("connecting to udp 10.0.0.1:31850: {want}")), "{m}");
            assert!(!m.contains('\n'), "{m}");
        }
    }
}
