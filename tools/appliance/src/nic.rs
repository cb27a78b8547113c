//! The NIC: find the Intel 82576 functions among the PCI devices, decode BAR0, turn on memory
//! decoding and bus mastering on the one the appliance drives, read the station address through
//! BAR0; then bring it up with the Intel driver core of `erpc-nic` (the code the VFIO driver runs
//! under Linux): reset, link, one queue pair over static memory, which is the endpoint's
//! [`erpc_dataplane::transport::Transport`] ([`IgbQueue`]).
//!
//! Memory map (src/boot.s: the first 4 GiB identity-mapped with 2 MiB pages, no IOMMU):
//! * BAR0 must lie at 3 GiB or above, which boot.s maps uncached (PCD|PWT): a register read must
//!   reach the device every time and a write must not wait in a cache. Firmware puts 32-bit BARs
//!   there (SeaBIOS under QEMU: 0xfeb80000 and up); a BAR below is refused ([`NicError::Cached`]).
//!   Under TCG the page attributes change nothing; on hardware they are required.
//! * Rings and buffers are static memory in the image ([`crate::dma`]), mapped write-back: DMA is
//!   cache-coherent on x86. Bus address = physical = virtual.
//!
//! Registers read here directly: 82576 GbE Controller Datasheet rev. 2.63, section 8.2.2 (STATUS,
//! 0x00008) and 8.10.13 (RAL0 0x05400 / RAH0 0x05404: the station address loaded from the EEPROM,
//! RAH bit 31 = address valid). Everything else is `erpc_nic::intel::igb`'s.

use crate::clock::TscClock;
use crate::dma::DmaStatic;
use crate::pci::{self, Bar, Bdf, Device};
use core::fmt;
use core::ptr::NonNull;
use core::time::Duration;
use erpc_dataplane::transport::{RxPacket, Segment, Transport, TxPacket};
use erpc_dataplane::Clock;
use erpc_nic::delay::Spin;
use erpc_nic::intel::{self, Family, IntelConfig, Queue, QueueConfig};
use erpc_nic::mmio::Mmio;
use static_cell::StaticCell;

/// PCI ids of the NICs the appliance knows (vendor, device, name).
pub const KNOWN: [(u16, u16, &str); 1] = [(0x8086, 0x10C9, "Intel 82576")];

const STATUS: usize = 0x0_0008;
const RAL0: usize = 0x0_5400;
const RAH0: usize = 0x0_5404;
const RAH_AV: u32 = 1 << 31;
/// BAR0 of the 82576 maps its 128 KiB register space (so does QEMU's igb model).
const BAR0_MIN: u64 = 128 << 10;
/// The identity map of boot.s covers the first 4 GiB.
const MAPPED: u64 = 4 << 30;
/// boot.s maps 3 GiB and up uncached (PCD|PWT), for device registers.
const UNCACHED_FROM: u64 = 3 << 30;

/// The queue pair's descriptors per ring (the driver's defaults).
pub const RX_RING: u16 = 512;
pub const TX_RING: u16 = 512;
/// Bytes of static memory the queue pair's rings and buffers take.
pub const QUEUE_MEMORY: usize = intel::queue_memory_bytes(RX_RING, TX_RING);
/// How long to wait for link after the reset (QEMU's 82576 model: about 0.5 s of emulated time).
const LINK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the loopback check waits for its frame to come back.
const LOOPBACK_TIMEOUT_NS: u64 = 200_000_000;
/// Ethertype of the loopback check's frame: IEEE Std 802 Local Experimental Ethertype 1.
const ETHERTYPE_LOCAL_EXPERIMENTAL: u16 = 0x88B5;
/// The loopback check's frame length (the Ethernet minimum without FCS).
const LOOPBACK_LEN: usize = 60;

/// The NIC's register window, once brought up (the driver core's device and queue refer to it).
static REGS: StaticCell<Mmio> = StaticCell::new();
/// Rings and receive buffers of the one queue pair.
static QUEUE_MEM: DmaStatic<QUEUE_MEMORY> = DmaStatic::new();
/// The loopback check's frame.
static FRAME_MEM: DmaStatic<LOOPBACK_LEN> = DmaStatic::new();

/// The endpoint's packet I/O: queue pair 0 of the igb, registers through BAR0, waits on the TSC.
pub type IgbQueue = Queue<&'static Mmio, Spin<TscClock>>;

