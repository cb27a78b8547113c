//! The NIC, as far as phase 1 goes: find the Intel 82576 functions among the PCI devices, decode
//! BAR0, turn on memory decoding and bus mastering on the one the appliance will drive, and read
//! the station address through BAR0 to show the MMIO mapping works. Bringing it up (reset, rings,
//! link) is the Intel driver's no_std core, in phase 2.
//!
//! Registers read here: 82576 GbE Controller Datasheet rev. 2.63, section 8.2.2 (STATUS, 0x00008)
//! and 8.10.13 (RAL0 0x05400 / RAH0 0x05404: the station address loaded from the EEPROM, RAH bit
//! 31 = address valid).

use crate::pci::{self, Bar, Bdf, Device};
use core::fmt;

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
    NotAt { bdf: Bdf },
    BadBar { bdf: Bdf, bar: Bar },
    Unmapped { bdf: Bdf, addr: u64 },
    NoBusMaster { bdf: Bdf, command: u16 },
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

/// `aa:bb:cc:dd:ee:ff`.
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}
