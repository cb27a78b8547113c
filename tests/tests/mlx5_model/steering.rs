//! NIC RX flow steering: tables, groups and entries, the MAC filter and lookup, the root.

use erpc_tests::mlx5_model::layout::{self, flow, lyr_2_4, op, status};
use erpc_tests::mlx5_model::{syndrome, Mlx5Config, ModelCaps};

use crate::nic::*;

#[test]
fn flow_steering_commands_check_indices_masks_and_destinations() {
    let mut n = Nic::new(Mlx5Config::default());
    let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
    let t = n.flow_table(3);
    let mut mask = [0u8; 64];
    layout::set(&mut mask, lyr_2_4::ETHERTYPE, 0xffff);
    layout::set(&mut mask, lyr_2_4::UDP_DPORT, 0xffff);
    assert_eq!(
        n.flow_group(t, 4, 8, 1, &mask).failed(),
        (status::BAD_PARAM, syndrome::FLOW_INDEX),
        "end beyond 8 entries"
    );
    assert_eq!(n.flow_group(t, 5, 4, 1, &mask).failed().0, status::BAD_PARAM, "start after end");
    assert_eq!(
        n.flow_group(t, 0, 3, 2, &mask).failed(),
        (status::BAD_PARAM, syndrome::MATCH_CRITERIA),
        "misc criteria"
    );
    let mut l3ok = mask;
    layout::set(&mut l3ok, layout::f(0xd4, 1), 1);
    assert_eq!(n.flow_group(t, 0, 3, 1, &l3ok).failed(), (status::BAD_PARAM, syndrome::MATCH_CRITERIA), "l3_ok");
    let g = layout::get(&n.flow_group(t, 0, 3, 1, &mask).ok(), flow::OUT_GROUP_ID);
    assert_eq!(n.flow_group(t, 3, 5, 1, &mask).failed().0, status::BAD_PARAM, "overlaps");
    assert_eq!(n.flow_group(0x9999, 0, 0, 0, &[]).failed().0, status::BAD_RES, "no such table");
    let fwd = [(flow::DEST_TYPE_TIR, rx.tir)];
    let mut v = [0u8; 64];
    layout::set(&mut v, lyr_2_4::ETHERTYPE, 0x0800);
    layout::set(&mut v, lyr_2_4::UDP_DPORT, 4791);
    let a = flow::ACTION_FWD_DEST;
    assert_eq!(n.fte(0, t, 4, g, &v, a, &fwd).failed(), (status::BAD_PARAM, syndrome::FLOW_INDEX), "index in no group");
    assert_eq!(n.fte(0, t, 1, g + 1, &v, a, &fwd).failed().0, status::BAD_PARAM, "wrong group id");
    let mut outside = v;
    layout::set(&mut outside, lyr_2_4::IP_PROTOCOL, 17);
    assert_eq!(n.fte(0, t, 1, g, &outside, a, &fwd).failed(), (status::BAD_PARAM, syndrome::MATCH_VALUE));
    assert_eq!(n.fte(0, t, 1, g, &v, a | flow::ACTION_COUNT, &fwd).failed().0, status::BAD_PARAM, "count");
    assert_eq!(n.fte(0, t, 1, g, &v, a, &[(flow::DEST_TYPE_FLOW_TABLE, t)]).failed().0, status::BAD_PARAM);
    assert_eq!(n.fte(0, t, 1, g, &v, a, &[]).failed().0, status::BAD_PARAM, "no destination");
    assert_eq!(n.fte(0, t, 1, g, &v, a, &[(flow::DEST_TYPE_TIR, 0x4242)]).failed().0, status::BAD_RES);
    n.fte(0, t, 1, g, &v, a, &fwd).ok();
    assert_eq!(n.fte(0, t, 1, g, &v, a, &fwd).failed().0, status::BAD_RES_STATE, "index taken");
    n.fte(1, t, 1, g, &v, flow::ACTION_DROP, &[]).ok();
    assert_eq!(n.fte(1, t, 2, g, &v, a, &fwd).failed().0, status::BAD_RES, "modify of no entry");
    let mut other = Nic::flow_cmd(op::CREATE_FLOW_TABLE, 0);
    layout::set(&mut other, flow::TABLE_TYPE, 1);
    assert_eq!(n.h.cmd(&other, 16).failed(), (status::BAD_PARAM, syndrome::TABLE_TYPE), "NIC TX tables");
    assert_eq!(n.set_root(0x9999).failed().0, status::BAD_RES);
    n.set_root(t).ok();
    assert_eq!(n.model().root_flow_table(), Some(t));
}

