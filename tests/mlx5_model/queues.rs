//! Queue objects: completion queues, send and receive queues (work queues), TIS, TIR, RQT and
//! Q counters, and the commands that create, modify, query and destroy them.

use super::cmd::{fail, Fail};
use super::hca::HcaState;
use super::layout::{
    self, cap_gen, cqc, dbrec, modify_q, q_counter, rqc, rqtc, sqc, status, tirc, tisc, wq, Field, ADAPTER_PAGE, CQN,
    CTX_BIT, PAS_AT, QN,
};
use super::{syndrome as syn, Device};

/// State of a send or receive queue (`MLX5_SQC_STATE_*` / `MLX5_RQC_STATE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    Rst,
    Rdy,
    Err,
}

impl QueueState {
    fn from_field(v: u32) -> Option<QueueState> {
        match v {
            sqc::STATE_RST => Some(QueueState::Rst),
            sqc::STATE_RDY => Some(QueueState::Rdy),
            sqc::STATE_ERR => Some(QueueState::Err),
            _ => None,
        }
    }

    fn field(self) -> u32 {
        match self {
            QueueState::Rst => sqc::STATE_RST,
            QueueState::Rdy => sqc::STATE_RDY,
            QueueState::Err => sqc::STATE_ERR,
        }
    }
}

/// A queue buffer in host memory: the `pas[]` pages of `4 KiB << log_page_size` bytes, the
/// buffer starting `page_offset` 64-byte units into the first.
#[derive(Clone, Debug)]
pub(crate) struct Ring {
    pub(crate) page: u64,
    pub(crate) page_offset: u64,
    pub(crate) pas: Vec<u64>,
}

impl Ring {
    /// The IOVA of byte `off` of the buffer. Entries (64-byte CQEs and WQEBBs, 32-byte RQ WQEs)
    /// never straddle a page: pages are 4 KiB multiples and the offset is in 64-byte units.
    pub(crate) fn iova(&self, off: u64) -> u64 {
        let at = self.page_offset * 64 + off;
        self.pas.get((at / self.page) as usize).copied().unwrap_or(0) + at % self.page
    }
}

/// Pages a buffer of `bytes` spans from `page_offset` (64-byte units) with pages of 4 KiB <<
/// `log_page_size`.
pub(crate) fn pages_for(bytes: u64, log_page_size: u32, page_offset: u32) -> usize {
    let page = ADAPTER_PAGE << log_page_size.min(30);
    (u64::from(page_offset) * 64 + bytes).div_ceil(page) as usize
}

#[derive(Clone, Debug)]
pub(crate) struct Cq {
    pub(crate) log_size: u32,
    pub(crate) uar: u32,
    pub(crate) eqn: u8,
    pub(crate) ring: Ring,
    pub(crate) dbr: u64,
    pub(crate) oi: bool,
    /// CQEs written so far.
    pub(crate) producer: u32,
    /// The consumer index software last published in the doorbell record (read when needed).
    pub(crate) consumer: u32,
    /// Overran: the CQ is in error and gets no more CQEs.
    pub(crate) overrun: bool,
}

/// The `wq` part of an SQ or RQ.
#[derive(Clone, Debug)]
pub(crate) struct Wq {
    pub(crate) wq_type: u32,
    pub(crate) pd: u32,
    pub(crate) uar: u32,
    pub(crate) dbr: u64,
    pub(crate) log_stride: u32,
    pub(crate) log_size: u32,
    pub(crate) ring: Ring,
}

#[derive(Clone, Debug)]
pub(crate) struct Sq {
    pub(crate) state: QueueState,
    pub(crate) cqn: u32,
    pub(crate) tisn: u32,
    pub(crate) min_inline: u8,
    pub(crate) flush_in_error: bool,
    pub(crate) wq: Wq,
    /// WQEBBs the device has read (a free-running counter; the doorbell record holds its low 16
    /// bits).
    pub(crate) consumer: u32,
}

/// Striding RQ geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Striding {
    pub strides: u32,
    pub stride_bytes: u32,
    pub two_byte_shift: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Rq {
    pub(crate) state: QueueState,
    pub(crate) cqn: u32,
    pub(crate) vsd: bool,
    pub(crate) flush_in_error: bool,
    pub(crate) counter_set_id: u8,
    pub(crate) wq: Wq,
    pub(crate) striding: Option<Striding>,
    /// WQEs the device has used up (free-running).
    pub(crate) consumer: u32,
    /// Striding: strides used in the current WQE.
    pub(crate) stride: u32,
    /// Frames steering handed to this RQ.
    pub(crate) steered: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TirDest {
    Rq(u32),
    Rqt(u32),
}

#[derive(Clone, Debug)]
pub(crate) struct Tir {
    pub(crate) td: u32,
    pub(crate) dest: TirDest,
    pub(crate) hash_fn: u32,
}

/// A completion queue as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CqInfo {
    pub cqn: u32,
    pub log_size: u32,
    pub uar: u32,
    pub eqn: u8,
    pub overrun_ignore: bool,
    /// CQEs written so far.
    pub producer: u32,
    /// The consumer index last read from the doorbell record.
    pub consumer: u32,
    pub overrun: bool,
}

