//! The datapath: send doorbells and send WQEs, CQE writing, receive into striding and cyclic
//! RQs, and the test hooks that bend it (CQE corruption, paused transmit).

use super::layout::{self, cqe, dbrec, event, lyr_2_4, uar, wqe};
use super::queues::{QueueState, Ring, Striding};
use super::{steering, Device, ViolationKind};
use std::sync::atomic::{fence, Ordering};

/// What the device did on its datapath: counters tests assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Send doorbells (BlueFlame writes) accepted.
    pub tx_doorbells: u64,
    /// Send doorbells rung at the first and at the second BlueFlame buffer.
    pub tx_doorbells_per_buffer: [u64; 2],
    /// Send doorbells for an SQ in the error state (ignored, as the device does).
    pub tx_doorbells_in_error: u64,
    /// Send WQEs read and executed successfully (NOPs included).
    pub tx_wqes: u64,
    /// Frames put on the wire.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Send completions (REQ CQEs) written.
    pub tx_cqes: u64,
    /// Send error CQEs (REQ_ERR) written.
    pub tx_error_cqes: u64,
    /// Frames sent while no peer was connected (discarded).
    pub tx_discarded: u64,
    /// Frames written into an RQ with a CQE.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Filler CQEs written (striding RQ).
    pub rx_filler_cqes: u64,
    /// Frames dropped for lack of a posted receive WQE (or too long for one).
    pub rx_out_of_buffer: u64,
    /// Frames no steering rule took: no root table, no match, a drop rule, an RQ not ready.
    pub rx_steering_drops: u64,
    /// Frames the MAC filter refused.
    pub rx_mac_drops: u64,
    /// Frames arriving while the HCA is not initialized, or shorter than 14 bytes or longer
    /// than the MTU allows.
    pub rx_port_drops: u64,
    /// Receive error CQEs (RESP_ERR) written by the device itself (not by corruption hooks).
    pub rx_error_cqes: u64,
    /// CQs that overran (each goes to error once).
    pub cq_overruns: u64,
    /// CQEs not written because their CQ was in error.
    pub cqes_lost: u64,
}

/// What [`Mlx5Model::corrupt_next_rx_cqe`](super::Mlx5Model::corrupt_next_rx_cqe) does to the
/// next packet CQE the device writes into an RQ's CQ (fillers are left alone). The device's
/// own state advances as for the correct CQE (strides are consumed, the RQ stays ready).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CqeCorruption {
    /// Opcode `MLX5_CQE_RESP_WR_IMM` (0x1): an RDMA-write-with-immediate completion, which an
    /// Ethernet RQ never gets.
    BadOpcode,
    /// A RESP_ERR (0xE) CQE with this syndrome (`mlx5_err_cqe`), `wqe_counter` = the stride
    /// (striding) or WQE index the packet would have used.
    ErrorCqe { syndrome: u8 },
    /// `wqe_counter` = the WQE's stride count: one past its last stride.
    StrideOutOfRange,
    /// `byte_cnt`'s length = the bytes of the strides it claims, plus one.
    LengthBeyondStrides,
    /// `wqe_id` one past the WQE actually used (modulo the ring).
    WrongWqeId,
    /// The top bit of the 15-bit consumed-strides count set (`byte_cnt` bit 30): the CQE claims
    /// 16,384 more strides than the packet took. A reader that keeps only bits 29:16 misses it.
    StrideCountTopBit,
}

/// Vendor syndromes (`mlx5_err_cqe.vendor_err_synd`) of the model's own error CQEs: which check
/// failed. Real firmware's are opaque.
pub mod vendor_syndrome {
    pub const WQE_INDEX: u8 = 0x01;
    pub const WQE_QPN: u8 = 0x02;
    pub const OPCODE: u8 = 0x03;
    pub const DS: u8 = 0x04;
    pub const INLINE: u8 = 0x05;
    pub const LKEY: u8 = 0x06;
    pub const IOMMU: u8 = 0x07;
    pub const LENGTH: u8 = 0x08;
    pub const RQ_WQE: u8 = 0x09;
}

/// An error found in a WQE: CQE syndrome, vendor syndrome, what.
struct WqeError(u8, u8, String);

/// The frame a send WQE describes, or why not.
type SendResult = Result<Option<Vec<u8>>, WqeError>;

/// Stores the low 16 bits of `v` big-endian at byte `o`.
fn set16(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 2].copy_from_slice(&(v as u16).to_be_bytes());
}

fn be16(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 2).map_or(0, |x| u32::from(u16::from_be_bytes([x[0], x[1]])))
}

/// Bytes a WQE must inline for `mode` (`MLX5_INLINE_MODE_*`): L2: 18
/// (`MLX5_ETH_L2_INLINE_HEADER_SIZE`); IP: through the IP header; TCP/UDP: through the L4
/// header (each falling back to the lower mode when the frame has no such header); never more
/// than the frame.
fn inline_needed(mode: u8, frame: &[u8]) -> usize {
    if mode == 0 {
        return 0;
    }
    let l2 = wqe::L2_INLINE_HEADER_SIZE.min(frame.len());
    if mode == 1 {
        return l2;
    }
    let (l3, ethertype) = if be16(frame, 12) == 0x8100 { (18, be16(frame, 16)) } else { (14, be16(frame, 12)) };
    let (l4, proto) = match ethertype {
        0x0800 if frame.len() > l3 + 9 => (l3 + usize::from(frame[l3] & 0xf) * 4, frame[l3 + 9]),
        0x86dd if frame.len() > l3 + 6 => (l3 + 40, frame[l3 + 6]),
        _ => return l2,
    };
    let need = if mode == 2 {
        l4
    } else {
        match proto {
            6 if frame.len() > l4 + 12 => l4 + usize::from(frame[l4 + 12] >> 4) * 4,
            17 => l4 + 8,
            _ => l4,
        }
    };
    need.max(l2).min(frame.len())
}

