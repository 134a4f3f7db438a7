//! The container's root directory in the agent: `<state_dir>/<id>/root`, a
//! private bind mount of the rootfs directory (or the mounted block device), so
//! that it is a mount point `pivot_root` can enter. Also the container's own
//! copies of `resolv.conf`, `hosts` and `hostname` in `<state_dir>/<id>/etc`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use vc_proto::Rootfs;

use super::error::ContainerError;

/// The files of `/etc` a container gets from the pod.
pub(crate) const ETC_FILES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];

fn mount_err(action: &'static str, path: &Path) -> impl FnOnce(Errno) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Mount {
        action,
        path,
        source,
    }
}

/// Mounts the rootfs on `root` (an existing empty directory) and makes that
/// mount private. Read-only is applied later, by the child, after it made its
/// mount points (as runc does), so this mount is writable unless the device
/// itself is read-only.
pub(crate) fn mount_rootfs(
    rootfs: &Rootfs,
    root: &Path,
    device_wait: Duration,
) -> Result<(), ContainerError> {
    match rootfs {
        Rootfs::Path(dir) => {
            let dir = Path::new(dir);
            if !dir.is_dir() {
                return Err(ContainerError::RootfsMissing(dir.to_path_buf()));
            }
            mount(
                Some(dir),
                root,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(mount_err("bind-mount the rootfs on", root))?;
        }
        Rootfs::Block { device, fstype } => {
            let dev = super::device::wait_for_device(
                Path::new(device),
                device_wait,
                &super::device::DeviceDirs::default(),
            )?;
            let mounted = mount(
                Some(&dev),
                root,
                Some(fstype.as_str()),
                MsFlags::empty(),
                None::<&str>,
            );
            match mounted {
                // A read-only device (or image): mount it read-only, as mount(8) does.
                Err(Errno::EROFS | Errno::EACCES) => mount(
                    Some(&dev),
                    root,
                    Some(fstype.as_str()),
                    MsFlags::MS_RDONLY,
                    None::<&str>,
                ),
                other => other,
            }
            .map_err(mount_err("mount the rootfs device on", root))?;
        }
    }
    if let Err(e) = mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    ) {
        let _ = umount2(root, MntFlags::MNT_DETACH);
        return Err(mount_err("make private", root)(e));
    }
    Ok(())
}

/// Detaches the container's devpts instance and removes its mount point; one
/// that was never made is fine.
pub(crate) fn unmount_devpts(pts: &Path) -> Result<(), ContainerError> {
    match umount2(pts, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(mount_err("unmount", pts)(e)),
    }
    remove_dir_if_exists(pts)
}

/// Detaches the rootfs mount; a root that is not mounted is fine.
pub(crate) fn unmount_rootfs(root: &Path) -> Result<(), ContainerError> {
    match umount2(root, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(mount_err("unmount", root)(e)),
    }
}

/// Writes the container's copies of the `/etc` files into `etc` and returns
/// them: `hostname` holds the container's hostname when it has one, otherwise
/// the pod's; the others are copies of `<etc_dir>/<name>` when that exists.
pub(crate) fn write_etc_copies(
    etc_dir: &Path,
    etc: &Path,
    hostname: &str,
) -> Result<Vec<(&'static str, PathBuf)>, ContainerError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io {
            action,
            path,
            source,
        }
    };
    let mut out = Vec::new();
    for name in ETC_FILES {
        let copy = etc.join(name);
        let content = if name == "hostname" && !hostname.is_empty() {
            Some(format!("{hostname}\n").into_bytes())
        } else {
            let src = etc_dir.join(name);
            match std::fs::read(&src) {
                Ok(c) => Some(c),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(io("read", &src)(e)),
            }
        };
        if let Some(content) = content {
            if out.is_empty() {
                std::fs::create_dir_all(etc).map_err(io("create", etc))?;
            }
            std::fs::write(&copy, content).map_err(io("write", &copy))?;
            out.push((name, copy));
        }
    }
    Ok(out)
}

/// Removes what `write_etc_copies` wrote.
pub(crate) fn remove_etc_copies(etc: &Path) -> Result<(), ContainerError> {
    for name in ETC_FILES {
        let p = etc.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ContainerError::Io {
                    action: "remove",
                    path: p,
                    source,
                })
            }
        }
    }
    remove_dir_if_exists(etc)
}

/// `rmdir`, fine when already gone. Never recursive: a directory that still
/// holds something (such as a rootfs still mounted) is an error, not deleted.
pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<(), ContainerError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ContainerError::Io {
            action: "remove",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etc_copies() {
        let pod = tempfile::tempdir().expect("tempdir");
        let state = tempfile::tempdir().expect("tempdir");
        std::fs::write(pod.path().join("hosts"), "127.0.0.1 localhost\n").expect("write");
        std::fs::write(pod.path().join("hostname"), "pod\n").expect("write");
        let etc = state.path().join("etc");

        let copies = write_etc_copies(pod.path(), &etc, "web").expect("copies");
        let names: Vec<_> = copies.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            vec!["hosts", "hostname"],
            "no resolv.conf in the pod"
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname")).expect("read"),
            "web\n"
        );

        let copies = write_etc_copies(pod.path(), &etc, "").expect("copies");
        assert_eq!(copies.len(), 2);
        assert_eq!(
            std::fs::read_to_string(etc.join("hostname")).expect("read"),
            "pod\n"
        );

        remove_etc_copies(&etc).expect("remove");
        assert!(!etc.exists());
        remove_etc_copies(&etc).expect("again");
    }

    #[test]
    fn missing_rootfs_is_reported() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = mount_rootfs(
            &Rootfs::Path("/nonexistent/vc-rootfs".into()),
            root.path(),
            Duration::ZERO,
        )
        .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "the container rootfs /nonexistent/vc-rootfs does not exist"
        );
    }

    #[test]
    fn missing_device_times_out() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = mount_rootfs(
            &Rootfs::Block {
                device: "/dev/disk/by-id/vc-test-missing".into(),
                fstype: "ext4".into(),
            },
            root.path(),
            Duration::from_millis(50),
        )
        .expect_err("missing");
        assert!(matches!(
            err,
            ContainerError::DeviceTimeout { millis: 50, .. }
        ));
    }
}
