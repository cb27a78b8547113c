//! The in-memory NIC and a simulated fabric connecting several of them.
//!
//! [`Fabric`] is a switch with up to [`MAX_PORTS`] ports; [`SimNic`] is one port's NIC and
//! implements [`Transport`]. Per link (ordered pair of ports) a [`LinkParams`] sets propagation
//! delay, loss, duplication and reordering probabilities, drawn from one seeded RNG, with time
//! from a [`Clock`] (a [`SimClock`](crate::clock::SimClock) in tests): every run is reproducible
//! from its seed.
//!
//! The NIC behaves like hardware where it matters to the protocol:
//! * **Lazy, unsignaled TX.** `tx_burst` only queues descriptors; frame bytes are read ("DMA")
//!   later — when more than `tx_lag` frames are queued, at the second `rx_burst` after the frame
//!   was queued (so a frame outlives one whole event-loop iteration), or at `tx_flush`. A protocol
//!   bug that reuses a buffer before `tx_flush` sends corrupted data.
//! * **Receive buffers owned by the NIC.** Frames land in the port's buffer ring (the caller's
//!   memory); `rx_burst` lends them, `rx_release` returns them; a full ring drops frames.
//!
//! No heap: buffers are the caller's, queues are `heapless`.

use crate::clock::Clock;
use crate::transport::{EndpointAddr, ResolveError, RxPacket, Transport, TxPacket};
use crate::wire::{RoutingInfo, UdpFrameHdr, HEADROOM};
use core::cell::RefCell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use zerocopy::FromBytes;

/// Ports per fabric.
pub const MAX_PORTS: usize = 8;
/// Largest frame a simulated port carries.
pub const SIM_FRAME: usize = 2048;
/// Receive buffers per port (at most).
pub const MAX_RX_BUFS: usize = 512;
/// TX descriptors a NIC holds before it must read the oldest.
pub const TX_QUEUE: usize = 256;

/// One receive buffer of a simulated port.
#[repr(C, align(64))]
pub struct RxBuf {
    data: [u8; SIM_FRAME],
}

impl RxBuf {
    pub const EMPTY: RxBuf = RxBuf { data: [0; SIM_FRAME] };

    #[cfg(feature = "std")]
    pub fn storage(n: usize) -> std::vec::Vec<RxBuf> {
        (0..n).map(|_| RxBuf::EMPTY).collect()
    }
}

/// Fault and delay parameters of one direction of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkParams {
    pub delay_ns: u64,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub dup: f64,
    /// Probability that a frame overtakes the frame queued just before it.
    pub reorder: f64,
}

/// Counters of one port (TX side counts frames it sent; the rest, frames sent to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub tx: u64,
    pub delivered: u64,
    pub lost: u64,
    pub no_buffer: u64,
    pub link_down: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub no_route: u64,
    pub oversize: u64,
}

#[derive(Clone, Copy)]
struct Ready {
    buf: u16,
    len: u16,
    due: u64,
}

struct Port {
    addr: EndpointAddr,
    up: bool,
    bufs: *mut RxBuf,
    free: heapless::Vec<u16, MAX_RX_BUFS>,
    ready: heapless::Deque<Ready, MAX_RX_BUFS>,
    stats: PortStats,
}

struct Inner {
    ports: heapless::Vec<Port, MAX_PORTS>,
    links: [[LinkParams; MAX_PORTS]; MAX_PORTS],
    faulty: bool,
    /// Whether any link has a delay (otherwise frames are due at once and no clock is read).
    delayed: bool,
    rng: Xoshiro256PlusPlus,
}

/// A simulated switch. Shared by reference between the NICs attached to it (single thread).
pub struct Fabric<'f, C: Clock> {
    clock: C,
    inner: RefCell<Inner>,
    _bufs: PhantomData<&'f mut [RxBuf]>,
}

const MAC_PREFIX: [u8; 5] = [0x02, 0x00, 0x00, 0x00, 0x00];

impl<'f, C: Clock> Fabric<'f, C> {
    pub fn new(clock: C, seed: u64) -> Self {
        Fabric {
            clock,
            inner: RefCell::new(Inner {
                ports: heapless::Vec::new(),
                links: [[LinkParams::default(); MAX_PORTS]; MAX_PORTS],
                faulty: false,
                delayed: false,
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            }),
            _bufs: PhantomData,
        }
    }

