//! Several endpoints on one Intel NIC, one queue pair each, against the register-level fake of
//! `erpc_tests::intel_fake`: the steering registers checked one by one against the datasheets,
//! frames reaching only their endpoint's queue (and a deliberately wrong filter caught), RPCs
//! between endpoints on several threads with one closing mid-run, closing queues and drop order.

use erpc_dataplane::transport::{EndpointAddr, RxPacket, Segment, Transport, TxPacket};
use erpc_dataplane::wire::{RoutingInfo, HEADROOM};
use erpc_dataplane::RpcConfig;
use erpc_driver::intel::{queue_mac, Family, IntelConfig, IntelDevice, IntelError, IntelQueue, QueueConfig};
use erpc_hugepages::{DmaSpace, PageSize};
use erpc_tests::intel_fake::{FakeIntel, FakeWire};
use erpc_tests::mesh::{guest_rpc_config, run_mesh, MeshConfig};
use erpc_tests::scenarios::dma_endpoint_memory_sessions;
use std::sync::Arc;
use std::time::Duration;

const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
const PORT: u16 = 31850;

type Dev = IntelDevice<FakeIntel>;
type Queue = IntelQueue<FakeIntel>;

fn device(family: Family, mac: [u8; 6], ip: u8, wire: &Arc<FakeWire>, space: &Arc<DmaSpace>) -> Dev {
    let cfg = IntelConfig { ipv4: [10, 0, 0, ip], link_timeout: Duration::from_secs(1), ..Default::default() };
    IntelDevice::with_registers(FakeIntel::new(family, mac, wire), family, space, cfg).expect("bring-up")
}

/// `n` queues with ports PORT, PORT + 1, ...
fn queues(dev: &Dev, n: u16) -> Vec<Queue> {
    (0..n).map(|i| dev.open_queue(QueueConfig::port(PORT + i)).expect("open queue")).collect()
}

// Register offsets, written here from the datasheets (not taken from the driver).
const IGB_MRQC: u32 = 0x5818;
const IGB_VT_CTL: u32 = 0x581C;
const IGB_VFRE: u32 = 0x0C8C;
const IGB_VFTE: u32 = 0x0C90;
const IGB_DTXSWC: u32 = 0x3500;
fn igb_ral(n: u32) -> u32 {
    0x5400 + 8 * n
}
fn igb_rxdctl(n: u32) -> u32 {
    0xC028 + 0x40 * n
}
fn igb_txdctl(n: u32) -> u32 {
    0xE028 + 0x40 * n
}
fn ixgbe_rxdctl(n: u32) -> u32 {
    0x1028 + 0x40 * n
}
fn ixgbe_txdctl(n: u32) -> u32 {
    0x6028 + 0x40 * n
}
fn ixgbe_sdpqf(n: u32) -> u32 {
    0xE400 + 4 * n
}
fn ixgbe_ftqf(n: u32) -> u32 {
    0xE600 + 4 * n
}
fn ixgbe_l34t_imir(n: u32) -> u32 {
    0xE800 + 4 * n
}
const ENABLE: u32 = 1 << 25;

