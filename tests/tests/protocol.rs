//! Protocol-level tests, after the original eRPC's `tests/protocol_tests`
//! (`shared/reference/erpc-protocol.md` §1.12): one endpoint on a [`ScriptNic`], crafted frames
//! in, the exact frames it sends, its counters and its handler/continuation calls checked.
//!
//! Layout: helpers first (constants and the test context, frame builders and decoders, the
//! [`Bench`] (one endpoint plus its script) with server/client session setup, handlers and
//! continuations, back-to-back wiring and a fuzz frame generator); then the tests by area:
//! server, client, retransmission, malformed input, session management, end to end, fuzz.
//!
//! `cargo test -p erpc-tests --test protocol`.
//!
//! Conventions: the endpoint under test is at [`ME`]; the fake peer at [`PEER`]. Every request
//! uses req_type [`RT`]. Slot `i`'s first request has req_num `base + i + 8` (the session's
//! token-derived base; the [`Bench`] helpers add it).

use erpc_dataplane::msgbuf::num_pkts;
use erpc_dataplane::session::req_num_base;
use erpc_dataplane::sm::{AddrWire, SmBody, SmPktType, SM_FRAME_LEN};
use erpc_dataplane::wire::{ipv4_checksum, ErpcHdr, PktHdr, PktType, MAGIC, PKT_HDR_LEN, SM_SESSION_NUM};
use erpc_dataplane::{
    Completion, DropReason, EndpointAddr, HandlerMode, ReqHandle, ResetReason, RespondErrorKind, Rpc, RpcConfig,
    RpcError, SessionEvent, SessionId, SessionState, SimClock, SmError,
};
use erpc_tests::{frame, hdr_of, leak, memory, pattern, test_config, RxFrames, Script, ScriptNic};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use zerocopy::byteorder::{U16, U64};
use zerocopy::{FromBytes, IntoBytes};

// ============================================================================================
// Constants and context

/// Data bytes per packet: MTU 1024 less the 56 header bytes.
const DPP: usize = 968;
/// The request type every test uses.
const RT: u8 = 3;
/// The endpoint under test.
const ME: EndpointAddr = EndpointAddr { mac: [2, 0, 0, 0, 0, 1], ipv4: [10, 0, 0, 1], udp_port: 31850 };
/// The scripted peer.
const PEER: EndpointAddr = EndpointAddr { mac: [2, 0, 0, 0, 0, 2], ipv4: [10, 0, 0, 2], udp_port: 31851 };
/// Token and client session number the fake client uses when connecting to a server under test.
const TOKEN: u64 = 0x1234_5678_9ABC_DEF0;
const CS: u16 = 7;
/// Server session number the fake server hands to a client under test.
const SS: u16 = 5;
/// Seed of the response payloads of [`h_sized`].
const RESP_SEED: u64 = 77;
/// Event-loop iterations after which an idle endpoint has read the clock at least once.
const CLOCK_READ_ITERS: usize = 16;

type Clk = &'static SimClock;
type Ep = Rpc<'static, ScriptNic, Clk, Ctx>;

/// What handlers, continuations and the session handler record.
#[derive(Default)]
struct Ctx {
    handler_calls: usize,
    /// Request data as each handler call saw it.
    requests: Vec<Vec<u8>>,
    /// Handles kept by [`h_hold`].
    held: Vec<ReqHandle>,
    /// Response size for [`h_sized`].
    resp_len: usize,
    done: Vec<Done>,
    events: Vec<SessionEvent>,
}

/// One continuation call.
#[derive(Clone, Debug, PartialEq)]
struct Done {
    tag: u64,
    result: Result<usize, RpcError>,
    /// Response bytes (`result` bytes when Ok, empty on error).
    data: Vec<u8>,
}

// ============================================================================================
// Frames: builders and decoders

/// The decoded eRPC header fields a test compares (magic is checked separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct P {
    ty: PktType,
    req_type: u8,
    msg_size: u32,
    dest: u16,
    pkt_num: u16,
    req_num: u64,
}

fn p(f: &[u8]) -> P {
    let h = hdr_of(f);
    P {
        ty: h.pkt_type,
        req_type: h.req_type,
        msg_size: h.msg_size,
        dest: h.dest_session_num,
        pkt_num: h.pkt_num,
        req_num: h.req_num,
    }
}

fn data_of(f: &[u8]) -> &[u8] {
    &f[PKT_HDR_LEN..]
}

/// Checks the Ethernet/IPv4/UDP headroom of a sent frame: addresses, lengths, checksums, magic.
fn check_l2l3(f: &[u8], src: &EndpointAddr, dst: &EndpointAddr) {
    assert!(f.len() >= PKT_HDR_LEN, "short frame sent: {} bytes", f.len());
    let (h, _) = PktHdr::read_from_prefix(f).unwrap();
    assert_eq!((h.eth.src, h.eth.dst, h.eth.ethertype.get()), (src.mac, dst.mac, 0x0800), "ethernet");
    assert_eq!((h.ipv4.version_ihl, h.ipv4.tos, h.ipv4.ttl, h.ipv4.protocol), (0x45, 1, 128, 17), "ipv4 fixed fields");
    assert_eq!((h.ipv4.src, h.ipv4.dst), (src.ipv4, dst.ipv4), "ipv4 addresses");
    assert_eq!(h.ipv4.total_len.get() as usize, f.len() - 14, "ipv4 total length");
    let mut ip = h.ipv4;
    let sum = ip.checksum.get();
    ip.checksum = U16::new(0);
    assert_eq!(sum, ipv4_checksum(&ip), "ipv4 checksum");
    assert_eq!((h.udp.src_port.get(), h.udp.dst_port.get()), (src.udp_port, dst.udp_port), "udp ports");
    assert_eq!(h.udp.len.get() as usize, f.len() - 34, "udp length");
    assert_eq!(h.udp.checksum.get(), 0, "udp checksum");
    assert_eq!(h.erpc.decode().magic, MAGIC);
}

/// All packets of a message (REQ or RESP) from `src` to `dst`: packet k has pkt_num
/// `first + k` and data `[k*DPP, ..)`; every packet carries the full msg_size.
fn msg_frames(
    src: &EndpointAddr,
    dst: &EndpointAddr,
    dest: u16,
    ty: PktType,
    req_num: u64,
    first: u16,
    data: &[u8],
) -> Vec<Vec<u8>> {
    (0..num_pkts(data.len(), DPP))
        .map(|k| {
            let lo = k * DPP;
            let hi = data.len().min(lo + DPP);
            let h = ErpcHdr::new(RT, data.len() as u32, dest, ty, first + k as u16, req_num);
            frame(src, dst, h, &data[lo..hi])
        })
        .collect()
}

fn sm_body(err: u8, token: u64, csess: u16, ssess: u16, client: EndpointAddr, server: EndpointAddr) -> SmBody {
    SmBody {
        err,
        _pad: [0; 3],
        client_session: U16::new(csess),
        server_session: U16::new(ssess),
        token: U64::new(token),
        client: client.into(),
        server: server.into(),
    }
}

fn sm_frame(src: &EndpointAddr, dst: &EndpointAddr, kind: SmPktType, body: &SmBody) -> Vec<u8> {
    let h = ErpcHdr::new(kind as u8, 40, SM_SESSION_NUM, PktType::Req, 0, 0);
    frame(src, dst, h, body.as_bytes())
}

/// Decodes a sent session-management frame: its kind (req_type) and body.
fn sm_of(f: &[u8]) -> (u8, SmBody) {
    let h = hdr_of(f);
    assert_eq!(h.dest_session_num, SM_SESSION_NUM, "not an SM frame");
    assert_eq!(h.msg_size, 40);
    assert_eq!(f.len(), SM_FRAME_LEN);
    (h.req_type, SmBody::read_from_bytes(&f[PKT_HDR_LEN..]).unwrap())
}

// ============================================================================================
// The bench: one endpoint on a scripted NIC

struct Bench {
    rpc: Ep,
    script: Rc<RefCell<Script>>,
    clock: Clk,
    addr: EndpointAddr,
    peer: EndpointAddr,
    /// The session number frames we inject are addressed to (a session of `rpc`).
    local: u16,
    /// The session number `rpc` puts in the frames it sends (the peer's session).
    remote: u16,
    /// Whether [`Bench::sent`] checks every frame's headroom (off for fuzzing: a server answers
    /// session-management requests at whatever client address their body names).
    check_l2l3: bool,
    /// Request-number base of the session (`req_num_base(token)`): request numbers in the tests
    /// are written relative to it (slot i's first request is `i + 8`).
    base: u64,
}

impl Bench {
    fn new(addr: EndpointAddr, peer: EndpointAddr, cfg: RpcConfig, sessions: usize) -> Bench {
        let clock: Clk = leak(SimClock::new());
        clock.set(1_000_000);
        let (nic, script) = ScriptNic::new(addr);
        let mut rpc = Rpc::new(nic, clock, Ctx::default(), memory(1 << 20, sessions, 16), cfg).expect("endpoint");
        rpc.set_session_handler(ev_record);
        Bench { rpc, script, clock, addr, peer, local: 0, remote: 0, check_l2l3: true, base: 0 }
    }

    /// Queues frames for the next `rx_burst`.
    fn inject(&self, frames: impl IntoIterator<Item = Vec<u8>>) {
        self.script.borrow_mut().rx.extend(frames);
    }

    fn step(&mut self) {
        self.rpc.run_event_loop_once();
    }

    /// Frames sent since the last call, after checking their headroom.
    fn sent(&mut self) -> Vec<Vec<u8>> {
        let tx = std::mem::take(&mut self.script.borrow_mut().tx);
        if self.check_l2l3 {
            for f in &tx {
                check_l2l3(f, &self.addr, &self.peer);
            }
        }
        tx
    }

    /// Injects frames (delivered in one RX burst if at most 32), runs the event loop until they
    /// are consumed, and returns what was sent.
    fn deliver(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
        self.inject(frames);
        loop {
            self.step();
            if self.script.borrow().rx.is_empty() {
                break;
            }
        }
        self.sent()
    }

    /// Moves the clock on by `ns` and runs the event loop until it has seen the new time: an
    /// idle loop reads the clock only every few iterations (`Rpc::run_event_loop_once`).
    fn advance(&mut self, ns: u64) {
        self.clock.advance(ns);
        for _ in 0..CLOCK_READ_ITERS {
            self.step();
        }
    }

