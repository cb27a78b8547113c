//! The client side of the protocol: sending requests, credits, request-for-response packets,
//! receiving credit returns and responses, completion.
//!
//! eRPC is client-driven: every packet a server sends answers a client packet. For a request of
//! N packets and a response of M, the client sends REQ 0..N-1, the server answers REQ 0..N-2
//! with explicit credit returns and the last one with RESP 0 (`pkt_num = N-1`), then the client
//! pulls RESP 1..M-1 with RFRs numbered N..N+M-2. Each packet the client sends spends one of
//! the session's credits; each CR or RESP returns one. `num_tx`/`num_rx` count over that
//! unified sequence of `N+M-1` wire packets.

use crate::arch::prefetch2;
use crate::clock::Clock;
use crate::config::SLOTS_PER_SESSION;
use crate::error::{EnqueueError, EnqueueErrorKind, RpcError};
use crate::event::Completion;
use crate::handlers::Continuation;
use crate::msgbuf::{num_pkts, MsgBuf};
use crate::rpc::Rpc;
use crate::session::{Queued, Role, Session, SessionId, SessionState, Slot, SlotId, SlotState, NIL};
use crate::stats::DropReason;
use crate::transport::{RxPacket, Transport};
use crate::tx::MsgHdr;
use crate::wire::{Header, PktType, MAX_PKT_NUM, MAX_REQ_NUM, PKT_HDR_LEN};

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    /// Queues a request of type `req_type` on client session `session`. The endpoint owns `req`
    /// and `resp` until `cont` runs (on this thread, from the event loop), which gets them back
    /// with `tag` and the result. `resp` must be large enough for any response to this request.
    ///
    /// Up to eight requests per session are in flight; more wait in the backlog, whose size is
    /// the caller's. On refusal the buffers come back in the error.
    pub fn enqueue_request(
        &mut self,
        session: SessionId,
        req_type: u8,
        req: MsgBuf,
        resp: MsgBuf,
        cont: Continuation<'m, T, C, Ctx>,
        tag: u64,
    ) -> Result<(), EnqueueError> {
        let s = session.0 as usize;
        let err = |kind, req, resp| Err(EnqueueError { kind, req, resp });
        let Some(sess) = self.sessions.get(s) else {
            return err(EnqueueErrorKind::InvalidSession, req, resp);
        };
        // Start loading what the request will touch before reading any of it, so that the
        // misses overlap instead of following one another (with thousands of sessions the
        // session is cold): the session's two lines and those of its first slot, where a
        // request on a session with nothing in flight goes.
        prefetch2(sess as *const Session as *const u8);
        prefetch2(&sess.slots[0] as *const Slot as *const u8);
        if sess.role != Role::Client || sess.state == SessionState::Free {
            return err(EnqueueErrorKind::InvalidSession, req, resp);
        }
        if sess.state != SessionState::Connected {
            return err(EnqueueErrorKind::NotConnected, req, resp);
        }
        if !self.owns_msgbuf(&req) || !self.owns_msgbuf(&resp) {
            return err(EnqueueErrorKind::ForeignBuffer, req, resp);
        }
        let req_pkts = num_pkts(req.len(), self.data_per_pkt);
        let resp_pkts = num_pkts(resp.capacity(), self.data_per_pkt);
        if req.len() > self.cfg.max_msg_size || req_pkts + resp_pkts - 2 > MAX_PKT_NUM {
            return err(EnqueueErrorKind::TooLarge, req, resp);
        }
        let Some(cont) = self.handlers.cont_index(cont) else {
            return err(EnqueueErrorKind::TooManyContinuations, req, resp);
        };
        if !self.in_loop {
            self.now = self.clock.now_ns();
        }
        let sess = &self.sessions[s];
        if sess.free_slots != 0 && sess.backlog_head == NIL {
            let i = sess.free_slots.trailing_zeros() as usize;
            self.start_request(s, i, Queued { req_type, req, resp, cont, tag });
            return Ok(());
        }
        self.backlog
            .push(&mut self.sessions[s], Queued { req_type, req, resp, cont, tag })
            .or_else(|q| err(EnqueueErrorKind::BacklogFull, q.req, q.resp))
    }

    /// Requests of `session` waiting in the backlog.
    pub fn backlog_len(&self, session: SessionId) -> usize {
        self.sessions.get(session.0 as usize).map_or(0, |s| s.backlog_len as usize)
    }

    /// Starts request `q` in free slot `i` of session `s`.
    #[inline(always)]
    fn start_request(&mut self, s: usize, i: usize, q: Queued) {
        let Queued { req_type, mut req, resp, cont, tag } = q;
        let sess = &self.sessions[s];
        let req_num = (sess.slots[i].cur_req_num + SLOTS_PER_SESSION as u64) & MAX_REQ_NUM;
        let m =
            MsgHdr { req_type, dest_session: sess.remote_session, pkt_type: PktType::Req, first_pkt_num: 0, req_num };
        self.write_hdrs(s, &mut req, m);
        let now = self.now;
        let req_pkts = num_pkts(req.len(), self.data_per_pkt) as u16;
        let sess = &mut self.sessions[s];
        if sess.active == 0 {
            // Liveness is judged from the moment requests are pending.
            sess.last_heard_ns = now;
            sess.pings = 0;
        }
        sess.active += 1;
        sess.free_slots &= !(1 << i);
        let sl = &mut sess.slots[i];
        sl.cur_req_num = req_num;
        sl.req_type = req_type;
        sl.req = Some(req);
        sl.resp = Some(resp);
        sl.cont = cont;
        sl.tag = tag;
        sl.num_tx = 0;
        sl.num_rx = 0;
        sl.untimed_below = 0;
        sl.req_pkts = req_pkts;
        sl.resp_pkts = 0;
        sl.progress_ns = now;
        sl.state = SlotState::Active;
        self.active.push(&mut self.sessions, SlotId::new(s, i));
        self.kick(s, i);
    }

    /// Sends what slot `i` of session `s` may send with the session's credits: remaining request
    /// packets, then RFRs once the response size is known. Marks the slot stalled if credits run out.
    pub(crate) fn kick(&mut self, s: usize, i: usize) {
        loop {
            let sess = &mut self.sessions[s];
            let sl = &sess.slots[i];
            if !sl.wants_tx() || sl.in_wheel {
                return;
            }
            if sess.credits == 0 {
                sess.stalled |= 1 << i;
                return;
            }
            let n = sl.num_tx as usize;
            let dpp = self.data_per_pkt;
            let bytes = PKT_HDR_LEN
                + if n < sl.req_pkts as usize {
                    sl.req.as_ref().map_or(0, |r| r.len().saturating_sub(n * dpp).min(dpp))
                } else {
                    0
                };
            if !self.cc_may_send(s, i, bytes) {
                return;
            }
            self.send_next(s, i);
        }
    }

    /// Sends slot `i`'s next packet (a request packet, or an RFR once the response size is
    /// known), spending one credit. The caller checked `wants_tx` and the credits.
    #[inline(always)]
    pub(crate) fn send_next(&mut self, s: usize, i: usize) {
        // The slot's bookkeeping (credit, counters, TX timestamp) in one borrow of the session,
        // then the frame.
        let ts = self.cc_tx_stamp();
        let now = self.now;
        let sess = &mut self.sessions[s];
        sess.credits -= 1;
        let sl = &mut sess.slots[i];
        let n = sl.num_tx;
        sl.num_tx = n + 1;
        sl.progress_ns = now;
        if let Some(ts) = ts {
            sl.tx_ts[n as usize % crate::cc::RTT_TS] = ts;
        }
        if n < sl.req_pkts {
            let req = sl.req.as_ref().expect("active request");
            let pkt = crate::tx::data_pkt(self.heap.region(), self.data_per_pkt, req, n as usize);
            sess.stats.tx_pkts += 1;
            self.tx.push(&mut self.transport, &mut self.stats, pkt);
        } else {
            let (rt, rn) = (sl.req_type, sl.cur_req_num);
            self.send_ctrl(s, PktType::Rfr, rt, n, rn);
        }
    }

    /// Gives returned credits to the session's stalled slots.
    #[inline(always)]
    pub(crate) fn kick_stalled(&mut self, s: usize) {
        if self.sessions[s].stalled != 0 {
            self.kick_stalled_slots(s);
        }
    }

    fn kick_stalled_slots(&mut self, s: usize) {
        let mut m = self.sessions[s].stalled;
        self.sessions[s].stalled = 0;
        while m != 0 && self.sessions[s].credits > 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            self.kick(s, i);
        }
        self.sessions[s].stalled |= m;
    }

    /// A credit return or response packet on client session `s`.
    #[inline(always)]
    pub(crate) fn client_rx(&mut self, s: usize, h: &Header, p: &RxPacket) {
        let i = (h.req_num % SLOTS_PER_SESSION as u64) as usize;
        let now = self.now;
        let dpp = self.data_per_pkt;
        let sess = &mut self.sessions[s];
        let sl = &mut sess.slots[i];
        if sl.state != SlotState::Active || sl.cur_req_num != h.req_num {
            return self.drop_pkt(Some(s), DropReason::Stale);
        }
        let last_req = sl.req_pkts - 1;
        if h.pkt_type == PktType::ExplCr {
            if h.pkt_num == last_req {
                // "Request received, handler still running": the server answers a retransmitted
                // last request packet so while its handler runs. Liveness only.
                sess.last_heard_ns = now;
                sess.stats.rx_pkts += 1;
                return;
            }
            if h.pkt_num > last_req {
                return self.drop_pkt(Some(s), DropReason::WrongType);
            }
            if h.pkt_num != sl.num_rx || sl.num_rx >= sl.num_tx {
                return self.drop_pkt(Some(s), DropReason::OutOfOrder);
            }
            sl.num_rx += 1;
            sl.progress_ns = now;
            sess.credits += 1;
            sess.last_heard_ns = now;
            sess.stats.rx_pkts += 1;
            self.cc_on_ack(s, i, h.pkt_num);
            self.kick_stalled(s);
            return;
        }
        // A response packet.
        if h.pkt_num < last_req {
            return self.drop_pkt(Some(s), DropReason::WrongType);
        }
        if h.pkt_num != sl.num_rx || sl.num_rx >= sl.num_tx {
            return self.drop_pkt(Some(s), DropReason::OutOfOrder);
        }
        let idx = (h.pkt_num - last_req) as usize;
        let size = h.msg_size as usize;
        let resp = sl.resp.as_mut().expect("active response buffer");
        // Validate everything before changing the slot: a dropped packet leaves no trace.
        let resp_pkts = num_pkts(size, dpp);
        let too_large = (idx == 0 && (size > resp.capacity() || sl.req_pkts as usize + resp_pkts - 2 > MAX_PKT_NUM))
            .then_some(RpcError::ResponseTooLarge { size, capacity: resp.capacity() });
        if idx > 0 && size != resp.len() {
            return self.drop_pkt(Some(s), DropReason::BadMsgSize);
        }
        let off = idx * dpp;
        let len = if too_large.is_some() { 0 } else { size.saturating_sub(off).min(dpp) };
        if (p.len as usize) < PKT_HDR_LEN + len {
            return self.drop_pkt(Some(s), DropReason::Truncated);
        }
        if idx == 0 && too_large.is_none() {
            resp.resize(size);
            sl.resp_pkts = resp_pkts as u16;
        }
        Self::copy_payload(p, resp, off, len);
        sl.num_rx += 1;
        sl.progress_ns = now;
        let done = too_large.is_some() || sl.num_rx == sl.wire_pkts();
        sess.credits += 1;
        sess.last_heard_ns = now;
        sess.stats.rx_pkts += 1;
        self.cc_on_ack(s, i, h.pkt_num);
        if done {
            self.complete(s, i, too_large.map_or(Ok(()), Err));
        } else {
            self.kick(s, i);
        }
        self.kick_stalled(s);
    }

    /// Finishes the RPC in slot `i`: frees the slot, starts the next queued request on the
    /// session (so the backlog stays FIFO), then runs the continuation.
    #[inline(always)]
    pub(crate) fn complete(&mut self, s: usize, i: usize, result: Result<(), RpcError>) {
        self.active.remove(&mut self.sessions, SlotId::new(s, i));
        let sess = &mut self.sessions[s];
        sess.active -= 1;
        sess.free_slots |= 1 << i;
        sess.stalled &= !(1 << i);
        let sl = &mut sess.slots[i];
        // Credits spent on packets that will never be answered come back (failure paths only).
        sess.credits += sl.num_tx - sl.num_rx;
        sl.state = SlotState::Free;
        let req = sl.req.take().expect("active request");
        let resp = sl.resp.take().expect("active response buffer");
        let (cont, tag) = (sl.cont, sl.tag);
        if sess.state == SessionState::Connected && sess.backlog_head != NIL {
            if let Some(q) = self.backlog.pop(&mut self.sessions[s]) {
                self.start_request(s, i, q);
            }
        }
        match result {
            Ok(()) => self.stats.rpcs_completed += 1,
            Err(_) => self.stats.rpcs_failed += 1,
        }
        let f = self.handlers.cont(cont);
        let len = resp.len();
        f(self, Completion { session: SessionId(s as u16), tag, result: result.map(|()| len), req, resp });
    }

    /// Runs the continuations of everything pending on client session `s` with `err`
    /// (active slots first, then the backlog in order).
    pub(crate) fn fail_all(&mut self, s: usize, err: RpcError) {
        for i in 0..SLOTS_PER_SESSION {
            if self.sessions[s].slots[i].state == SlotState::Active {
                self.complete(s, i, Err(err));
            }
        }
        while let Some(q) = self.backlog.pop(&mut self.sessions[s]) {
            self.stats.rpcs_failed += 1;
            let f = self.handlers.cont(q.cont);
            f(
                self,
                Completion { session: SessionId(s as u16), tag: q.tag, result: Err(err), req: q.req, resp: q.resp },
            );
        }
    }
}
