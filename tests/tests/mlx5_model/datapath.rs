//! The datapath: sends to a peer's striding RQ, CQEs and owner bits, fillers, out of buffer,
//! error CQEs, paused transmit, the link, CQE corruption, doorbells, concurrency.

use erpc_driver::mmio::{RegisterIo, RegisterIo64};
use erpc_tests::mlx5_model::layout::{
    self, cap_eth, cqe, hca_cap, op, q_counter, rqc, sqc, status, vport, wq, wqe, CTX_BIT, QN,
};
use erpc_tests::mlx5_model::{syndrome, CqeCorruption, Direction, Mlx5Config, Mlx5Model, QueueState, ViolationKind};

use crate::host::*;
use crate::nic::*;

#[test]
fn a_send_arrives_in_the_peers_striding_rq_with_the_right_cqes() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let mut b = Nic::new(cfg_mac(MAC_B));
    let link = Mlx5Model::connect(a.model(), b.model());
    let (mut txcq, mut sq) = tx_side(&mut a, 3, 4);
    let mut rx = rx_side(&mut b, 4, 2, 0, 4, 2);
    let frame = udp_frame(MAC_B, MAC_A, 4791, 1500 - 28);
    let lkey = a.lkey;
    let idx = a.send(&mut sq, &frame, 18, true, lkey);
    assert_eq!(idx, 0);
    // The sender's completion.
    let c = txcq.poll().expect("a send CQE");
    assert_eq!(opcode(&c), cqe::OP_REQ);
    assert_eq!(be16_at(&c, cqe::WQE_COUNTER), 0);
    assert_eq!(layout::get32(&c, cqe::SOP_DROP_QPN), u32::from(wqe::OPCODE_SEND) << 24 | sq.sqn);
    assert_eq!(c[cqe::OP_OWN] & 1, 0, "first pass: owner 0");
    // The receiver's.
    let q = rx.cq.poll().expect("a receive CQE");
    assert_eq!(opcode(&q), cqe::OP_RESP_SEND);
    let bc = layout::get32(&q, cqe::BYTE_CNT);
    assert_eq!(bc & 0xffff, frame.len() as u32);
    assert_eq!((bc >> cqe::STRIDES_SHIFT) & cqe::STRIDES_MASK, 2, "1514 bytes in 1 KiB strides");
    assert_eq!(bc >> 31, 0, "not a filler");
    assert_eq!((be16_at(&q, cqe::WQE_ID), be16_at(&q, cqe::WQE_COUNTER)), (0, 0));
    assert_eq!(q[cqe::HDS_IP_EXT], cqe::L2_OK | cqe::L3_OK | cqe::L4_OK);
    assert_eq!(q[cqe::L4_L3_HDR_TYPE], 2 << 4 | 2 << 2, "UDP over IPv4");
    assert_eq!(rx.rq.packet(&q, 0), frame);
    // A second packet lands two strides further.
    let f2 = udp_frame(MAC_B, MAC_A, 4791, 100);
    a.send(&mut sq, &f2, 18, true, lkey);
    let q = rx.cq.poll().unwrap();
    assert_eq!((be16_at(&q, cqe::WQE_ID), be16_at(&q, cqe::WQE_COUNTER)), (0, 2));
    assert_eq!(rx.rq.packet(&q, 0), f2);
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().stride, 3);
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(sq.pc));
    let s = link.stats();
    assert_eq!((s.carried, s.dropped), ([2, 0], [0, 0]));
    let (ca, cb) = (a.model().counters(), b.model().counters());
    assert_eq!((ca.tx_frames, ca.tx_cqes, cb.rx_frames), (2, 2, 2));
    // A frame with more inline headers than one WQEBB holds spans two (ds 6) and still works.
    assert_eq!(be16_at(&txcq.poll().unwrap(), cqe::WQE_COUNTER), 1);
    let idx = a.send(&mut sq, &f2, 60, true, lkey);
    assert_eq!(sq.pc, idx + 2, "two WQEBBs");
    assert_eq!(be16_at(&txcq.poll().unwrap(), cqe::WQE_COUNTER), idx);
    assert_eq!(rx.rq.packet(&rx.cq.poll().unwrap(), 0), f2);
    assert!(a.model().violations().is_empty(), "{:?}", a.model().violations());
    assert!(b.model().violations().is_empty(), "{:?}", b.model().violations());
}