    /// Adds a port whose receive ring is `bufs` (at most [`MAX_RX_BUFS`] are used) and returns
    /// its number. Port `n` has MAC 02:00:00:00:00:n, IPv4 10.0.0.(n+1), UDP port 31850+n.
    /// Panics if all [`MAX_PORTS`] ports are taken (a test setup error).
    pub fn attach(&self, bufs: &'f mut [RxBuf]) -> usize {
        let mut inner = self.inner.borrow_mut();
        let n = inner.ports.len();
        let nb = bufs.len().min(MAX_RX_BUFS);
        let mut free = heapless::Vec::new();
        for i in (0..nb).rev() {
            let _ = free.push(i as u16);
        }
        let addr = EndpointAddr {
            mac: [0x02, 0, 0, 0, 0, n as u8],
            ipv4: [10, 0, 0, n as u8 + 1],
            udp_port: 31850 + n as u16,
        };
        let port = Port {
            addr,
            up: true,
            bufs: bufs.as_mut_ptr(),
            free,
            ready: heapless::Deque::new(),
            stats: PortStats::default(),
        };
        assert!(inner.ports.push(port).is_ok(), "a fabric has at most {MAX_PORTS} ports");
        n
    }

    /// The NIC of `port`. `tx_lag` (up to [`TX_QUEUE`]) frames may wait unread after `tx_burst`.
    pub fn nic(&self, port: usize, tx_lag: usize) -> SimNic<'_, 'f, C> {
        SimNic {
            fab: self,
            port,
            pending: heapless::Deque::new(),
            epoch: 0,
            last_now: 0,
            reclaimed: 0,
            lag: tx_lag.min(TX_QUEUE),
            mtu: 1024,
        }
    }

    pub fn addr(&self, port: usize) -> EndpointAddr {
        self.inner.borrow().ports[port].addr
    }

    /// Sets the parameters of the link from `from` to `to`.
    pub fn set_link(&self, from: usize, to: usize, p: LinkParams) {
        let mut i = self.inner.borrow_mut();
        i.links[from][to] = p;
        i.faulty = i.links.iter().flatten().any(|l| l.loss > 0.0 || l.dup > 0.0 || l.reorder > 0.0);
        i.delayed = i.links.iter().flatten().any(|l| l.delay_ns > 0);
    }

    /// Sets every link's parameters.
    pub fn set_all_links(&self, p: LinkParams) {
        for a in 0..MAX_PORTS {
            for b in 0..MAX_PORTS {
                self.set_link(a, b, p);
            }
        }
    }

    /// Takes a port down (all its frames are dropped, both ways) or up.
    pub fn set_up(&self, port: usize, up: bool) {
        self.inner.borrow_mut().ports[port].up = up;
    }

    pub fn stats(&self, port: usize) -> PortStats {
        self.inner.borrow().ports[port].stats
    }

    /// Frames waiting in `port`'s receive ring (due or not).
    pub fn queued(&self, port: usize) -> usize {
        self.inner.borrow().ports[port].ready.len()
    }

    /// Earliest delivery time of any queued frame.
    pub fn next_due(&self) -> Option<u64> {
        self.inner.borrow().ports.iter().filter_map(|p| p.ready.front().map(|r| r.due)).min()
    }

