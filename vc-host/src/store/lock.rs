//! The per-pod exclusive lock: `flock(2)` on the pod's `lock` file, held for the
//! whole of an operation and released when the [`PodLock`] is dropped (or the
//! process dies).

use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// An exclusive lock on one pod.
#[derive(Debug)]
pub struct PodLock {
    _lock: Flock<std::fs::File>,
}

impl PodLock {
    /// Waits for and takes the lock. The wait happens on a blocking thread so
    /// the async runtime is not held up.
    pub async fn acquire(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io("open", &path, e))?;
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| StoreError::io("lock", &path, errno.into()))?;
            Ok(PodLock { _lock: lock })
        })
        .await
        .map_err(|e| StoreError::io("lock", Path::new("<pod lock>"), std::io::Error::other(e)))?
    }
}
