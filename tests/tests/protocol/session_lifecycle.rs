//! Session numbers reused, clients restarted, idle sessions freed without a flush.

use crate::harness::*;

/// Freeing an idle server session (disconnect, idle timeout) does not flush the TX queue: at
/// 20,000 sessions that would be 20,000 flushes.
#[test]
fn freeing_an_idle_server_session_needs_no_flush() {
    let mut b = server(h_echo);
    b.deliver(b.req(8, b"abc"));
    let f0 = b.flushes();
    let disc = sm_body(0, TOKEN, CS, b.local, PEER, ME);
    b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectReq, &disc)]);
    assert_eq!(b.rpc.num_active_sessions(), 0);
    assert_eq!(b.flushes(), f0, "release_session of an idle server session called tx_flush");
}

/// A late response of an earlier connection that used the same session number does not
/// complete the new connection's request.
#[test]
fn stale_response_after_session_number_reuse_is_dropped() {
    let mut b = Bench::new(ME, PEER, test_config(1), 1);
    let s1 = connect_client(&mut b);
    b.request(b"first", 64, 1);
    b.step();
    let _ = b.sent();
    let old = b.resp(8, 0, b"answer to FIRST");
    b.deliver(old.clone());
    assert_eq!(b.ctx().done.len(), 1);
    b.rpc.destroy_session(s1).unwrap();
    b.step();
    let tx = b.sent();
    let (_, body) = sm_of(&tx[0]);
    b.deliver([sm_frame(&PEER, &ME, SmPktType::DisconnectResp, &body)]);
    let s2 = connect_client(&mut b);
    assert_eq!(s2, s1, "session number reused");
    b.request(b"second", 64, 2);
    b.step();
    let _ = b.sent();
    let stale = b.rpc.stats().drops.get(DropReason::Stale);
    b.deliver(old);
    assert_eq!(b.ctx().done.len(), 1, "the old response completed the new request");
    assert_eq!(b.rpc.stats().drops.get(DropReason::Stale), stale + 1);
    b.deliver(b.resp(8, 0, b"answer to SECOND"));
    assert_eq!(b.ctx().done[1].data, b"answer to SECOND".to_vec());
}

/// A client that restarts with the same address and configuration gets a new server session:
/// its first request runs the handler and gets its own response.
#[test]
fn restarted_client_gets_a_new_session() {
    let cfg = test_config(1);
    let mut srv = Bench::new(PEER, ME, cfg, 8);
    srv.rpc.register_handler(RT, h_echo, HandlerMode::Foreground).unwrap();
    let mut c1 = Bench::new(ME, PEER, cfg, 8);
    let s = c1.rpc.create_session(PEER).unwrap();
    pump(&mut c1, &mut srv);
    assert!(c1.rpc.is_connected(s));
    c1.local = s.0;
    c1.request(b"one", 64, 1);
    pump(&mut c1, &mut srv);
    assert_eq!(c1.ctx().done[0].data, b"one".to_vec());
    drop(c1); // crash: no disconnect
              // The restart comes later: its clock differs, which is what tells its tokens from the old
              // ones when the seed is the same (its storage may well reuse the old one's memory).
    let mut c2 = Bench::new_at(ME, PEER, cfg, 8, 1_000_000 + 1_000_000_000);
    let s = c2.rpc.create_session(PEER).unwrap();
    pump(&mut c2, &mut srv);
    assert!(c2.rpc.is_connected(s));
    c2.local = s.0;
    c2.request(b"two", 64, 2);
    pump(&mut c2, &mut srv);
    assert_eq!(srv.ctx().handler_calls, 2, "handler must run for the new request");
    assert_eq!(c2.ctx().done[0].data, b"two".to_vec(), "new request got the old response");
    assert_eq!(srv.rpc.num_active_sessions(), 2);
}
