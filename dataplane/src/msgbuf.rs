//! Message buffers and their allocator.
//!
//! # Layout (the original's `MsgBuffer`)
//!
//! One allocation holds `[pkthdr 0][data, max_data rounded up to 8][pkthdr 1]…[pkthdr n-1]`.
//! Packet 0 (header and the first data bytes) is contiguous, so a single-packet message goes out
//! as one segment with no copy; packet k ≥ 1 is its own header plus a slice of the data.
//!
//! # Allocator
//!
//! A binary buddy allocator over the caller's [`DmaRegion`]: power-of-two blocks from 64 B up,
//! split on demand, merged with their buddy when freed. Its metadata (a bitmap with one bit per
//! 64-byte block, marking the start of each free block) is carved from the start of the region;
//! free-list links live in the free blocks themselves. Nothing is allocated elsewhere.
//! Running out of memory is an [`AllocError`], never a panic.

use crate::dma::DmaRegion;
use crate::wire::PKT_HDR_LEN;
use core::ptr::NonNull;

const MIN_ORDER: u32 = 6;
const MAX_ORDER: u32 = 34;
const NORDERS: usize = (MAX_ORDER - MIN_ORDER + 1) as usize;
const NIL: u32 = u32::MAX;

/// Allocation failed: no free block large enough, or the size is beyond what a msgbuf can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The region has no free block of the needed size right now.
    OutOfMemory { requested: usize },
    /// The requested size exceeds the largest message the endpoint supports.
    TooLarge { requested: usize, max: usize },
}

impl core::fmt::Display for AllocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AllocError::OutOfMemory { requested } => write!(
                f,
                "no msgbuf memory for {requested} bytes (free msgbufs, let requests complete, or give the endpoint a \
                 larger region)"
            ),
            AllocError::TooLarge { requested, max } => {
                write!(f, "a {requested}-byte msgbuf exceeds the endpoint's {max}-byte maximum message size")
            }
        }
    }
}

impl core::error::Error for AllocError {}

/// A DMA-capable message buffer. Owned: moving it into `enqueue_request`/`enqueue_response`
/// hands it to the endpoint, which hands it back in the continuation (or frees it).
#[derive(Debug)]
#[must_use = "a msgbuf is memory of the endpoint: send it, or give it back with free_msg_buffer"]
pub struct MsgBuf {
    /// Points at header 0; the data starts `PKT_HDR_LEN` bytes later.
    base: NonNull<u8>,
    max_data: u32,
    data_size: u32,
}

// SAFETY: a MsgBuf uniquely owns its block of the DMA region (it is neither Copy nor Clone and
// the allocator hands each block out once), so sending it to another thread moves that ownership.
unsafe impl Send for MsgBuf {}

