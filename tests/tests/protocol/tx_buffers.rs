//! Transmit buffers: what the device may still read is never reused or overwritten; foreign msgbufs refused.

use crate::harness::*;
use erpc_dataplane::transport::{RxPacket, Transport, TxPacket};
use erpc_dataplane::worker::BgQueues;
use erpc_dataplane::EnqueueErrorKind;

/// An RFR and the slot's next request in one burst: the response packet the RFR asked for
/// goes out with the response's bytes, not with memory reused by a later request.
#[test]
fn rfr_then_next_request_in_one_burst_sends_the_response() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 1500; // 2 response packets
    let tx = b.deliver(b.req(8, b"x"));
    assert_eq!(tx.len(), 1);
    b.rpc.ctx_mut().resp_len = 10;
    let evil = vec![0xEE; 1500];
    let mut burst = vec![b.ctrl(PktType::Rfr, 1, 8)];
    burst.extend(b.req(16, b"y"));
    burst.extend(b.req(9, &evil));
    let tx = b.deliver(burst);
    let r1 = tx
        .iter()
        .find(|f| {
            let h = p(f);
            h.ty == PktType::Resp && h.req_num == b.base + 8 && h.pkt_num == 1
        })
        .expect("RESP 1 sent");
    assert_eq!(data_of(r1), &pattern(RESP_SEED, 1500)[968..], "RESP 1 carries bytes that are not the response");
}

fn msg_frames_dpp(dpp: usize, dest: u16, req_num: u64, data: &[u8]) -> Vec<Vec<u8>> {
    (0..num_pkts(data.len(), dpp))
        .map(|k| {
            let lo = k * dpp;
            let hi = data.len().min(lo + dpp);
            let h = ErpcHdr::new(RT, data.len() as u32, dest, PktType::Req, k as u16, req_num);
            frame(&PEER, &ME, h, &data[lo..hi])
        })
        .collect()
}

fn h_unused(_: &mut Ep, _: ReqHandle) {}

/// A background handler whose registered response size would exceed the 16383-packet bound
/// together with its request gets a clamped buffer, and its response is sent.
#[test]
fn background_response_is_clamped_to_the_packet_bound_and_sent() {
    let clock: Clk = Rc::new(SimClock::new());
    clock.set(1_000_000);
    let (nic, script) = ScriptNic::new(ME);
    let cfg = RpcConfig { mtu: PKT_HDR_LEN + 64, ..test_config(1) };
    let rpc = Rpc::new(nic, clock.clone(), Ctx::default(), memory(16 << 20, 4, 16), cfg).unwrap();
    let mut b =
        Bench { rpc, script, clock, addr: ME, peer: PEER, local: 0, remote: 0, check_l2l3: true, base: 0, token: 0 };
    let q = Arc::new(BgQueues::new());
    b.rpc.attach_workers(q.clone());
    b.rpc.register_handler(RT, h_unused, HandlerMode::Background { max_resp_size: 600_000 }).unwrap();
    let tx = b.connect_req(sm_body(0, TOKEN, CS, 0, PEER, ME));
    let (_, body) = sm_of(&tx[0]);
    b.local = body.server_session.get();
    b.remote = CS;
    b.base = req_num_base(TOKEN);
    let frames = msg_frames_dpp(64, b.local, b.base + 8, &vec![1u8; 600_000]);
    let req_pkts = frames.len();
    b.deliver(frames);
    // The worker answers with the whole buffer it was given.
    let job = q.jobs.dequeue().expect("job handed to worker");
    let cap = job.resp.capacity();
    assert!(req_pkts + num_pkts(cap, 64) - 2 <= 16383, "buffer of {cap} B exceeds the packet bound");
    assert!(q.done.enqueue(job).is_ok());
    b.step();
    let tx = b.sent();
    let r0 = tx.iter().find(|f| p(f).ty == PktType::Resp).expect("response sent");
    assert_eq!(p(r0).msg_size as usize, cap);
    assert_eq!(p(r0).pkt_num as usize, req_pkts - 1);
}

