//! Exceptions: an IDT whose 32 gates lead to `appliance_exception`, which logs the fault and
//! exits with the failure code. Without it, any fault would become a triple fault, which QEMU
//! (`-no-reboot`) reports as exit status 0 with no word on what happened.
//!
//! The handler runs on a stack of its own (interrupt stack table entry 1 of a TSS), so that a
//! fault caused by an exhausted stack — the unmapped guard page below it (boot.s) — is reported
//! too, as a stack overflow.

use crate::exit::{exit, ExitCode};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use static_cell::ConstStaticCell;
use zerocopy::{Immutable, IntoBytes};

/// A 64-bit interrupt gate (Intel SDM Vol. 3A, 6.14.1, Figure 6-8).
#[derive(Clone, Copy, IntoBytes, Immutable)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: interrupt stack table index (0: none; 1: the exception stack).
    ist: u8,
    /// Present (bit 7), DPL 0, type 0xE (64-bit interrupt gate: interrupts stay off).
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    const EMPTY: Gate =
        Gate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

    fn interrupt(handler: u64) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist: 1,
            type_attr: 0x8E,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// The 64-bit code segment of the boot GDT (boot.s).
const CODE_SELECTOR: u16 = 0x08;
const VECTORS: usize = 32;

/// The operand of LIDT: limit and base (SDM Vol. 3A, 6.10, Figure 6-1).
#[derive(IntoBytes, Immutable)]
#[repr(C, packed)]
struct Idtr {
    limit: u16,
    base: u64,
}
const _: () = assert!(core::mem::size_of::<Idtr>() == 10);

/// The 64-bit task-state segment: only its interrupt stack table is used (SDM Vol. 3A, 8.7,
/// Figure 8-11).
#[derive(IntoBytes, Immutable)]
#[repr(C, packed)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O permission bitmap: past the end, none.
    iomap_base: u16,
}
const TSS_LEN: usize = 104;
const _: () = assert!(core::mem::size_of::<Tss>() == TSS_LEN);

/// The TSS descriptor's selector: GDT entries 3 and 4 (boot.s).
const TSS_SELECTOR: u16 = 0x18;

/// A 64-bit available-TSS descriptor (SDM Vol. 3A, 8.2.3, Figure 8-4): two GDT entries.
fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (TSS_LEN - 1) as u64;
    let low = (limit & 0xFFFF)
        | (base & 0xFF_FFFF) << 16
        | 0x89 << 40 // present, DPL 0, type 9 (available 64-bit TSS)
        | ((limit >> 16) & 0xF) << 48
        | ((base >> 24) & 0xFF) << 56;
    [low, base >> 32]
}

extern "C" {
    /// The entry points of vectors 0..32 (boot.s).
    static exception_stubs: [u64; VECTORS];
    /// The GDT (boot.s): five entries, the last two for the TSS descriptor.
    static mut boot_gdt: [u64; 5];
    /// The top of the exception handler's stack (boot.s).
    static exception_stack_top: u8;
    /// The unmapped page below the boot stack (boot.s).
    static stack_guard: u8;
}

static IDT: ConstStaticCell<[Gate; VECTORS]> = ConstStaticCell::new([Gate::EMPTY; VECTORS]);
static TSS: ConstStaticCell<Tss> = ConstStaticCell::new(Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: TSS_LEN as u16,
});

/// Loads a TSS whose IST 1 is the exception stack, then fills and loads the IDT. Call once.
pub fn install() {
    let tss: &'static mut Tss = TSS.take();
    let mut ist = [0u64; 7];
    ist[0] = core::ptr::addr_of!(exception_stack_top) as u64;
    tss.ist = ist;
    let [low, high] = tss_descriptor(tss as *const Tss as u64);
    // SAFETY: entries 3 and 4 of the boot GDT are reserved for this descriptor and no segment
    // register uses them; the TSS is 'static. LTR loads it (and marks the descriptor busy).
    unsafe {
        let gdt = core::ptr::addr_of_mut!(boot_gdt) as *mut u64;
        gdt.add(3).write_volatile(low);
        gdt.add(4).write_volatile(high);
        core::arch::asm!("ltr {:x}", in(reg) TSS_SELECTOR, options(nostack, preserves_flags));
    }
    let idt: &'static mut [Gate; VECTORS] = IDT.take();
    // SAFETY: `exception_stubs` is a read-only table of 32 addresses defined in boot.s.
    let stubs = unsafe { &*core::ptr::addr_of!(exception_stubs) };
    for (gate, &stub) in idt.iter_mut().zip(stubs) {
        *gate = Gate::interrupt(stub);
    }
    let idtr = Idtr { limit: (core::mem::size_of_val(idt) - 1) as u16, base: idt.as_ptr() as u64 };
    // SAFETY: the IDT is a 'static table of valid gates to the stubs in boot.s, which use the code
    // segment of the GDT loaded at boot; LIDT reads the 10-byte operand only.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) };
}

/// What the stubs leave on the stack (boot.s): the vector, the error code (0 where the CPU
/// pushes none), then the CPU's frame (SDM Vol. 3A, 6.14.2, Figure 6-9).
#[repr(C)]
pub struct Frame {
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

const NAMES: [&str; VECTORS] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 floating-point error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating-point exception",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security exception",
    "reserved",
];

/// Called by the stubs with interrupts off; reports the exception and exits with the failure code.
#[no_mangle]
extern "C" fn appliance_exception(frame: *const Frame) -> ! {
    static REPORTING: AtomicBool = AtomicBool::new(false);
    if REPORTING.swap(true, Ordering::Relaxed) {
        // A fault while reporting one: just stop.
        exit(ExitCode::Failure);
    }
    // SAFETY: the stub passes the address of the frame it and the CPU just pushed on this stack.
    let f = unsafe { &*frame };
    let name = NAMES.get(f.vector as usize).copied().unwrap_or("?");
    let cr2: u64;
    // SAFETY: reading CR2 (the faulting address of the last page fault) has no side effect.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    let guard = core::ptr::addr_of!(stack_guard) as u64;
    if f.vector == 14 && (guard..guard + 4096).contains(&cr2) {
        let (size, _) = crate::boot::stack_usage();
        let _ = writeln!(
            crate::serial::Com1,
            "STACK OVERFLOW: the boot stack ({} KiB) is exhausted; enlarge it in boot.s",
            size >> 10
        );
    }
    let _ = writeln!(
        crate::serial::Com1,
        "EXCEPTION {} ({name}): error code {:#x}, rip {:#x}, rsp {:#x}, rflags {:#x}, cs {:#x}, ss {:#x}, cr2 {:#x}",
        f.vector,
        f.error,
        f.rip,
        f.rsp,
        f.rflags,
        f.cs,
        f.ss,
        cr2
    );
    exit(ExitCode::Failure)
}
