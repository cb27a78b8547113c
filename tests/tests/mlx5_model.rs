//! The mlx5 device model's own tests: a small hand-written host side drives the command
//! interface through the model's BAR and IOMMU, and checks what the device answers and records.

use erpc_driver::mmio::{RegisterIo, RegisterIo64};
use erpc_hugepages::{DmaMemory, DmaSpace, PageSize};
use erpc_tests::mlx5_model::layout::{
    self, cap_eth, cap_gen, cmd_entry as ce, create_eq, delivery, eqc, eqe, hca_cap, iseg, mailbox as mb, manage_pages,
    op, query_pages, status, vport,
};
use erpc_tests::mlx5_model::{syndrome, HcaState, Mlx5Config, Mlx5Model, ViolationKind};
use std::sync::Arc;

/// Host memory the test owns, written and read through raw pointers (the device may write it).
fn poke(m: &DmaMemory, off: usize, data: &[u8]) {
    assert!(off + data.len() <= m.len());
    // SAFETY: in bounds of a live mapping; the model only touches it inside our own calls.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), m.vaddr().as_ptr().add(off), data.len()) }
}

fn peek(m: &DmaMemory, off: usize, len: usize) -> Vec<u8> {
    assert!(off + len <= m.len());
    let mut v = vec![0u8; len];
    // SAFETY: as in `poke`.
    unsafe { std::ptr::copy_nonoverlapping(m.vaddr().as_ptr().add(off), v.as_mut_ptr(), len) }
    v
}

/// A completed command as the host sees it.
#[derive(Debug)]
struct Done {
    own: u8,
    delivery: u8,
    out: Vec<u8>,
}

impl Done {
    fn status(&self) -> u8 {
        self.out[0]
    }
    fn syndrome(&self) -> u32 {
        layout::get32(&self.out, 4)
    }
    fn ok(self) -> Vec<u8> {
        assert_eq!((self.own, self.delivery, self.status(), self.syndrome()), (0, 0, 0, 0), "{self:?}");
        self.out
    }
    fn failed(&self) -> (u8, u32) {
        assert_eq!((self.own, self.delivery), (0, 0));
        (self.status(), self.syndrome())
    }
}

/// How to lay out one command (defaults: a correct one).
struct Cmd<'a> {
    input: &'a [u8],
    ilen: Option<usize>,
    olen: usize,
    owner: u8,
    slot: u32,
    /// Corruptions of the input chain: (block, field) overrides.
    bad_block_num: Option<usize>,
    bad_token: Option<usize>,
    cut_chain_after: Option<usize>,
    iptr_offset: u64,
}

impl<'a> Cmd<'a> {
    fn new(input: &'a [u8], olen: usize) -> Cmd<'a> {
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

struct Host {
    model: Mlx5Model,
    space: Arc<DmaSpace>,
    cmdq: DmaMemory,
    inbox: DmaMemory,
    outbox: DmaMemory,
    token: u8,
    /// Firmware pages given (kept alive until the test ends).
    page_mem: Vec<DmaMemory>,
}

const BLOCK_STRIDE: usize = 1024;

impl Host {
    fn new(cfg: Mlx5Config) -> Host {
        let (model, space) = Mlx5Model::with_dma(cfg);
        let mem = |n| space.alloc(n, PageSize::Ordinary).unwrap();
        Host { cmdq: mem(4096), inbox: mem(64 << 10), outbox: mem(64 << 10), model, space, token: 0, page_mem: vec![] }
    }

    fn reg(&self, off: u32) -> u32 {
        self.model.read32(off).swap_bytes()
    }

    fn set_reg(&self, off: u32, v: u32) {
        self.model.write32(off, v.swap_bytes())
    }

    /// Firmware-ready wait and the command queue address, as a driver does first.
    fn start(&self) {
        let mut n = 0;
        while self.reg(iseg::INITIALIZING) >> 31 != 0 {
            n += 1;
            assert!(n < 100, "firmware never ready");
        }
        let a = self.cmdq.iova();
        self.set_reg(iseg::CMDQ_ADDR_H, (a >> 32) as u32);
        self.set_reg(iseg::CMDQ_ADDR_L_SZ, a as u32);
    }

    fn exec(&mut self, c: Cmd) -> Done {
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
    fn cmd(&mut self, input: &[u8], olen: usize) -> Done {
        self.exec(Cmd::new(input, olen))
    }

    fn pages_query(&mut self, op_mod: u16) -> u32 {
        let out = self.cmd(&inbox(op::QUERY_PAGES, op_mod, 16), 16).ok();
        layout::get(&out, query_pages::NUM_PAGES)
    }

    /// New mapped pages, given with MANAGE_PAGES.
    fn give_pages(&mut self, n: usize) -> Done {
        let m = self.space.alloc(n * 4096, PageSize::Ordinary).unwrap();
        let list: Vec<u64> = (0..n).map(|k| m.iova() + 4096 * k as u64).collect();
        self.page_mem.push(m);
        self.give_list(&list)
    }

    fn give_list(&mut self, pages: &[u64]) -> Done {
        let mut i = inbox(op::MANAGE_PAGES, manage_pages::GIVE, manage_pages::PAS + 8 * pages.len());
        layout::set(&mut i, manage_pages::INPUT_NUM_ENTRIES, pages.len() as u32);
        for (k, p) in pages.iter().enumerate() {
            layout::set64(&mut i, manage_pages::PAS + 8 * k, *p);
        }
        self.cmd(&i, 16)
    }

    fn take_pages(&mut self, n: usize) -> Vec<u64> {
        let mut i = inbox(op::MANAGE_PAGES, manage_pages::TAKE, 16);
        layout::set(&mut i, manage_pages::INPUT_NUM_ENTRIES, n as u32);
        let out = self.cmd(&i, manage_pages::PAS + 8 * n).ok();
        let got = layout::get(&out, manage_pages::OUTPUT_NUM_ENTRIES) as usize;
        (0..got).map(|k| layout::get64(&out, manage_pages::PAS + 8 * k)).collect()
    }

    fn simple(&mut self, opcode: u16) -> Vec<u8> {
        self.cmd(&inbox(opcode, 0, 16), 16).ok()
    }

    fn obj(&mut self, opcode: u16) -> u32 {
        layout::get(&self.simple(opcode), layout::OBJ_NUMBER)
    }

    fn free_obj(&mut self, opcode: u16, n: u32) -> Done {
        let mut i = inbox(opcode, 0, 16);
        layout::set(&mut i, layout::OBJ_NUMBER, n);
        self.cmd(&i, 16)
    }

    fn query_cap(&mut self, cap_type: u16, cur: bool) -> Vec<u8> {
        let out = self.cmd(&inbox(op::QUERY_HCA_CAP, cap_type << 1 | u16::from(cur), 16), 0x1010).ok();
        out[hca_cap::CAPABILITY..].to_vec()
    }

    /// ENABLE_HCA .. INIT_HCA, as Linux and rdma-core order it.
    fn bring_up(&mut self) {
        self.bring_up_setting_caps(true)
    }

    /// ENABLE_HCA .. INIT_HCA, with or without SET_HCA_CAP (which sets `log_max_qp` and 4 KiB
    /// UAR pages).
    fn bring_up_setting_caps(&mut self, set_caps: bool) {
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
    fn create_eq(&mut self, log_size: u32, mask: u64) -> (u8, u32, DmaMemory) {
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

    fn eq_doorbell(&self, uar: u32, eqn: u8, ci: u32, arm: bool) {
        let off = uar * 4096 + if arm { layout::uar::EQ_ARM } else { layout::uar::EQ_UPDATE_CI };
        self.set_reg(off, (u32::from(eqn) << 24) | (ci & 0xff_ffff));
    }
}

/// An input of `len` bytes with the opcode and op_mod set.
fn inbox(opcode: u16, op_mod: u16, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.max(16)];
    layout::set(&mut v, layout::mbox_in::OPCODE, u32::from(opcode));
    layout::set(&mut v, layout::mbox_in::OP_MOD, u32::from(op_mod));
    v
}

#[test]
fn init_segment_reads_as_the_device_defines_it() {
    let h = Host::new(Mlx5Config { ready_after_reads: Some(3), ..Mlx5Config::default() });
    assert_eq!(h.reg(iseg::FW_REV), (35 << 16) | 16, "minor 35 << 16 | major 16");
    assert_eq!(h.reg(iseg::CMDIF_REV_FW_SUB), (5 << 16) | 1012, "cmdif rev 5, sub-minor 1012");
    assert_eq!(h.reg(iseg::CMDQ_ADDR_L_SZ) & 0xff, 0x56, "log_cmdq_size 5, log_cmdq_stride 6");
    // The raw little-endian view is the byte-swapped big-endian field.
    assert_eq!(h.model.read32(iseg::CMDIF_REV_FW_SUB), ((5 << 16) | 1012u32).swap_bytes());
    let busy: Vec<u32> = (0..5).map(|_| h.reg(iseg::INITIALIZING) >> 31).collect();
    assert_eq!(busy, [1, 1, 1, 0, 0], "ready after three reads");
    let c1 = h.reg(iseg::HEALTH_COUNTER);
    let c2 = h.reg(iseg::HEALTH_COUNTER);
    assert_eq!(c2, c1 + 1, "the health counter advances while firmware lives");
    h.model.set_health_syndrome(0x0a, 0x1234);
    assert_eq!((h.reg(0x23C) >> 16) & 0xff, 0x0a, "syndrome byte at 0x23D");
    assert_eq!(h.reg(0x23C) & 0xffff, 0x1234, "ext_synd at 0x23E");
    let c3 = h.reg(iseg::HEALTH_COUNTER);
    assert_eq!(h.reg(iseg::HEALTH_COUNTER), c3, "a dead firmware's counter stands still");
    // A write to a read-only register is recorded.
    h.set_reg(iseg::FW_REV, 0);
    assert_eq!(h.model.violations()[0].kind, ViolationKind::Register);
    // `nic_interface` is bits 10:8 of cmdq_addr_l_sz (Linux `mlx5_get_nic_state`: `>> 8 & 7`):
    // a driver must leave all three at 0 (full driver mode).
    h.set_reg(iseg::CMDQ_ADDR_H, 0);
    h.set_reg(iseg::CMDQ_ADDR_L_SZ, 0x10_0000 | 4 << 8);
    let v = h.model.violations();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[1].kind, v[1].detail.as_str()), (ViolationKind::CmdqAddress, "nic_interface 4 (must be 0)"));
    assert_eq!(h.reg(iseg::CMDQ_ADDR_L_SZ) >> 8 & 7, 4, "read back as written");

    let never = Host::new(Mlx5Config { ready_after_reads: None, ..Mlx5Config::default() });
    assert!((0..1000).all(|_| never.reg(iseg::INITIALIZING) >> 31 == 1), "never ready");
}

#[test]
fn full_bring_up_to_init_hca_with_pages() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    assert_eq!(h.model.state(), HcaState::Initialized);
    assert_eq!(h.model.issi(), 1);
    assert_eq!(
        h.model.opcodes(),
        [
            op::ENABLE_HCA,
            op::QUERY_ISSI,
            op::SET_ISSI,
            op::QUERY_PAGES,
            op::MANAGE_PAGES,
            op::QUERY_HCA_CAP,
            op::SET_HCA_CAP,
            op::QUERY_PAGES,
            op::MANAGE_PAGES,
            op::INIT_HCA
        ]
    );
    assert_eq!(h.model.pages_held(), 32, "8 boot + 24 init pages");
    assert_eq!(h.model.pages_outstanding(), 0);
    // The device took its pages into use through the IOMMU.
    assert!(peek(&h.page_mem[0], 0, 4096).iter().all(|&b| b == 0xf7));
    let max = h.query_cap(hca_cap::GENERAL, false);
    let cur = h.query_cap(hca_cap::GENERAL, true);
    assert_eq!(layout::get(&max, cap_gen::PORT_TYPE), 1, "Ethernet");
    assert_eq!(layout::get(&max, cap_gen::NUM_PORTS), 1);
    assert_eq!(layout::get(&max, cap_gen::LOG_MAX_EQ), 4);
    assert_eq!(layout::get(&max, cap_gen::STRIDING_RQ), 1);
    assert_eq!(layout::get(&max, cap_gen::UAR_4K), 1);
    assert_eq!(layout::get(&max, cap_gen::LOG_MAX_QP), 17);
    assert_eq!(layout::get(&cur, cap_gen::LOG_MAX_QP), 16, "SET_HCA_CAP took effect");
    let eth = h.query_cap(hca_cap::ETHERNET_OFFLOADS, true);
    assert_eq!(layout::get(&eth, cap_eth::CSUM_CAP), 1);
    assert_eq!(layout::get(&eth, cap_eth::WQE_INLINE_MODE), 2);
    assert!(h.model.violations().is_empty(), "{:?}", h.model.violations());
    assert!(h.model.iommu().faults().is_empty());
}

#[test]
fn every_command_rejects_short_inputs_and_outputs() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    // (opcode, op_mod, input length, output length) of a well-formed command.
    let table: &[(u16, u16, usize, usize)] = &[
        (op::ENABLE_HCA, 0, 16, 16),
        (op::DISABLE_HCA, 0, 16, 16),
        (op::QUERY_ISSI, 0, 16, 0x70),
        (op::SET_ISSI, 0, 16, 16),
        (op::QUERY_PAGES, 1, 16, 16),
        (op::QUERY_HCA_CAP, 1, 16, 0x1010),
        (op::SET_HCA_CAP, 0, 0x1010, 16),
        (op::INIT_HCA, 0, 16, 16),
        (op::TEARDOWN_HCA, 0, 16, 16),
        (op::ALLOC_UAR, 0, 16, 16),
        (op::DEALLOC_UAR, 0, 16, 16),
        (op::ALLOC_PD, 0, 16, 16),
        (op::DEALLOC_PD, 0, 16, 16),
        (op::ALLOC_TRANSPORT_DOMAIN, 0, 16, 16),
        (op::DEALLOC_TRANSPORT_DOMAIN, 0, 16, 16),
        (op::DESTROY_EQ, 0, 16, 16),
        (op::CREATE_EQ, 0, 0x118, 16),
        (op::QUERY_SPECIAL_CONTEXTS, 0, 16, 0x20),
        (op::QUERY_NIC_VPORT_CONTEXT, 0, 16, 0x110),
        (op::MODIFY_NIC_VPORT_CONTEXT, 0, 0x200, 16),
        (op::ACCESS_REG, 1, 0x20, 0x20),
    ];
    for &(opcode, op_mod, ilen, olen) in table {
        let i = inbox(opcode, op_mod, ilen);
        let short_in = h.exec(Cmd { ilen: Some(ilen - 4), ..Cmd::new(&i, olen) });
        assert_eq!(short_in.failed(), (status::BAD_INP_LEN, syndrome::INPUT_TOO_SHORT), "{}", op::name(opcode));
        let short_out = h.cmd(&i, olen - 4);
        assert_eq!(short_out.failed(), (status::BAD_OUTP_LEN, syndrome::OUTPUT_TOO_SHORT), "{}", op::name(opcode));
    }
    // Lengths that depend on the input: MANAGE_PAGES give and take, CREATE_EQ's page list.
    let mut give = inbox(op::MANAGE_PAGES, manage_pages::GIVE, 0x20);
    layout::set(&mut give, manage_pages::INPUT_NUM_ENTRIES, 3);
    assert_eq!(h.cmd(&give, 16).failed().0, status::BAD_INP_LEN, "3 entries need 0x28 bytes");
    let mut take = inbox(op::MANAGE_PAGES, manage_pages::TAKE, 16);
    layout::set(&mut take, manage_pages::INPUT_NUM_ENTRIES, 4);
    assert_eq!(h.cmd(&take, 0x10 + 8 * 3).failed().0, status::BAD_OUTP_LEN, "4 entries need 0x30 bytes");
    let mut eq = inbox(op::CREATE_EQ, 0, 0x118);
    layout::set(&mut eq, eqc::LOG_EQ_SIZE.at(create_eq::EQC_BIT), 7);
    assert_eq!(h.cmd(&eq, 16).failed().0, status::BAD_INP_LEN, "128 EQEs span two pages: two pas entries");
    // Not a command the model knows.
    assert_eq!(h.cmd(&inbox(0x4ff, 0, 16), 16).failed(), (status::BAD_OP, syndrome::BAD_OPCODE));
    // Nothing executed: the device is still disabled.
    assert_eq!(h.model.state(), HcaState::Disabled);
    assert!(h.model.violations().is_empty(), "{:?}", h.model.violations());
}

#[test]
fn a_doorbell_for_a_software_owned_entry_is_ignored_and_recorded() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    let d = h.exec(Cmd { owner: 0, ..Cmd::new(&inbox(op::ENABLE_HCA, 0, 16), 16) });
    assert_eq!((d.own, d.delivery), (0, 0));
    assert_eq!(d.out, [0u8; 16], "no output written");
    assert_eq!(h.model.state(), HcaState::Disabled);
    assert!(h.model.command_log().is_empty());
    let v = h.model.violations();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].kind, ViolationKind::Ownership);
    // A slot beyond log_cmdq_size and a doorbell before the queue address are recorded too.
    let h2 = Host::new(Mlx5Config { ready_after_reads: Some(0), ..Mlx5Config::default() });
    h2.set_reg(iseg::CMD_DBELL, 1);
    assert_eq!(h2.model.violations()[0].kind, ViolationKind::Doorbell);
}

