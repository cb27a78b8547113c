//! The in-image self-test: proof that the dataplane runs with no OS. Two endpoints, a client and
//! a server, over the dataplane's in-memory fabric (`erpc_dataplane::fabric`), timed by the
//! calibrated TSC, with all their memory static. The client sends RPCs of every combination of
//! eight request and eight response sizes (one byte to 64 KiB, around the packet boundary), first
//! over lossless links, then with [`LOSS`] of the frames lost in each direction, so that
//! retransmission runs on the TSC's timeouts. The server checks every request byte and answers
//! with bytes the client checks in turn; then the session is closed and both endpoints must be
//! back to the msgbufs they held before.

use crate::clock::TscClock;
use core::fmt;
use erpc_dataplane::fabric::{Fabric, LinkParams, RxBuf, SimNic};
use erpc_dataplane::{
    BacklogEntry, Clock, Completion, EnqueueErrorKind, HandlerMode, InitError, RegisterError, ReqHandle, ResetReason,
    RespondErrorKind, Rpc, RpcConfig, RpcError, RpcMemory, Session, SessionError, SessionEvent, SmError,
};
use static_cell::ConstStaticCell;

/// Msgbuf memory per endpoint.
const REGION_BYTES: usize = 4 << 20;
const SESSIONS: usize = 4;
const BACKLOG: usize = 64;
/// Receive buffers per fabric port.
const RX_BUFS: usize = 256;
const REQ_CHECK: u8 = 1;
/// RPCs over lossless links, then over lossy ones.
pub const LOSSLESS_RPCS: u64 = 1024;
pub const LOSSY_RPCS: u64 = 512;
/// Fraction of frames lost in each direction in the lossy phase.
pub const LOSS: f64 = 0.01;
/// RPCs the client keeps outstanding (8 in flight on the session's slots, the rest backlogged).
const WINDOW: u64 = 16;
/// A phase that has not finished after this long (TSC time) fails.
const PHASE_DEADLINE_NS: u64 = 60_000_000_000;
/// Request header: the RPC's tag (u64) and the response length it asks for (u32), little-endian.
const REQ_HDR: usize = 12;

#[repr(C, align(4096))]
struct Region([u8; REGION_BYTES]);

static CLIENT_MEM: ConstStaticCell<Region> = ConstStaticCell::new(Region([0; REGION_BYTES]));
static SERVER_MEM: ConstStaticCell<Region> = ConstStaticCell::new(Region([0; REGION_BYTES]));
static CLIENT_SESSIONS: ConstStaticCell<[Session; SESSIONS]> = ConstStaticCell::new([Session::EMPTY; SESSIONS]);
static SERVER_SESSIONS: ConstStaticCell<[Session; SESSIONS]> = ConstStaticCell::new([Session::EMPTY; SESSIONS]);
static CLIENT_BACKLOG: ConstStaticCell<[BacklogEntry; BACKLOG]> = ConstStaticCell::new([BacklogEntry::EMPTY; BACKLOG]);
static SERVER_BACKLOG: ConstStaticCell<[BacklogEntry; BACKLOG]> = ConstStaticCell::new([BacklogEntry::EMPTY; BACKLOG]);
static CLIENT_RX: ConstStaticCell<[RxBuf; RX_BUFS]> = ConstStaticCell::new([RxBuf::EMPTY; RX_BUFS]);
static SERVER_RX: ConstStaticCell<[RxBuf; RX_BUFS]> = ConstStaticCell::new([RxBuf::EMPTY; RX_BUFS]);

type Nic<'a> = SimNic<'a, 'static, TscClock>;
type Server<'a> = Rpc<'static, Nic<'a>, TscClock, ServerCtx>;
type Client<'a> = Rpc<'static, Nic<'a>, TscClock, ClientCtx>;

