//! Opening a PCI function through VFIO: container, group and device (with `vfio-ioctls`), BAR
//! mapping, config-space access, reset, and errors that say what to do.
//!
//! The sequence follows the kernel's `Documentation/driver-api/vfio.rst`: open
//! `/dev/vfio/vfio` (the container), add the device's IOMMU group to it (the first group sets
//! the type1 IOMMU), get the device fd from the group, then read and write its regions at the
//! offsets `VFIO_DEVICE_GET_REGION_INFO` reports. Region indices and flags are those of
//! `include/uapi/linux/vfio.h` (`VFIO_PCI_BAR0_REGION_INDEX` = 0, `VFIO_PCI_CONFIG_REGION_INDEX`
//! = 7, `VFIO_REGION_INFO_FLAG_MMAP` = 1 << 2).

use crate::mmio::{Mmio, RegisterIo, RegisterIo64};
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
pub use vfio_ioctls::VfioContainer;
use vfio_ioctls::{VfioDevice, VfioError};

/// `VFIO_PCI_CONFIG_REGION_INDEX` (linux/vfio.h).
const CONFIG_REGION: u32 = 7;
/// `VFIO_REGION_INFO_FLAG_MMAP` (linux/vfio.h).
const REGION_FLAG_MMAP: u32 = 1 << 2;
/// PCI config space: the command register (PCI Local Bus spec 3.0, section 6.2.2).
const PCI_COMMAND: u64 = 0x04;
/// Command register bits: memory space enable, bus master enable.
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// Why a device could not be opened or driven through VFIO. Each message says what to do.
#[derive(Debug)]
pub enum DeviceError {
    /// No such PCI function in sysfs.
    NotFound { bdf: String },
    /// The function is bound to another driver (or none), not vfio-pci.
    NotBoundToVfio { bdf: String, driver: Option<String> },
    /// The function has no IOMMU group: the IOMMU is off.
    NoIommuGroup { bdf: String },
    /// `/dev/vfio/vfio` does not exist: the VFIO modules are not loaded.
    NoVfio,
    /// The kernel's VFIO offers no type1 IOMMU backend.
    NoType1,
    /// Other functions in the IOMMU group are bound to host drivers.
    GroupNotViable { group: u32, others: Vec<String> },
    /// Opening a VFIO file was refused.
    Permission { path: PathBuf },
    /// `VFIO_SET_IOMMU` failed (commonly: no interrupt remapping).
    SetIommu { error: String },
    /// The BAR cannot be mapped (absent, I/O-port BAR, or not mmap-able).
    Bar { index: u32, reason: String },
    /// A config-space read or write failed.
    Config { error: io::Error },
    /// Any other VFIO failure.
    Vfio(VfioError),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::NotFound { bdf } => {
                write!(f, "no PCI device {bdf}: `erpc nic list` shows the network devices")
            }
            DeviceError::NotBoundToVfio { bdf, driver } => write!(
                f,
                "{bdf} is bound to {}, not vfio-pci: run `erpc nic bind {bdf}` as root",
                driver.as_deref().unwrap_or("no driver")
            ),
            DeviceError::NoIommuGroup { bdf } => write!(
                f,
                "{bdf} has no IOMMU group: enable the IOMMU (VT-d/AMD-Vi in the firmware, and \
                 `intel_iommu=on` or `amd_iommu=on` on the kernel command line)"
            ),
            DeviceError::NoVfio => {
                write!(f, "/dev/vfio/vfio does not exist: load VFIO with `modprobe vfio-pci` (as root)")
            }
            DeviceError::NoType1 => write!(
                f,
                "this kernel's VFIO has no type1 IOMMU backend: load it with `modprobe \
                 vfio_iommu_type1` and enable the IOMMU (`intel_iommu=on` or `amd_iommu=on`)"
            ),
            DeviceError::GroupNotViable { group, others } => write!(
                f,
                "IOMMU group {group} is not viable: its other devices ({}) must be bound to \
                 vfio-pci (`erpc nic bind <BDF>`) or to no driver",
                others.join(", ")
            ),
            DeviceError::Permission { path } => {
                write!(f, "permission denied opening {}: run as root, or give your user access to it", path.display())
            }
            DeviceError::SetIommu { error } => write!(
                f,
                "VFIO_SET_IOMMU failed: {error}; the IOMMU needs interrupt remapping (in a VM: \
                 `-device intel-iommu,intremap=on`), or load vfio_iommu_type1 with \
                 allow_unsafe_interrupts=1"
            ),
            DeviceError::Bar { index, reason } => write!(f, "BAR{index}: {reason}"),
            DeviceError::Config { error } => write!(f, "PCI config space access failed: {error}"),
            DeviceError::Vfio(e) => write!(f, "VFIO: {e}"),
        }
    }
}

impl std::error::Error for DeviceError {
    /// The OS or VFIO error underneath (its text is part of this error's message).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DeviceError::Config { error } => Some(error),
            DeviceError::Vfio(e) => Some(e),
            _ => None,
        }
    }
}

