//! `erpc grpc-bench`: the peer system eRPC is compared with — gRPC with tonic over TCP on
//! loopback, a unary echo service — measured the way `erpc bench` measures eRPC, and printed with
//! the same `--json` keys.
//!
//! Both ends run in this process, each on its own OS thread with its own one-thread tokio
//! runtime (`current_thread`), as the two ends of `erpc bench` over UDP run on one thread each:
//!
//! * the server: tonic's HTTP/2 server on 127.0.0.1 (an ephemeral port), every connection and
//!   stream task on that one thread: a single-core server;
//! * the client: one tonic `Channel` (one HTTP/2 connection), `--concurrency` tasks each with one
//!   RPC in flight (eRPC: one session with that many requests in flight).
//!
//! The service and client are what `tonic-build` generates (see `build.rs`), with prost messages
//! carrying one `bytes` field (`bytes::Bytes`, so payloads are not copied per RPC). Everything
//! else is tonic's default (TCP_NODELAY on, no TLS, no compression), except the message size
//! limits, which are raised to eRPC's largest message. tonic's axum router is left out: the one
//! service is served directly (it still matches the method path).
//!
//! Besides the keys of `erpc bench --json`, the JSON object has `server_cpu` and `client_cpu`
//! (the share of a core each thread used while measuring, from its CPU-time clock) and
//! `rpcs_per_server_cpu_sec`: the two ends take turns rather than keep each other busy, so the
//! rate is the pair's, and this is what the server's core would do at the same cost per RPC.

use crate::bench::{print_figures, report_json, Mode, Report};
use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use prost::bytes::Bytes;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(clippy::all, missing_docs, unreachable_pub)]
mod stubs {
    include!(concat!(env!("OUT_DIR"), "/erpc.bench.Echo.rs"));
}
use stubs::echo_client::EchoClient;
use stubs::echo_server::{Echo, EchoServer};

/// The echo request: `message EchoRequest { bytes data = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

/// The echo response: `message EchoResponse { bytes data = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GrpcMode {
    /// Round-trip time of one outstanding RPC (HdrHistogram percentiles).
    Latency,
    /// RPCs per second with `--concurrency` outstanding, against a one-thread server.
    Rate,
}

#[derive(Args, Debug)]
pub struct GrpcBenchArgs {
    #[arg(value_enum)]
    mode: GrpcMode,
    /// Request size in bytes (the `bytes` field).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Response size in bytes (the `bytes` field).
    #[arg(long, default_value_t = 32)]
    resp_size: usize,
    /// RPCs in flight on the one connection (default: 1 for latency, 8 for rate, as `erpc bench`).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measurement time in seconds (after 200 ms of warm-up).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Print one JSON object (the keys of `erpc bench --json`) instead of text.
    #[arg(long)]
    json: bool,
}

/// The `transport` of the JSON object.
pub const TRANSPORT: &str = "grpc-tonic-tcp";

