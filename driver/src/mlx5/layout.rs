//! Layouts of the ConnectX (mlx5) initialization segment, command queue entries, mailboxes and
//! the bring-up commands, as the device defines them (big-endian).
//!
//! Sources: Linux `include/linux/mlx5/device.h` (`struct mlx5_init_seg`, `struct health_buffer`,
//! `struct mlx5_cmd_layout`, `struct mlx5_cmd_prot_block`; also in rdma-core
//! `providers/mlx5/mlx5_vfio.h`) and `include/linux/mlx5/mlx5_ifc.h` (the `mlx5_ifc_*_in_bits`
//! / `*_out_bits` command layouts, given there as bit offsets; each struct below names its
//! source). Field names follow those sources.

use zerocopy::big_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Byte offsets in the initialization segment at the start of BAR0 (`struct mlx5_init_seg`).
pub mod init_seg {
    /// Firmware revision: minor (high 16 bits) and major (low 16 bits).
    pub const FW_REV: u32 = 0x00;
    /// Command interface revision (high 16 bits) and firmware sub-minor (low 16 bits).
    pub const CMDIF_REV_FW_SUB: u32 = 0x04;
    pub const CMDQ_ADDR_H: u32 = 0x10;
    /// Command queue address bits 31:12; reading gives `log_cmdq_size` (bits 7:4) and
    /// `log_cmdq_stride` (bits 3:0); bits 9:8 are the NIC interface mode (0: full driver).
    pub const CMDQ_ADDR_L_SZ: u32 = 0x14;
    /// One bit per command queue entry: writing it hands the entry to the device.
    pub const CMD_DBELL: u32 = 0x18;
    /// Bit 31: the firmware is still initializing.
    pub const INITIALIZING: u32 = 0x1FC;
    /// `struct health_buffer` starts here; its syndrome byte is at `HEALTH_SYND`.
    pub const HEALTH: u32 = 0x200;
    /// The health buffer's word holding `irisc_index` (byte 0x23C) and `synd` (byte 0x23D).
    pub const HEALTH_SYND_WORD: u32 = 0x23C;
    /// Advances while the firmware is alive.
    pub const HEALTH_COUNTER: u32 = 0x1010;
}

/// The command interface revision this driver speaks (`CMD_IF_REV` in the Linux driver).
pub const CMD_IF_REV: u32 = 5;

/// `type` of a command entry: PCI command transport (`MLX5_PCI_CMD_XPORT`).
pub const CMD_TYPE_PCI: u8 = 0x7;
/// Ownership bit of `status_own`: 1 while the device owns the entry (`CMD_OWNER_HW`).
pub const CMD_OWNER_HW: u8 = 0x1;
/// Bytes of command input and output carried inline in the entry.
pub const CMD_INLINE: usize = 16;
/// Data bytes per mailbox (`MLX5_CMD_DATA_BLOCK_SIZE`).
pub const MAILBOX_DATA: usize = 512;

/// A command queue entry: `struct mlx5_cmd_layout` (64 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CmdLayout {
    pub type_: u8,
    pub rsvd0: [u8; 3],
    pub inlen: U32,
    /// IOVA of the first input mailbox.
    pub in_ptr: U64,
    pub in_: [u8; CMD_INLINE],
    pub out: [u8; CMD_INLINE],
    /// IOVA of the first output mailbox.
    pub out_ptr: U64,
    pub outlen: U32,
    pub token: u8,
    pub sig: u8,
    pub rsvd1: u8,
    /// Bit 0: ownership ([`CMD_OWNER_HW`]); bits 7:1: delivery status (0 = delivered).
    pub status_own: u8,
}
const _: () = assert!(core::mem::size_of::<CmdLayout>() == 64);

/// A mailbox: `struct mlx5_cmd_prot_block` (576 bytes, 1 KiB aligned in practice).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CmdBlock {
    pub data: [u8; MAILBOX_DATA],
    pub rsvd0: [u8; 48],
    /// IOVA of the next mailbox, 0 for the last.
    pub next: U64,
    pub block_num: U32,
    pub rsvd1: u8,
    pub token: u8,
    pub ctrl_sig: u8,
    pub sig: u8,
}
const _: () = assert!(core::mem::size_of::<CmdBlock>() == 576);

/// The header every command input starts with (`opcode`, `uid`, `op_mod` of each
/// `mlx5_ifc_*_in_bits`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct InHdr {
    pub opcode: U16,
    pub uid: U16,
    pub rsvd: U16,
    pub op_mod: U16,
}
const _: () = assert!(core::mem::size_of::<InHdr>() == 8);

