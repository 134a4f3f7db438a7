//! Containers in the guest: rootfs, mount table, namespaces, cgroup, and the
//! launch of their processes.
//!
//! This module owns everything between a [`ContainerSpec`] and a process running
//! inside the container; the agent's process module owns forking, stdio, the
//! error pipe and reaping. The seam:
//!
//! 0. PID 1 calls [`leave_initramfs`] first thing at boot: `pivot_root` does not
//!    work on the initramfs root itself.
//! 1. [`Container::create`] prepares the container without starting anything:
//!    `/run/vc/containers/<id>/root` becomes a private mount of the rootfs
//!    (`pivot_root` needs a mount point), mount points are made in it, the
//!    spec's mounts are checked and resolved inside the rootfs, and the cgroup
//!    `/sys/fs/cgroup/vc/<id>` is created with the spec's limits.
//! 2. [`Container::launch_plan`] turns a [`ProcessSpec`] into a [`LaunchPlan`]:
//!    every string a `CString`, every descriptor open, nothing left to allocate.
//! 3. The agent forks with [`LaunchPlan::clone_flags`], sets up stdio, and calls
//!    [`LaunchPlan::enter_in_child`], which execs or returns a
//!    [`ChildSetupError`] for the error pipe.
//! 4. [`Container::update`], [`Container::stats`], [`Container::freeze`],
//!    [`Container::pids`], [`Container::oom_kills`] act on the cgroup while it
//!    runs; [`Container::destroy`] kills what is left, unmounts and removes.
//!
//! The methods block (file system and cgroup work, bounded waits): call them
//! from `spawn_blocking`. See `docs/containers.md` for the full picture.

mod caps;
pub(crate) mod cgroup;
mod child;
mod device;
mod error;
pub(crate) mod initramfs;
mod masks;
mod mounts;
mod plan;
mod resolve;
mod rlimit;
mod rootfs;
mod seccomp;

#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use vc_proto::{ContainerSpec, ContainerStats, ProcessSpec, Resources, Seccomp};

use self::cgroup::{ContainerCgroup, Limits};
pub use self::error::{CgroupsRsError, ChildSetupError, ContainerError, SetupStep};
pub use self::initramfs::leave_initramfs;
use self::mounts::MountOp;
pub use self::plan::LaunchPlan;
use self::plan::{PlanKind, ProcessPlan};
pub use self::seccomp::SeccompError;

/// Where containers live in the guest. [`Default`] is the guest's layout; tests
/// point it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    /// Per-container directories: `<state_dir>/<id>/root` and `<id>/etc`.
    pub state_dir: PathBuf,
    /// Where the agent writes the pod's `resolv.conf`, `hosts` and `hostname`.
    pub etc_dir: PathBuf,
    /// The cgroup2 mount.
    pub cgroup_root: PathBuf,
    /// The cgroup holding every container, relative to `cgroup_root`.
    pub cgroup_parent: String,
    /// How long to wait for a [`Rootfs::Block`](vc_proto::Rootfs::Block) device.
    pub device_wait: Duration,
}

impl Default for ContainerPaths {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/vc/containers"),
            etc_dir: PathBuf::from("/run/vc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "vc".to_string(),
            device_wait: Duration::from_secs(10),
        }
    }
}

/// Which process a [`LaunchPlan`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    /// The container's main process: new namespaces, the mount table,
    /// `pivot_root`.
    Main,
    /// One more process, in the namespaces of the running main process
    /// (`main_pid` in the agent's PID namespace).
    Exec {
        /// The main process.
        main_pid: i32,
    },
}

/// Checks an id the way the host does: 1 to 64 of `[A-Za-z0-9_.-]`, and not `.`
/// or `..` (it names a directory).
pub fn validate_id(id: &str) -> Result<(), ContainerError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidId(id.to_string()))
    }
}

