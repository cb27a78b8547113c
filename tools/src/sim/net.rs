//! The discrete-event network: hosts running real [`Rpc`] endpoints, links with a line rate and
//! a propagation delay, and output-queued switches with a shared, dynamically partitioned
//! drop-tail buffer.
//!
//! # Model
//! * **Time** is simulated, in nanoseconds, on one [`SimClock`] that every endpoint reads. Events
//!   (a host poll, the end of a frame's serialization, a frame's arrival) run in time order, ties
//!   in the order they were scheduled, so a run is a pure function of its configuration and seed.
//! * **Hosts** run their endpoint's event loop when a frame arrives, when their NIC's TX ring
//!   drains after refusing frames, and when the endpoint's next timer is due
//!   ([`Rpc::run_event_loop_timed`]). Their CPU is free: the network is what these experiments
//!   study.
//! * **Links** serialize one frame at a time at their rate, plus 24 bytes of Ethernet overhead
//!   per frame (preamble 8, FCS 4, inter-frame gap 12), then deliver it after their delay.
//! * **Switches** queue frames per output port. All ports of a switch share one buffer; a frame
//!   is admitted if the buffer has room and its port's queue stays below `alpha` times the
//!   buffer's free space (the dynamic threshold of Choudhury and Hahne). Otherwise it is dropped.
//! * **Loss** is injected where frames reach a host: each is dropped with probability `loss`.
//! * **Topologies**: one switch that every host hangs off, or two layers (top-of-rack switches of
//!   `hosts_per_tor` hosts each, every ToR linked to every spine, a flow's spine chosen by a hash
//!   of its addresses and ports).

use super::nic::{dest_host, host_addr, SimHostNic};
use erpc_dataplane::clock::Clock;
use erpc_dataplane::clock::SimClock;
use erpc_dataplane::Rpc;
use hdrhistogram::Histogram;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Ethernet bytes on the wire that a frame buffer does not hold: preamble and start delimiter
/// (8), frame check sequence (4) and the inter-frame gap (12).
pub const WIRE_OVERHEAD: usize = 24;

/// The clock every simulated endpoint reads.
pub type Clk = std::rc::Rc<SimClock>;
/// A simulated host's endpoint; `A` is the application state it carries.
pub type HostRpc<A> = Rpc<'static, SimHostNic, Clk, A>;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Topology {
    /// One switch; host `h` on port `h`.
    Single,
    /// `hosts_per_tor` hosts per top-of-rack switch, every ToR linked to each of `spines` spines.
    TwoLayer { hosts_per_tor: usize, spines: usize },
}

#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub hosts: usize,
    pub topology: Topology,
    /// Line rate of host links, Gb/s.
    pub link_gbps: f64,
    /// Line rate of ToR-spine links, Gb/s.
    pub uplink_gbps: f64,
    /// Propagation delay of every link, ns.
    pub link_delay_ns: u64,
    /// Shared buffer of each switch, bytes.
    pub buffer_bytes: u64,
    /// Dynamic-threshold factor of the shared buffer.
    pub dt_alpha: f64,
    /// Probability that a frame reaching a host is lost.
    pub loss: f64,
    pub mtu: usize,
    /// NIC descriptor rings (frames).
    pub tx_ring: usize,
    pub rx_ring: usize,
    pub seed: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            hosts: 2,
            topology: Topology::Single,
            link_gbps: 25.0,
            uplink_gbps: 25.0,
            link_delay_ns: 500,
            buffer_bytes: 12 << 20,
            dt_alpha: 1.0,
            loss: 0.0,
            mtu: erpc_dataplane::config::DEFAULT_MTU,
            tx_ring: 512,
            rx_ring: 4096,
            seed: 1,
        }
    }
}

/// Where a link leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Host(u32),
    Switch(u32),
}

/// An output port: one direction of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortRef {
    Host(u32),
    Switch(u32, u32),
}