impl InHdr {
    pub fn new(opcode: u16, op_mod: u16) -> Self {
        InHdr { opcode: opcode.into(), op_mod: op_mod.into(), ..Default::default() }
    }
}

/// The header every command output starts with (`status`, `syndrome`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OutHdr {
    pub status: u8,
    pub rsvd: [u8; 3],
    pub syndrome: U32,
}
const _: () = assert!(core::mem::size_of::<OutHdr>() == 8);

/// Command opcodes (`MLX5_CMD_OP_*` of `mlx5_ifc.h`).
pub mod op {
    pub const QUERY_HCA_CAP: u16 = 0x100;
    pub const INIT_HCA: u16 = 0x102;
    pub const TEARDOWN_HCA: u16 = 0x103;
    pub const ENABLE_HCA: u16 = 0x104;
    pub const DISABLE_HCA: u16 = 0x105;
    pub const QUERY_PAGES: u16 = 0x107;
    pub const MANAGE_PAGES: u16 = 0x108;
    pub const SET_HCA_CAP: u16 = 0x109;
    pub const QUERY_ISSI: u16 = 0x10A;
    pub const SET_ISSI: u16 = 0x10B;

    /// The command's name, for error messages.
    pub fn name(op: u16) -> &'static str {
        match op {
            QUERY_HCA_CAP => "QUERY_HCA_CAP",
            INIT_HCA => "INIT_HCA",
            TEARDOWN_HCA => "TEARDOWN_HCA",
            ENABLE_HCA => "ENABLE_HCA",
            DISABLE_HCA => "DISABLE_HCA",
            QUERY_PAGES => "QUERY_PAGES",
            MANAGE_PAGES => "MANAGE_PAGES",
            SET_HCA_CAP => "SET_HCA_CAP",
            QUERY_ISSI => "QUERY_ISSI",
            SET_ISSI => "SET_ISSI",
            _ => "command",
        }
    }
}

/// `mlx5_ifc_enable_hca_in_bits` / `mlx5_ifc_disable_hca_in_bits` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FunctionIn {
    pub hdr: InHdr,
    /// `embedded_cpu_function` (bit 31) and `function_id` (bits 15:0).
    pub function: U32,
    pub rsvd: U32,
}
const _: () = assert!(core::mem::size_of::<FunctionIn>() == 16);

/// `mlx5_ifc_set_issi_in_bits` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetIssiIn {
    pub hdr: InHdr,
    pub rsvd: U16,
    pub current_issi: U16,
    pub rsvd2: U32,
}
const _: () = assert!(core::mem::size_of::<SetIssiIn>() == 16);

/// `op_mod` of QUERY_PAGES: which pages the firmware asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum PagesKind {
    Boot = 1,
    Init = 2,
    Regular = 3,
}

/// `mlx5_ifc_query_pages_out_bits` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QueryPagesOut {
    pub hdr: OutHdr,
    pub function: U32,
    /// Pages the firmware wants (negative: pages it gives back).
    pub num_pages: I32,
}
const _: () = assert!(core::mem::size_of::<QueryPagesOut>() == 16);

/// `op_mod` of MANAGE_PAGES.
pub mod manage_pages {
    /// The firmware rejects a page request (`MLX5_PAGES_CANT_GIVE`).
    pub const CANT_GIVE: u16 = 0;
    pub const GIVE: u16 = 1;
    pub const TAKE: u16 = 2;
}

/// The fixed part of `mlx5_ifc_manage_pages_in_bits` (16 bytes), followed by
/// `input_num_entries` 64-bit page addresses (`pas`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ManagePagesIn {
    pub hdr: InHdr,
    pub function: U32,
    pub input_num_entries: U32,
}
const _: () = assert!(core::mem::size_of::<ManagePagesIn>() == 16);

/// The fixed part of `mlx5_ifc_manage_pages_out_bits` (16 bytes), followed by
/// `output_num_entries` page addresses (the pages taken back).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ManagePagesOut {
    pub hdr: OutHdr,
    pub output_num_entries: U32,
    pub rsvd: U32,
}
const _: () = assert!(core::mem::size_of::<ManagePagesOut>() == 16);

/// Inputs that are only a header and reserved bytes (16 bytes): `mlx5_ifc_init_hca_in_bits`,
/// `mlx5_ifc_query_issi_in_bits`, `mlx5_ifc_query_hca_cap_in_bits` (its `op_mod` selects the
/// capability).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PlainIn {
    pub hdr: InHdr,
    pub rsvd: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<PlainIn>() == 16);

