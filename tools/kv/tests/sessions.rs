//! The store under the endpoint's session rules: a client pointed at an endpoint that is no
//! replica (it serves no requests, so it refuses sessions) learns that it was refused, not
//! merely that nothing answered; a replica whose own request timeout would outlast the
//! endpoints' `request_timeout_ns` (clients would reset their sessions first) is refused.

mod common;

use common::*;
use erpc_dataplane::clock::SimClock;
use erpc_dataplane::fabric::RxBuf;
use erpc_dataplane::Clock;
use erpc_dataplane::SmError;
use erpc_kv::client::{self, next_deadline_ns, Outcome};
use erpc_kv::cluster::{sim_rpc_config, Cluster};
use erpc_kv::{ClientConfig, SimOptions};
use std::rc::Rc;

#[test]
fn a_client_pointed_at_an_endpoint_that_is_no_replica_is_told_it_was_refused() {
    let mut c = sim(SimOptions::default());
    elect(&mut c);
    // Port 3 is the cluster's client endpoint: it registers no request handler.
    let fab = c.fabric().expect("simulated");
    let not_a_replica = fab.addr(3);
    let port = fab.attach(RxBuf::storage(64).leak());
    let mut cc = ClientConfig::new(vec![not_a_replica], 1);
    cc.reconnect_ns = 5 * MS;
    cc.backoff_ns = MS;
    cc.op_timeout_ns = 100 * MS;
    let e = c.add_client(fab.nic(port, 0), cc).expect("client endpoint");
    assert!(c.run_until(100 * MS, |c| c.clients[e].ctx().connect_error(0).is_some()), "no answer to the connect");
    let k = c.clients[e].ctx();
    assert_eq!(k.connect_error(0), Some(SmError::Refused));
    assert_eq!(k.refusal(), Some((0, SmError::Refused)));
    assert_eq!(k.connected(), 0);
    // The reconnection is a timer no packet announces: a client that blocks between polls
    // must wake for it.
    let now = c.clients[e].clock().now_ns();
    let due = next_deadline_ns(&c.clients[e]).expect("a reconnection is due");
    assert!(now < due && due <= now + 5 * MS, "due at {due}, now {now}");
    // An operation with no replica to take it waits out the 1 ms backoff: its retry is due too.
    client::submit(&mut c.clients[e], 0, put(b"k", b"v"));
    assert_eq!(next_deadline_ns(&c.clients[e]), Some(due.min(now + MS)));
    assert!(c.run_until(S, |c| !c.clients[e].ctx().busy(0)), "the operation did not finish");
    let d = c.clients[e].ctx_mut().done.pop_back().expect("done");
    let Outcome::Failed(why) = d.outcome else { panic!("{:?}", d.outcome) };
    assert!(why.starts_with("no replica accepted a session within 0.1 s: replica 1: the server refused"), "{why}");
    // The real replicas serve the cluster's own client meanwhile. Connected to every replica,
    // with its operation in flight or done, it has nothing to retry: only packets bring work.
    client::submit(&mut c.clients[0], 0, put(b"k", b"v"));
    assert_eq!(next_deadline_ns(&c.clients[0]), None);
    assert!(c.run_until(S, |c| !c.clients[0].ctx().busy(0)), "the operation did not finish");
    assert_eq!(c.clients[0].ctx_mut().done.pop_back().expect("done").outcome, Outcome::Ok);
    assert_eq!(c.clients[0].ctx().refusal(), None);
    assert_eq!(next_deadline_ns(&c.clients[0]), None);
}

#[test]
fn a_store_request_timeout_past_the_endpoints_request_timeout_is_refused() {
    let o = SimOptions::default();
    let build = |request_timeout_ns: u64| {
        let sc = Rc::new(SimClock::new());
        let rpc_cfg = erpc_dataplane::RpcConfig { request_timeout_ns, ..sim_rpc_config(1) };
        // `fast`: the store answers try-again after 200 ticks of 1 ms.
        Cluster::on_fabric(&o, sc.clone(), Some(sc), rpc_cfg, fast, |c| c)
    };
    let Err(e) = build(200 * MS) else { panic!("a 200 ms store timeout against a 200 ms request timeout") };
    assert!(matches!(e, erpc_kv::Error::Config(_)), "{e:?}");
    assert!(
        e.to_string().contains(
            "request timeout (200 ticks of 1000 us) must be shorter than the endpoints' request_timeout_ns (200 ms)"
        ),
        "{e}"
    );
    let mut c = build(201 * MS).expect("a store timeout under the request timeout");
    elect(&mut c);
    assert_eq!(run_op(&mut c, 0, 0, put(b"k", b"v"), S).outcome, Outcome::Ok);
}
