//! The loopback driver scenarios: two endpoints, one per NIC (or per device model), wired to
//! each other. Generic over the transports and the clock, so the same scenarios run against the
//! Intel register-level fake on the host, the emulated 82576 under VFIO in a QEMU guest, and any
//! later driver.
//!
//! Phases, each verifying every payload byte for byte:
//! 1. connect a session;
//! 2. small RPCs, several in flight;
//! 3. multi-packet requests and multi-packet responses of several MB;
//! 4. the same under injected loss (both directions, both ends), which forces retransmissions
//!    and therefore `tx_flush()`.

use crate::pattern;
use erpc_dataplane::fault::FaultInjector;
use erpc_dataplane::{
    Clock, Completion, EndpointMemory, HandlerMode, OwnedMemory, ReqHandle, Rpc, RpcConfig, SessionId, Transport,
};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Endpoint memory (4 sessions, a backlog of 64) whose region is `bytes` of DMA memory from
/// `space`, kept for the rest of the process (msgbufs may outlive the endpoint).
pub fn dma_endpoint_memory(
    space: &std::sync::Arc<erpc_hugepages::DmaSpace>,
    bytes: usize,
    page: erpc_hugepages::PageSize,
) -> Result<OwnedMemory, erpc_hugepages::DmaError> {
    let mem = Box::leak(Box::new(space.alloc(bytes, page)?));
    // SAFETY: leaked, so it outlives the endpoint and its msgbufs; devices only read it (transmit).
    let region = unsafe { mem.dataplane_region() };
    Ok(OwnedMemory::new(region, 4, 64))
}

/// Like [`dma_endpoint_memory`], with room for `sessions` sessions (client and server).
pub fn dma_endpoint_memory_sessions(
    space: &std::sync::Arc<erpc_hugepages::DmaSpace>,
    bytes: usize,
    page: erpc_hugepages::PageSize,
    sessions: usize,
) -> Result<OwnedMemory, erpc_hugepages::DmaError> {
    let mem = Box::leak(Box::new(space.alloc(bytes, page)?));
    // SAFETY: leaked, so it outlives the endpoint and its msgbufs; devices only read it (transmit).
    let region = unsafe { mem.dataplane_region() };
    Ok(OwnedMemory::new(region, sessions, 256))
}

/// The request type of the loopback service.
pub const REQ_LOOPBACK: u8 = 7;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoopbackConfig {
    pub small_rpcs: usize,
    pub small_size: usize,
    /// Size of the large requests and of the large responses.
    pub large_size: usize,
    /// How many large requests (each with a small response) and as many large responses.
    pub large_rpcs: usize,
    /// Frame drop probability in the loss phase (each direction, each end).
    pub loss: f64,
    pub loss_small_rpcs: usize,
    pub loss_large_rpcs: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Give up on a phase after this long (nanoseconds of the clock).
    pub phase_timeout_ns: u64,
    pub seed: u64,
}

impl Default for LoopbackConfig {
    fn default() -> Self {
        LoopbackConfig {
            small_rpcs: 1000,
            small_size: 32,
            large_size: 3 << 20,
            large_rpcs: 2,
            loss: 0.01,
            loss_small_rpcs: 300,
            loss_large_rpcs: 2,
            concurrency: 8,
            phase_timeout_ns: 120_000_000_000,
            seed: 1,
        }
    }
}

/// Server state: runs per tag and requests whose bytes were wrong.
#[derive(Default)]
pub struct Server {
    pub runs: HashMap<u64, u32>,
    pub corrupt_requests: u64,
}

/// Client state: completions seen, failures and wrong responses.
#[derive(Default)]
pub struct Client {
    pub completed: u64,
    pub failed: Vec<String>,
    pub corrupt_responses: u64,
    pub in_flight: usize,
}

type Ep<T, C, X> = Rpc<'static, FaultInjector<T>, C, X>;

/// Request `[tag u64][resp_len u32][pattern(tag)]`; response `pattern(!tag, resp_len)`.
fn handler<T: Transport, C: Clock>(rpc: &mut Ep<T, C, Server>, h: ReqHandle) {
    let (tag, n, ok) = match rpc.request(&h) {
        Some(req) if req.len() >= 12 => {
            let tag = u64::from_le_bytes(req[..8].try_into().unwrap());
            let n = u32::from_le_bytes(req[8..12].try_into().unwrap()) as usize;
            (tag, n, req[12..] == pattern(tag, req.len() - 12)[..])
        }
        _ => (0, 0, false),
    };
    let ctx = rpc.ctx_mut();
    *ctx.runs.entry(tag).or_default() += 1;
    ctx.corrupt_requests += u64::from(!ok);
    let Ok(mut resp) = rpc.alloc_msg_buffer(n) else {
        rpc.ctx_mut().corrupt_requests += 1;
        return;
    };
    resp.data_mut().copy_from_slice(&pattern(!tag, n));
    if rpc.enqueue_response(h, resp).is_err() {
        rpc.ctx_mut().corrupt_requests += 1;
    }
}

