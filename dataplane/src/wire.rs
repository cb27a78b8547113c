//! Wire format: Ethernet + IPv4 + UDP headroom, then the 14-byte eRPC header, then data.
//!
//! The layout is bit-exact with the original eRPC's `pkthdr_t` (`src/pkthdr.h` in erpc-io/eRPC)
//! on Ethernet transports: 42 bytes of headroom, then
//!
//! | offset | size | content |
//! |---|---|---|
//! | 42 | 4 | u32 LE `req_type \| msg_size << 8` |
//! | 46 | 2 | u16 LE `dest_session_num` |
//! | 48 | 8 | u64 LE `pkt_type \| pkt_num << 2 \| req_num << 16 \| magic << 60` |
//!
//! Header views follow smoltcp's `wire` style: [`Packet::new_checked`] validates a buffer once,
//! accessors then read fields without further checks. The header structs are `zerocopy` types
//! whose sizes are checked at compile time.

use zerocopy::byteorder::{BigEndian, LittleEndian, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of Ethernet + IPv4 + UDP headers in front of the eRPC header.
pub const HEADROOM: usize = 42;
/// Bytes of the eRPC header proper.
pub const ERPC_HDR_LEN: usize = 14;
/// Total per-packet header bytes (`sizeof(pkthdr_t)` of the original on Ethernet).
pub const PKT_HDR_LEN: usize = HEADROOM + ERPC_HDR_LEN;
/// The magic value in the top 4 bits of the second header word.
pub const MAGIC: u8 = 11;
/// `dest_session_num` reserved for session-management packets carried on the datapath.
pub const SM_SESSION_NUM: u16 = u16::MAX;
/// Largest value of the 24-bit `msg_size` field.
pub const MAX_MSG_SIZE_FIELD: usize = (1 << 24) - 1;
/// Largest value of the 14-bit `pkt_num` field.
pub const MAX_PKT_NUM: usize = (1 << 14) - 1;
/// Largest value of the 44-bit `req_num` field.
pub const MAX_REQ_NUM: u64 = (1 << 44) - 1;
/// EtherType of IPv4 (IEEE 802 numbers, RFC 894).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol number of UDP (RFC 768).
pub const IPPROTO_UDP: u8 = 17;

/// Ethernet II header (IEEE 802.3 clause 3.1.1; RFC 894 for IPv4 over Ethernet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: U16<BigEndian>,
}

/// IPv4 header without options (RFC 791 section 3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Ipv4Hdr {
    /// Version (4) in the high nibble, IHL (5 words) in the low nibble.
    pub version_ihl: u8,
    /// DSCP (6 bits) and ECN (2 bits). eRPC sets ECN = 1 (ECT(1)), as the original does.
    pub tos: u8,
    pub total_len: U16<BigEndian>,
    pub id: U16<BigEndian>,
    pub frag_off: U16<BigEndian>,
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: U16<BigEndian>,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// UDP header (RFC 768). eRPC sends checksum 0 (no checksum), as the original does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct UdpHdr {
    pub src_port: U16<BigEndian>,
    pub dst_port: U16<BigEndian>,
    pub len: U16<BigEndian>,
    pub checksum: U16<BigEndian>,
}

/// The eRPC header (`pkthdr_t` after its headroom, erpc-io/eRPC `src/pkthdr.h`): two
/// little-endian bitfield words around the destination session number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ErpcHdr {
    /// `req_type` (8 bits) | `msg_size` (24 bits) << 8.
    pub word0: U32<LittleEndian>,
    pub dest_session_num: U16<LittleEndian>,
    /// `pkt_type` (2) | `pkt_num` (14) << 2 | `req_num` (44) << 16 | `magic` (4) << 60.
    pub word1: U64<LittleEndian>,
}

/// All 56 header bytes of one eRPC packet on an Ethernet transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PktHdr {
    pub eth: EthHdr,
    pub ipv4: Ipv4Hdr,
    pub udp: UdpHdr,
    pub erpc: ErpcHdr,
}

const _: () = assert!(core::mem::size_of::<EthHdr>() == 14);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(core::mem::size_of::<UdpHdr>() == 8);
const _: () = assert!(core::mem::size_of::<ErpcHdr>() == ERPC_HDR_LEN);
const _: () = assert!(core::mem::offset_of!(ErpcHdr, word1) == ErpcHdr::WORD1_OFFSET);
const _: () = assert!(core::mem::size_of::<PktHdr>() == PKT_HDR_LEN);

