//! Hostile and broken peers (issue: no RPC waits forever, no stranger holds a server): forged
//! and corrupted copies of request packets, requests that never progress, half-received
//! requests, strangers filling the session table, reflection. Each test here failed on the code
//! before the fix it checks.

use crate::harness::*;

/// A corrupted (or forged) copy of a request's first packet that claims another size arrives
/// before the real one and starts a longer request. The real packet is then checked against what
/// the slot recorded and dropped: it is not taken for a duplicate and answered "still working".
#[test]
fn a_forged_first_packet_does_not_get_the_real_request_answered() {
    let mut b = server(h_echo);
    let forged = msg_frames(&PEER, &ME, b.local, PktType::Req, b.base + 8, 0, &pattern(3, 3000));
    let tx = b.deliver([forged[0].clone()]);
    assert_eq!(tx.len(), 1, "the forged packet 0 of a 3-packet request gets its credit return");
    assert_eq!(p(&tx[0]).ty, PktType::ExplCr);
    // The real one-packet request with the same request number: dropped, nothing sent.
    b.assert_dropped(b.req(8, b"real").remove(0), DropReason::BadMsgSize);
    // Its retransmissions too, however often.
    for _ in 0..3 {
        b.assert_dropped(b.req(8, b"real").remove(0), DropReason::BadMsgSize);
    }
    assert_eq!(b.ctx().handler_calls, 0);
}

/// Duplicates of an answered request are resent the stored response only if they match it.
#[test]
fn duplicates_must_match_the_recorded_request() {
    let mut b = server(h_echo);
    let first = b.deliver(b.req(8, b"abcd"));
    assert_eq!(first.len(), 1);
    // Same request number, another size: not a duplicate of this request.
    b.assert_dropped(b.req(8, b"abcdef").remove(0), DropReason::BadMsgSize);
    // Same size, another request type.
    let d = p(&b.req(8, b"abcd")[0]);
    let other_type = b.raw(ErpcHdr::new(RT + 1, 4, b.local, PktType::Req, 0, d.req_num - b.base), b"abcd");
    b.assert_dropped(other_type, DropReason::BadMsgSize);
    // An RFR naming another request type.
    let mut m = server(h_sized);
    m.rpc.ctx_mut().resp_len = 3000;
    m.deliver(m.req(8, b"x"));
    let rfr = m.raw(ErpcHdr::new(RT + 1, 0, m.local, PktType::Rfr, 1, 8), &[]);
    m.assert_dropped(rfr, DropReason::WrongType);
    // The genuine duplicate still gets the stored response.
    assert_eq!(b.deliver(b.req(8, b"abcd")), first);
}

/// A request that makes no progress fails after `request_timeout_ns` with `TimedOut` and its
/// session is reset, even though the server keeps answering "still working" to every
/// retransmission (an alive credit return is liveness, not progress).
#[test]
fn a_request_without_progress_fails_even_while_the_server_answers() {
    let cfg = RpcConfig { request_timeout_ns: 50_000_000, ..test_config(1) };
    let mut b = client_with(cfg);
    b.request(b"hello?", 64, 7);
    b.step();
    let first = b.sent();
    assert_eq!(first.len(), 1);
    let req_num = p(&first[0]).req_num;
    let alive = frame(&PEER, &ME, ErpcHdr::new(RT, 0, b.local as u16, PktType::ExplCr, 0, req_num), &[]);
    // 100 ms of simulated time: retransmissions, each answered "alive".
    for _ in 0..100 {
        b.advance(1_000_000);
        b.deliver([alive.clone()]);
        if !b.ctx().done.is_empty() {
            break;
        }
    }
    assert_eq!(b.ctx().done.len(), 1, "the RPC must not wait forever");
    assert_eq!(b.ctx().done[0].result, Err(RpcError::TimedOut));
    assert_eq!(b.ctx().done[0].tag, 7);
    let s = b.session();
    assert_eq!(b.ctx().events.last(), Some(&SessionEvent::Reset(s, ResetReason::RequestTimedOut)));
    assert_eq!(b.rpc.stats().requests_timed_out, 1);
    assert!(b.rpc.stats().retransmissions > 0, "it did retransmit meanwhile");
}

