//! Replication on the simulated fabric: every replica applies the same writes in the same order;
//! a GET after an acknowledged PUT sees it; followers redirect; many clients at once.

#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use erpc_kv::client::{self, Outcome};
use erpc_kv::SimOptions;

#[test]
fn every_replica_applies_the_same_writes_and_gets_see_acknowledged_puts() {
    let mut c = sim(SimOptions::default());
    elect(&mut c);
    let mut lat = Vec::new();
    for i in 0..500u64 {
        let d = run_op(&mut c, 0, 0, put(&key(i % 50), &value(0, i)), 2 * S);
        assert_eq!(d.outcome, Outcome::Ok, "put {i}");
        lat.push(d.return_ns - d.invoke_ns);
        if i % 10 == 0 {
            let d = run_op(&mut c, 0, 0, get(&key(i % 50)), 2 * S);
            assert_eq!(d.outcome, Outcome::Value(value(0, i)), "get after put {i}");
        }
    }
    // Two round trips of 2 µs links (client-leader, leader-followers) and a little simulated
    // processing: no timer sits on the path of a write.
    lat.sort_unstable();
    assert!(lat[250] >= 8_000 && lat[250] < 20_000, "median PUT {} ns", lat[250]);
    let d = run_op(&mut c, 0, 0, get(b"missing"), 2 * S);
    assert_eq!(d.outcome, Outcome::NotFound);
    let d = run_op(&mut c, 0, 0, erpc_kv::Op::Del { key: key(3) }, 2 * S);
    assert_eq!(d.outcome, Outcome::Ok);
    let d = run_op(&mut c, 0, 0, get(&key(3)), 2 * S);
    assert_eq!(d.outcome, Outcome::NotFound);
    quiesce(&mut c);
    for r in c.replicas.iter().flatten() {
        let r = r.ctx();
        assert_eq!(r.sm.writes, 501);
        let rec = r.sm.record.as_ref().unwrap();
        assert_eq!(rec.len(), 501, "each write applied once");
        assert!(rec.windows(2).all(|w| w[0].1 < w[1].1), "in the order they were acknowledged");
    }
}

#[test]
fn a_client_that_starts_at_a_follower_is_redirected_to_the_leader() {
    let mut c = sim(SimOptions::default());
    let l = elect(&mut c);
    // Let the client connect to every replica, then aim it at a follower.
    assert!(c.run_until(S, |c| c.clients[0].ctx().connected() == 3));
    let d = run_op(&mut c, 0, 0, put(b"a", b"1"), S);
    assert_eq!(d.outcome, Outcome::Ok);
    assert_eq!(c.clients[0].ctx().leader_guess(0), l, "the client now knows the leader");
    // The client starts with replica 0: unless it leads, it redirected the first request.
    let redirects = c.replicas.iter().flatten().map(|r| r.ctx().stats.redirects).sum::<u64>();
    assert_eq!(redirects, (l != 0) as u64);
    assert_eq!(c.clients[0].ctx().stats.redirects, (l != 0) as u64);
    assert_eq!(d.attempts, 1 + (l != 0) as u32);
}

#[test]
fn many_clients_writing_at_once_are_batched_and_all_applied() {
    let mut c = sim(SimOptions { client_endpoints: vec![16, 16], ..Default::default() });
    elect(&mut c);
    assert!(c.run_until(S, |c| c.clients.iter().all(|k| k.ctx().connected() == 3)));
    let per = 50u64;
    let mut issued = vec![vec![0u64; 16]; 2];
    let mut acked = 0;
    let ok = c.run_until(20 * S, |c| {
        for e in 0..2 {
            for lc in 0..16 {
                while let Some(d) = c.clients[e].ctx_mut().done.pop_front() {
                    assert_eq!(d.outcome, Outcome::Ok);
                    acked += 1;
                }
                if !c.clients[e].ctx().busy(lc) && issued[e][lc] < per {
                    issued[e][lc] += 1;
                    let id = c.clients[e].ctx().client_id(lc);
                    client::submit(&mut c.clients[e], lc, put(&key(lc as u64), &value(id, issued[e][lc])));
                }
            }
        }
        acked == 2 * 16 * per
    });
    assert!(ok, "{acked} of {} acknowledged", 2 * 16 * per);
    quiesce(&mut c);
    let l = c.leader().unwrap();
    let r = c.replica(l).unwrap();
    assert_eq!(r.sm.writes, 2 * 16 * per);
    // Batching: far fewer Raft requests than writes times followers.
    assert!(r.stats.raft_requests_sent < 2 * 2 * 16 * per, "{} Raft requests", r.stats.raft_requests_sent);
}