/// A send queue as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqInfo {
    pub sqn: u32,
    pub state: QueueState,
    pub cqn: u32,
    pub tisn: u32,
    pub uar: u32,
    pub log_size: u32,
    pub min_inline_mode: u8,
    /// WQEBBs the device has read.
    pub consumer: u32,
}

/// A receive queue as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RqInfo {
    pub rqn: u32,
    pub state: QueueState,
    pub cqn: u32,
    pub log_size: u32,
    pub striding: Option<Striding>,
    pub counter_set_id: u8,
    /// WQEs the device has used up.
    pub consumer: u32,
    /// Strides used in the current WQE.
    pub stride: u32,
    /// Frames steering handed to this RQ (delivered, or dropped for want of a buffer).
    pub steered: u64,
}

/// Q counters the model hands out: ids 1..=MAX_Q_COUNTERS.
const MAX_Q_COUNTERS: usize = 32;
/// The first number queue and steering objects get. CQs, SQs, RQs, TISes, TIRs, RQTs, flow tables and
/// groups share one counter, so numbers are unique across types and a driver that passes a CQN
/// where an SQN belongs is caught.
pub(crate) const FIRST_OBJECT: u32 = 0x100;

fn bad<T>(syndrome: u32) -> Result<T, Fail> {
    fail(status::BAD_PARAM, syndrome)
}

fn no_such<T>() -> Result<T, Fail> {
    fail(status::BAD_RES, syn::NO_SUCH_OBJECT)
}

fn in_use<T>() -> Result<T, Fail> {
    fail(status::BAD_RES_STATE, syn::OBJECT_IN_USE)
}

/// Bytes of the work queue described by the `wq` at `wq_bit` of `i`.
fn wq_bytes(i: &[u8], wq_bit: u32) -> u64 {
    let g = |f: Field| layout::get(i, f.at(wq_bit));
    (1u64 << g(wq::LOG_WQ_SZ).min(30)) << g(wq::LOG_WQ_STRIDE)
}

/// Pages the `pas[]` of the `wq` at `wq_bit` of `i` must list.
pub(crate) fn wq_pages(i: &[u8], wq_bit: u32) -> usize {
    let g = |f: Field| layout::get(i, f.at(wq_bit));
    pages_for(wq_bytes(i, wq_bit), g(wq::LOG_WQ_PG_SZ), g(wq::PAGE_OFFSET))
}

/// Pages the `pas[]` of CREATE_CQ must list.
pub(crate) fn cq_pages(i: &[u8]) -> usize {
    let g = |f: Field| layout::get(i, f.at(cqc::IN_CREATE_BIT));
    pages_for(64u64 << g(cqc::LOG_CQ_SIZE).min(30), g(cqc::LOG_PAGE_SIZE), g(cqc::PAGE_OFFSET))
}

impl Device {
    fn cap(&self, f: Field) -> u32 {
        layout::get(&self.caps_gen_cur, f)
    }

    /// A fresh object number (see [`FIRST_OBJECT`]).
    pub(crate) fn new_object_number(&mut self) -> u32 {
        let n = self.next_obj;
        self.next_obj = (self.next_obj + 1) & 0xff_ffff;
        if self.next_obj < FIRST_OBJECT {
            self.next_obj = FIRST_OBJECT;
        }
        n
    }

    /// Reads the `pas[]` list at `at` for a buffer of `n` pages of `page` bytes: each page
    /// aligned and mapped (the device would fault on it later).
    fn read_pas(&self, i: &[u8], at: usize, n: usize, page: u64) -> Result<Vec<u64>, Fail> {
        let pas: Vec<u64> = (0..n).map(|k| layout::get64(i, at + 8 * k)).collect();
        for &p in &pas {
            if p % page != 0 {
                return bad(syn::PAS_UNALIGNED);
            }
            if !self.iommu.is_mapped(p, page as usize) {
                return bad(syn::PAS_UNMAPPED);
            }
        }
        Ok(pas)
    }

    /// A doorbell record address: 8-byte aligned and mapped.
    fn check_dbr(&self, dbr: u64) -> Result<(), Fail> {
        if dbr % 8 != 0 {
            return bad(syn::DBR_UNALIGNED);
        }
        if !self.iommu.is_mapped(dbr, dbrec::SIZE) {
            return bad(syn::DBR_UNMAPPED);
        }
        Ok(())
    }

