//! A register-level fake of the Intel igb (82576) and ixgbe (82599) NICs, for testing the
//! driver without hardware. Two or more fakes share a [`FakeWire`]: a frame one transmits is
//! delivered to the others. Thread-safe: each fake is behind a lock, so queue pairs of one fake
//! can be driven from several threads, as on a real multi-queue NIC.
//!
//! The fake keeps its own register map, written from the datasheets (82576 rev. 2.63 section 8,
//! 82599 rev. 3.3 section 8.2.3) and QEMU's igb model (`hw/net/igb_core.c`), not from the
//! driver's constants, so an offset or bit mistake in the driver shows up as a device that does
//! not come up, does not move packets, or delivers them to the wrong queue. It plays the
//! device's side of every queue pair's descriptor rings in memory: it fetches transmit
//! descriptors on a tail write, writes receive buffers and write-backs, and keeps clear-on-read
//! statistics. It works on the identity DMA space (device address = virtual address).
//!
//! **Steering is modelled from the registers, strictly** (a wrong filter sends frames to the
//! wrong queue or nowhere, which tests see):
//! * igb, MRQC.MRQE = 011b (VMDq, 82576 datasheet 7.10.3): a unicast destination MAC is looked
//!   up in RAR 0..15 (0x5400) and 16..23 (0x54E0); each entry with AV set adds the pools of its
//!   POOLSEL field (RAH bits 25:18); broadcast goes to pools with VMOLR.BAM; a frame matching no
//!   entry goes to the default pool (VT_CTL bits 9:7) unless VT_CTL.DisDefPool; the result is
//!   masked with VFRE, and pool *n* receives on queue *n*. Transmit needs the pool's VFTE bit;
//!   with DTXSWC.LoopbackEn a frame whose destination is a local pool is switched to it and not
//!   sent on the wire. MRQE = 000b: queue 0 takes frames for RAR0, broadcast (RCTL.BAM) or
//!   anything (RCTL.UPE). Other MRQE values are recorded as violations (not modelled).
//! * ixgbe (82599 datasheet 7.1.2.5): after the MAC filter, the enabled 5-tuple filters
//!   (FTQF, 128) are matched field by field where FTQF's mask says to compare: protocol (FTQF
//!   bits 1:0), source and destination port (SDPQF, network byte order in each 16-bit half);
//!   the highest priority wins, then the lowest index; L34T_IMIR bits 27:21 name the queue.
//!   No match: queue 0. Comparing addresses is not modelled (recorded as a violation).
//!
//! A frame steered to a queue that is not enabled is dropped and counted
//! ([`FakeIntel::rx_dropped_unsteered`]). Anything the datasheet forbids (ring registers changed
//! while a queue is enabled, a legacy descriptor, a buffer outside the ring, a 5-tuple filter
//! enabled with the reserved bits of L34T_IMIR wrong) is recorded in [`FakeIntel::violations`].

use erpc_driver::intel::Family;
use erpc_driver::mmio::RegisterIo;
use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Connects fakes: frames sent by one are delivered to all others.
#[derive(Default)]
pub struct FakeWire {
    ports: Mutex<Vec<Weak<Mutex<Dev>>>>,
}

impl FakeWire {
    pub fn new() -> Arc<FakeWire> {
        Arc::new(FakeWire::default())
    }
}

const ENABLE: u32 = 1 << 25;
/// Queue pairs the fake models per family (82576: 16; 82599: the first 64).
const IGB_QUEUES: u32 = 16;
const IXGBE_QUEUES: u32 = 64;

/// One queue pair's register offsets (82576 datasheet 8.10/8.12; 82599 datasheet 8.2.3.8/8.2.3.9).
#[derive(Clone, Copy)]
struct Q {
    rdbal: u32,
    rdbah: u32,
    rdlen: u32,
    srrctl: u32,
    rdh: u32,
    rdt: u32,
    rxdctl: u32,
    tdbal: u32,
    tdbah: u32,
    tdlen: u32,
    tdh: u32,
    tdt: u32,
    txdctl: u32,
}

