//! Traffic between two driver instances on two wired models: the loopback scenarios, loss,
//! `tx_flush`, a stalled send queue, stride exhaustion, fillers, malformed and error CQEs.

use erpc_dataplane::transport::TxPacket;
use erpc_dataplane::wire::HEADROOM;
use erpc_dataplane::Transport;
use erpc_tests::mlx5_model::CqeCorruption;
use erpc_tests::scenarios::LoopbackConfig;

use crate::harness::*;

#[test]
fn the_loopback_scenarios_run_between_two_model_instances() {
    let p = pair(|_| {}, |_| {});
    assert_eq!(p.a.local_addr().mac, [2, 0, 0, 0, 0, 1], "the MAC comes from the vport context");
    let lcfg = LoopbackConfig { small_rpcs: 500, loss_small_rpcs: 200, ..LoopbackConfig::default() };
    let (mut lb, ma, mb, link) = loopback(p, &lcfg);
    let report = lb.run_all(&lcfg).expect("scenarios");
    eprintln!("{report}");
    let (sa, sb) = (lb.client.transport().inner().stats(), lb.server.transport().inner().stats());
    eprintln!("A {sa:?}\nB {sb:?}\nmodel A {:?}\nmodel B {:?}\nlink {:?}", ma.counters(), mb.counters(), link.stats());
    assert!(ma.violations().is_empty(), "{:?}", ma.violations());
    assert!(mb.violations().is_empty(), "{:?}", mb.violations());
}

#[test]
fn small_and_multi_megabyte_rpcs_survive_link_loss() {
    let p = pair(|_| {}, |_| {});
    let lcfg = LoopbackConfig::default();
    let (mut lb, ma, mb, link) = loopback(p, &lcfg);
    link.set_loss(0.01, 42);
    lb.rpcs(300, 32, 32, &lcfg).expect("small RPCs under loss");
    lb.rpcs(2, 2 << 20, 16, &lcfg).expect("2 MB requests under loss");
    lb.rpcs(2, 16, 2 << 20, &lcfg).expect("2 MB responses under loss");
    let ls = link.stats();
    assert!(ls.dropped[0] + ls.dropped[1] > 10, "{ls:?}");
    let retx = lb.client.stats().retransmissions + lb.server.stats().retransmissions;
    assert!(retx > 0, "loss must force retransmissions");
    let (sa, sb) = (lb.client.transport().inner().stats(), lb.server.transport().inner().stats());
    assert!(sa.tx_flushes + sb.tx_flushes > 0 && sa.tx_flush_timeouts + sb.tx_flush_timeouts == 0, "{sa:?} {sb:?}");
    no_violations(&ma);
    no_violations(&mb);
}

#[test]
fn tx_flush_returns_only_after_the_device_read_every_wqe() {
    let mut p = pair(|_| {}, |_| {});
    let (src, dst) = (p.a.local_addr(), p.b.local_addr());
    let mut f = Frames::new(&p.sa, 8, 256);
    let pkts: Vec<TxPacket> = (0..8).map(|i| f.put(i, &src, &dst, &[i as u8; 64])).collect();
    p.ma.set_tx_paused(true);
    send_all(&mut p.a, &pkts);
    let sqn = p.a.sqn().0;
    assert_eq!(p.ma.sq_consumer(sqn), Some(0), "paused: nothing read yet");
    let m = p.ma.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        m.set_tx_paused(false);
    });
    let t0 = std::time::Instant::now();
    p.a.tx_flush();
    assert!(t0.elapsed().as_millis() >= 90, "tx_flush returned before the device read the WQEs");
    t.join().unwrap();
    let consumer = p.ma.sq_consumer(sqn).unwrap();
    assert!(consumer >= 9, "8 frames and the marker read: {consumer}");
    let s = p.a.stats();
    assert_eq!((s.tx_flush_markers, s.tx_flush_timeouts, p.a.tx_reclaimed()), (1, 0, 8));
    let got = lend(&mut p.b, 8);
    assert_eq!(got.len(), 8);
    p.b.rx_release(&got);
    no_violations(&p.ma);
}

