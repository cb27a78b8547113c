//! A software model of an NVIDIA ConnectX (mlx5) adapter's firmware interface, for testing the
//! mlx5 driver without hardware: the initialization segment, the command interface and HCA
//! bring-up / teardown; CQs, SQs, RQs (striding), TIS / TIR / RQT, Q counters, NIC RX flow
//! steering; and the datapath: send doorbells, send WQEs, receive into striding RQs,
//! CQEs, and two models wired together ([`Mlx5Model::connect`]).
//!
//! The model owns a fake BAR0 ([`Mlx5Model`] implements [`RegisterIo`]) and reaches host
//! memory only through an [`Iommu`]: the table of IOVA ranges a
//! [`DmaSpace::with_mapper`](erpc_hugepages::DmaSpace::with_mapper) space maps. A device access
//! outside the mappings is an IOMMU fault, recorded and refused; host memory is never touched
//! through an address the driver did not map (so a driver that hands the device a virtual
//! address is caught). The model decodes every layout with its own definitions
//! ([`layout`], written from Linux `mlx5_ifc.h` / `device.h` / `cq.h` / `qp.h` / `cmd.c`,
//! rdma-core `mlx5_vfio.h` / `mlx5dv.h` and DPDK `mlx5_prm.h`, never from the driver's), so a
//! layout mistake in the driver shows up as a rejected command or an error CQE.
//!
//! # Construction
//! ```ignore
//! let (model, space) = Mlx5Model::with_dma(Mlx5Config::default());
//! // `model.clone()` is the driver's BAR0 (RegisterIo); `space` its DMA memory.
//! ```
//!
//! # BAR0 layout
//! * `0x0000..0x2010`: the initialization segment (`struct mlx5_init_seg`), big-endian fields
//!   read and written through the little-endian [`RegisterIo`] as a mapped BAR would be (a
//!   driver byte-swaps: `read32(off).swap_bytes()`). `fw_rev` / `cmdif_rev` (5); `cmdq_addr_h`
//!   (0x10) and `cmdq_addr_l_sz` (0x14: address bits 31:12, `nic_interface` 10:8, and the
//!   read-only `log_cmdq_size` = 5 (32 slots) / `log_cmdq_stride` = 6 (64 bytes) in 7:0); the
//!   command doorbell (0x18, bit n = slot n); `initializing` (0x1FC bit 31), cleared after
//!   [`Mlx5Config::ready_after_reads`] reads or never; the health buffer (0x200, syndrome byte
//!   at 0x23D, set by [`Mlx5Model::set_health_syndrome`]); the health counter (0x1010), which
//!   advances on every read while firmware is alive.
//! * UAR pages: UAR index `n` is BAR0 offset `n` times the UAR page size, which the current
//!   general capabilities give as Linux `uar2pfn` (`core/uar.c`) reads them: 4 KiB with
//!   `uar_4k`, else `4 KiB << log_uar_page_sz` ([`ModelCaps::uar_4k`],
//!   [`ModelCaps::log_uar_page_sz`]: its value until SET_HCA_CAP changes it). ALLOC_UAR hands
//!   out indices from the first page above the initialization segment (3 with 4 KiB pages).
//!   Modelled UAR offsets: the EQ doorbells at 0x40 (update consumer index and arm) and 0x48
//!   (update only); the BlueFlame register at 0x800 (`MLX5_BF_OFFSET`): two buffers of half of
//!   `1 << log_bf_reg_size` bytes each (0x800 and 0x900 by default, [`ModelCaps::log_bf_reg_size`]),
//!   or without BlueFlame (`bf` = 0) only the 8-byte doorbell at 0x800. The first 8 bytes of a
//!   buffer are the send doorbell (see the datapath below); the rest takes a BlueFlame copy of
//!   the WQE, accepted and ignored only as the continuation of a doorbell to that buffer (else
//!   [`ViolationKind::SendDoorbell`]). The send doorbell is one [`RegisterIo64::write64`] (the
//!   model takes it whole under its lock); written as two 32-bit writes it is a
//!   [`ViolationKind::SplitDoorbell`] (and still rings once both halves arrived, low address
//!   first). Other UAR offsets (the CQ arm doorbell 0x20 among them) are recorded as
//!   [`ViolationKind::Unmodelled`].
//!
//! # Commands
//! A doorbell bit makes the model process that slot at once (synchronously, inside
//! `write32`): the entry must be owned by hardware (else ignored and recorded), of type 7; the
//! input is read from the inline bytes and the mailbox chain and the output chain checked
//! (block numbers, tokens, 512/1024-byte alignment, a chain long enough for `ilen` / `olen`);
//! chain problems complete the command with the delivery status in `status_own` bits 7:1
//! (`MLX5_CMD_DELIVERY_STAT_*`). Then the command executes: an unknown opcode is BAD_OP (0x2);
//! an input shorter than the command's layout BAD_INP_LEN (0x50); an output too short for the
//! command's output BAD_OUTP_LEN (0x51); a command out of bring-up order BAD_SYS_STATE (0x4); a
//! bad field BAD_PARAM (0x3); a handle that does not exist BAD_RES (0x5); a handle still in use
//! BAD_RES_STATE (0x9); no free objects LIM (0x8). Output and status are written, ownership
//! returns to software, and if an EQ subscribes to command completions (event 0x0A) a
//! completion EQE with the slot's bit is written to it. Syndromes are the model's own
//! ([`syndrome`]); real firmware's are opaque numbers.
//!
//! Implemented: ENABLE_HCA, DISABLE_HCA, QUERY_ISSI, SET_ISSI (ISSI 0 and 1), QUERY_PAGES,
//! MANAGE_PAGES (give / take / cannot give), QUERY_HCA_CAP (general, Ethernet offload and flow
//! table caps, values from [`ModelCaps`]) / SET_HCA_CAP (general: `log_max_qp`,
//! `cmdif_checksum`, `log_uar_page_sz` = 0 only), INIT_HCA (needs boot + init pages), TEARDOWN_HCA, ALLOC/DEALLOC_UAR,
//! CREATE/DESTROY_EQ, ALLOC/DEALLOC_PD, ALLOC/DEALLOC_TRANSPORT_DOMAIN, QUERY_SPECIAL_CONTEXTS,
//! QUERY/MODIFY_NIC_VPORT_CONTEXT (MAC, MTU, promiscuity), ACCESS_REG for PMTU.
//!
//! Firmware pages given by MANAGE_PAGES must be 4 KiB aligned, distinct and mapped: the model
//! fills each with a pattern through the IOMMU when it takes it (firmware uses its pages), so
//! an unmapped page faults and the command fails with BAD_PARAM. Pages can be taken back freely
//! before INIT_HCA and after TEARDOWN_HCA; while initialized only as many as a negative page
//! request asked for. [`Mlx5Model::request_pages`] writes a PAGE_REQUEST EQE (event 0x0B) into
//! the EQ subscribed to it.
//!
//! # Queue and steering commands
//! All need INIT_HCA (BAD_SYS_STATE before); a handle that does not exist is BAD_RES, a bad
//! field BAD_PARAM (the syndrome names the check), destroying an object another uses
//! BAD_RES_STATE (a CQ under an SQ / RQ, a TIS under an SQ, an RQ under a TIR or RQT, an RQT
//! under a TIR, a TIR under a flow entry, a table with groups, a group with entries,
//! a Q counter under an RQ; and, for the HCA-level objects, a UAR, EQ, PD or transport domain a queue,
//! TIS or TIR uses). Objects get numbers from one counter starting at 0x100, unique across
//! types, so a CQN passed as an SQN is BAD_RES. TEARDOWN_HCA frees them all and the teardown
//! report lists them as leaked.
//! * CREATE_CQ / DESTROY_CQ / QUERY_CQ (`cqc`): 64-byte CQEs only (`cqe_sz` 0), no
//!   compression, `log_cq_size` ≤ `log_max_cq_sz`, an allocated `uar_page`, an existing `c_eqn`,
//!   `page_offset` inside the first page, `pas[]` (at 0x110) long enough (else BAD_INP_LEN),
//!   each page aligned to its size and mapped, `dbr_addr` 8-byte aligned and mapped; `oi`.
//! * CREATE_TIS / DESTROY_TIS (`tisc`): the transport domain exists.
//! * CREATE_SQ / MODIFY_SQ / DESTROY_SQ / QUERY_SQ (`sqc`, `wq`): an existing CQ; `tis_lst_sz` 1
//!   and `tis_num_0` existing; state RST; `min_wqe_inline_mode` at least what the device
//!   requires (see [`Mlx5Config::min_inline_mode`]); no hairpin; `wq_type` cyclic (1); an
//!   existing PD, an allocated UAR, the doorbell record and `pas[]` as for CQs; `log_wq_stride`
//!   6; `log_wq_sz` ≤ `log_max_wq_sz`; no WQ signature.
//! * CREATE_RQ / MODIFY_RQ / DESTROY_RQ / QUERY_RQ (`rqc`, `wq`): an existing CQ, state RST,
//!   `mem_rq_type` 0 (inline RQ), no hairpin, `counter_set_id` 0 or an allocated Q counter;
//!   `wq_type` cyclic striding (3) with `log_wq_stride` 5, `log_wqe_num_of_strides` 0..=7
//!   (512..65536 strides), `log_wqe_stride_size` 0..=7 (64..8192 bytes), `two_byte_shift_en`;
//!   or cyclic (1) with `log_wq_stride` 4..=10 (a WQE of data segments); linked-list types are
//!   BAD_PARAM.
//! * MODIFY_SQ / MODIFY_RQ: the input's current state (`sq_state` / `rq_state`) must be the
//!   queue's (else BAD_RES_STATE); the context's new state must be reachable: RST→RDY,
//!   RDY→ERR, RDY→RST, ERR→RST, RDY→RDY (else BAD_PARAM). To RST the queue's counters restart
//!   at 0.
//! * ALLOC / DEALLOC / QUERY_Q_COUNTER: `out_of_buffer` (with `clear`).
//! * CREATE_TIR / DESTROY_TIR (`tirc`): the transport domain exists; DIRECT to an existing
//!   `inline_rqn` or INDIRECT to an existing RQT; LRO and tunnel offloads refused.
//!   CREATE_RQT / DESTROY_RQT (`rqtc`): 1..=`rqt_max_size` existing RQs.
//! * Flow steering, NIC RX tables (`table_type` 0) of our own vport only: CREATE /
//!   DESTROY_FLOW_TABLE (`flow_table_context`; miss action 0 only), CREATE / DESTROY_FLOW_GROUP
//!   (start ≤ end < table size, no overlap; `match_criteria_enable` outer headers only; a mask
//!   only on the `fte_match_set_lyr_2_4` fields the model decodes: MACs, ethertype, first VLAN,
//!   IP version / protocol / DSCP / ECN / TTL / fragment, IPv4 and IPv6 addresses, TCP / UDP
//!   ports, TCP flags), SET_FLOW_TABLE_ENTRY (op_mod 0 at a free index, BAD_RES_STATE if
//!   taken; 1 to replace an existing one; the index inside a group whose id the `flow_context`
//!   names; a match value only on bits of the group's mask; action FWD_DEST to TIRs, or DROP;
//!   no counters), DELETE_FLOW_TABLE_ENTRY, SET_FLOW_TABLE_ROOT (`op_mod` 0: the table becomes
//!   the root; 1: disconnect, accepted only with [`ModelCaps::reset_root_to_default`], else
//!   BAD_PARAM). An entry whose match equals another's in the same group is accepted (as
//!   firmware does) but recorded as [`ViolationKind::ShadowedFlowEntry`]: one of them can never
//!   match. [`Mlx5Model::flow_entries`] decodes each entry's match (MAC, ethertype, IP protocol,
//!   destination IPv4 address and UDP port, where its group masks them whole) and the RQs its
//!   TIRs lead to; [`RqInfo::steered`] counts the frames steering gave each RQ. A root table without groups or entries may be destroyed: the root reverts
//!   to the default (nothing is steered), as Linux relies on (`update_root_ft_destroy`).
//!
//! # Datapath
//! Everything happens inside the BAR write that triggers it, in the writing thread; frames for
//! the peer are queued on the [`Link`] under the sender's lock and delivered into the peer
//! after it is released (no thread holds two devices' locks; frames arrive in order).
//! * **Send doorbell**: 8 bytes at UAR + 0x800 or + 0x900 = the first 8 bytes of the last
//!   posted WQE's control segment (`opmod_idx_opcode` with the WQE index in bits 23:8, then
//!   `qpn_ds` with the SQN in bits 31:8), big-endian in memory order. The SQ must exist, belong
//!   to that UAR and be RDY (else [`ViolationKind::SendDoorbell`]; an SQ in ERR ignores it,
//!   counted). The device reads the SQ's doorbell record word 1 (`dbr_addr + 4`, big-endian,
//!   low 16 bits = producer WQEBB counter) and executes WQEs from its consumer counter up to
//!   it; a doorbell WQE index the record does not cover, a record more than the ring ahead,
//!   or a WQE whose WQEBBs the record does not all cover is a
//!   [`ViolationKind::DoorbellRecord`].
//! * **Send WQE** (`mlx5_wqe_ctrl_seg`, `mlx5_wqe_eth_seg`, `mlx5_wqe_data_seg`): opcode SEND
//!   (0x0A) or NOP (0x00); `wqe_index` = the consumer counter's low 16 bits, the SQN in
//!   `qpn_ds` = the SQ's, `ds` ≥ 2 16-byte units (WQEs span `ds * 16 / 64` WQEBBs, wrapping);
//!   `inline_hdr_sz` bytes of inline headers starting at the Ethernet segment's byte 14 and
//!   continuing after it (`ceil((inline_hdr_sz - 2) / 16)` units); then data segments, each
//!   with the reserved lkey (QUERY_SPECIAL_CONTEXTS) and read through the IOMMU; inline data
//!   segments are not modelled. The frame must inline what the SQ's / device's minimum inline
//!   mode needs (L2: 18 bytes or the whole frame) and be 14 ..= the L3 MTU + 14 bytes (+4
//!   VLAN-tagged; the L3 MTU is the smaller hardware MTU of the vport context and PMTU, less
//!   22). Failures write an error CQE (REQ_ERR 0xD, `mlx5_err_cqe`: syndrome LOCAL_QP_OP_ERR
//!   for index / SQN / opcode / ds / inline, LOCAL_PROT_ERR for a wrong lkey, LOCAL_ACCESS_ERR
//!   for an IOMMU fault, LOCAL_LENGTH_ERR for a length; `vendor_err_synd` from
//!   [`vendor_syndrome`]; `wqe_counter`; `s_wqe_opcode_qpn` = opcode << 24 | SQN), whatever CE
//!   says, move the SQ to ERR (nothing more is read until MODIFY_SQ ERR→RST→RDY) and are
//!   recorded as [`ViolationKind::ErrorCqe`].
//! * **Send completions**: only for WQEs whose `fm_ce_se` CE (bits 3:2) is 2 or 3: a REQ (0x0)
//!   CQE with `wqe_counter` = the WQE's index, `sop_drop_qpn` = opcode << 24 | SQN.
//! * **CQEs**: written at producer & (size - 1), owner bit = (producer >> `log_cq_size`) & 1,
//!   the body first and `op_own` last after a release fence. Before each the device reads the
//!   CQ doorbell record word 0 (consumer index, 24 bits): a CQ already holding 2^`log_cq_size`
//!   unconsumed CQEs overruns unless `oi` (it goes to error for good, QUERY_CQ status 9, a
//!   CQ_ERROR EQE if an EQ subscribes to event 0x04, [`ViolationKind::CqOverrun`]); with `oi`
//!   it is overwritten.
//! * **Receive**: a frame (from the peer or [`Mlx5Model::inject_rx_frame`]) 14 ..= MTU bytes
//!   long, for the vport MAC, broadcast, or promiscuous, is looked up in the root NIC RX table:
//!   the first entry in flow-index order whose group-masked value equals the frame's masked
//!   fields; FWD_DEST to a TIR → its RQ (indirect: its RQT's first RQ, or one picked by a
//!   simple hash of addresses and ports when `rx_hash_fn` is set: not Toeplitz), which must be
//!   RDY. No root, no match, a DROP entry or an RQ not ready: dropped, counted. VLAN tags are
//!   stripped into the CQE (`vlan_info`, `l4_l3_hdr_type` bit 0) unless the RQ has `vsd`.
//! * **Striding RQ** (Linux mlx5e MPWRQ, DPDK MPRQ): the RQ doorbell record word 0 (low 16
//!   bits) counts posted WQEs, read whenever a WQE is needed. A WQE is a 16-byte
//!   `mlx5_wqe_srq_next_seg` (ignored) and one data segment whose `byte_count` = strides ×
//!   stride size and lkey the reserved lkey (else RESP_ERR 0xE with LOCAL_LENGTH_ERR /
//!   LOCAL_PROT_ERR and the RQ to ERR). A packet starts at the current stride (+2 bytes with
//!   `two_byte_shift_en`, the 2 counted in its strides) and takes ceil(len / stride) strides;
//!   if fewer are left in the WQE, a filler CQE (`byte_cnt` bit 31, bits 30:16 = the strides
//!   left, `wqe_counter` = the first of them) closes it and the packet goes to the next WQE.
//!   The packet's CQE: RESP_SEND (0x2), `byte_cnt` = strides << 16 | length, `wqe_id` (bytes
//!   2-3) = the WQE's ring index, `wqe_counter` (bytes 60-61) = its first stride,
//!   `sop_drop_qpn` = RQN, `hds_ip_ext` L2_OK / L3_OK (IPv4 checksum right, or IPv6) / L4_OK
//!   (TCP / UDP checksum right, or UDP checksum 0), `l4_l3_hdr_type`. No WQE posted, or a
//!   packet longer than a whole WQE: dropped, `out_of_buffer` counted (device and Q counter).
//! * **Cyclic RQ**: a WQE of data segments (a zero `byte_count` ends the list) the frame is
//!   scattered over; `wqe_counter` = the WQE counter; a frame that does not fit is
//!   LOCAL_LENGTH_ERR.
//! * **Hooks**: [`Mlx5Model::set_tx_paused`], [`Mlx5Model::corrupt_next_rx_cqe`],
//!   [`Mlx5Model::counters`], [`Mlx5Model::sq_consumer`], [`Mlx5Model::record_tx`], queue
//!   accessors; [`Link`] loss injection (`drop_next`, `set_loss`, `drop_matching`) and tap.
//!   An unconnected model discards what it sends (counted).
//!
//! # Not modelled (yet)
//! Completion events and CQ arming (the CQ doorbell at UAR 0x20, COMP EQEs): drivers poll;
//! flush CQEs for WQEs after an error (`flush_in_error_en` is accepted, the queue just stops);
//! send opcodes other than SEND / NOP (LSO, enhanced MPW), inline data segments, checksum
//! offload (`cs_flags` is ignored: frames go out as given); CQE compression, 128-byte CQEs,
//! timestamps; LRO, RSS with the Toeplitz hash, tunnel offloads; linked-list RQs, RMPs,
//! hairpin; misc / inner-header match criteria, flow counters, multiple tables chained by
//! miss actions or FLOW_TABLE destinations, NIC TX and FDB tables, flow table capabilities
//! beyond NIC RX `ft_support`, `reset_root_to_default`, `log_max_ft_size`, `max_ft_level`; Q
//! counters other than `out_of_buffer`. Also not
//! modelled: command and mailbox signatures (`cmdif_checksum` = 0 is advertised and SET_HCA_CAP
//! cannot enable it), asynchronous command completion (every command completes inside the
//! doorbell write), MSI-X delivery (an armed EQ that gets an EQE counts an interrupt on its
//! vector, see [`Mlx5Model::interrupts`]), other functions (VFs, `other_vport`,
//! `other_function`), registers other than PMTU, page requests raised by the firmware on its
//! own during commands, ICM use of the given pages beyond the fill.
//!
//! [`RegisterIo`]: erpc_driver::mmio::RegisterIo
//! [`RegisterIo64::write64`]: erpc_driver::mmio::RegisterIo64::write64

