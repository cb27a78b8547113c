//! NIC RX flow steering: flow tables, groups, entries, the root table, and the lookup a
//! received frame goes through.

use super::cmd::{fail, Fail};
use super::layout::{self, flow, lyr_2_4, status, Field};
use super::queues::TirDest;
use super::{syndrome as syn, Device, ViolationKind};
use std::collections::BTreeMap;

/// The largest `log_size` a flow table may have (the model's `log_max_ft_size`).
pub(crate) const LOG_MAX_FT_SIZE: u32 = 20;

#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) start: u32,
    pub(crate) end: u32,
    /// The outer-header criteria mask (`fte_match_set_lyr_2_4`); all zero when
    /// `match_criteria_enable` does not name the outer headers.
    pub(crate) mask: [u8; lyr_2_4::SIZE],
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) group: u32,
    pub(crate) value: [u8; lyr_2_4::SIZE],
    pub(crate) action: u32,
    pub(crate) tirs: Vec<u32>,
}

#[derive(Clone, Debug)]
pub(crate) struct FlowTable {
    pub(crate) level: u32,
    pub(crate) log_size: u32,
    pub(crate) groups: BTreeMap<u32, Group>,
    /// By flow index: lookups go in index order.
    pub(crate) entries: BTreeMap<u32, Entry>,
}

/// A flow table entry as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowEntryInfo {
    pub table: u32,
    pub index: u32,
    pub group: u32,
    pub action: u32,
    pub tirs: Vec<u32>,
    /// The RQs its TIRs lead to (direct TIRs: their inline RQ; indirect: their RQT's RQs).
    pub rqs: Vec<u32>,
    /// What it matches, decoded: each field whose group mask covers it whole, else `None`.
    pub matches: FlowMatch,
}

/// The fields of a flow entry's match that a queue's steering uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    pub dmac: Option<[u8; 6]>,
    pub ethertype: Option<u16>,
    pub ip_protocol: Option<u8>,
    pub dst_ipv4: Option<[u8; 4]>,
    pub udp_dport: Option<u16>,
}

impl FlowMatch {
    fn decode(value: &[u8; lyr_2_4::SIZE], mask: &[u8; lyr_2_4::SIZE]) -> FlowMatch {
        use lyr_2_4::*;
        let whole = |f: Field| layout::get(mask, f) == (1u64 << f.width).wrapping_sub(1) as u32;
        let get = |f: Field| whole(f).then(|| layout::get(value, f));
        let dmac = match (get(DMAC_47_16), get(DMAC_15_0)) {
            (Some(hi), Some(lo)) => {
                let (h, l) = (hi.to_be_bytes(), (lo as u16).to_be_bytes());
                Some([h[0], h[1], h[2], h[3], l[0], l[1]])
            }
            _ => None,
        };
        FlowMatch {
            dmac,
            ethertype: get(ETHERTYPE).map(|v| v as u16),
            ip_protocol: get(IP_PROTOCOL).map(|v| v as u8),
            dst_ipv4: get(DST_IPV4).map(u32::to_be_bytes),
            udp_dport: get(UDP_DPORT).map(|v| v as u16),
        }
    }
}

/// Every `fte_match_set_lyr_2_4` field the model decodes from a frame; a group mask with bits
/// elsewhere is refused (BAD_PARAM), so a match never silently depends on a field the model
/// ignores.
fn supported_mask() -> [u8; lyr_2_4::SIZE] {
    let mut m = [0u8; lyr_2_4::SIZE];
    use lyr_2_4::*;
    for f in [
        SMAC_47_16,
        SMAC_15_0,
        ETHERTYPE,
        DMAC_47_16,
        DMAC_15_0,
        FIRST_PRIO,
        FIRST_CFI,
        FIRST_VID,
        IP_PROTOCOL,
        IP_DSCP,
        IP_ECN,
        CVLAN_TAG,
        SVLAN_TAG,
        FRAG,
        IP_VERSION,
        TCP_FLAGS,
        TCP_SPORT,
        TCP_DPORT,
        IP_TTL_HOPLIMIT,
        UDP_SPORT,
        UDP_DPORT,
    ] {
        layout::set(&mut m, f, u32::MAX);
    }
    m[SRC_IP..SRC_IP + 16].fill(0xff);
    m[DST_IP..DST_IP + 16].fill(0xff);
    m
}

