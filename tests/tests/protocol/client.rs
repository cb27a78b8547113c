//! Client: request frames, credits, responses, the backlog.

use crate::harness::*;

#[test]
fn client_request_frames() {
    let mut b = client();
    assert_eq!(b.credits(), 32);
    b.request(b"ping", 100, 1);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 4, 0, 8));
    assert_eq!(data_of(&tx[0]), b"ping");
    assert_eq!(b.credits(), 31);
    // A second request takes slot 1 (req_num 9).
    b.request(b"pong!", 100, 2);
    b.step();
    let tx = b.sent();
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 5, 0, 9));
    // Responses in either order complete their own RPCs.
    assert!(b.deliver(b.resp(9, 0, b"r9")).is_empty());
    assert!(b.deliver(b.resp(8, 0, b"r8")).is_empty());
    assert_eq!(
        b.ctx().done,
        vec![
            Done { tag: 2, result: Ok(2), data: b"r9".to_vec() },
            Done { tag: 1, result: Ok(2), data: b"r8".to_vec() },
        ]
    );
    assert_eq!(b.credits(), 32);
    assert_eq!(b.rpc.stats().rpcs_completed, 2);
    // The slot's next request is req_num 16.
    b.request(b"again", 100, 3);
    b.step();
    assert_eq!(p(&b.sent()[0]), b.exp(PktType::Req, 5, 0, 16));
}

#[test]
fn client_credit_limited_multi_pkt_request() {
    let mut b = client_with(RpcConfig { session_credits: 2, ..test_config(1) });
    assert_eq!(b.credits(), 2);
    let data = pattern(3, 2000); // 3 packets
    b.request(&data, 100, 7);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 2, "two credits: two packets");
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 2000, 0, 8));
    assert_eq!(p(&tx[1]), b.exp(PktType::Req, 2000, 1, 8));
    assert_eq!(data_of(&tx[0]), &data[..DPP]);
    assert_eq!(data_of(&tx[1]), &data[DPP..2 * DPP]);
    assert_eq!(b.credits(), 0);
    // Stepping again sends nothing: stalled on credits.
    b.step();
    assert!(b.sent().is_empty());
    // CR 1 before CR 0: out of order.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 1, 8), DropReason::OutOfOrder);
    // CR 0 releases packet 2.
    let tx = b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 2000, 2, 8));
    assert_eq!(data_of(&tx[0]), &data[2 * DPP..]);
    assert_eq!(b.credits(), 0);
    // Duplicate CR 0: out of order.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 0, 8), DropReason::OutOfOrder);
    // A CR for another request number: stale.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 1, 16), DropReason::Stale);
    // RESP 0 (pkt_num 2) before CR 1: out of order.
    b.assert_dropped(b.resp(8, 2, b"reply").remove(0), DropReason::OutOfOrder);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 1, 8)]).is_empty());
    assert_eq!(b.credits(), 1);
    assert!(b.ctx().done.is_empty());
    // RESP 0 has pkt_num N-1 = 2; a single-packet response completes.
    assert!(b.deliver(b.resp(8, 2, b"reply")).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 7, result: Ok(5), data: b"reply".to_vec() }]);
    assert_eq!(b.credits(), 2);
    // A duplicate response is stale; the continuation does not run again.
    b.assert_dropped(b.resp(8, 2, b"reply").remove(0), DropReason::Stale);
    assert_eq!(b.ctx().done.len(), 1);
}

#[test]
fn client_resp_and_cr_type_checks() {
    let mut b = client();
    let data = pattern(3, 2000); // 3 packets
    b.request(&data, 100, 1);
    b.step();
    assert_eq!(b.sent().len(), 3);
    // A RESP with pkt_num below N-1 cannot be a response.
    b.assert_dropped(b.resp(8, 0, b"r").remove(0), DropReason::WrongType);
    // A CR beyond the request's packets.
    b.assert_dropped(b.ctrl(PktType::ExplCr, 3, 8), DropReason::WrongType);
    // CR for the last request packet: "server alive", changes nothing.
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 2, 8)]).is_empty());
    assert_eq!(b.rpc.stats().drops.total(), 2);
    assert_eq!(b.credits(), 29);
    assert!(b.ctx().done.is_empty());
}

#[test]
fn client_multi_pkt_response_rfrs() {
    let mut b = client();
    b.request(b"get", 4000, 11);
    b.step();
    assert_eq!(b.sent().len(), 1);
    let want = pattern(RESP_SEED, 3000); // 4 packets
    let r = b.resp(8, 0, &want);
    // RESP 0: the client asks for the rest at once (32 credits).
    let tx = b.deliver([r[0].clone()]);
    assert_eq!(tx.len(), 3);
    for (k, f) in tx.iter().enumerate() {
        assert_eq!(p(f), b.exp(PktType::Rfr, 0, k as u16 + 1, 8));
        assert_eq!(f.len(), PKT_HDR_LEN);
    }
    assert_eq!(b.credits(), 32 - 3);
    // RESP 2 before RESP 1: out of order. RESP with another msg_size: refused.
    b.assert_dropped(r[2].clone(), DropReason::OutOfOrder);
    let other = b.resp(8, 0, &pattern(RESP_SEED, 2950))[1].clone();
    b.assert_dropped(other, DropReason::BadMsgSize);
    assert!(b.deliver([r[1].clone(), r[2].clone()]).is_empty());
    assert!(b.ctx().done.is_empty(), "not before the last packet");
    assert!(b.deliver([r[3].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 11, result: Ok(3000), data: want }]);
    assert_eq!(b.credits(), 32);
    assert_eq!(b.rpc.stats().rpcs_completed, 1);
}

