//! Receive steering inputs: a NIC RX root flow table with one group over its first `n`
//! indices, and per queue pair one entry at its index that forwards its endpoint's traffic
//! (our MAC, IPv4, UDP, our address and the endpoint's port) to the queue's TIR (a direct one:
//! [`Tirc::direct`]). Everything else the port receives misses the table and is dropped by
//! the device.

use super::handles::{FgId, FtId, Tirn};
use super::layout::*;
use zerocopy::FromZeros;

/// The fields a frame must carry to be delivered to our RQ.
#[derive(Clone, Copy, Debug)]
pub struct RxMatch {
    pub mac: [u8; 6],
    pub ipv4: [u8; 4],
    pub udp_port: u16,
}

/// The outer-header match: all ones where `value` is `None` builds the criteria mask.
fn outer(m: Option<&RxMatch>) -> MatchLyr24 {
    let mut o = MatchLyr24::default();
    match m {
        None => {
            o.dmac_47_16 = u32::MAX.into();
            o.dmac_15_0_vlan = field(0xffff, 16, 16).into();
            o.smac_15_0_ethertype = field(0xffff, 0, 16).into();
            o.ip = field(0xff, 24, 8).into();
            o.udp_ports = field(0xffff, 0, 16).into();
            o.dst_ip[3] = u32::MAX.into();
        }
        Some(m) => {
            o.dmac_47_16 = u32::from_be_bytes([m.mac[0], m.mac[1], m.mac[2], m.mac[3]]).into();
            o.dmac_15_0_vlan = field(u32::from(u16::from_be_bytes([m.mac[4], m.mac[5]])), 16, 16).into();
            o.smac_15_0_ethertype = field(0x0800, 0, 16).into();
            o.ip = field(17, 24, 8).into();
            o.udp_ports = field(u32::from(m.udp_port), 0, 16).into();
            o.dst_ip[3] = u32::from_be_bytes(m.ipv4).into();
        }
    }
    o
}

/// CREATE_FLOW_TABLE input: a NIC RX table of `1 << log_size` entries at level 0.
pub fn create_table(log_size: u32) -> CreateFlowTableIn {
    CreateFlowTableIn {
        hdr: FlowHdr::new(op::CREATE_FLOW_TABLE, 0, FT_NIC_RX, 0),
        ctx_flags: (field(0, 16, 8) | field(log_size, 0, 8)).into(),
        ..Default::default()
    }
}

/// CREATE_FLOW_GROUP input: flow indices `0..entries`, matching the outer fields of
/// [`RxMatch`].
pub fn create_group(table: FtId, entries: u32) -> CreateFlowGroupIn {
    let mut g = CreateFlowGroupIn::new_zeroed();
    g.hdr = FlowHdr::new(op::CREATE_FLOW_GROUP, 0, FT_NIC_RX, table.0);
    g.start_flow_index = 0.into();
    g.end_flow_index = (entries.max(1) - 1).into();
    g.match_criteria_enable = MATCH_OUTER_HEADERS.into();
    g.match_criteria.outer = outer(None);
    g
}

/// SET_FLOW_TABLE_ENTRY input: index `index` of `group`, forwarding `m` to `tir`.
pub fn set_entry(table: FtId, group: FgId, index: u32, tir: Tirn, m: &RxMatch) -> SetFteIn {
    let mut e = SetFteIn::new_zeroed();
    e.hdr = FlowHdr::new(op::SET_FLOW_TABLE_ENTRY, 0, FT_NIC_RX, table.0);
    e.flow_index = index.into();
    e.ctx.group_id = group.0.into();
    e.ctx.action = FLOW_ACTION_FWD_DEST.into();
    e.ctx.destination_list_size = field(1, 0, 24).into();
    e.ctx.match_value.outer = outer(Some(m));
    e.dest = FlowDest { type_id: (field(FLOW_DEST_TIR, 24, 8) | field(tir.0, 0, 24)).into(), rsvd: 0.into() };
    e
}

/// SET_FLOW_TABLE_ROOT input: make `table` the root (op_mod 0), or disconnect the root (op_mod
/// 1, table 0; only on a device that reports `reset_root_to_default`).
pub fn set_root(table: Option<FtId>) -> FlowObjIn {
    FlowObjIn {
        hdr: FlowHdr::new(op::SET_FLOW_TABLE_ROOT, u16::from(table.is_none()), FT_NIC_RX, table.map_or(0, |t| t.0)),
        ..Default::default()
    }
}

/// DELETE_FLOW_TABLE_ENTRY input for index `index`.
pub fn delete_entry(table: FtId, index: u32) -> DeleteFteIn {
    DeleteFteIn {
        hdr: FlowHdr::new(op::DELETE_FLOW_TABLE_ENTRY, 0, FT_NIC_RX, table.0),
        flow_index: index.into(),
        ..Default::default()
    }
}

/// DESTROY_FLOW_GROUP input.
pub fn destroy_group(table: FtId, group: FgId) -> FlowObjIn {
    FlowObjIn {
        hdr: FlowHdr::new(op::DESTROY_FLOW_GROUP, 0, FT_NIC_RX, table.0),
        id: group.0.into(),
        ..Default::default()
    }
}

/// DESTROY_FLOW_TABLE input.
pub fn destroy_table(table: FtId) -> FlowObjIn {
    FlowObjIn { hdr: FlowHdr::new(op::DESTROY_FLOW_TABLE, 0, FT_NIC_RX, table.0), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn the_entry_matches_what_the_group_masks() {
        let m = RxMatch { mac: [2, 0, 0, 0, 0, 7], ipv4: [10, 0, 0, 2], udp_port: 31850 };
        let g = create_group(FtId(5), 4);
        let e = set_entry(FtId(5), FgId(9), 2, Tirn(3), &m);
        let crit = g.match_criteria.outer.as_bytes();
        let val = e.ctx.match_value.outer.as_bytes();
        // Every value bit lies under the mask.
        assert!(crit.iter().zip(val).all(|(c, v)| v & !c == 0));
        // dmac at bytes 8..14, ethertype at 6..8, ip_protocol at 16, udp_dport at 30..32, dst
        // IPv4 at 60..64 of fte_match_set_lyr_2_4.
        assert_eq!(&val[8..12], &[2, 0, 0, 0]);
        assert_eq!(&val[12..14], &[0, 7]);
        assert_eq!(&val[6..8], &[0x08, 0x00]);
        assert_eq!(val[16], 17);
        assert_eq!(&val[30..32], &31850u16.to_be_bytes());
        assert_eq!(&val[60..64], &[10, 0, 0, 2]);
        // The destination list starts 0x300 bytes into the flow context (0x340 into the input).
        assert_eq!(&e.as_bytes()[0x340..0x344], &[2, 0, 0, 3]);
        assert_eq!(g.as_bytes()[0x3F], 1, "match_criteria_enable: outer headers");
        assert_eq!(&e.as_bytes()[0x20..0x24], &[0, 0, 0, 2], "flow_index at 0x20");
        assert_eq!(&delete_entry(FtId(5), 7).as_bytes()[0x20..0x24], &[0, 0, 0, 7], "flow_index at 0x20");
    }
}
