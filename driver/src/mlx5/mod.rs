//! Userspace driver for NVIDIA ConnectX (mlx5) NICs over VFIO, with no C library: the
//! firmware's command queue is driven directly.
//!
//! * [`cmd`]: the command interface (one entry used synchronously, inline data and mailbox
//!   chains, delivery status, status and syndrome decoded into [`CmdError`] naming the command).
//! * [`Hca`]: bring-up and teardown of the function: firmware-ready wait, ENABLE_HCA, ISSI,
//!   firmware pages for boot, init and regular use (MANAGE_PAGES from DMA memory mapped for the
//!   device), QUERY_HCA_CAP and SET_HCA_CAP (command signatures off, 4 KiB UAR pages),
//!   INIT_HCA, then the capabilities the driver depends on; TEARDOWN_HCA, page reclaim and
//!   DISABLE_HCA on drop and on an error part-way.
//! * [`caps`]: those capabilities ([`Caps`]: BlueFlame and UAR page sizes, queue, CQ and stride
//!   limits, the inline mode, `reset_root_to_default`), read from the device, never assumed;
//!   a configuration the device cannot do is refused with [`Mlx5Error::Capability`] naming
//!   the capability.
//! * [`Mlx5Device`] (`nic.rs`): the function, opened once per process: vport (MAC, MTU,
//!   promiscuity), PD, transport domain, reserved lkey, the event queue (firmware page requests
//!   during operation) and the NIC RX steering table. It hands out [`Mlx5Queue`]s, one queue
//!   pair per endpoint, each a `Send` [`Transport`](erpc_dataplane::Transport) with its own
//!   UAR, CQs, TIS, SQ, cyclic striding RQ, TIR and the flow entry that steers its endpoint's
//!   UDP port to it; a queue's drop destroys its objects only, the device's last handle or
//!   queue the rest. [`Mlx5Nic`] is a device with one queue pair.
//! * `tx.rs`: zero-copy SEND WQEs, unsignaled completions, BlueFlame doorbells, `tx_flush`.
//! * `rx.rs`: the striding RQ datapath: packets lent in place, filler CQEs, reposting a buffer
//!   only once all its strides are released, malformed CQEs dropped and counted.
//! * `objects.rs`: the create commands of one queue pair, each object recorded in a typed
//!   teardown list (`Teardown` of `Object`s) the moment it exists and destroyed from it in
//!   reverse; [`handles`]: the objects' numbers as types (`Cqn`, `Sqn`, `Rqn`, `Tisn`,
//!   `Tirn`, `Pd`, `Td`, `Uar`, `Eqn`, `FtId`, `FgId`).
//! * `queues.rs`: CQ and EQ polling (owner bits), doorbell records, queue memory.
//! * `steering.rs`: the flow table, group and entry inputs.
//! * [`layout`] and [`wqe`]: every command, context, WQE, CQE and EQE layout as zerocopy
//!   structs, each citing its public definition, with a constructor next to each context
//!   (`Cqc::new`, `Sqc::new`, `Rqc::new`, `Wq::new`, `Tirc::direct`, ...), so the bit positions
//!   are written once. An output shorter than its layout is an error
//!   ([`CmdError::ShortOutput`]), never read as zeros.
//!
//! Tests: `tests/tests/mlx5/` runs the driver against an independent device model
//! (`tests/mlx5_model`, which decodes every command and WQE with its own definitions from the
//! public headers and carries traffic between two instances): `hca` (bring-up, unwinding,
//! pages), `queue_pair`, `datapath`, `multiqueue` (each queue's objects and flow entry checked
//! against the model, frames reaching only their queue, endpoints on threads) and
//! `capabilities`; `tests/tests/mlx5_model/` tests the
//! model itself. Unit tests: the capability fields (`caps`), short outputs (`cmd`), the
//! teardown list (`objects`), the flow entry (`steering`), the bit-field accessors (`layout`).
//! On hardware: `erpc-loopback` on two cabled ports (`tests/vm/loopback.rs`; the README's
//! "First run on a real ConnectX").

pub mod caps;
pub mod cmd;
pub mod handles;
pub mod layout;
mod nic;
mod objects;
mod queues;
mod rx;
mod steering;
mod tx;
pub mod wqe;

pub use nic::{Mlx5Config, Mlx5Device, Mlx5DeviceConfig, Mlx5Nic, Mlx5Queue, Mlx5QueueConfig, Mlx5Stats};

