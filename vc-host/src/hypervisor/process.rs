//! Detached processes and how to find them again.
//!
//! QEMU and the helper daemons start in a new session (`setsid`), with stdin
//! on `/dev/null` and stdout/stderr in a log file, so they outlive the process
//! that launched them. They stay that process's children while it lives (so
//! it can reap them); afterwards they are reparented.
//!
//! A process is named by [`ProcessRecord`]: its pid *and* its start time
//! (field 22 of `/proc/<pid>/stat`), so that a reused pid is never mistaken
//! for it. A zombie counts as dead: PID 1 in some sandboxes never reaps
//! orphans. Signals go through a pidfd opened after the start time was
//! checked, so a process that exits and whose pid is reused in between cannot
//! receive them.
//!
//! A process given a [`VmmUser`] drops to that user in the child before
//! `exec` (supplementary groups, gid, uid, then `no_new_privs`), after
//! entering its network namespace; its program is opened by the launching
//! process and executed as `/proc/self/fd/N`, so that the user needs no
//! search permission on the directories on the way (the tools cache lives in
//! root's home).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::confine::VmmUser;

/// How often liveness is polled while waiting for an exit.
const POLL: Duration = Duration::from_millis(10);

/// How long a dead child gets to become reapable.
const SETTLE: Duration = Duration::from_secs(2);

/// A process, identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

