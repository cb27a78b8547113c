//! Layouts of the ConnectX (mlx5) initialization segment, command queue entries, mailboxes and
//! the bring-up commands, as the device defines them (big-endian).
//!
//! Sources: Linux `include/linux/mlx5/device.h` (`struct mlx5_init_seg`, `struct health_buffer`,
//! `struct mlx5_cmd_layout`, `struct mlx5_cmd_prot_block`; also in rdma-core
//! `providers/mlx5/mlx5_vfio.h`) and `include/linux/mlx5/mlx5_ifc.h` (the `mlx5_ifc_*_in_bits`
//! / `*_out_bits` command layouts, given there as bit offsets; each struct below names its
//! source). Field names follow those sources.

use super::handles::{Cqn, Eqn, Pd, Rqn, Sqn, Td, Tisn, Uar};
use zerocopy::big_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Byte offsets in the initialization segment at the start of BAR0 (`struct mlx5_init_seg`).
pub mod init_seg {
    /// Firmware revision: minor (high 16 bits) and major (low 16 bits).
    pub const FW_REV: u32 = 0x00;
    /// Command interface revision (high 16 bits) and firmware sub-minor (low 16 bits).
    pub const CMDIF_REV_FW_SUB: u32 = 0x04;
    pub const CMDQ_ADDR_H: u32 = 0x10;
    /// Command queue address bits 31:12; reading gives `log_cmdq_size` (bits 7:4) and
    /// `log_cmdq_stride` (bits 3:0); bits 10:8 are the NIC interface mode (0: full driver;
    /// Linux `mlx5_get_nic_state`: `>> 8 & 7`).
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
    pub const QUERY_SPECIAL_CONTEXTS: u16 = 0x203;
    pub const CREATE_EQ: u16 = 0x301;
    pub const DESTROY_EQ: u16 = 0x302;
    pub const CREATE_CQ: u16 = 0x400;
    pub const DESTROY_CQ: u16 = 0x401;
    pub const QUERY_NIC_VPORT_CONTEXT: u16 = 0x754;
    pub const MODIFY_NIC_VPORT_CONTEXT: u16 = 0x755;
    pub const ALLOC_PD: u16 = 0x800;
    pub const DEALLOC_PD: u16 = 0x801;
    pub const ALLOC_UAR: u16 = 0x802;
    pub const DEALLOC_UAR: u16 = 0x803;
    pub const ACCESS_REGISTER: u16 = 0x805;
    pub const ALLOC_TRANSPORT_DOMAIN: u16 = 0x816;
    pub const DEALLOC_TRANSPORT_DOMAIN: u16 = 0x817;
    pub const CREATE_TIR: u16 = 0x900;
    pub const DESTROY_TIR: u16 = 0x902;
    pub const CREATE_SQ: u16 = 0x904;
    pub const MODIFY_SQ: u16 = 0x905;
    pub const DESTROY_SQ: u16 = 0x906;
    pub const CREATE_RQ: u16 = 0x908;
    pub const MODIFY_RQ: u16 = 0x909;
    pub const DESTROY_RQ: u16 = 0x90A;
    pub const CREATE_TIS: u16 = 0x912;
    pub const DESTROY_TIS: u16 = 0x914;
    pub const SET_FLOW_TABLE_ROOT: u16 = 0x92F;
    pub const CREATE_FLOW_TABLE: u16 = 0x930;
    pub const DESTROY_FLOW_TABLE: u16 = 0x931;
    pub const CREATE_FLOW_GROUP: u16 = 0x933;
    pub const DESTROY_FLOW_GROUP: u16 = 0x934;
    pub const SET_FLOW_TABLE_ENTRY: u16 = 0x936;
    pub const DELETE_FLOW_TABLE_ENTRY: u16 = 0x938;

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
            QUERY_SPECIAL_CONTEXTS => "QUERY_SPECIAL_CONTEXTS",
            CREATE_EQ => "CREATE_EQ",
            DESTROY_EQ => "DESTROY_EQ",
            CREATE_CQ => "CREATE_CQ",
            DESTROY_CQ => "DESTROY_CQ",
            QUERY_NIC_VPORT_CONTEXT => "QUERY_NIC_VPORT_CONTEXT",
            MODIFY_NIC_VPORT_CONTEXT => "MODIFY_NIC_VPORT_CONTEXT",
            ALLOC_PD => "ALLOC_PD",
            DEALLOC_PD => "DEALLOC_PD",
            ALLOC_UAR => "ALLOC_UAR",
            DEALLOC_UAR => "DEALLOC_UAR",
            ACCESS_REGISTER => "ACCESS_REGISTER",
            ALLOC_TRANSPORT_DOMAIN => "ALLOC_TRANSPORT_DOMAIN",
            DEALLOC_TRANSPORT_DOMAIN => "DEALLOC_TRANSPORT_DOMAIN",
            CREATE_TIR => "CREATE_TIR",
            DESTROY_TIR => "DESTROY_TIR",
            CREATE_SQ => "CREATE_SQ",
            MODIFY_SQ => "MODIFY_SQ",
            DESTROY_SQ => "DESTROY_SQ",
            CREATE_RQ => "CREATE_RQ",
            MODIFY_RQ => "MODIFY_RQ",
            DESTROY_RQ => "DESTROY_RQ",
            CREATE_TIS => "CREATE_TIS",
            DESTROY_TIS => "DESTROY_TIS",
            SET_FLOW_TABLE_ROOT => "SET_FLOW_TABLE_ROOT",
            CREATE_FLOW_TABLE => "CREATE_FLOW_TABLE",
            DESTROY_FLOW_TABLE => "DESTROY_FLOW_TABLE",
            CREATE_FLOW_GROUP => "CREATE_FLOW_GROUP",
            DESTROY_FLOW_GROUP => "DESTROY_FLOW_GROUP",
            SET_FLOW_TABLE_ENTRY => "SET_FLOW_TABLE_ENTRY",
            DELETE_FLOW_TABLE_ENTRY => "DELETE_FLOW_TABLE_ENTRY",
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

impl PlainIn {
    pub fn new(opcode: u16, op_mod: u16) -> Self {
        PlainIn { hdr: InHdr::new(opcode, op_mod), ..Default::default() }
    }
}

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
/// Capability types (`enum mlx5_cap_type` in Linux `include/linux/mlx5/device.h`):
/// `MLX5_CAP_GENERAL`, `MLX5_CAP_ETHERNET_OFFLOADS`, `MLX5_CAP_FLOW_TABLE`.
pub const CAP_GENERAL: u16 = 0;
pub const CAP_ETHERNET_OFFLOADS: u16 = 1;
pub const CAP_FLOW_TABLE: u16 = 7;

/// A field of `bits` bits whose least significant bit is bit `shift` of a big-endian 32-bit word
/// (as `mlx5_ifc.h` places it: a field at bit offset `o` of its word, counted from the most
/// significant bit, has `shift = 32 - o - bits`).
pub const fn field(value: u32, shift: u32, bits: u32) -> u32 {
    let mask = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
    (value & mask) << shift
}

/// Outputs of commands that create or allocate one object: the header and the object's number
/// in the low 24 bits of the next word (`mlx5_ifc_create_cq_out_bits` `cqn`, `create_sq_out`
/// `sqn`, `create_rq_out` `rqn`, `create_tis_out` `tisn`, `create_tir_out` `tirn`,
/// `create_flow_table_out` `table_id`, `create_flow_group_out` `group_id`, `alloc_pd_out` `pd`,
/// `alloc_uar_out` `uar`, `alloc_transport_domain_out` `transport_domain`; `create_eq_out`
/// `eq_number` in the low 8 bits). 16 bytes.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ObjOut {
    pub hdr: OutHdr,
    pub id: U32,
    pub rsvd: U32,
}
const _: () = assert!(core::mem::size_of::<ObjOut>() == 16);