#[test]
fn unsignaled_sends_complete_nothing_and_owner_bits_wrap_on_a_small_cq() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let (mut txcq, mut sq) = tx_side(&mut a, 1, 3);
    let f = udp_frame(MAC_B, MAC_A, 9, 64);
    let lkey = a.lkey;
    let mut owners = vec![];
    let mut counters = vec![];
    // 12 sends, every third signaled, over an SQ of 8 WQEBBs (wrapping) and a CQ of 2 entries.
    for k in 0..12u32 {
        a.send(&mut sq, &f, 18, k % 3 == 2, lkey);
        while let Some(c) = txcq.poll() {
            owners.push(c[cqe::OP_OWN] & 1);
            counters.push(be16_at(&c, cqe::WQE_COUNTER));
        }
    }
    assert_eq!(counters, [2, 5, 8, 11], "only signaled WQEs complete, with their own index");
    assert_eq!(owners, [0, 0, 1, 1], "the owner bit flips each pass over the 2-entry CQ");
    let c = a.model().counters();
    assert_eq!((c.tx_wqes, c.tx_frames, c.tx_cqes, c.tx_discarded), (12, 12, 4, 12));
    assert_eq!(a.model().cq(txcq.cqn).unwrap().producer, 4);
    // Without consuming, the third CQE overruns the 2-entry CQ.
    for _ in 0..3 {
        a.send(&mut sq, &f, 18, true, lkey);
    }
    let info = a.model().cq(txcq.cqn).unwrap();
    assert!(info.overrun);
    assert_eq!(a.model().counters().cq_overruns, 1);
    assert!(a.model().violations().iter().any(|v| v.kind == ViolationKind::CqOverrun));
}

#[test]
fn a_packet_that_does_not_fit_the_rest_of_a_wqe_gets_a_filler_cqe() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    // 512 strides of 64 bytes: 32 KiB per WQE.
    let mut rx = rx_side(&mut b, 6, 2, 0, 0, 2);
    let small = udp_frame(MAC_B, MAC_A, 1, 1024 - 42);
    assert_eq!(small.len(), 1024);
    for _ in 0..31 {
        b.model().inject_rx_frame(&small);
    }
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().stride, 496);
    let big = udp_frame(MAC_B, MAC_A, 1, 1100);
    b.model().inject_rx_frame(&big);
    let cqes = rx.cq.drain();
    assert_eq!(cqes.len(), 33);
    let filler = &cqes[31];
    let bc = layout::get32(filler, cqe::BYTE_CNT);
    assert_eq!(bc >> 31, 1, "filler");
    assert_eq!((bc >> cqe::STRIDES_SHIFT) & cqe::STRIDES_MASK, 16, "the 16 strides left");
    assert_eq!((be16_at(filler, cqe::WQE_ID), be16_at(filler, cqe::WQE_COUNTER)), (0, 496));
    let q = &cqes[32];
    assert_eq!(layout::get32(q, cqe::BYTE_CNT), 18 << 16 | big.len() as u32);
    assert_eq!((be16_at(q, cqe::WQE_ID), be16_at(q, cqe::WQE_COUNTER)), (1, 0));
    assert_eq!(rx.rq.packet(q, 0), big);
    assert_eq!(b.model().counters().rx_filler_cqes, 1);
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().consumer, 1);
}

