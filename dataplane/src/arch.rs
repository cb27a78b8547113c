//! CPU hints: cache prefetches (x86-64; a no-op elsewhere).

/// Asks the CPU to bring the cache line holding `p` into the cache, without waiting for it.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing the program sees, writes nothing and
    // never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches the two cache lines from `p` on (`p` 64-byte aligned).
#[inline(always)]
pub fn prefetch2(p: *const u8) {
    prefetch(p);
    prefetch(p.wrapping_add(64));
}