/// The one's-complement sum of `b` added to `sum`.
fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        sum += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// `hds_ip_ext` checksum flags and `l4_l3_hdr_type` of a (VLAN-stripped or not) frame: L3 OK
/// for an IPv4 header whose checksum verifies or any IPv6 header; L4 OK for a TCP / UDP
/// segment (of an unfragmented IPv4 packet) whose checksum verifies (UDP: or is zero).
fn rx_flags(frame: &[u8]) -> (u8, u8) {
    let vlan = be16(frame, 12) == 0x8100;
    let (l3, ethertype) = if vlan { (18, be16(frame, 16)) } else { (14, be16(frame, 12)) };
    let mut ok = cqe::L2_OK;
    let mut types = u8::from(vlan);
    if ethertype == 0x86dd && frame.len() >= l3 + 40 {
        ok |= cqe::L3_OK;
        types |= 1 << 2;
        let l4 = match frame[l3 + 6] {
            6 => 1,
            17 => 2,
            _ => 0,
        };
        return (ok, types | l4 << 4);
    }
    if ethertype != 0x0800 || frame.len() < l3 + 20 {
        return (ok, types);
    }
    types |= 2 << 2;
    let ihl = usize::from(frame[l3] & 0xf) * 4;
    let total = (be16(frame, l3 + 2) as usize).min(frame.len() - l3);
    if ihl < 20 || frame.len() < l3 + ihl || total < ihl {
        return (ok, types);
    }
    if csum_fold(csum_add(0, &frame[l3..l3 + ihl])) == 0xffff {
        ok |= cqe::L3_OK;
    }
    let proto = frame[l3 + 9];
    let fragmented = be16(frame, l3 + 6) & 0x3fff != 0;
    let seg = &frame[l3 + ihl..l3 + total];
    let l4_type = match proto {
        6 if seg.len() >= 20 => 1,
        17 if seg.len() >= 8 => 2,
        _ => return (ok, types),
    };
    types |= l4_type << 4;
    if !fragmented {
        let mut sum = csum_add(0, &frame[l3 + 12..l3 + 20]);
        sum += u32::from(proto) + seg.len() as u32;
        let zero_udp = proto == 17 && be16(seg, 6) == 0;
        if zero_udp || csum_fold(csum_add(sum, seg)) == 0xffff {
            ok |= cqe::L4_OK;
        }
    }
    (ok, types)
}

impl Device {
    /// The longest frame (without FCS) the port carries: the hardware MTU (the smaller of the
    /// vport context's and PMTU's, both counting 14 bytes of Ethernet header, 4 of VLAN tag and
    /// 4 of FCS) less 22 is the L3 MTU; a frame may hold L3 MTU + 14 bytes, + 4 when
    /// VLAN-tagged.
    pub(crate) fn max_frame(&self, frame: &[u8]) -> usize {
        let hw = usize::from(self.vport_mtu.min(self.port_admin_mtu));
        let vlan = if be16(frame, 12) == 0x8100 { 4 } else { 0 };
        hw.saturating_sub(22) + 14 + vlan
    }

    /// A 32-bit write to a BlueFlame buffer (`in_page` in 0x800..0xA00). Its first 8 bytes are
    /// the send doorbell, which must arrive as one 64-bit store ([`Device::bf_write64`]): a
    /// half is a [`ViolationKind::SplitDoorbell`] (the two halves, low address first, still
    /// ring it, as a device given a 32-bit host's locked pair of stores would). The rest of the
    /// buffer (a BlueFlame copy of the WQE) is ignored.
    pub(crate) fn bf_write(&mut self, index: u32, in_page: u32, be: u32) {
        let Some((base, _)) = self.bf_buffer(in_page) else { return };
        if in_page - base >= 8 {
            self.bf_copy_write(index, base, in_page, 4);
            return;
        }
        {
            self.violation(
                ViolationKind::SplitDoorbell,
                format!(
                    "UAR {index:#x} BlueFlame {base:#x}: 32-bit write at byte {}: the doorbell is one 64-bit store",
                    in_page - base
                ),
            );
        }
        match in_page - base {
            0 => self.bf_low = Some((index, base, be)),
            4 => match self.bf_low.take() {
                Some((u, b, w0)) if u == index && b == base => self.ring_send_doorbell(index, base, w0, be),
                _ => self.violation(
                    ViolationKind::SendDoorbell,
                    format!("UAR {index:#x} BlueFlame {base:#x}: high word without the low word first"),
                ),
            },
            _ => {}
        }
    }

