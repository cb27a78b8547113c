//! The loopback driver tests: two Intel NICs wired to each other (in CI: two emulated 82576 in
//! a QEMU guest, started by `tests/vm/run`; on real hardware: two ports cabled back to back),
//! or two ConnectX ports (picked by vendor ID; the README's "First run on a real ConnectX" says
//! what it prints), both bound to vfio-pci. Linked statically for the guest.
//!
//! `erpc-loopback <BDF of NIC A> <BDF of NIC B> [--containment] [--reserve-hugepages N]`:
//! opens both NICs through VFIO in one type1 container and runs eRPC between an endpoint on each
//! (`erpc_tests::scenarios`: small RPCs, multi-MB requests and responses, loss injected in
//! software), then checks the NICs' statistics and the error messages a user gets.
//!
//! Then it closes both endpoints, opens three queue pairs on NIC A and two on NIC B and runs
//! five endpoints on five threads (`erpc_tests::mesh`): a frame from every endpoint to every
//! other arrives on its destination's queue only (through the wire, or the NIC's VMDq switch),
//! then RPCs between every pair with 3 MB messages and 1% loss, one endpoint closing after the
//! first phase.
//!
//! * `--reserve-hugepages N`: expects no hugepages reserved, checks that allocating then fails
//!   with the message that says how to reserve them, and reserves N (the guest does this).
//! * `--containment`: points a transmit descriptor at the physical address of memory that is not
//!   mapped in the IOMMU and checks that its contents do not leave the NIC. On real hardware the
//!   resulting IOMMU fault may stall the NIC's queue until the next reset: the guest's emulated
//!   NIC is the place for it.
//!
//! Prints `RESULT: PASS` or `RESULT: FAIL: <reason>` as its last line.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::transport::{EndpointAddr, Segment, TxPacket};
use erpc_dataplane::transport::{RxPacket, Transport};
use erpc_dataplane::wire::{RoutingInfo, HEADROOM};
use erpc_dataplane::{OwnedMemory, RpcConfig};
use erpc_driver::intel::{igb, IntelConfig, IntelDevice, IntelQueue, QueueConfig, QUEUE_ENABLE};
use erpc_driver::mmio::RegisterIo;
use erpc_driver::vfio::{self, DeviceError, PciFunction};
use erpc_hugepages::{DmaError, DmaSpace, HugepageCounts, Memory, PageSize};
use erpc_tests::mesh::{guest_rpc_config, run_mesh, MeshConfig};
use erpc_tests::scenarios::{dma_endpoint_memory, dma_endpoint_memory_sessions, Loopback, LoopbackConfig};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn check(name: &str, r: Result<String, String>) -> Result<(), String> {
    match r {
        Ok(detail) => {
            println!("ok   {name}: {detail}");
            Ok(())
        }
        Err(e) => {
            println!("FAIL {name}: {e}");
            Err(format!("{name}: {e}"))
        }
    }
}

/// Without reserved hugepages the allocation fails and says how to reserve them; then reserve.
fn hugepages_error_then_reserve(pages: u64) -> Result<String, String> {
    let c = HugepageCounts::read(PageSize::Huge2M).ok_or("no 2 MiB hugepage support")?;
    if c.total != 0 {
        return Err(format!("expected a guest without hugepages, found {c:?}"));
    }
    match Memory::hugepages(4 << 20) {
        Err(e @ DmaError::NoHugepages { .. }) => {
            let m = e.to_string();
            if !m.contains("echo 2 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") {
                return Err(format!("message does not say how to reserve them: {m}"));
            }
            std::fs::write("/proc/sys/vm/nr_hugepages", pages.to_string())
                .map_err(|e| format!("reserving hugepages: {e}"))?;
            let c = HugepageCounts::read(PageSize::Huge2M).ok_or("hugepage counts")?;
            if c.total < pages {
                return Err(format!("reserved only {c:?}"));
            }
            Ok(format!("\"{m}\"; reserved {} pages", c.total))
        }
        Err(e) => Err(format!("wrong error: {e}")),
        Ok(_) => Err("hugepages allocated although none were reserved".into()),
    }
}

