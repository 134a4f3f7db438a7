//! Atomic JSON records: written to a temporary file made `O_EXCL | O_NOFOLLOW`
//! with mode 0600 in the same directory, fsynced, renamed over the target
//! (`renameat` on the directory's descriptor), and the directory fsynced.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;
use crate::beneath::Dir;

/// The mode of every record.
pub const RECORD_MODE: u32 = 0o600;

/// Most bytes read from one record: a record is a few KiB; anything larger
/// is not one of ours.
const MAX_RECORD: u64 = 16 << 20;

/// Writes `value` as pretty JSON to `name` in `dir`, atomically, mode 0600.
pub fn write_json_at<T: Serialize>(dir: &Dir, name: &str, value: &T) -> Result<(), StoreError> {
    let path = dir.path().join(name);
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        source: e,
    })?;
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    // A temporary left by a writer of this pid that died: never ours to keep.
    dir.remove_entry(Path::new(&tmp))?;
    let write = || -> Result<(), StoreError> {
        let mut file = dir.create_file(Path::new(&tmp), RECORD_MODE)?;
        let io = |e| StoreError::io("write", &path, e);
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        let fd = dir.as_fd().as_raw_fd();
        nix::fcntl::renameat(Some(fd), tmp.as_str(), Some(fd), name)
            .map_err(|e| StoreError::io("write", &path, e.into()))?;
        nix::unistd::fsync(fd).map_err(|e| StoreError::io("sync", dir.path(), e.into()))
    };
    write().inspect_err(|_| {
        let _ = dir.remove_entry(Path::new(&tmp));
    })
}

/// Reads the JSON record `name` in `dir` (never through a link).
pub fn read_json_at<T: DeserializeOwned>(dir: &Dir, name: &str) -> Result<T, StoreError> {
    let path = dir.path().join(name);
    let fd = dir.open_at(Path::new(name), OFlag::O_RDONLY, Mode::empty())?;
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_RECORD)
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::io("read", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path, source })
}

/// Writes `value` as JSON to `path` atomically (its directory opened by path).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let (dir, name) = split(path)?;
    write_json_at(&dir, &name, value)
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let (dir, name) = split(path)?;
    read_json_at(&dir, &name)
}

fn split(path: &Path) -> Result<(Dir, String), StoreError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StoreError::io("write", path, std::io::ErrorKind::InvalidInput.into()))?;
    Ok((Dir::open(parent)?, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_leaves_no_temporary_file_and_is_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.json");
        write_json_atomic(&path, &vec![1, 2, 3]).expect("write");
        write_json_atomic(&path, &vec![4]).expect("overwrite");
        assert_eq!(read_json::<Vec<i32>>(&path).expect("read"), vec![4]);
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
    }

    #[test]
    fn corrupt_file_is_a_typed_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state.json");
        std::fs::write(&path, b"{not json").expect("write");
        assert!(matches!(
            read_json::<Vec<i32>>(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn records_are_never_read_or_written_through_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"[7]").expect("write");
        let path = tmp.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        assert!(read_json::<Vec<i32>>(&path).is_err(), "read through a link");
        // The rename replaces the link itself; the target is untouched.
        write_json_atomic(&path, &vec![1]).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"[7]");
        assert!(!std::fs::symlink_metadata(&path)
            .expect("stat")
            .file_type()
            .is_symlink());
    }
}
