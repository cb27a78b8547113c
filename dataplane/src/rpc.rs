//! The RPC endpoint (the original's `Rpc`): one per thread, owning one transport.
//!
//! The protocol is split by concern: [`crate::client`] (sending requests, credits, RFRs,
//! completion), [`crate::server`] (receiving requests, handlers, responses, at-most-once),
//! [`crate::reliability`] (retransmission timeout, Go-Back-N, session reset) and
//! [`crate::sm`] (session management over the datapath). This file holds the endpoint's state,
//! its public API and the event loop.

use crate::clock::Clock;
use crate::config::{RpcConfig, MAX_MSG_SIZE, RX_BATCH, SLOTS_PER_SESSION, TX_BATCH};
use crate::msgbuf::{num_pkts, AllocError, HeapStats, MsgBuf, MsgBufHeap};
use crate::session::{BacklogEntry, Role, Session, SessionId, SessionState, NIL};
use crate::stats::{DropReason, RpcStats, SessionStats};
use crate::transport::{EndpointAddr, RxPacket, Segment, Transport, TxPacket};
use crate::wire::{
    ErpcHdr, PktHdr, PktType, RoutingInfo, ERPC_HDR_LEN, HEADROOM, MAX_MSG_SIZE_FIELD, MAX_PKT_NUM, PKT_HDR_LEN,
};
use crate::worker::{BgJob, BgQueues};
use core::ptr::NonNull;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use zerocopy::{FromBytes, IntoBytes};

/// Bytes of one control-packet slot (credit returns, RFRs, session management).
pub(crate) const CTRL_SLOT: usize = 128;
/// Sessions looked at per idle-scan step (keepalives and idle timeouts).
const IDLE_SCAN_STEP: usize = 32;
/// Response buffers that may wait for the device before they are freed.
const DEFERRED_MAX: usize = 64;
/// One-packet request buffers a server endpoint keeps for reuse (see `Rpc::req_pool`).
const REQ_POOL: usize = 16;
/// Distinct continuation functions one endpoint can use.
pub const MAX_CONTINUATIONS: usize = 64;

/// A request handler. It reads the request with [`Rpc::request`] and answers, now or later, with
/// [`Rpc::enqueue_response`] or [`Rpc::enqueue_response_prealloc`]; it may issue RPCs first.
pub type ReqHandler<'m, T, C, X> = fn(&mut Rpc<'m, T, C, X>, ReqHandle);
/// A continuation: runs on the endpoint's thread when an RPC completes or fails.
pub type Continuation<'m, T, C, X> = fn(&mut Rpc<'m, T, C, X>, Completion);
/// Receives session events (connected, connect failed, disconnected, reset).
pub type SessionHandler<'m, T, C, X> = fn(&mut Rpc<'m, T, C, X>, SessionEvent);

/// Where a request type's handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerMode {
    /// On the dispatch thread, inside the event loop (short handlers: a few microseconds).
    Foreground,
    /// On a worker thread: the request is handed over through the endpoint's [`BgQueues`] with a
    /// response buffer of `max_resp_size` bytes, and the response comes back to the dispatch thread.
    Background { max_resp_size: usize },
}

pub(crate) struct HandlerEntry<'m, T: Transport, C: Clock, X> {
    pub(crate) f: Option<ReqHandler<'m, T, C, X>>,
    pub(crate) mode: HandlerMode,
}

// Manual impls: a derive would require T, C, X: Copy, but only the fn pointer is copied.
impl<T: Transport, C: Clock, X> Clone for HandlerEntry<'_, T, C, X> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Transport, C: Clock, X> Copy for HandlerEntry<'_, T, C, X> {}

/// Identifies a request being handled on a server session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReqHandle {
    pub(crate) session: u16,
    pub(crate) slot: u8,
    pub(crate) req_type: u8,
    pub(crate) generation: u32,
    pub(crate) req_num: u64,
}

impl ReqHandle {
    pub fn session(&self) -> SessionId {
        SessionId(self.session)
    }
    pub fn req_type(&self) -> u8 {
        self.req_type
    }
}

/// Why an RPC failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// The session was reset: its peer stopped answering for `session_timeout_ns`.
    SessionReset,
    /// The response is larger than the response buffer given to `enqueue_request`.
    ResponseTooLarge { size: usize, capacity: usize },
}

/// What a continuation receives: the caller's tag and buffers back, and the result.
#[derive(Debug)]
pub struct Completion {
    pub session: SessionId,
    pub tag: u64,
    /// `Ok(response length)`, or why the RPC failed.
    pub result: Result<usize, RpcError>,
    pub req: MsgBuf,
    pub resp: MsgBuf,
}

/// Why `enqueue_request` refused a request. The buffers come back in [`EnqueueError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnqueueErrorKind {
    /// No such session, or not a client session.
    InvalidSession,
    /// The session is not connected (connecting, disconnecting, reset or failed).
    NotConnected,
    /// All eight slots are busy and the backlog (its size is the caller's) is full.
    BacklogFull,
    /// Request larger than the endpoint's maximum message size, or request and response
    /// buffer together need more than 16383 packets.
    TooLarge,
    /// More than [`MAX_CONTINUATIONS`] distinct continuation functions.
    TooManyContinuations,
    /// A msgbuf allocated by another endpoint (the device cannot reach it).
    ForeignBuffer,
}

/// A refused request, with its buffers.
#[derive(Debug)]
pub struct EnqueueError {
    pub kind: EnqueueErrorKind,
    pub req: MsgBuf,
    pub resp: MsgBuf,
}

