//! The pod's shared directory on the host side: container root filesystems
//! bind-mounted into the virtio-fs share, where the guest finds them.
//!
//! The share is `<pod dir>/shared`, mounted by the agent at [`GUEST_SHARED_DIR`].
//! A container's rootfs is bind-mounted at `shared/<container-id>/rootfs` (made
//! read-only with a remount when asked), which the guest sees at
//! `/run/vc/shared/<container-id>/rootfs`.

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
    let result = (|| {
        mount(
            Some(rootfs),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err("bind-mount onto", &target))?;
        // Keep the host's mount events from propagating back into the share.
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err("make private", &target))?;
        if readonly {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(mount_err("remount read-only", &target))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = unbind_rootfs(shared_dir, id);
        return Err(e);
    }
    Ok(target)
}

/// Undoes [`bind_rootfs`]; a rootfs that is not mounted is not an error.
pub fn unbind_rootfs(shared_dir: &Path, id: &ContainerId) -> Result<(), ShareError> {
    let target = host_rootfs_path(shared_dir, id);
    if is_mount_point(&target) {
        // Detach: the guest may still hold files open through virtiofsd.
        umount2(&target, MntFlags::MNT_DETACH).map_err(mount_err("unmount", &target))?;
    }
    let container_dir = shared_dir.join(id.as_str());
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
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(unescape_mountinfo(mp)))
        .collect()
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

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

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
        unbind_rootfs(&shared, &id).expect("unbind");
        assert!(mounts_under(tmp.path()).is_empty());
        assert!(!shared.join("c1").exists());
        assert!(rootfs.join("hello").exists(), "the source is untouched");
    }
}
