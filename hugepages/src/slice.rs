//! [`DmaSlice`]: a borrowed range of DMA memory, the one type drivers carve their rings and
//! buffers from (as ixy.rs's `Dma<T>` and virtio-drivers' `Dma<H>` describe a range by its CPU
//! and device addresses).
//!
//! A slice knows where a range is — its CPU address, its device address (IOVA) and length —
//! and, through its lifetime, that the [`DmaMemory`](crate::DmaMemory) behind it is still
//! mapped. It grants no access: a device may write the memory, so it is never behind a Rust
//! reference, and every read or write goes through `unsafe` code that states why nothing else
//! uses those bytes meanwhile ([`DmaSlice::fill`], or a driver's volatile accesses).
//!
//! Rings live as long as the driver that owns both them and their memory, which a lifetime
//! cannot express (the driver would borrow from itself): [`DmaSlice::detach`] gives the ring a
//! `DmaSlice<'static>` under a contract the driver upholds by keeping the memory next to the
//! ring and dropping it last.

use core::marker::PhantomData;
use core::ptr::NonNull;

/// `len` bytes of DMA memory at CPU address `base` and device address `iova`, borrowed from
/// the memory that maps them for `'a`.
#[derive(Clone, Copy, Debug)]
pub struct DmaSlice<'a> {
    base: NonNull<u8>,
    iova: u64,
    len: usize,
    _mem: PhantomData<&'a ()>,
}

// SAFETY: a DmaSlice is an address range, not access to it: every access through it is
// `unsafe` and states its own exclusivity. Sending or sharing the description is harmless.
unsafe impl Send for DmaSlice<'_> {}
// SAFETY: as above.
unsafe impl Sync for DmaSlice<'_> {}