fn q(family: Family, n: u32) -> Q {
    let (rx, tx, srrctl) = match family {
        Family::Igb => (0xC000 + 0x40 * n, 0xE000 + 0x40 * n, 0xC00C + 0x40 * n),
        Family::Ixgbe => (0x1000 + 0x40 * n, 0x6000 + 0x40 * n, 0x1014 + 0x40 * n),
    };
    Q {
        rdbal: rx,
        rdbah: rx + 4,
        rdlen: rx + 8,
        srrctl,
        rdh: rx + 0x10,
        rdt: rx + 0x18,
        rxdctl: rx + 0x28,
        tdbal: tx,
        tdbah: tx + 4,
        tdlen: tx + 8,
        tdh: tx + 0x10,
        tdt: tx + 0x18,
        txdctl: tx + 0x28,
    }
}

/// Registers that are not per queue.
struct Map {
    ral0: u32,
    rah0: u32,
    gprc: u32,
    gptc: u32,
    gorcl: u32,
    gotcl: u32,
    /// Frames that found no descriptor: RNBC (igb); QPRDC of the queue (ixgbe, `+ 0x40 n`).
    no_buf: u32,
    bsize_mask: u32,
    rxe: u32,
    rst: u32,
    queues: u32,
}

const IGB: Map = Map {
    ral0: 0x5400,
    rah0: 0x5404,
    gprc: 0x4074,
    gptc: 0x4080,
    gorcl: 0x4088,
    gotcl: 0x4090,
    no_buf: 0x40A0,
    bsize_mask: 0x7F,
    rxe: 1 << 31,
    rst: 1 << 26,
    queues: IGB_QUEUES,
};

const IXGBE: Map = Map {
    ral0: 0xA200,
    rah0: 0xA204,
    gprc: 0x4074,
    gptc: 0x4080,
    gorcl: 0x4088,
    gotcl: 0x4090,
    no_buf: 0x1430,
    bsize_mask: 0x1F,
    rxe: 1 << 29,
    rst: (1 << 26) | (1 << 3),
    queues: IXGBE_QUEUES,
};

// igb VMDq registers (82576 datasheet 7.10; offsets as in QEMU's hw/net/igb_regs.h).
const IGB_RCTL: u32 = 0x100;
const IGB_TCTL: u32 = 0x400;
const IGB_MRQC: u32 = 0x5818;
const IGB_VT_CTL: u32 = 0x581C;
const IGB_VFRE: u32 = 0x0C8C;
const IGB_VFTE: u32 = 0x0C90;
const IGB_DTXSWC: u32 = 0x3500;
const IGB_RA2: u32 = 0x54E0;
fn igb_vmolr(pool: u32) -> u32 {
    0x5AD0 + 4 * pool
}
fn igb_pvfgprc(pool: u32) -> u32 {
    0x10010 + 0x100 * pool
}

// ixgbe receive filters (82599 datasheet 8.2.3.7; offsets as in Linux's ixgbe_type.h).
const IXGBE_RXCTRL: u32 = 0x3000;
const IXGBE_FCTRL: u32 = 0x5080;
const IXGBE_DMATXCTL: u32 = 0x4A80;
fn ixgbe_sdpqf(n: u32) -> u32 {
    0xE400 + 4 * n
}
fn ixgbe_ftqf(n: u32) -> u32 {
    0xE600 + 4 * n
}
fn ixgbe_l34t_imir(n: u32) -> u32 {
    0xE800 + 4 * n
}