/// Why the self-test failed.
#[derive(Clone, Copy, Debug)]
pub enum Failure {
    Init(InitError),
    Register(RegisterError),
    CreateSession(SessionError),
    ConnectFailed(SmError),
    Reset(ResetReason),
    Enqueue { tag: u64, kind: EnqueueErrorKind },
    Rpc { tag: u64, error: RpcError },
    BadRequest { len: usize },
    AskedLength { tag: u64, expected: usize, got: usize },
    RequestLength { tag: u64, expected: usize, got: usize },
    RequestByte { tag: u64, offset: usize, expected: u8, got: u8 },
    ResponseLength { tag: u64, expected: usize, got: usize },
    ResponseByte { tag: u64, offset: usize, expected: u8, got: u8 },
    ServerOutOfMemory { tag: u64, len: usize },
    Respond { tag: u64, kind: RespondErrorKind },
    Stuck { what: &'static str, done: u64, issued: u64 },
    NothingLost,
    Leak { side: &'static str, live: usize, before: usize },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Failure::Init(e) => write!(f, "endpoint setup: {e}"),
            Failure::Register(e) => write!(f, "handler registration: {e}"),
            Failure::CreateSession(e) => write!(f, "create_session: {e}"),
            Failure::ConnectFailed(e) => write!(f, "the session did not connect: {e}"),
            Failure::Reset(r) => write!(f, "the session was reset ({r:?})"),
            Failure::Enqueue { tag, kind } => write!(f, "RPC {tag}: enqueue_request refused it: {kind}"),
            Failure::Rpc { tag, error } => write!(f, "RPC {tag} failed: {error}"),
            Failure::BadRequest { len } => write!(f, "the server got a {len}-byte request, shorter than its header"),
            Failure::AskedLength { tag, expected, got } => {
                write!(f, "RPC {tag}: the request asks for a {got}-byte response, expected {expected}")
            }
            Failure::RequestLength { tag, expected, got } => {
                write!(f, "RPC {tag}: the server got {got} request bytes, expected {expected}")
            }
            Failure::RequestByte { tag, offset, expected, got } => write!(
                f,
                "RPC {tag}: request byte mismatch at offset {offset}: expected {expected:#04x}, got {got:#04x}"
            ),
            Failure::ResponseLength { tag, expected, got } => {
                write!(f, "RPC {tag}: the client got {got} response bytes, expected {expected}")
            }
            Failure::ResponseByte { tag, offset, expected, got } => write!(
                f,
                "RPC {tag}: response byte mismatch at offset {offset}: expected {expected:#04x}, got {got:#04x}"
            ),
            Failure::ServerOutOfMemory { tag, len } => {
                write!(f, "RPC {tag}: the server has no msgbuf memory for a {len}-byte response")
            }
            Failure::Respond { tag, kind } => write!(f, "RPC {tag}: enqueue_response refused it: {kind}"),
            Failure::Stuck { what, done, issued } => write!(
                f,
                "{what}: not done after {} s ({done} RPCs completed of {issued} issued)",
                PHASE_DEADLINE_NS / 1_000_000_000
            ),
            Failure::NothingLost => {
                f.write_str("the lossy phase lost no frame: the fault injection did not run, so it tested nothing")
            }
            Failure::Leak { side, live, before } => {
                write!(f, "the {side} holds {live} msgbufs after the test, {before} before: msgbufs leaked")
            }
        }
    }
}

/// What the self-test did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    pub rpcs: u64,
    pub lossy_rpcs: u64,
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub frames_lost: u64,
    pub retransmissions: u64,
    pub lossless_ns: u64,
    pub lossy_ns: u64,
}

/// Request and response sizes of RPC `tag`: all 64 combinations of eight sizes each, every 64
/// RPCs. `dpp` is the data bytes per packet.
#[derive(Clone, Copy, Debug)]
struct Plan {
    req: [usize; 8],
    resp: [usize; 8],
}

