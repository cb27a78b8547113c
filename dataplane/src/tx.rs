//! The transmit side of the endpoint: batching, acceptance sequence numbers, buffers that wait
//! for the device (deferred frees), the control-packet ring, and framing msgbufs into packets.
//!
//! Every packet the transport accepts gets the next *acceptance sequence number*. The
//! [`Transport`] contract says the device has read packet `seq` once a `tx_flush` came after it,
//! once `tx_reclaimed` says so, or once `max_tx_in_flight` later packets were accepted; until
//! then the buffer it points into must not be reused. [`TxQueue::retire`] frees or recycles a
//! transmitted buffer at once if that holds, and otherwise parks it until it does.

use crate::config::TX_BATCH;
use crate::dma::DmaRegion;
use crate::error::InitError;
use crate::msgbuf::{num_pkts, MsgBuf, MsgBufHeap};
use crate::stats::{DropReason, RpcStats};
use crate::transport::{Segment, Transport, TxPacket};
use crate::wire::{ErpcHdr, PktType, RoutingInfo, ERPC_HDR_LEN, HEADROOM, PKT_HDR_LEN};
use core::ptr::NonNull;
use zerocopy::IntoBytes;

/// Bytes of one control-packet slot (credit returns, RFRs, session management).
pub(crate) const CTRL_SLOT: usize = 128;
/// Response buffers that may wait for the device before they are freed.
const DEFERRED_MAX: usize = 64;

/// The endpoint's transmit state. The transport, the allocator and the counters are the
/// endpoint's; they are passed in.
pub(crate) struct TxQueue {
    batch: heapless::Vec<TxPacket, TX_BATCH>,
    /// Packets the transport has accepted.
    accepted: u64,
    /// `accepted` at the last `tx_flush`.
    flushed: u64,
    /// `transport.tx_reclaimed()` when the endpoint took the transport over.
    reclaim_base: u64,
    max_in_flight: u64,
    /// Transmitted buffers waiting until the device has read them, with the sequence number of
    /// their last packet.
    deferred: heapless::Deque<(MsgBuf, u64), DEFERRED_MAX>,
    /// The smallest sequence number in `deferred` (`u64::MAX` when empty): until the device has
    /// read that packet, no deferred buffer can be freed, and one check says so.
    deferred_min: u64,
    ctrl: CtrlRing,
}

/// Slots for small frames built on the fly (credit returns, RFRs, session management). The ring
/// has more slots than the transport may still read plus one batch, so a slot is never reused
/// while the device may read it.
struct CtrlRing {
    base: NonNull<u8>,
    mask: u32,
    next: u32,
}

// SAFETY: the queued packets, the control ring and the deferred buffers all point into the
// endpoint's own msgbuf region (the control ring is carved from it), which moves with the
// endpoint; nothing here is shared with another thread.
unsafe impl Send for TxQueue {}

impl TxQueue {
    /// Carves the control ring from `heap`.
    pub(crate) fn new<T: Transport>(transport: &T, heap: &mut MsgBufHeap) -> Result<Self, InitError> {
        let nctrl = (transport.max_tx_in_flight() + TX_BATCH + 1).next_power_of_two();
        let base = heap.alloc_raw(nctrl * CTRL_SLOT).ok_or(InitError::RegionTooSmall)?;
        Ok(TxQueue {
            batch: heapless::Vec::new(),
            accepted: 0,
            flushed: 0,
            reclaim_base: transport.tx_reclaimed(),
            max_in_flight: transport.max_tx_in_flight() as u64,
            deferred: heapless::Deque::new(),
            deferred_min: u64::MAX,
            ctrl: CtrlRing { base, mask: nctrl as u32 - 1, next: 0 },
        })
    }

    /// Queues a frame, handing a full batch to the transport first.
    #[inline]
    pub(crate) fn push<T: Transport>(&mut self, t: &mut T, stats: &mut RpcStats, pkt: TxPacket) {
        if self.batch.push(pkt).is_err() {
            self.flush(t, stats);
            let _ = self.batch.push(pkt);
        }
    }

