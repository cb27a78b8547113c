//! Raw UDP ping-pong on loopback, one datagram outstanding, between two busy threads: plain
//! system calls (`send` and a spinning non-blocking `recv`, as `erpc bench latency --transport
//! udp` and its raw reference do) against the ways io_uring can run the same exchange:
//!
//! * `uring-defer`: `IORING_SETUP_DEFER_TASKRUN` (kernel 6.1+, with `SINGLE_ISSUER` and `COOP_TASKRUN`); the thread submits its send and
//!   receive in one `io_uring_enter` and then spins on `io_uring_enter(GETEVENTS)`, which runs the
//!   receive's deferred completion when a datagram has arrived;
//! * `uring-signal`: a default ring; the thread spins on the completion queue in user space and
//!   the kernel delivers the completion by interrupting it (task work with `TWA_SIGNAL`);
//! * `uring-wait`: a default ring; the thread sleeps in `io_uring_enter` until the completion;
//! * `uring-sqpoll`: `IORING_SETUP_SQPOLL`; a kernel thread per ring polls the submission queue
//!   and the user thread spins on the completion queue: no system call at all, but a third and
//!   fourth busy thread (meaningless on fewer than four cores).
//!
//! The io_uring facts used here are from `io_uring_setup(2)` and `io_uring_enter(2)` (liburing's
//! manual pages).

use clap::{Parser, ValueEnum};
use io_uring::{opcode, types, IoUring};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Mode {
    Syscalls,
    UringDefer,
    UringSignal,
    UringWait,
    UringSqpoll,
}

#[derive(Parser)]
#[command(about = "Raw UDP ping-pong on loopback: system calls against io_uring")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Rounds; each round measures every mode once, in the order given.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Datagram size, both ways, bytes.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Modes to measure.
    #[arg(long, value_delimiter = ',', default_values = ["syscalls", "uring-defer", "uring-signal", "uring-wait"])]
    modes: Vec<Mode>,
}

const BUF: usize = 2048;
const RECV: u64 = 1;
const SEND: u64 = 2;
const CANCEL: u64 = 3;
/// `IORING_ENTER_GETEVENTS` of Linux's `include/uapi/linux/io_uring.h`.
const IORING_ENTER_GETEVENTS: u32 = 1;

/// One socket's ring, with the buffers its operations name.
struct Ring {
    ring: IoUring,
    mode: Mode,
    fd: i32,
    rx: Box<[u8; BUF]>,
    tx: Vec<u8>,
    /// Where sends go; `None` on a connected socket.
    to: Option<Box<libc::sockaddr_in>>,
    /// Receives and sends submitted and not yet completed.
    posted: usize,
}

impl Ring {
    fn new(s: &UdpSocket, mode: Mode, to: Option<SocketAddrV4>, size: usize) -> std::io::Result<Ring> {
        let ring = match mode {
            Mode::UringDefer => {
                IoUring::builder().setup_single_issuer().setup_coop_taskrun().setup_defer_taskrun().build(64)?
            }
            Mode::UringSqpoll => IoUring::builder().setup_sqpoll(1000).build(64)?,
            _ => IoUring::new(64)?,
        };
        let to = to.map(|to| {
            // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = to.port().to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
            Box::new(sa)
        });
        Ok(Ring { ring, mode, fd: s.as_raw_fd(), rx: Box::new([0; BUF]), tx: vec![7; size], to, posted: 0 })
    }

    fn post(&mut self, e: io_uring::squeue::Entry) {
        self.posted += 1;
        self.push(e);
    }

    fn push(&mut self, e: io_uring::squeue::Entry) {
        // SAFETY: every buffer an entry names (`rx`, `tx`, `to`) is owned by this struct, on
        // the heap, and outlives the operation: an operation still posted when the struct goes
        // is cancelled and reaped first (`Drop`), and `rx` is not read while a receive is
        // posted, nor `tx` changed while a send is.
        unsafe { self.ring.submission().push(&e).expect("the submission queue has room") };
    }

    fn post_recv(&mut self) {
        let e = opcode::Recv::new(types::Fd(self.fd), self.rx.as_mut_ptr(), BUF as u32).build().user_data(RECV);
        self.post(e);
    }

    fn post_send(&mut self) {
        let mut op = opcode::Send::new(types::Fd(self.fd), self.tx.as_ptr(), self.tx.len() as u32);
        if let Some(to) = &self.to {
            op = op
                .dest_addr(&**to as *const libc::sockaddr_in as *const libc::sockaddr)
                .dest_addr_len(std::mem::size_of::<libc::sockaddr_in>() as u32);
        }
        self.post(op.build().user_data(SEND));
    }

    fn submit(&mut self) -> std::io::Result<()> {
        self.ring.submit().map(|_| ())
    }