#[test]
fn malformed_mailbox_chains_complete_with_delivery_errors() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    let set = inbox(op::SET_HCA_CAP, 0, 0x1010);
    let cases = [
        (Cmd { bad_block_num: Some(2), ..Cmd::new(&set, 16) }, delivery::BAD_BLK_NUM_ERR),
        (Cmd { bad_token: Some(0), ..Cmd::new(&set, 16) }, delivery::TOK_ERR),
        (Cmd { cut_chain_after: Some(3), ..Cmd::new(&set, 16) }, delivery::IN_LENGTH_ERR),
        (Cmd { iptr_offset: 0x100, ..Cmd::new(&set, 16) }, delivery::IN_PTR_ALIGN_ERR),
    ];
    for (c, want) in cases {
        let d = h.exec(c);
        assert_eq!((d.own, d.delivery), (0, want));
    }
    let log = h.model.command_log();
    assert_eq!(log.iter().map(|r| r.delivery).collect::<Vec<_>>(), [3, 2, 7, 5]);
    assert_eq!(h.model.violations().iter().filter(|v| v.kind == ViolationKind::Mailbox).count(), 4);
    // A correct chain still works afterwards (SET_HCA_CAP in Disabled: bad system state).
    assert_eq!(h.cmd(&set, 16).failed().0, status::BAD_SYS_STATE);
}

#[test]
fn a_page_outside_the_iommu_mappings_is_refused() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    h.simple(op::ENABLE_HCA);
    // A host buffer the device was never given: its virtual address as a "page address".
    let layout4k = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: a non-zero-size layout; freed below.
    let host = unsafe { std::alloc::alloc_zeroed(layout4k) };
    assert!(!host.is_null());
    let va = host as u64;
    let good = h.space.alloc(4096, PageSize::Ordinary).unwrap();
    let d = h.give_list(&[good.iova(), va]);
    assert_eq!(d.failed(), (status::BAD_PARAM, syndrome::PAGE_FAULT));
    let faults = h.model.iommu().faults();
    assert_eq!(faults.len(), 1);
    assert_eq!((faults[0].iova, faults[0].len, faults[0].write), (va, 4096, true));
    assert!(h.model.violations().iter().any(|v| v.kind == ViolationKind::IommuFault));
    // SAFETY: `host` is our 4 KiB allocation; the model never had a pointer to it.
    let untouched = unsafe { std::slice::from_raw_parts(host, 4096) }.iter().all(|&b| b == 0);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(host, layout4k) };
    assert!(untouched, "host memory behind an unmapped IOVA must not be written");
    assert!(peek(&good, 0, 4096).iter().all(|&b| b == 0), "the whole command was refused");
    assert_eq!(h.model.pages_held(), 0);
    // Unaligned and duplicate pages are bad parameters.
    assert_eq!(h.give_list(&[good.iova() + 64]).failed(), (status::BAD_PARAM, syndrome::PAGE_UNALIGNED));
    assert_eq!(h.give_list(&[good.iova(), good.iova()]).failed(), (status::BAD_PARAM, syndrome::PAGE_DUPLICATE));
    h.give_list(&[good.iova()]).ok();
    assert_eq!(h.model.pages_held(), 1);
}

#[test]
fn out_of_order_bring_up_is_bad_system_state() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    let bad = (status::BAD_SYS_STATE, syndrome::BAD_STATE);
    assert_eq!(h.cmd(&inbox(op::INIT_HCA, 0, 16), 16).failed(), bad, "INIT_HCA before ENABLE_HCA");
    assert_eq!(h.cmd(&inbox(op::QUERY_PAGES, 1, 16), 16).failed(), bad, "QUERY_PAGES before ENABLE_HCA");
    assert_eq!(h.cmd(&inbox(op::DISABLE_HCA, 0, 16), 16).failed(), bad, "DISABLE_HCA while disabled");
    h.simple(op::ENABLE_HCA);
    assert_eq!(h.cmd(&inbox(op::ENABLE_HCA, 0, 16), 16).failed(), bad, "ENABLE_HCA twice");
    assert_eq!(h.cmd(&inbox(op::ALLOC_UAR, 0, 16), 16).failed(), bad, "ALLOC_UAR before INIT_HCA");
    assert_eq!(h.cmd(&inbox(op::CREATE_EQ, 0, 0x118), 16).failed(), bad, "CREATE_EQ before INIT_HCA");
    assert_eq!(h.cmd(&inbox(op::TEARDOWN_HCA, 0, 16), 16).failed(), bad, "TEARDOWN_HCA before INIT_HCA");
    // INIT_HCA without the boot and init pages.
    assert_eq!(h.pages_query(query_pages::BOOT), 8);
    h.give_pages(8).ok();
    assert_eq!(h.pages_query(query_pages::INIT), 24);
    assert_eq!(
        h.cmd(&inbox(op::INIT_HCA, 0, 16), 16).failed(),
        (status::BAD_SYS_STATE, syndrome::PAGES_MISSING),
        "init pages missing"
    );
    h.give_pages(24).ok();
    h.simple(op::INIT_HCA);
    let mut issi = inbox(op::SET_ISSI, 0, 16);
    layout::set(&mut issi, layout::issi::CURRENT_ISSI, 1);
    assert_eq!(h.cmd(&issi, 16).failed(), bad, "SET_ISSI after INIT_HCA");
    assert_eq!(h.cmd(&inbox(op::DISABLE_HCA, 0, 16), 16).failed(), bad, "DISABLE_HCA before TEARDOWN_HCA");
    assert_eq!(h.model.state(), HcaState::Initialized);
}

#[test]
fn bad_parameters_and_handles_get_the_devices_statuses() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    h.simple(op::ENABLE_HCA);
    let mut issi = inbox(op::SET_ISSI, 0, 16);
    layout::set(&mut issi, layout::issi::CURRENT_ISSI, 2);
    assert_eq!(h.cmd(&issi, 16).failed(), (status::BAD_PARAM, syndrome::BAD_ISSI));
    let mut f = inbox(op::QUERY_PAGES, 1, 16);
    layout::set(&mut f, layout::HCA_FUNCTION_ID, 3);
    assert_eq!(h.cmd(&f, 16).failed(), (status::BAD_PARAM, syndrome::BAD_FUNCTION));
    assert_eq!(h.cmd(&inbox(op::QUERY_PAGES, 4, 16), 16).failed().0, status::BAD_PARAM);
    let mut set = inbox(op::SET_HCA_CAP, 0, 0x1010);
    layout::set(&mut set[hca_cap::CAPABILITY..], cap_gen::CMDIF_CHECKSUM, 3);
    assert_eq!(h.cmd(&set, 16).failed(), (status::BAD_PARAM, syndrome::CAP_VALUE), "checksums not supported");
    h.give_pages(32).ok();
    h.simple(op::INIT_HCA);
    assert_eq!(h.free_obj(op::DEALLOC_PD, 0x77).failed(), (status::BAD_RES, syndrome::NO_SUCH_OBJECT));
    assert_eq!(h.free_obj(op::DEALLOC_UAR, 0x77).failed().0, status::BAD_RES);
    assert_eq!(h.free_obj(op::DEALLOC_TRANSPORT_DOMAIN, 1).failed().0, status::BAD_RES);
    let mut de = inbox(op::DESTROY_EQ, 0, 16);
    layout::set(&mut de, create_eq::EQ_NUMBER, 9);
    assert_eq!(h.cmd(&de, 16).failed().0, status::BAD_RES);
    let (eqn, uar, _buf) = h.create_eq(3, 1 << eqe::TYPE_PAGE_REQUEST);
    assert_eq!(h.free_obj(op::DEALLOC_UAR, uar).failed(), (status::BAD_RES_STATE, syndrome::OBJECT_IN_USE));
    // An EQ on a UAR that does not exist, with a bad vector, too large.
    let mut eq = inbox(op::CREATE_EQ, 0, 0x118);
    let c = |f: layout::Field| f.at(create_eq::EQC_BIT);
    layout::set(&mut eq, c(eqc::LOG_EQ_SIZE), 2);
    layout::set(&mut eq, c(eqc::UAR_PAGE), 0x999);
    assert_eq!(h.cmd(&eq, 16).failed().0, status::BAD_RES);
    layout::set(&mut eq, c(eqc::UAR_PAGE), uar);
    layout::set(&mut eq, c(eqc::INTR), 200);
    assert_eq!(h.cmd(&eq, 16).failed(), (status::BAD_PARAM, syndrome::EQ_VECTOR));
    // `intr` is 12 bits (bits 11:0 of its dword in current mlx5_ifc.h): vector 0x101 is not 1.
    layout::set(&mut eq, c(eqc::INTR), 0x101);
    assert_eq!(layout::get32(&eq, 0x10 + 0x14), 0x101);
    assert_eq!(h.cmd(&eq, 16).failed(), (status::BAD_PARAM, syndrome::EQ_VECTOR));
    layout::set(&mut eq, c(eqc::INTR), 0);
    layout::set64(&mut eq, create_eq::PAS, 0x1234);
    assert_eq!(h.cmd(&eq, 16).failed(), (status::BAD_PARAM, syndrome::EQ_PAS), "unaligned EQ page");
    let mut de = inbox(op::DESTROY_EQ, 0, 16);
    layout::set(&mut de, create_eq::EQ_NUMBER, u32::from(eqn));
    h.cmd(&de, 16).ok();
    h.free_obj(op::DEALLOC_UAR, uar).ok();
}