impl MsgBuf {
    /// Current message size in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.data_size as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data_size == 0
    }

    /// The size the buffer was allocated for: the largest `len()` it can take.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.max_data as usize
    }

    /// Sets the message size, up to `capacity()`. Returns false (and changes nothing) beyond it.
    #[inline]
    pub fn resize(&mut self, new_size: usize) -> bool {
        if new_size > self.max_data as usize {
            return false;
        }
        self.data_size = new_size as u32;
        true
    }

    /// The message data (`len()` bytes).
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the block holds `max_data >= data_size` data bytes after header 0 (see
        // `MsgBufHeap::alloc`); it is owned by this MsgBuf and the device only reads it.
        unsafe { core::slice::from_raw_parts(self.data_ptr(), self.data_size as usize) }
    }

    /// The message data, writable (`len()` bytes).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.data_ptr(), self.data_size as usize) }
    }

    #[inline]
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        // SAFETY: header 0 is PKT_HDR_LEN bytes inside the block.
        unsafe { self.base.as_ptr().add(PKT_HDR_LEN) }
    }

    /// Address of the header of packet `k` (k < packets for `max_data`).
    #[inline]
    pub(crate) fn hdr_ptr(&self, k: usize) -> *mut u8 {
        let off = if k == 0 { 0 } else { PKT_HDR_LEN + round8(self.max_data as usize) + (k - 1) * PKT_HDR_LEN };
        // SAFETY: the block holds headers for every packet of a `max_data`-byte message.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// The 56 header bytes of packet `k`, writable. Msgbuf memory is written by the CPU and only
    /// read by the device, so a reference is fine; `&mut self` means no packet of this buffer is
    /// queued (the endpoint owns queued buffers).
    #[inline]
    pub(crate) fn hdr_mut(&mut self, k: usize) -> &mut [u8; PKT_HDR_LEN] {
        // SAFETY: `hdr_ptr(k)` is PKT_HDR_LEN bytes inside this buffer's block (k < packets), and
        // `&mut self` makes the reference unique.
        unsafe { &mut *(self.hdr_ptr(k) as *mut [u8; PKT_HDR_LEN]) }
    }

    pub(crate) fn block_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

#[inline]
const fn round8(n: usize) -> usize {
    (n + 7) & !7
}

/// Packets needed for a message of `size` bytes (at least one, even for an empty message).
#[inline]
pub const fn num_pkts(size: usize, data_per_pkt: usize) -> usize {
    // One-packet messages, the common case, need no division.
    if size <= data_per_pkt {
        1
    } else {
        size.div_ceil(data_per_pkt)
    }
}

/// Bytes of one allocation that holds a `max_data`-byte message and all its packet headers.
#[inline]
pub const fn footprint(max_data: usize, data_per_pkt: usize) -> usize {
    PKT_HDR_LEN + round8(max_data) + (num_pkts(max_data, data_per_pkt) - 1) * PKT_HDR_LEN
}

#[inline]
fn order_for(bytes: usize) -> u32 {
    let b = bytes.max(1 << MIN_ORDER);
    usize::BITS - (b - 1).leading_zeros()
}

/// Allocator statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the allocator manages (the region less its metadata).
    pub capacity: usize,
    /// Bytes in free blocks.
    pub free: usize,
    /// Buffers handed out and not yet freed.
    pub live_buffers: usize,
}

/// Entries of the header memo (see [`HdrMemo`]).
const MEMO_ENTRIES: usize = 64;

/// Which headers recently written one-packet msgbufs hold, so that a buffer sent again with
/// the same headers but the request number (a client reusing its request buffer on the same
/// session, a server slot reusing its response buffer) gets only the word with the request
/// number rewritten instead of all 56 bytes and the IPv4 checksum.
///
/// An entry names a buffer's block, the session it was written for (`key`: session number,
/// generation and peer session, so a reused session number never matches) and the first eRPC
/// header word (request type and size). The endpoint is the only writer of header memory: the
/// application reaches a msgbuf's data only, and every header write goes through the memo. A
/// freed block loses its entry (the allocator writes its free-list links into it), so a reused
/// block never matches either. Direct-mapped: a collision only costs a full write.
#[derive(Clone, Copy)]
struct HdrMemo {
    entries: [MemoEntry; MEMO_ENTRIES],
}

#[derive(Clone, Copy)]
struct MemoEntry {
    block: usize,
    key: u64,
    word0: u32,
}

impl HdrMemo {
    const EMPTY: HdrMemo = HdrMemo { entries: [MemoEntry { block: 0, key: 0, word0: 0 }; MEMO_ENTRIES] };

