//! A ConnectX function as an eRPC [`Transport`]: bring-up of every object one queue pair needs,
//! the datapath (in [`super::tx`] and [`super::rx`]), firmware page requests arriving through
//! the event queue during operation, and an orderly teardown.
//!
//! Objects, in creation order (each destroyed in reverse order on drop or on a failure
//! part-way, from the typed teardown list of `objects.rs`): UAR, PD, transport domain, EQ (page
//! requests, CQ and WQ errors, port changes), RX CQ, TX CQ, TIS, SQ (RST → RDY), striding RQ
//! (RST → RDY), TIR, flow table, flow group, flow entry, root table.

use super::cmd::write_be;
use super::handles::Sqn;
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
use erpc_hugepages::{DmaMemory, DmaSlice, DmaSpace};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// Settings of a ConnectX queue pair.
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
    fn check(&self) -> Result<(), Mlx5Error> {
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
        if !(64..=9000).contains(&self.mtu) || self.mtu > buf {
            return bad(format!("mtu = {}: use 64..=9000, at most a receive buffer ({buf} bytes)", self.mtu));
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

    /// Checks the configuration against what the device reports (QUERY_HCA_CAP), before
    /// anything is created: an error names the capability and says what to change.
    fn fits(&self, caps: &Caps) -> Result<(), Mlx5Error> {
        let need = |ok: bool, cap: &'static str, value: u32, what: String| {
            if ok {
                Ok(())
            } else {
                Err(Mlx5Error::Capability { cap, value, what })
            }
        };
        need(
            caps.striding_rq,
            "striding_rq",
            0,
            "this driver receives into a striding (multi-packet) RQ, which the device does not offer: \
             use a ConnectX-4 Lx or later"
                .into(),
        )?;
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
        need(
            EQ_LOG <= caps.log_max_eq_sz,
            "log_max_eq_sz",
            caps.log_max_eq_sz,
            format!("the event queue has 2^{EQ_LOG} entries: the device cannot make one"),
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

/// A ConnectX function driven from userspace: one send queue and one striding receive queue,
/// implementing [`Transport`].
pub struct Mlx5Nic<R: RegisterIo64> {
    // Drop order: Drop::drop destroys the queue objects, then `hca` tears the function down
    // (the device stops all DMA), and only then is the queue memory unmapped.
    hca: Hca<R>,
    tx: Tx,
    rx: Rx,
    eq: Eq,
    /// BAR0 offset of our UAR page (the UAR number times the device's UAR page size).
    uar_base: u32,
    /// The BlueFlame buffer the next doorbell goes to (its offset in the UAR page), and the
    /// distance to the other one (0 without BlueFlame: always the first).
    bf: u32,
    bf_half: u32,
    addr: EndpointAddr,
    cfg: Mlx5Config,
    /// The objects created, destroyed in reverse order on drop.
    teardown: Teardown,
    stats: Mlx5Stats,
    /// `rx_burst` calls left until the next event-queue poll.
    polls_left: u32,
    /// The marker frame `tx_flush` sends when the last WQE was unsignaled (in `_rings`).
    marker: DmaSlice<'static>,
    // After `hca`: the VFIO device closes once the function is torn down.
    _pci: Option<PciFunction>,
    _rings: DmaMemory,
    _bufs: DmaMemory,
}

// SAFETY: the NIC owns its rings, buffers and registers; the raw pointers it holds point into
// its own DMA memory, which moves with it.
unsafe impl<R: RegisterIo64 + Send> Send for Mlx5Nic<R> {}

/// Memory of the rings, carved in this order out of one allocation.
struct Rings<'a> {
    eq: DmaSlice<'a>,
    dbr: DmaSlice<'a>,
    rx_cq: DmaSlice<'a>,
    tx_cq: DmaSlice<'a>,
    sq: DmaSlice<'a>,
    rq: DmaSlice<'a>,
    marker: DmaSlice<'a>,
}

const EQ_LOG: u32 = 6;
/// The events the EQ takes: firmware page requests, CQ and WQ errors, port changes.
const EQ_EVENTS: [u8; 4] = [event::PAGE_REQUEST, event::CQ_ERROR, event::WQ_CATAS_ERROR, event::PORT_CHANGE];

fn log2(n: u32) -> u32 {
    n.trailing_zeros()
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
        let mut nic = Mlx5Nic::with_bar(bar, space.clone(), cfg)?;
        nic._pci = Some(pci);
        Ok(nic)
    }
}

impl<R: RegisterIo64> Mlx5Nic<R> {
    /// Brings up the function behind `bar` (a mapped BAR0, or a device model in tests) and one
    /// queue pair. `space` is the DMA space the device reaches memory through: the dataplane's
    /// msgbufs must come from it too.
    pub fn with_bar(bar: R, space: Arc<DmaSpace>, cfg: Mlx5Config) -> Result<Mlx5Nic<R>, Mlx5Error> {
        cfg.check()?;
        let mut hca = Hca::bring_up(bar, space.clone(), cfg.hca.clone())?;
        log::info!(
            "mlx5: firmware {}.{}.{}; {}",
            hca.fw_version().0,
            hca.fw_version().1,
            hca.fw_version().2,
            hca.caps()
        );
        cfg.fits(hca.caps())?;
        let page = hca.page();
        // Queue memory, sized before anything is created so a failure creates nothing.
        let (rx_cq_log, tx_cq_log) = (cfg.rx_cq_log(), cfg.tx_cq_log());
        let sizes = [
            64 << EQ_LOG,
            PAGE,
            64usize << rx_cq_log,
            64usize << tx_cq_log,
            cfg.sq_size as usize * WQEBB,
            cfg.rq_wqes as usize * 32,
            PAGE,
        ];
        let rings_mem = space.alloc(sizes.iter().map(|s| s.next_multiple_of(PAGE)).sum(), page)?;
        let bufs_mem = space.alloc(cfg.rq_wqes as usize * cfg.strides as usize * cfg.stride_size as usize, page)?;
        let mut left = rings_mem.as_slice();
        let mut carve = |len: usize| left.take(len, PAGE).expect("sized from the same list");
        let rings = Rings {
            eq: carve(sizes[0]),
            dbr: carve(sizes[1]),
            rx_cq: carve(sizes[2]),
            tx_cq: carve(sizes[3]),
            sq: carve(sizes[4]),
            rq: carve(sizes[5]),
            marker: carve(sizes[6]),
        };
        // SAFETY: fresh memory, not yet given to the device; nothing else holds it.
        unsafe { rings.dbr.fill(0) };

        let mut teardown = Teardown::default();
        // SAFETY: `rings` and the buffers are disjoint parts of `rings_mem` and `bufs_mem`,
        // used by nothing else and not yet given to the device. Both allocations move into
        // the returned Mlx5Nic and are dropped after `hca` (which stops the device's DMA), and
        // on an error below only after `hca` has been dropped.
        let r = unsafe { Self::create_objects(&mut hca, &cfg, &rings, bufs_mem.as_slice(), &mut teardown) };
        let (objs, tx, rx, eq) = match r {
            Ok(v) => v,
            Err(e) => {
                teardown.run(&mut hca);
                // The function torn down (no more DMA) before the queue memory is unmapped.
                drop(hca);
                return Err(e);
            }
        };
        let mut nic = Mlx5Nic {
            uar_base: objs.uar_base,
            bf: BF_OFFSET,
            bf_half: hca.caps().bf_half(),
            hca,
            tx,
            rx,
            eq,
            addr: EndpointAddr { mac: objs.mac, ipv4: cfg.ipv4, udp_port: cfg.udp_port },
            polls_left: cfg.eq_poll_interval,
            cfg,
            teardown,
            stats: Mlx5Stats::default(),
            // SAFETY: `rings_mem` moves into the same Mlx5Nic and is dropped after it is used.
            marker: unsafe { rings.marker.detach() },
            _pci: None,
            _rings: rings_mem,
            _bufs: bufs_mem,
        };
        nic.write_marker();
        // Page requests the firmware raised while the queues were created.
        nic.poll_events();
        Ok(nic)
    }

    /// Creates every object of the queue pair, in order, each recorded in `teardown` as soon
    /// as it exists: the vport settings, UAR, PD, transport domain, EQ, CQs, TIS and SQ, the
    /// striding RQ, TIR and steering.
    ///
    /// # Safety
    /// `rings` and `bufs` must stay mapped while the returned queues are used (and the device
    /// may use them: until the HCA is torn down), be used by nothing else, and not have been
    /// given to the device yet.
    unsafe fn create_objects(
        hca: &mut Hca<R>,
        cfg: &Mlx5Config,
        rings: &Rings<'_>,
        bufs: DmaSlice<'_>,
        teardown: &mut Teardown,
    ) -> Result<(Objects, Tx, Rx, Eq), Mlx5Error> {
        let vport = configure_vport(hca, cfg)?;
        let caps = hca.caps().clone();
        let mut c = Creator { hca, teardown };
        let uar = c.alloc_uar()?;
        let uar_base = u32::try_from(u64::from(uar.0) * caps.uar_page_bytes()).map_err(|_| {
            Mlx5Error::Config(format!("ALLOC_UAR gave {uar}, beyond a 32-bit BAR offset: reset the device"))
        })?;
        let pd = c.alloc_pd()?;
        let td = c.alloc_td()?;
        let lkey = c.reserved_lkey()?;

        // The event queue: firmware page requests, CQ and WQ errors, port changes.
        // SAFETY: each ring is its own part of `rings` (or `bufs`), which this function's
        // contract keeps mapped, ours and not yet the device's (as for every queue below).
        let mut eq = unsafe { Eq::new(rings.eq, EQ_LOG) };
        eq.eqn = c.create_eq(CreateEqIn::new(Eqc::new(EQ_LOG, uar), &EQ_EVENTS), rings.eq)?;

        // Completion queues: the RX one holds a CQE per stride, so it cannot overrun.
        let (rx_cq_log, tx_cq_log) = (cfg.rx_cq_log(), cfg.tx_cq_log());
        let (rx_cq_dbr, tx_cq_dbr) = (rings.dbr.sub(128, 8), rings.dbr.sub(192, 8));
        // SAFETY: as above (the doorbell records: one word each, ours alone).
        let mut rx_cq = unsafe { Cq::new(rings.rx_cq, rx_cq_log, DbRec::new(rx_cq_dbr, 0)) };
        let cqc = Cqc::new(rx_cq_log, uar, eq.eqn, rx_cq_dbr.iova());
        rx_cq.cqn = c.create_cq(CreateCqIn::new(cqc), rings.rx_cq.sub(0, 64 << rx_cq_log))?;
        // SAFETY: as above.
        let mut tx_cq = unsafe { Cq::new(rings.tx_cq, tx_cq_log, DbRec::new(tx_cq_dbr, 0)) };
        let cqc = Cqc::new(tx_cq_log, uar, eq.eqn, tx_cq_dbr.iova());
        tx_cq.cqn = c.create_cq(CreateCqIn::new(cqc), rings.tx_cq.sub(0, 64 << tx_cq_log))?;

        // The send side: TIS, then the SQ (RST → RDY).
        let tisn = c.create_tis(CreateTisIn::new(Tisc::new(td)))?;
        let sq_dbr = rings.dbr.sub(64, 8);
        let (sq_size, signal) = (cfg.sq_size, cfg.signal_every);
        // SAFETY: as above.
        let mut tx = unsafe { Tx::new(rings.sq, sq_size, lkey, vport.inline, DbRec::new(sq_dbr, 1), signal, tx_cq) };
        let wq = Wq::new(wq_type::CYCLIC, pd, uar, sq_dbr.iova(), 6, log2(cfg.sq_size));
        tx.sqn = c.create_sq(CreateSqIn::new(Sqc::new(tx.cq.cqn, tisn, vport.inline_mode, wq)), rings.sq)?;

        // The receive side: the striding RQ, posted in full before it is made ready.
        let rq_dbr = rings.dbr.sub(0, 8);
        let geometry = RxGeometry { wqes: cfg.rq_wqes, strides: cfg.strides, stride_log: log2(cfg.stride_size) };
        // SAFETY: as above.
        let rx = unsafe { Rx::new(rings.rq, bufs, geometry, lkey, DbRec::new(rq_dbr, 0), rx_cq) };
        let wq = Wq::new(wq_type::CYCLIC_STRIDING_RQ, pd, uar, rq_dbr.iova(), 5, log2(cfg.rq_wqes))
            .with_strides(log2(cfg.strides), log2(cfg.stride_size));
        let rqn = c.create_rq(CreateRqIn::new(Rqc::new(rx.cq.cqn, wq)), rings.rq)?;

        // Steering: a TIR to the RQ, and our frames to it.
        let tir = c.create_tir(CreateTirIn::new(Tirc::direct(rqn, td)))?;
        let m = RxMatch { mac: vport.mac, ipv4: cfg.ipv4, udp_port: cfg.udp_port };
        c.steer(tir, &m, caps.reset_root_to_default)?;

        Ok((Objects { uar_base, mac: vport.mac }, tx, rx, eq))
    }

    /// The 60-byte frame `tx_flush` sends when it needs a completion: to our own MAC with the
    /// IEEE local-experimental EtherType 0x88B5, which no flow rule of ours matches.
    fn write_marker(&mut self) {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&self.addr.mac);
        f[6..12].copy_from_slice(&self.addr.mac);
        f[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
        // SAFETY: the marker page is ours, mapped while the NIC lives (in `_rings`), and no WQE
        // points at it yet.
        unsafe { std::ptr::copy_nonoverlapping(f.as_ptr(), self.marker.base().as_ptr(), f.len()) };
    }

    /// Rings the send doorbell for the WQEs posted since the last one.
    fn doorbell(&mut self) {
        self.tx.publish();
        let off = self.uar_base + self.bf;
        self.hca.bar().write64(off, u64::from_le_bytes(self.tx.last_ctrl));
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
        let r = objects::modify_sq(&mut self.hca, sqn, from, qstate::RST);
        self.tx.reset();
        // Completions of the dropped WQEs (flush errors) are stale now.
        while self.tx.cq.poll().is_some() {}
        self.tx.cq.update_ci();
        if let Err(e) = r.and_then(|()| objects::modify_sq(&mut self.hca, sqn, qstate::RST, qstate::RDY)) {
            log::error!("mlx5: resetting send queue {sqn}: {e}");
        }
    }

    /// Handles what the event queue holds: firmware page requests (given or taken back at
    /// once), errors (logged and counted). Called from `rx_burst` every
    /// [`Mlx5Config::eq_poll_interval`] calls; call it directly when not receiving.
    pub fn poll_events(&mut self) {
        let mut any = false;
        while let Some(e) = self.eq.poll() {
            any = true;
            self.stats.events += 1;
            match e.type_ {
                event::PAGE_REQUEST => {
                    self.stats.page_requests += 1;
                    let n = e.data.num_pages.get();
                    let r = if n > 0 {
                        self.hca.give_pages(n as usize).map(|()| self.stats.pages_given += n as u64)
                    } else {
                        self.hca.take_pages(n.unsigned_abs() as usize).map(|k| self.stats.pages_returned += k as u64)
                    };
                    if let Err(err) = r {
                        self.stats.page_request_failures += 1;
                        log::error!("mlx5: firmware asked for {n} pages: {err}");
                    }
                }
                event::CQ_ERROR | event::WQ_CATAS_ERROR => {
                    self.stats.error_events += 1;
                    log::error!("mlx5: error event {:#x} (sub-type {:#x})", e.type_, e.sub_type);
                }
                _ => log::info!("mlx5: event {:#x} (sub-type {:#x})", e.type_, e.sub_type),
            }
        }
        if any {
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            write_be(
                self.hca.bar(),
                self.uar_base + EQ_DOORBELL_UPDATE,
                self.eq.eqn.0 << 24 | (self.eq.ci & 0xff_ffff),
            );
        }
    }

    pub fn stats(&self) -> Mlx5Stats {
        let mut s = self.stats;
        s.tx_packets = self.tx.accepted;
        s.rx_wqes_reposted = self.rx.reposted;
        s
    }

    /// Firmware pages held now.
    pub fn pages_given(&self) -> usize {
        self.hca.pages_given()
    }

    /// Receive WQEs posted that the device has not finished.
    pub fn rx_wqes_posted(&self) -> u32 {
        self.rx.wqes_posted()
    }

    /// The register access (tests inspect their model through it).
    pub fn registers(&self) -> &R {
        self.hca.bar()
    }

    /// The send queue number.
    pub fn sqn(&self) -> Sqn {
        self.tx.sqn
    }

    /// The device's capabilities as bring-up read them.
    pub fn caps(&self) -> &Caps {
        self.hca.caps()
    }

    /// The firmware version (major, minor, sub-minor).
    pub fn fw_version(&self) -> (u16, u16, u16) {
        self.hca.fw_version()
    }
}

/// What `create_objects` hands back besides the rings.
struct Objects {
    uar_base: u32,
    mac: [u8; 6],
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
fn configure_vport<R: RegisterIo>(hca: &mut Hca<R>, cfg: &Mlx5Config) -> Result<Vport, Mlx5Error> {
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

impl<R: RegisterIo64> Transport for Mlx5Nic<R> {
    fn mtu(&self) -> usize {
        self.cfg.mtu
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
        for p in pkts {
            if p.len() > self.cfg.mtu || (p.segs[0].len as usize) < L2_INLINE {
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
            // SAFETY: the marker frame, 60 bytes of our own memory mapped while the NIC lives.
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
            self.poll_events();
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

impl<R: RegisterIo64> Drop for Mlx5Nic<R> {
    fn drop(&mut self) {
        self.teardown.run(&mut self.hca);
    }
}
