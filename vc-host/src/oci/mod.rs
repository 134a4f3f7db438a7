//! OCI runtime spec to vc: a bundle's `config.json`, as containerd writes it
//! for `ctr run` or for its CRI plugin, becomes a [`ContainerConfig`] and the
//! settings of the pod it belongs to ([`OciPod`], [`PodRole`]).
//!
//! This module owns the mapping and its refusals, and nothing else: it starts
//! no VM and touches no file but `config.json`. Every field of the spec is
//! either mapped, accepted because it has no meaning inside a VM (each one is
//! listed in `docs/containerd.md`, *OCI spec mapping*), or refused with an
//! [`OciError`] naming it as a JSON path (`linux.resources.devices[3]`,
//! `mounts[2].options`). A field that `oci-spec` does not know is refused too
//! ([`load_spec`] compares the file with what the typed spec kept), so nothing
//! is ever ignored silently.
//!
//! - `spec.rs`: reading `config.json`, unknown fields, the top-level fields
//!   (`ociVersion`, `root`, `hostname`, `hooks`, ...);
//! - `process.rs`: `process` for the main process and for exec;
//! - `mounts.rs`: `mounts`: binds to volumes, tmpfs, `/dev/shm`, and the
//!   standard kernel filesystems the guest mounts itself;
//! - `linux.rs`: `linux`: namespaces, seccomp, masked and read-only paths,
//!   the fields refused outright;
//! - `resources.rs`: `linux.resources`, for create and for Update;
//! - `pod.rs`: the pod: role from the CRI annotations, netns, hostname, VM size
//!   annotations.

mod error;
mod linux;
mod mounts;
mod pod;
mod process;
mod resources;
mod spec;

#[cfg(test)]
#[macro_use]
mod tests;
#[cfg(test)]
mod tests_fixtures;
#[cfg(test)]
mod tests_pod;
#[cfg(test)]
mod tests_refusals;
#[cfg(test)]
mod tests_refusals_linux;

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::config::{ContainerConfig, Seccomp};
use crate::id::ContainerId;

pub use error::OciError;
pub use pod::{
    pod_role, OciPod, PodRole, ANNOTATION_CONTAINER_TYPE, ANNOTATION_MEMORY_MIB,
    ANNOTATION_SANDBOX_ID, ANNOTATION_VCPUS,
};
pub use process::{exec_from_oci, process_from_oci};
pub use resources::resources_from_oci;
pub use spec::{load_spec, MAX_SPEC_BYTES};

/// What the mapping does where the spec leaves a choice to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciOptions {
    /// The seccomp filter of a spec without `linux.seccomp`. Default
    /// [`Seccomp::Default`]: vc's default profile (Docker's and containerd's),
    /// as every vc container gets; [`Seccomp::Unconfined`] follows the OCI
    /// reading (no `linux.seccomp`, no filter), as runc does.
    pub seccomp_when_absent: Seccomp,
    /// What a spec without `linux.maskedPaths` or `linux.readonlyPaths` gets:
    /// true (the default), vc's defaults (runc's and containerd's lists, as
    /// every vc container gets); false, nothing, as runc does. A spec that has
    /// the field, even empty, gets exactly its list.
    pub default_paths_when_absent: bool,
    /// What a spec without a network namespace (the host's network, such as
    /// a Kubernetes `hostNetwork` pod or `ctr run --net-host`) gets.
    pub host_network: HostNetwork,
}

impl Default for OciOptions {
    fn default() -> Self {
        OciOptions {
            seccomp_when_absent: Seccomp::Default,
            default_paths_when_absent: true,
            host_network: HostNetwork::NoNetwork,
        }
    }
}

/// The host's network namespace cannot be shared with a VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostNetwork {
    /// The pod's VM gets no network interface (loopback only).
    #[default]
    NoNetwork,
    /// Refuse the spec (`linux.namespaces`).
    Refuse,
}

/// A container from an OCI spec, with the pod it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct OciContainer {
    /// The container.
    pub container: ContainerConfig,
    /// The pod settings the spec names (a CRI container's are its sandbox's:
    /// the pod exists already, see [`OciPod`]).
    pub pod: OciPod,
    /// Which pod the container belongs to.
    pub role: PodRole,
}

/// Maps the spec of the bundle at `bundle` (whose relative paths, `root.path`
/// and bind sources, are resolved against it) to a container `id` and its pod.
/// Nothing on disk is checked here; `Runtime` validates when it creates.
pub fn container_from_spec(
    id: ContainerId,
    bundle: &Path,
    spec: &Spec,
    opts: &OciOptions,
) -> Result<OciContainer, OciError> {
    spec::check_top_level(spec)?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    let role = pod_role(&annotations)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| OciError::missing("process"))?;
    let main = process::main_process(process)?;
    let (rootfs, readonly_rootfs) = spec::root(spec, bundle)?;
    let hostname = spec::hostname(spec)?;
    let storage = mounts::storage(spec.mounts().as_deref().unwrap_or(&[]), bundle, &role)?;
    let linux = linux::map(spec.linux().as_ref(), &role, opts)?;

    let mut c = ContainerConfig::new(id, rootfs, main.args);
    c.readonly_rootfs = readonly_rootfs;
    c.env = main.env;
    c.cwd = main.cwd;
    c.user = main.user;
    c.hostname = hostname.clone();
    c.terminal = main.terminal;
    c.rlimits = main.rlimits;
    c.capabilities = Some(main.capabilities);
    c.no_new_privileges = main.no_new_privileges;
    c.volumes = storage.volumes;
    c.tmpfs = storage.tmpfs;
    c.shm_size_bytes = storage.shm_size_bytes;
    c.resources = linux.resources;
    c.seccomp = linux.seccomp;
    c.masked_paths = linux.masked_paths;
    c.readonly_paths = linux.readonly_paths;

    let pod = OciPod {
        netns: linux.netns,
        hostname,
        annotations: annotations.into_iter().collect(),
    };
    pod.check()?;
    Ok(OciContainer {
        container: c,
        pod,
        role,
    })
}