impl ObjOut {
    /// The 24-bit object number.
    pub fn id24(&self) -> u32 {
        self.id.get() & 0xff_ffff
    }
}

/// Inputs that name one object in the low 24 bits of their third word (`destroy_cq_in` `cqn`,
/// `destroy_sq_in`, `destroy_rq_in`, `destroy_tis_in`, `destroy_tir_in`, `dealloc_pd_in`,
/// `dealloc_uar_in`, `dealloc_transport_domain_in`; `destroy_eq_in` `eq_number`, low 8 bits).
/// 16 bytes.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ObjIn {
    pub hdr: InHdr,
    pub id: U32,
    pub rsvd: U32,
}
const _: () = assert!(core::mem::size_of::<ObjIn>() == 16);

impl ObjIn {
    pub fn new(opcode: u16, id: u32) -> Self {
        ObjIn { hdr: InHdr::new(opcode, 0), id: id.into(), rsvd: 0.into() }
    }
}

/// `mlx5_ifc_query_special_contexts_out_bits` (32 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QuerySpecialContextsOut {
    pub hdr: OutHdr,
    pub dump_fill_mkey: U32,
    /// The reserved lkey: data segments that name it address memory by bus address (IOVA).
    pub resd_lkey: U32,
    pub null_mkey: U32,
    pub terminate_scatter_list_mkey: U32,
    pub repeated_mkey: U32,
    pub rsvd: U32,
}
const _: () = assert!(core::mem::size_of::<QuerySpecialContextsOut>() == 32);

