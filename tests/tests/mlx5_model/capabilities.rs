//! Capability switches (`Mlx5Config::caps`): the values the device reports, and acts on (UAR
//! page size, BlueFlame buffers, flow table capabilities).

use erpc_tests::mlx5_model::layout::{self, cap_flow, cap_gen, hca_cap, op, status};
use erpc_tests::mlx5_model::{syndrome, Mlx5Config, ModelCaps, ViolationKind};

use crate::host::*;
use crate::nic::*;

/// UAR pages are 4 KiB with `uar_4k`, else `4 KiB << log_uar_page_sz`: ALLOC_UAR hands out the
/// first page above the initialization segment.
#[test]
fn uar_pages_follow_uar_4k_and_log_uar_page_sz() {
    let caps = |uar_4k| ModelCaps { uar_4k, log_uar_page_sz: 4, ..ModelCaps::default() };
    for (uar_4k, set_caps, first, log) in [(false, false, 1, 4), (false, true, 3, 0), (true, false, 3, 4)] {
        let mut h = Host::new(Mlx5Config { caps: caps(uar_4k), ..Mlx5Config::default() });
        h.bring_up_setting_caps(set_caps);
        let cur = h.query_cap(hca_cap::GENERAL, true);
        assert_eq!(layout::get(&cur, cap_gen::LOG_UAR_PAGE_SZ), log);
        assert_eq!(layout::get(&cur, cap_gen::UAR_4K), u32::from(uar_4k));
        assert_eq!(h.obj(op::ALLOC_UAR), first, "uar_4k {uar_4k}, SET_HCA_CAP {set_caps}");
    }
    // SET_HCA_CAP takes 4 KiB UAR pages only.
    let mut h = Host::new(Mlx5Config { caps: caps(false), ..Mlx5Config::default() });
    h.start();
    h.simple(op::ENABLE_HCA);
    let mut set = inbox(op::SET_HCA_CAP, hca_cap::GENERAL << 1, 0x1010);
    set[hca_cap::CAPABILITY..].copy_from_slice(&h.query_cap(hca_cap::GENERAL, true));
    assert_eq!(h.cmd(&set, 16).failed(), (status::BAD_PARAM, syndrome::CAP_VALUE));
}

/// The BlueFlame register at UAR + 0x800 is two buffers of half of `1 << log_bf_reg_size`
/// bytes; without BlueFlame only the 8-byte doorbell at 0x800 exists.
#[test]
fn blueflame_buffers_follow_log_bf_reg_size() {
    let f = udp_frame(MAC_B, MAC_A, 1, 64);
    for (log_bf, step) in [(Some(10), 0x200), (Some(9), 0x100), (None, 0)] {
        let caps = ModelCaps { log_bf_reg_size: log_bf, ..ModelCaps::default() };
        let mut a = Nic::new(Mlx5Config { caps, ..cfg_mac(MAC_A) });
        let (_cq, mut sq) = tx_side(&mut a, 3, 3);
        sq.bf_step = step;
        let lkey = a.lkey;
        for _ in 0..4 {
            a.send(&mut sq, &f, 18, true, lkey);
        }
        let c = a.model().counters();
        let both = if step == 0 { [4, 0] } else { [2, 2] };
        assert_eq!((c.tx_wqes, c.tx_doorbells_per_buffer), (4, both), "{log_bf:?}");
        assert!(a.model().violations().is_empty(), "{log_bf:?}: {:?}", a.model().violations());
        // A doorbell 0x100 past the first buffer: inside it with 512-byte halves, a buffer of
        // its own with 256-byte ones, nothing without BlueFlame.
        sq.bf = 0x100;
        sq.bf_step = 0;
        a.send(&mut sq, &f, 18, true, lkey);
        let kinds: Vec<ViolationKind> = a.model().violations().iter().map(|v| v.kind).collect();
        let want: &[ViolationKind] = match log_bf {
            Some(10) => &[ViolationKind::SendDoorbell],
            Some(_) => &[],
            None => &[ViolationKind::Unmodelled, ViolationKind::Unmodelled],
        };
        assert_eq!(kinds, want, "{log_bf:?}");
        assert_eq!(a.model().counters().tx_wqes, if want.is_empty() { 5 } else { 4 }, "{log_bf:?}");
    }
}

/// QUERY_HCA_CAP of the flow table capabilities reports `reset_root_to_default` for NIC RX.
#[test]
fn flow_table_caps_report_reset_root_to_default() {
    for on in [true, false] {
        let caps = ModelCaps { reset_root_to_default: on, ..ModelCaps::default() };
        let mut h = Host::new(Mlx5Config { caps, ..Mlx5Config::default() });
        h.bring_up();
        let t = h.query_cap(hca_cap::FLOW_TABLE, true);
        let rx = |f: layout::Field| f.at(cap_flow::NIC_RX_BIT);
        assert_eq!(layout::get(&t, rx(cap_flow::RESET_ROOT_TO_DEFAULT)), u32::from(on));
        assert_eq!(layout::get(&t, rx(cap_flow::FT_SUPPORT)), 1);
    }
}
