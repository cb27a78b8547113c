//! A replica: one eRPC endpoint whose context holds a raft-rs `RawNode`, the log, the state
//! machine and the bookkeeping that connects them to clients.
//!
//! # The loop
//!
//! [`poll`] runs one iteration of the endpoint's event loop, then the replica's own work:
//!
//! 1. Handlers ran inside the event loop: Raft messages were `step`ped into the node (their
//!    requests held, to be answered below), client writes proposed, reads queued.
//! 2. Logical clock: `tick()` once per `tick_ns` of the endpoint's clock (on the simulated fabric
//!    that is simulated time, so elections are deterministic).
//! 3. The reads queued in this iteration go to Raft as **one** `read_index` request.
//! 4. One Ready: messages routed to per-peer outboxes, a snapshot installed, entries and hard
//!    state appended (and, with `fsync`, written and synced once), committed writes applied
//!    and answered, read states recorded. With `fsync`, what raft-rs lets leave before the log
//!    is durable (a leader's appends) goes to the transport before the sync (step 6 early), so
//!    the followers write while the leader does; what must wait (a follower's acknowledgement)
//!    is routed after it.
//! 5. Reads whose index is applied are answered; a snapshot is taken and the log compacted
//!    every `snapshot_every` entries.
//! 6. Each held Raft request is answered with every message waiting for its sender (so a
//!    follower's append response rides in the eRPC response to the leader's append); what is
//!    left in an outbox goes out as one `RAFT` request per peer (at most [`WINDOW`] in flight),
//!    and messages larger than `part_size` (snapshots) as a series of `RAFT_PART` requests.
//!    All of it goes to the transport before [`poll`] returns ([`Rpc::transmit`]), not at the
//!    end of the next event-loop iteration.
//!
//! # Clients
//!
//! Only the leader serves: a follower answers `Redirect` with the leader's id and address (or
//! `TryAgain` when it knows none). Writes are proposed at once and answered when applied; a
//! write whose index ends up holding another term's entry, or that is pending when leadership
//! is lost or `request_timeout_ticks` pass, is answered `TryAgain` and the client retries it with
//! the same sequence number, which the state machine's client table turns into an answer, not a
//! second application. Reads are linearizable ([`ReadMode::ReadIndex`]): answered once Raft has
//! confirmed leadership with a quorum (one heartbeat round per batch of reads) and the state
//! machine has applied up to the read index.

use crate::codec;
use crate::error::Error;
use crate::proto::{self, ClientRequest, ClientRespHdr, OpCode, PartHdr, StatsResp, Status};
use crate::state::KvState;
use crate::storage::{Durability, KvStorage, Recovered};
use erpc_dataplane::clock::Clock;
use erpc_dataplane::transport::{EndpointAddr, Transport};
use erpc_dataplane::{Completion, HandlerMode, ReqHandle, Rpc, RpcError, SessionEvent, SessionId};
use hdrhistogram::Histogram;
use raft::eraftpb::{Message, MessageType};
use raft::{RawNode, ReadOnlyOption, Ready, SnapshotStatus, StateRole};
use std::collections::{HashMap, HashSet, VecDeque};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

/// Raft requests in flight to one peer (the slots of one eRPC session).
pub const WINDOW: usize = erpc_dataplane::config::SLOTS_PER_SESSION;
/// Response buffer of a Raft request: the messages the peer sends back in it.
pub const RAFT_RESP_CAP: usize = 64 << 10;
/// Largest Raft request (a batch of messages); larger single messages go in parts.
pub const MAX_BATCH: usize = 1 << 20;

/// How GETs are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Linearizable: Raft's read index (`ReadOnlyOption::Safe`, a quorum heartbeat round per
    /// batch of reads), answered once applied up to it.
    ReadIndex,
    /// **Broken on purpose, for the linearizability tests:** the leader answers from its own map
    /// at once, and without `check_quorum` it keeps believing it leads while partitioned away,
    /// so it serves stale values. Never use it otherwise.
    UnsafeLocal,
}

/// A replica's configuration.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's Raft id: 1-based index into `peers`.
    pub id: u64,
    /// Every replica's endpoint address, this one's included; replica `i` has Raft id `i + 1`.
    pub peers: Vec<EndpointAddr>,
    /// One Raft tick.
    pub tick_ns: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub durability: Durability,
    /// Raft's `max_size_per_msg`: bytes of entries per append (catch-up batches stay well under
    /// eRPC's 8 MiB messages).
    pub max_append_bytes: u64,
    /// Raft's `max_inflight_msgs`.
    pub max_inflight: usize,
    /// Take a snapshot and compact the log every this many applied entries (0: never).
    pub snapshot_every: u64,
    /// Entries kept in the log before the snapshot, so followers slightly behind catch up from
    /// the log rather than from a snapshot.
    pub log_keep: u64,
    /// Largest Raft request; a larger message (a snapshot) is sent in parts of this size.
    pub part_size: usize,
    /// Largest message a peer may send in parts (a snapshot).
    pub max_assembly: usize,
    pub read_mode: ReadMode,
    /// A write or read pending for this many ticks is answered `TryAgain`. Must be shorter than
    /// the clients' eRPC `request_timeout_ns` (10 s by default), which fails a request its server
    /// holds that long and resets its session, with every other request on it:
    /// [`crate::cluster::replica_endpoint`] refuses one as long as its own endpoint's.
    pub request_timeout_ticks: u64,
    /// Raft's `skip_bcast_commit`: followers learn the commit index with the next append or
    /// heartbeat instead of an extra empty append per commit (half the messages per write).
    pub skip_bcast_commit: bool,
    /// Keep every applied write's (client id, sequence number) in the state machine (tests).
    pub record_applied: bool,
}

