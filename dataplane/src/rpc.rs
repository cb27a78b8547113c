//! The RPC endpoint (the original's `Rpc`): one per thread, owning one transport.
//!
//! The endpoint's state lives in components with narrow APIs: the session table (session
//! storage, free list, token index), the backlog, the slot lists, the TX queue (batching,
//! sequence numbers, deferred frees, the control ring), the handler table, the msgbuf allocator
//! and the timing wheel. The protocol is split by concern into `impl Rpc`
//! blocks over them: [`crate::client`] (sending requests, credits, RFRs, completion),
//! [`crate::server`] (receiving requests, handlers, responses, at-most-once),
//! [`crate::reliability`] (retransmission timeout, Go-Back-N), [`crate::liveness`] (keepalives,
//! idle sessions, session reset), [`crate::sm`] (session management over the datapath),
//! [`crate::cc`] (congestion control) and [`crate::worker`] (background handlers). This file
//! holds the endpoint's state, its public API and the event loop.

use crate::arch::{prefetch, prefetch2};
use crate::clock::Clock;
use crate::config::{RpcConfig, MAX_MSG_SIZE, RX_BATCH, SLOTS_PER_SESSION};
use crate::dma::DmaRegion;
use crate::error::{InitError, RegisterError};
use crate::event::SessionEvent;
use crate::handlers::{HandlerMode, Handlers, ReqHandler, SessionFilter, SessionHandler};
use crate::liveness::IdleScan;
use crate::msgbuf::{AllocError, HeapStats, MsgBuf, MsgBufHeap};
use crate::session::{
    Backlog, BacklogEntry, Role, Session, SessionId, SessionState, SessionTable, Slot, SlotId, SlotList,
};
use crate::sm::Cookies;
use crate::stats::{DropReason, RpcStats, SessionStats};
use crate::storage::Storage;
use crate::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use crate::tx::{ctrl_hdr, write_msg_hdrs, MsgHdr, TxQueue};
use crate::wire::{ErpcHdr, PktHdr, PktType, ERPC_HDR_LEN, HEADROOM, MAX_MSG_SIZE_FIELD, MAX_PKT_NUM, PKT_HDR_LEN};
use crate::worker::WorkerQueues;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use zerocopy::FromBytes;

/// Sessions in use above which each RX burst's session state is prefetched before it is
/// processed (`warm_sessions`).
const WARM_MIN_SESSIONS: usize = 64;

/// The descriptors of one RX burst, lent by the transport from `rx_burst` until `rx_release` in
/// the same event-loop iteration.
struct RxBurst([RxPacket; RX_BATCH]);

// SAFETY: the descriptors point into the transport's receive memory, which the endpoint owns
// with the transport; they are used only within one event-loop iteration, on the thread running
// it, and are stale (released) between iterations, when the endpoint may move to another
// thread.
unsafe impl Send for RxBurst {}
/// One-packet request buffers a server endpoint keeps for reuse (see `Rpc::req_pool`).
const REQ_POOL: usize = 16;

/// Memory the caller provides; nothing else is allocated.
pub struct RpcMemory<'m> {
    /// DMA-capable memory for msgbufs and control packets.
    pub region: DmaRegion,
    /// Session storage: its length is the endpoint's session capacity (client and server).
    pub sessions: &'m mut [Session],
    /// Storage for requests queued behind busy slots: its length bounds the backlog.
    pub backlog: &'m mut [BacklogEntry],
}

/// With `std`: endpoint memory the endpoint owns, so it needs no storage that outlives it. The
/// session and backlog arrays are freed with the endpoint.
///
/// The region is not: msgbufs carry no lifetime and may outlive their endpoint, so their memory
/// must stay valid for the rest of the program (a hugepage mapping kept for good, a static array,
/// or, in tests, leaked memory; see [`DmaRegion`]).
#[cfg(feature = "std")]
pub struct OwnedMemory {
    pub region: DmaRegion,
    pub sessions: std::boxed::Box<[Session]>,
    pub backlog: std::boxed::Box<[BacklogEntry]>,
}

#[cfg(feature = "std")]
impl OwnedMemory {
    /// `sessions` sessions and a backlog of `backlog` requests over `region`.
    pub fn new(region: DmaRegion, sessions: usize, backlog: usize) -> Self {
        OwnedMemory {
            region,
            sessions: (0..sessions).map(|_| Session::EMPTY).collect(),
            backlog: (0..backlog).map(|_| BacklogEntry::EMPTY).collect(),
        }
    }
}

