//! The HCA's state machine, page accounting, objects and event queues: what each command does.

use super::cmd::{fail, Fail};
use super::layout::{
    self, access_reg, cap_eth, cap_flow, cap_gen, create_eq, eqc, eqe, hca_cap, issi, manage_pages, op, query_pages,
    special_contexts, status, teardown, uar, vport, ADAPTER_PAGE, HCA_FUNCTION_ID, OBJ_NUMBER,
};
use super::{syndrome as syn, Device, Eq, Mlx5Config, ViolationKind};

/// Bring-up state (PRM "HCA Driver Start-up"; Linux `mlx5_function_setup` / `_teardown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HcaState {
    /// Power-on, or after DISABLE_HCA: only ENABLE_HCA is accepted.
    Disabled,
    /// After ENABLE_HCA (or TEARDOWN_HCA): ISSI, pages, capabilities, INIT_HCA, DISABLE_HCA.
    Enabled,
    /// After INIT_HCA: objects may be created.
    Initialized,
}

/// EQ numbers start here (any number is legal; not 0, so a driver that assumes 0 is caught).
const FIRST_EQN: u8 = 4;
/// The fill the device writes into each firmware page it takes.
const PAGE_FILL: u8 = 0xf7;

/// The capabilities of a ConnectX-5-like Ethernet device, with [`Mlx5Config::caps`] applied:
/// maximum and power-on current general capabilities, Ethernet offloads, flow tables.
pub(crate) fn default_caps(cfg: &Mlx5Config) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let c = &cfg.caps;
    let mut g = vec![0u8; hca_cap::CAP_SIZE];
    let s = |g: &mut Vec<u8>, fld, v| layout::set(g, fld, v);
    s(&mut g, cap_gen::LOG_MAX_QP, 17);
    s(&mut g, cap_gen::LOG_MAX_CQ_SZ, u32::from(c.log_max_cq_sz));
    s(&mut g, cap_gen::LOG_MAX_CQ, 16);
    s(&mut g, cap_gen::LOG_MAX_EQ_SZ, 22);
    s(&mut g, cap_gen::LOG_MAX_MKEY, 24);
    s(&mut g, cap_gen::LOG_MAX_EQ, 4);
    s(&mut g, cap_gen::NIC_FLOW_TABLE, 1);
    s(&mut g, cap_gen::PORT_TYPE, 1);
    s(&mut g, cap_gen::NUM_PORTS, 1);
    s(&mut g, cap_gen::LOG_MAX_MSG, 30);
    s(&mut g, cap_gen::CQE_VERSION, 1);
    s(&mut g, cap_gen::STRIDING_RQ, u32::from(c.striding_rq));
    s(&mut g, cap_gen::CMDIF_CHECKSUM, 0);
    s(&mut g, cap_gen::ETH_NET_OFFLOADS, 1);
    s(&mut g, cap_gen::UAR_4K, u32::from(c.uar_4k));
    s(&mut g, cap_gen::UAR_SZ, (cfg.bar_len >> 20).max(1).trailing_zeros());
    s(&mut g, cap_gen::LOG_PG_SZ, 12);
    s(&mut g, cap_gen::BF, u32::from(c.log_bf_reg_size.is_some()));
    s(&mut g, cap_gen::LOG_BF_REG_SIZE, u32::from(c.log_bf_reg_size.unwrap_or(0)));
    s(&mut g, cap_gen::LOG_MAX_TRANSPORT_DOMAIN, 16);
    s(&mut g, cap_gen::LOG_MAX_PD, 16);
    s(&mut g, cap_gen::LOG_MAX_RQ, 16);
    s(&mut g, cap_gen::LOG_MAX_SQ, 16);
    s(&mut g, cap_gen::LOG_MAX_TIR, 16);
    s(&mut g, cap_gen::LOG_MAX_TIS, 16);
    s(&mut g, cap_gen::LOG_MAX_RQT, 16);
    s(&mut g, cap_gen::LOG_MAX_RQT_SIZE, 8);
    s(&mut g, cap_gen::EXT_STRIDE_NUM_RANGE, 1);
    s(&mut g, cap_gen::LOG_MAX_STRIDE_SZ_RQ, u32::from(c.stride_sz_rq.1));
    s(&mut g, cap_gen::LOG_MIN_STRIDE_SZ_RQ, u32::from(c.stride_sz_rq.0));
    s(&mut g, cap_gen::LOG_MAX_STRIDE_SZ_SQ, 13);
    s(&mut g, cap_gen::LOG_MIN_STRIDE_SZ_SQ, 6);
    s(&mut g, cap_gen::LOG_MAX_WQ_SZ, u32::from(c.log_max_wq_sz));
    s(&mut g, cap_gen::MAX_NUM_EQS, 16);
    s(&mut g, cap_gen::LOG_UAR_PAGE_SZ, u32::from(c.log_uar_page_sz));
    s(&mut g, cap_gen::DEVICE_FREQUENCY_KHZ, 156_250);
    s(&mut g, cap_gen::NUM_OF_UARS_PER_PAGE, 1);
    let mut e = vec![0u8; hca_cap::CAP_SIZE];
    s(&mut e, cap_eth::CSUM_CAP, 1);
    s(&mut e, cap_eth::VLAN_CAP, 1);
    s(&mut e, cap_eth::MAX_LSO_CAP, 18);
    // A required minimum inline mode is published through the vport context.
    let inline_mode = if cfg.min_inline_mode != 0 { 1 } else { cfg.wqe_inline_mode };
    s(&mut e, cap_eth::WQE_INLINE_MODE, u32::from(inline_mode));
    s(&mut e, cap_eth::RSS_IND_TBL_CAP, 8);
    s(&mut e, cap_eth::SCATTER_FCS, 1);
    let mut t = vec![0u8; hca_cap::CAP_SIZE];
    let rx = |f: layout::Field| f.at(cap_flow::NIC_RX_BIT);
    s(&mut t, rx(cap_flow::FT_SUPPORT), 1);
    s(&mut t, rx(cap_flow::RESET_ROOT_TO_DEFAULT), u32::from(c.reset_root_to_default));
    s(&mut t, rx(cap_flow::LOG_MAX_FT_SIZE), super::steering::LOG_MAX_FT_SIZE);
    s(&mut t, rx(cap_flow::MAX_FT_LEVEL), 1);
    (g.clone(), g, e, t)
}