impl ReplicaConfig {
    /// Defaults for replica `id` of `peers`: 1 ms ticks, elections after 100 ms, heartbeats
    /// every 10 ms, logs in memory.
    pub fn new(id: u64, peers: Vec<EndpointAddr>) -> ReplicaConfig {
        ReplicaConfig {
            id,
            peers,
            tick_ns: 1_000_000,
            election_ticks: 100,
            heartbeat_ticks: 10,
            durability: Durability::None,
            max_append_bytes: 256 << 10,
            max_inflight: 64,
            snapshot_every: 100_000,
            log_keep: 10_000,
            part_size: 1 << 20,
            max_assembly: 1 << 30,
            read_mode: ReadMode::ReadIndex,
            request_timeout_ticks: 1000,
            skip_bcast_commit: true,
            record_applied: false,
        }
    }
}

/// Most entries [`KvStorage::preallocate`] makes room for at start: 2^20, 104 MiB.
const PREALLOC_MAX: u64 = 1 << 20;

/// How many entries the log holds at most in steady state, which the replica makes room for at
/// start: a compaction interval, the entries kept behind the snapshot, and an eighth more for
/// entries not yet applied. Nothing if the log is never compacted (it grows without bound).
fn prealloc_entries(cfg: &ReplicaConfig) -> usize {
    if cfg.snapshot_every == 0 {
        return 0;
    }
    let n = cfg.snapshot_every.saturating_add(cfg.log_keep);
    n.saturating_add(n / 8).min(PREALLOC_MAX) as usize
}

/// Counters of one replica.
#[derive(Debug)]
pub struct ReplicaStats {
    /// Latency at the leader of each write it answered: handler entry to response, ns.
    pub commit_ns: Histogram<u64>,
    pub elections_won: u64,
    pub raft_requests_sent: u64,
    pub raft_msgs_sent: u64,
    pub raft_msgs_received: u64,
    pub parts_sent: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub snapshots_taken: u64,
    /// Raft requests or parts that did not decode, or came from no peer of ours.
    pub bad_requests: u64,
    /// Writes answered from the client table (retries of writes already applied).
    pub duplicates: u64,
    pub redirects: u64,
    pub try_again: u64,
    pub reads_served: u64,
    /// Raft messages dropped because a peer was unreachable or its outbox full.
    pub dropped_msgs: u64,
    /// Messages from peers that raft-rs would end the process over: dropped (see [`admit`]).
    pub malformed_msgs: u64,
    /// Appends of this leader's raft-rs whose entries did not follow their index, mended before
    /// sending (see [`repair_batched_append`]).
    pub appends_repaired: u64,
    pub session_resets: u64,
}

impl Default for ReplicaStats {
    fn default() -> Self {
        ReplicaStats {
            commit_ns: Histogram::new(3).expect("histogram"),
            elections_won: 0,
            raft_requests_sent: 0,
            raft_msgs_sent: 0,
            raft_msgs_received: 0,
            parts_sent: 0,
            snapshots_sent: 0,
            snapshots_installed: 0,
            snapshots_taken: 0,
            bad_requests: 0,
            duplicates: 0,
            redirects: 0,
            try_again: 0,
            reads_served: 0,
            dropped_msgs: 0,
            malformed_msgs: 0,
            appends_repaired: 0,
            session_resets: 0,
        }
    }
}

/// Whether an append's entries follow its index (`index + 1`, `index + 2`, ...): what raft-rs
/// assumes of every append it steps, and ends the process over when it does not hold (it
/// commits up to `index + entries` believing those entries are in its log). Other messages
/// pass.
pub fn append_is_consistent(m: &Message) -> bool {
    m.get_msg_type() != MessageType::MsgAppend
        || m.get_entries().iter().enumerate().all(|(k, e)| Some(e.index) == m.index.checked_add(1 + k as u64))
}

/// Whether to step a message from a peer, after clamping what is safe to clamp. raft-rs 0.7 ends
/// the process (`fatal!`) on messages that a correct peer does not send, as it takes the term of
/// any index beyond its log to be 0 and then commits past its last entry:
/// * an append whose entries do not follow its index ([`append_is_consistent`]);
/// * a term 0 where only index 0 has it: an append's `log_term` with an index, an entry's term,
///   a snapshot's; or an entry of a term after the message's;
/// * an append response (not a rejection) for an index beyond this replica's log (as a leader
///   it would then send appends that end its followers).
///
/// A heartbeat's commit index beyond this replica's log (a replica that lost its log, started
/// again without durability, hears the commit index it had) is clamped to its last index rather
/// than the heartbeat dropped: committing less is always safe, and the answer tells the leader
/// where it is.
pub fn admit(m: &mut Message, last_index: u64) -> bool {
    match m.get_msg_type() {
        MessageType::MsgAppend => {
            append_is_consistent(m)
                && (m.index == 0 || m.log_term != 0)
                && m.get_entries().iter().all(|e| e.term != 0 && e.term <= m.term)
        }
        MessageType::MsgSnapshot => {
            let md = m.get_snapshot().get_metadata();
            md.index == 0 || md.term != 0
        }
        MessageType::MsgAppendResponse => m.reject || m.index <= last_index,
        MessageType::MsgHeartbeat => {
            m.commit = m.commit.min(last_index);
            true
        }
        _ => true,
    }
}

/// Mends an append that raft-rs 0.7 built wrong, and says whether it did. With
/// `Config::batch_append` on, its `try_batching` adds new entries to an append already queued
/// for the same peer when that append has no entries, whatever its index: after a rejection
/// moves the follower's next index back, entries from there land in an empty append whose index
/// is the old one, and the follower, committing up to `index + entries`, panics (seen under load
/// as "to_commit N is out of range [last_index M]"). The mended message is the one raft-rs
/// would have sent for those entries alone: index the entry before the first, with its term
/// (`term_of`, from the leader's log; the message goes unchanged if that term is not known).
pub fn repair_batched_append(m: &mut Message, term_of: impl Fn(u64) -> Option<u64>) -> bool {
    if append_is_consistent(m) {
        return false;
    }
    let Some(first) = m.get_entries().first().map(|e| e.index) else { return false };
    let Some(prev) = first.checked_sub(1) else { return false };
    let Some(term) = term_of(prev) else { return false };
    m.index = prev;
    m.log_term = term;
    append_is_consistent(m)
}