    fn flushes(&self) -> usize {
        self.script.borrow().flushes
    }

    fn ctx(&self) -> &Ctx {
        self.rpc.ctx()
    }

    /// The header we expect on a packet the endpoint sends on its session.
    fn exp(&self, ty: PktType, msg_size: usize, pkt_num: u16, req_num: u64) -> P {
        P { ty, req_type: RT, msg_size: msg_size as u32, dest: self.remote, pkt_num, req_num: self.base + req_num }
    }

    // ----- frames from the peer to the endpoint's session -----

    fn req(&self, req_num: u64, data: &[u8]) -> Vec<Vec<u8>> {
        msg_frames(&self.peer, &self.addr, self.local, PktType::Req, self.base + req_num, 0, data)
    }

    fn resp(&self, req_num: u64, first: u16, data: &[u8]) -> Vec<Vec<u8>> {
        msg_frames(&self.peer, &self.addr, self.local, PktType::Resp, self.base + req_num, first, data)
    }

    /// A header-only control packet (RFR or ExplCr), msg_size 0.
    fn ctrl(&self, ty: PktType, pkt_num: u16, req_num: u64) -> Vec<u8> {
        frame(&self.peer, &self.addr, ErpcHdr::new(RT, 0, self.local, ty, pkt_num, self.base + req_num), &[])
    }

    /// A frame to the session with a raw header (for malformed input).
    /// Its request number is relative to the session's base, like everywhere in these tests.
    fn raw(&self, h: ErpcHdr, data: &[u8]) -> Vec<u8> {
        let d = h.decode();
        let h = ErpcHdr::new(d.req_type, d.msg_size, d.dest_session_num, d.pkt_type, d.pkt_num, self.base + d.req_num);
        frame(&self.peer, &self.addr, h, data)
    }

    /// Asserts that delivering `f` drops it for `why` (and nothing else): one more drop of that
    /// reason, no other drop, nothing sent, no flush, no handler or continuation call.
    fn assert_dropped(&mut self, f: Vec<u8>, why: DropReason) {
        let before = self.rpc.stats().drops;
        let (flushes, calls, done) = (self.flushes(), self.ctx().handler_calls, self.ctx().done.len());
        let tx = self.deliver([f]);
        let after = self.rpc.stats().drops;
        assert!(tx.is_empty(), "{why:?}: frames sent: {:?}", tx.iter().map(|f| p(f)).collect::<Vec<_>>());
        assert_eq!(
            after.get(why),
            before.get(why) + 1,
            "expected one {why:?} drop; before {before:?}, after {after:?}"
        );
        assert_eq!(after.total(), before.total() + 1, "exactly one drop; before {before:?}, after {after:?}");
        assert_eq!(self.flushes(), flushes, "{why:?}: no tx_flush");
        assert_eq!(
            (self.ctx().handler_calls, self.ctx().done.len()),
            (calls, done),
            "{why:?}: no handler/continuation"
        );
    }

    // ----- client side -----

    fn session(&self) -> SessionId {
        SessionId(self.local)
    }

    fn credits(&self) -> u16 {
        self.rpc.session(self.session()).unwrap().credits()
    }

    /// Enqueues a request with `data` and a response buffer of `resp_cap` bytes.
    fn request(&mut self, data: &[u8], resp_cap: usize, tag: u64) {
        let mut req = self.rpc.alloc_msg_buffer(data.len()).unwrap();
        req.data_mut().copy_from_slice(data);
        let resp = self.rpc.alloc_msg_buffer(resp_cap).unwrap();
        self.rpc.enqueue_request(self.session(), RT, req, resp, c_record, tag).unwrap();
    }
}

/// An endpoint at [`ME`] with one server session, connected by the fake client at [`PEER`]
/// (token [`TOKEN`], client session [`CS`]); `handler` serves [`RT`].
fn server_with(handler: fn(&mut Ep, ReqHandle), cfg: RpcConfig, sessions: usize) -> Bench {
    let mut b = Bench::new(ME, PEER, cfg, sessions);
    b.rpc.register_handler(RT, handler, HandlerMode::Foreground).unwrap();
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, TOKEN, CS, 0, PEER, ME))]);
    assert_eq!(tx.len(), 1, "one ConnectResp");
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::ConnectResp as u8);
    assert_eq!(body.err, 0);
    assert_eq!((body.token.get(), body.client_session.get()), (TOKEN, CS));
    b.local = body.server_session.get();
    b.remote = CS;
    b.base = req_num_base(TOKEN);
    assert!(b.rpc.is_connected(SessionId(b.local)));
    b
}

fn server(handler: fn(&mut Ep, ReqHandle)) -> Bench {
    server_with(handler, test_config(1), 8)
}

/// An endpoint at [`ME`] with one client session connected to the fake server at [`PEER`],
/// which answered with server session [`SS`].
fn client_with(cfg: RpcConfig) -> Bench {
    let mut b = Bench::new(ME, PEER, cfg, 8);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1, "one ConnectReq");
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::ConnectReq as u8);
    assert_eq!(body.client_session.get(), s.0);
    assert_eq!((body.client, body.server), (AddrWire::from(ME), AddrWire::from(PEER)));
    let resp = SmBody { server_session: U16::new(SS), ..body };
    assert!(b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp)]).is_empty());
    assert!(b.rpc.is_connected(s));
    assert_eq!(b.ctx().events, vec![SessionEvent::Connected(s)]);
    b.local = s.0;
    b.remote = SS;
    b.base = req_num_base(body.token.get());
    b
}

fn client() -> Bench {
    client_with(test_config(1))
}

// ============================================================================================
// Handlers, continuations, session handler

/// Echoes a one-packet request from the slot's preallocated response buffer.
fn h_echo(rpc: &mut Ep, h: ReqHandle) {
    let (req, resp) = rpc.request_and_prealloc_response(&h).expect("valid handle");
    let n = req.len();
    resp[..n].copy_from_slice(req);
    let copy = req.to_vec();
    let c = rpc.ctx_mut();
    c.handler_calls += 1;
    c.requests.push(copy);
    rpc.enqueue_response_prealloc(h, n).unwrap();
}

/// Answers with `ctx.resp_len` bytes of `pattern(RESP_SEED, ..)` in a new msgbuf.
fn h_sized(rpc: &mut Ep, h: ReqHandle) {
    let req = rpc.request(&h).expect("valid handle").to_vec();
    let c = rpc.ctx_mut();
    c.handler_calls += 1;
    c.requests.push(req);
    let n = c.resp_len;
    let mut b = rpc.alloc_msg_buffer(n).unwrap();
    b.data_mut().copy_from_slice(&pattern(RESP_SEED, n));
    rpc.enqueue_response(h, b).unwrap();
}

/// Keeps the handle and does not answer (yet).
fn h_hold(rpc: &mut Ep, h: ReqHandle) {
    let req = rpc.request(&h).expect("valid handle").to_vec();
    let c = rpc.ctx_mut();
    c.handler_calls += 1;
    c.requests.push(req);
    c.held.push(h);
}

/// Answers a held handle with `data`.
fn respond_held(b: &mut Bench, h: ReqHandle, data: &[u8]) {
    let mut m = b.rpc.alloc_msg_buffer(data.len()).unwrap();
    m.data_mut().copy_from_slice(data);
    b.rpc.enqueue_response(h, m).unwrap();
}

fn c_record(rpc: &mut Ep, c: Completion) {
    let data = match c.result {
        Ok(n) => c.resp.data()[..n].to_vec(),
        Err(_) => Vec::new(),
    };
    rpc.ctx_mut().done.push(Done { tag: c.tag, result: c.result, data });
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.free_msg_buffer(c.resp).unwrap();
}

fn ev_record(rpc: &mut Ep, e: SessionEvent) {
    rpc.ctx_mut().events.push(e);
}

// ============================================================================================
// Two benches wired back to back; a structured frame generator for fuzzing

/// Moves frames between two benches until both are quiet; returns the frames each sent.
fn pump(a: &mut Bench, b: &mut Bench) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        a.step();
        b.step();
        let ta = a.sent();
        let tb = b.sent();
        if ta.is_empty() && tb.is_empty() {
            return (all_a, all_b);
        }
        b.inject(ta.clone());
        a.inject(tb.clone());
        all_a.extend(ta);
        all_b.extend(tb);
    }
    panic!("no quiescence");
}

/// xorshift64: a small deterministic generator for the fuzz tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn fuzz_frame(rng: &mut Rng, b: &Bench) -> Vec<u8> {
    let ty = PktType::from_bits(rng.next());
    let dest = rng.pick(&[b.local, b.local, b.local, SM_SESSION_NUM, b.local + 1, 0xFFFE]);
    let req_type = rng.pick(&[RT, RT, RT, 0, 1, 2, 4]);
    let msg_size = rng.pick(&[0u32, 1, 5, 967, 968, 969, 1936, 2000, 3000, 40, 8 << 20, (8 << 20) + 1, 0xFF_FFFF]);
    let pkt_num = rng.pick(&[0u16, 0, 1, 2, 3, 4, 5, 0x3FFF]);
    let req_num = rng.pick(&[0u64, 7, 8, 8, 9, 15, 16, 16, 24, 17, (1 << 44) - 1]);
    let len = rng.pick(&[0usize, 1, 5, 40, 500, 967, 968, 969]);
    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let mut f = frame(&PEER, &ME, ErpcHdr::new(req_type, msg_size, dest, ty, pkt_num, b.base + req_num), &data);
    match rng.next() % 10 {
        0 => f.truncate((rng.next() % (f.len() as u64 + 1)) as usize),
        1 => {
            let i = (rng.next() % f.len() as u64) as usize;
            f[i] = rng.next() as u8;
        }
        _ => {}
    }
    f
}

// ============================================================================================
// Server: requests

#[test]
fn server_single_pkt_request_in_order() {
    let mut b = server(h_echo);
    let tx = b.deliver(b.req(8, b"hello"));
    assert_eq!(b.ctx().handler_calls, 1);
    assert_eq!(b.ctx().requests, vec![b"hello".to_vec()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 8));
    assert_eq!(data_of(&tx[0]), b"hello");
    assert_eq!(b.rpc.stats().requests_handled, 1);
    assert_eq!(b.rpc.stats().drops.total(), 0);
    // A single-packet request needs no credit return, and nothing is flushed.
    assert_eq!(b.flushes(), 0);
    // Another slot (req_num 9 = slot 1) is independent.
    let tx = b.deliver(b.req(9, b"second"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 6, 0, 9));
    assert_eq!(data_of(&tx[0]), b"second");
    // And the next request on slot 0 (req_num 16).
    let tx = b.deliver(b.req(16, b"third"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 16));
    assert_eq!(b.ctx().handler_calls, 3);
}

