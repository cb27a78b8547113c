//! Register setup of the igb family: 82576 and I350, with one queue pair per VMDq pool.
//!
//! Offsets and bits: Intel 82576 GbE Controller Datasheet rev. 2.63, section 8 (register
//! descriptions; the I350 datasheet keeps the same offsets for these registers), and QEMU's
//! `hw/net/igb_regs.h` for the model tested in CI. Bring-up order follows datasheet section 4.5
//! (software initialisation) and QEMU's model (`hw/net/igb_core.c`): after a reset the link
//! stays down until autonegotiation is restarted through the PHY.
//!
//! # Steering: VMDq pools by MAC address
//!
//! The igb family has no filter on UDP ports that could steer each endpoint's traffic to its
//! queue (its 2-tuple filters are few, and absent from QEMU's model). It has VMDq (datasheet
//! 7.10: virtualisation): the destination MAC address of a received frame is looked up in the
//! receive address registers (RAL/RAH), whose POOLSEL field (RAH bits 25:18) names the pools the
//! address belongs to; with MRQC.MRQE = 011b (VMDq without RSS) pool *n* receives on queue *n*
//! (datasheet 7.10.3; QEMU's `igb_receive_assign`, which cites 8.26.1 for it). So each endpoint gets a MAC
//! address of its own, written to RAR *n* with POOLSEL = pool *n*:
//!
//! * addressing stays what eRPC already does (an endpoint address carries a MAC): no change to
//!   the protocol, no knowledge of the peer's RSS key or indirection table, and peers on any
//!   NIC (or kernel stack) reach it;
//! * with VT_CTL.DisDefPool a frame for no endpoint's MAC reaches no queue: strict steering;
//! * endpoints on the same NIC reach each other: the VMDq transmit switch (DTXSWC.LoopbackEn,
//!   datasheet 7.10.3.6) delivers a frame whose destination is a local pool without the wire.
//!
//! The alternative, RSS with clients choosing a UDP source port that hashes to the server
//! endpoint's queue (what the original eRPC does with DPDK), needs every client to know the
//! server NIC's hash key and table, cannot steer traffic between two endpoints of one NIC, and
//! changes the source port per session, which the dataplane checks. The price of VMDq: 8 pools,
//! so 8 endpoints per igb port (the 82576's other 8 queues are only reachable through RSS inside
//! a pool), and one MAC address per endpoint for the switch to learn.

use super::{wait, Error, QueueRegs, RingSetup, StatRegs, QUEUE_ENABLE};
use crate::delay::{sleep, Delay};
use crate::mmio::RegisterIo;
use bitflags::bitflags;
use core::time::Duration;

/// VMDq pools, and so queue pairs this driver uses (82576 datasheet 7.10.2; the I350 has 8 too).
pub const POOLS: u16 = 8;
/// Queue pairs of the function (82576: 16; only the first `POOLS` are used, see the module docs).
pub const HW_QUEUES: u16 = 16;

pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
pub const MDIC: u32 = 0x0020;
pub const IMC: u32 = 0x00D8;
pub const RCTL: u32 = 0x0100;
pub const TCTL: u32 = 0x0400;
pub const EIMC: u32 = 0x1528;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
/// Multiple Receive Queues Command (MRQC, a receive register of datasheet 8.10).
pub const MRQC: u32 = 0x5818;
/// VMDq registers (datasheet 7.10; offsets as in QEMU's `hw/net/igb_regs.h`): VMDq Control
/// (VT_CTL).
pub const VT_CTL: u32 = 0x581C;
/// VF Receive Enables and VF Transmit Enables: one bit per pool (VFRE, VFTE).
pub const VFRE: u32 = 0x0C8C;
pub const VFTE: u32 = 0x0C90;
/// DMA Transmit Switch Control (DTXSWC).
pub const DTXSWC: u32 = 0x3500;

