//! A ConnectX function driven from userspace: [`Mlx5Device`], opened once per process, and its
//! queue pairs ([`Mlx5Queue`]), one per endpoint, each an eRPC [`Transport`] that is `Send`;
//! [`Mlx5Nic`] is a device with one queue pair. The datapath is in [`super::tx`] and
//! [`super::rx`]; firmware page requests arrive through the device's event queue during
//! operation and are served by whichever queue polls it.
//!
//! Device objects, in creation order (destroyed in reverse when the device's last handle or
//! queue goes, from the typed teardown list of `objects.rs`): UAR (of the EQ), PD, transport
//! domain, EQ (page requests, CQ and WQ errors, port changes), the NIC RX flow table with one
//! group over `max_queues` indices, made the root. Per queue pair (destroyed in reverse when
//! the queue is dropped, the others untouched): its own UAR (so its doorbells and BlueFlame
//! buffers are its own), RX CQ, TX CQ, TIS, SQ (RST → RDY), striding RQ (RST → RDY), TIR, and
//! the flow entry at its index that sends its endpoint's UDP port to that TIR. Each queue has
//! its own completion moderation: a send completion is asked for one WQE in `signal_every`.
//!
//! Commands are serialised by the device's lock, taken only when queues open and close, on a
//! send-queue reset, and (with `try_lock`, never waiting) to poll the event queue; doorbells
//! go straight to the BAR.

