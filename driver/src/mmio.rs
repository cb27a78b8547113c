//! Device registers: the [`RegisterIo`] trait the drivers program against, and [`Mmio`], its
//! implementation over a mapped BAR with volatile accesses. Tests implement `RegisterIo` with
//! register-level fakes that play the device.

use std::ptr::NonNull;
use volatile::VolatilePtr;

/// 32-bit little-endian device registers addressed by byte offset.
pub trait RegisterIo {
    /// Reads the register at byte offset `off`.
    fn read32(&self, off: u32) -> u32;
    /// Writes the register at byte offset `off`.
    fn write32(&self, off: u32, value: u32);

    /// Writes 64 bits at byte offset `off` (8-byte aligned): the low half to `off`, the high
    /// half to `off + 4`, in that order: what a little-endian 64-bit store puts at each address.
    /// mlx5 doorbells (UAR / BlueFlame) are 64 bits; Linux's `mlx5_write64` issues one 64-bit
    /// store, or on 32-bit hosts two 32-bit stores, lower address first, which devices accept.
    /// [`Mmio`] overrides this with a single 64-bit store.
    fn write64(&self, off: u32, value: u64) {
        self.write32(off, value as u32);
        self.write32(off + 4, (value >> 32) as u32);
    }

    /// Sets `bits` in a register (read-modify-write).
    fn set_bits(&self, off: u32, bits: u32) {
        self.write32(off, self.read32(off) | bits);
    }

    /// Clears `bits` in a register (read-modify-write).
    fn clear_bits(&self, off: u32, bits: u32) {
        self.write32(off, self.read32(off) & !bits);
    }
}

/// A mapped register window (a BAR). Every access is a volatile 32-bit load or store.
pub struct Mmio {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: register accesses are single volatile loads/stores; the device serialises them. The
// drivers own their Mmio and use it from one thread at a time; Send lets a driver be built on
// one thread and run on another.
unsafe impl Send for Mmio {}

impl Mmio {
    /// # Safety
    /// `base..base+len` must be a device register mapping that stays mapped while this value
    /// lives, and must not be accessed as ordinary memory.
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

    fn write64(&self, off: u32, value: u64) {
        let o = off as usize;
        assert!(o % 8 == 0 && o + 8 <= self.len, "register offset {o:#x} outside the BAR");
        // SAFETY: in bounds and 8-byte aligned (checked above) inside the mapping `new` vouches
        // for; one volatile 64-bit store.
        unsafe { VolatilePtr::new(self.base.add(o).cast::<u64>()).write(value.to_le()) }
    }
}
