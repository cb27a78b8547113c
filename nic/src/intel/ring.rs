//! Descriptor rings shared by the igb and ixgbe families (both use the advanced descriptors of
//! [`super::desc`]). The rings live in device-writable DMA memory and are only touched through
//! volatile accesses on raw pointers; the family modules supply the register offsets. No heap:
//! the bookkeeping is fixed-size, for rings of up to [`MAX_RING`] descriptors.
//!
//! * [`RxRing`]: one buffer per descriptor. Received buffers are lent to the dataplane and
//!   reposted — in ring order, as the tail register requires — once returned; buffers returned
//!   out of order wait for their predecessors.
//! * [`TxRing`]: one descriptor per packet segment, zero-copy from the msgbufs. **Unsignaled**:
//!   report-status (RS) is requested on one packet in `rs_interval`, and the write-back of that
//!   one descriptor reclaims every descriptor before it.

use super::desc::*;
use crate::dma::DmaRange;
use core::mem::offset_of;
use core::sync::atomic::{fence, Ordering};
use erpc_dataplane::transport::RxPacket;

/// Largest ring (descriptors), the bound of both families' RDLEN/TDLEN use here.
pub const MAX_RING: u16 = 4096;

/// RS-marked descriptors a TX ring keeps track of at once. A packet that would be marked while
/// this many wait for their write-back is sent unmarked (the marks in flight already guarantee
/// a write-back to wait for); its descriptors are reclaimed with the next mark after it.
pub const MAX_RS_MARKS: usize = 64;

/// One descriptor ring in its own memory.
#[derive(Debug)]
struct RingMem {
    mem: DmaRange,
    len: u16,
}

impl RingMem {
    fn new(mem: DmaRange, len: u16) -> RingMem {
        assert!(
            len > 0 && len <= MAX_RING && mem.len() >= len as usize * DESC_SIZE,
            "a ring of {len} descriptors in {} bytes",
            mem.len()
        );
        RingMem { mem, len }
    }

    /// The index after `i`, wrapping without a division (rings need not be powers of two).
    fn next(&self, i: u16) -> u16 {
        if i + 1 == self.len {
            0
        } else {
            i + 1
        }
    }

    fn desc(&self, i: u16) -> *mut u8 {
        debug_assert!(i < self.len);
        // SAFETY: `i < len` and the ring is at least `len * DESC_SIZE` bytes (checked in `new`).
        unsafe { self.mem.cpu().as_ptr().add(i as usize * DESC_SIZE) }
    }

    /// Volatile read of the 32-bit word at byte `off` of descriptor `i`.
    fn read_u32(&self, i: u16, off: usize) -> u32 {
        debug_assert!(off <= DESC_SIZE - 4 && off % 4 == 0);
        // SAFETY: inside descriptor `i` (off <= 12), 4-byte aligned (the ring memory is; see
        // `Device::open_queue`); the range is ours (DmaRange's contract); device-writable memory
        // is read with a volatile load, never through a reference.
        u32::from_le(unsafe { self.desc(i).add(off).cast::<u32>().read_volatile() })
    }

    /// Volatile write of a whole descriptor.
    fn write<T: zerocopy::IntoBytes + zerocopy::Immutable>(&self, i: u16, d: &T) {
        let bytes = d.as_bytes();
        debug_assert_eq!(bytes.len(), DESC_SIZE);
        let word = |k: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[k..k + 8]);
            u64::from_ne_bytes(w)
        };
        let (lo, hi) = (word(0), word(8));
        // SAFETY: descriptor `i` is 16 bytes, 16-byte aligned, inside the range we own; volatile
        // stores only.
        unsafe {
            let p = self.desc(i).cast::<u64>();
            p.write_volatile(lo);
            p.add(1).write_volatile(hi);
        }
    }
}

/// One bit per descriptor of the largest ring.
#[derive(Clone, Debug)]
struct Bits([u64; MAX_RING as usize / 64]);

impl Bits {
    const EMPTY: Bits = Bits([0; MAX_RING as usize / 64]);

