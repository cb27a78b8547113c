//! Fault injection around any transport (in the spirit of smoltcp's `FaultInjector`): drops a
//! seeded-random fraction of transmitted and received frames. Used to force retransmissions on
//! real NICs, where the wire itself does not lose packets.

use crate::transport::{EndpointAddr, ResolveError, RxPacket, Transport, TxPacket};
use crate::wire::RoutingInfo;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Counters of injected faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub tx_dropped: u64,
    pub rx_dropped: u64,
}

/// Wraps a transport and drops frames with the given probabilities.
pub struct FaultInjector<T: Transport> {
    inner: T,
    tx_drop: u64,
    rx_drop: u64,
    rng: Xoshiro256PlusPlus,
    stats: FaultStats,
}

/// A probability as a threshold on a uniform u64.
fn threshold(p: f64) -> u64 {
    if p <= 0.0 {
        0
    } else if p >= 1.0 {
        u64::MAX
    } else {
        (p * u64::MAX as f64) as u64
    }
}

impl<T: Transport> FaultInjector<T> {
    pub fn new(inner: T, tx_drop: f64, rx_drop: f64, seed: u64) -> Self {
        FaultInjector {
            inner,
            tx_drop: threshold(tx_drop),
            rx_drop: threshold(rx_drop),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            stats: FaultStats::default(),
        }
    }

    pub fn set_drop(&mut self, tx_drop: f64, rx_drop: f64) {
        self.tx_drop = threshold(tx_drop);
        self.rx_drop = threshold(rx_drop);
    }

    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    fn hit(&mut self, t: u64) -> bool {
        t != 0 && self.rng.next_u64() < t
    }
}

impl<T: Transport> Transport for FaultInjector<T> {
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn local_addr(&self) -> EndpointAddr {
        self.inner.local_addr()
    }
    fn resolve(&mut self, remote: &EndpointAddr) -> Result<RoutingInfo, ResolveError> {
        self.inner.resolve(remote)
    }
    fn max_tx_in_flight(&self) -> usize {
        self.inner.max_tx_in_flight()
    }
    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        if self.tx_drop == 0 {
            return self.inner.tx_burst(pkts);
        }
        let mut done = 0;
        for p in pkts {
            if self.hit(self.tx_drop) {
                self.stats.tx_dropped += 1;
                // The endpoint counts the dropped frame as accepted, so "max_tx_in_flight later
                // packets" would overcount what the inner transport got: let it finish reading
                // everything before the drop.
                self.inner.tx_flush();
            } else if self.inner.tx_burst(core::slice::from_ref(p)) == 0 {
                break;
            }
            done += 1;
        }
        done
    }
    fn tx_flush(&mut self) {
        self.inner.tx_flush()
    }
    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let n = self.inner.rx_burst(out);
        if self.rx_drop == 0 {
            return n;
        }
        let mut kept = 0;
        for i in 0..n {
            if self.hit(self.rx_drop) {
                self.stats.rx_dropped += 1;
                self.inner.rx_release(core::slice::from_ref(&out[i]));
            } else {
                out[kept] = out[i];
                kept += 1;
            }
        }
        kept
    }
    fn rx_release(&mut self, pkts: &[RxPacket]) {
        self.inner.rx_release(pkts)
    }
    fn wait_rx(&mut self, timeout_ns: u64) -> bool {
        // Nothing is held back here: the inner transport's wait is this one's.
        self.inner.wait_rx(timeout_ns)
    }
    fn tx_reclaimed(&self) -> u64 {
        // The endpoint counts dropped frames as accepted, so its sequence numbers run ahead of
        // the inner transport's: the first `r` inner frames read cover the first `r` outer ones.
        self.inner.tx_reclaimed()
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::clock::SimClock;
    use crate::fabric::{Fabric, RxBuf};
    use crate::transport::Segment;
    use crate::wire::{ErpcHdr, PktType, RoutingInfo, HEADROOM, PKT_HDR_LEN};
    use zerocopy::IntoBytes;

    use std::vec::Vec;

    #[test]
    fn drops_the_configured_fraction_and_releases_rx() {
        let clock = SimClock::new();
        let fab = Fabric::new(&clock, 3);
        let (ba, bb) = (RxBuf::storage(64).leak(), RxBuf::storage(64).leak());
        let (pa, pb) = (fab.attach(ba), fab.attach(bb));
        let mut a = FaultInjector::new(fab.nic(pa, 0), 0.25, 0.0, 9);
        let mut b = FaultInjector::new(fab.nic(pb, 0), 0.0, 0.5, 10);
        let mut f = [0u8; PKT_HDR_LEN];
        let mut hr = [0u8; HEADROOM];
        RoutingInfo::new(&a.local_addr(), &b.local_addr()).write(&mut hr, 14);
        f[..HEADROOM].copy_from_slice(&hr);
        f[HEADROOM..].copy_from_slice(ErpcHdr::new(0, 0, 0, PktType::Req, 0, 8).as_bytes());
        let pkt = TxPacket { segs: [Segment { vaddr: f.as_ptr(), iova: 0, len: f.len() as u32 }, Segment::EMPTY] };
        let (mut sent, mut got) = (0u64, 0u64);
        let mut rx = [RxPacket::EMPTY; 32];
        for _ in 0..1000 {
            sent += a.tx_burst(&[pkt; 4]) as u64;
            let n = b.rx_burst(&mut rx);
            got += n as u64;
            b.rx_release(&rx[..n]);
        }
        a.tx_flush();
        let n = b.rx_burst(&mut rx);
        got += n as u64;
        b.rx_release(&rx[..n]);
        assert_eq!(sent, 4000, "dropped frames still count as accepted");
        let (td, rd) = (a.stats().tx_dropped, b.stats().rx_dropped);
        assert!((800..1200).contains(&td), "tx drops {td}");
        assert_eq!(fab.stats(pb).delivered, sent - td);
        assert_eq!(got + rd, sent - td);
        assert!((got as f64 / (sent - td) as f64 - 0.5).abs() < 0.05);
        // Every buffer came back: the ring is full again (64 frames fit).
        let v: Vec<_> = (0..64).map(|_| pkt).collect();
        a.set_drop(0.0, 0.0);
        a.tx_burst(&v);
        a.tx_flush();
        assert_eq!(fab.stats(pb).no_buffer, 0);
    }
}