impl<'a> DmaSlice<'a> {
    /// Describes `len` bytes at `base` (device address `iova`).
    ///
    /// # Safety
    /// `base..base+len` must be memory the device sees at `iova..iova+len`, mapped for all of
    /// `'a`.
    pub unsafe fn new(base: NonNull<u8>, iova: u64, len: usize) -> DmaSlice<'a> {
        DmaSlice { base, iova, len, _mem: PhantomData }
    }

    /// CPU address of the first byte.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Device address of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `len` bytes at `off`; `None` if they do not lie inside this slice.
    pub fn get(&self, off: usize, len: usize) -> Option<DmaSlice<'a>> {
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: `off + len <= self.len`: inside the range, mapped for 'a as `self` is.
        Some(unsafe { DmaSlice::new(self.base.add(off), self.iova + off as u64, len) })
    }

    /// The `len` bytes at `off`.
    ///
    /// # Panics
    /// If they do not lie inside this slice (a driver's sizing mistake).
    pub fn sub(&self, off: usize, len: usize) -> DmaSlice<'a> {
        self.get(off, len).unwrap_or_else(|| panic!("DMA sub-slice {off}+{len} outside {} bytes", self.len))
    }

    /// Takes the first `len` bytes, rounded up to a multiple of `align` (a power of two), off
    /// the front: carving consecutive areas out of one allocation. `None` (and nothing taken)
    /// when fewer bytes are left.
    pub fn take(&mut self, len: usize, align: usize) -> Option<DmaSlice<'a>> {
        debug_assert!(align.is_power_of_two());
        let rounded = len.checked_next_multiple_of(align)?;
        let head = self.get(0, rounded)?;
        *self = self.get(rounded, self.len - rounded)?;
        Some(head)
    }

    /// The device address of CPU address `p` inside the slice.
    pub fn iova_of(&self, p: *const u8) -> Option<u64> {
        let off = (p as usize).checked_sub(self.base.as_ptr() as usize)?;
        (off < self.len).then(|| self.iova + off as u64)
    }

    /// Fills the slice with `byte`.
    ///
    /// # Safety
    /// No device and no other code may access these bytes during the call (typically: the
    /// device has not been given them yet).
    pub unsafe fn fill(&self, byte: u8) {
        // SAFETY: the range is mapped for 'a (see `new`); exclusivity is the caller's promise.
        unsafe { core::ptr::write_bytes(self.base.as_ptr(), byte, self.len) }
    }

    /// The same bytes as the NIC driver core's [`DmaRange`](erpc_nic::dma::DmaRange): the
    /// owned handle a queue keeps its rings and buffers in (bus address = IOVA).
    ///
    /// # Safety
    /// As [`DmaRange::new`](erpc_nic::dma::DmaRange::new): keep the owning
    /// [`DmaMemory`](crate::DmaMemory) alive (mapped) until no device given the range's
    /// addresses can reach it any more (its queue closed, or its device stopped), and let
    /// nothing else access these bytes meanwhile (no other range or slice user).
    pub unsafe fn into_range(self) -> erpc_nic::dma::DmaRange {
        // SAFETY: the memory is mapped at `base` and at `iova` for the device (this slice's
        // contract); its life and exclusivity are the caller's promise, forwarded.
        unsafe { erpc_nic::dma::DmaRange::new(self.base, self.iova, self.len) }
    }

    /// The same range without the borrow, for a ring stored next to the memory it lives in.
    ///
    /// # Safety
    /// The memory must stay mapped for as long as the returned slice, and anything made from
    /// it, is used: keep the owning [`DmaMemory`](crate::DmaMemory) alive beside it and drop
    /// it after every user.
    pub unsafe fn detach(self) -> DmaSlice<'static> {
        DmaSlice { base: self.base, iova: self.iova, len: self.len, _mem: PhantomData }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carving_and_sub_slices_stay_inside() {
        let mut buf = [0u8; 64];
        let base = NonNull::new(buf.as_mut_ptr()).unwrap();
        // SAFETY: `buf` outlives `s` (a local view for this test; no device).
        let mut s = unsafe { DmaSlice::new(base, 0x1000, 64) };
        let a = s.take(10, 16).expect("16 bytes");
        assert_eq!((a.iova(), a.len(), s.iova(), s.len()), (0x1000, 16, 0x1010, 48));
        assert!(s.take(49, 1).is_none(), "more than is left");
        assert_eq!(s.len(), 48, "nothing taken by a failed take");
        let b = s.sub(8, 8);
        assert_eq!(b.iova(), 0x1018);
        assert_eq!(b.iova_of(b.base().as_ptr().wrapping_add(3)), Some(0x101b));
        assert_eq!(b.iova_of(b.base().as_ptr().wrapping_add(8)), None);
        assert!(s.get(40, 9).is_none());
        assert!(s.get(usize::MAX, 2).is_none(), "no overflow");
        // SAFETY: nothing else touches `buf` now.
        unsafe { b.fill(0xab) };
        assert_eq!(&buf[24..32], &[0xab; 8]);
        assert_eq!(buf[23], 0);
    }

    #[test]
    fn a_range_names_the_same_bytes() {
        let mut buf = [0u8; 64];
        let base = NonNull::new(buf.as_mut_ptr()).unwrap();
        // SAFETY: `buf` outlives the slice and the range; nothing touches its bytes.
        let r = unsafe { DmaSlice::new(base, 0x2000, 64).sub(16, 32).into_range() };
        assert_eq!((r.cpu(), r.bus(), r.len()), (NonNull::new(buf[16..].as_mut_ptr()).unwrap(), 0x2010, 32));
    }

    #[test]
    #[should_panic(expected = "outside 64 bytes")]
    fn a_sub_slice_outside_panics() {
        let mut buf = [0u8; 64];
        // SAFETY: `buf` outlives the slice.
        let s = unsafe { DmaSlice::new(NonNull::new(buf.as_mut_ptr()).unwrap(), 0, 64) };
        s.sub(60, 8);
    }
}
