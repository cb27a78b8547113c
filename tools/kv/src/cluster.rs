//! Endpoints for replicas and clients, and a cluster of them polled round-robin on one thread:
//! on the dataplane's simulated fabric (deterministic from a seed when its clock is simulated,
//! which is what the tests use), or on any other transport (`erpc kv local`).

use crate::client::{self, ClientConfig, ClientRpc, KvClient};
use crate::error::Error;
use crate::replica::{self, Replica, ReplicaConfig, ReplicaRpc};
use erpc_dataplane::clock::{Clock, SimClock};
use erpc_dataplane::fabric::{Fabric, LinkParams, RxBuf, SimNic};
use erpc_dataplane::transport::Transport;
use erpc_dataplane::{DmaRegion, OwnedMemory, Rpc, RpcConfig};
use std::rc::Rc;

/// The clock every endpoint of a cluster reads, shared by the endpoints of one thread.
pub type Clk = Rc<dyn Clock>;
/// A port of the simulated fabric.
pub type FabricNic = SimNic<'static, 'static, Clk>;

/// Requests an endpoint can queue behind busy slots.
const BACKLOG: usize = 256;

/// A zeroed heap region of `bytes` for the software transports (UDP, the simulated fabric), at
/// a made-up bus address; zeroed pages cost nothing until touched. The region is leaked: msgbufs
/// carry no lifetime and may outlive their endpoint, so their memory stays valid for the rest of
/// the program (see `DmaRegion`).
pub fn heap_region(bytes: usize) -> DmaRegion {
    DmaRegion::from_static(vec![0u8; bytes].leak(), 0x1_0000_0000)
}

/// Msgbuf memory of a replica's endpoint: Raft requests and their 64 KiB response buffers for
/// every peer's window, snapshot parts, client requests.
pub const REPLICA_REGION: usize = 128 << 20;
/// Sessions of a replica's endpoint: its peers, theirs, and clients.
pub const REPLICA_SESSIONS: usize = 256;

/// Builds replica `cfg.id`'s endpoint on `nic`, recovering its log if durable, with its handlers
/// registered (so it accepts sessions from the start). Refused if the replica would hold a
/// client's request as long as `rpc_cfg.request_timeout_ns` (see
/// [`ReplicaConfig::request_timeout_ticks`]).
///
/// [`ReplicaConfig::request_timeout_ticks`]: crate::ReplicaConfig::request_timeout_ticks
pub fn replica_endpoint<T: Transport>(
    nic: T,
    clock: Clk,
    rpc_cfg: RpcConfig,
    cfg: ReplicaConfig,
) -> Result<ReplicaRpc<T, Clk>, Error> {
    replica_endpoint_in(nic, heap_region(REPLICA_REGION), clock, rpc_cfg, cfg)
}

/// [`replica_endpoint`] with its msgbufs in `region` (of at least [`REPLICA_REGION`] bytes):
/// memory the transport can send from, such as an AF_XDP UMEM or DMA-mapped hugepages.
pub fn replica_endpoint_in<T: Transport>(
    nic: T,
    region: DmaRegion,
    clock: Clk,
    rpc_cfg: RpcConfig,
    cfg: ReplicaConfig,
) -> Result<ReplicaRpc<T, Clk>, Error> {
    let hold = cfg.request_timeout_ticks.saturating_mul(cfg.tick_ns);
    if hold >= rpc_cfg.request_timeout_ns {
        return Err(Error::Config(format!(
            "the store's request timeout ({} ticks of {} us) must be shorter than the endpoints' \
             request_timeout_ns ({} ms): clients would reset their sessions before the store answers \
             try-again (fewer request_timeout_ticks, or a longer request_timeout_ns)",
            cfg.request_timeout_ticks,
            cfg.tick_ns / 1000,
            rpc_cfg.request_timeout_ns / 1_000_000
        )));
    }
    if region.len() < REPLICA_REGION {
        return Err(Error::Config(format!(
            "a replica's msgbuf region needs {REPLICA_REGION} bytes, not {}",
            region.len()
        )));
    }
    let r = Replica::new(cfg)?;
    let mem = OwnedMemory::new(region, REPLICA_SESSIONS, BACKLOG);
    let mut rpc = Rpc::new(nic, clock, r, mem, rpc_cfg).map_err(|cause| Error::Endpoint { what: "replica", cause })?;
    Replica::register(&mut rpc);
    Ok(rpc)
}