impl Device {
    /// Bytes of a UAR page, from the current general capabilities (Linux `uar2pfn`,
    /// `drivers/net/ethernet/mellanox/mlx5/core/uar.c`): 4 KiB with `uar_4k`, else
    /// `4 KiB << log_uar_page_sz`.
    pub(crate) fn uar_page(&self) -> u32 {
        if layout::get(&self.caps_gen_cur, cap_gen::UAR_4K) != 0 {
            ADAPTER_PAGE as u32
        } else {
            (ADAPTER_PAGE as u32) << layout::get(&self.caps_gen_cur, cap_gen::LOG_UAR_PAGE_SZ).min(16)
        }
    }

    /// The first UAR index ALLOC_UAR hands out: the first page above the initialization
    /// segment (0x0000..0x2010).
    pub(crate) fn first_uar(&self) -> u32 {
        layout::iseg::END.div_ceil(self.uar_page())
    }

    /// Bytes of each of the two BlueFlame buffers at UAR + 0x800: half of `1 <<
    /// log_bf_reg_size`; 0 without BlueFlame (`bf` = 0): only the 8-byte doorbell.
    pub(crate) fn bf_half(&self) -> u32 {
        if layout::get(&self.caps_gen_cur, cap_gen::BF) == 0 {
            return 0;
        }
        (1u32 << layout::get(&self.caps_gen_cur, cap_gen::LOG_BF_REG_SIZE).min(16)) / 2
    }

    /// The BlueFlame buffer `in_page` falls in: (its offset in the page, its size).
    pub(crate) fn bf_buffer(&self, in_page: u32) -> Option<(u32, u32)> {
        let half = self.bf_half();
        if half == 0 {
            return (uar::BF_0..uar::BF_0 + 8).contains(&in_page).then_some((uar::BF_0, 8));
        }
        let k = in_page.checked_sub(uar::BF_0)? / half;
        (k < 2).then_some((uar::BF_0 + k * half, half))
    }
}

fn need_state(have: HcaState, want: HcaState) -> Result<(), Fail> {
    if have == want {
        Ok(())
    } else {
        fail(status::BAD_SYS_STATE, syn::BAD_STATE)
    }
}

fn need_enabled(have: HcaState) -> Result<(), Fail> {
    if have == HcaState::Disabled {
        fail(status::BAD_SYS_STATE, syn::BAD_STATE)
    } else {
        Ok(())
    }
}

/// Pages an EQ of `log_size` entries spans from `page_offset` (64-byte units) with pages of
/// 4 KiB << `log_page_size`.
fn eq_pages(log_size: u32, log_page_size: u32, page_offset: u32) -> usize {
    let page = ADAPTER_PAGE << log_page_size;
    let bytes = u64::from(page_offset) * 64 + ((eqe::SIZE as u64) << log_size);
    bytes.div_ceil(page) as usize
}

