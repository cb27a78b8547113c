//! Leaving the image: QEMU's `isa-debug-exit` device, or a halt on anything else.
//!
//! QEMU (`hw/misc/debugexit.c`; `-device isa-debug-exit,iobase=0xf4,iosize=0x04`) exits when the
//! port is written, with status `(value << 1) | 1`. That status is never 0 — and 0 is what QEMU
//! returns after a triple fault with `-no-reboot` — so success has its own odd code.

use crate::port::outl;

/// The debug-exit port the test harness configures.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;

/// What the image reports when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// QEMU exits with status 33.
    Success = 0x10,
    /// QEMU exits with status 35.
    Failure = 0x11,
}

/// Stops the machine: exits QEMU with `code`, or (no debug-exit device: real hardware) halts
/// with interrupts off.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xF4 is the isa-debug-exit device under QEMU; on a PC without it the port is
    // unclaimed and the write is ignored.
    unsafe { outl(DEBUG_EXIT_PORT, code as u32) };
    // QEMU stops the machine soon after the write, not during it: give it time before concluding
    // that there is no such device.
    let t0 = crate::port::rdtsc();
    while crate::port::rdtsc().wrapping_sub(t0) < 1 << 32 {
        core::hint::spin_loop();
    }
    crate::serial::write_str("erpc-appliance: no isa-debug-exit device: halted\r\n");
    halt()
}

/// Halts forever with interrupts off.
pub fn halt() -> ! {
    loop {
        // SAFETY: CLI and HLT touch no memory; with interrupts off HLT only ends on NMI or reset,
        // and the loop halts again.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