mod cmd;
mod datapath;
mod hca;
pub mod iommu;
pub mod layout;
mod link;
mod queues;
mod steering;

pub use datapath::{match_fields, vendor_syndrome, Counters, CqeCorruption};
pub use hca::HcaState;
pub use iommu::{Iommu, IommuFault};
pub use link::{Direction, FrameFilter, Link, LinkStats, Tapped};
pub use queues::{CqInfo, QueueState, RqInfo, SqInfo, Striding};
pub use steering::{FlowEntryInfo, FlowMatch};

use erpc_driver::mmio::{RegisterIo, RegisterIo64};
use erpc_hugepages::DmaSpace;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// The model's syndromes (the 32-bit `syndrome` of a failed command): which check failed.
pub mod syndrome {
    pub const BAD_OPCODE: u32 = 0x4d00_0001;
    pub const INPUT_TOO_SHORT: u32 = 0x4d00_0002;
    pub const OUTPUT_TOO_SHORT: u32 = 0x4d00_0003;
    pub const BAD_STATE: u32 = 0x4d00_0004;
    pub const PAGES_MISSING: u32 = 0x4d00_0005;
    pub const BAD_FUNCTION: u32 = 0x4d00_0006;
    pub const BAD_OP_MOD: u32 = 0x4d00_0007;
    pub const BAD_ISSI: u32 = 0x4d00_0008;
    pub const PAGE_UNALIGNED: u32 = 0x4d00_0009;
    pub const PAGE_DUPLICATE: u32 = 0x4d00_000a;
    pub const PAGE_FAULT: u32 = 0x4d00_000b;
    pub const CAP_VALUE: u32 = 0x4d00_000c;
    pub const NO_SUCH_OBJECT: u32 = 0x4d00_000d;
    pub const OBJECT_IN_USE: u32 = 0x4d00_000e;
    pub const LIMIT: u32 = 0x4d00_000f;
    pub const EQ_SIZE: u32 = 0x4d00_0010;
    pub const EQ_VECTOR: u32 = 0x4d00_0011;
    pub const EQ_PAS: u32 = 0x4d00_0012;
    pub const BAD_MTU: u32 = 0x4d00_0013;
    pub const OTHER_VPORT: u32 = 0x4d00_0014;
    pub const BAD_REGISTER: u32 = 0x4d00_0015;
    pub const BAD_PROFILE: u32 = 0x4d00_0016;
    pub const RESERVED_SET: u32 = 0x4d00_0017;
    pub const PAS_UNALIGNED: u32 = 0x4d00_0018;
    pub const PAS_UNMAPPED: u32 = 0x4d00_0019;
    pub const DBR_UNALIGNED: u32 = 0x4d00_001a;
    pub const DBR_UNMAPPED: u32 = 0x4d00_001b;
    pub const UNSUPPORTED: u32 = 0x4d00_001c;
    pub const QUEUE_SIZE: u32 = 0x4d00_001d;
    pub const CQE_SIZE: u32 = 0x4d00_001e;
    pub const BAD_QUEUE_STATE: u32 = 0x4d00_001f;
    pub const TIS_LIST: u32 = 0x4d00_0020;
    pub const INLINE_MODE: u32 = 0x4d00_0021;
    pub const WQ_TYPE: u32 = 0x4d00_0022;
    pub const WQ_STRIDE: u32 = 0x4d00_0023;
    pub const STRIDES: u32 = 0x4d00_0024;
    pub const TABLE_TYPE: u32 = 0x4d00_0025;
    pub const FLOW_INDEX: u32 = 0x4d00_0026;
    pub const MATCH_CRITERIA: u32 = 0x4d00_0027;
    pub const MATCH_VALUE: u32 = 0x4d00_0028;
    pub const FLOW_ACTION: u32 = 0x4d00_0029;
    pub const FLOW_DEST: u32 = 0x4d00_002a;
}

