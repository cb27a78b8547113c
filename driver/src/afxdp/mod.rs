//! An AF_XDP socket as a [`Transport`]: raw Ethernet frames of one receive queue, without a
//! NIC given to VFIO and without the kernel's UDP stack in the path.
//!
//! # How it fits together
//! * **UMEM** — one hugepage mapping registered with the socket (`XDP_UMEM_REG`, unaligned
//!   chunks): the receive frames first, then the dataplane's region (msgbufs), so transmitted
//!   packets are sent straight from msgbufs. The region's IOVA is its offset in the UMEM, which
//!   is what TX descriptors carry.
//! * **Rings** (`ring`) — fill (frames the kernel may receive into), RX, TX and completion,
//!   mapped from the socket and driven here.
//! * **XDP program** (`bpf`) — some thirty raw eBPF instructions that redirect IPv4/UDP frames
//!   to our address and the port of the queue they arrived on into that queue's socket (an
//!   XSKMAP slot per queue) and pass everything else, such as ARP, to the kernel. It is loaded
//!   with `bpf(2)` and attached as a BPF link, so closing the link — when the interface's last
//!   socket and handle are dropped, on an error part-way through, or when the process dies —
//!   detaches it.
//!
//! # Buffer ownership
//! RX frames are lent to the dataplane straight from the UMEM and returned to the fill ring,
//! in any order, when released. In copy mode, completions already on the ring are taken right
//! after each `sendto` that wakes the kernel: a completion is written when the kernel frees the
//! frame's skb, which on a veth happens inside that `sendto` (the peer's receive runs in the
//! softirq its transmit raises on the same CPU), so there `tx_reclaimed` is current when
//! `tx_burst` returns and the dataplane reuses buffers at once. Where the skb is freed later (a
//! NIC driver's TX completion, virtio_net, which sends copy-mode frames from the UMEM pages) and
//! in zero-copy mode, completions are picked up by a later kick, when the TX window fills, or in
//! [`Transport::tx_flush`], which returns once every accepted packet has completed. A packet
//! with a header and a data segment goes out as a two-descriptor multi-buffer frame
//! (`XDP_PKT_CONTD`, Linux 6.6 or later).
//!
//! # Modes
//! Copy mode ([`BindMode::Copy`], the default) works on every interface, veth included. With
//! [`BindMode::ZeroCopy`] on a driver that supports it, each segment is also split at 4 KiB
//! page boundaries, since the kernel refuses a zero-copy descriptor that crosses pages it did
//! not find DMA-contiguous.
//!
//! # Several endpoints: one socket per interface queue
//! An interface carries one XDP program. [`AfXdpInterface`] attaches it once per process; each
//! endpoint then gets its own socket on its own queue ([`AfXdpInterface::open_queue`]), with its
//! own UMEM and rings, so endpoints on different threads share nothing on the datapath. The
//! program redirects a frame to the socket of the queue it arrived on when its destination port
//! is that queue's endpoint's (an array map, queue → port); anything else goes to the kernel.
//! The NIC must steer each endpoint's port to its queue: on a multi-queue NIC with a flow rule
//! per endpoint,
//! `ethtool -N <if> flow-type udp4 dst-ip <address> dst-port <port> action <queue>`
//! (and `ethtool -K <if> ntuple on` first; `ethtool -n <if>` lists the rules). A veth delivers
//! what its peer sends on transmit queue *k* to receive queue *k*, so endpoint *k* of one end
//! reaches endpoint *k* of the other. [`AfXdpTransport::open`] is the single-endpoint case.
//!
//! Tests: `tests/tests/afxdp.rs` (root; a veth pair between two network namespaces made for the
//! test): the loopback scenarios with 3 MB messages and 1% loss, the program attached and
//! detached (also after every failed open, each error saying why), ARP through the program,
//! forged releases and descriptors outside the UMEM dropped and counted, a flush across a downed
//! link; `tools/tests/cli.rs` runs `erpc bench --transport afxdp` on a veth pair.

mod bpf;
mod netif;
mod ring;

pub use bpf::{port_map_value, xdp_redirect_program, BpfInsn};

use erpc_dataplane::dma::DmaRegion;
use erpc_dataplane::transport::{EndpointAddr, ResolveError, RxPacket, Transport, TxPacket};
use erpc_dataplane::wire::{RoutingInfo, HEADROOM};
use erpc_hugepages::{DmaError, Memory, PageSize};
use ring::Ring;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes the kernel keeps in front of each received frame in a chunk (`XDP_PACKET_HEADROOM`).
const XDP_PACKET_HEADROOM: u32 = 256;
/// In unaligned-chunk mode an RX address carries the frame's offset in its top 16 bits
/// (`XSK_UNALIGNED_BUF_OFFSET_SHIFT` of `linux/if_xdp.h`).
const UNALIGNED_OFFSET_SHIFT: u32 = 48;
const UNALIGNED_ADDR_MASK: u64 = (1 << UNALIGNED_OFFSET_SHIFT) - 1;
/// The kernel's page size, at whose boundaries zero-copy descriptors are split.
const KERNEL_PAGE: usize = 4096;

/// How long a bind retries while the queue is busy: a socket of the queue closed just before
/// (by a process that just exited, say) is released by the kernel in deferred work.
const BIND_BUSY_WAIT: Duration = Duration::from_secs(2);

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// Native (driver) mode if the driver has it, else generic; but generic on a veth with one
    /// receive queue. There, with copy-mode sockets at both ends, generic mode gave a median
    /// round trip of 0.78–0.96 times native's, the rate 0.95–1.16 times (`BENCHMARKS.md`,
    /// "Generic XDP on a single-queue veth"). A veth with several queues stays native: in
    /// generic mode its frames all reached the program as queue 0's, and sockets on the other
    /// queues received nothing. (The queue count comes from `ETHTOOL_GCHANNELS`; a kernel whose
    /// veth does not answer it, older ones, keeps veth native. Checked on Linux 6.18.)
    Auto,
    /// In the driver's receive path (`XDP_FLAGS_DRV_MODE`); veth and most NIC drivers.
    Native,
    /// After the kernel built an skb (`XDP_FLAGS_SKB_MODE`): any interface, slower.
    Generic,
}

