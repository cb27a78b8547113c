//! A register-level fake of the Intel igb (82576) and ixgbe (82599) NICs, for testing the
//! driver without hardware. Two or more fakes share a [`FakeWire`]: a frame one transmits is
//! delivered to the others.
//!
//! The fake keeps its own register map, written from the datasheets (82576 rev. 2.63 section 8,
//! 82599 rev. 3.3 section 8.2.3), not from the driver's constants, so an offset or bit mistake in
//! the driver shows up as a device that does not come up or does not move packets. It plays the
//! device's side of the descriptor rings in memory: it fetches transmit descriptors on a tail
//! write, writes receive buffers and write-backs, and keeps clear-on-read statistics. It works
//! on the identity DMA space (device address = virtual address). Anything the datasheet forbids
//! (ring registers changed while a queue is enabled, a legacy descriptor, a buffer outside the
//! ring) is recorded in [`FakeIntel::violations`].

use erpc_driver::intel::Family;
use erpc_driver::mmio::RegisterIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// Connects fakes: frames sent by one are delivered to all others.
#[derive(Default)]
pub struct FakeWire {
    ports: Vec<Weak<RefCell<Dev>>>,
}

/// Register offsets of one family, as the datasheets give them.
struct Map {
    ctrl: u32,
    rst: u32,
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
    ral: u32,
    rah: u32,
    gprc: u32,
    gptc: u32,
    gorcl: u32,
    gotcl: u32,
    no_buf: u32,
    /// Mask of SRRCTL's packet buffer size (1 KiB units).
    bsize_mask: u32,
    /// RXE bit in the receive write-back.
    rxe: u32,
}

/// 82576 datasheet section 8.
const IGB: Map = Map {
    ctrl: 0x0,
    rst: 1 << 26,
    rdbal: 0xC000,
    rdbah: 0xC004,
    rdlen: 0xC008,
    srrctl: 0xC00C,
    rdh: 0xC010,
    rdt: 0xC018,
    rxdctl: 0xC028,
    tdbal: 0xE000,
    tdbah: 0xE004,
    tdlen: 0xE008,
    tdh: 0xE010,
    tdt: 0xE018,
    txdctl: 0xE028,
    ral: 0x5400,
    rah: 0x5404,
    gprc: 0x4074,
    gptc: 0x4080,
    gorcl: 0x4088,
    gotcl: 0x4090,
    no_buf: 0x40A0,
    bsize_mask: 0x7F,
    rxe: 1 << 31,
};

/// 82599 datasheet section 8.2.3.
const IXGBE: Map = Map {
    ctrl: 0x0,
    rst: (1 << 26) | (1 << 3),
    rdbal: 0x1000,
    rdbah: 0x1004,
    rdlen: 0x1008,
    srrctl: 0x1014,
    rdh: 0x1010,
    rdt: 0x1018,
    rxdctl: 0x1028,
    tdbal: 0x6000,
    tdbah: 0x6004,
    tdlen: 0x6008,
    tdh: 0x6010,
    tdt: 0x6018,
    txdctl: 0x6028,
    ral: 0xA200,
    rah: 0xA204,
    gprc: 0x4074,
    gptc: 0x4080,
    gorcl: 0x4088,
    gotcl: 0x4090,
    no_buf: 0x1430,
    bsize_mask: 0x1F,
    rxe: 1 << 29,
};

const ENABLE: u32 = 1 << 25;

struct Dev {
    family: Family,
    map: &'static Map,
    regs: HashMap<u32, u32>,
    mac: [u8; 6],
    link: bool,
    unplugged: bool,
    /// Transmit paused: tail writes are not acted on (a device that stopped fetching).
    tx_held: bool,
    wire: Rc<RefCell<FakeWire>>,
    me: Weak<RefCell<Dev>>,
    violations: Vec<String>,
    /// Transmit descriptors seen with RS set.
    rs_descriptors: u64,
    /// Receive write-backs to flag with RXE.
    corrupt_next_rx: u32,
    frames_sent: Vec<Vec<u8>>,
    keep_sent: bool,
}