    /// Hands the batch to the transport.
    pub(crate) fn flush<T: Transport>(&mut self, t: &mut T, stats: &mut RpcStats) {
        if self.batch.is_empty() {
            return;
        }
        let mut sent = 0;
        let mut tries = 0;
        while sent < self.batch.len() {
            let n = t.tx_burst(&self.batch[sent..]);
            sent += n;
            if n == 0 {
                tries += 1;
                if tries == 100 {
                    // The device's ring is full: wait for it to drain. Besides making room, this
                    // is what lets control-packet slots be reused even if frames are dropped below.
                    t.tx_flush();
                    stats.tx_flushes += 1;
                }
                if tries > 1000 {
                    // The transport is stuck; what is left counts as lost and will be retransmitted.
                    for _ in sent..self.batch.len() {
                        stats.drops.count(DropReason::TxRingFull);
                    }
                    break;
                }
            }
        }
        stats.tx_pkts += sent as u64;
        self.accepted += sent as u64;
        self.batch.clear();
    }

    /// Sends everything queued and waits until the device has read it, then frees what waited
    /// for that (the original's `drain_tx_batch_and_dma_queue`).
    pub(crate) fn drain<T: Transport>(&mut self, t: &mut T, stats: &mut RpcStats, heap: &mut MsgBufHeap) {
        self.flush(t, stats);
        t.tx_flush();
        stats.tx_flushes += 1;
        self.flushed = self.accepted;
        self.free_deferred(t, heap);
    }

    /// An upper bound of the acceptance sequence number of the next packet pushed.
    #[inline]
    pub(crate) fn next_seq(&self) -> u64 {
        self.accepted + self.batch.len() as u64
    }

    /// Whether the device has certainly read the packet with acceptance sequence number `seq`.
    #[inline]
    fn is_read<T: Transport>(&self, t: &T, seq: u64) -> bool {
        seq < self.flushed
            || seq < t.tx_reclaimed().saturating_sub(self.reclaim_base)
            || self.accepted > seq.saturating_add(self.max_in_flight)
    }

    /// Frees a transmitted buffer whose last packet has sequence number `seq`: now if the device
    /// has read it, else once it has (checked every event-loop iteration). Returns the buffer
    /// for reuse instead if it is safe and `reuse` is set.
    #[inline(always)]
    pub(crate) fn retire<T: Transport>(
        &mut self,
        t: &mut T,
        stats: &mut RpcStats,
        heap: &mut MsgBufHeap,
        buf: MsgBuf,
        seq: u64,
        reuse: bool,
    ) -> Option<MsgBuf> {
        if self.is_read(t, seq) {
            if reuse {
                return Some(buf);
            }
            let _ = heap.free(buf);
            return None;
        }
        self.defer(t, stats, heap, buf, seq);
        None
    }

    /// [`retire`](Self::retire) of a buffer the device may still read.
    fn defer<T: Transport>(&mut self, t: &mut T, stats: &mut RpcStats, heap: &mut MsgBufHeap, buf: MsgBuf, seq: u64) {
        stats.deferred_frees += 1;
        self.deferred_min = self.deferred_min.min(seq);
        if let Err((buf, _)) = self.deferred.push_back((buf, seq)) {
            // Too many buffers waiting: make the device catch up (frees them all).
            self.drain(t, stats, heap);
            let _ = heap.free(buf);
        }
    }

