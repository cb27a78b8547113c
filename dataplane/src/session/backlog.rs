//! The request backlog: requests queued behind a session's busy slots, a FIFO per session
//! threaded through the caller's backlog storage.

use super::{Session, NIL};
use crate::msgbuf::MsgBuf;
use crate::storage::Storage;

/// A queued request waiting for a free slot (storage is the caller's, see [`BacklogEntry::storage`]).
#[derive(Debug)]
pub struct BacklogEntry {
    req: Option<MsgBuf>,
    resp: Option<MsgBuf>,
    tag: u64,
    next: u32,
    cont: u8,
    req_type: u8,
}

impl BacklogEntry {
    pub const EMPTY: BacklogEntry = BacklogEntry { req: None, resp: None, tag: 0, next: NIL, cont: 0, req_type: 0 };

    /// Storage for `n` queued requests.
    #[cfg(feature = "std")]
    pub fn storage(n: usize) -> std::vec::Vec<BacklogEntry> {
        (0..n).map(|_| BacklogEntry::EMPTY).collect()
    }
}

/// A request as queued: everything `enqueue_request` was given.
pub(crate) struct Queued {
    pub(crate) req_type: u8,
    pub(crate) req: MsgBuf,
    pub(crate) resp: MsgBuf,
    /// Index in the continuation table.
    pub(crate) cont: u8,
    pub(crate) tag: u64,
}

/// The backlog storage and its free list; each session holds the head, tail and length of its
/// own FIFO (`backlog_head`, `backlog_tail`, `backlog_len`).
pub(crate) struct Backlog<'m> {
    entries: Storage<'m, BacklogEntry>,
    free: u32,
}

impl<'m> Backlog<'m> {
    pub(crate) fn new(mut entries: Storage<'m, BacklogEntry>) -> Self {
        let n = entries.len();
        for (i, b) in entries.iter_mut().enumerate() {
            *b = BacklogEntry::EMPTY;
            b.next = if i + 1 < n { i as u32 + 1 } else { NIL };
        }
        Backlog { entries, free: if n > 0 { 0 } else { NIL } }
    }

    /// Appends `q` to `sess`'s FIFO; hands it back if the storage is full.
    pub(crate) fn push(&mut self, sess: &mut Session, q: Queued) -> Result<(), Queued> {
        let b = self.free;
        if b == NIL {
            return Err(q);
        }
        let e = &mut self.entries[b as usize];
        self.free = e.next;
        *e = BacklogEntry {
            req: Some(q.req),
            resp: Some(q.resp),
            tag: q.tag,
            next: NIL,
            cont: q.cont,
            req_type: q.req_type,
        };
        if sess.backlog_tail == NIL {
            sess.backlog_head = b;
        } else {
            self.entries[sess.backlog_tail as usize].next = b;
        }
        sess.backlog_tail = b;
        sess.backlog_len += 1;
        Ok(())
    }

    /// Takes the first request of `sess`'s FIFO.
    pub(crate) fn pop(&mut self, sess: &mut Session) -> Option<Queued> {
        let b = sess.backlog_head;
        if b == NIL {
            return None;
        }
        let e = &mut self.entries[b as usize];
        sess.backlog_head = e.next;
        if sess.backlog_head == NIL {
            sess.backlog_tail = NIL;
        }
        sess.backlog_len -= 1;
        let q = Queued {
            req_type: e.req_type,
            req: e.req.take().expect("queued request"),
            resp: e.resp.take().expect("queued response"),
            cont: e.cont,
            tag: e.tag,
        };
        e.next = self.free;
        self.free = b;
        Some(q)
    }
}