    /// Spins or sleeps, as the mode does, until the posted receive completes; false if `stop`
    /// was raised first.
    fn wait_recv(&mut self, stop: &AtomicBool) -> std::io::Result<bool> {
        loop {
            match self.mode {
                Mode::UringWait => {
                    self.ring.submit_and_wait(1)?;
                }
                Mode::UringDefer => {
                    // Deferred completions run only inside an enter that carries GETEVENTS.
                    // SAFETY: no submissions, no argument: the call only reaps completions.
                    unsafe { self.ring.submitter().enter::<libc::sigset_t>(0, 0, IORING_ENTER_GETEVENTS, None)? };
                }
                Mode::UringSqpoll => {
                    if self.ring.submission().need_wakeup() {
                        self.submit()?;
                    }
                }
                Mode::UringSignal | Mode::Syscalls => {}
            }
            let mut got = false;
            for c in self.ring.completion() {
                self.posted -= 1;
                if c.result() < 0 {
                    return Err(std::io::Error::from_raw_os_error(-c.result()));
                }
                got |= c.user_data() == RECV;
            }
            if got {
                return Ok(true);
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
        }
    }
}

impl Drop for Ring {
    /// Cancels what is still posted (an armed receive) and waits for the kernel to let go of
    /// its buffers before they are freed.
    fn drop(&mut self) {
        if self.posted == 0 {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(CANCEL);
        self.push(cancel);
        let mut cancelled = false;
        while self.posted > 0 || !cancelled {
            if self.ring.submit_and_wait(1).is_err() {
                // The ring is unusable: leak the buffers rather than free memory the kernel
                // may still write.
                std::mem::forget(std::mem::replace(&mut self.rx, Box::new([0; BUF])));
                std::mem::forget(std::mem::take(&mut self.tx));
                std::mem::forget(self.to.take());
                return;
            }
            for c in self.ring.completion() {
                match c.user_data() {
                    CANCEL => cancelled = true,
                    _ => self.posted -= 1,
                }
            }
        }
    }
}

fn echo_syscalls(s: &UdpSocket, stop: &AtomicBool) -> std::io::Result<()> {
    s.set_nonblocking(true)?;
    let mut b = [0u8; BUF];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut b) {
            s.send_to(&b[..n], from)?;
        }
    }
    Ok(())
}

fn echo_uring(s: &UdpSocket, mode: Mode, to: SocketAddrV4, size: usize, stop: &AtomicBool) -> std::io::Result<()> {
    let mut r = Ring::new(s, mode, Some(to), size)?;
    r.post_recv();
    r.submit()?;
    while r.wait_recv(stop)? {
        r.post_send();
        r.post_recv();
        r.submit()?;
    }
    Ok(())
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
    }
}

/// One measurement: round trips per second and the sorted round-trip times, ns.
fn measure(mode: Mode, secs: f64, size: usize) -> std::io::Result<(f64, Vec<u64>)> {
    let srv = UdpSocket::bind("127.0.0.1:0")?;
    let cli = UdpSocket::bind("127.0.0.1:0")?;
    let (sa, ca) = (v4(srv.local_addr()?), v4(cli.local_addr()?));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let echo = std::thread::spawn(move || match mode {
        Mode::Syscalls => echo_syscalls(&srv, &st),
        m => echo_uring(&srv, m, ca, size, &st),
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut rtt = Vec::with_capacity(1 << 20);
    let (t0, end) = (Instant::now(), Duration::from_secs_f64(secs));
    let never = AtomicBool::new(false);
    match mode {
        Mode::Syscalls => {
            cli.set_nonblocking(true)?;
            cli.connect(sa)?;
            let (mut b, p) = ([0u8; BUF], vec![7u8; size]);
            while t0.elapsed() < end {
                let t = Instant::now();
                cli.send(&p)?;
                while cli.recv(&mut b).is_err() {}
                rtt.push(t.elapsed().as_nanos() as u64);
            }
        }
        m => {
            // Connected, as the system-call client's socket: no address per send.
            cli.connect(sa)?;
            let mut r = Ring::new(&cli, m, None, size)?;
            while t0.elapsed() < end {
                let t = Instant::now();
                r.post_recv();
                r.post_send();
                r.submit()?;
                r.wait_recv(&never)?;
                rtt.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // A sleeping echo (uring-wait) needs one more datagram to see the flag.
    let _ = cli.send_to(&[0u8; 1], sa);
    echo.join().expect("the echo thread panicked")?;
    rtt.sort_unstable();
    Ok((rtt.len() as f64 / secs, rtt))
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    println!("{:>5} {:>14} {:>16} {:>10} {:>10}", "round", "mode", "round trips/s", "p50 us", "p99 us");
    for round in 0..a.rounds {
        for &m in &a.modes {
            let (rate, rtt) = measure(m, a.duration, a.size)?;
            if rtt.is_empty() {
                println!("{round:>5} {:>14} no round trip completed", format!("{m:?}"));
                continue;
            }
            let q = |f: f64| rtt[((rtt.len() as f64 * f) as usize).min(rtt.len() - 1)] as f64 / 1000.0;
            let name = format!("{m:?}");
            println!("{round:>5} {name:>14} {rate:>16.0} {:>10.2} {:>10.2}", q(0.5), q(0.99));
        }
    }
    Ok(())
}
