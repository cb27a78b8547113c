//! Helpers of the store's tests: clusters on the simulated fabric, driven in simulated time.

#![allow(dead_code)]

use erpc_kv::client::{self, Done, Op, Outcome};
use erpc_kv::cluster::{Cluster, FabricNic, SimOptions};
use erpc_kv::{ClientConfig, ReplicaConfig};

pub type Sim = Cluster<FabricNic>;

pub const MS: u64 = 1_000_000;
pub const S: u64 = 1_000_000_000;

/// Replica settings for simulated clusters: 1 ms ticks, 20 ms elections, 2 ms heartbeats.
pub fn fast(mut c: ReplicaConfig) -> ReplicaConfig {
    c.election_ticks = 20;
    c.heartbeat_ticks = 2;
    c.request_timeout_ticks = 200;
    c.record_applied = true;
    c
}

pub fn sim(o: SimOptions) -> Sim {
    sim_with(o, fast)
}

pub fn sim_with(o: SimOptions, cfg: impl FnMut(ReplicaConfig) -> ReplicaConfig) -> Sim {
    Cluster::simulated(&o, cfg, |c: ClientConfig| c).expect("cluster")
}

/// Runs until a leader is elected (at most 2 s of simulated time); returns it.
pub fn elect(c: &mut Sim) -> usize {
    assert!(c.run_until(2 * S, |c| c.leader().is_some()), "no leader elected");
    c.leader().unwrap()
}

pub fn put(k: &[u8], v: &[u8]) -> Op {
    Op::Put { key: k.to_vec(), value: v.to_vec() }
}

pub fn get(k: &[u8]) -> Op {
    Op::Get { key: k.to_vec() }
}

/// Runs `op` on logical client `lc` of client endpoint `e` to completion (at most `max_ns`).
pub fn run_op(c: &mut Sim, e: usize, lc: usize, op: Op, max_ns: u64) -> Done {
    client::submit(&mut c.clients[e], lc, op);
    assert!(c.run_until(max_ns, |c| !c.clients[e].ctx().busy(lc)), "operation did not finish");
    let k = c.clients[e].ctx_mut();
    let i = k.done.iter().rposition(|d| d.client == lc).expect("done");
    k.done.remove(i).unwrap()
}

pub fn ok(d: &Done) -> bool {
    matches!(d.outcome, Outcome::Ok | Outcome::Value(_) | Outcome::NotFound)
}

/// The value of 16 bytes for key number `k`, and a 64-byte value for (client, seq).
pub fn key(k: u64) -> Vec<u8> {
    let mut v = vec![b'k'; 16];
    v[8..].copy_from_slice(&k.to_le_bytes());
    v
}

pub fn value(c: u64, s: u64) -> Vec<u8> {
    let mut v = vec![b'v'; 64];
    v[..8].copy_from_slice(&c.to_le_bytes());
    v[8..16].copy_from_slice(&s.to_le_bytes());
    v
}

/// Runs until every live replica has applied as far as the furthest one and nothing more is
/// pending; then their state machines must agree.
pub fn quiesce(c: &mut Sim) {
    let ok = c.run_until(5 * S, |c| {
        let live: Vec<_> = c.replicas.iter().flatten().map(|r| r.ctx()).collect();
        let max = live.iter().map(|r| r.node.raft.raft_log.last_index()).max().unwrap_or(0);
        live.iter().all(|r| r.sm.applied == max && r.node.raft.raft_log.committed == max)
    });
    assert!(ok, "replicas did not converge: {:?}", applied(c));
    let live: Vec<_> = c.replicas.iter().flatten().map(|r| r.ctx()).collect();
    for r in &live[1..] {
        assert_eq!(r.sm.digest, live[0].sm.digest, "replicas applied different writes");
        assert_eq!(r.sm.map, live[0].sm.map);
    }
}

pub fn applied(c: &Sim) -> Vec<Option<u64>> {
    c.replicas.iter().map(|r| r.as_ref().map(|r| r.ctx().sm.applied)).collect()
}
