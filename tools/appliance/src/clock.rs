//! Time: the TSC, calibrated against the 8254 PIT and checked against the ACPI PM timer, as an
//! [`erpc_dataplane::Clock`].
//!
//! * PIT: Intel 8254 Programmable Interval Timer datasheet; input clock 1.193182 MHz; control word
//!   at port 0x43, counter 2 at 0x42 (read through the counter latch command), counter 2's gate
//!   and output through port 0x61 (bit 0 gate, bit 1 speaker data, bit 5 OUT2: the PC/AT "system
//!   control port B"). Mode 0 ("interrupt on terminal count"): the counter counts down from the
//!   value loaded and OUT goes high when it reaches 0.
//! * ACPI PM timer: ACPI Specification 6.5, section 4.8.3.3: a free-running 3.579545 MHz counter
//!   of 24 or 32 bits (FADT flag TMR_VAL_EXT) at the I/O port the FADT names ([`crate::acpi`]).
//!
//! A measurement reads the timer at both ends of an interval, each read between two TSC readings
//! (the narrowest of a few); the distance between those TSC readings bounds the error. A read
//! interrupted by anything — an SMI on hardware, the host descheduling QEMU's thread under
//! emulation — shows as a wide bracket, and the measurement is repeated.

use crate::acpi::PmTimer;
use crate::port::{inb, inl, outb, rdtsc};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

const PIT_HZ: u64 = 1_193_182;
const PIT_CONTROL: u16 = 0x43;
const PIT_COUNTER2: u16 = 0x42;
const PORT_B: u16 = 0x61;
const PORT_B_GATE2: u8 = 1 << 0;
const PORT_B_SPEAKER: u8 = 1 << 1;
const PORT_B_OUT2: u8 = 1 << 5;
/// Control word: counter 2 (bits 7-6 = 10), LSB then MSB (bits 5-4 = 11), mode 0, binary.
const PIT_C2_MODE0: u8 = 0b1011_0000;
/// Control word: counter 2, counter latch command (bits 5-4 = 00).
const PIT_C2_LATCH: u8 = 0b1000_0000;
/// Measurement interval: 40 ms (47727 PIT ticks: the 16-bit counter, loaded with 65535, runs
/// out after 54.9 ms).
const INTERVAL_MS: u64 = 40;
const PM_TIMER_HZ: u64 = 3_579_545;
/// Largest disagreement between the calibrated TSC and the PM timer that passes.
pub const MAX_ERROR_PPM: u64 = 1_000;
/// A measurement whose end points are less certain than this (the TSC readings around a
/// counter read too far apart: the CPU, or the emulator's thread, was interrupted) is repeated.
const MAX_UNCERTAINTY_PPM: u64 = 200;
/// Measurements tried before giving up.
const TRIES: usize = 5;
/// Counter reads per end point; the one with the closest TSC readings around it is kept.
const BRACKET_TRIES: usize = 8;
/// Give up on a timer that does not move after this many TSC ticks (seconds at any real rate).
const TIMEOUT_TICKS: u64 = 1 << 34;

/// Why the clock could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum ClockError {
    /// Counter 2 did not count down, or OUT2 misbehaved.
    PitSilent,
    /// No measurement was certain to [`MAX_UNCERTAINTY_PPM`] in [`TRIES`] tries.
    Uncertain { timer: &'static str, ppm: u64 },
    /// The measured TSC rate is outside 100 MHz..20 GHz.
    Implausible { hz: u64 },
    /// The ACPI PM timer did not advance.
    PmTimerSilent { port: u16 },
    /// The calibrated TSC disagrees with the PM timer.
    Disagrees { tsc_ns: u64, pm_ns: u64 },
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClockError::PitSilent => write!(
                f,
                "the PIT's counter 2 does not count down: this machine has no 8254-compatible timer at \
                 ports 0x40-0x43 (or port 0x61 does not gate it)"
            ),
            ClockError::Uncertain { timer, ppm } => write!(
                f,
                "every measurement against the {timer} was interrupted ({TRIES} tries, the best \
                 uncertain to {ppm} ppm): the machine is too busy (under QEMU: the host is)"
            ),
            ClockError::Implausible { hz } => {
                write!(f, "the TSC runs at {hz} Hz against the PIT, outside 100 MHz..20 GHz: the calibration is wrong")
            }
            ClockError::PmTimerSilent { port } => {
                write!(f, "the ACPI PM timer at port {port:#x} (from the FADT) does not count")
            }
            ClockError::Disagrees { tsc_ns, pm_ns } => write!(
                f,
                "the TSC calibrated against the PIT measured {tsc_ns} ns where the ACPI PM timer measured \
                 {pm_ns} ns: more than {MAX_ERROR_PPM} ppm apart"
            ),
        }
    }
}

