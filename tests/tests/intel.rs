//! The Intel driver (igb and ixgbe register setup, shared rings, `Transport`) against the
//! register-level fake of `erpc_tests::intel_fake`, on the host.
//!
//! What it covers: the Intel driver against a register-level fake of the 82576 and the 82599
//! (`tests/intel_fake.rs`, its own register map from the datasheets, strict about ring registers
//! written while a queue is enabled): the same loopback scenarios on both families, ring setup,
//! unsignaled transmit and reclaim, in-order reposting of buffers released out of order, double or
//! forged releases refused and counted, frames flagged by the device dropped and counted, a link
//! that never comes up.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::transport::{RxPacket, Transport};
use erpc_dataplane::{OwnedMemory, RpcConfig};
use erpc_driver::intel::{Family, IntelConfig, IntelDevice, IntelError, IntelQueue, QueueConfig};
use erpc_hugepages::{DmaSpace, PageSize};
use erpc_tests::intel_fake::{FakeIntel, FakeWire};
use erpc_tests::scenarios::{dma_endpoint_memory, Loopback, LoopbackConfig};
use std::sync::Arc;
use std::time::Duration;

const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];

fn cfg(ip: u8) -> IntelConfig {
    IntelConfig { ipv4: [10, 0, 0, ip], link_timeout: Duration::from_secs(1), ..Default::default() }
}

type Queue = IntelQueue<FakeIntel>;

/// A device on a fake attached to `wire`, with one queue open (queue 0) with `qcfg`.
fn nic(family: Family, mac: [u8; 6], wire: &Arc<FakeWire>, space: &Arc<DmaSpace>, ip: u8, qcfg: QueueConfig) -> Queue {
    let dev = IntelDevice::with_registers(FakeIntel::new(family, mac, wire), family, space, cfg(ip)).expect("bring-up");
    dev.open_queue(qcfg).expect("queue")
}

fn pair(family: Family) -> (Queue, Queue, Arc<DmaSpace>) {
    let wire = FakeWire::new();
    let space = DmaSpace::identity();
    let a = nic(family, MAC_A, &wire, &space, 1, QueueConfig::default());
    let b = nic(family, MAC_B, &wire, &space, 2, QueueConfig::default());
    (a, b, space)
}

/// Endpoint memory in the identity DMA space (the fake dereferences device addresses).
fn memory(space: &Arc<DmaSpace>, bytes: usize) -> OwnedMemory {
    dma_endpoint_memory(space, bytes, PageSize::Ordinary).expect("memory")
}

fn small_loopback_cfg() -> LoopbackConfig {
    LoopbackConfig {
        small_rpcs: 300,
        large_size: 1 << 20,
        large_rpcs: 2,
        loss: 0.02,
        loss_small_rpcs: 200,
        loss_large_rpcs: 2,
        phase_timeout_ns: 30_000_000_000,
        ..Default::default()
    }
}

fn run_loopback(family: Family) {
    let (a, b, space) = pair(family);
    let fa = a.registers().clone();
    let fb = b.registers().clone();
    let rpc_cfg = RpcConfig { rto_ns: 2_000_000, ..RpcConfig::default() };
    let lcfg = small_loopback_cfg();
    let mut lb =
        Loopback::connect(a, b, memory(&space, 8 << 20), memory(&space, 8 << 20), StdClock::default(), rpc_cfg, &lcfg)
            .expect("connect");
    let report = lb.run_all(&lcfg).expect("loopback scenarios");
    println!("{report}");
    assert_eq!(fa.violations(), Vec::<String>::new());
    assert_eq!(fb.violations(), Vec::<String>::new());
    let ca = lb.client.transport().inner().device_counters();
    let cb = lb.server.transport().inner().device_counters();
    // The device counters saw the traffic both ways and agree with each other.
    assert!(ca.tx_packets > 1000 && cb.tx_packets > 1000, "{ca:?} {cb:?}");
    assert_eq!(cb.rx_no_buffer, 0, "the server kept buffers posted");
    assert_eq!((ca.tx_packets, ca.tx_bytes), (cb.rx_packets, cb.rx_bytes), "{ca:?} {cb:?}");
    assert_eq!((cb.tx_packets, cb.tx_bytes), (ca.rx_packets, ca.rx_bytes), "{ca:?} {cb:?}");
    let qa = lb.client.transport().inner().counters();
    let qb = lb.server.transport().inner().counters();
    assert_eq!(qa.rx_bad_release + qb.rx_bad_release, 0);
    assert_eq!(qa.tx_flush_timeouts + qb.tx_flush_timeouts, 0);
    assert_eq!(qa.rx_dropped_by_driver + qb.rx_dropped_by_driver, 0);
    assert_eq!((qa.rx_foreign, qb.rx_foreign), (0, 0), "every frame reached the queue it was for");
    assert_eq!(qb.rx_frames, ca.tx_packets, "the server's queue got every frame the client's NIC sent");
}

