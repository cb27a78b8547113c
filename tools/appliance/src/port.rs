//! x86 port I/O (Intel SDM Vol. 2A/2B: IN, OUT) and the time-stamp counter.
//!
//! Port I/O is `unsafe`: a write to the wrong port can reprogram any legacy device. Each device
//! module (serial, exit, pci, clock) wraps the ports it owns behind a safe API.

use core::arch::asm;

/// # Safety
/// `port` must be a port whose read has no effect the caller does not intend.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller's contract; IN touches no memory.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// See [`inb`].
#[inline]
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: the caller's contract; IN touches no memory.
    unsafe { asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// See [`inb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: the caller's contract; IN touches no memory.
    unsafe { asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// `port` must be a port whose write with `v` has only the effect the caller intends.
#[inline]
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: the caller's contract; OUT touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
}

/// # Safety
/// See [`outb`].
#[inline]
pub unsafe fn outw(port: u16, v: u16) {
    // SAFETY: the caller's contract; OUT touches no memory.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags)) };
}

/// # Safety
/// See [`outb`].
#[inline]
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: the caller's contract; OUT touches no memory.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) };
}

/// The time-stamp counter (RDTSC).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions in 64-bit mode at ring 0; it only reads the counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}
