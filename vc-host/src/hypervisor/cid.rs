//! Guest CIDs for kernel vsock, unique among the pods of a host.
//!
//! Each CID is a lock file `<dir>/<cid>.lock` held with `flock(LOCK_EX)`. The
//! locked descriptor is inherited by QEMU (its close-on-exec flag cleared), so
//! the CID stays taken exactly as long as that QEMU lives, even after the
//! launching process exits or when QEMU is SIGKILLed: no stale state to clean
//! up. Lock files are never unlinked (unlinking a lock file races with a
//! process that has just opened it); there is one per CID ever used.
//!
//! The host kernel also refuses a CID already in use by any VM (including
//! ones started by other software); this allocator avoids collisions among vc
//! pods.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// First CID given to a guest (0-2 are reserved: hypervisor, local, host).
pub const FIRST_GUEST_CID: u32 = 3;

/// How many CIDs the allocator tries before giving up.
pub const DEFAULT_CID_COUNT: u32 = 4096;

/// Why no CID could be allocated.
#[derive(Debug, Error)]
pub enum CidError {
    /// The lock directory or a lock file could not be used.
    #[error("cannot use CID lock file {path}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Every CID in range is held.
    #[error("all {count} guest CIDs from {first} are in use")]
    Exhausted {
        /// First CID of the range.
        first: u32,
        /// Size of the range.
        count: u32,
    },
}

/// Hands out CIDs from a lock directory.
#[derive(Debug, Clone)]
pub struct CidAllocator {
    dir: PathBuf,
    first: u32,
    count: u32,
}

/// A held CID: the lock lasts while this value, or a process that inherited
/// [`CidLease::fd`], is alive.
#[derive(Debug)]
pub struct CidLease {
    cid: u32,
    file: File,
}

impl CidLease {
    /// The CID.
    pub fn cid(&self) -> u32 {
        self.cid
    }

    /// The locked descriptor, to be inherited by QEMU.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl CidAllocator {
    /// Allocates from `dir` (created when missing), CIDs
    /// [`FIRST_GUEST_CID`]`..+`[`DEFAULT_CID_COUNT`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_range(dir, FIRST_GUEST_CID, DEFAULT_CID_COUNT)
    }

    /// Allocates `count` CIDs from `first`.
    pub fn with_range(dir: impl Into<PathBuf>, first: u32, count: u32) -> Self {
        CidAllocator {
            dir: dir.into(),
            first: first.max(FIRST_GUEST_CID),
            count,
        }
    }

    /// The lock directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lowest free CID.
    pub fn allocate(&self) -> Result<CidLease, CidError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| CidError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for cid in (self.first..).take(self.count as usize) {
            let path = self.dir.join(format!("{cid}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|source| CidError::Io {
                    path: path.clone(),
                    source,
                })?;
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(CidLease { cid, file });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(CidError::Io { path, source: e });
            }
        }
        Err(CidError::Exhausted {
            first: self.first,
            count: self.count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::process::Detached;
    use std::time::Duration;

    #[test]
    fn concurrent_leases_differ_and_a_dropped_one_is_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let alloc = CidAllocator::new(dir.path().join("cids"));
        let a = alloc.allocate().expect("a");
        let b = alloc.allocate().expect("b");
        assert_eq!((a.cid(), b.cid()), (3, 4));
        drop(a);
        let c = alloc.allocate().expect("c");
        assert_eq!(c.cid(), 3);
        // A second allocator on the same directory (another process, in
        // effect: flock locks belong to open files) sees the same leases.
        let other = CidAllocator::new(dir.path().join("cids"));
        assert_eq!(other.allocate().expect("d").cid(), 5);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let alloc = CidAllocator::with_range(dir.path(), 10, 2);
        let _a = alloc.allocate().expect("a");
        let _b = alloc.allocate().expect("b");
        let err = alloc.allocate().expect_err("full");
        assert!(
            matches!(
                err,
                CidError::Exhausted {
                    first: 10,
                    count: 2
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_lease_inherited_by_a_child_lives_as_long_as_the_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let alloc = CidAllocator::new(dir.path().join("cids"));
        let lease = alloc.allocate().expect("lease");
        assert_eq!(lease.cid(), 3);
        let child = Detached {
            program: Path::new("/bin/sleep"),
            args: vec!["30".into()],
            log: &dir.path().join("sleep.log"),
            netns: None,
            inherit: vec![lease.fd()],
            user: None,
            cwd: None,
            cgroups: Vec::new(),
        }
        .spawn()
        .expect("spawn");
        drop(lease);
        // Still held by the child.
        assert_eq!(alloc.allocate().expect("next").cid(), 4);
        child
            .kill(Duration::from_secs(2))
            .await
            .expect("kill child");
        assert_eq!(alloc.allocate().expect("freed").cid(), 3);
    }
}
