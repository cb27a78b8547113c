//! Datapath layouts: send and receive WQE segments, CQEs and EQEs (all big-endian, 16- or
//! 64-byte units the device reads and writes in DMA memory).
//!
//! Sources: rdma-core `providers/mlx5/mlx5dv.h` (`struct mlx5_wqe_ctrl_seg`,
//! `mlx5_wqe_eth_seg`, `mlx5_wqe_data_seg`, `mlx5_wqe_srq_next_seg`, `mlx5_cqe64`,
//! `mlx5_err_cqe`, the `MLX5_OPCODE_*`, `MLX5_CQE_*` and `MLX5_WQE_CTRL_*` constants), DPDK
//! `drivers/common/mlx5/mlx5_prm.h` (`MLX5_ESEG_MIN_INLINE_SIZE`), Linux
//! `include/linux/mlx5/device.h` (`struct mlx5_eqe`, `mlx5_eqe_page_req`, `MLX5_EVENT_TYPE_*`,
//! `MLX5_EQ_DOORBEL_OFFSET`, `MLX5_BF_OFFSET`, and the striding-RQ `byte_cnt` fields of
//! `struct mpwrq_cqe_bc`).

use zerocopy::big_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A send WQE basic block (`MLX5_SEND_WQE_BB`).
pub const WQEBB: usize = 64;
/// Send opcode (`MLX5_OPCODE_SEND`).
pub const OPCODE_SEND: u32 = 0x0A;
/// `fm_ce_se`: ask for a CQE for this WQE (`MLX5_WQE_CTRL_CQ_UPDATE`).
pub const CTRL_CQ_UPDATE: u8 = 2 << 2;
/// Inline L2 header bytes when the device requires them (`MLX5_ESEG_MIN_INLINE_SIZE`).
pub const L2_INLINE: usize = 18;
/// BlueFlame register offset in a UAR page (`MLX5_BF_OFFSET`); drivers alternate between it and
/// the next half of the BlueFlame buffer.
pub const BF_OFFSET: u32 = 0x800;
/// Size of one BlueFlame half: the doorbell alternates between `BF_OFFSET` and
/// `BF_OFFSET + BF_HALF`.
pub const BF_HALF: u32 = 0x100;
/// EQ doorbell offsets in a UAR page (`MLX5_EQ_DOORBEL_OFFSET`): update the consumer index and
/// arm, or update only.
pub const EQ_DOORBELL_ARM: u32 = 0x40;
pub const EQ_DOORBELL_UPDATE: u32 = 0x48;

/// `struct mlx5_wqe_ctrl_seg` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CtrlSeg {
    /// `opmod` (31:24), `wqe_index` (23:8), `opcode` (7:0).
    pub opmod_idx_opcode: U32,
    /// SQ number (31:8), `ds`: the WQE's size in 16-byte units (5:0).
    pub qpn_ds: U32,
    pub signature: u8,
    pub rsvd: [u8; 2],
    /// Fence (7:5), completion mode CE (3:2), solicited event (1).
    pub fm_ce_se: u8,
    pub imm: U32,
}
const _: () = assert!(core::mem::size_of::<CtrlSeg>() == 16);

/// `struct mlx5_wqe_eth_seg` (16 bytes; inline headers start in its last two bytes and continue
/// in the following 16-byte units).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EthSeg {
    pub swp_offsets: [u8; 4],
    pub cs_flags: u8,
    pub swp_flags: u8,
    pub mss: U16,
    pub metadata: U32,
    pub inline_hdr_sz: U16,
    pub inline_hdr_start: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<EthSeg>() == 16);

/// `struct mlx5_wqe_data_seg` (16 bytes): a gather (send) or scatter (receive) entry.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DataSeg {
    pub byte_count: U32,
    pub lkey: U32,
    pub addr: U64,
}
const _: () = assert!(core::mem::size_of::<DataSeg>() == 16);

/// A striding-RQ WQE (32 bytes): `struct mlx5_wqe_srq_next_seg` then one data segment pointing
/// at a buffer of strides × stride bytes (DPDK's `struct mlx5_wqe_mprq`).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct StridingRxWqe {
    pub rsvd0: [u8; 2],
    pub next_wqe_index: U16,
    pub signature: u8,
    pub rsvd1: [u8; 11],
    pub data: DataSeg,
}
const _: () = assert!(core::mem::size_of::<StridingRxWqe>() == 32);

