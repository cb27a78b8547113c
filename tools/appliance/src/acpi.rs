//! Just enough ACPI to find the PM timer: the RSDP, the RSDT or XSDT, the FADT.
//!
//! Layouts: ACPI Specification 6.5, section 5.2.5 (RSDP: found on a 16-byte boundary in the first
//! KiB of the EBDA, whose segment is the word at 0x40E, or in 0xE0000..0xFFFFF), 5.2.6 (system
//! description table header), 5.2.7 / 5.2.8 (RSDT, XSDT), 5.2.9 (FADT: Table 5.9), 5.2.3.2
//! (generic address structure). Every table's checksum is verified; a table that fails, or that
//! claims to lie beyond the identity-mapped 4 GiB or to be longer than 64 KiB, is ignored.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Root System Description Pointer (ACPI 6.5, 5.2.5.3, Table 5.3).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Rsdp {
    signature: [u8; 8],
    checksum: u8,
    oem_id: [u8; 6],
    revision: u8,
    rsdt_address: U32,
    /// Revision 2 and up: the length of this structure (36).
    length: U32,
    xsdt_address: U64,
    extended_checksum: u8,
    reserved: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<Rsdp>() == 36);
/// Bytes covered by the ACPI 1.0 checksum.
const RSDP_V1_LEN: usize = 20;

/// System Description Table header (ACPI 6.5, 5.2.6, Table 5.4).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SdtHeader {
    signature: [u8; 4],
    length: U32,
    revision: u8,
    checksum: u8,
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: U32,
    creator_id: U32,
    creator_revision: U32,
}
const SDT_HEADER_LEN: usize = 36;
const _: () = assert!(core::mem::size_of::<SdtHeader>() == SDT_HEADER_LEN);

/// The FADT's fields up to `Flags` (ACPI 6.5, 5.2.9, Table 5.9: byte offsets 0..116).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Fadt {
    header: SdtHeader,
    firmware_ctrl: U32,
    dsdt: U32,
    reserved0: u8,
    preferred_pm_profile: u8,
    sci_int: [u8; 2],
    smi_cmd: U32,
    acpi_enable: u8,
    acpi_disable: u8,
    s4bios_req: u8,
    pstate_cnt: u8,
    pm1a_evt_blk: U32,
    pm1b_evt_blk: U32,
    pm1a_cnt_blk: U32,
    pm1b_cnt_blk: U32,
    pm2_cnt_blk: U32,
    /// Offset 76: the PM timer's I/O port (0: see X_PM_TMR_BLK).
    pm_tmr_blk: U32,
    gpe0_blk: U32,
    gpe1_blk: U32,
    pm1_evt_len: u8,
    pm1_cnt_len: u8,
    pm2_cnt_len: u8,
    /// Offset 91: 4 when the PM timer is present.
    pm_tmr_len: u8,
    gpe0_blk_len: u8,
    gpe1_blk_len: u8,
    gpe1_base: u8,
    cst_cnt: u8,
    p_lvl2_lat: [u8; 2],
    p_lvl3_lat: [u8; 2],
    flush_size: [u8; 2],
    flush_stride: [u8; 2],
    duty_offset: u8,
    duty_width: u8,
    day_alrm: u8,
    mon_alrm: u8,
    century: u8,
    iapc_boot_arch: [u8; 2],
    reserved1: u8,
    /// Offset 112; bit 8 TMR_VAL_EXT: the PM timer has 32 bits (else 24).
    flags: U32,
}
const _: () = assert!(core::mem::size_of::<Fadt>() == 116);
const FADT_TMR_VAL_EXT: u32 = 1 << 8;

/// Generic Address Structure (ACPI 6.5, 5.2.3.2, Table 5.1).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Gas {
    /// 1: system I/O.
    space_id: u8,
    bit_width: u8,
    bit_offset: u8,
    access_size: u8,
    address: U64,
}
const _: () = assert!(core::mem::size_of::<Gas>() == 12);
/// Offset of X_PM_TMR_BLK in the FADT (Table 5.9).
const FADT_X_PM_TMR_BLK: usize = 208;
const GAS_SYSTEM_IO: u8 = 1;

/// The ACPI power-management timer.
#[derive(Clone, Copy, Debug)]
pub struct PmTimer {
    pub port: u16,
    /// 32-bit counter (TMR_VAL_EXT), else 24-bit.
    pub bits32: bool,
}