    fn chance(rng: &mut Xoshiro256PlusPlus, p: f64) -> bool {
        p > 0.0 && ((rng.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }

    /// Reads a queued frame from its source memory and delivers it to its destination's ring,
    /// due at `now` plus the link delay.
    #[inline(always)]
    fn dma(inner: &mut Inner, src: usize, p: &TxPacket, now: u64) {
        if inner.faulty || inner.delayed {
            return Self::dma_over_link(inner, src, p, now);
        }
        // No faults, no delays anywhere: route and deliver, due at once.
        if let Some(d) = Self::route(&mut inner.ports, src, p) {
            Self::deliver(&mut inner.ports[d], p, 0);
        }
    }

    /// [`dma`](Self::dma) with the link's faults and delay applied.
    #[inline(never)]
    fn dma_over_link(inner: &mut Inner, src: usize, p: &TxPacket, now: u64) {
        let Inner { ports, links, faulty, rng, .. } = inner;
        let faulty = *faulty;
        let Some(d) = Self::route(ports, src, p) else { return };
        let link = links[src][d];
        let port = &mut ports[d];
        let mut copies = 1;
        if faulty {
            if Self::chance(rng, link.loss) {
                port.stats.lost += 1;
                return;
            }
            if Self::chance(rng, link.dup) {
                port.stats.duplicated += 1;
                copies = 2;
            }
        }
        let due = if link.delay_ns == 0 { 0 } else { now + link.delay_ns };
        for _ in 0..copies {
            let reorder = faulty && Self::chance(rng, link.reorder);
            if !Self::deliver(port, p, due) {
                continue;
            }
            if reorder && port.ready.len() >= 2 {
                // Swap the contents (not the due times) of the last two queued frames.
                let last = port.ready.pop_back().expect("len >= 2");
                let prev = port.ready.pop_back().expect("len >= 2");
                let _ = port.ready.push_back(Ready { buf: last.buf, len: last.len, due: prev.due });
                let _ = port.ready.push_back(Ready { buf: prev.buf, len: prev.len, due: last.due });
                port.stats.reordered += 1;
            }
        }
    }

    /// Counts frame `p` as sent by `src` and returns the port it goes to: the one whose MAC,
    /// IPv4 address and UDP port it names, if both ports are up. `None` (counted): dropped.
    #[inline(always)]
    fn route(ports: &mut [Port], src: usize, p: &TxPacket) -> Option<usize> {
        let len = p.len();
        ports[src].stats.tx += 1;
        if !(HEADROOM..=SIM_FRAME).contains(&len) || p.segs[0].len < HEADROOM as u32 {
            ports[src].stats.oversize += 1;
            return None;
        }
        // SAFETY: segment 0 holds at least HEADROOM readable bytes (checked above), valid and
        // unchanged until the frame leaves the TX queue (the Transport contract); it is the
        // sender's memory, which no device writes.
        let hr = unsafe { core::slice::from_raw_parts(p.segs[0].vaddr, HEADROOM) };
        // Only the destination fields, read in place.
        let to = UdpFrameHdr::ref_from_bytes(hr).expect("HEADROOM bytes");
        let (mac, ipv4, udp_port) = (to.eth.dst, to.ipv4.dst, to.udp.dst_port.get());
        let d = mac[5] as usize;
        if mac[..5] != MAC_PREFIX || d >= ports.len() {
            ports[src].stats.no_route += 1;
            return None;
        }
        let src_up = ports[src].up;
        let port = &mut ports[d];
        if ipv4 != port.addr.ipv4 || udp_port != port.addr.udp_port {
            port.stats.no_route += 1;
            return None;
        }
        if !src_up || !port.up {
            port.stats.link_down += 1;
            return None;
        }
        Some(d)
    }

    /// Copies routed frame `p` into a free buffer of `port`'s ring, due at `due`; false (counted)
    /// if the ring has no free buffer.
    #[inline(always)]
    fn deliver(port: &mut Port, p: &TxPacket, due: u64) -> bool {
        let Some(b) = port.free.pop() else {
            port.stats.no_buffer += 1;
            return false;
        };
        let len = p.len();
        debug_assert!(len <= SIM_FRAME, "deliver only what route accepted");
        // SAFETY: buffer b is free (not lent, not queued), inside the caller's ring memory, and
        // SIM_FRAME >= len bytes long (checked by `route`); the frame's segments are readable
        // (the Transport contract).
        unsafe {
            let out = port.bufs.add(b as usize) as *mut u8;
            if p.segs[1].len == 0 {
                // One segment (every one-packet message): one copy, without copy_to's walk
                // over the segments and its bounds checks.
                core::ptr::copy_nonoverlapping(p.segs[0].vaddr, out, len);
            } else {
                p.copy_to(core::slice::from_raw_parts_mut(out, SIM_FRAME));
            }
        }
        let _ = port.ready.push_back(Ready { buf: b, len: len as u16, due });
        port.stats.delivered += 1;
        true
    }
}

/// The NIC of one fabric port. See the module docs for its TX and RX behaviour.
pub struct SimNic<'a, 'f, C: Clock> {
    fab: &'a Fabric<'f, C>,
    port: usize,
    /// Queued frames with the `rx_burst` epoch in which they were queued.
    pending: heapless::Deque<(TxPacket, u32), TX_QUEUE>,
    epoch: u32,
    /// The clock's value at this NIC's last reading.
    last_now: u64,
    /// Frames read from the TX queue so far.
    reclaimed: u64,
    lag: usize,
    mtu: usize,
}

impl<C: Clock> SimNic<'_, '_, C> {
    pub fn port(&self) -> usize {
        self.port
    }

    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu.min(SIM_FRAME);
    }

    /// Frames queued for TX and not yet read.
    pub fn tx_pending(&self) -> usize {
        self.pending.len()
    }

    /// Reads queued frames older than `epoch` (all of them for `u32::MAX`), then frames beyond
    /// the `tx_lag` allowance.
    fn dma_before(&mut self, epoch: u32) {
        let due = |q: &heapless::Deque<(TxPacket, u32), TX_QUEUE>, lag: usize| {
            q.front().is_some_and(|(_, e)| *e < epoch) || q.len() > lag
        };
        if !due(&self.pending, self.lag) {
            return;
        }
        let mut inner = self.fab.inner.borrow_mut();
        let now = if inner.delayed { self.fab.clock.now_ns() } else { 0 };
        while due(&self.pending, self.lag) {
            let (p, _) = self.pending.pop_front().expect("non-empty");
            Fabric::<C>::dma(&mut inner, self.port, &p, now);
            self.reclaimed += 1;
        }
    }
}

impl<C: Clock> Transport for SimNic<'_, '_, C> {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn local_addr(&self) -> EndpointAddr {
        self.fab.addr(self.port)
    }