#[test]
fn page_requests_arrive_as_eqes_with_the_right_owner_bit_across_wrap_around() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    let (eqn, uar, buf) = h.create_eq(2, 1 << eqe::TYPE_PAGE_REQUEST);
    assert_ne!(eqn, 0);
    h.eq_doorbell(uar, eqn, 0, true);
    let entry = |i: usize| peek(&buf, i * 64, 64);
    // First pass: owner 0 (software expects !!(ci & nent) = 0).
    h.model.request_pages(3).unwrap();
    let e0 = entry(0);
    assert_eq!(e0[eqe::TYPE], eqe::TYPE_PAGE_REQUEST);
    assert_eq!(layout::get32(&e0, eqe::PAGE_REQ_NUM_PAGES), 3);
    assert_eq!(u16::from_be_bytes([e0[eqe::PAGE_REQ_FUNC_ID], e0[eqe::PAGE_REQ_FUNC_ID + 1]]), 0);
    assert_eq!(e0[eqe::OWNER], 0);
    assert_eq!(entry(1)[eqe::OWNER], 1, "not yet written");
    assert_eq!(h.model.interrupts(1), 1, "armed EQ interrupted on its vector");
    assert_eq!(h.model.pages_outstanding(), 3);
    assert_eq!(h.pages_query(query_pages::REGULAR), 3);
    h.give_pages(3).ok();
    assert_eq!(h.model.pages_outstanding(), 0);
    h.eq_doorbell(uar, eqn, 1, false);
    // Three more fill the ring; the fifth wraps to entry 0 with owner 1.
    for k in 1..=3 {
        h.model.request_pages(-1).unwrap();
        assert_eq!(entry(k)[eqe::OWNER], 0);
        assert_eq!(layout::get32(&entry(k), eqe::PAGE_REQ_NUM_PAGES) as i32, -1);
    }
    assert_eq!(h.model.pages_outstanding(), -3);
    let back = h.take_pages(8);
    assert_eq!(back.len(), 3, "firmware returns only what it asked back while initialized");
    assert_eq!(h.model.pages_outstanding(), 0);
    h.eq_doorbell(uar, eqn, 4, false);
    h.model.request_pages(2).unwrap();
    assert_eq!(entry(0)[eqe::OWNER], 1, "second pass: owner 1");
    assert_eq!(layout::get32(&entry(0), eqe::PAGE_REQ_NUM_PAGES), 2);
    h.give_pages(2).ok();
    let info = h.model.eq(eqn).unwrap();
    assert_eq!((info.producer, info.consumer, info.overrun), (5, 4, false));
    // Unconsumed, the ring overruns on the fifth entry past the consumer.
    for _ in 0..4 {
        h.model.request_pages(0).unwrap();
    }
    assert!(h.model.eq(eqn).unwrap().overrun);
    assert!(h.model.violations().iter().any(|v| v.kind == ViolationKind::EqOverrun));
    // A consumer index ahead of the producer is refused.
    h.eq_doorbell(uar, eqn, 100, false);
    assert!(h.model.violations().iter().any(|v| v.kind == ViolationKind::EqDoorbell));
}

#[test]
fn command_completions_are_posted_to_an_eq_that_asks_for_them() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    let (_eqn, _uar, buf) = h.create_eq(3, 1 << eqe::TYPE_CMD);
    // CREATE_EQ itself completed after the EQ existed: entry 0 is its completion.
    let e0 = peek(&buf, 0, 64);
    assert_eq!((e0[eqe::TYPE], layout::get32(&e0, eqe::DATA), e0[eqe::OWNER]), (eqe::TYPE_CMD, 1, 0));
    h.exec(Cmd { slot: 3, ..Cmd::new(&inbox(op::ALLOC_PD, 0, 16), 16) }).ok();
    let e1 = peek(&buf, 64, 64);
    assert_eq!((e1[eqe::TYPE], layout::get32(&e1, eqe::DATA)), (eqe::TYPE_CMD, 1 << 3));
    assert!(h.model.request_pages(1).is_err(), "no EQ subscribes to page requests");
}

#[test]
fn fail_next_fails_one_command_without_effect() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    h.model.fail_next(op::ENABLE_HCA, status::RES_BUSY, 0xdead);
    assert_eq!(h.cmd(&inbox(op::ENABLE_HCA, 0, 16), 16).failed(), (status::RES_BUSY, 0xdead));
    assert_eq!(h.model.state(), HcaState::Disabled);
    h.simple(op::ENABLE_HCA);
    assert_eq!(h.model.state(), HcaState::Enabled);
    let log = h.model.command_log();
    assert_eq!(log.iter().map(|r| (r.status, r.injected)).collect::<Vec<_>>(), [(0x6, true), (0, false)]);
    // Queued failures fire in order on their own opcodes.
    h.model.fail_next(op::QUERY_PAGES, status::INT_ERR, 1);
    h.model.fail_next(op::QUERY_PAGES, status::NO_RES, 2);
    assert_eq!(h.cmd(&inbox(op::QUERY_PAGES, 1, 16), 16).failed(), (status::INT_ERR, 1));
    assert_eq!(h.cmd(&inbox(op::QUERY_PAGES, 1, 16), 16).failed(), (status::NO_RES, 2));
    assert_eq!(h.pages_query(query_pages::BOOT), 8);
}

#[test]
fn full_teardown_returns_every_page_and_object() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    let (eqn, uar, _buf) = h.create_eq(4, 1 << eqe::TYPE_PAGE_REQUEST);
    let pd = h.obj(op::ALLOC_PD);
    let td = h.obj(op::ALLOC_TRANSPORT_DOMAIN);
    assert_ne!(pd, td);
    let sc = h.cmd(&inbox(op::QUERY_SPECIAL_CONTEXTS, 0, 16), 0x20).ok();
    assert_eq!(layout::get(&sc, layout::special_contexts::RESD_LKEY), 0x100);
    // Vport: MTU and MAC.
    let mut m = inbox(op::MODIFY_NIC_VPORT_CONTEXT, 0, 0x200);
    layout::set(&mut m, vport::FIELD_SELECT, vport::SEL_MTU | vport::SEL_PERMANENT_ADDRESS);
    let ctx = vport::MODIFY_IN_CTX;
    layout::set(&mut m[ctx..], vport::MTU, 1024 + 22);
    layout::set(&mut m[ctx..], vport::MAC_47_32, 0x0211);
    layout::set(&mut m[ctx..], vport::MAC_31_0, 0x2233_4455);
    h.cmd(&m, 16).ok();
    let q = h.cmd(&inbox(op::QUERY_NIC_VPORT_CONTEXT, 0, 16), 0x110).ok();
    assert_eq!(layout::get(&q[vport::QUERY_OUT_CTX..], vport::MTU), 1046);
    assert_eq!(h.model.vport().0, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    layout::set(&mut m[ctx..], vport::MTU, 20_000);
    assert_eq!(h.cmd(&m, 16).failed(), (status::BAD_PARAM, syndrome::BAD_MTU));
    // Orderly teardown.
    h.free_obj(op::DEALLOC_TRANSPORT_DOMAIN, td).ok();
    h.free_obj(op::DEALLOC_PD, pd).ok();
    let mut de = inbox(op::DESTROY_EQ, 0, 16);
    layout::set(&mut de, create_eq::EQ_NUMBER, u32::from(eqn));
    h.cmd(&de, 16).ok();
    h.free_obj(op::DEALLOC_UAR, uar).ok();
    assert!(h.take_pages(40).is_empty(), "no pages come back while initialized unless asked");
    h.simple(op::TEARDOWN_HCA);
    let mut back = h.take_pages(20);
    back.extend(h.take_pages(20));
    assert_eq!(back.len(), 32);
    let given: std::collections::BTreeSet<u64> =
        h.page_mem.iter().flat_map(|m| (0..m.len() / 4096).map(|k| m.iova() + 4096 * k as u64)).collect();
    assert_eq!(back.iter().copied().collect::<std::collections::BTreeSet<_>>(), given);
    h.simple(op::DISABLE_HCA);
    let r = h.model.teardown_report();
    assert!(r.clean(), "{r:?}");
    assert!(h.model.violations().is_empty(), "{:?}", h.model.violations());
}

#[test]
fn a_sloppy_teardown_is_reported() {
    let mut h = Host::new(Mlx5Config::default());
    h.bring_up();
    let pd = h.obj(op::ALLOC_PD);
    h.simple(op::TEARDOWN_HCA);
    h.take_pages(10);
    h.simple(op::DISABLE_HCA);
    let r = h.model.teardown_report();
    assert!(!r.clean());
    assert!(r.disabled);
    assert_eq!(r.pages_held, 22);
    assert_eq!(r.leaked, [format!("PD {pd:#x}")]);
}

#[test]
fn a_dead_firmware_leaves_commands_with_hardware() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    h.model.set_health_syndrome(0x1, 0);
    let d = h.cmd(&inbox(op::ENABLE_HCA, 0, 16), 16);
    assert_eq!(d.own, 1, "never completed");
    assert!(h.model.command_log().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Phase 2: queues, steering and the datapath, driven by the tests' own tiny encoders.
// ---------------------------------------------------------------------------------------------

use erpc_tests::mlx5_model::layout::{
    cqc, cqe, flow, lyr_2_4, modify_q, q_counter, rqc, rqtc, sqc, tirc, tisc, wq, wqe, CQN, CTX_BIT, PAS_AT, QN,
};
use erpc_tests::mlx5_model::{CqeCorruption, Direction, QueueState};

/// The CQE software initializes its CQ with: opcode invalid, owner 1 (hardware writes owner 0
/// on the first pass).
const CQE_INIT: u8 = cqe::OP_INVALID << 4 | 1;

struct TestCq {
    cqn: u32,
    log: u32,
    buf: DmaMemory,
    db: DmaMemory,
    /// Consumer index.
    ci: u32,
}

impl TestCq {
    /// The next CQE, if software owns it (its owner bit is this pass's: `ci >> log & 1`).
    fn peek(&self) -> Option<Vec<u8>> {
        let q = peek(&self.buf, ((self.ci & ((1 << self.log) - 1)) * 64) as usize, 64);
        let own = q[cqe::OP_OWN] & 1;
        (q[cqe::OP_OWN] >> 4 != cqe::OP_INVALID && u32::from(own) == (self.ci >> self.log) & 1).then_some(q)
    }

    /// Consumes the next CQE and publishes the consumer index in the doorbell record.
    fn poll(&mut self) -> Option<Vec<u8>> {
        let q = self.peek()?;
        self.ci += 1;
        poke(&self.db, 0, &(self.ci & 0xff_ffff).to_be_bytes());
        Some(q)
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.poll()).collect()
    }
}

fn opcode(q: &[u8]) -> u8 {
    q[cqe::OP_OWN] >> 4
}

fn be16_at(q: &[u8], o: usize) -> u32 {
    u32::from(u16::from_be_bytes([q[o], q[o + 1]]))
}

struct TestSq {
    sqn: u32,
    log: u32,
    buf: DmaMemory,
    db: DmaMemory,
    data: DmaMemory,
    uar: u32,
    /// Producer counter (WQEBBs).
    pc: u32,
    /// The BlueFlame buffer the next doorbell goes to (offset from UAR + 0x800), and the
    /// distance to the other one.
    bf: u32,
    bf_step: u32,
}

struct TestRq {
    rqn: u32,
    log: u32,
    buf: DmaMemory,
    db: DmaMemory,
    data: DmaMemory,
    strides: u32,
    stride: u32,
    /// WQEs posted.
    pc: u32,
}

impl TestRq {
    fn wqe_bytes(&self) -> usize {
        (self.strides * self.stride) as usize
    }

    /// Posts `n` striding WQEs (next segment + one data segment of the WQE's strides).
    fn post(&mut self, n: u32, lkey: u32) {
        for _ in 0..n {
            let k = self.pc & ((1 << self.log) - 1);
            let mut w = [0u8; 32];
            layout::set32(&mut w, 16 + wqe::DATA_BYTE_COUNT, self.strides * self.stride);
            layout::set32(&mut w, 16 + wqe::DATA_LKEY, lkey);
            layout::set64(&mut w, 16 + wqe::DATA_ADDR, self.data.iova() + k as u64 * self.wqe_bytes() as u64);
            poke(&self.buf, k as usize * 32, &w);
            self.pc += 1;
        }
        poke(&self.db, 0, &(self.pc & 0xffff).to_be_bytes());
    }

    /// The bytes of a packet a CQE describes.
    fn packet(&self, q: &[u8], shift: usize) -> Vec<u8> {
        let len = (layout::get32(q, cqe::BYTE_CNT) & 0xffff) as usize;
        let at = be16_at(q, cqe::WQE_ID) as usize * self.wqe_bytes()
            + be16_at(q, cqe::WQE_COUNTER) as usize * self.stride as usize
            + shift;
        peek(&self.data, at, len)
    }
}

/// A brought-up device with an EQ (and its UAR), a PD, a transport domain and the reserved lkey.
struct Nic {
    h: Host,
    uar: u32,
    eqn: u8,
    pd: u32,
    td: u32,
    lkey: u32,
    _eq: DmaMemory,
}

/// A UDP/IPv4 frame of `payload` bytes from `src` to `dst` (IPv4 header checksum right, UDP
/// checksum 0).
fn udp_frame(dst: [u8; 6], src: [u8; 6], dport: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![];
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload) as u16;
    let mut ip = [0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&31850u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload).map(|k| (k * 7 + 3) as u8));
    f
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

fn cfg_mac(mac: [u8; 6]) -> Mlx5Config {
    Mlx5Config { mac, ..Mlx5Config::default() }
}

impl Nic {
    fn new(cfg: Mlx5Config) -> Nic {
        let mut h = Host::new(cfg);
        h.bring_up();
        let (eqn, uar, eq) = h.create_eq(3, 1 << 0x04);
        let pd = h.obj(op::ALLOC_PD);
        let td = h.obj(op::ALLOC_TRANSPORT_DOMAIN);
        let sc = h.cmd(&inbox(op::QUERY_SPECIAL_CONTEXTS, 0, 16), 0x20).ok();
        let lkey = layout::get(&sc, layout::special_contexts::RESD_LKEY);
        Nic { h, uar, eqn, pd, td, lkey, _eq: eq }
    }

    fn mem(&self, bytes: usize) -> DmaMemory {
        self.h.space.alloc(bytes.max(4096), PageSize::Ordinary).unwrap()
    }

    fn model(&self) -> &Mlx5Model {
        &self.h.model
    }

    fn cq_in(&self, log: u32, oi: bool, buf: u64, db: u64) -> Vec<u8> {
        let npages = (64usize << log).div_ceil(4096);
        let mut i = inbox(op::CREATE_CQ, 0, PAS_AT + 8 * npages);
        let c = |f: layout::Field| f.at(cqc::IN_CREATE_BIT);
        layout::set(&mut i, c(cqc::LOG_CQ_SIZE), log);
        layout::set(&mut i, c(cqc::UAR_PAGE), self.uar);
        layout::set(&mut i, c(cqc::C_EQN), u32::from(self.eqn));
        layout::set(&mut i, c(cqc::OI), u32::from(oi));
        layout::set64(&mut i, (cqc::IN_CREATE_BIT / 8) as usize + cqc::DBR_ADDR, db);
        for k in 0..npages {
            layout::set64(&mut i, PAS_AT + 8 * k, buf + 4096 * k as u64);
        }
        i
    }