impl PmTimer {
    pub fn mask(&self) -> u32 {
        if self.bits32 {
            u32::MAX
        } else {
            0x00FF_FFFF
        }
    }
}

/// Largest table read.
const MAX_TABLE: usize = 64 << 10;

/// `len` bytes of physical memory at `addr`, if inside the identity map.
fn phys(addr: u64, len: usize) -> Option<&'static [u8]> {
    if addr == 0 || addr.checked_add(len as u64)? > (4u64 << 30) {
        return None;
    }
    // SAFETY: the first 4 GiB are identity-mapped (boot.s). The ranges read here are firmware
    // tables and BIOS areas in memory the firmware reserved, which nothing writes while the image
    // runs (one CPU, no device DMA into them).
    Some(unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) })
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// The RSDP, searched where ACPI 6.5, 5.2.5.1 says.
fn find_rsdp() -> Option<&'static Rsdp> {
    let ebda = u64::from(u16::from_le_bytes(phys(0x40E, 2)?.try_into().ok()?)) << 4;
    let areas = [(ebda, 1024), (0xE0000, 0x20000)];
    for (base, len) in areas {
        let Some(area) = phys(base, len) else { continue };
        for chunk in area.chunks_exact(16) {
            if &chunk[..8] != b"RSD PTR " {
                continue;
            }
            let off = chunk.as_ptr() as u64;
            let Some(bytes) = phys(off, 36) else { continue };
            let Ok(rsdp) = Rsdp::ref_from_bytes(bytes) else { continue };
            if !sums_to_zero(&bytes[..RSDP_V1_LEN]) {
                continue;
            }
            if rsdp.revision >= 2 && (rsdp.length.get() as usize != 36 || !sums_to_zero(bytes)) {
                continue;
            }
            return Some(rsdp);
        }
    }
    None
}

/// A whole table at `addr`, if its length is sane and its checksum holds.
fn table(addr: u64) -> Option<(&'static SdtHeader, &'static [u8])> {
    let hdr = SdtHeader::ref_from_bytes(phys(addr, SDT_HEADER_LEN)?).ok()?;
    let len = hdr.length.get() as usize;
    if !(SDT_HEADER_LEN..=MAX_TABLE).contains(&len) {
        return None;
    }
    let all = phys(addr, len)?;
    sums_to_zero(all).then_some((hdr, all))
}

/// The FADT's bytes, through the XSDT (revision 2+) or the RSDT.
fn find_fadt() -> Option<&'static [u8]> {
    let rsdp = find_rsdp()?;
    let (root, entry) = match rsdp.revision >= 2 && rsdp.xsdt_address.get() != 0 {
        true => (rsdp.xsdt_address.get(), 8),
        false => (u64::from(rsdp.rsdt_address.get()), 4),
    };
    let (_, bytes) = table(root)?;
    for e in bytes[SDT_HEADER_LEN..].chunks_exact(entry) {
        let addr = match entry {
            8 => u64::from_le_bytes(e.try_into().ok()?),
            _ => u64::from(u32::from_le_bytes(e.try_into().ok()?)),
        };
        if let Some((hdr, t)) = table(addr) {
            if &hdr.signature == b"FACP" {
                return Some(t);
            }
        }
    }
    None
}

/// The PM timer, if the firmware's ACPI tables name one in I/O space.
pub fn pm_timer() -> Option<PmTimer> {
    let fadt_bytes = find_fadt()?;
    let (fadt, _) = Fadt::ref_from_prefix(fadt_bytes).ok()?;
    let bits32 = fadt.flags.get() & FADT_TMR_VAL_EXT != 0;
    let port = fadt.pm_tmr_blk.get();
    if port != 0 && fadt.pm_tmr_len == 4 {
        return u16::try_from(port).ok().map(|port| PmTimer { port, bits32 });
    }
    let gas = Gas::ref_from_prefix(fadt_bytes.get(FADT_X_PM_TMR_BLK..)?).ok()?.0;
    if gas.space_id == GAS_SYSTEM_IO && gas.address.get() != 0 {
        return u16::try_from(gas.address.get()).ok().map(|port| PmTimer { port, bits32 });
    }
    None
}
