//! Register setup of the ixgbe family: 82599 (X520) and X540, with up to 64 queue pairs.
//!
//! Offsets and bits: Intel 82599 10 GbE Controller Datasheet rev. 3.3, section 8.2.3 (register
//! descriptions). Bring-up follows its section 4.6.3 (initialisation sequence): mask
//! interrupts, global reset, wait for the EEPROM auto-read and the DMA init, set up the link
//! (4.6.4), receive (4.6.7) and transmit (4.6.8) queues. QEMU has no model of this family: CI
//! tests it against a register-level fake.
//!
//! # Steering: one 5-tuple filter per endpoint's UDP port
//!
//! Every endpoint has its own UDP port on the NIC's address, and the 82599 has 128 L3/L4
//! 5-tuple filters (datasheet 7.1.2.5; registers SAQF, DAQF, SDPQF, FTQF and L34T_IMIR of
//! 8.2.3.7), each sending the frames it matches to a queue. Queue pair *n* gets filter *n*:
//! protocol UDP and destination port compared, addresses and source port masked out, and its
//! L34T_IMIR names queue *n*. The ports are written in network byte order within their 16-bit
//! fields (as Linux's `ixgbe_ptp.c` programs SDPQF for its PTP filter). Frames that match no
//! filter go to the default queue, queue 0 (MRQC.MRQE = 0: no RSS). Flow Director perfect
//! filters could do the same for thousands of ports; 64 endpoints need no more than the
//! simpler 5-tuple filters. Up to 64 queue pairs: without DCB or virtualisation the transmit
//! side has 64 queues (MTQC = 0).

use super::{wait, Error, QueueRegs, RingSetup, StatRegs, QUEUE_ENABLE};
use crate::delay::{sleep, Delay};
use crate::mmio::RegisterIo;
use bitflags::bitflags;
use core::time::Duration;

/// Queue pairs this driver uses (transmit queues without DCB or virtualisation: MTQC = 0,
/// 8.2.3.9).
pub const MAX_QUEUES: u16 = 64;

pub const CTRL: u32 = 0x00000;
pub const CTRL_EXT: u32 = 0x00018;
pub const EIMC: u32 = 0x00888;
pub const EEC: u32 = 0x10010;
pub const RDRXCTL: u32 = 0x02F00;
pub const RXCTRL: u32 = 0x03000;
pub const RXPBSIZE0: u32 = 0x03C00;
pub const HLREG0: u32 = 0x04240;
pub const AUTOC: u32 = 0x042A0;
pub const LINKS: u32 = 0x042A4;
pub const RTTDCS: u32 = 0x04900;
pub const DMATXCTL: u32 = 0x04A80;
pub const FCTRL: u32 = 0x05080;
pub const DTXMXSZRQ: u32 = 0x08100;
pub const RAL0: u32 = 0x0A200;
pub const RAH0: u32 = 0x0A204;
pub const TXPBSIZE0: u32 = 0x0CC00;
/// Multiple Receive Queues Command (MRQC, 8.2.3.7): 0 = no RSS, frames no filter claims go to
/// queue 0.
pub const MRQC: u32 = 0x05818;

