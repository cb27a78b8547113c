//! NIC code that needs no operating system: `#![no_std]`, no heap.
//!
//! What a userspace VFIO driver and a bare-metal image share: device register access, the Intel
//! igb/ixgbe driver core (register programming, descriptor rings, the datapath), and the layer-2
//! neighbour handling (ARP answers, a neighbour table) that a transport owning its own Ethernet
//! needs to talk to ordinary IP hosts. The `std` parts (VFIO, threads, wall-clock time) stay in
//! `erpc-driver`; the bare-metal appliance uses this crate directly.
//!
//! * [`mmio`]: register access ([`mmio::RegisterIo`], [`mmio::RegisterIo64`]) and [`mmio::Mmio`],
//!   volatile accesses over a mapped BAR.
//! * [`dma`]: [`dma::DmaRange`], memory a device can address, as a backend hands it to a driver.
//! * [`delay`]: [`delay::Delay`], the clock and pause a driver waits on hardware with.
//! * [`intel`]: the igb (82576, I350) and ixgbe (82599, X540) driver core, generic over the three.

#![no_std]

#[cfg(test)]
extern crate std;

pub mod delay;
pub mod dma;
pub mod intel;
pub mod mmio;
pub mod neigh;
