//! DMA-capable memory for eRPC: hugepage mappings, device addresses (IOVAs), and their mapping
//! into a VFIO container's IOMMU domain.
//!
//! * [`Memory`] is a pinned-size mapping of 2 MiB or 1 GiB hugepages (anonymous `MAP_HUGETLB`
//!   through `memmap2`), or of ordinary pages when a caller asks for them explicitly (tests,
//!   software transports). It is never exposed as a Rust reference: a device may write it, so
//!   it is reached through raw pointers only (volatile or atomic access, or copies).
//! * [`IovaAllocator`] hands out device addresses from an aperture, page aligned, and takes them
//!   back.
//! * [`DmaSpace`] ties the two to an IOMMU domain: [`DmaSpace::alloc`] maps new memory with
//!   `VFIO_IOMMU_MAP_DMA` at a fresh IOVA, and the returned [`DmaMemory`] unmaps it
//!   (`VFIO_IOMMU_UNMAP_DMA`) and returns the IOVA when dropped. [`DmaSpace::identity`] is the
//!   domain of a software transport, where the "device address" is just the virtual address.
//!   [`DmaSpace::with_mapper`] hands the mapping to a [`DmaMapper`] instead of the kernel: a
//!   test playing the IOMMU for a device model, with IOVAs from the same allocator as VFIO (so
//!   they differ from virtual addresses and a driver that hands a device a virtual address is
//!   caught).
//! * [`DmaSlice`] is a borrowed range of DMA memory ([`DmaMemory::as_slice`]): CPU address,
//!   device address and length, tied by its lifetime to the memory. Drivers carve their rings
//!   and buffers from it ([`DmaSlice::take`], [`DmaSlice::sub`]); it grants no access by
//!   itself.
//! * [`DmaMemory::dataplane_region`] is the [`DmaRegion`] the dataplane carves msgbufs and
//!   control packets from.
//!
//! # Why `dataplane_region` stays `unsafe`
//!
//! Tying the endpoint's region to the memory's lifetime would need `DmaRegion<'a>` and, with
//! it, a lifetime on the endpoint (`Rpc`) and on every type that holds one, in a `no_std`
//! crate that also serves bare-metal images with `'static` memory (`DmaRegion::from_static`);
//! an owning region instead (keeping the `DmaMemory` alive inside it) would need an allocation
//! in the heap-free dataplane. And a lifetime would discharge only one of the three promises
//! the call makes: that the memory outlives the region and every msgbuf from it. The other two
//! — nothing else uses the memory, and no device is ever told to *write* into it (the region
//! is transmit-only) — are about what the caller does with the same `DmaMemory` and the NIC,
//! which no signature here can see. So it stays an `unsafe fn` whose contract names all
//! three; callers keep the `DmaMemory` next to the endpoint.
//!
//! Hugepages must be reserved by the administrator (`/proc/sys/vm/nr_hugepages`, or
//! `hugepages=N` on the kernel command line); when they are missing, [`DmaError::NoHugepages`]
//! says how many are needed and how to reserve them.

mod slice;

pub use slice::DmaSlice;

use erpc_dataplane::dma::DmaRegion;
use memmap2::{MmapMut, MmapOptions};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// The page size backing a [`Memory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 2 MiB hugepages (`/sys/kernel/mm/hugepages/hugepages-2048kB`).
    Huge2M,
    /// 1 GiB hugepages (`/sys/kernel/mm/hugepages/hugepages-1048576kB`).
    Huge1G,
    /// Ordinary 4 KiB pages: only when asked for explicitly (tests, software transports).
    Ordinary,
}

impl PageSize {
    /// The page size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            PageSize::Huge2M => 2 << 20,
            PageSize::Huge1G => 1 << 30,
            PageSize::Ordinary => 4096,
        }
    }

    fn sysfs_dir(self) -> Option<&'static str> {
        match self {
            PageSize::Huge2M => Some("/sys/kernel/mm/hugepages/hugepages-2048kB"),
            PageSize::Huge1G => Some("/sys/kernel/mm/hugepages/hugepages-1048576kB"),
            PageSize::Ordinary => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PageSize::Huge2M => "2 MiB",
            PageSize::Huge1G => "1 GiB",
            PageSize::Ordinary => "4 KiB",
        }
    }
}