/// What the model is built with.
#[derive(Clone, Debug)]
pub struct Mlx5Config {
    /// Firmware revision (major, minor, sub-minor).
    pub fw_rev: (u16, u16, u16),
    /// Reads of `initializing` that still see bit 31 set; `None`: firmware never becomes ready.
    pub ready_after_reads: Option<u32>,
    /// Pages QUERY_PAGES reports for boot, init and regular operation.
    pub boot_pages: u32,
    pub init_pages: u32,
    pub regular_pages: u32,
    /// BAR0 length (a power of two; ConnectX-4/5: 32 MiB).
    pub bar_len: u32,
    /// The port's permanent MAC address.
    pub mac: [u8; 6],
    /// The port's largest MTU (PMTU `max_mtu`, hardware MTU including L2 header and FCS).
    pub port_max_mtu: u16,
    /// MSI-X vectors an EQ may name (`eqc.intr`).
    pub msix_vectors: u32,
    /// QUERY_SPECIAL_CONTEXTS `resd_lkey`.
    pub resd_lkey: u32,
    /// Ethernet caps `wqe_inline_mode` (0 L2, 1 vport context, 2 not required); ignored (1,
    /// vport context) when `min_inline_mode` is not 0.
    pub wqe_inline_mode: u8,
    /// The minimum inline mode the device requires of send WQEs (`MLX5_INLINE_MODE_*`: 0 none,
    /// 1 L2 = 18 bytes, 2 IP, 3 TCP/UDP). Non-zero: the Ethernet caps say `wqe_inline_mode` =
    /// 1 (vport context) and the NIC vport context's `min_wqe_inline_mode` is this.
    pub min_inline_mode: u8,
    /// More capability values the device reports.
    pub caps: ModelCaps,
}