impl Device {
    /// (minimum input length, minimum output length) of `opcode`; `None`: not a command the
    /// device knows (BAD_OP).
    pub(crate) fn lengths(&self, opcode: u16, input: &[u8]) -> Option<(usize, usize)> {
        const H: usize = 0x10;
        Some(match opcode {
            op::ENABLE_HCA | op::DISABLE_HCA | op::SET_ISSI | op::QUERY_PAGES | op::INIT_HCA | op::TEARDOWN_HCA => {
                (H, H)
            }
            op::QUERY_ISSI => (H, issi::QUERY_OUT_SIZE),
            op::MANAGE_PAGES => {
                let n = layout::get(input, manage_pages::INPUT_NUM_ENTRIES) as usize;
                match layout::get(input, layout::mbox_in::OP_MOD) as u16 {
                    manage_pages::GIVE => (manage_pages::PAS + 8 * n, H),
                    manage_pages::TAKE => (H, manage_pages::PAS + 8 * n),
                    _ => (H, H),
                }
            }
            op::QUERY_HCA_CAP => (H, hca_cap::CAPABILITY + hca_cap::CAP_SIZE),
            op::SET_HCA_CAP => (hca_cap::CAPABILITY + hca_cap::CAP_SIZE, H),
            op::ALLOC_UAR | op::DEALLOC_UAR | op::ALLOC_PD | op::DEALLOC_PD => (H, H),
            op::ALLOC_TRANSPORT_DOMAIN | op::DEALLOC_TRANSPORT_DOMAIN | op::DESTROY_EQ => (H, H),
            op::CREATE_EQ => {
                let c = |fld: layout::Field| layout::get(input, fld.at(create_eq::EQC_BIT));
                let n = eq_pages(c(eqc::LOG_EQ_SIZE), c(eqc::LOG_PAGE_SIZE), c(eqc::PAGE_OFFSET));
                (create_eq::PAS + 8 * n, H)
            }
            op::QUERY_SPECIAL_CONTEXTS => (H, special_contexts::OUT_SIZE),
            op::QUERY_NIC_VPORT_CONTEXT => (H, vport::QUERY_OUT_SIZE),
            op::MODIFY_NIC_VPORT_CONTEXT => (vport::MODIFY_IN_SIZE, H),
            op::ACCESS_REG => (access_reg::DATA + access_reg::PMTU_SIZE, access_reg::DATA + access_reg::PMTU_SIZE),
            _ => return self.queue_lengths(opcode, input),
        })
    }

