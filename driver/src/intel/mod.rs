//! Userspace driver for Intel NICs with advanced descriptors: the igb family (82576, I350) and
//! the ixgbe family (82599/X520, X540), one RX and one TX queue, over VFIO.
//!
//! * [`desc`]: descriptor layouts (zerocopy, datasheet citations), shared by both families.
//! * `ring`: the receive and transmit rings, shared by both families.
//! * [`igb`], [`ixgbe`]: per-family registers and bring-up.
//! * [`IntelNic`]: the device, implementing the dataplane's [`Transport`]. Generic over its
//!   register access ([`RegisterIo`]) so tests can put a register-level fake in place of a BAR.
//!
//! Receive buffers (2 KiB, one per descriptor) and both rings share one hugepage allocation
//! mapped for the device, carved into [`erpc_hugepages::DmaSlice`]s; transmit is zero-copy from
//! the dataplane's own DMA region, which must be mapped in the same IOMMU domain
//! ([`erpc_hugepages::DmaSpace`]).
//!
//! Tests: `tests/tests/intel.rs` runs the driver on both families against the register-level
//! fake of `tests/intel_fake.rs` (the loopback scenarios, ring setup, unsignaled transmit,
//! in-order reposting, dropped and forged frames, a link that never comes up); `tests/vm/run`
//! runs it through real VFIO on two emulated 82576 in a QEMU guest (`tests/vm/loopback.rs`:
//! the loopback scenarios, statistics registers, error messages, IOMMU containment).

pub mod desc;
pub mod igb;
pub mod ixgbe;
mod ring;

use crate::mmio::RegisterIo;
use crate::pci::NicFamily;
use crate::vfio::{Bar, DeviceError, PciFunction};
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_hugepages::{DmaError, DmaMemory, DmaSpace, PageSize};
use ring::{RxRing, TxRing};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The two register families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// 82576, I350.
    Igb,
    /// 82599 (X520), X540.
    Ixgbe,
}

/// RXDCTL/TXDCTL.ENABLE, the same bit in both families (82576 datasheet 8.10.10 and 8.12.13,
/// 82599 datasheet 8.2.3.8.6 and 8.2.3.9.10).
pub const QUEUE_ENABLE: u32 = 1 << 25;

/// Offsets of one queue pair's registers.
#[derive(Clone, Copy, Debug)]
pub struct QueueRegs {
    pub rdbal: u32,
    pub rdbah: u32,
    pub rdlen: u32,
    pub rdh: u32,
    pub rdt: u32,
    pub rxdctl: u32,
    pub tdbal: u32,
    pub tdbah: u32,
    pub tdlen: u32,
    pub tdh: u32,
    pub tdt: u32,
    pub txdctl: u32,
}

/// Offsets of the clear-on-read statistics registers a family reports.
#[derive(Clone, Copy, Debug)]
pub struct StatRegs {
    pub gprc: u32,
    pub gptc: u32,
    pub gorcl: u32,
    pub gorch: u32,
    pub gotcl: u32,
    pub gotch: u32,
    pub missed: u32,
    pub no_buffer: u32,
    pub crc_errors: u32,
}

impl StatRegs {
    /// Adds the registers' counts to `c` (reading them clears them).
    fn read(&self, r: &impl RegisterIo, c: &mut Counters) {
        let wide = |lo: u32, hi: u32| r.read32(lo) as u64 | (r.read32(hi) as u64) << 32;
        c.rx_packets += r.read32(self.gprc) as u64;
        c.tx_packets += r.read32(self.gptc) as u64;
        c.rx_bytes += wide(self.gorcl, self.gorch);
        c.tx_bytes += wide(self.gotcl, self.gotch);
        c.rx_missed += r.read32(self.missed) as u64;
        c.rx_no_buffer += r.read32(self.no_buffer) as u64;
        c.crc_errors += r.read32(self.crc_errors) as u64;
    }
}

/// What the family setup code needs to program the queues.
#[derive(Clone, Copy, Debug)]
pub struct RingSetup {
    pub rx_ring_iova: u64,
    pub rx_len: u16,
    pub rx_buf_size: u32,
    /// Initial RDT.
    pub rx_tail: u16,
    pub tx_ring_iova: u64,
    pub tx_len: u16,
    pub promiscuous: bool,
}

impl Family {
    /// The family of a PCI function, if this driver handles it.
    pub fn of(vendor: u16, device: u16) -> Option<Family> {
        match crate::pci::family_of(vendor, device)? {
            NicFamily::Igb => Some(Family::Igb),
            NicFamily::Ixgbe => Some(Family::Ixgbe),
            _ => None,
        }
    }

