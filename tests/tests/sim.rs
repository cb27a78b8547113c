//! The simulated datacenter (`erpc sim`): the network model's timing, and the incast, loss and
//! scale experiments at reduced sizes, with assertions on drops, goodput and queues.
//!
//! What it covers: the simulated datacenter — one RPC's latency equals the model's four
//! serializations and propagation delays (two more on two layers), a 100-way incast (1 MB each)
//! fills the link without drops and with a shorter queue than without congestion control, an incast
//! into a 256 KB buffer drops thousands of frames and still completes every RPC, goodput at 1e-4
//! loss ≥ 0.9 × lossless and collapsing at 1e-2, runs reproducible from their seed, 3,000 sessions
//! with their memory per session, bad arguments refused. The simulated NIC reads transmitted frames
//! lazily (one event-loop iteration late), like a real NIC with unsignaled sends, so a protocol bug
//! that reuses a buffer before `tx_flush()` shows up as corrupted data. Every fabric run is
//! reproducible from its seed.

use erpc_tools::sim::{self, IncastArgs, LossArgs, NetArgs, ScaleArgs};

fn incast(senders: usize, size: usize, cc: bool, buffer_mb: f64) -> sim::IncastReport {
    let a = IncastArgs {
        senders,
        size,
        net: NetArgs { no_cc: !cc, buffer_mb, ..NetArgs::default() },
        ..IncastArgs::default()
    };
    sim::incast(&a).expect("incast runs")
}

#[test]
fn one_rpc_takes_four_serializations_and_four_propagation_delays() {
    // 32-byte request and response: 56 + 32 = 88-byte frames, 112 bytes on the wire with the
    // preamble, FCS and gap: 35.84 ns at 25 Gb/s, rounded up to 36. Four links of 500 ns each.
    let r = incast(1, 32, true, 12.0);
    assert_eq!(r.sim_time_us, 4.0 * (36.0 + 500.0) / 1000.0);
    assert_eq!(r.completion_us, [r.sim_time_us; 3]);
    assert_eq!((r.drops, r.failed, r.retransmissions), (0, 0, 0));
}

#[test]
fn incast_of_100_with_congestion_control_fills_the_link_without_drops_and_a_shorter_queue() {
    let with = incast(100, 1 << 20, true, 12.0);
    let without = incast(100, 1 << 20, false, 12.0);
    for r in [&with, &without] {
        assert_eq!(r.drops, 0, "{r:?}");
        assert_eq!(r.failed, 0, "{r:?}");
        assert!(r.link_utilization >= 0.9, "{r:?}");
        // Goodput: payload of 968 bytes per 1048 on the wire.
        assert!(r.goodput_gbps > 0.9 * 25.0 * 968.0 / 1048.0, "{r:?}");
    }
    // Without congestion control the queue sits at what the credits allow: 100 sessions of
    // 32 packets of 1024 bytes.
    assert!(without.queue_p50_bytes > 3_200_000, "{without:?}");
    assert!(with.queue_p50_bytes < without.queue_p50_bytes * 9 / 10, "{with:?} vs {without:?}");
    assert!(with.rate_updates > 0 && with.paced > 0, "{with:?}");
    assert_eq!(without.rate_updates + without.paced, 0);
}

#[test]
fn incast_into_a_small_buffer_drops_and_every_rpc_still_completes() {
    for cc in [false, true] {
        let r = incast(32, 256 << 10, cc, 0.25);
        assert!(r.drops > 1000, "{r:?}");
        assert!(r.retransmissions > 0, "{r:?}");
        assert_eq!(r.failed, 0, "{r:?}");
        assert!(r.queue_max_bytes <= 256 << 10, "{r:?}");
    }
}

#[test]
fn two_layer_topology_carries_an_incast_across_spines() {
    let a = IncastArgs {
        senders: 24,
        size: 256 << 10,
        net: NetArgs { hosts_per_tor: Some(8), spines: 2, ..NetArgs::default() },
        ..IncastArgs::default()
    };
    let r = sim::incast(&a).unwrap();
    assert_eq!((r.drops, r.failed), (0, 0), "{r:?}");
    assert!(r.link_utilization > 0.5, "{r:?}");
    // One more switch hop each way than on one switch: the 1-RPC latency grows by two links.
    let one = sim::incast(&IncastArgs {
        senders: 1,
        size: 32,
        net: NetArgs { hosts_per_tor: Some(1), spines: 2, ..NetArgs::default() },
        ..IncastArgs::default()
    })
    .unwrap();
    assert_eq!(one.sim_time_us, 8.0 * (36.0 + 500.0) / 1000.0);
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let a = LossArgs {
        rate: 1e-3,
        size: 1 << 20,
        transfers: 16,
        sessions: 4,
        net: NetArgs { seed: 7, ..NetArgs::default() },
    };
    let r1 = sim::loss(&a).unwrap();
    let r2 = sim::loss(&a).unwrap();
    assert_eq!(r1.lossy.sim_time_us, r2.lossy.sim_time_us);
    assert_eq!(r1.lossy.losses, r2.lossy.losses);
    let r3 = sim::loss(&LossArgs { net: NetArgs { seed: 8, ..NetArgs::default() }, ..a }).unwrap();
    assert_ne!((r1.lossy.losses, r1.lossy.sim_time_us), (r3.lossy.losses, r3.lossy.sim_time_us));
}

