//! Test harness for the dataplane: endpoints on a simulated fabric driven by a simulated clock,
//! and a scripted NIC for protocol-level tests (inject crafted frames, inspect what is sent).
//!
//! Storage is leaked to get `'static` endpoints; each test builds a few, so that is bounded.

pub mod fuzzing;
pub mod idle;
pub mod intel_fake;
pub mod mesh;
pub mod mlx5_model;
pub mod scenarios;

use erpc_dataplane::clock::SimClock;
use erpc_dataplane::fabric::{Fabric, RxBuf, SimNic};
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::{ErpcHdr, RoutingInfo, HEADROOM, PKT_HDR_LEN};
use erpc_dataplane::{DmaRegion, OwnedMemory, Rpc, RpcConfig};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::rc::Rc;
use zerocopy::IntoBytes;

pub type Clk = &'static SimClock;
pub type Nic = SimNic<'static, 'static, Clk>;
pub type Ep<X> = Rpc<'static, Nic, Clk, X>;

pub fn leak<T>(v: T) -> &'static mut T {
    Box::leak(Box::new(v))
}

/// DMA memory for tests: ordinary pages, leaked.
pub fn region(bytes: usize) -> DmaRegion {
    let mem: &'static mut [u8] = vec![0u8; bytes].leak();
    let iova = 0x4000_0000;
    DmaRegion::from_static(mem, iova)
}

pub fn memory(region_bytes: usize, sessions: usize, backlog: usize) -> OwnedMemory {
    OwnedMemory::new(region(region_bytes), sessions, backlog)
}

/// Test configuration: short timeouts so simulated time moves fast.
pub fn test_config(seed: u64) -> RpcConfig {
    RpcConfig {
        rto_ns: 100_000,
        session_timeout_ns: 20_000_000,
        sm_retry_ns: 1_000_000,
        sm_max_attempts: 5,
        keepalive_ns: 5_000_000,
        server_idle_timeout_ns: 100_000_000,
        seed,
        ..RpcConfig::default()
    }
}

/// A simulated world: one clock, one fabric.
pub struct World {
    pub clock: Clk,
    pub fab: &'static Fabric<'static, Clk>,
}

impl World {
    pub fn new(seed: u64) -> World {
        let clock: Clk = leak(SimClock::new());
        clock.set(1_000_000);
        let fab: &'static Fabric<'static, Clk> = leak(Fabric::new(clock, seed));
        World { clock, fab }
    }

    /// A NIC on a new fabric port.
    pub fn nic(&self, tx_lag: usize) -> Nic {
        let port = self.fab.attach(RxBuf::storage(512).leak());
        self.fab.nic(port, tx_lag)
    }

    /// A new endpoint on a new port.
    pub fn endpoint<X>(&self, ctx: X, cfg: RpcConfig, region_bytes: usize, sessions: usize) -> Ep<X> {
        Rpc::new(self.nic(16), self.clock, ctx, memory(region_bytes, sessions, 1024), cfg).expect("endpoint")
    }

    /// One round: every endpoint runs its event loop once, then time moves on by `step_ns`, or
    /// further when nothing is in flight (to the next delivery or by `idle_ns`).
    pub fn round(&self, eps: &mut [&mut dyn Poll], step_ns: u64, idle_ns: u64) {
        for e in eps.iter_mut() {
            e.poll();
        }
        match self.fab.next_due() {
            Some(t) if t > self.clock.now_ns() => self.clock.set(t),
            Some(_) => self.clock.advance(step_ns),
            None => self.clock.advance(idle_ns),
        }
    }
}

pub use erpc_dataplane::Clock;

/// Runs rounds of the listed endpoints until `cond` holds (checked before each round) or `max_ns`
/// of simulated time pass; evaluates to whether `cond` held.
#[macro_export]
macro_rules! run_until {
    ($w:expr, [$($e:expr),+ $(,)?], $max:expr, $cond:expr) => {{
        let end = $crate::Clock::now_ns($w.clock) + $max;
        loop {
            if $cond {
                break true;
            }
            if $crate::Clock::now_ns($w.clock) >= end {
                break false;
            }
            $w.round(&mut [$(&mut $e as &mut dyn $crate::Poll),+], 1_000, 10_000);
        }
    }};
}

