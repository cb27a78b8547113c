//! Server: receiving requests, at-most-once, duplicates, request buffers.

use crate::harness::*;

#[test]
fn server_single_pkt_request_in_order() {
    let mut b = server(h_echo);
    let tx = b.deliver(b.req(8, b"hello"));
    assert_eq!(b.ctx().handler_calls, 1);
    assert_eq!(b.ctx().requests, vec![b"hello".to_vec()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 8));
    assert_eq!(data_of(&tx[0]), b"hello");
    assert_eq!(b.rpc.stats().requests_handled, 1);
    assert_eq!(b.rpc.stats().drops.total(), 0);
    // A single-packet request needs no credit return, and nothing is flushed.
    assert_eq!(b.flushes(), 0);
    // Another slot (req_num 9 = slot 1) is independent.
    let tx = b.deliver(b.req(9, b"second"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 6, 0, 9));
    assert_eq!(data_of(&tx[0]), b"second");
    // And the next request on slot 0 (req_num 16).
    let tx = b.deliver(b.req(16, b"third"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 16));
    assert_eq!(b.ctx().handler_calls, 3);
}

#[test]
fn server_one_pkt_requests_share_pooled_buffers() {
    // One-packet requests answered from their handlers hand their request buffer to the next
    // request, on any slot: no request buffer stays with a slot (a cold cache line per request
    // with thousands of sessions).
    let mut b = server(h_echo);
    let tx = b.deliver(b.req(8, b"first"));
    assert_eq!(data_of(&tx[0]), b"first");
    let live = b.rpc.heap_stats().live_buffers;
    for (k, req_num) in (9..16).enumerate() {
        let data = format!("request {k}");
        let tx = b.deliver(b.req(req_num, data.as_bytes()));
        assert_eq!(data_of(&tx[0]), data.as_bytes(), "the handler saw the right bytes");
    }
    assert_eq!(b.ctx().requests.len(), 8);
    // Seven more slots hold their stored response; none holds a request buffer.
    assert_eq!(b.rpc.heap_stats().live_buffers, live + 7);
    // The next round on the same slots allocates nothing.
    for req_num in 16..24 {
        b.deliver(b.req(req_num, b"again"));
    }
    assert_eq!(b.rpc.heap_stats().live_buffers, live + 7);
    assert_eq!(b.ctx().handler_calls, 16);
}

#[test]
fn server_held_requests_keep_their_own_buffers() {
    // A request whose handler returns without answering keeps its buffer until it is answered:
    // later requests, which take buffers from the same pool, do not disturb it.
    let mut b = server(h_hold);
    b.deliver(b.req(8, b"held zero"));
    b.deliver(b.req(9, b"held one"));
    let held = b.ctx().held.clone();
    assert_eq!(b.rpc.request(&held[0]), Some(&b"held zero"[..]));
    assert_eq!(b.rpc.request(&held[1]), Some(&b"held one"[..]));
    // Answering the first returns its buffer to the pool; the next request gets it.
    respond_held(&mut b, held[0], b"r0");
    assert_eq!(b.rpc.request(&held[0]), None, "answered: the handle is stale");
    let tx = b.deliver(b.req(10, b"third"));
    assert_eq!(tx.iter().map(|f| data_of(f)).collect::<Vec<_>>(), vec![b"r0"]);
    let third = b.ctx().held[2];
    assert_eq!(b.rpc.request(&third), Some(&b"third"[..]));
    assert_eq!(b.rpc.request(&held[1]), Some(&b"held one"[..]));
    respond_held(&mut b, held[1], b"r1");
    respond_held(&mut b, third, b"r2");
    b.step();
    let tx = b.sent();
    assert_eq!(tx.iter().map(|f| data_of(f)).collect::<Vec<_>>(), vec![b"r1", b"r2"]);
}

