//! The NIC of a simulated host: a `Transport` whose TX ring the network serializes onto the
//! host's link and whose RX ring the network fills.

use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use std::collections::VecDeque;
use std::ptr::NonNull;

/// UDP port of every simulated endpoint.
pub const SIM_UDP_PORT: u16 = 31850;

/// The address of host `h`: `10.0.h/256.h%256`, MAC `02:00:00:00:h/256:h%256`.
pub fn host_addr(h: usize) -> EndpointAddr {
    let (hi, lo) = ((h >> 8) as u8, h as u8);
    EndpointAddr { mac: [0x02, 0, 0, 0, hi, lo], ipv4: [10, 0, hi, lo], udp_port: SIM_UDP_PORT }
}

/// The host a frame is addressed to, from its IPv4 destination (`None` if it is not one of ours).
pub fn dest_host(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(30..34)?;
    (ip[0] == 10 && ip[1] == 0).then(|| (ip[2] as usize) << 8 | ip[3] as usize)
}

/// A simulated NIC. The dataplane drives it through [`Transport`]; the network reaches in through
/// the pub(crate) fields.
pub struct SimHostNic {
    addr: EndpointAddr,
    mtu: usize,
    /// Frames accepted by `tx_burst` and not yet on the wire; the head is the one being
    /// serialized. Frames are copied at `tx_burst`.
    pub(crate) tx_ring: VecDeque<Vec<u8>>,
    /// Descriptors: at most this many frames wait in `tx_ring` beyond the first `fetched`. So the
    /// ring pushes back on an endpoint until it calls `tx_flush` (which it does when the ring
    /// stays full); after that the host queue grows without bound, standing for a CPU that waited
    /// for the device (in zero simulated time).
    tx_ring_cap: usize,
    /// Frames at the front of `tx_ring` that `tx_flush` handed to the device's own queue, so
    /// their descriptors are free. (`tx_flush` waits for the device to fetch every descriptor; in
    /// simulated time that wait is free, so it takes no time here.)
    fetched: usize,
    accepted: u64,
    /// `tx_burst` refused frames since the host's last poll: the host is woken when the ring
    /// drains.
    pub(crate) tx_blocked: bool,
    pub(crate) rx_ring: VecDeque<Vec<u8>>,
    rx_ring_cap: usize,
    lent: Vec<Option<Vec<u8>>>,
    lent_free: Vec<u32>,
}

impl SimHostNic {
    pub fn new(addr: EndpointAddr, mtu: usize, tx_ring: usize, rx_ring: usize) -> Self {
        SimHostNic {
            addr,
            mtu,
            tx_ring: VecDeque::with_capacity(tx_ring),
            tx_ring_cap: tx_ring,
            fetched: 0,
            accepted: 0,
            tx_blocked: false,
            rx_ring: VecDeque::with_capacity(rx_ring),
            rx_ring_cap: rx_ring,
            lent: Vec::new(),
            lent_free: Vec::new(),
        }
    }

    /// The frame at the head of the TX ring has been serialized.
    pub(crate) fn pop_tx(&mut self) -> Option<Vec<u8>> {
        let f = self.tx_ring.pop_front()?;
        self.fetched = self.fetched.saturating_sub(1);
        Some(f)
    }

    /// A frame arrives from the link. Returns false (the frame is dropped) if the RX ring is full.
    pub(crate) fn deliver(&mut self, f: Vec<u8>) -> bool {
        if self.rx_ring.len() >= self.rx_ring_cap {
            return false;
        }
        self.rx_ring.push_back(f);
        true
    }
}

impl Transport for SimHostNic {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn local_addr(&self) -> EndpointAddr {
        self.addr
    }

    fn max_tx_in_flight(&self) -> usize {
        // Frames are copied when accepted: nothing is read later.
        1
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let room = (self.tx_ring_cap + self.fetched).saturating_sub(self.tx_ring.len());
        let n = pkts.len().min(room);
        for p in &pkts[..n] {
            let mut f = vec![0u8; p.len()];
            // SAFETY: the dataplane guarantees the segments are readable until the packet leaves
            // its in-flight window; we copy them before returning.
            unsafe { p.copy_to(&mut f) };
            self.tx_ring.push_back(f);
        }
        self.accepted += n as u64;
        if n < pkts.len() {
            self.tx_blocked = true;
        }
        n
    }

    fn tx_flush(&mut self) {
        self.fetched = self.tx_ring.len();
    }

    fn tx_reclaimed(&self) -> u64 {
        self.accepted
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let n = out.len().min(self.rx_ring.len());
        for o in out.iter_mut().take(n) {
            let mut f = self.rx_ring.pop_front().expect("counted");
            let data = NonNull::new(f.as_mut_ptr()).unwrap_or(NonNull::dangling());
            let len = f.len() as u32;
            let id = match self.lent_free.pop() {
                Some(id) => {
                    self.lent[id as usize] = Some(f);
                    id
                }
                None => {
                    self.lent.push(Some(f));
                    (self.lent.len() - 1) as u32
                }
            };
            *o = RxPacket { data, len, id };
        }
        n
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        for p in pkts {
            if let Some(slot) = self.lent.get_mut(p.id as usize) {
                if slot.take().is_some() {
                    self.lent_free.push(p.id);
                }
            }
        }
    }
}
