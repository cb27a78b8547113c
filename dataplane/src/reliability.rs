//! Reliability: retransmission timeout with Go-Back-N, and session reset when the peer is gone.
//!
//! Every `rto/10` the event loop walks the list of active client requests. A request that has
//! packets outstanding (`num_tx > num_rx`) and has made no progress for one RTO is rolled back
//! to its first unacknowledged wire packet: its credits come back, `num_tx = num_rx`, and it is
//! kicked to send from there again. The retransmitted packets may reuse buffers that are still
//! queued for DMA, so the batch is sent and the transport flushed (`tx_flush`) before anything
//! else happens. Reordered packets that the rollback causes are dropped by the in-order checks.
//!
//! Unlike the original, a client session whose peer has said nothing for
//! `session_timeout_ns` while requests were pending is reset (see [`crate::liveness`]): each
//! pending continuation runs with [`RpcError::SessionReset`](crate::RpcError::SessionReset) and
//! the application gets [`SessionEvent::Reset`](crate::SessionEvent::Reset).

use crate::clock::Clock;
use crate::event::ResetReason;
use crate::rpc::Rpc;
use crate::session::SlotList;
use crate::transport::Transport;

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    pub(crate) fn loss_scan(&mut self) {
        let now = self.now;
        let rto = self.cfg.rto_ns;
        let timeout = self.cfg.session_timeout_ns;
        let req_timeout = self.cfg.request_timeout_ns;
        let mut retransmitted = false;
        // Sessions to reset: the peer is silent, or this slot's request is stuck.
        let mut dead: heapless::Vec<(u16, Option<u8>), 16> = heapless::Vec::new();
        let mut cur = self.active.head();
        while let Some(id) = cur {
            let (s, i) = (id.session(), id.slot());
            let next = SlotList::next(&self.sessions, id);
            cur = next;
            let sess = &mut self.sessions[s];
            let silent = now.saturating_sub(sess.last_heard_ns) > timeout;
            // Progress is a new request in the slot or a packet of it received in order; the
            // marks live in the slot's last line, which only this scan touches.
            let sl = &mut sess.slots[i];
            let mark = ((sl.cur_req_num as u32) << 16) | sl.num_rx as u32;
            let stuck = if sl.scan_mark != mark {
                sl.scan_mark = mark;
                sl.stuck_since_ns = now;
                false
            } else {
                now.saturating_sub(sl.stuck_since_ns) > req_timeout
            };
            if silent || stuck {
                if !dead.iter().any(|d| d.0 == s as u16) && dead.push((s as u16, stuck.then_some(i as u8))).is_err() {
                    break; // the rest next scan
                }
                continue;
            }
            let sl = &sess.slots[i];
            if sl.num_tx > sl.num_rx && now.saturating_sub(sl.progress_ns) > rto && self.go_back_n(s, i) {
                retransmitted = true;
            }
        }
        if retransmitted {
            self.drain_tx_and_dma();
        }
        for (s, stuck) in dead {
            match stuck {
                Some(i) => self.reset_client_session_for(s as usize, ResetReason::RequestTimedOut, Some(i as usize)),
                None => self.reset_client_session(s as usize, ResetReason::PeerTimeout),
            }
        }
    }

    /// Rolls slot `i` of session `s` back to its first unacknowledged packet and resends.
    /// Returns false if it skipped the slot (its next packet still waits in the wheel).
    fn go_back_n(&mut self, s: usize, i: usize) -> bool {
        let now = self.now;
        if self.sessions[s].slots[i].in_wheel {
            // Its next packet has not even left: do not send anything twice; look again next scan.
            self.stats.cc.retx_skipped_in_wheel += 1;
            return false;
        }
        let sess = &mut self.sessions[s];
        let sl = &mut sess.slots[i];
        let delta = sl.num_tx - sl.num_rx;
        sess.credits += delta;
        sl.num_tx = sl.num_rx;
        sl.progress_ns = now;
        sess.stats.retransmissions += 1;
        self.stats.retransmissions += 1;
        self.stats.retransmitted_pkts += delta as u64;
        // Packets sent again are never timed (their RTT would be ambiguous).
        let sl = &mut self.sessions[s].slots[i];
        sl.untimed_below = sl.untimed_below.max(sl.num_rx + delta);
        self.kick(s, i);
        // The rollback returned credits: slots of this session waiting for them may go too.
        self.kick_stalled(s);
        true
    }
}
