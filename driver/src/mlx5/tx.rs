//! The send queue datapath: zero-copy SEND WQEs pointing into msgbufs, unsignaled completions
//! (a CQE is asked for on one WQE in `signal_every`; its `wqe_counter` retires every WQE before
//! it), and the doorbell: the doorbell record, then the first 8 bytes of the last WQE to the
//! BlueFlame register, alternating between its two halves.
//!
//! A WQE is a control segment, an Ethernet segment (with `inline` header bytes when the device
//! requires them), and one data segment per piece of the frame not inlined: one or two basic
//! blocks (64 bytes) per packet.

use super::handles::Sqn;
use super::queues::{Cq, DbRec};
use super::wqe::{cqe_op, CtrlSeg, DataSeg, EthSeg, CTRL_CQ_UPDATE, OPCODE_SEND, WQEBB};
use erpc_dataplane::transport::Segment;
use erpc_hugepages::DmaSlice;
use std::collections::VecDeque;
use zerocopy::IntoBytes;

/// A signaled WQE not yet completed.
struct Signaled {
    /// Its `wqe_index` (16 bits, as the CQE's `wqe_counter` names it).
    index: u16,
    /// The WQEBB counter just after it.
    end: u32,
    /// Packets accepted up to and including it.
    packets: u64,
}

pub struct Tx {
    ring: DmaSlice<'static>,
    /// Ring size in WQEBBs (a power of two).
    size: u32,
    /// WQEBBs posted (producer counter; the low 16 bits are the next `wqe_index`).
    pub pi: u32,
    /// WQEBBs the device is known to have read.
    pub ci: u32,
    pub sqn: Sqn,
    lkey: u32,
    inline: usize,
    dbrec: DbRec,
    signal_every: u32,
    since_signal: u32,
    pending: VecDeque<Signaled>,
    /// Packets accepted (including any the driver dropped) and known read.
    pub accepted: u64,
    pub reclaimed: u64,
    /// Whether the last WQE posted asked for a completion.
    last_signaled: bool,
    /// The first 8 bytes of the last WQE posted, for the doorbell.
    pub last_ctrl: [u8; 8],
    pub cq: Cq,
}

/// What a TX completion pass found.
#[derive(Default)]
pub struct Reaped {
    pub completions: u64,
    pub errors: u64,
    pub malformed: u64,
    /// Syndrome and vendor syndrome of the last error CQE.
    pub last_error: Option<(u8, u8, u16)>,
}

