//! Block devices of a container: a rootfs from a raw ext4 image and extra
//! disks at mount paths, given to the guest as virtio-blk. Each disk gets an
//! id derived from its container's id (QEMU node name, device id and virtio
//! serial at once), which the agent finds as `/sys/block/*/serial` and the
//! runtime names `/dev/disk/by-id/virtio-<id>` in the container spec.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::paths::check_container_path;
use super::{ContainerStorage, StorageConfigError, VolumeSpecError};
use crate::hypervisor::DiskSpec;
use crate::id::ContainerId;

/// Most extra disks per container (their ids end in one digit).
pub const MAX_DISKS: usize = 10;

/// An extra disk of a container: a raw image holding a filesystem, mounted
/// at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The raw image file on the host.
    pub image: PathBuf,
    /// Where the filesystem is mounted in the container.
    pub container_path: String,
    /// Its filesystem type (default `ext4`).
    #[serde(default = "default_fstype")]
    pub fstype: String,
    /// Attach and mount it read-only.
    #[serde(default)]
    pub readonly: bool,
}

fn default_fstype() -> String {
    "ext4".to_owned()
}

impl FromStr for DiskConfig {
    type Err = VolumeSpecError;

    /// `IMAGE:CONTAINER`, then optionally `:ro` or `:rw`, then optionally
    /// `:FSTYPE` (default ext4). Checked further by `validate`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VolumeSpecError::Disk(s.to_owned());
        let mut parts = s.split(':');
        let image = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let container = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        let mut disk = DiskConfig {
            image: PathBuf::from(image),
            container_path: container.to_owned(),
            fstype: default_fstype(),
            readonly: false,
        };
        let mut rest = parts.peekable();
        match rest.peek() {
            Some(&"ro") => {
                disk.readonly = true;
                rest.next();
            }
            Some(&"rw") => {
                rest.next();
            }
            _ => {}
        }
        if let Some(fstype) = rest.next() {
            if fstype.is_empty() || !fstype.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad());
            }
            disk.fstype = fstype.to_owned();
        }
        if rest.next().is_some() {
            return Err(bad());
        }
        Ok(disk)
    }
}

/// FNV-1a, 64 bits: a stable short digest of a container id.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The id of a container's disk: `vc`, 16 hex digits of the container id's
/// digest, then `r` for the rootfs image or the disk's index: 19 bytes,
/// within virtio-blk's 20-byte serial.
pub fn disk_id(container: &ContainerId, index: Option<usize>) -> String {
    let suffix = index.map_or_else(|| "r".to_owned(), |i| i.to_string());
    format!("vc{:016x}{suffix}", fnv1a(container.as_str()))
}

/// The guest path the agent resolves to the disk `id`.
pub fn guest_device(id: &str) -> String {
    format!("/dev/disk/by-id/virtio-{id}")
}

/// Every block device of a container: its rootfs image first, then its disks.
pub fn container_disks(c: &ContainerStorage<'_>) -> Vec<DiskSpec> {
    let rootfs = c.rootfs_image.iter().map(|image| DiskSpec {
        id: disk_id(c.id, None),
        path: image.to_path_buf(),
        readonly: c.readonly_rootfs,
    });
    let disks = c.disks.iter().enumerate().map(|(i, d)| DiskSpec {
        id: disk_id(c.id, Some(i)),
        path: d.image.clone(),
        readonly: d.readonly,
    });
    rootfs.chain(disks).collect()
}

/// The mounts of a container's extra disks.
pub fn disk_mounts(c: &ContainerStorage<'_>) -> Vec<vc_proto::Mount> {
    c.disks
        .iter()
        .enumerate()
        .map(|(i, d)| vc_proto::Mount {
            source: guest_device(&disk_id(c.id, Some(i))),
            destination: d.container_path.clone(),
            fstype: d.fstype.clone(),
            options: if d.readonly {
                vec!["ro".to_owned()]
            } else {
                Vec::new()
            },
        })
        .collect()
}

fn image_exists(what: &'static str, image: &std::path::Path) -> Result<(), StorageConfigError> {
    if image.is_file() {
        Ok(())
    } else {
        Err(StorageConfigError::MissingPath {
            what,
            path: image.to_owned(),
        })
    }
}