/// Whether `interface` is a veth with one receive queue (see [`XdpAttach::Auto`]). An interface
/// whose driver or queues cannot be read is not.
fn single_queue_veth(interface: &str) -> bool {
    netif::driver(interface).is_ok_and(|d| d == "veth") && netif::rx_queues(interface).is_ok_and(|n| n == 1)
}

/// How the socket moves frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// The kernel copies frames between the UMEM and its own buffers (`XDP_COPY`): any driver.
    Copy,
    /// The NIC DMAs to and from the UMEM (`XDP_ZEROCOPY`): only drivers that support it.
    ZeroCopy,
}

/// Settings of an [`AfXdpTransport`].
#[derive(Clone, Debug)]
pub struct AfXdpConfig {
    /// The interface (in the calling thread's network namespace).
    pub interface: String,
    /// The receive queue to bind.
    pub queue: u32,
    /// This endpoint's UDP port: frames to it are redirected to the socket.
    pub udp_port: u16,
    /// This endpoint's IPv4 address; `None` takes the interface's first one.
    pub ipv4: Option<Ipv4Addr>,
    /// Bytes per receive frame (UMEM chunk): 2048 or 4096.
    pub frame_size: u32,
    /// Receive frames (a power of two): the fill and RX rings have as many entries.
    pub rx_frames: u32,
    /// TX and completion ring entries (a power of two); also the TX window in packets.
    pub tx_ring: u32,
    /// Size of the dataplane's region (msgbufs) inside the UMEM.
    pub region_bytes: usize,
    /// Pages backing the UMEM.
    pub page: PageSize,
    /// Largest frame including the 42-byte headroom; clamped to the interface's MTU.
    pub mtu: usize,
    pub attach: XdpAttach,
    pub bind: BindMode,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            interface: String::new(),
            queue: 0,
            udp_port: 31850,
            ipv4: None,
            frame_size: 2048,
            rx_frames: 4096,
            tx_ring: 2048,
            region_bytes: 32 << 20,
            page: PageSize::Huge2M,
            mtu: 1514,
            attach: XdpAttach::Auto,
            bind: BindMode::Copy,
        }
    }
}

/// Why an AF_XDP transport could not be opened. Each message says what to do.
#[derive(Debug)]
pub enum AfXdpError {
    /// No such interface in this network namespace.
    NoInterface(String),
    /// The interface has no IPv4 address and none was configured.
    NoAddress(String),
    /// The configured IPv4 address is not one of this host's (`held`: the interface's).
    NotOurAddress { interface: String, ipv4: Ipv4Addr, held: Vec<Ipv4Addr> },
    /// A setting out of range.
    Config(String),
    /// The UMEM could not be allocated (no hugepages, …).
    Memory(DmaError),
    /// A step of the socket setup failed.
    Socket { step: &'static str, error: io::Error },
    /// Binding the socket to the interface queue failed.
    Bind { interface: String, queue: u32, mode: BindMode, error: io::Error },
    /// Creating the XSKMAP or loading the program failed (with the verifier's log, if any).
    Bpf { step: &'static str, error: io::Error, log: String },
    /// Attaching the XDP program to the interface failed.
    Attach { interface: String, error: io::Error },
}

fn needs_root(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

impl fmt::Display for AfXdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ROOT: &str = "AF_XDP and XDP programs need CAP_NET_RAW, CAP_NET_ADMIN and CAP_BPF: run as root";
        match self {
            AfXdpError::NoInterface(i) => {
                write!(f, "no interface `{i}` in this network namespace: `ip link` lists the interfaces")
            }
            AfXdpError::NoAddress(i) => write!(
                f,
                "interface `{i}` has no IPv4 address: add one (ip addr add 10.0.0.1/24 dev {i}) or configure the \
                 endpoint's address"
            ),
            AfXdpError::NotOurAddress { interface, ipv4, held } => {
                let held: Vec<String> = held.iter().map(|a| a.to_string()).collect();
                write!(
                    f,
                    "{ipv4} is not an address of this host, so nothing could reach the endpoint there: use one of \
                     `{interface}`'s ({}) or add it (ip addr add {ipv4}/PREFIX dev {interface})",
                    if held.is_empty() { "it has none".to_string() } else { held.join(", ") }
                )
            }
            AfXdpError::Config(m) => write!(f, "bad AF_XDP setting: {m}"),
            AfXdpError::Memory(e) => write!(f, "allocating the AF_XDP UMEM failed: {e}"),
            AfXdpError::Socket { error, .. } if needs_root(error) => write!(f, "{ROOT}"),
            AfXdpError::Socket { step, error } if *step == "socket" => write!(
                f,
                "cannot create an AF_XDP socket ({error}): the kernel needs CONFIG_XDP_SOCKETS (Linux 4.18 or later)"
            ),
            AfXdpError::Socket { step, error } => write!(f, "AF_XDP setup failed at {step}: {error}"),
            AfXdpError::Bind { error, .. } if needs_root(error) => write!(f, "{ROOT}"),
            AfXdpError::Bind { interface, queue, mode, error } => match error.raw_os_error() {
                Some(libc::EBUSY) => write!(
                    f,
                    "queue {queue} of `{interface}` already has an AF_XDP socket or zero-copy user: stop the other \
                     program or use another queue"
                ),
                Some(libc::EOPNOTSUPP) if *mode == BindMode::ZeroCopy => write!(
                    f,
                    "`{interface}`'s driver cannot do zero-copy AF_XDP with multi-buffer frames: use copy mode"
                ),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => write!(
                    f,
                    "binding an AF_XDP socket to queue {queue} of `{interface}` failed ({error}): the queue must exist \
                     (ethtool -l {interface}) and the kernel must support multi-buffer AF_XDP (Linux 6.6 or later)"
                ),
                _ => write!(f, "binding an AF_XDP socket to queue {queue} of `{interface}` failed: {error}"),
            },
            AfXdpError::Bpf { error, .. } if needs_root(error) => write!(f, "{ROOT}"),
            AfXdpError::Bpf { step, error, log } => {
                write!(f, "{step} failed: {error}")?;
                if !log.is_empty() {
                    write!(f, "; verifier log: {}", log.trim_end().replace('\n', " | "))?;
                }
                Ok(())
            }
            AfXdpError::Attach { error, .. } if needs_root(error) => write!(f, "{ROOT}"),
            AfXdpError::Attach { interface, error } => match error.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => write!(
                    f,
                    "`{interface}` already has an XDP program: detach it (ip link set dev {interface} xdp off) or use \
                     another interface"
                ),
                Some(libc::EINVAL) => write!(
                    f,
                    "attaching the XDP program to `{interface}` failed ({error}): XDP links need Linux 5.9 or later, \
                     and native mode needs driver support (try generic mode)"
                ),
                _ => write!(f, "attaching the XDP program to `{interface}` failed: {error}"),
            },
        }
    }
}

