//! Session management: connect, disconnect, pings, refusals.

use crate::harness::*;
use erpc_dataplane::error::SessionError;

#[test]
fn sm_connect_req_frame_and_connected_event() {
    // client_with() checks the ConnectReq and the Connected event; here the session state.
    let b = client();
    let s = b.session();
    assert_eq!(b.rpc.session_state(s), SessionState::Connected);
    assert_eq!(b.rpc.session(s).unwrap().peer(), PEER);
    assert_eq!(b.rpc.num_active_sessions(), 1);
    assert_eq!(b.rpc.stats().sm_pkts_tx, 1);
    assert_eq!(b.rpc.stats().sm_pkts_rx, 1);
}

#[test]
fn sm_duplicate_connect_req_same_session() {
    let mut b = server(h_echo);
    assert_eq!(b.rpc.num_active_sessions(), 1);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, TOKEN, CS, 0, PEER, ME))]);
    assert_eq!(tx.len(), 1);
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::ConnectResp as u8);
    assert_eq!((body.err, body.server_session.get()), (0, b.local), "same server session");
    assert_eq!(b.rpc.num_active_sessions(), 1, "no second session");
    // Same token from another client session number: a different connection.
    let tx = b.connect_req(sm_body(0, TOKEN, CS + 1, 0, PEER, ME));
    let (_, body) = sm_of(&tx[0]);
    assert_eq!(body.err, 0);
    assert_ne!(body.server_session.get(), b.local);
    assert_eq!(b.rpc.num_active_sessions(), 2);
}

#[test]
fn sm_forged_sender_is_not_answered() {
    // A connect or disconnect request whose body names a client other than the frame's sender
    // would make the endpoint send its reply to a third party (a reflector): dropped, not answered.
    let mut b = server(h_echo);
    let victim = EndpointAddr { mac: [2, 0, 0, 0, 0, 9], ipv4: [10, 0, 0, 9], udp_port: 4000 };
    let before = b.rpc.num_active_sessions();
    for kind in [SmPktType::ConnectReq, SmPktType::DisconnectReq] {
        let f = sm_frame(&PEER, &ME, kind, &sm_body(0, TOKEN ^ 1, CS, 0, victim, ME));
        b.assert_dropped(f, DropReason::BadSm);
    }
    assert_eq!(b.rpc.num_active_sessions(), before);
}

#[test]
fn sm_connect_resp_naming_the_sm_session_is_refused() {
    // A (misbehaving) server that answers with session number 0xFFFF would make our data packets
    // look like session-management frames: the response is dropped, the session keeps connecting.
    let mut b = client();
    let me = b.rpc.local_addr();
    let s = b.rpc.create_session(PEER).unwrap();
    let req = b.deliver([]);
    let (_, body) = sm_of(req.last().unwrap());
    let resp =
        sm_frame(&PEER, &me, SmPktType::ConnectResp, &sm_body(0, body.token.get(), s.0, SM_SESSION_NUM, me, PEER));
    b.assert_dropped(resp, DropReason::BadSm);
    assert_eq!(b.rpc.session_state(s), SessionState::ConnectInProgress);
}

#[test]
fn sm_idle_client_pings_and_resets_when_server_lost_the_session() {
    let mut b = client();
    let s = b.session();
    let cfg = b.rpc.config().keepalive_ns;
    // Idle and silent past the keepalive interval: a ping goes out.
    b.advance(cfg + 1_000_000);
    let tx = b.sent();
    let pings: Vec<_> = tx.iter().map(|f| sm_of(f)).filter(|(k, _)| *k == SmPktType::Ping as u8).collect();
    assert_eq!(pings.len(), 1, "one ping");
    let (_, body) = pings[0];
    assert_eq!((body.client_session.get(), body.server_session.get()), (s.0, SS));
    // An answer keeps the session; "unknown session" resets it.
    b.deliver([sm_frame(&PEER, &ME, SmPktType::PingResp, &body)]);
    assert!(b.rpc.is_connected(s));
    let lost = SmBody { err: erpc_dataplane::sm::ERR_UNKNOWN_SESSION, ..body };
    b.deliver([sm_frame(&PEER, &ME, SmPktType::PingResp, &lost)]);
    assert!(!b.rpc.is_connected(s));
    assert!(b.ctx().events.contains(&SessionEvent::Reset(s, ResetReason::PeerLostSession)));
}

