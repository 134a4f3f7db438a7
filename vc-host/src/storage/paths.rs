//! Paths inside a container as a configuration gives them: absolute and
//! normalized, so that what the caller wrote is what the agent resolves.

/// Checks a path inside the container: absolute, not `/`, no empty, `.` or
/// `..` component, no trailing `/`, no NUL, not on `/proc` or `/sys` (the
/// agent mounts those itself). Returns why it is refused.
pub fn check_container_path(path: &str) -> Result<(), &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("it is not an absolute path");
    };
    if rest.is_empty() {
        return Err("it is the root of the container");
    }
    if path.contains('\0') {
        return Err("it contains a NUL byte");
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err("it is not normalized (empty, `.` or `..` component, or a trailing `/`)");
    }
    if matches!(parts[0], "proc" | "sys") {
        return Err("mounts on /proc and /sys are not supported");
    }
    Ok(())
}

/// The number of components of a checked path (`/a/b` is 2), to order mounts
/// parents first.
pub(crate) fn depth(path: &str) -> usize {
    path.split('/').filter(|p| !p.is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_absolute_paths_pass() {
        for ok in ["/data", "/a/b/c", "/dev/shm", "/var/lib/x.y", "/.hidden"] {
            assert_eq!(check_container_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn other_paths_are_refused_with_a_reason() {
        for (bad, why) in [
            ("data", "absolute"),
            ("", "absolute"),
            ("/", "root"),
            ("/a//b", "normalized"),
            ("/a/", "normalized"),
            ("/a/./b", "normalized"),
            ("/a/../b", "normalized"),
            ("/..", "normalized"),
            ("/proc/x", "/proc"),
            ("/sys", "/proc and /sys"),
            ("/a\0b", "NUL"),
        ] {
            let err = check_container_path(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn depth_counts_components() {
        assert_eq!(depth("/a"), 1);
        assert_eq!(depth("/a/b/c"), 3);
    }
}