/// One NIC found.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub bdf: Bdf,
    pub name: &'static str,
    pub bar0: Bar,
}

/// The NIC prepared for the driver.
#[derive(Clone, Copy, Debug)]
pub struct Nic {
    pub bdf: Bdf,
    pub name: &'static str,
    pub regs: u64,
    pub regs_len: u64,
    pub command: u16,
    pub status: u32,
    pub mac: Option<[u8; 6]>,
}

#[derive(Clone, Copy, Debug)]
pub enum NicError {
    NoneFound,
    NotAt {
        bdf: Bdf,
    },
    BadBar {
        bdf: Bdf,
        bar: Bar,
    },
    Unmapped {
        bdf: Bdf,
        addr: u64,
    },
    NoBusMaster {
        bdf: Bdf,
        command: u16,
    },
    /// BAR0 lies where boot.s maps memory cached.
    Cached {
        bdf: Bdf,
        addr: u64,
    },
    /// A second bring-up: the registers and the static queue memory are taken.
    AlreadyUp,
    /// The driver core refused or the device did not come up.
    Driver {
        bdf: Bdf,
        error: intel::Error,
    },
    /// The loopback check's frame came back wrong.
    LoopbackCorrupt {
        bdf: Bdf,
        len: usize,
        first_bad: Option<usize>,
    },
    /// The transmit queue did not take the loopback frame, or did not send it.
    LoopbackTx {
        bdf: Bdf,
        what: &'static str,
    },
}

impl fmt::Display for NicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NicError::NoneFound => f.write_str(
                "no Intel 82576 on any PCI bus: start QEMU with `-device igb` (or pass nic=none on the \
                 command line to run without a NIC)",
            ),
            NicError::NotAt { bdf } => write!(f, "nic={bdf} names no Intel 82576 (see the PCI devices above)"),
            NicError::BadBar { bdf, bar } => write!(
                f,
                "{bdf}: BAR0 is {bar}, not a memory BAR of at least {} KiB: the firmware did not assign it",
                BAR0_MIN >> 10
            ),
            NicError::Unmapped { bdf, addr } => {
                write!(
                    f,
                    "{bdf}: BAR0 at {addr:#x} is beyond the 4 GiB the boot stub identity-maps (a BAR above 4 GiB \
                     needs more page tables)"
                )
            }
            NicError::NoBusMaster { bdf, command } => {
                write!(f, "{bdf}: bus mastering did not turn on (command register reads {command:#06x})")
            }
            NicError::Cached { bdf, addr } => write!(
                f,
                "{bdf}: BAR0 at {addr:#x} is below {} GiB, where the boot stub maps memory cached: device \
                 registers need an uncached mapping (extend the PCD|PWT range in src/boot.s, or have the firmware \
                 place the BAR higher)",
                UNCACHED_FROM >> 30
            ),
            NicError::AlreadyUp => f.write_str("the NIC was already brought up (one NIC, one queue pair per image)"),
            NicError::Driver { bdf, error } => write!(f, "{bdf}: {error}"),
            NicError::LoopbackCorrupt { bdf, len, first_bad } => match first_bad {
                Some(at) => write!(
                    f,
                    "{bdf}: the loopback frame came back with byte {at} wrong: DMA through the static rings is \
                     broken (bus address != physical address?)"
                ),
                None => write!(
                    f,
                    "{bdf}: the loopback frame came back {len} bytes long, not {LOOPBACK_LEN}: DMA through the \
                     static rings is broken"
                ),
            },
            NicError::LoopbackTx { bdf, what } => write!(f, "{bdf}: the loopback check's transmit failed: {what}"),
        }
    }
}

/// The known NICs among `devices`.
pub fn find(devices: &[Device]) -> heapless::Vec<Found, 8> {
    let mut out = heapless::Vec::new();
    for d in devices {
        if let Some(&(_, _, name)) = KNOWN.iter().find(|(v, id, _)| *v == d.vendor && *id == d.device) {
            let _ = out.push(Found { bdf: d.bdf, name, bar0: pci::bar(d.bdf, 0) });
        }
    }
    out
}

