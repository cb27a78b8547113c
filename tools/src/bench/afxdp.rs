//! `erpc bench --transport afxdp`: eRPC over AF_XDP sockets.
//!
//! With neither `--server` nor `--connect`, both ends run here: this command creates two network
//! namespaces joined by a veth pair (root needed; deleted again when it ends), and each end runs
//! on its own thread inside its namespace. The reference is eRPC over the UDP transport on the
//! same veth pair with the same sizes and window, measured right after: what AF_XDP saves over
//! the kernel's UDP path.
//!
//! `--server ADDR --interface IF` and `--connect ADDR --interface IF [--bind ADDR]` run one end
//! each, on real interfaces; the client finds the server's MAC through the neighbour table.

use super::{run_client, udp, BenchArgs, Mode, Report};
use crate::endpoints::{afxdp_memory, afxdp_on, region_bytes, serve_until, server, Server};
use crate::netns::{self, VethPair};
use anyhow::{anyhow, Context};
use erpc_dataplane::transport::EndpointAddr;
use erpc_driver::afxdp::AfXdpTransport;
use erpc_hugepages::PageSize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// The port of the AF_XDP server when both ends run here, and the client's default.
const SERVER_PORT: u16 = 31850;
const CLIENT_PORT: u16 = 31851;
/// The UMEM's pages.
const PAGE: PageSize = PageSize::Huge2M;

fn serve_on(t: AfXdpTransport, a: &BenchArgs) -> anyhow::Result<Server<AfXdpTransport>> {
    let mem = afxdp_memory(&t);
    server(t, a.resp_size, mem, a.rpc_config())
}

fn client(t: AfXdpTransport, a: &BenchArgs, to: EndpointAddr, req: usize, conc: usize) -> anyhow::Result<Report> {
    let mem = afxdp_memory(&t);
    let what = format!("afxdp {}", SocketAddrV4::from(to));
    let (r, cli) = run_client(t, mem, a.rpc_config(), a, to, &what, req, conc)?;
    let stalls = cli.transport().stats().tx_flush_stalls;
    if stalls > 0 {
        eprintln!("erpc bench: {stalls} AF_XDP flushes waited over a second (interface down?)");
    }
    Ok(r)
}

/// Runs `server_end` on a thread in namespace `b` and `client_end` on one in namespace `a`.
/// The server end reports its address, or why it could not start, on the channel, then serves
/// until the flag is set.
fn both_ends<A: Send + 'static, R: Send + 'static>(
    pair: &VethPair,
    server_end: impl FnOnce(mpsc::Sender<anyhow::Result<A>>, Arc<AtomicBool>) -> anyhow::Result<()> + Send + 'static,
    client_end: impl FnOnce(A) -> anyhow::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (nb, st) = (pair.b.netns.clone(), stop.clone());
    let h = std::thread::spawn(move || match netns::enter(&nb) {
        Ok(()) => server_end(tx, st),
        Err(e) => {
            let _ = tx.send(Err(e));
            Ok(())
        }
    });
    let addr = match rx.recv() {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            let _ = h.join();
            return Err(e);
        }
        Err(_) => {
            h.join().map_err(|_| anyhow!("the server thread panicked"))??;
            return Err(anyhow!("the server thread ended before it started serving"));
        }
    };
    let na = pair.a.netns.clone();
    let c = std::thread::spawn(move || {
        netns::enter(&na)?;
        client_end(addr)
    });
    let r = c.join().map_err(|_| anyhow!("the client thread panicked"));
    stop.store(true, Ordering::Relaxed);
    h.join().map_err(|_| anyhow!("the server thread panicked"))??;
    r?
}

pub(crate) fn run(a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<Report> {
    let bytes = region_bytes(req, a.resp_size, conc, 1400);
    let need_if = || a.interface.clone().context("--transport afxdp with --server or --connect needs --interface");
    if let Some(addr) = a.server {
        // 0.0.0.0: the interface's own address.
        let ip = (!addr.ip().is_unspecified()).then_some(*addr.ip());
        let t = afxdp_on(&need_if()?, ip, addr.port(), bytes, PAGE, a.xdp_mode.attach())?;
        let mut srv = serve_on(t, a)?;
        eprintln!("erpc bench: serving on afxdp {addr} (Ctrl-C to stop)");
        serve_until(&mut srv, None);
        unreachable!("the server runs until killed");
    }
    if let Some(to) = a.connect {
        let bind = a.bind.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT));
        let ip = (!bind.ip().is_unspecified()).then_some(*bind.ip());
        let port = if bind.port() == 0 { CLIENT_PORT } else { bind.port() };
        let t = afxdp_on(&need_if()?, ip, port, bytes, PAGE, a.xdp_mode.attach())?;
        return client(t, a, EndpointAddr::from(to), req, conc);
    }

    let pair = VethPair::create()?;
    let (ia, ib) = (pair.a.interface.clone(), pair.b.interface.clone());
    let attach = a.xdp_mode.attach();
    let args = a.clone();
    let mut r = both_ends(
        &pair,
        move |ready, stop| {
            let mut srv = match afxdp_on(&ib, None, SERVER_PORT, bytes, PAGE, attach).and_then(|t| serve_on(t, &args)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return Ok(());
                }
            };
            let _ = ready.send(Ok(srv.local_addr()));
            serve_until(&mut srv, Some(&stop));
            Ok(())
        },
        {
            let args = a.clone();
            move |to| client(afxdp_on(&ia, None, CLIENT_PORT, bytes, PAGE, attach)?, &args, to, req, conc)
        },
    )?;

    // The reference: eRPC over kernel UDP on the same veth pair.
    let (ipa, ipb) = (pair.a.ipv4, pair.b.ipv4);
    let (args_s, args_c) = (a.clone(), a.clone());
    let resp = a.resp_size;
    let u = both_ends(
        &pair,
        move |ready, stop| {
            udp::serve(SocketAddrV4::new(ipb, 0), resp, bytes, args_s.rpc_config(), Some(ready), Some(stop))
        },
        move |server| {
            let mut quiet = args_c;
            quiet.json = true; // one progress bar is enough
            udp::client(&quiet, SocketAddrV4::new(ipa, 0), server, req, conc)
        },
    )?;
    drop(pair);
    r.reference = "eRPC over the UDP transport on the same veth pair";
    r.reference_pps = u.rpcs as f64 / u.secs;
    r.reference_trips = u.rpcs;
    r.reference_p50_us = match (a.mode, &u.hist) {
        (Mode::Latency, Some(h)) => Some(h.value_at_quantile(0.5) as f64 / 1000.0),
        _ => None,
    };
    Ok(r)
}
