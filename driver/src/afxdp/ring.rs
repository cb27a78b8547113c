//! The four single-producer/single-consumer rings an AF_XDP socket shares with the kernel:
//! fill and TX (we produce), RX and completion (we consume).
//!
//! Each ring is mapped from the socket at the page offset of `linux/if_xdp.h`
//! (`XDP_PGOFF_RX_RING`, …) and laid out as `struct xdp_ring_offset` (from `XDP_MMAP_OFFSETS`)
//! says: a producer index, a consumer index, a flags word and a power-of-two array of
//! descriptors. Indices are free-running `u32`s. The kernel writes them concurrently, so they are
//! only touched through atomics, and the descriptors through volatile accesses ordered by them
//! (descriptors written, then the producer index released; the producer index acquired, then
//! descriptors read) — the protocol of the kernel's `Documentation/networking/af_xdp.rst`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `XDP_RING_NEED_WAKEUP` of `linux/if_xdp.h`.
const XDP_RING_NEED_WAKEUP: u32 = 1;

/// One mapped ring of `T` (`struct xdp_desc` for RX/TX, a `u64` UMEM address for fill and
/// completion).
pub(crate) struct Ring<T: Copy> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    /// Our copies: our own index exactly, the kernel's as last read.
    prod: u32,
    cons: u32,
}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `entries` descriptors at `pgoff` of the socket.
    pub(crate) fn map(fd: &OwnedFd, off: &libc::xdp_ring_offset, entries: u32, pgoff: u64) -> io::Result<Self> {
        let map_len = off.desc as usize + entries as usize * std::mem::size_of::<T>();
        // SAFETY: maps a region the kernel provides for this socket; no existing memory is
        // affected. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as *mut u8;
        let at = |o: u64| {
            // SAFETY: the kernel's offsets lie inside the mapping of `map_len` bytes.
            NonNull::new(unsafe { base.add(o as usize) }).expect("mmap returned a non-null mapping")
        };
        let mut r = Ring {
            map: at(0),
            map_len,
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            mask: entries - 1,
            prod: 0,
            cons: 0,
        };
        r.prod = r.producer().load(Ordering::Acquire);
        r.cons = r.consumer().load(Ordering::Acquire);
        Ok(r)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 inside the live mapping, which the kernel updates concurrently:
        // exactly what an atomic is for.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    pub(crate) fn size(&self) -> u32 {
        self.mask + 1
    }

    /// Whether the kernel asks to be woken up (`sendto`/`recvfrom`) to make progress on this ring.
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    // ---- Rings we produce into (fill, TX) ----

    /// Free slots, reading the kernel's consumer index only if fewer than `want` are known free.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = self.size() - self.prod.wrapping_sub(self.cons);
        if free >= want {
            return free;
        }
        self.cons = self.consumer().load(Ordering::Acquire);
        self.size() - self.prod.wrapping_sub(self.cons)
    }

    /// Writes descriptor `i` after the produced ones (not yet visible to the kernel).
    pub(crate) fn write(&mut self, i: u32, v: T) {
        let slot = self.prod.wrapping_add(i) & self.mask;
        // SAFETY: `slot` is within the descriptor array; the caller checked with `free` that the
        // kernel no longer reads it.
        unsafe { self.descs.as_ptr().add(slot as usize).write_volatile(v) };
    }

    /// Makes `n` written descriptors visible to the kernel.
    pub(crate) fn submit(&mut self, n: u32) {
        self.prod = self.prod.wrapping_add(n);
        self.producer().store(self.prod, Ordering::Release);
    }

    /// Whether the kernel has consumed everything we produced (reads its consumer index).
    pub(crate) fn all_consumed(&mut self) -> bool {
        self.cons = self.consumer().load(Ordering::Acquire);
        self.cons == self.prod
    }

    // ---- Rings we consume from (RX, completion) ----

    /// Entries ready to read, reading the kernel's producer index when none are known.
    pub(crate) fn ready(&mut self) -> u32 {
        if self.prod == self.cons {
            self.prod = self.producer().load(Ordering::Acquire);
        }
        self.prod.wrapping_sub(self.cons)
    }

    /// Reads ready entry `i`.
    pub(crate) fn read(&self, i: u32) -> T {
        let slot = self.cons.wrapping_add(i) & self.mask;
        // SAFETY: `slot` is within the array and `i` < `ready()`, so the kernel published it
        // (acquire on the producer index) and will not write it until we release it.
        unsafe { self.descs.as_ptr().add(slot as usize).read_volatile() }
    }

    /// Hands `n` read entries back to the kernel.
    pub(crate) fn release(&mut self, n: u32) {
        self.cons = self.cons.wrapping_add(n);
        self.consumer().store(self.cons, Ordering::Release);
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; nothing refers to it afterwards.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}
