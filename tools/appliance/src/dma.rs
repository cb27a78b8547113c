//! Static memory for devices: the NIC's rings and buffers live in the image's .bss, and are
//! handed to the driver core as [`DmaRange`]s.
//!
//! The memory map (src/boot.s) identity-maps the first 4 GiB, the image included, and there is no
//! IOMMU: the address the CPU uses is the physical address, which is the bus address a device
//! uses. This memory is mapped write-back (cached), which is right for DMA on x86: PCIe DMA is
//! cache-coherent. (Device registers are the opposite: see `nic.rs`.)
//!
//! Each area is handed out once, as raw pointers only: memory a device writes is never behind a
//! Rust reference.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use erpc_dataplane::DmaRegion;
use erpc_nic::dma::DmaRange;

/// `N` bytes of page-aligned static memory for a device, taken at most once.
#[repr(C, align(4096))]
pub struct DmaStatic<const N: usize> {
    bytes: UnsafeCell<[u8; N]>,
    taken: AtomicBool,
}

// SAFETY: the bytes are only reached through the one DmaRange `take` hands out (the flag makes
// it one); the flag is atomic.
unsafe impl<const N: usize> Sync for DmaStatic<N> {}

impl<const N: usize> DmaStatic<N> {
    pub const fn new() -> Self {
        DmaStatic { bytes: UnsafeCell::new([0; N]), taken: AtomicBool::new(false) }
    }

    /// The whole area as a device range (bus address = address), the first time; `None` after.
    pub fn take(&'static self) -> Option<DmaRange> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        let p = NonNull::new(self.bytes.get().cast::<u8>()).expect("a static is not at address 0");
        // SAFETY: static memory, mapped for as long as the machine runs (for the CPU and, with
        // the identity map and no IOMMU, for any bus-master device at the same address); handed
        // out once (the flag above), as a range only, never as a reference.
        Some(unsafe { DmaRange::new(p, p.as_ptr() as u64, N) })
    }
}

/// Static memory the device only reads (an endpoint's msgbufs, the neighbour layer's replies) as
/// the dataplane's region: with the identity map, its device address is its address.
pub fn static_region(mem: &'static mut [u8]) -> DmaRegion {
    let iova = mem.as_ptr() as u64;
    DmaRegion::from_static(mem, iova)
}
