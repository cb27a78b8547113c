//! The AF_XDP transport between two network namespaces joined by a veth pair (created and
//! always deleted by the test): the loopback scenarios, XDP program attach and detach, error
//! messages, neighbour resolution, forged input, and no leftovers; several endpoints on the
//! queues of a multi-queue veth pair (one socket per queue, one program per interface) on
//! threads, and the program's per-queue port check.
//!
//! Needs root (namespaces, XDP, AF_XDP) and reserves the 2 MiB hugepages it uses.
//!
//! What it covers: the AF_XDP transport — the loopback scenarios (3 MB messages, 1% loss with
//! retransmissions and `tx_flush`), no invalid descriptors in the kernel's counters, every packet
//! known read after a flush; the XDP program attached while the transport lives and detached after
//! it, and after each failed open (queue in use, no such queue, no such interface, bad settings)
//! with the error saying why; ARP resolution through the XDP program; a kernel datagram redirected
//! whole to the socket; forged releases and packets outside the UMEM dropped and counted.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Segment, Transport, TxPacket};
use erpc_dataplane::{OwnedMemory, RpcConfig};
use erpc_driver::afxdp::{AfXdpConfig, AfXdpError, AfXdpTransport, XdpAttach};
use erpc_hugepages::{HugepageCounts, PageSize};
use erpc_tests::scenarios::{Loopback, LoopbackConfig};
use erpc_tools::netns::{self, VethPair};
use std::sync::Mutex;

/// The tests share the hugepage pool and create namespaces: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const REGION: usize = 32 << 20;

fn setup() -> (std::sync::MutexGuard<'static, ()>, VethPair) {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the AF_XDP tests need root (namespaces, XDP programs, AF_XDP)");
    let c = HugepageCounts::reserve_free(PageSize::Huge2M, 48).expect("reserving 2 MiB hugepages");
    assert!(c.free >= 48, "could not reserve 48 free 2 MiB hugepages: {c:?}");
    (g, VethPair::create().expect("veth pair between two namespaces"))
}

fn config(end: &netns::End) -> AfXdpConfig {
    AfXdpConfig {
        interface: end.interface.clone(),
        rx_frames: 1024,
        tx_ring: 512,
        region_bytes: REGION,
        ..Default::default()
    }
}

/// Runs `f` on a fresh thread (it enters namespaces, which must not leak into the harness).
fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    match std::thread::spawn(f).join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn open_in(end: &netns::End, cfg: AfXdpConfig) -> Result<AfXdpTransport, AfXdpError> {
    netns::enter(&end.netns).expect("enter namespace");
    AfXdpTransport::open(cfg)
}

fn endpoint_memory(t: &AfXdpTransport) -> OwnedMemory {
    // SAFETY: the transport is handed to the endpoint that uses this region.
    OwnedMemory::new(unsafe { t.dataplane_region() }, 4, 64)
}