    fn resolve(&mut self, remote: &EndpointAddr) -> Result<RoutingInfo, ResolveError> {
        if remote.mac[..5] != MAC_PREFIX {
            return Err(ResolveError::InvalidAddress);
        }
        Ok(RoutingInfo::new(&self.local_addr(), remote))
    }

    fn max_tx_in_flight(&self) -> usize {
        TX_QUEUE
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        if self.lag == 0 && self.pending.is_empty() {
            // No frame may wait unread: the device reads them all now, as the queue below would
            // at its end, without passing them through it (with one clock reading for the whole
            // burst, where the queue read the clock again after each TX_QUEUE frames).
            let mut inner = self.fab.inner.borrow_mut();
            let now = if inner.delayed { self.fab.clock.now_ns() } else { 0 };
            for p in pkts {
                Fabric::<C>::dma(&mut inner, self.port, p, now);
            }
            self.reclaimed += pkts.len() as u64;
            return pkts.len();
        }
        for p in pkts {
            if self.pending.is_full() {
                // The queue holds TX_QUEUE > lag frames only transiently: make room.
                self.dma_before(0);
                if self.pending.is_full() {
                    let (old, _) = self.pending.pop_front().expect("full");
                    let now = self.fab.clock.now_ns();
                    Fabric::<C>::dma(&mut self.fab.inner.borrow_mut(), self.port, &old, now);
                    self.reclaimed += 1;
                }
            }
            let _ = self.pending.push_back((*p, self.epoch));
        }
        self.dma_before(0);
        pkts.len()
    }