#[test]
fn a_stalled_send_queue_is_reset_by_tx_flush_and_keeps_working() {
    let mut p = pair(|_| {}, |c| c.flush_timeout = std::time::Duration::from_millis(50));
    let (src, dst) = (p.a.local_addr(), p.b.local_addr());
    let mut f = Frames::new(&p.sa, 8, 256);
    let pkts: Vec<TxPacket> = (0..4).map(|i| f.put(i, &src, &dst, &[7; 64])).collect();
    p.ma.set_tx_paused(true);
    send_all(&mut p.a, &pkts);
    p.a.tx_flush();
    let s = p.a.stats();
    assert_eq!((s.tx_flush_timeouts, s.sq_resets), (1, 1));
    assert_eq!(p.a.tx_reclaimed(), 4, "after the reset the device reads none of them");
    p.ma.set_tx_paused(false);
    assert_eq!(p.ma.counters().tx_frames, 0, "the reset queue sent none of its old WQEs");
    // The queue works again.
    let again = f.put(5, &src, &dst, &[9; 64]);
    send_all(&mut p.a, &[again]);
    p.a.tx_flush();
    let got = lend(&mut p.b, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(payload_of(&got[0]), vec![9; 64]);
    p.b.rx_release(&got);
}

#[test]
fn stride_exhaustion_drops_at_the_device_and_release_reposts() {
    let mut p = pair(|_| {}, |c| c.rq_wqes = 2);
    let (src, dst) = (p.a.local_addr(), p.b.local_addr());
    let mut f = Frames::new(&p.sa, 1, 256);
    let pkt = f.put(0, &src, &dst, &[1; 100]);
    // 2 WQEs of 512 strides of 1 KiB hold 1024 one-stride frames; 76 more find no buffer.
    send_all(&mut p.a, &vec![pkt; 1100]);
    p.a.tx_flush();
    let held = lend(&mut p.b, 2000);
    assert_eq!(held.len(), 1024);
    assert_eq!(p.mb.counters().rx_out_of_buffer, 76);
    assert_eq!(p.b.rx_wqes_posted(), 0, "both buffers full and lent");
    // Releasing the first buffer's packets reposts it; the second stays out until released.
    p.b.rx_release(&held[..512]);
    assert_eq!(p.b.rx_wqes_posted(), 1);
    let mut f2 = Frames::new(&p.sa, 4, 256);
    let fresh: Vec<TxPacket> = (0..4).map(|i| f2.put(i, &src, &dst, &[0x40 + i as u8; 200])).collect();
    send_all(&mut p.a, &fresh);
    p.a.tx_flush();
    let got = lend(&mut p.b, 4);
    assert_eq!(
        got.iter().map(payload_of).collect::<Vec<_>>(),
        (0..4).map(|i| vec![0x40 + i as u8; 200]).collect::<Vec<_>>()
    );
    p.b.rx_release(&held[512..]);
    p.b.rx_release(&got);
    assert_eq!(p.b.stats().rx_bad_release, 0);
    p.b.rx_release(&got[..1]);
    assert_eq!(p.b.stats().rx_bad_release, 1, "a second release of the same packet is refused");
    no_violations(&p.mb);
}

#[test]
fn a_frame_that_does_not_fit_the_rest_of_a_buffer_follows_a_filler() {
    // 512-byte strides: a 1100-byte frame takes 3, so 170 fill 510 strides of a buffer and the
    // 171st goes to the next buffer after a filler for the last 2.
    let mut p = pair(|_| {}, |c| c.stride_size = 512);
    let (src, dst) = (p.a.local_addr(), p.b.local_addr());
    let mut f = Frames::new(&p.sa, 200, 1200);
    let pkts: Vec<TxPacket> =
        (0..200).map(|i| f.put(i, &src, &dst, &erpc_tests::pattern(i as u64, 1100 - HEADROOM))).collect();
    let mut got = vec![];
    for chunk in pkts.chunks(20) {
        send_all(&mut p.a, chunk);
        p.a.tx_flush();
        let l = lend(&mut p.b, chunk.len());
        got.extend(l.iter().map(payload_of));
        p.b.rx_release(&l);
    }
    assert_eq!(got.len(), 200);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &erpc_tests::pattern(i as u64, 1100 - HEADROOM), "frame {i}");
    }
    assert_eq!(p.b.stats().rx_filler_cqes, 1);
    assert_eq!(p.mb.counters().rx_filler_cqes, 1);
    no_violations(&p.mb);
}