/// What [`Rpc::new`] takes: [`RpcMemory`] (borrowed storage), or with `std` [`OwnedMemory`].
pub struct EndpointMemory<'m> {
    region: DmaRegion,
    sessions: Storage<'m, Session>,
    backlog: Storage<'m, BacklogEntry>,
}

impl<'m> From<RpcMemory<'m>> for EndpointMemory<'m> {
    fn from(m: RpcMemory<'m>) -> Self {
        EndpointMemory {
            region: m.region,
            sessions: Storage::borrowed(m.sessions),
            backlog: Storage::borrowed(m.backlog),
        }
    }
}

#[cfg(feature = "std")]
impl From<OwnedMemory> for EndpointMemory<'static> {
    fn from(m: OwnedMemory) -> Self {
        EndpointMemory { region: m.region, sessions: Storage::owned(m.sessions), backlog: Storage::owned(m.backlog) }
    }
}

/// What [`Rpc::wait_for_work`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// Handed to the transport's wait, which returned when a packet may have arrived, a timer
    /// came due, or the time given passed (at once if packets were already waiting; the kernel
    /// transports count the waits that slept, `rx_waits`).
    Blocked,
    /// Returned at once: a timer is due (or no time was given). Run the event loop.
    NotIdle,
    /// Returned at once: this endpoint cannot block here (see [`Rpc::wait_for_work`]).
    CannotBlock,
}