use super::cmd::write_be;
use super::handles::Sqn;
use super::handles::{FgId, FtId, Pd, Td};
use super::layout::*;
use super::objects::{self, Creator, Teardown};
use super::queues::{Cq, DbRec, Eq, PAGE};
use super::rx::{Rx, RxDrops, RxGeometry};
use super::steering::RxMatch;
use super::tx::Tx;
use super::wqe::{event, BF_OFFSET, EQ_DOORBELL_UPDATE, L2_INLINE, WQEBB};
use super::{Caps, Hca, HcaConfig, InlineCap, Mlx5Error};
use crate::mmio::{RegisterIo, RegisterIo64};
use crate::vfio::{Bar, PciFunction};
use erpc_dataplane::transport::Segment;
use erpc_dataplane::{EndpointAddr, RxPacket, Transport, TxPacket};
use erpc_hugepages::{DmaMemory, DmaSlice, DmaSpace, PageSize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// Settings of an [`Mlx5Nic`]: a device ([`Mlx5DeviceConfig`]) with one queue pair
/// ([`Mlx5QueueConfig`]).
#[derive(Clone, Debug)]
pub struct Mlx5Config {
    pub hca: HcaConfig,
    /// Our IPv4 address and UDP port: the flow rule delivers frames to our MAC with these.
    pub ipv4: [u8; 4],
    pub udp_port: u16,
    /// Largest frame sent or received (Ethernet header included, FCS excluded).
    pub mtu: usize,
    /// Send queue size in 64-byte basic blocks (a power of two, 64..=32768).
    pub sq_size: u32,
    /// Ask for a completion on one send WQE in this many (1..=sq_size/4).
    pub signal_every: u32,
    /// Receive WQEs (multi-packet buffers; a power of two, 2..=1024).
    pub rq_wqes: u32,
    /// Strides per receive WQE (a power of two, 512..=65536) and bytes per stride (a power of
    /// two, 64..=8192). The original eRPC used 512 strides of 1 KiB.
    pub strides: u32,
    pub stride_size: u32,
    /// Accept every unicast MAC at the vport (our flow rule still matches our MAC only). On by
    /// default: a function driven without the kernel driver has no other way to get its MAC
    /// into the port's L2 table.
    pub promiscuous: bool,
    /// Poll the event queue (firmware page requests, errors) every this many `rx_burst` calls.
    pub eq_poll_interval: u32,
    /// How long `tx_flush` waits for the device before resetting the send queue.
    pub flush_timeout: Duration,
}

impl Default for Mlx5Config {
    fn default() -> Self {
        Mlx5Config {
            hca: HcaConfig::default(),
            ipv4: [10, 0, 0, 1],
            udp_port: 31850,
            mtu: 1514,
            sq_size: 1024,
            signal_every: 64,
            rq_wqes: 8,
            strides: 512,
            stride_size: 1024,
            promiscuous: true,
            eq_poll_interval: 64,
            flush_timeout: Duration::from_secs(1),
        }
    }
}

impl Mlx5Config {
    /// The device part.
    pub fn device(&self) -> Mlx5DeviceConfig {
        Mlx5DeviceConfig {
            hca: self.hca.clone(),
            ipv4: self.ipv4,
            mtu: self.mtu,
            promiscuous: self.promiscuous,
            max_queues: 1,
        }
    }

    /// The queue pair part.
    pub fn queue(&self) -> Mlx5QueueConfig {
        Mlx5QueueConfig {
            udp_port: self.udp_port,
            sq_size: self.sq_size,
            signal_every: self.signal_every,
            rq_wqes: self.rq_wqes,
            strides: self.strides,
            stride_size: self.stride_size,
            eq_poll_interval: self.eq_poll_interval,
            flush_timeout: self.flush_timeout,
        }
    }
}

/// Settings of an [`Mlx5Device`].
#[derive(Clone, Debug)]
pub struct Mlx5DeviceConfig {
    pub hca: HcaConfig,
    /// The function's IPv4 address, shared by its endpoints (each has its own UDP port).
    pub ipv4: [u8; 4],
    /// Largest frame sent or received (Ethernet header included, FCS excluded).
    pub mtu: usize,
    /// Accept every unicast MAC at the vport (flow rules still match our MAC only). On by
    /// default: a function driven without the kernel driver has no other way to get its MAC
    /// into the port's L2 table.
    pub promiscuous: bool,
    /// Queue pairs (endpoints) the device may have open at once (1..=1024): the size of its
    /// steering table's group.
    pub max_queues: u32,
}

impl Default for Mlx5DeviceConfig {
    fn default() -> Self {
        Mlx5Config::default().device().with_max_queues(16)
    }
}

impl Mlx5DeviceConfig {
    /// The same with room for `n` queue pairs.
    pub fn with_max_queues(self, n: u32) -> Self {
        Mlx5DeviceConfig { max_queues: n, ..self }
    }

    fn check(&self) -> Result<(), Mlx5Error> {
        if !(64..=9000).contains(&self.mtu) {
            return Err(Mlx5Error::Config(format!("mtu = {}: use 64..=9000", self.mtu)));
        }
        if !(1..=1024).contains(&self.max_queues) {
            return Err(Mlx5Error::Config(format!("max_queues = {}: use 1..=1024", self.max_queues)));
        }
        Ok(())
    }

    /// log2 of the steering table's size (at least 2 entries).
    fn table_log(&self) -> u32 {
        log2(self.max_queues.next_power_of_two()).max(1)
    }

    /// What the device must offer for any queue pair of this driver.
    fn fits(&self, caps: &Caps) -> Result<(), Mlx5Error> {
        need(
            caps.striding_rq,
            "striding_rq",
            0,
            "this driver receives into a striding (multi-packet) RQ, which the device does not offer: \
             use a ConnectX-4 Lx or later"
                .into(),
        )?;
        need(
            EQ_LOG <= caps.log_max_eq_sz,
            "log_max_eq_sz",
            caps.log_max_eq_sz,
            format!("the event queue has 2^{EQ_LOG} entries: the device cannot make one"),
        )?;
        need(
            u64::from(BF_OFFSET) + 2 * u64::from(caps.bf_half()) <= caps.uar_page_bytes(),
            "log_bf_reg_size",
            caps.log_bf_reg_size,
            format!(
                "two BlueFlame buffers from {BF_OFFSET:#x} do not fit a UAR page of {} bytes",
                caps.uar_page_bytes()
            ),
        )?;
        need(
            caps.wqe_inline_mode.is_some(),
            "wqe_inline_mode",
            3,
            "the device asks for an inline mode mlx5_ifc.h does not define".into(),
        )
    }
}

/// Settings of one [`Mlx5Queue`] (one endpoint).
#[derive(Clone, Debug)]
pub struct Mlx5QueueConfig {
    /// The endpoint's UDP port: its flow rule delivers frames for our MAC, IPv4 address and
    /// this port to its receive queue. Each queue of a device has its own.
    pub udp_port: u16,
    /// Send queue size in 64-byte basic blocks (a power of two, 64..=32768).
    pub sq_size: u32,
    /// Ask for a completion on one send WQE in this many (1..=sq_size/4): the queue's
    /// completion moderation.
    pub signal_every: u32,
    /// Receive WQEs (multi-packet buffers; a power of two, 2..=1024).
    pub rq_wqes: u32,
    /// Strides per receive WQE (a power of two, 512..=65536) and bytes per stride (a power of
    /// two, 64..=8192). The original eRPC used 512 strides of 1 KiB.
    pub strides: u32,
    pub stride_size: u32,
    /// Poll the device's event queue (firmware page requests, errors) every this many
    /// `rx_burst` calls (skipped when another queue is polling it).
    pub eq_poll_interval: u32,
    /// How long `tx_flush` waits for the device before resetting the send queue.
    pub flush_timeout: Duration,
}

impl Default for Mlx5QueueConfig {
    fn default() -> Self {
        Mlx5Config::default().queue()
    }
}

impl Mlx5QueueConfig {
    /// The defaults with `udp_port`.
    pub fn port(udp_port: u16) -> Self {
        Mlx5QueueConfig { udp_port, ..Default::default() }
    }

    fn check(&self, mtu: usize) -> Result<(), Mlx5Error> {
        let bad = |m: String| Err(Mlx5Error::Config(m));
        if !self.sq_size.is_power_of_two() || !(64..=32768).contains(&self.sq_size) {
            return bad(format!("sq_size = {}: use a power of two in 64..=32768", self.sq_size));
        }
        if !(1..=self.sq_size / 4).contains(&self.signal_every) {
            return bad(format!("signal_every = {}: use 1..={}", self.signal_every, self.sq_size / 4));
        }
        if !self.rq_wqes.is_power_of_two() || !(2..=1024).contains(&self.rq_wqes) {
            return bad(format!("rq_wqes = {}: use a power of two in 2..=1024", self.rq_wqes));
        }
        if !self.strides.is_power_of_two() || !(512..=65536).contains(&self.strides) {
            return bad(format!("strides = {}: use a power of two in 512..=65536", self.strides));
        }
        if !self.stride_size.is_power_of_two() || !(64..=8192).contains(&self.stride_size) {
            return bad(format!("stride_size = {}: use a power of two in 64..=8192", self.stride_size));
        }
        if self.eq_poll_interval == 0 {
            return bad("eq_poll_interval = 0: use 1 or more".into());
        }
        let buf = self.strides as usize * self.stride_size as usize;
        if mtu > buf {
            return bad(format!("mtu = {mtu}: at most a receive buffer ({buf} bytes); use more or larger strides"));
        }
        Ok(())
    }

    /// log2 of the RX CQ's entries: one per stride of every receive WQE, so it cannot overrun.
    fn rx_cq_log(&self) -> u32 {
        log2((self.rq_wqes * self.strides).next_power_of_two())
    }

    /// log2 of the TX CQ's entries: a CQE per signaled WQE in the ring, with room to spare.
    fn tx_cq_log(&self) -> u32 {
        log2((self.sq_size / self.signal_every + 4).next_power_of_two()).max(6)
    }

    /// Checks the queue against what the device reports (QUERY_HCA_CAP), before anything is
    /// created: an error names the capability and says what to change.
    fn fits(&self, caps: &Caps) -> Result<(), Mlx5Error> {
        let wq = 1u64 << caps.log_max_wq_sz.min(32);
        need(
            u64::from(self.sq_size) <= wq,
            "log_max_wq_sz",
            caps.log_max_wq_sz,
            format!("sq_size = {} does not fit a work queue of {wq} entries: use sq_size <= {wq}", self.sq_size),
        )?;
        need(
            u64::from(self.rq_wqes) <= wq,
            "log_max_wq_sz",
            caps.log_max_wq_sz,
            format!("rq_wqes = {} does not fit a work queue of {wq} entries: use rq_wqes <= {wq}", self.rq_wqes),
        )?;
        let cq = 1u64 << caps.log_max_cq_sz.min(32);
        need(
            self.rx_cq_log() <= caps.log_max_cq_sz,
            "log_max_cq_sz",
            caps.log_max_cq_sz,
            format!(
                "the receive CQ holds a completion per stride, rq_wqes x strides = {}, more than {cq}: use fewer \
                 rq_wqes or strides",
                u64::from(self.rq_wqes) * u64::from(self.strides)
            ),
        )?;
        need(
            self.tx_cq_log() <= caps.log_max_cq_sz,
            "log_max_cq_sz",
            caps.log_max_cq_sz,
            format!("the send CQ needs 2^{} entries, more than {cq}: raise signal_every", self.tx_cq_log()),
        )?;
        let stride_log = log2(self.stride_size);
        let (lo, hi) = (caps.log_min_stride_sz_rq, caps.log_max_stride_sz_rq);
        need(
            stride_log >= lo,
            "log_min_stride_sz_rq",
            lo,
            format!(
                "stride_size = {} is below the device's smallest stride: use {} or more",
                self.stride_size,
                1u64 << lo
            ),
        )?;
        need(
            stride_log <= hi,
            "log_max_stride_sz_rq",
            hi,
            format!(
                "stride_size = {} is above the device's largest stride: use {} or less",
                self.stride_size,
                1u64 << hi
            ),
        )
    }
}

fn need(ok: bool, cap: &'static str, value: u32, what: String) -> Result<(), Mlx5Error> {
    if ok {
        Ok(())
    } else {
        Err(Mlx5Error::Capability { cap, value, what })
    }
}

/// Counters of the driver (the device's own are not read).
#[derive(Clone, Copy, Debug, Default)]
pub struct Mlx5Stats {
    pub tx_packets: u64,
    pub tx_doorbells: u64,
    pub tx_completions: u64,
    pub tx_error_cqes: u64,
    pub tx_malformed_cqes: u64,
    pub tx_dropped_oversize: u64,
    pub tx_flushes: u64,
    pub tx_flush_markers: u64,
    pub tx_flush_timeouts: u64,
    pub sq_resets: u64,
    pub rx_packets: u64,
    pub rx_filler_cqes: u64,
    pub rx_error_cqes: u64,
    pub rx_bad_opcode_cqes: u64,
    pub rx_malformed_cqes: u64,
    pub rx_bad_release: u64,
    pub rx_wqes_reposted: u64,
    pub events: u64,
    pub page_requests: u64,
    pub pages_given: u64,
    pub pages_returned: u64,
    pub page_request_failures: u64,
    pub error_events: u64,
}

impl Mlx5Stats {
    /// The sum of two sets of counters (a queue's and its device's).
    fn plus(mut self, o: &Mlx5Stats) -> Mlx5Stats {
        for (x, y) in self.as_mut_array().into_iter().zip(o.as_array()) {
            *x += y;
        }
        self
    }

    fn as_array(&self) -> [u64; 23] {
        [
            self.tx_packets,
            self.tx_doorbells,
            self.tx_completions,
            self.tx_error_cqes,
            self.tx_malformed_cqes,
            self.tx_dropped_oversize,
            self.tx_flushes,
            self.tx_flush_markers,
            self.tx_flush_timeouts,
            self.sq_resets,
            self.rx_packets,
            self.rx_filler_cqes,
            self.rx_error_cqes,
            self.rx_bad_opcode_cqes,
            self.rx_malformed_cqes,
            self.rx_bad_release,
            self.rx_wqes_reposted,
            self.events,
            self.page_requests,
            self.pages_given,
            self.pages_returned,
            self.page_request_failures,
            self.error_events,
        ]
    }

    fn as_mut_array(&mut self) -> [&mut u64; 23] {
        [
            &mut self.tx_packets,
            &mut self.tx_doorbells,
            &mut self.tx_completions,
            &mut self.tx_error_cqes,
            &mut self.tx_malformed_cqes,
            &mut self.tx_dropped_oversize,
            &mut self.tx_flushes,
            &mut self.tx_flush_markers,
            &mut self.tx_flush_timeouts,
            &mut self.sq_resets,
            &mut self.rx_packets,
            &mut self.rx_filler_cqes,
            &mut self.rx_error_cqes,
            &mut self.rx_bad_opcode_cqes,
            &mut self.rx_malformed_cqes,
            &mut self.rx_bad_release,
            &mut self.rx_wqes_reposted,
            &mut self.events,
            &mut self.page_requests,
            &mut self.pages_given,
            &mut self.pages_returned,
            &mut self.page_request_failures,
            &mut self.error_events,
        ]
    }
}

const EQ_LOG: u32 = 6;
/// The events the EQ takes: firmware page requests, CQ and WQ errors, port changes.
const EQ_EVENTS: [u8; 4] = [event::PAGE_REQUEST, event::CQ_ERROR, event::WQ_CATAS_ERROR, event::PORT_CHANGE];

fn log2(n: u32) -> u32 {
    n.trailing_zeros()
}

/// The BAR as the device's command interface uses it, shared with the queues' doorbells.
struct SharedBar<R>(Arc<R>);

impl<R: RegisterIo> RegisterIo for SharedBar<R> {
    fn read32(&self, off: u32) -> u32 {
        self.0.read32(off)
    }

    fn write32(&self, off: u32, value: u32) {
        self.0.write32(off, value)
    }
}

impl<R: RegisterIo64> RegisterIo64 for SharedBar<R> {
    fn write64(&self, off: u32, value: u64) {
        self.0.write64(off, value)
    }
}

/// What the device lock guards: the command interface and the event queue.
struct DevState<R: RegisterIo64> {
    hca: Hca<SharedBar<R>>,
    eq: Eq,
    /// The device objects (UAR, PD, TD, EQ, flow table and group, root), destroyed in reverse.
    teardown: Teardown,
    /// The UDP port of each open queue pair, by index (its flow entry's index).
    queues: Vec<Option<u16>>,
    /// Event and page counters.
    stats: Mlx5Stats,
}

// SAFETY: the EQ's pointer is into the device's own DMA memory (`Shared::_rings`), which lives
// as long as the state; the state is only reached under the device's Mutex.
unsafe impl<R: RegisterIo64 + Send + Sync> Send for DevState<R> {}

/// What the device handle and its queues share.
struct Shared<R: RegisterIo64> {
    /// Doorbells of the queues.
    bar: Arc<R>,
    // Drop order (declaration order): Drop::drop destroys the device objects; dropping `state`
    // tears the HCA down (the device stops all DMA) and unmaps the BAR; then the VFIO device
    // closes and only then is the EQ's memory unmapped. Queues hold this through an Arc and
    // destroy their own objects first.
    state: Mutex<DevState<R>>,
    caps: Caps,
    fw_version: (u16, u16, u16),
    mac: [u8; 6],
    cfg: Mlx5DeviceConfig,
    inline_mode: u32,
    inline: usize,
    lkey: u32,
    pd: Pd,
    td: Td,
    eqn: super::handles::Eqn,
    eq_uar_base: u32,
    table: FtId,
    group: FgId,
    space: Arc<DmaSpace>,
    page: PageSize,
    _pci: Option<PciFunction>,
    _rings: DmaMemory,
}

impl<R: RegisterIo64> Shared<R> {
    fn lock(&self) -> MutexGuard<'_, DevState<R>> {
        // A panic under the lock leaves the firmware's state as the commands made it: go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles what the event queue holds: firmware page requests (given or taken back at
    /// once), errors (logged and counted).
    fn poll_events(&self, st: &mut DevState<R>) {
        let mut any = false;
        while let Some(e) = st.eq.poll() {
            any = true;
            st.stats.events += 1;
            match e.type_ {
                event::PAGE_REQUEST => {
                    st.stats.page_requests += 1;
                    let n = e.data.num_pages.get();
                    let r = if n > 0 {
                        st.hca.give_pages(n as usize).map(|()| st.stats.pages_given += n as u64)
                    } else {
                        st.hca.take_pages(n.unsigned_abs() as usize).map(|k| st.stats.pages_returned += k as u64)
                    };
                    if let Err(err) = r {
                        st.stats.page_request_failures += 1;
                        log::error!("mlx5: firmware asked for {n} pages: {err}");
                    }
                }
                event::CQ_ERROR | event::WQ_CATAS_ERROR => {
                    st.stats.error_events += 1;
                    log::error!("mlx5: error event {:#x} (sub-type {:#x})", e.type_, e.sub_type);
                }
                _ => log::info!("mlx5: event {:#x} (sub-type {:#x})", e.type_, e.sub_type),
            }
        }
        if any {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            write_be(&*self.bar, self.eq_uar_base + EQ_DOORBELL_UPDATE, self.eqn.0 << 24 | (st.eq.ci & 0xff_ffff));
        }
    }
}

impl<R: RegisterIo64> Drop for Shared<R> {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        st.teardown.run(&mut st.hca);
    }
}

