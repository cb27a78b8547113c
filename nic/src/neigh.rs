//! Layer 2 for a transport that owns its Ethernet: answers ARP and ICMP echo for its address,
//! learns its peers' MAC addresses, and fills them into the sessions' routing templates.
//!
//! A userspace or bare-metal NIC driver puts every frame of its queue in front of the endpoint,
//! while an ordinary Linux host reaches an IPv4 address only once it has resolved it with ARP,
//! and advertises itself to eRPC with an all-zero MAC (the kernel UDP transport does not know its
//! own). [`Neighbours`] wraps such a transport and, below the endpoint:
//!
//! * answers ARP requests for the transport's IPv4 address (RFC 826) and learns the requester;
//! * answers ICMP echo requests to that address (RFC 792), so `ping` works;
//! * learns the source MAC of every IPv4/UDP frame to that address from a peer it does not know;
//! * resolves a remote [`EndpointAddr`] with an all-zero MAC from what it learnt, and otherwise
//!   sends an ARP request and reports the peer unreachable (a connect retried after the answer
//!   then succeeds);
//! * drops every other frame (IPv6, other protocols, other addresses) before the endpoint sees it.
//!
//! The table holds [`Neighbours`]' `N` most recently learnt peers, and a frame can only replace
//! an entry, so a flood of forged senders costs a bounded table and never memory. ARP has no
//! authentication: anyone on the same Ethernet segment can claim an address (as with any host).
//!
//! Replies are sent from a small [`DmaRegion`] of the caller's, `TX_BUFS` frames of
//! [`TX_BUF_LEN`] bytes, through the inner transport's TX queue between the endpoint's packets.
//! The wrapper keeps the [`Transport`] contract for the endpoint above it: a reply buffer is reused
//! only after the inner transport may no longer read it, and [`Transport::tx_reclaimed`] counts
//! only the endpoint's packets.

use core::mem::{offset_of, size_of};
use erpc_dataplane::dma::DmaRegion;
use erpc_dataplane::transport::{EndpointAddr, ResolveError, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::{
    internet_checksum, ipv4_checksum, EthHdr, Ipv4Hdr, RoutingInfo, ETHERTYPE_IPV4, IPPROTO_UDP,
};
use zerocopy::byteorder::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// EtherType of ARP (IEEE 802 numbers; RFC 826).
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IP protocol number of ICMP (RFC 792).
pub const IPPROTO_ICMP: u8 = 1;
/// ARP hardware type of Ethernet (RFC 826; IANA "Hardware Types").
const ARP_HTYPE_ETHERNET: u16 = 1;
/// ARP operations (RFC 826).
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// ICMP message types (RFC 792).
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// The smallest Ethernet frame without its FCS (IEEE 802.3 clause 4.4.2: 64 bytes with the FCS):
/// shorter frames are padded with zeros.
pub const MIN_FRAME: usize = 60;
/// Size of one reply buffer: an Ethernet frame of a 1500-byte IP packet.
pub const TX_BUF_LEN: usize = 1514;
/// Reply buffers.
pub const TX_BUFS: usize = 8;
/// Bytes of DMA memory [`Neighbours::new`] needs.
pub const REGION_BYTES: usize = TX_BUFS * TX_BUF_LEN;
const BROADCAST: [u8; 6] = [0xff; 6];

/// An ARP packet for IPv4 over Ethernet (RFC 826, "Packet format"), after the Ethernet header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ArpPkt {
    /// Hardware type: 1 (Ethernet).
    pub htype: U16,
    /// Protocol type: 0x0800 (IPv4).
    pub ptype: U16,
    /// Hardware address length: 6.
    pub hlen: u8,
    /// Protocol address length: 4.
    pub plen: u8,
    /// 1 = request, 2 = reply.
    pub oper: U16,
    /// Sender hardware and protocol address.
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    /// Target hardware and protocol address (the hardware address is ignored in a request).
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

/// An Ethernet frame carrying ARP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ArpFrame {
    pub eth: EthHdr,
    pub arp: ArpPkt,
}

const _: () = assert!(size_of::<ArpPkt>() == 28);
const _: () = assert!(size_of::<ArpFrame>() == 42);

/// The first bytes of an ICMP message (RFC 792, "Echo or Echo Reply Message").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct IcmpHdr {
    pub typ: u8,
    pub code: u8,
    pub checksum: U16,
}

/// The Ethernet, IPv4 (no options) and ICMP headers of an echo message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct IcmpFrameHdr {
    eth: EthHdr,
    ipv4: Ipv4Hdr,
    icmp: IcmpHdr,
}

