//! Mount points in a read-only rootfs, made on the host before the rootfs is
//! shared.
//!
//! A read-only rootfs is bound into the share read-only, so the agent cannot
//! create the mount points that the image lacks: CRI's sandbox (the pause
//! image is one binary) gets `/proc`, `/sys`, `/dev` and a bind at
//! `/etc/resolv.conf`. runc creates them in the rootfs before it remounts it
//! read-only; vc does the same on the host, before the bind. Each path is
//! resolved beneath the rootfs with no link followed (the rootfs may hold
//! anything its image or an earlier container put there): a path through a
//! link, or one that exists as another kind of file, is left alone, and the
//! agent then reports the mount it cannot make. Existing directories are
//! never changed (no mode is set on them).

use std::io::ErrorKind;
use std::path::{Component, Path};

use crate::beneath::{BeneathError, Dir};
use crate::config::ContainerConfig;

/// Directories a new mount point gets.
const DIR_MODE: u32 = 0o755;

/// A mount point the agent needs: a directory, or an empty file for the bind
/// of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MountPoint {
    /// Absolute, in the container.
    pub path: String,
    /// An empty file rather than a directory.
    pub file: bool,
}

/// The mount points of `config`'s mounts outside `/dev` (the agent mounts a
/// tmpfs there and makes its own): `/proc`, `/sys`, `/dev`, the volumes, the
/// tmpfs mounts and the disks.
pub(super) fn needed(config: &ContainerConfig) -> Vec<MountPoint> {
    let dir = |path: &str| MountPoint {
        path: path.to_owned(),
        file: false,
    };
    let mut points: Vec<MountPoint> = ["/proc", "/sys", "/dev"].into_iter().map(dir).collect();
    points.extend(config.volumes.iter().map(|v| MountPoint {
        path: v.container_path.clone(),
        // The user's path, not something in the share.
        file: std::fs::metadata(&v.host_path).is_ok_and(|m| !m.is_dir()),
    }));
    points.extend(config.tmpfs.iter().map(|t| dir(&t.path)));
    points.extend(config.disks.iter().map(|d| dir(&d.container_path)));
    points.retain(|p| !under_dev(&p.path));
    points
}

/// True for a path strictly below `/dev`.
fn under_dev(path: &str) -> bool {
    let mut parts = Path::new(path)
        .components()
        .filter(|c| *c != Component::RootDir);
    parts.next() == Some(Component::Normal("dev".as_ref())) && parts.next().is_some()
}

/// Makes each missing mount point in `rootfs`; returns those it could not
/// make, with why (for a debug line: the agent reports the failing mount).
pub(super) fn prepare(rootfs: &Path, points: &[MountPoint]) -> Vec<(String, BeneathError)> {
    let root = match Dir::open(rootfs) {
        Ok(root) => root,
        Err(e) => return vec![(rootfs.display().to_string(), e)],
    };
    points
        .iter()
        .filter_map(|p| make(&root, p).err().map(|e| (p.path.clone(), e)))
        .collect()
}

/// Makes one mount point: its missing parents, then itself.
fn make(root: &Dir, point: &MountPoint) -> Result<(), BeneathError> {
    let parts: Vec<&Path> = Path::new(&point.path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(Path::new(name)),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = parts.split_last() else {
        return Ok(());
    };
    let mut dir = None::<Dir>;
    for name in parents {
        let at = dir.as_ref().unwrap_or(root);
        let next = match at.open_dir(name) {
            Ok(d) => d,
            Err(e) if not_found(&e) => match at.mkdir(name, DIR_MODE, false) {
                Ok(d) => d,
                // Made meanwhile by another container's start on the same
                // rootfs: use it as it is.
                Err(e) if already_exists(&e) => at.open_dir(name)?,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        dir = Some(next);
    }
    let at = dir.as_ref().unwrap_or(root);
    let made = if point.file {
        at.create_file(last, 0o644).map(drop)
    } else {
        at.mkdir(last, DIR_MODE, false).map(drop)
    };
    match made {
        Err(e) if already_exists(&e) => Ok(()),
        other => other,
    }
}

fn already_exists(e: &BeneathError) -> bool {
    matches!(e, BeneathError::Io { source, .. } if source.kind() == ErrorKind::AlreadyExists)
}

fn not_found(e: &BeneathError) -> bool {
    matches!(e, BeneathError::Io { source, .. } if source.kind() == ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::{needed, prepare, MountPoint};
    use crate::config::ContainerConfig;
    use crate::storage::{TmpfsConfig, VolumeConfig};

    fn point(path: &str, file: bool) -> MountPoint {
        MountPoint {
            path: path.to_owned(),
            file,
        }
    }

    #[test]
    fn the_points_are_the_defaults_and_the_mounts_outside_dev() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("resolv.conf");
        std::fs::write(&file, "nameserver 192.0.2.1\n").expect("write");
        let mut c = ContainerConfig::new("c".parse().expect("id"), tmp.path(), vec!["/x".into()]);
        c.volumes = vec![
            VolumeConfig {
                host_path: file,
                container_path: "/etc/resolv.conf".into(),
                readonly: true,
            },
            VolumeConfig {
                host_path: tmp.path().to_owned(),
                container_path: "/data".into(),
                readonly: false,
            },
        ];
        c.tmpfs = vec![
            TmpfsConfig {
                path: "/dev/shm".into(),
                size_bytes: None,
                mode: None,
            },
            TmpfsConfig {
                path: "/run".into(),
                size_bytes: None,
                mode: None,
            },
        ];
        assert_eq!(
            needed(&c),
            vec![
                point("/proc", false),
                point("/sys", false),
                point("/dev", false),
                point("/etc/resolv.conf", true),
                point("/data", false),
                point("/run", false),
            ]
        );
    }

    #[test]
    fn missing_points_are_made_and_nothing_else_is_touched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir(root.join("sys")).expect("mkdir");
        std::fs::set_permissions(root.join("sys"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        // A link out of the rootfs is not followed.
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), root.join("etc")).expect("symlink");
        // Another kind of file where a directory is wanted is left alone.
        std::fs::write(root.join("data"), "x").expect("write");
        let failed = prepare(
            root,
            &[
                point("/proc", false),
                point("/sys", false),
                point("/run/deep/er", false),
                point("/etc/resolv.conf", true),
                point("/var/hosts", true),
                point("/data/x", false),
            ],
        );
        assert!(root.join("proc").is_dir());
        assert!(root.join("run/deep/er").is_dir());
        assert!(root.join("var/hosts").is_file());
        let mode = std::fs::metadata(root.join("sys"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "an existing directory kept its mode");
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("list").count(),
            0,
            "nothing made through the link"
        );
        let failed: Vec<&str> = failed.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(failed, ["/etc/resolv.conf", "/data/x"]);
    }

    #[test]
    fn starts_racing_on_one_rootfs_share_the_parents_they_make() {
        // Containers of several pods may share one rootfs: their starts make
        // the same missing parents at once, and none may fail for it.
        for _ in 0..50 {
            let tmp = tempfile::tempdir().expect("tempdir");
            std::thread::scope(|s| {
                for i in 0..4 {
                    let root = tmp.path();
                    s.spawn(move || {
                        let points = [point(&format!("/a/b/c/m{i}"), false)];
                        assert!(prepare(root, &points).is_empty(), "start {i} failed");
                    });
                }
            });
            for i in 0..4 {
                assert!(tmp.path().join(format!("a/b/c/m{i}")).is_dir());
            }
        }
    }
}