/// igb: what VMDq pool `n` (queue pair `n`) must look like for endpoint MAC `mac`.
fn check_igb_pool(f: &FakeIntel, n: u32, mac: [u8; 6]) -> Result<(), String> {
    let ral = f.peek(igb_ral(n));
    let rah = f.peek(igb_ral(n) + 4);
    if ral != u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]])
        || rah & 0xFFFF != u32::from(mac[4]) | u32::from(mac[5]) << 8
    {
        return Err(format!("RAR {n} holds {ral:#010x}/{rah:#010x}, not {mac:02x?}"));
    }
    if rah & (1 << 31) == 0 {
        return Err(format!("RAR {n}: address not valid (RAH.AV clear)"));
    }
    if (rah >> 18) & 0xFF != 1 << n {
        return Err(format!("RAR {n}: POOLSEL = {:#010b}, not pool {n} alone", (rah >> 18) & 0xFF));
    }
    if f.peek(IGB_VFRE) & (1 << n) == 0 || f.peek(IGB_VFTE) & (1 << n) == 0 {
        return Err(format!("pool {n}: receive or transmit not enabled in VFRE/VFTE"));
    }
    if f.peek(0x5AD0 + 4 * n) & (1 << 24) == 0 {
        return Err(format!("pool {n}: VMOLR.AUPE clear: untagged frames refused"));
    }
    // VMOLR.BAM (bit 27): broadcasts (ARP requests for the endpoints' address) reach pool 0 alone,
    // whose endpoint answers them (erpc_nic::neigh).
    let bam = f.peek(0x5AD0 + 4 * n) & (1 << 27) != 0;
    if bam != (n == 0) {
        return Err(format!(
            "pool {n}: VMOLR.BAM {}: broadcasts must go to pool 0 alone",
            if bam { "set" } else { "clear" }
        ));
    }
    if f.peek(igb_rxdctl(n)) & ENABLE == 0 || f.peek(igb_txdctl(n)) & ENABLE == 0 {
        return Err(format!("queue {n} not enabled"));
    }
    Ok(())
}

/// ixgbe: what 5-tuple filter `n` (queue pair `n`) must look like for UDP port `port`.
fn check_ixgbe_filter(f: &FakeIntel, n: u32, port: u16) -> Result<(), String> {
    let ftqf = f.peek(ixgbe_ftqf(n));
    if ftqf & (1 << 31) == 0 {
        return Err(format!("FTQF {n}: filter not enabled"));
    }
    if ftqf & 3 != 0b01 {
        return Err(format!("FTQF {n}: protocol {:02b}, not UDP (01b)", ftqf & 3));
    }
    // Mask bits 29:25 (1 = not compared): source address, destination address, source port
    // masked; destination port and protocol compared.
    if (ftqf >> 25) & 0x1F != 0b00111 {
        return Err(format!(
            "FTQF {n}: compare mask {:05b}, not 00111b (destination port and protocol)",
            (ftqf >> 25) & 0x1F
        ));
    }
    if (ftqf >> 2) & 7 == 0 {
        return Err(format!("FTQF {n}: priority 0"));
    }
    let sdpqf = f.peek(ixgbe_sdpqf(n));
    if (sdpqf >> 16) as u16 != port.swap_bytes() {
        return Err(format!("SDPQF {n}: destination port field {:#06x}, not {port} in network order", sdpqf >> 16));
    }
    let imir = f.peek(ixgbe_l34t_imir(n));
    if (imir >> 21) & 0x7F != n {
        return Err(format!("L34T_IMIR {n}: queue {}, not {n}", (imir >> 21) & 0x7F));
    }
    if (imir >> 13) & 0x7F != 0b100_0000 {
        return Err(format!("L34T_IMIR {n}: bits 19:13 = {:07b}, not 1000000b", (imir >> 13) & 0x7F));
    }
    if f.peek(ixgbe_rxdctl(n)) & ENABLE == 0 || f.peek(ixgbe_txdctl(n)) & ENABLE == 0 {
        return Err(format!("queue {n} not enabled"));
    }
    Ok(())
}

