//! The pod's virtio-fs share on the host: where container root filesystems
//! and volumes are bind-mounted so the guest finds them, built so that the
//! guest cannot change anything the host resolves.
//!
//! ```text
//! <pod dir>/mounts/            host-only, 0700; a bind of itself, shared propagation
//!   <container-id>/rootfs      the container's rootfs bound here (nosuid,nodev[,ro])
//!   <container-id>/volumes/<i> volume i bound here (a directory or a file)
//! <pod dir>/shared/            what virtiofsd exports: a read-only, nosuid, nodev
//!                              bind of mounts/, slave of it and itself shared
//! ```
//!
//! The host makes its mount points only in `mounts/`, which the guest never
//! sees writable: the export is a read-only bind of it, so the guest cannot
//! create, rename or link anything at the levels the host resolves (the
//! share's root, `<id>`, `volumes`). Each bind made in `mounts/` propagates
//! into `shared/` with its own flags (a read-write volume stays writable), and
//! because `shared/` is itself a shared mount point before virtiofsd starts,
//! on into a virtiofsd that runs in its own mount namespace. The guest mounts
//! the export at [`GUEST_SHARED_DIR`] and sees `<id>/rootfs` and
//! `<id>/volumes/<i>` there.
//!
//! Every operation is descriptor-based (see [`crate::beneath`]): the pod
//! directory is opened once, paths under it are resolved with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, and a bind is built detached
//! (`open_tree`), given its flags (`mount_setattr`) and attached onto the
//! opened mount point (`move_mount`). Binds are undone through descriptors too.
//!
//! The runtime records each bind (its target relative to the pod directory,
//! [`rootfs_target`], [`volume_target`], [`EXPORT_TARGETS`]) in the pod's state
//! *before* making it, and undoes binds by that record; see `docs/storage.md`.

mod mountfd;
#[cfg(test)]
mod tests;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use thiserror::Error;

use crate::beneath::{BeneathError, Dir};
use crate::id::ContainerId;
pub use crate::store::{EXPORT_DIR, MOUNTS_DIR};

/// Where the agent mounts the pod's share in the guest.
pub const GUEST_SHARED_DIR: &str = "/run/vc/shared";

/// The pod-level binds, in the order they are made: `mounts/` on itself (to
/// give it shared propagation), then the read-only export.
pub const EXPORT_TARGETS: [&str; 2] = [MOUNTS_DIR, EXPORT_DIR];

/// Most mounts stacked on one target that an unbind takes off.
const MAX_STACKED: usize = 16;