/// Opens `bdf` through VFIO in `container` after checking that `space` is that container's and
/// that the function is a ConnectX; enables its DMA and maps BAR0.
fn open_function(
    container: &Arc<vfio_ioctls::VfioContainer>,
    space: &Arc<DmaSpace>,
    bdf: &str,
) -> Result<(PciFunction, Bar), Mlx5Error> {
    if !space.is_in(container) {
        return Err(Mlx5Error::Config(
            "the DMA space is not the one of this VFIO container: use DmaSpace::vfio(container.clone()) \
                 for the NIC and for the endpoint's memory"
                .into(),
        ));
    }
    let pci = PciFunction::open(container, bdf)?;
    let vendor = pci.config_read_u16(0)?;
    let device = pci.config_read_u16(2)?;
    if crate::pci::family_of(vendor, device) != Some(crate::pci::NicFamily::Mlx5) {
        return Err(Mlx5Error::Unsupported { bdf: bdf.into(), vendor, device });
    }
    pci.enable_dma()?;
    let bar = pci.map_bar(0)?;
    Ok((pci, bar))
}

/// A ConnectX function driven from userspace, opened once per process. Hands out one
/// [`Mlx5Queue`] per endpoint with [`Mlx5Device::open_queue`].
pub struct Mlx5Device<R: RegisterIo64 = Bar> {
    shared: Arc<Shared<R>>,
}

