//! # erpc-appliance: eRPC with no operating system
//!
//! A freestanding x86_64 image (multiboot 1, loaded at 1 MiB) that QEMU boots with `-kernel`.
//! The appliance (issue 16) brings up what the eRPC endpoint needs from a bare machine — a serial
//! log, exception reporting, a calibrated clock, PCI enumeration, and the 82576 driven by the Intel
//! driver core of `erpc-nic` (reset, link, one queue pair over static memory, checked by looping a
//! frame back through the NIC) — and proves the dataplane runs there with a self-test of two
//! endpoints over the dataplane's in-memory fabric. It ends by exiting QEMU through
//! `isa-debug-exit` with the success or the failure code (src/exit.rs).
//!
//! Boot options (the multiboot command line, QEMU `-append "..."`), space-separated:
//! * `nic=BB:DD.F` drive the 82576 at that PCI address (default: the first found);
//!   `nic=none` run without a NIC.
//! * `ip=A.B.C.D` after the self-test, serve RPCs on the NIC at this address (src/serve.rs):
//!   `port=N` (default 31850), `loss=FRACTION` of frames dropped each way, `shutdown=allow` to
//!   stop (with the success code) on `erpc echo --shutdown`.
//! * `selftest=skip` skip the fabric self-test.
//! * `fault=corrupt|panic|exception|overflow|triple` make the image fail on purpose
//!   (tests/appliance/run checks that each failure is reported): a corrupted response byte in the
//!   self-test, a panic, an invalid-opcode exception, a stack overflow (into the guard page), a
//!   triple fault (no IDT).

#![no_std]
#![no_main]

mod acpi;
mod boot;
mod clock;
mod dma;
mod exit;
mod idt;
mod kv;
mod mem;
mod nic;
mod pci;
mod port;
mod selftest;
mod serial;
mod serve;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use exit::{exit, ExitCode};
use log::{error, info, warn};

/// Where the image is loaded (link.ld).
const LOAD_ADDR: usize = 0x10_0000;
/// The endpoint's address on the NIC without `ip=` (QEMU's user network's guest address; only
/// the loopback check runs then).
const IPV4: [u8; 4] = [10, 0, 2, 15];

/// A deliberate failure, to show the harness notices each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The self-test's server flips one byte of one response.
    Corrupt,
    Panic,
    /// An invalid opcode (UD2): the exception handler reports it.
    Exception,
    /// Unbounded recursion: the guard page below the stack faults, the handler reports it.
    Overflow,
    /// An invalid opcode with an empty IDT: a triple fault, which QEMU reports as status 0.
    Triple,
}

/// Which NIC to prepare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum NicChoice {
    /// The first 82576 found.
    #[default]
    First,
    At(pci::Bdf),
    None,
}

/// The boot options.
#[derive(Clone, Copy, Debug, Default)]
struct Options {
    nic: NicChoice,
    fault: Option<Fault>,
    /// Serve on the NIC at this IPv4 address after the self-test.
    ip: Option<[u8; 4]>,
    port: Option<u16>,
    /// Fraction of frames dropped in each direction while serving.
    loss: f64,
    allow_shutdown: bool,
    /// Skip the fabric self-test (`selftest=skip`): a serving appliance boots faster.
    skip_selftest: bool,
}

/// The endpoint's default UDP port (the original's first port, and `erpc`'s).
const DEFAULT_PORT: u16 = 31850;

fn parse_ipv4(v: &str) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut parts = v.split('.');
    for b in &mut ip {
        *b = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(ip)
}