struct Dev {
    family: Family,
    map: &'static Map,
    regs: HashMap<u32, u32>,
    mac: [u8; 6],
    link: bool,
    unplugged: bool,
    /// Transmit paused: tail writes are not acted on (a device that stopped fetching).
    tx_held: bool,
    violations: Vec<String>,
    /// Transmit descriptors seen with RS set.
    rs_descriptors: u64,
    /// Receive write-backs to flag with RXE.
    corrupt_next_rx: u32,
    frames_sent: Vec<Vec<u8>>,
    keep_sent: bool,
    /// Frames written to each queue's ring.
    rx_per_queue: Vec<u64>,
    /// Frames steering gave to no queue, or to a queue that is not enabled.
    rx_unsteered: u64,
    /// Frames the VMDq switch delivered without the wire.
    switched: u64,
}

/// What a register write made the device send.
#[derive(Default)]
struct Out {
    wire: Vec<Vec<u8>>,
    local: Vec<Vec<u8>>,
}

/// One fake NIC; implements [`RegisterIo`] in place of a BAR.
#[derive(Clone)]
pub struct FakeIntel {
    dev: Arc<Mutex<Dev>>,
    wire: Arc<FakeWire>,
}

impl FakeIntel {
    /// A fake of `family` with station address `mac`, attached to `wire`.
    pub fn new(family: Family, mac: [u8; 6], wire: &Arc<FakeWire>) -> FakeIntel {
        let map = match family {
            Family::Igb => &IGB,
            Family::Ixgbe => &IXGBE,
        };
        let mut dev = Dev {
            family,
            map,
            regs: HashMap::new(),
            mac,
            link: false,
            unplugged: false,
            tx_held: false,
            violations: vec![],
            rs_descriptors: 0,
            corrupt_next_rx: 0,
            frames_sent: vec![],
            keep_sent: false,
            rx_per_queue: vec![0; map.queues as usize],
            rx_unsteered: 0,
            switched: 0,
        };
        dev.power_on();
        let dev = Arc::new(Mutex::new(dev));
        wire.ports.lock().unwrap().push(Arc::downgrade(&dev));
        FakeIntel { dev, wire: wire.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, Dev> {
        self.dev.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers what a register write sent: to the other fakes on the wire, and switched
    /// frames back to this one. Called without this fake's lock held (a peer may be sending
    /// to us at the same time).
    fn deliver(&self, out: Out) {
        if !out.wire.is_empty() {
            let ports: Vec<_> = self.wire.ports.lock().unwrap().iter().filter_map(Weak::upgrade).collect();
            for f in &out.wire {
                for p in &ports {
                    if Arc::ptr_eq(p, &self.dev) {
                        continue;
                    }
                    p.lock().unwrap_or_else(|p| p.into_inner()).receive(f, true);
                }
            }
        }
        for f in &out.local {
            self.lock().receive(f, false);
        }
    }

    /// No cable: autonegotiation never brings the link up.
    pub fn unplug(&self) {
        self.lock().unplugged = true;
    }

    /// Stops (true) or resumes (false) fetching transmit descriptors; resuming processes what
    /// was queued meanwhile.
    pub fn hold_tx(&self, held: bool) {
        let out = {
            let mut d = self.lock();
            d.tx_held = held;
            let mut out = Out::default();
            if !held {
                for n in 0..d.map.queues {
                    d.transmit(n, &mut out);
                }
            }
            out
        };
        self.deliver(out);
    }

    /// Frames sent so far (GPTC without clearing it).
    pub fn frames_transmitted(&self) -> u32 {
        let d = self.lock();
        d.reg(d.map.gptc)
    }

    /// What the driver did that the datasheet forbids.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Transmit descriptors that requested a write-back.
    pub fn rs_descriptors(&self) -> u64 {
        self.lock().rs_descriptors
    }

    /// Flags the next `n` received frames with RXE.
    pub fn corrupt_next_rx(&self, n: u32) {
        self.lock().corrupt_next_rx = n;
    }

    /// Keeps a copy of every transmitted frame.
    pub fn keep_sent(&self) {
        self.lock().keep_sent = true;
    }

    /// The frames kept since [`FakeIntel::keep_sent`].
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().frames_sent)
    }

    /// Delivers `frame` as if it arrived from the wire.
    pub fn inject(&self, frame: &[u8]) {
        self.lock().receive(frame, true);
    }

    /// A raw register value (no side effects, no clear-on-read).
    pub fn peek(&self, off: u32) -> u32 {
        self.lock().reg(off)
    }

    /// Overwrites a register without side effects: for tests that break a filter on purpose.
    pub fn poke(&self, off: u32, value: u32) {
        self.lock().set(off, value);
    }

    /// Frames written to queue `n`'s receive ring.
    pub fn rx_frames_on(&self, n: u16) -> u64 {
        self.lock().rx_per_queue.get(n as usize).copied().unwrap_or(0)
    }

    /// Frames received from the wire or the switch that steering gave to no enabled queue.
    pub fn rx_dropped_unsteered(&self) -> u64 {
        self.lock().rx_unsteered
    }

    /// Frames the igb VMDq switch delivered between pools without the wire.
    pub fn frames_switched(&self) -> u64 {
        self.lock().switched
    }
}

impl Dev {
    fn reg(&self, off: u32) -> u32 {
        self.regs.get(&off).copied().unwrap_or(0)
    }