/// `mlx5_ifc_eqc_bits`: an event queue context (64 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Eqc {
    /// `status` (31:28), `ec` (18), `oi` (17), `st` (11:8).
    pub flags: U32,
    pub rsvd1: U32,
    /// `page_offset` (11:6).
    pub page_offset: U32,
    /// `log_eq_size` (28:24), `uar_page` (23:0).
    pub size_uar: U32,
    pub rsvd4: U32,
    /// `intr` (11:0): the MSI-X vector (12 bits in current Linux `mlx5_ifc.h`; 8 in older
    /// headers and rdma-core). Polled here: 0.
    pub intr: U32,
    /// `log_page_size` (28:24), in 4 KiB units (0 = 4 KiB pages).
    pub log_page_size: U32,
    pub rsvd7: [U32; 3],
    pub consumer_counter: U32,
    pub producer_counter: U32,
    pub rsvd12: [U32; 4],
}
const _: () = assert!(core::mem::size_of::<Eqc>() == 64);

impl Eqc {
    /// An EQ of `1 << log_size` entries on UAR `uar`, polled (vector 0), in 4 KiB pages.
    pub fn new(log_size: u32, uar: Uar) -> Eqc {
        Eqc {
            size_uar: (field(log_size, 24, 5) | field(uar.0, 0, 24)).into(),
            intr: 0.into(),
            log_page_size: field(0, 24, 5).into(),
            ..Default::default()
        }
    }
}

/// The fixed part of `mlx5_ifc_create_eq_in_bits` (0x110 bytes), followed by the `pas` list.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CreateEqIn {
    pub hdr: InHdr,
    pub rsvd: U64,
    pub ctx: Eqc,
    pub rsvd2: U64,
    /// `event_bitmask[4]`: bit n of word 0 subscribes event type n.
    pub event_bitmask: [U64; 4],
    pub rsvd3: [u8; 152],
}
const _: () = assert!(core::mem::size_of::<CreateEqIn>() == 0x110);

impl CreateEqIn {
    /// CREATE_EQ of `ctx` subscribed to the event types in `events` (`MLX5_EVENT_TYPE_*`).
    pub fn new(ctx: Eqc, events: &[u8]) -> CreateEqIn {
        let mut e = CreateEqIn::new_zeroed();
        e.hdr = InHdr::new(op::CREATE_EQ, 0);
        e.ctx = ctx;
        e.event_bitmask[0] = events.iter().fold(0u64, |m, &t| m | 1 << t).into();
        e
    }
}

/// `mlx5_ifc_cqc_bits`: a completion queue context (64 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Cqc {
    /// `status` (31:28), `cqe_sz` (23:21, 0 = 64 bytes), `cc` (20), `oi` (17), `cq_period_mode`
    /// (16:15), `cqe_comp_en` (14), `st` (11:8).
    pub flags: U32,
    pub dbr_umem_id: U32,
    /// `page_offset` (11:6).
    pub page_offset: U32,
    /// `log_cq_size` (28:24), `uar_page` (23:0).
    pub size_uar: U32,
    /// `cq_period` (27:16), `cq_max_count` (15:0).
    pub moderation: U32,
    /// `c_eqn` (7:0): the EQ its completion events go to.
    pub c_eqn: U32,
    /// `log_page_size` (28:24).
    pub log_page_size: U32,
    pub rsvd7: U32,
    pub last_notified_index: U32,
    pub last_solicit_index: U32,
    pub consumer_counter: U32,
    pub producer_counter: U32,
    pub rsvd12: [U32; 2],
    /// The 8-byte doorbell record: consumer index (word 0), arm (word 1).
    pub dbr_addr: U64,
}
const _: () = assert!(core::mem::size_of::<Cqc>() == 64);

impl Cqc {
    /// A CQ of `1 << log_size` 64-byte CQEs on UAR `uar`, its events to `eqn`, its doorbell
    /// record at `dbr`, in 4 KiB pages.
    pub fn new(log_size: u32, uar: Uar, eqn: Eqn, dbr: u64) -> Cqc {
        Cqc {
            size_uar: (field(log_size, 24, 5) | field(uar.0, 0, 24)).into(),
            c_eqn: field(eqn.0, 0, 8).into(),
            log_page_size: field(0, 24, 5).into(),
            dbr_addr: dbr.into(),
            ..Default::default()
        }
    }
}

/// The fixed part of `mlx5_ifc_create_cq_in_bits` (0x110 bytes), followed by the `pas` list.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CreateCqIn {
    pub hdr: InHdr,
    pub rsvd: U64,
    pub ctx: Cqc,
    pub cq_umem_offset: U64,
    pub cq_umem_id: U32,
    pub cq_umem_valid: U32,
    pub rsvd2: [u8; 176],
}
const _: () = assert!(core::mem::size_of::<CreateCqIn>() == 0x110);

impl CreateCqIn {
    pub fn new(ctx: Cqc) -> CreateCqIn {
        let mut c = CreateCqIn::new_zeroed();
        c.hdr = InHdr::new(op::CREATE_CQ, 0);
        c.ctx = ctx;
        c
    }
}

/// `wq_type` values (`MLX5_WQ_TYPE_*`).
pub mod wq_type {
    pub const CYCLIC: u32 = 0x1;
    pub const CYCLIC_STRIDING_RQ: u32 = 0x3;
}