fn io_error_kind(e: &io::Error, path: &Path) -> Option<DeviceError> {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Some(DeviceError::Permission { path: path.to_path_buf() }),
        _ => None,
    }
}

/// Opens the VFIO container (`/dev/vfio/vfio`): one IOMMU domain. Devices opened into the same
/// container share its DMA mappings.
pub fn open_container() -> Result<Arc<VfioContainer>, DeviceError> {
    match VfioContainer::new(None) {
        Ok(c) => Ok(Arc::new(c)),
        Err(VfioError::OpenContainer(e)) => {
            let path = Path::new("/dev/vfio/vfio");
            Err(io_error_kind(&e, path).unwrap_or(if e.kind() == io::ErrorKind::NotFound {
                DeviceError::NoVfio
            } else {
                DeviceError::Vfio(VfioError::OpenContainer(e))
            }))
        }
        Err(VfioError::VfioExtension) | Err(VfioError::VfioType1V2) => Err(DeviceError::NoType1),
        Err(e) => Err(DeviceError::Vfio(e)),
    }
}

/// A PCI function opened through VFIO.
pub struct PciFunction {
    dev: VfioDevice,
    bdf: String,
    config_offset: u64,
}

impl fmt::Debug for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciFunction").field("bdf", &self.bdf).finish()
    }
}

impl PciFunction {
    /// Opens `bdf` (e.g. `0000:00:02.0`) into `container`. Checks first, in sysfs, that the
    /// device exists, is bound to vfio-pci and has an IOMMU group, so that each failure gets
    /// its own error. vfio-pci resets the function when it is opened.
    pub fn open(container: &Arc<VfioContainer>, bdf: &str) -> Result<PciFunction, DeviceError> {
        let sys = PathBuf::from("/sys/bus/pci/devices").join(bdf);
        if !sys.exists() {
            return Err(DeviceError::NotFound { bdf: bdf.into() });
        }
        let driver = fs::read_link(sys.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(DeviceError::NotBoundToVfio { bdf: bdf.into(), driver });
        }
        let group: u32 = match fs::read_link(sys.join("iommu_group")) {
            Ok(p) => p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .ok_or(DeviceError::NoIommuGroup { bdf: bdf.into() })?,
            Err(_) => return Err(DeviceError::NoIommuGroup { bdf: bdf.into() }),
        };
        let ops: Arc<dyn vfio_ioctls::VfioOps> = container.clone();
        let dev = VfioDevice::new(&sys, ops, false).map_err(|e| match e {
            VfioError::GroupViable => DeviceError::GroupNotViable {
                group,
                others: group_devices(group).into_iter().filter(|d| d != bdf).collect(),
            },
            VfioError::OpenGroup(e, id) => {
                let path = PathBuf::from(format!("/dev/vfio/{id}"));
                io_error_kind(&e, &path).unwrap_or(DeviceError::Vfio(VfioError::OpenGroup(e, id)))
            }
            VfioError::ContainerSetIOMMU(e) => DeviceError::SetIommu { error: e.to_string() },
            e => DeviceError::Vfio(e),
        })?;
        let config_offset = dev.get_region_offset(CONFIG_REGION);
        Ok(PciFunction { dev, bdf: bdf.into(), config_offset })
    }