/// Msgbuf memory a client endpoint with `cfg` needs: 32 MiB, and four buffers of the largest
/// value per logical client.
pub fn client_region_bytes(cfg: &ClientConfig) -> usize {
    (32 << 20) + cfg.clients * 4 * (cfg.max_value + 4096).next_power_of_two()
}

/// Builds a client endpoint on `nic`.
pub fn client_endpoint<T: Transport>(
    nic: T,
    clock: Clk,
    rpc_cfg: RpcConfig,
    cfg: ClientConfig,
) -> Result<ClientRpc<T, Clk>, Error> {
    let region = heap_region(client_region_bytes(&cfg));
    client_endpoint_in(nic, region, clock, rpc_cfg, cfg)
}

/// [`client_endpoint`] with its msgbufs in `region` (of at least [`client_region_bytes`]).
pub fn client_endpoint_in<T: Transport>(
    nic: T,
    region: DmaRegion,
    clock: Clk,
    rpc_cfg: RpcConfig,
    cfg: ClientConfig,
) -> Result<ClientRpc<T, Clk>, Error> {
    let need = client_region_bytes(&cfg);
    if region.len() < need {
        return Err(Error::Config(format!("this client's msgbuf region needs {need} bytes, not {}", region.len())));
    }
    let mut rpc = Rpc::new(nic, clock, KvClient::new(cfg), OwnedMemory::new(region, 64, BACKLOG), rpc_cfg)
        .map_err(|cause| Error::Endpoint { what: "client", cause })?;
    KvClient::register(&mut rpc);
    Ok(rpc)
}

/// Replicas and client endpoints polled in turn on this thread.
pub struct Cluster<T: Transport> {
    pub clock: Clk,
    /// `None` while a replica is down.
    pub replicas: Vec<Option<ReplicaRpc<T, Clk>>>,
    pub clients: Vec<ClientRpc<T, Clk>>,
    pub cfgs: Vec<ReplicaConfig>,
    pub rpc_cfg: RpcConfig,
    new_nic: Box<dyn FnMut(usize) -> Result<T, Error>>,
    /// Moves simulated time on after each round (simulated clusters).
    sim: Option<SimTime>,
    /// Storage failures, by replica (a failed replica is taken down).
    pub failures: Vec<(usize, Error)>,
}

struct SimTime {
    clock: Rc<SimClock>,
    fab: &'static Fabric<'static, Clk>,
    idle_ns: u64,
    /// Every link's parameters, but for cut links.
    links: LinkParams,
}

impl<T: Transport> Cluster<T> {
    /// A cluster whose replica `i` runs on the transport `new_nic(i)` gives (called again when
    /// it restarts), with `cfgs[i]`.
    pub fn new(
        clock: Clk,
        rpc_cfg: RpcConfig,
        cfgs: Vec<ReplicaConfig>,
        mut new_nic: Box<dyn FnMut(usize) -> Result<T, Error>>,
    ) -> Result<Cluster<T>, Error> {
        let mut replicas = Vec::new();
        for (i, c) in cfgs.iter().enumerate() {
            replicas.push(Some(replica_endpoint(new_nic(i)?, clock.clone(), rpc_cfg, c.clone())?));
        }
        Ok(Cluster { clock, replicas, clients: Vec::new(), cfgs, rpc_cfg, new_nic, sim: None, failures: Vec::new() })
    }

