//! `erpc bench --transport sim`: both endpoints on this thread over the in-memory NIC, against
//! the raw packet echo of the same NIC with the same frame sizes and window.

use super::{measure, BenchArgs, Client, Mode, Report};
use crate::endpoints::{clock, connect, memory, region_bytes, rpc_config, server, sim_pair, Clk, SimPort};
use anyhow::Context;
use erpc_dataplane::config::DEFAULT_MTU;
use erpc_dataplane::transport::{RxPacket, Segment, Transport, TxPacket};
use erpc_dataplane::wire::{ErpcHdr, PktType, RoutingInfo, HEADROOM, PKT_HDR_LEN};
use erpc_dataplane::Rpc;
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

pub(super) fn run(a: &BenchArgs, req: usize, conc: usize) -> anyhow::Result<Report> {
    let (mode, resp, secs, lag, cc) = (a.mode, a.resp_size, a.duration, a.sim_tx_lag, !a.no_cc);
    let clk = clock();
    let (pa, pb) = sim_pair(clk, 1, 512, lag);
    let need = region_bytes(req, resp, conc, DEFAULT_MTU - PKT_HDR_LEN);
    let cfg = rpc_config(DEFAULT_MTU, cc);
    let mut srv = server(pb, resp, memory(need), cfg)?;
    let mut cli = Rpc::new(pa, clk, Client::default(), memory(need), cfg).context("building the client endpoint")?;
    let to = srv.local_addr();
    let s = connect(&mut cli, &mut || srv.run_event_loop_once(), to, "the in-memory server")?;
    let mut r = measure(&mut cli, || srv.run_event_loop_once(), s, mode, req, resp, conc, secs, a.progress())?;
    r.reference = "raw packet echo over the same NIC, same frame sizes and window";
    (r.reference_pps, r.reference_trips) = raw_echo(clk, req, resp, conc, secs.min(2.0), lag);
    r.memcpy_gbps = (mode == Mode::Bandwidth).then(|| memcpy_gbps(req, secs.min(2.0)));
    r.deferred_frees = srv.stats().deferred_frees;
    r.cc = cc;
    Ok(r)
}

/// memcpy throughput (Gb/s) of `size`-byte buffers: the in-memory NIC copies every byte twice
/// (device "DMA" into a receive buffer, then into the msgbuf), so half of this is the ceiling.
fn memcpy_gbps(size: usize, secs: f64) -> f64 {
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    let mut bytes = 0u64;
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    while start.elapsed() < dur {
        for _ in 0..16 {
            dst.copy_from_slice(std::hint::black_box(&src));
            bytes += size as u64;
        }
        std::hint::black_box(&mut dst);
    }
    bytes as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// Round trips per second, and round trips, of raw frames over the same in-memory NIC: `conc`
/// frames of the request's first-packet size go out, each is echoed back as a response-sized
/// frame.
fn raw_echo(clk: Clk, req: usize, resp: usize, conc: usize, secs: f64, lag: usize) -> (f64, u64) {
    let (mut a, mut b) = sim_pair(clk, 2, 512, lag);
    let (aa, ba) = (a.local_addr(), b.local_addr());
    let frame = |src, dst, data: usize| {
        let data = data.min(DEFAULT_MTU - PKT_HDR_LEN);
        let mut f = vec![0u8; PKT_HDR_LEN + data];
        let mut hr = [0u8; HEADROOM];
        RoutingInfo::new(src, dst).write(&mut hr, 14 + data);
        f[..HEADROOM].copy_from_slice(&hr);
        f[HEADROOM..PKT_HDR_LEN].copy_from_slice(ErpcHdr::new(1, data as u32, 0, PktType::Req, 0, 8).as_bytes());
        f
    };
    // The NICs read a frame after `tx_burst` (lazy TX), by their next `rx_burst`s at the latest:
    // nothing polls this fabric once this function returns, so the frames outlive every read.
    let (fa, fb) = (frame(&aa, &ba, req), frame(&ba, &aa, resp));
    let pkt =
        |f: &[u8]| TxPacket { segs: [Segment { vaddr: f.as_ptr(), iova: 0, len: f.len() as u32 }, Segment::EMPTY] };
    let (ta, tb) = (vec![pkt(&fa); conc], vec![pkt(&fb); 32]);
    let mut rx = [RxPacket::EMPTY; 32];
    let mut in_flight = 0usize;
    let mut echoes = 0u64;
    let mut step = |a: &mut SimPort, b: &mut SimPort, echoes: &mut u64| {
        if in_flight < conc {
            in_flight += a.tx_burst(&ta[..conc - in_flight]);
        }
        let n = b.rx_burst(&mut rx);
        b.rx_release(&rx[..n]);
        b.tx_burst(&tb[..n]);
        let m = a.rx_burst(&mut rx);
        a.rx_release(&rx[..m]);
        in_flight -= m;
        *echoes += m as u64;
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        step(&mut a, &mut b, &mut echoes);
    }
    echoes = 0;
    let start = Instant::now();
    let dur = Duration::from_secs_f64(secs);
    while start.elapsed() < dur {
        for _ in 0..256 {
            step(&mut a, &mut b, &mut echoes);
        }
    }
    (echoes as f64 / start.elapsed().as_secs_f64(), echoes)
}
