//! Congestion control on the simulated fabric: pacing at a session's rate, Timely backing off
//! under high RTT and recovering, the uncongested bypasses, and retransmission with the wheel.
//!
//! What it covers: a paced session transfers at its rate, Timely backs off under a 2 ms RTT and
//! returns to the link rate, the bypasses engage only when uncongested, Go-Back-N with the wheel
//! under loss.

use erpc_dataplane::cc::timely::TimelyParams;
use erpc_dataplane::fabric::LinkParams;
use erpc_dataplane::*;
use erpc_tests::*;
use std::collections::HashMap;

#[derive(Default)]
struct Cli {
    done: HashMap<u64, u32>,
    bad: u32,
    last_done_ns: u64,
}

fn cont(rpc: &mut Ep<Cli>, c: Completion) {
    let now = rpc.clock().now_ns();
    let n = c.result.expect("rpc failed");
    if c.resp.data() != &pattern(!c.tag, n)[..] {
        rpc.ctx_mut().bad += 1;
    }
    *rpc.ctx_mut().done.entry(c.tag).or_default() += 1;
    rpc.ctx_mut().last_done_ns = now;
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.free_msg_buffer(c.resp).unwrap();
}

fn send(cli: &mut Ep<Cli>, s: SessionId, tag: u64, req_len: usize, resp_len: usize) {
    let req = tagged_request(cli, tag, req_len, resp_len);
    let resp = cli.alloc_msg_buffer(resp_len).unwrap();
    cli.enqueue_request(s, 1, req, resp, cont, tag).unwrap();
}

fn pair(w: &World, cfg: RpcConfig) -> (Ep<TagServer>, Ep<Cli>) {
    let mut srv: Ep<TagServer> = w.endpoint(TagServer::default(), RpcConfig { seed: 1, ..cfg }, 32 << 20, 8);
    srv.register_handler(1, tagged_handler, HandlerMode::Foreground).unwrap();
    let cli: Ep<Cli> = w.endpoint(Cli::default(), RpcConfig { seed: 2, ..cfg }, 32 << 20, 8);
    (srv, cli)
}

#[test]
fn a_paced_session_sends_at_its_rate() {
    for (enabled, rate) in [(true, 100e6), (false, 100e6)] {
        let w = World::new(21);
        // No additive increase: the rate stays where the test sets it.
        let timely = TimelyParams { add_rate: 0.0, ..TimelyParams::default() };
        let mut cfg = test_config(1);
        cfg.cc.enabled = enabled;
        cfg.cc.timely = timely;
        let (mut srv, mut cli) = pair(&w, cfg);
        let s = connect!(w, cli, [srv], srv.local_addr());
        cli.set_session_rate(s, rate);
        let t0 = w.clock.now_ns();
        send(&mut cli, s, 1, 1 << 20, 32);
        // Step time at the wheel's granularity (0.5 us), as a busy-polling event loop would.
        while cli.ctx().done.is_empty() {
            w.round(&mut [&mut cli, &mut srv], 500, 500);
            assert!(w.clock.now_ns() - t0 < 1_000_000_000, "transfer did not finish");
        }
        let took = cli.ctx().last_done_ns - t0;
        // 1 MiB in 1084 packets of 1024 bytes on the wire.
        let expect = (1084.0 * 1024.0 / rate * 1e9) as u64;
        if enabled {
            assert!(took >= expect * 95 / 100 && took <= expect * 110 / 100, "took {took} ns, expected ~{expect}");
            assert!(cli.stats().cc.paced > 1000, "{:?}", cli.stats().cc);
        } else {
            assert!(took < expect / 10, "without congestion control the transfer is not paced: {took} ns");
            assert_eq!(cli.stats().cc.paced, 0);
        }
        assert_eq!(cli.ctx().bad, 0);
    }
}