    #[inline]
    fn index(block: usize) -> usize {
        (((block as u64) >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (u64::BITS - MEMO_ENTRIES.trailing_zeros()))
            as usize
    }
}

/// The buddy allocator behind msgbufs (see the module docs).
pub struct MsgBufHeap {
    region: DmaRegion,
    /// Start of the managed area (after the bitmap), 64-byte aligned.
    area: *mut u8,
    nblocks: u32,
    bitmap: *mut u8,
    heads: [u32; NORDERS],
    data_per_pkt: usize,
    max_msg_size: usize,
    stats: HeapStats,
    memo: HdrMemo,
}

// SAFETY: the heap owns its region exclusively; its raw pointers point into that region only.
unsafe impl Send for MsgBufHeap {}

impl MsgBufHeap {
    /// Takes over `region`. `data_per_pkt` and `max_msg_size` fix the msgbuf layout and the
    /// largest message. Returns `None` if the region is too small to hold even its metadata.
    pub fn new(region: DmaRegion, data_per_pkt: usize, max_msg_size: usize) -> Option<Self> {
        let base = region.base().as_ptr();
        let align_pad = base.align_offset(64);
        let len = region.len().checked_sub(align_pad)?;
        // Solve for n blocks: n*64 + bitmap(n) <= len, with the bitmap rounded up to 64 B.
        let mut n = len / 64;
        while n > 0 && n * 64 + (n.div_ceil(8)).div_ceil(64) * 64 > len {
            n -= 1;
        }
        if n == 0 || n >= NIL as usize {
            return None;
        }
        let bitmap_bytes = (n.div_ceil(8)).div_ceil(64) * 64;
        // SAFETY: align_pad + bitmap_bytes + n*64 <= region.len(), checked above.
        let bitmap = unsafe { base.add(align_pad) };
        // SAFETY: the bitmap lies inside the region and nobody else uses it.
        unsafe { core::ptr::write_bytes(bitmap, 0, bitmap_bytes) };
        // SAFETY: see above.
        let area = unsafe { bitmap.add(bitmap_bytes) };
        let mut heap = MsgBufHeap {
            region,
            area,
            nblocks: n as u32,
            bitmap,
            heads: [NIL; NORDERS],
            data_per_pkt,
            max_msg_size,
            stats: HeapStats { capacity: n * 64, free: 0, live_buffers: 0 },
            memo: HdrMemo::EMPTY,
        };
        let mut off = 0usize;
        while off < n {
            let mut o = MAX_ORDER;
            loop {
                let blocks = 1usize << (o - MIN_ORDER);
                if off % blocks == 0 && off + blocks <= n {
                    break;
                }
                o -= 1;
            }
            heap.push(off as u32, o);
            heap.stats.free += 1 << o;
            off += 1 << (o - MIN_ORDER);
        }
        Some(heap)
    }

    pub fn region(&self) -> &DmaRegion {
        &self.region
    }

    pub fn stats(&self) -> HeapStats {
        self.stats
    }

    pub fn data_per_pkt(&self) -> usize {
        self.data_per_pkt
    }

    pub fn max_msg_size(&self) -> usize {
        self.max_msg_size
    }

    /// Allocates a msgbuf for messages of up to `max_data` bytes; its `len()` starts at `max_data`.
    pub fn alloc(&mut self, max_data: usize) -> Result<MsgBuf, AllocError> {
        if max_data > self.max_msg_size {
            return Err(AllocError::TooLarge { requested: max_data, max: self.max_msg_size });
        }
        let bytes = footprint(max_data, self.data_per_pkt);
        let p = self.alloc_raw(bytes).ok_or(AllocError::OutOfMemory { requested: max_data })?;
        Ok(MsgBuf { base: p, max_data: max_data as u32, data_size: max_data as u32 })
    }

    /// Returns a msgbuf to the allocator. A buffer from another heap is refused (returned).
    pub fn free(&mut self, buf: MsgBuf) -> Result<(), MsgBuf> {
        let bytes = footprint(buf.max_data as usize, self.data_per_pkt);
        if !self.owns(buf.block_ptr(), bytes) {
            return Err(buf);
        }
        self.memo_forget(&buf);
        self.free_raw(buf.block_ptr(), bytes);
        Ok(())
    }

    /// Whether `buf`'s headers are the ones last written for session `key` with first header
    /// word `word0` (see [`HdrMemo`]).
    #[inline]
    pub(crate) fn memo_hit(&self, buf: &MsgBuf, key: u64, word0: u32) -> bool {
        let b = buf.block_ptr() as usize;
        let e = &self.memo.entries[HdrMemo::index(b)];
        e.block == b && e.key == key && e.word0 == word0
    }