    pub(crate) fn dispatch(&mut self, opcode: u16, op_mod: u16, i: &[u8], out: &mut [u8]) -> Result<(), Fail> {
        let st = self.state;
        match opcode {
            op::ENABLE_HCA => {
                need_state(st, HcaState::Disabled)?;
                self.function_zero(i)?;
                self.state = HcaState::Enabled;
                self.leaked_at_teardown = None;
                self.page_target = self.initial_page_target();
            }
            op::DISABLE_HCA => {
                need_state(st, HcaState::Enabled)?;
                self.function_zero(i)?;
                if self.leaked_at_teardown.is_none() {
                    self.leaked_at_teardown = Some(self.objects());
                }
                self.state = HcaState::Disabled;
                self.issi = 0;
                self.caps_gen_cur = self.caps_gen_boot.clone();
            }
            op::QUERY_ISSI => {
                need_enabled(st)?;
                layout::set(out, issi::CURRENT_ISSI, u32::from(self.issi));
                layout::set(out, issi::SUPPORTED_ISSI_DW0, 0b11);
            }
            op::SET_ISSI => {
                need_state(st, HcaState::Enabled)?;
                let v = layout::get(i, issi::CURRENT_ISSI);
                if v > 1 {
                    return fail(status::BAD_PARAM, syn::BAD_ISSI);
                }
                self.issi = v as u16;
            }
            op::QUERY_PAGES => {
                need_enabled(st)?;
                self.function_zero(i)?;
                if !(query_pages::BOOT..=query_pages::REGULAR).contains(&op_mod) {
                    return fail(status::BAD_PARAM, syn::BAD_OP_MOD);
                }
                layout::set(out, query_pages::FUNCTION_ID, 0);
                layout::set(out, query_pages::NUM_PAGES, self.pages_needed(op_mod) as u32);
            }
            op::MANAGE_PAGES => {
                need_enabled(st)?;
                self.manage_pages(op_mod, i, out)?;
            }
            op::QUERY_HCA_CAP => {
                need_enabled(st)?;
                let cap = match (op_mod >> 1, op_mod & 1) {
                    (hca_cap::GENERAL, 0) => &self.caps_gen_max,
                    (hca_cap::GENERAL, _) => &self.caps_gen_cur,
                    (hca_cap::ETHERNET_OFFLOADS, _) => &self.caps_eth,
                    (hca_cap::FLOW_TABLE, _) => &self.caps_flow,
                    _ => return fail(status::BAD_PARAM, syn::BAD_OP_MOD),
                };
                out[hca_cap::CAPABILITY..hca_cap::CAPABILITY + hca_cap::CAP_SIZE].copy_from_slice(cap);
            }
            op::SET_HCA_CAP => {
                need_state(st, HcaState::Enabled)?;
                self.set_hca_cap(op_mod, i)?;
            }
            op::INIT_HCA => {
                need_state(st, HcaState::Enabled)?;
                let need = u64::from(self.cfg.boot_pages) + u64::from(self.cfg.init_pages);
                if (self.pages.len() as u64) < need {
                    return fail(status::BAD_SYS_STATE, syn::PAGES_MISSING);
                }
                self.state = HcaState::Initialized;
                self.leaked_at_teardown = None;
            }
            op::TEARDOWN_HCA => {
                need_state(st, HcaState::Initialized)?;
                match layout::get(i, teardown::PROFILE) {
                    teardown::GRACEFUL_CLOSE | teardown::FORCE_CLOSE => {}
                    _ => return fail(status::BAD_PARAM, syn::BAD_PROFILE),
                }
                // Firmware frees whatever is left; the report remembers it.
                self.leaked_at_teardown = Some(self.objects());
                self.uars.clear();
                self.eqs.clear();
                self.pds.clear();
                self.tds.clear();
                self.clear_queues();
                self.page_target = self.initial_page_target();
                self.state = HcaState::Enabled;
                layout::set(out, teardown::STATE, 0);
            }
            op::ALLOC_UAR => {
                need_state(st, HcaState::Initialized)?;
                let last = self.cfg.bar_len / self.uar_page();
                let Some(u) = (self.first_uar()..last).find(|u| !self.uars.contains(u)) else {
                    return fail(status::LIM, syn::LIMIT);
                };
                self.uars.insert(u);
                layout::set(out, OBJ_NUMBER, u);
            }
            op::DEALLOC_UAR => {
                need_state(st, HcaState::Initialized)?;
                let u = layout::get(i, OBJ_NUMBER);
                if !self.uars.contains(&u) {
                    return fail(status::BAD_RES, syn::NO_SUCH_OBJECT);
                }
                if self.eqs.values().any(|e| e.uar == u) || self.uar_in_use(u) {
                    return fail(status::BAD_RES_STATE, syn::OBJECT_IN_USE);
                }
                self.uars.remove(&u);
            }
            op::ALLOC_PD | op::ALLOC_TRANSPORT_DOMAIN => {
                need_state(st, HcaState::Initialized)?;
                let (set, next, log_max) = if opcode == op::ALLOC_PD {
                    (&mut self.pds, &mut self.next_pd, layout::get(&self.caps_gen_cur, cap_gen::LOG_MAX_PD))
                } else {
                    (
                        &mut self.tds,
                        &mut self.next_td,
                        layout::get(&self.caps_gen_cur, cap_gen::LOG_MAX_TRANSPORT_DOMAIN),
                    )
                };
                if set.len() as u64 >= 1 << log_max {
                    return fail(status::LIM, syn::LIMIT);
                }
                while set.contains(next) || *next == 0 {
                    *next = (*next + 1) & 0xff_ffff;
                }
                let n = *next;
                *next = (n + 1) & 0xff_ffff;
                set.insert(n);
                layout::set(out, OBJ_NUMBER, n);
            }
            op::DEALLOC_PD | op::DEALLOC_TRANSPORT_DOMAIN => {
                need_state(st, HcaState::Initialized)?;
                let n = layout::get(i, OBJ_NUMBER);
                let pd = opcode == op::DEALLOC_PD;
                let exists = if pd { self.pds.contains(&n) } else { self.tds.contains(&n) };
                if !exists {
                    return fail(status::BAD_RES, syn::NO_SUCH_OBJECT);
                }
                if (pd && self.pd_in_use(n)) || (!pd && self.td_in_use(n)) {
                    return fail(status::BAD_RES_STATE, syn::OBJECT_IN_USE);
                }
                if pd {
                    self.pds.remove(&n);
                } else {
                    self.tds.remove(&n);
                }
            }
            op::CREATE_EQ => {
                need_state(st, HcaState::Initialized)?;
                let eqn = self.create_eq(i)?;
                layout::set(out, create_eq::EQ_NUMBER, u32::from(eqn));
            }
            op::DESTROY_EQ => {
                need_state(st, HcaState::Initialized)?;
                let eqn = layout::get(i, create_eq::EQ_NUMBER) as u8;
                if !self.eqs.contains_key(&eqn) {
                    return fail(status::BAD_RES, syn::NO_SUCH_OBJECT);
                }
                if self.eq_in_use(eqn) {
                    return fail(status::BAD_RES_STATE, syn::OBJECT_IN_USE);
                }
                self.eqs.remove(&eqn);
            }
            op::QUERY_SPECIAL_CONTEXTS => {
                need_state(st, HcaState::Initialized)?;
                layout::set(out, special_contexts::DUMP_FILL_MKEY, 0x200);
                layout::set(out, special_contexts::RESD_LKEY, self.cfg.resd_lkey);
                layout::set(out, special_contexts::NULL_MKEY, 0x300);
            }
            op::QUERY_NIC_VPORT_CONTEXT => {
                need_state(st, HcaState::Initialized)?;
                self.own_vport(i)?;
                let ctx = &mut out[vport::QUERY_OUT_CTX..vport::QUERY_OUT_SIZE];
                layout::set(ctx, vport::MIN_WQE_INLINE_MODE, u32::from(self.vport_min_inline));
                layout::set(ctx, vport::MTU, u32::from(self.vport_mtu));
                let (uc, mc, all) = self.vport_promisc;
                layout::set(ctx, vport::PROMISC_UC, u32::from(uc));
                layout::set(ctx, vport::PROMISC_MC, u32::from(mc));
                layout::set(ctx, vport::PROMISC_ALL, u32::from(all));
                let m = self.vport_mac;
                layout::set(ctx, vport::MAC_47_32, u32::from(u16::from_be_bytes([m[0], m[1]])));
                layout::set(ctx, vport::MAC_31_0, u32::from_be_bytes([m[2], m[3], m[4], m[5]]));
            }
            op::MODIFY_NIC_VPORT_CONTEXT => {
                need_state(st, HcaState::Initialized)?;
                self.own_vport(i)?;
                self.modify_vport(i)?;
            }
            op::ACCESS_REG => {
                need_state(st, HcaState::Initialized)?;
                self.access_reg(op_mod, i, out)?;
            }
            _ => return self.queue_dispatch(opcode, op_mod, i, out),
        }
        Ok(())
    }

