//! Several queue pairs on one ConnectX function, one endpoint each: every queue's own objects
//! and its flow entry checked against the device model command by command, frames reaching
//! only their queue, closing one queue, and endpoints on several threads with one closing
//! mid-run.

use erpc_dataplane::transport::{RxPacket, TxPacket};
use erpc_dataplane::Transport;
use erpc_driver::mlx5::{Mlx5Device, Mlx5DeviceConfig, Mlx5Error, Mlx5Queue, Mlx5QueueConfig};
use erpc_hugepages::{DmaSpace, PageSize};
use erpc_tests::mesh::{run_mesh, MeshConfig};
use erpc_tests::mlx5_model::{Mlx5Model, QueueState};
use erpc_tests::scenarios::dma_endpoint_memory_sessions;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

const PORT: u16 = 31850;

type Dev = Mlx5Device<Mlx5Model>;
type Queue = Mlx5Queue<Mlx5Model>;

fn device(last: u8, max_queues: u32) -> (Dev, Mlx5Model, Arc<DmaSpace>) {
    let (m, space) = model(last, |_| {});
    let cfg = Mlx5DeviceConfig { hca: cfg(), ipv4: [10, 0, 0, last], ..Default::default() }.with_max_queues(max_queues);
    let dev = Mlx5Device::with_bar(m.clone(), space.clone(), cfg).expect("bring-up");
    (dev, m, space)
}

/// Small queues: 4 receive WQEs of 512 strides of 2 KiB.
fn qcfg(port: u16) -> Mlx5QueueConfig {
    Mlx5QueueConfig { rq_wqes: 4, stride_size: 2048, ..Mlx5QueueConfig::port(port) }
}

fn queues(dev: &Dev, n: u16) -> Vec<Queue> {
    (0..n).map(|i| dev.open_queue(qcfg(PORT + i)).expect("open queue")).collect()
}

/// What the model holds for queue `q`: a flow entry at its index matching our MAC, IPv4, UDP
/// and its port alone, leading to an RDY striding RQ of its own, whose CQ is not its SQ's; an
/// RDY SQ on a UAR of its own.
fn check_queue(m: &Mlx5Model, dev: &Dev, q: &Queue, others: &[&Queue]) -> Result<(), String> {
    let a = q.local_addr();
    let entries = m.flow_entries();
    let e = entries.iter().find(|e| e.index == q.index()).ok_or(format!("no flow entry at index {}", q.index()))?;
    let want = (Some(dev.mac()), Some(0x0800), Some(17), Some(a.ipv4), Some(a.udp_port));
    let got = (e.matches.dmac, e.matches.ethertype, e.matches.ip_protocol, e.matches.dst_ipv4, e.matches.udp_dport);
    if got != want {
        return Err(format!("entry {}: matches {got:?}, not {want:?}", e.index));
    }
    let [rqn] = e.rqs[..] else { return Err(format!("entry {} leads to RQs {:?}", e.index, e.rqs)) };
    let rq = m.rq(rqn).ok_or("no such RQ")?;
    let sq = m.sq(q.sqn().0).ok_or("no such SQ")?;
    if rq.state != QueueState::Rdy || sq.state != QueueState::Rdy {
        return Err(format!("RQ {:?} / SQ {:?} not ready", rq.state, sq.state));
    }
    if rq.striding.is_none() || rq.cqn == sq.cqn {
        return Err(format!("RQ {rq:?} and SQ {sq:?}: a striding RQ and a CQ each"));
    }
    for o in others {
        let os = m.sq(o.sqn().0).ok_or("no such SQ")?;
        let oe = entries.iter().find(|e| e.index == o.index()).ok_or("no entry")?;
        if os.uar == sq.uar || os.cqn == sq.cqn || oe.rqs == e.rqs || oe.tirs == e.tirs {
            return Err(format!("queues {} and {} share a UAR, CQ, TIR or RQ", q.index(), o.index()));
        }
    }
    Ok(())
}