impl std::error::Error for AfXdpError {
    /// The OS or memory error underneath (its text is part of this error's message where it
    /// helps).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AfXdpError::Memory(e) => Some(e),
            AfXdpError::Socket { error, .. }
            | AfXdpError::Bind { error, .. }
            | AfXdpError::Bpf { error, .. }
            | AfXdpError::Attach { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<DmaError> for AfXdpError {
    fn from(e: DmaError) -> Self {
        AfXdpError::Memory(e)
    }
}

/// Counters of the transport itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfXdpStats {
    pub rx_frames: u64,
    pub tx_packets: u64,
    /// TX descriptors completed by the kernel.
    pub tx_completed_descs: u64,
    /// RX descriptors that did not name one of our frames, or a frame already lent: ignored.
    pub rx_bad_desc: u64,
    /// Frames that arrived in several buffers (larger than a frame): dropped whole.
    pub rx_multi_buffer: u64,
    /// `rx_release` of an id that was not lent: ignored.
    pub rx_bad_release: u64,
    /// Packets to send that were not eRPC frames within the UMEM region and MTU: dropped.
    pub tx_malformed: u64,
    /// `sendto` wake-ups of the kernel's transmit path.
    pub tx_kicks: u64,
    /// Wake-ups that failed for a reason other than a full queue (interface down, …).
    pub tx_kick_errors: u64,
    pub tx_flushes: u64,
    /// `tx_flush` calls that waited more than a second (the interface was down).
    pub tx_flush_stalls: u64,
    /// The interface disappeared (`ENXIO`): nothing is sent any more.
    pub interface_gone: bool,
    /// Resolutions reported unreachable for now: the peer's MAC was not (yet) in the kernel's
    /// neighbour table.
    pub resolve_pending: u64,
    /// Reads of the kernel's neighbour table that failed.
    pub neighbour_read_failures: u64,
    /// `wait_rx` calls that blocked in `ppoll`.
    pub rx_waits: u64,
}

/// The kernel's counters of the socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskKernelStats {
    /// Frames dropped for reasons other than an invalid descriptor (e.g. a full RX ring).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket bound to one interface queue: one endpoint's packet I/O. Its interface's
/// XDP program redirects the queue's frames for the endpoint's port to it.
pub struct AfXdpTransport {
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    sock: OwnedFd,
    // Dropped last: the kernel releases the UMEM when the socket closes.
    umem: Memory,
    local: EndpointAddr,
    interface: String,
    attach: XdpAttach,
    queue: u32,
    zero_copy: bool,
    mtu: usize,
    /// log2 of the frame size: frames are found by shifts, not divisions, per packet.
    frame_shift: u32,
    rx_frames: u32,
    /// Offset of the dataplane region in the UMEM.
    region_off: usize,
    region_len: usize,
    lent: Vec<bool>,
    /// Within a multi-buffer RX frame being dropped.
    rx_dropping: bool,
    /// Descriptors of each accepted, not yet completed packet, in acceptance order (0 for a
    /// dropped malformed packet).
    pending: VecDeque<u8>,
    /// Descriptors accepted and not completed, and completed ones not yet matched to a packet.
    outstanding_descs: u32,
    completed_unmatched: u32,
    reclaimed: u64,
    tx_unsent: bool,
    stats: AfXdpStats,
    neigh: netif::Neighbours,
    // Last: the interface's program is detached when its last socket (and handle) is gone.
    iface: Arc<Attachment>,
}

// SAFETY: the raw pointers point into this value's own mappings (rings, UMEM), which move with it;
// what it shares with the interface's other sockets (the maps, by fd) is behind an Arc and a Mutex.
unsafe impl Send for AfXdpTransport {}

impl Drop for AfXdpTransport {
    fn drop(&mut self) {
        // Stop redirecting to this socket before it closes: its port, then its slot.
        let a = &self.iface;
        let _ = bpf::map_set(a.ports.as_raw_fd(), self.queue, 0);
        let _ = bpf::xskmap_delete(a.xskmap.as_raw_fd(), self.queue);
        a.queues.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.queue);
    }
}