/// Messages waiting in one outbox at most; beyond, the oldest are dropped (Raft resends).
const OUTBOX_MAX: usize = 4096;

#[derive(Default)]
struct Peer {
    addr: Option<EndpointAddr>,
    session: Option<SessionId>,
    connected: bool,
    retry_at_ns: u64,
    inflight: usize,
    /// Encoded messages waiting for a request (or a response) to this peer.
    outbox: VecDeque<Vec<u8>>,
    /// Parts of a large message still to send (payloads of `RAFT_PART` requests), and whether
    /// the message is a snapshot.
    parts: VecDeque<Vec<u8>>,
    parts_snapshot: bool,
}

struct PendingWrite {
    term: u64,
    handle: ReqHandle,
    t0: u64,
    tick: u64,
}

struct PendingRead {
    handle: ReqHandle,
    key: Vec<u8>,
    tick: u64,
}

struct ReadBatch {
    reads: Vec<PendingRead>,
    /// Raft's read index, once it has confirmed leadership.
    index: Option<u64>,
    issued_tick: u64,
}

struct Assembly {
    xfer: u64,
    buf: Vec<u8>,
    offsets: HashSet<u64>,
    got: usize,
}

/// A reply to a client decided inside the context, sent once the endpoint is free.
struct Reply {
    handle: ReqHandle,
    status: Status,
    value: Option<Vec<u8>>,
    leader: u64,
    t0: Option<u64>,
}

/// The context of a replica's endpoint.
pub struct Replica {
    pub cfg: ReplicaConfig,
    pub node: RawNode<KvStorage>,
    pub sm: KvState,
    /// What the log store recovered at start.
    pub recovered: Recovered,
    pub stats: ReplicaStats,
    peers: Vec<Peer>,
    writes: HashMap<u64, PendingWrite>,
    new_reads: Vec<PendingRead>,
    read_batches: HashMap<u64, ReadBatch>,
    next_read_ctx: u64,
    /// Raft requests (from, handle) to answer after this iteration's Ready.
    held: Vec<(u64, ReqHandle)>,
    replies: Vec<Reply>,
    assembly: HashMap<u64, Assembly>,
    next_xfer: u64,
    next_tick_ns: u64,
    ticks: u64,
    last_snapshot: u64,
    /// A storage failure: the replica stops (see [`poll`]).
    failed: Option<Error>,
    /// Iterations of [`poll`]: the clock is read every [`CLOCK_EVERY`].
    polls: u32,
}

/// [`poll`] reads the clock (for ticks and reconnections) every this many iterations: a clock
/// read costs as much as the rest of an idle iteration (a VM may trap the TSC), and ticks are
/// milliseconds.
const CLOCK_EVERY: u32 = 8;

/// A replica's endpoint.
pub type ReplicaRpc<T, C> = Rpc<'static, T, C, Replica>;