impl Options {
    fn parse(cmdline: &'static str) -> Result<Options, Error> {
        let mut o = Options::default();
        for word in cmdline.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("nic", "none")) => o.nic = NicChoice::None,
                Some(("nic", v)) => o.nic = NicChoice::At(pci::Bdf::parse(v).ok_or(Error::Option(word))?),
                Some(("fault", v)) => {
                    o.fault = Some(match v {
                        "corrupt" => Fault::Corrupt,
                        "panic" => Fault::Panic,
                        "exception" => Fault::Exception,
                        "overflow" => Fault::Overflow,
                        "triple" => Fault::Triple,
                        _ => return Err(Error::Option(word)),
                    })
                }
                Some(("ip", v)) => o.ip = Some(parse_ipv4(v).ok_or(Error::Option(word))?),
                Some(("port", v)) => o.port = Some(v.parse().ok().filter(|&p| p != 0).ok_or(Error::Option(word))?),
                Some(("loss", v)) => {
                    o.loss = v.parse().ok().filter(|l| (0.0..1.0).contains(l)).ok_or(Error::Option(word))?
                }
                Some(("shutdown", "allow")) => o.allow_shutdown = true,
                Some(("selftest", "skip")) => o.skip_selftest = true,
                _ => return Err(Error::Option(word)),
            }
        }
        if o.ip.is_none() && (o.port.is_some() || o.loss > 0.0 || o.allow_shutdown) {
            return Err(Error::Option("port=, loss= and shutdown=allow (they need ip=)"));
        }
        if o.ip.is_some() && o.nic == NicChoice::None {
            return Err(Error::Option("ip= with nic=none"));
        }
        Ok(o)
    }
}