#[test]
fn client_multi_pkt_request_and_response_numbering() {
    // N = 2, M = 3: RESP 0 is pkt_num 1, RFRs are 2 and 3.
    let mut b = client();
    let st = b.rpc.session_stats(b.session()).unwrap();
    let (tx0, rx0) = (st.tx_pkts, st.rx_pkts);
    let req = pattern(4, 1500);
    b.request(&req, 3000, 5);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 2);
    let want = pattern(RESP_SEED, 2500);
    let r = b.resp(8, 1, &want);
    assert!(b.deliver([b.ctrl(PktType::ExplCr, 0, 8)]).is_empty());
    let tx = b.deliver([r[0].clone()]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::Rfr, 0, 2, 8));
    assert_eq!(p(&tx[1]), b.exp(PktType::Rfr, 0, 3, 8));
    assert!(b.deliver([r[1].clone(), r[2].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 5, result: Ok(2500), data: want }]);
    // The session counted every packet of the RPC it sent once: N request packets and M - 1
    // RFRs (on top of what its connect sent), and every one it received: a CR and M responses.
    let st = b.rpc.session_stats(b.session()).unwrap();
    assert_eq!((st.tx_pkts - tx0, st.rx_pkts - rx0), (2 + 2, 1 + 3));
}

#[test]
fn client_rfrs_limited_by_credits() {
    let mut b = client_with(RpcConfig { session_credits: 2, ..test_config(1) });
    b.request(b"get", 4000, 1);
    b.step();
    assert_eq!(b.sent().len(), 1);
    let want = pattern(RESP_SEED, 3000);
    let r = b.resp(8, 0, &want);
    // RESP 0 returns one credit: 2 available, 2 RFRs.
    let tx = b.deliver([r[0].clone()]);
    assert_eq!(tx.iter().map(|f| p(f).pkt_num).collect::<Vec<_>>(), vec![1, 2]);
    assert!(tx.iter().all(|f| p(f).ty == PktType::Rfr));
    // Each further RESP frees one credit for the next RFR.
    let tx = b.deliver([r[1].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Rfr, 0, 3, 8));
    assert!(b.deliver([r[2].clone()]).is_empty());
    assert!(b.deliver([r[3].clone()]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Ok(3000), data: want }]);
    assert_eq!(b.credits(), 2);
}

#[test]
fn client_response_too_large() {
    let mut b = client();
    b.request(b"get", 100, 9);
    b.step();
    b.sent();
    let r = b.resp(8, 0, &pattern(RESP_SEED, 3000));
    let tx = b.deliver([r[0].clone()]);
    assert!(tx.is_empty(), "no RFR for a response that does not fit");
    assert_eq!(
        b.ctx().done,
        vec![Done { tag: 9, result: Err(RpcError::ResponseTooLarge { size: 3000, capacity: 100 }), data: vec![] }]
    );
    assert_eq!(b.credits(), 32);
    assert_eq!(b.rpc.stats().rpcs_failed, 1);
    // The rest of that response is stale.
    b.assert_dropped(r[1].clone(), DropReason::Stale);
    // A response exactly the buffer's size is fine.
    b.request(b"get", 100, 10);
    b.step();
    b.sent();
    assert!(b.deliver(b.resp(16, 0, &[7; 100])).is_empty());
    assert_eq!(b.ctx().done[1], Done { tag: 10, result: Ok(100), data: vec![7; 100] });
}

#[test]
fn client_backlog_is_fifo_and_reuses_freed_slot() {
    let mut b = client();
    for t in 0..10u64 {
        b.request(&[t as u8], 10, t);
    }
    assert_eq!(b.rpc.backlog_len(b.session()), 2);
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 8);
    for (t, f) in tx.iter().enumerate() {
        assert_eq!(p(f), b.exp(PktType::Req, 1, 0, 8 + t as u64));
        assert_eq!(data_of(f), &[t as u8]);
    }
    // Slot 3 completes: the oldest queued request (tag 8) takes it, req_num 11 + 8.
    let tx = b.deliver(b.resp(11, 0, b"r"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 1, 0, 19));
    assert_eq!(data_of(&tx[0]), &[8]);
    assert_eq!(b.ctx().done.iter().map(|d| d.tag).collect::<Vec<_>>(), vec![3]);
    let tx = b.deliver(b.resp(8, 0, b"r"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Req, 1, 0, 16));
    assert_eq!(data_of(&tx[0]), &[9]);
    assert_eq!(b.rpc.backlog_len(b.session()), 0);
}