/// Opening devices that cannot be used gives the error that names the fix.
fn open_errors(container: &Arc<vfio::VfioContainer>) -> Result<String, String> {
    let mut out = vec![];
    match PciFunction::open(container, "0000:00:1f.7") {
        Err(e @ DeviceError::NotFound { .. }) => out.push(e.to_string()),
        Err(e) => return Err(format!("missing device: wrong error: {e}")),
        Ok(_) => return Err("opened a device that does not exist".into()),
    }
    // The host bridge is never bound to vfio-pci.
    match PciFunction::open(container, "0000:00:00.0") {
        Err(e @ DeviceError::NotBoundToVfio { .. }) => {
            let m = e.to_string();
            if !m.contains("erpc nic bind 0000:00:00.0") {
                return Err(format!("unbound device: message lacks the fix: {m}"));
            }
            out.push(m);
        }
        Err(e) => return Err(format!("unbound device: wrong error: {e}")),
        Ok(_) => return Err("opened the host bridge".into()),
    }
    Ok(out.join(" | "))
}

fn endpoint_memory(space: &Arc<DmaSpace>, bytes: usize) -> Result<OwnedMemory, String> {
    dma_endpoint_memory(space, bytes, PageSize::Huge2M).map_err(|e| e.to_string())
}

/// Physical address of the page holding `p` (root reads PFNs from /proc/self/pagemap).
fn phys_addr(p: *const u8) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (p as u64 / 4096) * 8).map_err(|e| e.to_string())?;
    let e = u64::from_le_bytes(b);
    if e >> 63 == 0 || e & ((1 << 55) - 1) == 0 {
        return Err(format!("page not present or PFN hidden: {e:#x}"));
    }
    Ok((e & ((1 << 55) - 1)) * 4096 + p as u64 % 4096)
}

fn wait_frame(b: &mut IntelQueue, ms: u64) -> Option<Vec<u8>> {
    let t0 = Instant::now();
    let mut out = [RxPacket::EMPTY; 8];
    while t0.elapsed() < Duration::from_millis(ms) {
        let n = b.rx_burst(&mut out);
        if n > 0 {
            // SAFETY: the driver lent `out[0]` until we release it; read before releasing.
            let f = unsafe { std::slice::from_raw_parts(out[0].data.as_ptr(), out[0].len as usize) }.to_vec();
            b.rx_release(&out[..n]);
            return Some(f);
        }
    }
    None
}

