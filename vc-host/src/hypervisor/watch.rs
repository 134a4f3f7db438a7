//! Supervision of a VM's processes without a daemon: pidfds on QEMU and on
//! every helper (`vc-console-log`, `vhost-device-vsock`, `virtiofsd`).
//!
//! A [`HelperWatch`] is opened from a [`VmRecord`] by whoever touches the VM
//! (any process: the record names each process by pid *and* start time, and
//! each pidfd is opened before the start time is checked, so it names that
//! process and no later one with the same pid). A pidfd becomes readable when
//! its process exits, so [`HelperWatch::died`] resolves at once when any of
//! them dies, and [`HelperWatch::check`] tells without waiting.
//!
//! How a helper ended is known only to its parent: the process that launched
//! the VM reaps it (by `waitid(P_PIDFD)` here, or by the liveness checks of
//! [`ProcessRecord`], which remember what they reaped). Any other process
//! reports [`HelperExit::Gone`].

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::process::ProcessRecord;
use super::vm::VmRecord;

/// How a helper process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelperExit {
    /// It exited with this code.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
    /// It is gone, and how is unknown: this process is not its parent.
    Gone,
}

impl fmt::Display for HelperExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HelperExit::Code(code) => write!(f, "exited with code {code}"),
            HelperExit::Signal(signal) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(name) => write!(f, "was killed by {name}"),
                Err(_) => write!(f, "was killed by signal {signal}"),
            },
            HelperExit::Gone => {
                f.write_str("is gone (how it ended is unknown: this process is not its parent)")
            }
        }
    }
}

/// A process of a VM that died: which one and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperDeath {
    /// The VM's name (the pod id, for pods).
    pub vm: Option<String>,
    /// `qemu`, `virtiofsd`, `vhost-device-vsock` or `vc-console-log`.
    pub helper: String,
    /// Its pid.
    pub pid: i32,
    /// How it ended.
    pub exit: HelperExit,
}

impl fmt::Display for HelperDeath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {}) {}", self.helper, self.pid, self.exit)
    }
}

/// Exit statuses this process reaped, so that whoever notices a death later
/// (another watch, a status call) can still tell how it ended.
static ENDED: Mutex<Vec<(ProcessRecord, HelperExit)>> = Mutex::new(Vec::new());

/// How many reaped statuses are remembered (the oldest go first).
const ENDED_KEEP: usize = 256;

/// Remembers how a process this process reaped ended.
pub(crate) fn remember_exit(process: ProcessRecord, exit: HelperExit) {
    let mut ended = ENDED.lock().unwrap_or_else(PoisonError::into_inner);
    if ended.len() >= ENDED_KEEP {
        ended.remove(0);
    }
    ended.push((process, exit));
}

fn remembered_exit(process: &ProcessRecord) -> Option<HelperExit> {
    let ended = ENDED.lock().unwrap_or_else(PoisonError::into_inner);
    ended
        .iter()
        .rev()
        .find(|(p, _)| p == process)
        .map(|(_, exit)| *exit)
}

/// One watched process.
#[derive(Debug)]
struct Watched {
    name: &'static str,
    process: ProcessRecord,
    /// `None` when it was already gone when the watch was opened.
    pidfd: Option<OwnedFd>,
}

impl Watched {
    /// Dead: its pidfd is readable, or its main thread has exited (a
    /// multi-threaded process such as QEMU is a zombie leader for a moment
    /// before the whole group is gone and the pidfd turns readable).
    fn is_dead(&self) -> bool {
        match &self.pidfd {
            None => true,
            Some(fd) => pidfd_readable(fd) || !self.process.is_alive(),
        }
    }

