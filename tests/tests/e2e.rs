//! End-to-end tests: endpoints on the simulated fabric.
//!
//! What it covers: endpoints on the simulated fabric — message sizes from 0 to the maximum, all
//! slots busy plus backlog and its bound, out-of-order completion, nested RPCs, the worker pool,
//! 100,000 RPCs under 1% loss + duplication + reordering (every handler and continuation exactly
//! once, no msgbuf leaked), a vanishing peer, a missing endpoint, out of memory at connect, 20,000
//! sessions, keepalives and server-side reclaim of a vanished client's sessions.

use erpc_dataplane::fabric::LinkParams;
use erpc_dataplane::worker::{BgQueues, WorkerPool};
use erpc_dataplane::*;
use erpc_tests::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Request type 1: the response is the request with every byte XOR 0x5A.
const XOR: u8 = 1;
/// Request type 2: request = [tag u64][resp_len u32][pattern(tag)]; response = pattern(!tag, resp_len).
const TAGGED: u8 = 2;
/// Request type 3: the handler keeps the handle; the test answers later.
const HOLD: u8 = 3;
/// Request type 4: like XOR, on the worker pool.
const BG_XOR: u8 = 4;

#[derive(Default)]
struct Srv {
    runs: HashMap<u64, u32>,
    bad_requests: u32,
    held: Vec<ReqHandle>,
    xor_runs: u64,
}

fn srv_xor(rpc: &mut Ep<Srv>, h: ReqHandle) {
    let req = rpc.request(&h).unwrap().to_vec();
    rpc.ctx_mut().xor_runs += 1;
    if req.len() <= rpc.max_data_per_pkt() {
        let (_, resp) = rpc.request_and_prealloc_response(&h).unwrap();
        for (o, i) in resp.iter_mut().zip(&req) {
            *o = i ^ 0x5A;
        }
        rpc.enqueue_response_prealloc(h, req.len()).unwrap();
    } else {
        let mut resp = rpc.alloc_msg_buffer(req.len()).unwrap();
        for (o, i) in resp.data_mut().iter_mut().zip(&req) {
            *o = i ^ 0x5A;
        }
        rpc.enqueue_response(h, resp).unwrap();
    }
}

fn srv_tagged(rpc: &mut Ep<Srv>, h: ReqHandle) {
    let req = rpc.request(&h).unwrap();
    let tag = u64::from_le_bytes(req[..8].try_into().unwrap());
    let resp_len = u32::from_le_bytes(req[8..12].try_into().unwrap()) as usize;
    let ok = req[12..] == pattern(tag, req.len() - 12)[..];
    let ctx = rpc.ctx_mut();
    *ctx.runs.entry(tag).or_default() += 1;
    if !ok {
        ctx.bad_requests += 1;
    }
    let mut resp = rpc.alloc_msg_buffer(resp_len).unwrap();
    resp.data_mut().copy_from_slice(&pattern(!tag, resp_len));
    rpc.enqueue_response(h, resp).unwrap();
}

fn srv_hold(rpc: &mut Ep<Srv>, h: ReqHandle) {
    rpc.ctx_mut().held.push(h);
}

#[derive(Default)]
struct Cli {
    /// tag -> (expected response, continuations run)
    expect: HashMap<u64, (Vec<u8>, u32)>,
    order: Vec<u64>,
    errors: Vec<(u64, RpcError)>,
    bad: Vec<u64>,
    events: Vec<SessionEvent>,
    /// Buffers `cli_keep` handed back, for reuse.
    kept: Vec<(MsgBuf, MsgBuf)>,
}

/// Counts a completion against what its tag expects.
fn check(ctx: &mut Cli, c: &Completion) {
    match c.result {
        Ok(n) => {
            let e = ctx.expect.get_mut(&c.tag).expect("known tag");
            e.1 += 1;
            if n != e.0.len() || c.resp.data() != &e.0[..] {
                ctx.bad.push(c.tag);
            }
        }
        Err(e) => ctx.errors.push((c.tag, e)),
    }
}

fn cli_cont(rpc: &mut Ep<Cli>, c: Completion) {
    let ctx = rpc.ctx_mut();
    ctx.order.push(c.tag);
    check(ctx, &c);
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.free_msg_buffer(c.resp).unwrap();
}

/// Like `cli_cont`, but keeps the buffers for the test to send again.
fn cli_keep(rpc: &mut Ep<Cli>, mut c: Completion) {
    let ctx = rpc.ctx_mut();
    check(ctx, &c);
    c.resp.resize(c.resp.capacity());
    ctx.kept.push((c.req, c.resp));
}