    /// Commands that name a function must name ours (function 0, not an embedded CPU).
    fn function_zero(&self, i: &[u8]) -> Result<(), Fail> {
        if layout::get(i, HCA_FUNCTION_ID) != 0 || layout::get(i, layout::EMBEDDED_CPU_FUNCTION) != 0 {
            return fail(status::BAD_PARAM, syn::BAD_FUNCTION);
        }
        Ok(())
    }

    fn own_vport(&self, i: &[u8]) -> Result<(), Fail> {
        if layout::get(i, vport::OTHER_VPORT) != 0 || layout::get(i, vport::VPORT_NUMBER) != 0 {
            return fail(status::BAD_PARAM, syn::OTHER_VPORT);
        }
        Ok(())
    }

    /// Pages QUERY_PAGES reports for `op_mod` (boot, init, regular): what the stage needs in
    /// all, less what the device holds.
    pub(crate) fn pages_needed(&self, op_mod: u16) -> u64 {
        let c = &self.cfg;
        let mut want = u64::from(c.boot_pages);
        if op_mod >= query_pages::INIT {
            want += u64::from(c.init_pages);
        }
        let held = self.pages.len() as u64;
        if op_mod >= query_pages::REGULAR {
            return (self.page_target.max(0) as u64).saturating_sub(held);
        }
        want.saturating_sub(held)
    }

    /// Pages the device wants in all when nothing has been requested since start-up.
    pub(crate) fn initial_page_target(&self) -> i64 {
        let c = &self.cfg;
        i64::from(c.boot_pages) + i64::from(c.init_pages) + i64::from(c.regular_pages)
    }

    fn manage_pages(&mut self, op_mod: u16, i: &[u8], out: &mut [u8]) -> Result<(), Fail> {
        if layout::get(i, manage_pages::FUNCTION_ID) != 0 || layout::get(i, layout::EMBEDDED_CPU_FUNCTION) != 0 {
            return fail(status::BAD_PARAM, syn::BAD_FUNCTION);
        }
        let n = layout::get(i, manage_pages::INPUT_NUM_ENTRIES) as usize;
        match op_mod {
            manage_pages::CANT_GIVE => {
                // The driver could not allocate what a page request asked for: firmware makes do.
                self.page_target = self.page_target.min(self.pages.len() as i64);
            }
            manage_pages::GIVE => {
                let list: Vec<u64> = (0..n).map(|k| layout::get64(i, manage_pages::PAS + 8 * k)).collect();
                let mut seen = std::collections::BTreeSet::new();
                for &p in &list {
                    if p % ADAPTER_PAGE != 0 {
                        return fail(status::BAD_PARAM, syn::PAGE_UNALIGNED);
                    }
                    if self.pages.contains(&p) || !seen.insert(p) {
                        return fail(status::BAD_PARAM, syn::PAGE_DUPLICATE);
                    }
                }
                // Firmware takes the pages into use: every one must be reachable.
                for &p in &list {
                    if !self.iommu.is_mapped(p, ADAPTER_PAGE as usize) {
                        let _ = self.dma_write(p, &[PAGE_FILL; ADAPTER_PAGE as usize]);
                        return fail(status::BAD_PARAM, syn::PAGE_FAULT);
                    }
                }
                for &p in &list {
                    self.dma_write(p, &[PAGE_FILL; ADAPTER_PAGE as usize]);
                    self.pages.insert(p);
                }
            }
            manage_pages::TAKE => {
                // While initialized firmware gives back only what it asked to return.
                let may = if self.state == HcaState::Initialized {
                    (self.pages.len() as i64 - self.page_target).max(0) as usize
                } else {
                    self.pages.len()
                };
                let give_back: Vec<u64> = self.pages.iter().rev().take(n.min(may)).copied().collect();
                for (k, &p) in give_back.iter().enumerate() {
                    self.pages.remove(&p);
                    layout::set64(out, manage_pages::PAS + 8 * k, p);
                }
                layout::set(out, manage_pages::OUTPUT_NUM_ENTRIES, give_back.len() as u32);
            }
            _ => return fail(status::BAD_PARAM, syn::BAD_OP_MOD),
        }
        Ok(())
    }

