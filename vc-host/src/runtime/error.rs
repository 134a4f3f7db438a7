//! The errors of the pod and container API.

use std::path::PathBuf;

use thiserror::Error;

use crate::agent::AgentClientError;
use crate::config::ConfigError;
use crate::hypervisor::HypervisorError;
use crate::id::{ContainerId, IdError, PodId};
use crate::network::NetworkError;
use crate::runtime::share::ShareError;
use crate::state::{State, TransitionError};
use crate::store::StoreError;

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
    /// A container with block devices cannot join a running microvm pod.
    #[error(
        "pod {pod} runs on microvm, which has no hotplug: container {container} has block \
         devices, which a microvm gets only at pod start (list the container in the pod's \
         configuration, or use machine q35)"
    )]
    HotplugUnsupported {
        /// The pod.
        pod: PodId,
        /// The container.
        container: ContainerId,
    },
}

impl From<crate::runtime::ProcessError> for RuntimeError {
    fn from(e: crate::runtime::ProcessError) -> Self {
        RuntimeError::Process(Box::new(e))
    }
}

impl From<AgentClientError> for RuntimeError {
    fn from(e: AgentClientError) -> Self {
        RuntimeError::Agent(Box::new(e))
    }
}