/// A descriptor that points at memory not mapped in the IOMMU must not deliver its contents;
/// the same descriptor pointing at mapped memory does (the control).
fn iommu_containment(space: &Arc<DmaSpace>, a: &mut IntelQueue, b: &mut IntelQueue) -> Result<String, String> {
    const LEN: usize = 128;
    let secret: Vec<u8> = (0..LEN).map(|i| 0xA5 ^ (i as u8).wrapping_mul(7)).collect();
    let mut frame = secret.clone();
    frame[..6].copy_from_slice(&b.local_addr().mac);
    // Control: the frame in mapped DMA memory arrives intact.
    let mapped = space.alloc(4096, PageSize::Huge2M).map_err(|e| e.to_string())?;
    // SAFETY: our own mapping, nothing else uses it; the device only reads it.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), mapped.vaddr().as_ptr(), LEN) };
    while wait_frame(b, 50).is_some() {}
    // SAFETY: the IOVA is mapped (above) and holds the frame.
    unsafe { a.send_raw(mapped.iova(), LEN as u32) };
    a.tx_flush();
    match wait_frame(b, 2000) {
        Some(f) if f[..LEN.min(f.len())] == frame[..] => {}
        Some(f) => return Err(format!("control frame corrupted: {:02x?}", &f[..16.min(f.len())])),
        None => return Err("control frame from mapped memory did not arrive".into()),
    }
    // The same bytes in memory the IOMMU does not map, addressed by their physical address:
    // what a device without an IOMMU would read.
    let unmapped = Memory::new(4096, PageSize::Ordinary).map_err(|e| e.to_string())?;
    // SAFETY: our own fresh mapping, not given to any device.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), unmapped.as_ptr().as_ptr(), LEN) };
    let pa = phys_addr(unmapped.as_ptr().as_ptr())?;
    // SAFETY: deliberately pointing the device outside every mapping: the IOMMU must stop it.
    unsafe { a.send_raw(pa, LEN as u32) };
    a.tx_flush();
    let got = wait_frame(b, 500);
    let secret_body = &secret[6..];
    match got {
        Some(f) if f.windows(16).any(|w| secret_body.windows(16).any(|s| s == w)) => {
            Err(format!("the frame from unmapped physical address {pa:#x} carried the memory's contents"))
        }
        Some(f) => Ok(format!(
            "mapped IOVA delivered the frame; unmapped physical address {pa:#x} delivered {} bytes, \
             {} of them zero, none of the memory's contents",
            f.len(),
            f.iter().filter(|&&x| x == 0).count()
        )),
        None => Ok(format!("mapped IOVA delivered the frame; unmapped physical address {pa:#x} delivered nothing")),
    }
}

const USAGE: &str = "usage: erpc-loopback <BDF of NIC A> <BDF of NIC B> [--containment] [--reserve-hugepages N]";

