//! What the store keeps about a pod and its containers between operations, and
//! the status views returned to callers.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{ContainerConfig, PodConfig};
use crate::hypervisor::{HelperDeath, VmRecord};
use crate::id::{ContainerId, PodId};
use crate::network::PodNetwork;
use crate::state::State;

/// Milliseconds since the Unix epoch.
pub type Timestamp = u64;

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The mutable part of a pod, in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Lifecycle state as last recorded.
    pub state: State,
    /// When the pod was created.
    pub created_at: Timestamp,
    /// When the VM last started.
    pub started_at: Option<Timestamp>,
    /// When the VM last stopped.
    pub stopped_at: Option<Timestamp>,
    /// The running VM, while there is one.
    pub vm: Option<VmRecord>,
    /// The mirrored network namespace (taps and filters to remove on stop),
    /// while the pod has one set up.
    #[serde(default)]
    pub network: Option<PodNetwork>,
    /// The pod's containers, by id.
    pub containers: BTreeMap<ContainerId, ContainerRecord>,
    /// Every bind mount the runtime has made or is about to make in the
    /// pod's share, as its target relative to the pod directory, in the order
    /// made: written before each bind, removed once it is undone (see
    /// [`super::share`]).
    #[serde(default)]
    pub binds: Vec<std::path::PathBuf>,
    /// How far the start under way has got. A start holds the pod's lock
    /// throughout, so an operation that takes the lock and finds this set
    /// knows that the start's caller died (see the `recover` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartPhase>,
    /// Why the pod is [`State::Broken`]: the first of its VM's processes
    /// seen dead while it ran, and how it ended.
    #[serde(default)]
    pub broken: Option<HelperDeath>,
    /// The container verb under way: written before the verb acts (binds,
    /// the guest), cleared by the save that records its result. Container
    /// verbs hold the pod's lock throughout, so an operation that takes the
    /// lock and finds this set knows that the verb's caller died (see the
    /// `recover` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_op: Option<ContainerOp>,
}

/// A container verb under way (see [`PodRecord::container_op`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerOp {
    /// The container it acts on.
    pub container: ContainerId,
    /// What it does.
    pub verb: ContainerVerb,
}

/// The container verbs that record themselves while under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerVerb {
    /// Create in a running pod: binds, hot-plugged disks, the guest's
    /// container. Rolled back when interrupted.
    Create,
    /// Start of the main process. Finished from the guest's state when
    /// interrupted.
    Start,
    /// Delete: the guest's container, disks, binds, the record. Finished
    /// when interrupted.
    Delete,
}

impl std::fmt::Display for ContainerVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerVerb::Create => "create",
            ContainerVerb::Start => "start",
            ContainerVerb::Delete => "delete",
        })
    }
}

/// The steps of a start that its record names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPhase {
    /// Preparing the share and network, waiting for admission, launching the
    /// VM (whose processes the run directory's launch journal names).
    Launching,
    /// The VM is launched and in `vm`; the guest boots.
    Booting,
    /// The guest booted, the pod is set up and its containers started: the VM
    /// can be adopted.
    Booted,
}

impl std::fmt::Display for StartPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartPhase::Launching => "launching",
            StartPhase::Booting => "booting",
            StartPhase::Booted => "booted",
        })
    }
}

impl PodRecord {
    /// A new, ready pod.
    pub fn new() -> Self {
        Self {
            state: State::Ready,
            created_at: now(),
            started_at: None,
            stopped_at: None,
            vm: None,
            network: None,
            containers: BTreeMap::new(),
            binds: Vec::new(),
            start: None,
            broken: None,
            container_op: None,
        }
    }
}

impl Default for PodRecord {
    fn default() -> Self {
        Self::new()
    }
}

/// What the store keeps about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Its configuration.
    pub config: ContainerConfig,
    /// Lifecycle state as last recorded.
    pub state: State,
    /// Pid of the main process in the guest, once started.
    pub pid: Option<u32>,
    /// Exit code once stopped (128 + signal when signalled, 255 when the VM went away).
    pub exit_code: Option<i32>,
    /// Whether the kernel OOM-killed a process of the container.
    pub oom_killed: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its main process started.
    pub started_at: Option<Timestamp>,
    /// When its main process exited.
    pub finished_at: Option<Timestamp>,
}

impl ContainerRecord {
    /// A new, ready container.
    pub fn new(config: ContainerConfig) -> Self {
        Self {
            config,
            state: State::Ready,
            pid: None,
            exit_code: None,
            oom_killed: false,
            created_at: now(),
            started_at: None,
            finished_at: None,
        }
    }

    /// The status view of this record.
    pub fn status(&self, pod_id: &PodId) -> ContainerStatus {
        ContainerStatus {
            pod_id: pod_id.clone(),
            id: self.config.id.clone(),
            state: self.state,
            pid: self.pid,
            exit_code: self.exit_code,
            oom_killed: self.oom_killed,
            config: self.config.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// A helper process of a running pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// What it is: `qemu`, `vhost-device-vsock`, `virtiofsd`.
    pub name: String,
    /// Its pid on the host.
    pub pid: i32,
}

/// The detailed status of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodStatus {
    /// Its id.
    pub id: PodId,
    /// Its state; a pod whose QEMU or helper died is reported `broken`.
    pub state: State,
    /// Why it is broken: which process died and how.
    #[serde(default)]
    pub broken: Option<HelperDeath>,
    /// Its configuration.
    pub config: PodConfig,
    /// The hypervisor and helper processes while the VM runs.
    pub processes: Vec<ProcessInfo>,
    /// Where the guest console is logged.
    pub console_log: Option<std::path::PathBuf>,
    /// The host cgroup of the hypervisor and helper processes while the VM
    /// runs: its directories and limits.
    #[serde(default)]
    pub host_cgroup: Option<crate::hypervisor::CgroupRecord>,
    /// Its containers.
    pub containers: Vec<ContainerStatus>,
    /// When the pod was created.
    pub created_at: Timestamp,
    /// When the VM last started.
    pub started_at: Option<Timestamp>,
    /// When the VM last stopped.
    pub stopped_at: Option<Timestamp>,
}

/// The detailed status of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Its pod.
    pub pod_id: PodId,
    /// Its id.
    pub id: ContainerId,
    /// Its state.
    pub state: State,
    /// Pid of the main process in the guest.
    pub pid: Option<u32>,
    /// Exit code once stopped.
    pub exit_code: Option<i32>,
    /// Whether the kernel OOM-killed a process of the container.
    pub oom_killed: bool,
    /// Its configuration.
    pub config: ContainerConfig,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its main process started.
    pub started_at: Option<Timestamp>,
    /// When its main process exited.
    pub finished_at: Option<Timestamp>,
}