/// Queue `n`'s registers, `n < 64` (82599 datasheet 8.2.3.8 and 8.2.3.9: 0x40 apart from
/// 0x01000 and 0x06000; SRRCTL at 0x01014 + 0x40 n).
pub const fn queue(n: u16) -> QueueRegs {
    let rx = 0x01000 + 0x40 * n as u32;
    let tx = 0x06000 + 0x40 * n as u32;
    QueueRegs {
        rdbal: rx,
        rdbah: rx + 0x4,
        rdlen: rx + 0x8,
        srrctl: rx + 0x14,
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

/// Receive DCA control of queue `n < 64` (8.2.3.11.1).
pub const fn dca_rxctrl(n: u16) -> u32 {
    0x0100C + 0x40 * n as u32
}

/// 5-tuple filter `n` (8.2.3.7, offsets as in Linux's `ixgbe_type.h`): source and destination
/// IPv4 address, source and destination port, and the filter control.
pub const fn saqf(n: u16) -> u32 {
    0x0E000 + 4 * n as u32
}
pub const fn daqf(n: u16) -> u32 {
    0x0E200 + 4 * n as u32
}
pub const fn sdpqf(n: u16) -> u32 {
    0x0E400 + 4 * n as u32
}
pub const fn ftqf(n: u16) -> u32 {
    0x0E600 + 4 * n as u32
}
/// The queue a 5-tuple filter sends to (L34T_IMIR).
pub const fn l34t_imir(n: u16) -> u32 {
    0x0E800 + 4 * n as u32
}

/// FTQF fields: protocol (bits 1:0, 01b = UDP), priority (bits 4:2), the mask of fields *not*
/// compared (bits 29:25: source address, destination address, source port, destination port,
/// protocol), pool not compared (bit 30), filter enabled (bit 31).
pub const FTQF_PROTOCOL_UDP: u32 = 0b01;
pub const FTQF_PRIORITY_SHIFT: u32 = 2;
pub const FTQF_MASK_SHIFT: u32 = 25;
pub const FTQF_MASK_SRC_ADDR: u32 = 1 << 0;
pub const FTQF_MASK_DST_ADDR: u32 = 1 << 1;
pub const FTQF_MASK_SRC_PORT: u32 = 1 << 2;
pub const FTQF_MASK_DST_PORT: u32 = 1 << 3;
pub const FTQF_MASK_PROTOCOL: u32 = 1 << 4;
pub const FTQF_POOL_MASK: u32 = 1 << 30;
pub const FTQF_QUEUE_ENABLE: u32 = 1 << 31;
/// L34T_IMIR: bypass the size check (bit 12), bits 19:13 must be 1000000b, the receive queue in
/// bits 27:21.
pub const L34T_IMIR_SIZE_BP: u32 = 1 << 12;
pub const L34T_IMIR_RESERVED: u32 = 1 << 19;
pub const L34T_IMIR_QUEUE_SHIFT: u32 = 21;
/// Destination port in SDPQF bits 31:16 (source port in 15:0), network byte order.
pub const SDPQF_DST_PORT_SHIFT: u32 = 16;

/// Statistics registers, clear on read (82599 datasheet 8.2.3.23).
pub const CRCERRS: u32 = 0x04000;
pub const MPC0: u32 = 0x03FA0;
pub const GPRC: u32 = 0x04074;
pub const GPTC: u32 = 0x04080;
pub const GORCL: u32 = 0x04088;
pub const GORCH: u32 = 0x0408C;
pub const GOTCL: u32 = 0x04090;
pub const GOTCH: u32 = 0x04094;
/// Receive queue 0 drop count (QPRDC, 8.2.3.23.74).
pub const QPRDC0: u32 = 0x01430;

bitflags! {
    /// Device Control (8.2.3.1.1): link reset and device reset.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Ctrl: u32 {
        const LRST = 1 << 3;
        const RST = 1 << 26;
        const _ = !0;
    }
    /// Filter Control (8.2.3.7.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Fctrl: u32 {
        const MPE = 1 << 8;
        const UPE = 1 << 9;
        const BAM = 1 << 10;
        const _ = !0;
    }
    /// MAC Core Control 0 (HLREG0, 8.2.3.22.8).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Hlreg0: u32 {
        const TXCRCEN = 1 << 0;
        const RXCRCSTRP = 1 << 1;
        const TXPADEN = 1 << 10;
        const _ = !0;
    }
}

/// EEC.ARD: EEPROM auto-read done (8.2.3.2.1).
pub const EEC_ARD: u32 = 1 << 9;
/// RDRXCTL.DMAIDONE: DMA initialisation done (8.2.3.8.8); RDRXCTL.CRCSTRIP (bit 1).
pub const RDRXCTL_DMAIDONE: u32 = 1 << 3;
pub const RDRXCTL_CRCSTRIP: u32 = 1 << 1;
/// RDRXCTL.RSCACKC and FCOE_WRFIX: "must be set to 1" (8.2.3.8.8).
pub const RDRXCTL_RSCACKC: u32 = 1 << 25;
pub const RDRXCTL_FCOE_WRFIX: u32 = 1 << 26;
/// RXCTRL.RXEN (8.2.3.8.10).
pub const RXCTRL_RXEN: u32 = 1 << 0;
/// AUTOC.RESTART_AN (8.2.3.22.19): restart link setup in the link mode the EEPROM selected
/// (AUTOC.LMS, bits 13..15, which differs between SFI, KR, KX4, XAUI and CX4 boards and is kept).
pub const AUTOC_AN_RESTART: u32 = 1 << 12;
/// LINKS.LINK_UP (8.2.3.22.20).
pub const LINKS_UP: u32 = 1 << 30;
/// SRRCTL (8.2.3.8.7): DESCTYPE advanced one-buffer (bits 25..27 = 001b), DROP_EN (bit 28).
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
pub const SRRCTL_DROP_EN: u32 = 1 << 28;
/// CTRL_EXT.NS_DIS: no-snoop disable (8.2.3.1.3).
pub const CTRL_EXT_NS_DIS: u32 = 1 << 16;
/// DCA_RXCTRL bit 12 must be cleared (8.2.3.11.1).
pub const DCA_RXCTRL_BIT12: u32 = 1 << 12;
/// RTTDCS.ARBDIS: disable the TX arbiter while configuring (8.2.3.10.2).
pub const RTTDCS_ARBDIS: u32 = 1 << 6;
/// DMATXCTL.TE: transmit enable (8.2.3.9.2).
pub const DMATXCTL_TE: u32 = 1 << 0;
/// Packet buffer sizes with DCB off: 128 KiB RX, 40 KiB TX in buffer 0 (4.6.11.3.1).
pub const RXPBSIZE_128K: u32 = 0x0002_0000;
pub const TXPBSIZE_40K: u32 = 0x0000_A000;
/// RXE in the advanced receive write-back's extended errors (82599 datasheet 7.1.6.2).
pub const RX_ERR_MASK: u32 = 1 << 29;

