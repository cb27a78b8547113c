//! End to end over two scripted NICs (frames shuttled by `pump`).

use crate::harness::*;

#[test]
fn end_to_end_multi_pkt_both_ways_with_two_credits() {
    let mut cli = Bench::new(ME, PEER, RpcConfig { session_credits: 2, ..test_config(1) }, 4);
    let mut srv = Bench::new(PEER, ME, test_config(2), 4);
    srv.rpc.register_handler(RT, h_sized, HandlerMode::Foreground).unwrap();
    srv.rpc.ctx_mut().resp_len = 3500; // 4 packets
    let s = cli.rpc.create_session(PEER).unwrap();
    pump(&mut cli, &mut srv);
    assert_eq!(cli.ctx().events, vec![SessionEvent::Connected(s)]);
    cli.local = s.0;
    let req = pattern(12, 2500); // 3 packets
    cli.request(&req, 4000, 99);
    let (c, sv) = pump(&mut cli, &mut srv);
    assert_eq!(srv.ctx().requests, vec![req]);
    assert_eq!(cli.ctx().done, vec![Done { tag: 99, result: Ok(3500), data: pattern(RESP_SEED, 3500) }]);
    let kinds = |v: &[Vec<u8>]| v.iter().map(|f| (p(f).ty, p(f).pkt_num)).collect::<Vec<_>>();
    use PktType::*;
    // Wire packets N + M - 1 = 6 each way.
    assert_eq!(kinds(&c), vec![(Req, 0), (Req, 1), (Req, 2), (Rfr, 3), (Rfr, 4), (Rfr, 5)]);
    assert_eq!(kinds(&sv), vec![(ExplCr, 0), (ExplCr, 1), (Resp, 2), (Resp, 3), (Resp, 4), (Resp, 5)]);
    assert_eq!(cli.credits(), 2);
    assert_eq!(cli.rpc.stats().drops.total() + srv.rpc.stats().drops.total(), 0);
}

#[test]
fn end_to_end_request_of_a_type_the_server_does_not_serve() {
    // Two credits, so the multi-packet request is refused while its later packets wait.
    let mut cli = Bench::new(ME, PEER, RpcConfig { session_credits: 2, ..test_config(1) }, 4);
    let mut srv = Bench::new(PEER, ME, test_config(2), 4);
    srv.rpc.register_handler(RT, h_sized, HandlerMode::Foreground).unwrap();
    srv.rpc.ctx_mut().resp_len = 10;
    let s = cli.rpc.create_session(PEER).unwrap();
    pump(&mut cli, &mut srv);
    cli.local = s.0;
    cli.request_of(RT + 1, b"one packet", 64, 1);
    cli.request_of(RT + 1, &pattern(4, 2500), 64, 2); // 3 packets
    let (c, _) = pump(&mut cli, &mut srv);
    let nh = Err(RpcError::NoHandler { req_type: RT + 1 });
    assert_eq!(
        cli.ctx().done,
        vec![Done { tag: 1, result: nh, data: vec![] }, Done { tag: 2, result: nh, data: vec![] }]
    );
    assert!(c.len() <= 3, "no retransmission: {} frames", c.len());
    assert_eq!((srv.ctx().handler_calls, srv.rpc.stats().requests_refused), (0, 2));
    // The same session then serves a type the server has, in the same slots.
    cli.request(&pattern(5, 2500), 64, 3);
    cli.request(b"short", 64, 4);
    pump(&mut cli, &mut srv);
    assert_eq!(
        &cli.ctx().done[2..],
        &[
            Done { tag: 3, result: Ok(10), data: pattern(RESP_SEED, 10) },
            Done { tag: 4, result: Ok(10), data: pattern(RESP_SEED, 10) },
        ]
    );
    assert_eq!(cli.credits(), 2);
    assert!(cli.rpc.is_connected(s));
}
