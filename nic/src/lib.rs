//! NIC code that needs no operating system: `#![no_std]`, no heap.
//!
//! What a userspace VFIO driver and a bare-metal image share: device register access, the Intel
//! igb/ixgbe driver core (register programming, descriptor rings, the datapath), and the layer-2
//! neighbour handling (ARP answers, a neighbour table) that a transport owning its own Ethernet
//! needs to talk to ordinary IP hosts. The `std` parts (VFIO, threads, wall-clock time) stay in
//! `erpc-driver`; the bare-metal appliance uses this crate directly.

#![no_std]

pub mod neigh;
