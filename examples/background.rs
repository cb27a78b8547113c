//! A long-running handler on worker threads (`HandlerMode::Background`): the dispatch thread
//! hands the request and a response buffer to a [`WorkerPool`], a worker computes the answer,
//! and the dispatch thread's event loop sends it. The event loop never waits for the handler.
//!
//! One process over UDP on loopback: a server thread (dispatch thread plus two workers) whose
//! handler computes a deliberately slow digest of its request, and a client (this thread) that
//! sends 32 requests, 8 in flight on its session and the rest in the backlog, and checks each
//! answer against the same digest computed locally.

use erpc_dataplane::worker::{BgJob, BgQueues, WorkerPool};
use erpc_dataplane::{Completion, HandlerMode, ReqHandle};
use erpc_examples::{udp_endpoint, UdpRpc};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const REQ_DIGEST: u8 = 1;
const REQUESTS: u64 = 32;

/// A slow digest (FNV-1a over the request, 20,000 rounds): the "long-running" work.
fn digest(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..20_000 {
        for &b in data {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Runs on a worker thread: reads the request, writes the 8-byte answer.
fn work(job: &mut BgJob) {
    let d = digest(job.req.data());
    job.resp.resize(8);
    job.resp.data_mut().copy_from_slice(&d.to_le_bytes());
}

/// Never called: background requests go to the workers.
fn unused(_: &mut UdpRpc<()>, _: ReqHandle) {}

#[derive(Default)]
struct Client {
    answers: Vec<(u64, Result<u64, String>)>,
}

fn answered(rpc: &mut UdpRpc<Client>, c: Completion) {
    let r = c
        .result
        .map_err(|e| e.to_string())
        .and_then(|len| c.resp.data()[..len].try_into().map(u64::from_le_bytes).map_err(|_| "short answer".into()));
    rpc.ctx_mut().answers.push((c.tag, r));
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

fn request_data(i: u64) -> Vec<u8> {
    format!("request number {i}").into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let queues = Arc::new(BgQueues::new());
            let _pool = WorkerPool::start(queues.clone(), 2, work);
            let mut rpc = match udp_endpoint("127.0.0.1:0".parse().expect("address"), ()) {
                Ok(r) => r,
                Err(e) => return drop(tx.send(Err(e.to_string()))),
            };
            rpc.attach_workers(queues);
            if let Err(e) = rpc.register_handler(REQ_DIGEST, unused, HandlerMode::Background { max_resp_size: 8 }) {
                return drop(tx.send(Err(e.to_string())));
            }
            let a = rpc.local_addr();
            let _ = tx.send(Ok(SocketAddrV4::from(a)));
            while !stop.load(Ordering::Relaxed) {
                rpc.run_event_loop_once();
            }
        })
    };
    let addr = rx.recv()?.map_err(|e| format!("server: {e}"))?;

    let mut rpc = udp_endpoint("127.0.0.1:0".parse()?, Client::default())?;
    let s = rpc.create_session(addr.into())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rpc.is_connected(s) {
        if Instant::now() > deadline {
            return Err(format!("no answer from {addr} within 5 s").into());
        }
        rpc.run_event_loop_once();
    }
    let started = Instant::now();
    for i in 0..REQUESTS {
        let data = request_data(i);
        let mut req = rpc.alloc_msg_buffer(data.len())?;
        req.data_mut().copy_from_slice(&data);
        let resp = rpc.alloc_msg_buffer(8)?;
        rpc.enqueue_request(s, REQ_DIGEST, req, resp, answered, i)?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (rpc.ctx().answers.len() as u64) < REQUESTS && Instant::now() < deadline {
        rpc.run_event_loop_once();
    }
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let answers = std::mem::take(&mut rpc.ctx_mut().answers);
    if (answers.len() as u64) < REQUESTS {
        return Err(format!("only {} of {REQUESTS} answers within 30 s", answers.len()).into());
    }
    for (tag, a) in answers {
        let got = a?;
        let want = digest(&request_data(tag));
        if got != want {
            return Err(format!("request {tag}: digest {got:#x}, want {want:#x}").into());
        }
    }
    println!("{REQUESTS} digests computed by the workers, all correct, in {:?}", started.elapsed());
    Ok(())
}