fn cli_ev(rpc: &mut Ep<Cli>, e: SessionEvent) {
    rpc.ctx_mut().events.push(e);
}

fn server(w: &World, region: usize, sessions: usize) -> Ep<Srv> {
    server_with(w, region, sessions, test_config(11))
}

fn server_with(w: &World, region: usize, sessions: usize, cfg: RpcConfig) -> Ep<Srv> {
    let mut s = w.endpoint(Srv::default(), cfg, region, sessions);
    s.register_handler(XOR, srv_xor, HandlerMode::Foreground).unwrap();
    s.register_handler(TAGGED, srv_tagged, HandlerMode::Foreground).unwrap();
    s.register_handler(HOLD, srv_hold, HandlerMode::Foreground).unwrap();
    s
}

fn client(w: &World, region: usize, sessions: usize) -> Ep<Cli> {
    client_with(w, region, sessions, test_config(22))
}

fn client_with(w: &World, region: usize, sessions: usize, cfg: RpcConfig) -> Ep<Cli> {
    let mut c = w.endpoint(Cli::default(), cfg, region, sessions);
    c.set_session_handler(cli_ev);
    c
}

/// Sends an XOR request of `len` bytes and records the expected response.
fn send_xor(cli: &mut Ep<Cli>, s: SessionId, tag: u64, len: usize) {
    let mut req = cli.alloc_msg_buffer(len).unwrap();
    req.data_mut().copy_from_slice(&pattern(tag, len));
    let resp = cli.alloc_msg_buffer(len.max(1)).unwrap();
    let exp: Vec<u8> = pattern(tag, len).iter().map(|b| b ^ 0x5A).collect();
    cli.ctx_mut().expect.insert(tag, (exp, 0));
    cli.enqueue_request(s, XOR, req, resp, cli_cont, tag).unwrap();
}

fn send_tagged(cli: &mut Ep<Cli>, s: SessionId, tag: u64, req_len: usize, resp_len: usize) {
    let req = tagged_request(cli, tag, req_len, resp_len);
    let resp = cli.alloc_msg_buffer(resp_len).unwrap();
    cli.ctx_mut().expect.insert(tag, (pattern(!tag, resp_len), 0));
    cli.enqueue_request(s, TAGGED, req, resp, cli_cont, tag).unwrap();
}

fn all_done(cli: &Ep<Cli>) -> bool {
    cli.ctx().expect.values().all(|e| e.1 >= 1)
}

fn check_exactly_once(cli: &Ep<Cli>) {
    assert!(cli.ctx().bad.is_empty(), "corrupt responses for tags {:?}", &cli.ctx().bad[..cli.ctx().bad.len().min(10)]);
    assert!(cli.ctx().errors.is_empty(), "errors {:?}", &cli.ctx().errors[..cli.ctx().errors.len().min(10)]);
    for (t, e) in &cli.ctx().expect {
        assert_eq!(e.1, 1, "continuation of tag {t} ran {} times", e.1);
    }
}

#[test]
fn message_sizes_from_zero_to_max() {
    let w = World::new(3);
    let mut srv = server(&w, 96 << 20, 8);
    let mut cli = client(&w, 96 << 20, 8);
    let s = connect!(w, cli, [srv], srv.local_addr());
    assert!(cli.is_connected(s));
    let dpp = cli.max_data_per_pkt();
    assert_eq!(dpp, 968);
    let mut tag = 0;
    for len in [0, 1, dpp - 1, dpp, dpp + 1, 10 * dpp + 17, 100_000] {
        tag += 1;
        send_xor(&mut cli, s, tag, len);
    }
    assert!(run_until!(w, [cli, srv], 100_000_000, all_done(&cli)));
    check_exactly_once(&cli);
    // The maximum message each way (request and response together stay within 16383 packets).
    let max = cli.max_msg_size();
    assert_eq!(max, 8 << 20);
    send_tagged(&mut cli, s, 100, max, 8);
    send_tagged(&mut cli, s, 101, 12, max);
    assert!(run_until!(w, [cli, srv], 1_000_000_000, all_done(&cli)));
    check_exactly_once(&cli);
    assert_eq!(srv.ctx().bad_requests, 0);
    // One byte more is refused with the buffers handed back.
    let big = cli.alloc_msg_buffer(max + 1);
    assert!(matches!(big, Err(AllocError::TooLarge { .. })));
    let req = cli.alloc_msg_buffer(max).unwrap();
    let resp = cli.alloc_msg_buffer(max).unwrap();
    let e = cli.enqueue_request(s, XOR, req, resp, cli_cont, 7).unwrap_err();
    assert_eq!(e.kind, EnqueueErrorKind::TooLarge);
    assert_eq!(cli.stats().retransmissions, 0);
}