    fn set_hca_cap(&mut self, op_mod: u16, i: &[u8]) -> Result<(), Fail> {
        let cap = &i[hca_cap::CAPABILITY..hca_cap::CAPABILITY + hca_cap::CAP_SIZE];
        if op_mod & 1 != 0 {
            return fail(status::BAD_PARAM, syn::BAD_OP_MOD);
        }
        if layout::get(i, layout::f(0x40, 1)) != 0 || layout::get(i, HCA_FUNCTION_ID) != 0 {
            return fail(status::BAD_PARAM, syn::BAD_FUNCTION);
        }
        match op_mod >> 1 {
            hca_cap::GENERAL => {
                let max = &self.caps_gen_max;
                let qp = layout::get(cap, cap_gen::LOG_MAX_QP);
                let csum = layout::get(cap, cap_gen::CMDIF_CHECKSUM);
                let uar_pg = layout::get(cap, cap_gen::LOG_UAR_PAGE_SZ);
                if qp > layout::get(max, cap_gen::LOG_MAX_QP)
                    || csum > layout::get(max, cap_gen::CMDIF_CHECKSUM)
                    || uar_pg != 0
                {
                    return fail(status::BAD_PARAM, syn::CAP_VALUE);
                }
                // The fields a driver may set; everything else keeps its current value.
                let cur = &mut self.caps_gen_cur;
                layout::set(cur, cap_gen::LOG_MAX_QP, qp);
                layout::set(cur, cap_gen::CMDIF_CHECKSUM, csum);
                layout::set(cur, cap_gen::LOG_UAR_PAGE_SZ, uar_pg);
                layout::set(cur, cap_gen::CACHE_LINE_128BYTE, layout::get(cap, cap_gen::CACHE_LINE_128BYTE));
                layout::set(cur, cap_gen::PKEY_TABLE_SIZE, layout::get(cap, cap_gen::PKEY_TABLE_SIZE));
            }
            // Nothing to set among the Ethernet offloads the model has.
            hca_cap::ETHERNET_OFFLOADS => {}
            _ => return fail(status::BAD_PARAM, syn::BAD_OP_MOD),
        }
        Ok(())
    }

    fn create_eq(&mut self, i: &[u8]) -> Result<u8, Fail> {
        let c = |fld: layout::Field| layout::get(i, fld.at(create_eq::EQC_BIT));
        let log_size = c(eqc::LOG_EQ_SIZE);
        let log_page_size = c(eqc::LOG_PAGE_SIZE);
        let page_offset = c(eqc::PAGE_OFFSET);
        let uar_page = c(eqc::UAR_PAGE);
        let vector = c(eqc::INTR);
        if c(eqc::STATUS) != 0 || c(eqc::ST) != 0 || c(eqc::CONSUMER_COUNTER) != 0 || c(eqc::PRODUCER_COUNTER) != 0 {
            return fail(status::BAD_PARAM, syn::RESERVED_SET);
        }
        if log_size > layout::get(&self.caps_gen_cur, cap_gen::LOG_MAX_EQ_SZ) {
            return fail(status::BAD_PARAM, syn::EQ_SIZE);
        }
        if vector >= self.cfg.msix_vectors {
            return fail(status::BAD_PARAM, syn::EQ_VECTOR);
        }
        if !self.uars.contains(&uar_page) {
            return fail(status::BAD_RES, syn::NO_SUCH_OBJECT);
        }
        let page = ADAPTER_PAGE << log_page_size;
        if u64::from(page_offset) * 64 >= page {
            return fail(status::BAD_PARAM, syn::EQ_PAS);
        }
        let n = eq_pages(log_size, log_page_size, page_offset);
        let pas: Vec<u64> = (0..n).map(|k| layout::get64(i, create_eq::PAS + 8 * k)).collect();
        if pas.iter().any(|p| p % page != 0) {
            return fail(status::BAD_PARAM, syn::EQ_PAS);
        }
        let max = layout::get(&self.caps_gen_cur, cap_gen::MAX_NUM_EQS) as usize;
        if self.eqs.len() >= max {
            return fail(status::LIM, syn::LIMIT);
        }
        let Some(eqn) = (FIRST_EQN..=u8::MAX).find(|e| !self.eqs.contains_key(e)) else {
            return fail(status::LIM, syn::LIMIT);
        };
        let mut mask = [0u64; 4];
        for (k, m) in mask.iter_mut().enumerate() {
            *m = layout::get64(i, create_eq::EVENT_BITMASK + 8 * k);
        }
        self.eqs.insert(
            eqn,
            Eq {
                log_size,
                uar: uar_page,
                vector,
                mask,
                log_page_size,
                page_offset,
                pas,
                overrun_ignore: c(eqc::OI) != 0,
                producer: 0,
                consumer: 0,
                armed: false,
                overrun: false,
            },
        );
        Ok(eqn)
    }