    /// Queue 0's register offsets.
    pub fn queue(self) -> &'static QueueRegs {
        match self {
            Family::Igb => &igb::QUEUE,
            Family::Ixgbe => &ixgbe::QUEUE,
        }
    }

    fn rx_err_mask(self) -> u32 {
        match self {
            Family::Igb => igb::RX_ERR_MASK,
            Family::Ixgbe => ixgbe::RX_ERR_MASK,
        }
    }

    fn reset(self, r: &impl RegisterIo) -> Result<(), IntelError> {
        match self {
            Family::Igb => igb::reset(r),
            Family::Ixgbe => ixgbe::reset(r),
        }
    }

    fn start_link(self, r: &impl RegisterIo) -> Result<(), IntelError> {
        match self {
            Family::Igb => igb::start_link(r),
            Family::Ixgbe => ixgbe::start_link(r),
        }
    }

    fn link_up(self, r: &impl RegisterIo) -> bool {
        match self {
            Family::Igb => igb::link_up(r),
            Family::Ixgbe => ixgbe::link_up(r),
        }
    }

    fn init_queues(self, r: &impl RegisterIo, s: &RingSetup) -> Result<(), IntelError> {
        match self {
            Family::Igb => igb::init_queues(r, s),
            Family::Ixgbe => ixgbe::init_queues(r, s),
        }
    }

    fn stop(self, r: &impl RegisterIo) {
        match self {
            Family::Igb => igb::stop(r),
            Family::Ixgbe => ixgbe::stop(r),
        }
    }

    fn mac(self, r: &impl RegisterIo) -> [u8; 6] {
        match self {
            Family::Igb => igb::mac(r),
            Family::Ixgbe => ixgbe::mac(r),
        }
    }

    fn read_counters(self, r: &impl RegisterIo, c: &mut Counters) {
        match self {
            Family::Igb => igb::STATS.read(r, c),
            Family::Ixgbe => ixgbe::STATS.read(r, c),
        }
    }
}

/// Polls `done` until it holds or `timeout` passes.
pub(crate) fn wait(what: &'static str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), IntelError> {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > timeout {
            return Err(IntelError::Timeout(what));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Device counters (from the statistics registers) and the driver's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Good packets/bytes received and transmitted (GPRC, GPTC, GORC, GOTC).
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the device dropped for lack of room (MPC).
    pub rx_missed: u64,
    /// Frames that found no posted descriptor (RNBC on igb, QPRDC on ixgbe).
    pub rx_no_buffer: u64,
    /// Frames with a bad FCS (CRCERRS).
    pub crc_errors: u64,
    /// Frames the driver dropped: error flagged by the device, or spanning several buffers.
    pub rx_dropped_by_driver: u64,
    /// `rx_release` calls with an id that was not lent (double or forged release), ignored.
    pub rx_bad_release: u64,
    /// `tx_flush` calls that gave up waiting for the device (the TX queue was then restarted,
    /// discarding what it had not sent).
    pub tx_flush_timeouts: u64,
    /// Packets larger than the MTU handed to `tx_burst`, dropped.
    pub tx_dropped_oversize: u64,
}

/// Why an Intel NIC could not be brought up. Each message says what to do.
#[derive(Debug)]
pub enum IntelError {
    /// Opening the PCI function through VFIO failed.
    Device(DeviceError),
    /// The rings and buffers could not be allocated and mapped.
    Dma(DmaError),
    /// The function is not an igb/ixgbe-family NIC.
    Unsupported { bdf: String, vendor: u16, device: u16 },
    /// The device did not reach a state in time.
    Timeout(&'static str),
    /// No link within the configured time.
    LinkDown { waited: Duration },
    /// The DMA space given is not the one of the NIC's VFIO container.
    ForeignDmaSpace,
    /// A ring size out of range: `ring` (`rx_ring` or `tx_ring`) is `entries`.
    RingSize { ring: &'static str, entries: u16 },
    /// `rs_interval` out of range (`1..=max`).
    RsInterval { value: u32, max: u32 },
    /// An MTU the driver does not support.
    Mtu(usize),
}

impl fmt::Display for IntelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntelError::Device(e) => e.fmt(f),
            IntelError::Dma(e) => e.fmt(f),
            IntelError::Unsupported { bdf, vendor, device } => write!(
                f,
                "{bdf} ({vendor:04x}:{device:04x}) is not an Intel igb/ixgbe NIC this driver \
                 supports: `erpc nic list` shows which devices have a driver"
            ),
            IntelError::Timeout(what) => write!(
                f,
                "the device did not finish: {what}; check that the NIC is healthy (`lspci -vv`) \
                 and not in use by another process"
            ),
            IntelError::LinkDown { waited } => write!(
                f,
                "no link after {:.1} s: check the cable and that the peer port is up, or raise \
                 the link timeout",
                waited.as_secs_f64()
            ),
            IntelError::ForeignDmaSpace => f.write_str(
                "the DMA space is not the one of this VFIO container: use DmaSpace::vfio(container.clone()) for the \
                 NIC and for the endpoint's memory",
            ),
            IntelError::RingSize { ring, entries } => {
                write!(f, "bad NIC configuration: {ring} = {entries}: use a multiple of 8 in 64..=4096")
            }
            IntelError::RsInterval { value, max } => write!(
                f,
                "bad NIC configuration: rs_interval = {value}: use 1..={max} (a quarter of tx_ring), so that a \
                 write-back is always pending before the ring fills"
            ),
            IntelError::Mtu(m) => write!(f, "bad NIC configuration: mtu = {m}: use 64..=1514"),
        }
    }
}