impl Replica {
    /// Builds the replica's state: opens (and, with `fsync`, recovers) the log, restores the
    /// state machine from the latest snapshot, and builds the Raft node. The endpoint is built by
    /// the caller ([`Rpc::new`] with this as its context), then [`Replica::register`].
    pub fn new(cfg: ReplicaConfig) -> Result<Replica, Error> {
        let n = cfg.peers.len() as u64;
        if n == 0 || cfg.id == 0 || cfg.id > n {
            return Err(Error::Config(format!("replica id {} is not in 1..={n} (one per --peers address)", cfg.id)));
        }
        if cfg.tick_ns == 0 || cfg.heartbeat_ticks == 0 || cfg.election_ticks <= cfg.heartbeat_ticks {
            return Err(Error::Config("the election timeout must be longer than the heartbeat interval".into()));
        }
        if cfg.part_size < 1024 || cfg.part_size > MAX_BATCH {
            return Err(Error::Config(format!("the part size must be 1024..={MAX_BATCH} bytes")));
        }
        let voters: Vec<u64> = (1..=n).collect();
        let (mut storage, recovered) = KvStorage::open(voters, &cfg.durability)?;
        storage.preallocate(prealloc_entries(&cfg));
        let snap = storage.latest_snapshot();
        let mut sm = if snap.get_metadata().index > 0 {
            KvState::decode(&snap.data).map_err(|e| Error::Corrupt(format!("the recovered snapshot: {e}")))?
        } else {
            KvState::default()
        };
        if cfg.record_applied {
            sm.record = Some(Vec::new());
        }
        let rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied: sm.applied,
            max_size_per_msg: cfg.max_append_bytes,
            max_inflight_msgs: cfg.max_inflight,
            check_quorum: cfg.read_mode == ReadMode::ReadIndex,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            skip_bcast_commit: cfg.skip_bcast_commit,
            batch_append: true,
            ..Default::default()
        };
        rc.validate().map_err(Error::raft)?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&rc, storage, &logger).map_err(Error::raft)?;
        let peers = cfg
            .peers
            .iter()
            .enumerate()
            .map(|(i, a)| Peer { addr: (i as u64 + 1 != cfg.id).then_some(*a), ..Default::default() })
            .collect();
        let last_snapshot = sm.applied;
        Ok(Replica {
            cfg,
            node,
            sm,
            recovered,
            stats: ReplicaStats::default(),
            peers,
            writes: HashMap::new(),
            new_reads: Vec::new(),
            read_batches: HashMap::new(),
            next_read_ctx: 1,
            held: Vec::new(),
            replies: Vec::new(),
            assembly: HashMap::new(),
            next_xfer: 1,
            next_tick_ns: 0,
            ticks: 0,
            last_snapshot,
            failed: None,
            polls: 0,
        })
    }

    /// Registers the replica's handlers on its endpoint. Call it before the endpoint's first
    /// event-loop iteration: an endpoint without request handlers refuses every session
    /// (`SmError::Refused`), so peers and clients that connect earlier are turned away.
    pub fn register<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>) {
        let fg = HandlerMode::Foreground;
        for (t, f) in [
            (proto::REQ_RAFT, on_raft::<T, C> as fn(&mut ReplicaRpc<T, C>, ReqHandle)),
            (proto::REQ_RAFT_PART, on_part::<T, C>),
            (proto::REQ_CLIENT, on_client::<T, C>),
            (proto::REQ_STATS, on_stats::<T, C>),
            (proto::REQ_ECHO, on_echo::<T, C>),
        ] {
            rpc.register_handler(t, f, fg).expect("foreground handlers need no workers");
        }
        rpc.set_session_handler(on_session::<T, C>);
        rpc.ctx_mut().next_tick_ns = rpc.clock().now_ns() + rpc.ctx().cfg.tick_ns;
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader this replica knows of (0: none).
    pub fn leader_id(&self) -> u64 {
        self.node.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// Why the replica stopped, if it did (a storage failure).
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Writes and reads waiting for an answer.
    pub fn pending(&self) -> usize {
        self.writes.len() + self.new_reads.len() + self.read_batches.values().map(|b| b.reads.len()).sum::<usize>()
    }

    fn peer_index(&self, raft_id: u64) -> Option<usize> {
        let i = raft_id.checked_sub(1)? as usize;
        self.peers.get(i).filter(|p| p.addr.is_some()).map(|_| i)
    }

    fn leader_addr(&self, id: u64) -> Option<EndpointAddr> {
        self.cfg.peers.get(id.checked_sub(1)? as usize).copied()
    }

    /// Queues outgoing messages in their peers' outboxes (a large one as parts).
    fn route(&mut self, msgs: Vec<Message>) {
        for mut m in msgs {
            let Some(i) = self.peer_index(m.to) else { continue };
            let log = &self.node.raft.raft_log;
            // Only indexes in the log (from the entry before its first, whose term is the
            // snapshot's): raft-rs answers 0 for any other.
            let in_log = |i: u64| (log.first_index() - 1..=log.last_index()).contains(&i);
            if repair_batched_append(&mut m, |i| if in_log(i) { log.term(i).ok() } else { None }) {
                self.stats.appends_repaired += 1;
            }
            let snap = m.get_msg_type() == MessageType::MsgSnapshot;
            let b = codec::encoded(&m);
            let p = &mut self.peers[i];
            if b.len() + 32 > self.cfg.part_size || snap && b.len() > 4096 {
                if !p.parts.is_empty() {
                    // A large message is already on its way: Raft will ask again if it needs to.
                    self.stats.dropped_msgs += 1;
                    if snap {
                        self.node.report_snapshot(m.to, SnapshotStatus::Failure);
                    }
                    continue;
                }
                let mut whole = Vec::with_capacity(b.len() + 16);
                codec::encode_batch(std::iter::once(&b[..]), &mut whole);
                let xfer = self.next_xfer;
                self.next_xfer += 1;
                let chunk = self.cfg.part_size - 32;
                for (k, c) in whole.chunks(chunk).enumerate() {
                    let h = PartHdr {
                        from: U64::new(self.cfg.id),
                        xfer: U64::new(xfer),
                        total: U64::new(whole.len() as u64),
                        offset: U64::new((k * chunk) as u64),
                    };
                    let mut part = Vec::with_capacity(32 + c.len());
                    part.extend_from_slice(h.as_bytes());
                    part.extend_from_slice(c);
                    p.parts.push_back(part);
                }
                p.parts_snapshot = snap;
                if snap {
                    self.stats.snapshots_sent += 1;
                }
                continue;
            }
            if p.outbox.len() >= OUTBOX_MAX {
                p.outbox.pop_front();
                self.stats.dropped_msgs += 1;
            }
            p.outbox.push_back(b);
        }
    }

    /// Steps a batch of messages from peer `from`; false if the batch is not acceptable.
    fn step_batch(&mut self, from: u64, msgs: Vec<Message>) -> bool {
        if self.peer_index(from).is_none() || msgs.iter().any(|m| m.from != from || m.to != self.cfg.id) {
            self.stats.bad_requests += 1;
            return false;
        }
        self.stats.raft_msgs_received += msgs.len() as u64;
        for mut m in msgs {
            // raft-rs ends the process on some messages a correct peer does not send (see
            // `admit`): those are dropped here, as a lost packet would be.
            if !admit(&mut m, self.node.raft.raft_log.last_index()) {
                self.stats.malformed_msgs += 1;
                continue;
            }
            // Errors are Raft refusing a message (a stale response, a peer it does not know): the
            // message is dropped, as a lost packet would be.
            let _ = self.node.step(m);
        }
        true
    }

    /// Answers every pending write and read: leadership was lost.
    fn fail_pending(&mut self) {
        let (leader, status) = match self.node.raft.leader_id {
            0 => (0, Status::TryAgain),
            l if l == self.cfg.id => (0, Status::TryAgain),
            l => (l, Status::Redirect),
        };
        let writes: Vec<_> = self.writes.drain().map(|(_, w)| w.handle).collect();
        let reads = self.new_reads.drain(..).chain(self.read_batches.drain().flat_map(|(_, b)| b.reads));
        let handles: Vec<_> = writes.into_iter().chain(reads.map(|r| r.handle)).collect();
        for handle in handles {
            self.replies.push(Reply { handle, status, value: None, leader, t0: None });
        }
    }

    fn apply_committed(&mut self, ents: Vec<raft::eraftpb::Entry>) {
        for e in ents {
            let applied = self.sm.apply(e.index, &e.data);
            if let Some(w) = self.writes.remove(&e.index) {
                let reply = match applied {
                    Some(a) if w.term == e.term => {
                        if a.duplicate {
                            self.stats.duplicates += 1;
                        }
                        Reply { handle: w.handle, status: a.status, value: None, leader: 0, t0: Some(w.t0) }
                    }
                    // Another leader's entry took our proposal's place: the client retries.
                    _ => Reply { handle: w.handle, status: Status::TryAgain, value: None, leader: 0, t0: None },
                };
                self.replies.push(reply);
            }
        }
    }

    /// Handles one Ready up to the log write; see the module docs. The messages it routes are
    /// those raft-rs lets leave before the log is durable (a leader's appends), so that the
    /// caller can send them before `finish_ready` syncs: the leader's write and its followers'
    /// overlap (Raft thesis §10.2.1).
    fn begin_ready(&mut self) -> Result<Ready, Error> {
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            if ss.raft_state == StateRole::Leader {
                self.stats.elections_won += 1;
            } else {
                self.fail_pending();
            }
        }
        self.route(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let sm =
                KvState::decode(&snap.data).map_err(|e| Error::Corrupt(format!("a snapshot from the leader: {e}")))?;
            self.node.mut_store().apply_snapshot(snap)?;
            let record = self.sm.record.take().map(|_| Vec::new());
            self.sm = KvState { record, ..sm };
            self.last_snapshot = self.sm.applied;
            self.stats.snapshots_installed += 1;
        }
        self.apply_committed(rd.take_committed_entries());
        Ok(rd)
    }

    /// Whether finishing `rd` syncs the log to disk (and so is worth sending its messages
    /// first).
    fn ready_syncs(&self, rd: &Ready) -> bool {
        rd.must_sync() && self.node.store().is_durable()
    }

    /// Makes the Ready's log entries and hard state durable, then routes what had to wait for
    /// that, and advances Raft.
    fn finish_ready(&mut self, mut rd: Ready) -> Result<(), Error> {
        self.node.mut_store().persist(rd.entries(), rd.hs(), rd.must_sync())?;
        self.route(rd.take_persisted_messages());
        for rs in rd.take_read_states() {
            if rs.request_ctx.len() == 8 {
                let ctx = u64::from_le_bytes(rs.request_ctx[..].try_into().expect("8"));
                if let Some(b) = self.read_batches.get_mut(&ctx) {
                    b.index = Some(rs.index);
                }
            }
        }
        let mut light = self.node.advance(rd);
        if let Some(c) = light.commit_index() {
            self.node.mut_store().set_commit(c);
        }
        self.route(light.take_messages());
        self.apply_committed(light.take_committed_entries());
        self.node.advance_apply();
        Ok(())
    }

    /// Reads whose index is applied are answered.
    fn serve_reads(&mut self) {
        let applied = self.sm.applied;
        let done: Vec<u64> =
            self.read_batches.iter().filter(|(_, b)| b.index.is_some_and(|i| i <= applied)).map(|(k, _)| *k).collect();
        for k in done {
            let b = self.read_batches.remove(&k).expect("listed");
            for r in b.reads {
                let (status, value) = match self.sm.map.get(&r.key) {
                    Some(v) => (Status::Ok, Some(v.clone())),
                    None => (Status::NotFound, None),
                };
                self.stats.reads_served += 1;
                self.replies.push(Reply { handle: r.handle, status, value, leader: 0, t0: None });
            }
        }
    }

    /// Time-driven work: read batches re-issued (raft-rs drops a read index request that reaches
    /// a leader before it has committed an entry of its term), old requests answered `TryAgain`.
    fn on_ticks(&mut self) {
        let (now, timeout) = (self.ticks, self.cfg.request_timeout_ticks);
        let reissue = (self.cfg.heartbeat_ticks as u64 * 2).max(2);
        let mut again = Vec::new();
        for (k, b) in self.read_batches.iter_mut() {
            if b.index.is_none() && now - b.issued_tick >= reissue {
                b.issued_tick = now;
                again.push(*k);
            }
        }
        for k in again {
            self.node.read_index(k.to_le_bytes().to_vec());
        }
        let old: Vec<u64> = self.writes.iter().filter(|(_, w)| now - w.tick >= timeout).map(|(k, _)| *k).collect();
        for k in old {
            let w = self.writes.remove(&k).expect("listed");
            self.replies.push(Reply { handle: w.handle, status: Status::TryAgain, value: None, leader: 0, t0: None });
        }
        let old: Vec<u64> = self
            .read_batches
            .iter()
            .filter(|(_, b)| b.reads.first().is_some_and(|r| now - r.tick >= timeout))
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            for r in self.read_batches.remove(&k).expect("listed").reads {
                self.replies.push(Reply {
                    handle: r.handle,
                    status: Status::TryAgain,
                    value: None,
                    leader: 0,
                    t0: None,
                });
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), Error> {
        let every = self.cfg.snapshot_every;
        if every == 0 || self.sm.applied < self.last_snapshot + every {
            return Ok(());
        }
        let applied = self.sm.applied;
        let data = self.sm.encode();
        let keep = applied.saturating_sub(self.cfg.log_keep);
        self.node.mut_store().snapshot_and_compact(applied, data, keep)?;
        self.last_snapshot = applied;
        self.stats.snapshots_taken += 1;
        Ok(())
    }

    /// Takes up to `cap` bytes of batch from peer `i`'s outbox.
    fn take_batch(&mut self, i: usize, cap: usize) -> Option<(Vec<u8>, usize)> {
        let p = &mut self.peers[i];
        if p.outbox.is_empty() {
            return None;
        }
        let mut n = 0;
        let mut size = 10;
        for m in &p.outbox {
            if n > 0 && size + m.len() + 10 > cap {
                break;
            }
            size += m.len() + 10;
            n += 1;
        }
        let mut out = Vec::with_capacity(size);
        let msgs: Vec<Vec<u8>> = p.outbox.drain(..n).collect();
        codec::encode_batch(msgs.iter().map(|m| &m[..]), &mut out);
        Some((out, n))
    }
}

/// Writes a client response into `out`; returns its length.
fn write_reply(out: &mut [u8], status: Status, value: &[u8], leader: u64, addr: Option<EndpointAddr>) -> usize {
    let a = addr.unwrap_or(EndpointAddr { mac: [0; 6], ipv4: [0; 4], udp_port: 0 });
    let h = ClientRespHdr {
        status: status as u8,
        _pad: [0; 3],
        val_len: U32::new(value.len() as u32),
        leader_id: U64::new(leader),
        leader_mac: a.mac,
        leader_port: U16::new(a.udp_port),
        leader_ipv4: a.ipv4,
        _pad2: [0; 4],
    };
    out[..32].copy_from_slice(h.as_bytes());
    out[32..32 + value.len()].copy_from_slice(value);
    32 + value.len()
}

/// Answers a request with `payload`, in the preallocated buffer if it fits.
fn respond_bytes<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, h: ReqHandle, payload: &[u8]) {
    if payload.len() <= rpc.max_data_per_pkt() {
        if let Some((_, out)) = rpc.request_and_prealloc_response(&h) {
            out[..payload.len()].copy_from_slice(payload);
            let _ = rpc.enqueue_response_prealloc(h, payload.len());
        }
        return;
    }
    match rpc.alloc_msg_buffer(payload.len()) {
        Ok(mut b) => {
            b.data_mut().copy_from_slice(payload);
            if let Err(e) = rpc.enqueue_response(h, b) {
                if let Some(b) = e.resp {
                    let _ = rpc.free_msg_buffer(b);
                }
            }
        }
        // Out of msgbuf memory: an empty response; the peer's Raft (or the client) retries.
        Err(_) => {
            let _ = rpc.request_and_prealloc_response(&h);
            let _ = rpc.enqueue_response_prealloc(h, 0);
        }
    }
}

