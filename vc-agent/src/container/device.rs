//! Block devices of containers, found without udev: the host names a disk
//! `/dev/disk/by-id/virtio-<serial>` (the link udev would make); the guest has
//! no udev, so when that link is missing the device is the entry of
//! `/sys/block` whose `serial` attribute is `<serial>`, used through its node
//! in devtmpfs. A hot-plugged disk appears some time after the host adds it:
//! [`wait_for_device`] polls until a deadline.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vc_proto::Mount;

use super::error::ContainerError;

/// The prefix of the names udev gives virtio disks by serial.
pub(crate) const BY_ID_VIRTIO: &str = "/dev/disk/by-id/virtio-";

/// Where block devices are listed and where their nodes are.
#[derive(Debug, Clone)]
pub(crate) struct DeviceDirs {
    /// `/sys/block`.
    pub sys_block: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
}

impl Default for DeviceDirs {
    fn default() -> Self {
        Self {
            sys_block: PathBuf::from("/sys/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// The node of the block device whose `serial` is `serial`, if it is there
/// (listed and its node made).
fn by_serial(serial: &str, dirs: &DeviceDirs) -> Option<PathBuf> {
    let entries = std::fs::read_dir(&dirs.sys_block).ok()?;
    for e in entries.flatten() {
        let Ok(found) = std::fs::read_to_string(e.path().join("serial")) else {
            continue;
        };
        if found.trim_end_matches(['\n', '\0', ' ']) == serial {
            let node = dirs.dev.join(e.file_name());
            return node.exists().then_some(node);
        }
    }
    None
}

/// Resolves `device` once: an existing path canonicalized (a link resolved),
/// else a missing `/dev/disk/by-id/virtio-<serial>` looked up by serial.
fn find(device: &Path, dirs: &DeviceDirs) -> Result<Option<PathBuf>, ContainerError> {
    match std::fs::canonicalize(device) {
        Ok(p) => Ok(Some(p)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(device
            .to_str()
            .and_then(|d| d.strip_prefix(BY_ID_VIRTIO))
            .and_then(|serial| by_serial(serial, dirs))),
        Err(source) => Err(ContainerError::Io {
            action: "resolve",
            path: device.to_path_buf(),
            source,
        }),
    }
}

/// Waits up to `limit` for `device` to exist, then returns the device node.
pub(crate) fn wait_for_device(
    device: &Path,
    limit: Duration,
    dirs: &DeviceDirs,
) -> Result<PathBuf, ContainerError> {
    let start = Instant::now();
    loop {
        if let Some(p) = find(device, dirs)? {
            tracing::debug!(device = %device.display(), node = %p.display(), "block device found");
            return Ok(p);
        }
        if start.elapsed() >= limit {
            return Err(ContainerError::DeviceTimeout {
                path: device.to_path_buf(),
                millis: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The spec's mounts with each block device source (a non-bind mount whose
/// source is under `/dev/`) waited for and replaced by its node.
pub(crate) fn resolve_mount_devices(
    mounts: &[Mount],
    limit: Duration,
    dirs: &DeviceDirs,
) -> Result<Vec<Mount>, ContainerError> {
    let mut out = mounts.to_vec();
    for m in &mut out {
        let o = super::mounts::parse_options(&m.options);
        if super::mounts::is_bind(m, &o) || !m.source.starts_with("/dev/") {
            continue;
        }
        let node = wait_for_device(Path::new(&m.source), limit, dirs)?;
        m.source = node.to_string_lossy().into_owned();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(serials: &[(&str, &str)]) -> (tempfile::TempDir, DeviceDirs) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = DeviceDirs {
            sys_block: tmp.path().join("sys/block"),
            dev: tmp.path().join("dev"),
        };
        std::fs::create_dir_all(&dirs.dev).expect("mkdir");
        for (name, serial) in serials {
            let d = dirs.sys_block.join(name);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("serial"), format!("{serial}\n")).expect("write");
            std::fs::write(dirs.dev.join(name), b"").expect("node");
        }
        std::fs::create_dir_all(dirs.sys_block.join("loop0")).expect("no serial");
        (tmp, dirs)
    }

    #[test]
    fn virtio_names_are_found_by_serial() {
        let (_t, dirs) = fake(&[("vda", "vcaaaa"), ("vdb", "vcbbbb")]);
        let node = wait_for_device(
            Path::new("/dev/disk/by-id/virtio-vcbbbb"),
            Duration::ZERO,
            &dirs,
        )
        .expect("found");
        assert_eq!(node, dirs.dev.join("vdb"));
    }

    #[test]
    fn a_missing_serial_times_out() {
        let (_t, dirs) = fake(&[("vda", "vcaaaa")]);
        let err = wait_for_device(
            Path::new("/dev/disk/by-id/virtio-vczzzz"),
            Duration::from_millis(50),
            &dirs,
        )
        .expect_err("missing");
        assert!(matches!(
            err,
            ContainerError::DeviceTimeout { millis: 50, .. }
        ));
    }

    #[test]
    fn mount_sources_under_dev_are_resolved_and_others_kept() {
        let (_t, dirs) = fake(&[("vdc", "vcdisk0")]);
        let m = |source: &str, fstype: &str| Mount {
            source: source.to_owned(),
            destination: "/x".to_owned(),
            fstype: fstype.to_owned(),
            options: Vec::new(),
        };
        let mounts = vec![
            m("/dev/disk/by-id/virtio-vcdisk0", "ext4"),
            m("tmpfs", "tmpfs"),
            m("/dev/disk/by-id/virtio-whatever", "bind"),
        ];
        let out = resolve_mount_devices(&mounts, Duration::ZERO, &dirs).expect("resolved");
        assert_eq!(out[0].source, dirs.dev.join("vdc").to_string_lossy());
        assert_eq!(out[1], mounts[1]);
        assert_eq!(out[2], mounts[2]);
    }
}