    /// Validates the `wq` at `wq_bit` (shared by SQ and RQ; the type and stride checks are the
    /// caller's).
    fn parse_wq(&self, i: &[u8], wq_bit: u32) -> Result<Wq, Fail> {
        let g = |f: Field| layout::get(i, f.at(wq_bit));
        if g(wq::WQ_SIGNATURE) != 0 || g(wq::CD_SLAVE) != 0 {
            return bad(syn::UNSUPPORTED);
        }
        let pd = g(wq::PD);
        if !self.pds.contains(&pd) {
            return no_such();
        }
        let uar = g(wq::UAR_PAGE);
        if !self.uars.contains(&uar) {
            return no_such();
        }
        let dbr = layout::get64(i, (wq_bit / 8) as usize + wq::DBR_ADDR);
        self.check_dbr(dbr)?;
        let log_size = g(wq::LOG_WQ_SZ);
        if log_size > self.cap(cap_gen::LOG_MAX_WQ_SZ) {
            return bad(syn::QUEUE_SIZE);
        }
        let log_pg = g(wq::LOG_WQ_PG_SZ);
        let page_offset = g(wq::PAGE_OFFSET);
        if log_pg > 18 || u64::from(page_offset) * 64 >= ADAPTER_PAGE << log_pg {
            return bad(syn::PAS_UNALIGNED);
        }
        let page = ADAPTER_PAGE << log_pg;
        let pas = self.read_pas(i, PAS_AT, wq_pages(i, wq_bit), page)?;
        Ok(Wq {
            wq_type: g(wq::WQ_TYPE),
            pd,
            uar,
            dbr,
            log_stride: g(wq::LOG_WQ_STRIDE),
            log_size,
            ring: Ring { page, page_offset: u64::from(page_offset), pas },
        })
    }

    /// (minimum input length, minimum output length) of the queue and steering commands.
    pub(crate) fn queue_lengths(&self, opcode: u16, i: &[u8]) -> Option<(usize, usize)> {
        use layout::op;
        const H: usize = 0x10;
        let sq_wq = CTX_BIT + sqc::WQ_BIT;
        Some(match opcode {
            op::CREATE_CQ => (PAS_AT + 8 * cq_pages(i), H),
            op::DESTROY_CQ => (H, H),
            op::QUERY_CQ => (H, PAS_AT),
            op::CREATE_SQ | op::CREATE_RQ => (PAS_AT + 8 * wq_pages(i, sq_wq), H),
            op::MODIFY_SQ | op::MODIFY_RQ => (PAS_AT, H),
            op::QUERY_SQ | op::QUERY_RQ => (H, PAS_AT),
            op::DESTROY_SQ | op::DESTROY_RQ | op::DESTROY_TIS | op::DESTROY_TIR | op::DESTROY_RQT => (H, H),
            op::CREATE_TIS => (tisc::IN_SIZE, H),
            op::CREATE_TIR => (tirc::IN_SIZE, H),
            op::CREATE_RQT => {
                let n = layout::get(i, rqtc::RQT_ACTUAL_SIZE.at(CTX_BIT)) as usize;
                (rqtc::RQ_NUM_AT + 4 * n, H)
            }
            op::ALLOC_Q_COUNTER | op::DEALLOC_Q_COUNTER => (H, H),
            op::QUERY_Q_COUNTER => (q_counter::QUERY_IN_SIZE, q_counter::QUERY_OUT_SIZE),
            _ => return self.steering_lengths(opcode, i),
        })
    }