#[test]
fn with_no_wqe_posted_frames_count_as_out_of_buffer() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let qc = layout::get(&b.h.cmd(&inbox(op::ALLOC_Q_COUNTER, 0, 16), 16).ok(), q_counter::ALLOC_ID);
    let cq = b.cq(3, false);
    let (buf, db) = (b.mem(4096), b.mem(4096));
    let mut r = b.rq_in(cq.cqn, 1, 0, 1, buf.iova(), db.iova());
    layout::set(&mut r, rqc::COUNTER_SET_ID.at(CTX_BIT), qc);
    let rqn = layout::get(&b.h.cmd(&r, 16).ok(), QN);
    b.modify(false, rqn, 0, 1).ok();
    let tir = b.tir(rqn);
    b.steer_all(tir);
    let f = udp_frame(MAC_B, MAC_A, 1, 100);
    b.model().inject_rx_frame(&f);
    b.model().inject_rx_frame(&f);
    b.model().inject_rx_frame(&[0u8; 10]);
    assert_eq!(b.model().counters().rx_out_of_buffer, 2);
    assert_eq!(b.model().counters().rx_port_drops, 1, "shorter than an Ethernet header");
    let mut q = inbox(op::QUERY_Q_COUNTER, 0, q_counter::QUERY_IN_SIZE);
    layout::set(&mut q, q_counter::QUERY_ID, qc);
    layout::set(&mut q, q_counter::QUERY_CLEAR, 1);
    let out = b.h.cmd(&q, q_counter::QUERY_OUT_SIZE).ok();
    assert_eq!(layout::get(&out, q_counter::OUT_OF_BUFFER), 2);
    assert_eq!(b.model().q_counter(qc as u8), Some(0), "cleared");
    assert_eq!(b.model().cq(cq.cqn).unwrap().producer, 0, "no CQE for a dropped frame");
}

#[test]
fn a_bad_lkey_is_an_error_cqe_and_the_sq_stops_until_reset() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let (mut txcq, mut sq) = tx_side(&mut a, 3, 3);
    a.model().record_tx(true);
    let f = udp_frame(MAC_B, MAC_A, 1, 200);
    let lkey = a.lkey;
    a.send(&mut sq, &f, 18, false, lkey);
    a.send(&mut sq, &f, 18, false, lkey ^ 1);
    let c = txcq.poll().expect("an error CQE even though unsignaled");
    assert_eq!(opcode(&c), cqe::OP_REQ_ERR);
    assert_eq!(c[cqe::SYNDROME], cqe::SYND_LOCAL_PROT_ERR);
    assert_eq!(c[cqe::VENDOR_ERR_SYND], erpc_tests::mlx5_model::vendor_syndrome::LKEY);
    assert_eq!(be16_at(&c, cqe::WQE_COUNTER), 1);
    assert_eq!(layout::get32(&c, cqe::SOP_DROP_QPN), u32::from(wqe::OPCODE_SEND) << 24 | sq.sqn);
    assert_eq!(a.model().sq(sq.sqn).unwrap().state, QueueState::Err);
    assert_eq!(a.model().take_tx_frames().len(), 1, "only the first went out");
    // Nothing more is processed.
    a.send(&mut sq, &f, 18, true, lkey);
    assert!(txcq.poll().is_none());
    assert_eq!(a.model().counters().tx_doorbells_in_error, 1);
    assert_eq!(a.model().counters().tx_error_cqes, 1);
    assert!(a.model().violations().iter().any(|v| v.kind == ViolationKind::ErrorCqe));
    // Reset: the counter starts over at 0.
    a.modify(true, sq.sqn, sqc::STATE_ERR, sqc::STATE_RST).ok();
    a.modify(true, sq.sqn, sqc::STATE_RST, sqc::STATE_RDY).ok();
    sq.pc = 0;
    a.send(&mut sq, &f, 18, true, lkey);
    let c = txcq.poll().unwrap();
    assert_eq!((opcode(&c), be16_at(&c, cqe::WQE_COUNTER)), (cqe::OP_REQ, 0));
    // A wrong WQE index, a short inline header under an L2 inline requirement, and an over-long
    // frame are error CQEs too.
    let mut b = Nic::new(Mlx5Config { min_inline_mode: 1, ..cfg_mac(MAC_A) });
    let eth = b.h.query_cap(hca_cap::ETHERNET_OFFLOADS, true);
    assert_eq!(layout::get(&eth, cap_eth::WQE_INLINE_MODE), 1, "inline mode from the vport context");
    let q = b.h.cmd(&inbox(op::QUERY_NIC_VPORT_CONTEXT, 0, 16), 0x110).ok();
    assert_eq!(layout::get(&q[vport::QUERY_OUT_CTX..], vport::MIN_WQE_INLINE_MODE), 1);
    let mut cq2 = b.cq(3, false);
    let tisn = b.tis();
    let (buf, db, data) = (b.mem(4096), b.mem(4096), b.mem(2048 << 3));
    let mut i = b.sq_in(cq2.cqn, tisn, 3, buf.iova(), db.iova());
    assert_eq!(b.h.cmd(&i, 16).failed(), (status::BAD_PARAM, syndrome::INLINE_MODE), "the SQ must inline L2");
    layout::set(&mut i, sqc::MIN_WQE_INLINE_MODE.at(CTX_BIT), 1);
    let sqn = layout::get(&b.h.cmd(&i, 16).ok(), QN);
    b.modify(true, sqn, 0, 1).ok();
    let mut sq2 = TestSq { sqn, log: 3, buf, db, data, uar: b.uar, pc: 0, bf: 0, bf_step: 0x100 };
    let lkey = b.lkey;
    b.send(&mut sq2, &f, 14, true, lkey);
    let c = cq2.poll().unwrap();
    assert_eq!((opcode(&c), c[cqe::SYNDROME]), (cqe::OP_REQ_ERR, cqe::SYND_LOCAL_QP_OP_ERR));
    assert_eq!(c[cqe::VENDOR_ERR_SYND], erpc_tests::mlx5_model::vendor_syndrome::INLINE);
    let mut c3 = Nic::new(cfg_mac(MAC_A));
    let (mut cq3, mut sq3) = tx_side(&mut c3, 3, 3);
    let lkey = c3.lkey;
    c3.send(&mut sq3, &udp_frame(MAC_B, MAC_A, 1, 1500), 18, true, lkey);
    assert_eq!(cq3.poll().unwrap()[cqe::SYNDROME], cqe::SYND_LOCAL_LENGTH_ERR, "1542 bytes > 1500 + 14");
}