    fn get(&self, i: u16) -> bool {
        self.0[i as usize / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: u16, on: bool) {
        let (w, b) = (i as usize / 64, i % 64);
        if on {
            self.0[w] |= 1 << b;
        } else {
            self.0[w] &= !(1 << b);
        }
    }
}

/// The receive ring. Each descriptor is in one of three states: **posted** (owned by the device,
/// maybe already written back: the descriptors `[next, refill)`, cyclically), **lent** (its
/// buffer is with the dataplane: the `lent` bit) or **returned** (given back, waiting to be
/// reposted in ring order: neither).
#[derive(Debug)]
pub(crate) struct RxRing {
    ring: RingMem,
    bufs: DmaRange,
    buf_size: u32,
    lent: Bits,
    /// Next descriptor the device will write back.
    next: u16,
    /// Next descriptor to repost.
    refill: u16,
    err_mask: u32,
    /// Inside a frame that spans several descriptors: drop up to and including its EOP.
    discarding: bool,
}

impl RxRing {
    /// A ring of `len` descriptors in `ring` with one `buf_size` buffer each in `bufs`.
    /// Writes every descriptor but the last (one slot stays empty so that a full ring differs
    /// from an empty one); the caller writes [`RxRing::tail`] to RDT after enabling the queue.
    pub fn new(ring: DmaRange, len: u16, bufs: DmaRange, buf_size: u32, err_mask: u32) -> RxRing {
        assert!(bufs.len() >= len as usize * buf_size as usize, "{len} buffers of {buf_size} in {} bytes", bufs.len());
        let mut r = RxRing {
            ring: RingMem::new(ring, len),
            bufs,
            buf_size,
            lent: Bits::EMPTY,
            next: 0,
            refill: 0,
            err_mask,
            discarding: false,
        };
        for i in 0..len - 1 {
            r.post(i);
        }
        r.refill = len - 1;
        r
    }

    fn post(&mut self, i: u16) {
        let d = AdvRxRead { pkt_addr: (self.bufs.bus() + i as u64 * self.buf_size as u64).into(), hdr_addr: 0.into() };
        self.ring.write(i, &d);
    }

    /// Whether descriptor `i` is posted: in `[next, refill)`, cyclically.
    fn posted(&self, i: u16) -> bool {
        if self.next <= self.refill {
            self.next <= i && i < self.refill
        } else {
            i >= self.next || i < self.refill
        }
    }

    /// The value for the tail register (RDT): one past the last posted descriptor.
    pub fn tail(&self) -> u16 {
        self.refill
    }

    /// Lends up to `out.len()` written-back frames (`id` = descriptor index). Frames the device
    /// flagged, or that span several descriptors, are returned to the ring at once and counted
    /// in `dropped`.
    pub fn poll(&mut self, out: &mut [RxPacket], dropped: &mut u64) -> usize {
        let mut n = 0;
        while n < out.len() {
            let i = self.next;
            if i == self.refill {
                break; // nothing posted: the one unposted slot
            }
            let status = self.ring.read_u32(i, offset_of!(AdvRxWb, status_error));
            if status & RXD_STAT_DD == 0 {
                break;
            }
            // Read the rest of the write-back only after seeing DD.
            fence(Ordering::Acquire);
            // The length is the low half of the last word (`length`, then `vlan`).
            let len = (self.ring.read_u32(i, offset_of!(AdvRxWb, length)) & 0xffff) as u16;
            self.next = self.ring.next(i);
            let eop = status & RXD_STAT_EOP != 0;
            if self.discarding || !eop || len as u32 > self.buf_size {
                // A frame larger than one buffer: drop every piece of it, counted once. The
                // descriptor is returned (not posted, not lent).
                if !self.discarding {
                    *dropped += 1;
                }
                self.discarding = !eop;
                continue;
            }
            if status & self.err_mask != 0 {
                *dropped += 1;
                continue;
            }
            self.lent.set(i, true);
            // SAFETY: buffer `i` lies inside `bufs` (`i < len`, sizes checked in `new`).
            let data = unsafe { self.bufs.cpu().add(i as usize * self.buf_size as usize) };
            out[n] = RxPacket { data, len: len as u32, id: i as u32 };
            n += 1;
        }
        n
    }

    /// Takes back a lent buffer. Returns false (and changes nothing) for an id that is not
    /// lent: a double release or a forged id.
    pub fn give_back(&mut self, id: u32) -> bool {
        match u16::try_from(id) {
            Ok(i) if i < self.ring.len && self.lent.get(i) => {
                self.lent.set(i, false);
                true
            }
            _ => false,
        }
    }

