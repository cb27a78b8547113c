//! The cyclic striding receive queue (multi-packet RQ): each receive WQE points at a buffer of
//! `strides` strides of `1 << stride_log` bytes; the device places each packet at the next
//! stride boundary and writes one CQE per packet (`wqe_id` = the WQE, `wqe_counter` = its first
//! stride, `byte_cnt` = strides consumed and length). When a packet does not fit the strides left
//! in a WQE, the device writes a *filler* CQE that consumes them and moves to the next WQE.
//!
//! Packets are lent to the dataplane in place. A WQE is reposted (the RQ doorbell record
//! advanced past it) only when the device has finished with it *and* every packet lent from it
//! has been released; WQEs are reposted in ring order, since the doorbell record is a counter.
//!
//! CQEs are checked before anything is lent: an unknown opcode, an error CQE, a WQE that is not
//! posted, strides outside the WQE, or a length beyond its strides are dropped and counted,
//! never trusted.

use super::queues::{Cq, DbRec};
use super::wqe::{cqe_op, mprq, DataSeg, StridingRxWqe};
use erpc_dataplane::RxPacket;
use erpc_hugepages::DmaSlice;
use std::ptr::NonNull;

/// What an RX pass dropped, for the NIC's counters.
#[derive(Default, Clone, Copy, Debug)]
pub struct RxDrops {
    pub filler: u64,
    pub error_cqes: u64,
    pub bad_opcode: u64,
    pub malformed: u64,
    pub last_error: Option<(u8, u8)>,
}

/// The shape of a striding RQ.
#[derive(Clone, Copy, Debug)]
pub struct RxGeometry {
    /// Receive WQEs (a power of two).
    pub wqes: u32,
    /// Strides per WQE and log2 of the stride size.
    pub strides: u32,
    pub stride_log: u32,
}

pub struct Rx {
    bufs: DmaSlice<'static>,
    /// WQEs in the ring (a power of two).
    n: u32,
    strides: u32,
    /// log2 of `strides` (a packet's id is its WQE slot shifted by it, plus its stride).
    strides_log: u32,
    stride_log: u32,
    dbrec: DbRec,
    /// WQEs posted so far (counter; the doorbell record holds its low 16 bits).
    posted: u32,
    /// The WQE the device is filling (counter).
    dev: u32,
    /// The oldest WQE not yet reposted (counter); `posted == repost + n`.
    repost: u32,
    /// Per ring slot: strides the device has consumed, and packets lent out.
    consumed: Vec<u32>,
    lent: Vec<u32>,
    pub cq: Cq,
    pub reposted: u64,
}

impl Rx {
    /// Writes the `n` WQEs (each pointing at its buffer in `bufs`) and posts them all.
    ///
    /// # Safety
    /// `wqes` and `bufs` must stay mapped while the queue is used, no one else may use them,
    /// and the device must not have been given `wqes` yet (they are written here). The device
    /// writes `bufs`; packets lent from them are read only through raw pointers.
    pub unsafe fn new(wqes: DmaSlice<'_>, bufs: DmaSlice<'_>, g: RxGeometry, lkey: u32, dbrec: DbRec, cq: Cq) -> Rx {
        let RxGeometry { wqes: n, strides, stride_log } = g;
        let buf_bytes = (strides as usize) << stride_log;
        assert!(
            n.is_power_of_two()
                && strides.is_power_of_two()
                && wqes.len() >= n as usize * 32
                && bufs.len() >= n as usize * buf_bytes
        );
        for i in 0..n as usize {
            let w = StridingRxWqe {
                data: DataSeg {
                    byte_count: (buf_bytes as u32).into(),
                    lkey: lkey.into(),
                    addr: (bufs.iova() + (i * buf_bytes) as u64).into(),
                },
                ..Default::default()
            };
            // SAFETY: WQE slot i of our ring (sizes checked above); the device does not own it
            // yet (the contract above).
            unsafe { std::ptr::write_volatile(wqes.base().as_ptr().cast::<StridingRxWqe>().add(i), w) };
        }
        let rx = Rx {
            // SAFETY: the caller keeps `bufs` mapped while the queue is used (see above).
            bufs: unsafe { bufs.detach() },
            n,
            strides,
            strides_log: strides.trailing_zeros(),
            stride_log,
            dbrec,
            posted: n,
            dev: 0,
            repost: 0,
            consumed: vec![0; n as usize],
            lent: vec![0; n as usize],
            cq,
            reposted: 0,
        };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        rx.dbrec.write(n & 0xffff);
        rx
    }

