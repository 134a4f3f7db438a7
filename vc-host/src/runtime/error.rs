//! The errors of the pod and container API.

use std::path::PathBuf;

use thiserror::Error;

use crate::agent::AgentClientError;
use crate::config::ConfigError;
use crate::hypervisor::{HelperDeath, HelperExit, HypervisorError};
use crate::id::{ContainerId, IdError, PodId};
use crate::network::NetworkError;
use crate::runtime::share::ShareError;
use crate::state::{State, TransitionError};
use crate::store::StoreError;

/// `a, b or c`.
fn display_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    match names.split_last() {
        None => "no directory".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Why a pod or container operation failed.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// An id is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation is not allowed in the current state.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The guest image is not where the configuration says.
    #[error("guest image {what} {} is missing; build it with `cargo xtask guest-image`", path.display())]
    GuestImageMissing {
        /// `kernel` or `initrd`.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// No default location holds a guest image (and `$VC_GUEST_IMAGE_DIR` is
    /// not set).
    #[error(
        "no guest image found in {}; install one with `cargo xtask install`, or build one with `cargo xtask guest-image` and set VC_GUEST_IMAGE_DIR to its directory",
        display_paths(searched)
    )]
    GuestImageNotFound {
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The guest image's manifest is unreadable.
    #[error("guest image in {} is unusable; rebuild it with `cargo xtask guest-image`", dir.display())]
    GuestImage {
        /// The image directory.
        dir: PathBuf,
        /// The manifest's error.
        #[source]
        source: guest_image::ManifestError,
    },
    /// The guest image's agent speaks another protocol version.
    #[error("guest image in {} speaks protocol {image}, the host speaks {host}; rebuild it with `cargo xtask guest-image`", dir.display())]
    GuestImageProtocol {
        /// The image directory.
        dir: PathBuf,
        /// The image's version.
        image: u16,
        /// The host's version.
        host: u16,
    },
    /// The hypervisor failed.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// The agent failed or could not be reached.
    #[error(transparent)]
    Agent(Box<AgentClientError>),
    /// The VM started but its agent never answered.
    #[error(
        "pod {pod} did not boot: its agent never answered; last console lines:\n{console_tail}"
    )]
    BootFailed {
        /// The pod.
        pod: PodId,
        /// The end of the guest console.
        console_tail: String,
        /// Why the agent could not be reached.
        #[source]
        source: Box<AgentClientError>,
    },
    /// The VM booted too slowly, or its console stopped making progress.
    #[error("pod {pod} did not boot in time: {expiry}; last console lines:\n{console_tail}")]
    BootTimeout {
        /// The pod.
        pod: PodId,
        /// Which deadline passed.
        expiry: crate::runtime::admission::BootExpiry,
        /// The end of the guest console.
        console_tail: String,
    },
    /// A pool slot's VM started but its agent never answered.
    #[error("pool slot {slot} did not boot: its agent never answered; last console lines:\n{console_tail}")]
    PoolBootFailed {
        /// The slot.
        slot: String,
        /// The end of the guest console.
        console_tail: String,
        /// Why the agent could not be reached.
        #[source]
        source: Box<AgentClientError>,
    },
    /// A pool slot's VM booted too slowly.
    #[error(
        "pool slot {slot} did not boot in time: {expiry}; last console lines:\n{console_tail}"
    )]
    PoolBootTimeout {
        /// The slot.
        slot: String,
        /// Which deadline passed.
        expiry: crate::runtime::admission::BootExpiry,
        /// The end of the guest console.
        console_tail: String,
    },
    /// No boot slot could be taken.
    #[error(transparent)]
    Admission(#[from] crate::runtime::admission::AdmissionError),
    /// A process operation failed.
    #[error(transparent)]
    Process(Box<crate::runtime::ProcessError>),
    /// The pod's network namespace could not be mirrored.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A bind mount into the pod's share failed.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The container id is taken in the pod.
    #[error("container {container} already exists in pod {pod}")]
    ContainerExists {
        /// The pod.
        pod: PodId,
        /// The container.
        container: ContainerId,
    },
    /// No such container in the pod.
    #[error("container {container} does not exist in pod {pod}")]
    ContainerNotFound {
        /// The pod.
        pod: PodId,
        /// The container.
        container: ContainerId,
    },
    /// The container has stopped; the operation needs it alive.
    #[error("container {container} of pod {pod} has stopped; {operation} needs it created, running or paused")]
    ContainerStopped {
        /// The pod.
        pod: PodId,
        /// The container.
        container: ContainerId,
        /// The operation.
        operation: &'static str,
    },

    /// The operation needs the pod's VM running.
    #[error("pod {pod} is {state}; {operation} needs it running")]
    PodNotRunning {
        /// The pod.
        pod: PodId,
        /// Its state.
        state: State,
        /// The operation.
        operation: &'static str,
    },
    /// QEMU or one of the pod's helper processes died: the pod is broken.
    #[error("pod {pod} is broken: its {helper} (pid {pid}) {status}; stop or delete it")]
    HelperDied {
        /// The pod.
        pod: PodId,
        /// `qemu`, `virtiofsd`, `vhost-device-vsock` or `vc-console-log`.
        helper: String,
        /// Its pid.
        pid: i32,
        /// How it ended (an exit code or a signal when this process reaped
        /// it, else only that it is gone).
        status: HelperExit,
    },
    /// A device cannot be added to or removed from the running pod's VM.
    #[error("pod {pod} cannot change its VM's devices while it runs: {refused}")]
    HotplugUnsupported {
        /// The pod.
        pod: PodId,
        /// What was refused, and why.
        refused: HotplugRefusal,
    },
}