    fn modify_vport(&mut self, i: &[u8]) -> Result<(), Fail> {
        let sel = layout::get(i, vport::FIELD_SELECT);
        let ctx = &i[vport::MODIFY_IN_CTX..vport::MODIFY_IN_SIZE];
        if sel & vport::SEL_MTU != 0 {
            let mtu = layout::get(ctx, vport::MTU) as u16;
            if !(68..=self.cfg.port_max_mtu).contains(&mtu) {
                return fail(status::BAD_PARAM, syn::BAD_MTU);
            }
            self.vport_mtu = mtu;
        }
        if sel & vport::SEL_PERMANENT_ADDRESS != 0 {
            let hi = (layout::get(ctx, vport::MAC_47_32) as u16).to_be_bytes();
            let lo = layout::get(ctx, vport::MAC_31_0).to_be_bytes();
            self.vport_mac = [hi[0], hi[1], lo[0], lo[1], lo[2], lo[3]];
        }
        if sel & vport::SEL_PROMISC != 0 {
            self.vport_promisc = (
                layout::get(ctx, vport::PROMISC_UC) != 0,
                layout::get(ctx, vport::PROMISC_MC) != 0,
                layout::get(ctx, vport::PROMISC_ALL) != 0,
            );
        }
        if sel & vport::SEL_MIN_INLINE != 0 {
            self.vport_min_inline = layout::get(ctx, vport::MIN_WQE_INLINE_MODE) as u8;
        }
        // Other selected fields (addresses list, events, RoCE, loopback) are accepted and not
        // modelled.
        Ok(())
    }

    fn access_reg(&mut self, op_mod: u16, i: &[u8], out: &mut [u8]) -> Result<(), Fail> {
        if layout::get(i, access_reg::REGISTER_ID) != access_reg::PMTU {
            return fail(status::BAD_PARAM, syn::BAD_REGISTER);
        }
        let data = &i[access_reg::DATA..access_reg::DATA + access_reg::PMTU_SIZE];
        if layout::get(data, access_reg::PMTU_LOCAL_PORT) != 1 {
            return fail(status::BAD_PARAM, syn::BAD_REGISTER);
        }
        match op_mod {
            access_reg::WRITE => {
                let mtu = layout::get(data, access_reg::PMTU_ADMIN_MTU) as u16;
                if !(68..=self.cfg.port_max_mtu).contains(&mtu) {
                    return fail(status::BAD_PARAM, syn::BAD_MTU);
                }
                self.port_admin_mtu = mtu;
            }
            access_reg::READ => {}
            _ => return fail(status::BAD_PARAM, syn::BAD_OP_MOD),
        }
        let o = &mut out[access_reg::DATA..access_reg::DATA + access_reg::PMTU_SIZE];
        layout::set(o, access_reg::PMTU_LOCAL_PORT, 1);
        layout::set(o, access_reg::PMTU_MAX_MTU, u32::from(self.cfg.port_max_mtu));
        layout::set(o, access_reg::PMTU_ADMIN_MTU, u32::from(self.port_admin_mtu));
        layout::set(o, access_reg::PMTU_OPER_MTU, u32::from(self.port_admin_mtu));
        Ok(())
    }