impl Mlx5Device<Bar> {
    /// Opens the ConnectX function `bdf` (bound to vfio-pci) in `container` and brings it up
    /// (no queue pair yet). `space` must be the DMA space of the same container
    /// (`DmaSpace::vfio(container.clone())`): the queues and firmware pages are allocated from
    /// it, and the dataplane's msgbufs must come from it too.
    pub fn open(
        container: &Arc<vfio_ioctls::VfioContainer>,
        space: &Arc<DmaSpace>,
        bdf: &str,
        cfg: Mlx5DeviceConfig,
    ) -> Result<Mlx5Device<Bar>, Mlx5Error> {
        let (pci, bar) = open_function(container, space, bdf)?;
        Mlx5Device::bring_up(bar, space.clone(), cfg, Some(pci), None)
    }
}

impl<R: RegisterIo64> Mlx5Device<R> {
    /// Brings up the function behind `bar` (a mapped BAR0, or a device model in tests).
    /// `space` is the DMA space the device reaches memory through: the dataplane's msgbufs
    /// must come from it too.
    pub fn with_bar(bar: R, space: Arc<DmaSpace>, cfg: Mlx5DeviceConfig) -> Result<Mlx5Device<R>, Mlx5Error> {
        Mlx5Device::bring_up(bar, space, cfg, None, None)
    }

    /// Brings the function up; with `first_queue`, also checks that queue against the
    /// device's capabilities before any object is created.
    fn bring_up(
        bar: R,
        space: Arc<DmaSpace>,
        cfg: Mlx5DeviceConfig,
        pci: Option<PciFunction>,
        first_queue: Option<&Mlx5QueueConfig>,
    ) -> Result<Mlx5Device<R>, Mlx5Error> {
        cfg.check()?;
        let bar = Arc::new(bar);
        let mut hca = Hca::bring_up(SharedBar(bar.clone()), space.clone(), cfg.hca.clone())?;
        let (major, minor, sub) = hca.fw_version();
        log::info!("mlx5: firmware {major}.{minor}.{sub}; {}", hca.caps());
        cfg.fits(hca.caps())?;
        if let Some(q) = first_queue {
            q.fits(hca.caps())?;
        }
        let page = hca.page();
        let rings = space.alloc((64usize << EQ_LOG).next_multiple_of(PAGE), page)?;
        let mut teardown = Teardown::default();
        // SAFETY: the EQ ring is the start of `rings`, used by nothing else and not yet given
        // to the device; `rings` moves into the returned device and is dropped after the HCA
        // is torn down (on an error below, `hca` is dropped first).
        let r = unsafe { create_device_objects(&mut hca, &cfg, rings.as_slice().sub(0, 64 << EQ_LOG), &mut teardown) };
        let o = match r {
            Ok(o) => o,
            Err(e) => {
                teardown.run(&mut hca);
                drop(hca);
                return Err(e);
            }
        };
        let caps = hca.caps().clone();
        let fw_version = hca.fw_version();
        let max = cfg.max_queues as usize;
        let shared = Shared {
            bar,
            state: Mutex::new(DevState {
                hca,
                eq: o.eq,
                teardown,
                queues: vec![None; max],
                stats: Mlx5Stats::default(),
            }),
            caps,
            fw_version,
            mac: o.vport.mac,
            inline_mode: o.vport.inline_mode,
            inline: o.vport.inline,
            lkey: o.lkey,
            pd: o.pd,
            td: o.td,
            eqn: o.eqn,
            eq_uar_base: o.uar_base,
            table: o.table,
            group: o.group,
            space,
            page,
            cfg,
            _pci: pci,
            _rings: rings,
        };
        let dev = Mlx5Device { shared: Arc::new(shared) };
        // Page requests the firmware raised while the objects were created.
        dev.poll_events();
        Ok(dev)
    }