#[test]
fn loopback_scenarios_over_afxdp_between_namespaces() {
    let (_g, pair) = setup();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let report = on_thread(move || {
        let ta = open_in(&a, config(&a)).expect("AF_XDP in namespace a");
        let tb = open_in(&b, config(&b)).expect("AF_XDP in namespace b");
        // Auto on a veth with one queue: generic mode (the faster one there, see XdpAttach).
        assert_eq!(ta.attach_mode(), XdpAttach::Generic, "a single-queue veth gets generic XDP");
        assert_eq!(ta.local_addr().ipv4, a.ipv4.octets());
        let (ma, mb) = (endpoint_memory(&ta), endpoint_memory(&tb));
        let lcfg = LoopbackConfig {
            small_rpcs: 2000,
            large_size: 3 << 20,
            loss: 0.01,
            phase_timeout_ns: 60_000_000_000,
            ..Default::default()
        };
        let rpc_cfg = RpcConfig { rto_ns: 5_000_000, mtu: 1514, ..RpcConfig::default() };
        let mut lb = Loopback::connect(ta, tb, ma, mb, StdClock::default(), rpc_cfg, &lcfg).expect("connect");
        let report = lb.run_all(&lcfg).expect("scenarios");
        for (name, t) in [("client", lb.client.transport().inner()), ("server", lb.server.transport().inner())] {
            let s = t.stats();
            assert!(s.rx_frames > 5000 && s.tx_packets > 5000, "{name}: {s:?}");
            assert_eq!(s.rx_bad_desc + s.rx_bad_release + s.tx_malformed + s.tx_flush_stalls, 0, "{name}: {s:?}");
            assert!(s.tx_flushes > 0, "{name}: the loss phase flushes: {s:?}");
            // Never more completion work than packets, and all of it done by now.
            assert!(s.tx_completed_descs >= s.tx_packets, "{name}: {s:?}");
            let k = t.kernel_stats().expect("XDP_STATISTICS");
            assert_eq!(k.rx_invalid_descs + k.tx_invalid_descs, 0, "{name}: {k:?}");
        }
        // Every accepted packet is known read after a flush.
        let t = lb.client.transport_mut().inner_mut();
        t.tx_flush();
        assert_eq!(t.tx_reclaimed(), t.stats().tx_packets);
        report
    });
    println!("{report}");
    assert!(!VethPair::xdp_attached(&pair.a).unwrap(), "detached once the endpoints are gone");
}

#[test]
fn the_program_is_attached_while_the_transport_lives_and_detached_after() {
    let (_g, pair) = setup();
    let a = pair.a.clone();
    let a2 = a.clone();
    let t = on_thread(move || open_in(&a2, config(&a2)).expect("open"));
    assert!(VethPair::xdp_attached(&a).unwrap(), "attached while open");
    // A second endpoint on the same queue fails with a message that says why; the first one
    // keeps working.
    let a3 = a.clone();
    let e = on_thread(move || open_in(&a3, config(&a3)).err().expect("second endpoint refused").to_string());
    assert!(e.contains("already has an AF_XDP socket"), "{e}");
    assert!(VethPair::xdp_attached(&a).unwrap());
    drop(t);
    assert!(!VethPair::xdp_attached(&a).unwrap(), "detached on drop");

    // Errors part-way through leave nothing attached either.
    let a4 = a.clone();
    let e = on_thread(move || open_in(&a4, AfXdpConfig { queue: 7, ..config(&a4) }).err().expect("no queue 7"));
    assert!(matches!(e, AfXdpError::Bind { .. }), "{e}");
    assert!(e.to_string().contains("queue 7"), "{e}");
    assert!(!VethPair::xdp_attached(&a).unwrap());
    let a5 = a.clone();
    let e = on_thread(move || open_in(&a5, AfXdpConfig { interface: "nope0".into(), ..config(&a5) }).err().unwrap());
    assert!(e.to_string().contains("no interface `nope0`"), "{e}");
    let a6 = a.clone();
    let e = on_thread(move || open_in(&a6, AfXdpConfig { rx_frames: 1000, ..config(&a6) }).err().unwrap());
    assert!(e.to_string().contains("power of two"), "{e}");

    // Deleting the pair leaves no namespace (and so no veth) behind.
    let names = [pair.a.netns.clone(), pair.b.netns.clone()];
    drop(pair);
    for n in names {
        assert!(!netns::exists(&n), "{n} left behind");
    }
}

#[test]
fn namespaces_of_dead_processes_are_cleaned_up() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A pid that is not running (pid_max is at most 2^22).
    let dead = (4_194_304u32..).find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).unwrap();
    let name = format!("erpc-{dead}-0a");
    let st = std::process::Command::new("ip").args(["netns", "add", &name]).status().expect("ip");
    assert!(st.success());
    assert!(netns::exists(&name));
    let pair = VethPair::create().expect("pair");
    assert!(!netns::exists(&name), "the leftover namespace was deleted");
    drop(pair);
}