const _: () = assert!(size_of::<IcmpHdr>() == 4);
const _: () = assert!(size_of::<IcmpFrameHdr>() == 38);

/// Where the ICMP message starts in an echo frame.
const ICMP_AT: usize = offset_of!(IcmpFrameHdr, icmp);
/// Bytes of a received frame [`Neighbours`] looks at: the longest header it reads (an ARP frame;
/// Ethernet, IPv4 and ICMP headers are shorter). An echo request is copied whole, once, straight
/// into its reply.
const PEEK: usize = size_of::<ArpFrame>();

/// A fixed table of IPv4 address to MAC address, replacing the least recently learnt entry.
#[derive(Clone, Debug)]
pub struct NeighbourTable<const N: usize> {
    entries: [Entry; N],
    /// Learning order: an entry's `learnt` is the value of this counter when it was last learnt.
    clock: u64,
    /// The entry that answered the last lookup: checked first, so a frame from the peer just
    /// seen costs one comparison.
    last: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    ip: [u8; 4],
    mac: [u8; 6],
    /// 0: the entry is empty.
    learnt: u64,
}

impl<const N: usize> Default for NeighbourTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> NeighbourTable<N> {
    pub const fn new() -> Self {
        const { assert!(N > 0, "a neighbour table needs at least one entry") };
        NeighbourTable { entries: [Entry { ip: [0; 4], mac: [0; 6], learnt: 0 }; N], clock: 0, last: 0 }
    }

    fn find(&self, ip: [u8; 4]) -> Option<usize> {
        let e = &self.entries[self.last];
        if e.learnt != 0 && e.ip == ip {
            return Some(self.last);
        }
        self.entries.iter().position(|e| e.learnt != 0 && e.ip == ip)
    }

    /// The MAC address learnt for `ip`.
    pub fn lookup(&mut self, ip: [u8; 4]) -> Option<[u8; 6]> {
        let i = self.find(ip)?;
        self.last = i;
        Some(self.entries[i].mac)
    }

    /// Whether `ip` is known with this MAC address.
    pub fn knows(&mut self, ip: [u8; 4], mac: [u8; 6]) -> bool {
        self.lookup(ip) == Some(mac)
    }

    /// Records that `ip` is at `mac`: updates its entry, or takes an empty one, or replaces the
    /// least recently learnt.
    pub fn learn(&mut self, ip: [u8; 4], mac: [u8; 6]) {
        self.clock += 1;
        let i = self.find(ip).unwrap_or_else(|| {
            // Empty entries have `learnt == 0`, the smallest.
            let mut oldest = 0;
            for (i, e) in self.entries.iter().enumerate() {
                if e.learnt < self.entries[oldest].learnt {
                    oldest = i;
                }
            }
            oldest
        });
        self.entries[i] = Entry { ip, mac, learnt: self.clock };
        self.last = i;
    }

    /// Learnt entries.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.learnt != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`Neighbours`] did, since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighbourCounters {
    /// ARP requests for our address answered.
    pub arp_answered: u64,
    /// ARP requests sent by [`Transport::resolve`] for an unknown peer.
    pub arp_requests: u64,
    /// ARP frames for another address, or malformed.
    pub arp_ignored: u64,
    /// ICMP echo requests answered.
    pub pings_answered: u64,
    /// Replies not sent: the inner TX queue was full, no reply buffer was free, or (a ping) the
    /// frame was larger than a reply buffer.
    pub replies_dropped: u64,
    /// Frames dropped before the endpoint: not IPv4/ARP, not to our address, not UDP or ICMP, or
    /// too short.
    pub dropped: u64,
    /// Peers learnt or relearnt with a new MAC address.
    pub learnt: u64,
}

/// A [`Transport`] with layer-2 neighbour handling in front of it (see the module docs).
pub struct Neighbours<T: Transport, const N: usize = 64> {
    inner: T,
    local: EndpointAddr,
    table: NeighbourTable<N>,
    region: DmaRegion,
    /// Per reply buffer: the inner TX sequence number it was sent at, `None` if free.
    sent_at: [Option<u64>; TX_BUFS],
    /// Packets the inner transport accepted so far (the endpoint's and ours).
    inner_sent: u64,
    /// Inner TX sequence numbers of our latest replies that the inner transport may not yet have
    /// read (by its `tx_reclaimed`), and how many older ones count as read: for `tx_reclaimed`.
    ours_pending: heapless::Deque<u64, TX_BUFS>,
    ours_reclaimed: u64,
    counters: NeighbourCounters,
}

