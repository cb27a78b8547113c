//! The host side of the command interface, written for these tests from the public layouts:
//! host memory the device reaches through the IOMMU, a command queue with mailbox chains
//! (optionally malformed), firmware pages, bring-up and EQs.

use erpc_driver::mmio::RegisterIo;
use erpc_hugepages::{DmaMemory, DmaSpace, PageSize};
use erpc_tests::mlx5_model::layout::{
    self, cap_gen, cmd_entry as ce, create_eq, eqc, eqe, hca_cap, iseg, mailbox as mb, manage_pages, op, query_pages,
};
use erpc_tests::mlx5_model::{Mlx5Config, Mlx5Model};
use std::sync::Arc;

/// Host memory the test owns, written and read through raw pointers (the device may write it).
pub(crate) fn poke(m: &DmaMemory, off: usize, data: &[u8]) {
    assert!(off + data.len() <= m.len());
    // SAFETY: in bounds of a live mapping; the model only touches it inside our own calls.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), m.vaddr().as_ptr().add(off), data.len()) }
}

pub(crate) fn peek(m: &DmaMemory, off: usize, len: usize) -> Vec<u8> {
    assert!(off + len <= m.len());
    let mut v = vec![0u8; len];
    // SAFETY: as in `poke`.
    unsafe { std::ptr::copy_nonoverlapping(m.vaddr().as_ptr().add(off), v.as_mut_ptr(), len) }
    v
}

/// A completed command as the host sees it.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) own: u8,
    pub(crate) delivery: u8,
    pub(crate) out: Vec<u8>,
}

impl Done {
    pub(crate) fn status(&self) -> u8 {
        self.out[0]
    }
    pub(crate) fn syndrome(&self) -> u32 {
        layout::get32(&self.out, 4)
    }
    pub(crate) fn ok(self) -> Vec<u8> {
        assert_eq!((self.own, self.delivery, self.status(), self.syndrome()), (0, 0, 0, 0), "{self:?}");
        self.out
    }
    pub(crate) fn failed(&self) -> (u8, u32) {
        assert_eq!((self.own, self.delivery), (0, 0));
        (self.status(), self.syndrome())
    }
}

/// How to lay out one command (defaults: a correct one).
pub(crate) struct Cmd<'a> {
    pub(crate) input: &'a [u8],
    pub(crate) ilen: Option<usize>,
    pub(crate) olen: usize,
    pub(crate) owner: u8,
    pub(crate) slot: u32,
    /// Corruptions of the input chain: (block, field) overrides.
    pub(crate) bad_block_num: Option<usize>,
    pub(crate) bad_token: Option<usize>,
    pub(crate) cut_chain_after: Option<usize>,
    pub(crate) iptr_offset: u64,
}

impl<'a> Cmd<'a> {
    pub(crate) fn new(input: &'a [u8], olen: usize) -> Cmd<'a> {
        Cmd {
            input,
            ilen: None,
            olen,
            owner: 1,
            slot: 0,
            bad_block_num: None,
            bad_token: None,
            cut_chain_after: None,
            iptr_offset: 0,
        }
    }
}

pub(crate) struct Host {
    pub(crate) model: Mlx5Model,
    pub(crate) space: Arc<DmaSpace>,
    pub(crate) cmdq: DmaMemory,
    pub(crate) inbox: DmaMemory,
    pub(crate) outbox: DmaMemory,
    pub(crate) token: u8,
    /// Firmware pages given (kept alive until the test ends).
    pub(crate) page_mem: Vec<DmaMemory>,
}

pub(crate) const BLOCK_STRIDE: usize = 1024;

impl Host {
    pub(crate) fn new(cfg: Mlx5Config) -> Host {
        let (model, space) = Mlx5Model::with_dma(cfg);
        let mem = |n| space.alloc(n, PageSize::Ordinary).unwrap();
        Host { cmdq: mem(4096), inbox: mem(64 << 10), outbox: mem(64 << 10), model, space, token: 0, page_mem: vec![] }
    }

    pub(crate) fn reg(&self, off: u32) -> u32 {
        self.model.read32(off).swap_bytes()
    }

    pub(crate) fn set_reg(&self, off: u32, v: u32) {
        self.model.write32(off, v.swap_bytes())
    }

    /// Firmware-ready wait and the command queue address, as a driver does first.
    pub(crate) fn start(&self) {
        let mut n = 0;
        while self.reg(iseg::INITIALIZING) >> 31 != 0 {
            n += 1;
            assert!(n < 100, "firmware never ready");
        }
        let a = self.cmdq.iova();
        self.set_reg(iseg::CMDQ_ADDR_H, (a >> 32) as u32);
        self.set_reg(iseg::CMDQ_ADDR_L_SZ, a as u32);
    }