#[test]
fn igb_steering_is_vmdq_pools_by_mac_register_by_register() {
    let (wire, space) = (FakeWire::new(), DmaSpace::identity());
    let dev = device(Family::Igb, MAC_A, 1, &wire, &space);
    let mut qs = queues(&dev, 3);
    let f = dev.registers().clone();
    assert_eq!(f.peek(IGB_MRQC) & 7, 0b011, "MRQC.MRQE: VMDq without RSS");
    assert_ne!(f.peek(IGB_VT_CTL) & (1 << 29), 0, "VT_CTL.DisDefPool: frames for no pool are dropped");
    assert_ne!(f.peek(IGB_DTXSWC) & (1 << 31), 0, "DTXSWC.LoopbackEn: pools reach each other");
    assert_eq!(f.peek(IGB_VFRE) & 0xFF, 0b111, "VFRE: pools 0..2 receive");
    assert_eq!(f.peek(IGB_VFTE) & 0xFF, 0b111, "VFTE: pools 0..2 transmit");
    let macs: Vec<[u8; 6]> = qs.iter().map(|q| q.local_addr().mac).collect();
    assert_eq!(macs[0], MAC_A, "queue 0 answers to the NIC's own address");
    for (n, m) in macs.iter().enumerate() {
        assert_eq!(qs[n].index(), n as u16);
        assert_eq!(*m, queue_mac(MAC_A, n as u16));
        assert_eq!(m[0] & 1, 0, "unicast");
        assert!(macs.iter().filter(|o| *o == m).count() == 1, "distinct addresses: {macs:02x?}");
        assert_eq!(qs[n].local_addr().udp_port, PORT + n as u16);
        check_igb_pool(&f, n as u32, *m).unwrap();
    }
    for n in 3..16 {
        assert_eq!(f.peek(igb_ral(n) + 4) & (1 << 31), 0, "RAR {n} unused");
        assert_eq!(f.peek(igb_rxdctl(n)) & ENABLE, 0, "queue {n} off");
    }
    // Closing queue 1 takes its pool out of steering and stops its queues, nothing else.
    drop(qs.remove(1));
    assert_eq!(f.peek(IGB_VFRE) & 0xFF, 0b101, "VFRE without pool 1");
    assert_eq!(f.peek(IGB_VFTE) & 0xFF, 0b101, "VFTE without pool 1");
    assert_eq!(f.peek(igb_ral(1) + 4) & (1 << 31), 0, "RAR 1 no longer valid");
    assert_eq!((f.peek(igb_rxdctl(1)) | f.peek(igb_txdctl(1))) & ENABLE, 0, "queue pair 1 off");
    check_igb_pool(&f, 0, macs[0]).unwrap();
    check_igb_pool(&f, 2, macs[2]).unwrap();
    assert_eq!(dev.open_queues(), vec![0, 2]);
    // The freed pool is reused, with the default address of its index.
    let again = dev.open_queue(QueueConfig::port(PORT + 9)).unwrap();
    assert_eq!(again.index(), 1);
    check_igb_pool(&f, 1, queue_mac(MAC_A, 1)).unwrap();
    assert_eq!(f.violations(), Vec::<String>::new());
}

#[test]
fn ixgbe_steering_is_a_5tuple_filter_per_port_register_by_register() {
    let (wire, space) = (FakeWire::new(), DmaSpace::identity());
    let dev = device(Family::Ixgbe, MAC_A, 1, &wire, &space);
    let mut qs = queues(&dev, 3);
    let f = dev.registers().clone();
    assert_eq!(f.peek(0x5818), 0, "MRQC: no RSS, unclaimed frames to queue 0");
    for (n, q) in qs.iter().enumerate() {
        assert_eq!(q.local_addr().mac, MAC_A, "every endpoint answers to the NIC's address");
        check_ixgbe_filter(&f, n as u32, PORT + n as u16).unwrap();
    }
    for n in 3..128 {
        assert_eq!(f.peek(ixgbe_ftqf(n)) & (1 << 31), 0, "filter {n} unused");
    }
    drop(qs.remove(1));
    assert_eq!(f.peek(ixgbe_ftqf(1)) & (1 << 31), 0, "filter 1 disabled");
    assert_eq!((f.peek(ixgbe_rxdctl(1)) | f.peek(ixgbe_txdctl(1))) & ENABLE, 0, "queue pair 1 off");
    check_ixgbe_filter(&f, 0, PORT).unwrap();
    check_ixgbe_filter(&f, 2, PORT + 2).unwrap();
    assert_eq!(f.violations(), Vec::<String>::new());
}