/// Masks interrupts, resets the device and waits for the EEPROM auto-read and the DMA init
/// (datasheet 4.6.3).
pub fn reset(r: &impl RegisterIo, d: &impl Delay) -> Result<(), Error> {
    r.write32(EIMC, 0x7FFF_FFFF);
    r.set_bits(CTRL, (Ctrl::RST | Ctrl::LRST).bits());
    sleep(d, Duration::from_millis(10));
    wait(d, "ixgbe reset (CTRL.RST to clear)", Duration::from_secs(1), || {
        r.read32(CTRL) & (Ctrl::RST | Ctrl::LRST).bits() == 0
    })?;
    r.write32(EIMC, 0x7FFF_FFFF);
    wait(d, "ixgbe EEPROM auto-read (EEC.ARD)", Duration::from_secs(1), || r.read32(EEC) & EEC_ARD != 0)?;
    wait(d, "ixgbe DMA init (RDRXCTL.DMAIDONE)", Duration::from_secs(1), || r.read32(RDRXCTL) & RDRXCTL_DMAIDONE != 0)
}

/// Restarts link setup in the board's own link mode (datasheet 4.6.4). The X540's copper PHY
/// is not set up here: it comes up with its power-on defaults.
pub fn start_link(r: &impl RegisterIo) -> Result<(), Error> {
    r.set_bits(AUTOC, AUTOC_AN_RESTART);
    Ok(())
}

pub fn link_up(r: &impl RegisterIo) -> bool {
    r.read32(LINKS) & LINKS_UP != 0
}

/// The device-wide receive and transmit setup (datasheet 4.6.7 and 4.6.8): packet buffers, CRC
/// handling, broadcast acceptance, no RSS, no 5-tuple filter; receive and transmit DMA enabled
/// with every queue off. Queues are started one by one with [`start_queue`] (4.6.7.1 and
/// 4.6.8.1: dynamic enabling of queues).
pub fn init_device(r: &impl RegisterIo) -> Result<(), Error> {
    // Receive: disabled while configuring.
    r.clear_bits(RXCTRL, RXCTRL_RXEN);
    for n in 0..MAX_QUEUES {
        r.clear_bits(queue(n).rxdctl, QUEUE_ENABLE);
        r.clear_bits(queue(n).txdctl, QUEUE_ENABLE);
        r.write32(ftqf(n), 0);
    }
    r.write32(RXPBSIZE0, RXPBSIZE_128K);
    for i in 1..8 {
        r.write32(RXPBSIZE0 + 4 * i, 0);
    }
    r.set_bits(HLREG0, Hlreg0::RXCRCSTRP.bits());
    r.set_bits(RDRXCTL, RDRXCTL_CRCSTRIP | RDRXCTL_RSCACKC | RDRXCTL_FCOE_WRFIX);
    r.write32(FCTRL, (Fctrl::from_bits_retain(r.read32(FCTRL)) | Fctrl::BAM).bits());
    r.write32(MRQC, 0);
    r.set_bits(CTRL_EXT, CTRL_EXT_NS_DIS);
    r.set_bits(RXCTRL, RXCTRL_RXEN);
    // Transmit; the arbiter is off while the packet buffers are sized (4.6.11.3).
    r.set_bits(HLREG0, (Hlreg0::TXCRCEN | Hlreg0::TXPADEN).bits());
    r.set_bits(RTTDCS, RTTDCS_ARBDIS);
    r.write32(TXPBSIZE0, TXPBSIZE_40K);
    for i in 1..8 {
        r.write32(TXPBSIZE0 + 4 * i, 0);
    }
    r.write32(DTXMXSZRQ, 0xFFFF);
    r.clear_bits(RTTDCS, RTTDCS_ARBDIS);
    r.set_bits(DMATXCTL, DMATXCTL_TE);
    Ok(())
}