    /// Reposts returned buffers in ring order; returns the new tail if it moved.
    pub fn repost(&mut self) -> Option<u16> {
        let start = self.refill;
        // `refill` is never posted; it is returned unless lent. One slot stays unposted.
        while !self.lent.get(self.refill) && self.ring.next(self.refill) != self.next {
            debug_assert!(!self.posted(self.refill));
            self.post(self.refill);
            self.refill = self.ring.next(self.refill);
        }
        (self.refill != start).then_some(self.refill)
    }
}

/// One RS-marked descriptor waiting for its write-back.
#[derive(Clone, Copy, Debug)]
struct RsMark {
    /// Its descriptor index.
    desc: u16,
    /// Packets accepted up to and including its packet.
    pkts: u64,
}

/// The marks waiting for their write-back, oldest first (a fixed-size FIFO).
#[derive(Clone, Debug)]
struct Marks {
    slots: [RsMark; MAX_RS_MARKS],
    head: usize,
    count: usize,
}

impl Marks {
    const EMPTY: Marks = Marks { slots: [RsMark { desc: 0, pkts: 0 }; MAX_RS_MARKS], head: 0, count: 0 };

    fn front(&self) -> Option<RsMark> {
        (self.count > 0).then(|| self.slots[self.head])
    }

    fn pop_front(&mut self) {
        debug_assert!(self.count > 0);
        self.head = (self.head + 1) % MAX_RS_MARKS;
        self.count -= 1;
    }

    fn is_full(&self) -> bool {
        self.count == MAX_RS_MARKS
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push_back(&mut self, m: RsMark) {
        debug_assert!(!self.is_full());
        self.slots[(self.head + self.count) % MAX_RS_MARKS] = m;
        self.count += 1;
    }

    fn clear(&mut self) {
        self.head = 0;
        self.count = 0;
    }
}

/// TX buffers are split at multiples of this many bytes of bus address: one descriptor never
/// spans two 2 MiB hugepages. Hardware does not care (the IOMMU translates each page), but
/// QEMU's emulated NICs map a descriptor's buffer in one piece and drop the whole packet when
/// the mapping comes back shorter, which happens when the two pages are not adjacent in guest
/// memory (QEMU `hw/net/net_tx_pkt.c`, `net_tx_pkt_add_raw_fragment_pci`; `igb_core.c` then
/// skips the packet). The endpoint's msgbuf region spans many hugepages, so a multi-packet
/// message has a packet across a boundary every 2 MiB.
pub const DMA_SPLIT: u64 = 2 << 20;
#[derive(Debug)]
pub(crate) struct TxRing {
    ring: RingMem,
    /// Next free descriptor (the tail register's value).
    tail: u16,
    /// Oldest descriptor not yet known to be done.
    clean: u16,
    marks: Marks,
    rs_interval: u32,
    since_rs: u32,
    accepted: u64,
    reclaimed: u64,
}

impl TxRing {
    /// A ring of `len` descriptors in `ring`, requesting a write-back every `rs_interval`
    /// packets.
    pub fn new(ring: DmaRange, len: u16, rs_interval: u32) -> TxRing {
        let ring = RingMem::new(ring, len);
        let z = AdvTxRead::default();
        for i in 0..ring.len {
            ring.write(i, &z);
        }
        TxRing {
            ring,
            tail: 0,
            clean: 0,
            marks: Marks::EMPTY,
            rs_interval: rs_interval.max(1),
            since_rs: 0,
            accepted: 0,
            reclaimed: 0,
        }
    }

    pub fn len(&self) -> u16 {
        self.ring.len
    }

    /// Descriptors in use (posted and not known done).
    pub fn in_use(&self) -> u16 {
        if self.tail >= self.clean {
            self.tail - self.clean
        } else {
            self.tail + self.ring.len - self.clean
        }
    }

    /// Packets the device is known to have read.
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed
    }

    /// Reclaims descriptors up to the newest RS-marked one the device has written back.
    pub fn reclaim(&mut self) {
        while let Some(m) = self.marks.front() {
            if self.ring.read_u32(m.desc, offset_of!(AdvTxWb, status)) & TXD_STAT_DD == 0 {
                break;
            }
            self.marks.pop_front();
            self.clean = self.ring.next(m.desc);
            self.reclaimed = m.pkts;
        }
    }