#[test]
fn server_multi_pkt_request_buffer_is_freed_not_pooled() {
    // A multi-packet request is reassembled in a buffer of its own size, freed once answered.
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 4;
    b.deliver(b.req(8, b"small"));
    let live = b.rpc.heap_stats().live_buffers;
    let data = pattern(7, 2000); // 968 + 968 + 64: 3 packets
    let tx = b.deliver(b.req(9, &data));
    assert_eq!(b.ctx().requests[1], data, "reassembled byte for byte");
    assert_eq!(p(tx.last().unwrap()), b.exp(PktType::Resp, 4, 2, 9));
    // Slot 1 holds its stored response, nothing else.
    assert_eq!(b.rpc.heap_stats().live_buffers, live + 1);
}

#[test]
fn server_empty_request_and_response() {
    let mut b = server(h_echo);
    let tx = b.deliver(b.req(8, b""));
    assert_eq!(b.ctx().requests, vec![Vec::<u8>::new()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 0, 0, 8));
    assert_eq!(tx[0].len(), PKT_HDR_LEN);
}

#[test]
fn server_duplicate_after_response_resends_without_handler() {
    let mut b = server(h_echo);
    let first = b.deliver(b.req(8, b"abc"));
    assert_eq!(first.len(), 1);
    let flushes = b.flushes();
    let tx = b.deliver(b.req(8, b"abc"));
    assert_eq!(b.ctx().handler_calls, 1, "at-most-once: handler not run again");
    assert_eq!(tx, first, "the stored response, byte for byte");
    assert_eq!(b.rpc.stats().dup_responses, 1);
    // No flush: the stored response is freed only once the device has read the resent packet.
    assert_eq!(b.flushes(), flushes, "no tx_flush for a resent response");
    assert_eq!(b.rpc.stats().tx_flushes, 0);
    // Again: same answer, counters move on.
    let tx = b.deliver(b.req(8, b"abc"));
    assert_eq!(tx, first);
    assert_eq!(b.rpc.stats().dup_responses, 2);
    assert_eq!(b.flushes(), flushes);
    assert_eq!(b.rpc.stats().drops.total(), 0);
}

#[test]
fn server_duplicates_in_one_burst_need_no_flush() {
    let mut b = server(h_echo);
    let first = b.deliver(b.req(8, b"abc"));
    let mut dups = b.req(8, b"abc");
    dups.extend(b.req(8, b"abc"));
    let tx = b.deliver(dups);
    assert_eq!(tx, vec![first[0].clone(), first[0].clone()]);
    assert_eq!(b.rpc.stats().dup_responses, 2);
    // Unlike the original, no flush per resend: a later packet of the same burst may be the
    // slot's next request, but that frees the stored response only once the device has read
    // it (server_dup_and_next_request_in_one_burst).
    assert_eq!(b.flushes(), 0, "no tx_flush per resent response");
}

#[test]
fn server_duplicate_while_handler_pending_sends_alive_cr() {
    let mut b = server(h_hold);
    assert!(b.deliver(b.req(8, b"slow")).is_empty(), "handler has not responded: nothing to send");
    assert_eq!(b.ctx().handler_calls, 1);
    // Duplicate of the last (only) request packet: ExplCr with pkt_num = 0, no flush.
    let tx = b.deliver(b.req(8, b"slow"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 8));
    assert_eq!(tx[0].len(), PKT_HDR_LEN);
    assert_eq!(b.ctx().handler_calls, 1);
    assert_eq!(b.rpc.stats().dup_responses, 0);
    assert_eq!(b.flushes(), 0);
    // The next request on the busy slot is refused: the client must wait for the response.
    b.assert_dropped(b.req(16, b"next").remove(0), DropReason::Stale);

    // Respond later through the stored handle.
    let h = b.ctx().held[0];
    assert_eq!(b.rpc.request(&h), Some(&b"slow"[..]));
    respond_held(&mut b, h, b"done!");
    assert!(b.sent().is_empty(), "responses go out with the event loop's TX batch");
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 8));
    assert_eq!(data_of(&tx[0]), b"done!");
    // The handle is spent.
    let again = b.rpc.alloc_msg_buffer(1).unwrap();
    let e = b.rpc.enqueue_response(h, again).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::InvalidHandle);
    assert!(e.resp.is_some(), "buffer handed back");
    assert_eq!(b.rpc.request(&h), None);
    // Now a duplicate gets the stored response.
    let dup = b.deliver(b.req(8, b"slow"));
    assert_eq!(dup, tx);
    assert_eq!(b.rpc.stats().dup_responses, 1);
}

