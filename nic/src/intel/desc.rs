//! Advanced receive and transmit descriptors, shared by the igb (82576, I350) and ixgbe (82599,
//! X540) families.
//!
//! Layouts: Intel 82576 GbE Controller Datasheet rev. 2.63, section 7.1.5 (advanced receive
//! descriptors: read format 7.1.5.1, write-back format 7.1.5.2) and section 7.2.2.3 (advanced
//! transmit data descriptor, read and write-back); Intel 82599 10 GbE Controller Datasheet rev.
//! 3.3, sections 7.1.6.1/7.1.6.2 and 7.2.3.2.4, which define the same 16-byte formats. All fields
//! are little-endian.
//!
//! Descriptor rings live in device-writable DMA memory, so these types are never borrowed from
//! it: the ring code copies them in and out with volatile accesses.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Advanced receive descriptor, read format (what software posts): 82576 datasheet 7.1.5.1,
/// 82599 datasheet 7.1.6.1.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AdvRxRead {
    /// Packet buffer address (IOVA).
    pub pkt_addr: U64,
    /// Header buffer address; bit 0 is where the device writes DD back, so it is posted as 0.
    pub hdr_addr: U64,
}

/// Advanced receive descriptor, write-back format (what the device returns): 82576 datasheet
/// 7.1.5.2, 82599 datasheet 7.1.6.2.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AdvRxWb {
    /// Packet type and header length/split info.
    pub pkt_info: U16,
    pub hdr_info: U16,
    /// RSS hash or fragment checksum.
    pub rss: U32,
    /// Extended status (bits 0..19) and extended errors (bits 20..31).
    pub status_error: U32,
    /// Length of the data written to the packet buffer.
    pub length: U16,
    pub vlan: U16,
}

/// Extended status bits of [`AdvRxWb::status_error`] common to both families.
pub const RXD_STAT_DD: u32 = 1 << 0;
/// End of packet: the last descriptor of a frame.
pub const RXD_STAT_EOP: u32 = 1 << 1;

/// Advanced transmit data descriptor, read format: 82576 datasheet 7.2.2.3, 82599 datasheet
/// 7.2.3.2.4.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AdvTxRead {
    /// Data buffer address (IOVA).
    pub buffer_addr: U64,
    /// DTALEN (bits 0..15), DTYP (20..23), DCMD (24..31).
    pub cmd_type_len: U32,
    /// PAYLEN (bits 14..31) and offload fields.
    pub olinfo_status: U32,
}

/// Advanced transmit descriptor, write-back format: DD is bit 0 of the last dword.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AdvTxWb {
    pub rsvd: U64,
    pub nxtseq_seed: U32,
    pub status: U32,
}

/// DTYP = 0011b: advanced data descriptor.
pub const TXD_DTYP_DATA: u32 = 0x3 << 20;
/// DCMD.EOP: last descriptor of the packet.
pub const TXD_CMD_EOP: u32 = 1 << 24;
/// DCMD.IFCS: insert the Ethernet FCS.
pub const TXD_CMD_IFCS: u32 = 1 << 25;
/// DCMD.RS: report status (write DD back) for this descriptor.
pub const TXD_CMD_RS: u32 = 1 << 27;
/// DCMD.DEXT: descriptor extension (advanced format).
pub const TXD_CMD_DEXT: u32 = 1 << 29;
/// Shift of PAYLEN in `olinfo_status`.
pub const TXD_PAYLEN_SHIFT: u32 = 14;
/// Write-back status DD.
pub const TXD_STAT_DD: u32 = 1 << 0;

/// Size of every descriptor here.
pub const DESC_SIZE: usize = 16;

const _: () = assert!(core::mem::size_of::<AdvRxRead>() == DESC_SIZE);
const _: () = assert!(core::mem::size_of::<AdvRxWb>() == DESC_SIZE);
const _: () = assert!(core::mem::size_of::<AdvTxRead>() == DESC_SIZE);
const _: () = assert!(core::mem::size_of::<AdvTxWb>() == DESC_SIZE);
const _: () = assert!(core::mem::offset_of!(AdvRxWb, status_error) == 8);
const _: () = assert!(core::mem::offset_of!(AdvRxWb, length) == 12);
const _: () = assert!(core::mem::offset_of!(AdvTxWb, status) == 12);
