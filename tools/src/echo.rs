//! `erpc echo`: checks a server byte for byte. Sends requests of the given sizes, filled with a
//! pattern of their own, to a server's echo service and compares every response with its
//! request; optionally asks the server to shut down afterwards.
//!
//! The echo service answers a request of type [`ECHO_REQ_TYPE`] with the request's bytes. `erpc
//! bench --server` serves it, and so does the bare-metal appliance (`tools/appliance`), which
//! also serves [`SHUTDOWN_REQ_TYPE`] when booted with `shutdown=allow`.

use crate::endpoints::{client_bind, clock, connect, memory, region_bytes, udp, Clk, ConnectState};
use anyhow::{bail, Context};
use erpc_dataplane::*;
use erpc_driver::udp::UdpTransport;
use rand_core::{RngCore, SeedableRng};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// The echo service's request type: the response is the request, byte for byte.
pub const ECHO_REQ_TYPE: u8 = 2;
/// A shutdown request (any body): answered with one byte, 1 if the server stops (after
/// answering) or 0 if it refuses.
pub const SHUTDOWN_REQ_TYPE: u8 = 3;

#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// The server: the appliance, or `erpc bench --server` (e.g. 10.0.0.2:31850).
    #[arg(long)]
    pub connect: SocketAddrV4,
    /// This end's UDP address (needed unless the server is on loopback; port 0 picks one).
    #[arg(long)]
    pub bind: Option<SocketAddrV4>,
    /// Request sizes in bytes, comma-separated (up to 8 MiB each); requests take them in turn.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    pub sizes: Vec<usize>,
    /// Requests of each size.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Requests outstanding at a time.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Give up when the run takes longer than this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// After the run, ask the server to shut down (the appliance booted with shutdown=allow).
    #[arg(long)]
    pub shutdown: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The largest request size `--sizes` takes.
const MAX_SIZE: usize = 8 << 20;

/// The random stream behind request `k`'s bytes.
fn stream(k: u64) -> rand_xoshiro::Xoshiro256PlusPlus {
    rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(k ^ 0x6572_7063_6563_686f)
}

/// The bytes of request number `k` (`len` of them): a pseudo-random stream seeded by `k`, so
/// every request differs and a response holding another request's bytes is caught.
pub fn pattern(k: u64, out: &mut [u8]) {
    stream(k).fill_bytes(out);
}

/// Where a response differs from request `k`'s pattern: `None` if it is the same, byte for byte.
/// Regenerates the pattern a chunk at a time (whole words of the stream, so the chunks continue
/// it exactly as one `fill_bytes` would), with no allocation per response.
pub fn first_difference(k: u64, resp: &[u8], want_len: usize) -> Option<usize> {
    if resp.len() != want_len {
        return Some(resp.len().min(want_len));
    }
    let mut rng = stream(k);
    let mut want = [0u8; 4096];
    for (c, got) in resp.chunks(want.len()).enumerate() {
        let want = &mut want[..got.len()];
        rng.fill_bytes(want);
        if let Some(at) = got.iter().zip(want.iter()).position(|(a, b)| a != b) {
            return Some(c * 4096 + at);
        }
    }
    None
}

/// The echo client's context.
#[derive(Default)]
struct Echo {
    session: Option<SessionId>,
    sizes: Vec<usize>,
    total: u64,
    next: u64,
    done: u64,
    failed: u64,
    mismatched: u64,
    bytes: u64,
    first_error: Option<String>,
    /// The shutdown's answer: whether the server accepted it.
    shutdown_done: Option<Result<bool, RpcError>>,
    connect_failure: Option<SmError>,
}

impl ConnectState for Echo {
    fn connect_failure(&mut self) -> &mut Option<SmError> {
        &mut self.connect_failure
    }
}

type EchoRpc = Rpc<'static, UdpTransport, Clk, Echo>;

