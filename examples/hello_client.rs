//! The hello-world client (the original eRPC's `hello_world/client.cc`): connects to a
//! `hello_server`, sends one request and prints the response.
//!
//! `hello_client SERVER_ADDR` (for example 127.0.0.1:31850).

use erpc_dataplane::{Completion, SessionEvent};
use erpc_examples::{udp_endpoint, UdpRpc};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

const REQ_HELLO: u8 = 1;

#[derive(Default)]
struct Client {
    response: Option<Result<Vec<u8>, String>>,
    connect_failed: Option<String>,
}

fn on_response(rpc: &mut UdpRpc<Client>, c: Completion) {
    let r = c.result.map(|len| c.resp.data()[..len].to_vec()).map_err(|e| e.to_string());
    rpc.ctx_mut().response = Some(r);
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

fn on_session_event(rpc: &mut UdpRpc<Client>, e: SessionEvent) {
    if let SessionEvent::ConnectFailed(_, why) = e {
        rpc.ctx_mut().connect_failed = Some(why.to_string());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server: SocketAddrV4 = std::env::args().nth(1).ok_or("usage: hello_client SERVER_ADDR")?.parse()?;
    let mut rpc = udp_endpoint("127.0.0.1:0".parse()?, Client::default())?;
    rpc.set_session_handler(on_session_event);
    let session = rpc.create_session(server.into())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rpc.is_connected(session) {
        if let Some(why) = rpc.ctx_mut().connect_failed.take() {
            return Err(format!("connecting to {server}: {why}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("connecting to {server}: no answer within 5 s").into());
        }
        rpc.run_event_loop_once();
    }
    let req = rpc.alloc_msg_buffer(16)?;
    let resp = rpc.alloc_msg_buffer(16)?;
    rpc.enqueue_request(session, REQ_HELLO, req, resp, on_response, 0)?;
    while rpc.ctx().response.is_none() {
        rpc.run_event_loop_once();
    }
    let resp = rpc.ctx_mut().response.take().expect("set above")?;
    println!("response: {}", String::from_utf8_lossy(&resp));
    Ok(())
}