/// The `fte_match_set_lyr_2_4` values of a frame: MACs, the first VLAN tag, ethertype, IPv4 /
/// IPv6 addresses, protocol, DSCP / ECN / TTL / fragment, TCP / UDP ports and TCP flags.
pub(crate) fn frame_fields(frame: &[u8]) -> [u8; lyr_2_4::SIZE] {
    use lyr_2_4::*;
    let mut v = [0u8; lyr_2_4::SIZE];
    if frame.len() < 14 {
        return v;
    }
    let be16 = |o: usize| frame.get(o..o + 2).map_or(0, |b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    let be32 = |o: usize| layout::get32(frame, o);
    layout::set(&mut v, DMAC_47_16, be32(0));
    layout::set(&mut v, DMAC_15_0, be16(4));
    layout::set(&mut v, SMAC_47_16, be32(6));
    layout::set(&mut v, SMAC_15_0, be16(10));
    let mut l3 = 14;
    let mut ethertype = be16(12);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        let tci = be16(14);
        layout::set(&mut v, if ethertype == 0x8100 { CVLAN_TAG } else { SVLAN_TAG }, 1);
        layout::set(&mut v, FIRST_PRIO, tci >> 13);
        layout::set(&mut v, FIRST_CFI, (tci >> 12) & 1);
        layout::set(&mut v, FIRST_VID, tci & 0xfff);
        ethertype = be16(16);
        l3 = 18;
    }
    layout::set(&mut v, ETHERTYPE, ethertype);
    let (proto, l4) = match ethertype {
        0x0800 if frame.len() >= l3 + 20 => {
            let ihl = usize::from(frame[l3] & 0xf) * 4;
            layout::set(&mut v, IP_VERSION, 4);
            layout::set(&mut v, IP_DSCP, u32::from(frame[l3 + 1] >> 2));
            layout::set(&mut v, IP_ECN, u32::from(frame[l3 + 1] & 3));
            let frag = be16(l3 + 6);
            layout::set(&mut v, FRAG, u32::from(frag & 0x3fff != 0));
            layout::set(&mut v, IP_TTL_HOPLIMIT, u32::from(frame[l3 + 8]));
            layout::set(&mut v, SRC_IPV4, be32(l3 + 12));
            layout::set(&mut v, DST_IPV4, be32(l3 + 16));
            // Only the first fragment carries the L4 header.
            (frame[l3 + 9], if frag & 0x1fff == 0 { Some(l3 + ihl) } else { None })
        }
        0x86dd if frame.len() >= l3 + 40 => {
            layout::set(&mut v, IP_VERSION, 6);
            let tc = (be16(l3) >> 4) & 0xff;
            layout::set(&mut v, IP_DSCP, tc >> 2);
            layout::set(&mut v, IP_ECN, tc & 3);
            layout::set(&mut v, IP_TTL_HOPLIMIT, u32::from(frame[l3 + 7]));
            v[SRC_IP..SRC_IP + 16].copy_from_slice(&frame[l3 + 8..l3 + 24]);
            v[DST_IP..DST_IP + 16].copy_from_slice(&frame[l3 + 24..l3 + 40]);
            (frame[l3 + 6], Some(l3 + 40))
        }
        _ => return v,
    };
    layout::set(&mut v, IP_PROTOCOL, u32::from(proto));
    match (proto, l4) {
        (6, Some(o)) if frame.len() >= o + 20 => {
            layout::set(&mut v, TCP_SPORT, be16(o));
            layout::set(&mut v, TCP_DPORT, be16(o + 2));
            layout::set(&mut v, TCP_FLAGS, be16(o + 12) & 0x1ff);
        }
        (17, Some(o)) if frame.len() >= o + 8 => {
            layout::set(&mut v, UDP_SPORT, be16(o));
            layout::set(&mut v, UDP_DPORT, be16(o + 2));
        }
        _ => {}
    }
    v
}

