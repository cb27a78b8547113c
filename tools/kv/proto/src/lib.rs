//! The store's eRPC request types and the client request and response layouts.
//!
//! `#![no_std]` with no heap, so that a server without an OS (the bare-metal appliance's
//! single-replica store) speaks the same protocol as `erpc kv`: this crate is `erpc_kv::proto`.
//!
//! Client messages are `zerocopy` structs (little-endian fields, sizes checked at compile time)
//! followed by the key and the value. A write's request bytes are also its Raft log entry: the
//! leader proposes them as they arrived, once validated, and every replica applies them with the
//! same parser ([`ClientRequest::parse`]).

#![no_std]
#[cfg(feature = "alloc")]
extern crate alloc;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A batch of Raft messages for one peer (`erpc_kv::codec`); the response carries the
/// receiver's messages back to the sender.
pub const REQ_RAFT: u8 = 10;
/// One part of a Raft message too large for one request (a snapshot): [`PartHdr`] + bytes.
pub const REQ_RAFT_PART: u8 = 11;
/// A client operation: [`ClientReqHdr`] + key + value; answered with [`ClientRespHdr`] + value.
pub const REQ_CLIENT: u8 = 12;
/// Replica statistics ([`StatsResp`]); a request byte of 1 resets the leader's latency histogram.
pub const REQ_STATS: u8 = 13;
/// Echo: the response is `resp_len` (the request's first four bytes, little-endian) bytes.
/// The benchmarks' round-trip reference, served by every replica on the same endpoint.
pub const REQ_ECHO: u8 = 14;

/// Largest key.
pub const MAX_KEY: usize = 1024;
/// Largest value.
pub const MAX_VALUE: usize = 1 << 20;

/// An operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    Put = 1,
    Get = 2,
    Del = 3,
}

impl OpCode {
    pub fn from_u8(v: u8) -> Option<OpCode> {
        match v {
            1 => Some(OpCode::Put),
            2 => Some(OpCode::Get),
            3 => Some(OpCode::Del),
            _ => None,
        }
    }
}

/// Header of a client request (24 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ClientReqHdr {
    pub op: u8,
    pub _pad: u8,
    pub key_len: U16,
    pub val_len: U32,
    /// The client's id: a random 64-bit number chosen by the client.
    pub client_id: U64,
    /// The client's operation number: a retry carries the same one.
    pub seq: U64,
}
const _: () = assert!(core::mem::size_of::<ClientReqHdr>() == 24);

/// A parsed, validated client request borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRequest<'a> {
    pub op: OpCode,
    pub client_id: u64,
    pub seq: u64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Why a client request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    Truncated,
    BadOp(u8),
    /// Lengths that do not add up to the request's size, or beyond [`MAX_KEY`]/[`MAX_VALUE`].
    BadLength,
}

impl<'a> ClientRequest<'a> {
    /// Validates `b`: a known operation, lengths within bounds that add up exactly, a value only
    /// for PUT.
    pub fn parse(b: &'a [u8]) -> Result<ClientRequest<'a>, ParseError> {
        let (h, rest) = ClientReqHdr::read_from_prefix(b).map_err(|_| ParseError::Truncated)?;
        let op = OpCode::from_u8(h.op).ok_or(ParseError::BadOp(h.op))?;
        let (kl, vl) = (h.key_len.get() as usize, h.val_len.get() as usize);
        if kl > MAX_KEY || vl > MAX_VALUE || rest.len() != kl + vl || (op != OpCode::Put && vl != 0) {
            return Err(ParseError::BadLength);
        }
        Ok(ClientRequest { op, client_id: h.client_id.get(), seq: h.seq.get(), key: &rest[..kl], value: &rest[kl..] })
    }

    /// Encoded size.
    pub fn len(&self) -> usize {
        24 + self.key.len() + self.value.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the request into `out` (at least [`ClientRequest::len`] bytes); returns its length.
    pub fn write(&self, out: &mut [u8]) -> usize {
        let h = ClientReqHdr {
            op: self.op as u8,
            _pad: 0,
            key_len: U16::new(self.key.len() as u16),
            val_len: U32::new(self.value.len() as u32),
            client_id: U64::new(self.client_id),
            seq: U64::new(self.seq),
        };
        out[..24].copy_from_slice(h.as_bytes());
        out[24..24 + self.key.len()].copy_from_slice(self.key);
        out[24 + self.key.len()..self.len()].copy_from_slice(self.value);
        self.len()
    }

    #[cfg(feature = "alloc")]
    pub fn to_vec(&self) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec![0u8; self.len()];
        self.write(&mut v);
        v
    }
}

/// The outcome of a client request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Done; a GET's value follows.
    Ok = 0,
    /// GET or DEL of a key that is not there (a DEL is still done).
    NotFound = 1,
    /// Not the leader: ask `leader_id` (its address is in the header too).
    Redirect = 2,
    /// No leader known, leadership lost, or the request timed out: retry (the same sequence
    /// number: a write is applied at most once).
    TryAgain = 3,
    /// The request was malformed.
    BadRequest = 4,
}