#[test]
fn server_duplicate_last_pkt_of_multi_pkt_request_while_pending() {
    let mut b = server(h_hold);
    let data = pattern(1, 1500); // 2 packets
    let tx = b.deliver(b.req(9, &data));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 9));
    assert_eq!(b.ctx().requests, vec![data.clone()]);
    let frames = b.req(9, &data);
    // Duplicate of the last packet: "alive" CR with pkt_num 1.
    let tx = b.deliver([frames[1].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 1, 9));
    // Duplicate of packet 0: its CR again.
    let tx = b.deliver([frames[0].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 9));
    assert_eq!(b.ctx().handler_calls, 1);
    // Respond; RESP 0 has pkt_num N-1 = 1.
    let h = b.ctx().held[0];
    respond_held(&mut b, h, b"ok");
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 2, 1, 9));
    // Duplicate of the last packet now resends RESP 0; of packet 0, its CR.
    let tx = b.deliver([frames[1].clone(), frames[0].clone()]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 2, 1, 9));
    assert_eq!(p(&tx[1]), b.exp(PktType::ExplCr, 0, 0, 9));
}

#[test]
fn server_stale_request_dropped() {
    let mut b = server(h_echo);
    b.deliver(b.req(8, b"one"));
    b.deliver(b.req(16, b"two"));
    assert_eq!(b.ctx().handler_calls, 2);
    // req_num 8 < current 16 on slot 0.
    b.assert_dropped(b.req(8, b"one").remove(0), DropReason::Stale);
    // A request number from the future (skips 24) is not the next one either.
    b.assert_dropped(b.req(32, b"far").remove(0), DropReason::Stale);
    assert_eq!(b.rpc.session_stats(SessionId(b.local)).unwrap().drops, 2);
    // The slot still works.
    let tx = b.deliver(b.req(24, b"three"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 5, 0, 24));
}

#[test]
fn server_refuses_a_request_type_without_handler() {
    let mut b = server(h_echo);
    let f = b.raw(ErpcHdr::new(RT + 1, 3, b.local, PktType::Req, 0, 8), b"abc");
    let tx = b.deliver([f.clone()]);
    // One refusal, on the session, naming the request; no handler ran.
    assert_eq!(tx.len(), 1);
    check_l2l3(&tx[0], &ME, &PEER);
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::Refused as u8);
    assert_eq!(cookie_of(&tx[0]), b.base + 8, "the refused request's number");
    assert_eq!(body, sm_body(ERR_NO_HANDLER, TOKEN, CS, b.local, PEER, ME));
    assert_eq!(b.ctx().handler_calls, 0);
    let st = b.rpc.stats();
    assert_eq!((st.requests_refused, st.drops.no_handler, st.requests_handled), (1, 1, 0));
    // A copy of it (its refusal was lost): refused again, still one refused request.
    let tx = b.deliver([f]);
    assert_eq!(tx.len(), 1);
    assert_eq!((sm_of(&tx[0]).0, cookie_of(&tx[0])), (SmPktType::Refused as u8, b.base + 8));
    assert_eq!((b.rpc.stats().requests_refused, b.rpc.stats().drops.no_handler), (1, 2));
    // A copy with another type or size is a forged one: never answered.
    b.assert_dropped(b.raw(ErpcHdr::new(RT, 3, b.local, PktType::Req, 0, 8), b"abc"), DropReason::BadMsgSize);
    b.assert_dropped(b.raw(ErpcHdr::new(RT + 1, 4, b.local, PktType::Req, 0, 8), b"abcd"), DropReason::BadMsgSize);
    // The slot moved on to the refused request: the client's next one on it (16) is served.
    let tx = b.deliver(b.req(16, b"next"));
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 4, 0, 16));
    assert_eq!(data_of(&tx[0]), b"next");
}