/// Capability values the model reports through QUERY_HCA_CAP (and acts on), to test a driver
/// against devices that differ from the default ConnectX-5-like one. Field names are those of
/// `mlx5_ifc_cmd_hca_cap_bits` and `mlx5_ifc_flow_table_prop_layout_bits` (Linux
/// `include/linux/mlx5/mlx5_ifc.h`).
#[derive(Clone, Debug)]
pub struct ModelCaps {
    /// `bf` = 1 with `log_bf_reg_size` = this: a BlueFlame register of `1 << n` bytes at UAR +
    /// 0x800, two buffers of half that the send doorbell alternates between. `None`: `bf` = 0
    /// and `log_bf_reg_size` = 0, the doorbell is the 8 bytes at UAR + 0x800 only.
    pub log_bf_reg_size: Option<u8>,
    /// `uar_4k`: UAR pages are 4 KiB whatever `log_uar_page_sz` says.
    pub uar_4k: bool,
    /// The current `log_uar_page_sz` at power-on (until SET_HCA_CAP sets it; the model accepts
    /// only 0 there): UAR pages are `4 KiB << n` unless `uar_4k`.
    pub log_uar_page_sz: u16,
    pub log_max_wq_sz: u8,
    pub log_max_cq_sz: u8,
    /// `striding_rq`: cyclic striding RQs may be created.
    pub striding_rq: bool,
    /// `log_min_stride_sz_rq`, `log_max_stride_sz_rq`.
    pub stride_sz_rq: (u8, u8),
    /// `flow_table_properties_nic_receive.reset_root_to_default`: SET_FLOW_TABLE_ROOT with
    /// `op_mod` 1 (disconnect) is accepted.
    pub reset_root_to_default: bool,
}

