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

/// A write load: every logical client of every client endpoint writes its own key, one PUT
/// after the other, each value naming (client id, sequence number). So after any failure the
/// final value of a client's key must be its last acknowledged PUT, or the one after (which
/// was in flight and may or may not have been applied): nothing acknowledged lost.
pub struct Load {
    /// Per endpoint and logical client: sequence number of the last PUT issued and acknowledged.
    pub issued: Vec<Vec<u64>>,
    pub acked: Vec<Vec<u64>>,
    pub acks: u64,
    pub failed: u64,
    pub last_ack_ns: u64,
    /// Whether to issue new PUTs.
    pub on: bool,
}

pub fn load_key(e: usize, lc: usize) -> Vec<u8> {
    key((e * 1000 + lc) as u64)
}

impl Load {
    pub fn new(c: &Sim) -> Load {
        let n: Vec<usize> = c.clients.iter().map(|k| k.ctx().cfg.clients).collect();
        Load {
            issued: n.iter().map(|&m| vec![0; m]).collect(),
            acked: n.iter().map(|&m| vec![0; m]).collect(),
            acks: 0,
            failed: 0,
            last_ack_ns: 0,
            on: true,
        }
    }

    /// Collects completions and issues the next PUTs.
    pub fn pump(&mut self, c: &mut Sim) {
        let now = c.now();
        for e in 0..c.clients.len() {
            while let Some(d) = c.clients[e].ctx_mut().done.pop_front() {
                match d.outcome {
                    Outcome::Ok => {
                        self.acked[e][d.client] = self.issued[e][d.client];
                        self.acks += 1;
                        self.last_ack_ns = now;
                    }
                    _ => self.failed += 1,
                }
            }
            for lc in 0..self.issued[e].len() {
                if self.on && !c.clients[e].ctx().busy(lc) {
                    self.issued[e][lc] += 1;
                    let id = c.clients[e].ctx().client_id(lc);
                    client::submit(&mut c.clients[e], lc, put(&load_key(e, lc), &value(id, self.issued[e][lc])));
                }
            }
        }
    }

    /// Runs the load for `ns`.
    pub fn run(&mut self, c: &mut Sim, ns: u64) {
        c.run_until(ns, |c| {
            self.pump(c);
            false
        });
    }

    /// Runs until `acks` more writes are acknowledged (at most `max_ns`); how long it took.
    pub fn until_acks(&mut self, c: &mut Sim, more: u64, max_ns: u64) -> Option<u64> {
        let (t0, want) = (c.now(), self.acks + more);
        let ok = c.run_until(max_ns, |c| {
            self.pump(c);
            self.acks >= want
        });
        ok.then(|| c.now() - t0)
    }

    /// Stops issuing and waits until every outstanding PUT is answered.
    pub fn drain(&mut self, c: &mut Sim) {
        self.on = false;
        let ok = c.run_until(30 * S, |c| {
            self.pump(c);
            c.clients.iter().all(|k| (0..k.ctx().cfg.clients).all(|lc| !k.ctx().busy(lc)))
        });
        assert!(ok, "outstanding writes were never answered");
    }

    /// Every live replica holds, for each client's key, its last acknowledged value or the next.
    pub fn check(&self, c: &Sim) {
        for r in c.replicas.iter().flatten() {
            let r = r.ctx();
            for e in 0..self.acked.len() {
                for lc in 0..self.acked[e].len() {
                    let id = c.clients[e].ctx().client_id(lc);
                    let (a, i) = (self.acked[e][lc], self.issued[e][lc]);
                    let v = r.sm.map.get(&load_key(e, lc));
                    let ok = (a == 0 && v.is_none()) || v == Some(&value(id, a)) || (i > a && v == Some(&value(id, i)));
                    assert!(
                        ok,
                        "replica {}: client {e}/{lc} acked {a}, issued {i}, holds {:?}",
                        r.id(),
                        v.map(|v| &v[..16])
                    );
                }
            }
        }
        applied_once(c);
    }
}

/// No live replica applied any (client id, sequence number) twice.
pub fn applied_once(c: &Sim) {
    for r in c.replicas.iter().flatten() {
        if let Some(rec) = &r.ctx().sm.record {
            let mut seen = std::collections::HashSet::new();
            for w in rec {
                assert!(seen.insert(*w), "replica {} applied {:?} twice", r.ctx().id(), w);
            }
        }
    }
}