    fn cq(&mut self, log: u32, oi: bool) -> TestCq {
        let buf = self.mem(64 << log);
        for k in 0..1usize << log {
            poke(&buf, k * 64 + cqe::OP_OWN, &[CQE_INIT]);
        }
        let db = self.mem(4096);
        let i = self.cq_in(log, oi, buf.iova(), db.iova());
        let out = self.h.cmd(&i, 16).ok();
        TestCq { cqn: layout::get(&out, CQN), log, buf, db, ci: 0 }
    }

    fn tis(&mut self) -> u32 {
        let mut i = inbox(op::CREATE_TIS, 0, tisc::IN_SIZE);
        layout::set(&mut i, tisc::TRANSPORT_DOMAIN.at(CTX_BIT), self.td);
        layout::get(&self.h.cmd(&i, 16).ok(), QN)
    }

    /// Fills the `wq` of an SQ / RQ input.
    fn wq_in(&self, i: &mut [u8], wq_type: u32, log_stride: u32, log: u32, buf: u64, db: u64) {
        let wb = CTX_BIT + sqc::WQ_BIT;
        let w = |f: layout::Field| f.at(wb);
        layout::set(i, w(wq::WQ_TYPE), wq_type);
        layout::set(i, w(wq::PD), self.pd);
        layout::set(i, w(wq::UAR_PAGE), self.uar);
        layout::set64(i, (wb / 8) as usize + wq::DBR_ADDR, db);
        layout::set(i, w(wq::LOG_WQ_STRIDE), log_stride);
        layout::set(i, w(wq::LOG_WQ_SZ), log);
        let npages = ((1usize << log) << log_stride).div_ceil(4096);
        for k in 0..npages {
            layout::set64(i, PAS_AT + 8 * k, buf + 4096 * k as u64);
        }
    }

    fn sq_in(&self, cqn: u32, tisn: u32, log: u32, buf: u64, db: u64) -> Vec<u8> {
        let npages = (64usize << log).div_ceil(4096);
        let mut i = inbox(op::CREATE_SQ, 0, PAS_AT + 8 * npages);
        let c = |f: layout::Field| f.at(CTX_BIT);
        layout::set(&mut i, c(sqc::CQN), cqn);
        layout::set(&mut i, c(sqc::TIS_LST_SZ), 1);
        layout::set(&mut i, c(sqc::TIS_NUM_0), tisn);
        layout::set(&mut i, c(sqc::FLUSH_IN_ERROR_EN), 1);
        self.wq_in(&mut i, wq::TYPE_CYCLIC, 6, log, buf, db);
        i
    }

    /// A striding RQ input: 2^(9 + strides_field) strides of 2^(6 + stride_field) bytes.
    fn rq_in(&self, cqn: u32, log: u32, strides_field: u32, stride_field: u32, buf: u64, db: u64) -> Vec<u8> {
        let npages = (32usize << log).div_ceil(4096);
        let mut i = inbox(op::CREATE_RQ, 0, PAS_AT + 8 * npages);
        layout::set(&mut i, rqc::CQN.at(CTX_BIT), cqn);
        layout::set(&mut i, rqc::VSD.at(CTX_BIT), 1);
        self.wq_in(&mut i, wq::TYPE_CYCLIC_STRIDING, 5, log, buf, db);
        let w = |f: layout::Field| f.at(CTX_BIT + rqc::WQ_BIT);
        layout::set(&mut i, w(wq::LOG_WQE_NUM_OF_STRIDES), strides_field);
        layout::set(&mut i, w(wq::LOG_WQE_STRIDE_SIZE), stride_field);
        i
    }

    fn sq(&mut self, cqn: u32, log: u32) -> TestSq {
        let tisn = self.tis();
        let (buf, db, data) = (self.mem(64 << log), self.mem(4096), self.mem(2048 << log));
        let i = self.sq_in(cqn, tisn, log, buf.iova(), db.iova());
        let sqn = layout::get(&self.h.cmd(&i, 16).ok(), QN);
        TestSq { sqn, log, buf, db, data, uar: self.uar, pc: 0, bf: 0, bf_step: 0x100 }
    }

    /// A striding RQ of 2^log WQEs, each 2^(9 + strides_field) strides of 2^(6 + stride_field)
    /// bytes.
    fn rq(&mut self, cqn: u32, log: u32, strides_field: u32, stride_field: u32) -> TestRq {
        let (strides, stride) = (512u32 << strides_field, 64u32 << stride_field);
        let (buf, db, data) = (self.mem(32 << log), self.mem(4096), self.mem(((strides * stride) as usize) << log));
        let i = self.rq_in(cqn, log, strides_field, stride_field, buf.iova(), db.iova());
        let rqn = layout::get(&self.h.cmd(&i, 16).ok(), QN);
        TestRq { rqn, log, buf, db, data, strides, stride, pc: 0 }
    }

    fn modify(&mut self, sq: bool, n: u32, from: u32, to: u32) -> Done {
        let mut i = inbox(if sq { op::MODIFY_SQ } else { op::MODIFY_RQ }, 0, PAS_AT);
        layout::set(&mut i, modify_q::CUR_STATE, from);
        layout::set(&mut i, modify_q::QN, n);
        layout::set(&mut i, sqc::STATE.at(CTX_BIT), to);
        self.h.cmd(&i, 16)
    }

    fn destroy(&mut self, opcode: u16, n: u32) -> Done {
        let mut i = inbox(opcode, 0, 16);
        layout::set(&mut i, QN, n);
        self.h.cmd(&i, 16)
    }

    fn tir_in(&self, disp: u32, target: u32) -> Vec<u8> {
        let mut i = inbox(op::CREATE_TIR, 0, tirc::IN_SIZE);
        let c = |f: layout::Field| f.at(CTX_BIT);
        layout::set(&mut i, c(tirc::DISP_TYPE), disp);
        let f = if disp == tirc::DISP_DIRECT { tirc::INLINE_RQN } else { tirc::INDIRECT_TABLE };
        layout::set(&mut i, c(f), target);
        layout::set(&mut i, c(tirc::TRANSPORT_DOMAIN), self.td);
        i
    }

    fn tir(&mut self, rqn: u32) -> u32 {
        let i = self.tir_in(tirc::DISP_DIRECT, rqn);
        layout::get(&self.h.cmd(&i, 16).ok(), QN)
    }

    fn flow_cmd(opcode: u16, table: u32) -> Vec<u8> {
        let len = if opcode == op::CREATE_FLOW_GROUP { flow::FG_IN_SIZE } else { flow::SMALL_IN_SIZE };
        let mut i = inbox(opcode, 0, len);
        layout::set(&mut i, flow::TABLE_TYPE, flow::TABLE_TYPE_NIC_RX);
        layout::set(&mut i, flow::TABLE_ID, table);
        i
    }

    fn flow_table(&mut self, log: u32) -> u32 {
        let mut i = Self::flow_cmd(op::CREATE_FLOW_TABLE, 0);
        layout::set(&mut i, flow::FT_LOG_SIZE.at(flow::FT_CTX_BIT), log);
        layout::get(&self.h.cmd(&i, 16).ok(), flow::OUT_TABLE_ID)
    }

    fn flow_group(&mut self, table: u32, start: u32, end: u32, enable: u32, mask: &[u8]) -> Done {
        let mut i = Self::flow_cmd(op::CREATE_FLOW_GROUP, table);
        layout::set(&mut i, flow::FG_START, start);
        layout::set(&mut i, flow::FG_END, end);
        layout::set(&mut i, flow::FG_CRITERIA_ENABLE, enable);
        i[flow::FG_CRITERIA..flow::FG_CRITERIA + mask.len()].copy_from_slice(mask);
        self.h.cmd(&i, 16)
    }

    #[allow(clippy::too_many_arguments)]
    fn fte(
        &mut self,
        op_mod: u16,
        table: u32,
        index: u32,
        group: u32,
        value: &[u8],
        action: u32,
        dests: &[(u32, u32)],
    ) -> Done {
        let mut i = inbox(op::SET_FLOW_TABLE_ENTRY, op_mod, flow::FTE_IN_SIZE + flow::DEST_SIZE * dests.len());
        layout::set(&mut i, flow::TABLE_TYPE, flow::TABLE_TYPE_NIC_RX);
        layout::set(&mut i, flow::TABLE_ID, table);
        layout::set(&mut i, flow::FTE_FLOW_INDEX, index);
        let fc = |f: layout::Field| f.at(flow::FTE_CTX as u32 * 8);
        layout::set(&mut i, fc(flow::FC_GROUP_ID), group);
        layout::set(&mut i, fc(flow::FC_ACTION), action);
        layout::set(&mut i, fc(flow::FC_DEST_LIST_SIZE), dests.len() as u32);
        let mv = flow::FTE_CTX + flow::FC_MATCH_VALUE;
        i[mv..mv + value.len()].copy_from_slice(value);
        for (k, &(ty, id)) in dests.iter().enumerate() {
            let d = &mut i[flow::FTE_CTX + flow::FC_DESTINATIONS + flow::DEST_SIZE * k..];
            layout::set(d, flow::DEST_TYPE, ty);
            layout::set(d, flow::DEST_ID, id);
        }
        self.h.cmd(&i, 16)
    }

    fn set_root(&mut self, table: u32) -> Done {
        let i = Self::flow_cmd(op::SET_FLOW_TABLE_ROOT, table);
        self.h.cmd(&i, 16)
    }

    /// SET_FLOW_TABLE_ROOT with `op_mod` 1: disconnect the root.
    fn disconnect_root(&mut self) -> Done {
        let mut i = Self::flow_cmd(op::SET_FLOW_TABLE_ROOT, 0);
        layout::set(&mut i, layout::mbox_in::OP_MOD, 1);
        self.h.cmd(&i, 16)
    }

    /// A root table whose one entry (index 0, a group matching nothing in particular) sends
    /// everything to `tir`. Returns (table, group).
    fn steer_all(&mut self, tir: u32) -> (u32, u32) {
        let t = self.flow_table(4);
        let g = layout::get(&self.flow_group(t, 0, 0, 0, &[]).ok(), flow::OUT_GROUP_ID);
        self.fte(0, t, 0, g, &[], flow::ACTION_FWD_DEST, &[(flow::DEST_TYPE_TIR, tir)]).ok();
        self.set_root(t).ok();
        (t, g)
    }

    /// Posts a SEND WQE: `inline` bytes of the frame in the Ethernet segment, the rest in one
    /// data segment with `lkey`; rings the BlueFlame doorbell. Returns the WQE index.
    fn send(&mut self, sq: &mut TestSq, frame: &[u8], inline: usize, signaled: bool, lkey: u32) -> u32 {
        let idx = sq.pc & 0xffff;
        let inline_units = inline.saturating_sub(2).div_ceil(16);
        let has_data = frame.len() > inline;
        let ds = 2 + inline_units + usize::from(has_data);
        let nbb = (ds * 16).div_ceil(64);
        let mut w = vec![0u8; nbb * 64];
        layout::set32(&mut w, wqe::CTRL_OPMOD_IDX_OPCODE, idx << 8 | u32::from(wqe::OPCODE_SEND));
        layout::set32(&mut w, wqe::CTRL_QPN_DS, sq.sqn << 8 | ds as u32);
        w[wqe::CTRL_FM_CE_SE] = if signaled { wqe::CE_CQ_UPDATE << wqe::CE_SHIFT } else { 0 };
        w[wqe::ETH + wqe::ETH_INLINE_HDR_SZ..][..2].copy_from_slice(&(inline as u16).to_be_bytes());
        let start = wqe::ETH + wqe::ETH_INLINE_HDR_START;
        w[start..start + inline.min(2)].copy_from_slice(&frame[..inline.min(2)]);
        if inline > 2 {
            w[32..32 + inline - 2].copy_from_slice(&frame[2..inline]);
        }
        if has_data {
            let slot = (idx as usize & ((1 << sq.log) - 1)) * 2048;
            poke(&sq.data, slot, &frame[inline..]);
            let d = &mut w[(2 + inline_units) * 16..];
            layout::set32(d, wqe::DATA_BYTE_COUNT, (frame.len() - inline) as u32);
            layout::set32(d, wqe::DATA_LKEY, lkey);
            layout::set64(d, wqe::DATA_ADDR, sq.data.iova() + slot as u64);
        }
        for k in 0..nbb {
            let bb = ((sq.pc + k as u32) & ((1 << sq.log) - 1)) as usize;
            poke(&sq.buf, bb * 64, &w[k * 64..(k + 1) * 64]);
        }
        sq.pc += nbb as u32;
        poke(&sq.db, 4, &(sq.pc & 0xffff).to_be_bytes());
        let off = sq.uar * 4096 + 0x800 + sq.bf;
        sq.bf ^= sq.bf_step;
        self.h.model.write64(off, u64::from_le_bytes(w[..8].try_into().unwrap()));
        idx
    }
}

/// A device ready to receive: RX CQ, a striding RQ (RDY, `post` WQEs posted), a TIR and a
/// catch-all root rule.
struct Rx {
    cq: TestCq,
    rq: TestRq,
    tir: u32,
}

fn rx_side(n: &mut Nic, cq_log: u32, rq_log: u32, strides_field: u32, stride_field: u32, post: u32) -> Rx {
    let cq = n.cq(cq_log, false);
    let mut rq = n.rq(cq.cqn, rq_log, strides_field, stride_field);
    n.modify(false, rq.rqn, 0, 1).ok();
    rq.post(post, n.lkey);
    let tir = n.tir(rq.rqn);
    n.steer_all(tir);
    Rx { cq, rq, tir }
}

/// TX side: a CQ of 2^cq_log entries and a RDY SQ of 2^sq_log WQEBBs.
fn tx_side(n: &mut Nic, cq_log: u32, sq_log: u32) -> (TestCq, TestSq) {
    let cq = n.cq(cq_log, false);
    let sq = n.sq(cq.cqn, sq_log);
    n.modify(true, sq.sqn, 0, 1).ok();
    (cq, sq)
}