/// Creates a session from `$cli` to `$addr` and runs the listed endpoints until it is connected.
#[macro_export]
macro_rules! connect {
    ($w:expr, $cli:expr, [$($e:expr),*], $addr:expr) => {{
        let addr = $addr;
        let s = $cli.create_session(addr).expect("create_session");
        assert!($crate::run_until!($w, [$cli $(, $e)*], 50_000_000, $cli.is_connected(s)), "connect failed");
        s
    }};
}

/// Something with an event loop.
pub trait Poll {
    fn poll(&mut self);
}

impl<T: Transport, C: erpc_dataplane::Clock, X> Poll for Rpc<'static, T, C, X> {
    fn poll(&mut self) {
        self.run_event_loop_once();
    }
}

/// Deterministic payload for (tag, index).
pub fn pattern(tag: u64, len: usize) -> Vec<u8> {
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ----------------------------------------------------------------------------------------------
// Tagged requests: a server that checks what it receives and answers with verifiable bytes.

/// Server context for [`tagged_handler`]: how often each tag's handler ran.
#[derive(Default)]
pub struct TagServer {
    pub runs: std::collections::HashMap<u64, u32>,
    pub corrupt_requests: u32,
}

/// Request `[tag u64][resp_len u32][pattern(tag)]`; response `pattern(!tag, resp_len)`.
pub fn tagged_handler<T: Transport, C: erpc_dataplane::Clock>(
    rpc: &mut Rpc<'static, T, C, TagServer>,
    h: erpc_dataplane::ReqHandle,
) {
    let req = rpc.request(&h).expect("valid handle");
    let tag = u64::from_le_bytes(req[..8].try_into().unwrap());
    let n = u32::from_le_bytes(req[8..12].try_into().unwrap()) as usize;
    let ok = req[12..] == pattern(tag, req.len() - 12)[..];
    let ctx = rpc.ctx_mut();
    *ctx.runs.entry(tag).or_default() += 1;
    ctx.corrupt_requests += u32::from(!ok);
    let mut resp = rpc.alloc_msg_buffer(n).expect("response buffer");
    resp.data_mut().copy_from_slice(&pattern(!tag, n));
    rpc.enqueue_response(h, resp).expect("respond");
}

/// A request for [`tagged_handler`] of `req_len` (at least 12) bytes asking for `resp_len`.
pub fn tagged_request<T: Transport, C: erpc_dataplane::Clock, X>(
    rpc: &mut Rpc<'static, T, C, X>,
    tag: u64,
    req_len: usize,
    resp_len: usize,
) -> erpc_dataplane::MsgBuf {
    let req_len = req_len.max(12);
    let mut b = rpc.alloc_msg_buffer(req_len).expect("request buffer");
    let d = b.data_mut();
    d[..8].copy_from_slice(&tag.to_le_bytes());
    d[8..12].copy_from_slice(&(resp_len as u32).to_le_bytes());
    d[12..].copy_from_slice(&pattern(tag, req_len - 12));
    b
}

// ----------------------------------------------------------------------------------------------
// Scripted NIC for protocol-level tests.

/// Frames a hand-driven test transport delivers, and the buffers it has lent out.
#[derive(Default)]
pub struct RxFrames {
    queue: VecDeque<Vec<u8>>,
    lent: Vec<Box<[u8]>>,
}

impl RxFrames {
    pub fn push_back(&mut self, f: Vec<u8>) {
        self.queue.push_back(f);
    }

    pub fn extend(&mut self, fs: impl IntoIterator<Item = Vec<u8>>) {
        self.queue.extend(fs);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// `Transport::rx_burst`: lends queued frames (kept alive until `release_all`).
    pub fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(f) = self.queue.pop_front() else { break };
            let mut b = f.into_boxed_slice();
            let len = b.len() as u32;
            out[n] = RxPacket { data: NonNull::new(b.as_mut_ptr()).unwrap(), len, id: 0 };
            self.lent.push(b);
            n += 1;
        }
        n
    }

    /// `Transport::rx_release` of a whole burst (the dataplane releases bursts whole).
    pub fn release_all(&mut self) {
        self.lent.clear();
    }
}