    /// A 64-bit write to a BlueFlame buffer: at its start, the send doorbell, whole; further
    /// in, part of a BlueFlame copy of the WQE (ignored: the device reads the WQE from memory).
    pub(crate) fn bf_write64(&mut self, index: u32, in_page: u32, w0: u32, w1: u32) {
        let Some((base, _)) = self.bf_buffer(in_page) else { return };
        if in_page == base {
            self.bf_low = None;
            self.ring_send_doorbell(index, base, w0, w1);
        } else {
            self.bf_copy_write(index, base, in_page, 8);
        }
    }

    /// Counts the doorbell per BlueFlame buffer, opens the buffer for a BlueFlame copy, rings.
    fn ring_send_doorbell(&mut self, index: u32, base: u32, w0: u32, w1: u32) {
        let k = usize::from(base != uar::BF_0);
        self.counters.tx_doorbells_per_buffer[k] += 1;
        self.bf_copy = Some((index, base, base + 8));
        self.send_doorbell(index, w0, w1);
    }

    /// `len` bytes of a BlueFlame copy at `in_page`: accepted (and ignored) only where the
    /// copy after the last doorbell to this buffer continues; anything else is a write to the
    /// middle of a BlueFlame buffer the device does not expect: a doorbell at the wrong offset.
    fn bf_copy_write(&mut self, index: u32, base: u32, in_page: u32, len: u32) {
        match self.bf_copy {
            Some((u, b, next)) if u == index && b == base && next == in_page => {
                self.bf_copy = Some((u, b, next + len));
            }
            _ => {
                self.bf_copy = None;
                self.violation(
                    ViolationKind::SendDoorbell,
                    format!(
                        "UAR {index:#x}: write at byte {:#x} of the BlueFlame buffer at {base:#x} (of {} bytes), \
                         continuing no doorbell: a doorbell at the wrong offset?",
                        in_page - base,
                        self.bf_half()
                    ),
                );
            }
        }
    }

    /// The send doorbell: `w0` = `opmod_idx_opcode`, `w1` = `qpn_ds` of the last posted WQE.
    fn send_doorbell(&mut self, index: u32, w0: u32, w1: u32) {
        let sqn = w1 >> 8;
        let idx = (w0 >> 8) & 0xffff;
        let Some(sq) = self.sqs.get(&sqn) else {
            self.violation(ViolationKind::SendDoorbell, format!("send doorbell for SQ {sqn:#x}, which does not exist"));
            return;
        };
        if sq.wq.uar != index {
            let u = sq.wq.uar;
            self.violation(
                ViolationKind::SendDoorbell,
                format!("SQ {sqn:#x} doorbell rung on UAR {index:#x}, created on UAR {u:#x}"),
            );
            return;
        }
        match sq.state {
            QueueState::Rdy => {}
            QueueState::Err => {
                self.counters.tx_doorbells_in_error += 1;
                return;
            }
            QueueState::Rst => {
                self.violation(ViolationKind::SendDoorbell, format!("send doorbell for SQ {sqn:#x} in RST"));
                return;
            }
        }
        self.counters.tx_doorbells += 1;
        if self.tx_paused {
            self.pending_tx.push((sqn, idx as u16));
            return;
        }
        self.process_sq(sqn, idx as u16);
    }

    /// Reads a big-endian doorbell record word; `None` (and a violation) on an IOMMU fault.
    fn read_dbrec(&mut self, iova: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.dma_read(iova, &mut b).then(|| u32::from_be_bytes(b))
    }

    /// Executes the SQ's WQEs from the device's consumer counter up to the doorbell record's
    /// producer counter; `idx` is the WQE index the doorbell named.
    pub(crate) fn process_sq(&mut self, sqn: u32, idx: u16) {
        let Some(sq) = self.sqs.get(&sqn) else { return };
        if sq.state != QueueState::Rdy {
            return;
        }
        let (dbr, log_size, ring, consumer) = (sq.wq.dbr, sq.wq.log_size, sq.wq.ring.clone(), sq.consumer);
        let Some(word) = self.read_dbrec(dbr + dbrec::SND) else { return };
        let producer = word & 0xffff;
        let size = 1u32 << log_size;
        let outstanding = producer.wrapping_sub(consumer) & 0xffff;
        if outstanding > size {
            self.violation(
                ViolationKind::DoorbellRecord,
                format!("SQ {sqn:#x} doorbell record {producer:#x} is {outstanding} WQEBBs past the device's {consumer:#x}, ring of {size}"),
            );
            return;
        }
        if (producer.wrapping_sub(1).wrapping_sub(u32::from(idx)) & 0xffff) >= 0x8000 {
            self.violation(
                ViolationKind::DoorbellRecord,
                format!("SQ {sqn:#x} doorbell for WQE {idx:#x}, the doorbell record's producer is {producer:#x}"),
            );
        }
        loop {
            let Some(sq) = self.sqs.get(&sqn) else { return };
            if sq.state != QueueState::Rdy {
                return;
            }
            let consumer = sq.consumer;
            let avail = producer.wrapping_sub(consumer) & 0xffff;
            if avail == 0 {
                return;
            }
            if !self.execute_wqe(sqn, &ring, log_size, consumer, avail) {
                return;
            }
        }
    }