#[test]
fn queue_commands_create_query_and_destroy_everything() {
    let mut n = Nic::new(Mlx5Config::default());
    let (txcq, sq) = tx_side(&mut n, 3, 4);
    let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
    let qc = layout::get(&n.h.cmd(&inbox(op::ALLOC_Q_COUNTER, 0, 16), 16).ok(), q_counter::ALLOC_ID);
    assert_ne!(qc, 0);
    // An RQT and an indirect TIR over the RQ.
    let mut rqt = inbox(op::CREATE_RQT, 0, rqtc::RQ_NUM_AT + 4);
    layout::set(&mut rqt, rqtc::RQT_MAX_SIZE.at(CTX_BIT), 1);
    layout::set(&mut rqt, rqtc::RQT_ACTUAL_SIZE.at(CTX_BIT), 1);
    layout::set32(&mut rqt, rqtc::RQ_NUM_AT, rx.rq.rqn);
    let rqtn = layout::get(&n.h.cmd(&rqt, 16).ok(), QN);
    let itir_in = n.tir_in(tirc::DISP_INDIRECT, rqtn);
    let itir = layout::get(&n.h.cmd(&itir_in, 16).ok(), QN);
    // Queries report what was created.
    let mut q = inbox(op::QUERY_CQ, 0, 16);
    layout::set(&mut q, CQN, txcq.cqn);
    let out = n.h.cmd(&q, PAS_AT).ok();
    assert_eq!(layout::get(&out, cqc::LOG_CQ_SIZE.at(cqc::IN_CREATE_BIT)), 3);
    assert_eq!(layout::get(&out, cqc::C_EQN.at(cqc::IN_CREATE_BIT)), u32::from(n.eqn));
    let mut q = inbox(op::QUERY_SQ, 0, 16);
    layout::set(&mut q, QN, sq.sqn);
    let out = n.h.cmd(&q, PAS_AT).ok();
    assert_eq!(layout::get(&out, sqc::STATE.at(CTX_BIT)), sqc::STATE_RDY);
    assert_eq!(layout::get(&out, sqc::CQN.at(CTX_BIT)), txcq.cqn);
    let mut q = inbox(op::QUERY_RQ, 0, 16);
    layout::set(&mut q, QN, rx.rq.rqn);
    let out = n.h.cmd(&q, PAS_AT).ok();
    assert_eq!(layout::get(&out, rqc::STATE.at(CTX_BIT)), sqc::STATE_RDY);
    assert_eq!(layout::get(&out, wq::LOG_WQE_STRIDE_SIZE.at(CTX_BIT + rqc::WQ_BIT)), 4);
    let m = n.model();
    assert_eq!(m.sq(sq.sqn).unwrap().state, QueueState::Rdy);
    let r = m.rq(rx.rq.rqn).unwrap();
    assert_eq!((r.striding.unwrap().strides, r.striding.unwrap().stride_bytes), (512, 1024));
    assert_eq!(m.tirs(), [rx.tir, itir]);
    assert_eq!(m.flow_entries().len(), 1);
    assert!(m.root_flow_table().is_some());
    let objs = m.objects();
    for o in ["CQ", "SQ", "RQ", "TIS", "TIR", "RQT", "Q counter", "flow table", "flow group", "flow entry"] {
        assert!(objs.iter().any(|s| s.starts_with(o)), "{o} missing from {objs:?}");
    }
    // A sloppy teardown reports the queues as leaked.
    n.h.simple(op::TEARDOWN_HCA);
    let leaked = n.model().teardown_report().leaked;
    assert!(leaked.contains(&format!("SQ {:#x}", sq.sqn)), "{leaked:?}");
    assert!(leaked.contains(&format!("CQ {:#x}", rx.cq.cqn)), "{leaked:?}");
    assert!(n.model().queues().0.is_empty(), "firmware freed them");
    assert!(n.model().violations().is_empty(), "{:?}", n.model().violations());
}

#[test]
fn queue_commands_tear_down_cleanly_in_order() {
    let mut n = Nic::new(Mlx5Config::default());
    let (txcq, sq) = tx_side(&mut n, 3, 4);
    let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
    let (t, g) = {
        let e = n.model().flow_entries();
        (e[0].table, e[0].group)
    };
    let mut del = Nic::flow_cmd(op::DELETE_FLOW_TABLE_ENTRY, t);
    layout::set(&mut del, flow::FTE_FLOW_INDEX, 0);
    n.h.cmd(&del, 16).ok();
    let mut dg = Nic::flow_cmd(op::DESTROY_FLOW_GROUP, t);
    layout::set(&mut dg, flow::DESTROY_GROUP_ID, g);
    n.h.cmd(&dg, 16).ok();
    n.disconnect_root().ok();
    n.h.cmd(&Nic::flow_cmd(op::DESTROY_FLOW_TABLE, t), 16).ok();
    n.destroy(op::DESTROY_TIR, rx.tir).ok();
    n.destroy(op::DESTROY_RQ, rx.rq.rqn).ok();
    let tisn = n.model().sq(sq.sqn).unwrap().tisn;
    n.destroy(op::DESTROY_SQ, sq.sqn).ok();
    n.destroy(op::DESTROY_TIS, tisn).ok();
    n.destroy(op::DESTROY_CQ, txcq.cqn).ok();
    n.destroy(op::DESTROY_CQ, rx.cq.cqn).ok();
    assert_eq!(n.model().queues(), (vec![], vec![], vec![]));
    assert!(n.model().objects().iter().all(|o| !o.contains("flow") && !o.starts_with("TI")));
}

#[test]
fn queue_commands_reject_bad_contexts() {
    let mut n = Nic::new(Mlx5Config::default());
    let cq = n.cq(3, false);
    let tisn = n.tis();
    let (buf, db) = (n.mem(64 << 4), n.mem(4096));
    let good = n.sq_in(cq.cqn, tisn, 4, buf.iova(), db.iova());
    let wb = CTX_BIT + sqc::WQ_BIT;
    let bad_sq = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut i = good.clone();
        f(&mut i);
        i
    };
    let cases: Vec<(Vec<u8>, (u8, u32), &str)> = vec![
        (bad_sq(&|i| layout::set(i, wq::LOG_WQ_STRIDE.at(wb), 5)), (status::BAD_PARAM, syndrome::WQ_STRIDE), "stride"),
        (bad_sq(&|i| layout::set(i, sqc::CQN.at(CTX_BIT), 0x7777)), (status::BAD_RES, syndrome::NO_SUCH_OBJECT), "cqn"),
        (
            bad_sq(&|i| layout::set(i, sqc::TIS_NUM_0.at(CTX_BIT), 0x7777)),
            (status::BAD_RES, syndrome::NO_SUCH_OBJECT),
            "tis",
        ),
        (
            bad_sq(&|i| layout::set(i, sqc::TIS_LST_SZ.at(CTX_BIT), 2)),
            (status::BAD_PARAM, syndrome::TIS_LIST),
            "tis list",
        ),
        (bad_sq(&|i| layout::set(i, sqc::STATE.at(CTX_BIT), 1)), (status::BAD_PARAM, syndrome::BAD_QUEUE_STATE), "RDY"),
        (bad_sq(&|i| layout::set(i, wq::WQ_TYPE.at(wb), 0)), (status::BAD_PARAM, syndrome::WQ_TYPE), "linked list"),
        (bad_sq(&|i| layout::set(i, wq::PD.at(wb), 0x7777)), (status::BAD_RES, syndrome::NO_SUCH_OBJECT), "pd"),
        (
            // 2^17 WQEBBs of 64 bytes in one 8 MiB page: beyond log_max_wq_sz (16).
            bad_sq(&|i| {
                layout::set(i, wq::LOG_WQ_SZ.at(wb), 17);
                layout::set(i, wq::LOG_WQ_PG_SZ.at(wb), 11);
            }),
            (status::BAD_PARAM, syndrome::QUEUE_SIZE),
            "size",
        ),
        (
            bad_sq(&|i| layout::set64(i, (wb / 8) as usize + wq::DBR_ADDR, db.iova() + 4)),
            (status::BAD_PARAM, syndrome::DBR_UNALIGNED),
            "dbr align",
        ),
        (
            bad_sq(&|i| layout::set64(i, (wb / 8) as usize + wq::DBR_ADDR, 0x10)),
            (status::BAD_PARAM, syndrome::DBR_UNMAPPED),
            "dbr",
        ),
        (
            bad_sq(&|i| layout::set64(i, PAS_AT, 0x4000_0000)),
            (status::BAD_PARAM, syndrome::PAS_UNMAPPED),
            "pas unmapped",
        ),
        (
            bad_sq(&|i| layout::set64(i, PAS_AT, buf.iova() + 64)),
            (status::BAD_PARAM, syndrome::PAS_UNALIGNED),
            "pas align",
        ),
    ];
    for (i, want, what) in cases {
        assert_eq!(n.h.cmd(&i, 16).failed(), want, "{what}");
    }
    // A pas list shorter than the queue: 2^7 WQEBBs need two pages.
    let mut long = good.clone();
    layout::set(&mut long, wq::LOG_WQ_SZ.at(wb), 7);
    assert_eq!(n.h.cmd(&long, 16).failed().0, status::BAD_INP_LEN);
    n.h.cmd(&good, 16).ok();
    // CQs: 128-byte CQEs, a nonexistent EQ, too large.
    let (cbuf, cdb) = (n.mem(4096), n.mem(4096));
    let cqi = n.cq_in(3, false, cbuf.iova(), cdb.iova());
    let mut c = cqi.clone();
    layout::set(&mut c, cqc::CQE_SZ.at(cqc::IN_CREATE_BIT), 1);
    assert_eq!(n.h.cmd(&c, 16).failed(), (status::BAD_PARAM, syndrome::CQE_SIZE));
    let mut c = cqi.clone();
    layout::set(&mut c, cqc::C_EQN.at(cqc::IN_CREATE_BIT), 0x33);
    assert_eq!(n.h.cmd(&c, 16).failed().0, status::BAD_RES);
    let mut c = n.cq_in(23, false, cbuf.iova(), cdb.iova());
    c.truncate(PAS_AT + 8);
    assert_eq!(n.h.exec(Cmd { ilen: Some(PAS_AT + 8), ..Cmd::new(&c, 16) }).failed().0, status::BAD_INP_LEN);
    // RQs: striding with a 64-byte WQE, a linked-list type, too many strides, a Q counter that
    // does not exist.
    let rcq = n.cq(3, false);
    let (rbuf, rdb) = (n.mem(4096), n.mem(4096));
    let rgood = n.rq_in(rcq.cqn, 2, 0, 4, rbuf.iova(), rdb.iova());
    let rw = CTX_BIT + rqc::WQ_BIT;
    let mut r = rgood.clone();
    layout::set(&mut r, wq::LOG_WQ_STRIDE.at(rw), 6);
    assert_eq!(n.h.cmd(&r, 16).failed(), (status::BAD_PARAM, syndrome::WQ_STRIDE));
    let mut r = rgood.clone();
    layout::set(&mut r, wq::WQ_TYPE.at(rw), wq::TYPE_LINKED_LIST_STRIDING);
    assert_eq!(n.h.cmd(&r, 16).failed(), (status::BAD_PARAM, syndrome::WQ_TYPE));
    let mut r = rgood.clone();
    layout::set(&mut r, wq::LOG_WQE_NUM_OF_STRIDES.at(rw), 8);
    assert_eq!(n.h.cmd(&r, 16).failed(), (status::BAD_PARAM, syndrome::STRIDES));
    let mut r = rgood.clone();
    layout::set(&mut r, rqc::COUNTER_SET_ID.at(CTX_BIT), 9);
    assert_eq!(n.h.cmd(&r, 16).failed().0, status::BAD_RES);
    let mut r = rgood.clone();
    layout::set(&mut r, rqc::MEM_RQ_TYPE.at(CTX_BIT), 1);
    assert_eq!(n.h.cmd(&r, 16).failed(), (status::BAD_PARAM, syndrome::UNSUPPORTED));
    n.h.cmd(&rgood, 16).ok();
    // TIS / TIR naming objects that do not exist; LRO.
    let mut t = inbox(op::CREATE_TIS, 0, tisc::IN_SIZE);
    layout::set(&mut t, tisc::TRANSPORT_DOMAIN.at(CTX_BIT), 0x4444);
    assert_eq!(n.h.cmd(&t, 16).failed().0, status::BAD_RES);
    let ti = n.tir_in(tirc::DISP_DIRECT, 0x4444);
    assert_eq!(n.h.cmd(&ti, 16).failed().0, status::BAD_RES);
    let rqn = n.model().queues().2[0];
    let mut ti = n.tir_in(tirc::DISP_DIRECT, rqn);
    layout::set(&mut ti, tirc::LRO_ENABLE_MASK.at(CTX_BIT), 1);
    assert_eq!(n.h.cmd(&ti, 16).failed(), (status::BAD_PARAM, syndrome::UNSUPPORTED));
    // Before INIT_HCA queues cannot be created.
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    h.simple(op::ENABLE_HCA);
    assert_eq!(h.cmd(&inbox(op::DESTROY_CQ, 0, 16), 16).failed().0, status::BAD_SYS_STATE);
}