/// A frame from `from` to `to` carrying `tag`, in fresh identity-mapped memory (leaked).
fn frame(from: EndpointAddr, to: EndpointAddr, tag: u8) -> TxPacket {
    let space = DmaSpace::identity();
    let mem = Box::leak(Box::new(space.alloc(4096, PageSize::Ordinary).unwrap()));
    let mut hdr = [0u8; HEADROOM];
    RoutingInfo::new(&from, &to).write(&mut hdr, 64);
    let p = mem.vaddr().as_ptr();
    // SAFETY: our own fresh 4 KiB; the fake reads it.
    unsafe {
        std::ptr::copy_nonoverlapping(hdr.as_ptr(), p, HEADROOM);
        std::ptr::write_bytes(p.add(HEADROOM), tag, 64);
    }
    TxPacket { segs: [Segment { vaddr: p, iova: mem.iova(), len: (HEADROOM + 64) as u32 }, Segment::EMPTY] }
}

/// The tags of the frames waiting on `q` (released after reading).
fn drain(q: &mut Queue) -> Vec<u8> {
    let mut out = [RxPacket::EMPTY; 32];
    let mut tags = vec![];
    loop {
        let n = q.rx_burst(&mut out);
        if n == 0 {
            return tags;
        }
        for p in &out[..n] {
            // SAFETY: lent by the queue until released below; read with a raw read.
            tags.push(unsafe { p.data.as_ptr().add(HEADROOM).read() });
        }
        q.rx_release(&out[..n]);
    }
}

/// Sends one tagged frame from `from` to every endpoint of `to` and checks that each arrives
/// on its endpoint's queue and nowhere else.
fn check_frames_reach_only_their_queue(from: &mut Queue, to: &mut [Queue]) -> Result<(), String> {
    for q in to.iter_mut() {
        drain(q);
    }
    for (k, q) in to.iter().enumerate() {
        let f = frame(from.local_addr(), q.local_addr(), 100 + k as u8);
        if from.tx_burst(&[f]) != 1 {
            return Err("transmit refused".into());
        }
    }
    from.tx_flush();
    for (k, q) in to.iter_mut().enumerate() {
        let got = drain(q);
        if got != [100 + k as u8] {
            return Err(format!(
                "queue {} (endpoint {}) received tags {got:?}, expected [{}]",
                q.index(),
                q.local_addr(),
                100 + k
            ));
        }
        if q.counters().rx_foreign != 0 {
            return Err(format!("queue {} counted foreign frames", q.index()));
        }
    }
    Ok(())
}

#[test]
fn frames_reach_only_their_endpoints_queue() {
    for family in [Family::Igb, Family::Ixgbe] {
        let (wire, space) = (FakeWire::new(), DmaSpace::identity());
        let a = device(family, MAC_A, 1, &wire, &space);
        let b = device(family, MAC_B, 2, &wire, &space);
        let mut qa = queues(&a, 4);
        let mut qb = queues(&b, 1);
        check_frames_reach_only_their_queue(&mut qb[0], &mut qa).unwrap_or_else(|e| panic!("{family:?}: {e}"));
        for (n, q) in qa.iter().enumerate() {
            assert_eq!(a.registers().rx_frames_on(n as u16), 1, "{family:?}: the device wrote one frame to queue {n}");
            assert_eq!(q.counters().rx_frames, 1);
        }
        // A frame for no endpoint: dropped on igb (no pool has its address); on ixgbe it
        // matches no filter and lands on the default queue 0.
        let mut nobody = qa[2].local_addr();
        nobody.udp_port = 9;
        nobody.mac = if family == Family::Igb { [0x02, 0, 0, 0, 0, 0x99] } else { MAC_A };
        let stray_frame = frame(qb[0].local_addr(), nobody, 7);
        qb[0].tx_burst(&[stray_frame]);
        qb[0].tx_flush();
        let stray: Vec<Vec<u8>> = qa.iter_mut().map(drain).collect();
        match family {
            Family::Igb => {
                assert!(stray.iter().all(Vec::is_empty), "{stray:?}");
                assert_eq!(a.registers().rx_dropped_unsteered(), 1);
            }
            Family::Ixgbe => {
                assert_eq!(stray[0], [7], "{stray:?}");
                assert!(stray[1..].iter().all(Vec::is_empty), "{stray:?}");
                assert_eq!(qa[0].counters().rx_foreign, 1, "queue 0 counts what no filter claimed");
            }
        }
        assert_eq!(a.registers().violations(), Vec::<String>::new());
    }
}