    /// Reads and executes the send WQE at counter `consumer`; `false` to stop.
    fn execute_wqe(&mut self, sqn: u32, ring: &Ring, log_size: u32, consumer: u32, avail: u32) -> bool {
        let mask = (1u32 << log_size) - 1;
        let bb = |k: u32| ring.iova(u64::from((consumer + k) & mask) * wqe::BB as u64);
        let mut w = vec![0u8; wqe::BB];
        if !self.dma_read(bb(0), &mut w) {
            let e = WqeError(cqe::SYND_LOCAL_ACCESS_ERR, vendor_syndrome::IOMMU, "SQ buffer unreadable".into());
            self.send_error(sqn, consumer, 1, 0, e);
            return false;
        }
        let w0 = layout::get32(&w, wqe::CTRL_OPMOD_IDX_OPCODE);
        let w1 = layout::get32(&w, wqe::CTRL_QPN_DS);
        let opcode = (w0 & 0xff) as u8;
        let ds = (w1 & 0x3f) as usize;
        let nbb = (ds * wqe::DS).div_ceil(wqe::BB).max(1) as u32;
        if nbb > avail {
            self.violation(
                ViolationKind::DoorbellRecord,
                format!("SQ {sqn:#x} WQE {consumer:#x} spans {nbb} WQEBBs, the doorbell record covers {avail}"),
            );
            return false;
        }
        for k in 1..nbb {
            let mut more = vec![0u8; wqe::BB];
            if !self.dma_read(bb(k), &mut more) {
                let e = WqeError(cqe::SYND_LOCAL_ACCESS_ERR, vendor_syndrome::IOMMU, "SQ buffer unreadable".into());
                self.send_error(sqn, consumer, nbb, opcode, e);
                return false;
            }
            w.extend_from_slice(&more);
        }
        let ce = (w[wqe::CTRL_FM_CE_SE] >> wqe::CE_SHIFT) & 3;
        match self.decode_send(sqn, consumer, &w) {
            Err(e) => {
                self.send_error(sqn, consumer, nbb, opcode, e);
                false
            }
            Ok(frame) => {
                if let Some(sq) = self.sqs.get_mut(&sqn) {
                    sq.consumer = consumer.wrapping_add(nbb);
                }
                self.counters.tx_wqes += 1;
                if let Some(f) = frame {
                    self.counters.tx_frames += 1;
                    self.counters.tx_bytes += f.len() as u64;
                    self.emit(f);
                }
                if ce >= wqe::CE_CQ_UPDATE {
                    let mut q = [0u8; cqe::SIZE];
                    layout::set32(&mut q, cqe::SOP_DROP_QPN, u32::from(opcode) << 24 | sqn);
                    set16(&mut q, cqe::WQE_COUNTER, consumer & 0xffff);
                    q[cqe::OP_OWN] = cqe::OP_REQ << 4;
                    if let Some(cqn) = self.sqs.get(&sqn).map(|s| s.cqn) {
                        if self.post_cqe(cqn, q) {
                            self.counters.tx_cqes += 1;
                        }
                    }
                }
                true
            }
        }
    }

