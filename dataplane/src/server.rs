//! The server side: receiving requests, running handlers, sending responses, and at-most-once
//! execution.
//!
//! Per slot the server remembers the current request number. A request with
//! `req_num == cur + 8` is new; `req_num == cur` is the current one (a duplicate or the next
//! packet of a multi-packet request); anything else is stale. A handler runs once per request
//! number, so a duplicate never runs it twice: it gets the stored response (or, while the
//! handler is still running, a credit return for the last request packet, telling the client the
//! server is alive). The stored response is freed when the slot's next request arrives, which
//! means the client has it.

use crate::clock::Clock;
use crate::config::SLOTS_PER_SESSION;
use crate::error::{RespondError, RespondErrorKind};
use crate::handlers::{HandlerMode, ReqHandle};
use crate::msgbuf::{num_pkts, MsgBuf};
use crate::rpc::Rpc;
use crate::session::{Role, SessionState, SlotId, SlotState};
use crate::sm::ERR_NO_HANDLER;
use crate::stats::DropReason;
use crate::transport::{RxPacket, Transport};
use crate::tx::MsgHdr;
use crate::wire::{Header, PktType, MAX_PKT_NUM, MAX_REQ_NUM, PKT_HDR_LEN};

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    /// A request or RFR packet on server session `s`.
    #[inline(always)]
    pub(crate) fn server_rx(&mut self, s: usize, h: &Header, p: &RxPacket) {
        self.sessions[s].last_heard_ns = self.now;
        if h.pkt_type == PktType::Rfr {
            return self.server_rx_rfr(s, h);
        }
        let i = (h.req_num % SLOTS_PER_SESSION as u64) as usize;
        let dpp = self.data_per_pkt;
        let size = h.msg_size as usize;
        let k = h.pkt_num as usize;
        let npkts = num_pkts(size, dpp);
        if k >= npkts {
            return self.drop_pkt(Some(s), DropReason::BadMsgSize);
        }
        let len = size.saturating_sub(k * dpp).min(dpp);
        if (p.len as usize) < PKT_HDR_LEN + len {
            return self.drop_pkt(Some(s), DropReason::Truncated);
        }
        let sl = &self.sessions[s].slots[i];
        let cur = sl.cur_req_num;
        if h.req_num == (cur + SLOTS_PER_SESSION as u64) & MAX_REQ_NUM {
            if k != 0 {
                return self.drop_pkt(Some(s), DropReason::OutOfOrder);
            }
            if matches!(sl.state, SlotState::Receiving | SlotState::InHandler) {
                // A correct client starts the next request on a slot only after the response.
                return self.drop_pkt(Some(s), DropReason::Stale);
            }
            if !self.handlers.has(h.req_type) {
                return self.refuse_request(s, i, h, npkts);
            }
            if let Err(r) = self.begin_request(s, i, h, npkts) {
                return self.drop_pkt(Some(s), r);
            }
        } else if h.req_num == cur {
            if sl.state == SlotState::Free {
                return self.drop_pkt(Some(s), DropReason::Stale);
            }
            // Every packet of a request, new or duplicate, repeats what its first packet said:
            // anything else is a corrupted or forged copy, never answered.
            if size != sl.req_size as usize || h.req_type != sl.req_type {
                return self.drop_pkt(Some(s), DropReason::BadMsgSize);
            }
            if sl.state == SlotState::Refused {
                // Its refusal was lost (the client resends from the first packet), or a later
                // packet that was on its way: only a first packet is answered, at most as often
                // as duplicates are (beyond that, counted as rate-limited instead).
                if k != 0 {
                    return self.drop_pkt(Some(s), DropReason::NoHandler);
                }
                if self.dup_resend_allowed(s) {
                    self.send_sm_refusal(s, h.req_num, ERR_NO_HANDLER);
                    self.drop_pkt(Some(s), DropReason::NoHandler);
                }
                return;
            }
            match sl.state {
                SlotState::Receiving if k == sl.num_rx as usize => {}
                _ if k < sl.num_rx as usize => return self.server_dup_req(s, i, h),
                _ => return self.drop_pkt(Some(s), DropReason::OutOfOrder),
            }
        } else {
            return self.drop_pkt(Some(s), DropReason::Stale);
        }
        // Accept packet k.
        let sess = &mut self.sessions[s];
        sess.stats.rx_pkts += 1;
        let sl = &mut sess.slots[i];
        Self::copy_payload(p, sl.req.as_mut().expect("request buffer"), k * dpp, len);
        sl.num_rx += 1;
        if (sl.num_rx as usize) < npkts {
            self.send_ctrl(s, PktType::ExplCr, h.req_type, h.pkt_num, h.req_num);
            return;
        }
        sl.state = SlotState::InHandler;
        self.dispatch(s, i);
    }

    /// Request `h.req_num` is of a type with no handler here. The slot moves on to it without a
    /// buffer, so that the client's next request on the slot is the next one here too, and the
    /// client is told at once (it would otherwise resend the request until it timed out, and
    /// then reset the session with every other request on it).
    #[cold]
    #[inline(never)]
    fn refuse_request(&mut self, s: usize, i: usize, h: &Header, npkts: usize) {
        self.drop_pkt(Some(s), DropReason::NoHandler);
        self.bury(s, i);
        let sl = &mut self.sessions[s].slots[i];
        sl.cur_req_num = h.req_num;
        sl.req_type = h.req_type;
        sl.req_size = h.msg_size;
        sl.req_pkts = npkts as u16;
        sl.num_rx = 0;
        sl.state = SlotState::Refused;
        self.stats.requests_refused += 1;
        self.send_sm_refusal(s, h.req_num, ERR_NO_HANDLER);
    }

    /// Starts a new request in slot `i`: takes a request buffer (a one-packet buffer from the
    /// endpoint's pool when it fits), then frees the previous response. Fails without changing
    /// anything.
    #[inline(always)]
    fn begin_request(&mut self, s: usize, i: usize, h: &Header, npkts: usize) -> Result<(), DropReason> {
        let size = h.msg_size as usize;
        let (mut buf, is_pre) = if npkts == 1 {
            match self.req_pool.pop() {
                Some(b) => (b, true),
                None => (self.alloc_msg_buffer(self.data_per_pkt).map_err(|_| DropReason::NoMemory)?, true),
            }
        } else {
            (self.alloc_msg_buffer(size).map_err(|_| DropReason::NoMemory)?, false)
        };
        buf.resize(size);
        self.bury(s, i);
        let sl = &mut self.sessions[s].slots[i];
        sl.cur_req_num = h.req_num;
        sl.req_type = h.req_type;
        sl.req_size = h.msg_size;
        sl.req = Some(buf);
        sl.req_is_pre = is_pre;
        sl.req_pkts = npkts as u16;
        sl.num_rx = 0;
        sl.state = SlotState::Receiving;
        Ok(())
    }

    /// Frees the stored response of slot `i` (a well-behaved client has it: it sent the next
    /// request). A packet of it may still be queued for the device (a peer can send the next
    /// request before it has the response), so it is freed or reused only once the device has
    /// read it.
    #[inline(always)]
    fn bury(&mut self, s: usize, i: usize) {
        let sl = &mut self.sessions[s].slots[i];
        if let Some(r) = sl.resp.take() {
            let (is_pre, seq) = (sl.resp_is_pre, sl.resp_seq);
            if let Some(r) = self.retire(r, seq, is_pre) {
                self.sessions[s].slots[i].pre_resp = Some(r);
            }
        }
        self.release_req(s, i);
    }

    /// Drops the request buffer of slot `i`: a one-packet buffer goes back to the endpoint's pool
    /// (last in, first out: the next request gets it while it is still in the cache), a large one
    /// (or one the full pool has no room for) to the allocator. Request buffers are never
    /// transmitted.
    fn release_req(&mut self, s: usize, i: usize) {
        let sl = &mut self.sessions[s].slots[i];
        if let Some(r) = sl.req.take() {
            let r = if sl.req_is_pre { self.req_pool.push(r).err() } else { Some(r) };
            if let Some(r) = r {
                let _ = self.heap.free(r);
            }
        }
    }

    /// Runs the handler of a complete request, or queues it for the workers.
    #[inline(always)]
    fn dispatch(&mut self, s: usize, i: usize) {
        let handle = self.handle_of(s, i);
        self.stats.requests_handled += 1;
        let entry = self.handlers.get(handle.req_type);
        match entry.mode {
            HandlerMode::Foreground => {
                if let Some(f) = entry.f {
                    f(self, handle);
                }
            }
            HandlerMode::Background { .. } => {
                self.bg_pending.push(&mut self.sessions, SlotId::new(s, i));
                self.pump_bg();
            }
        }
    }

    /// The handle of the request in slot `i` of server session `s`.
    #[inline]
    pub(crate) fn handle_of(&self, s: usize, i: usize) -> ReqHandle {
        let sess = &self.sessions[s];
        let sl = &sess.slots[i];
        ReqHandle {
            slot: SlotId::new(s, i),
            req_type: sl.req_type,
            generation: sess.generation,
            req_num: sl.cur_req_num,
        }
    }

    /// A duplicate of an already received request packet.
    fn server_dup_req(&mut self, s: usize, i: usize, h: &Header) {
        self.sessions[s].stats.rx_pkts += 1;
        let sl = &self.sessions[s].slots[i];
        if h.pkt_num + 1 < sl.req_pkts {
            // Its credit return was lost: send it again.
            self.send_ctrl(s, PktType::ExplCr, h.req_type, h.pkt_num, h.req_num);
        } else if sl.state == SlotState::Responded {
            // The response (packet 0) was lost: resend it. Its buffer is freed (or reused) only
            // once the device has read this packet too (`resp_seq`, see `bury`), so nothing waits
            // for the device here.
            if !self.dup_resend_allowed(s) {
                return;
            }
            let sl = &self.sessions[s].slots[i];
            let pkt = self.data_pkt(sl.resp.as_ref().expect("stored response"), 0);
            self.sessions[s].slots[i].resp_seq = self.tx.next_seq();
            self.push_tx(pkt, s);
            self.stats.dup_responses += 1;
        } else {
            // The handler has not responded yet: tell the client we are alive.
            self.send_ctrl(s, PktType::ExplCr, h.req_type, h.pkt_num, h.req_num);
        }
    }

    /// A request-for-response: send response packet `pkt_num - (req_pkts - 1)`.
    fn server_rx_rfr(&mut self, s: usize, h: &Header) {
        let i = (h.req_num % SLOTS_PER_SESSION as u64) as usize;
        let sl = &self.sessions[s].slots[i];
        if h.req_num != sl.cur_req_num || sl.state != SlotState::Responded {
            return self.drop_pkt(Some(s), DropReason::Stale);
        }
        if h.req_type != sl.req_type {
            return self.drop_pkt(Some(s), DropReason::WrongType);
        }
        let resp_pkts = sl.resp_pkts;
        let first = sl.req_pkts - 1;
        if h.pkt_num <= first || h.pkt_num - first >= resp_pkts {
            return self.drop_pkt(Some(s), DropReason::WrongType);
        }
        let idx = (h.pkt_num - first) as usize;
        if h.pkt_num > sl.num_rx {
            return self.drop_pkt(Some(s), DropReason::OutOfOrder);
        }
        let dup = h.pkt_num < sl.num_rx;
        if dup && !self.dup_resend_allowed(s) {
            return;
        }
        let sl = &self.sessions[s].slots[i];
        let pkt = self.data_pkt(sl.resp.as_ref().expect("stored response"), idx);
        let seq = self.tx.next_seq();
        let sess = &mut self.sessions[s];
        sess.stats.rx_pkts += 1;
        sess.slots[i].resp_seq = seq;
        if !dup {
            sess.slots[i].num_rx += 1;
        }
        self.push_tx(pkt, s);
        if dup {
            self.stats.dup_responses += 1;
        }
    }

    /// Whether session `s` may answer one more duplicate with a resent response packet: at most
    /// `session_credits` per `rto_ns`, which is what a correct client's rollback can ask for (it
    /// has at most that many packets unacknowledged). More are dropped and counted: a flood of
    /// forged duplicates cannot turn the server into an amplifier toward the session's peer.
    fn dup_resend_allowed(&mut self, s: usize) -> bool {
        let (now, rto, limit) = (self.now, self.cfg.rto_ns, self.cfg.session_credits);
        let sess = &mut self.sessions[s];
        if now.saturating_sub(sess.dup_window_ns) >= rto {
            sess.dup_window_ns = now;
            sess.dup_count = 0;
        }
        if sess.dup_count >= limit {
            self.drop_pkt(Some(s), DropReason::DupRateLimited);
            return false;
        }
        sess.dup_count += 1;
        true
    }

    pub(crate) fn valid_handle(&self, h: &ReqHandle) -> bool {
        let Some(sess) = self.sessions.get(h.slot.session()) else { return false };
        let sl = &sess.slots[h.slot.slot()];
        sess.role == Role::Server
            && sess.state == SessionState::Connected
            && sess.generation == h.generation
            && sl.cur_req_num == h.req_num
            && sl.state == SlotState::InHandler
    }

    /// The request data of a request being handled.
    pub fn request(&self, h: &ReqHandle) -> Option<&[u8]> {
        if !self.valid_handle(h) {
            return None;
        }
        self.sessions.slot(h.slot).req.as_ref().map(|b| b.data())
    }

    /// The request and the slot's preallocated one-packet response buffer (`max_data_per_pkt()`
    /// bytes), to fill before [`Rpc::enqueue_response_prealloc`]. `None` for a stale handle or if
    /// no memory is left for the buffer.
    pub fn request_and_prealloc_response(&mut self, h: &ReqHandle) -> Option<(&[u8], &mut [u8])> {
        if !self.valid_handle(h) {
            return None;
        }
        if self.sessions.slot(h.slot).pre_resp.is_none() {
            let b = self.alloc_msg_buffer(self.data_per_pkt).ok()?;
            self.sessions.slot_mut(h.slot).pre_resp = Some(b);
        }
        let sl = self.sessions.slot_mut(h.slot);
        let resp = sl.pre_resp.as_mut().expect("allocated above");
        resp.resize(resp.capacity());
        Some((sl.req.as_ref()?.data(), resp.data_mut()))
    }

    /// Answers in one call with the slot's preallocated one-packet buffer: `fill` gets the
    /// request and the buffer (`max_data_per_pkt()` bytes) and returns the response length.
    /// Checks the handle once, where [`Rpc::request_and_prealloc_response`] followed by
    /// [`Rpc::enqueue_response_prealloc`] checks it twice. A length beyond the buffer is
    /// refused (`TooLarge`) and the request stays pending, as it does without memory for the
    /// buffer (`OutOfMemory`).
    pub fn respond_prealloc_with(
        &mut self,
        h: ReqHandle,
        fill: impl FnOnce(&[u8], &mut [u8]) -> usize,
    ) -> Result<(), RespondError> {
        if !self.valid_handle(&h) {
            return Err(RespondError { kind: RespondErrorKind::InvalidHandle, resp: None });
        }
        let mut buf = self.take_pre_resp(h.slot)?;
        buf.resize(buf.capacity());
        let req = self.sessions.slot(h.slot).req.as_ref().expect("a request in its handler");
        let len = fill(req.data(), buf.data_mut());
        if len > buf.capacity() {
            self.sessions.slot_mut(h.slot).pre_resp = Some(buf);
            return Err(RespondError { kind: RespondErrorKind::TooLarge, resp: None });
        }
        buf.resize(len);
        self.respond(h.slot.session(), h.slot.slot(), buf, true);
        Ok(())
    }

    /// Answers with the first `len` bytes of the preallocated response buffer.
    pub fn enqueue_response_prealloc(&mut self, h: ReqHandle, len: usize) -> Result<(), RespondError> {
        if !self.valid_handle(&h) {
            return Err(RespondError { kind: RespondErrorKind::InvalidHandle, resp: None });
        }
        if len > self.data_per_pkt {
            return Err(RespondError { kind: RespondErrorKind::TooLarge, resp: None });
        }
        let mut buf = self.take_pre_resp(h.slot)?;
        buf.resize(len);
        self.respond(h.slot.session(), h.slot.slot(), buf, true);
        Ok(())
    }

    /// The slot's preallocated one-packet response buffer, or a new one. Without memory for it
    /// the request stays pending: the caller may retry, or answer with its own buffer.
    fn take_pre_resp(&mut self, slot: SlotId) -> Result<MsgBuf, RespondError> {
        match self.sessions.slot_mut(slot).pre_resp.take() {
            Some(b) => Ok(b),
            None => self
                .alloc_msg_buffer(self.data_per_pkt)
                .map_err(|_| RespondError { kind: RespondErrorKind::OutOfMemory, resp: None }),
        }
    }

    /// Answers a request with `resp`, which the endpoint owns (and frees) from now on. May be
    /// called from the handler or any time later on this thread (nested RPCs).
    pub fn enqueue_response(&mut self, h: ReqHandle, resp: MsgBuf) -> Result<(), RespondError> {
        if !self.valid_handle(&h) {
            return Err(RespondError { kind: RespondErrorKind::InvalidHandle, resp: Some(resp) });
        }
        if !self.owns_msgbuf(&resp) {
            return Err(RespondError { kind: RespondErrorKind::ForeignBuffer, resp: Some(resp) });
        }
        let (s, i) = (h.slot.session(), h.slot.slot());
        let req_pkts = self.sessions[s].slots[i].req_pkts as usize;
        if resp.len() > self.cfg.max_msg_size || req_pkts + num_pkts(resp.len(), self.data_per_pkt) - 2 > MAX_PKT_NUM {
            return Err(RespondError { kind: RespondErrorKind::TooLarge, resp: Some(resp) });
        }
        self.respond(s, i, resp, false);
        Ok(())
    }

    #[inline(always)]
    fn respond(&mut self, s: usize, i: usize, mut resp: MsgBuf, is_pre: bool) {
        let sess = &self.sessions[s];
        let sl = &sess.slots[i];
        let m = MsgHdr {
            req_type: sl.req_type,
            dest_session: sess.remote_session,
            pkt_type: PktType::Resp,
            first_pkt_num: sl.req_pkts - 1,
            req_num: sl.cur_req_num,
        };
        self.write_hdrs(s, &mut resp, m);
        let pkt = self.data_pkt(&resp, 0);
        // The request is no longer needed.
        self.release_req(s, i);
        let seq = self.tx.next_seq();
        let resp_pkts = num_pkts(resp.len(), self.data_per_pkt) as u16;
        let sl = &mut self.sessions[s].slots[i];
        sl.resp = Some(resp);
        sl.resp_pkts = resp_pkts;
        sl.resp_is_pre = is_pre;
        sl.resp_seq = seq;
        sl.state = SlotState::Responded;
        self.push_tx(pkt, s);
    }
}