#[test]
fn goodput_at_loss_rate_1e_4_is_at_least_ninety_percent_of_lossless() {
    let a = LossArgs { rate: 1e-4, size: 4 << 20, transfers: 64, sessions: 8, net: NetArgs::default() };
    let r = sim::loss(&a).unwrap();
    assert!(r.lossy.losses > 20, "{r:?}");
    assert!(r.lossy.retransmissions > 0, "{r:?}");
    assert_eq!(r.lossy.failed + r.lossless.failed, 0);
    assert_eq!(r.lossless.losses, 0);
    assert!(r.goodput_ratio >= 0.9 && r.goodput_ratio < 1.0, "{r:?}");
}

#[test]
fn goodput_collapses_at_loss_rate_1e_2() {
    // Every 8 MB-class transfer loses packets; each loss stalls its slot for the 5 ms RTO.
    let a = LossArgs { rate: 1e-2, size: 1 << 20, transfers: 16, sessions: 8, net: NetArgs::default() };
    let r = sim::loss(&a).unwrap();
    assert!(r.goodput_ratio < 0.3, "{r:?}");
    assert_eq!(r.lossy.failed, 0, "{r:?}");
}

#[test]
fn scale_runs_thousands_of_sessions_and_reports_memory_per_session() {
    let a = ScaleArgs { sessions: 3000, rpcs: 20_000, ..ScaleArgs::default() };
    let r = sim::scale(&a).unwrap();
    assert_eq!(r.many.sessions, 3000);
    assert_eq!(r.one.failed + r.many.failed, 0, "{r:?}");
    assert!(r.one.rpcs_per_sec > 0.0 && r.many.rpcs_per_sec > 0.0);
    // A session record plus a share of the client's buffers: a few KB, not more.
    let sess = core::mem::size_of::<erpc_dataplane::Session>() as f64;
    assert!(r.bytes_per_session >= sess && r.bytes_per_session < sess + 4096.0, "{r:?}");
    assert!(r.many.server_bytes_per_session >= sess, "{r:?}");
    // The server keeps no request buffer per session (one-packet requests share a pool): its
    // record plus the slot's stored response, under 2 KB more.
    assert!(r.many.server_bytes_per_session < sess + 2048.0, "{r:?}");
}

#[test]
fn scale_on_huge_pages_runs_the_same() {
    let a = ScaleArgs { sessions: 1000, rpcs: 10_000, huge_pages: true, ..ScaleArgs::default() };
    let r = sim::scale(&a).unwrap();
    assert!(r.huge_pages);
    assert_eq!(r.one.failed + r.many.failed, 0, "{r:?}");
    assert!(r.one.rpcs_per_sec > 0.0 && r.many.rpcs_per_sec > 0.0);
    assert_eq!(r.json()["huge_pages"], true);
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    assert!(sim::incast(&IncastArgs { senders: 0, ..IncastArgs::default() }).is_err());
    assert!(sim::incast(&IncastArgs { size: 9 << 20, ..IncastArgs::default() }).is_err());
    assert!(sim::loss(&LossArgs { rate: 1.5, ..LossArgs::default() }).is_err());
    assert!(sim::scale(&ScaleArgs { sessions: 70_000, ..ScaleArgs::default() }).is_err());
    assert!(sim::incast(&IncastArgs { resp_size: 1 << 20, size: 4096, ..IncastArgs::default() }).is_err());
    assert!(sim::incast(&IncastArgs { start_jitter_us: u64::MAX, ..IncastArgs::default() }).is_err());
    let e = sim::incast(&IncastArgs { senders: 4096, ..IncastArgs::default() }).unwrap_err();
    assert!(e.to_string().contains("GiB of message buffers"), "{e}");
    for bad_net in [
        NetArgs { buffer_mb: 0.0, ..NetArgs::default() },
        NetArgs { link_gbps: f64::NAN, ..NetArgs::default() },
        NetArgs { link_gbps: 1e-20, ..NetArgs::default() },
        NetArgs { link_delay_ns: u64::MAX, ..NetArgs::default() },
        NetArgs { spines: 0, hosts_per_tor: Some(4), ..NetArgs::default() },
        NetArgs { mtu: 64, ..NetArgs::default() },
    ] {
        assert!(sim::incast(&IncastArgs { net: bad_net, ..IncastArgs::default() }).is_err());
    }
}
