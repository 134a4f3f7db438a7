//! vc-host: build hardware-virtualized container runtimes.
//!
//! A *pod* is a small virtual machine booted from a kernel and an initrd whose
//! PID 1 is the vc agent; its *containers* are processes the agent starts inside
//! the VM. This crate launches and supervises the VM and its helper daemons,
//! talks to the agent over vsock, and keeps each pod's state on disk so that any
//! process on the host can find it again.

pub mod agent;
pub mod beneath;
pub mod config;
pub mod hypervisor;
pub mod id;
pub mod mountinfo;
pub mod network;
pub mod runtime;
pub mod state;
pub mod storage;
pub mod store;
pub mod vsock;

pub use runtime::{Runtime, RuntimeError};