/// What a running pod's VM cannot have plugged or unplugged
/// ([`RuntimeError::HotplugUnsupported`]). Refused before anything changes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HotplugRefusal {
    /// A container with block devices cannot join a running microvm pod.
    #[error(
        "it runs on microvm, which has no hotplug, and container {0} has block devices, which \
         a microvm gets only at pod start (list the container in the pod's configuration, or \
         use machine q35)"
    )]
    ContainerDisks(ContainerId),
    /// Interfaces came or went in the namespace of a pod on microvm.
    #[error(
        "it runs on microvm, which has no hotplug, and its network namespace gained \
         [{}] and lost [{}] (a microvm keeps the interfaces it started with; use machine q35)",
        added.join(", "), removed.join(", ")
    )]
    Interfaces {
        /// Interfaces that appeared.
        added: Vec<String>,
        /// Interfaces that went away.
        removed: Vec<String>,
    },
    /// An interface the VM got at launch went away: a q35 VM's launch NICs
    /// sit on its root bus, which has no hotplug.
    #[error(
        "interface {0} went away from its network namespace, and its NIC was given at launch, \
         on the VM's root bus, which has no hotplug (restart the pod)"
    )]
    LaunchInterface(String),
}

impl RuntimeError {
    /// The error of a call that found the pod's `death`.
    pub(crate) fn helper_died(pod: PodId, death: HelperDeath) -> Self {
        RuntimeError::HelperDied {
            pod,
            helper: death.helper,
            pid: death.pid,
            status: death.exit,
        }
    }

    /// [`RuntimeError::HelperDied`] for an agent error caused by a helper's
    /// death (the VM's name is the pod's id).
    fn from_death(death: &HelperDeath) -> Option<Self> {
        let pod = PodId::new(death.vm.as_deref()?).ok()?;
        Some(Self::helper_died(pod, death.clone()))
    }
}

impl From<crate::runtime::ProcessError> for RuntimeError {
    fn from(e: crate::runtime::ProcessError) -> Self {
        if let crate::runtime::ProcessError::VmGone {
            source: AgentClientError::HelperDied { death, .. },
            ..
        } = &e
        {
            if let Some(e) = Self::from_death(death) {
                return e;
            }
        }
        RuntimeError::Process(Box::new(e))
    }
}

impl From<AgentClientError> for RuntimeError {
    fn from(e: AgentClientError) -> Self {
        if let AgentClientError::HelperDied { death, .. } = &e {
            if let Some(e) = Self::from_death(death) {
                return e;
            }
        }
        RuntimeError::Agent(Box::new(e))
    }
}
