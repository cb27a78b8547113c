//! PCI: configuration space through the legacy port-I/O mechanism, bus enumeration through
//! PCI-to-PCI bridges, BAR decoding.
//!
//! Sources: PCI Local Bus Specification 3.0, section 3.2.2.3.2 (configuration mechanism #1: the
//! address at port 0xCF8 = enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2;
//! data at 0xCFC..0xCFF), section 6.1 (type 0 header: vendor 0x00, device 0x02, command 0x04,
//! class 0x09..0x0B, header type 0x0E with bit 7 = multi-function) and 6.2.5 (base address
//! registers and sizing them); PCI-to-PCI Bridge Architecture Specification 1.2, section 3.2
//! (type 1 header: secondary bus number at 0x19, subordinate at 0x1A).

use crate::port::{inl, inw, outl, outw};
use core::fmt;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

const VENDOR_ID: u8 = 0x00;
const COMMAND: u8 = 0x04;
const CLASS_REV: u8 = 0x08;
const HEADER_TYPE: u8 = 0x0E;
const BAR0: u8 = 0x10;
/// Type 1 header: primary (0x18), secondary (0x19) and subordinate (0x1A) bus numbers.
const BRIDGE_BUSES: u8 = 0x18;

/// Command register bits (PCI 3.0, 6.2.2).
pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;

/// Devices recorded during enumeration (more are counted, not kept).
pub const MAX_DEVICES: usize = 64;

/// Bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{:x}", self.bus, self.dev, self.func)
    }
}

impl Bdf {
    /// Parses `bb:dd.f` (hexadecimal, as `lspci` prints it).
    pub fn parse(s: &str) -> Option<Bdf> {
        let (bus, rest) = s.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        let bdf = Bdf {
            bus: u8::from_str_radix(bus, 16).ok()?,
            dev: u8::from_str_radix(dev, 16).ok()?,
            func: u8::from_str_radix(func, 16).ok()?,
        };
        (bdf.dev < 32 && bdf.func < 8).then_some(bdf)
    }

    fn address(self, reg: u8) -> u32 {
        1 << 31
            | u32::from(self.bus) << 16
            | u32::from(self.dev) << 11
            | u32::from(self.func) << 8
            | u32::from(reg & 0xFC)
    }

    pub fn read32(self, reg: u8) -> u32 {
        // SAFETY: 0xCF8/0xCFC are the host bridge's configuration mechanism #1 (PCI 3.0,
        // 3.2.2.3.2); selecting a register and reading it has no side effect on the registers
        // this module reads (identification, command, BARs, bus numbers).
        unsafe {
            outl(CONFIG_ADDRESS, self.address(reg));
            inl(CONFIG_DATA)
        }
    }

    pub fn read16(self, reg: u8) -> u16 {
        // SAFETY: as in read32; a 16-bit read at 0xCFC + (reg & 2) reads that half of the dword.
        unsafe {
            outl(CONFIG_ADDRESS, self.address(reg));
            inw(CONFIG_DATA + u16::from(reg & 2))
        }
    }

    pub fn read8(self, reg: u8) -> u8 {
        (self.read32(reg) >> ((reg & 3) * 8)) as u8
    }

    /// Writes a whole dword register.
    ///
    /// # Safety
    /// The write must leave the device in a state the caller intends (a BAR written during
    /// sizing must be restored before decoding is enabled again).
    pub unsafe fn write32(self, reg: u8, v: u32) {
        // SAFETY: the caller's contract; see read32 for the ports.
        unsafe {
            outl(CONFIG_ADDRESS, self.address(reg));
            outl(CONFIG_DATA, v);
        }
    }

    /// Writes a 16-bit register (without touching its neighbour: the status register next to
    /// the command register has write-one-to-clear bits).
    ///
    /// # Safety
    /// As [`Bdf::write32`].
    pub unsafe fn write16(self, reg: u8, v: u16) {
        // SAFETY: the caller's contract; see read16.
        unsafe {
            outl(CONFIG_ADDRESS, self.address(reg));
            outw(CONFIG_DATA + u16::from(reg & 2), v);
        }
    }

    pub fn command(self) -> u16 {
        self.read16(COMMAND)
    }

    /// Sets `bits` in the command register and returns the value read back.
    pub fn enable(self, bits: u16) -> u16 {
        let cmd = self.command();
        // SAFETY: setting I/O, memory or bus-master enable is what the caller asks for; the
        // write is 16 bits wide, so the status register is left alone.
        unsafe { self.write16(COMMAND, cmd | bits) };
        self.command()
    }
}

/// One function found on a bus.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Base class, subclass, programming interface.
    pub class: [u8; 3],
    pub header_type: u8,
    /// Type 1 headers (bridges): secondary and subordinate bus numbers.
    pub bridge_buses: Option<(u8, u8)>,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:02x}{:02x}{:02x}",
            self.bdf, self.vendor, self.device, self.class[0], self.class[1], self.class[2]
        )?;
        if let Some((sec, sub)) = self.bridge_buses {
            write!(f, " bridge to buses {sec:02x}..{sub:02x}")?;
        }
        Ok(())
    }
}

/// What enumeration found.
pub struct Scan {
    pub devices: heapless::Vec<Device, MAX_DEVICES>,
    /// Functions found beyond [`MAX_DEVICES`] (not recorded).
    pub dropped: usize,
    /// Bridges whose secondary bus was already visited or not above their own bus (left out).
    pub bad_bridges: usize,
}