/// Why [`Neighbours::new`] refused its memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighboursError {
    /// The reply region is smaller than [`REGION_BYTES`].
    RegionTooSmall { len: usize },
    /// The inner transport's MTU is smaller than an ARP frame (60 bytes).
    MtuTooSmall { mtu: usize },
}

impl core::fmt::Display for NeighboursError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            NeighboursError::RegionTooSmall { len } => write!(
                f,
                "the reply region has {len} bytes and the neighbour layer needs {REGION_BYTES}: give it a \
                 larger DMA region"
            ),
            NeighboursError::MtuTooSmall { mtu } => {
                write!(f, "the transport's MTU is {mtu} bytes, smaller than an ARP frame ({MIN_FRAME})")
            }
        }
    }
}

impl core::error::Error for NeighboursError {}

impl<T: Transport, const N: usize> Neighbours<T, N> {
    /// Wraps `inner`, sending replies from `region` (at least [`REGION_BYTES`], used for nothing
    /// else). The inner transport's [`Transport::local_addr`] must carry its MAC and IPv4 address.
    pub fn new(inner: T, region: DmaRegion) -> Result<Self, NeighboursError> {
        if region.len() < REGION_BYTES {
            return Err(NeighboursError::RegionTooSmall { len: region.len() });
        }
        if inner.mtu() < MIN_FRAME {
            return Err(NeighboursError::MtuTooSmall { mtu: inner.mtu() });
        }
        Ok(Neighbours {
            local: inner.local_addr(),
            inner,
            table: NeighbourTable::new(),
            region,
            sent_at: [None; TX_BUFS],
            inner_sent: 0,
            ours_pending: heapless::Deque::new(),
            ours_reclaimed: 0,
            counters: NeighbourCounters::default(),
        })
    }

    pub fn counters(&self) -> NeighbourCounters {
        self.counters
    }

