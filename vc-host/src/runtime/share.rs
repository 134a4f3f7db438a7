//! The pod's shared directory on the host side: container root filesystems
//! and volumes bind-mounted into the virtio-fs share, where the guest finds
//! them.
//!
//! The share is `<pod dir>/shared`, mounted by the agent at [`GUEST_SHARED_DIR`].
//! A container's rootfs is bind-mounted at `shared/<container-id>/rootfs` (made
//! read-only with a remount when asked), which the guest sees at
//! `/run/vc/shared/<container-id>/rootfs`; its volume `i` at
//! `shared/<container-id>/volumes/<i>` (`/run/vc/shared/<container-id>/volumes/<i>`).
//! [`unbind_container`] unmounts all of it and removes the directories, never
//! deleting through a mount.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use thiserror::Error;

use crate::id::ContainerId;

/// Where the agent mounts the pod's share in the guest.
pub const GUEST_SHARED_DIR: &str = "/run/vc/shared";

/// Why a bind mount into the share failed.
#[derive(Debug, Error)]
pub enum ShareError {
    /// The mount or unmount failed.
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
    /// Something is still mounted below a container's directory after
    /// unmounting: the directory is kept rather than deleted through it.
    #[error("{} is still mounted; not removing {}", mount.display(), dir.display())]
    StillMounted {
        /// The mount point left.
        mount: PathBuf,
        /// The directory kept.
        dir: PathBuf,
    },
}

fn mount_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(nix::errno::Errno) -> ShareError + 'a {
    move |e| ShareError::Mount {
        action,
        path: path.to_owned(),
        source: e.into(),
    }
}

/// The host-side path of a container's rootfs inside the share.
pub fn host_rootfs_path(shared_dir: &Path, id: &ContainerId) -> PathBuf {
    shared_dir.join(id.as_str()).join("rootfs")
}

/// The guest-side path of a container's rootfs.
pub fn guest_rootfs_path(id: &ContainerId) -> String {
    format!("{GUEST_SHARED_DIR}/{id}/rootfs")
}

/// The host-side path of a container's volume `index` inside the share.
pub fn host_volume_path(shared_dir: &Path, id: &ContainerId, index: usize) -> PathBuf {
    shared_dir
        .join(id.as_str())
        .join("volumes")
        .join(index.to_string())
}

/// The guest-side path of a container's volume `index`.
pub fn guest_volume_path(id: &ContainerId, index: usize) -> String {
    format!("{GUEST_SHARED_DIR}/{id}/volumes/{index}")
}

/// Bind-mounts `rootfs` into the share for container `id`.
pub fn bind_rootfs(
    shared_dir: &Path,
    id: &ContainerId,
    rootfs: &Path,
    readonly: bool,
) -> Result<PathBuf, ShareError> {
    let target = host_rootfs_path(shared_dir, id);
    std::fs::create_dir_all(&target).map_err(|source| ShareError::Mount {
        action: "create",
        path: target.clone(),
        source,
    })?;
    if let Err(e) = bind_at(rootfs, &target, readonly) {
        let _ = unbind_container(shared_dir, id);
        return Err(e);
    }
    Ok(target)
}

/// Bind-mounts the host path of volume `index` (a directory or a file) into
/// the share for container `id`, read-only when asked. On error nothing of
/// this volume is left; the caller undoes the container's other binds with
/// [`unbind_container`].
pub fn bind_volume(
    shared_dir: &Path,
    id: &ContainerId,
    index: usize,
    host_path: &Path,
    readonly: bool,
) -> Result<PathBuf, ShareError> {
    let target = host_volume_path(shared_dir, id, index);
    let parent = target
        .parent()
        .expect("a volume's path in the share has a parent");
    std::fs::create_dir_all(parent).map_err(|source| ShareError::Mount {
        action: "create",
        path: parent.to_owned(),
        source,
    })?;
    let is_dir = std::fs::metadata(host_path)
        .map_err(|source| ShareError::Mount {
            action: "inspect",
            path: host_path.to_owned(),
            source,
        })?
        .is_dir();
    let made = if is_dir {
        std::fs::create_dir(&target)
    } else {
        std::fs::File::create(&target).map(drop)
    };
    made.map_err(|source| ShareError::Mount {
        action: "create",
        path: target.clone(),
        source,
    })?;
    if let Err(e) = bind_at(host_path, &target, readonly) {
        if !is_mount_point(&target) {
            let _ = if is_dir {
                std::fs::remove_dir(&target)
            } else {
                std::fs::remove_file(&target)
            };
        }
        return Err(e);
    }
    tracing::debug!(container_id = %id, index, host_path = %host_path.display(), readonly, "volume bound into the share");
    Ok(target)
}

