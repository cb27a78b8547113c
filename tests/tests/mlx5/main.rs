//! The mlx5 driver against the independent device model (`tests/mlx5_model`): the model
//! decodes every command and WQE with its own layouts, so a layout mistake in the driver shows up
//! as a rejected command, an error CQE or a recorded violation here. By concern:
//!
//! * `hca`: bring-up and teardown of the function, firmware pages;
//! * `queue_pair`: the objects of one queue pair, unwinding, teardown, page requests served
//!   during operation;
//! * `datapath`: traffic between two driver instances on two wired models;
//! * `multiqueue`: several queue pairs on one function, their flow entries, threads;
//! * `capabilities`: what the device reports (BlueFlame and UAR page sizes, inline mode, queue
//!   and stride limits) and how the driver follows it.
//!
//! `harness` holds what they share.

mod harness;

mod capabilities;
mod datapath;
mod hca;
mod multiqueue;
mod queue_pair;
