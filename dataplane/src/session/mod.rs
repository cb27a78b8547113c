//! Sessions and their slots (the original's `Session` and `SSlot`).
//!
//! A session is a one-to-one connection between two endpoints; the client end sends requests, the
//! server end answers them. Each session has [`SLOTS_PER_SESSION`] slots, so up to eight requests
//! are in flight at once and complete in any order. Request numbers are per slot: slot `i` starts
//! at `req_num_base(token) + i` and adds 8 per request, so `req_num % 8` names the slot on both
//! ends.
//!
//! Storage is the caller's: a slice of [`Session`]s (and one of [`BacklogEntry`]s) handed to
//! [`Rpc::new`](crate::Rpc::new). The endpoint keeps it in a session table (allocation, the
//! free list, the token index), threads its request backlog through the backlog storage, and
//! links busy slots into intrusive slot lists. A session costs `size_of::<Session>()` bytes there plus, on a
//! server, a one-packet response msgbuf per slot that has been used (one-packet request buffers
//! come from a small pool shared by the endpoint's sessions).

mod backlog;
mod list;
mod table;

pub use backlog::BacklogEntry;
pub(crate) use backlog::{Backlog, Queued};
pub(crate) use list::SlotList;
pub(crate) use table::SessionTable;

use crate::config::SLOTS_PER_SESSION;
use crate::msgbuf::MsgBuf;
use crate::stats::SessionStats;
use crate::transport::EndpointAddr;
use crate::wire::RoutingInfo;

/// The end of an intrusive list (slot lists, free lists, hash chains, the backlog).
pub(crate) const NIL: u32 = u32::MAX;

/// A local session number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u16);

/// One slot of one session, endpoint-wide: `session * 8 + slot`. Intrusive slot lists and the
/// timing wheel link slots by this number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotId(u32);

impl SlotId {
    #[inline]
    pub(crate) const fn new(session: usize, slot: usize) -> Self {
        SlotId((session * SLOTS_PER_SESSION + slot) as u32)
    }
    #[inline]
    pub(crate) const fn from_raw(raw: u32) -> Self {
        SlotId(raw)
    }
    #[inline]
    pub(crate) const fn raw(self) -> u32 {
        self.0
    }
    /// The session's index in the session table.
    #[inline]
    pub(crate) const fn session(self) -> usize {
        self.0 as usize / SLOTS_PER_SESSION
    }
    /// The slot's index in its session.
    #[inline]
    pub(crate) const fn slot(self) -> usize {
        self.0 as usize % SLOTS_PER_SESSION
    }
    #[inline]
    pub(crate) const fn session_id(self) -> SessionId {
        SessionId(self.session() as u16)
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Free,
    /// Client: connect request sent, waiting for the response.
    ConnectInProgress,
    Connected,
    /// Client: disconnect request sent, waiting for the response.
    DisconnectInProgress,
    /// Client: being reset after its peer stopped answering; continuations are running.
    Resetting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Client: no request. Server: no request yet, or the last one's response was sent.
    Free,
    /// Client: a request is in flight.
    Active,
    /// Server: receiving the packets of a multi-packet request.
    Receiving,
    /// Server: the request is complete and its handler has not responded yet.
    InHandler,
    /// Server: the response is stored (sent, and kept for duplicates and RFRs).
    Responded,
    /// Server: the request was refused (no handler for its type); copies of it get the refusal
    /// again.
    Refused,
}

/// One slot of a session. Fixed layout, one cache line per group: what every request touches at
/// either end (request numbers, buffers, packet counters) first, then the rest of the per-request
/// state with the first few RTT timestamps, then the remaining timestamps. A one-packet RPC
/// touches the first two lines only, at both ends.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Slot {
    // ----- cache line 0 -----
    pub(crate) cur_req_num: u64,
    /// Client: the request. Server: the request being received or handled.
    pub(crate) req: Option<MsgBuf>,
    /// Client: the response buffer. Server: the stored response.
    pub(crate) resp: Option<MsgBuf>,
    /// Server: cached one-packet response buffer.
    pub(crate) pre_resp: Option<MsgBuf>,
    pub(crate) num_tx: u16,
    pub(crate) num_rx: u16,
    pub(crate) req_pkts: u16,
    /// Client: 0 until the first response packet arrives. Server: packets of the stored response.
    pub(crate) resp_pkts: u16,
    // ----- cache line 1 -----
    /// Server: upper bound of the TX sequence number of the last response packet sent.
    pub(crate) resp_seq: u64,
    /// Client: time of the last progress (send, retransmission or in-order receive).
    pub(crate) progress_ns: u64,
    pub(crate) tag: u64,
    /// Intrusive list links (client: active requests; server: requests waiting for a worker).
    pub(crate) prev: u32,
    pub(crate) next: u32,
    pub(crate) wheel_next: u32,
    /// Client: packets below this number were sent more than once (by a rollback): their RTT is
    /// ambiguous, so they are not sampled.
    pub(crate) untimed_below: u16,
    pub(crate) cont: u8,
    pub(crate) req_type: u8,
    pub(crate) state: SlotState,
    /// Server: the request buffer is a one-packet buffer of the endpoint's pool.
    pub(crate) req_is_pre: bool,
    pub(crate) resp_is_pre: bool,
    /// Whether the slot is on an intrusive list.
    pub(crate) linked: bool,
    /// Client: whether the slot's next packet waits in the timing wheel (its link above).
    pub(crate) in_wheel: bool,
    /// Server: `msg_size` of the current request, which every packet of it must repeat (also
    /// once its buffer is gone: duplicates of an answered request are checked against it).
    pub(crate) req_size: u32,
    // ----- the rest of line 1 and lines 2-3 -----
    /// Client: send time (the clock's low 32 bits, ns) of packet `n` in `tx_ts[n % RTT_TS]`,
    /// for per-packet RTT samples. The first entries (a one-packet request's) share line 1.
    pub(crate) tx_ts: [u32; crate::cc::RTT_TS],
    // ----- the end of line 3: touched by the loss scan only -----
    /// Client: the low 16 bits of `cur_req_num` and `num_rx` when the loss scan last saw them
    /// change; with `stuck_since_ns`, how long the request has made no progress.
    pub(crate) scan_mark: u32,
    pub(crate) stuck_since_ns: u64,
}

