//! The `Transport` trait: the only way the protocol touches a NIC.
//!
//! # Buffer ownership
//!
//! **TX is zero-copy and unsignaled.** [`Transport::tx_burst`] takes [`TxPacket`]s that point
//! into msgbufs (and into the endpoint's control-packet ring), all inside the endpoint's
//! [`DmaRegion`](crate::dma::DmaRegion). The transport — or the device behind it — may read a
//! packet's bytes *after* `tx_burst` returns, without reporting when it has finished. The
//! dataplane keeps a packet's bytes unchanged and valid until either
//!
//! * [`Transport::tx_flush`] has returned, or
//! * [`Transport::max_tx_in_flight`] further packets have been accepted by later `tx_burst` calls.
//!
//! A transport must honour that bound: it must not read a packet once that many later packets
//! were accepted (a descriptor ring of that many entries does this by construction, since a slot
//! is only reused after the device has fetched it).
//!
//! **RX is borrowed.** [`Transport::rx_burst`] lends [`RxPacket`]s that point into the
//! transport's own receive buffers (which may be multi-packet/striding buffers). The device does
//! not write a lent buffer until the dataplane hands it back with [`Transport::rx_release`]. The
//! dataplane reads lent memory only through raw pointers (it is device-writable memory) and
//! copies what it keeps before releasing.
//!
//! Every frame, sent or received, starts with the 42-byte Ethernet/IPv4/UDP headroom
//! ([`crate::wire`]). A transport without layer 2 (kernel UDP sockets) sends the bytes after the
//! headroom and synthesises the headroom of received frames from the datagram's source address.

use core::ptr::NonNull;

/// The address of one eRPC endpoint: what a session connects to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointAddr {
    pub mac: [u8; 6],
    pub ipv4: [u8; 4],
    pub udp_port: u16,
}

impl EndpointAddr {
    /// Whether this can be an endpoint's address: a UDP port other than 0; a unicast IPv4
    /// address, i.e. none of 0.0.0.0/8 ("this network") and 240.0.0.0/4 (reserved, with the
    /// limited broadcast 255.255.255.255) (RFC 6890), nor 224.0.0.0/4 (multicast, RFC 5771);
    /// and a MAC that is zero (to be resolved) or unicast (the group bit, the least significant
    /// bit of the first octet, clear: IEEE 802). A subnet's directed broadcast cannot be told
    /// without its netmask.
    pub fn is_unicast(&self) -> bool {
        self.udp_port != 0 && (1..224).contains(&self.ipv4[0]) && self.mac[0] & 1 == 0
    }
}

/// An endpoint reached over kernel UDP (the kernel resolves MAC addresses, so the MAC is zero).
impl From<core::net::SocketAddrV4> for EndpointAddr {
    fn from(a: core::net::SocketAddrV4) -> Self {
        EndpointAddr { mac: [0; 6], ipv4: a.ip().octets(), udp_port: a.port() }
    }
}

/// The endpoint's IPv4 address and UDP port, without its MAC (as `ip:port`, where `Display`
/// also shows the MAC).
impl From<EndpointAddr> for core::net::SocketAddrV4 {
    fn from(a: EndpointAddr) -> Self {
        core::net::SocketAddrV4::new(a.ipv4.into(), a.udp_port)
    }
}

impl core::fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.ipv4;
        let m = self.mac;
        write!(
            f,
            "{a}.{b}.{c}.{d}:{} ({:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x})",
            self.udp_port, m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// One contiguous piece of a packet in DMA memory: its CPU address and its device address.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub vaddr: *const u8,
    pub iova: u64,
    pub len: u32,
}

impl Segment {
    pub const EMPTY: Segment = Segment { vaddr: core::ptr::null(), iova: 0, len: 0 };
}

/// A packet to send: one or two segments (header + data slice), both in the DMA region.
///
/// Packet 0 of a message is one segment (header and data are contiguous); later packets are the
/// packet's header followed by a slice of the message data. `segs[1].len == 0` means one segment.
#[derive(Clone, Copy, Debug)]
pub struct TxPacket {
    pub segs: [Segment; 2],
}

impl TxPacket {
    pub const EMPTY: TxPacket = TxPacket { segs: [Segment::EMPTY; 2] };

