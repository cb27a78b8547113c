//! The command queue: doorbells, entries, mailbox chains, completion.

use super::layout::{self, cmd_entry as ce, delivery, mailbox as mb, mbox_in, mbox_out, op, status};
use super::{syndrome, CmdRecord, Device, ViolationKind};

/// `log_cmdq_size`: 32 slots (rdma-core uses at most 32).
pub(crate) const LOG_CMDQ_SIZE: u32 = 5;
/// `log_cmdq_stride`: 64-byte entries.
pub(crate) const LOG_CMDQ_STRIDE: u32 = 6;
/// Longest command input or output the model accepts (QUERY/SET_HCA_CAP are 0x1010 bytes;
/// MANAGE_PAGES with thousands of pages is longer).
const MAX_MSG: usize = 1 << 20;

/// A command failure: status and syndrome for the output header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fail {
    pub(crate) status: u8,
    pub(crate) syndrome: u32,
}

pub(crate) fn fail<T>(status: u8, syndrome: u32) -> Result<T, Fail> {
    Err(Fail { status, syndrome })
}

/// One mailbox chain as the entry describes it: where its blocks are.
struct Chain {
    blocks: Vec<u64>,
}

impl Device {
    /// The command doorbell (big-endian value: bit n = slot n).
    pub(crate) fn doorbell(&mut self, bits: u32) {
        if self.health_synd != 0 {
            // Firmware is dead: nothing executes; the driver's command times out.
            return;
        }
        if self.init_reads_left != Some(0) {
            self.violation(
                ViolationKind::Doorbell,
                "command doorbell before firmware is ready (initializing set)".into(),
            );
            return;
        }
        let Some(base) = self.cmdq_base else {
            self.violation(ViolationKind::Doorbell, "command doorbell before the command queue address was set".into());
            return;
        };
        for slot in 0..32 {
            if bits & (1 << slot) == 0 {
                continue;
            }
            if slot >= 1 << LOG_CMDQ_SIZE {
                self.violation(ViolationKind::Doorbell, format!("doorbell for slot {slot} beyond the queue"));
                continue;
            }
            self.process_slot(base + (u64::from(slot) << LOG_CMDQ_STRIDE), slot);
        }
    }

    fn process_slot(&mut self, entry_iova: u64, slot: u32) {
        let mut e = [0u8; ce::SIZE];
        if !self.dma_read(entry_iova, &mut e) {
            // The device cannot even read the entry: nothing to complete.
            return;
        }
        if e[ce::STATUS_OWN] & 1 == 0 {
            self.violation(ViolationKind::Ownership, format!("doorbell for slot {slot}, whose entry software owns"));
            return;
        }
        let token = e[ce::TOKEN];
        let ilen = layout::get32(&e, ce::ILEN) as usize;
        let olen = layout::get32(&e, ce::OLEN) as usize;
        let iptr = layout::get64(&e, ce::IPTR);
        let optr = layout::get64(&e, ce::OPTR);
        let mut rec = CmdRecord {
            slot,
            opcode: layout::get(&e[ce::IN..], mbox_in::OPCODE) as u16,
            op_mod: layout::get(&e[ce::IN..], mbox_in::OP_MOD) as u16,
            delivery: delivery::OK,
            status: 0,
            syndrome: 0,
            injected: false,
        };
        let mut out_inline = [0u8; ce::INLINE];
        let result = (|| -> Result<(Chain, Vec<u8>), (u8, String)> {
            if e[ce::TYPE] != ce::TYPE_PCI {
                return Err((delivery::CMD_DESCR_ERR, format!("entry type {} (must be 7)", e[ce::TYPE])));
            }
            if ilen > MAX_MSG || olen > MAX_MSG {
                return Err((delivery::CMD_DESCR_ERR, format!("ilen {ilen} / olen {olen} beyond any command")));
            }
            let ichain = self.walk_chain(iptr, ilen, token, true)?;
            let ochain = self.walk_chain(optr, olen, token, false)?;
            let mut input = vec![0u8; ilen];
            let n = ilen.min(ce::INLINE);
            input[..n].copy_from_slice(&e[ce::IN..ce::IN + n]);
            for (i, &blk) in ichain.blocks.iter().enumerate() {
                let at = ce::INLINE + i * mb::DATA;
                let len = (ilen - at).min(mb::DATA);
                if !self.dma_read(blk, &mut input[at..at + len]) {
                    return Err((delivery::FW_ERR, format!("input mailbox {i} at {blk:#x} unreadable")));
                }
            }
            Ok((ochain, input))
        })();
        let output = match result {
            Err((d, why)) => {
                self.violation(
                    ViolationKind::Mailbox,
                    format!("slot {slot} {}: {why} (delivery status {d:#x})", op::name(rec.opcode)),
                );
                rec.delivery = d;
                None
            }
            Ok((ochain, input)) => {
                let out = self.execute(&input, olen, &mut rec);
                Some((ochain, out))
            }
        };
        if let Some((ochain, out)) = output {
            out_inline.copy_from_slice(&out[..ce::INLINE]);
            for (i, &blk) in ochain.blocks.iter().enumerate() {
                let at = ce::INLINE + i * mb::DATA;
                let end = olen.min(at + mb::DATA);
                if !self.dma_write(blk, &out[at..end]) {
                    rec.delivery = delivery::FW_ERR;
                    break;
                }
            }
        }
        // Inline output, then status and ownership (software) last.
        self.dma_write(entry_iova + ce::OUT as u64, &out_inline);
        self.dma_write(entry_iova + ce::STATUS_OWN as u64, &[rec.delivery << 1]);
        self.log.push(rec);
        self.post_cmd_completion(slot);
    }