    /// Executes a queue or steering command (the HCA must be initialized).
    pub(crate) fn queue_dispatch(&mut self, opcode: u16, op_mod: u16, i: &[u8], out: &mut [u8]) -> Result<(), Fail> {
        use layout::op;
        if self.state != HcaState::Initialized {
            return fail(status::BAD_SYS_STATE, syn::BAD_STATE);
        }
        match opcode {
            op::CREATE_CQ => {
                let cqn = self.create_cq(i)?;
                layout::set(out, CQN, cqn);
            }
            op::DESTROY_CQ => {
                let cqn = layout::get(i, CQN);
                if !self.cqs.contains_key(&cqn) {
                    return no_such();
                }
                if self.sqs.values().any(|s| s.cqn == cqn) || self.rqs.values().any(|r| r.cqn == cqn) {
                    return in_use();
                }
                self.cqs.remove(&cqn);
            }
            op::QUERY_CQ => {
                let cqn = layout::get(i, CQN);
                let Some(cq) = self.cqs.get(&cqn) else { return no_such() };
                let c = |f: Field| f.at(cqc::IN_CREATE_BIT);
                let st = if cq.overrun { cqc::STATUS_OVERFLOW } else { cqc::STATUS_OK };
                layout::set(out, c(cqc::STATUS), st);
                layout::set(out, c(cqc::OI), u32::from(cq.oi));
                layout::set(out, c(cqc::LOG_CQ_SIZE), cq.log_size);
                layout::set(out, c(cqc::UAR_PAGE), cq.uar);
                layout::set(out, c(cqc::C_EQN), u32::from(cq.eqn));
                layout::set(out, c(cqc::PRODUCER_COUNTER), cq.producer & 0xff_ffff);
                layout::set(out, c(cqc::CONSUMER_COUNTER), cq.consumer & 0xff_ffff);
                layout::set64(out, (cqc::IN_CREATE_BIT / 8) as usize + cqc::DBR_ADDR, cq.dbr);
            }
            op::CREATE_TIS => {
                let c = |f: Field| layout::get(i, f.at(CTX_BIT));
                let td = c(tisc::TRANSPORT_DOMAIN);
                if !self.tds.contains(&td) {
                    return no_such();
                }
                if c(tisc::STRICT_LAG_TX_PORT_AFFINITY) != 0 || c(tisc::LAG_TX_PORT_AFFINITY) > 1 {
                    return bad(syn::UNSUPPORTED);
                }
                self.limit(self.tises.len(), cap_gen::LOG_MAX_TIS)?;
                let n = self.new_object_number();
                self.tises.insert(n, td);
                layout::set(out, QN, n);
            }
            op::DESTROY_TIS => {
                let n = layout::get(i, QN);
                if !self.tises.contains_key(&n) {
                    return no_such();
                }
                if self.sqs.values().any(|s| s.tisn == n) {
                    return in_use();
                }
                self.tises.remove(&n);
            }
            op::CREATE_SQ => {
                let n = self.create_sq(i)?;
                layout::set(out, QN, n);
            }
            op::CREATE_RQ => {
                let n = self.create_rq(i)?;
                layout::set(out, QN, n);
            }
            op::MODIFY_SQ | op::MODIFY_RQ => self.modify_queue(opcode == op::MODIFY_SQ, i)?,
            op::QUERY_SQ => {
                let Some(sq) = self.sqs.get(&layout::get(i, QN)) else { return no_such() };
                let c = |f: Field| f.at(CTX_BIT);
                layout::set(out, c(sqc::STATE), sq.state.field());
                layout::set(out, c(sqc::CQN), sq.cqn);
                layout::set(out, c(sqc::TIS_LST_SZ), 1);
                layout::set(out, c(sqc::TIS_NUM_0), sq.tisn);
                layout::set(out, c(sqc::MIN_WQE_INLINE_MODE), u32::from(sq.min_inline));
                layout::set(out, c(sqc::FLUSH_IN_ERROR_EN), u32::from(sq.flush_in_error));
                query_wq(out, &sq.wq, sq.consumer);
            }
            op::QUERY_RQ => {
                let Some(rq) = self.rqs.get(&layout::get(i, QN)) else { return no_such() };
                let c = |f: Field| f.at(CTX_BIT);
                layout::set(out, c(rqc::STATE), rq.state.field());
                layout::set(out, c(rqc::CQN), rq.cqn);
                layout::set(out, c(rqc::VSD), u32::from(rq.vsd));
                layout::set(out, c(rqc::FLUSH_IN_ERROR_EN), u32::from(rq.flush_in_error));
                layout::set(out, c(rqc::COUNTER_SET_ID), u32::from(rq.counter_set_id));
                query_wq(out, &rq.wq, rq.consumer);
                if let Some(s) = rq.striding {
                    let w = |f: Field| f.at(CTX_BIT + rqc::WQ_BIT);
                    let strides = s.strides.trailing_zeros() - wq::LOG_NUM_STRIDES_BASE;
                    layout::set(out, w(wq::LOG_WQE_NUM_OF_STRIDES), strides);
                    let bytes = s.stride_bytes.trailing_zeros() - wq::LOG_STRIDE_SZ_BASE;
                    layout::set(out, w(wq::LOG_WQE_STRIDE_SIZE), bytes);
                    layout::set(out, w(wq::TWO_BYTE_SHIFT_EN), u32::from(s.two_byte_shift));
                }
            }
            op::DESTROY_SQ => {
                let n = layout::get(i, QN);
                if self.sqs.remove(&n).is_none() {
                    return no_such();
                }
                self.pending_tx.retain(|&(s, _)| s != n);
            }
            op::DESTROY_RQ => {
                let n = layout::get(i, QN);
                if !self.rqs.contains_key(&n) {
                    return no_such();
                }
                let by_tir = self.tirs.values().any(|t| t.dest == TirDest::Rq(n));
                if by_tir || self.rqts.values().any(|l| l.contains(&n)) {
                    return in_use();
                }
                self.rqs.remove(&n);
            }
            op::CREATE_TIR => {
                let n = self.create_tir(i)?;
                layout::set(out, QN, n);
            }
            op::DESTROY_TIR => {
                let n = layout::get(i, QN);
                if !self.tirs.contains_key(&n) {
                    return no_such();
                }
                if self.tir_in_use(n) {
                    return in_use();
                }
                self.tirs.remove(&n);
            }
            op::CREATE_RQT => {
                let c = |f: Field| layout::get(i, f.at(CTX_BIT));
                let (max, actual) = (c(rqtc::RQT_MAX_SIZE), c(rqtc::RQT_ACTUAL_SIZE));
                if actual == 0 || actual > max || max > 1 << self.cap(cap_gen::LOG_MAX_RQT_SIZE) {
                    return bad(syn::QUEUE_SIZE);
                }
                let list: Vec<u32> =
                    (0..actual as usize).map(|k| layout::get32(i, rqtc::RQ_NUM_AT + 4 * k) & 0xff_ffff).collect();
                if list.iter().any(|r| !self.rqs.contains_key(r)) {
                    return no_such();
                }
                self.limit(self.rqts.len(), cap_gen::LOG_MAX_RQT)?;
                let n = self.new_object_number();
                self.rqts.insert(n, list);
                layout::set(out, QN, n);
            }
            op::DESTROY_RQT => {
                let n = layout::get(i, QN);
                if !self.rqts.contains_key(&n) {
                    return no_such();
                }
                if self.tirs.values().any(|t| t.dest == TirDest::Rqt(n)) {
                    return in_use();
                }
                self.rqts.remove(&n);
            }
            op::ALLOC_Q_COUNTER => {
                let Some(id) = (1..=MAX_Q_COUNTERS as u8).find(|k| !self.q_counters.contains_key(k)) else {
                    return fail(status::LIM, syn::LIMIT);
                };
                self.q_counters.insert(id, 0);
                layout::set(out, q_counter::ALLOC_ID, u32::from(id));
            }
            op::DEALLOC_Q_COUNTER => {
                let id = layout::get(i, q_counter::ALLOC_ID) as u8;
                if !self.q_counters.contains_key(&id) {
                    return no_such();
                }
                if self.rqs.values().any(|r| r.counter_set_id == id) {
                    return in_use();
                }
                self.q_counters.remove(&id);
            }
            op::QUERY_Q_COUNTER => {
                let id = layout::get(i, q_counter::QUERY_ID) as u8;
                let clear = layout::get(i, q_counter::QUERY_CLEAR) != 0;
                let Some(c) = self.q_counters.get_mut(&id) else { return no_such() };
                layout::set(out, q_counter::OUT_OF_BUFFER, *c);
                if clear {
                    *c = 0;
                }
            }
            _ => return self.steering_dispatch(opcode, op_mod, i, out),
        }
        Ok(())
    }

