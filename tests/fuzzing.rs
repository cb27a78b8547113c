//! The fuzzing harnesses, shared by the `cargo fuzz` targets (`fuzz/`), the seed-corpus
//! generator (`erpc-fuzz-corpus`) and the regression tests (`tests/tests/fuzz_regressions.rs`),
//! so a crash found by the fuzzer replays in the normal test suite as it is.
//!
//! * [`parsers`]: the wire and session-management parsers on arbitrary bytes.
//! * [`endpoint`]: a client and a server endpoint on scripted NICs, connected, with RPCs in
//!   flight, while the input decides what happens to every frame between them (delivered,
//!   dropped, duplicated, reordered), injects arbitrary frames and mutated copies of real ones
//!   into either end, and moves the clock, by small steps or across every timeout.
//!
//! Oracles of [`endpoint`]: nothing panics; every RPC the client issued completes exactly once,
//! successfully or with an error, within the clean period that follows the input (frames
//! delivered faithfully, time moving past every timeout); and then, once the client has closed
//! its session and the server has forgotten idle ones, no session is in use and no msgbuf is
//! live at either end.

use crate::{frame, Script, ScriptNic};
use erpc_dataplane::clock::SimClock;
use erpc_dataplane::sm::SmBody;
use erpc_dataplane::transport::EndpointAddr;
use erpc_dataplane::wire::{ErpcHdr, Packet, PktType, PKT_HDR_LEN};
use erpc_dataplane::{Completion, HandlerMode, OwnedMemory, ReqHandle, Rpc, RpcConfig, SessionEvent, SessionId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::rc::Rc;
use zerocopy::{FromBytes, IntoBytes};

/// The wire parsers on arbitrary bytes: the checked packet view, the header decode and
/// re-encode, and the session-management body. Panics only on a parser bug.
pub fn parsers(data: &[u8]) {
    if let Ok(p) = Packet::new_checked(data) {
        let h = p.header();
        assert!(PKT_HDR_LEN + p.payload().len() <= data.len());
        // Decoding then encoding the fields gives the header's bytes back.
        let again = ErpcHdr::new(h.req_type, h.msg_size, h.dest_session_num, h.pkt_type, h.pkt_num, h.req_num);
        assert_eq!(again.as_bytes(), p.hdr().erpc.as_bytes());
        let _ = p.hdr().src();
        if let Ok((body, _)) = SmBody::read_from_prefix(p.payload()) {
            let _ = (body.client_session.get(), body.token.get(), body.client.udp_port.get());
        }
    }
    let _ = erpc_dataplane::wire::src_of(data);
}

const CLIENT: EndpointAddr = EndpointAddr { mac: [2, 0, 0, 0, 0, 1], ipv4: [10, 0, 0, 1], udp_port: 31850 };
const SERVER: EndpointAddr = EndpointAddr { mac: [2, 0, 0, 0, 0, 2], ipv4: [10, 0, 0, 2], udp_port: 31851 };
const REQ_TYPE: u8 = 5;
/// Requests the client may have issued in one run.
const MAX_RPCS: u64 = 24;

type Clk = Rc<SimClock>;

/// Bytes of each endpoint's msgbuf region.
const REGION_BYTES: usize = 4 << 20;

thread_local! {
    /// The two endpoints' regions, allocated once per thread and reused by every run: the fuzzer
    /// runs the harness millions of times, and an endpoint's region outlives it by design.
    static REGIONS: (NonNull<u8>, NonNull<u8>) = {
        let get = || NonNull::from(Box::leak(vec![0u8; REGION_BYTES].into_boxed_slice())).cast::<u8>();
        (get(), get())
    };
}
type Ep<Ctx> = Rpc<'static, ScriptNic, Clk, Ctx>;

/// The client's view: what each RPC came back with.
#[derive(Default)]
struct Client {
    session: Option<SessionId>,
    /// Tag -> how often its continuation ran.
    completions: HashMap<u64, u32>,
    issued: u64,
    connect_failed: bool,
}

fn on_event(rpc: &mut Ep<Client>, e: SessionEvent) {
    match e {
        SessionEvent::ConnectFailed(..) => rpc.ctx_mut().connect_failed = true,
        SessionEvent::Reset(s, _) | SessionEvent::Disconnected { session: s, .. } if rpc.ctx().session == Some(s) => {
            rpc.ctx_mut().session = None
        }
        _ => {}
    }
}

fn on_done(rpc: &mut Ep<Client>, c: Completion) {
    *rpc.ctx_mut().completions.entry(c.tag).or_default() += 1;
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// Echoes the request, or answers a size the request asks for (its first two bytes): a
/// forged request must not make the handler misbehave either.
fn serve(rpc: &mut Ep<()>, h: ReqHandle) {
    let Some(req) = rpc.request(&h).map(<[u8]>::to_vec) else { return };
    let n = match req.as_slice() {
        [a, b, ..] => (u16::from_le_bytes([*a, *b]) as usize).min(4000),
        _ => req.len(),
    };
    let Ok(mut resp) = rpc.alloc_msg_buffer(n) else { return };
    for (i, b) in resp.data_mut().iter_mut().enumerate() {
        *b = req.get(i % req.len().max(1)).copied().unwrap_or(0);
    }
    if let Err(e) = rpc.enqueue_response(h, resp) {
        if let Some(b) = e.resp {
            let _ = rpc.free_msg_buffer(b);
        }
    }
}

fn config(seed: u64) -> RpcConfig {
    RpcConfig {
        rto_ns: 200_000,
        session_timeout_ns: 10_000_000,
        keepalive_ns: 4_000_000,
        server_idle_timeout_ns: 40_000_000,
        request_timeout_ns: 20_000_000,
        sm_retry_ns: 1_000_000,
        sm_max_attempts: 5,
        session_credits: 8,
        seed,
        ..RpcConfig::default()
    }
}

/// The world of one run: two endpoints, the frames in flight between them, the clock.
struct World {
    clock: Clk,
    cli: Ep<Client>,
    srv: Ep<()>,
    /// What each end's NIC has sent (`tx`, oldest first) and will deliver (`rx`): the harness
    /// carries frames between them by hand.
    cli_wire: Rc<RefCell<Script>>,
    srv_wire: Rc<RefCell<Script>>,
    /// Real frames seen so far (material for mutated copies), newest last.
    history: Vec<Vec<u8>>,
    /// Live msgbufs of each endpoint when it was built (its control-packet ring).
    baseline: (usize, usize),
}

impl World {
    fn new() -> World {
        let clock: Clk = Rc::new(SimClock::new());
        clock.set(1_000_000_000);
        let (a, b) = REGIONS.with(|r| *r);
        // SAFETY: each region is this thread's for good (allocated once, never freed) and used
        // by one World at a time: a run drops its World, and with it every msgbuf of the
        // region, before the next run builds one. The "device" (the harness) only reads it.
        let region = |p: NonNull<u8>| unsafe { erpc_dataplane::DmaRegion::new(p, REGION_BYTES, 0x4000_0000) };
        let (cli_nic, cli_wire) = ScriptNic::new(CLIENT);
        let (srv_nic, srv_wire) = ScriptNic::new(SERVER);
        let mut cli =
            Rpc::new(cli_nic, clock.clone(), Client::default(), OwnedMemory::new(region(a), 4, 64), config(1))
                .expect("client endpoint");
        let mut srv = Rpc::new(srv_nic, clock.clone(), (), OwnedMemory::new(region(b), 8, 8), config(2))
            .expect("server endpoint");
        cli.set_session_handler(on_event);
        srv.register_handler(REQ_TYPE, serve, HandlerMode::Foreground).expect("handler");
        let baseline = (cli.heap_stats().live_buffers, srv.heap_stats().live_buffers);
        World { clock, cli, srv, cli_wire, srv_wire, history: Vec::new(), baseline }
    }

    fn step(&mut self) {
        self.cli.run_event_loop_once();
        self.srv.run_event_loop_once();
    }

    /// Frames sent by the client (towards the server) and by the server, oldest first.
    fn out(&self, from_client: bool) -> std::cell::RefMut<'_, Vec<Vec<u8>>> {
        let w = if from_client { &self.cli_wire } else { &self.srv_wire };
        std::cell::RefMut::map(w.borrow_mut(), |w| &mut w.tx)
    }

    fn inject(&mut self, to_server: bool, f: Vec<u8>) {
        let w = if to_server { &self.srv_wire } else { &self.cli_wire };
        w.borrow_mut().rx.push_back(f);
    }

    /// Delivers the oldest frame of one direction (remembering it), if any.
    fn deliver(&mut self, from_client: bool) -> bool {
        let f = {
            let mut q = self.out(from_client);
            if q.is_empty() {
                return false;
            }
            q.remove(0)
        };
        if self.history.len() == 64 {
            self.history.remove(0);
        }
        self.history.push(f.clone());
        self.inject(from_client, f);
        true
    }

    /// Delivers everything in flight both ways and lets both ends answer, until quiet.
    fn settle(&mut self) {
        for _ in 0..200 {
            self.step();
            let mut moved = false;
            while self.deliver(true) | self.deliver(false) {
                moved = true;
            }
            if !moved {
                self.step();
                if self.out(true).is_empty() && self.out(false).is_empty() {
                    return;
                }
            }
        }
    }

    fn advance(&mut self, ns: u64) {
        self.clock.advance(ns);
        // An idle event loop reads the clock every 8 iterations.
        for _ in 0..8 {
            self.step();
        }
    }

    /// Issues the next RPC: `size` request bytes asking for a `resp`-byte answer.
    fn issue(&mut self, size: usize, resp: usize) {
        let Some(s) = self.cli.ctx().session else { return };
        if self.cli.ctx().issued >= MAX_RPCS || !self.cli.is_connected(s) {
            return;
        }
        let tag = self.cli.ctx().issued;
        let Ok(mut req) = self.cli.alloc_msg_buffer(size.max(2)) else { return };
        req.data_mut()[..2].copy_from_slice(&(resp as u16).to_le_bytes());
        let Ok(buf) = self.cli.alloc_msg_buffer(4000) else {
            let _ = self.cli.free_msg_buffer(req);
            return;
        };
        match self.cli.enqueue_request(s, REQ_TYPE, req, buf, on_done, tag) {
            Ok(()) => self.cli.ctx_mut().issued += 1,
            Err(e) => {
                let _ = self.cli.free_msg_buffer(e.req);
                let _ = self.cli.free_msg_buffer(e.resp);
            }
        }
    }
}

/// Reads the fuzzer's input a byte or a few at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte().unwrap_or(0), self.byte().unwrap_or(0)])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// One run of the endpoint harness on `data` (see the module docs). Panics when an oracle
/// fails.
pub fn endpoint(data: &[u8]) {
    let mut w = World::new();
    let s = w.cli.create_session(SERVER).expect("create_session");
    w.cli.ctx_mut().session = Some(s);
    w.settle();
    assert!(w.cli.is_connected(s), "the faithful connect must succeed");
    // A few RPCs in flight from the start: one packet, several packets, a multi-packet answer.
    w.issue(16, 16);
    w.issue(2500, 32);
    w.issue(40, 3000);
    let mut input = Input(data);
    while let Some(op) = input.byte() {
        match op % 16 {
            0 | 1 => {
                w.deliver(op % 2 == 0);
            }
            2 | 3 => {
                let mut q = w.out(op % 2 == 0);
                if !q.is_empty() {
                    q.remove(0);
                }
            }
            4 | 5 => {
                // Duplicate.
                let f = w.out(op % 2 == 0).first().cloned();
                if let Some(f) = f {
                    w.inject(op % 2 == 0, f);
                }
                w.deliver(op % 2 == 0);
            }
            6 | 7 => {
                // Reorder the two oldest.
                let mut q = w.out(op % 2 == 0);
                if q.len() >= 2 {
                    q.swap(0, 1);
                }
            }
            8 | 9 => {
                // Arbitrary bytes.
                let n = input.u16() as usize % 1100;
                let f = input.bytes(n).to_vec();
                w.inject(op % 2 == 0, f);
            }
            10 | 11 => {
                // A mutated copy of a real frame: up to four bytes set.
                if w.history.is_empty() {
                    continue;
                }
                let mut f = w.history[input.byte().unwrap_or(0) as usize % w.history.len()].clone();
                for _ in 0..1 + input.byte().unwrap_or(0) % 4 {
                    let at = input.u16() as usize;
                    if !f.is_empty() {
                        let i = at % f.len();
                        f[i] = input.byte().unwrap_or(0);
                    }
                }
                if input.byte().unwrap_or(0) % 8 == 0 {
                    f.truncate(input.u16() as usize % (f.len() + 1));
                }
                w.inject(op % 2 == 0, f);
            }
            12 => {
                // A crafted frame with a chosen header, from either side's address.
                let (ty, sess, pkt, rn) = (input.byte().unwrap_or(0), input.u16(), input.u16(), input.u16());
                let size = input.u16() as u32;
                let h = ErpcHdr::new(REQ_TYPE, size, sess, PktType::from_bits(ty as u64), pkt & 0x3FFF, rn as u64);
                let payload = input.bytes((size as usize).min(968)).to_vec();
                let to_server = ty & 4 != 0;
                let (src, dst) = if to_server { (CLIENT, SERVER) } else { (SERVER, CLIENT) };
                w.inject(to_server, frame(&src, &dst, h, &payload));
            }
            13 => w.advance(input.u16() as u64 * 1_000),
            14 => w.step(),
            _ => {
                let (size, resp) = (input.u16() as usize % 6000, input.u16() as usize % 4000);
                w.issue(size, resp);
            }
        }
    }
    clean_period(&mut w);
}

/// Faithful delivery while time moves past every timeout; then the oracles.
fn clean_period(w: &mut World) {
    let cfg = config(0);
    let horizon = cfg.request_timeout_ns + cfg.session_timeout_ns + cfg.keepalive_ns + 4 * cfg.rto_ns;
    let mut waited = 0;
    while waited <= horizon && w.cli.ctx().completions.len() < w.cli.ctx().issued as usize {
        w.settle();
        w.advance(cfg.rto_ns / 2);
        waited += cfg.rto_ns / 2;
    }
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "issued {} done {:?} cli drops {:?} srv drops {:?} retx {} resets {}",
            w.cli.ctx().issued,
            w.cli.ctx().completions,
            w.cli.stats().drops,
            w.srv.stats().drops,
            w.cli.stats().retransmissions,
            w.cli.stats().sessions_reset
        );
    }
    let c = w.cli.ctx();
    assert_eq!(c.completions.len() as u64, c.issued, "an RPC never completed: {:?} of {}", c.completions, c.issued);
    assert!(c.completions.values().all(|&n| n == 1), "an RPC completed twice: {:?}", c.completions);
    // Close the session (if it survived), then let the server forget everything idle.
    if let Some(s) = w.cli.ctx().session {
        if w.cli.destroy_session(s).is_ok() {
            w.settle();
        }
    }
    let idle = cfg.server_idle_timeout_ns + cfg.keepalive_ns;
    for _ in 0..8 {
        w.settle();
        w.advance(idle / 4);
    }
    w.settle();
    assert_eq!(w.cli.num_active_sessions(), 0, "client sessions left");
    assert_eq!(w.srv.num_active_sessions(), 0, "server sessions left");
    assert_eq!(w.cli.heap_stats().live_buffers, w.baseline.0, "client msgbufs leaked");
    assert_eq!(w.srv.heap_stats().live_buffers, w.baseline.1, "server msgbufs leaked");
}