/// Packet types (`PktType` of the original).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PktType {
    /// A request data packet (client to server).
    Req = 0,
    /// Request-for-response: asks the server for the next response packet (client to server).
    Rfr = 1,
    /// Explicit credit return for a non-last request packet (server to client).
    ExplCr = 2,
    /// A response data packet (server to client).
    Resp = 3,
}

impl PktType {
    #[inline]
    pub const fn from_bits(b: u64) -> PktType {
        match b & 3 {
            0 => PktType::Req,
            1 => PktType::Rfr,
            2 => PktType::ExplCr,
            _ => PktType::Resp,
        }
    }
}

/// Decoded eRPC header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub req_type: u8,
    pub msg_size: u32,
    pub dest_session_num: u16,
    pub pkt_type: PktType,
    pub pkt_num: u16,
    pub req_num: u64,
    pub magic: u8,
}

impl ErpcHdr {
    /// Encodes header fields. Values wider than their bitfield are truncated, as in the original.
    #[inline]
    pub fn new(
        req_type: u8,
        msg_size: u32,
        dest_session_num: u16,
        pkt_type: PktType,
        pkt_num: u16,
        req_num: u64,
    ) -> Self {
        ErpcHdr {
            word0: U32::new(Self::word0_of(req_type, msg_size)),
            dest_session_num: U16::new(dest_session_num),
            word1: U64::new(Self::word1_of(pkt_type, pkt_num, req_num)),
        }
    }

    /// The first word: request type and message size.
    #[inline]
    pub const fn word0_of(req_type: u8, msg_size: u32) -> u32 {
        req_type as u32 | (msg_size & 0x00FF_FFFF) << 8
    }

    /// The second word: packet type and number, request number, magic.
    #[inline]
    pub const fn word1_of(pkt_type: PktType, pkt_num: u16, req_num: u64) -> u64 {
        pkt_type as u64 | ((pkt_num as u64) & 0x3FFF) << 2 | (req_num & MAX_REQ_NUM) << 16 | (MAGIC as u64) << 60
    }

    /// Offset of `word1` in the header.
    pub const WORD1_OFFSET: usize = 6;

    #[inline]
    pub fn decode(&self) -> Header {
        let w0 = self.word0.get();
        let w1 = self.word1.get();
        Header {
            req_type: w0 as u8,
            msg_size: w0 >> 8,
            dest_session_num: self.dest_session_num.get(),
            pkt_type: PktType::from_bits(w1),
            pkt_num: ((w1 >> 2) & 0x3FFF) as u16,
            req_num: (w1 >> 16) & MAX_REQ_NUM,
            magic: (w1 >> 60) as u8,
        }
    }

    /// Returns a copy with `pkt_num` replaced (headers of packets 1..n derive from packet 0).
    #[inline]
    pub fn with_pkt_num(mut self, pkt_num: u16) -> Self {
        let w1 = self.word1.get() & !(0x3FFF << 2) | ((pkt_num as u64) & 0x3FFF) << 2;
        self.word1 = U64::new(w1);
        self
    }
}

/// Errors of the checked packet constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the 56 header bytes, or shorter than the data the header announces.
    Truncated,
    /// Not IPv4/UDP.
    NotUdp,
    /// The magic nibble is not 11.
    BadMagic,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated eRPC packet: shorter than its headers or than the data they announce",
            WireError::NotUdp => "not an IPv4/UDP frame",
            WireError::BadMagic => "not an eRPC packet: the magic nibble is not 11",
        })
    }
}

impl core::error::Error for WireError {}

/// A checked view of one eRPC packet (headers and data) over any byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking its length, ethertype, IP protocol and magic.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        p.check()?;
        Ok(p)
    }

    pub fn check(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        let Ok((hdr, _)) = PktHdr::ref_from_prefix(b) else {
            return Err(WireError::Truncated);
        };
        if hdr.eth.ethertype.get() != ETHERTYPE_IPV4 || hdr.ipv4.protocol != IPPROTO_UDP {
            return Err(WireError::NotUdp);
        }
        if hdr.erpc.decode().magic != MAGIC {
            return Err(WireError::BadMagic);
        }
        Ok(())
    }

    #[inline]
    pub fn hdr(&self) -> &PktHdr {
        PktHdr::ref_from_prefix(self.buffer.as_ref()).expect("checked").0
    }

    #[inline]
    pub fn header(&self) -> Header {
        self.hdr().erpc.decode()
    }

    /// The data after the 56 header bytes.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[PKT_HDR_LEN..]
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// One's-complement sum over 16-bit big-endian words (RFC 1071), not yet folded.
fn ones_sum(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { (c[0] as u16) << 8 };
        sum += w as u32;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum (RFC 1071) of `bytes`: the one's complement of the one's-complement sum
/// of their 16-bit big-endian words, an odd last byte padded with zero. Computed over data whose
/// checksum field is zero, it is the value to put there (IPv4 header, ICMP, ...).
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    !fold(ones_sum(bytes))
}

