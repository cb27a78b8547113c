//! A brought-up device with the queue-side helpers these tests build on: CQs, SQs and striding
//! RQs driven by tiny encoders of their own, UDP frames, and ready-made receive and send sides.

use erpc_driver::mmio::RegisterIo64;
use erpc_hugepages::{DmaMemory, PageSize};
use erpc_tests::mlx5_model::layout::{
    self, cqc, cqe, flow, modify_q, op, rqc, sqc, tirc, tisc, wq, wqe, CQN, CTX_BIT, PAS_AT, QN,
};
use erpc_tests::mlx5_model::{Mlx5Config, Mlx5Model};

use crate::host::*;

/// The CQE software initializes its CQ with: opcode invalid, owner 1 (hardware writes owner 0
/// on the first pass).
pub(crate) const CQE_INIT: u8 = cqe::OP_INVALID << 4 | 1;

pub(crate) struct TestCq {
    pub(crate) cqn: u32,
    pub(crate) log: u32,
    pub(crate) buf: DmaMemory,
    pub(crate) db: DmaMemory,
    /// Consumer index.
    pub(crate) ci: u32,
}

impl TestCq {
    /// The next CQE, if software owns it (its owner bit is this pass's: `ci >> log & 1`).
    pub(crate) fn peek(&self) -> Option<Vec<u8>> {
        let q = peek(&self.buf, ((self.ci & ((1 << self.log) - 1)) * 64) as usize, 64);
        let own = q[cqe::OP_OWN] & 1;
        (q[cqe::OP_OWN] >> 4 != cqe::OP_INVALID && u32::from(own) == (self.ci >> self.log) & 1).then_some(q)
    }

    /// Consumes the next CQE and publishes the consumer index in the doorbell record.
    pub(crate) fn poll(&mut self) -> Option<Vec<u8>> {
        let q = self.peek()?;
        self.ci += 1;
        poke(&self.db, 0, &(self.ci & 0xff_ffff).to_be_bytes());
        Some(q)
    }

    pub(crate) fn drain(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.poll()).collect()
    }
}

pub(crate) fn opcode(q: &[u8]) -> u8 {
    q[cqe::OP_OWN] >> 4
}

pub(crate) fn be16_at(q: &[u8], o: usize) -> u32 {
    u32::from(u16::from_be_bytes([q[o], q[o + 1]]))
}

pub(crate) struct TestSq {
    pub(crate) sqn: u32,
    pub(crate) log: u32,
    pub(crate) buf: DmaMemory,
    pub(crate) db: DmaMemory,
    pub(crate) data: DmaMemory,
    pub(crate) uar: u32,
    /// Producer counter (WQEBBs).
    pub(crate) pc: u32,
    /// The BlueFlame buffer the next doorbell goes to (offset from UAR + 0x800), and the
    /// distance to the other one.
    pub(crate) bf: u32,
    pub(crate) bf_step: u32,
}

pub(crate) struct TestRq {
    pub(crate) rqn: u32,
    pub(crate) log: u32,
    pub(crate) buf: DmaMemory,
    pub(crate) db: DmaMemory,
    pub(crate) data: DmaMemory,
    pub(crate) strides: u32,
    pub(crate) stride: u32,
    /// WQEs posted.
    pub(crate) pc: u32,
}

impl TestRq {
    pub(crate) fn wqe_bytes(&self) -> usize {
        (self.strides * self.stride) as usize
    }

    /// Posts `n` striding WQEs (next segment + one data segment of the WQE's strides).
    pub(crate) fn post(&mut self, n: u32, lkey: u32) {
        for _ in 0..n {
            let k = self.pc & ((1 << self.log) - 1);
            let mut w = [0u8; 32];
            layout::set32(&mut w, 16 + wqe::DATA_BYTE_COUNT, self.strides * self.stride);
            layout::set32(&mut w, 16 + wqe::DATA_LKEY, lkey);
            layout::set64(&mut w, 16 + wqe::DATA_ADDR, self.data.iova() + k as u64 * self.wqe_bytes() as u64);
            poke(&self.buf, k as usize * 32, &w);
            self.pc += 1;
        }
        poke(&self.db, 0, &(self.pc & 0xffff).to_be_bytes());
    }