#[test]
fn igb_endpoints_of_one_nic_reach_each_other_through_the_vmdq_switch() {
    let (wire, space) = (FakeWire::new(), DmaSpace::identity());
    let a = device(Family::Igb, MAC_A, 1, &wire, &space);
    let b = device(Family::Igb, MAC_B, 2, &wire, &space);
    let mut qa = queues(&a, 3);
    let _qb = queues(&b, 1);
    let mut rest = qa.split_off(1);
    check_frames_reach_only_their_queue(&mut qa[0], &mut rest).unwrap();
    assert_eq!(a.registers().frames_switched(), 2, "switched inside the NIC");
    assert_eq!(b.registers().rx_dropped_unsteered(), 0, "nothing reached the wire for the other NIC");
}

/// How a test breaks a register value.
type Breaks = fn(u32) -> u32;

/// The checks above are not vacuous: a filter broken in the device's registers sends frames to
/// the wrong queue or nowhere, and they say so.
#[test]
fn a_wrong_filter_is_caught() {
    for family in [Family::Igb, Family::Ixgbe] {
        let cases: Vec<(u32, Breaks)> = match family {
            // Pool 1's address in pool 2; pool 1's address invalid.
            Family::Igb => {
                vec![(igb_ral(1) + 4, |v| (v & !(0xFF << 18)) | 1 << 20), (igb_ral(1) + 4, |v| v & !(1 << 31))]
            }
            // Filter 1 to queue 2; its port in host byte order; its protocol TCP.
            Family::Ixgbe => vec![
                (ixgbe_l34t_imir(1), |v| (v & !(0x7F << 21)) | 2 << 21),
                (ixgbe_sdpqf(1), |v| u32::from(((v >> 16) as u16).swap_bytes()) << 16),
                (ixgbe_ftqf(1), |v| v & !3),
            ],
        };
        for (reg, bad) in cases {
            let (wire, space) = (FakeWire::new(), DmaSpace::identity());
            let a = device(family, MAC_A, 1, &wire, &space);
            let b = device(family, MAC_B, 2, &wire, &space);
            let mut qa = queues(&a, 3);
            let mut qb = queues(&b, 1);
            check_frames_reach_only_their_queue(&mut qb[0], &mut qa).unwrap();
            let f = a.registers();
            f.poke(reg, bad(f.peek(reg)));
            let e =
                check_frames_reach_only_their_queue(&mut qb[0], &mut qa).expect_err("a broken filter went unnoticed");
            assert!(e.contains("received tags"), "{family:?} {reg:#x}: {e}");
            println!("{family:?}, register {reg:#x} broken: {e}");
            let e = match family {
                Family::Igb => check_igb_pool(f, 1, qa[1].local_addr().mac),
                Family::Ixgbe => check_ixgbe_filter(f, 1, PORT + 1),
            };
            assert!(e.is_err(), "{family:?} {reg:#x}: the register check missed it");
        }
    }
}