fn read32(base: u64, off: usize) -> u32 {
    // SAFETY: `base` is a memory BAR of at least BAR0_MIN bytes below 4 GiB (checked by the
    // callers), identity-mapped uncached (boot.s), with memory decoding on; `off` is a register
    // offset inside it, 4-byte aligned. Register reads of STATUS and RAL/RAH have no side effect.
    unsafe { core::ptr::read_volatile((base as usize + off) as *const u32) }
}

/// The station address from RAL0/RAH0, if marked valid.
fn station_address(base: u64) -> Option<[u8; 6]> {
    let lo = read32(base, RAL0).to_le_bytes();
    let hi = read32(base, RAH0);
    (hi & RAH_AV != 0).then(|| {
        let h = hi.to_le_bytes();
        [lo[0], lo[1], lo[2], lo[3], h[0], h[1]]
    })
}

fn regs_of(f: &Found) -> Result<(u64, u64), NicError> {
    match f.bar0 {
        Bar::Memory { addr, size, .. } if addr != 0 && size >= BAR0_MIN => {
            if addr + size > MAPPED {
                Err(NicError::Unmapped { bdf: f.bdf, addr })
            } else {
                Ok((addr, size))
            }
        }
        bar => Err(NicError::BadBar { bdf: f.bdf, bar }),
    }
}

/// The station address of a NIC the appliance does not drive, if the firmware left its memory
/// decoding on (its command register is not touched).
pub fn peek_mac(f: &Found) -> Option<[u8; 6]> {
    let (base, _) = regs_of(f).ok()?;
    (f.bdf.command() & pci::CMD_MEMORY != 0).then(|| station_address(base)).flatten()
}

/// Prepares the NIC at `want` (or the first one found): memory decoding and bus mastering on
/// (firmware such as SeaBIOS assigns the BAR but leaves bus mastering off).
pub fn prepare(found: &[Found], want: Option<Bdf>) -> Result<Nic, NicError> {
    let f = match want {
        Some(bdf) => found.iter().find(|f| f.bdf == bdf).ok_or(NicError::NotAt { bdf })?,
        None => found.first().ok_or(NicError::NoneFound)?,
    };
    let (regs, regs_len) = regs_of(f)?;
    let command = f.bdf.enable(pci::CMD_MEMORY | pci::CMD_BUS_MASTER);
    if command & pci::CMD_BUS_MASTER == 0 || command & pci::CMD_MEMORY == 0 {
        return Err(NicError::NoBusMaster { bdf: f.bdf, command });
    }
    Ok(Nic {
        bdf: f.bdf,
        name: f.name,
        regs,
        regs_len,
        command,
        status: read32(regs, STATUS),
        mac: station_address(regs),
    })
}

/// The igb brought up by the driver core, with its one queue pair.
pub struct Igb {
    pub bdf: Bdf,
    /// The driver core's device state (link, counters, the open queue).
    pub device: intel::Device,
    /// The queue pair: the endpoint's transport.
    pub queue: IgbQueue,
    /// The registers (for `device`'s calls).
    pub regs: &'static Mmio,
    /// How long the link took to come up after the reset, in ns (TSC).
    pub link_ns: u64,
}

/// Brings the prepared NIC up with the Intel driver core: reset, link (waiting up to
/// [`LINK_TIMEOUT`] on the calibrated clock), receive and transmit set up, then queue pair 0 over
/// static memory, answering at the NIC's own MAC address, `ipv4` and `udp_port`.
pub fn bring_up(n: &Nic, clock: TscClock, ipv4: [u8; 4], udp_port: u16) -> Result<Igb, NicError> {
    let bdf = n.bdf;
    if n.regs < UNCACHED_FROM {
        return Err(NicError::Cached { bdf, addr: n.regs });
    }
    let base = NonNull::new(n.regs as *mut u8).ok_or(NicError::BadBar { bdf, bar: Bar::Unused })?;
    // SAFETY: BAR0 of the NIC, decoded with memory decoding on (`prepare`), inside the identity
    // map (`regs_of`: below 4 GiB) and mapped uncached (checked above); `regs_len` is the BAR's
    // size. It stays mapped for ever, and from here on only this Mmio (and the read-only peeks
    // of STATUS/RAL/RAH above, volatile register reads too) touches it.
    let mmio = unsafe { Mmio::new(base, n.regs_len as usize) };
    let regs: &'static Mmio = REGS.try_init(mmio).ok_or(NicError::AlreadyUp)?;
    let delay = Spin(clock);
    let driver = |error| NicError::Driver { bdf, error };
    let t0 = clock.now_ns();
    let cfg = IntelConfig { ipv4, link_timeout: LINK_TIMEOUT, mtu: 1514 };
    let mut device = intel::Device::bring_up(regs, &delay, Family::Igb, &cfg).map_err(driver)?;
    let link_ns = clock.now_ns() - t0;
    let mem = QUEUE_MEM.take().ok_or(NicError::AlreadyUp)?;
    let qcfg = QueueConfig { udp_port, rx_ring: RX_RING, tx_ring: TX_RING, ..QueueConfig::default() };
    let queue = device.open_queue(regs, delay, &qcfg, mem).map_err(driver)?;
    Ok(Igb { bdf, device, queue, regs, link_ns })
}