    pub fn table(&mut self) -> &mut NeighbourTable<N> {
        &mut self.table
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Records `ip` at `mac`, counting a new or changed entry.
    fn learn(&mut self, ip: [u8; 4], mac: [u8; 6]) {
        // Never learn a broadcast, multicast or all-zero MAC, or a zero or broadcast address.
        if mac[0] & 1 != 0 || mac == [0; 6] || ip == [0; 4] || ip == [255; 4] {
            return;
        }
        if !self.table.knows(ip, mac) {
            self.table.learn(ip, mac);
            self.counters.learnt += 1;
        }
    }

    /// Frees reply buffers the inner transport may no longer read, and moves our reclaimed
    /// replies out of `ours_pending`.
    fn reclaim(&mut self) {
        let window = self.inner.max_tx_in_flight() as u64;
        let read = self.inner.tx_reclaimed();
        for s in self.sent_at.iter_mut() {
            if s.is_some_and(|at| at < read || self.inner_sent - at >= window) {
                *s = None;
            }
        }
        while self.ours_pending.front().is_some_and(|&at| at < read) {
            self.ours_pending.pop_front();
            self.ours_reclaimed += 1;
        }
    }

    /// Sends `len` bytes that `fill` writes into a free reply buffer (zero-padded to
    /// [`MIN_FRAME`]). Returns whether the inner transport accepted the frame.
    fn send(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        self.reclaim();
        let Some(i) = self.sent_at.iter().position(Option::is_none) else {
            self.counters.replies_dropped += 1;
            return false;
        };
        let len = len.max(MIN_FRAME);
        // SAFETY: buffer `i` lies inside the region (`new` checked its size), which this value
        // owns and the device only reads; it is free (`sent_at[i]` is None), so the device no
        // longer reads it.
        let dst = unsafe { self.region.base().as_ptr().add(i * TX_BUF_LEN) };
        // SAFETY: `dst..dst+len` is inside free buffer `i` (len <= TX_BUF_LEN, see above): memory
        // only this value reaches until it hands the frame to the transport below, and one the
        // device only reads, so a reference to it is sound for the duration of `fill`.
        let out = unsafe { core::slice::from_raw_parts_mut(dst, len) };
        out.fill(0);
        fill(out);
        let seg = erpc_dataplane::transport::Segment { vaddr: dst, iova: self.region.iova_of(dst), len: len as u32 };
        let pkt = TxPacket { segs: [seg, erpc_dataplane::transport::Segment::EMPTY] };
        if self.inner.tx_burst(&[pkt]) != 1 {
            self.counters.replies_dropped += 1;
            return false;
        }
        self.sent_at[i] = Some(self.inner_sent);
        if self.ours_pending.is_full() {
            // The inner transport does not report reads (or lags): count the oldest reply as
            // read, which only makes `tx_reclaimed` smaller, never wrong.
            self.ours_pending.pop_front();
            self.ours_reclaimed += 1;
        }
        let _ = self.ours_pending.push_back(self.inner_sent);
        self.inner_sent += 1;
        true
    }

    fn arp(&mut self, oper: u16, dst_mac: [u8; 6], tha: [u8; 6], tpa: [u8; 4]) -> bool {
        let f = ArpFrame {
            eth: EthHdr { dst: dst_mac, src: self.local.mac, ethertype: U16::new(ETHERTYPE_ARP) },
            arp: ArpPkt {
                htype: U16::new(ARP_HTYPE_ETHERNET),
                ptype: U16::new(ETHERTYPE_IPV4),
                hlen: 6,
                plen: 4,
                oper: U16::new(oper),
                sha: self.local.mac,
                spa: self.local.ipv4,
                tha,
                tpa,
            },
        };
        self.send(size_of::<ArpFrame>(), |b| b[..size_of::<ArpFrame>()].copy_from_slice(f.as_bytes()))
    }

    /// Handles an ARP frame (RFC 826 "Packet Reception"): learns the sender if the frame is for
    /// us (or the sender is known), and answers a request for our address.
    fn on_arp(&mut self, b: &[u8]) {
        let Ok((f, _)) = ArpFrame::read_from_prefix(b) else {
            self.counters.arp_ignored += 1;
            return;
        };
        let a = f.arp;
        if a.htype.get() != ARP_HTYPE_ETHERNET || a.ptype.get() != ETHERTYPE_IPV4 || a.hlen != 6 || a.plen != 4 {
            self.counters.arp_ignored += 1;
            return;
        }
        let for_us = a.tpa == self.local.ipv4;
        if for_us || self.table.lookup(a.spa).is_some() {
            self.learn(a.spa, a.sha);
        }
        if !for_us {
            self.counters.arp_ignored += 1;
            return;
        }
        if a.oper.get() == ARP_REQUEST && a.sha[0] & 1 == 0 && self.arp(ARP_REPLY, a.sha, a.sha, a.spa) {
            self.counters.arp_answered += 1;
        }
    }

    /// Answers an ICMP echo request to our address: `p` the lent frame, `b` its first bytes.
    fn on_icmp(&mut self, p: &RxPacket, b: &[u8]) {
        let Ok((h, _)) = IcmpFrameHdr::read_from_prefix(b) else {
            self.counters.dropped += 1;
            return;
        };
        let frame = 14 + h.ipv4.total_len.get() as usize;
        if h.icmp.typ != ICMP_ECHO_REQUEST
            || h.ipv4.version_ihl != 0x45
            || frame < size_of::<IcmpFrameHdr>() + 4
            || frame > p.len as usize
        {
            self.counters.dropped += 1;
            return;
        }
        if frame > TX_BUF_LEN {
            self.counters.replies_dropped += 1;
            return;
        }
        let local = self.local;
        let sent = self.send(frame, |out| {
            // SAFETY: the inner transport lent `p`, whose `len >= frame` bytes stay readable until
            // it is released; copied with a raw copy, as device-writable memory must be read.
            unsafe { core::ptr::copy_nonoverlapping(p.data.as_ptr(), out.as_mut_ptr(), frame) };
            let Ok((r, _)) = IcmpFrameHdr::mut_from_prefix(out) else { return };
            r.eth = EthHdr { dst: h.eth.src, src: local.mac, ethertype: U16::new(ETHERTYPE_IPV4) };
            r.ipv4.dst = h.ipv4.src;
            r.ipv4.src = local.ipv4;
            r.ipv4.ttl = 64;
            r.ipv4.frag_off = U16::new(0);
            r.ipv4.checksum = U16::new(0);
            r.ipv4.checksum = U16::new(ipv4_checksum(&r.ipv4));
            r.icmp = IcmpHdr { typ: ICMP_ECHO_REPLY, code: 0, checksum: U16::new(0) };
            let c = internet_checksum(&out[ICMP_AT..frame]);
            if let Ok((r, _)) = IcmpFrameHdr::mut_from_prefix(out) {
                r.icmp.checksum = U16::new(c);
            }
        });
        if sent {
            self.counters.pings_answered += 1;
        }
    }

    /// Decides what to do with a received frame: `true` to pass it to the endpoint.
    fn keep(&mut self, p: &RxPacket) -> bool {
        let mut b = [0u8; PEEK];
        let n = (p.len as usize).min(PEEK);
        // SAFETY: the inner transport lent `p` (its `len` bytes are readable until released), and
        // this reads it only through a raw-pointer copy, as device-writable memory must be.
        unsafe { core::ptr::copy_nonoverlapping(p.data.as_ptr(), b.as_mut_ptr(), n) };
        let b = &b[..n];
        let Ok((eth, rest)) = EthHdr::read_from_prefix(b) else {
            self.counters.dropped += 1;
            return false;
        };
        match eth.ethertype.get() {
            ETHERTYPE_ARP => {
                self.on_arp(b);
                false
            }
            ETHERTYPE_IPV4 => {
                let Ok((ip, _)) = Ipv4Hdr::read_from_prefix(rest) else {
                    self.counters.dropped += 1;
                    return false;
                };
                if ip.dst != self.local.ipv4 {
                    self.counters.dropped += 1;
                    return false;
                }
                match ip.protocol {
                    IPPROTO_UDP => {
                        self.learn(ip.src, eth.src);
                        true
                    }
                    IPPROTO_ICMP => {
                        self.on_icmp(p, b);
                        false
                    }
                    _ => {
                        self.counters.dropped += 1;
                        false
                    }
                }
            }
            _ => {
                self.counters.dropped += 1;
                false
            }
        }
    }
}

impl<T: Transport, const N: usize> Transport for Neighbours<T, N> {
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }

