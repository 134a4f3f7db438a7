//! `pivot_root` and the initramfs.
//!
//! `pivot_root(2)` fails with `EINVAL` when the caller's root mount has no parent,
//! which is the case of the initramfs (`rootfs`) the guest boots into: it is the
//! root of the initial mount namespace and of every namespace cloned from it.
//! A chroot instead of `pivot_root` would leave the agent's whole mount tree
//! reachable from a container (escaping a chroot takes `CAP_SYS_CHROOT`, which
//! the default set keeps).
//!
//! The way out is the one of `switch_root`: PID 1, before it mounts anything,
//! binds `/` on a directory, moves that bind mount onto `/` and chroots into it
//! ([`leave_initramfs`]). The agent's root is then a mount whose parent is the
//! initramfs, `pivot_root` works in every container, and a container that
//! escapes its root only finds the initramfs' own files (the agent binary and
//! the kernel modules): every mount the agent makes afterwards hangs below the
//! bind mount, which `pivot_root` detaches from the container's namespace.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::error::ContainerError;

/// Where `/` is bound before it is moved over itself.
const STAGE: &str = "/.vc-root";

/// Makes the initramfs usable with `pivot_root` (see the module docs). Call it
/// once, in PID 1, first thing: mounts made before it stay attached to the
/// initramfs and would be visible from a container that escapes its root.
pub fn leave_initramfs() -> Result<(), ContainerError> {
    let err = |action: &'static str, path: &str| {
        let path = Path::new(path).to_path_buf();
        move |source: Errno| ContainerError::Mount {
            action,
            path,
            source,
        }
    };
    match nix::unistd::mkdir(STAGE, nix::sys::stat::Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(err("create", STAGE)(e)),
    }
    mount(
        Some("/"),
        STAGE,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("bind-mount / on", STAGE))?;
    nix::unistd::chdir(STAGE).map_err(err("change to", STAGE))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(err("move the root bind mount to", "/"))?;
    nix::unistd::chroot(".").map_err(err("chroot into", "/"))?;
    nix::unistd::chdir("/").map_err(err("change to", "/"))?;
    // The staging directory is free again (the bind shows the same directory).
    let _ = std::fs::remove_dir(STAGE);
    Ok(())
}

/// Whether the root mount of `mountinfo` (the content of
/// `/proc/self/mountinfo`) has a parent: `false` for the root of a mount
/// namespace, which is listed as its own parent.
pub(crate) fn root_has_parent(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .rev()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?;
            let parent = f.next()?;
            let mount_point = f.nth(2)?;
            (mount_point == "/").then_some(id != parent)
        })
        // Several mounts stacked on `/`: the last one listed is the root.
        .next()
        .unwrap_or(true)
}

/// Fails when `pivot_root` cannot work in this agent (see the module docs).
/// Unknown (no `/proc`): assumed fine; the child reports it otherwise.
pub(crate) fn check_pivot_possible() -> Result<(), ContainerError> {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(info) if !root_has_parent(&info) => Err(ContainerError::RootIsInitramfs),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_root_has_no_parent() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                         20 1 0:19 / /proc rw,nosuid - proc proc rw\n";
        assert!(!root_has_parent(initramfs));
        let switched = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                        21 1 0:2 / / rw - rootfs rootfs rw\n\
                        22 21 0:19 / /proc rw - proc proc rw\n";
        assert!(
            root_has_parent(switched),
            "the bind moved over / is the root"
        );
        let disk = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";
        assert!(
            root_has_parent(disk),
            "a parent outside the root is not listed"
        );
    }

    #[test]
    fn this_host_can_pivot() {
        check_pivot_possible().expect("the test host's root is a real mount");
    }
}