    /// Queues one packet of up to two segments `(bus address, len)`, each shorter than 16 KiB
    /// (the caller checks the frame against the MTU); empty segments are skipped, and a segment
    /// that spans a [`DMA_SPLIT`] boundary of bus addresses goes in two descriptors. False when
    /// the ring is full.
    pub fn push(&mut self, segs: &[(u64, u32)]) -> bool {
        let mut parts = [(0u64, 0u32); 4];
        let mut count = 0;
        for (k, &(bus, len)) in segs.iter().filter(|s| s.1 > 0).enumerate() {
            assert!(k < 2, "a packet of more than two segments");
            let room = DMA_SPLIT - bus % DMA_SPLIT;
            if (len as u64) > room {
                parts[count] = (bus, room as u32);
                parts[count + 1] = (bus + room, len - room as u32);
                count += 2;
            } else {
                parts[count] = (bus, len);
                count += 1;
            }
        }
        let segs = &parts[..count];
        debug_assert!(segs.iter().all(|s| s.1 < 1 << 14));
        if segs.is_empty() {
            // Nothing for the device to read: accepted, and counted like any other packet.
            self.accepted += 1;
            if self.marks.is_empty() && self.in_use() == 0 {
                self.reclaimed = self.accepted;
            }
            return true;
        }
        let n = self.ring.len;
        if self.in_use() + segs.len() as u16 > n - 1 {
            self.reclaim();
            if self.in_use() + segs.len() as u16 > n - 1 {
                return false;
            }
        }
        let total: u32 = segs.iter().map(|s| s.1).sum();
        self.since_rs += 1;
        // Also request a write-back when the ring is half full with none outstanding, so that
        // reclaim always has one to wait for.
        let half = self.in_use() + segs.len() as u16 >= n / 2;
        let rs = (self.since_rs >= self.rs_interval || (half && self.marks.is_empty())) && !self.marks.is_full();
        for (k, &(bus, len)) in segs.iter().enumerate() {
            let last = k + 1 == segs.len();
            let mut cmd = len | TXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS;
            if last {
                cmd |= TXD_CMD_EOP;
                if rs {
                    cmd |= TXD_CMD_RS;
                }
            }
            let d = AdvTxRead {
                buffer_addr: bus.into(),
                cmd_type_len: cmd.into(),
                olinfo_status: (total << TXD_PAYLEN_SHIFT).into(),
            };
            self.ring.write(self.tail, &d);
            if last && rs {
                self.marks.push_back(RsMark { desc: self.tail, pkts: self.accepted + 1 });
                self.since_rs = 0;
            }
            self.tail = self.ring.next(self.tail);
        }
        self.accepted += 1;
        true
    }

    /// Marks everything done, once the caller saw the head register reach the tail.
    pub fn all_done(&mut self) {
        self.marks.clear();
        self.clean = self.tail;
        self.reclaimed = self.accepted;
    }

    /// Forgets every queued descriptor and starts again at index 0, after the caller disabled
    /// the queue and reset its head and tail registers. The device will read none of them.
    pub fn restart(&mut self) {
        let z = AdvTxRead::default();
        for i in 0..self.ring.len {
            self.ring.write(i, &z);
        }
        self.tail = 0;
        self.clean = 0;
        self.since_rs = 0;
        self.all_done();
    }

    pub fn tail(&self) -> u16 {
        self.tail
    }
}

#[cfg(test)]
mod tests {
    //! The rings against a test playing the device: it reads descriptors and writes
    //! write-backs in the ring memory, as the NIC would.
    use super::*;
    use core::ptr::NonNull;
    use std::vec;
    use std::vec::Vec;

    /// Page-aligned memory for a ring and its buffers, kept alive by the test.
    struct Mem(Vec<u128>);

    impl Mem {
        fn new(bytes: usize) -> Mem {
            Mem(vec![0; bytes.div_ceil(16)])
        }

