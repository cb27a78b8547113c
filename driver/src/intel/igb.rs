//! Register setup of the igb family: 82576 and I350 (one PF queue pair, queue 0).
//!
//! Offsets and bits: Intel 82576 GbE Controller Datasheet rev. 2.63, section 8 (register
//! descriptions; the I350 datasheet keeps the same offsets for these registers), and QEMU's
//! `hw/net/igb_regs.h` for the model tested in CI. Bring-up order follows datasheet section 4.5
//! (software initialisation) and QEMU's model (`hw/net/igb_core.c`): after a reset the link
//! stays down until autonegotiation is restarted through the PHY.

use super::{wait, IntelError, QueueRegs, RingSetup, StatRegs, QUEUE_ENABLE};
use crate::mmio::RegisterIo;
use bitflags::bitflags;
use std::time::Duration;

pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
pub const MDIC: u32 = 0x0020;
pub const IMC: u32 = 0x00D8;
pub const RCTL: u32 = 0x0100;
pub const TCTL: u32 = 0x0400;
pub const EIMC: u32 = 0x1528;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
pub const SRRCTL0: u32 = 0xC00C;

/// Queue 0 registers (82576 datasheet 8.10 and 8.12).
pub const QUEUE: QueueRegs = QueueRegs {
    rdbal: 0xC000,
    rdbah: 0xC004,
    rdlen: 0xC008,
    rdh: 0xC010,
    rdt: 0xC018,
    rxdctl: 0xC028,
    tdbal: 0xE000,
    tdbah: 0xE004,
    tdlen: 0xE008,
    tdh: 0xE010,
    tdt: 0xE018,
    txdctl: 0xE028,
};

/// Statistics registers, clear on read (82576 datasheet 8.19).
pub const CRCERRS: u32 = 0x4000;
pub const MPC: u32 = 0x4010;
pub const GPRC: u32 = 0x4074;
pub const GPTC: u32 = 0x4080;
pub const GORCL: u32 = 0x4088;
pub const GORCH: u32 = 0x408C;
pub const GOTCL: u32 = 0x4090;
pub const GOTCH: u32 = 0x4094;
pub const RNBC: u32 = 0x40A0;

bitflags! {
    /// Device Control (CTRL, 82576 datasheet 8.2.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ctrl: u32 {
        const SLU = 1 << 6;
        const RST = 1 << 26;
    }
    /// Device Status (STATUS, 8.2.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Status: u32 {
        const FD = 1 << 0;
        const LU = 1 << 1;
        const _ = !0;
    }
    /// Receive Control (RCTL, 8.10.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Rctl: u32 {
        const EN = 1 << 1;
        const UPE = 1 << 3;
        const MPE = 1 << 4;
        const BAM = 1 << 15;
        const SECRC = 1 << 26;
    }
    /// Transmit Control (TCTL, 8.12.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Tctl: u32 {
        const EN = 1 << 1;
        const PSP = 1 << 3;
        const _ = !0;
    }
}

/// SRRCTL (8.10.6): BSIZEPACKET in 1 KiB units (bits 0..6), DESCTYPE advanced one-buffer (bits
/// 25..27 = 001b), DROP_EN (bit 31: drop when no descriptors instead of stalling).
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
pub const SRRCTL_DROP_EN: u32 = 1 << 31;
/// MDIC (8.2.4): write (OP=01b) to PHY 1, register 0 (BMCR) with autonegotiation enable and
/// restart, full duplex, 1000 Mb/s; READY is bit 28.
pub const MDIC_BMCR_RESTART_AN: u32 = (1 << 26) | (1 << 21) | 0x1340;
pub const MDIC_READY: u32 = 1 << 28;
/// MDIC.E: the PHY access failed (8.2.4).
pub const MDIC_ERROR: u32 = 1 << 30;
/// RXE in the advanced receive write-back's extended errors (82576 datasheet 7.1.5.2).
pub const RX_ERR_MASK: u32 = 1 << 31;