use crate::mmio::RegisterIo;
pub use caps::{Caps, InlineCap};
use cmd::{read_be, write_be, CmdError, CmdQueue, MAX_PAGES_PER_CMD};
use erpc_hugepages::{DmaError, DmaMemory, DmaSpace, PageSize};
use layout::*;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, IntoBytes};

/// Firmware page size (`MLX5_ADAPTER_PAGE_SIZE`).
const FW_PAGE: usize = 4096;

/// Settings of the bring-up.
#[derive(Clone, Debug)]
pub struct HcaConfig {
    /// Pages of the DMA memory (command queue, firmware pages).
    pub page: PageSize,
    /// How long to wait for the firmware to finish initializing (rdma-core allows 120 s).
    pub fw_ready_timeout: Duration,
    /// How long one command may take.
    pub cmd_timeout: Duration,
}

impl Default for HcaConfig {
    fn default() -> Self {
        HcaConfig {
            page: PageSize::Huge2M,
            fw_ready_timeout: Duration::from_secs(120),
            cmd_timeout: Duration::from_secs(60),
        }
    }
}

/// Why the HCA could not be brought up. Each message says what happened and what to do.
#[derive(Debug)]
pub enum Mlx5Error {
    /// `initializing` stayed set.
    FirmwareNotReady { waited: Duration, health_syndrome: u8 },
    /// The device speaks another command interface revision.
    CmdIfRev(u32),
    /// The device's command queue geometry is not what this driver supports.
    CmdQueue { log_size: u32, log_stride: u32 },
    /// A command failed.
    Cmd(CmdError),
    /// DMA memory for the command queue or firmware pages.
    Dma(DmaError),
    /// A setting the driver or the device cannot use; the message says which and what to use.
    Config(String),
    /// Opening the PCI function through VFIO.
    Device(crate::vfio::DeviceError),
    /// The PCI function is not a ConnectX this driver knows.
    Unsupported { bdf: String, vendor: u16, device: u16 },
    /// The device cannot do what the configuration asks: `cap` (its name in `mlx5_ifc.h`) is
    /// `value`; `what` says what needs it and what to use instead.
    Capability { cap: &'static str, value: u32, what: String },
}

impl fmt::Display for Mlx5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mlx5Error::FirmwareNotReady { waited, health_syndrome } => write!(
                f,
                "the ConnectX firmware did not become ready within {:.1} s (health syndrome {health_syndrome:#x}): \
                 reset the device or update its firmware",
                waited.as_secs_f64()
            ),
            Mlx5Error::CmdIfRev(r) => {
                write!(f, "the device's command interface revision is {r}, this driver speaks {CMD_IF_REV}")
            }
            Mlx5Error::CmdQueue { log_size, log_stride } => {
                write!(f, "unsupported command queue geometry: 2^{log_size} entries of 2^{log_stride} bytes")
            }
            Mlx5Error::Cmd(e) => write!(f, "{e}"),
            Mlx5Error::Dma(e) => write!(f, "{e}"),
            Mlx5Error::Config(m) => write!(f, "{m}"),
            Mlx5Error::Device(e) => write!(f, "{e}"),
            Mlx5Error::Unsupported { bdf, vendor, device } => write!(
                f,
                "{bdf} ({vendor:04x}:{device:04x}) is not a ConnectX-4/5/6/7: `erpc nic list` shows which \
                 devices the mlx5 driver takes"
            ),
            Mlx5Error::Capability { cap, value, what } => {
                write!(f, "the device reports {cap} = {value}: {what}")
            }
        }
    }
}

impl std::error::Error for Mlx5Error {
    /// The command, DMA or VFIO error this one wraps (and whose message it shows).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Mlx5Error::Cmd(e) => e.source(),
            Mlx5Error::Dma(e) => e.source(),
            Mlx5Error::Device(e) => e.source(),
            _ => None,
        }
    }
}

impl From<CmdError> for Mlx5Error {
    fn from(e: CmdError) -> Self {
        Mlx5Error::Cmd(e)
    }
}

impl From<crate::vfio::DeviceError> for Mlx5Error {
    fn from(e: crate::vfio::DeviceError) -> Self {
        Mlx5Error::Device(e)
    }
}

impl From<DmaError> for Mlx5Error {
    fn from(e: DmaError) -> Self {
        Mlx5Error::Dma(e)
    }
}

/// Memory given to the firmware with MANAGE_PAGES.
struct FwPages {
    blocks: Vec<DmaMemory>,
    spare: Vec<u64>,
    given: HashSet<u64>,
}

/// How far bring-up got, so teardown undoes exactly that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    CmdQueue,
    Enabled,
    Initialized,
}