/// CQE opcodes (`op_own` bits 7:4; `MLX5_CQE_*`).
pub mod cqe_op {
    pub const REQ: u8 = 0x0;
    pub const RESP_SEND: u8 = 0x2;
    pub const RESP_SEND_IMM: u8 = 0x3;
    pub const RESP_SEND_INV: u8 = 0x4;
    pub const REQ_ERR: u8 = 0xD;
    pub const RESP_ERR: u8 = 0xE;
    /// Software's initial value: never written by the device.
    pub const INVALID: u8 = 0xF;
}

/// `struct mlx5_cqe64` (64 bytes), the fields this driver reads.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Cqe64 {
    pub rsvd0: [u8; 2],
    /// Striding RQ: the receive WQE the packet was placed in.
    pub wqe_id: U16,
    pub rsvd4: [u8; 40],
    /// Striding RQ: filler (31), strides consumed (30:16), byte count (15:0); otherwise the
    /// byte count. See [`mprq`].
    pub byte_cnt: U32,
    /// In an error CQE (`struct mlx5_err_cqe`), bytes 54 and 55 (of this field) are
    /// `vendor_err_synd` and `syndrome`.
    pub timestamp: U64,
    /// The queue number (23:0).
    pub sop_drop_qpn: U32,
    /// Send: index of the WQE completed. Striding RQ: the first stride of the packet.
    pub wqe_counter: U16,
    pub signature: u8,
    /// `opcode` (7:4), `cqe_format` (3:2), `se` (1), `owner` (0).
    pub op_own: u8,
}
const _: () = assert!(core::mem::size_of::<Cqe64>() == 64);

impl Cqe64 {
    pub fn opcode(&self) -> u8 {
        self.op_own >> 4
    }
    /// `mlx5_err_cqe.syndrome` (byte 55).
    pub fn err_syndrome(&self) -> u8 {
        self.timestamp.get().to_be_bytes()[7]
    }
    /// `mlx5_err_cqe.vendor_err_synd` (byte 54).
    pub fn vendor_syndrome(&self) -> u8 {
        self.timestamp.get().to_be_bytes()[6]
    }
}

/// Striding-RQ `byte_cnt` fields, as Linux `include/linux/mlx5/device.h` reads them
/// (`struct mpwrq_cqe_bc`: a 16-bit `filler_consumed_strides` then a 16-bit `byte_cnt`):
/// the filler flag is bit 31 (`mpwrq_is_filler_cqe`: 0x8000 of the first half), the strides
/// consumed bits 30:16 (`mpwrq_get_cqe_consumed_strides`: 15 bits, mask 0x7fff), the length
/// bits 15:0. DPDK's `mlx5_prm.h` (`MLX5_MPRQ_STRIDE_NUM_MASK` = 0x3fff0000) and Caladan keep
/// only bits 29:16; the whole 15-bit field is read here so a count with its top bit set is
/// seen as the out-of-range count it is.
pub mod mprq {
    pub const FILLER: u32 = 1 << 31;
    pub const STRIDES_SHIFT: u32 = 16;
    pub const STRIDES_MASK: u32 = 0x7fff;
    pub const LEN_MASK: u32 = 0xffff;
}

/// `struct mlx5_eqe` (64 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Eqe {
    pub rsvd0: u8,
    pub type_: u8,
    pub rsvd1: u8,
    pub sub_type: u8,
    pub rsvd2: [u8; 28],
    pub data: EqePageReq,
    pub rsvd3: U16,
    pub signature: u8,
    /// Bit 0: the owner bit.
    pub owner: u8,
}
const _: () = assert!(core::mem::size_of::<Eqe>() == 64);

/// `struct mlx5_eqe_page_req`, the data of a page-request EQE (28 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EqePageReq {
    pub ec_function: U16,
    pub func_id: U16,
    /// Pages wanted (negative: pages the firmware gives back).
    pub num_pages: I32,
    pub rsvd: [U32; 5],
}

/// Event types (`MLX5_EVENT_TYPE_*`).
pub mod event {
    pub const CQ_ERROR: u8 = 0x04;
    pub const WQ_CATAS_ERROR: u8 = 0x05;
    pub const PORT_CHANGE: u8 = 0x09;
    pub const PAGE_REQUEST: u8 = 0x0B;
}
