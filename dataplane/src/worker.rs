//! Long-running handlers: hand-off to worker threads through thread-safe queues.
//!
//! A request type registered with [`crate::HandlerMode::Background`]
//! is not run on the dispatch thread. When its last packet arrives, the endpoint allocates a
//! response buffer and pushes a [`BgJob`] (the request, the response buffer, a handle) onto
//! [`BgQueues::jobs`]. A worker takes it, fills `resp`, and pushes it onto [`BgQueues::done`];
//! the dispatch thread's event loop picks it up and sends the response. Workers never touch
//! the endpoint: only msgbufs cross threads, and each is owned by exactly one side at a time.
//!
//! The queues are lock-free and no_std (`heapless::mpmc`). If `jobs` is full the request waits
//! on the endpoint (in arrival order) and is handed over as space frees up. A pool of threads
//! that serves the queues is [`WorkerPool`] (with the `std` feature).

use crate::clock::Clock;
use crate::handlers::{HandlerMode, ReqHandle};
use crate::msgbuf::MsgBuf;
use crate::rpc::Rpc;
use crate::transport::Transport;
use crate::wire::MAX_PKT_NUM;

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

/// The worker queues an endpoint is attached to: borrowed, or with `std` shared through an
/// `Arc` with the workers (then nothing needs to outlive the endpoint).
pub enum WorkerQueues<'m> {
    Borrowed(&'m BgQueues),
    #[cfg(feature = "std")]
    Shared(std::sync::Arc<BgQueues>),
}

impl core::ops::Deref for WorkerQueues<'_> {
    type Target = BgQueues;
    #[inline]
    fn deref(&self) -> &BgQueues {
        match self {
            WorkerQueues::Borrowed(q) => q,
            #[cfg(feature = "std")]
            WorkerQueues::Shared(q) => q,
        }
    }
}

impl<'m> From<&'m BgQueues> for WorkerQueues<'m> {
    fn from(q: &'m BgQueues) -> Self {
        WorkerQueues::Borrowed(q)
    }
}

#[cfg(feature = "std")]
impl From<std::sync::Arc<BgQueues>> for WorkerQueues<'_> {
    fn from(q: std::sync::Arc<BgQueues>) -> Self {
        WorkerQueues::Shared(q)
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

// ----- the dispatch thread's side -----

impl<'m, T: Transport, C: Clock, Ctx> Rpc<'m, T, C, Ctx> {
    /// Moves finished worker jobs back into their slots and sends their responses; hands waiting
    /// requests to the workers.
    pub(crate) fn process_bg(&mut self) {
        while let Some(job) = self.bg.as_ref().and_then(|q| q.done.dequeue()) {
            self.finish_bg_job(job);
        }
        self.pump_bg();
    }

    /// Hands requests waiting for a worker to the job queue, in arrival order, while it has room
    /// and a response buffer can be allocated.
    pub(crate) fn pump_bg(&mut self) {
        if self.bg.is_none() {
            return;
        }
        while let Some(id) = self.bg_pending.head() {
            let (s, i) = (id.session(), id.slot());
            let req_type = self.sessions.slot(id).req_type;
            let entry = self.handlers.get(req_type);
            let HandlerMode::Background { max_resp_size } = entry.mode else {
                // Re-registered as a foreground handler meanwhile: run it here.
                self.bg_pending.remove(&mut self.sessions, id);
                let handle = self.handle_of(s, i);
                if let Some(f) = entry.f {
                    f(self, handle);
                }
                continue;
            };
            // No larger than any response this request can have (16383-packet bound).
            let req_pkts = self.sessions.slot(id).req_pkts as usize;
            let max = max_resp_size.min(self.cfg.max_msg_size).min((MAX_PKT_NUM + 2 - req_pkts) * self.data_per_pkt);
            let Ok(resp) = self.alloc_msg_buffer(max) else {
                return; // retry next iteration
            };
            let handle = self.handle_of(s, i);
            let req = self.sessions.slot_mut(id).req.take().expect("request of a pending background job");
            let q = self.bg.as_ref().expect("checked above");
            match q.jobs.enqueue(BgJob { handle, req_type, req, resp }) {
                Ok(()) => self.bg_pending.remove(&mut self.sessions, id),
                Err(job) => {
                    self.sessions.slot_mut(id).req = Some(job.req);
                    let _ = self.heap.free(job.resp);
                    return;
                }
            }
        }
    }

    fn finish_bg_job(&mut self, job: BgJob) {
        let BgJob { handle, req, resp, .. } = job;
        if self.valid_handle(&handle) {
            self.sessions.slot_mut(handle.slot).req = Some(req);
            if let Err(e) = self.enqueue_response(handle, resp) {
                // A response the worker made unusable (a buffer of another endpoint, or resized
                // beyond bounds): answer empty rather than leave the client waiting forever.
                if let Some(b) = e.resp {
                    let _ = self.heap.free(b);
                }
                let _ = self.enqueue_response_prealloc(handle, 0);
            }
        } else {
            let _ = self.heap.free(req);
            let _ = self.heap.free(resp);
        }
    }
}
