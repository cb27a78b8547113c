//! Queue objects: CQ, SQ, RQ, TIS, TIR, RQT and Q counter commands, their checks, the queue
//! state machine, and what may not be destroyed while in use.

use erpc_tests::mlx5_model::layout::{
    self, cqc, create_eq, flow, op, q_counter, rqc, rqtc, sqc, status, tirc, tisc, wq, CQN, CTX_BIT, PAS_AT, QN,
};
use erpc_tests::mlx5_model::{syndrome, Mlx5Config, QueueState};

use crate::host::*;
use crate::nic::*;

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