    /// Checks a send WQE (control, Ethernet, data segments) and gathers its frame; `None` for a
    /// NOP.
    fn decode_send(&mut self, sqn: u32, consumer: u32, w: &[u8]) -> SendResult {
        let w0 = layout::get32(w, wqe::CTRL_OPMOD_IDX_OPCODE);
        let w1 = layout::get32(w, wqe::CTRL_QPN_DS);
        let (opcode, index, ds, qpn) = ((w0 & 0xff) as u8, (w0 >> 8) & 0xffff, (w1 & 0x3f) as usize, w1 >> 8);
        let qp_err = |v, s: String| Err(WqeError(cqe::SYND_LOCAL_QP_OP_ERR, v, s));
        if index != consumer & 0xffff {
            return qp_err(
                vendor_syndrome::WQE_INDEX,
                format!("wqe_index {index:#x}, expected {:#x}", consumer & 0xffff),
            );
        }
        if qpn != sqn {
            return qp_err(vendor_syndrome::WQE_QPN, format!("control segment names SQ {qpn:#x}"));
        }
        match opcode {
            wqe::OPCODE_NOP => return Ok(None),
            wqe::OPCODE_SEND => {}
            _ => return qp_err(vendor_syndrome::OPCODE, format!("opcode {opcode:#x} (SEND 0x0a and NOP 0x00 only)")),
        }
        if ds < 2 {
            return qp_err(vendor_syndrome::DS, format!("ds {ds}: no room for the Ethernet segment"));
        }
        let eth = &w[wqe::ETH..wqe::ETH + wqe::DS];
        let ihs = be16(eth, wqe::ETH_INLINE_HDR_SZ) as usize;
        let inline_units = ihs.saturating_sub(2).div_ceil(wqe::DS);
        if 2 + inline_units > ds {
            return qp_err(vendor_syndrome::DS, format!("inline_hdr_sz {ihs} runs past ds {ds}"));
        }
        // The inline headers start in the Ethernet segment's last 2 bytes and continue after it.
        let mut frame = Vec::with_capacity(2048);
        let start = wqe::ETH + wqe::ETH_INLINE_HDR_START;
        frame.extend_from_slice(&w[start..start + ihs.min(2)]);
        if ihs > 2 {
            frame.extend_from_slice(&w[2 * wqe::DS..2 * wqe::DS + ihs - 2]);
        }
        let resd_lkey = self.cfg.resd_lkey;
        for k in 0..ds - 2 - inline_units {
            let d = &w[(2 + inline_units + k) * wqe::DS..][..wqe::DS];
            let bc = layout::get32(d, wqe::DATA_BYTE_COUNT);
            let lkey = layout::get32(d, wqe::DATA_LKEY);
            let addr = layout::get64(d, wqe::DATA_ADDR);
            if bc & wqe::INLINE_SEG != 0 {
                return qp_err(vendor_syndrome::DS, "inline data segment (not modelled)".into());
            }
            if lkey != resd_lkey {
                let s = format!("data segment {k}: lkey {lkey:#x}, not the reserved lkey {resd_lkey:#x}");
                return Err(WqeError(cqe::SYND_LOCAL_PROT_ERR, vendor_syndrome::LKEY, s));
            }
            if frame.len() + bc as usize > 1 << 16 {
                let s = format!("data segment {k}: {bc} bytes makes the frame longer than 64 KiB");
                return Err(WqeError(cqe::SYND_LOCAL_LENGTH_ERR, vendor_syndrome::LENGTH, s));
            }
            let at = frame.len();
            frame.resize(at + bc as usize, 0);
            if !self.dma_read(addr, &mut frame[at..]) {
                let s = format!("data segment {k}: {bc} bytes at IOVA {addr:#x} not mapped");
                return Err(WqeError(cqe::SYND_LOCAL_ACCESS_ERR, vendor_syndrome::IOMMU, s));
            }
        }
        let mode = self.sqs.get(&sqn).map_or(0, |s| s.min_inline).max(self.required_inline_mode());
        let need = inline_needed(mode, &frame);
        if ihs < need {
            let s = format!("{ihs} bytes inline, inline mode {mode} needs {need}");
            return qp_err(vendor_syndrome::INLINE, s);
        }
        if frame.len() < 14 || frame.len() > self.max_frame(&frame) {
            let s = format!("frame of {} bytes (14..={})", frame.len(), self.max_frame(&frame));
            return Err(WqeError(cqe::SYND_LOCAL_LENGTH_ERR, vendor_syndrome::LENGTH, s));
        }
        Ok(Some(frame))
    }

    /// A send error: the error CQE (always, whatever CE says), the SQ to ERR.
    fn send_error(&mut self, sqn: u32, consumer: u32, nbb: u32, opcode: u8, e: WqeError) {
        let WqeError(synd, vendor, what) = e;
        self.violation(ViolationKind::ErrorCqe, format!("SQ {sqn:#x} WQE {consumer:#x}: {what} (syndrome {synd:#x})"));
        let Some(sq) = self.sqs.get_mut(&sqn) else { return };
        sq.consumer = consumer.wrapping_add(nbb);
        sq.state = QueueState::Err;
        let cqn = sq.cqn;
        let q = err_cqe(cqe::OP_REQ_ERR, synd, vendor, u32::from(opcode) << 24 | sqn, consumer & 0xffff);
        self.post_cqe(cqn, q);
        self.counters.tx_error_cqes += 1;
    }

    /// Writes a CQE into CQ `cqn` with the owner bit of its position, body first and `op_own`
    /// last after a release fence. `false` when the CQ is in error or overran (then it goes to
    /// error unless `oi`).
    pub(crate) fn post_cqe(&mut self, cqn: u32, mut q: [u8; cqe::SIZE]) -> bool {
        let Some(cq) = self.cqs.get(&cqn) else { return false };
        if cq.overrun {
            self.counters.cqes_lost += 1;
            return false;
        }
        let (dbr, oi, log_size, producer) = (cq.dbr, cq.oi, cq.log_size, cq.producer);
        let nent = 1u32 << log_size;
        let Some(ci) = self.read_dbrec(dbr + dbrec::CQ_SET_CI) else { return false };
        let ci = ci & 0xff_ffff;
        let used = producer.wrapping_sub(ci) & 0xff_ffff;
        if !oi && used >= nent {
            if let Some(cq) = self.cqs.get_mut(&cqn) {
                cq.overrun = true;
                cq.consumer = ci;
            }
            self.counters.cq_overruns += 1;
            self.counters.cqes_lost += 1;
            self.violation(
                ViolationKind::CqOverrun,
                format!("CQ {cqn:#x} overran: producer {producer:#x}, consumer index {ci:#x}, {nent} entries"),
            );
            let mut data = [0u8; 12];
            data[..4].copy_from_slice(&cqn.to_be_bytes());
            data[11] = event::CQ_ERROR_OVERRUN;
            self.post_event(event::CQ_ERROR, &data);
            return false;
        }
        let Some(cq) = self.cqs.get_mut(&cqn) else { return false };
        cq.consumer = ci;
        cq.producer = producer.wrapping_add(1);
        let index = producer & (nent - 1);
        let iova = cq.ring.iova(u64::from(index) * cqe::SIZE as u64);
        let owner = ((producer >> log_size) & 1) as u8;
        q[cqe::OP_OWN] = (q[cqe::OP_OWN] & !1) | owner;
        if self.dma_write(iova, &q[..cqe::OP_OWN]) {
            // A driver polling `op_own` in another thread must see the whole CQE first.
            fence(Ordering::Release);
            self.dma_write(iova + cqe::OP_OWN as u64, &q[cqe::OP_OWN..]);
        }
        true
    }

