//! Confinement of QEMU and the helper daemons: who they run as and what they
//! are handed.
//!
//! - QEMU and `vhost-device-vsock` run as an unprivileged host user
//!   ([`VmmUser`], default [`DEFAULT_VMM_USER`], made by `cargo xtask deps`),
//!   switched to in the child before `exec` (as Firecracker's jailer does):
//!   QEMU 7.2 with `-runas` dies with SIGSYS under
//!   `elevateprivileges=deny`, because its filter is installed before the uid
//!   change.
//! - QEMU reaches no file by path but its own ROMs: every file and socket of
//!   the VM is opened by the launching (root) process and handed over as a
//!   descriptor ([`Handoff`]): kernel and initrd as `/proc/self/fd/N`, disks
//!   and console through `-add-fd` fd sets, the monitor as a listening socket,
//!   the vhost-user daemons as connected sockets, the taps as open queues.
//!   The run directory stays root's, mode 0700.
//! - `virtiofsd` keeps root (it serves files as the guest's uids) inside its
//!   namespace (or chroot) sandbox, with the capabilities it does not need
//!   dropped ([`VIRTIOFSD_MODCAPS`]).

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The host user QEMU runs as unless the runtime configuration names another.
pub const DEFAULT_VMM_USER: &str = "vc-vmm";

/// QEMU's seccomp sandbox: its default deny list plus obsolete system calls,
/// every uid/gid change, `fork`/`exec` and scheduler/resource control.
pub const QEMU_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Capabilities `virtiofsd` drops from its default set (`--modcaps`):
/// `mknod` (a guest-made device node would be a door into the host) and
/// `setfcap` (file capabilities; xattrs are off anyway).
pub const VIRTIOFSD_MODCAPS: &str = "-mknod:-setfcap";

/// A host user that QEMU and the vsock daemon run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmUser {
    /// User name.
    pub name: String,
    /// User id (never 0).
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Every group the user is in (primary included), such as `kvm`.
    pub groups: Vec<u32>,
}