#[test]
fn paused_transmit_reads_nothing_until_resumed() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let mut b = Nic::new(cfg_mac(MAC_B));
    let _link = Mlx5Model::connect(a.model(), b.model());
    let (mut txcq, mut sq) = tx_side(&mut a, 3, 4);
    let mut rx = rx_side(&mut b, 4, 2, 0, 4, 2);
    a.model().set_tx_paused(true);
    let lkey = a.lkey;
    for k in 0..3 {
        a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, k == 2, lkey);
    }
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(0), "nothing read");
    assert_eq!(a.model().pending_tx_doorbells(), 3);
    assert!(txcq.poll().is_none());
    assert!(rx.cq.poll().is_none());
    a.model().set_tx_paused(false);
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(3));
    assert_eq!(be16_at(&txcq.poll().unwrap(), cqe::WQE_COUNTER), 2);
    let got: Vec<u32> = rx.cq.drain().iter().map(|q| be16_at(&rx.rq.packet(q, 0), 36)).collect();
    assert_eq!(got, [0, 1, 2], "delivered in order");
}

#[test]
fn the_link_drops_frames_as_told_and_deterministically() {
    let run = |seed: u64| {
        let mut a = Nic::new(cfg_mac(MAC_A));
        let mut b = Nic::new(cfg_mac(MAC_B));
        let link = Mlx5Model::connect(a.model(), b.model());
        let (_txcq, mut sq) = tx_side(&mut a, 6, 6);
        let mut rx = rx_side(&mut b, 7, 3, 0, 4, 8);
        link.set_tap(true);
        link.drop_next(2);
        let lkey = a.lkey;
        for k in 0..2 {
            a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
        }
        assert_eq!(link.stats().dropped, [2, 0]);
        link.set_loss(0.5, seed);
        for k in 0..40 {
            a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
        }
        link.set_loss(0.0, 0);
        link.drop_matching(Some(Box::new(|f: &[u8]| f[37] == 7)));
        for k in 0..10 {
            a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
        }
        let s = link.stats();
        assert_eq!(s.carried[0] + s.dropped[0], 52);
        let tapped = link.take_tapped();
        assert_eq!(tapped.len(), 52);
        assert!(tapped.iter().all(|t| t.direction == Direction::AToB));
        let received = rx.cq.drain().len() as u64;
        assert_eq!(received, s.carried[0]);
        assert_eq!(b.model().counters().rx_frames, s.carried[0]);
        let lost: Vec<bool> = tapped.iter().map(|t| t.dropped).collect();
        (s, lost)
    };
    let (s1, l1) = run(7);
    let (s2, l2) = run(7);
    assert_eq!(l1, l2, "the same seed drops the same frames");
    assert_eq!(s1, s2);
    let lossy = l1[2..42].iter().filter(|&&d| d).count();
    assert!((8..=32).contains(&lossy), "about half of 40: {lossy}");
    assert!(l1[42..].iter().enumerate().all(|(k, &d)| d == (k == 7)), "the filter drops port 7 only");
}

