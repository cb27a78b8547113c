//! The store's client: one eRPC endpoint carrying any number of logical clients, each with its
//! own id, sequence numbers and one operation at a time.
//!
//! The endpoint keeps a session to every replica. A logical client sends its operation to the
//! replica it believes leads; it follows `Redirect`s, backs off on `TryAgain`, and on a session
//! reset (the replica died or was cut off) moves on to the next replica — always re-sending the
//! **same** client id and sequence number, which the store uses to apply a write at most once.
//! Optionally every operation's invocation and return times are recorded ([`Done`]), for the
//! linearizability checks.

use crate::proto::{self, ClientRequest, ClientRespHdr, OpCode, StatsResp, Status};
use erpc_dataplane::clock::Clock;
use erpc_dataplane::transport::{EndpointAddr, Transport};
use erpc_dataplane::{Completion, Rpc, RpcError, SessionEvent, SessionId, SmError};
use std::collections::VecDeque;
use zerocopy::FromBytes;

/// An operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Get { key: Vec<u8> },
    Del { key: Vec<u8> },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Del { key } => key,
        }
    }

    fn code(&self) -> OpCode {
        match self {
            Op::Put { .. } => OpCode::Put,
            Op::Get { .. } => OpCode::Get,
            Op::Del { .. } => OpCode::Del,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A write is done (a DEL also when the key was not there: see `NotFound`).
    Ok,
    /// A GET's value.
    Value(Vec<u8>),
    /// GET or DEL of a missing key.
    NotFound,
    /// Given up: no replica answered, or the store refused the request. The operation may or may
    /// not have taken effect.
    Failed(String),
}

/// A finished operation.
#[derive(Clone, Debug)]
pub struct Done {
    pub client: usize,
    pub op: Op,
    pub outcome: Outcome,
    /// When it was submitted and when its answer arrived (the endpoint's clock).
    pub invoke_ns: u64,
    pub return_ns: u64,
    /// Requests sent for it (1 without retries).
    pub attempts: u32,
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Every replica's address; replica `i` has Raft id `i + 1`.
    pub peers: Vec<EndpointAddr>,
    /// Logical clients.
    pub clients: usize,
    /// Largest value a GET may return.
    pub max_value: usize,
    /// Wait after `TryAgain`, or when no replica is connected.
    pub backoff_ns: u64,
    /// Reconnect to a replica this long after its session failed.
    pub reconnect_ns: u64,
    /// Give up on an operation after this long.
    pub op_timeout_ns: u64,
    /// Seed of the client ids (random per run outside tests).
    pub seed: u64,
}

impl ClientConfig {
    pub fn new(peers: Vec<EndpointAddr>, clients: usize) -> ClientConfig {
        ClientConfig {
            peers,
            clients,
            max_value: 64 << 10,
            backoff_ns: 1_000_000,
            reconnect_ns: 50_000_000,
            op_timeout_ns: 10_000_000_000,
            seed: erpc_dataplane::RpcConfig::random_seed(),
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub sent: u64,
    pub redirects: u64,
    pub try_again: u64,
    pub resets: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Replica {
    addr: Option<EndpointAddr>,
    session: Option<SessionId>,
    connected: bool,
    retry_at_ns: u64,
    /// Why the last connect attempt failed, until one succeeds.
    connect_error: Option<SmError>,
    /// The request type this endpoint refused (it serves eRPC, but is no replica of this
    /// store: a wrong peer address), and until when it is not asked again; cleared when its
    /// session is made again.
    refuses: Option<(u8, u64)>,
}

/// How long a peer that refused the store's requests is not asked again: a wrong address is
/// asked about once a second, and a forged refusal keeps a real replica out no longer than that.
const REFUSED_FOR_NS: u64 = 1_000_000_000;

impl Replica {
    /// Connected, and not refusing the store's requests (as of `now`).
    fn usable(&self, now: u64) -> bool {
        self.connected && !self.refusing(now)
    }

    /// It refused the store's requests, and is not to be asked again yet.
    fn refusing(&self, now: u64) -> bool {
        self.refuses.is_some_and(|(_, until)| now < until)
    }
}

struct Logical {
    id: u64,
    seq: u64,
    /// Index of the replica believed to lead.
    leader: usize,
    op: Option<Op>,
    in_flight: bool,
    retry_at_ns: Option<u64>,
    invoke_ns: u64,
    attempts: u32,
}

/// The context of a client endpoint.
pub struct KvClient {
    pub cfg: ClientConfig,
    replicas: Vec<Replica>,
    clients: Vec<Logical>,
    /// Finished operations, oldest first (the caller drains it).
    pub done: VecDeque<Done>,
    pub stats: ClientStats,
    /// The last statistics a replica sent ([`query_stats`]).
    pub last_stats: Option<StatsResp>,
    /// Echo round trips completed and their times, ns ([`echo`]).
    pub echoes: Vec<u64>,
    echo_t0: u64,
    polls: u32,
}

pub type ClientRpc<T, C> = Rpc<'static, T, C, KvClient>;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

impl KvClient {
    pub fn new(cfg: ClientConfig) -> KvClient {
        let replicas = cfg.peers.iter().map(|a| Replica { addr: Some(*a), ..Default::default() }).collect();
        let clients = (0..cfg.clients)
            .map(|i| Logical {
                id: mix(cfg.seed ^ mix(i as u64 + 1)) | 1,
                seq: 0,
                leader: 0,
                op: None,
                in_flight: false,
                retry_at_ns: None,
                invoke_ns: 0,
                attempts: 0,
            })
            .collect();
        KvClient {
            cfg,
            replicas,
            clients,
            done: VecDeque::new(),
            stats: ClientStats::default(),
            last_stats: None,
            echoes: Vec::new(),
            echo_t0: 0,
            polls: 0,
        }
    }

    /// Installs the session handler.
    pub fn register<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>) {
        rpc.set_session_handler(on_session::<T, C>);
    }

    /// Whether logical client `c` is waiting for an operation.
    pub fn busy(&self, c: usize) -> bool {
        self.clients[c].op.is_some()
    }

    pub fn client_id(&self, c: usize) -> u64 {
        self.clients[c].id
    }

    /// Whether the session to replica `i` (index into the peers) is connected.
    pub fn replica_connected(&self, i: usize) -> bool {
        self.replicas.get(i).is_some_and(|r| r.connected)
    }

    /// Replicas with a connected session.
    pub fn connected(&self) -> usize {
        self.replicas.iter().filter(|r| r.connected).count()
    }

    /// Why the last connect attempt to replica `i` (index into the peers) failed, if it has not
    /// connected since: [`SmError::RemoteUnreachable`] when nothing answered there, another
    /// error when an endpoint answered and refused the session (it is no replica, or it is out
    /// of sessions, or this address holds its maximum of sessions).
    pub fn connect_error(&self, i: usize) -> Option<SmError> {
        self.replicas.get(i).and_then(|r| r.connect_error)
    }

    /// The first replica that refused a session (an endpoint answered and said no), and why.
    pub fn refusal(&self) -> Option<(usize, SmError)> {
        (0..self.replicas.len())
            .find_map(|i| self.connect_error(i).filter(|e| *e != SmError::RemoteUnreachable).map(|e| (i, e)))
    }

    /// Why peer `i` is no replica of this store, if the endpoint there refused a store request
    /// (one of that type) as an eRPC server of something else does (a wrong `--peers` address).
    pub fn not_a_replica(&self, i: usize) -> Option<String> {
        let r = &self.replicas[i];
        let (a, (t, _)) = (r.addr?, r.refuses?);
        let at = std::net::SocketAddrV4::from(a);
        Some(format!("{at} is not a replica of this store: it serves no request of type {t} (check the peers)"))
    }

    /// The replica logical client `c` believes leads (index into the peers).
    pub fn leader_guess(&self, c: usize) -> usize {
        self.clients[c].leader
    }

    fn finish(&mut self, c: usize, outcome: Outcome, now: u64) {
        let l = &mut self.clients[c];
        let Some(op) = l.op.take() else { return };
        l.in_flight = false;
        l.retry_at_ns = None;
        if matches!(outcome, Outcome::Failed(_)) {
            self.stats.failed += 1;
        }
        self.done.push_back(Done {
            client: c,
            op,
            outcome,
            invoke_ns: l.invoke_ns,
            return_ns: now,
            attempts: l.attempts,
        });
    }
}

/// Starts operation `op` on logical client `c` (which must not be busy).
pub fn submit<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, c: usize, op: Op) {
    let now = rpc.clock().now_ns();
    let k = rpc.ctx_mut();
    let l = &mut k.clients[c];
    assert!(l.op.is_none(), "logical client {c} already has an operation");
    l.seq += 1;
    l.op = Some(op);
    l.invoke_ns = now;
    l.attempts = 0;
    l.retry_at_ns = None;
    try_send(rpc, c);
}

/// Sends client `c`'s operation to the replica it believes leads, or another connected one;
/// schedules a retry if none is connected.
fn try_send<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, c: usize) {
    let now = rpc.clock().now_ns();
    let k = rpc.ctx_mut();
    let n = k.replicas.len();
    let l = &k.clients[c];
    let Some(op) = l.op.clone() else { return };
    if now.saturating_sub(l.invoke_ns) > k.cfg.op_timeout_ns {
        let secs = k.cfg.op_timeout_ns as f64 / 1e9;
        let usable = (0..n).filter(|&i| k.replicas[i].usable(now)).count();
        let mut msg = match (usable, k.refusal()) {
            (0, Some((i, e))) => format!("no replica accepted a session within {secs} s: replica {}: {e}", i + 1),
            (0, None) => format!("no replica answered within {secs} s"),
            _ => format!("no leader answered within {secs} s"),
        };
        if let Some(why) = (0..n).find_map(|i| k.not_a_replica(i)) {
            msg = format!("{msg}; {why}");
        }
        return k.finish(c, Outcome::Failed(msg), now);
    }
    if let Some(why) = k.replicas.iter().all(|r| r.refusing(now)).then(|| k.not_a_replica(l.leader)).flatten() {
        // Every peer is an eRPC server of something else: no use waiting.
        return k.finish(c, Outcome::Failed(why), now);
    }
    let Some(target) = (0..n).map(|d| (l.leader + d) % n).find(|&i| k.replicas[i].usable(now)) else {
        k.clients[c].retry_at_ns = Some(now + k.cfg.backoff_ns);
        return;
    };
    let (id, seq) = (l.id, l.seq);
    let s = k.replicas[target].session.expect("connected");
    k.clients[c].leader = target;
    let (key, value): (&[u8], &[u8]) = match &op {
        Op::Put { key, value } => (key, value),
        Op::Get { key } | Op::Del { key } => (key, &[]),
    };
    let cr = ClientRequest { op: op.code(), client_id: id, seq, key, value };
    let resp_cap = 32 + if op.code() == OpCode::Get { k.cfg.max_value } else { 0 };
    let Ok(mut req) = rpc.alloc_msg_buffer(cr.len()) else {
        rpc.ctx_mut().clients[c].retry_at_ns = Some(now + 1_000_000);
        return;
    };
    cr.write(req.data_mut());
    let Ok(resp) = rpc.alloc_msg_buffer(resp_cap) else {
        let _ = rpc.free_msg_buffer(req);
        rpc.ctx_mut().clients[c].retry_at_ns = Some(now + 1_000_000);
        return;
    };
    match rpc.enqueue_request(s, proto::REQ_CLIENT, req, resp, on_resp::<T, C>, c as u64) {
        Ok(()) => {
            let k = rpc.ctx_mut();
            k.stats.sent += 1;
            let l = &mut k.clients[c];
            l.in_flight = true;
            l.attempts += 1;
            l.retry_at_ns = None;
        }
        Err(e) => {
            let _ = rpc.free_msg_buffer(e.req);
            let _ = rpc.free_msg_buffer(e.resp);
            let k = rpc.ctx_mut();
            k.clients[c].leader = (target + 1) % n;
            k.clients[c].retry_at_ns = Some(now + k.cfg.backoff_ns);
        }
    }
}

fn on_resp<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, comp: Completion) {
    let c = comp.tag as usize;
    let now = rpc.clock().now_ns();
    let k = rpc.ctx_mut();
    let n = k.replicas.len();
    k.clients[c].in_flight = false;
    let mut resend_now = false;
    match comp.result {
        Ok(len) => match ClientRespHdr::read_from_prefix(&comp.resp.data()[..len]) {
            Ok((h, rest)) => match Status::from_u8(h.status) {
                Some(Status::Ok) => {
                    let out = if matches!(k.clients[c].op, Some(Op::Get { .. })) {
                        Outcome::Value(rest[..(h.val_len.get() as usize).min(rest.len())].to_vec())
                    } else {
                        Outcome::Ok
                    };
                    k.finish(c, out, now);
                }
                Some(Status::NotFound) => k.finish(c, Outcome::NotFound, now),
                Some(Status::Redirect) => {
                    k.stats.redirects += 1;
                    // The leader by its address among our peers (whatever their order), else
                    // by its Raft id (the replicas' own order).
                    let (ip, port) = (h.leader_ipv4, h.leader_port.get());
                    let by_addr =
                        k.replicas.iter().position(|r| r.addr.is_some_and(|a| a.ipv4 == ip && a.udp_port == port));
                    let id = h.leader_id.get() as usize;
                    let to = by_addr.or((id >= 1 && id <= n).then(|| id - 1));
                    let usable = to.is_some_and(|to| k.replicas[to].usable(now));
                    let l = &mut k.clients[c];
                    if let Some(to) = to.filter(|&to| to != l.leader) {
                        // At once if we can reach it; else after a pause, not to bounce between
                        // a follower and a leader we have no session to.
                        l.leader = to;
                        if usable {
                            resend_now = true;
                        } else {
                            l.retry_at_ns = Some(now + k.cfg.backoff_ns);
                        }
                    } else {
                        l.leader = (l.leader + 1) % n;
                        l.retry_at_ns = Some(now + k.cfg.backoff_ns);
                    }
                }
                Some(Status::TryAgain) => {
                    // That replica knows no leader (it may be cut off): ask the next one.
                    k.stats.try_again += 1;
                    let l = &mut k.clients[c];
                    l.leader = (l.leader + 1) % n;
                    l.retry_at_ns = Some(now + k.cfg.backoff_ns);
                }
                Some(Status::BadRequest) | None => {
                    k.finish(c, Outcome::Failed("the store refused the request as malformed".into()), now)
                }
            },
            Err(_) => k.finish(c, Outcome::Failed("a malformed response".into()), now),
        },
        Err(RpcError::SessionReset | RpcError::TimedOut) => {
            // The replica is gone, cut off or stuck (eRPC's request_timeout_ns; the store answers
            // TryAgain long before it): try the next one, same sequence number.
            k.stats.resets += 1;
            let l = &mut k.clients[c];
            l.leader = (l.leader + 1) % n;
            resend_now = true;
        }
        Err(RpcError::ResponseTooLarge { size, .. }) => {
            k.finish(c, Outcome::Failed(format!("the value ({size} bytes) is larger than --max-value")), now)
        }
        Err(RpcError::NoHandler { req_type }) => {
            // An eRPC server, but not of this store (a wrong --peers address): the others are
            // asked; the operation fails at once only when every peer is such a server.
            // (`try_send` fails the operation when every peer refuses.)
            let i = k.clients[c].leader;
            k.replicas[i].refuses = Some((req_type, now + REFUSED_FOR_NS));
            k.clients[c].leader = (i + 1) % n;
            resend_now = true;
        }
    }
    let _ = rpc.free_msg_buffer(comp.req);
    let _ = rpc.free_msg_buffer(comp.resp);
    if resend_now {
        try_send(rpc, c);
    }
}

