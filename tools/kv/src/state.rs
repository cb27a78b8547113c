//! The replicated state machine: the key-value map and the client table that makes writes
//! exactly-once (the Raft thesis, §6.3).
//!
//! Every replica applies the same committed writes in the same order. A write carries its
//! client's id and sequence number; the table keeps, per client, the last sequence number applied
//! and its outcome, so a retried write (the client heard nothing, the leader changed, the session
//! was reset) is answered from the table instead of being applied again. Clients have one write
//! outstanding at a time, so the last outcome per client is enough.

use crate::proto::{ClientRequest, OpCode, Status};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// The state machine.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KvState {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// client id -> (last sequence number applied, its outcome).
    pub clients: HashMap<u64, (u64, Status)>,
    /// Index of the last log entry applied.
    pub applied: u64,
    /// A digest of every write applied so far (client id, sequence number, key, value, in order):
    /// replicas that applied the same sequence have the same digest.
    pub digest: u64,
    /// Writes applied (not counting duplicates answered from the table).
    pub writes: u64,
    /// If set, every applied write's (client id, sequence number), in order (tests).
    pub record: Option<Vec<(u64, u64)>>,
}

/// What applying one log entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    pub status: Status,
    /// The write had been applied before: answered from the client table.
    pub duplicate: bool,
}