    /// The bytes of a packet a CQE describes.
    pub(crate) fn packet(&self, q: &[u8], shift: usize) -> Vec<u8> {
        let len = (layout::get32(q, cqe::BYTE_CNT) & 0xffff) as usize;
        let at = be16_at(q, cqe::WQE_ID) as usize * self.wqe_bytes()
            + be16_at(q, cqe::WQE_COUNTER) as usize * self.stride as usize
            + shift;
        peek(&self.data, at, len)
    }
}

/// A brought-up device with an EQ (and its UAR), a PD, a transport domain and the reserved lkey.
pub(crate) struct Nic {
    pub(crate) h: Host,
    pub(crate) uar: u32,
    pub(crate) eqn: u8,
    pub(crate) pd: u32,
    pub(crate) td: u32,
    pub(crate) lkey: u32,
    pub(crate) _eq: DmaMemory,
}

/// A UDP/IPv4 frame of `payload` bytes from `src` to `dst` (IPv4 header checksum right, UDP
/// checksum 0).
pub(crate) fn udp_frame(dst: [u8; 6], src: [u8; 6], dport: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload) as u16;
    let mut ip = [0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&31850u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload).map(|k| (k * 7 + 3) as u8));
    f
}

pub(crate) const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];

pub(crate) const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

pub(crate) fn cfg_mac(mac: [u8; 6]) -> Mlx5Config {
    Mlx5Config { mac, ..Mlx5Config::default() }
}

impl Nic {
    pub(crate) fn new(cfg: Mlx5Config) -> Nic {
        let mut h = Host::new(cfg);
        h.bring_up();
        let (eqn, uar, eq) = h.create_eq(3, 1 << 0x04);
        let pd = h.obj(op::ALLOC_PD);
        let td = h.obj(op::ALLOC_TRANSPORT_DOMAIN);
        let sc = h.cmd(&inbox(op::QUERY_SPECIAL_CONTEXTS, 0, 16), 0x20).ok();
        let lkey = layout::get(&sc, layout::special_contexts::RESD_LKEY);
        Nic { h, uar, eqn, pd, td, lkey, _eq: eq }
    }

    pub(crate) fn mem(&self, bytes: usize) -> DmaMemory {
        self.h.space.alloc(bytes.max(4096), PageSize::Ordinary).unwrap()
    }

    pub(crate) fn model(&self) -> &Mlx5Model {
        &self.h.model
    }

    pub(crate) fn cq_in(&self, log: u32, oi: bool, buf: u64, db: u64) -> Vec<u8> {
        let npages = (64usize << log).div_ceil(4096);
        let mut i = inbox(op::CREATE_CQ, 0, PAS_AT + 8 * npages);
        let c = |f: layout::Field| f.at(cqc::IN_CREATE_BIT);
        layout::set(&mut i, c(cqc::LOG_CQ_SIZE), log);
        layout::set(&mut i, c(cqc::UAR_PAGE), self.uar);
        layout::set(&mut i, c(cqc::C_EQN), u32::from(self.eqn));
        layout::set(&mut i, c(cqc::OI), u32::from(oi));
        layout::set64(&mut i, (cqc::IN_CREATE_BIT / 8) as usize + cqc::DBR_ADDR, db);
        for k in 0..npages {
            layout::set64(&mut i, PAS_AT + 8 * k, buf + 4096 * k as u64);
        }
        i
    }

    pub(crate) fn cq(&mut self, log: u32, oi: bool) -> TestCq {
        let buf = self.mem(64 << log);
        for k in 0..1usize << log {
            poke(&buf, k * 64 + cqe::OP_OWN, &[CQE_INIT]);
        }
        let db = self.mem(4096);
        let i = self.cq_in(log, oi, buf.iova(), db.iova());
        let out = self.h.cmd(&i, 16).ok();
        TestCq { cqn: layout::get(&out, CQN), log, buf, db, ci: 0 }
    }

    pub(crate) fn tis(&mut self) -> u32 {
        let mut i = inbox(op::CREATE_TIS, 0, tisc::IN_SIZE);
        layout::set(&mut i, tisc::TRANSPORT_DOMAIN.at(CTX_BIT), self.td);
        layout::get(&self.h.cmd(&i, 16).ok(), QN)
    }

