//! Counters per endpoint and per session.

/// Why a received packet was dropped. Each reason has its own counter in [`DropCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers, or than the data its header announces.
    Truncated,
    /// Not an IPv4/UDP frame.
    NotUdp,
    /// The magic nibble is not 11.
    BadMagic,
    /// `dest_session_num` names no session, or a session that is not connected.
    UnknownSession,
    /// The frame did not come from the session's peer.
    WrongSource,
    /// `msg_size` beyond the endpoint's maximum, or inconsistent with the message so far (its
    /// size or request type differs from what the slot recorded).
    BadMsgSize,
    /// A packet type the session's role or state does not accept.
    WrongType,
    /// An old request number, or a packet for a request that is no longer active.
    Stale,
    /// Out of order (eRPC treats reordering as loss).
    OutOfOrder,
    /// No msgbuf memory for an incoming request.
    NoMemory,
    /// No handler registered for the request type.
    NoHandler,
    /// A malformed or unexpected session-management packet.
    BadSm,
    /// The transport did not accept a packet for transmission.
    TxRingFull,
    /// A duplicate that would have been answered with a resent response, beyond the session's
    /// rate (`session_credits` per `rto_ns`: what a correct client's rollback can ask for).
    DupRateLimited,
}

/// Drop counters, one per [`DropReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub truncated: u64,
    pub not_udp: u64,
    pub bad_magic: u64,
    pub unknown_session: u64,
    pub wrong_source: u64,
    pub bad_msg_size: u64,
    pub wrong_type: u64,
    pub stale: u64,
    pub out_of_order: u64,
    pub no_memory: u64,
    pub no_handler: u64,
    pub bad_sm: u64,
    pub tx_ring_full: u64,
    pub dup_rate_limited: u64,
}

impl DropCounters {
    #[inline]
    pub fn count(&mut self, r: DropReason) {
        let c = match r {
            DropReason::Truncated => &mut self.truncated,
            DropReason::NotUdp => &mut self.not_udp,
            DropReason::BadMagic => &mut self.bad_magic,
            DropReason::UnknownSession => &mut self.unknown_session,
            DropReason::WrongSource => &mut self.wrong_source,
            DropReason::BadMsgSize => &mut self.bad_msg_size,
            DropReason::WrongType => &mut self.wrong_type,
            DropReason::Stale => &mut self.stale,
            DropReason::OutOfOrder => &mut self.out_of_order,
            DropReason::NoMemory => &mut self.no_memory,
            DropReason::NoHandler => &mut self.no_handler,
            DropReason::BadSm => &mut self.bad_sm,
            DropReason::TxRingFull => &mut self.tx_ring_full,
            DropReason::DupRateLimited => &mut self.dup_rate_limited,
        };
        *c += 1;
    }

    pub fn get(&self, r: DropReason) -> u64 {
        match r {
            DropReason::Truncated => self.truncated,
            DropReason::NotUdp => self.not_udp,
            DropReason::BadMagic => self.bad_magic,
            DropReason::UnknownSession => self.unknown_session,
            DropReason::WrongSource => self.wrong_source,
            DropReason::BadMsgSize => self.bad_msg_size,
            DropReason::WrongType => self.wrong_type,
            DropReason::Stale => self.stale,
            DropReason::OutOfOrder => self.out_of_order,
            DropReason::NoMemory => self.no_memory,
            DropReason::NoHandler => self.no_handler,
            DropReason::BadSm => self.bad_sm,
            DropReason::TxRingFull => self.tx_ring_full,
            DropReason::DupRateLimited => self.dup_rate_limited,
        }
    }

    pub fn total(&self) -> u64 {
        self.truncated
            + self.not_udp
            + self.bad_magic
            + self.unknown_session
            + self.wrong_source
            + self.bad_msg_size
            + self.wrong_type
            + self.stale
            + self.out_of_order
            + self.no_memory
            + self.no_handler
            + self.bad_sm
            + self.tx_ring_full
            + self.dup_rate_limited
    }
}

/// Endpoint-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcStats {
    pub tx_pkts: u64,
    pub rx_pkts: u64,
    /// Go-Back-N rollbacks (one per retransmitted request, not per packet).
    pub retransmissions: u64,
    /// Packets re-sent by Go-Back-N rollbacks.
    pub retransmitted_pkts: u64,
    /// Duplicate requests or RFRs answered from a stored response (at-most-once).
    pub dup_responses: u64,
    /// `tx_flush()` calls.
    pub tx_flushes: u64,
    /// Times [`crate::rpc::Rpc::wait_for_work`] handed over to the transport's wait
    /// ([`crate::rpc::Waited::Blocked`]).
    pub waits: u64,
    /// Response buffers whose free waited for the device to read them.
    pub deferred_frees: u64,
    pub requests_handled: u64,
    pub rpcs_completed: u64,
    pub rpcs_failed: u64,
    pub sessions_reset: u64,
    pub sm_pkts_tx: u64,
    pub sm_pkts_rx: u64,
    /// Connect requests answered with a cookie (`ConnectRetry`): no valid cookie yet.
    pub sm_cookies_sent: u64,
    /// Connect requests refused by the accept policy or the per-address cap.
    pub sessions_refused: u64,
    /// Client requests failed with `TimedOut` (no progress for `request_timeout_ns`).
    pub requests_timed_out: u64,
    /// Server: requests refused (answered [`SmPktType::Refused`](crate::sm::SmPktType)) for
    /// having a type with no handler; each of their packets also counts in `drops.no_handler`.
    pub requests_refused: u64,
    /// Client: requests failed with `NoHandler`, refused by their server.
    pub rpcs_refused: u64,
    pub drops: DropCounters,
    pub cc: crate::cc::CcStats,
}

/// Per-session counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub tx_pkts: u64,
    pub rx_pkts: u64,
    pub retransmissions: u64,
    pub drops: u64,
}