/// Shared state of a [`ScriptNic`]: frames to deliver, frames sent.
#[derive(Default)]
pub struct Script {
    pub rx: RxFrames,
    /// Frames as the device read them at `tx_burst` time.
    pub tx: Vec<Vec<u8>>,
    pub flushes: usize,
    pub released: usize,
    /// Frames accepted (copied at once).
    pub accepted: u64,
    /// When set, the device says it read only the first this many accepted frames
    /// (`tx_reclaimed`), so the endpoint must keep the buffers of the others.
    pub read_upto: Option<u64>,
}

/// A transport the test drives by hand.
pub struct ScriptNic {
    pub script: Rc<RefCell<Script>>,
    pub addr: EndpointAddr,
}

impl ScriptNic {
    pub fn new(addr: EndpointAddr) -> (ScriptNic, Rc<RefCell<Script>>) {
        let s = Rc::new(RefCell::new(Script::default()));
        (ScriptNic { script: s.clone(), addr }, s)
    }
}

impl Transport for ScriptNic {
    fn mtu(&self) -> usize {
        1024
    }
    fn local_addr(&self) -> EndpointAddr {
        self.addr
    }
    fn max_tx_in_flight(&self) -> usize {
        64
    }
    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let mut s = self.script.borrow_mut();
        for p in pkts {
            let mut buf = vec![0u8; p.len()];
            // SAFETY: the dataplane keeps queued frames readable (Transport contract).
            unsafe { p.copy_to(&mut buf) };
            s.tx.push(buf);
            s.accepted += 1;
        }
        pkts.len()
    }
    fn tx_flush(&mut self) {
        self.script.borrow_mut().flushes += 1;
    }
    fn tx_reclaimed(&self) -> u64 {
        let s = self.script.borrow();
        s.read_upto.map_or(s.accepted, |n| n.min(s.accepted))
    }
    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        self.script.borrow_mut().rx.rx_burst(out)
    }
    fn rx_release(&mut self, pkts: &[RxPacket]) {
        let mut s = self.script.borrow_mut();
        s.released += pkts.len();
        s.rx.release_all();
    }
}

/// Builds a frame from `src` to `dst` with the given eRPC header and data.
pub fn frame(src: &EndpointAddr, dst: &EndpointAddr, h: ErpcHdr, data: &[u8]) -> Vec<u8> {
    let ri = RoutingInfo::new(src, dst);
    let mut hr = [0u8; HEADROOM];
    ri.write(&mut hr, 14 + data.len());
    let mut f = hr.to_vec();
    f.extend_from_slice(h.as_bytes());
    f.extend_from_slice(data);
    f
}

/// Decodes the eRPC header of a captured frame.
pub fn hdr_of(f: &[u8]) -> erpc_dataplane::wire::Header {
    erpc_dataplane::wire::Packet::new_checked(f).expect("valid frame").header()
}

pub use erpc_dataplane::wire::SM_SESSION_NUM;
pub use erpc_dataplane::Clock as ClockTrait;
pub const HDR: usize = PKT_HDR_LEN;
pub use erpc_dataplane::wire::PktType as Pt;

/// Polls `t` until a frame arrives (or `within` passes) and returns a copy of the first frame
/// of that burst; the whole burst is released.
pub fn receive_one<T: Transport>(t: &mut T, within: std::time::Duration) -> Option<Vec<u8>> {
    let t0 = std::time::Instant::now();
    let mut out = [RxPacket::EMPTY; 8];
    while t0.elapsed() < within {
        let n = t.rx_burst(&mut out);
        if n > 0 {
            // SAFETY: lent until released below.
            let f = unsafe { std::slice::from_raw_parts(out[0].data.as_ptr(), out[0].len as usize) }.to_vec();
            t.rx_release(&out[..n]);
            return Some(f);
        }
    }
    None
}
