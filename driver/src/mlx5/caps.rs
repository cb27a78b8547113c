//! What the device says it can do: the capability fields this driver depends on, read from
//! QUERY_HCA_CAP's current values instead of assumed.
//!
//! Bit offsets are those of Linux `include/linux/mlx5/mlx5_ifc.h` (also in rdma-core
//! `providers/mlx5/mlx5_ifc.h`): `mlx5_ifc_cmd_hca_cap_bits` (general capabilities, QUERY_HCA_CAP
//! `op_mod` type 0), `mlx5_ifc_per_protocol_networking_offload_caps_bits` (Ethernet offloads,
//! type 1) and `mlx5_ifc_flow_table_nic_cap_bits` (flow tables, type 7, whose
//! `flow_table_properties_nic_receive` is a `flow_table_prop_layout` at bit 0x200). Each is
//! counted from the most significant bit of the block's first big-endian word, as `MLX5_GET`
//! does ([`get_bits`]).

use super::layout::get_bits;
use std::fmt;

/// A capability field: its name in `mlx5_ifc.h`, bit offset and width.
#[derive(Clone, Copy, Debug)]
pub struct CapField {
    pub name: &'static str,
    pub bit: usize,
    pub width: usize,
}

const fn cap(name: &'static str, bit: usize, width: usize) -> CapField {
    CapField { name, bit, width }
}

/// `mlx5_ifc_cmd_hca_cap_bits` fields.
pub mod general {
    use super::{cap, CapField};
    pub const LOG_MAX_CQ_SZ: CapField = cap("log_max_cq_sz", 0xc8, 8);
    pub const LOG_MAX_EQ_SZ: CapField = cap("log_max_eq_sz", 0xe0, 8);
    /// Striding (multi-packet) Ethernet receive queues (`striding_rq`; rdma-core calls it
    /// `eth_striding_wq`).
    pub const STRIDING_RQ: CapField = cap("striding_rq", 0x201, 1);
    /// Command signatures: 0 none, 1 inbox, 3 inbox and outbox. Bring-up sets it to 0.
    pub const CMDIF_CHECKSUM: CapField = cap("cmdif_checksum", 0x210, 2);
    /// UAR pages are 4 KiB whatever `log_uar_page_sz` says.
    pub const UAR_4K: CapField = cap("uar_4k", 0x240, 1);
    /// BlueFlame registers exist.
    pub const BF: CapField = cap("bf", 0x260, 1);
    /// A BlueFlame register is `1 << log_bf_reg_size` bytes: two buffers of half that.
    pub const LOG_BF_REG_SIZE: CapField = cap("log_bf_reg_size", 0x26b, 5);
    pub const LOG_MAX_STRIDE_SZ_RQ: CapField = cap("log_max_stride_sz_rq", 0x3a3, 5);
    pub const LOG_MIN_STRIDE_SZ_RQ: CapField = cap("log_min_stride_sz_rq", 0x3ab, 5);
    pub const LOG_MAX_WQ_SZ: CapField = cap("log_max_wq_sz", 0x3db, 5);
    /// The UAR page is `4 KiB << log_uar_page_sz` (unless `uar_4k`). Bring-up sets it to 0.
    pub const LOG_UAR_PAGE_SZ: CapField = cap("log_uar_page_sz", 0x490, 16);
}

/// `mlx5_ifc_per_protocol_networking_offload_caps_bits` fields.
pub mod eth {
    use super::{cap, CapField};
    /// Which headers a send WQE must inline: [`super::InlineCap`].
    pub const WQE_INLINE_MODE: CapField = cap("wqe_inline_mode", 0x12, 2);
}

/// `mlx5_ifc_flow_table_nic_cap_bits` fields.
pub mod flow {
    use super::{cap, CapField};
    /// `flow_table_properties_nic_receive.reset_root_to_default`: SET_FLOW_TABLE_ROOT with
    /// `op_mod` 1 (disconnect the root) is accepted.
    pub const NIC_RX_RESET_ROOT_TO_DEFAULT: CapField = cap("reset_root_to_default", 0x200 + 0x9, 1);
}