/// A counter read between two TSC readings.
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// The TSC halfway between the two readings.
    tsc: u64,
    /// TSC ticks between them: the reading's uncertainty.
    width: u64,
    value: u32,
}

/// Reads a counter [`BRACKET_TRIES`] times and keeps the read with the closest TSC readings
/// around it (a read interrupted by anything has distant ones).
fn bracketed(mut read: impl FnMut() -> u32) -> Reading {
    let mut best = Reading { tsc: 0, width: u64::MAX, value: 0 };
    for _ in 0..BRACKET_TRIES {
        let a = rdtsc();
        let value = read();
        let b = rdtsc();
        if b - a < best.width {
            best = Reading { tsc: a + (b - a) / 2, width: b - a, value };
        }
    }
    best
}

/// Uncertainty of an interval between two readings, in ppm of its length.
fn uncertainty_ppm(start: &Reading, end: &Reading) -> u64 {
    (start.width / 2 + end.width / 2) * 1_000_000 / (end.tsc - start.tsc).max(1)
}

/// The TSC in nanoseconds since a base reading. Assumes an invariant TSC (constant rate in every
/// power state: CPUID 0x80000007 EDX bit 8), as on every x86 server of the last decade.
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    base: u64,
    /// Nanoseconds per tick, 32.32 fixed point.
    mult: u64,
}

impl TscClock {
    /// A clock whose ticks last `ns / ticks` nanoseconds, counting from TSC value `base`.
    pub fn new(base: u64, ticks: u64, ns: u64) -> Self {
        TscClock { base, mult: ((u128::from(ns) << 32) / u128::from(ticks.max(1))) as u64 }
    }

    /// Nanoseconds in `ticks` TSC ticks.
    #[inline]
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.mult)) >> 32) as u64
    }

    /// Ticks per second.
    pub fn hz(&self) -> u64 {
        ((1_000_000_000u128 << 32) / u128::from(self.mult.max(1))) as u64
    }
}

impl erpc_dataplane::Clock for TscClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.ticks_to_ns(rdtsc().wrapping_sub(self.base))
    }
}

/// The TSC at entry and the calibrated factor, for the log's timestamps.
static ENTRY_TSC: AtomicU64 = AtomicU64::new(0);
static LOG_MULT: AtomicU64 = AtomicU64::new(0);

/// Records the TSC at entry (time 0 of the log).
pub fn mark_entry(tsc: u64) {
    ENTRY_TSC.store(tsc, Ordering::Relaxed);
}

/// Nanoseconds since entry, once the clock is calibrated.
pub fn uptime_ns() -> Option<u64> {
    let mult = LOG_MULT.load(Ordering::Relaxed);
    if mult == 0 {
        return None;
    }
    let base = ENTRY_TSC.load(Ordering::Relaxed);
    Some(TscClock { base, mult }.ticks_to_ns(rdtsc().wrapping_sub(base)))
}

/// Reads PIT counter 2 (latched: both bytes of one instant).
fn pit2_count() -> u32 {
    // SAFETY: ports 0x42/0x43 are the PIT's counter 2 and control word; the latch command
    // freezes the count for the two reads and changes nothing else.
    unsafe {
        outb(PIT_CONTROL, PIT_C2_LATCH);
        let lo = inb(PIT_COUNTER2);
        let hi = inb(PIT_COUNTER2);
        u32::from(u16::from_le_bytes([lo, hi]))
    }
}

/// One measurement of TSC ticks against [`INTERVAL_MS`] of PIT counter 2, counting down from
/// 65535 in mode 0: (TSC ticks, PIT ticks, uncertainty in ppm).
fn pit_interval() -> Result<(u64, u64, u64), ClockError> {
    let want = (PIT_HZ * INTERVAL_MS / 1000) as u32;
    // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT's counter 2, its control word and the PC's
    // port B, which gates counter 2 and the speaker. Counter 2 drives nothing but the speaker,
    // which stays off (bit 1 clear).
    unsafe {
        outb(PORT_B, (inb(PORT_B) & !PORT_B_SPEAKER) | PORT_B_GATE2);
        outb(PIT_CONTROL, PIT_C2_MODE0);
        outb(PIT_COUNTER2, 0xFF);
        outb(PIT_COUNTER2, 0xFF);
    }
    let start = bracketed(pit2_count);
    loop {
        if start.value.saturating_sub(pit2_count()) >= want {
            break;
        }
        if rdtsc() - start.tsc > TIMEOUT_TICKS {
            return Err(ClockError::PitSilent);
        }
    }
    let end = bracketed(pit2_count);
    // SAFETY: as above; reading port B has no side effect.
    let wrapped = unsafe { inb(PORT_B) } & PORT_B_OUT2 != 0;
    if wrapped || end.value >= start.value {
        // The count ran out (OUT2 high) before the end reading: this try was interrupted for
        // more than 15 ms. Report it as uncertain.
        return Ok((end.tsc - start.tsc, 1, u64::MAX));
    }
    Ok((end.tsc - start.tsc, u64::from(start.value - end.value), uncertainty_ppm(&start, &end)))
}