/// Why a bind into the share, or its undoing, failed.
#[derive(Debug, Error)]
pub enum ShareError {
    /// A path under the pod directory could not be opened, made or removed
    /// without following a link.
    #[error(transparent)]
    Path(#[from] BeneathError),
    /// A mount call failed.
    #[error("cannot {action} {}", path.display())]
    Mount {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A recorded target is not one the runtime makes: the record was
    /// tampered with or corrupt, and is not acted on.
    #[error("{} is not a bind target of a pod's share", target.display())]
    ForeignTarget {
        /// The target as recorded.
        target: PathBuf,
    },
    /// Something is still mounted at or below a directory after unmounting:
    /// the directory is kept rather than deleted through it.
    #[error("{} is still mounted; not removing {}", mount.display(), dir.display())]
    StillMounted {
        /// The mount point left.
        mount: PathBuf,
        /// The directory kept.
        dir: PathBuf,
    },
    /// mountinfo could not be read.
    #[error(transparent)]
    MountInfo(#[from] crate::mountinfo::MountInfoError),
}

fn mount_err(action: &'static str, path: PathBuf) -> impl FnOnce(nix::errno::Errno) -> ShareError {
    move |e| ShareError::Mount {
        action,
        path,
        source: e.into(),
    }
}

/// The target of a container's rootfs bind, relative to the pod directory.
pub fn rootfs_target(id: &ContainerId) -> PathBuf {
    Path::new(MOUNTS_DIR).join(id.as_str()).join("rootfs")
}

/// The target of a container's volume `index`, relative to the pod directory.
pub fn volume_target(id: &ContainerId, index: usize) -> PathBuf {
    Path::new(MOUNTS_DIR)
        .join(id.as_str())
        .join("volumes")
        .join(index.to_string())
}

/// The directory of a container's binds, relative to the pod directory.
pub fn container_dir(id: &ContainerId) -> PathBuf {
    Path::new(MOUNTS_DIR).join(id.as_str())
}

/// True when a recorded `target` belongs to container `id`.
pub fn is_container_target(target: &Path, id: &ContainerId) -> bool {
    target.starts_with(container_dir(id))
}

/// The guest-side path of a container's rootfs.
pub fn guest_rootfs_path(id: &ContainerId) -> String {
    format!("{GUEST_SHARED_DIR}/{id}/rootfs")
}

/// The guest-side path of a container's volume `index`.
pub fn guest_volume_path(id: &ContainerId, index: usize) -> String {
    format!("{GUEST_SHARED_DIR}/{id}/volumes/{index}")
}

/// Checks that a recorded target is one the runtime makes: `mounts`,
/// `shared`, `mounts/<id>/rootfs` or `mounts/<id>/volumes/<n>`, with a valid
/// container id. Anything else (absolute, `..`, another shape) is refused.
pub fn check_target(target: &Path) -> Result<(), ShareError> {
    let parts: Vec<&str> = target
        .components()
        .map(|c| match c {
            std::path::Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()
        .unwrap_or_default();
    let ok = match parts.as_slice() {
        [one] => EXPORT_TARGETS.contains(one),
        [MOUNTS_DIR, id, "rootfs"] => ContainerId::new(*id).is_ok(),
        [MOUNTS_DIR, id, "volumes", n] => {
            ContainerId::new(*id).is_ok() && n.parse::<usize>().is_ok_and(|i| i.to_string() == *n)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ShareError::ForeignTarget {
            target: target.to_owned(),
        })
    }
}

/// The share of one pod, from its (canonical) directory opened once.
#[derive(Debug)]
pub struct PodShare {
    pod: Dir,
}

impl PodShare {
    /// Opens the pod directory `pod_dir`, a canonical path the store made.
    pub fn open(pod_dir: &Path) -> Result<Self, ShareError> {
        Ok(Self {
            pod: Dir::open(pod_dir)?,
        })
    }

    /// The pod directory.
    pub fn pod_dir(&self) -> &Path {
        self.pod.path()
    }

    /// The host path of the export (what virtiofsd is given).
    pub fn export_path(&self) -> PathBuf {
        self.pod.path().join(EXPORT_DIR)
    }

    /// Makes the pod-level bind `target`, one of [`EXPORT_TARGETS`]:
    /// `mounts` bound on itself with shared propagation, or `shared` as a
    /// read-only, nosuid, nodev bind of it, slave of it and itself shared.
    pub fn export(&self, target: &str) -> Result<(), ShareError> {
        let path = self.pod.path().join(target);
        let dir = self.pod.open_dir(Path::new(target))?;
        let (source, attrs) = match target {
            MOUNTS_DIR => (
                self.pod.open_dir(Path::new(MOUNTS_DIR))?,
                mountfd::bind_attrs(false),
            ),
            EXPORT_DIR => (
                self.pod.open_dir(Path::new(MOUNTS_DIR))?,
                mountfd::bind_attrs(true),
            ),
            _ => {
                return Err(ShareError::ForeignTarget {
                    target: PathBuf::from(target),
                })
            }
        };
        let tree = mountfd::clone_fd(source.as_fd())
            .map_err(mount_err("clone", source.path().to_owned()))?;
        mountfd::set_attr(tree.as_fd(), attrs, 0, false)
            .map_err(mount_err("set the flags of", path.clone()))?;
        mountfd::attach(tree.as_fd(), dir.as_fd())
            .map_err(mount_err("bind-mount onto", path.clone()))?;
        let propagation: &[libc::c_ulong] = match target {
            MOUNTS_DIR => &[libc::MS_SHARED],
            _ => &[libc::MS_SLAVE, libc::MS_SHARED],
        };
        for &p in propagation {
            if let Err(e) = mountfd::set_attr(tree.as_fd(), 0, p, false) {
                let _ = mountfd::detach(tree.as_fd());
                return Err(mount_err("set the propagation of", path)(e));
            }
        }
        tracing::debug!(path = %path.display(), "share export bound");
        Ok(())
    }

    /// Bind-mounts the directory `rootfs` at [`rootfs_target`] (nosuid,
    /// nodev, read-only with `readonly`, recursively).
    pub fn bind_rootfs(
        &self,
        id: &ContainerId,
        rootfs: &Path,
        readonly: bool,
    ) -> Result<(), ShareError> {
        let tree = self.source_tree(rootfs, readonly)?;
        let target = rootfs_target(id);
        let parent = self.pod.mkdir_all(&container_dir(id), 0o700)?;
        let dir = parent.mkdir(Path::new("rootfs"), 0o700, false)?;
        self.attach(&tree, dir.as_fd(), &target)
    }

    /// Bind-mounts the host path of volume `index` (a directory or a file) at
    /// [`volume_target`], read-only when asked. The mount point is made to
    /// match what the source turned out to be once opened.
    pub fn bind_volume(
        &self,
        id: &ContainerId,
        index: usize,
        host_path: &Path,
        readonly: bool,
    ) -> Result<(), ShareError> {
        let tree = self.source_tree(host_path, readonly)?;
        let is_dir = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&tree))
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(mount_err("inspect", host_path.to_owned()))?;
        let target = volume_target(id, index);
        let volumes = self
            .pod
            .mkdir_all(&container_dir(id).join("volumes"), 0o700)?;
        let name = PathBuf::from(index.to_string());
        let point = if is_dir {
            volumes.mkdir(&name, 0o700, false)?;
            volumes.open_at(&name, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?
        } else {
            drop(volumes.create_file(&name, 0o600)?);
            volumes.open_at(&name, OFlag::O_PATH, Mode::empty())?
        };
        self.attach(&tree, point.as_fd(), &target)?;
        tracing::debug!(container_id = %id, index, host_path = %host_path.display(), readonly, "volume bound into the share");
        Ok(())
    }

    /// A detached recursive copy of `source` (a path the user gave), private
    /// (host mount events under the source stay out of the share), nosuid,
    /// nodev, and read-only with `readonly`.
    fn source_tree(
        &self,
        source: &Path,
        readonly: bool,
    ) -> Result<std::os::fd::OwnedFd, ShareError> {
        let tree =
            mountfd::clone_path(source, true).map_err(mount_err("clone", source.to_owned()))?;
        mountfd::set_attr(
            tree.as_fd(),
            mountfd::bind_attrs(readonly),
            libc::MS_PRIVATE,
            true,
        )
        .map_err(mount_err("set the flags of a bind of", source.to_owned()))?;
        Ok(tree)
    }

    fn attach(
        &self,
        tree: &std::os::fd::OwnedFd,
        point: std::os::fd::BorrowedFd<'_>,
        target: &Path,
    ) -> Result<(), ShareError> {
        mountfd::attach(tree.as_fd(), point)
            .map_err(mount_err("bind-mount onto", self.pod.path().join(target)))
    }

    /// Undoes every mount stacked on the recorded `target` (relative to the
    /// pod directory, checked by [`check_target`]). Nothing mounted there, or
    /// no such path, is not an error: a bind is recorded before it is made.
    pub fn unbind(&self, target: &Path) -> Result<(), ShareError> {
        check_target(target)?;
        let path = self.pod.path().join(target);
        for _ in 0..MAX_STACKED {
            let fd = match self.pod.open_at(target, OFlag::O_PATH, Mode::empty()) {
                Ok(fd) => fd,
                Err(BeneathError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    return Ok(())
                }
                Err(e) => return Err(e.into()),
            };
            match mountfd::detach(fd.as_fd()) {
                Ok(()) => tracing::debug!(path = %path.display(), "unbound"),
                Err(nix::errno::Errno::EINVAL) => return Ok(()),
                Err(e) => return Err(mount_err("unmount", path)(e)),
            }
        }
        Err(ShareError::StillMounted {
            mount: path.clone(),
            dir: path,
        })
    }

    /// Removes `rel` (a directory under the pod directory) once nothing is
    /// mounted at or below it, never crossing a mount point.
    pub fn remove_dir(&self, rel: &Path) -> Result<(), ShareError> {
        let dir = self.pod.path().join(rel);
        refuse_mounted(&dir)?;
        self.pod.remove_tree(rel)?;
        Ok(())
    }

    /// Removes every container directory under `mounts/` (each as
    /// [`Self::remove_dir`] does). A pod without `mounts/` has none.
    pub fn remove_container_dirs(&self) -> Result<(), ShareError> {
        let mounts = match self.pod.open_dir(Path::new(MOUNTS_DIR)) {
            Ok(d) => d,
            Err(BeneathError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        for name in mounts.entries()? {
            self.remove_dir(&Path::new(MOUNTS_DIR).join(name))?;
        }
        Ok(())
    }
}

/// Fails with [`ShareError::StillMounted`] when anything is mounted at or
/// below `dir` (canonical), by mountinfo.
pub fn refuse_mounted(dir: &Path) -> Result<(), ShareError> {
    let mounts = crate::mountinfo::read()?;
    if let Some(m) = crate::mountinfo::under(&mounts, dir).next() {
        return Err(ShareError::StillMounted {
            mount: m.mount_point.clone(),
            dir: dir.to_owned(),
        });
    }
    Ok(())
}

/// True when `path` is a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    crate::mountinfo::read().is_ok_and(|m| m.iter().any(|m| m.mount_point == path))
}

/// Mount points at or under `dir` (for leak checks in tests and cleanup).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mounts = crate::mountinfo::read().unwrap_or_default();
    crate::mountinfo::under(&mounts, dir)
        .map(|m| m.mount_point.clone())
        .collect()
}
