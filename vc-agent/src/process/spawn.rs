//! Fork (or clone into new namespaces) and exec, with the exec's outcome reported
//! through a close-on-exec error pipe.
//!
//! The agent does not use `tokio::process` (it reaps on its own, and as PID 1 the
//! agent's reaper must see every child). The order is:
//!
//! 1. take the [`LiveTable`] lock;
//! 2. create the stdio and the error pipe (under the lock, so that no other child
//!    forked meanwhile inherits them);
//! 3. `fork` (plain) or `clone` with the launch's namespace flags;
//! 4. register the pid, close the child's ends, release the lock;
//! 5. read the error pipe to its end: empty means the program was executed; a
//!    [`ChildFailure`] record means it was not (the child then exits with 127).
//!
//! The child after the fork runs only system calls: signal mask and dispositions
//! reset (the agent ignores SIGPIPE, and ignored signals survive exec), a new
//! session (and the pty as controlling terminal), stdio on 0, 1, 2, every other
//! fd marked close-on-exec, then [`Launch::enter`].
//!
//! A plain fork goes through glibc's `fork`, which keeps malloc usable in the
//! child. A clone with namespace flags is the raw system call: the child then
//! must not allocate at all (another thread may have held a malloc lock at the
//! instant of the clone).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::launch::{ChildFailure, FailureKind, Launch, RECORD_LEN};
use super::reaper::{LiveEntry, LiveTable};
use super::stdio::{self, DirectOutput, ParentStdio};

/// How long the parent waits for the child to exec (or report failure). The
/// child does only setup system calls before its exec, so this is generous.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// stdio pipes or pty could not be created.
    #[error("cannot create the process's stdio")]
    Stdio(#[source] Errno),
    /// The error pipe could not be created.
    #[error("cannot create the exec status pipe")]
    Pipe(#[source] Errno),
    /// fork or clone failed.
    #[error("cannot fork")]
    Fork(#[source] Errno),
    /// `execve` failed: the program is missing or not executable.
    #[error("cannot execute `{program}` ({detail})")]
    Exec {
        /// The program as requested (`args[0]`).
        program: String,
        /// What the child was doing.
        detail: String,
        /// The errno of `execve`.
        #[source]
        errno: Errno,
    },
    /// A setup step in the child failed before the exec.
    #[error("process setup failed before executing `{program}`: {detail}")]
    Setup {
        /// The program as requested.
        program: String,
        /// The step that failed.
        detail: String,
        /// Its errno.
        #[source]
        errno: Errno,
    },
    /// The error pipe could not be read.
    #[error("cannot read the exec status pipe")]
    StatusPipe(#[source] Errno),
    /// The child neither executed nor reported a failure in time; it was killed.
    #[error("`{program}` was not executed within {timeout:?}; the child was killed")]
    Timeout {
        /// The program as requested.
        program: String,
        /// The time waited.
        timeout: Duration,
    },
}

/// A started child: its pid, where its exit code arrives, and the agent's ends
/// of its stdio.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: Pid,
    pub exit: watch::Receiver<Option<i32>>,
    pub stdio: ParentStdio,
}

/// Forks (or clones) a child that runs `launch`. Blocking: call it on a thread
/// that may block (`spawn_blocking`).
pub(crate) fn spawn(
    live: &LiveTable,
    launch: &dyn Launch,
    terminal: bool,
    direct: DirectOutput,
    program: &str,
) -> Result<Spawned, SpawnError> {
    let flags = launch.clone_flags();
    let (exit_tx, exit_rx) = watch::channel(None);
    let (pid, parent_stdio, status_r) = {
        let mut pids = live.lock();
        let (child_stdio, parent_stdio) =
            stdio::create(terminal, launch.ptmx(), direct).map_err(SpawnError::Stdio)?;
        let (status_r, status_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
        let (child_fds, tty) = child_stdio.raw();
        let status_fd = status_w.as_raw_fd();
        let rc = if flags.is_empty() {
            // SAFETY: fork in a multi-threaded process; the child only runs
            // `child_main` (system calls, then exec or _exit).
            unsafe { libc::fork() }
        } else {
            // SAFETY: raw clone without CLONE_VM and with no new stack behaves
            // like fork; the child only runs `child_main` and never returns.
            unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flags.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                ) as libc::pid_t
            }
        };
        if rc == 0 {
            // SAFETY: we are the child of the fork above; everything it uses was
            // prepared before the fork.
            unsafe { child_main(child_fds, tty, status_fd, launch) }
        }
        if rc < 0 {
            return Err(SpawnError::Fork(Errno::last()));
        }
        pids.insert(rc, LiveEntry { exit: exit_tx });
        drop(status_w);
        drop(child_stdio);
        (Pid::from_raw(rc), parent_stdio, status_r)
    };
    match read_status(&status_r) {
        Ok(None) => Ok(Spawned {
            pid,
            exit: exit_rx,
            stdio: parent_stdio,
        }),
        Ok(Some(failure)) => {
            let program = program.to_owned();
            let detail = failure.message().to_owned();
            let errno = failure.errno();
            Err(match failure.kind() {
                FailureKind::Exec => SpawnError::Exec {
                    program,
                    detail,
                    errno,
                },
                FailureKind::Setup => SpawnError::Setup {
                    program,
                    detail,
                    errno,
                },
            })
        }
        Err(ReadStatusError::Timeout) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            Err(SpawnError::Timeout {
                program: program.to_owned(),
                timeout: EXEC_TIMEOUT,
            })
        }
        Err(ReadStatusError::Sys(errno)) => Err(SpawnError::StatusPipe(errno)),
    }
}