/// Issues the next request, if any are left.
fn issue(rpc: &mut EchoRpc) {
    let ctx = rpc.ctx_mut();
    if ctx.next >= ctx.total {
        return;
    }
    let k = ctx.next;
    ctx.next += 1;
    let n = ctx.sizes[(k % ctx.sizes.len() as u64) as usize];
    let s = ctx.session.expect("connected");
    let (Ok(mut req), Ok(resp)) = (rpc.alloc_msg_buffer(n), rpc.alloc_msg_buffer(n)) else {
        let ctx = rpc.ctx_mut();
        ctx.done += 1;
        ctx.failed += 1;
        ctx.first_error.get_or_insert_with(|| format!("no msgbuf memory for a {n}-byte request"));
        return;
    };
    pattern(k, req.data_mut());
    if let Err(e) = rpc.enqueue_request(s, ECHO_REQ_TYPE, req, resp, on_echo, k) {
        let ctx = rpc.ctx_mut();
        ctx.done += 1;
        ctx.failed += 1;
        ctx.first_error.get_or_insert_with(|| format!("request {k} ({n} bytes): {}", e.kind));
        let _ = rpc.free_msg_buffer(e.req);
        let _ = rpc.free_msg_buffer(e.resp);
    }
}

fn on_echo(rpc: &mut EchoRpc, c: Completion) {
    let ctx = rpc.ctx_mut();
    ctx.done += 1;
    let k = c.tag;
    match c.result {
        Ok(n) => match first_difference(k, &c.resp.data()[..n], c.req.len()) {
            None => ctx.bytes += 2 * n as u64,
            Some(at) => {
                ctx.mismatched += 1;
                ctx.first_error.get_or_insert_with(|| {
                    format!("request {k} ({} bytes): the response ({n} bytes) differs at byte {at}", c.req.len())
                });
            }
        },
        Err(e) => {
            ctx.failed += 1;
            ctx.first_error.get_or_insert_with(|| format!("request {k} ({} bytes) failed: {e}", c.req.len()));
        }
    }
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
    issue(rpc);
}

fn on_shutdown(rpc: &mut EchoRpc, c: Completion) {
    let accepted = matches!(c.result, Ok(n) if n >= 1 && c.resp.data()[0] == 1);
    rpc.ctx_mut().shutdown_done = Some(c.result.map(|_| accepted));
    let _ = rpc.free_msg_buffer(c.req);
    let _ = rpc.free_msg_buffer(c.resp);
}

