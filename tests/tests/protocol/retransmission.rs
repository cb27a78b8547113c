//! Client: retransmission (Go-Back-N), liveness, session reset.

use crate::harness::*;

#[test]
fn client_retransmits_after_rto() {
    let mut b = client();
    let rto = test_config(1).rto_ns;
    b.request(b"ping", 100, 1);
    b.step();
    let first = b.sent();
    assert_eq!(first.len(), 1);
    let flushes = b.flushes();
    // Before the RTO: nothing.
    b.advance(rto / 2);
    assert!(b.sent().is_empty());
    assert_eq!(b.rpc.stats().retransmissions, 0);
    // Past it: the same frame again, one rollback, one flush.
    b.advance(rto);
    let tx = b.sent();
    assert_eq!(tx, first, "same REQ frame");
    assert_eq!(b.rpc.stats().retransmissions, 1);
    assert_eq!(b.rpc.stats().retransmitted_pkts, 1);
    assert_eq!(b.rpc.session_stats(b.session()).unwrap().retransmissions, 1);
    assert_eq!(b.flushes(), flushes + 1, "tx_flush after retransmitting");
    assert_eq!(b.credits(), 31);
    // Not again until another RTO has passed.
    b.advance(rto / 2);
    assert!(b.sent().is_empty());
    assert_eq!(b.rpc.stats().retransmissions, 1);
    // The response completes it once.
    assert!(b.deliver(b.resp(8, 0, b"pong")).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(4), data: b"pong".to_vec() }]);
    b.advance(3 * rto);
    assert!(b.sent().is_empty(), "nothing outstanding");
    assert_eq!(b.rpc.stats().retransmissions, 1);
}

#[test]
fn client_go_back_n_from_first_unacked_request_pkt() {
    let mut b = client();
    let rto = test_config(1).rto_ns;
    let data = pattern(8, 2500); // 3 packets
    b.request(&data, 100, 1);
    b.step();
    let first = b.sent();
    assert_eq!(first.len(), 3);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]).is_empty());
    b.advance(rto + 1);
    let tx = b.sent();
    assert_eq!(tx, first[1..].to_vec(), "packets 1 and 2 again, not 0");
    assert_eq!(b.rpc.stats().retransmissions, 1);
    assert_eq!(b.rpc.stats().retransmitted_pkts, 2);
    assert_eq!(b.credits(), 32 - 2);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 1, 8)]).is_empty());
    assert!(b.deliver(b.resp(8, 2, b"ok")).is_empty());
    assert_eq!(b.ctx().done.len(), 1);
    assert_eq!(b.credits(), 32);
}

#[test]
fn client_go_back_n_resends_rfrs() {
    let mut b = client();
    let rto = test_config(1).rto_ns;
    b.request(b"get", 4000, 1);
    b.step();
    b.sent();
    let want = pattern(RESP_SEED, 3000);
    let r = b.resp(8, 0, &want);
    let rfrs = b.deliver([r[0].clone()]);
    assert_eq!(rfrs.len(), 3);
    assert!(b.deliver([r[1].clone()]).is_empty());
    // RESP 2 and 3 lost: RFRs 2 and 3 again.
    b.advance(rto + 1);
    let tx = b.sent();
    assert_eq!(
        tx.iter().map(|f| p(f)).collect::<Vec<_>>(),
        vec![b.exp(PktType::Rfr, 0, 2, 8), b.exp(PktType::Rfr, 0, 3, 8)]
    );
    assert_eq!(b.rpc.stats().retransmitted_pkts, 2);
    assert!(b.deliver([r[2].clone(), r[3].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(3000), data: want }]);
    assert_eq!(b.credits(), 32);
}

#[test]
fn client_alive_cr_does_not_stop_retransmission() {
    // The "alive" CR keeps the session from timing out but is not progress.
    let mut b = client();
    let rto = test_config(1).rto_ns;
    b.request(b"slow", 100, 1);
    b.step();
    b.sent();
    b.clock.advance(rto / 2);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]).is_empty());
    b.advance(rto / 2 + 1);
    assert_eq!(b.sent().len(), 1);
    assert_eq!(b.rpc.stats().retransmissions, 1);
    assert!(b.ctx().done.is_empty());
}

#[test]
fn client_session_reset_after_peer_silence() {
    let mut b = client();
    let s = b.session();
    let timeout = test_config(1).session_timeout_ns;
    b.request(b"ping", 100, 1);
    b.step();
    b.sent();
    let flushes = b.flushes();
    b.advance(timeout + 1);
    let tx = b.sent();
    assert_eq!(tx.len(), 1, "a best-effort DisconnectReq, no retransmission");
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::DisconnectReq as u8);
    assert_eq!((body.client_session.get(), body.server_session.get()), (s.0, SS));
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Err(RpcError::SessionReset), data: vec![] }]);
    assert_eq!(b.ctx().events.last(), Some(&SessionEvent::Reset(s, erpc_dataplane::ResetReason::PeerTimeout)));
    assert_eq!(b.rpc.session_state(s), SessionState::Free);
    assert_eq!((b.rpc.stats().sessions_reset, b.rpc.stats().rpcs_failed), (1, 1));
    assert!(b.flushes() > flushes, "buffers go back to the application only after tx_flush");
    // A late response for the dead session is dropped.
    b.assert_dropped(b.resp(8, 0, b"late").remove(0), DropReason::UnknownSession);
}

#[test]
fn client_alive_cr_keeps_session_alive() {
    let mut b = client();
    let timeout = test_config(1).session_timeout_ns;
    b.request(b"slow", 100, 1);
    b.step();
    b.sent();
    for round in 1..=3u64 {
        b.clock.advance(timeout * 3 / 4);
        // The alive CR arrives; the same iteration's loss scan retransmits (no progress).
        let tx = b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]);
        assert_eq!(tx.iter().map(|f| p(f)).collect::<Vec<_>>(), vec![b.exp(PktType::Req, 4, 0, 8)]);
        assert_eq!(b.rpc.stats().retransmissions, round);
    }
    assert!(b.rpc.is_connected(b.session()));
    assert_eq!(b.rpc.stats().sessions_reset, 0);
    assert!(b.deliver(b.resp(8, 0, b"done")).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(4), data: b"done".to_vec() }]);
}
