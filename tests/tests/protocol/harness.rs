//! The protocol tests' harness: constants and the test context, frame builders and decoders,
//! the [`Bench`] (one endpoint plus its script) with server/client session setup, handlers and
//! continuations, back-to-back wiring and a structured frame generator for fuzzing.

#![allow(dead_code)]

pub use erpc_dataplane::msgbuf::num_pkts;
pub use erpc_dataplane::session::req_num_base;
pub use erpc_dataplane::sm::{AddrWire, SmBody, SmPktType, ERR_NO_HANDLER, SM_FRAME_LEN};
pub use erpc_dataplane::wire::{ipv4_checksum, ErpcHdr, PktHdr, PktType, MAGIC, PKT_HDR_LEN, SM_SESSION_NUM};
pub use erpc_dataplane::{
    Completion, DropReason, EndpointAddr, HandlerMode, ReqHandle, ResetReason, RespondErrorKind, Rpc, RpcConfig,
    RpcError, SessionEvent, SessionId, SessionState, SimClock, SmError,
};
pub use erpc_tests::{frame, hdr_of, memory, pattern, test_config, RxFrames, Script, ScriptNic};
pub use std::cell::RefCell;
pub use std::rc::Rc;
pub use std::sync::Arc;
pub use zerocopy::byteorder::{U16, U64};
pub use zerocopy::{FromBytes, IntoBytes};

// ============================================================================================
// Constants and context

/// Data bytes per packet: MTU 1024 less the 56 header bytes.
pub const DPP: usize = 968;
/// The request type every test uses.
pub const RT: u8 = 3;
/// The endpoint under test.
pub const ME: EndpointAddr = EndpointAddr { mac: [2, 0, 0, 0, 0, 1], ipv4: [10, 0, 0, 1], udp_port: 31850 };
/// The scripted peer.
pub const PEER: EndpointAddr = EndpointAddr { mac: [2, 0, 0, 0, 0, 2], ipv4: [10, 0, 0, 2], udp_port: 31851 };
/// Token and client session number the fake client uses when connecting to a server under test.
pub const TOKEN: u64 = 0x1234_5678_9ABC_DEF0;
pub const CS: u16 = 7;
/// Server session number the fake server hands to a client under test.
pub const SS: u16 = 5;
/// Seed of the response payloads of [`h_sized`].
pub const RESP_SEED: u64 = 77;
/// Event-loop iterations after which an idle endpoint has read the clock at least once.
pub const CLOCK_READ_ITERS: usize = 16;

pub type Clk = Rc<SimClock>;
pub type Ep = Rpc<'static, ScriptNic, Clk, Ctx>;

/// What handlers, continuations and the session handler record.
#[derive(Default)]
pub struct Ctx {
    pub handler_calls: usize,
    /// Request data as each handler call saw it.
    pub requests: Vec<Vec<u8>>,
    /// Handles kept by [`h_hold`].
    pub held: Vec<ReqHandle>,
    /// Response size for [`h_sized`].
    pub resp_len: usize,
    pub done: Vec<Done>,
    pub events: Vec<SessionEvent>,
}

/// One continuation call.
#[derive(Clone, Debug, PartialEq)]
pub struct Done {
    pub tag: u64,
    pub result: Result<usize, RpcError>,
    /// Response bytes (`result` bytes when Ok, empty on error).
    pub data: Vec<u8>,
}

// ============================================================================================
// Frames: builders and decoders

/// The decoded eRPC header fields a test compares (magic is checked separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P {
    pub ty: PktType,
    pub req_type: u8,
    pub msg_size: u32,
    pub dest: u16,
    pub pkt_num: u16,
    pub req_num: u64,
}