enum ReadStatusError {
    Timeout,
    Sys(Errno),
}

/// Reads the error pipe to its end: `None` when the child executed.
fn read_status(status_r: &OwnedFd) -> Result<Option<ChildFailure>, ReadStatusError> {
    let deadline = std::time::Instant::now() + EXEC_TIMEOUT;
    let mut record = [0u8; RECORD_LEN];
    let mut got = 0;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(ReadStatusError::Timeout);
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(status_r.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ReadStatusError::Sys(e)),
        }
        let buf = if got < RECORD_LEN {
            &mut record[got..]
        } else {
            // A longer record than expected: drain and ignore the excess.
            &mut [0u8; 64][..]
        };
        match nix::unistd::read(status_r.as_raw_fd(), buf) {
            Ok(0) => break,
            Ok(n) => got = (got + n).min(RECORD_LEN),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(ReadStatusError::Sys(e)),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    Ok(Some(ChildFailure::decode(&record[..got]).unwrap_or_else(
        || {
            ChildFailure::with_static(
                FailureKind::Setup,
                Errno::EIO,
                "the child reported an unreadable failure",
            )
        },
    )))
}

/// Puts `src` on `dst` in the child, clearing close-on-exec.
///
/// # Safety
/// Child only; `src` must be open.
unsafe fn place(src: RawFd, dst: RawFd) -> Result<(), Errno> {
    if src == dst {
        // SAFETY: plain fcntl on an open fd.
        return Errno::result(unsafe { libc::fcntl(dst, libc::F_SETFD, 0) }).map(drop);
    }
    // SAFETY: dup2 on open fds.
    Errno::result(unsafe { libc::dup2(src, dst) }).map(drop)
}

/// Writes the failure record and exits with 127.
///
/// # Safety
/// Child only.
unsafe fn fail(status_fd: RawFd, failure: &ChildFailure) -> ! {
    let record = failure.encode();
    // SAFETY: writing a stack buffer to an open fd, then _exit; both are
    // async-signal-safe.
    unsafe {
        libc::write(status_fd, record.as_ptr().cast(), record.len());
        libc::_exit(127)
    }
}

/// The child after the fork: signals, session, stdio, close-on-exec, launch.
///
/// # Safety
/// Must only run in a freshly forked child; it never returns.
unsafe fn child_main(stdio: [RawFd; 3], tty: bool, status_fd: RawFd, launch: &dyn Launch) -> ! {
    let setup = |errno: Errno, what: &'static str| {
        ChildFailure::with_static(FailureKind::Setup, errno, what)
    };
    // SAFETY: every call below is a plain system call on memory of this stack
    // frame; no locks, no allocation.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        if libc::setsid() < 0 {
            fail(status_fd, &setup(Errno::last(), "setsid"));
        }
        if tty && libc::ioctl(stdio[0], libc::TIOCSCTTY, 0) < 0 {
            fail(
                status_fd,
                &setup(Errno::last(), "make the pty the controlling terminal"),
            );
        }
        for (target, src) in stdio.into_iter().enumerate() {
            if let Err(errno) = place(src, target as RawFd) {
                fail(status_fd, &setup(errno, "dup2 stdio"));
            }
        }
        // Belt and braces: nothing but 0, 1, 2 survives the exec.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        let failure = launch.enter();
        fail(status_fd, &failure)
    }
}
