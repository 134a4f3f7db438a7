//! Thin system call wrappers for the forked child: no allocation, no locks, no
//! glibc state. The child is a copy of a multi-threaded process (possibly made
//! with a raw `clone`), so glibc's `setuid` family (which signals the threads
//! it believes exist) and `fork` (which takes malloc locks) are avoided in favour
//! of the raw system calls.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::ptr;

use nix::errno::Errno;
use nix::mount::MsFlags;

/// `Ok(ret)` for a non-negative return, the errno otherwise.
fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: libc::c_int) -> Result<(), Errno> {
    check(libc::c_long::from(ret)).map(drop)
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

/// `mount(2)`.
pub(crate) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: MsFlags,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    check_int(unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags.bits(),
            opt_ptr(data).cast(),
        )
    })
}

/// `mount_setattr(2)` of the mount at `path` (and, with `recursive`, of every
/// mount below it): sets the `MOUNT_ATTR_*` flags of `set`, clears none.
/// Linux 5.12 and later; `ENOSYS` before.
pub(crate) fn mount_setattr(path: &CStr, set: u64, recursive: bool) -> Result<(), Errno> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: `path` is a NUL-terminated string and `attr` a valid mount_attr
    // whose size is passed with it.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// `umount2(2)`.
pub(crate) fn umount2(target: &CStr, flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: `target` is a NUL-terminated string.
    check_int(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// `mkdir(2)`; an existing entry is fine.
pub(crate) fn mkdir(path: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string.
    match check_int(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(Errno::EEXIST) => Ok(()),
        r => r,
    }
}

/// Creates an empty regular file (not through a final symbolic link); an
/// existing one is fine.
pub(crate) fn touch(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    close(fd);
    Ok(())
}

/// `mknod(2)`.
pub(crate) fn mknod(path: &CStr, mode: u32, major: u32, minor: u32) -> Result<(), Errno> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `path` is a NUL-terminated string.
    check_int(unsafe { libc::mknod(path.as_ptr(), mode, dev) })
}

/// `symlink(2)`.
pub(crate) fn symlink(target: &CStr, path: &CStr) -> Result<(), Errno> {
    // SAFETY: both are NUL-terminated strings.
    check_int(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) })
}

/// `chdir(2)`.
pub(crate) fn chdir(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string.
    check_int(unsafe { libc::chdir(path.as_ptr()) })
}

/// `pivot_root(2)`.
pub(crate) fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
    // SAFETY: both are NUL-terminated strings; pivot_root takes two paths.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// `sethostname(2)`.
pub(crate) fn sethostname(name: &CStr) -> Result<(), Errno> {
    let bytes = name.to_bytes();
    // SAFETY: `bytes` is valid for its length.
    check_int(unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) })
}

/// `prlimit64(0, resource, {soft, hard}, NULL)`.
pub(crate) fn setrlimit(resource: libc::c_uint, soft: u64, hard: u64) -> Result<(), Errno> {
    let lim = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit64 and the old-limit pointer is null.
    check(unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            resource,
            &lim as *const libc::rlimit64,
            ptr::null_mut::<libc::rlimit64>(),
        )
    })
    .map(drop)
}

/// `setgroups(2)` (raw: this thread only, which is the whole process here).
pub(crate) fn setgroups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: `groups` is valid for `groups.len()` elements.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) }).map(drop)
}

/// `setresgid(2)` (raw).
pub(crate) fn setresgid(gid: libc::gid_t) -> Result<(), Errno> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(drop)
}

/// `setresuid(2)` (raw).
pub(crate) fn setresuid(uid: libc::uid_t) -> Result<(), Errno> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

