//! What the forked child does with a [`LaunchPlan`]: system calls only, in this
//! order.
//!
//! Main process (created with new mount, PID, UTS and IPC namespaces):
//! 1. signals back to their defaults, mask cleared;
//! 2. join the cgroup (write `0` to the open `cgroup.procs`), then a new cgroup
//!    namespace rooted there;
//! 3. every mount private; a read-only root made read-only with every mount
//!    below it; then the planned mounts: `/proc`, `/sys` (ro) and the
//!    container's cgroup at `/sys/fs/cgroup` (ro), the `/dev` tmpfs
//!    (`nosuid,noexec`) with its nodes, `pts`, `shm` and links, the spec's
//!    mounts, the `/etc` files;
//! 4. `pivot_root(".", ".")` in the rootfs and a lazy unmount of the old root;
//!    the read-only paths and the masks (see `masks.rs`); the hostname;
//! 5. the process part below.
//!
//! Exec (no new namespaces): signals; join the cgroup; `setns` into the main
//! process's cgroup, ipc, uts, pid and mount namespaces; then, because a PID namespace
//! only applies to children, fork: the grandchild does the process part and the
//! middle process relays (see `relay.rs`).
//!
//! Process part: rlimits; capabilities dropped from the bounding set;
//! `PR_SET_KEEPCAPS`; supplementary groups, gid, uid; `capset` (effective =
//! permitted = the kept set, inheritable empty) and the ambient set cleared;
//! `no_new_privs`; umask 022; `chdir`; the seccomp filters; `execve` of each
//! `PATH` candidate. Without `no_new_privs` the seccomp filters come right
//! after the rlimits instead, while the child still has `CAP_SYS_ADMIN`,
//! which the kernel then requires (runc's order too).

mod relay;
pub(crate) mod sys;

use std::convert::Infallible;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::error::{ChildSetupError, SetupStep};
use super::mounts::MountOp;
use super::plan::{LaunchPlan, PlanKind, ProcessPlan};

fn at(step: SetupStep) -> impl Fn(Errno) -> ChildSetupError {
    move |e| ChildSetupError::new(step, e)
}

fn at_index(step: SetupStep, index: u16) -> impl Fn(Errno) -> ChildSetupError {
    move |e| ChildSetupError::at(step, index, e)
}

const DOT: &std::ffi::CStr = c".";
const SLASH: &std::ffi::CStr = c"/";
const DEV_NULL: &std::ffi::CStr = c"/dev/null";
const TMPFS: &std::ffi::CStr = c"tmpfs";

impl LaunchPlan {
    /// Runs in the forked child (the agent forks with [`LaunchPlan::clone_flags`]
    /// and sets up stdio first). Never returns on success: it executes the
    /// program. On failure it returns which step failed and the errno; the caller
    /// writes that to its error pipe and `_exit`s. Makes no allocation and takes
    /// no lock.
    ///
    /// For an exec this forks once more: the process the agent forked stays
    /// outside the container's PID namespace, relays signals sent to it with
    /// `kill` to the real process, and ends the way it ended (same exit status;
    /// for a signal, the same signal re-raised, or `128 + signal` when that
    /// signal does not end it). It closes all its descriptors, so the error pipe
    /// stays open only in the real process.
    pub fn enter_in_child(&self) -> Result<Infallible, ChildSetupError> {
        sys::default_signal_actions();
        sys::SigSet::empty()
            .apply(libc::SIG_SETMASK)
            .map_err(at(SetupStep::Signals))?;
        match &self.kind {
            PlanKind::Main {
                cgroup_procs,
                root,
                ops,
                late_ops,
                readonly_root,
                hostname,
            } => {
                sys::write_all(cgroup_procs.as_raw_fd(), b"0")
                    .map_err(at(SetupStep::JoinCgroup))?;
                // Rooted at the container's cgroup: the `/sys/fs/cgroup`
                // mounted below shows that cgroup, not the agent's tree.
                sys::unshare(libc::CLONE_NEWCGROUP).map_err(at(SetupStep::CgroupNamespace))?;
                // Modes of the nodes and directories made below are exact.
                sys::umask(0);
                sys::mount(
                    None,
                    SLASH,
                    None,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None,
                )
                .map_err(at(SetupStep::MountPropagation))?;
                // Read-only before the container's own mounts go on top: the
                // rootfs and every mount it came with, not /proc, /dev or the
                // volumes, which keep their own flags.
                if *readonly_root {
                    sys::mount_setattr(root, libc::MOUNT_ATTR_RDONLY, true)
                        .map_err(at(SetupStep::ReadonlyRoot))?;
                }
                for op in ops {
                    run_op(op)?;
                }
                sys::chdir(root).map_err(at(SetupStep::PivotRoot))?;
                sys::pivot_root(DOT, DOT).map_err(at(SetupStep::PivotRoot))?;
                sys::umount2(DOT, libc::MNT_DETACH).map_err(at(SetupStep::PivotRoot))?;
                sys::chdir(SLASH).map_err(at(SetupStep::PivotRoot))?;
                for op in late_ops {
                    run_op(op)?;
                }
                if let Some(name) = hostname {
                    sys::sethostname(name).map_err(at(SetupStep::Hostname))?;
                }
                exec_process(&self.process, false)
            }
            PlanKind::Exec {
                cgroup_procs,
                namespaces,
            } => {
                sys::write_all(cgroup_procs.as_raw_fd(), b"0")
                    .map_err(at(SetupStep::JoinCgroup))?;
                for (fd, flag) in namespaces {
                    sys::setns(fd.as_raw_fd(), flag.bits())
                        .map_err(at(SetupStep::JoinNamespaces))?;
                }
                // Returns in the grandchild only.
                relay::fork_and_relay()?;
                exec_process(&self.process, true)
            }
            PlanKind::Host => exec_process(&self.process, false),
        }
    }
}