    /// Lends up to `out.len()` received packets.
    pub fn poll(&mut self, out: &mut [RxPacket], drops: &mut RxDrops) -> usize {
        let mut n = 0;
        let mut seen = false;
        while n < out.len() {
            let Some(cqe) = self.cq.poll() else { break };
            seen = true;
            match cqe.opcode() {
                cqe_op::RESP_SEND | cqe_op::RESP_SEND_IMM | cqe_op::RESP_SEND_INV => {}
                cqe_op::REQ_ERR | cqe_op::RESP_ERR => {
                    drops.error_cqes += 1;
                    drops.last_error = Some((cqe.err_syndrome(), cqe.vendor_syndrome()));
                    continue;
                }
                _ => {
                    drops.bad_opcode += 1;
                    continue;
                }
            }
            let bc = cqe.byte_cnt.get();
            let count = (bc >> mprq::STRIDES_SHIFT) & mprq::STRIDES_MASK;
            let slot = u32::from(cqe.wqe_id.get());
            let stride = u32::from(cqe.wqe_counter.get());
            let mask = self.n - 1;
            let cur = self.dev & mask;
            let next = self.dev.wrapping_add(1);
            // The device fills the current WQE from the stride after the last one accounted
            // (later if a completion was lost or unreadable), and moves to the next WQE only
            // after a completion used up the current one's strides. A CQE naming the next
            // WQE's first stride means that completion was unreadable; anything else does not
            // fit what the device can do and is dropped without touching the accounting.
            let here = slot == cur && stride >= self.consumed[cur as usize];
            let moved = slot == next & mask && stride == 0 && next != self.posted && self.n > 1;
            if !(here || moved) || count == 0 || stride + count > self.strides {
                drops.malformed += 1;
                continue;
            }
            if moved {
                self.consumed[cur as usize] = self.strides;
                self.dev = next;
            }
            let c = self.dev;
            let s = slot as usize;
            self.consumed[s] = stride + count;
            if bc & mprq::FILLER != 0 {
                drops.filler += 1;
            } else {
                let len = bc & mprq::LEN_MASK;
                if len == 0 || len > count << self.stride_log {
                    drops.malformed += 1;
                } else {
                    let id = slot << self.strides_log | stride;
                    let off = (id as usize) << self.stride_log;
                    // SAFETY: inside the buffer of WQE `slot` (stride + count <= strides).
                    let data = unsafe { NonNull::new_unchecked(self.bufs.base().as_ptr().add(off)) };
                    out[n] = RxPacket { data, len, id };
                    self.lent[s] += 1;
                    n += 1;
                }
            }
            if self.consumed[s] == self.strides {
                self.dev = c.wrapping_add(1);
            }
        }
        if seen {
            self.cq.update_ci();
            self.repost();
        }
        n
    }

    /// Takes a lent packet back; `false` if `id` names no lent packet.
    pub fn release(&mut self, id: u32) -> bool {
        let slot = (id >> self.strides_log) as usize;
        match self.lent.get_mut(slot) {
            Some(l) if *l > 0 => {
                *l -= 1;
                true
            }
            _ => false,
        }
    }

    /// Reposts, in ring order, the WQEs the device has finished and the dataplane released.
    pub fn repost(&mut self) {
        let before = self.repost;
        let mask = self.n - 1;
        while self.repost != self.dev && self.lent[(self.repost & mask) as usize] == 0 {
            self.consumed[(self.repost & mask) as usize] = 0;
            self.repost = self.repost.wrapping_add(1);
        }
        if self.repost != before {
            self.reposted += u64::from(self.repost.wrapping_sub(before));
            self.posted = self.repost.wrapping_add(self.n);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            self.dbrec.write(self.posted & 0xffff);
        }
    }

    /// Receive WQEs posted and not finished by the device.
    pub fn wqes_posted(&self) -> u32 {
        self.posted.wrapping_sub(self.dev)
    }
}
