//! Requests, host to agent.

use serde::{Deserialize, Serialize};

use super::container::{ContainerSpec, ProcessRef, ProcessSpec, Resources, StreamKind};
use super::net::NetworkUpdate;
use super::pod::PodSetup;
use super::seccomp::Seccomp;

/// A request from the host. Each variant names the [`Response`](crate::Response)
/// it is answered with on success; any request may instead be answered with
/// [`Response::Error`](crate::Response::Error).
///
/// Variants are only ever appended (see the [module docs](crate::msg)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check. Reply: `Ok`.
    Ping,
    /// Reply: `GuestDetails`.
    GuestDetails,
    /// Reply: `Health`.
    Health,
    /// Set up the pod: hostname, DNS, shared mounts, network. Reply: `Ok`.
    SetupPod(PodSetup),
    /// Create a container; its main process is prepared but not started. The
    /// agent applies [`Seccomp::Default`] (hosts that predate
    /// [`Request::CreateContainerV2`] had no way to choose). Reply: `Ok`.
    CreateContainer(ContainerSpec),
    /// Start a created container's main process. Reply: `Pid`.
    StartContainer {
        /// Container id.
        container_id: String,
    },
    /// Stop a container: SIGTERM to every process, then SIGKILL after the grace
    /// period. Reply: `Exited` with the main process's code.
    StopContainer {
        /// Container id.
        container_id: String,
        /// Grace period in milliseconds between SIGTERM and SIGKILL.
        grace_ms: u64,
    },
    /// Remove a stopped (or never started) container: its cgroup, mounts and
    /// directories. Reply: `Ok`.
    RemoveContainer {
        /// Container id.
        container_id: String,
    },
    /// Freeze every process of a container. Reply: `Ok`.
    PauseContainer {
        /// Container id.
        container_id: String,
    },
    /// Thaw a paused container. Reply: `Ok`.
    ResumeContainer {
        /// Container id.
        container_id: String,
    },
    /// Reply: `ContainerStatus`.
    ContainerState {
        /// Container id.
        container_id: String,
    },
    /// Start one more process. With an empty `container_id` the process runs in
    /// the VM outside any container (for debugging). Reply: `Pid`.
    Exec {
        /// The new process; `exec_id` must be set and unused.
        process: ProcessRef,
        /// What to run.
        spec: ProcessSpec,
    },
    /// Send a signal. Signalling a process that has already exited is not an
    /// error. Reply: `Ok`.
    Signal {
        /// The process; with `all`, every process of its container.
        process: ProcessRef,
        /// Signal number.
        signal: i32,
        /// Signal every process of the container.
        all: bool,
    },
    /// Wait for a process to exit. Reply: `Exited`.
    Wait {
        /// The process.
        process: ProcessRef,
    },
    /// Resize a process's terminal. Reply: `Ok`.
    ResizeTerminal {
        /// The process.
        process: ProcessRef,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Close a process's stdin (end-of-file). Reply: `Ok`.
    CloseStdin {
        /// The process.
        process: ProcessRef,
    },
    /// Change a running container's cgroup limits. Reply: `Ok`.
    UpdateResources {
        /// Container id.
        container_id: String,
        /// New limits; `None` fields are left as they are.
        resources: Resources,
    },
    /// Reply: `Stats`.
    Stats {
        /// Container id.
        container_id: String,
    },
    /// Wait for the next event (OOM kill, process exit). Reply: `Event`.
    NextEvent,
    /// Reply: `Interfaces`.
    ListInterfaces,
    /// Reply: `Routes`.
    ListRoutes,
    /// Stop every container, sync filesystems and power the VM off. Reply: `Ok`,
    /// sent before the power-off.
    Shutdown,
    /// Create a container with a seccomp choice; otherwise as
    /// [`Request::CreateContainer`]. The filter applies to the main process and
    /// to every exec. An agent older than this variant answers
    /// [`ErrorCode::Unsupported`](crate::ErrorCode::Unsupported), so a host
    /// never runs a container unfiltered by mistake. Reply: `Ok`.
    CreateContainerV2 {
        /// The container.
        spec: ContainerSpec,
        /// Its seccomp filter.
        seccomp: Seccomp,
    },
    /// The pids (in the guest's PID namespace) of every process in a
    /// container's cgroup, in ascending order: the main process, its execs and
    /// everything they started. At most [`MAX_CONTAINER_PIDS`]. An agent older
    /// than this variant answers [`ErrorCode::Unsupported`](crate::ErrorCode::Unsupported).
    /// Reply: `Pids`.
    ContainerPids {
        /// Container id.
        container_id: String,
    },
    /// Bring a set-up pod's network to the description given (see
    /// [`NetworkUpdate`]): interfaces configured, addresses, routes and
    /// neighbours added and removed. Only valid after `SetupPod`. An agent
    /// older than this variant answers
    /// [`ErrorCode::Unsupported`](crate::ErrorCode::Unsupported). Reply: `Ok`.
    UpdateNetwork(NetworkUpdate),
    /// Start one more process, as [`Request::Exec`], whose stdout and stderr
    /// (each one `streams` names) are connections the host parked for it
    /// with [`StreamPark`](crate::StreamPark): the agent places each
    /// connection's socket on the child's fd 1 or 2 and keeps no copy, so the
    /// process writes straight into the connection. A stream not named gets
    /// the agent's pipe as with `Exec` (attach it with `StreamAttach`), and so
    /// does stdin always. Every named stream must be parked for this process
    /// (else `NotFound`, and the parked streams named are closed); with
    /// `spec.terminal` it is `InvalidArgument`. Protocol version 3 and later:
    /// an agent answers `Unsupported` on a connection negotiated at 2.
    /// Reply: `Pid`.
    ///
    /// Payload after the variant index (25): `process` and `spec` encoded as
    /// in `Exec`, then `streams` as a varint count and one varint variant
    /// index each (1 Stdout, 2 Stderr).
    ExecDirect {
        /// The new process; `exec_id` must be set and unused.
        process: ProcessRef,
        /// What to run; `terminal` must be false.
        spec: ProcessSpec,
        /// The parked streams it gets: [`StreamKind::Stdout`],
        /// [`StreamKind::Stderr`], each at most once.
        streams: Vec<StreamKind>,
    },
}