#[test]
fn destroying_what_is_in_use_is_bad_resource_state() {
    let mut n = Nic::new(Mlx5Config::default());
    let (txcq, sq) = tx_side(&mut n, 3, 4);
    let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
    let tisn = n.model().sq(sq.sqn).unwrap().tisn;
    let busy = (status::BAD_RES_STATE, syndrome::OBJECT_IN_USE);
    assert_eq!(n.destroy(op::DESTROY_CQ, txcq.cqn).failed(), busy, "CQ under an SQ");
    assert_eq!(n.destroy(op::DESTROY_CQ, rx.cq.cqn).failed(), busy, "CQ under an RQ");
    assert_eq!(n.destroy(op::DESTROY_TIS, tisn).failed(), busy, "TIS under an SQ");
    assert_eq!(n.destroy(op::DESTROY_RQ, rx.rq.rqn).failed(), busy, "RQ under a TIR");
    assert_eq!(n.destroy(op::DESTROY_TIR, rx.tir).failed(), busy, "TIR under a flow entry");
    let t = n.model().root_flow_table().unwrap();
    assert_eq!(n.h.cmd(&Nic::flow_cmd(op::DESTROY_FLOW_TABLE, t), 16).failed(), busy, "root table");
    let g = n.model().flow_entries()[0].group;
    let mut dg = Nic::flow_cmd(op::DESTROY_FLOW_GROUP, t);
    layout::set(&mut dg, flow::DESTROY_GROUP_ID, g);
    assert_eq!(n.h.cmd(&dg, 16).failed(), busy, "group with an entry");
    let mut de = inbox(op::DESTROY_EQ, 0, 16);
    layout::set(&mut de, create_eq::EQ_NUMBER, u32::from(n.eqn));
    assert_eq!(n.h.cmd(&de, 16).failed(), busy, "EQ under CQs");
    let (uar, pd, td) = (n.uar, n.pd, n.td);
    assert_eq!(n.h.free_obj(op::DEALLOC_UAR, uar).failed(), busy, "UAR under queues");
    assert_eq!(n.h.free_obj(op::DEALLOC_PD, pd).failed(), busy, "PD under queues");
    assert_eq!(n.h.free_obj(op::DEALLOC_TRANSPORT_DOMAIN, td).failed(), busy, "TD under TIS and TIR");
    // Q counter under an RQ.
    let qc = layout::get(&n.h.cmd(&inbox(op::ALLOC_Q_COUNTER, 0, 16), 16).ok(), q_counter::ALLOC_ID);
    let rcq = n.cq(2, false);
    let (b, d) = (n.mem(4096), n.mem(4096));
    let mut r = n.rq_in(rcq.cqn, 2, 0, 4, b.iova(), d.iova());
    layout::set(&mut r, rqc::COUNTER_SET_ID.at(CTX_BIT), qc);
    n.h.cmd(&r, 16).ok();
    let mut dq = inbox(op::DEALLOC_Q_COUNTER, 0, 16);
    layout::set(&mut dq, q_counter::ALLOC_ID, qc);
    assert_eq!(n.h.cmd(&dq, 16).failed(), busy, "Q counter under an RQ");
    // Handles that do not exist.
    assert_eq!(n.destroy(op::DESTROY_SQ, 0x55).failed(), (status::BAD_RES, syndrome::NO_SUCH_OBJECT));
    assert_eq!(n.destroy(op::DESTROY_TIR, sq.sqn).failed().0, status::BAD_RES, "an SQN is not a TIR");
}

#[test]
fn modify_sq_and_rq_follow_the_state_machine() {
    let mut n = Nic::new(Mlx5Config::default());
    let cq = n.cq(3, false);
    let sq = n.sq(cq.cqn, 3);
    let (rst, rdy, err) = (sqc::STATE_RST, sqc::STATE_RDY, sqc::STATE_ERR);
    assert_eq!(
        n.modify(true, sq.sqn, rdy, err).failed(),
        (status::BAD_RES_STATE, syndrome::BAD_QUEUE_STATE),
        "not RDY"
    );
    assert_eq!(n.modify(true, sq.sqn, rst, err).failed(), (status::BAD_PARAM, syndrome::BAD_QUEUE_STATE), "RST→ERR");
    assert_eq!(n.modify(true, sq.sqn, rst, 2).failed().0, status::BAD_PARAM, "state 2 does not exist");
    n.modify(true, sq.sqn, rst, rdy).ok();
    n.modify(true, sq.sqn, rdy, err).ok();
    assert_eq!(n.model().sq(sq.sqn).unwrap().state, QueueState::Err);
    assert_eq!(n.modify(true, sq.sqn, err, rdy).failed().0, status::BAD_PARAM, "ERR→RDY");
    n.modify(true, sq.sqn, err, rst).ok();
    n.modify(true, sq.sqn, rst, rdy).ok();
    n.modify(true, sq.sqn, rdy, rst).ok();
    let rq = n.rq(cq.cqn, 2, 0, 4);
    n.modify(false, rq.rqn, rst, rdy).ok();
    assert_eq!(n.modify(false, rq.rqn, rst, rdy).failed().0, status::BAD_RES_STATE);
    n.modify(false, rq.rqn, rdy, err).ok();
    n.modify(false, rq.rqn, err, rst).ok();
    assert_eq!(n.model().rq(rq.rqn).unwrap().state, QueueState::Rst);
    assert_eq!(n.modify(true, rq.rqn, rst, rdy).failed().0, status::BAD_RES, "an RQN is not an SQN");
}

#[test]
fn flow_steering_commands_check_indices_masks_and_destinations() {
    let mut n = Nic::new(Mlx5Config::default());
    let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
    let t = n.flow_table(3);
    let mut mask = [0u8; 64];
    layout::set(&mut mask, lyr_2_4::ETHERTYPE, 0xffff);
    layout::set(&mut mask, lyr_2_4::UDP_DPORT, 0xffff);
    assert_eq!(
        n.flow_group(t, 4, 8, 1, &mask).failed(),
        (status::BAD_PARAM, syndrome::FLOW_INDEX),
        "end beyond 8 entries"
    );
    assert_eq!(n.flow_group(t, 5, 4, 1, &mask).failed().0, status::BAD_PARAM, "start after end");
    assert_eq!(
        n.flow_group(t, 0, 3, 2, &mask).failed(),
        (status::BAD_PARAM, syndrome::MATCH_CRITERIA),
        "misc criteria"
    );
    let mut l3ok = mask;
    layout::set(&mut l3ok, layout::f(0xd4, 1), 1);
    assert_eq!(n.flow_group(t, 0, 3, 1, &l3ok).failed(), (status::BAD_PARAM, syndrome::MATCH_CRITERIA), "l3_ok");
    let g = layout::get(&n.flow_group(t, 0, 3, 1, &mask).ok(), flow::OUT_GROUP_ID);
    assert_eq!(n.flow_group(t, 3, 5, 1, &mask).failed().0, status::BAD_PARAM, "overlaps");
    assert_eq!(n.flow_group(0x9999, 0, 0, 0, &[]).failed().0, status::BAD_RES, "no such table");
    let fwd = [(flow::DEST_TYPE_TIR, rx.tir)];
    let mut v = [0u8; 64];
    layout::set(&mut v, lyr_2_4::ETHERTYPE, 0x0800);
    layout::set(&mut v, lyr_2_4::UDP_DPORT, 4791);
    let a = flow::ACTION_FWD_DEST;
    assert_eq!(n.fte(0, t, 4, g, &v, a, &fwd).failed(), (status::BAD_PARAM, syndrome::FLOW_INDEX), "index in no group");
    assert_eq!(n.fte(0, t, 1, g + 1, &v, a, &fwd).failed().0, status::BAD_PARAM, "wrong group id");
    let mut outside = v;
    layout::set(&mut outside, lyr_2_4::IP_PROTOCOL, 17);
    assert_eq!(n.fte(0, t, 1, g, &outside, a, &fwd).failed(), (status::BAD_PARAM, syndrome::MATCH_VALUE));
    assert_eq!(n.fte(0, t, 1, g, &v, a | flow::ACTION_COUNT, &fwd).failed().0, status::BAD_PARAM, "count");
    assert_eq!(n.fte(0, t, 1, g, &v, a, &[(flow::DEST_TYPE_FLOW_TABLE, t)]).failed().0, status::BAD_PARAM);
    assert_eq!(n.fte(0, t, 1, g, &v, a, &[]).failed().0, status::BAD_PARAM, "no destination");
    assert_eq!(n.fte(0, t, 1, g, &v, a, &[(flow::DEST_TYPE_TIR, 0x4242)]).failed().0, status::BAD_RES);
    n.fte(0, t, 1, g, &v, a, &fwd).ok();
    assert_eq!(n.fte(0, t, 1, g, &v, a, &fwd).failed().0, status::BAD_RES_STATE, "index taken");
    n.fte(1, t, 1, g, &v, flow::ACTION_DROP, &[]).ok();
    assert_eq!(n.fte(1, t, 2, g, &v, a, &fwd).failed().0, status::BAD_RES, "modify of no entry");
    let mut other = Nic::flow_cmd(op::CREATE_FLOW_TABLE, 0);
    layout::set(&mut other, flow::TABLE_TYPE, 1);
    assert_eq!(n.h.cmd(&other, 16).failed(), (status::BAD_PARAM, syndrome::TABLE_TYPE), "NIC TX tables");
    assert_eq!(n.set_root(0x9999).failed().0, status::BAD_RES);
    n.set_root(t).ok();
    assert_eq!(n.model().root_flow_table(), Some(t));
}

#[test]
fn a_send_arrives_in_the_peers_striding_rq_with_the_right_cqes() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let mut b = Nic::new(cfg_mac(MAC_B));
    let link = Mlx5Model::connect(a.model(), b.model());
    let (mut txcq, mut sq) = tx_side(&mut a, 3, 4);
    let mut rx = rx_side(&mut b, 4, 2, 0, 4, 2);
    let frame = udp_frame(MAC_B, MAC_A, 4791, 1500 - 28);
    let lkey = a.lkey;
    let idx = a.send(&mut sq, &frame, 18, true, lkey);
    assert_eq!(idx, 0);
    // The sender's completion.
    let c = txcq.poll().expect("a send CQE");
    assert_eq!(opcode(&c), cqe::OP_REQ);
    assert_eq!(be16_at(&c, cqe::WQE_COUNTER), 0);
    assert_eq!(layout::get32(&c, cqe::SOP_DROP_QPN), u32::from(wqe::OPCODE_SEND) << 24 | sq.sqn);
    assert_eq!(c[cqe::OP_OWN] & 1, 0, "first pass: owner 0");
    // The receiver's.
    let q = rx.cq.poll().expect("a receive CQE");
    assert_eq!(opcode(&q), cqe::OP_RESP_SEND);
    let bc = layout::get32(&q, cqe::BYTE_CNT);
    assert_eq!(bc & 0xffff, frame.len() as u32);
    assert_eq!((bc >> cqe::STRIDES_SHIFT) & cqe::STRIDES_MASK, 2, "1514 bytes in 1 KiB strides");
    assert_eq!(bc >> 31, 0, "not a filler");
    assert_eq!((be16_at(&q, cqe::WQE_ID), be16_at(&q, cqe::WQE_COUNTER)), (0, 0));
    assert_eq!(q[cqe::HDS_IP_EXT], cqe::L2_OK | cqe::L3_OK | cqe::L4_OK);
    assert_eq!(q[cqe::L4_L3_HDR_TYPE], 2 << 4 | 2 << 2, "UDP over IPv4");
    assert_eq!(rx.rq.packet(&q, 0), frame);
    // A second packet lands two strides further.
    let f2 = udp_frame(MAC_B, MAC_A, 4791, 100);
    a.send(&mut sq, &f2, 18, true, lkey);
    let q = rx.cq.poll().unwrap();
    assert_eq!((be16_at(&q, cqe::WQE_ID), be16_at(&q, cqe::WQE_COUNTER)), (0, 2));
    assert_eq!(rx.rq.packet(&q, 0), f2);
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().stride, 3);
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(sq.pc));
    let s = link.stats();
    assert_eq!((s.carried, s.dropped), ([2, 0], [0, 0]));
    let (ca, cb) = (a.model().counters(), b.model().counters());
    assert_eq!((ca.tx_frames, ca.tx_cqes, cb.rx_frames), (2, 2, 2));
    // A frame with more inline headers than one WQEBB holds spans two (ds 6) and still works.
    assert_eq!(be16_at(&txcq.poll().unwrap(), cqe::WQE_COUNTER), 1);
    let idx = a.send(&mut sq, &f2, 60, true, lkey);
    assert_eq!(sq.pc, idx + 2, "two WQEBBs");
    assert_eq!(be16_at(&txcq.poll().unwrap(), cqe::WQE_COUNTER), idx);
    assert_eq!(rx.rq.packet(&rx.cq.poll().unwrap(), 0), f2);
    assert!(a.model().violations().is_empty(), "{:?}", a.model().violations());
    assert!(b.model().violations().is_empty(), "{:?}", b.model().violations());
}

#[test]
fn unsignaled_sends_complete_nothing_and_owner_bits_wrap_on_a_small_cq() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let (mut txcq, mut sq) = tx_side(&mut a, 1, 3);
    let f = udp_frame(MAC_B, MAC_A, 9, 64);
    let lkey = a.lkey;
    let mut owners = vec![];
    let mut counters = vec![];
    // 12 sends, every third signaled, over an SQ of 8 WQEBBs (wrapping) and a CQ of 2 entries.
    for k in 0..12u32 {
        a.send(&mut sq, &f, 18, k % 3 == 2, lkey);
        while let Some(c) = txcq.poll() {
            owners.push(c[cqe::OP_OWN] & 1);
            counters.push(be16_at(&c, cqe::WQE_COUNTER));
        }
    }
    assert_eq!(counters, [2, 5, 8, 11], "only signaled WQEs complete, with their own index");
    assert_eq!(owners, [0, 0, 1, 1], "the owner bit flips each pass over the 2-entry CQ");
    let c = a.model().counters();
    assert_eq!((c.tx_wqes, c.tx_frames, c.tx_cqes, c.tx_discarded), (12, 12, 4, 12));
    assert_eq!(a.model().cq(txcq.cqn).unwrap().producer, 4);
    // Without consuming, the third CQE overruns the 2-entry CQ.
    for _ in 0..3 {
        a.send(&mut sq, &f, 18, true, lkey);
    }
    let info = a.model().cq(txcq.cqn).unwrap();
    assert!(info.overrun);
    assert_eq!(a.model().counters().cq_overruns, 1);
    assert!(a.model().violations().iter().any(|v| v.kind == ViolationKind::CqOverrun));
}