/// Computes the IPv4 header checksum (RFC 791) of a 20-byte header whose checksum field is zero.
pub fn ipv4_checksum(hdr: &Ipv4Hdr) -> u16 {
    internet_checksum(hdr.as_bytes())
}

/// The Ethernet, IPv4 and UDP headers in front of the eRPC header: the 42-byte headroom.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct UdpFrameHdr {
    pub eth: EthHdr,
    pub ipv4: Ipv4Hdr,
    pub udp: UdpHdr,
}

const _: () = assert!(core::mem::size_of::<UdpFrameHdr>() == HEADROOM);

impl UdpFrameHdr {
    /// The sender: source MAC, IPv4 address and UDP port.
    pub fn src(&self) -> crate::transport::EndpointAddr {
        crate::transport::EndpointAddr { mac: self.eth.src, ipv4: self.ipv4.src, udp_port: self.udp.src_port.get() }
    }

    /// The receiver: destination MAC, IPv4 address and UDP port.
    pub fn dst(&self) -> crate::transport::EndpointAddr {
        crate::transport::EndpointAddr { mac: self.eth.dst, ipv4: self.ipv4.dst, udp_port: self.udp.dst_port.get() }
    }
}

impl PktHdr {
    /// The sender: source MAC, IPv4 address and UDP port.
    pub fn src(&self) -> crate::transport::EndpointAddr {
        crate::transport::EndpointAddr { mac: self.eth.src, ipv4: self.ipv4.src, udp_port: self.udp.src_port.get() }
    }
}

/// A ready-made Ethernet/IPv4/UDP header for one remote endpoint: the original's
/// `routing_info_t` after `resolve_remote_routing_info()`. Built once per session; per packet
/// only the two length fields and the IPv4 checksum are patched (incrementally, RFC 1624).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingInfo {
    /// The template: lengths zero, the IPv4 checksum that of the zero-length header.
    pub hdr: UdpFrameHdr,
}

impl RoutingInfo {
    pub const EMPTY: RoutingInfo = RoutingInfo {
        hdr: UdpFrameHdr {
            eth: EthHdr { dst: [0; 6], src: [0; 6], ethertype: U16::ZERO },
            ipv4: Ipv4Hdr {
                version_ihl: 0,
                tos: 0,
                total_len: U16::ZERO,
                id: U16::ZERO,
                frag_off: U16::ZERO,
                ttl: 0,
                protocol: 0,
                checksum: U16::ZERO,
                src: [0; 4],
                dst: [0; 4],
            },
            udp: UdpHdr { src_port: U16::ZERO, dst_port: U16::ZERO, len: U16::ZERO, checksum: U16::ZERO },
        },
    };

    /// Builds the template for packets from `src` to `dst`. Lengths are zero; the IPv4 checksum
    /// is that of the zero-length header, so [`RoutingInfo::write`] can patch it incrementally.
    pub fn new(src: &crate::transport::EndpointAddr, dst: &crate::transport::EndpointAddr) -> Self {
        let mut ipv4 = Ipv4Hdr {
            version_ihl: 0x45,
            tos: 1,
            total_len: U16::new(0),
            id: U16::new(0),
            frag_off: U16::new(0),
            ttl: 128,
            protocol: IPPROTO_UDP,
            checksum: U16::new(0),
            src: src.ipv4,
            dst: dst.ipv4,
        };
        ipv4.checksum = U16::new(ipv4_checksum(&ipv4));
        let eth = EthHdr { dst: dst.mac, src: src.mac, ethertype: U16::new(ETHERTYPE_IPV4) };
        let udp = UdpHdr {
            src_port: U16::new(src.udp_port),
            dst_port: U16::new(dst.udp_port),
            len: U16::new(0),
            checksum: U16::new(0),
        };
        RoutingInfo { hdr: UdpFrameHdr { eth, ipv4, udp } }
    }