/// Counts of reserved hugepages of one size, as the kernel reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HugepageCounts {
    /// `nr_hugepages`: reserved in all.
    pub total: u64,
    /// `free_hugepages`: not yet mapped by anyone.
    pub free: u64,
}

impl HugepageCounts {
    /// Reads the counts for `size` from sysfs; `None` for ordinary pages or when the kernel has
    /// no such hugepage size.
    pub fn read(size: PageSize) -> Option<HugepageCounts> {
        let dir = size.sysfs_dir()?;
        let num = |f: &str| -> Option<u64> { std::fs::read_to_string(format!("{dir}/{f}")).ok()?.trim().parse().ok() };
        Some(HugepageCounts { total: num("nr_hugepages")?, free: num("free_hugepages")? })
    }

    /// Raises the reservation of `size` hugepages until at least `free` are free (root only),
    /// and returns the counts after. For tests and tools that say they reserve pages; a
    /// reservation the kernel cannot fully satisfy (fragmented memory) shows in the counts.
    pub fn reserve_free(size: PageSize, free: u64) -> io::Result<HugepageCounts> {
        let dir = size
            .sysfs_dir()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "ordinary pages need no reservation"))?;
        let now = HugepageCounts::read(size).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("the kernel has no {} hugepages", size.name()))
        })?;
        if now.free < free {
            std::fs::write(format!("{dir}/nr_hugepages"), (now.total + free - now.free).to_string())?;
        }
        HugepageCounts::read(size).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "hugepage counts vanished"))
    }
}

/// Why DMA memory could not be provided. Each message says what to do.
#[derive(Debug)]
pub enum DmaError {
    /// Not enough free hugepages of the requested size.
    NoHugepages { size: PageSize, needed: u64, counts: HugepageCounts },
    /// The kernel has no hugepages of this size at all (1 GiB pages need `hugepagesz=1G`).
    UnsupportedPageSize(PageSize),
    /// A zero-length or overflowing request.
    BadLength(usize),
    /// `mmap` failed for another reason.
    Map(io::Error),
    /// The IOVA aperture has no free range of this size.
    IovaExhausted { len: u64 },
    /// `VFIO_IOMMU_MAP_DMA` failed.
    IommuMap { iova: u64, len: u64, error: String },
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::NoHugepages { size, needed, counts } => {
                let want = counts.total + needed.saturating_sub(counts.free);
                let path =
                    format!("{}/nr_hugepages", size.sysfs_dir().unwrap_or("/sys/kernel/mm/hugepages/hugepages-2048kB"));
                write!(
                    f,
                    "not enough {} hugepages: {needed} needed, {} free of {} reserved; reserve \
                     them as root with `echo {want} > {path}` (or boot with hugepages={want})",
                    size.name(),
                    counts.free,
                    counts.total
                )
            }
            DmaError::UnsupportedPageSize(s) => write!(
                f,
                "this kernel offers no {} hugepages (1 GiB pages need `hugepagesz=1G hugepages=N` \
                 on the kernel command line); use 2 MiB pages instead",
                s.name()
            ),
            DmaError::BadLength(n) => {
                write!(f, "cannot map {n} bytes of DMA memory: ask for 1 byte to a few TiB")
            }
            DmaError::Map(e) => {
                write!(f, "mapping DMA memory failed: {e} (check `ulimit -v` and free memory: `free -m`)")
            }
            DmaError::IovaExhausted { len } => write!(
                f,
                "no free device address range of {len} bytes in the IOVA aperture (4 GiB to \
                 512 GiB): free DMA memory no longer used, or allocate fewer, larger regions"
            ),
            DmaError::IommuMap { iova, len, error } => write!(
                f,
                "VFIO_IOMMU_MAP_DMA of {len} bytes at IOVA {iova:#x} failed: {error} (the \
                 container needs a device attached first; with many mappings, raise the locked \
                 memory limit: `ulimit -l unlimited`)"
            ),
        }
    }
}

