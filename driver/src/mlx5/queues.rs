//! The `pas` page lists of queue memory, doorbell records, and the two polled rings every queue
//! pair uses: completion queues and the event queue. Both are written by the device and read here only through volatile loads of raw
//! pointers; a CQE or EQE is valid when its owner bit equals the pass bit of the consumer index
//! (`(ci >> log_size) & 1`), as Linux's `get_sw_cqe` / `next_eqe_sw` test it.

use super::handles::{Cqn, Eqn};
use super::wqe::{cqe_op, Cqe64, Eqe};
use erpc_hugepages::DmaSlice;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

/// Firmware and queue page size (`MLX5_ADAPTER_PAGE_SIZE`).
pub const PAGE: usize = 4096;

/// The 4 KiB page addresses covering `ring` (the `pas` list of a queue context, big-endian).
pub fn pas(ring: &DmaSlice<'_>) -> Vec<u8> {
    let pages = ring.len().div_ceil(PAGE);
    let mut v = Vec::with_capacity(pages * 8);
    for i in 0..pages {
        v.extend_from_slice(&(ring.iova() + (i * PAGE) as u64).to_be_bytes());
    }
    v
}

/// A doorbell record word (big-endian) the device reads.
#[derive(Clone, Copy, Debug)]
pub struct DbRec(NonNull<u32>);

impl DbRec {
    /// Word `word` of the 8-byte record at `at`.
    ///
    /// # Safety
    /// `at` must stay mapped while the record is used, and no one but this record may write
    /// that word (the device only reads it).
    pub unsafe fn new(at: DmaSlice<'_>, word: usize) -> DbRec {
        assert!(at.len() >= 8 && word < 2 && at.iova() % 8 == 0);
        // SAFETY: word 0 or 1 of an 8-byte, 8-byte aligned record inside `at` (checked above).
        DbRec(unsafe { at.base().cast::<u32>().add(word) })
    }

    pub fn write(&self, v: u32) {
        // SAFETY: an aligned word of our DMA memory, ours alone and mapped (see `new`); the
        // device only reads it.
        unsafe { std::ptr::write_volatile(self.0.as_ptr(), v.to_be()) }
    }
}

/// A completion queue of 64-byte CQEs.
pub struct Cq {
    pub cqn: Cqn,
    ring: NonNull<Cqe64>,
    log_size: u32,
    /// Consumer index (counts every CQE consumed).
    pub ci: u32,
    dbrec: DbRec,
}

impl Cq {
    /// A CQ over `ring` (`1 << log_size` entries), every entry marked invalid and owned by
    /// hardware (`op_own` = INVALID << 4 | 1, as Linux initializes them).
    ///
    /// # Safety
    /// `ring` must stay mapped while the CQ is used, no one else may use it, and the device
    /// must not have been given it yet (it is written here).
    pub unsafe fn new(ring: DmaSlice<'_>, log_size: u32, dbrec: DbRec) -> Cq {
        assert!(ring.len() >= 64 << log_size);
        // SAFETY: ours alone and not yet the device's (the contract above).
        unsafe { ring.fill(0) };
        for i in 0..1usize << log_size {
            // SAFETY: the last byte of entry i, inside the ring (checked above).
            unsafe { std::ptr::write_volatile(ring.base().as_ptr().add(i * 64 + 63), cqe_op::INVALID << 4 | 1) };
        }
        dbrec.write(0);
        Cq { cqn: Cqn(0), ring: ring.base().cast(), log_size, ci: 0, dbrec }
    }

    /// The next CQE if the device has written it.
    pub fn poll(&mut self) -> Option<Cqe64> {
        let idx = (self.ci & ((1 << self.log_size) - 1)) as usize;
        // SAFETY: entry `idx` of the ring; written by the device, so read volatile.
        let p = unsafe { self.ring.as_ptr().add(idx) };
        // SAFETY: as above; the last byte of the entry.
        let op_own = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(63)) };
        if op_own >> 4 == cqe_op::INVALID || u32::from(op_own & 1) != (self.ci >> self.log_size) & 1 {
            return None;
        }
        // The rest of the CQE was written before its ownership byte.
        fence(Ordering::Acquire);
        // SAFETY: as above; a whole entry.
        let cqe = unsafe { std::ptr::read_volatile(p) };
        self.ci = self.ci.wrapping_add(1);
        Some(cqe)
    }

    /// Tells the device how far software has consumed (the CQ doorbell record, 24 bits).
    pub fn update_ci(&self) {
        fence(Ordering::Release);
        self.dbrec.write(self.ci & 0xff_ffff);
    }
}

/// The event queue, polled (no interrupts).
pub struct Eq {
    pub eqn: Eqn,
    ring: NonNull<Eqe>,
    log_size: u32,
    pub ci: u32,
}

impl Eq {
    /// An EQ over `ring` with every entry's owner bit set (`MLX5_EQE_OWNER_INIT_VAL`).
    ///
    /// # Safety
    /// As for [`Cq::new`]: `ring` stays mapped while the EQ is used, is ours alone, and has not
    /// been given to the device yet.
    pub unsafe fn new(ring: DmaSlice<'_>, log_size: u32) -> Eq {
        assert!(ring.len() >= 64 << log_size);
        // SAFETY: ours alone and not yet the device's (the contract above).
        unsafe { ring.fill(0) };
        for i in 0..1usize << log_size {
            // SAFETY: the owner byte of entry i, inside the ring (checked above).
            unsafe { std::ptr::write_volatile(ring.base().as_ptr().add(i * 64 + 63), 1) };
        }
        Eq { eqn: Eqn(0), ring: ring.base().cast(), log_size, ci: 0 }
    }

    /// The next EQE if the device has written it.
    pub fn poll(&mut self) -> Option<Eqe> {
        let idx = (self.ci & ((1 << self.log_size) - 1)) as usize;
        // SAFETY: entry `idx` of the ring, written by the device.
        let p = unsafe { self.ring.as_ptr().add(idx) };
        // SAFETY: as above; the owner byte.
        let owner = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(63)) };
        if u32::from(owner & 1) != (self.ci >> self.log_size) & 1 {
            return None;
        }
        fence(Ordering::Acquire);
        // SAFETY: as above; a whole entry.
        let eqe = unsafe { std::ptr::read_volatile(p) };
        self.ci = self.ci.wrapping_add(1);
        Some(eqe)
    }
}
