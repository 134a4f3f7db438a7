//! Containers: the map of the pod's containers and their state machine.
//!
//! ```text
//!   create        start                 main exits / stop
//! ─────────▶ Created ─────▶ Running ───────────────────────▶ Stopped ──▶ (removed)
//!               │            ▲    │ pause                        ▲
//!               │            │    ▼                              │
//!               │            └─ Paused ──────────────────────────┘
//!               └──────────────────────────────────────────────────▶ (removed)
//! ```
//!
//! `Starting` and `Stopping` are internal (a start or stop in progress); they are
//! reported as created and running. Every refused transition is
//! [`ErrorCode::WrongState`] with a message naming the current and the required
//! state. The cgroup, mount and namespace work is [`crate::container`]'s; this
//! file only decides when it is done.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use vc_proto::{
    AgentError, ContainerSpec, ContainerStatus, ErrorCode, ProcessRef, ProcessSpec, ProcessState,
    Resources, Response, Seccomp,
};

use super::errors::{fail, wire, ToAgentError};
use super::Agent;
use crate::container::{Container, ContainerError, LaunchKind};
use crate::process::{Launch, Process};

/// How long a stop waits for the main process after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often a running container's OOM counter is read.
pub const OOM_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Starting,
    Running,
    Paused,
    Stopping,
    Stopped,
}

impl State {
    fn public(self) -> ProcessState {
        match self {
            State::Created | State::Starting => ProcessState::Created,
            State::Running | State::Stopping => ProcessState::Running,
            State::Paused => ProcessState::Paused,
            State::Stopped => ProcessState::Stopped,
        }
    }

    fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Starting => "starting",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

fn wrong_state(id: &str, action: &str, current: State, wanted: &str) -> AgentError {
    fail(
        ErrorCode::WrongState,
        format!(
            "cannot {action} container `{id}`: it is {}, it must be {wanted}",
            current.name()
        ),
    )
}

fn not_found(id: &str) -> AgentError {
    fail(ErrorCode::NotFound, format!("no container `{id}`"))
}

impl ToAgentError for ContainerError {
    fn code(&self) -> ErrorCode {
        use ContainerError as E;
        match self {
            E::Exists(_) => ErrorCode::AlreadyExists,
            E::InvalidId(_)
            | E::RootfsMissing(_)
            | E::MountSourceMissing { .. }
            | E::InvalidMount { .. }
            | E::NulByte { .. }
            | E::NoProgram
            | E::RelativeCwd(_)
            | E::UnknownCapability(_)
            | E::UnknownRlimit(_)
            | E::RlimitSoftAboveHard(_)
            | E::InvalidResource { .. }
            | E::ControllerUnavailable(..)
            | E::Seccomp(_) => ErrorCode::InvalidArgument,
            E::MainProcessGone { .. } => ErrorCode::WrongState,
            _ => ErrorCode::System,
        }
    }
}

#[derive(Debug)]
struct Entry {
    container: Arc<Container>,
    process: ProcessSpec,
    state: State,
    main: Option<Arc<Process>>,
    exit_code: Option<i32>,
    oom_kills: u64,
}

/// The containers of the pod, by id.
#[derive(Debug, Default)]
pub(super) struct Containers {
    map: Mutex<HashMap<String, Entry>>,
    creating: Mutex<HashSet<String>>,
}

impl Containers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().expect("container map lock poisoned")
    }

    /// How many containers exist.
    pub(super) fn count(&self) -> usize {
        self.lock().len()
    }
}

/// Runs a blocking container operation off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ContainerError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| fail(ErrorCode::Internal, format!("container task failed: {e}")))?
        .map_err(wire)
}

fn kill_all(container: &Container, signal: Signal) -> Result<(), AgentError> {
    for pid in container.pids().map_err(wire)? {
        match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pid, "cannot send {signal}: {e}"),
        }
    }
    Ok(())
}