    fn set(&mut self, off: u32, v: u32) {
        self.regs.insert(off, v);
    }

    fn bump(&mut self, off: u32, by: u32) {
        let v = self.reg(off).wrapping_add(by);
        self.set(off, v);
    }

    fn q(&self, n: u32) -> Q {
        q(self.family, n)
    }

    /// Register state after power-on or a reset: station address loaded from the "EEPROM".
    fn power_on(&mut self) {
        self.regs.clear();
        self.link = false;
        let m = self.mac;
        self.set(self.map.ral0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.set(self.map.rah0, u32::from_le_bytes([m[4], m[5], 0, 0]) | 1 << 31);
        match self.family {
            Family::Ixgbe => {
                self.set(0x10010, 1 << 9); // EEC.ARD
                self.set(0x2F00, 1 << 3); // RDRXCTL.DMAIDONE
                self.set(0x42A0, 3 << 13); // AUTOC.LMS from the EEPROM: 10 GbE SFI
            }
            Family::Igb => {
                // As QEMU's igb_reset: queue 0 comes up enabled, every pool enabled.
                self.set(0xC028, ENABLE);
                self.set(0xE028, ENABLE);
                self.set(IGB_VFRE, 0xFF);
                self.set(IGB_VFTE, 0xFF);
            }
        }
    }

    fn violation(&mut self, m: String) {
        self.violations.push(m);
    }

    fn read(&mut self, off: u32) -> u32 {
        let v = self.reg(off);
        let m = self.map;
        let stats = [m.gprc, m.gptc, m.gorcl, m.gorcl + 4, m.gotcl, m.gotcl + 4, m.no_buf];
        if stats.contains(&off) || self.family == Family::Ixgbe && (0x1430..0x1430 + 0x40 * 16).contains(&off) {
            self.set(off, 0);
        }
        match (self.family, off) {
            (Family::Igb, 0x8) => (v & !2) | if self.link { 2 | 1 } else { 0 },
            (Family::Ixgbe, 0x42A4) => {
                if self.link {
                    1 << 30
                } else {
                    0
                }
            }
            _ => v,
        }
    }

    /// The queue pair whose register `off` is, and the register's role.
    fn queue_of(&self, off: u32) -> Option<(u32, Q)> {
        let (rx_base, tx_base) = match self.family {
            Family::Igb => (0xC000, 0xE000),
            Family::Ixgbe => (0x1000, 0x6000),
        };
        let n = if (rx_base..rx_base + 0x40 * self.map.queues).contains(&off) {
            (off - rx_base) / 0x40
        } else if (tx_base..tx_base + 0x40 * self.map.queues).contains(&off) {
            (off - tx_base) / 0x40
        } else {
            return None;
        };
        Some((n, self.q(n)))
    }

    fn write(&mut self, off: u32, v: u32, out: &mut Out) {
        let m = self.map;
        if off == 0 && v & m.rst != 0 {
            self.power_on();
            self.set(off, v & !m.rst);
            return;
        }
        let queue = self.queue_of(off);
        if let Some((n, q)) = queue {
            let rx_on = self.reg(q.rxdctl) & ENABLE != 0;
            let tx_on = self.reg(q.txdctl) & ENABLE != 0;
            if [q.rdbal, q.rdbah, q.rdlen, q.srrctl].contains(&off) && rx_on {
                self.violation(format!("queue {n}: RX ring register {off:#x} written while the queue is enabled"));
            }
            if [q.tdbal, q.tdbah, q.tdlen].contains(&off) && tx_on {
                self.violation(format!("queue {n}: TX ring register {off:#x} written while the queue is enabled"));
            }
            if (off == q.rdlen || off == q.tdlen) && (v == 0 || v % 128 != 0) {
                self.violation(format!("queue {n}: ring length {v} at {off:#x} is not a multiple of 128"));
            }
            if off == q.rxdctl && v & ENABLE != 0 && !rx_on && self.reg(q.rdlen) == 0 {
                self.violation(format!("RX queue {n} enabled without a ring"));
            }
            if off == q.txdctl && v & ENABLE != 0 && !tx_on && self.reg(q.tdlen) == 0 {
                self.violation(format!("TX queue {n} enabled without a ring"));
            }
            if (off == q.rdh || off == q.tdh) && (if off == q.rdh { rx_on } else { tx_on }) {
                self.violation(format!("queue {n}: head register {off:#x} written while the queue is enabled"));
            }
        }
        match (self.family, off) {
            // MDIC: a PHY write (OP = 01b) to register 0 with "restart autonegotiation".
            (Family::Igb, 0x20) => {
                let op = (v >> 26) & 3;
                let reg = (v >> 16) & 0x1F;
                if op == 1 && reg == 0 && v & (1 << 9) != 0 && v & (1 << 12) != 0 && !self.unplugged {
                    self.link = true;
                }
                self.set(off, v | 1 << 28);
                return;
            }
            (Family::Igb, IGB_MRQC) if v & 7 != 0 && v & 7 != 0b011 => {
                self.violation(format!("MRQC.MRQE = {:03b}: this fake models only 000b and 011b (VMDq)", v & 7));
            }
            // AUTOC: restart link setup; the link mode (LMS, bits 13..15) must stay as loaded.
            (Family::Ixgbe, 0x42A0) => {
                if (v >> 13) & 7 != (self.reg(off) >> 13) & 7 {
                    self.violation("AUTOC.LMS changed from the EEPROM's link mode".into());
                }
                if v & (1 << 12) != 0 && !self.unplugged {
                    self.link = true;
                }
                self.set(off, v & !(1 << 12));
                return;
            }
            // FCTRL must not change while receive is enabled (82599 datasheet 8.2.3.7.1).
            (Family::Ixgbe, IXGBE_FCTRL) if self.reg(IXGBE_RXCTRL) & 1 != 0 => {
                self.violation("FCTRL written while RXCTRL.RXEN is set".into());
            }
            (Family::Ixgbe, 0x5818) if v != 0 => {
                self.violation(format!("MRQC = {v:#x}: this fake models only MRQC = 0 (no RSS)"));
            }
            // A 5-tuple filter being enabled: its L34T_IMIR must already be valid.
            (Family::Ixgbe, o) if (0xE600..0xE600 + 4 * 128).contains(&o) && v & (1 << 31) != 0 => {
                let n = (o - 0xE600) / 4;
                let imir = self.reg(ixgbe_l34t_imir(n));
                if (imir >> 13) & 0x7F != 0b100_0000 {
                    self.violation(format!(
                        "5-tuple filter {n} enabled with L34T_IMIR bits 19:13 = {:07b}, not 1000000b",
                        (imir >> 13) & 0x7F
                    ));
                }
                if (v >> 25) & 0b11 != 0b11 {
                    self.violation(format!("5-tuple filter {n} compares IP addresses: not modelled by this fake"));
                }
            }
            _ => {}
        }
        self.set(off, v);
        if let Some((n, q)) = queue {
            if off == q.tdt {
                self.transmit(n, out);
            }
            if off == q.rdt && v >= self.reg(q.rdlen) / 16 {
                self.violation(format!("queue {n}: RDT {v} beyond the ring"));
            }
        }
    }

    fn rx_globally_enabled(&self) -> bool {
        match self.family {
            Family::Igb => self.reg(IGB_RCTL) & 2 != 0,
            Family::Ixgbe => self.reg(IXGBE_RXCTRL) & 1 != 0,
        }
    }

    fn vmdq(&self) -> bool {
        self.family == Family::Igb && self.reg(IGB_MRQC) & 7 == 0b011
    }

    fn tx_enabled(&self, n: u32) -> bool {
        let global = match self.family {
            Family::Igb => self.reg(IGB_TCTL) & 2 != 0,
            Family::Ixgbe => self.reg(IXGBE_DMATXCTL) & 1 != 0,
        };
        let pool = !self.vmdq() || self.reg(IGB_VFTE) & (1 << (n % 8)) != 0;
        global && pool && self.reg(self.q(n).txdctl) & ENABLE != 0
    }

    fn ring_base(&self, lo: u32, hi: u32) -> u64 {
        self.reg(lo) as u64 | (self.reg(hi) as u64) << 32
    }

    /// The pools (bit mask) whose receive addresses hold `dst` (igb VMDq).
    fn igb_pools_of(&self, dst: &[u8]) -> u32 {
        let mut pools = 0;
        let entries = (0..16).map(|i| 0x5400 + 8 * i).chain((0..8).map(|i| IGB_RA2 + 8 * i));
        for ral in entries {
            let (lo, hi) = (self.reg(ral), self.reg(ral + 4));
            if hi & (1 << 31) == 0 {
                continue;
            }
            let a = lo.to_le_bytes();
            let b = hi.to_le_bytes();
            if dst == [a[0], a[1], a[2], a[3], b[0], b[1]] {
                pools |= (hi >> 18) & 0xFF;
            }
        }
        pools
    }

    /// Fetches descriptors of queue `n` from TDH to TDT and sends the frames they describe.
    fn transmit(&mut self, n: u32, out: &mut Out) {
        if !self.tx_enabled(n) || self.tx_held {
            return;
        }
        let q = self.q(n);
        let len = self.reg(q.tdlen) / 16;
        let base = self.ring_base(q.tdbal, q.tdbah);
        let mut frame = Vec::new();
        let mut frames = Vec::new();
        while self.reg(q.tdh) != self.reg(q.tdt) {
            let h = self.reg(q.tdh);
            let d = (base + 16 * h as u64) as *mut u8;
            // SAFETY: identity DMA: the driver programmed the ring's virtual address; the
            // fake reads it as the device would.
            let (addr, ctl) = unsafe { (d.cast::<u64>().read_volatile(), d.add(8).cast::<u32>().read_volatile()) };
            let dlen = (ctl & 0xFFFF) as usize;
            if (ctl >> 20) & 0xF != 3 || ctl & (1 << 29) == 0 {
                self.violation(format!("queue {n}: TX descriptor {h} is not an advanced data descriptor: {ctl:#x}"));
            }
            // SAFETY: identity DMA; the buffer is the driver's (the test keeps it alive).
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, dlen) };
            frame.extend_from_slice(bytes);
            if ctl & (1 << 27) != 0 {
                self.rs_descriptors += 1;
                // The frame data was read before the write-back is seen.
                fence(Ordering::Release);
                // SAFETY: write-back of DD into the descriptor, as the device does.
                unsafe { d.add(12).cast::<u32>().write_volatile(1) };
            }
            if ctl & (1 << 24) != 0 {
                frames.push(std::mem::take(&mut frame));
            }
            self.set(q.tdh, (h + 1) % len);
        }
        let switch = self.vmdq() && self.reg(IGB_DTXSWC) & (1 << 31) != 0;
        for f in frames {
            self.bump(self.map.gptc, 1);
            self.bump(self.map.gotcl, f.len() as u32 + 4);
            if self.keep_sent {
                self.frames_sent.push(f.clone());
            }
            let unicast = f.first().is_some_and(|b| b & 1 == 0);
            if switch && unicast && self.igb_pools_of(&f[..6.min(f.len())]) != 0 {
                self.switched += 1;
                out.local.push(f);
            } else {
                out.wire.push(f);
            }
        }
    }