/// A continuation for any endpoint of the cluster (client or replica) that frees both buffers.
fn drop_completion<X>(
    rpc: &mut erpc_dataplane::Rpc<'static, erpc_kv::cluster::FabricNic, erpc_kv::cluster::Clk, X>,
    c: erpc_dataplane::Completion,
) {
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

#[test]
fn raft_messages_from_an_endpoint_that_is_no_peer_are_refused() {
    let mut c = sim(SimOptions::default());
    let l = elect(&mut c);
    let f = (l + 1) % 3;
    let term = c.replica(f).unwrap().term();
    // A client endpoint forges a heartbeat "from the leader" with a far higher term: accepted, it
    // would make the follower take that term (and disrupt the cluster).
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    (m.from, m.to, m.term) = (l as u64 + 1, f as u64 + 1, term + 100);
    let mut batch = Vec::new();
    erpc_kv::codec::encode_batch(std::iter::once(&erpc_kv::codec::encoded(&m)[..]), &mut batch);
    let addr = c.cfgs[f].peers[f];
    let s = c.clients[0].create_session(addr).unwrap();
    assert!(c.run_until(S, |c| c.clients[0].is_connected(s)));
    let mut req = c.clients[0].alloc_msg_buffer(batch.len()).unwrap();
    req.data_mut().copy_from_slice(&batch);
    let resp = c.clients[0].alloc_msg_buffer(4096).unwrap();
    c.clients[0].enqueue_request(s, erpc_kv::proto::REQ_RAFT, req, resp, drop_completion, 0).unwrap();
    c.run_for(10 * MS);
    let r = c.replica(f).unwrap();
    assert!(r.stats.bad_requests >= 1, "refused");
    assert_eq!(r.term(), term, "the forged term was not taken");
    assert_eq!(c.leader(), Some(l));
}

/// Messages raft-rs would end a follower's process over, sent from the leader's own endpoint
/// (a peer: `from_peer` passes them): the follower drops or clamps them, counts the drops, and
/// the cluster goes on serving.
#[test]
fn messages_from_a_peer_that_raft_rs_would_die_of_are_dropped() {
    let mut c = sim(SimOptions::default());
    let l = elect(&mut c);
    let f = (l + 1) % 3;
    let d = run_op(&mut c, 0, 0, put(b"k", b"v"), 2 * S);
    assert_eq!(d.outcome, Outcome::Ok);
    let (term, last) = {
        let r = c.replica(f).unwrap();
        (r.term(), r.node.raft.raft_log.last_index())
    };
    let msg = |t: raft::eraftpb::MessageType| {
        let mut m = raft::eraftpb::Message::default();
        m.set_msg_type(t);
        (m.from, m.to, m.term) = (l as u64 + 1, f as u64 + 1, term);
        m
    };
    // An append whose entries do not follow its index, committing past the follower's log (the
    // shape raft-rs's batch_append built under load).
    let mut bad = msg(raft::eraftpb::MessageType::MsgAppend);
    (bad.index, bad.log_term, bad.commit) = (last, term, last + 5);
    let mut e = raft::eraftpb::Entry::default();
    (e.index, e.term) = (last, term);
    bad.set_entries(vec![e].into());
    // A heartbeat with a commit index beyond the follower's log: clamped, not dropped.
    let mut hb = msg(raft::eraftpb::MessageType::MsgHeartbeat);
    hb.commit = last + 100;
    let mut batch = Vec::new();
    let (b1, b2) = (erpc_kv::codec::encoded(&bad), erpc_kv::codec::encoded(&hb));
    erpc_kv::codec::encode_batch([&b1[..], &b2[..]].into_iter(), &mut batch);
    let addr = c.cfgs[f].peers[f];
    let lrpc = c.replicas[l].as_mut().unwrap();
    let s = lrpc.create_session(addr).unwrap();
    assert!(c.run_until(S, |c| c.replicas[l].as_ref().unwrap().is_connected(s)));
    let lrpc = c.replicas[l].as_mut().unwrap();
    let mut req = lrpc.alloc_msg_buffer(batch.len()).unwrap();
    req.data_mut().copy_from_slice(&batch);
    let resp = lrpc.alloc_msg_buffer(4096).unwrap();
    lrpc.enqueue_request(s, erpc_kv::proto::REQ_RAFT, req, resp, drop_completion, 0).unwrap();
    c.run_for(10 * MS);
    let r = c.replica(f).expect("the follower is alive");
    assert_eq!(r.stats.malformed_msgs, 1, "the append dropped, the heartbeat taken");
    assert!(r.node.raft.raft_log.committed <= r.node.raft.raft_log.last_index());
    assert_eq!(c.leader(), Some(l));
    let d = run_op(&mut c, 0, 0, put(b"k", b"w"), 2 * S);
    assert_eq!(d.outcome, Outcome::Ok, "still serving");
}