    /// Opens the lowest free queue pair for one endpoint: its UAR, CQs, TIS, SQ, striding RQ
    /// and TIR, and the flow entry (at the queue's index) that sends frames for our MAC, IPv4
    /// address and `cfg.udp_port` to it.
    pub fn open_queue(&self, cfg: Mlx5QueueConfig) -> Result<Mlx5Queue<R>, Mlx5Error> {
        let sh = &self.shared;
        cfg.check(sh.cfg.mtu)?;
        cfg.fits(&sh.caps)?;
        let mut st = sh.lock();
        let Some(index) = st.queues.iter().position(Option::is_none) else {
            return Err(Mlx5Error::Config(format!(
                "all {} queue pairs of the device are in use (one per endpoint): close an endpoint first, or \
                 raise Mlx5DeviceConfig::max_queues",
                sh.cfg.max_queues
            )));
        };
        if st.queues.contains(&Some(cfg.udp_port)) {
            return Err(Mlx5Error::Config(format!(
                "UDP port {} is already an endpoint's on this device: give each endpoint its own port",
                cfg.udp_port
            )));
        }
        // Queue memory, sized before anything is created so a failure creates nothing.
        let (rx_cq_log, tx_cq_log) = (cfg.rx_cq_log(), cfg.tx_cq_log());
        let sizes = [
            PAGE,
            64usize << rx_cq_log,
            64usize << tx_cq_log,
            cfg.sq_size as usize * WQEBB,
            cfg.rq_wqes as usize * 32,
            PAGE,
        ];
        let rings_mem = sh.space.alloc(sizes.iter().map(|s| s.next_multiple_of(PAGE)).sum(), sh.page)?;
        let bufs_mem =
            sh.space.alloc(cfg.rq_wqes as usize * cfg.strides as usize * cfg.stride_size as usize, sh.page)?;
        let mut left = rings_mem.as_slice();
        let mut carve = |len: usize| left.take(len, PAGE).expect("sized from the same list");
        let rings = Rings {
            dbr: carve(sizes[0]),
            rx_cq: carve(sizes[1]),
            tx_cq: carve(sizes[2]),
            sq: carve(sizes[3]),
            rq: carve(sizes[4]),
            marker: carve(sizes[5]),
        };
        // SAFETY: fresh memory, not yet given to the device; nothing else holds it.
        unsafe { rings.dbr.fill(0) };
        let mut teardown = Teardown::default();
        // SAFETY: `rings` and the buffers are disjoint parts of `rings_mem` and `bufs_mem`,
        // used by nothing else and not yet given to the device. Both move into the returned
        // queue, whose Drop destroys its objects (so the device no longer uses them) before they
        // are unmapped; on an error below the objects are destroyed before they drop.
        let r = unsafe {
            create_queue_objects(&mut st.hca, sh, &cfg, index as u32, &rings, bufs_mem.as_slice(), &mut teardown)
        };
        let (uar_base, tx, rx) = match r {
            Ok(v) => v,
            Err(e) => {
                if teardown.run(&mut st.hca) > 0 {
                    // The device may still use what it failed to destroy: never unmap it.
                    std::mem::forget((rings_mem, bufs_mem));
                }
                return Err(e);
            }
        };
        st.queues[index] = Some(cfg.udp_port);
        drop(st);
        let mut q = Mlx5Queue {
            index: index as u32,
            tx,
            rx,
            uar_base,
            bf: BF_OFFSET,
            bf_half: sh.caps.bf_half(),
            addr: EndpointAddr { mac: sh.mac, ipv4: sh.cfg.ipv4, udp_port: cfg.udp_port },
            polls_left: cfg.eq_poll_interval,
            cfg,
            teardown,
            stats: Mlx5Stats::default(),
            // SAFETY: `rings_mem` moves into the same queue and is dropped after it is used.
            marker: unsafe { rings.marker.detach() },
            bar: sh.bar.clone(),
            mem: Some((rings_mem, bufs_mem)),
            dev: sh.clone(),
        };
        q.write_marker();
        Ok(q)
    }

    /// Handles what the event queue holds: firmware page requests (given or taken back at
    /// once), errors (logged and counted). Queues call it every
    /// [`Mlx5QueueConfig::eq_poll_interval`] `rx_burst` calls; call it when no queue receives.
    pub fn poll_events(&self) {
        let mut st = self.shared.lock();
        self.shared.poll_events(&mut st);
    }

    /// The device's counters: events and firmware pages.
    pub fn stats(&self) -> Mlx5Stats {
        self.shared.lock().stats
    }

    /// Firmware pages held now.
    pub fn pages_given(&self) -> usize {
        self.shared.lock().hca.pages_given()
    }

    /// The register access (tests inspect their model through it).
    pub fn registers(&self) -> &R {
        &self.shared.bar
    }

    /// The device's capabilities as bring-up read them.
    pub fn caps(&self) -> &Caps {
        &self.shared.caps
    }

    /// The firmware version (major, minor, sub-minor).
    pub fn fw_version(&self) -> (u16, u16, u16) {
        self.shared.fw_version
    }

    /// The vport's MAC address, shared by the endpoints.
    pub fn mac(&self) -> [u8; 6] {
        self.shared.mac
    }

    /// The indices of the queue pairs open now (their flow entries' indices).
    pub fn open_queues(&self) -> Vec<u32> {
        let st = self.shared.lock();
        (0..st.queues.len() as u32).filter(|&i| st.queues[i as usize].is_some()).collect()
    }
}

/// What `create_device_objects` hands back.
struct DevObjects {
    vport: Vport,
    uar_base: u32,
    pd: Pd,
    td: Td,
    lkey: u32,
    eq: Eq,
    eqn: super::handles::Eqn,
    table: FtId,
    group: FgId,
}

/// Creates the device objects, in order, each recorded in `teardown` as soon as it exists: the
/// vport settings, UAR (of the EQ), PD, transport domain, EQ, and the steering table.
///
/// # Safety
/// `eq_ring` must stay mapped while the device may use it (until the HCA is torn down), be used
/// by nothing else, and not have been given to the device yet.
unsafe fn create_device_objects<R: RegisterIo>(
    hca: &mut Hca<R>,
    cfg: &Mlx5DeviceConfig,
    eq_ring: DmaSlice<'_>,
    teardown: &mut Teardown,
) -> Result<DevObjects, Mlx5Error> {
    let vport = configure_vport(hca, cfg)?;
    let caps = hca.caps().clone();
    let mut c = Creator { hca, teardown };
    let uar = c.alloc_uar()?;
    let uar_base = uar_offset(&caps, uar)?;
    let pd = c.alloc_pd()?;
    let td = c.alloc_td()?;
    let lkey = c.reserved_lkey()?;
    // SAFETY: the caller's contract.
    let mut eq = unsafe { Eq::new(eq_ring, EQ_LOG) };
    eq.eqn = c.create_eq(CreateEqIn::new(Eqc::new(EQ_LOG, uar), &EQ_EVENTS), eq_ring)?;
    let (table, group) = c.steering_table(cfg.table_log(), cfg.max_queues, caps.reset_root_to_default)?;
    Ok(DevObjects { vport, uar_base, pd, td, lkey, eqn: eq.eqn, eq, table, group })
}

/// The BAR0 offset of UAR `uar` (its number times the device's UAR page size).
fn uar_offset(caps: &Caps, uar: super::handles::Uar) -> Result<u32, Mlx5Error> {
    u32::try_from(u64::from(uar.0) * caps.uar_page_bytes())
        .map_err(|_| Mlx5Error::Config(format!("ALLOC_UAR gave {uar}, beyond a 32-bit BAR offset: reset the device")))
}

/// Memory of a queue pair's rings, carved in this order out of one allocation.
struct Rings<'a> {
    dbr: DmaSlice<'a>,
    rx_cq: DmaSlice<'a>,
    tx_cq: DmaSlice<'a>,
    sq: DmaSlice<'a>,
    rq: DmaSlice<'a>,
    marker: DmaSlice<'a>,
}

