//! Endpoint configuration and protocol constants (defaults from the original, erpc-io/eRPC:
//! `src/sm_types.h`, `src/rpc.h`, `src/tweakme.h`).

/// Concurrent requests per session (`kSessionReqWindow`).
pub const SLOTS_PER_SESSION: usize = 8;
/// Default session credits (`kSessionCredits`): unacknowledged packets per session.
pub const DEFAULT_CREDITS: u16 = 32;
/// Default frame size (`kMTU` of the original's Ethernet transports).
pub const DEFAULT_MTU: usize = 1024;
/// Largest message: 8 MiB. Request and response of one RPC together are further bounded by the
/// 14-bit packet number: `req_pkts + resp_pkts - 1 <= 16383`.
pub const MAX_MSG_SIZE: usize = 8 << 20;
/// Frames received per `rx_burst`.
pub const RX_BATCH: usize = 32;
/// Frames per `tx_burst`.
pub const TX_BATCH: usize = 32;

/// Run-time configuration of one endpoint. `Default` gives the original's values.
#[derive(Clone, Copy, Debug)]
pub struct RpcConfig {
    /// Frame size; the endpoint uses `min(mtu, transport.mtu())`.
    pub mtu: usize,
    /// Credits per client session (1..=1024).
    pub session_credits: u16,
    /// Retransmission timeout.
    pub rto_ns: u64,
    /// A client session with pending requests that hears nothing from its peer for this long is
    /// reset: every pending continuation runs with [`crate::RpcError::SessionReset`].
    pub session_timeout_ns: u64,
    /// Interval between retries of connect and disconnect requests.
    pub sm_retry_ns: u64,
    /// A client session without pending requests that has heard nothing from its server for this
    /// long sends a keepalive ping, then one every `keepalive_ns / 4` while it stays silent. So
    /// idle sessions keep their server session, and a dead server is noticed without requests:
    /// an idle session silent for `keepalive_ns + session_timeout_ns` is reset. (Pings are per
    /// session: 20,000 idle sessions cost 20,000 small packets per `keepalive_ns`.)
    pub keepalive_ns: u64,
    /// A server session that has heard nothing from its client for this long, with no request
    /// being received or handled, is freed (its client crashed, or its disconnect was lost).
    /// Must exceed `keepalive_ns + session_timeout_ns`.
    pub server_idle_timeout_ns: u64,
    /// Connect/disconnect attempts before giving up (connect fails with `RemoteUnreachable`).
    pub sm_max_attempts: u32,
    /// A client request that makes no progress (no credit return or response packet in order)
    /// for this long fails with [`crate::RpcError::TimedOut`], and its session is reset: no RPC
    /// waits forever, even while its server keeps answering "still working". Handlers that run
    /// longer than this (background handlers, say) need a larger value. At least `2 * rto_ns`.
    pub request_timeout_ns: u64,
    /// Server sessions one client IPv4 address may hold on this endpoint; more connect requests
    /// from it are refused ([`crate::SmError::TooManySessionsFromClient`]). A machine's threads
    /// share its address: raise it for clients with many endpoints (or many sessions each).
    pub max_sessions_per_client: u16,
    /// Largest message this endpoint sends or accepts (at most [`MAX_MSG_SIZE`]).
    pub max_msg_size: usize,
    /// Congestion control (Timely, pacing, bypasses).
    pub cc: crate::cc::CcConfig,
    /// Seed for session tokens, which must not repeat when an endpoint restarts (a server would
    /// take the new client for the old one). The endpoint also mixes in the clock and its storage
    /// address; give a random value where one is available ([`RpcConfig::random_seed`] with
    /// `std`), a fixed one only in simulations that must be reproducible.
    pub seed: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            mtu: DEFAULT_MTU,
            session_credits: DEFAULT_CREDITS,
            rto_ns: 5_000_000,
            session_timeout_ns: 1_000_000_000,
            sm_retry_ns: 100_000_000,
            keepalive_ns: 1_000_000_000,
            server_idle_timeout_ns: 30_000_000_000,
            sm_max_attempts: 10,
            request_timeout_ns: 10_000_000_000,
            max_sessions_per_client: 1024,
            max_msg_size: MAX_MSG_SIZE,
            cc: crate::cc::CcConfig::default(),
            seed: 0x5EED_E4C0_FFEE_0001,
        }
    }
}

#[cfg(feature = "std")]
impl RpcConfig {
    /// A seed from the operating system's randomness (through `std`'s hash keys).
    pub fn random_seed() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        h.write_u64(t);
        h.finish()
    }
}
