//! raft-rs 0.7 with `batch_append` can build an append whose entries do not follow its index;
//! stepped into a follower that lacks them, raft-rs panics. This drives a real raft-rs leader
//! into building one, then checks what the replica does about it on both sides: the leader's
//! side mends it ([`repair_batched_append`]), the follower's side drops what is not mended
//! ([`append_is_consistent`]).

use erpc_kv::replica::{admit, append_is_consistent, repair_batched_append};
use raft::eraftpb::{Message, MessageType};
use raft::storage::MemStorage;
use raft::{Config, RawNode};

fn node(id: u64) -> RawNode<MemStorage> {
    let storage = MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]));
    let cfg = Config { id, election_tick: 10, heartbeat_tick: 1, batch_append: true, ..Default::default() };
    RawNode::new(&cfg, storage, &slog::Logger::root(slog::Discard, slog::o!())).unwrap()
}

/// Handles every Ready as the replica does (persist, advance) and returns the messages.
fn drain(n: &mut RawNode<MemStorage>) -> Vec<Message> {
    let mut out = Vec::new();
    while n.has_ready() {
        let mut rd = n.ready();
        out.extend(rd.take_messages());
        if !rd.entries().is_empty() {
            n.mut_store().wl().append(rd.entries()).unwrap();
        }
        if let Some(hs) = rd.hs() {
            n.mut_store().wl().set_hardstate(hs.clone());
        }
        out.extend(rd.take_persisted_messages());
        let mut light = n.advance(rd);
        if let Some(c) = light.commit_index() {
            n.mut_store().wl().mut_hard_state().commit = c;
        }
        out.extend(light.take_messages());
        n.advance_apply();
    }
    out
}

fn msg(t: MessageType, from: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(t);
    (m.from, m.to, m.term) = (from, 1, term);
    m
}

fn ack(from: u64, term: u64, index: u64) -> Message {
    let mut m = msg(MessageType::MsgAppendResponse, from, term);
    m.index = index;
    m
}

/// A leader (1) whose follower 2 has entry 1 and lost the append of entries 2..3; follower 3
/// has everything. Returns the leader, its term, and the append it then builds for 2.
fn leader_with_a_lagging_follower() -> (RawNode<MemStorage>, u64, Message) {
    let mut l = node(1);
    l.campaign().unwrap();
    let term = l.raft.term;
    drain(&mut l);
    l.step(msg(MessageType::MsgRequestVoteResponse, 2, term)).unwrap();
    drain(&mut l); // leader: entry 1 (empty) to both followers
    l.step(ack(2, term, 1)).unwrap();
    l.step(ack(3, term, 1)).unwrap();
    drain(&mut l);
    for k in 0..2 {
        l.propose(vec![], vec![k]).unwrap();
    }
    drain(&mut l); // append index 1, entries 2..3: lost on the way to 2
    for k in 2..5 {
        l.propose(vec![], vec![k]).unwrap();
    }
    drain(&mut l); // append index 3, entries 4..6
                   // 3 has all six: the commit index moves to 6, and raft-rs queues an append without
                   // entries (index 6, the commit) for 2, whose next index is already 7.
    l.step(ack(3, term, 6)).unwrap();
    // 2 rejects the append at 3 (it has only entry 1): its next index goes back to 2, and the
    // entries from there are added to the queued empty append, index 6 and all.
    let mut reject = ack(2, term, 3);
    reject.reject = true;
    reject.reject_hint = 1;
    l.step(reject).unwrap();
    let to2: Vec<Message> = drain(&mut l)
        .into_iter()
        .filter(|m| m.to == 2 && m.get_msg_type() == MessageType::MsgAppend && !m.get_entries().is_empty())
        .collect();
    assert_eq!(to2.len(), 1, "{to2:?}");
    (l, term, to2.into_iter().next().unwrap())
}

/// A follower (2) that has entries 1 to `n` of `term`, none of them committed.
fn follower_with_entries(term: u64, n: u64) -> RawNode<MemStorage> {
    let mut f = node(2);
    let ents: Vec<raft::eraftpb::Entry> = (1..=n)
        .map(|i| {
            let mut e = raft::eraftpb::Entry::default();
            (e.index, e.term) = (i, term);
            e
        })
        .collect();
    let mut m = msg(MessageType::MsgAppend, 1, term);
    m.to = 2;
    m.set_entries(ents.into());
    f.step(m).unwrap();
    drain(&mut f);
    assert_eq!(f.raft.raft_log.last_index(), n);
    f
}

#[test]
fn raft_rs_builds_an_append_whose_entries_do_not_follow_its_index() {
    let (_l, _, m) = leader_with_a_lagging_follower();
    let idx: Vec<u64> = m.get_entries().iter().map(|e| e.index).collect();
    // Probing, it sends one entry: entry 2, in the append of index 6.
    assert_eq!((m.index, idx), (6, vec![2]), "raft-rs 0.7's batch_append");
    assert!(!append_is_consistent(&m));
}

