//! The command interface: the initialization segment, command entries and mailbox chains,
//! lengths, ownership, statuses and syndromes, injected failures, a dead firmware.

use erpc_driver::mmio::RegisterIo;
use erpc_tests::mlx5_model::layout::{
    self, cap_gen, create_eq, delivery, eqc, eqe, hca_cap, iseg, manage_pages, op, query_pages, status,
};
use erpc_tests::mlx5_model::{syndrome, HcaState, Mlx5Config, ViolationKind};

use crate::host::*;

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
fn a_dead_firmware_leaves_commands_with_hardware() {
    let mut h = Host::new(Mlx5Config::default());
    h.start();
    h.model.set_health_syndrome(0x1, 0);
    let d = h.cmd(&inbox(op::ENABLE_HCA, 0, 16), 16);
    assert_eq!(d.own, 1, "never completed");
    assert!(h.model.command_log().is_empty());
}
