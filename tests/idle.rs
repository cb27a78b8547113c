//! `Rpc::wait_for_work` on a kernel transport: an idle server blocks instead of spinning, and a
//! request wakes it at once. Shared by the UDP and AF_XDP tests.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::transport::Transport;
use erpc_dataplane::{Completion, HandlerMode, OwnedMemory, ReqHandle, Rpc, RpcConfig, SessionState, Waited};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What [`serve_idle`] saw.
#[derive(Debug)]
pub struct IdleReport {
    /// CPU time of the server thread, in clock ticks (1/100 s), over `wall`.
    pub cpu_ticks: u64,
    pub wall: Duration,
    /// `wait_for_work` calls that blocked, as the server counted them, and its `waits` stat.
    pub blocked: u64,
    pub waits: u64,
    pub handled: u64,
    /// Waits the transport says slept (its own counter).
    pub transport_waits: u64,
    /// The slowest of the requests, each sent after a pause.
    pub slowest: Duration,
}

/// CPU time the calling thread has used, in clock ticks (1/100 s): utime + stime, fields 14 and
/// 15 of `/proc/thread-self/stat`.
pub fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn echo<T: Transport>(rpc: &mut Rpc<'static, T, StdClock, ()>, h: ReqHandle) {
    let _ = rpc.respond_prealloc_with(h, |req, resp| {
        resp[..req.len()].copy_from_slice(req);
        req.len()
    });
}

fn count<T: Transport>(rpc: &mut Rpc<'static, T, StdClock, u64>, c: Completion) {
    if c.result == Ok(4) && c.resp.data() == b"idle" {
        *rpc.ctx_mut() += 1;
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// A server on `st` that calls `wait_for_work` (up to 2 s) after every event-loop iteration on
/// its own thread; a client on `ct`, on this thread, that connects, lets it idle for a second,
/// then sends `n` requests one at a time, 10 ms apart. `wake` must make the server's transport
/// readable (a datagram it drops) so that it notices the end without waiting out a timer;
/// `slept` reads the transport's count of waits that slept.
pub fn serve_idle<T: Transport + Send + 'static>(
    st: T,
    sm: OwnedMemory,
    ct: T,
    cm: OwnedMemory,
    n: u64,
    wake: impl FnOnce(),
    slept: fn(&T) -> u64,
) -> IdleReport {
    let mut srv = Rpc::new(st, StdClock::default(), (), sm, RpcConfig::default()).unwrap();
    srv.register_handler(1, echo::<T>, HandlerMode::Foreground).unwrap();
    let mut cli = Rpc::new(ct, StdClock::default(), 0u64, cm, RpcConfig::default()).unwrap();
    let to = srv.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let server = std::thread::spawn(move || {
        let (t0, cpu0) = (Instant::now(), thread_cpu_ticks());
        let mut blocked = 0u64;
        while !st.load(Ordering::Relaxed) {
            srv.run_event_loop_once();
            // Every iteration, up to 2 s: packets end the waits, and the sweep of idle sessions
            // (every 250 ms by default).
            if srv.wait_for_work(2_000_000_000) == Waited::Blocked {
                blocked += 1;
            }
        }
        let slept = slept(srv.transport());
        (thread_cpu_ticks() - cpu0, t0.elapsed(), blocked, srv.stats().waits, srv.stats().requests_handled, slept)
    });
    let s = cli.create_session(to).unwrap();
    let t0 = Instant::now();
    while cli.session_state(s) != SessionState::Connected && t0.elapsed() < Duration::from_secs(5) {
        cli.run_event_loop_once();
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let mut req = cli.alloc_msg_buffer(4).unwrap();
        req.data_mut().copy_from_slice(b"idle");
        let resp = cli.alloc_msg_buffer(4).unwrap();
        let t = Instant::now();
        cli.enqueue_request(s, 1, req, resp, count::<T>, 0).unwrap();
        while *cli.ctx() == i && t.elapsed() < Duration::from_secs(5) {
            cli.run_event_loop_once();
        }
        assert_eq!(*cli.ctx(), i + 1, "request {i} answered");
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    wake();
    let (cpu_ticks, wall, blocked, waits, handled, transport_waits) = server.join().unwrap();
    IdleReport { cpu_ticks, wall, blocked, waits, handled, transport_waits, slowest }
}

/// The checks both transports must pass.
pub fn check(r: &IdleReport, n: u64) {
    println!("{r:?}");
    assert_eq!(r.handled, n);
    // Each request ends a wait that slept; nothing else wakes it but the sweep of idle sessions
    // every 250 ms (a timer every 0.5 ms, the loss scan's, would be thousands of waits).
    assert!(r.transport_waits > n && r.transport_waits <= r.blocked && r.waits == r.blocked, "{r:?}");
    assert!(r.blocked < 200, "{r:?}");
    // Woken by each request, not by its next timer (250 ms away) or the 2 s limit.
    assert!(r.slowest < Duration::from_millis(100), "{r:?}");
    // A spinning server would use its whole wall time (about 130 ticks).
    let wall_ticks = r.wall.as_millis() as u64 / 10;
    assert!(r.cpu_ticks * 4 < wall_ticks, "{} of {wall_ticks} ticks", r.cpu_ticks);
}
