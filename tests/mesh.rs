//! Many endpoints, one per thread, each a client and a server of every other: the multi-queue
//! driver scenario. Generic over the transport (anything `Send`: a queue pair of a userspace
//! driver, a UDP socket, an AF_XDP socket), so the same run checks the Intel driver on its
//! register-level fake and in the QEMU guest, the mlx5 driver on its device model, and the
//! kernel transports.
//!
//! Phases, each verifying every payload byte for byte and that every handler ran exactly once:
//! 1. connect a session from every endpoint to every other, then small RPCs on all of them at
//!    once;
//! 2. (optionally) one endpoint closes — its transport is dropped, which closes its queue
//!    pair — while the others keep going;
//! 3. large requests and large responses between every remaining pair;
//! 4. the same under injected loss (each endpoint drops a fraction of what it sends and
//!    receives), which forces retransmissions.
//!
//! The endpoints meet between phases without a lock held: each waits for the others while
//! running its event loop (it serves their requests meanwhile).

use crate::pattern;
use erpc_dataplane::clock::StdClock;
use erpc_dataplane::fault::FaultInjector;
use erpc_dataplane::transport::EndpointAddr;
use erpc_dataplane::{
    Completion, HandlerMode, OwnedMemory, ReqHandle, Rpc, RpcConfig, SessionId, SessionState, Transport,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The request type of the mesh service.
pub const REQ_MESH: u8 = 9;

/// What to run.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// Small RPCs from every endpoint to every other (phase 1).
    pub small_rpcs: usize,
    pub small_size: usize,
    /// Size of the large requests and responses (phase 3): `large_rpcs` of each per pair.
    pub large_size: usize,
    pub large_rpcs: usize,
    /// Frame drop probability of phase 4 (each endpoint, both directions).
    pub loss: f64,
    pub loss_small_rpcs: usize,
    /// RPCs of `large_size / 2` both ways under loss, per pair.
    pub loss_large_rpcs: usize,
    /// Small requests in flight per session.
    pub concurrency: usize,
    /// Give up on a phase after this long.
    pub phase_timeout: Duration,
    /// This endpoint closes after phase 1 (its transport is dropped).
    pub close_after_phase1: Option<usize>,
    /// Which pairs of endpoints talk (both ways), when not all can reach each other: endpoints
    /// of one NIC without an internal switch, cabled to a peer that does not send frames back;
    /// or queues of a veth pair, where queue *k* of one end reaches queue *k* of the other.
    /// `None`: every pair talks.
    pub talks: Option<fn(usize, usize) -> bool>,
    pub seed: u64,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            small_rpcs: 200,
            small_size: 32,
            large_size: 3 << 20,
            large_rpcs: 1,
            loss: 0.01,
            loss_small_rpcs: 100,
            loss_large_rpcs: 1,
            concurrency: 4,
            phase_timeout: Duration::from_secs(120),
            close_after_phase1: None,
            talks: None,
            seed: 1,
        }
    }
}

impl MeshConfig {
    /// The QEMU guest's five-endpoint run (tests/vm/loopback.rs): 50 small RPCs, one 3 MB
    /// request and one 3 MB response per pair, then 1% loss; endpoint 2 closes after phase 1.
    /// Also run on the fake device by the `stress` test of `intel_multiq`.
    pub fn guest() -> MeshConfig {
        MeshConfig {
            small_rpcs: 50,
            large_size: 3 << 20,
            large_rpcs: 1,
            loss: 0.01,
            loss_small_rpcs: 50,
            loss_large_rpcs: 1,
            phase_timeout: Duration::from_secs(400),
            close_after_phase1: Some(2),
            ..MeshConfig::default()
        }
    }
}

