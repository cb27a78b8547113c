//! Intrusive doubly linked lists of slots (client: requests in flight, for the loss scan;
//! server: requests waiting for a worker), linked through the slots' `prev`/`next`.

use super::{SessionTable, SlotId, NIL};

#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotList {
    head: u32,
    tail: u32,
}

impl SlotList {
    pub(crate) const EMPTY: SlotList = SlotList { head: NIL, tail: NIL };

    #[inline]
    pub(crate) fn head(&self) -> Option<SlotId> {
        (self.head != NIL).then_some(SlotId::from_raw(self.head))
    }

    /// The slot after `id` on its list.
    #[inline]
    pub(crate) fn next(table: &SessionTable<'_>, id: SlotId) -> Option<SlotId> {
        let n = table.slot(id).next;
        (n != NIL).then_some(SlotId::from_raw(n))
    }

    /// Appends `id` (not on any list).
    #[inline(always)]
    pub(crate) fn push(&mut self, table: &mut SessionTable<'_>, id: SlotId) {
        let tail = self.tail;
        let sl = table.slot_mut(id);
        debug_assert!(!sl.linked);
        sl.prev = tail;
        sl.next = NIL;
        sl.linked = true;
        if tail == NIL {
            self.head = id.raw();
        } else {
            table.slot_mut(SlotId::from_raw(tail)).next = id.raw();
        }
        self.tail = id.raw();
    }

    /// Unlinks `id` (on this list).
    #[inline(always)]
    pub(crate) fn remove(&mut self, table: &mut SessionTable<'_>, id: SlotId) {
        let sl = table.slot_mut(id);
        let (prev, next) = (sl.prev, sl.next);
        sl.prev = NIL;
        sl.next = NIL;
        sl.linked = false;
        if prev == NIL {
            self.head = next;
        } else {
            table.slot_mut(SlotId::from_raw(prev)).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            table.slot_mut(SlotId::from_raw(next)).prev = prev;
        }
    }
}