#[test]
fn all_slots_busy_then_backlog_then_bound() {
    let w = World::new(4);
    let mut srv = server(&w, 16 << 20, 8);
    let mut cli: Ep<Cli> =
        Rpc::new(w.nic(16), w.clock, Cli::default(), memory(16 << 20, 8, 4), test_config(5)).unwrap();
    let s = connect!(w, cli, [srv], srv.local_addr());
    // 8 in slots + 4 in the backlog are accepted; the 13th is refused with its buffers.
    for t in 0..12 {
        send_xor(&mut cli, s, t, 100 + t as usize);
    }
    assert_eq!(cli.backlog_len(s), 4);
    let req = cli.alloc_msg_buffer(10).unwrap();
    let resp = cli.alloc_msg_buffer(10).unwrap();
    let e = cli.enqueue_request(s, XOR, req, resp, cli_cont, 99).unwrap_err();
    assert_eq!(e.kind, EnqueueErrorKind::BacklogFull);
    assert_eq!((e.req.len(), e.resp.len()), (10, 10));
    cli.free_msg_buffer(e.req).unwrap();
    cli.free_msg_buffer(e.resp).unwrap();
    assert!(run_until!(w, [cli, srv], 10_000_000, all_done(&cli)));
    check_exactly_once(&cli);
    // Backlog entries start in FIFO order after the first eight.
    let order = &cli.ctx().order;
    let backlog_pos: Vec<usize> = (8..12).map(|t| order.iter().position(|&x| x == t).unwrap()).collect();
    assert!(backlog_pos.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[test]
fn out_of_order_completion_across_slots() {
    let w = World::new(5);
    let mut srv = server(&w, 16 << 20, 8);
    let mut cli = client(&w, 16 << 20, 8);
    let s = connect!(w, cli, [srv], srv.local_addr());
    for t in 0..4u64 {
        let req = cli.alloc_msg_buffer(8).unwrap();
        let resp = cli.alloc_msg_buffer(8).unwrap();
        cli.ctx_mut().expect.insert(t, (vec![t as u8; 8], 0));
        cli.enqueue_request(s, HOLD, req, resp, cli_cont, t).unwrap();
    }
    assert!(run_until!(w, [cli, srv], 10_000_000, srv.ctx().held.len() == 4));
    // Answer in reverse order.
    let held: Vec<ReqHandle> = srv.ctx().held.clone();
    for (k, h) in held.iter().rev().enumerate() {
        let mut r = srv.alloc_msg_buffer(8).unwrap();
        r.data_mut().fill((3 - k) as u8);
        srv.enqueue_response(*h, r).unwrap();
        run_until!(w, [cli, srv], 1_000_000, cli.ctx().order.len() == k + 1);
    }
    assert_eq!(cli.ctx().order, vec![3, 2, 1, 0]);
    check_exactly_once(&cli);
    // A handle that was answered is stale now.
    let r = srv.alloc_msg_buffer(8).unwrap();
    let e = srv.enqueue_response(held[0], r).unwrap_err();
    assert_eq!(e.kind, RespondErrorKind::InvalidHandle);
    srv.free_msg_buffer(e.resp.unwrap()).unwrap();
}

// ----- nested RPCs: client -> primary -> backup -> primary -> client -----

#[derive(Default)]
struct Primary {
    backup: Option<SessionId>,
    pending: HashMap<u64, ReqHandle>,
    next: u64,
}

fn primary_handler(rpc: &mut Ep<Primary>, h: ReqHandle) {
    // Forward the request to the backup; answer the client from the continuation.
    let req = rpc.request(&h).unwrap().to_vec();
    let mut fwd = rpc.alloc_msg_buffer(req.len()).unwrap();
    fwd.data_mut().copy_from_slice(&req);
    let resp = rpc.alloc_msg_buffer(req.len().max(1)).unwrap();
    let ctx = rpc.ctx_mut();
    ctx.next += 1;
    let tag = ctx.next;
    ctx.pending.insert(tag, h);
    let b = ctx.backup.unwrap();
    rpc.enqueue_request(b, XOR, fwd, resp, primary_cont, tag).unwrap();
}

fn primary_cont(rpc: &mut Ep<Primary>, c: Completion) {
    let h = rpc.ctx_mut().pending.remove(&c.tag).unwrap();
    assert_eq!(c.result, Ok(c.resp.len()));
    // Hand the backup's response on unchanged.
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.enqueue_response(h, c.resp).unwrap();
}

#[test]
fn nested_rpc_primary_backup() {
    let w = World::new(6);
    let mut backup = server(&w, 16 << 20, 8);
    let mut primary: Ep<Primary> = w.endpoint(Primary::default(), test_config(7), 16 << 20, 8);
    primary.register_handler(XOR, primary_handler, HandlerMode::Foreground).unwrap();
    let mut cli = client(&w, 16 << 20, 8);
    let b = primary.create_session(backup.local_addr()).unwrap();
    primary.ctx_mut().backup = Some(b);
    let s = cli.create_session(primary.local_addr()).unwrap();
    run_until!(w, [cli, primary, backup], 5_000_000, false);
    assert!(cli.is_connected(s) && primary.is_connected(b));
    for t in 0..50 {
        send_xor(&mut cli, s, t, (t as usize * 397) % 5000);
    }
    assert!(run_until!(w, [cli, primary, backup], 100_000_000, all_done(&cli)));
    check_exactly_once(&cli);
    assert_eq!(backup.ctx().xor_runs, 50);
    assert!(primary.ctx().pending.is_empty());
}

// ----- long-running handlers on the worker pool -----

#[test]
fn background_handlers_on_worker_pool() {
    let w = World::new(8);
    let queues = Arc::new(BgQueues::new());
    let pool = WorkerPool::start(queues.clone(), 2, |job| {
        assert_eq!(job.req_type, BG_XOR);
        let n = job.req.len();
        job.resp.resize(n);
        let src = job.req.data().to_vec();
        for (o, i) in job.resp.data_mut().iter_mut().zip(&src) {
            *o = i ^ 0x5A;
        }
        // Long-running: it would stall the dispatch thread.
        std::thread::sleep(std::time::Duration::from_micros(50));
    });
    let mut srv = server(&w, 32 << 20, 8);
    // Background handlers need the worker queues first.
    assert_eq!(
        srv.register_handler(BG_XOR, srv_xor, HandlerMode::Background { max_resp_size: 8000 }),
        Err(RegisterError::NoWorkers)
    );
    srv.attach_workers(queues);
    srv.register_handler(BG_XOR, srv_xor, HandlerMode::Background { max_resp_size: 8000 }).unwrap();
    let mut cli = client(&w, 32 << 20, 8);
    let s = connect!(w, cli, [srv], srv.local_addr());
    let mut sent = 0u64;
    let t0 = std::time::Instant::now();
    while !(sent == 200 && all_done(&cli)) && t0.elapsed().as_secs() < 60 {
        if sent < 200 && cli.backlog_len(s) < 8 {
            let len = (sent as usize * 131) % 8000;
            let mut req = cli.alloc_msg_buffer(len).unwrap();
            req.data_mut().copy_from_slice(&pattern(sent, len));
            let resp = cli.alloc_msg_buffer(8000).unwrap();
            let exp: Vec<u8> = pattern(sent, len).iter().map(|b| b ^ 0x5A).collect();
            cli.ctx_mut().expect.insert(sent, (exp, 0));
            cli.enqueue_request(s, BG_XOR, req, resp, cli_cont, sent).unwrap();
            sent += 1;
        }
        // Real time passes for the workers; simulated time only slowly (no spurious RTOs).
        w.round(&mut [&mut cli, &mut srv], 100, 100);
    }
    drop(pool);
    assert_eq!(sent, 200);
    check_exactly_once(&cli);
    assert_eq!(srv.ctx().xor_runs, 0, "background handler ran on the dispatch thread");
    assert_eq!(srv.stats().requests_handled, 200);
}

// ----- loss, duplication, reordering -----

fn lossy_run(seed: u64, n_rpcs: u64, sessions: usize, fault: LinkParams, max_size: usize) {
    let w = World::new(seed);
    w.fab.set_all_links(fault);
    let mut srv = server(&w, 64 << 20, 64);
    let mut cli = client(&w, 64 << 20, 64);
    let base_srv = srv.heap_stats().live_buffers;
    let base_cli = cli.heap_stats().live_buffers;
    let ss: Vec<SessionId> = (0..sessions).map(|_| cli.create_session(srv.local_addr()).unwrap()).collect();
    assert!(run_until!(w, [cli, srv], 100_000_000, ss.iter().all(|s| cli.is_connected(*s))));
    let mut rng = seed;
    let mut next = |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    let mut sent = 0u64;
    let mut rounds = 0u64;
    while !(sent == n_rpcs && all_done(&cli)) {
        for &s in &ss {
            while sent < n_rpcs && cli.backlog_len(s) < 4 {
                let big = next(100) < 5;
                let req_len = if big { next(max_size as u64) as usize } else { 12 + next(64) as usize };
                let resp_len = if big { next(max_size as u64) as usize } else { next(64) as usize };
                send_tagged(&mut cli, s, sent, req_len, resp_len);
                sent += 1;
            }
        }
        w.round(&mut [&mut cli, &mut srv], 1_000, 10_000);
        rounds += 1;
        assert!(rounds < 50_000_000, "no progress: sent {sent}, done {}", cli.ctx().order.len());
    }
    check_exactly_once(&cli);
    eprintln!("client {:?}\nserver {:?}\nfabric {:?} {:?}", cli.stats(), srv.stats(), w.fab.stats(0), w.fab.stats(1));
    assert_eq!(srv.ctx().bad_requests, 0);
    assert_eq!(srv.ctx().runs.len() as u64, n_rpcs);
    let twice: Vec<_> = srv.ctx().runs.iter().filter(|(_, &n)| n != 1).take(5).collect();
    assert!(twice.is_empty(), "handlers ran more than once: {twice:?}");
    if fault.loss > 0.0 {
        assert!(cli.stats().retransmissions > 0);
        assert!(cli.stats().tx_flushes > 0);
    }
    if fault.dup > 0.0 {
        assert!(srv.stats().drops.total() + cli.stats().drops.total() > 0);
    }
    // Tear down: every msgbuf comes back.
    for &s in &ss {
        cli.destroy_session(s).unwrap();
    }
    assert!(run_until!(w, [cli, srv], 200_000_000, cli.num_active_sessions() == 0 && srv.num_active_sessions() == 0));
    assert_eq!(cli.heap_stats().live_buffers, base_cli, "client leaked msgbufs");
    assert_eq!(srv.heap_stats().live_buffers, base_srv, "server leaked msgbufs");
}

#[test]
fn loss_dup_reorder_100k_rpcs_exactly_once() {
    let f = LinkParams { delay_ns: 2_000, loss: 0.01, dup: 0.01, reorder: 0.01 };
    lossy_run(0xC0FFEE, 100_000, 8, f, 6_000);
}

#[test]
fn heavy_loss_multi_packet() {
    let f = LinkParams { delay_ns: 1_000, loss: 0.1, dup: 0.05, reorder: 0.05 };
    lossy_run(77, 2_000, 4, f, 40_000);
}

// ----- failures -----

#[test]
fn peer_disappears_continuations_fail_other_sessions_work() {
    let w = World::new(9);
    let mut a = server(&w, 16 << 20, 8);
    let mut b = server(&w, 16 << 20, 8);
    let mut cli = client(&w, 16 << 20, 8);
    let sa = cli.create_session(a.local_addr()).unwrap();
    let sb = cli.create_session(b.local_addr()).unwrap();
    run_until!(w, [cli, a, b], 5_000_000, false);
    assert!(cli.is_connected(sa) && cli.is_connected(sb));
    let base = cli.heap_stats().live_buffers;
    // A dies with 8 requests in flight and 5 queued.
    let a_port = 0;
    assert_eq!(w.fab.addr(a_port), a.local_addr());
    w.fab.set_up(a_port, false);
    for t in 0..13 {
        send_tagged(&mut cli, sa, t, 3000, 100);
    }
    assert!(run_until!(w, [cli, a, b], 200_000_000, cli.ctx().errors.len() == 13));
    let mut failed: Vec<u64> = cli.ctx().errors.iter().map(|e| e.0).collect();
    failed.sort();
    assert_eq!(failed, (0..13).collect::<Vec<_>>());
    assert!(cli.ctx().errors.iter().all(|e| e.1 == RpcError::SessionReset));
    assert!(cli.ctx().events.contains(&SessionEvent::Reset(sa, ResetReason::PeerTimeout)));
    assert!(!cli.is_connected(sa));
    assert_eq!(cli.stats().sessions_reset, 1);
    assert_eq!(cli.heap_stats().live_buffers, base, "buffers of the failed requests leaked");
    // Enqueueing on the dead session is refused; the other session works.
    let req = cli.alloc_msg_buffer(4).unwrap();
    let resp = cli.alloc_msg_buffer(4).unwrap();
    let e = cli.enqueue_request(sa, XOR, req, resp, cli_cont, 500).unwrap_err();
    assert_ne!(e.kind, EnqueueErrorKind::BacklogFull);
    cli.free_msg_buffer(e.req).unwrap();
    cli.free_msg_buffer(e.resp).unwrap();
    cli.ctx_mut().errors.clear();
    for t in 100..120 {
        send_xor(&mut cli, sb, t, 2000);
    }
    assert!(run_until!(w, [cli, a, b], 50_000_000, (100..120).all(|t| cli.ctx().expect[&t].1 == 1)));
    assert!(cli.ctx().errors.is_empty());
}

#[test]
fn connect_to_missing_endpoint_fails_cleanly() {
    let w = World::new(10);
    let mut cli = client(&w, 4 << 20, 8);
    let nowhere = EndpointAddr { mac: [2, 0, 0, 0, 0, 7], ipv4: [10, 0, 0, 8], udp_port: 31857 };
    let s = cli.create_session(nowhere).unwrap();
    assert_eq!(cli.session_state(s), SessionState::ConnectInProgress);
    assert!(run_until!(w, [cli], 100_000_000, !cli.ctx().events.is_empty()));
    assert_eq!(cli.ctx().events, vec![SessionEvent::ConnectFailed(s, SmError::RemoteUnreachable)]);
    assert_eq!(cli.num_active_sessions(), 0);
    assert_eq!(cli.stats().sm_pkts_tx, 5);
    // The session number is usable again and requests on the failed one are refused.
    let req = cli.alloc_msg_buffer(4).unwrap();
    let resp = cli.alloc_msg_buffer(4).unwrap();
    assert!(cli.enqueue_request(s, XOR, req, resp, cli_cont, 1).is_err());
}

/// A request buffer sent again carries the headers of the session it is sent on now: the
/// endpoint rewrites only the request number of a buffer that holds the same session's headers,
/// so this checks that a buffer moved to another session, to a reused session number, or freed
/// and allocated again, is addressed afresh.
#[test]
fn a_reused_request_buffer_goes_to_the_session_it_is_sent_on() {
    let w = World::new(13);
    let mut sa = server(&w, 16 << 20, 8);
    let mut sb = server(&w, 16 << 20, 8);
    let mut sc = server(&w, 16 << 20, 8);
    // Two sessions: a freed session number is the next one handed out.
    let mut cli = client(&w, 16 << 20, 2);
    let a = connect!(w, cli, [sa, sb, sc], sa.local_addr());
    let b = connect!(w, cli, [sa, sb, sc], sb.local_addr());
    let exp: Vec<u8> = pattern(7, 32).iter().map(|x| x ^ 0x5A).collect();
    let mut req = cli.alloc_msg_buffer(32).unwrap();
    req.data_mut().copy_from_slice(&pattern(7, 32));
    let mut bufs = Some((req, cli.alloc_msg_buffer(32).unwrap()));
    let mut tag = 0;
    // Sends the buffers on `s` and checks the handler runs at A, B and C afterwards.
    let mut run = |s: SessionId,
                   want: [u64; 3],
                   bufs: &mut Option<(MsgBuf, MsgBuf)>,
                   eps: (&mut Ep<Cli>, &mut Ep<Srv>, &mut Ep<Srv>, &mut Ep<Srv>)| {
        let (cli, sa, sb, sc) = eps;
        tag += 1;
        let (req, resp) = bufs.take().unwrap();
        cli.ctx_mut().expect.insert(tag, (exp.clone(), 0));
        cli.enqueue_request(s, XOR, req, resp, cli_keep, tag).unwrap();
        assert!(run_until!(w, [*cli, *sa, *sb, *sc], 10_000_000, cli.ctx().expect[&tag].1 == 1), "RPC {tag} completed");
        *bufs = cli.ctx_mut().kept.pop();
        let runs = [sa.ctx().xor_runs, sb.ctx().xor_runs, sc.ctx().xor_runs];
        assert_eq!(runs, want, "after RPC {tag}: handler runs at A, B and C");
    };
    for (s, want) in [(a, [1, 0, 0]), (a, [2, 0, 0]), (b, [2, 1, 0]), (b, [2, 2, 0]), (a, [3, 2, 0])] {
        run(s, want, &mut bufs, (&mut cli, &mut sa, &mut sb, &mut sc));
    }
    // Session A's number reused for a session to C, whose session number there is A's at A.
    cli.destroy_session(a).unwrap();
    assert!(run_until!(w, [cli, sa, sb, sc], 10_000_000, cli.num_active_sessions() == 1));
    let c = connect!(w, cli, [sa, sb, sc], sc.local_addr());
    assert_eq!(c, a, "the session number is reused");
    run(c, [3, 2, 1], &mut bufs, (&mut cli, &mut sa, &mut sb, &mut sc));
    // Freed (the allocator writes its links into the block) and allocated again: the same block,
    // sent on the same session as before.
    let (req, resp) = bufs.take().unwrap();
    let block = req.data().as_ptr();
    cli.free_msg_buffer(req).unwrap();
    let mut req = cli.alloc_msg_buffer(32).unwrap();
    assert_eq!(req.data().as_ptr(), block, "the same block");
    req.data_mut().copy_from_slice(&pattern(7, 32));
    bufs = Some((req, resp));
    run(c, [3, 2, 2], &mut bufs, (&mut cli, &mut sa, &mut sb, &mut sc));
    run(b, [3, 3, 2], &mut bufs, (&mut cli, &mut sa, &mut sb, &mut sc));
    check_exactly_once(&cli);
}

#[test]
fn destroy_session_busy_then_clean() {
    let w = World::new(12);
    let mut srv = server(&w, 16 << 20, 8);
    let mut cli = client(&w, 16 << 20, 8);
    let s = connect!(w, cli, [srv], srv.local_addr());
    send_xor(&mut cli, s, 1, 10);
    assert_eq!(cli.destroy_session(s), Err(SessionError::Busy));
    assert!(run_until!(w, [cli, srv], 10_000_000, all_done(&cli)));
    assert_eq!(srv.num_active_sessions(), 1);
    cli.destroy_session(s).unwrap();
    assert!(run_until!(w, [cli, srv], 10_000_000, cli.num_active_sessions() == 0));
    assert!(cli.ctx().events.contains(&SessionEvent::Disconnected { session: s, clean: true }));
    assert_eq!(srv.num_active_sessions(), 0);
}

#[test]
fn twenty_thousand_sessions() {
    let w = World::new(13);
    let n = 20_000;
    // Keepalives are per session: with 20,000 idle sessions, keep them rare.
    // All 20,000 sessions come from one client address: the server must allow that many.
    let cfg = |seed| RpcConfig {
        keepalive_ns: 1_000_000_000,
        session_timeout_ns: 1_000_000_000,
        server_idle_timeout_ns: 10_000_000_000,
        max_sessions_per_client: n as u16,
        ..test_config(seed)
    };
    let mut srv = server_with(&w, 64 << 20, n, cfg(11));
    let mut cli = client_with(&w, 48 << 20, n, cfg(22));
    // Connect in batches: a burst of 20,000 connect requests would overflow the server's RX ring.
    let mut ss: Vec<SessionId> = Vec::new();
    while ss.len() < n {
        for _ in 0..256.min(n - ss.len()) {
            ss.push(cli.create_session(srv.local_addr()).unwrap());
        }
        assert!(run_until!(w, [cli, srv], 100_000_000, cli.ctx().events.len() == ss.len()));
    }
    assert!(ss.iter().all(|s| cli.is_connected(*s)), "{:?}", &cli.ctx().events[..3]);
    assert_eq!(srv.num_active_sessions(), n);
    // One more is refused: the client's session storage is full.
    let extra = cli.create_session(srv.local_addr());
    assert_eq!(extra, Err(SessionError::OutOfSessions));
    for (t, s) in ss.iter().enumerate() {
        send_xor(&mut cli, *s, t as u64, 32);
    }
    assert!(run_until!(w, [cli, srv], 2_000_000_000, all_done(&cli)));
    check_exactly_once(&cli);
}

#[test]
fn connect_fails_with_out_of_memory_when_server_region_is_full() {
    let w = World::new(14);
    let mut srv = server(&w, 16 << 20, 64);
    // Leave the server no room for a session's one-packet buffer.
    let mut hog = Vec::new();
    while let Ok(b) = srv.alloc_msg_buffer(900) {
        hog.push(b);
    }
    let mut cli = client(&w, 4 << 20, 8);
    let s = cli.create_session(srv.local_addr()).unwrap();
    assert!(run_until!(w, [cli, srv], 50_000_000, !cli.ctx().events.is_empty()));
    assert_eq!(cli.ctx().events, vec![SessionEvent::ConnectFailed(s, SmError::OutOfMemory)]);
    assert_eq!(srv.num_active_sessions(), 0);
    assert_eq!(cli.num_active_sessions(), 0);
    // With memory back, the next attempt connects.
    for b in hog {
        srv.free_msg_buffer(b).unwrap();
    }
    let s2 = connect!(w, cli, [srv], srv.local_addr());
    assert!(cli.is_connected(s2));
}

#[test]
fn idle_sessions_are_kept_alive_and_dead_peers_noticed_without_requests() {
    let w = World::new(15);
    let mut a = server(&w, 16 << 20, 8);
    let mut b = server(&w, 16 << 20, 8);
    let mut cli = client(&w, 16 << 20, 8);
    let sa = connect!(w, cli, [a, b], a.local_addr());
    let sb = connect!(w, cli, [a, b], b.local_addr());
    let idle = a.config().server_idle_timeout_ns;
    // Idle for three server idle timeouts: keepalives keep both server sessions.
    run_until!(w, [cli, a, b], 3 * idle, false);
    assert!(cli.is_connected(sa) && cli.is_connected(sb));
    assert_eq!((a.num_active_sessions(), b.num_active_sessions()), (1, 1));
    assert!(cli.stats().sm_pkts_tx > 10, "keepalive pings sent");
    send_xor(&mut cli, sa, 1, 100);
    assert!(run_until!(w, [cli, a, b], 10_000_000, all_done(&cli)));
    // B dies while the session to it is idle: it is reset without any request pending.
    w.fab.set_up(1, false);
    let cfg = cli.config();
    let limit = cfg.keepalive_ns + cfg.session_timeout_ns + cfg.keepalive_ns;
    assert!(run_until!(w, [cli, a, b], limit, !cli.is_connected(sb)));
    assert!(cli.ctx().events.contains(&SessionEvent::Reset(sb, ResetReason::PeerTimeout)));
    assert!(cli.is_connected(sa), "the other session is unaffected");
    assert!(cli.ctx().errors.is_empty(), "no request was pending");
}

#[test]
fn server_frees_sessions_of_a_vanished_client() {
    let w = World::new(16);
    let mut srv = server(&w, 16 << 20, 8);
    let base = srv.heap_stats().live_buffers;
    let mut cli = client(&w, 16 << 20, 8);
    let s = connect!(w, cli, [srv], srv.local_addr());
    send_tagged(&mut cli, s, 1, 5000, 5000);
    assert!(run_until!(w, [cli, srv], 10_000_000, all_done(&cli)));
    assert!(srv.heap_stats().live_buffers > base);
    // The client crashes: it is never polled again and its port is gone.
    w.fab.set_up(1, false);
    let idle = srv.config().server_idle_timeout_ns;
    assert!(run_until!(w, [srv], 2 * idle, srv.num_active_sessions() == 0));
    assert_eq!(srv.heap_stats().live_buffers, base, "the session's buffers came back");
}

#[test]
fn tight_keepalive_config_keeps_a_healthy_idle_session() {
    // The tightest timing `Rpc::new` accepts: a session that is idle between RPCs is never reset
    // and its server session never freed on a loss-free network.
    let w = World::new(77);
    let cfg = |seed| RpcConfig {
        keepalive_ns: 8_000_000,
        session_timeout_ns: 4_000_000,
        server_idle_timeout_ns: 2 * 8_000_000 + 4_000_000 + 100_000,
        ..test_config(seed)
    };
    let mut srv = server_with(&w, 16 << 20, 8, cfg(1));
    let mut cli = client_with(&w, 16 << 20, 8, cfg(2));
    let s = connect!(w, cli, [srv], srv.local_addr());
    for k in 0..20u64 {
        run_until!(w, [cli, srv], 370_000, false);
        send_xor(&mut cli, s, k, 32);
        assert!(run_until!(w, [cli, srv], 10_000_000, all_done(&cli)));
        for _ in 0..12 {
            run_until!(w, [cli, srv], 1_000_000, false);
            assert_eq!(srv.num_active_sessions(), 1, "server freed the session of a live idle client");
        }
    }
    assert!(cli.is_connected(s));
    assert!(!cli.ctx().events.iter().any(|e| matches!(e, SessionEvent::Reset(..))));
    // Looser than that is refused.
    let bad = RpcConfig {
        keepalive_ns: 8_000_000,
        session_timeout_ns: 1_000_000,
        server_idle_timeout_ns: 9_500_000,
        ..test_config(3)
    };
    assert_eq!(Rpc::new(w.nic(16), w.clock, (), memory(1 << 20, 4, 4), bad).err(), Some(InitError::BadConfig));
}