/// The scenario end to end: a forged first packet reaches the server before the client's real
/// request. The RPC fails within the bound instead of hanging, and a new session works.
#[test]
fn a_forged_packet_ahead_of_the_real_request_fails_the_rpc_in_bounded_time() {
    let cfg = RpcConfig { request_timeout_ns: 40_000_000, ..test_config(1) };
    let mut cli = Bench::new(ME, PEER, cfg, 4);
    let mut srv = Bench::new(PEER, ME, test_config(2), 4);
    srv.rpc.register_handler(RT, h_echo, HandlerMode::Foreground).unwrap();
    let s = cli.rpc.create_session(PEER).unwrap();
    pump(&mut cli, &mut srv);
    assert!(cli.rpc.is_connected(s));
    cli.local = s.0;
    cli.request(b"real request", 64, 1);
    cli.step();
    let real = cli.sent();
    let h = p(&real[0]);
    // The forgery: the same first packet, claiming a 3000-byte request.
    let forged = msg_frames(&ME, &PEER, h.dest, PktType::Req, h.req_num, 0, &pattern(9, 3000)).remove(0);
    srv.inject([forged]);
    srv.step();
    srv.sent(); // its credit return goes nowhere
    srv.inject(real);
    for _ in 0..200 {
        cli.advance(1_000_000);
        srv.advance(1_000_000);
        pump(&mut cli, &mut srv);
        if !cli.ctx().done.is_empty() {
            break;
        }
    }
    assert_eq!(cli.ctx().done.len(), 1, "the RPC must not wait forever");
    // The server no longer answers the real packet at all, so the client hears silence and
    // resets the session (before its request timeout would fail the RPC).
    assert_eq!(cli.ctx().done[0].result, Err(RpcError::SessionReset));
    assert_eq!(srv.ctx().handler_calls, 0, "the forged request never completed, the real one was refused");
    // A new session has a new token, hence new request numbers: it works.
    let s2 = cli.rpc.create_session(PEER).unwrap();
    pump(&mut cli, &mut srv);
    assert!(cli.rpc.is_connected(s2));
    cli.local = s2.0;
    cli.request(b"again", 64, 2);
    pump(&mut cli, &mut srv);
    assert_eq!(cli.ctx().done[1].result, Ok(5));
    assert_eq!(cli.ctx().done[1].data, b"again");
}

/// A client that sends the first packet of a large request and goes silent loses its session
/// and the buffer sized by its claimed `msg_size` after `server_idle_timeout_ns`.
#[test]
fn a_silent_half_received_request_frees_its_session_and_buffer() {
    let mut b = server(h_echo);
    let base = b.rpc.heap_stats().live_buffers;
    let big = msg_frames(&PEER, &ME, b.local, PktType::Req, b.base + 8, 0, &pattern(4, 200_000));
    b.deliver([big[0].clone()]);
    assert_eq!(b.rpc.heap_stats().live_buffers, base + 1, "the 200 kB request buffer");
    let idle = test_config(1).server_idle_timeout_ns;
    for _ in 0..4 {
        b.advance(idle / 2);
    }
    assert_eq!(b.rpc.num_active_sessions(), 0, "the silent session is freed");
    assert!(b.rpc.heap_stats().live_buffers < base, "with everything it held");
    // A handle of a request still in its handler goes stale the same way.
    let mut h = server(h_hold);
    h.deliver(h.req(8, b"held"));
    let held = h.ctx().held[0];
    for _ in 0..4 {
        h.advance(idle / 2);
    }
    assert_eq!(h.rpc.num_active_sessions(), 0);
    let m = h.rpc.alloc_msg_buffer(4).unwrap();
    assert_eq!(h.rpc.enqueue_response(held, m).unwrap_err().kind, RespondErrorKind::InvalidHandle);
}

/// An endpoint that serves no request type accepts no sessions.
#[test]
fn a_pure_client_refuses_inbound_sessions() {
    let mut b = Bench::new(ME, PEER, test_config(1), 4);
    let tx = b.connect_req(sm_body(0, TOKEN, CS, 0, PEER, ME));
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::ConnectResp as u8);
    assert_eq!(body.err, 6, "Refused");
    assert_eq!(b.rpc.num_active_sessions(), 0);
    assert_eq!(b.rpc.stats().sessions_refused, 1);
}

fn no_tens(a: &EndpointAddr) -> bool {
    a.ipv4[0] != 10
}