/// One fake NIC; implements [`RegisterIo`] in place of a BAR.
#[derive(Clone)]
pub struct FakeIntel(Rc<RefCell<Dev>>);

impl FakeIntel {
    /// A fake of `family` with station address `mac`, attached to `wire`.
    pub fn new(family: Family, mac: [u8; 6], wire: &Rc<RefCell<FakeWire>>) -> FakeIntel {
        let map = match family {
            Family::Igb => &IGB,
            Family::Ixgbe => &IXGBE,
        };
        let dev = Rc::new_cyclic(|me| {
            RefCell::new(Dev {
                family,
                map,
                regs: HashMap::new(),
                mac,
                link: false,
                unplugged: false,
                tx_held: false,
                wire: wire.clone(),
                me: me.clone(),
                violations: vec![],
                rs_descriptors: 0,
                corrupt_next_rx: 0,
                frames_sent: vec![],
                keep_sent: false,
            })
        });
        dev.borrow_mut().power_on();
        wire.borrow_mut().ports.push(Rc::downgrade(&dev));
        FakeIntel(dev)
    }

    /// No cable: autonegotiation never brings the link up.
    pub fn unplug(&self) {
        self.0.borrow_mut().unplugged = true;
    }

    /// Stops (true) or resumes (false) fetching transmit descriptors; resuming processes what
    /// was queued meanwhile.
    pub fn hold_tx(&self, held: bool) {
        let mut d = self.0.borrow_mut();
        d.tx_held = held;
        if !held {
            d.transmit();
        }
    }

    /// Frames sent so far (GPTC without clearing it).
    pub fn frames_transmitted(&self) -> u32 {
        let d = self.0.borrow();
        d.reg(d.map.gptc)
    }

    /// What the driver did that the datasheet forbids.
    pub fn violations(&self) -> Vec<String> {
        self.0.borrow().violations.clone()
    }

    /// Transmit descriptors that requested a write-back.
    pub fn rs_descriptors(&self) -> u64 {
        self.0.borrow().rs_descriptors
    }

    /// Flags the next `n` received frames with RXE.
    pub fn corrupt_next_rx(&self, n: u32) {
        self.0.borrow_mut().corrupt_next_rx = n;
    }

    /// Keeps a copy of every transmitted frame.
    pub fn keep_sent(&self) {
        self.0.borrow_mut().keep_sent = true;
    }

    /// The frames kept since [`FakeIntel::keep_sent`].
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.0.borrow_mut().frames_sent)
    }

    /// Delivers `frame` as if it arrived from the wire.
    pub fn inject(&self, frame: &[u8]) {
        self.0.borrow_mut().receive(frame);
    }

    /// A raw register value (no side effects, no clear-on-read).
    pub fn peek(&self, off: u32) -> u32 {
        self.0.borrow().reg(off)
    }
}

impl Dev {
    fn reg(&self, off: u32) -> u32 {
        self.regs.get(&off).copied().unwrap_or(0)
    }

    fn set(&mut self, off: u32, v: u32) {
        self.regs.insert(off, v);
    }

