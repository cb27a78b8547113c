//! PCI network devices in sysfs: finding them, and handing them to `vfio-pci` and back.
//!
//! Everything goes through a [`Sysfs`] value that holds a root directory (`/` on a real system),
//! so tests can build a fake tree in a temporary directory. The files used, all relative to that
//! root, are:
//!
//! | path | what |
//! |---|---|
//! | `sys/bus/pci/devices/<BDF>` | one entry per PCI function (a symlink into `sys/devices`) |
//! | `…/<BDF>/vendor`, `device`, `class` | hex ids, e.g. `0x8086`, `0x10c9`, `0x020000` (class 0x02: network) |
//! | `…/<BDF>/driver` | symlink to `sys/bus/pci/drivers/<name>`; absent when no driver is bound |
//! | `…/<BDF>/driver/unbind` | writing the BDF detaches the device from that driver |
//! | `…/<BDF>/driver_override` | a driver name: only that driver may bind next; `"\n"` clears it |
//! | `…/<BDF>/iommu_group` | symlink to `sys/kernel/iommu_groups/<n>`; absent without an IOMMU |
//! | `…/<BDF>/numa_node` | the node the device hangs off, `-1` when the platform does not say |
//! | `sys/bus/pci/drivers_probe` | writing a BDF makes the kernel look for a driver for it |
//! | `sys/bus/pci/drivers/<name>/bind` | writing a BDF binds it to that driver |
//! | `sys/bus/pci/drivers/vfio-pci` | exists once the `vfio-pci` module is loaded |
//! | `sys/kernel/iommu_groups/<n>/devices/*` | the devices sharing IOMMU group `n` |
//! | `dev/vfio/<n>` | the VFIO group device that userspace opens |
//!
//! `driver_override`, `drivers_probe`, `bind` and `unbind` are described in the kernel's
//! `Documentation/ABI/testing/sysfs-bus-pci`; IOMMU groups in
//! `Documentation/ABI/testing/sysfs-kernel-iommu_groups`; the bind sequence in
//! `Documentation/driver-api/vfio.rst`.
//!
//! [`Sysfs::bind_vfio`] records the driver a device had in a small file in a state directory
//! (default `/run/erpc`, or `$ERPC_STATE_DIR`), so that [`Sysfs::unbind_vfio`] can give the device
//! back to it.
//!
//! Odd sysfs contents (a missing file, garbage in it) never panic: the value reads as unknown.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The name of the kernel's VFIO PCI driver.
pub const VFIO_PCI: &str = "vfio-pci";
/// PCI vendor id of Intel.
pub const VENDOR_INTEL: u16 = 0x8086;
/// PCI vendor id of Mellanox (NVIDIA networking).
pub const VENDOR_MELLANOX: u16 = 0x15b3;
/// The vendor or device id of a [`PciDevice`] whose sysfs file was missing or unreadable (the
/// value a PCI configuration read returns for an absent function).
pub const ID_UNKNOWN: u16 = 0xffff;
/// The class of a [`PciDevice`] whose `class` file was missing or unreadable (not a valid 24-bit
/// class code, so never a network device).
pub const CLASS_UNKNOWN: u32 = u32::MAX;
/// The state directory used by [`Sysfs::new`] unless `$ERPC_STATE_DIR` is set.
pub const DEFAULT_STATE_DIR: &str = "/run/erpc";
/// The environment variable that overrides [`DEFAULT_STATE_DIR`] in [`Sysfs::new`].
pub const STATE_DIR_ENV: &str = "ERPC_STATE_DIR";

// ----- addresses -----