impl Default for ModelCaps {
    fn default() -> ModelCaps {
        ModelCaps {
            log_bf_reg_size: Some(9),
            uar_4k: true,
            log_uar_page_sz: 0,
            log_max_wq_sz: 16,
            log_max_cq_sz: 22,
            striding_rq: true,
            stride_sz_rq: (6, 13),
            reset_root_to_default: true,
        }
    }
}

impl Default for Mlx5Config {
    fn default() -> Mlx5Config {
        Mlx5Config {
            fw_rev: (16, 35, 1012),
            ready_after_reads: Some(2),
            boot_pages: 8,
            init_pages: 24,
            regular_pages: 0,
            bar_len: 32 << 20,
            mac: [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30],
            port_max_mtu: 9978,
            msix_vectors: 8,
            resd_lkey: 0x100,
            wqe_inline_mode: 2,
            min_inline_mode: 0,
            caps: ModelCaps::default(),
        }
    }
}

/// Kinds of misbehaviour the model records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A device access outside the IOMMU mappings.
    IommuFault,
    /// A doorbell for a slot that software still owns (ignored).
    Ownership,
    /// A doorbell the model cannot act on: no command queue, slot out of range, firmware not
    /// ready.
    Doorbell,
    /// The command queue address written out of order or with reserved bits.
    CmdqAddress,
    /// A command's mailbox chain or entry was malformed (completed with a delivery error).
    Mailbox,
    /// A BAR access outside the BAR, misaligned, or a write to a read-only register.
    Register,
    /// An EQE had no room: the EQ overran.
    EqOverrun,
    /// An EQ doorbell naming an unknown EQ, another UAR's EQ, or a consumer index ahead of the
    /// producer.
    EqDoorbell,
    /// A write to a UAR that is not allocated.
    Uar,
    /// A write to a UAR offset the model does not model (not necessarily the driver's fault).
    Unmodelled,
    /// A send doorbell the device cannot act on: no such SQ, another UAR's SQ, an SQ in RST, a
    /// BlueFlame high word without the low word first.
    SendDoorbell,
    /// A doorbell record that does not cover the doorbell's WQE, is more than the ring ahead,
    /// or does not cover a whole multi-WQEBB WQE.
    DoorbellRecord,
    /// The device wrote an error CQE (the detail says why): a bad WQE, lkey, length, address.
    ErrorCqe,
    /// A CQ overran (it goes to error; a CQ_ERROR EQE is posted if an EQ subscribes).
    CqOverrun,
    /// A send doorbell written as two 32-bit stores instead of one 64-bit store (Linux
    /// `mlx5_write64`, `include/linux/mlx5/doorbell.h`: one store on 64-bit hosts; a split one
    /// can interleave with another writer's and reach the device torn).
    SplitDoorbell,
    /// A flow entry whose match is another entry's in the same table and group: the one at the
    /// higher index can never match (two queues steered by the same port, say).
    ShadowedFlowEntry,
}

/// One recorded misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub detail: String,
}

/// One executed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdRecord {
    pub slot: u32,
    pub opcode: u16,
    pub op_mod: u16,
    /// Delivery status (`status_own` bits 7:1); when non-zero the command did not execute.
    pub delivery: u8,
    pub status: u8,
    pub syndrome: u32,
    /// The failure came from [`Mlx5Model::fail_next`].
    pub injected: bool,
}

/// What was left behind, for teardown checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// The HCA is disabled again.
    pub disabled: bool,
    /// Firmware pages the device still holds.
    pub pages_held: usize,
    /// Objects still allocated at TEARDOWN_HCA (or now, if it never ran), e.g. "PD 0x11".
    pub leaked: Vec<String>,
}

impl TeardownReport {
    /// Disabled, every page returned, every object freed.
    pub fn clean(&self) -> bool {
        self.disabled && self.pages_held == 0 && self.leaked.is_empty()
    }
}

/// State of one EQ as the device sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EqInfo {
    pub eqn: u8,
    pub log_size: u32,
    pub uar: u32,
    pub vector: u32,
    pub event_mask: u64,
    /// EQEs written so far.
    pub producer: u32,
    /// The consumer index software last wrote.
    pub consumer: u32,
    pub armed: bool,
    pub overrun: bool,
}

pub(crate) struct Eq {
    pub(crate) log_size: u32,
    pub(crate) uar: u32,
    pub(crate) vector: u32,
    pub(crate) mask: [u64; 4],
    pub(crate) log_page_size: u32,
    pub(crate) page_offset: u32,
    pub(crate) pas: Vec<u64>,
    pub(crate) overrun_ignore: bool,
    pub(crate) producer: u32,
    pub(crate) consumer: u32,
    pub(crate) armed: bool,
    pub(crate) overrun: bool,
}

