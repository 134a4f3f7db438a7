//! A task's root filesystem on the host.
//!
//! With a snapshotter, containerd sends the rootfs as mounts (overlayfs, or a
//! bind for the native snapshotter) in `CreateTaskRequest.rootfs`: the shim
//! mounts them at `<bundle>/rootfs` and unmounts them on Delete (or in the
//! `delete` cleanup after a dead shim). Without mounts (`ctr run --rootfs
//! DIR`, or a bundle made by hand), the spec's `root.path` is used as it is.
//! vc then bind-mounts that directory into the pod's share.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use tracing::{debug, info, warn};

/// Why a rootfs cannot be set up or taken down.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The mount point cannot be made.
    #[error("cannot create the rootfs mount point {}", path.display())]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A mount failed.
    #[error("cannot mount the {fstype} rootfs from {source_path} at {}", target.display())]
    Mount {
        /// The filesystem type.
        fstype: String,
        /// The mount's source.
        source_path: String,
        /// The mount point.
        target: PathBuf,
        /// The shim library's error.
        #[source]
        source: Box<containerd_shim::Error>,
    },
    /// Unmounting failed.
    #[error("cannot unmount the rootfs at {}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The shim library's error.
        #[source]
        source: Box<containerd_shim::Error>,
    },
    /// The path is not UTF-8 (the shim library takes strings).
    #[error("the rootfs path {} is not UTF-8", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
}

/// The directory a bundle's mounts go to.
pub fn mount_point(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Mounts containerd's rootfs mounts at `<bundle>/rootfs`, in order.
/// Returns the mount point, or `None` when there are no mounts. On error
/// nothing stays mounted.
pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<Option<PathBuf>, RootfsError> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let target = mount_point(bundle);
    std::fs::create_dir_all(&target).map_err(|source| RootfsError::MountPoint {
        path: target.clone(),
        source,
    })?;
    for m in mounts {
        let fstype = Some(m.type_.as_str()).filter(|t| !t.is_empty());
        let source = Some(m.source.as_str()).filter(|s| !s.is_empty());
        debug!(fstype = ?fstype, source = ?source, options = ?m.options, "mounting rootfs");
        if let Err(e) = containerd_shim::mount::mount_rootfs(fstype, source, &m.options, &target) {
            if let Err(undo) = unmount(bundle) {
                warn!(error = %undo, "cannot undo a partial rootfs mount");
            }
            return Err(RootfsError::Mount {
                fstype: m.type_.clone(),
                source_path: m.source.clone(),
                target,
                source: Box::new(e),
            });
        }
    }
    info!(target = %target.display(), "rootfs mounted");
    Ok(Some(target))
}

/// Unmounts everything at and under `<bundle>/rootfs` (nothing mounted is
/// not an error).
pub fn unmount(bundle: &Path) -> Result<(), RootfsError> {
    let target = mount_point(bundle);
    let text = target.to_str().ok_or_else(|| RootfsError::NotUtf8 {
        path: target.clone(),
    })?;
    containerd_shim::mount::umount_recursive(Some(text), 0).map_err(|source| RootfsError::Unmount {
        target: target.clone(),
        source: Box::new(source),
    })
}