    /// LIM when `count` objects already reach `1 << cap`.
    fn limit(&self, count: usize, cap: Field) -> Result<(), Fail> {
        if count as u64 >= 1u64 << self.cap(cap) {
            return fail(status::LIM, syn::LIMIT);
        }
        Ok(())
    }

    fn create_cq(&mut self, i: &[u8]) -> Result<u32, Fail> {
        let c = |f: Field| layout::get(i, f.at(cqc::IN_CREATE_BIT));
        if c(cqc::STATUS) != 0 || c(cqc::ST) != 0 || c(cqc::CONSUMER_COUNTER) != 0 || c(cqc::PRODUCER_COUNTER) != 0 {
            return bad(syn::RESERVED_SET);
        }
        if c(cqc::CQE_SZ) != 0 {
            return bad(syn::CQE_SIZE);
        }
        if c(cqc::CQE_COMP_EN) != 0 || c(cqc::CC) != 0 {
            return bad(syn::UNSUPPORTED);
        }
        let log_size = c(cqc::LOG_CQ_SIZE);
        if log_size > self.cap(cap_gen::LOG_MAX_CQ_SZ) {
            return bad(syn::QUEUE_SIZE);
        }
        let uar = c(cqc::UAR_PAGE);
        let eqn = c(cqc::C_EQN);
        if !self.uars.contains(&uar) || eqn > 0xff || !self.eqs.contains_key(&(eqn as u8)) {
            return no_such();
        }
        let log_pg = c(cqc::LOG_PAGE_SIZE);
        let page_offset = c(cqc::PAGE_OFFSET);
        if log_pg > 18 || u64::from(page_offset) * 64 >= ADAPTER_PAGE << log_pg {
            return bad(syn::PAS_UNALIGNED);
        }
        let page = ADAPTER_PAGE << log_pg;
        let pas = self.read_pas(i, PAS_AT, cq_pages(i), page)?;
        let dbr = layout::get64(i, (cqc::IN_CREATE_BIT / 8) as usize + cqc::DBR_ADDR);
        self.check_dbr(dbr)?;
        self.limit(self.cqs.len(), cap_gen::LOG_MAX_CQ)?;
        let cqn = self.new_object_number();
        let ring = Ring { page, page_offset: u64::from(page_offset), pas };
        let cq = Cq {
            log_size,
            uar,
            eqn: eqn as u8,
            ring,
            dbr,
            oi: c(cqc::OI) != 0,
            producer: 0,
            consumer: 0,
            overrun: false,
        };
        self.cqs.insert(cqn, cq);
        Ok(cqn)
    }