    fn tx_flush(&mut self) {
        let lag = core::mem::replace(&mut self.lag, 0);
        self.dma_before(u32::MAX);
        self.lag = lag;
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        // The device works through its TX queue in the background: frames queued before the
        // previous rx_burst are read now.
        self.dma_before(self.epoch);
        self.epoch = self.epoch.wrapping_add(1);
        let mut inner = self.fab.inner.borrow_mut();
        let port = &mut inner.ports[self.port];
        // Read the clock only when a frame is not due by the last reading.
        let mut now = self.last_now;
        if port.ready.front().is_some_and(|r| r.due > now) {
            now = self.fab.clock.now_ns();
            self.last_now = now;
        }
        let mut n = 0;
        while n < out.len() {
            match port.ready.front() {
                Some(r) if r.due <= now => {
                    let r = port.ready.pop_front().expect("front");
                    // SAFETY: buffer r.buf is inside the caller's ring memory (index < len).
                    let p = unsafe { port.bufs.add(r.buf as usize) as *mut u8 };
                    out[n] = RxPacket { data: NonNull::new(p).expect("non-null"), len: r.len as u32, id: r.buf as u32 };
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }

    fn tx_reclaimed(&self) -> u64 {
        self.reclaimed
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        let mut inner = self.fab.inner.borrow_mut();
        let port = &mut inner.ports[self.port];
        for p in pkts {
            let _ = port.free.push(p.id as u16);
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::clock::SimClock;
    use crate::transport::Segment;
    use crate::wire::{ErpcHdr, PktType, PKT_HDR_LEN};
    use std::vec::Vec;
    use zerocopy::IntoBytes;

    /// A frame from `from` to `to` with `extra` data bytes, its headers as the dataplane writes
    /// them.
    fn frame(from: &EndpointAddr, to: &EndpointAddr, extra: usize) -> Vec<u8> {
        let mut f = std::vec![0u8; PKT_HDR_LEN + extra];
        let mut hr = [0u8; HEADROOM];
        RoutingInfo::new(from, to).write(&mut hr, 16 + extra);
        f[..HEADROOM].copy_from_slice(&hr);
        f[HEADROOM..PKT_HDR_LEN].copy_from_slice(ErpcHdr::new(0, 0, 0, PktType::Req, 0, 8).as_bytes());
        for (i, b) in f[PKT_HDR_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    fn pkt(f: &[u8]) -> TxPacket {
        TxPacket { segs: [Segment { vaddr: f.as_ptr(), iova: 0, len: f.len() as u32 }, Segment::EMPTY] }
    }

    /// Every way a frame can go (delivered, lost, duplicated, reordered, delayed, no buffer,
    /// link down, no route, malformed), on a seeded fabric: the counters and what arrived, in
    /// order, are exactly those of this seed. Pins the fault path's random draws (which frame
    /// is lost, doubled or swapped) so that a change to their order or number shows here; the
    /// figures are those the fabric gave before its fault-free path was split out.
    #[test]
    fn a_seeded_run_through_every_fault_repeats_exactly() {
        let clock = SimClock::new();
        let fab = Fabric::new(&clock, 42);
        let (pa, pb, pc) = (
            fab.attach(RxBuf::storage(64).leak()),
            fab.attach(RxBuf::storage(64).leak()),
            fab.attach(RxBuf::storage(8).leak()),
        );
        let (ea, eb, ec) = (fab.addr(pa), fab.addr(pb), fab.addr(pc));
        fab.set_link(pa, pb, LinkParams { delay_ns: 1_000, loss: 0.2, dup: 0.2, reorder: 0.3 });
        fab.set_link(pa, pc, LinkParams { delay_ns: 0, loss: 0.0, dup: 0.5, reorder: 0.5 });
        let mut wrong_port = ec;
        wrong_port.udp_port += 1;
        let mut foreign = eb;
        foreign.mac[0] = 0x04;
        let (to_b, to_c, big) = (frame(&ea, &eb, 100), frame(&ea, &ec, 10), frame(&ea, &eb, SIM_FRAME));
        let (bad_port, bad_mac) = (frame(&ea, &wrong_port, 0), frame(&ea, &foreign, 0));
        let short = &to_b[..HEADROOM - 2];
        let split = TxPacket {
            segs: [
                Segment { vaddr: to_b.as_ptr(), iova: 0, len: PKT_HDR_LEN as u32 },
                Segment { vaddr: to_b[PKT_HDR_LEN..].as_ptr(), iova: 0, len: 100 },
            ],
        };
        let batch = [pkt(&to_b), pkt(&to_c), pkt(&big), pkt(&bad_port), pkt(&bad_mac), pkt(short), split];
        let (mut a, mut b, mut c) = (fab.nic(pa, 0), fab.nic(pb, 0), fab.nic(pc, 0));
        let mut rx = [RxPacket::EMPTY; 64];
        // What arrived: (port, length, first data byte, arrival step).
        let mut got = Vec::new();
        for step in 0..300u32 {
            if step % 10 == 0 {
                fab.set_up(pc, step % 20 != 0);
            }
            assert_eq!(a.tx_burst(&batch), batch.len());
            clock.advance(500);
            for (port, nic) in [(pb, &mut b), (pc, &mut c)] {
                if port == pc && step % 8 != 0 {
                    continue; // c reads seldom: its 8 buffers run out
                }
                let n = nic.rx_burst(&mut rx);
                for p in &rx[..n] {
                    // SAFETY: the frame is lent until rx_release, `len` bytes long.
                    let d = unsafe { core::slice::from_raw_parts(p.data.as_ptr(), p.len as usize) };
                    got.push((port, p.len, d.get(PKT_HDR_LEN + 7).copied(), step));
                }
                nic.rx_release(&rx[..n]);
            }
        }
        let none = PortStats::default();
        assert_eq!(fab.stats(pa), PortStats { tx: 2100, no_route: 300, oversize: 600, ..none });
        assert_eq!(fab.stats(pb), PortStats { delivered: 592, lost: 106, duplicated: 98, reordered: 173, ..none });
        assert_eq!(
            fab.stats(pc),
            PortStats {
                delivered: 193,
                no_buffer: 46,
                link_down: 150,
                duplicated: 89,
                reordered: 76,
                no_route: 300,
                ..none
            }
        );
        // Which frames arrived where and when: their number and a sum weighted by port, length
        // and arrival step (any frame lost, doubled, moved or delayed differently changes it).
        let sum: u64 = got.iter().map(|g| (g.0 as u64 + 1) * g.1 as u64 * (g.3 as u64 + 1)).sum();
        assert_eq!((got.len(), sum), (778, 33_635_976));
        // The data came through whole, the two-segment frame's too.
        assert!(got.iter().all(|g| g.2 == Some(7)));
    }
}