    fn local_addr(&self) -> EndpointAddr {
        self.local
    }

    /// Fills in a MAC address learnt for the peer's IPv4 address when the peer gave none; for an
    /// unknown peer, sends an ARP request and reports it unreachable for now.
    fn resolve(&mut self, remote: &EndpointAddr) -> Result<RoutingInfo, ResolveError> {
        if remote.mac != [0; 6] {
            return self.inner.resolve(remote);
        }
        match self.table.lookup(remote.ipv4) {
            Some(mac) => self.inner.resolve(&EndpointAddr { mac, ..*remote }),
            None => {
                if self.arp(ARP_REQUEST, BROADCAST, [0; 6], remote.ipv4) {
                    self.counters.arp_requests += 1;
                }
                Err(ResolveError::Unreachable)
            }
        }
    }

    fn max_tx_in_flight(&self) -> usize {
        self.inner.max_tx_in_flight()
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let n = self.inner.tx_burst(pkts);
        self.inner_sent += n as u64;
        n
    }

    fn tx_flush(&mut self) {
        self.inner.tx_flush();
        // Everything accepted has been read: every reply buffer is free.
        self.sent_at = [None; TX_BUFS];
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let n = self.inner.rx_burst(out);
        let mut kept = 0;
        for i in 0..n {
            let p = out[i];
            if self.keep(&p) {
                out[kept] = p;
                kept += 1;
            } else {
                self.inner.rx_release(&[p]);
            }
        }
        kept
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        self.inner.rx_release(pkts);
    }

