//! The firmware objects a queue pair is made of, each created by one command and recorded in a
//! typed teardown list the moment it exists, so that a failure part-way and `Drop` destroy
//! exactly what was created, in reverse order.
//!
//! [`Creator`] runs the create commands (inputs built by the constructors next to each layout
//! in [`super::layout`] and [`super::steering`]); [`Teardown`] holds an [`Object`] per
//! created object and knows each one's destroy command.

use super::cmd::{parse, CmdError};
use super::handles::{Cqn, Eqn, FgId, FtId, Pd, Rqn, Sqn, Td, Tirn, Tisn, Uar};
use super::layout::*;
use super::queues::pas;
use super::steering::{self, RxMatch};
use super::{Hca, Mlx5Error};
use crate::mmio::RegisterIo;
use erpc_hugepages::DmaSlice;
use std::fmt;
use zerocopy::IntoBytes;

/// One object the firmware created for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Uar(Uar),
    Pd(Pd),
    Td(Td),
    Eq(Eqn),
    Cq(Cqn),
    Tis(Tisn),
    Sq(Sqn),
    Rq(Rqn),
    Tir(Tirn),
    FlowTable(FtId),
    FlowGroup(FtId, FgId),
    /// The entry at a flow index of the table.
    FlowEntry(FtId, u32),
    /// The table made the NIC RX root (undone by SET_FLOW_TABLE_ROOT `op_mod` 1; only
    /// recorded on devices that accept it, see `reset_root_to_default`).
    Root(FtId),
}

impl Object {
    /// The command that destroys it.
    fn destroy_input(&self) -> Vec<u8> {
        let obj = |opcode, id: u32| ObjIn::new(opcode, id).as_bytes().to_vec();
        match *self {
            Object::Uar(u) => obj(op::DEALLOC_UAR, u.0),
            Object::Pd(p) => obj(op::DEALLOC_PD, p.0),
            Object::Td(t) => obj(op::DEALLOC_TRANSPORT_DOMAIN, t.0),
            Object::Eq(e) => obj(op::DESTROY_EQ, e.0),
            Object::Cq(c) => obj(op::DESTROY_CQ, c.0),
            Object::Tis(t) => obj(op::DESTROY_TIS, t.0),
            Object::Sq(s) => obj(op::DESTROY_SQ, s.0),
            Object::Rq(r) => obj(op::DESTROY_RQ, r.0),
            Object::Tir(t) => obj(op::DESTROY_TIR, t.0),
            Object::FlowTable(t) => steering::destroy_table(t).as_bytes().to_vec(),
            Object::FlowGroup(t, g) => steering::destroy_group(t, g).as_bytes().to_vec(),
            Object::FlowEntry(t, i) => steering::delete_entry(t, i).as_bytes().to_vec(),
            Object::Root(_) => steering::set_root(None).as_bytes().to_vec(),
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Uar(h) => h.fmt(f),
            Object::Pd(h) => h.fmt(f),
            Object::Td(h) => h.fmt(f),
            Object::Eq(h) => h.fmt(f),
            Object::Cq(h) => h.fmt(f),
            Object::Tis(h) => h.fmt(f),
            Object::Sq(h) => h.fmt(f),
            Object::Rq(h) => h.fmt(f),
            Object::Tir(h) => h.fmt(f),
            Object::FlowTable(t) => t.fmt(f),
            Object::FlowGroup(t, g) => write!(f, "{g} of {t}"),
            Object::FlowEntry(t, i) => write!(f, "flow entry {i} of {t}"),
            Object::Root(t) => write!(f, "{t} as the NIC RX root"),
        }
    }
}

/// The objects created, in creation order.
#[derive(Debug, Default)]
pub struct Teardown(Vec<Object>);

impl Teardown {
    pub fn push(&mut self, o: Object) {
        self.0.push(o)
    }

