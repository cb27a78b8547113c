//! The mlx5 driver's bring-up and teardown against the independent device model
//! (`tests/mlx5_model`): the model decodes every command with its own layouts, so a layout
//! mistake in the driver shows up as a rejected command here.

use erpc_driver::mlx5::cmd::CmdError;
use erpc_driver::mlx5::layout::op;
use erpc_driver::mlx5::{Hca, HcaConfig, Mlx5Error, Stage};
use erpc_hugepages::PageSize;
use erpc_tests::mlx5_model::{HcaState, Mlx5Config, Mlx5Model};
use std::time::Duration;

fn cfg() -> HcaConfig {
    HcaConfig {
        page: PageSize::Ordinary,
        fw_ready_timeout: Duration::from_millis(200),
        cmd_timeout: Duration::from_millis(500),
    }
}

#[test]
fn brings_up_an_initialized_hca_and_tears_it_down_cleanly() {
    let (model, space) = Mlx5Model::with_dma(Mlx5Config { regular_pages: 5, ..Mlx5Config::default() });
    let hca = Hca::bring_up(model.clone(), space, cfg()).expect("bring-up");
    assert_eq!(hca.stage(), Stage::Initialized);
    assert_eq!(model.state(), HcaState::Initialized);
    assert_eq!((hca.issi(), model.issi()), (1, 1), "ISSI 1 selected");
    assert_eq!(hca.pages_given(), 8 + 24 + 5, "boot, init and regular pages");
    assert_eq!(model.pages_held(), 8 + 24 + 5);
    assert_eq!(hca.general_caps().len(), 0x1000);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    assert!(model.iommu().faults().is_empty());
    assert_eq!(
        model.opcodes(),
        [
            op::ENABLE_HCA,
            op::QUERY_ISSI,
            op::SET_ISSI,
            op::QUERY_PAGES,
            op::MANAGE_PAGES,
            op::QUERY_HCA_CAP,
            op::SET_HCA_CAP,
            op::QUERY_PAGES,
            op::MANAGE_PAGES,
            op::INIT_HCA,
            op::QUERY_PAGES,
            op::MANAGE_PAGES,
            op::QUERY_HCA_CAP,
            op::QUERY_HCA_CAP,
            op::QUERY_HCA_CAP,
        ]
    );
    // The capabilities read: general, Ethernet offloads and flow tables, current values.
    let caps: Vec<u16> =
        model.command_log().iter().filter(|c| c.opcode == op::QUERY_HCA_CAP).map(|c| c.op_mod).collect();
    assert_eq!(caps, [0 << 1 | 1, 0 << 1 | 1, 1 << 1 | 1, 7 << 1 | 1]);
    drop(hca);
    let r = model.teardown_report();
    assert!(r.clean(), "{r:?}");
    let ops = model.opcodes();
    assert_eq!(&ops[ops.len() - 3..], &[op::TEARDOWN_HCA, op::MANAGE_PAGES, op::DISABLE_HCA]);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
}

/// A command failure at each step of bring-up is reported with the command's name and status,
/// and what was done before it is undone: the device ends disabled with every page back.
#[test]
fn a_failure_at_each_step_unwinds_cleanly() {
    for (opcode, nth) in [
        (op::ENABLE_HCA, 0),
        (op::QUERY_ISSI, 0),
        (op::SET_ISSI, 0),
        (op::QUERY_PAGES, 0),
        (op::MANAGE_PAGES, 0),
        (op::QUERY_HCA_CAP, 0),
        (op::SET_HCA_CAP, 0),
        (op::QUERY_PAGES, 1),
        (op::MANAGE_PAGES, 1),
        (op::INIT_HCA, 0),
        (op::QUERY_PAGES, 2),
        (op::MANAGE_PAGES, 2),
        (op::QUERY_HCA_CAP, 1),
        (op::QUERY_HCA_CAP, 2),
        (op::QUERY_HCA_CAP, 3),
    ] {
        let (model, space) = Mlx5Model::with_dma(Mlx5Config { regular_pages: 3, ..Mlx5Config::default() });
        model.fail_nth(opcode, nth, 0x3, 0xabcd);
        let err = Hca::bring_up(model.clone(), space, cfg()).err().expect("bring-up fails");
        match &err {
            Mlx5Error::Cmd(CmdError::Failed { opcode: o, status: 0x3, syndrome: 0xabcd }) => assert_eq!(*o, opcode),
            e => panic!("{}: {e}", op::name(opcode)),
        }
        assert!(err.to_string().contains(op::name(opcode)), "{err}");
        assert!(err.to_string().contains("bad parameter"), "{err}");
        let what = format!("{} #{}", op::name(opcode), nth + 1);
        let r = model.teardown_report();
        assert!(r.clean(), "{what}: {r:?}");
        assert_eq!(model.state(), HcaState::Disabled, "{what}");
        assert_eq!(model.pages_held(), 0, "{what}");
        assert!(model.violations().is_empty(), "{what}: {:?}", model.violations());
        // Teardown ran exactly as far as bring-up got.
        let ops = model.opcodes();
        let last = *ops.last().unwrap();
        if opcode == op::ENABLE_HCA {
            assert_eq!(ops, [op::ENABLE_HCA], "{what}");
        } else {
            assert_eq!(last, op::DISABLE_HCA, "{what}");
            assert_eq!(
                ops.contains(&op::TEARDOWN_HCA),
                ops.contains(&op::INIT_HCA) && opcode != op::INIT_HCA,
                "{what}"
            );
        }
    }
}