impl Slot {
    pub const EMPTY: Slot = Slot {
        cur_req_num: 0,
        progress_ns: 0,
        tag: 0,
        req: None,
        resp: None,
        pre_resp: None,
        prev: NIL,
        next: NIL,
        num_tx: 0,
        num_rx: 0,
        req_pkts: 0,
        resp_pkts: 0,
        cont: 0,
        req_type: 0,
        state: SlotState::Free,
        req_is_pre: false,
        resp_is_pre: false,
        linked: false,
        resp_seq: 0,
        tx_ts: [0; crate::cc::RTT_TS],
        req_size: 0,
        scan_mark: u32::MAX,
        stuck_since_ns: 0,
        untimed_below: 0,
        in_wheel: false,
        wheel_next: NIL,
    };

    /// Client: wire packets of this RPC (`req_pkts + resp_pkts - 1`), once the response size is known.
    #[inline]
    pub(crate) fn wire_pkts(&self) -> u16 {
        self.req_pkts + self.resp_pkts.max(1) - 1
    }

    /// Client: whether the slot has a packet to send (given credits).
    #[inline]
    pub(crate) fn wants_tx(&self) -> bool {
        self.num_tx < self.req_pkts || (self.resp_pkts > 0 && self.num_tx < self.wire_pkts())
    }
}

/// One session (client or server end). Create storage with [`Session::storage`] or
/// `[Session::EMPTY; N]`.
///
/// The layout is fixed (`repr(C)`) so that what every packet reads sits together: the first
/// cache line holds the state, credits, peer address and ready-made headers; the second the
/// liveness, counters and the congestion-control fields the common case checks (the rate against
/// the link rate). With thousands of sessions each line touched is a cache miss.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Session {
    // ----- cache line 0: checked or used by every packet -----
    pub(crate) state: SessionState,
    pub(crate) role: Role,
    /// Client: slots that have packets to send but no credits.
    pub(crate) stalled: u8,
    /// Client: slots without a request.
    pub(crate) free_slots: u8,
    pub(crate) active: u8,
    /// Client: keepalive pings sent since the session last became idle or was answered.
    pub(crate) pings: u8,
    pub(crate) remote_session: u16,
    pub(crate) credits: u16,
    pub(crate) peer: EndpointAddr,
    pub(crate) routing: RoutingInfo,
    // ----- cache line 1 -----
    pub(crate) last_heard_ns: u64,
    /// Bumped every time the session number is reused, so stale request handles are refused.
    pub(crate) generation: u32,
    pub(crate) backlog_head: u32,
    pub(crate) stats: SessionStats,
    /// Congestion control (client); its first 16 bytes (rate and link rate) end this line.
    pub(crate) cc: crate::cc::SessionCc,
    // ----- colder: the rest of congestion control, backlog, session management, free list -----
    pub(crate) backlog_len: u32,
    pub(crate) backlog_tail: u32,
    pub(crate) token: u64,
    pub(crate) sm_next_ns: u64,
    pub(crate) sm_attempts: u32,
    /// Head of the token-hash chain whose bucket is this array index (server duplicate detection).
    pub(crate) bucket_head: u32,
    pub(crate) token_next: u32,
    pub(crate) free_next: u32,
    /// Server sessions by client IPv4 address (see `SessionTable`): the head of the chain of
    /// addresses whose bucket is this array index; this session's links on that chain (if it
    /// leads its address's sessions) or in its leader's list (if not); the leader's count.
    pub(crate) ip_head: u32,
    pub(crate) ip_next: u32,
    pub(crate) ip_prev: u32,
    pub(crate) grp_next: u32,
    pub(crate) grp_prev: u32,
    pub(crate) ip_count: u16,
    /// Client: the connect cookie the server sent back (0 until then), repeated in the connect
    /// request that proves we receive the server's packets.
    pub(crate) cookie: u64,
    /// Server: duplicates answered with a resent response in the window that started at
    /// `dup_window_ns` (the rate limit on what a duplicate can make us send).
    pub(crate) dup_window_ns: u64,
    pub(crate) dup_count: u16,
    pub(crate) slots: [Slot; SLOTS_PER_SESSION],
}