/// Resets the function and masks its interrupts (datasheet 4.5.1: software reset, then wait
/// for it to finish).
pub fn reset(r: &impl RegisterIo) -> Result<(), IntelError> {
    r.write32(IMC, !0);
    r.write32(EIMC, !0);
    r.set_bits(CTRL, Ctrl::RST.bits());
    std::thread::sleep(Duration::from_millis(1));
    wait("igb reset (CTRL.RST to clear)", Duration::from_secs(1), || r.read32(CTRL) & Ctrl::RST.bits() == 0)?;
    std::thread::sleep(Duration::from_millis(10));
    r.write32(IMC, !0);
    r.write32(EIMC, !0);
    Ok(())
}

/// Sets link up and restarts autonegotiation through the PHY (the QEMU model keeps the link
/// down after a reset until this write).
pub fn start_link(r: &impl RegisterIo) -> Result<(), IntelError> {
    r.set_bits(CTRL, Ctrl::SLU.bits());
    r.write32(MDIC, MDIC_BMCR_RESTART_AN);
    wait("igb PHY write (MDIC.READY)", Duration::from_millis(100), || r.read32(MDIC) & MDIC_READY != 0)?;
    if r.read32(MDIC) & MDIC_ERROR != 0 {
        // Fiber/SerDes variants have no copper PHY at this address.
        return Err(IntelError::Timeout("igb PHY write (MDIC.E set: no copper PHY answered)"));
    }
    Ok(())
}

pub fn link_up(r: &impl RegisterIo) -> bool {
    Status::from_bits_retain(r.read32(STATUS)).contains(Status::LU)
}

/// Programs queue 0 and enables receive and transmit (datasheet 4.5.9 and 4.5.10).
pub fn init_queues(r: &impl RegisterIo, s: &RingSetup) -> Result<(), IntelError> {
    let q = &QUEUE;
    // Receive.
    r.write32(RCTL, 0);
    r.write32(q.rdbal, s.rx_ring_iova as u32);
    r.write32(q.rdbah, (s.rx_ring_iova >> 32) as u32);
    r.write32(q.rdlen, s.rx_len as u32 * 16);
    r.write32(SRRCTL0, (s.rx_buf_size / 1024) | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN);
    r.write32(q.rdh, 0);
    r.write32(q.rdt, 0);
    r.write32(q.rxdctl, QUEUE_ENABLE);
    wait("igb RX queue enable", Duration::from_secs(1), || r.read32(q.rxdctl) & QUEUE_ENABLE != 0)?;
    r.write32(q.rdt, s.rx_tail as u32);
    let mut rctl = Rctl::EN | Rctl::BAM | Rctl::SECRC;
    if s.promiscuous {
        rctl |= Rctl::UPE | Rctl::MPE;
    }
    r.write32(RCTL, rctl.bits());
    // Transmit.
    r.write32(q.tdbal, s.tx_ring_iova as u32);
    r.write32(q.tdbah, (s.tx_ring_iova >> 32) as u32);
    r.write32(q.tdlen, s.tx_len as u32 * 16);
    r.write32(q.tdh, 0);
    r.write32(q.tdt, 0);
    r.write32(q.txdctl, QUEUE_ENABLE);
    wait("igb TX queue enable", Duration::from_secs(1), || r.read32(q.txdctl) & QUEUE_ENABLE != 0)?;
    r.set_bits(TCTL, (Tctl::EN | Tctl::PSP).bits());
    Ok(())
}

/// Stops both queues (before the rings' memory goes away).
pub fn stop(r: &impl RegisterIo) {
    r.clear_bits(RCTL, Rctl::EN.bits());
    r.clear_bits(TCTL, Tctl::EN.bits());
    r.write32(QUEUE.rxdctl, 0);
    r.write32(QUEUE.txdctl, 0);
}

/// The station address from RAL0/RAH0 (8.10.13), loaded from the EEPROM at reset.
pub fn mac(r: &impl RegisterIo) -> [u8; 6] {
    let lo = r.read32(RAL0).to_le_bytes();
    let hi = r.read32(RAH0).to_le_bytes();
    [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]]
}

/// The clear-on-read statistics registers.
pub const STATS: StatRegs = StatRegs {
    gprc: GPRC,
    gptc: GPTC,
    gorcl: GORCL,
    gorch: GORCH,
    gotcl: GOTCL,
    gotch: GOTCH,
    missed: MPC,
    no_buffer: RNBC,
    crc_errors: CRCERRS,
};