pub(crate) struct Device {
    cfg: Mlx5Config,
    iommu: Arc<Iommu>,
    // Initialization segment.
    init_reads_left: Option<u32>,
    health_counter: u32,
    health_frozen: bool,
    health_synd: u8,
    health_ext_synd: u16,
    timer: u64,
    cmdq_hi: u32,
    cmdq_hi_written: bool,
    cmdq_lo: u32,
    cmdq_base: Option<u64>,
    // Command interface.
    log: Vec<CmdRecord>,
    violations: Vec<Violation>,
    /// (opcode, status, syndrome, commands of that opcode to let pass first).
    injected: VecDeque<(u16, u8, u32, u32)>,
    // HCA.
    state: HcaState,
    issi: u16,
    caps_gen_max: Vec<u8>,
    /// The current general capabilities at power-on (and after DISABLE_HCA).
    caps_gen_boot: Vec<u8>,
    caps_gen_cur: Vec<u8>,
    caps_eth: Vec<u8>,
    caps_flow: Vec<u8>,
    pages: BTreeSet<u64>,
    /// Pages the device wants to hold in all: boot + init + regular, moved by page requests.
    page_target: i64,
    uars: BTreeSet<u32>,
    eqs: BTreeMap<u8, Eq>,
    pds: BTreeSet<u32>,
    tds: BTreeSet<u32>,
    next_pd: u32,
    next_td: u32,
    vport_mtu: u16,
    vport_mac: [u8; 6],
    vport_promisc: (bool, bool, bool),
    vport_min_inline: u8,
    port_admin_mtu: u16,
    interrupts: Vec<u64>,
    leaked_at_teardown: Option<Vec<String>>,
    // Queue and steering objects.
    next_obj: u32,
    cqs: BTreeMap<u32, queues::Cq>,
    sqs: BTreeMap<u32, queues::Sq>,
    rqs: BTreeMap<u32, queues::Rq>,
    /// TIS number → transport domain.
    tises: BTreeMap<u32, u32>,
    tirs: BTreeMap<u32, queues::Tir>,
    rqts: BTreeMap<u32, Vec<u32>>,
    /// Q counter id → `out_of_buffer`.
    q_counters: BTreeMap<u8, u32>,
    tables: BTreeMap<u32, steering::FlowTable>,
    root_rx: Option<u32>,
    // Datapath.
    counters: Counters,
    tx_paused: bool,
    /// Send doorbells rung while paused: (SQ, WQE index).
    pending_tx: Vec<(u32, u16)>,
    /// The low word of a BlueFlame doorbell written as two 32-bit writes: (UAR, buffer, word).
    bf_low: Option<(u32, u32, u32)>,
    /// Where a BlueFlame copy of a WQE may continue: (UAR, buffer, next offset in the page).
    bf_copy: Option<(u32, u32, u32)>,
    rx_corruptions: VecDeque<CqeCorruption>,
    link: Option<(Link, usize)>,
    tx_record: Option<Vec<Vec<u8>>>,
}

/// The model; clones share one device. Implements [`RegisterIo`] as the device's BAR0.
#[derive(Clone)]
pub struct Mlx5Model(Arc<Mutex<Device>>);

impl Mlx5Model {
    /// A device in its power-on state that reaches host memory through `iommu`.
    pub fn new(cfg: Mlx5Config, iommu: Arc<Iommu>) -> Mlx5Model {
        Mlx5Model(Arc::new(Mutex::new(Device::new(cfg, iommu))))
    }

    /// A device and the DMA space whose mappings it sees.
    pub fn with_dma(cfg: Mlx5Config) -> (Mlx5Model, Arc<DmaSpace>) {
        let iommu = Arc::new(Iommu::new());
        let space = DmaSpace::with_mapper(iommu.clone());
        (Mlx5Model::new(cfg, iommu), space)
    }

    fn dev(&self) -> MutexGuard<'_, Device> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The IOMMU the device's DMA goes through.
    pub fn iommu(&self) -> Arc<Iommu> {
        self.dev().iommu.clone()
    }

    /// Where bring-up stands.
    pub fn state(&self) -> HcaState {
        self.dev().state
    }

    /// The ISSI in force.
    pub fn issi(&self) -> u16 {
        self.dev().issi
    }

    /// Every command the device completed, in order.
    pub fn command_log(&self) -> Vec<CmdRecord> {
        self.dev().log.clone()
    }

    /// The opcodes of [`Mlx5Model::command_log`].
    pub fn opcodes(&self) -> Vec<u16> {
        self.dev().log.iter().map(|r| r.opcode).collect()
    }

    /// Everything the driver did that the device refused or that breaks the rules.
    pub fn violations(&self) -> Vec<Violation> {
        self.dev().violations.clone()
    }

    /// The next command with `opcode` fails with `status` and `syndrome` (once, without
    /// effect); several calls queue up.
    pub fn fail_next(&self, opcode: u16, status: u8, syndrome: u32) {
        self.fail_nth(opcode, 0, status, syndrome)
    }

    /// Makes the command with `opcode` after the next `skip` ones of that opcode fail with
    /// `status` and `syndrome` (to fail, say, the second QUERY_PAGES of a bring-up).
    pub fn fail_nth(&self, opcode: u16, skip: u32, status: u8, syndrome: u32) {
        self.dev().injected.push_back((opcode, status, syndrome, skip));
    }

    /// Firmware pages the device holds.
    pub fn pages_held(&self) -> usize {
        self.dev().pages.len()
    }

    /// Their IOVAs.
    pub fn page_addresses(&self) -> Vec<u64> {
        self.dev().pages.iter().copied().collect()
    }

    /// Pages the device still wants (positive) or wants to give back (negative).
    pub fn pages_outstanding(&self) -> i64 {
        let d = self.dev();
        d.page_target - d.pages.len() as i64
    }

    /// Firmware asks for `n` more pages (`n > 0`) or gives `-n` back (`n < 0`): writes a
    /// PAGE_REQUEST EQE (event 0x0B, function 0) into the EQ subscribed to page requests and
    /// from then on expects MANAGE_PAGES give / take. Fails when no EQ subscribes.
    pub fn request_pages(&self, n: i32) -> Result<(), String> {
        self.dev().request_pages(n)
    }

    /// Sets the health buffer's syndrome bytes: a non-zero syndrome is a fatal firmware error
    /// (the health counter stops and commands are no longer executed).
    pub fn set_health_syndrome(&self, synd: u8, ext_synd: u16) {
        let mut d = self.dev();
        d.health_synd = synd;
        d.health_ext_synd = ext_synd;
    }

    /// Stops (or restarts) the health counter, as a hung firmware would.
    pub fn freeze_health_counter(&self, frozen: bool) {
        self.dev().health_frozen = frozen;
    }

    /// State of EQ `eqn`.
    pub fn eq(&self, eqn: u8) -> Option<EqInfo> {
        let d = self.dev();
        d.eqs.get(&eqn).map(|e| EqInfo {
            eqn,
            log_size: e.log_size,
            uar: e.uar,
            vector: e.vector,
            event_mask: e.mask[0],
            producer: e.producer,
            consumer: e.consumer,
            armed: e.armed,
            overrun: e.overrun,
        })
    }

    /// Interrupts raised on MSI-X `vector` (an EQE written to an armed EQ).
    pub fn interrupts(&self, vector: u32) -> u64 {
        self.dev().interrupts.get(vector as usize).copied().unwrap_or(0)
    }

