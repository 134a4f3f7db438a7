//! A container's storage beyond its root directory: volumes (host paths shared
//! through the pod's virtio-fs share), tmpfs mounts, the size of `/dev/shm`,
//! and block devices (a rootfs image, extra disks).
//!
//! This module owns the configuration types, their checks (made before anything
//! is created) and the guest mounts they turn into. It sees a container's
//! configuration only through [`ContainerStorage`] (made by
//! `ContainerConfig::storage`), and reports to the configuration's checks
//! with [`StorageConfigError`]: it depends on neither `config` nor the
//! runtime. The host-side bind mounts live in the runtime's `share` module;
//! see `docs/storage.md`.

mod disk;
mod paths;
mod volume;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::id::ContainerId;

pub(crate) use disk::validate as validate_disks;
pub use disk::{container_disks, disk_id, disk_mounts, guest_device, DiskConfig, MAX_DISKS};
pub use paths::check_container_path;
pub(crate) use volume::validate;
pub use volume::{guest_mounts, parse_size, TmpfsConfig, VolumeConfig, VolumeSpecError};

/// What storage needs of a container's configuration, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct ContainerStorage<'a> {
    /// The container's id (disk ids derive from it).
    pub id: &'a ContainerId,
    /// Its root directory (empty when it boots from an image).
    pub rootfs: &'a Path,
    /// Its root filesystem image, if any.
    pub rootfs_image: Option<&'a Path>,
    /// The rootfs is read-only.
    pub readonly_rootfs: bool,
    /// Host paths shared into it.
    pub volumes: &'a [VolumeConfig],
    /// Its tmpfs mounts.
    pub tmpfs: &'a [TmpfsConfig],
    /// Size of its `/dev/shm`.
    pub shm_size_bytes: Option<u64>,
    /// Its extra disks.
    pub disks: &'a [DiskConfig],
}

/// A storage setting that cannot work. The configuration's checks report it
/// as their own error, variant for variant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StorageConfigError {
    /// A path that must exist does not.
    #[error("{what} {} does not exist", path.display())]
    MissingPath {
        /// What the path is for.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A field has a value that cannot work.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Every mount of a container's spec: volumes (each from
/// `volume_source(index)`, its path in the guest's share), tmpfs,
/// `/dev/shm`, and its disks, parents before children.
pub fn container_mounts(
    c: &ContainerStorage<'_>,
    volume_source: impl Fn(usize) -> String,
) -> Vec<vc_proto::Mount> {
    let mut mounts = guest_mounts(c.volumes, c.tmpfs, c.shm_size_bytes, volume_source);
    mounts.extend(disk_mounts(c));
    mounts.sort_by_key(|m| paths::depth(&m.destination));
    mounts
}