#[test]
fn a_packet_that_does_not_fit_the_rest_of_a_wqe_gets_a_filler_cqe() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    // 512 strides of 64 bytes: 32 KiB per WQE.
    let mut rx = rx_side(&mut b, 6, 2, 0, 0, 2);
    let small = udp_frame(MAC_B, MAC_A, 1, 1024 - 42);
    assert_eq!(small.len(), 1024);
    for _ in 0..31 {
        b.model().inject_rx_frame(&small);
    }
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().stride, 496);
    let big = udp_frame(MAC_B, MAC_A, 1, 1100);
    b.model().inject_rx_frame(&big);
    let cqes = rx.cq.drain();
    assert_eq!(cqes.len(), 33);
    let filler = &cqes[31];
    let bc = layout::get32(filler, cqe::BYTE_CNT);
    assert_eq!(bc >> 31, 1, "filler");
    assert_eq!((bc >> cqe::STRIDES_SHIFT) & cqe::STRIDES_MASK, 16, "the 16 strides left");
    assert_eq!((be16_at(filler, cqe::WQE_ID), be16_at(filler, cqe::WQE_COUNTER)), (0, 496));
    let q = &cqes[32];
    assert_eq!(layout::get32(q, cqe::BYTE_CNT), 18 << 16 | big.len() as u32);
    assert_eq!((be16_at(q, cqe::WQE_ID), be16_at(q, cqe::WQE_COUNTER)), (1, 0));
    assert_eq!(rx.rq.packet(q, 0), big);
    assert_eq!(b.model().counters().rx_filler_cqes, 1);
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().consumer, 1);
}

#[test]
fn with_no_wqe_posted_frames_count_as_out_of_buffer() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let qc = layout::get(&b.h.cmd(&inbox(op::ALLOC_Q_COUNTER, 0, 16), 16).ok(), q_counter::ALLOC_ID);
    let cq = b.cq(3, false);
    let (buf, db) = (b.mem(4096), b.mem(4096));
    let mut r = b.rq_in(cq.cqn, 1, 0, 1, buf.iova(), db.iova());
    layout::set(&mut r, rqc::COUNTER_SET_ID.at(CTX_BIT), qc);
    let rqn = layout::get(&b.h.cmd(&r, 16).ok(), QN);
    b.modify(false, rqn, 0, 1).ok();
    let tir = b.tir(rqn);
    b.steer_all(tir);
    let f = udp_frame(MAC_B, MAC_A, 1, 100);
    b.model().inject_rx_frame(&f);
    b.model().inject_rx_frame(&f);
    b.model().inject_rx_frame(&[0u8; 10]);
    assert_eq!(b.model().counters().rx_out_of_buffer, 2);
    assert_eq!(b.model().counters().rx_port_drops, 1, "shorter than an Ethernet header");
    let mut q = inbox(op::QUERY_Q_COUNTER, 0, q_counter::QUERY_IN_SIZE);
    layout::set(&mut q, q_counter::QUERY_ID, qc);
    layout::set(&mut q, q_counter::QUERY_CLEAR, 1);
    let out = b.h.cmd(&q, q_counter::QUERY_OUT_SIZE).ok();
    assert_eq!(layout::get(&out, q_counter::OUT_OF_BUFFER), 2);
    assert_eq!(b.model().q_counter(qc as u8), Some(0), "cleared");
    assert_eq!(b.model().cq(cq.cqn).unwrap().producer, 0, "no CQE for a dropped frame");
}

#[test]
fn frames_are_filtered_by_mac_and_steering() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let cq = b.cq(4, false);
    let mut rq = b.rq(cq.cqn, 2, 0, 4);
    b.modify(false, rq.rqn, 0, 1).ok();
    let lkey = b.lkey;
    rq.post(4, lkey);
    let tir = b.tir(rq.rqn);
    let f = udp_frame(MAC_B, MAC_A, 4791, 64);
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_steering_drops, 1, "no root table");
    // A table matching UDP port 4791 only.
    let t = b.flow_table(2);
    let mut mask = [0u8; 64];
    layout::set(&mut mask, lyr_2_4::IP_PROTOCOL, 0xff);
    layout::set(&mut mask, lyr_2_4::UDP_DPORT, 0xffff);
    layout::set(&mut mask, lyr_2_4::DMAC_47_16, u32::MAX);
    layout::set(&mut mask, lyr_2_4::DMAC_15_0, 0xffff);
    let g = layout::get(&b.flow_group(t, 0, 3, 1, &mask).ok(), flow::OUT_GROUP_ID);
    let mut v = erpc_tests::mlx5_model::match_fields(&f);
    for (x, m) in v.iter_mut().zip(mask.iter()) {
        *x &= m;
    }
    b.fte(0, t, 2, g, &v, flow::ACTION_FWD_DEST, &[(flow::DEST_TYPE_TIR, tir)]).ok();
    b.set_root(t).ok();
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_frames, 1);
    b.model().inject_rx_frame(&udp_frame(MAC_B, MAC_A, 4792, 64));
    assert_eq!(b.model().counters().rx_steering_drops, 2, "another port misses");
    b.model().inject_rx_frame(&udp_frame(MAC_A, MAC_B, 4791, 64));
    assert_eq!(b.model().counters().rx_mac_drops, 1, "not our MAC");
    // A lower index wins: a drop rule at index 0 takes the frame first.
    b.fte(0, t, 0, g, &v, flow::ACTION_DROP, &[]).ok();
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_steering_drops, 3);
    let mut del = Nic::flow_cmd(op::DELETE_FLOW_TABLE_ENTRY, t);
    layout::set(&mut del, flow::FTE_FLOW_INDEX, 0);
    b.h.cmd(&del, 16).ok();
    // Broadcast passes the MAC filter (and misses: its dmac is not the rule's).
    b.model().inject_rx_frame(&udp_frame([0xff; 6], MAC_A, 4791, 64));
    assert_eq!(b.model().counters().rx_steering_drops, 4);
    // An RQ that is not ready drops.
    b.modify(false, rq.rqn, 1, 3).ok();
    b.model().inject_rx_frame(&f);
    assert_eq!(b.model().counters().rx_steering_drops, 5);
    assert_eq!(b.model().counters().rx_frames, 1);
}

#[test]
fn a_bad_lkey_is_an_error_cqe_and_the_sq_stops_until_reset() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let (mut txcq, mut sq) = tx_side(&mut a, 3, 3);
    a.model().record_tx(true);
    let f = udp_frame(MAC_B, MAC_A, 1, 200);
    let lkey = a.lkey;
    a.send(&mut sq, &f, 18, false, lkey);
    a.send(&mut sq, &f, 18, false, lkey ^ 1);
    let c = txcq.poll().expect("an error CQE even though unsignaled");
    assert_eq!(opcode(&c), cqe::OP_REQ_ERR);
    assert_eq!(c[cqe::SYNDROME], cqe::SYND_LOCAL_PROT_ERR);
    assert_eq!(c[cqe::VENDOR_ERR_SYND], erpc_tests::mlx5_model::vendor_syndrome::LKEY);
    assert_eq!(be16_at(&c, cqe::WQE_COUNTER), 1);
    assert_eq!(layout::get32(&c, cqe::SOP_DROP_QPN), u32::from(wqe::OPCODE_SEND) << 24 | sq.sqn);
    assert_eq!(a.model().sq(sq.sqn).unwrap().state, QueueState::Err);
    assert_eq!(a.model().take_tx_frames().len(), 1, "only the first went out");
    // Nothing more is processed.
    a.send(&mut sq, &f, 18, true, lkey);
    assert!(txcq.poll().is_none());
    assert_eq!(a.model().counters().tx_doorbells_in_error, 1);
    assert_eq!(a.model().counters().tx_error_cqes, 1);
    assert!(a.model().violations().iter().any(|v| v.kind == ViolationKind::ErrorCqe));
    // Reset: the counter starts over at 0.
    a.modify(true, sq.sqn, sqc::STATE_ERR, sqc::STATE_RST).ok();
    a.modify(true, sq.sqn, sqc::STATE_RST, sqc::STATE_RDY).ok();
    sq.pc = 0;
    a.send(&mut sq, &f, 18, true, lkey);
    let c = txcq.poll().unwrap();
    assert_eq!((opcode(&c), be16_at(&c, cqe::WQE_COUNTER)), (cqe::OP_REQ, 0));
    // A wrong WQE index, a short inline header under an L2 inline requirement, and an over-long
    // frame are error CQEs too.
    let mut b = Nic::new(Mlx5Config { min_inline_mode: 1, ..cfg_mac(MAC_A) });
    let eth = b.h.query_cap(hca_cap::ETHERNET_OFFLOADS, true);
    assert_eq!(layout::get(&eth, cap_eth::WQE_INLINE_MODE), 1, "inline mode from the vport context");
    let q = b.h.cmd(&inbox(op::QUERY_NIC_VPORT_CONTEXT, 0, 16), 0x110).ok();
    assert_eq!(layout::get(&q[vport::QUERY_OUT_CTX..], vport::MIN_WQE_INLINE_MODE), 1);
    let mut cq2 = b.cq(3, false);
    let tisn = b.tis();
    let (buf, db, data) = (b.mem(4096), b.mem(4096), b.mem(2048 << 3));
    let mut i = b.sq_in(cq2.cqn, tisn, 3, buf.iova(), db.iova());
    assert_eq!(b.h.cmd(&i, 16).failed(), (status::BAD_PARAM, syndrome::INLINE_MODE), "the SQ must inline L2");
    layout::set(&mut i, sqc::MIN_WQE_INLINE_MODE.at(CTX_BIT), 1);
    let sqn = layout::get(&b.h.cmd(&i, 16).ok(), QN);
    b.modify(true, sqn, 0, 1).ok();
    let mut sq2 = TestSq { sqn, log: 3, buf, db, data, uar: b.uar, pc: 0, bf: 0, bf_step: 0x100 };
    let lkey = b.lkey;
    b.send(&mut sq2, &f, 14, true, lkey);
    let c = cq2.poll().unwrap();
    assert_eq!((opcode(&c), c[cqe::SYNDROME]), (cqe::OP_REQ_ERR, cqe::SYND_LOCAL_QP_OP_ERR));
    assert_eq!(c[cqe::VENDOR_ERR_SYND], erpc_tests::mlx5_model::vendor_syndrome::INLINE);
    let mut c3 = Nic::new(cfg_mac(MAC_A));
    let (mut cq3, mut sq3) = tx_side(&mut c3, 3, 3);
    let lkey = c3.lkey;
    c3.send(&mut sq3, &udp_frame(MAC_B, MAC_A, 1, 1500), 18, true, lkey);
    assert_eq!(cq3.poll().unwrap()[cqe::SYNDROME], cqe::SYND_LOCAL_LENGTH_ERR, "1542 bytes > 1500 + 14");
}

#[test]
fn paused_transmit_reads_nothing_until_resumed() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let mut b = Nic::new(cfg_mac(MAC_B));
    let _link = Mlx5Model::connect(a.model(), b.model());
    let (mut txcq, mut sq) = tx_side(&mut a, 3, 4);
    let mut rx = rx_side(&mut b, 4, 2, 0, 4, 2);
    a.model().set_tx_paused(true);
    let lkey = a.lkey;
    for k in 0..3 {
        a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, k == 2, lkey);
    }
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(0), "nothing read");
    assert_eq!(a.model().pending_tx_doorbells(), 3);
    assert!(txcq.poll().is_none());
    assert!(rx.cq.poll().is_none());
    a.model().set_tx_paused(false);
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(3));
    assert_eq!(be16_at(&txcq.poll().unwrap(), cqe::WQE_COUNTER), 2);
    let got: Vec<u32> = rx.cq.drain().iter().map(|q| be16_at(&rx.rq.packet(q, 0), 36)).collect();
    assert_eq!(got, [0, 1, 2], "delivered in order");
}

#[test]
fn the_link_drops_frames_as_told_and_deterministically() {
    let run = |seed: u64| {
        let mut a = Nic::new(cfg_mac(MAC_A));
        let mut b = Nic::new(cfg_mac(MAC_B));
        let link = Mlx5Model::connect(a.model(), b.model());
        let (_txcq, mut sq) = tx_side(&mut a, 6, 6);
        let mut rx = rx_side(&mut b, 7, 3, 0, 4, 8);
        link.set_tap(true);
        link.drop_next(2);
        let lkey = a.lkey;
        for k in 0..2 {
            a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
        }
        assert_eq!(link.stats().dropped, [2, 0]);
        link.set_loss(0.5, seed);
        for k in 0..40 {
            a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
        }
        link.set_loss(0.0, 0);
        link.drop_matching(Some(Box::new(|f: &[u8]| f[37] == 7)));
        for k in 0..10 {
            a.send(&mut sq, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
        }
        let s = link.stats();
        assert_eq!(s.carried[0] + s.dropped[0], 52);
        let tapped = link.take_tapped();
        assert_eq!(tapped.len(), 52);
        assert!(tapped.iter().all(|t| t.direction == Direction::AToB));
        let received = rx.cq.drain().len() as u64;
        assert_eq!(received, s.carried[0]);
        assert_eq!(b.model().counters().rx_frames, s.carried[0]);
        let lost: Vec<bool> = tapped.iter().map(|t| t.dropped).collect();
        (s, lost)
    };
    let (s1, l1) = run(7);
    let (s2, l2) = run(7);
    assert_eq!(l1, l2, "the same seed drops the same frames");
    assert_eq!(s1, s2);
    let lossy = l1[2..42].iter().filter(|&&d| d).count();
    assert!((8..=32).contains(&lossy), "about half of 40: {lossy}");
    assert!(l1[42..].iter().enumerate().all(|(k, &d)| d == (k == 7)), "the filter drops port 7 only");
}

#[test]
fn corrupt_next_rx_cqe_produces_each_kind() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let mut rx = rx_side(&mut b, 5, 2, 0, 4, 4);
    let f = udp_frame(MAC_B, MAC_A, 1, 100);
    let m = b.model().clone();
    let mut next = |kind: Option<CqeCorruption>| {
        if let Some(k) = kind {
            m.corrupt_next_rx_cqe(k);
        }
        m.inject_rx_frame(&f);
        rx.cq.poll().unwrap()
    };
    let good = next(None);
    assert_eq!(opcode(&good), cqe::OP_RESP_SEND);
    let q = next(Some(CqeCorruption::BadOpcode));
    assert_eq!(opcode(&q), cqe::OP_RESP_WR_IMM);
    let q = next(Some(CqeCorruption::ErrorCqe { syndrome: cqe::SYND_LOCAL_LENGTH_ERR }));
    assert_eq!((opcode(&q), q[cqe::SYNDROME]), (cqe::OP_RESP_ERR, cqe::SYND_LOCAL_LENGTH_ERR));
    assert_eq!(be16_at(&q, cqe::WQE_COUNTER), 2, "the stride it would have used");
    let q = next(Some(CqeCorruption::StrideOutOfRange));
    assert_eq!(be16_at(&q, cqe::WQE_COUNTER), 512, "one past the WQE's 512 strides");
    let q = next(Some(CqeCorruption::LengthBeyondStrides));
    let bc = layout::get32(&q, cqe::BYTE_CNT);
    assert_eq!((bc >> 16, bc & 0xffff), (1, 1025), "one stride of 1 KiB claims 1025 bytes");
    let q = next(Some(CqeCorruption::WrongWqeId));
    assert_eq!(be16_at(&q, cqe::WQE_ID), 1, "the packet is in WQE 0");
    let q = next(Some(CqeCorruption::StrideCountTopBit));
    let bc = layout::get32(&q, cqe::BYTE_CNT);
    assert_eq!((bc >> cqe::STRIDES_SHIFT) & cqe::STRIDES_MASK, 0x4001, "bit 14 of the 15-bit count, plus its 1");
    let q = next(None);
    assert_eq!((opcode(&q), be16_at(&q, cqe::WQE_ID), be16_at(&q, cqe::WQE_COUNTER)), (cqe::OP_RESP_SEND, 0, 7));
    // The device went on as for correct CQEs.
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().stride, 8);
    assert_eq!(b.model().rq(rx.rq.rqn).unwrap().state, QueueState::Rdy);
}