fn send_replies<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>) {
    if rpc.ctx().replies.is_empty() {
        return;
    }
    let replies = std::mem::take(&mut rpc.ctx_mut().replies);
    let now = rpc.clock().now_ns();
    for r in replies {
        let addr = rpc.ctx().leader_addr(r.leader);
        let value = r.value.as_deref().unwrap_or(&[]);
        let mut buf = vec![0u8; 32 + value.len()];
        write_reply(&mut buf, r.status, value, r.leader, addr);
        let ctx = rpc.ctx_mut();
        match r.status {
            Status::Redirect => ctx.stats.redirects += 1,
            Status::TryAgain => ctx.stats.try_again += 1,
            _ => {}
        }
        respond_bytes(rpc, r.handle, &buf);
        if let Some(t0) = r.t0 {
            let _ = rpc.ctx_mut().stats.commit_ns.record(now.saturating_sub(t0).max(1));
        }
    }
}

/// Whether request `h` comes from the endpoint of replica `from` (its session's peer address).
fn from_peer<T: Transport, C: Clock>(rpc: &ReplicaRpc<T, C>, h: &ReqHandle, from: u64) -> bool {
    let Some(want) = rpc.ctx().cfg.peers.get((from as usize).wrapping_sub(1)) else { return false };
    rpc.session(h.session()).map(|s| s.peer()).is_some_and(|p| p.ipv4 == want.ipv4 && p.udp_port == want.udp_port)
}