struct Link {
    peer: Node,
    /// Picoseconds per byte on the wire.
    ps_per_byte: u64,
    delay_ns: u64,
    busy: bool,
    /// Time spent serializing since the last `reset_link_counters`.
    busy_ns: u64,
}

impl Link {
    fn new(peer: Node, gbps: f64, delay_ns: u64) -> Self {
        Link { peer, ps_per_byte: (8000.0 / gbps).round() as u64, delay_ns, busy: false, busy_ns: 0 }
    }

    fn wire_ns(&self, len: usize) -> u64 {
        ((len + WIRE_OVERHEAD) as u64 * self.ps_per_byte).div_ceil(1000)
    }
}

/// Time-weighted distribution of one port's queue length.
pub struct QueueStats {
    hist: Histogram<u64>,
    last_ns: u64,
    last_bytes: u64,
    pub max_bytes: u64,
}

impl QueueStats {
    fn new(now: u64, bytes: u64) -> Self {
        QueueStats {
            hist: Histogram::new_with_bounds(1, 1 << 36, 3).expect("histogram"),
            last_ns: now,
            last_bytes: bytes,
            max_bytes: bytes,
        }
    }

    fn update(&mut self, now: u64, bytes: u64) {
        if now > self.last_ns {
            self.hist.saturating_record_n(self.last_bytes.min(1 << 36), now - self.last_ns);
            self.last_ns = now;
        }
        self.last_bytes = bytes;
        self.max_bytes = self.max_bytes.max(bytes);
    }

    /// The queue length now.
    pub fn current_bytes(&self) -> u64 {
        self.last_bytes
    }

    /// The queue length exceeded for a fraction `1 - q` of the time, up to `now`.
    pub fn quantile(&mut self, now: u64, q: f64) -> u64 {
        self.update(now, self.last_bytes);
        if self.hist.is_empty() {
            return self.last_bytes;
        }
        self.hist.value_at_quantile(q)
    }
}

struct SwitchPort {
    link: Link,
    queue: VecDeque<Vec<u8>>,
    q_bytes: u64,
    stats: Option<QueueStats>,
}

struct Switch {
    ports: Vec<SwitchPort>,
    used: u64,
    buffer: u64,
    alpha: f64,
    /// ToR index for a ToR of a two-layer topology or the single switch, `None` for a spine.
    tor: Option<usize>,
}

pub struct Host<A> {
    pub rpc: HostRpc<A>,
    link: Link,
    /// Time of this host's scheduled poll (`u64::MAX`: none).
    poll_at: u64,
}

enum Ev {
    Poll(u32),
    TxDone(PortRef),
    Arrive(Node, Vec<u8>),
}

struct Item {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

/// Network-wide counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetCounters {
    /// Frames dropped by switch buffers.
    pub switch_drops: u64,
    /// Frames dropped by loss injection.
    pub injected_losses: u64,
    /// Frames dropped because a host's RX ring was full.
    pub rx_overflows: u64,
    /// Frames addressed to no host.
    pub unroutable: u64,
    pub events: u64,
}

/// A simulated network of hosts running endpoints with application state `A`.
pub struct Network<A> {
    pub cfg: NetConfig,
    pub clock: Clk,
    pub hosts: Vec<Host<A>>,
    switches: Vec<Switch>,
    /// For host `h`: its switch and the port facing it.
    host_port: Vec<(u32, u32)>,
    events: BinaryHeap<Reverse<Item>>,
    seq: u64,
    rng: Xoshiro256PlusPlus,
    pub counters: NetCounters,
    /// Whether a spine layer exists (two-layer topology): ToR ports above `hosts_per_tor` go up.
    hosts_per_tor: usize,
    spines: usize,
}

