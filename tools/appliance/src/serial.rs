//! The log: COM1, a 16550-compatible UART at I/O port 0x3F8 (QEMU `-serial stdio`), polled, and
//! a [`log`] backend writing to it.
//!
//! Registers (National Semiconductor PC16550D datasheet, "Register Addressing" table, offsets
//! from the base port): 0 THR (write) / divisor latch low with LCR.DLAB, 1 IER / divisor latch
//! high, 2 FCR (write), 3 LCR, 4 MCR, 5 LSR (bit 5: THR empty).

use crate::port::{inb, outb};
use core::fmt::{self, Write};

const COM1: u16 = 0x3F8;
const THR: u16 = COM1;
const DLL: u16 = COM1;
const IER: u16 = COM1 + 1;
const DLM: u16 = COM1 + 1;
const FCR: u16 = COM1 + 2;
const LCR: u16 = COM1 + 3;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;
/// LSR bit 5: the transmit holding register is empty.
const LSR_THRE: u8 = 1 << 5;
/// LCR bit 7: divisor latch access.
const LCR_DLAB: u8 = 1 << 7;
/// LCR: 8 data bits, no parity, 1 stop bit.
const LCR_8N1: u8 = 0b11;
/// FCR: FIFOs on, both cleared.
const FCR_ENABLE_CLEAR: u8 = 0b111;
/// MCR: DTR and RTS (OUT2, the PC's interrupt gate, stays off: the UART is polled).
const MCR_DTR_RTS: u8 = 0b11;
/// Divisor of the 1.8432 MHz clock / 16: 1 = 115200 baud.
const DIVISOR_115200: u16 = 1;

/// Programs COM1 (115200 8N1, FIFOs on, interrupts off) and installs the logger at `level`.
pub fn init(level: log::LevelFilter) {
    // SAFETY: ports 0x3F8-0x3FD are COM1's registers on a PC; programming them affects only
    // the UART.
    unsafe {
        outb(IER, 0);
        outb(LCR, LCR_DLAB);
        outb(DLL, DIVISOR_115200 as u8);
        outb(DLM, (DIVISOR_115200 >> 8) as u8);
        outb(LCR, LCR_8N1);
        outb(FCR, FCR_ENABLE_CLEAR);
        outb(MCR, MCR_DTR_RTS);
    }
    // Fails only if a logger is already set (a second call): the first one stays.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

fn write_byte(b: u8) {
    // SAFETY: COM1's LSR and THR (see `init`). Without a UART the port reads 0xFF (THR empty),
    // so the loop cannot hang.
    unsafe {
        while inb(LSR) & LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        outb(THR, b);
    }
}

/// Writes `s` to COM1 as is.
pub fn write_str(s: &str) {
    s.bytes().for_each(write_byte);
}

/// COM1 as a `fmt::Write` sink; `\n` goes out as `\r\n`.
pub struct Com1;

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                write_byte(b'\r');
            }
            write_byte(b);
        }
        Ok(())
    }
}

struct SerialLogger;
static LOGGER: SerialLogger = SerialLogger;

impl log::Log for SerialLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    /// One line: `[seconds since entry] LEVEL target: message` (the time once the clock is
    /// calibrated, `[   --   ]` before).
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut w = Com1;
        let _ = match crate::clock::uptime_ns() {
            Some(ns) => write!(w, "[{:4}.{:06}] ", ns / 1_000_000_000, ns % 1_000_000_000 / 1000),
            None => w.write_str("[   --      ] "),
        };
        let _ = writeln!(w, "{:<5} {}: {}", r.level(), r.target(), r.args());
    }

    fn flush(&self) {}
}
