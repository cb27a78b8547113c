//! The UDP socket transport on loopback: the loopback scenarios, malformed datagrams, errors.
//!
//! What it covers: the UDP transport on loopback — the same loopback scenarios (3 MB messages, 1%
//! loss), the headroom synthesised from a datagram's source, oversized datagrams and garbage
//! dropped and counted, bind errors that say what to do, several endpoints in one process on
//! threads.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::transport::{RxPacket, Transport};
use erpc_dataplane::{OwnedMemory, RpcConfig};
use erpc_driver::udp::{UdpConfig, UdpError, UdpTransport};
use erpc_tests::scenarios::{Loopback, LoopbackConfig};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

fn any_port() -> UdpConfig {
    UdpConfig { bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), ..Default::default() }
}

fn memory(bytes: usize) -> OwnedMemory {
    erpc_tests::memory(bytes, 4, 64)
}

#[test]
fn loopback_scenarios_over_udp() {
    let a = UdpTransport::bind(any_port()).expect("bind a");
    let b = UdpTransport::bind(any_port()).expect("bind b");
    let lcfg = LoopbackConfig {
        small_rpcs: 2000,
        large_size: 3 << 20,
        loss: 0.01,
        phase_timeout_ns: 60_000_000_000,
        ..Default::default()
    };
    let rpc_cfg = RpcConfig { rto_ns: 5_000_000, mtu: 1514, ..RpcConfig::default() };
    let mut lb = Loopback::connect(a, b, memory(32 << 20), memory(32 << 20), StdClock::default(), rpc_cfg, &lcfg)
        .expect("connect");
    let report = lb.run_all(&lcfg).expect("scenarios");
    println!("{report}");
    let sa = lb.client.transport().inner().stats();
    let sb = lb.server.transport().inner().stats();
    assert!(sa.tx_datagrams > 5000 && sb.rx_datagrams > 5000, "{sa:?} {sb:?}");
    assert_eq!(sa.tx_errors + sa.tx_malformed + sa.rx_truncated + sa.rx_bad_release, 0, "{sa:?}");
    assert_eq!(sb.tx_errors + sb.tx_malformed + sb.rx_truncated + sb.rx_bad_release, 0, "{sb:?}");
    // The 3 MB messages' packets left in UDP_SEGMENT runs and arrived coalesced, none dropped
    // for want of a buffer.
    assert!(sa.tx_gso_sends > 0 && sb.rx_gro_on == 1 && sb.rx_gro_receives > 0, "{sa:?} {sb:?}");
    assert_eq!(sa.rx_no_buffer + sb.rx_no_buffer, 0, "{sa:?} {sb:?}");
}

fn recv_one(t: &mut UdpTransport) -> Option<Vec<u8>> {
    erpc_tests::receive_one(t, Duration::from_secs(1))
}

#[test]
fn received_datagrams_get_the_headroom_of_their_source() {
    let mut t = UdpTransport::bind(any_port()).unwrap();
    let me = t.local_addr();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    peer.send_to(b"hello eRPC", ("127.0.0.1", me.udp_port)).unwrap();
    let f = recv_one(&mut t).expect("datagram");
    assert_eq!(f.len(), 42 + 10);
    assert_eq!(&f[42..], b"hello eRPC");
    assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4 ethertype");
    assert_eq!(&f[26..30], &[127, 0, 0, 1], "source IP");
    assert_eq!(u16::from_be_bytes([f[34], f[35]]), peer_port, "source port");
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), me.udp_port, "destination port");
    assert_eq!(u16::from_be_bytes([f[38], f[39]]), 8 + 10, "UDP length");
    // A forged release is ignored and counted.
    t.rx_release(&[RxPacket { id: 100_000, ..RxPacket::EMPTY }]);
    assert_eq!(t.stats().rx_bad_release, 1);
}