#[test]
fn server_one_pkt_requests_share_pooled_buffers() {
    // One-packet requests answered from their handlers hand their request buffer to the next
    // request, on any slot: no request buffer stays with a slot (a cold cache line per request
    // with thousands of sessions).
    let mut b = server(h_echo);
    let tx = b.deliver(b.req(8, b"first"));
    assert_eq!(data_of(&tx[0]), b"first");
    let live = b.rpc.heap_stats().live_buffers;
    for (k, req_num) in (9..16).enumerate() {
        let data = format!("request {k}");
        let tx = b.deliver(b.req(req_num, data.as_bytes()));
        assert_eq!(data_of(&tx[0]), data.as_bytes(), "the handler saw the right bytes");
    }
    assert_eq!(b.ctx().requests.len(), 8);
    // Seven more slots hold their stored response; none holds a request buffer.
    assert_eq!(b.rpc.heap_stats().live_buffers, live + 7);
    // The next round on the same slots allocates nothing.
    for req_num in 16..24 {
        b.deliver(b.req(req_num, b"again"));
    }
    assert_eq!(b.rpc.heap_stats().live_buffers, live + 7);
    assert_eq!(b.ctx().handler_calls, 16);
}

#[test]
fn server_held_requests_keep_their_own_buffers() {
    // A request whose handler returns without answering keeps its buffer until it is answered:
    // later requests, which take buffers from the same pool, do not disturb it.
    let mut b = server(h_hold);
    b.deliver(b.req(8, b"held zero"));
    b.deliver(b.req(9, b"held one"));
    let held = b.ctx().held.clone();
    assert_eq!(b.rpc.request(&held[0]), Some(&b"held zero"[..]));
    assert_eq!(b.rpc.request(&held[1]), Some(&b"held one"[..]));
    // Answering the first returns its buffer to the pool; the next request gets it.
    respond_held(&mut b, held[0], b"r0");
    assert_eq!(b.rpc.request(&held[0]), None, "answered: the handle is stale");
    let tx = b.deliver(b.req(10, b"third"));
    assert_eq!(tx.iter().map(|f| data_of(f)).collect::<Vec<_>>(), vec![b"r0"]);
    let third = b.ctx().held[2];
    assert_eq!(b.rpc.request(&third), Some(&b"third"[..]));
    assert_eq!(b.rpc.request(&held[1]), Some(&b"held one"[..]));
    respond_held(&mut b, held[1], b"r1");
    respond_held(&mut b, third, b"r2");
    b.step();
    let tx = b.sent();
    assert_eq!(tx.iter().map(|f| data_of(f)).collect::<Vec<_>>(), vec![b"r1", b"r2"]);
}

#[test]
fn server_multi_pkt_request_buffer_is_freed_not_pooled() {
    // A multi-packet request is reassembled in a buffer of its own size, freed once answered.
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 4;
    b.deliver(b.req(8, b"small"));
    let live = b.rpc.heap_stats().live_buffers;
    let data = pattern(7, 2000); // 968 + 968 + 64: 3 packets
    let tx = b.deliver(b.req(9, &data));
    assert_eq!(b.ctx().requests[1], data, "reassembled byte for byte");
    assert_eq!(p(tx.last().unwrap()), b.exp(PktType::Resp, 4, 2, 9));
    // Slot 1 holds its stored response, nothing else.
    assert_eq!(b.rpc.heap_stats().live_buffers, live + 1);
}

#[test]
fn server_empty_request_and_response() {
    let mut b = server(h_echo);
    let tx = b.deliver(b.req(8, b""));
    assert_eq!(b.ctx().requests, vec![Vec::<u8>::new()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 0, 0, 8));
    assert_eq!(tx[0].len(), PKT_HDR_LEN);
}

#[test]
fn server_duplicate_after_response_resends_without_handler() {
    let mut b = server(h_echo);
    let first = b.deliver(b.req(8, b"abc"));
    assert_eq!(first.len(), 1);
    let flushes = b.flushes();
    let tx = b.deliver(b.req(8, b"abc"));
    assert_eq!(b.ctx().handler_calls, 1, "at-most-once: handler not run again");
    assert_eq!(tx, first, "the stored response, byte for byte");
    assert_eq!(b.rpc.stats().dup_responses, 1);
    assert_eq!(b.flushes(), flushes + 1, "tx_flush after resending a stored response");
    assert_eq!(b.rpc.stats().tx_flushes, 1);
    // Again: same answer, counters move on.
    let tx = b.deliver(b.req(8, b"abc"));
    assert_eq!(tx, first);
    assert_eq!(b.rpc.stats().dup_responses, 2);
    assert_eq!(b.flushes(), flushes + 2);
    assert_eq!(b.rpc.stats().drops.total(), 0);
}

#[test]
fn server_duplicates_in_one_burst_flush_each() {
    let mut b = server(h_echo);
    let first = b.deliver(b.req(8, b"abc"));
    let mut dups = b.req(8, b"abc");
    dups.extend(b.req(8, b"abc"));
    let tx = b.deliver(dups);
    assert_eq!(tx, vec![first[0].clone(), first[0].clone()]);
    assert_eq!(b.rpc.stats().dup_responses, 2);
    // Each resend is flushed at once (as in the original): a later packet of the same burst may
    // be the slot's next request, which frees the stored response.
    assert_eq!(b.flushes(), 2, "one tx_flush per resent response");
}

#[test]
fn server_duplicate_while_handler_pending_sends_alive_cr() {
    let mut b = server(h_hold);
    assert!(b.deliver(b.req(8, b"slow")).is_empty(), "handler has not responded: nothing to send");
    assert_eq!(b.ctx().handler_calls, 1);
    // Duplicate of the last (only) request packet: ExplCr with pkt_num = 0, no flush.
    let tx = b.deliver(b.req(8, b"slow"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 8));
    assert_eq!(tx[0].len(), PKT_HDR_LEN);
    assert_eq!(b.ctx().handler_calls, 1);
    assert_eq!(b.rpc.stats().dup_responses, 0);
    assert_eq!(b.flushes(), 0);
    // The next request on the busy slot is refused: the client must wait for the response.
    b.assert_dropped(b.req(16, b"next").remove(0), DropReason::Stale);

    // Respond later through the stored handle.
    let h = b.ctx().held[0];
    assert_eq!(b.rpc.request(&h), Some(&b"slow"[..]));
    respond_held(&mut b, h, b"done!");
    assert!(b.sent().is_empty(), "responses go out with the event loop's TX batch");
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 8));
    assert_eq!(data_of(&tx[0]), b"done!");
    // The handle is spent.
    let again = b.rpc.alloc_msg_buffer(1).unwrap();
    let e = b.rpc.enqueue_response(h, again).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::InvalidHandle);
    assert!(e.resp.is_some(), "buffer handed back");
    assert_eq!(b.rpc.request(&h), None);
    // Now a duplicate gets the stored response.
    let dup = b.deliver(b.req(8, b"slow"));
    assert_eq!(dup, tx);
    assert_eq!(b.rpc.stats().dup_responses, 1);
}

#[test]
fn server_duplicate_last_pkt_of_multi_pkt_request_while_pending() {
    let mut b = server(h_hold);
    let data = pattern(1, 1500); // 2 packets
    let tx = b.deliver(b.req(9, &data));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 9));
    assert_eq!(b.ctx().requests, vec![data.clone()]);
    let frames = b.req(9, &data);
    // Duplicate of the last packet: "alive" CR with pkt_num 1.
    let tx = b.deliver([frames[1].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 1, 9));
    // Duplicate of packet 0: its CR again.
    let tx = b.deliver([frames[0].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 9));
    assert_eq!(b.ctx().handler_calls, 1);
    // Respond; RESP 0 has pkt_num N-1 = 1.
    let h = b.ctx().held[0];
    respond_held(&mut b, h, b"ok");
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 2, 1, 9));
    // Duplicate of the last packet now resends RESP 0; of packet 0, its CR.
    let tx = b.deliver([frames[1].clone(), frames[0].clone()]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 2, 1, 9));
    assert_eq!(p(&tx[1]), b.exp(PktType::ExplCr, 0, 0, 9));
}

#[test]
fn server_stale_request_dropped() {
    let mut b = server(h_echo);
    b.deliver(b.req(8, b"one"));
    b.deliver(b.req(16, b"two"));
    assert_eq!(b.ctx().handler_calls, 2);
    // req_num 8 < current 16 on slot 0.
    b.assert_dropped(b.req(8, b"one").remove(0), DropReason::Stale);
    // A request number from the future (skips 24) is not the next one either.
    b.assert_dropped(b.req(32, b"far").remove(0), DropReason::Stale);
    assert_eq!(b.rpc.session_stats(SessionId(b.local)).unwrap().drops, 2);
    // The slot still works.
    let tx = b.deliver(b.req(24, b"three"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 24));
}

#[test]
fn server_no_handler_dropped() {
    let mut b = server(h_echo);
    let f = b.raw(ErpcHdr::new(RT + 1, 3, b.local, PktType::Req, 0, 8), b"abc");
    b.assert_dropped(f, DropReason::NoHandler);
    // The slot is untouched: the same req_num with a served type is accepted.
    let tx = b.deliver(b.req(8, b"abc"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3, 0, 8));
}

#[test]
fn server_multi_pkt_request() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 10;
    let data = pattern(5, 2500); // 968 + 968 + 564: 3 packets
    let f = b.req(8, &data);
    assert_eq!(f.len(), 3);
    // Packet 1 of a request not begun: out of order.
    b.assert_dropped(f[1].clone(), DropReason::OutOfOrder);
    // Packet 0: CR 0.
    let tx = b.deliver([f[0].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 8));
    // Packet 2 (skipping 1): dropped, no CR.
    b.assert_dropped(f[2].clone(), DropReason::OutOfOrder);
    // Duplicate of packet 0: its CR again.
    let tx = b.deliver([f[0].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 8));
    // Packet 1: CR 1, still no handler.
    let tx = b.deliver([f[1].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 1, 8));
    assert_eq!(b.ctx().handler_calls, 0);
    // Packet 2: handler, RESP 0 with pkt_num N-1 = 2.
    let tx = b.deliver([f[2].clone()]);
    assert_eq!(b.ctx().handler_calls, 1);
    assert_eq!(b.ctx().requests, vec![data.clone()], "request reassembled byte for byte");
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 10, 2, 8));
    assert_eq!(data_of(&tx[0]), &pattern(RESP_SEED, 10)[..]);
    // Duplicate of packet 1 after the response: CR 1; of packet 2: RESP 0.
    let tx = b.deliver([f[1].clone(), f[2].clone()]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 1, 8));
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 10, 2, 8));
    assert_eq!(b.ctx().handler_calls, 1);
}

