//! What the tests share: the bring-up settings, a model per driver, two of each wired
//! together, frames to send from DMA memory, receiving and checking.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Segment, TxPacket};
use erpc_dataplane::wire::{RoutingInfo, HEADROOM};
use erpc_dataplane::{RpcConfig, Transport};
use erpc_driver::mlx5::{HcaConfig, Mlx5Config as NicConfig, Mlx5Nic};
use erpc_hugepages::{DmaSpace, PageSize};
use erpc_tests::mlx5_model::{Link, Mlx5Config, Mlx5Model};
use erpc_tests::scenarios::{dma_endpoint_memory, Loopback, LoopbackConfig};
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn cfg() -> HcaConfig {
    HcaConfig {
        page: PageSize::Ordinary,
        fw_ready_timeout: Duration::from_millis(200),
        cmd_timeout: Duration::from_millis(500),
    }
}

pub(crate) type Nic = Mlx5Nic<Mlx5Model>;

pub(crate) fn nic_cfg(last: u8) -> NicConfig {
    NicConfig { hca: cfg(), ipv4: [10, 0, 0, last], ..Default::default() }
}

pub(crate) fn model(last: u8, f: impl FnOnce(&mut Mlx5Config)) -> (Mlx5Model, Arc<DmaSpace>) {
    let mut c = Mlx5Config { mac: [0x02, 0, 0, 0, 0, last], ..Mlx5Config::default() };
    f(&mut c);
    Mlx5Model::with_dma(c)
}

/// Two models wired together, a driver on each.
pub(crate) struct Pair {
    pub(crate) ma: Mlx5Model,
    pub(crate) mb: Mlx5Model,
    pub(crate) link: Link,
    pub(crate) a: Nic,
    pub(crate) b: Nic,
    pub(crate) sa: Arc<DmaSpace>,
    pub(crate) sb: Arc<DmaSpace>,
}

pub(crate) fn pair(model_cfg: impl Fn(&mut Mlx5Config), nic: impl Fn(&mut NicConfig)) -> Pair {
    let (ma, sa) = model(1, &model_cfg);
    let (mb, sb) = model(2, &model_cfg);
    let link = Mlx5Model::connect(&ma, &mb);
    let (mut ca, mut cb) = (nic_cfg(1), nic_cfg(2));
    nic(&mut ca);
    nic(&mut cb);
    let a = Mlx5Nic::with_bar(ma.clone(), sa.clone(), ca).expect("bring-up A");
    let b = Mlx5Nic::with_bar(mb.clone(), sb.clone(), cb).expect("bring-up B");
    Pair { ma, mb, link, a, b, sa, sb }
}

pub(crate) fn rpc_cfg() -> RpcConfig {
    RpcConfig { mtu: 1514, rto_ns: 2_000_000, ..RpcConfig::default() }
}

pub(crate) fn loopback(p: Pair, lcfg: &LoopbackConfig) -> (Loopback<Nic, Nic, StdClock>, Mlx5Model, Mlx5Model, Link) {
    let Pair { ma, mb, link, a, b, sa, sb } = p;
    let mem = |s: &Arc<DmaSpace>| dma_endpoint_memory(s, 32 << 20, PageSize::Ordinary).expect("memory");
    let lb = Loopback::connect(a, b, mem(&sa), mem(&sb), StdClock::default(), rpc_cfg(), lcfg).expect("connect");
    (lb, ma, mb, link)
}

/// A DMA buffer in `space` holding frames to send, `slot` bytes apart.
pub(crate) struct Frames {
    pub(crate) mem: erpc_hugepages::DmaMemory,
    pub(crate) slot: usize,
}

impl Frames {
    pub(crate) fn new(space: &Arc<DmaSpace>, slots: usize, slot: usize) -> Frames {
        Frames { mem: space.alloc(slots * slot, PageSize::Ordinary).expect("frames"), slot }
    }

    /// Writes a UDP frame from `src` to `dst` with `payload` into slot `i`.
    pub(crate) fn put(&mut self, i: usize, src: &EndpointAddr, dst: &EndpointAddr, payload: &[u8]) -> TxPacket {
        let mut hr = [0u8; HEADROOM];
        RoutingInfo::new(src, dst).write(&mut hr, payload.len());
        let len = HEADROOM + payload.len();
        assert!(len <= self.slot);
        // SAFETY: slot i of our buffer; nothing reads it until the packet is queued.
        let p = unsafe { self.mem.vaddr().as_ptr().add(i * self.slot) };
        // SAFETY: as above, `len` bytes fit the slot.
        unsafe {
            std::ptr::copy_nonoverlapping(hr.as_ptr(), p, HEADROOM);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(HEADROOM), payload.len());
        }
        let seg = Segment { vaddr: p, iova: self.mem.iova() + (i * self.slot) as u64, len: len as u32 };
        TxPacket { segs: [seg, Segment::EMPTY] }
    }
}

/// Queues all of `pkts` (retrying while the send queue is full).
pub(crate) fn send_all(t: &mut Nic, pkts: &[TxPacket]) {
    let mut done = 0;
    let t0 = std::time::Instant::now();
    while done < pkts.len() {
        done += t.tx_burst(&pkts[done..]);
        assert!(t0.elapsed().as_secs() < 5, "the send queue never drained");
    }
}

/// Receives until `n` packets are lent or nothing arrives for 50 ms; returns them lent.
pub(crate) fn lend(t: &mut Nic, n: usize) -> Vec<RxPacket> {
    let mut got = vec![];
    let mut out = [RxPacket::EMPTY; 32];
    let mut idle = std::time::Instant::now();
    while got.len() < n && idle.elapsed().as_millis() < 50 {
        let k = t.rx_burst(&mut out[..(n - got.len()).min(32)]);
        if k > 0 {
            idle = std::time::Instant::now();
        }
        got.extend_from_slice(&out[..k]);
    }
    got
}

pub(crate) fn payload_of(p: &RxPacket) -> Vec<u8> {
    // SAFETY: lent by the transport and not yet released.
    let f = unsafe { std::slice::from_raw_parts(p.data.as_ptr(), p.len as usize) };
    f[HEADROOM..].to_vec()
}

pub(crate) fn no_violations(m: &Mlx5Model) {
    assert!(m.violations().is_empty(), "{:?}", m.violations());
    assert!(m.iommu().faults().is_empty(), "{:?}", m.iommu().faults());
}

/// Sends `n` frames from A to B, one doorbell each, and checks they all arrive.
pub(crate) fn one_doorbell_per_frame(p: &mut Pair, n: usize) {
    let (src, dst) = (p.a.local_addr(), p.b.local_addr());
    let mut f = Frames::new(&p.sa, n, 256);
    for i in 0..n {
        let pkt = f.put(i, &src, &dst, &[i as u8; 64]);
        send_all(&mut p.a, &[pkt]);
        p.a.tx_flush();
    }
    let got = lend(&mut p.b, n);
    assert_eq!(got.iter().map(payload_of).collect::<Vec<_>>(), (0..n).map(|i| vec![i as u8; 64]).collect::<Vec<_>>());
    p.b.rx_release(&got);
}