    /// Writes an EQE of `ty` with `data` (at most 28 bytes) into the first EQ subscribed to it;
    /// `false` when none is.
    pub(crate) fn post_event(&mut self, ty: u8, data: &[u8]) -> bool {
        let Some((&eqn, _)) = self.eqs.iter().find(|(_, e)| ty < 64 && e.mask[0] & (1 << ty) != 0) else {
            return false;
        };
        let Some(e) = self.eqs.get_mut(&eqn) else { return false };
        let nent = 1u32 << e.log_size;
        if e.producer.wrapping_sub(e.consumer) >= nent && !e.overrun_ignore {
            e.overrun = true;
            self.violation(ViolationKind::EqOverrun, format!("EQ {eqn:#x} full ({nent} entries unconsumed)"));
            return true;
        }
        let index = e.producer & (nent - 1);
        let off = u64::from(e.page_offset) * 64 + u64::from(index) * eqe::SIZE as u64;
        let page = ADAPTER_PAGE << e.log_page_size;
        let iova = e.pas.get((off / page) as usize).copied().unwrap_or(0) + off % page;
        let mut q = [0u8; eqe::SIZE];
        q[eqe::TYPE] = ty;
        q[eqe::DATA..eqe::DATA + data.len()].copy_from_slice(data);
        let owner = (e.producer >> e.log_size) & 1;
        q[eqe::OWNER] = owner as u8;
        e.producer = e.producer.wrapping_add(1);
        let (armed, vector) = (e.armed, e.vector);
        e.armed = false;
        // Body first, owner byte last, as a device publishes an entry.
        if self.dma_write(iova, &q[..eqe::OWNER]) {
            self.dma_write(iova + eqe::OWNER as u64, &q[eqe::OWNER..]);
        }
        if armed {
            if let Some(c) = self.interrupts.get_mut(vector as usize) {
                *c += 1;
            }
        }
        true
    }

    /// A command completion EQE for `slot`, when an EQ subscribes to them.
    pub(crate) fn post_cmd_completion(&mut self, slot: u32) {
        self.post_event(eqe::TYPE_CMD, &(1u32 << slot).to_be_bytes());
    }

    pub(crate) fn request_pages(&mut self, n: i32) -> Result<(), String> {
        if self.state != HcaState::Initialized {
            return Err(format!("page request in state {:?}", self.state));
        }
        let mut data = [0u8; 8];
        data[eqe::PAGE_REQ_FUNC_ID - eqe::DATA..][..2].copy_from_slice(&0u16.to_be_bytes());
        data[eqe::PAGE_REQ_NUM_PAGES - eqe::DATA..][..4].copy_from_slice(&n.to_be_bytes());
        if !self.post_event(eqe::TYPE_PAGE_REQUEST, &data) {
            return Err("no EQ subscribes to page requests (event 0x0b)".into());
        }
        self.page_target += i64::from(n);
        Ok(())
    }

    /// A 64-bit write to a UAR page (`w0` at `off`, `w1` at `off + 4`, big-endian values): a
    /// send doorbell arrives whole; anything else is taken as its two halves, in order.
    pub(crate) fn uar_write64(&mut self, off: u32, w0: u32, w1: u32) {
        let index = off / self.uar_page();
        let in_page = off % self.uar_page();
        if off % 8 == 0 && self.uars.contains(&index) && self.bf_buffer(in_page).is_some() {
            self.bf_write64(index, in_page, w0, w1);
            return;
        }
        self.uar_write(off, w0);
        self.uar_write(off.wrapping_add(4), w1);
    }

    /// A write to a UAR page (big-endian value).
    pub(crate) fn uar_write(&mut self, off: u32, be: u32) {
        let index = off / self.uar_page();
        let in_page = off % self.uar_page();
        if !self.uars.contains(&index) {
            self.violation(ViolationKind::Uar, format!("write at {off:#x}: UAR {index:#x} is not allocated"));
            return;
        }
        match in_page {
            uar::EQ_ARM | uar::EQ_UPDATE_CI => {
                let eqn = (be >> 24) as u8;
                let ci = be & 0xff_ffff;
                let Some(e) = self.eqs.get_mut(&eqn) else {
                    self.violation(
                        ViolationKind::EqDoorbell,
                        format!("EQ doorbell for EQ {eqn:#x}, which does not exist"),
                    );
                    return;
                };
                if e.uar != index {
                    let u = e.uar;
                    self.violation(
                        ViolationKind::EqDoorbell,
                        format!("EQ {eqn:#x} doorbell rung on UAR {index:#x}, created on UAR {u:#x}"),
                    );
                    return;
                }
                // Counters are 24 bits: compare modulo 2^24.
                let ahead = ci.wrapping_sub(e.consumer & 0xff_ffff) & 0xff_ffff;
                let avail = e.producer.wrapping_sub(e.consumer) & 0xff_ffff;
                if ahead > avail {
                    let p = e.producer;
                    self.violation(
                        ViolationKind::EqDoorbell,
                        format!("EQ {eqn:#x} consumer index {ci:#x} ahead of the producer {p:#x}"),
                    );
                    return;
                }
                e.consumer = e.consumer.wrapping_add(ahead);
                if in_page == uar::EQ_ARM {
                    e.armed = true;
                    // Entries already waiting interrupt at once.
                    if e.producer != e.consumer {
                        e.armed = false;
                        let v = e.vector as usize;
                        if let Some(c) = self.interrupts.get_mut(v) {
                            *c += 1;
                        }
                    }
                }
            }
            o if self.bf_buffer(o).is_some() => self.bf_write(index, in_page, be),
            _ => self.violation(
                ViolationKind::Unmodelled,
                format!("write {be:#x} at UAR {index:#x} offset {in_page:#x} (not modelled)"),
            ),
        }
    }
}