fn on_raft<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, h: ReqHandle) {
    let msgs = rpc.request(&h).map(codec::decode_batch);
    let ok = match msgs {
        Some(Ok(msgs)) if !msgs.is_empty() && from_peer(rpc, &h, msgs[0].from) => {
            let from = msgs[0].from;
            let r = rpc.ctx_mut();
            if r.step_batch(from, msgs) {
                r.held.push((from, h));
                return;
            }
            false
        }
        _ => false,
    };
    if !ok {
        rpc.ctx_mut().stats.bad_requests += 1;
    }
    respond_bytes(rpc, h, &[]);
}

fn on_part<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, h: ReqHandle) {
    let Some(req) = rpc.request(&h) else { return };
    let req = req.to_vec();
    let Ok((ph, body)) = PartHdr::read_from_prefix(&req) else {
        rpc.ctx_mut().stats.bad_requests += 1;
        return respond_bytes(rpc, h, &[]);
    };
    let (from, xfer, total, off) = (ph.from.get(), ph.xfer.get(), ph.total.get(), ph.offset.get());
    let known = from_peer(rpc, &h, from);
    let r = rpc.ctx_mut();
    let sane = r.peer_index(from).is_some()
        && known
        && total <= r.cfg.max_assembly as u64
        && off.checked_add(body.len() as u64).is_some_and(|e| e <= total)
        && !body.is_empty();
    if !sane {
        r.stats.bad_requests += 1;
        return respond_bytes(rpc, h, &[]);
    }
    let a = r.assembly.entry(from).or_insert_with(|| Assembly {
        xfer: 0,
        buf: Vec::new(),
        offsets: HashSet::new(),
        got: 0,
    });
    if a.xfer != xfer || a.buf.len() != total as usize {
        *a = Assembly { xfer, buf: vec![0; total as usize], offsets: HashSet::new(), got: 0 };
    }
    if a.offsets.insert(off) {
        a.buf[off as usize..off as usize + body.len()].copy_from_slice(body);
        a.got += body.len();
    }
    if a.got < a.buf.len() {
        return respond_bytes(rpc, h, &[]);
    }
    let a = r.assembly.remove(&from).expect("present");
    let stepped = match codec::decode_batch(&a.buf) {
        Ok(msgs) => r.step_batch(from, msgs),
        Err(_) => {
            r.stats.bad_requests += 1;
            false
        }
    };
    if stepped {
        r.held.push((from, h));
    } else {
        respond_bytes(rpc, h, &[]);
    }
}