#[test]
fn frames_are_filtered_by_mac_and_steering() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let cq = b.cq(4, false);
    let mut rq = b.rq(cq.cqn, 2, 0, 4);
    b.modify(false, rq.rqn, 0, 1).ok();
    let lkey = b.lkey;
    rq.post(4, lkey);
    let tir = b.tir(rq.rqn);
    let f = udp_frame(MAC_B, MAC_A, 4791, 64);
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_steering_drops, 1, "no root table");
    // A table matching UDP port 4791 only.
    let t = b.flow_table(2);
    let mut mask = [0u8; 64];
    layout::set(&mut mask, lyr_2_4::IP_PROTOCOL, 0xff);
    layout::set(&mut mask, lyr_2_4::UDP_DPORT, 0xffff);
    layout::set(&mut mask, lyr_2_4::DMAC_47_16, u32::MAX);
    layout::set(&mut mask, lyr_2_4::DMAC_15_0, 0xffff);
    let g = layout::get(&b.flow_group(t, 0, 3, 1, &mask).ok(), flow::OUT_GROUP_ID);
    let mut v = erpc_tests::mlx5_model::match_fields(&f);
    for (x, m) in v.iter_mut().zip(mask.iter()) {
        *x &= m;
    }
    b.fte(0, t, 2, g, &v, flow::ACTION_FWD_DEST, &[(flow::DEST_TYPE_TIR, tir)]).ok();
    b.set_root(t).ok();
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_frames, 1);
    b.model().inject_rx_frame(&udp_frame(MAC_B, MAC_A, 4792, 64));
    assert_eq!(b.model().counters().rx_steering_drops, 2, "another port misses");
    b.model().inject_rx_frame(&udp_frame(MAC_A, MAC_B, 4791, 64));
    assert_eq!(b.model().counters().rx_mac_drops, 1, "not our MAC");
    // A lower index wins: a drop rule at index 0 takes the frame first.
    b.fte(0, t, 0, g, &v, flow::ACTION_DROP, &[]).ok();
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_steering_drops, 3);
    let mut del = Nic::flow_cmd(op::DELETE_FLOW_TABLE_ENTRY, t);
    layout::set(&mut del, flow::FTE_FLOW_INDEX, 0);
    b.h.cmd(&del, 16).ok();
    // Broadcast passes the MAC filter (and misses: its dmac is not the rule's).
    b.model().inject_rx_frame(&udp_frame([0xff; 6], MAC_A, 4791, 64));
    assert_eq!(b.model().counters().rx_steering_drops, 4);
    // An RQ that is not ready drops.
    b.modify(false, rq.rqn, 1, 3).ok();
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_steering_drops, 5);
    assert_eq!(b.model().counters().rx_frames, 1);
}

