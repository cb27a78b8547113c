//! Structured fuzz (`fuzz_frame`): plausible-but-wrong frames at both roles; no panic, sane counters.

use crate::harness::*;

#[test]
fn fuzz_server_never_panics() {
    let mut b = server(h_sized);
    b.rpc.ctx_mut().resp_len = 2000;
    b.check_l2l3 = false;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..3000u64 {
        let n = 1 + rng.next() % 8;
        let frames: Vec<_> = (0..n).map(|_| fuzz_frame(&mut rng, &b)).collect();
        let rx = b.rpc.stats().rx_pkts;
        b.deliver(frames);
        assert_eq!(b.rpc.stats().rx_pkts, rx + n, "round {round}");
        if round % 500 == 0 {
            b.clock.advance(1_000_000);
        }
    }
    // Still serving: a fresh slot (slot 3 is never touched by the fuzz's req_nums mod 8 in {0,1,7}).
    let tx = b.deliver(b.req(11, b"alive?"));
    assert_eq!(tx.len(), 1);
    assert_eq!(p(&tx[0]).req_num, b.base + 11);
}

#[test]
fn fuzz_client_never_panics() {
    let mut b = client_with(RpcConfig { session_credits: 4, ..test_config(1) });
    b.check_l2l3 = false;
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    for round in 0..3000u64 {
        if b.rpc.session(b.session()).map(|s| s.state()) == Some(SessionState::Connected) && rng.next() % 4 == 0 {
            let len = rng.pick(&[1usize, 968, 2000]);
            let mut req = b.rpc.alloc_msg_buffer(len).unwrap();
            req.data_mut().fill(1);
            let resp = b.rpc.alloc_msg_buffer(rng.pick(&[1usize, 968, 3000])).unwrap();
            if let Err(e) = b.rpc.enqueue_request(b.session(), RT, req, resp, c_record, round) {
                b.rpc.free_msg_buffer(e.req).unwrap();
                b.rpc.free_msg_buffer(e.resp).unwrap();
            }
        }
        let n = 1 + rng.next() % 8;
        let frames: Vec<_> = (0..n).map(|_| fuzz_frame(&mut rng, &b)).collect();
        b.deliver(frames);
        if let Some(s) = b.rpc.session(b.session()) {
            if s.state() == SessionState::Connected {
                assert!(s.credits() <= 4, "round {round}: credits {} above the configured 4", s.credits());
            }
        }
        b.clock.advance(rng.pick(&[0u64, 1_000, 50_000, 200_000]));
    }
    for d in &b.ctx().done {
        if let Ok(n) = d.result {
            assert!(n <= 3000);
        }
    }
}