/// One mount-table step.
fn run_op(op: &MountOp) -> Result<(), ChildSetupError> {
    match op {
        MountOp::Mount {
            step,
            index,
            source,
            target,
            fstype,
            flags,
            data,
        } => sys::mount(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        )
        .map_err(at_index(*step, *index)),
        MountOp::Remount {
            step,
            index,
            target,
            flags,
        } => sys::mount(
            None,
            target,
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | *flags,
            None,
        )
        .map_err(at_index(*step, *index)),
        MountOp::Propagation {
            step,
            index,
            target,
            flags,
        } => sys::mount(None, target, None, *flags, None).map_err(at_index(*step, *index)),
        MountOp::SetAttr {
            step,
            index,
            target,
            set,
            recursive,
        } => sys::mount_setattr(target, *set, *recursive).map_err(at_index(*step, *index)),
        MountOp::Mask { index, path } => {
            let err = at_index(SetupStep::MaskPath, *index);
            match sys::mount(Some(DEV_NULL), path, None, MsFlags::MS_BIND, None) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                // A directory: an empty read-only tmpfs over it.
                Err(Errno::ENOTDIR) => sys::mount(
                    Some(TMPFS),
                    path,
                    Some(TMPFS),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    None,
                )
                .map_err(err),
                Err(e) => Err(err(e)),
            }
        }
        MountOp::ReadonlyPath { index, path } => {
            let err = at_index(SetupStep::ReadonlyPath, *index);
            match sys::mount(
                Some(path.as_c_str()),
                path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            ) {
                Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(err(e)),
                Ok(()) => sys::mount_setattr(path, libc::MOUNT_ATTR_RDONLY, true).map_err(err),
            }
        }
        MountOp::Mkdir {
            step,
            index,
            path,
            mode,
        } => sys::mkdir(path, *mode).map_err(at_index(*step, *index)),
        MountOp::Touch { step, index, path } => sys::touch(path).map_err(at_index(*step, *index)),
        MountOp::Mknod {
            path,
            mode,
            major,
            minor,
            host,
        } => match sys::mknod(path, *mode, *major, *minor) {
            Ok(()) => Ok(()),
            // No CAP_MKNOD (or a nodev mount): bind the agent's node instead.
            Err(Errno::EPERM) => {
                sys::touch(path).map_err(at(SetupStep::DeviceNode))?;
                sys::mount(Some(host), path, None, MsFlags::MS_BIND, None)
                    .map_err(at(SetupStep::DeviceNode))
            }
            Err(e) => Err(ChildSetupError::new(SetupStep::DeviceNode, e)),
        },
        MountOp::Symlink { target, path } => {
            sys::symlink(target, path).map_err(at(SetupStep::DevSymlink))
        }
    }
}

/// The process part, ending in `execve`.
fn exec_process(p: &ProcessPlan, parent_death_kill: bool) -> Result<Infallible, ChildSetupError> {
    for r in &p.rlimits {
        sys::setrlimit(r.resource, r.soft, r.hard).map_err(at(SetupStep::Rlimit))?;
    }
    if let (Some(filters), false) = (&p.seccomp, p.no_new_privs) {
        filters.install().map_err(at(SetupStep::Seccomp))?;
    }
    if let Some(caps) = &p.caps {
        // Needs CAP_SETPCAP, so before the uid changes.
        for cap in 0..=caps.last_cap {
            if caps.keep & (1u64 << cap) != 0 {
                continue;
            }
            match sys::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0) {
                Ok(()) | Err(Errno::EINVAL) => {}
                Err(e) => return Err(ChildSetupError::new(SetupStep::CapBounding, e)),
            }
        }
        // Keep the permitted set across setuid; capset below trims it.
        sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(at(SetupStep::Capabilities))?;
    }
    sys::setgroups(&p.groups).map_err(at(SetupStep::SetGroups))?;
    sys::setresgid(p.gid).map_err(at(SetupStep::SetGid))?;
    sys::setresuid(p.uid).map_err(at(SetupStep::SetUid))?;
    if let Some(caps) = &p.caps {
        sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(at(SetupStep::Capabilities))?;
        sys::capset(caps.keep).map_err(at(SetupStep::Capabilities))?;
        match sys::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        ) {
            // EINVAL: a kernel without ambient capabilities (before 4.3).
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => return Err(ChildSetupError::new(SetupStep::Capabilities, e)),
        }
    }
    if parent_death_kill {
        // After the uid change, which clears it.
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
            .map_err(at(SetupStep::ParentDeathSignal))?;
    }
    if p.no_new_privs {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(at(SetupStep::NoNewPrivs))?;
    }
    sys::umask(0o022);
    sys::chdir(&p.cwd).map_err(at(SetupStep::Cwd))?;
    if let (Some(filters), true) = (&p.seccomp, p.no_new_privs) {
        // The last step: the fewest system calls run under the filter.
        filters.install().map_err(at(SetupStep::Seccomp))?;
    }

    // execvp's rules: skip candidates that are missing, remember EACCES, stop at
    // any other error.
    let mut denied = false;
    for candidate in &p.candidates {
        match sys::execve(candidate, p.argv.as_ptr(), p.envp.as_ptr()) {
            Errno::EACCES => denied = true,
            Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ENODEV | Errno::ETIMEDOUT => {}
            e => return Err(ChildSetupError::new(SetupStep::Exec, e)),
        }
    }
    Err(ChildSetupError::new(
        SetupStep::Exec,
        if denied { Errno::EACCES } else { Errno::ENOENT },
    ))
}