    /// Allocated UAR indices, EQ numbers, PDs, transport domains.
    pub fn objects(&self) -> Vec<String> {
        self.dev().objects()
    }

    /// The NIC vport context: (MAC, MTU, (promisc uc, mc, all)).
    pub fn vport(&self) -> ([u8; 6], u16, (bool, bool, bool)) {
        let d = self.dev();
        (d.vport_mac, d.vport_mtu, d.vport_promisc)
    }

    /// Whether the driver left the device clean: call after TEARDOWN_HCA, page reclaim and
    /// DISABLE_HCA.
    pub fn teardown_report(&self) -> TeardownReport {
        let d = self.dev();
        TeardownReport {
            disabled: d.state == HcaState::Disabled,
            pages_held: d.pages.len(),
            leaked: d.leaked_at_teardown.clone().unwrap_or_else(|| d.objects()),
        }
    }
}

/// Queues, datapath, wiring and test hooks.
impl Mlx5Model {
    /// Connects two models with a cable: what one sends the other receives (`a` → `b` is
    /// [`Direction::AToB`]). Replaces earlier connections of either.
    pub fn connect(a: &Mlx5Model, b: &Mlx5Model) -> Link {
        let link = Link::new(&a.0, &b.0);
        a.dev().link = Some((link.clone(), 0));
        b.dev().link = Some((link.clone(), 1));
        link
    }

    /// Delivers what a device queued on its link, after its lock was released.
    fn deliver(link: Option<(Link, usize)>) {
        if let Some((l, side)) = link {
            l.drain(side);
        }
    }

    /// A frame arriving from the wire (MAC filter, steering, RQ), as if from a peer.
    pub fn inject_rx_frame(&self, frame: &[u8]) {
        self.dev().receive(frame);
    }

    /// Corrupts the next packet CQE written into an RQ's CQ (queue several to corrupt several).
    pub fn corrupt_next_rx_cqe(&self, kind: CqeCorruption) {
        self.dev().rx_corruptions.push_back(kind);
    }

    /// Pauses transmit: send doorbells are recorded but no WQE is read. Un-pausing processes
    /// the recorded doorbells in the calling thread (and delivers the frames to the peer).
    pub fn set_tx_paused(&self, paused: bool) {
        let link = {
            let mut d = self.dev();
            d.tx_paused = paused;
            if !paused {
                for (sqn, idx) in std::mem::take(&mut d.pending_tx) {
                    d.process_sq(sqn, idx);
                }
            }
            d.link.clone()
        };
        Self::deliver(link);
    }

    /// Send doorbells recorded while paused.
    pub fn pending_tx_doorbells(&self) -> usize {
        self.dev().pending_tx.len()
    }

    /// WQEBBs the device has read from SQ `sqn` (free-running).
    pub fn sq_consumer(&self, sqn: u32) -> Option<u32> {
        self.dev().sqs.get(&sqn).map(|s| s.consumer)
    }

    /// The datapath counters.
    pub fn counters(&self) -> Counters {
        self.dev().counters.clone()
    }

    /// Starts (or stops) recording every frame the device transmits, connected or not.
    pub fn record_tx(&self, on: bool) {
        self.dev().tx_record = on.then(Vec::new);
    }

    /// Frames recorded by [`Mlx5Model::record_tx`] since the last call.
    pub fn take_tx_frames(&self) -> Vec<Vec<u8>> {
        self.dev().tx_record.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn cq(&self, cqn: u32) -> Option<CqInfo> {
        self.dev().cq_info(cqn)
    }

    pub fn sq(&self, sqn: u32) -> Option<SqInfo> {
        self.dev().sq_info(sqn)
    }

    pub fn rq(&self, rqn: u32) -> Option<RqInfo> {
        self.dev().rq_info(rqn)
    }

    /// Every CQ, SQ and RQ number.
    pub fn queues(&self) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let d = self.dev();
        (d.cqs.keys().copied().collect(), d.sqs.keys().copied().collect(), d.rqs.keys().copied().collect())
    }

    /// The TIR numbers.
    pub fn tirs(&self) -> Vec<u32> {
        self.dev().tirs.keys().copied().collect()
    }

    /// Every flow table: (table id, level, log_size).
    pub fn flow_tables(&self) -> Vec<(u32, u32, u32)> {
        self.dev().flow_tables()
    }

    /// Every flow table entry.
    pub fn flow_entries(&self) -> Vec<FlowEntryInfo> {
        self.dev().flow_entries()
    }

    /// The root NIC RX flow table.
    pub fn root_flow_table(&self) -> Option<u32> {
        self.dev().root_rx
    }

    /// A Q counter's `out_of_buffer`.
    pub fn q_counter(&self, id: u8) -> Option<u32> {
        self.dev().q_counters.get(&id).copied()
    }
}

impl Device {
    fn new(cfg: Mlx5Config, iommu: Arc<Iommu>) -> Device {
        let (caps_gen_max, caps_gen_boot, caps_eth, caps_flow) = hca::default_caps(&cfg);
        Device {
            init_reads_left: cfg.ready_after_reads,
            health_counter: 0x100,
            health_frozen: false,
            health_synd: 0,
            health_ext_synd: 0,
            timer: 0,
            cmdq_hi: 0,
            cmdq_hi_written: false,
            cmdq_lo: 0,
            cmdq_base: None,
            log: vec![],
            violations: vec![],
            injected: VecDeque::new(),
            state: HcaState::Disabled,
            issi: 0,
            caps_gen_cur: caps_gen_boot.clone(),
            caps_gen_boot,
            caps_gen_max,
            caps_eth,
            caps_flow,
            pages: BTreeSet::new(),
            page_target: i64::from(cfg.boot_pages) + i64::from(cfg.init_pages) + i64::from(cfg.regular_pages),
            uars: BTreeSet::new(),
            eqs: BTreeMap::new(),
            pds: BTreeSet::new(),
            tds: BTreeSet::new(),
            next_pd: 0x11,
            next_td: 0x21,
            vport_mtu: 1500 + 22,
            vport_mac: cfg.mac,
            vport_promisc: (false, false, false),
            vport_min_inline: cfg.min_inline_mode,
            port_admin_mtu: cfg.port_max_mtu,
            interrupts: vec![0; cfg.msix_vectors as usize],
            leaked_at_teardown: None,
            next_obj: queues::FIRST_OBJECT,
            cqs: BTreeMap::new(),
            sqs: BTreeMap::new(),
            rqs: BTreeMap::new(),
            tises: BTreeMap::new(),
            tirs: BTreeMap::new(),
            rqts: BTreeMap::new(),
            q_counters: BTreeMap::new(),
            tables: BTreeMap::new(),
            root_rx: None,
            counters: Counters::default(),
            tx_paused: false,
            pending_tx: vec![],
            bf_low: None,
            bf_copy: None,
            rx_corruptions: VecDeque::new(),
            link: None,
            tx_record: None,
            iommu,
            cfg,
        }
    }

