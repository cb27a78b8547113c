//! HCA bring-up and teardown: the order of the commands, firmware pages given, requested
//! through EQEs and taken back, what a teardown leaves behind.

use erpc_hugepages::PageSize;
use erpc_tests::mlx5_model::layout::{self, cap_eth, cap_gen, create_eq, eqe, hca_cap, op, query_pages, status, vport};
use erpc_tests::mlx5_model::{syndrome, HcaState, Mlx5Config, ViolationKind};

use crate::host::*;

#[test]
fn full_bring_up_to_init_hca_with_pages() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    assert_eq!(h.model.state(), HcaState::Initialized);
    assert_eq!(h.model.issi(), 1);
    assert_eq!(
        h.model.opcodes(),
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
            op::INIT_HCA
        ]
    );
    assert_eq!(h.model.pages_held(), 32, "8 boot + 24 init pages");
    assert_eq!(h.model.pages_outstanding(), 0);
    // The device took its pages into use through the IOMMU.
    assert!(peek(&h.page_mem[0], 0, 4096).iter().all(|&b| b == 0xf7));
    let max = h.query_cap(hca_cap::GENERAL, false);
    let cur = h.query_cap(hca_cap::GENERAL, true);
    assert_eq!(layout::get(&max, cap_gen::PORT_TYPE), 1, "Ethernet");
    assert_eq!(layout::get(&max, cap_gen::NUM_PORTS), 1);
    assert_eq!(layout::get(&max, cap_gen::LOG_MAX_EQ), 4);
    assert_eq!(layout::get(&max, cap_gen::STRIDING_RQ), 1);
    assert_eq!(layout::get(&max, cap_gen::UAR_4K), 1);
    assert_eq!(layout::get(&max, cap_gen::LOG_MAX_QP), 17);
    assert_eq!(layout::get(&cur, cap_gen::LOG_MAX_QP), 16, "SET_HCA_CAP took effect");
    let eth = h.query_cap(hca_cap::ETHERNET_OFFLOADS, true);
    assert_eq!(layout::get(&eth, cap_eth::CSUM_CAP), 1);
    assert_eq!(layout::get(&eth, cap_eth::WQE_INLINE_MODE), 2);
    assert!(h.model.violations().is_empty(), "{:?}", h.model.violations());
    assert!(h.model.iommu().faults().is_empty());
}

#[test]
fn a_page_outside_the_iommu_mappings_is_refused() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    h.simple(op::ENABLE_HCA);
    // A host buffer the device was never given: its virtual address as a "page address".
    let layout4k = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: a non-zero-size layout; freed below.
    let host = unsafe { std::alloc::alloc_zeroed(layout4k) };
    assert!(!host.is_null());
    let va = host as u64;
    let good = h.space.alloc(4096, PageSize::Ordinary).unwrap();
    let d = h.give_list(&[good.iova(), va]);
    assert_eq!(d.failed(), (status::BAD_PARAM, syndrome::PAGE_FAULT));
    let faults = h.model.iommu().faults();
    assert_eq!(faults.len(), 1);
    assert_eq!((faults[0].iova, faults[0].len, faults[0].write), (va, 4096, true));
    assert!(h.model.violations().iter().any(|v| v.kind == ViolationKind::IommuFault));
    // SAFETY: `host` is our 4 KiB allocation; the model never had a pointer to it.
    let untouched = unsafe { std::slice::from_raw_parts(host, 4096) }.iter().all(|&b| b == 0);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(host, layout4k) };
    assert!(untouched, "host memory behind an unmapped IOVA must not be written");
    assert!(peek(&good, 0, 4096).iter().all(|&b| b == 0), "the whole command was refused");
    assert_eq!(h.model.pages_held(), 0);
    // Unaligned and duplicate pages are bad parameters.
    assert_eq!(h.give_list(&[good.iova() + 64]).failed(), (status::BAD_PARAM, syndrome::PAGE_UNALIGNED));
    assert_eq!(h.give_list(&[good.iova(), good.iova()]).failed(), (status::BAD_PARAM, syndrome::PAGE_DUPLICATE));
    h.give_list(&[good.iova()]).ok();
    assert_eq!(h.model.pages_held(), 1);
}

