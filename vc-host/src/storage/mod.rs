//! A container's storage beyond its root directory: volumes (host paths shared
//! through the pod's virtio-fs share), tmpfs mounts, the size of `/dev/shm`,
//! and block devices (a rootfs image, extra disks).
//!
//! This module owns the configuration types, their checks (made before anything
//! is created) and the guest mounts they turn into. The host-side bind mounts
//! live in [`crate::runtime::share`]; see `docs/storage.md`.

mod disk;
mod paths;
mod volume;

pub(crate) use disk::validate as validate_disks;
pub use disk::{container_disks, disk_id, disk_mounts, guest_device, DiskConfig, MAX_DISKS};
pub use paths::check_container_path;
pub(crate) use volume::validate;
pub use volume::{guest_mounts, parse_size, TmpfsConfig, VolumeConfig, VolumeSpecError};

/// Every mount of a container's spec: volumes (from the share), tmpfs,
/// `/dev/shm`, and its disks, parents before children.
pub fn container_mounts(c: &crate::config::ContainerConfig) -> Vec<vc_proto::Mount> {
    let mut mounts = guest_mounts(&c.volumes, &c.tmpfs, c.shm_size_bytes, |i| {
        crate::runtime::share::guest_volume_path(&c.id, i)
    });
    mounts.extend(disk_mounts(c));
    mounts.sort_by_key(|m| paths::depth(&m.destination));
    mounts
}