fn run(args: &[String]) -> Result<(), String> {
    let mut bdfs = vec![];
    let mut containment = false;
    let mut reserve = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--containment" => containment = true,
            "--reserve-hugepages" => {
                let n = it.next().and_then(|n| n.parse::<u64>().ok());
                reserve = Some(n.ok_or(format!("--reserve-hugepages needs a number\n{USAGE}"))?);
            }
            b if !b.starts_with('-') => bdfs.push(b.to_string()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let [bdf_a, bdf_b] = &bdfs[..] else {
        return Err(format!("need two NIC addresses, got {bdfs:?}\n{USAGE}"));
    };
    println!("erpc-loopback: NIC A {bdf_a}, NIC B {bdf_b}");
    if let Some(n) = reserve {
        check("hugepages", hugepages_error_then_reserve(n))?;
    }
    let container = vfio::open_container().map_err(|e| e.to_string())?;
    let space = DmaSpace::vfio(container.clone());
    if std::fs::read_to_string(format!("/sys/bus/pci/devices/{bdf_a}/vendor")).is_ok_and(|v| v.trim() == "0x15b3") {
        return run_mlx5(&container, &space, bdf_a, bdf_b);
    }
    let t0 = Instant::now();
    let dev_a = IntelDevice::open(&container, &space, bdf_a, IntelConfig { ipv4: [10, 0, 0, 1], ..Default::default() })
        .map_err(|e| format!("open {bdf_a}: {e}"))?;
    let dev_b = IntelDevice::open(&container, &space, bdf_b, IntelConfig { ipv4: [10, 0, 0, 2], ..Default::default() })
        .map_err(|e| format!("open {bdf_b}: {e}"))?;
    println!(
        "ok   bring-up: both NICs up with link in {} ms ({:?}, MACs {:02x?} and {:02x?})",
        t0.elapsed().as_millis(),
        dev_a.family(),
        dev_a.mac(),
        dev_b.mac()
    );
    let a = dev_a.open_queue(QueueConfig::default()).map_err(|e| format!("queue on {bdf_a}: {e}"))?;
    let b = dev_b.open_queue(QueueConfig::default()).map_err(|e| format!("queue on {bdf_b}: {e}"))?;
    check("open errors", open_errors(&container))?;
    let lcfg = LoopbackConfig { phase_timeout_ns: 240_000_000_000, ..Default::default() };
    let rpc_cfg = guest_rpc_config();
    let mut lb = scenarios(a, b, &space, rpc_cfg, &lcfg)?;
    let ca = dev_a.counters();
    let cb = dev_b.counters();
    let qa = lb.client.transport().inner().counters();
    let qb = lb.server.transport().inner().counters();
    println!("     NIC A counters: {ca:?}; queue {qa:?}");
    println!("     NIC B counters: {cb:?}; queue {qb:?}");
    check(
        "device statistics",
        if qa.tx_flush_timeouts + qb.tx_flush_timeouts > 0 {
            Err("tx_flush timed out".into())
        } else if qa.rx_dropped_by_driver + qb.rx_dropped_by_driver + qa.rx_bad_release + qb.rx_bad_release > 0 {
            Err("the driver dropped frames or saw bad releases".into())
        } else if ca.tx_packets > 10_000 && cb.rx_packets > 10_000 && ca.rx_packets > 0 && cb.tx_packets > 0 {
            Ok(format!("A sent {} frames, B received {}", ca.tx_packets, cb.rx_packets))
        } else {
            Err("statistics registers did not count the traffic".into())
        },
    )?;
    if containment {
        let (c, s) = (&mut lb.client, &mut lb.server);
        check(
            "IOMMU containment",
            iommu_containment(&space, c.transport_mut().inner_mut(), s.transport_mut().inner_mut()),
        )?;
    }
    // Closing both endpoints closes queue 0 of each NIC; the devices stay up.
    drop(lb);
    check(
        "queues closed",
        match (dev_a.open_queues(), dev_b.open_queues()) {
            (a, b) if a.is_empty() && b.is_empty() => Ok("no queue open on either NIC".into()),
            (a, b) => Err(format!("still open: {a:?} on A, {b:?} on B")),
        },
    )?;
    multi_endpoint(&dev_a, &dev_b, &space, rpc_cfg)
}

/// Frames for `n` endpoints, carved from one mapped allocation.
struct Frames {
    mem: erpc_hugepages::DmaMemory,
}

impl Frames {
    const SLOT: usize = 256;

    /// Frame `k`: from `from` to `to`, its payload filled with `tag`.
    fn frame(&self, k: usize, from: EndpointAddr, to: EndpointAddr, tag: u8) -> TxPacket {
        assert!((k + 1) * Self::SLOT <= self.mem.len());
        let mut hdr = [0u8; HEADROOM];
        RoutingInfo::new(&from, &to).write(&mut hdr, 64);
        // SAFETY: slot `k` of our own mapping (checked above), which the device only reads.
        let p = unsafe { self.mem.vaddr().as_ptr().add(k * Self::SLOT) };
        // SAFETY: as above; 42 + 64 bytes fit in a slot.
        unsafe {
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), p, HEADROOM);
            std::ptr::write_bytes(p.add(HEADROOM), tag, 64);
        }
        let seg = Segment { vaddr: p, iova: self.mem.iova() + (k * Self::SLOT) as u64, len: (HEADROOM + 64) as u32 };
        TxPacket { segs: [seg, Segment::EMPTY] }
    }
}

/// The payload tags of the frames that arrive on `q` within `ms` milliseconds.
fn drain_tags(q: &mut IntelQueue, ms: u64) -> Vec<u8> {
    let t0 = Instant::now();
    let mut out = [RxPacket::EMPTY; 16];
    let mut tags = vec![];
    while t0.elapsed() < Duration::from_millis(ms) {
        let n = q.rx_burst(&mut out);
        for p in &out[..n] {
            if p.len as usize > HEADROOM {
                // SAFETY: lent by the queue until the release below; read through a raw pointer.
                tags.push(unsafe { p.data.as_ptr().add(HEADROOM).read() });
            }
        }
        q.rx_release(&out[..n]);
    }
    tags
}