pub fn p(f: &[u8]) -> P {
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

pub fn data_of(f: &[u8]) -> &[u8] {
    &f[PKT_HDR_LEN..]
}

/// Checks the Ethernet/IPv4/UDP headroom of a sent frame: addresses, lengths, checksums, magic.
pub fn check_l2l3(f: &[u8], src: &EndpointAddr, dst: &EndpointAddr) {
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
pub fn msg_frames(
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

pub fn sm_body(err: u8, token: u64, csess: u16, ssess: u16, client: EndpointAddr, server: EndpointAddr) -> SmBody {
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

pub fn sm_frame(src: &EndpointAddr, dst: &EndpointAddr, kind: SmPktType, body: &SmBody) -> Vec<u8> {
    sm_frame_cookie(src, dst, kind, body, 0)
}

/// The server's refusal of request `req_num` (absolute) of the client session of `b`, as the
/// fake server at [`PEER`] would send it; `f` may forge any field.
pub fn refusal(b: &Bench, req_num: u64, f: impl FnOnce(&mut SmBody)) -> Vec<u8> {
    let mut body = sm_body(ERR_NO_HANDLER, b.token, b.local, b.remote, b.addr, b.peer);
    f(&mut body);
    sm_frame_cookie(&b.peer, &b.addr, SmPktType::Refused, &body, req_num)
}

/// A session-management frame whose header carries `cookie` (in `req_num`).
pub fn sm_frame_cookie(src: &EndpointAddr, dst: &EndpointAddr, kind: SmPktType, body: &SmBody, cookie: u64) -> Vec<u8> {
    let h = ErpcHdr::new(kind as u8, 40, SM_SESSION_NUM, PktType::Req, 0, cookie);
    frame(src, dst, h, body.as_bytes())
}

/// The cookie a session-management frame carries.
pub fn cookie_of(f: &[u8]) -> u64 {
    hdr_of(f).req_num
}

/// Decodes a sent session-management frame: its kind (req_type) and body.
pub fn sm_of(f: &[u8]) -> (u8, SmBody) {
    let h = hdr_of(f);
    assert_eq!(h.dest_session_num, SM_SESSION_NUM, "not an SM frame");
    assert_eq!(h.msg_size, 40);
    assert_eq!(f.len(), SM_FRAME_LEN);
    (h.req_type, SmBody::read_from_bytes(&f[PKT_HDR_LEN..]).unwrap())
}

// ============================================================================================
// The bench: one endpoint on a scripted NIC

pub struct Bench {
    pub rpc: Ep,
    pub script: Rc<RefCell<Script>>,
    pub clock: Clk,
    pub addr: EndpointAddr,
    pub peer: EndpointAddr,
    /// The session number frames we inject are addressed to (a session of `rpc`).
    pub local: u16,
    /// The session number `rpc` puts in the frames it sends (the peer's session).
    pub remote: u16,
    /// Whether [`Bench::sent`] checks every frame's headroom (off for fuzzing: a server answers
    /// session-management requests at whatever client address their body names).
    pub check_l2l3: bool,
    /// Request-number base of the session (`req_num_base(token)`): request numbers in the tests
    /// are written relative to it (slot i's first request is `i + 8`).
    pub base: u64,
    /// The session's token (client benches: as the endpoint chose it).
    pub token: u64,
}

impl Bench {
    pub fn new(addr: EndpointAddr, peer: EndpointAddr, cfg: RpcConfig, sessions: usize) -> Bench {
        Bench::new_at(addr, peer, cfg, sessions, 1_000_000)
    }

    /// As [`Bench::new`], with the endpoint's clock starting at `start_ns`.
    pub fn new_at(addr: EndpointAddr, peer: EndpointAddr, cfg: RpcConfig, sessions: usize, start_ns: u64) -> Bench {
        let clock: Clk = Rc::new(SimClock::new());
        clock.set(start_ns);
        let (nic, script) = ScriptNic::new(addr);
        let mut rpc =
            Rpc::new(nic, clock.clone(), Ctx::default(), memory(1 << 20, sessions, 16), cfg).expect("endpoint");
        rpc.set_session_handler(ev_record);
        Bench { rpc, script, clock, addr, peer, local: 0, remote: 0, check_l2l3: true, base: 0, token: 0 }
    }

    /// Queues frames for the next `rx_burst`.
    pub fn inject(&self, frames: impl IntoIterator<Item = Vec<u8>>) {
        self.script.borrow_mut().rx.extend(frames);
    }

    pub fn step(&mut self) {
        self.rpc.run_event_loop_once();
    }

    /// Frames sent since the last call, after checking their headroom.
    pub fn sent(&mut self) -> Vec<Vec<u8>> {
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
    pub fn deliver(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
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
    pub fn advance(&mut self, ns: u64) {
        self.clock.advance(ns);
        for _ in 0..CLOCK_READ_ITERS {
            self.step();
        }
    }

    /// A new connection's connect request from [`PEER`], with the cookie round trip: the first
    /// request gets a `ConnectRetry` of its own size and no session; the request repeated with
    /// the cookie gets what this returns.
    pub fn connect_req(&mut self, body: SmBody) -> Vec<Vec<u8>> {
        let sessions = self.rpc.num_active_sessions();
        let tx = self.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &body)]);
        assert_eq!(tx.len(), 1, "one ConnectRetry");
        let (kind, retry) = sm_of(&tx[0]);
        assert_eq!(kind, SmPktType::ConnectRetry as u8);
        assert_eq!(tx[0].len(), SM_FRAME_LEN, "no larger than the request");
        assert_eq!(retry, body, "the retry repeats the request's body");
        assert_eq!(self.rpc.num_active_sessions(), sessions, "no state before the cookie comes back");
        let cookie = cookie_of(&tx[0]);
        assert_ne!(cookie, 0);
        self.deliver([sm_frame_cookie(&PEER, &ME, SmPktType::ConnectReq, &body, cookie)])
    }

    pub fn flushes(&self) -> usize {
        self.script.borrow().flushes
    }

    pub fn ctx(&self) -> &Ctx {
        self.rpc.ctx()
    }

    /// The header we expect on a packet the endpoint sends on its session.
    pub fn exp(&self, ty: PktType, msg_size: usize, pkt_num: u16, req_num: u64) -> P {
        P { ty, req_type: RT, msg_size: msg_size as u32, dest: self.remote, pkt_num, req_num: self.base + req_num }
    }

    // ----- frames from the peer to the endpoint's session -----

    pub fn req(&self, req_num: u64, data: &[u8]) -> Vec<Vec<u8>> {
        msg_frames(&self.peer, &self.addr, self.local, PktType::Req, self.base + req_num, 0, data)
    }

    pub fn resp(&self, req_num: u64, first: u16, data: &[u8]) -> Vec<Vec<u8>> {
        msg_frames(&self.peer, &self.addr, self.local, PktType::Resp, self.base + req_num, first, data)
    }

    /// A header-only control packet (RFR or ExplCr), msg_size 0.
    pub fn ctrl(&self, ty: PktType, pkt_num: u16, req_num: u64) -> Vec<u8> {
        frame(&self.peer, &self.addr, ErpcHdr::new(RT, 0, self.local, ty, pkt_num, self.base + req_num), &[])
    }

    /// A frame to the session with a raw header (for malformed input).
    /// Its request number is relative to the session's base, like everywhere in these tests.
    pub fn raw(&self, h: ErpcHdr, data: &[u8]) -> Vec<u8> {
        let d = h.decode();
        let h = ErpcHdr::new(d.req_type, d.msg_size, d.dest_session_num, d.pkt_type, d.pkt_num, self.base + d.req_num);
        frame(&self.peer, &self.addr, h, data)
    }

    /// Asserts that delivering `f` drops it for `why` (and nothing else): one more drop of that
    /// reason, no other drop, nothing sent, no flush, no handler or continuation call.
    pub fn assert_dropped(&mut self, f: Vec<u8>, why: DropReason) {
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

    pub fn session(&self) -> SessionId {
        SessionId(self.local)
    }

    pub fn credits(&self) -> u16 {
        self.rpc.session(self.session()).unwrap().credits()
    }

    /// Enqueues a request with `data` and a response buffer of `resp_cap` bytes.
    pub fn request(&mut self, data: &[u8], resp_cap: usize, tag: u64) {
        self.request_of(RT, data, resp_cap, tag);
    }

    /// As [`Bench::request`], of type `req_type`.
    pub fn request_of(&mut self, req_type: u8, data: &[u8], resp_cap: usize, tag: u64) {
        let mut req = self.rpc.alloc_msg_buffer(data.len()).unwrap();
        req.data_mut().copy_from_slice(data);
        let resp = self.rpc.alloc_msg_buffer(resp_cap).unwrap();
        self.rpc.enqueue_request(self.session(), req_type, req, resp, c_record, tag).unwrap();
    }
}

/// An endpoint at [`ME`] with one server session, connected by the fake client at [`PEER`]
/// (token [`TOKEN`], client session [`CS`]); `handler` serves [`RT`].
pub fn server_with(handler: fn(&mut Ep, ReqHandle), cfg: RpcConfig, sessions: usize) -> Bench {
    let mut b = Bench::new(ME, PEER, cfg, sessions);
    b.rpc.register_handler(RT, handler, HandlerMode::Foreground).unwrap();
    let tx = b.connect_req(sm_body(0, TOKEN, CS, 0, PEER, ME));
    assert_eq!(tx.len(), 1, "one ConnectResp");
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::ConnectResp as u8);
    assert_eq!(body.err, 0);
    assert_eq!((body.token.get(), body.client_session.get()), (TOKEN, CS));
    b.local = body.server_session.get();
    b.remote = CS;
    b.base = req_num_base(TOKEN);
    b.token = TOKEN;
    assert!(b.rpc.is_connected(SessionId(b.local)));
    b
}

pub fn server(handler: fn(&mut Ep, ReqHandle)) -> Bench {
    server_with(handler, test_config(1), 8)
}

/// An endpoint at [`ME`] with one client session connected to the fake server at [`PEER`],
/// which answered with server session [`SS`].
pub fn client_with(cfg: RpcConfig) -> Bench {
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
    b.token = body.token.get();
    b
}

pub fn client() -> Bench {
    client_with(test_config(1))
}

// ============================================================================================
// Handlers, continuations, session handler

/// Echoes a one-packet request from the slot's preallocated response buffer.
pub fn h_echo(rpc: &mut Ep, h: ReqHandle) {
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
pub fn h_sized(rpc: &mut Ep, h: ReqHandle) {
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
pub fn h_hold(rpc: &mut Ep, h: ReqHandle) {
    let req = rpc.request(&h).expect("valid handle").to_vec();
    let c = rpc.ctx_mut();
    c.handler_calls += 1;
    c.requests.push(req);
    c.held.push(h);
}

/// Answers a held handle with `data`.
pub fn respond_held(b: &mut Bench, h: ReqHandle, data: &[u8]) {
    let mut m = b.rpc.alloc_msg_buffer(data.len()).unwrap();
    m.data_mut().copy_from_slice(data);
    b.rpc.enqueue_response(h, m).unwrap();
}

pub fn c_record(rpc: &mut Ep, c: Completion) {
    let data = match c.result {
        Ok(n) => c.resp.data()[..n].to_vec(),
        Err(_) => Vec::new(),
    };
    rpc.ctx_mut().done.push(Done { tag: c.tag, result: c.result, data });
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.free_msg_buffer(c.resp).unwrap();
}

pub fn ev_record(rpc: &mut Ep, e: SessionEvent) {
    rpc.ctx_mut().events.push(e);
}

// ============================================================================================
// Two benches wired back to back; a structured frame generator for fuzzing

/// Moves frames between two benches until both are quiet; returns the frames each sent.
pub fn pump(a: &mut Bench, b: &mut Bench) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
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
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

pub fn fuzz_frame(rng: &mut Rng, b: &Bench) -> Vec<u8> {
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

/// Connects client session of `b` to [`PEER`] (server session [`SS`]) by answering its connect
/// request.
pub fn connect_client(b: &mut Bench) -> SessionId {
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
    b.token = body.token.get();
    s
}
