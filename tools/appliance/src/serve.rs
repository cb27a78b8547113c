//! The appliance's services: one eRPC server endpoint on the NIC, reachable by any Linux host with
//! the `erpc` command over kernel UDP, until a shutdown request (if allowed) or forever.
//!
//! Below the endpoint, [`Neighbours`] answers ARP and ping and learns the clients' MAC addresses
//! (a kernel UDP client advertises none), and a [`FaultInjector`] drops the fraction of frames the
//! `loss=` boot option asks for, in each direction, to exercise retransmission on a wire that
//! loses nothing.
//!
//! Services (request types), each also served by `erpc bench --server` on Linux:
//! * [`BENCH_REQ_TYPE`]: a [`BENCH_RESP_BYTES`]-byte response, whatever the request
//!   (`erpc bench latency|rate --connect`).
//! * [`ECHO_REQ_TYPE`]: the response is the request, byte for byte (`erpc echo`).
//! * [`SHUTDOWN_REQ_TYPE`]: answered with one byte, 1 if the appliance stops (booted with
//!   `shutdown=allow`) or 0 if it refuses; after a 1 it keeps serving for [`LINGER_NS`] so the
//!   answer gets through loss, then stops with the success code.
//! * [`KV_REQ_TYPE`]: a small key-value store (see [`crate::kv`]).

use crate::clock::TscClock;
use crate::dma::static_region;
use crate::kv;
use erpc_dataplane::fault::FaultInjector;
use erpc_dataplane::transport::Transport;
use erpc_dataplane::{
    BacklogEntry, Clock, HandlerMode, InitError, RegisterError, ReqHandle, Rpc, RpcConfig, RpcMemory, Session,
    SessionEvent,
};
use erpc_nic::neigh::{Neighbours, NeighboursError, REGION_BYTES as NEIGH_BYTES};
use static_cell::ConstStaticCell;

/// `erpc bench`'s request type (tools/src/endpoints.rs `REQ_TYPE`): answered with
/// [`BENCH_RESP_BYTES`] bytes, as `erpc bench --server` does with its default `--resp-size`.
pub const BENCH_REQ_TYPE: u8 = 1;
pub const BENCH_RESP_BYTES: usize = 32;
/// `erpc echo`'s request type (tools/src/echo.rs).
pub const ECHO_REQ_TYPE: u8 = 2;
/// `erpc echo --shutdown`'s request type (tools/src/echo.rs).
pub const SHUTDOWN_REQ_TYPE: u8 = 3;
/// The key-value service's request type: the client protocol of `erpc kv` (tools/kv/src/proto.rs,
/// `REQ_CLIENT`), served by a single replica that is always the leader.
pub const KV_REQ_TYPE: u8 = 12;
/// How long the appliance keeps serving after accepting a shutdown.
pub const LINGER_NS: u64 = 500_000_000;

/// Msgbuf memory: room for a few 3 MB requests and their echoes at once.
const REGION_BYTES: usize = 48 << 20;
const SESSIONS: usize = 16;
const BACKLOG: usize = 64;

#[repr(C, align(4096))]
struct Region([u8; REGION_BYTES]);
#[repr(C, align(4096))]
struct NeighRegion([u8; NEIGH_BYTES]);

static MEM: ConstStaticCell<Region> = ConstStaticCell::new(Region([0; REGION_BYTES]));
static NEIGH_MEM: ConstStaticCell<NeighRegion> = ConstStaticCell::new(NeighRegion([0; NEIGH_BYTES]));
static SESSION_MEM: ConstStaticCell<[Session; SESSIONS]> = ConstStaticCell::new([Session::EMPTY; SESSIONS]);
static KV: ConstStaticCell<kv::Store> = ConstStaticCell::new(kv::Store::new());
static BACKLOG_MEM: ConstStaticCell<[BacklogEntry; BACKLOG]> = ConstStaticCell::new([BacklogEntry::EMPTY; BACKLOG]);

/// How to serve (from the boot options).
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Fraction of frames dropped in each direction.
    pub loss: f64,
    pub allow_shutdown: bool,
}

/// What the endpoint did, logged at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct Served {
    pub bench: u64,
    pub echoes: u64,
    pub echo_bytes: u64,
    pub echo_no_memory: u64,
    pub kv_ops: u64,
    pub resets: u64,
    /// When a shutdown was accepted (TSC ns).
    pub stop_at: Option<u64>,
}

struct Ctx {
    opts: ServeOptions,
    served: Served,
    /// Taken out while a request is handled (see `kv_op`).
    kv: Option<&'static mut kv::Store>,
}

/// Why serving failed.
#[derive(Debug)]
pub enum ServeError {
    Neighbours(NeighboursError),
    Init(InitError),
    Register(RegisterError),
}

impl core::fmt::Display for ServeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServeError::Neighbours(e) => write!(f, "the neighbour layer: {e}"),
            ServeError::Init(e) => write!(f, "building the endpoint: {e}"),
            ServeError::Register(e) => write!(f, "registering a service: {e}"),
        }
    }
}

type Nic<T> = FaultInjector<Neighbours<T>>;
type Server<T> = Rpc<'static, Nic<T>, TscClock, Ctx>;

fn bench<T: Transport>(rpc: &mut Server<T>, h: ReqHandle) {
    if rpc.respond_prealloc_with(h, |_, _| BENCH_RESP_BYTES).is_ok() {
        rpc.ctx_mut().served.bench += 1;
    }
}

