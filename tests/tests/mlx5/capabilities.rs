//! What the device reports and the driver follows: the BlueFlame register size, the UAR page
//! size, the inline mode (from the capabilities or the vport context), and configurations
//! refused by name of the capability they exceed.

use erpc_dataplane::transport::RxPacket;
use erpc_dataplane::Transport;
use erpc_driver::mlx5::layout::op;
use erpc_driver::mlx5::{Mlx5Config as NicConfig, Mlx5Error, Mlx5Nic};
use erpc_tests::mlx5_model::Mlx5Config;
use erpc_tests::scenarios::LoopbackConfig;

use crate::harness::*;

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
