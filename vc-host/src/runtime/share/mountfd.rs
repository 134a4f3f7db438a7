//! The new mount API (`open_tree`, `mount_setattr`, `move_mount`), used so
//! that a bind is built detached, given its flags and propagation, and only
//! then attached onto a descriptor the runtime opened without following links.
//! Flags set on the detached tree are what every propagated copy gets.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::NixPath;

const EMPTY: &CStr = c"";

/// The flags of a bind: read-only, and always `nosuid,nodev` on the host.
pub(super) fn bind_attrs(readonly: bool) -> u64 {
    let base = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if readonly {
        base | libc::MOUNT_ATTR_RDONLY
    } else {
        base
    }
}

/// A detached copy of the mount tree at `path` (recursive with `recursive`),
/// `open_tree(OPEN_TREE_CLONE)`. `path` is the caller's (a rootfs or volume
/// the user named); `from` clones the directory a descriptor refers to.
pub(super) fn clone_path(path: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
    path.with_nix_path(|p| open_tree(libc::AT_FDCWD, p, recursive, 0))?
}

/// A detached copy of the mount at the directory `fd` refers to (not recursive).
pub(super) fn clone_fd(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    open_tree(
        fd.as_raw_fd(),
        EMPTY,
        false,
        libc::AT_EMPTY_PATH as libc::c_uint,
    )
}

fn open_tree(
    dirfd: libc::c_int,
    path: &CStr,
    recursive: bool,
    extra: libc::c_uint,
) -> Result<OwnedFd, Errno> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | extra;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the
    // kernel returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) };
    let fd = Errno::result(fd)?;
    let fd = libc::c_int::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets the mount attributes `set` (and the propagation `propagation`, one
/// of `MS_SHARED`, `MS_SLAVE`, `MS_PRIVATE`, or 0 for unchanged) on the mount
/// `fd` refers to, and on every mount below it with `recursive`.
pub(super) fn set_attr(
    fd: BorrowedFd<'_>,
    set: u64,
    propagation: u64,
    recursive: bool,
) -> Result<(), Errno> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `attr` is a valid `mount_attr` of the size passed, alive for the
    // call; the path is the empty NUL-terminated string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    Errno::result(r).map(drop)
}

/// Attaches the detached tree `tree` onto what `target` refers to
/// (`move_mount` with both paths empty: no name is resolved).
pub(super) fn attach(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both paths are the empty NUL-terminated string; the descriptors
    // are borrowed for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            EMPTY.as_ptr(),
            target.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
        )
    };
    Errno::result(r).map(drop)
}

/// Detaches the mount whose root `fd` refers to (`umount2` on
/// `/proc/self/fd/<n>`, `MNT_DETACH`: the guest may hold files open through
/// virtiofsd). `EINVAL` when nothing is mounted there.
pub(super) fn detach(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    nix::mount::umount2(
        &crate::beneath::proc_path(fd),
        nix::mount::MntFlags::MNT_DETACH,
    )
}
