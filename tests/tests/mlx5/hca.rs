//! The function: bring-up to INIT_HCA, unwinding after a failure at each step, firmware that
//! never gets ready, firmware pages given and taken later.

use erpc_driver::mlx5::cmd::CmdError;
use erpc_driver::mlx5::layout::op;
use erpc_driver::mlx5::{Hca, Mlx5Error, Stage};
use erpc_tests::mlx5_model::{HcaState, Mlx5Config, Mlx5Model};

use crate::harness::*;

#[test]
fn brings_up_an_initialized_hca_and_tears_it_down_cleanly() {
    let (model, space) = Mlx5Model::with_dma(Mlx5Config { regular_pages: 5, ..Mlx5Config::default() });
    let hca = Hca::bring_up(model.clone(), space, cfg()).expect("bring-up");
    assert_eq!(hca.stage(), Stage::Initialized);
    assert_eq!(model.state(), HcaState::Initialized);
    assert_eq!((hca.issi(), model.issi()), (1, 1), "ISSI 1 selected");
    assert_eq!(hca.pages_given(), 8 + 24 + 5, "boot, init and regular pages");
    assert_eq!(model.pages_held(), 8 + 24 + 5);
    assert_eq!(hca.general_caps().len(), 0x1000);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    assert!(model.iommu().faults().is_empty());
    assert_eq!(
        model.opcodes(),
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
            op::INIT_HCA,
            op::QUERY_PAGES,
            op::MANAGE_PAGES,
            op::QUERY_HCA_CAP,
            op::QUERY_HCA_CAP,
            op::QUERY_HCA_CAP,
        ]
    );
    // The capabilities read (op_mod = type << 1 | current): general twice (before SET_HCA_CAP
    // and after INIT_HCA), then Ethernet offloads (type 1) and flow tables (type 7).
    let caps: Vec<u16> =
        model.command_log().iter().filter(|c| c.opcode == op::QUERY_HCA_CAP).map(|c| c.op_mod).collect();
    assert_eq!(caps, [0x1, 0x1, 0x3, 0xf]);
    drop(hca);
    let r = model.teardown_report();
    assert!(r.clean(), "{r:?}");
    let ops = model.opcodes();
    assert_eq!(&ops[ops.len() - 3..], &[op::TEARDOWN_HCA, op::MANAGE_PAGES, op::DISABLE_HCA]);
    assert!(model.violations().is_empty(), "{:?}", model.violations());
}

/// A command failure at each step of bring-up is reported with the command's name and status,
/// and what was done before it is undone: the device ends disabled with every page back.
#[test]
fn a_failure_at_each_step_unwinds_cleanly() {
    for (opcode, nth) in [
        (op::ENABLE_HCA, 0),
        (op::QUERY_ISSI, 0),
        (op::SET_ISSI, 0),
        (op::QUERY_PAGES, 0),
        (op::MANAGE_PAGES, 0),
        (op::QUERY_HCA_CAP, 0),
        (op::SET_HCA_CAP, 0),
        (op::QUERY_PAGES, 1),
        (op::MANAGE_PAGES, 1),
        (op::INIT_HCA, 0),
        (op::QUERY_PAGES, 2),
        (op::MANAGE_PAGES, 2),
        (op::QUERY_HCA_CAP, 1),
        (op::QUERY_HCA_CAP, 2),
        (op::QUERY_HCA_CAP, 3),
    ] {
        let (model, space) = Mlx5Model::with_dma(Mlx5Config { regular_pages: 3, ..Mlx5Config::default() });
        model.fail_nth(opcode, nth, 0x3, 0xabcd);
        let err = Hca::bring_up(model.clone(), space, cfg()).err().expect("bring-up fails");
        match &err {
            Mlx5Error::Cmd(CmdError::Failed { opcode: o, status: 0x3, syndrome: 0xabcd }) => assert_eq!(*o, opcode),
            e => panic!("{}: {e}", op::name(opcode)),
        }
        assert!(err.to_string().contains(op::name(opcode)), "{err}");
        assert!(err.to_string().contains("bad parameter"), "{err}");
        let what = format!("{} #{}", op::name(opcode), nth + 1);
        let r = model.teardown_report();
        assert!(r.clean(), "{what}: {r:?}");
        assert_eq!(model.state(), HcaState::Disabled, "{what}");
        assert_eq!(model.pages_held(), 0, "{what}");
        assert!(model.violations().is_empty(), "{what}: {:?}", model.violations());
        // Teardown ran exactly as far as bring-up got.
        let ops = model.opcodes();
        let last = *ops.last().unwrap();
        if opcode == op::ENABLE_HCA {
            assert_eq!(ops, [op::ENABLE_HCA], "{what}");
        } else {
            assert_eq!(last, op::DISABLE_HCA, "{what}");
            assert_eq!(
                ops.contains(&op::TEARDOWN_HCA),
                ops.contains(&op::INIT_HCA) && opcode != op::INIT_HCA,
                "{what}"
            );
        }
    }
}

#[test]
fn firmware_that_never_gets_ready_is_a_clear_error() {
    let (model, space) = Mlx5Model::with_dma(Mlx5Config { ready_after_reads: None, ..Mlx5Config::default() });
    model.set_health_syndrome(0x8, 0);
    let e = Hca::bring_up(model.clone(), space, cfg()).err().expect("not ready");
    assert!(matches!(e, Mlx5Error::FirmwareNotReady { health_syndrome: 0x8, .. }), "{e}");
    assert!(e.to_string().contains("did not become ready"), "{e}");
}

/// The firmware asks for more pages during operation, then offers some back.
#[test]
fn pages_asked_for_later_are_given_and_returned() {
    let (model, space) = Mlx5Model::with_dma(Mlx5Config::default());
    let mut hca = Hca::bring_up(model.clone(), space, cfg()).expect("bring-up");
    let before = hca.pages_given();
    hca.give_pages(300).expect("more pages than one command carries");
    assert_eq!(model.pages_held(), before + 300);
    assert_eq!(hca.take_pages(100).expect("take"), 100);
    assert_eq!(hca.pages_given(), before + 200);
    assert_eq!(model.pages_held(), before + 200);
    drop(hca);
    assert!(model.teardown_report().clean(), "{:?}", model.teardown_report());
}