impl Plan {
    fn new(dpp: usize) -> Self {
        Plan {
            req: [REQ_HDR, 100, dpp - 1, dpp, dpp + 1, 3 * dpp + 7, 16_384, 65_536],
            resp: [1, 200, dpp - 1, dpp, dpp + 1, 2 * dpp + 3, 10_000, 65_536],
        }
    }
    fn req_len(&self, tag: u64) -> usize {
        self.req[(tag % 8) as usize]
    }
    fn resp_len(&self, tag: u64) -> usize {
        self.resp[((tag / 8 + tag) % 8) as usize]
    }
}

/// The bytes of a message: an xorshift64 stream seeded from its tag, so a byte out of place, a
/// packet misplaced or a message of another RPC shows.
fn stream(seed: u64) -> impl Iterator<Item = u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    core::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()
    })
    .flatten()
}

fn req_seed(tag: u64) -> u64 {
    tag ^ 0x5EED_0000_0000_0001
}
fn resp_seed(tag: u64) -> u64 {
    tag ^ 0x5EED_0000_0000_0002
}

fn fill(buf: &mut [u8], seed: u64) {
    buf.iter_mut().zip(stream(seed)).for_each(|(b, s)| *b = s);
}

/// The first byte of `buf` that differs from the stream: (offset, expected, got).
fn mismatch(buf: &[u8], seed: u64) -> Option<(usize, u8, u8)> {
    buf.iter().zip(stream(seed)).enumerate().find(|(_, (b, s))| *b != s).map(|(i, (&b, s))| (i, s, b))
}

// ----- server -----

struct ServerCtx {
    plan: Plan,
    /// Flip a byte of this RPC's response (the `fault=corrupt` boot option).
    corrupt: Option<u64>,
    failure: Option<Failure>,
}

impl ServerCtx {
    fn fail(&mut self, f: Failure) {
        self.failure.get_or_insert(f);
    }
}

/// Checks a request: its header names its tag and response length, its body is the tag's stream.
fn check_request(plan: &Plan, req: &[u8]) -> Result<(u64, usize), Failure> {
    if req.len() < REQ_HDR {
        return Err(Failure::BadRequest { len: req.len() });
    }
    let tag = u64::from_le_bytes(req[..8].try_into().expect("8 bytes"));
    let resp_len = u32::from_le_bytes(req[8..12].try_into().expect("4 bytes")) as usize;
    if req.len() != plan.req_len(tag) {
        return Err(Failure::RequestLength { tag, expected: plan.req_len(tag), got: req.len() });
    }
    if resp_len != plan.resp_len(tag) {
        return Err(Failure::AskedLength { tag, expected: plan.resp_len(tag), got: resp_len });
    }
    if let Some((off, expected, got)) = mismatch(&req[REQ_HDR..], req_seed(tag)) {
        return Err(Failure::RequestByte { tag, offset: REQ_HDR + off, expected, got });
    }
    Ok((tag, resp_len))
}

fn serve(rpc: &mut Server<'_>, h: ReqHandle) {
    let plan = rpc.ctx().plan;
    let checked = match rpc.request(&h) {
        Some(req) => check_request(&plan, req),
        None => return, // a stale handle: nothing to answer
    };
    // A bad request is still answered (with one byte), so the client sees the failure too.
    let (tag, len) = checked.unwrap_or_else(|f| {
        rpc.ctx_mut().fail(f);
        (u64::MAX, 1)
    });
    let mut resp = match rpc.alloc_msg_buffer(len) {
        Ok(b) => b,
        Err(_) => return rpc.ctx_mut().fail(Failure::ServerOutOfMemory { tag, len }),
    };
    fill(resp.data_mut(), resp_seed(tag));
    if rpc.ctx().corrupt == Some(tag) {
        resp.data_mut()[len / 2] ^= 0x01;
    }
    if let Err(e) = rpc.enqueue_response(h, resp) {
        rpc.ctx_mut().fail(Failure::Respond { tag, kind: e.kind });
        if let Some(b) = e.resp {
            let _ = rpc.free_msg_buffer(b);
        }
    }
}

// ----- client -----

struct ClientCtx {
    plan: Plan,
    issued: u64,
    done: u64,
    req_bytes: u64,
    resp_bytes: u64,
    failure: Option<Failure>,
    connected: bool,
    disconnected: bool,
}