#[test]
fn server_multi_pkt_request_inconsistent_msg_size_dropped() {
    let mut b = server(h_sized);
    let data = pattern(5, 2500);
    let f = b.req(8, &data);
    b.deliver([f[0].clone()]);
    // Packet 1 announcing another size than packet 0.
    let mut bad = b.req(8, &pattern(5, 2400))[1].clone();
    assert_eq!(p(&bad).pkt_num, 1);
    b.assert_dropped(bad.clone(), DropReason::BadMsgSize);
    // pkt_num beyond the message's packets.
    bad = b.raw(ErpcHdr::new(RT, 2500, b.local, PktType::Req, 3, 8), &[0; 100]);
    b.assert_dropped(bad, DropReason::BadMsgSize);
}

// ============================================================================================
// Server: responses and RFRs

#[test]
fn server_multi_pkt_response_rfrs() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 3000; // 968 * 3 + 96: 4 packets
    let want = pattern(RESP_SEED, 3000);
    let tx = b.deliver(b.req(8, b"x"));
    assert_eq!(tx.len(), 1, "only RESP 0 unasked");
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, 0, 8));
    assert_eq!(data_of(&tx[0]), &want[..DPP]);
    // RFR 2 before RFR 1: out of order.
    b.assert_dropped(b.ctrl(PktType::Rfr, 2, 8), DropReason::OutOfOrder);
    // RFR pkt_num k asks for RESP index k (N = 1), with the same pkt_num.
    for k in 1..=2u16 {
        let tx = b.deliver([b.ctrl(PktType::Rfr, k, 8)]);
        assert_eq!(tx.len(), 1);
        assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, k, 8));
        let lo = k as usize * DPP;
        assert_eq!(data_of(&tx[0]), &want[lo..lo + DPP]);
    }
    assert_eq!(b.rpc.stats().dup_responses, 0);
    assert_eq!(b.flushes(), 0);
    // Duplicate RFR 1: RESP 1 again, counted, flushed.
    let tx = b.deliver([b.ctrl(PktType::Rfr, 1, 8)]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, 1, 8));
    assert_eq!(data_of(&tx[0]), &want[DPP..2 * DPP]);
    assert_eq!(b.rpc.stats().dup_responses, 1);
    assert_eq!(b.flushes(), 1);
    // Last packet: 96 bytes.
    let tx = b.deliver([b.ctrl(PktType::Rfr, 3, 8)]);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, 3, 8));
    assert_eq!(data_of(&tx[0]), &want[3 * DPP..]);
    // Beyond the response; for RESP 0's position (pkt_num N-1 = 0, not an RFR's); for another request.
    b.assert_dropped(b.ctrl(PktType::Rfr, 4, 8), DropReason::WrongType);
    b.assert_dropped(b.ctrl(PktType::Rfr, 0, 8), DropReason::WrongType);
    b.assert_dropped(b.ctrl(PktType::Rfr, 1, 16), DropReason::Stale);
    assert_eq!(b.ctx().handler_calls, 1);
}

#[test]
fn server_multi_pkt_request_and_response_numbering() {
    // N = 2 request packets, M = 3 response packets: RESP 0 has pkt_num 1, RFRs 2 and 3 get
    // RESP 1 and 2 with the same pkt_nums.
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 2000;
    let want = pattern(RESP_SEED, 2000);
    let req = pattern(9, 1000);
    let tx = b.deliver(b.req(9, &req));
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 9));
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 2000, 1, 9));
    assert_eq!(data_of(&tx[1]), &want[..DPP]);
    // An RFR with pkt_num 1 is RESP 0's position: not an RFR.
    b.assert_dropped(b.ctrl(PktType::Rfr, 1, 9), DropReason::WrongType);
    let tx = b.deliver([b.ctrl(PktType::Rfr, 2, 9), b.ctrl(PktType::Rfr, 3, 9)]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 2000, 2, 9));
    assert_eq!(data_of(&tx[0]), &want[DPP..2 * DPP]);
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 2000, 3, 9));
    assert_eq!(data_of(&tx[1]), &want[2 * DPP..]);
    b.assert_dropped(b.ctrl(PktType::Rfr, 4, 9), DropReason::WrongType);
}

#[test]
fn server_rfr_before_response_dropped() {
    let mut b = server(h_hold);
    b.deliver(b.req(8, b"x"));
    b.assert_dropped(b.ctrl(PktType::Rfr, 1, 8), DropReason::Stale);
}

/// A duplicate of the last request and the slot's next request arrive in the same RX burst
/// (the client retransmitted, then got the response and moved on). The duplicate's response is
/// queued for TX from the stored response buffer; the next request then frees that buffer
/// (`bury`) and the handler refills it, all before the batch reaches the transport. The
/// transport contract says queued bytes stay unchanged until `tx_flush`.
#[test]
fn server_dup_and_next_request_in_one_burst() {
    let mut b = server(h_echo);
    let first = b.deliver(b.req(8, b"AAAA"));
    assert_eq!(first.len(), 1);
    let mut burst = b.req(8, b"AAAA");
    burst.extend(b.req(16, b"BBBB"));
    let tx = b.deliver(burst);
    assert_eq!(b.ctx().handler_calls, 2);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 4, 0, 16));
    assert_eq!(data_of(&tx[1]), b"BBBB");
    assert_eq!(tx[0], first[0], "the duplicate's response must go out as it was stored");
}

// ============================================================================================
// Client: requests, credits, responses

#[test]
fn client_request_frames() {
    let mut b = client();
    assert_eq!(b.credits(), 32);
    b.request(b"ping", 100, 1);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 4, 0, 8));
    assert_eq!(data_of(&tx[0]), b"ping");
    assert_eq!(b.credits(), 31);
    // A second request takes slot 1 (req_num 9).
    b.request(b"pong!", 100, 2);
    b.step();
    let tx = b.sent();
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 5, 0, 9));
    // Responses in either order complete their own RPCs.
    assert!(b.deliver(b.resp(9, 0, b"r9")).is_empty());
    assert!(b.deliver(b.resp(8, 0, b"r8")).is_empty());
    assert_eq!(
        b.ctx().done,
        vec![
            Done { tag: 2, result: Ok(2), data: b"r9".to_vec() },
            Done { tag: 1, result: Ok(2), data: b"r8".to_vec() },
        ]
    );
    assert_eq!(b.credits(), 32);
    assert_eq!(b.rpc.stats().rpcs_completed, 2);
    // The slot's next request is req_num 16.
    b.request(b"again", 100, 3);
    b.step();
    assert_eq!(p(&b.sent()[0]), b.exp(PktType::Req, 5, 0, 16));
}

#[test]
fn client_credit_limited_multi_pkt_request() {
    let mut b = client_with(RpcConfig { session_credits: 2, ..test_config(1) });
    assert_eq!(b.credits(), 2);
    let data = pattern(3, 2000); // 3 packets
    b.request(&data, 100, 7);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 2, "two credits: two packets");
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 2000, 0, 8));
    assert_eq!(p(&tx[1]), b.exp(PktType::Req, 2000, 1, 8));
    assert_eq!(data_of(&tx[0]), &data[..DPP]);
    assert_eq!(data_of(&tx[1]), &data[DPP..2 * DPP]);
    assert_eq!(b.credits(), 0);
    // Stepping again sends nothing: stalled on credits.
    b.step();
    assert!(b.sent().is_empty());
    // CR 1 before CR 0: out of order.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 1, 8), DropReason::OutOfOrder);
    // CR 0 releases packet 2.
    let tx = b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 2000, 2, 8));
    assert_eq!(data_of(&tx[0]), &data[2 * DPP..]);
    assert_eq!(b.credits(), 0);
    // Duplicate CR 0: out of order.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 0, 8), DropReason::OutOfOrder);
    // A CR for another request number: stale.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 1, 16), DropReason::Stale);
    // RESP 0 (pkt_num 2) before CR 1: out of order.
    b.assert_dropped(b.resp(8, 2, b"reply").remove(0), DropReason::OutOfOrder);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 1, 8)]).is_empty());
    assert_eq!(b.credits(), 1);
    assert!(b.ctx().done.is_empty());
    // RESP 0 has pkt_num N-1 = 2; a single-packet response completes.
    assert!(b.deliver(b.resp(8, 2, b"reply")).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 7, result: Ok(5), data: b"reply".to_vec() }]);
    assert_eq!(b.credits(), 2);
    // A duplicate response is stale; the continuation does not run again.
    b.assert_dropped(b.resp(8, 2, b"reply").remove(0), DropReason::Stale);
    assert_eq!(b.ctx().done.len(), 1);
}

#[test]
fn client_resp_and_cr_type_checks() {
    let mut b = client();
    let data = pattern(3, 2000); // 3 packets
    b.request(&data, 100, 1);
    b.step();
    assert_eq!(b.sent().len(), 3);
    // A RESP with pkt_num below N-1 cannot be a response.
    b.assert_dropped(b.resp(8, 0, b"r").remove(0), DropReason::WrongType);
    // A CR beyond the request's packets.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 3, 8), DropReason::WrongType);
    // CR for the last request packet: "server alive", changes nothing.
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 2, 8)]).is_empty());
    assert_eq!(b.rpc.stats().drops.total(), 2);
    assert_eq!(b.credits(), 29);
    assert!(b.ctx().done.is_empty());
}