#[test]
fn sm_server_answers_pings() {
    let mut b = server(h_echo);
    let ping = sm_body(0, TOKEN, CS, b.local, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::Ping, &ping)]);
    let (k, body) = sm_of(&tx[0]);
    assert_eq!((k, body.err, body.server_session.get()), (SmPktType::PingResp as u8, 0, b.local));
    // A ping for a session the server does not have (wrong token) says so.
    let stale = sm_body(0, TOKEN ^ 1, CS, b.local, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::Ping, &stale)]);
    let (_, body) = sm_of(&tx[0]);
    assert_eq!(body.err, erpc_dataplane::sm::ERR_UNKNOWN_SESSION);
}

#[test]
fn sm_out_of_sessions() {
    let mut b = Bench::new(ME, PEER, test_config(1), 2);
    b.rpc.register_handler(RT, h_echo, HandlerMode::Foreground).unwrap();
    let mut got = Vec::new();
    for (token, cs) in [(1u64, 1u16), (2, 2), (3, 3)] {
        let tx = b.connect_req(sm_body(0, token, cs, 0, PEER, ME));
        assert_eq!(tx.len(), 1);
        let (kind, body) = sm_of(&tx[0]);
        assert_eq!(kind, SmPktType::ConnectResp as u8);
        assert_eq!((body.token.get(), body.client_session.get()), (token, cs));
        assert_eq!((body.client, body.server), (AddrWire::from(PEER), AddrWire::from(ME)));
        got.push((body.err, body.server_session.get()));
    }
    assert_eq!(got[0].0, 0);
    assert_eq!(got[1].0, 0);
    assert_ne!(got[0].1, got[1].1);
    assert_eq!(got[2].0, 2, "OutOfSessions");
    assert_eq!(b.rpc.num_active_sessions(), 2);
    // A duplicate of an accepted request still gets its session, even when full.
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectReq, &sm_body(0, 1, 1, 0, PEER, ME))]);
    assert_eq!(sm_of(&tx[0]).1.server_session.get(), got[0].1);
    assert_eq!(sm_of(&tx[0]).1.err, 0);
}

#[test]
fn sm_connect_failed_out_of_sessions_on_client() {
    let mut b = Bench::new(ME, PEER, test_config(1), 4);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let (_, body) = sm_of(&b.sent()[0]);
    assert_eq!(b.rpc.session_state(s), SessionState::ConnectInProgress);
    let resp = SmBody { err: 2, server_session: U16::new(0), ..body };
    assert!(b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp)]).is_empty());
    assert_eq!(b.ctx().events, vec![SessionEvent::ConnectFailed(s, SmError::OutOfSessions)]);
    assert_eq!(b.rpc.session_state(s), SessionState::Free);
    assert_eq!(b.rpc.num_active_sessions(), 0);
    // A late duplicate of the response changes nothing.
    b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &resp)]);
    assert_eq!(b.ctx().events.len(), 1);
    // No retries afterwards.
    b.advance(10 * test_config(1).sm_retry_ns);
    assert!(b.sent().is_empty());
}

#[test]
fn sm_connect_retries_then_remote_unreachable() {
    let cfg = test_config(1);
    let mut b = Bench::new(ME, PEER, cfg, 4);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let first = b.sent();
    assert_eq!(first.len(), 1);
    let mut sent = first.clone();
    for _ in 0..2 * cfg.sm_max_attempts {
        b.advance(cfg.sm_retry_ns);
        sent.extend(b.sent());
    }
    assert_eq!(sent.len(), cfg.sm_max_attempts as usize, "sm_max_attempts ConnectReqs in all");
    assert!(sent.iter().all(|f| *f == first[0]), "each retry is the same ConnectReq");
    assert_eq!(b.ctx().events, vec![SessionEvent::ConnectFailed(s, SmError::RemoteUnreachable)]);
    assert_eq!(b.rpc.session_state(s), SessionState::Free);
}

