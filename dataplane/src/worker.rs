//! Long-running handlers: hand-off to worker threads through thread-safe queues.
//!
//! A request type registered with [`HandlerMode::Background`](crate::HandlerMode::Background)
//! is not run on the dispatch thread. When its last packet arrives, the endpoint allocates a
//! response buffer and pushes a [`BgJob`] (the request, the response buffer, a handle) onto
//! [`BgQueues::jobs`]. A worker takes it, fills `resp`, and pushes it onto [`BgQueues::done`];
//! the dispatch thread's event loop picks it up and sends the response. Workers never touch
//! the endpoint: only msgbufs cross threads, and each is owned by exactly one side at a time.
//!
//! The queues are lock-free and no_std (`heapless::mpmc`). If `jobs` is full the request waits
//! on the endpoint (in arrival order) and is handed over as space frees up. A pool of threads
//! that serves the queues is [`WorkerPool`] (with the `std` feature).

use crate::msgbuf::MsgBuf;
use crate::rpc::ReqHandle;

/// Capacity of each queue.
pub const BG_QUEUE_DEPTH: usize = 64;

/// One request for a worker, and (on the way back) its response.
#[derive(Debug)]
pub struct BgJob {
    pub handle: ReqHandle,
    pub req_type: u8,
    /// The request; read-only for the worker.
    pub req: MsgBuf,
    /// The response buffer (capacity `max_resp_size` of the registration): the worker writes
    /// the response and sets its length with `resize`.
    pub resp: MsgBuf,
}

/// The two queues between one endpoint and its workers.
pub struct BgQueues {
    pub jobs: heapless::mpmc::MpMcQueue<BgJob, BG_QUEUE_DEPTH>,
    pub done: heapless::mpmc::MpMcQueue<BgJob, BG_QUEUE_DEPTH>,
}

impl BgQueues {
    pub const fn new() -> Self {
        BgQueues { jobs: heapless::mpmc::MpMcQueue::new(), done: heapless::mpmc::MpMcQueue::new() }
    }
}

impl Default for BgQueues {
    fn default() -> Self {
        Self::new()
    }
}

/// Worker threads serving one endpoint's [`BgQueues`]. Dropping the pool stops and joins them.
#[cfg(feature = "std")]
pub struct WorkerPool {
    stop: std::sync::Arc<core::sync::atomic::AtomicBool>,
    threads: std::vec::Vec<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "std")]
impl WorkerPool {
    /// Starts `n` threads that run `handler` on each job (it must set the response length).
    pub fn start<F>(queues: std::sync::Arc<BgQueues>, n: usize, handler: F) -> Self
    where
        F: Fn(&mut BgJob) + Send + Sync + 'static,
    {
        use core::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let handler = std::sync::Arc::new(handler);
        let threads = (0..n)
            .map(|i| {
                let (q, stop, h) = (queues.clone(), stop.clone(), handler.clone());
                std::thread::Builder::new()
                    .name(std::format!("erpc-worker-{i}"))
                    .spawn(move || {
                        let mut idle = 0u32;
                        while !stop.load(Ordering::Relaxed) {
                            match q.jobs.dequeue() {
                                Some(mut job) => {
                                    idle = 0;
                                    h(&mut job);
                                    let mut job = job;
                                    while let Err(j) = q.done.enqueue(job) {
                                        job = j;
                                        std::thread::yield_now();
                                    }
                                }
                                None => {
                                    idle += 1;
                                    if idle < 64 {
                                        core::hint::spin_loop();
                                    } else {
                                        std::thread::sleep(std::time::Duration::from_micros(20));
                                    }
                                }
                            }
                        }
                    })
                    .expect("spawn worker thread")
            })
            .collect();
        WorkerPool { stop, threads }
    }
}

#[cfg(feature = "std")]
impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop.store(true, core::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