#[test]
fn client_multi_pkt_response_rfrs() {
    let mut b = client();
    b.request(b"get", 4000, 11);
    b.step();
    assert_eq!(b.sent().len(), 1);
    let want = pattern(RESP_SEED, 3000); // 4 packets
    let r = b.resp(8, 0, &want);
    // RESP 0: the client asks for the rest at once (32 credits).
    let tx = b.deliver([r[0].clone()]);
    assert_eq!(tx.len(), 3);
    for (k, f) in tx.iter().enumerate() {
        assert_eq!(p(f), b.exp(PktType::Rfr, 0, k as u16 + 1, 8));
        assert_eq!(f.len(), PKT_HDR_LEN);
    }
    assert_eq!(b.credits(), 32 - 3);
    // RESP 2 before RESP 1: out of order. RESP with another msg_size: refused.
    b.assert_dropped(r[2].clone(), DropReason::OutOfOrder);
    let other = b.resp(8, 0, &pattern(RESP_SEED, 2950))[1].clone();
    b.assert_dropped(other, DropReason::BadMsgSize);
    assert!(b.deliver([r[1].clone(), r[2].clone()]).is_empty());
    assert!(b.ctx().done.is_empty(), "not before the last packet");
    assert!(b.deliver([r[3].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 11, result: Ok(3000), data: want }]);
    assert_eq!(b.credits(), 32);
    assert_eq!(b.rpc.stats().rpcs_completed, 1);
}

#[test]
fn client_multi_pkt_request_and_response_numbering() {
    // N = 2, M = 3: RESP 0 is pkt_num 1, RFRs are 2 and 3.
    let mut b = client();
    let req = pattern(4, 1500);
    b.request(&req, 3000, 5);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 2);
    let want = pattern(RESP_SEED, 2500);
    let r = b.resp(8, 1, &want);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]).is_empty());
    let tx = b.deliver([r[0].clone()]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::Rfr, 0, 2, 8));
    assert_eq!(p(&tx[1]), b.exp(PktType::Rfr, 0, 3, 8));
    assert!(b.deliver([r[1].clone(), r[2].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 5, result: Ok(2500), data: want }]);
}

#[test]
fn client_rfrs_limited_by_credits() {
    let mut b = client_with(RpcConfig { session_credits: 2, ..test_config(1) });
    b.request(b"get", 4000, 1);
    b.step();
    assert_eq!(b.sent().len(), 1);
    let want = pattern(RESP_SEED, 3000);
    let r = b.resp(8, 0, &want);
    // RESP 0 returns one credit: 2 available, 2 RFRs.
    let tx = b.deliver([r[0].clone()]);
    assert_eq!(tx.iter().map(|f| p(f).pkt_num).collect::<Vec<_>>(), vec![1, 2]);
    assert!(tx.iter().all(|f| p(f).ty == PktType::Rfr));
    // Each further RESP frees one credit for the next RFR.
    let tx = b.deliver([r[1].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Rfr, 0, 3, 8));
    assert!(b.deliver([r[2].clone()]).is_empty());
    assert!(b.deliver([r[3].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(3000), data: want }]);
    assert_eq!(b.credits(), 2);
}

#[test]
fn client_response_too_large() {
    let mut b = client();
    b.request(b"get", 100, 9);
    b.step();
    b.sent();
    let r = b.resp(8, 0, &pattern(RESP_SEED, 3000));
    let tx = b.deliver([r[0].clone()]);
    assert!(tx.is_empty(), "no RFR for a response that does not fit");
    assert_eq!(
        b.ctx().done,
        vec![Done { tag: 9, result: Err(RpcError::ResponseTooLarge { size: 3000, capacity: 100 }), data: vec![] }]
    );
    assert_eq!(b.credits(), 32);
    assert_eq!(b.rpc.stats().rpcs_failed, 1);
    // The rest of that response is stale.
    b.assert_dropped(r[1].clone(), DropReason::Stale);
    // A response exactly the buffer's size is fine.
    b.request(b"get", 100, 10);
    b.step();
    b.sent();
    assert!(b.deliver(b.resp(16, 0, &[7; 100])).is_empty());
    assert_eq!(b.ctx().done[1], Done { tag: 10, result: Ok(100), data: vec![7; 100] });
}

#[test]
fn client_backlog_is_fifo_and_reuses_freed_slot() {
    let mut b = client();
    for t in 0..10u64 {
        b.request(&[t as u8], 10, t);
    }
    assert_eq!(b.rpc.backlog_len(b.session()), 2);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 8);
    for (t, f) in tx.iter().enumerate() {
        assert_eq!(p(f), b.exp(PktType::Req, 1, 0, 8 + t as u64));
        assert_eq!(data_of(f), &[t as u8]);
    }
    // Slot 3 completes: the oldest queued request (tag 8) takes it, req_num 11 + 8.
    let tx = b.deliver(b.resp(11, 0, b"r"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 1, 0, 19));
    assert_eq!(data_of(&tx[0]), &[8]);
    assert_eq!(b.ctx().done.iter().map(|d| d.tag).collect::<Vec<_>>(), vec![3]);
    let tx = b.deliver(b.resp(8, 0, b"r"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 1, 0, 16));
    assert_eq!(data_of(&tx[0]), &[9]);
    assert_eq!(b.rpc.backlog_len(b.session()), 0);
}

/// A RESP 0 whose data is shorter than its msg_size announces is dropped (Truncated); it must
/// leave the slot as it was. Here it sets the response size anyway, so the retransmission
/// after the RTO also sends RFRs for a response the client has never received.
#[test]
fn client_truncated_resp0_leaves_slot_unchanged() {
    let mut b = client();
    b.request(b"get", 4000, 1);
    b.step();
    let req = b.sent();
    let f = b.raw(ErpcHdr::new(RT, 3000, b.local, PktType::Resp, 0, 8), &[1; 10]);
    b.assert_dropped(f, DropReason::Truncated);
    b.advance(2 * test_config(1).rto_ns);
    let tx = b.sent();
    assert_eq!(
        tx.iter().map(|f| p(f)).collect::<Vec<_>>(),
        vec![b.exp(PktType::Req, 3, 0, 8)],
        "only the request is retransmitted"
    );
    assert_eq!(tx, req);
}

// ============================================================================================
// Client: retransmission (Go-Back-N), liveness, session reset

#[test]
fn client_retransmits_after_rto() {
    let mut b = client();
    let rto = test_config(1).rto_ns;
    b.request(b"ping", 100, 1);
    b.step();
    let first = b.sent();
    assert_eq!(first.len(), 1);
    let flushes = b.flushes();
    // Before the RTO: nothing.
    b.advance(rto / 2);
    assert!(b.sent().is_empty());
    assert_eq!(b.rpc.stats().retransmissions, 0);
    // Past it: the same frame again, one rollback, one flush.
    b.advance(rto);
    let tx = b.sent();
    assert_eq!(tx, first, "same REQ frame");
    assert_eq!(b.rpc.stats().retransmissions, 1);
    assert_eq!(b.rpc.stats().retransmitted_pkts, 1);
    assert_eq!(b.rpc.session_stats(b.session()).unwrap().retransmissions, 1);
    assert_eq!(b.flushes(), flushes + 1, "tx_flush after retransmitting");
    assert_eq!(b.credits(), 31);
    // Not again until another RTO has passed.
    b.advance(rto / 2);
    assert!(b.sent().is_empty());
    assert_eq!(b.rpc.stats().retransmissions, 1);
    // The response completes it once.
    assert!(b.deliver(b.resp(8, 0, b"pong")).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(4), data: b"pong".to_vec() }]);
    b.advance(3 * rto);
    assert!(b.sent().is_empty(), "nothing outstanding");
    assert_eq!(b.rpc.stats().retransmissions, 1);
}

#[test]
fn client_go_back_n_from_first_unacked_request_pkt() {
    let mut b = client();
    let rto = test_config(1).rto_ns;
    let data = pattern(8, 2500); // 3 packets
    b.request(&data, 100, 1);
    b.step();
    let first = b.sent();
    assert_eq!(first.len(), 3);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]).is_empty());
    b.advance(rto + 1);
    let tx = b.sent();
    assert_eq!(tx, first[1..].to_vec(), "packets 1 and 2 again, not 0");
    assert_eq!(b.rpc.stats().retransmissions, 1);
    assert_eq!(b.rpc.stats().retransmitted_pkts, 2);
    assert_eq!(b.credits(), 32 - 2);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 1, 8)]).is_empty());
    assert!(b.deliver(b.resp(8, 2, b"ok")).is_empty());
    assert_eq!(b.ctx().done.len(), 1);
    assert_eq!(b.credits(), 32);
}

#[test]
fn client_go_back_n_resends_rfrs() {
    let mut b = client();
    let rto = test_config(1).rto_ns;
    b.request(b"get", 4000, 1);
    b.step();
    b.sent();
    let want = pattern(RESP_SEED, 3000);
    let r = b.resp(8, 0, &want);
    let rfrs = b.deliver([r[0].clone()]);
    assert_eq!(rfrs.len(), 3);
    assert!(b.deliver([r[1].clone()]).is_empty());
    // RESP 2 and 3 lost: RFRs 2 and 3 again.
    b.advance(rto + 1);
    let tx = b.sent();
    assert_eq!(
        tx.iter().map(|f| p(f)).collect::<Vec<_>>(),
        vec![b.exp(PktType::Rfr, 0, 2, 8), b.exp(PktType::Rfr, 0, 3, 8)]
    );
    assert_eq!(b.rpc.stats().retransmitted_pkts, 2);
    assert!(b.deliver([r[2].clone(), r[3].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(3000), data: want }]);
    assert_eq!(b.credits(), 32);
}

#[test]
fn client_alive_cr_does_not_stop_retransmission() {
    // The "alive" CR keeps the session from timing out but is not progress.
    let mut b = client();
    let rto = test_config(1).rto_ns;
    b.request(b"slow", 100, 1);
    b.step();
    b.sent();
    b.clock.advance(rto / 2);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]).is_empty());
    b.advance(rto / 2 + 1);
    assert_eq!(b.sent().len(), 1);
    assert_eq!(b.rpc.stats().retransmissions, 1);
    assert!(b.ctx().done.is_empty());
}

