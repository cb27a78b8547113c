//! `erpc bench rate --threads N`: multi-core scaling. N independent client/server endpoint
//! pairs, each pair alone on its own thread (client and server alternating event-loop
//! iterations, as in the one-thread benchmark): over the in-memory NIC each thread has its own
//! fabric; over UDP its own two sockets on loopback; over AF_XDP its own queue on each end of a
//! veth pair with N queues (one socket per queue under one XDP program per end). Nothing is
//! shared between the threads but the start signal.
//!
//! The reference is the same benchmark with one thread, measured first in the same run: the
//! ratio of N threads' aggregate rate to it is the scaling (N at best).

use super::{measure, BenchArgs, Client, Mode, Report};
use crate::endpoints::{clock, connect, memory, memory_in, region_bytes, rpc_config, server, sim_pair, udp};
use crate::netns::{self, VethPair};
use crate::TransportKind;
use anyhow::{anyhow, bail, Context};
use erpc_dataplane::config::DEFAULT_MTU;
use erpc_dataplane::wire::PKT_HDR_LEN;
use erpc_dataplane::{OwnedMemory, Rpc, RpcConfig, Transport};
use erpc_driver::afxdp::{AfXdpConfig, AfXdpInterface};
use erpc_hugepages::PageSize;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Barrier;

/// The ports of pair `k` over AF_XDP: the server's and the client's.
fn afxdp_ports(k: usize) -> (u16, u16) {
    (31850 + 2 * k as u16, 31851 + 2 * k as u16)
}

/// One run's result: each thread's report.
pub(crate) struct ThreadsRun {
    pub per_thread: Vec<Report>,
}

impl ThreadsRun {
    /// RPCs per second of all threads together (each thread's count over its own window; the
    /// windows start together and last as long).
    pub fn rate(&self) -> f64 {
        self.per_thread.iter().map(|r| r.rpcs as f64 / r.secs).sum()
    }

    fn failed(&self) -> u64 {
        self.per_thread.iter().map(|r| r.failed).sum()
    }

    fn retransmissions(&self) -> u64 {
        self.per_thread.iter().map(|r| r.retransmissions).sum()
    }
}

/// What the transport needs set up once for all threads.
enum Setup {
    Sim { lag: usize },
    Udp,
    Afxdp { pair: VethPair, a: AfXdpInterface, b: AfXdpInterface, bytes: usize },
}

/// Builds pair `k`'s server and client transports with their memory, on the calling thread,
/// and runs them: connect, then [`measure`] once every thread is ready.
fn pair_thread(
    setup: &Setup,
    k: usize,
    a: &BenchArgs,
    req: usize,
    conc: usize,
    start: &Barrier,
) -> anyhow::Result<Report> {
    match setup {
        Setup::Sim { lag } => {
            let clk = clock();
            // Its own fabric: nothing shared with the other threads.
            let (pa, pb) = sim_pair(clk, 1 + k as u64, 512, *lag);
            let need = region_bytes(req, a.resp_size, conc, DEFAULT_MTU - PKT_HDR_LEN);
            let cfg = rpc_config(DEFAULT_MTU, !a.no_cc);
            run_pair(pa, pb, memory(need), memory(need), cfg, a, req, conc, start)
        }
        Setup::Udp => {
            let need = region_bytes(req, a.resp_size, conc, 1400);
            let lo = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
            run_pair(udp(lo)?, udp(lo)?, memory(need), memory(need), a.rpc_config(), a, req, conc, start)
        }
        Setup::Afxdp { pair, a: ia, b: ib, bytes } => {
            let (sp, cp) = afxdp_ports(k);
            let q = |port, end: &netns::End| AfXdpConfig {
                interface: end.interface.clone(),
                queue: k as u32,
                udp_port: port,
                region_bytes: *bytes,
                rx_frames: 1024,
                tx_ring: 1024,
                ..AfXdpConfig::default()
            };
            // Each socket is made in its interface's namespace; they work from any thread after.
            netns::enter(&pair.b.netns)?;
            let ts = ib.open_queue(q(sp, &pair.b)).with_context(|| format!("AF_XDP server queue {k}"))?;
            netns::enter(&pair.a.netns)?;
            let tc = ia.open_queue(q(cp, &pair.a)).with_context(|| format!("AF_XDP client queue {k}"))?;
            // SAFETY: each region is used by the endpoint its transport is handed to, only.
            let (ms, mc) = unsafe { (memory_in(ts.dataplane_region()), memory_in(tc.dataplane_region())) };
            run_pair(tc, ts, mc, ms, a.rpc_config(), a, req, conc, start)
        }
    }
}

/// A server on `srv_t` and a client on `cli_t`, both on this thread.
#[allow(clippy::too_many_arguments)]
fn run_pair<C: Transport, S: Transport>(
    cli_t: C,
    srv_t: S,
    cli_mem: OwnedMemory,
    srv_mem: OwnedMemory,
    cfg: RpcConfig,
    a: &BenchArgs,
    req: usize,
    conc: usize,
    start: &Barrier,
) -> anyhow::Result<Report> {
    let clk = clock();
    let mut srv = server(srv_t, a.resp_size, srv_mem, cfg)?;
    let mut cli = Rpc::new(cli_t, clk, Client::default(), cli_mem, cfg).context("building the client endpoint")?;
    let to = srv.local_addr();
    let connected = connect(&mut cli, &mut || srv.run_event_loop_once(), to, "this thread's server");
    // Meet the others even on failure, so that no thread waits for one that gave up.
    start.wait();
    let s = connected?;
    measure(&mut cli, || srv.run_event_loop_once(), s, Mode::Rate, req, a.resp_size, conc, a.duration, false)
}

