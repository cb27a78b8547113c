//! The command interface: one command queue entry (slot 0) used synchronously, with input and
//! output mailbox chains for what does not fit inline.
//!
//! The entry and the mailboxes live in one DMA allocation: the 4 KiB command queue page, then
//! 1 KiB-aligned mailboxes (`IN_BOXES` for input, `OUT_BOXES` for output). The device writes
//! the entry and the output mailboxes, so they are only read and written through volatile
//! accesses of raw pointers.
//!
//! Signatures (`sig` of the entry, `ctrl_sig` / `sig` of each mailbox) are left 0, as Linux
//! (`cmd.c`: `checksum_disabled` from start) and rdma-core's VFIO driver (`mlx5_vfio.c`) send
//! them: the firmware checks them only while the general capability `cmdif_checksum` is on,
//! and bring-up turns it off with SET_HCA_CAP before INIT_HCA, as both drivers do
//! (`handle_hca_cap`). The commands before that (ENABLE_HCA, ISSI, boot pages, QUERY_HCA_CAP)
//! go unsigned in both drivers too.

use super::layout::{init_seg, op, CmdBlock, CmdLayout, OutHdr, CMD_INLINE, CMD_OWNER_HW, CMD_TYPE_PCI, MAILBOX_DATA};
use crate::mmio::RegisterIo;
use erpc_hugepages::{DmaError, DmaMemory, DmaSpace, PageSize};
use std::fmt;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

const CMDQ_PAGE: usize = 4096;
const BOX_STRIDE: usize = 1024;
/// Mailboxes per direction: room for the largest command used (SET_HCA_CAP's 4 KiB
/// capability, QUERY_HCA_CAP's output, MANAGE_PAGES of up to [`MAX_PAGES_PER_CMD`] pages).
const IN_BOXES: usize = 16;
const OUT_BOXES: usize = 16;
/// Largest input and output this queue carries.
pub const MAX_IN: usize = CMD_INLINE + IN_BOXES * MAILBOX_DATA;
pub const MAX_OUT: usize = CMD_INLINE + OUT_BOXES * MAILBOX_DATA;
/// Page addresses per MANAGE_PAGES command (8 bytes each, after the 16-byte header).
pub const MAX_PAGES_PER_CMD: usize = (MAX_IN - 16) / 8;

/// How a command failed. Every variant names the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdError {
    /// The device did not hand the entry back in time.
    Timeout { opcode: u16, health_syndrome: u8 },
    /// The device could not deliver the command (bad entry or mailbox chain): the delivery
    /// status of `status_own` (`MLX5_CMD_DELIVERY_STAT_*`).
    Delivery { opcode: u16, status: u8 },
    /// The command ran and failed: its status (`MLX5_CMD_STAT_*`) and syndrome.
    Failed { opcode: u16, status: u8, syndrome: u32 },
    /// The input or output does not fit this queue's mailboxes.
    TooLarge { opcode: u16, len: usize },
    /// The output is shorter than the command's output layout (`want` bytes): never read as
    /// zeros (object 0, status OK).
    ShortOutput { opcode: u16, len: usize, want: usize },
}

/// `MLX5_CMD_STAT_*` names (Linux `drivers/net/ethernet/mellanox/mlx5/core/cmd.c`).
pub fn status_name(s: u8) -> &'static str {
    match s {
        0x0 => "OK",
        0x1 => "internal error",
        0x2 => "bad operation",
        0x3 => "bad parameter",
        0x4 => "bad system state",
        0x5 => "bad resource",
        0x6 => "resource busy",
        0x8 => "limits exceeded",
        0x9 => "bad resource state",
        0xa => "bad index",
        0xf => "no resources",
        0x50 => "bad input length",
        0x51 => "bad output length",
        0x10 => "bad QP state",
        0x30 => "bad packet",
        0x40 => "bad size",
        _ => "unknown status",
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CmdError::Timeout { opcode, health_syndrome } => write!(
                f,
                "{} ({opcode:#x}) got no answer from the firmware (health syndrome {health_syndrome:#x}): \
                 reset the device (erpc nic unbind / bind) and check its firmware",
                op::name(opcode)
            ),
            CmdError::Delivery { opcode, status } => {
                write!(f, "{} ({opcode:#x}) was not delivered: delivery status {status:#x}", op::name(opcode))
            }
            CmdError::Failed { opcode, status, syndrome } => write!(
                f,
                "{} ({opcode:#x}) failed: status {status:#x} ({}), syndrome {syndrome:#x}",
                op::name(opcode),
                status_name(status)
            ),
            CmdError::TooLarge { opcode, len } => {
                write!(f, "{} ({opcode:#x}): {len} bytes do not fit the command mailboxes", op::name(opcode))
            }
            CmdError::ShortOutput { opcode, len, want } => write!(
                f,
                "{} ({opcode:#x}): an output of {len} bytes is shorter than its layout ({want} bytes)",
                op::name(opcode)
            ),
        }
    }
}

