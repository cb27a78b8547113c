//! The session table: the caller's session storage, the free list and the token index.

use super::{Role, Session, SessionState, Slot, SlotId, NIL};
use crate::storage::Storage;
use crate::transport::EndpointAddr;
use core::ops::{Index, IndexMut};
use siphasher::sip::SipHasher13;

/// Session storage with its free list (a FIFO: the oldest freed number is reused first, so
/// numbers come back late) and two indexes of server sessions, hash tables chained through the
/// sessions themselves: by connection token (`bucket_head` of session `b` heads bucket `b`), to
/// find a retransmitted connect request's session, and by client IPv4 address (`ip_head`), to
/// count a client's sessions.
///
/// Tokens and addresses are chosen by the client, so both hashes are keyed with a random key of
/// this endpoint (SipHash-1-3): a client cannot make its entries collide, and a lookup costs
/// O(1) expected whatever tokens it picks.
pub(crate) struct SessionTable<'m> {
    sessions: Storage<'m, Session>,
    free_head: u32,
    free_tail: u32,
    hasher: SipHasher13,
}

impl<'m> SessionTable<'m> {
    /// Takes over `sessions` (1..=65535 entries, checked by the caller): every session free.
    /// `key` keys the index hashes: it must be secret (random per endpoint).
    pub(crate) fn new(mut sessions: Storage<'m, Session>, key: [u64; 2]) -> Self {
        let n = sessions.len();
        for (i, s) in sessions.iter_mut().enumerate() {
            *s = Session::EMPTY;
            s.free_next = if i + 1 < n { i as u32 + 1 } else { NIL };
        }
        SessionTable {
            sessions,
            free_head: 0,
            free_tail: n as u32 - 1,
            hasher: SipHasher13::new_with_keys(key[0], key[1]),
        }
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
        if self.sessions[s].role == Role::Server && self.sessions[s].state != SessionState::Free {
            self.token_remove(s);
            self.ip_remove(s);
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
        (self.hasher.hash(&token.to_le_bytes()) % self.sessions.len() as u64) as usize
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

    // ----- address index: client IPv4 address -> server sessions -----

    fn ip_bucket(&self, ip: [u8; 4]) -> usize {
        (self.hasher.hash(&ip) % self.sessions.len() as u64) as usize
    }

    /// Server sessions of clients at `ip`, counted up to `limit` (the walk stops there).
    pub(crate) fn ip_count(&self, ip: [u8; 4], limit: usize) -> usize {
        let mut n = 0;
        let mut s = self.sessions[self.ip_bucket(ip)].ip_head;
        while s != NIL && n < limit {
            let x = &self.sessions[s as usize];
            if x.peer.ipv4 == ip {
                n += 1;
            }
            s = x.ip_next;
        }
        n
    }

    /// Indexes server session `s` by its client's address (set before).
    pub(crate) fn ip_insert(&mut self, s: usize) {
        let b = self.ip_bucket(self.sessions[s].peer.ipv4);
        let head = self.sessions[b].ip_head;
        self.sessions[s].ip_next = head;
        self.sessions[s].ip_prev = NIL;
        if head != NIL {
            self.sessions[head as usize].ip_prev = s as u32;
        }
        self.sessions[b].ip_head = s as u32;
    }

    fn ip_remove(&mut self, s: usize) {
        let (prev, next) = (self.sessions[s].ip_prev, self.sessions[s].ip_next);
        if prev == NIL {
            let b = self.ip_bucket(self.sessions[s].peer.ipv4);
            if self.sessions[b].ip_head != s as u32 {
                return; // not indexed
            }
            self.sessions[b].ip_head = next;
        } else {
            self.sessions[prev as usize].ip_next = next;
        }
        if next != NIL {
            self.sessions[next as usize].ip_prev = prev;
        }
        self.sessions[s].ip_next = NIL;
        self.sessions[s].ip_prev = NIL;
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

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::session::Role;

    fn server_table(n: usize, tokens: impl Iterator<Item = u64>) -> SessionTable<'static> {
        let storage = Storage::owned((0..n).map(|_| Session::EMPTY).collect());
        let mut t = SessionTable::new(storage, [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]);
        for token in tokens {
            let s = t.alloc().expect("room");
            connect(&mut t, s, token, [10, 0, (s >> 8) as u8, s as u8]);
        }
        t
    }

    fn connect(t: &mut SessionTable<'_>, s: usize, token: u64, ip: [u8; 4]) {
        let sess = &mut t[s];
        sess.reinit(Role::Server, SessionState::Connected, 32);
        sess.set_token(token);
        sess.peer = EndpointAddr { mac: [0; 6], ipv4: ip, udp_port: 1 };
        t.token_insert(s);
        t.ip_insert(s);
    }

    fn longest_token_chain(t: &SessionTable<'_>) -> usize {
        (0..t.len())
            .map(|b| {
                let (mut n, mut s) = (0, t[b].bucket_head);
                while s != NIL {
                    n += 1;
                    s = t[s as usize].token_next;
                }
                n
            })
            .max()
            .unwrap_or(0)
    }

    /// Tokens are the client's choice. The unkeyed bucket function of before,
    /// `(token ^ token >> 29) % n`, put every multiple of `n` below 2^29 in bucket 0, so 2,000
    /// such connections made one chain of 2,000 and every lookup walked it. Keyed, they spread.
    #[test]
    fn tokens_chosen_to_collide_do_not_share_a_chain() {
        let n = 2000;
        let t = server_table(n, (1..=n as u64).map(|k| k * n as u64));
        assert!(longest_token_chain(&t) <= 12, "longest chain {}", longest_token_chain(&t));
        for k in 1..=n as u64 {
            let s = t.token_find(k * n as u64, &t[(k - 1) as usize].peer, 0);
            assert_eq!(s, Some((k - 1) as usize));
        }
    }

    #[test]
    fn the_address_index_counts_and_forgets() {
        let mut t = server_table(64, 1..=3);
        let other = t[1].peer.ipv4;
        let ip = [192, 168, 0, 7];
        let mut mine = std::vec::Vec::new();
        for token in 10..13 {
            let s = t.alloc().unwrap();
            connect(&mut t, s, token, ip);
            mine.push(s);
        }
        assert_eq!(t.ip_count(ip, 100), 3);
        assert_eq!(t.ip_count(ip, 2), 2, "the walk stops at the limit");
        assert_eq!(t.ip_count(other, 100), 1);
        // Freeing unlinks from the middle, the head and the tail of the chain.
        t.free(mine[1]);
        assert_eq!(t.ip_count(ip, 100), 2);
        t.free(mine[2]);
        t.free(mine[0]);
        assert_eq!(t.ip_count(ip, 100), 0);
        assert_eq!(t.ip_count(other, 100), 1);
        // And a freed session's number serves a new connection.
        let s = t.alloc().unwrap();
        connect(&mut t, s, 99, ip);
        assert_eq!(t.ip_count(ip, 100), 1);
    }
}