#[test]
fn neighbours_resolve_and_forged_input_is_counted() {
    let (_g, pair) = setup();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    on_thread(move || {
        let mut tb = open_in(&b, config(&b)).expect("b");
        let b_addr = tb.local_addr();
        let mut ta = open_in(&a, config(&a)).expect("a");
        // The thread is in namespace a: a's kernel resolves b's MAC by ARP, which b's XDP
        // program passes to b's kernel. Resolving never waits: unreachable until the answer is
        // in, then found.
        let unknown = EndpointAddr { mac: [0; 6], ..b_addr };
        let t0 = std::time::Instant::now();
        assert!(ta.resolve(&unknown).is_err(), "not in the neighbour table yet: asked for, not waited for");
        assert!(t0.elapsed() < std::time::Duration::from_millis(100), "no wait");
        let r = loop {
            if let Ok(r) = ta.resolve(&unknown) {
                break r;
            }
            assert!(t0.elapsed().as_secs() < 2, "ARP resolves b");
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        assert_eq!(r.dst_mac(), b_addr.mac);
        // An address nobody answers for: unreachable, every time at once (the kernel keeps
        // asking), and a flood of made-up addresses costs no waiting either.
        let t1 = std::time::Instant::now();
        for k in 0..500u32 {
            let nobody = EndpointAddr { mac: [0; 6], ipv4: [10, 211, 0, 99 + (k % 100) as u8], udp_port: 31850 };
            assert!(ta.resolve(&nobody).is_err(), "an address nobody answers for is unreachable");
        }
        assert!(t1.elapsed() < std::time::Duration::from_millis(500), "{:?} for 500 resolves", t1.elapsed());
        assert!(ta.stats().resolve_pending >= 500);
        // A fresh transport: a miss first, then b, whose MAC the kernel has: one read of the
        // table serves both, and the miss does not hold b up.
        drop(ta);
        let mut ta = open_in(&a, config(&a)).expect("a again");
        let nobody = EndpointAddr { mac: [0; 6], ipv4: [10, 211, 0, 98], udp_port: 31850 };
        assert!(ta.resolve(&nobody).is_err());
        let r = ta.resolve(&unknown).expect("b, right after a miss");
        assert_eq!(r.dst_mac(), b_addr.mac);

        // A datagram from a's kernel stack to b's port reaches b's socket as a whole frame.
        let s = std::net::UdpSocket::bind("10.211.0.1:0").unwrap();
        s.send_to(b"not an eRPC packet", (b.ipv4, b_addr.udp_port)).unwrap();
        let t0 = std::time::Instant::now();
        let mut out = [RxPacket::EMPTY; 8];
        let n = loop {
            let n = tb.rx_burst(&mut out);
            if n > 0 || t0.elapsed().as_secs() > 2 {
                break n;
            }
        };
        assert_eq!(n, 1, "the datagram was redirected to the socket");
        assert_eq!(out[0].len as usize, 42 + 18);
        // SAFETY: lent until released below.
        let f = unsafe { std::slice::from_raw_parts(out[0].data.as_ptr(), out[0].len as usize) };
        assert_eq!(&f[42..], b"not an eRPC packet");
        assert_eq!(&f[0..6], &b_addr.mac);
        tb.rx_release(&out[..1]);
        // A double and a forged release are ignored and counted.
        tb.rx_release(&out[..1]);
        tb.rx_release(&[RxPacket { id: 1 << 20, ..RxPacket::EMPTY }]);
        assert_eq!(tb.stats().rx_bad_release, 2);

        // Packets outside the UMEM region, or larger than the MTU, are dropped and counted.
        let outside = [0u8; 64];
        let seg = Segment { vaddr: outside.as_ptr(), iova: 0, len: 64 };
        let p = TxPacket { segs: [seg, Segment::EMPTY] };
        assert_eq!(ta.tx_burst(&[p]), 1);
        assert_eq!(ta.stats().tx_malformed, 1);
        assert_eq!(ta.stats().tx_packets, 0);
        ta.tx_flush();
        assert_eq!(ta.tx_reclaimed(), 1, "a dropped packet is not read later");
    });
}

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

/// Writes an Ethernet/IPv4/UDP frame from `from` to `to` carrying `payload` at the start of the
/// transport's dataplane region and returns the packet that sends it.
fn frame_in_region(t: &AfXdpTransport, to: &EndpointAddr, payload: &[u8]) -> TxPacket {
    // SAFETY: used only while `t` lives, by this test alone.
    let region = unsafe { t.dataplane_region() };
    let mut hr = [0u8; 42];
    erpc_dataplane::wire::RoutingInfo::new(&t.local_addr(), to).write(&mut hr, payload.len());
    let p = region.base().as_ptr();
    // SAFETY: the region is at least 42 + payload bytes, ours, and not being read by the kernel
    // (callers write it only when no packet from it is outstanding).
    unsafe {
        std::ptr::copy_nonoverlapping(hr.as_ptr(), p, 42);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(42), payload.len());
    }
    let seg = Segment { vaddr: p, iova: region.iova(), len: (42 + payload.len()) as u32 };
    TxPacket { segs: [seg, Segment::EMPTY] }
}