#[test]
fn client_session_reset_after_peer_silence() {
    let mut b = client();
    let s = b.session();
    let timeout = test_config(1).session_timeout_ns;
    b.request(b"ping", 100, 1);
    b.step();
    b.sent();
    let flushes = b.flushes();
    b.advance(timeout + 1);
    let tx = b.sent();
    assert_eq!(tx.len(), 1, "a best-effort DisconnectReq, no retransmission");
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::DisconnectReq as u8);
    assert_eq!((body.client_session.get(), body.server_session.get()), (s.0, SS));
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Err(RpcError::SessionReset), data: vec![] }]);
    assert_eq!(b.ctx().events.last(), Some(&SessionEvent::Reset(s, erpc_dataplane::ResetReason::PeerTimeout)));
    assert_eq!(b.rpc.session_state(s), SessionState::Free);
    assert_eq!((b.rpc.stats().sessions_reset, b.rpc.stats().rpcs_failed), (1, 1));
    assert!(b.flushes() > flushes, "buffers go back to the application only after tx_flush");
    // A late response for the dead session is dropped.
    b.assert_dropped(b.resp(8, 0, b"late").remove(0), DropReason::UnknownSession);
}

#[test]
fn client_alive_cr_keeps_session_alive() {
    let mut b = client();
    let timeout = test_config(1).session_timeout_ns;
    b.request(b"slow", 100, 1);
    b.step();
    b.sent();
    for round in 1..=3u64 {
        b.clock.advance(timeout * 3 / 4);
        // The alive CR arrives; the same iteration's loss scan retransmits (no progress).
        let tx = b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]);
        assert_eq!(tx.iter().map(|f| p(f)).collect::<Vec<_>>(), vec![b.exp(PktType::Req, 4, 0, 8)]);
        assert_eq!(b.rpc.stats().retransmissions, round);
    }
    assert!(b.rpc.is_connected(b.session()));
    assert_eq!(b.rpc.stats().sessions_reset, 0);
    assert!(b.deliver(b.resp(8, 0, b"done")).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(4), data: b"done".to_vec() }]);
}

// ============================================================================================
// Malformed input: dropped, counted, nothing sent, never a panic

#[test]
fn malformed_bad_magic() {
    let mut b = server(h_echo);
    let mut f = b.req(8, b"abc").remove(0);
    f[55] = (f[55] & 0x0F) | (5 << 4);
    b.assert_dropped(f, DropReason::BadMagic);
    // On an SM frame too.
    let mut f = sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, 1, 1, 0, PEER, ME));
    f[55] &= 0x0F;
    b.assert_dropped(f, DropReason::BadMagic);
}

#[test]
fn malformed_unknown_session() {
    let mut b = server(h_echo);
    // A free session number, the first number past the table, and the largest non-SM number.
    for dest in [b.local + 1, 8, 0xFFFE] {
        let f = b.raw(ErpcHdr::new(RT, 3, dest, PktType::Req, 0, 8), b"abc");
        b.assert_dropped(f, DropReason::UnknownSession);
    }
    // A client session that is still connecting.
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    assert_eq!(b.sent().len(), 1);
    let f = b.raw(ErpcHdr::new(RT, 3, s.0, PktType::Resp, 0, 8), b"abc");
    b.assert_dropped(f, DropReason::UnknownSession);
}

#[test]
fn malformed_truncated() {
    let mut b = server(h_echo);
    let full = b.req(8, b"abcdef").remove(0);
    for len in [0, 1, 14, 41, 42, 55] {
        b.assert_dropped(full[..len].to_vec(), DropReason::Truncated);
    }
    // Header complete, data shorter than msg_size announces.
    b.assert_dropped(full[..PKT_HDR_LEN + 3].to_vec(), DropReason::Truncated);
    b.assert_dropped(full[..PKT_HDR_LEN].to_vec(), DropReason::Truncated);
    // For a non-last packet of a large request: a full packet's data is expected.
    let big = b.req(9, &pattern(1, 3000)).remove(0);
    b.assert_dropped(big[..big.len() - 1].to_vec(), DropReason::Truncated);
    // Client side: a RESP 1 shorter than its share.
    let mut c = client();
    c.request(b"get", 4000, 1);
    c.step();
    c.sent();
    let r = c.resp(8, 0, &pattern(RESP_SEED, 3000));
    assert_eq!(c.deliver([r[0].clone()]).len(), 3);
    c.assert_dropped(r[1][..r[1].len() - 1].to_vec(), DropReason::Truncated);
    // The intact frames still complete it.
    assert!(c.deliver(r[1..].to_vec()).is_empty());
    assert_eq!(c.ctx().done.len(), 1);
    assert_eq!(c.ctx().done[0].result, Ok(3000));
}

#[test]
fn malformed_msg_size_beyond_max() {
    let mut b = server(h_echo);
    let max = 8 << 20;
    assert_eq!(b.rpc.max_msg_size(), max);
    let f = b.raw(ErpcHdr::new(RT, max as u32 + 1, b.local, PktType::Req, 0, 8), &[0; DPP]);
    b.assert_dropped(f, DropReason::BadMsgSize);
    let f = b.raw(ErpcHdr::new(RT, 0xFF_FFFF, b.local, PktType::Req, 0, 8), &[0; DPP]);
    b.assert_dropped(f, DropReason::BadMsgSize);
    // Client side.
    let mut c = client();
    c.request(b"get", 100, 1);
    c.step();
    c.sent();
    let f = c.raw(ErpcHdr::new(RT, max as u32 + 1, c.local, PktType::Resp, 0, 8), &[0; DPP]);
    c.assert_dropped(f, DropReason::BadMsgSize);
    assert!(c.ctx().done.is_empty());
}

#[test]
fn malformed_wrong_type_for_role() {
    let mut b = server(h_echo);
    for ty in [PktType::Resp, PktType::ExplCr] {
        let f = b.raw(ErpcHdr::new(RT, 3, b.local, ty, 0, 8), b"abc");
        b.assert_dropped(f, DropReason::WrongType);
    }
    let mut c = client();
    c.request(b"get", 100, 1);
    c.step();
    c.sent();
    for ty in [PktType::Req, PktType::Rfr] {
        let f = c.raw(ErpcHdr::new(RT, 3, c.local, ty, 0, 8), b"abc");
        c.assert_dropped(f, DropReason::WrongType);
    }
    assert!(c.ctx().done.is_empty());
}

#[test]
fn malformed_wrong_source() {
    let mut b = server(h_echo);
    let h = ErpcHdr::new(RT, 3, b.local, PktType::Req, 0, b.base + 8);
    let other_ip = EndpointAddr { ipv4: [10, 0, 0, 9], ..PEER };
    let other_port = EndpointAddr { udp_port: PEER.udp_port + 1, ..PEER };
    b.assert_dropped(frame(&other_ip, &ME, h, b"abc"), DropReason::WrongSource);
    b.assert_dropped(frame(&other_port, &ME, h, b"abc"), DropReason::WrongSource);
    assert_eq!(b.rpc.session_stats(SessionId(b.local)).unwrap().drops, 2);
    // The genuine peer is still served.
    assert_eq!(b.deliver([frame(&PEER, &ME, h, b"abc")]).len(), 1);
}

#[test]
fn malformed_not_udp() {
    let mut b = server(h_echo);
    let f = b.req(8, b"abc").remove(0);
    let mut ipv6 = f.clone();
    ipv6[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    b.assert_dropped(ipv6, DropReason::NotUdp);
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    b.assert_dropped(arp, DropReason::NotUdp);
    let mut tcp = f.clone();
    tcp[23] = 6;
    b.assert_dropped(tcp, DropReason::NotUdp);
    assert_eq!(b.ctx().handler_calls, 0);
}

#[test]
fn malformed_sm_frames() {
    let mut b = server(h_echo);
    let active = b.rpc.num_active_sessions();
    let body = sm_body(0, 99, 3, 0, PEER, ME);
    for size in [0u32, 39, 41, 968] {
        let h = ErpcHdr::new(SmPktType::ConnectReq as u8, size, SM_SESSION_NUM, PktType::Req, 0, 0);
        b.assert_dropped(frame(&PEER, &ME, h, body.as_bytes()), DropReason::BadSm);
    }
    // Body cut short.
    let f = sm_frame(&PEER, &ME, SmPktType::ConnectReq, &body);
    b.assert_dropped(f[..SM_FRAME_LEN - 1].to_vec(), DropReason::BadSm);
    // Unknown SM type.
    for t in [0u8, 7, 255] {
        let h = ErpcHdr::new(t, 40, SM_SESSION_NUM, PktType::Req, 0, 0);
        b.assert_dropped(frame(&PEER, &ME, h, body.as_bytes()), DropReason::BadSm);
    }
    // A ConnectReq for another endpoint (server address not ours).
    let other = EndpointAddr { udp_port: ME.udp_port + 1, ..ME };
    b.assert_dropped(
        sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, 99, 3, 0, PEER, other)),
        DropReason::BadSm,
    );
    assert_eq!(b.rpc.num_active_sessions(), active, "no session created");
}

#[test]
fn malformed_input_changes_no_state() {
    // After a storm of malformed frames aimed at a slot, a duplicate still gets the stored
    // response and the next request is still the one accepted.
    let mut b = server(h_echo);
    let resp = b.deliver(b.req(8, b"abc"));
    let good = b.req(16, b"next").remove(0);
    let mut bad = Vec::new();
    for len in [0, 30, 55, 57] {
        bad.push(good[..len].to_vec());
    }
    let mut m = good.clone();
    m[55] = 0;
    bad.push(m);
    let mut m = good.clone();
    m[26] ^= 1;
    bad.push(m);
    bad.push(b.raw(ErpcHdr::new(RT, 4, b.local, PktType::Resp, 0, 16), b"next"));
    bad.push(b.raw(ErpcHdr::new(RT, 9 << 20, b.local, PktType::Req, 0, 16), b"next"));
    let n = bad.len() as u64;
    assert!(b.deliver(bad).is_empty());
    assert_eq!(b.rpc.stats().drops.total(), n);
    assert_eq!(b.deliver(b.req(8, b"abc")), resp);
    let tx = b.deliver([good]);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 4, 0, 16));
    assert_eq!(b.ctx().handler_calls, 2);
}

// ============================================================================================
// Session management

#[test]
fn sm_connect_req_frame_and_connected_event() {
    // client_with() checks the ConnectReq and the Connected event; here the session state.
    let b = client();
    let s = b.session();
    assert_eq!(b.rpc.session_state(s), SessionState::Connected);
    assert_eq!(b.rpc.session(s).unwrap().peer(), PEER);
    assert_eq!(b.rpc.num_active_sessions(), 1);
    assert_eq!(b.rpc.stats().sm_pkts_tx, 1);
    assert_eq!(b.rpc.stats().sm_pkts_rx, 1);
}