/// `mlx5_ifc_wq_bits`: a work queue (192 bytes; the `pas` list follows it in CREATE_SQ/RQ).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Wq {
    /// `wq_type` (31:28), `wq_signature` (27), `end_padding_mode` (26:25), `cd_slave` (24).
    pub type_flags: U32,
    /// `page_offset` (20:16), `lwm` (15:0).
    pub page_offset_lwm: U32,
    /// `pd` (23:0).
    pub pd: U32,
    /// `uar_page` (23:0).
    pub uar_page: U32,
    /// The doorbell record: RQ counter in word 0, SQ counter in word 1.
    pub dbr_addr: U64,
    pub hw_counter: U32,
    pub sw_counter: U32,
    /// `log_wq_stride` (19:16), `log_wq_pg_sz` (12:8), `log_wq_sz` (4:0).
    pub log_sizes: U32,
    /// `single_wqe_log_num_of_strides` (11:8, log2(strides) - 9), `two_byte_shift_en` (7),
    /// `single_stride_log_num_of_bytes` (2:0, log2(stride bytes) - 6).
    pub strides: U32,
    pub dbr_umem_id: U32,
    pub wq_umem_id: U32,
    pub wq_umem_offset: U64,
    pub rsvd: [u8; 0x88],
}
const _: () = assert!(core::mem::size_of::<Wq>() == 192);

impl Default for Wq {
    fn default() -> Self {
        zerocopy::FromZeros::new_zeroed()
    }
}

impl Wq {
    /// A work queue of `wq_type`: `1 << log_size` WQEs of `1 << log_stride` bytes in 4 KiB
    /// pages, in protection domain `pd`, rung through UAR `uar`, its doorbell record at `dbr`.
    pub fn new(wq_type: u32, pd: Pd, uar: Uar, dbr: u64, log_stride: u32, log_size: u32) -> Wq {
        Wq {
            type_flags: field(wq_type, 28, 4).into(),
            pd: field(pd.0, 0, 24).into(),
            uar_page: field(uar.0, 0, 24).into(),
            dbr_addr: dbr.into(),
            log_sizes: (field(log_stride, 16, 4) | field(0, 8, 5) | field(log_size, 0, 5)).into(),
            ..Default::default()
        }
    }

    /// A striding RQ's geometry: `1 << log_strides` strides (512..=65536) of `1 << log_stride_bytes`
    /// bytes (64..=8192) per WQE, stored as offsets from their bases (`MLX5_MPWQE_LOG_*_BASE` in
    /// Linux `device.h`: 9 and 6).
    pub fn with_strides(mut self, log_strides: u32, log_stride_bytes: u32) -> Wq {
        self.strides = (field(log_strides - 9, 8, 4) | field(log_stride_bytes - 6, 0, 3)).into();
        self
    }
}

/// SQ and RQ states (`MLX5_SQC_STATE_*`, `MLX5_RQC_STATE_*`).
pub mod qstate {
    pub const RST: u32 = 0x0;
    pub const RDY: u32 = 0x1;
    pub const ERR: u32 = 0x3;
}

/// `mlx5_ifc_sqc_bits`: a send queue context (240 bytes with its WQ).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Sqc {
    /// `rlky` (31), `cd_master` (30), `fre` (29), `flush_in_error_en` (28),
    /// `allow_multi_pkt_send_wqe` (27), `min_wqe_inline_mode` (26:24), `state` (23:20).
    pub flags: U32,
    pub user_index: U32,
    /// `cqn` (23:0).
    pub cqn: U32,
    pub hairpin_peer_rq: U32,
    pub hairpin_peer_vhca: U32,
    pub rsvd5: U32,
    pub ts_cqe_to_dest_cqn: U32,
    pub packet_pacing: U32,
    /// `tis_lst_sz` (31:16).
    pub tis_lst_sz: U32,
    pub rsvd9: [U32; 2],
    /// `tis_num_0` (23:0).
    pub tis_num_0: U32,
    pub wq: Wq,
}
const _: () = assert!(core::mem::size_of::<Sqc>() == 240);

impl Sqc {
    /// An SQ in RST completing to `cqn`, sending through `tisn`, requiring `inline_mode`
    /// (`MLX5_INLINE_MODE_*`) headers inline, flushing its WQEs in error.
    pub fn new(cqn: Cqn, tisn: Tisn, inline_mode: u32, wq: Wq) -> Sqc {
        Sqc {
            flags: (field(1, 28, 1) | field(inline_mode, 24, 3) | field(qstate::RST, 20, 4)).into(),
            cqn: field(cqn.0, 0, 24).into(),
            tis_lst_sz: field(1, 16, 16).into(),
            tis_num_0: field(tisn.0, 0, 24).into(),
            wq,
            ..Default::default()
        }
    }
}