#[test]
fn server_refuses_a_multi_pkt_request_once_per_first_packet() {
    let mut b = server(h_echo);
    let data = pattern(9, 2000); // 3 packets
    let frames: Vec<Vec<u8>> = data
        .chunks(DPP)
        .enumerate()
        .map(|(k, c)| b.raw(ErpcHdr::new(RT + 2, 2000, b.local, PktType::Req, k as u16, 9), c))
        .collect();
    let tx = b.deliver([frames[0].clone()]);
    assert_eq!((tx.len(), sm_of(&tx[0]).0, cookie_of(&tx[0])), (1, SmPktType::Refused as u8, b.base + 9));
    // Later packets that were on their way are dropped unanswered (no credit return: the
    // request is over), and nothing was allocated for them.
    let live = b.rpc.heap_stats().live_buffers;
    b.assert_dropped(frames[1].clone(), DropReason::NoHandler);
    b.assert_dropped(frames[2].clone(), DropReason::NoHandler);
    assert_eq!(b.rpc.heap_stats().live_buffers, live);
    // A client resending the first packet over and over gets at most as many refusals per RTO
    // as duplicates get answers: no amplification.
    let before = b.rpc.stats().drops;
    let tx = b.deliver(vec![frames[0].clone(); 100]);
    let limit = b.rpc.config().session_credits as usize;
    assert!(!tx.is_empty() && tx.len() <= limit, "{} refusals for 100 copies (limit {limit})", tx.len());
    assert_eq!(b.rpc.stats().requests_refused, 1);
    // Each copy is one drop: refused again, or over the duplicates' limit.
    let after = b.rpc.stats().drops;
    assert_eq!(after.no_handler - before.no_handler, tx.len() as u64);
    assert_eq!(after.total() - before.total(), 100);
}

#[test]
fn server_multi_pkt_request() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 10;
    let data = pattern(5, 2500); // 968 + 968 + 564: 3 packets
    let f = b.req(8, &data);
    assert_eq!(f.len(), 3);
    // Packet 1 of a request not begun: out of order.
    b.assert_dropped(f[1].clone(), DropReason::OutOfOrder);
    // Packet 0: CR 0.
    let tx = b.deliver([f[0].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 8));
    // Packet 2 (skipping 1): dropped, no CR.
    b.assert_dropped(f[2].clone(), DropReason::OutOfOrder);
    // Duplicate of packet 0: its CR again.
    let tx = b.deliver([f[0].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 0, 8));
    // Packet 1: CR 1, still no handler.
    let tx = b.deliver([f[1].clone()]);
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 1, 8));
    assert_eq!(b.ctx().handler_calls, 0);
    // Packet 2: handler, RESP 0 with pkt_num N-1 = 2.
    let tx = b.deliver([f[2].clone()]);
    assert_eq!(b.ctx().handler_calls, 1);
    assert_eq!(b.ctx().requests, vec![data.clone()], "request reassembled byte for byte");
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]), b.exp(PktType::Resp, 10, 2, 8));
    assert_eq!(data_of(&tx[0]), &pattern(RESP_SEED, 10)[..]);
    // Duplicate of packet 1 after the response: CR 1; of packet 2: RESP 0.
    let tx = b.deliver([f[1].clone(), f[2].clone()]);
    assert_eq!(tx.len(), 2);
    assert_eq!(p(&tx[0]), b.exp(PktType::ExplCr, 0, 1, 8));
    assert_eq!(p(&tx[1]), b.exp(PktType::Resp, 10, 2, 8));
    assert_eq!(b.ctx().handler_calls, 1);
}

#[test]
fn server_multi_pkt_request_inconsistent_msg_size_dropped() {
    let mut b = server(h_sized);
    let data = pattern(5, 2500);
    let f = b.req(8, &data);
    b.deliver([f[0].clone()]);
    // Packet 1 announcing another size than packet 0.
    let mut bad = b.req(8, &pattern(5, 2400))[1].clone();
    assert_eq!(p(&bad).pkt_num, 1);
    b.assert_dropped(bad.clone(), DropReason::BadMsgSize);
    // pkt_num beyond the message's packets.
    bad = b.raw(ErpcHdr::new(RT, 2500, b.local, PktType::Req, 3, 8), &[0; 100]);
    b.assert_dropped(bad, DropReason::BadMsgSize);
}