#[test]
fn out_of_order_bring_up_is_bad_system_state() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    let bad = (status::BAD_SYS_STATE, syndrome::BAD_STATE);
    assert_eq!(h.cmd(&inbox(op::INIT_HCA, 0, 16), 16).failed(), bad, "INIT_HCA before ENABLE_HCA");
    assert_eq!(h.cmd(&inbox(op::QUERY_PAGES, 1, 16), 16).failed(), bad, "QUERY_PAGES before ENABLE_HCA");
    assert_eq!(h.cmd(&inbox(op::DISABLE_HCA, 0, 16), 16).failed(), bad, "DISABLE_HCA while disabled");
    h.simple(op::ENABLE_HCA);
    assert_eq!(h.cmd(&inbox(op::ENABLE_HCA, 0, 16), 16).failed(), bad, "ENABLE_HCA twice");
    assert_eq!(h.cmd(&inbox(op::ALLOC_UAR, 0, 16), 16).failed(), bad, "ALLOC_UAR before INIT_HCA");
    assert_eq!(h.cmd(&inbox(op::CREATE_EQ, 0, 0x118), 16).failed(), bad, "CREATE_EQ before INIT_HCA");
    assert_eq!(h.cmd(&inbox(op::TEARDOWN_HCA, 0, 16), 16).failed(), bad, "TEARDOWN_HCA before INIT_HCA");
    // INIT_HCA without the boot and init pages.
    assert_eq!(h.pages_query(query_pages::BOOT), 8);
    h.give_pages(8).ok();
    assert_eq!(h.pages_query(query_pages::INIT), 24);
    assert_eq!(
        h.cmd(&inbox(op::INIT_HCA, 0, 16), 16).failed(),
        (status::BAD_SYS_STATE, syndrome::PAGES_MISSING),
        "init pages missing"
    );
    h.give_pages(24).ok();
    h.simple(op::INIT_HCA);
    let mut issi = inbox(op::SET_ISSI, 0, 16);
    layout::set(&mut issi, layout::issi::CURRENT_ISSI, 1);
    assert_eq!(h.cmd(&issi, 16).failed(), bad, "SET_ISSI after INIT_HCA");
    assert_eq!(h.cmd(&inbox(op::DISABLE_HCA, 0, 16), 16).failed(), bad, "DISABLE_HCA before TEARDOWN_HCA");
    assert_eq!(h.model.state(), HcaState::Initialized);
}

#[test]
fn page_requests_arrive_as_eqes_with_the_right_owner_bit_across_wrap_around() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    let (eqn, uar, buf) = h.create_eq(2, 1 << eqe::TYPE_PAGE_REQUEST);
    assert_ne!(eqn, 0);
    h.eq_doorbell(uar, eqn, 0, true);
    let entry = |i: usize| peek(&buf, i * 64, 64);
    // First pass: owner 0 (software expects !!(ci & nent) = 0).
    h.model.request_pages(3).unwrap();
    let e0 = entry(0);
    assert_eq!(e0[eqe::TYPE], eqe::TYPE_PAGE_REQUEST);
    assert_eq!(layout::get32(&e0, eqe::PAGE_REQ_NUM_PAGES), 3);
    assert_eq!(u16::from_be_bytes([e0[eqe::PAGE_REQ_FUNC_ID], e0[eqe::PAGE_REQ_FUNC_ID + 1]]), 0);
    assert_eq!(e0[eqe::OWNER], 0);
    assert_eq!(entry(1)[eqe::OWNER], 1, "not yet written");
    assert_eq!(h.model.interrupts(1), 1, "armed EQ interrupted on its vector");
    assert_eq!(h.model.pages_outstanding(), 3);
    assert_eq!(h.pages_query(query_pages::REGULAR), 3);
    h.give_pages(3).ok();
    assert_eq!(h.model.pages_outstanding(), 0);
    h.eq_doorbell(uar, eqn, 1, false);
    // Three more fill the ring; the fifth wraps to entry 0 with owner 1.
    for k in 1..=3 {
        h.model.request_pages(-1).unwrap();
        assert_eq!(entry(k)[eqe::OWNER], 0);
        assert_eq!(layout::get32(&entry(k), eqe::PAGE_REQ_NUM_PAGES) as i32, -1);
    }
    assert_eq!(h.model.pages_outstanding(), -3);
    let back = h.take_pages(8);
    assert_eq!(back.len(), 3, "firmware returns only what it asked back while initialized");
    assert_eq!(h.model.pages_outstanding(), 0);
    h.eq_doorbell(uar, eqn, 4, false);
    h.model.request_pages(2).unwrap();
    assert_eq!(entry(0)[eqe::OWNER], 1, "second pass: owner 1");
    assert_eq!(layout::get32(&entry(0), eqe::PAGE_REQ_NUM_PAGES), 2);
    h.give_pages(2).ok();
    let info = h.model.eq(eqn).unwrap();
    assert_eq!((info.producer, info.consumer, info.overrun), (5, 4, false));
    // Unconsumed, the ring overruns on the fifth entry past the consumer.
    for _ in 0..4 {
        h.model.request_pages(0).unwrap();
    }
    assert!(h.model.eq(eqn).unwrap().overrun);
    assert!(h.model.violations().iter().any(|v| v.kind == ViolationKind::EqOverrun));
    // A consumer index ahead of the producer is refused.
    h.eq_doorbell(uar, eqn, 100, false);
    assert!(h.model.violations().iter().any(|v| v.kind == ViolationKind::EqDoorbell));
}