/// Why the appliance stopped with the failure code.
#[derive(Debug)]
enum Error {
    Option(&'static str),
    Memory { have: u64, need: u64 },
    MemFunctions(&'static str),
    Clock(clock::ClockError),
    Nic(nic::NicError),
    SelfTest(selftest::Failure),
    Serve(serve::ServeError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Option(w) => write!(
                f,
                "bad boot option `{w}`: the options are nic=BB:DD.F, nic=none, \
                 fault=corrupt|panic|exception|overflow|triple, and to serve RPCs after the self-test \
                 ip=A.B.C.D with port=N (default 31850), loss=FRACTION (0 to 1) and shutdown=allow; \
                 selftest=skip"
            ),
            Error::Memory { have, need } => write!(
                f,
                "the image needs {} MiB of memory above 1 MiB, the loader reports {} MiB: give the \
                 machine more memory (QEMU: -m {}M)",
                need.div_ceil(1 << 20),
                have >> 20,
                need.div_ceil(1 << 20) + 16
            ),
            Error::MemFunctions(which) => write!(f, "the image's own {which} is wrong (src/mem.rs)"),
            Error::Clock(e) => write!(f, "clock: {e}"),
            Error::Nic(e) => write!(f, "nic: {e}"),
            Error::SelfTest(e) => write!(f, "selftest: {e}"),
            Error::Serve(e) => write!(f, "serve: {e}"),
        }
    }
}

/// Called by boot.s in 64-bit mode with the loader's EAX and EBX.
#[no_mangle]
extern "C" fn rust_main(magic: u32, info: u32) -> ! {
    clock::mark_entry(port::rdtsc());
    serial::init(log::LevelFilter::Info);
    idt::install();
    info!("erpc-appliance {}: eRPC with no operating system", env!("CARGO_PKG_VERSION"));
    match run(magic, info) {
        Ok(()) => {
            info!("appliance: PASS");
            exit(ExitCode::Success)
        }
        Err(e) => {
            error!("appliance: FAIL: {e}");
            exit(ExitCode::Failure)
        }
    }
}

fn run(magic: u32, info: u32) -> Result<(), Error> {
    let ext = boot::extent();
    info!(
        "image: {:#x}..{:#x}: {} KiB loaded, {} KiB zeroed (page tables, stack, static memory)",
        ext.start,
        ext.bss_end,
        (ext.data_end - ext.start) >> 10,
        (ext.bss_end - ext.data_end) >> 10
    );
    mem::check().map_err(Error::MemFunctions)?;
    let boot = boot::boot_info(magic, info);
    let cmdline = match boot {
        Some(b) => {
            let need = (ext.bss_end - LOAD_ADDR) as u64;
            match b.mem_above_1m {
                Some(have) if have < need => return Err(Error::Memory { have, need }),
                Some(have) => info!("memory: {} MiB above 1 MiB", have >> 20),
                None => warn!("memory: the loader gave no memory size: assuming enough"),
            }
            b.cmdline
        }
        None => {
            warn!("boot: not started by a multiboot loader (EAX {magic:#x}): no memory size, no options");
            ""
        }
    };
    let opts = Options::parse(cmdline)?;
    if !cmdline.is_empty() {
        info!("boot options: {cmdline}");
    }

    let (clock, ppm) = clock::calibrate_with_pit().map_err(Error::Clock)?;
    info!(
        "clock: TSC at {}.{:03} MHz, calibrated against the PIT (to {ppm} ppm){}",
        clock.hz() / 1_000_000,
        clock.hz() / 1_000 % 1_000,
        if clock::tsc_invariant() {
            ""
        } else {
            "; CPUID does not report it invariant (fine under QEMU, needed on hardware)"
        }
    );
    match acpi::pm_timer() {
        Some(pm) => {
            let c = clock::check_against_pm_timer(&clock, &pm).map_err(Error::Clock)?;
            info!(
                "clock: checked against the ACPI PM timer (port {:#x}, {} bits): {} ns against {} ns, {} ppm apart",
                pm.port,
                if pm.bits32 { 32 } else { 24 },
                c.tsc_ns,
                c.pm_ns,
                c.error_ppm
            );
        }
        None => warn!("clock: the firmware's ACPI tables name no PM timer: calibration not cross-checked"),
    }
    inject(opts.fault);

    let scan = pci::enumerate();
    for d in &scan.devices {
        info!("pci: {d}");
    }
    if scan.dropped > 0 {
        warn!("pci: {} more functions not listed (at most {} kept)", scan.dropped, pci::MAX_DEVICES);
    }
    if scan.bad_bridges > 0 {
        warn!("pci: {} bridges name a secondary bus already scanned or not above their own: skipped", scan.bad_bridges);
    }
    let found = nic::find(&scan.devices);
    for f in &found {
        match nic::peek_mac(f) {
            Some(mac) => info!("nic: {} at {}: BAR0 {}, MAC {}", f.name, f.bdf, f.bar0, nic::Mac(mac)),
            None => info!("nic: {} at {}: BAR0 {}", f.name, f.bdf, f.bar0),
        }
    }
    let chosen = match opts.nic {
        NicChoice::None => {
            info!("nic: none wanted (nic=none)");
            None
        }
        NicChoice::At(bdf) => Some(nic::prepare(&found, Some(bdf)).map_err(Error::Nic)?),
        NicChoice::First => Some(nic::prepare(&found, None).map_err(Error::Nic)?),
    };
    // The NIC stays up (queue pair open) for the rest of the run.
    let igb = match chosen {
        Some(n) => {
            prepared(n);
            Some(bring_up_nic(&n, &clock, opts.ip.unwrap_or(IPV4), opts.port.unwrap_or(DEFAULT_PORT))?)
        }
        None => None,
    };

    if opts.skip_selftest && opts.fault != Some(Fault::Corrupt) {
        info!("selftest: skipped (selftest=skip)");
    } else {
        let corrupt = (opts.fault == Some(Fault::Corrupt)).then_some(selftest::LOSSLESS_RPCS / 2 + 7);
        let r = selftest::run(clock, corrupt).map_err(Error::SelfTest)?;
        info!(
            "selftest: passed: {} RPCs, every byte checked ({} KiB of requests, {} KiB of responses); \
             {} lossless in {} ms, {} with {}% loss in {} ms ({} frames lost, {} retransmissions)",
            r.rpcs,
            r.req_bytes >> 10,
            r.resp_bytes >> 10,
            r.rpcs - r.lossy_rpcs,
            r.lossless_ns / 1_000_000,
            r.lossy_rpcs,
            selftest::LOSS * 100.0,
            r.lossy_ns / 1_000_000,
            r.frames_lost,
            r.retransmissions
        );
    }
    if let (Some(_), Some(igb)) = (opts.ip, igb) {
        let so = serve::ServeOptions { loss: opts.loss, allow_shutdown: opts.allow_shutdown };
        let s = serve::run(igb.queue, clock, so).map_err(Error::Serve)?;
        info!(
            "serve: stopped on a shutdown request: {} bench RPCs, {} echoes ({} KiB), {} key-value operations, {} session resets, \
             {} echoes unanswered for lack of msgbuf memory",
            s.bench,
            s.echoes,
            s.echo_bytes >> 10,
            s.kv_ops,
            s.resets,
            s.echo_no_memory
        );
    }
    let (size, used) = boot::stack_usage();
    info!("stack: {} KiB of {} KiB used", used.div_ceil(1024), size >> 10);
    Ok(())
}

fn prepared(n: nic::Nic) {
    info!(
        "nic: using {} at {}: registers {:#x} ({} KiB), command {:#06x} (memory, bus master on), STATUS {:#010x}",
        n.name,
        n.bdf,
        n.regs,
        n.regs_len >> 10,
        n.command,
        n.status
    );
    match n.mac {
        Some(mac) => info!("nic: station address {} (RAL0/RAH0 through BAR0)", nic::Mac(mac)),
        None => warn!("nic: RAH0 says the station address is not valid"),
    }
}

/// Brings the NIC up with the driver core, logs its link and address, and loops a frame back
/// through it.
fn bring_up_nic(n: &nic::Nic, clock: &clock::TscClock, ip: [u8; 4], port: u16) -> Result<nic::Igb, Error> {
    use erpc_dataplane::transport::Transport;
    use erpc_nic::intel::igb;
    use erpc_nic::mmio::RegisterIo;
    let mut igb = nic::bring_up(n, *clock, ip, port).map_err(Error::Nic)?;
    // STATUS (82576 datasheet 8.2.2): FD bit 0, LU bit 1, SPEED bits 7:6 (00b 10, 01b 100,
    // 10b/11b 1000 Mb/s).
    let status = igb.regs.read32(igb::STATUS);
    let speed = [10, 100, 1000, 1000][(status >> 6 & 3) as usize];
    info!(
        "nic: {}: link {} {} ms after the reset (STATUS {status:#010x}: {speed} Mb/s, {} duplex), MAC {}",
        igb.bdf,
        if igb.device.link_up(igb.regs) { "up" } else { "DOWN" },
        igb.link_ns / 1_000_000,
        if status & 1 != 0 { "full" } else { "half" },
        nic::Mac(igb.device.mac())
    );
    let a = igb.queue.local_addr();
    info!(
        "nic: queue pair {}: {} RX and {} TX descriptors, {} KiB of static memory; endpoint {a}",
        igb.queue.index(),
        nic::RX_RING,
        nic::TX_RING,
        nic::QUEUE_MEMORY >> 10
    );
    match nic::loopback_check(&mut igb, clock).map_err(Error::Nic)? {
        Some(l) => info!(
            "nic: loopback: a {}-byte frame to the NIC's own address came back intact on queue {} in {} us \
             (VMDq switch inside the NIC)",
            l.len,
            igb.queue.index(),
            l.ns / 1000
        ),
        None => warn!("nic: loopback: the frame sent to the NIC's own address did not come back (see nic.rs)"),
    }
    let c = igb.device.counters(igb.regs);
    let q = igb.queue.counters();
    info!(
        "nic: counters: device {} frames received, {} sent, {} missed; queue {} received, {} dropped, {} foreign",
        c.rx_packets, c.tx_packets, c.rx_missed, q.rx_frames, q.rx_dropped_by_driver, q.rx_foreign
    );
    Ok(igb)
}

/// The deliberate failures that happen outside the self-test.
fn inject(fault: Option<Fault>) {
    match fault {
        Some(Fault::Panic) => panic!("injected by the boot option fault=panic"),
        Some(Fault::Exception) => {
            warn!("fault=exception: executing UD2");
            // SAFETY: UD2 raises #UD, which the IDT's handler reports before exiting.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        Some(Fault::Overflow) => {
            warn!("fault=overflow: recursing until the stack runs out");
            recurse(0);
        }
        Some(Fault::Triple) => {
            warn!("fault=triple: UD2 with an empty IDT");
            let empty = [0u8; 10];
            // SAFETY: loading an IDT of limit 0 makes the next exception a triple fault, which
            // resets (or, with QEMU -no-reboot, stops) the machine: the purpose of this option.
            unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) empty.as_ptr(), options(nostack)) };
        }
        _ => {}
    }
}

/// Recursion with 4 KiB frames that never ends in practice (the bound only keeps the compiler
/// from proving it infinite).
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth as u8; 4096]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(u64::from(frame[depth as usize % 4096]))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    static PANICKED: AtomicBool = AtomicBool::new(false);
    if !PANICKED.swap(true, Ordering::Relaxed) {
        use core::fmt::Write;
        let _ = writeln!(serial::Com1, "PANIC: {info}");
    }
    exit(ExitCode::Failure)
}