/// From every endpoint one frame to every other (through the wire between the NICs, through
/// the VMDq switch within one): each must arrive on its destination's queue and nowhere else.
fn steering(qs: &mut [IntelQueue], space: &Arc<DmaSpace>) -> Result<String, String> {
    let n = qs.len();
    let frames = Frames { mem: space.alloc(n * n * Frames::SLOT, PageSize::Huge2M).map_err(|e| e.to_string())? };
    for q in qs.iter_mut() {
        drain_tags(q, 20);
    }
    for s in 0..n {
        for r in (0..n).filter(|&r| r != s) {
            let f = frames.frame(s * n + r, qs[s].local_addr(), qs[r].local_addr(), (s * 16 + r) as u8);
            if qs[s].tx_burst(&[f]) != 1 {
                return Err(format!("endpoint {s}: transmit refused"));
            }
        }
        qs[s].tx_flush();
    }
    let mut summary = vec![];
    for (r, q) in qs.iter_mut().enumerate() {
        let mut got = drain_tags(q, 300);
        got.sort_unstable();
        let want: Vec<u8> = (0..n).filter(|&s| s != r).map(|s| (s * 16 + r) as u8).collect();
        if got != want {
            return Err(format!(
                "queue {} of {} received tags {got:02x?}, expected {want:02x?}",
                q.index(),
                q.local_addr()
            ));
        }
        summary.push(format!("{}: {} frames", q.local_addr(), got.len()));
    }
    drop(frames);
    Ok(summary.join(", "))
}

/// Two endpoints on each NIC, one queue pair and one thread each: the steering, then RPCs
/// between every pair (3 MB messages, then 1% loss).
fn multi_endpoint(
    dev_a: &IntelDevice,
    dev_b: &IntelDevice,
    space: &Arc<DmaSpace>,
    rpc_cfg: RpcConfig,
) -> Result<(), String> {
    let mut qs = vec![];
    // A third endpoint on NIC A closes after the first phase, while the others carry on.
    for (dev, name, n) in [(dev_a, "A", 3), (dev_b, "B", 2)] {
        for k in 0..n {
            let q = dev.open_queue(QueueConfig::port(31850 + k)).map_err(|e| format!("NIC {name}, queue {k}: {e}"))?;
            qs.push(q);
        }
    }
    check("steering", steering(&mut qs, space))?;
    let mut eps = vec![];
    for q in qs {
        let mem = dma_endpoint_memory_sessions(space, 40 << 20, PageSize::Huge2M, 16).map_err(|e| e.to_string())?;
        eps.push((q, mem));
    }
    let cfg = MeshConfig::guest();
    let t0 = Instant::now();
    let reports = run_mesh(eps, rpc_cfg, &cfg, |q: &IntelQueue| {
        let c = q.counters();
        if c.rx_foreign + c.rx_dropped_by_driver + c.rx_bad_release + c.tx_flush_timeouts > 0 {
            return Err(format!("queue {}: {c:?}", q.index()));
        }
        Ok(format!("queue {} received {} frames, none for another endpoint", q.index(), c.rx_frames))
    });
    let reports = match reports {
        Ok(r) => r,
        Err(e) => return check("5 endpoints on 5 threads", Err(e)),
    };
    for r in &reports {
        println!("     {r}");
    }
    let rpcs: u64 = reports.iter().flat_map(|r| r.completed.values()).sum();
    check(
        "5 endpoints on 5 threads",
        Ok(format!(
            "{rpcs} RPCs between every pair (3 MB requests and responses, then 1% loss; endpoint 2 closed after \
             the small RPCs) in {} ms",
            t0.elapsed().as_millis()
        )),
    )?;
    // Every queue was closed by its thread: no pool receives, no queue is enabled.
    check("all queues closed", {
        let mut left = vec![];
        for (name, dev) in [("A", dev_a), ("B", dev_b)] {
            let r = dev.registers();
            let vfre = r.read32(igb::VFRE) & 0xFF;
            let on: Vec<u16> = (0..8).filter(|&n| r.read32(igb::queue(n).rxdctl) & QUEUE_ENABLE != 0).collect();
            if vfre != 0 || !on.is_empty() || !dev.open_queues().is_empty() {
                left.push(format!("NIC {name}: VFRE {vfre:#04x}, queues enabled {on:?}"));
            }
        }
        if left.is_empty() {
            Ok("VFRE = 0 and every RXDCTL.ENABLE clear on both NICs".into())
        } else {
            Err(left.join("; "))
        }
    })
}