impl Status {
    pub fn from_u8(v: u8) -> Option<Status> {
        match v {
            0 => Some(Status::Ok),
            1 => Some(Status::NotFound),
            2 => Some(Status::Redirect),
            3 => Some(Status::TryAgain),
            4 => Some(Status::BadRequest),
            _ => None,
        }
    }
}

/// Header of a client response (32 bytes), followed by `val_len` bytes of value.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ClientRespHdr {
    pub status: u8,
    pub _pad: [u8; 3],
    pub val_len: U32,
    /// Redirect: the leader's Raft id (1-based index into the replica list).
    pub leader_id: U64,
    /// Redirect: the leader's address.
    pub leader_mac: [u8; 6],
    pub leader_port: U16,
    pub leader_ipv4: [u8; 4],
    pub _pad2: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<ClientRespHdr>() == 32);

/// Header of one part of a large Raft message (32 bytes), followed by the part's bytes.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PartHdr {
    /// The sender's Raft id.
    pub from: U64,
    /// Transfer number, new for every large message a sender sends.
    pub xfer: U64,
    /// Total size of the encoded batch.
    pub total: U64,
    /// Offset of this part.
    pub offset: U64,
}
const _: () = assert!(core::mem::size_of::<PartHdr>() == 32);

/// The answer to [`REQ_STATS`] (72 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StatsResp {
    pub id: U64,
    pub leader_id: U64,
    pub term: U64,
    pub applied: U64,
    /// Writes this replica answered as leader since the last reset, and the median and 99th
    /// percentile of their latency at the leader (request handler entry to response), ns.
    pub commits: U64,
    pub commit_p50_ns: U64,
    pub commit_p99_ns: U64,
    /// Times this replica became leader.
    pub elections_won: U64,
    /// Bit 0: the log is durable (`fsync`).
    pub flags: U64,
}
const _: () = assert!(core::mem::size_of::<StatsResp>() == 72);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn bytes(r: ClientRequest<'_>) -> Vec<u8> {
        let mut v = vec![0u8; r.len()];
        r.write(&mut v);
        v
    }

    #[test]
    fn request_round_trip_and_validation() {
        let r = ClientRequest { op: OpCode::Put, client_id: 7, seq: 9, key: b"k1", value: b"value" };
        let v = bytes(r);
        assert_eq!(v.len(), 24 + 2 + 5);
        assert_eq!(ClientRequest::parse(&v), Ok(r));
        assert_eq!(ClientRequest::parse(&v[..20]), Err(ParseError::Truncated));
        assert_eq!(ClientRequest::parse(&v[..v.len() - 1]), Err(ParseError::BadLength));
        let mut bad = v.clone();
        bad[0] = 9;
        assert_eq!(ClientRequest::parse(&bad), Err(ParseError::BadOp(9)));
        // A GET with a value is refused; so is a key beyond the limit.
        let g = bytes(ClientRequest { op: OpCode::Get, client_id: 1, seq: 1, key: b"k", value: b"" });
        assert!(ClientRequest::parse(&g).is_ok());
        let mut g2 = g.clone();
        g2[4] = 1;
        g2.push(0);
        assert_eq!(ClientRequest::parse(&g2), Err(ParseError::BadLength));
        let mut big = g.clone();
        big[2..4].copy_from_slice(&(MAX_KEY as u16 + 1).to_le_bytes());
        big.resize(24 + MAX_KEY + 1, 0);
        assert_eq!(ClientRequest::parse(&big), Err(ParseError::BadLength));
    }
}