    /// Records that `buf` now holds one-packet headers for session `key`, first word `word0`.
    #[inline]
    pub(crate) fn memo_set(&mut self, buf: &MsgBuf, key: u64, word0: u32) {
        let b = buf.block_ptr() as usize;
        self.memo.entries[HdrMemo::index(b)] = MemoEntry { block: b, key, word0 };
    }

    /// Forgets what `buf`'s headers hold (they are being rewritten otherwise, or freed).
    #[inline]
    pub(crate) fn memo_forget(&mut self, buf: &MsgBuf) {
        let b = buf.block_ptr() as usize;
        let e = &mut self.memo.entries[HdrMemo::index(b)];
        if e.block == b {
            e.block = 0;
        }
    }

    /// Bytes of the block holding `buf` (its footprint rounded up to the allocator's block size).
    pub fn block_bytes(&self, buf: &MsgBuf) -> usize {
        1 << order_for(footprint(buf.max_data as usize, self.data_per_pkt))
    }

    /// Whether `p..p+len` is inside the managed area.
    pub fn owns(&self, p: *const u8, len: usize) -> bool {
        let s = self.area as usize;
        let a = p as usize;
        a >= s && a + len <= s + self.nblocks as usize * 64
    }

    /// Allocates a raw block of at least `bytes` bytes (for rings and control packets).
    pub fn alloc_raw(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        let order = order_for(bytes);
        if order > MAX_ORDER {
            return None;
        }
        let mut o = order;
        while o <= MAX_ORDER && self.heads[(o - MIN_ORDER) as usize] == NIL {
            o += 1;
        }
        if o > MAX_ORDER {
            return None;
        }
        let b = self.heads[(o - MIN_ORDER) as usize];
        self.remove(b, o);
        while o > order {
            o -= 1;
            self.push(b + (1 << (o - MIN_ORDER)), o);
        }
        self.stats.free -= 1 << order;
        self.stats.live_buffers += 1;
        // SAFETY: b < nblocks, so the block lies inside the area.
        NonNull::new(unsafe { self.area.add(b as usize * 64) })
    }

    /// Frees a block from `alloc_raw` of the same `bytes`.
    pub fn free_raw(&mut self, p: *mut u8, bytes: usize) {
        let mut order = order_for(bytes);
        let mut b = ((p as usize - self.area as usize) / 64) as u32;
        self.stats.free += 1 << order;
        self.stats.live_buffers -= 1;
        while order < MAX_ORDER {
            let buddy = b ^ (1 << (order - MIN_ORDER));
            if buddy as u64 + (1u64 << (order - MIN_ORDER)) > self.nblocks as u64
                || !self.bit(buddy)
                || self.node(buddy).2 != order as u8
            {
                break;
            }
            self.remove(buddy, order);
            b = b.min(buddy);
            order += 1;
        }
        self.push(b, order);
    }

    fn bit(&self, b: u32) -> bool {
        // SAFETY: b < nblocks, and the bitmap has nblocks bits.
        unsafe { self.bitmap.add(b as usize / 8).read() & (1 << (b % 8)) != 0 }
    }

    fn set_bit(&mut self, b: u32, v: bool) {
        // SAFETY: as in `bit`.
        unsafe {
            let p = self.bitmap.add(b as usize / 8);
            let m = 1u8 << (b % 8);
            p.write(if v { p.read() | m } else { p.read() & !m });
        }
    }

    /// Reads the free-list node of free block `b`: (next, prev, order).
    fn node(&self, b: u32) -> (u32, u32, u8) {
        // SAFETY: free blocks are at least 64 bytes inside the area; the node is their first 9
        // bytes. Only the CPU writes msgbuf memory (the device reads it).
        unsafe {
            let p = self.area.add(b as usize * 64);
            let next = (p as *const u32).read_unaligned();
            let prev = (p.add(4) as *const u32).read_unaligned();
            (next, prev, p.add(8).read())
        }
    }