    /// Writes the headroom for a packet whose UDP payload (eRPC header + data) is `udp_payload`
    /// bytes long into `out`.
    #[inline]
    pub fn write(&self, out: &mut [u8; HEADROOM], udp_payload: usize) {
        let mut h = self.hdr;
        let ip_len = (20 + 8 + udp_payload) as u16;
        h.ipv4.total_len = U16::new(ip_len);
        h.udp.len = U16::new((8 + udp_payload) as u16);
        // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), with the old total length m = 0.
        let sum = (!self.hdr.ipv4.checksum.get()) as u32 + 0xFFFF + ip_len as u32;
        h.ipv4.checksum = U16::new(!fold(sum));
        *out = zerocopy::transmute!(h);
    }

    /// Destination UDP port of the template.
    pub fn dst_port(&self) -> u16 {
        self.hdr.udp.dst_port.get()
    }

    /// Destination MAC of the template.
    pub fn dst_mac(&self) -> [u8; 6] {
        self.hdr.eth.dst
    }

    /// Destination IPv4 address of the template.
    pub fn dst_ipv4(&self) -> [u8; 4] {
        self.hdr.ipv4.dst
    }
}

/// Reads the source endpoint (MAC, IPv4, UDP port) out of a packet's headroom (`None` if it is
/// shorter than [`HEADROOM`]).
pub fn src_of(headroom: &[u8]) -> Option<crate::transport::EndpointAddr> {
    UdpFrameHdr::read_from_prefix(headroom).ok().map(|(h, _)| h.src())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::EndpointAddr;

    #[test]
    fn bit_exact_with_original() {
        // format(0xAB, 0x123456, 0xBEEF, kResp, 0x1ABC, 0x123456789AB) in the original.
        let h = ErpcHdr::new(0xAB, 0x123456, 0xBEEF, PktType::Resp, 0x1ABC, 0x123456789AB);
        assert_eq!(h.as_bytes(), &[0xab, 0x56, 0x34, 0x12, 0xef, 0xbe, 0xf3, 0x6a, 0xab, 0x89, 0x67, 0x45, 0x23, 0xb1]);
        let d = h.decode();
        assert_eq!(
            (d.req_type, d.msg_size, d.dest_session_num, d.pkt_type, d.pkt_num, d.req_num, d.magic),
            (0xAB, 0x123456, 0xBEEF, PktType::Resp, 0x1ABC, 0x123456789AB, MAGIC)
        );
        assert_eq!(h.with_pkt_num(7).decode().pkt_num, 7);
        assert_eq!(h.with_pkt_num(7).decode().req_num, 0x123456789AB);
    }

    #[test]
    fn checked_view_rejects_bad_input() {
        let a = EndpointAddr { mac: [2, 0, 0, 0, 0, 1], ipv4: [10, 0, 0, 1], udp_port: 31850 };
        let b = EndpointAddr { mac: [2, 0, 0, 0, 0, 2], ipv4: [10, 0, 0, 2], udp_port: 31851 };
        let ri = RoutingInfo::new(&a, &b);
        let mut buf = [0u8; 64];
        let mut hr = [0u8; HEADROOM];
        ri.write(&mut hr, 22);
        buf[..HEADROOM].copy_from_slice(&hr);
        buf[HEADROOM..PKT_HDR_LEN].copy_from_slice(ErpcHdr::new(1, 8, 3, PktType::Req, 0, 8).as_bytes());
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header().dest_session_num, 3);
        assert_eq!(p.payload().len(), 8);
        assert_eq!(Packet::new_checked(&buf[..55]).unwrap_err(), WireError::Truncated);
        let mut bad = buf;
        bad[55] = 0x00;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), WireError::BadMagic);
        let mut bad = buf;
        bad[23] = 6;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), WireError::NotUdp);
        assert_eq!(src_of(&buf), Some(a));
    }

    #[test]
    fn incremental_checksum_matches_full() {
        let a = EndpointAddr { mac: [2, 0, 0, 0, 0, 1], ipv4: [192, 168, 7, 1], udp_port: 1 };
        let b = EndpointAddr { mac: [2, 0, 0, 0, 0, 2], ipv4: [172, 16, 99, 254], udp_port: 2 };
        let ri = RoutingInfo::new(&a, &b);
        for len in [0usize, 14, 982, 1000, 1472, 65000] {
            let mut hr = [0u8; HEADROOM];
            ri.write(&mut hr, len);
            let mut ip = Ipv4Hdr::read_from_bytes(&hr[14..34]).unwrap();
            assert_eq!(ip.total_len.get() as usize, 28 + len);
            let got = ip.checksum.get();
            ip.checksum = U16::new(0);
            assert_eq!(got, ipv4_checksum(&ip), "len {len}");
        }
    }
}
