//! The hello-world server (the original eRPC's `hello_world/server.cc`): answers every request
//! of type [`REQ_HELLO`] with "hello".
//!
//! `hello_server [ADDR] [--count N]`: serves on ADDR (default 127.0.0.1:31850; port 0 picks a
//! free one), prints `serving on IP:PORT`, and exits after N requests (default: never).

use erpc_dataplane::{HandlerMode, ReqHandle};
use erpc_examples::{udp_endpoint, UdpRpc};
use std::net::SocketAddrV4;

/// The request type the server handles.
const REQ_HELLO: u8 = 1;

/// Counts the requests answered.
#[derive(Default)]
struct Served(u64);

fn hello(rpc: &mut UdpRpc<Served>, h: ReqHandle) {
    // A one-packet answer: written into the slot's preallocated buffer, no allocation.
    let answered = rpc.respond_prealloc_with(h, |_req, resp| {
        resp[..5].copy_from_slice(b"hello");
        5
    });
    if answered.is_ok() {
        rpc.ctx_mut().0 += 1;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut bind: SocketAddrV4 = "127.0.0.1:31850".parse()?;
    let mut count = u64::MAX;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--count" => count = args.next().ok_or("--count needs a number")?.parse()?,
            addr => bind = addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        }
    }
    let mut rpc = udp_endpoint(bind, Served::default())?;
    rpc.register_handler(REQ_HELLO, hello, HandlerMode::Foreground)?;
    let me = rpc.local_addr();
    println!("serving on {}.{}.{}.{}:{}", me.ipv4[0], me.ipv4[1], me.ipv4[2], me.ipv4[3], me.udp_port);
    while rpc.ctx().0 < count {
        rpc.run_event_loop_once();
    }
    // Let the last response leave before the socket closes.
    rpc.run_event_loop(10_000_000);
    Ok(())
}