#[test]
fn malformed_and_error_cqes_are_dropped_and_counted() {
    let mut p = pair(|_| {}, |_| {});
    let (src, dst) = (p.a.local_addr(), p.b.local_addr());
    let mut f = Frames::new(&p.sa, 2, 256);
    let bad = f.put(0, &src, &dst, &[0xBB; 64]);
    let good = f.put(1, &src, &dst, &[0x60; 64]);
    let kinds = [
        CqeCorruption::BadOpcode,
        CqeCorruption::ErrorCqe { syndrome: 0x13 },
        CqeCorruption::StrideOutOfRange,
        CqeCorruption::LengthBeyondStrides,
        CqeCorruption::WrongWqeId,
    ];
    for (k, kind) in kinds.into_iter().enumerate() {
        p.mb.corrupt_next_rx_cqe(kind);
        send_all(&mut p.a, &[bad, good]);
        p.a.tx_flush();
        let got = lend(&mut p.b, 2);
        assert_eq!(got.len(), 1, "{kind:?}: only the good frame is lent");
        assert_eq!(payload_of(&got[0]), vec![0x60; 64], "{kind:?}");
        p.b.rx_release(&got);
        let s = p.b.stats();
        assert_eq!(s.rx_bad_opcode_cqes + s.rx_error_cqes + s.rx_malformed_cqes, k as u64 + 1, "{kind:?}: {s:?}");
    }
    let s = p.b.stats();
    assert_eq!((s.rx_bad_opcode_cqes, s.rx_error_cqes, s.rx_malformed_cqes), (1, 1, 3));
    // Traffic goes on normally afterwards, across buffers.
    let pkts = vec![good; 1500];
    send_all(&mut p.a, &pkts);
    p.a.tx_flush();
    let mut n = 0;
    loop {
        let l = lend(&mut p.b, 64);
        if l.is_empty() {
            break;
        }
        n += l.len();
        p.b.rx_release(&l);
    }
    assert_eq!(n, 1500);
}

/// The consumed-strides count of a striding-RQ CQE is 15 bits (`byte_cnt` 30:16, Linux
/// `mpwrq_get_cqe_consumed_strides`): a CQE with the top bit set claims 16,384 more strides
/// than a WQE has and is dropped, not lent as if the bit were not there.
#[test]
fn a_stride_count_with_its_top_bit_set_is_malformed() {
    let mut p = pair(|_| {}, |_| {});
    let (src, dst) = (p.a.local_addr(), p.b.local_addr());
    let mut f = Frames::new(&p.sa, 2, 256);
    let bad = f.put(0, &src, &dst, &[0xBB; 64]);
    let good = f.put(1, &src, &dst, &[0x60; 64]);
    p.mb.corrupt_next_rx_cqe(CqeCorruption::StrideCountTopBit);
    send_all(&mut p.a, &[bad, good]);
    p.a.tx_flush();
    let got = lend(&mut p.b, 2);
    assert_eq!(got.iter().map(payload_of).collect::<Vec<_>>(), [vec![0x60; 64]], "only the good frame is lent");
    p.b.rx_release(&got);
    assert_eq!(p.b.stats().rx_malformed_cqes, 1, "{:?}", p.b.stats());
}