    fn set_node(&mut self, b: u32, next: u32, prev: u32, order: u8) {
        // SAFETY: as in `node`.
        unsafe {
            let p = self.area.add(b as usize * 64);
            (p as *mut u32).write_unaligned(next);
            (p.add(4) as *mut u32).write_unaligned(prev);
            p.add(8).write(order);
        }
    }

    fn push(&mut self, b: u32, order: u32) {
        let i = (order - MIN_ORDER) as usize;
        let head = self.heads[i];
        self.set_node(b, head, NIL, order as u8);
        if head != NIL {
            let (n, _, o) = self.node(head);
            self.set_node(head, n, b, o);
        }
        self.heads[i] = b;
        self.set_bit(b, true);
    }

    fn remove(&mut self, b: u32, order: u32) {
        let (next, prev, _) = self.node(b);
        if prev == NIL {
            self.heads[(order - MIN_ORDER) as usize] = next;
        } else {
            let (_, pp, o) = self.node(prev);
            self.set_node(prev, next, pp, o);
        }
        if next != NIL {
            let (nn, _, o) = self.node(next);
            self.set_node(next, nn, prev, o);
        }
        self.set_bit(b, false);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn heap(bytes: usize) -> MsgBufHeap {
        let mem: &'static mut [u8] = std::vec![0u8; bytes].leak();
        MsgBufHeap::new(DmaRegion::from_static(mem, 0x1000_0000), 968, 8 << 20).unwrap()
    }

    #[test]
    fn layout_matches_original() {
        assert_eq!(num_pkts(0, 968), 1);
        assert_eq!(num_pkts(968, 968), 1);
        assert_eq!(num_pkts(969, 968), 2);
        assert_eq!(footprint(968, 968), 1024);
        assert_eq!(footprint(969, 968), 56 + 976 + 56);
        let mut h = heap(1 << 20);
        let b = h.alloc(2000).unwrap();
        assert_eq!(b.hdr_ptr(1) as usize - b.block_ptr() as usize, 56 + 2000);
        assert_eq!(b.hdr_ptr(2) as usize - b.block_ptr() as usize, 56 + 2000 + 56);
        assert_eq!(b.data_ptr() as usize - b.block_ptr() as usize, 56);
        h.free(b).unwrap();
    }

    #[test]
    fn exhaustion_is_an_error_and_free_merges() {
        let mut h = heap(1 << 20);
        let cap = h.stats().free;
        let mut v = Vec::new();
        loop {
            match h.alloc(968) {
                Ok(b) => v.push(b),
                Err(e) => {
                    assert_eq!(e, AllocError::OutOfMemory { requested: 968 });
                    break;
                }
            }
        }
        assert!(v.len() >= 1000, "only {} buffers", v.len());
        assert!(matches!(h.alloc(9 << 20), Err(AllocError::TooLarge { .. })));
        // Buffers are disjoint and writable.
        for (i, b) in v.iter_mut().enumerate() {
            b.data_mut().fill(i as u8);
        }
        for (i, b) in v.iter().enumerate() {
            assert!(b.data().iter().all(|&x| x == i as u8));
        }
        for b in v.drain(..) {
            h.free(b).unwrap();
        }
        assert_eq!(h.stats().free, cap);
        assert_eq!(h.stats().live_buffers, 0);
        // Fully merged again: a buffer that needs the largest (512 KiB) block fits once more.
        assert!(footprint(400_000, 968) > 256 << 10);
        let big = h.alloc(400_000).unwrap();
        h.free(big).unwrap();
    }

    #[test]
    fn foreign_buffer_is_refused() {
        let mut a = heap(1 << 16);
        let mut b = heap(1 << 16);
        let x = a.alloc(10).unwrap();
        let x = b.free(x).unwrap_err();
        a.free(x).unwrap();
    }

    #[test]
    fn resize_within_capacity_only() {
        let mut h = heap(1 << 16);
        let mut x = h.alloc(100).unwrap();
        assert!(x.resize(0));
        assert!(x.is_empty());
        assert!(x.resize(100));
        assert!(!x.resize(101));
        assert_eq!(x.len(), 100);
        h.free(x).unwrap();
    }
}