impl std::error::Error for CmdError {}

/// Reads a big-endian register of the initialization segment.
pub fn read_be<R: RegisterIo>(bar: &R, off: u32) -> u32 {
    bar.read32(off).swap_bytes()
}

/// Writes a big-endian register of the initialization segment.
pub fn write_be<R: RegisterIo>(bar: &R, off: u32, v: u32) {
    bar.write32(off, v.swap_bytes())
}

/// The command queue.
pub struct CmdQueue {
    mem: DmaMemory,
    token: u8,
    timeout: Duration,
}

impl CmdQueue {
    /// Allocates the queue page and mailboxes in `space` (pages of `page` size).
    pub fn new(space: &Arc<DmaSpace>, page: PageSize, timeout: Duration) -> Result<CmdQueue, DmaError> {
        let mem = space.alloc(CMDQ_PAGE + (IN_BOXES + OUT_BOXES) * BOX_STRIDE, page)?;
        Ok(CmdQueue { mem, token: 0, timeout })
    }

    /// The IOVA of the command queue page (4 KiB aligned), for `cmdq_addr`.
    pub fn iova(&self) -> u64 {
        self.mem.iova()
    }

    fn at(&self, off: usize) -> *mut u8 {
        // SAFETY: every offset used is inside the allocation (entry 0 and the mailboxes).
        unsafe { self.mem.vaddr().as_ptr().add(off) }
    }

    fn in_box(i: usize) -> usize {
        CMDQ_PAGE + i * BOX_STRIDE
    }

    fn out_box(i: usize) -> usize {
        CMDQ_PAGE + (IN_BOXES + i) * BOX_STRIDE
    }

    /// Writes the mailbox chain at `boxes(0..n)` carrying `data` (zeros for output chains).
    fn write_chain(&self, boxes: fn(usize) -> usize, n: usize, data: Option<&[u8]>, token: u8) {
        for i in 0..n {
            let mut b = CmdBlock::new_zeroed();
            if let Some(d) = data {
                let chunk = &d[(i * MAILBOX_DATA).min(d.len())..((i + 1) * MAILBOX_DATA).min(d.len())];
                b.data[..chunk.len()].copy_from_slice(chunk);
            }
            b.next = if i + 1 < n { self.mem.iova() + boxes(i + 1) as u64 } else { 0 }.into();
            b.block_num = (i as u32).into();
            b.token = token;
            // SAFETY: a 1 KiB-aligned mailbox slot inside the allocation; the device does not
            // own it until the doorbell.
            unsafe { std::ptr::write_volatile(self.at(boxes(i)).cast::<CmdBlock>(), b) };
        }
    }