    pub(crate) fn violation(&mut self, kind: ViolationKind, detail: String) {
        self.violations.push(Violation { kind, detail });
    }

    /// A device read through the IOMMU; a fault is recorded as a violation too.
    pub(crate) fn dma_read(&mut self, iova: u64, buf: &mut [u8]) -> bool {
        match self.iommu.read(iova, buf) {
            Ok(()) => true,
            Err(f) => {
                self.violation(ViolationKind::IommuFault, format!("read of {} bytes at IOVA {:#x}", f.len, f.iova));
                false
            }
        }
    }

    /// A device write through the IOMMU; a fault is recorded as a violation too.
    pub(crate) fn dma_write(&mut self, iova: u64, data: &[u8]) -> bool {
        match self.iommu.write(iova, data) {
            Ok(()) => true,
            Err(f) => {
                self.violation(ViolationKind::IommuFault, format!("write of {} bytes at IOVA {:#x}", f.len, f.iova));
                false
            }
        }
    }

    /// First BAR0 offset of the UAR pages.
    fn uar_region(&self) -> u32 {
        self.first_uar() * self.uar_page()
    }

    fn read_reg(&mut self, off: u32) -> u32 {
        use layout::iseg;
        if off % 4 != 0 || u64::from(off) + 4 > u64::from(self.cfg.bar_len) {
            self.violation(ViolationKind::Register, format!("read32 at {off:#x}: misaligned or outside the BAR"));
            return u32::MAX;
        }
        if off >= self.uar_region() {
            // UAR pages are write-only doorbells.
            return 0;
        }
        let alive = self.health_synd == 0;
        let (maj, min, sub) = self.cfg.fw_rev;
        match off {
            iseg::FW_REV => (u32::from(min) << 16) | u32::from(maj),
            iseg::CMDIF_REV_FW_SUB => (5 << 16) | u32::from(sub),
            iseg::CMDQ_ADDR_H => self.cmdq_hi,
            iseg::CMDQ_ADDR_L_SZ => (self.cmdq_lo & 0xffff_f700) | (cmd::LOG_CMDQ_SIZE << 4) | cmd::LOG_CMDQ_STRIDE,
            iseg::INITIALIZING => match &mut self.init_reads_left {
                None => 1 << 31,
                Some(0) => 0,
                Some(n) => {
                    *n -= 1;
                    1 << 31
                }
            },
            iseg::HEALTH_FW_VER => (u32::from(maj) << 16) | u32::from(min),
            0x23C => (u32::from(self.health_synd) << 16) | u32::from(self.health_ext_synd),
            iseg::INTERNAL_TIMER_H => (self.timer >> 32) as u32,
            iseg::INTERNAL_TIMER_L => {
                self.timer += 1000;
                self.timer as u32
            }
            iseg::HEALTH_COUNTER => {
                let v = self.health_counter;
                if alive && !self.health_frozen {
                    self.health_counter = self.health_counter.wrapping_add(1);
                }
                v
            }
            _ => 0,
        }
    }

    fn write_reg(&mut self, off: u32, be: u32) {
        use layout::iseg;
        if off % 4 != 0 || u64::from(off) + 4 > u64::from(self.cfg.bar_len) {
            self.violation(ViolationKind::Register, format!("write32 at {off:#x}: misaligned or outside the BAR"));
            return;
        }
        if off >= self.uar_region() {
            self.uar_write(off, be);
            return;
        }
        match off {
            iseg::CMDQ_ADDR_H => {
                self.cmdq_hi = be;
                self.cmdq_hi_written = true;
            }
            iseg::CMDQ_ADDR_L_SZ => {
                if !self.cmdq_hi_written {
                    self.violation(
                        ViolationKind::CmdqAddress,
                        "cmdq_addr_l_sz written without cmdq_addr_h first (write the high word first)".into(),
                    );
                }
                if be & 0x700 != 0 {
                    self.violation(ViolationKind::CmdqAddress, format!("nic_interface {} (must be 0)", (be >> 8) & 7));
                }
                if self.state != HcaState::Disabled {
                    self.violation(ViolationKind::CmdqAddress, "command queue moved while the HCA is enabled".into());
                }
                self.cmdq_hi_written = false;
                self.cmdq_lo = be & 0xffff_f700;
                self.cmdq_base = Some((u64::from(self.cmdq_hi) << 32) | u64::from(be & 0xffff_f000));
            }
            iseg::CMD_DBELL => self.doorbell(be),
            _ => self.violation(ViolationKind::Register, format!("write to read-only init segment offset {off:#x}")),
        }
    }

    /// A 64-bit store (little-endian `value`: its low half lands at `off`).
    fn write_reg64(&mut self, off: u32, value: u64) {
        let (w0, w1) = ((value as u32).swap_bytes(), ((value >> 32) as u32).swap_bytes());
        let fits = off % 8 == 0 && u64::from(off) + 8 <= u64::from(self.cfg.bar_len);
        if fits && off >= self.uar_region() {
            self.uar_write64(off, w0, w1);
            return;
        }
        self.write_reg(off, w0);
        self.write_reg(off.wrapping_add(4), w1);
    }

    fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = self.uars.iter().map(|u| format!("UAR {u:#x}")).collect();
        v.extend(self.eqs.keys().map(|e| format!("EQ {e:#x}")));
        v.extend(self.pds.iter().map(|p| format!("PD {p:#x}")));
        v.extend(self.tds.iter().map(|t| format!("TD {t:#x}")));
        self.queue_objects(&mut v);
        v
    }
}

impl RegisterIo for Mlx5Model {
    /// The 4 bytes at `off` as a little-endian load sees them (the init segment's big-endian
    /// fields arrive byte-swapped, as from a mapped BAR).
    fn read32(&self, off: u32) -> u32 {
        self.dev().read_reg(off).swap_bytes()
    }

    fn write32(&self, off: u32, value: u32) {
        let link = {
            let mut d = self.dev();
            d.write_reg(off, value.swap_bytes());
            d.link.clone()
        };
        Self::deliver(link);
    }
}

impl RegisterIo64 for Mlx5Model {
    /// One step under one hold of the device lock, as one 64-bit store reaches the device
    /// whole: a send doorbell rings at once; elsewhere the low half is written, then the high.
    fn write64(&self, off: u32, value: u64) {
        let link = {
            let mut d = self.dev();
            d.write_reg64(off, value);
            d.link.clone()
        };
        Self::deliver(link);
    }
}