    #[inline]
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Frees deferred buffers the device has read (the queue is not ordered by sequence number:
    /// responses of different slots are retired in any order).
    /// Called every event-loop iteration while buffers wait: while the oldest of them is still
    /// unread, which is the usual answer, that is one check rather than a pass over all.
    pub(crate) fn free_deferred<T: Transport>(&mut self, t: &T, heap: &mut MsgBufHeap) {
        if self.deferred.is_empty() || !self.is_read(t, self.deferred_min) {
            return;
        }
        let mut min = u64::MAX;
        for _ in 0..self.deferred.len() {
            let (b, seq) = self.deferred.pop_front().expect("counted");
            if self.is_read(t, seq) {
                let _ = heap.free(b);
            } else {
                min = min.min(seq);
                let _ = self.deferred.push_back((b, seq));
            }
        }
        self.deferred_min = min;
    }

    /// Copies a small frame into the next control slot and returns its TX descriptor.
    pub(crate) fn ctrl_frame(&mut self, region: &DmaRegion, frame: &[u8]) -> TxPacket {
        debug_assert!(frame.len() <= CTRL_SLOT);
        let c = &mut self.ctrl;
        let i = c.next & c.mask;
        c.next = c.next.wrapping_add(1);
        // SAFETY: slot i of the ring allocated in `new`; the ring covers every packet the
        // transport may still read, so the device is no longer reading this slot.
        let p = unsafe { c.base.as_ptr().add(i as usize * CTRL_SLOT) };
        // SAFETY: as above; `frame.len() <= CTRL_SLOT`.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), p, frame.len()) };
        TxPacket { segs: [Segment { vaddr: p, iova: region.iova_of(p), len: frame.len() as u32 }, Segment::EMPTY] }
    }
}

/// The TX descriptor of packet `k` of a msgbuf whose headers are written.
#[inline]
pub(crate) fn data_pkt(region: &DmaRegion, data_per_pkt: usize, buf: &MsgBuf, k: usize) -> TxPacket {
    let size = buf.len();
    let off = k * data_per_pkt;
    let len = if size > off { (size - off).min(data_per_pkt) } else { 0 };
    if k == 0 {
        let p = buf.hdr_ptr(0);
        TxPacket {
            segs: [Segment { vaddr: p, iova: region.iova_of(p), len: (PKT_HDR_LEN + len) as u32 }, Segment::EMPTY],
        }
    } else {
        let h = buf.hdr_ptr(k);
        // SAFETY: off < size <= capacity, inside the msgbuf's data.
        let d = unsafe { buf.data_ptr().add(off) };
        TxPacket {
            segs: [
                Segment { vaddr: h, iova: region.iova_of(h), len: PKT_HDR_LEN as u32 },
                Segment { vaddr: d, iova: region.iova_of(d), len: len as u32 },
            ],
        }
    }
}

/// The fields of the eRPC header every packet of one message shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MsgHdr {
    pub(crate) req_type: u8,
    pub(crate) dest_session: u16,
    pub(crate) pkt_type: PktType,
    /// `pkt_num` of the message's packet 0.
    pub(crate) first_pkt_num: u16,
    pub(crate) req_num: u64,
}

/// Writes the headers of every packet of a message into its msgbuf.
#[inline]
pub(crate) fn write_msg_hdrs(data_per_pkt: usize, routing: &RoutingInfo, buf: &mut MsgBuf, m: MsgHdr) {
    let size = buf.len();
    let h0 = ErpcHdr::new(m.req_type, size as u32, m.dest_session, m.pkt_type, m.first_pkt_num, m.req_num);
    if size <= data_per_pkt {
        // One packet: the common case.
        let (hr, eh) = buf.hdr_mut(0).split_at_mut(HEADROOM);
        routing.write(hr.try_into().expect("42"), ERPC_HDR_LEN + size);
        eh.copy_from_slice(h0.as_bytes());
        return;
    }
    // Every packet but the last carries `data_per_pkt` bytes: one headroom serves them all.
    let mut full = [0u8; HEADROOM];
    routing.write(&mut full, ERPC_HDR_LEN + data_per_pkt);
    let n = num_pkts(size, data_per_pkt);
    for k in 0..n {
        let (hr, eh) = buf.hdr_mut(k).split_at_mut(HEADROOM);
        if k + 1 < n {
            hr.copy_from_slice(&full);
        } else {
            routing.write(hr.try_into().expect("42"), ERPC_HDR_LEN + (size - k * data_per_pkt));
        }
        eh.copy_from_slice(h0.with_pkt_num(m.first_pkt_num + k as u16).as_bytes());
    }
}

/// The frame of a header-only control packet (credit return or RFR).
#[inline]
pub(crate) fn ctrl_hdr(routing: &RoutingInfo, m: MsgHdr) -> [u8; PKT_HDR_LEN] {
    let mut hdr = [0u8; PKT_HDR_LEN];
    let (hr, eh) = hdr.split_at_mut(HEADROOM);
    routing.write(hr.try_into().expect("42"), ERPC_HDR_LEN);
    eh.copy_from_slice(ErpcHdr::new(m.req_type, 0, m.dest_session, m.pkt_type, m.first_pkt_num, m.req_num).as_bytes());
    hdr
}