fn on_session<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, ev: SessionEvent) {
    let now = rpc.clock().now_ns();
    let k = rpc.ctx_mut();
    let (s, up, err) = match ev {
        SessionEvent::Connected(s) => (s, true, None),
        SessionEvent::ConnectFailed(s, e) => (s, false, Some(e)),
        SessionEvent::Reset(s, _) => (s, false, None),
        SessionEvent::Disconnected { session, .. } => (session, false, None),
    };
    let reconnect = k.cfg.reconnect_ns;
    if let Some(r) = k.replicas.iter_mut().find(|r| r.session == Some(s)) {
        r.connected = up;
        if up || err.is_some() {
            r.connect_error = err;
        }
        if up {
            r.refuses = None;
        }
        if !up {
            r.session = None;
            r.retry_at_ns = now + reconnect;
        }
    }
}

/// When [`poll`] next has something to do that no packet announces: the earliest retry of an
/// operation waiting out a backoff, or reconnection to a replica without a session (ns on the
/// endpoint's clock; `None`: only packets). An application that blocks between polls (as
/// `Rpc::wait_for_work` does until a packet or the endpoint's own timers) must wake by then.
pub fn next_deadline_ns<T: Transport, C: Clock>(rpc: &ClientRpc<T, C>) -> Option<u64> {
    let k = rpc.ctx();
    let retries = k.clients.iter().filter(|l| l.op.is_some() && !l.in_flight).filter_map(|l| l.retry_at_ns);
    let reconnects = k.replicas.iter().filter(|r| r.addr.is_some() && r.session.is_none()).map(|r| r.retry_at_ns);
    retries.chain(reconnects).min()
}

