//! A container's storage beyond its root directory: volumes (host paths shared
//! through the pod's virtio-fs share), tmpfs mounts, the size of `/dev/shm`,
//! and block devices (a rootfs image, extra disks).
//!
//! This module owns the configuration types, their checks (made before anything
//! is created) and the guest mounts they turn into. The host-side bind mounts
//! live in [`crate::runtime::share`]; see `docs/storage.md`.

mod paths;
mod volume;

pub use paths::check_container_path;
pub(crate) use volume::validate;
pub use volume::{guest_mounts, parse_size, TmpfsConfig, VolumeConfig, VolumeSpecError};