/// MRQC.MRQE = 011b: VMDq, no RSS (pool *n* receives on queue *n*).
pub const MRQC_VMDQ: u32 = 0b011;
/// VT_CTL.DisDefPool: a frame that matches no pool's address is dropped, not given to the
/// default pool (bit 29).
pub const VT_CTL_DIS_DEF_POOL: u32 = 1 << 29;
/// DTXSWC.LoopbackEn: frames from one pool to another pool's address are switched inside the
/// NIC (bit 31).
pub const DTXSWC_LOOPBACK_EN: u32 = 1 << 31;
/// RAH.AV: the address is valid (bit 31); RAH.POOLSEL: the pools it belongs to (bits 25:18).
pub const RAH_AV: u32 = 1 << 31;
pub const RAH_POOLSEL_SHIFT: u32 = 18;
pub const RAH_POOLSEL_MASK: u32 = 0xFF << RAH_POOLSEL_SHIFT;
/// VMOLR: accept untagged frames (AUPE, bit 24), accept broadcast frames (BAM, bit 27), strip
/// the CRC (STRCRC, bit 31): Linux `drivers/net/ethernet/intel/igb/e1000_82575.h` and QEMU's
/// `hw/net/igb_regs.h` (`E1000_VMOLR_BAM` 0x08000000, "accept broadcast packets").
pub const VMOLR_AUPE: u32 = 1 << 24;
pub const VMOLR_BAM: u32 = 1 << 27;
pub const VMOLR_STRCRC: u32 = 1 << 31;

/// Receive address low/high of entry `n` (RAL/RAH, 8.10.13: 16 entries from 0x5400).
pub const fn ral(n: u16) -> u32 {
    0x5400 + 8 * n as u32
}
pub const fn rah(n: u16) -> u32 {
    0x5404 + 8 * n as u32
}
/// Per-pool VM offload register (VMOLR).
pub const fn vmolr(pool: u16) -> u32 {
    0x5AD0 + 4 * pool as u32
}
/// Per-pool good packets received (PVFGPRC: the PF's copy of a pool's VFGPRC; counts frames
/// given to the pool and wraps, not clear on read; offset from QEMU's `igb_regs.h`).
pub const fn pvfgprc(pool: u16) -> u32 {
    0x10010 + 0x100 * pool as u32
}

/// Queue `n`'s registers (82576 datasheet 8.10 and 8.12: 0x40 apart from 0xC000 and 0xE000).
pub const fn queue(n: u16) -> QueueRegs {
    let rx = 0xC000 + 0x40 * n as u32;
    let tx = 0xE000 + 0x40 * n as u32;
    QueueRegs {
        rdbal: rx,
        rdbah: rx + 0x4,
        rdlen: rx + 0x8,
        srrctl: rx + 0xC,
        rdh: rx + 0x10,
        rdt: rx + 0x18,
        rxdctl: rx + 0x28,
        tdbal: tx,
        tdbah: tx + 0x4,
        tdlen: tx + 0x8,
        tdh: tx + 0x10,
        tdt: tx + 0x18,
        txdctl: tx + 0x28,
    }
}

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
pub fn reset(r: &impl RegisterIo, d: &impl Delay) -> Result<(), Error> {
    r.write32(IMC, !0);
    r.write32(EIMC, !0);
    r.set_bits(CTRL, Ctrl::RST.bits());
    sleep(d, Duration::from_millis(1));
    wait(d, "igb reset (CTRL.RST to clear)", Duration::from_secs(1), || r.read32(CTRL) & Ctrl::RST.bits() == 0)?;
    sleep(d, Duration::from_millis(10));
    r.write32(IMC, !0);
    r.write32(EIMC, !0);
    Ok(())
}

/// Sets link up and restarts autonegotiation through the PHY (the QEMU model keeps the link
/// down after a reset until this write).
pub fn start_link(r: &impl RegisterIo, d: &impl Delay) -> Result<(), Error> {
    r.set_bits(CTRL, Ctrl::SLU.bits());
    r.write32(MDIC, MDIC_BMCR_RESTART_AN);
    wait(d, "igb PHY write (MDIC.READY)", Duration::from_millis(100), || r.read32(MDIC) & MDIC_READY != 0)?;
    if r.read32(MDIC) & MDIC_ERROR != 0 {
        // Fiber/SerDes variants have no copper PHY at this address.
        return Err(Error::Timeout("igb PHY write (MDIC.E set: no copper PHY answered)"));
    }
    Ok(())
}

pub fn link_up(r: &impl RegisterIo) -> bool {
    Status::from_bits_retain(r.read32(STATUS)).contains(Status::LU)
}