    /// The queues a received frame is steered to (bit `n` = queue `n`).
    fn steer(&mut self, f: &[u8], from_wire: bool) -> u64 {
        let dst = &f[..6.min(f.len())];
        let bcast = dst == [0xff; 6];
        match self.family {
            Family::Igb if self.vmdq() => {
                let mut pools = if bcast {
                    (0..8).filter(|&p| self.reg(igb_vmolr(p)) & (1 << 27) != 0).fold(0, |a, p| a | 1 << p)
                } else {
                    self.igb_pools_of(dst)
                };
                let vt_ctl = self.reg(IGB_VT_CTL);
                if pools == 0 && !bcast && from_wire && vt_ctl & (1 << 29) == 0 {
                    pools = 1 << ((vt_ctl >> 7) & 7);
                }
                (pools & self.reg(IGB_VFRE) & 0xFF) as u64
            }
            Family::Igb => {
                let rctl = self.reg(IGB_RCTL);
                let ours = dst == self.mac;
                u64::from(rctl & (1 << 3) != 0 || ours || bcast && rctl & (1 << 15) != 0)
            }
            Family::Ixgbe => {
                let fctrl = self.reg(IXGBE_FCTRL);
                if !(fctrl & (1 << 9) != 0 || dst == self.mac || bcast && fctrl & (1 << 10) != 0) {
                    return 0;
                }
                1 << self.ixgbe_5tuple(f)
            }
        }
    }

