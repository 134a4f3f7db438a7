//! Pod-wide messages: guest details, pod setup and shutdown.

use serde::{Deserialize, Serialize};

use super::net::{Interface, Neighbour, Route};

/// What the agent reports about itself and the guest
/// (the reply to [`Request::GuestDetails`](crate::Request::GuestDetails)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDetails {
    /// Version of the agent binary (its crate version).
    pub agent_version: String,
    /// Protocol version in use on this connection.
    pub protocol_version: u16,
    /// Kernel release (`uname -r`).
    pub kernel_release: String,
    /// Modules the agent loaded at boot, in load order.
    pub modules_loaded: Vec<String>,
    /// Milliseconds since the guest kernel booted (from `CLOCK_BOOTTIME`).
    pub uptime_ms: u64,
    /// Number of online vCPUs.
    pub cpus: u32,
    /// Total guest memory in bytes.
    pub memory_bytes: u64,
}

/// The guest's health (the reply to [`Request::Health`](crate::Request::Health)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Containers the agent currently tracks.
    pub containers: u32,
    /// Free guest memory in bytes (`MemAvailable`).
    pub memory_available_bytes: u64,
    /// Load average over one minute, times 100.
    pub load_1m_centi: u32,
}

/// DNS configuration written to the containers' `resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    pub servers: Vec<std::net::IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
    /// Resolver options, such as `ndots:2`.
    pub options: Vec<String>,
}

/// One `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The address.
    pub ip: std::net::IpAddr,
    /// Names for the address.
    pub names: Vec<String>,
}

/// A filesystem the host shares with the guest, mounted by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedMount {
    /// Filesystem type, such as `virtiofs`.
    pub fstype: String,
    /// Source: the virtio-fs tag, or a device path.
    pub source: String,
    /// Absolute mount point in the guest.
    pub target: String,
    /// Mount options (comma separated, as for `mount -o`).
    pub options: Vec<String>,
}

/// Everything the agent sets up once per pod
/// (the payload of [`Request::SetupPod`](crate::Request::SetupPod)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSetup {
    /// Identifier of the pod, for logs.
    pub pod_id: String,
    /// Hostname of the VM and default hostname of its containers.
    pub hostname: String,
    /// DNS configuration for the containers.
    pub dns: Dns,
    /// Extra `/etc/hosts` entries.
    pub hosts: Vec<HostEntry>,
    /// Filesystems to mount, in order.
    pub shared_mounts: Vec<SharedMount>,
    /// Interfaces to configure.
    pub interfaces: Vec<Interface>,
    /// Routes to add, after the interfaces are up.
    pub routes: Vec<Route>,
    /// Static neighbour entries.
    pub neighbours: Vec<Neighbour>,
}
