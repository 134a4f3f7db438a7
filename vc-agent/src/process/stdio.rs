//! A process's stdio: three pipes, or a pseudo-terminal; or, for stdout and
//! stderr, connections the host parked for the process ([`DirectOutput`]).
//!
//! Every descriptor is created close-on-exec. The child's ends are placed on
//! fds 0, 1 and 2 after the fork (`dup2` clears close-on-exec on the copies); the
//! agent keeps the parent ends in [`ParentStdio`] until a stream attaches and
//! takes them. Nothing reads a pipe that nobody is attached to: output waits in
//! the kernel's pipe buffer, and a full buffer blocks the writer (backpressure).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::sync::Notify;
use vc_proto::StreamKind;

/// Kernel buffer size asked for each output pipe (the default is 64 KiB); a
/// larger buffer means fewer wake-ups per megabyte when a stream is attached.
pub const PIPE_BUFFER: i32 = 256 * 1024;

/// The child's ends, placed on fds 0, 1 and 2 after the fork.
#[derive(Debug)]
pub(crate) struct ChildStdio {
    /// stdin, stdout, stderr (the same pty slave three times with a terminal).
    pub fds: [OwnedFd; 3],
    /// The pty slave, made the controlling terminal, when there is one.
    pub terminal: bool,
}

impl ChildStdio {
    pub(crate) fn raw(&self) -> ([RawFd; 3], bool) {
        (
            [
                self.fds[0].as_raw_fd(),
                self.fds[1].as_raw_fd(),
                self.fds[2].as_raw_fd(),
            ],
            self.terminal,
        )
    }
}

/// Sockets given to a process as its stdout and stderr instead of pipes: the
/// host's parked connections (see [`super::parked`]). The child gets them on
/// fds 1 and 2 and the agent closes its own copies after the fork, so the
/// process is their only holder and its last close is the end of the stream.
#[derive(Debug, Default)]
pub struct DirectOutput {
    /// The socket for fd 1, or `None` for the stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// The socket for fd 2, or `None` for the stderr pipe.
    pub stderr: Option<OwnedFd>,
}

impl DirectOutput {
    /// Whether no stream is direct.
    pub fn is_empty(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }
}

/// Creates the stdio of one process: the child's ends and the agent's ends. A
/// terminal comes from `ptmx` (the container's devpts instance), else from the
/// VM's `/dev/ptmx`. The sockets of `direct` take the place of the stdout and
/// stderr pipes (not with a terminal: the caller refuses that combination,
/// and here they would be dropped).
pub(crate) fn create(
    terminal: bool,
    ptmx: Option<&std::ffi::CStr>,
    direct: DirectOutput,
) -> Result<(ChildStdio, ParentStdio), Errno> {
    if terminal {
        let (master, slave) = open_pty(ptmx)?;
        let child = ChildStdio {
            fds: [dup(&slave)?, dup(&slave)?, slave],
            terminal: true,
        };
        return Ok((child, ParentStdio::terminal(master)));
    }
    let (stdin_r, stdin_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (stdout_r, stdout_w) = output(direct.stdout)?;
    let (stderr_r, stderr_w) = output(direct.stderr)?;
    let child = ChildStdio {
        fds: [stdin_r, stdout_w, stderr_w],
        terminal: false,
    };
    Ok((child, ParentStdio::pipes(stdin_w, stdout_r, stderr_r)))
}

/// One output: the agent's read end (none for a direct socket) and the
/// child's end.
fn output(direct: Option<OwnedFd>) -> Result<(Output, OwnedFd), Errno> {
    if let Some(socket) = direct {
        return Ok((Output::Direct, socket));
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // Best effort: a smaller buffer only costs throughput.
    let _ = fcntl(read.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BUFFER));
    Ok((Output::Pipe(Some(read)), write))
}

/// A close-on-exec duplicate.
fn dup(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    fd.try_clone()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Opens a pty pair, both ends close-on-exec, from `ptmx` (default
/// `/dev/ptmx`). The slave is opened through the master (`TIOCGPTPEER`), which
/// needs no path and cannot race with another devpts instance.
fn open_pty(ptmx: Option<&std::ffi::CStr>) -> Result<(OwnedFd, OwnedFd), Errno> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = match ptmx {
        None => {
            let master = nix::pty::posix_openpt(flags)?;
            nix::pty::grantpt(&master)?;
            nix::pty::unlockpt(&master)?;
            // SAFETY: `into_raw_fd` hands over the master's fd, which nothing else owns.
            unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) }
        }
        Some(path) => {
            let fd = nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())?;
            // SAFETY: `open` just returned this descriptor and nothing else owns it.
            let master = unsafe { OwnedFd::from_raw_fd(fd) };
            let unlock: libc::c_int = 0;
            // SAFETY: TIOCSPTLCK reads one int through the pointer, which is
            // valid for the call (this is what `unlockpt` does; devpts needs no
            // `grantpt`).
            let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
            Errno::result(rc)?;
            master
        }
    };
    // SAFETY: the master fd is open for the whole call; TIOCGPTPEER takes open(2)
    // flags by value and returns a new fd or -1.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    let slave = Errno::result(slave)?;
    // SAFETY: TIOCGPTPEER returned a new fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}

/// The stdin of a process as the agent holds it.
#[derive(Debug)]
enum StdinSlot {
    /// Not attached: the pipe's write end.
    Ready(OwnedFd),
    /// A stream took it; notifying the `Notify` makes that stream close it.
    Attached(Arc<Notify>),
    /// Closed (end-of-file sent).
    Closed,
}

