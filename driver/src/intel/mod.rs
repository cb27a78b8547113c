//! Userspace driver for Intel NICs with advanced descriptors: the igb family (82576, I350) and
//! the ixgbe family (82599/X520, X540), over VFIO, with one queue pair per endpoint.
//!
//! This is the Linux backend of the no_std driver core [`erpc_nic::intel`], which holds every
//! register write, the descriptor rings and the datapath (and is re-exported here: [`desc`],
//! [`igb`], [`ixgbe`], the configurations, counters and register tables). What this module adds
//! is what needs an operating system:
//!
//! * opening the function through VFIO, its BAR and bus mastering ([`IntelDevice::open`]);
//! * DMA memory: each queue's rings and buffers in one hugepage allocation mapped in the IOMMU
//!   ([`erpc_hugepages::DmaSpace`]), handed to the core as a [`erpc_nic::dma::DmaRange`];
//! * time: `std::time::Instant`, with short sleeps while waiting on the device;
//! * sharing: [`IntelDevice`] hands out [`IntelQueue`]s, one queue pair each, which implement the
//!   dataplane's [`Transport`] and are `Send`: each moves to the thread that owns its endpoint,
//!   and nothing on the datapath is shared between them (a queue writes its own tail registers;
//!   the device-wide registers are only written under the device's lock, when queues open and
//!   close). Generic over register access ([`RegisterIo`]) so tests can put a register-level
//!   fake in place of a BAR.
//!
//! Steering (VMDq pools by MAC on igb, one 5-tuple filter per UDP port on ixgbe), each queue's
//! check of what it receives and the memory layout of a queue are the core's: see
//! [`erpc_nic::intel`].
//!
//! # Closing and drop order
//!
//! Dropping an [`IntelQueue`] removes its steering entry, disables its two queues and waits for
//! them to stop before its rings and buffers are unmapped; the other queues keep running. The
//! device itself (receive and transmit off, bus mastering off, BAR unmapped, VFIO device
//! closed) is torn down when the last of the [`IntelDevice`] handle and its queues is dropped,
//! so no ring memory is ever unmapped while the device can still reach it.
//!
//! Transmit is zero-copy from the dataplane's own DMA region, which must be mapped in the same
//! IOMMU domain ([`erpc_hugepages::DmaSpace`]).
//!
//! Tests: `tests/tests/intel.rs` runs the driver on both families against the register-level
//! fake of `tests/intel_fake.rs` (the loopback scenarios, ring setup, unsignaled transmit,
//! in-order reposting, dropped and forged frames, a link that never comes up);
//! `tests/tests/intel_multiq.rs` checks the steering register by register, frames reaching
//! only their queue, endpoints on several threads, closing queues and drop order;
//! `tests/vm/run` runs it through real VFIO on two emulated 82576 in a QEMU guest
//! (`tests/vm/loopback.rs`: the loopback scenarios, statistics registers, error messages,
//! IOMMU containment, and two endpoints per NIC on four threads). The core's own unit tests
//! (rings against a test playing the device) are in `nic/`.

pub use erpc_nic::intel::{
    desc, igb, ixgbe, queue_mac, Counters, Family, IntelConfig, QueueConfig, QueueCounters, QueueRegs, RingSetup,
    StatRegs, MAX_RING, QUEUE_ENABLE,
};