impl std::error::Error for IntelError {
    /// The VFIO or DMA error underneath (whose message this error's repeats).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IntelError::Device(e) => e.source(),
            IntelError::Dma(e) => e.source(),
            _ => None,
        }
    }
}

impl From<DeviceError> for IntelError {
    fn from(e: DeviceError) -> Self {
        IntelError::Device(e)
    }
}

impl From<DmaError> for IntelError {
    fn from(e: DmaError) -> Self {
        IntelError::Dma(e)
    }
}

/// Settings of an [`IntelNic`].
#[derive(Clone, Copy, Debug)]
pub struct IntelConfig {
    /// This endpoint's IPv4 address and UDP port (the MAC comes from the NIC).
    pub ipv4: [u8; 4],
    pub udp_port: u16,
    /// Receive every frame, not only those for our MAC and broadcast.
    pub promiscuous: bool,
    /// Descriptors per ring (multiple of 8, 64..=4096).
    pub rx_ring: u16,
    pub tx_ring: u16,
    /// Request a descriptor write-back on one packet in this many.
    pub rs_interval: u32,
    /// How long to wait for link up after bring-up; zero skips the wait.
    pub link_timeout: Duration,
    /// Largest frame, at most 1514 (no jumbo frames: one 2 KiB buffer per frame).
    pub mtu: usize,
}

impl Default for IntelConfig {
    fn default() -> Self {
        IntelConfig {
            ipv4: [10, 0, 0, 1],
            udp_port: 31850,
            promiscuous: false,
            rx_ring: 512,
            tx_ring: 512,
            rs_interval: 32,
            link_timeout: Duration::from_secs(10),
            mtu: 1514,
        }
    }
}

/// Receive buffer size: one frame per buffer.
const RX_BUF: u32 = 2048;
/// How long `tx_flush` waits for the device before giving up (and counting it).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// An Intel NIC driven from userspace: one RX and one TX queue, implementing [`Transport`].
pub struct IntelNic<R: RegisterIo = Bar> {
    regs: R,
    family: Family,
    q: QueueRegs,
    rx: RxRing,
    tx: TxRing,
    addr: EndpointAddr,
    mtu: usize,
    counters: Counters,
    // Drop order (declaration order): Drop::drop stops the queues and bus mastering, then the
    // BAR (in `regs`) and the VFIO device close, and only then is the rings' memory unmapped.
    _pci: Option<PciFunction>,
    _mem: DmaMemory,
}

// SAFETY: an IntelNic owns its rings, buffers and registers; the raw pointers it holds point into
// its own DMA memory and BAR, which move with it. Lent RX buffers are only touched by whoever
// holds the NIC (through `rx_release`).
unsafe impl<R: RegisterIo + Send> Send for IntelNic<R> {}

/// Waits (briefly) for both queues' ENABLE bits to read 0 after a stop.
fn quiesce(r: &impl RegisterIo, q: &QueueRegs) {
    let _ = wait("queues to stop", Duration::from_millis(50), || {
        (r.read32(q.rxdctl) | r.read32(q.txdctl)) & QUEUE_ENABLE == 0
    });
}