/// `mlx5_ifc_rqc_bits`: a receive queue context (240 bytes with its WQ).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Rqc {
    /// `rlky` (31), `delay_drop_en` (30), `scatter_fcs` (29), `vsd` (28), `mem_rq_type` (27:24,
    /// 0 = RQ inline), `state` (23:20), `flush_in_error_en` (18).
    pub flags: U32,
    pub user_index: U32,
    /// `cqn` (23:0).
    pub cqn: U32,
    /// `counter_set_id` (31:24).
    pub counter_set_id: U32,
    pub rmpn: U32,
    pub hairpin_peer_sq: U32,
    pub hairpin_peer_vhca: U32,
    pub rsvd7: [U32; 5],
    pub wq: Wq,
}
const _: () = assert!(core::mem::size_of::<Rqc>() == 240);

impl Rqc {
    /// An inline memory RQ in RST completing to `cqn`, VLAN stripping off (`vsd`), flushing
    /// its WQEs in error.
    pub fn new(cqn: Cqn, wq: Wq) -> Rqc {
        Rqc {
            flags: (field(1, 28, 1) | field(0, 24, 4) | field(qstate::RST, 20, 4) | field(1, 18, 1)).into(),
            cqn: field(cqn.0, 0, 24).into(),
            wq,
            ..Default::default()
        }
    }
}

/// `mlx5_ifc_tisc_bits` (160 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Tisc {
    /// `lag_tx_port_affinity` (27:24), `prio` (19:16).
    pub flags: U32,
    pub rsvd1: [U32; 8],
    /// `transport_domain` (23:0).
    pub transport_domain: U32,
    pub underlay_qpn: U32,
    pub pd: U32,
    pub rsvd: [u8; 112],
}
const _: () = assert!(core::mem::size_of::<Tisc>() == 160);

impl Tisc {
    /// A TIS in transport domain `td`.
    pub fn new(td: Td) -> Tisc {
        let mut t = Tisc::new_zeroed();
        t.transport_domain = field(td.0, 0, 24).into();
        t
    }
}

/// `mlx5_ifc_tirc_bits` (240 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Tirc {
    pub rsvd0: U32,
    /// `disp_type` (31:28): 0 direct (to `inline_rqn`), 1 indirect (RSS through an RQT).
    pub disp_type: U32,
    pub rsvd2: [U32; 2],
    /// `lro_timeout_period_usecs` (27:12), `lro_enable_mask` (11:8), `lro_max_msg_sz` (7:0).
    pub lro: U32,
    pub rsvd5: [U32; 2],
    /// `inline_rqn` (23:0).
    pub inline_rqn: U32,
    /// `rx_hash_symmetric` (31), `tunneled_offload_en` (29), `indirect_table` (23:0).
    pub indirect_table: U32,
    /// `rx_hash_fn` (31:28), `self_lb_block` (25:24), `transport_domain` (23:0).
    pub hash_td: U32,
    pub rx_hash_toeplitz_key: [U32; 10],
    pub rx_hash_field_selector_outer: U32,
    pub rx_hash_field_selector_inner: U32,
    pub rsvd: [u8; 152],
}
const _: () = assert!(core::mem::size_of::<Tirc>() == 240);

impl Tirc {
    /// A TIR in transport domain `td` dispatching directly (`disp_type` 0) to `rqn`.
    pub fn direct(rqn: Rqn, td: Td) -> Tirc {
        let mut t = Tirc::new_zeroed();
        t.disp_type = field(0, 28, 4).into();
        t.inline_rqn = field(rqn.0, 0, 24).into();
        t.hash_td = field(td.0, 0, 24).into();
        t
    }
}

