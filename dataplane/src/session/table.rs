//! The session table: the caller's session storage, the free list and the token index.

use super::{Role, Session, SessionState, Slot, SlotId, NIL};
use crate::storage::Storage;
use crate::transport::EndpointAddr;
use core::ops::{Index, IndexMut};

/// Session storage with its free list (a FIFO: the oldest freed number is reused first, so
/// numbers come back late) and the token index of server sessions, a hash table chained through
/// the sessions themselves (`bucket_head` of session `b` heads bucket `b`).
pub(crate) struct SessionTable<'m> {
    sessions: Storage<'m, Session>,
    free_head: u32,
    free_tail: u32,
}

impl<'m> SessionTable<'m> {
    /// Takes over `sessions` (1..=65535 entries, checked by the caller): every session free.
    pub(crate) fn new(mut sessions: Storage<'m, Session>) -> Self {
        let n = sessions.len();
        for (i, s) in sessions.iter_mut().enumerate() {
            *s = Session::EMPTY;
            s.free_next = if i + 1 < n { i as u32 + 1 } else { NIL };
        }
        SessionTable { sessions, free_head: 0, free_tail: n as u32 - 1 }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    #[inline]
    pub(crate) fn get(&self, s: usize) -> Option<&Session> {
        self.sessions.get(s)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, s: usize) -> Option<&mut Session> {
        self.sessions.get_mut(s)
    }

    pub(crate) fn iter(&self) -> core::slice::Iter<'_, Session> {
        self.sessions.iter()
    }

    #[inline]
    pub(crate) fn slot(&self, id: SlotId) -> &Slot {
        &self.sessions[id.session()].slots[id.slot()]
    }

    #[inline]
    pub(crate) fn slot_mut(&mut self, id: SlotId) -> &mut Slot {
        &mut self.sessions[id.session()].slots[id.slot()]
    }

    /// The storage itself, for the timing wheel's links.
    #[inline]
    pub(crate) fn as_mut_slice(&mut self) -> &mut [Session] {
        &mut self.sessions
    }

    /// Takes a session number from the free list.
    pub(crate) fn alloc(&mut self) -> Option<usize> {
        let s = self.free_head;
        if s == NIL {
            return None;
        }
        self.free_head = self.sessions[s as usize].free_next;
        if self.free_head == NIL {
            self.free_tail = NIL;
        }
        self.sessions[s as usize].free_next = NIL;
        Some(s as usize)
    }

    /// Returns session `s` to the free list (the caller has freed its buffers and unlinked its
    /// slots): out of the token index, marked free, its generation bumped so stale request
    /// handles are refused.
    pub(crate) fn free(&mut self, s: usize) {
        if self.sessions[s].role == Role::Server {
            self.token_remove(s);
        }
        let sess = &mut self.sessions[s];
        sess.state = SessionState::Free;
        sess.generation = sess.generation.wrapping_add(1);
        sess.free_next = NIL;
        if self.free_tail == NIL {
            self.free_head = s as u32;
        } else {
            self.sessions[self.free_tail as usize].free_next = s as u32;
        }
        self.free_tail = s as u32;
    }

    // ----- token index: (token, client, client session) -> server session -----

    fn bucket(&self, token: u64) -> usize {
        ((token ^ (token >> 29)) % self.sessions.len() as u64) as usize
    }

    /// The server session of the connection (`token`, `client`, `csess`), if there is one.
    pub(crate) fn token_find(&self, token: u64, client: &EndpointAddr, csess: u16) -> Option<usize> {
        let mut s = self.sessions[self.bucket(token)].bucket_head;
        while s != NIL {
            let x = &self.sessions[s as usize];
            if x.token == token && x.peer == *client && x.remote_session == csess && x.role == Role::Server {
                return Some(s as usize);
            }
            s = x.token_next;
        }
        None
    }

    /// Indexes server session `s` by its token (set before).
    pub(crate) fn token_insert(&mut self, s: usize) {
        let b = self.bucket(self.sessions[s].token);
        self.sessions[s].token_next = self.sessions[b].bucket_head;
        self.sessions[b].bucket_head = s as u32;
    }

    fn token_remove(&mut self, s: usize) {
        let b = self.bucket(self.sessions[s].token);
        let mut cur = self.sessions[b].bucket_head;
        let mut prev = NIL;
        while cur != NIL {
            let next = self.sessions[cur as usize].token_next;
            if cur as usize == s {
                if prev == NIL {
                    self.sessions[b].bucket_head = next;
                } else {
                    self.sessions[prev as usize].token_next = next;
                }
                self.sessions[s].token_next = NIL;
                return;
            }
            prev = cur;
            cur = next;
        }
    }
}

impl Index<usize> for SessionTable<'_> {
    type Output = Session;
    #[inline]
    fn index(&self, s: usize) -> &Session {
        &self.sessions[s]
    }
}

impl IndexMut<usize> for SessionTable<'_> {
    #[inline]
    fn index_mut(&mut self, s: usize) -> &mut Session {
        &mut self.sessions[s]
    }
}