    /// The smallest `min_wqe_inline_mode` an SQ may have: what the device requires.
    pub(crate) fn required_inline_mode(&self) -> u8 {
        use layout::cap_eth;
        match layout::get(&self.caps_eth, cap_eth::WQE_INLINE_MODE) {
            // MLX5_CAP_INLINE_MODE_L2
            0 => 1,
            // MLX5_CAP_INLINE_MODE_VPORT_CONTEXT
            1 => self.vport_min_inline,
            // MLX5_CAP_INLINE_MODE_NOT_REQUIRED
            _ => 0,
        }
    }

    fn create_sq(&mut self, i: &[u8]) -> Result<u32, Fail> {
        let c = |f: Field| layout::get(i, f.at(CTX_BIT));
        if c(sqc::STATE) != sqc::STATE_RST {
            return bad(syn::BAD_QUEUE_STATE);
        }
        if c(sqc::HAIRPIN) != 0 || c(sqc::CD_MASTER) != 0 || c(sqc::REG_UMR) != 0 {
            return bad(syn::UNSUPPORTED);
        }
        let cqn = c(sqc::CQN);
        if !self.cqs.contains_key(&cqn) {
            return no_such();
        }
        if c(sqc::TIS_LST_SZ) != 1 {
            return bad(syn::TIS_LIST);
        }
        let tisn = c(sqc::TIS_NUM_0);
        if !self.tises.contains_key(&tisn) {
            return no_such();
        }
        let min_inline = c(sqc::MIN_WQE_INLINE_MODE) as u8;
        if min_inline > 3 || min_inline < self.required_inline_mode() {
            return bad(syn::INLINE_MODE);
        }
        let wq_bit = CTX_BIT + sqc::WQ_BIT;
        let w = self.parse_wq(i, wq_bit)?;
        if w.wq_type != wq::TYPE_CYCLIC {
            return bad(syn::WQ_TYPE);
        }
        if w.log_stride != 6 {
            return bad(syn::WQ_STRIDE);
        }
        self.limit(self.sqs.len(), cap_gen::LOG_MAX_SQ)?;
        let n = self.new_object_number();
        let sq = Sq {
            state: QueueState::Rst,
            cqn,
            tisn,
            min_inline,
            flush_in_error: c(sqc::FLUSH_IN_ERROR_EN) != 0,
            wq: w,
            consumer: 0,
        };
        self.sqs.insert(n, sq);
        Ok(n)
    }