/// Why `enqueue_response` refused a response. The buffer comes back in [`RespondError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespondErrorKind {
    /// The handle is stale: its session was disconnected or it was answered already.
    InvalidHandle,
    /// Beyond the maximum message size or the 16383-packet bound, or (prealloc) beyond one packet.
    TooLarge,
    /// A msgbuf allocated by another endpoint (the device cannot reach it).
    ForeignBuffer,
}

#[derive(Debug)]
pub struct RespondError {
    pub kind: RespondErrorKind,
    /// The response buffer (None for `enqueue_response_prealloc`).
    pub resp: Option<MsgBuf>,
}

/// Why a session call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Every session slot of this endpoint is in use.
    OutOfSessions,
    /// The transport cannot route to that address.
    Unroutable,
    /// No such session, or not a client session.
    InvalidSession,
    /// Requests are pending on the session.
    Busy,
    /// The session is not connected (still connecting, or already disconnecting).
    NotConnected,
}

/// Why a connect attempt failed (reported by the server, or locally).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmError {
    /// No answer after `sm_max_attempts` tries: no endpoint at that address, or unreachable.
    RemoteUnreachable,
    /// The server has no free session.
    OutOfSessions,
    /// The server has no memory for the session's buffers.
    OutOfMemory,
    /// The server cannot route back to us.
    RoutingFailed,
}

/// Why a session was reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Nothing heard from the peer for `session_timeout_ns` (with requests pending, or
    /// keepalive pings unanswered).
    PeerTimeout,
    /// The server answered a keepalive saying it no longer has the session (it restarted, or
    /// freed the session as idle).
    PeerLostSession,
}

/// A session event, delivered to the handler set with [`Rpc::set_session_handler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    Connected(SessionId),
    ConnectFailed(SessionId, SmError),
    /// `clean` is false when the server never confirmed the disconnect.
    Disconnected {
        session: SessionId,
        clean: bool,
    },
    /// Every pending continuation has run with [`RpcError::SessionReset`]; the session is gone.
    Reset(SessionId, ResetReason),
}

/// Why a handler registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// A background handler needs worker queues: call `attach_workers` first.
    NoWorkers,
}

/// Why an endpoint could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The DMA region cannot hold the allocator's metadata and the control-packet ring.
    RegionTooSmall,
    /// Session storage is empty or has more than 65535 entries.
    BadSessionCount,
    /// The transport's (or configured) MTU is too small for headers plus data.
    MtuTooSmall,
    /// A configuration value is out of range: credits 1..=1024, max message size, or keepalive
    /// timing (`session_timeout >= keepalive / 2`, `server_idle_timeout >= 2 * keepalive +
    /// session_timeout + rto`).
    BadConfig,
}

/// Memory the caller provides; nothing else is allocated.
pub struct RpcMemory<'m> {
    /// DMA-capable memory for msgbufs and control packets.
    pub region: crate::dma::DmaRegion,
    /// Session storage: its length is the endpoint's session capacity (client and server).
    pub sessions: &'m mut [Session],
    /// Storage for requests queued behind busy slots: its length bounds the backlog.
    pub backlog: &'m mut [BacklogEntry],
}

/// An intrusive doubly linked list of slots, by global slot index (`session * 8 + slot`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotList {
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl SlotList {
    pub(crate) const EMPTY: SlotList = SlotList { head: NIL, tail: NIL };
}

/// One eRPC endpoint. See the crate documentation for the threading model.
pub struct Rpc<'m, T: Transport, C: Clock, X = ()> {
    pub(crate) transport: T,
    pub(crate) clock: C,
    ctx: X,
    pub(crate) cfg: RpcConfig,
    pub(crate) heap: MsgBufHeap,
    pub(crate) dpp: usize,
    pub(crate) local: EndpointAddr,
    pub(crate) sessions: &'m mut [Session],
    pub(crate) free_head: u32,
    pub(crate) free_tail: u32,
    pub(crate) backlog: &'m mut [BacklogEntry],
    pub(crate) backlog_free: u32,
    pub(crate) handlers: [HandlerEntry<'m, T, C, X>; 256],
    pub(crate) conts: heapless::Vec<Continuation<'m, T, C, X>, MAX_CONTINUATIONS>,
    pub(crate) session_handler: Option<SessionHandler<'m, T, C, X>>,
    pub(crate) tx_batch: heapless::Vec<TxPacket, TX_BATCH>,
    /// Descriptors of the frames lent by the last `rx_burst` (kept here: no per-iteration init).
    rx_pkts: [RxPacket; RX_BATCH],
    ctrl_base: NonNull<u8>,
    ctrl_mask: u32,
    ctrl_next: u32,
    pub(crate) active: SlotList,
    pub(crate) bg_pending: SlotList,
    pub(crate) bg: Option<&'m BgQueues>,
    pub(crate) now: u64,
    pub(crate) next_scan_ns: u64,
    pub(crate) sm_pending: u32,
    next_idle_scan_ns: u64,
    pub(crate) idle_cursor: usize,
    pub(crate) next_sm_ns: u64,
    pub(crate) in_loop: bool,
    pub(crate) wheel: crate::cc::wheel::TimingWheel,
    iteration: u32,
    /// Packets the transport has accepted.
    pub(crate) tx_accepted: u64,
    /// `tx_accepted` at the last `tx_flush`.
    tx_flushed: u64,
    /// `transport.tx_reclaimed()` when the endpoint took the transport over.
    tx_reclaim_base: u64,
    max_in_flight: u64,
    /// Transmitted buffers waiting until the device has read them, with the sequence number of
    /// their last packet.
    deferred: heapless::Deque<(MsgBuf, u64), DEFERRED_MAX>,
    /// One-packet request buffers for reuse, shared by all server sessions: a request answered
    /// from its handler hands its buffer to the next one, which finds it in the cache (a buffer
    /// per slot would be a cold line per request with thousands of sessions).
    pub(crate) req_pool: heapless::Vec<MsgBuf, REQ_POOL>,
    pub(crate) rng: Xoshiro256PlusPlus,
    pub(crate) stats: RpcStats,
}