    /// The queue the 5-tuple filters give `f` (queue 0 when none matches).
    fn ixgbe_5tuple(&self, f: &[u8]) -> u32 {
        // IPv4 (ethertype 0x0800, no options assumed beyond IHL) and its L4 ports.
        if f.len() < 14 + 20 + 4 || f[12..14] != [0x08, 0x00] {
            return 0;
        }
        let ihl = (f[14] & 0xF) as usize * 4;
        let proto = f[14 + 9];
        let l4 = 14 + ihl;
        if f.len() < l4 + 4 {
            return 0;
        }
        let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
        let dport = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
        let proto_code = match proto {
            6 => 0,
            17 => 1,
            132 => 2,
            _ => 3,
        };
        let mut best: Option<(u32, u32)> = None; // (priority, index)
        for n in 0..128 {
            let ftqf = self.reg(ixgbe_ftqf(n));
            if ftqf & (1 << 31) == 0 {
                continue;
            }
            let mask = (ftqf >> 25) & 0x1F;
            let sdpqf = self.reg(ixgbe_sdpqf(n));
            // Ports sit in network byte order in each 16-bit half of SDPQF.
            let ok = (mask & 0b10000 != 0 || ftqf & 3 == proto_code)
                && (mask & 0b00100 != 0 || (sdpqf & 0xFFFF) as u16 == sport.swap_bytes())
                && (mask & 0b01000 != 0 || (sdpqf >> 16) as u16 == dport.swap_bytes());
            if !ok {
                continue;
            }
            let prio = (ftqf >> 2) & 7;
            if best.map_or(true, |(p, _)| prio > p) {
                best = Some((prio, n));
            }
        }
        match best {
            Some((_, n)) => (self.reg(ixgbe_l34t_imir(n)) >> 21) & 0x7F,
            None => 0,
        }
    }