#[test]
fn corrupt_next_rx_cqe_produces_each_kind() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let mut rx = rx_side(&mut b, 5, 2, 0, 4, 4);
    let f = udp_frame(MAC_B, MAC_A, 1, 100);
    let m = b.model().clone();
    let mut next = |kind: Option<CqeCorruption>| {
        if let Some(k) = kind {
            m.corrupt_next_rx_cqe(k);
        }
        m.inject_rx_frame(&f);
        rx.cq.poll().unwrap()
    };
    let good = next(None);
    assert_eq!(opcode(&good), cqe::OP_RESP_SEND);
    let q = next(Some(CqeCorruption::BadOpcode));
    assert_eq!(opcode(&q), cqe::OP_RESP_WR_IMM);
    let q = next(Some(CqeCorruption::ErrorCqe { syndrome: cqe::SYND_LOCAL_LENGTH_ERR }));
    assert_eq!((opcode(&q), q[cqe::SYNDROME]), (cqe::OP_RESP_ERR, cqe::SYND_LOCAL_LENGTH_ERR));
    assert_eq!(be16_at(&q, cqe::WQE_COUNTER), 2, "the stride it would have used");
    let q = next(Some(CqeCorruption::StrideOutOfRange));
    assert_eq!(be16_at(&q, cqe::WQE_COUNTER), 512, "one past the WQE's 512 strides");
    let q = next(Some(CqeCorruption::LengthBeyondStrides));
    let bc = layout::get32(&q, cqe::BYTE_CNT);
    assert_eq!((bc >> 16, bc & 0xffff), (1, 1025), "one stride of 1 KiB claims 1025 bytes");
    let q = next(Some(CqeCorruption::WrongWqeId));
    assert_eq!(be16_at(&q, cqe::WQE_ID), 1, "the packet is in WQE 0");
    let q = next(Some(CqeCorruption::StrideCountTopBit));
    let bc = layout::get32(&q, cqe::BYTE_CNT);
    assert_eq!((bc >> cqe::STRIDES_SHIFT) & cqe::STRIDES_MASK, 0x4001, "bit 14 of the 15-bit count, plus its 1");
    let q = next(None);
    assert_eq!((opcode(&q), be16_at(&q, cqe::WQE_ID), be16_at(&q, cqe::WQE_COUNTER)), (cqe::OP_RESP_SEND, 0, 7));
    // The device went on as for correct CQEs.
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().stride, 8);
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().state, QueueState::Rdy);
}