fn bad<T>(syndrome: u32) -> Result<T, Fail> {
    fail(status::BAD_PARAM, syndrome)
}

fn no_such<T>() -> Result<T, Fail> {
    fail(status::BAD_RES, syn::NO_SUCH_OBJECT)
}

impl Device {
    pub(crate) fn steering_lengths(&self, opcode: u16, i: &[u8]) -> Option<(usize, usize)> {
        use layout::op;
        const H: usize = 0x10;
        Some(match opcode {
            op::CREATE_FLOW_TABLE => (flow::SMALL_IN_SIZE, H),
            op::DESTROY_FLOW_TABLE | op::DESTROY_FLOW_GROUP | op::DELETE_FLOW_TABLE_ENTRY => (flow::SMALL_IN_SIZE, H),
            op::SET_FLOW_TABLE_ROOT => (flow::SMALL_IN_SIZE, H),
            op::CREATE_FLOW_GROUP => (flow::FG_IN_SIZE, H),
            op::SET_FLOW_TABLE_ENTRY => {
                let n = layout::get(i, self::fc(flow::FC_DEST_LIST_SIZE)) as usize;
                let counters = layout::get(i, self::fc(flow::FC_COUNTER_LIST_SIZE)) as usize;
                (flow::FTE_IN_SIZE + flow::DEST_SIZE * n.saturating_add(counters).min(1 << 16), H)
            }
            _ => return None,
        })
    }

    /// The table a command names: it exists and is a NIC RX table on our own vport.
    fn table_of(&self, i: &[u8]) -> Result<u32, Fail> {
        if layout::get(i, flow::OTHER_VPORT) != 0 || layout::get(i, flow::VPORT_NUMBER) != 0 {
            return bad(syn::OTHER_VPORT);
        }
        if layout::get(i, flow::TABLE_TYPE) != flow::TABLE_TYPE_NIC_RX {
            return bad(syn::TABLE_TYPE);
        }
        let id = layout::get(i, flow::TABLE_ID);
        if !self.tables.contains_key(&id) {
            return no_such();
        }
        Ok(id)
    }