#[test]
fn each_queue_has_its_own_objects_and_a_flow_entry_for_its_port() {
    let (dev, m, _space) = device(1, 4);
    let mut qs = queues(&dev, 3);
    let (cqs, sqs, rqs) = m.queues();
    assert_eq!((cqs.len(), sqs.len(), rqs.len()), (6, 3, 3), "two CQs, an SQ and an RQ per queue pair");
    assert_eq!(m.flow_entries().len(), 3);
    let (t, _, log) = m.flow_tables()[0];
    assert_eq!((m.root_flow_table(), log), (Some(t), 2), "one root table of 4 entries");
    for (k, q) in qs.iter().enumerate() {
        assert_eq!(q.index(), k as u32);
        let others: Vec<&Queue> = qs.iter().filter(|o| o.index() != q.index()).collect();
        check_queue(&m, &dev, q, &others).unwrap();
    }
    // Closing queue 1 destroys its objects and its entry only.
    let before = m.command_log().len();
    drop(qs.remove(1));
    let ops: Vec<u16> = m.command_log()[before..].iter().map(|c| c.opcode).collect();
    use erpc_driver::mlx5::layout::op;
    assert_eq!(
        ops,
        [
            op::DELETE_FLOW_TABLE_ENTRY,
            op::DESTROY_TIR,
            op::DESTROY_RQ,
            op::DESTROY_SQ,
            op::DESTROY_TIS,
            op::DESTROY_CQ,
            op::DESTROY_CQ,
            op::DEALLOC_UAR
        ],
        "the flow entry goes first"
    );
    assert_eq!(m.flow_entries().iter().map(|e| e.index).collect::<Vec<_>>(), vec![0, 2]);
    let (cqs, sqs, rqs) = m.queues();
    assert_eq!((cqs.len(), sqs.len(), rqs.len()), (4, 2, 2));
    check_queue(&m, &dev, &qs[0], &[&qs[1]]).unwrap();
    check_queue(&m, &dev, &qs[1], &[&qs[0]]).unwrap();
    assert_eq!(dev.open_queues(), vec![0, 2]);
    // The free index is reused.
    let again = dev.open_queue(qcfg(PORT + 7)).unwrap();
    assert_eq!(again.index(), 1);
    check_queue(&m, &dev, &again, &[&qs[0], &qs[1]]).unwrap();
    no_violations(&m);
    drop((qs, again, dev));
    assert!(m.teardown_report().clean(), "{:?}", m.teardown_report());
}

#[test]
fn queues_are_limited_and_ports_checked() {
    let (dev, m, _space) = device(1, 2);
    let _qs = queues(&dev, 2);
    let e = dev.open_queue(qcfg(1)).err().expect("no queue left");
    assert!(matches!(&e, Mlx5Error::Config(s) if s.contains("all 2 queue pairs")), "{e}");
    let (dev2, _m2, _s2) = device(2, 4);
    let _q = dev2.open_queue(qcfg(PORT)).unwrap();
    let e = dev2.open_queue(qcfg(PORT)).err().expect("port taken");
    assert!(e.to_string().contains("already an endpoint's"), "{e}");
    no_violations(&m);
}

/// The payloads of the frames waiting on `q` (released after reading).
fn drain(q: &mut Queue) -> Vec<Vec<u8>> {
    let mut out = [RxPacket::EMPTY; 32];
    let mut got = vec![];
    for _ in 0..4 {
        let n = q.rx_burst(&mut out);
        got.extend(out[..n].iter().map(payload_of));
        q.rx_release(&out[..n]);
    }
    got
}

