//! The task service: containerd's task API (v2) over one vc pod.
//!
//! [`Service`] holds what the shim process knows: its settings and vc
//! runtime, the pod it serves (made by the first task of its group, the
//! sandbox or a plain container), the tasks (vc containers) in that pod, and
//! the publisher for events. The RPCs are in [`task`] (the container's
//! lifecycle), [`exec`] (more processes, stdio control), [`ps`] (the
//! container's processes), and [`pod`] (the VM: boot, watch, tear down);
//! the byte copying is in [`io`], events in [`events`], metrics in
//! [`stats`].

mod error;
mod events;
mod exec;
mod io;
mod pod;
mod ps;
mod rpc;
mod state;
mod stats;
mod task;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::publisher::RemotePublisher;
use vc_host::agent::AgentClient;
use vc_host::id::PodId;
use vc_host::{Runtime, RuntimeError};

use crate::config::ShimConfig;
pub use error::ServiceError;
use events::Events;
use state::{lock, Task};

/// The settings and the runtime, once both loaded.
#[derive(Debug)]
pub struct Setup {
    /// The settings.
    pub config: ShimConfig,
    /// The vc runtime.
    pub runtime: Runtime,
}

/// The pod this shim serves.
#[derive(Debug, Clone)]
pub struct PodHandle {
    /// vc's id.
    pub id: PodId,
    /// A connection to its agent, shared by every process's I/O.
    pub agent: AgentClient,
    /// The containerd id of the task that made it.
    pub owner: String,
}

/// The state of one shim process.
pub struct Shared {
    namespace: String,
    setup: Result<Setup, String>,
    events: Events,
    exit: Arc<ExitSignal>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    pod: Mutex<Option<PodHandle>>,
    /// Serializes Create and Delete (pod boot and teardown).
    lifecycle: tokio::sync::Mutex<()>,
    /// The pod is being stopped on purpose: its end is not a VM death.
    stopping: AtomicBool,
    /// The pod's VM died.
    vm_gone: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("namespace", &self.namespace)
            .field("setup", &self.setup)
            .field("pod", &self.pod)
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

/// The task service containerd talks to.
#[derive(Debug, Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// The service of one shim process.
    pub fn new(
        namespace: String,
        setup: Result<Setup, String>,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Service {
            shared: Arc::new(Shared {
                events: Events::new(publisher, namespace.clone()),
                namespace,
                setup,
                exit,
                tasks: Mutex::new(HashMap::new()),
                pod: Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
                stopping: AtomicBool::new(false),
                vm_gone: AtomicBool::new(false),
            }),
        }
    }
}

impl Shared {
    fn setup(&self) -> Result<&Setup, ServiceError> {
        self.setup
            .as_ref()
            .map_err(|e| ServiceError::Setup(e.clone()))
    }

    fn runtime(&self) -> Result<&Runtime, ServiceError> {
        Ok(&self.setup()?.runtime)
    }

    fn timeouts(&self) -> crate::config::Timeouts {
        self.setup
            .as_ref()
            .map(|s| s.config.timeouts.clone())
            .unwrap_or_default()
    }

    fn task(&self, id: &str) -> Result<Arc<Task>, ServiceError> {
        lock(&self.tasks)
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::TaskNotFound(id.to_owned()))
    }

    fn pod(&self) -> Result<PodHandle, ServiceError> {
        lock(&self.pod).clone().ok_or_else(|| {
            ServiceError::State(
                "this shim serves no pod (its sandbox was deleted or never created)".into(),
            )
        })
    }

    fn vm_gone(&self) -> bool {
        self.vm_gone.load(Ordering::SeqCst)
    }
}

/// Runs a runtime call with a deadline.
async fn call<T>(
    what: &'static str,
    deadline: Duration,
    f: impl Future<Output = Result<T, RuntimeError>>,
) -> Result<T, ServiceError> {
    match tokio::time::timeout(deadline, f).await {
        Ok(r) => r.map_err(ServiceError::runtime(what)),
        Err(_) => Err(ServiceError::Timeout {
            what,
            secs: deadline.as_secs(),
        }),
    }
}

/// Runs any call with a deadline.
async fn bounded<T>(
    what: &'static str,
    deadline: Duration,
    f: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    tokio::time::timeout(deadline, f)
        .await
        .unwrap_or(Err(ServiceError::Timeout {
            what,
            secs: deadline.as_secs(),
        }))
}

pub use error::chain as error_chain;
pub use events::timestamp;
