//! Filesystem operations confined beneath a directory the host opened, that
//! never follow a link: how the runtime touches anything under its state root.
//!
//! A [`Dir`] is an open directory. Every path given to its methods is resolved
//! from that descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`:
//! a symbolic link anywhere in it (absolute or relative, to a file or a
//! directory) or a `..` that climbs out is refused by the kernel, not checked
//! by us afterwards. Files are made with `O_CREAT | O_EXCL | O_NOFOLLOW`,
//! directories with `mkdirat` and then opened the same way, and both get their
//! mode set exactly with `fchmod` on the new descriptor, whatever the umask.
//! [`Dir::remove_tree`] deletes without ever crossing a mount point.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use thiserror::Error;

/// Why an operation beneath a directory failed.
#[derive(Debug, Error)]
pub enum BeneathError {
    /// The system refused (`ELOOP` or `EXDEV` when a link or `..` was in the way).
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path, as the runtime names it.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A path given was not a plain relative path (absolute, or with `.`/`..`).
    #[error("{} is not a plain relative path", path.display())]
    NotRelative {
        /// The path.
        path: PathBuf,
    },
    /// Removal reached a mount point and stopped rather than delete through it.
    #[error("{} is a mount point; not removing through it", path.display())]
    MountPoint {
        /// The mount point.
        path: PathBuf,
    },
}

fn io(action: &'static str, path: PathBuf) -> impl FnOnce(Errno) -> BeneathError {
    move |e| BeneathError::Io {
        action,
        path,
        source: e.into(),
    }
}

const NO_LINKS: ResolveFlag = ResolveFlag::RESOLVE_BENEATH.union(ResolveFlag::RESOLVE_NO_SYMLINKS);