use crate::mmio::RegisterIo;
use crate::pci::NicFamily;
use crate::vfio::{Bar, DeviceError, PciFunction};
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_hugepages::{DmaError, DmaMemory, DmaSpace, PageSize};
use erpc_nic::delay::Delay;
use erpc_nic::intel as core_intel;
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The register family of a PCI function, if this driver handles it (from the table of
/// [`crate::pci::SUPPORTED_NICS`]).
pub fn family_of(vendor: u16, device: u16) -> Option<Family> {
    match crate::pci::family_of(vendor, device)? {
        NicFamily::Igb => Some(Family::Igb),
        NicFamily::Ixgbe => Some(Family::Ixgbe),
        _ => None,
    }
}

/// Time for the core under Linux: the monotonic clock, and a 200 µs sleep between polls of a
/// register during bring-up (which waits up to seconds for a link; no reason to burn a core).
#[derive(Clone, Copy, Debug)]
struct StdDelay {
    t0: Instant,
}

impl StdDelay {
    fn new() -> StdDelay {
        StdDelay { t0: Instant::now() }
    }
}

impl Delay for StdDelay {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn pause(&self) {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Why an Intel NIC or one of its queues could not be brought up. Each message says what to do.
///
/// The driver core's errors ([`erpc_nic::intel::Error`]) arrive as the variants of the same
/// name (converted by `From`), with the core's messages.
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
    /// Every queue pair of the device is in use.
    NoFreeQueue { max: u16 },
    /// Another open queue of the device already has this UDP port.
    PortInUse(u16),
    /// The MAC address asked for a queue: multicast, in use by another queue, or (on ixgbe,
    /// which steers by port and answers one address) not the NIC's.
    BadQueueMac([u8; 6]),
    /// The memory given to the core for a queue was too small or misaligned (a bug of this
    /// backend, which sizes it with [`QueueConfig::memory_bytes`]).
    QueueMemory { bus: u64, len: usize, need: usize },
}

impl IntelError {
    /// The driver core's error this one is, if it is one.
    pub fn core(&self) -> Option<core_intel::Error> {
        use core_intel::Error as E;
        Some(match *self {
            IntelError::Timeout(what) => E::Timeout(what),
            IntelError::LinkDown { waited } => E::LinkDown { waited },
            IntelError::RingSize { ring, entries } => E::RingSize { ring, entries },
            IntelError::RsInterval { value, max } => E::RsInterval { value, max },
            IntelError::Mtu(m) => E::Mtu(m),
            IntelError::NoFreeQueue { max } => E::NoFreeQueue { max },
            IntelError::PortInUse(p) => E::PortInUse(p),
            IntelError::BadQueueMac(m) => E::BadQueueMac(m),
            IntelError::QueueMemory { bus, len, need } => E::QueueMemory { bus, len, need },
            IntelError::Device(_)
            | IntelError::Dma(_)
            | IntelError::Unsupported { .. }
            | IntelError::ForeignDmaSpace => return None,
        })
    }
}

impl From<core_intel::Error> for IntelError {
    fn from(e: core_intel::Error) -> Self {
        use core_intel::Error as E;
        match e {
            E::Timeout(what) => IntelError::Timeout(what),
            E::LinkDown { waited } => IntelError::LinkDown { waited },
            E::RingSize { ring, entries } => IntelError::RingSize { ring, entries },
            E::RsInterval { value, max } => IntelError::RsInterval { value, max },
            E::Mtu(m) => IntelError::Mtu(m),
            E::NoFreeQueue { max } => IntelError::NoFreeQueue { max },
            E::PortInUse(p) => IntelError::PortInUse(p),
            E::BadQueueMac(m) => IntelError::BadQueueMac(m),
            E::QueueMemory { bus, len, need } => IntelError::QueueMemory { bus, len, need },
        }
    }
}

impl fmt::Display for IntelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.core() {
            return e.fmt(f);
        }
        match self {
            IntelError::Device(e) => e.fmt(f),
            IntelError::Dma(e) => e.fmt(f),
            IntelError::Unsupported { bdf, vendor, device } => write!(
                f,
                "{bdf} ({vendor:04x}:{device:04x}) is not an Intel igb/ixgbe NIC this driver \
                 supports: `erpc nic list` shows which devices have a driver"
            ),
            IntelError::ForeignDmaSpace => f.write_str(
                "the DMA space is not the one of this VFIO container: use DmaSpace::vfio(container.clone()) for the \
                 NIC and for the endpoint's memory",
            ),
            _ => unreachable!("the core's errors are displayed above"),
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

/// What the device handle and its queues share.
struct Shared<R: RegisterIo> {
    regs: R,
    family: Family,
    mac: [u8; 6],
    space: Arc<DmaSpace>,
    /// The core's device state: which queues are open, the counters. Changed only when queues
    /// open and close (and counters are read), under this lock.
    dev: Mutex<core_intel::Device>,
    // Drop order (declaration order): Drop::drop stops every queue and bus mastering, then the
    // BAR (in `regs`) is unmapped and the VFIO device closed. Every queue's ring memory is
    // gone by then: each queue holds this through an Arc, and drops its memory first.
    pci: Option<PciFunction>,
}

impl<R: RegisterIo> Shared<R> {
    fn control(&self) -> MutexGuard<'_, core_intel::Device> {
        // A panic while holding the lock leaves no broken invariant behind (every update is one
        // assignment): carry on with the state.
        self.dev.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: RegisterIo> Drop for Shared<R> {
    fn drop(&mut self) {
        // Stop DMA before the BAR goes away: queues off, then bus mastering.
        self.dev.get_mut().unwrap_or_else(|p| p.into_inner()).stop(&self.regs, &StdDelay::new());
        if let Some(pci) = &self.pci {
            disable_dma(pci);
        }
    }
}

fn disable_dma(pci: &PciFunction) {
    if let Err(e) = pci.disable_dma() {
        log::warn!("{}: clearing bus mastering: {e}", pci.bdf());
    }
}

/// A queue's register access: the device's, through the handle they share.
struct DevRegs<R: RegisterIo>(Arc<Shared<R>>);

impl<R: RegisterIo> RegisterIo for DevRegs<R> {
    #[inline]
    fn read32(&self, off: u32) -> u32 {
        self.0.regs.read32(off)
    }

    #[inline]
    fn write32(&self, off: u32, value: u32) {
        self.0.regs.write32(off, value)
    }
}

/// An Intel NIC driven from userspace, opened once per process. Hands out one
/// [`IntelQueue`] per endpoint with [`IntelDevice::open_queue`]; see the module docs for drop
/// order.
pub struct IntelDevice<R: RegisterIo = Bar> {
    shared: Arc<Shared<R>>,
}

impl IntelDevice<Bar> {
    /// Opens `bdf` through VFIO in `container`, resets it and brings it up (no queue open yet).
    /// `space` must be the DMA space of the same container: the rings are allocated from it,
    /// and the dataplane's msgbufs must come from it too.
    pub fn open(
        container: &Arc<vfio_ioctls::VfioContainer>,
        space: &Arc<DmaSpace>,
        bdf: &str,
        cfg: IntelConfig,
    ) -> Result<IntelDevice<Bar>, IntelError> {
        if !space.is_in(container) {
            return Err(IntelError::ForeignDmaSpace);
        }
        let pci = PciFunction::open(container, bdf)?;
        let vendor = pci.config_read_u16(0)?;
        let device = pci.config_read_u16(2)?;
        let family =
            family_of(vendor, device).ok_or_else(|| IntelError::Unsupported { bdf: bdf.into(), vendor, device })?;
        pci.enable_dma()?;
        let bar = pci.map_bar(0)?;
        IntelDevice::bring_up(bar, family, space, cfg, Some(pci))
    }
}

impl<R: RegisterIo> IntelDevice<R> {
    /// Brings up a device reached through `regs` (a BAR, or a fake in tests).
    pub fn with_registers(
        regs: R,
        family: Family,
        space: &Arc<DmaSpace>,
        cfg: IntelConfig,
    ) -> Result<IntelDevice<R>, IntelError> {
        IntelDevice::bring_up(regs, family, space, cfg, None)
    }

    fn bring_up(
        regs: R,
        family: Family,
        space: &Arc<DmaSpace>,
        cfg: IntelConfig,
        pci: Option<PciFunction>,
    ) -> Result<IntelDevice<R>, IntelError> {
        // On failure the core has stopped what it started; bus mastering goes off before the
        // BAR is unmapped (`regs` dropped on return).
        let dev = core_intel::Device::bring_up(&regs, &StdDelay::new(), family, &cfg).inspect_err(|_| {
            if let Some(pci) = &pci {
                disable_dma(pci);
            }
        })?;
        let shared = Shared { family, mac: dev.mac(), regs, space: space.clone(), dev: Mutex::new(dev), pci };
        Ok(IntelDevice { shared: Arc::new(shared) })
    }

    /// Opens the lowest free queue pair for one endpoint: allocates its rings and buffers,
    /// programs and enables its queues, then steers frames for `cfg.udp_port` (ixgbe) or for its
    /// MAC address (igb) to it.
    pub fn open_queue(&self, cfg: QueueConfig) -> Result<IntelQueue<R>, IntelError> {
        let sh = &self.shared;
        let mut dev = sh.control();
        // Refuse a bad configuration before allocating anything.
        dev.check_queue(&cfg)?;
        let page = if sh.space.is_identity() { PageSize::Ordinary } else { PageSize::Huge2M };
        let mem = sh.space.alloc(cfg.memory_bytes(), page)?;
        // SAFETY: `mem` is mapped for the device at its IOVA and stays so until the queue pair
        // is closed: it lives in the returned queue, whose Drop closes the pair first (and on an
        // error the core stops the pair before returning). Nothing else uses the allocation.
        let range = unsafe { mem.as_slice().into_range() };
        let q = dev.open_queue(DevRegs(sh.clone()), StdDelay::new(), &cfg, range)?;
        drop(dev);
        Ok(IntelQueue { core: ManuallyDrop::new(q), _mem: mem, dev: sh.clone() })
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.shared.family.link_up(&self.shared.regs)
    }

    /// The register family.
    pub fn family(&self) -> Family {
        self.shared.family
    }

    /// The NIC's own MAC address (RAL0/RAH0 at bring-up).
    pub fn mac(&self) -> [u8; 6] {
        self.shared.mac
    }

    /// How many queue pairs (endpoints) this device serves at most.
    pub fn max_queues(&self) -> u16 {
        self.shared.family.max_queues()
    }

    /// The indices of the queue pairs open now.
    pub fn open_queues(&self) -> Vec<u16> {
        self.shared.control().open_queues().collect()
    }

    /// The device's counters (accumulated from its clear-on-read registers).
    pub fn counters(&self) -> Counters {
        device_counters(&self.shared)
    }

    /// The register access (tests inspect their fake through it).
    pub fn registers(&self) -> &R {
        &self.shared.regs
    }
}

fn device_counters<R: RegisterIo>(sh: &Shared<R>) -> Counters {
    sh.control().counters(&sh.regs)
}

/// One queue pair of an [`IntelDevice`]: one endpoint's packet I/O, implementing [`Transport`]
/// (the core's [`erpc_nic::intel::Queue`], which it wraps). `Send`: open it on one thread, run
/// its endpoint on another.
pub struct IntelQueue<R: RegisterIo = Bar> {
    // Drop order (declaration order): Drop::drop closes the core queue (stops the pair); its
    // memory is unmapped next, while the device is still open; then the device's last
    // reference may go.
    core: ManuallyDrop<core_intel::Queue<DevRegs<R>, StdDelay>>,
    _mem: DmaMemory,
    dev: Arc<Shared<R>>,
}

// SAFETY: a queue owns its rings and buffers (the core queue's DmaRanges, into `_mem`, which
// moves with it). Lent RX buffers are only touched by whoever holds the queue (through
// `rx_release`). What it shares with the device handle and the other queues is the register
// access (`R: Sync`, written per queue or under the device's lock) and the device state behind
// a Mutex.
unsafe impl<R: RegisterIo + Send + Sync> Send for IntelQueue<R> {}

impl<R: RegisterIo> IntelQueue<R> {
    /// This queue pair's index on the device (its VMDq pool on igb, its 5-tuple filter on ixgbe).
    pub fn index(&self) -> u16 {
        self.core.index()
    }

    /// The register family.
    pub fn family(&self) -> Family {
        self.dev.family
    }

    /// This queue's own counters.
    pub fn counters(&self) -> QueueCounters {
        self.core.counters()
    }

    /// The device's counters (all queues together; see [`IntelDevice::counters`]).
    pub fn device_counters(&self) -> Counters {
        device_counters(&self.dev)
    }

    /// The register access (tests inspect their fake through it).
    pub fn registers(&self) -> &R {
        &self.dev.regs
    }

    /// Sends one frame from an arbitrary device address: a diagnostic for IOMMU containment
    /// tests (a descriptor pointing outside every mapping must not leak memory). Returns false
    /// if the ring is full.
    ///
    /// # Safety
    /// As [`erpc_nic::intel::Queue::send_raw`]: without an IOMMU the device reads whatever
    /// physical memory `iova` names; and not while an endpoint sends on the queue.
    pub unsafe fn send_raw(&mut self, iova: u64, len: u32) -> bool {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.core.send_raw(iova, len) }
    }
}

impl<R: RegisterIo> Transport for IntelQueue<R> {
    fn mtu(&self) -> usize {
        self.core.mtu()
    }

    fn local_addr(&self) -> EndpointAddr {
        self.core.local_addr()
    }

    fn max_tx_in_flight(&self) -> usize {
        self.core.max_tx_in_flight()
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        self.core.tx_burst(pkts)
    }

    fn tx_flush(&mut self) {
        self.core.tx_flush()
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        self.core.rx_burst(out)
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        self.core.rx_release(pkts)
    }

    fn tx_reclaimed(&self) -> u64 {
        self.core.tx_reclaimed()
    }
}

impl<R: RegisterIo> Drop for IntelQueue<R> {
    fn drop(&mut self) {
        // SAFETY: taken once, here; `core` is not used again (the fields drop next).
        let q = unsafe { ManuallyDrop::take(&mut self.core) };
        // Stop steering to this queue pair and stop its DMA before its rings and buffers are
        // unmapped (`_mem`, dropped after this); the other queues are untouched.
        self.dev.control().close_queue(q);
    }
}

/// Compile-time checks: a queue moves to its endpoint's thread; the device handle too.
#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>() {}
    send::<IntelQueue<Bar>>();
    send::<IntelDevice<Bar>>();
}