fn sock_err(step: &'static str) -> impl FnOnce(io::Error) -> AfXdpError {
    move |error| AfXdpError::Socket { step, error }
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: passes a live value of its own size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn desc(addr: u64, len: u32, options: u32) -> libc::xdp_desc {
    libc::xdp_desc { addr, len, options }
}

/// Splits `[off, off + len)` at `page` boundaries into at most two pieces.
fn split_at_page(off: usize, len: usize, page: usize) -> ([(usize, usize); 2], usize) {
    let end = off + len;
    let boundary = (off / page + 1) * page;
    if len == 0 || end <= boundary {
        ([(off, len), (0, 0)], 1)
    } else {
        ([(off, boundary - off), (boundary, end - boundary)], 2)
    }
}

/// Receive queues an interface's maps have slots for (XSKMAP and port map keys).
const MAX_QUEUES: u32 = 256;

/// The XDP program and maps of one interface, attached once per process and shared by the
/// AF_XDP sockets of its queues, one endpoint each ([`AfXdpInterface::open_queue`]). The
/// program redirects a frame to the socket of the queue it arrived on if its destination port
/// is that queue's endpoint's (see [`xdp_redirect_program`]): the NIC steers ports to queues.
/// It is detached when the handle and every socket opened from it are gone.
#[derive(Clone)]
pub struct AfXdpInterface {
    shared: Arc<Attachment>,
}

struct Attachment {
    // Dropped first: closing the link detaches the program, so no more frames are redirected.
    _link: OwnedFd,
    _prog: OwnedFd,
    xskmap: OwnedFd,
    ports: OwnedFd,
    interface: String,
    ifindex: u32,
    mac: [u8; 6],
    ipv4: Ipv4Addr,
    attach: XdpAttach,
    /// The UDP port of each queue that has a socket of ours.
    queues: Mutex<HashMap<u32, u16>>,
}

impl AfXdpInterface {
    /// Loads the XDP program for `interface` (in the calling thread's network namespace) and
    /// attaches it (`attach`); endpoints take `ipv4`, or the interface's first IPv4 address.
    /// Until a queue is opened it passes every frame to the kernel.
    pub fn open(interface: &str, ipv4: Option<Ipv4Addr>, attach: XdpAttach) -> Result<AfXdpInterface, AfXdpError> {
        let ifindex = netif::ifindex(interface).ok_or_else(|| AfXdpError::NoInterface(interface.into()))?;
        let mac = netif::mac(interface).map_err(sock_err("reading the interface's MAC"))?;
        let ipv4 = match ipv4 {
            Some(a) => {
                // The kernel answers ARP only for addresses of this host; for any other, no peer
                // could ever reach the endpoint. (Any interface may hold it: a label, `lo`, a
                // bridge master.)
                if !netif::is_local(a) {
                    let held = netif::ipv4_nets(interface).map_err(sock_err("reading the interface's addresses"))?;
                    let held = held.into_iter().map(|n| n.0).collect();
                    return Err(AfXdpError::NotOurAddress { interface: interface.into(), ipv4: a, held });
                }
                a
            }
            None => netif::ipv4(interface)
                .map_err(sock_err("reading the interface's address"))?
                .ok_or_else(|| AfXdpError::NoAddress(interface.into()))?,
        };
        let bpf_err = |step: &'static str| move |error| AfXdpError::Bpf { step, error, log: String::new() };
        let xskmap = bpf::create_xskmap(MAX_QUEUES).map_err(bpf_err("creating the XSKMAP"))?;
        let ports = bpf::create_port_map(MAX_QUEUES).map_err(bpf_err("creating the port map"))?;
        let code = bpf::xdp_redirect_program(xskmap.as_raw_fd(), ports.as_raw_fd(), ipv4.octets());
        let prog = bpf::load_xdp_program(&code).map_err(|(error, log)| AfXdpError::Bpf {
            step: "loading the XDP program",
            error,
            log,
        })?;
        let attach_err = |error| AfXdpError::Attach { interface: interface.into(), error };
        let (link, attach) = match attach {
            XdpAttach::Native => {
                (bpf::attach_xdp(prog.as_raw_fd(), ifindex, bpf::XDP_FLAGS_DRV_MODE).map_err(attach_err)?, attach)
            }
            XdpAttach::Generic => {
                (bpf::attach_xdp(prog.as_raw_fd(), ifindex, bpf::XDP_FLAGS_SKB_MODE).map_err(attach_err)?, attach)
            }
            XdpAttach::Auto if single_queue_veth(interface) => (
                bpf::attach_xdp(prog.as_raw_fd(), ifindex, bpf::XDP_FLAGS_SKB_MODE).map_err(attach_err)?,
                XdpAttach::Generic,
            ),
            XdpAttach::Auto => match bpf::attach_xdp(prog.as_raw_fd(), ifindex, bpf::XDP_FLAGS_DRV_MODE) {
                Ok(l) => (l, XdpAttach::Native),
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ERANGE)) =>
                {
                    (
                        bpf::attach_xdp(prog.as_raw_fd(), ifindex, bpf::XDP_FLAGS_SKB_MODE).map_err(attach_err)?,
                        XdpAttach::Generic,
                    )
                }
                Err(e) => return Err(attach_err(e)),
            },
        };
        log::info!("XDP program on {interface}: {attach:?}");
        Ok(AfXdpInterface {
            shared: Arc::new(Attachment {
                _link: link,
                _prog: prog,
                xskmap,
                ports,
                interface: interface.into(),
                ifindex,
                mac,
                ipv4,
                attach,
                queues: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Opens an AF_XDP socket on queue `cfg.queue` for an endpoint on UDP port `cfg.udp_port`
    /// (`cfg.interface`, `ipv4` and `attach` are the interface's), and has the program redirect
    /// that queue's frames for that port to it.
    pub fn open_queue(&self, cfg: AfXdpConfig) -> Result<AfXdpTransport, AfXdpError> {
        let a = &self.shared;
        if !cfg.interface.is_empty() && cfg.interface != a.interface {
            return Err(AfXdpError::Config(format!(
                "the configuration names `{}`, the interface is `{}`",
                cfg.interface, a.interface
            )));
        }
        check_config(&cfg)?;
        {
            let q = a.queues.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((queue, _)) = q.iter().find(|(_, &p)| p == cfg.udp_port) {
                return Err(AfXdpError::Config(format!(
                    "UDP port {} is already the endpoint's of queue {queue} on `{}`: give each endpoint its own port",
                    cfg.udp_port, a.interface
                )));
            }
        }
        let sock = BoundSocket::open(&cfg, &a.interface, a.ifindex)?;
        AfXdpTransport::finish(self.shared.clone(), sock, &cfg)
    }

    /// How the XDP program ended up attached (native or generic).
    pub fn attach_mode(&self) -> XdpAttach {
        self.shared.attach
    }

    pub fn interface(&self) -> &str {
        &self.shared.interface
    }

    /// The queues that have a socket of this process, with their endpoints' ports.
    pub fn queues(&self) -> Vec<(u32, u16)> {
        let mut v: Vec<(u32, u16)> =
            self.shared.queues.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(&q, &p)| (q, p)).collect();
        v.sort_unstable();
        v
    }
}

fn check_config(cfg: &AfXdpConfig) -> Result<(), AfXdpError> {
    let bad = |m: String| Err(AfXdpError::Config(m));
    if cfg.frame_size != 2048 && cfg.frame_size != 4096 {
        return bad(format!("frame_size must be 2048 or 4096, not {}", cfg.frame_size));
    }
    for (n, what) in [(cfg.rx_frames, "rx_frames"), (cfg.tx_ring, "tx_ring")] {
        if !n.is_power_of_two() || !(64..=1 << 16).contains(&n) {
            return bad(format!("{what} must be a power of two from 64 to 65536, not {n}"));
        }
    }
    let max_frame = (cfg.frame_size - XDP_PACKET_HEADROOM) as usize;
    if cfg.mtu < HEADROOM + 64 || cfg.mtu > max_frame {
        return bad(format!("mtu must be from {} to {max_frame} (frame size less XDP headroom)", HEADROOM + 64));
    }
    if cfg.region_bytes == 0 {
        return bad("region_bytes must not be 0".into());
    }
    if cfg.queue >= MAX_QUEUES {
        return bad(format!("queue must be below {MAX_QUEUES}, not {}", cfg.queue));
    }
    Ok(())
}

/// A socket with its UMEM and rings, bound to an interface queue, not yet in the XSKMAP.
struct BoundSocket {
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    sock: OwnedFd,
    umem: Memory,
    region_off: usize,
    region_len: usize,
    mtu: usize,
}

impl BoundSocket {
    /// Creates the socket and UMEM, and binds queue `cfg.queue` of `interface`.
    fn open(cfg: &AfXdpConfig, interface: &str, ifindex: u32) -> Result<BoundSocket, AfXdpError> {
        let mtu = cfg.mtu.min(netif::mtu(interface).map_err(sock_err("reading the interface's MTU"))? + 14);
        // UMEM: receive frames, then the dataplane region.
        let rx_area = cfg.rx_frames as usize * cfg.frame_size as usize;
        let region_off = rx_area.next_multiple_of(KERNEL_PAGE);
        let umem = Memory::new(region_off + cfg.region_bytes, cfg.page)?;
        let region_len = umem.len() - region_off;

        // SAFETY: creates a new socket; the result is checked and owned below.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(AfXdpError::Socket { step: "socket", error: io::Error::last_os_error() });
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let reg = libc::xdp_umem_reg {
            addr: umem.as_ptr().as_ptr() as u64,
            len: umem.len() as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: libc::XDP_UMEM_UNALIGNED_CHUNK_FLAG,
            tx_metadata_len: 0,
        };
        setsockopt(&sock, libc::XDP_UMEM_REG, &reg).map_err(sock_err("registering the UMEM"))?;
        setsockopt(&sock, libc::XDP_UMEM_FILL_RING, &cfg.rx_frames).map_err(sock_err("sizing the fill ring"))?;
        setsockopt(&sock, libc::XDP_UMEM_COMPLETION_RING, &cfg.tx_ring)
            .map_err(sock_err("sizing the completion ring"))?;
        setsockopt(&sock, libc::XDP_RX_RING, &cfg.rx_frames).map_err(sock_err("sizing the RX ring"))?;
        setsockopt(&sock, libc::XDP_TX_RING, &cfg.tx_ring).map_err(sock_err("sizing the TX ring"))?;
        let off: libc::xdp_mmap_offsets = getsockopt_offsets(&sock).map_err(sock_err("reading ring offsets"))?;
        let rx = Ring::map(&sock, &off.rx, cfg.rx_frames, libc::XDP_PGOFF_RX_RING as u64)
            .map_err(sock_err("mapping the RX ring"))?;
        let tx = Ring::map(&sock, &off.tx, cfg.tx_ring, libc::XDP_PGOFF_TX_RING as u64)
            .map_err(sock_err("mapping the TX ring"))?;
        let mut fill = Ring::map(&sock, &off.fr, cfg.rx_frames, libc::XDP_UMEM_PGOFF_FILL_RING)
            .map_err(sock_err("mapping the fill ring"))?;
        let comp = Ring::map(&sock, &off.cr, cfg.tx_ring, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
            .map_err(sock_err("mapping the completion ring"))?;
        // Every receive frame starts in the fill ring.
        for i in 0..cfg.rx_frames {
            fill.write(i, i as u64 * cfg.frame_size as u64);
        }
        fill.submit(cfg.rx_frames);

        let mode_flag = match cfg.bind {
            BindMode::Copy => libc::XDP_COPY,
            BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
        };
        let sxdp = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP | libc::XDP_USE_SG | mode_flag,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: cfg.queue,
            sxdp_shared_umem_fd: 0,
        };
        // A socket of this queue closed just before is released by the kernel asynchronously
        // (its buffer pool, in deferred work: some 20 ms later, but more than 200 ms on a busy
        // machine): `EBUSY` for a moment is not another user yet. A real other user is reported
        // after `BIND_BUSY_WAIT`.
        let t0 = Instant::now();
        loop {
            // SAFETY: binds our socket to a `sockaddr_xdp` of its own size.
            let r = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    (&sxdp as *const libc::sockaddr_xdp).cast(),
                    std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EBUSY) && t0.elapsed() < BIND_BUSY_WAIT {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            return Err(AfXdpError::Bind { interface: interface.into(), queue: cfg.queue, mode: cfg.bind, error });
        }

        Ok(BoundSocket { rx, tx, fill, comp, sock, umem, region_off, region_len, mtu })
    }
}

impl AfXdpTransport {
    /// Opens the interface (loads and attaches its XDP program) and one socket on queue
    /// `cfg.queue`: a single endpoint on the interface. For several, open an
    /// [`AfXdpInterface`] and a queue per endpoint. On any error everything created so far is
    /// released again.
    pub fn open(cfg: AfXdpConfig) -> Result<Self, AfXdpError> {
        check_config(&cfg)?;
        let ifindex = netif::ifindex(&cfg.interface).ok_or_else(|| AfXdpError::NoInterface(cfg.interface.clone()))?;
        // The queue first: a queue another program holds is the error to report, not its XDP
        // program.
        let sock = BoundSocket::open(&cfg, &cfg.interface, ifindex)?;
        let iface = AfXdpInterface::open(&cfg.interface, cfg.ipv4, cfg.attach)?;
        AfXdpTransport::finish(iface.shared, sock, &cfg)
    }

    /// Puts the bound socket into the interface's maps: its XSKMAP slot, then its port (which
    /// turns the redirect on).
    fn finish(iface: Arc<Attachment>, b: BoundSocket, cfg: &AfXdpConfig) -> Result<Self, AfXdpError> {
        let bpf_err = |step: &'static str| move |error| AfXdpError::Bpf { step, error, log: String::new() };
        bpf::xskmap_set(iface.xskmap.as_raw_fd(), cfg.queue, b.sock.as_raw_fd())
            .map_err(bpf_err("putting the socket into the XSKMAP"))?;
        if let Err(e) = bpf::map_set(iface.ports.as_raw_fd(), cfg.queue, bpf::port_map_value(cfg.udp_port)) {
            let _ = bpf::xskmap_delete(iface.xskmap.as_raw_fd(), cfg.queue);
            return Err(bpf_err("setting the queue's port")(e));
        }
        iface.queues.lock().unwrap_or_else(|p| p.into_inner()).insert(cfg.queue, cfg.udp_port);
        log::info!(
            "AF_XDP on {} queue {} for port {}: {:?} XDP, {:?} mode",
            iface.interface,
            cfg.queue,
            cfg.udp_port,
            iface.attach,
            cfg.bind
        );
        let BoundSocket { rx, tx, fill, comp, sock, umem, region_off, region_len, mtu } = b;
        Ok(AfXdpTransport {
            rx,
            tx,
            fill,
            comp,
            sock,
            umem,
            local: EndpointAddr { mac: iface.mac, ipv4: iface.ipv4.octets(), udp_port: cfg.udp_port },
            interface: iface.interface.clone(),
            attach: iface.attach,
            queue: cfg.queue,
            zero_copy: cfg.bind == BindMode::ZeroCopy,
            mtu,
            frame_shift: cfg.frame_size.trailing_zeros(),
            rx_frames: cfg.rx_frames,
            region_off,
            region_len,
            lent: vec![false; cfg.rx_frames as usize],
            rx_dropping: false,
            pending: VecDeque::with_capacity(cfg.tx_ring as usize),
            outstanding_descs: 0,
            completed_unmatched: 0,
            reclaimed: 0,
            tx_unsent: false,
            neigh: netif::Neighbours::new(netif::ipv4_nets(&cfg.interface).unwrap_or_default()),
            stats: AfXdpStats::default(),
            iface,
        })
    }

    /// The interface queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The dataplane's region inside the UMEM (its IOVA is its UMEM offset).
    ///
    /// # Safety
    /// The region must be used only while this transport lives (hand the transport to the
    /// endpoint that uses the region), and by one endpoint.
    pub unsafe fn dataplane_region(&self) -> DmaRegion {
        // SAFETY: in bounds of the UMEM mapping, which lives as long as `self`; the caller
        // promises not to outlive it.
        unsafe {
            DmaRegion::new(
                NonNull::new_unchecked(self.umem.as_ptr().as_ptr().add(self.region_off)),
                self.region_len,
                self.region_off as u64,
            )
        }
    }

    pub fn stats(&self) -> AfXdpStats {
        AfXdpStats { neighbour_read_failures: self.neigh.read_failures, ..self.stats }
    }

    /// The kernel's counters of this socket.
    pub fn kernel_stats(&self) -> io::Result<XskKernelStats> {
        let s: libc::xdp_statistics = getsockopt_stats(&self.sock)?;
        Ok(XskKernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// How the XDP program ended up attached (native or generic).
    pub fn attach_mode(&self) -> XdpAttach {
        self.attach
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Wakes the kernel's transmit path while it asks for it and descriptors wait. In copy mode
    /// one `sendto` sends at most a small batch and returns `EAGAIN` if more remain.
    fn kick(&mut self) {
        for _ in 0..64 {
            if !self.tx.needs_wakeup() {
                break;
            }
            self.stats.tx_kicks += 1;
            // SAFETY: a zero-length send on our socket; it only wakes the kernel's TX path.
            let r = unsafe {
                libc::sendto(self.sock.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0)
            };
            if r < 0 {
                let e = io::Error::last_os_error().raw_os_error();
                if e == Some(libc::ENXIO) {
                    // The interface is gone: the socket is unbound and its rings are never read.
                    self.stats.interface_gone = true;
                }
                if !matches!(e, Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)) {
                    self.stats.tx_kick_errors += 1;
                    break;
                }
            }
            if self.tx.all_consumed() {
                break;
            }
            if r >= 0 && self.zero_copy {
                break; // the driver sends asynchronously
            }
        }
        self.tx_unsent = !self.tx.all_consumed();
        if !self.zero_copy {
            // Take the completions already written: on a veth the peer's receive, and with it
            // the freeing of the frame's skb that writes its completion, ran inside the call,
            // so `tx_reclaimed` becomes current and the dataplane can reuse a response buffer
            // at once instead of parking it and allocating another. Elsewhere this takes what
            // has completed so far.
            self.reap();
        }
    }

    /// Takes completed descriptors off the completion ring and retires the packets they finish.
    fn reap(&mut self) {
        let n = self.comp.ready();
        if n == 0 {
            return;
        }
        self.comp.release(n);
        self.stats.tx_completed_descs += n as u64;
        self.completed_unmatched += n;
        self.retire();
    }

    fn retire(&mut self) {
        while let Some(&d) = self.pending.front() {
            let d = d as u32;
            if d > self.completed_unmatched {
                break;
            }
            self.completed_unmatched -= d;
            self.outstanding_descs -= d;
            self.pending.pop_front();
            self.reclaimed += 1;
        }
    }

    /// The UMEM offset of `len` bytes at `p`, if they lie in the dataplane region.
    fn umem_offset(&self, p: *const u8, len: usize) -> Option<usize> {
        let off = (p as usize).checked_sub(self.umem.as_ptr().as_ptr() as usize)?;
        (off >= self.region_off && off.checked_add(len)? <= self.umem.len()).then_some(off)
    }

    /// How many descriptors packet `p` takes, or `None` if it is not a frame we can send.
    #[inline(always)]
    fn desc_count(&self, p: &TxPacket) -> Option<u32> {
        let len = p.len();
        if !(HEADROOM..=self.mtu).contains(&len) {
            return None;
        }
        let mut n = 0;
        for s in p.segs.iter().filter(|s| s.len > 0) {
            let off = self.umem_offset(s.vaddr, s.len as usize)?;
            n += if self.zero_copy { split_at_page(off, s.len as usize, KERNEL_PAGE).1 as u32 } else { 1 };
        }
        Some(n)
    }

    /// Writes the `n` descriptors of packet `p` (counted by [`desc_count`](Self::desc_count))
    /// into the TX ring from entry `at` on, each whole with its final options (a descriptor
    /// array patched afterwards and copied made the copy wait on a failed store forward).
    #[inline(always)]
    fn write_descs(&mut self, p: &TxPacket, at: u32, n: u32) {
        let mut i = 0;
        for s in p.segs.iter().filter(|s| s.len > 0) {
            // `desc_count` found every non-empty segment inside the region; nothing between the
            // two calls changes the region or the packet.
            let off = self.umem_offset(s.vaddr, s.len as usize).expect("checked by desc_count");
            let (pieces, k) = if self.zero_copy {
                split_at_page(off, s.len as usize, KERNEL_PAGE)
            } else {
                ([(off, s.len as usize), (0, 0)], 1)
            };
            for &(o, l) in &pieces[..k] {
                i += 1;
                let options = if i < n { libc::XDP_PKT_CONTD } else { 0 };
                self.tx.write(at + i - 1, desc(o as u64, l as u32, options));
            }
        }
    }

    fn frame_of(&self, addr: u64) -> Option<(u32, usize)> {
        let base = addr & UNALIGNED_ADDR_MASK;
        let data = (base + (addr >> UNALIGNED_OFFSET_SHIFT)) as usize;
        let frame = base >> self.frame_shift;
        if base & ((1 << self.frame_shift) - 1) != 0 || frame >= self.rx_frames as u64 {
            return None;
        }
        Some((frame as u32, data))
    }

    /// Returns frame `i` to the fill ring (not yet submitted: `k` written so far).
    fn refill(&mut self, k: &mut u32, i: u32) {
        self.fill.write(*k, (i as u64) << self.frame_shift);
        *k += 1;
    }
}

/// Reads socket option `opt` of level `SOL_XDP` into `v`; returns the length the kernel wrote.
fn getsockopt_into<T>(fd: &OwnedFd, opt: libc::c_int, v: &mut T) -> io::Result<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`, which we own.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, (v as *mut T).cast(), &mut len) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

fn getsockopt_offsets(fd: &OwnedFd) -> io::Result<libc::xdp_mmap_offsets> {
    let zero = libc::xdp_ring_offset { producer: 0, consumer: 0, desc: 0, flags: 0 };
    let mut v = libc::xdp_mmap_offsets { rx: zero, tx: zero, fr: zero, cr: zero };
    if getsockopt_into(fd, libc::XDP_MMAP_OFFSETS, &mut v)? != std::mem::size_of::<libc::xdp_mmap_offsets>() {
        // Kernels before 5.4 report rings without a flags word.
        return Err(io::Error::new(io::ErrorKind::Unsupported, "AF_XDP rings without flags need Linux 5.4 or later"));
    }
    Ok(v)
}

fn getsockopt_stats(fd: &OwnedFd) -> io::Result<libc::xdp_statistics> {
    let mut v = libc::xdp_statistics {
        rx_dropped: 0,
        rx_invalid_descs: 0,
        tx_invalid_descs: 0,
        rx_ring_full: 0,
        rx_fill_ring_empty_descs: 0,
        tx_ring_empty_descs: 0,
    };
    getsockopt_into(fd, libc::XDP_STATISTICS, &mut v)?;
    Ok(v)
}

impl Transport for AfXdpTransport {
    fn mtu(&self) -> usize {
        self.mtu
    }

    fn local_addr(&self) -> EndpointAddr {
        self.local
    }

    /// Uses the remote's MAC if given, else the kernel's neighbour table, without waiting: an
    /// address the table lacks is unreachable for now while the kernel asks for it with ARP (a
    /// connect retried a moment later succeeds). An endpoint's event loop never stalls on a
    /// peer that is gone or on a forged connect request's address.
    fn resolve(&mut self, remote: &EndpointAddr) -> Result<RoutingInfo, ResolveError> {
        if !remote.is_unicast() {
            return Err(ResolveError::InvalidAddress);
        }
        let mut r = *remote;
        if r.mac == [0; 6] {
            let Some(mac) = self.neigh.mac(Ipv4Addr::from(remote.ipv4), &self.interface) else {
                self.stats.resolve_pending += 1;
                return Err(ResolveError::Unreachable);
            };
            r.mac = mac;
        }
        Ok(RoutingInfo::new(&self.local, &r))
    }

    fn max_tx_in_flight(&self) -> usize {
        self.tx.size() as usize
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        let size = self.tx.size();
        let mut written = 0u32;
        let mut accepted = 0;
        let mut sent = 0;
        for p in pkts {
            // Every accepted packet, malformed ones included, counts against the window: the
            // dataplane takes `max_tx_in_flight` later acceptances as proof an earlier packet
            // was read.
            if self.pending.len() >= size as usize {
                self.reap();
                if self.pending.len() >= size as usize {
                    break;
                }
            }
            let Some(n) = self.desc_count(p) else {
                self.stats.tx_malformed += 1;
                self.pending.push_back(0);
                accepted += 1;
                continue;
            };
            if self.outstanding_descs + n > size {
                self.reap();
                if self.outstanding_descs + n > size {
                    break;
                }
            }
            // Uncompleted descriptors bound those in the ring, so this always has room.
            if self.tx.free(written + n) < written + n {
                break;
            }
            self.write_descs(p, written, n);
            written += n;
            self.outstanding_descs += n;
            self.pending.push_back(n as u8);
            accepted += 1;
            sent += 1;
        }
        if written > 0 {
            self.tx.submit(written);
            self.stats.tx_packets += sent;
            self.kick();
        }
        // Malformed packets at the front retire at once.
        self.retire();
        accepted
    }

    /// Waits until every accepted packet has completed. While the interface is down the kernel
    /// keeps descriptors in the TX ring and sends them once it is up again, so returning early
    /// would let the dataplane reuse buffers the kernel has yet to read: the wait goes on (with
    /// a warning each second) unless the interface is gone (`ENXIO`: the ring is never read).
    fn tx_flush(&mut self) {
        self.stats.tx_flushes += 1;
        let t0 = Instant::now();
        let mut warned = 0;
        loop {
            self.reap();
            if self.pending.is_empty() || self.stats.interface_gone {
                return;
            }
            if !self.tx.all_consumed() {
                self.kick();
            }
            let waited = t0.elapsed();
            if waited > Duration::from_millis(1) {
                std::thread::sleep(Duration::from_micros(200));
            }
            if waited.as_secs() > warned {
                warned = waited.as_secs();
                if warned == 1 {
                    self.stats.tx_flush_stalls += 1;
                }
                log::warn!(
                    "AF_XDP on {}: {} packets not completed after {warned} s (interface down?); waiting",
                    self.interface,
                    self.pending.len()
                );
            }
        }
    }

    /// Sleeps in `ppoll` on the socket until its RX ring has frames, or the timeout: the kernel
    /// wakes the socket's waiters when it fills the ring (in copy mode, from the sender's
    /// transmit path).
    fn wait_rx(&mut self, timeout_ns: u64) -> bool {
        if self.tx_unsent || self.rx.ready() > 0 {
            return true;
        }
        crate::poll_in(self.sock.as_raw_fd(), timeout_ns);
        self.stats.rx_waits += 1;
        true
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        if self.tx_unsent {
            self.kick();
        }
        let ready = self.rx.ready();
        let mut got = 0;
        let mut refills = 0;
        let mut used = 0;
        while used < ready && got < out.len() {
            let d = self.rx.read(used);
            used += 1;
            let Some((frame, data)) = self.frame_of(d.addr) else {
                self.stats.rx_bad_desc += 1;
                continue;
            };
            let start = (frame as usize) << self.frame_shift;
            let fits = data >= start && data + d.len as usize <= start + (1 << self.frame_shift);
            if self.lent[frame as usize] {
                self.stats.rx_bad_desc += 1;
                continue;
            }
            if !fits {
                self.stats.rx_bad_desc += 1;
                self.refill(&mut refills, frame);
                continue;
            }
            let continued = d.options & libc::XDP_PKT_CONTD != 0;
            if continued || self.rx_dropping {
                // Part of a frame larger than one buffer: drop all its parts.
                if !continued {
                    self.stats.rx_multi_buffer += 1;
                }
                self.rx_dropping = continued;
                self.refill(&mut refills, frame);
                continue;
            }
            self.lent[frame as usize] = true;
            // SAFETY: `data` lies within the UMEM mapping (checked against the frame above).
            let ptr = unsafe { self.umem.as_ptr().as_ptr().add(data) };
            // The kernel wrote the frame from another core: start fetching its header and
            // payload lines now, so the misses overlap with the rest of the burst and the
            // dataplane's header checks instead of following one another.
            erpc_dataplane::arch::prefetch(ptr);
            if d.len > 64 {
                erpc_dataplane::arch::prefetch(ptr.wrapping_add(64));
            }
            out[got] = RxPacket { data: NonNull::new(ptr).expect("inside the mapping"), len: d.len, id: frame };
            got += 1;
        }
        if used > 0 {
            self.rx.release(used);
        }
        if refills > 0 {
            self.fill.submit(refills);
        }
        self.stats.rx_frames += got as u64;
        got
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        let mut k = 0;
        for p in pkts {
            match self.lent.get_mut(p.id as usize) {
                Some(l) if *l => {
                    *l = false;
                    self.refill(&mut k, p.id);
                }
                _ => self.stats.rx_bad_release += 1,
            }
        }
        if k > 0 {
            self.fill.submit(k);
            if self.fill.needs_wakeup() {
                // SAFETY: a zero-length, non-blocking receive on our socket: only a wake-up.
                unsafe {
                    libc::recvfrom(
                        self.sock.as_raw_fd(),
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
            }
        }
    }

    fn tx_reclaimed(&self) -> u64 {
        self.reclaimed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_page_boundaries() {
        assert_eq!(split_at_page(0, 1514, 4096), ([(0, 1514), (0, 0)], 1));
        assert_eq!(split_at_page(4096 - 1514, 1514, 4096), ([(4096 - 1514, 1514), (0, 0)], 1));
        assert_eq!(split_at_page(4000, 200, 4096), ([(4000, 96), (4096, 104)], 2));
        assert_eq!(split_at_page(8191, 2, 4096), ([(8191, 1), (8192, 1)], 2));
    }

    #[test]
    fn the_program_ends_in_exits_and_its_jumps_land_inside() {
        let code = xdp_redirect_program(3, 4, [10, 0, 0, 200]);
        assert_eq!(code.last().unwrap().code, 0x95, "exit");
        for (i, x) in code.iter().enumerate() {
            let class = x.code & 0x07;
            if (class == 0x05 || class == 0x06) && x.code != 0x85 && x.code != 0x95 {
                let target = i as i64 + 1 + x.off as i64;
                assert!(target > i as i64 && (target as usize) < code.len(), "jump {i} lands at {target}");
                // Every filter jump goes to the two-instruction "pass" tail.
                assert_eq!(target as usize, code.len() - 2);
            }
        }
        // The address is compared in 32 bits (JMP32 | JNE | K): a 64-bit compare would
        // sign-extend an address whose last byte is 128 or more and never match.
        assert!(code.iter().any(|x| x.code == 0x56 && x.imm as u32 == u32::from_ne_bytes([10, 0, 0, 200])));
        // The port comes from the port map, in network order as the program loads it.
        assert_eq!(port_map_value(31850), u16::from_ne_bytes(31850u16.to_be_bytes()) as u32);
        // Both maps are named by fd: the port map for the lookup, the XSKMAP for the redirect.
        let fds: Vec<i32> = code.iter().filter(|x| x.code == 0x18 && x.regs >> 4 == 1).map(|x| x.imm).collect();
        assert_eq!(fds, [4, 3]);
    }
}