impl ClientCtx {
    fn fail(&mut self, f: Failure) {
        self.failure.get_or_insert(f);
    }
}

fn completed(rpc: &mut Client<'_>, c: Completion) {
    let ctx = rpc.ctx_mut();
    ctx.done += 1;
    match c.result {
        Ok(len) => {
            let expected = ctx.plan.resp_len(c.tag);
            let data = &c.resp.data()[..len.min(c.resp.data().len())];
            if len != expected {
                ctx.fail(Failure::ResponseLength { tag: c.tag, expected, got: len });
            } else if let Some((offset, expected, got)) = mismatch(data, resp_seed(c.tag)) {
                ctx.fail(Failure::ResponseByte { tag: c.tag, offset, expected, got });
            } else {
                ctx.req_bytes += c.req.len() as u64;
                ctx.resp_bytes += len as u64;
            }
        }
        Err(error) => ctx.fail(Failure::Rpc { tag: c.tag, error }),
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

fn session_event(rpc: &mut Client<'_>, ev: SessionEvent) {
    let ctx = rpc.ctx_mut();
    match ev {
        SessionEvent::Connected(_) => ctx.connected = true,
        SessionEvent::ConnectFailed(_, e) => ctx.fail(Failure::ConnectFailed(e)),
        SessionEvent::Reset(_, r) => ctx.fail(Failure::Reset(r)),
        SessionEvent::Disconnected { .. } => ctx.disconnected = true,
    }
}

/// Issues RPCs until `WINDOW` are outstanding or `target` have been issued. Stops early (to retry
/// on the next round) when msgbuf memory is short: buffers come back as RPCs complete.
fn issue(rpc: &mut Client<'_>, s: erpc_dataplane::SessionId, target: u64) {
    while rpc.ctx().issued < target && rpc.ctx().issued - rpc.ctx().done < WINDOW {
        let tag = rpc.ctx().issued;
        let plan = rpc.ctx().plan;
        let Ok(mut req) = rpc.alloc_msg_buffer(plan.req_len(tag)) else { return };
        let Ok(resp) = rpc.alloc_msg_buffer(plan.resp_len(tag)) else {
            let _ = rpc.free_msg_buffer(req);
            return;
        };
        let d = req.data_mut();
        d[..8].copy_from_slice(&tag.to_le_bytes());
        d[8..12].copy_from_slice(&(plan.resp_len(tag) as u32).to_le_bytes());
        fill(&mut d[REQ_HDR..], req_seed(tag));
        match rpc.enqueue_request(s, REQ_CHECK, req, resp, completed, tag) {
            Ok(()) => rpc.ctx_mut().issued += 1,
            Err(e) => {
                rpc.ctx_mut().fail(Failure::Enqueue { tag, kind: e.kind });
                let _ = rpc.free_msg_buffer(e.req);
                let _ = rpc.free_msg_buffer(e.resp);
                return;
            }
        }
    }
}

/// Polls both endpoints until `until` holds, a failure is recorded, or the deadline passes.
fn poll(
    client: &mut Client<'_>,
    server: &mut Server<'_>,
    what: &'static str,
    mut step: impl FnMut(&mut Client<'_>),
    until: impl Fn(&Client<'_>, &Server<'_>) -> bool,
) -> Result<(), Failure> {
    let deadline = client.clock().now_ns() + PHASE_DEADLINE_NS;
    loop {
        if let Some(f) = client.ctx().failure.or(server.ctx().failure) {
            return Err(f);
        }
        if until(client, server) {
            return Ok(());
        }
        if client.clock().now_ns() > deadline {
            let c = client.ctx();
            return Err(Failure::Stuck { what, done: c.done, issued: c.issued });
        }
        step(client);
        client.run_event_loop_once();
        server.run_event_loop_once();
    }
}

/// Runs the self-test. `corrupt`: the server flips one byte of that RPC's response (to show that
/// the test fails when it should).
pub fn run(clock: TscClock, corrupt: Option<u64>) -> Result<Report, Failure> {
    let fabric = Fabric::new(clock, 0x5E1F_7E57);
    let sp = fabric.attach(SERVER_RX.take());
    let cp = fabric.attach(CLIENT_RX.take());
    let memory = |mem: &'static mut Region, sessions, backlog| RpcMemory {
        region: crate::dma::static_region(&mut mem.0[..]),
        sessions,
        backlog,
    };
    let cfg = RpcConfig { seed: crate::port::rdtsc(), ..RpcConfig::default() };
    let mut server = Rpc::new(
        fabric.nic(sp, 8),
        clock,
        // The plan needs the endpoint's packet size: set right below.
        ServerCtx { plan: Plan::new(64), corrupt, failure: None },
        memory(SERVER_MEM.take(), &mut SERVER_SESSIONS.take()[..], &mut SERVER_BACKLOG.take()[..]),
        cfg,
    )
    .map_err(Failure::Init)?;
    server.register_handler(REQ_CHECK, serve, HandlerMode::Foreground).map_err(Failure::Register)?;
    let plan = Plan::new(server.max_data_per_pkt());
    server.ctx_mut().plan = plan;
    let ctx = ClientCtx {
        plan,
        issued: 0,
        done: 0,
        req_bytes: 0,
        resp_bytes: 0,
        failure: None,
        connected: false,
        disconnected: false,
    };
    let mut client = Rpc::new(
        fabric.nic(cp, 8),
        clock,
        ctx,
        memory(CLIENT_MEM.take(), &mut CLIENT_SESSIONS.take()[..], &mut CLIENT_BACKLOG.take()[..]),
        cfg,
    )
    .map_err(Failure::Init)?;
    client.set_session_handler(session_event);
    let before = (client.heap_stats().live_buffers, server.heap_stats().live_buffers);

    let s = client.create_session(fabric.addr(sp)).map_err(Failure::CreateSession)?;
    poll(&mut client, &mut server, "connecting", |_| {}, |c, _| c.ctx().connected)?;
    log::info!(
        "selftest: client {} connected to server {} over the in-memory fabric",
        client.local_addr(),
        server.local_addr()
    );

    let t0 = clock.now_ns();
    let n1 = LOSSLESS_RPCS;
    poll(&mut client, &mut server, "lossless RPCs", |c| issue(c, s, n1), |c, _| c.ctx().done == n1)?;
    let t1 = clock.now_ns();
    let lossy = LinkParams { loss: LOSS, ..LinkParams::default() };
    fabric.set_link(cp, sp, lossy);
    fabric.set_link(sp, cp, lossy);
    let n2 = n1 + LOSSY_RPCS;
    poll(&mut client, &mut server, "lossy RPCs", |c| issue(c, s, n2), |c, _| c.ctx().done == n2)?;
    let t2 = clock.now_ns();
    fabric.set_all_links(LinkParams::default());
    let frames_lost = fabric.stats(sp).lost + fabric.stats(cp).lost;
    if frames_lost == 0 {
        return Err(Failure::NothingLost);
    }
    let retransmissions = client.stats().retransmissions + server.stats().retransmissions;

    client.destroy_session(s).map_err(Failure::CreateSession)?;
    poll(
        &mut client,
        &mut server,
        "disconnecting",
        |_| {},
        |c, s| c.ctx().disconnected && s.num_active_sessions() == 0,
    )?;
    for (side, live, before) in
        [("client", client.heap_stats().live_buffers, before.0), ("server", server.heap_stats().live_buffers, before.1)]
    {
        if live != before {
            return Err(Failure::Leak { side, live, before });
        }
    }
    let c = client.ctx();
    Ok(Report {
        rpcs: c.done,
        lossy_rpcs: LOSSY_RPCS,
        req_bytes: c.req_bytes,
        resp_bytes: c.resp_bytes,
        frames_lost,
        retransmissions,
        lossless_ns: t1 - t0,
        lossy_ns: t2 - t1,
    })
}