#[test]
fn sm_connect_resp_with_wrong_token_ignored() {
    let mut b = Bench::new(ME, PEER, test_config(1), 4);
    let s = b.rpc.create_session(PEER).unwrap();
    b.step();
    let (_, body) = sm_of(&b.sent()[0]);
    let bad = SmBody { token: U64::new(body.token.get() ^ 1), server_session: U16::new(SS), ..body };
    b.deliver([sm_frame(&PEER, &ME, SmPktType::ConnectResp, &bad)]);
    assert_eq!(b.rpc.session_state(s), SessionState::ConnectInProgress);
    assert!(b.ctx().events.is_empty());
}

#[test]
fn sm_disconnect_frees_server_session_and_duplicate_answered() {
    let mut b = server(h_echo);
    let ss = b.local;
    assert_eq!(b.rpc.num_active_sessions(), 1);
    // Wrong token: not freed, still answered.
    let bad = sm_body(0, TOKEN ^ 1, CS, ss, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &bad)]);
    assert_eq!(tx.len(), 1);
    assert_eq!(sm_of(&tx[0]).0, SmPktType::DisconnectResp as u8);
    assert_eq!(b.rpc.num_active_sessions(), 1);
    assert!(b.rpc.is_connected(SessionId(ss)));
    // The real one.
    let req = sm_body(0, TOKEN, CS, ss, PEER, ME);
    let tx = b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &req)]);
    assert_eq!(tx.len(), 1);
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::DisconnectResp as u8);
    assert_eq!((body.err, body.token.get(), body.client_session.get(), body.server_session.get()), (0, TOKEN, CS, ss));
    assert_eq!(b.rpc.num_active_sessions(), 0);
    assert_eq!(b.rpc.session_state(SessionId(ss)), SessionState::Free);
    // Duplicate: answered the same way, nothing else changes.
    let tx2 = b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &req)]);
    assert_eq!(tx2, tx);
    assert_eq!(b.rpc.num_active_sessions(), 0);
    // Data for the freed session is dropped.
    b.assert_dropped(b.req(8, b"abc").remove(0), DropReason::UnknownSession);
}

#[test]
fn sm_disconnect_invalidates_held_handle() {
    let mut b = server_with(h_hold, test_config(1), 1);
    b.deliver(b.req(8, b"abc"));
    let h = b.ctx().held[0];
    b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &sm_body(0, TOKEN, CS, b.local, PEER, ME))]);
    assert_eq!(b.rpc.num_active_sessions(), 0);
    assert_eq!(b.rpc.request(&h), None);
    let m = b.rpc.alloc_msg_buffer(3).unwrap();
    let e = b.rpc.enqueue_response(h, m).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::InvalidHandle);
    // The session number is reused by a new connection: the old handle stays invalid.
    let tx = b.connect_req(sm_body(0, 42, 1, 0, PEER, ME));
    assert_eq!((sm_of(&tx[0]).1.err, sm_of(&tx[0]).1.server_session.get()), (0, b.local), "only one session: reused");
    assert!(b.rpc.request(&h).is_none());
    let m = b.rpc.alloc_msg_buffer(3).unwrap();
    assert_eq!(b.rpc.enqueue_response(h, m).unwrap_err().kind, RespondErrorKind::InvalidHandle);
}