/// The transport keeps the headroom template of the last source: datagrams from sources that
/// take turns (and a source on another local address) each get their own source's headroom,
/// with a valid IPv4 checksum.
#[test]
fn datagrams_from_sources_taking_turns_get_each_their_own_headroom() {
    let mut t = UdpTransport::bind(any_port()).unwrap();
    let me = t.local_addr();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let c = UdpSocket::bind("127.0.0.2:0").unwrap();
    let order = [&a, &a, &b, &a, &c, &c, &b, &b, &a, &c];
    for (k, s) in order.iter().enumerate() {
        let body = format!("datagram {k}");
        s.send_to(body.as_bytes(), ("127.0.0.1", me.udp_port)).unwrap();
        let f = recv_one(&mut t).expect("datagram");
        assert_eq!(&f[42..], body.as_bytes());
        let from = s.local_addr().unwrap();
        let std::net::SocketAddr::V4(from) = from else { unreachable!() };
        assert_eq!(&f[26..30], &from.ip().octets(), "datagram {k}: source IP");
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), from.port(), "datagram {k}: source port");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, 20 + 8 + body.len(), "datagram {k}: IPv4 length");
        // The IPv4 header sums to 0xFFFF with its checksum (RFC 1071).
        let sum: u32 = f[14..34].chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
        let folded = (sum & 0xFFFF) + (sum >> 16);
        assert_eq!((folded & 0xFFFF) + (folded >> 16), 0xFFFF, "datagram {k}: IPv4 checksum");
    }
}

#[test]
fn oversized_datagrams_are_dropped_and_counted() {
    let mut t = UdpTransport::bind(any_port()).unwrap();
    let port = t.local_addr().udp_port;
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(&[7u8; 4000], ("127.0.0.1", port)).unwrap();
    peer.send_to(&[8u8; 100], ("127.0.0.1", port)).unwrap();
    let f = recv_one(&mut t).expect("the small datagram still arrives");
    assert_eq!(&f[42..], &[8u8; 100][..]);
    assert_eq!(t.stats().rx_truncated, 1);
}

/// An idle transport waits with `recvfrom` for one datagram (cheaper to poll than
/// `recvmmsg`): what it receives that way gets the same checks and headroom.
#[test]
fn datagrams_received_after_an_idle_poll_are_checked_alike() {
    // An MTU that is a multiple of 64: the receive buffer holds exactly the largest datagram,
    // so one byte more is truncated by the kernel and only its reported length tells.
    let mut t = UdpTransport::bind(UdpConfig { mtu: 1024, ..any_port() }).unwrap();
    let me = t.local_addr();
    let mut out = [RxPacket::EMPTY; 8];
    assert_eq!(t.rx_burst(&mut out), 0, "nothing yet: the transport is idle");
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    peer.send_to(&[7u8; 1024 - 42 + 1], ("127.0.0.1", me.udp_port)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(t.rx_burst(&mut out), 0, "the oversized datagram is dropped");
    assert_eq!(t.stats().rx_truncated, 1);
    assert_eq!(t.rx_burst(&mut out), 0, "idle again");
    peer.send_to(b"after idle", ("127.0.0.1", me.udp_port)).unwrap();
    let f = recv_one(&mut t).expect("datagram");
    assert_eq!(&f[42..], b"after idle");
    assert_eq!(&f[26..30], &[127, 0, 0, 1], "source IP");
    assert_eq!(u16::from_be_bytes([f[34], f[35]]), peer_port, "source port");
    assert_eq!(u16::from_be_bytes([f[38], f[39]]), 8 + 10, "UDP length");
    assert_eq!(t.stats().rx_datagrams, 2);
    assert_eq!(t.stats().rx_gro_on, 0, "one datagram at a time never turns UDP_GRO on");
}

#[test]
fn garbage_reaching_an_endpoint_is_dropped_and_counted() {
    let t = UdpTransport::bind(any_port()).unwrap();
    let port = t.local_addr().udp_port;
    let mut rpc = erpc_dataplane::Rpc::new(t, StdClock::default(), (), memory(1 << 20), RpcConfig::default()).unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    for len in [0usize, 1, 15, 16, 17, 100, 1472] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        peer.send_to(&junk, ("127.0.0.1", port)).unwrap();
    }
    let t0 = Instant::now();
    while rpc.stats().drops.total() < 7 && t0.elapsed() < Duration::from_secs(2) {
        rpc.run_event_loop_once();
    }
    assert_eq!(rpc.stats().drops.total(), 7, "{:?}", rpc.stats().drops);
}

