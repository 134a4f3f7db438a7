//! vc-host: build hardware-virtualized container runtimes.
//!
//! A *pod* is a small virtual machine booted from a kernel and an initrd whose
//! PID 1 is the vc agent; its *containers* are processes the agent starts inside
//! the VM. This crate launches and supervises the VM and its helper daemons,
//! talks to the agent over vsock, and keeps each pod's state on disk so that any
//! process on the host can find it again.
//!
//! [`Runtime`] is the entry point: pods and containers with the
//! virtcontainers verbs (`docs/pods.md`). Its configuration is data
//! ([`config`]); [`config::RuntimeConfig::default`] finds an installed guest
//! image (`cargo xtask install`) or the one `$VC_GUEST_IMAGE_DIR` names.
//!
//! # Example
//!
//! Create a pod, add a container, start both, read the container's output,
//! then stop and delete the pod. This is `examples/hello_pod.rs`; run it as
//! root with `cargo run -p vc-host --example hello_pod -- ROOTFS`.
//!
//! ```no_run
#![doc = include_str!("../examples/hello_pod.rs")]
//! ```

pub mod agent;
pub mod beneath;
mod blocking;
pub mod config;
pub mod fault;
pub mod host_defaults;
pub mod hypervisor;
pub mod id;
pub mod mountinfo;
pub mod network;
pub mod oci;
pub mod runtime;
pub mod state;
pub mod storage;
pub mod store;
pub mod vsock;

pub use runtime::{Runtime, RuntimeError};

/// Aids for the end-to-end tests. Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::blocking::Ticker;
}

/// Entry points for the fuzz targets of `fuzz/` into code that is not public:
/// parsers of what the guest or the host kernel wrote. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// State and start time from `/proc/<pid>/stat` text.
    pub fn proc_stat(text: &str) -> Option<(char, u64)> {
        crate::hypervisor::process::parse_stat(text).map(|s| (s.state, s.start_time))
    }

    /// A pod event from an event the guest sent; `None` when it names no
    /// valid container.
    pub fn pod_event(event: vc_proto::Event) -> Option<crate::runtime::PodEvent> {
        crate::runtime::PodEvent::from_guest(event)
    }
}