/// Creates the objects of queue pair `index`, in order, each recorded in `teardown` as soon as
/// it exists: UAR, CQs, TIS and SQ, the striding RQ, TIR and its flow entry.
///
/// # Safety
/// `rings` and `bufs` must stay mapped while the returned queues are used (and until their
/// objects are destroyed), be used by nothing else, and not have been given to the device yet.
unsafe fn create_queue_objects<R: RegisterIo64>(
    hca: &mut Hca<SharedBar<R>>,
    sh: &Shared<R>,
    cfg: &Mlx5QueueConfig,
    index: u32,
    rings: &Rings<'_>,
    bufs: DmaSlice<'_>,
    teardown: &mut Teardown,
) -> Result<(u32, Tx, Rx), Mlx5Error> {
    let mut c = Creator { hca, teardown };
    let uar = c.alloc_uar()?;
    let uar_base = uar_offset(&sh.caps, uar)?;
    let lkey = sh.lkey;

    // Completion queues: the RX one holds a CQE per stride, so it cannot overrun.
    let (rx_cq_log, tx_cq_log) = (cfg.rx_cq_log(), cfg.tx_cq_log());
    let (rx_cq_dbr, tx_cq_dbr) = (rings.dbr.sub(128, 8), rings.dbr.sub(192, 8));
    // SAFETY: each ring is its own part of `rings` (or `bufs`), which this function's contract
    // keeps mapped, ours and not yet the device's (as for every queue below); the doorbell
    // records are one word each, ours alone.
    let mut rx_cq = unsafe { Cq::new(rings.rx_cq, rx_cq_log, DbRec::new(rx_cq_dbr, 0)) };
    let cqc = Cqc::new(rx_cq_log, uar, sh.eqn, rx_cq_dbr.iova());
    rx_cq.cqn = c.create_cq(CreateCqIn::new(cqc), rings.rx_cq.sub(0, 64 << rx_cq_log))?;
    // SAFETY: as above.
    let mut tx_cq = unsafe { Cq::new(rings.tx_cq, tx_cq_log, DbRec::new(tx_cq_dbr, 0)) };
    let cqc = Cqc::new(tx_cq_log, uar, sh.eqn, tx_cq_dbr.iova());
    tx_cq.cqn = c.create_cq(CreateCqIn::new(cqc), rings.tx_cq.sub(0, 64 << tx_cq_log))?;

    // The send side: TIS, then the SQ (RST → RDY).
    let tisn = c.create_tis(CreateTisIn::new(Tisc::new(sh.td)))?;
    let sq_dbr = rings.dbr.sub(64, 8);
    let (sq_size, signal) = (cfg.sq_size, cfg.signal_every);
    // SAFETY: as above.
    let mut tx = unsafe { Tx::new(rings.sq, sq_size, lkey, sh.inline, DbRec::new(sq_dbr, 1), signal, tx_cq) };
    let wq = Wq::new(wq_type::CYCLIC, sh.pd, uar, sq_dbr.iova(), 6, log2(cfg.sq_size));
    tx.sqn = c.create_sq(CreateSqIn::new(Sqc::new(tx.cq.cqn, tisn, sh.inline_mode, wq)), rings.sq)?;

    // The receive side: the striding RQ, posted in full before it is made ready.
    let rq_dbr = rings.dbr.sub(0, 8);
    let geometry = RxGeometry { wqes: cfg.rq_wqes, strides: cfg.strides, stride_log: log2(cfg.stride_size) };
    // SAFETY: as above.
    let rx = unsafe { Rx::new(rings.rq, bufs, geometry, lkey, DbRec::new(rq_dbr, 0), rx_cq) };
    let wq = Wq::new(wq_type::CYCLIC_STRIDING_RQ, sh.pd, uar, rq_dbr.iova(), 5, log2(cfg.rq_wqes))
        .with_strides(log2(cfg.strides), log2(cfg.stride_size));
    let rqn = c.create_rq(CreateRqIn::new(Rqc::new(rx.cq.cqn, wq)), rings.rq)?;

    // Steering: a TIR to the RQ, and the endpoint's frames to it.
    let tir = c.create_tir(CreateTirIn::new(Tirc::direct(rqn, sh.td)))?;
    let m = RxMatch { mac: sh.mac, ipv4: sh.cfg.ipv4, udp_port: cfg.udp_port };
    c.steer(sh.table, sh.group, index, tir, &m)?;
    Ok((uar_base, tx, rx))
}

/// One queue pair of an [`Mlx5Device`]: one endpoint's packet I/O, implementing [`Transport`].
/// `Send`: open it on one thread, run its endpoint on another.
pub struct Mlx5Queue<R: RegisterIo64 = Bar> {
    /// Its flow entry's index in the device's steering table.
    index: u32,
    tx: Tx,
    rx: Rx,
    /// BAR0 offset of the queue's UAR page.
    uar_base: u32,
    /// The BlueFlame buffer the next doorbell goes to (its offset in the UAR page), and the
    /// distance to the other one (0 without BlueFlame: always the first).
    bf: u32,
    bf_half: u32,
    addr: EndpointAddr,
    cfg: Mlx5QueueConfig,
    /// The queue's objects, destroyed in reverse order on drop.
    teardown: Teardown,
    stats: Mlx5Stats,
    /// `rx_burst` calls left until the next event-queue poll.
    polls_left: u32,
    /// The marker frame `tx_flush` sends when the last WQE was unsignaled (in the rings).
    marker: DmaSlice<'static>,
    bar: Arc<R>,
    // Drop order: Drop::drop destroys the queue's objects (the device stops using its memory),
    // then the memory is unmapped, then the device's last reference may go.
    mem: Option<(DmaMemory, DmaMemory)>,
    dev: Arc<Shared<R>>,
}

// SAFETY: a queue owns its rings and buffers; the raw pointers it holds point into its own DMA
// memory, which moves with it. What it shares with the device and the other queues is the BAR
// (`R: Sync`; it writes only its own UAR's doorbells) and the device state behind a Mutex.
unsafe impl<R: RegisterIo64 + Send + Sync> Send for Mlx5Queue<R> {}