/// Why a process could not be started or signalled.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// The log file could not be created.
    #[error("cannot create log file {path}")]
    Log {
        /// Log path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// Program path.
        program: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The started process vanished before its start time could be read.
    #[error("{program} (pid {pid}) vanished right after it started")]
    Vanished {
        /// Program path.
        program: PathBuf,
        /// Its pid.
        pid: i32,
    },
    /// A signal could not be delivered.
    #[error("cannot send {signal} to pid {pid}")]
    Signal {
        /// Target pid.
        pid: i32,
        /// Signal.
        signal: Signal,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The process outlived SIGKILL for longer than the deadline.
    #[error("pid {pid} is still alive {waited:?} after SIGKILL")]
    Unkillable {
        /// Target pid.
        pid: i32,
        /// How long we waited.
        waited: Duration,
    },
}

/// State and start time read from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub start_time: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Field 3 is the state; field 22 the start time, 19 fields after it.
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

impl ProcessRecord {
    /// The record of a running (or zombie) process.
    pub fn of(pid: i32) -> Option<Self> {
        read_stat(pid).map(|s| ProcessRecord {
            pid,
            start_time: s.start_time,
        })
    }

    /// True while the process runs: its pid exists with the recorded start
    /// time and is not a zombie. A zombie child of ours is reaped on the way.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some(s) if s.start_time == self.start_time => {
                if matches!(s.state, 'Z' | 'X') {
                    let _ = self.reap();
                    false
                } else {
                    true
                }
            }
            _ => false,
        }
    }

    /// True while the process is stopped by a signal (state `T`): a paused
    /// VM's QEMU.
    pub fn is_stopped(&self) -> bool {
        matches!(read_stat(self.pid), Some(s) if s.start_time == self.start_time && s.state == 'T')
    }

    /// Reaps the process if it is an exited child of ours. `true` while it is
    /// our child but not yet reapable: a thread group whose leader is a
    /// zombie while its other threads are still being torn down.
    fn reap(&self) -> bool {
        use nix::sys::wait::WaitStatus;
        // ECHILD: not our child (someone else reaps it, or nobody does).
        match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => true,
            Ok(WaitStatus::Exited(_, code)) => {
                super::watch::remember_exit(*self, super::watch::HelperExit::Code(code));
                false
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                super::watch::remember_exit(*self, super::watch::HelperExit::Signal(signal as i32));
                false
            }
            _ => false,
        }
    }

    /// A pidfd of this process, opened before its identity is checked so that
    /// it names this process and no later one; `None` when it is gone.
    pub(crate) fn pidfd(&self) -> Option<OwnedFd> {
        let fd = pidfd_open(self.pid).ok()??;
        match read_stat(self.pid) {
            Some(s) if s.start_time == self.start_time => Some(fd),
            _ => None,
        }
    }

    /// After the process is seen dead: when it is our child, reap it for
    /// good (bounded), so that no zombie of ours is left behind.
    async fn settle(&self) {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            match read_stat(self.pid) {
                Some(s) if s.start_time == self.start_time => {
                    if !self.reap() {
                        return;
                    }
                }
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Sends `signal`. Returns `false` when the process was already gone.
    pub fn signal(&self, signal: Signal) -> Result<bool, ProcessError> {
        let err = |source| ProcessError::Signal {
            pid: self.pid,
            signal,
            source,
        };
        let Some(pidfd) = pidfd_open(self.pid).map_err(err)? else {
            return Ok(false);
        };
        // The pidfd pins this pid: checked now, it cannot be reused later.
        if !self.is_alive() {
            return Ok(false);
        }
        match pidfd_send_signal(&pidfd, signal) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Polls until the process is gone; `true` when it went within `timeout`.
    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                self.settle().await;
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL and up to `kill_wait`.
    pub async fn terminate(
        &self,
        grace: Duration,
        kill_wait: Duration,
    ) -> Result<(), ProcessError> {
        if self.signal(Signal::SIGTERM)? && self.wait_gone(grace).await {
            return Ok(());
        }
        self.kill(kill_wait).await
    }

    /// SIGKILL and up to `wait` for the process to be gone.
    pub async fn kill(&self, wait: Duration) -> Result<(), ProcessError> {
        self.signal(Signal::SIGKILL)?;
        if self.wait_gone(wait).await {
            Ok(())
        } else {
            Err(ProcessError::Unkillable {
                pid: self.pid,
                waited: wait,
            })
        }
    }

    /// SIGKILL and a short synchronous wait (for drop guards, which cannot
    /// await); errors are ignored.
    pub(crate) fn kill_now(&self) {
        let _ = self.signal(Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let pending = match read_stat(self.pid) {
                Some(s) if s.start_time == self.start_time => {
                    !matches!(s.state, 'Z' | 'X') || self.reap()
                }
                _ => false,
            };
            if !pending {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `pidfd_open(2)`; `None` when the process does not exist.
fn pidfd_open(pid: i32) -> std::io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no
    // memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let fd = RawFd::try_from(fd).map_err(|_| std::io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `pidfd_send_signal(2)` without siginfo.
fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> std::io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed: the
    // kernel fills it as for kill(2)) and zero flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A program to start detached.
#[derive(Debug)]
pub struct Detached<'a> {
    /// Program path.
    pub program: &'a Path,
    /// Arguments.
    pub args: Vec<OsString>,
    /// File receiving stdout and stderr (truncated).
    pub log: &'a Path,
    /// Network namespace to enter before exec.
    pub netns: Option<&'a File>,
    /// Descriptors to leave open across exec (their close-on-exec flag is
    /// cleared in the child), such as a CID lock.
    pub inherit: Vec<RawFd>,
    /// The unprivileged user to run as; `None` keeps the caller's.
    pub user: Option<&'a VmmUser>,
    /// Working directory (default `/`), entered before the user changes.
    pub cwd: Option<&'a Path>,
    /// Open `cgroup.procs` files the child writes itself into before exec
    /// (see [`super::cgroup::CgroupJoin`]), so it never runs outside them.
    pub cgroups: Vec<RawFd>,
}

impl Detached<'_> {
    /// Starts the program in a new session and returns its record. This
    /// forks and waits for the child's `exec`: from async code use
    /// [`Self::spawn_async`].
    pub fn spawn(&self) -> Result<ProcessRecord, ProcessError> {
        let fds = ChildFds {
            netns: self.netns.map(AsRawFd::as_raw_fd),
            inherit: self.inherit.iter().map(|&fd| (fd, fd)).collect(),
            cgroups: self.cgroups.clone(),
        };
        spawn_detached(&self.owned_parts(), &fds)
    }

    /// [`Self::spawn`] on Tokio's blocking pool: the fork,
    /// the child's cgroup join (a v1 cgroup migration can wait for an RCU
    /// grace period) and its `exec` do not hold the caller's thread. The
    /// descriptors are duplicated first and the child puts each inherited
    /// one back at its number, so the spawn never touches a descriptor its
    /// caller closed meanwhile (a launch dropped half-way).
    pub async fn spawn_async(&self) -> Result<ProcessRecord, ProcessError> {
        let spawn_error = |source| ProcessError::Spawn {
            program: self.program.to_path_buf(),
            source,
        };
        let netns = self
            .netns
            .map(|f| dup(f.as_raw_fd()))
            .transpose()
            .map_err(spawn_error)?;
        let inherit = self
            .inherit
            .iter()
            .map(|&fd| Ok((dup(fd)?, fd)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(spawn_error)?;
        let cgroups = self
            .cgroups
            .iter()
            .map(|&fd| dup(fd))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(spawn_error)?;
        let parts = self.owned_parts();
        crate::blocking::run(move || {
            let fds = ChildFds {
                netns: netns.as_ref().map(AsRawFd::as_raw_fd),
                inherit: inherit
                    .iter()
                    .map(|(copy, at)| (copy.as_raw_fd(), *at))
                    .collect(),
                cgroups: cgroups.iter().map(AsRawFd::as_raw_fd).collect(),
            };
            spawn_detached(&parts, &fds)
        })
        .await
    }

    fn owned_parts(&self) -> Parts {
        Parts {
            program: self.program.to_path_buf(),
            args: self.args.clone(),
            log: self.log.to_path_buf(),
            user: self.user.cloned(),
            cwd: self.cwd.map(Path::to_path_buf),
        }
    }
}

/// A close-on-exec duplicate of descriptor `fd`, which the caller holds
/// open.
fn dup(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes a descriptor number and returns
    // a new descriptor or -1; no memory is passed. A closed `fd` is EBADF.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing
    // else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// The owned, descriptor-free part of a [`Detached`].
struct Parts {
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    user: Option<VmmUser>,
    cwd: Option<PathBuf>,
}

/// The descriptors a child uses between fork and exec.
struct ChildFds {
    netns: Option<RawFd>,
    /// `(open descriptor, number in the child)`: put at that number (or, when
    /// it is already there, its close-on-exec flag cleared) so it survives
    /// `exec`.
    inherit: Vec<(RawFd, RawFd)>,
    cgroups: Vec<RawFd>,
}

fn spawn_detached(parts: &Parts, fds: &ChildFds) -> Result<ProcessRecord, ProcessError> {
    let log_error = |source| ProcessError::Log {
        path: parts.log.clone(),
        source,
    };
    // 0600: what the guest prints is nobody else's business.
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&parts.log)
        .map_err(log_error)?;
    log.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(log_error)?;
    let log_err = log.try_clone().map_err(log_error)?;
    let spawn_error = |source| ProcessError::Spawn {
        program: parts.program.clone(),
        source,
    };
    // Run by descriptor when the user changes: the user may not be able
    // to reach the program's directory.
    let program_fd = match parts.user {
        Some(_) => Some(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(&parts.program)
                .map_err(spawn_error)?,
        ),
        None => None,
    };
    let mut cmd = match &program_fd {
        Some(fd) => {
            let mut cmd = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            cmd.arg0(&parts.program);
            cmd
        }
        None => Command::new(&parts.program),
    };
    cmd.args(&parts.args)
        .current_dir(parts.cwd.as_deref().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let netns = fds.netns;
    let inherit = fds.inherit.clone();
    let ids = parts.user.as_ref().map(|u| {
        (
            u.uid,
            u.gid,
            u.groups
                .iter()
                .map(|&g| g as libc::gid_t)
                .collect::<Vec<_>>(),
        )
    });
    let cgroups = fds.cgroups.clone();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (setsid, write, setns, dup2, fcntl,
    // setgroups, setresgid, setresuid, prctl) on plain integers, a static
    // buffer and slices allocated before the fork; it allocates nothing
    // and takes no locks. The cgroups are joined while still root: their
    // `cgroup.procs` descriptors were opened by root.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0" moves the writer itself (v1 and v2 alike).
            for &fd in &cgroups {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for &(fd, at) in &inherit {
                // dup2 leaves the copy without close-on-exec; a descriptor
                // already at its number needs the flag cleared instead.
                let rc = if fd == at {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, at)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some((uid, gid, groups)) = &ids {
                // Groups and gid first: after setresuid the process may
                // no longer change them.
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setresgid(*gid, *gid, *gid) < 0
                    || libc::setresuid(*uid, *uid, *uid) < 0
                    || libc::prctl(
                        libc::PR_SET_NO_NEW_PRIVS,
                        1 as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                    ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(spawn_error)?;
    drop(program_fd);
    let pid = i32::try_from(child.id()).map_err(|_| ProcessError::Vanished {
        program: parts.program.clone(),
        pid: -1,
    })?;
    // Dropping `child` neither waits nor kills; the process stays our
    // child (and unreaped) until `is_alive` sees it exit, so its /proc
    // entry is there to read.
    drop(child);
    ProcessRecord::of(pid).ok_or_else(|| ProcessError::Vanished {
        program: parts.program.clone(),
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text =
            "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                start_time: 987654
            })
        );
        let zombie = "77 (qemu) Z 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0";
        assert_eq!(
            parse_stat(zombie).map(|s| (s.state, s.start_time)),
            Some(('Z', 42))
        );
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessRecord::of(std::process::id() as i32).expect("self");
        assert!(me.is_alive());
        let other = ProcessRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
        // Signalling a record whose start time does not match is a no-op.
        assert!(!other.signal(Signal::SIGKILL).expect("no-op"));
    }

    #[tokio::test]
    async fn detached_child_runs_in_its_own_session_and_is_killed_by_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sleep.log");
        let rec = Detached {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), "echo started; exec sleep 30".into()],
            log: &log,
            netns: None,
            inherit: Vec::new(),
            user: None,
            cwd: None,
            cgroups: Vec::new(),
        }
        .spawn()
        .expect("spawn");
        assert!(rec.is_alive());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "the child never wrote its log");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sid = nix::unistd::getsid(Some(Pid::from_raw(rec.pid))).expect("getsid");
        assert_eq!(sid.as_raw(), rec.pid, "leader of its own session");
        rec.terminate(Duration::from_secs(2), Duration::from_secs(2))
            .await
            .expect("terminate");
        assert!(!rec.is_alive());
        // Reaped: no zombie left behind in /proc.
        assert!(read_stat(rec.pid).is_none_or(|s| s.start_time != rec.start_time));
        assert!(!rec.signal(Signal::SIGKILL).expect("gone"));
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "started\n");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Detached {
            program: Path::new("/nonexistent/prog"),
            args: Vec::new(),
            log: &dir.path().join("x.log"),
            netns: None,
            inherit: Vec::new(),
            user: None,
            cwd: None,
            cgroups: Vec::new(),
        }
        .spawn()
        .expect_err("no program");
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_child_with_a_user_drops_to_it_and_runs_from_a_private_dir() {
        // `nobody` stands in for the VMM user; the program lives in a 0700
        // directory the user cannot search, as the tools cache does.
        let user = VmmUser::lookup("nobody").expect("Debian has nobody");
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("private");
        std::fs::create_dir(&private).expect("mkdir");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let sh = private.join("sh");
        std::fs::copy("/bin/sh", &sh).expect("copy sh");
        let log = dir.path().join("id.log");
        let rec = Detached {
            program: &sh,
            args: vec![
                "-c".into(),
                "echo uid=$(id -u) gid=$(id -g) groups=$(id -G) cwd=$(pwd); grep NoNewPrivs /proc/self/status".into(),
            ],
            log: &log,
            netns: None,
            inherit: Vec::new(),
            user: Some(&user),
            cwd: None,
            cgroups: Vec::new(),
        }
        .spawn()
        .expect("spawn");
        assert!(
            rec.wait_gone(Duration::from_secs(10)).await,
            "the child ran"
        );
        let out = std::fs::read_to_string(&log).expect("log");
        let groups: Vec<String> = user.groups.iter().map(u32::to_string).collect();
        assert!(
            out.starts_with(&format!(
                "uid={} gid={} groups={} cwd=/\n",
                user.uid,
                user.gid,
                groups.join(" ")
            )),
            "{out}"
        );
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
        let mode = std::fs::metadata(&log).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "logs are private");
    }
}
