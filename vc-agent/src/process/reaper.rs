//! The reaper: collects the exit status of children on SIGCHLD.
//!
//! [`LiveTable`] maps the pids the agent started (and that have not been reaped)
//! to the channel their exit code goes to. The spawner and the reaper share its
//! lock: the spawner holds it across fork and insert, the reaper holds it around
//! each `waitpid`, so a child that exits at once is never reaped before it is
//! registered.
//!
//! As PID 1 ([`ReapMode::All`]) every child is reaped with `waitpid(-1)`:
//! orphans re-parented to init are collected and logged at debug. As a normal
//! process ([`ReapMode::Own`], tests) only the agent's own pids are waited for, so
//! that the agent never steals the status of a child some other code in the same
//! process waits for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Which children the reaper waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapMode {
    /// Every child (PID 1).
    All,
    /// Only pids in the table (a normal process).
    Own,
}

/// A started process that has not been reaped yet.
#[derive(Debug)]
pub(crate) struct LiveEntry {
    /// Where the exit code goes.
    pub exit: watch::Sender<Option<i32>>,
}

/// The live pids and the lock shared by the spawner and the reaper.
#[derive(Debug)]
pub struct LiveTable {
    pids: Mutex<HashMap<i32, LiveEntry>>,
    mode: ReapMode,
}

/// The exit code of a wait status: the status, or 128 + signal.
pub fn exit_code(status: WaitStatus) -> Option<(Pid, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, signal, _core) => {
            Some((pid, vc_proto::signal_exit_code(signal as i32)))
        }
        _ => None,
    }
}

impl LiveTable {
    /// An empty table.
    pub fn new(mode: ReapMode) -> Arc<Self> {
        Arc::new(Self {
            pids: Mutex::new(HashMap::new()),
            mode,
        })
    }

    /// Takes the spawner/reaper lock.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<i32, LiveEntry>> {
        self.pids.lock().expect("live table lock poisoned")
    }

    /// Whether `pid` was started by the agent and not reaped yet. Call with the
    /// lock held (through [`lock`](Self::lock)) to act on the answer safely.
    pub(crate) fn is_live(pids: &HashMap<i32, LiveEntry>, pid: i32) -> bool {
        pids.contains_key(&pid)
    }

    fn deliver(pids: &mut HashMap<i32, LiveEntry>, pid: Pid, code: i32) {
        match pids.remove(&pid.as_raw()) {
            Some(entry) => {
                tracing::debug!(pid = pid.as_raw(), code, "child reaped");
                entry.exit.send_replace(Some(code));
            }
            None => tracing::debug!(pid = pid.as_raw(), code, "orphan reaped"),
        }
    }

    /// Reaps every child that has exited, without blocking.
    pub fn reap(&self) {
        match self.mode {
            ReapMode::All => loop {
                let mut pids = self.lock();
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(status) => {
                        if let Some((pid, code)) = exit_code(status) {
                            Self::deliver(&mut pids, pid, code);
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!("waitpid failed: {e}");
                        break;
                    }
                }
            },
            ReapMode::Own => {
                let mut pids = self.lock();
                let mine: Vec<i32> = pids.keys().copied().collect();
                for pid in mine {
                    let pid = Pid::from_raw(pid);
                    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                        Ok(status) => {
                            if let Some((pid, code)) = exit_code(status) {
                                Self::deliver(&mut pids, pid, code);
                            }
                        }
                        Err(Errno::ECHILD) => {
                            // Someone else reaped it: its code is lost.
                            tracing::warn!(pid = pid.as_raw(), "child reaped elsewhere");
                            Self::deliver(&mut pids, pid, vc_proto::EXIT_CODE_VM_GONE);
                        }
                        Err(e) => tracing::warn!(pid = pid.as_raw(), "waitpid failed: {e}"),
                    }
                }
            }
        }
    }

    /// Starts the reaper task on the current runtime: it reaps on every SIGCHLD.
    /// The SIGCHLD handler is installed before this returns, so no exit of a
    /// child spawned afterwards can be missed.
    pub fn start_reaper(self: &Arc<Self>) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut sigchld = signal(SignalKind::child())?;
        let table = Arc::clone(self);
        Ok(tokio::spawn(async move {
            loop {
                table.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        }))
    }
}
