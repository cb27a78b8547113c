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
    /// Sessions allocated and not yet freed.
    live: u32,
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
            live: 0,
            hasher: SipHasher13::new_with_keys(key[0], key[1]),
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions in use (allocated and not yet freed).
    #[inline]
    pub(crate) fn live(&self) -> usize {
        self.live as usize
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
        self.live += 1;
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
        self.live -= 1;
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
    //
    // Two levels, so that counting a client's sessions costs O(1) however many it has: each
    // bucket chains one *leader* session per distinct address (`ip_next`/`ip_prev`), and each
    // leader heads the list of the other sessions of its address (`grp_next`/`grp_prev`) and
    // keeps their count (`ip_count`). A member has a `grp_prev`; a leader has none.

    fn ip_bucket(&self, ip: [u8; 4]) -> usize {
        (self.hasher.hash(&ip) % self.sessions.len() as u64) as usize
    }

    /// The leader of `ip`'s sessions, if it has any: a walk over the bucket's distinct addresses.
    fn ip_leader(&self, ip: [u8; 4]) -> Option<usize> {
        let mut s = self.sessions[self.ip_bucket(ip)].ip_head;
        while s != NIL {
            let x = &self.sessions[s as usize];
            if x.peer.ipv4 == ip {
                return Some(s as usize);
            }
            s = x.ip_next;
        }
        None
    }

    /// Server sessions of clients at `ip`.
    pub(crate) fn ip_count(&self, ip: [u8; 4]) -> usize {
        self.ip_leader(ip).map_or(0, |l| self.sessions[l].ip_count as usize)
    }

    /// Indexes server session `s` by its client's address (set before).
    pub(crate) fn ip_insert(&mut self, s: usize) {
        let ip = self.sessions[s].peer.ipv4;
        match self.ip_leader(ip) {
            Some(l) => {
                // A member, right after the leader.
                let next = self.sessions[l].grp_next;
                let x = &mut self.sessions[s];
                (x.grp_prev, x.grp_next, x.ip_prev, x.ip_next) = (l as u32, next, NIL, NIL);
                if next != NIL {
                    self.sessions[next as usize].grp_prev = s as u32;
                }
                self.sessions[l].grp_next = s as u32;
                self.sessions[l].ip_count += 1;
            }
            None => {
                // The address's leader, at the head of its bucket's chain.
                let b = self.ip_bucket(ip);
                let head = self.sessions[b].ip_head;
                let x = &mut self.sessions[s];
                (x.grp_prev, x.grp_next, x.ip_prev, x.ip_next, x.ip_count) = (NIL, NIL, NIL, head, 1);
                if head != NIL {
                    self.sessions[head as usize].ip_prev = s as u32;
                }
                self.sessions[b].ip_head = s as u32;
            }
        }
    }

    fn ip_remove(&mut self, s: usize) {
        let ip = self.sessions[s].peer.ipv4;
        let Some(l) = self.ip_leader(ip) else { return }; // not indexed
        let (gprev, gnext) = (self.sessions[s].grp_prev, self.sessions[s].grp_next);
        if l != s {
            // A member: out of its leader's list.
            self.sessions[gprev as usize].grp_next = gnext;
            if gnext != NIL {
                self.sessions[gnext as usize].grp_prev = gprev;
            }
            self.sessions[l].ip_count -= 1;
        } else {
            // The leader: its first member takes its place in the bucket chain, or the address
            // leaves the chain.
            let (prev, next) = (self.sessions[s].ip_prev, self.sessions[s].ip_next);
            let replacement = if gnext == NIL {
                next
            } else {
                let count = self.sessions[s].ip_count - 1;
                let m = &mut self.sessions[gnext as usize];
                (m.grp_prev, m.ip_prev, m.ip_next, m.ip_count) = (NIL, prev, next, count);
                if next != NIL {
                    self.sessions[next as usize].ip_prev = gnext;
                }
                gnext
            };
            if gnext == NIL && next != NIL {
                self.sessions[next as usize].ip_prev = prev;
            }
            if prev == NIL {
                let b = self.ip_bucket(ip);
                self.sessions[b].ip_head = replacement;
            } else {
                self.sessions[prev as usize].ip_next = replacement;
            }
        }
        let x = &mut self.sessions[s];
        (x.grp_prev, x.grp_next, x.ip_prev, x.ip_next, x.ip_count) = (NIL, NIL, NIL, NIL, 0);
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
        assert_eq!(t.ip_count(ip), 3);
        assert_eq!(t.ip_count(other), 1);
        // Freeing a member, then the leader (a member takes over), then the last one.
        t.free(mine[1]);
        assert_eq!(t.ip_count(ip), 2);
        t.free(mine[0]);
        assert_eq!(t.ip_count(ip), 1);
        t.free(mine[2]);
        assert_eq!(t.ip_count(ip), 0);
        assert_eq!(t.ip_count(other), 1);
        // And a freed session's number serves a new connection.
        let s = t.alloc().unwrap();
        connect(&mut t, s, 99, ip);
        assert_eq!(t.ip_count(ip), 1);
    }

    /// 2,000 sessions from one address and one each from 1,000 others: every count is right
    /// after any order of frees, and finding an address's count walks only the distinct
    /// addresses of its bucket, never the sessions of one address (which made 20,000 connects
    /// from one client quadratic).
    #[test]
    fn counting_a_clients_sessions_does_not_walk_them() {
        let n = 3100;
        let storage = Storage::owned((0..n).map(|_| Session::EMPTY).collect());
        let mut t = SessionTable::new(storage, [7, 11]);
        let busy = [192, 168, 1, 1];
        let mut all = std::vec::Vec::new();
        for i in 0..3000u32 {
            let s = t.alloc().unwrap();
            let ip = if i % 3 == 2 { [10, 1, (i >> 8) as u8, i as u8] } else { busy };
            connect(&mut t, s, i as u64 + 1, ip);
            all.push((s, ip));
        }
        assert_eq!(t.ip_count(busy), 2000);
        // Leaders per bucket: the chains hold addresses, not sessions.
        let longest = (0..t.len())
            .map(|b| {
                let (mut k, mut s) = (0, t[b].ip_head);
                while s != NIL {
                    k += 1;
                    s = t[s as usize].ip_next;
                }
                k
            })
            .max()
            .unwrap();
        assert!(longest <= 8, "a bucket chain of {longest} addresses");
        // Free in a scrambled order, checking the counts as they go.
        let mut order: std::vec::Vec<usize> = (0..all.len()).collect();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut left = 2000;
        for k in order {
            let (s, ip) = all[k];
            t.free(s);
            if ip == busy {
                left -= 1;
                assert_eq!(t.ip_count(busy), left);
            } else {
                assert_eq!(t.ip_count(ip), 0);
            }
        }
        assert!((0..t.len()).all(|b| t[b].ip_head == NIL), "every chain empty");
    }
}