pub fn run(a: GrpcBenchArgs) -> anyhow::Result<()> {
    if !(a.duration > 0.0 && a.duration <= 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds, not {}", a.duration);
    }
    let conc = a.concurrency.unwrap_or(match a.mode {
        GrpcMode::Latency => 1,
        GrpcMode::Rate => 8,
    });
    if conc == 0 || conc > 64 {
        bail!("--concurrency must be 1..=64, not {conc}");
    }
    let max = erpc_dataplane::config::MAX_MSG_SIZE;
    if a.size > max || a.resp_size > max {
        bail!("message sizes are limited to {max} bytes (as in erpc bench)");
    }
    let mode = match a.mode {
        GrpcMode::Latency => Mode::Latency,
        GrpcMode::Rate => Mode::Rate,
    };
    let srv = Server::start(a.resp_size)?;
    let m = measure(srv.addr, mode, a.size, a.resp_size, conc, a.duration, Some(srv.cpu_clock));
    let stopped = srv.stop();
    let m = m?;
    stopped?;
    let r = Report {
        mode,
        req: a.size,
        resp: a.resp_size,
        conc,
        secs: m.secs,
        rpcs: m.rpcs,
        bytes: m.rpcs * (a.size + a.resp_size) as u64,
        failed: 0,
        retransmissions: 0,
        deferred_frees: 0,
        cc: false,
        hist: m.hist,
        reference: "",
        reference_pps: f64::NAN,
        reference_p50_us: None,
        reference_trips: 0,
        memcpy_gbps: None,
    };
    // RPCs per second of the server thread's CPU time: what the one-thread server would do if the
    // client kept it busy (the two ends tend to take turns, so it is rarely busy all the time).
    let per_server_cpu_s = m.server_cpu.map(|c| r.rpcs as f64 / (c * r.secs));
    if a.json {
        let mut o = report_json(&r, TRANSPORT);
        // Not observable through tonic (the kernel's TCP retransmits and runs its own congestion
        // control); an RPC that fails ends the run with an error instead of being counted.
        for k in ["retransmissions", "server_deferred_frees", "cc"] {
            o[k] = serde_json::Value::Null;
        }
        o["server_cpu"] = m.server_cpu.into();
        o["client_cpu"] = m.client_cpu.into();
        o["rpcs_per_server_cpu_sec"] = per_server_cpu_s.into();
        println!("{o}");
        return Ok(());
    }
    println!(
        "erpc grpc-bench {}: tonic over TCP on loopback, {} B requests, {} B responses, {} outstanding, {:.2} s",
        r.mode.name(),
        r.req,
        r.resp,
        r.conc,
        r.secs
    );
    print_figures(&r);
    println!(
        "  CPU:              server thread {:.2} of a core ({:.3} M RPCs per server CPU-second), client thread {:.2}",
        m.server_cpu.unwrap_or(f64::NAN),
        per_server_cpu_s.unwrap_or(f64::NAN) / 1e6,
        m.client_cpu.unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The echo service: every request is answered with the same `resp`-byte payload.
struct EchoService {
    resp: Bytes,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, _req: tonic::Request<EchoRequest>) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        Ok(tonic::Response::new(EchoResponse { data: self.resp.clone() }))
    }
}

/// Largest encoded message either end accepts: eRPC's largest message plus the field's tag and
/// length.
const MAX_ENCODED: usize = erpc_dataplane::config::MAX_MSG_SIZE + 16;

/// A tonic server on its own thread with a one-thread runtime.
pub(crate) struct Server {
    pub addr: SocketAddr,
    /// The server thread's CPU-time clock.
    cpu_clock: libc::clockid_t,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Starts a server answering `resp`-byte responses on 127.0.0.1 (an ephemeral port).
    pub(crate) fn start(resp: usize) -> anyhow::Result<Server> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("grpc-server".into())
            .spawn(move || match Self::serve(resp, &ready_tx, stop_rx) {
                Ok(()) => Ok(()),
                // To `start` while it waits; once it has returned, to `stop`.
                Err(e) => match ready_tx.send(Err(e)) {
                    Ok(()) => Ok(()),
                    Err(std::sync::mpsc::SendError(r)) => r.map(|_| ()),
                },
            })
            .context("cannot start the gRPC server thread")?;
        match ready_rx.recv() {
            Ok(Ok((addr, cpu_clock))) => Ok(Server { addr, cpu_clock, stop, thread }),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("the gRPC server thread died"),
        }
    }

    fn serve(
        resp: usize,
        ready: &std::sync::mpsc::Sender<anyhow::Result<(SocketAddr, libc::clockid_t)>>,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the gRPC server's runtime")?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("gRPC server: cannot listen on 127.0.0.1")?;
            let addr = listener.local_addr().context("gRPC server")?;
            let _ = ready.send(Ok((addr, this_thread_cpu_clock()?)));
            let svc = EchoServer::new(EchoService { resp: Bytes::from(vec![0x5A; resp]) })
                .max_decoding_message_size(MAX_ENCODED)
                .max_encoding_message_size(MAX_ENCODED);
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(svc, incoming, async {
                    let _ = stop.await;
                })
                .await
                .map_err(|e| anyhow!(crate::one_line(&e)).context("gRPC server"))
        })
    }

    /// Stops the server (after its connections close) and joins its thread.
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.thread.join().map_err(|_| anyhow!("the gRPC server thread panicked"))?
    }
}