    /// Total frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.segs[0].len as usize + self.segs[1].len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the frame into `out` (which must be at least `len()` bytes) and returns its length.
    ///
    /// For software transports (simulated NICs, kernel sockets) that "DMA" by copying.
    ///
    /// # Safety
    /// The segments must point to readable memory of their lengths, as the dataplane guarantees
    /// for a packet between `tx_burst` and the end of its in-flight window (see module docs).
    pub unsafe fn copy_to(&self, out: &mut [u8]) -> usize {
        let mut off = 0;
        for s in &self.segs {
            let n = s.len as usize;
            if n == 0 {
                continue;
            }
            // SAFETY: the caller guarantees `s.vaddr..+n` is readable; `out` has room (checked
            // by the slice index, which panics rather than overflowing).
            unsafe { core::ptr::copy_nonoverlapping(s.vaddr, out[off..off + n].as_mut_ptr(), n) };
            off += n;
        }
        off
    }
}

/// A received frame lent by the transport. `id` is the transport's own cookie for
/// [`Transport::rx_release`] (a descriptor index, a stride number, …).
#[derive(Clone, Copy, Debug)]
pub struct RxPacket {
    pub data: NonNull<u8>,
    pub len: u32,
    pub id: u32,
}

impl RxPacket {
    pub const EMPTY: RxPacket = RxPacket { data: NonNull::dangling(), len: 0, id: 0 };
}

/// Why a remote address could not be turned into routing info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// The transport cannot reach this address (wrong subnet, no such port on a fabric, …).
    Unreachable,
    /// The address is malformed for this transport.
    InvalidAddress,
}

impl core::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ResolveError::Unreachable => {
                "the transport cannot reach that address (wrong subnet, or no neighbour answered)"
            }
            ResolveError::InvalidAddress => "the address is malformed for this transport",
        })
    }
}

impl core::error::Error for ResolveError {}

/// Packet I/O for one endpoint (one RX and one TX queue). Implemented by the NIC drivers, the
/// kernel transports and the in-memory NIC. See the module documentation for buffer ownership.
pub trait Transport {
    /// Largest frame (headroom + eRPC header + data) this transport sends and receives.
    /// The dataplane's packet size is `min(mtu(), RpcConfig::mtu)`.
    fn mtu(&self) -> usize;

    /// This endpoint's own address, as peers reach it.
    fn local_addr(&self) -> EndpointAddr;

    /// Turns a remote address into routing info: the ready-made headroom of frames sent to it.
    /// The default builds a plain Ethernet/IPv4/UDP header; a transport overrides this to check
    /// reachability or to fill in what it alone knows (a next-hop MAC, for example).
    fn resolve(&mut self, remote: &EndpointAddr) -> Result<crate::wire::RoutingInfo, ResolveError> {
        Ok(crate::wire::RoutingInfo::new(&self.local_addr(), remote))
    }

    /// Largest number of packets the transport may still read after accepting them (see the
    /// module docs). The dataplane sizes its control-packet ring from this.
    fn max_tx_in_flight(&self) -> usize;

    /// Queues packets for transmission and returns how many, from the front, were accepted.
    /// Accepted packets are sent eventually without further calls; the transport may read them
    /// until [`Transport::tx_flush`] returns or `max_tx_in_flight()` later packets are accepted.
    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize;

    /// Returns only once the device has read every packet accepted so far, so their buffers may
    /// be reused. Expected to be slow; the dataplane calls it only after retransmissions and when
    /// it frees buffers of a session it resets or destroys.
    fn tx_flush(&mut self);

    /// Lends up to `out.len()` received frames and returns how many were written to `out`.
    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize;

    /// Returns lent frames to the transport. Each lent packet is released exactly once, in any
    /// order; a multi-packet buffer is reposted once all its packets are released.
    fn rx_release(&mut self, pkts: &[RxPacket]);

    /// Blocks the calling thread until a frame may have arrived or about `timeout_ns` has passed
    /// (or sooner: a signal, a spurious wake-up), and returns true; or returns false at once if
    /// this transport cannot block. The default cannot: a device polled by the CPU alone has
    /// nothing to wake a sleeping thread. For hosts that share a core with other work, through
    /// [`crate::rpc::Rpc::wait_for_work`]; a transport with frames already waiting returns at once.
    fn wait_rx(&mut self, timeout_ns: u64) -> bool {
        let _ = timeout_ns;
        false
    }

    /// How many of the packets accepted so far (counted from the transport's creation, in
    /// acceptance order) the device is known to have read: all accepted packets before the first
    /// one it may still read. Drivers know this from descriptor write-backs they reclaim anyway.
    /// Optional: the default, 0, makes the dataplane rely on `max_tx_in_flight` and `tx_flush`
    /// alone, which only delays the reuse of some response buffers. The transport must not have
    /// unread packets when it is handed to an endpoint.
    fn tx_reclaimed(&self) -> u64 {
        0
    }
}
