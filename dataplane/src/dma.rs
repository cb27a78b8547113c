//! The DMA-capable memory an endpoint carves its msgbufs and control packets from.
//!
//! Under Linux this is a hugepage mapping registered with the IOMMU (`erpc-hugepages`); in a
//! bare-metal image a static array; in tests an ordinary allocation. The region records both the
//! CPU address and the device address (IOVA) of its first byte, so the device address of any
//! buffer inside it is one addition away.

use core::ptr::NonNull;

/// A contiguous range of memory that the device can read at `iova..iova+len`.
#[derive(Debug)]
pub struct DmaRegion {
    base: NonNull<u8>,
    len: usize,
    iova: u64,
}

// SAFETY: a DmaRegion is the unique owner of its memory range (see `new`'s contract); moving it to
// another thread moves that ownership.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// Wraps memory the caller owns for the rest of the program.
    pub fn from_static(mem: &'static mut [u8], iova: u64) -> Self {
        let len = mem.len();
        DmaRegion { base: NonNull::from(mem).cast(), len, iova }
    }

    /// Wraps raw memory.
    ///
    /// # Safety
    /// `base..base+len` must be valid for reads and writes, not accessed through any other path,
    /// and stay mapped for as long as this region and every msgbuf allocated from it exist.
    /// The device must see it at `iova..iova+len` and must never write to it.
    pub unsafe fn new(base: NonNull<u8>, len: usize, iova: u64) -> Self {
        DmaRegion { base, len, iova }
    }

    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Device address of a CPU address inside the region.
    #[inline]
    pub fn iova_of(&self, p: *const u8) -> u64 {
        self.iova + (p as usize - self.base.as_ptr() as usize) as u64
    }

    /// Whether `p..p+len` lies inside the region.
    #[inline]
    pub fn contains(&self, p: *const u8, len: usize) -> bool {
        let s = self.base.as_ptr() as usize;
        let a = p as usize;
        a >= s && a.checked_add(len).is_some_and(|e| e <= s + self.len)
    }
}
