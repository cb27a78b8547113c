//! Server: responses and requests-for-response.

use crate::harness::*;

#[test]
fn server_multi_pkt_response_rfrs() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 3000; // 968 * 3 + 96: 4 packets
    let want = pattern(RESP_SEED, 3000);
    let tx = b.deliver(b.req(8, b"x"));
    assert_eq!(tx.len(), 1, "only RESP 0 unasked");
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, 0, 8));
    assert_eq!(data_of(&tx[0]), &want[..DPP]);
    // RFR 2 before RFR 1: out of order.
    b.assert_dropped(b.ctrl(PktType::Rfr, 2, 8), DropReason::OutOfOrder);
    // RFR pkt_num k asks for RESP index k (N = 1), with the same pkt_num.
    for k in 1..=2u16 {
        let tx = b.deliver([b.ctrl(PktType::Rfr, k, 8)]);
        assert_eq!(tx.len(), 1);
        assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, k, 8));
        let lo = k as usize * DPP;
        assert_eq!(data_of(&tx[0]), &want[lo..lo + DPP]);
    }
    assert_eq!(b.rpc.stats().dup_responses, 0);
    assert_eq!(b.flushes(), 0);
    // Duplicate RFR 1: RESP 1 again, counted, not flushed.
    let tx = b.deliver([b.ctrl(PktType::Rfr, 1, 8)]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, 1, 8));
    assert_eq!(data_of(&tx[0]), &want[DPP..2 * DPP]);
    assert_eq!(b.rpc.stats().dup_responses, 1);
    assert_eq!(b.flushes(), 0);
    // Last packet: 96 bytes.
    let tx = b.deliver([b.ctrl(PktType::Rfr, 3, 8)]);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 3000, 3, 8));
    assert_eq!(data_of(&tx[0]), &want[3 * DPP..]);
    // Beyond the response; for RESP 0's position (pkt_num N-1 = 0, not an RFR's); for another request.
    b.assert_dropped(b.ctrl(PktType::Rfr, 4, 8), DropReason::WrongType);
    b.assert_dropped(b.ctrl(PktType::Rfr, 0, 8), DropReason::WrongType);
    b.assert_dropped(b.ctrl(PktType::Rfr, 1, 16), DropReason::Stale);
    assert_eq!(b.ctx().handler_calls, 1);
}

#[test]
fn server_multi_pkt_request_and_response_numbering() {
    // N = 2 request packets, M = 3 response packets: RESP 0 has pkt_num 1, RFRs 2 and 3 get
    // RESP 1 and 2 with the same pkt_nums.
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 2000;
    let want = pattern(RESP_SEED, 2000);
    let req = pattern(9, 1000);
    let tx = b.deliver(b.req(9, &req));
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 9));
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 2000, 1, 9));
    assert_eq!(data_of(&tx[1]), &want[..DPP]);
    // An RFR with pkt_num 1 is RESP 0's position: not an RFR.
    b.assert_dropped(b.ctrl(PktType::Rfr, 1, 9), DropReason::WrongType);
    let tx = b.deliver([b.ctrl(PktType::Rfr, 2, 9), b.ctrl(PktType::Rfr, 3, 9)]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 2000, 2, 9));
    assert_eq!(data_of(&tx[0]), &want[DPP..2 * DPP]);
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 2000, 3, 9));
    assert_eq!(data_of(&tx[1]), &want[2 * DPP..]);
    b.assert_dropped(b.ctrl(PktType::Rfr, 4, 9), DropReason::WrongType);
}

#[test]
fn server_rfr_before_response_dropped() {
    let mut b = server(h_hold);
    b.deliver(b.req(8, b"x"));
    b.assert_dropped(b.ctrl(PktType::Rfr, 1, 8), DropReason::Stale);
}

/// A duplicate of the last request and the slot's next request arrive in the same RX burst
/// (the client retransmitted, then got the response and moved on). The duplicate's response is
/// queued for TX from the stored response buffer; the next request then frees that buffer
/// (`bury`) and the handler refills it, all before the batch reaches the transport. The
/// transport contract says queued bytes stay unchanged until `tx_flush`.
#[test]
fn server_dup_and_next_request_in_one_burst() {
    let mut b = server(h_echo);
    let first = b.deliver(b.req(8, b"AAAA"));
    assert_eq!(first.len(), 1);
    let mut burst = b.req(8, b"AAAA");
    burst.extend(b.req(16, b"BBBB"));
    let tx = b.deliver(burst);
    assert_eq!(b.ctx().handler_calls, 2);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 4, 0, 16));
    assert_eq!(data_of(&tx[1]), b"BBBB");
    assert_eq!(tx[0], first[0], "the duplicate's response must go out as it was stored");
}

/// A preallocated response that cannot get a buffer is refused as out of memory (not as too
/// large), and the request stays pending: once memory is back, the same handle answers it.
#[test]
fn prealloc_response_without_memory_is_out_of_memory_and_keeps_the_request() {
    let mut b = server(h_hold);
    // Slot 1 has no cached response buffer (only slot 0 gets one at connect).
    b.deliver(b.req(9, b"needs a buffer"));
    let h = b.ctx().held[0];
    let mut hoard = vec![];
    while let Ok(m) = b.rpc.alloc_msg_buffer(DPP) {
        hoard.push(m);
    }
    let e = b.rpc.enqueue_response_prealloc(h, 4).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::OutOfMemory);
    assert!(e.resp.is_none());
    assert_eq!(b.rpc.request(&h), Some(&b"needs a buffer"[..]), "the request is still pending");
    for m in hoard {
        b.rpc.free_msg_buffer(m).unwrap();
    }
    let (_, resp) = b.rpc.request_and_prealloc_response(&h).unwrap();
    resp[..4].copy_from_slice(b"done");
    b.rpc.enqueue_response_prealloc(h, 4).unwrap();
    b.step();
    let tx = b.sent();
    assert_eq!(tx.iter().map(|f| data_of(f)).collect::<Vec<_>>(), vec![b"done"]);
}

/// `respond_prealloc_with` answers from the slot's buffer in one call: the filled bytes go out,
/// a length beyond the buffer is refused with the request still pending, and the handle is
/// stale afterwards.
#[test]
fn respond_prealloc_with_answers_once_and_refuses_too_large() {
    let mut b = server(h_hold);
    b.deliver(b.req(8, b"ping"));
    let h = b.ctx().held[0];
    let e = b.rpc.respond_prealloc_with(h, |_, resp| resp.len() + 1).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::TooLarge);
    assert_eq!(b.rpc.request(&h), Some(&b"ping"[..]), "the request is still pending");
    b.rpc
        .respond_prealloc_with(h, |req, resp| {
            resp[..4].copy_from_slice(req);
            resp[..4].reverse();
            4
        })
        .unwrap();
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 4, 0, 8));
    assert_eq!(data_of(&tx[0]), b"gnip");
    let e = b.rpc.respond_prealloc_with(h, |_, _| 1).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::InvalidHandle);
}