/// What the loopback check saw.
#[derive(Clone, Copy, Debug)]
pub struct Loopback {
    /// Nanoseconds from `tx_burst` to the frame's arrival.
    pub ns: u64,
    pub len: usize,
}

/// Sends one frame to the queue's own MAC address and waits for it on the same queue: the NIC's
/// VMDq switch (DTXSWC.LoopbackEn, set by the driver core; see `erpc_nic::intel::igb`) delivers a
/// frame for a local pool inside the NIC, so this needs no network. It proves that the device
/// reads transmit descriptors and frames, and writes receive buffers and write-backs, at the bus
/// addresses of the static memory. `Ok(None)`: nothing came back in time (QEMU's model loops back
/// to the sending pool itself; on hardware that may need the pool's DTXSWC.LLE bit, which the
/// driver leaves clear).
pub fn loopback_check(igb: &mut Igb, clock: &TscClock) -> Result<Option<Loopback>, NicError> {
    let bdf = igb.bdf;
    let q = &mut igb.queue;
    let mac = q.local_addr().mac;
    let mut frame = [0u8; LOOPBACK_LEN];
    frame[0..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_LOCAL_EXPERIMENTAL.to_be_bytes());
    for (i, b) in frame[14..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(29).wrapping_add(7);
    }
    let mem = FRAME_MEM.take().ok_or(NicError::AlreadyUp)?;
    // SAFETY: `mem` is this frame's static memory (LOOPBACK_LEN bytes), not given to the device
    // yet: written through its raw pointer.
    unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), mem.cpu().as_ptr(), LOOPBACK_LEN) };
    let seg = Segment { vaddr: mem.cpu().as_ptr(), iova: mem.bus(), len: LOOPBACK_LEN as u32 };
    let t0 = clock.now_ns();
    if q.tx_burst(&[TxPacket { segs: [seg, Segment::EMPTY] }]) != 1 {
        return Err(NicError::LoopbackTx { bdf, what: "the ring did not accept the frame" });
    }
    q.tx_flush();
    if q.counters().tx_flush_timeouts != 0 {
        return Err(NicError::LoopbackTx { bdf, what: "the device did not fetch the frame within tx_flush's timeout" });
    }
    let mut rx = [RxPacket::EMPTY; 4];
    loop {
        let n = q.rx_burst(&mut rx);
        if n > 0 {
            let ns = clock.now_ns() - t0;
            let p = rx[0];
            let len = p.len as usize;
            let mut got = [0u8; LOOPBACK_LEN];
            if len == LOOPBACK_LEN {
                // SAFETY: the queue lent `len` readable bytes at `p.data` until rx_release; copied
                // out with a raw copy (device-writable memory is not put behind a reference).
                unsafe { core::ptr::copy_nonoverlapping(p.data.as_ptr(), got.as_mut_ptr(), len) };
            }
            q.rx_release(&rx[..n]);
            if len != LOOPBACK_LEN {
                return Err(NicError::LoopbackCorrupt { bdf, len, first_bad: None });
            }
            if let Some(at) = (0..len).find(|&i| got[i] != frame[i]) {
                return Err(NicError::LoopbackCorrupt { bdf, len, first_bad: Some(at) });
            }
            return Ok(Some(Loopback { ns, len }));
        }
        if clock.now_ns() - t0 > LOOPBACK_TIMEOUT_NS {
            return Ok(None);
        }
        core::hint::spin_loop();
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}