/// A PCI address, domain:bus:device.function, as sysfs names devices (`0000:03:00.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// PCI segment (domain); 0 on most machines. Linux allows more than 16 bits (VMD domains).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl Bdf {
    /// Parses `DDDD:BB:DD.F` or the short `BB:DD.F` (domain 0). Hex digits in either case.
    pub fn parse(s: &str) -> Result<Bdf, PciError> {
        let bad = |reason: &'static str| PciError::InvalidBdf { input: s.to_string(), reason };
        let (rest, func) = s.rsplit_once('.').ok_or_else(|| bad("no `.` before the function number"))?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, dev) = match parts.as_slice() {
            [b, d] => ("0", *b, *d),
            [dom, b, d] => (*dom, *b, *d),
            _ => return Err(bad("expected two or three `:`-separated fields before the `.`")),
        };
        let domain = hex(domain, 8).ok_or_else(|| bad("the domain must be 1 to 8 hex digits"))?;
        let bus = hex(bus, 2).ok_or_else(|| bad("the bus must be 1 or 2 hex digits"))?;
        let device = hex(dev, 2).filter(|&d| d < 32).ok_or_else(|| bad("the device must be hex 00 to 1f"))?;
        let function = hex(func, 1).filter(|&f| f < 8).ok_or_else(|| bad("the function must be 0 to 7"))?;
        Ok(Bdf { domain, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

/// Parses 1..=`max_digits` hex digits (no sign, no `0x`).
fn hex(s: &str, max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl FromStr for Bdf {
    type Err = PciError;
    fn from_str(s: &str) -> Result<Bdf, PciError> {
        Bdf::parse(s)
    }
}

impl fmt::Display for Bdf {
    /// The sysfs form: `0000:03:00.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

// ----- supported devices -----

/// A family of NICs that share a driver in this project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NicFamily {
    /// Intel 1 GbE: 82576, I350 (and QEMU's `igb` model, which is an 82576).
    Igb,
    /// Intel 10 GbE: 82599, X540.
    Ixgbe,
    /// NVIDIA/Mellanox ConnectX-4 to ConnectX-7.
    Mlx5,
}

impl NicFamily {
    /// Short name: `igb`, `ixgbe`, `mlx5`.
    pub fn name(self) -> &'static str {
        match self {
            NicFamily::Igb => "igb",
            NicFamily::Ixgbe => "ixgbe",
            NicFamily::Mlx5 => "mlx5",
        }
    }

    /// Whether this project has a driver for the family (all listed families have one now:
    /// `intel` for igb/ixgbe, `mlx5` for ConnectX).
    pub fn has_driver(self) -> bool {
        match self {
            NicFamily::Igb | NicFamily::Ixgbe | NicFamily::Mlx5 => true,
        }
    }

    /// One phrase for listings: `supported` or `driver not yet available`.
    pub fn driver_status(self) -> &'static str {
        if self.has_driver() {
            "supported"
        } else {
            "driver not yet available"
        }
    }
}

impl fmt::Display for NicFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of [`SUPPORTED_NICS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupportedNic {
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// The driver family.
    pub family: NicFamily,
    /// Model name for listings.
    pub model: &'static str,
}

const fn nic(vendor: u16, device: u16, family: NicFamily, model: &'static str) -> SupportedNic {
    SupportedNic { vendor, device, family, model }
}

/// Every PCI id a driver family of this project is meant for (device ids from the Linux `igb`,
/// `ixgbe` and `mlx5_core` drivers).
pub const SUPPORTED_NICS: &[SupportedNic] = {
    use NicFamily::*;
    const I: u16 = VENDOR_INTEL;
    const M: u16 = VENDOR_MELLANOX;
    &[
        nic(I, 0x10c9, Igb, "Intel 82576"),
        nic(I, 0x10e6, Igb, "Intel 82576 (fiber)"),
        nic(I, 0x10e7, Igb, "Intel 82576 (SerDes)"),
        nic(I, 0x10e8, Igb, "Intel 82576 (quad copper)"),
        nic(I, 0x150a, Igb, "Intel 82576NS"),
        nic(I, 0x1518, Igb, "Intel 82576NS (SerDes)"),
        nic(I, 0x1526, Igb, "Intel 82576 (quad copper ET2)"),
        nic(I, 0x150d, Igb, "Intel 82576 (SerDes quad)"),
        nic(I, 0x1521, Igb, "Intel I350 (copper)"),
        nic(I, 0x1522, Igb, "Intel I350 (fiber)"),
        nic(I, 0x1523, Igb, "Intel I350 (SerDes)"),
        nic(I, 0x1524, Igb, "Intel I350 (SGMII)"),
        nic(I, 0x10f7, Ixgbe, "Intel 82599 (KX4)"),
        nic(I, 0x10f8, Ixgbe, "Intel 82599 (combo backplane)"),
        nic(I, 0x10f9, Ixgbe, "Intel 82599 (CX4)"),
        nic(I, 0x10fb, Ixgbe, "Intel 82599 (SFP+)"),
        nic(I, 0x10fc, Ixgbe, "Intel 82599 (XAUI LOM)"),
        nic(I, 0x1517, Ixgbe, "Intel 82599 (KR)"),
        nic(I, 0x151c, Ixgbe, "Intel 82599 (T3 LOM)"),
        nic(I, 0x1529, Ixgbe, "Intel 82599 (SFP+ FCoE)"),
        nic(I, 0x152a, Ixgbe, "Intel 82599 (backplane FCoE)"),
        nic(I, 0x154d, Ixgbe, "Intel 82599 (SFP+ SF2)"),
        nic(I, 0x1557, Ixgbe, "Intel 82599EN (SFP+)"),
        nic(I, 0x1558, Ixgbe, "Intel 82599 (QSFP+ SF QP)"),
        nic(I, 0x1528, Ixgbe, "Intel X540-T"),
        nic(I, 0x1560, Ixgbe, "Intel X540-T1"),
        nic(M, 0x1013, Mlx5, "ConnectX-4"),
        nic(M, 0x1015, Mlx5, "ConnectX-4 Lx"),
        nic(M, 0x1017, Mlx5, "ConnectX-5"),
        nic(M, 0x1019, Mlx5, "ConnectX-5 Ex"),
        nic(M, 0x101b, Mlx5, "ConnectX-6"),
        nic(M, 0x101d, Mlx5, "ConnectX-6 Dx"),
        nic(M, 0x101f, Mlx5, "ConnectX-6 Lx"),
        nic(M, 0x1021, Mlx5, "ConnectX-7"),
    ]
};

/// The [`SUPPORTED_NICS`] entry for a vendor and device id.
pub fn supported_nic(vendor: u16, device: u16) -> Option<&'static SupportedNic> {
    SUPPORTED_NICS.iter().find(|n| n.vendor == vendor && n.device == device)
}

/// The driver family for a vendor and device id, if this project knows the device.
pub fn family_of(vendor: u16, device: u16) -> Option<NicFamily> {
    supported_nic(vendor, device).map(|n| n.family)
}

// ----- devices -----

/// One PCI function as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address.
    pub bdf: Bdf,
    /// Vendor id ([`ID_UNKNOWN`] if unreadable).
    pub vendor: u16,
    /// Device id ([`ID_UNKNOWN`] if unreadable).
    pub device: u16,
    /// 24-bit class code: base class, subclass, programming interface ([`CLASS_UNKNOWN`] if
    /// unreadable).
    pub class: u32,
    /// The bound driver's name, `None` when no driver is bound.
    pub driver: Option<String>,
    /// IOMMU group, `None` without an IOMMU (or with it off).
    pub iommu_group: Option<u32>,
    /// NUMA node, `None` when the platform does not say (`-1` in sysfs) or it is unreadable.
    pub numa_node: Option<i32>,
    /// The driver family of this project that is meant for it.
    pub family: Option<NicFamily>,
}

impl PciDevice {
    /// Base class 0x02: a network controller.
    pub fn is_network(&self) -> bool {
        self.class != CLASS_UNKNOWN && self.class >> 16 == 0x02
    }

    /// Model name from [`SUPPORTED_NICS`], if the device is in it.
    pub fn model(&self) -> Option<&'static str> {
        supported_nic(self.vendor, self.device).map(|n| n.model)
    }

    /// Whether the device is bound to `vfio-pci`.
    pub fn is_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_PCI)
    }
}

/// What [`Sysfs::bind_vfio`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindOutcome {
    /// The device is now bound to `vfio-pci`; its VFIO group device is `/dev/vfio/<iommu_group>`.
    Bound {
        /// The driver it was taken from (recorded for [`Sysfs::unbind_vfio`]), `None` if it had none.
        previous_driver: Option<String>,
        /// Its IOMMU group.
        iommu_group: u32,
    },
    /// It was bound to `vfio-pci` already; nothing was written.
    AlreadyBound {
        /// Its IOMMU group, if sysfs shows one.
        iommu_group: Option<u32>,
    },
}

/// What [`Sysfs::unbind_vfio`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnbindOutcome {
    /// The device was taken from `vfio-pci` and its `driver_override` cleared.
    Released {
        /// The driver it is bound to now (`None`: no driver, as before `bind_vfio`, or the
        /// kernel found none).
        driver: Option<String>,
        /// Whether a record of the previous driver was found ([`Sysfs::state_file`]); without
        /// one the kernel was asked to choose a driver (`drivers_probe`).
        from_record: bool,
    },
    /// It was not bound to `vfio-pci` (nor set to be); nothing was written.
    NotBound {
        /// Its current driver.
        driver: Option<String>,
    },
}

// ----- errors -----

/// Why a sysfs operation failed. Each message says what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum PciError {
    /// A PCI address that does not parse.
    InvalidBdf {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No such device in `/sys/bus/pci/devices`.
    DeviceNotFound {
        /// The address looked for.
        bdf: Bdf,
    },
    /// The device is not a network controller (class 0x02xxxx); it is not touched.
    NotNetworkDevice {
        /// The device.
        bdf: Bdf,
        /// Its class code ([`CLASS_UNKNOWN`] if unreadable).
        class: u32,
    },
    /// `/sys/bus/pci/drivers/vfio-pci` does not exist.
    VfioPciNotLoaded,
    /// A driver to give a device back to is not loaded.
    DriverNotLoaded {
        /// The device.
        bdf: Bdf,
        /// The driver recorded by `bind_vfio`.
        driver: String,
    },
    /// The device has no `iommu_group`: the IOMMU is off.
    NoIommuGroup {
        /// The device.
        bdf: Bdf,
    },
    /// A write was refused: not root.
    PermissionDenied {
        /// The file.
        path: PathBuf,
    },
    /// A write to a sysfs file failed.
    SysfsWrite {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A sysfs directory could not be read (sysfs not mounted, no PCI bus).
    SysfsRead {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The record of the previous driver could not be written.
    StateWrite {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// After the kernel was asked to bind a driver, another one (or none) is bound.
    WrongDriver {
        /// The device.
        bdf: Bdf,
        /// The driver asked for.
        expected: String,
        /// The driver bound now.
        found: Option<String>,
    },
    /// The device is bound to `vfio-pci` but `/dev/vfio/<group>` does not exist.
    VfioGroupMissing {
        /// The device.
        bdf: Bdf,
        /// The file looked for.
        path: PathBuf,
    },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::InvalidBdf { input, reason } => write!(
                f,
                "invalid PCI address `{input}`: {reason}; expected DDDD:BB:DD.F or BB:DD.F, e.g. 0000:03:00.0 \
                 (`erpc nic list` shows the devices)"
            ),
            PciError::DeviceNotFound { bdf } => {
                write!(f, "no PCI device {bdf} in /sys/bus/pci/devices: `erpc nic list` shows the network devices")
            }
            PciError::NotNetworkDevice { bdf, class } => {
                let class = if *class == CLASS_UNKNOWN { "unknown".to_string() } else { format!("{class:#08x}") };
                write!(
                    f,
                    "{bdf} is not a network device (class {class}, not 0x02xxxx); left alone: `erpc nic list` shows \
                     the network devices"
                )
            }
            PciError::VfioPciNotLoaded => {
                write!(
                    f,
                    "the vfio-pci driver is not loaded (no /sys/bus/pci/drivers/vfio-pci): run `modprobe vfio-pci`"
                )
            }
            PciError::DriverNotLoaded { bdf, driver } => write!(
                f,
                "{bdf} was bound to {driver} before, but {driver} is not loaded (no /sys/bus/pci/drivers/{driver}): \
                 run `modprobe {driver}` and try again"
            ),
            PciError::NoIommuGroup { bdf } => write!(
                f,
                "{bdf} has no IOMMU group, so VFIO cannot use it: enable the IOMMU (`intel_iommu=on` or \
                 `amd_iommu=on` on the kernel command line, and VT-d / AMD-Vi in the BIOS), then reboot"
            ),
            PciError::PermissionDenied { path } => {
                write!(f, "permission denied writing {}: run as root", path.display())
            }
            PciError::SysfsWrite { path, source } => write!(f, "writing {} failed: {source}", path.display()),
            PciError::SysfsRead { path, source } => {
                write!(f, "cannot read {}: {source} (is sysfs mounted? `mount -t sysfs sysfs /sys`)", path.display())
            }
            PciError::StateWrite { path, source } => write!(
                f,
                "cannot record the previous driver in {}: {source} (set {STATE_DIR_ENV} to a writable directory)",
                path.display()
            ),
            PciError::WrongDriver { bdf, expected, found } => write!(
                f,
                "{bdf} should now be bound to {expected}, but its driver is {}: `dmesg` shows why the probe failed",
                found.as_deref().unwrap_or("none")
            ),
            PciError::VfioGroupMissing { bdf, path } => write!(
                f,
                "{bdf} is bound to vfio-pci but {} does not exist: is /dev populated (devtmpfs, udev or mdev)? \
                 `erpc nic unbind {bdf}` gives the device back to its previous driver",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PciError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PciError::SysfsWrite { source, .. }
            | PciError::SysfsRead { source, .. }
            | PciError::StateWrite { source, .. } => Some(source),
            _ => None,
        }
    }
}

// ----- sysfs -----

/// A hook called after every successful sysfs write with the path written and the value: a
/// stand-in for the kernel in tests on a fake tree.
pub type WriteHook = dyn Fn(&Path, &str) + Send + Sync;

/// Access to PCI devices through sysfs under a root directory.
#[derive(Clone)]
pub struct Sysfs {
    root: PathBuf,
    state_dir: PathBuf,
    settle: Duration,
    hook: Option<Arc<WriteHook>>,
}

impl fmt::Debug for Sysfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sysfs")
            .field("root", &self.root)
            .field("state_dir", &self.state_dir)
            .field("settle", &self.settle)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Default for Sysfs {
    fn default() -> Sysfs {
        Sysfs::new()
    }
}

impl Sysfs {
    /// The real system: root `/`, state directory `$ERPC_STATE_DIR` or `/run/erpc`.
    pub fn new() -> Sysfs {
        let state_dir = std::env::var_os(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        Sysfs::at("/").with_state_dir(state_dir)
    }

    /// A tree under `root` (`root/sys/...`, `root/dev/vfio/...`), with the state directory
    /// `root/run/erpc`. The environment is not consulted.
    pub fn at(root: impl Into<PathBuf>) -> Sysfs {
        let root = root.into();
        let state_dir = root.join("run/erpc");
        Sysfs { root, state_dir, settle: Duration::from_secs(1), hook: None }
    }

    /// Uses `dir` to record previous drivers.
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Sysfs {
        self.state_dir = dir.into();
        self
    }

    /// How long to wait for the kernel (and udev) after a bind before checking the result
    /// (default 1 s; the checks pass as soon as they can).
    pub fn with_settle_timeout(mut self, t: Duration) -> Sysfs {
        self.settle = t;
        self
    }

    /// Calls `hook` after every successful sysfs write (see [`WriteHook`]).
    pub fn with_write_hook(mut self, hook: impl Fn(&Path, &str) + Send + Sync + 'static) -> Sysfs {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `<root>/sys/bus/pci/devices/<bdf>`.
    pub fn pci_device_path(&self, bdf: &Bdf) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(bdf.to_string())
    }

    /// `<root>/sys/bus/pci/drivers/<name>`.
    pub fn driver_path(&self, name: &str) -> PathBuf {
        self.root.join("sys/bus/pci/drivers").join(name)
    }

    /// `<root>/dev/vfio/<group>`: the VFIO group device.
    pub fn vfio_group_path(&self, group: u32) -> PathBuf {
        self.root.join("dev/vfio").join(group.to_string())
    }

    /// The file in which [`Sysfs::bind_vfio`] records the driver `bdf` had: one line,
    /// `previous_driver=<name>` (empty name: none).
    pub fn state_file(&self, bdf: &Bdf) -> PathBuf {
        self.state_dir.join(format!("{bdf}.prev-driver"))
    }

    /// Every PCI function, sorted by address. Entries whose names are not addresses are skipped.
    pub fn devices(&self) -> Result<Vec<PciDevice>, PciError> {
        let dir = self.root.join("sys/bus/pci/devices");
        let entries = fs::read_dir(&dir).map_err(|source| PciError::SysfsRead { path: dir.clone(), source })?;
        let mut bdfs: Vec<Bdf> =
            entries.filter_map(|e| e.ok()?.file_name().to_str().and_then(|n| Bdf::parse(n).ok())).collect();
        bdfs.sort();
        bdfs.dedup();
        Ok(bdfs.iter().map(|b| self.read_device(b)).collect())
    }

    /// The network devices (class 0x02xxxx), sorted by address.
    pub fn network_devices(&self) -> Result<Vec<PciDevice>, PciError> {
        Ok(self.devices()?.into_iter().filter(PciDevice::is_network).collect())
    }

    /// One device, of any class.
    pub fn device(&self, bdf: &Bdf) -> Result<PciDevice, PciError> {
        if !self.pci_device_path(bdf).exists() {
            return Err(PciError::DeviceNotFound { bdf: *bdf });
        }
        Ok(self.read_device(bdf))
    }

    /// The devices in IOMMU group `group` (`/sys/kernel/iommu_groups/<group>/devices/*`), sorted;
    /// empty if the group does not exist.
    pub fn iommu_group_devices(&self, group: u32) -> Vec<Bdf> {
        let dir = self.root.join("sys/kernel/iommu_groups").join(group.to_string()).join("devices");
        let mut v: Vec<Bdf> = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().to_str().and_then(|n| Bdf::parse(n).ok())).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// The driver recorded for `bdf` by [`Sysfs::bind_vfio`]: `None` without a (readable) record,
    /// `Some(None)` if the device had no driver.
    pub fn recorded_driver(&self, bdf: &Bdf) -> Option<Option<String>> {
        let text = fs::read_to_string(self.state_file(bdf)).ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("previous_driver="))?;
        let name = line.trim();
        if name.is_empty() {
            Some(None)
        } else if valid_driver_name(name) {
            Some(Some(name.to_string()))
        } else {
            None
        }
    }

    /// Binds a network device to `vfio-pci`:
    ///
    /// 1. checks that it exists, is a network device, has an IOMMU group and that `vfio-pci` is
    ///    loaded (nothing is written if not);
    /// 2. records its current driver in [`Sysfs::state_file`];
    /// 3. writes the BDF to `<device>/driver/unbind` (if it has a driver), `vfio-pci` to
    ///    `<device>/driver_override` and the BDF to `/sys/bus/pci/drivers_probe`;
    /// 4. checks that its `driver` link now names `vfio-pci` and that `/dev/vfio/<group>` exists.
    ///
    /// If step 3 or the driver check fails the device is given back to its driver (best effort)
    /// and the record removed. A device already bound to `vfio-pci` is left as it is.
    pub fn bind_vfio(&self, bdf: &Bdf) -> Result<BindOutcome, PciError> {
        let dev = self.device(bdf)?;
        if !dev.is_network() {
            return Err(PciError::NotNetworkDevice { bdf: *bdf, class: dev.class });
        }
        if dev.is_vfio() {
            return Ok(BindOutcome::AlreadyBound { iommu_group: dev.iommu_group });
        }
        if !self.driver_path(VFIO_PCI).is_dir() {
            return Err(PciError::VfioPciNotLoaded);
        }
        let group = dev.iommu_group.ok_or(PciError::NoIommuGroup { bdf: *bdf })?;
        let prev = dev.driver.clone();
        self.write_record(bdf, prev.as_deref())?;
        let path = self.pci_device_path(bdf);
        let name = bdf.to_string();
        if prev.is_some() {
            if let Err(e) = self.write_attr(&path.join("driver/unbind"), &name) {
                let _ = fs::remove_file(self.state_file(bdf));
                return Err(e);
            }
        }
        let attach = self
            .write_attr(&path.join("driver_override"), VFIO_PCI)
            .and_then(|()| self.write_attr(&self.root.join("sys/bus/pci/drivers_probe"), &name))
            .and_then(|()| self.expect_driver(bdf, Some(VFIO_PCI)));
        if let Err(e) = attach {
            self.give_back(bdf, prev.as_deref());
            return Err(e);
        }
        let group_dev = self.vfio_group_path(group);
        if !self.settle_until(|| group_dev.exists()) {
            return Err(PciError::VfioGroupMissing { bdf: *bdf, path: group_dev });
        }
        Ok(BindOutcome::Bound { previous_driver: prev, iommu_group: group })
    }

    /// Takes a device from `vfio-pci` and gives it back: writes the BDF to
    /// `<device>/driver/unbind`, `"\n"` to `<device>/driver_override` (clearing it), then the BDF
    /// to `/sys/bus/pci/drivers/<previous>/bind` with the driver recorded by
    /// [`Sysfs::bind_vfio`], or to `/sys/bus/pci/drivers_probe` without a record, so the kernel
    /// picks one. A device recorded as having had no driver is left without one. The bind to a
    /// recorded driver is checked, and the record removed.
    ///
    /// A device that is neither bound to `vfio-pci` nor has `vfio-pci` in `driver_override` is
    /// left alone.
    pub fn unbind_vfio(&self, bdf: &Bdf) -> Result<UnbindOutcome, PciError> {
        let dev = self.device(bdf)?;
        let path = self.pci_device_path(bdf);
        let overridden = read_trimmed(&path.join("driver_override")).as_deref() == Some(VFIO_PCI);
        if !dev.is_vfio() && !overridden {
            return Ok(UnbindOutcome::NotBound { driver: dev.driver });
        }
        let record = self.recorded_driver(bdf);
        if let Some(Some(prev)) = &record {
            if !self.driver_path(prev).is_dir() {
                return Err(PciError::DriverNotLoaded { bdf: *bdf, driver: prev.clone() });
            }
        }
        let name = bdf.to_string();
        if dev.is_vfio() {
            self.write_attr(&path.join("driver/unbind"), &name)?;
        }
        self.write_attr(&path.join("driver_override"), "\n")?;
        match &record {
            Some(Some(prev)) => {
                self.write_attr(&self.driver_path(prev).join("bind"), &name)?;
                self.expect_driver(bdf, Some(prev))?;
            }
            Some(None) => {}
            None => self.write_attr(&self.root.join("sys/bus/pci/drivers_probe"), &name)?,
        }
        let _ = fs::remove_file(self.state_file(bdf));
        Ok(UnbindOutcome::Released { driver: self.read_driver(bdf), from_record: record.is_some() })
    }

    // ----- internals -----

    fn read_device(&self, bdf: &Bdf) -> PciDevice {
        let p = self.pci_device_path(bdf);
        let id = |f: &str| read_hex(&p.join(f)).and_then(|v| u16::try_from(v).ok()).unwrap_or(ID_UNKNOWN);
        let vendor = id("vendor");
        let device = id("device");
        let class = read_hex(&p.join("class")).filter(|&c| c <= 0xff_ffff).unwrap_or(CLASS_UNKNOWN);
        let iommu_group = link_name(&p.join("iommu_group")).and_then(|g| g.parse().ok());
        let numa_node = read_trimmed(&p.join("numa_node")).and_then(|s| s.parse::<i32>().ok()).filter(|&n| n >= 0);
        PciDevice {
            bdf: *bdf,
            vendor,
            device,
            class,
            driver: self.read_driver(bdf),
            iommu_group,
            numa_node,
            family: family_of(vendor, device),
        }
    }

    fn read_driver(&self, bdf: &Bdf) -> Option<String> {
        link_name(&self.pci_device_path(bdf).join("driver"))
    }

    /// Writes `value` to an existing sysfs file in one `write` (as `echo value > file` does; sysfs
    /// ignores the truncation), then calls the hook.
    fn write_attr(&self, path: &Path, value: &str) -> Result<(), PciError> {
        let r =
            OpenOptions::new().write(true).truncate(true).open(path).and_then(|mut f| f.write_all(value.as_bytes()));
        match r {
            Ok(()) => {
                if let Some(h) = &self.hook {
                    h(path, value);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(PciError::PermissionDenied { path: path.to_path_buf() })
            }
            Err(source) => Err(PciError::SysfsWrite { path: path.to_path_buf(), source }),
        }
    }

    fn write_record(&self, bdf: &Bdf, driver: Option<&str>) -> Result<(), PciError> {
        let file = self.state_file(bdf);
        let err = |path: &Path, source: io::Error| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                PciError::PermissionDenied { path: path.to_path_buf() }
            } else {
                PciError::StateWrite { path: path.to_path_buf(), source }
            }
        };
        fs::create_dir_all(&self.state_dir).map_err(|e| err(&self.state_dir, e))?;
        fs::write(&file, format!("previous_driver={}\n", driver.unwrap_or(""))).map_err(|e| err(&file, e))
    }

    /// Waits (up to the settle timeout) for the device's driver to be `want`.
    fn expect_driver(&self, bdf: &Bdf, want: Option<&str>) -> Result<(), PciError> {
        if self.settle_until(|| self.read_driver(bdf).as_deref() == want) {
            return Ok(());
        }
        Err(PciError::WrongDriver {
            bdf: *bdf,
            expected: want.unwrap_or("none").to_string(),
            found: self.read_driver(bdf),
        })
    }

    /// Polls `ok` until it holds or the settle timeout passes.
    fn settle_until(&self, mut ok: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + self.settle;
        loop {
            if ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// After a failed bind: clears the override and rebinds the previous driver; errors ignored.
    fn give_back(&self, bdf: &Bdf, prev: Option<&str>) {
        let path = self.pci_device_path(bdf);
        let name = bdf.to_string();
        let _ = self.write_attr(&path.join("driver_override"), "\n");
        if let Some(prev) = prev {
            if self.read_driver(bdf).is_none() {
                let _ = self.write_attr(&self.driver_path(prev).join("bind"), &name);
            }
        }
        let _ = fs::remove_file(self.state_file(bdf));
    }
}

/// A file's contents without surrounding whitespace; `None` if unreadable, not UTF-8, or
/// empty or `(null)` (how sysfs shows an unset `driver_override`).
fn read_trimmed(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty() && s != "(null)").then(|| s.to_string())
}

/// A hex number such as `0x8086` (the `0x` is optional).
fn read_hex(path: &Path) -> Option<u32> {
    let s = read_trimmed(path)?;
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(&s);
    hex(digits, 8)
}

/// The last component of a symlink's target (`driver` → `igb`, `iommu_group` → `12`).
fn link_name(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    target.file_name()?.to_str().map(str::to_string)
}

/// Whether `name` can be a directory under `/sys/bus/pci/drivers` (no path separators).
fn valid_driver_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bdf(domain: u32, bus: u8, device: u8, function: u8) -> Bdf {
        Bdf { domain, bus, device, function }
    }

    #[test]
    fn parses_full_and_short_forms() {
        assert_eq!(Bdf::parse("0000:03:00.0").unwrap(), bdf(0, 3, 0, 0));
        assert_eq!(Bdf::parse("00:02.0").unwrap(), bdf(0, 0, 2, 0));
        assert_eq!(Bdf::parse("0001:AF:1f.7").unwrap(), bdf(1, 0xaf, 0x1f, 7));
        assert_eq!(Bdf::parse("10000:e1:00.1").unwrap(), bdf(0x10000, 0xe1, 0, 1));
        assert_eq!("0000:81:00.1".parse::<Bdf>().unwrap(), bdf(0, 0x81, 0, 1));
    }

    #[test]
    fn displays_the_sysfs_form() {
        assert_eq!(bdf(0, 3, 0, 0).to_string(), "0000:03:00.0");
        assert_eq!(bdf(0, 0xaf, 0x1f, 7).to_string(), "0000:af:1f.7");
        assert_eq!(bdf(0x10000, 0xe1, 0, 1).to_string(), "10000:e1:00.1");
        assert_eq!(Bdf::parse("2:3.1").unwrap().to_string(), "0000:02:03.1");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for s in [
            "",
            "0000:03:00",
            "03:00",
            "0000:03:00.8",
            "0000:03:20.0",
            "0000:003:00.0",
            "0000:03:00.00",
            "000000000:03:00.0",
            "0:0000:03:00.0",
            "0000:g3:00.0",
            "0000:+3:00.0",
            "0x00:03:00.0",
            " 0000:03:00.0",
            "0000:03:00.0\n",
            "0000::00.0",
            "0000:03:.0",
            "0000:03:00.",
            "eth0",
        ] {
            match Bdf::parse(s) {
                Err(PciError::InvalidBdf { input, .. }) => assert_eq!(input, s),
                other => panic!("{s:?} parsed as {other:?}"),
            }
        }
        let msg = Bdf::parse("03:00").unwrap_err().to_string();
        assert!(msg.contains("`03:00`") && msg.contains("0000:03:00.0"), "{msg}");
    }

    #[test]
    fn family_table() {
        assert_eq!(family_of(0x8086, 0x10c9), Some(NicFamily::Igb));
        assert_eq!(family_of(0x8086, 0x1521), Some(NicFamily::Igb));
        assert_eq!(family_of(0x8086, 0x10fb), Some(NicFamily::Ixgbe));
        assert_eq!(family_of(0x8086, 0x1560), Some(NicFamily::Ixgbe));
        assert_eq!(family_of(0x15b3, 0x1017), Some(NicFamily::Mlx5));
        assert_eq!(family_of(0x15b3, 0x10fb), None);
        assert_eq!(family_of(0x8086, 0x100e), None); // e1000
        assert_eq!(family_of(0x1af4, 0x1041), None); // virtio-net
        assert_eq!(SUPPORTED_NICS.len(), 12 + 14 + 8);
        for (i, a) in SUPPORTED_NICS.iter().enumerate() {
            assert!(SUPPORTED_NICS[i + 1..].iter().all(|b| (a.vendor, a.device) != (b.vendor, b.device)), "{a:?}");
        }
        assert!(NicFamily::Igb.has_driver() && NicFamily::Ixgbe.has_driver());
        assert!(NicFamily::Mlx5.has_driver());
        assert_eq!(NicFamily::Mlx5.driver_status(), "supported");
    }
}