/// One iteration: the endpoint's event loop, reconnections, and retries that are due.
pub fn poll<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>) {
    rpc.run_event_loop_once();
    // The clock (a costly read in a VM) only when something waits for it.
    let k = rpc.ctx_mut();
    k.polls = k.polls.wrapping_add(1);
    let waiting = k.clients.iter().any(|l| l.retry_at_ns.is_some()) || k.replicas.iter().any(|r| r.session.is_none());
    if !waiting && k.polls % 64 != 0 {
        return;
    }
    let now = rpc.clock().now_ns();
    for i in 0..rpc.ctx().replicas.len() {
        let r = &rpc.ctx().replicas[i];
        if let (Some(addr), None) = (r.addr, r.session) {
            if now >= r.retry_at_ns {
                match rpc.create_session(addr) {
                    Ok(s) => rpc.ctx_mut().replicas[i].session = Some(s),
                    Err(_) => {
                        let d = rpc.ctx().cfg.reconnect_ns;
                        rpc.ctx_mut().replicas[i].retry_at_ns = now + d;
                    }
                }
            }
        }
    }
    for c in 0..rpc.ctx().clients.len() {
        let l = &rpc.ctx().clients[c];
        if l.op.is_some() && !l.in_flight && l.retry_at_ns.is_some_and(|t| now >= t) {
            try_send(rpc, c);
        }
    }
    // Retries queued outside the event loop go to the transport now, not at the next poll.
    rpc.transmit();
}

