//! One queue pair: what bring-up creates, unwinding after a failure at each queue, steering
//! and vport step, the teardown of the root flow table, page requests during operation.

use erpc_dataplane::transport::RxPacket;
use erpc_dataplane::Transport;
use erpc_driver::mlx5::cmd::CmdError;
use erpc_driver::mlx5::layout::op;
use erpc_driver::mlx5::{Mlx5Error, Mlx5Nic};
use erpc_tests::mlx5_model::QueueState;

use crate::harness::*;

#[test]
fn bring_up_makes_a_ready_queue_pair_and_teardown_leaves_nothing() {
    let p = pair(|_| {}, |_| {});
    let (cqs, sqs, rqs) = p.ma.queues();
    assert_eq!(cqs.len(), 2, "one CQ for each direction");
    assert_eq!(sqs.len(), 1);
    assert_eq!(rqs.len(), 1);
    assert_eq!(p.ma.sq(p.a.sqn().0).expect("SQ").state, QueueState::Rdy);
    let rq = p.ma.rq(rqs[0]).expect("RQ");
    assert_eq!(rq.state, QueueState::Rdy);
    let st = rq.striding.expect("a striding RQ");
    assert_eq!((st.strides, st.stride_bytes), (512, 1024), "{st:?}");
    assert!(p.ma.root_flow_table().is_some());
    assert_eq!(p.ma.flow_entries().len(), 1);
    assert!(p.ma.vport().2 .0, "promiscuous unicast");
    let ops = p.ma.opcodes();
    let i = ops.iter().position(|&o| o == op::QUERY_NIC_VPORT_CONTEXT).expect("vport query");
    assert_eq!(
        ops[i..],
        [
            // The device: vport, its UAR, PD, transport domain, lkey, EQ, the steering table.
            op::QUERY_NIC_VPORT_CONTEXT,
            op::ACCESS_REGISTER,
            op::MODIFY_NIC_VPORT_CONTEXT,
            op::ALLOC_UAR,
            op::ALLOC_PD,
            op::ALLOC_TRANSPORT_DOMAIN,
            op::QUERY_SPECIAL_CONTEXTS,
            op::CREATE_EQ,
            op::CREATE_FLOW_TABLE,
            op::CREATE_FLOW_GROUP,
            op::SET_FLOW_TABLE_ROOT,
            // The queue pair: its own UAR, CQs, TIS, SQ, RQ, TIR and flow entry.
            op::ALLOC_UAR,
            op::CREATE_CQ,
            op::CREATE_CQ,
            op::CREATE_TIS,
            op::CREATE_SQ,
            op::MODIFY_SQ,
            op::CREATE_RQ,
            op::MODIFY_RQ,
            op::CREATE_TIR,
            op::SET_FLOW_TABLE_ENTRY,
        ]
    );
    let Pair { ma, a, .. } = p;
    drop(a);
    let r = ma.teardown_report();
    assert!(r.clean(), "{r:?}");
    no_violations(&ma);
}

/// A command failure at each queue, steering and vport step is reported naming the command,
/// and everything created before it is destroyed: the device ends disabled, holding no pages
/// and no objects.
#[test]
fn a_failure_at_each_queue_step_unwinds_cleanly() {
    let steps = [
        (op::QUERY_NIC_VPORT_CONTEXT, 0),
        (op::ACCESS_REGISTER, 0),
        (op::MODIFY_NIC_VPORT_CONTEXT, 0),
        (op::ALLOC_UAR, 0),
        (op::ALLOC_PD, 0),
        (op::ALLOC_TRANSPORT_DOMAIN, 0),
        (op::QUERY_SPECIAL_CONTEXTS, 0),
        (op::CREATE_EQ, 0),
        (op::CREATE_FLOW_TABLE, 0),
        (op::CREATE_FLOW_GROUP, 0),
        (op::SET_FLOW_TABLE_ROOT, 0),
        (op::ALLOC_UAR, 1),
        (op::CREATE_CQ, 0),
        (op::CREATE_CQ, 1),
        (op::CREATE_TIS, 0),
        (op::CREATE_SQ, 0),
        (op::MODIFY_SQ, 0),
        (op::CREATE_RQ, 0),
        (op::MODIFY_RQ, 0),
        (op::CREATE_TIR, 0),
        (op::SET_FLOW_TABLE_ENTRY, 0),
    ];
    for (opcode, nth) in steps {
        let (m, space) = model(1, |_| {});
        m.fail_nth(opcode, nth, 0x3, 0x1234);
        let e = Mlx5Nic::with_bar(m.clone(), space, nic_cfg(1)).err().expect("bring-up must fail");
        match &e {
            Mlx5Error::Cmd(CmdError::Failed { opcode: o, status: 0x3, syndrome: 0x1234 }) if *o == opcode => {}
            other => panic!("{}: {other:?}", op::name(opcode)),
        }
        assert!(e.to_string().contains(op::name(opcode)), "{e}");
        let r = m.teardown_report();
        assert!(r.clean(), "after {} #{nth}: {r:?}", op::name(opcode));
        no_violations(&m);
    }
}

/// Without `reset_root_to_default` the root flow table is not disconnected (SET_FLOW_TABLE_ROOT
/// op_mod 1 is refused there): teardown destroys it once empty, and every teardown command
/// succeeds. With it, the root is disconnected first.
#[test]
fn the_root_flow_table_is_torn_down_as_the_device_allows() {
    for reset in [true, false] {
        let (m, space) = model(1, |c| c.caps.reset_root_to_default = reset);
        let nic = Mlx5Nic::with_bar(m.clone(), space, nic_cfg(1)).expect("bring-up");
        let before = m.command_log().len();
        drop(nic);
        let teardown = &m.command_log()[before..];
        let failed: Vec<_> = teardown.iter().filter(|c| c.status != 0).collect();
        assert!(failed.is_empty(), "reset_root_to_default {reset}: {failed:?}");
        let disconnects = teardown.iter().filter(|c| c.opcode == op::SET_FLOW_TABLE_ROOT).count();
        assert_eq!(disconnects, usize::from(reset), "reset_root_to_default {reset}");
        assert!(m.teardown_report().clean(), "{:?}", m.teardown_report());
        no_violations(&m);
    }
}

#[test]
fn firmware_page_requests_during_operation_are_served() {
    let mut p = pair(|_| {}, |c| c.eq_poll_interval = 4);
    let held = p.ma.pages_held();
    p.ma.request_pages(40).expect("page request EQE");
    let mut out = [RxPacket::EMPTY; 4];
    for _ in 0..4 {
        assert_eq!(p.a.rx_burst(&mut out), 0);
    }
    assert_eq!(p.ma.pages_held(), held + 40, "{:?}", p.a.stats());
    assert_eq!(p.a.pages_given(), held + 40);
    p.ma.request_pages(-25).expect("page return EQE");
    p.a.poll_events();
    assert_eq!(p.ma.pages_held(), held + 15);
    let s = p.a.stats();
    assert_eq!((s.page_requests, s.pages_given, s.pages_returned, s.page_request_failures), (2, 40, 25, 0));
    no_violations(&p.ma);
}