/// One container: its root mount, planned mount table, and cgroup.
#[derive(Debug)]
pub struct Container {
    id: String,
    dir: PathBuf,
    root: PathBuf,
    /// The container's devpts instance, mounted in the agent's namespace.
    pts: PathBuf,
    readonly_rootfs: bool,
    hostname: Option<CString>,
    ops: Vec<MountOp>,
    late_ops: Vec<MountOp>,
    cgroup: ContainerCgroup,
    seccomp: Seccomp,
}

/// Undoes a half-made `create` when dropped before `disarm`.
struct CreateGuard<'a> {
    dir: &'a Path,
    root: &'a Path,
    pts: &'a Path,
    mounted: bool,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = rootfs::unmount_devpts(self.pts) {
            tracing::warn!(error = %e, "cleanup after a failed create");
            return;
        }
        if self.mounted {
            if let Err(e) = rootfs::unmount_rootfs(self.root) {
                tracing::warn!(error = %e, "cleanup after a failed create");
                return;
            }
        }
        let _ = rootfs::remove_etc_copies(&self.dir.join("etc"));
        let _ = rootfs::remove_dir_if_exists(self.root);
        let _ = rootfs::remove_dir_if_exists(self.dir);
    }
}

impl Container {
    /// Prepares the container of `spec` in the guest's layout (see
    /// [`ContainerPaths::default`]).
    pub fn create(spec: &ContainerSpec) -> Result<Container, ContainerError> {
        Self::create_in(spec, &ContainerPaths::default())
    }

    /// Prepares the container of `spec` under `paths`: checks the spec, mounts
    /// the rootfs on `<state_dir>/<id>/root`, creates mount points, resolves the
    /// spec's mounts inside the rootfs, writes the `/etc` copies, creates the
    /// cgroup with the limits. No process yet. On error nothing is left behind.
    pub fn create_in(
        spec: &ContainerSpec,
        paths: &ContainerPaths,
    ) -> Result<Container, ContainerError> {
        Self::create_with(spec, &Seccomp::Default, paths)
    }