impl Tx {
    /// A send queue of `size` WQEBBs in `ring`, `inline` header bytes inlined per WQE, a
    /// completion asked for every `signal_every` WQEs.
    ///
    /// # Safety
    /// `ring` must stay mapped while the queue is used, no one else may use it, and the device
    /// must not have been given it yet (it is cleared here).
    pub unsafe fn new(
        ring: DmaSlice<'_>,
        size: u32,
        lkey: u32,
        inline: usize,
        dbrec: DbRec,
        signal_every: u32,
        cq: Cq,
    ) -> Tx {
        assert!(size.is_power_of_two() && ring.len() >= size as usize * WQEBB);
        // SAFETY: ours alone and not yet the device's (the contract above).
        unsafe { ring.fill(0) };
        dbrec.write(0);
        Tx {
            // SAFETY: the caller keeps `ring` mapped while the queue is used (see above).
            ring: unsafe { ring.detach() },
            size,
            pi: 0,
            ci: 0,
            sqn: Sqn(0),
            lkey,
            inline,
            dbrec,
            signal_every,
            since_signal: 0,
            pending: VecDeque::with_capacity((size / signal_every) as usize + 2),
            accepted: 0,
            reclaimed: 0,
            last_signaled: true,
            last_ctrl: [0; 8],
            cq,
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// WQEBBs a frame of these pieces takes.
    fn wqebbs(&self, pieces: &[Segment]) -> u32 {
        let mut ds = 2; // control + Ethernet segments
        if self.inline > 2 {
            ds += (self.inline - 2).div_ceil(16) as u32;
        }
        let mut skip = self.inline;
        for p in pieces {
            let take = skip.min(p.len as usize);
            skip -= take;
            if p.len as usize > take {
                ds += 1;
            }
        }
        ds.div_ceil(4)
    }

    /// Posts one frame made of `pieces` (their total at least `inline` bytes, the inline part
    /// inside the first piece); `false` if the ring has no room. A `marker` (the frame
    /// `tx_flush` sends to get a completion) is signaled and not counted as an accepted packet.
    ///
    /// # Safety
    /// Each piece's `vaddr` must be readable for `len` bytes now (the inline headers are
    /// copied from the first), and the device must be able to read each at its `iova` until
    /// the WQE is known read ([`Tx::reclaimed`](Tx) counts it).
    pub unsafe fn post(&mut self, pieces: &[Segment], marker: bool) -> bool {
        let bbs = self.wqebbs(pieces);
        if self.size - self.pi.wrapping_sub(self.ci) < bbs {
            return false;
        }
        let signal = marker || self.since_signal + 1 >= self.signal_every;
        let mut wqe = [0u8; 2 * WQEBB];
        let mut off = 32;
        let mut eth = EthSeg { inline_hdr_sz: (self.inline as u16).into(), ..Default::default() };
        if self.inline > 0 {
            // SAFETY: the first piece holds at least `inline` readable bytes (the headroom; the
            // caller checked its length and vouches for the pointer: see the contract above).
            let hdr = unsafe { std::slice::from_raw_parts(pieces[0].vaddr, self.inline) };
            eth.inline_hdr_start.copy_from_slice(&hdr[..2]);
            wqe[off..off + self.inline - 2].copy_from_slice(&hdr[2..]);
            off += (self.inline - 2).next_multiple_of(16);
        }
        wqe[16..32].copy_from_slice(eth.as_bytes());
        let mut skip = self.inline;
        for p in pieces {
            let take = skip.min(p.len as usize);
            skip -= take;
            if p.len as usize > take {
                let d = DataSeg {
                    byte_count: (p.len - take as u32).into(),
                    lkey: self.lkey.into(),
                    addr: (p.iova + take as u64).into(),
                };
                wqe[off..off + 16].copy_from_slice(d.as_bytes());
                off += 16;
            }
        }
        let ds = (off / 16) as u32;
        let index = self.pi & 0xffff;
        let ctrl = CtrlSeg {
            opmod_idx_opcode: (index << 8 | OPCODE_SEND).into(),
            qpn_ds: (self.sqn.0 << 8 | ds).into(),
            fm_ce_se: if signal { CTRL_CQ_UPDATE } else { 0 },
            ..Default::default()
        };
        wqe[..16].copy_from_slice(ctrl.as_bytes());
        for b in 0..bbs {
            let slot = (self.pi.wrapping_add(b) & (self.size - 1)) as usize;
            let chunk: [u8; WQEBB] = wqe[b as usize * WQEBB..(b as usize + 1) * WQEBB].try_into().expect("64 bytes");
            // SAFETY: a WQEBB slot of our ring, free (the device has read it: ci passed it).
            unsafe {
                std::ptr::write_volatile(self.ring.base().as_ptr().add(slot * WQEBB).cast::<[u8; WQEBB]>(), chunk)
            };
        }
        self.pi = self.pi.wrapping_add(bbs);
        if !marker {
            self.accepted += 1;
        }
        self.last_ctrl.copy_from_slice(&wqe[..8]);
        self.last_signaled = signal;
        if signal {
            self.since_signal = 0;
            self.pending.push_back(Signaled { index: index as u16, end: self.pi, packets: self.accepted });
        } else {
            self.since_signal += 1;
        }
        true
    }

    /// Counts a packet accepted but not sent (it is "read" at once).
    pub fn skip(&mut self) {
        self.accepted += 1;
        if self.pi == self.ci {
            self.reclaimed = self.accepted;
        }
    }

    /// Makes the WQEs posted so far visible to the device: the doorbell record. The caller then
    /// writes `last_ctrl` to the BlueFlame register.
    pub fn publish(&self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.dbrec.write(self.pi & 0xffff);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether every WQE posted has been read.
    pub fn idle(&self) -> bool {
        self.ci == self.pi
    }

    /// Whether the last WQE posted asked for a completion (so waiting for it covers all).
    pub fn last_signaled(&self) -> bool {
        self.last_signaled
    }

    /// Reads the completions the device has written.
    pub fn reap(&mut self) -> Reaped {
        let mut r = Reaped::default();
        while let Some(cqe) = self.cq.poll() {
            match cqe.opcode() {
                cqe_op::REQ => {
                    let idx = cqe.wqe_counter.get();
                    match self.pending.iter().position(|s| s.index == idx) {
                        Some(k) => {
                            let s = &self.pending[k];
                            self.ci = s.end;
                            self.reclaimed = s.packets;
                            self.pending.drain(..=k);
                            r.completions += 1;
                        }
                        None => r.malformed += 1,
                    }
                }
                cqe_op::REQ_ERR => {
                    r.errors += 1;
                    r.last_error = Some((cqe.err_syndrome(), cqe.vendor_syndrome(), cqe.wqe_counter.get()));
                }
                _ => r.malformed += 1,
            }
        }
        if r.completions + r.errors + r.malformed > 0 {
            self.cq.update_ci();
        }
        r
    }

    /// Forgets every WQE posted (after the SQ was reset: the device reads none of them).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.pi = 0;
        self.ci = 0;
        self.since_signal = 0;
        self.last_signaled = true;
        self.reclaimed = self.accepted;
        self.dbrec.write(0);
    }
}