    /// Runs one command: `input` (starting with its [`InHdr`](super::layout::InHdr)) and an
    /// output of `out_len` bytes, which is returned once the command succeeded.
    pub fn exec<R: RegisterIo>(&mut self, bar: &R, input: &[u8], out_len: usize) -> Result<Vec<u8>, CmdError> {
        let opcode = input.get(..2).map_or(0, |o| u16::from_be_bytes([o[0], o[1]]));
        if input.len() > MAX_IN || out_len > MAX_OUT {
            return Err(CmdError::TooLarge { opcode, len: input.len().max(out_len) });
        }
        // Every input starts with the 8-byte header and every output has at least the 16
        // bytes of `mlx5_ifc_mbox_out_bits`: a shorter one would be read as status 0.
        if input.len() < std::mem::size_of::<super::layout::InHdr>() || out_len < CMD_INLINE {
            return Err(CmdError::ShortOutput { opcode, len: out_len.min(input.len()), want: CMD_INLINE });
        }
        self.token = self.token.wrapping_add(1).max(1);
        let token = self.token;
        let in_boxes = input.len().saturating_sub(CMD_INLINE).div_ceil(MAILBOX_DATA);
        let out_boxes = out_len.saturating_sub(CMD_INLINE).div_ceil(MAILBOX_DATA);
        self.write_chain(Self::in_box, in_boxes, Some(input.get(CMD_INLINE..).unwrap_or(&[])), token);
        self.write_chain(Self::out_box, out_boxes, None, token);
        let mut e = CmdLayout::new_zeroed();
        e.type_ = CMD_TYPE_PCI;
        e.inlen = (input.len() as u32).into();
        let n = input.len().min(CMD_INLINE);
        e.in_[..n].copy_from_slice(&input[..n]);
        e.in_ptr = if in_boxes > 0 { self.mem.iova() + Self::in_box(0) as u64 } else { 0 }.into();
        e.outlen = (out_len as u32).into();
        e.out_ptr = if out_boxes > 0 { self.mem.iova() + Self::out_box(0) as u64 } else { 0 }.into();
        e.token = token;
        e.status_own = CMD_OWNER_HW;
        // SAFETY: entry 0 at the start of the queue page, ours until the doorbell.
        unsafe { std::ptr::write_volatile(self.at(0).cast::<CmdLayout>(), e) };
        // The entry and mailboxes must be visible before the doorbell.
        fence(Ordering::SeqCst);
        write_be(bar, init_seg::CMD_DBELL, 1);

        let t0 = Instant::now();
        let own_at = std::mem::offset_of!(CmdLayout, status_own);
        let status_own = loop {
            // SAFETY: the entry's last byte, which the device writes when it is done.
            let s = unsafe { std::ptr::read_volatile(self.at(own_at)) };
            if s & CMD_OWNER_HW == 0 {
                break s;
            }
            if t0.elapsed() > self.timeout {
                let health_syndrome = (read_be(bar, init_seg::HEALTH_SYND_WORD) >> 16) as u8;
                return Err(CmdError::Timeout { opcode, health_syndrome });
            }
            std::hint::spin_loop();
        };
        fence(Ordering::Acquire);
        if status_own >> 1 != 0 {
            return Err(CmdError::Delivery { opcode, status: status_own >> 1 });
        }
        // SAFETY: entry 0, handed back to us (ownership bit clear).
        let e: CmdLayout = unsafe { std::ptr::read_volatile(self.at(0).cast::<CmdLayout>()) };
        let mut out = vec![0u8; out_len];
        let n = out_len.min(CMD_INLINE);
        out[..n].copy_from_slice(&e.out[..n]);
        for i in 0..out_boxes {
            // SAFETY: output mailbox `i`, written by the device before it handed the entry back.
            let b: CmdBlock = unsafe { std::ptr::read_volatile(self.at(Self::out_box(i)).cast::<CmdBlock>()) };
            let from = CMD_INLINE + i * MAILBOX_DATA;
            let to = (from + MAILBOX_DATA).min(out_len);
            out[from..to].copy_from_slice(&b.data[..to - from]);
        }
        let hdr: OutHdr = parse(opcode, &out)?;
        if hdr.status != 0 {
            return Err(CmdError::Failed { opcode, status: hdr.status, syndrome: hdr.syndrome.get() });
        }
        Ok(out)
    }

    /// Runs a command whose input is a fixed layout and whose output is a fixed layout.
    pub fn call<R: RegisterIo, I: IntoBytes + zerocopy::Immutable, O: FromBytes>(
        &mut self,
        bar: &R,
        input: &I,
    ) -> Result<O, CmdError> {
        let out = self.exec(bar, input.as_bytes(), std::mem::size_of::<O>())?;
        parse(u16::from_be_bytes([input.as_bytes()[0], input.as_bytes()[1]]), &out)
    }
}

/// Reads the output layout `O` from the start of `out`; an output shorter than `O` is an
/// error, never zeros.
pub fn parse<O: FromBytes>(opcode: u16, out: &[u8]) -> Result<O, CmdError> {
    O::read_from_prefix(out).map(|(o, _)| o).map_err(|_| CmdError::ShortOutput {
        opcode,
        len: out.len(),
        want: std::mem::size_of::<O>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlx5::layout::{ObjOut, PlainIn};
    use erpc_hugepages::DmaSpace;

    /// A register window no command may reach.
    struct NoDevice;

    impl RegisterIo for NoDevice {
        fn read32(&self, off: u32) -> u32 {
            panic!("read of {off:#x}: the command should have been refused before the device")
        }
        fn write32(&self, off: u32, _: u32) {
            panic!("write of {off:#x}: the command should have been refused before the device")
        }
    }

    #[test]
    fn a_short_output_is_an_error_not_zeros() {
        let e = parse::<ObjOut>(op::CREATE_CQ, &[0u8; 12]).expect_err("12 of 16 bytes");
        assert_eq!(e, CmdError::ShortOutput { opcode: op::CREATE_CQ, len: 12, want: 16 });
        assert!(e.to_string().starts_with("CREATE_CQ (0x400): an output of 12 bytes"), "{e}");
        let o: ObjOut = parse(op::CREATE_CQ, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0, 0, 0]).unwrap();
        assert_eq!(o.id24(), 0x12_3456);
        // A command asking for less than the output header never reaches the device.
        let mut q = CmdQueue::new(&DmaSpace::identity(), PageSize::Ordinary, Duration::from_millis(1)).unwrap();
        let input = PlainIn::new(op::ALLOC_PD, 0);
        let e = q.exec(&NoDevice, input.as_bytes(), 8).expect_err("8-byte output");
        assert!(matches!(e, CmdError::ShortOutput { opcode: op::ALLOC_PD, .. }), "{e:?}");
    }
}