        fn range(&mut self) -> DmaRange {
            let p = NonNull::new(self.0.as_mut_ptr().cast::<u8>()).unwrap();
            // SAFETY: the Vec outlives the ring in each test and is touched only through the
            // ring and `dev_*` below (raw pointers); bus address = CPU address.
            unsafe { DmaRange::new(p, p.as_ptr() as u64, self.0.len() * 16) }
        }

        fn word(&self, desc: usize, off: usize) -> *mut u32 {
            // SAFETY: test descriptors lie inside the Vec.
            unsafe { self.0.as_ptr().cast::<u8>().add(desc * 16 + off).cast::<u32>().cast_mut() }
        }

        /// The device writes back RX descriptor `i`: DD, EOP as given, length.
        fn rx_writeback(&self, i: usize, len: u16, eop: bool) {
            // SAFETY: descriptor `i` is inside the ring (tests pass small indices).
            unsafe {
                self.word(i, 12).write_volatile(len as u32);
                self.word(i, 8).write_volatile(RXD_STAT_DD | if eop { RXD_STAT_EOP } else { 0 });
            }
        }

        /// The buffer address RX descriptor `i` was posted with (the read format's first word).
        fn rx_posted_addr(&self, i: usize) -> u64 {
            // SAFETY: as above.
            unsafe { self.word(i, 0).cast::<u64>().read_volatile() }
        }

        fn tx_cmd(&self, i: usize) -> u32 {
            // SAFETY: as above.
            unsafe { self.word(i, 8).read_volatile() }
        }

        fn tx_done(&self, i: usize) {
            // SAFETY: as above.
            unsafe { self.word(i, 12).write_volatile(TXD_STAT_DD) }
        }
    }

    fn rx(len: u16) -> (Mem, Mem, RxRing) {
        let (mut ring, mut bufs) = (Mem::new(len as usize * 16), Mem::new(len as usize * 64));
        let r = RxRing::new(ring.range(), len, bufs.range(), 64, 1 << 31);
        (ring, bufs, r)
    }

    #[test]
    fn rx_reposts_in_ring_order_whatever_the_release_order() {
        let (dev, bufs, mut r) = rx(8);
        assert_eq!(r.tail(), 7, "all but one posted");
        assert_eq!(dev.rx_posted_addr(3), bufs.0.as_ptr() as u64 + 3 * 64);
        for i in 0..3 {
            dev.rx_writeback(i, 60, true);
        }
        let mut out = [RxPacket::EMPTY; 8];
        let mut dropped = 0;
        assert_eq!(r.poll(&mut out, &mut dropped), 3);
        assert_eq!((out[0].id, out[2].id, out[1].len), (0, 2, 60));
        // Released out of order: 2 then 0 then 1; the tail moves only once 0 is back.
        assert!(r.give_back(2));
        assert_eq!(r.repost(), Some(0), "7 (never lent) posted now that the device moved on; 0 is lent");
        assert!(r.give_back(0));
        assert!(!r.give_back(0), "a double release is refused");
        assert!(!r.give_back(9) && !r.give_back(u32::MAX), "forged ids are refused");
        assert_eq!(r.repost(), Some(1), "0 reposted; 1 is still lent");
        assert!(r.give_back(1));
        assert_eq!(r.repost(), Some(2), "1 reposted; 2 would leave no empty slot");
    }

    #[test]
    fn rx_drops_a_frame_spanning_buffers_once() {
        let (dev, _bufs, mut r) = rx(8);
        dev.rx_writeback(0, 64, false);
        dev.rx_writeback(1, 64, false);
        dev.rx_writeback(2, 10, true);
        dev.rx_writeback(3, 42, true);
        let mut out = [RxPacket::EMPTY; 4];
        let mut dropped = 0;
        assert_eq!(r.poll(&mut out, &mut dropped), 1);
        assert_eq!((out[0].id, out[0].len, dropped), (3, 42, 1));
        assert_eq!(r.repost(), Some(3), "7 and the dropped 0, 1, 2 reposted at once; 3 is lent");
    }

    /// The buffer address and length of TX descriptor `i`.
    fn tx_desc(ring: &Mem, i: usize) -> (u64, u32, u32) {
        // SAFETY: descriptor `i` is inside the ring.
        let addr = unsafe { ring.word(i, 0).cast::<u64>().read_volatile() };
        let cmd = ring.tx_cmd(i);
        (addr, cmd & 0xFFFF, cmd & TXD_CMD_EOP)
    }

