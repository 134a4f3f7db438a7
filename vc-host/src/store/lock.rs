//! The per-pod exclusive lock: `flock(2)` on `<root>/locks/<pod>.lock`, held
//! for the whole of an operation and released when the [`PodLock`] is dropped
//! (or the process dies).
//!
//! The lock file lives outside the pod's directory, so deleting the pod never
//! deletes a lock someone holds or waits for. Delete removes the file while
//! holding it; a waiter that then gets the lock on the removed file sees that
//! the path no longer names what it locked, and starts over.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};

use super::StoreError;
use crate::beneath::Dir;

/// An exclusive lock on one pod. Clones share it: it is released when the
/// last one is dropped, so a blocking write started under the lock (on the
/// blocking pool, holding a clone) keeps it until the write is done, even
/// when the verb that started it is cancelled meanwhile.
#[derive(Debug, Clone)]
pub struct PodLock {
    _lock: Arc<Flock<std::fs::File>>,
    path: PathBuf,
}

/// How many times a lock taken on a file removed meanwhile is retried.
const MAX_RETRIES: usize = 64;

impl PodLock {
    /// Waits for and takes the lock on `<locks>/<name>` (`locks` is the
    /// store's lock directory). The wait happens on a blocking thread so the
    /// async runtime is not held up.
    pub async fn acquire(locks: &Path, name: &str) -> Result<Self, StoreError> {
        let locks = locks.to_owned();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || Self::acquire_blocking(&locks, &name))
            .await
            .map_err(|e| {
                StoreError::io("lock", Path::new("<pod lock>"), std::io::Error::other(e))
            })?
    }

    fn acquire_blocking(locks: &Path, name: &str) -> Result<Self, StoreError> {
        let dir = Dir::open(locks)?;
        let path = locks.join(name);
        for _ in 0..MAX_RETRIES {
            let file = match dir.create_file(Path::new(name), 0o600) {
                Ok(f) => f,
                Err(crate::beneath::BeneathError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    let flags = nix::fcntl::OFlag::O_RDWR;
                    std::fs::File::from(dir.open_at(
                        Path::new(name),
                        flags,
                        nix::sys::stat::Mode::empty(),
                    )?)
                }
                Err(e) => return Err(e.into()),
            };
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| StoreError::io("lock", &path, errno.into()))?;
            if same_file(&dir, name, &lock) {
                return Ok(PodLock {
                    _lock: Arc::new(lock),
                    path,
                });
            }
            // Removed (and maybe made again) while we waited: start over.
        }
        Err(StoreError::io(
            "lock",
            &path,
            std::io::Error::other("the lock file kept being replaced"),
        ))
    }

    /// Takes the lock on an existing `<locks>/<name>` without waiting:
    /// `None` when someone holds it, or when the file does not exist (it
    /// is never created here).
    pub fn try_acquire(locks: &Path, name: &str) -> Result<Option<Self>, StoreError> {
        let dir = Dir::open(locks)?;
        let path = locks.join(name);
        let flags = nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC;
        let file = match dir.open_at(Path::new(name), flags, nix::sys::stat::Mode::empty()) {
            Ok(fd) => std::fs::File::from(fd),
            Err(crate::beneath::BeneathError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, errno)) => return Err(StoreError::io("lock", &path, errno.into())),
        };
        Ok(same_file(&dir, name, &lock).then(|| PodLock {
            _lock: Arc::new(lock),
            path,
        }))
    }

    /// Removes the lock file while still holding it (the pod is gone), then
    /// releases the lock (once no clone holds it).
    pub(super) fn remove(self, locks: &Path) -> Result<(), StoreError> {
        let dir = Dir::open(locks)?;
        let name = self.path.file_name().map(PathBuf::from).unwrap_or_default();
        dir.remove_entry(&name)?;
        Ok(())
    }
}

/// True when `name` in `dir` is still the file `lock` holds.
fn same_file(dir: &Dir, name: &str, lock: &Flock<std::fs::File>) -> bool {
    let held = nix::sys::stat::fstat(lock.as_raw_fd());
    let now = nix::sys::stat::fstatat(
        Some(std::os::fd::AsFd::as_fd(dir).as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    );
    matches!((held, now), (Ok(a), Ok(b)) if a.st_dev == b.st_dev && a.st_ino == b.st_ino)
}