    /// Destroys every object in reverse creation order. A failure is logged and teardown goes
    /// on: nothing else can be done, and HCA teardown frees what is left. Returns how many
    /// destroy commands failed (the device may then still use those objects' memory).
    pub fn run<R: RegisterIo>(&mut self, hca: &mut Hca<R>) -> usize {
        let mut failed = 0;
        while let Some(o) = self.0.pop() {
            if let Err(e) = hca.exec(&o.destroy_input(), 16) {
                log::warn!("mlx5 teardown of {o}: {e}");
                failed += 1;
            }
        }
        failed
    }
}

/// Runs the create commands for one queue pair, recording each object in the teardown list as
/// soon as the firmware made it.
pub struct Creator<'a, R: RegisterIo> {
    pub hca: &'a mut Hca<R>,
    pub teardown: &'a mut Teardown,
}

impl<R: RegisterIo> Creator<'_, R> {
    /// Runs a create command (`input`, then the `pas` page list of `ring` if any) and returns
    /// the 24-bit object number of its output.
    fn create(&mut self, input: &[u8], ring: Option<DmaSlice<'_>>) -> Result<u32, Mlx5Error> {
        let opcode = u16::from_be_bytes([input[0], input[1]]);
        let out = match ring {
            None => self.hca.exec(input, 16)?,
            Some(ring) => {
                let mut v = input.to_vec();
                v.extend(pas(&ring));
                self.hca.exec(&v, 16)?
            }
        };
        let o: ObjOut = parse(opcode, &out)?;
        Ok(o.id24())
    }

    fn alloc(&mut self, opcode: u16) -> Result<u32, Mlx5Error> {
        self.create(PlainIn::new(opcode, 0).as_bytes(), None)
    }

    pub fn alloc_uar(&mut self) -> Result<Uar, Mlx5Error> {
        let u = Uar(self.alloc(op::ALLOC_UAR)?);
        self.teardown.push(Object::Uar(u));
        Ok(u)
    }

    pub fn alloc_pd(&mut self) -> Result<Pd, Mlx5Error> {
        let p = Pd(self.alloc(op::ALLOC_PD)?);
        self.teardown.push(Object::Pd(p));
        Ok(p)
    }

    pub fn alloc_td(&mut self) -> Result<Td, Mlx5Error> {
        let t = Td(self.alloc(op::ALLOC_TRANSPORT_DOMAIN)?);
        self.teardown.push(Object::Td(t));
        Ok(t)
    }

    /// The reserved lkey: data segments naming it address memory by IOVA.
    pub fn reserved_lkey(&mut self) -> Result<u32, Mlx5Error> {
        let sc: QuerySpecialContextsOut = self.hca.call(&PlainIn::new(op::QUERY_SPECIAL_CONTEXTS, 0))?;
        Ok(sc.resd_lkey.get())
    }

    /// CREATE_EQ over `ring`.
    pub fn create_eq(&mut self, input: CreateEqIn, ring: DmaSlice<'_>) -> Result<Eqn, Mlx5Error> {
        // `create_eq_out.eq_number` is 8 bits.
        let e = Eqn(self.create(input.as_bytes(), Some(ring))? & 0xff);
        self.teardown.push(Object::Eq(e));
        Ok(e)
    }

    /// CREATE_CQ over `ring`.
    pub fn create_cq(&mut self, input: CreateCqIn, ring: DmaSlice<'_>) -> Result<Cqn, Mlx5Error> {
        let c = Cqn(self.create(input.as_bytes(), Some(ring))?);
        self.teardown.push(Object::Cq(c));
        Ok(c)
    }

    pub fn create_tis(&mut self, input: CreateTisIn) -> Result<Tisn, Mlx5Error> {
        let t = Tisn(self.create(input.as_bytes(), None)?);
        self.teardown.push(Object::Tis(t));
        Ok(t)
    }

    /// CREATE_SQ over `ring`, then RST → RDY.
    pub fn create_sq(&mut self, input: CreateSqIn, ring: DmaSlice<'_>) -> Result<Sqn, Mlx5Error> {
        let s = Sqn(self.create(input.as_bytes(), Some(ring))?);
        self.teardown.push(Object::Sq(s));
        self.hca.exec(ModifySqIn::new(s, qstate::RST, qstate::RDY).as_bytes(), 16)?;
        Ok(s)
    }

    /// CREATE_RQ over `ring`, then RST → RDY.
    pub fn create_rq(&mut self, input: CreateRqIn, ring: DmaSlice<'_>) -> Result<Rqn, Mlx5Error> {
        let r = Rqn(self.create(input.as_bytes(), Some(ring))?);
        self.teardown.push(Object::Rq(r));
        self.hca.exec(ModifyRqIn::new(r, qstate::RST, qstate::RDY).as_bytes(), 16)?;
        Ok(r)
    }

    pub fn create_tir(&mut self, input: CreateTirIn) -> Result<Tirn, Mlx5Error> {
        let t = Tirn(self.create(input.as_bytes(), None)?);
        self.teardown.push(Object::Tir(t));
        Ok(t)
    }

    /// The NIC RX steering table of a device: `1 << log_size` entries, one group over the
    /// first `entries` matching [`RxMatch`]'s fields, and the table made the root (empty: every
    /// frame misses until queues add their entries with [`Creator::steer`]). Disconnecting the
    /// root at teardown (`op_mod` 1) is valid only when the device reports
    /// `reset_root_to_default`; otherwise the root table is destroyed once empty, which resets
    /// the root to the default, as Linux does with the last root table
    /// (`update_root_ft_destroy` in `core/fs_core.c`).
    pub fn steering_table(
        &mut self,
        log_size: u32,
        entries: u32,
        reset_root_to_default: bool,
    ) -> Result<(FtId, FgId), Mlx5Error> {
        let t = FtId(self.create(steering::create_table(log_size).as_bytes(), None)?);
        self.teardown.push(Object::FlowTable(t));
        let g = FgId(self.create(steering::create_group(t, entries).as_bytes(), None)?);
        self.teardown.push(Object::FlowGroup(t, g));
        self.hca.exec(steering::set_root(Some(t)).as_bytes(), 16)?;
        if reset_root_to_default {
            self.teardown.push(Object::Root(t));
        }
        Ok((t, g))
    }

    /// The entry at `index` of the steering table forwarding the frames `m` describes to `tir`.
    pub fn steer(&mut self, table: FtId, group: FgId, index: u32, tir: Tirn, m: &RxMatch) -> Result<(), Mlx5Error> {
        self.hca.exec(steering::set_entry(table, group, index, tir, m).as_bytes(), 16)?;
        self.teardown.push(Object::FlowEntry(table, index));
        Ok(())
    }
}

