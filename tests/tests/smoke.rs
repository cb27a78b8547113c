//! Smoke test: two endpoints on the simulated fabric connect and complete one RPC.

use erpc_dataplane::*;
use erpc_tests::*;

#[derive(Default)]
struct Cli {
    done: Vec<(u64, Vec<u8>)>,
    events: Vec<SessionEvent>,
}

fn echo(rpc: &mut Ep<()>, h: ReqHandle) {
    let (req, resp) = rpc.request_and_prealloc_response(&h).unwrap();
    let n = req.len();
    resp[..n].copy_from_slice(req);
    rpc.enqueue_response_prealloc(h, n).unwrap();
}

fn cont(rpc: &mut Ep<Cli>, c: Completion) {
    let data = c.resp.data().to_vec();
    assert_eq!(c.result, Ok(data.len()));
    rpc.ctx_mut().done.push((c.tag, data));
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.free_msg_buffer(c.resp).unwrap();
}

fn ev(rpc: &mut Ep<Cli>, e: SessionEvent) {
    rpc.ctx_mut().events.push(e);
}

#[test]
fn hello_world() {
    let w = World::new(1);
    let mut srv: Ep<()> = w.endpoint((), test_config(1), 1 << 20, 16);
    srv.register_handler(1, echo, HandlerMode::Foreground).unwrap();
    let mut cli: Ep<Cli> = w.endpoint(Cli::default(), test_config(2), 1 << 20, 16);
    cli.set_session_handler(ev);
    let s = cli.create_session(srv.local_addr()).unwrap();
    run_until!(w, [cli, srv], 10_000_000, cli.is_connected(s));
    assert!(cli.is_connected(s), "{:?}", cli.ctx().events);
    let mut req = cli.alloc_msg_buffer(5).unwrap();
    req.data_mut().copy_from_slice(b"hello");
    let resp = cli.alloc_msg_buffer(100).unwrap();
    cli.enqueue_request(s, 1, req, resp, cont, 42).unwrap();
    for _ in 0..100 {
        w.round(&mut [&mut cli, &mut srv], 1000, 10_000);
    }
    assert_eq!(cli.ctx().done, vec![(42, b"hello".to_vec())]);
}