/// Defines a command input made of the header, 24 reserved bytes and a context, and its
/// constructor from the context.
macro_rules! ctx_in {
    ($(#[$m:meta])* $name:ident, $ctx:ty, $size:expr, $opcode:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
        #[repr(C)]
        pub struct $name {
            pub hdr: InHdr,
            pub rsvd: [u8; 24],
            pub ctx: $ctx,
        }
        const _: () = assert!(core::mem::size_of::<$name>() == $size);

        impl $name {
            pub fn new(ctx: $ctx) -> $name {
                let mut i = $name::new_zeroed();
                i.hdr = InHdr::new($opcode, 0);
                i.ctx = ctx;
                i
            }
        }
    };
}

/// Defines a MODIFY_SQ / MODIFY_RQ input and its constructor for a state change.
macro_rules! modify_in {
    ($(#[$m:meta])* $name:ident, $ctx:ty, $qn:ty, $opcode:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
        #[repr(C)]
        pub struct $name {
            pub hdr: InHdr,
            /// The current state (31:28) and the queue number (23:0).
            pub state_qn: U32,
            pub rsvd: U32,
            pub modify_bitmask: U64,
            pub rsvd2: U64,
            /// `state` in it is the new state.
            pub ctx: $ctx,
        }
        const _: () = assert!(core::mem::size_of::<$name>() == 0x110);

        impl $name {
            /// Moves queue `qn` from state `from` to `to` ([`qstate`]).
            pub fn new(qn: $qn, from: u32, to: u32) -> $name {
                let mut m = $name::new_zeroed();
                m.hdr = InHdr::new($opcode, 0);
                m.state_qn = (field(from, 28, 4) | field(qn.0, 0, 24)).into();
                m.ctx.flags = field(to, 20, 4).into();
                m
            }
        }
    };
}

ctx_in!(
    /// `mlx5_ifc_create_sq_in_bits` (0x110 bytes), followed by the WQ's `pas` list.
    CreateSqIn, Sqc, 0x110, op::CREATE_SQ
);
ctx_in!(
    /// `mlx5_ifc_create_rq_in_bits` (0x110 bytes), followed by the WQ's `pas` list.
    CreateRqIn, Rqc, 0x110, op::CREATE_RQ
);
ctx_in!(
    /// `mlx5_ifc_create_tis_in_bits` (192 bytes).
    CreateTisIn, Tisc, 192, op::CREATE_TIS
);
ctx_in!(
    /// `mlx5_ifc_create_tir_in_bits` (272 bytes).
    CreateTirIn, Tirc, 272, op::CREATE_TIR
);
modify_in!(
    /// `mlx5_ifc_modify_sq_in_bits` (0x110 bytes).
    ModifySqIn, Sqc, Sqn, op::MODIFY_SQ
);
modify_in!(
    /// `mlx5_ifc_modify_rq_in_bits` (0x110 bytes).
    ModifyRqIn, Rqc, Rqn, op::MODIFY_RQ
);

/// `mlx5_ifc_fte_match_set_lyr_2_4_bits`: the layer 2-4 match fields (64 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MatchLyr24 {
    pub smac_47_16: U32,
    /// `smac_15_0` (31:16), `ethertype` (15:0).
    pub smac_15_0_ethertype: U32,
    pub dmac_47_16: U32,
    /// `dmac_15_0` (31:16), `first_prio`/`first_cfi`/`first_vid` (15:0).
    pub dmac_15_0_vlan: U32,
    /// `ip_protocol` (31:24), `ip_dscp` (23:18), `ip_ecn` (17:16), `cvlan_tag` (15),
    /// `svlan_tag` (14), `frag` (13), `ip_version` (12:9), `tcp_flags` (8:0).
    pub ip: U32,
    /// `tcp_sport` (31:16), `tcp_dport` (15:0).
    pub tcp_ports: U32,
    /// `ipv4_ihl` (11:8) and checksum-ok bits, `ttl_hoplimit` (7:0).
    pub ttl: U32,
    /// `udp_sport` (31:16), `udp_dport` (15:0).
    pub udp_ports: U32,
    /// `src_ipv4_src_ipv6`: an IPv4 address in its last 4 bytes.
    pub src_ip: [U32; 4],
    /// `dst_ipv4_dst_ipv6`: an IPv4 address in its last 4 bytes.
    pub dst_ip: [U32; 4],
}
const _: () = assert!(core::mem::size_of::<MatchLyr24>() == 64);

/// `mlx5_ifc_fte_match_param_bits` (512 bytes): outer headers, then misc parameters, inner
/// headers and more, which this driver leaves zero.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MatchParam {
    pub outer: MatchLyr24,
    pub rest: [u8; 448],
}
const _: () = assert!(core::mem::size_of::<MatchParam>() == 512);

/// `match_criteria_enable` bit for the outer headers (`MLX5_MATCH_OUTER_HEADERS`).
pub const MATCH_OUTER_HEADERS: u32 = 1 << 0;
/// `table_type` of the NIC receive flow tables (`FS_FT_NIC_RX`).
pub const FT_NIC_RX: u32 = 0x0;
/// Flow context `action`: forward to the destination list (`MLX5_FLOW_CONTEXT_ACTION_FWD_DEST`).
pub const FLOW_ACTION_FWD_DEST: u32 = 0x4;
/// Destination type TIR (`MLX5_FLOW_DESTINATION_TYPE_TIR`).
pub const FLOW_DEST_TIR: u32 = 0x2;

/// The header shared by the flow-steering commands: `mlx5_ifc_create_flow_table_in_bits`,
/// `destroy_flow_table_in`, `create_flow_group_in`, `destroy_flow_group_in`, `set_fte_in`,
/// `delete_fte_in`, `set_flow_table_root_in` up to `table_id` (24 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FlowHdr {
    pub hdr: InHdr,
    /// `other_vport` (31), `vport_number` (15:0).
    pub vport: U32,
    pub rsvd: U32,
    /// `table_type` (31:24); in CREATE_FLOW_GROUP also `group_type` (19:16).
    pub table_type: U32,
    /// `table_id` (23:0); reserved in CREATE_FLOW_TABLE.
    pub table_id: U32,
}
const _: () = assert!(core::mem::size_of::<FlowHdr>() == 24);

