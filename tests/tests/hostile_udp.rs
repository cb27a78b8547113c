//! A live server and client over kernel UDP on loopback while a second socket sends them every
//! kind of forged, truncated, corrupted and replayed datagram (replays of the client's and the
//! server's own frames, captured as they are sent). The client's results stay exact: every RPC
//! completes once, with exactly the bytes the server computed.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::sm::{SmBody, SmPktType};
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::{ErpcHdr, PktType, HEADROOM, SM_SESSION_NUM};
use erpc_dataplane::{Completion, HandlerMode, Rpc, RpcConfig};
use erpc_driver::udp::{UdpConfig, UdpTransport};
use erpc_tests::{memory, pattern, tagged_handler, tagged_request, TagServer};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zerocopy::byteorder::{U16, U64};
use zerocopy::IntoBytes;

/// Every frame a transport sends or receives, for the attacker to replay.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// A UDP transport that records the UDP payload of every frame it sends and receives.
struct Tee {
    inner: UdpTransport,
    seen: Seen,
}

impl Transport for Tee {
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn local_addr(&self) -> EndpointAddr {
        self.inner.local_addr()
    }
    fn resolve(
        &mut self,
        r: &EndpointAddr,
    ) -> Result<erpc_dataplane::wire::RoutingInfo, erpc_dataplane::transport::ResolveError> {
        self.inner.resolve(r)
    }
    fn max_tx_in_flight(&self) -> usize {
        self.inner.max_tx_in_flight()
    }
    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let n = self.inner.tx_burst(pkts);
        let mut seen = self.seen.lock().unwrap();
        for p in &pkts[..n] {
            let mut f = vec![0; p.len()];
            // SAFETY: frames handed to tx_burst stay readable until the device has read them.
            unsafe { p.copy_to(&mut f) };
            if seen.len() < 20_000 {
                seen.push(f[HEADROOM..].to_vec());
            }
        }
        n
    }
    fn tx_flush(&mut self) {
        self.inner.tx_flush()
    }
    fn tx_reclaimed(&self) -> u64 {
        self.inner.tx_reclaimed()
    }
    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let n = self.inner.rx_burst(out);
        let mut seen = self.seen.lock().unwrap();
        for p in &out[..n] {
            if seen.len() < 20_000 && p.len as usize > HEADROOM {
                // SAFETY: the transport lent `p.len` readable bytes until rx_release.
                let f = unsafe { std::slice::from_raw_parts(p.data.as_ptr(), p.len as usize) };
                seen.push(f[HEADROOM..].to_vec());
            }
        }
        n
    }
    fn rx_release(&mut self, pkts: &[RxPacket]) {
        self.inner.rx_release(pkts)
    }
}

fn bind(seen: &Seen) -> Tee {
    let inner = UdpTransport::bind(UdpConfig { bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), ..Default::default() })
        .expect("bind");
    Tee { inner, seen: seen.clone() }
}

#[derive(Default)]
struct Client {
    done: HashMap<u64, Vec<Result<Vec<u8>, String>>>,
}

type Ep<Ctx> = Rpc<'static, Tee, StdClock, Ctx>;

fn done(rpc: &mut Ep<Client>, c: Completion) {
    let r = c.result.map(|n| c.resp.data()[..n].to_vec()).map_err(|e| e.to_string());
    rpc.ctx_mut().done.entry(c.tag).or_default().push(r);
    rpc.free_msg_buffer(c.req).unwrap();
    rpc.free_msg_buffer(c.resp).unwrap();
}

/// The datagrams of one attack round: replays, truncations, corruptions and forgeries of what
/// the endpoints sent and received, and session-management frames of every type.
fn attack_round(seen: &[Vec<u8>], round: u64, client: EndpointAddr, server: EndpointAddr) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut x = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..8 {
        if seen.is_empty() {
            break;
        }
        let f = &seen[(rnd() as usize) % seen.len()];
        // Replay as is.
        out.push(f.clone());
        // Truncated to every kind of length.
        out.push(f[..(rnd() as usize) % (f.len() + 1)].to_vec());
        // A byte of the header or data changed.
        let mut g = f.clone();
        if !g.is_empty() {
            let i = (rnd() as usize) % g.len().min(64);
            g[i] ^= 1 << (rnd() % 8);
        }
        out.push(g);
        // A header field forged: another message size, packet number or request number.
        if f.len() >= 14 {
            let mut g = f.clone();
            let w0 = u32::from_le_bytes(g[0..4].try_into().unwrap()) ^ ((rnd() as u32 & 0xFFFF) << 8);
            g[0..4].copy_from_slice(&w0.to_le_bytes());
            out.push(g);
            let mut g = f.clone();
            let w1 =
                u64::from_le_bytes(g[6..14].try_into().unwrap()) ^ ((rnd() & 0x3FFF) << 2) ^ ((rnd() & 0xFF) << 16);
            g[6..14].copy_from_slice(&w1.to_le_bytes());
            out.push(g);
        }
    }
    // Crafted packets of every type to the low session numbers.
    for ty in [PktType::Req, PktType::Rfr, PktType::ExplCr, PktType::Resp] {
        let h = ErpcHdr::new(1, (rnd() % 5000) as u32, (rnd() % 4) as u16, ty, (rnd() % 8) as u16, rnd() & 0xFFF);
        let mut g = h.as_bytes().to_vec();
        g.extend_from_slice(&pattern(rnd(), (rnd() % 1400) as usize));
        out.push(g);
    }
    // Session management of every type, claiming the client's or the server's address.
    for kind in 1..=8u8 {
        let body = SmBody {
            err: (rnd() % 8) as u8,
            _pad: [0; 3],
            client_session: U16::new((rnd() % 4) as u16),
            server_session: U16::new((rnd() % 4) as u16),
            token: U64::new(rnd()),
            client: client.into(),
            server: server.into(),
        };
        let h = ErpcHdr::new(kind, 40, SM_SESSION_NUM, PktType::Req, 0, rnd() & 0xFFF_FFFF_FFFF);
        let mut g = h.as_bytes().to_vec();
        g.extend_from_slice(body.as_bytes());
        out.push(g);
    }
    // Garbage.
    out.push(pattern(rnd(), (rnd() % 1500) as usize));
    let _ = SmPktType::ConnectReq;
    out
}