/// While the interface is down the kernel keeps a packet in the TX ring: `tx_flush` waits for
/// it (rather than letting the dataplane reuse the buffer), and once the link is up the packet
/// goes out with its original bytes. Malformed packets count against the TX window meanwhile.
#[test]
fn a_flush_waits_out_a_link_down_and_the_window_holds() {
    let (_g, pair) = setup();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    on_thread(move || {
        let mut tb = open_in(&b, config(&b)).expect("b");
        let mut ta = open_in(&a, AfXdpConfig { tx_ring: 64, ..config(&a) }).expect("a");
        let to = tb.local_addr();
        let p = frame_in_region(&ta, &to, b"ORIGINAL");
        ip(&["-n", &a.netns, "link", "set", "dev", &a.interface, "down"]);
        assert_eq!(ta.tx_burst(&[p]), 1);
        // The window is 64 packets: 63 more malformed ones fit, the rest wait.
        let outside = [0u8; 64];
        let bad = TxPacket { segs: [Segment { vaddr: outside.as_ptr(), iova: 0, len: 64 }, Segment::EMPTY] };
        assert_eq!(ta.tx_burst(&[bad; 100]), 63);
        assert_eq!(ta.tx_reclaimed(), 0, "the first packet is unread, so nothing after it counts as read");
        let (ns, ifc) = (a.netns.clone(), a.interface.clone());
        let up = std::thread::spawn(move || {
            // Longer than a second: a flush that gave up after one would return before this.
            std::thread::sleep(std::time::Duration::from_millis(1300));
            ip(&["-n", &ns, "link", "set", "dev", &ifc, "up"]);
        });
        let t0 = std::time::Instant::now();
        ta.tx_flush();
        assert!(t0.elapsed() >= std::time::Duration::from_millis(1250), "returned while the link was down");
        up.join().unwrap();
        assert_eq!(ta.tx_reclaimed(), 64);
        assert_eq!(ta.stats().tx_flush_stalls, 1);
        // Reusing the buffer now cannot change what was sent.
        let _ = frame_in_region(&ta, &to, b"REUSED!!");
        let f = erpc_tests::receive_one(&mut tb, std::time::Duration::from_secs(2))
            .expect("the packet arrived after the link came up");
        assert_eq!(&f[42..], b"ORIGINAL");
        assert_eq!(ta.tx_burst(&[bad; 37]), 37, "the window is free again");
        assert_eq!(ta.stats().tx_malformed, 100);
    });
}