/// Checks that `path` has only normal components.
fn plain(path: &Path) -> Result<(), BeneathError> {
    if path.as_os_str().is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(BeneathError::NotRelative {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// An open directory and the path the runtime knows it by (for messages and
/// for `mountinfo` questions; never used to reach it again).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Dir {
    /// Opens a directory the host trusts by absolute path (the canonical state
    /// root). The last component must not be a link.
    pub fn open(path: &Path) -> Result<Self, BeneathError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd =
            nix::fcntl::open(path, flags, Mode::empty()).map_err(io("open", path.to_owned()))?;
        Ok(Self {
            // SAFETY: `open` just returned this descriptor and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_owned(),
        })
    }

    /// The path this directory is known by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `/proc/self/fd/<n>`: the directory itself, for calls that take a path
    /// (`mount(2)`, `umount2(2)`); the kernel resolves it to this descriptor.
    pub fn proc_path(&self) -> PathBuf {
        proc_path(self.fd.as_fd())
    }

    /// Opens `rel` beneath this directory with `flags`, following no link.
    pub fn open_at(&self, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, BeneathError> {
        self.open_how(rel, flags, mode, NO_LINKS)
    }

    fn open_how(
        &self,
        rel: &Path,
        flags: OFlag,
        mode: Mode,
        resolve: ResolveFlag,
    ) -> Result<OwnedFd, BeneathError> {
        plain(rel)?;
        // RESOLVE_NO_SYMLINKS refuses a link anywhere, the last component
        // included (ELOOP); O_NOFOLLOW is added except with O_PATH, where it
        // would instead return a descriptor of the link itself.
        let nofollow = if flags.contains(OFlag::O_PATH) {
            OFlag::empty()
        } else {
            OFlag::O_NOFOLLOW
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | nofollow)
            .mode(mode)
            .resolve(resolve);
        let fd = openat2(self.fd.as_raw_fd(), rel, how).map_err(io("open", self.path.join(rel)))?;
        // SAFETY: `openat2` just returned this descriptor and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Opens the directory `rel` beneath this one.
    pub fn open_dir(&self, rel: &Path) -> Result<Dir, BeneathError> {
        let fd = self.open_at(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        Ok(Dir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// Makes the directory `name` (one component) with exactly `mode` and
    /// opens it. With `exist_ok`, an existing directory (never a link) is
    /// opened and given `mode` instead.
    pub fn mkdir(&self, name: &Path, mode: u32, exist_ok: bool) -> Result<Dir, BeneathError> {
        plain(name)?;
        if name.components().count() != 1 {
            return Err(BeneathError::NotRelative {
                path: name.to_owned(),
            });
        }
        match mkdirat(
            Some(self.fd.as_raw_fd()),
            name,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST) if exist_ok => {}
            Err(e) => return Err(io("create", self.path.join(name))(e)),
        }
        let dir = self.open_dir(name)?;
        fchmod(dir.fd.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(io("set the mode of", dir.path.clone()))?;
        Ok(dir)
    }

    /// Makes every missing directory of `rel` (mode `mode`) and opens the last.
    pub fn mkdir_all(&self, rel: &Path, mode: u32) -> Result<Dir, BeneathError> {
        plain(rel)?;
        let mut components = rel.components();
        let first = components.next().map(|c| c.as_os_str()).unwrap_or_default();
        let mut dir = self.mkdir(Path::new(first), mode, true)?;
        for c in components {
            dir = dir.mkdir(Path::new(c.as_os_str()), mode, true)?;
        }
        Ok(dir)
    }

    /// Creates the file `name` (one component), which must not exist, with
    /// exactly `mode`, opened for writing.
    pub fn create_file(&self, name: &Path, mode: u32) -> Result<std::fs::File, BeneathError> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = self.open_at(name, flags, Mode::from_bits_truncate(mode))?;
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(io("set the mode of", self.path.join(name)))?;
        Ok(std::fs::File::from(fd))
    }

    /// Removes the file or empty directory `rel`; a link is removed, never
    /// followed. A missing entry is not an error.
    pub fn remove_entry(&self, rel: &Path) -> Result<(), BeneathError> {
        plain(rel)?;
        let (parent, name) = self.parent_of(rel)?;
        let st = match fstatat(
            Some(parent.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(io("inspect", self.path.join(rel))(e)),
        };
        let flag = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        match unlinkat(Some(parent.as_raw_fd()), name, flag) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EBUSY) => Err(BeneathError::MountPoint {
                path: self.path.join(rel),
            }),
            Err(e) => Err(io("remove", self.path.join(rel))(e)),
        }
    }

    /// The directory holding `rel` (opened beneath this one) and its last name.
    fn parent_of<'a>(&self, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr), BeneathError> {
        let name = rel.file_name().ok_or_else(|| BeneathError::NotRelative {
            path: rel.to_owned(),
        })?;
        let parent = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => self.open_at(p, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?,
            None => self.fd.try_clone().map_err(|source| BeneathError::Io {
                action: "duplicate",
                path: self.path.clone(),
                source,
            })?,
        };
        Ok((parent, name))
    }

    /// Removes the tree `rel` beneath this directory without crossing a mount
    /// point: every directory is opened with `RESOLVE_NO_XDEV` as well, so a
    /// mount anywhere in the tree (a bind left behind, on a directory or a
    /// file) stops the removal with [`BeneathError::MountPoint`] before
    /// anything below it is touched. Links are removed, never followed. A
    /// missing tree is not an error.
    pub fn remove_tree(&self, rel: &Path) -> Result<(), BeneathError> {
        plain(rel)?;
        if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) {
            if !parent.as_os_str().is_empty() {
                // Above the tree, mounts may be crossed (the share's `mounts`
                // is bound on itself); within it, never.
                return match self.open_dir(parent) {
                    Ok(dir) => dir.remove_tree(Path::new(name)),
                    Err(BeneathError::Io { source, .. })
                        if source.raw_os_error() == Some(libc::ENOENT) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
            }
        }
        let dir = match self.open_how(
            rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
            NO_LINKS | ResolveFlag::RESOLVE_NO_XDEV,
        ) {
            Ok(fd) => Dir {
                fd,
                path: self.path.join(rel),
            },
            Err(BeneathError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(())
            }
            Err(BeneathError::Io { source, .. }) if source.raw_os_error() == Some(libc::EXDEV) => {
                return Err(BeneathError::MountPoint {
                    path: self.path.join(rel),
                })
            }
            // Not a directory (ENOTDIR), or a link (ELOOP): remove the entry.
            Err(BeneathError::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) =>
            {
                return self.remove_entry(rel)
            }
            Err(e) => return Err(e),
        };
        let own_dev = fstat(dir.fd.as_raw_fd())
            .map_err(io("inspect", dir.path.clone()))?
            .st_dev;
        for name in dir.entries()? {
            let child = Path::new(&name);
            let st = match fstatat(
                Some(dir.fd.as_raw_fd()),
                child,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io("inspect", dir.path.join(child))(e)),
            };
            if st.st_dev != own_dev {
                return Err(BeneathError::MountPoint {
                    path: dir.path.join(child),
                });
            }
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                dir.remove_tree(child)?;
            } else {
                // A file bind-mounted on the same filesystem has the same
                // st_dev: unlinkat refuses it with EBUSY (MountPoint).
                dir.remove_entry(child)?;
            }
        }
        self.remove_entry(rel)
    }

    /// The names in this directory, without `.` and `..`.
    pub fn entries(&self) -> Result<Vec<OsString>, BeneathError> {
        let fd = self.open_at_self().map_err(io("list", self.path.clone()))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(io("list", self.path.clone()))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(io("list", self.path.clone()))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    /// A fresh descriptor of this directory (its own file position), handed
    /// over to `fdopendir`.
    fn open_at_self(&self) -> Result<std::os::fd::RawFd, Errno> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(NO_LINKS);
        openat2(self.fd.as_raw_fd(), ".", how)
    }
}

/// `/proc/self/fd/<n>` for `fd`.
pub fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn errno(e: &BeneathError) -> Option<i32> {
        match e {
            BeneathError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    #[test]
    fn links_are_never_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("victim"), b"keep").expect("write");
        let root = Dir::open(tmp.path()).expect("open");
        symlink(outside.path(), tmp.path().join("dirlink")).expect("symlink");
        symlink(outside.path().join("victim"), tmp.path().join("filelink")).expect("symlink");
        symlink("dirlink", tmp.path().join("nested")).expect("symlink");
        std::fs::create_dir(tmp.path().join("real")).expect("mkdir");
        symlink("../dirlink", tmp.path().join("real/up")).expect("symlink");

        for rel in [
            "dirlink",
            "nested",
            "real/up",
            "dirlink/x",
            "real/up/victim",
        ] {
            let err = root.open_dir(Path::new(rel)).expect_err(rel);
            // ELOOP, or ENOTDIR for a last component opened O_DIRECTORY.
            assert!(
                matches!(errno(&err), Some(libc::ELOOP | libc::ENOTDIR)),
                "{rel}: {err}"
            );
            let err = root
                .mkdir_all(&Path::new(rel).join("made"), 0o700)
                .expect_err(rel);
            assert!(
                matches!(
                    errno(&err),
                    Some(libc::ELOOP | libc::EEXIST | libc::ENOTDIR)
                ),
                "{rel}: {err}"
            );
        }
        // Creating through a file link does not truncate its target.
        let err = root
            .create_file(Path::new("filelink"), 0o600)
            .expect_err("exists");
        assert!(
            matches!(errno(&err), Some(libc::EEXIST | libc::ELOOP)),
            "{err}"
        );
        assert!(root.open_dir(Path::new("..")).is_err());
        assert!(root.open_dir(Path::new("/etc")).is_err());
        assert_eq!(
            std::fs::read(outside.path().join("victim")).expect("read"),
            b"keep"
        );
        assert!(!outside.path().join("made").exists());

        // Removal removes the links, never what they point at.
        root.remove_tree(Path::new("real")).expect("remove");
        for l in ["dirlink", "filelink", "nested"] {
            root.remove_tree(Path::new(l)).expect("remove link");
        }
        assert_eq!(
            std::fs::read(outside.path().join("victim")).expect("read"),
            b"keep"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 0);
    }

    #[test]
    fn modes_are_exact_whatever_the_umask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = Dir::open(tmp.path()).expect("open");
        let d = root.mkdir_all(Path::new("a/b"), 0o700).expect("mkdir");
        d.create_file(Path::new("f"), 0o600).expect("create");
        for (p, mode) in [("a", 0o700), ("a/b", 0o700), ("a/b/f", 0o600)] {
            let m = std::fs::metadata(tmp.path().join(p)).expect("stat");
            assert_eq!(m.permissions().mode() & 0o7777, mode, "{p}");
        }
        let err = d.create_file(Path::new("f"), 0o600).expect_err("exclusive");
        assert_eq!(errno(&err), Some(libc::EEXIST));
    }

    /// Privileged: a mount anywhere in a tree stops its removal.
    #[test]
    fn removal_never_crosses_a_mount() {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::write(data.path().join("precious"), b"p").expect("write");
        std::fs::write(data.path().join("file"), b"f").expect("write");
        let root = Dir::open(tmp.path()).expect("open");
        let inner = root.mkdir_all(Path::new("t/deep/m"), 0o700).expect("mkdir");
        inner.create_file(Path::new("fm"), 0o600).expect("create");
        let dir_mp = tmp.path().join("t/deep/m");
        mount(
            Some(data.path()),
            &dir_mp,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind (needs root)");
        let err = root.remove_tree(Path::new("t")).expect_err("a mount below");
        assert!(matches!(err, BeneathError::MountPoint { .. }), "{err}");
        assert_eq!(
            std::fs::read(data.path().join("precious")).expect("read"),
            b"p"
        );
        umount2(&dir_mp, MntFlags::MNT_DETACH).expect("umount");

        // A file bind on the same filesystem.
        let file_mp = tmp.path().join("t/deep/m/fm");
        mount(
            Some(&data.path().join("file")),
            &file_mp,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        let err = root
            .remove_tree(Path::new("t"))
            .expect_err("a file mount below");
        assert!(matches!(err, BeneathError::MountPoint { .. }), "{err}");
        assert_eq!(std::fs::read(data.path().join("file")).expect("read"), b"f");
        umount2(&file_mp, MntFlags::MNT_DETACH).expect("umount");

        // A mount above the tree removed is crossed: only the tree is checked.
        let above = tmp.path().join("t");
        mount(
            Some(&above),
            &above,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        root.remove_tree(Path::new("t/deep"))
            .expect("remove below a mount");
        assert!(!above.join("deep").exists());
        umount2(&above, MntFlags::MNT_DETACH).expect("umount");
        root.remove_tree(Path::new("t")).expect("remove");
        assert!(!tmp.path().join("t").exists());
        assert!(data.path().join("precious").exists());
    }
}
