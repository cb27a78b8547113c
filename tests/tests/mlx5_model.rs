//! The mlx5 device model's own tests: a small hand-written host side drives the command
//! interface through the model's BAR and IOMMU, and checks what the device answers and records.

use erpc_driver::mmio::RegisterIo;
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
        self.start();
        self.simple(op::ENABLE_HCA);
        let out = self.cmd(&inbox(op::QUERY_ISSI, 0, 16), 0x70).ok();
        assert_eq!(layout::get(&out, layout::issi::SUPPORTED_ISSI_DW0) & 2, 2, "ISSI 1 supported");
        let mut i = inbox(op::SET_ISSI, 0, 16);
        layout::set(&mut i, layout::issi::CURRENT_ISSI, 1);
        self.cmd(&i, 16).ok();
        let boot = self.pages_query(query_pages::BOOT) as usize;
        self.give_pages(boot).ok();
        let cur = self.query_cap(hca_cap::GENERAL, true);
        let mut set = inbox(op::SET_HCA_CAP, hca_cap::GENERAL << 1, 0x1010);
        set[hca_cap::CAPABILITY..].copy_from_slice(&cur);
        layout::set(&mut set[hca_cap::CAPABILITY..], cap_gen::LOG_MAX_QP, 16);
        self.cmd(&set, 16).ok();
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
