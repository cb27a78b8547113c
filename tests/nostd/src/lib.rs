//! A bare-metal style user of the dataplane: static storage, no allocator, no std.
#![no_std]

use core::ptr::addr_of_mut;
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

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