#[test]
fn bad_bind_addresses_say_what_to_do() {
    let e = UdpTransport::bind(UdpConfig { bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), ..Default::default() })
        .err()
        .unwrap();
    assert!(matches!(e, UdpError::Unspecified) && e.to_string().contains("not 0.0.0.0"), "{e}");
    let a = UdpTransport::bind(any_port()).unwrap();
    let taken = SocketAddrV4::new(Ipv4Addr::LOCALHOST, a.local_addr().udp_port);
    let e = UdpTransport::bind(UdpConfig { bind: taken, ..Default::default() }).err().unwrap();
    assert!(e.to_string().contains("in use by another process"), "{e}");
    // The OS error is there for programs: as the error's source.
    let os =
        std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()).expect("an io::Error source");
    assert_eq!(os.kind(), std::io::ErrorKind::AddrInUse);
    let e =
        UdpTransport::bind(UdpConfig { bind: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 0), ..Default::default() })
            .err()
            .unwrap();
    assert!(e.to_string().contains("not an address of this machine"), "{e}");
    let e = UdpTransport::bind(UdpConfig { mtu: 10, ..any_port() }).err().unwrap();
    assert!(e.to_string().contains("mtu = 10"), "{e}");
}

/// With every buffer lent, receiving waits for releases; buffers released in any order are
/// posted again, and no datagram is lost or mixed up on the way (the receive slots stay a
/// prefix when they cannot all be refilled).
#[test]
fn lent_buffers_come_back_in_any_order_and_nothing_is_mixed_up() {
    let mut t = UdpTransport::bind(UdpConfig { rx_buffers: 6, batch: 4, ..any_port() }).unwrap();
    let port = t.local_addr().udp_port;
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut next_sent = 0u32;
    let mut next_seen = 0u32;
    let mut held: Vec<RxPacket> = Vec::new();
    let mut out = [RxPacket::EMPTY; 8];
    let t0 = Instant::now();
    while next_seen < 200 {
        assert!(t0.elapsed() < Duration::from_secs(10), "stuck at {next_seen}");
        // Uneven bursts, so a receive often fills fewer slots than are posted.
        let burst = 1 + (next_sent % 3);
        for _ in 0..burst {
            if next_sent < 200 && next_sent < next_seen + 5 {
                peer.send_to(&next_sent.to_le_bytes(), ("127.0.0.1", port)).unwrap();
                next_sent += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(50));
        let n = t.rx_burst(&mut out[..1 + (next_seen as usize % 4)]);
        for p in &out[..n] {
            // SAFETY: lent until released.
            let f = unsafe { std::slice::from_raw_parts(p.data.as_ptr(), p.len as usize) };
            assert_eq!(f.len(), 42 + 4);
            assert_eq!(u32::from_le_bytes(f[42..46].try_into().unwrap()), next_seen, "in order, none lost");
            next_seen += 1;
            held.push(*p);
        }
        assert!(held.len() <= 6, "never more lent than there are buffers");
        // Release some, alternating ends, so buffers return out of order.
        if held.len() >= 5 || (n == 0 && !held.is_empty()) {
            let p = if next_seen % 2 == 0 { held.remove(0) } else { held.pop().unwrap() };
            t.rx_release(&[p]);
        }
    }
    t.rx_release(&held);
    // No buffer went missing: all six can be lent at once again.
    for i in 0..6u32 {
        peer.send_to(&(1000 + i).to_le_bytes(), ("127.0.0.1", port)).unwrap();
    }
    let mut lent = Vec::new();
    let t1 = Instant::now();
    while lent.len() < 6 && t1.elapsed() < Duration::from_secs(2) {
        let n = t.rx_burst(&mut out);
        lent.extend_from_slice(&out[..n]);
    }
    assert_eq!(lent.len(), 6, "every buffer is back in use");
    t.rx_release(&lent);
    assert_eq!(t.stats().rx_datagrams, 206);
    assert_eq!(t.stats().rx_bad_release, 0);
}

/// Several endpoints in one process, one socket and one thread each, all on 127.0.0.1 with
/// their own ports: RPCs between every pair (small, 3 MB, then 1% loss), one endpoint closing
/// after the first phase while the others carry on.
#[test]
fn several_endpoints_in_one_process_on_threads() {
    use erpc_tests::mesh::{run_mesh, MeshConfig};
    let eps: Vec<_> = (0..4)
        .map(|_| (UdpTransport::bind(any_port()).expect("bind"), erpc_tests::memory(48 << 20, 16, 256)))
        .collect();
    let ports: Vec<u16> = eps.iter().map(|(t, _)| t.local_addr().udp_port).collect();
    assert!(ports.iter().all(|&p| ports.iter().filter(|&&q| q == p).count() == 1), "{ports:?}");
    let cfg = MeshConfig {
        small_rpcs: 300,
        large_size: 3 << 20,
        loss: 0.01,
        close_after_phase1: Some(2),
        phase_timeout: Duration::from_secs(60),
        ..MeshConfig::default()
    };
    let rpc_cfg = RpcConfig { rto_ns: 5_000_000, mtu: 1514, ..RpcConfig::default() };
    let reports = run_mesh(eps, rpc_cfg, &cfg, |t: &UdpTransport| {
        let s = t.stats();
        if s.tx_errors + s.tx_malformed + s.rx_truncated + s.rx_bad_release > 0 {
            return Err(format!("{s:?}"));
        }
        Ok(format!("{} datagrams received", s.rx_datagrams))
    })
    .expect("the mesh");
    for r in &reports {
        println!("{r}");
    }
    assert!(reports[2].closed);
    // Everyone but the closer talked to every other endpoint.
    for r in reports.iter().filter(|r| !r.closed) {
        assert_eq!(r.completed.len(), 3, "endpoint {}: {:?}", r.index, r.completed);
    }
    assert!(reports.iter().map(|r| r.retransmissions).sum::<u64>() > 0);
}

fn echo_prealloc(rpc: &mut erpc_dataplane::Rpc<'static, UdpTransport, StdClock, ()>, h: erpc_dataplane::ReqHandle) {
    let _ = rpc.respond_prealloc_with(h, |req, resp| {
        resp[..req.len()].copy_from_slice(req);
        req.len()
    });
}

fn count_done(rpc: &mut erpc_dataplane::Rpc<'static, UdpTransport, StdClock, u64>, c: erpc_dataplane::Completion) {
    if c.result == Ok(5) && c.resp.data() == b"moved" {
        *rpc.ctx_mut() += 1;
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// An endpoint is `Send`: built on one thread, it serves (or calls) from another, as a program
/// that sets up all its endpoints first and then hands each to a worker thread does.
#[test]
fn endpoints_built_on_one_thread_run_on_others() {
    use erpc_dataplane::{HandlerMode, Rpc};
    let mut srv = Rpc::new(
        UdpTransport::bind(any_port()).unwrap(),
        StdClock::default(),
        (),
        memory(1 << 20),
        RpcConfig::default(),
    )
    .unwrap();
    srv.register_handler(1, echo_prealloc, HandlerMode::Foreground).unwrap();
    let mut cli = Rpc::new(
        UdpTransport::bind(any_port()).unwrap(),
        StdClock::default(),
        0u64,
        memory(1 << 20),
        RpcConfig::default(),
    )
    .unwrap();
    let to = srv.local_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let server = std::thread::spawn(move || {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            srv.run_event_loop_once();
        }
        srv.stats().requests_handled
    });
    let client = std::thread::spawn(move || {
        let s = cli.create_session(to).unwrap();
        let t0 = Instant::now();
        while cli.session_state(s) != erpc_dataplane::SessionState::Connected && t0.elapsed() < Duration::from_secs(5) {
            cli.run_event_loop_once();
        }
        for _ in 0..10 {
            let mut req = cli.alloc_msg_buffer(5).unwrap();
            req.data_mut().copy_from_slice(b"moved");
            let resp = cli.alloc_msg_buffer(5).unwrap();
            cli.enqueue_request(s, 1, req, resp, count_done, 0).unwrap();
        }
        while *cli.ctx() < 10 && t0.elapsed() < Duration::from_secs(5) {
            cli.run_event_loop_once();
        }
        *cli.ctx()
    });
    let done = client.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(done, 10, "every RPC answered with its bytes");
    assert_eq!(server.join().unwrap(), 10);
}

/// Frames of `payloads` from `src` to `dst`, each its headroom followed by its payload (one
/// segment), kept in `store`; the packets point into it.
fn frames(
    src: &erpc_dataplane::transport::EndpointAddr,
    dst: &erpc_dataplane::transport::EndpointAddr,
    payloads: &[Vec<u8>],
    store: &mut Vec<Vec<u8>>,
) -> Vec<erpc_dataplane::transport::TxPacket> {
    use erpc_dataplane::transport::{Segment, TxPacket};
    use erpc_dataplane::wire::{RoutingInfo, HEADROOM};
    let route = RoutingInfo::new(src, dst);
    *store = payloads
        .iter()
        .map(|p| {
            let mut hr = [0u8; HEADROOM];
            route.write(&mut hr, p.len());
            [&hr[..], p].concat()
        })
        .collect();
    store
        .iter()
        .map(|f| TxPacket { segs: [Segment { vaddr: f.as_ptr(), iova: 0, len: f.len() as u32 }, Segment::EMPTY] })
        .collect()
}

/// Payload `i` of a run: its number, then a pattern, `len` bytes.
fn numbered(i: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|k| (k as u32 * 7 + i) as u8).collect();
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// Receives until `n` packets came or 2 s passed, in bursts of at most `burst`, checking each
/// against `want` in order and releasing it; how many came.
fn receive_in_order(t: &mut UdpTransport, want: &[Vec<u8>], burst: usize, src_port: u16) -> usize {
    let mut out = vec![RxPacket::EMPTY; burst];
    let mut seen = 0;
    let t0 = Instant::now();
    while seen < want.len() && t0.elapsed() < Duration::from_secs(2) {
        let n = t.rx_burst(&mut out);
        for p in &out[..n] {
            // SAFETY: lent until released below.
            let f = unsafe { std::slice::from_raw_parts(p.data.as_ptr(), p.len as usize) };
            assert_eq!(&f[42..], &want[seen][..], "packet {seen}: whole and in order");
            assert_eq!(u16::from_be_bytes([f[34], f[35]]), src_port, "source port of packet {seen}");
            assert_eq!(u16::from_be_bytes([f[38], f[39]]) as usize, 8 + want[seen].len(), "UDP length");
            seen += 1;
        }
        t.rx_release(&out[..n]);
    }
    seen
}

/// A run of equal packets to one destination leaves as one UDP_SEGMENT send; the receiver,
/// once a receive brought several datagrams, turns UDP_GRO on and splits coalesced runs back
/// into packets, whole and in order, however few the caller takes at a time.
#[test]
fn runs_of_packets_go_as_one_gso_send_and_coalesced_runs_are_split_in_order() {
    // A batch that takes the whole burst in one call.
    let mut a = UdpTransport::bind(UdpConfig { batch: 64, rx_buffers: 64, ..any_port() }).unwrap();
    let mut b = UdpTransport::bind(any_port()).unwrap();
    let (sa, sb) = (a.local_addr(), b.local_addr());
    // 30 packets of 1,400 bytes and a shorter last one, then 5 small ones of another size.
    let mut run: Vec<Vec<u8>> = (0..30).map(|i| numbered(i, 1400)).collect();
    run.push(numbered(30, 333));
    run.extend((31..36).map(|i| numbered(i, 48)));
    let mut store = Vec::new();
    let pkts = frames(&sa, &sb, &run, &mut store);
    assert_eq!(a.tx_burst(&pkts), pkts.len());
    let s = a.stats();
    assert_eq!(s.tx_datagrams, 36);
    assert_eq!((s.tx_gso_sends, s.tx_gso_datagrams), (2, 36), "two runs: 31 packets, then 5: {s:?}");
    // Not yet coalesced: the receiver turns UDP_GRO on after this burst.
    assert_eq!(receive_in_order(&mut b, &run, 32, sa.udp_port), run.len());
    assert_eq!(b.stats().rx_gro_on, 1, "{:?}", b.stats());
    for burst in [32, 3, 1] {
        assert_eq!(a.tx_burst(&pkts), pkts.len());
        assert_eq!(receive_in_order(&mut b, &run, burst, sa.udp_port), run.len(), "burst {burst}");
    }
    let s = b.stats();
    assert!(s.rx_gro_receives >= 3 && s.rx_gro_datagrams >= 3 * 31, "{s:?}");
    assert_eq!(s.rx_datagrams, 4 * 36, "{s:?}");
    assert_eq!(s.rx_truncated + s.rx_no_buffer + s.rx_bad_release, 0, "{s:?}");
}

/// A receiver with 40 receive buffers and a batch of 8, which `a`'s burst of 8 datagrams has
/// made turn UDP_GRO on.
fn gro_on_with_40_buffers(a: &mut UdpTransport) -> UdpTransport {
    let mut b = UdpTransport::bind(UdpConfig { rx_buffers: 40, batch: 8, ..any_port() }).unwrap();
    let (sa, sb) = (a.local_addr(), b.local_addr());
    let warm: Vec<Vec<u8>> = (0..8).map(|i| numbered(i, 100)).collect();
    let mut store = Vec::new();
    a.tx_burst(&frames(&sa, &sb, &warm, &mut store));
    assert_eq!(receive_in_order(&mut b, &warm, 8, sa.udp_port), 8);
    assert_eq!(b.stats().rx_gro_on, 1);
    b
}

/// A coalesced run larger than the free receive buffers: the packets without a buffer are
/// dropped and counted (as a NIC drops with an empty ring), the rest arrive, and the transport
/// goes on.
#[test]
fn a_coalesced_run_beyond_the_free_buffers_loses_only_its_tail() {
    let mut a = UdpTransport::bind(any_port()).unwrap();
    let mut b = gro_on_with_40_buffers(&mut a);
    let (sa, sb) = (a.local_addr(), b.local_addr());
    let mut store = Vec::new();
    // Hold 20 buffers; 8 are posted, so 12 are free for a coalesced run of 40.
    let hold: Vec<Vec<u8>> = (0..20).map(|i| numbered(i, 100)).collect();
    for chunk in hold.chunks(4) {
        a.tx_burst(&frames(&sa, &sb, chunk, &mut store));
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut held = Vec::new();
    let mut out = [RxPacket::EMPTY; 8];
    let t0 = Instant::now();
    while held.len() < 20 && t0.elapsed() < Duration::from_secs(2) {
        let n = b.rx_burst(&mut out);
        held.extend_from_slice(&out[..n]);
    }
    assert_eq!(held.len(), 20);
    let run: Vec<Vec<u8>> = (0..40).map(|i| numbered(i, 1000)).collect();
    let before = b.stats();
    a.tx_burst(&frames(&sa, &sb, &run, &mut store));
    let mut got = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        let n = b.rx_burst(&mut out);
        for p in &out[..n] {
            // SAFETY: lent until released below.
            let f = unsafe { std::slice::from_raw_parts(p.data.as_ptr(), p.len as usize) };
            got.push(u32::from_le_bytes(f[42..46].try_into().unwrap()));
        }
        b.rx_release(&out[..n]);
    }
    let s = b.stats();
    let lost = s.rx_no_buffer - before.rx_no_buffer;
    assert!(lost > 0, "{s:?}");
    assert_eq!(got.len() as u64 + lost, 40, "every packet arrived or was counted: {got:?} {s:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    b.rx_release(&held);
    // All buffers are back: the next run arrives whole.
    a.tx_burst(&frames(&sa, &sb, &run[..20], &mut store));
    assert_eq!(receive_in_order(&mut b, &run[..20], 8, sa.udp_port), 20);
}

/// Twice a run of 20 packets of 1,000 bytes from `a` to `b`, each arriving whole and in order.
fn send_twice(a: &mut UdpTransport, b: &mut UdpTransport) {
    let (sa, sb) = (a.local_addr(), b.local_addr());
    let run: Vec<Vec<u8>> = (0..20).map(|i| numbered(i, 1000)).collect();
    let mut store = Vec::new();
    for _ in 0..2 {
        assert_eq!(a.tx_burst(&frames(&sa, &sb, &run, &mut store)), 20);
        assert_eq!(receive_in_order(b, &run, 32, sa.udp_port), 20);
    }
}

/// With both off, every packet is a datagram of its own, and nothing turns UDP_GRO on.
#[test]
fn gso_and_gro_can_be_turned_off() {
    let off = UdpConfig { gso: false, gro: false, ..any_port() };
    let mut a = UdpTransport::bind(off).unwrap();
    let mut b = UdpTransport::bind(off).unwrap();
    send_twice(&mut a, &mut b);
    assert_eq!((a.stats().tx_gso_sends, b.stats().rx_gro_on, b.stats().rx_gro_receives), (0, 0, 0));
}

/// A kernel that refuses a UDP_SEGMENT send (here: SO_NO_CHECK, with which Linux refuses GSO
/// with EINVAL; on a network, a path MTU below the segment size does too): the transport sends
/// a datagram per packet from then on, and loses nothing.
#[test]
fn a_refused_gso_send_falls_back_to_a_datagram_per_packet() {
    use std::os::fd::{AsFd, AsRawFd};
    let mut a = UdpTransport::bind(any_port()).unwrap();
    let mut b = UdpTransport::bind(any_port()).unwrap();
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a live socket with a pointer to a c_int of its size.
    let r = unsafe {
        libc::setsockopt(
            a.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
    send_twice(&mut a, &mut b);
    let s = a.stats();
    assert_eq!((s.tx_gso_refused, s.tx_gso_sends, s.tx_errors, s.tx_datagrams), (1, 0, 0, 40), "{s:?}");
}

/// UDP_GRO turns on after a receive of four datagrams at once, not three; once it is on, an
/// oversized datagram, and a coalesced run whose segments exceed this endpoint's MTU, are dropped
/// and counted, and what follows arrives.
#[test]
fn gro_turns_on_at_four_datagrams_and_oversized_input_is_still_dropped() {
    let mut b = UdpTransport::bind(any_port()).unwrap();
    let port = b.local_addr().udp_port;
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut out = [RxPacket::EMPTY; 32];
    let mut burst = |b: &mut UdpTransport, n: u32| {
        assert_eq!(b.rx_burst(&mut out), 0, "idle first");
        for i in 0..n {
            peer.send_to(&i.to_le_bytes(), ("127.0.0.1", port)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        // Out of idle: the first call takes one datagram, the next the rest at once.
        let mut got = 0;
        while got < n as usize {
            let k = b.rx_burst(&mut out);
            assert!(k > 0, "all {n} arrive");
            got += k;
            b.rx_release(&out[..k]);
        }
    };
    burst(&mut b, 4); // one, then three at once
    assert_eq!(b.stats().rx_gro_on, 0, "three at once");
    burst(&mut b, 5); // one, then four
    assert_eq!(b.stats().rx_gro_on, 1, "four at once");
    peer.send_to(&[7u8; 4000], ("127.0.0.1", port)).unwrap();
    // A run from a sender with a 9014-byte MTU: 8,972-byte segments.
    let mut big = UdpTransport::bind(UdpConfig { mtu: 9014, ..any_port() }).unwrap();
    let (sa, sb) = (big.local_addr(), b.local_addr());
    let run: Vec<Vec<u8>> = (0..3).map(|i| numbered(i, 8972)).collect();
    let mut store = Vec::new();
    assert_eq!(big.tx_burst(&frames(&sa, &sb, &run, &mut store)), 3);
    assert_eq!(big.stats().tx_gso_sends, 1);
    peer.send_to(b"after", ("127.0.0.1", port)).unwrap();
    let f = recv_one(&mut b).expect("the small datagram still arrives");
    assert_eq!(&f[42..], b"after");
    let s = b.stats();
    assert_eq!(s.rx_truncated, 2, "the oversized datagram and the run: {s:?}");
}

/// Short of free buffers, a receive takes fewer coalesced datagrams and leaves the rest queued
/// in the kernel instead of dropping their packets: three runs of 20 arrive whole through a
/// transport with 32 free buffers.
#[test]
fn short_of_buffers_coalesced_runs_wait_in_the_kernel() {
    let mut a = UdpTransport::bind(UdpConfig { batch: 64, rx_buffers: 64, ..any_port() }).unwrap();
    let mut b = gro_on_with_40_buffers(&mut a);
    let (sa, sb) = (a.local_addr(), b.local_addr());
    let mut store = Vec::new();
    // Three runs (a payload size each), so three coalesced datagrams of 20 packets.
    let runs: Vec<Vec<u8>> = (0..60).map(|i| numbered(i, 1000 - 100 * (i as usize / 20))).collect();
    assert_eq!(a.tx_burst(&frames(&sa, &sb, &runs, &mut store)), 60);
    assert_eq!(a.stats().tx_gso_sends, 1 + 3);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(receive_in_order(&mut b, &runs, 32, sa.udp_port), 60);
    let s = b.stats();
    assert_eq!(s.rx_no_buffer, 0, "{s:?}");
    assert!(s.rx_gro_receives >= 3, "{s:?}");
}

/// A run the kernel refuses for its destination, whether with an error of its own (EACCES: a
/// broadcast address without SO_BROADCAST) or with the one a refused UDP_SEGMENT send gets
/// (EINVAL: port 0, tried again a datagram per packet and refused again): its packets are lost
/// and counted, and GSO stays on for the others.
#[test]
fn a_run_refused_for_its_destination_is_counted_and_gso_stays_on() {
    for (ipv4, udp_port) in [([255, 255, 255, 255], 9), ([127, 0, 0, 1], 0)] {
        let mut a = UdpTransport::bind(any_port()).unwrap();
        let b = UdpTransport::bind(any_port()).unwrap();
        let sa = a.local_addr();
        let bad = erpc_dataplane::transport::EndpointAddr { mac: [0; 6], ipv4, udp_port };
        let run: Vec<Vec<u8>> = (0..10).map(|i| numbered(i, 500)).collect();
        let mut store = Vec::new();
        assert_eq!(a.tx_burst(&frames(&sa, &bad, &run, &mut store)), 10, "accepted, and lost");
        let s = a.stats();
        assert_eq!((s.tx_errors, s.tx_gso_refused, s.tx_datagrams), (10, 0, 0), "{ipv4:?}:{udp_port}: {s:?}");
        assert_eq!(a.tx_burst(&frames(&sa, &b.local_addr(), &run, &mut store)), 10);
        assert_eq!(a.stats().tx_gso_sends, 1);
    }
}

/// `Rpc::wait_for_work` over UDP: an idle server sleeps in `ppoll` instead of spinning, and a
/// request wakes it at once.
#[test]
fn an_idle_endpoint_blocks_until_a_packet_comes() {
    let st = UdpTransport::bind(any_port()).unwrap();
    let to = SocketAddrV4::from(st.local_addr());
    let r = erpc_tests::idle::serve_idle(
        st,
        memory(1 << 20),
        UdpTransport::bind(any_port()).unwrap(),
        memory(1 << 20),
        20,
        || {
            UdpSocket::bind("127.0.0.1:0").unwrap().send_to(b"wake", to).unwrap();
        },
        |t| t.stats().rx_waits,
    );
    erpc_tests::idle::check(&r, 20);
}