/// On a veth in copy mode the peer's receive runs inside the `sendto` that wakes the kernel, and
/// with it the freeing of the frame's skb that writes its completion; the transport takes the
/// completion right away, so the frame is known read when `tx_burst` returns and the dataplane can
/// reuse its buffer at once (a server recycles its response buffer instead of parking it and
/// allocating another for the next request). A veth property, not a copy-mode one: where the skb
/// is freed later (RPS or threaded NAPI on the peer, a NIC, virtio_net) the completion comes later.
#[test]
fn a_frame_sent_in_copy_mode_is_known_read_when_tx_burst_returns() {
    let (_g, pair) = setup();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    on_thread(move || {
        let mut tb = open_in(&b, config(&b)).expect("b");
        let mut ta = open_in(&a, config(&a)).expect("a");
        let to = tb.local_addr();
        for k in 1..=200u64 {
            let p = frame_in_region(&ta, &to, format!("FRAME{k:03}").as_bytes());
            assert_eq!(ta.tx_burst(&[p]), 1);
            assert_eq!(ta.tx_reclaimed(), k, "frame {k} is read without a flush or a full ring");
            let f = erpc_tests::receive_one(&mut tb, std::time::Duration::from_secs(2)).expect("the frame arrived");
            assert_eq!(&f[42..], format!("FRAME{k:03}").as_bytes());
        }
        assert_eq!(ta.stats().tx_flushes, 0, "no flush was needed");
        assert_eq!(ta.stats().tx_completed_descs, 200);
    });
}

/// The XDP program takes only frames to the endpoint's own address and port: another address of
/// the same interface, same port, still reaches the kernel.
#[test]
fn only_our_address_and_port_are_redirected() {
    let (_g, pair) = setup();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    on_thread(move || {
        let mut tb = open_in(&b, config(&b)).expect("b");
        let port = tb.local_addr().udp_port;
        ip(&["-n", &b.netns, "addr", "add", "10.211.0.3/24", "dev", &b.interface]);
        netns::enter(&a.netns).unwrap();
        let s = std::net::UdpSocket::bind("10.211.0.1:0").unwrap();
        s.send_to(b"for the kernel", ("10.211.0.3", port)).unwrap();
        assert!(
            erpc_tests::receive_one(&mut tb, std::time::Duration::from_millis(300)).is_none(),
            "another address: not ours"
        );
        s.send_to(b"for us", (b.ipv4, port)).unwrap();
        let f = erpc_tests::receive_one(&mut tb, std::time::Duration::from_secs(2)).expect("our address");
        assert_eq!(&f[42..], b"for us");
        s.send_to(b"other port", (b.ipv4, port + 1)).unwrap();
        assert!(
            erpc_tests::receive_one(&mut tb, std::time::Duration::from_millis(300)).is_none(),
            "another port: not ours"
        );
    });
}