#[test]
fn doorbells_the_device_cannot_act_on_are_violations() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let (_cq, mut sq) = tx_side(&mut a, 3, 3);
    let lkey = a.lkey;
    let f = udp_frame(MAC_B, MAC_A, 1, 64);
    a.send(&mut sq, &f, 18, true, lkey);
    // A doorbell for a WQE the doorbell record does not cover (it was never posted).
    let mut w = [0u8; 8];
    layout::set32(&mut w, 0, sq.pc << 8 | 0x0a);
    layout::set32(&mut w, 4, sq.sqn << 8 | 3);
    a.model().write64(sq.uar * 4096 + 0x800, u64::from_le_bytes(w));
    let v = a.model().violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, ViolationKind::DoorbellRecord);
    assert_eq!(a.model().sq_consumer(sq.sqn), Some(sq.pc), "nothing more executed");
    // An SQ that does not exist, and the high word alone.
    layout::set32(&mut w, 4, 0x77 << 8 | 3);
    a.model().write64(sq.uar * 4096 + 0x900, u64::from_le_bytes(w));
    a.model().write32(sq.uar * 4096 + 0x804, 0);
    let n = a.model().violations().iter().filter(|v| v.kind == ViolationKind::SendDoorbell).count();
    assert_eq!(n, 2);
    // Two 32-bit writes, low address first: a split doorbell, recorded; it still rings.
    let before = a.model().sq_consumer(sq.sqn).unwrap();
    a.model().set_tx_paused(true);
    a.send(&mut sq, &f, 18, true, lkey);
    assert_eq!(a.model().pending_tx_doorbells(), 1);
    let split = |m: &Mlx5Model| m.violations().iter().filter(|v| v.kind == ViolationKind::SplitDoorbell).count();
    assert_eq!(split(a.model()), 1, "the high word alone above");
    let mut w = [0u8; 8];
    layout::set32(&mut w, 0, before << 8 | 0x0a);
    layout::set32(&mut w, 4, sq.sqn << 8 | 3);
    a.model().write32(sq.uar * 4096 + 0x900, u32::from_le_bytes(w[..4].try_into().unwrap()));
    a.model().write32(sq.uar * 4096 + 0x904, u32::from_le_bytes(w[4..].try_into().unwrap()));
    assert_eq!(split(a.model()), 3, "both halves of the split doorbell");
    assert_eq!(a.model().pending_tx_doorbells(), 2);
    a.model().set_tx_paused(false);
    assert_eq!(a.model().sq_consumer(sq.sqn).unwrap(), before + 1);
}

#[test]
fn two_byte_shift_offsets_the_packet_and_counts_in_the_strides() {
    let mut b = Nic::new(cfg_mac(MAC_B));
    let mut cq = b.cq(3, false);
    let (buf, db) = (b.mem(4096), b.mem(4096));
    let mut i = b.rq_in(cq.cqn, 1, 0, 0, buf.iova(), db.iova());
    layout::set(&mut i, wq::TWO_BYTE_SHIFT_EN.at(CTX_BIT + rqc::WQ_BIT), 1);
    let rqn = layout::get(&b.h.cmd(&i, 16).ok(), QN);
    b.modify(false, rqn, 0, 1).ok();
    let data = b.mem(512 * 64 * 2);
    let mut rq = TestRq { rqn, log: 1, buf, db, data, strides: 512, stride: 64, pc: 0 };
    let lkey = b.lkey;
    rq.post(1, lkey);
    let tir = b.tir(rqn);
    b.steer_all(tir);
    // 128 bytes + the 2-byte shift need three 64-byte strides.
    let f = udp_frame(MAC_B, MAC_A, 1, 128 - 42);
    b.model().inject_rx_frame(&f);
    let q = cq.poll().unwrap();
    assert_eq!(layout::get32(&q, cqe::BYTE_CNT), 3 << 16 | 128);
    assert_eq!(rq.packet(&q, 2), f);
    assert_eq!(b.model().rq(rqn).unwrap().stride, 3);
}

#[test]
fn two_models_sending_to_each_other_from_two_threads_do_not_deadlock() {
    let mut a = Nic::new(cfg_mac(MAC_A));
    let mut b = Nic::new(cfg_mac(MAC_B));
    let _link = Mlx5Model::connect(a.model(), b.model());
    let (_ca, mut sa) = tx_side(&mut a, 3, 8);
    let (_cb, mut sb) = tx_side(&mut b, 3, 8);
    let mut ra = rx_side(&mut a, 9, 2, 0, 4, 4);
    let mut rb = rx_side(&mut b, 9, 2, 0, 4, 4);
    let n = 300u16;
    std::thread::scope(|s| {
        let a = &mut a;
        let b = &mut b;
        let sa = &mut sa;
        let sb = &mut sb;
        s.spawn(move || {
            let lkey = a.lkey;
            for k in 0..n {
                a.send(sa, &udp_frame(MAC_B, MAC_A, k, 64), 18, false, lkey);
            }
        });
        s.spawn(move || {
            let lkey = b.lkey;
            for k in 0..n {
                b.send(sb, &udp_frame(MAC_A, MAC_B, k, 64), 18, false, lkey);
            }
        });
    });
    let ports = |cq: &mut TestCq, rq: &TestRq| -> Vec<u32> {
        cq.drain().iter().map(|q| be16_at(&rq.packet(q, 0), 36)).collect()
    };
    let want: Vec<u32> = (0..u32::from(n)).collect();
    assert_eq!(ports(&mut ra.cq, &ra.rq), want, "in order");
    assert_eq!(ports(&mut rb.cq, &rb.rq), want, "in order");
}

// ---------------------------------------------------------------------------------------------
// Capability switches (`Mlx5Config::caps`): what the device reports, and acts on.

use erpc_tests::mlx5_model::layout::cap_flow;
use erpc_tests::mlx5_model::ModelCaps;

/// UAR pages are 4 KiB with `uar_4k`, else `4 KiB << log_uar_page_sz`: ALLOC_UAR hands out the
/// first page above the initialization segment.
#[test]
fn uar_pages_follow_uar_4k_and_log_uar_page_sz() {
    let caps = |uar_4k| ModelCaps { uar_4k, log_uar_page_sz: 4, ..ModelCaps::default() };
    for (uar_4k, set_caps, first, log) in [(false, false, 1, 4), (false, true, 3, 0), (true, false, 3, 4)] {
        let mut h = Host::new(Mlx5Config { caps: caps(uar_4k), ..Mlx5Config::default() });
        h.bring_up_setting_caps(set_caps);
        let cur = h.query_cap(hca_cap::GENERAL, true);
        assert_eq!(layout::get(&cur, cap_gen::LOG_UAR_PAGE_SZ), log);
        assert_eq!(layout::get(&cur, cap_gen::UAR_4K), u32::from(uar_4k));
        assert_eq!(h.obj(op::ALLOC_UAR), first, "uar_4k {uar_4k}, SET_HCA_CAP {set_caps}");
    }
    // SET_HCA_CAP takes 4 KiB UAR pages only.
    let mut h = Host::new(Mlx5Config { caps: caps(false), ..Mlx5Config::default() });
    h.start();
    h.simple(op::ENABLE_HCA);
    let mut set = inbox(op::SET_HCA_CAP, hca_cap::GENERAL << 1, 0x1010);
    set[hca_cap::CAPABILITY..].copy_from_slice(&h.query_cap(hca_cap::GENERAL, true));
    assert_eq!(h.cmd(&set, 16).failed(), (status::BAD_PARAM, syndrome::CAP_VALUE));
}

/// The BlueFlame register at UAR + 0x800 is two buffers of half of `1 << log_bf_reg_size`
/// bytes; without BlueFlame only the 8-byte doorbell at 0x800 exists.
#[test]
fn blueflame_buffers_follow_log_bf_reg_size() {
    let f = udp_frame(MAC_B, MAC_A, 1, 64);
    for (log_bf, step) in [(Some(10), 0x200), (Some(9), 0x100), (None, 0)] {
        let caps = ModelCaps { log_bf_reg_size: log_bf, ..ModelCaps::default() };
        let mut a = Nic::new(Mlx5Config { caps, ..cfg_mac(MAC_A) });
        let (_cq, mut sq) = tx_side(&mut a, 3, 3);
        sq.bf_step = step;
        let lkey = a.lkey;
        for _ in 0..4 {
            a.send(&mut sq, &f, 18, true, lkey);
        }
        let c = a.model().counters();
        let both = if step == 0 { [4, 0] } else { [2, 2] };
        assert_eq!((c.tx_wqes, c.tx_doorbells_per_buffer), (4, both), "{log_bf:?}");
        assert!(a.model().violations().is_empty(), "{log_bf:?}: {:?}", a.model().violations());
        // A doorbell 0x100 past the first buffer: inside it with 512-byte halves, a buffer of
        // its own with 256-byte ones, nothing without BlueFlame.
        sq.bf = 0x100;
        sq.bf_step = 0;
        a.send(&mut sq, &f, 18, true, lkey);
        let kinds: Vec<ViolationKind> = a.model().violations().iter().map(|v| v.kind).collect();
        let want: &[ViolationKind] = match log_bf {
            Some(10) => &[ViolationKind::SendDoorbell],
            Some(_) => &[],
            None => &[ViolationKind::Unmodelled, ViolationKind::Unmodelled],
        };
        assert_eq!(kinds, want, "{log_bf:?}");
        assert_eq!(a.model().counters().tx_wqes, if want.is_empty() { 5 } else { 4 }, "{log_bf:?}");
    }
}

/// QUERY_HCA_CAP of the flow table capabilities reports `reset_root_to_default` for NIC RX.
#[test]
fn flow_table_caps_report_reset_root_to_default() {
    for on in [true, false] {
        let caps = ModelCaps { reset_root_to_default: on, ..ModelCaps::default() };
        let mut h = Host::new(Mlx5Config { caps, ..Mlx5Config::default() });
        h.bring_up();
        let t = h.query_cap(hca_cap::FLOW_TABLE, true);
        let rx = |f: layout::Field| f.at(cap_flow::NIC_RX_BIT);
        assert_eq!(layout::get(&t, rx(cap_flow::RESET_ROOT_TO_DEFAULT)), u32::from(on));
        assert_eq!(layout::get(&t, rx(cap_flow::FT_SUPPORT)), 1);
    }
}

/// SET_FLOW_TABLE_ROOT `op_mod` 1 (disconnect) needs `reset_root_to_default`; without it the
/// root table is torn down by destroying it once empty, which resets the root to the default.
#[test]
fn the_root_is_disconnected_only_with_reset_root_to_default() {
    for reset in [true, false] {
        let caps = ModelCaps { reset_root_to_default: reset, ..ModelCaps::default() };
        let mut n = Nic::new(Mlx5Config { caps, ..cfg_mac(MAC_B) });
        let rx = rx_side(&mut n, 3, 2, 0, 4, 0);
        let e = n.model().flow_entries()[0].clone();
        let d = n.disconnect_root();
        if reset {
            d.ok();
            assert_eq!(n.model().root_flow_table(), None);
            n.set_root(e.table).ok();
        } else {
            assert_eq!(d.failed(), (status::BAD_PARAM, syndrome::UNSUPPORTED));
            assert_eq!(n.model().root_flow_table(), Some(e.table));
        }
        assert_eq!(n.set_root(0).failed().0, status::BAD_RES, "op_mod 0 names a table");
        let mut del = Nic::flow_cmd(op::DELETE_FLOW_TABLE_ENTRY, e.table);
        layout::set(&mut del, flow::FTE_FLOW_INDEX, 0);
        n.h.cmd(&del, 16).ok();
        let mut dg = Nic::flow_cmd(op::DESTROY_FLOW_GROUP, e.table);
        layout::set(&mut dg, flow::DESTROY_GROUP_ID, e.group);
        n.h.cmd(&dg, 16).ok();
        n.h.cmd(&Nic::flow_cmd(op::DESTROY_FLOW_TABLE, e.table), 16).ok();
        assert_eq!(n.model().root_flow_table(), None, "the root reverted to the default");
        n.model().inject_rx_frame(&udp_frame(MAC_B, MAC_A, 1, 64));
        assert_eq!(n.model().counters().rx_steering_drops, 1, "nothing is steered");
        n.destroy(op::DESTROY_TIR, rx.tir).ok();
    }
}