    pub(crate) fn steering_dispatch(&mut self, opcode: u16, op_mod: u16, i: &[u8], out: &mut [u8]) -> Result<(), Fail> {
        use layout::op;
        match opcode {
            op::CREATE_FLOW_TABLE => {
                if layout::get(i, flow::OTHER_VPORT) != 0 || layout::get(i, flow::VPORT_NUMBER) != 0 {
                    return bad(syn::OTHER_VPORT);
                }
                if layout::get(i, flow::TABLE_TYPE) != flow::TABLE_TYPE_NIC_RX {
                    return bad(syn::TABLE_TYPE);
                }
                let c = |f: Field| layout::get(i, f.at(flow::FT_CTX_BIT));
                // Miss action 0: the default (a miss in the root table drops); forwarding misses
                // to another table is not modelled.
                if c(flow::FT_MISS_ACTION) != 0 {
                    return bad(syn::UNSUPPORTED);
                }
                let log_size = c(flow::FT_LOG_SIZE);
                if log_size > LOG_MAX_FT_SIZE {
                    return bad(syn::QUEUE_SIZE);
                }
                let id = self.new_object_number();
                let t =
                    FlowTable { level: c(flow::FT_LEVEL), log_size, groups: BTreeMap::new(), entries: BTreeMap::new() };
                self.tables.insert(id, t);
                layout::set(out, flow::OUT_TABLE_ID, id);
            }
            op::DESTROY_FLOW_TABLE => {
                let id = self.table_of(i)?;
                let t = &self.tables[&id];
                if !t.groups.is_empty() || !t.entries.is_empty() {
                    return fail(status::BAD_RES_STATE, syn::OBJECT_IN_USE);
                }
                // The root may go too: the root reverts to the default (nothing steered). Linux
                // destroys the last root table without a SET_FLOW_TABLE_ROOT first
                // (`update_root_ft_destroy` in `core/fs_core.c`).
                if self.root_rx == Some(id) {
                    self.root_rx = None;
                }
                self.tables.remove(&id);
            }
            op::SET_FLOW_TABLE_ROOT => {
                if layout::get(i, flow::OTHER_VPORT) != 0 || layout::get(i, flow::VPORT_NUMBER) != 0 {
                    return bad(syn::OTHER_VPORT);
                }
                if layout::get(i, flow::TABLE_TYPE) != flow::TABLE_TYPE_NIC_RX {
                    return bad(syn::TABLE_TYPE);
                }
                // `op_mod` 1 disconnects the root (Linux `mlx5_cmd_update_root_ft`), which the
                // device accepts only when it reports `reset_root_to_default`
                // (`mlx5_fs_cmd_set_tx_flow_table_root` refuses it otherwise); 0 makes the
                // named table the root.
                match op_mod {
                    1 => {
                        let rx = |f: Field| f.at(layout::cap_flow::NIC_RX_BIT);
                        if layout::get(&self.caps_flow, rx(layout::cap_flow::RESET_ROOT_TO_DEFAULT)) == 0 {
                            return bad(syn::UNSUPPORTED);
                        }
                        self.root_rx = None;
                    }
                    0 => {
                        let id = self.table_of(i)?;
                        self.root_rx = Some(id);
                    }
                    _ => return bad(syn::BAD_OP_MOD),
                }
            }
            op::CREATE_FLOW_GROUP => {
                let tid = self.table_of(i)?;
                let (start, end) = (layout::get(i, flow::FG_START), layout::get(i, flow::FG_END));
                let t = &self.tables[&tid];
                if start > end || u64::from(end) >= 1u64 << t.log_size {
                    return bad(syn::FLOW_INDEX);
                }
                if t.groups.values().any(|g| start <= g.end && g.start <= end) {
                    return bad(syn::FLOW_INDEX);
                }
                let enable = layout::get(i, flow::FG_CRITERIA_ENABLE);
                if enable & !flow::MATCH_OUTER != 0 {
                    // Misc and inner-header criteria are not modelled.
                    return bad(syn::MATCH_CRITERIA);
                }
                let mut mask = [0u8; lyr_2_4::SIZE];
                if enable & flow::MATCH_OUTER != 0 {
                    mask.copy_from_slice(&i[flow::FG_CRITERIA..flow::FG_CRITERIA + lyr_2_4::SIZE]);
                }
                let ok = supported_mask();
                if mask.iter().zip(ok.iter()).any(|(m, s)| m & !s != 0) {
                    return bad(syn::MATCH_CRITERIA);
                }
                let gid = self.new_object_number();
                if let Some(t) = self.tables.get_mut(&tid) {
                    t.groups.insert(gid, Group { start, end, mask });
                }
                layout::set(out, flow::OUT_GROUP_ID, gid);
            }
            op::DESTROY_FLOW_GROUP => {
                let tid = self.table_of(i)?;
                let gid = layout::get(i, flow::DESTROY_GROUP_ID);
                let Some(t) = self.tables.get_mut(&tid) else { return no_such() };
                if !t.groups.contains_key(&gid) {
                    return no_such();
                }
                if t.entries.values().any(|e| e.group == gid) {
                    return fail(status::BAD_RES_STATE, syn::OBJECT_IN_USE);
                }
                t.groups.remove(&gid);
            }
            op::SET_FLOW_TABLE_ENTRY => self.set_fte(op_mod, i)?,
            op::DELETE_FLOW_TABLE_ENTRY => {
                let tid = self.table_of(i)?;
                let index = layout::get(i, flow::FTE_FLOW_INDEX);
                let Some(t) = self.tables.get_mut(&tid) else { return no_such() };
                if t.entries.remove(&index).is_none() {
                    return no_such();
                }
            }
            _ => return fail(status::BAD_OP, syn::BAD_OPCODE),
        }
        Ok(())
    }