impl KvState {
    /// Applies the write in a committed entry at `index`. Entries that are not client writes
    /// (Raft's empty entries, malformed data) only advance `applied`.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Option<Applied> {
        self.applied = self.applied.max(index);
        let r = ClientRequest::parse(data).ok()?;
        if r.op == OpCode::Get {
            return None;
        }
        if let Some(&(seq, status)) = self.clients.get(&r.client_id) {
            if r.seq <= seq {
                // A retry of a write already applied (or an older one, which the client no longer waits for).
                let status = if r.seq == seq { status } else { Status::Ok };
                return Some(Applied { status, duplicate: true });
            }
        }
        let status = match r.op {
            OpCode::Put => {
                self.map.insert(r.key.to_vec(), r.value.to_vec());
                Status::Ok
            }
            _ => {
                if self.map.remove(r.key).is_some() {
                    Status::Ok
                } else {
                    Status::NotFound
                }
            }
        };
        self.clients.insert(r.client_id, (r.seq, status));
        let mut h = std::hash::DefaultHasher::new();
        (self.digest, r.client_id, r.seq, r.op as u8, r.key, r.value).hash(&mut h);
        self.digest = h.finish();
        self.writes += 1;
        if let Some(rec) = self.record.as_mut() {
            rec.push((r.client_id, r.seq));
        }
        Some(Applied { status, duplicate: false })
    }

    /// The outcome of a write already applied, if `(client_id, seq)` is the client's last or older.
    pub fn known(&self, client_id: u64, seq: u64) -> Option<Status> {
        match self.clients.get(&client_id) {
            Some(&(s, st)) if seq == s => Some(st),
            Some(&(s, _)) if seq < s => Some(Status::Ok),
            _ => None,
        }
    }

    /// The snapshot of the state: map, client table, digest and counters (not the record).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.map.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>());
        out.extend_from_slice(b"ERPCKV01");
        for x in [self.applied, self.digest, self.writes, self.map.len() as u64, self.clients.len() as u64] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        for (k, v) in &self.map {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        let mut clients: Vec<_> = self.clients.iter().collect();
        clients.sort_unstable_by_key(|(c, _)| **c);
        for (c, (seq, st)) in clients {
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.push(*st as u8);
        }
        out
    }

    /// Restores a snapshot made by [`KvState::encode`]. Malformed data is an error and changes
    /// nothing. The record, if kept, restarts empty.
    pub fn decode(b: &[u8]) -> Result<KvState, &'static str> {
        let mut r = Reader { b, at: 0 };
        if r.take(8)? != b"ERPCKV01" {
            return Err("not a key-value snapshot");
        }
        let (applied, digest, writes, nmap, nclients) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let mut map = BTreeMap::new();
        for _ in 0..nmap {
            let (kl, vl) = (r.u32()? as usize, r.u32()? as usize);
            let k = r.take(kl)?.to_vec();
            map.insert(k, r.take(vl)?.to_vec());
        }
        let mut clients = HashMap::new();
        for _ in 0..nclients {
            let (c, seq) = (r.u64()?, r.u64()?);
            let st = Status::from_u8(r.take(1)?[0]).ok_or("bad status in snapshot")?;
            clients.insert(c, (seq, st));
        }
        if r.at != b.len() {
            return Err("trailing bytes in snapshot");
        }
        Ok(KvState { map, clients, applied, digest, writes, record: None })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or("truncated snapshot")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(op: OpCode, c: u64, s: u64, k: &[u8], v: &[u8]) -> Vec<u8> {
        ClientRequest { op, client_id: c, seq: s, key: k, value: v }.to_vec()
    }

    #[test]
    fn retried_writes_apply_once_and_keep_their_outcome() {
        let mut st = KvState { record: Some(vec![]), ..Default::default() };
        let a = st.apply(1, &w(OpCode::Put, 1, 1, b"k", b"v1")).unwrap();
        assert_eq!(a, Applied { status: Status::Ok, duplicate: false });
        // Client 2 deletes, then client 1's retry of seq 1 arrives again: not re-applied.
        assert_eq!(st.apply(2, &w(OpCode::Del, 2, 1, b"k", b"")).unwrap().status, Status::Ok);
        let a = st.apply(3, &w(OpCode::Put, 1, 1, b"k", b"v1")).unwrap();
        assert!(a.duplicate);
        assert_eq!(st.map.get(&b"k"[..]), None, "the retry did not resurrect the key");
        // A DEL of a missing key: NotFound, remembered for its retry.
        assert_eq!(st.apply(4, &w(OpCode::Del, 2, 2, b"k", b"")).unwrap().status, Status::NotFound);
        assert_eq!(
            st.apply(5, &w(OpCode::Del, 2, 2, b"k", b"")).unwrap(),
            Applied { status: Status::NotFound, duplicate: true }
        );
        assert_eq!(st.known(2, 2), Some(Status::NotFound));
        assert_eq!(st.known(2, 3), None);
        assert_eq!(st.record.as_deref(), Some(&[(1, 1), (2, 1), (2, 2)][..]));
        assert_eq!(st.applied, 5);
        // Raft's empty entries and garbage only advance the index.
        assert_eq!(st.apply(6, &[]), None);
        assert_eq!(st.apply(7, b"garbage"), None);
        assert_eq!(st.applied, 7);
    }

    #[test]
    fn snapshot_round_trip_and_malformed_snapshots() {
        let mut st = KvState::default();
        for i in 0..100u64 {
            st.apply(i + 1, &w(OpCode::Put, i % 7, i, &i.to_le_bytes(), &[i as u8; 64]));
        }
        let snap = st.encode();
        let back = KvState::decode(&snap).unwrap();
        assert_eq!(back, st);
        for cut in [0, 7, 20, snap.len() / 2, snap.len() - 1] {
            assert!(KvState::decode(&snap[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = snap.clone();
        extra.push(0);
        assert!(KvState::decode(&extra).is_err());
        // A forged huge count fails on truncation rather than allocating.
        let mut forged = snap.clone();
        forged[8 + 24..8 + 32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(KvState::decode(&forged).is_err());
    }

    #[test]
    fn the_digest_depends_on_the_order_of_writes() {
        let (mut a, mut b) = (KvState::default(), KvState::default());
        a.apply(1, &w(OpCode::Put, 1, 1, b"x", b"1"));
        a.apply(2, &w(OpCode::Put, 2, 1, b"x", b"2"));
        b.apply(1, &w(OpCode::Put, 2, 1, b"x", b"2"));
        b.apply(2, &w(OpCode::Put, 1, 1, b"x", b"1"));
        assert_ne!(a.digest, b.digest);
    }
}