impl<A> Network<A> {
    /// Builds the topology and one endpoint per host with `make(host index, nic, clock)`.
    pub fn new(
        cfg: NetConfig,
        mut make: impl FnMut(usize, SimHostNic, Clk) -> anyhow::Result<HostRpc<A>>,
    ) -> anyhow::Result<Self> {
        if cfg.hosts == 0 || cfg.hosts > 65_000 {
            return Err(anyhow::anyhow!("the simulation holds 1 to 65000 hosts, not {}", cfg.hosts));
        }
        if !(cfg.link_gbps > 0.0 && cfg.uplink_gbps > 0.0 && cfg.link_gbps <= 10_000.0) {
            return Err(anyhow::anyhow!("link rates must be positive (and at most 10000 Gb/s)"));
        }
        if !(0.0..1.0).contains(&cfg.loss) {
            return Err(anyhow::anyhow!("the loss rate must be in [0, 1), not {}", cfg.loss));
        }
        if cfg.buffer_bytes < cfg.mtu as u64 {
            return Err(anyhow::anyhow!("the switch buffer must hold at least one frame"));
        }
        let clock: Clk = Clk::new(SimClock::new());
        let (hpt, spines) = match cfg.topology {
            Topology::Single => (cfg.hosts, 0),
            Topology::TwoLayer { hosts_per_tor, spines } => {
                if hosts_per_tor == 0 || spines == 0 {
                    return Err(anyhow::anyhow!("a two-layer topology needs at least one host per ToR and one spine"));
                }
                (hosts_per_tor, spines)
            }
        };
        let tors = cfg.hosts.div_ceil(hpt);
        let mut switches = Vec::new();
        let mut host_port = Vec::with_capacity(cfg.hosts);
        for t in 0..tors {
            let mut ports = Vec::new();
            for h in t * hpt..((t + 1) * hpt).min(cfg.hosts) {
                host_port.push((t as u32, ports.len() as u32));
                ports.push(SwitchPort::new(Link::new(Node::Host(h as u32), cfg.link_gbps, cfg.link_delay_ns)));
            }
            if spines > 0 {
                // Keep host ports at 0..hpt even on a partly filled last ToR.
                while ports.len() < hpt {
                    ports.push(SwitchPort::new(Link::new(Node::Switch(u32::MAX), cfg.link_gbps, 0)));
                }
                for s in 0..spines {
                    let spine = (tors + s) as u32;
                    ports.push(SwitchPort::new(Link::new(Node::Switch(spine), cfg.uplink_gbps, cfg.link_delay_ns)));
                }
            }
            switches.push(Switch::new(ports, &cfg, Some(t)));
        }
        for _ in 0..spines {
            let ports = (0..tors)
                .map(|t| SwitchPort::new(Link::new(Node::Switch(t as u32), cfg.uplink_gbps, cfg.link_delay_ns)))
                .collect();
            switches.push(Switch::new(ports, &cfg, None));
        }
        let mut hosts = Vec::with_capacity(cfg.hosts);
        for (h, &(sw, _)) in host_port.iter().enumerate() {
            let nic = SimHostNic::new(host_addr(h), cfg.mtu, cfg.tx_ring, cfg.rx_ring);
            let rpc = make(h, nic, clock.clone())?;
            hosts.push(Host {
                rpc,
                link: Link::new(Node::Switch(sw), cfg.link_gbps, cfg.link_delay_ns),
                poll_at: u64::MAX,
            });
        }
        let mut net = Network {
            cfg,
            clock,
            hosts,
            switches,
            host_port,
            events: BinaryHeap::new(),
            seq: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ 0x10_55E5),
            counters: NetCounters::default(),
            hosts_per_tor: hpt,
            spines,
        };
        for h in 0..net.hosts.len() {
            net.wake(h, 0);
        }
        Ok(net)
    }

    pub fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Records the queue of the switch port facing host `h` from now on (time-weighted).
    pub fn watch_host_port(&mut self, h: usize) {
        let now = self.now();
        let (sw, p) = self.host_port[h];
        let port = &mut self.switches[sw as usize].ports[p as usize];
        port.stats = Some(QueueStats::new(now, port.q_bytes));
    }

    /// The recorded queue of the switch port facing host `h`.
    pub fn host_port_queue(&mut self, h: usize) -> Option<&mut QueueStats> {
        let (sw, p) = self.host_port[h];
        self.switches[sw as usize].ports[p as usize].stats.as_mut()
    }

    /// Serialization time of the link from the switch down to host `h`, since the last
    /// [`Network::reset_link_counters`].
    pub fn host_downlink_busy_ns(&self, h: usize) -> u64 {
        let (sw, p) = self.host_port[h];
        self.switches[sw as usize].ports[p as usize].link.busy_ns
    }

    pub fn reset_link_counters(&mut self) {
        for s in &mut self.switches {
            for p in &mut s.ports {
                p.link.busy_ns = 0;
            }
        }
        for h in &mut self.hosts {
            h.link.busy_ns = 0;
        }
    }

    /// Schedules a poll of host `h` at `t` (or now, if `t` is past).
    pub fn wake(&mut self, h: usize, t: u64) {
        let t = t.max(self.now());
        if t < self.hosts[h].poll_at {
            self.hosts[h].poll_at = t;
            self.push(t, Ev::Poll(h as u32));
        }
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse(Item { t, seq: self.seq, ev }));
    }

    /// Time of the next event, if any.
    pub fn next_event_ns(&self) -> Option<u64> {
        self.events.peek().map(|Reverse(i)| i.t)
    }

    /// Runs events until `done` holds (checked after every host poll), simulated time passes
    /// `until_ns`, or no event is left. Returns whether `done` held.
    pub fn run(&mut self, until_ns: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        while let Some(Reverse(item)) = self.events.pop() {
            if item.t > until_ns {
                self.events.push(Reverse(item));
                self.clock.set(until_ns.max(self.now()));
                return done(self);
            }
            self.clock.set(item.t);
            self.counters.events += 1;
            match item.ev {
                Ev::Poll(h) => {
                    let h = h as usize;
                    if self.hosts[h].poll_at != item.t {
                        continue; // superseded by an earlier poll
                    }
                    self.poll(h);
                    if done(self) {
                        return true;
                    }
                }
                Ev::TxDone(p) => self.tx_done(p),
                Ev::Arrive(node, f) => self.arrive(node, f),
            }
        }
        done(self)
    }

    fn poll(&mut self, h: usize) {
        let now = self.now();
        let host = &mut self.hosts[h];
        host.poll_at = u64::MAX;
        host.rpc.transport_mut().tx_blocked = false;
        let wake = host.rpc.run_event_loop_timed();
        let nic = host.rpc.transport_mut();
        let rx_pending = !nic.rx_ring.is_empty();
        // If the ring refused frames, `tx_done` wakes the host when it drains.
        let blocked = nic.tx_blocked;
        let tx_ready = !host.link.busy && !nic.tx_ring.is_empty();
        if tx_ready {
            self.start_tx(PortRef::Host(h as u32));
        }
        let next = if rx_pending {
            now
        } else if wake <= now {
            // Timed work is due but the iteration could not do it: it waits for TX room (the
            // ring draining wakes the host) or for the next nanosecond.
            if blocked {
                u64::MAX
            } else {
                now + 1
            }
        } else {
            wake
        };
        if next != u64::MAX {
            self.wake(h, next);
        }
    }

    fn link_mut(&mut self, p: PortRef) -> &mut Link {
        match p {
            PortRef::Host(h) => &mut self.hosts[h as usize].link,
            PortRef::Switch(s, i) => &mut self.switches[s as usize].ports[i as usize].link,
        }
    }

    fn head_len(&mut self, p: PortRef) -> Option<usize> {
        match p {
            PortRef::Host(h) => self.hosts[h as usize].rpc.transport_mut().tx_ring.front().map(Vec::len),
            PortRef::Switch(s, i) => self.switches[s as usize].ports[i as usize].queue.front().map(Vec::len),
        }
    }

    fn start_tx(&mut self, p: PortRef) {
        let Some(len) = self.head_len(p) else { return };
        let now = self.now();
        let link = self.link_mut(p);
        let ns = link.wire_ns(len);
        link.busy = true;
        link.busy_ns += ns;
        self.push(now + ns, Ev::TxDone(p));
    }

    fn tx_done(&mut self, p: PortRef) {
        let now = self.now();
        let (frame, peer, delay) = match p {
            PortRef::Host(h) => {
                let host = &mut self.hosts[h as usize];
                let nic = host.rpc.transport_mut();
                let f = nic.pop_tx().expect("a frame was on the wire");
                let blocked = nic.tx_blocked;
                if blocked {
                    host.rpc.transport_mut().tx_blocked = false;
                    self.wake(h as usize, now);
                }
                let host = &self.hosts[h as usize];
                (f, host.link.peer, host.link.delay_ns)
            }
            PortRef::Switch(s, i) => {
                let sw = &mut self.switches[s as usize];
                let port = &mut sw.ports[i as usize];
                let f = port.queue.pop_front().expect("a frame was on the wire");
                port.q_bytes -= f.len() as u64;
                let now_q = port.q_bytes;
                sw.used -= f.len() as u64;
                if let Some(st) = port.stats.as_mut() {
                    st.update(now, now_q);
                }
                (f, port.link.peer, port.link.delay_ns)
            }
        };
        self.link_mut(p).busy = false;
        self.push(now + delay, Ev::Arrive(peer, frame));
        self.start_tx(p);
    }

    fn arrive(&mut self, node: Node, f: Vec<u8>) {
        match node {
            Node::Host(h) => {
                let h = h as usize;
                if self.cfg.loss > 0.0 && self.uniform() < self.cfg.loss {
                    self.counters.injected_losses += 1;
                    return;
                }
                if dest_host(&f) != Some(h) {
                    self.counters.unroutable += 1;
                    return;
                }
                if !self.hosts[h].rpc.transport_mut().deliver(f) {
                    self.counters.rx_overflows += 1;
                    return;
                }
                let now = self.now();
                self.wake(h, now);
            }
            Node::Switch(s) => self.switch_forward(s as usize, f),
        }
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn switch_forward(&mut self, s: usize, f: Vec<u8>) {
        let Some(dst) = dest_host(&f).filter(|&d| d < self.hosts.len()) else {
            self.counters.unroutable += 1;
            return;
        };
        let (dsw, dport) = self.host_port[dst];
        let out = match self.switches[s].tor {
            _ if dsw as usize == s => dport as usize,
            Some(_) => self.hosts_per_tor + flow_hash(&f) as usize % self.spines,
            None => dsw as usize, // spine: port t leads to ToR t
        };
        let now = self.now();
        let sw = &mut self.switches[s];
        let len = f.len() as u64;
        let free = sw.buffer - sw.used;
        let port = &mut sw.ports[out];
        if len > free || (port.q_bytes + len) as f64 > sw.alpha * free as f64 {
            self.counters.switch_drops += 1;
            return;
        }
        sw.used += len;
        port.q_bytes += len;
        port.queue.push_back(f);
        if let Some(st) = port.stats.as_mut() {
            st.update(now, port.q_bytes);
        }
        if !port.link.busy {
            self.start_tx(PortRef::Switch(s as u32, out as u32));
        }
    }
}

impl SwitchPort {
    fn new(link: Link) -> Self {
        SwitchPort { link, queue: VecDeque::new(), q_bytes: 0, stats: None }
    }
}

impl Switch {
    fn new(ports: Vec<SwitchPort>, cfg: &NetConfig, tor: Option<usize>) -> Self {
        Switch { ports, used: 0, buffer: cfg.buffer_bytes, alpha: cfg.dt_alpha, tor }
    }
}

/// ECMP: a hash of the frame's IPv4 addresses and UDP ports.
fn flow_hash(f: &[u8]) -> u32 {
    let mut h: u32 = 0x811C_9DC5;
    for &b in f.get(26..38).unwrap_or(&[]) {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h ^ (h >> 16)
}
