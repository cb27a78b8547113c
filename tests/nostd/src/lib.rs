//! A bare-metal style user of the dataplane and of the NIC core: static storage, no allocator, no
//! std.
#![no_std]

use core::ptr::{addr_of_mut, NonNull};
use erpc_dataplane::clock::SimClock;
use erpc_dataplane::fabric::{Fabric, RxBuf};
use erpc_dataplane::{BacklogEntry, Completion, DmaRegion, HandlerMode, ReqHandle, Rpc, RpcConfig, RpcMemory, Session};

static mut CLOCK: SimClock = SimClock::new();
static mut MEM: [u8; 1 << 20] = [0; 1 << 20];
static mut SESSIONS: [Session; 4] = [Session::EMPTY; 4];
static mut BACKLOG: [BacklogEntry; 4] = [BacklogEntry::EMPTY; 4];
static mut RX: [RxBuf; 8] = [RxBuf::EMPTY; 8];

type Ep<'a> = Rpc<'static, erpc_dataplane::fabric::SimNic<'a, 'static, &'static SimClock>, &'static SimClock, u32>;

fn handler(rpc: &mut Ep<'_>, h: ReqHandle) {
    let _ = rpc.enqueue_response_prealloc(h, 0);
}

fn cont(rpc: &mut Ep<'_>, c: Completion) {
    *rpc.ctx_mut() += 1;
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// Builds an endpoint from static memory and runs one event-loop iteration.
///
/// # Safety
/// Call at most once (it takes the static buffers).
#[no_mangle]
pub unsafe extern "C" fn erpc_nostd_smoke() -> u32 {
    // SAFETY: called once; nothing else uses these statics.
    let (mem, sessions, backlog, rx) = unsafe {
        (&mut *addr_of_mut!(MEM), &mut *addr_of_mut!(SESSIONS), &mut *addr_of_mut!(BACKLOG), &mut *addr_of_mut!(RX))
    };
    // SAFETY: as above.
    let clock: &'static SimClock = unsafe { &*addr_of_mut!(CLOCK) };
    let fabric = Fabric::new(clock, 1);
    let port = fabric.attach(rx);
    let memory = RpcMemory { region: DmaRegion::from_static(mem, 0), sessions, backlog };
    let Ok(mut rpc) = Rpc::new(fabric.nic(port, 4), clock, 0u32, memory, RpcConfig::default()) else { return 1 };
    rpc.register_handler(1, handler, HandlerMode::Foreground).unwrap();
    let peer = rpc.local_addr();
    if let Ok(s) = rpc.create_session(peer) {
        if let (Ok(q), Ok(r)) = (rpc.alloc_msg_buffer(8), rpc.alloc_msg_buffer(8)) {
            let _ = rpc.enqueue_request(s, 1, q, r, cont, 0);
        }
    }
    rpc.run_event_loop_once();
    *rpc.ctx()
}

/// Memory for one Intel queue of 64 + 64 descriptors, page-aligned.
#[repr(C, align(4096))]
struct QueueMem([u8; erpc_nic::intel::queue_memory_bytes(64, 64)]);

static mut QUEUE_MEM: QueueMem = QueueMem([0; erpc_nic::intel::queue_memory_bytes(64, 64)]);

/// Brings up an igb whose 128 KiB register window is at `bar` (identity-mapped: bus address =
/// address), opens one queue over static memory and polls it once: the whole Intel driver core,
/// monomorphised without std. Returns frames received, or `u32::MAX` on an error.
///
/// # Safety
/// `bar` must be an 82576's register window, mapped uncached; call at most once (it takes the
/// static queue memory).
#[no_mangle]
pub unsafe extern "C" fn erpc_nostd_igb(bar: *mut u8) -> u32 {
    use erpc_dataplane::transport::{RxPacket, Transport};
    use erpc_nic::delay::Spin;
    use erpc_nic::dma::DmaRange;
    use erpc_nic::intel::{Device, Family, IntelConfig, QueueConfig};
    use erpc_nic::mmio::Mmio;

    let Some(base) = NonNull::new(bar) else { return u32::MAX };
    // SAFETY: the caller's contract.
    let regs = unsafe { Mmio::new(base, 128 << 10) };
    // SAFETY: as above; a static never used elsewhere (the caller calls once).
    let clock: &'static SimClock = unsafe { &*addr_of_mut!(CLOCK) };
    let delay = Spin(clock);
    let Ok(mut dev) = Device::bring_up(&regs, &delay, Family::Igb, &IntelConfig::default()) else { return u32::MAX };
    let cfg = QueueConfig { rx_ring: 64, tx_ring: 64, rs_interval: 16, ..QueueConfig::default() };
    let mem = addr_of_mut!(QUEUE_MEM).cast::<u8>();
    // SAFETY: static memory, used by nothing else, mapped for ever; bus address = address
    // (identity map, no IOMMU: the caller's contract).
    let range = unsafe { DmaRange::new(NonNull::new(mem).unwrap(), mem as u64, cfg.memory_bytes()) };
    let Ok(mut q) = dev.open_queue(&regs, delay, &cfg, range) else { return u32::MAX };
    let mut rx = [RxPacket::EMPTY; 8];
    let n = q.rx_burst(&mut rx);
    q.rx_release(&rx[..n]);
    dev.close_queue(q);
    n as u32
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