    /// Fills the `wq` of an SQ / RQ input.
    pub(crate) fn wq_in(&self, i: &mut [u8], wq_type: u32, log_stride: u32, log: u32, buf: u64, db: u64) {
        let wb = CTX_BIT + sqc::WQ_BIT;
        let w = |f: layout::Field| f.at(wb);
        layout::set(i, w(wq::WQ_TYPE), wq_type);
        layout::set(i, w(wq::PD), self.pd);
        layout::set(i, w(wq::UAR_PAGE), self.uar);
        layout::set64(i, (wb / 8) as usize + wq::DBR_ADDR, db);
        layout::set(i, w(wq::LOG_WQ_STRIDE), log_stride);
        layout::set(i, w(wq::LOG_WQ_SZ), log);
        let npages = ((1usize << log) << log_stride).div_ceil(4096);
        for k in 0..npages {
            layout::set64(i, PAS_AT + 8 * k, buf + 4096 * k as u64);
        }
    }

    pub(crate) fn sq_in(&self, cqn: u32, tisn: u32, log: u32, buf: u64, db: u64) -> Vec<u8> {
        let npages = (64usize << log).div_ceil(4096);
        let mut i = inbox(op::CREATE_SQ, 0, PAS_AT + 8 * npages);
        let c = |f: layout::Field| f.at(CTX_BIT);
        layout::set(&mut i, c(sqc::CQN), cqn);
        layout::set(&mut i, c(sqc::TIS_LST_SZ), 1);
        layout::set(&mut i, c(sqc::TIS_NUM_0), tisn);
        layout::set(&mut i, c(sqc::FLUSH_IN_ERROR_EN), 1);
        self.wq_in(&mut i, wq::TYPE_CYCLIC, 6, log, buf, db);
        i
    }

    /// A striding RQ input: 2^(9 + strides_field) strides of 2^(6 + stride_field) bytes.
    pub(crate) fn rq_in(
        &self,
        cqn: u32,
        log: u32,
        strides_field: u32,
        stride_field: u32,
        buf: u64,
        db: u64,
    ) -> Vec<u8> {
        let npages = (32usize << log).div_ceil(4096);
        let mut i = inbox(op::CREATE_RQ, 0, PAS_AT + 8 * npages);
        layout::set(&mut i, rqc::CQN.at(CTX_BIT), cqn);
        layout::set(&mut i, rqc::VSD.at(CTX_BIT), 1);
        self.wq_in(&mut i, wq::TYPE_CYCLIC_STRIDING, 5, log, buf, db);
        let w = |f: layout::Field| f.at(CTX_BIT + rqc::WQ_BIT);
        layout::set(&mut i, w(wq::LOG_WQE_NUM_OF_STRIDES), strides_field);
        layout::set(&mut i, w(wq::LOG_WQE_STRIDE_SIZE), stride_field);
        i
    }

    pub(crate) fn sq(&mut self, cqn: u32, log: u32) -> TestSq {
        let tisn = self.tis();
        let (buf, db, data) = (self.mem(64 << log), self.mem(4096), self.mem(2048 << log));
        let i = self.sq_in(cqn, tisn, log, buf.iova(), db.iova());
        let sqn = layout::get(&self.h.cmd(&i, 16).ok(), QN);
        TestSq { sqn, log, buf, db, data, uar: self.uar, pc: 0, bf: 0, bf_step: 0x100 }
    }

    /// A striding RQ of 2^log WQEs, each 2^(9 + strides_field) strides of 2^(6 + stride_field)
    /// bytes.
    pub(crate) fn rq(&mut self, cqn: u32, log: u32, strides_field: u32, stride_field: u32) -> TestRq {
        let (strides, stride) = (512u32 << strides_field, 64u32 << stride_field);
        let (buf, db, data) = (self.mem(32 << log), self.mem(4096), self.mem(((strides * stride) as usize) << log));
        let i = self.rq_in(cqn, log, strides_field, stride_field, buf.iova(), db.iova());
        let rqn = layout::get(&self.h.cmd(&i, 16).ok(), QN);
        TestRq { rqn, log, buf, db, data, strides, stride, pc: 0 }
    }

    pub(crate) fn modify(&mut self, sq: bool, n: u32, from: u32, to: u32) -> Done {
        let mut i = inbox(if sq { op::MODIFY_SQ } else { op::MODIFY_RQ }, 0, PAS_AT);
        layout::set(&mut i, modify_q::CUR_STATE, from);
        layout::set(&mut i, modify_q::QN, n);
        layout::set(&mut i, sqc::STATE.at(CTX_BIT), to);
        self.h.cmd(&i, 16)
    }

    pub(crate) fn destroy(&mut self, opcode: u16, n: u32) -> Done {
        let mut i = inbox(opcode, 0, 16);
        layout::set(&mut i, QN, n);
        self.h.cmd(&i, 16)
    }