/// SET_FLOW_TABLE_ROOT `op_mod` 1 (disconnect) needs `reset_root_to_default`; without it the
/// root table is torn down by destroying it once empty, which resets the root to the default.
#[test]
fn the_root_is_disconnected_only_with_reset_root_to_default() {
    for reset in [true, false] {
        let caps = ModelCaps { reset_root_to_default: reset, ..ModelCaps::default() };
        let mut n = Nic::new(Mlx5Config { caps, ..cfg_mac(MAC_B) });
        let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
        let e = n.model().flow_entries()[0].clone();
        let d = n.disconnect_root();
        if reset {
            d.ok();
            assert_eq!(n.model().root_flow_table(), None);
            n.set_root(e.table).ok();
        } else {
            assert_eq!(d.failed(), (status::BAD_PARAM, syndrome::UNSUPPORTED));
            assert_eq!(n.model().root_flow_table(), Some(e.table));
        }
        assert_eq!(n.set_root(0).failed().0, status::BAD_RES, "op_mod 0 names a table");
        let mut del = Nic::flow_cmd(op::DELETE_FLOW_TABLE_ENTRY, e.table);
        layout::set(&mut del, flow::FTE_FLOW_INDEX, 0);
        n.h.cmd(&del, 16).ok();
        let mut dg = Nic::flow_cmd(op::DESTROY_FLOW_GROUP, e.table);
        layout::set(&mut dg, flow::DESTROY_GROUP_ID, e.group);
        n.h.cmd(&dg, 16).ok();
        n.h.cmd(&Nic::flow_cmd(op::DESTROY_FLOW_TABLE, e.table), 16).ok();
        assert_eq!(n.model().root_flow_table(), None, "the root reverted to the default");
        n.model().inject_rx_frame(&udp_frame(MAC_B, MAC_A, 1, 64));
        assert_eq!(n.model().counters().rx_steering_drops, 1, "nothing is steered");
        n.destroy(op::DESTROY_TIR, rx.tir).ok();
    }
}

/// Two entries of one group with the same match: firmware takes both, the model records that
/// the later one can never match; each entry's match is decoded for tests.
#[test]
fn an_entry_matching_what_another_matches_is_recorded_and_matches_are_decoded() {
    use erpc_tests::mlx5_model::{FlowMatch, ViolationKind};
    let mut n = Nic::new(Mlx5Config::default());
    let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
    let t = n.flow_table(3);
    let mut mask = [0u8; 64];
    layout::set(&mut mask, lyr_2_4::ETHERTYPE, 0xffff);
    layout::set(&mut mask, lyr_2_4::UDP_DPORT, 0xffff);
    let g = layout::get(&n.flow_group(t, 0, 3, 1, &mask).ok(), flow::OUT_GROUP_ID);
    let fwd = [(flow::DEST_TYPE_TIR, rx.tir)];
    let mut v = [0u8; 64];
    layout::set(&mut v, lyr_2_4::ETHERTYPE, 0x0800);
    layout::set(&mut v, lyr_2_4::UDP_DPORT, 31850);
    n.fte(0, t, 0, g, &v, flow::ACTION_FWD_DEST, &fwd).ok();
    let mut w = v;
    layout::set(&mut w, lyr_2_4::UDP_DPORT, 31851);
    n.fte(0, t, 1, g, &w, flow::ACTION_FWD_DEST, &fwd).ok();
    assert!(n.model().violations().is_empty(), "different ports: {:?}", n.model().violations());
    n.fte(0, t, 2, g, &v, flow::ACTION_FWD_DEST, &fwd).ok();
    let vs = n.model().violations();
    assert_eq!(vs.len(), 1, "{vs:?}");
    assert_eq!(vs[0].kind, ViolationKind::ShadowedFlowEntry);
    assert!(vs[0].detail.contains("entries 0 and 2") && vs[0].detail.contains("entry 2 never matches"), "{vs:?}");
    let e = n.model().flow_entries();
    let m = |i: u32| e.iter().find(|x| x.index == i).map(|x| x.matches).unwrap();
    assert_eq!(
        m(1),
        FlowMatch { ethertype: Some(0x0800), udp_dport: Some(31851), ..FlowMatch::default() },
        "only what the group masks whole is decoded"
    );
    assert_eq!(e.iter().find(|x| x.index == 0).unwrap().rqs, vec![rx.rq.rqn], "the TIR's RQ");
}