fn echo<T: Transport>(rpc: &mut Server<T>, h: ReqHandle) {
    let n = rpc.request(&h).map_or(0, <[u8]>::len);
    let sent = if n <= rpc.max_data_per_pkt() {
        rpc.respond_prealloc_with(h, |req, resp| {
            resp[..req.len()].copy_from_slice(req);
            req.len()
        })
        .is_ok()
    } else if let Ok(mut b) = rpc.alloc_msg_buffer(n) {
        if let Some(req) = rpc.request(&h) {
            b.data_mut().copy_from_slice(req);
        }
        rpc.enqueue_response(h, b).is_ok()
    } else {
        false
    };
    let s = &mut rpc.ctx_mut().served;
    if sent {
        s.echoes += 1;
        s.echo_bytes += n as u64;
    } else {
        // No answer: the client's request times out and says so; the log says why.
        s.echo_no_memory += 1;
    }
}

fn shutdown<T: Transport>(rpc: &mut Server<T>, h: ReqHandle) {
    let now = rpc.clock().now_ns();
    let allow = rpc.ctx().opts.allow_shutdown;
    let answered = rpc.respond_prealloc_with(h, |_, resp| {
        resp[0] = allow as u8;
        1
    });
    if answered.is_ok() && allow {
        rpc.ctx_mut().served.stop_at.get_or_insert(now);
    }
}

fn kv_op<T: Transport>(rpc: &mut Server<T>, h: ReqHandle) {
    // The store is taken out of the context while it reads the request in the endpoint.
    let Some(store) = rpc.ctx_mut().kv.take() else { return };
    let mut out = [0u8; kv::MAX_RESPONSE];
    let n = rpc.request(&h).map(|req| store.handle(req, &mut out));
    let ctx = rpc.ctx_mut();
    ctx.kv = Some(store);
    let Some(n) = n else { return };
    ctx.served.kv_ops += 1;
    if n <= rpc.max_data_per_pkt() {
        let _ = rpc.respond_prealloc_with(h, |_, resp| {
            resp[..n].copy_from_slice(&out[..n]);
            n
        });
    } else if let Ok(mut b) = rpc.alloc_msg_buffer(n) {
        b.data_mut().copy_from_slice(&out[..n]);
        let _ = rpc.enqueue_response(h, b);
    }
}

fn on_session<T: Transport>(rpc: &mut Server<T>, ev: SessionEvent) {
    if let SessionEvent::Reset(_, r) = ev {
        rpc.ctx_mut().served.resets += 1;
        log::info!("serve: a session was reset: {r:?}");
    }
}

/// Serves on `nic` until a shutdown is accepted (or forever); returns what was served.
pub fn run<T: Transport>(nic: T, clock: TscClock, opts: ServeOptions) -> Result<Served, ServeError> {
    let local = nic.local_addr();
    let nic = Neighbours::new(nic, static_region(&mut NEIGH_MEM.take().0[..])).map_err(ServeError::Neighbours)?;
    let nic = FaultInjector::new(nic, opts.loss, opts.loss, crate::port::rdtsc());
    let mem = RpcMemory {
        region: static_region(&mut MEM.take().0[..]),
        sessions: &mut SESSION_MEM.take()[..],
        backlog: &mut BACKLOG_MEM.take()[..],
    };
    let cfg = RpcConfig { seed: crate::port::rdtsc(), mtu: 1514, ..RpcConfig::default() };
    let ctx = Ctx { opts, served: Served::default(), kv: Some(KV.take()) };
    let mut rpc: Server<T> = Rpc::new(nic, clock, ctx, mem, cfg).map_err(ServeError::Init)?;
    rpc.register_handler(BENCH_REQ_TYPE, bench::<T>, HandlerMode::Foreground).map_err(ServeError::Register)?;
    rpc.register_handler(ECHO_REQ_TYPE, echo::<T>, HandlerMode::Foreground).map_err(ServeError::Register)?;
    rpc.register_handler(SHUTDOWN_REQ_TYPE, shutdown::<T>, HandlerMode::Foreground).map_err(ServeError::Register)?;
    rpc.register_handler(KV_REQ_TYPE, kv_op::<T>, HandlerMode::Foreground).map_err(ServeError::Register)?;
    rpc.set_session_handler(on_session::<T>);
    log::info!(
        "serve: eRPC on udp {local}: bench (type {BENCH_REQ_TYPE}), echo (type {ECHO_REQ_TYPE}), key-value (type {KV_REQ_TYPE}), shutdown (type \
         {SHUTDOWN_REQ_TYPE}, {}); {}% of frames dropped each way",
        if opts.allow_shutdown { "allowed" } else { "refused" },
        opts.loss * 100.0
    );
    let mut next_report = clock.now_ns() + 5_000_000_000;
    loop {
        for _ in 0..64 {
            rpc.run_event_loop_once();
        }
        let now = clock.now_ns();
        if rpc.ctx().served.stop_at.is_some_and(|t| now > t + LINGER_NS) {
            break;
        }
        if now > next_report {
            next_report = now + 5_000_000_000;
            let s = rpc.ctx().served;
            log::info!(
                "serve: {} sessions open, {} echoes ({} bytes), {} key-value operations",
                rpc.num_active_sessions(),
                s.echoes,
                s.echo_bytes,
                s.kv_ops
            );
        }
    }
    let n = rpc.transport().inner().counters();
    let f = rpc.transport().stats();
    let st = rpc.stats();
    log::info!(
        "serve: neighbours: {} ARP requests answered, {} pings answered, {} peers learnt, {} frames dropped, {} replies \
         not sent",
        n.arp_answered,
        n.pings_answered,
        n.learnt,
        n.dropped,
        n.replies_dropped
    );
    log::info!(
        "serve: {} frames dropped on purpose ({} received, {} sent); {} retransmissions; {} packets received, {} sent",
        f.rx_dropped + f.tx_dropped,
        f.rx_dropped,
        f.tx_dropped,
        st.retransmissions,
        st.rx_pkts,
        st.tx_pkts
    );
    Ok(rpc.ctx().served)
}