    /// Sends a frame to the peer (or discards it when unconnected).
    fn emit(&mut self, frame: Vec<u8>) {
        if let Some(rec) = &mut self.tx_record {
            rec.push(frame.clone());
        }
        match &self.link {
            Some((link, side)) => link.push(*side, frame),
            None => self.counters.tx_discarded += 1,
        }
    }

    /// A frame arriving from the wire: the MAC filter, steering, then the RQ.
    pub(crate) fn receive(&mut self, frame: &[u8]) {
        if self.state != super::HcaState::Initialized || frame.len() < 14 || frame.len() > self.max_frame(frame) {
            self.counters.rx_port_drops += 1;
            return;
        }
        let dmac: [u8; 6] = frame[..6].try_into().unwrap_or([0; 6]);
        let (uc, mc, all) = self.vport_promisc;
        let multicast = dmac[0] & 1 != 0;
        let ours = dmac == self.vport_mac || dmac == [0xff; 6] || all || (multicast && mc) || (!multicast && uc);
        if !ours {
            self.counters.rx_mac_drops += 1;
            return;
        }
        let rqs = self.steer(frame);
        if rqs.is_empty() {
            self.counters.rx_steering_drops += 1;
            return;
        }
        for rqn in rqs {
            self.deliver(rqn, frame);
        }
    }

    fn out_of_buffer(&mut self, counter: u8) {
        self.counters.rx_out_of_buffer += 1;
        if let Some(c) = self.q_counters.get_mut(&counter) {
            *c = c.wrapping_add(1);
        }
    }

    /// Puts a frame into RQ `rqn`.
    fn deliver(&mut self, rqn: u32, frame: &[u8]) {
        let Some(rq) = self.rqs.get(&rqn) else {
            self.counters.rx_steering_drops += 1;
            return;
        };
        if rq.state != QueueState::Rdy {
            self.counters.rx_steering_drops += 1;
            return;
        }
        if let Some(r) = self.rqs.get_mut(&rqn) {
            r.steered += 1;
        }
        let Some(rq) = self.rqs.get(&rqn) else { return };
        // VLAN stripping unless `vsd`: the tag goes into the CQE.
        let mut vlan = None;
        let stripped;
        let frame = if !rq.vsd && frame.len() >= 18 && be16(frame, 12) == 0x8100 {
            vlan = Some(be16(frame, 14) as u16);
            stripped = [&frame[..12], &frame[16..]].concat();
            &stripped[..]
        } else {
            frame
        };
        let (ok, mut types) = rx_flags(frame);
        if vlan.is_some() {
            types |= 1;
        }
        let mut q = [0u8; cqe::SIZE];
        q[cqe::HDS_IP_EXT] = ok;
        q[cqe::L4_L3_HDR_TYPE] = types;
        if let Some(tci) = vlan {
            q[30..32].copy_from_slice(&tci.to_be_bytes());
        }
        layout::set32(&mut q, cqe::SOP_DROP_QPN, rqn);
        q[cqe::OP_OWN] = cqe::OP_RESP_SEND << 4;
        match rq.striding {
            Some(s) => self.deliver_striding(rqn, s, frame, q),
            None => self.deliver_cyclic(rqn, frame, q),
        }
    }

    /// Reads the RQ's doorbell record: WQEs posted but not used up, or `None` (a violation)
    /// when the record is unreadable or more than the ring ahead.
    fn rq_posted(&mut self, rqn: u32) -> Option<u32> {
        let rq = self.rqs.get(&rqn)?;
        let (dbr, size, consumer) = (rq.wq.dbr, 1u32 << rq.wq.log_size, rq.consumer);
        let producer = self.read_dbrec(dbr + dbrec::RCV)? & 0xffff;
        let posted = producer.wrapping_sub(consumer) & 0xffff;
        if posted > size {
            self.violation(
                ViolationKind::DoorbellRecord,
                format!("RQ {rqn:#x} doorbell record {producer:#x} is {posted} WQEs past the device's {consumer:#x}, ring of {size}"),
            );
            return None;
        }
        Some(posted)
    }

    /// Reads RQ WQE `counter`'s bytes (`1 << log_stride`).
    fn read_rq_wqe(&mut self, rqn: u32, counter: u32) -> Option<Vec<u8>> {
        let rq = self.rqs.get(&rqn)?;
        let stride = 1u64 << rq.wq.log_stride;
        let index = counter & ((1 << rq.wq.log_size) - 1);
        let iova = rq.wq.ring.iova(u64::from(index) * stride);
        let mut w = vec![0u8; stride as usize];
        self.dma_read(iova, &mut w).then_some(w)
    }