/// A ConnectX function brought up to an initialized HCA.
pub struct Hca<R: RegisterIo> {
    bar: R,
    space: Arc<DmaSpace>,
    cfg: HcaConfig,
    cmd: CmdQueue,
    pages: FwPages,
    stage: Stage,
    issi: u16,
    general_caps: Vec<u8>,
    caps: Option<Caps>,
    fw_version: (u16, u16, u16),
}

impl<R: RegisterIo> Hca<R> {
    /// Brings the function up: waits for the firmware, sets up the command queue, enables the
    /// HCA, selects ISSI 1 if supported, supplies boot, init and regular firmware pages, reads
    /// the general capabilities and initializes the HCA. On an error part-way, what was done is
    /// undone (teardown, pages reclaimed, HCA disabled) before the error is returned.
    pub fn bring_up(bar: R, space: Arc<DmaSpace>, cfg: HcaConfig) -> Result<Self, Mlx5Error> {
        wait_fw_ready(&bar, cfg.fw_ready_timeout)?;
        let rev = read_be(&bar, init_seg::CMDIF_REV_FW_SUB) >> 16;
        if rev != CMD_IF_REV {
            return Err(Mlx5Error::CmdIfRev(rev));
        }
        let l = read_be(&bar, init_seg::CMDQ_ADDR_L_SZ) & 0xff;
        let (log_size, log_stride) = (l >> 4 & 0xf, l & 0xf);
        if !(6..=12).contains(&log_stride) || (1u32 << log_size) * (1u32 << log_stride) > 4096 {
            return Err(Mlx5Error::CmdQueue { log_size, log_stride });
        }
        let fw = read_be(&bar, init_seg::FW_REV);
        let fw_version = (fw as u16, (fw >> 16) as u16, read_be(&bar, init_seg::CMDIF_REV_FW_SUB) as u16);
        let cmd = CmdQueue::new(&space, cfg.page, cfg.cmd_timeout)?;
        write_be(&bar, init_seg::CMDQ_ADDR_H, (cmd.iova() >> 32) as u32);
        write_be(&bar, init_seg::CMDQ_ADDR_L_SZ, cmd.iova() as u32 & !0xfff);
        wait_fw_ready(&bar, cfg.fw_ready_timeout)?;
        let mut hca = Hca {
            bar,
            space,
            cfg,
            cmd,
            pages: FwPages { blocks: Vec::new(), spare: Vec::new(), given: HashSet::new() },
            stage: Stage::CmdQueue,
            issi: 0,
            general_caps: Vec::new(),
            caps: None,
            fw_version,
        };
        // On error, `hca` is dropped here, and Drop undoes what the stage says was done.
        hca.init()?;
        Ok(hca)
    }

    fn init(&mut self) -> Result<(), Mlx5Error> {
        let _: PlainOut =
            self.cmd.call(&self.bar, &FunctionIn { hdr: InHdr::new(op::ENABLE_HCA, 0), ..Default::default() })?;
        self.stage = Stage::Enabled;
        let q = self.cmd.exec(&self.bar, PlainIn::new(op::QUERY_ISSI, 0).as_bytes(), QUERY_ISSI_OUT_LEN)?;
        if q[QUERY_ISSI_SUPPORTED_LOW_BYTE] & 0b10 != 0 {
            let _: PlainOut = self.cmd.call(
                &self.bar,
                &SetIssiIn { hdr: InHdr::new(op::SET_ISSI, 0), current_issi: 1.into(), ..Default::default() },
            )?;
            self.issi = 1;
        } else {
            self.issi = u16::from_be_bytes([q[QUERY_ISSI_CURRENT], q[QUERY_ISSI_CURRENT + 1]]);
        }
        self.supply_pages(PagesKind::Boot)?;
        let current = self.query_caps(CAP_GENERAL)?;
        self.set_general_caps(current)?;
        self.supply_pages(PagesKind::Init)?;
        let _: PlainOut = self.cmd.call(&self.bar, &PlainIn::new(op::INIT_HCA, 0))?;
        self.stage = Stage::Initialized;
        self.supply_pages(PagesKind::Regular)?;
        // What the function can do now (Linux queries them after INIT_HCA too:
        // `mlx5_query_hca_caps` in `mlx5_load`).
        self.general_caps = self.query_caps(CAP_GENERAL)?;
        let eth = self.query_caps(CAP_ETHERNET_OFFLOADS)?;
        let flow = self.query_caps(CAP_FLOW_TABLE)?;
        self.caps = Some(Caps::parse(&self.general_caps, &eth, &flow));
        Ok(())
    }

