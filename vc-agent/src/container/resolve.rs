//! Paths inside a container's rootfs, resolved from the agent without leaving it.
//!
//! A rootfs can hold symbolic links that point anywhere (`/etc/resolv.conf ->
//! /run/...`, `proc -> /`). Mounting on such a path from the agent would follow
//! the link in the *agent's* view. [`resolve_in_root`] follows every link as if
//! the rootfs were `/` (the way `filepath-securejoin` does for runc): absolute
//! targets restart at the rootfs, `..` never climbs above it, and components that
//! do not exist yet are taken as they are. The result is a path under the rootfs
//! that the agent can mount on.
//!
//! The resolution happens before the container's first process runs, so nothing
//! inside the container can swap a component for a link in between.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

use super::error::ContainerError;

/// Most symbolic links followed in one resolution (the kernel's limit).
const MAX_LINKS: u32 = 40;

/// Splits a path into its normal components; `..` and `.` are kept for the
/// caller, the root and empty components dropped.
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(s) => Some(s.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
    })
}

/// Resolves `path` (a path inside the container, absolute or not) to a path
/// under `root`, following symbolic links inside `root` only.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf, ContainerError> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = components(Path::new(path)).collect();
    let mut links = 0u32;

    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ContainerError::Io {
                        action: "resolve",
                        path: candidate,
                        source: io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                let target =
                    std::fs::read_link(&candidate).map_err(|source| ContainerError::Io {
                        action: "read the link",
                        path: candidate.clone(),
                        source,
                    })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(t);
                }
            }
            Ok(_) => resolved.push(c),
            // Not there (yet), or a parent is not a directory: the rest is taken
            // as written; creating it later reports the real problem.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                resolved.push(c)
            }
            Err(source) => {
                return Err(ContainerError::Io {
                    action: "resolve",
                    path: candidate,
                    source,
                })
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(resolved.iter());
    Ok(out)
}

/// The normal components of an absolute container path after removing `.` and
/// `..` lexically (`/dev/../etc` is `/etc`). `None` for a relative path.
pub(crate) fn clean_absolute(path: &str) -> Option<Vec<String>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    Some(out)
}

/// Whether `p` is `root` or below it, compared component by component.
pub(crate) fn is_within(root: &Path, p: &Path) -> bool {
    p.starts_with(root)
}

/// `root` joined with plain components (already checked to hold no `/`).
pub(crate) fn join_all<S: AsRef<OsStr>>(root: &Path, parts: &[S]) -> PathBuf {
    let mut out = root.to_path_buf();
    for p in parts {
        out.push(p.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("etc")).expect("mkdir");
        std::fs::create_dir_all(d.path().join("usr/lib")).expect("mkdir");
        std::fs::create_dir_all(d.path().join("run")).expect("mkdir");
        d
    }

    #[test]
    fn plain_paths_stay_as_they_are() {
        let d = root();
        let r = d.path();
        assert_eq!(
            resolve_in_root(r, "/etc/hosts").expect("ok"),
            r.join("etc/hosts")
        );
        assert_eq!(
            resolve_in_root(r, "etc//./hosts").expect("ok"),
            r.join("etc/hosts")
        );
        assert_eq!(resolve_in_root(r, "/").expect("ok"), r.to_path_buf());
    }

    #[test]
    fn dotdot_never_climbs_above_the_root() {
        let d = root();
        let r = d.path();
        assert_eq!(resolve_in_root(r, "/../../etc").expect("ok"), r.join("etc"));
        assert_eq!(
            resolve_in_root(r, "/usr/../../../run/x").expect("ok"),
            r.join("run/x")
        );
    }

    #[test]
    fn absolute_links_restart_at_the_root() {
        let d = root();
        let r = d.path();
        symlink("/run/resolv.conf", r.join("etc/resolv.conf")).expect("symlink");
        assert_eq!(
            resolve_in_root(r, "/etc/resolv.conf").expect("ok"),
            r.join("run/resolv.conf")
        );
        symlink("/", r.join("proc")).expect("symlink");
        assert_eq!(resolve_in_root(r, "/proc").expect("ok"), r.to_path_buf());
        assert_eq!(resolve_in_root(r, "/proc/etc").expect("ok"), r.join("etc"));
    }

    #[test]
    fn relative_links_cannot_escape() {
        let d = root();
        let r = d.path();
        symlink("../../../../../../etc", r.join("usr/escape")).expect("symlink");
        assert_eq!(
            resolve_in_root(r, "/usr/escape/passwd").expect("ok"),
            r.join("etc/passwd")
        );
        symlink("usr/lib", r.join("lib")).expect("symlink");
        assert_eq!(
            resolve_in_root(r, "/lib/x.so").expect("ok"),
            r.join("usr/lib/x.so")
        );
    }

    #[test]
    fn chained_links_resolve_inside() {
        let d = root();
        let r = d.path();
        symlink("/usr", r.join("x")).expect("symlink");
        symlink("../../../../run", r.join("usr/y")).expect("symlink");
        assert_eq!(resolve_in_root(r, "/x/y/z").expect("ok"), r.join("run/z"));
    }

    #[test]
    fn missing_components_are_kept() {
        let d = root();
        let r = d.path();
        assert_eq!(
            resolve_in_root(r, "/new/dir/../file").expect("ok"),
            r.join("new/file")
        );
    }

    #[test]
    fn loops_are_an_error() {
        let d = root();
        let r = d.path();
        symlink("b", r.join("a")).expect("symlink");
        symlink("a", r.join("b")).expect("symlink");
        let err = resolve_in_root(r, "/a/x").expect_err("loop");
        assert!(matches!(
            err,
            ContainerError::Io { ref source, .. } if source.raw_os_error() == Some(libc::ELOOP)
        ));
    }

    #[test]
    fn lexical_cleaning() {
        assert_eq!(
            clean_absolute("/dev/../etc/./x"),
            Some(vec!["etc".into(), "x".into()])
        );
        assert_eq!(clean_absolute("/../.."), Some(vec![]));
        assert_eq!(clean_absolute("dev/shm"), None);
        assert!(is_within(Path::new("/a/b"), Path::new("/a/b/c")));
        assert!(!is_within(Path::new("/a/b"), Path::new("/a/bc")));
    }
}