/// The device-wide receive and transmit setup (datasheet 4.5.9 and 4.5.10) with VMDq steering
/// (7.10.3): every queue off, no pool enabled, frames for no pool dropped, pool-to-pool switching
/// on. Queues are started one by one with [`start_queue`].
pub fn init_device(r: &impl RegisterIo) -> Result<(), Error> {
    r.write32(RCTL, 0);
    for n in 0..HW_QUEUES {
        r.write32(queue(n).rxdctl, 0);
        r.write32(queue(n).txdctl, 0);
    }
    r.write32(VFRE, 0);
    r.write32(VFTE, 0);
    r.write32(MRQC, MRQC_VMDQ);
    r.write32(VT_CTL, VT_CTL_DIS_DEF_POOL);
    r.write32(DTXSWC, DTXSWC_LOOPBACK_EN);
    // Entry 0 keeps the station address for `mac()`; it joins pool 0 when queue 0 starts.
    for n in 1..16 {
        r.write32(rah(n), 0);
        r.write32(ral(n), 0);
    }
    r.clear_bits(RAH0, RAH_POOLSEL_MASK);
    r.write32(RCTL, (Rctl::EN | Rctl::BAM | Rctl::SECRC).bits());
    r.set_bits(TCTL, (Tctl::EN | Tctl::PSP).bits());
    Ok(())
}

/// Programs and enables queue pair `n` (pool `n`), then steers frames for `mac` to it: RAR `n`
/// holds the address with POOLSEL = pool `n`, and the pool's receive and transmit are enabled
/// (datasheet 4.5.9.1: queues may be enabled while receive is on).
pub fn start_queue(r: &impl RegisterIo, d: &impl Delay, n: u16, s: &RingSetup, mac: [u8; 6]) -> Result<(), Error> {
    let q = queue(n);
    r.write32(q.rdbal, s.rx_ring_bus as u32);
    r.write32(q.rdbah, (s.rx_ring_bus >> 32) as u32);
    r.write32(q.rdlen, s.rx_len as u32 * 16);
    r.write32(q.srrctl, (s.rx_buf_size / 1024) | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN);
    r.write32(q.rdh, 0);
    r.write32(q.rdt, 0);
    r.write32(q.rxdctl, QUEUE_ENABLE);
    wait(d, "igb RX queue enable", Duration::from_secs(1), || r.read32(q.rxdctl) & QUEUE_ENABLE != 0)?;
    r.write32(q.rdt, s.rx_tail as u32);
    r.write32(q.tdbal, s.tx_ring_bus as u32);
    r.write32(q.tdbah, (s.tx_ring_bus >> 32) as u32);
    r.write32(q.tdlen, s.tx_len as u32 * 16);
    r.write32(q.tdh, 0);
    r.write32(q.tdt, 0);
    r.write32(q.txdctl, QUEUE_ENABLE);
    wait(d, "igb TX queue enable", Duration::from_secs(1), || r.read32(q.txdctl) & QUEUE_ENABLE != 0)?;
    // Broadcasts (ARP requests for the endpoints' address) go to pool 0 alone: one queue answers
    // them (erpc_nic::neigh), the others never see them.
    r.write32(vmolr(n), VMOLR_AUPE | VMOLR_STRCRC | if n == 0 { VMOLR_BAM } else { 0 });
    r.write32(ral(n), u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
    r.write32(rah(n), u32::from_le_bytes([mac[4], mac[5], 0, 0]) | RAH_AV | (1 << (RAH_POOLSEL_SHIFT + n as u32)));
    r.set_bits(VFTE, 1 << n);
    r.set_bits(VFRE, 1 << n);
    Ok(())
}

/// Stops queue pair `n`: the pool stops receiving and its address is removed first (so no
/// frame is steered to a stopped queue), then both queues are disabled.
pub fn stop_queue(r: &impl RegisterIo, n: u16) {
    r.clear_bits(VFRE, 1 << n);
    r.write32(rah(n), 0);
    r.write32(ral(n), 0);
    r.write32(queue(n).rxdctl, 0);
    r.write32(queue(n).txdctl, 0);
    r.clear_bits(VFTE, 1 << n);
}

/// Stops receive, transmit and every queue (before the rings' memory goes away).
pub fn stop(r: &impl RegisterIo) {
    r.clear_bits(RCTL, Rctl::EN.bits());
    r.clear_bits(TCTL, Tctl::EN.bits());
    r.write32(VFRE, 0);
    for n in 0..HW_QUEUES {
        r.write32(queue(n).rxdctl, 0);
        r.write32(queue(n).txdctl, 0);
    }
    r.write32(VFTE, 0);
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
