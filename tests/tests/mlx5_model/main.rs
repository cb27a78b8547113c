//! The mlx5 device model's own tests (`tests/mlx5_model`): a small host side written for them
//! from the public layouts drives the model through its BAR and IOMMU, and checks what the
//! device answers, writes and records. By concern:
//!
//! * `command_interface`: the initialization segment, command entries and mailbox chains,
//!   lengths, ownership, statuses, injected failures, a dead firmware;
//! * `bring_up_and_pages`: bring-up order, firmware pages and page requests, teardown;
//! * `queue_commands`: CQ, SQ, RQ, TIS, TIR, RQT and Q counter commands, the queue state
//!   machine, objects in use;
//! * `steering`: flow tables, groups, entries, the MAC filter and the root;
//! * `datapath`: sends, CQEs and owner bits, striding receive, fillers, errors, the link, CQE
//!   corruption, doorbells, concurrency;
//! * `capabilities`: the capability switches and what the device does with them.
//!
//! `host` and `nic` are the helpers they share.

mod host;
mod nic;

mod bring_up_and_pages;
mod capabilities;
mod command_interface;
mod datapath;
mod queue_commands;
mod steering;
