//! The model's own definitions of the mlx5 layouts it decodes, written from the public sources
//! and independent of the driver's: Linux `include/linux/mlx5/mlx5_ifc.h` (structures given as
//! bit offsets, `struct mlx5_ifc_<name>_bits`), Linux `include/linux/mlx5/device.h` and
//! rdma-core `providers/mlx5/mlx5_vfio.h` (the byte structures `mlx5_init_seg`,
//! `mlx5_cmd_layout`, `mlx5_cmd_prot_block` / `mlx5_cmd_block`, `mlx5_eqe`), Linux
//! `drivers/net/ethernet/mellanox/mlx5/core/cmd.c` (status codes), and for the queues and the datapath rdma-core
//! `providers/mlx5/mlx5dv.h` (`mlx5_cqe64`, `mlx5_err_cqe`, the WQE segments), Linux `cq.h` /
//! `qp.h` / `device.h` (CQE opcodes and syndromes, CQE flags, `MLX5_SND_DBR` / `MLX5_RCV_DBR`)
//! and DPDK `drivers/common/mlx5/mlx5_prm.h` (its copies of the `mlx5_ifc.h` queue contexts, and
//! the striding-RQ `byte_cnt` masks).
//!
//! A [`Field`] is a bit offset and width exactly as `mlx5_ifc.h` gives them: bit 0 is the most
//! significant bit of the first big-endian dword. [`get`] / [`set`] follow `MLX5_GET` /
//! `MLX5_SET`; fields never cross a dword. Out-of-range accesses read 0 and write nothing (the
//! callers check lengths first; this keeps bad input from panicking).

/// A field: bit offset and width (1..=32) within one big-endian dword, as in `mlx5_ifc.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub bit: u32,
    pub width: u32,
}

/// A field at `bit` of `width` bits.
pub const fn f(bit: u32, width: u32) -> Field {
    Field { bit, width }
}

impl Field {
    /// The same field inside a structure embedded at `base_bit`.
    pub const fn at(self, base_bit: u32) -> Field {
        Field { bit: self.bit + base_bit, width: self.width }
    }
}

fn mask(width: u32) -> u32 {
    if width >= 32 {
        u32::MAX
    } else {
        (1 << width) - 1
    }
}

/// `MLX5_GET`: the field's value, or 0 when `buf` is too short.
pub fn get(buf: &[u8], fld: Field) -> u32 {
    let dw = (fld.bit / 32) as usize * 4;
    let Some(b) = buf.get(dw..dw + 4) else { return 0 };
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let shift = 32 - (fld.bit % 32) - fld.width;
    (v >> shift) & mask(fld.width)
}

/// `MLX5_SET`: stores the low bits of `value` in the field; nothing when `buf` is too short.
pub fn set(buf: &mut [u8], fld: Field, value: u32) {
    let dw = (fld.bit / 32) as usize * 4;
    let Some(b) = buf.get_mut(dw..dw + 4) else { return };
    let shift = 32 - (fld.bit % 32) - fld.width;
    let m = mask(fld.width) << shift;
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let v = (v & !m) | ((value << shift) & m);
    b.copy_from_slice(&v.to_be_bytes());
}

