//! Raft messages on the wire: a flat codec of our own for raft-rs's `eraftpb::Message`, and
//! batches of them (one eRPC request per peer per event-loop iteration).
//!
//! Why not protobuf: raft 0.7.0 pulls in `protobuf` 2.28, whose parser has an uncontrolled
//! recursion on untrusted input (RUSTSEC-2024-0437, CVE-2025-53605: a crafted group nests until
//! the stack overflows). A replica's port is reachable by whoever can send it a packet, so the
//! store never runs that parser on network bytes. This codec has no recursion (a message holds
//! entries and at most one snapshot, which hold nothing further), checks every length against the
//! bytes left before it allocates, and refuses unknown message and entry types. It also costs
//! less than protobuf (varints without field tags; no per-field dispatch).
//!
//! Message layout (integers LEB128 varints unless said otherwise, at most 10 bytes, overlong or
//! overflowing encodings refused):
//!
//! ```text
//! msg_type u8, flags u8 (1 reject, 2 snapshot present), to, from, term, log_term, index, commit,
//! commit_term, request_snapshot, reject_hint, priority (zigzag), deprecated_priority,
//! context (len, bytes), entries (count, then each: entry_type u8, sync_log u8, term, index,
//! data (len, bytes), context (len, bytes)), [snapshot: data (len, bytes), index, term,
//! voters, learners, voters_outgoing, learners_next (count, ids), auto_leave u8]
//! ```
//!
//! A batch is a count followed by that many messages, each preceded by its length.

use protobuf::ProtobufEnum;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

/// Why bytes did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    BadVarint,
    UnknownMessageType(u64),
    UnknownEntryType(u8),
    /// A count or length larger than the bytes that are left could hold.
    BadLength,
    /// Bytes left over after the last message.
    Trailing,
}

fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_var(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_var(out, ids.len() as u64);
    for &i in ids {
        put_var(out, i);
    }
}

/// Appends the encoding of `m` to `out`.
pub fn encode_message(m: &Message, out: &mut Vec<u8>) {
    out.push(m.get_msg_type().value() as u8);
    let snap = m.has_snapshot();
    out.push(m.reject as u8 | (snap as u8) << 1);
    for v in [m.to, m.from, m.term, m.log_term, m.index, m.commit, m.commit_term, m.request_snapshot, m.reject_hint] {
        put_var(out, v);
    }
    put_var(out, ((m.priority << 1) ^ (m.priority >> 63)) as u64);
    put_var(out, m.deprecated_priority);
    put_bytes(out, &m.context);
    put_var(out, m.get_entries().len() as u64);
    for e in m.get_entries() {
        out.push(e.get_entry_type().value() as u8);
        out.push(e.sync_log as u8);
        put_var(out, e.term);
        put_var(out, e.index);
        put_bytes(out, &e.data);
        put_bytes(out, &e.context);
    }
    if snap {
        let s = m.get_snapshot();
        put_bytes(out, &s.data);
        let md = s.get_metadata();
        put_var(out, md.index);
        put_var(out, md.term);
        let cs = md.get_conf_state();
        for ids in [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next] {
            put_ids(out, ids);
        }
        out.push(cs.auto_leave as u8);
    }
}

/// The encoding of one message.
pub fn encoded(m: &Message) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + m.get_entries().iter().map(|e| 24 + e.data.len()).sum::<usize>());
    encode_message(m, &mut v);
    v
}

/// Writes a batch of already encoded messages.
pub fn encode_batch<'a>(msgs: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    put_var(out, msgs.len() as u64);
    for m in msgs {
        put_bytes(out, m);
    }
}

/// Bytes a batch of messages of these encoded sizes takes.
pub fn batch_len(sizes: impl Iterator<Item = usize>) -> usize {
    let mut n = 10;
    for s in sizes {
        n += 10 + s;
    }
    n
}

struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let v = *self.b.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(v)
    }

    fn var(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(DecodeError::BadVarint);
            }
            v |= ((b & 0x7F) as u64) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::BadVarint);
                }
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }

    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.var()?;
        if n > self.left() as u64 {
            return Err(DecodeError::BadLength);
        }
        let s = &self.b[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    /// A count of items of at least `min` bytes each.
    fn count(&mut self, min: usize) -> Result<usize, DecodeError> {
        let n = self.var()?;
        if n.saturating_mul(min as u64) > self.left() as u64 {
            return Err(DecodeError::BadLength);
        }
        Ok(n as usize)
    }

    fn ids(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.count(1)?;
        (0..n).map(|_| self.var()).collect()
    }
}

/// Decodes one message that takes all of `b`.
pub fn decode_message(b: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Rd { b, at: 0 };
    let m = read_message(&mut r)?;
    if r.left() != 0 {
        return Err(DecodeError::Trailing);
    }
    Ok(m)
}