impl std::error::Error for DmaError {
    /// The OS error underneath (its text is part of this error's message).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DmaError::Map(e) => Some(e),
            _ => None,
        }
    }
}

/// A mapping of hugepages (or, when asked, ordinary pages). The memory is zeroed by the kernel
/// and stays mapped until the value is dropped. It is only reachable through the raw pointer
/// [`Memory::as_ptr`]: memory a device may write must not be behind a Rust reference.
pub struct Memory {
    // Owns the mapping; never dereferenced as a slice.
    _map: MmapMut,
    base: NonNull<u8>,
    len: usize,
    page: PageSize,
}

// SAFETY: `Memory` uniquely owns its mapping; the raw pointer is only an address into it.
unsafe impl Send for Memory {}
// SAFETY: `&Memory` only gives out the address, never access to the bytes.
unsafe impl Sync for Memory {}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory").field("base", &self.base).field("len", &self.len).field("page", &self.page).finish()
    }
}

impl Memory {
    /// Maps at least `len` bytes of `page`-sized pages (rounded up to whole pages), populated.
    pub fn new(len: usize, page: PageSize) -> Result<Memory, DmaError> {
        let len = round_up(len, page.bytes()).ok_or(DmaError::BadLength(len))?;
        if len == 0 {
            return Err(DmaError::BadLength(0));
        }
        let counts = HugepageCounts::read(page);
        if page != PageSize::Ordinary && counts.is_none() {
            return Err(DmaError::UnsupportedPageSize(page));
        }
        let mut opts = MmapOptions::new();
        opts.len(len).populate();
        match page {
            PageSize::Huge2M => {
                opts.huge(Some(21));
            }
            PageSize::Huge1G => {
                opts.huge(Some(30));
            }
            PageSize::Ordinary => {}
        }
        let mut map = match opts.map_anon() {
            Ok(m) => m,
            Err(e) => {
                return Err(match (e.raw_os_error(), counts) {
                    (Some(libc::ENOMEM), Some(counts)) => {
                        DmaError::NoHugepages { size: page, needed: (len / page.bytes()) as u64, counts }
                    }
                    _ => DmaError::Map(e),
                })
            }
        };
        // A private hugetlb mapping reserves its pages at mmap time, so a shortfall is the
        // ENOMEM above, not a SIGBUS on first touch.
        let base = NonNull::new(map.as_mut_ptr()).ok_or(DmaError::BadLength(len))?;
        Ok(Memory { _map: map, base, len, page })
    }

    /// Maps at least `len` bytes of 2 MiB hugepages.
    pub fn hugepages(len: usize) -> Result<Memory, DmaError> {
        Memory::new(len, PageSize::Huge2M)
    }

    /// First byte of the mapping.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.base
    }

    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The page size backing the mapping.
    pub fn page_size(&self) -> PageSize {
        self.page
    }
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    n.checked_add(to - 1).map(|v| v / to * to)
}

/// Hands out page-aligned device addresses from `[base, limit)`; freed ranges are merged with
/// their free neighbours. First fit.
#[derive(Debug)]
pub struct IovaAllocator {
    /// Free ranges: start → length.
    free: BTreeMap<u64, u64>,
    align: u64,
}

impl IovaAllocator {
    /// An allocator over `[base, limit)` handing out multiples of `align` (a power of two).
    pub fn new(base: u64, limit: u64, align: u64) -> IovaAllocator {
        assert!(align.is_power_of_two() && base % align == 0 && base < limit);
        let mut free = BTreeMap::new();
        free.insert(base, limit - base);
        IovaAllocator { free, align }
    }