/// Three endpoints on each end of a veth pair with three queues, one AF_XDP socket per queue
/// under one XDP program per interface, each endpoint on its own thread: queue *k* of one end
/// reaches queue *k* of the other (veth's own steering), and every pair that can talk
/// exchanges RPCs (small, 1 MB, then 2% loss); endpoint 1 closes after the first phase.
#[test]
fn endpoints_on_the_queues_of_one_interface_run_on_threads() {
    use erpc_driver::afxdp::AfXdpInterface;
    use erpc_tests::mesh::{run_mesh, MeshConfig};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = HugepageCounts::reserve_free(PageSize::Huge2M, 64).expect("reserving 2 MiB hugepages");
    assert!(c.free >= 64, "could not reserve 64 free 2 MiB hugepages: {c:?}");
    let pair = VethPair::with_queues(3).expect("a veth pair with 3 queues");
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let reports = on_thread(move || {
        let mut eps = vec![];
        let mut ifaces = vec![];
        for end in [&a, &b] {
            netns::enter(&end.netns).expect("enter namespace");
            let iface = AfXdpInterface::open(&end.interface, None, XdpAttach::Auto).expect("XDP program");
            // Generic mode would hand every frame to the program as queue 0's.
            assert_eq!(iface.attach_mode(), XdpAttach::Native, "a multi-queue veth stays native");
            for k in 0..3 {
                let cfg = AfXdpConfig { queue: k, udp_port: 31850 + k as u16, region_bytes: 10 << 20, ..config(end) };
                let t = iface.open_queue(cfg).expect("a socket per queue");
                assert_eq!(t.queue(), k);
                let mem = endpoint_memory(&t);
                eps.push((t, mem));
            }
            assert_eq!(iface.queues(), vec![(0, 31850), (1, 31851), (2, 31852)]);
            ifaces.push(iface);
        }
        drop(ifaces); // the sockets keep the programs attached
        assert!(VethPair::xdp_attached(&a).unwrap());
        let cfg = MeshConfig {
            small_rpcs: 200,
            large_size: 1 << 20,
            loss: 0.02,
            loss_small_rpcs: 50,
            phase_timeout: std::time::Duration::from_secs(60),
            close_after_phase1: Some(1),
            talks: Some(|i, j| (i < 3) != (j < 3) && i % 3 == j % 3),
            ..MeshConfig::default()
        };
        let rpc = RpcConfig { rto_ns: 5_000_000, mtu: 1514, ..RpcConfig::default() };
        run_mesh(eps, rpc, &cfg, |t: &AfXdpTransport| {
            let s = t.stats();
            let k = t.kernel_stats().map_err(|e| e.to_string())?;
            if s.rx_bad_desc + s.rx_bad_release + s.tx_malformed + k.rx_invalid_descs + k.tx_invalid_descs > 0 {
                return Err(format!("queue {}: {s:?} {k:?}", t.queue()));
            }
            Ok(format!("queue {}: {} frames received", t.queue(), s.rx_frames))
        })
        .expect("the mesh")
    });
    for r in &reports {
        println!("{r}");
    }
    assert!(reports[1].closed);
    // Queue k's endpoints talked to each other only.
    for r in &reports {
        let peers: Vec<usize> = r.completed.keys().copied().collect();
        assert_eq!(peers, vec![(r.index + 3) % 6], "endpoint {}", r.index);
    }
    assert!(reports.iter().map(|r| r.retransmissions).sum::<u64>() > 0, "loss forced retransmissions");
    assert!(!VethPair::xdp_attached(&pair.a).unwrap(), "detached once every socket is gone");
}