    pub(crate) fn exec(&mut self, c: Cmd) -> Done {
        self.token = self.token.wrapping_add(1).max(1);
        let token = self.token;
        let ilen = c.ilen.unwrap_or(c.input.len());
        let mut input = c.input.to_vec();
        input.resize(ilen.max(ce::INLINE), 0);
        // Input chain.
        let in_blocks = ilen.saturating_sub(ce::INLINE).div_ceil(mb::DATA);
        for b in 0..in_blocks {
            let mut blk = vec![0u8; mb::SIZE];
            let at = ce::INLINE + b * mb::DATA;
            let n = (ilen - at).min(mb::DATA);
            blk[..n].copy_from_slice(&input[at..at + n]);
            let next = if b + 1 < in_blocks && c.cut_chain_after != Some(b) {
                self.inbox.iova() + ((b + 1) * BLOCK_STRIDE) as u64
            } else {
                0
            };
            layout::set64(&mut blk, mb::NEXT, next);
            let num = if c.bad_block_num == Some(b) { b as u32 + 7 } else { b as u32 };
            layout::set32(&mut blk, mb::BLOCK_NUM, num);
            blk[mb::TOKEN] = if c.bad_token == Some(b) { token ^ 0x55 } else { token };
            poke(&self.inbox, b * BLOCK_STRIDE, &blk);
        }
        // Output chain.
        let out_blocks = c.olen.saturating_sub(ce::INLINE).div_ceil(mb::DATA);
        for b in 0..out_blocks {
            let mut blk = vec![0u8; mb::SIZE];
            let next = if b + 1 < out_blocks { self.outbox.iova() + ((b + 1) * BLOCK_STRIDE) as u64 } else { 0 };
            layout::set64(&mut blk, mb::NEXT, next);
            layout::set32(&mut blk, mb::BLOCK_NUM, b as u32);
            blk[mb::TOKEN] = token;
            poke(&self.outbox, b * BLOCK_STRIDE, &blk);
        }
        let mut e = [0u8; ce::SIZE];
        e[ce::TYPE] = ce::TYPE_PCI;
        layout::set32(&mut e, ce::ILEN, ilen as u32);
        layout::set64(&mut e, ce::IPTR, self.inbox.iova() + c.iptr_offset);
        e[ce::IN..ce::IN + ce::INLINE].copy_from_slice(&input[..ce::INLINE]);
        layout::set64(&mut e, ce::OPTR, self.outbox.iova());
        layout::set32(&mut e, ce::OLEN, c.olen as u32);
        e[ce::TOKEN] = token;
        e[ce::STATUS_OWN] = c.owner;
        let slot_off = c.slot as usize * ce::SIZE;
        poke(&self.cmdq, slot_off, &e);
        self.set_reg(iseg::CMD_DBELL, 1 << c.slot);
        let e = peek(&self.cmdq, slot_off, ce::SIZE);
        let mut out = e[ce::OUT..ce::OUT + ce::INLINE].to_vec();
        for b in 0..out_blocks {
            let at = ce::INLINE + b * mb::DATA;
            let n = (c.olen - at).min(mb::DATA);
            out.extend_from_slice(&peek(&self.outbox, b * BLOCK_STRIDE, n));
        }
        Done { own: e[ce::STATUS_OWN] & 1, delivery: e[ce::STATUS_OWN] >> 1, out }
    }

    /// A correct command of `input` with an output of `olen` bytes.
    pub(crate) fn cmd(&mut self, input: &[u8], olen: usize) -> Done {
        self.exec(Cmd::new(input, olen))
    }

    pub(crate) fn pages_query(&mut self, op_mod: u16) -> u32 {
        let out = self.cmd(&inbox(op::QUERY_PAGES, op_mod, 16), 16).ok();
        layout::get(&out, query_pages::NUM_PAGES)
    }

    /// New mapped pages, given with MANAGE_PAGES.
    pub(crate) fn give_pages(&mut self, n: usize) -> Done {
        let m = self.space.alloc(n * 4096, PageSize::Ordinary).unwrap();
        let list: Vec<u64> = (0..n).map(|k| m.iova() + 4096 * k as u64).collect();
        self.page_mem.push(m);
        self.give_list(&list)
    }

    pub(crate) fn give_list(&mut self, pages: &[u64]) -> Done {
        let mut i = inbox(op::MANAGE_PAGES, manage_pages::GIVE, manage_pages::PAS + 8 * pages.len());
        layout::set(&mut i, manage_pages::INPUT_NUM_ENTRIES, pages.len() as u32);
        for (k, p) in pages.iter().enumerate() {
            layout::set64(&mut i, manage_pages::PAS + 8 * k, *p);
        }
        self.cmd(&i, 16)
    }

    pub(crate) fn take_pages(&mut self, n: usize) -> Vec<u64> {
        let mut i = inbox(op::MANAGE_PAGES, manage_pages::TAKE, 16);
        layout::set(&mut i, manage_pages::INPUT_NUM_ENTRIES, n as u32);
        let out = self.cmd(&i, manage_pages::PAS + 8 * n).ok();
        let got = layout::get(&out, manage_pages::OUTPUT_NUM_ENTRIES) as usize;
        (0..got).map(|k| layout::get64(&out, manage_pages::PAS + 8 * k)).collect()
    }