#[test]
fn doorbells_the_device_cannot_act_on_are_violations() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let (_cq, mut sq) = tx_side(&mut a, 3, 3);
    let lkey = a.lkey;
    let f = udp_frame(MAC_B, MAC_A, 1, 64);
    a.send(&mut sq, &f, 18, true, lkey);
    // A doorbell for a WQE the doorbell record does not cover (it was never posted).
    let mut w = [0u8; 8];
    layout::set32(&mut w, 0, sq.pc << 8 | 0x0a);
    layout::set32(&mut w, 4, sq.sqn << 8 | 3);
    a.model().write64(sq.uar * 4096 + 0x800, u64::from_le_bytes(w));
    let v = a.model().violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, ViolationKind::DoorbellRecord);
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(sq.pc), "nothing more executed");
    // An SQ that does not exist, and the high word alone.
    layout::set32(&mut w, 4, 0x77 << 8 | 3);
    a.model().write64(sq.uar * 4096 + 0x900, u64::from_le_bytes(w));
    a.model().write32(sq.uar * 4096 + 0x804, 0);
    let n = a.model().violations().iter().filter(|v| v.kind == ViolationKind::SendDoorbell).count();
    assert_eq!(n, 2);
    // Two 32-bit writes, low address first: a split doorbell, recorded; it still rings.
    let before = a.model().sq_consumer(sq.sqn).unwrap();
    a.model().set_tx_paused(true);
    a.send(&mut sq, &f, 18, true, lkey);
    assert_eq!(a.model().pending_tx_doorbells(), 1);
    let split = |m: &Mlx5Model| m.violations().iter().filter(|v| v.kind == ViolationKind::SplitDoorbell).count();
    assert_eq!(split(a.model()), 1, "the high word alone above");
    let mut w = [0u8; 8];
    layout::set32(&mut w, 0, before << 8 | 0x0a);
    layout::set32(&mut w, 4, sq.sqn << 8 | 3);
    a.model().write32(sq.uar * 4096 + 0x900, u32::from_le_bytes(w[..4].try_into().unwrap()));
    a.model().write32(sq.uar * 4096 + 0x904, u32::from_le_bytes(w[4..].try_into().unwrap()));
    assert_eq!(split(a.model()), 3, "both halves of the split doorbell");
    assert_eq!(a.model().pending_tx_doorbells(), 2);
    a.model().set_tx_paused(false);
    assert_eq!(a.model().sq_consumer(sq.sqn).unwrap(), before + 1);
}

#[test]
fn two_byte_shift_offsets_the_packet_and_counts_in_the_strides() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let mut cq = b.cq(3, false);
    let (buf, db) = (b.mem(4096), b.mem(4096));
    let mut i = b.rq_in(cq.cqn, 1, 0, 0, buf.iova(), db.iova());
    layout::set(&mut i, wq::TWO_BYTE_SHIFT_EN.at(CTX_BIT + rqc::WQ_BIT), 1);
    let rqn = layout::get(&b.h.cmd(&i, 16).ok(), QN);
    b.modify(false, rqn, 0, 1).ok();
    let data = b.mem(512 * 64 * 2);
    let mut rq = TestRq { rqn, log: 1, buf, db, data, strides: 512, stride: 64, pc: 0 };
    let lkey = b.lkey;
    rq.post(1, lkey);
    let tir = b.tir(rqn);
    b.steer_all(tir);
    // 128 bytes + the 2-byte shift need three 64-byte strides.
    let f = udp_frame(MAC_B, MAC_A, 1, 128 - 42);
    b.model().inject_rx_frame(&f);
    let q = cq.poll().unwrap();
    assert_eq!(layout::get32(&q, cqe::BYTE_CNT), 3 << 16 | 128);
    assert_eq!(rq.packet(&q, 2), f);
    assert_eq!(b.model().rq(rqn).unwrap().stride, 3);
}

#[test]
fn two_models_sending_to_each_other_from_two_threads_do_not_deadlock() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let mut b = Nic::new(cfg_mac(MAC_B));
    let _link = Mlx5Model::connect(a.model(), b.model());
    let (_ca, mut sa) = tx_side(&mut a, 3, 8);
    let (_cb, mut sb) = tx_side(&mut b, 3, 8);
    let mut ra = rx_side(&mut a, 9, 2, 0, 4, 4);
    let mut rb = rx_side(&mut b, 9, 2, 0, 4, 4);
    let n = 300u16;
    std::thread::scope(|s| {
        let a = &mut a;
        let b = &mut b;
        let sa = &mut sa;
        let sb = &mut sb;
        s.spawn(move || {
            let lkey = a.lkey;
            for k in 0..n {
                a.send(sa, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
            }
        });
        s.spawn(move || {
            let lkey = b.lkey;
            for k in 0..n {
                b.send(sb, &udp_frame(MAC_A, MAC_B, k, 64), 18, false, lkey);
            }
        });
    });
    let ports = |cq: &mut TestCq, rq: &TestRq| -> Vec<u32> {
        cq.drain().iter().map(|q| be16_at(&rq.packet(q, 0), 36)).collect()
    };
    let want: Vec<u32> = (0..u32::from(n)).collect();
    assert_eq!(ports(&mut ra.cq, &ra.rq), want, "in order");
    assert_eq!(ports(&mut rb.cq, &rb.rq), want, "in order");
}