/// The application's accept switch and address filter.
#[test]
fn the_accept_switch_and_the_filter_refuse_new_sessions() {
    let mut b = server(h_echo);
    b.rpc.set_accept_sessions(false);
    let tx = b.connect_req(sm_body(0, 1, 1, 0, PEER, ME));
    assert_eq!(sm_of(&tx[0]).1.err, 6);
    assert_eq!(b.rpc.num_active_sessions(), 1, "the existing session stays");
    b.rpc.set_accept_sessions(true);
    b.rpc.set_session_filter(Some(no_tens));
    let tx = b.connect_req(sm_body(0, 2, 2, 0, PEER, ME));
    assert_eq!(sm_of(&tx[0]).1.err, 6, "10.0.0.2 is filtered out");
    b.rpc.set_session_filter(None);
    let tx = b.connect_req(sm_body(0, 3, 3, 0, PEER, ME));
    assert_eq!(sm_of(&tx[0]).1.err, 0);
    assert_eq!(b.rpc.num_active_sessions(), 2);
}

/// One client address may hold at most `max_sessions_per_client` server sessions; other
/// addresses are not affected, and a freed session makes room again.
#[test]
fn the_per_address_cap_refuses_the_next_session() {
    let cfg = RpcConfig { max_sessions_per_client: 3, ..test_config(1) };
    let mut b = server_with(h_echo, cfg, 16);
    for (t, cs) in [(2u64, 2u16), (3, 3)] {
        let tx = b.connect_req(sm_body(0, t, cs, 0, PEER, ME));
        assert_eq!(sm_of(&tx[0]).1.err, 0);
    }
    let tx = b.connect_req(sm_body(0, 4, 4, 0, PEER, ME));
    assert_eq!(sm_of(&tx[0]).1.err, 7, "TooManySessionsFromClient");
    assert_eq!(b.rpc.num_active_sessions(), 3);
    // Another address (same port) is its own count.
    let other = EndpointAddr { mac: [2, 0, 0, 0, 0, 3], ipv4: [10, 0, 0, 3], udp_port: PEER.udp_port };
    let body = sm_body(0, 5, 5, 0, other, ME);
    b.check_l2l3 = false;
    let tx = b.deliver([sm_frame(&other, &ME, SmPktType::ConnectReq, &body)]);
    let cookie = cookie_of(&tx[0]);
    let tx = b.deliver([sm_frame_cookie(&other, &ME, SmPktType::ConnectReq, &body, cookie)]);
    b.check_l2l3 = true;
    assert_eq!(sm_of(&tx[0]).1.err, 0);
    // A disconnect frees a place.
    b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &sm_body(0, TOKEN, CS, b.local, PEER, ME))]);
    let tx = b.connect_req(sm_body(0, 6, 6, 0, PEER, ME));
    assert_eq!(sm_of(&tx[0]).1.err, 0);
}

/// 200 connect requests from 200 source ports without a cookie (a spoofing stranger never
/// sees the cookies) create no session and get answers no larger than themselves; a real
/// client connects afterwards.
#[test]
fn strangers_without_cookies_get_no_state() {
    let mut b = Bench::new(ME, PEER, test_config(1), 8);
    b.rpc.register_handler(RT, h_echo, HandlerMode::Foreground).unwrap();
    b.check_l2l3 = false;
    let mut answered = 0;
    for port in 0..200u16 {
        let from = EndpointAddr { udp_port: 20_000 + port, ..PEER };
        let req = sm_frame(&from, &ME, SmPktType::ConnectReq, &sm_body(0, port as u64, 1, 0, from, ME));
        for f in b.deliver([req.clone()]) {
            assert!(f.len() <= req.len(), "an answer larger than the request");
            assert_eq!(sm_of(&f).0, SmPktType::ConnectRetry as u8);
            answered += 1;
        }
    }
    assert_eq!(answered, 200);
    assert_eq!(b.rpc.num_active_sessions(), 0, "no state for unverified addresses");
    assert_eq!(b.rpc.stats().sm_cookies_sent, 200);
    b.check_l2l3 = true;
    let tx = b.connect_req(sm_body(0, TOKEN, CS, 0, PEER, ME));
    assert_eq!(sm_of(&tx[0]).1.err, 0);
}