#[test]
fn sm_duplicate_connect_req_same_session() {
    let mut b = server(h_echo);
    assert_eq!(b.rpc.num_active_sessions(), 1);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, TOKEN, CS, 0, PEER, ME))]);
    assert_eq!(tx.len(), 1);
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::ConnectResp as u8);
    assert_eq!((body.err, body.server_session.get()), (0, b.local), "same server session");
    assert_eq!(b.rpc.num_active_sessions(), 1, "no second session");
    // Same token from another client session number: a different connection.
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, TOKEN, CS + 1, 0, PEER, ME))]);
    let (_, body) = sm_of(&tx[0]);
    assert_eq!(body.err, 0);
    assert_ne!(body.server_session.get(), b.local);
    assert_eq!(b.rpc.num_active_sessions(), 2);
}

#[test]
fn sm_forged_sender_is_not_answered() {
    // A connect or disconnect request whose body names a client other than the frame's sender
    // would make the endpoint send its reply to a third party (a reflector): dropped, not answered.
    let mut b = server(h_echo);
    let victim = EndpointAddr { mac: [2, 0, 0, 0, 0, 9], ipv4: [10, 0, 0, 9], udp_port: 4000 };
    let before = b.rpc.num_active_sessions();
    for kind in [SmPktType::ConnectReq, SmPktType::DisconnectReq] {
        let f = sm_frame(&PEER, &ME, kind, &sm_body(0, TOKEN ^ 1, CS, 0, victim, ME));
        b.assert_dropped(f, DropReason::BadSm);
    }
    assert_eq!(b.rpc.num_active_sessions(), before);
}

#[test]
fn sm_connect_resp_naming_the_sm_session_is_refused() {
    // A (misbehaving) server that answers with session number 0xFFFF would make our data packets
    // look like session-management frames: the response is dropped, the session keeps connecting.
    let mut b = client();
    let me = b.rpc.local_addr();
    let s = b.rpc.create_session(PEER).unwrap();
    let req = b.deliver([]);
    let (_, body) = sm_of(req.last().unwrap());
    let resp =
        sm_frame(&PEER, &me, SmPktType::ConnectResp, &sm_body(0, body.token.get(), s.0, SM_SESSION_NUM, me, PEER));
    b.assert_dropped(resp, DropReason::BadSm);
    assert_eq!(b.rpc.session_state(s), SessionState::ConnectInProgress);
}

#[test]
fn sm_idle_client_pings_and_resets_when_server_lost_the_session() {
    let mut b = client();
    let s = b.session();
    let cfg = b.rpc.config().keepalive_ns;
    // Idle and silent past the keepalive interval: a ping goes out.
    b.advance(cfg + 1_000_000);
    let tx = b.sent();
    let pings: Vec<_> = tx.iter().map(|f| sm_of(f)).filter(|(k, _)| *k == SmPktType::Ping as u8).collect();
    assert_eq!(pings.len(), 1, "one ping");
    let (_, body) = pings[0];
    assert_eq!((body.client_session.get(), body.server_session.get()), (s.0, SS));
    // An answer keeps the session; "unknown session" resets it.
    b.deliver([sm_frame(&PEER, &ME, SmPktType::PingResp, &body)]);
    assert!(b.rpc.is_connected(s));
    let lost = SmBody { err: erpc_dataplane::sm::ERR_UNKNOWN_SESSION, ..body };
    b.deliver([sm_frame(&PEER, &ME, SmPktType::PingResp, &lost)]);
    assert!(!b.rpc.is_connected(s));
    assert!(b.ctx().events.contains(&SessionEvent::Reset(s, ResetReason::PeerLostSession)));
}

#[test]
fn sm_server_answers_pings() {
    let mut b = server(h_echo);
    let ping = sm_body(0, TOKEN, CS, b.local, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::Ping, &ping)]);
    let (k, body) = sm_of(&tx[0]);
    assert_eq!((k, body.err, body.server_session.get()), (SmPktType::PingResp as u8, 0, b.local));
    // A ping for a session the server does not have (wrong token) says so.
    let stale = sm_body(0, TOKEN ^ 1, CS, b.local, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::Ping, &stale)]);
    let (_, body) = sm_of(&tx[0]);
    assert_eq!(body.err, erpc_dataplane::sm::ERR_UNKNOWN_SESSION);
}

#[test]
fn sm_out_of_sessions() {
    let mut b = Bench::new(ME, PEER, test_config(1), 2);
    let mut got = Vec::new();
    for (token, cs) in [(1u64, 1u16), (2, 2), (3, 3)] {
        let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, token, cs, 0, PEER, ME))]);
        assert_eq!(tx.len(), 1);
        let (kind, body) = sm_of(&tx[0]);
        assert_eq!(kind, SmPktType::ConnectResp as u8);
        assert_eq!((body.token.get(), body.client_session.get()), (token, cs));
        assert_eq!((body.client, body.server), (AddrWire::from(PEER), AddrWire::from(ME)));
        got.push((body.err, body.server_session.get()));
    }
    assert_eq!(got[0].0, 0);
    assert_eq!(got[1].0, 0);
    assert_ne!(got[0].1, got[1].1);
    assert_eq!(got[2].0, 2, "OutOfSessions");
    assert_eq!(b.rpc.num_active_sessions(), 2);
    // A duplicate of an accepted request still gets its session, even when full.
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, 1, 1, 0, PEER, ME))]);
    assert_eq!(sm_of(&tx[0]).1.server_session.get(), got[0].1);
    assert_eq!(sm_of(&tx[0]).1.err, 0);
}

#[test]
fn sm_connect_failed_out_of_sessions_on_client() {
    let mut b = Bench::new(ME, PEER, test_config(1), 4);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let (_, body) = sm_of(&b.sent()[0]);
    assert_eq!(b.rpc.session_state(s), SessionState::ConnectInProgress);
    let resp = SmBody { err: 2, server_session: U16::new(0), ..body };
    assert!(b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp)]).is_empty());
    assert_eq!(b.ctx().events, vec![SessionEvent::ConnectFailed(s, SmError::OutOfSessions)]);
    assert_eq!(b.rpc.session_state(s), SessionState::Free);
    assert_eq!(b.rpc.num_active_sessions(), 0);
    // A late duplicate of the response changes nothing.
    b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp)]);
    assert_eq!(b.ctx().events.len(), 1);
    // No retries afterwards.
    b.advance(10 * test_config(1).sm_retry_ns);
    assert!(b.sent().is_empty());
}

#[test]
fn sm_connect_retries_then_remote_unreachable() {
    let cfg = test_config(1);
    let mut b = Bench::new(ME, PEER, cfg, 4);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let first = b.sent();
    assert_eq!(first.len(), 1);
    let mut sent = first.clone();
    for _ in 0..2 * cfg.sm_max_attempts {
        b.advance(cfg.sm_retry_ns);
        sent.extend(b.sent());
    }
    assert_eq!(sent.len(), cfg.sm_max_attempts as usize, "sm_max_attempts ConnectReqs in all");
    assert!(sent.iter().all(|f| *f == first[0]), "each retry is the same ConnectReq");
    assert_eq!(b.ctx().events, vec![SessionEvent::ConnectFailed(s, SmError::RemoteUnreachable)]);
    assert_eq!(b.rpc.session_state(s), SessionState::Free);
}

#[test]
fn sm_connect_resp_with_wrong_token_ignored() {
    let mut b = Bench::new(ME, PEER, test_config(1), 4);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let (_, body) = sm_of(&b.sent()[0]);
    let bad = SmBody { token: U64::new(body.token.get() ^ 1), server_session: U16::new(SS), ..body };
    b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &bad)]);
    assert_eq!(b.rpc.session_state(s), SessionState::ConnectInProgress);
    assert!(b.ctx().events.is_empty());
}

#[test]
fn sm_disconnect_frees_server_session_and_duplicate_answered() {
    let mut b = server(h_echo);
    let ss = b.local;
    assert_eq!(b.rpc.num_active_sessions(), 1);
    // Wrong token: not freed, still answered.
    let bad = sm_body(0, TOKEN ^ 1, CS, ss, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &bad)]);
    assert_eq!(tx.len(), 1);
    assert_eq!(sm_of(&tx[0]).0, SmPktType::DisconnectResp as u8);
    assert_eq!(b.rpc.num_active_sessions(), 1);
    assert!(b.rpc.is_connected(SessionId(ss)));
    // The real one.
    let req = sm_body(0, TOKEN, CS, ss, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &req)]);
    assert_eq!(tx.len(), 1);
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::DisconnectResp as u8);
    assert_eq!((body.err, body.token.get(), body.client_session.get(), body.server_session.get()), (0, TOKEN, CS, ss));
    assert_eq!(b.rpc.num_active_sessions(), 0);
    assert_eq!(b.rpc.session_state(SessionId(ss)), SessionState::Free);
    // Duplicate: answered the same way, nothing else changes.
    let tx2 = b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &req)]);
    assert_eq!(tx2, tx);
    assert_eq!(b.rpc.num_active_sessions(), 0);
    // Data for the freed session is dropped.
    b.assert_dropped(b.req(8, b"abc").remove(0), DropReason::UnknownSession);
}

#[test]
fn sm_disconnect_invalidates_held_handle() {
    let mut b = server_with(h_hold, test_config(1), 1);
    b.deliver(b.req(8, b"abc"));
    let h = b.ctx().held[0];
    b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &sm_body(0, TOKEN, CS, b.local, PEER, ME))]);
    assert_eq!(b.rpc.num_active_sessions(), 0);
    assert_eq!(b.rpc.request(&h), None);
    let m = b.rpc.alloc_msg_buffer(3).unwrap();
    let e = b.rpc.enqueue_response(h, m).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::InvalidHandle);
    // The session number is reused by a new connection: the old handle stays invalid.
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, 42, 1, 0, PEER, ME))]);
    assert_eq!((sm_of(&tx[0]).1.err, sm_of(&tx[0]).1.server_session.get()), (0, b.local), "only one session: reused");
    assert!(b.rpc.request(&h).is_none());
    let m = b.rpc.alloc_msg_buffer(3).unwrap();
    assert_eq!(b.rpc.enqueue_response(h, m).unwrap_err().kind, RespondErrorKind::InvalidHandle);
}