    /// SET_FLOW_TABLE_ENTRY: op_mod 0 adds an entry at a free index, 1 replaces an existing one.
    fn set_fte(&mut self, op_mod: u16, i: &[u8]) -> Result<(), Fail> {
        let tid = self.table_of(i)?;
        let index = layout::get(i, flow::FTE_FLOW_INDEX);
        let t = &self.tables[&tid];
        let Some((&gid, g)) = t.groups.iter().find(|(_, g)| (g.start..=g.end).contains(&index)) else {
            return bad(syn::FLOW_INDEX);
        };
        if layout::get(i, fc(flow::FC_GROUP_ID)) != gid {
            return bad(syn::FLOW_INDEX);
        }
        match (op_mod, t.entries.contains_key(&index)) {
            (0, true) => return fail(status::BAD_RES_STATE, syn::OBJECT_IN_USE),
            (1, false) => return no_such(),
            (0 | 1, _) => {}
            _ => return bad(syn::BAD_OP_MOD),
        }
        let at = flow::FTE_CTX + flow::FC_MATCH_VALUE;
        let mut value = [0u8; lyr_2_4::SIZE];
        value.copy_from_slice(&i[at..at + lyr_2_4::SIZE]);
        // The value may only use bits the group matches on.
        if value.iter().zip(g.mask.iter()).any(|(v, m)| v & !m != 0) {
            return bad(syn::MATCH_VALUE);
        }
        let action = layout::get(i, fc(flow::FC_ACTION));
        let n = layout::get(i, fc(flow::FC_DEST_LIST_SIZE)) as usize;
        if layout::get(i, fc(flow::FC_COUNTER_LIST_SIZE)) != 0 {
            return bad(syn::FLOW_ACTION);
        }
        let mut tirs = vec![];
        match action {
            flow::ACTION_FWD_DEST => {
                if n == 0 {
                    return bad(syn::FLOW_DEST);
                }
                for k in 0..n {
                    let d = &i[flow::FTE_CTX + flow::FC_DESTINATIONS + flow::DEST_SIZE * k..];
                    if layout::get(d, flow::DEST_TYPE) != flow::DEST_TYPE_TIR {
                        return bad(syn::FLOW_DEST);
                    }
                    let tir = layout::get(d, flow::DEST_ID);
                    if !self.tirs.contains_key(&tir) {
                        return no_such();
                    }
                    tirs.push(tir);
                }
            }
            flow::ACTION_DROP if n == 0 => {}
            _ => return bad(syn::FLOW_ACTION),
        }
        // Another entry of the group matching exactly the same frames: one of the two can
        // never match. Firmware takes it; the model records it.
        let masked = |v: &[u8; lyr_2_4::SIZE]| -> Vec<u8> { v.iter().zip(g.mask.iter()).map(|(a, m)| a & m).collect() };
        let same: Vec<u32> = t
            .entries
            .iter()
            .filter(|(&k, e)| k != index && e.group == gid && masked(&e.value) == masked(&value))
            .map(|(&k, _)| k)
            .collect();
        if let Some(t) = self.tables.get_mut(&tid) {
            t.entries.insert(index, Entry { group: gid, value, action, tirs });
        }
        for k in same {
            self.violation(
                ViolationKind::ShadowedFlowEntry,
                format!(
                    "flow entries {k} and {index} of table {tid:#x} match the same frames: entry {} never matches",
                    k.max(index)
                ),
            );
        }
        Ok(())
    }