    /// Adds a client endpoint.
    pub fn add_client(&mut self, nic: T, cfg: ClientConfig) -> Result<usize, Error> {
        self.clients.push(client_endpoint(nic, self.clock.clone(), self.rpc_cfg, cfg)?);
        Ok(self.clients.len() - 1)
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// One round: every live replica and client endpoint runs one iteration; simulated time
    /// moves on.
    pub fn step(&mut self) {
        for (i, r) in self.replicas.iter_mut().enumerate() {
            if let Some(rpc) = r {
                if let Err(e) = replica::poll(rpc) {
                    self.failures.push((i, e));
                    *r = None;
                }
            }
        }
        for c in &mut self.clients {
            client::poll(c);
        }
        if let Some(s) = &self.sim {
            let now = s.clock.now_ns();
            match s.fab.next_due() {
                Some(t) if t > now => s.clock.set(t),
                Some(_) => s.clock.advance(100),
                None => s.clock.advance(s.idle_ns),
            }
        }
    }

    /// Runs rounds until `cond` holds or `max_ns` of the clock pass; whether it held.
    pub fn run_until(&mut self, max_ns: u64, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.now() + max_ns;
        loop {
            if cond(self) {
                return true;
            }
            if self.now() >= end {
                return false;
            }
            self.step();
        }
    }

    /// Runs rounds for `ns` of the clock.
    pub fn run_for(&mut self, ns: u64) {
        self.run_until(ns, |_| false);
    }

    /// The live replica that leads in the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        self.replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().filter(|r| r.ctx().is_leader()).map(|r| (r.ctx().term(), i)))
            .max()
            .map(|(_, i)| i)
    }

    pub fn replica(&self, i: usize) -> Option<&Replica> {
        self.replicas[i].as_ref().map(|r| r.ctx())
    }

    /// Stops replica `i` at once: its endpoint and all its volatile state are dropped (a crash).
    pub fn kill(&mut self, i: usize) {
        self.replicas[i] = None;
        if let Some(s) = &self.sim {
            s.fab.set_up(i, false);
        }
    }

    /// Starts replica `i` again on a new endpoint at the same address; with `fsync` durability it
    /// recovers its log first.
    pub fn restart(&mut self, i: usize) -> Result<(), Error> {
        self.replicas[i] = None;
        let nic = (self.new_nic)(i)?;
        if let Some(s) = &self.sim {
            s.fab.set_up(i, true);
        }
        self.replicas[i] = Some(replica_endpoint(nic, self.clock.clone(), self.rpc_cfg, self.cfgs[i].clone())?);
        Ok(())
    }
}

/// Options of a cluster on the simulated fabric.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub replicas: usize,
    /// Logical clients per client endpoint (each its own fabric port; 8 ports in all).
    pub client_endpoints: Vec<usize>,
    pub seed: u64,
    /// One-way delay of every link.
    pub link_delay_ns: u64,
    /// Time a round takes when nothing is in flight.
    pub idle_ns: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions { replicas: 3, client_endpoints: vec![1], seed: 1, link_delay_ns: 2_000, idle_ns: 20_000 }
    }
}

/// eRPC settings for simulated clusters: retransmission after 1 ms, sessions reset after 20 ms
/// of silence, so failures are noticed within a few election timeouts.
pub fn sim_rpc_config(seed: u64) -> RpcConfig {
    RpcConfig {
        rto_ns: 1_000_000,
        session_timeout_ns: 20_000_000,
        sm_retry_ns: 2_000_000,
        sm_max_attempts: 5,
        keepalive_ns: 10_000_000,
        server_idle_timeout_ns: 200_000_000,
        seed,
        ..RpcConfig::default()
    }
}