/// The program redirects a frame to the socket of the queue it arrived on only if its port is
/// that queue's endpoint's: a frame for endpoint 1 that arrives on queue 0 reaches neither.
#[test]
fn a_frame_on_another_endpoints_queue_reaches_neither() {
    use erpc_driver::afxdp::AfXdpInterface;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = HugepageCounts::reserve_free(PageSize::Huge2M, 48).expect("reserving 2 MiB hugepages");
    assert!(c.free >= 48, "{c:?}");
    let pair = VethPair::with_queues(2).expect("a veth pair with 2 queues");
    let (a, b) = (pair.a.clone(), pair.b.clone());
    on_thread(move || {
        let open = |end: &netns::End, k: u32, iface: &AfXdpInterface| {
            let cfg = AfXdpConfig { queue: k, udp_port: 31850 + k as u16, region_bytes: 4 << 20, ..config(end) };
            iface.open_queue(cfg).expect("socket")
        };
        netns::enter(&a.netns).unwrap();
        let ia = AfXdpInterface::open(&a.interface, None, XdpAttach::Auto).unwrap();
        let (mut a0, mut a1) = (open(&a, 0, &ia), open(&a, 1, &ia));
        netns::enter(&b.netns).unwrap();
        let ib = AfXdpInterface::open(&b.interface, None, XdpAttach::Auto).unwrap();
        let (mut b0, mut b1) = (open(&b, 0, &ib), open(&b, 1, &ib));
        let e = ib.open_queue(AfXdpConfig { queue: 1, udp_port: 31850, ..config(&b) }).err().expect("port taken");
        assert!(e.to_string().contains("already the endpoint's of queue 0"), "{e}");
        let wait = std::time::Duration::from_millis(300);
        // From queue 0 of b to endpoint 1 of a: it arrives on a's queue 0.
        let p = frame_in_region(&b0, &a1.local_addr(), b"wrong queue");
        assert_eq!(b0.tx_burst(&[p]), 1);
        b0.tx_flush();
        assert!(erpc_tests::receive_one(&mut a1, wait).is_none(), "endpoint 1 got a frame of queue 0");
        assert!(erpc_tests::receive_one(&mut a0, wait).is_none(), "endpoint 0 got endpoint 1's frame");
        // From queue 1 of b to endpoint 1 of a: delivered, to it alone.
        let p = frame_in_region(&b1, &a1.local_addr(), b"right queue");
        assert_eq!(b1.tx_burst(&[p]), 1);
        b1.tx_flush();
        let f = erpc_tests::receive_one(&mut a1, std::time::Duration::from_secs(2)).expect("endpoint 1's frame");
        assert_eq!(&f[42..], b"right queue");
        assert!(erpc_tests::receive_one(&mut a0, wait).is_none());
        // Closing endpoint 1 leaves endpoint 0 working and the program attached.
        drop(a1);
        assert_eq!(ia.queues(), vec![(0, 31850)]);
        let p = frame_in_region(&b0, &a0.local_addr(), b"still here");
        assert_eq!(b0.tx_burst(&[p]), 1);
        b0.tx_flush();
        let f = erpc_tests::receive_one(&mut a0, std::time::Duration::from_secs(2)).expect("endpoint 0's frame");
        assert_eq!(&f[42..], b"still here");
    });
}

/// An address whose last byte is 128 or more is matched too: the program compares addresses in
/// 32 bits (a 64-bit compare against the sign-extended immediate never matched them).
#[test]
fn an_address_ending_in_a_high_byte_is_redirected() {
    let (_g, pair) = setup();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    on_thread(move || {
        ip(&["-n", &b.netns, "addr", "add", "10.211.0.200/24", "dev", &b.interface]);
        let cfg = AfXdpConfig { ipv4: Some("10.211.0.200".parse().unwrap()), ..config(&b) };
        let mut tb = open_in(&b, cfg).expect("b");
        let port = tb.local_addr().udp_port;
        netns::enter(&a.netns).unwrap();
        let s = std::net::UdpSocket::bind("10.211.0.1:0").unwrap();
        s.send_to(b"to .200", ("10.211.0.200", port)).unwrap();
        let f = erpc_tests::receive_one(&mut tb, std::time::Duration::from_secs(2)).expect("redirected");
        assert_eq!(&f[42..], b"to .200");
    });
}

/// `Rpc::wait_for_work` over AF_XDP: an idle server sleeps in `ppoll` on its socket instead of
/// spinning, and a frame (filled into its RX ring from the sender's transmit path) wakes it.
#[test]
fn an_idle_endpoint_blocks_until_a_frame_comes() {
    let (_g, pair) = setup();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let r = on_thread(move || {
        let ta = open_in(&a, config(&a)).expect("AF_XDP in namespace a");
        let tb = open_in(&b, config(&b)).expect("AF_XDP in namespace b");
        let (ma, mb) = (endpoint_memory(&ta), endpoint_memory(&tb));
        let to = std::net::SocketAddrV4::from(ta.local_addr());
        // This thread is in namespace b: its kernel's datagram to a's endpoint is redirected
        // to a's socket, which wakes it.
        erpc_tests::idle::serve_idle(
            ta,
            ma,
            tb,
            mb,
            20,
            move || {
                std::net::UdpSocket::bind("0.0.0.0:0").unwrap().send_to(b"wake", to).unwrap();
            },
            |t| t.stats().rx_waits,
        )
    });
    erpc_tests::idle::check(&r, 20);
}