#[test]
fn queues_are_limited_and_ports_and_macs_checked() {
    for family in [Family::Igb, Family::Ixgbe] {
        let (wire, space) = (FakeWire::new(), DmaSpace::identity());
        let dev = device(family, MAC_A, 1, &wire, &space);
        let small = |port| QueueConfig { rx_ring: 64, tx_ring: 64, rs_interval: 16, ..QueueConfig::port(port) };
        let max = dev.max_queues();
        assert_eq!(max, if family == Family::Igb { 8 } else { 64 });
        let qs: Vec<Queue> = (0..max).map(|i| dev.open_queue(small(PORT + i)).unwrap()).collect();
        let e = dev.open_queue(small(1)).err().expect("no queue left");
        assert!(matches!(e, IntelError::NoFreeQueue { max: m } if m == max), "{e:?}");
        assert!(e.to_string().contains("close an endpoint first"), "{e}");
        drop(qs);
        let _q = dev.open_queue(small(PORT)).unwrap();
        let e = dev.open_queue(small(PORT)).err().expect("port taken");
        assert!(matches!(e, IntelError::PortInUse(PORT)), "{e:?}");
        let e = dev.open_queue(QueueConfig { mac: Some([1, 0, 0, 0, 0, 1]), ..small(1) }).err().expect("multicast");
        assert!(matches!(e, IntelError::BadQueueMac(_)), "{e:?}");
        if family == Family::Igb {
            let e = dev.open_queue(QueueConfig { mac: Some(MAC_A), ..small(2) }).err().expect("queue 0's MAC");
            assert!(matches!(e, IntelError::BadQueueMac(MAC_A)), "{e:?}");
        }
    }
}

#[test]
fn dropping_the_device_first_leaves_its_queues_running_until_the_last_goes() {
    for family in [Family::Igb, Family::Ixgbe] {
        let (wire, space) = (FakeWire::new(), DmaSpace::identity());
        let a = device(family, MAC_A, 1, &wire, &space);
        let b = device(family, MAC_B, 2, &wire, &space);
        let mut qa = queues(&a, 2);
        let mut qb = queues(&b, 1);
        let fa = a.registers().clone();
        drop(a);
        check_frames_reach_only_their_queue(&mut qb[0], &mut qa).unwrap();
        let (rctl, en) = if family == Family::Igb { (0x100, 1 << 1) } else { (0x3000, 1) };
        assert_ne!(fa.peek(rctl) & en, 0, "{family:?}: receive still on");
        drop(qa.remove(0));
        assert_ne!(fa.peek(rctl) & en, 0, "{family:?}: receive on while a queue is open");
        check_frames_reach_only_their_queue(&mut qb[0], &mut qa).unwrap();
        drop(qa);
        assert_eq!(fa.peek(rctl) & en, 0, "{family:?}: the last queue's drop stopped the device");
        assert_eq!(fa.violations(), Vec::<String>::new());
    }
}

fn mesh_cfg() -> MeshConfig {
    MeshConfig {
        small_rpcs: 100,
        large_size: 1 << 20,
        loss: 0.02,
        loss_small_rpcs: 50,
        phase_timeout: Duration::from_secs(60),
        ..MeshConfig::default()
    }
}