/// Runs `erpc echo`.
pub fn run(a: EchoArgs) -> anyhow::Result<()> {
    if a.sizes.is_empty() || a.sizes.iter().any(|&n| n == 0 || n > MAX_SIZE) {
        bail!("--sizes must be 1..={MAX_SIZE} bytes each");
    }
    if !(1..=64).contains(&a.concurrency) {
        bail!("--concurrency must be 1..=64");
    }
    let max = *a.sizes.iter().max().expect("checked non-empty");
    let cfg = crate::endpoints::rpc_config(1514, true);
    let t = udp(client_bind(a.connect, a.bind)?)?;
    let mem = memory(region_bytes(max, max, a.concurrency, 1400));
    let ctx = Echo { sizes: a.sizes.clone(), total: a.count * a.sizes.len() as u64, ..Default::default() };
    let mut rpc = Rpc::new(t, clock(), ctx, mem, cfg).context("building the echo client endpoint")?;
    let what = format!("udp {}", a.connect);
    let s = connect(&mut rpc, &mut || {}, EndpointAddr::from(a.connect), &what)?;
    rpc.ctx_mut().session = Some(s);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(a.timeout);
    for _ in 0..a.concurrency {
        issue(&mut rpc);
    }
    while rpc.ctx().done < rpc.ctx().next || rpc.ctx().next < rpc.ctx().total {
        rpc.run_event_loop_once();
        if Instant::now() > deadline {
            let c = rpc.ctx();
            bail!(
                "echo to {what}: {} of {} requests answered after {} s: is the server still running?",
                c.done,
                c.total,
                a.timeout
            );
        }
        if rpc.ctx().next == rpc.ctx().done && rpc.ctx().next < rpc.ctx().total {
            // Nothing outstanding (the last requests could not be sent): carry on.
            issue(&mut rpc);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let st = *rpc.stats();
    if a.shutdown {
        let (req, resp) = (rpc.alloc_msg_buffer(1)?, rpc.alloc_msg_buffer(64)?);
        if let Err(e) = rpc.enqueue_request(s, SHUTDOWN_REQ_TYPE, req, resp, on_shutdown, 0) {
            bail!("sending the shutdown request: {}", e.kind);
        }
        while rpc.ctx().shutdown_done.is_none() {
            rpc.run_event_loop_once();
            if Instant::now() > deadline {
                bail!("{what} did not answer the shutdown request within {} s", a.timeout);
            }
        }
        match rpc.ctx().shutdown_done {
            Some(Err(e)) => bail!("the shutdown request to {what} failed: {e}"),
            Some(Ok(false)) => bail!(
                "{what} refused to shut down: the appliance stops on request only when booted with shutdown=allow"
            ),
            _ => {}
        }
    }
    let c = rpc.ctx();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "server": a.connect.to_string(),
                "sizes": a.sizes,
                "rpcs": c.done,
                "failed": c.failed,
                "mismatched": c.mismatched,
                "bytes": c.bytes,
                "secs": secs,
                "retransmissions": st.retransmissions,
                "shutdown": a.shutdown,
            })
        );
    } else {
        println!(
            "echo: {} RPCs to {what} (sizes {:?}), {} failed, {} differed; {:.1} MB checked in {secs:.2} s, {} \
             retransmissions{}",
            c.done,
            a.sizes,
            c.failed,
            c.mismatched,
            c.bytes as f64 / 1e6,
            st.retransmissions,
            if a.shutdown { "; the server shut down" } else { "" }
        );
    }
    if c.failed + c.mismatched > 0 {
        bail!(
            "echo to {what}: {} of {} RPCs failed and {} responses differed from their requests; the first: {}",
            c.failed,
            c.total,
            c.mismatched,
            c.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// The echo service, for a server endpoint of any context: answers with the request's bytes.
pub(crate) fn echo_handler<T: Transport, Ctx>(rpc: &mut Rpc<'static, T, Clk, Ctx>, h: ReqHandle) {
    let n = rpc.request(&h).map_or(0, <[u8]>::len);
    if n <= rpc.max_data_per_pkt() {
        let _ = rpc.respond_prealloc_with(h, |req, resp| {
            resp[..req.len()].copy_from_slice(req);
            req.len()
        });
    } else if let Ok(mut b) = rpc.alloc_msg_buffer(n) {
        if let Some(req) = rpc.request(&h) {
            b.data_mut().copy_from_slice(req);
        }
        let _ = rpc.enqueue_response(h, b);
    }
    // Out of msgbuf memory: no answer; the client's request times out and says so.
}

/// The shutdown service of a server that never stops on request: answers 0 (refused).
pub(crate) fn refuse_shutdown<T: Transport, Ctx>(rpc: &mut Rpc<'static, T, Clk, Ctx>, h: ReqHandle) {
    let _ = rpc.respond_prealloc_with(h, |_, resp| {
        resp[0] = 0;
        1
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_must_be_its_own_request_byte_for_byte() {
        let mut r = vec![0u8; 3 << 20];
        pattern(7, &mut r);
        assert_eq!(first_difference(7, &r, 3 << 20), None, "chunks continue the stream");
        r[(3 << 20) - 1] ^= 0x80;
        assert_eq!(first_difference(7, &r, 3 << 20), Some((3 << 20) - 1), "the last byte");
        let mut r = vec![0u8; 5000];
        pattern(7, &mut r);
        assert_eq!(first_difference(7, &r, 5000), None);
        assert_eq!(first_difference(8, &r, 5000), Some(0), "another request's bytes");
        assert_eq!(first_difference(7, &r[..4999], 5000), Some(4999), "one byte short");
        r[4321] ^= 1;
        assert_eq!(first_difference(7, &r, 5000), Some(4321), "one bit flipped");
    }
}
