//! A software IOMMU: the table of IOVA ranges a [`DmaSpace::with_mapper`] space maps, and the
//! only way the device model reaches host memory. A device access to an IOVA that is not
//! mapped (or runs past the end of the mappings) is an IOMMU fault: it is recorded and refused,
//! and no host memory is touched.
//!
//! [`DmaSpace::with_mapper`]: erpc_hugepages::DmaSpace::with_mapper

use erpc_hugepages::DmaMapper;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Mutex;

/// A refused device access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuFault {
    pub iova: u64,
    pub len: usize,
    pub write: bool,
}

#[derive(Default)]
struct Table {
    /// IOVA start → (host address, length).
    maps: BTreeMap<u64, (usize, u64)>,
    faults: Vec<IommuFault>,
    /// Mapping requests refused (overlaps, zero length) and unmaps of unknown ranges.
    errors: Vec<String>,
}

/// The IOVA → host memory table. Share it (`Arc`) between the [`DmaSpace`] and the model.
///
/// [`DmaSpace`]: erpc_hugepages::DmaSpace
#[derive(Default)]
pub struct Iommu {
    t: Mutex<Table>,
}

impl Iommu {
    pub fn new() -> Iommu {
        Iommu::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.t.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Host addresses of the chunks of `[iova, iova+len)`, or `None` when any byte is unmapped.
    fn translate(t: &Table, iova: u64, len: usize) -> Option<Vec<(usize, usize)>> {
        let mut out = vec![];
        let mut at = iova;
        let end = iova.checked_add(len as u64)?;
        while at < end {
            let (&start, &(host, mlen)) = t.maps.range(..=at).next_back()?;
            if at >= start + mlen {
                return None;
            }
            let n = (start + mlen).min(end) - at;
            out.push((host + (at - start) as usize, n as usize));
            at += n;
        }
        Some(out)
    }

    /// Whether all of `[iova, iova+len)` is mapped (no fault is recorded).
    pub fn is_mapped(&self, iova: u64, len: usize) -> bool {
        Self::translate(&self.table(), iova, len).is_some()
    }

    /// A device read of `buf.len()` bytes at `iova`.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), IommuFault> {
        let mut t = self.table();
        let Some(chunks) = Self::translate(&t, iova, buf.len()) else {
            let f = IommuFault { iova, len: buf.len(), write: false };
            t.faults.push(f.clone());
            return Err(f);
        };
        let mut off = 0;
        for (host, n) in chunks {
            // SAFETY: `host..host+n` lies inside a mapping registered by `DmaMapper::map`, whose
            // memory stays valid until `unmap`, which needs the table lock we hold. The memory
            // is only reached through this raw pointer (no reference to host memory is made);
            // `buf` is our own buffer and cannot overlap host DMA memory.
            unsafe { std::ptr::copy_nonoverlapping(host as *const u8, buf[off..].as_mut_ptr(), n) };
            off += n;
        }
        Ok(())
    }

    /// A device write of `data` at `iova`.
    pub fn write(&self, iova: u64, data: &[u8]) -> Result<(), IommuFault> {
        let mut t = self.table();
        let Some(chunks) = Self::translate(&t, iova, data.len()) else {
            let f = IommuFault { iova, len: data.len(), write: true };
            t.faults.push(f.clone());
            return Err(f);
        };
        let mut off = 0;
        for (host, n) in chunks {
            // SAFETY: as in `read`: a registered, live mapping reached through a raw pointer
            // while the table lock keeps it mapped; `data` is ours and does not overlap it.
            unsafe { std::ptr::copy_nonoverlapping(data[off..].as_ptr(), host as *mut u8, n) };
            off += n;
        }
        Ok(())
    }

    /// Faults recorded so far.
    pub fn faults(&self) -> Vec<IommuFault> {
        self.table().faults.clone()
    }

    /// Refused map requests and unmaps of unknown ranges.
    pub fn errors(&self) -> Vec<String> {
        self.table().errors.clone()
    }

    /// Mapped ranges: (IOVA, length).
    pub fn mappings(&self) -> Vec<(u64, u64)> {
        self.table().maps.iter().map(|(&i, &(_, l))| (i, l)).collect()
    }
}

impl DmaMapper for Iommu {
    fn map(&self, iova: u64, vaddr: NonNull<u8>, len: u64) -> Result<(), String> {
        let mut t = self.table();
        let end = iova.checked_add(len).filter(|_| len > 0);
        let overlaps = match end {
            None => true,
            Some(end) => t.maps.range(..end).next_back().is_some_and(|(&s, &(_, l))| s + l > iova),
        };
        if overlaps {
            let e = format!("map of {len:#x} bytes at IOVA {iova:#x} overlaps a mapping or is empty");
            t.errors.push(e.clone());
            return Err(e);
        }
        t.maps.insert(iova, (vaddr.as_ptr() as usize, len));
        Ok(())
    }

    fn unmap(&self, iova: u64, len: u64) {
        let mut t = self.table();
        match t.maps.get(&iova) {
            Some(&(_, l)) if l == len => {
                t.maps.remove(&iova);
            }
            _ => t.errors.push(format!("unmap of {len:#x} bytes at IOVA {iova:#x}: no such mapping")),
        }
    }
}
