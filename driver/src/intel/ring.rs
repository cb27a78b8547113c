//! Descriptor rings shared by the igb and ixgbe families (both use the advanced descriptors of
//! [`super::desc`]). The rings live in device-writable DMA memory and are only touched through
//! volatile accesses on raw pointers; the family modules supply the register offsets.
//!
//! * [`RxRing`]: one 2 KiB buffer per descriptor. Received buffers are lent to the dataplane
//!   and reposted — in ring order, as the tail register requires — once returned; buffers
//!   returned out of order wait for their predecessors.
//! * [`TxRing`]: one descriptor per packet segment, zero-copy from the msgbufs. **Unsignaled**:
//!   report-status (RS) is requested on one packet in `rs_interval`, and the write-back of that
//!   one descriptor reclaims every descriptor before it.

use super::desc::*;
use core::mem::offset_of;
use erpc_dataplane::transport::RxPacket;
use erpc_hugepages::DmaSlice;
use std::sync::atomic::{fence, Ordering};

/// Where one descriptor ring lives, and its number of descriptors. Only made by the rings'
/// `unsafe` constructors, whose contract keeps the memory alive and ours.
#[derive(Clone, Copy, Debug)]
struct RingMem {
    mem: DmaSlice<'static>,
    len: u16,
}

impl RingMem {
    /// # Safety
    /// As the ring constructors': `mem` stays mapped while the ring exists and nothing else
    /// uses it.
    unsafe fn new(mem: DmaSlice<'_>, len: u16) -> RingMem {
        assert!(len > 0 && mem.len() >= len as usize * DESC_SIZE, "a ring of {len} descriptors in {} bytes", mem.len());
        // SAFETY: the caller keeps the memory mapped for the ring's life (see above).
        RingMem { mem: unsafe { mem.detach() }, len }
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
        unsafe { self.mem.base().as_ptr().add(i as usize * DESC_SIZE) }
    }

    /// Volatile read of the 32-bit word at byte `off` of descriptor `i`.
    fn read_u32(&self, i: u16, off: usize) -> u32 {
        debug_assert!(off <= DESC_SIZE - 4 && off % 4 == 0);
        // SAFETY: inside descriptor `i` (off <= 12), 4-byte aligned; device-writable memory is
        // read with a volatile load, never through a reference.
        u32::from_le(unsafe { self.desc(i).add(off).cast::<u32>().read_volatile() })
    }

    /// Volatile write of a whole descriptor.
    fn write<T: zerocopy::IntoBytes + zerocopy::Immutable>(&self, i: u16, d: &T) {
        let bytes = d.as_bytes();
        debug_assert_eq!(bytes.len(), DESC_SIZE);
        let lo = u64::from_ne_bytes(bytes[0..8].try_into().unwrap());
        let hi = u64::from_ne_bytes(bytes[8..16].try_into().unwrap());
        // SAFETY: descriptor `i` is 16 bytes, 16-byte aligned; volatile stores only.
        unsafe {
            let p = self.desc(i).cast::<u64>();
            p.write_volatile(lo);
            p.add(1).write_volatile(hi);
        }
    }
}

/// What each receive descriptor is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxState {
    /// Owned by the device (posted, maybe already written back).
    Posted,
    /// Its buffer is lent to the dataplane.
    Lent,
    /// Returned; waits to be reposted in ring order.
    Returned,
}

pub(crate) struct RxRing {
    ring: RingMem,
    bufs: DmaSlice<'static>,
    buf_size: u32,
    state: Vec<RxState>,
    /// Next descriptor the device will write back.
    next: u16,
    /// Next descriptor to repost; posted descriptors are `[next, refill)` (mod len).
    refill: u16,
    err_mask: u32,
    /// Inside a frame that spans several descriptors: drop up to and including its EOP.
    discarding: bool,
}

impl RxRing {
    /// A ring of `len` descriptors in `ring` with one `buf_size` buffer each in `bufs`.
    /// Writes every descriptor but the last (one slot stays empty so that a full ring differs
    /// from an empty one); the caller writes [`RxRing::tail`] to RDT after enabling the queue.
    ///
    /// # Safety
    /// `ring` and `bufs` must stay mapped for the device while the ring exists, and nothing
    /// else may use them meanwhile. (Their sizes, `len * 16` and `len * buf_size` bytes, are
    /// checked.)
    pub unsafe fn new(ring: DmaSlice<'_>, len: u16, bufs: DmaSlice<'_>, buf_size: u32, err_mask: u32) -> RxRing {
        assert!(bufs.len() >= len as usize * buf_size as usize, "{len} buffers of {buf_size} in {} bytes", bufs.len());
        let n = len;
        let mut r = RxRing {
            // SAFETY: forwarded from this constructor's contract.
            ring: unsafe { RingMem::new(ring, len) },
            // SAFETY: as above.
            bufs: unsafe { bufs.detach() },
            buf_size,
            state: vec![RxState::Returned; n as usize],
            next: 0,
            refill: 0,
            err_mask,
            discarding: false,
        };
        for i in 0..n - 1 {
            r.post(i);
        }
        r.refill = n - 1;
        r
    }