#[test]
fn firmware_that_never_gets_ready_is_a_clear_error() {
    let (model, space) = Mlx5Model::with_dma(Mlx5Config { ready_after_reads: None, ..Mlx5Config::default() });
    model.set_health_syndrome(0x8, 0);
    let e = Hca::bring_up(model.clone(), space, cfg()).err().expect("not ready");
    assert!(matches!(e, Mlx5Error::FirmwareNotReady { health_syndrome: 0x8, .. }), "{e}");
    assert!(e.to_string().contains("did not become ready"), "{e}");
}

/// The firmware asks for more pages during operation, then offers some back.
#[test]
fn pages_asked_for_later_are_given_and_returned() {
    let (model, space) = Mlx5Model::with_dma(Mlx5Config::default());
    let mut hca = Hca::bring_up(model.clone(), space, cfg()).expect("bring-up");
    let before = hca.pages_given();
    hca.give_pages(300).expect("more pages than one command carries");
    assert_eq!(model.pages_held(), before + 300);
    assert_eq!(hca.take_pages(100).expect("take"), 100);
    assert_eq!(hca.pages_given(), before + 200);
    assert_eq!(model.pages_held(), before + 200);
    drop(hca);
    assert!(model.teardown_report().clean(), "{:?}", model.teardown_report());
}

// ---------------------------------------------------------------------------------------------
// Queues and the datapath: two driver instances on two model instances wired together.

mod datapath {
    use super::cfg;
    use erpc_dataplane::clock::StdClock;
    use erpc_dataplane::transport::{EndpointAddr, RxPacket, Segment, TxPacket};
    use erpc_dataplane::wire::{RoutingInfo, HEADROOM};
    use erpc_dataplane::{RpcConfig, Transport};
    use erpc_driver::mlx5::cmd::CmdError;
    use erpc_driver::mlx5::layout::op;
    use erpc_driver::mlx5::Mlx5Error;
    use erpc_driver::mlx5::{Mlx5Config as NicConfig, Mlx5Nic};
    use erpc_hugepages::{DmaSpace, PageSize};
    use erpc_tests::loopback::{dma_endpoint_memory, Loopback, LoopbackConfig};
    use erpc_tests::mlx5_model::{CqeCorruption, Link, Mlx5Config, Mlx5Model, QueueState};
    use std::sync::Arc;

    pub type Nic = Mlx5Nic<Mlx5Model>;

    pub fn nic_cfg(last: u8) -> NicConfig {
        NicConfig { hca: cfg(), ipv4: [10, 0, 0, last], ..Default::default() }
    }

    pub fn model(last: u8, f: impl FnOnce(&mut Mlx5Config)) -> (Mlx5Model, Arc<DmaSpace>) {
        let mut c = Mlx5Config { mac: [0x02, 0, 0, 0, 0, last], ..Mlx5Config::default() };
        f(&mut c);
        Mlx5Model::with_dma(c)
    }

    /// Two models wired together, a driver on each.
    pub struct Pair {
        pub ma: Mlx5Model,
        pub mb: Mlx5Model,
        pub link: Link,
        pub a: Nic,
        pub b: Nic,
        pub sa: Arc<DmaSpace>,
        pub sb: Arc<DmaSpace>,
    }