    /// The endpoint's packets the inner transport has read: its count, less our replies among
    /// them (a lower bound when replies were counted read early, see `send`).
    fn tx_reclaimed(&self) -> u64 {
        let read = self.inner.tx_reclaimed();
        let ours = self.ours_reclaimed + self.ours_pending.iter().filter(|&&at| at < read).count() as u64;
        read.saturating_sub(ours)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::ptr::NonNull;
    use erpc_dataplane::transport::Segment;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    const OURS: EndpointAddr = EndpointAddr { mac: [0x02, 0, 0, 0, 0, 2], ipv4: [10, 0, 0, 2], udp_port: 31850 };
    const HOST_MAC: [u8; 6] = [0x0a, 1, 2, 3, 4, 5];
    const HOST_IP: [u8; 4] = [10, 0, 0, 1];

    /// A transport that plays a NIC: received frames from a list, sent frames read lazily (when
    /// `window` later packets were accepted, on `tx_flush`, or on `read_all`), as a device may.
    struct FakeNic {
        rx: Vec<Vec<u8>>,
        lent: Vec<u32>,
        released: Vec<u32>,
        unread: Vec<TxPacket>,
        wire: Vec<Vec<u8>>,
        accepted: u64,
        read: u64,
        window: usize,
        accept: bool,
    }

    impl FakeNic {
        fn new() -> Self {
            FakeNic {
                rx: Vec::new(),
                lent: Vec::new(),
                released: Vec::new(),
                unread: Vec::new(),
                wire: Vec::new(),
                accepted: 0,
                read: 0,
                window: 4,
                accept: true,
            }
        }
        fn read_one(&mut self) {
            let p = self.unread.remove(0);
            let mut b = vec![0u8; p.len()];
            // SAFETY: the wrapper keeps accepted packets readable until they are read.
            unsafe { p.copy_to(&mut b) };
            self.wire.push(b);
            self.read += 1;
        }
        fn read_all(&mut self) {
            while !self.unread.is_empty() {
                self.read_one();
            }
        }
    }

    impl Transport for FakeNic {
        fn mtu(&self) -> usize {
            1514
        }
        fn local_addr(&self) -> EndpointAddr {
            OURS
        }
        fn max_tx_in_flight(&self) -> usize {
            self.window
        }
        fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
            if !self.accept {
                return 0;
            }
            for p in pkts {
                self.unread.push(*p);
                self.accepted += 1;
                if self.unread.len() > self.window {
                    self.read_one();
                }
            }
            pkts.len()
        }
        fn tx_flush(&mut self) {
            self.read_all();
        }
        fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
            let mut n = 0;
            while n < out.len() && !self.rx.is_empty() {
                let f = Box::leak(self.rx.remove(0).into_boxed_slice());
                let id = self.lent.len() as u32;
                self.lent.push(id);
                out[n] = RxPacket { data: NonNull::new(f.as_mut_ptr()).unwrap(), len: f.len() as u32, id };
                n += 1;
            }
            n
        }
        fn rx_release(&mut self, pkts: &[RxPacket]) {
            for p in pkts {
                assert!(!self.released.contains(&p.id), "frame {} released twice", p.id);
                self.released.push(p.id);
            }
        }
        fn tx_reclaimed(&self) -> u64 {
            self.read
        }
    }

    fn wrap<const N: usize>() -> Neighbours<FakeNic, N> {
        let mem = Box::leak(vec![0u8; REGION_BYTES].into_boxed_slice());
        Neighbours::new(FakeNic::new(), DmaRegion::from_static(mem, 0x10_0000)).unwrap()
    }

    fn arp_frame(oper: u16, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let f = ArpFrame {
            eth: EthHdr { dst: BROADCAST, src: sha, ethertype: U16::new(ETHERTYPE_ARP) },
            arp: ArpPkt {
                htype: U16::new(1),
                ptype: U16::new(0x0800),
                hlen: 6,
                plen: 4,
                oper: U16::new(oper),
                sha,
                spa,
                tha: [0; 6],
                tpa,
            },
        };
        let mut v = f.as_bytes().to_vec();
        v.resize(60, 0);
        v
    }

    fn udp_frame(src_mac: [u8; 6], src_ip: [u8; 4], dst_ip: [u8; 4]) -> Vec<u8> {
        let from = EndpointAddr { mac: src_mac, ipv4: src_ip, udp_port: 40000 };
        let to = EndpointAddr { ipv4: dst_ip, ..OURS };
        let mut v = RoutingInfo::new(&from, &to).hdr.as_bytes().to_vec();
        v.resize(100, 0xab);
        v
    }

    fn receive<const N: usize>(n: &mut Neighbours<FakeNic, N>, frames: Vec<Vec<u8>>) -> Vec<RxPacket> {
        n.inner_mut().rx = frames;
        let mut kept = Vec::new();
        while !n.inner().rx.is_empty() {
            let mut out = [RxPacket::EMPTY; 16];
            let k = n.rx_burst(&mut out);
            kept.extend_from_slice(&out[..k]);
        }
        kept
    }

    #[test]
    fn an_arp_request_for_us_is_answered_and_its_sender_learnt() {
        let mut n = wrap::<8>();
        assert_eq!(
            n.resolve(&EndpointAddr { mac: [0; 6], ipv4: HOST_IP, udp_port: 5 }),
            Err(ResolveError::Unreachable)
        );
        let kept = receive(&mut n, vec![arp_frame(ARP_REQUEST, HOST_MAC, HOST_IP, OURS.ipv4)]);
        assert!(kept.is_empty(), "ARP never reaches the endpoint");
        assert_eq!(n.inner().released, [0]);
        n.tx_flush();
        let wire = &n.inner().wire;
        assert_eq!(wire.len(), 2, "the ARP request of the failed resolve, then the reply");
        let (req, _) = ArpFrame::read_from_prefix(&wire[0]).unwrap();
        assert_eq!((req.eth.dst, req.arp.oper.get(), req.arp.tpa, req.arp.spa), (BROADCAST, 1, HOST_IP, OURS.ipv4));
        assert_eq!(wire[1].len(), MIN_FRAME);
        let (r, pad) = ArpFrame::read_from_prefix(&wire[1]).unwrap();
        assert!(pad.iter().all(|&b| b == 0));
        assert_eq!((r.eth.dst, r.eth.src, r.eth.ethertype.get()), (HOST_MAC, OURS.mac, ETHERTYPE_ARP));
        assert_eq!((r.arp.htype.get(), r.arp.ptype.get(), r.arp.hlen, r.arp.plen), (1, 0x0800, 6, 4));
        assert_eq!((r.arp.oper.get(), r.arp.sha, r.arp.spa), (ARP_REPLY, OURS.mac, OURS.ipv4));
        assert_eq!((r.arp.tha, r.arp.tpa), (HOST_MAC, HOST_IP));
        let ri = n.resolve(&EndpointAddr { mac: [0; 6], ipv4: HOST_IP, udp_port: 5 }).unwrap();
        assert_eq!((ri.hdr.eth.dst, ri.hdr.eth.src, ri.hdr.ipv4.dst), (HOST_MAC, OURS.mac, HOST_IP));
        let c = n.counters();
        assert_eq!((c.arp_answered, c.arp_requests, c.learnt), (1, 1, 1));
    }

    #[test]
    fn arp_for_another_address_is_neither_answered_nor_learnt() {
        let mut n = wrap::<8>();
        let kept = receive(&mut n, vec![arp_frame(ARP_REQUEST, HOST_MAC, HOST_IP, [10, 0, 0, 3])]);
        assert!(kept.is_empty());
        n.tx_flush();
        assert!(n.inner().wire.is_empty());
        assert!(n.table().is_empty());
        assert_eq!(n.counters().arp_ignored, 1);
        // A known sender is updated from any ARP frame (RFC 826's merge flag).
        n.table().learn(HOST_IP, [0x0a, 9, 9, 9, 9, 9]);
        receive(&mut n, vec![arp_frame(ARP_REQUEST, HOST_MAC, HOST_IP, [10, 0, 0, 3])]);
        assert_eq!(n.table().lookup(HOST_IP), Some(HOST_MAC));
    }

    #[test]
    fn udp_to_us_passes_and_teaches_its_sender_the_rest_is_dropped() {
        let mut n = wrap::<8>();
        let frames = vec![
            udp_frame(HOST_MAC, HOST_IP, OURS.ipv4),
            udp_frame(HOST_MAC, HOST_IP, [10, 0, 0, 9]),
            vec![0u8; 10],
            {
                let mut v = udp_frame(HOST_MAC, HOST_IP, OURS.ipv4);
                v[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
                v
            },
        ];
        let kept = receive(&mut n, frames);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].id, 0);
        assert_eq!(n.inner().released, [1, 2, 3]);
        n.rx_release(&kept);
        assert_eq!(n.inner().released, [1, 2, 3, 0]);
        assert_eq!(n.counters().dropped, 3);
        let ri = n.resolve(&EndpointAddr { mac: [0; 6], ipv4: HOST_IP, udp_port: 40000 }).unwrap();
        assert_eq!(ri.hdr.eth.dst, HOST_MAC);
        // A peer that names its MAC is resolved as it says.
        let m = [0x0a, 7, 7, 7, 7, 7];
        assert_eq!(n.resolve(&EndpointAddr { mac: m, ipv4: [10, 0, 0, 7], udp_port: 1 }).unwrap().hdr.eth.dst, m);
    }

    #[test]
    fn a_ping_gets_a_checksummed_echo_reply() {
        let mut n = wrap::<8>();
        let payload: Vec<u8> = (0..56u8).collect();
        let ip_len = 20 + 8 + payload.len();
        let mut f = udp_frame(HOST_MAC, HOST_IP, OURS.ipv4)[..34].to_vec();
        f[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
        f[23] = IPPROTO_ICMP;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let mut icmp = vec![ICMP_ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(&payload);
        let c = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&icmp);
        assert!(receive(&mut n, vec![f.clone()]).is_empty());
        n.tx_flush();
        let r = &n.inner().wire[0];
        assert_eq!(r.len(), f.len());
        assert_eq!((&r[0..6], &r[6..12]), (&HOST_MAC[..], &OURS.mac[..]));
        assert_eq!((&r[26..30], &r[30..34]), (&OURS.ipv4[..], &HOST_IP[..]));
        assert_eq!(internet_checksum(&r[14..34]), 0, "IPv4 header checksum");
        assert_eq!(internet_checksum(&r[34..]), 0, "ICMP checksum");
        assert_eq!((r[34], r[35]), (ICMP_ECHO_REPLY, 0));
        assert_eq!(&r[38..], &f[38..], "identifier, sequence and data echoed");
        assert_eq!(n.counters().pings_answered, 1);
        // A reply to an ICMP message that is not an echo request: none.
        let mut g = f.clone();
        g[34] = 3;
        receive(&mut n, vec![g]);
        n.tx_flush();
        assert_eq!(n.inner().wire.len(), 1);
    }

    #[test]
    fn reply_buffers_are_reused_only_once_the_device_is_done_with_them() {
        let mut n = wrap::<8>();
        // The device reads nothing until `window` (4) later packets are accepted.
        for i in 0..TX_BUFS as u8 + 2 {
            receive(&mut n, vec![arp_frame(ARP_REQUEST, [0x0a, 0, 0, 0, 0, i], [10, 0, 1, i], OURS.ipv4)]);
        }
        // Buffers are freed as the window passes them: every reply read is whole and correct.
        n.tx_flush();
        let wire = n.inner().wire.clone();
        assert_eq!(wire.len() as u64, n.counters().arp_answered);
        assert!(wire.len() >= TX_BUFS, "{}", wire.len());
        for w in &wire {
            let (r, _) = ArpFrame::read_from_prefix(w).unwrap();
            assert_eq!((r.arp.tha[5], r.arp.tpa[3]), (r.eth.dst[5], r.arp.tha[5]), "a reply overwritten in flight");
        }
        // With the device reading nothing at all, replies stop when the buffers run out.
        let mut n = wrap::<8>();
        n.inner_mut().window = 1000;
        for i in 0..TX_BUFS as u8 + 3 {
            receive(&mut n, vec![arp_frame(ARP_REQUEST, [0x0a, 0, 0, 0, 0, i], [10, 0, 1, i], OURS.ipv4)]);
        }
        assert_eq!(n.counters().arp_answered, TX_BUFS as u64);
        assert_eq!(n.counters().replies_dropped, 3);
        n.tx_flush();
        receive(&mut n, vec![arp_frame(ARP_REQUEST, HOST_MAC, HOST_IP, OURS.ipv4)]);
        assert_eq!(n.counters().arp_answered, TX_BUFS as u64 + 1, "a flush frees them all");
    }

    #[test]
    fn tx_reclaimed_counts_only_the_endpoints_packets() {
        let mut n = wrap::<8>();
        n.inner_mut().window = 100;
        let buf = Box::leak(vec![7u8; 64].into_boxed_slice());
        let p = TxPacket { segs: [Segment { vaddr: buf.as_ptr(), iova: 0, len: 64 }, Segment::EMPTY] };
        assert_eq!(n.tx_burst(&[p, p, p]), 3);
        receive(&mut n, vec![arp_frame(ARP_REQUEST, HOST_MAC, HOST_IP, OURS.ipv4)]);
        assert_eq!(n.tx_burst(&[p, p]), 2);
        assert_eq!(n.tx_reclaimed(), 0);
        for (reads, want) in [(3, 3), (4, 3), (5, 4), (6, 5)] {
            while n.inner().read < reads {
                n.inner_mut().read_one();
            }
            assert_eq!(n.tx_reclaimed(), want, "after {reads} inner reads");
        }
    }

    #[test]
    fn the_table_keeps_the_most_recently_learnt() {
        let mut t = NeighbourTable::<2>::new();
        t.learn([1; 4], [2; 6]);
        t.learn([3; 4], [4; 6]);
        t.learn([1; 4], [5; 6]);
        t.learn([6; 4], [7; 6]);
        assert_eq!((t.lookup([1; 4]), t.lookup([3; 4]), t.lookup([6; 4])), (Some([5; 6]), None, Some([7; 6])));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn forged_and_truncated_frames_never_panic_and_every_frame_is_released_once() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        let frame = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (any::<[u8; 6]>(), any::<[u8; 4]>(), 0usize..60, any::<u16>()).prop_map(|(m, ip, cut, op)| {
                let mut f = arp_frame(op % 3, m, ip, if op & 4 == 0 { OURS.ipv4 } else { ip });
                f.truncate(cut.max(1));
                f
            }),
            (any::<[u8; 6]>(), any::<[u8; 4]>(), any::<u8>(), 0usize..100).prop_map(|(m, ip, proto, cut)| {
                let mut f = udp_frame(m, ip, OURS.ipv4);
                f[23] = proto % 3;
                f[34] = ICMP_ECHO_REQUEST;
                f.truncate(cut.max(1));
                f
            }),
        ];
        runner
            .run(&proptest::collection::vec(frame, 1..40), |frames| {
                let mut n = wrap::<4>();
                let count = frames.len();
                let kept = receive(&mut n, frames);
                n.rx_release(&kept);
                let mut r = n.inner().released.clone();
                r.sort();
                prop_assert_eq!(r, (0..count as u32).collect::<Vec<_>>());
                prop_assert!(n.table().len() <= 4);
                n.tx_flush();
                Ok(())
            })
            .unwrap();
    }
}