    pub(crate) fn simple(&mut self, opcode: u16) -> Vec<u8> {
        self.cmd(&inbox(opcode, 0, 16), 16).ok()
    }

    pub(crate) fn obj(&mut self, opcode: u16) -> u32 {
        layout::get(&self.simple(opcode), layout::OBJ_NUMBER)
    }

    pub(crate) fn free_obj(&mut self, opcode: u16, n: u32) -> Done {
        let mut i = inbox(opcode, 0, 16);
        layout::set(&mut i, layout::OBJ_NUMBER, n);
        self.cmd(&i, 16)
    }

    pub(crate) fn query_cap(&mut self, cap_type: u16, cur: bool) -> Vec<u8> {
        let out = self.cmd(&inbox(op::QUERY_HCA_CAP, cap_type << 1 | u16::from(cur), 16), 0x1010).ok();
        out[hca_cap::CAPABILITY..].to_vec()
    }

    /// ENABLE_HCA .. INIT_HCA, as Linux and rdma-core order it.
    pub(crate) fn bring_up(&mut self) {
        self.bring_up_setting_caps(true)
    }

    /// ENABLE_HCA .. INIT_HCA, with or without SET_HCA_CAP (which sets `log_max_qp` and 4 KiB
    /// UAR pages).
    pub(crate) fn bring_up_setting_caps(&mut self, set_caps: bool) {
        self.start();
        self.simple(op::ENABLE_HCA);
        let out = self.cmd(&inbox(op::QUERY_ISSI, 0, 16), 0x70).ok();
        assert_eq!(layout::get(&out, layout::issi::SUPPORTED_ISSI_DW0) & 2, 2, "ISSI 1 supported");
        let mut i = inbox(op::SET_ISSI, 0, 16);
        layout::set(&mut i, layout::issi::CURRENT_ISSI, 1);
        self.cmd(&i, 16).ok();
        let boot = self.pages_query(query_pages::BOOT) as usize;
        self.give_pages(boot).ok();
        if set_caps {
            let cur = self.query_cap(hca_cap::GENERAL, true);
            let mut set = inbox(op::SET_HCA_CAP, hca_cap::GENERAL << 1, 0x1010);
            set[hca_cap::CAPABILITY..].copy_from_slice(&cur);
            layout::set(&mut set[hca_cap::CAPABILITY..], cap_gen::LOG_MAX_QP, 16);
            layout::set(&mut set[hca_cap::CAPABILITY..], cap_gen::LOG_UAR_PAGE_SZ, 0);
            self.cmd(&set, 16).ok();
        }
        let init = self.pages_query(query_pages::INIT) as usize;
        self.give_pages(init).ok();
        self.simple(op::INIT_HCA);
    }

    /// ALLOC_UAR + CREATE_EQ of 2^log_size entries subscribed to `mask`, its buffer's owner bits
    /// initialised to 1. Returns (eqn, uar, buffer).
    pub(crate) fn create_eq(&mut self, log_size: u32, mask: u64) -> (u8, u32, DmaMemory) {
        let uar = self.obj(op::ALLOC_UAR);
        let buf = self.space.alloc(64 << log_size, PageSize::Ordinary).unwrap();
        for k in 0..1usize << log_size {
            poke(&buf, k * 64 + eqe::OWNER, &[1]);
        }
        let npages = (64usize << log_size).div_ceil(4096);
        let mut i = inbox(op::CREATE_EQ, 0, create_eq::PAS + 8 * npages);
        let c = |f: layout::Field| f.at(create_eq::EQC_BIT);
        layout::set(&mut i, c(eqc::LOG_EQ_SIZE), log_size);
        layout::set(&mut i, c(eqc::UAR_PAGE), uar);
        layout::set(&mut i, c(eqc::INTR), 1);
        layout::set64(&mut i, create_eq::EVENT_BITMASK, mask);
        for k in 0..npages {
            layout::set64(&mut i, create_eq::PAS + 8 * k, buf.iova() + 4096 * k as u64);
        }
        let out = self.cmd(&i, 16).ok();
        (layout::get(&out, create_eq::EQ_NUMBER) as u8, uar, buf)
    }

    pub(crate) fn eq_doorbell(&self, uar: u32, eqn: u8, ci: u32, arm: bool) {
        let off = uar * 4096 + if arm { layout::uar::EQ_ARM } else { layout::uar::EQ_UPDATE_CI };
        self.set_reg(off, (u32::from(eqn) << 24) | (ci & 0xff_ffff));
    }
}

/// An input of `len` bytes with the opcode and op_mod set.
pub(crate) fn inbox(opcode: u16, op_mod: u16, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(16)];
    layout::set(&mut v, layout::mbox_in::OPCODE, u32::from(opcode));
    layout::set(&mut v, layout::mbox_in::OP_MOD, u32::from(op_mod));
    v
}