/// What MODIFY_SQ needs, for resets during operation.
pub fn modify_sq<R: RegisterIo>(hca: &mut Hca<R>, sqn: Sqn, from: u32, to: u32) -> Result<(), CmdError> {
    hca.exec(ModifySqIn::new(sqn, from, to).as_bytes(), 16).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_object_is_destroyed_by_its_own_command() {
        let t = FtId(0x20);
        let cases = [
            (Object::Uar(Uar(3)), op::DEALLOC_UAR, 0),
            (Object::Eq(Eqn(4)), op::DESTROY_EQ, 0),
            (Object::Sq(Sqn(0x105)), op::DESTROY_SQ, 0),
            (Object::FlowGroup(t, FgId(9)), op::DESTROY_FLOW_GROUP, 0),
            (Object::FlowEntry(t, 3), op::DELETE_FLOW_TABLE_ENTRY, 0),
            (Object::Root(t), op::SET_FLOW_TABLE_ROOT, 1),
        ];
        for (o, opcode, op_mod) in cases {
            let i = o.destroy_input();
            assert_eq!(u16::from_be_bytes([i[0], i[1]]), opcode, "{o}");
            assert_eq!(u16::from_be_bytes([i[6], i[7]]), op_mod, "{o}");
        }
        assert_eq!(&Object::Sq(Sqn(0x105)).destroy_input()[8..12], &[0, 0, 1, 5], "sqn at byte 8");
        assert_eq!(Object::FlowGroup(t, FgId(9)).to_string(), "FgId 0x9 of FtId 0x20");
    }
}