    /// A range of at least `len` bytes, aligned to `max(align, alignment)`; `None` when no free
    /// range is large enough.
    pub fn alloc(&mut self, len: u64, alignment: u64) -> Option<u64> {
        let align = self.align.max(alignment.next_power_of_two());
        let len = len.checked_add(self.align - 1)? & !(self.align - 1);
        if len == 0 {
            return None;
        }
        let (start, flen, at) = self.free.iter().find_map(|(&s, &l)| {
            let at = s.checked_add(align - 1)? & !(align - 1);
            (at.checked_add(len)? <= s + l).then_some((s, l, at))
        })?;
        self.free.remove(&start);
        if at > start {
            self.free.insert(start, at - start);
        }
        let end = at + len;
        if end < start + flen {
            self.free.insert(end, start + flen - end);
        }
        Some(at)
    }

    /// Returns `[iova, iova+len)` (as rounded by `alloc`).
    pub fn free(&mut self, iova: u64, len: u64) {
        let mut start = iova;
        let mut len = (len + self.align - 1) & !(self.align - 1);
        // Merge with the following range.
        if let Some(next) = self.free.remove(&(start + len)) {
            len += next;
        }
        // Merge with the preceding range.
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            debug_assert!(ps + pl <= start, "IOVA range freed twice");
            if ps + pl == start {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        self.free.insert(start, len);
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }
}

/// Plays the IOMMU for a [`DmaSpace::with_mapper`] space: told of every mapping a
/// [`DmaSpace`] makes and removes. Device models in tests implement it with a table of IOVA
/// ranges that their DMA goes through.
pub trait DmaMapper: Send + Sync {
    /// `[iova, iova+len)` now translates to `vaddr..vaddr+len`, which stays valid until the
    /// matching [`DmaMapper::unmap`]. An error fails the allocation.
    fn map(&self, iova: u64, vaddr: NonNull<u8>, len: u64) -> Result<(), String>;
    /// Removes the mapping made by `map(iova, _, len)`; called before the memory is released.
    fn unmap(&self, iova: u64, len: u64);
}

/// Where the IOVAs of a [`DmaSpace`] go.
enum Domain {
    /// A VFIO type1 container: every allocation is mapped with `VFIO_IOMMU_MAP_DMA`.
    Vfio(Arc<vfio_ioctls::VfioContainer>),
    /// No IOMMU: the device address is the virtual address (software transports, tests).
    Identity,
    /// A software IOMMU (tests): every allocation is reported to the mapper.
    Mapper(Arc<dyn DmaMapper>),
}

/// The IOVA aperture used in a VFIO container: from 4 GiB (clear of the x86 MSI window at
/// 0xfee00000 and of low reserved regions) to 512 GiB (inside a 39-bit IOMMU address width,
/// the smallest common one, e.g. QEMU's intel-iommu default).
pub const IOVA_BASE: u64 = 1 << 32;
/// See [`IOVA_BASE`].
pub const IOVA_LIMIT: u64 = 1 << 39;

/// One device address space: an IOMMU domain and the allocator of its IOVAs.
pub struct DmaSpace {
    domain: Domain,
    iovas: Mutex<IovaAllocator>,
}

impl fmt::Debug for DmaSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.domain {
            Domain::Vfio(_) => "vfio",
            Domain::Identity => "identity",
            Domain::Mapper(_) => "mapper",
        };
        f.debug_struct("DmaSpace").field("domain", &kind).finish()
    }
}

impl DmaSpace {
    /// The address space of a VFIO container. Attach a device to the container (open it)
    /// before allocating: the kernel sets up the IOMMU with the first group.
    pub fn vfio(container: Arc<vfio_ioctls::VfioContainer>) -> Arc<DmaSpace> {
        Arc::new(DmaSpace {
            domain: Domain::Vfio(container),
            iovas: Mutex::new(IovaAllocator::new(IOVA_BASE, IOVA_LIMIT, 4096)),
        })
    }

    /// No IOMMU: device address = virtual address. For software transports and tests.
    pub fn identity() -> Arc<DmaSpace> {
        Arc::new(DmaSpace { domain: Domain::Identity, iovas: Mutex::new(IovaAllocator::new(0, 1, 1)) })
    }