/// A RESP 0 whose data is shorter than its msg_size announces is dropped (Truncated); it must
/// leave the slot as it was. Here it sets the response size anyway, so the retransmission
/// after the RTO also sends RFRs for a response the client has never received.
#[test]
fn client_truncated_resp0_leaves_slot_unchanged() {
    let mut b = client();
    b.request(b"get", 4000, 1);
    b.step();
    let req = b.sent();
    let f = b.raw(ErpcHdr::new(RT, 3000, b.local, PktType::Resp, 0, 8), &[1; 10]);
    b.assert_dropped(f, DropReason::Truncated);
    b.advance(2 * test_config(1).rto_ns);
    let tx = b.sent();
    assert_eq!(
        tx.iter().map(|f| p(f)).collect::<Vec<_>>(),
        vec![b.exp(PktType::Req, 3, 0, 8)],
        "only the request is retransmitted"
    );
    assert_eq!(tx, req);
}

/// `Rpc::transmit` puts what was queued outside the event loop on the wire at once.
#[test]
fn transmit_sends_queued_requests_without_an_event_loop_iteration() {
    let mut b = client();
    b.request(b"now", 64, 1);
    assert!(b.sent().is_empty(), "queued, not yet handed to the transport");
    b.rpc.transmit();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(data_of(&tx[0]), b"now");
    assert_eq!(b.ctx().done.len(), 0, "nothing received or completed");
}

#[test]
fn client_refused_request_fails_at_once_and_the_session_goes_on() {
    let mut b = client();
    b.request(b"ping", 100, 1);
    b.step();
    assert_eq!(b.sent().len(), 1);
    let r8 = b.base + 8;
    // Forged or misdirected refusals change nothing.
    b.assert_dropped(refusal(&b, r8, |x| x.token = U64::new(b.token ^ 1)), DropReason::Stale);
    b.assert_dropped(refusal(&b, r8, |x| x.client_session = U16::new(b.local + 1)), DropReason::Stale);
    b.assert_dropped(refusal(&b, r8, |x| x.server_session = U16::new(SS + 1)), DropReason::BadSm);
    b.assert_dropped(refusal(&b, r8, |x| x.err = ERR_NO_HANDLER + 1), DropReason::BadSm);
    b.assert_dropped(refusal(&b, r8 + 1, |_| {}), DropReason::Stale); // slot 1: nothing in flight
    b.assert_dropped(refusal(&b, r8 + 8, |_| {}), DropReason::Stale); // slot 0's next request
    let mut other_src = refusal(&b, r8, |_| {});
    other_src[26] ^= 1; // the IPv4 source address: not the server the body names
    b.assert_dropped(other_src, DropReason::BadSm);
    assert!(b.ctx().done.is_empty());
    // The server's refusal fails the request at once; the session stays up.
    assert!(b.deliver([refusal(&b, r8, |_| {})]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 1, result: Err(RpcError::NoHandler { req_type: RT }), data: vec![] }]);
    assert!(b.rpc.is_connected(b.session()));
    assert_eq!(b.credits(), 32);
    let st = b.rpc.stats();
    assert_eq!((st.rpcs_refused, st.rpcs_failed, st.rpcs_completed), (1, 1, 0));
    // A second copy of the refusal finds nothing to fail.
    b.assert_dropped(refusal(&b, r8, |_| {}), DropReason::Stale);
    // The slot's next request goes out and is answered.
    b.request(b"again", 100, 2);
    b.step();
    assert_eq!(p(&b.sent()[0]), b.exp(PktType::Req, 5, 0, 16));
    b.deliver(b.resp(16, 0, b"ok"));
    assert_eq!(b.ctx().done[1], Done { tag: 2, result: Ok(2), data: b"ok".to_vec() });
    assert!(b.rpc.stats().drops.total() > 0 && b.ctx().events.len() == 1, "no session event but Connected");
}

#[test]
fn client_refused_multi_pkt_request_gives_its_credits_back() {
    let mut b = client_with(RpcConfig { session_credits: 2, ..test_config(1) });
    b.request(&pattern(3, 2000), 100, 7); // 3 packets, 2 sent
    b.step();
    assert_eq!((b.sent().len(), b.credits()), (2, 0));
    assert!(b.deliver([refusal(&b, b.base + 8, |_| {})]).is_empty());
    assert_eq!(b.ctx().done, vec![Done { tag: 7, result: Err(RpcError::NoHandler { req_type: RT }), data: vec![] }]);
    assert_eq!(b.credits(), 2, "the credits of the two packets sent");
    // Nothing more of it is sent, then or later (no retransmission of a failed request).
    b.advance(100_000_000);
    b.step();
    let data: Vec<P> = b.sent().iter().filter(|f| hdr_of(f).dest_session_num != SM_SESSION_NUM).map(|f| p(f)).collect();
    assert!(data.is_empty(), "{data:?}");
}