/// A transport that accepts `limit` frames and then reports a full ring until flushed.
struct StuckNic {
    limit: usize,
    /// Accepted frames the device has not read: (address, length, bytes at acceptance).
    held: Vec<(*const u8, usize, Vec<u8>)>,
    accepted: usize,
    rx: RxFrames,
}
impl StuckNic {
    /// Checks that no held frame changed under the device.
    fn check_held(&self) {
        for (ptr, len, snap) in &self.held {
            // SAFETY: held frames are in the endpoint's region, valid until read (contract).
            let now = unsafe { std::slice::from_raw_parts(*ptr, *len) };
            assert_eq!(now, &snap[..], "a frame the device still holds was overwritten");
        }
    }
}
impl Transport for StuckNic {
    fn mtu(&self) -> usize {
        1024
    }
    fn local_addr(&self) -> EndpointAddr {
        ME
    }
    fn max_tx_in_flight(&self) -> usize {
        64
    }
    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        self.check_held();
        let mut n = 0;
        for p in pkts {
            if self.accepted >= self.limit {
                break;
            }
            let mut v = vec![0u8; p.len()];
            // SAFETY: frames handed to tx_burst are readable (contract).
            unsafe { p.copy_to(&mut v) };
            assert_eq!(p.segs[1].len, 0);
            self.held.push((p.segs[0].vaddr, p.len(), v));
            self.accepted += 1;
            n += 1;
        }
        n
    }
    fn tx_flush(&mut self) {
        // The device reads what it holds (and stays stuck for new frames).
        self.check_held();
        self.held.clear();
    }
    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        self.rx.rx_burst(out)
    }
    fn rx_release(&mut self, _: &[RxPacket]) {
        self.rx.release_all();
    }
}

/// While the transport refuses frames, the control-packet ring does not wrap over frames the
/// device still holds.
#[test]
fn ctrl_ring_never_overwrites_a_held_frame_when_tx_is_stuck() {
    let clock: Clk = Rc::new(SimClock::new());
    let nic = StuckNic { limit: 2, held: vec![], accepted: 0, rx: RxFrames::default() };
    let mut rpc = Rpc::new(nic, clock, Ctx::default(), memory(1 << 20, 4, 4), test_config(1)).unwrap();
    fn h_hold2(_: &mut Rpc<'static, StuckNic, Clk, Ctx>, _: ReqHandle) {}
    rpc.register_handler(RT, h_hold2, HandlerMode::Foreground).unwrap();
    let body = sm_body(0, TOKEN, CS, 0, PEER, ME);
    rpc.transport_mut().rx.push_back(sm_frame(&PEER, &ME, SmPktType::ConnectReq, &body));
    rpc.run_event_loop_once();
    assert_eq!(rpc.transport().accepted, 1, "ConnectRetry accepted");
    let cookie = cookie_of(&rpc.transport().held[0].2);
    rpc.transport_mut().rx.push_back(sm_frame_cookie(&PEER, &ME, SmPktType::ConnectReq, &body, cookie));
    rpc.run_event_loop_once();
    assert_eq!(rpc.transport().accepted, 2, "ConnectResp accepted");
    let data = pattern(1, 1500);
    let f0 = msg_frames(&PEER, &ME, 0, PktType::Req, req_num_base(TOKEN) + 8, 0, &data).remove(0);
    for _ in 0..300 {
        rpc.transport_mut().rx.push_back(f0.clone());
    }
    for _ in 0..20 {
        rpc.run_event_loop_once();
    }
    rpc.transport().check_held();
    assert!(rpc.stats().drops.get(DropReason::TxRingFull) > 0, "frames were refused");
}

/// Records every TX segment's device address.
struct IovaNic {
    iovas: Vec<(u64, u32)>,
    tx: Vec<Vec<u8>>,
    rx: RxFrames,
}
impl Transport for IovaNic {
    fn mtu(&self) -> usize {
        1024
    }
    fn local_addr(&self) -> EndpointAddr {
        ME
    }
    fn max_tx_in_flight(&self) -> usize {
        64
    }
    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        for p in pkts {
            for sg in &p.segs {
                if sg.len > 0 {
                    self.iovas.push((sg.iova, sg.len));
                }
            }
            let mut v = vec![0u8; p.len()];
            // SAFETY: frames handed to tx_burst are readable (contract).
            unsafe { p.copy_to(&mut v) };
            self.tx.push(v);
        }
        pkts.len()
    }
    fn tx_flush(&mut self) {}
    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        self.rx.rx_burst(out)
    }
    fn rx_release(&mut self, _: &[RxPacket]) {
        self.rx.release_all();
    }
}