/// An output of a process as the agent holds it.
#[derive(Debug)]
enum Output {
    /// The pipe's read end until a stream attaches and takes it.
    Pipe(Option<OwnedFd>),
    /// The process writes into a host connection; the agent holds nothing.
    Direct,
}

/// The agent's ends of one process's stdio.
#[derive(Debug)]
pub struct ParentStdio {
    stdin: Mutex<StdinSlot>,
    stdout: Mutex<Output>,
    stderr: Mutex<Output>,
    /// The pty master, kept for resizes; streams get their own duplicate.
    pty: Option<OwnedFd>,
    tty_taken: Mutex<bool>,
}

/// A stream end handed to an attached connection.
#[derive(Debug)]
pub enum StreamEnd {
    /// The read end of the stdout or stderr pipe.
    Output(OwnedFd),
    /// The write end of the stdin pipe, and the signal to close it early
    /// (`CloseStdin` while attached).
    Stdin {
        /// Write end of the pipe.
        fd: OwnedFd,
        /// Notified when the pipe must be closed.
        close: Arc<Notify>,
    },
    /// A duplicate of the pty master.
    Tty(OwnedFd),
}

/// Why a stream end cannot be handed out or used.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// The stream was attached before (each stream attaches once).
    #[error("the {0:?} stream of this process is already attached")]
    AlreadyAttached(StreamKind),
    /// The stream went to the process directly at its start (a parked
    /// connection): there is nothing to attach.
    #[error("the {0:?} stream of this process was handed to it as a connection at its start")]
    Direct(StreamKind),
    /// The stream is not one the process has (`Tty` without a terminal, or a
    /// pipe with one).
    #[error("the process has no {0:?} stream (terminal: {1})")]
    NoSuchStream(StreamKind, bool),
    /// stdin was closed before it was attached.
    #[error("the stdin of this process is closed")]
    StdinClosed,
    /// The process has no terminal to resize.
    #[error("the process has no terminal")]
    NoTerminal,
    /// A system call on the stdio failed.
    #[error("stdio operation failed")]
    Sys(#[from] Errno),
}

impl ParentStdio {
    fn pipes(stdin: OwnedFd, stdout: Output, stderr: Output) -> Self {
        Self {
            stdin: Mutex::new(StdinSlot::Ready(stdin)),
            stdout: Mutex::new(stdout),
            stderr: Mutex::new(stderr),
            pty: None,
            tty_taken: Mutex::new(false),
        }
    }

    fn terminal(master: OwnedFd) -> Self {
        Self {
            stdin: Mutex::new(StdinSlot::Closed),
            stdout: Mutex::new(Output::Pipe(None)),
            stderr: Mutex::new(Output::Pipe(None)),
            pty: Some(master),
            tty_taken: Mutex::new(false),
        }
    }

    /// Whether the process has a terminal.
    pub fn has_terminal(&self) -> bool {
        self.pty.is_some()
    }

    /// Hands out one stream end; each stream can be taken once.
    pub fn take(&self, kind: StreamKind) -> Result<StreamEnd, StdioError> {
        let terminal = self.has_terminal();
        let output = |slot: &Mutex<Output>| match &mut *slot.lock().expect("stdio lock poisoned") {
            Output::Pipe(fd) => fd
                .take()
                .map(StreamEnd::Output)
                .ok_or(StdioError::AlreadyAttached(kind)),
            Output::Direct => Err(StdioError::Direct(kind)),
        };
        match (kind, &self.pty) {
            (StreamKind::Tty, Some(master)) => {
                let mut taken = self.tty_taken.lock().expect("stdio lock poisoned");
                if *taken {
                    return Err(StdioError::AlreadyAttached(kind));
                }
                let copy = dup(master)?;
                *taken = true;
                Ok(StreamEnd::Tty(copy))
            }
            (StreamKind::Stdout, None) => output(&self.stdout),
            (StreamKind::Stderr, None) => output(&self.stderr),
            (StreamKind::Stdin, None) => {
                let mut slot = self.stdin.lock().expect("stdio lock poisoned");
                match std::mem::replace(&mut *slot, StdinSlot::Closed) {
                    StdinSlot::Ready(fd) => {
                        let close = Arc::new(Notify::new());
                        *slot = StdinSlot::Attached(Arc::clone(&close));
                        Ok(StreamEnd::Stdin { fd, close })
                    }
                    StdinSlot::Attached(close) => {
                        *slot = StdinSlot::Attached(close);
                        Err(StdioError::AlreadyAttached(kind))
                    }
                    StdinSlot::Closed => Err(StdioError::StdinClosed),
                }
            }
            _ => Err(StdioError::NoSuchStream(kind, terminal)),
        }
    }

    /// Sends end-of-file to the process's stdin: closes the pipe (or tells the
    /// attached stream to), or types `^D` on a terminal. Closing twice is fine.
    pub fn close_stdin(&self) -> Result<(), StdioError> {
        if let Some(master) = &self.pty {
            nix::unistd::write(master, &[0x04])?;
            return Ok(());
        }
        let mut slot = self.stdin.lock().expect("stdio lock poisoned");
        if let StdinSlot::Attached(close) = &*slot {
            close.notify_one();
        }
        *slot = StdinSlot::Closed;
        Ok(())
    }

    /// Sets the terminal's size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), StdioError> {
        let master = self.pty.as_ref().ok_or(StdioError::NoTerminal)?;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid
        // for the call; the fd is open.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        Errno::result(rc)?;
        Ok(())
    }
}

/// Makes a descriptor non-blocking (for the async copies).
pub fn set_nonblocking(fd: &OwnedFd) -> Result<(), Errno> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