#[test]
fn forged_datagrams_change_no_result() {
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let server_t = bind(&seen);
    let server_addr = server_t.local_addr();
    let cfg = RpcConfig { mtu: 1514, ..RpcConfig::default() };
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut srv = Rpc::new(server_t, StdClock::default(), TagServer::default(), memory(64 << 20, 16, 64), cfg)
                .expect("server");
            srv.register_handler(1, tagged_handler, HandlerMode::Foreground).unwrap();
            while !stop.load(Ordering::Relaxed) {
                srv.run_event_loop_once();
            }
            (std::mem::take(srv.ctx_mut()), srv.stats().drops)
        })
    };
    let mut cli = Rpc::new(bind(&seen), StdClock::default(), Client::default(), memory(64 << 20, 4, 256), cfg).unwrap();
    let client_addr = cli.local_addr();
    let s = cli.create_session(server_addr).unwrap();
    let t0 = Instant::now();
    while !cli.is_connected(s) {
        assert!(t0.elapsed() < Duration::from_secs(5), "connect");
        cli.run_event_loop_once();
    }
    // The attacker: its own socket, sending to both ends as fast as it can.
    let sent = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, seen, sent) = (stop.clone(), seen.clone(), sent.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut round = 1;
            while !stop.load(Ordering::Relaxed) {
                let snapshot: Vec<Vec<u8>> = seen.lock().unwrap().iter().rev().take(64).cloned().collect();
                for d in attack_round(&snapshot, round, client_addr, server_addr) {
                    for to in [server_addr.udp_port, client_addr.udp_port] {
                        if sock.send_to(&d, (Ipv4Addr::LOCALHOST, to)).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                round += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // RPCs of every shape, 8 in flight and more in the backlog: one packet, several packets
    // each way. At least 600, and as many more as it takes the attacker (whose pace is the
    // scheduler's) to send 10,000 datagrams while they run.
    let shapes = [(16usize, 16usize), (3000, 24), (40, 5000), (9000, 9000)];
    let mut total = 0u64;
    let t_all = Instant::now();
    while total < 600 || (sent.load(Ordering::Relaxed) < 10_000 && t_all.elapsed() < Duration::from_secs(30)) {
        let tag = total;
        total += 1;
        let (q, r) = shapes[tag as usize % shapes.len()];
        let req = tagged_request(&mut cli, tag, q, r);
        let resp = cli.alloc_msg_buffer(r).unwrap();
        cli.enqueue_request(s, 1, req, resp, done, tag).unwrap();
        if tag % 32 == 31 {
            let t = Instant::now();
            while cli.ctx().done.len() < tag as usize - 16 && t.elapsed() < Duration::from_secs(20) {
                cli.run_event_loop_once();
            }
        }
    }
    let t = Instant::now();
    while (cli.ctx().done.len() as u64) < total && t.elapsed() < Duration::from_secs(30) {
        cli.run_event_loop_once();
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    let forged = sent.load(Ordering::Relaxed);
    let (srv, srv_drops) = server.join().unwrap();
    let c = cli.ctx();
    assert_eq!(c.done.len() as u64, total, "every RPC completed");
    for tag in 0..total {
        let r = &c.done[&tag];
        assert_eq!(r.len(), 1, "RPC {tag} completed {} times", r.len());
        let want = pattern(!tag, shapes[tag as usize % shapes.len()].1);
        assert_eq!(r[0].as_ref().map(|v| v == &want), Ok(true), "RPC {tag}: wrong or failed result");
    }
    assert!(srv.runs.values().all(|&n| n == 1), "a handler ran twice");
    assert_eq!(srv.corrupt_requests, 0, "the server saw a corrupted request");
    // The attack reached both ends and was refused there.
    assert!(forged > 10_000, "only {forged} forged datagrams sent");
    let (cd, sd) = (cli.stats().drops.total(), srv_drops.total());
    assert!(cd > 1000 && sd > 1000, "drops: client {cd}, server {sd}");
    println!("{forged} forged datagrams; dropped: client {:?}, server {srv_drops:?}", cli.stats().drops);
}