/// `mlx5_ifc_teardown_hca_in_bits` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct TeardownHcaIn {
    pub hdr: InHdr,
    pub rsvd: U16,
    /// 0: graceful close (`MLX5_TEARDOWN_HCA_IN_PROFILE_GRACEFUL_CLOSE`).
    pub profile: U16,
    pub rsvd2: U32,
}
const _: () = assert!(core::mem::size_of::<TeardownHcaIn>() == 16);

/// Outputs that are only the header and reserved bytes (16 bytes): ENABLE_HCA, DISABLE_HCA,
/// SET_ISSI, INIT_HCA, TEARDOWN_HCA (bit 0 of the last byte: `state`), SET_HCA_CAP.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PlainOut {
    pub hdr: OutHdr,
    pub rsvd: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<PlainOut>() == 16);

/// `mlx5_ifc_query_issi_out_bits`: the header, `current_issi` at byte 10, and the
/// `supported_issi` bit mask (80 bytes) at byte 0x20; 0x70 bytes in all.
pub const QUERY_ISSI_OUT_LEN: usize = 0x70;
/// Offset of `current_issi` (16 bits) in QUERY_ISSI's output.
pub const QUERY_ISSI_CURRENT: usize = 0x0A;
/// Offset of the last byte of `supported_issi_dw0` in QUERY_ISSI's output: bit n of it says
/// ISSI n is supported.
pub const QUERY_ISSI_SUPPORTED_LOW_BYTE: usize = 0x6F;

/// Bytes of a capability block (`mlx5_ifc_hca_cap_union_bits`: 0x8000 bits).
pub const HCA_CAP_LEN: usize = 0x1000;
/// QUERY_HCA_CAP's output: a 16-byte header, then the capability.
pub const QUERY_HCA_CAP_OUT_LEN: usize = 16 + HCA_CAP_LEN;
/// SET_HCA_CAP's input: a 16-byte header, then the capability.
pub const SET_HCA_CAP_IN_LEN: usize = 16 + HCA_CAP_LEN;
/// QUERY_HCA_CAP `op_mod`: capability type (bits 15:1) and current (1) or maximum (0) values.
pub const fn hca_cap_op_mod(cap_type: u16, current: bool) -> u16 {
    (cap_type << 1) | current as u16
}
/// `MLX5_CAP_GENERAL` and `MLX5_CAP_ETHERNET_OFFLOADS` capability types.
pub const CAP_GENERAL: u16 = 0;
pub const CAP_ETHERNET_OFFLOADS: u16 = 1;

/// Reads big-endian bit field `[bit_off, bit_off + bits)` of an `mlx5_ifc` layout, as
/// `MLX5_GET` does (bit 0 is the most significant bit of byte 0; fields do not cross a
/// 32-bit word). `None` if the field lies outside `buf`.
pub fn get_bits(buf: &[u8], bit_off: usize, bits: usize) -> Option<u32> {
    let word = bit_off / 32;
    let w = buf.get(word * 4..word * 4 + 4)?;
    let v = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
    let shift = 32 - (bit_off % 32) - bits;
    let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
    Some((v >> shift) & mask)
}

/// Writes a big-endian bit field as `MLX5_SET` does; `false` if it lies outside `buf`.
pub fn set_bits(buf: &mut [u8], bit_off: usize, bits: usize, value: u32) -> bool {
    let word = bit_off / 32;
    let Some(w) = buf.get_mut(word * 4..word * 4 + 4) else { return false };
    let mut v = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
    let shift = 32 - (bit_off % 32) - bits;
    let mask = if bits == 32 { u32::MAX } else { ((1u32 << bits) - 1) << shift };
    v = (v & !mask) | ((value << shift) & mask);
    w.copy_from_slice(&v.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_fields_are_big_endian_from_the_top_bit() {
        let mut b = [0u8; 8];
        assert!(set_bits(&mut b, 0, 16, 0x104));
        assert_eq!(&b[..2], &[0x01, 0x04]);
        assert!(set_bits(&mut b, 0x30, 0x10, 0xBEEF));
        assert_eq!(&b[6..8], &[0xBE, 0xEF]);
        assert!(set_bits(&mut b, 0x20, 1, 1));
        assert_eq!(b[4], 0x80);
        assert_eq!(get_bits(&b, 0x20, 1), Some(1));
        assert_eq!(get_bits(&b, 0x30, 0x10), Some(0xBEEF));
        assert_eq!(get_bits(&b, 64, 8), None);
        // The header struct and the bit accessors agree.
        let h = InHdr::new(0x104, 7);
        assert_eq!(get_bits(h.as_bytes(), 0, 16), Some(0x104));
        assert_eq!(get_bits(h.as_bytes(), 0x30, 16), Some(7));
    }
}