/// Seed inputs for the fuzz targets, from frames real endpoints send: a clean run of the
/// endpoint harness is recorded, and each of its frames becomes a `parsers` seed and part of an
/// `endpoint` seed that injects it (into the side it was meant for) among faithful deliveries.
pub fn seed_corpus() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut w = World::new();
    let s = w.cli.create_session(SERVER).expect("create_session");
    w.cli.ctx_mut().session = Some(s);
    let mut frames = Vec::new();
    let record = |w: &mut World, frames: &mut Vec<(bool, Vec<u8>)>| {
        for _ in 0..200 {
            w.step();
            let a: Vec<_> = w.out(true).drain(..).collect();
            let b: Vec<_> = w.out(false).drain(..).collect();
            if a.is_empty() && b.is_empty() {
                break;
            }
            for f in a {
                frames.push((true, f.clone()));
                w.inject(true, f);
            }
            for f in b {
                frames.push((false, f.clone()));
                w.inject(false, f);
            }
        }
    };
    record(&mut w, &mut frames);
    w.issue(16, 16);
    w.issue(2500, 32);
    w.issue(40, 3000);
    record(&mut w, &mut frames);
    let parsers: Vec<Vec<u8>> = frames.iter().map(|(_, f)| f.clone()).collect();
    let mut endpoint = Vec::new();
    for (to_server, f) in &frames {
        // Deliver a few real frames, inject this one (op 8/9: arbitrary bytes), mutate it.
        let mut seed = vec![0, 1, 0, 1];
        seed.push(if *to_server { 8 } else { 9 });
        seed.extend_from_slice(&(f.len() as u16).to_le_bytes());
        seed.extend_from_slice(f);
        seed.extend_from_slice(&[10, 0, 1, 40, 0, 0xFF, 13, 0x10, 0x27, 0, 1, 0, 1]);
        endpoint.push(seed);
    }
    (parsers, endpoint)
}