#[test]
fn sm_client_destroy_session() {
    let mut b = client();
    let s = b.session();
    b.rpc.destroy_session(s).unwrap();
    b.step();
    let tx = b.sent();
    assert_eq!(tx.len(), 1);
    let (kind, body) = sm_of(&tx[0]);
    assert_eq!(kind, SmPktType::DisconnectReq as u8);
    assert_eq!((body.client_session.get(), body.server_session.get()), (s.0, SS));
    assert_eq!(b.rpc.session_state(s), SessionState::DisconnectInProgress);
    assert!(b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectResp, &body)]).is_empty());
    assert_eq!(b.ctx().events.last(), Some(&SessionEvent::Disconnected { session: s, clean: true }));
    assert_eq!(b.rpc.num_active_sessions(), 0);
}

/// Addresses that cannot be an endpoint's: port 0, "this network", multicast, the limited
/// broadcast, the reserved block, a broadcast MAC on a unicast IP.
fn not_endpoints() -> [EndpointAddr; 6] {
    let a = |ipv4, udp_port| EndpointAddr { mac: [2, 0, 0, 0, 0, 7], ipv4, udp_port };
    [
        a([10, 0, 0, 7], 0),
        a([0, 0, 0, 0], 4000),
        a([224, 0, 0, 1], 4000),
        a([255, 255, 255, 255], 4000),
        a([240, 1, 2, 3], 4000),
        EndpointAddr { mac: [0xff; 6], ..a([10, 0, 0, 7], 4000) },
    ]
}

#[test]
fn endpoint_addresses_at_the_edges_of_unicast() {
    let a = |ipv4, mac| EndpointAddr { mac, ipv4, udp_port: 1 };
    for ok in [a([1, 0, 0, 0], [0; 6]), a([127, 0, 0, 1], [0; 6]), a([223, 255, 255, 255], [2, 0, 0, 0, 0, 1])] {
        assert!(ok.is_unicast(), "{ok}");
    }
    for bad in [a([0, 1, 2, 3], [0; 6]), a([224, 0, 0, 0], [0; 6]), a([10, 0, 0, 1], [1, 0, 0x5e, 0, 0, 1])] {
        assert!(!bad.is_unicast(), "{bad}");
    }
}

#[test]
fn endpoint_addresses_convert_to_and_from_socket_addresses() {
    let e = EndpointAddr { mac: [2, 0, 0, 0, 0, 9], ipv4: [10, 1, 2, 3], udp_port: 31850 };
    let s = std::net::SocketAddrV4::from(e);
    assert_eq!(s.to_string(), "10.1.2.3:31850");
    // Back: the MAC is the kernel's to resolve.
    assert_eq!(EndpointAddr::from(s), EndpointAddr { mac: [0; 6], ..e });
}

#[test]
fn create_session_refuses_addresses_that_cannot_be_endpoints() {
    // Refused at once, with its own error (not "unroutable", which callers retry), and nothing
    // is sent or kept.
    let mut b = client();
    let before = b.rpc.num_active_sessions();
    for a in not_endpoints() {
        assert_eq!(b.rpc.create_session(a), Err(SessionError::InvalidAddress), "{a}");
    }
    assert!(b.deliver([]).is_empty(), "no connect request went out");
    assert_eq!(b.rpc.num_active_sessions(), before);
    assert!(SessionError::InvalidAddress.to_string().contains("not 0"));
}

#[test]
fn sm_connect_from_an_address_that_cannot_be_an_endpoint_is_not_answered() {
    // A forged connect request whose sender (frame and body agreeing) is a multicast group or a
    // broadcast address would make the server send its ConnectRetry there: dropped, unanswered.
    let mut b = server(h_echo);
    let (before, cookies) = (b.rpc.num_active_sessions(), b.rpc.stats().sm_cookies_sent);
    for a in not_endpoints() {
        b.assert_dropped(
            sm_frame(&a, &ME, SmPktType::ConnectReq, &sm_body(0, TOKEN ^ 2, CS, 0, a, ME)),
            DropReason::BadSm,
        );
    }
    assert_eq!(b.rpc.num_active_sessions(), before);
    assert_eq!(b.rpc.stats().sm_cookies_sent, cookies, "no cookie counted for a request never answered");
}