#[test]
fn igb_loopback_scenarios_on_the_fake() {
    run_loopback(Family::Igb);
}

#[test]
fn ixgbe_loopback_scenarios_on_the_fake() {
    run_loopback(Family::Ixgbe);
}

#[test]
fn bring_up_programs_the_rings_and_link() {
    for family in [Family::Igb, Family::Ixgbe] {
        let (a, _b, _space) = pair(family);
        assert_eq!(a.local_addr().mac, MAC_A, "{family:?}: MAC from RAL0/RAH0");
        let f = a.registers();
        let (rdlen, tdlen, rdt) = match family {
            Family::Igb => (0xC008, 0xE008, 0xC018),
            Family::Ixgbe => (0x1008, 0x6008, 0x1018),
        };
        assert_eq!(f.peek(rdlen), 512 * 16, "{family:?}");
        assert_eq!(f.peek(tdlen), 512 * 16, "{family:?}");
        assert_eq!(f.peek(rdt), 511, "{family:?}: all but one RX descriptor posted");
        assert_eq!(f.violations(), Vec::<String>::new(), "{family:?}");
    }
}

/// A 60-byte frame from A to B in fresh memory of the identity space, as one segment or two.
fn test_packet(space: &Arc<DmaSpace>, two_segments: bool) -> erpc_dataplane::transport::TxPacket {
    use erpc_dataplane::transport::{Segment, TxPacket};
    let mem = Box::leak(Box::new(space.alloc(4096, PageSize::Ordinary).unwrap()));
    let p = mem.vaddr().as_ptr();
    // SAFETY: our own fresh memory; the fake reads it.
    unsafe {
        std::ptr::copy_nonoverlapping(MAC_B.as_ptr(), p, 6);
        std::ptr::copy_nonoverlapping(MAC_A.as_ptr(), p.add(6), 6);
    }
    if !two_segments {
        return TxPacket { segs: [Segment { vaddr: p, iova: mem.iova(), len: 60 }, Segment::EMPTY] };
    }
    // SAFETY: inside the 4 KiB allocation.
    let second = unsafe { p.add(2048) };
    TxPacket {
        segs: [
            Segment { vaddr: p, iova: mem.iova(), len: 30 },
            Segment { vaddr: second, iova: mem.iova() + 2048, len: 30 },
        ],
    }
}

/// Sends `n` minimal frames from `a` (to `b`'s MAC) through the Transport interface.
fn send_frames(a: &mut Queue, space: &Arc<DmaSpace>, n: usize) {
    let pkt = test_packet(space, false);
    for _ in 0..n {
        assert_eq!(a.tx_burst(&[pkt]), 1);
    }
}

#[test]
fn transmit_is_unsignaled_and_flush_reclaims_everything() {
    let (mut a, _b, space) = pair(Family::Igb);
    send_frames(&mut a, &space, 100);
    // One write-back requested per 32 packets.
    assert_eq!(a.registers().rs_descriptors(), 3);
    assert_eq!(a.tx_reclaimed(), 96);
    a.tx_flush();
    assert_eq!(a.tx_reclaimed(), 100);
    // The ring never fills: 2000 packets go through a 512-entry ring.
    send_frames(&mut a, &space, 2000);
    assert_eq!(a.device_counters().tx_packets, 2100);
}

#[test]
fn receive_lends_buffers_and_reposts_them_in_ring_order() {
    let (mut a, mut b, space) = pair(Family::Ixgbe);
    send_frames(&mut a, &space, 600);
    // 511 posted buffers: the rest found no descriptor.
    let c = b.device_counters();
    assert_eq!((c.rx_packets, c.rx_no_buffer), (511, 89), "{c:?}");
    let mut out = [RxPacket::EMPTY; 32];
    let n = b.rx_burst(&mut out);
    assert_eq!(n, 32);
    assert!(out.iter().all(|p| p.len == 60));
    // Released out of order: only the in-order prefix is reposted.
    // The spare descriptor 511 is posted; descriptor 0 is still lent, so RDT stops there.
    b.rx_release(&out[1..]);
    assert_eq!(b.registers().peek(0x1018), 0, "descriptor 0 still lent: RDT holds");
    // Now 0..=30 are posted; 31 stays the spare in front of the next unread descriptor (32).
    b.rx_release(&out[..1]);
    assert_eq!(b.registers().peek(0x1018), 31);
    // A second release of the same buffers is refused and counted, not reposted twice.
    b.rx_release(&out[..4]);
    assert_eq!(b.counters().rx_bad_release, 4);
    b.rx_release(&[RxPacket { id: 9999, ..RxPacket::EMPTY }]);
    assert_eq!(b.counters().rx_bad_release, 5);
}

