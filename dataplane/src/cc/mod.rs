//! Congestion-control hooks.
//!
//! The original runs Timely per client session and paces packets through a Carousel timing wheel
//! (`shared/reference/erpc-protocol.md` §1.7). This module is where that plugs in: the client
//! calls these hooks when it sends a packet, when a packet is acknowledged (credit return or
//! response, which gives an RTT sample against the send time), and when it rolls back. They do
//! nothing yet; sessions then always send at line rate, which is what the original's bypasses do
//! for an uncongested session. [`timely`] holds the rate computation and [`wheel`] the Carousel timing
//! wheel; wiring them into these hooks (with the uncongested-session bypasses) is the congestion-control issue's work.

use crate::session::Session;

/// Client packet `pkt_num` of slot `slot` is being sent at `now_ns`.
#[inline(always)]
pub(crate) fn on_pkt_tx(_s: &mut Session, _slot: usize, _pkt_num: u16, _now_ns: u64) {}

/// Client packet `pkt_num` of slot `slot` was acknowledged (CR or RESP) at `now_ns`.
#[inline(always)]
pub(crate) fn on_pkt_acked(_s: &mut Session, _slot: usize, _pkt_num: u16, _now_ns: u64) {}

/// Slot `slot` was rolled back for retransmission.
#[inline(always)]
pub(crate) fn on_retransmit(_s: &mut Session, _slot: usize, _now_ns: u64) {}

pub mod timely;
pub mod wheel;