    /// A receive error: a RESP_ERR CQE and the RQ to ERR.
    fn rq_error(&mut self, rqn: u32, counter: u16, e: WqeError) {
        let WqeError(synd, vendor, what) = e;
        self.violation(ViolationKind::ErrorCqe, format!("RQ {rqn:#x} WQE {counter:#x}: {what} (syndrome {synd:#x})"));
        let Some(rq) = self.rqs.get_mut(&rqn) else { return };
        rq.state = QueueState::Err;
        let cqn = rq.cqn;
        let q = err_cqe(cqe::OP_RESP_ERR, synd, vendor, rqn, u32::from(counter));
        self.post_cqe(cqn, q);
        self.counters.rx_error_cqes += 1;
    }

    /// A data segment of a receive WQE: must carry the reserved lkey (and, striding, exactly
    /// the WQE's strides).
    fn rq_data_seg(&self, d: &[u8], want_len: Option<u32>) -> Result<(u32, u64), WqeError> {
        let bc = layout::get32(d, wqe::DATA_BYTE_COUNT);
        let lkey = layout::get32(d, wqe::DATA_LKEY);
        if lkey != self.cfg.resd_lkey {
            let s = format!("lkey {lkey:#x}, not the reserved lkey {:#x}", self.cfg.resd_lkey);
            return Err(WqeError(cqe::SYND_LOCAL_PROT_ERR, vendor_syndrome::LKEY, s));
        }
        if let Some(want) = want_len {
            if bc != want {
                let s = format!("byte_count {bc}, the WQE's strides hold {want}");
                return Err(WqeError(cqe::SYND_LOCAL_LENGTH_ERR, vendor_syndrome::RQ_WQE, s));
            }
        }
        Ok((bc, layout::get64(d, wqe::DATA_ADDR)))
    }

    /// Linux mlx5e MPWRQ / DPDK MPRQ: packets land on stride boundaries of the current WQE; one
    /// that does not fit the strides left gets a filler CQE for the rest and moves on.
    fn deliver_striding(&mut self, rqn: u32, s: Striding, frame: &[u8], mut q: [u8; cqe::SIZE]) {
        let Some(rq) = self.rqs.get(&rqn) else { return };
        let counter_id = rq.counter_set_id;
        let shift = if s.two_byte_shift { 2 } else { 0 };
        let need = (frame.len() as u32 + shift).div_ceil(s.stride_bytes);
        if need > s.strides {
            // Longer than a whole WQE.
            self.out_of_buffer(counter_id);
            return;
        }
        let Some(posted) = self.rq_posted(rqn) else {
            self.out_of_buffer(counter_id);
            return;
        };
        if posted == 0 {
            self.out_of_buffer(counter_id);
            return;
        }
        let Some(rq) = self.rqs.get(&rqn) else { return };
        let (cqn, mask) = (rq.cqn, (1u32 << rq.wq.log_size) - 1);
        let (mut consumer, mut stride) = (rq.consumer, rq.stride);
        let mut posted = posted;
        if stride + need > s.strides {
            // A filler for the strides left; the packet goes to the next WQE.
            let mut f = [0u8; cqe::SIZE];
            layout::set32(&mut f, cqe::BYTE_CNT, cqe::FILLER | (s.strides - stride) << cqe::STRIDES_SHIFT);
            set16(&mut f, cqe::WQE_ID, consumer & mask);
            set16(&mut f, cqe::WQE_COUNTER, stride);
            layout::set32(&mut f, cqe::SOP_DROP_QPN, rqn);
            f[cqe::OP_OWN] = cqe::OP_RESP_SEND << 4;
            self.post_cqe(cqn, f);
            self.counters.rx_filler_cqes += 1;
            consumer = consumer.wrapping_add(1);
            stride = 0;
            posted -= 1;
            if let Some(rq) = self.rqs.get_mut(&rqn) {
                rq.consumer = consumer;
                rq.stride = 0;
            }
            if posted == 0 {
                self.out_of_buffer(counter_id);
                return;
            }
        }
        let index = (consumer & mask) as u16;
        let Some(w) = self.read_rq_wqe(rqn, consumer) else {
            let e = WqeError(cqe::SYND_LOCAL_ACCESS_ERR, vendor_syndrome::IOMMU, "RQ buffer unreadable".into());
            return self.rq_error(rqn, stride as u16, e);
        };
        let (_, addr) = match self.rq_data_seg(&w[wqe::MPRQ_DATA..], Some(s.strides * s.stride_bytes)) {
            Ok(v) => v,
            Err(e) => return self.rq_error(rqn, stride as u16, e),
        };
        let at = addr + u64::from(stride * s.stride_bytes + shift);
        if !self.dma_write(at, frame) {
            let e =
                WqeError(cqe::SYND_LOCAL_ACCESS_ERR, vendor_syndrome::IOMMU, format!("buffer at {at:#x} not mapped"));
            return self.rq_error(rqn, stride as u16, e);
        }
        layout::set32(&mut q, cqe::BYTE_CNT, need << cqe::STRIDES_SHIFT | frame.len() as u32);
        set16(&mut q, cqe::WQE_ID, u32::from(index));
        set16(&mut q, cqe::WQE_COUNTER, stride);
        self.corrupt(&mut q, Some(s), mask);
        let (mut next_consumer, mut next_stride) = (consumer, stride + need);
        if next_stride == s.strides {
            next_consumer = consumer.wrapping_add(1);
            next_stride = 0;
        }
        if let Some(rq) = self.rqs.get_mut(&rqn) {
            rq.consumer = next_consumer;
            rq.stride = next_stride;
        }
        if self.post_cqe(cqn, q) {
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += frame.len() as u64;
        }
    }