    pub fn pair(model_cfg: impl Fn(&mut Mlx5Config), nic: impl Fn(&mut NicConfig)) -> Pair {
        let (ma, sa) = model(1, &model_cfg);
        let (mb, sb) = model(2, &model_cfg);
        let link = Mlx5Model::connect(&ma, &mb);
        let (mut ca, mut cb) = (nic_cfg(1), nic_cfg(2));
        nic(&mut ca);
        nic(&mut cb);
        let a = Mlx5Nic::with_bar(ma.clone(), sa.clone(), ca).expect("bring-up A");
        let b = Mlx5Nic::with_bar(mb.clone(), sb.clone(), cb).expect("bring-up B");
        Pair { ma, mb, link, a, b, sa, sb }
    }

    pub fn rpc_cfg() -> RpcConfig {
        RpcConfig { mtu: 1514, rto_ns: 2_000_000, ..RpcConfig::default() }
    }

    pub fn loopback(p: Pair, lcfg: &LoopbackConfig) -> (Loopback<Nic, Nic, StdClock>, Mlx5Model, Mlx5Model, Link) {
        let Pair { ma, mb, link, a, b, sa, sb } = p;
        let mem = |s: &Arc<DmaSpace>| dma_endpoint_memory(s, 32 << 20, PageSize::Ordinary).expect("memory");
        let lb = Loopback::connect(a, b, mem(&sa), mem(&sb), StdClock::default(), rpc_cfg(), lcfg).expect("connect");
        (lb, ma, mb, link)
    }

    #[test]
    fn the_loopback_scenarios_run_between_two_model_instances() {
        let p = pair(|_| {}, |_| {});
        assert_eq!(p.a.local_addr().mac, [2, 0, 0, 0, 0, 1], "the MAC comes from the vport context");
        let lcfg = LoopbackConfig { small_rpcs: 500, loss_small_rpcs: 200, ..LoopbackConfig::default() };
        let (mut lb, ma, mb, link) = loopback(p, &lcfg);
        let report = lb.run_all(&lcfg).expect("scenarios");
        eprintln!("{report}");
        let (sa, sb) = (lb.client.transport().inner().stats(), lb.server.transport().inner().stats());
        eprintln!(
            "A {sa:?}\nB {sb:?}\nmodel A {:?}\nmodel B {:?}\nlink {:?}",
            ma.counters(),
            mb.counters(),
            link.stats()
        );
        assert!(ma.violations().is_empty(), "{:?}", ma.violations());
        assert!(mb.violations().is_empty(), "{:?}", mb.violations());
    }

    /// A DMA buffer in `space` holding frames to send, `slot` bytes apart.
    pub struct Frames {
        mem: erpc_hugepages::DmaMemory,
        slot: usize,
    }

    impl Frames {
        pub fn new(space: &Arc<DmaSpace>, slots: usize, slot: usize) -> Frames {
            Frames { mem: space.alloc(slots * slot, PageSize::Ordinary).expect("frames"), slot }
        }

