//! The mount table of PID 1: the pseudo filesystems every guest needs, mounted in
//! order before anything else runs.

use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::MsFlags;
use thiserror::Error;

/// One entry of the mount table.
#[derive(Debug, Clone, Copy)]
pub struct MountEntry {
    /// Source (a name for pseudo filesystems).
    pub source: &'static str,
    /// Mount point, created (mode 0755) when missing.
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// Filesystem options.
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// What PID 1 mounts, in order.
pub const MOUNT_TABLE: &[MountEntry] = &[
    MountEntry {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountEntry {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountEntry {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    MountEntry {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    },
    MountEntry {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    MountEntry {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
    },
    MountEntry {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    MountEntry {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "nsdelegate",
    },
];

/// Why the mount table could not be set up.
#[derive(Debug, Error)]
pub enum MountError {
    /// A mount point could not be created.
    #[error("cannot create mount point {target}")]
    Mkdir {
        /// The mount point.
        target: &'static str,
        /// The mkdir error.
        #[source]
        source: std::io::Error,
    },
    /// A mount failed.
    #[error("cannot mount {fstype} on {target}")]
    Mount {
        /// Filesystem type.
        fstype: &'static str,
        /// The mount point.
        target: &'static str,
        /// The errno of mount(2).
        #[source]
        source: Errno,
    },
    /// `/dev/ptmx` could not be pointed at the devpts instance.
    #[error("cannot link /dev/ptmx to pts/ptmx")]
    Ptmx(#[source] std::io::Error),
}

fn mount_one(entry: &MountEntry) -> Result<(), MountError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(entry.target)
        .map_err(|source| MountError::Mkdir {
            target: entry.target,
            source,
        })?;
    let data = (!entry.data.is_empty()).then_some(entry.data);
    match nix::mount::mount(
        Some(entry.source),
        entry.target,
        Some(entry.fstype),
        entry.flags,
        data,
    ) {
        Ok(()) => Ok(()),
        // Already mounted (a kernel with devtmpfs automount, say): keep it.
        Err(Errno::EBUSY) => {
            tracing::debug!(target = entry.target, "already mounted");
            Ok(())
        }
        Err(source) => Err(MountError::Mount {
            fstype: entry.fstype,
            target: entry.target,
            source,
        }),
    }
}

/// `/dev/ptmx` becomes a link to the devpts instance's own `ptmx`, so that
/// `posix_openpt` and the pts numbers agree.
fn link_ptmx() -> Result<(), MountError> {
    let ptmx = PathBuf::from("/dev/ptmx");
    match std::fs::symlink_metadata(&ptmx) {
        Ok(meta) if meta.file_type().is_symlink() => return Ok(()),
        Ok(_) => std::fs::remove_file(&ptmx).map_err(MountError::Ptmx)?,
        Err(_) => {}
    }
    symlink("pts/ptmx", &ptmx).map_err(MountError::Ptmx)
}

/// Turns on the cgroup controllers the root offers for its children, so that
/// container cgroups can use memory, cpu, pids and io limits. Best effort.
fn enable_controllers() {
    let root = "/sys/fs/cgroup";
    let Ok(available) = std::fs::read_to_string(format!("{root}/cgroup.controllers")) else {
        return;
    };
    let wanted: Vec<String> = available
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if let Err(e) = std::fs::write(format!("{root}/cgroup.subtree_control"), wanted.join(" ")) {
        tracing::warn!("cannot enable cgroup controllers {available:?}: {e}");
    }
}

/// Mounts [`MOUNT_TABLE`] in order, links `/dev/ptmx`, enables the cgroup
/// controllers. The first failure is returned.
pub fn mount_all() -> Result<(), MountError> {
    for entry in MOUNT_TABLE {
        mount_one(entry)?;
    }
    link_ptmx()?;
    enable_controllers();
    Ok(())
}