impl IntelNic<Bar> {
    /// Opens `bdf` through VFIO in `container`, resets it and brings it up. `space` must be the
    /// DMA space of the same container: the rings are allocated from it, and the dataplane's
    /// msgbufs must come from it too.
    pub fn open(
        container: &Arc<vfio_ioctls::VfioContainer>,
        space: &Arc<DmaSpace>,
        bdf: &str,
        cfg: IntelConfig,
    ) -> Result<IntelNic<Bar>, IntelError> {
        if !space.is_in(container) {
            return Err(IntelError::ForeignDmaSpace);
        }
        let pci = PciFunction::open(container, bdf)?;
        let vendor = pci.config_read_u16(0)?;
        let device = pci.config_read_u16(2)?;
        let family =
            Family::of(vendor, device).ok_or_else(|| IntelError::Unsupported { bdf: bdf.into(), vendor, device })?;
        pci.enable_dma()?;
        let bar = pci.map_bar(0)?;
        let mut nic = IntelNic::with_registers(bar, family, space, cfg)?;
        nic._pci = Some(pci);
        Ok(nic)
    }
}

impl<R: RegisterIo> IntelNic<R> {
    /// Brings up a device reached through `regs` (a BAR, or a fake in tests).
    pub fn with_registers(
        regs: R,
        family: Family,
        space: &Arc<DmaSpace>,
        cfg: IntelConfig,
    ) -> Result<IntelNic<R>, IntelError> {
        for (name, n) in [("rx_ring", cfg.rx_ring), ("tx_ring", cfg.tx_ring)] {
            if !(64..=4096).contains(&n) || n % 8 != 0 {
                return Err(IntelError::RingSize { ring: name, entries: n });
            }
        }
        if !(1..=cfg.tx_ring as u32 / 4).contains(&cfg.rs_interval) {
            return Err(IntelError::RsInterval { value: cfg.rs_interval, max: cfg.tx_ring as u32 / 4 });
        }
        if !(64..=1514).contains(&cfg.mtu) {
            return Err(IntelError::Mtu(cfg.mtu));
        }
        let rx_bytes = cfg.rx_ring as usize * 16;
        let tx_bytes = cfg.tx_ring as usize * 16;
        let rings = (rx_bytes + tx_bytes).next_multiple_of(4096);
        let page = if space.is_identity() { PageSize::Ordinary } else { PageSize::Huge2M };
        let mem = space.alloc(rings + cfg.rx_ring as usize * RX_BUF as usize, page)?;
        let all = mem.as_slice();
        let rx_mem = all.sub(0, rx_bytes);
        let tx_mem = all.sub(rx_bytes, tx_bytes);
        let bufs = all.sub(rings, cfg.rx_ring as usize * RX_BUF as usize);

        family.reset(&regs)?;
        // SAFETY: ring and buffer ranges are disjoint parts of `mem`, mapped for the device at
        // their IOVAs; `mem` lives in the returned value, next to the rings, and is dropped
        // after them (and after the queues are stopped: see Drop).
        let rx = unsafe { RxRing::new(rx_mem, cfg.rx_ring, bufs, RX_BUF, family.rx_err_mask()) };
        // SAFETY: as above.
        let tx = unsafe { TxRing::new(tx_mem, cfg.tx_ring, cfg.rs_interval) };
        let setup = RingSetup {
            rx_ring_iova: rx_mem.iova(),
            rx_len: cfg.rx_ring,
            rx_buf_size: RX_BUF,
            rx_tail: rx.tail(),
            tx_ring_iova: tx_mem.iova(),
            tx_len: cfg.tx_ring,
            promiscuous: cfg.promiscuous,
        };
        if let Err(e) = family.start_link(&regs).and_then(|()| family.init_queues(&regs, &setup)) {
            // Part-way through: make sure no queue DMAs into `mem` as it goes away.
            family.stop(&regs);
            quiesce(&regs, family.queue());
            return Err(e);
        }
        let mac = family.mac(&regs);
        let nic = IntelNic {
            q: *family.queue(),
            regs,
            family,
            rx,
            tx,
            addr: EndpointAddr { mac, ipv4: cfg.ipv4, udp_port: cfg.udp_port },
            mtu: cfg.mtu,
            counters: Counters::default(),
            _mem: mem,
            _pci: None,
        };
        // Start the statistics from zero (they are clear-on-read).
        nic.family.read_counters(&nic.regs, &mut Counters::default());
        if !cfg.link_timeout.is_zero() {
            let t0 = Instant::now();
            while !nic.link_up() {
                if t0.elapsed() > cfg.link_timeout {
                    return Err(IntelError::LinkDown { waited: t0.elapsed() });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(nic)
    }

    /// Writes a tail register, after every descriptor store before it.
    fn doorbell(&self, reg: u32, tail: u16) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.regs.write32(reg, tail as u32);
    }

    /// Disables the TX queue, empties it and enables it again (datasheets: the head and tail
    /// registers may only be written while the queue is disabled).
    fn restart_tx(&mut self) {
        let q = self.q;
        self.regs.clear_bits(q.txdctl, QUEUE_ENABLE);
        let _ = wait("TX queue to stop", Duration::from_millis(100), || self.regs.read32(q.txdctl) & QUEUE_ENABLE == 0);
        self.regs.write32(q.tdh, 0);
        self.regs.write32(q.tdt, 0);
        self.tx.restart();
        self.regs.set_bits(q.txdctl, QUEUE_ENABLE);
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.family.link_up(&self.regs)
    }

    /// The register family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The device's counters (accumulated from its clear-on-read registers) and the driver's.
    pub fn counters(&mut self) -> Counters {
        self.family.read_counters(&self.regs, &mut self.counters);
        self.counters
    }

    /// The register access (tests inspect their fake through it).
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// Sends one frame from an arbitrary device address: a diagnostic for IOMMU containment
    /// tests (a descriptor pointing outside every mapping must not leak memory). Returns false
    /// if the ring is full.
    ///
    /// # Safety
    /// Without an IOMMU the device reads whatever physical memory `iova` names. The frame counts
    /// as an accepted packet in [`Transport::tx_reclaimed`]: do not use this while an endpoint
    /// is sending on the NIC (its count of accepted packets would fall behind the NIC's).
    pub unsafe fn send_raw(&mut self, iova: u64, len: u32) -> bool {
        let ok = self.tx.push(&[(iova, len)]);
        self.doorbell(self.q.tdt, self.tx.tail());
        ok
    }
}

impl<R: RegisterIo> Transport for IntelNic<R> {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn local_addr(&self) -> EndpointAddr {
        self.addr
    }

    fn max_tx_in_flight(&self) -> usize {
        // A packet's descriptors are reused only after they were reclaimed; a ring of n keeps at
        // most n - 1 in use, so n - 1 later packets cannot all be queued while it is unread.
        self.tx.len() as usize - 1
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        // Unsignaled completion: one descriptor read tells whether the oldest RS-marked packet
        // (and all before it) is done.
        self.tx.reclaim();
        let mut n = 0;
        for p in pkts {
            if p.len() > self.mtu {
                // Never sent by the dataplane, which sizes packets from `mtu()`; a descriptor
                // length field would overflow. Accepted (so the caller moves on) and counted.
                self.counters.tx_dropped_oversize += 1;
                self.tx.push(&[]);
                n += 1;
                continue;
            }
            let segs = [(p.segs[0].iova, p.segs[0].len), (p.segs[1].iova, p.segs[1].len)];
            if !self.tx.push(&segs) {
                break;
            }
            n += 1;
        }
        if n > 0 {
            self.doorbell(self.q.tdt, self.tx.tail());
        }
        n
    }

    fn tx_flush(&mut self) {
        let tail = self.tx.tail() as u32;
        let t0 = Instant::now();
        // The head register passes a descriptor once the device has processed it.
        while self.regs.read32(self.q.tdh) != tail {
            if t0.elapsed() > FLUSH_TIMEOUT {
                // The device stopped fetching (link down stops TX DMA). Its queued descriptors
                // point at buffers the caller is about to reuse: restart the queue empty so
                // they are never sent.
                self.counters.tx_flush_timeouts += 1;
                log::warn!(
                    "tx_flush: the device did not reach the tail in {FLUSH_TIMEOUT:?}; \
                     restarting the TX queue (link down?)"
                );
                self.restart_tx();
                return;
            }
            std::hint::spin_loop();
        }
        self.tx.all_done();
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        let mut dropped = 0;
        let n = self.rx.poll(out, &mut dropped);
        if dropped > 0 {
            self.counters.rx_dropped_by_driver += dropped;
            if let Some(t) = self.rx.repost() {
                self.doorbell(self.q.rdt, t);
            }
        }
        n
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        for p in pkts {
            if !self.rx.give_back(p.id) {
                self.counters.rx_bad_release += 1;
            }
        }
        if let Some(t) = self.rx.repost() {
            self.doorbell(self.q.rdt, t);
        }
    }

    fn tx_reclaimed(&self) -> u64 {
        self.tx.reclaimed()
    }
}

impl<R: RegisterIo> Drop for IntelNic<R> {
    fn drop(&mut self) {
        // Stop DMA before the rings and buffers are unmapped: queues off, then bus mastering.
        self.family.stop(&self.regs);
        quiesce(&self.regs, &self.q);
        if let Some(pci) = &self._pci {
            if let Err(e) = pci.disable_dma() {
                log::warn!("{}: clearing bus mastering: {e}", pci.bdf());
            }
        }
    }
}