    /// A space whose mappings are made by `mapper` (a test playing the IOMMU). IOVAs come from
    /// the same aperture and allocator as in a VFIO container, so they never equal the virtual
    /// addresses.
    pub fn with_mapper(mapper: Arc<dyn DmaMapper>) -> Arc<DmaSpace> {
        Arc::new(DmaSpace {
            domain: Domain::Mapper(mapper),
            iovas: Mutex::new(IovaAllocator::new(IOVA_BASE, IOVA_LIMIT, 4096)),
        })
    }

    /// Whether this is the identity space (no IOMMU; software transports and tests).
    pub fn is_identity(&self) -> bool {
        matches!(self.domain, Domain::Identity)
    }

    /// Whether this space maps into `container` (the same container object).
    pub fn is_in(&self, container: &Arc<vfio_ioctls::VfioContainer>) -> bool {
        matches!(&self.domain, Domain::Vfio(c) if Arc::ptr_eq(c, container))
    }

    /// Maps `len` bytes of `page`-sized pages for the device and returns them with their IOVA.
    pub fn alloc(self: &Arc<Self>, len: usize, page: PageSize) -> Result<DmaMemory, DmaError> {
        let mem = Memory::new(len, page)?;
        let len = mem.len() as u64;
        let iova = match &self.domain {
            Domain::Identity => mem.as_ptr().as_ptr() as u64,
            Domain::Vfio(c) => {
                let iova = self.alloc_iova(len, page)?;
                // SAFETY: `mem` is a fresh mapping that nothing references; from here on it is
                // only reached through raw pointers (Memory never hands out references), and
                // DmaMemory's Drop unmaps it from the IOMMU before the mapping goes away.
                if let Err(e) = unsafe { c.vfio_dma_map(iova, mem.len(), mem.as_ptr().as_ptr()) } {
                    self.free_iova(iova, len);
                    return Err(DmaError::IommuMap { iova, len, error: e.to_string() });
                }
                iova
            }
            Domain::Mapper(m) => {
                let iova = self.alloc_iova(len, page)?;
                // DmaMemory's Drop calls `unmap` before the mapping goes away.
                if let Err(error) = m.map(iova, mem.as_ptr(), len) {
                    self.free_iova(iova, len);
                    return Err(DmaError::IommuMap { iova, len, error });
                }
                iova
            }
        };
        Ok(DmaMemory { mem, iova, space: Arc::clone(self) })
    }

    fn alloc_iova(&self, len: u64, page: PageSize) -> Result<u64, DmaError> {
        let align = page.bytes() as u64;
        self.iovas.lock().unwrap_or_else(|p| p.into_inner()).alloc(len, align).ok_or(DmaError::IovaExhausted { len })
    }

    fn free_iova(&self, iova: u64, len: u64) {
        self.iovas.lock().unwrap_or_else(|p| p.into_inner()).free(iova, len);
    }
}

/// Memory mapped for a device at [`DmaMemory::iova`]. Dropping it unmaps it from the IOMMU
/// (`VFIO_IOMMU_UNMAP_DMA`) before the pages are released.
pub struct DmaMemory {
    mem: Memory,
    iova: u64,
    space: Arc<DmaSpace>,
}

impl fmt::Debug for DmaMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMemory").field("mem", &self.mem).field("iova", &self.iova).finish()
    }
}

impl DmaMemory {
    /// CPU address of the first byte.
    pub fn vaddr(&self) -> NonNull<u8> {
        self.mem.as_ptr()
    }

    /// Device address of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }

    /// The page size backing it.
    pub fn page_size(&self) -> PageSize {
        self.mem.page_size()
    }