    /// How it ended; reaps it when it is our child.
    fn exit(&self) -> HelperExit {
        if let Some(fd) = &self.pidfd {
            // Our child, but its other threads are still exiting: wait for
            // the group to be reapable (bounded).
            let until = std::time::Instant::now() + REAP_SETTLE;
            loop {
                match reap(fd) {
                    Reap::Ended(exit) => {
                        remember_exit(self.process, exit);
                        return exit;
                    }
                    Reap::NotYet if std::time::Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Reap::NotYet | Reap::NotOurs => break,
                }
            }
        }
        // Reaped by a liveness check of this process, perhaps; `is_alive`
        // reaps a zombie child of ours and remembers how it ended (another
        // thread may be between its `waitpid` and remembering: give it a
        // moment).
        let _ = self.process.is_alive();
        for _ in 0..REMEMBER_TRIES {
            if let Some(exit) = remembered_exit(&self.process) {
                return exit;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        HelperExit::Gone
    }

    /// Which death to report when several processes are dead: one killed by
    /// a signal first (the others usually exited because of it), then QEMU
    /// (helpers exit when it disconnects), then the vhost-user daemons, then
    /// the console logger (it exits when QEMU closes the console).
    fn rank(&self, exit: HelperExit) -> u8 {
        let signalled = matches!(exit, HelperExit::Signal(_));
        let kind = match self.name {
            QEMU => 0,
            super::tools::CONSOLE_LOG => 2,
            _ => 1,
        };
        if signalled {
            kind
        } else {
            3 + kind
        }
    }
}

/// How many times (1 ms apart) an exit status reaped by another thread is
/// looked for before the helper is reported [`HelperExit::Gone`].
const REMEMBER_TRIES: u32 = 3;

/// How long a dead child of ours gets to become reapable (its other threads
/// exiting) before its exit status is given up on.
const REAP_SETTLE: Duration = Duration::from_secs(1);

/// How long a helper's death that may follow QEMU's waits for QEMU's to show
/// (see [`HelperWatch::check`]).
const QEMU_SETTLE: Duration = Duration::from_millis(150);

/// How often [`HelperWatch::died`] polls when it has no pidfd to wait on.
const FALLBACK_POLL: Duration = Duration::from_millis(100);

/// The name QEMU goes by in [`HelperDeath::helper`].
pub const QEMU: &str = "qemu";

/// Pidfds on every process of a VM. [`HelperWatch::died`] needs a Tokio
/// runtime; the rest works anywhere.
#[derive(Debug)]
pub struct HelperWatch {
    vm: Option<String>,
    watched: Vec<Watched>,
    /// The first death reported, reported again afterwards.
    first: Mutex<Option<HelperDeath>>,
}

impl HelperWatch {
    /// Watches QEMU and every daemon of `record`.
    pub fn open(record: &VmRecord) -> Self {
        let processes = std::iter::once((QEMU, record.qemu))
            .chain(record.daemons.iter().map(|d| (d.kind.name(), d.process)))
            .collect();
        Self::new(record.name.clone(), processes)
    }

    /// Watches the given processes of the VM named `vm`.
    pub fn new(vm: Option<String>, processes: Vec<(&'static str, ProcessRecord)>) -> Self {
        let watched = processes
            .into_iter()
            .map(|(name, process)| Watched {
                name,
                process,
                pidfd: process.pidfd(),
            })
            .collect();
        Self {
            vm,
            watched,
            first: Mutex::new(None),
        }
    }

    /// The death of one of the processes, if any has died (without waiting).
    pub fn check(&self) -> Option<HelperDeath> {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(death) = &*first {
            return Some(death.clone());
        }
        let (w, exit) = self.worst()?;
        let (w, exit) = match self.watched.iter().find(|q| q.name == QEMU) {
            // A helper that exited by itself while QEMU seems alive may have
            // exited because QEMU is dying: give QEMU a moment to show it.
            Some(qemu) if w.name != QEMU && !matches!(exit, HelperExit::Signal(_)) => {
                let until = std::time::Instant::now() + QEMU_SETTLE;
                while !qemu.is_dead() && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.worst().unwrap_or((w, exit))
            }
            _ => (w, exit),
        };
        let death = HelperDeath {
            vm: self.vm.clone(),
            helper: w.name.to_owned(),
            pid: w.process.pid,
            exit,
        };
        *first = Some(death.clone());
        Some(death)
    }

    /// The dead process to name, by [`Watched::rank`], and how it ended.
    fn worst(&self) -> Option<(&Watched, HelperExit)> {
        self.watched
            .iter()
            .filter(|w| w.is_dead())
            .map(|w| (w, w.exit()))
            .min_by_key(|(w, exit)| w.rank(*exit))
    }

    /// [`Self::check`] on the blocking pool: telling how a dead process
    /// ended may wait (bounded) for it to be reapable.
    async fn check_pooled(self: &Arc<Self>) -> Option<HelperDeath> {
        let watch = Arc::clone(self);
        crate::blocking::run(move || watch.check()).await
    }

    /// Resolves when any of the processes dies (at once if one has), with
    /// the death to report.
    pub async fn died(self: &Arc<Self>) -> HelperDeath {
        if let Some(death) = self.check_pooled().await {
            return death;
        }
        // Registered with the reactor for this wait only (as duplicates: the
        // watch keeps its own descriptors for `check`).
        let fds: Vec<AsyncFd<OwnedFd>> = self
            .watched
            .iter()
            .filter_map(|w| w.pidfd.as_ref()?.try_clone().ok())
            .filter_map(|fd| {
                // SAFETY: the AsyncFd owns the descriptor, which stays open
                // and the same until the AsyncFd is dropped.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
            })
            .collect();
        if fds.is_empty() {
            // Nothing to wait on (descriptors exhausted, say): poll instead.
            loop {
                if let Some(death) = self.check_pooled().await {
                    return death;
                }
                tokio::time::sleep(FALLBACK_POLL).await;
            }
        }
        let waits: Vec<_> = fds.iter().map(|fd| Box::pin(fd.readable())).collect();
        let _ = futures::future::select_all(waits).await;
        // A readable pidfd is a dead process; `check` sees it at once.
        loop {
            if let Some(death) = self.check_pooled().await {
                return death;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A pidfd polls readable once its process has exited.
fn pidfd_readable(fd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a count of one, no waiting.
    let n = unsafe { libc::poll(&mut poll, 1, 0) };
    n > 0 && poll.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// What `waitid` says of a process.
enum Reap {
    /// An exited child of ours, now reaped: how it ended.
    Ended(HelperExit),
    /// A child of ours that has not finished exiting.
    NotYet,
    /// Not our child (or already reaped).
    NotOurs,
}

/// Reaps the process of `fd` if it is an exited child of ours.
fn reap(fd: &OwnedFd) -> Reap {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pidfd, a siginfo_t we own for the kernel to fill, and
    // flags that neither block nor touch other processes (ECHILD when it is
    // not our child).
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            fd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc != 0 {
        return Reap::NotOurs;
    }
    // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed, pid 0).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Reap::NotYet;
    }
    match info.si_code {
        libc::CLD_EXITED => Reap::Ended(HelperExit::Code(status)),
        libc::CLD_KILLED | libc::CLD_DUMPED => Reap::Ended(HelperExit::Signal(status)),
        _ => Reap::NotOurs,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Starts a child the watch reaps (so the `Child` handle is dropped
    /// without waiting: the watch is what is under test).
    #[allow(clippy::zombie_processes)]
    fn spawn(script: &str) -> ProcessRecord {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .spawn()
            .expect("spawn sh");
        let pid = i32::try_from(child.id()).expect("pid");
        ProcessRecord::of(pid).expect("record")
    }

    #[tokio::test]
    async fn a_killed_child_is_seen_at_once_with_its_signal() {
        let sleeper = spawn("sleep 30");
        let other = spawn("sleep 30");
        let watch = Arc::new(HelperWatch::new(
            Some("p".into()),
            vec![("virtiofsd", sleeper), ("vhost-device-vsock", other)],
        ));
        assert_eq!(watch.check(), None);
        sleeper
            .signal(nix::sys::signal::Signal::SIGKILL)
            .expect("kill");
        let started = Instant::now();
        let death = tokio::time::timeout(Duration::from_secs(5), watch.died())
            .await
            .expect("the death is seen");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(death.helper, "virtiofsd");
        assert_eq!(death.exit, HelperExit::Signal(libc::SIGKILL));
        assert_eq!(
            death.to_string(),
            format!("virtiofsd (pid {}) was killed by SIGKILL", sleeper.pid)
        );
        // Reaped: no zombie of ours is left.
        assert!(!sleeper.is_alive());
        assert!(std::fs::metadata(format!("/proc/{}", sleeper.pid)).is_err());
        // The first death sticks.
        other.kill(Duration::from_secs(2)).await.expect("kill");
        assert_eq!(watch.check(), Some(death));
    }

    #[tokio::test]
    async fn an_exit_code_is_reported_and_qemu_ranks_first() {
        let qemu = spawn("exit 3");
        let logger = spawn("exit 0");
        let watch = Arc::new(HelperWatch::new(
            None,
            vec![("vc-console-log", logger), (QEMU, qemu)],
        ));
        let death = tokio::time::timeout(Duration::from_secs(5), watch.died())
            .await
            .expect("the death is seen");
        // Both may be dead by now; QEMU is the one to name.
        if watch.watched.iter().all(Watched::is_dead) {
            assert_eq!(death.helper, QEMU);
        }
        if death.helper == QEMU {
            assert_eq!(death.exit, HelperExit::Code(3));
        }
    }

    #[tokio::test]
    async fn a_process_of_another_parent_is_gone() {
        // A grandchild: reparented, so its status is not ours to read.
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .output()
            .expect("sh");
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid");
        let orphan = ProcessRecord::of(pid).expect("record");
        let watch = Arc::new(HelperWatch::new(None, vec![("vhost-device-vsock", orphan)]));
        orphan
            .signal(nix::sys::signal::Signal::SIGKILL)
            .expect("kill");
        let death = tokio::time::timeout(Duration::from_secs(5), watch.died())
            .await
            .expect("the death is seen");
        assert_eq!(death.exit, HelperExit::Gone);
        assert!(death.to_string().contains("not its parent"), "{death}");
    }

    #[tokio::test]
    async fn a_process_gone_before_the_watch_is_dead_at_once() {
        let gone = ProcessRecord {
            pid: i32::MAX,
            start_time: 1,
        };
        let watch = HelperWatch::new(None, vec![("virtiofsd", gone)]);
        let death = watch.check().expect("dead");
        assert_eq!(death.exit, HelperExit::Gone);
    }
}
