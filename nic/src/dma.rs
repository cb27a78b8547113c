//! [`DmaRange`]: memory a device can address, as the driver core receives it.
//!
//! A range is the CPU address, the device (bus) address and the length of memory that stays
//! mapped for both while anything uses it; whoever makes one vouches for that with `unsafe`. It
//! is not `Copy`: a range is the only handle to its bytes, so a ring built on it owns them, and
//! two rings cannot be handed the same memory by mistake ([`DmaRange::take`] splits one into
//! disjoint parts). It grants no `&`/`&mut` access: a device may write the memory at any time, so
//! the drivers read and write it through raw pointers only.
//!
//! Where ranges come from:
//! * under Linux with VFIO, from `erpc_hugepages::DmaSlice` (hugepage memory mapped in the
//!   IOMMU; bus address = IOVA);
//! * on bare metal with no IOMMU, from static memory: with an identity map, bus address =
//!   physical address = virtual address.

use core::ptr::NonNull;

/// `len` bytes at CPU address `cpu` that the device reaches at bus address `bus`. Owned: see the
/// module docs.
#[derive(Debug)]
pub struct DmaRange {
    cpu: NonNull<u8>,
    bus: u64,
    len: usize,
}

// SAFETY: a range is the exclusive handle to its bytes (its constructor's contract), and every
// access through it is a raw-pointer access by its owner: moving it to another thread moves the
// only access with it.
unsafe impl Send for DmaRange {}
// SAFETY: `&DmaRange` reveals only the addresses and the length; no access to the bytes.
unsafe impl Sync for DmaRange {}

impl DmaRange {
    /// Describes `len` bytes at CPU address `cpu`, seen by the device at `bus`.
    ///
    /// # Safety
    /// * `cpu..cpu+len` must be readable and writable through raw pointers, and the device must
    ///   see the same bytes at `bus..bus+len`;
    /// * they must stay mapped, for the CPU and for the device, for as long as this range, a
    ///   range taken from it, or a device given their addresses may use them: a queue built on
    ///   the range must be closed, or its device stopped, before the memory goes away;
    /// * nothing else may access them meanwhile: no other `DmaRange` over them, and no Rust
    ///   reference to them (the device may write them at any time).
    pub unsafe fn new(cpu: NonNull<u8>, bus: u64, len: usize) -> DmaRange {
        DmaRange { cpu, bus, len }
    }

    /// CPU address of the first byte.
    pub fn cpu(&self) -> NonNull<u8> {
        self.cpu
    }

    /// Device (bus) address of the first byte.
    pub fn bus(&self) -> u64 {
        self.bus
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Splits off the first `len` bytes, rounded up to a multiple of `align` (a power of two),
    /// so that what remains starts `align`-aligned relative to this range's start. `None` (and
    /// nothing taken) if fewer bytes are left.
    pub fn take(&mut self, len: usize, align: usize) -> Option<DmaRange> {
        debug_assert!(align.is_power_of_two());
        let taken = len.checked_next_multiple_of(align)?;
        if taken > self.len {
            return None;
        }
        let head = DmaRange { cpu: self.cpu, bus: self.bus, len: taken };
        // SAFETY: `taken <= len`: one past the end at most, inside the same mapping.
        self.cpu = unsafe { self.cpu.add(taken) };
        self.bus += taken as u64;
        self.len -= taken;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_splits_in_disjoint_aligned_parts() {
        let mut buf = [0u8; 256];
        let base = NonNull::new(buf.as_mut_ptr()).unwrap();
        // SAFETY: `buf` outlives the ranges, which only compute addresses here.
        let mut r = unsafe { DmaRange::new(base, 0x10_0000, 256) };
        let a = r.take(10, 16).expect("16 bytes");
        assert_eq!((a.bus(), a.len(), a.cpu()), (0x10_0000, 16, base));
        assert_eq!((r.bus(), r.len()), (0x10_0010, 240));
        assert_eq!(r.cpu().as_ptr() as usize - base.as_ptr() as usize, 16);
        assert!(r.take(241, 1).is_none(), "more than is left");
        assert_eq!(r.len(), 240, "a failed take takes nothing");
        assert!(r.take(usize::MAX, 64).is_none(), "no overflow");
        let b = r.take(240, 16).expect("the rest");
        assert_eq!(b.bus(), 0x10_0010);
        assert!(r.is_empty());
    }
}