fn on_client<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, h: ReqHandle) {
    let Some(req) = rpc.request(&h) else { return };
    let req = req.to_vec();
    let now = rpc.clock().now_ns();
    let r = rpc.ctx_mut();
    let reply = |status, value: Option<Vec<u8>>, leader| Reply { handle: h, status, value, leader, t0: None };
    let Ok(cr) = ClientRequest::parse(&req) else {
        r.replies.push(reply(Status::BadRequest, None, 0));
        return send_replies(rpc);
    };
    if !r.is_leader() {
        let l = r.node.raft.leader_id;
        let st = if l != 0 && l != r.cfg.id { Status::Redirect } else { Status::TryAgain };
        r.replies.push(reply(st, None, l));
        return send_replies(rpc);
    }
    match cr.op {
        OpCode::Get if r.cfg.read_mode == ReadMode::UnsafeLocal => {
            let v = r.sm.map.get(cr.key).cloned();
            let st = if v.is_some() { Status::Ok } else { Status::NotFound };
            r.stats.reads_served += 1;
            r.replies.push(reply(st, v, 0));
            send_replies(rpc)
        }
        OpCode::Get => r.new_reads.push(PendingRead { handle: h, key: cr.key.to_vec(), tick: r.ticks }),
        OpCode::Put | OpCode::Del => {
            if let Some(st) = r.sm.known(cr.client_id, cr.seq) {
                r.stats.duplicates += 1;
                r.replies.push(reply(st, None, 0));
                return send_replies(rpc);
            }
            match r.node.propose(vec![], req) {
                Ok(()) => {
                    let index = r.node.raft.raft_log.last_index();
                    let w = PendingWrite { term: r.node.raft.term, handle: h, t0: now, tick: r.ticks };
                    if let Some(old) = r.writes.insert(index, w) {
                        // Cannot happen (indexes only grow while leading); answer rather than leak.
                        r.replies.push(Reply {
                            handle: old.handle,
                            status: Status::TryAgain,
                            value: None,
                            leader: 0,
                            t0: None,
                        });
                    }
                }
                Err(_) => {
                    r.replies.push(reply(Status::TryAgain, None, 0));
                    send_replies(rpc)
                }
            }
        }
    }
}

fn on_stats<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, h: ReqHandle) {
    let reset = rpc.request(&h).is_some_and(|b| b.first() == Some(&1));
    let r = rpc.ctx_mut();
    let hist = &r.stats.commit_ns;
    let s = StatsResp {
        id: U64::new(r.cfg.id),
        leader_id: U64::new(r.node.raft.leader_id),
        term: U64::new(r.node.raft.term),
        applied: U64::new(r.sm.applied),
        commits: U64::new(hist.len()),
        commit_p50_ns: U64::new(if hist.is_empty() { 0 } else { hist.value_at_quantile(0.5) }),
        commit_p99_ns: U64::new(if hist.is_empty() { 0 } else { hist.value_at_quantile(0.99) }),
        elections_won: U64::new(r.stats.elections_won),
        flags: U64::new(r.node.store().is_durable() as u64),
    };
    if reset {
        r.stats.commit_ns.reset();
    }
    respond_bytes(rpc, h, s.as_bytes());
}

fn on_echo<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, h: ReqHandle) {
    let n = rpc.request(&h).and_then(|b| b.get(..4)).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")));
    let n = (n as usize).min(rpc.max_msg_size()).min(1 << 20);
    respond_bytes(rpc, h, &vec![0x5A; n]);
}

fn on_session<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, ev: SessionEvent) {
    let now = rpc.clock().now_ns();
    let r = rpc.ctx_mut();
    let (s, up) = match ev {
        SessionEvent::Connected(s) => (s, true),
        SessionEvent::ConnectFailed(s, _) => (s, false),
        SessionEvent::Disconnected { session, .. } => (session, false),
        SessionEvent::Reset(s, _) => {
            r.stats.session_resets += 1;
            (s, false)
        }
    };
    let retry = r.cfg.tick_ns * r.cfg.heartbeat_ticks as u64;
    let Some(i) = r.peers.iter().position(|p| p.session == Some(s)) else { return };
    let p = &mut r.peers[i];
    p.connected = up;
    if !up {
        p.session = None;
        p.retry_at_ns = now + retry;
        p.inflight = 0;
        r.node.report_unreachable(i as u64 + 1);
    }
}

/// Tag of a Raft request: the peer's index, and whether it is the last part of a snapshot.
fn tag(i: usize, last_snapshot_part: bool) -> u64 {
    i as u64 | (last_snapshot_part as u64) << 32
}

fn on_raft_resp<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, c: Completion) {
    let i = (c.tag & 0xFFFF_FFFF) as usize;
    let last_part = c.tag >> 32 == 1;
    let r = rpc.ctx_mut();
    if let Some(p) = r.peers.get_mut(i) {
        p.inflight = p.inflight.saturating_sub(1);
    }
    let id = i as u64 + 1;
    match c.result {
        Ok(n) if n > 0 => {
            if let Ok(msgs) = codec::decode_batch(&c.resp.data()[..n]) {
                r.step_batch(id, msgs);
            } else {
                r.stats.bad_requests += 1;
            }
        }
        Ok(_) => {}
        // A peer that refuses Raft requests is not a replica of this store (a wrong --peers
        // address): for Raft, it is unreachable.
        Err(
            RpcError::SessionReset
            | RpcError::TimedOut
            | RpcError::ResponseTooLarge { .. }
            | RpcError::NoHandler { .. },
        ) => {
            r.node.report_unreachable(id);
            if last_part {
                r.node.report_snapshot(id, SnapshotStatus::Failure);
            }
        }
    }
    if last_part && c.result.is_ok() {
        r.node.report_snapshot(id, SnapshotStatus::Finish);
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// Sends `payload` as a request of `req_type` to peer `i`; false if it could not be queued.
fn send<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>, i: usize, req_type: u8, payload: &[u8], tag: u64) -> bool {
    let Some(s) = rpc.ctx().peers[i].session else { return false };
    let Ok(mut req) = rpc.alloc_msg_buffer(payload.len()) else { return false };
    req.data_mut().copy_from_slice(payload);
    let Ok(resp) = rpc.alloc_msg_buffer(RAFT_RESP_CAP) else {
        let _ = rpc.free_msg_buffer(req);
        return false;
    };
    match rpc.enqueue_request(s, req_type, req, resp, on_raft_resp::<T, C>, tag) {
        Ok(()) => {
            rpc.ctx_mut().peers[i].inflight += 1;
            true
        }
        Err(e) => {
            let _ = rpc.free_msg_buffer(e.req);
            let _ = rpc.free_msg_buffer(e.resp);
            false
        }
    }
}

/// Answers held Raft requests and sends what is left in the outboxes.
fn flush<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>) {
    let held = std::mem::take(&mut rpc.ctx_mut().held);
    for (from, h) in held {
        let r = rpc.ctx_mut();
        let Some(i) = r.peer_index(from) else { continue };
        let batch = r.take_batch(i, RAFT_RESP_CAP);
        let n = batch.as_ref().map_or(0, |b| b.1);
        r.stats.raft_msgs_sent += n as u64;
        respond_bytes(rpc, h, batch.as_ref().map_or(&[][..], |b| &b.0[..]));
    }
    send_outboxes(rpc);
}

