//! The pod and container API: the virtcontainers verbs over real VMs.
//!
//! [`Runtime`] is the entry point. Every operation that changes a pod takes the
//! pod's lock in the [store](crate::store) for its whole duration, reads the
//! pod's record, does its work, and writes the record back, so that operations
//! from different processes on one pod serialize and any process sees the same
//! state. Nothing is kept in memory between operations: a pod created by one
//! process can be started, listed and deleted by others.

pub mod admission;
mod binds;
mod container;
mod error;
mod force;
pub mod guest;
mod image_stamp;
mod mountpoints;
mod net;
mod net_update;
mod pause;
mod pod;
mod pool;
mod process;
pub mod record;
mod recover;
mod resources;
#[cfg(test)]
mod seam_tests;
pub mod share;
mod shutdown;
mod supervise;

use std::sync::Arc;
use std::time::Duration;

use crate::config::RuntimeConfig;
use crate::hypervisor::Hypervisor;
use crate::store::Store;

pub use error::{HotplugRefusal, RuntimeError};
pub use guest::GuestImage;
pub use net_update::NetworkUpdateReport;
pub use pool::{PoolShape, PoolStatus, SlotHealth, SlotStatus, StartOptions};
pub use process::{ExecEnv, Process, ProcessConfig, ProcessError, StdioPath, DEFAULT_OUTPUT_LIMIT};
pub use record::{ContainerStatus, PodStatus, ProcessInfo, StartPhase};
pub use resources::{PodEvent, PodEvents};

/// How long a container's processes get between SIGTERM and SIGKILL by default.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// How long the agent gets to power the VM off before QEMU is told to quit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The library's entry point: pods and containers on this host.
#[derive(Debug, Clone)]
pub struct Runtime {
    store: Store,
    config: RuntimeConfig,
    /// The backend every pod's VM is launched with, chosen once from
    /// [`RuntimeConfig::hypervisor`].
    hypervisor: Arc<dyn Hypervisor>,
}

impl Runtime {
    /// Opens the runtime root (creating it when missing), with the
    /// hypervisor backend the configuration names.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let store = Store::open(&config.root)?;
        let hypervisor = config.hypervisor.open(store.root());
        Ok(Self {
            store,
            config,
            hypervisor,
        })
    }

    /// Opens the runtime root with a given hypervisor backend instead of the
    /// one the configuration names.
    pub fn with_hypervisor(
        config: RuntimeConfig,
        hypervisor: Arc<dyn Hypervisor>,
    ) -> Result<Self, RuntimeError> {
        let store = Store::open(&config.root)?;
        Ok(Self {
            store,
            config,
            hypervisor,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The hypervisor backend in use.
    pub fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.hypervisor
    }
}