    /// The current values of capability type `cap_type` (QUERY_HCA_CAP, 4 KiB).
    fn query_caps(&mut self, cap_type: u16) -> Result<Vec<u8>, CmdError> {
        let input = PlainIn::new(op::QUERY_HCA_CAP, hca_cap_op_mod(cap_type, true));
        let out = self.cmd.exec(&self.bar, input.as_bytes(), QUERY_HCA_CAP_OUT_LEN)?;
        Ok(out[16..].to_vec())
    }

    /// SET_HCA_CAP of the general capabilities: the current values (`current`) with command
    /// signatures off (`cmdif_checksum` = 0) and 4 KiB UAR pages (`log_uar_page_sz` = 0), as
    /// rdma-core's VFIO driver (`handle_hca_cap` in `providers/mlx5/mlx5_vfio.c`) and Linux
    /// (`handle_hca_cap` in `drivers/net/ethernet/mellanox/mlx5/core/main.c`) do before
    /// INIT_HCA. Commands before it carry no signature either: both drivers send them unsigned
    /// (the command entry's and mailboxes' `sig` bytes 0), and with the checksum disabled here
    /// the firmware checks none afterwards.
    fn set_general_caps(&mut self, mut current: Vec<u8>) -> Result<(), CmdError> {
        use caps::general::{CMDIF_CHECKSUM, LOG_UAR_PAGE_SZ};
        current.resize(HCA_CAP_LEN, 0);
        set_bits(&mut current, CMDIF_CHECKSUM.bit, CMDIF_CHECKSUM.width, 0);
        set_bits(&mut current, LOG_UAR_PAGE_SZ.bit, LOG_UAR_PAGE_SZ.width, 0);
        let mut input = PlainIn::new(op::SET_HCA_CAP, hca_cap_op_mod(CAP_GENERAL, false)).as_bytes().to_vec();
        input.extend_from_slice(&current);
        debug_assert_eq!(input.len(), SET_HCA_CAP_IN_LEN);
        self.cmd.exec(&self.bar, &input, 16).map(drop)
    }

    /// Asks the firmware how many pages of `kind` it needs and gives them (or takes back as
    /// many as it offers to return).
    pub fn supply_pages(&mut self, kind: PagesKind) -> Result<(), Mlx5Error> {
        let q: QueryPagesOut = self
            .cmd
            .call(&self.bar, &FunctionIn { hdr: InHdr::new(op::QUERY_PAGES, kind as u16), ..Default::default() })?;
        let n = q.num_pages.get();
        if n > 0 {
            self.give_pages(n as usize)
        } else if n < 0 {
            self.take_pages(n.unsigned_abs() as usize).map(drop)
        } else {
            Ok(())
        }
    }

    /// Gives the firmware `n` more 4 KiB pages.
    pub fn give_pages(&mut self, n: usize) -> Result<(), Mlx5Error> {
        if self.pages.spare.len() < n {
            let want = n - self.pages.spare.len();
            let mem = self.space.alloc(want * FW_PAGE, self.cfg.page)?;
            let count = mem.len() / FW_PAGE;
            self.pages.spare.extend((0..count).rev().map(|i| mem.iova() + (i * FW_PAGE) as u64));
            self.pages.blocks.push(mem);
        }
        let mut left = n;
        while left > 0 {
            let k = left.min(MAX_PAGES_PER_CMD);
            let batch: Vec<u64> = (0..k).map(|_| self.pages.spare.pop().expect("allocated above")).collect();
            let mut input = ManagePagesIn {
                hdr: InHdr::new(op::MANAGE_PAGES, manage_pages::GIVE),
                input_num_entries: (k as u32).into(),
                ..Default::default()
            }
            .as_bytes()
            .to_vec();
            for a in &batch {
                input.extend_from_slice(&a.to_be_bytes());
            }
            match self.cmd.exec(&self.bar, &input, std::mem::size_of::<ManagePagesOut>()) {
                Ok(_) => self.pages.given.extend(batch),
                Err(e) => {
                    self.pages.spare.extend(batch);
                    return Err(e.into());
                }
            }
            left -= k;
        }
        Ok(())
    }