/// Checks the rootfs source (a directory or an image, exactly one) and the
/// disks: images exist, paths are absolute, normalized and not mounted twice,
/// at most [`MAX_DISKS`].
pub(crate) fn validate(c: &ContainerStorage<'_>) -> Result<(), StorageConfigError> {
    match c.rootfs_image {
        Some(image) => {
            if !c.rootfs.as_os_str().is_empty() {
                return Err(StorageConfigError::Invalid {
                    field: "rootfs_image",
                    reason: "a container has either rootfs or rootfs_image, not both".to_owned(),
                });
            }
            image_exists("container rootfs image", image)?;
        }
        None => {
            if !c.rootfs.is_dir() {
                return Err(StorageConfigError::MissingPath {
                    what: "container root filesystem",
                    path: c.rootfs.to_path_buf(),
                });
            }
        }
    }
    if c.disks.len() > MAX_DISKS {
        return Err(StorageConfigError::Invalid {
            field: "disks",
            reason: format!("{} disks, at most {MAX_DISKS}", c.disks.len()),
        });
    }
    let mut seen: Vec<&str> = c
        .volumes
        .iter()
        .map(|v| v.container_path.as_str())
        .chain(c.tmpfs.iter().map(|t| t.path.as_str()))
        .collect();
    for d in c.disks {
        check_container_path(&d.container_path).map_err(|r| StorageConfigError::Invalid {
            field: "disks.container_path",
            reason: format!("{:?}: {r}", d.container_path),
        })?;
        if seen.contains(&d.container_path.as_str()) {
            return Err(StorageConfigError::Invalid {
                field: "disks.container_path",
                reason: format!("{:?}: the path is mounted twice", d.container_path),
            });
        }
        seen.push(&d.container_path);
        if d.fstype.is_empty() || d.fstype == "bind" {
            return Err(StorageConfigError::Invalid {
                field: "disks.fstype",
                reason: format!("{:?} is not a filesystem type", d.fstype),
            });
        }
        image_exists("disk image", &d.image)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ContainerConfig;

    fn config(tmp: &std::path::Path) -> ContainerConfig {
        ContainerConfig::new(
            ContainerId::new("web-1").expect("id"),
            tmp,
            vec!["sh".into()],
        )
    }

    #[test]
    fn ids_fit_a_virtio_serial_and_differ_per_container_and_disk() {
        let a = ContainerId::new("a").expect("id");
        let b = ContainerId::new("b").expect("id");
        let long = ContainerId::new("x".repeat(64)).expect("id");
        for id in [
            disk_id(&a, None),
            disk_id(&a, Some(9)),
            disk_id(&long, Some(0)),
        ] {
            assert!(id.len() <= 20, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        assert_ne!(disk_id(&a, None), disk_id(&b, None));
        assert_ne!(disk_id(&a, Some(0)), disk_id(&a, Some(1)));
        assert_eq!(disk_id(&a, Some(0)), disk_id(&a, Some(0)), "stable");
        assert_eq!(
            guest_device("vc1"),
            "/dev/disk/by-id/virtio-vc1",
            "the name udev would give it"
        );
    }

    #[test]
    fn disks_become_specs_and_mounts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let image = tmp.path().join("img");
        std::fs::write(&image, b"").expect("write");
        let mut c = config(tmp.path());
        c.rootfs = PathBuf::new();
        c.rootfs_image = Some(image.clone());
        c.readonly_rootfs = true;
        c.disks = vec![DiskConfig {
            image: image.clone(),
            container_path: "/data".to_owned(),
            fstype: default_fstype(),
            readonly: false,
        }];
        validate(&c.storage()).expect("valid");
        let specs = container_disks(&c.storage());
        assert_eq!(specs.len(), 2);
        assert!(specs[0].id.ends_with('r') && specs[0].readonly);
        assert!(specs[1].id.ends_with('0') && !specs[1].readonly);
        let mounts = disk_mounts(&c.storage());
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].source, guest_device(&specs[1].id));
        assert_eq!(mounts[0].fstype, "ext4");
        assert_eq!(mounts[0].destination, "/data");
    }

    #[test]
    fn validation_refuses_what_cannot_work() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let image = tmp.path().join("img");
        std::fs::write(&image, b"").expect("write");
        let mut c = config(tmp.path());
        c.rootfs_image = Some(image.clone());
        assert!(
            matches!(
                validate(&c.storage()),
                Err(StorageConfigError::Invalid { .. })
            ),
            "both"
        );
        c.rootfs = PathBuf::new();
        c.rootfs_image = Some(tmp.path().join("missing"));
        let err = validate(&c.storage()).expect_err("missing image");
        assert!(
            err.to_string().starts_with("container rootfs image "),
            "{err}"
        );
        c.rootfs_image = None;
        let err = validate(&c.storage()).expect_err("no rootfs at all");
        assert!(
            matches!(err, StorageConfigError::MissingPath { .. }),
            "{err}"
        );
        c.rootfs = tmp.path().to_owned();
        let disk = |p: &str| DiskConfig {
            image: image.clone(),
            container_path: p.to_owned(),
            fstype: default_fstype(),
            readonly: false,
        };
        c.disks = vec![disk("/a"), disk("/a")];
        assert!(validate(&c.storage()).is_err(), "twice");
        c.disks = vec![disk("a")];
        assert!(validate(&c.storage()).is_err(), "relative");
        c.disks = (0..11).map(|i| disk(&format!("/d{i}"))).collect();
        assert!(validate(&c.storage()).is_err(), "too many");
        c.disks = vec![DiskConfig {
            image: tmp.path().join("nope"),
            ..disk("/a")
        }];
        let err = validate(&c.storage()).expect_err("missing disk");
        assert!(err.to_string().starts_with("disk image "), "{err}");
    }

    #[test]
    fn disks_parse_from_the_command_line_form() {
        let d: DiskConfig = "/img/data.ext4:/data".parse().expect("plain");
        assert_eq!(d.image, PathBuf::from("/img/data.ext4"));
        assert_eq!(d.container_path, "/data");
        assert_eq!((d.fstype.as_str(), d.readonly), ("ext4", false));
        let d: DiskConfig = "/img/d:/d:ro".parse().expect("ro");
        assert!(d.readonly);
        let d: DiskConfig = "/img/d:/d:rw:xfs".parse().expect("rw and fstype");
        assert_eq!((d.fstype.as_str(), d.readonly), ("xfs", false));
        let d: DiskConfig = "/img/d:/d:ext2".parse().expect("fstype alone");
        assert_eq!(d.fstype, "ext2");
        for bad in [
            "",
            "/img/d",
            ":/d",
            "/img/d:",
            "/img/d:/d:ro:ext4:x",
            "/img/d:/d:e x",
        ] {
            assert!(bad.parse::<DiskConfig>().is_err(), "{bad:?}");
        }
    }
}