    #[test]
    fn tx_splits_a_segment_across_a_hugepage_boundary() {
        let mut ring = Mem::new(64 * 16);
        let mut t = TxRing::new(ring.range(), 64, 1);
        let b = 7 * DMA_SPLIT;
        // Header before the boundary, data across it: three descriptors, EOP on the last only.
        assert!(t.push(&[(b - 1000, 56), (b - 600, 1458)]));
        assert_eq!(t.in_use(), 3);
        assert_eq!(tx_desc(&ring, 0), (b - 1000, 56, 0));
        assert_eq!(tx_desc(&ring, 1), (b - 600, 600, 0));
        assert_eq!(tx_desc(&ring, 2), (b, 858, TXD_CMD_EOP));
        // Ending exactly at the boundary, or starting at it, is one descriptor.
        assert!(t.push(&[(b - 100, 100)]));
        assert!(t.push(&[(b, 1500)]));
        assert_eq!(t.in_use(), 5);
        assert_eq!(tx_desc(&ring, 3), (b - 100, 100, TXD_CMD_EOP));
        assert_eq!(tx_desc(&ring, 4), (b, 1500, TXD_CMD_EOP));
        // Both segments across boundaries: four descriptors.
        assert!(t.push(&[(b - 10, 56), (2 * b + DMA_SPLIT - 20, 1458)]));
        assert_eq!(t.in_use(), 9);
        assert_eq!(tx_desc(&ring, 5), (b - 10, 10, 0));
        assert_eq!(tx_desc(&ring, 6), (b, 46, 0));
        assert_eq!(tx_desc(&ring, 8), (2 * b + DMA_SPLIT, 1438, TXD_CMD_EOP));
    }

    #[test]
    #[should_panic(expected = "more than two segments")]
    fn tx_refuses_a_third_segment_even_when_none_is_split() {
        let mut ring = Mem::new(64 * 16);
        let mut t = TxRing::new(ring.range(), 64, 1);
        t.push(&[(0x1000, 10), (0x2000, 10), (0x3000, 10)]);
    }

    #[test]
    fn tx_marks_are_bounded_and_reclaim_still_progresses() {
        let mut ring = Mem::new(512 * 16);
        let mut t = TxRing::new(ring.range(), 512, 1);
        // rs_interval 1 asks for a write-back on every packet; only MAX_RS_MARKS can wait.
        for k in 0..200u64 {
            assert!(t.push(&[(0x1000 + k, 60)]));
        }
        let marked = (0..200).filter(|&i| ring.tx_cmd(i) & TXD_CMD_RS != 0).count();
        assert_eq!(marked, MAX_RS_MARKS);
        // The device finishes everything it was given; only marked descriptors are written back.
        for i in 0..200 {
            if ring.tx_cmd(i) & TXD_CMD_RS != 0 {
                ring.tx_done(i);
            }
        }
        t.reclaim();
        assert_eq!(t.reclaimed(), MAX_RS_MARKS as u64, "reclaimed up to the last mark");
        assert_eq!(t.in_use(), 200 - MAX_RS_MARKS as u16);
        // The next packets are marked again, and their write-back reclaims the unmarked ones.
        assert!(t.push(&[(0x9000, 60)]));
        assert_ne!(ring.tx_cmd(200) & TXD_CMD_RS, 0);
        ring.tx_done(200);
        t.reclaim();
        assert_eq!((t.reclaimed(), t.in_use()), (201, 0));
    }

    #[test]
    fn tx_skips_empty_segments_and_fills_up_to_one_free_slot() {
        let mut ring = Mem::new(64 * 16);
        let mut t = TxRing::new(ring.range(), 64, 16);
        assert!(t.push(&[(0x1000, 42), (0, 0)]));
        assert_eq!(ring.tx_cmd(0) & 0xFFFF, 42);
        assert_ne!(ring.tx_cmd(0) & TXD_CMD_EOP, 0, "one segment: its descriptor ends the packet");
        let mut n = 1;
        while t.push(&[(0x2000, 100), (0x3000, 100)]) {
            n += 1;
        }
        assert_eq!(t.in_use(), 63, "a ring of 64 holds 63 descriptors");
        assert_eq!(n, 32);
    }
}
