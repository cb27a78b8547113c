//! Property test: random message sizes and fault patterns; every RPC completes exactly once with
//! the right bytes, every handler runs once, no msgbuf leaks.
//!
//! What it covers: proptest over random message sizes, credits, delays and fault rates.

use erpc_dataplane::fabric::LinkParams;
use erpc_dataplane::*;
use erpc_tests::*;
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Default)]
struct Cli {
    done: HashMap<u64, u32>,
    bad: u32,
}

fn cont(rpc: &mut Ep<Cli>, c: Completion) {
    let n = c.result.expect("rpc failed");
    if c.resp.data() != &pattern(!c.tag, n)[..] {
        rpc.ctx_mut().bad += 1;
    }
    *rpc.ctx_mut().done.entry(c.tag).or_default() += 1;
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.free_msg_buffer(c.resp).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn random_sizes_and_faults(
        seed in any::<u64>(),
        sizes in prop::collection::vec((12usize..40_000, 0usize..40_000), 1..24),
        loss in 0.0f64..0.05, dup in 0.0f64..0.05, reorder in 0.0f64..0.05,
        delay_ns in 0u64..20_000, credits in 1u16..64,
    ) {
        let w = World::new(seed);
        w.fab.set_all_links(LinkParams { delay_ns, loss, dup, reorder });
        let cfg = RpcConfig { session_credits: credits, ..test_config(seed) };
        let mut srv: Ep<TagServer> = w.endpoint(TagServer::default(), cfg, 16 << 20, 4);
        srv.register_handler(9, tagged_handler, HandlerMode::Foreground).unwrap();
        let mut cli: Ep<Cli> = w.endpoint(Cli::default(), cfg, 16 << 20, 4);
        let base = (cli.heap_stats().live_buffers, srv.heap_stats().live_buffers);
        let s = connect!(w, cli, [srv], srv.local_addr());
        for (tag, &(q, r)) in sizes.iter().enumerate() {
            let tag = tag as u64;
            let req = tagged_request(&mut cli, tag, q, r);
            let resp = cli.alloc_msg_buffer(r).unwrap();
            cli.enqueue_request(s, 9, req, resp, cont, tag).unwrap();
        }
        let n = sizes.len();
        prop_assert!(run_until!(w, [cli, srv], 10_000_000_000, cli.ctx().done.len() == n));
        prop_assert_eq!(cli.ctx().bad, 0);
        prop_assert!(cli.ctx().done.values().all(|&c| c == 1));
        prop_assert!(srv.ctx().runs.values().all(|&c| c == 1));
        prop_assert_eq!(srv.ctx().runs.len(), n);
        prop_assert_eq!(srv.ctx().corrupt_requests, 0);
        cli.destroy_session(s).unwrap();
        prop_assert!(run_until!(w, [cli, srv], 1_000_000_000, srv.num_active_sessions() == 0 && cli.num_active_sessions() == 0));
        prop_assert_eq!((cli.heap_stats().live_buffers, srv.heap_stats().live_buffers), base);
    }
}