impl<'m, T: Transport, C: Clock, X> Rpc<'m, T, C, X> {
    /// Builds an endpoint over `transport` from the caller's memory.
    pub fn new(transport: T, clock: C, ctx: X, mem: RpcMemory<'m>, cfg: RpcConfig) -> Result<Self, InitError> {
        let mtu = cfg.mtu.min(transport.mtu());
        if mtu < PKT_HDR_LEN + 64 {
            return Err(InitError::MtuTooSmall);
        }
        if cfg.session_credits == 0
            || cfg.session_credits > 1024
            || cfg.max_msg_size == 0
            || cfg.keepalive_ns == 0
            || cfg.session_timeout_ns < cfg.keepalive_ns / 2
            || cfg.server_idle_timeout_ns
                < (2 * cfg.keepalive_ns).saturating_add(cfg.session_timeout_ns).saturating_add(cfg.rto_ns)
        {
            return Err(InitError::BadConfig);
        }
        if mem.sessions.is_empty() || mem.sessions.len() > u16::MAX as usize {
            return Err(InitError::BadSessionCount);
        }
        let dpp = mtu - PKT_HDR_LEN;
        let max_msg = cfg.max_msg_size.min(MAX_MSG_SIZE).min(MAX_MSG_SIZE_FIELD).min(MAX_PKT_NUM * dpp);
        let mut heap = MsgBufHeap::new(mem.region, dpp, max_msg).ok_or(InitError::RegionTooSmall)?;
        let nctrl = (transport.max_tx_in_flight() + TX_BATCH + 1).next_power_of_two();
        let ctrl_base = heap.alloc_raw(nctrl * CTRL_SLOT).ok_or(InitError::RegionTooSmall)?;
        let local = transport.local_addr();
        let storage_addr = mem.sessions.as_ptr() as usize;
        let n = mem.sessions.len();
        for (i, s) in mem.sessions.iter_mut().enumerate() {
            *s = Session::EMPTY;
            s.free_next = if i + 1 < n { i as u32 + 1 } else { NIL };
        }
        let nb = mem.backlog.len();
        for (i, b) in mem.backlog.iter_mut().enumerate() {
            *b = BacklogEntry::EMPTY;
            b.next = if i + 1 < nb { i as u32 + 1 } else { NIL };
        }
        let now = clock.now_ns();
        let tx_reclaim_base = transport.tx_reclaimed();
        let max_in_flight = transport.max_tx_in_flight() as u64;
        Ok(Rpc {
            transport,
            clock,
            ctx,
            cfg: RpcConfig { max_msg_size: max_msg, mtu, ..cfg },
            heap,
            dpp,
            local,
            sessions: mem.sessions,
            free_head: 0,
            free_tail: n as u32 - 1,
            backlog: mem.backlog,
            backlog_free: if nb > 0 { 0 } else { NIL },
            handlers: [HandlerEntry { f: None, mode: HandlerMode::Foreground }; 256],
            conts: heapless::Vec::new(),
            session_handler: None,
            tx_batch: heapless::Vec::new(),
            rx_pkts: [RxPacket::EMPTY; RX_BATCH],
            ctrl_base,
            ctrl_mask: nctrl as u32 - 1,
            ctrl_next: 0,
            active: SlotList::EMPTY,
            bg_pending: SlotList::EMPTY,
            bg: None,
            now,
            next_scan_ns: now + cfg.rto_ns / 10,
            sm_pending: 0,
            next_idle_scan_ns: now,
            idle_cursor: 0,
            next_sm_ns: now,
            in_loop: false,
            wheel: crate::cc::wheel::TimingWheel::new(now),
            iteration: 0,
            tx_accepted: 0,
            tx_flushed: 0,
            tx_reclaim_base,
            max_in_flight,
            deferred: heapless::Deque::new(),
            req_pool: heapless::Vec::new(),
            // Tokens must differ across restarts of the same endpoint: besides the configured
            // seed, mix in the clock and where the caller's storage lives.
            rng: Xoshiro256PlusPlus::seed_from_u64(
                cfg.seed
                    ^ now.rotate_left(17)
                    ^ (storage_addr as u64).rotate_left(41)
                    ^ u64::from_le_bytes([
                        local.ipv4[0],
                        local.ipv4[1],
                        local.ipv4[2],
                        local.ipv4[3],
                        local.udp_port as u8,
                        (local.udp_port >> 8) as u8,
                        local.mac[4],
                        local.mac[5],
                    ]),
            ),
            stats: RpcStats::default(),
        })
    }

    // ----- registration -----

    /// Registers the handler for `req_type`. For [`HandlerMode::Background`], `f` is not called
    /// (the worker pool's handler runs instead) and [`Rpc::attach_workers`] must come first.
    ///
    /// Refused ([`RegisterError::NoWorkers`]) for a background handler before
    /// [`Rpc::attach_workers`]: its requests would never be answered.
    pub fn register_handler(
        &mut self,
        req_type: u8,
        f: ReqHandler<'m, T, C, X>,
        mode: HandlerMode,
    ) -> Result<(), RegisterError> {
        if matches!(mode, HandlerMode::Background { .. }) && self.bg.is_none() {
            return Err(RegisterError::NoWorkers);
        }
        self.handlers[req_type as usize] = HandlerEntry { f: Some(f), mode };
        Ok(())
    }

    /// Connects the endpoint to worker queues for background handlers.
    pub fn attach_workers(&mut self, queues: &'m BgQueues) {
        self.bg = Some(queues);
    }