/// A recursive, private bind of `source` on `target`, remounted read-only
/// when asked; undone when a later step fails.
fn bind_at(source: &Path, target: &Path, readonly: bool) -> Result<(), ShareError> {
    let result = (|| {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err("bind-mount onto", target))?;
        // Keep the host's mount events from propagating back into the share.
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err("make private", target))?;
        if readonly {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(mount_err("remount read-only", target))?;
        }
        Ok(())
    })();
    if result.is_err() && is_mount_point(target) {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
    result
}

/// Undoes [`bind_rootfs`] and [`bind_volume`] for container `id`: every mount
/// below `shared/<id>` is detached (deepest first), then the directory is
/// removed. Nothing mounted is not an error. If a mount is still there after
/// that, the directory is kept ([`ShareError::StillMounted`]): removing it
/// recursively would delete the files of a volume's host directory.
pub fn unbind_container(shared_dir: &Path, id: &ContainerId) -> Result<(), ShareError> {
    let container_dir = shared_dir.join(id.as_str());
    let mut mounts = mounts_under(&container_dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    for target in &mounts {
        // Detach: the guest may still hold files open through virtiofsd.
        match umount2(target, MntFlags::MNT_DETACH) {
            // Already gone with a parent detached before it.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(mount_err("unmount", target)(e)),
        }
    }
    if let Some(mount) = mounts_under(&container_dir).into_iter().next() {
        return Err(ShareError::StillMounted {
            mount,
            dir: container_dir,
        });
    }
    match std::fs::remove_dir_all(&container_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ShareError::Mount {
            action: "remove",
            path: container_dir,
            source,
        }),
    }
}

/// Every mount point of this process, from `/proc/self/mountinfo`.
fn mount_points() -> Vec<PathBuf> {
    crate::mountinfo::read()
        .map(|m| m.into_iter().map(|m| m.mount_point).collect())
        .unwrap_or_default()
}

/// True when `path` is a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|mp| mp == path)
}

/// Mount points under `dir` (for leak checks in tests and cleanup).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|mp| mp.starts_with(dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let id = ContainerId::new("c1").expect("id");
        assert_eq!(guest_rootfs_path(&id), "/run/vc/shared/c1/rootfs");
        assert_eq!(
            host_rootfs_path(Path::new("/run/vc/pods/p/shared"), &id),
            PathBuf::from("/run/vc/pods/p/shared/c1/rootfs")
        );
    }

    /// Privileged: needs root (the test suite runs as root).
    #[test]
    fn bind_and_unbind_readonly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir(&rootfs).expect("mkdir");
        std::fs::write(rootfs.join("hello"), b"hi").expect("write");
        let shared = tmp.path().join("shared");
        let id = ContainerId::new("c1").expect("id");
        let target = bind_rootfs(&shared, &id, &rootfs, true).expect("bind (needs root)");
        assert_eq!(std::fs::read(target.join("hello")).expect("read"), b"hi");
        let err = std::fs::write(target.join("new"), b"x").expect_err("read-only");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        unbind_container(&shared, &id).expect("unbind");
        assert!(mounts_under(tmp.path()).is_empty());
        assert!(!shared.join("c1").exists());
        assert!(rootfs.join("hello").exists(), "the source is untouched");
    }

    /// Privileged: volumes (a directory read-write, a file read-only) bound
    /// next to the rootfs; unbinding removes every mount and directory and
    /// never touches the host's files.
    #[test]
    fn volumes_bind_and_unbind_without_touching_the_host_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs = tmp.path().join("rootfs");
        let dir = tmp.path().join("dir");
        let file = tmp.path().join("file");
        std::fs::create_dir(&rootfs).expect("mkdir");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("data"), b"d").expect("write");
        std::fs::write(&file, b"f").expect("write");
        let shared = tmp.path().join("shared");
        let id = ContainerId::new("c1").expect("id");
        bind_rootfs(&shared, &id, &rootfs, false).expect("bind (needs root)");
        let d = bind_volume(&shared, &id, 0, &dir, false).expect("dir volume");
        let f = bind_volume(&shared, &id, 1, &file, true).expect("file volume");
        assert_eq!(d, shared.join("c1/volumes/0"));
        assert_eq!(guest_volume_path(&id, 1), "/run/vc/shared/c1/volumes/1");
        std::fs::write(d.join("new"), b"n").expect("rw volume");
        assert_eq!(std::fs::read(&f).expect("read"), b"f");
        let err = std::fs::write(&f, b"x").expect_err("read-only");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        assert_eq!(mounts_under(&shared).len(), 3);

        unbind_container(&shared, &id).expect("unbind");
        assert!(mounts_under(tmp.path()).is_empty());
        assert!(!shared.join("c1").exists());
        assert!(dir.join("data").is_file() && dir.join("new").is_file());
        assert_eq!(std::fs::read(&file).expect("read"), b"f");

        let missing = bind_volume(&shared, &id, 0, &tmp.path().join("nope"), false);
        assert!(missing.is_err());
        assert!(mounts_under(tmp.path()).is_empty());
    }
}