        /// Writes a UDP frame from `src` to `dst` with `payload` into slot `i`.
        pub fn put(&mut self, i: usize, src: &EndpointAddr, dst: &EndpointAddr, payload: &[u8]) -> TxPacket {
            let mut hr = [0u8; HEADROOM];
            RoutingInfo::new(src, dst).write(&mut hr, payload.len());
            let len = HEADROOM + payload.len();
            assert!(len <= self.slot);
            // SAFETY: slot i of our buffer; nothing reads it until the packet is queued.
            let p = unsafe { self.mem.vaddr().as_ptr().add(i * self.slot) };
            // SAFETY: as above, `len` bytes fit the slot.
            unsafe {
                std::ptr::copy_nonoverlapping(hr.as_ptr(), p, HEADROOM);
                std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(HEADROOM), payload.len());
            }
            let seg = Segment { vaddr: p, iova: self.mem.iova() + (i * self.slot) as u64, len: len as u32 };
            TxPacket { segs: [seg, Segment::EMPTY] }
        }
    }

    /// Queues all of `pkts` (retrying while the send queue is full).
    pub fn send_all(t: &mut Nic, pkts: &[TxPacket]) {
        let mut done = 0;
        let t0 = std::time::Instant::now();
        while done < pkts.len() {
            done += t.tx_burst(&pkts[done..]);
            assert!(t0.elapsed().as_secs() < 5, "the send queue never drained");
        }
    }

    /// Receives until `n` packets are lent or nothing arrives for 50 ms; returns them lent.
    pub fn lend(t: &mut Nic, n: usize) -> Vec<RxPacket> {
        let mut got = vec![];
        let mut out = [RxPacket::EMPTY; 32];
        let mut idle = std::time::Instant::now();
        while got.len() < n && idle.elapsed().as_millis() < 50 {
            let k = t.rx_burst(&mut out[..(n - got.len()).min(32)]);
            if k > 0 {
                idle = std::time::Instant::now();
            }
            got.extend_from_slice(&out[..k]);
        }
        got
    }

    pub fn payload_of(p: &RxPacket) -> Vec<u8> {
        // SAFETY: lent by the transport and not yet released.
        let f = unsafe { std::slice::from_raw_parts(p.data.as_ptr(), p.len as usize) };
        f[HEADROOM..].to_vec()
    }

    fn no_violations(m: &Mlx5Model) {
        assert!(m.violations().is_empty(), "{:?}", m.violations());
        assert!(m.iommu().faults().is_empty(), "{:?}", m.iommu().faults());
    }

    #[test]
    fn bring_up_makes_a_ready_queue_pair_and_teardown_leaves_nothing() {
        let p = pair(|_| {}, |_| {});
        let (cqs, sqs, rqs) = p.ma.queues();
        assert_eq!(cqs.len(), 2, "one CQ for each direction");
        assert_eq!(sqs.len(), 1);
        assert_eq!(rqs.len(), 1);
        assert_eq!(p.ma.sq(p.a.sqn().0).expect("SQ").state, QueueState::Rdy);
        let rq = p.ma.rq(rqs[0]).expect("RQ");
        assert_eq!(rq.state, QueueState::Rdy);
        let st = rq.striding.expect("a striding RQ");
        assert_eq!((st.strides, st.stride_bytes), (512, 1024), "{st:?}");
        assert!(p.ma.root_flow_table().is_some());
        assert_eq!(p.ma.flow_entries().len(), 1);
        assert!(p.ma.vport().2 .0, "promiscuous unicast");
        let ops = p.ma.opcodes();
        let i = ops.iter().position(|&o| o == op::QUERY_NIC_VPORT_CONTEXT).expect("vport query");
        assert_eq!(
            ops[i..],
            [
                op::QUERY_NIC_VPORT_CONTEXT,
                op::ACCESS_REGISTER,
                op::MODIFY_NIC_VPORT_CONTEXT,
                op::ALLOC_UAR,
                op::ALLOC_PD,
                op::ALLOC_TRANSPORT_DOMAIN,
                op::QUERY_SPECIAL_CONTEXTS,
                op::CREATE_EQ,
                op::CREATE_CQ,
                op::CREATE_CQ,
                op::CREATE_TIS,
                op::CREATE_SQ,
                op::MODIFY_SQ,
                op::CREATE_RQ,
                op::MODIFY_RQ,
                op::CREATE_TIR,
                op::CREATE_FLOW_TABLE,
                op::CREATE_FLOW_GROUP,
                op::SET_FLOW_TABLE_ENTRY,
                op::SET_FLOW_TABLE_ROOT,
            ]
        );
        let Pair { ma, a, .. } = p;
        drop(a);
        let r = ma.teardown_report();
        assert!(r.clean(), "{r:?}");
        no_violations(&ma);
    }

    /// A command failure at each queue, steering and vport step is reported naming the command,
    /// and everything created before it is destroyed: the device ends disabled, holding no pages
    /// and no objects.
    #[test]
    fn a_failure_at_each_queue_step_unwinds_cleanly() {
        let steps = [
            (op::QUERY_NIC_VPORT_CONTEXT, 0),
            (op::ACCESS_REGISTER, 0),
            (op::MODIFY_NIC_VPORT_CONTEXT, 0),
            (op::ALLOC_UAR, 0),
            (op::ALLOC_PD, 0),
            (op::ALLOC_TRANSPORT_DOMAIN, 0),
            (op::QUERY_SPECIAL_CONTEXTS, 0),
            (op::CREATE_EQ, 0),
            (op::CREATE_CQ, 0),
            (op::CREATE_CQ, 1),
            (op::CREATE_TIS, 0),
            (op::CREATE_SQ, 0),
            (op::MODIFY_SQ, 0),
            (op::CREATE_RQ, 0),
            (op::MODIFY_RQ, 0),
            (op::CREATE_TIR, 0),
            (op::CREATE_FLOW_TABLE, 0),
            (op::CREATE_FLOW_GROUP, 0),
            (op::SET_FLOW_TABLE_ENTRY, 0),
            (op::SET_FLOW_TABLE_ROOT, 0),
        ];
        for (opcode, nth) in steps {
            let (m, space) = model(1, |_| {});
            m.fail_nth(opcode, nth, 0x3, 0x1234);
            let e = Mlx5Nic::with_bar(m.clone(), space, nic_cfg(1)).err().expect("bring-up must fail");
            match &e {
                Mlx5Error::Cmd(CmdError::Failed { opcode: o, status: 0x3, syndrome: 0x1234 }) if *o == opcode => {}
                other => panic!("{}: {other:?}", op::name(opcode)),
            }
            assert!(e.to_string().contains(op::name(opcode)), "{e}");
            let r = m.teardown_report();
            assert!(r.clean(), "after {} #{nth}: {r:?}", op::name(opcode));
            no_violations(&m);
        }
    }

    /// Without `reset_root_to_default` the root flow table is not disconnected (SET_FLOW_TABLE_ROOT
    /// op_mod 1 is refused there): teardown destroys it once empty, and every teardown command
    /// succeeds. With it, the root is disconnected first.
    #[test]
    fn the_root_flow_table_is_torn_down_as_the_device_allows() {
        for reset in [true, false] {
            let (m, space) = model(1, |c| c.caps.reset_root_to_default = reset);
            let nic = Mlx5Nic::with_bar(m.clone(), space, nic_cfg(1)).expect("bring-up");
            let before = m.command_log().len();
            drop(nic);
            let teardown = &m.command_log()[before..];
            let failed: Vec<_> = teardown.iter().filter(|c| c.status != 0).collect();
            assert!(failed.is_empty(), "reset_root_to_default {reset}: {failed:?}");
            let disconnects = teardown.iter().filter(|c| c.opcode == op::SET_FLOW_TABLE_ROOT).count();
            assert_eq!(disconnects, usize::from(reset), "reset_root_to_default {reset}");
            assert!(m.teardown_report().clean(), "{:?}", m.teardown_report());
            no_violations(&m);
        }
    }

    #[test]
    fn firmware_page_requests_during_operation_are_served() {
        let mut p = pair(|_| {}, |c| c.eq_poll_interval = 4);
        let held = p.ma.pages_held();
        p.ma.request_pages(40).expect("page request EQE");
        let mut out = [RxPacket::EMPTY; 4];
        for _ in 0..4 {
            assert_eq!(p.a.rx_burst(&mut out), 0);
        }
        assert_eq!(p.ma.pages_held(), held + 40, "{:?}", p.a.stats());
        assert_eq!(p.a.pages_given(), held + 40);
        p.ma.request_pages(-25).expect("page return EQE");
        p.a.poll_events();
        assert_eq!(p.ma.pages_held(), held + 15);
        let s = p.a.stats();
        assert_eq!((s.page_requests, s.pages_given, s.pages_returned, s.page_request_failures), (2, 40, 25, 0));
        no_violations(&p.ma);
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

    /// Sends `n` frames from A to B, one doorbell each, and checks they all arrive.
    fn one_doorbell_per_frame(p: &mut Pair, n: usize) {
        let (src, dst) = (p.a.local_addr(), p.b.local_addr());
        let mut f = Frames::new(&p.sa, n, 256);
        for i in 0..n {
            let pkt = f.put(i, &src, &dst, &[i as u8; 64]);
            send_all(&mut p.a, &[pkt]);
            p.a.tx_flush();
        }
        let got = lend(&mut p.b, n);
        assert_eq!(
            got.iter().map(payload_of).collect::<Vec<_>>(),
            (0..n).map(|i| vec![i as u8; 64]).collect::<Vec<_>>()
        );
        p.b.rx_release(&got);
    }

    /// The BlueFlame buffers the send doorbell alternates between are half of `1 <<
    /// log_bf_reg_size` apart; without BlueFlame the doorbell stays at UAR + 0x800.
    #[test]
    fn the_doorbell_follows_the_devices_blueflame_register_size() {
        for (log_bf, both) in [(Some(9), true), (Some(10), true), (None, false)] {
            let mut p = pair(|c| c.caps.log_bf_reg_size = log_bf, |_| {});
            assert_eq!(p.a.caps().bf_half(), log_bf.map_or(0, |l| (1 << l) / 2));
            one_doorbell_per_frame(&mut p, 6);
            no_violations(&p.ma);
            let per = p.ma.counters().tx_doorbells_per_buffer;
            assert!(per[0] > 0 && (per[1] > 0) == both, "log_bf_reg_size {log_bf:?}: {per:?}");
        }
    }

    /// A device whose UAR pages are 64 KiB at power-on (no `uar_4k`, `log_uar_page_sz` 4) gets
    /// 4 KiB ones from SET_HCA_CAP, and the driver finds its UAR where the device put it.
    #[test]
    fn a_device_booted_with_64k_uar_pages_is_given_4k_ones() {
        let mut p = pair(
            |c| {
                c.caps.uar_4k = false;
                c.caps.log_uar_page_sz = 4;
            },
            |c| c.eq_poll_interval = 1,
        );
        assert_eq!((p.a.caps().log_uar_page_sz, p.a.caps().uar_page_bytes()), (0, 4096));
        one_doorbell_per_frame(&mut p, 4);
        // The EQ doorbell lands on the same UAR page: a page request is served and
        // acknowledged.
        p.ma.request_pages(3).expect("page request");
        assert_eq!(p.a.rx_burst(&mut [RxPacket::EMPTY; 4]), 0);
        assert_eq!(p.a.stats().page_requests, 1);
        no_violations(&p.ma);
        no_violations(&p.mb);
    }

    /// Ethernet caps `wqe_inline_mode` = 0 (L2) requires inline L2 headers whatever the vport
    /// context says (Linux `mlx5_query_min_inline`).
    #[test]
    fn l2_inline_headers_required_by_the_hca_caps_are_sent() {
        let p = pair(|c| c.wqe_inline_mode = 0, |_| {});
        assert_eq!(p.a.caps().wqe_inline_mode, Some(erpc_driver::mlx5::InlineCap::L2));
        assert_eq!(p.ma.sq(p.a.sqn().0).unwrap().min_inline_mode, 1);
        let lcfg = LoopbackConfig { small_rpcs: 100, ..LoopbackConfig::default() };
        let (mut lb, ma, mb, _link) = loopback(p, &lcfg);
        lb.rpcs(100, 32, 32, &lcfg).expect("small RPCs");
        no_violations(&ma);
        no_violations(&mb);
    }

    /// A configuration the device cannot do is refused before anything is created, with an
    /// error naming the capability.
    #[test]
    fn what_the_device_cannot_do_is_refused_naming_the_capability() {
        type Case = (&'static str, fn(&mut Mlx5Config), fn(&mut NicConfig));
        let cases: [Case; 6] = [
            ("log_max_wq_sz", |c| c.caps.log_max_wq_sz = 9, |_| {}),
            ("log_max_wq_sz", |c| c.caps.log_max_wq_sz = 9, |n| (n.sq_size, n.rq_wqes) = (512, 1024)),
            ("log_max_cq_sz", |c| c.caps.log_max_cq_sz = 11, |_| {}),
            ("log_min_stride_sz_rq", |c| c.caps.stride_sz_rq = (11, 13), |_| {}),
            ("log_max_stride_sz_rq", |c| c.caps.stride_sz_rq = (6, 9), |_| {}),
            ("striding_rq", |c| c.caps.striding_rq = false, |_| {}),
        ];
        for (name, device, nic) in cases {
            let (m, space) = model(1, device);
            let mut c = nic_cfg(1);
            nic(&mut c);
            let e = Mlx5Nic::with_bar(m.clone(), space, c).err().expect("refused");
            assert!(matches!(&e, Mlx5Error::Capability { cap, .. } if *cap == name), "{name}: {e:?}");
            assert!(e.to_string().contains(name), "{e}");
            let ops = m.opcodes();
            assert!(!ops.contains(&op::ALLOC_UAR) && !ops.contains(&op::CREATE_CQ), "{name}: {ops:x?}");
            assert!(m.teardown_report().clean(), "{name}: {:?}", m.teardown_report());
            no_violations(&m);
        }
    }

    #[test]
    fn devices_that_require_l2_inline_headers_get_them() {
        let p = pair(|c| c.min_inline_mode = 1, |_| {});
        assert_eq!(p.ma.sq(p.a.sqn().0).unwrap().min_inline_mode, 1);
        let lcfg = LoopbackConfig { small_rpcs: 200, large_rpcs: 1, large_size: 1 << 20, ..LoopbackConfig::default() };
        let (mut lb, ma, mb, _link) = loopback(p, &lcfg);
        lb.rpcs(200, 32, 32, &lcfg).expect("small RPCs");
        lb.rpcs(1, 1 << 20, 1 << 20, &lcfg).expect("1 MB both ways");
        no_violations(&ma);
        no_violations(&mb);
    }
}