impl FlowHdr {
    pub fn new(opcode: u16, op_mod: u16, table_type: u32, table_id: u32) -> Self {
        FlowHdr {
            hdr: InHdr::new(opcode, op_mod),
            table_type: field(table_type, 24, 8).into(),
            table_id: table_id.into(),
            ..Default::default()
        }
    }
}

/// `mlx5_ifc_create_flow_table_in_bits` (64 bytes), with its `flow_table_context`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CreateFlowTableIn {
    pub hdr: FlowHdr,
    /// `flow_table_context` word 0: `table_miss_action` (27:24), `level` (23:16), `log_size`
    /// (7:0).
    pub ctx_flags: U32,
    pub table_miss_id: U32,
    pub lag_master_next_table_id: U32,
    pub rsvd: [U32; 3],
    pub sw_owner_icm_root: [U64; 2],
}
const _: () = assert!(core::mem::size_of::<CreateFlowTableIn>() == 64);

/// Inputs naming one flow-steering object after the common header: `destroy_flow_table_in`
/// (the id word unused), `destroy_flow_group_in` (`group_id`), `set_flow_table_root_in`
/// (`underlay_qpn`) — 64 bytes.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FlowObjIn {
    pub hdr: FlowHdr,
    pub id: U32,
    pub rsvd: [U32; 9],
}
const _: () = assert!(core::mem::size_of::<FlowObjIn>() == 64);

/// `mlx5_ifc_delete_fte_in_bits` (64 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DeleteFteIn {
    pub hdr: FlowHdr,
    pub rsvd: U64,
    pub flow_index: U32,
    pub rsvd2: [U32; 7],
}
const _: () = assert!(core::mem::size_of::<DeleteFteIn>() == 64);

/// `mlx5_ifc_create_flow_group_in_bits` (1024 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CreateFlowGroupIn {
    pub hdr: FlowHdr,
    pub source_eswitch: U32,
    pub start_flow_index: U32,
    pub rsvd: U32,
    pub end_flow_index: U32,
    pub match_definer_id: U32,
    pub rsvd2: [U32; 4],
    /// `match_criteria_enable` (7:0).
    pub match_criteria_enable: U32,
    pub match_criteria: MatchParam,
    pub rsvd3: [u8; 448],
}
const _: () = assert!(core::mem::size_of::<CreateFlowGroupIn>() == 1024);

/// `mlx5_ifc_flow_context_bits` up to the destination list (768 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FlowContext {
    pub push_vlan: U32,
    pub group_id: U32,
    pub flow_tag: U32,
    /// `action` (15:0).
    pub action: U32,
    /// `extended_destination` (31), `flow_source` (29:28), `destination_list_size` (23:0).
    pub destination_list_size: U32,
    pub flow_counter_list_size: U32,
    pub packet_reformat_id: U32,
    pub modify_header_id: U32,
    pub push_vlan_2: U32,
    pub ipsec_obj_id: U32,
    pub rsvd: [U32; 6],
    pub match_value: MatchParam,
    pub rsvd2: [u8; 192],
}
const _: () = assert!(core::mem::size_of::<FlowContext>() == 768);

/// `mlx5_ifc_dest_format_struct_bits` (8 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FlowDest {
    /// `destination_type` (31:24), `destination_id` (23:0).
    pub type_id: U32,
    pub rsvd: U32,
}

/// `mlx5_ifc_set_fte_in_bits` with one destination (840 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SetFteIn {
    pub hdr: FlowHdr,
    pub rsvd: U64,
    pub flow_index: U32,
    pub rsvd2: [U32; 7],
    pub ctx: FlowContext,
    pub dest: FlowDest,
}
const _: () = assert!(core::mem::size_of::<SetFteIn>() == 840);

/// `mlx5_ifc_query_nic_vport_context_in_bits` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QueryVportIn {
    pub hdr: InHdr,
    /// `other_vport` (31), `vport_number` (15:0).
    pub vport: U32,
    /// `allowed_list_type` (26:24).
    pub allowed_list_type: U32,
}
const _: () = assert!(core::mem::size_of::<QueryVportIn>() == 16);

impl QueryVportIn {
    /// Our own vport's context.
    pub fn new() -> QueryVportIn {
        QueryVportIn { hdr: InHdr::new(op::QUERY_NIC_VPORT_CONTEXT, 0), ..Default::default() }
    }
}