/// Five endpoints on two NICs (three and two), one thread each, RPCs between every pair that
/// can reach each other; endpoint 1 closes after the first phase and the rest carry on.
fn endpoints_on_threads(family: Family) {
    let (wire, space) = (FakeWire::new(), DmaSpace::identity());
    let a = device(family, MAC_A, 1, &wire, &space);
    let b = device(family, MAC_B, 2, &wire, &space);
    let mut eps: Vec<Queue> = queues(&a, 3);
    eps.extend(queues(&b, 2));
    let eps = eps
        .into_iter()
        .map(|q| (q, dma_endpoint_memory_sessions(&space, 24 << 20, PageSize::Ordinary, 16).unwrap()))
        .collect();
    let cfg = MeshConfig {
        close_after_phase1: Some(1),
        // The 82599 has no switch between its queues without virtualisation: its endpoints
        // reach only the other NIC's.
        talks: (family == Family::Ixgbe).then_some(|i, j| (i < 3) != (j < 3)),
        ..mesh_cfg()
    };
    // No keepalives during the run: frames for the closed endpoint would (rightly) be dropped or
    // land on ixgbe's default queue, and this test counts strays.
    let rpc_cfg = RpcConfig {
        rto_ns: 5_000_000,
        keepalive_ns: 30_000_000_000,
        session_timeout_ns: 60_000_000_000,
        server_idle_timeout_ns: 300_000_000_000,
        ..RpcConfig::default()
    };
    let reports = run_mesh(eps, rpc_cfg, &cfg, |q: &Queue| {
        let c = q.counters();
        if c.rx_foreign != 0 || c.rx_dropped_by_driver != 0 || c.tx_flush_timeouts != 0 || c.rx_bad_release != 0 {
            return Err(format!("queue {}: {c:?}", q.index()));
        }
        Ok(format!("queue {} received {} frames, none foreign", q.index(), c.rx_frames))
    })
    .unwrap_or_else(|e| panic!("{family:?}: {e}"));
    for r in &reports {
        println!("{family:?} {r}");
    }
    assert!(reports[1].closed);
    let total: u64 = reports.iter().flat_map(|r| r.completed.values()).sum();
    assert!(total > 500, "{total} RPCs");
    assert!(reports.iter().map(|r| r.retransmissions).sum::<u64>() > 0, "loss forced retransmissions");
    // Every queue was closed by its endpoint's thread, and nothing was left steered.
    assert_eq!(a.open_queues(), Vec::<u16>::new());
    for f in [a.registers(), b.registers()] {
        assert_eq!(f.violations(), Vec::<String>::new());
        assert_eq!(f.rx_dropped_unsteered(), 0, "no frame was steered to a closed or missing queue");
    }
}

#[test]
fn igb_endpoints_on_threads_exchange_rpcs_and_one_closes_mid_run() {
    endpoints_on_threads(Family::Igb);
}

#[test]
fn ixgbe_endpoints_on_threads_exchange_rpcs_and_one_closes_mid_run() {
    endpoints_on_threads(Family::Ixgbe);
}

/// The VFIO guest's five-endpoint run (tests/vm/loopback.rs: 3 MB messages, 20 ms RTO, endpoint 2
/// closing) on the fake device, `STRESS_RUNS` times (default 5), with `STRESS_HOGS` busy threads
/// (default 2) taking the cores from the endpoints as the guest's one vCPU does: for hunting a
/// rare stall (`cargo test -p erpc-tests --test intel_multiq -- --ignored stress`).
#[test]
#[ignore]
fn stress_igb_mesh_with_the_vm_configuration() {
    let runs: usize = std::env::var("STRESS_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let hogs: usize = std::env::var("STRESS_HOGS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog_threads: Vec<_> = (0..hogs)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut failures = vec![];
    for run in 0..runs {
        let (wire, space) = (FakeWire::new(), DmaSpace::identity());
        let a = device(Family::Igb, MAC_A, 1, &wire, &space);
        let b = device(Family::Igb, MAC_B, 2, &wire, &space);
        let mut eps: Vec<Queue> = queues(&a, 3);
        eps.extend(queues(&b, 2));
        let eps = eps
            .into_iter()
            .map(|q| (q, dma_endpoint_memory_sessions(&space, 40 << 20, PageSize::Ordinary, 16).unwrap()))
            .collect();
        let cfg = MeshConfig { phase_timeout: Duration::from_secs(120), seed: run as u64 + 1, ..MeshConfig::guest() };
        let rpc_cfg = guest_rpc_config();
        let t0 = std::time::Instant::now();
        let r = run_mesh(eps, rpc_cfg, &cfg, |_q: &Queue| Ok(String::new()));
        println!("run {run}: {} in {:?}", if r.is_ok() { "ok" } else { "FAILED" }, t0.elapsed());
        if let Err(e) = r {
            println!("{e}");
            failures.push(e);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hog_threads {
        h.join().unwrap();
    }
    assert!(failures.is_empty(), "{} of {runs} runs failed: {failures:?}", failures.len());
}
