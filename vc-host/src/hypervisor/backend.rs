//! The seam between the pod layer and a hypervisor backend.
//!
//! [`Hypervisor`] is what the runtime holds (as an `Arc<dyn Hypervisor>`,
//! chosen once from [`HypervisorKind`] in its configuration): it validates a
//! pod's VM configuration against the host, answers capability questions
//! ([`Capabilities`]) so that the runtime never matches a machine type,
//! launches VMs, and cleans up after a launch whose launcher died. Everything
//! a backend does past that (QEMU's command line, QMP, hot-plug, its helper
//! daemons) stays behind it, in this module's siblings.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{VmConfig, VmSettings};
use super::spec::VmSpec;
use super::vm::Vm;
use super::HypervisorError;

/// A boxed future that can cross threads: what [`Hypervisor`]'s async
/// methods return, so that the trait is object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the VMs a backend makes from a given configuration can do, for the
/// runtime to decide how to attach things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Block devices can be added to and removed from the running guest
    /// ([`Vm::hotplug_disk`], [`Vm::unplug_disk`]). Without it, every disk a
    /// pod's containers use must be given at launch ([`VmSpec::disks`]), and
    /// a container with block devices cannot be added to a running pod.
    pub hotplug_block: bool,
    /// Network interfaces can be added to and removed from the running
    /// guest ([`Vm::hotplug_nic`], [`Vm::unplug_nic`]). Without it, a pod's
    /// interfaces are the ones its namespace had at start; a running pod's
    /// addresses, routes and neighbours still follow its namespace.
    pub hotplug_net: bool,
}

/// Which backend a runtime uses (`RuntimeConfig::hypervisor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    /// QEMU with vhost-user helper daemons ([`super::QemuHypervisor`]).
    #[default]
    Qemu,
}

impl HypervisorKind {
    /// The backend, keeping its host-wide state (such as kernel vsock CID
    /// locks) under `state_dir`, normally the runtime root.
    pub fn open(self, state_dir: &Path) -> Arc<dyn Hypervisor> {
        match self {
            HypervisorKind::Qemu => Arc::new(super::QemuHypervisor::new(state_dir)),
        }
    }
}

/// Launches VMs. Only what the pod layer needs: everything else is a method
/// of the [`Vm`] it returns. Object-safe: the runtime holds an
/// `Arc<dyn Hypervisor>`.
pub trait Hypervisor: Send + Sync + fmt::Debug {
    /// The backend's name, also the name under which its VMM process is
    /// listed among a pod's processes (`qemu`).
    fn name(&self) -> &'static str;

    /// What VMs made from `config` can do.
    fn capabilities(&self, config: &VmConfig) -> Capabilities;

    /// Checks `config` against this host and resolves what it leaves to the
    /// host (accelerator, programs): the settings a [`VmSpec`] carries.
    /// Starts nothing.
    fn settings(&self, config: &VmConfig) -> Result<VmSettings, HypervisorError>;

    /// Starts a VM (and its helper daemons) as described by `spec`, returning
    /// once the VMM answers on its monitor. The guest may still be booting:
    /// the caller connects to [`Vm::agent_addr`] with retries. On error
    /// nothing started is left running.
    fn launch<'a>(&'a self, spec: &'a VmSpec) -> BoxFuture<'a, Result<Vm, HypervisorError>>;

    /// Kills what a launch in `run_dir` started and never handed back
    /// (its launcher died on the way), and removes its files. Nothing to do
    /// is fine.
    fn reap_interrupted_launch<'a>(&'a self, run_dir: &'a Path) -> BoxFuture<'a, ()>;
}