/// `mlx5_ifc_nic_vport_context_bits` (256 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NicVportContext {
    /// `min_wqe_inline_mode` (26:24), `disable_mc_local_lb` (2), `disable_uc_local_lb` (1),
    /// `roce_en` (0).
    pub flags: U32,
    pub events: U32,
    pub affiliation: U32,
    pub rsvd: [u8; 26],
    /// The L2 MTU (Ethernet header and FCS included).
    pub mtu: U16,
    pub system_image_guid: U64,
    pub port_guid: U64,
    pub node_guid: U64,
    pub rsvd2: [u8; 40],
    pub qkey_violation_counter: U16,
    pub rsvd3: [u8; 134],
    /// `promisc_uc` (31), `promisc_mc` (30), `promisc_all` (29), `allowed_list_type` (26:24),
    /// `allowed_list_size` (11:0).
    pub promisc: U32,
    pub rsvd4: U16,
    /// `permanent_address`: MAC bits 47:32, then 31:0.
    pub mac_47_32: U16,
    pub mac_31_0: U32,
    pub rsvd5: U32,
}
const _: () = assert!(core::mem::size_of::<NicVportContext>() == 256);
const _: () = assert!(core::mem::offset_of!(NicVportContext, mtu) == 0x26);
const _: () = assert!(core::mem::offset_of!(NicVportContext, promisc) == 0xF0);

/// `mlx5_ifc_query_nic_vport_context_out_bits` (272 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QueryVportOut {
    pub hdr: OutHdr,
    pub rsvd: U64,
    pub ctx: NicVportContext,
}

/// `mlx5_ifc_modify_nic_vport_context_in_bits` (512 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ModifyVportIn {
    pub hdr: InHdr,
    pub vport: U32,
    /// `mlx5_ifc_modify_nic_vport_field_select_bits`: see [`vport_select`].
    pub field_select: U32,
    pub rsvd: [u8; 240],
    pub ctx: NicVportContext,
}
const _: () = assert!(core::mem::size_of::<ModifyVportIn>() == 512);

impl ModifyVportIn {
    /// Sets our vport's hardware MTU and, when `promiscuous`, unicast promiscuity.
    pub fn mtu_and_promisc(hw_mtu: u16, promiscuous: bool) -> ModifyVportIn {
        let mut m = ModifyVportIn::new_zeroed();
        m.hdr = InHdr::new(op::MODIFY_NIC_VPORT_CONTEXT, 0);
        m.field_select = (vport_select::MTU | if promiscuous { vport_select::PROMISC } else { 0 }).into();
        m.ctx.mtu = hw_mtu.into();
        m.ctx.promisc = field(u32::from(promiscuous), 31, 1).into();
        m
    }
}

/// Bits of `field_select` in MODIFY_NIC_VPORT_CONTEXT.
pub mod vport_select {
    pub const MIN_INLINE: u32 = 1 << 7;
    pub const MTU: u32 = 1 << 6;
    pub const PROMISC: u32 = 1 << 4;
}

/// Inline modes of `min_wqe_inline_mode` (`enum mlx5_inline_modes` in Linux
/// `include/linux/mlx5/device.h`): nothing, or the L2 headers (then IP, TCP/UDP: 2, 3).
pub const INLINE_MODE_NONE: u32 = 0;
pub const INLINE_MODE_L2: u32 = 1;

/// `MLX5_REG_PMTU`: the port MTU register.
pub const REG_PMTU: u16 = 0x5003;

/// `mlx5_ifc_pmtu_reg_bits` (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PmtuReg {
    /// `local_port` (23:16).
    pub local_port: U32,
    pub max_mtu: U16,
    pub rsvd: U16,
    pub admin_mtu: U16,
    pub rsvd2: U16,
    pub oper_mtu: U16,
    pub rsvd3: U16,
}

/// `mlx5_ifc_access_register_in_bits` carrying a PMTU register (32 bytes; `op_mod` 0 writes,
/// 1 reads).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AccessPmtuIn {
    pub hdr: InHdr,
    pub rsvd: U16,
    pub register_id: U16,
    pub argument: U32,
    pub data: PmtuReg,
}
const _: () = assert!(core::mem::size_of::<AccessPmtuIn>() == 32);

impl AccessPmtuIn {
    /// Reads port `port`'s PMTU register (`op_mod` 1).
    pub fn read(port: u32) -> AccessPmtuIn {
        AccessPmtuIn {
            hdr: InHdr::new(op::ACCESS_REGISTER, 1),
            register_id: REG_PMTU.into(),
            data: PmtuReg { local_port: field(port, 16, 8).into(), ..Default::default() },
            ..Default::default()
        }
    }

    /// Sets port `port`'s administrative MTU (`op_mod` 0).
    pub fn write_admin_mtu(port: u32, hw_mtu: u16) -> AccessPmtuIn {
        AccessPmtuIn {
            hdr: InHdr::new(op::ACCESS_REGISTER, 0),
            register_id: REG_PMTU.into(),
            data: PmtuReg { local_port: field(port, 16, 8).into(), admin_mtu: hw_mtu.into(), ..Default::default() },
            ..Default::default()
        }
    }
}

/// `mlx5_ifc_access_register_out_bits` with a PMTU register (32 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct AccessPmtuOut {
    pub hdr: OutHdr,
    pub rsvd: U64,
    pub data: PmtuReg,
}

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