    /// The whole memory as a [`DmaSlice`] to carve rings and buffers from.
    pub fn as_slice(&self) -> DmaSlice<'_> {
        // SAFETY: the mapping is valid for `len` bytes while `self` lives (the borrow), and
        // the device sees it at `iova`.
        unsafe { DmaSlice::new(self.vaddr(), self.iova, self.len()) }
    }

    /// This memory as the dataplane's [`DmaRegion`], for msgbufs and control packets.
    ///
    /// # Safety
    /// `self` must outlive the region and every msgbuf allocated from it (keep it next to the
    /// endpoint), nothing else may use the memory meanwhile, and no device may be given a
    /// descriptor that makes it *write* into it (the dataplane's region is transmit-only).
    pub unsafe fn dataplane_region(&self) -> DmaRegion {
        // SAFETY: forwarded to the caller (see above); the mapping is valid for `len` bytes and
        // the device sees it at `iova`.
        unsafe { DmaRegion::new(self.vaddr(), self.len(), self.iova) }
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        if let Domain::Vfio(c) = &self.space.domain {
            let len = self.mem.len() as u64;
            match c.vfio_dma_unmap(self.iova, self.mem.len()) {
                Ok(()) => self.space.iovas.lock().unwrap_or_else(|p| p.into_inner()).free(self.iova, len),
                // The container lost its last device (the IOMMU domain, with our mapping, is
                // gone) or the kernel refused: do not reuse the IOVA.
                Err(e) => log::debug!("VFIO_IOMMU_UNMAP_DMA at {:#x}: {e}", self.iova),
            }
        }
        if let Domain::Mapper(m) = &self.space.domain {
            let len = self.mem.len() as u64;
            m.unmap(self.iova, len);
            self.space.free_iova(self.iova, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_alloc_aligns_splits_and_merges() {
        let mut a = IovaAllocator::new(0x1000, 0x1_0000, 0x1000);
        let x = a.alloc(0x1800, 0).unwrap();
        assert_eq!(x, 0x1000);
        let y = a.alloc(0x1000, 0x4000).unwrap();
        assert_eq!(y, 0x4000, "aligned to 16 KiB, skipping the gap at 0x3000");
        let z = a.alloc(0x1000, 0).unwrap();
        assert_eq!(z, 0x3000, "first fit takes the gap left by the alignment");
        assert_eq!(a.free_bytes(), 0xf000 - 0x4000);
        a.free(y, 0x1000);
        a.free(x, 0x1800);
        a.free(z, 0x1000);
        assert_eq!(a.free_bytes(), 0xf000);
        assert_eq!(a.free.len(), 1, "all ranges merged back: {:?}", a.free);
        assert_eq!(a.alloc(0xf000, 0), Some(0x1000));
        assert_eq!(a.alloc(0x1000, 0), None, "exhausted");
    }

    #[test]
    fn iova_alloc_rejects_zero_and_oversize() {
        let mut a = IovaAllocator::new(0, 0x10000, 0x1000);
        assert_eq!(a.alloc(0, 0), None);
        assert_eq!(a.alloc(0x10001, 0), None);
        assert_eq!(a.alloc(u64::MAX, 0), None);
    }

    #[test]
    fn ordinary_memory_is_zeroed_and_identity_mapped() {
        let space = DmaSpace::identity();
        let m = space.alloc(10_000, PageSize::Ordinary).unwrap();
        assert_eq!(m.len(), 12288);
        assert_eq!(m.iova(), m.vaddr().as_ptr() as u64);
        for i in 0..m.len() {
            // SAFETY: inside the mapping; no device is attached to identity memory.
            assert_eq!(unsafe { m.vaddr().as_ptr().add(i).read_volatile() }, 0);
        }
        // SAFETY: `m` outlives `r` within this test.
        let r = unsafe { m.dataplane_region() };
        assert_eq!((r.len(), r.iova()), (m.len(), m.iova()));
    }

    #[test]
    fn as_slice_describes_the_whole_memory() {
        let space = DmaSpace::identity();
        let m = space.alloc(8192, PageSize::Ordinary).unwrap();
        let mut s = m.as_slice();
        assert_eq!((s.base(), s.iova(), s.len()), (m.vaddr(), m.iova(), m.len()));
        let ring = s.take(100, 4096).expect("a page");
        assert_eq!((ring.len(), s.iova()), (4096, m.iova() + 4096));
        assert!(s.take(4097, 1).is_none(), "one page left");
    }

    #[test]
    fn missing_hugepages_say_how_to_reserve_them() {
        let Some(c) = HugepageCounts::read(PageSize::Huge2M) else { return };
        // Ask for more than are free: the error must name the count and the sysctl.
        let want = (c.free as usize + 1) * PageSize::Huge2M.bytes();
        let e = Memory::hugepages(want).expect_err("more hugepages than are free");
        let msg = e.to_string();
        assert!(matches!(e, DmaError::NoHugepages { .. }), "{msg}");
        assert!(msg.contains("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"), "{msg}");
        assert!(msg.contains(&format!("{} needed", c.free + 1)), "{msg}");
    }

    #[test]
    fn error_messages_name_the_fix() {
        let e =
            DmaError::NoHugepages { size: PageSize::Huge2M, needed: 3, counts: HugepageCounts { total: 4, free: 1 } };
        assert_eq!(
            e.to_string(),
            "not enough 2 MiB hugepages: 3 needed, 1 free of 4 reserved; reserve them as root \
             with `echo 6 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` (or boot \
             with hugepages=6)"
        );
    }

    /// Records what a [`DmaSpace::with_mapper`] space asks of its IOMMU.
    #[derive(Default)]
    struct RecordingMapper {
        mapped: Mutex<Vec<(u64, usize, u64)>>,
        unmapped: Mutex<Vec<(u64, u64)>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl DmaMapper for RecordingMapper {
        fn map(&self, iova: u64, vaddr: NonNull<u8>, len: u64) -> Result<(), String> {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                return Err("refused by the test".into());
            }
            self.mapped.lock().unwrap().push((iova, vaddr.as_ptr() as usize, len));
            Ok(())
        }
        fn unmap(&self, iova: u64, len: u64) {
            self.unmapped.lock().unwrap().push((iova, len));
        }
    }

    #[test]
    fn mapper_space_maps_at_fresh_iovas_and_unmaps_on_drop() {
        let mapper = Arc::new(RecordingMapper::default());
        let space = DmaSpace::with_mapper(mapper.clone());
        assert!(!space.is_identity());
        assert_eq!(format!("{space:?}"), "DmaSpace { domain: \"mapper\" }");
        let a = space.alloc(5000, PageSize::Ordinary).unwrap();
        let b = space.alloc(4096, PageSize::Ordinary).unwrap();
        assert_eq!(a.iova(), IOVA_BASE, "first fit from the aperture");
        assert_eq!(b.iova(), IOVA_BASE + 8192, "after a's two pages");
        assert_ne!(a.iova(), a.vaddr().as_ptr() as u64, "IOVAs are not virtual addresses");
        assert_eq!(
            *mapper.mapped.lock().unwrap(),
            vec![(a.iova(), a.vaddr().as_ptr() as usize, 8192), (b.iova(), b.vaddr().as_ptr() as usize, 4096)]
        );
        let a_iova = a.iova();
        drop(a);
        assert_eq!(*mapper.unmapped.lock().unwrap(), vec![(a_iova, 8192)]);
        let c = space.alloc(8192, PageSize::Ordinary).unwrap();
        assert_eq!(c.iova(), a_iova, "the IOVA range came back to the allocator");
        drop(b);
        drop(c);
        assert_eq!(mapper.unmapped.lock().unwrap().len(), 3);
        assert_eq!(space.iovas.lock().unwrap().free_bytes(), IOVA_LIMIT - IOVA_BASE);
    }

    #[test]
    fn mapper_refusal_fails_the_allocation_and_returns_the_iova() {
        let mapper = Arc::new(RecordingMapper::default());
        mapper.refuse.store(true, std::sync::atomic::Ordering::Relaxed);
        let space = DmaSpace::with_mapper(mapper.clone());
        let e = space.alloc(4096, PageSize::Ordinary).expect_err("refused");
        assert!(
            matches!(&e, DmaError::IommuMap { iova, len: 4096, error } if *iova == IOVA_BASE && error == "refused by the test"),
            "{e:?}"
        );
        assert_eq!(space.iovas.lock().unwrap().free_bytes(), IOVA_LIMIT - IOVA_BASE);
        assert!(mapper.unmapped.lock().unwrap().is_empty());
    }
}
