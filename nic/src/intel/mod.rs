//! The driver core for Intel NICs with advanced descriptors: the igb family (82576, I350) and
//! the ixgbe family (82599/X520, X540). Everything that touches the device is here, once: the
//! registers, the descriptor layouts, reset and link bring-up, queue setup and steering, and the
//! per-queue datapath. It needs no operating system; a backend brings the rest:
//!
//! * register access ([`RegisterIo`]): a VFIO BAR, a BAR mapped uncached on bare metal, or a
//!   register-level fake in tests;
//! * DMA memory ([`DmaRange`]): hugepages mapped in the IOMMU, or static identity-mapped memory;
//! * time ([`Delay`]): to wait for resets, queue enables, the link and `tx_flush`.
//!
//! The Linux backend is `erpc_driver::intel` (VFIO, hugepages, several queues on several
//! threads sharing one device behind a lock); the bare-metal appliance drives a queue directly.
//!
//! * [`desc`]: descriptor layouts (zerocopy, datasheet citations), shared by both families.
//! * `ring`: the receive and transmit rings, shared by both families.
//! * [`igb`], [`ixgbe`]: per-family registers, bring-up and steering.
//! * [`Device`]: the device-wide state of one NIC: brought up once ([`Device::bring_up`]), it
//!   opens and closes queue pairs and keeps which are open. It holds no register access of its
//!   own: each call takes it, so a backend decides who may touch the device-wide registers when
//!   (the Linux backend: under a lock).
//! * [`Queue`]: one queue pair, one endpoint's packet I/O: implements the dataplane's
//!   [`Transport`]. It owns its rings and buffers (the [`DmaRange`] it was opened with), its
//!   register access `R` (it writes only its own queue's registers on the datapath) and its
//!   `D: Delay`.
//!
//! # Steering: one endpoint per queue
//!
//! Each endpoint has its own UDP port on the NIC's IPv4 address, and received frames reach its
//! queue by hardware steering:
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
//! # Memory of a queue
//!
//! One [`DmaRange`] of [`QueueConfig::memory_bytes`], starting on a 4 KiB boundary: the receive
//! ring, the transmit ring, then (from the next 4 KiB boundary) one 2 KiB receive buffer per
//! receive descriptor. Transmit is zero-copy from the dataplane's msgbufs, whose device addresses
//! the dataplane passes in each [`TxPacket`]. Dropping a [`Queue`] does not stop the device:
//! close it with [`Device::close_queue`] (or stop the device with [`Device::stop`]) before its
//! memory goes away, as [`DmaRange::new`]'s contract says.

pub mod desc;
pub mod igb;
pub mod ixgbe;
mod ring;

pub use ring::{MAX_RING, MAX_RS_MARKS};

use crate::delay::{self, Delay};
use crate::dma::DmaRange;
use crate::mmio::RegisterIo;
use core::fmt;
use core::sync::atomic::{fence, Ordering};
use core::time::Duration;
use desc::DESC_SIZE;
use erpc_dataplane::transport::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::HEADROOM;
use ring::{RxRing, TxRing};

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

/// The most queue pairs a [`Device`] keeps track of: the larger family's ([`ixgbe::MAX_QUEUES`]).
pub const MAX_QUEUES: usize = ixgbe::MAX_QUEUES as usize;
const _: () = assert!(igb::POOLS as usize <= MAX_QUEUES);

/// Receive buffer size: one frame per buffer.
pub const RX_BUF: u32 = 2048;
/// Alignment of a queue's memory, and of its receive buffers within it.
pub const QUEUE_MEMORY_ALIGN: usize = 4096;
/// Alignment of the descriptor rings: 128 bytes, as the 82599 datasheet asks of RDBAL and TDBAL
/// (8.2.3.8.1, 8.2.3.9.5); rings of a multiple of 8 descriptors keep the second ring aligned.
const RING_ALIGN: usize = 128;
/// How long `tx_flush` waits for the device before giving up (and counting it).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// Device address of the receive ring.
    pub rx_ring_bus: u64,
    pub rx_len: u16,
    pub rx_buf_size: u32,
    /// Initial RDT.
    pub rx_tail: u16,
    /// Device address of the transmit ring.
    pub tx_ring_bus: u64,
    pub tx_len: u16,
}

/// Where a queue's frames are steered to: its MAC (igb) and its UDP port (ixgbe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Destination {
    mac: [u8; 6],
    udp_port: u16,
}

