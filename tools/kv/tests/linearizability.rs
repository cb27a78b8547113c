//! Linearizability: histories of concurrent clients doing GETs and PUTs on a few keys, recorded
//! in simulated time under leader failures, partitions, loss, duplication and reordering, and
//! checked key by key (linearizability is compositional) with the Wing-Gong checker with Lowe's
//! memoization of `todc-utils`. A store that serves GETs from the leader's map without
//! confirming leadership is caught; the real one passes, over random fault schedules too.

mod common;

use common::*;
use erpc_dataplane::fabric::LinkParams;
use erpc_kv::client::{self, Done, Op, Outcome};
use erpc_kv::{Durability, ReadMode, ReplicaConfig, SimOptions};
use proptest::prelude::*;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::BTreeMap;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

/// A register per key; values are unique numbers, 0 is "no value".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegOp {
    Read(u64),
    Write(u64),
}

struct Register;

impl Specification for Register {
    type State = u64;
    type Operation = RegOp;
    fn init() -> u64 {
        0
    }
    fn apply(op: &RegOp, s: &u64) -> (bool, u64) {
        match op {
            RegOp::Read(v) => (v == s, *s),
            RegOp::Write(v) => (true, *v),
        }
    }
}

/// One operation of a history: its client, times, and what it did (`None`: it never returned,
/// or gave up: it may have taken effect at any time after its invocation).
#[derive(Clone, Debug)]
struct Rec {
    key: Vec<u8>,
    invoke: u64,
    ret: Option<u64>,
    op: RegOp,
}

fn num(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

fn rec(d: &Done) -> Option<Rec> {
    let (op, ret) = match (&d.op, &d.outcome) {
        (Op::Put { value, .. }, Outcome::Ok) => (RegOp::Write(num(value)), Some(d.return_ns)),
        (Op::Put { value, .. }, Outcome::Failed(_)) => (RegOp::Write(num(value)), None),
        (Op::Get { .. }, Outcome::Value(v)) => (RegOp::Read(num(v)), Some(d.return_ns)),
        (Op::Get { .. }, Outcome::NotFound) => (RegOp::Read(0), Some(d.return_ns)),
        // A read that gave up says nothing.
        (Op::Get { .. }, _) => return None,
        (op, o) => panic!("unexpected {op:?} -> {o:?}"),
    };
    Some(Rec { key: d.op.key().to_vec(), invoke: d.invoke_ns, ret, op })
}

/// Whether the operations on one key are linearizable. Operations that never returned respond
/// after everything else (porcupine's treatment): a write may then take effect at any point
/// after its invocation, or never be seen.
fn linearizable(ops: &[Rec]) -> bool {
    if ops.is_empty() {
        return true;
    }
    let end = u64::MAX;
    // Each operation is its own process: a client whose write gave up goes on with the next
    // operation while the first may still take effect.
    let mut ev: Vec<(u64, u8, usize, Action<RegOp>)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        ev.push((o.invoke, 0, i, Action::Call(o.op)));
        ev.push((o.ret.unwrap_or(end), 1, i, Action::Response(o.op)));
    }
    // Calls before responses at equal times: concurrent, the lenient reading.
    ev.sort_by_key(|e| (e.0, e.1, e.2));
    WGLChecker::<Register>::is_linearizable(History::from_actions(ev.into_iter().map(|e| (e.2, e.3)).collect()))
}

/// Checks every key; the first key that fails.
fn check(ops: &[Rec]) -> Result<usize, Vec<u8>> {
    let mut by_key: BTreeMap<Vec<u8>, Vec<Rec>> = BTreeMap::new();
    for o in ops {
        by_key.entry(o.key.clone()).or_default().push(o.clone());
    }
    for (k, v) in &by_key {
        if !linearizable(v) {
            return Err(k.clone());
        }
    }
    Ok(by_key.len())
}

// ----- the checker and the adapter, on hand-made histories -----

fn r(_process: usize, invoke: u64, ret: Option<u64>, op: RegOp) -> Rec {
    Rec { key: b"k".to_vec(), invoke, ret, op }
}

#[test]
fn the_checker_accepts_linearizable_and_rejects_stale_histories() {
    use RegOp::*;
    // Sequential: write 1, read 1.
    assert!(linearizable(&[r(0, 0, Some(1), Write(1)), r(1, 2, Some(3), Read(1))]));
    // A read after a write returned must see it: stale read rejected.
    assert!(!linearizable(&[r(0, 0, Some(1), Write(1)), r(1, 2, Some(3), Read(0))]));
    // Concurrent with the write: either value is fine.
    assert!(linearizable(&[r(0, 0, Some(10), Write(1)), r(1, 2, Some(3), Read(0)), r(2, 4, Some(5), Read(1))]));
    // But not going back: 1 then 0 while the write is still in progress.
    assert!(!linearizable(&[r(0, 0, Some(10), Write(1)), r(1, 2, Some(3), Read(1)), r(2, 4, Some(5), Read(0))]));
    // A value nobody wrote.
    assert!(!linearizable(&[r(0, 0, Some(1), Read(7))]));
    // Two writes then reads in an order no single order of the writes explains.
    assert!(!linearizable(&[
        r(0, 0, Some(5), Write(1)),
        r(1, 0, Some(5), Write(2)),
        r(2, 6, Some(7), Read(1)),
        r(2, 8, Some(9), Read(2)),
        r(3, 10, Some(11), Read(1)),
    ]));
}