/// `prctl(2)` with integer arguments.
pub(crate) fn prctl(option: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: the options used here take integers only.
    check_int(unsafe { libc::prctl(option, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `capset(2)` of this thread: `effective` and `permitted` set to `mask`,
/// inheritable empty.
pub(crate) fn capset(mask: u64) -> Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: version 3 takes a header and an array of two data structs, both valid.
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    })
    .map(drop)
}

/// `unshare(flags)`.
pub(crate) fn unshare(flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: plain integer argument.
    check_int(unsafe { libc::unshare(flags) })
}

/// `setns(2)`.
pub(crate) fn setns(fd: RawFd, nstype: libc::c_int) -> Result<(), Errno> {
    // SAFETY: plain integer arguments.
    check_int(unsafe { libc::setns(fd, nstype) })
}

/// Writes all of `buf` to `fd`.
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        match n {
            n if n > 0 => buf = &buf[n as usize..],
            0 => return Err(Errno::EIO),
            _ => match Errno::last() {
                Errno::EINTR => {}
                e => return Err(e),
            },
        }
    }
    Ok(())
}

/// `close(2)`, errors ignored.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: closing a descriptor number has no memory effects.
    unsafe { libc::close(fd) };
}

/// Closes every descriptor from `first` up.
pub(crate) fn close_from(first: libc::c_uint) {
    // SAFETY: close_range takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) };
    if r < 0 {
        // Kernels before 5.9: close a generous range one by one.
        for fd in first..4096 {
            close(fd as RawFd);
        }
    }
}

/// `umask(2)`.
pub(crate) fn umask(mask: libc::mode_t) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) };
}

/// `execve(2)`; returns only on failure.
pub(crate) fn execve(
    path: &CStr,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> Errno {
    // SAFETY: `path` is NUL-terminated; `argv` and `envp` are NULL-terminated
    // arrays of NUL-terminated strings (built by `CStrArray`) that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv, envp) };
    Errno::last()
}

/// A `fork` that is only the system call (no atfork handlers, no malloc locks):
/// `clone(SIGCHLD)` with no new stack. Returns 0 in the child, the child's pid
/// in the parent.
pub(crate) fn raw_fork() -> Result<libc::pid_t, Errno> {
    // SAFETY: clone with a null stack behaves as fork: the child continues on a
    // copy of this stack. Only async-signal-safe work follows in the child.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(r).map(|pid| pid as libc::pid_t)
}

/// `getpid(2)` (raw, nothing cached).
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as libc::pid_t }
}

/// `kill(2)`, errors ignored.
pub(crate) fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: integer arguments.
    unsafe { libc::kill(pid, sig) };
}

/// `_exit(2)`.
pub(crate) fn exit(code: libc::c_int) -> ! {
    // SAFETY: ends the process without running anything of the parent's.
    unsafe { libc::_exit(code) }
}

/// Sets every signal that can be changed back to its default action.
pub(crate) fn default_signal_actions() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        set_action(sig, libc::SIG_DFL, 0);
    }
}

/// `sigaction(sig, handler, flags)` with an empty mask; errors (signals glibc
/// reserves) ignored.
pub(crate) fn set_action(sig: libc::c_int, handler: libc::sighandler_t, flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags).
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = flags;
    // SAFETY: `sa` is a valid sigaction and the old action pointer is null.
    unsafe { libc::sigaction(sig, &sa, ptr::null_mut()) };
}

/// A signal set.
#[derive(Clone, Copy)]
pub(crate) struct SigSet(libc::sigset_t);

impl SigSet {
    /// The empty set.
    pub(crate) fn empty() -> Self {
        // SAFETY: a zeroed sigset_t is valid storage, and sigemptyset initialises it.
        let mut s: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `s` is a valid sigset_t.
        unsafe { libc::sigemptyset(&mut s) };
        Self(s)
    }

    /// Adds `sig`.
    pub(crate) fn add(&mut self, sig: libc::c_int) {
        // SAFETY: `self.0` is an initialised sigset_t.
        unsafe { libc::sigaddset(&mut self.0, sig) };
    }

    /// `sigprocmask(how, self)`, returning the previous mask.
    pub(crate) fn apply(&self, how: libc::c_int) -> Result<SigSet, Errno> {
        let mut old = SigSet::empty();
        // SAFETY: both are valid sigset_t.
        check_int(unsafe { libc::sigprocmask(how, &self.0, &mut old.0) })?;
        Ok(old)
    }
}

/// `waitpid(pid, 0)`, retried on `EINTR`; the raw status.
pub(crate) fn wait(pid: libc::pid_t) -> Result<libc::c_int, Errno> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is writable.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            return Ok(status);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}