    /// Follows a mailbox chain long enough for `len` bytes beyond the inline 16, checking
    /// alignment, block numbers and tokens.
    fn walk_chain(&mut self, first: u64, len: usize, token: u8, input: bool) -> Result<Chain, (u8, String)> {
        let what = if input { "input" } else { "output" };
        let n = len.saturating_sub(ce::INLINE).div_ceil(mb::DATA);
        let mut blocks = Vec::with_capacity(n);
        let mut at = first;
        for i in 0..n {
            let align = if i == 0 { ce::PTR_ALIGN } else { mb::NEXT_ALIGN };
            if at == 0 {
                let d = if input { delivery::IN_LENGTH_ERR } else { delivery::OUT_LENGTH_ERR };
                return Err((d, format!("{what} length {len} needs {n} mailboxes, the chain ends after {i}")));
            }
            if at % align != 0 {
                let d = if input { delivery::IN_PTR_ALIGN_ERR } else { delivery::OUT_PTR_ALIGN_ERR };
                return Err((d, format!("{what} mailbox {i} at {at:#x} not {align}-byte aligned")));
            }
            let mut hdr = [0u8; mb::SIZE - mb::NEXT];
            if !self.dma_read(at + mb::NEXT as u64, &mut hdr) {
                return Err((delivery::FW_ERR, format!("{what} mailbox {i} at {at:#x} unreadable")));
            }
            let num = layout::get32(&hdr, mb::BLOCK_NUM - mb::NEXT);
            if num != i as u32 {
                return Err((delivery::BAD_BLK_NUM_ERR, format!("{what} mailbox {i} has block number {num}")));
            }
            let t = hdr[mb::TOKEN - mb::NEXT];
            if t != token {
                return Err((delivery::TOK_ERR, format!("{what} mailbox {i} token {t:#x}, entry token {token:#x}")));
            }
            blocks.push(at);
            at = layout::get64(&hdr, 0);
        }
        Ok(Chain { blocks })
    }

    /// Runs the command in `input` and returns its output: `max(olen, 16)` bytes, status and
    /// syndrome in the header.
    fn execute(&mut self, input: &[u8], olen: usize, rec: &mut CmdRecord) -> Vec<u8> {
        let mut out = vec![0u8; olen.max(ce::INLINE)];
        let r = self.run(input, olen, &mut out, rec);
        if let Err(f) = r {
            out.iter_mut().for_each(|b| *b = 0);
            rec.status = f.status;
            rec.syndrome = f.syndrome;
            layout::set(&mut out, mbox_out::STATUS, u32::from(f.status));
            layout::set(&mut out, mbox_out::SYNDROME, f.syndrome);
        }
        out
    }

    fn run(&mut self, input: &[u8], olen: usize, out: &mut [u8], rec: &mut CmdRecord) -> Result<(), Fail> {
        if input.len() < 8 {
            return fail(status::BAD_INP_LEN, syndrome::INPUT_TOO_SHORT);
        }
        let opcode = rec.opcode;
        let Some((min_in, min_out)) = self.lengths(opcode, input) else {
            return fail(status::BAD_OP, syndrome::BAD_OPCODE);
        };
        if input.len() < min_in {
            return fail(status::BAD_INP_LEN, syndrome::INPUT_TOO_SHORT);
        }
        if olen < min_out {
            return fail(status::BAD_OUTP_LEN, syndrome::OUTPUT_TOO_SHORT);
        }
        if let Some(i) = self.injected.iter().position(|&(o, ..)| o == opcode) {
            if self.injected[i].3 > 0 {
                self.injected[i].3 -= 1;
            } else {
                let (_, st, syn, _) = self.injected.remove(i).unwrap_or((opcode, status::INT_ERR, 0, 0));
                rec.injected = true;
                return fail(st, syn);
            }
        }
        self.dispatch(opcode, rec.op_mod, input, out)
    }
}