/// What the client measured.
pub(crate) struct Measured {
    pub secs: f64,
    pub rpcs: u64,
    pub hist: Option<Histogram<u64>>,
    /// Fractions of one core that the server's and the client's thread used while measuring.
    pub server_cpu: Option<f64>,
    pub client_cpu: Option<f64>,
}

const WARMUP: u8 = 0;
const MEASURING: u8 = 1;
const STOP: u8 = 2;

/// Connects to the echo server at `addr` on a one-thread runtime on this thread, keeps `conc`
/// RPCs of `req` bytes in flight, warms up for 200 ms, then measures for `secs`. Every response
/// must carry `resp` bytes. Latency runs time every RPC.
pub(crate) fn measure(
    addr: SocketAddr,
    mode: Mode,
    req: usize,
    resp: usize,
    conc: usize,
    secs: f64,
    server_cpu_clock: Option<libc::clockid_t>,
) -> anyhow::Result<Measured> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the gRPC client's runtime")?;
    rt.block_on(async move {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| anyhow!(crate::one_line(&e)))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| anyhow!(crate::one_line(&e)))
            .with_context(|| format!("cannot connect to the gRPC server at {addr}"))?;
        let client = EchoClient::new(ch).max_decoding_message_size(MAX_ENCODED).max_encoding_message_size(MAX_ENCODED);
        let payload = Bytes::from(vec![0xA5; req]);
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let timed = mode == Mode::Latency;
        let tasks: Vec<_> = (0..conc)
            .map(|_| tokio::spawn(caller(client.clone(), payload.clone(), resp, phase.clone(), timed)))
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu0 = (thread_cpu_secs(server_cpu_clock), thread_cpu_secs(this_thread_cpu_clock().ok()));
        phase.store(MEASURING, Ordering::Relaxed);
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(secs);
        // Wake every 10 ms to end early if a caller failed.
        while Instant::now() < end && !tasks.iter().any(|t| t.is_finished()) {
            tokio::time::sleep((end - Instant::now()).min(Duration::from_millis(10))).await;
        }
        phase.store(STOP, Ordering::Relaxed);
        let el = start.elapsed().as_secs_f64();
        let cpu1 = (thread_cpu_secs(server_cpu_clock), thread_cpu_secs(this_thread_cpu_clock().ok()));
        let share = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / el);
        let mut m = Measured {
            secs: el,
            rpcs: 0,
            hist: timed.then(|| Histogram::new(3).expect("histogram")),
            server_cpu: share(cpu0.0, cpu1.0),
            client_cpu: share(cpu0.1, cpu1.1),
        };
        for t in tasks {
            let (n, h) = t.await.context("a gRPC client task failed")??;
            m.rpcs += n;
            if let (Some(all), Some(h)) = (m.hist.as_mut(), h) {
                all.add(h).context("adding up the latency histograms")?;
            }
        }
        Ok(m)
    })
}

/// One RPC in flight at a time until told to stop; returns the RPCs completed while measuring
/// and, if `timed`, their round-trip times in nanoseconds.
async fn caller(
    mut client: EchoClient<tonic::transport::Channel>,
    payload: Bytes,
    resp: usize,
    phase: Arc<AtomicU8>,
    timed: bool,
) -> anyhow::Result<(u64, Option<Histogram<u64>>)> {
    let mut hist = timed.then(|| Histogram::<u64>::new(3).expect("histogram"));
    let mut n = 0u64;
    loop {
        if phase.load(Ordering::Relaxed) == STOP {
            return Ok((n, hist));
        }
        let t0 = timed.then(Instant::now);
        let r = client
            .echo(EchoRequest { data: payload.clone() })
            .await
            .map_err(|s| anyhow!("the gRPC echo RPC failed: {}: {}", s.code(), s.message().replace('\n', " ")))?;
        let got = r.get_ref().data.len();
        if got != resp {
            bail!("the gRPC server answered {got} bytes where {resp} were expected");
        }
        // Counted if it completed while measuring, as `erpc bench` counts.
        if phase.load(Ordering::Relaxed) == MEASURING {
            n += 1;
            if let (Some(h), Some(t0)) = (hist.as_mut(), t0) {
                let _ = h.record((t0.elapsed().as_nanos() as u64).max(1));
            }
        }
    }
}

