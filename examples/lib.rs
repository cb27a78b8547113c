//! Small programs that show how eRPC is used, all over kernel UDP on loopback (no NIC needed):
//!
//! | example | what it shows |
//! |---|---|
//! | `hello_server`, `hello_client` | the original eRPC's first program: a server answers "hello" (two processes) |
//! | `nested` | a handler that issues its own RPC and answers once that completes (nested RPCs) |
//! | `background` | a long-running handler on worker threads (`HandlerMode::Background`) |
//!
//! ```sh
//! cargo run -p erpc-examples --example hello_server            # prints the address it serves on
//! cargo run -p erpc-examples --example hello_client 127.0.0.1:31850
//! cargo run -p erpc-examples --example nested
//! cargo run -p erpc-examples --example background
//! ```
//!
//! `tests/examples.rs` builds and runs every one. This library holds the few lines they share:
//! an endpoint over a UDP socket, with memory it owns.

use erpc_dataplane::clock::StdClock;
use erpc_dataplane::{DmaRegion, OwnedMemory, Rpc, RpcConfig};
use erpc_driver::udp::{UdpConfig, UdpTransport};
use std::net::SocketAddrV4;

/// An endpoint over kernel UDP with application context `Ctx`.
pub type UdpRpc<Ctx> = Rpc<'static, UdpTransport, StdClock, Ctx>;

/// Builds an endpoint bound to `bind` (port 0: any free port). Kernel UDP needs no DMA-capable
/// memory, so the msgbuf region is ordinary memory, kept for the rest of the process (msgbufs
/// may outlive their endpoint).
pub fn udp_endpoint<Ctx>(bind: SocketAddrV4, ctx: Ctx) -> Result<UdpRpc<Ctx>, Box<dyn std::error::Error>> {
    let transport = UdpTransport::bind(UdpConfig { bind, ..UdpConfig::default() })?;
    let region = DmaRegion::from_static(vec![0u8; 16 << 20].leak(), 0);
    let cfg = RpcConfig { seed: RpcConfig::random_seed(), mtu: 1514, ..RpcConfig::default() };
    Ok(Rpc::new(transport, StdClock::default(), ctx, OwnedMemory::new(region, 64, 64), cfg)?)
}