impl<R: RegisterIo64> Mlx5Queue<R> {
    /// The 60-byte frame `tx_flush` sends when it needs a completion: to our own MAC with the
    /// IEEE local-experimental EtherType 0x88B5, which no flow rule of ours matches.
    fn write_marker(&mut self) {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&self.addr.mac);
        f[6..12].copy_from_slice(&self.addr.mac);
        f[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
        // SAFETY: the marker page is ours, mapped while the queue lives (in `mem`), and no WQE
        // points at it yet.
        unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), self.marker.base().as_ptr(), f.len()) };
    }

    /// Rings the send doorbell for the WQEs posted since the last one.
    fn doorbell(&mut self) {
        self.tx.publish();
        let off = self.uar_base + self.bf;
        self.bar.write64(off, u64::from_le_bytes(self.tx.last_ctrl));
        self.bf ^= self.bf_half;
        self.stats.tx_doorbells += 1;
    }

    /// Reads TX completions; an error completion resets the send queue (the protocol
    /// retransmits what was lost).
    fn reap_tx(&mut self) {
        let r = self.tx.reap();
        self.stats.tx_completions += r.completions;
        self.stats.tx_malformed_cqes += r.malformed;
        if r.errors > 0 {
            self.stats.tx_error_cqes += r.errors;
            if let Some((synd, vendor, idx)) = r.last_error {
                log::warn!(
                    "mlx5: send queue {} error completion at WQE {idx} (syndrome {synd:#x}, vendor \
                     syndrome {vendor:#x}); resetting it",
                    self.tx.sqn
                );
            }
            self.reset_sq(qstate::ERR);
        }
    }

    /// Moves the SQ from `from` to RST and back to RDY: the device drops every WQE posted and
    /// reads none of them again.
    fn reset_sq(&mut self, from: u32) {
        self.stats.sq_resets += 1;
        let sqn = self.tx.sqn;
        let dev = self.dev.clone();
        let mut st = dev.lock();
        let r = objects::modify_sq(&mut st.hca, sqn, from, qstate::RST);
        self.tx.reset();
        // Completions of the dropped WQEs (flush errors) are stale now.
        while self.tx.cq.poll().is_some() {}
        self.tx.cq.update_ci();
        if let Err(e) = r.and_then(|()| objects::modify_sq(&mut st.hca, sqn, qstate::RST, qstate::RDY)) {
            log::error!("mlx5: resetting send queue {sqn}: {e}");
        }
    }

    /// This queue's counters (the device's events and pages are in [`Mlx5Device::stats`]).
    pub fn stats(&self) -> Mlx5Stats {
        let mut s = self.stats;
        s.tx_packets = self.tx.accepted;
        s.rx_wqes_reposted = self.rx.reposted;
        s
    }

    /// Receive WQEs posted that the device has not finished.
    pub fn rx_wqes_posted(&self) -> u32 {
        self.rx.wqes_posted()
    }

    /// The send queue number.
    pub fn sqn(&self) -> Sqn {
        self.tx.sqn
    }

    /// Its flow entry's index in the device's steering table.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The register access (tests inspect their model through it).
    pub fn registers(&self) -> &R {
        &self.bar
    }
}

impl<R: RegisterIo64> Transport for Mlx5Queue<R> {
    fn mtu(&self) -> usize {
        self.dev.cfg.mtu
    }

    fn local_addr(&self) -> EndpointAddr {
        self.addr
    }

    fn max_tx_in_flight(&self) -> usize {
        // A WQEBB is rewritten only after a completion showed the device read it; a packet takes
        // at least one, so fewer than sq_size later packets can be queued while it is unread.
        self.tx.size() as usize - 1
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        self.reap_tx();
        let (mut n, pi0) = (0, self.tx.pi);
        let mtu = self.dev.cfg.mtu;
        for p in pkts {
            if p.len() > mtu || (p.segs[0].len as usize) < L2_INLINE {
                self.stats.tx_dropped_oversize += 1;
                self.tx.skip();
                n += 1;
                continue;
            }
            let k = if p.segs[1].len == 0 { 1 } else { 2 };
            // SAFETY: the Transport contract (`erpc_dataplane::transport`): a packet's segments
            // are readable, and mapped for the device in the endpoint's region, until it is
            // known read (`tx_reclaimed`) or `tx_flush` returned; the first is at least
            // `L2_INLINE` bytes (checked above).
            if !unsafe { self.tx.post(&p.segs[..k], false) } {
                break;
            }
            n += 1;
        }
        if self.tx.pi != pi0 {
            self.doorbell();
        }
        n
    }

    fn tx_flush(&mut self) {
        self.stats.tx_flushes += 1;
        self.reap_tx();
        if self.tx.idle() {
            return;
        }
        if !self.tx.last_signaled() {
            // Ask for a completion behind every WQE posted: the marker frame, signaled.
            let m = Segment { vaddr: self.marker.base().as_ptr(), iova: self.marker.iova(), len: 60 };
            // SAFETY: the marker frame, 60 bytes of our own memory mapped while the queue lives.
            while !unsafe { self.tx.post(&[m], true) } {
                self.reap_tx();
            }
            self.stats.tx_flush_markers += 1;
            self.doorbell();
        }
        let t0 = Instant::now();
        while !self.tx.idle() {
            self.reap_tx();
            if t0.elapsed() > self.cfg.flush_timeout {
                // The device stopped reading (link down?). Its queued WQEs point at buffers the
                // caller is about to reuse: reset the queue so they are never sent.
                self.stats.tx_flush_timeouts += 1;
                log::warn!(
                    "mlx5 tx_flush: the device did not complete the send queue in {:?}; resetting it",
                    self.cfg.flush_timeout
                );
                self.reset_sq(qstate::RDY);
                return;
            }
            std::hint::spin_loop();
        }
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        self.polls_left -= 1;
        if self.polls_left == 0 {
            self.polls_left = self.cfg.eq_poll_interval;
            // Never wait for another thread's command: another queue, or the next poll, will
            // serve the event queue.
            if let Ok(mut st) = self.dev.state.try_lock() {
                self.dev.poll_events(&mut st);
            }
        }
        let mut d = RxDrops::default();
        let n = self.rx.poll(out, &mut d);
        self.stats.rx_packets += n as u64;
        self.stats.rx_filler_cqes += d.filler;
        self.stats.rx_bad_opcode_cqes += d.bad_opcode;
        self.stats.rx_malformed_cqes += d.malformed;
        if d.error_cqes > 0 {
            self.stats.rx_error_cqes += d.error_cqes;
            if let Some((s, v)) = d.last_error {
                log::warn!("mlx5: receive error completion (syndrome {s:#x}, vendor syndrome {v:#x})");
            }
        }
        n
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        for p in pkts {
            if !self.rx.release(p.id) {
                self.stats.rx_bad_release += 1;
            }
        }
        self.rx.repost();
    }

    fn tx_reclaimed(&self) -> u64 {
        self.tx.reclaimed
    }
}

impl<R: RegisterIo64> Drop for Mlx5Queue<R> {
    fn drop(&mut self) {
        // Destroy the flow entry first (the teardown list is in reverse), then the TIR, queues
        // and CQs: from then on the device no longer touches this queue's memory. The other
        // queues are untouched.
        let dev = self.dev.clone();
        let mut st = dev.lock();
        let failed = self.teardown.run(&mut st.hca);
        st.queues[self.index as usize] = None;
        if failed > 0 {
            // The device may still use what it failed to destroy: never unmap it.
            std::mem::forget(self.mem.take());
        }
    }
}

/// A ConnectX function with one queue pair, implementing [`Transport`]: an [`Mlx5Device`] and
/// its [`Mlx5Queue`], for single-endpoint use.
pub struct Mlx5Nic<R: RegisterIo64 = Bar> {
    // The queue goes first, then the device.
    queue: Mlx5Queue<R>,
    device: Mlx5Device<R>,
}