fn continuation<T: Transport, C: Clock>(rpc: &mut Ep<T, C, Client>, c: Completion) {
    let ctx = rpc.ctx_mut();
    ctx.in_flight -= 1;
    match c.result {
        Ok(n) => {
            ctx.completed += 1;
            if c.resp.data()[..n] != pattern(!c.tag, n)[..] {
                ctx.corrupt_responses += 1;
            }
        }
        Err(e) => ctx.failed.push(format!("tag {}: {e:?}", c.tag)),
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// The two endpoints.
pub struct Loopback<A: Transport, B: Transport, C: Clock> {
    pub client: Ep<A, C, Client>,
    pub server: Ep<B, C, Server>,
    session: SessionId,
    next_tag: u64,
}

impl<A: Transport, B: Transport, C: Clock + Copy> Loopback<A, B, C> {
    /// Builds both endpoints and connects a session from `a`'s endpoint to `b`'s.
    pub fn connect(
        a: A,
        b: B,
        mem_a: impl Into<EndpointMemory<'static>>,
        mem_b: impl Into<EndpointMemory<'static>>,
        clock: C,
        rpc_cfg: RpcConfig,
        cfg: &LoopbackConfig,
    ) -> Result<Self, String> {
        let a = FaultInjector::new(a, 0.0, 0.0, cfg.seed);
        let b = FaultInjector::new(b, 0.0, 0.0, cfg.seed ^ 0x5555);
        let client =
            Rpc::new(a, clock, Client::default(), mem_a, rpc_cfg).map_err(|e| format!("client endpoint: {e}"))?;
        let mut server =
            Rpc::new(b, clock, Server::default(), mem_b, rpc_cfg).map_err(|e| format!("server endpoint: {e}"))?;
        server
            .register_handler(REQ_LOOPBACK, handler::<B, C>, HandlerMode::Foreground)
            .map_err(|e| format!("register handler: {e}"))?;
        let mut lb = Loopback { session: SessionId(0), client, server, next_tag: 1 };
        let addr = lb.server.local_addr();
        lb.session = lb.client.create_session(addr).map_err(|e| format!("create_session: {e}"))?;
        let s = lb.session;
        lb.drive(cfg.phase_timeout_ns, |l| {
            l.client.session_state(s) != erpc_dataplane::SessionState::ConnectInProgress
        })?;
        if !lb.client.is_connected(s) {
            return Err(format!("connect failed: session {:?}", lb.client.session_state(s)));
        }
        Ok(lb)
    }

    /// Runs both event loops until `done` or the timeout.
    fn drive(&mut self, timeout_ns: u64, mut done: impl FnMut(&Self) -> bool) -> Result<(), String> {
        let end = self.client.clock().now_ns() + timeout_ns;
        while !done(self) {
            if self.client.clock().now_ns() > end {
                return Err(format!("timed out after {} ms", timeout_ns / 1_000_000));
            }
            self.client.run_event_loop_once();
            self.server.run_event_loop_once();
        }
        Ok(())
    }

    /// Runs `count` RPCs of (request, response) sizes, `concurrency` at a time, and checks that
    /// every one completed with the right bytes and ran its handler exactly once.
    pub fn rpcs(&mut self, count: usize, req_len: usize, resp_len: usize, cfg: &LoopbackConfig) -> Result<(), String> {
        let first = self.next_tag;
        let done0 = self.client.ctx().completed;
        let mut issued = 0;
        let end = self.client.clock().now_ns() + cfg.phase_timeout_ns;
        while self.client.ctx().completed - done0 < count as u64 {
            if !self.client.ctx().failed.is_empty() {
                return Err(format!("RPCs failed: {:?}", self.client.ctx().failed));
            }
            while issued < count && self.client.ctx().in_flight < cfg.concurrency {
                let tag = self.next_tag;
                let req = self.request(tag, req_len, resp_len)?;
                let resp = self
                    .client
                    .alloc_msg_buffer(resp_len)
                    .map_err(|e| format!("response buffer of {resp_len} B: {e:?}"))?;
                self.client
                    .enqueue_request(self.session, REQ_LOOPBACK, req, resp, continuation::<A, C>, tag)
                    .map_err(|e| format!("enqueue: {:?}", e.kind))?;
                self.client.ctx_mut().in_flight += 1;
                self.next_tag += 1;
                issued += 1;
            }
            if self.client.clock().now_ns() > end {
                return Err(format!("timed out with {} of {count} RPCs done", self.client.ctx().completed - done0));
            }
            self.client.run_event_loop_once();
            self.server.run_event_loop_once();
        }
        let c = self.client.ctx();
        if c.corrupt_responses > 0 || self.server.ctx().corrupt_requests > 0 {
            return Err(format!(
                "corrupt payloads: {} responses, {} requests",
                c.corrupt_responses,
                self.server.ctx().corrupt_requests
            ));
        }
        for tag in first..self.next_tag {
            match self.server.ctx().runs.get(&tag) {
                Some(1) => {}
                n => return Err(format!("handler of tag {tag} ran {n:?} times, not once")),
            }
        }
        Ok(())
    }

    fn request(&mut self, tag: u64, req_len: usize, resp_len: usize) -> Result<erpc_dataplane::MsgBuf, String> {
        let req_len = req_len.max(12);
        let mut b =
            self.client.alloc_msg_buffer(req_len).map_err(|e| format!("request buffer of {req_len} B: {e:?}"))?;
        let d = b.data_mut();
        d[..8].copy_from_slice(&tag.to_le_bytes());
        d[8..12].copy_from_slice(&(resp_len as u32).to_le_bytes());
        d[12..].copy_from_slice(&pattern(tag, req_len - 12));
        Ok(b)
    }

    /// Sets the injected loss on both endpoints, both directions.
    pub fn set_loss(&mut self, p: f64) {
        self.client.transport_mut().set_drop(p, p);
        self.server.transport_mut().set_drop(p, p);
    }

    /// Runs all phases; returns a report of what happened.
    pub fn run_all(&mut self, cfg: &LoopbackConfig) -> Result<String, String> {
        let mut out = String::new();
        let t = |l: &Self| l.client.clock().now_ns();
        let t0 = t(self);
        self.rpcs(cfg.small_rpcs, cfg.small_size, cfg.small_size, cfg).map_err(|e| format!("small RPCs: {e}"))?;
        let _ = writeln!(
            out,
            "small RPCs: {} of {} B in {} ms",
            cfg.small_rpcs,
            cfg.small_size,
            (t(self) - t0) / 1_000_000
        );
        let t0 = t(self);
        self.rpcs(cfg.large_rpcs, cfg.large_size, 16, cfg).map_err(|e| format!("large requests: {e}"))?;
        self.rpcs(cfg.large_rpcs, 16, cfg.large_size, cfg).map_err(|e| format!("large responses: {e}"))?;
        let _ = writeln!(
            out,
            "large RPCs: {} requests and {} responses of {} B in {} ms",
            cfg.large_rpcs,
            cfg.large_rpcs,
            cfg.large_size,
            (t(self) - t0) / 1_000_000
        );
        let retx0 = self.retransmissions();
        let flush0 = self.flushes();
        self.set_loss(cfg.loss);
        let t0 = t(self);
        self.rpcs(cfg.loss_small_rpcs, cfg.small_size, cfg.small_size, cfg)
            .map_err(|e| format!("small RPCs under loss: {e}"))?;
        self.rpcs(cfg.loss_large_rpcs, cfg.large_size / 2, cfg.large_size / 2, cfg)
            .map_err(|e| format!("large RPCs under loss: {e}"))?;
        self.set_loss(0.0);
        let dropped = self.client.transport().stats().tx_dropped
            + self.client.transport().stats().rx_dropped
            + self.server.transport().stats().tx_dropped
            + self.server.transport().stats().rx_dropped;
        let retx = self.retransmissions() - retx0;
        let flushes = self.flushes() - flush0;
        let _ = writeln!(
            out,
            "loss {}: {} small and {} large RPCs in {} ms; {dropped} frames dropped, {retx} \
             retransmissions, {flushes} tx_flush calls",
            cfg.loss,
            cfg.loss_small_rpcs,
            cfg.loss_large_rpcs,
            (t(self) - t0) / 1_000_000
        );
        if cfg.loss > 0.0 && (dropped == 0 || retx == 0 || flushes == 0) {
            return Err(format!(
                "the loss phase did not exercise recovery: {dropped} drops, {retx} \
                 retransmissions, {flushes} flushes"
            ));
        }
        Ok(out)
    }

    fn retransmissions(&self) -> u64 {
        self.client.stats().retransmissions + self.server.stats().retransmissions
    }

    fn flushes(&self) -> u64 {
        self.client.stats().tx_flushes + self.server.stats().tx_flushes
    }
}
