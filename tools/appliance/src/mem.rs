//! What the precompiled `core` of the x86_64-unknown-linux-gnu target expects from the C library
//! it normally links with: `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` (that target's
//! `compiler_builtins` leaves them to libc), and the unwinder's `rust_eh_personality` (referenced
//! by `core`, built with unwinding; this image aborts on panic and never unwinds).
//!
//! Each is written with string instructions in inline assembly (Intel SDM Vol. 2B: MOVS, STOS,
//! CMPS with the REP prefixes) so that the compiler cannot recognise a copy loop and turn it back
//! into a call to the very function it implements.

use core::arch::asm;

/// # Safety
/// The C contract: `src..src+n` readable, `dst..dst+n` writable, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; REP MOVSB copies RCX bytes from RSI to RDI upwards (the ABI
    // guarantees DF = 0 here).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// The C contract: `src..src+n` readable, `dst..dst+n` writable; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst is below src, or past its end: an upward copy never overwrites unread bytes.
        // SAFETY: as for memcpy.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags));
        }
    } else {
        // dst overlaps the end of src: copy downwards from the last byte (DF = 1), then restore
        // DF = 0 as the ABI requires.
        // SAFETY: the caller's contract; n > 0 here (else the first branch was taken), so the last
        // bytes are at src+n-1 and dst+n-1.
        unsafe {
            asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _, options(nostack));
        }
    }
    dst
}

/// # Safety
/// The C contract: `dst..dst+n` writable.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; REP STOSB stores AL into RCX bytes from RDI upwards.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// The C contract: `a..a+n` and `b..b+n` readable.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let (end_a, end_b): (*const u8, *const u8);
    // SAFETY: the caller's contract; REPE CMPSB compares [RSI] with [RDI] byte by byte upwards
    // until RCX is 0 or a pair differs, and leaves RSI/RDI one past the last pair compared.
    unsafe {
        asm!("repe cmpsb", inout("rcx") n => _, inout("rsi") a => end_a, inout("rdi") b => end_b,
             options(nostack, readonly));
    }
    // SAFETY: at least one pair was compared (n > 0): the last one is just below the end pointers.
    let (x, y) = unsafe { (*end_a.sub(1), *end_b.sub(1)) };
    i32::from(x) - i32::from(y)
}

/// # Safety
/// As [`memcmp`].
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract, passed on.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the precompiled `core` (its unwinding tables name it); never called, since the
/// image is built with `panic = "abort"` and nothing unwinds.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Checks the functions above on overlapping and disjoint buffers, through `black_box` so that
/// nothing is computed at compile time: run at boot, before anything relies on them.
pub fn check() -> Result<(), &'static str> {
    use core::hint::black_box;
    let pattern = |i: usize| (i as u8).wrapping_mul(37).wrapping_add(11);
    let mut buf = [0u8; 96];
    buf.iter_mut().enumerate().for_each(|(i, b)| *b = pattern(i));
    let p = buf.as_mut_ptr();
    // SAFETY: every range below lies inside `buf` (96 bytes), used through `p` only.
    unsafe {
        memmove(black_box(p.add(8)), black_box(p), black_box(80)); // overlapping, dst above src
        if (0..80).any(|i| *p.add(8 + i) != pattern(i)) {
            return Err("memmove to a higher, overlapping destination");
        }
        memmove(black_box(p), black_box(p.add(8)), black_box(80)); // overlapping, dst below src
        if (0..80).any(|i| *p.add(i) != pattern(i)) {
            return Err("memmove to a lower, overlapping destination");
        }
        memcpy(black_box(p.add(88)), black_box(p), black_box(8));
        if (0..8).any(|i| *p.add(88 + i) != pattern(i)) {
            return Err("memcpy");
        }
        memset(black_box(p.add(80)), black_box(0xA5), black_box(16));
        if (80..96).any(|i| *p.add(i) != 0xA5) || *p.add(79) != pattern(79) {
            return Err("memset");
        }
        let (a, b) = (p as *const u8, p.add(80) as *const u8);
        let ok = memcmp(black_box(a), black_box(a), black_box(80)) == 0
            && memcmp(black_box(a), black_box(b), black_box(0)) == 0
            && memcmp(black_box(b), black_box(b.add(1)), black_box(15)) == 0
            && memcmp(black_box(a), black_box(b), black_box(16)).signum() == (i32::from(*a) - 0xA5).signum()
            && memcmp(black_box(b), black_box(a), black_box(16)).signum() == (0xA5 - i32::from(*a)).signum()
            && bcmp(black_box(a), black_box(b), black_box(16)) != 0;
        if !ok {
            return Err("memcmp or bcmp");
        }
    }
    Ok(())
}