    pub fn set_session_handler(&mut self, f: SessionHandler<'m, T, C, X>) {
        self.session_handler = Some(f);
    }

    // ----- accessors -----

    pub fn ctx(&self) -> &X {
        &self.ctx
    }
    pub fn ctx_mut(&mut self) -> &mut X {
        &mut self.ctx
    }
    pub fn transport(&self) -> &T {
        &self.transport
    }
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }
    pub fn clock(&self) -> &C {
        &self.clock
    }
    pub fn config(&self) -> &RpcConfig {
        &self.cfg
    }
    pub fn local_addr(&self) -> EndpointAddr {
        self.local
    }
    pub fn max_msg_size(&self) -> usize {
        self.cfg.max_msg_size
    }
    pub fn max_data_per_pkt(&self) -> usize {
        self.dpp
    }
    pub fn max_sessions(&self) -> usize {
        self.sessions.len()
    }
    pub fn stats(&self) -> &RpcStats {
        &self.stats
    }
    /// The msgbuf allocator's statistics. Request buffers the endpoint keeps for reuse (its
    /// pool of one-packet request buffers) count as free: they belong to no request.
    pub fn heap_stats(&self) -> HeapStats {
        let mut st = self.heap.stats();
        for b in &self.req_pool {
            st.live_buffers -= 1;
            st.free += self.heap.block_bytes(b);
        }
        st
    }
    /// Sets the credits given to sessions created from now on (1..=1024).
    pub fn set_session_credits(&mut self, credits: u16) -> bool {
        if credits == 0 || credits > 1024 {
            return false;
        }
        self.cfg.session_credits = credits;
        true
    }
    pub fn session(&self, s: SessionId) -> Option<&Session> {
        self.sessions.get(s.0 as usize)
    }
    pub fn session_state(&self, s: SessionId) -> SessionState {
        self.session(s).map_or(SessionState::Free, |x| x.state)
    }
    pub fn is_connected(&self, s: SessionId) -> bool {
        self.session_state(s) == SessionState::Connected
    }
    pub fn session_stats(&self, s: SessionId) -> Option<SessionStats> {
        self.session(s).map(|x| x.stats)
    }
    /// Sessions in use (any state but free).
    pub fn num_active_sessions(&self) -> usize {
        self.sessions.iter().filter(|s| s.state != SessionState::Free).count()
    }

    // ----- msgbufs -----

    /// Allocates a msgbuf for messages of up to `max_data` bytes.
    pub fn alloc_msg_buffer(&mut self, max_data: usize) -> Result<MsgBuf, AllocError> {
        match self.heap.alloc(max_data) {
            Err(AllocError::OutOfMemory { .. }) if !self.deferred.is_empty() => {
                // Transmitted buffers are waiting for the device: make it catch up, then retry.
                self.drain_tx_and_dma();
                self.heap.alloc(max_data)
            }
            r => r,
        }
    }

    /// Whether `buf` was allocated by this endpoint (only those can be sent: the device knows
    /// only this endpoint's region).
    #[inline]
    pub fn owns_msgbuf(&self, buf: &MsgBuf) -> bool {
        // Regions never overlap, so a block that starts inside ours is ours (and a msgbuf's
        // block always lies wholly inside the heap that allocated it).
        self.heap.owns(buf.block_ptr(), 1)
    }

    /// Returns a msgbuf to the allocator (a buffer of another endpoint is handed back).
    pub fn free_msg_buffer(&mut self, buf: MsgBuf) -> Result<(), MsgBuf> {
        self.heap.free(buf)
    }

    // ----- event loop -----

    /// Runs one iteration: receive and dispatch a burst, hand finished background work back, send
    /// what is queued, and every `rto/10` scan for lost packets. Does nothing if called from a
    /// handler or continuation (re-entrantly).
    pub fn run_event_loop_once(&mut self) {
        if self.in_loop {
            return;
        }
        self.in_loop = true;
        self.iteration = self.iteration.wrapping_add(1);
        if self.iteration % 8 == 0 {
            // Idle iterations read the clock only now and then; timers still fire within a few
            // iterations. An iteration that receives packets reads it (see `process_rx`).
            self.now = self.clock.now_ns();
        }
        self.process_rx();
        if self.bg.is_some() {
            self.process_bg();
        }
        if !self.wheel.is_empty() {
            self.reap_wheel();
        }
        self.flush_tx();
        if self.now >= self.next_scan_ns {
            self.next_scan_ns = self.now + self.cfg.rto_ns / 10;
            self.loss_scan();
        }
        if !self.deferred.is_empty() {
            self.free_deferred();
        }
        if self.now >= self.next_idle_scan_ns {
            // Sweep all sessions once per keepalive/4, IDLE_SCAN_STEP sessions at a time.
            let steps = (self.sessions.len() as u64).div_ceil(IDLE_SCAN_STEP as u64);
            self.next_idle_scan_ns = self.now + (self.cfg.keepalive_ns / 4 / steps).max(1);
            self.idle_scan(IDLE_SCAN_STEP);
        }
        if self.sm_pending > 0 && self.now >= self.next_sm_ns {
            self.next_sm_ns = self.now + self.cfg.sm_retry_ns / 4;
            self.sm_retry_scan();
        }
        self.flush_tx();
        self.in_loop = false;
    }

    /// For event-driven hosts (a discrete-event simulator, an appliance that sleeps between
    /// packets): reads the clock, runs one iteration, and returns the clock time at which
    /// [`Rpc::next_timer_ns`] says the endpoint next has timed work. Call it again when a packet
    /// arrives, when the transport has room for packets it refused, or at that time, whichever
    /// comes first.
    pub fn run_event_loop_timed(&mut self) -> u64 {
        if self.in_loop {
            return self.next_timer_ns();
        }
        self.now = self.clock.now_ns();
        self.run_event_loop_once();
        self.next_timer_ns()
    }

    /// The earliest clock time at which the event loop has work that no packet arrival triggers:
    /// a paced packet leaving the timing wheel, the loss scan (every `rto/10`), the keepalive and
    /// idle-session sweep, or a connect/disconnect retry. Transmissions the transport refused are
    /// retried on the next iteration, which the host should run once the transport has room.
    pub fn next_timer_ns(&self) -> u64 {
        let mut t = self.next_scan_ns.min(self.next_idle_scan_ns);
        if self.sm_pending > 0 {
            t = t.min(self.next_sm_ns);
        }
        if let Some(w) = self.wheel.next_due_ns() {
            t = t.min(w);
        }
        t
    }

    /// Runs the event loop for `ns` nanoseconds of the endpoint's clock.
    pub fn run_event_loop(&mut self, ns: u64) {
        let end = self.clock.now_ns() + ns;
        while self.clock.now_ns() < end {
            self.run_event_loop_once();
        }
    }

    fn process_rx(&mut self) {
        let n = self.transport.rx_burst(&mut self.rx_pkts);
        if n == 0 {
            return;
        }
        // One timestamp per RX batch, as in the original.
        self.now = self.clock.now_ns();
        if n > 1 {
            self.warm_sessions(n);
        }
        for k in 0..n {
            let p = self.rx_pkts[k];
            self.process_pkt(&p);
        }
        self.transport.rx_release(&self.rx_pkts[..n]);
    }

    /// Prefetches what each frame of the burst will touch, before processing any: its session's
    /// and slot's first two cache lines, the frame's payload, and the buffer the payload goes to
    /// (client: the response buffer) or the response is written to (server: the slot's cached
    /// or stored response buffer). With thousands of sessions these are cache misses; issued
    /// together, without waiting, they overlap instead of stalling the processing one after
    /// another.
    #[inline(never)]
    fn warm_sessions(&self, n: usize) {
        let mut at = [(u32::MAX, 0u8); RX_BATCH];
        for (p, at) in self.rx_pkts[..n].iter().zip(at.iter_mut()) {
            if (p.len as usize) < PKT_HDR_LEN {
                continue;
            }
            // SAFETY: the transport lent `p.len >= PKT_HDR_LEN` readable bytes at `p.data` until
            // `rx_release` (as in `process_pkt`); read by value through a raw pointer.
            let raw: [u8; ERPC_HDR_LEN] =
                unsafe { core::ptr::read_unaligned(p.data.as_ptr().add(HEADROOM) as *const [u8; ERPC_HDR_LEN]) };
            let h = ErpcHdr::read_from_bytes(&raw).expect("14 bytes").decode();
            let i = (h.req_num % SLOTS_PER_SESSION as u64) as usize;
            if let Some(sess) = self.sessions.get(h.dest_session_num as usize) {
                *at = (h.dest_session_num as u32, i as u8);
                prefetch2(sess as *const Session as *const u8);
                prefetch2(&sess.slots[i] as *const crate::session::Slot as *const u8);
                if p.len as usize > 64 {
                    // The payload's second line (the first was read above).
                    prefetch(p.data.as_ptr().wrapping_add(64));
                }
            }
        }
        for &(s, i) in &at[..n] {
            if s == u32::MAX {
                continue;
            }
            let sess = &self.sessions[s as usize];
            let sl = &sess.slots[i as usize];
            let buf = match sess.role {
                Role::Client => sl.resp.as_ref(),
                // The stored response is recycled for the next one if the device has read it.
                Role::Server => sl.pre_resp.as_ref().or(sl.resp.as_ref()),
            };
            if let Some(b) = buf {
                prefetch2(b.block_ptr());
            }
        }
    }

    /// Validates one frame and dispatches it by session role and packet type.
    fn process_pkt(&mut self, p: &RxPacket) {
        self.stats.rx_pkts += 1;
        if (p.len as usize) < PKT_HDR_LEN {
            return self.drop_pkt(None, DropReason::Truncated);
        }
        // SAFETY: the transport lent `p.len >= PKT_HDR_LEN` readable bytes at `p.data` until
        // `rx_release`; the device does not write them meanwhile. Read through a raw pointer
        // into a local copy: the buffer is device-writable memory, never behind a reference.
        let raw: [u8; PKT_HDR_LEN] = unsafe { core::ptr::read_unaligned(p.data.as_ptr() as *const [u8; PKT_HDR_LEN]) };
        let hdr = PktHdr::read_from_bytes(&raw).expect("56 bytes");
        if hdr.eth.ethertype.get() != crate::wire::ETHERTYPE_IPV4 || hdr.ipv4.protocol != crate::wire::IPPROTO_UDP {
            return self.drop_pkt(None, DropReason::NotUdp);
        }
        let h = hdr.erpc.decode();
        if h.magic != crate::wire::MAGIC {
            return self.drop_pkt(None, DropReason::BadMagic);
        }
        if h.dest_session_num == crate::wire::SM_SESSION_NUM {
            return self.process_sm(p, &raw, &h);
        }
        let s = h.dest_session_num as usize;
        let Some(sess) = self.sessions.get(s) else {
            return self.drop_pkt(None, DropReason::UnknownSession);
        };
        if sess.state != SessionState::Connected {
            return self.drop_pkt(None, DropReason::UnknownSession);
        }
        if raw[26..30] != sess.peer.ipv4 || raw[34..36] != sess.peer.udp_port.to_be_bytes() {
            return self.drop_pkt(Some(s), DropReason::WrongSource);
        }
        if h.msg_size as usize > self.cfg.max_msg_size {
            return self.drop_pkt(Some(s), DropReason::BadMsgSize);
        }
        match (sess.role, h.pkt_type) {
            (Role::Client, PktType::ExplCr | PktType::Resp) => self.client_rx(s, &h, p),
            (Role::Server, PktType::Req | PktType::Rfr) => self.server_rx(s, &h, p),
            _ => self.drop_pkt(Some(s), DropReason::WrongType),
        }
    }

    #[inline]
    pub(crate) fn drop_pkt(&mut self, s: Option<usize>, r: DropReason) {
        self.stats.drops.count(r);
        if let Some(s) = s {
            self.sessions[s].stats.drops += 1;
        }
    }

    /// Copies `len` payload bytes of a lent frame into `buf` at `off`.
    pub(crate) fn copy_payload(p: &RxPacket, buf: &mut MsgBuf, off: usize, len: usize) {
        debug_assert!(PKT_HDR_LEN + len <= p.len as usize && off + len <= buf.len());
        // SAFETY: the caller checked that the frame holds `PKT_HDR_LEN + len` bytes and that the
        // msgbuf holds `off + len`; the two do not overlap (device RX memory vs. a msgbuf).
        unsafe { core::ptr::copy_nonoverlapping(p.data.as_ptr().add(PKT_HDR_LEN), buf.data_ptr().add(off), len) }
    }

    // ----- transmission -----

    /// Queues a frame for transmission, handing a full batch to the transport.
    #[inline]
    pub(crate) fn push_tx(&mut self, pkt: TxPacket, s: usize) {
        self.sessions[s].stats.tx_pkts += 1;
        if self.tx_batch.push(pkt).is_err() {
            self.flush_tx();
            let _ = self.tx_batch.push(pkt);
        }
    }

    /// Hands the TX batch to the transport.
    pub(crate) fn flush_tx(&mut self) {
        if self.tx_batch.is_empty() {
            return;
        }
        let mut sent = 0;
        let mut tries = 0;
        while sent < self.tx_batch.len() {
            let n = self.transport.tx_burst(&self.tx_batch[sent..]);
            sent += n;
            if n == 0 {
                tries += 1;
                if tries == 100 {
                    // The device's ring is full: wait for it to drain. Besides making room, this
                    // is what lets control-packet slots be reused even if frames are dropped below.
                    self.transport.tx_flush();
                    self.stats.tx_flushes += 1;
                }
                if tries > 1000 {
                    // The transport is stuck; what is left counts as lost and will be retransmitted.
                    for _ in sent..self.tx_batch.len() {
                        self.stats.drops.count(DropReason::TxRingFull);
                    }
                    break;
                }
            }
        }
        self.stats.tx_pkts += sent as u64;
        self.tx_accepted += sent as u64;
        self.tx_batch.clear();
    }

    /// Sends everything queued and waits until the device has read it (`drain_tx_batch_and_dma_queue`).
    pub(crate) fn drain_tx_and_dma(&mut self) {
        self.flush_tx();
        self.transport.tx_flush();
        self.stats.tx_flushes += 1;
        self.tx_flushed = self.tx_accepted;
        self.free_deferred();
    }

    /// An upper bound of the acceptance sequence number of the next packet pushed to the batch.
    #[inline]
    pub(crate) fn next_tx_seq(&self) -> u64 {
        self.tx_accepted + self.tx_batch.len() as u64
    }

    /// Whether the device has certainly read the packet with acceptance sequence number `seq`:
    /// a `tx_flush` came after it, the transport says so, or `max_tx_in_flight` later packets
    /// were accepted (the `Transport` contract).
    #[inline]
    pub(crate) fn tx_read(&self, seq: u64) -> bool {
        seq < self.tx_flushed
            || seq < self.transport.tx_reclaimed().saturating_sub(self.tx_reclaim_base)
            || self.tx_accepted > seq + self.max_in_flight
    }

    /// Frees a transmitted buffer whose last packet has sequence number `seq`: now if the device
    /// has read it, else once it has (checked every event-loop iteration). Returns the buffer to
    /// the caller for reuse instead if it is safe and `reuse` is set.
    #[inline]
    pub(crate) fn retire(&mut self, buf: MsgBuf, seq: u64, reuse: bool) -> Option<MsgBuf> {
        if self.tx_read(seq) {
            if reuse {
                return Some(buf);
            }
            let _ = self.heap.free(buf);
            return None;
        }
        self.stats.deferred_frees += 1;
        if let Err((buf, _)) = self.deferred.push_back((buf, seq)) {
            // Too many buffers waiting: make the device catch up (frees them all).
            self.drain_tx_and_dma();
            let _ = self.heap.free(buf);
        }
        None
    }

    /// Frees deferred buffers the device has read (the queue is not ordered by sequence number:
    /// responses of different slots are buried in any order).
    pub(crate) fn free_deferred(&mut self) {
        for _ in 0..self.deferred.len() {
            let (b, seq) = self.deferred.pop_front().expect("counted");
            if self.tx_read(seq) {
                let _ = self.heap.free(b);
            } else {
                let _ = self.deferred.push_back((b, seq));
            }
        }
    }

    /// The frame of packet `k` of a msgbuf whose headers are written.
    #[inline]
    pub(crate) fn data_pkt(&self, buf: &MsgBuf, k: usize) -> TxPacket {
        data_pkt(self.heap.region(), self.dpp, buf, k)
    }

    /// Writes the headers of every packet of a message (`first_pkt_num` for packet 0).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn write_msg_hdrs(
        &self,
        routing: &RoutingInfo,
        buf: &mut MsgBuf,
        req_type: u8,
        dest: u16,
        pkt_type: PktType,
        first_pkt_num: u16,
        req_num: u64,
    ) {
        let size = buf.len();
        let dpp = self.dpp;
        let h0 = ErpcHdr::new(req_type, size as u32, dest, pkt_type, first_pkt_num, req_num);
        let erpc_len = crate::wire::ERPC_HDR_LEN;
        if size <= dpp {
            // One packet: the common case.
            let hdr = buf.hdr_mut(0);
            let (hr, eh) = hdr.split_at_mut(HEADROOM);
            routing.write(hr.try_into().expect("42"), erpc_len + size);
            eh.copy_from_slice(h0.as_bytes());
            return;
        }
        // Every packet but the last carries `dpp` bytes: one headroom serves them all.
        let mut full = [0u8; HEADROOM];
        routing.write(&mut full, erpc_len + dpp);
        let n = num_pkts(size, dpp);
        for k in 0..n {
            let hdr = buf.hdr_mut(k);
            let (hr, eh) = hdr.split_at_mut(HEADROOM);
            if k + 1 < n {
                hr.copy_from_slice(&full);
            } else {
                routing.write(hr.try_into().expect("42"), erpc_len + (size - k * dpp));
            }
            eh.copy_from_slice(h0.with_pkt_num(first_pkt_num + k as u16).as_bytes());
        }
    }

    /// Sends a header-only control packet (credit return or RFR) on session `s`.
    pub(crate) fn send_ctrl(&mut self, s: usize, pkt_type: PktType, req_type: u8, pkt_num: u16, req_num: u64) {
        let sess = &self.sessions[s];
        let mut hdr = [0u8; PKT_HDR_LEN];
        let (hr, eh) = hdr.split_at_mut(HEADROOM);
        sess.routing.write(hr.try_into().expect("42"), crate::wire::ERPC_HDR_LEN);
        eh.copy_from_slice(ErpcHdr::new(req_type, 0, sess.remote_session, pkt_type, pkt_num, req_num).as_bytes());
        let pkt = self.ctrl_frame(&hdr);
        self.push_tx(pkt, s);
    }

    /// Copies a small frame into the next control slot and returns its TX descriptor. The ring
    /// has more slots than the transport may still read plus one batch (see `Transport`).
    pub(crate) fn ctrl_frame(&mut self, frame: &[u8]) -> TxPacket {
        debug_assert!(frame.len() <= CTRL_SLOT);
        let i = self.ctrl_next & self.ctrl_mask;
        self.ctrl_next = self.ctrl_next.wrapping_add(1);
        // SAFETY: slot i of the ring allocated in `new`; ring size covers every packet the
        // transport may still read, so the device is no longer reading this slot.
        let p = unsafe { self.ctrl_base.as_ptr().add(i as usize * CTRL_SLOT) };
        // SAFETY: as above; `frame.len() <= CTRL_SLOT`.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), p, frame.len()) };
        TxPacket {
            segs: [Segment { vaddr: p, iova: self.heap.region().iova_of(p), len: frame.len() as u32 }, Segment::EMPTY],
        }
    }

    // ----- lists and pools -----

    #[inline]
    pub(crate) fn slot_at(&mut self, id: u32) -> &mut crate::session::Slot {
        &mut self.sessions[(id as usize) / SLOTS_PER_SESSION].slots[(id as usize) % SLOTS_PER_SESSION]
    }

    pub(crate) fn list_push(&mut self, which: ListKind, id: u32) {
        let l = self.list(which);
        let tail = l.tail;
        {
            let sl = self.slot_at(id);
            sl.prev = tail;
            sl.next = NIL;
            sl.linked = true;
        }
        if tail == NIL {
            self.list_mut(which).head = id;
        } else {
            self.slot_at(tail).next = id;
        }
        self.list_mut(which).tail = id;
    }

    pub(crate) fn list_remove(&mut self, which: ListKind, id: u32) {
        let (prev, next) = {
            let sl = self.slot_at(id);
            let r = (sl.prev, sl.next);
            sl.prev = NIL;
            sl.next = NIL;
            sl.linked = false;
            r
        };
        if prev == NIL {
            self.list_mut(which).head = next;
        } else {
            self.slot_at(prev).next = next;
        }
        if next == NIL {
            self.list_mut(which).tail = prev;
        } else {
            self.slot_at(next).prev = prev;
        }
    }

    fn list(&self, which: ListKind) -> SlotList {
        match which {
            ListKind::Active => self.active,
            ListKind::BgPending => self.bg_pending,
        }
    }

    fn list_mut(&mut self, which: ListKind) -> &mut SlotList {
        match which {
            ListKind::Active => &mut self.active,
            ListKind::BgPending => &mut self.bg_pending,
        }
    }

    /// Takes a session number from the free FIFO (oldest freed first, so numbers are reused late).
    pub(crate) fn alloc_session(&mut self) -> Option<usize> {
        let s = self.free_head;
        if s == NIL {
            return None;
        }
        self.free_head = self.sessions[s as usize].free_next;
        if self.free_head == NIL {
            self.free_tail = NIL;
        }
        self.sessions[s as usize].free_next = NIL;
        Some(s as usize)
    }

    /// Frees every buffer a session holds and returns its number to the free FIFO.
    ///
    /// No `tx_flush` here: request buffers are never transmitted (client ones were handed back
    /// by the caller after draining), cached buffers are ones the device has read, and a stored
    /// response goes through `retire`.
    pub(crate) fn release_session(&mut self, s: usize) {
        for i in 0..SLOTS_PER_SESSION {
            let id = (s * SLOTS_PER_SESSION + i) as u32;
            if self.sessions[s].slots[i].linked {
                let which = if self.sessions[s].role == Role::Server { ListKind::BgPending } else { ListKind::Active };
                self.list_remove(which, id);
            }
            let sl = &mut self.sessions[s].slots[i];
            let (resp, seq) = (sl.resp.take(), sl.resp_seq);
            let bufs = [sl.req.take(), sl.pre_resp.take()];
            for b in bufs.into_iter().flatten() {
                let _ = self.heap.free(b);
            }
            if let Some(r) = resp {
                self.retire(r, seq, false);
            }
        }
        if self.sessions[s].role == Role::Server {
            self.token_remove(s);
        }
        let sess = &mut self.sessions[s];
        sess.state = SessionState::Free;
        sess.generation = sess.generation.wrapping_add(1);
        sess.free_next = NIL;
        if self.free_tail == NIL {
            self.free_head = s as u32;
        } else {
            self.sessions[self.free_tail as usize].free_next = s as u32;
        }
        self.free_tail = s as u32;
    }

    pub(crate) fn emit(&mut self, ev: SessionEvent) {
        if let Some(f) = self.session_handler {
            f(self, ev);
        }
    }

    /// Index of a continuation in the endpoint's table, adding it if new.
    pub(crate) fn cont_index(&mut self, f: Continuation<'m, T, C, X>) -> Option<u8> {
        let key = f as usize;
        if let Some(i) = self.conts.iter().position(|g| *g as usize == key) {
            return Some(i as u8);
        }
        self.conts.push(f).ok()?;
        Some((self.conts.len() - 1) as u8)
    }

    pub(crate) fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    // ----- background (worker) requests -----

    /// Moves finished worker jobs back into their slots and sends their responses; hands waiting
    /// requests to the workers.
    fn process_bg(&mut self) {
        let Some(q) = self.bg else { return };
        while let Some(job) = q.done.dequeue() {
            self.finish_bg_job(job);
        }
        self.pump_bg();
    }

    pub(crate) fn pump_bg(&mut self) {
        let Some(q) = self.bg else { return };
        while self.bg_pending.head != NIL {
            let id = self.bg_pending.head;
            let (s, i) = ((id as usize) / SLOTS_PER_SESSION, (id as usize) % SLOTS_PER_SESSION);
            let req_type = self.sessions[s].slots[i].req_type;
            let entry = self.handlers[req_type as usize];
            let HandlerMode::Background { max_resp_size } = entry.mode else {
                // Re-registered as a foreground handler meanwhile: run it here.
                self.list_remove(ListKind::BgPending, id);
                let handle = self.handle_of(s, i);
                if let Some(f) = entry.f {
                    f(self, handle);
                }
                continue;
            };
            // No larger than any response this request can have (16383-packet bound).
            let req_pkts = self.sessions[s].slots[i].req_pkts as usize;
            let max = max_resp_size.min(self.cfg.max_msg_size).min((MAX_PKT_NUM + 2 - req_pkts) * self.dpp);
            let Ok(resp) = self.alloc_msg_buffer(max) else {
                return; // retry next iteration
            };
            let handle = self.handle_of(s, i);
            let req = self.sessions[s].slots[i].req.take().expect("request of a pending background job");
            match q.jobs.enqueue(BgJob { handle, req_type, req, resp }) {
                Ok(()) => self.list_remove(ListKind::BgPending, id),
                Err(job) => {
                    self.sessions[s].slots[i].req = Some(job.req);
                    let _ = self.heap.free(job.resp);
                    return;
                }
            }
        }
    }

    /// The handle of the request in slot `i` of server session `s`.
    pub(crate) fn handle_of(&self, s: usize, i: usize) -> ReqHandle {
        let sess = &self.sessions[s];
        let sl = &sess.slots[i];
        ReqHandle {
            session: s as u16,
            slot: i as u8,
            req_type: sl.req_type,
            generation: sess.generation,
            req_num: sl.cur_req_num,
        }
    }

    fn finish_bg_job(&mut self, job: BgJob) {
        let BgJob { handle, req, resp, .. } = job;
        if self.valid_handle(&handle) {
            self.sessions[handle.session as usize].slots[handle.slot as usize].req = Some(req);
            if let Err(e) = self.enqueue_response(handle, resp) {
                // A response the worker made unusable (a buffer of another endpoint, or resized
                // beyond bounds): answer empty rather than leave the client waiting forever.
                if let Some(b) = e.resp {
                    let _ = self.heap.free(b);
                }
                let _ = self.enqueue_response_prealloc(handle, 0);
            }
        } else {
            let _ = self.heap.free(req);
            let _ = self.heap.free(resp);
        }
    }
}

