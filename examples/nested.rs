//! Nested RPCs: a handler that issues its own RPC and answers its request later, once that RPC
//! has completed (the article's "the handler need not enqueue a response before returning").
//!
//! Three endpoints over UDP on loopback, each on its own thread, as in a deployment: a *back*
//! server that upper-cases its request, a *front* server whose handler asks the back server and
//! answers "front: <back's answer>", and a client (this thread) that sends a few requests to
//! the front and checks the answers.

use erpc_dataplane::{Completion, HandlerMode, ReqHandle, SessionId};
use erpc_examples::{udp_endpoint, UdpRpc};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const REQ_UPPER: u8 = 1;
const REQ_FRONT: u8 = 2;

type Error = Box<dyn std::error::Error>;

/// Serves on a thread of its own until `stop`; sends its address back once it is ready.
fn spawn_server<Ctx: Send + 'static>(
    name: &'static str,
    ctx: impl FnOnce() -> Ctx + Send + 'static,
    setup: fn(&mut UdpRpc<Ctx>) -> Result<(), String>,
    stop: Arc<AtomicBool>,
) -> Result<(SocketAddrV4, std::thread::JoinHandle<()>), Error> {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut rpc = match udp_endpoint("127.0.0.1:0".parse().expect("address"), ctx()) {
            Ok(r) => r,
            Err(e) => return drop(tx.send(Err(e.to_string()))),
        };
        if let Err(e) = setup(&mut rpc) {
            return drop(tx.send(Err(e)));
        }
        let a = rpc.local_addr();
        let _ = tx.send(Ok(SocketAddrV4::from(a)));
        while !stop.load(Ordering::Relaxed) {
            rpc.run_event_loop_once();
        }
    })?;
    let addr = rx.recv()?.map_err(|e| format!("{name}: {e}"))?;
    Ok((addr, t))
}

/// Runs `rpc`'s event loop until `s` is connected (5 s at most).
fn connect<Ctx>(rpc: &mut UdpRpc<Ctx>, to: SocketAddrV4) -> Result<SessionId, String> {
    let s = rpc.create_session(to.into()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rpc.is_connected(s) {
        if Instant::now() > deadline {
            return Err(format!("no answer from {to} within 5 s"));
        }
        rpc.run_event_loop_once();
    }
    Ok(s)
}

// ----- the back server -----

fn upper(rpc: &mut UdpRpc<()>, h: ReqHandle) {
    let Some(req) = rpc.request(&h).map(|r| r.to_ascii_uppercase()) else { return };
    let Ok(mut resp) = rpc.alloc_msg_buffer(req.len()) else { return };
    resp.data_mut().copy_from_slice(&req);
    if let Err(e) = rpc.enqueue_response(h, resp) {
        if let Some(b) = e.resp {
            let _ = rpc.free_msg_buffer(b);
        }
    }
}

// ----- the front server: its handler is a client of the back server -----

struct Front {
    back: SessionId,
    /// Requests waiting for the back server's answer, by the tag of that RPC.
    waiting: Vec<Option<ReqHandle>>,
}

fn front(rpc: &mut UdpRpc<Front>, h: ReqHandle) {
    let Some(data) = rpc.request(&h).map(<[u8]>::to_vec) else { return };
    let (Ok(mut req), Ok(resp)) = (rpc.alloc_msg_buffer(data.len()), rpc.alloc_msg_buffer(data.len())) else {
        return; // no memory: the client retransmits and we try again
    };
    req.data_mut().copy_from_slice(&data);
    let tag = rpc.ctx().waiting.iter().position(Option::is_none).unwrap_or(rpc.ctx().waiting.len());
    let back = rpc.ctx().back;
    match rpc.enqueue_request(back, REQ_UPPER, req, resp, back_done, tag as u64) {
        Ok(()) => {
            let w = &mut rpc.ctx_mut().waiting;
            if tag == w.len() {
                w.push(None);
            }
            w[tag] = Some(h);
        }
        Err(e) => {
            let _ = rpc.free_msg_buffer(e.req);
            let _ = rpc.free_msg_buffer(e.resp);
        }
    }
    // The handler returns without answering: `back_done` answers later.
}

fn back_done(rpc: &mut UdpRpc<Front>, c: Completion) {
    let h = rpc.ctx_mut().waiting[c.tag as usize].take().expect("a waiting request");
    let answer = match c.result {
        Ok(len) => [b"front: ", &c.resp.data()[..len]].concat(),
        Err(e) => format!("front: the back server failed: {e}").into_bytes(),
    };
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
    let Ok(mut resp) = rpc.alloc_msg_buffer(answer.len()) else { return };
    resp.data_mut().copy_from_slice(&answer);
    if let Err(e) = rpc.enqueue_response(h, resp) {
        if let Some(b) = e.resp {
            let _ = rpc.free_msg_buffer(b);
        }
    }
}

// ----- the client -----

#[derive(Default)]
struct Client {
    answers: Vec<(u64, Result<Vec<u8>, String>)>,
}

fn answered(rpc: &mut UdpRpc<Client>, c: Completion) {
    let r = c.result.map(|len| c.resp.data()[..len].to_vec()).map_err(|e| e.to_string());
    rpc.ctx_mut().answers.push((c.tag, r));
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

fn main() -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let (back_addr, back) = spawn_server(
        "back",
        || (),
        |rpc| rpc.register_handler(REQ_UPPER, upper, HandlerMode::Foreground).map_err(|e| e.to_string()),
        stop.clone(),
    )?;
    // The front server connects to the back server before it serves (the address goes through
    // a static: `setup` is a plain function).
    static BACK: std::sync::OnceLock<SocketAddrV4> = std::sync::OnceLock::new();
    BACK.set(back_addr).expect("set once");
    let (front_addr, front_t) = spawn_server(
        "front",
        || Front { back: SessionId(0), waiting: Vec::new() },
        |rpc| {
            rpc.ctx_mut().back = connect(rpc, *BACK.get().expect("set"))?;
            rpc.register_handler(REQ_FRONT, front, HandlerMode::Foreground).map_err(|e| e.to_string())
        },
        stop.clone(),
    )?;

    let mut rpc = udp_endpoint("127.0.0.1:0".parse()?, Client::default())?;
    let s = connect(&mut rpc, front_addr)?;
    let words = ["nested", "rpcs", "in", "rust"];
    for (i, w) in words.iter().enumerate() {
        let mut req = rpc.alloc_msg_buffer(w.len())?;
        req.data_mut().copy_from_slice(w.as_bytes());
        let resp = rpc.alloc_msg_buffer(64)?;
        rpc.enqueue_request(s, REQ_FRONT, req, resp, answered, i as u64)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while rpc.ctx().answers.len() < words.len() && Instant::now() < deadline {
        rpc.run_event_loop_once();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = (back.join(), front_t.join());
    let mut answers = std::mem::take(&mut rpc.ctx_mut().answers);
    answers.sort_by_key(|(tag, _)| *tag);
    if answers.len() < words.len() {
        return Err(format!("only {} of {} answers within 10 s", answers.len(), words.len()).into());
    }
    for (tag, a) in answers {
        let a = a?;
        let want = format!("front: {}", words[tag as usize].to_uppercase());
        if a != want.as_bytes() {
            return Err(format!("request {tag}: got {:?}, want {want:?}", String::from_utf8_lossy(&a)).into());
        }
        println!("{}", String::from_utf8_lossy(&a));
    }
    Ok(())
}
