//! Snapshots and durability on the simulated fabric: a follower that fell behind a compacted log
//! catches up from a snapshot sent in parts; with `fsync`, a crashed replica recovers its log and
//! catches up, and a whole cluster restarted from its logs has lost no acknowledged write.

mod common;

use common::*;
use erpc_kv::{Durability, Outcome, ReplicaConfig, SimOptions};

/// Small snapshots often, in 4 KiB parts.
fn snapshotting(mut c: ReplicaConfig) -> ReplicaConfig {
    c = fast(c);
    c.snapshot_every = 200;
    c.log_keep = 20;
    c.part_size = 4096;
    c
}

/// 500 keys of 64-byte values: a snapshot of about 45 KB, a dozen parts.
fn fill(c: &mut Sim) {
    for k in 0..500u64 {
        assert_eq!(run_op(c, 0, 0, put(&key(10_000 + k), &value(9, k)), S).outcome, Outcome::Ok);
    }
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_from_a_snapshot_in_parts() {
    let mut c = sim_with(SimOptions { client_endpoints: vec![1, 4], ..Default::default() }, snapshotting);
    let l = elect(&mut c);
    let f = (l + 1) % 3;
    c.cut(f, &[(f + 1) % 3, (f + 2) % 3], true);
    fill(&mut c);
    let leader = c.replica(l).unwrap();
    assert!(leader.node.raft.raft_log.first_index() > c.replica(f).unwrap().node.raft.raft_log.last_index() + 1);
    c.cut(f, &[(f + 1) % 3, (f + 2) % 3], false);
    let mut load = Load::new(&c);
    load.until_acks(&mut c, 300, 10 * S).expect("progress");
    load.drain(&mut c);
    quiesce(&mut c);
    load.check(&c);
    let (lr, fr) = (c.replica(c.leader().unwrap()).unwrap(), c.replica(f).unwrap());
    assert!(fr.stats.snapshots_installed >= 1, "the follower installed a snapshot");
    assert!(lr.stats.parts_sent >= 10, "sent in parts: {}", lr.stats.parts_sent);
    assert_eq!(fr.sm.map.len(), 500 + 4 + 1);
}

fn durable(dirs: &tempfile::TempDir) -> impl FnMut(ReplicaConfig) -> ReplicaConfig + '_ {
    move |c| {
        let id = c.id;
        let mut c = snapshotting(c);
        c.durability = Durability::Fsync { dir: dirs.path().join(format!("replica-{id}")) };
        c
    }
}

#[test]
fn a_crashed_replica_recovers_its_fsync_log_and_catches_up() {
    let dirs = tempfile::tempdir().unwrap();
    let mut c = sim_with(SimOptions { client_endpoints: vec![1, 4], ..Default::default() }, durable(&dirs));
    let l = elect(&mut c);
    let mut load = Load::new(&c);
    load.until_acks(&mut c, 150, 10 * S).expect("progress");
    let f = (l + 1) % 3;
    let before = c.replica(f).unwrap().node.raft.raft_log.last_index();
    c.kill(f);
    // Far enough for the leader to compact past the crashed replica's log.
    load.until_acks(&mut c, 400, 20 * S).expect("progress with a replica down");
    c.restart(f).unwrap();
    let rec = c.replica(f).unwrap().recovered.clone();
    assert!(rec.last_index >= before, "the log up to {before} recovered: {rec:?}");
    assert!(rec.term > 0 && rec.commit > 0, "hard state recovered: {rec:?}");
    load.until_acks(&mut c, 200, 20 * S).expect("progress after the restart");
    load.drain(&mut c);
    quiesce(&mut c);
    load.check(&c);
    let r = c.replica(f).unwrap();
    assert!(r.stats.snapshots_installed >= 1, "caught up from a snapshot: the log was compacted");
    assert!(c.replica(c.leader().unwrap()).unwrap().node.store().syncs > 100);
}

#[test]
fn a_whole_cluster_restarted_from_its_fsync_logs_has_every_acknowledged_write() {
    let dirs = tempfile::tempdir().unwrap();
    let mut c = sim_with(SimOptions { client_endpoints: vec![1, 4], ..Default::default() }, durable(&dirs));
    elect(&mut c);
    let mut load = Load::new(&c);
    load.until_acks(&mut c, 500, 20 * S).expect("progress");
    load.drain(&mut c);
    // Crash all three at once; nothing acknowledged may be missing after the restart.
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.restart(i).unwrap();
    }
    for i in 0..3 {
        assert!(c.replica(i).unwrap().recovered.last_index > 0);
    }
    elect(&mut c);
    quiesce(&mut c);
    load.check(&c);
    // And it serves again.
    load.on = true;
    load.until_acks(&mut c, 100, 20 * S).expect("serving again");
    load.drain(&mut c);
    quiesce(&mut c);
    load.check(&c);
}