#[test]
fn a_write_that_never_returned_may_take_effect_late_or_never() {
    use RegOp::*;
    // Seen long after it gave up: fine (it was still in flight).
    assert!(linearizable(&[r(0, 0, None, Write(1)), r(1, 100, Some(101), Read(0)), r(1, 200, Some(201), Read(1))]));
    // Never seen: fine.
    assert!(linearizable(&[r(0, 0, None, Write(1)), r(1, 100, Some(101), Read(0))]));
    // But not before it was invoked.
    assert!(!linearizable(&[r(1, 0, Some(1), Read(1)), r(0, 5, None, Write(1))]));
}

// ----- histories of the store -----

const KEYS: u64 = 3;

/// A random GET/PUT workload: every logical client of every endpoint, one operation at a time,
/// with a random pause (up to 2 ms) between them so histories stay a few hundred operations per
/// key.
struct Workload {
    rng: Xoshiro256PlusPlus,
    next_value: u64,
    ops: Vec<Rec>,
    /// Process number of each endpoint's first logical client.
    base: Vec<usize>,
    /// Percentage of GETs, per endpoint.
    reads_pct: Vec<u64>,
    /// When each process may issue its next operation.
    next_at: Vec<u64>,
    on: bool,
}

impl Workload {
    fn new(c: &Sim, seed: u64) -> Workload {
        let mut base = Vec::new();
        let mut n = 0;
        for k in &c.clients {
            base.push(n);
            n += k.ctx().cfg.clients;
        }
        Workload {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            next_value: 1,
            ops: Vec::new(),
            reads_pct: vec![50; base.len()],
            base,
            next_at: vec![0; n],
            on: true,
        }
    }

    fn pump(&mut self, c: &mut Sim) {
        let now = c.now();
        for e in 0..c.clients.len() {
            while let Some(mut d) = c.clients[e].ctx_mut().done.pop_front() {
                d.client += self.base[e];
                self.next_at[d.client] = now + self.rng.next_u64() % (2 * MS);
                self.ops.extend(rec(&d));
            }
            for lc in 0..c.clients[e].ctx().cfg.clients {
                if !self.on || c.clients[e].ctx().busy(lc) || now < self.next_at[self.base[e] + lc] {
                    continue;
                }
                let k = key(self.rng.next_u64() % KEYS);
                let op = if self.rng.next_u64() % 100 < self.reads_pct[e] {
                    get(&k)
                } else {
                    self.next_value += 1;
                    put(&k, &value(self.next_value, 0))
                };
                client::submit(&mut c.clients[e], lc, op);
            }
        }
    }

    fn run(&mut self, c: &mut Sim, ns: u64) {
        c.run_until(ns, |c| {
            self.pump(c);
            false
        });
    }

    fn finish(&mut self, c: &mut Sim) {
        self.on = false;
        let ok = c.run_until(30 * S, |c| {
            self.pump(c);
            c.clients.iter().all(|k| (0..k.ctx().cfg.clients).all(|lc| !k.ctx().busy(lc)))
        });
        assert!(ok, "operations never finished");
    }

    fn returned(&self) -> usize {
        self.ops.iter().filter(|o| o.ret.is_some()).count()
    }
}

fn cluster(seed: u64, mode: ReadMode, durable: Option<&tempfile::TempDir>) -> Sim {
    let o = SimOptions { client_endpoints: vec![3, 2], seed, ..Default::default() };
    sim_with(o, |c: ReplicaConfig| {
        let id = c.id;
        let mut c = fast(c);
        c.read_mode = mode;
        c.snapshot_every = 300;
        c.log_keep = 50;
        c.part_size = 4096;
        if let Some(d) = durable {
            c.durability = Durability::Fsync { dir: d.path().join(format!("r{id}")) };
        }
        c
    })
}

/// Isolates the leader from the other replicas (clients still reach it) for `ns`, then heals.
fn isolate_leader(c: &mut Sim, w: &mut Workload, ns: u64) {
    let Some(l) = c.leader() else { return w.run(c, ns) };
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    c.cut(l, &others, true);
    w.run(c, ns);
    c.cut(l, &others, false);
}

/// Split brain: the leader and the clients of endpoint 0 (readers) on one side, the other two
/// replicas and endpoint 1 (writers) on the other, for 300 ms.
fn split_brain(mode: ReadMode, seed: u64) -> Workload {
    let mut c = cluster(seed, mode, None);
    let l = elect(&mut c);
    let mut w = Workload::new(&c, seed);
    w.reads_pct = vec![100, 0];
    w.run(&mut c, 100 * MS);
    assert_eq!(c.leader(), Some(l));
    let (others, readers, writers) = ((0..3).filter(|&i| i != l).collect::<Vec<_>>(), 3, 4);
    c.cut(l, &others, true);
    c.cut(readers, &others, true);
    c.cut(writers, &[l], true);
    w.run(&mut c, 300 * MS);
    c.set_links(LinkParams { delay_ns: 2_000, ..Default::default() });
    w.run(&mut c, 100 * MS);
    w.finish(&mut c);
    assert!(w.returned() > 300, "{} operations", w.returned());
    quiesce(&mut c);
    w
}