fn probe(bdf: Bdf) -> Option<Device> {
    let id = bdf.read32(VENDOR_ID);
    if id & 0xFFFF == 0xFFFF {
        return None;
    }
    let class = bdf.read32(CLASS_REV);
    let header_type = bdf.read8(HEADER_TYPE);
    let bridge_buses = (header_type & 0x7F == 1).then(|| {
        let b = bdf.read32(BRIDGE_BUSES);
        ((b >> 8) as u8, (b >> 16) as u8)
    });
    Some(Device {
        bdf,
        vendor: id as u16,
        device: (id >> 16) as u16,
        class: [(class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8],
        header_type,
        bridge_buses,
    })
}

/// Enumerates every bus reachable from bus 0 through PCI-to-PCI bridges (depth first, without
/// recursion: a work list of buses), with the bus numbers the firmware assigned. A bus is visited
/// once, whatever its bridges claim, so a misprogrammed bridge cannot loop the scan. If function
/// 0 of 00:00.0 is multi-function, function N is the host bridge of bus N (several host bridges,
/// the legacy convention).
pub fn enumerate() -> Scan {
    let mut scan = Scan { devices: heapless::Vec::new(), dropped: 0, bad_bridges: 0 };
    let mut visited = [false; 256];
    let mut todo: heapless::Vec<u8, 256> = heapless::Vec::new();
    let _ = todo.push(0);
    if let Some(host) = probe(Bdf { bus: 0, dev: 0, func: 0 }) {
        if host.header_type & 0x80 != 0 {
            for func in (1..8u8).rev() {
                if probe(Bdf { bus: 0, dev: 0, func }).is_some() {
                    let _ = todo.push(func);
                }
            }
        }
    }
    while let Some(b) = todo.pop() {
        if core::mem::replace(&mut visited[b as usize], true) {
            continue;
        }
        for dev in 0..32u8 {
            let Some(f0) = probe(Bdf { bus: b, dev, func: 0 }) else { continue };
            let funcs = if f0.header_type & 0x80 != 0 { 8 } else { 1 };
            for func in 0..funcs {
                let Some(d) = (if func == 0 { Some(f0) } else { probe(Bdf { bus: b, dev, func }) }) else { continue };
                if let Some((sec, _)) = d.bridge_buses {
                    if sec <= b || visited[sec as usize] || todo.contains(&sec) {
                        scan.bad_bridges += 1;
                    } else {
                        // At most 256 buses exist and each is pushed once (checked above).
                        let _ = todo.push(sec);
                    }
                }
                if scan.devices.push(d).is_err() {
                    scan.dropped += 1;
                }
            }
        }
    }
    scan.devices.sort_unstable_by_key(|d| (d.bdf.bus, d.bdf.dev, d.bdf.func));
    scan
}

/// A decoded base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    Memory {
        addr: u64,
        size: u64,
        is64: bool,
        prefetchable: bool,
    },
    Io {
        port: u32,
        size: u32,
    },
    /// Not implemented by the device (reads 0 and sizes to 0).
    Unused,
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Bar::Memory { addr, size, is64, prefetchable } => write!(
                f,
                "memory {addr:#x} ({} KiB, {}-bit{})",
                size >> 10,
                if is64 { 64 } else { 32 },
                if prefetchable { ", prefetchable" } else { "" }
            ),
            Bar::Io { port, size } => write!(f, "I/O {port:#x} ({size} ports)"),
            Bar::Unused => f.write_str("unused"),
        }
    }
}

/// Reads and sizes BAR `index` (0..6) of a type 0 header: writes all ones and reads back which
/// address bits stick (PCI 3.0, 6.2.5.1), with I/O and memory decoding off meanwhile, then
/// restores the BAR and the command register.
pub fn bar(bdf: Bdf, index: u8) -> Bar {
    let reg = BAR0 + 4 * index;
    let cmd = bdf.command();
    let lo = bdf.read32(reg);
    let is_io = lo & 1 != 0;
    let is64 = !is_io && (lo >> 1) & 3 == 2 && index < 5;
    // SAFETY: decoding is off while the BAR holds all ones, so the device answers at no stray
    // address; the BAR (both halves of a 64-bit one) and the command register are restored.
    let (mask_lo, hi, mask_hi) = unsafe {
        bdf.write16(COMMAND, cmd & !(CMD_IO | CMD_MEMORY));
        bdf.write32(reg, u32::MAX);
        let mask_lo = bdf.read32(reg);
        bdf.write32(reg, lo);
        let (hi, mask_hi) = if is64 {
            let hi = bdf.read32(reg + 4);
            bdf.write32(reg + 4, u32::MAX);
            let m = bdf.read32(reg + 4);
            bdf.write32(reg + 4, hi);
            (hi, m)
        } else {
            (0, 0)
        };
        bdf.write16(COMMAND, cmd);
        (mask_lo, hi, mask_hi)
    };
    if is_io {
        let m = mask_lo & !0x3;
        return if m == 0 { Bar::Unused } else { Bar::Io { port: lo & !0x3, size: (!m).wrapping_add(1) & 0xFFFF } };
    }
    let mask = if is64 { u64::from(mask_hi) << 32 | u64::from(mask_lo & !0xF) } else { u64::from(mask_lo & !0xF) };
    if mask == 0 {
        return Bar::Unused;
    }
    let size = if is64 { (!mask).wrapping_add(1) } else { u64::from((!(mask as u32)).wrapping_add(1)) };
    Bar::Memory { addr: u64::from(hi) << 32 | u64::from(lo & !0xF), size, is64, prefetchable: lo & 0x8 != 0 }
}