/// A cookie is bound to what the request names and expires: another token, client session or
/// port, or a cookie two epochs old, gets a new `ConnectRetry` instead of a session.
#[test]
fn cookies_are_bound_to_the_request_and_expire() {
    let mut b = Bench::new(ME, PEER, test_config(1), 8);
    b.rpc.register_handler(RT, h_echo, HandlerMode::Foreground).unwrap();
    let body = sm_body(0, TOKEN, CS, 0, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &body)]);
    let cookie = cookie_of(&tx[0]);
    for other in [sm_body(0, TOKEN ^ 1, CS, 0, PEER, ME), sm_body(0, TOKEN, CS + 1, 0, PEER, ME)] {
        let tx = b.deliver([sm_frame_cookie(&PEER, &ME, SmPktType::ConnectReq, &other, cookie)]);
        assert_eq!(sm_of(&tx[0]).0, SmPktType::ConnectRetry as u8, "a cookie is not transferable");
    }
    let tx = b.deliver([sm_frame_cookie(&PEER, &ME, SmPktType::ConnectReq, &body, cookie ^ 1)]);
    assert_eq!(sm_of(&tx[0]).0, SmPktType::ConnectRetry as u8, "a wrong cookie");
    // Still valid in the next epoch (8.6 s), not after two.
    b.advance(9_000_000_000);
    let tx = b.deliver([sm_frame_cookie(&PEER, &ME, SmPktType::ConnectReq, &body, cookie)]);
    assert_eq!(sm_of(&tx[0]).0, SmPktType::ConnectResp as u8, "valid in the next epoch");
    let mut c = Bench::new(ME, PEER, test_config(1), 8);
    c.rpc.register_handler(RT, h_echo, HandlerMode::Foreground).unwrap();
    let tx = c.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &body)]);
    let old = cookie_of(&tx[0]);
    c.advance(18_000_000_000);
    let tx = c.deliver([sm_frame_cookie(&PEER, &ME, SmPktType::ConnectReq, &body, old)]);
    assert_eq!(sm_of(&tx[0]).0, SmPktType::ConnectRetry as u8, "expired after two epochs");
    assert_eq!(c.rpc.num_active_sessions(), 0);
}

/// The client side of the cookie: a `ConnectRetry` makes it repeat its request with the cookie
/// at once; a retry for another token is ignored.
#[test]
fn a_client_repeats_its_connect_request_with_the_cookie() {
    let mut b = Bench::new(ME, PEER, test_config(1), 4);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let (_, body) = sm_of(&b.sent()[0]);
    let stranger = SmBody { token: U64::new(body.token.get() ^ 1), ..body };
    assert!(b.deliver([sm_frame_cookie(&PEER, &ME, SmPktType::ConnectRetry, &stranger, 77)]).is_empty());
    let tx = b.deliver([sm_frame_cookie(&PEER, &ME, SmPktType::ConnectRetry, &body, 0x1234)]);
    assert_eq!(tx.len(), 1);
    assert_eq!(sm_of(&tx[0]), (SmPktType::ConnectReq as u8, body));
    assert_eq!(cookie_of(&tx[0]), 0x1234);
    let resp = SmBody { server_session: U16::new(SS), ..body };
    b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp)]);
    assert!(b.rpc.is_connected(s));
}

/// A flood of duplicates of an answered request is answered at most `session_credits` times per
/// RTO, with no flush per duplicate; the rest is dropped and counted. The next window answers
/// again.
#[test]
fn duplicates_are_answered_at_a_bounded_rate_without_flushes() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 900;
    let first = b.deliver(b.req(8, b"q"));
    let f0 = b.flushes();
    let mut sent = 0;
    for _ in 0..10 {
        let dups: Vec<_> = (0..32).map(|_| b.req(8, b"q").remove(0)).collect();
        sent += b.deliver(dups).len();
    }
    let credits = test_config(1).session_credits as usize;
    assert_eq!(sent, credits, "at most session_credits resends per RTO");
    assert_eq!(b.rpc.stats().drops.get(DropReason::DupRateLimited), (320 - credits) as u64);
    assert_eq!(b.flushes(), f0, "no flush per duplicate");
    b.advance(test_config(1).rto_ns);
    assert_eq!(b.deliver(b.req(8, b"q")), first, "a new window answers again");
}