    /// As [`Container::create_in`], with a seccomp choice for every process of
    /// the container. A profile is validated and compiled (for the main
    /// process's capabilities) before anything is made.
    pub fn create_with(
        spec: &ContainerSpec,
        seccomp: &Seccomp,
        paths: &ContainerPaths,
    ) -> Result<Container, ContainerError> {
        validate_id(&spec.id)?;
        seccomp::check(
            seccomp,
            caps::keep_mask(spec.process.capabilities.as_deref())?,
        )?;
        initramfs::check_pivot_possible()?;
        mounts::validate(&spec.mounts)?;
        masks::validate(&spec.masked_paths, &spec.readonly_paths)?;
        Limits::from_resources(&spec.resources)?;
        let hostname = match spec.hostname.as_str() {
            "" => None,
            h if h.len() > 64 => return Err(ContainerError::HostnameTooLong(h.to_string())),
            h => Some(CString::new(h).map_err(|_| ContainerError::NulByte { what: "hostname" })?),
        };

        let dir = paths.state_dir.join(&spec.id);
        let root = dir.join("root");
        let pts = dir.join("pts");
        std::fs::create_dir_all(&paths.state_dir).map_err(|source| ContainerError::Io {
            action: "create",
            path: paths.state_dir.clone(),
            source,
        })?;
        std::fs::create_dir(&dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                ContainerError::Exists(spec.id.clone())
            } else {
                ContainerError::Io {
                    action: "create",
                    path: dir.clone(),
                    source,
                }
            }
        })?;
        let mut guard = CreateGuard {
            dir: &dir,
            root: &root,
            pts: &pts,
            mounted: false,
            armed: true,
        };
        std::fs::create_dir(&root).map_err(|source| ContainerError::Io {
            action: "create",
            path: root.clone(),
            source,
        })?;
        rootfs::mount_rootfs(&spec.rootfs, &root, paths.device_wait)?;
        guard.mounted = true;

        mounts::mount_devpts(&pts)?;
        let defaults = mounts::prepare_defaults(&root)?;
        let mut ops = mounts::default_ops(&defaults, &pts, mounts::spec_has_shm(&spec.mounts))?;
        let spec_mounts = device::resolve_mount_devices(
            &spec.mounts,
            paths.device_wait,
            &device::DeviceDirs::default(),
        )?;
        ops.extend(mounts::spec_ops(&root, &defaults.dev, &spec_mounts)?);
        let mut copies =
            rootfs::write_etc_copies(&paths.etc_dir, &dir.join("etc"), &spec.hostname)?;
        // A file the spec mounts itself (CRI binds its own `/etc/hosts`,
        // `/etc/resolv.conf`, `/etc/hostname`) is the spec's, not the pod's copy.
        copies.retain(|(name, _)| !mounts::spec_mounts_on(&spec.mounts, &["etc", name]));
        ops.extend(mounts::etc_ops(&root, spec.readonly_rootfs, &copies)?);
        let late_ops = masks::ops(&spec.masked_paths, &spec.readonly_paths)?;

        let cgroup = ContainerCgroup::create(
            &paths.cgroup_root,
            &paths.cgroup_parent,
            &spec.id,
            &spec.resources,
            &disk_rules(&spec_mounts),
        )?;
        guard.armed = false;
        drop(guard);
        tracing::info!(container = %spec.id, root = %root.display(), cgroup = %cgroup.dir().display(), "container created");
        Ok(Container {
            id: spec.id.clone(),
            dir,
            root,
            pts,
            readonly_rootfs: spec.readonly_rootfs,
            hostname,
            ops,
            late_ops,
            cgroup,
            seccomp: seccomp.clone(),
        })
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The root mount in the agent's view (`<state_dir>/<id>/root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup directory.
    pub fn cgroup_dir(&self) -> &Path {
        self.cgroup.dir()
    }

    /// The cgroup's `memory.events`: the kernel marks it modified (inotify
    /// `IN_MODIFY`, `POLLPRI`) when a counter such as `oom_kill` moves.
    pub fn memory_events_path(&self) -> PathBuf {
        self.cgroup.memory_events_path()
    }

    /// Prepares the launch of `process`; no fork. For [`LaunchKind::Exec`] the
    /// main process's namespaces are opened now, so a main process that is gone
    /// is reported here.
    pub fn launch_plan(
        &self,
        process: &ProcessSpec,
        kind: LaunchKind,
    ) -> Result<LaunchPlan, ContainerError> {
        let mut process = ProcessPlan::new(process, true)?;
        let keep = process.caps.map_or(0, |c| c.keep);
        process.seccomp = seccomp::plan(&self.seccomp, keep)?;
        let cgroup_procs = self.cgroup.open_procs()?;
        let kind = match kind {
            LaunchKind::Main => PlanKind::Main {
                cgroup_procs,
                root: CString::new(self.root.as_os_str().as_bytes())
                    .map_err(|_| ContainerError::NulByte { what: "path" })?,
                ops: self.ops.clone(),
                late_ops: self.late_ops.clone(),
                readonly_root: self.readonly_rootfs,
                hostname: self.hostname.clone(),
            },
            LaunchKind::Exec { main_pid } => PlanKind::Exec {
                cgroup_procs,
                namespaces: open_namespaces(main_pid)?,
            },
        };
        let ptmx = CString::new(self.pts.join("ptmx").as_os_str().as_bytes())
            .map_err(|_| ContainerError::NulByte { what: "path" })?;
        Ok(LaunchPlan {
            kind,
            process,
            ptmx: Some(ptmx),
        })
    }

    /// Changes the limits set in `r` (`None` leaves one as it is, `u64::MAX`
    /// lifts it).
    pub fn update(&self, r: &Resources) -> Result<(), ContainerError> {
        self.cgroup.update(r)?;
        tracing::info!(container = %self.id, ?r, "container resources updated");
        Ok(())
    }

    /// Usage from the cgroup.
    pub fn stats(&self) -> Result<ContainerStats, ContainerError> {
        self.cgroup.stats()
    }

    /// Freezes or thaws every process (`cgroup.freeze`), waiting until the
    /// kernel reports it done.
    pub fn freeze(&self, frozen: bool) -> Result<(), ContainerError> {
        self.cgroup.freeze(frozen)?;
        tracing::info!(container = %self.id, frozen, "container freezer state changed");
        Ok(())
    }

    /// Every process of the container (pids in the agent's PID namespace).
    pub fn pids(&self) -> Result<Vec<i32>, ContainerError> {
        self.cgroup.pids()
    }

    /// How many processes the kernel OOM-killed in the container so far
    /// (`memory.events` `oom_kill`).
    pub fn oom_kills(&self) -> Result<u64, ContainerError> {
        self.cgroup.oom_kills()
    }

    /// Kills whatever still runs in the cgroup, removes it, unmounts the root,
    /// and removes the container's directory. Every step is tried; the first
    /// error is returned.
    pub fn destroy(self) -> Result<(), ContainerError> {
        let mut first: Option<ContainerError> = None;
        let mut note = |r: Result<(), ContainerError>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "container teardown");
                first.get_or_insert(e);
            }
        };
        note(self.cgroup.kill_and_remove());
        let pts = rootfs::unmount_devpts(&self.pts);
        let mut unmounted_ok = pts.is_ok();
        note(pts);
        let unmounted = rootfs::unmount_rootfs(&self.root);
        unmounted_ok &= unmounted.is_ok();
        note(unmounted);
        note(rootfs::remove_etc_copies(&self.dir.join("etc")));
        if unmounted_ok {
            note(rootfs::remove_dir_if_exists(&self.root));
            note(rootfs::remove_dir_if_exists(&self.dir));
        }
        match first {
            None => {
                tracing::info!(container = %self.id, "container destroyed");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

/// Opens the cgroup, ipc, uts, pid and mount namespaces of `pid`, in the order
/// an exec joins them (mount last: it changes the root).
fn open_namespaces(pid: i32) -> Result<Vec<(OwnedFd, CloneFlags)>, ContainerError> {
    [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ]
    .into_iter()
    .map(|(name, flag)| {
        let path = format!("/proc/{pid}/ns/{name}");
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| ContainerError::MainProcessGone { pid, source })?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        Ok((unsafe { OwnedFd::from_raw_fd(fd) }, flag))
    })
    .collect()
}

/// The device rules for the block devices the container's spec mounts
/// (resolved sources under `/dev/` of non-bind mounts): its first process
/// mounts them inside its cgroup, whose allow-list would refuse them
/// otherwise. Sources that are not block devices need no rule.
fn disk_rules(mounts: &[vc_proto::Mount]) -> Vec<cgroup::DeviceRule> {
    use std::os::unix::fs::FileTypeExt as _;
    use std::os::unix::fs::MetadataExt as _;
    mounts
        .iter()
        .filter_map(|m| {
            let options = mounts::parse_options(&m.options);
            if !m.source.starts_with("/dev/") || mounts::is_bind(m, &options) {
                return None;
            }
            let meta = std::fs::metadata(&m.source).ok()?;
            let readonly = options.flags.contains(nix::mount::MsFlags::MS_RDONLY);
            meta.file_type()
                .is_block_device()
                .then(|| cgroup::disk_rule(meta.rdev(), readonly))
        })
        .collect()
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "web-1", "A_b.c", &"x".repeat(64)] {
            validate_id(ok).expect(ok);
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exec_of_a_missing_process_is_reported() {
        // pid_max is at most 2^22: this pid cannot exist.
        let err = open_namespaces(i32::MAX).expect_err("no such process");
        assert!(matches!(err, ContainerError::MainProcessGone { .. }));
    }
}
