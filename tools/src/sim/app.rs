//! What the simulated hosts run: clients that keep a window of requests outstanding on each of
//! their sessions, and servers that answer every request with a response of a fixed size.

use anyhow::Context;
use erpc_dataplane::clock::Clock;
use erpc_dataplane::msgbuf::footprint;
use erpc_dataplane::transport::Transport;
use erpc_dataplane::wire::PKT_HDR_LEN;
use erpc_dataplane::*;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;

/// Request type of the simulated service.
pub const REQ_TYPE: u8 = 1;

/// Application state of one simulated host.
#[derive(Debug, Default)]
pub struct App {
    pub req_size: usize,
    /// Response size (as a server).
    pub resp_size: usize,
    /// Client sessions.
    pub sessions: Vec<SessionId>,
    pub connected: usize,
    pub connect_failed: usize,
    /// Requests this client still has to issue (`u64::MAX`: without end).
    pub remaining: u64,
    pub completed: u64,
    pub failed: u64,
    /// Request bytes of completed RPCs.
    pub req_bytes: u64,
    /// Completion time of the latest RPC.
    pub last_done_ns: u64,
    /// Requests the server handled.
    pub handled: u64,
    /// Issue each next request on the next session in turn (instead of the one that completed).
    pub round_robin: bool,
    rr_next: usize,
}

fn on_session<T: Transport, C: Clock>(rpc: &mut Rpc<'_, T, C, App>, ev: SessionEvent) {
    let a = rpc.ctx_mut();
    match ev {
        SessionEvent::Connected(_) => a.connected += 1,
        SessionEvent::ConnectFailed(..) => a.connect_failed += 1,
        SessionEvent::Reset(..) | SessionEvent::Disconnected { .. } => {}
    }
}

fn serve<T: Transport, C: Clock>(rpc: &mut Rpc<'_, T, C, App>, h: ReqHandle) {
    let n = rpc.ctx().resp_size;
    rpc.ctx_mut().handled += 1;
    if n <= rpc.max_data_per_pkt() {
        let _ = rpc.respond_prealloc_with(h, |_, _| n);
    } else if let Ok(b) = rpc.alloc_msg_buffer(n) {
        let _ = rpc.enqueue_response(h, b);
    }
}

fn on_done<T: Transport, C: Clock>(rpc: &mut Rpc<'_, T, C, App>, c: Completion) {
    let now = rpc.now_ns();
    let a = rpc.ctx_mut();
    match c.result {
        Ok(_) => {
            a.completed += 1;
            a.req_bytes += c.req.len() as u64;
            a.last_done_ns = now;
        }
        Err(_) => a.failed += 1,
    }
    if a.remaining > 0 {
        a.remaining -= 1;
        let s = if a.round_robin {
            // No division per RPC: the harness's cost counts as the client's.
            a.rr_next = if a.rr_next + 1 >= a.sessions.len() { 0 } else { a.rr_next + 1 };
            a.sessions[a.rr_next]
        } else {
            c.session
        };
        if let Err(e) = rpc.enqueue_request(s, REQ_TYPE, c.req, c.resp, on_done, 0) {
            rpc.ctx_mut().failed += 1;
            let _ = rpc.free_msg_buffer(e.req);
            let _ = rpc.free_msg_buffer(e.resp);
        }
    } else {
        let _ = rpc.free_msg_buffer(c.req);
        let _ = rpc.free_msg_buffer(c.resp);
    }
}

/// Bytes of msgbuf memory one message of `size` bytes takes.
pub fn msg_footprint(size: usize, mtu: usize) -> usize {
    footprint(size, mtu - PKT_HDR_LEN).next_power_of_two()
}

/// Requests each endpoint can queue behind busy slots.
const BACKLOG: usize = 64;

/// A msgbuf region for `msgs` messages (size, count) and `sessions` sessions' response buffers;
/// with `huge`, on transparent huge pages where the kernel gives them (4 KiB pages otherwise).
pub fn region(cfg: &RpcConfig, msgs: &[(usize, usize)], sessions: usize, huge: bool) -> DmaRegion {
    let mut bytes = 4 << 20;
    for &(size, count) in msgs {
        bytes += 2 * count * msg_footprint(size.max(1), cfg.mtu);
    }
    // Each server session holds a one-packet response buffer.
    bytes += sessions * msg_footprint(cfg.mtu, cfg.mtu) * 2;
    // Never freed: msgbufs carry no lifetime and may outlive their endpoint (see `DmaRegion`).
    let mem = if huge { huge_zeroed(bytes) } else { vec![0u8; bytes].leak() };
    DmaRegion::from_static(mem, 0x1_0000_0000)
}

/// Endpoint memory on the heap: [`region`] and `sessions` sessions (client and server).
pub fn memory(cfg: &RpcConfig, msgs: &[(usize, usize)], sessions: usize) -> OwnedMemory {
    OwnedMemory::new(region(cfg, msgs, sessions, false), sessions, BACKLOG)
}

/// A fresh private anonymous mapping of `len` zeroed bytes, on transparent huge pages where the
/// kernel gives them (`madvise(MADV_HUGEPAGE)`), or `None`.
fn huge_mapping(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: mmap with a null hint and no file creates a new mapping and touches no memory of
    // ours; madvise only advises on that mapping.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        libc::madvise(p, len, libc::MADV_HUGEPAGE);
        NonNull::new(p.cast())
    }
}