    pub(crate) fn tir_in(&self, disp: u32, target: u32) -> Vec<u8> {
        let mut i = inbox(op::CREATE_TIR, 0, tirc::IN_SIZE);
        let c = |f: layout::Field| f.at(CTX_BIT);
        layout::set(&mut i, c(tirc::DISP_TYPE), disp);
        let f = if disp == tirc::DISP_DIRECT { tirc::INLINE_RQN } else { tirc::INDIRECT_TABLE };
        layout::set(&mut i, c(f), target);
        layout::set(&mut i, c(tirc::TRANSPORT_DOMAIN), self.td);
        i
    }

    pub(crate) fn tir(&mut self, rqn: u32) -> u32 {
        let i = self.tir_in(tirc::DISP_DIRECT, rqn);
        layout::get(&self.h.cmd(&i, 16).ok(), QN)
    }

    pub(crate) fn flow_cmd(opcode: u16, table: u32) -> Vec<u8> {
        let len = if opcode == op::CREATE_FLOW_GROUP { flow::FG_IN_SIZE } else { flow::SMALL_IN_SIZE };
        let mut i = inbox(opcode, 0, len);
        layout::set(&mut i, flow::TABLE_TYPE, flow::TABLE_TYPE_NIC_RX);
        layout::set(&mut i, flow::TABLE_ID, table);
        i
    }

    pub(crate) fn flow_table(&mut self, log: u32) -> u32 {
        let mut i = Self::flow_cmd(op::CREATE_FLOW_TABLE, 0);
        layout::set(&mut i, flow::FT_LOG_SIZE.at(flow::FT_CTX_BIT), log);
        layout::get(&self.h.cmd(&i, 16).ok(), flow::OUT_TABLE_ID)
    }