impl Session {
    pub const EMPTY: Session = Session {
        state: SessionState::Free,
        role: Role::Client,
        remote_session: 0,
        credits: 0,
        stalled: 0,
        free_slots: 0,
        active: 0,
        generation: 0,
        token: 0,
        peer: EndpointAddr { mac: [0; 6], ipv4: [0; 4], udp_port: 0 },
        routing: RoutingInfo::EMPTY,
        last_heard_ns: 0,
        sm_attempts: 0,
        sm_next_ns: 0,
        pings: 0,
        backlog_head: NIL,
        backlog_tail: NIL,
        backlog_len: 0,
        bucket_head: NIL,
        token_next: NIL,
        free_next: NIL,
        ip_head: NIL,
        ip_next: NIL,
        ip_prev: NIL,
        grp_next: NIL,
        grp_prev: NIL,
        ip_count: 0,
        cookie: 0,
        dup_window_ns: 0,
        dup_count: 0,
        stats: SessionStats { tx_pkts: 0, rx_pkts: 0, retransmissions: 0, drops: 0 },
        cc: crate::cc::SessionCc::EMPTY,
        slots: [Slot::EMPTY; SLOTS_PER_SESSION],
    };

    /// Storage for `n` sessions.
    #[cfg(feature = "std")]
    pub fn storage(n: usize) -> std::vec::Vec<Session> {
        (0..n).map(|_| Session::EMPTY).collect()
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn peer(&self) -> EndpointAddr {
        self.peer
    }

    pub fn credits(&self) -> u16 {
        self.credits
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Sets the connection's token and, from it, the slots' starting request numbers.
    pub(crate) fn set_token(&mut self, token: u64) {
        self.token = token;
        let base = req_num_base(token);
        for (i, s) in self.slots.iter_mut().enumerate() {
            s.cur_req_num = base + i as u64;
        }
    }

    /// Resets per-connection state for a new use of this session number (caches are kept out:
    /// the caller frees them first).
    pub(crate) fn reinit(&mut self, role: Role, state: SessionState, credits: u16) {
        self.state = state;
        self.role = role;
        self.credits = credits;
        self.stalled = 0;
        self.free_slots = 0xFF;
        self.active = 0;
        self.generation = self.generation.wrapping_add(1);
        self.sm_attempts = 0;
        self.pings = 0;
        self.backlog_head = NIL;
        self.backlog_tail = NIL;
        self.backlog_len = 0;
        self.token_next = NIL;
        self.ip_next = NIL;
        self.ip_prev = NIL;
        self.grp_next = NIL;
        self.grp_prev = NIL;
        self.ip_count = 0;
        self.cookie = 0;
        self.dup_window_ns = 0;
        self.dup_count = 0;
        self.stats = SessionStats::default();
        for (i, s) in self.slots.iter_mut().enumerate() {
            debug_assert!(s.req.is_none() && s.resp.is_none() && s.pre_resp.is_none());
            // A stale wheel entry may still name this slot: keep its link state (the reap
            // handles whatever the slot holds by then).
            let (in_wheel, wheel_next) = (s.in_wheel, s.wheel_next);
            *s = Slot::EMPTY;
            s.in_wheel = in_wheel;
            s.wheel_next = wheel_next;
            s.cur_req_num = i as u64;
        }
    }
}

/// The request number slot 0 starts from on a connection with `token` (slot `i` starts at
/// `base + i`, its first request is `base + i + 8`). Both ends derive it from the token, so a
/// delayed packet of an earlier connection that used the same session number carries request
/// numbers the new connection does not use (the original never reused session numbers; this
/// implementation does, its storage being fixed).
pub const fn req_num_base(token: u64) -> u64 {
    (token & ((1 << 40) - 1)) << 3
}

// The per-packet fields stay within the cache lines the layout comments promise.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(Session, routing) + size_of::<RoutingInfo>() <= 64);
    assert!(offset_of!(Session, stats) + size_of::<SessionStats>() <= 128);
    assert!(offset_of!(Session, cc) + crate::cc::SessionCc::HOT_BYTES <= 128);
    assert!(offset_of!(Slot, resp_pkts) + 2 <= 64);
    assert!(offset_of!(Slot, in_wheel) < 128);
    assert!(offset_of!(Slot, tx_ts) + 4 <= 128);
    assert!(offset_of!(Slot, req_size) + 4 <= 128);
    assert!(size_of::<Slot>() == 256);
    assert!(offset_of!(Session, slots) == 256);
};
