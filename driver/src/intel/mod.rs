//! Userspace driver for Intel NICs with advanced descriptors: the igb family (82576, I350) and
//! the ixgbe family (82599/X520, X540), over VFIO, with one queue pair per endpoint.
//!
//! * [`desc`]: descriptor layouts (zerocopy, datasheet citations), shared by both families.
//! * `ring`: the receive and transmit rings, shared by both families.
//! * [`igb`], [`ixgbe`]: per-family registers, bring-up and steering.
//! * [`IntelDevice`]: the device, opened once per process. It hands out [`IntelQueue`]s, one
//!   queue pair each, which implement the dataplane's [`Transport`] and are `Send`: each moves
//!   to the thread that owns its endpoint, and nothing on the datapath is shared between them
//!   (a queue writes its own tail registers; the device-wide registers are only written under
//!   the device's lock, when queues open and close). Generic over register access
//!   ([`RegisterIo`]) so tests can put a register-level fake in place of a BAR.
//!
//! # One endpoint per queue, steered by the NIC
//!
//! Each endpoint has its own UDP port on the NIC's IPv4 address (as the original maps each
//! endpoint to a port), and received frames reach its queue by hardware steering, never by a
//! software demultiplexer:
//! * **igb**: VMDq pools by MAC address. Each queue pair is a pool with a MAC address of its
//!   own (queue 0: the NIC's; others: [`queue_mac`], or [`QueueConfig::mac`]); up to 8. Why not
//!   RSS with client-chosen source ports: see [`igb`].
//! * **ixgbe**: one 5-tuple filter per queue on the UDP destination port; up to 64. Frames no
//!   filter claims land on queue 0 (see [`ixgbe`]).
//!
//! Each queue checks the destination of what it receives (the MAC on igb, the UDP port on
//! ixgbe) and counts strays in [`QueueCounters::rx_foreign`]: with steering right it stays 0
//! (on ixgbe, queue 0 also counts frames no filter claimed).
//!
//! # Closing and drop order
//!
//! Dropping an [`IntelQueue`] removes its steering entry, disables its two queues and waits for
//! them to stop before its rings and buffers are unmapped; the other queues keep running. The
//! device itself (receive and transmit off, bus mastering off, BAR unmapped, VFIO device
//! closed) is torn down when the last of the [`IntelDevice`] handle and its queues is dropped,
//! so no ring memory is ever unmapped while the device can still reach it.
//!
//! Receive buffers (2 KiB, one per descriptor) and both rings of a queue share one hugepage
//! allocation mapped for the device, carved into [`erpc_hugepages::DmaSlice`]s; transmit is
//! zero-copy from the dataplane's own DMA region, which must be mapped in the same IOMMU domain
//! ([`erpc_hugepages::DmaSpace`]).
//!
//! Tests: `tests/tests/intel.rs` runs the driver on both families against the register-level
//! fake of `tests/intel_fake.rs` (the loopback scenarios, ring setup, unsignaled transmit,
//! in-order reposting, dropped and forged frames, a link that never comes up);
//! `tests/tests/intel_multiq.rs` checks the steering register by register, frames reaching
//! only their queue, endpoints on several threads, closing queues and drop order;
//! `tests/vm/run` runs it through real VFIO on two emulated 82576 in a QEMU guest
//! (`tests/vm/loopback.rs`: the loopback scenarios, statistics registers, error messages,
//! IOMMU containment, and two endpoints per NIC on four threads).

pub mod desc;
pub mod igb;
pub mod ixgbe;
mod ring;