    fn create_rq(&mut self, i: &[u8]) -> Result<u32, Fail> {
        let c = |f: Field| layout::get(i, f.at(CTX_BIT));
        if c(rqc::STATE) != sqc::STATE_RST {
            return bad(syn::BAD_QUEUE_STATE);
        }
        if c(rqc::MEM_RQ_TYPE) != 0 || c(rqc::HAIRPIN) != 0 {
            return bad(syn::UNSUPPORTED);
        }
        let cqn = c(rqc::CQN);
        if !self.cqs.contains_key(&cqn) {
            return no_such();
        }
        let counter = c(rqc::COUNTER_SET_ID) as u8;
        if counter != 0 && !self.q_counters.contains_key(&counter) {
            return no_such();
        }
        let wq_bit = CTX_BIT + rqc::WQ_BIT;
        let w = self.parse_wq(i, wq_bit)?;
        let g = |f: Field| layout::get(i, f.at(wq_bit));
        let striding = match w.wq_type {
            wq::TYPE_CYCLIC => {
                // One WQE = a scatter list of 16-byte data segments.
                if !(4..=10).contains(&w.log_stride) {
                    return bad(syn::WQ_STRIDE);
                }
                None
            }
            wq::TYPE_CYCLIC_STRIDING => {
                if self.cap(cap_gen::STRIDING_RQ) == 0 {
                    return bad(syn::WQ_TYPE);
                }
                // A 16-byte next segment and one 16-byte data segment.
                if w.log_stride != 5 {
                    return bad(syn::WQ_STRIDE);
                }
                let log_strides = g(wq::LOG_WQE_NUM_OF_STRIDES) + wq::LOG_NUM_STRIDES_BASE;
                let log_bytes = g(wq::LOG_WQE_STRIDE_SIZE) + wq::LOG_STRIDE_SZ_BASE;
                if log_strides > 16 {
                    return bad(syn::STRIDES);
                }
                let (lo, hi) = (self.cap(cap_gen::LOG_MIN_STRIDE_SZ_RQ), self.cap(cap_gen::LOG_MAX_STRIDE_SZ_RQ));
                if !(lo..=hi).contains(&log_bytes) {
                    return bad(syn::STRIDES);
                }
                Some(Striding {
                    strides: 1 << log_strides,
                    stride_bytes: 1 << log_bytes,
                    two_byte_shift: g(wq::TWO_BYTE_SHIFT_EN) != 0,
                })
            }
            _ => return bad(syn::WQ_TYPE),
        };
        self.limit(self.rqs.len(), cap_gen::LOG_MAX_RQ)?;
        let n = self.new_object_number();
        let rq = Rq {
            state: QueueState::Rst,
            cqn,
            vsd: c(rqc::VSD) != 0,
            flush_in_error: c(rqc::FLUSH_IN_ERROR_EN) != 0,
            counter_set_id: counter,
            wq: w,
            striding,
            consumer: 0,
            stride: 0,
            steered: 0,
        };
        self.rqs.insert(n, rq);
        Ok(n)
    }

    /// MODIFY_SQ / MODIFY_RQ: `sq_state` / `rq_state` must be the queue's current state
    /// (BAD_RES_STATE otherwise: the queue is not in the state the command expects); the new
    /// state (the context's `state`) must be reachable from it: RST→RDY, RDY→ERR, RDY→RST,
    /// ERR→RST, RDY→RDY (other fields only) (BAD_PARAM otherwise).
    fn modify_queue(&mut self, sq: bool, i: &[u8]) -> Result<(), Fail> {
        let n = layout::get(i, modify_q::QN);
        let cur = if sq { self.sqs.get(&n).map(|s| s.state) } else { self.rqs.get(&n).map(|r| r.state) };
        let Some(cur) = cur else { return no_such() };
        let claimed = QueueState::from_field(layout::get(i, modify_q::CUR_STATE));
        if claimed != Some(cur) {
            return fail(status::BAD_RES_STATE, syn::BAD_QUEUE_STATE);
        }
        let state_field = if sq { sqc::STATE } else { rqc::STATE };
        let Some(new) = QueueState::from_field(layout::get(i, state_field.at(CTX_BIT))) else {
            return bad(syn::BAD_QUEUE_STATE);
        };
        use QueueState::{Err, Rdy, Rst};
        if !matches!((cur, new), (Rst, Rdy) | (Rdy, Err) | (Rdy, Rst) | (Err, Rst) | (Rdy, Rdy)) {
            return bad(syn::BAD_QUEUE_STATE);
        }
        if sq {
            let Some(s) = self.sqs.get_mut(&n) else { return no_such() };
            s.state = new;
            if new == Rst {
                // The WQE counter starts over (the driver resets its producer too).
                s.consumer = 0;
                self.pending_tx.retain(|&(q, _)| q != n);
            }
        } else {
            let Some(r) = self.rqs.get_mut(&n) else { return no_such() };
            r.state = new;
            if new == Rst {
                r.consumer = 0;
                r.stride = 0;
            }
        }
        Ok(())
    }

    fn create_tir(&mut self, i: &[u8]) -> Result<u32, Fail> {
        let c = |f: Field| layout::get(i, f.at(CTX_BIT));
        let td = c(tirc::TRANSPORT_DOMAIN);
        if !self.tds.contains(&td) {
            return no_such();
        }
        if c(tirc::LRO_ENABLE_MASK) != 0 {
            return bad(syn::UNSUPPORTED);
        }
        if c(tirc::TUNNELED_OFFLOAD_EN) != 0 {
            return bad(syn::UNSUPPORTED);
        }
        let dest = match c(tirc::DISP_TYPE) {
            tirc::DISP_DIRECT => {
                let rqn = c(tirc::INLINE_RQN);
                if !self.rqs.contains_key(&rqn) {
                    return no_such();
                }
                TirDest::Rq(rqn)
            }
            tirc::DISP_INDIRECT => {
                let rqtn = c(tirc::INDIRECT_TABLE);
                if !self.rqts.contains_key(&rqtn) {
                    return no_such();
                }
                TirDest::Rqt(rqtn)
            }
            _ => return bad(syn::UNSUPPORTED),
        };
        self.limit(self.tirs.len(), cap_gen::LOG_MAX_TIR)?;
        let n = self.new_object_number();
        self.tirs.insert(n, Tir { td, dest, hash_fn: c(tirc::RX_HASH_FN) });
        Ok(n)
    }