#[test]
fn timely_backs_off_under_high_rtt_and_returns_to_link_rate() {
    let w = World::new(22);
    // The retransmission timeout must exceed the 2 ms RTT: packets sent twice are not sampled.
    let cfg = RpcConfig { rto_ns: 10_000_000, ..test_config(1) };
    let (mut srv, mut cli) = pair(&w, cfg);
    let s = connect!(w, cli, [srv], srv.local_addr());
    let link = cli.config().cc.link_rate;
    // RTT 2 ms, above T_high (1 ms): every sample cuts the rate.
    w.fab.set_all_links(LinkParams { delay_ns: 1_000_000, ..LinkParams::default() });
    let mut tag = 0;
    let big = |cli: &mut Ep<Cli>, tag: &mut u64| {
        *tag += 1;
        send(cli, s, *tag, 200_000, 32);
    };
    big(&mut cli, &mut tag);
    assert!(run_until!(w, [cli, srv], 2_000_000_000, cli.ctx().done.len() as u64 == tag));
    let slow = cli.session_rate(s).unwrap();
    assert!(slow < link / 2.0, "rate {slow} after 2 ms RTTs (link {link})");
    assert!(cli.stats().cc.rate_updates > 0 && cli.stats().cc.paced > 0, "{:?}", cli.stats().cc);
    // RTT back to microseconds: additive (then hyper-active) increase to the link rate.
    w.fab.set_all_links(LinkParams { delay_ns: 1_000, ..LinkParams::default() });
    let mut rounds = 0;
    while cli.session_rate(s).unwrap() < link {
        big(&mut cli, &mut tag);
        assert!(run_until!(w, [cli, srv], 2_000_000_000, cli.ctx().done.len() as u64 == tag));
        rounds += 1;
        assert!(rounds < 2_000, "rate stuck at {}", cli.session_rate(s).unwrap());
    }
    // At link rate with a low RTT both bypasses engage again.
    let before = cli.stats().cc;
    big(&mut cli, &mut tag);
    assert!(run_until!(w, [cli, srv], 2_000_000_000, cli.ctx().done.len() as u64 == tag));
    let after = cli.stats().cc;
    assert_eq!(after.paced, before.paced, "an uncongested session went through the wheel");
    assert!(after.wheel_bypassed > before.wheel_bypassed && after.timely_bypassed > before.timely_bypassed);
    assert_eq!(cli.ctx().bad, 0);
}

#[test]
fn bypasses_engage_only_when_uncongested_and_can_be_switched_off() {
    for bypass in [true, false] {
        let w = World::new(23);
        let mut cfg = test_config(1);
        cfg.cc.timely_bypass = bypass;
        cfg.cc.wheel_bypass = bypass;
        let (mut srv, mut cli) = pair(&w, cfg);
        let s = connect!(w, cli, [srv], srv.local_addr());
        for t in 0..500 {
            send(&mut cli, s, t, 32, 32);
        }
        assert!(run_until!(w, [cli, srv], 1_000_000_000, cli.ctx().done.len() == 500));
        let cc = cli.stats().cc;
        if bypass {
            assert_eq!(cc.rate_updates, 0, "{cc:?}");
            assert_eq!(cc.paced, 0, "{cc:?}");
            assert!(cc.timely_bypassed > 0 && cc.wheel_bypassed >= 500, "{cc:?}");
        } else {
            assert!(cc.rate_updates > 0, "{cc:?}");
            assert_eq!((cc.timely_bypassed, cc.wheel_bypassed), (0, 0), "{cc:?}");
        }
        assert_eq!(cli.session_rate(s), Some(cli.config().cc.link_rate), "uncongested: still at link rate");
    }
}

#[test]
fn retransmission_cooperates_with_the_wheel() {
    let w = World::new(24);
    w.fab.set_all_links(LinkParams { delay_ns: 2_000, loss: 0.05, dup: 0.01, reorder: 0.01 });
    let timely = TimelyParams { add_rate: 0.0, ..TimelyParams::default() };
    let mut cfg = test_config(1);
    cfg.cc.timely = timely;
    let (mut srv, mut cli) = pair(&w, cfg);
    let base = (cli.heap_stats().live_buffers, srv.heap_stats().live_buffers);
    let s = connect!(w, cli, [srv], srv.local_addr());
    cli.set_session_rate(s, 200e6);
    for t in 0..200 {
        send(&mut cli, s, t, (t as usize * 733) % 20_000, (t as usize * 379) % 20_000);
    }
    assert!(run_until!(w, [cli, srv], 20_000_000_000, cli.ctx().done.len() == 200));
    assert_eq!(cli.ctx().bad, 0);
    assert!(cli.ctx().done.values().all(|&n| n == 1));
    assert!(srv.ctx().runs.values().all(|&n| n == 1));
    assert_eq!(srv.ctx().corrupt_requests, 0);
    assert!(cli.stats().retransmissions > 0 && cli.stats().cc.paced > 0, "{:?}", cli.stats());
    cli.destroy_session(s).unwrap();
    assert!(run_until!(w, [cli, srv], 1_000_000_000, cli.num_active_sessions() == 0 && srv.num_active_sessions() == 0));
    assert_eq!((cli.heap_stats().live_buffers, srv.heap_stats().live_buffers), base);
}