/// The endpoint configuration of the QEMU guest's driver tests. Frames take 10 to 100 us each
/// under TCG: a longer RTO avoids needless retransmissions, and a long session timeout keeps a
/// guest starved of host CPU for a second (a busy CI machine) from resetting the session: they
/// test the driver, not liveness detection.
pub fn guest_rpc_config() -> RpcConfig {
    RpcConfig {
        rto_ns: 20_000_000,
        session_timeout_ns: 60_000_000_000,
        keepalive_ns: 10_000_000_000,
        server_idle_timeout_ns: 300_000_000_000,
        mtu: 1514,
        ..RpcConfig::default()
    }
}

/// What one endpoint did.
#[derive(Clone, Debug, Default)]
pub struct EndpointReport {
    pub index: usize,
    pub addr: EndpointAddr,
    /// RPCs it completed as a client, per server endpoint index.
    pub completed: HashMap<usize, u64>,
    /// Requests it handled as a server, per client endpoint index.
    pub served: HashMap<usize, u64>,
    pub retransmissions: u64,
    /// Frames the fault injector dropped (both directions).
    pub injected_drops: u64,
    /// Whether it closed after phase 1.
    pub closed: bool,
    /// What the caller's transport check said, run on the endpoint's thread at the end (before
    /// the transport is dropped).
    pub transport_check: String,
}

impl fmt::Display for EndpointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done: u64 = self.completed.values().sum();
        let served: u64 = self.served.values().sum();
        write!(
            f,
            "endpoint {} ({}): {done} RPCs completed, {served} served, {} retransmissions, {} frames dropped by \
             injection{}; {}",
            self.index,
            self.addr,
            self.retransmissions,
            self.injected_drops,
            if self.closed { ", closed after phase 1" } else { "" },
            self.transport_check
        )
    }
}

#[derive(Default)]
struct Ctx {
    me: usize,
    /// Handler runs per tag (tags are unique per client and request).
    runs: HashMap<u64, u32>,
    corrupt_requests: u64,
    completed: HashMap<usize, u64>,
    in_flight: HashMap<usize, usize>,
    failed: Vec<String>,
    corrupt_responses: u64,
}

type Ep<T> = Rpc<'static, FaultInjector<T>, StdClock, Ctx>;

/// The tag of request `seq` from client `from` to server `to`.
fn tag(from: usize, to: usize, seq: u64) -> u64 {
    (from as u64) << 56 | (to as u64) << 48 | seq
}

/// Request `[tag u64][resp_len u32][pattern(tag)]`; response `pattern(!tag, resp_len)`.
fn handler<T: Transport>(rpc: &mut Ep<T>, h: ReqHandle) {
    let (t, n, ok) = match rpc.request(&h) {
        Some(req) if req.len() >= 12 => {
            let t = u64::from_le_bytes(req[..8].try_into().unwrap());
            let n = u32::from_le_bytes(req[8..12].try_into().unwrap()) as usize;
            (t, n, req[12..] == pattern(t, req.len() - 12)[..])
        }
        _ => (0, 0, false),
    };
    let ctx = rpc.ctx_mut();
    let me = ctx.me;
    *ctx.runs.entry(t).or_default() += 1;
    ctx.corrupt_requests += u64::from(!ok || (t >> 48) as usize & 0xFF != me);
    let Ok(mut resp) = rpc.alloc_msg_buffer(n) else {
        rpc.ctx_mut().corrupt_requests += 1;
        return;
    };
    resp.data_mut().copy_from_slice(&pattern(!t, n));
    if rpc.enqueue_response(h, resp).is_err() {
        rpc.ctx_mut().corrupt_requests += 1;
    }
}