    fn post(&mut self, i: u16) {
        let d = AdvRxRead { pkt_addr: (self.bufs.iova() + i as u64 * self.buf_size as u64).into(), hdr_addr: 0.into() };
        self.ring.write(i, &d);
        self.state[i as usize] = RxState::Posted;
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
            if self.state[i as usize] != RxState::Posted {
                break; // the one unposted slot: nothing more can be written back
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
                // A frame larger than one buffer: drop every piece of it, counted once.
                self.state[i as usize] = RxState::Returned;
                if !self.discarding {
                    *dropped += 1;
                }
                self.discarding = !eop;
                continue;
            }
            if status & self.err_mask != 0 {
                self.state[i as usize] = RxState::Returned;
                *dropped += 1;
                continue;
            }
            self.state[i as usize] = RxState::Lent;
            // SAFETY: buffer `i` lies inside `bufs` (`i < len`, sizes checked in `new`).
            let data = unsafe { self.bufs.base().add(i as usize * self.buf_size as usize) };
            out[n] = RxPacket { data, len: len as u32, id: i as u32 };
            n += 1;
        }
        n
    }

    /// Takes back a lent buffer. Returns false (and changes nothing) for an id that is not
    /// lent: a double release or a forged id.
    pub fn give_back(&mut self, id: u32) -> bool {
        match self.state.get_mut(id as usize) {
            Some(s @ RxState::Lent) => {
                *s = RxState::Returned;
                true
            }
            _ => false,
        }
    }

    /// Reposts returned buffers in ring order; returns the new tail if it moved.
    pub fn repost(&mut self) -> Option<u16> {
        let start = self.refill;
        let n = self.ring.len;
        while self.state[self.refill as usize] == RxState::Returned && (self.refill + 1) % n != self.next {
            self.post(self.refill);
            self.refill = (self.refill + 1) % n;
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

pub(crate) struct TxRing {
    ring: RingMem,
    /// Next free descriptor (the tail register's value).
    tail: u16,
    /// Oldest descriptor not yet known to be done.
    clean: u16,
    marks: std::collections::VecDeque<RsMark>,
    rs_interval: u32,
    since_rs: u32,
    accepted: u64,
    reclaimed: u64,
}

impl TxRing {
    /// A ring of `len` descriptors in `ring`, requesting a write-back every `rs_interval`
    /// packets.
    ///
    /// # Safety
    /// `ring` must stay mapped for the device while the ring exists, and nothing else may use
    /// it meanwhile. (Its size, `len * 16` bytes, is checked.)
    pub unsafe fn new(ring: DmaSlice<'_>, len: u16, rs_interval: u32) -> TxRing {
        // SAFETY: forwarded from this constructor's contract.
        let ring = unsafe { RingMem::new(ring, len) };
        let z = AdvTxRead::default();
        for i in 0..ring.len {
            ring.write(i, &z);
        }
        TxRing {
            ring,
            tail: 0,
            clean: 0,
            marks: Default::default(),
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
        while let Some(m) = self.marks.front().copied() {
            if self.ring.read_u32(m.desc, offset_of!(AdvTxWb, status)) & TXD_STAT_DD == 0 {
                break;
            }
            self.marks.pop_front();
            self.clean = self.ring.next(m.desc);
            self.reclaimed = m.pkts;
        }
    }

    /// Queues one packet of up to two segments `(iova, len)`, each shorter than 16 KiB (the
    /// caller checks the frame against the MTU); false when the ring is full.
    pub fn push(&mut self, segs: &[(u64, u32)]) -> bool {
        let segs: heapless::Vec<(u64, u32), 2> = segs.iter().copied().filter(|s| s.1 > 0).collect();
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
        let rs = self.since_rs >= self.rs_interval || (half && self.marks.is_empty());
        for (k, &(iova, len)) in segs.iter().enumerate() {
            let last = k + 1 == segs.len();
            let mut cmd = len | TXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS;
            if last {
                cmd |= TXD_CMD_EOP;
                if rs {
                    cmd |= TXD_CMD_RS;
                }
            }
            let d = AdvTxRead {
                buffer_addr: iova.into(),
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