/// Sends what waits in the peers' outboxes as `RAFT` (and `RAFT_PART`) requests. Held requests
/// are not answered here, so that what a later step routes can still ride in their responses.
fn send_outboxes<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>) {
    for i in 0..rpc.ctx().peers.len() {
        loop {
            let r = rpc.ctx_mut();
            let p = &r.peers[i];
            if !p.connected || p.inflight >= WINDOW {
                break;
            }
            if let Some(part) = r.peers[i].parts.pop_front() {
                let last = r.peers[i].parts.is_empty() && r.peers[i].parts_snapshot;
                if !send(rpc, i, proto::REQ_RAFT_PART, &part, tag(i, last)) {
                    rpc.ctx_mut().peers[i].parts.push_front(part);
                    break;
                }
                rpc.ctx_mut().stats.parts_sent += 1;
                continue;
            }
            let Some((batch, n)) = r.take_batch(i, MAX_BATCH) else { break };
            if send(rpc, i, proto::REQ_RAFT, &batch, tag(i, false)) {
                let st = &mut rpc.ctx_mut().stats;
                st.raft_requests_sent += 1;
                st.raft_msgs_sent += n as u64;
            } else {
                rpc.ctx_mut().stats.dropped_msgs += n as u64;
                break;
            }
        }
        // Messages for a peer that is down are dropped: Raft resends what matters.
        let r = rpc.ctx_mut();
        if !r.peers[i].connected && !r.peers[i].outbox.is_empty() {
            r.stats.dropped_msgs += r.peers[i].outbox.len() as u64;
            r.peers[i].outbox.clear();
        }
    }
}

/// One iteration of a replica: the endpoint's event loop, then the replica's work (see the
/// module docs). An error is a storage failure (or a snapshot that does not decode): the
/// replica must stop, and every later call returns the same error.
pub fn poll<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>) -> Result<(), Error> {
    rpc.run_event_loop_once();
    if let Some(e) = rpc.ctx().failed.clone() {
        return Err(e);
    }
    let r = rpc.ctx_mut();
    r.polls = r.polls.wrapping_add(1);
    if r.polls % CLOCK_EVERY == 0 {
        timed_work(rpc);
    }
    let r = rpc.ctx_mut();
    if !r.new_reads.is_empty() {
        if r.is_leader() {
            let ctx = r.next_read_ctx;
            r.next_read_ctx += 1;
            let reads = std::mem::take(&mut r.new_reads);
            r.read_batches.insert(ctx, ReadBatch { reads, index: None, issued_tick: r.ticks });
            r.node.read_index(ctx.to_le_bytes().to_vec());
        } else {
            r.fail_pending();
        }
    }
    if r.node.has_ready() {
        let rd = match r.begin_ready() {
            Ok(rd) => rd,
            Err(e) => {
                r.failed = Some(e.clone());
                return Err(e);
            }
        };
        if r.ready_syncs(&rd) {
            // On the wire before the sync, not after it. Held requests are answered after it,
            // carrying this Ready's acknowledgements.
            send_outboxes(rpc);
            rpc.transmit();
        }
        let r = rpc.ctx_mut();
        if let Err(e) = r.finish_ready(rd) {
            r.failed = Some(e.clone());
            return Err(e);
        }
    }
    let r = rpc.ctx_mut();
    r.serve_reads();
    if let Err(e) = r.maybe_snapshot() {
        r.failed = Some(e.clone());
        return Err(e);
    }
    send_replies(rpc);
    flush(rpc);
    // What was queued outside the event loop (answers, Raft requests) goes to the transport
    // now rather than at the end of the next poll's event-loop iteration.
    rpc.transmit();
    Ok(())
}

/// Reconnections and Raft ticks, by the clock.
fn timed_work<T: Transport, C: Clock>(rpc: &mut ReplicaRpc<T, C>) {
    let now = rpc.clock().now_ns();
    // Sessions to peers: (re)connect those without one.
    for i in 0..rpc.ctx().peers.len() {
        let p = &rpc.ctx().peers[i];
        if let (Some(addr), None) = (p.addr, p.session) {
            if now >= p.retry_at_ns {
                let retry = rpc.ctx().cfg.tick_ns * rpc.ctx().cfg.heartbeat_ticks as u64;
                match rpc.create_session(addr) {
                    Ok(s) => rpc.ctx_mut().peers[i].session = Some(s),
                    Err(_) => rpc.ctx_mut().peers[i].retry_at_ns = now + retry,
                }
            }
        }
    }
    let r = rpc.ctx_mut();
    let mut ticked = false;
    if now >= r.next_tick_ns {
        // Catch up at most a few ticks at once (a descheduled process does not fire a burst).
        let mut n = 0;
        while now >= r.next_tick_ns && n < 4 {
            r.node.tick();
            r.ticks += 1;
            r.next_tick_ns += r.cfg.tick_ns;
            n += 1;
        }
        if now >= r.next_tick_ns {
            r.next_tick_ns = now + r.cfg.tick_ns;
        }
        ticked = true;
    }
    if ticked {
        r.on_ticks();
    }
}