impl Family {
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

    fn reset(self, r: &impl RegisterIo, d: &impl Delay) -> Result<(), Error> {
        match self {
            Family::Igb => igb::reset(r, d),
            Family::Ixgbe => ixgbe::reset(r, d),
        }
    }

    fn start_link(self, r: &impl RegisterIo, d: &impl Delay) -> Result<(), Error> {
        match self {
            Family::Igb => igb::start_link(r, d),
            Family::Ixgbe => ixgbe::start_link(r),
        }
    }

    /// Whether the link is up (igb: STATUS.LU; ixgbe: LINKS.LINK_UP).
    pub fn link_up(self, r: &impl RegisterIo) -> bool {
        match self {
            Family::Igb => igb::link_up(r),
            Family::Ixgbe => ixgbe::link_up(r),
        }
    }

    fn init_device(self, r: &impl RegisterIo) -> Result<(), Error> {
        match self {
            Family::Igb => igb::init_device(r),
            Family::Ixgbe => ixgbe::init_device(r),
        }
    }

    fn start_queue(
        self,
        r: &impl RegisterIo,
        d: &impl Delay,
        n: u16,
        s: &RingSetup,
        dst: Destination,
    ) -> Result<(), Error> {
        match self {
            Family::Igb => igb::start_queue(r, d, n, s, dst.mac),
            Family::Ixgbe => ixgbe::start_queue(r, d, n, s, dst.udp_port),
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

    /// The station address (RAL0/RAH0, loaded from the EEPROM at reset).
    pub fn mac(self, r: &impl RegisterIo) -> [u8; 6] {
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

/// Polls `done` until it holds or `timeout` passes: [`Error::Timeout`] naming `what`.
pub(crate) fn wait(
    d: &impl Delay,
    what: &'static str,
    timeout: Duration,
    done: impl FnMut() -> bool,
) -> Result<(), Error> {
    if delay::poll_until(d, timeout, done) {
        Ok(())
    } else {
        Err(Error::Timeout(what))
    }
}

/// Waits (briefly) for both queues' ENABLE bits to read 0 after a stop.
fn quiesce(r: &impl RegisterIo, d: &impl Delay, q: &QueueRegs) {
    let _ = wait(d, "queues to stop", Duration::from_millis(50), || {
        (r.read32(q.rxdctl) | r.read32(q.txdctl)) & QUEUE_ENABLE == 0
    });
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

/// Why the device or one of its queues could not be brought up. Each message says what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The device did not reach a state in time.
    Timeout(&'static str),
    /// No link within the configured time.
    LinkDown { waited: Duration },
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
    /// The memory given for a queue is smaller than [`QueueConfig::memory_bytes`] or does not
    /// start on a [`QUEUE_MEMORY_ALIGN`] boundary.
    QueueMemory { bus: u64, len: usize, need: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Timeout(what) => write!(
                f,
                "the device did not finish: {what}; check that the NIC is healthy (under Linux: \
                 `lspci -vv`) and that no other driver or process uses it"
            ),
            Error::LinkDown { waited } => write!(
                f,
                "no link after {:.1} s: check the cable and that the peer port is up, or raise \
                 the link timeout",
                waited.as_secs_f64()
            ),
            Error::RingSize { ring, entries } => {
                write!(f, "bad queue configuration: {ring} = {entries}: use a multiple of 8 in 64..={MAX_RING}")
            }
            Error::RsInterval { value, max } => write!(
                f,
                "bad queue configuration: rs_interval = {value}: use 1..={max} (a quarter of tx_ring), so that a \
                 write-back is always pending before the ring fills"
            ),
            Error::Mtu(m) => write!(f, "bad NIC configuration: mtu = {m}: use 64..=1514"),
            Error::NoFreeQueue { max } => write!(
                f,
                "all {max} queue pairs of the NIC are in use (one per endpoint): close an endpoint \
                 first, or spread the endpoints over more NICs"
            ),
            Error::PortInUse(port) => {
                write!(f, "UDP port {port} is already an endpoint's on this NIC: give each endpoint its own port")
            }
            Error::BadQueueMac(m) => write!(
                f,
                "MAC address {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} cannot be a queue's: it must be \
                 unicast and not another queue's (igb), or the NIC's own (ixgbe steers by UDP port); \
                 leave QueueConfig::mac unset for the default",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            Error::QueueMemory { bus, len, need } => write!(
                f,
                "the memory given for a queue ({len} bytes at device address {bus:#x}) must hold {need} \
                 bytes and start on a {QUEUE_MEMORY_ALIGN}-byte boundary: size it with \
                 QueueConfig::memory_bytes() and align it to a page"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// Settings of a [`Device`].
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

/// Settings of one [`Queue`] (one endpoint).
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
    /// Request a descriptor write-back on one packet in this many (with at most
    /// [`MAX_RS_MARKS`] outstanding).
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

    /// Bytes of DMA memory the queue needs: see [`queue_memory_bytes`].
    pub const fn memory_bytes(&self) -> usize {
        queue_memory_bytes(self.rx_ring, self.tx_ring)
    }
}

/// Bytes of DMA memory a queue with `rx_ring` and `tx_ring` descriptors needs: both rings,
/// rounded up to [`QUEUE_MEMORY_ALIGN`], then one [`RX_BUF`] buffer per receive descriptor. A
/// `const fn`, so that bare-metal code can size a static array with it.
pub const fn queue_memory_bytes(rx_ring: u16, tx_ring: u16) -> usize {
    let rings = (rx_ring as usize + tx_ring as usize) * DESC_SIZE;
    rings.div_ceil(QUEUE_MEMORY_ALIGN) * QUEUE_MEMORY_ALIGN + rx_ring as usize * RX_BUF as usize
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

/// The device-wide state of one NIC: its family, address and settings, which queue pairs are
/// open (and where their frames are steered), and the accumulated device counters.
///
/// It holds no register access: every call that touches the device takes it (`regs`), and the
/// device-wide registers are only written through `&mut self` (queue open and close) or at
/// bring-up and stop. A backend that runs queues on several threads keeps the `Device` behind a
/// lock; the queues themselves write only their own queue's registers.
#[derive(Debug)]
pub struct Device {
    family: Family,
    mac: [u8; 6],
    ipv4: [u8; 4],
    mtu: usize,
    /// The open queue pairs, by index.
    queues: [Option<Destination>; MAX_QUEUES],
    /// Accumulated from the clear-on-read statistics registers.
    counters: Counters,
}

impl Device {
    /// Resets the device reached through `regs` and brings it up with no queue open: link
    /// started, receive and transmit set up (queues off), statistics cleared; then waits up to
    /// `cfg.link_timeout` for link. On failure after the reset, receive, transmit and every
    /// queue are stopped again.
    pub fn bring_up(
        regs: &impl RegisterIo,
        delay: &impl Delay,
        family: Family,
        cfg: &IntelConfig,
    ) -> Result<Device, Error> {
        if !(64..=1514).contains(&cfg.mtu) {
            return Err(Error::Mtu(cfg.mtu));
        }
        family.reset(regs, delay)?;
        let dev = Device {
            family,
            mac: family.mac(regs),
            ipv4: cfg.ipv4,
            mtu: cfg.mtu,
            queues: [None; MAX_QUEUES],
            counters: Counters::default(),
        };
        match dev.start(regs, delay, cfg.link_timeout) {
            Ok(()) => Ok(dev),
            Err(e) => {
                dev.stop(regs, delay);
                Err(e)
            }
        }
    }

    fn start(&self, regs: &impl RegisterIo, delay: &impl Delay, link_timeout: Duration) -> Result<(), Error> {
        self.family.start_link(regs, delay)?;
        self.family.init_device(regs)?;
        // Start the statistics from zero (they are clear-on-read).
        self.family.read_counters(regs, &mut Counters::default());
        if !link_timeout.is_zero() {
            let t0 = delay.now_ns();
            if !delay::poll_until(delay, link_timeout, || self.family.link_up(regs)) {
                return Err(Error::LinkDown { waited: Duration::from_nanos(delay.now_ns().saturating_sub(t0)) });
            }
        }
        Ok(())
    }

    /// The register family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The NIC's own MAC address (RAL0/RAH0 at bring-up).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The NIC's IPv4 address.
    pub fn ipv4(&self) -> [u8; 4] {
        self.ipv4
    }

    /// The largest frame.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// How many queue pairs (endpoints) this device serves at most.
    pub fn max_queues(&self) -> u16 {
        self.family.max_queues()
    }

    /// The indices of the queue pairs open now, in order.
    pub fn open_queues(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.max_queues()).filter(|&n| self.queues[n as usize].is_some())
    }

    /// Whether the link is up.
    pub fn link_up(&self, regs: &impl RegisterIo) -> bool {
        self.family.link_up(regs)
    }

    /// The device's counters, accumulated from its clear-on-read registers.
    pub fn counters(&mut self, regs: &impl RegisterIo) -> Counters {
        self.family.read_counters(regs, &mut self.counters);
        self.counters
    }

    /// Checks a queue configuration against this device and its open queues, changing nothing:
    /// the errors [`Device::open_queue`] would return before touching memory or registers
    /// (so that a backend can check before allocating the queue's memory).
    pub fn check_queue(&self, cfg: &QueueConfig) -> Result<(), Error> {
        self.plan(cfg).map(|_| ())
    }

    /// The queue pair a configuration gets, and where its frames will be steered.
    fn plan(&self, cfg: &QueueConfig) -> Result<(u16, Destination), Error> {
        for (ring, entries) in [("rx_ring", cfg.rx_ring), ("tx_ring", cfg.tx_ring)] {
            if !(64..=MAX_RING).contains(&entries) || entries % 8 != 0 {
                return Err(Error::RingSize { ring, entries });
            }
        }
        let max_rs = cfg.tx_ring as u32 / 4;
        if !(1..=max_rs).contains(&cfg.rs_interval) {
            return Err(Error::RsInterval { value: cfg.rs_interval, max: max_rs });
        }
        let family = self.family;
        let max = family.max_queues();
        let open = &self.queues[..max as usize];
        let n = open.iter().position(Option::is_none).ok_or(Error::NoFreeQueue { max })? as u16;
        if open.iter().flatten().any(|d| d.udp_port == cfg.udp_port) {
            return Err(Error::PortInUse(cfg.udp_port));
        }
        let mac = match (family, cfg.mac) {
            (Family::Igb, m) => m.unwrap_or_else(|| queue_mac(self.mac, n)),
            (Family::Ixgbe, None) => self.mac,
            (Family::Ixgbe, Some(m)) if m == self.mac => m,
            (Family::Ixgbe, Some(m)) => return Err(Error::BadQueueMac(m)),
        };
        if mac[0] & 1 != 0 || family == Family::Igb && open.iter().flatten().any(|d| d.mac == mac) {
            return Err(Error::BadQueueMac(mac));
        }
        Ok((n, Destination { mac, udp_port: cfg.udp_port }))
    }

    /// Opens the lowest free queue pair for one endpoint in `mem` (see the module docs for its
    /// size and layout): writes its rings, programs and enables its queues, then steers frames
    /// for `cfg.udp_port` (ixgbe) or for its MAC address (igb) to it. The queue keeps `regs`
    /// (which must reach this device: the registers given to [`Device::bring_up`]) and `delay`.
    ///
    /// On an error nothing stays enabled, and `mem` is dropped: the device no longer reaches
    /// it.
    pub fn open_queue<R: RegisterIo, D: Delay>(
        &mut self,
        regs: R,
        delay: D,
        cfg: &QueueConfig,
        mut mem: DmaRange,
    ) -> Result<Queue<R, D>, Error> {
        let (n, dst) = self.plan(cfg)?;
        let need = cfg.memory_bytes();
        let aligned = |a: u64| a % QUEUE_MEMORY_ALIGN as u64 == 0;
        if mem.len() < need || !aligned(mem.bus()) || !aligned(mem.cpu().as_ptr() as u64) {
            return Err(Error::QueueMemory { bus: mem.bus(), len: mem.len(), need });
        }
        let family = self.family;
        let (rx_bytes, tx_bytes) = (cfg.rx_ring as usize * DESC_SIZE, cfg.tx_ring as usize * DESC_SIZE);
        let sized = "sized by queue_memory_bytes";
        let mut rings = mem.take(rx_bytes + tx_bytes, QUEUE_MEMORY_ALIGN).expect(sized);
        let rx_mem = rings.take(rx_bytes, RING_ALIGN).expect(sized);
        let tx_mem = rings.take(tx_bytes, RING_ALIGN).expect(sized);
        let bufs = mem.take(cfg.rx_ring as usize * RX_BUF as usize, 1).expect(sized);
        let (rx_ring_bus, tx_ring_bus) = (rx_mem.bus(), tx_mem.bus());
        let rx = RxRing::new(rx_mem, cfg.rx_ring, bufs, RX_BUF, family.rx_err_mask());
        let tx = TxRing::new(tx_mem, cfg.tx_ring, cfg.rs_interval);
        let setup = RingSetup {
            rx_ring_bus,
            rx_len: cfg.rx_ring,
            rx_buf_size: RX_BUF,
            rx_tail: rx.tail(),
            tx_ring_bus,
            tx_len: cfg.tx_ring,
        };
        if let Err(e) = family.start_queue(&regs, &delay, n, &setup, dst) {
            // Part-way through: make sure the queues no longer DMA into `mem` as it goes away.
            family.stop_queue(&regs, n);
            quiesce(&regs, &delay, &family.queue(n));
            return Err(e);
        }
        self.queues[n as usize] = Some(dst);
        Ok(Queue {
            regs,
            delay,
            family,
            index: n,
            q: family.queue(n),
            rx,
            tx,
            addr: EndpointAddr { mac: dst.mac, ipv4: self.ipv4, udp_port: cfg.udp_port },
            mtu: self.mtu,
            counters: QueueCounters::default(),
            dst,
        })
    }

    /// Closes a queue pair: stops steering to it, disables its two queues and waits for them to
    /// stop; then its memory (dropped with `q`) is no longer reached by the device. The other
    /// queues keep running.
    pub fn close_queue<R: RegisterIo, D: Delay>(&mut self, q: Queue<R, D>) {
        self.family.stop_queue(&q.regs, q.index);
        quiesce(&q.regs, &q.delay, &q.q);
        let slot = &mut self.queues[q.index as usize];
        if *slot == Some(q.dst) {
            *slot = None;
        }
    }

    /// Stops receive, transmit and every queue, and waits (briefly) for the queues to stop:
    /// before the memory of any queue goes away, or before the device is handed back.
    pub fn stop(&self, regs: &impl RegisterIo, delay: &impl Delay) {
        let family = self.family;
        family.stop(regs);
        let _ = wait(delay, "queues to stop", Duration::from_millis(50), || {
            (0..family.max_queues()).all(|n| {
                let q = family.queue(n);
                (regs.read32(q.rxdctl) | regs.read32(q.txdctl)) & QUEUE_ENABLE == 0
            })
        });
    }
}

/// One queue pair of a [`Device`]: one endpoint's packet I/O, implementing [`Transport`]. Made
/// by [`Device::open_queue`]; closed by [`Device::close_queue`] (dropping it leaves it running:
/// see the module docs).
pub struct Queue<R, D> {
    regs: R,
    delay: D,
    family: Family,
    index: u16,
    q: QueueRegs,
    rx: RxRing,
    tx: TxRing,
    addr: EndpointAddr,
    mtu: usize,
    counters: QueueCounters,
    dst: Destination,
}

impl<R: RegisterIo, D: Delay> Queue<R, D> {
    /// Writes a tail register, after every descriptor store before it.
    fn doorbell(&self, reg: u32, tail: u16) {
        fence(Ordering::SeqCst);
        self.regs.write32(reg, tail as u32);
    }

    /// Disables the TX queue, empties it and enables it again (datasheets: the head and tail
    /// registers may only be written while the queue is disabled).
    fn restart_tx(&mut self) {
        let q = self.q;
        let r = &self.regs;
        r.clear_bits(q.txdctl, QUEUE_ENABLE);
        let _ = wait(&self.delay, "TX queue to stop", Duration::from_millis(100), || {
            r.read32(q.txdctl) & QUEUE_ENABLE == 0
        });
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
        self.family
    }

    /// This queue's own counters.
    pub fn counters(&self) -> QueueCounters {
        self.counters
    }

    /// The register access this queue holds.
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// Whether the frame at `p` is for this queue's endpoint: its destination MAC (igb) or UDP
    /// port (ixgbe).
    fn is_ours(&self, p: &RxPacket) -> bool {
        if (p.len as usize) < HEADROOM {
            return false;
        }
        // SAFETY: the ring lent `p.len >= HEADROOM` readable bytes at `p.data`; copied out with
        // a raw read (device-writable memory is never behind a reference).
        let hdr: [u8; HEADROOM] = unsafe { core::ptr::read_unaligned(p.data.as_ptr() as *const [u8; HEADROOM]) };
        match self.family {
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
    /// Without an IOMMU the device reads whatever physical memory `bus` names. The frame counts
    /// as an accepted packet in [`Transport::tx_reclaimed`]: do not use this while an endpoint
    /// is sending on the queue (its count of accepted packets would fall behind the queue's).
    pub unsafe fn send_raw(&mut self, bus: u64, len: u32) -> bool {
        let ok = self.tx.push(&[(bus, len)]);
        self.doorbell(self.q.tdt, self.tx.tail());
        ok
    }
}

impl<R: RegisterIo, D: Delay> Transport for Queue<R, D> {
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
        let t0 = self.delay.now_ns();
        let limit = delay::duration_ns(FLUSH_TIMEOUT);
        // The head register passes a descriptor once the device has processed it.
        while self.regs.read32(self.q.tdh) != tail {
            if self.delay.now_ns().saturating_sub(t0) > limit {
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
            core::hint::spin_loop();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_memory_is_two_rings_a_page_boundary_and_the_buffers() {
        assert_eq!(queue_memory_bytes(64, 64), 4096 + 64 * 2048);
        assert_eq!(queue_memory_bytes(512, 512), 16384 + 512 * 2048);
        assert_eq!(queue_memory_bytes(128, 136), 8192 + 128 * 2048, "4224 bytes of rings round up");
        assert_eq!(QueueConfig::default().memory_bytes(), queue_memory_bytes(512, 512));
    }

    #[test]
    fn queue_macs_differ_and_stay_unicast() {
        let nic = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(queue_mac(nic, 0), nic);
        let macs: std::vec::Vec<[u8; 6]> = (0..igb::POOLS).map(|n| queue_mac(nic, n)).collect();
        for (i, a) in macs.iter().enumerate() {
            assert_eq!(a[0] & 1, 0, "unicast");
            assert!(macs[i + 1..].iter().all(|b| b != a), "queue {i}'s address is unique");
        }
    }

    /// Registers that record writes and read as 0.
    #[derive(Default)]
    struct Recorder(core::cell::RefCell<std::vec::Vec<(u32, u32)>>);

    impl RegisterIo for Recorder {
        fn read32(&self, _: u32) -> u32 {
            0
        }

        fn write32(&self, off: u32, value: u32) {
            self.0.borrow_mut().push((off, value));
        }
    }

    #[test]
    fn queue_memory_too_small_or_misaligned_is_refused_before_any_register_write() {
        let mut dev = Device {
            family: Family::Igb,
            mac: [2, 0, 0, 0, 0, 1],
            ipv4: [10, 0, 0, 1],
            mtu: 1514,
            queues: [None; MAX_QUEUES],
            counters: Counters::default(),
        };
        let cfg = QueueConfig { rx_ring: 64, tx_ring: 64, rs_interval: 16, ..Default::default() };
        let need = cfg.memory_bytes();
        let mut mem: std::vec::Vec<u8> = std::vec![0; need + 8192];
        let base = mem.as_mut_ptr() as usize;
        let page = (base + 4095) & !4095;
        let regs = Recorder::default();
        let cases = [(page, need - 1, "too small"), (page + 128, need, "not page-aligned")];
        for (at, len, why) in cases {
            let p = core::ptr::NonNull::new(at as *mut u8).unwrap();
            // SAFETY: inside `mem`, which outlives the range; no device is involved.
            let range = unsafe { DmaRange::new(p, at as u64, len) };
            let e = dev.open_queue(&regs, crate::delay::Spin(erpc_dataplane::clock::SimClock::new()), &cfg, range);
            assert!(matches!(e, Err(Error::QueueMemory { need: n, .. }) if n == need), "{why}");
        }
        assert!(regs.0.borrow().is_empty(), "no register written");
        assert_eq!(dev.open_queues().count(), 0);
    }

    #[test]
    fn every_error_says_what_to_do() {
        use std::string::ToString;
        let cases = [
            (Error::RingSize { ring: "rx_ring", entries: 100 }, "use a multiple of 8 in 64..=4096"),
            (Error::RsInterval { value: 32, max: 16 }, "use 1..=16"),
            (Error::NoFreeQueue { max: 8 }, "close an endpoint first"),
            (Error::LinkDown { waited: Duration::from_millis(1500) }, "no link after 1.5 s: check the cable"),
            (Error::QueueMemory { bus: 0x1000, len: 10, need: 20 }, "size it with QueueConfig::memory_bytes()"),
            (Error::BadQueueMac([1, 0, 0, 0, 0, 0]), "01:00:00:00:00:00 cannot be a queue's"),
        ];
        for (e, says) in cases {
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