/// Connects a session from `a` to `b` and runs every loopback scenario, printing each result.
fn scenarios<A: Transport, B: Transport>(
    a: A,
    b: B,
    space: &Arc<DmaSpace>,
    rpc_cfg: RpcConfig,
    lcfg: &LoopbackConfig,
) -> Result<Loopback<A, B, StdClock>, String> {
    let mut lb = Loopback::connect(
        a,
        b,
        endpoint_memory(space, 32 << 20)?,
        endpoint_memory(space, 32 << 20)?,
        StdClock::default(),
        rpc_cfg,
        lcfg,
    )
    .map_err(|e| format!("connect: {e}"))?;
    println!("ok   session connected");
    let report = lb.run_all(lcfg);
    match &report {
        Ok(r) => r.lines().for_each(|l| println!("ok   {l}")),
        Err(e) => println!("FAIL scenarios: {e}"),
    }
    report?;
    Ok(lb)
}

/// The loopback scenarios on two ConnectX ports cabled back to back.
fn run_mlx5(
    container: &Arc<vfio::VfioContainer>,
    space: &Arc<DmaSpace>,
    bdf_a: &str,
    bdf_b: &str,
) -> Result<(), String> {
    use erpc_driver::mlx5::{Mlx5Config, Mlx5Nic};
    let t0 = Instant::now();
    let open = |bdf: &str, ip: [u8; 4]| {
        Mlx5Nic::open(container, space, bdf, Mlx5Config { ipv4: ip, ..Default::default() })
            .map_err(|e| format!("open {bdf}: {e}"))
    };
    let (a, b) = (open(bdf_a, [10, 0, 0, 1])?, open(bdf_b, [10, 0, 0, 2])?);
    println!(
        "ok   bring-up: both ConnectX functions up in {} ms (MACs {:02x?} and {:02x?})",
        t0.elapsed().as_millis(),
        a.local_addr().mac,
        b.local_addr().mac
    );
    // What the driver read from each device and sized its queues and doorbells by.
    for (name, nic) in [("A", &a), ("B", &b)] {
        let (major, minor, sub) = nic.fw_version();
        println!("     NIC {name}: firmware {major}.{minor}.{sub}; {}", nic.caps());
    }
    let mut lb = scenarios(a, b, space, RpcConfig::default(), &LoopbackConfig::default())?;
    let sa = lb.client.transport_mut().inner_mut().stats();
    let sb = lb.server.transport_mut().inner_mut().stats();
    println!("     NIC A counters: {sa:?}");
    println!("     NIC B counters: {sb:?}");
    check(
        "driver counters",
        if sa.tx_flush_timeouts + sb.tx_flush_timeouts + sa.sq_resets + sb.sq_resets > 0 {
            Err("a send queue stalled or failed".into())
        } else if sa.rx_error_cqes + sb.rx_error_cqes + sa.rx_malformed_cqes + sb.rx_malformed_cqes > 0 {
            Err("error or malformed receive completions".into())
        } else {
            Ok(format!("A sent {} frames, B received {}", sa.tx_packets, sb.rx_packets))
        },
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => {
            println!("RESULT: PASS");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("RESULT: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
