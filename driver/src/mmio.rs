//! Device registers: [`RegisterIo`] (and [`RegisterIo64`] for 64-bit doorbells), the trait the
//! drivers program against, and [`Mmio`], volatile accesses over a mapped BAR. They live in the
//! no_std crate [`erpc_nic::mmio`], shared with bare-metal users, and are re-exported here so the
//! drivers and tests keep reaching them as `erpc_driver::mmio`. Tests implement `RegisterIo` with
//! register-level fakes that play the device.

pub use erpc_nic::mmio::{Mmio, RegisterIo, RegisterIo64};