    /// Takes up to `n` pages back from the firmware; returns how many it returned.
    pub fn take_pages(&mut self, n: usize) -> Result<usize, Mlx5Error> {
        let mut got = 0;
        while got < n {
            let k = (n - got).min(MAX_PAGES_PER_CMD);
            let input = ManagePagesIn {
                hdr: InHdr::new(op::MANAGE_PAGES, manage_pages::TAKE),
                input_num_entries: (k as u32).into(),
                ..Default::default()
            };
            let out = self.cmd.exec(&self.bar, input.as_bytes(), 16 + 8 * k)?;
            let h: ManagePagesOut = cmd::parse(op::MANAGE_PAGES, &out)?;
            let returned = (h.output_num_entries.get() as usize).min(k);
            for i in 0..returned {
                let a = u64::from_be_bytes(out[16 + 8 * i..24 + 8 * i].try_into().expect("8 bytes"));
                // Only pages we gave go back to the spare list; anything else is ignored.
                if self.pages.given.remove(&a) {
                    self.pages.spare.push(a);
                }
            }
            got += returned;
            if returned < k {
                break;
            }
        }
        Ok(got)
    }

    /// Pages the firmware holds.
    pub fn pages_given(&self) -> usize {
        self.pages.given.len()
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn issi(&self) -> u16 {
        self.issi
    }

    /// The general capability block (`mlx5_ifc_cmd_hca_cap_bits`), current values.
    pub fn general_caps(&self) -> &[u8] {
        &self.general_caps
    }

    /// The capabilities the driver depends on, read after INIT_HCA.
    pub fn caps(&self) -> &Caps {
        self.caps.as_ref().expect("set by bring-up before the Hca is returned")
    }

    /// The firmware version (major, minor, sub-minor) from the initialization segment.
    pub fn fw_version(&self) -> (u16, u16, u16) {
        self.fw_version
    }

    pub fn bar(&self) -> &R {
        &self.bar
    }

    /// The DMA space the device reaches host memory through.
    pub fn space(&self) -> &Arc<DmaSpace> {
        &self.space
    }

    /// The page size bring-up allocates DMA memory in.
    pub fn page(&self) -> PageSize {
        self.cfg.page
    }

    /// Runs one command (input starting with its [`InHdr`]) and returns its `out_len`-byte output.
    pub fn exec(&mut self, input: &[u8], out_len: usize) -> Result<Vec<u8>, CmdError> {
        self.cmd.exec(&self.bar, input, out_len)
    }

    /// Runs one command with fixed input and output layouts.
    pub fn call<I: IntoBytes + zerocopy::Immutable, O: FromBytes>(&mut self, input: &I) -> Result<O, CmdError> {
        self.cmd.call(&self.bar, input)
    }

    /// Undoes bring-up from the stage reached; errors are logged (nothing else can be done).
    fn teardown(&mut self) {
        if self.stage >= Stage::Initialized {
            let r: Result<PlainOut, _> =
                self.cmd.call(&self.bar, &TeardownHcaIn { hdr: InHdr::new(op::TEARDOWN_HCA, 0), ..Default::default() });
            if let Err(e) = r {
                log::warn!("mlx5 teardown: {e}");
            }
        }
        if self.stage >= Stage::Enabled {
            let n = self.pages.given.len();
            if n > 0 {
                match self.take_pages(n) {
                    Ok(got) if got < n => log::warn!("mlx5 teardown: the firmware kept {} pages", n - got),
                    Ok(_) => {}
                    Err(e) => log::warn!("mlx5 teardown: {e}"),
                }
            }
            let r: Result<PlainOut, _> =
                self.cmd.call(&self.bar, &FunctionIn { hdr: InHdr::new(op::DISABLE_HCA, 0), ..Default::default() });
            if let Err(e) = r {
                log::warn!("mlx5 teardown: {e}");
            }
        }
        self.stage = Stage::CmdQueue;
    }
}

impl<R: RegisterIo> Drop for Hca<R> {
    fn drop(&mut self) {
        self.teardown();
        if !self.pages.given.is_empty() {
            // The device may still write pages it kept: never unmap them.
            log::error!("mlx5: {} firmware pages not returned; leaking their memory", self.pages.given.len());
            std::mem::forget(std::mem::take(&mut self.pages.blocks));
        }
    }
}

/// Waits until the firmware clears `initializing`.
fn wait_fw_ready<R: RegisterIo>(bar: &R, timeout: Duration) -> Result<(), Mlx5Error> {
    let t0 = Instant::now();
    while read_be(bar, init_seg::INITIALIZING) >> 31 != 0 {
        if t0.elapsed() > timeout {
            let health_syndrome = (read_be(bar, init_seg::HEALTH_SYND_WORD) >> 16) as u8;
            return Err(Mlx5Error::FirmwareNotReady { waited: t0.elapsed(), health_syndrome });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