#[test]
fn such_an_append_makes_raft_rs_panic_in_a_follower_unless_dropped() {
    let (_l, term, mut m) = leader_with_a_lagging_follower();
    // The follower has caught up to the append's index by other messages meanwhile, and the
    // leader's commit index, which raft-rs updates in queued appends, has moved past it (as
    // when the replica crashed under load: "to_commit 56508 is out of range [last_index
    // 56501]"). Entry 2 matches, so raft-rs takes the entries as appended and commits up to
    // index + entries = 7, past its last entry.
    m.commit = 7;
    let mut f = follower_with_entries(term, 6);
    // What the replica did before: stepped it, and the process ended here.
    let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = f.step(m.clone());
    }));
    assert!(stepped.is_err(), "raft-rs panics: it commits up to index + entries");
    // The replica's check drops it instead; a lost append is something Raft recovers from.
    assert!(!append_is_consistent(&m));
}

#[test]
fn the_leader_mends_it_into_the_append_raft_rs_meant() {
    let (l, term, mut m) = leader_with_a_lagging_follower();
    let log = &l.raft.raft_log;
    assert!(repair_batched_append(&mut m, |i| log.term(i).ok().filter(|&t| t > 0)));
    assert_eq!((m.index, m.log_term), (1, term));
    assert!(append_is_consistent(&m));
    // A follower with entry 1 takes it: entry 2, committed up to 2.
    let mut f = follower_with_entries(term, 1);
    f.step(m).unwrap();
    drain(&mut f);
    assert_eq!(f.raft.raft_log.last_index(), 2);
    assert_eq!(f.raft.raft_log.committed, 2);
    // Consistent appends, and other messages, are left alone.
    let mut ok = msg(MessageType::MsgAppend, 1, term);
    ok.index = 1;
    let mut e = raft::eraftpb::Entry::default();
    (e.index, e.term) = (2, term);
    ok.set_entries(vec![e].into());
    let before = ok.clone();
    assert!(!repair_batched_append(&mut ok, |_| Some(term)));
    assert_eq!(ok, before);
    assert!(append_is_consistent(&msg(MessageType::MsgHeartbeat, 1, term)));
    // Without the term of the entry before, it stays as it is (and the follower drops it).
    let (_l, _, mut m) = leader_with_a_lagging_follower();
    assert!(!repair_batched_append(&mut m, |_| None));
    assert_eq!(m.index, 6);
}

fn entry(index: u64, term: u64) -> raft::eraftpb::Entry {
    let mut e = raft::eraftpb::Entry::default();
    (e.index, e.term) = (index, term);
    e
}

/// The other messages raft-rs 0.7 ends a follower's process over, each of which [`admit`]
/// drops or clamps; and what it lets through.
#[test]
fn messages_raft_rs_would_die_of_are_dropped_or_clamped() {
    let term = 2;
    let to2 = |t: MessageType| {
        let mut m = msg(t, 1, term);
        m.to = 2;
        m
    };
    // A heartbeat with a commit index beyond the follower's log (it lost its log: started again
    // without durability). raft-rs commits to it and panics; clamped, the follower answers.
    let mut hb = to2(MessageType::MsgHeartbeat);
    hb.commit = 5;
    let mut f = follower_with_entries(term, 1);
    let raw = hb.clone();
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = f.step(raw);
    }));
    assert!(died.is_err(), "raft-rs panics on a heartbeat beyond its log");
    let mut f = follower_with_entries(term, 1);
    assert!(admit(&mut hb, f.raft.raft_log.last_index()));
    assert_eq!(hb.commit, 1);
    f.step(hb).unwrap();
    assert_eq!(f.raft.raft_log.committed, 1);
    // An append that names a term 0 beyond index 0: raft-rs matches it against its "term 0" of
    // indexes past its log and commits past its last entry.
    let mut a = to2(MessageType::MsgAppend);
    (a.index, a.log_term, a.commit) = (4, 0, 4);
    let mut f = follower_with_entries(term, 1);
    let raw = a.clone();
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = f.step(raw);
    }));
    assert!(died.is_err(), "raft-rs panics on an append of log term 0 past its log");
    assert!(!admit(&mut a, 1));
    // Entries of term 0, or of a term after the message's.
    let mut a = to2(MessageType::MsgAppend);
    (a.index, a.log_term) = (1, term);
    a.set_entries(vec![entry(2, 0)].into());
    assert!(!admit(&mut a, 1));
    a.set_entries(vec![entry(2, term + 1)].into());
    assert!(!admit(&mut a, 1));
    // A snapshot of term 0 at an index.
    let mut s = to2(MessageType::MsgSnapshot);
    s.mut_snapshot().mut_metadata().index = 9;
    assert!(!admit(&mut s, 1));
    // An append response for an index beyond the leader's log (not a rejection).
    let mut r = ack(2, term, 7);
    assert!(!admit(&mut r, 6));
    r.reject = true;
    assert!(admit(&mut r, 6));
    // What a correct leader sends passes unchanged.
    let mut a = to2(MessageType::MsgAppend);
    (a.index, a.log_term, a.commit) = (1, term, 1);
    a.set_entries(vec![entry(2, term), entry(3, term)].into());
    let before = a.clone();
    assert!(admit(&mut a, 1));
    assert_eq!(a, before);
    let mut f = follower_with_entries(term, 1);
    f.step(a).unwrap();
    drain(&mut f);
    assert_eq!(f.raft.raft_log.last_index(), 3);
}