use crate::mmio::RegisterIo;
use crate::pci::NicFamily;
use crate::vfio::{Bar, DeviceError, PciFunction};
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::HEADROOM;
use erpc_hugepages::{DmaError, DmaMemory, DmaSpace, PageSize};
use ring::{RxRing, TxRing};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRegs {
    pub rdbal: u32,
    pub rdbah: u32,
    pub rdlen: u32,
    pub srrctl: u32,
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

/// What the family setup code needs to program one queue pair.
#[derive(Clone, Copy, Debug)]
pub struct RingSetup {
    pub rx_ring_iova: u64,
    pub rx_len: u16,
    pub rx_buf_size: u32,
    /// Initial RDT.
    pub rx_tail: u16,
    pub tx_ring_iova: u64,
    pub tx_len: u16,
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

    /// How many queue pairs (endpoints) one device serves: 8 VMDq pools on igb, 64 queues on
    /// ixgbe.
    pub fn max_queues(self) -> u16 {
        match self {
            Family::Igb => igb::POOLS,
            Family::Ixgbe => ixgbe::MAX_QUEUES,
        }
    }

    /// Queue pair `n`'s register offsets.
    pub fn queue(self, n: u16) -> QueueRegs {
        match self {
            Family::Igb => igb::queue(n),
            Family::Ixgbe => ixgbe::queue(n),
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

    fn init_device(self, r: &impl RegisterIo) -> Result<(), IntelError> {
        match self {
            Family::Igb => igb::init_device(r),
            Family::Ixgbe => ixgbe::init_device(r),
        }
    }

    fn start_queue(self, r: &impl RegisterIo, n: u16, s: &RingSetup, dst: Destination) -> Result<(), IntelError> {
        match self {
            Family::Igb => igb::start_queue(r, n, s, dst.mac),
            Family::Ixgbe => ixgbe::start_queue(r, n, s, dst.udp_port),
        }
    }

    fn stop_queue(self, r: &impl RegisterIo, n: u16) {
        match self {
            Family::Igb => igb::stop_queue(r, n),
            Family::Ixgbe => ixgbe::stop_queue(r, n),
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

/// The device's counters, from its clear-on-read statistics registers (all queues together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Good packets/bytes received and transmitted (GPRC, GPTC, GORC, GOTC).
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the device dropped for lack of room (MPC).
    pub rx_missed: u64,
    /// Frames that found no posted descriptor (RNBC on igb, QPRDC of queue 0 on ixgbe).
    pub rx_no_buffer: u64,
    /// Frames with a bad FCS (CRCERRS).
    pub crc_errors: u64,
}

/// One queue pair's own counters, kept by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Frames received on this queue.
    pub rx_frames: u64,
    /// Received frames whose destination is not this queue's endpoint (its MAC address on igb,
    /// its UDP port on ixgbe): steering gone wrong, or on ixgbe's queue 0 also frames that no
    /// filter claimed. Handed to the dataplane all the same (which drops what is not its own).
    pub rx_foreign: u64,
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

/// Why an Intel NIC or one of its queues could not be brought up. Each message says what to do.
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
                write!(f, "bad queue configuration: {ring} = {entries}: use a multiple of 8 in 64..=4096")
            }
            IntelError::RsInterval { value, max } => write!(
                f,
                "bad queue configuration: rs_interval = {value}: use 1..={max} (a quarter of tx_ring), so that a \
                 write-back is always pending before the ring fills"
            ),
            IntelError::Mtu(m) => write!(f, "bad NIC configuration: mtu = {m}: use 64..=1514"),
            IntelError::NoFreeQueue { max } => write!(
                f,
                "all {max} queue pairs of the NIC are in use (one per endpoint): close an endpoint \
                 first, or spread the endpoints over more NICs"
            ),
            IntelError::PortInUse(port) => {
                write!(f, "UDP port {port} is already an endpoint's on this NIC: give each endpoint its own port")
            }
            IntelError::BadQueueMac(m) => write!(
                f,
                "MAC address {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} cannot be a queue's: it must be \
                 unicast and not another queue's (igb), or the NIC's own (ixgbe steers by UDP port); \
                 leave QueueConfig::mac unset for the default",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
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

/// Settings of an [`IntelDevice`].
#[derive(Clone, Copy, Debug)]
pub struct IntelConfig {
    /// The NIC's IPv4 address, shared by its endpoints (each has its own UDP port).
    pub ipv4: [u8; 4],
    /// How long to wait for link up after bring-up; zero skips the wait.
    pub link_timeout: Duration,
    /// Largest frame, at most 1514 (no jumbo frames: one 2 KiB buffer per frame).
    pub mtu: usize,
}

impl Default for IntelConfig {
    fn default() -> Self {
        IntelConfig { ipv4: [10, 0, 0, 1], link_timeout: Duration::from_secs(10), mtu: 1514 }
    }
}

/// Settings of one [`IntelQueue`] (one endpoint).
#[derive(Clone, Copy, Debug)]
pub struct QueueConfig {
    /// The endpoint's UDP port on the NIC's address: each queue of a device has its own.
    pub udp_port: u16,
    /// igb: the MAC address the queue's VMDq pool answers to. `None`: the NIC's own for queue
    /// 0, [`queue_mac`] for the others. ixgbe: must be `None` or the NIC's own address.
    pub mac: Option<[u8; 6]>,
    /// Descriptors per ring (multiple of 8, 64..=4096).
    pub rx_ring: u16,
    pub tx_ring: u16,
    /// Request a descriptor write-back on one packet in this many.
    pub rs_interval: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { udp_port: 31850, mac: None, rx_ring: 512, tx_ring: 512, rs_interval: 32 }
    }
}

impl QueueConfig {
    /// The defaults with `udp_port`.
    pub fn port(udp_port: u16) -> QueueConfig {
        QueueConfig { udp_port, ..Default::default() }
    }
}

/// The MAC address of igb queue pair `n` when none is configured: the NIC's for queue 0; for
/// the others the NIC's with the locally administered bit set and `n` in bits 2..7 of the
/// first byte (so they differ from the NIC's, from each other, and stay unicast).
pub fn queue_mac(nic: [u8; 6], n: u16) -> [u8; 6] {
    if n == 0 {
        return nic;
    }
    let mut m = nic;
    m[0] = ((nic[0] | 0x02) & !0x01) ^ ((n as u8 & 0x3F) << 2);
    m
}

/// Receive buffer size: one frame per buffer.
const RX_BUF: u32 = 2048;
/// How long `tx_flush` waits for the device before giving up (and counting it).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a queue's frames are steered to: its MAC (igb) and its UDP port (ixgbe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Destination {
    mac: [u8; 6],
    udp_port: u16,
}

/// Device state changed only when queues open and close.
struct Control {
    /// The open queue pairs, by index.
    queues: Vec<Option<Destination>>,
    /// Accumulated from the clear-on-read statistics registers.
    counters: Counters,
}

/// What the device handle and its queues share.
struct Shared<R: RegisterIo> {
    regs: R,
    family: Family,
    mac: [u8; 6],
    ipv4: [u8; 4],
    mtu: usize,
    space: Arc<DmaSpace>,
    ctl: Mutex<Control>,
    // Drop order (declaration order): Drop::drop stops every queue and bus mastering, then the
    // BAR (in `regs`) is unmapped and the VFIO device closed. Every queue's ring memory is
    // gone by then: each queue holds this through an Arc, and drops its memory first.
    pci: Option<PciFunction>,
}

impl<R: RegisterIo> Shared<R> {
    fn control(&self) -> MutexGuard<'_, Control> {
        // A panic while holding the lock leaves no broken invariant behind (every update is one
        // assignment): carry on with the state.
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: RegisterIo> Drop for Shared<R> {
    fn drop(&mut self) {
        // Stop DMA before the BAR goes away: queues off, then bus mastering.
        self.family.stop(&self.regs);
        let _ = wait("queues to stop", Duration::from_millis(50), || {
            (0..self.family.max_queues()).all(|n| {
                let q = self.family.queue(n);
                (self.regs.read32(q.rxdctl) | self.regs.read32(q.txdctl)) & QUEUE_ENABLE == 0
            })
        });
        if let Some(pci) = &self.pci {
            if let Err(e) = pci.disable_dma() {
                log::warn!("{}: clearing bus mastering: {e}", pci.bdf());
            }
        }
    }
}

/// An Intel NIC driven from userspace, opened once per process. Hands out one
/// [`IntelQueue`] per endpoint with [`IntelDevice::open_queue`]; see the module docs for
/// steering and drop order.
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
            Family::of(vendor, device).ok_or_else(|| IntelError::Unsupported { bdf: bdf.into(), vendor, device })?;
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
        if !(64..=1514).contains(&cfg.mtu) {
            return Err(IntelError::Mtu(cfg.mtu));
        }
        family.reset(&regs)?;
        let mac = family.mac(&regs);
        let shared = Shared {
            regs,
            family,
            mac,
            ipv4: cfg.ipv4,
            mtu: cfg.mtu,
            space: space.clone(),
            ctl: Mutex::new(Control {
                queues: vec![None; family.max_queues() as usize],
                counters: Counters::default(),
            }),
            pci,
        };
        // On failure part-way, dropping `shared` stops whatever was started.
        family.start_link(&shared.regs)?;
        family.init_device(&shared.regs)?;
        // Start the statistics from zero (they are clear-on-read).
        family.read_counters(&shared.regs, &mut Counters::default());
        let dev = IntelDevice { shared: Arc::new(shared) };
        if !cfg.link_timeout.is_zero() {
            let t0 = Instant::now();
            while !dev.link_up() {
                if t0.elapsed() > cfg.link_timeout {
                    return Err(IntelError::LinkDown { waited: t0.elapsed() });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(dev)
    }

    /// Opens the lowest free queue pair for one endpoint: allocates its rings and buffers,
    /// programs and enables its queues, then steers frames for `cfg.udp_port` (ixgbe) or for its
    /// MAC address (igb) to it.
    pub fn open_queue(&self, cfg: QueueConfig) -> Result<IntelQueue<R>, IntelError> {
        for (name, n) in [("rx_ring", cfg.rx_ring), ("tx_ring", cfg.tx_ring)] {
            if !(64..=4096).contains(&n) || n % 8 != 0 {
                return Err(IntelError::RingSize { ring: name, entries: n });
            }
        }
        if !(1..=cfg.tx_ring as u32 / 4).contains(&cfg.rs_interval) {
            return Err(IntelError::RsInterval { value: cfg.rs_interval, max: cfg.tx_ring as u32 / 4 });
        }
        let sh = &self.shared;
        let family = sh.family;
        let mut ctl = sh.control();
        let max = family.max_queues();
        let n = ctl.queues.iter().position(Option::is_none).ok_or(IntelError::NoFreeQueue { max })? as u16;
        if ctl.queues.iter().flatten().any(|d| d.udp_port == cfg.udp_port) {
            return Err(IntelError::PortInUse(cfg.udp_port));
        }
        let mac = match (family, cfg.mac) {
            (Family::Igb, m) => m.unwrap_or_else(|| queue_mac(sh.mac, n)),
            (Family::Ixgbe, None) => sh.mac,
            (Family::Ixgbe, Some(m)) if m == sh.mac => m,
            (Family::Ixgbe, Some(m)) => return Err(IntelError::BadQueueMac(m)),
        };
        if mac[0] & 1 != 0 || family == Family::Igb && ctl.queues.iter().flatten().any(|d| d.mac == mac) {
            return Err(IntelError::BadQueueMac(mac));
        }
        let dst = Destination { mac, udp_port: cfg.udp_port };

        let rx_bytes = cfg.rx_ring as usize * 16;
        let tx_bytes = cfg.tx_ring as usize * 16;
        let rings = (rx_bytes + tx_bytes).next_multiple_of(4096);
        let page = if sh.space.is_identity() { PageSize::Ordinary } else { PageSize::Huge2M };
        let mem = sh.space.alloc(rings + cfg.rx_ring as usize * RX_BUF as usize, page)?;
        let all = mem.as_slice();
        let rx_mem = all.sub(0, rx_bytes);
        let tx_mem = all.sub(rx_bytes, tx_bytes);
        let bufs = all.sub(rings, cfg.rx_ring as usize * RX_BUF as usize);
        // SAFETY: ring and buffer ranges are disjoint parts of `mem`, mapped for the device at
        // their IOVAs; `mem` lives in the returned queue, next to the rings, and is dropped
        // after them and after the queue pair is stopped (see IntelQueue's Drop).
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
        };
        if let Err(e) = family.start_queue(&sh.regs, n, &setup, dst) {
            // Part-way through: make sure the queues no longer DMA into `mem` as it goes away.
            family.stop_queue(&sh.regs, n);
            quiesce(&sh.regs, &family.queue(n));
            return Err(e);
        }
        ctl.queues[n as usize] = Some(dst);
        drop(ctl);
        Ok(IntelQueue {
            index: n,
            q: family.queue(n),
            rx,
            tx,
            addr: EndpointAddr { mac, ipv4: sh.ipv4, udp_port: cfg.udp_port },
            mtu: sh.mtu,
            counters: QueueCounters::default(),
            dst,
            _mem: mem,
            dev: self.shared.clone(),
        })
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
        let ctl = self.shared.control();
        (0..ctl.queues.len() as u16).filter(|&n| ctl.queues[n as usize].is_some()).collect()
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
    let mut ctl = sh.control();
    sh.family.read_counters(&sh.regs, &mut ctl.counters);
    ctl.counters
}

/// Waits (briefly) for both queues' ENABLE bits to read 0 after a stop.
fn quiesce(r: &impl RegisterIo, q: &QueueRegs) {
    let _ = wait("queues to stop", Duration::from_millis(50), || {
        (r.read32(q.rxdctl) | r.read32(q.txdctl)) & QUEUE_ENABLE == 0
    });
}

/// One queue pair of an [`IntelDevice`]: one endpoint's packet I/O, implementing [`Transport`].
/// `Send`: open it on one thread, run its endpoint on another.
pub struct IntelQueue<R: RegisterIo = Bar> {
    index: u16,
    q: QueueRegs,
    rx: RxRing,
    tx: TxRing,
    addr: EndpointAddr,
    mtu: usize,
    counters: QueueCounters,
    dst: Destination,
    // Drop order (declaration order): Drop::drop stops this queue pair; its memory is unmapped
    // next, while the device is still open; then the device's last reference may go.
    _mem: DmaMemory,
    dev: Arc<Shared<R>>,
}

// SAFETY: a queue owns its rings and buffers; the raw pointers it holds point into its own DMA
// memory, which moves with it. Lent RX buffers are only touched by whoever holds the queue
// (through `rx_release`). What it shares with the device handle and the other queues is the
// register access (`R: Sync`, written per queue or under the device's lock) and the device state
// behind a Mutex.
unsafe impl<R: RegisterIo + Send + Sync> Send for IntelQueue<R> {}

impl<R: RegisterIo> IntelQueue<R> {
    /// Writes a tail register, after every descriptor store before it.
    fn doorbell(&self, reg: u32, tail: u16) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.dev.regs.write32(reg, tail as u32);
    }

    /// Disables the TX queue, empties it and enables it again (datasheets: the head and tail
    /// registers may only be written while the queue is disabled).
    fn restart_tx(&mut self) {
        let q = self.q;
        let r = &self.dev.regs;
        r.clear_bits(q.txdctl, QUEUE_ENABLE);
        let _ = wait("TX queue to stop", Duration::from_millis(100), || r.read32(q.txdctl) & QUEUE_ENABLE == 0);
        r.write32(q.tdh, 0);
        r.write32(q.tdt, 0);
        self.tx.restart();
        r.set_bits(q.txdctl, QUEUE_ENABLE);
    }

    /// This queue pair's index on the device (its VMDq pool on igb, its 5-tuple filter on ixgbe).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The register family.
    pub fn family(&self) -> Family {
        self.dev.family
    }

    /// This queue's own counters.
    pub fn counters(&self) -> QueueCounters {
        self.counters
    }

    /// The device's counters (all queues together; see [`IntelDevice::counters`]).
    pub fn device_counters(&self) -> Counters {
        device_counters(&self.dev)
    }

    /// The register access (tests inspect their fake through it).
    pub fn registers(&self) -> &R {
        &self.dev.regs
    }

    /// Whether the frame at `p` is for this queue's endpoint: its destination MAC (igb) or UDP
    /// port (ixgbe).
    fn is_ours(&self, p: &RxPacket) -> bool {
        if (p.len as usize) < HEADROOM {
            return false;
        }
        // SAFETY: the ring lent `p.len >= HEADROOM` readable bytes at `p.data`; copied out with
        // raw reads (device-writable memory is never behind a reference).
        let hdr: [u8; HEADROOM] = unsafe { std::ptr::read_unaligned(p.data.as_ptr() as *const [u8; HEADROOM]) };
        match self.dev.family {
            Family::Igb => hdr[..6] == self.dst.mac,
            // Destination port: bytes 36..38 (14 Ethernet + 20 IPv4 + 2).
            Family::Ixgbe => u16::from_be_bytes([hdr[36], hdr[37]]) == self.dst.udp_port,
        }
    }

    /// Sends one frame from an arbitrary device address: a diagnostic for IOMMU containment
    /// tests (a descriptor pointing outside every mapping must not leak memory). Returns false
    /// if the ring is full.
    ///
    /// # Safety
    /// Without an IOMMU the device reads whatever physical memory `iova` names. The frame counts
    /// as an accepted packet in [`Transport::tx_reclaimed`]: do not use this while an endpoint
    /// is sending on the queue (its count of accepted packets would fall behind the queue's).
    pub unsafe fn send_raw(&mut self, iova: u64, len: u32) -> bool {
        let ok = self.tx.push(&[(iova, len)]);
        self.doorbell(self.q.tdt, self.tx.tail());
        ok
    }
}

impl<R: RegisterIo> Transport for IntelQueue<R> {
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
        while self.dev.regs.read32(self.q.tdh) != tail {
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
        self.counters.rx_frames += n as u64;
        for p in &out[..n] {
            if !self.is_ours(p) {
                self.counters.rx_foreign += 1;
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

impl<R: RegisterIo> Drop for IntelQueue<R> {
    fn drop(&mut self) {
        // Stop steering to this queue pair and stop its DMA before its rings and buffers are
        // unmapped; the other queues are untouched.
        let sh = &self.dev;
        let mut ctl = sh.control();
        sh.family.stop_queue(&sh.regs, self.index);
        quiesce(&sh.regs, &self.q);
        ctl.queues[self.index as usize] = None;
    }
}

/// Compile-time checks: a queue moves to its endpoint's thread; the device handle too.
#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>() {}
    send::<IntelQueue<Bar>>();
    send::<IntelDevice<Bar>>();
}