/// The parent of `pid`, from `/proc/<pid>/stat`; `None` once it is gone.
fn parent_pid(pid: i32) -> Option<i32> {
    parse_parent(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The fourth field of a `/proc/<pid>/stat` line. The second, the command in
/// parentheses, may itself hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_parent(stat: &str) -> Option<i32> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Agent {
    fn container(&self, id: &str) -> Result<Arc<Container>, AgentError> {
        self.containers
            .lock()
            .get(id)
            .map(|e| Arc::clone(&e.container))
            .ok_or_else(|| not_found(id))
    }

    pub(super) async fn create_container(
        self: &Arc<Self>,
        spec: ContainerSpec,
        seccomp: Seccomp,
    ) -> Result<Response, AgentError> {
        let id = spec.id.clone();
        {
            let map = self.containers.lock();
            let mut creating = self.containers.creating.lock().expect("lock poisoned");
            if map.contains_key(&id) || !creating.insert(id.clone()) {
                return Err(fail(
                    ErrorCode::AlreadyExists,
                    format!("container `{id}` exists already"),
                ));
            }
        }
        let process = spec.process.clone();
        let paths = self.options.containers.clone();
        let created = blocking(move || Container::create_with(&spec, &seccomp, &paths)).await;
        self.containers
            .creating
            .lock()
            .expect("lock poisoned")
            .remove(&id);
        let container = created?;
        tracing::info!(container_id = %id, "container created");
        self.containers.lock().insert(
            id,
            Entry {
                container: Arc::new(container),
                process,
                state: State::Created,
                main: None,
                exit_code: None,
                oom_kills: 0,
            },
        );
        Ok(Response::Ok)
    }

    pub(super) async fn start_container(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Response, AgentError> {
        let (plan, spec) = {
            let mut map = self.containers.lock();
            let entry = map.get_mut(id).ok_or_else(|| not_found(id))?;
            if entry.state != State::Created {
                return Err(wrong_state(id, "start", entry.state, "created"));
            }
            let plan = entry
                .container
                .launch_plan(&entry.process, LaunchKind::Main)
                .map_err(wire)?;
            entry.state = State::Starting;
            (plan, entry.process.clone())
        };
        let key = ProcessRef {
            container_id: id.to_owned(),
            exec_id: None,
        };
        let program = spec.args.first().cloned().unwrap_or_default();
        let spawned = self
            .processes
            .spawn(
                key,
                Box::new(plan),
                spec.terminal,
                crate::process::DirectOutput::default(),
                program,
            )
            .await;
        let mut map = self.containers.lock();
        let entry = map.get_mut(id).ok_or_else(|| not_found(id))?;
        let process = match spawned {
            Ok(process) => process,
            Err(e) => {
                entry.state = State::Created;
                return Err(wire(e));
            }
        };
        let pid = process.pid().as_raw() as u32;
        entry.state = State::Running;
        entry.main = Some(Arc::clone(&process));
        drop(map);
        tracing::info!(container_id = %id, pid, "container started");
        self.watch_exit(Arc::clone(&process));
        self.watch_oom(id.to_owned(), process);
        Ok(Response::Pid(pid))
    }

    /// Records the exit of a container's main process (from its exit watcher,
    /// or from a stop that saw it first).
    pub(super) fn main_exited(&self, id: &str, code: i32) {
        let mut map = self.containers.lock();
        if let Some(entry) = map.get_mut(id) {
            if entry.state != State::Stopped {
                tracing::info!(container_id = %id, code, "container stopped");
            }
            entry.state = State::Stopped;
            entry.exit_code = Some(code);
        }
    }

    /// Reads a container's OOM-kill counter while it runs, and queues an `Oom`
    /// event each time it grows.
    fn watch_oom(self: &Arc<Self>, id: String, main: Arc<Process>) {
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let exited = tokio::select! {
                    _ = main.wait() => true,
                    () = tokio::time::sleep(OOM_POLL) => false,
                };
                if agent.check_oom(&id) || exited {
                    break;
                }
            }
        });
    }

    /// Compares the OOM counter with the last seen value; true when the
    /// container is gone.
    fn check_oom(&self, id: &str) -> bool {
        let Ok(container) = self.container(id) else {
            return true;
        };
        let Ok(kills) = container.oom_kills() else {
            return false;
        };
        let mut map = self.containers.lock();
        let Some(entry) = map.get_mut(id) else {
            return true;
        };
        if kills > entry.oom_kills {
            entry.oom_kills = kills;
            drop(map);
            tracing::warn!(container_id = %id, kills, "OOM kill in container");
            self.event_sink().oom(id);
        }
        false
    }

    pub(super) async fn stop_container(
        self: &Arc<Self>,
        id: &str,
        grace: Duration,
    ) -> Result<Response, AgentError> {
        let (container, main, signal_now, was_paused) = {
            let mut map = self.containers.lock();
            let entry = map.get_mut(id).ok_or_else(|| not_found(id))?;
            match entry.state {
                State::Stopped => {
                    let code = entry.exit_code.unwrap_or(vc_proto::EXIT_CODE_VM_GONE);
                    return Ok(Response::Exited(code));
                }
                State::Running | State::Paused | State::Stopping => {}
                other => return Err(wrong_state(id, "stop", other, "running or paused")),
            }
            let signal_now = entry.state != State::Stopping;
            let was_paused = entry.state == State::Paused;
            entry.state = State::Stopping;
            let main = entry.main.clone().ok_or_else(|| {
                fail(
                    ErrorCode::Internal,
                    format!("container `{id}` runs without a main process"),
                )
            })?;
            (Arc::clone(&entry.container), main, signal_now, was_paused)
        };
        if signal_now {
            tracing::info!(container_id = %id, grace_ms = grace.as_millis() as u64, "stopping container");
            let c = Arc::clone(&container);
            blocking(move || {
                if was_paused {
                    c.freeze(false)?;
                }
                Ok(())
            })
            .await?;
            kill_all(&container, Signal::SIGTERM)?;
        }
        let code = match tokio::time::timeout(grace, main.wait()).await {
            Ok(code) => code,
            Err(_) => {
                tracing::info!(container_id = %id, "grace period over: SIGKILL");
                kill_all(&container, Signal::SIGKILL)?;
                tokio::time::timeout(KILL_WAIT, main.wait())
                    .await
                    .map_err(|_| {
                        fail(
                            ErrorCode::System,
                            format!(
                                "the main process of container `{id}` did not exit within {KILL_WAIT:?} of SIGKILL"
                            ),
                        )
                    })?
            }
        };
        self.main_exited(id, code);
        Ok(Response::Exited(code))
    }

    pub(super) async fn remove_container(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Response, AgentError> {
        let entry = {
            let mut map = self.containers.lock();
            let entry = map.get(id).ok_or_else(|| not_found(id))?;
            if !matches!(entry.state, State::Created | State::Stopped) {
                return Err(wrong_state(id, "remove", entry.state, "created or stopped"));
            }
            map.remove(id).ok_or_else(|| not_found(id))?
        };
        self.processes.remove_container(id);
        // Other requests may hold the container for a moment (stats, oom
        // checks); they never keep it long.
        let mut container = entry.container;
        let container = loop {
            match Arc::try_unwrap(container) {
                Ok(owned) => break owned,
                Err(shared) => {
                    container = shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        blocking(move || container.destroy()).await?;
        tracing::info!(container_id = %id, "container removed");
        Ok(Response::Ok)
    }

    pub(super) async fn pause(
        self: &Arc<Self>,
        id: &str,
        freeze: bool,
    ) -> Result<Response, AgentError> {
        let (from, to, action) = if freeze {
            (State::Running, State::Paused, "pause")
        } else {
            (State::Paused, State::Running, "resume")
        };
        let container = {
            let mut map = self.containers.lock();
            let entry = map.get_mut(id).ok_or_else(|| not_found(id))?;
            if entry.state != from {
                return Err(wrong_state(id, action, entry.state, from.name()));
            }
            // Take the new state now, so that a concurrent pause is refused;
            // it is put back if the freeze fails.
            entry.state = to;
            Arc::clone(&entry.container)
        };
        if let Err(e) = blocking(move || container.freeze(freeze)).await {
            if let Some(entry) = self.containers.lock().get_mut(id) {
                if entry.state == to {
                    entry.state = from;
                }
            }
            return Err(e);
        }
        tracing::info!(container_id = %id, "container {}", to.name());
        Ok(Response::Ok)
    }

    pub(super) fn container_state(self: &Arc<Self>, id: &str) -> Result<Response, AgentError> {
        let (container, status) = {
            let map = self.containers.lock();
            let entry = map.get(id).ok_or_else(|| not_found(id))?;
            let status = ContainerStatus {
                id: id.to_owned(),
                state: entry.state.public(),
                pid: entry.main.as_ref().map(|p| p.pid().as_raw() as u32),
                exit_code: entry.exit_code,
                oom_killed: entry.oom_kills > 0,
            };
            (Arc::clone(&entry.container), status)
        };
        let oom_killed = status.oom_killed || container.oom_kills().is_ok_and(|n| n > 0);
        Ok(Response::ContainerStatus(ContainerStatus {
            oom_killed,
            ..status
        }))
    }

    pub(super) async fn update_resources(
        self: &Arc<Self>,
        id: &str,
        resources: Resources,
    ) -> Result<Response, AgentError> {
        let container = {
            let map = self.containers.lock();
            let entry = map.get(id).ok_or_else(|| not_found(id))?;
            if entry.state == State::Stopped {
                return Err(wrong_state(
                    id,
                    "update",
                    entry.state,
                    "created, running or paused",
                ));
            }
            Arc::clone(&entry.container)
        };
        blocking(move || container.update(&resources)).await?;
        Ok(Response::Ok)
    }

    pub(super) async fn stats(self: &Arc<Self>, id: &str) -> Result<Response, AgentError> {
        let container = self.container(id)?;
        let stats = blocking(move || container.stats()).await?;
        Ok(Response::Stats(stats))
    }

    /// Every process of the container's cgroup, ascending, at most
    /// [`vc_proto::MAX_CONTAINER_PIDS`] (the lowest ones past that).
    ///
    /// An exec runs through a relay (see `container::child::relay`) whose pid
    /// is the one the host knows; the real process it forked stands behind it
    /// and is left out, so that each exec counts once, under its known pid.
    pub(super) async fn container_pids(self: &Arc<Self>, id: &str) -> Result<Response, AgentError> {
        let container = self.container(id)?;
        let relays: HashSet<i32> = self
            .processes
            .running()
            .iter()
            .filter(|p| p.key().container_id == id && p.key().exec_id.is_some())
            .map(|p| p.pid().as_raw())
            .collect();
        let mut pids: Vec<u32> = blocking(move || container.pids())
            .await?
            .into_iter()
            .filter(|&pid| !parent_pid(pid).is_some_and(|parent| relays.contains(&parent)))
            .filter_map(|p| u32::try_from(p).ok())
            .collect();
        pids.sort_unstable();
        if pids.len() > vc_proto::MAX_CONTAINER_PIDS {
            tracing::warn!(
                container = id,
                processes = pids.len(),
                "more processes than a pids reply carries; answering with the lowest"
            );
            pids.truncate(vc_proto::MAX_CONTAINER_PIDS);
        }
        Ok(Response::Pids(pids))
    }

    /// The launch plan of an exec in a running container.
    pub(super) fn exec_plan(
        &self,
        id: &str,
        spec: &ProcessSpec,
    ) -> Result<Box<dyn Launch>, AgentError> {
        let map = self.containers.lock();
        let entry = map.get(id).ok_or_else(|| not_found(id))?;
        if entry.state != State::Running {
            return Err(wrong_state(id, "exec in", entry.state, "running"));
        }
        let main_pid = entry
            .main
            .as_ref()
            .map(|p| p.pid().as_raw())
            .ok_or_else(|| {
                fail(
                    ErrorCode::Internal,
                    "running container without a main process",
                )
            })?;
        let plan = entry
            .container
            .launch_plan(spec, LaunchKind::Exec { main_pid })
            .map_err(wire)?;
        Ok(Box::new(plan))
    }

    /// Sends `signal` to every process of a container.
    pub(super) fn signal_container(&self, id: &str, signal: Signal) -> Result<(), AgentError> {
        let container = self.container(id)?;
        kill_all(&container, signal)
    }

    /// Stops every running or paused container, all at once.
    pub(super) async fn stop_all_containers(self: &Arc<Self>, grace: Duration) {
        let ids: Vec<String> = self
            .containers
            .lock()
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Running | State::Paused | State::Stopping))
            .map(|(id, _)| id.clone())
            .collect();
        let stops = ids.iter().map(|id| self.stop_container(id, grace));
        for (id, result) in ids.iter().zip(futures::future::join_all(stops).await) {
            if let Response::Error(e) = result.unwrap_or_else(Response::Error) {
                tracing::warn!(container_id = %id, "stop failed: {}", e.message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parent_pid, parse_parent};

    #[test]
    fn the_parent_is_read_past_a_command_with_spaces_and_parentheses() {
        assert_eq!(parse_parent("42 (sleep) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parse_parent("42 (a ) b (c)) R 9 1 1 0"), Some(9));
        assert_eq!(parse_parent("42 (truncated"), None);
        assert_eq!(parse_parent(""), None);
    }

    #[test]
    fn the_parent_of_this_process_is_the_one_the_kernel_reports() {
        let me = i32::try_from(std::process::id()).expect("pid fits i32");
        assert_eq!(
            parent_pid(me),
            Some(nix::unistd::getppid().as_raw()),
            "parent of {me}"
        );
    }
}
