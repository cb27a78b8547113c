//! `erpc bench --transport udp`: eRPC over kernel UDP sockets, against a raw UDP ping-pong of
//! the same datagram sizes and window measured in the same run.

use super::{run_client, BenchArgs, Mode, Report};
use crate::endpoints::{client_bind, memory, region_bytes, serve_until, server, udp};
use anyhow::{anyhow, Context};
use erpc_dataplane::{RpcConfig, Transport};
use hdrhistogram::Histogram;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Largest UDP payload of a frame within a 1500-byte MTU (1514 minus the 42-byte headroom).
const MAX_DATAGRAM: usize = 1472;

/// Builds a server endpoint on `bind` and runs it until `stop` (or forever without one). With
/// `ready`, reports its address or why it could not start there (and then returns `Ok`).
pub(crate) fn serve(
    bind: SocketAddrV4,
    resp: usize,
    bytes: usize,
    cfg: RpcConfig,
    ready: Option<mpsc::Sender<anyhow::Result<SocketAddrV4>>>,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<()> {
    let setup = || -> anyhow::Result<_> {
        let t = udp(bind)?;
        let addr = SocketAddrV4::new(bind.ip().to_owned(), t.local_addr().udp_port);
        Ok((server(t, resp, memory(bytes), cfg)?, addr))
    };
    let (mut srv, addr) = match (setup(), &ready) {
        (Ok(v), _) => v,
        (Err(e), Some(r)) => {
            let _ = r.send(Err(e));
            return Ok(());
        }
        (Err(e), None) => return Err(e),
    };
    match &ready {
        Some(r) => {
            let _ = r.send(Ok(addr));
        }
        None => eprintln!("erpc bench: serving on udp {addr} (Ctrl-C to stop)"),
    }
    serve_until(&mut srv, stop.as_deref());
    Ok(())
}

/// Connects a client on `bind` to `server` and measures.
pub(crate) fn client(
    a: &BenchArgs,
    bind: SocketAddrV4,
    server: SocketAddrV4,
    req: usize,
    conc: usize,
) -> anyhow::Result<Report> {
    let mem = memory(region_bytes(req, a.resp_size, conc, 1400));
    let what = format!("udp {server}");
    run_client(udp(bind)?, mem, a.rpc_config(), a, server.into(), &what, req, conc).map(|(r, _)| r)
}

pub(crate) fn run(a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<Report> {
    let bytes = region_bytes(req, a.resp_size, conc, 1400);
    if let Some(addr) = a.server {
        serve(addr, a.resp_size, bytes, a.rpc_config(), None, None)?;
        unreachable!("the server runs until killed");
    }
    if let Some(server) = a.connect {
        return client(a, client_bind(server, a.bind)?, server, req, conc);
    }
    // Both ends here: the server on its own thread.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (resp, cfg, st) = (a.resp_size, a.rpc_config(), stop.clone());
    let h = std::thread::spawn(move || {
        serve(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), resp, bytes, cfg, Some(tx), Some(st))
    });
    let server = rx.recv().map_err(|_| anyhow!("the server thread died"))??;
    let r = client(a, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), server, req, conc);
    stop.store(true, Ordering::Relaxed);
    h.join().map_err(|_| anyhow!("the server thread panicked"))??;
    let mut r = r?;
    let (pps, p50, trips) =
        raw_ping_pong(req.min(MAX_DATAGRAM), a.resp_size.min(MAX_DATAGRAM), conc, a.duration.min(2.0))?;
    r.reference = "raw UDP ping-pong, same datagram sizes and window";
    r.reference_pps = pps;
    r.reference_trips = trips;
    r.reference_p50_us = (a.mode == Mode::Latency).then_some(p50);
    Ok(r)
}

/// Raw UDP ping-pong on loopback between two busy-polling non-blocking sockets: `conc`
/// datagrams of `req` bytes in flight, each answered with `resp` bytes. Returns round trips per
/// second, the median round trip in microseconds and the round trips measured.
pub(crate) fn raw_ping_pong(req: usize, resp: usize, conc: usize, secs: f64) -> anyhow::Result<(f64, f64, u64)> {
    let what = "setting up the raw UDP reference on 127.0.0.1";
    let echo = UdpSocket::bind("127.0.0.1:0").context(what)?;
    let cli = UdpSocket::bind("127.0.0.1:0").context(what)?;
    echo.set_nonblocking(true).context(what)?;
    cli.set_nonblocking(true).context(what)?;
    let echo_addr = echo.local_addr().context(what)?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let out = vec![0x5Au8; resp];
        while !st.load(Ordering::Relaxed) {
            if let Ok((_, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&out, from);
            }
        }
    });
    let msg = vec![0xA5u8; req.max(8)];
    let mut buf = vec![0u8; 65536];
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut sent_at = std::collections::VecDeque::new();
    let mut trips = 0u64;
    let warm = Duration::from_millis(200);
    let t0 = Instant::now();
    let mut start = None;
    loop {
        let now = Instant::now();
        if start.is_none() && now - t0 > warm {
            start = Some(now);
            trips = 0;
            hist.reset();
        }
        if start.is_some_and(|s| now - s > Duration::from_secs_f64(secs)) {
            break;
        }
        while sent_at.len() < conc {
            // The round trip starts before the send, as an RPC's starts before it is enqueued:
            // on loopback the send call itself carries the datagram to the receiving socket.
            let t = Instant::now();
            if cli.send_to(&msg, echo_addr).is_err() {
                break;
            }
            sent_at.push_back(t);
        }
        if cli.recv_from(&mut buf).is_ok() {
            if let Some(t) = sent_at.pop_front() {
                let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
                trips += 1;
            }
        }
    }
    let el = start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(secs);
    stop.store(true, Ordering::Relaxed);
    let _ = h.join();
    Ok((trips as f64 / el, hist.value_at_quantile(0.5) as f64 / 1000.0, trips))
}
