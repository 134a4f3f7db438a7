//! Processes the agent starts: spawning ([`spawn`]), stdio ([`stdio`]), reaping
//! ([`reaper`]) and the table of processes by [`ProcessRef`].
//!
//! [`ProcessTable`] owns two maps: the live pids (shared with the reaper, see
//! [`reaper::LiveTable`]) and the processes by reference (container id and exec
//! id), which outlive their exit so that a late `Wait` still gets the code (and
//! a late attach the output left in the pipe). A container's main process stays
//! until the container is removed; exec'd processes (in a container or not) are
//! forgotten, oldest first, once more than [`EXITED_EXECS_KEPT`] of them have
//! exited, which bounds the memory and descriptors they hold.

pub mod launch;
pub mod parked;
pub mod reaper;
pub mod spawn;
pub mod stdio;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::watch;
use vc_proto::{ProcessRef, StreamKind};

pub use launch::{ChildFailure, FailureKind, Launch};
pub use parked::{ParkError, ParkedStreams};
pub use reaper::{LiveTable, ReapMode};
pub use spawn::SpawnError;
pub use stdio::{DirectOutput, ParentStdio, StdioError, StreamEnd};

/// Exited exec'd processes that are remembered for `Wait` and late attaches.
pub const EXITED_EXECS_KEPT: usize = 256;

/// One process the agent started.
#[derive(Debug)]
pub struct Process {
    key: ProcessRef,
    pid: Pid,
    exit: watch::Receiver<Option<i32>>,
    stdio: ParentStdio,
    live: Arc<LiveTable>,
}

impl Process {
    /// Its reference (container and exec id).
    pub fn key(&self) -> &ProcessRef {
        &self.key
    }

    /// Its pid in the agent's PID namespace.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Its exit code, once it has exited.
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Waits for the exit code.
    pub async fn wait(&self) -> i32 {
        let mut exit = self.exit.clone();
        let code = exit.wait_for(Option::is_some).await.map(|code| *code);
        // Without a code the sender went away: the table was dropped.
        code.ok().flatten().unwrap_or(vc_proto::EXIT_CODE_VM_GONE)
    }

    /// Sends `signal` unless the process has already been reaped (then it is
    /// not an error). Checked under the reaper's lock, so the pid cannot have
    /// been reused by another process.
    pub fn signal(&self, signal: Signal) -> Result<(), Errno> {
        let pids = self.live.lock();
        if !LiveTable::is_live(&pids, self.pid.as_raw()) {
            return Ok(());
        }
        match nix::sys::signal::kill(self.pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Its stdio ends.
    pub fn stdio(&self) -> &ParentStdio {
        &self.stdio
    }

    /// Hands out one of its streams (once per stream).
    pub fn take_stream(&self, kind: StreamKind) -> Result<StreamEnd, StdioError> {
        self.stdio.take(kind)
    }
}

/// Why a process could not be registered or found.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A process with this reference exists (or is being started).
    #[error("process {0} already exists")]
    AlreadyExists(Display),
    /// No process with this reference.
    #[error("no process {0}")]
    NotFound(Display),
    /// Starting it failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The blocking spawn task failed.
    #[error("the spawn task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// A [`ProcessRef`] formatted for messages: `container/exec`, `container`
/// (main process), or `exec` (outside any container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Display(pub ProcessRef);

impl std::fmt::Display for Display {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.0.container_id[..], &self.0.exec_id) {
            ("", Some(exec)) => write!(f, "`{exec}` (outside any container)"),
            ("", None) => write!(f, "(unnamed, outside any container)"),
            (container, Some(exec)) => write!(f, "`{exec}` of container `{container}`"),
            (container, None) => write!(f, "main process of container `{container}`"),
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    processes: HashMap<ProcessRef, Arc<Process>>,
    starting: HashSet<ProcessRef>,
    /// Exec'd processes, oldest first.
    exec_order: VecDeque<ProcessRef>,
}

/// Every process the agent started, by reference.
#[derive(Debug)]
pub struct ProcessTable {
    live: Arc<LiveTable>,
    registry: Mutex<Registry>,
}

impl ProcessTable {
    /// An empty table whose reaper waits for children as `mode` says. Call
    /// [`start_reaper`](Self::start_reaper) from a runtime before spawning.
    pub fn new(mode: ReapMode) -> Self {
        Self {
            live: LiveTable::new(mode),
            registry: Mutex::new(Registry::default()),
        }
    }

    /// Starts the SIGCHLD-driven reaper on the current runtime.
    pub fn start_reaper(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        self.live.start_reaper()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .expect("process registry lock poisoned")
    }

    /// Starts a process under `key` and registers it, its stdout and stderr
    /// on the sockets of `direct` where given. `program` names it in errors.
    /// Fails at once when the program cannot be executed.
    pub async fn spawn(
        &self,
        key: ProcessRef,
        launch: Box<dyn Launch>,
        terminal: bool,
        direct: DirectOutput,
        program: String,
    ) -> Result<Arc<Process>, ProcessError> {
        {
            let mut registry = self.registry();
            if registry.processes.contains_key(&key) || !registry.starting.insert(key.clone()) {
                return Err(ProcessError::AlreadyExists(Display(key)));
            }
        }
        let live = Arc::clone(&self.live);
        let spawned = tokio::task::spawn_blocking(move || {
            spawn::spawn(&live, launch.as_ref(), terminal, direct, &program)
        })
        .await;
        let mut registry = self.registry();
        registry.starting.remove(&key);
        let spawned = spawned.map_err(ProcessError::Join)??;
        let process = Arc::new(Process {
            key: key.clone(),
            pid: spawned.pid,
            exit: spawned.exit,
            stdio: spawned.stdio,
            live: Arc::clone(&self.live),
        });
        if key.exec_id.is_some() {
            registry.exec_order.push_back(key.clone());
            Self::forget_old_execs(&mut registry);
        }
        registry.processes.insert(key, Arc::clone(&process));
        Ok(process)
    }

    fn forget_old_execs(registry: &mut Registry) {
        let Registry {
            processes,
            exec_order,
            ..
        } = registry;
        exec_order.retain(|key| processes.contains_key(key));
        let exited = |key: &ProcessRef| processes.get(key).is_some_and(|p| p.exit_code().is_some());
        let mut excess = exec_order
            .iter()
            .filter(|k| exited(k))
            .count()
            .saturating_sub(EXITED_EXECS_KEPT);
        let mut forget = Vec::new();
        exec_order.retain(|key| {
            if excess > 0 && exited(key) {
                excess -= 1;
                forget.push(key.clone());
                false
            } else {
                true
            }
        });
        for key in forget {
            processes.remove(&key);
        }
    }

    /// The process registered under `key`.
    pub fn get(&self, key: &ProcessRef) -> Result<Arc<Process>, ProcessError> {
        self.registry()
            .processes
            .get(key)
            .cloned()
            .ok_or_else(|| ProcessError::NotFound(Display(key.clone())))
    }

    /// Forgets every process of a container (when it is removed).
    pub fn remove_container(&self, container_id: &str) {
        self.registry()
            .processes
            .retain(|key, _| key.container_id != container_id);
    }

    /// Every registered process that has not exited.
    pub fn running(&self) -> Vec<Arc<Process>> {
        self.registry()
            .processes
            .values()
            .filter(|p| p.exit_code().is_none())
            .cloned()
            .collect()
    }
}
