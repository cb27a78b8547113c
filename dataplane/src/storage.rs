//! Storage the endpoint keeps for its whole life: borrowed from the caller (always possible,
//! and the only way without `std`), or with `std` owned and freed with the endpoint.
//!
//! Either way the endpoint reaches it through a plain `&mut [T]`, so owning it costs nothing on
//! the datapath: an owned array is allocated as a `Box<[T]>`, leaked into that reference, and
//! turned back into the `Box` (and freed) when the storage is dropped.

use core::ops::{Deref, DerefMut};

pub(crate) struct Storage<'m, T> {
    slice: &'m mut [T],
    /// Whether `slice` is a leaked `Box<[T]>` that this storage frees.
    #[cfg(feature = "std")]
    owned: bool,
}

impl<'m, T> Storage<'m, T> {
    pub(crate) fn borrowed(slice: &'m mut [T]) -> Self {
        Storage {
            slice,
            #[cfg(feature = "std")]
            owned: false,
        }
    }

    #[cfg(feature = "std")]
    pub(crate) fn owned(b: std::boxed::Box<[T]>) -> Self {
        Storage { slice: std::boxed::Box::leak(b), owned: true }
    }
}

#[cfg(feature = "std")]
impl<T> Drop for Storage<'_, T> {
    fn drop(&mut self) {
        if self.owned {
            let p: *mut [T] = core::mem::take::<&mut [T]>(&mut self.slice);
            // SAFETY: `p` came from `Box::leak` in `owned` and is the only reference to that
            // allocation (the storage hands out only borrows of itself); it is turned back into
            // its `Box` exactly once, here, and `self.slice` no longer points at it.
            drop(unsafe { std::boxed::Box::from_raw(p) });
        }
    }
}

impl<T> Deref for Storage<'_, T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T> DerefMut for Storage<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        self.slice
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn owned_storage_drops_its_elements_once() {
        let tracker = Rc::new(());
        let s = Storage::owned((0..3).map(|_| tracker.clone()).collect());
        assert_eq!(Rc::strong_count(&tracker), 4);
        assert_eq!(s.len(), 3);
        drop(s);
        assert_eq!(Rc::strong_count(&tracker), 1);
    }

    #[test]
    fn borrowed_storage_leaves_the_callers_memory_alone() {
        let tracker = Rc::new(());
        let mut v: std::vec::Vec<Rc<()>> = (0..2).map(|_| tracker.clone()).collect();
        drop(Storage::borrowed(&mut v[..]));
        assert_eq!(Rc::strong_count(&tracker), 3);
    }
}