/// The most pids a [`Response::Pids`](crate::Response::Pids) carries (at
/// most 320 KiB encoded). The guest kernel's default `pid_max` is 32768, or
/// 1024 per vCPU above 32 vCPUs, so only a VM of more than 64 vCPUs can hold a
/// container with more processes; the agent then answers with the lowest this
/// many. A host refuses a longer reply.
pub const MAX_CONTAINER_PIDS: usize = 65_536;

impl Request {
    /// A short name of the request, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::GuestDetails => "guest-details",
            Request::Health => "health",
            Request::SetupPod(_) => "setup-pod",
            Request::CreateContainer(_) => "create-container",
            Request::StartContainer { .. } => "start-container",
            Request::StopContainer { .. } => "stop-container",
            Request::RemoveContainer { .. } => "remove-container",
            Request::PauseContainer { .. } => "pause-container",
            Request::ResumeContainer { .. } => "resume-container",
            Request::ContainerState { .. } => "container-state",
            Request::Exec { .. } => "exec",
            Request::Signal { .. } => "signal",
            Request::Wait { .. } => "wait",
            Request::ResizeTerminal { .. } => "resize-terminal",
            Request::CloseStdin { .. } => "close-stdin",
            Request::UpdateResources { .. } => "update-resources",
            Request::Stats { .. } => "stats",
            Request::NextEvent => "next-event",
            Request::ListInterfaces => "list-interfaces",
            Request::ListRoutes => "list-routes",
            Request::Shutdown => "shutdown",
            Request::CreateContainerV2 { .. } => "create-container-v2",
            Request::ContainerPids { .. } => "container-pids",
            Request::UpdateNetwork(_) => "update-network",
            Request::ExecDirect { .. } => "exec-direct",
        }
    }
}