/// The CPU-time clock of the calling thread, readable from other threads while it lives.
fn this_thread_cpu_clock() -> anyhow::Result<libc::clockid_t> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self() is the calling thread, `id` is a valid out-pointer.
    let e = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    if e != 0 {
        return Err(std::io::Error::from_raw_os_error(e)).context("reading the thread's CPU-time clock");
    }
    Ok(id)
}

/// Seconds of CPU time on a thread CPU-time clock.
fn thread_cpu_secs(clock: Option<libc::clockid_t>) -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; a bad clock id is an error return, not UB.
    (unsafe { libc::clock_gettime(clock?, &mut ts) } == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mode: GrpcMode) -> GrpcBenchArgs {
        GrpcBenchArgs { mode, size: 32, resp_size: 32, concurrency: None, duration: 0.05, json: true }
    }

    #[test]
    fn echo_round_trips_and_counts() {
        let srv = Server::start(100).unwrap();
        let m = measure(srv.addr, Mode::Latency, 10, 100, 2, 0.1, Some(srv.cpu_clock)).unwrap();
        srv.stop().unwrap();
        let h = m.hist.expect("latency runs keep a histogram");
        assert!(m.rpcs > 0 && h.len() == m.rpcs, "{} RPCs, {} samples", m.rpcs, h.len());
        assert!(m.server_cpu.is_some_and(|c| c > 0.0 && c <= 1.1), "{:?}", m.server_cpu);
        assert!(m.client_cpu.is_some_and(|c| c > 0.0 && c <= 1.1), "{:?}", m.client_cpu);
    }

    #[test]
    fn a_wrong_size_response_is_one_line_error() {
        let srv = Server::start(16).unwrap();
        let e = measure(srv.addr, Mode::Rate, 32, 32, 4, 5.0, None).err().expect("must fail");
        srv.stop().unwrap();
        assert_eq!(format!("{e:#}"), "the gRPC server answered 16 bytes where 32 were expected");
    }

    #[test]
    fn no_server_is_one_line_error() {
        // A port that was just free: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = format!("{:#}", measure(addr, Mode::Latency, 32, 32, 1, 0.1, None).err().expect("must fail"));
        assert!(e.starts_with(&format!("cannot connect to the gRPC server at {addr}: ")), "{e}");
        assert!(e.to_lowercase().contains("refused") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_arguments_are_refused_before_anything_runs() {
        let max = erpc_dataplane::config::MAX_MSG_SIZE;
        let rate = || args(GrpcMode::Rate);
        for (a, want) in [
            (GrpcBenchArgs { concurrency: Some(0), ..rate() }, "--concurrency must be 1..=64, not 0"),
            (GrpcBenchArgs { concurrency: Some(65), ..rate() }, "--concurrency must be 1..=64, not 65"),
            (GrpcBenchArgs { duration: 0.0, ..rate() }, "--duration must be"),
            (GrpcBenchArgs { duration: f64::NAN, ..rate() }, "--duration must be"),
            (GrpcBenchArgs { size: max + 1, ..rate() }, "message sizes are limited to"),
            (GrpcBenchArgs { resp_size: usize::MAX, ..args(GrpcMode::Latency) }, "message sizes are limited to"),
        ] {
            let e = format!("{:#}", run(a).expect_err("must fail"));
            assert!(e.starts_with(want) && !e.contains('\n'), "{e}");
        }
    }
}