/// One eRPC endpoint. See the crate documentation for the threading model.
pub struct Rpc<'m, T: Transport, C: Clock, Ctx = ()> {
    pub(crate) transport: T,
    pub(crate) clock: C,
    ctx: Ctx,
    pub(crate) cfg: RpcConfig,
    pub(crate) heap: MsgBufHeap,
    /// Data bytes per packet: the MTU less the 56 header bytes.
    pub(crate) data_per_pkt: usize,
    pub(crate) local: EndpointAddr,
    pub(crate) sessions: SessionTable<'m>,
    pub(crate) backlog: Backlog<'m>,
    pub(crate) handlers: Handlers<'m, T, C, Ctx>,
    pub(crate) tx: TxQueue,
    /// Descriptors of the frames lent by the last `rx_burst` (kept here: no per-iteration init).
    rx_pkts: RxBurst,
    /// Client slots with a request in flight (the loss scan walks them).
    pub(crate) active: SlotList,
    /// Server slots whose complete request waits for a worker.
    pub(crate) bg_pending: SlotList,
    pub(crate) bg: Option<WorkerQueues<'m>>,
    /// The clock as of the last reading (once per RX batch, every few idle iterations, and
    /// wherever a call needs it).
    pub(crate) now: u64,
    /// When the loss scan runs next.
    next_loss_scan_ns: u64,
    pub(crate) idle: IdleScan,
    /// Client sessions connecting or disconnecting.
    pub(crate) sm_pending: u32,
    pub(crate) next_sm_ns: u64,
    pub(crate) in_loop: bool,
    /// False once the transport's `wait_rx` said it cannot block.
    transport_can_wait: bool,
    pub(crate) wheel: crate::cc::wheel::TimingWheel,
    iteration: u32,
    /// One-packet request buffers for reuse, shared by all server sessions: a request answered
    /// from its handler hands its buffer to the next one, which finds it in the cache (a buffer
    /// per slot would be a cold line per request with thousands of sessions).
    pub(crate) req_pool: heapless::Vec<MsgBuf, REQ_POOL>,
    pub(crate) rng: Xoshiro256PlusPlus,
    pub(crate) cookies: Cookies,
    pub(crate) stats: RpcStats,
}

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    /// Builds an endpoint over `transport` from the caller's memory ([`RpcMemory`]), or with
    /// `std` from memory it owns ([`OwnedMemory`]).
    pub fn new(
        transport: T,
        clock: C,
        ctx: Ctx,
        mem: impl Into<EndpointMemory<'m>>,
        cfg: RpcConfig,
    ) -> Result<Self, InitError> {
        let mem = mem.into();
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
            || cfg.request_timeout_ns < cfg.rto_ns.saturating_mul(2)
            || cfg.max_sessions_per_client == 0
        {
            return Err(InitError::BadConfig);
        }
        if mem.sessions.is_empty() || mem.sessions.len() > u16::MAX as usize {
            return Err(InitError::BadSessionCount);
        }
        let data_per_pkt = mtu - PKT_HDR_LEN;
        let max_msg = cfg.max_msg_size.min(MAX_MSG_SIZE).min(MAX_MSG_SIZE_FIELD).min(MAX_PKT_NUM * data_per_pkt);
        let mut heap = MsgBufHeap::new(mem.region, data_per_pkt, max_msg).ok_or(InitError::RegionTooSmall)?;
        let tx = TxQueue::new(&transport, &mut heap)?;
        let local = transport.local_addr();
        let storage_addr = mem.sessions.as_ptr() as usize;
        let now = clock.now_ns();
        // Tokens must differ across restarts of the same endpoint: besides the configured
        // seed, mix in the clock and where the caller's storage lives.
        let seed = cfg.seed
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
            ]);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let table_key = [rng.next_u64(), rng.next_u64()];
        let cookie_key = [rng.next_u64(), rng.next_u64()];
        Ok(Rpc {
            transport,
            clock,
            ctx,
            cfg: RpcConfig { max_msg_size: max_msg, mtu, ..cfg },
            heap,
            data_per_pkt,
            local,
            sessions: SessionTable::new(mem.sessions, table_key),
            backlog: Backlog::new(mem.backlog),
            handlers: Handlers::new(),
            tx,
            rx_pkts: RxBurst([RxPacket::EMPTY; RX_BATCH]),
            active: SlotList::EMPTY,
            bg_pending: SlotList::EMPTY,
            bg: None,
            now,
            next_loss_scan_ns: now + cfg.rto_ns / 10,
            idle: IdleScan::new(now),
            sm_pending: 0,
            next_sm_ns: now,
            in_loop: false,
            transport_can_wait: true,
            wheel: crate::cc::wheel::TimingWheel::new(now),
            iteration: 0,
            req_pool: heapless::Vec::new(),
            rng,
            cookies: Cookies::new(cookie_key),
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
        f: ReqHandler<'m, T, C, Ctx>,
        mode: HandlerMode,
    ) -> Result<(), RegisterError> {
        if matches!(mode, HandlerMode::Background { .. }) && self.bg.is_none() {
            return Err(RegisterError::NoWorkers);
        }
        self.handlers.register(req_type, f, mode);
        Ok(())
    }

    /// Connects the endpoint to worker queues for background handlers: a `&BgQueues`, or with
    /// `std` an `Arc<BgQueues>` shared with the workers.
    pub fn attach_workers(&mut self, queues: impl Into<WorkerQueues<'m>>) {
        self.bg = Some(queues.into());
    }

    pub fn set_session_handler(&mut self, f: SessionHandler<'m, T, C, Ctx>) {
        self.handlers.set_session_handler(f);
    }

    /// Whether this endpoint accepts new sessions from clients (default: yes, once a request
    /// handler is registered; an endpoint without handlers never does). Existing sessions are
    /// not affected. Refused clients get [`SmError::Refused`](crate::SmError::Refused).
    pub fn set_accept_sessions(&mut self, accept: bool) {
        self.handlers.set_accept(accept);
    }

    /// Accepts new sessions only from clients for which `filter` says yes (`None`: from any).
    /// It sees the client's address after the client has shown it receives packets there.
    pub fn set_session_filter(&mut self, filter: Option<SessionFilter>) {
        self.handlers.set_filter(filter);
    }

    // ----- accessors -----

    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
    pub fn ctx_mut(&mut self) -> &mut Ctx {
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
    /// The event loop's time, ns of the clock: read once per received burst, so in a handler or
    /// continuation it is when the packets that triggered it arrived (at most an event-loop
    /// iteration old). Costs nothing, unlike reading the clock (`clock().now_ns()`).
    pub fn now_ns(&self) -> u64 {
        self.now
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
        self.data_per_pkt
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
            Err(AllocError::OutOfMemory { .. }) if self.tx.has_deferred() => {
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
        if self.now >= self.next_loss_scan_ns {
            self.next_loss_scan_ns = self.now + self.cfg.rto_ns / 10;
            self.loss_scan();
        }
        if self.tx.has_deferred() {
            self.tx.free_deferred(&self.transport, &mut self.heap);
        }
        if self.now >= self.idle.next_ns() {
            self.idle_scan_step();
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

    /// For an endpoint that shares its core with other threads or processes: blocks until a
    /// packet may have arrived for it, its next timer is due ([`Rpc::next_timer_ns`]), or
    /// `max_ns` has passed, and says whether it blocked. A busy-polling endpoint holds its
    /// core for a whole scheduler time slice (milliseconds) while the peer it waits for may be
    /// the one that needs it; one that blocks when idle yields it and is woken by the kernel
    /// when a packet comes. Call it once iterations keep finding nothing to do (how many is the
    /// host's choice: waking costs microseconds), then run the event loop.
    ///
    /// Does not block when a timer is due or `max_ns` is 0 ([`Waited::NotIdle`]: run the loop),
    /// nor ([`Waited::CannotBlock`]: spin or sleep instead) when called from a handler or
    /// continuation, when background workers are attached (a finished job wakes nothing), or
    /// when the transport cannot block (the VFIO drivers: see [`Transport::wait_rx`]).
    pub fn wait_for_work(&mut self, max_ns: u64) -> Waited {
        if self.in_loop || self.bg.is_some() || !self.transport_can_wait {
            return Waited::CannotBlock;
        }
        let now = self.clock.now_ns();
        self.now = now;
        let next = self.next_timer_ns();
        if next <= now || max_ns == 0 {
            return Waited::NotIdle;
        }
        // Packets queued outside the event loop (a response, a request) leave first.
        self.flush_tx();
        if !self.transport.wait_rx((next - now).min(max_ns)) {
            self.transport_can_wait = false;
            return Waited::CannotBlock;
        }
        self.stats.waits += 1;
        Waited::Blocked
    }

    /// The earliest clock time at which the event loop has work that no packet arrival triggers:
    /// a paced packet leaving the timing wheel, the loss scan (every `rto/10`, while requests
    /// are outstanding), the keepalive and idle-session sweep, or a connect/disconnect retry.
    /// Transmissions the transport refused are retried on the next iteration, which the host
    /// should run once the transport has room.
    pub fn next_timer_ns(&self) -> u64 {
        let mut t = self.idle.next_ns();
        if self.active.head().is_some() {
            // The scan looks at outstanding requests only.
            t = t.min(self.next_loss_scan_ns);
        }
        if self.sm_pending > 0 {
            t = t.min(self.next_sm_ns);
        }
        if let Some(w) = self.wheel.next_due_ns() {
            t = t.min(w);
        }
        t
    }

    /// Hands the packets queued since the last event-loop iteration (by `enqueue_request`,
    /// `enqueue_response`, ...) to the transport now, without receiving or running anything
    /// else. The event loop does this at the end of every iteration anyway; this is for a
    /// caller that queued work outside it and wants it on the wire before its next iteration
    /// (for instance before a slow step of its own, like a disk sync).
    pub fn transmit(&mut self) {
        self.flush_tx();
    }

    /// Runs the event loop for `ns` nanoseconds of the endpoint's clock.
    pub fn run_event_loop(&mut self, ns: u64) {
        let end = self.clock.now_ns() + ns;
        while self.clock.now_ns() < end {
            self.run_event_loop_once();
        }
    }

    // ----- receive -----

    fn process_rx(&mut self) {
        let n = self.transport.rx_burst(&mut self.rx_pkts.0);
        if n == 0 {
            return;
        }
        // One timestamp per RX batch, as in the original.
        self.now = self.clock.now_ns();
        if n > 1 && self.sessions.live() > WARM_MIN_SESSIONS {
            self.warm_sessions(n);
        }
        for k in 0..n {
            let p = self.rx_pkts.0[k];
            self.process_pkt(&p);
        }
        self.transport.rx_release(&self.rx_pkts.0[..n]);
    }

    /// Prefetches what each frame of the burst will touch, before processing any: its session's
    /// and slot's first two cache lines, the frame's payload, and the buffer the payload goes to
    /// (client: the response buffer) or the response is written to (server: the slot's cached
    /// or stored response buffer). With thousands of sessions these are cache misses; issued
    /// together, without waiting, they overlap instead of stalling the processing one after
    /// another. Only with more than [`WARM_MIN_SESSIONS`] sessions in use: with fewer, their
    /// state stays in the L1 and L2 caches and this pass would only cost time.
    #[inline(never)]
    fn warm_sessions(&self, n: usize) {
        let mut at = [(u32::MAX, 0u8); RX_BATCH];
        for (p, at) in self.rx_pkts.0[..n].iter().zip(at.iter_mut()) {
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
                prefetch2(&sess.slots[i] as *const Slot as *const u8);
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
            return self.process_sm(p, &hdr, &h);
        }
        let s = h.dest_session_num as usize;
        let Some(sess) = self.sessions.get(s) else {
            return self.drop_pkt(None, DropReason::UnknownSession);
        };
        if sess.state != SessionState::Connected {
            return self.drop_pkt(None, DropReason::UnknownSession);
        }
        if hdr.ipv4.src != sess.peer.ipv4 || hdr.udp.src_port.get() != sess.peer.udp_port {
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

    // ----- transmit (through the TxQueue) -----

    /// Queues a frame of session `s` for transmission.
    #[inline]
    pub(crate) fn push_tx(&mut self, pkt: TxPacket, s: usize) {
        self.sessions[s].stats.tx_pkts += 1;
        self.tx.push(&mut self.transport, &mut self.stats, pkt);
    }

    /// Hands the TX batch to the transport.
    #[inline]
    pub(crate) fn flush_tx(&mut self) {
        self.tx.flush(&mut self.transport, &mut self.stats);
    }

    /// Sends everything queued and waits until the device has read it.
    pub(crate) fn drain_tx_and_dma(&mut self) {
        self.tx.drain(&mut self.transport, &mut self.stats, &mut self.heap);
    }

    /// See [`TxQueue::retire`].
    #[inline]
    pub(crate) fn retire(&mut self, buf: MsgBuf, seq: u64, reuse: bool) -> Option<MsgBuf> {
        self.tx.retire(&mut self.transport, &mut self.stats, &mut self.heap, buf, seq, reuse)
    }

    /// The frame of packet `k` of a msgbuf whose headers are written.
    #[inline]
    pub(crate) fn data_pkt(&self, buf: &MsgBuf, k: usize) -> TxPacket {
        crate::tx::data_pkt(self.heap.region(), self.data_per_pkt, buf, k)
    }

    /// Writes the headers of message `m` on session `s` into `buf`. A one-packet message whose
    /// buffer already holds this session's headers for the same type and size (see the header
    /// memo in [`crate::msgbuf`]) gets only its second eRPC word rewritten.
    #[inline(always)]
    pub(crate) fn write_hdrs(&mut self, s: usize, buf: &mut MsgBuf, m: MsgHdr) {
        let sess = &self.sessions[s];
        if buf.len() > self.data_per_pkt {
            self.heap.memo_forget(buf);
            return write_msg_hdrs(self.data_per_pkt, &sess.routing, buf, m);
        }
        let key = (s as u64) << 48 | (m.dest_session as u64) << 32 | sess.generation as u64;
        let w0 = ErpcHdr::word0_of(m.req_type, buf.len() as u32);
        if self.heap.memo_hit(buf, key, w0) {
            let w1 = ErpcHdr::word1_of(m.pkt_type, m.first_pkt_num, m.req_num);
            let at = HEADROOM + ErpcHdr::WORD1_OFFSET;
            buf.hdr_mut(0)[at..at + 8].copy_from_slice(&w1.to_le_bytes());
            return;
        }
        write_msg_hdrs(self.data_per_pkt, &sess.routing, buf, m);
        self.heap.memo_set(buf, key, w0);
    }

    /// Sends a header-only control packet (credit return or RFR) on session `s`.
    pub(crate) fn send_ctrl(&mut self, s: usize, pkt_type: PktType, req_type: u8, pkt_num: u16, req_num: u64) {
        let sess = &self.sessions[s];
        let m = MsgHdr { req_type, dest_session: sess.remote_session, pkt_type, first_pkt_num: pkt_num, req_num };
        let hdr = ctrl_hdr(&sess.routing, m);
        let pkt = self.tx.ctrl_frame(self.heap.region(), &hdr);
        self.push_tx(pkt, s);
    }

    // ----- sessions -----

    /// Frees every buffer a session holds and returns it to the session table.
    ///
    /// No `tx_flush` here: request buffers are never transmitted (client ones were handed back
    /// by the caller after draining), cached buffers are ones the device has read, and a stored
    /// response goes through `retire`.
    pub(crate) fn release_session(&mut self, s: usize) {
        let role = self.sessions[s].role;
        for i in 0..SLOTS_PER_SESSION {
            let id = SlotId::new(s, i);
            if self.sessions.slot(id).linked {
                let list = if role == Role::Server { &mut self.bg_pending } else { &mut self.active };
                list.remove(&mut self.sessions, id);
            }
            let sl = self.sessions.slot_mut(id);
            let (resp, seq) = (sl.resp.take(), sl.resp_seq);
            let bufs = [sl.req.take(), sl.pre_resp.take()];
            for b in bufs.into_iter().flatten() {
                let _ = self.heap.free(b);
            }
            if let Some(r) = resp {
                self.retire(r, seq, false);
            }
        }
        self.sessions.free(s);
    }

    pub(crate) fn emit(&mut self, ev: SessionEvent) {
        if let Some(f) = self.handlers.session_handler() {
            f(self, ev);
        }
    }

    pub(crate) fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}