/// Why a VM cannot be confined as asked.
#[derive(Debug, Error)]
pub enum ConfineError {
    /// The configured user is missing.
    #[error("host user {name:?} (that QEMU runs as) does not exist: create it with `cargo xtask deps`, or name another in the runtime configuration's vmm_user")]
    NoSuchUser {
        /// The user name.
        name: String,
    },
    /// The configured user is root, or a name that cannot be looked up.
    #[error("host user {name:?} cannot run QEMU: {reason}")]
    BadUser {
        /// The user name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file QEMU reopens through `/proc/self/fd` is not readable by the user.
    #[error(
        "{what} {path} is not readable by host user {user:?}: make it world-readable (mode o+r)"
    )]
    NotReadable {
        /// `kernel` or `initrd`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The user.
        user: String,
    },
    /// KVM asked for, but the user cannot open `/dev/kvm`.
    #[error("host user {user:?} cannot open /dev/kvm read-write: add it to the device's group (usually kvm) or use TCG")]
    KvmAccess {
        /// The user.
        user: String,
    },
    /// A file or socket for QEMU could not be opened.
    #[error("cannot open {what} {path} for QEMU")]
    Open {
        /// What it is.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The vsock daemon's directory could not be prepared.
    #[error("cannot prepare {path} for the vsock daemon")]
    DaemonDir {
        /// The directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

impl VmmUser {
    /// Looks `name` up in the host's user and group databases.
    pub fn lookup(name: &str) -> Result<Self, ConfineError> {
        let bad = |reason: String| ConfineError::BadUser {
            name: name.to_owned(),
            reason,
        };
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| bad(format!("the user database cannot be read ({e})")))?
            .ok_or_else(|| ConfineError::NoSuchUser {
                name: name.to_owned(),
            })?;
        if user.uid.is_root() || user.gid.as_raw() == 0 {
            return Err(bad("it is root or in group root".to_owned()));
        }
        let cname = CString::new(name).map_err(|_| bad("the name holds a NUL".to_owned()))?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| bad(format!("its groups cannot be read ({e})")))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.contains(&0) {
            return Err(bad("it is in group root".to_owned()));
        }
        Ok(VmmUser {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    /// True when the mode bits of `meta` let this user do `want` (a mask of
    /// 4 read, 2 write).
    fn may(&self, meta: &Metadata, want: u32) -> bool {
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if self.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }

    /// Fails unless the user may open `/dev/kvm` read-write.
    pub fn check_kvm(&self) -> Result<(), ConfineError> {
        match std::fs::metadata("/dev/kvm") {
            Ok(meta) if self.may(&meta, 6) => Ok(()),
            _ => Err(ConfineError::KvmAccess {
                user: self.name.clone(),
            }),
        }
    }
}

/// Descriptors handed to a child process: kept open (close-on-exec) in the
/// launching process until the child is spawned, then inherited by it.
#[derive(Debug, Default)]
pub struct Handoff {
    fds: Vec<OwnedFd>,
    borrowed: Vec<RawFd>,
}

impl Handoff {
    /// Keeps `fd` for the child and returns its number.
    pub fn keep(&mut self, fd: impl Into<OwnedFd>) -> RawFd {
        let fd = fd.into();
        let raw = fd.as_raw_fd();
        self.fds.push(fd);
        raw
    }

    /// Also hands over `fd`, which its owner keeps open until the spawn.
    pub fn also(&mut self, fd: RawFd) {
        self.borrowed.push(fd);
    }

    /// The numbers to leave open across `exec`.
    pub fn raw(&self) -> Vec<RawFd> {
        self.fds
            .iter()
            .map(AsRawFd::as_raw_fd)
            .chain(self.borrowed.iter().copied())
            .collect()
    }

    /// Opens a guest image file read-only for QEMU to reopen as
    /// `/proc/self/fd/N` (which skips the directories on the way, such as a
    /// 0700 home, but not the file's own mode), and returns that path.
    pub fn image_file(
        &mut self,
        what: &'static str,
        path: &Path,
        user: Option<&VmmUser>,
    ) -> Result<String, ConfineError> {
        let file = File::open(path).map_err(|source| ConfineError::Open {
            what,
            path: path.to_owned(),
            source,
        })?;
        if let Some(user) = user {
            let meta = file.metadata().map_err(|source| ConfineError::Open {
                what,
                path: path.to_owned(),
                source,
            })?;
            if !user.may(&meta, 4) {
                return Err(ConfineError::NotReadable {
                    what,
                    path: path.to_owned(),
                    user: user.name.clone(),
                });
            }
        }
        Ok(format!("/proc/self/fd/{}", self.keep(file)))
    }

    /// Opens a disk image (read-only or read-write) to hand over in an fd set.
    pub fn disk(&mut self, path: &Path, readonly: bool) -> Result<RawFd, ConfineError> {
        let file = open_disk(path, readonly).map_err(|source| ConfineError::Open {
            what: "disk image",
            path: path.to_owned(),
            source,
        })?;
        Ok(self.keep(file))
    }
}

/// Opens a disk image for QEMU, read-only or read-write.
pub fn open_disk(path: &Path, readonly: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
}

/// Makes `dir` (inside the root-only run directory) a directory owned by
/// `user` with mode 0700: where the vsock daemon creates its sockets.
pub fn daemon_dir(dir: &Path, user: Option<&VmmUser>) -> Result<(), ConfineError> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |source| ConfineError::DaemonDir {
        path: dir.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e)),
    }
    // Opened without following a link: the chown and chmod below act on
    // this directory and nothing it could point to.
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(fail)?;
    if let Some(user) = user {
        std::os::unix::fs::fchown(&fd, Some(user.uid), Some(user.gid)).map_err(fail)?;
    }
    use std::os::unix::fs::PermissionsExt;
    fd.set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn user(uid: u32, groups: Vec<u32>) -> VmmUser {
        VmmUser {
            name: "u".to_owned(),
            uid,
            gid: groups[0],
            groups,
        }
    }

    #[test]
    fn mode_bits_are_read_for_owner_group_and_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").expect("write");
        let set = |mode| {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            std::fs::metadata(&p).expect("stat")
        };
        // The file is root's (uid 0, gid 0).
        let other = user(1000, vec![1000]);
        let in_group = user(1000, vec![1000, 0]);
        assert!(other.may(&set(0o644), 4));
        assert!(!other.may(&set(0o640), 4));
        assert!(in_group.may(&set(0o640), 4));
        assert!(!in_group.may(&set(0o640), 6));
        assert!(!other.may(&set(0o600), 4));
    }

    #[test]
    fn image_files_become_proc_self_fd_paths_and_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("vmlinuz");
        std::fs::write(&p, b"k").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut h = Handoff::default();
        let path = h.image_file("kernel", &p, None).expect("root reads it");
        assert_eq!(path, format!("/proc/self/fd/{}", h.raw()[0]));
        let err = h
            .image_file("kernel", &p, Some(&user(4242, vec![4242])))
            .expect_err("0600 root file");
        assert!(matches!(err, ConfineError::NotReadable { .. }), "{err:?}");
        assert_eq!(h.raw().len(), 1, "nothing kept for a refused file");
    }

    #[test]
    fn a_missing_user_names_xtask_deps() {
        let err = VmmUser::lookup("vc-no-such-user-xyz").expect_err("missing");
        assert!(err.to_string().contains("cargo xtask deps"), "{err}");
        assert!(matches!(
            VmmUser::lookup("root"),
            Err(ConfineError::BadUser { .. })
        ));
    }

    #[test]
    fn the_daemon_dir_is_0700_and_a_link_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("vsock");
        daemon_dir(&d, None).expect("made");
        daemon_dir(&d, None).expect("idempotent");
        let mode = std::fs::metadata(&d).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
        assert!(daemon_dir(&link, None).is_err());
    }
}
