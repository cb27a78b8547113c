//! The boot stub (`boot.s`: multiboot header, 32-bit entry, long mode, exception entry points),
//! the multiboot information the loader hands over, and the image's extent and stack.

use core::ptr::addr_of;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, KnownLayout};

core::arch::global_asm!(include_str!("boot.s"), options(att_syntax));

/// EAX at entry from a multiboot-1 loader (Multiboot Specification 0.6.96, 3.2).
pub const MULTIBOOT_MAGIC: u32 = 0x2BAD_B002;

extern "C" {
    static __image_start: u8;
    static __data_end: u8;
    static __bss_end: u8;
    static __stack_bottom: u8;
    static __stack_top: u8;
}

/// Where the image lies in physical memory (= virtual: identity map).
#[derive(Clone, Copy, Debug)]
pub struct Extent {
    pub start: usize,
    /// End of the bytes loaded from the file (code and data).
    pub data_end: usize,
    /// End of the zeroed memory after them (.bss: page tables, stack, static buffers).
    pub bss_end: usize,
}

pub fn extent() -> Extent {
    // Only the addresses of the linker's symbols are taken, never their contents.
    Extent {
        start: addr_of!(__image_start) as usize,
        data_end: addr_of!(__data_end) as usize,
        bss_end: addr_of!(__bss_end) as usize,
    }
}

/// The first fields of the multiboot information structure (Multiboot 0.6.96, 3.3).
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct MultibootInfo {
    flags: U32,
    /// KiB of memory from 0 (valid with flags bit 0).
    mem_lower: U32,
    /// KiB of memory from 1 MiB up to the first hole (valid with flags bit 0).
    mem_upper: U32,
    boot_device: U32,
    /// Physical address of a NUL-terminated command line (valid with flags bit 2).
    cmdline: U32,
}
const _: () = assert!(core::mem::size_of::<MultibootInfo>() == 20);

/// What the loader told the image.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootInfo {
    /// Bytes of contiguous memory from 1 MiB up, if the loader said.
    pub mem_above_1m: Option<u64>,
    /// The command line after its first word (the image's name, which loaders such as GRUB and
    /// QEMU put first), at most [`CMDLINE_MAX`] bytes.
    pub cmdline: &'static str,
}

/// Longest command line read.
pub const CMDLINE_MAX: usize = 1024;

/// Reads the multiboot information at `addr` (EBX at entry), if `magic` says a multiboot loader
/// booted the image; `None` otherwise.
pub fn boot_info(magic: u32, addr: u32) -> Option<BootInfo> {
    if magic != MULTIBOOT_MAGIC || addr == 0 {
        return None;
    }
    // SAFETY: a multiboot loader passes in EBX the physical address of its information structure,
    // which stays in memory it does not reuse (Multiboot 0.6.96, 3.2, 3.3); the first 4 GiB are
    // identity-mapped and nothing writes that memory while the image runs (one CPU, no DMA there).
    let bytes = unsafe { core::slice::from_raw_parts(addr as usize as *const u8, 20) };
    let mbi = MultibootInfo::read_from_bytes(bytes).ok()?;
    let flags = mbi.flags.get();
    let mut info = BootInfo::default();
    if flags & 1 != 0 {
        info.mem_above_1m = Some(u64::from(mbi.mem_upper.get()) * 1024);
    }
    if flags & 4 != 0 && mbi.cmdline.get() != 0 {
        // SAFETY: as above; the command line is a NUL-terminated string the loader placed in
        // memory it keeps; reading stops at the NUL or after CMDLINE_MAX bytes.
        let base = mbi.cmdline.get() as usize as *const u8;
        let mut len = 0;
        // SAFETY: see above; each byte read lies before the NUL.
        while len < CMDLINE_MAX && unsafe { base.add(len).read() } != 0 {
            len += 1;
        }
        // SAFETY: as above: `len` bytes from `base` were just read one by one.
        let s = unsafe { core::slice::from_raw_parts(base, len) };
        let line = core::str::from_utf8(s).unwrap_or("").trim_start();
        info.cmdline = line.split_once(' ').map_or("", |(_, rest)| rest.trim());
    }
    Some(info)
}

/// The boot stack: its size and how much of it has been used (the deepest byte that is no longer
/// zero, as .bss starts zeroed: a lower bound, exact unless the deepest frames wrote only zeros).
pub fn stack_usage() -> (usize, usize) {
    let bottom = addr_of!(__stack_bottom);
    let size = addr_of!(__stack_top) as usize - bottom as usize;
    let mut unused = 0;
    // SAFETY: the stack is `size` bytes of .bss from `__stack_bottom`, mapped and readable. Bytes
    // are read one at a time through raw pointers (no reference to memory the running code is
    // writing); the scan stops at the first non-zero byte, far below this function's frame.
    while unused < size && unsafe { bottom.add(unused).read_volatile() } == 0 {
        unused += 1;
    }
    (size, size - unused)
}