/// Asks replica `i` for its statistics (the answer lands in `last_stats`); `reset` clears its
/// leader-latency histogram after answering. False if replica `i` is not connected.
pub fn query_stats<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, i: usize, reset: bool) -> bool {
    let Some(s) = rpc.ctx().replicas.get(i).and_then(|r| r.session.filter(|_| r.connected)) else { return false };
    let (Ok(mut q), Ok(r)) = (rpc.alloc_msg_buffer(1), rpc.alloc_msg_buffer(72)) else { return false };
    q.data_mut()[0] = reset as u8;
    rpc.ctx_mut().last_stats = None;
    rpc.enqueue_request(s, proto::REQ_STATS, q, r, on_stats::<T, C>, 0).is_ok()
}

fn on_stats<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, c: Completion) {
    if let Ok(n) = c.result {
        rpc.ctx_mut().last_stats = StatsResp::read_from_bytes(&c.resp.data()[..n]).ok();
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// Sends one echo RPC of `req` bytes asking for `resp` bytes to replica `i` (the benchmark's
/// round-trip reference); its time lands in `echoes`. False if not connected.
pub fn echo<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, i: usize, req: usize, resp: usize) -> bool {
    let Some(s) = rpc.ctx().replicas.get(i).and_then(|r| r.session.filter(|_| r.connected)) else { return false };
    let (Ok(mut q), Ok(r)) = (rpc.alloc_msg_buffer(req.max(4)), rpc.alloc_msg_buffer(resp)) else { return false };
    q.data_mut()[..4].copy_from_slice(&(resp as u32).to_le_bytes());
    rpc.ctx_mut().echo_t0 = rpc.clock().now_ns();
    rpc.enqueue_request(s, proto::REQ_ECHO, q, r, on_echo::<T, C>, 0).is_ok()
}

fn on_echo<T: Transport, C: Clock>(rpc: &mut ClientRpc<T, C>, c: Completion) {
    let now = rpc.clock().now_ns();
    let k = rpc.ctx_mut();
    if c.result.is_ok() {
        let t = now.saturating_sub(k.echo_t0).max(1);
        k.echoes.push(t);
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}
