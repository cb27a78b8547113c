//! The XDP program that steers our UDP port to the AF_XDP socket, written as raw eBPF
//! instructions, and the few `bpf(2)` commands that load and attach it. No libbpf, no clang.
//!
//! Layouts and constants are from the kernel's UAPI header `include/uapi/linux/bpf.h`
//! (`struct bpf_insn`, `union bpf_attr`, `enum bpf_cmd`, `enum bpf_map_type`,
//! `enum bpf_prog_type`, `enum bpf_attach_type`, `enum bpf_func_id`) and `if_link.h`
//! (`XDP_FLAGS_*`). The instruction encoding is described in the kernel's
//! `Documentation/bpf/standardization/instruction-set.rst`.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use zerocopy::{Immutable, IntoBytes, KnownLayout};

// `enum bpf_cmd`.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_MAP_TYPE_XSKMAP` of `enum bpf_map_type`: queue index to AF_XDP socket.
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_MAP_TYPE_ARRAY`: queue index to the UDP port of that queue's endpoint.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_PROG_TYPE_XDP` of `enum bpf_prog_type`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` of `enum bpf_attach_type` (for `BPF_LINK_CREATE`).
const BPF_XDP: u32 = 37;
/// `BPF_FUNC_redirect_map` and `BPF_FUNC_map_lookup_elem` of `enum bpf_func_id`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
/// `BPF_PSEUDO_MAP_FD`: the `src_reg` of a 64-bit immediate load that names a map by fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// `BPF_F_XDP_HAS_FRAGS` (`linux/bpf.h`): the program copes with multi-buffer frames.
const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
/// `XDP_PASS` of `enum xdp_action`: hand the frame to the kernel stack.
const XDP_PASS: i32 = 2;

/// `XDP_FLAGS_SKB_MODE` and `XDP_FLAGS_DRV_MODE` of `if_link.h`.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// One eBPF instruction: `struct bpf_insn` of `linux/bpf.h` (8 bytes; `dst_reg` in the low
/// nibble of the register byte on little-endian machines, the high nibble on big-endian ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}
const _: () = assert!(core::mem::size_of::<BpfInsn>() == 8);

// Opcode parts (instruction-set.rst, "Instruction classes", "Arithmetic and jump instructions",
// "Load and store instructions").
const BPF_LDX: u8 = 0x01;
const BPF_STX: u8 = 0x03;
const BPF_ALU64: u8 = 0x07;
const BPF_JMP: u8 = 0x05;
const BPF_JMP32: u8 = 0x06;
const BPF_LD: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_IMM: u8 = 0x00;
const BPF_W: u8 = 0x00;
const BPF_H: u8 = 0x08;
const BPF_B: u8 = 0x10;
const BPF_DW: u8 = 0x18;
const BPF_K: u8 = 0x00;
const BPF_X: u8 = 0x08;
const BPF_ADD: u8 = 0x00;
const BPF_AND: u8 = 0x50;
const BPF_MOV: u8 = 0xb0;
const BPF_JEQ: u8 = 0x10;
const BPF_JGT: u8 = 0x20;
const BPF_JNE: u8 = 0x50;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;

/// eBPF registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    /// The frame pointer (read-only): the top of the program's 512-byte stack.
    R10 = 10,
}

fn regs(dst: Reg, src: u8) -> u8 {
    let (d, s) = (dst as u8, src);
    if cfg!(target_endian = "little") {
        d | (s << 4)
    } else {
        (d << 4) | s
    }
}

fn insn(code: u8, dst: Reg, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn { code, regs: regs(dst, src), off, imm }
}

/// A tiny assembler: straight-line code plus forward jumps to one label ("pass").
struct Asm {
    code: Vec<BpfInsn>,
    /// Indices of jumps to patch to the "pass" label.
    to_pass: Vec<usize>,
}

impl Asm {
    fn load(&mut self, size: u8, dst: Reg, src: Reg, off: i16) {
        self.code.push(insn(BPF_LDX | BPF_MEM | size, dst, src as u8, off, 0));
    }
    fn alu_imm(&mut self, op: u8, dst: Reg, imm: i32) {
        self.code.push(insn(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm));
    }
    /// `*(u32 *)(dst + off) = src`.
    fn store_w(&mut self, dst: Reg, src: Reg, off: i16) {
        self.code.push(insn(BPF_STX | BPF_MEM | BPF_W, dst, src as u8, off, 0));
    }
    fn mov_reg(&mut self, dst: Reg, src: Reg) {
        self.code.push(insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src as u8, 0, 0));
    }
    /// `if dst != imm goto pass` (64-bit compare: `imm` is sign-extended, so use it for values
    /// below 2^31).
    fn jne_pass(&mut self, dst: Reg, imm: i32) {
        self.to_pass.push(self.code.len());
        self.code.push(insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, 0, imm));
    }
    /// `if (u32)dst != (u32)imm goto pass`: a 32-bit compare, for any 32-bit value.
    fn jne32_pass(&mut self, dst: Reg, imm: u32) {
        self.to_pass.push(self.code.len());
        self.code.push(insn(BPF_JMP32 | BPF_JNE | BPF_K, dst, 0, 0, imm as i32));
    }
    /// `if dst == imm goto pass`.
    fn jeq_pass(&mut self, dst: Reg, imm: i32) {
        self.to_pass.push(self.code.len());
        self.code.push(insn(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, 0, imm));
    }
    /// `if dst != src goto pass`.
    fn jne_reg_pass(&mut self, dst: Reg, src: Reg) {
        self.to_pass.push(self.code.len());
        self.code.push(insn(BPF_JMP | BPF_JNE | BPF_X, dst, src as u8, 0, 0));
    }
    /// `if dst > src goto pass` (unsigned).
    fn jgt_reg_pass(&mut self, dst: Reg, src: Reg) {
        self.to_pass.push(self.code.len());
        self.code.push(insn(BPF_JMP | BPF_JGT | BPF_X, dst, src as u8, 0, 0));
    }
    /// `dst = map fd` as the two-slot 64-bit immediate load the verifier turns into a map pointer.
    fn ld_map_fd(&mut self, dst: Reg, fd: RawFd) {
        self.code.push(insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd));
        self.code.push(insn(0, Reg::R0, 0, 0, 0));
    }
    fn call(&mut self, helper: i32) {
        self.code.push(insn(BPF_JMP | BPF_CALL, Reg::R0, 0, 0, helper));
    }
    fn exit(&mut self) {
        self.code.push(insn(BPF_JMP | BPF_EXIT, Reg::R0, 0, 0, 0));
    }
    /// Places the "pass" label here and resolves the jumps to it.
    fn label_pass(&mut self) {
        let here = self.code.len();
        for &j in &self.to_pass {
            self.code[j].off = (here - j - 1) as i16;
        }
    }
}

/// A 16-bit network-order field as `BPF_LDX|BPF_H` loads it into a register on this machine.
fn be16_as_loaded(v: u16) -> i32 {
    u16::from_ne_bytes(v.to_be_bytes()) as i32
}

/// The value the port map holds for `udp_port`: the port as the program loads it from the
/// frame (`BPF_LDX|BPF_H` of the network-order field), zero-extended.
pub fn port_map_value(udp_port: u16) -> u32 {
    u16::from_ne_bytes(udp_port.to_be_bytes()) as u32
}

/// The XDP program of an interface, shared by the AF_XDP sockets of its queues: a frame that
/// is IPv4 (no options, not fragmented) UDP to `ipv4`, whose destination port is the one
/// `ports` holds for the frame's receive queue, goes to the socket `xskmap` holds for that
/// queue (`bpf_redirect_map`, falling back to `XDP_PASS` when the slot is empty). Everything
/// else (ARP, other ports, a port that arrived on another endpoint's queue) is passed to the
/// kernel stack untouched. The NIC steers each endpoint's port to its queue (on real NICs
/// `ethtool -N <if> flow-type udp4 dst-port <port> action <queue>`; a veth peer's transmit
/// queue is the receive queue); the program only redirects by queue, and checks the port so a
/// frame steered to the wrong queue never reaches the wrong endpoint.
///
/// Offsets: `struct xdp_md` (`data` at 0, `data_end` at 4, `rx_queue_index` at 16, from
/// `linux/bpf.h`); Ethernet type at 12, IPv4 version/IHL at 14, fragment field at 20,
/// protocol at 23, destination address at 30, UDP destination port at 36 (RFC 791, RFC 768).
/// Helpers: `bpf_map_lookup_elem` (key on the stack, NULL checked before the value is read)
/// and `bpf_redirect_map`; registers 6 to 8 survive the calls.
pub fn xdp_redirect_program(xskmap_fd: RawFd, ports_fd: RawFd, ipv4: [u8; 4]) -> Vec<BpfInsn> {
    use Reg::*;
    let mut a = Asm { code: Vec::new(), to_pass: Vec::new() };
    a.mov_reg(R6, R1); // r6 = ctx
    a.load(BPF_W, R2, R6, 0); // r2 = ctx->data
    a.load(BPF_W, R3, R6, 4); // r3 = ctx->data_end
    a.mov_reg(R4, R2);
    a.alu_imm(BPF_ADD, R4, 42); // r4 = data + Ethernet/IPv4/UDP headers
    a.jgt_reg_pass(R4, R3); // too short: pass (this bounds check lets the verifier allow the loads)
    a.load(BPF_H, R5, R2, 12);
    a.jne_pass(R5, be16_as_loaded(0x0800)); // not IPv4
    a.load(BPF_B, R5, R2, 14);
    a.jne_pass(R5, 0x45); // not IPv4 without options
    a.load(BPF_H, R5, R2, 20);
    a.alu_imm(BPF_AND, R5, be16_as_loaded(0x3fff)); // more-fragments flag and fragment offset
    a.jne_pass(R5, 0);
    a.load(BPF_B, R5, R2, 23);
    a.jne_pass(R5, 17); // not UDP
    a.load(BPF_W, R5, R2, 30);
    a.jne32_pass(R5, u32::from_ne_bytes(ipv4)); // not to our address
    a.load(BPF_H, R7, R2, 36); // r7 = destination port
    a.load(BPF_W, R8, R6, 16); // r8 = ctx->rx_queue_index
    a.store_w(R10, R8, -4); // the lookup key, on the stack
    a.ld_map_fd(R1, ports_fd);
    a.mov_reg(R2, R10);
    a.alu_imm(BPF_ADD, R2, -4);
    a.call(BPF_FUNC_MAP_LOOKUP_ELEM); // r0 = &ports[queue] or NULL
    a.jeq_pass(R0, 0);
    a.load(BPF_W, R1, R0, 0);
    a.jne_reg_pass(R1, R7); // not this queue's endpoint's port
    a.mov_reg(R2, R8); // key: the receive queue
    a.ld_map_fd(R1, xskmap_fd);
    a.alu_imm(BPF_MOV, R3, XDP_PASS); // flags: the action when the slot is empty
    a.call(BPF_FUNC_REDIRECT_MAP);
    a.exit();
    a.label_pass();
    a.alu_imm(BPF_MOV, R0, XDP_PASS);
    a.exit();
    a.code
}

/// `union bpf_attr` for `BPF_MAP_CREATE` (leading fields; the kernel zero-extends).
#[derive(IntoBytes, Immutable, KnownLayout, Default)]
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<MapCreateAttr>() == 44);

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[derive(IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}
const _: () = assert!(core::mem::size_of::<MapElemAttr>() == 32);

/// `union bpf_attr` for `BPF_PROG_LOAD` (up to `expected_attach_type`).
#[derive(IntoBytes, Immutable, KnownLayout, Default)]
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
const _: () = assert!(core::mem::size_of::<ProgLoadAttr>() == 72);

/// `union bpf_attr` for `BPF_LINK_CREATE` (the common leading fields).
#[derive(IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}
const _: () = assert!(core::mem::size_of::<LinkCreateAttr>() == 16);

fn bpf_raw<A: IntoBytes + Immutable>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    let bytes = attr.as_bytes();
    // SAFETY: `bpf(2)` reads `bytes.len()` bytes of the attribute union from a live buffer; the
    // commands used here only read it and the buffers it points to (key, value, instructions,
    // license), and write only the verifier log, through a pointer to a buffer we own.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, bytes.as_ptr(), bytes.len() as u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// A `bpf(2)` command that returns a new file descriptor.
fn bpf_fd<A: IntoBytes + Immutable>(cmd: libc::c_long, attr: &A) -> io::Result<OwnedFd> {
    let fd = bpf_raw(cmd, attr)?;
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn name16(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    let b = s.as_bytes();
    n[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
    n
}

/// Creates an XSKMAP with `entries` slots (one per receive queue).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16("erpc_xsks"),
        ..Default::default()
    };
    bpf_fd(BPF_MAP_CREATE, &attr)
}

/// Creates the port map: an array of `entries` u32 (one per receive queue), all 0 (no port).
pub fn create_port_map(entries: u32) -> io::Result<OwnedFd> {
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16("erpc_ports"),
        ..Default::default()
    };
    bpf_fd(BPF_MAP_CREATE, &attr)
}

/// Puts the AF_XDP socket `xsk` into slot `queue` of the XSKMAP.
pub fn xskmap_set(map: RawFd, queue: u32, xsk: RawFd) -> io::Result<()> {
    map_set(map, queue, xsk as u32)
}

/// Sets `map[key] = value` (u32 keys and values).
pub fn map_set(map: RawFd, key: u32, value: u32) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: map as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        flags: 0,
    };
    bpf_raw(BPF_MAP_UPDATE_ELEM, &attr).map(drop)
}

/// Removes slot `key` of the XSKMAP (the socket no longer receives redirected frames).
pub fn xskmap_delete(map: RawFd, key: u32) -> io::Result<()> {
    let attr = MapElemAttr { map_fd: map as u32, _pad: 0, key: &key as *const u32 as u64, value: 0, flags: 0 };
    bpf_raw(BPF_MAP_DELETE_ELEM, &attr).map(drop)
}

/// Loads the program; on a verifier rejection the error carries the verifier's log.
pub fn load_xdp_program(code: &[BpfInsn]) -> Result<OwnedFd, (io::Error, String)> {
    let license = CString::new("Apache-2.0").expect("no NUL");
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name16("erpc_xdp"),
        // The program reads only the first 42 bytes, so it may run on multi-buffer frames:
        // without the flag, native XDP refuses to attach to a device with a jumbo MTU.
        prog_flags: BPF_F_XDP_HAS_FRAGS,
        ..Default::default()
    };
    let first = match bpf_fd(BPF_PROG_LOAD, &attr) {
        Ok(fd) => return Ok(fd),
        // Kernels before 5.18 do not know the flag.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            attr.prog_flags = 0;
            bpf_fd(BPF_PROG_LOAD, &attr)
        }
        Err(e) => Err(e),
    };
    match first {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Load again with the verifier log on, to say why.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let again = bpf_fd(BPF_PROG_LOAD, &attr);
            let n = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..n]).into_owned();
            match again {
                Ok(fd) => Ok(fd),
                Err(_) => Err((first, text)),
            }
        }
    }
}

/// Attaches the program to interface `ifindex` as a BPF link. Closing the returned descriptor
/// (also when the process dies) detaches the program.
pub fn attach_xdp(prog: RawFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let attr = LinkCreateAttr { prog_fd: prog as u32, target_ifindex: ifindex, attach_type: BPF_XDP, flags };
    bpf_fd(BPF_LINK_CREATE, &attr)
}