#[test]
fn frames_flagged_by_the_device_are_dropped_and_counted() {
    let (mut a, mut b, space) = pair(Family::Igb);
    b.registers().corrupt_next_rx(3);
    send_frames(&mut a, &space, 10);
    let mut out = [RxPacket::EMPTY; 32];
    let n = b.rx_burst(&mut out);
    assert_eq!(n, 7, "3 frames flagged RXE are not handed to the dataplane");
    assert_eq!(b.counters().rx_dropped_by_driver, 3);
    b.rx_release(&out[..n]);
    // Oversized frames (no EOP in one buffer) are dropped too.
    b.registers().inject(&[0u8; 3000]);
    let mut big = vec![0u8; 3000];
    big[..6].copy_from_slice(&MAC_B);
    b.registers().inject(&big);
    assert_eq!(b.rx_burst(&mut out), 0);
    assert_eq!(b.counters().rx_dropped_by_driver, 4);
}

#[test]
fn bad_configuration_is_refused_with_a_reason() {
    let wire = FakeWire::new();
    let space = DmaSpace::identity();
    let dev = IntelDevice::with_registers(FakeIntel::new(Family::Igb, MAC_A, &wire), Family::Igb, &space, cfg(1))
        .expect("bring-up");
    let bad = QueueConfig { rx_ring: 100, ..Default::default() };
    let e = dev.open_queue(bad).err().expect("ring of 100 refused");
    assert!(e.to_string().contains("multiple of 8"), "{e}");
    assert!(matches!(e, IntelError::RingSize { ring: "rx_ring", entries: 100 }), "{e:?}");
}

#[test]
fn a_device_that_never_links_gives_a_clear_error() {
    let wire = FakeWire::new();
    let space = DmaSpace::identity();
    let fake = FakeIntel::new(Family::Ixgbe, MAC_A, &wire);
    fake.unplug();
    let probe = fake.clone();
    let c = IntelConfig { link_timeout: Duration::from_millis(50), ..cfg(1) };
    let e = IntelDevice::with_registers(fake, Family::Ixgbe, &space, c).err().expect("no link");
    assert!(e.to_string().contains("no link after"), "{e}");
    // The fake kept its registers: nothing reached the queue setup.
    assert_eq!(probe.peek(0x42A4), 0, "LINKS.UP stayed clear");
}

#[test]
fn a_full_ring_always_has_a_write_back_to_wait_for() {
    // 64 descriptors, two per packet, a write-back every 16 packets: with the device paused the
    // ring fills; once it resumes, the next burst must find room again (it would wait forever
    // if no descriptor in the full ring had asked for a write-back).
    let wire = FakeWire::new();
    let space = DmaSpace::identity();
    let c = QueueConfig { tx_ring: 64, rs_interval: 16, ..Default::default() };
    let mut a = nic(Family::Igb, MAC_A, &wire, &space, 1, c);
    let _b = nic(Family::Igb, MAC_B, &wire, &space, 2, QueueConfig::default());
    let pkt = test_packet(&space, true);
    a.registers().hold_tx(true);
    let mut accepted = 0;
    while a.tx_burst(&[pkt]) == 1 {
        accepted += 1;
        assert!(accepted < 64, "the ring never filled");
    }
    assert_eq!(accepted, 31, "63 usable descriptors hold 31 two-segment packets");
    a.registers().hold_tx(false);
    assert_eq!(a.registers().frames_transmitted(), 31);
    for i in 0..1000 {
        assert_eq!(a.tx_burst(&[pkt]), 1, "packet {i} after the device resumed");
    }
    assert_eq!(a.registers().violations(), Vec::<String>::new());
    let dev = IntelDevice::with_registers(FakeIntel::new(Family::Igb, MAC_A, &wire), Family::Igb, &space, cfg(1))
        .expect("bring-up");
    let bad = QueueConfig { tx_ring: 64, rs_interval: 32, ..Default::default() };
    let e = dev.open_queue(bad).err().expect("rs_interval above a quarter of the ring refused");
    assert!(e.to_string().contains("rs_interval = 32: use 1..=16"), "{e}");
    assert!(matches!(e, IntelError::RsInterval { value: 32, max: 16 }), "{e:?}");
}

#[test]
fn a_flush_that_times_out_restarts_the_queue_and_never_sends_stale_descriptors() {
    let (mut a, _b, space) = pair(Family::Ixgbe);
    let pkt = test_packet(&space, true);
    a.registers().hold_tx(true);
    for _ in 0..10 {
        assert_eq!(a.tx_burst(&[pkt]), 1);
    }
    a.tx_flush(); // the device never gets there: gives up after a second
    assert_eq!(a.counters().tx_flush_timeouts, 1);
    assert_eq!(a.tx_reclaimed(), 10, "the caller may reuse the buffers");
    a.registers().hold_tx(false);
    assert_eq!(a.registers().frames_transmitted(), 0, "the stale descriptors were discarded");
    for _ in 0..5 {
        assert_eq!(a.tx_burst(&[pkt]), 1);
    }
    a.tx_flush();
    assert_eq!(a.registers().frames_transmitted(), 5, "the restarted queue sends again");
    assert_eq!(a.registers().violations(), Vec::<String>::new());
}