    pub(crate) fn flow_group(&mut self, table: u32, start: u32, end: u32, enable: u32, mask: &[u8]) -> Done {
        let mut i = Self::flow_cmd(op::CREATE_FLOW_GROUP, table);
        layout::set(&mut i, flow::FG_START, start);
        layout::set(&mut i, flow::FG_END, end);
        layout::set(&mut i, flow::FG_CRITERIA_ENABLE, enable);
        i[flow::FG_CRITERIA..flow::FG_CRITERIA + mask.len()].copy_from_slice(mask);
        self.h.cmd(&i, 16)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fte(
        &mut self,
        op_mod: u16,
        table: u32,
        index: u32,
        group: u32,
        value: &[u8],
        action: u32,
        dests: &[(u32, u32)],
    ) -> Done {
        let mut i = inbox(op::SET_FLOW_TABLE_ENTRY, op_mod, flow::FTE_IN_SIZE + flow::DEST_SIZE * dests.len());
        layout::set(&mut i, flow::TABLE_TYPE, flow::TABLE_TYPE_NIC_RX);
        layout::set(&mut i, flow::TABLE_ID, table);
        layout::set(&mut i, flow::FTE_FLOW_INDEX, index);
        let fc = |f: layout::Field| f.at(flow::FTE_CTX as u32 * 8);
        layout::set(&mut i, fc(flow::FC_GROUP_ID), group);
        layout::set(&mut i, fc(flow::FC_ACTION), action);
        layout::set(&mut i, fc(flow::FC_DEST_LIST_SIZE), dests.len() as u32);
        let mv = flow::FTE_CTX + flow::FC_MATCH_VALUE;
        i[mv..mv + value.len()].copy_from_slice(value);
        for (k, &(ty, id)) in dests.iter().enumerate() {
            let d = &mut i[flow::FTE_CTX + flow::FC_DESTINATIONS + flow::DEST_SIZE * k..];
            layout::set(d, flow::DEST_TYPE, ty);
            layout::set(d, flow::DEST_ID, id);
        }
        self.h.cmd(&i, 16)
    }

    pub(crate) fn set_root(&mut self, table: u32) -> Done {
        let i = Self::flow_cmd(op::SET_FLOW_TABLE_ROOT, table);
        self.h.cmd(&i, 16)
    }

    /// SET_FLOW_TABLE_ROOT with `op_mod` 1: disconnect the root.
    pub(crate) fn disconnect_root(&mut self) -> Done {
        let mut i = Self::flow_cmd(op::SET_FLOW_TABLE_ROOT, 0);
        layout::set(&mut i, layout::mbox_in::OP_MOD, 1);
        self.h.cmd(&i, 16)
    }

    /// A root table whose one entry (index 0, a group matching nothing in particular) sends
    /// everything to `tir`. Returns (table, group).
    pub(crate) fn steer_all(&mut self, tir: u32) -> (u32, u32) {
        let t = self.flow_table(4);
        let g = layout::get(&self.flow_group(t, 0, 0, 0, &[]).ok(), flow::OUT_GROUP_ID);
        self.fte(0, t, 0, g, &[], flow::ACTION_FWD_DEST, &[(flow::DEST_TYPE_TIR, tir)]).ok();
        self.set_root(t).ok();
        (t, g)
    }

    /// Posts a SEND WQE: `inline` bytes of the frame in the Ethernet segment, the rest in one
    /// data segment with `lkey`; rings the BlueFlame doorbell. Returns the WQE index.
    pub(crate) fn send(&mut self, sq: &mut TestSq, frame: &[u8], inline: usize, signaled: bool, lkey: u32) -> u32 {
        let idx = sq.pc & 0xffff;
        let inline_units = inline.saturating_sub(2).div_ceil(16);
        let has_data = frame.len() > inline;
        let ds = 2 + inline_units + usize::from(has_data);
        let nbb = (ds * 16).div_ceil(64);
        let mut w = vec![0u8; nbb * 64];
        layout::set32(&mut w, wqe::CTRL_OPMOD_IDX_OPCODE, idx << 8 | u32::from(wqe::OPCODE_SEND));
        layout::set32(&mut w, wqe::CTRL_QPN_DS, sq.sqn << 8 | ds as u32);
        w[wqe::CTRL_FM_CE_SE] = if signaled { wqe::CE_CQ_UPDATE << wqe::CE_SHIFT } else { 0 };
        w[wqe::ETH + wqe::ETH_INLINE_HDR_SZ..][..2].copy_from_slice(&(inline as u16).to_be_bytes());
        let start = wqe::ETH + wqe::ETH_INLINE_HDR_START;
        w[start..start + inline.min(2)].copy_from_slice(&frame[..inline.min(2)]);
        if inline > 2 {
            w[32..32 + inline - 2].copy_from_slice(&frame[2..inline]);
        }
        if has_data {
            let slot = (idx as usize & ((1 << sq.log) - 1)) * 2048;
            poke(&sq.data, slot, &frame[inline..]);
            let d = &mut w[(2 + inline_units) * 16..];
            layout::set32(d, wqe::DATA_BYTE_COUNT, (frame.len() - inline) as u32);
            layout::set32(d, wqe::DATA_LKEY, lkey);
            layout::set64(d, wqe::DATA_ADDR, sq.data.iova() + slot as u64);
        }
        for k in 0..nbb {
            let bb = ((sq.pc + k as u32) & ((1 << sq.log) - 1)) as usize;
            poke(&sq.buf, bb * 64, &w[k * 64..(k + 1) * 64]);
        }
        sq.pc += nbb as u32;
        poke(&sq.db, 4, &(sq.pc & 0xffff).to_be_bytes());
        let off = sq.uar * 4096 + 0x800 + sq.bf;
        sq.bf ^= sq.bf_step;
        self.h.model.write64(off, u64::from_le_bytes(w[..8].try_into().unwrap()));
        idx
    }
}

/// A device ready to receive: RX CQ, a striding RQ (RDY, `post` WQEs posted), a TIR and a
/// catch-all root rule.
pub(crate) struct Rx {
    pub(crate) cq: TestCq,
    pub(crate) rq: TestRq,
    pub(crate) tir: u32,
}

pub(crate) fn rx_side(n: &mut Nic, cq_log: u32, rq_log: u32, strides_field: u32, stride_field: u32, post: u32) -> Rx {
    let cq = n.cq(cq_log, false);
    let mut rq = n.rq(cq.cqn, rq_log, strides_field, stride_field);
    n.modify(false, rq.rqn, 0, 1).ok();
    rq.post(post, n.lkey);
    let tir = n.tir(rq.rqn);
    n.steer_all(tir);
    Rx { cq, rq, tir }
}

/// TX side: a CQ of 2^cq_log entries and a RDY SQ of 2^sq_log WQEBBs.
pub(crate) fn tx_side(n: &mut Nic, cq_log: u32, sq_log: u32) -> (TestCq, TestSq) {
    let cq = n.cq(cq_log, false);
    let sq = n.sq(cq.cqn, sq_log);
    n.modify(true, sq.sqn, 0, 1).ok();
    (cq, sq)
}