/// `len` zeroed bytes for the rest of the process, on transparent huge pages where the kernel
/// gives them.
fn huge_zeroed(len: usize) -> &'static mut [u8] {
    match huge_mapping(len) {
        // SAFETY: a fresh mapping of `len` zeroed bytes, never unmapped: valid and unaliased for
        // the rest of the process.
        Some(p) => unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) },
        None => vec![0u8; len].leak(),
    }
}

/// Session and backlog storage of one endpoint with the sessions on transparent huge pages, as a
/// deployment would put them on hugepages (with thousands of sessions on 4 KiB pages, each
/// session's first access is a TLB miss too). The mapping is unmapped on drop, after the
/// endpoint built on [`HugeStorage::memory`] (which borrows it).
pub struct HugeStorage {
    sessions: Sessions,
    backlog: Box<[BacklogEntry]>,
}

enum Sessions {
    /// `len` initialised sessions in a mapping of our own.
    Mapped { p: NonNull<Session>, len: usize },
    /// On the heap, where the kernel refused the mapping.
    Heap(Box<[Session]>),
}

impl HugeStorage {
    /// Storage for `n` sessions.
    pub fn new(n: usize) -> Self {
        let backlog = BacklogEntry::storage(BACKLOG).into_boxed_slice();
        let Some(p) = huge_mapping(n * size_of::<Session>()) else {
            return HugeStorage { sessions: Sessions::Heap(Session::storage(n).into_boxed_slice()), backlog };
        };
        let p = p.cast::<Session>();
        assert!(p.align_offset(align_of::<Session>()) == 0, "mappings are page-aligned");
        for i in 0..n {
            // SAFETY: the mapping holds `n` sessions' bytes and is aligned for `Session`.
            unsafe { p.add(i).write(Session::EMPTY) };
        }
        HugeStorage { sessions: Sessions::Mapped { p, len: n }, backlog }
    }

    /// The endpoint's memory: this storage and `region`.
    pub fn memory(&mut self, region: DmaRegion) -> RpcMemory<'_> {
        let sessions = match &mut self.sessions {
            // SAFETY: `len` initialised sessions in our mapping; the borrow of `self` keeps them
            // from being reached any other way, or unmapped, while the endpoint holds them.
            Sessions::Mapped { p, len } => unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), *len) },
            Sessions::Heap(b) => b,
        };
        RpcMemory { region, sessions, backlog: &mut self.backlog }
    }
}

impl Drop for HugeStorage {
    fn drop(&mut self) {
        if let Sessions::Mapped { p, len } = self.sessions {
            // SAFETY: no endpoint borrows the sessions any more; they are dropped in place, then
            // the mapping `new` made for them is unmapped.
            unsafe {
                std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(p.as_ptr(), len));
                libc::munmap(p.as_ptr().cast(), len * size_of::<Session>());
            }
        }
    }
}

/// Builds a host's endpoint on `mem` with the simulated service registered.
pub fn endpoint<'m, T: Transport, C: Clock>(
    nic: T,
    clock: C,
    cfg: RpcConfig,
    mem: impl Into<EndpointMemory<'m>>,
) -> anyhow::Result<Rpc<'m, T, C, App>> {
    let mut rpc = Rpc::new(nic, clock, App::default(), mem, cfg).with_context(|| "building an endpoint")?;
    rpc.register_handler(REQ_TYPE, serve, HandlerMode::Foreground)
        .with_context(|| "registering the request handler")?;
    rpc.set_session_handler(on_session);
    Ok(rpc)
}

/// Issues `window` requests on each of the client's sessions (fewer if `remaining` runs out);
/// completions issue the next ones until `remaining` is spent.
pub fn start<T: Transport, C: Clock>(rpc: &mut Rpc<'_, T, C, App>, window: usize) -> anyhow::Result<()> {
    let sessions = rpc.ctx().sessions.clone();
    issue(rpc, (0..window).flat_map(|_| sessions.iter().copied()))
}

/// Issues `n` requests over the client's sessions in turn; each completion issues the next
/// request on the next session, until `remaining` is spent.
pub fn start_round_robin<T: Transport, C: Clock>(rpc: &mut Rpc<'_, T, C, App>, n: usize) -> anyhow::Result<()> {
    let sessions = rpc.ctx().sessions.clone();
    let a = rpc.ctx_mut();
    a.round_robin = true;
    a.rr_next = (n + sessions.len() - 1) % sessions.len();
    issue(rpc, sessions.iter().copied().cycle().take(n))
}

fn issue<T: Transport, C: Clock>(
    rpc: &mut Rpc<'_, T, C, App>,
    sessions: impl Iterator<Item = SessionId>,
) -> anyhow::Result<()> {
    let (req, resp) = (rpc.ctx().req_size, rpc.ctx().resp_size);
    {
        for s in sessions {
            if rpc.ctx().remaining == 0 {
                return Ok(());
            }
            rpc.ctx_mut().remaining -= 1;
            let q = rpc.alloc_msg_buffer(req).context("allocating a request buffer")?;
            let r = rpc.alloc_msg_buffer(resp).context("allocating a response buffer")?;
            rpc.enqueue_request(s, REQ_TYPE, q, r, on_done, 0).map_err(|e| e.kind).context("sending a request")?;
        }
    }
    Ok(())
}