impl Mlx5Nic<Bar> {
    /// Opens the ConnectX function `bdf` (bound to vfio-pci) in `container` and brings up one
    /// queue pair. `space` must be the DMA space of the same container
    /// (`DmaSpace::vfio(container.clone())`): the queues and firmware pages are allocated from
    /// it, and the dataplane's msgbufs must come from it too.
    pub fn open(
        container: &Arc<vfio_ioctls::VfioContainer>,
        space: &Arc<DmaSpace>,
        bdf: &str,
        cfg: Mlx5Config,
    ) -> Result<Mlx5Nic<Bar>, Mlx5Error> {
        let q = cfg.queue();
        q.check(cfg.mtu)?;
        let (pci, bar) = open_function(container, space, bdf)?;
        let device = Mlx5Device::bring_up(bar, space.clone(), cfg.device(), Some(pci), Some(&q))?;
        let queue = device.open_queue(q)?;
        Ok(Mlx5Nic { queue, device })
    }
}

impl<R: RegisterIo64> Mlx5Nic<R> {
    /// Brings up the function behind `bar` (a mapped BAR0, or a device model in tests) and one
    /// queue pair. `space` is the DMA space the device reaches memory through: the dataplane's
    /// msgbufs must come from it too.
    pub fn with_bar(bar: R, space: Arc<DmaSpace>, cfg: Mlx5Config) -> Result<Mlx5Nic<R>, Mlx5Error> {
        let q = cfg.queue();
        q.check(cfg.mtu)?;
        let device = Mlx5Device::bring_up(bar, space, cfg.device(), None, Some(&q))?;
        let queue = device.open_queue(q)?;
        Ok(Mlx5Nic { queue, device })
    }

    /// Handles what the event queue holds (see [`Mlx5Device::poll_events`]).
    pub fn poll_events(&mut self) {
        self.device.poll_events();
    }

    /// The queue's and the device's counters together.
    pub fn stats(&self) -> Mlx5Stats {
        self.queue.stats().plus(&self.device.stats())
    }

    /// Firmware pages held now.
    pub fn pages_given(&self) -> usize {
        self.device.pages_given()
    }

    /// Receive WQEs posted that the device has not finished.
    pub fn rx_wqes_posted(&self) -> u32 {
        self.queue.rx_wqes_posted()
    }

    /// The register access (tests inspect their model through it).
    pub fn registers(&self) -> &R {
        self.device.registers()
    }

    /// The send queue number.
    pub fn sqn(&self) -> Sqn {
        self.queue.sqn()
    }

    /// The device's capabilities as bring-up read them.
    pub fn caps(&self) -> &Caps {
        self.device.caps()
    }

    /// The firmware version (major, minor, sub-minor).
    pub fn fw_version(&self) -> (u16, u16, u16) {
        self.device.fw_version()
    }

    /// The device.
    pub fn device(&self) -> &Mlx5Device<R> {
        &self.device
    }
}

impl<R: RegisterIo64> Transport for Mlx5Nic<R> {
    fn mtu(&self) -> usize {
        self.queue.mtu()
    }

    fn local_addr(&self) -> EndpointAddr {
        self.queue.local_addr()
    }

    fn max_tx_in_flight(&self) -> usize {
        self.queue.max_tx_in_flight()
    }

    fn tx_burst(&mut self, pkts: &[TxPacket]) -> usize {
        self.queue.tx_burst(pkts)
    }

    fn tx_flush(&mut self) {
        self.queue.tx_flush()
    }

    fn rx_burst(&mut self, out: &mut [RxPacket]) -> usize {
        self.queue.rx_burst(out)
    }

    fn rx_release(&mut self, pkts: &[RxPacket]) {
        self.queue.rx_release(pkts)
    }

    fn tx_reclaimed(&self) -> u64 {
        self.queue.tx_reclaimed()
    }
}

/// Compile-time checks: a queue moves to its endpoint's thread; the device handle too.
#[allow(dead_code)]
fn assert_send() {
    fn send<T: Send>() {}
    send::<Mlx5Queue<Bar>>();
    send::<Mlx5Device<Bar>>();
    send::<Mlx5Nic<Bar>>();
}

/// What the vport says and was told: our MAC, and the headers every send WQE must inline.
struct Vport {
    mac: [u8; 6],
    /// `MLX5_INLINE_MODE_*` for the SQ context, and the bytes it means.
    inline_mode: u32,
    inline: usize,
}

/// Reads our MAC and the inline mode the device requires, raises the port MTU if needed and
/// sets the vport's MTU and promiscuity.
fn configure_vport<R: RegisterIo>(hca: &mut Hca<R>, cfg: &Mlx5DeviceConfig) -> Result<Vport, Mlx5Error> {
    let v: QueryVportOut = hca.call(&QueryVportIn::new())?;
    let mac47 = v.ctx.mac_47_32.get().to_be_bytes();
    let mac31 = v.ctx.mac_31_0.get().to_be_bytes();
    let mac = [mac47[0], mac47[1], mac31[0], mac31[1], mac31[2], mac31[3]];
    // The headers every send WQE must inline: the Ethernet offload capabilities say, or defer
    // to the vport context (Linux `mlx5_query_min_inline`).
    let inline_mode = match hca.caps().wqe_inline_mode {
        Some(InlineCap::L2) => INLINE_MODE_L2,
        Some(InlineCap::VportContext) => (v.ctx.flags.get() >> 24) & 7,
        Some(InlineCap::NotRequired) | None => INLINE_MODE_NONE,
    };
    let inline = match inline_mode {
        INLINE_MODE_NONE => 0,
        INLINE_MODE_L2 => L2_INLINE,
        m => {
            return Err(Mlx5Error::Config(format!(
                "the vport requires inline mode {m} (IP or transport headers inline); this driver inlines \
                 only L2 headers: set the function's min_wqe_inline_mode to L2 (mlxconfig) or use a newer NIC"
            )))
        }
    };
    // The port MTU: the hardware counts the Ethernet header, a VLAN tag and the FCS.
    let hw_mtu = (cfg.mtu + 8) as u16;
    let p: AccessPmtuOut = hca.call(&AccessPmtuIn::read(1))?;
    if p.data.max_mtu.get() < hw_mtu {
        return Err(Mlx5Error::Config(format!(
            "mtu = {}: the port supports frames of at most {} bytes",
            cfg.mtu,
            p.data.max_mtu.get().saturating_sub(8)
        )));
    }
    if p.data.admin_mtu.get() < hw_mtu {
        let _: AccessPmtuOut = hca.call(&AccessPmtuIn::write_admin_mtu(1, hw_mtu))?;
    }
    hca.exec(ModifyVportIn::mtu_and_promisc(hw_mtu, cfg.promiscuous).as_bytes(), 16)?;
    Ok(Vport { mac, inline_mode, inline })
}