/// Asks the CPU to bring the cache line holding `p` into the cache, without waiting for it.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing the program sees, writes nothing and
    // never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the two cache lines from `p` on (`p` 64-byte aligned).
#[inline(always)]
pub(crate) fn prefetch2(p: *const u8) {
    prefetch(p);
    prefetch(p.wrapping_add(64));
}

/// The TX descriptor of packet `k` of a msgbuf whose headers are written.
#[inline]
pub(crate) fn data_pkt(region: &crate::dma::DmaRegion, dpp: usize, buf: &MsgBuf, k: usize) -> TxPacket {
    let size = buf.len();
    let off = k * dpp;
    let len = if size > off { (size - off).min(dpp) } else { 0 };
    if k == 0 {
        let p = buf.hdr_ptr(0);
        TxPacket {
            segs: [Segment { vaddr: p, iova: region.iova_of(p), len: (PKT_HDR_LEN + len) as u32 }, Segment::EMPTY],
        }
    } else {
        let h = buf.hdr_ptr(k);
        // SAFETY: off < size <= capacity, inside the msgbuf's data.
        let d = unsafe { buf.data_ptr().add(off) };
        TxPacket {
            segs: [
                Segment { vaddr: h, iova: region.iova_of(h), len: PKT_HDR_LEN as u32 },
                Segment { vaddr: d, iova: region.iova_of(d), len: len as u32 },
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListKind {
    Active,
    BgPending,
}