fn c_ignore(_: &mut Rpc<'static, IovaNic, Clk, ()>, _: Completion) {}

/// A msgbuf of another endpoint is refused (the device could not reach it) and handed back;
/// every segment sent lies in this endpoint's region.
#[test]
fn foreign_msgbuf_is_refused() {
    let clock: Clk = Rc::new(SimClock::new());
    let nic = IovaNic { iovas: vec![], tx: vec![], rx: RxFrames::default() };
    let mut a = Rpc::new(nic, clock, (), memory(1 << 20, 4, 4), test_config(1)).unwrap();
    let mut other = Bench::new(ME, PEER, test_config(2), 1);
    let s = a.create_session(PEER).unwrap();
    a.run_event_loop_once();
    let (_, body) = sm_of(&a.transport_mut().tx.remove(0));
    let resp = SmBody { server_session: U16::new(SS), ..body };
    a.transport_mut().rx.push_back(sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp));
    a.run_event_loop_once();
    assert!(a.is_connected(s));
    a.transport_mut().iovas.clear();
    let req = other.rpc.alloc_msg_buffer(100).unwrap();
    let rsp = a.alloc_msg_buffer(100).unwrap();
    let e = a.enqueue_request(s, RT, req, rsp, c_ignore, 1).unwrap_err();
    assert_eq!(e.kind, EnqueueErrorKind::ForeignBuffer);
    other.rpc.free_msg_buffer(e.req).unwrap();
    let req = a.alloc_msg_buffer(100).unwrap();
    a.enqueue_request(s, RT, req, e.resp, c_ignore, 2).unwrap();
    a.run_event_loop_once();
    let (lo, hi) = (0x4000_0000u64, 0x4000_0000u64 + (1 << 20));
    assert!(!a.transport().iovas.is_empty());
    for &(iova, len) in &a.transport().iovas {
        assert!(iova >= lo && iova + len as u64 <= hi, "TX segment at {iova:#x} outside the region");
    }
}

/// Responses whose packets the device has not read yet are kept when their slot's next request
/// arrives, and freed as soon as it says it read them (each event-loop iteration looks; one
/// check while the oldest is still unread).
#[test]
fn unread_responses_are_kept_then_freed_once_read() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 1500; // two packets: a response buffer of its own, not the slot's
    for slot in 0..3u64 {
        assert_eq!(b.deliver(b.req(8 + slot, b"first")).len(), 1);
    }
    let live = b.rpc.heap_stats().live_buffers;
    // The device reads nothing more for now: every frame sent from here on stays unread.
    let read = b.script.borrow().accepted;
    b.script.borrow_mut().read_upto = Some(read);
    for slot in [2u64, 0, 1] {
        // The slot's next request: its first response (read long ago) is freed at once.
        b.deliver(b.req(16 + slot, b"second"));
    }
    for slot in [1u64, 2, 0] {
        // The third: the second response is unread, so it waits.
        b.deliver(b.req(24 + slot, b"third"));
    }
    let waiting = b.rpc.heap_stats().live_buffers;
    assert_eq!(waiting, live + 3, "three unread responses kept besides the three stored");
    for _ in 0..4 {
        b.step();
    }
    assert_eq!(b.rpc.heap_stats().live_buffers, waiting, "nothing freed while unread");
    b.script.borrow_mut().read_upto = None;
    b.step();
    assert_eq!(b.rpc.heap_stats().live_buffers, live, "freed once read");
}