    /// Receives one frame into every queue steering gives it to.
    fn receive(&mut self, f: &[u8], from_wire: bool) {
        if !self.rx_globally_enabled() || from_wire && !self.link {
            return;
        }
        let queues = self.steer(f, from_wire);
        if queues == 0 {
            self.rx_unsteered += 1;
            return;
        }
        for n in 0..self.map.queues {
            if queues & (1 << n) == 0 {
                continue;
            }
            if self.reg(self.q(n).rxdctl) & ENABLE == 0 || self.reg(self.q(n).rdlen) == 0 {
                self.rx_unsteered += 1;
                continue;
            }
            self.receive_on(n, f);
        }
    }

    /// Writes one frame into queue `n`'s descriptor at RDH.
    fn receive_on(&mut self, n: u32, f: &[u8]) {
        let m = self.map;
        let q = self.q(n);
        let no_buf = match self.family {
            Family::Igb => m.no_buf,
            Family::Ixgbe if n < 16 => m.no_buf + 0x40 * n,
            Family::Ixgbe => 0xFFFF_0000, // no per-queue drop counter modelled beyond 16
        };
        let len = self.reg(q.rdlen) / 16;
        let h = self.reg(q.rdh);
        if h == self.reg(q.rdt) {
            self.bump(no_buf, 1);
            return;
        }
        let bsize = ((self.reg(q.srrctl) & m.bsize_mask) * 1024) as usize;
        if (self.reg(q.srrctl) >> 25) & 7 != 1 {
            self.violation(format!("queue {n}: SRRCTL.DESCTYPE is not advanced one-buffer"));
        }
        // A frame larger than a buffer continues in the following descriptors; only the last
        // has EOP. Nothing is written unless enough descriptors are posted.
        let pieces = f.len().div_ceil(bsize.max(1)).max(1) as u32;
        let posted = (self.reg(q.rdt) + len - h) % len;
        if posted < pieces {
            self.bump(no_buf, 1);
            return;
        }
        let base = self.ring_base(q.rdbal, q.rdbah);
        let mut h = h;
        for (k, chunk) in f.chunks(bsize.max(1)).enumerate() {
            let d = (base + 16 * h as u64) as *mut u8;
            let last = k as u32 + 1 == pieces;
            let mut status = 1 | if last { 2 } else { 0 }; // DD, EOP
            if last && self.corrupt_next_rx > 0 {
                self.corrupt_next_rx -= 1;
                status |= m.rxe;
            }
            // SAFETY: identity DMA into the descriptor and the buffer it names.
            unsafe {
                let addr = d.cast::<u64>().read_volatile();
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), addr as *mut u8, chunk.len());
                d.add(12).cast::<u32>().write_volatile(chunk.len() as u32);
                d.cast::<u64>().write_volatile(0);
                // The data and length are written before DD is seen.
                fence(Ordering::Release);
                d.add(8).cast::<u32>().write_volatile(status);
            }
            h = (h + 1) % len;
        }
        self.set(q.rdh, h);
        self.bump(m.gprc, 1);
        self.bump(m.gorcl, f.len() as u32 + 4);
        self.rx_per_queue[n as usize] += 1;
        if self.vmdq() {
            self.bump(igb_pvfgprc(n % 8), 1);
        }
    }
}

impl RegisterIo for FakeIntel {
    fn read32(&self, off: u32) -> u32 {
        self.lock().read(off)
    }

    fn write32(&self, off: u32, value: u32) {
        let mut out = Out::default();
        self.lock().write(off, value, &mut out);
        self.deliver(out);
    }
}