    /// Queue and steering objects for the teardown report.
    pub(crate) fn queue_objects(&self, v: &mut Vec<String>) {
        v.extend(self.cqs.keys().map(|n| format!("CQ {n:#x}")));
        v.extend(self.sqs.keys().map(|n| format!("SQ {n:#x}")));
        v.extend(self.rqs.keys().map(|n| format!("RQ {n:#x}")));
        v.extend(self.tises.keys().map(|n| format!("TIS {n:#x}")));
        v.extend(self.tirs.keys().map(|n| format!("TIR {n:#x}")));
        v.extend(self.rqts.keys().map(|n| format!("RQT {n:#x}")));
        v.extend(self.q_counters.keys().map(|n| format!("Q counter {n:#x}")));
        self.steering_objects(v);
    }

    /// TEARDOWN_HCA: firmware frees every queue and steering object.
    pub(crate) fn clear_queues(&mut self) {
        self.cqs.clear();
        self.sqs.clear();
        self.rqs.clear();
        self.tises.clear();
        self.tirs.clear();
        self.rqts.clear();
        self.q_counters.clear();
        self.pending_tx.clear();
        self.clear_steering();
    }

    /// Whether an HCA-level object (UAR, EQ, PD, transport domain) is used by a queue or steering object (DEALLOC_UAR, DESTROY_EQ, DEALLOC_PD,
    /// DEALLOC_TRANSPORT_DOMAIN refuse with BAD_RES_STATE).
    pub(crate) fn uar_in_use(&self, u: u32) -> bool {
        self.cqs.values().any(|c| c.uar == u)
            || self.sqs.values().any(|s| s.wq.uar == u)
            || self.rqs.values().any(|r| r.wq.uar == u)
    }

    pub(crate) fn eq_in_use(&self, eqn: u8) -> bool {
        self.cqs.values().any(|c| c.eqn == eqn)
    }

    pub(crate) fn pd_in_use(&self, pd: u32) -> bool {
        self.sqs.values().any(|s| s.wq.pd == pd) || self.rqs.values().any(|r| r.wq.pd == pd)
    }

    pub(crate) fn td_in_use(&self, td: u32) -> bool {
        self.tises.values().any(|&t| t == td) || self.tirs.values().any(|t| t.td == td)
    }

    pub(crate) fn cq_info(&self, cqn: u32) -> Option<CqInfo> {
        self.cqs.get(&cqn).map(|c| CqInfo {
            cqn,
            log_size: c.log_size,
            uar: c.uar,
            eqn: c.eqn,
            overrun_ignore: c.oi,
            producer: c.producer,
            consumer: c.consumer,
            overrun: c.overrun,
        })
    }

    pub(crate) fn sq_info(&self, sqn: u32) -> Option<SqInfo> {
        self.sqs.get(&sqn).map(|s| SqInfo {
            sqn,
            state: s.state,
            cqn: s.cqn,
            tisn: s.tisn,
            uar: s.wq.uar,
            log_size: s.wq.log_size,
            min_inline_mode: s.min_inline,
            consumer: s.consumer,
        })
    }

    pub(crate) fn rq_info(&self, rqn: u32) -> Option<RqInfo> {
        self.rqs.get(&rqn).map(|r| RqInfo {
            rqn,
            state: r.state,
            cqn: r.cqn,
            log_size: r.wq.log_size,
            striding: r.striding,
            counter_set_id: r.counter_set_id,
            consumer: r.consumer,
            stride: r.stride,
            steered: r.steered,
        })
    }
}

/// The `wq` fields QUERY_SQ / QUERY_RQ report.
fn query_wq(out: &mut [u8], w: &Wq, hw_counter: u32) {
    let wq_bit = CTX_BIT + sqc::WQ_BIT;
    let f = |fld: Field| fld.at(wq_bit);
    layout::set(out, f(wq::WQ_TYPE), w.wq_type);
    layout::set(out, f(wq::PD), w.pd);
    layout::set(out, f(wq::UAR_PAGE), w.uar);
    layout::set64(out, (wq_bit / 8) as usize + wq::DBR_ADDR, w.dbr);
    layout::set(out, f(wq::HW_COUNTER), hw_counter);
    layout::set(out, f(wq::LOG_WQ_STRIDE), w.log_stride);
    layout::set(out, f(wq::LOG_WQ_PG_SZ), (w.ring.page / ADAPTER_PAGE).trailing_zeros());
    layout::set(out, f(wq::LOG_WQ_SZ), w.log_size);
}