/// Big-endian 64-bit value at byte offset `off` (`MLX5_GET64`), or 0 when out of range.
pub fn get64(buf: &[u8], off: usize) -> u64 {
    buf.get(off..off + 8).map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Stores a big-endian 64-bit value at byte offset `off`; nothing when out of range.
pub fn set64(buf: &mut [u8], off: usize, v: u64) {
    if let Some(b) = buf.get_mut(off..off + 8) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// Big-endian 32-bit value at byte offset `off`, or 0 when out of range.
pub fn get32(buf: &[u8], off: usize) -> u32 {
    buf.get(off..off + 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Stores a big-endian 32-bit value at byte offset `off`; nothing when out of range.
pub fn set32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(b) = buf.get_mut(off..off + 4) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// The adapter page: firmware pages, EQ/CQ/WQ buffer pages and UAR pages are 4 KiB
/// (`MLX5_ADAPTER_PAGE_SHIFT` = 12 in Linux `device.h`).
pub const ADAPTER_PAGE: u64 = 4096;

/// Initialization segment at BAR0 offset 0 (`struct mlx5_init_seg`, Linux `device.h`; PRM
/// "Initialization Segment" table). Every field is big-endian.
pub mod iseg {
    /// `fw_rev`: bits 31:16 minor, 15:0 major.
    pub const FW_REV: u32 = 0x00;
    /// `cmdif_rev_fw_sub`: bits 31:16 command interface revision, 15:0 firmware sub-minor.
    pub const CMDIF_REV_FW_SUB: u32 = 0x04;
    /// `cmdq_addr_h`: command queue address bits 63:32 (written first).
    pub const CMDQ_ADDR_H: u32 = 0x10;
    /// `cmdq_addr_l_sz`: bits 31:12 command queue address, 10:8 `nic_interface` (Linux
    /// `mlx5_get_nic_state` in `core/health.c`: `>> 8 & 7`, `MLX5_NIC_IFC_OFFSET`), 7:4
    /// `log_cmdq_size` (read-only), 3:0 `log_cmdq_stride` (read-only).
    pub const CMDQ_ADDR_L_SZ: u32 = 0x14;
    /// `cmd_dbell`: bit n rings command slot n.
    pub const CMD_DBELL: u32 = 0x18;
    /// `initializing`: bit 31 set while firmware boots; bits 26:24 `nic_interface_supported`.
    pub const INITIALIZING: u32 = 0x1FC;
    /// `struct health_buffer` (64 bytes).
    pub const HEALTH: u32 = 0x200;
    /// `health.fw_ver`.
    pub const HEALTH_FW_VER: u32 = 0x230;
    /// `health.synd`: the health syndrome byte (non-zero: firmware hit a fatal error).
    pub const HEALTH_SYND: u32 = 0x23D;
    /// `health.ext_synd` (16 bits).
    pub const HEALTH_EXT_SYND: u32 = 0x23E;
    /// `internal_timer_h` / `_l`.
    pub const INTERNAL_TIMER_H: u32 = 0x1000;
    pub const INTERNAL_TIMER_L: u32 = 0x1004;
    /// `health_counter`: advances while firmware is alive.
    pub const HEALTH_COUNTER: u32 = 0x1010;
    /// End of the segment as `mlx5_init_seg` defines it (`ieee1588_clk` .. `clr_intx`).
    pub const END: u32 = 0x2010;
}

/// Command queue entry, 64 bytes (`struct mlx5_cmd_layout`, Linux `device.h`; PRM "Command
/// Queue Entry Layout").
pub mod cmd_entry {
    pub const SIZE: usize = 0x40;
    /// `type`: must be `MLX5_PCI_CMD_XPORT` = 7.
    pub const TYPE: usize = 0x00;
    pub const TYPE_PCI: u8 = 7;
    /// `ilen` (big-endian 32).
    pub const ILEN: usize = 0x04;
    /// `iptr` (big-endian 64; bits 8:0 reserved: the input mailbox is 512-byte aligned).
    pub const IPTR: usize = 0x08;
    /// `in[4]`: the first 16 bytes of the input.
    pub const IN: usize = 0x10;
    /// `out[4]`: the first 16 bytes of the output.
    pub const OUT: usize = 0x20;
    /// `optr` (big-endian 64; bits 8:0 reserved).
    pub const OPTR: usize = 0x30;
    /// `olen` (big-endian 32).
    pub const OLEN: usize = 0x38;
    /// `token`: repeated in every mailbox block of the command.
    pub const TOKEN: usize = 0x3C;
    /// `sig`.
    pub const SIG: usize = 0x3D;
    /// `status_own`: bit 0 ownership (1 = hardware), bits 7:1 delivery status.
    pub const STATUS_OWN: usize = 0x3F;
    /// Inline input / output bytes.
    pub const INLINE: usize = 16;
    /// Entry pointers keep bits 63:9 (`input_mailbox_pointer_31_9`).
    pub const PTR_ALIGN: u64 = 512;
}

/// Command mailbox block, 576 bytes (`struct mlx5_cmd_prot_block`, Linux `device.h`; rdma-core
/// `struct mlx5_cmd_block`).
pub mod mailbox {
    pub const SIZE: usize = 0x240;
    /// `data[512]`.
    pub const DATA: usize = 512;
    /// `next` (big-endian 64; bits 9:0 reserved: blocks are 1 KiB aligned, `next_pointer_31_10`).
    pub const NEXT: usize = 0x230;
    /// `block_num` (big-endian 32): 0, 1, 2 ... along the chain.
    pub const BLOCK_NUM: usize = 0x238;
    /// `token`: must equal the entry's.
    pub const TOKEN: usize = 0x23D;
    /// `ctrl_sig`, `sig`.
    pub const CTRL_SIG: usize = 0x23E;
    pub const SIG: usize = 0x23F;
    pub const NEXT_ALIGN: u64 = 1024;
}

/// Command delivery status in `status_own` bits 7:1 (`MLX5_CMD_DELIVERY_STAT_*`, Linux `cmd.c`).
pub mod delivery {
    pub const OK: u8 = 0x0;
    pub const SIGNAT_ERR: u8 = 0x1;
    pub const TOK_ERR: u8 = 0x2;
    pub const BAD_BLK_NUM_ERR: u8 = 0x3;
    pub const OUT_PTR_ALIGN_ERR: u8 = 0x4;
    pub const IN_PTR_ALIGN_ERR: u8 = 0x5;
    pub const FW_ERR: u8 = 0x6;
    pub const IN_LENGTH_ERR: u8 = 0x7;
    pub const OUT_LENGTH_ERR: u8 = 0x8;
    pub const RES_FLD_NOT_CLR_ERR: u8 = 0x9;
    pub const CMD_DESCR_ERR: u8 = 0x10;
}

/// Command status in the output's first byte (`MLX5_CMD_STAT_*`, Linux `cmd.c` /
/// `mlx5_ifc.h`, rdma-core `mlx5_ifc.h`).
pub mod status {
    pub const OK: u8 = 0x0;
    pub const INT_ERR: u8 = 0x1;
    pub const BAD_OP: u8 = 0x2;
    pub const BAD_PARAM: u8 = 0x3;
    pub const BAD_SYS_STATE: u8 = 0x4;
    pub const BAD_RES: u8 = 0x5;
    pub const RES_BUSY: u8 = 0x6;
    pub const LIM: u8 = 0x8;
    pub const BAD_RES_STATE: u8 = 0x9;
    pub const IX: u8 = 0xa;
    pub const NO_RES: u8 = 0xf;
    pub const BAD_INP_LEN: u8 = 0x50;
    pub const BAD_OUTP_LEN: u8 = 0x51;
}

/// Command opcodes (`MLX5_CMD_OP_*`, `mlx5_ifc.h`).
pub mod op {
    pub const QUERY_HCA_CAP: u16 = 0x100;
    pub const INIT_HCA: u16 = 0x102;
    pub const TEARDOWN_HCA: u16 = 0x103;
    pub const ENABLE_HCA: u16 = 0x104;
    pub const DISABLE_HCA: u16 = 0x105;
    pub const QUERY_PAGES: u16 = 0x107;
    pub const MANAGE_PAGES: u16 = 0x108;
    pub const SET_HCA_CAP: u16 = 0x109;
    pub const QUERY_ISSI: u16 = 0x10a;
    pub const SET_ISSI: u16 = 0x10b;
    pub const QUERY_SPECIAL_CONTEXTS: u16 = 0x203;
    pub const CREATE_EQ: u16 = 0x301;
    pub const DESTROY_EQ: u16 = 0x302;
    pub const QUERY_NIC_VPORT_CONTEXT: u16 = 0x754;
    pub const MODIFY_NIC_VPORT_CONTEXT: u16 = 0x755;
    pub const ALLOC_PD: u16 = 0x800;
    pub const DEALLOC_PD: u16 = 0x801;
    pub const ALLOC_UAR: u16 = 0x802;
    pub const DEALLOC_UAR: u16 = 0x803;
    pub const ACCESS_REG: u16 = 0x805;
    pub const ALLOC_TRANSPORT_DOMAIN: u16 = 0x816;
    pub const DEALLOC_TRANSPORT_DOMAIN: u16 = 0x817;
    pub const CREATE_CQ: u16 = 0x400;
    pub const DESTROY_CQ: u16 = 0x401;
    pub const QUERY_CQ: u16 = 0x402;
    pub const ALLOC_Q_COUNTER: u16 = 0x771;
    pub const DEALLOC_Q_COUNTER: u16 = 0x772;
    pub const QUERY_Q_COUNTER: u16 = 0x773;
    pub const CREATE_TIR: u16 = 0x900;
    pub const DESTROY_TIR: u16 = 0x902;
    pub const CREATE_SQ: u16 = 0x904;
    pub const MODIFY_SQ: u16 = 0x905;
    pub const DESTROY_SQ: u16 = 0x906;
    pub const QUERY_SQ: u16 = 0x907;
    pub const CREATE_RQ: u16 = 0x908;
    pub const MODIFY_RQ: u16 = 0x909;
    pub const DESTROY_RQ: u16 = 0x90a;
    pub const QUERY_RQ: u16 = 0x90b;
    pub const CREATE_TIS: u16 = 0x912;
    pub const DESTROY_TIS: u16 = 0x914;
    pub const CREATE_RQT: u16 = 0x916;
    pub const DESTROY_RQT: u16 = 0x918;
    pub const SET_FLOW_TABLE_ROOT: u16 = 0x92f;
    pub const CREATE_FLOW_TABLE: u16 = 0x930;
    pub const DESTROY_FLOW_TABLE: u16 = 0x931;
    pub const CREATE_FLOW_GROUP: u16 = 0x933;
    pub const DESTROY_FLOW_GROUP: u16 = 0x934;
    pub const SET_FLOW_TABLE_ENTRY: u16 = 0x936;
    pub const DELETE_FLOW_TABLE_ENTRY: u16 = 0x938;

    /// A name for logs and messages.
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
            QUERY_SPECIAL_CONTEXTS => "QUERY_SPECIAL_CONTEXTS",
            CREATE_EQ => "CREATE_EQ",
            DESTROY_EQ => "DESTROY_EQ",
            QUERY_NIC_VPORT_CONTEXT => "QUERY_NIC_VPORT_CONTEXT",
            MODIFY_NIC_VPORT_CONTEXT => "MODIFY_NIC_VPORT_CONTEXT",
            ALLOC_PD => "ALLOC_PD",
            DEALLOC_PD => "DEALLOC_PD",
            ALLOC_UAR => "ALLOC_UAR",
            DEALLOC_UAR => "DEALLOC_UAR",
            ACCESS_REG => "ACCESS_REG",
            ALLOC_TRANSPORT_DOMAIN => "ALLOC_TRANSPORT_DOMAIN",
            DEALLOC_TRANSPORT_DOMAIN => "DEALLOC_TRANSPORT_DOMAIN",
            CREATE_CQ => "CREATE_CQ",
            DESTROY_CQ => "DESTROY_CQ",
            QUERY_CQ => "QUERY_CQ",
            ALLOC_Q_COUNTER => "ALLOC_Q_COUNTER",
            DEALLOC_Q_COUNTER => "DEALLOC_Q_COUNTER",
            QUERY_Q_COUNTER => "QUERY_Q_COUNTER",
            CREATE_TIR => "CREATE_TIR",
            DESTROY_TIR => "DESTROY_TIR",
            CREATE_SQ => "CREATE_SQ",
            MODIFY_SQ => "MODIFY_SQ",
            DESTROY_SQ => "DESTROY_SQ",
            QUERY_SQ => "QUERY_SQ",
            CREATE_RQ => "CREATE_RQ",
            MODIFY_RQ => "MODIFY_RQ",
            DESTROY_RQ => "DESTROY_RQ",
            QUERY_RQ => "QUERY_RQ",
            CREATE_TIS => "CREATE_TIS",
            DESTROY_TIS => "DESTROY_TIS",
            CREATE_RQT => "CREATE_RQT",
            DESTROY_RQT => "DESTROY_RQT",
            SET_FLOW_TABLE_ROOT => "SET_FLOW_TABLE_ROOT",
            CREATE_FLOW_TABLE => "CREATE_FLOW_TABLE",
            DESTROY_FLOW_TABLE => "DESTROY_FLOW_TABLE",
            CREATE_FLOW_GROUP => "CREATE_FLOW_GROUP",
            DESTROY_FLOW_GROUP => "DESTROY_FLOW_GROUP",
            SET_FLOW_TABLE_ENTRY => "SET_FLOW_TABLE_ENTRY",
            DELETE_FLOW_TABLE_ENTRY => "DELETE_FLOW_TABLE_ENTRY",
            _ => "unknown",
        }
    }
}

use self::f as fl;

/// The header every command input starts with (`mlx5_ifc_mbox_in_bits`).
pub mod mbox_in {
    use super::{fl, Field};
    pub const OPCODE: Field = fl(0x00, 16);
    pub const UID: Field = fl(0x10, 16);
    pub const OP_MOD: Field = fl(0x30, 16);
    /// Size of the header (and of every input with no further fields).
    pub const SIZE: usize = 0x10;
}

/// The header every command output starts with (`mlx5_ifc_mbox_out_bits`).
pub mod mbox_out {
    use super::{fl, Field};
    pub const STATUS: Field = fl(0x00, 8);
    pub const SYNDROME: Field = fl(0x20, 32);
    /// Size of the header (and of every output with no further fields).
    pub const SIZE: usize = 0x10;
}

/// `mlx5_ifc_enable_hca_in_bits` / `disable_hca_in_bits`: `function_id` at 0x50.
pub const HCA_FUNCTION_ID: Field = fl(0x50, 16);
/// `enable_hca_in` / `manage_pages_in`: `embedded_cpu_function` at 0x40.
pub const EMBEDDED_CPU_FUNCTION: Field = fl(0x40, 1);

/// `mlx5_ifc_query_issi_out_bits` (0x70 bytes) / `set_issi_in_bits`.
pub mod issi {
    use super::{fl, Field};
    pub const CURRENT_ISSI: Field = fl(0x50, 16);
    pub const SUPPORTED_ISSI_DW0: Field = fl(0x360, 32);
    pub const QUERY_OUT_SIZE: usize = 0x70;
}

/// `mlx5_ifc_query_pages_in_bits` / `query_pages_out_bits` (op_mod: 1 boot, 2 init, 3
/// regular; `MLX5_BOOT_PAGES` .. in Linux `pagealloc.c`).
pub mod query_pages {
    use super::{fl, Field};
    pub const FUNCTION_ID: Field = fl(0x50, 16);
    pub const NUM_PAGES: Field = fl(0x60, 32);
    pub const BOOT: u16 = 1;
    pub const INIT: u16 = 2;
    pub const REGULAR: u16 = 3;
}

/// `mlx5_ifc_manage_pages_in_bits` / `manage_pages_out_bits` (op_mod: 0 cannot give, 1 give,
/// 2 take: `MLX5_PAGES_CANT_GIVE` / `GIVE` / `TAKE`).
pub mod manage_pages {
    use super::{fl, Field};
    pub const FUNCTION_ID: Field = fl(0x50, 16);
    pub const INPUT_NUM_ENTRIES: Field = fl(0x60, 32);
    pub const OUTPUT_NUM_ENTRIES: Field = fl(0x40, 32);
    /// `pas[]` in both input and output.
    pub const PAS: usize = 0x10;
    pub const CANT_GIVE: u16 = 0;
    pub const GIVE: u16 = 1;
    pub const TAKE: u16 = 2;
}

/// `mlx5_ifc_teardown_hca_in_bits` / `_out_bits`.
pub mod teardown {
    use super::{fl, Field};
    pub const PROFILE: Field = fl(0x50, 16);
    pub const STATE: Field = fl(0x7f, 1);
    pub const GRACEFUL_CLOSE: u32 = 0;
    pub const FORCE_CLOSE: u32 = 1;
}

/// `mlx5_ifc_query_hca_cap_in_bits` (op_mod = cap type << 1 | current), `query_hca_cap_out`
/// / `set_hca_cap_in` (capability at byte 0x10, `hca_cap_union`: 4 KiB).
pub mod hca_cap {
    pub const CAPABILITY: usize = 0x10;
    pub const CAP_SIZE: usize = 0x1000;
    pub const GENERAL: u16 = 0;
    pub const ETHERNET_OFFLOADS: u16 = 1;
    /// `MLX5_CAP_FLOW_TABLE` (`enum mlx5_cap_type`, Linux `device.h`): `flow_table_nic_cap`.
    pub const FLOW_TABLE: u16 = 7;
}

/// `mlx5_ifc_cmd_hca_cap_bits` (general device capabilities).
pub mod cap_gen {
    use super::{fl, Field};
    pub const LOG_MAX_QP: Field = fl(0x9b, 5);
    pub const LOG_MAX_CQ_SZ: Field = fl(0xc8, 8);
    pub const LOG_MAX_CQ: Field = fl(0xdb, 5);
    pub const LOG_MAX_EQ_SZ: Field = fl(0xe0, 8);
    pub const LOG_MAX_MKEY: Field = fl(0xea, 6);
    pub const LOG_MAX_EQ: Field = fl(0xfc, 4);
    pub const CACHE_LINE_128BYTE: Field = fl(0x164, 1);
    pub const PKEY_TABLE_SIZE: Field = fl(0x190, 16);
    pub const NIC_FLOW_TABLE: Field = fl(0x1a6, 1);
    /// 0 InfiniBand, 1 Ethernet (`MLX5_CAP_PORT_TYPE_ETH`).
    pub const PORT_TYPE: Field = fl(0x1b6, 2);
    pub const NUM_PORTS: Field = fl(0x1b8, 8);
    pub const LOG_MAX_MSG: Field = fl(0x1c3, 5);
    pub const CQE_VERSION: Field = fl(0x1fc, 4);
    /// `striding_rq` in Linux, `eth_striding_wq` in rdma-core.
    pub const STRIDING_RQ: Field = fl(0x201, 1);
    pub const CMDIF_CHECKSUM: Field = fl(0x210, 2);
    pub const ETH_NET_OFFLOADS: Field = fl(0x21c, 1);
    pub const UAR_4K: Field = fl(0x240, 1);
    pub const UAR_SZ: Field = fl(0x24a, 6);
    pub const LOG_PG_SZ: Field = fl(0x258, 8);
    pub const BF: Field = fl(0x260, 1);
    pub const LOG_BF_REG_SIZE: Field = fl(0x26b, 5);
    pub const LOG_MAX_TRANSPORT_DOMAIN: Field = fl(0x323, 5);
    pub const LOG_MAX_PD: Field = fl(0x32b, 5);
    pub const LOG_MAX_RQ: Field = fl(0x363, 5);
    pub const LOG_MAX_SQ: Field = fl(0x36b, 5);
    pub const LOG_MAX_TIR: Field = fl(0x373, 5);
    pub const LOG_MAX_TIS: Field = fl(0x37b, 5);
    pub const LOG_MAX_RQT: Field = fl(0x38b, 5);
    pub const LOG_MAX_RQT_SIZE: Field = fl(0x393, 5);
    pub const EXT_STRIDE_NUM_RANGE: Field = fl(0x3a0, 1);
    pub const LOG_MAX_STRIDE_SZ_RQ: Field = fl(0x3a3, 5);
    pub const LOG_MIN_STRIDE_SZ_RQ: Field = fl(0x3ab, 5);
    pub const LOG_MAX_STRIDE_SZ_SQ: Field = fl(0x3b3, 5);
    pub const LOG_MIN_STRIDE_SZ_SQ: Field = fl(0x3bb, 5);
    pub const LOG_MAX_WQ_SZ: Field = fl(0x3db, 5);
    pub const MAX_NUM_EQS: Field = fl(0x470, 16);
    pub const LOG_UAR_PAGE_SZ: Field = fl(0x490, 16);
    pub const DEVICE_FREQUENCY_KHZ: Field = fl(0x4e0, 32);
    pub const NUM_OF_UARS_PER_PAGE: Field = fl(0x520, 32);
}

/// `mlx5_ifc_per_protocol_networking_offload_caps_bits` (Ethernet offload capabilities).
pub mod cap_eth {
    use super::{fl, Field};
    pub const CSUM_CAP: Field = fl(0x00, 1);
    pub const VLAN_CAP: Field = fl(0x01, 1);
    pub const MAX_LSO_CAP: Field = fl(0x0b, 5);
    pub const MULTI_PKT_SEND_WQE: Field = fl(0x10, 2);
    /// 0 L2 headers inline, 1 as the vport context says, 2 not required
    /// (`MLX5_CAP_INLINE_MODE_*`).
    pub const WQE_INLINE_MODE: Field = fl(0x12, 2);
    pub const RSS_IND_TBL_CAP: Field = fl(0x14, 4);
    pub const SCATTER_FCS: Field = fl(0x19, 1);
}

/// `mlx5_ifc_flow_table_nic_cap_bits`: `flow_table_properties_nic_receive` (a
/// `mlx5_ifc_flow_table_prop_layout_bits`) at bit 0x200; the fields relative to it.
pub mod cap_flow {
    use super::{fl, Field};
    pub const NIC_RX_BIT: u32 = 0x200;
    pub const FT_SUPPORT: Field = fl(0x00, 1);
    /// SET_FLOW_TABLE_ROOT `op_mod` 1 (disconnect the root) is supported.
    pub const RESET_ROOT_TO_DEFAULT: Field = fl(0x09, 1);
    pub const LOG_MAX_FT_SIZE: Field = fl(0x22, 6);
    pub const MAX_FT_LEVEL: Field = fl(0x38, 8);
}

/// `mlx5_ifc_eqc_bits` (64 bytes), inside `create_eq_in` at bit 0x80.
pub mod eqc {
    use super::{fl, Field};
    pub const STATUS: Field = fl(0x00, 4);
    pub const EC: Field = fl(0x0d, 1);
    pub const OI: Field = fl(0x0e, 1);
    pub const ST: Field = fl(0x14, 4);
    /// In 64-byte units.
    pub const PAGE_OFFSET: Field = fl(0x54, 6);
    pub const LOG_EQ_SIZE: Field = fl(0x63, 5);
    pub const UAR_PAGE: Field = fl(0x68, 24);
    /// The MSI-X vector: 12 bits in current Linux `mlx5_ifc.h` (`reserved_at_a0[0x14]; intr[0xc]`;
    /// older headers and rdma-core have 8).
    pub const INTR: Field = fl(0xb4, 12);
    /// log2(page size / 4 KiB).
    pub const LOG_PAGE_SIZE: Field = fl(0xc3, 5);
    pub const CONSUMER_COUNTER: Field = fl(0x148, 24);
    pub const PRODUCER_COUNTER: Field = fl(0x168, 24);
}

/// `mlx5_ifc_create_eq_in_bits` (0x110 bytes + `pas[]`), `create_eq_out_bits`,
/// `destroy_eq_in_bits`.
pub mod create_eq {
    use super::{fl, Field};
    /// `eq_context_entry` bit offset.
    pub const EQC_BIT: u32 = 0x80;
    /// `event_bitmask[4]`: four big-endian 64-bit masks; bit n of mask 0 subscribes event n.
    pub const EVENT_BITMASK: usize = 0x58;
    pub const PAS: usize = 0x110;
    /// `eq_number` in `create_eq_out` and `destroy_eq_in`.
    pub const EQ_NUMBER: Field = fl(0x58, 8);
}

/// 24-bit object numbers at bit 0x48: `alloc_uar_out.uar`, `dealloc_uar_in.uar`,
/// `alloc_pd_out.pd`, `dealloc_pd_in.pd`, `alloc_transport_domain_out.transport_domain`,
/// `dealloc_transport_domain_in.transport_domain`.
pub const OBJ_NUMBER: Field = fl(0x48, 24);

/// `mlx5_ifc_query_special_contexts_out_bits` (0x20 bytes).
pub mod special_contexts {
    use super::{fl, Field};
    pub const DUMP_FILL_MKEY: Field = fl(0x40, 32);
    pub const RESD_LKEY: Field = fl(0x60, 32);
    pub const NULL_MKEY: Field = fl(0x80, 32);
    pub const OUT_SIZE: usize = 0x20;
}

/// `mlx5_ifc_query_nic_vport_context_in/out_bits`, `modify_nic_vport_context_in_bits`,
/// `modify_nic_vport_field_select_bits`, `nic_vport_context_bits`,
/// `mac_address_layout_bits`.
pub mod vport {
    use super::{fl, Field};
    pub const OTHER_VPORT: Field = fl(0x40, 1);
    pub const VPORT_NUMBER: Field = fl(0x50, 16);
    /// `query_nic_vport_context_out`: context at byte 0x10; 0x110 bytes in all.
    pub const QUERY_OUT_CTX: usize = 0x10;
    pub const QUERY_OUT_SIZE: usize = 0x110;
    /// `modify_nic_vport_context_in`: field select at bit 0x60, context at byte 0x100; 0x200
    /// bytes in all.
    pub const FIELD_SELECT: Field = fl(0x60, 32);
    pub const MODIFY_IN_CTX: usize = 0x100;
    pub const MODIFY_IN_SIZE: usize = 0x200;
    /// Field select bits (as values of the 32-bit `field_select` dword).
    pub const SEL_ROCE_EN: u32 = 1 << 1;
    pub const SEL_ADDRESSES_LIST: u32 = 1 << 2;
    pub const SEL_PERMANENT_ADDRESS: u32 = 1 << 3;
    pub const SEL_PROMISC: u32 = 1 << 4;
    pub const SEL_CHANGE_EVENT: u32 = 1 << 5;
    pub const SEL_MTU: u32 = 1 << 6;
    pub const SEL_MIN_INLINE: u32 = 1 << 7;
    /// In `nic_vport_context` (bit offsets relative to the context).
    pub const MIN_WQE_INLINE_MODE: Field = fl(0x05, 3);
    pub const MTU: Field = fl(0x130, 16);
    pub const PROMISC_UC: Field = fl(0x780, 1);
    pub const PROMISC_MC: Field = fl(0x781, 1);
    pub const PROMISC_ALL: Field = fl(0x782, 1);
    /// `permanent_address` at bit 0x7a0: `mac_addr_47_32` then `mac_addr_31_0`.
    pub const MAC_47_32: Field = fl(0x7b0, 16);
    pub const MAC_31_0: Field = fl(0x7c0, 32);
}

/// `mlx5_ifc_access_register_in/out_bits` (op_mod 0 write, 1 read; data at byte 0x10) and
/// `mlx5_ifc_pmtu_reg_bits` (`MLX5_REG_PMTU` = 0x5003, Linux `driver.h`).
pub mod access_reg {
    use super::{fl, Field};
    pub const REGISTER_ID: Field = fl(0x50, 16);
    pub const DATA: usize = 0x10;
    pub const WRITE: u16 = 0;
    pub const READ: u16 = 1;
    pub const PMTU: u32 = 0x5003;
    pub const PMTU_SIZE: usize = 0x10;
    pub const PMTU_LOCAL_PORT: Field = fl(0x08, 8);
    pub const PMTU_MAX_MTU: Field = fl(0x20, 16);
    pub const PMTU_ADMIN_MTU: Field = fl(0x40, 16);
    pub const PMTU_OPER_MTU: Field = fl(0x60, 16);
}

/// Event queue entry, 64 bytes (`struct mlx5_eqe`, Linux `device.h`): `type` at byte 1,
/// `sub_type` at 3, event data at 0x20 (28 bytes), `signature` at 0x3E, `owner` at 0x3F.
pub mod eqe {
    pub const SIZE: usize = 64;
    pub const TYPE: usize = 0x01;
    pub const SUB_TYPE: usize = 0x03;
    pub const DATA: usize = 0x20;
    pub const OWNER: usize = 0x3F;
    /// `MLX5_EVENT_TYPE_CMD`: data = `mlx5_eqe_cmd` { be32 vector }.
    pub const TYPE_CMD: u8 = 0x0a;
    /// `MLX5_EVENT_TYPE_PAGE_REQUEST`: data = `mlx5_eqe_page_req` { be16 ec_function; be16
    /// func_id; be32 num_pages (signed: negative asks pages back) }.
    pub const TYPE_PAGE_REQUEST: u8 = 0x0b;
    pub const PAGE_REQ_FUNC_ID: usize = DATA + 2;
    pub const PAGE_REQ_NUM_PAGES: usize = DATA + 4;
}

/// UAR page offsets (Linux `eq.c` / rdma-core `mlx5_vfio.c`: `MLX5_EQ_DOORBEL_OFFSET`).
pub mod uar {
    /// EQ doorbell, update consumer index and arm: big-endian `eqn << 24 | ci & 0xffffff`.
    pub const EQ_ARM: u32 = 0x40;
    /// The same without arming.
    pub const EQ_UPDATE_CI: u32 = 0x48;
    /// The BlueFlame register (`MLX5_BF_OFFSET` in Linux `include/linux/mlx5/doorbell.h`): two
    /// buffers of half of `1 << log_bf_reg_size` bytes from here (rdma-core
    /// `providers/mlx5/mlx5.c`: `bf_reg_size / 2`), the send doorbell in the first 8 bytes of
    /// each; drivers alternate between them.
    pub const BF_0: u32 = 0x800;
}

// ---------------------------------------------------------------------------------------------
// Queues, TIS/TIR/RQT, Q counters, flow steering (`mlx5_ifc.h`), and the byte layouts
// of WQEs and CQEs (rdma-core `mlx5dv.h`, Linux `device.h` / `cq.h` / `qp.h`).
// ---------------------------------------------------------------------------------------------

/// The `pas[]` list (big-endian 64-bit page addresses) of CREATE_CQ / CREATE_SQ / CREATE_RQ
/// starts at byte 0x110 of the input: in `create_cq_in` at bit 0x880, after the `cqc` (bit
/// 0x80) and the umem fields; in `create_sq_in` / `create_rq_in` it is the `wq`'s own `pas[]`
/// (`sqc` / `rqc` at byte 0x20, their `wq` at byte 0x30 of them, `pas` at byte 0xc0 of the
/// `wq`: 0x20 + 0x30 + 0xc0 = 0x110).
pub const PAS_AT: usize = 0x110;

/// `mlx5_ifc_cqc_bits` (64 bytes), inside `create_cq_in` / `query_cq_out` at bit 0x80.
pub mod cqc {
    use super::{fl, Field};
    pub const STATUS: Field = fl(0x00, 4);
    /// `cqe_sz`: 0 = 64-byte CQEs (`MLX5_CQE_SIZE_64B`), 1 = 128 bytes.
    pub const CQE_SZ: Field = fl(0x08, 3);
    pub const CC: Field = fl(0x0b, 1);
    /// Overrun ignore.
    pub const OI: Field = fl(0x0e, 1);
    pub const CQE_COMP_EN: Field = fl(0x11, 1);
    pub const ST: Field = fl(0x14, 4);
    /// In 64-byte units.
    pub const PAGE_OFFSET: Field = fl(0x54, 6);
    pub const LOG_CQ_SIZE: Field = fl(0x63, 5);
    pub const UAR_PAGE: Field = fl(0x68, 24);
    pub const C_EQN: Field = fl(0xb8, 8);
    /// log2(page size / 4 KiB).
    pub const LOG_PAGE_SIZE: Field = fl(0xc3, 5);
    pub const CONSUMER_COUNTER: Field = fl(0x148, 24);
    pub const PRODUCER_COUNTER: Field = fl(0x168, 24);
    /// `dbr_addr` (64 bits) at byte 0x38 of the context.
    pub const DBR_ADDR: usize = 0x38;
    /// Where the context sits in `create_cq_in` / `query_cq_out`.
    pub const IN_CREATE_BIT: u32 = 0x80;
    /// `status` as QUERY_CQ reports it: 0 OK, 9 CQ overflow (`MLX5_CQC_STATUS_OK` /
    /// `_CQ_OVERFLOW` in Linux `mlx5_ifc.h`).
    pub const STATUS_OK: u32 = 0x0;
    pub const STATUS_OVERFLOW: u32 = 0x9;
}

/// `cqn` at bit 0x48: `create_cq_out`, `destroy_cq_in`, `query_cq_in`.
pub const CQN: Field = fl(0x48, 24);

/// `mlx5_ifc_wq_bits` (0xc0 bytes, then `pas[]`), at bit 0x180 of `sqc` and `rqc`. Offsets
/// relative to the `wq`.
pub mod wq {
    use super::{fl, Field};
    /// `wq_type`: 0 linked list, 1 cyclic, 2 linked-list striding RQ, 3 cyclic striding RQ
    /// (`MLX5_WQ_TYPE_*`).
    pub const WQ_TYPE: Field = fl(0x00, 4);
    pub const WQ_SIGNATURE: Field = fl(0x04, 1);
    pub const END_PADDING_MODE: Field = fl(0x05, 2);
    pub const CD_SLAVE: Field = fl(0x07, 1);
    /// In 64-byte units, as for EQs and CQs.
    pub const PAGE_OFFSET: Field = fl(0x2b, 5);
    pub const LWM: Field = fl(0x30, 16);
    pub const PD: Field = fl(0x48, 24);
    pub const UAR_PAGE: Field = fl(0x68, 24);
    /// `dbr_addr` (64 bits) at byte 0x10 of the wq.
    pub const DBR_ADDR: usize = 0x10;
    pub const HW_COUNTER: Field = fl(0xc0, 32);
    pub const SW_COUNTER: Field = fl(0xe0, 32);
    /// log2(WQE stride bytes): 6 for 64-byte send WQEBBs, 5 for 32-byte striding RQ WQEs.
    pub const LOG_WQ_STRIDE: Field = fl(0x10c, 4);
    /// log2(page size / 4 KiB).
    pub const LOG_WQ_PG_SZ: Field = fl(0x113, 5);
    pub const LOG_WQ_SZ: Field = fl(0x11b, 5);
    /// Striding RQ: log2(strides per WQE) - 9 (Linux `log_wqe_num_of_strides`, DPDK
    /// `single_wqe_log_num_of_strides`).
    pub const LOG_WQE_NUM_OF_STRIDES: Field = fl(0x134, 4);
    pub const TWO_BYTE_SHIFT_EN: Field = fl(0x138, 1);
    /// Striding RQ: log2(stride bytes) - 6 (Linux `log_wqe_stride_size`, DPDK
    /// `single_stride_log_num_of_bytes`).
    pub const LOG_WQE_STRIDE_SIZE: Field = fl(0x13d, 3);
    pub const SIZE_BITS: u32 = 0x600;

    pub const TYPE_LINKED_LIST: u32 = 0;
    pub const TYPE_CYCLIC: u32 = 1;
    pub const TYPE_LINKED_LIST_STRIDING: u32 = 2;
    pub const TYPE_CYCLIC_STRIDING: u32 = 3;
    /// Base of the two striding encodings (`MLX5_MPWQE_LOG_NUM_STRIDES_BASE`,
    /// `MLX5_MPWQE_LOG_STRIDE_SZ_BASE` in Linux `en.h`).
    pub const LOG_NUM_STRIDES_BASE: u32 = 9;
    pub const LOG_STRIDE_SZ_BASE: u32 = 6;
}

/// `mlx5_ifc_sqc_bits` (0xf0 bytes), at bit 0x100 of `create_sq_in` / `modify_sq_in` /
/// `query_sq_out`.
pub mod sqc {
    use super::{fl, Field};
    pub const RLKY: Field = fl(0x00, 1);
    pub const CD_MASTER: Field = fl(0x01, 1);
    pub const FRE: Field = fl(0x02, 1);
    pub const FLUSH_IN_ERROR_EN: Field = fl(0x03, 1);
    pub const ALLOW_MULTI_PKT_SEND_WQE: Field = fl(0x04, 1);
    /// `MLX5_INLINE_MODE_*` (Linux `device.h`): 0 none, 1 L2, 2 IP, 3 TCP/UDP.
    pub const MIN_WQE_INLINE_MODE: Field = fl(0x05, 3);
    pub const STATE: Field = fl(0x08, 4);
    pub const REG_UMR: Field = fl(0x0c, 1);
    pub const ALLOW_SWP: Field = fl(0x0d, 1);
    pub const HAIRPIN: Field = fl(0x0e, 1);
    pub const USER_INDEX: Field = fl(0x28, 24);
    pub const CQN: Field = fl(0x48, 24);
    pub const TIS_LST_SZ: Field = fl(0x100, 16);
    pub const TIS_NUM_0: Field = fl(0x168, 24);
    pub const WQ_BIT: u32 = 0x180;
    /// `MLX5_SQC_STATE_*` / `MLX5_RQC_STATE_*`.
    pub const STATE_RST: u32 = 0;
    pub const STATE_RDY: u32 = 1;
    pub const STATE_ERR: u32 = 3;
}

/// `mlx5_ifc_rqc_bits` (0xf0 bytes), at bit 0x100 of `create_rq_in` / `modify_rq_in` /
/// `query_rq_out`.
pub mod rqc {
    use super::{fl, Field};
    pub const RLKY: Field = fl(0x00, 1);
    pub const DELAY_DROP_EN: Field = fl(0x01, 1);
    pub const SCATTER_FCS: Field = fl(0x02, 1);
    /// VLAN strip disable.
    pub const VSD: Field = fl(0x03, 1);
    /// 0 memory RQ inline, 1 RMP (`MLX5_RQC_MEM_RQ_TYPE_*`).
    pub const MEM_RQ_TYPE: Field = fl(0x04, 4);
    pub const STATE: Field = fl(0x08, 4);
    pub const FLUSH_IN_ERROR_EN: Field = fl(0x0d, 1);
    pub const HAIRPIN: Field = fl(0x0e, 1);
    pub const USER_INDEX: Field = fl(0x28, 24);
    pub const CQN: Field = fl(0x48, 24);
    pub const COUNTER_SET_ID: Field = fl(0x60, 8);
    pub const RMPN: Field = fl(0x88, 24);
    pub const WQ_BIT: u32 = 0x180;
}

/// Where the queue context sits in `create_sq_in`, `create_rq_in`, `modify_sq_in`,
/// `modify_rq_in`, `create_tis_in`, `create_tir_in`, `create_rqt_in`, `query_sq_out`,
/// `query_rq_out`: bit 0x100.
pub const CTX_BIT: u32 = 0x100;

/// `modify_sq_in` / `modify_rq_in`: the current state (`sq_state` / `rq_state`), the queue
/// number, and `modify_bitmask` (64 bits at byte 0x10); the new state is the context's `state`.
pub mod modify_q {
    use super::{fl, Field};
    pub const CUR_STATE: Field = fl(0x40, 4);
    pub const QN: Field = fl(0x48, 24);
    pub const MODIFY_BITMASK: usize = 0x10;
}

/// `sqn` / `rqn` / `tisn` / `tirn` / `rqtn` at bit 0x48: the `create_*_out` outputs and the
/// `destroy_*_in` / `query_*_in` inputs.
pub const QN: Field = fl(0x48, 24);

/// `mlx5_ifc_tisc_bits` (0xa0 bytes) at bit 0x100 of `create_tis_in`.
pub mod tisc {
    use super::{fl, Field};
    pub const STRICT_LAG_TX_PORT_AFFINITY: Field = fl(0x00, 1);
    pub const LAG_TX_PORT_AFFINITY: Field = fl(0x04, 4);
    pub const PRIO: Field = fl(0x0c, 4);
    pub const TRANSPORT_DOMAIN: Field = fl(0x128, 24);
    pub const UNDERLAY_QPN: Field = fl(0x148, 24);
    pub const IN_SIZE: usize = 0xc0;
}

/// `mlx5_ifc_tirc_bits` (0xf0 bytes) at bit 0x100 of `create_tir_in`.
pub mod tirc {
    use super::{fl, Field};
    /// 0 direct (`inline_rqn`), 1 indirect (`indirect_table`): `MLX5_TIRC_DISP_TYPE_*`.
    pub const DISP_TYPE: Field = fl(0x20, 4);
    pub const LRO_TIMEOUT_PERIOD_USECS: Field = fl(0x84, 16);
    pub const LRO_ENABLE_MASK: Field = fl(0x94, 4);
    pub const LRO_MAX_MSG_SZ: Field = fl(0x98, 8);
    pub const INLINE_RQN: Field = fl(0xe8, 24);
    pub const RX_HASH_SYMMETRIC: Field = fl(0x100, 1);
    pub const TUNNELED_OFFLOAD_EN: Field = fl(0x102, 1);
    pub const INDIRECT_TABLE: Field = fl(0x108, 24);
    /// 0 none, 1 XOR8, 2 Toeplitz (`MLX5_RX_HASH_FN_*`).
    pub const RX_HASH_FN: Field = fl(0x120, 4);
    pub const SELF_LB_BLOCK: Field = fl(0x126, 2);
    pub const TRANSPORT_DOMAIN: Field = fl(0x128, 24);
    pub const DISP_DIRECT: u32 = 0;
    pub const DISP_INDIRECT: u32 = 1;
    pub const IN_SIZE: usize = 0x110;
}

/// `mlx5_ifc_rqtc_bits` at bit 0x100 of `create_rqt_in`: `rq_num[]` (32-bit entries, RQ number
/// in bits 23:0) at byte 0xf0 of the context, byte 0x110 of the input.
pub mod rqtc {
    use super::{fl, Field};
    pub const RQT_MAX_SIZE: Field = fl(0xb0, 16);
    pub const RQT_ACTUAL_SIZE: Field = fl(0xd0, 16);
    pub const RQ_NUM_AT: usize = 0x110;
}

/// `alloc_q_counter_out` / `dealloc_q_counter_in`: `counter_set_id` at bit 0x58;
/// `query_q_counter_in` (0x20 bytes): `clear` at bit 0xc0, `counter_set_id` at bit 0xf8;
/// `query_q_counter_out` (0x100 bytes): `out_of_buffer` at bit 0x180.
pub mod q_counter {
    use super::{fl, Field};
    pub const ALLOC_ID: Field = fl(0x58, 8);
    pub const QUERY_CLEAR: Field = fl(0xc0, 1);
    pub const QUERY_ID: Field = fl(0xf8, 8);
    pub const QUERY_IN_SIZE: usize = 0x20;
    pub const OUT_OF_BUFFER: Field = fl(0x180, 32);
    pub const QUERY_OUT_SIZE: usize = 0x100;
}

/// The flow steering commands' common head (`create_flow_table_in`, `destroy_flow_table_in`,
/// `create_flow_group_in`, `destroy_flow_group_in`, `set_fte_in`, `delete_fte_in`,
/// `set_flow_table_root_in`): `other_vport` 0x40, `vport_number` 0x50, `table_type` 0x80,
/// `table_id` 0xa8.
pub mod flow {
    use super::{fl, Field};
    pub const OTHER_VPORT: Field = fl(0x40, 1);
    pub const VPORT_NUMBER: Field = fl(0x50, 16);
    /// 0 NIC RX (`FS_FT_NIC_RX`), 1 NIC TX, ...
    pub const TABLE_TYPE: Field = fl(0x80, 8);
    pub const TABLE_ID: Field = fl(0xa8, 24);
    pub const TABLE_TYPE_NIC_RX: u32 = 0;
    /// `create_flow_table_out.table_id`.
    pub const OUT_TABLE_ID: Field = fl(0x48, 24);
    /// `flow_table_context` at bit 0xc0 of `create_flow_table_in`: `table_miss_action` 0x04,
    /// `level` 0x08, `log_size` 0x18, `table_miss_id` 0x28.
    pub const FT_CTX_BIT: u32 = 0xc0;
    pub const FT_MISS_ACTION: Field = fl(0x04, 4);
    pub const FT_LEVEL: Field = fl(0x08, 8);
    pub const FT_LOG_SIZE: Field = fl(0x18, 8);
    pub const FT_TABLE_MISS_ID: Field = fl(0x28, 24);
    /// `create_flow_group_in` (0x400 bytes): `start_flow_index`, `end_flow_index`,
    /// `match_criteria_enable` (bit 0 outer headers, `MLX5_MATCH_OUTER_HEADERS`),
    /// `match_criteria` (`fte_match_param`) at byte 0x40.
    pub const FG_START: Field = fl(0xe0, 32);
    pub const FG_END: Field = fl(0x120, 32);
    pub const FG_CRITERIA_ENABLE: Field = fl(0x1f8, 8);
    pub const FG_CRITERIA: usize = 0x40;
    pub const FG_IN_SIZE: usize = 0x400;
    /// `create_flow_group_out.group_id` / `destroy_flow_group_in.group_id`.
    pub const OUT_GROUP_ID: Field = fl(0x48, 24);
    pub const DESTROY_GROUP_ID: Field = fl(0xc0, 32);
    pub const MATCH_OUTER: u32 = 1 << 0;
    /// `set_fte_in` (0x340 bytes + destinations): `modify_enable_mask` 0xd8, `flow_index`
    /// 0x100, `flow_context` at bit 0x200 (byte 0x40); `delete_fte_in.flow_index` 0x100.
    pub const FTE_MODIFY_ENABLE_MASK: Field = fl(0xd8, 8);
    pub const FTE_FLOW_INDEX: Field = fl(0x100, 32);
    pub const FTE_CTX: usize = 0x40;
    /// `flow_context` fields (relative to it): `group_id` 0x20, `flow_tag` 0x48, `action`
    /// 0x70, `destination_list_size` 0x88, `flow_counter_list_size` 0xa8, `match_value`
    /// (`fte_match_param`) at byte 0x40, `destination[]` (`dest_format_struct`, 8 bytes each)
    /// at byte 0x300.
    pub const FC_GROUP_ID: Field = fl(0x20, 32);
    pub const FC_FLOW_TAG: Field = fl(0x48, 24);
    pub const FC_ACTION: Field = fl(0x70, 16);
    pub const FC_DEST_LIST_SIZE: Field = fl(0x88, 24);
    pub const FC_COUNTER_LIST_SIZE: Field = fl(0xa8, 24);
    pub const FC_MATCH_VALUE: usize = 0x40;
    pub const FC_DESTINATIONS: usize = 0x300;
    pub const FTE_IN_SIZE: usize = 0x340;
    /// `dest_format_struct`: `destination_type` bits 0..8, `destination_id` 8..32.
    pub const DEST_TYPE: Field = fl(0x00, 8);
    pub const DEST_ID: Field = fl(0x08, 24);
    pub const DEST_SIZE: usize = 8;
    /// `MLX5_FLOW_DESTINATION_TYPE_*`.
    pub const DEST_TYPE_VPORT: u32 = 0;
    pub const DEST_TYPE_FLOW_TABLE: u32 = 1;
    pub const DEST_TYPE_TIR: u32 = 2;
    /// `MLX5_FLOW_CONTEXT_ACTION_*`.
    pub const ACTION_ALLOW: u32 = 0x1;
    pub const ACTION_DROP: u32 = 0x2;
    pub const ACTION_FWD_DEST: u32 = 0x4;
    pub const ACTION_COUNT: u32 = 0x8;
    /// The common input size of the destroy / delete / root commands.
    pub const SMALL_IN_SIZE: usize = 0x40;
}

/// `mlx5_ifc_fte_match_set_lyr_2_4_bits` (64 bytes): the outer headers of `fte_match_param`
/// (its first 64 bytes).
pub mod lyr_2_4 {
    use super::{fl, Field};
    pub const SMAC_47_16: Field = fl(0x00, 32);
    pub const SMAC_15_0: Field = fl(0x20, 16);
    pub const ETHERTYPE: Field = fl(0x30, 16);
    pub const DMAC_47_16: Field = fl(0x40, 32);
    pub const DMAC_15_0: Field = fl(0x60, 16);
    pub const FIRST_PRIO: Field = fl(0x70, 3);
    pub const FIRST_CFI: Field = fl(0x73, 1);
    pub const FIRST_VID: Field = fl(0x74, 12);
    pub const IP_PROTOCOL: Field = fl(0x80, 8);
    pub const IP_DSCP: Field = fl(0x88, 6);
    pub const IP_ECN: Field = fl(0x8e, 2);
    pub const CVLAN_TAG: Field = fl(0x90, 1);
    pub const SVLAN_TAG: Field = fl(0x91, 1);
    pub const FRAG: Field = fl(0x92, 1);
    pub const IP_VERSION: Field = fl(0x93, 4);
    pub const TCP_FLAGS: Field = fl(0x97, 9);
    pub const TCP_SPORT: Field = fl(0xa0, 16);
    pub const TCP_DPORT: Field = fl(0xb0, 16);
    pub const IP_TTL_HOPLIMIT: Field = fl(0xd8, 8);
    pub const UDP_SPORT: Field = fl(0xe0, 16);
    pub const UDP_DPORT: Field = fl(0xf0, 16);
    /// `src_ipv4_src_ipv6` / `dst_ipv4_dst_ipv6`: 16 bytes each at bytes 0x20 / 0x30; an IPv4
    /// address is the last 4 (`ipv4_layout`: 0x60 reserved bits, then `ipv4`).
    pub const SRC_IP: usize = 0x20;
    pub const DST_IP: usize = 0x30;
    pub const SRC_IPV4: Field = fl(0x160, 32);
    pub const DST_IPV4: Field = fl(0x1e0, 32);
    pub const SIZE: usize = 0x40;
}

/// Completion queue entry, 64 bytes (rdma-core `struct mlx5_cqe64`, `struct mlx5_err_cqe`;
/// Linux `device.h` `struct mlx5_cqe64`). Byte offsets; multi-byte fields big-endian.
pub mod cqe {
    pub const SIZE: usize = 64;
    /// Striding RQ: the WQE (ring index) the packet landed in.
    pub const WQE_ID: usize = 2;
    /// `hds_ip_ext`: `CQE_L2_OK` bit 0, `CQE_L3_OK` bit 1, `CQE_L4_OK` bit 2.
    pub const HDS_IP_EXT: usize = 28;
    pub const L2_OK: u8 = 1 << 0;
    pub const L3_OK: u8 = 1 << 1;
    pub const L4_OK: u8 = 1 << 2;
    /// `l4_l3_hdr_type`: L4 type bits 6:4 (`CQE_L4_HDR_TYPE_*`: 0 none, 1 TCP, 2 UDP), L3 type
    /// bits 3:2 (0 none, 1 IPv6, 2 IPv4), VLAN present bit 0.
    pub const L4_L3_HDR_TYPE: usize = 29;
    /// `srqn_uidx` (`mlx5_cqe64`) / `srqn` (`mlx5_err_cqe`).
    pub const SRQN: usize = 32;
    /// `byte_cnt`; striding RQ: bit 31 filler, bits 30:16 strides consumed (15 bits), bits 15:0
    /// length, as Linux `device.h` reads them (`struct mpwrq_cqe_bc`: `filler_consumed_strides`
    /// then `byte_cnt`; `mpwrq_is_filler_cqe` tests 0x8000 of the first half,
    /// `mpwrq_get_cqe_consumed_strides` masks it with 0x7fff). DPDK `mlx5_prm.h`
    /// (`MLX5_MPRQ_STRIDE_NUM_MASK`) keeps only bits 29:16.
    pub const BYTE_CNT: usize = 44;
    pub const FILLER: u32 = 1 << 31;
    pub const STRIDES_SHIFT: u32 = 16;
    pub const STRIDES_MASK: u32 = 0x7fff;
    /// `mlx5_err_cqe.vendor_err_synd` and `.syndrome`.
    pub const VENDOR_ERR_SYND: usize = 54;
    pub const SYNDROME: usize = 55;
    /// `sop_drop_qpn` (QP/SQ number in bits 23:0) / `mlx5_err_cqe.s_wqe_opcode_qpn` (WQE opcode
    /// in bits 31:24, number in 23:0).
    pub const SOP_DROP_QPN: usize = 56;
    /// `wqe_counter`: send: the WQE index; striding RQ: the first stride's index.
    pub const WQE_COUNTER: usize = 60;
    pub const SIGNATURE: usize = 62;
    /// `op_own`: opcode bits 7:4, CQE format 3:2, solicited event 1, owner 0.
    pub const OP_OWN: usize = 63;
    /// `MLX5_CQE_*` opcodes (Linux `cq.h`).
    pub const OP_REQ: u8 = 0x0;
    pub const OP_RESP_WR_IMM: u8 = 0x1;
    pub const OP_RESP_SEND: u8 = 0x2;
    pub const OP_REQ_ERR: u8 = 0xd;
    pub const OP_RESP_ERR: u8 = 0xe;
    pub const OP_INVALID: u8 = 0xf;
    /// `MLX5_CQE_SYNDROME_*`.
    pub const SYND_LOCAL_LENGTH_ERR: u8 = 0x01;
    pub const SYND_LOCAL_QP_OP_ERR: u8 = 0x02;
    pub const SYND_LOCAL_PROT_ERR: u8 = 0x04;
    pub const SYND_WR_FLUSH_ERR: u8 = 0x05;
    pub const SYND_LOCAL_ACCESS_ERR: u8 = 0x11;
}

/// Work queue entries (rdma-core `mlx5dv.h`: `mlx5_wqe_ctrl_seg`, `mlx5_wqe_eth_seg`,
/// `mlx5_wqe_data_seg`, `mlx5_wqe_srq_next_seg`). Byte offsets; fields big-endian.
pub mod wqe {
    /// Send WQE basic block (`MLX5_SEND_WQE_BB`) and the 16-byte unit `ds` counts
    /// (`MLX5_SEND_WQE_DS`).
    pub const BB: usize = 64;
    pub const DS: usize = 16;
    /// Control segment: `opmod_idx_opcode` (opmod 31:24, WQE index 23:8, opcode 7:0),
    /// `qpn_ds` (SQ number 31:8, ds 5:0), `signature`, `fm_ce_se` at byte 11 (CE bits 3:2).
    pub const CTRL_OPMOD_IDX_OPCODE: usize = 0;
    pub const CTRL_QPN_DS: usize = 4;
    pub const CTRL_FM_CE_SE: usize = 11;
    pub const CE_SHIFT: u8 = 2;
    /// CE = 2: `MLX5_WQE_CTRL_CQ_UPDATE`; 3: also an event.
    pub const CE_CQ_UPDATE: u8 = 2;
    pub const OPCODE_NOP: u8 = 0x00;
    pub const OPCODE_SEND: u8 = 0x0a;
    /// Ethernet segment (after the control segment): `cs_flags` 4, `mss` 6, `inline_hdr_sz`
    /// 12, `inline_hdr_start` 14 (2 bytes; the rest of the inline headers follow the
    /// segment).
    pub const ETH: usize = 16;
    pub const ETH_INLINE_HDR_SZ: usize = 12;
    pub const ETH_INLINE_HDR_START: usize = 14;
    /// `MLX5_ETH_L2_INLINE_HEADER_SIZE`: destination and source MAC, VLAN tag, ethertype.
    pub const L2_INLINE_HEADER_SIZE: usize = 18;
    /// Data segment: `byte_count` (bit 31 `MLX5_INLINE_SEG`), `lkey`, `addr`.
    pub const DATA_BYTE_COUNT: usize = 0;
    pub const DATA_LKEY: usize = 4;
    pub const DATA_ADDR: usize = 8;
    pub const INLINE_SEG: u32 = 1 << 31;
    /// Striding RQ WQE: `mlx5_wqe_srq_next_seg` (16 bytes) then one data segment.
    pub const MPRQ_SIZE: usize = 32;
    pub const MPRQ_DATA: usize = 16;
}

/// Doorbell records (`MLX5_RCV_DBR` = 0, `MLX5_SND_DBR` = 1; CQ: `set_ci` then `arm`): big-endian
/// 32-bit words at `dbr_addr`.
pub mod dbrec {
    pub const RCV: u64 = 0;
    pub const SND: u64 = 4;
    pub const CQ_SET_CI: u64 = 0;
    pub const SIZE: usize = 8;
}

/// EQE types the queues and datapath post (`MLX5_EVENT_TYPE_*`, Linux `device.h`).
pub mod event {
    /// `MLX5_EVENT_TYPE_CQ_ERROR`: data = `mlx5_eqe_cq_err` (`be32 cqn; u8 reserved[7]; u8
    /// syndrome`; syndrome 1: overrun).
    pub const CQ_ERROR: u8 = 0x04;
    pub const CQ_ERROR_OVERRUN: u8 = 0x01;
}