/// `wqe_inline_mode` of the Ethernet offload capabilities (`MLX5_CAP_INLINE_MODE_*`, Linux
/// `include/linux/mlx5/vport.h`), resolved the way Linux `mlx5_query_min_inline`
/// (`drivers/net/ethernet/mellanox/mlx5/core/vport.c`) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InlineCap {
    /// 0: every send WQE inlines the L2 headers.
    L2,
    /// 1: the NIC vport context's `min_wqe_inline_mode` says.
    VportContext,
    /// 2: nothing needs to be inlined.
    NotRequired,
}

/// The capabilities this driver reads (current values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    pub log_max_cq_sz: u32,
    pub log_max_eq_sz: u32,
    pub striding_rq: bool,
    pub cmdif_checksum: u32,
    pub uar_4k: bool,
    pub bf: bool,
    pub log_bf_reg_size: u32,
    pub log_min_stride_sz_rq: u32,
    pub log_max_stride_sz_rq: u32,
    pub log_max_wq_sz: u32,
    pub log_uar_page_sz: u32,
    /// `None` for a value `mlx5_ifc.h` does not define (3).
    pub wqe_inline_mode: Option<InlineCap>,
    pub reset_root_to_default: bool,
}

/// Reads `f` from a capability block; 0 if the block is too short (it never is: QUERY_HCA_CAP
/// returns 4 KiB).
pub fn read(block: &[u8], f: CapField) -> u32 {
    get_bits(block, f.bit, f.width).unwrap_or(0)
}

impl Caps {
    /// Parses the current general, Ethernet offload and flow table capability blocks.
    pub fn parse(general: &[u8], eth: &[u8], flow_table: &[u8]) -> Caps {
        use self::general as g;
        let r = |f| read(general, f);
        Caps {
            log_max_cq_sz: r(g::LOG_MAX_CQ_SZ),
            log_max_eq_sz: r(g::LOG_MAX_EQ_SZ),
            striding_rq: r(g::STRIDING_RQ) != 0,
            cmdif_checksum: r(g::CMDIF_CHECKSUM),
            uar_4k: r(g::UAR_4K) != 0,
            bf: r(g::BF) != 0,
            log_bf_reg_size: r(g::LOG_BF_REG_SIZE),
            log_min_stride_sz_rq: r(g::LOG_MIN_STRIDE_SZ_RQ),
            log_max_stride_sz_rq: r(g::LOG_MAX_STRIDE_SZ_RQ),
            log_max_wq_sz: r(g::LOG_MAX_WQ_SZ),
            log_uar_page_sz: r(g::LOG_UAR_PAGE_SZ),
            wqe_inline_mode: match read(eth, self::eth::WQE_INLINE_MODE) {
                0 => Some(InlineCap::L2),
                1 => Some(InlineCap::VportContext),
                2 => Some(InlineCap::NotRequired),
                _ => None,
            },
            reset_root_to_default: read(flow_table, flow::NIC_RX_RESET_ROOT_TO_DEFAULT) != 0,
        }
    }

    /// Bytes of one UAR page: 4 KiB with `uar_4k`, else `4 KiB << log_uar_page_sz` (Linux
    /// `uar2pfn` in `drivers/net/ethernet/mellanox/mlx5/core/uar.c`). UAR `n` starts at BAR0
    /// offset `n` times this.
    pub fn uar_page_bytes(&self) -> u64 {
        if self.uar_4k {
            4096
        } else {
            4096u64 << self.log_uar_page_sz.min(20)
        }
    }

    /// Bytes of one of the two BlueFlame buffers the send doorbell alternates between: half
    /// of `1 << log_bf_reg_size` (rdma-core `providers/mlx5/mlx5.c`: `bf_reg_size / 2`; the
    /// doorbell toggles its offset by this, `qp.c`), 0 without BlueFlame (`bf` = 0): the
    /// doorbell then always goes to the first.
    pub fn bf_half(&self) -> u32 {
        if self.bf {
            (1u32 << self.log_bf_reg_size.min(16)) / 2
        } else {
            0
        }
    }
}