/// Runs `threads` pairs at once.
fn run_threads(setup: &Setup, threads: usize, a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<ThreadsRun> {
    let start = Barrier::new(threads);
    let results: Vec<anyhow::Result<Report>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|k| {
                let start = &start;
                std::thread::Builder::new()
                    .name(format!("bench pair {k}"))
                    .spawn_scoped(s, move || pair_thread(setup, k, a, req, conc, start))
                    .expect("spawning a benchmark thread")
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a benchmark thread panicked")))).collect()
    });
    let per_thread = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ThreadsRun { per_thread })
}

/// The scaling benchmark: one thread, then `a.threads` threads, in the same run.
pub(crate) fn run(a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<()> {
    if a.mode != Mode::Rate {
        bail!("--threads applies to `erpc bench rate`");
    }
    if a.server.is_some() || a.connect.is_some() {
        bail!("--threads runs both ends of every pair here: drop --server and --connect");
    }
    let n = a.threads;
    if !(1..=64).contains(&n) {
        bail!("--threads must be 1..=64, not {n}");
    }
    let setup = match a.transport {
        TransportKind::Sim => Setup::Sim { lag: a.sim_tx_lag },
        TransportKind::Udp => Setup::Udp,
        TransportKind::Afxdp => {
            let pair = VethPair::with_queues(n as u32)?;
            erpc_hugepages::HugepageCounts::reserve_free(PageSize::Huge2M, 4 * n as u64 * 10)
                .context("reserving 2 MiB hugepages for the AF_XDP sockets")?;
            let bytes = region_bytes(req, a.resp_size, conc, 1400);
            let (na, nb, ifa, ifb) =
                (pair.a.netns.clone(), pair.b.netns.clone(), pair.a.interface.clone(), pair.b.interface.clone());
            // The XDP programs are attached from a thread in each namespace.
            let attach = a.xdp_mode.attach();
            let (ia, ib) = std::thread::spawn(move || -> anyhow::Result<_> {
                netns::enter(&na)?;
                let ia = AfXdpInterface::open(&ifa, None, attach)?;
                netns::enter(&nb)?;
                let ib = AfXdpInterface::open(&ifb, None, attach)?;
                Ok((ia, ib))
            })
            .join()
            .map_err(|_| anyhow!("the setup thread panicked"))??;
            Setup::Afxdp { pair, a: ia, b: ib, bytes }
        }
        TransportKind::Mlx5 => bail!("--threads runs over --transport sim, udp or afxdp"),
    };
    let one = run_threads(&setup, 1, a, req, conc).context("the one-thread run")?;
    let many = run_threads(&setup, n, a, req, conc).with_context(|| format!("the {n}-thread run"))?;
    drop(setup);
    if a.json {
        println!("{}", json(a, req, conc, &one, &many));
    } else {
        print!("{}", text(a, req, conc, &one, &many));
    }
    Ok(())
}

fn text(a: &BenchArgs, req: usize, conc: usize, one: &ThreadsRun, many: &ThreadsRun) -> String {
    let n = many.per_thread.len();
    let mut s = format!(
        "erpc bench rate --transport {} --threads {n}: {req} B requests, {} B responses, {conc} outstanding per \
         thread, {:.2} s\n",
        a.transport.name(),
        a.resp_size,
        a.duration
    );
    let per: Vec<String> = many.per_thread.iter().map(|r| format!("{:.3}", r.rpcs as f64 / r.secs / 1e6)).collect();
    let _ = writeln!(s, "  {n} threads:        {:.3} M RPCs/s (per thread: {})", many.rate() / 1e6, per.join(", "));
    let _ = writeln!(s, "  reference:        1 thread, same run: {:.3} M RPCs/s", one.rate() / 1e6);
    let _ = writeln!(s, "  scaling:          {:.2}x with {n} threads (at best {n}x)", many.rate() / one.rate());
    let _ = writeln!(
        s,
        "  failed:           {}; retransmissions: {}",
        one.failed() + many.failed(),
        one.retransmissions() + many.retransmissions()
    );
    s
}

fn json(a: &BenchArgs, req: usize, conc: usize, one: &ThreadsRun, many: &ThreadsRun) -> serde_json::Value {
    serde_json::json!({
        "transport": a.transport.name(), "mode": "rate", "threads": many.per_thread.len(),
        "req_size": req, "resp_size": a.resp_size, "concurrency": conc, "duration_s": a.duration,
        "rpcs_per_sec": many.rate(),
        "per_thread_rpcs_per_sec": many.per_thread.iter().map(|r| r.rpcs as f64 / r.secs).collect::<Vec<_>>(),
        "reference": "1 thread, same run", "reference_rpcs_per_sec": one.rate(),
        "scaling": many.rate() / one.rate(),
        "failed": one.failed() + many.failed(), "retransmissions": one.retransmissions() + many.retransmissions(),
    })
}