fn read_message(r: &mut Rd) -> Result<Message, DecodeError> {
    let mut m = Message::default();
    let t = r.u8()?;
    m.set_msg_type(MessageType::from_i32(t as i32).ok_or(DecodeError::UnknownMessageType(t as u64))?);
    let flags = r.u8()?;
    m.reject = flags & 1 != 0;
    m.to = r.var()?;
    m.from = r.var()?;
    m.term = r.var()?;
    m.log_term = r.var()?;
    m.index = r.var()?;
    m.commit = r.var()?;
    m.commit_term = r.var()?;
    m.request_snapshot = r.var()?;
    m.reject_hint = r.var()?;
    let z = r.var()?;
    m.priority = ((z >> 1) as i64) ^ -((z & 1) as i64);
    m.deprecated_priority = r.var()?;
    m.context = r.bytes()?.to_vec().into();
    let n = r.count(6)?;
    let mut ents = Vec::with_capacity(n);
    for _ in 0..n {
        let mut e = Entry::default();
        let et = r.u8()?;
        e.set_entry_type(EntryType::from_i32(et as i32).ok_or(DecodeError::UnknownEntryType(et))?);
        e.sync_log = r.u8()? != 0;
        e.term = r.var()?;
        e.index = r.var()?;
        e.data = r.bytes()?.to_vec().into();
        e.context = r.bytes()?.to_vec().into();
        ents.push(e);
    }
    m.set_entries(ents.into());
    if flags & 2 != 0 {
        let mut s = Snapshot { data: r.bytes()?.to_vec().into(), ..Default::default() };
        let md = s.mut_metadata();
        md.index = r.var()?;
        md.term = r.var()?;
        let cs = ConfState {
            voters: r.ids()?,
            learners: r.ids()?,
            voters_outgoing: r.ids()?,
            learners_next: r.ids()?,
            auto_leave: r.u8()? != 0,
            ..Default::default()
        };
        md.set_conf_state(cs);
        m.set_snapshot(s);
    }
    Ok(m)
}

/// Decodes a batch; every message must decode and the batch must end exactly.
pub fn decode_batch(b: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut r = Rd { b, at: 0 };
    let n = r.count(2)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let body = r.bytes()?;
        out.push(decode_message(body)?);
    }
    if r.left() != 0 {
        return Err(DecodeError::Trailing);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn append(n: usize, data: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        (m.to, m.from, m.term, m.log_term, m.index, m.commit) = (2, 1, 7, 7, 120_000, 119_999);
        let ents: Vec<Entry> = (0..n)
            .map(|i| {
                let mut e = Entry::default();
                e.term = 7;
                e.index = 120_001 + i as u64;
                e.data = vec![i as u8; data].into();
                e
            })
            .collect();
        m.set_entries(ents.into());
        m
    }

    #[test]
    fn a_one_put_append_fits_one_packet_and_round_trips() {
        let m = append(1, 104);
        let b = encoded(&m);
        // 104 = a PUT of a 16-byte key and a 64-byte value with its 24-byte header.
        assert!(b.len() < 140, "{} bytes", b.len());
        assert_eq!(decode_message(&b).unwrap(), m);
        let mut batch = Vec::new();
        encode_batch([&b[..], &b[..]].into_iter(), &mut batch);
        assert_eq!(decode_batch(&batch).unwrap(), vec![m.clone(), m]);
    }

    #[test]
    fn snapshots_and_every_field_round_trip() {
        let mut m = append(2, 3);
        m.set_msg_type(MessageType::MsgSnapshot);
        m.reject = true;
        m.reject_hint = u64::MAX;
        m.priority = -5;
        m.deprecated_priority = 3;
        m.commit_term = 6;
        m.request_snapshot = 9;
        m.context = b"ctx".to_vec().into();
        let mut s = Snapshot::default();
        s.data = vec![7; 5000].into();
        s.mut_metadata().index = 99;
        s.mut_metadata().term = 4;
        let cs = s.mut_metadata().mut_conf_state();
        cs.voters = vec![1, 2, 3];
        cs.learners = vec![4];
        cs.voters_outgoing = vec![1 << 40];
        cs.learners_next = vec![5];
        cs.auto_leave = true;
        m.set_snapshot(s);
        let b = encoded(&m);
        assert_eq!(decode_message(&b).unwrap(), m);
    }

    #[test]
    fn malformed_input_is_refused_without_panics_or_huge_allocations() {
        let b = encoded(&append(3, 10));
        for cut in 0..b.len() {
            assert!(decode_message(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut t = b.clone();
        t.push(0);
        assert_eq!(decode_message(&t), Err(DecodeError::Trailing));
        let mut bad = b.clone();
        bad[0] = 200;
        assert_eq!(decode_message(&bad), Err(DecodeError::UnknownMessageType(200)));
        // A batch claiming 2^60 messages.
        let mut huge = Vec::new();
        put_var(&mut huge, 1 << 60);
        assert_eq!(decode_batch(&huge), Err(DecodeError::BadLength));
        // Overlong and overflowing varints.
        assert_eq!(decode_batch(&[0x80, 0x00]), Err(DecodeError::BadVarint));
        assert_eq!(decode_batch(&[0xFF; 11]), Err(DecodeError::BadVarint));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(&b);
            let _ = decode_message(&b);
        }

        #[test]
        fn any_message_round_trips(t in 0i32..19, to in any::<u64>(), term in any::<u64>(), prio in any::<i64>(),
                                   n in 0usize..4, len in 0usize..200) {
            let mut m = append(n, len);
            if let Some(mt) = MessageType::from_i32(t) { m.set_msg_type(mt); }
            m.to = to;
            m.term = term;
            m.priority = prio;
            prop_assert_eq!(decode_message(&encoded(&m)).unwrap(), m);
        }
    }
}