impl fmt::Display for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inline = match self.wqe_inline_mode {
            Some(InlineCap::L2) => "0 (L2 headers)",
            Some(InlineCap::VportContext) => "1 (vport context)",
            Some(InlineCap::NotRequired) => "2 (not required)",
            None => "3 (undefined)",
        };
        write!(
            f,
            "uar_4k {} log_uar_page_sz {} (UAR page {} B), bf {} log_bf_reg_size {} (BlueFlame halves of {} B), \
             log_max_wq_sz {}, log_max_cq_sz {}, log_max_eq_sz {}, striding_rq {}, \
             stride sizes 2^{}..=2^{}, wqe_inline_mode {inline}, reset_root_to_default {}, cmdif_checksum {}",
            u8::from(self.uar_4k),
            self.log_uar_page_sz,
            self.uar_page_bytes(),
            u8::from(self.bf),
            self.log_bf_reg_size,
            self.bf_half(),
            self.log_max_wq_sz,
            self.log_max_cq_sz,
            self.log_max_eq_sz,
            u8::from(self.striding_rq),
            self.log_min_stride_sz_rq,
            self.log_max_stride_sz_rq,
            u8::from(self.reset_root_to_default),
            self.cmdif_checksum,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlx5::layout::set_bits;

    fn put(block: &mut [u8], f: CapField, v: u32) {
        assert!(set_bits(block, f.bit, f.width, v));
    }

    #[test]
    fn fields_are_read_where_mlx5_ifc_puts_them() {
        let (mut g, mut e, mut t) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
        put(&mut g, general::LOG_BF_REG_SIZE, 9);
        put(&mut g, general::BF, 1);
        put(&mut g, general::LOG_MAX_WQ_SZ, 16);
        put(&mut g, general::LOG_UAR_PAGE_SZ, 4);
        put(&mut e, eth::WQE_INLINE_MODE, 1);
        put(&mut t, flow::NIC_RX_RESET_ROOT_TO_DEFAULT, 1);
        // log_bf_reg_size is bits 20:16 of dword 19; log_max_wq_sz bits 4:0 of dword 30.
        assert_eq!(g[19 * 4 + 1], 9);
        assert_eq!(g[30 * 4 + 3], 16);
        assert_eq!(e[2], 1 << 4, "wqe_inline_mode: bits 13:12 of dword 0");
        assert_eq!(t[0x40 + 1], 1 << 6, "reset_root_to_default: bit 22 of dword 16");
        let c = Caps::parse(&g, &e, &t);
        assert_eq!((c.log_bf_reg_size, c.bf_half()), (9, 256));
        assert_eq!(c.uar_page_bytes(), 64 << 10, "no uar_4k: 4 KiB << log_uar_page_sz");
        assert_eq!(c.wqe_inline_mode, Some(InlineCap::VportContext));
        assert!(c.reset_root_to_default);
        let shown = c.to_string();
        assert!(shown.contains("log_bf_reg_size 9 (BlueFlame halves of 256 B)"), "{shown}");
        assert!(shown.contains("wqe_inline_mode 1 (vport context)"), "{shown}");
    }

    #[test]
    fn no_blueflame_means_one_doorbell_buffer() {
        let mut g = vec![0u8; 4096];
        put(&mut g, general::LOG_BF_REG_SIZE, 9);
        put(&mut g, general::UAR_4K, 1);
        put(&mut g, general::LOG_UAR_PAGE_SZ, 4);
        let c = Caps::parse(&g, &[0; 4096], &[0; 4096]);
        assert_eq!(c.bf_half(), 0, "bf = 0");
        assert_eq!(c.uar_page_bytes(), 4096, "uar_4k");
    }
}