    pub(crate) fn tir_in_use(&self, tir: u32) -> bool {
        self.tables.values().any(|t| t.entries.values().any(|e| e.tirs.contains(&tir)))
    }

    pub(crate) fn steering_objects(&self, v: &mut Vec<String>) {
        for (id, t) in &self.tables {
            v.push(format!("flow table {id:#x}"));
            v.extend(t.groups.keys().map(|g| format!("flow group {g:#x}")));
            v.extend(t.entries.keys().map(|e| format!("flow entry {id:#x}[{e}]")));
        }
    }

    pub(crate) fn clear_steering(&mut self) {
        self.tables.clear();
        self.root_rx = None;
    }

    /// (table, level, log_size) of every flow table.
    pub(crate) fn flow_tables(&self) -> Vec<(u32, u32, u32)> {
        self.tables.iter().map(|(&id, t)| (id, t.level, t.log_size)).collect()
    }

    pub(crate) fn flow_entries(&self) -> Vec<FlowEntryInfo> {
        let mut v = vec![];
        for (&table, t) in &self.tables {
            for (&index, e) in &t.entries {
                let fields = [0u8; lyr_2_4::SIZE];
                let rqs = e.tirs.iter().filter_map(|tir| self.tir_rq(*tir, &fields)).collect();
                let matches = t.groups.get(&e.group).map(|g| FlowMatch::decode(&e.value, &g.mask)).unwrap_or_default();
                v.push(FlowEntryInfo {
                    table,
                    index,
                    group: e.group,
                    action: e.action,
                    tirs: e.tirs.clone(),
                    rqs,
                    matches,
                });
            }
        }
        v
    }

    /// The RQs a frame steers to through the root NIC RX table: the first entry in flow-index
    /// order whose group-masked value equals the frame's masked fields; its TIRs' RQs. Empty
    /// when there is no root table, no entry matches, or the entry drops.
    pub(crate) fn steer(&self, frame: &[u8]) -> Vec<u32> {
        let Some(t) = self.root_rx.and_then(|r| self.tables.get(&r)) else { return vec![] };
        let fields = frame_fields(frame);
        for e in t.entries.values() {
            let Some(g) = t.groups.get(&e.group) else { continue };
            let hit = (0..lyr_2_4::SIZE).all(|k| fields[k] & g.mask[k] == e.value[k] & g.mask[k]);
            if !hit {
                continue;
            }
            if e.action != flow::ACTION_FWD_DEST {
                return vec![];
            }
            return e.tirs.iter().filter_map(|tir| self.tir_rq(*tir, &fields)).collect();
        }
        vec![]
    }

    /// The RQ a TIR hands a frame to: its inline RQ, or for an indirect TIR one of its RQT's
    /// RQs (the first when `rx_hash_fn` is 0; otherwise chosen by a simple hash of addresses
    /// and ports, not the Toeplitz hash real hardware computes).
    fn tir_rq(&self, tir: u32, fields: &[u8; lyr_2_4::SIZE]) -> Option<u32> {
        let t = self.tirs.get(&tir)?;
        match t.dest {
            TirDest::Rq(r) => Some(r),
            TirDest::Rqt(q) => {
                let list = self.rqts.get(&q)?;
                if t.hash_fn == 0 || list.len() == 1 {
                    return list.first().copied();
                }
                let mut h: u32 = 0x811c_9dc5;
                for &b in &fields[0x20..0x40] {
                    h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
                }
                for f in [lyr_2_4::UDP_SPORT, lyr_2_4::UDP_DPORT, lyr_2_4::TCP_SPORT, lyr_2_4::TCP_DPORT] {
                    h = (h ^ layout::get(fields, f)).wrapping_mul(0x0100_0193);
                }
                list.get(h as usize % list.len()).copied()
            }
        }
    }
}

/// A `flow_context` field of `set_fte_in`.
fn fc(f: Field) -> Field {
    f.at(flow::FTE_CTX as u32 * 8)
}