impl Cluster<FabricNic> {
    /// A cluster on the simulated fabric: replicas on ports `0..replicas`, client endpoints
    /// after them. With `sim_clock`, time is simulated (deterministic from `o.seed`); without,
    /// the endpoints read `clock` (a real one: `erpc kv local --transport sim`).
    pub fn on_fabric(
        o: &SimOptions,
        clock: Clk,
        sim_clock: Option<Rc<SimClock>>,
        rpc_cfg: RpcConfig,
        mut cfg: impl FnMut(ReplicaConfig) -> ReplicaConfig,
        client_cfg: impl Fn(ClientConfig) -> ClientConfig,
    ) -> Result<Cluster<FabricNic>, Error> {
        if o.replicas + o.client_endpoints.len() > erpc_dataplane::fabric::MAX_PORTS {
            return Err(Error::Config(format!(
                "the simulated fabric has {} ports, for replicas and client endpoints together",
                erpc_dataplane::fabric::MAX_PORTS
            )));
        }
        // Leaked: the NICs borrow the fabric, and the fabric each port's receive ring, for as
        // long as they live (endpoints may outlive the cluster).
        let fab: &'static Fabric<'static, Clk> = Box::leak(Box::new(Fabric::new(clock.clone(), o.seed)));
        let ports: Vec<usize> =
            (0..o.replicas + o.client_endpoints.len()).map(|_| fab.attach(RxBuf::storage(512).leak())).collect();
        fab.set_all_links(LinkParams { delay_ns: o.link_delay_ns, ..Default::default() });
        let addrs: Vec<_> = ports[..o.replicas].iter().map(|&p| fab.addr(p)).collect();
        let cfgs: Vec<ReplicaConfig> =
            (0..o.replicas).map(|i| cfg(ReplicaConfig::new(i as u64 + 1, addrs.clone()))).collect();
        let mut c = Cluster::new(clock, rpc_cfg, cfgs, Box::new(move |i| Ok(fab.nic(i, 0))))?;
        for (k, &n) in o.client_endpoints.iter().enumerate() {
            let mut cc = ClientConfig::new(addrs.clone(), n);
            cc.seed = o.seed.wrapping_mul(31).wrapping_add(k as u64);
            cc.backoff_ns = 200_000;
            cc.reconnect_ns = 5_000_000;
            c.add_client(fab.nic(ports[o.replicas + k], 0), client_cfg(cc))?;
        }
        if let Some(sc) = sim_clock {
            let links = LinkParams { delay_ns: o.link_delay_ns, ..Default::default() };
            c.sim = Some(SimTime { clock: sc, fab, idle_ns: o.idle_ns, links });
        }
        Ok(c)
    }

    /// A deterministic cluster on the simulated fabric with a simulated clock.
    pub fn simulated(
        o: &SimOptions,
        cfg: impl FnMut(ReplicaConfig) -> ReplicaConfig,
        client_cfg: impl Fn(ClientConfig) -> ClientConfig,
    ) -> Result<Cluster<FabricNic>, Error> {
        let sc = Rc::new(SimClock::new());
        sc.set(1_000_000);
        Cluster::on_fabric(o, sc.clone(), Some(sc), sim_rpc_config(o.seed), cfg, client_cfg)
    }

    /// The simulated fabric (fault injection).
    pub fn fabric(&self) -> Option<&'static Fabric<'static, Clk>> {
        self.sim.as_ref().map(|s| s.fab)
    }

    /// Sets every link's delay and fault rates (this restores cut links too).
    pub fn set_links(&mut self, p: LinkParams) {
        let Some(s) = &mut self.sim else { return };
        s.links = p;
        s.fab.set_all_links(p);
    }

    /// Cuts (or restores) both directions of the links between port `a` and each of `others`.
    pub fn cut(&self, a: usize, others: &[usize], cut: bool) {
        let Some(s) = &self.sim else { return };
        let p = if cut { LinkParams { loss: 1.0, ..s.links } } else { s.links };
        for &b in others {
            s.fab.set_link(a, b, p);
            s.fab.set_link(b, a, p);
        }
    }
}