    /// A cyclic RQ: each WQE is a scatter list of data segments (a zero `byte_count` ends it);
    /// the frame fills them in order.
    fn deliver_cyclic(&mut self, rqn: u32, frame: &[u8], mut q: [u8; cqe::SIZE]) {
        let Some(rq) = self.rqs.get(&rqn) else { return };
        let (counter_id, cqn, consumer, mask) = (rq.counter_set_id, rq.cqn, rq.consumer, (1u32 << rq.wq.log_size) - 1);
        match self.rq_posted(rqn) {
            Some(p) if p > 0 => {}
            _ => return self.out_of_buffer(counter_id),
        }
        let index = (consumer & 0xffff) as u16;
        let Some(w) = self.read_rq_wqe(rqn, consumer) else {
            let e = WqeError(cqe::SYND_LOCAL_ACCESS_ERR, vendor_syndrome::IOMMU, "RQ buffer unreadable".into());
            return self.rq_error(rqn, index, e);
        };
        if let Some(rq) = self.rqs.get_mut(&rqn) {
            rq.consumer = consumer.wrapping_add(1);
        }
        let mut left = frame;
        for d in w.chunks(wqe::DS) {
            if left.is_empty() || layout::get32(d, wqe::DATA_BYTE_COUNT) == 0 {
                break;
            }
            let (bc, addr) = match self.rq_data_seg(d, None) {
                Ok(v) => v,
                Err(e) => return self.rq_error(rqn, index, e),
            };
            let n = (bc as usize).min(left.len());
            if !self.dma_write(addr, &left[..n]) {
                let s = format!("buffer at {addr:#x} not mapped");
                return self.rq_error(rqn, index, WqeError(cqe::SYND_LOCAL_ACCESS_ERR, vendor_syndrome::IOMMU, s));
            }
            left = &left[n..];
        }
        if !left.is_empty() {
            let s = format!("frame of {} bytes longer than the WQE's buffers", frame.len());
            return self.rq_error(rqn, index, WqeError(cqe::SYND_LOCAL_LENGTH_ERR, vendor_syndrome::LENGTH, s));
        }
        layout::set32(&mut q, cqe::BYTE_CNT, frame.len() as u32);
        set16(&mut q, cqe::WQE_COUNTER, u32::from(index));
        self.corrupt(&mut q, None, mask);
        if self.post_cqe(cqn, q) {
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += frame.len() as u64;
        }
    }

    /// Applies the next queued [`CqeCorruption`] to a packet CQE.
    fn corrupt(&mut self, q: &mut [u8; cqe::SIZE], s: Option<Striding>, mask: u32) {
        let Some(kind) = self.rx_corruptions.pop_front() else { return };
        let counter = be16(q, cqe::WQE_COUNTER);
        match kind {
            CqeCorruption::BadOpcode => q[cqe::OP_OWN] = cqe::OP_RESP_WR_IMM << 4,
            CqeCorruption::ErrorCqe { syndrome } => {
                let qpn = layout::get32(q, cqe::SOP_DROP_QPN);
                *q = err_cqe(cqe::OP_RESP_ERR, syndrome, 0, qpn, counter);
            }
            CqeCorruption::StrideOutOfRange => {
                let past = s.map_or(mask + 1, |s| s.strides);
                set16(q, cqe::WQE_COUNTER, past & 0xffff);
            }
            CqeCorruption::LengthBeyondStrides => {
                let bc = layout::get32(q, cqe::BYTE_CNT);
                let strides = (bc >> cqe::STRIDES_SHIFT) & cqe::STRIDES_MASK;
                let bytes = s.map_or(bc & 0xffff, |s| strides * s.stride_bytes) + 1;
                layout::set32(q, cqe::BYTE_CNT, (bc & !0xffff) | (bytes & 0xffff));
            }
            CqeCorruption::WrongWqeId => {
                let id = be16(q, cqe::WQE_ID);
                set16(q, cqe::WQE_ID, (id + 1) & mask);
            }
            CqeCorruption::StrideCountTopBit => {
                let bc = layout::get32(q, cqe::BYTE_CNT);
                layout::set32(q, cqe::BYTE_CNT, bc | 1 << (cqe::STRIDES_SHIFT + 14));
            }
        }
    }
}

/// An error CQE (`mlx5_err_cqe`).
fn err_cqe(opcode: u8, syndrome: u8, vendor: u8, opcode_qpn: u32, wqe_counter: u32) -> [u8; cqe::SIZE] {
    let mut q = [0u8; cqe::SIZE];
    q[cqe::VENDOR_ERR_SYND] = vendor;
    q[cqe::SYNDROME] = syndrome;
    layout::set32(&mut q, cqe::SOP_DROP_QPN, opcode_qpn);
    set16(&mut q, cqe::WQE_COUNTER, wqe_counter & 0xffff);
    q[cqe::OP_OWN] = opcode << 4;
    q
}

/// `fte_match_set_lyr_2_4` fields of a frame, for tests that build steering rules from frames.
pub fn match_fields(frame: &[u8]) -> [u8; lyr_2_4::SIZE] {
    steering::frame_fields(frame)
}