#[test]
fn full_teardown_returns_every_page_and_object() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    let (eqn, uar, _buf) = h.create_eq(4, 1 << eqe::TYPE_PAGE_REQUEST);
    let pd = h.obj(op::ALLOC_PD);
    let td = h.obj(op::ALLOC_TRANSPORT_DOMAIN);
    assert_ne!(pd, td);
    let sc = h.cmd(&inbox(op::QUERY_SPECIAL_CONTEXTS, 0, 16), 0x20).ok();
    assert_eq!(layout::get(&sc, layout::special_contexts::RESD_LKEY), 0x100);
    // Vport: MTU and MAC.
    let mut m = inbox(op::MODIFY_NIC_VPORT_CONTEXT, 0, 0x200);
    layout::set(&mut m, vport::FIELD_SELECT, vport::SEL_MTU | vport::SEL_PERMANENT_ADDRESS);
    let ctx = vport::MODIFY_IN_CTX;
    layout::set(&mut m[ctx..], vport::MTU, 1024 + 22);
    layout::set(&mut m[ctx..], vport::MAC_47_32, 0x0211);
    layout::set(&mut m[ctx..], vport::MAC_31_0, 0x2233_4455);
    h.cmd(&m, 16).ok();
    let q = h.cmd(&inbox(op::QUERY_NIC_VPORT_CONTEXT, 0, 16), 0x110).ok();
    assert_eq!(layout::get(&q[vport::QUERY_OUT_CTX..], vport::MTU), 1046);
    assert_eq!(h.model.vport().0, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    layout::set(&mut m[ctx..], vport::MTU, 20_000);
    assert_eq!(h.cmd(&m, 16).failed(), (status::BAD_PARAM, syndrome::BAD_MTU));
    // Orderly teardown.
    h.free_obj(op::DEALLOC_TRANSPORT_DOMAIN, td).ok();
    h.free_obj(op::DEALLOC_PD, pd).ok();
    let mut de = inbox(op::DESTROY_EQ, 0, 16);
    layout::set(&mut de, create_eq::EQ_NUMBER, u32::from(eqn));
    h.cmd(&de, 16).ok();
    h.free_obj(op::DEALLOC_UAR, uar).ok();
    assert!(h.take_pages(40).is_empty(), "no pages come back while initialized unless asked");
    h.simple(op::TEARDOWN_HCA);
    let mut back = h.take_pages(20);
    back.extend(h.take_pages(20));
    assert_eq!(back.len(), 32);
    let given: std::collections::BTreeSet<u64> =
        h.page_mem.iter().flat_map(|m| (0..m.len() / 4096).map(|k| m.iova() + 4096 * k as u64)).collect();
    assert_eq!(back.iter().copied().collect::<std::collections::BTreeSet<_>>(), given);
    h.simple(op::DISABLE_HCA);
    let r = h.model.teardown_report();
    assert!(r.clean(), "{r:?}");
    assert!(h.model.violations().is_empty(), "{:?}", h.model.violations());
}

#[test]
fn a_sloppy_teardown_is_reported() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    let pd = h.obj(op::ALLOC_PD);
    h.simple(op::TEARDOWN_HCA);
    h.take_pages(10);
    h.simple(op::DISABLE_HCA);
    let r = h.model.teardown_report();
    assert!(!r.clean());
    assert!(r.disabled);
    assert_eq!(r.pages_held, 22);
    assert_eq!(r.leaked, [format!("PD {pd:#x}")]);
}
