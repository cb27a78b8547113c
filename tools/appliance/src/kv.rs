//! A small key-value store that speaks `erpc kv`'s client protocol (`erpc_kv_proto`) as a single
//! replica that always leads: `erpc kv put|get|del --peers <appliance>` work against it.
//!
//! Everything is static: at most [`ENTRIES`] keys of up to [`MAX_KEY`] bytes with values of up
//! to [`MAX_VALUE`] bytes; anything larger, and a PUT of a new key into a full store, is answered
//! `BadRequest` (and logged). Writes are deduplicated per client as in the replicated store: a
//! retried PUT or DEL (same client id, same or older sequence number) is answered without being
//! applied again, for the last [`CLIENTS`] clients.

use erpc_kv_proto::{ClientRequest, ClientRespHdr, OpCode, Status};
use heapless::FnvIndexMap;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

/// Keys the store holds.
pub const ENTRIES: usize = 256;
pub const MAX_KEY: usize = 64;
pub const MAX_VALUE: usize = 1024;
/// Clients whose last write is remembered for deduplication.
pub const CLIENTS: usize = 64;
const HDR: usize = core::mem::size_of::<ClientRespHdr>();
/// Largest response the store writes (header and value).
pub const MAX_RESPONSE: usize = HDR + MAX_VALUE;

type Key = heapless::Vec<u8, MAX_KEY>;
type Value = heapless::Vec<u8, MAX_VALUE>;

pub struct Store {
    map: FnvIndexMap<Key, Value, ENTRIES>,
    /// Per client id: the sequence number of its last write and the status it was answered.
    last_write: FnvIndexMap<u64, (u64, Status), CLIENTS>,
}

impl Store {
    pub const fn new() -> Store {
        Store { map: FnvIndexMap::new(), last_write: FnvIndexMap::new() }
    }

    /// Answers one request into `out`; returns the response's length.
    pub fn handle(&mut self, req: &[u8], out: &mut [u8; MAX_RESPONSE]) -> usize {
        let Ok(r) = ClientRequest::parse(req) else {
            log::warn!("kv: a malformed request");
            return respond(out, Status::BadRequest, &[]);
        };
        if r.key.len() > MAX_KEY || r.value.len() > MAX_VALUE {
            log::warn!(
                "kv: a {}-byte key or {}-byte value: the limits are {MAX_KEY} and {MAX_VALUE}",
                r.key.len(),
                r.value.len()
            );
            return respond(out, Status::BadRequest, &[]);
        }
        let key = Key::from_slice(r.key).expect("checked length");
        match r.op {
            OpCode::Get => match self.map.get(&key) {
                Some(v) => respond(out, Status::Ok, v),
                None => respond(out, Status::NotFound, &[]),
            },
            OpCode::Put | OpCode::Del => {
                if let Some(&(seq, status)) = self.last_write.get(&r.client_id) {
                    if r.seq <= seq {
                        // A retry of a write already applied (or older): its answer, not again.
                        return respond(out, status, &[]);
                    }
                }
                let status = if r.op == OpCode::Put {
                    let value = Value::from_slice(r.value).expect("checked length");
                    match self.map.insert(key, value) {
                        Ok(_) => Status::Ok,
                        Err(_) => {
                            log::warn!("kv: the store is full ({ENTRIES} keys): a PUT of a new key refused");
                            Status::BadRequest
                        }
                    }
                } else if self.map.remove(&key).is_some() {
                    Status::Ok
                } else {
                    Status::NotFound
                };
                if self.last_write.len() == CLIENTS && !self.last_write.contains_key(&r.client_id) {
                    // Forget the oldest-inserted client: it may see a retry applied twice.
                    let oldest = self.last_write.keys().next().copied();
                    if let Some(k) = oldest {
                        self.last_write.remove(&k);
                    }
                }
                let _ = self.last_write.insert(r.client_id, (r.seq, status));
                respond(out, status, &[])
            }
        }
    }
}

fn respond(out: &mut [u8; MAX_RESPONSE], status: Status, value: &[u8]) -> usize {
    let h = ClientRespHdr {
        status: status as u8,
        _pad: [0; 3],
        val_len: U32::new(value.len() as u32),
        leader_id: U64::new(1),
        leader_mac: [0; 6],
        leader_port: U16::new(0),
        leader_ipv4: [0; 4],
        _pad2: [0; 4],
    };
    out[..HDR].copy_from_slice(h.as_bytes());
    out[HDR..HDR + value.len()].copy_from_slice(value);
    HDR + value.len()
}