/// Measures the TSC against [`INTERVAL_MS`] of the PIT's counter 2, repeating a measurement that
/// was interrupted. Returns the clock, based at the entry's TSC reading, and the measurement's
/// uncertainty in ppm.
pub fn calibrate_with_pit() -> Result<(TscClock, u64), ClockError> {
    // SAFETY: reading port B (see pit_interval) has no side effect.
    let saved = unsafe { inb(PORT_B) };
    let mut best_ppm = u64::MAX;
    let mut result = Err(ClockError::PitSilent);
    for _ in 0..TRIES {
        match pit_interval() {
            Ok((ticks, pit_ticks, ppm)) if ppm <= MAX_UNCERTAINTY_PPM => {
                let ns = pit_ticks * 1_000_000_000 / PIT_HZ;
                result = Ok((TscClock::new(ENTRY_TSC.load(Ordering::Relaxed), ticks, ns), ppm));
                break;
            }
            Ok((_, _, ppm)) => {
                best_ppm = best_ppm.min(ppm);
                result = Err(ClockError::Uncertain { timer: "PIT", ppm: best_ppm });
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // SAFETY: restores port B's gate and speaker bits.
    unsafe { outb(PORT_B, saved) };
    let (clock, ppm) = result?;
    let hz = clock.hz();
    if !(100_000_000..=20_000_000_000).contains(&hz) {
        return Err(ClockError::Implausible { hz });
    }
    LOG_MULT.store(clock.mult, Ordering::Relaxed);
    Ok((clock, ppm))
}

/// How the calibrated TSC compared with the PM timer.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    pub tsc_ns: u64,
    pub pm_ns: u64,
    pub error_ppm: u64,
}

fn read_pm(pm: &PmTimer) -> u32 {
    // SAFETY: the FADT names this port as the PM timer, a read-only counter.
    unsafe { inl(pm.port) & pm.mask() }
}

/// Times [`INTERVAL_MS`] of the PM timer with `clock`; passes if they agree within
/// [`MAX_ERROR_PPM`]. An interrupted measurement is repeated, up to [`TRIES`] times.
pub fn check_against_pm_timer(clock: &TscClock, pm: &PmTimer) -> Result<Check, ClockError> {
    let want = (PM_TIMER_HZ * INTERVAL_MS / 1000) as u32;
    let mut best_ppm = u64::MAX;
    for _ in 0..TRIES {
        let start = bracketed(|| read_pm(pm));
        while read_pm(pm).wrapping_sub(start.value) & pm.mask() < want {
            if rdtsc() - start.tsc > TIMEOUT_TICKS {
                return Err(ClockError::PmTimerSilent { port: pm.port });
            }
        }
        let end = bracketed(|| read_pm(pm));
        let ppm = uncertainty_ppm(&start, &end);
        if ppm > MAX_UNCERTAINTY_PPM {
            best_ppm = best_ppm.min(ppm);
            continue;
        }
        let pm_ns = u64::from(end.value.wrapping_sub(start.value) & pm.mask()) * 1_000_000_000 / PM_TIMER_HZ;
        let tsc_ns = clock.ticks_to_ns(end.tsc - start.tsc);
        let error_ppm = tsc_ns.abs_diff(pm_ns) * 1_000_000 / pm_ns.max(1);
        if error_ppm > MAX_ERROR_PPM {
            return Err(ClockError::Disagrees { tsc_ns, pm_ns });
        }
        return Ok(Check { tsc_ns, pm_ns, error_ppm });
    }
    Err(ClockError::Uncertain { timer: "ACPI PM timer", ppm: best_ppm })
}

/// Whether the CPU says its TSC is invariant (CPUID 0x80000007 EDX bit 8; Intel SDM Vol. 3B,
/// 18.17.1).
pub fn tsc_invariant() -> bool {
    use core::arch::x86_64::__cpuid;
    __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
}