/// The FTQF value of an endpoint's filter: UDP, priority 1, only protocol and destination port
/// compared, enabled.
pub const fn ftqf_for_udp_port() -> u32 {
    FTQF_PROTOCOL_UDP
        | (1 << FTQF_PRIORITY_SHIFT)
        | ((FTQF_MASK_SRC_ADDR | FTQF_MASK_DST_ADDR | FTQF_MASK_SRC_PORT) << FTQF_MASK_SHIFT)
        | FTQF_POOL_MASK
        | FTQF_QUEUE_ENABLE
}

/// Programs and enables queue pair `n`, then points 5-tuple filter `n` at it for UDP
/// destination port `udp_port` (the filter is enabled last, once the queue can take frames).
pub fn start_queue(r: &impl RegisterIo, d: &impl Delay, n: u16, s: &RingSetup, udp_port: u16) -> Result<(), Error> {
    let q = queue(n);
    r.write32(q.rdbal, s.rx_ring_bus as u32);
    r.write32(q.rdbah, (s.rx_ring_bus >> 32) as u32);
    r.write32(q.rdlen, s.rx_len as u32 * 16);
    r.write32(q.srrctl, (s.rx_buf_size / 1024) | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN);
    r.write32(q.rdh, 0);
    r.write32(q.rdt, 0);
    r.clear_bits(dca_rxctrl(n), DCA_RXCTRL_BIT12);
    r.set_bits(q.rxdctl, QUEUE_ENABLE);
    wait(d, "ixgbe RX queue enable", Duration::from_secs(1), || r.read32(q.rxdctl) & QUEUE_ENABLE != 0)?;
    r.write32(q.rdt, s.rx_tail as u32);
    r.write32(q.tdbal, s.tx_ring_bus as u32);
    r.write32(q.tdbah, (s.tx_ring_bus >> 32) as u32);
    r.write32(q.tdlen, s.tx_len as u32 * 16);
    r.write32(q.tdh, 0);
    r.write32(q.tdt, 0);
    r.set_bits(q.txdctl, QUEUE_ENABLE);
    wait(d, "ixgbe TX queue enable", Duration::from_secs(1), || r.read32(q.txdctl) & QUEUE_ENABLE != 0)?;
    r.write32(saqf(n), 0);
    r.write32(daqf(n), 0);
    r.write32(sdpqf(n), u32::from(udp_port.swap_bytes()) << SDPQF_DST_PORT_SHIFT);
    r.write32(l34t_imir(n), L34T_IMIR_RESERVED | L34T_IMIR_SIZE_BP | (n as u32) << L34T_IMIR_QUEUE_SHIFT);
    r.write32(ftqf(n), ftqf_for_udp_port());
    Ok(())
}

/// Stops queue pair `n`: its filter first (its port's frames go to the default queue from
/// then on), then both queues.
pub fn stop_queue(r: &impl RegisterIo, n: u16) {
    r.write32(ftqf(n), 0);
    r.clear_bits(queue(n).rxdctl, QUEUE_ENABLE);
    r.clear_bits(queue(n).txdctl, QUEUE_ENABLE);
}

/// Stops receive, transmit and every queue (before the rings' memory goes away).
pub fn stop(r: &impl RegisterIo) {
    r.clear_bits(RXCTRL, RXCTRL_RXEN);
    for n in 0..MAX_QUEUES {
        r.write32(ftqf(n), 0);
        r.clear_bits(queue(n).rxdctl, QUEUE_ENABLE);
        r.clear_bits(queue(n).txdctl, QUEUE_ENABLE);
    }
    r.clear_bits(DMATXCTL, DMATXCTL_TE);
}

/// The station address from RAL0/RAH0 (8.2.3.7.9), loaded from the EEPROM at reset.
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
    missed: MPC0,
    no_buffer: QPRDC0,
    crc_errors: CRCERRS,
};