    /// Register state after power-on or a reset: station address loaded from the "EEPROM".
    fn power_on(&mut self) {
        self.regs.clear();
        self.link = false;
        let m = self.mac;
        self.set(self.map.ral, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.set(self.map.rah, u32::from_le_bytes([m[4], m[5], 0, 0]) | 1 << 31);
        if self.family == Family::Ixgbe {
            self.set(0x10010, 1 << 9); // EEC.ARD
            self.set(0x2F00, 1 << 3); // RDRXCTL.DMAIDONE
            self.set(0x42A0, 3 << 13); // AUTOC.LMS from the EEPROM: 10 GbE SFI
        }
    }

    fn violation(&mut self, m: String) {
        self.violations.push(m);
    }

    fn read(&mut self, off: u32) -> u32 {
        let v = self.reg(off);
        let m = self.map;
        let stats = [m.gprc, m.gptc, m.gorcl, m.gorcl + 4, m.gotcl, m.gotcl + 4, m.no_buf];
        if stats.contains(&off) {
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

    fn write(&mut self, off: u32, v: u32) {
        let m = self.map;
        if off == m.ctrl && v & m.rst != 0 {
            self.power_on();
            self.set(off, v & !m.rst);
            return;
        }
        let rx_on = self.reg(m.rxdctl) & ENABLE != 0;
        let tx_on = self.reg(m.txdctl) & ENABLE != 0;
        if [m.rdbal, m.rdbah, m.rdlen, m.srrctl].contains(&off) && rx_on {
            self.violation(format!("RX ring register {off:#x} written while the queue is enabled"));
        }
        if [m.tdbal, m.tdbah, m.tdlen].contains(&off) && tx_on {
            self.violation(format!("TX ring register {off:#x} written while the queue is enabled"));
        }
        if (off == m.rdlen || off == m.tdlen) && (v == 0 || v % 128 != 0) {
            self.violation(format!("ring length {v} at {off:#x} is not a multiple of 128"));
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
            (Family::Ixgbe, 0x5080) if self.reg(0x3000) & 1 != 0 => {
                self.violation("FCTRL written while RXCTRL.RXEN is set".into());
            }
            _ => {}
        }
        if off == m.rxdctl && v & ENABLE != 0 && !rx_on && self.reg(m.rdlen) == 0 {
            self.violation("RX queue enabled without a ring".into());
        }
        if off == m.txdctl && v & ENABLE != 0 && !tx_on && self.reg(m.tdlen) == 0 {
            self.violation("TX queue enabled without a ring".into());
        }
        self.set(off, v);
        if off == m.tdt {
            self.transmit();
        }
        if off == m.rdt && v >= self.reg(m.rdlen) / 16 {
            self.violation(format!("RDT {v} beyond the ring"));
        }
    }

    fn rx_enabled(&self) -> bool {
        let global = match self.family {
            Family::Igb => self.reg(0x100) & 2 != 0,    // RCTL.EN
            Family::Ixgbe => self.reg(0x3000) & 1 != 0, // RXCTRL.RXEN
        };
        global && self.reg(self.map.rxdctl) & ENABLE != 0 && self.link
    }

    fn tx_enabled(&self) -> bool {
        let global = match self.family {
            Family::Igb => self.reg(0x400) & 2 != 0,    // TCTL.EN
            Family::Ixgbe => self.reg(0x4A80) & 1 != 0, // DMATXCTL.TE
        };
        global && self.reg(self.map.txdctl) & ENABLE != 0
    }

    fn ring_base(&self, lo: u32, hi: u32) -> u64 {
        self.reg(lo) as u64 | (self.reg(hi) as u64) << 32
    }

    /// Fetches descriptors from TDH to TDT and sends the frames they describe.
    fn transmit(&mut self) {
        if !self.tx_enabled() || self.tx_held {
            return;
        }
        let m = self.map;
        let n = self.reg(m.tdlen) / 16;
        let base = self.ring_base(m.tdbal, m.tdbah);
        let mut frame = Vec::new();
        let mut frames = Vec::new();
        while self.reg(m.tdh) != self.reg(m.tdt) {
            let h = self.reg(m.tdh);
            let d = (base + 16 * h as u64) as *mut u8;
            // SAFETY: identity DMA: the driver programmed the ring's virtual address; the
            // fake reads it as the device would.
            let (addr, ctl) = unsafe { (d.cast::<u64>().read_volatile(), d.add(8).cast::<u32>().read_volatile()) };
            let len = (ctl & 0xFFFF) as usize;
            if (ctl >> 20) & 0xF != 3 || ctl & (1 << 29) == 0 {
                self.violation(format!("TX descriptor {h} is not an advanced data descriptor: {ctl:#x}"));
            }
            // SAFETY: identity DMA; the buffer is the driver's (the test keeps it alive).
            let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
            frame.extend_from_slice(bytes);
            if ctl & (1 << 27) != 0 {
                self.rs_descriptors += 1;
                // SAFETY: write-back of DD into the descriptor, as the device does.
                unsafe { d.add(12).cast::<u32>().write_volatile(1) };
            }
            if ctl & (1 << 24) != 0 {
                frames.push(std::mem::take(&mut frame));
            }
            self.set(m.tdh, (h + 1) % n);
        }
        for f in &frames {
            let g = self.reg(m.gptc);
            self.set(m.gptc, g + 1);
            let b = self.reg(m.gotcl);
            self.set(m.gotcl, b + f.len() as u32 + 4);
            if self.keep_sent {
                self.frames_sent.push(f.clone());
            }
        }
        let wire = self.wire.clone();
        let me = self.me.clone();
        for f in frames {
            for p in wire.borrow().ports.iter() {
                if Weak::ptr_eq(p, &me) {
                    continue;
                }
                if let Some(p) = p.upgrade() {
                    p.borrow_mut().receive(&f);
                }
            }
        }
    }

    /// Receives one frame into the descriptor at RDH.
    fn receive(&mut self, f: &[u8]) {
        if !self.rx_enabled() {
            return;
        }
        let m = self.map;
        let promisc = match self.family {
            Family::Igb => self.reg(0x100) & (1 << 3) != 0,
            Family::Ixgbe => self.reg(0x5080) & (1 << 9) != 0,
        };
        let bcast = self.family == Family::Igb && self.reg(0x100) & (1 << 15) != 0
            || self.family == Family::Ixgbe && self.reg(0x5080) & (1 << 10) != 0;
        let dst = &f[..6.min(f.len())];
        if !(promisc || dst == self.mac || bcast && dst == [0xff; 6]) {
            return;
        }
        let n = self.reg(m.rdlen) / 16;
        let h = self.reg(m.rdh);
        if h == self.reg(m.rdt) {
            let c = self.reg(m.no_buf);
            self.set(m.no_buf, c + 1);
            return;
        }
        let bsize = ((self.reg(m.srrctl) & m.bsize_mask) * 1024) as usize;
        if (self.reg(m.srrctl) >> 25) & 7 != 1 {
            self.violation("SRRCTL.DESCTYPE is not advanced one-buffer".into());
        }
        // A frame larger than a buffer continues in the following descriptors; only the last
        // has EOP. Nothing is written unless enough descriptors are posted.
        let pieces = f.len().div_ceil(bsize.max(1)).max(1) as u32;
        let posted = (self.reg(m.rdt) + n - h) % n;
        if posted < pieces {
            let c = self.reg(m.no_buf);
            self.set(m.no_buf, c + 1);
            return;
        }
        let base = self.ring_base(m.rdbal, m.rdbah);
        let mut h = h;
        for (k, chunk) in f.chunks(bsize.max(1)).enumerate() {
            let d = (base + 16 * h as u64) as *mut u8;
            let last = k as u32 + 1 == pieces;
            // SAFETY: identity DMA into the descriptor and the buffer it names.
            unsafe {
                let addr = d.cast::<u64>().read_volatile();
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), addr as *mut u8, chunk.len());
                let mut status = 1 | if last { 2 } else { 0 }; // DD, EOP
                if last && self.corrupt_next_rx > 0 {
                    self.corrupt_next_rx -= 1;
                    status |= m.rxe;
                }
                d.cast::<u64>().write_volatile(0);
                d.add(8).cast::<u32>().write_volatile(status);
                d.add(12).cast::<u32>().write_volatile(chunk.len() as u32);
            }
            h = (h + 1) % n;
        }
        self.set(m.rdh, h);
        let g = self.reg(m.gprc);
        self.set(m.gprc, g + 1);
        let b = self.reg(m.gorcl);
        self.set(m.gorcl, b + f.len() as u32 + 4);
    }
}

impl RegisterIo for FakeIntel {
    fn read32(&self, off: u32) -> u32 {
        self.0.borrow_mut().read(off)
    }

    fn write32(&self, off: u32, value: u32) {
        self.0.borrow_mut().write(off, value)
    }
}