#[test]
fn frames_reach_only_their_endpoints_queue() {
    let (a, ma, _sa) = device(1, 4);
    let (b, mb, sb) = device(2, 4);
    let _link = Mlx5Model::connect(&ma, &mb);
    let mut qa = queues(&a, 3);
    let mut qb = queues(&b, 1);
    let mut f = Frames::new(&sb, 4, 256);
    let src = qb[0].local_addr();
    let pkts: Vec<TxPacket> =
        qa.iter().enumerate().map(|(k, q)| f.put(k, &src, &q.local_addr(), &[k as u8; 32])).collect();
    for p in &pkts {
        while qb[0].tx_burst(std::slice::from_ref(p)) == 0 {}
    }
    qb[0].tx_flush();
    for (k, q) in qa.iter_mut().enumerate() {
        assert_eq!(drain(q), vec![vec![k as u8; 32]], "queue {k}");
    }
    let entries = ma.flow_entries();
    for q in &qa {
        let e = entries.iter().find(|e| e.index == q.index()).unwrap();
        assert_eq!(ma.rq(e.rqs[0]).unwrap().steered, 1, "the model steered one frame to queue {}", q.index());
    }
    // A frame for a port no queue has misses the table.
    let mut nobody = qa[0].local_addr();
    nobody.udp_port = 9;
    let stray = f.put(3, &src, &nobody, &[9; 32]);
    let drops = ma.counters().rx_steering_drops;
    while qb[0].tx_burst(&[stray]) == 0 {}
    qb[0].tx_flush();
    assert!(qa.iter_mut().all(|q| drain(q).is_empty()));
    assert!(ma.counters().rx_steering_drops > drops, "dropped by the device");
    let entries = ma.flow_entries();
    assert!(entries.iter().all(|e| ma.rq(e.rqs[0]).unwrap().steered == 1), "no RQ got it");
    no_violations(&ma);
    no_violations(&mb);
}

/// Five endpoints on two functions (three and two), one thread each; endpoint 1 closes after
/// the first phase. The model carries frames between the two functions only (it does not model
/// a vport's loopback to itself), so endpoints talk to the other function's.
#[test]
fn endpoints_on_threads_exchange_rpcs_and_one_closes_mid_run() {
    let (a, ma, sa) = device(1, 4);
    let (b, mb, sb) = device(2, 4);
    let _link = Mlx5Model::connect(&ma, &mb);
    let mem = |s: &Arc<DmaSpace>| dma_endpoint_memory_sessions(s, 24 << 20, PageSize::Ordinary, 16).unwrap();
    let mut eps: Vec<(Queue, _)> = queues(&a, 3).into_iter().map(|q| (q, mem(&sa))).collect();
    eps.extend(queues(&b, 2).into_iter().map(|q| (q, mem(&sb))));
    let cfg = MeshConfig {
        small_rpcs: 100,
        large_size: 1 << 20,
        loss: 0.02,
        loss_small_rpcs: 50,
        phase_timeout: Duration::from_secs(60),
        close_after_phase1: Some(1),
        talks: Some(|i, j| (i < 3) != (j < 3)),
        ..MeshConfig::default()
    };
    let rpc = erpc_dataplane::RpcConfig {
        keepalive_ns: 30_000_000_000,
        session_timeout_ns: 60_000_000_000,
        server_idle_timeout_ns: 300_000_000_000,
        ..rpc_cfg()
    };
    let reports = run_mesh(eps, rpc, &cfg, |q: &Queue| {
        let s = q.stats();
        if s.rx_error_cqes + s.rx_malformed_cqes + s.tx_error_cqes + s.tx_flush_timeouts + s.rx_bad_release > 0 {
            return Err(format!("queue {}: {s:?}", q.index()));
        }
        Ok(format!("queue {}: {} frames received", q.index(), s.rx_packets))
    })
    .unwrap();
    for r in &reports {
        println!("{r}");
    }
    assert!(reports[1].closed);
    assert!(reports.iter().map(|r| r.retransmissions).sum::<u64>() > 0, "loss forced retransmissions");
    assert_eq!(a.open_queues(), Vec::<u32>::new());
    no_violations(&ma);
    no_violations(&mb);
    // Everything the queues made is gone; the devices' own objects remain until they go.
    assert_eq!(ma.queues(), (vec![], vec![], vec![]));
    assert!(ma.flow_entries().is_empty());
    drop((a, b));
    assert!(ma.teardown_report().clean() && mb.teardown_report().clean());
}
