//! vc-agent: the agent inside a vc pod VM.
//!
//! As PID 1 of the guest (the `vc-agent` binary is `/init` in the initrd) it mounts
//! the pseudo filesystems, loads the image's kernel modules, and serves
//! [`vc_proto`] on vsock. The same server runs as a normal process for tests:
//! [`serve_connection`] takes any [`Connection`] (a vsock or unix socket, or
//! `tokio::io::duplex`), so a test can drive an [`Agent`] in memory; parked
//! output streams need a socket.
//!
//! What lives where:
//! - [`boot`]: PID 1 early setup (mount table, modules), before the async runtime;
//! - [`container`]: rootfs, namespaces and cgroup of each container (the
//!   container module's own docs describe the seam with [`process`]);
//! - [`config`]: `vc.*` settings from the kernel command line;
//! - [`power`]: the fatal path (sync, power off) and the panic hook;
//! - [`server`]: connections, framing, request dispatch and process streams;
//! - [`agent`]: the [`Agent`] state and one handler per request;
//! - [`process`]: spawning processes (fork/clone + exec), stdio, the reaper;
//! - [`network`]: interfaces, addresses, routes and neighbours over rtnetlink;
//! - [`events`]: the queue behind `NextEvent`.

pub mod agent;
pub mod boot;
pub mod config;
pub mod container;
pub mod events;
pub mod logging;
pub mod network;
pub mod power;
pub mod process;
pub mod server;

/// Entry points for the fuzz targets of `fuzz/` into parsers that are not
/// public: the files the agent reads from the guest kernel. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// `MemAvailable` of `/proc/meminfo` text, in bytes.
    pub fn mem_available(meminfo: &str) -> Option<u64> {
        crate::agent::guest::parse_mem_available(meminfo)
    }

    /// Whether the root mount of `/proc/self/mountinfo` text has a parent.
    pub fn root_has_parent(mountinfo: &str) -> bool {
        crate::container::initramfs::root_has_parent(mountinfo)
    }

    /// The value of `key` in a flat keyed cgroup file.
    pub fn cgroup_flat_keyed(content: &str, key: &str) -> Option<u64> {
        crate::container::cgroup::files::flat_keyed(content, key)
    }

    /// A single-value cgroup file that may say `max`: `Some(None)` for
    /// `max`, `None` for anything that is neither `max` nor a number.
    pub fn cgroup_max_value(content: &str) -> Option<Option<u64>> {
        crate::container::cgroup::files::max_value(content).ok()
    }

    /// A cgroup file holding one number.
    pub fn cgroup_number(content: &str) -> Option<u64> {
        crate::container::cgroup::files::number(content)
    }

    /// Bytes read and written, summed over the devices of `io.stat` text.
    pub fn cgroup_io_bytes(content: &str) -> (u64, u64) {
        crate::container::cgroup::files::io_bytes(content)
    }
}

pub use agent::{Agent, AgentOptions};
pub use server::{serve_connection, serve_unix, serve_vsock, Connection, ServeError};

/// The agent's version, as reported in `GuestDetails` and the handshake.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The software string the agent announces in the handshake.
pub fn software() -> String {
    format!("vc-agent {VERSION}")
}