fn continuation<T: Transport>(rpc: &mut Ep<T>, c: Completion) {
    let peer = (c.tag >> 48) as usize & 0xFF;
    let ctx = rpc.ctx_mut();
    *ctx.in_flight.entry(peer).or_default() -= 1;
    match c.result {
        Ok(n) => {
            *ctx.completed.entry(peer).or_default() += 1;
            if c.resp.data()[..n] != pattern(!c.tag, n)[..] {
                ctx.corrupt_responses += 1;
            }
        }
        Err(e) => ctx.failed.push(format!("tag {:#x} to endpoint {peer}: {e:?}", c.tag)),
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// The state the threads share: how many endpoints finished each phase.
struct Meeting {
    phase_done: [AtomicUsize; 2],
    failed: AtomicBool,
}

/// One endpoint's thread.
struct Runner<'a, T: Transport> {
    rpc: Ep<T>,
    me: usize,
    sessions: HashMap<usize, SessionId>,
    next_seq: u64,
    cfg: &'a MeshConfig,
    meet: &'a Meeting,
}

impl<T: Transport> Runner<'_, T> {
    fn spin(&mut self) {
        self.rpc.run_event_loop_once();
    }

    /// What the endpoint saw, for a failure's message: why it dropped packets, its msgbuf
    /// memory, its retransmissions and resets.
    fn diagnosis(&self) -> String {
        let (st, h) = (self.rpc.stats(), self.rpc.heap_stats());
        format!(
            "[{:?}; {:?}; msgbufs: {} live, {} of {} bytes free; {} retransmissions, {} sessions reset, {} requests \
             timed out]",
            st.drops,
            st.cc,
            h.live_buffers,
            h.free,
            h.capacity,
            st.retransmissions,
            st.sessions_reset,
            st.requests_timed_out
        )
    }

    /// Runs the event loop until `done`, failing after the phase timeout or when another
    /// endpoint failed.
    fn drive(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) -> Result<(), String> {
        let t0 = Instant::now();
        let mut k = 0u32;
        while !done(self) {
            if t0.elapsed() > self.cfg.phase_timeout {
                return Err(format!(
                    "endpoint {}: {what}: timed out after {:?} {}",
                    self.me,
                    self.cfg.phase_timeout,
                    self.diagnosis()
                ));
            }
            if self.meet.failed.load(Ordering::Relaxed) {
                return Err(format!("endpoint {}: {what}: another endpoint failed {}", self.me, self.diagnosis()));
            }
            self.spin();
            k = k.wrapping_add(1);
            if k % 64 == 0 {
                // Fewer cores than endpoints (a CI machine, a guest of one vCPU): let the
                // others run.
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Waits for every endpoint still running to finish phase `p`, serving them meanwhile.
    fn meet(&mut self, p: usize, expected: usize) -> Result<(), String> {
        self.meet.phase_done[p].fetch_add(1, Ordering::AcqRel);
        let meet = self.meet;
        self.drive("waiting for the others", |_| meet.phase_done[p].load(Ordering::Acquire) >= expected)
    }

    /// Runs `count` RPCs of (request, response) sizes to each of `peers`, `conc` at a time
    /// per peer, all peers at once.
    fn rpcs(&mut self, peers: &[usize], count: usize, req: usize, resp: usize, conc: usize) -> Result<(), String> {
        let done0: HashMap<usize, u64> = peers.iter().map(|&p| (p, self.completed(p))).collect();
        let mut issued: HashMap<usize, usize> = peers.iter().map(|&p| (p, 0)).collect();
        let what = format!("{count} RPCs of {req}/{resp} B to endpoints {peers:?}");
        self.drive(&what.clone(), |r| {
            for &p in peers {
                while issued[&p] < count && r.rpc.ctx().in_flight.get(&p).copied().unwrap_or(0) < conc {
                    if let Err(e) = r.issue(p, req, resp) {
                        r.rpc.ctx_mut().failed.push(e);
                        return true;
                    }
                    *issued.get_mut(&p).unwrap() += 1;
                }
            }
            !r.rpc.ctx().failed.is_empty() || peers.iter().all(|&p| r.completed(p) - done0[&p] >= count as u64)
        })?;
        let c = self.rpc.ctx();
        if !c.failed.is_empty() {
            return Err(format!("endpoint {}: {what}: failed: {:?} {}", self.me, c.failed, self.diagnosis()));
        }
        if c.corrupt_responses > 0 || c.corrupt_requests > 0 {
            return Err(format!(
                "endpoint {}: corrupt payloads: {} responses, {} requests",
                self.me, c.corrupt_responses, c.corrupt_requests
            ));
        }
        Ok(())
    }

    fn completed(&self, p: usize) -> u64 {
        self.rpc.ctx().completed.get(&p).copied().unwrap_or(0)
    }

    fn issue(&mut self, peer: usize, req_len: usize, resp_len: usize) -> Result<(), String> {
        let t = tag(self.me, peer, self.next_seq);
        self.next_seq += 1;
        let req_len = req_len.max(12);
        let mut b = self.rpc.alloc_msg_buffer(req_len).map_err(|e| format!("request buffer of {req_len} B: {e:?}"))?;
        let d = b.data_mut();
        d[..8].copy_from_slice(&t.to_le_bytes());
        d[8..12].copy_from_slice(&(resp_len as u32).to_le_bytes());
        d[12..].copy_from_slice(&pattern(t, req_len - 12));
        let resp =
            self.rpc.alloc_msg_buffer(resp_len).map_err(|e| format!("response buffer of {resp_len} B: {e:?}"))?;
        self.rpc
            .enqueue_request(self.sessions[&peer], REQ_MESH, b, resp, continuation::<T>, t)
            .map_err(|e| format!("enqueue to endpoint {peer}: {:?}", e.kind))?;
        *self.rpc.ctx_mut().in_flight.entry(peer).or_default() += 1;
        Ok(())
    }

    fn set_loss(&mut self, p: f64) {
        self.rpc.transport_mut().set_drop(p, p);
    }

    fn report(&self, closed: bool, transport_check: String) -> EndpointReport {
        let c = self.rpc.ctx();
        let mut served: HashMap<usize, u64> = HashMap::new();
        for &t in c.runs.keys() {
            *served.entry((t >> 56) as usize).or_default() += 1;
        }
        let f = self.rpc.transport().stats();
        EndpointReport {
            index: self.me,
            addr: self.rpc.local_addr(),
            completed: c.completed.clone(),
            served,
            retransmissions: self.rpc.stats().retransmissions,
            injected_drops: f.tx_dropped + f.rx_dropped,
            closed,
            transport_check,
        }
    }
}

/// Runs the mesh over `endpoints` (a transport and its endpoint's memory each), one thread per
/// endpoint. `check` runs on each endpoint's thread at the end, on its transport (for driver
/// counters: frames on the wrong queue, drops); its error fails the run.
pub fn run_mesh<T, F>(
    endpoints: Vec<(T, OwnedMemory)>,
    rpc_cfg: RpcConfig,
    cfg: &MeshConfig,
    check: F,
) -> Result<Vec<EndpointReport>, String>
where
    T: Transport + Send,
    F: Fn(&T) -> Result<String, String> + Sync,
{
    let n = endpoints.len();
    if n < 2 {
        return Err("a mesh needs two endpoints or more".into());
    }
    let addrs: Vec<EndpointAddr> = endpoints.iter().map(|(t, _)| t.local_addr()).collect();
    let meet = Meeting { phase_done: Default::default(), failed: AtomicBool::new(false) };
    let results: Vec<Result<EndpointReport, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = endpoints
            .into_iter()
            .enumerate()
            .map(|(me, (t, mem))| {
                let (addrs, meet, check) = (&addrs, &meet, &check);
                std::thread::Builder::new()
                    .name(format!("endpoint {me}"))
                    .spawn_scoped(s, move || {
                        let r = endpoint_thread(me, t, mem, addrs, rpc_cfg, cfg, meet, check);
                        if r.is_err() {
                            meet.failed.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                    .expect("spawn an endpoint thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("an endpoint thread panicked".into()))).collect()
    });
    let mut reports = vec![];
    let mut errors = vec![];
    for r in results {
        match r {
            Ok(r) => reports.push(r),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    // Every client's completed RPCs were each served exactly once by their server.
    for c in &reports {
        for (&server, &done) in &c.completed {
            let served = reports[server].served.get(&c.index).copied().unwrap_or(0);
            if served != done {
                return Err(format!(
                    "endpoint {} completed {done} RPCs at endpoint {server}, which served {served}",
                    c.index
                ));
            }
        }
    }
    Ok(reports)
}

#[allow(clippy::too_many_arguments)]
fn endpoint_thread<T: Transport, F: Fn(&T) -> Result<String, String>>(
    me: usize,
    t: T,
    mem: OwnedMemory,
    addrs: &[EndpointAddr],
    rpc_cfg: RpcConfig,
    cfg: &MeshConfig,
    meet: &Meeting,
    check: &F,
) -> Result<EndpointReport, String> {
    let n = addrs.len();
    let t = FaultInjector::new(t, 0.0, 0.0, cfg.seed ^ (me as u64).wrapping_mul(0x9E37_79B9));
    let ctx = Ctx { me, ..Default::default() };
    let mut rpc = Rpc::new(t, StdClock::default(), ctx, mem, rpc_cfg).map_err(|e| format!("endpoint {me}: {e}"))?;
    rpc.register_handler(REQ_MESH, handler::<T>, HandlerMode::Foreground)
        .map_err(|e| format!("endpoint {me}: register handler: {e}"))?;
    let talks = |p: usize| p != me && cfg.talks.map_or(true, |t| t(me, p));
    let all: Vec<usize> = (0..n).filter(|&p| talks(p)).collect();
    let mut sessions = HashMap::new();
    for &p in &all {
        sessions.insert(p, rpc.create_session(addrs[p]).map_err(|e| format!("endpoint {me}: session to {p}: {e}"))?);
    }
    let mut r = Runner { rpc, me, sessions, next_seq: 0, cfg, meet };
    r.drive("connecting", |r| r.sessions.values().all(|&s| r.rpc.session_state(s) != SessionState::ConnectInProgress))?;
    if let Some((p, s)) = r.sessions.iter().find(|(_, &s)| !r.rpc.is_connected(s)) {
        return Err(format!("endpoint {me}: session to endpoint {p}: {:?}", r.rpc.session_state(*s)));
    }
    // Phase 1: small RPCs to everyone.
    r.rpcs(&all, cfg.small_rpcs, cfg.small_size, cfg.small_size, cfg.concurrency)?;
    r.meet(0, n)?;
    let closer = cfg.close_after_phase1;
    if closer == Some(me) {
        let report = r.report(true, check(r.rpc.transport().inner())?);
        drop(r); // closes the transport (its queue pair) while the others run on
        return Ok(report);
    }
    let remaining = n - usize::from(closer.is_some());
    let peers: Vec<usize> = all.iter().copied().filter(|&p| Some(p) != closer).collect();
    // Phase 3: large requests, then large responses.
    r.rpcs(&peers, cfg.large_rpcs, cfg.large_size, 16, 1)?;
    r.rpcs(&peers, cfg.large_rpcs, 16, cfg.large_size, 1)?;
    // Phase 4: under loss.
    let retx0 = r.rpc.stats().retransmissions;
    r.set_loss(cfg.loss);
    r.rpcs(&peers, cfg.loss_small_rpcs, cfg.small_size, cfg.small_size, cfg.concurrency)?;
    r.rpcs(&peers, cfg.loss_large_rpcs, cfg.large_size / 2, cfg.large_size / 2, 1)?;
    r.set_loss(0.0);
    if cfg.loss > 0.0 && cfg.loss_large_rpcs > 0 && !peers.is_empty() && r.rpc.stats().retransmissions == retx0 {
        return Err(format!("endpoint {me}: the loss phase caused no retransmission"));
    }
    r.meet(1, remaining)?;
    let c = r.rpc.ctx();
    if let Some((t, k)) = c.runs.iter().find(|&(_, &k)| k != 1) {
        return Err(format!("endpoint {me}: the handler of tag {t:#x} ran {k} times"));
    }
    // Every client finished before the meeting, so nothing more is needed from this endpoint.
    Ok(r.report(false, check(r.rpc.transport().inner())?))
}