#[test]
fn sm_client_destroy_session() {
    let mut b = client();
    let s = b.session();
    b.rpc.destroy_session(s).unwrap();
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::DisconnectReq as u8);
    assert_eq!((body.client_session.get(), body.server_session.get()), (s.0, SS));
    assert_eq!(b.rpc.session_state(s), SessionState::DisconnectInProgress);
    assert!(b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectResp, &body)]).is_empty());
    assert_eq!(b.ctx().events.last(), Some(&SessionEvent::Disconnected { session: s, clean: true }));
    assert_eq!(b.rpc.num_active_sessions(), 0);
}

// ============================================================================================
// End to end over two scripted NICs (frames shuttled by `pump`)

#[test]
fn end_to_end_multi_pkt_both_ways_with_two_credits() {
    let mut cli = Bench::new(ME, PEER, RpcConfig { session_credits: 2, ..test_config(1) }, 4);
    let mut srv = Bench::new(PEER, ME, test_config(2), 4);
    srv.rpc.register_handler(RT, h_sized, HandlerMode::Foreground).unwrap();
    srv.rpc.ctx_mut().resp_len = 3500; // 4 packets
    let s = cli.rpc.create_session(PEER).unwrap();
    pump(&mut cli, &mut srv);
    assert_eq!(cli.ctx().events, vec![SessionEvent::Connected(s)]);
    cli.local = s.0;
    let req = pattern(12, 2500); // 3 packets
    cli.request(&req, 4000, 99);
    let (c, sv) = pump(&mut cli, &mut srv);
    assert_eq!(srv.ctx().requests, vec![req]);
    assert_eq!(cli.ctx().done, vec![Done { tag: 99, result: Ok(3500), data: pattern(RESP_SEED, 3500) }]);
    let kinds = |v: &[Vec<u8>]| v.iter().map(|f| (p(f).ty, p(f).pkt_num)).collect::<Vec<_>>();
    use PktType::*;
    // Wire packets N + M - 1 = 6 each way.
    assert_eq!(kinds(&c), vec![(Req, 0), (Req, 1), (Req, 2), (Rfr, 3), (Rfr, 4), (Rfr, 5)]);
    assert_eq!(kinds(&sv), vec![(ExplCr, 0), (ExplCr, 1), (Resp, 2), (Resp, 3), (Resp, 4), (Resp, 5)]);
    assert_eq!(cli.credits(), 2);
    assert_eq!(cli.rpc.stats().drops.total() + srv.rpc.stats().drops.total(), 0);
}

// ============================================================================================
// Structured fuzz (`fuzz_frame`): plausible-but-wrong frames at both roles; no panic, sane counters

#[test]
fn fuzz_server_never_panics() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 2000;
    b.check_l2l3 = false;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3000u64 {
        let n = 1 + rng.next() % 8;
        let frames: Vec<_> = (0..n).map(|_| fuzz_frame(&mut rng, &b)).collect();
        let rx = b.rpc.stats().rx_pkts;
        b.deliver(frames);
        assert_eq!(b.rpc.stats().rx_pkts, rx + n, "round {round}");
        if round % 500 == 0 {
            b.clock.advance(1_000_000);
        }
    }
    // Still serving: a fresh slot (slot 3 is never touched by the fuzz's req_nums mod 8 in {0,1,7}).
    let tx = b.deliver(b.req(11, b"alive?"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]).req_num, b.base + 11);
}

#[test]
fn fuzz_client_never_panics() {
    let mut b = client_with(RpcConfig { session_credits: 4, ..test_config(1) });
    b.check_l2l3 = false;
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    for round in 0..3000u64 {
        if b.rpc.session(b.session()).map(|s| s.state()) == Some(SessionState::Connected) && rng.next() % 4 == 0 {
            let len = rng.pick(&[1usize, 968, 2000]);
            let mut req = b.rpc.alloc_msg_buffer(len).unwrap();
            req.data_mut().fill(1);
            let resp = b.rpc.alloc_msg_buffer(rng.pick(&[1usize, 968, 3000])).unwrap();
            if let Err(e) = b.rpc.enqueue_request(b.session(), RT, req, resp, c_record, round) {
                b.rpc.free_msg_buffer(e.req).unwrap();
                b.rpc.free_msg_buffer(e.resp).unwrap();
            }
        }
        let n = 1 + rng.next() % 8;
        let frames: Vec<_> = (0..n).map(|_| fuzz_frame(&mut rng, &b)).collect();
        b.deliver(frames);
        if let Some(s) = b.rpc.session(b.session()) {
            if s.state() == SessionState::Connected {
                assert!(s.credits() <= 4, "round {round}: credits {} above the configured 4", s.credits());
            }
        }
        b.clock.advance(rng.pick(&[0u64, 1_000, 50_000, 200_000]));
    }
    for d in &b.ctx().done {
        if let Ok(n) = d.result {
            assert!(n <= 3000);
        }
    }
}

// ============================================================================================
// Regressions from the code review (each of these failed before its fix)

mod review_regressions {
    use super::*;
    use erpc_dataplane::transport::{RxPacket, Transport, TxPacket};
    use erpc_dataplane::worker::BgQueues;
    use erpc_dataplane::EnqueueErrorKind;

    fn connect_client(b: &mut Bench) -> SessionId {
        let s = b.rpc.create_session(PEER).unwrap();
        b.step();
        let tx = b.sent();
        let (_, body) = sm_of(&tx[0]);
        let resp = SmBody { server_session: U16::new(SS), ..body };
        b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp)]);
        assert!(b.rpc.is_connected(s));
        b.local = s.0;
        b.remote = SS;
        b.base = req_num_base(body.token.get());
        s
    }

    /// Freeing an idle server session (disconnect, idle timeout) does not flush the TX queue: at
    /// 20,000 sessions that would be 20,000 flushes.
    #[test]
    fn freeing_an_idle_server_session_needs_no_flush() {
        let mut b = server(h_echo);
        b.deliver(b.req(8, b"abc"));
        let f0 = b.flushes();
        let disc = sm_body(0, TOKEN, CS, b.local, PEER, ME);
        b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &disc)]);
        assert_eq!(b.rpc.num_active_sessions(), 0);
        assert_eq!(b.flushes(), f0, "release_session of an idle server session called tx_flush");
    }

    /// A late response of an earlier connection that used the same session number does not
    /// complete the new connection's request.
    #[test]
    fn stale_response_after_session_number_reuse_is_dropped() {
        let mut b = Bench::new(ME, PEER, test_config(1), 1);
        let s1 = connect_client(&mut b);
        b.request(b"first", 64, 1);
        b.step();
        let _ = b.sent();
        let old = b.resp(8, 0, b"answer to FIRST");
        b.deliver(old.clone());
        assert_eq!(b.ctx().done.len(), 1);
        b.rpc.destroy_session(s1).unwrap();
        b.step();
        let tx = b.sent();
        let (_, body) = sm_of(&tx[0]);
        b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectResp, &body)]);
        let s2 = connect_client(&mut b);
        assert_eq!(s2, s1, "session number reused");
        b.request(b"second", 64, 2);
        b.step();
        let _ = b.sent();
        let stale = b.rpc.stats().drops.get(DropReason::Stale);
        b.deliver(old);
        assert_eq!(b.ctx().done.len(), 1, "the old response completed the new request");
        assert_eq!(b.rpc.stats().drops.get(DropReason::Stale), stale + 1);
        b.deliver(b.resp(8, 0, b"answer to SECOND"));
        assert_eq!(b.ctx().done[1].data, b"answer to SECOND".to_vec());
    }

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
        let clock: Clk = leak(SimClock::new());
        clock.set(1_000_000);
        let (nic, script) = ScriptNic::new(ME);
        let cfg = RpcConfig { mtu: PKT_HDR_LEN + 64, ..test_config(1) };
        let rpc = Rpc::new(nic, clock, Ctx::default(), memory(16 << 20, 4, 16), cfg).unwrap();
        let mut b = Bench { rpc, script, clock, addr: ME, peer: PEER, local: 0, remote: 0, check_l2l3: true, base: 0 };
        let q = Arc::new(BgQueues::new());
        b.rpc.attach_workers(q.clone());
        b.rpc.register_handler(RT, h_unused, HandlerMode::Background { max_resp_size: 600_000 }).unwrap();
        let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, TOKEN, CS, 0, PEER, ME))]);
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
        let clock: Clk = leak(SimClock::new());
        let nic = StuckNic { limit: 1, held: vec![], accepted: 0, rx: RxFrames::default() };
        let mut rpc = Rpc::new(nic, clock, Ctx::default(), memory(1 << 20, 4, 4), test_config(1)).unwrap();
        fn h_hold2(_: &mut Rpc<'static, StuckNic, Clk, Ctx>, _: ReqHandle) {}
        rpc.register_handler(RT, h_hold2, HandlerMode::Foreground).unwrap();
        rpc.transport_mut().rx.push_back(sm_frame(
            &PEER,
            &ME,
            SmPktType::ConnectReq,
            &sm_body(0, TOKEN, CS, 0, PEER, ME),
        ));
        rpc.run_event_loop_once();
        assert_eq!(rpc.transport().accepted, 1, "ConnectResp accepted");
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
        let clock: Clk = leak(SimClock::new());
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

    /// A client that restarts with the same address and configuration gets a new server session:
    /// its first request runs the handler and gets its own response.
    #[test]
    fn restarted_client_gets_a_new_session() {
        let cfg = test_config(1);
        let mut srv = Bench::new(PEER, ME, cfg, 8);
        srv.rpc.register_handler(RT, h_echo, HandlerMode::Foreground).unwrap();
        let mut c1 = Bench::new(ME, PEER, cfg, 8);
        let s = c1.rpc.create_session(PEER).unwrap();
        pump(&mut c1, &mut srv);
        assert!(c1.rpc.is_connected(s));
        c1.local = s.0;
        c1.request(b"one", 64, 1);
        pump(&mut c1, &mut srv);
        assert_eq!(c1.ctx().done[0].data, b"one".to_vec());
        drop(c1); // crash: no disconnect
        let mut c2 = Bench::new(ME, PEER, cfg, 8);
        let s = c2.rpc.create_session(PEER).unwrap();
        pump(&mut c2, &mut srv);
        assert!(c2.rpc.is_connected(s));
        c2.local = s.0;
        c2.request(b"two", 64, 2);
        pump(&mut c2, &mut srv);
        assert_eq!(srv.ctx().handler_calls, 2, "handler must run for the new request");
        assert_eq!(c2.ctx().done[0].data, b"two".to_vec(), "new request got the old response");
        assert_eq!(srv.rpc.num_active_sessions(), 2);
    }
}