#[test]
fn leader_local_reads_without_a_lease_are_caught_by_the_checker() {
    let w = split_brain(ReadMode::UnsafeLocal, 11);
    assert!(check(&w.ops).is_err(), "stale reads from the deposed leader went unnoticed");
}

#[test]
fn read_index_reads_stay_linearizable_in_the_same_split_brain() {
    let w = split_brain(ReadMode::ReadIndex, 11);
    assert_eq!(check(&w.ops), Ok(KEYS as usize));
}

#[test]
fn the_store_is_linearizable_under_partitions_failures_and_loss() {
    let dirs = tempfile::tempdir().unwrap();
    let mut c = cluster(12, ReadMode::ReadIndex, Some(&dirs));
    elect(&mut c);
    let mut w = Workload::new(&c, 12);
    w.run(&mut c, 100 * MS);
    // The same partition that catches leader-local reads.
    isolate_leader(&mut c, &mut w, 300 * MS);
    w.run(&mut c, 100 * MS);
    // Loss, duplication and reordering, a leader crash and its restart from its log.
    c.set_links(LinkParams { delay_ns: 2_000, loss: 0.01, dup: 0.01, reorder: 0.01 });
    w.run(&mut c, 200 * MS);
    let l = c.leader().unwrap();
    c.kill(l);
    w.run(&mut c, 200 * MS);
    c.restart(l).unwrap();
    w.run(&mut c, 200 * MS);
    // A follower cut off, then back.
    let f = (c.leader().unwrap() + 1) % 3;
    c.cut(f, &[(f + 1) % 3, (f + 2) % 3], true);
    w.run(&mut c, 200 * MS);
    c.cut(f, &[(f + 1) % 3, (f + 2) % 3], false);
    w.run(&mut c, 200 * MS);
    w.finish(&mut c);
    assert!(w.returned() > 500, "{} operations", w.returned());
    assert_eq!(check(&w.ops), Ok(KEYS as usize));
    quiesce(&mut c);
}

/// A fault schedule: (action, milliseconds to run after it).
#[derive(Clone, Copy, Debug)]
enum Fault {
    IsolateLeader,
    IsolateFollower,
    Heal,
    Lossy,
    Clean,
    KillLeader,
}

fn fault() -> impl Strategy<Value = (Fault, u64)> {
    (
        prop_oneof![
            Just(Fault::IsolateLeader),
            Just(Fault::IsolateFollower),
            Just(Fault::Heal),
            Just(Fault::Lossy),
            Just(Fault::Clean),
            Just(Fault::KillLeader),
        ],
        20u64..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn random_fault_schedules_keep_the_store_linearizable(seed in 1u64..1000, faults in proptest::collection::vec(fault(), 3..8)) {
        let mut c = cluster(seed, ReadMode::ReadIndex, None);
        elect(&mut c);
        let mut w = Workload::new(&c, seed);
        let mut killed = false;
        w.run(&mut c, 50 * MS);
        for (f, ms) in faults {
            match f {
                Fault::IsolateLeader => if let Some(l) = c.leader() {
                    c.cut(l, &(0..3).filter(|&i| i != l).collect::<Vec<_>>(), true);
                },
                Fault::IsolateFollower => if let Some(l) = c.leader() {
                    let f = (l + 1) % 3;
                    c.cut(f, &[(f + 1) % 3, (f + 2) % 3], true);
                },
                Fault::Heal | Fault::Clean => c.set_links(LinkParams { delay_ns: 2_000, ..Default::default() }),
                Fault::Lossy => c.set_links(LinkParams { delay_ns: 2_000, loss: 0.01, dup: 0.01, reorder: 0.01 }),
                // In memory, a replica that crashed stays down: one at most.
                Fault::KillLeader => if !killed {
                    if let Some(l) = c.leader() { c.kill(l); killed = true; }
                },
            }
            w.run(&mut c, ms * MS);
        }
        // Once a majority can talk again, the cluster serves within a bounded time.
        c.set_links(LinkParams { delay_ns: 2_000, ..Default::default() });
        let before = w.returned();
        let ok = c.run_until(2 * S, |c| { w.pump(c); w.returned() > before + 50 });
        prop_assert!(ok, "no progress within 2 s after healing");
        w.finish(&mut c);
        // A last read of every key, after everything: an acknowledged write that was lost shows.
        for k in 0..KEYS {
            let d = run_op(&mut c, 0, 0, get(&key(k)), 10 * S);
            w.ops.extend(rec(&d));
        }
        prop_assert_eq!(check(&w.ops), Ok(KEYS as usize));
        quiesce(&mut c);
        applied_once(&c);
    }
}
