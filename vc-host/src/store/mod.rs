//! The state store: where pods live on disk so that any process can find them.
//!
//! ```text
//! <root>/                      runtime root, default /run/vc
//!   pods/<pod-id>/
//!     lock                     flock(2) target: held exclusively for each operation
//!     config.json              the pod's configuration, written once at create
//!     state.json               state, VM record, containers: rewritten atomically
//!     vm/                      hypervisor run directory: sockets, logs, pid files
//!     shared/                  the pod's virtio-fs share
//! ```
//!
//! Every write goes to a temporary file in the same directory, is fsynced, and
//! renamed over the target, so a reader never sees half a file. Readers that
//! only list do not take the lock; everything that changes a pod does, for the
//! whole operation, so that concurrent processes on one pod serialize.

mod atomic;
mod lock;

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

use crate::id::PodId;

pub use atomic::{read_json, write_json_atomic};
pub use lock::PodLock;

/// Default runtime root.
pub const DEFAULT_ROOT: &str = "/run/vc";

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A pod with this id already exists.
    #[error("pod {0} already exists")]
    PodExists(PodId),
    /// No pod with this id.
    #[error("pod {0} does not exist")]
    PodNotFound(PodId),
    /// A file could not be read, written, locked or removed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file did not parse.
    #[error("{} is not valid", path.display())]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// The runtime root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// The directory of one pod.
#[derive(Debug, Clone)]
pub struct PodDir {
    /// The pod's id.
    pub id: PodId,
    /// `<root>/pods/<id>`.
    pub path: PathBuf,
}

impl PodDir {
    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }
    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.path.join("state.json")
    }
    /// The hypervisor's run directory.
    pub fn vm_dir(&self) -> PathBuf {
        self.path.join("vm")
    }
    /// The pod's virtio-fs share.
    pub fn shared_dir(&self) -> PathBuf {
        self.path.join("shared")
    }
    /// Reads a JSON file of this pod.
    pub fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<T, StoreError> {
        read_json(path)
    }
    /// Writes a JSON file of this pod atomically.
    pub fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StoreError> {
        write_json_atomic(path, value)
    }
}

impl Store {
    /// Opens (and creates when missing) the runtime root.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let pods = root.join("pods");
        std::fs::create_dir_all(&pods).map_err(|e| StoreError::io("create", &pods, e))?;
        Ok(Self { root })
    }

    /// The runtime root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pod_path(&self, id: &PodId) -> PathBuf {
        self.root.join("pods").join(id.as_str())
    }

    /// Creates the directory of a new pod and locks it. Fails with
    /// [`StoreError::PodExists`] when the id is taken, so two processes creating
    /// the same pod cannot both succeed.
    pub async fn create_pod(&self, id: &PodId) -> Result<(PodDir, PodLock), StoreError> {
        let path = self.pod_path(id);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::PodExists(id.clone()))
            }
            Err(e) => return Err(StoreError::io("create", &path, e)),
        }
        let dir = PodDir {
            id: id.clone(),
            path,
        };
        let lock = PodLock::acquire(&dir.path.join("lock")).await?;
        for sub in [dir.vm_dir(), dir.shared_dir()] {
            std::fs::create_dir(&sub).map_err(|e| StoreError::io("create", &sub, e))?;
        }
        Ok((dir, lock))
    }

    /// The directory of an existing pod, without locking it.
    pub fn pod(&self, id: &PodId) -> Result<PodDir, StoreError> {
        let path = self.pod_path(id);
        if !path.join("config.json").exists() {
            return Err(StoreError::PodNotFound(id.clone()));
        }
        Ok(PodDir {
            id: id.clone(),
            path,
        })
    }

    /// Locks an existing pod for one operation.
    pub async fn lock_pod(&self, id: &PodId) -> Result<(PodDir, PodLock), StoreError> {
        let dir = self.pod(id)?;
        let lock = PodLock::acquire(&dir.path.join("lock")).await?;
        // The pod may have been deleted while we waited for the lock.
        if !dir.config_path().exists() {
            return Err(StoreError::PodNotFound(id.clone()));
        }
        Ok((dir, lock))
    }

    /// Every pod on the host, sorted by id. Directories that are not valid pod
    /// ids or have no configuration (a create in progress) are skipped.
    pub fn list(&self) -> Result<Vec<PodId>, StoreError> {
        let pods = self.root.join("pods");
        let entries = std::fs::read_dir(&pods).map_err(|e| StoreError::io("list", &pods, e))?;
        let mut ids: Vec<PodId> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| PodId::new(n).ok()))
            .filter(|id| self.pod_path(id).join("config.json").exists())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Removes a pod's directory. The caller holds the pod's lock and has
    /// already stopped everything that used it.
    pub fn remove_pod(&self, dir: PodDir, lock: PodLock) -> Result<(), StoreError> {
        // Remove the config first so that concurrent lockers see the pod as gone.
        let config = dir.config_path();
        std::fs::remove_file(&config).map_err(|e| StoreError::io("remove", &config, e))?;
        std::fs::remove_dir_all(&dir.path).map_err(|e| StoreError::io("remove", &dir.path, e))?;
        drop(lock);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> PodId {
        PodId::new(s).expect("valid id")
    }

    #[tokio::test]
    async fn create_list_remove() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (dir, lock) = store.create_pod(&id("b")).await.expect("create");
        dir.write(&dir.config_path(), &"cfg").expect("write");
        let (dir_a, lock_a) = store.create_pod(&id("a")).await.expect("create");
        dir_a.write(&dir_a.config_path(), &"cfg").expect("write");
        // A pod whose create is in progress (no config yet) is not listed.
        let (_c, _lc) = store.create_pod(&id("c")).await.expect("create");
        assert_eq!(store.list().expect("list"), vec![id("a"), id("b")]);
        assert!(matches!(
            store.create_pod(&id("a")).await,
            Err(StoreError::PodExists(_))
        ));
        store.remove_pod(dir, lock).expect("remove");
        drop(lock_a);
        assert_eq!(store.list().expect("list"), vec![id("a")]);
        assert!(matches!(
            store.pod(&id("b")),
            Err(StoreError::PodNotFound(_))
        ));
    }

    #[tokio::test]
    async fn lock_serializes_operations() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        let (dir, lock) = store.create_pod(&id("p")).await.expect("create");
        dir.write(&dir.config_path(), &"cfg").expect("write");
        let store2 = store.clone();
        let waiter = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let _ = store2.lock_pod(&id("p")).await.expect("lock");
            started.elapsed()
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(lock);
        let waited = waiter.await.expect("join");
        assert!(
            waited >= std::time::Duration::from_millis(150),
            "{waited:?}"
        );
    }
}
