//! Device registers: the [`RegisterIo`] trait the drivers program against, and [`Mmio`], its
//! implementation over a mapped BAR with volatile accesses. Tests implement `RegisterIo` with
//! register-level fakes that play the device.
//!
//! Where the window comes from is the backend's business: a VFIO BAR mapped into a process
//! (`erpc_driver::vfio::Bar`), or on bare metal the BAR's physical address, which must then be
//! mapped **uncached** (on x86, page attributes PCD/PWT or an uncacheable MTRR range): a
//! register read must reach the device every time, and a write must not linger in a cache.

use core::ptr::NonNull;
use volatile::VolatilePtr;

/// 32-bit little-endian device registers addressed by byte offset.
pub trait RegisterIo {
    /// Reads the register at byte offset `off`.
    fn read32(&self, off: u32) -> u32;
    /// Writes the register at byte offset `off`.
    fn write32(&self, off: u32, value: u32);

    /// Sets `bits` in a register (read-modify-write).
    fn set_bits(&self, off: u32, bits: u32) {
        self.write32(off, self.read32(off) | bits);
    }

    /// Clears `bits` in a register (read-modify-write).
    fn clear_bits(&self, off: u32, bits: u32) {
        self.write32(off, self.read32(off) & !bits);
    }
}

/// Registers that also take a 64-bit doorbell: mlx5 UAR doorbells (the send doorbell at the
/// BlueFlame register, UAR + 0x800) are the first 8 bytes of a WQE's control segment, written
/// as **one** 64-bit store. Linux (`mlx5_write64` in `include/linux/mlx5/doorbell.h`) and
/// rdma-core (`mmio_write64_be` in `util/mmio.h`) issue a single 64-bit store on 64-bit hosts;
/// two 32-bit stores can interleave with another writer's and reach the device torn.
///
/// There is deliberately no default built from two [`RegisterIo::write32`] calls: every
/// implementation says how it delivers the 8 bytes whole ([`Mmio`] and the VFIO backend's BAR:
/// one volatile 64-bit store; device models: one step under their lock).
pub trait RegisterIo64: RegisterIo {
    /// Writes 64 bits at byte offset `off` (8-byte aligned) as one store, little-endian: the
    /// low half lands at `off`, the high half at `off + 4`.
    fn write64(&self, off: u32, value: u64);
}

/// A handle to registers is registers: a queue can hold `&Mmio` (or a reference to a fake) while
/// the device handle keeps the window itself.
impl<T: RegisterIo + ?Sized> RegisterIo for &T {
    #[inline]
    fn read32(&self, off: u32) -> u32 {
        (**self).read32(off)
    }

    #[inline]
    fn write32(&self, off: u32, value: u32) {
        (**self).write32(off, value)
    }
}

impl<T: RegisterIo64 + ?Sized> RegisterIo64 for &T {
    #[inline]
    fn write64(&self, off: u32, value: u64) {
        (**self).write64(off, value)
    }
}

/// A mapped register window (a BAR). Every access is a volatile 32-bit load or store, or one
/// volatile 64-bit store ([`RegisterIo64::write64`]).
pub struct Mmio {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: register accesses are single volatile loads/stores; the device serialises them. Send
// lets a driver be built on one thread and run on another.
unsafe impl Send for Mmio {}
// SAFETY: every access through `&Mmio` is one volatile load or store of an aligned register, which
// the device serialises; accesses from several threads to a shared BAR are what a multi-queue NIC
// is built for (each queue's tail register written by the thread owning the queue). What is not
// atomic is a read-modify-write ([`RegisterIo::set_bits`]) of a register shared by several
// threads: the drivers make those under a lock of their own.
unsafe impl Sync for Mmio {}

impl Mmio {
    /// The register window of `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base+len` must be a device register mapping that stays mapped while this value
    /// lives, and must not be accessed as ordinary memory. On bare metal it must be mapped
    /// uncached (see the module docs).
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Mmio {
        Mmio { base, len }
    }

    fn reg(&self, off: u32) -> VolatilePtr<'_, u32> {
        let off = off as usize;
        assert!(off % 4 == 0 && off + 4 <= self.len, "register offset {off:#x} outside the BAR");
        // SAFETY: in bounds and aligned (checked above) inside the mapping `new` vouches for.
        unsafe { VolatilePtr::new(self.base.add(off).cast::<u32>()) }
    }
}

impl RegisterIo for Mmio {
    fn read32(&self, off: u32) -> u32 {
        u32::from_le(self.reg(off).read())
    }

    fn write32(&self, off: u32, value: u32) {
        self.reg(off).write(value.to_le())
    }
}

impl RegisterIo64 for Mmio {
    fn write64(&self, off: u32, value: u64) {
        let o = off as usize;
        assert!(o % 8 == 0 && o + 8 <= self.len, "register offset {o:#x} outside the BAR");
        // SAFETY: in bounds and 8-byte aligned (checked above) inside the mapping `new` vouches
        // for; one volatile 64-bit store.
        unsafe { VolatilePtr::new(self.base.add(o).cast::<u64>()).write(value.to_le()) }
    }
}