    /// The function's address.
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        // SAFETY: pread into a valid buffer of its length, from the device fd we own.
        let n = unsafe {
            libc::pread(
                self.dev.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                (self.config_offset + off) as libc::off_t,
            )
        };
        whole_access(n, buf.len())
    }

    fn config_write(&self, off: u64, buf: &[u8]) -> Result<(), DeviceError> {
        // SAFETY: pwrite from a valid buffer of its length, to the device fd we own.
        let n = unsafe {
            libc::pwrite(
                self.dev.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                (self.config_offset + off) as libc::off_t,
            )
        };
        whole_access(n, buf.len())
    }

    /// Reads a 16-bit config-space register.
    pub fn config_read_u16(&self, off: u64) -> Result<u16, DeviceError> {
        let mut b = [0u8; 2];
        self.config_read(off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a 32-bit config-space register.
    pub fn config_read_u32(&self, off: u64) -> Result<u32, DeviceError> {
        let mut b = [0u8; 4];
        self.config_read(off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a 16-bit config-space register.
    pub fn config_write_u16(&self, off: u64, v: u16) -> Result<(), DeviceError> {
        self.config_write(off, &v.to_le_bytes())
    }

    /// Enables memory-space decoding and bus mastering (vfio-pci clears bus mastering when the
    /// device is opened; without it the device cannot DMA).
    pub fn enable_dma(&self) -> Result<(), DeviceError> {
        let cmd = self.config_read_u16(PCI_COMMAND)?;
        self.config_write_u16(PCI_COMMAND, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)?;
        let now = self.config_read_u16(PCI_COMMAND)?;
        if now & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER) != PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER {
            return Err(DeviceError::Config {
                error: io::Error::other(format!("command register stayed at {now:#06x}")),
            });
        }
        Ok(())
    }

    /// Clears bus mastering: the device can no longer DMA.
    pub fn disable_dma(&self) -> Result<(), DeviceError> {
        let cmd = self.config_read_u16(PCI_COMMAND)?;
        self.config_write_u16(PCI_COMMAND, cmd & !PCI_COMMAND_MASTER)
    }

    /// Resets the function (`VFIO_DEVICE_RESET`) if it supports a reset.
    pub fn reset(&self) {
        self.dev.reset();
    }

    /// Maps memory BAR `index` into this process.
    pub fn map_bar(&self, index: u32) -> Result<Bar, DeviceError> {
        let size = self.dev.get_region_size(index) as usize;
        let flags = self.dev.get_region_flags(index);
        if size == 0 {
            return Err(DeviceError::Bar { index, reason: "the device has no such BAR".into() });
        }
        if flags & REGION_FLAG_MMAP == 0 {
            return Err(DeviceError::Bar { index, reason: "VFIO does not allow mapping it (I/O-port BAR?)".into() });
        }
        let offset = self.dev.get_region_offset(index);
        // SAFETY: a fresh shared mapping of the device fd at the region's offset, as VFIO
        // documents; the kernel validates offset and length. Only `Mmio` reads and writes it,
        // with volatile accesses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.dev.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DeviceError::Bar { index, reason: format!("mmap failed: {}", io::Error::last_os_error()) });
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or(DeviceError::Bar { index, reason: "mmap returned a null address".into() })?;
        // SAFETY: `base..base+size` is the device's BAR, mapped above and unmapped only when
        // the returned Bar drops.
        let mmio = unsafe { Mmio::new(base, size) };
        Ok(Bar { mmio, base, size })
    }
}

/// The result of a `pread`/`pwrite` of `len` bytes of config space.
fn whole_access(n: isize, len: usize) -> Result<(), DeviceError> {
    if n < 0 {
        return Err(DeviceError::Config { error: io::Error::last_os_error() });
    }
    if n != len as isize {
        let error = io::Error::other(format!("short access: {n} of {len} bytes"));
        return Err(DeviceError::Config { error });
    }
    Ok(())
}

/// The BDFs in IOMMU group `group` (`/sys/kernel/iommu_groups/<group>/devices`).
pub fn group_devices(group: u32) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/sys/kernel/iommu_groups/{group}/devices"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A memory BAR mapped into this process; unmapped on drop. Registers are reached through
/// [`Bar::mmio`] only, with volatile accesses.
pub struct Bar {
    mmio: Mmio,
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: a Bar owns its mapping (unmapped once, on drop); `base` is only used to unmap it.
// Register accesses go through `Mmio`, which is Send and Sync (see there).
unsafe impl Send for Bar {}
// SAFETY: as above; `&Bar` only reaches the registers through `Mmio`.
unsafe impl Sync for Bar {}

impl Bar {
    /// Register access to the BAR.
    pub fn mmio(&self) -> &Mmio {
        &self.mmio
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl RegisterIo for Bar {
    fn read32(&self, off: u32) -> u32 {
        self.mmio.read32(off)
    }

    fn write32(&self, off: u32, value: u32) {
        self.mmio.write32(off, value)
    }
}

/// One volatile 64-bit store ([`Mmio`]'s), never two 32-bit ones: mlx5 doorbells must reach the
/// device whole (see [`RegisterIo64`]).
impl RegisterIo64 for Bar {
    fn write64(&self, off: u32, value: u64) {
        self.mmio.write64(off, value)
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map_bar`; `mmio` is dropped with us.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Bar` over an anonymous mapping of ordinary memory (unmapped by the Bar's drop).
    fn anonymous_bar(size: usize) -> Bar {
        // SAFETY: a fresh private anonymous mapping; the Bar owns it from here and unmaps it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = NonNull::new(p.cast::<u8>()).expect("mmap returned null");
        // SAFETY: `base..base+size` stays mapped until the Bar drops; only the Bar touches it.
        let mmio = unsafe { Mmio::new(base, size) };
        Bar { mmio, base, size }
    }

    /// A BAR's 64-bit write is `Mmio`'s single 8-byte store (which needs 8-byte alignment),
    /// not two 4-byte stores (which would accept an offset that is only 4-byte aligned).
    #[test]
    fn a_bar_writes_64_bits_as_one_aligned_store() {
        let bar = anonymous_bar(4096);
        bar.write64(0x800, 0x1122_3344_5566_7788);
        assert_eq!((bar.read32(0x800), bar.read32(0x804)), (0x5566_7788, 0x1122_3344), "little-endian halves");
        let split = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bar.write64(0x804, 1)));
        assert!(split.is_err(), "a 64-bit write at a 4-byte aligned offset went through as two 32-bit stores");
        assert_eq!(bar.read32(0x808), 0, "nothing was written");
    }
}
