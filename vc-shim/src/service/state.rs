//! What the shim remembers about its tasks and their processes: status,
//! pid, stdio paths, exit, and the handles that reach the running process.
//! The pod's own state lives in vc's state store; this is containerd's view.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{watch, Notify};
use vc_host::agent::AgentClient;
use vc_host::id::ContainerId;
use vc_host::runtime::ProcessConfig;
use vc_proto::ProcessRef;

/// Locks a std mutex; a poisoned one (a panic while held) still holds
/// consistent plain data here, so it is used as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// containerd's stdio for one process: fifo paths (any may be empty) or a
/// terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    /// stdin fifo.
    pub stdin: String,
    /// stdout fifo (the terminal's output with `terminal`).
    pub stdout: String,
    /// stderr fifo (unused with `terminal`).
    pub stderr: String,
    /// A pseudo-terminal.
    pub terminal: bool,
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, not started.
    Created,
    /// Started.
    Running,
    /// Exited (the exit is recorded).
    Stopped,
}

/// A process's exit, as containerd gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit status, 128 + signal, or 255 when the VM went away.
    pub code: u32,
    /// When it was recorded.
    pub at: SystemTime,
}

/// The live part of a started process (its streams belong to the I/O
/// pumps).
#[derive(Debug)]
pub struct Running {
    /// The pod's agent connection: wait, resize.
    pub agent: AgentClient,
    /// The process as the agent knows it.
    pub reference: ProcessRef,
    /// Tells the stdin pump to drain and close (CloseIO).
    pub close_stdin: Arc<Notify>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    pid: u32,
    running: Option<Arc<Running>>,
}

/// One process of a task: its init (main) process or an exec.
#[derive(Debug)]
pub struct Proc {
    /// The exec id; empty for the init process.
    pub exec_id: String,
    /// The process as the agent knows it.
    pub reference: ProcessRef,
    /// containerd's stdio.
    pub stdio: Stdio,
    /// What to run (execs only; the init process is the container's).
    pub config: Option<ProcessConfig>,
    inner: Mutex<Inner>,
    exit: watch::Sender<Option<Exit>>,
}

impl Proc {
    /// A created process.
    pub fn new(
        exec_id: String,
        reference: ProcessRef,
        stdio: Stdio,
        config: Option<ProcessConfig>,
    ) -> Self {
        Proc {
            exec_id,
            reference,
            stdio,
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Created,
                pid: 0,
                running: None,
            }),
            exit: watch::channel(None).0,
        }
    }

    /// Its phase.
    pub fn phase(&self) -> Phase {
        lock(&self.inner).phase
    }

    /// Its pid in the guest (0 before it starts).
    pub fn pid(&self) -> u32 {
        lock(&self.inner).pid
    }

    /// The live handles, while it runs.
    pub fn running(&self) -> Option<Arc<Running>> {
        lock(&self.inner).running.clone()
    }

    /// Records the start. False when it already exited or started.
    pub fn set_running(&self, pid: u32, running: Arc<Running>) -> bool {
        let mut inner = lock(&self.inner);
        if inner.phase != Phase::Created {
            return false;
        }
        inner.phase = Phase::Running;
        inner.pid = pid;
        inner.running = Some(running);
        true
    }

    /// Records the exit once and wakes every waiter; `None` when an exit
    /// was already recorded (the first one stands).
    pub fn set_exited(&self, code: u32) -> Option<Exit> {
        let mut inner = lock(&self.inner);
        if inner.phase == Phase::Stopped {
            return None;
        }
        inner.phase = Phase::Stopped;
        inner.running = None;
        let exit = Exit {
            code,
            at: SystemTime::now(),
        };
        self.exit.send_replace(Some(exit));
        Some(exit)
    }

    /// The exit, once recorded.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Waits for the exit to be recorded.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in
                // practice, and 255 is what a lost process reports.
                return Exit {
                    code: vc_proto::EXIT_CODE_VM_GONE as u32,
                    at: SystemTime::now(),
                };
            }
        }
    }
}

/// One containerd task: a vc container and its processes.
#[derive(Debug)]
pub struct Task {
    /// containerd's id.
    pub id: String,
    /// vc's id.
    pub container: ContainerId,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Whether the shim mounted `<bundle>/rootfs` (and must unmount it).
    pub mounted: bool,
    /// Whether this task made the pod (a sandbox or a plain container).
    pub owns_pod: bool,
    /// The main process.
    pub init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    paused: AtomicBool,
}

impl Task {
    /// A created task.
    pub fn new(
        id: String,
        container: ContainerId,
        bundle: PathBuf,
        mounted: bool,
        owns_pod: bool,
        init: Proc,
    ) -> Self {
        Task {
            id,
            container,
            bundle,
            mounted,
            owns_pod,
            init: Arc::new(init),
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
        }
    }

    /// The init process for an empty exec id, else that exec.
    pub fn process(&self, exec_id: &str) -> Option<Arc<Proc>> {
        if exec_id.is_empty() {
            Some(self.init.clone())
        } else {
            lock(&self.execs).get(exec_id).cloned()
        }
    }

    /// Adds an exec; false when the id is taken.
    pub fn add_exec(&self, proc: Proc) -> bool {
        let mut execs = lock(&self.execs);
        if execs.contains_key(&proc.exec_id) {
            return false;
        }
        execs.insert(proc.exec_id.clone(), Arc::new(proc));
        true
    }

    /// Removes an exec.
    pub fn remove_exec(&self, exec_id: &str) -> Option<Arc<Proc>> {
        lock(&self.execs).remove(exec_id)
    }

    /// Every process: init first.
    pub fn processes(&self) -> Vec<Arc<Proc>> {
        let mut all = vec![self.init.clone()];
        all.extend(lock(&self.execs).values().cloned());
        all
    }

    /// Whether the container is paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Records a pause or resume.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc() -> Proc {
        Proc::new(
            String::new(),
            ProcessRef {
                container_id: "c".into(),
                exec_id: None,
            },
            Stdio::default(),
            None,
        )
    }

    #[tokio::test]
    async fn the_first_exit_stands_and_wakes_waiters() {
        let p = Arc::new(proc());
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait().await }
        });
        assert_eq!(p.phase(), Phase::Created);
        let first = p.set_exited(3).expect("first exit");
        assert!(p.set_exited(255).is_none(), "second exit ignored");
        assert_eq!(waiter.await.expect("joins"), first);
        assert_eq!(p.exit().map(|e| e.code), Some(3));
        assert_eq!(p.phase(), Phase::Stopped);
    }

    #[test]
    fn exec_ids_are_unique_per_task() {
        let t = Task::new(
            "t".into(),
            "t".parse().expect("id"),
            "/b".into(),
            false,
            true,
            proc(),
        );
        let exec = |id: &str| {
            Proc::new(
                id.into(),
                ProcessRef {
                    container_id: "t".into(),
                    exec_id: Some(id.into()),
                },
                Stdio::default(),
                None,
            )
        };
        assert!(t.add_exec(exec("e1")));
        assert!(!t.add_exec(exec("e1")));
        assert_eq!(t.processes().len(), 2);
        assert!(t.process("").is_some());
        assert!(t.process("e1").is_some());
        assert!(t.remove_exec("e1").is_some());
        assert!(t.process("e1").is_none());
    }
}
